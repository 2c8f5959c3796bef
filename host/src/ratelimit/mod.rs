//! Rate limits: per client (API key) requests per second with a burst and
//! tokens per minute, and per model limits shared by every client.
//!
//! Request limits use governor's GCRA limiter (one per client and model,
//! created on first use). Token limits use [`TokenBucket`], charged after
//! the answer with the real usage — see its module for why governor does
//! not fit there. A refusal says which limit and when to retry; the server
//! turns it into `429` with `Retry-After`.
//!
//! With `[cluster]` the same buckets live in Redis ([`shared`]), so every
//! replica draws on one bucket per client and model. While Redis cannot be
//! reached each kind of limit follows its `cluster.on_redis_loss` policy:
//! `fail-open` decides with the local buckets above (each replica allowing
//! the whole limit), `fail-closed` refuses with `503 limit_unavailable`.

mod bucket;
mod config;
mod shared;

pub use bucket::TokenBucket;
pub use config::{LimitConfig, RateLimitsConfig};

use crate::cluster::{Cluster, LossPolicy};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::RateLimitLabels;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The limits of one client or model; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    /// Sustained requests per second.
    pub requests_per_s: Option<f64>,
    /// Requests allowed at once (default: the rate rounded up, at least 1).
    pub burst: Option<u32>,
    /// Tokens (prompt + completion) per minute.
    pub tokens_per_min: Option<u64>,
}

impl From<&LimitConfig> for Limits {
    fn from(c: &LimitConfig) -> Self {
        Limits {
            requests_per_s: c.requests_per_s,
            burst: c.burst,
            tokens_per_min: c.tokens_per_min,
        }
    }
}

impl Limits {
    /// `self`, with unset fields taken from `defaults`.
    pub fn or(self, defaults: Limits) -> Limits {
        Limits {
            requests_per_s: self.requests_per_s.or(defaults.requests_per_s),
            burst: if self.requests_per_s.is_some() {
                self.burst
            } else {
                defaults.burst
            },
            tokens_per_min: self.tokens_per_min.or(defaults.tokens_per_min),
        }
    }
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    /// The client's requests per second.
    Requests,
    /// The client's tokens per minute.
    Tokens,
    /// The model's requests per second or tokens per minute.
    Model,
}

impl LimitKind {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests",
            LimitKind::Tokens => "tokens",
            LimitKind::Model => "model",
        }
    }
}

/// A refusal.
#[derive(Clone, Debug, PartialEq)]
pub struct Limited {
    /// Which limit.
    pub kind: LimitKind,
    /// When a retry can succeed.
    pub retry_after: Duration,
    /// What was exceeded, for the client.
    pub message: String,
    /// The limit could not be checked (Redis lost, `fail-closed`): a 503,
    /// not the client's fault.
    pub unavailable: bool,
}

impl Limited {
    /// `Retry-After` in whole seconds, rounded up, at least 1.
    pub fn retry_after_s(&self) -> u64 {
        (self.retry_after.as_secs_f64().ceil() as u64).max(1)
    }
}

/// The buckets of one client or model.
struct Buckets {
    limits: Limits,
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<Mutex<TokenBucket>>,
}

impl Buckets {
    fn new(limits: Limits) -> Self {
        let requests = limits.requests_per_s.and_then(|rate| {
            let period = Duration::from_secs_f64(1.0 / rate);
            let burst = limits.burst.unwrap_or(rate.ceil().max(1.0) as u32);
            let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::new(burst.max(1))?);
            Some(DefaultDirectRateLimiter::direct(quota))
        });
        let tokens = limits
            .tokens_per_min
            .map(|t| Mutex::new(TokenBucket::new(t, Duration::from_secs(60), Instant::now())));
        Buckets {
            limits,
            requests,
            tokens,
        }
    }

    fn check_requests(&self, clock: &DefaultClock) -> Result<(), Duration> {
        match &self.requests {
            Some(limiter) => limiter
                .check()
                .map_err(|not_until| not_until.wait_time_from(clock.now())),
            None => Ok(()),
        }
    }

    fn check_tokens(&self) -> Result<(), Duration> {
        match &self.tokens {
            Some(bucket) => bucket
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .check(Instant::now()),
            None => Ok(()),
        }
    }

    fn charge(&self, tokens: u64) {
        if let Some(bucket) = &self.tokens {
            bucket
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .charge(tokens, Instant::now());
        }
    }
}

/// Every client's and model's buckets.
pub struct RateLimiter {
    defaults: Limits,
    clients: Mutex<HashMap<String, Arc<Buckets>>>,
    models: HashMap<String, Buckets>,
    clock: DefaultClock,
    metrics: Arc<Metrics>,
    /// The buckets in Redis, with `[cluster]`.
    shared: Option<shared::SharedLimits>,
}

/// What a shared check stands for, to name a refusal.
#[derive(Clone, Copy)]
enum Checked {
    ClientTokens,
    ModelTokens,
    ModelRequests,
}

impl RateLimiter {
    /// The limiter `config` describes; with a cluster, its buckets are
    /// shared through Redis.
    pub fn from_config(
        config: &RateLimitsConfig,
        metrics: Arc<Metrics>,
        cluster: Option<Arc<Cluster>>,
    ) -> RateLimiter {
        RateLimiter {
            defaults: Limits {
                requests_per_s: config.requests_per_s,
                burst: config.burst,
                tokens_per_min: config.tokens_per_min,
            },
            clients: Mutex::default(),
            models: config
                .models
                .iter()
                .map(|(model, l)| (model.clone(), Buckets::new(l.into())))
                .collect(),
            clock: DefaultClock::default(),
            metrics,
            shared: cluster.map(shared::SharedLimits::new),
        }
    }

    /// The limits that apply to a client with its own `limits`.
    pub fn effective(&self, own: Limits) -> Limits {
        own.or(self.defaults)
    }

    fn client(&self, client: &str, own: Limits) -> Arc<Buckets> {
        let limits = self.effective(own);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        match clients.get(client) {
            Some(b) if b.limits == limits => b.clone(),
            // New client, or its limits changed (a key was replaced).
            _ => {
                let b = Arc::new(Buckets::new(limits));
                clients.insert(client.to_string(), b.clone());
                b
            }
        }
    }

    fn refuse(
        &self,
        client: &str,
        kind: LimitKind,
        retry_after: Duration,
        message: String,
    ) -> Limited {
        self.metrics
            .rate_limited
            .get_or_create(&RateLimitLabels {
                key: client.to_string(),
                limit: kind.label().to_string(),
            })
            .inc();
        Limited {
            kind,
            retry_after,
            message,
            unavailable: false,
        }
    }

    /// What to do for `kind` without Redis: `None` to decide locally
    /// (fail-open), or the refusal (fail-closed).
    fn without_redis(
        &self,
        kind: LimitKind,
        why: &crate::cluster::ClusterError,
    ) -> Option<Limited> {
        let shared = self.shared.as_ref()?;
        let cluster = shared.cluster();
        let policies = cluster.policies();
        let policy = match kind {
            LimitKind::Requests => policies.requests,
            LimitKind::Tokens => policies.tokens,
            LimitKind::Model => policies.models,
        };
        cluster.note_fallback(kind.label(), policy);
        match policy {
            LossPolicy::FailOpen => None,
            LossPolicy::FailClosed => Some(Limited {
                kind,
                retry_after: Duration::from_secs(1),
                message: format!(
                    "the shared {} limit cannot be checked ({why}) and cluster.on_redis_loss says fail-closed; retry shortly",
                    kind.label()
                ),
                unavailable: true,
            }),
        }
    }

    fn requests_message(client: &str, limits: &Limits) -> String {
        let rate = limits.requests_per_s.unwrap_or_default();
        format!(
            "rate limit exceeded for `{client}`: {rate} requests/s (burst {})",
            limits.burst.unwrap_or(rate.ceil().max(1.0) as u32)
        )
    }

    /// Takes one request from the client's request bucket.
    pub async fn admit_request(&self, client: &str, own: Limits) -> Result<(), Limited> {
        let limits = self.effective(own);
        if let (Some(shared), Some(rate)) = (&self.shared, limits.requests_per_s) {
            let check = shared::SharedCheck::Requests {
                bucket: format!("req:{client}"),
                rate,
                burst: limits.burst.unwrap_or(rate.ceil().max(1.0) as u32).max(1),
            };
            match shared.admit(&[check]).await {
                Ok(None) => return Ok(()),
                Ok(Some((_, wait))) => {
                    let message = Self::requests_message(client, &limits);
                    return Err(self.refuse(client, LimitKind::Requests, wait, message));
                }
                Err(e) => {
                    if let Some(refused) = self.without_redis(LimitKind::Requests, &e) {
                        return Err(refused);
                    }
                }
            }
        }
        let buckets = self.client(client, own);
        buckets.check_requests(&self.clock).map_err(|wait| {
            let message = Self::requests_message(client, &buckets.limits);
            self.refuse(client, LimitKind::Requests, wait, message)
        })
    }

    /// Refuses while the client's token bucket is in debt, and takes one
    /// request from the model's bucket.
    pub async fn admit_completion(
        &self,
        client: &str,
        own: Limits,
        model: &str,
    ) -> Result<(), Limited> {
        if let Some(shared) = &self.shared {
            let limits = self.effective(own);
            let model_limits = self.models.get(model).map(|m| m.limits);
            let mut checks = Vec::new();
            let mut what = Vec::new();
            if let Some(per_min) = limits.tokens_per_min {
                checks.push(shared::SharedCheck::Tokens {
                    bucket: format!("tok:{client}"),
                    per_min,
                });
                what.push(Checked::ClientTokens);
            }
            if let Some(m) = model_limits {
                if let Some(per_min) = m.tokens_per_min {
                    checks.push(shared::SharedCheck::Tokens {
                        bucket: format!("mtok:{model}"),
                        per_min,
                    });
                    what.push(Checked::ModelTokens);
                }
                if let Some(rate) = m.requests_per_s {
                    checks.push(shared::SharedCheck::Requests {
                        bucket: format!("mreq:{model}"),
                        rate,
                        burst: m.burst.unwrap_or(rate.ceil().max(1.0) as u32).max(1),
                    });
                    what.push(Checked::ModelRequests);
                }
            }
            match shared.admit(&checks).await {
                Ok(None) => return Ok(()),
                Ok(Some((i, wait))) => {
                    let refused = match what.get(i) {
                        Some(Checked::ClientTokens) => self.refuse(
                            client,
                            LimitKind::Tokens,
                            wait,
                            format!(
                                "token limit exceeded for `{client}`: {} tokens/min",
                                limits.tokens_per_min.unwrap_or_default()
                            ),
                        ),
                        _ => self.refuse(
                            client,
                            LimitKind::Model,
                            wait,
                            format!(
                                "rate limit exceeded for model `{model}` (shared by every client)"
                            ),
                        ),
                    };
                    return Err(refused);
                }
                Err(e) => {
                    // The client's tokens and the model's limits have
                    // policies of their own; the stricter applies.
                    let mut kinds = Vec::new();
                    if limits.tokens_per_min.is_some() {
                        kinds.push(LimitKind::Tokens);
                    }
                    if model_limits.is_some() {
                        kinds.push(LimitKind::Model);
                    }
                    for kind in kinds {
                        if let Some(refused) = self.without_redis(kind, &e) {
                            return Err(refused);
                        }
                    }
                }
            }
        }
        self.admit_completion_locally(client, own, model)
    }

    fn admit_completion_locally(
        &self,
        client: &str,
        own: Limits,
        model: &str,
    ) -> Result<(), Limited> {
        let buckets = self.client(client, own);
        buckets.check_tokens().map_err(|wait| {
            self.refuse(
                client,
                LimitKind::Tokens,
                wait,
                format!(
                    "token limit exceeded for `{client}`: {} tokens/min",
                    buckets.limits.tokens_per_min.unwrap_or_default()
                ),
            )
        })?;
        if let Some(m) = self.models.get(model) {
            let refused = |wait| {
                self.refuse(
                    client,
                    LimitKind::Model,
                    wait,
                    format!("rate limit exceeded for model `{model}` (shared by every client)"),
                )
            };
            m.check_tokens().map_err(refused)?;
            m.check_requests(&self.clock).map_err(refused)?;
        }
        Ok(())
    }

    /// Charges the tokens an answer really used to the client and the model.
    pub async fn charge(&self, client: &str, own: Limits, model: &str, tokens: u64) {
        if tokens == 0 {
            return;
        }
        if let Some(shared) = &self.shared {
            let mut buckets = Vec::new();
            if let Some(per_min) = self.effective(own).tokens_per_min {
                buckets.push((format!("tok:{client}"), per_min));
            }
            if let Some(per_min) = self.models.get(model).and_then(|m| m.limits.tokens_per_min) {
                buckets.push((format!("mtok:{model}"), per_min));
            }
            match shared.charge(&buckets, tokens).await {
                Ok(()) => return,
                // The local buckets take the charge instead: they are the
                // ones deciding (fail-open) until Redis is back.
                Err(e) => tracing::debug!(error = %e, "charging the local token buckets"),
            }
        }
        self.client(client, own).charge(tokens);
        if let Some(m) = self.models.get(model) {
            m.charge(tokens);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(config: RateLimitsConfig) -> RateLimiter {
        RateLimiter::from_config(&config, Arc::new(Metrics::new()), None)
    }

    #[tokio::test]
    async fn a_burst_admits_exactly_burst_requests() {
        let l = limiter(RateLimitsConfig::default());
        let own = Limits {
            requests_per_s: Some(0.001),
            burst: Some(3),
            tokens_per_min: None,
        };
        let mut admitted = 0;
        for _ in 0..10 {
            admitted += usize::from(l.admit_request("k", own).await.is_ok());
        }
        assert_eq!(admitted, 3);
        let refused = l.admit_request("k", own).await.unwrap_err();
        assert_eq!(refused.kind, LimitKind::Requests);
        assert!(refused.retry_after_s() > 900, "{refused:?}");
        // Another client has its own bucket.
        assert!(l.admit_request("other", own).await.is_ok());
    }

    #[tokio::test]
    async fn defaults_apply_to_clients_without_their_own_limits() {
        let l = limiter(RateLimitsConfig {
            requests_per_s: Some(0.001),
            burst: Some(1),
            ..Default::default()
        });
        assert!(
            l.admit_request("anonymous", Limits::default())
                .await
                .is_ok()
        );
        assert!(
            l.admit_request("anonymous", Limits::default())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn tokens_are_charged_after_the_answer_and_refuse_while_in_debt() {
        let l = limiter(RateLimitsConfig::default());
        let own = Limits {
            tokens_per_min: Some(10),
            ..Default::default()
        };
        assert!(l.admit_completion("k", own, "m").await.is_ok());
        l.charge("k", own, "m", 100).await;
        let refused = l.admit_completion("k", own, "m").await.unwrap_err();
        assert_eq!(refused.kind, LimitKind::Tokens);
        assert!(refused.retry_after_s() >= 500, "{refused:?}");
    }
}
