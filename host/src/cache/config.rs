//! `[cache]`: how the response cache is configured. The schema's section
//! lives with the cache so the cache needs nothing from `config`, which
//! re-exports it.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};

/// Default `cache.ttl_s`.
pub const DEFAULT_CACHE_TTL_S: u64 = 3600;
/// Default `cache.l1_max_mb`.
pub const DEFAULT_CACHE_L1_MAX_MB: u64 = 64;

/// Which requests the response cache may answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CachePolicy {
    /// Requests with `temperature = 0`, or `metadata.cache = "true"`.
    #[default]
    Deterministic,
    /// Only requests with `metadata.cache = "true"`.
    OptIn,
}

/// Who shares cached answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheScope {
    /// Every client: an answer cached for one key serves identical requests
    /// of every other key.
    #[default]
    Global,
    /// Each API key has its own entries.
    PerKey,
}

/// `[cache]`: the response cache (L1 memory, L2 sled, L3 the cluster's Redis).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Whether model completions are cached at all.
    pub enabled: bool,
    /// Lifetime of a cached answer, seconds.
    pub ttl_s: u64,
    /// Bound of the in-memory tier, MiB.
    pub l1_max_mb: u64,
    /// Whether the sled tier (survives restarts) is used.
    pub l2: bool,
    /// Whether the cluster's Redis (`[cluster] redis_url`) is used as a
    /// shared tier; without `[cluster]` there is no L3.
    pub l3: bool,
    /// Which requests are cacheable.
    pub policy: CachePolicy,
    /// Who shares entries.
    pub scope: CacheScope,
    /// Moved to `[cluster] redis_url`; refused with a message saying so.
    pub redis_url: Option<Secret>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl_s: DEFAULT_CACHE_TTL_S,
            l1_max_mb: DEFAULT_CACHE_L1_MAX_MB,
            l2: true,
            l3: true,
            policy: CachePolicy::default(),
            scope: CacheScope::default(),
            redis_url: None,
        }
    }
}
