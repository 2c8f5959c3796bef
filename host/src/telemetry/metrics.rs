//! Every Prometheus series the gateway exports, defined in one place.
//!
//! One [`Metrics`] per running gateway (not a process global) so that tests
//! can run several gateways in one process and read each one's counts.
//! Labels are bounded by construction: route templates, configured model,
//! upstream, plugin and key names, and small enums — never raw user input.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Latency buckets in seconds, 100 µs to ~26 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 19)
}

/// A histogram with [`latency_buckets`].
fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Labels of a served HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route template, e.g. `/v1/chat/completions`.
    pub route: String,
    /// Configured model or `agent:<name>`; `-` when unknown.
    pub target: String,
    /// HTTP status code.
    pub status: u16,
}

/// Labels of a route alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route template.
    pub route: String,
}

/// Labels of an upstream attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// Configured upstream name.
    pub upstream: String,
    /// `ok` or the failure kind (`timeout`, `server-error`, `rate-limited`, ...).
    pub outcome: String,
}

/// Labels naming one upstream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamName {
    /// Configured upstream name.
    pub upstream: String,
}

/// Labels of a retry or other resilience action.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// Configured upstream name the action started from.
    pub upstream: String,
    /// `retry`, `fallback`, `chunk`, `refine`, `fail`.
    pub action: String,
}

/// Labels of a shed request (bulkhead full, retry budget spent).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    /// `global` or the upstream's name.
    pub scope: String,
}

/// Labels of an alert raised by a recovery plugin or the host.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    /// Who raised it: the recovery plugin's name, or `host`.
    pub source: String,
    /// The upstream involved, or `-`.
    pub upstream: String,
}

/// Labels of a cache lookup.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `l1`, `l2` or `l3`.
    pub level: String,
    /// `hit` or `miss`.
    pub result: String,
}

/// Labels of a finished batch request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BatchLabels {
    /// `completed` (a 2xx) or `failed`.
    pub result: String,
}

/// Labels of a rate-limit rejection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitLabels {
    /// Key id (configured or created name, never the secret), or `anonymous`.
    pub key: String,
    /// `requests`, `tokens`, `model` or `budget`.
    pub limit: String,
}

/// Labels naming the cluster's Redis.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RedisLabels {
    /// `host:port` (never credentials).
    pub redis: String,
}

/// Labels of a failed Redis operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterOpLabels {
    /// The operation: `ratelimit`, `budget`, `keys`, `cache`, `rollout`, ...
    pub op: String,
}

/// Labels of a limit decision taken without Redis.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterFallbackLabels {
    /// `requests`, `tokens`, `model` or `budget`.
    pub limit: String,
    /// `open` (the local limit decided) or `closed` (refused).
    pub policy: String,
}

/// Labels naming an API key.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    /// Key id (configured or created name), or `anonymous`.
    pub key: String,
}

/// Labels of an upstream's own rate-limit headroom.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    /// Configured upstream name.
    pub upstream: String,
    /// `requests` or `tokens`.
    pub resource: String,
}

/// Labels of a plugin call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    /// Plugin (slot) name.
    pub plugin: String,
    /// Plugin version.
    pub version: String,
}

/// Labels of a failed plugin call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginErrorLabels {
    /// Plugin (slot) name.
    pub plugin: String,
    /// Plugin version.
    pub version: String,
    /// `trap`, `timeout`, `memory`, `fuel`, `rejected`, `invalid`, ...
    pub kind: String,
}

/// Labels of a plugin compilation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginCompileLabels {
    /// Plugin (slot) name.
    pub plugin: String,
    /// `hit` (loaded from the AOT cache), `miss` (compiled, then stored) or
    /// `uncached` (compiled; no cache configured).
    pub outcome: String,
}

/// Labels of a refused plugin admission.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// `request` (the request's share was in use) or `pool` (the pool was full).
    pub scope: String,
}

/// Labels of a refused host effect.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabels {
    /// Agent slot that asked.
    pub agent: String,
    /// `request` or `agent_call`: whose budget was spent.
    pub scope: String,
    /// `llm_calls`, `tokens`, `delegations`, `plugin_instances`,
    /// `wall_time`, `call_all_tasks`.
    pub resource: String,
}

/// Labels naming a plugin's kv namespace.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KvLabels {
    /// Plugin (slot) name: the namespace.
    pub plugin: String,
}

/// Labels of a refused kv write.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KvRefusalLabels {
    /// Plugin (slot) name.
    pub plugin: String,
    /// `quota`, `too_large` or `store_error`.
    pub reason: String,
}

/// Labels of a plugin's outbound calls (`http.fetch`, `tools.call`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutboundLabels {
    /// Plugin (slot) name.
    pub plugin: String,
    /// `http` or `tool`.
    pub kind: String,
}

/// Labels of an outbound call's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutboundOutcomeLabels {
    /// Plugin (slot) name.
    pub plugin: String,
    /// `http` or `tool`.
    pub kind: String,
    /// `ok`, `denied`, `timeout` or `error`.
    pub outcome: String,
}

/// Labels of bytes an outbound call moved.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutboundBytesLabels {
    /// Plugin (slot) name.
    pub plugin: String,
    /// `http` or `tool`.
    pub kind: String,
    /// `sent` or `received`.
    pub direction: String,
}

/// Labels of a plugin decision the host refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// Plugin (slot) name.
    pub plugin: String,
    /// `rewrite`, `retry`, `fallback`, `chunk`, `refine`.
    pub decision: String,
}

/// Labels of usage accounting.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UsageLabels {
    /// Key id, or `anonymous`.
    pub key: String,
    /// Configured model.
    pub model: String,
}

/// Labels of token accounting.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// Key id, or `anonymous`.
    pub key: String,
    /// Configured model.
    pub model: String,
    /// `input` or `output`.
    pub direction: String,
}

/// Every series the gateway exports.
pub struct Metrics {
    registry: Registry,
    families: Vec<String>,
    /// Requests served, by route, target and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency, by route, target and status.
    pub request_duration: HistogramFamily<RequestLabels>,
    /// Time a request spent in the gateway itself (total minus upstream waits).
    pub gateway_overhead: HistogramFamily<RouteLabels>,
    /// Upstream attempts by outcome.
    pub upstream_attempts: Family<UpstreamLabels, Counter>,
    /// Upstream attempt latency.
    pub upstream_duration: HistogramFamily<UpstreamName>,
    /// Breaker state per upstream: 0 closed, 1 half-open, 2 open.
    pub breaker_state: Family<UpstreamName, Gauge>,
    /// Recovery actions the host carried out.
    pub recovery_actions: Family<ActionLabels, Counter>,
    /// Requests refused fast because a bulkhead was full.
    pub bulkhead_rejections: Family<ShedLabels, Counter>,
    /// Retries refused because the retry budget was spent.
    pub retry_budget_exhausted: Family<UpstreamName, Counter>,
    /// Hedges of a slow upstream's attempts: sent, or refused by its
    /// hedge budget.
    pub hedges: Family<UpstreamLabels, Counter>,
    /// Alerts raised (recovery `fail` with alert, or the host).
    pub alerts: Family<AlertLabels, Counter>,
    /// Cache lookups by level and result.
    pub cache_lookups: Family<CacheLabels, Counter>,
    /// Requests refused by a rate limit or budget.
    pub rate_limited: Family<RateLimitLabels, Counter>,
    /// Batch requests run, by result.
    pub batch_requests: Family<BatchLabels, Counter>,
    /// Plugin calls.
    pub plugin_calls: Family<PluginLabels, Counter>,
    /// Plugin call failures by kind.
    pub plugin_errors: Family<PluginErrorLabels, Counter>,
    /// Plugin call duration.
    pub plugin_duration: HistogramFamily<PluginLabels>,
    /// Fuel consumed by plugin calls.
    pub plugin_fuel: Family<PluginLabels, Counter>,
    /// Peak linear memory seen in one call.
    pub plugin_peak_memory: Family<PluginLabels, Gauge>,
    /// Plugin loads by where the compiled code came from.
    pub plugin_compilations: Family<PluginCompileLabels, Counter>,
    /// Plugin instances in use now.
    pub plugin_instances_in_use: Gauge,
    /// Spare plugin instances made ahead, waiting for a call.
    pub plugin_instances_spare: Gauge,
    /// Plugin calls not started because no instance could be admitted.
    pub plugin_admissions_refused: Family<AdmissionLabels, Counter>,
    /// Host effects refused because a budget was spent.
    pub budget_denials: Family<BudgetLabels, Counter>,
    /// Plugin decisions the host refused (nonsense actions, rewrites that
    /// break the host's rules).
    pub plugin_decisions_refused: Family<DecisionLabels, Counter>,
    /// Keys in a plugin's kv namespace.
    pub kv_keys: Family<KvLabels, Gauge>,
    /// Bytes of keys and values in a plugin's kv namespace.
    pub kv_bytes: Family<KvLabels, Gauge>,
    /// kv writes refused, by reason.
    pub kv_writes_refused: Family<KvRefusalLabels, Counter>,
    /// Outbound calls of plugins (HTTP requests, MCP tool calls) by outcome.
    pub outbound_calls: Family<OutboundOutcomeLabels, Counter>,
    /// Bytes plugins' outbound calls sent and received.
    pub outbound_bytes: Family<OutboundBytesLabels, Counter>,
    /// Duration of plugins' outbound calls.
    pub outbound_duration: HistogramFamily<OutboundLabels>,
    /// Expired kv entries removed by the sweep.
    pub kv_expired_swept: Family<KvLabels, Counter>,
    /// Tokens by key, model and direction.
    pub tokens: Family<TokenLabels, Counter>,
    /// Cost in USD by key and model.
    pub cost_usd: Family<UsageLabels, Counter<f64, AtomicU64>>,
    /// Whether the cluster's Redis answers (1) or not (0); absent without
    /// `[cluster]`.
    pub cluster_redis_up: Family<RedisLabels, Gauge>,
    /// Redis operations that failed, by operation.
    pub cluster_errors: Family<ClusterOpLabels, Counter>,
    /// Limit decisions taken without Redis, by limit and policy.
    pub cluster_fallbacks: Family<ClusterFallbackLabels, Counter>,
    /// A key's spend today, USD (keys with a daily budget).
    pub budget_spent_usd: Family<KeyLabels, Gauge<f64, AtomicU64>>,
    /// A key's daily budget, USD.
    pub budget_limit_usd: Family<KeyLabels, Gauge<f64, AtomicU64>>,
    /// What an upstream says is left of its rate limit (`x-ratelimit-remaining-*`).
    pub upstream_quota_remaining: Family<QuotaLabels, Gauge>,
    /// An upstream's rate limit as it announces it (`x-ratelimit-limit-*`).
    pub upstream_quota_limit: Family<QuotaLabels, Gauge>,
    /// Resident memory of the process, bytes, read at scrape time.
    pub process_resident_memory: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates every series, registered under the `agentrouter` prefix.
    pub fn new() -> Metrics {
        let histograms =
            || -> HistogramFamily<_> { Family::new_with_constructor(latency_histogram) };
        let mut m = Metrics {
            registry: Registry::with_prefix("agentrouter"),
            families: Vec::new(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            gateway_overhead: Family::new_with_constructor(latency_histogram),
            upstream_attempts: Family::default(),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            breaker_state: Family::default(),
            recovery_actions: Family::default(),
            bulkhead_rejections: Family::default(),
            retry_budget_exhausted: Family::default(),
            hedges: Family::default(),
            alerts: Family::default(),
            cache_lookups: Family::default(),
            rate_limited: Family::default(),
            batch_requests: Family::default(),
            plugin_calls: Family::default(),
            plugin_errors: Family::default(),
            plugin_duration: histograms(),
            plugin_fuel: Family::default(),
            plugin_peak_memory: Family::default(),
            plugin_compilations: Family::default(),
            plugin_instances_in_use: Gauge::default(),
            plugin_instances_spare: Gauge::default(),
            plugin_admissions_refused: Family::default(),
            budget_denials: Family::default(),
            plugin_decisions_refused: Family::default(),
            kv_keys: Family::default(),
            kv_bytes: Family::default(),
            kv_writes_refused: Family::default(),
            outbound_calls: Family::default(),
            outbound_bytes: Family::default(),
            outbound_duration: Family::new_with_constructor(latency_histogram),
            kv_expired_swept: Family::default(),
            tokens: Family::default(),
            cost_usd: Family::default(),
            cluster_redis_up: Family::default(),
            cluster_errors: Family::default(),
            cluster_fallbacks: Family::default(),
            budget_spent_usd: Family::default(),
            budget_limit_usd: Family::default(),
            upstream_quota_remaining: Family::default(),
            upstream_quota_limit: Family::default(),
            process_resident_memory: Gauge::default(),
        };
        let mut families = Vec::new();
        let r = &mut m.registry;
        // Records each family's exposed name as it is registered.
        macro_rules! register {
            ($name:expr, $help:expr, $metric:expr $(,)?) => {{
                families.push(format!("agentrouter_{}", $name));
                r.register($name, $help, $metric);
            }};
        }
        register!("http_requests", "HTTP requests served", m.requests.clone());
        register!(
            "http_request_duration_seconds",
            "HTTP request latency",
            m.request_duration.clone(),
        );
        register!(
            "gateway_overhead_seconds",
            "Time spent in the gateway, not waiting on upstreams",
            m.gateway_overhead.clone(),
        );
        register!(
            "upstream_attempts",
            "Upstream attempts by outcome",
            m.upstream_attempts.clone(),
        );
        register!(
            "upstream_duration_seconds",
            "Upstream attempt latency",
            m.upstream_duration.clone(),
        );
        register!(
            "upstream_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            m.breaker_state.clone(),
        );
        register!(
            "recovery_actions",
            "Recovery actions carried out by the host",
            m.recovery_actions.clone(),
        );
        register!(
            "bulkhead_rejections",
            "Requests refused because a concurrency bulkhead was full",
            m.bulkhead_rejections.clone(),
        );
        register!(
            "retry_budget_exhausted",
            "Retries refused because the retry budget was spent",
            m.retry_budget_exhausted.clone(),
        );
        register!(
            "hedges",
            "Hedges of slow upstream attempts: sent, or refused by the hedge budget",
            m.hedges.clone(),
        );
        register!("alerts", "Alerts raised", m.alerts.clone());
        register!(
            "cache_lookups",
            "Response cache lookups by level and result",
            m.cache_lookups.clone(),
        );
        register!(
            "rate_limited",
            "Requests refused by a rate limit or budget",
            m.rate_limited.clone(),
        );
        register!(
            "batch_requests",
            "Batch requests run, by result",
            m.batch_requests.clone(),
        );
        register!("plugin_calls", "Plugin calls", m.plugin_calls.clone());
        register!(
            "plugin_errors",
            "Failed plugin calls by kind",
            m.plugin_errors.clone(),
        );
        register!(
            "plugin_call_duration_seconds",
            "Plugin call duration, instantiation included",
            m.plugin_duration.clone(),
        );
        register!(
            "plugin_fuel_consumed",
            "Fuel consumed by plugin calls",
            m.plugin_fuel.clone(),
        );
        register!(
            "plugin_peak_memory_bytes",
            "Largest linear memory seen in one plugin call",
            m.plugin_peak_memory.clone(),
        );
        register!(
            "plugin_compilations",
            "Plugin loads by where the compiled code came from (AOT cache hit, miss, uncached)",
            m.plugin_compilations.clone(),
        );
        register!(
            "plugin_instances_in_use",
            "Plugin instances in use now, over every plugin",
            m.plugin_instances_in_use.clone(),
        );
        register!(
            "plugin_instances_spare",
            "Spare plugin instances made ahead, waiting for a call",
            m.plugin_instances_spare.clone(),
        );
        register!(
            "plugin_admissions_refused",
            "Plugin calls not started: the request's share or the pool was in use",
            m.plugin_admissions_refused.clone(),
        );
        register!(
            "budget_denials",
            "Host effects refused to an agent because a budget was spent",
            m.budget_denials.clone(),
        );
        register!(
            "plugin_decisions_refused",
            "Plugin decisions the host refused",
            m.plugin_decisions_refused.clone(),
        );
        register!(
            "kv_keys",
            "Keys in a plugin's kv namespace",
            m.kv_keys.clone()
        );
        register!(
            "kv_bytes",
            "Bytes of keys and values in a plugin's kv namespace",
            m.kv_bytes.clone(),
        );
        register!(
            "kv_writes_refused",
            "kv writes refused, by reason",
            m.kv_writes_refused.clone(),
        );
        register!(
            "plugin_outbound_calls",
            "Plugin outbound calls (http, tool) by outcome",
            m.outbound_calls.clone(),
        );
        register!(
            "plugin_outbound_bytes",
            "Bytes plugin outbound calls sent and received",
            m.outbound_bytes.clone(),
        );
        register!(
            "plugin_outbound_duration_seconds",
            "Plugin outbound call duration, redirects included",
            m.outbound_duration.clone(),
        );
        register!(
            "kv_expired_swept",
            "Expired kv entries removed by the sweep",
            m.kv_expired_swept.clone(),
        );
        register!(
            "tokens",
            "Tokens by key, model and direction",
            m.tokens.clone(),
        );
        register!(
            "cost_usd",
            "Cost in USD by key and model",
            m.cost_usd.clone(),
        );
        register!(
            "cluster_redis_up",
            "Whether the cluster's Redis answers: 1 up, 0 lost",
            m.cluster_redis_up.clone(),
        );
        register!(
            "cluster_redis_errors",
            "Redis operations that failed, by operation",
            m.cluster_errors.clone(),
        );
        register!(
            "cluster_fallbacks",
            "Limit decisions taken without Redis, by limit and on_redis_loss policy",
            m.cluster_fallbacks.clone(),
        );
        register!(
            "budget_spent_usd",
            "Spend of a key today (UTC), USD",
            m.budget_spent_usd.clone(),
        );
        register!(
            "budget_limit_usd",
            "Daily budget of a key, USD",
            m.budget_limit_usd.clone(),
        );
        register!(
            "upstream_quota_remaining",
            "What an upstream reports is left of its rate limit",
            m.upstream_quota_remaining.clone(),
        );
        register!(
            "upstream_quota_limit",
            "An upstream's rate limit as it reports it",
            m.upstream_quota_limit.clone(),
        );
        register!(
            "process_resident_memory_bytes",
            "Resident memory of the gateway process",
            m.process_resident_memory.clone(),
        );
        m.families = families;
        m
    }

    /// The exposed name of every family (`agentrouter_…`, without the
    /// `_total`/`_bucket` suffixes), including families with no series yet
    /// (which the exposition leaves out).
    pub fn families(&self) -> &[String] {
        &self.families
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        if let Some(rss) = resident_memory_bytes() {
            self.process_resident_memory
                .set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Resident set size of this process (Linux `/proc/self/statm`, pages ×
/// 4 KiB — the page size of every platform the gateway ships for).
fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_series_with_labels() {
        let m = Metrics::new();
        m.alerts
            .get_or_create(&AlertLabels {
                source: "standard-recovery".into(),
                upstream: "primary".into(),
            })
            .inc();
        let text = m.render();
        assert!(
            text.contains(
                r#"agentrouter_alerts_total{source="standard-recovery",upstream="primary"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE agentrouter_alerts counter"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
