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

/// Labels of a rate-limit rejection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitLabels {
    /// Key id (configured or created name, never the secret), or `anonymous`.
    pub key: String,
    /// `requests`, `tokens`, `model` or `budget`.
    pub limit: String,
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
    /// Alerts raised (recovery `fail` with alert, or the host).
    pub alerts: Family<AlertLabels, Counter>,
    /// Cache lookups by level and result.
    pub cache_lookups: Family<CacheLabels, Counter>,
    /// Requests refused by a rate limit or budget.
    pub rate_limited: Family<RateLimitLabels, Counter>,
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
    /// Tokens by key, model and direction.
    pub tokens: Family<TokenLabels, Counter>,
    /// Cost in USD by key and model.
    pub cost_usd: Family<UsageLabels, Counter<f64, AtomicU64>>,
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
            alerts: Family::default(),
            cache_lookups: Family::default(),
            rate_limited: Family::default(),
            plugin_calls: Family::default(),
            plugin_errors: Family::default(),
            plugin_duration: histograms(),
            plugin_fuel: Family::default(),
            plugin_peak_memory: Family::default(),
            plugin_compilations: Family::default(),
            tokens: Family::default(),
            cost_usd: Family::default(),
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
            "tokens",
            "Tokens by key, model and direction",
            m.tokens.clone(),
        );
        register!(
            "cost_usd",
            "Cost in USD by key and model",
            m.cost_usd.clone(),
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
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
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
