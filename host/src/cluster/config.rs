//! `[cluster]`: shared state in Redis for several replicas. The schema's
//! section lives with the cluster so it needs nothing from `config`, which
//! re-exports it.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};

/// Default `cluster.key_prefix`.
pub const DEFAULT_KEY_PREFIX: &str = "agentrouter";
/// Default `cluster.op_timeout_ms`: one Redis round trip on a LAN is well
/// under a millisecond; a quarter second means Redis is in trouble.
pub const DEFAULT_OP_TIMEOUT_MS: u64 = 250;
/// Default `cluster.probe_interval_ms`.
pub const DEFAULT_PROBE_INTERVAL_MS: u64 = 1000;
/// Default `cluster.rollout_sync_ms`.
pub const DEFAULT_ROLLOUT_SYNC_MS: u64 = 1000;
/// Default `cluster.key_sync_ms`.
pub const DEFAULT_KEY_SYNC_MS: u64 = 5000;

/// What a limit does while Redis cannot be reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossPolicy {
    /// Fall back to this replica's own (local) limit: requests keep being
    /// served, and N replicas admit up to N times the limit meanwhile.
    #[default]
    FailOpen,
    /// Refuse what the limit covers (503 `limit_unavailable`) until Redis
    /// is back.
    FailClosed,
}

impl LossPolicy {
    /// The metrics label: `open` or `closed`.
    pub fn label(self) -> &'static str {
        match self {
            LossPolicy::FailOpen => "open",
            LossPolicy::FailClosed => "closed",
        }
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LossPolicy::FailOpen => "fail-open",
            LossPolicy::FailClosed => "fail-closed",
        }
    }
}

/// `[cluster.on_redis_loss]`: the policy of each kind of limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossPolicies {
    /// A key's requests per second (and burst).
    pub requests: LossPolicy,
    /// A key's tokens per minute.
    pub tokens: LossPolicy,
    /// Per-model limits (`[rate_limits.models.<model>]`).
    pub models: LossPolicy,
    /// A key's daily budget.
    pub budgets: LossPolicy,
}

/// `[cluster]`: Redis-backed shared state (limits, budgets, keys, the L3
/// cache, rollouts). Without `redis_url` every replica keeps its own.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]`, resolved (use `${env:...}`
    /// or `${file:...}` when it carries a password).
    pub redis_url: Option<Secret>,
    /// Prefix of every Redis key, so deployments can share one Redis.
    pub key_prefix: String,
    /// Longest a Redis command may take before it counts as a loss.
    pub op_timeout_ms: u64,
    /// How often Redis is pinged (to notice loss while idle, and recovery).
    pub probe_interval_ms: u64,
    /// How often a replica applies rollout changes made on another replica.
    pub rollout_sync_ms: u64,
    /// How often a replica refreshes its copy of the shared API keys, used
    /// while Redis cannot be reached.
    pub key_sync_ms: u64,
    /// What each kind of limit does while Redis cannot be reached.
    pub on_redis_loss: LossPolicies,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            key_prefix: DEFAULT_KEY_PREFIX.to_string(),
            op_timeout_ms: DEFAULT_OP_TIMEOUT_MS,
            probe_interval_ms: DEFAULT_PROBE_INTERVAL_MS,
            rollout_sync_ms: DEFAULT_ROLLOUT_SYNC_MS,
            key_sync_ms: DEFAULT_KEY_SYNC_MS,
            on_redis_loss: LossPolicies::default(),
        }
    }
}
