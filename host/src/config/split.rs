//! When a setting takes effect: the configuration split into what the
//! gateway reads once at start ([`StartupConfig`]) and what
//! `POST /admin/reload` applies ([`ReloadableConfig`]).
//!
//! The split is in the types, so "needs a restart" is derived rather than
//! listed: a reload compares the running [`StartupConfig`] with the file's,
//! key by key ([`StartupConfig::needs_restart`]), and whatever differs is
//! reported. The two tables of the file that mix both kinds, `[server]` and
//! `[resilience]`, are read flat (serde's `deny_unknown_fields` does not
//! combine with `flatten`) and split on the way in with exhaustive
//! destructuring, so a new key does not compile until it is given a side.
//!
//! When unsure, a setting belongs to [`StartupConfig`]: a startup setting
//! changed in the file is reported as needing a restart, whereas a setting
//! wrongly called reloadable would silently not apply.

use super::schema::*;
use super::secret::Secret;
use crate::runtime::McpServerConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Everything the gateway reads once, when it starts: the listener, the
/// store, the plugin engine, cache, auth, rate limits, the global bulkhead
/// and telemetry. A reload that finds any of it changed in the file reports
/// the keys in `needs_restart` (see [`StartupConfig::needs_restart`]) and
/// keeps running with the values it started with.
///
/// Field names are the file's table names, so the dotted keys a comparison
/// reports are the keys an operator writes.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StartupConfig {
    /// The listener part of `[server]`.
    pub server: ListenerConfig,
    /// `[store]`.
    pub store: StoreConfig,
    /// `[runtime]`.
    pub runtime: RuntimeConfig,
    /// `[cache]`.
    pub cache: CacheConfig,
    /// `[auth]`.
    pub auth: AuthConfig,
    /// `[rate_limits]`.
    pub rate_limits: RateLimitsConfig,
    /// The global bulkhead of `[resilience]`.
    pub resilience: BulkheadConfig,
    /// `[telemetry]`.
    pub telemetry: TelemetryConfig,
    /// `[cluster]`.
    pub cluster: ClusterConfig,
    /// `[responses]`.
    pub responses: ResponsesConfig,
    /// `[batches]`.
    pub batches: BatchesConfig,
}

/// What `POST /admin/reload` applies to a running gateway: per-request
/// limits, the admin token, upstreams, plugin slots, pipeline wiring and
/// the resilience bounds of the completion path.
#[derive(Clone, Debug, Default)]
pub struct ReloadableConfig {
    /// The per-request limits of `[server]`.
    pub server: RequestLimitsConfig,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// `[upstreams.<name>]`, by name.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// `[plugins.<slot>]`, by slot name.
    pub plugins: BTreeMap<String, PluginConfig>,
    /// `[mcp.<server>]`: MCP servers agents' tools grants name.
    pub mcp: BTreeMap<String, McpServerConfig>,
    /// `[pipeline]`.
    pub pipeline: PipelineConfig,
    /// Retries, fallbacks and alerts of `[resilience]`.
    pub resilience: ResilienceConfig,
    /// `[budgets]`: what agents may make the host do.
    pub budgets: BudgetsConfig,
}

impl StartupConfig {
    /// The dotted keys (`server.listen`, `cache.ttl_s`, `auth.keys[0].secret`)
    /// whose value in `file` differs from this, the configuration the
    /// gateway started with, sorted. Derived by comparing the two whole
    /// (serialised to a tree, secrets as fingerprints), so a field added to
    /// any startup table is compared without anyone listing it.
    pub fn needs_restart(&self, file: &StartupConfig) -> Vec<String> {
        let mut keys = Vec::new();
        match (serde_json::to_value(self), serde_json::to_value(file)) {
            (Ok(running), Ok(wanted)) => changed_keys("", &running, &wanted, &mut keys),
            // Unreachable with this schema (paths serialise lossily, map
            // keys are strings); should it happen, still say *something*
            // changed rather than nothing.
            (Err(e), _) | (_, Err(e)) if self != file => {
                tracing::warn!(error = %e, "could not compare startup settings key by key");
                keys.push("(startup settings)".to_string());
            }
            _ => {}
        }
        keys.sort();
        keys
    }
}

/// Appends to `out` the dotted paths below `prefix` where `old` and `new`
/// differ: tables key by key (a key only one side has, as a whole), equally
/// long arrays element by element (`keys[2]`), anything else as a whole.
fn changed_keys(
    prefix: &str,
    old: &serde_json::Value,
    new: &serde_json::Value,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    let join = |key: &str| {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        }
    };
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                match b.get(key) {
                    Some(other) => changed_keys(&join(key), value, other, out),
                    // A map entry (e.g. a model's rate limit) only one side has.
                    None => out.push(join(key)),
                }
            }
            out.extend(b.keys().filter(|k| !a.contains_key(*k)).map(|k| join(k)));
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                changed_keys(&format!("{prefix}[{i}]"), x, y, out);
            }
        }
        (a, b) if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

/// `[server]` as written: both parts in one table. Only the parser sees it;
/// [`ServerTable::split`] hands each key to its part.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ServerTable {
    listen: SocketAddr,
    max_body_bytes: u64,
    request_timeout_ms: u64,
    shutdown_grace_ms: u64,
    max_agent_depth: u32,
    max_messages: u32,
    max_message_chars: u64,
    max_headers: u32,
    max_header_bytes: u64,
    header_read_timeout_ms: u64,
    body_read_timeout_ms: u64,
    drain_delay_ms: u64,
}

impl ServerTable {
    /// The table's keys, each in the part that says when it takes effect.
    pub(super) fn split(self) -> (ListenerConfig, RequestLimitsConfig) {
        // Exhaustive on purpose: a new `[server]` key must be placed here.
        let Self {
            listen,
            max_body_bytes,
            request_timeout_ms,
            shutdown_grace_ms,
            max_agent_depth,
            max_messages,
            max_message_chars,
            max_headers,
            max_header_bytes,
            header_read_timeout_ms,
            body_read_timeout_ms,
            drain_delay_ms,
        } = self;
        (
            ListenerConfig {
                listen,
                max_body_bytes,
                shutdown_grace_ms,
                max_headers,
                max_header_bytes,
                header_read_timeout_ms,
                drain_delay_ms,
            },
            RequestLimitsConfig {
                request_timeout_ms,
                max_agent_depth,
                max_messages,
                max_message_chars,
                body_read_timeout_ms,
            },
        )
    }
}

impl Default for ServerTable {
    /// The parts' defaults, so each default is written once.
    fn default() -> Self {
        let ListenerConfig {
            listen,
            max_body_bytes,
            shutdown_grace_ms,
            max_headers,
            max_header_bytes,
            header_read_timeout_ms,
            drain_delay_ms,
        } = ListenerConfig::default();
        let RequestLimitsConfig {
            request_timeout_ms,
            max_agent_depth,
            max_messages,
            max_message_chars,
            body_read_timeout_ms,
        } = RequestLimitsConfig::default();
        Self {
            listen,
            max_body_bytes,
            request_timeout_ms,
            shutdown_grace_ms,
            max_agent_depth,
            max_messages,
            max_message_chars,
            max_headers,
            max_header_bytes,
            header_read_timeout_ms,
            body_read_timeout_ms,
            drain_delay_ms,
        }
    }
}

/// `[resilience]` as written; [`ResilienceTable::split`] hands each key to
/// its part.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ResilienceTable {
    max_attempts: u32,
    max_delay_ms: u64,
    max_concurrent_requests: Option<u32>,
    alert_webhook: Option<Secret>,
    retry_budget: RetryBudgetConfig,
    hedge: HedgeConfig,
    fallbacks: BTreeMap<String, Vec<String>>,
}

impl ResilienceTable {
    /// The table's keys, each in the part that says when it takes effect.
    pub(super) fn split(self) -> (ResilienceConfig, BulkheadConfig) {
        // Exhaustive on purpose: a new `[resilience]` key must be placed here.
        let Self {
            max_attempts,
            max_delay_ms,
            max_concurrent_requests,
            alert_webhook,
            retry_budget,
            hedge,
            fallbacks,
        } = self;
        (
            ResilienceConfig {
                max_attempts,
                max_delay_ms,
                alert_webhook,
                retry_budget,
                hedge,
                fallbacks,
            },
            BulkheadConfig {
                max_concurrent_requests,
            },
        )
    }
}

impl Default for ResilienceTable {
    /// The parts' defaults, so each default is written once.
    fn default() -> Self {
        let ResilienceConfig {
            max_attempts,
            max_delay_ms,
            alert_webhook,
            retry_budget,
            hedge,
            fallbacks,
        } = ResilienceConfig::default();
        let BulkheadConfig {
            max_concurrent_requests,
        } = BulkheadConfig::default();
        Self {
            max_attempts,
            max_delay_ms,
            max_concurrent_requests,
            alert_webhook,
            retry_budget,
            hedge,
            fallbacks,
        }
    }
}
