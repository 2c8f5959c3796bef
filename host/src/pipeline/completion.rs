//! The completion path: router → upstream attempts → recovery decisions.
//!
//! The router plugin orders the upstreams serving the requested model using
//! live statistics; each failed attempt asks the recovery plugin what to do
//! next, and the host carries the decision out inside its own bounds:
//!
//! - attempts per completion (`resilience.max_attempts`) and the request's
//!   deadline; every attempt is also cut to its upstream's `timeout_ms`;
//! - retries wait a full-jitter draw below the plugin's ask (capped at
//!   `max_delay_ms`), never less than the upstream's `Retry-After`, and
//!   only while the upstream's retry budget has room;
//! - an upstream that answered 429 with a hint is not called again, by any
//!   request, before the hint expires;
//! - a circuit breaker and a bulkhead per upstream: an open breaker refuses
//!   without calling, a full bulkhead moves on to the next upstream (and
//!   answers 503 when every one is full);
//! - fallbacks only to upstreams serving the model or a model of its
//!   configured fallback chain; chunking is capped.

use super::{DEFAULT_UPSTREAM_TIMEOUT, FailurePolicy, Pipeline, PipelineError};
use crate::domain::{
    Action, CallContext, Candidate, CircuitState, Completion, CompletionRequest, Failure,
    FailureContext, Message, Role, RouteRequest, Step, Usage,
};
use crate::resilience::{Alert, Breaker, Bulkhead, Permit, RetryBudget, Slot, retry_delay};
use crate::telemetry::metrics::{ActionLabels, ShedLabels, UpstreamLabels, UpstreamName};
use crate::upstream::{EventStream, StreamEvent, Upstream};
use futures::StreamExt;
use rand::Rng;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most chunks a chunk-and-retry may produce; beyond it the input is refused.
const MAX_CHUNKS: usize = 32;
/// Weight of the newest sample in the moving averages.
const EWMA_ALPHA: f64 = 0.2;

/// Moving averages of one upstream's latency and error rate, for routers.
#[derive(Debug, Default)]
pub(super) struct UpstreamStats(Mutex<(f64, f64, bool)>);

impl UpstreamStats {
    fn record(&self, latency: Duration, ok: bool) {
        if let Ok(mut s) = self.0.lock() {
            let ms = latency.as_secs_f64() * 1000.0;
            let err = if ok { 0.0 } else { 1.0 };
            if s.2 {
                s.0 += EWMA_ALPHA * (ms - s.0);
                s.1 += EWMA_ALPHA * (err - s.1);
            } else {
                *s = (ms, err, true);
            }
        }
    }

    fn snapshot(&self) -> (f64, f64) {
        self.0.lock().map(|s| (s.0, s.1)).unwrap_or((0.0, 0.0))
    }
}

/// What the pipeline tracks per upstream.
#[derive(Debug)]
pub(super) struct UpstreamHealth {
    timeout: Duration,
    first_token_timeout: Duration,
    idle_timeout: Duration,
    stats: UpstreamStats,
    pub(super) breaker: Breaker,
    budget: RetryBudget,
    bulkhead: Bulkhead,
    /// Until when the upstream asked not to be called (its `Retry-After`).
    cooldown: Mutex<Option<Instant>>,
}

impl UpstreamHealth {
    pub(super) fn new(setup: &super::UpstreamSetup, settings: &super::PipelineSettings) -> Self {
        Self {
            timeout: setup.timeout,
            first_token_timeout: setup.first_token_timeout.unwrap_or(setup.timeout),
            idle_timeout: setup.idle_timeout.unwrap_or(setup.timeout),
            stats: UpstreamStats::default(),
            breaker: Breaker::new(setup.breaker),
            budget: RetryBudget::new(settings.retry_budget, Instant::now()),
            bulkhead: Bulkhead::new(setup.max_concurrent),
            cooldown: Mutex::new(None),
        }
    }

    /// How long the upstream's `Retry-After` still holds at `now`.
    fn cooling(&self, now: Instant) -> Option<Duration> {
        let until = (*self.cooldown.lock().unwrap_or_else(|p| p.into_inner()))?;
        let left = until.saturating_duration_since(now);
        (!left.is_zero()).then_some(left)
    }

    /// Holds calls off until `now + wait`, unless a later hint holds already.
    fn cool_down(&self, now: Instant, wait: Duration) {
        let mut until = self.cooldown.lock().unwrap_or_else(|p| p.into_inner());
        let end = now + wait;
        if until.is_none_or(|u| u < end) {
            *until = Some(end);
        }
    }

    /// Whether a call could go ahead now: breaker not open, no `Retry-After`
    /// pending, room in the bulkhead.
    fn healthy(&self, now: Instant) -> bool {
        self.breaker.state(now) != CircuitState::Open
            && self.cooling(now).is_none()
            && self.bulkhead.has_room()
    }
}

/// Why an attempt did not produce an answer.
#[derive(Debug)]
enum AttemptError {
    /// The upstream (or the host on its behalf) failed the call.
    Failed(Failure),
    /// The upstream's bulkhead is full: not a failure, try elsewhere.
    Saturated,
}

/// The short name of an action, for metric labels.
fn action_label(action: &Action) -> &'static str {
    match action {
        Action::Retry(_) => "retry",
        Action::Fallback(_) => "fallback",
        Action::ChunkAndRetry(_) => "chunk",
        Action::Refine(_) => "refine",
        Action::Fail(_) => "fail",
    }
}

/// Whether a failure says the upstream is unhealthy (and counts towards
/// opening its breaker). Rate limits and request-specific refusals mean a
/// healthy upstream said no to this request.
fn counts_against_upstream(failure: &Failure) -> bool {
    match failure {
        Failure::Timeout | Failure::InvalidResponse(_) => true,
        Failure::UpstreamStatus(status) => *status >= 500,
        _ => false,
    }
}

/// Approximate tokens of a conversation (4 characters per token).
fn estimate_tokens(messages: &[Message]) -> u32 {
    let chars: usize = messages.iter().map(|m| m.content.chars().count()).sum();
    chars.div_ceil(4).max(1) as u32
}

fn cost(upstream: &dyn Upstream, usage: Usage) -> f64 {
    let info = upstream.info();
    f64::from(usage.prompt_tokens) / 1000.0 * info.input_cost_per_1k
        + f64::from(usage.completion_tokens) / 1000.0 * info.output_cost_per_1k
}

impl Pipeline {
    fn candidate(&self, upstream: &dyn Upstream) -> Candidate {
        let info = upstream.info();
        let health = self.health.get(&info.name);
        let (ewma_latency_ms, error_rate) =
            health.map(|h| h.stats.snapshot()).unwrap_or((0.0, 0.0));
        let circuit = health
            .map(|h| h.breaker.state(Instant::now()))
            .unwrap_or(CircuitState::Closed);
        Candidate {
            name: info.name.clone(),
            model: info.model.clone(),
            input_cost_per_1k: info.input_cost_per_1k,
            output_cost_per_1k: info.output_cost_per_1k,
            ewma_latency_ms,
            error_rate,
            circuit,
            weight: info.weight,
            tags: info.tags.clone(),
        }
    }

    /// The upstreams to try, in order.
    async fn route(
        &self,
        ctx: &CallContext,
        req: &CompletionRequest,
    ) -> Result<Vec<Arc<dyn Upstream>>, PipelineError> {
        let candidates: Vec<Arc<dyn Upstream>> = self
            .upstreams
            .iter()
            .filter(|u| req.model.is_empty() || u.info().model == req.model)
            .cloned()
            .collect();
        if candidates.is_empty() {
            return Err(PipelineError::UnknownModel(req.model.clone()));
        }
        let Some(router) = self
            .settings
            .router
            .as_ref()
            .and_then(|r| self.slots.get(r))
        else {
            return Ok(candidates);
        };
        let route_req = RouteRequest {
            model: req.model.clone(),
            prompt_tokens: estimate_tokens(&req.messages),
            message_count: req.messages.len() as u32,
            has_tools: !req.tools.is_empty(),
            metadata: req.metadata.clone(),
        };
        let described: Vec<Candidate> = candidates
            .iter()
            .map(|u| self.candidate(u.as_ref()))
            .collect();
        match router.plugin.route(ctx, &route_req, &described).await {
            Ok(order) if !order.is_empty() => Ok(order
                .iter()
                .filter_map(|n| candidates.iter().find(|u| &u.info().name == n).cloned())
                .collect()),
            // A router that offers nothing leaves the configured order.
            Ok(_) => Ok(candidates),
            Err(e) if router.policy == FailurePolicy::Open => {
                tracing::warn!(router = %router.plugin.identity(), error = %e, "router failed; using configured order");
                Ok(candidates)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Appends the upstreams of the model's fallback chain (each routed by
    /// the router like a request for that model), once.
    async fn extend_with_chain(
        &self,
        ctx: &CallContext,
        req: &CompletionRequest,
        order: &mut Vec<Arc<dyn Upstream>>,
    ) -> Result<(), PipelineError> {
        let Some(chain) = self.settings.fallbacks.get(&req.model) else {
            return Ok(());
        };
        for model in chain {
            let mut next = req.clone();
            next.model = model.clone();
            for upstream in self.route(ctx, &next).await? {
                if !order.iter().any(|u| u.info().name == upstream.info().name) {
                    order.push(upstream);
                }
            }
        }
        Ok(())
    }

    fn health_of(&self, upstream: &dyn Upstream) -> Option<&UpstreamHealth> {
        self.health.get(&upstream.info().name).map(|h| &**h)
    }

    fn is_healthy(&self, upstream: &dyn Upstream, now: Instant) -> bool {
        self.health_of(upstream).is_none_or(|h| h.healthy(now))
    }

    /// The upstreams to try for `req`: the routed ones, and — when none of
    /// them can serve right now — the fallback chain's behind them.
    /// `chained` tells whether the chain has been added.
    async fn plan(
        &self,
        ctx: &CallContext,
        req: &CompletionRequest,
    ) -> Result<(Vec<Arc<dyn Upstream>>, bool), PipelineError> {
        let mut order = self.route(ctx, req).await?;
        let now = Instant::now();
        if order.iter().any(|u| self.is_healthy(u.as_ref(), now)) {
            return Ok((order, false));
        }
        self.extend_with_chain(ctx, req, &mut order).await?;
        // Healthy ones first: the chain when the model's own are all down.
        order.sort_by_key(|u| !self.is_healthy(u.as_ref(), now));
        Ok((order, true))
    }

    /// Names of the upstreams to offer the recovery plugin after a failure
    /// of `current`: untried healthy ones first, in routed order, then the
    /// rest, so that "fall back to the first alternative" makes progress.
    fn alternatives(
        &self,
        order: &[Arc<dyn Upstream>],
        current: &str,
        tried: &[String],
    ) -> Vec<String> {
        let now = Instant::now();
        let mut alternatives: Vec<(bool, bool, String)> = order
            .iter()
            .filter(|u| u.info().name != current)
            .map(|u| {
                let name = u.info().name.clone();
                (
                    !self.is_healthy(u.as_ref(), now),
                    tried.contains(&name),
                    name,
                )
            })
            .collect();
        alternatives.sort_by_key(|(unhealthy, tried, _)| (*unhealthy, *tried));
        alternatives.into_iter().map(|(_, _, name)| name).collect()
    }

    /// What to do after `failure`: the recovery plugin's choice, or — with
    /// no recovery plugin — the next upstream in the routed order.
    async fn decide(
        &self,
        ctx: &CallContext,
        fctx: &FailureContext,
    ) -> Result<Action, PipelineError> {
        let default = || match fctx.alternatives.first() {
            Some(next) => Action::Fallback(next.clone()),
            None => Action::Fail(false),
        };
        let Some(slot) = self
            .settings
            .recovery
            .as_ref()
            .and_then(|r| self.slots.get(r))
        else {
            return Ok(default());
        };
        match slot.plugin.recover(ctx, fctx).await {
            Ok(action) => Ok(action),
            Err(e) if slot.policy == FailurePolicy::Open => {
                tracing::warn!(recovery = %slot.plugin.identity(), error = %e, "recovery plugin failed; falling back to the next upstream");
                Ok(default())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// How long one attempt on `upstream` may take: its own bound, cut to
    /// what is left of the request; `None` once the deadline has passed.
    fn attempt_bound(&self, ctx: &CallContext, upstream: &dyn Upstream) -> Option<Duration> {
        let bound = self
            .health
            .get(&upstream.info().name)
            .map(|h| h.timeout)
            .unwrap_or(DEFAULT_UPSTREAM_TIMEOUT);
        let remaining = ctx.remaining();
        (!remaining.is_zero()).then(|| bound.min(remaining))
    }

    /// Whether the upstream's breaker lets a call through now.
    fn admit(&self, upstream: &dyn Upstream) -> bool {
        self.health_of(upstream)
            .is_none_or(|h| h.breaker.acquire(Instant::now()) == Permit::Allowed)
    }

    /// The host's checks before calling `upstream`, in the order that
    /// leaks nothing: a pending `Retry-After` refuses first, then the
    /// bulkhead (a place is taken), then the breaker (a half-open probe is
    /// taken only when the call will really be made).
    fn gate(&self, upstream: &dyn Upstream) -> Result<Slot, AttemptError> {
        let Some(health) = self.health_of(upstream) else {
            return Ok(Bulkhead::new(None).try_enter().expect("unbounded"));
        };
        let name = &upstream.info().name;
        if let Some(wait) = health.cooling(Instant::now()) {
            self.count_attempt(name, "cooling-down");
            let ms = u32::try_from(wait.as_millis().max(1)).unwrap_or(u32::MAX);
            return Err(AttemptError::Failed(Failure::RateLimited(Some(ms))));
        }
        let Some(slot) = health.bulkhead.try_enter() else {
            self.metrics()
                .bulkhead_rejections
                .get_or_create(&ShedLabels {
                    scope: name.clone(),
                })
                .inc();
            return Err(AttemptError::Saturated);
        };
        if !self.admit(upstream) {
            self.count_attempt(name, "circuit-open");
            return Err(AttemptError::Failed(Failure::CircuitOpen(name.clone())));
        }
        Ok(slot)
    }

    fn count_attempt(&self, upstream: &str, outcome: &str) {
        self.metrics()
            .upstream_attempts
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Records one upstream call as a step, in the upstream's stats, its
    /// breaker, its `Retry-After` cooldown and the metrics.
    fn record(
        &self,
        ctx: &CallContext,
        upstream: &dyn Upstream,
        latency: Duration,
        outcome: Result<Usage, &Failure>,
    ) {
        let info = upstream.info();
        let now = Instant::now();
        if let Some(health) = self.health.get(&info.name) {
            health.stats.record(latency, outcome.is_ok());
            let healthy = outcome.is_ok() || outcome.is_err_and(|f| !counts_against_upstream(f));
            health.breaker.record(healthy, now);
            if let Err(Failure::RateLimited(Some(ms))) = outcome {
                health.cool_down(now, Duration::from_millis(u64::from(*ms)));
            }
        }
        self.count_attempt(&info.name, outcome.map_or_else(Failure::kind, |_| "ok"));
        self.metrics()
            .upstream_duration
            .get_or_create(&UpstreamName {
                upstream: info.name.clone(),
            })
            .observe(latency.as_secs_f64());
        let usage = outcome.as_ref().copied().unwrap_or_default();
        ctx.steps.push(Step {
            kind: "completion".into(),
            target: info.model.clone(),
            upstream: Some(info.name.clone()),
            caller: ctx.caller().to_string(),
            depth: ctx.chain.len() as u32,
            latency_ms: latency.as_millis() as u64,
            usage,
            cost_usd: cost(upstream, usage),
            ok: outcome.is_ok(),
            error: outcome.err().map(ToString::to_string),
        });
    }

    /// One upstream call through the host's gate, recorded as a step and in
    /// the upstream's stats. A `retry` does not count as new traffic for the
    /// retry budget (its withdrawal was already taken).
    async fn attempt(
        &self,
        ctx: &CallContext,
        upstream: &Arc<dyn Upstream>,
        req: &CompletionRequest,
        retry: bool,
    ) -> Result<Completion, AttemptError> {
        // A retry was already told to wait for the upstream's hint, but a
        // later 429 (another request's) may have pushed the hint further:
        // wait for that too rather than spend an attempt on a refusal.
        if retry
            && let Some(wait) = self
                .health_of(upstream.as_ref())
                .and_then(|h| h.cooling(Instant::now()))
            && wait < ctx.remaining()
        {
            tokio::time::sleep(wait).await;
        }
        let Some(bound) = self.attempt_bound(ctx, upstream.as_ref()) else {
            return Err(AttemptError::Failed(Failure::Timeout));
        };
        let _slot = self.gate(upstream.as_ref())?;
        if !retry && let Some(health) = self.health_of(upstream.as_ref()) {
            health.budget.deposit(Instant::now());
        }
        let started = Instant::now();
        let result = upstream.complete(req.clone(), bound).await;
        self.record(
            ctx,
            upstream.as_ref(),
            started.elapsed(),
            result.as_ref().map(|c| c.usage),
        );
        result.map_err(AttemptError::Failed)
    }

    /// Takes a retry of `upstream` from its budget; counts and logs a refusal.
    fn withdraw_retry(&self, ctx: &CallContext, upstream: &dyn Upstream) -> bool {
        let Some(health) = self.health_of(upstream) else {
            return true;
        };
        if health.budget.try_withdraw(Instant::now()) {
            return true;
        }
        let name = upstream.info().name.clone();
        tracing::warn!(upstream = %name, request = %ctx.request_id, "retry budget exhausted: not retrying, so retries cannot amplify an outage");
        self.metrics()
            .retry_budget_exhausted
            .get_or_create(&UpstreamName { upstream: name })
            .inc();
        false
    }

    /// Raises the alert a recovery plugin asked for.
    fn alert(&self, ctx: &CallContext, model: &str, upstream: &str, failure: &Failure) {
        let source = self
            .settings
            .recovery
            .as_ref()
            .and_then(|r| self.slots.get(r))
            .map_or_else(|| "host".to_string(), |s| s.plugin.identity().to_string());
        self.alerter.raise(Alert {
            event: "agentrouter.alert",
            source,
            model: model.to_string(),
            upstream: upstream.to_string(),
            failure: failure.to_string(),
            request_id: ctx.request_id.clone(),
            timestamp: crate::server::unix_now(),
        });
    }

    /// Serves a completion for a model (empty model: any upstream the router picks).
    pub(super) async fn complete(
        &self,
        ctx: &CallContext,
        mut req: CompletionRequest,
    ) -> Result<Completion, PipelineError> {
        let (mut order, mut chained) = self.plan(ctx, &req).await?;
        let model = req.model.clone();
        let give_up = |failure| PipelineError::Upstream {
            model: model.clone(),
            failure,
        };
        let mut current = order
            .first()
            .cloned()
            .ok_or_else(|| PipelineError::UnknownModel(req.model.clone()))?;
        let max_attempts = self.settings.max_attempts.max(1);
        let mut attempt = 0;
        let mut retry = false;
        let mut tried: Vec<String> = Vec::new();
        let mut saturated: Vec<String> = Vec::new();
        loop {
            let name = current.info().name.clone();
            let failure = match self.attempt(ctx, &current, &req, retry).await {
                Ok(completion) => return Ok(completion),
                Err(AttemptError::Failed(failure)) => failure,
                // A full bulkhead is not a failure of the upstream: move on
                // to one with room without spending an attempt.
                Err(AttemptError::Saturated) => {
                    saturated.push(name.clone());
                    if !chained {
                        self.extend_with_chain(ctx, &req, &mut order).await?;
                        chained = true;
                    }
                    match order.iter().find(|u| !saturated.contains(&u.info().name)) {
                        Some(next) => {
                            current = next.clone();
                            retry = false;
                            continue;
                        }
                        None => return Err(PipelineError::Overloaded { scope: name }),
                    }
                }
            };
            attempt += 1;
            if !tried.contains(&name) {
                tried.push(name.clone());
            }
            if attempt >= max_attempts || ctx.remaining().is_zero() {
                return Err(give_up(failure));
            }
            if !chained {
                self.extend_with_chain(ctx, &req, &mut order).await?;
                chained = true;
            }
            let fctx = FailureContext {
                failure: failure.clone(),
                upstream: name.clone(),
                attempt,
                max_attempts,
                remaining_ms: ctx.remaining().as_millis() as u64,
                alternatives: self.alternatives(&order, &name, &tried),
                request: req.clone(),
            };
            let action = self.decide(ctx, &fctx).await?;
            self.metrics()
                .recovery_actions
                .get_or_create(&ActionLabels {
                    upstream: name.clone(),
                    action: action_label(&action).to_string(),
                })
                .inc();
            match action {
                Action::Retry(delay_ms) => {
                    if !self.withdraw_retry(ctx, current.as_ref()) {
                        return Err(give_up(failure));
                    }
                    let hint = self
                        .health_of(current.as_ref())
                        .and_then(|h| h.cooling(Instant::now()));
                    let Some(delay) = retry_delay(
                        Duration::from_millis(u64::from(delay_ms)),
                        hint,
                        self.settings.max_delay,
                        ctx.remaining(),
                        rand::rng().random::<f64>(),
                    ) else {
                        // The upstream's hint outlasts the deadline.
                        return Err(give_up(failure));
                    };
                    tokio::time::sleep(delay).await;
                    retry = true;
                }
                Action::Fallback(name) => match order.iter().find(|u| u.info().name == name) {
                    Some(next) => {
                        current = next.clone();
                        retry = false;
                    }
                    None => {
                        tracing::warn!(upstream = %name, model = %model, "recovery asked to fall back to an upstream that serves neither the model nor its fallback chain");
                        return Err(give_up(failure));
                    }
                },
                Action::Refine(messages) if !messages.is_empty() => {
                    if !self.withdraw_retry(ctx, current.as_ref()) {
                        return Err(give_up(failure));
                    }
                    req.messages = messages;
                    retry = true;
                }
                Action::Refine(_) => return Err(give_up(failure)),
                Action::ChunkAndRetry(max_chars) => {
                    return match self.chunked(ctx, &current, req, max_chars as usize).await {
                        Ok(completion) => Ok(completion),
                        Err(AttemptError::Failed(failure)) => Err(give_up(failure)),
                        Err(AttemptError::Saturated) => {
                            Err(PipelineError::Overloaded { scope: name })
                        }
                    };
                }
                Action::Fail(alert) => {
                    if alert {
                        self.alert(ctx, &model, &name, &failure);
                    }
                    return Err(give_up(failure));
                }
            }
        }
    }

    /// Splits the last user message into chunks of at most `max_chars`,
    /// completes each on `upstream`, and merges the answers.
    async fn chunked(
        &self,
        ctx: &CallContext,
        upstream: &Arc<dyn Upstream>,
        req: CompletionRequest,
        max_chars: usize,
    ) -> Result<Completion, AttemptError> {
        let refuse = || AttemptError::Failed(Failure::TokenLimitExceeded);
        let Some(pos) = req.messages.iter().rposition(|m| m.role == Role::User) else {
            return Err(refuse());
        };
        let chars: Vec<char> = req.messages[pos].content.chars().collect();
        if max_chars == 0 || chars.len().div_ceil(max_chars) > MAX_CHUNKS {
            return Err(refuse());
        }
        let mut merged: Option<Completion> = None;
        for chunk in chars.chunks(max_chars) {
            let mut part = req.clone();
            part.messages[pos].content = chunk.iter().collect();
            let answer = self.attempt(ctx, upstream, &part, false).await?;
            merged = Some(match merged {
                None => answer,
                Some(mut acc) => {
                    acc.message.content.push('\n');
                    acc.message.content.push_str(&answer.message.content);
                    acc.usage = acc.usage.plus(answer.usage);
                    acc
                }
            });
        }
        merged.ok_or_else(refuse)
    }
}

impl Pipeline {
    /// Opens a live stream for a completion. Upstreams are tried in planned
    /// order until one produces a first event within its
    /// `first_token_timeout_ms`; before that nothing has reached the client,
    /// so a failure moves on to the next upstream. Once the first event is
    /// in hand the stream is the answer: it is never retried, and a silence
    /// longer than `idle_timeout_ms` (or the request's deadline) ends it
    /// with a timeout. The step is recorded when the stream ends.
    pub(super) async fn open_stream(
        &self,
        ctx: &CallContext,
        req: CompletionRequest,
    ) -> Result<EventStream, PipelineError> {
        let (mut order, chained) = self.plan(ctx, &req).await?;
        if !chained {
            self.extend_with_chain(ctx, &req, &mut order).await?;
        }
        let mut last = None;
        let mut attempts = 0;
        let max_attempts = self.settings.max_attempts.max(1);
        for upstream in &order {
            if attempts >= max_attempts || ctx.remaining().is_zero() {
                break;
            }
            let slot = match self.gate(upstream.as_ref()) {
                Ok(slot) => slot,
                Err(AttemptError::Saturated) => continue,
                Err(AttemptError::Failed(failure)) => {
                    attempts += 1;
                    last = Some(failure);
                    continue;
                }
            };
            attempts += 1;
            if let Some(health) = self.health_of(upstream.as_ref()) {
                health.budget.deposit(Instant::now());
            }
            match self.first_event(ctx, upstream, &req).await {
                Ok((started, events)) => {
                    let events = self.guard_stream(ctx, upstream.as_ref(), events, slot);
                    return Ok(self.record_stream(ctx, upstream.clone(), started, events));
                }
                Err(failure) => last = Some(failure),
            }
        }
        match last {
            Some(failure) => Err(PipelineError::Upstream {
                model: req.model,
                failure,
            }),
            // Nothing was attempted: every upstream's bulkhead was full.
            None if !ctx.remaining().is_zero() => Err(PipelineError::Overloaded {
                scope: order
                    .first()
                    .map_or_else(String::new, |u| u.info().name.clone()),
            }),
            None => Err(PipelineError::Upstream {
                model: req.model,
                failure: Failure::Timeout,
            }),
        }
    }

    /// Opens a stream on `upstream` and waits for its first event, within
    /// the upstream's first-token timeout. Failures are recorded here.
    async fn first_event(
        &self,
        ctx: &CallContext,
        upstream: &Arc<dyn Upstream>,
        req: &CompletionRequest,
    ) -> Result<(Instant, EventStream), Failure> {
        let first_token = self
            .health_of(upstream.as_ref())
            .map_or(DEFAULT_UPSTREAM_TIMEOUT, |h| h.first_token_timeout);
        let started = Instant::now();
        // The stream as a whole may run until the request's deadline; the
        // first-token and idle bounds are the host's, below.
        let total = ctx.remaining();
        let opening = async {
            let mut events = upstream.stream(req.clone(), total).await?;
            match events.next().await {
                Some(Ok(first)) => {
                    let rest: EventStream =
                        Box::pin(futures::stream::once(async { Ok(first) }).chain(events));
                    Ok(rest)
                }
                Some(Err(failure)) => Err(failure),
                None => Err(Failure::InvalidResponse(format!(
                    "upstream `{}`: stream ended before its first event",
                    upstream.info().name
                ))),
            }
        };
        let result = match tokio::time::timeout(first_token.min(total), opening).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Timeout),
        };
        match result {
            Ok(events) => Ok((started, events)),
            Err(failure) => {
                self.record(ctx, upstream.as_ref(), started.elapsed(), Err(&failure));
                Err(failure)
            }
        }
    }

    /// Ends a stream with a timeout when it falls silent for longer than
    /// the upstream's idle timeout or outlives the request's deadline, and
    /// holds the upstream's bulkhead place until it ends.
    fn guard_stream(
        &self,
        ctx: &CallContext,
        upstream: &dyn Upstream,
        events: EventStream,
        slot: Slot,
    ) -> EventStream {
        let idle = self
            .health_of(upstream)
            .map_or(DEFAULT_UPSTREAM_TIMEOUT, |h| h.idle_timeout);
        let deadline = ctx.deadline;
        let state = (events, slot, false);
        Box::pin(futures::stream::unfold(
            state,
            move |(mut events, slot, ended)| async move {
                if ended {
                    return None;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(idle.min(left), events.next()).await {
                    Ok(Some(event)) => {
                        let last = matches!(event, Err(_) | Ok(StreamEvent::Done { .. }));
                        Some((event, (events, slot, last)))
                    }
                    Ok(None) => None,
                    Err(_) => Some((Err(Failure::Timeout), (events, slot, true))),
                }
            },
        ))
    }
    /// Records a stream's step once it finishes (or fails midway).
    fn record_stream(
        &self,
        ctx: &CallContext,
        upstream: Arc<dyn Upstream>,
        started: Instant,
        events: EventStream,
    ) -> EventStream {
        let pipeline = self.me.upgrade();
        let ctx = ctx.clone();
        Box::pin(events.inspect(move |event| {
            let Some(pipeline) = &pipeline else { return };
            match event {
                Ok(StreamEvent::Done { usage, .. }) => {
                    pipeline.record(&ctx, upstream.as_ref(), started.elapsed(), Ok(*usage));
                }
                Err(failure) => {
                    pipeline.record(&ctx, upstream.as_ref(), started.elapsed(), Err(failure))
                }
                Ok(_) => {}
            }
        }))
    }
}
