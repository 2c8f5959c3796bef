//! The configuration schema: these structs are what the TOML file may say.
//!
//! Every table rejects unknown keys, so a typo is an error rather than a
//! silently ignored setting. Defaults are the constants at the top; where
//! another module owns the concept (agent depth, upstream timeout, the
//! plugin engine, breakers, retry budgets) the default is that module's and
//! the schema refers to it.
//!
//! `[server]` and `[resilience]` each hold settings of both kinds (applied
//! at start, applied on reload), so each is two structs here; see
//! [`super::split`] for how the file's tables are divided.

use super::secret::{Secret, SettingValue};
pub use crate::auth::{AuthConfig, DEFAULT_ROTATION_GRACE_S, KeyConfig};
pub use crate::cache::{
    CacheConfig, CachePolicy, CacheScope, DEFAULT_CACHE_L1_MAX_MB, DEFAULT_CACHE_TTL_S,
};
pub use crate::cluster::{ClusterConfig, LossPolicies, LossPolicy};
pub use crate::gateway::ResponsesConfig;
pub use crate::pipeline::FailurePolicy;
pub use crate::pipeline::budget::{
    AgentBudgetOverrides, AgentCallBudget, BudgetsConfig, RequestBudget,
};
pub use crate::ratelimit::{LimitConfig, RateLimitsConfig};
pub use crate::resilience::{BreakerConfig, HedgeConfig, RetryBudgetConfig};
use crate::runtime::{AllocatorChoice, Capabilities, EngineSettings, PluginLimits, World};
pub use crate::server::batch::BatchesConfig;
pub use crate::telemetry::config::{DEFAULT_SAMPLE_RATE, DEFAULT_SERVICE_NAME, TelemetryConfig};
pub use crate::upstream::sim::SimSettings;
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Default `server.listen`: loopback, so a fresh install is not exposed.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// Default `server.max_body_bytes` (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 20;
/// Default `server.request_timeout_ms`.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 60_000;
/// Default `server.shutdown_grace_ms`.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 30_000;
/// Default `server.max_agent_depth`: the domain's bound on nested agent calls.
pub const DEFAULT_MAX_AGENT_DEPTH: u32 = crate::domain::DEFAULT_MAX_DEPTH;
/// Default `store.path`.
pub const DEFAULT_STORE_PATH: &str = "data";
/// Directory under the store holding compiled plugins when
/// `runtime.cache_dir` is not set.
pub const DEFAULT_CACHE_SUBDIR: &str = "plugin-cache";
/// Default `upstreams.<name>.weight`.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Default `upstreams.<name>.timeout_ms`: the upstream module's bound on
/// one call.
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 =
    crate::resilience::DEFAULT_UPSTREAM_TIMEOUT.as_millis() as u64;
/// Default `server.max_messages`.
pub const DEFAULT_MAX_MESSAGES: u32 = 1024;
/// Default `server.max_message_chars`.
pub const DEFAULT_MAX_MESSAGE_CHARS: u64 = 262_144;
/// Default `server.max_headers`.
pub const DEFAULT_MAX_HEADERS: u32 = 100;
/// Default `server.max_header_bytes` (64 KiB).
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 64 * 1024;
/// Smallest `server.max_header_bytes` hyper accepts.
pub const MIN_MAX_HEADER_BYTES: u64 = 8192;
/// Default `server.header_read_timeout_ms`.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Default `server.body_read_timeout_ms`.
pub const DEFAULT_BODY_READ_TIMEOUT_MS: u64 = 30_000;
/// Default `resilience.max_attempts`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = crate::pipeline::DEFAULT_MAX_ATTEMPTS;
/// Default `resilience.max_delay_ms`.
pub const DEFAULT_MAX_DELAY_MS: u64 = crate::pipeline::DEFAULT_MAX_DELAY.as_millis() as u64;
/// Default `server.drain_delay_ms`: stop accepting at once.
pub const DEFAULT_DRAIN_DELAY_MS: u64 = 0;

/// Serialises a path for comparison, lossily: a non-UTF-8 path must not make
/// the comparison fail.
fn lossy_path<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

fn lossy_opt_path<S: Serializer>(path: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match path {
        Some(path) => lossy_path(path, s),
        None => s.serialize_none(),
    }
}

/// Serialises a value of a type from another module by its `Debug` form,
/// for comparison only.
fn as_debug<T: fmt::Debug, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{value:?}"))
}

/// The startup part of `[server]`: the listener and connection handling,
/// built once when the server starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ListenerConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Largest request body accepted (part of the router).
    pub max_body_bytes: u64,
    /// How long in-flight requests may drain on SIGTERM/Ctrl-C.
    pub shutdown_grace_ms: u64,
    /// Most request headers (HTTP/1; more is answered 431).
    pub max_headers: u32,
    /// Largest request head (start line + headers), in bytes.
    pub max_header_bytes: u64,
    /// Time a client has to send a request's headers (slow clients are cut
    /// off); also how long an idle keep-alive connection stays open.
    pub header_read_timeout_ms: u64,
    /// After SIGTERM/Ctrl-C, how long the server keeps accepting requests
    /// while readiness reports 503, so load balancers take the replica out
    /// before its listener closes.
    pub drain_delay_ms: u64,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            max_headers: DEFAULT_MAX_HEADERS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            header_read_timeout_ms: DEFAULT_HEADER_READ_TIMEOUT_MS,
            drain_delay_ms: DEFAULT_DRAIN_DELAY_MS,
        }
    }
}

/// The reloadable part of `[server]`: limits checked per request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLimitsConfig {
    /// Total deadline of one request, agents included.
    pub request_timeout_ms: u64,
    /// Deepest chain of agent-to-agent calls.
    pub max_agent_depth: u32,
    /// Most messages one request may carry.
    pub max_messages: u32,
    /// Longest content of one message, in characters.
    pub max_message_chars: u64,
    /// Time a client has to send a request's body once its headers arrived.
    pub body_read_timeout_ms: u64,
}

impl Default for RequestLimitsConfig {
    fn default() -> Self {
        Self {
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            max_agent_depth: DEFAULT_MAX_AGENT_DEPTH,
            max_messages: DEFAULT_MAX_MESSAGES,
            max_message_chars: DEFAULT_MAX_MESSAGE_CHARS,
            body_read_timeout_ms: DEFAULT_BODY_READ_TIMEOUT_MS,
        }
    }
}

/// `[admin]`: the admin API under `/admin` (hot swap, rollouts, reload).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token admin requests must carry, resolved (usually
    /// `${env:AGENTROUTER_ADMIN_TOKEN}`). Without it the admin API is off.
    pub token: Option<Secret>,
}

/// `[store]`: persistent state.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// sled directory, as written (see [`super::Config::store_path`]).
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    /// How often expired plugin kv entries are removed.
    pub kv_sweep_interval_s: u64,
}

/// Default `store.kv_sweep_interval_s`.
pub const DEFAULT_KV_SWEEP_INTERVAL_S: u64 = 60;

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from(DEFAULT_STORE_PATH),
            kv_sweep_interval_s: DEFAULT_KV_SWEEP_INTERVAL_S,
        }
    }
}

/// `[runtime]`: the plugin engine.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Compiled-plugin cache, as written; `None` means `<store>/plugin-cache`.
    #[serde(serialize_with = "lossy_opt_path")]
    pub cache_dir: Option<PathBuf>,
    /// Instance allocation strategy.
    #[serde(serialize_with = "as_debug")]
    pub allocator: AllocatorChoice,
    /// Concurrent plugin instances the pool holds.
    pub pool_instances: u32,
    /// Granularity of plugin wall-clock limits.
    pub epoch_tick_ms: u64,
    /// Instances made ahead per validator, router and recovery plugin.
    pub spare_instances: u32,
}

impl Default for RuntimeConfig {
    /// The engine's own defaults (`runtime::EngineSettings`).
    fn default() -> Self {
        let EngineSettings {
            allocator,
            pool_instances,
            epoch_tick_ms,
            spare_instances,
        } = EngineSettings::default();
        Self {
            cache_dir: None,
            allocator,
            pool_instances,
            epoch_tick_ms,
            spare_instances,
        }
    }
}

/// What serves an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    /// The built-in simulator (no network; for demos and tests).
    Simulated,
    /// An OpenAI-compatible HTTP API.
    Openai,
}

impl fmt::Display for UpstreamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpstreamKind::Simulated => "simulated",
            UpstreamKind::Openai => "openai",
        })
    }
}

/// `[upstreams.<name>]`: one model endpoint.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// What serves it.
    pub kind: UpstreamKind,
    /// The model it serves (several upstreams may serve one model).
    pub model: String,
    /// The endpoints it serves: `chat` (chat completions, and the
    /// Responses API translated to them), `embeddings`, `responses` (the
    /// Responses API passed through as is). Default `["chat"]`.
    #[serde(default = "default_serves")]
    pub serves: Vec<crate::domain::Endpoint>,
    /// API base URL (openai only).
    #[serde(default)]
    pub base_url: Option<String>,
    /// API key, resolved (openai only).
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Price of 1000 input tokens, USD.
    #[serde(default)]
    pub input_cost_per_1k: f64,
    /// Price of 1000 input tokens the provider served from its prompt cache
    /// (`prompt_tokens_details.cached_tokens`), USD; `input_cost_per_1k`
    /// when not set.
    #[serde(default)]
    pub cached_input_cost_per_1k: Option<f64>,
    /// Price of 1000 output tokens, USD.
    #[serde(default)]
    pub output_cost_per_1k: f64,
    /// Capability tags routers may use, e.g. `reasoning`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Relative weight among upstreams serving the same model, for routing.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Deadline of one upstream call.
    #[serde(default = "default_upstream_timeout_ms")]
    pub timeout_ms: u64,
    /// Simulator behaviour; after [`super::Config::parse`] always `Some` for
    /// simulated upstreams (defaults filled in) and `None` for the others.
    #[serde(default)]
    pub simulator: Option<SimSettings>,
    /// Circuit breaker thresholds.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Bulkhead: most calls in flight to this upstream; beyond it the host
    /// moves on to another upstream or answers 503 at once. Unbounded when
    /// absent.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// Streams: longest wait for the first event; `timeout_ms` when absent.
    #[serde(default)]
    pub first_token_timeout_ms: Option<u64>,
    /// Streams: longest silence between two events; `timeout_ms` when absent.
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
}

fn default_serves() -> Vec<crate::domain::Endpoint> {
    vec![crate::domain::Endpoint::Chat]
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

fn default_upstream_timeout_ms() -> u64 {
    DEFAULT_UPSTREAM_TIMEOUT_MS
}

/// Where a plugin comes from, as written in `source`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub enum SourceRef {
    /// `builtin:<name>`: a first-party plugin embedded in the binary.
    Builtin(String),
    /// A `.wasm` file; absolute after [`super::Config::parse`].
    File(PathBuf),
}

impl From<String> for SourceRef {
    fn from(s: String) -> Self {
        match s.strip_prefix(crate::plugins::BUILTIN_PREFIX) {
            Some(name) => SourceRef::Builtin(name.to_string()),
            None => SourceRef::File(PathBuf::from(s)),
        }
    }
}

impl fmt::Display for SourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceRef::Builtin(name) => write!(f, "{}{name}", crate::plugins::BUILTIN_PREFIX),
            SourceRef::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// `[plugins.<slot>]`: one plugin slot.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// `builtin:<name>` or a path to a `.wasm` component.
    pub source: SourceRef,
    /// The world the slot requires; after [`super::Config::parse`] always
    /// `Some` (a builtin's own world when not written).
    #[serde(default)]
    pub world: Option<World>,
    /// Version label.
    #[serde(default)]
    pub version: Option<String>,
    /// Pinned digest: 64 hex digits, optionally prefixed `sha256:`.
    #[serde(default)]
    pub sha256: Option<String>,
    /// What to do when the plugin fails.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// Settings the plugin reads, secret references resolved.
    #[serde(default)]
    pub settings: BTreeMap<String, SettingValue>,
    /// Resource limit overrides.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Granted capabilities (deny by default).
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Agent slots: overrides of `[budgets.agent_call]`.
    #[serde(default)]
    pub budget: AgentBudgetOverrides,
    /// Whether an instance may serve more than one call (not for agents).
    #[serde(default)]
    pub isolation: crate::runtime::Isolation,
}

/// `[plugins.<slot>.limits]`: overrides of the world's default limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest linear memory, MiB.
    pub memory_mb: Option<u32>,
    /// Wall-clock bound of one call.
    pub timeout_ms: Option<u64>,
    /// Fuel budget per call.
    pub fuel: Option<u64>,
    /// Bytes the guest may pass to the host in one host call.
    pub hostcall_fuel: Option<usize>,
    /// Largest table, in elements.
    pub table_elements: Option<u32>,
    /// Most keys in the plugin's kv namespace.
    pub kv_max_keys: Option<u64>,
    /// Largest kv value, bytes.
    pub kv_max_value_bytes: Option<usize>,
    /// Most bytes of keys and values in the plugin's kv namespace.
    pub kv_max_total_bytes: Option<u64>,
}

impl LimitsConfig {
    /// These overrides applied over the defaults of `world`.
    pub fn merge(&self, world: World) -> PluginLimits {
        let base = if world == World::Agent {
            PluginLimits::agent_defaults()
        } else {
            PluginLimits::default()
        };
        PluginLimits {
            memory_mb: self.memory_mb.unwrap_or(base.memory_mb),
            timeout_ms: self.timeout_ms.unwrap_or(base.timeout_ms),
            fuel: self.fuel.or(base.fuel),
            hostcall_fuel: self.hostcall_fuel.unwrap_or(base.hostcall_fuel),
            table_elements: self.table_elements.unwrap_or(base.table_elements),
            kv_max_keys: self.kv_max_keys.unwrap_or(base.kv_max_keys),
            kv_max_value_bytes: self.kv_max_value_bytes.unwrap_or(base.kv_max_value_bytes),
            kv_max_total_bytes: self.kv_max_total_bytes.unwrap_or(base.kv_max_total_bytes),
        }
    }
}

/// The reloadable part of `[resilience]`: the host's bounds on retries,
/// fallbacks and alerts of the completion path.
#[derive(Clone, Debug, PartialEq)]
pub struct ResilienceConfig {
    /// Upstream attempts per completion: retries, refinements and
    /// fallbacks together. The recovery plugin cannot exceed it.
    pub max_attempts: u32,
    /// Cap on a retry's backoff (not on an upstream's `Retry-After`).
    pub max_delay_ms: u64,
    /// URL that receives a JSON POST for every alert (`${env:...}` allowed).
    pub alert_webhook: Option<Secret>,
    /// Retry budget, per upstream.
    pub retry_budget: RetryBudgetConfig,
    /// Hedging of slow attempts, per upstream.
    pub hedge: HedgeConfig,
    /// Per model, the models to fall back to, in order, when none of its
    /// own upstreams can serve.
    pub fallbacks: BTreeMap<String, Vec<String>>,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_delay_ms: DEFAULT_MAX_DELAY_MS,
            alert_webhook: None,
            retry_budget: RetryBudgetConfig::default(),
            hedge: HedgeConfig::default(),
            fallbacks: BTreeMap::new(),
        }
    }
}

/// The startup part of `[resilience]`: the global bulkhead, which wraps the
/// router when the server starts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BulkheadConfig {
    /// Most requests in flight in this replica; beyond it clients get 503
    /// with `Retry-After` at once. Unbounded when absent.
    pub max_concurrent_requests: Option<u32>,
}

/// `[pipeline]`: which slots a chat completion passes through.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Validator slots run on the request, in order.
    pub input_validators: Vec<String>,
    /// Validator slots run on the response, in order.
    pub output_validators: Vec<String>,
    /// Router slot ordering upstream candidates.
    pub router: Option<String>,
    /// Recovery slot deciding what to do after a failure.
    pub recovery: Option<String>,
}
