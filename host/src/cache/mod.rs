//! The response cache: L1 memory → L2 sled → L3 Redis (shared by replicas).
//!
//! The request layer (`gateway`) wraps the pipeline with it: a cacheable
//! request is looked up before the pipeline runs (validators included — the stored
//! answer is the one that already passed the output validators), and a
//! successful answer is stored after. Only model completions and
//! embeddings are cached; agent runs call tools and other agents and are
//! not assumed repeatable.
//! Failures are never cached.
//!
//! Every tier implements [`CacheTier`]; [`ResponseCache`] consults them in
//! order and copies a hit into the faster tiers above it. With `[cluster]`
//! (and `cache.l3`, on by default) a Redis tier ([`RedisTier`]) comes last:
//! an answer stored through one replica is a hit through every other.
//!
//! Concurrent identical misses are coalesced ([`flight`]): one request calls
//! the upstream, the others wait for its answer.

mod config;
mod flight;
mod key;
mod memory;
mod redis_tier;
mod sled_tier;

pub use config::{
    CacheConfig, CachePolicy, CacheScope, DEFAULT_CACHE_L1_MAX_MB, DEFAULT_CACHE_TTL_S,
};
pub use key::{CacheKey, NOT_IN_KEY};
pub use memory::MemoryTier;
pub use redis_tier::RedisTier;
pub use sled_tier::SledTier;

use crate::clock;
use crate::cluster::Cluster;
use crate::domain::{Completion, CompletionRequest, Target};
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::CacheLabels;
use flight::{Flights, Join};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Why a tier could not answer; logged, and treated as a miss — the cache
/// never fails a request.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The backing store failed.
    #[error("cache store: {0}")]
    Store(String),
}

/// A stored answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CachedAnswer {
    /// The answer as the client received it (after output validators).
    pub completion: Completion,
    /// Cost of the call that produced it, USD (reported, never charged again).
    pub original_cost_usd: f64,
    /// When it was stored, Unix milliseconds.
    pub stored_at_ms: u64,
    /// When it stops being served, Unix milliseconds.
    pub expires_at_ms: u64,
}

impl CachedAnswer {
    /// Whether its time to live has passed.
    pub fn expired(&self) -> bool {
        self.expires_at_ms <= clock::unix_ms()
    }

    /// Approximate bytes it occupies, for the L1 bound.
    pub fn weight_bytes(&self) -> usize {
        let c = &self.completion;
        let message = |m: &crate::domain::Message| {
            m.content.len()
                + m.tool_calls
                    .iter()
                    .map(|c| c.id.len() + c.name.len() + c.arguments.len())
                    .sum::<usize>()
        };
        // Details (more choices, logprobs) can outweigh the text: count
        // them as their JSON text, computed only when there are some.
        let details = if c.details.is_empty() {
            0
        } else {
            serde_json::to_vec(&c.details).map_or(0, |v| v.len())
        };
        message(&c.message) + c.model.len() + details
    }
}

/// One level of the cache. L1 (memory) and L2 (sled) implement it; an L3
/// shared across replicas (Redis) plugs in by implementing it too.
pub trait CacheTier: Send + Sync + 'static {
    /// `l1`, `l2` or `l3`: the metrics label.
    fn level(&self) -> &'static str;
    /// The live (unexpired) answer under `key`, if any.
    fn get<'a>(
        &'a self,
        key: &'a CacheKey,
    ) -> BoxFuture<'a, Result<Option<Arc<CachedAnswer>>, CacheError>>;
    /// Stores `answer` under `key` until its `expires_at_ms`.
    fn put<'a>(
        &'a self,
        key: &'a CacheKey,
        answer: &'a Arc<CachedAnswer>,
    ) -> BoxFuture<'a, Result<(), CacheError>>;
}

/// Where a served answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HitFrom {
    /// A cache tier, by level.
    Tier(&'static str),
    /// The answer of a concurrent identical request (single-flight).
    Flight,
}

/// An answer computed on a miss, to be stored.
#[derive(Clone, Debug)]
pub struct Filled {
    /// The answer as the client receives it.
    pub completion: Completion,
    /// What producing it cost, USD.
    pub cost_usd: f64,
}

/// The result of [`ResponseCache::get_or_fill`].
pub enum Served {
    /// Answered from the cache.
    Hit(Arc<CachedAnswer>, HitFrom),
    /// Computed by this request (and stored).
    Miss(Filled),
}

/// The layered response cache.
pub struct ResponseCache {
    tiers: Vec<Arc<dyn CacheTier>>,
    ttl: Duration,
    policy: CachePolicy,
    scope: CacheScope,
    /// Changes whenever what produces answers changes (validators and their
    /// versions), so an answer is never served by a differently configured
    /// pipeline after a restart.
    flights: Arc<Flights>,
    metrics: Arc<Metrics>,
}

impl ResponseCache {
    /// The cache `config` describes, or `None` when disabled; with a
    /// `cluster` (and `cache.l3`), its Redis is the last tier.
    pub fn from_config(
        config: &CacheConfig,
        store: &Store,
        cluster: Option<&Arc<Cluster>>,
        metrics: Arc<Metrics>,
    ) -> Option<ResponseCache> {
        if !config.enabled {
            return None;
        }
        let ttl = Duration::from_secs(config.ttl_s);
        let mut tiers: Vec<Arc<dyn CacheTier>> = vec![Arc::new(MemoryTier::new(
            config.l1_max_mb.saturating_mul(1 << 20),
            ttl,
        ))];
        if config.l2 {
            let l2 = SledTier::new(store.clone());
            match l2.sweep() {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "removed expired cache entries"),
                Err(e) => tracing::warn!(error = %e, "could not sweep expired cache entries"),
            }
            tiers.push(Arc::new(l2));
        }
        if let Some(cluster) = cluster.filter(|_| config.l3) {
            tiers.push(Arc::new(RedisTier::new(cluster.clone())));
        }
        Some(Self::new(tiers, ttl, config.policy, config.scope, metrics))
    }

    /// A cache over `tiers`, fastest first.
    pub fn new(
        tiers: Vec<Arc<dyn CacheTier>>,
        ttl: Duration,
        policy: CachePolicy,
        scope: CacheScope,
        metrics: Arc<Metrics>,
    ) -> ResponseCache {
        ResponseCache {
            tiers,
            ttl,
            policy,
            scope,
            flights: Arc::default(),
            metrics,
        }
    }

    /// A fingerprint of what turns a request into an answer: the validator
    /// slots in order, with their plugin digests.
    pub fn generation<'a>(validators: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
        let mut h = Sha256::new();
        for (slot, digest) in validators {
            h.update(slot.as_bytes());
            h.update([0]);
            h.update(digest.as_bytes());
            h.update([0]);
        }
        hex::encode(&h.finalize()[..8])
    }

    /// Whether `req` for `target` may be answered from the cache: a model
    /// (not an agent), and by policy `temperature = 0` or
    /// `metadata.cache = "true"`; `metadata.cache = "false"` always bypasses.
    pub fn cacheable(&self, target: &Target, req: &CompletionRequest) -> bool {
        if target.is_agent() {
            return false;
        }
        match req.metadata.get("cache").map(String::as_str) {
            Some("true") => true,
            Some("false") => false,
            _ => self.policy == CachePolicy::Deterministic && req.temperature == Some(0.0),
        }
    }

    /// The key namespace of a client: shared, or the client's own, within
    /// the `generation` of what produces answers (see
    /// [`ResponseCache::generation`]). The generation is computed per request
    /// from the live pipeline, so a hot-swapped validator never serves
    /// answers its predecessor approved.
    pub fn namespace(&self, generation: &str, client: &str) -> String {
        match self.scope {
            CacheScope::Global => generation.to_string(),
            CacheScope::PerKey => format!("{generation}/{client}"),
        }
    }

    fn count(&self, level: &str, hit: bool) {
        self.metrics
            .cache_lookups
            .get_or_create(&CacheLabels {
                level: level.into(),
                result: if hit { "hit" } else { "miss" }.into(),
            })
            .inc();
    }

    /// The answer under `key` from the fastest tier holding it; faster tiers
    /// that missed are filled on the way back.
    pub async fn lookup(&self, key: &CacheKey) -> Option<(Arc<CachedAnswer>, &'static str)> {
        self.find(key, true).await
    }

    /// [`Self::lookup`]; `counted = false` for a re-check that must not
    /// count the same request's lookup twice.
    async fn find(
        &self,
        key: &CacheKey,
        counted: bool,
    ) -> Option<(Arc<CachedAnswer>, &'static str)> {
        let count = |level: &str, hit: bool| {
            if counted {
                self.count(level, hit);
            }
        };
        for (i, tier) in self.tiers.iter().enumerate() {
            match tier.get(key).await {
                Ok(Some(answer)) => {
                    count(tier.level(), true);
                    for upper in &self.tiers[..i] {
                        if let Err(e) = upper.put(key, &answer).await {
                            tracing::warn!(level = upper.level(), error = %e, "cache fill failed");
                        }
                    }
                    return Some((answer, tier.level()));
                }
                Ok(None) => count(tier.level(), false),
                Err(e) => {
                    count(tier.level(), false);
                    tracing::warn!(level = tier.level(), error = %e, "cache lookup failed; treating as a miss");
                }
            }
        }
        None
    }

    /// Stores a completion under `key` in every tier; returns the entry.
    pub async fn store(
        &self,
        key: &CacheKey,
        completion: &Completion,
        cost_usd: f64,
    ) -> Arc<CachedAnswer> {
        let now = clock::unix_ms();
        let answer = Arc::new(CachedAnswer {
            completion: Completion {
                cached: false,
                ..completion.clone()
            },
            original_cost_usd: cost_usd,
            stored_at_ms: now,
            expires_at_ms: now.saturating_add(self.ttl.as_millis() as u64),
        });
        for tier in &self.tiers {
            if let Err(e) = tier.put(key, &answer).await {
                tracing::warn!(level = tier.level(), error = %e, "cache store failed");
            }
        }
        answer
    }

    /// The answer under `key`, or the result of `fill` — called by exactly
    /// one of any number of concurrent identical requests; the others wait
    /// for its answer. A successful fill is stored; a failed one is returned
    /// to its caller only, and the waiters try again themselves.
    pub async fn get_or_fill<F, Fut, E>(&self, key: CacheKey, mut fill: F) -> Result<Served, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Filled, E>>,
    {
        loop {
            if let Some((answer, level)) = self.lookup(&key).await {
                return Ok(Served::Hit(answer, HitFrom::Tier(level)));
            }
            match self.flights.join(key) {
                Join::Leader(leader) => {
                    // The previous leader may have stored the answer between
                    // our lookup and our joining (already counted above).
                    if let Some((answer, level)) = self.find(&key, false).await {
                        leader.finish(Some(answer.clone()));
                        return Ok(Served::Hit(answer, HitFrom::Tier(level)));
                    }
                    match fill().await {
                        Ok(filled) => {
                            let answer =
                                self.store(&key, &filled.completion, filled.cost_usd).await;
                            leader.finish(Some(answer));
                            return Ok(Served::Miss(filled));
                        }
                        Err(e) => {
                            leader.finish(None);
                            return Err(e);
                        }
                    }
                }
                Join::Follower(mut rx) => {
                    if let Ok(Some(answer)) = rx.recv().await {
                        return Ok(Served::Hit(answer, HitFrom::Flight));
                    }
                    // The leader failed or went away: try again.
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Message;

    fn completion(text: &str) -> Completion {
        Completion {
            message: Message::assistant(text),
            model: "m".into(),
            finish_reason: "stop".into(),
            usage: Default::default(),
            cached: false,
            details: Default::default(),
        }
    }

    fn cache(store: &Store, ttl: Duration) -> ResponseCache {
        let tiers: Vec<Arc<dyn CacheTier>> = vec![
            Arc::new(MemoryTier::new(1 << 20, ttl)),
            Arc::new(SledTier::new(store.clone())),
        ];
        ResponseCache::new(
            tiers,
            ttl,
            CachePolicy::Deterministic,
            CacheScope::Global,
            Arc::new(Metrics::new()),
        )
    }

    #[tokio::test]
    async fn a_hit_in_l2_fills_l1() {
        let store = Store::temporary().unwrap();
        let key = CacheKey([7; 32]);
        cache(&store, Duration::from_secs(60))
            .store(&key, &completion("a"), 0.5)
            .await;
        let fresh = cache(&store, Duration::from_secs(60));
        let (answer, level) = fresh.lookup(&key).await.unwrap();
        assert_eq!(
            (answer.completion.message.content.as_str(), level),
            ("a", "l2")
        );
        assert_eq!(fresh.lookup(&key).await.unwrap().1, "l1");
    }

    #[tokio::test]
    async fn expired_l2_entries_are_not_served_and_are_swept() {
        let store = Store::temporary().unwrap();
        let key = CacheKey([1; 32]);
        let l2 = SledTier::new(store.clone());
        let stale = Arc::new(CachedAnswer {
            completion: completion("old"),
            original_cost_usd: 0.0,
            stored_at_ms: 1,
            expires_at_ms: 2,
        });
        l2.put(&key, &stale).await.unwrap();
        l2.put(&CacheKey([2; 32]), &stale).await.unwrap();
        assert!(l2.get(&key).await.unwrap().is_none());
        assert_eq!(l2.sweep().unwrap(), 1, "the other stale entry");
    }

    #[tokio::test]
    async fn a_failed_leader_releases_its_followers_to_try_themselves() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let store = Store::temporary().unwrap();
        let cache = Arc::new(cache(&store, Duration::from_secs(60)));
        let key = CacheKey([9; 32]);
        let fills = Arc::new(AtomicU32::new(0));
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let leader = {
            let (cache, fills) = (cache.clone(), fills.clone());
            let mut signals = Some((started_tx, released));
            tokio::spawn(async move {
                cache
                    .get_or_fill(key, || {
                        fills.fetch_add(1, Ordering::SeqCst);
                        let signals = signals.take();
                        async move {
                            if let Some((started, released)) = signals {
                                let _ = started.send(());
                                let _ = released.await;
                            }
                            Err::<Filled, &str>("upstream down")
                        }
                    })
                    .await
            })
        };
        started.await.unwrap();
        let follower = {
            let (cache, fills) = (cache.clone(), fills.clone());
            tokio::spawn(async move {
                cache
                    .get_or_fill(key, || {
                        fills.fetch_add(1, Ordering::SeqCst);
                        async {
                            Ok::<_, &str>(Filled {
                                completion: completion("second try"),
                                cost_usd: 0.1,
                            })
                        }
                    })
                    .await
            })
        };
        // Release the leader only once the follower waits on it.
        while cache.flights.waiting(&key) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(fills.load(Ordering::SeqCst), 1);
        release.send(()).unwrap();
        assert!(
            leader.await.unwrap().is_err(),
            "the failure stays with the leader"
        );
        match follower.await.unwrap() {
            Ok(Served::Miss(filled)) => {
                assert_eq!(filled.completion.message.content, "second try")
            }
            _ => panic!("the follower should have filled after the leader failed"),
        }
        assert_eq!(fills.load(Ordering::SeqCst), 2);
        assert!(cache.lookup(&key).await.is_some(), "the success was stored");
    }

    #[test]
    fn policy_caches_deterministic_or_opted_in_model_requests_only() {
        let store = Store::temporary().unwrap();
        let c = cache(&store, Duration::from_secs(1));
        let mut req = CompletionRequest {
            model: "m".into(),
            temperature: Some(0.0),
            ..Default::default()
        };
        assert!(c.cacheable(&Target::parse(&req.model), &req));
        req.temperature = Some(0.7);
        assert!(!c.cacheable(&Target::parse(&req.model), &req));
        req.metadata.insert("cache".into(), "true".into());
        assert!(c.cacheable(&Target::parse(&req.model), &req));
        req.model = "agent:manager".into();
        assert!(!c.cacheable(&Target::parse(&req.model), &req));
        req.model = "m".into();
        req.temperature = Some(0.0);
        req.metadata.insert("cache".into(), "false".into());
        assert!(!c.cacheable(&Target::parse(&req.model), &req));
    }
}
