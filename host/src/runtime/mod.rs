//! The sandboxed plugin runtime.
//!
//! Design, in the order a call meets it:
//! - one [`wasmtime::Engine`] per process (component model, epoch
//!   interruption with one ticker thread, fuel, pooling allocator with an
//!   on-demand fallback, copy-on-write memory images) — see [`engine`];
//! - compile once: an on-disk AOT cache keyed by component digest and engine
//!   compatibility hash — see [`cache`];
//! - a world is a capability boundary: each world has a linker of its own
//!   holding only that world's imports (and WASI), so a validator cannot
//!   reach `kv`, `llm` or `agents`. A component whose imports exceed its
//!   world is refused at load in the words `plugin inspect` uses, before it
//!   is linked; one that lacks its world's export is refused with the missing
//!   item named — see [`bindings`] and [`inspect`];
//! - one generic call: every export goes through [`Plugin`]'s one call
//!   (store, instance, limits, span, metrics and error classification written
//!   once); [`Export`] names each world's input and output, so rollouts
//!   (`crate::rollout`) call all four the same way — see [`exports`];
//! - a fresh instance per call (isolation between tenants and requests; the
//!   pool makes it cost microseconds), with the plugin's memory, wall-clock,
//!   fuel and hostcall limits — see [`limits`];
//! - admission: every instance is admitted from its request's share and
//!   the pool first, so a fan-out cannot starve other requests and a full
//!   pool names who holds it — see `admission.rs`;
//! - deny-by-default WASI: no files, sockets, environment or inherited stdio
//!   unless the operator grants them; guest stdout/stderr become log events.

mod admission;
pub mod bindings;
pub mod cache;
mod convert;
pub mod engine;
pub mod error;
pub mod exports;
mod host;
pub mod http;
pub mod inspect;
mod instances;
pub mod limits;
pub mod mcp;
mod plugin;
pub mod tools;

pub use cache::{AotCache, CacheOutcome};
pub use engine::{AllocatorChoice, AllocatorKind, EngineSettings};
pub use error::{LimitKind, PluginError};
pub use exports::{Export, Handle, Recover, Route, Validate};
pub use host::AgentHost;
pub use http::{HttpGrant, HttpRule};
pub use limits::PluginLimits;
pub use mcp::McpServerConfig;
pub use plugin::{Plugin, PluginIdentity, PluginStats, StatsSnapshot};
pub use tools::ToolsGrant;

use crate::store::KvStore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::Engine;

/// What a plugin's instances may carry from one call to the next
/// (`[plugins.<slot>] isolation`; docs/runtime.md#isolation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Every call runs on an instance of its own, dropped after it: nothing
    /// a call leaves in guest memory reaches another call. The default.
    #[default]
    PerCall,
    /// A validator, router or recovery instance whose call succeeded serves
    /// later calls too, so whatever it keeps in guest memory reaches later
    /// requests of any tenant. It is replaced after a trap, a limit, an
    /// error, output on stdio or [`REUSED_CALLS`] calls. For stateless
    /// plugins whose author the operator trusts with every request.
    Reuse,
}

/// Calls one reused instance serves before it is replaced, so a slow leak
/// in a guest's heap, or what a call left behind, does not live forever.
pub const REUSED_CALLS: u32 = 10_000;

/// The four plugin worlds of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum World {
    /// Solves tasks; may call the LLM and other agents.
    Agent,
    /// Allows, rejects or rewrites messages.
    Validator,
    /// Orders upstream candidates.
    Router,
    /// Decides what to do after a failure.
    Recovery,
}

impl World {
    /// All worlds.
    pub const ALL: [World; 4] = [
        World::Agent,
        World::Validator,
        World::Router,
        World::Recovery,
    ];

    /// The world's name in WIT.
    pub fn as_str(self) -> &'static str {
        match self {
            World::Agent => "agent",
            World::Validator => "validator",
            World::Router => "router",
            World::Recovery => "recovery",
        }
    }

    /// The `agentrouter:plugin` interfaces the world imports: its
    /// capabilities, and all its linker holds besides WASI.
    pub fn imports(self) -> &'static [&'static str] {
        match self {
            World::Agent => &[
                "types", "llm", "agents", "kv", "log", "settings", "http", "tools",
            ],
            World::Validator | World::Router | World::Recovery => &["types", "log", "settings"],
        }
    }

    /// The function the world exports.
    pub fn export(self) -> &'static str {
        match self {
            World::Agent => "handle",
            World::Validator => "validate",
            World::Router => "route",
            World::Recovery => "recover",
        }
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a plugin's bytes come from.
#[derive(Clone)]
pub enum PluginSource {
    /// A `.wasm` file.
    File(PathBuf),
    /// Bytes in memory (embedded builtins, admin uploads).
    Bytes {
        /// Human-readable origin for messages, e.g. `builtin:manager`.
        origin: String,
        /// The component.
        bytes: Cow<'static, [u8]>,
    },
}

impl fmt::Debug for PluginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The origin, not the (possibly megabytes of) component bytes.
        write!(f, "PluginSource({})", self.origin())
    }
}

impl PluginSource {
    /// How messages refer to this source.
    pub fn origin(&self) -> String {
        match self {
            PluginSource::File(path) => path.display().to_string(),
            PluginSource::Bytes { origin, .. } => origin.clone(),
        }
    }
}

/// A directory a plugin may see.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// Directory on the host.
    pub host: PathBuf,
    /// Path the guest sees.
    pub guest: String,
    /// Whether the guest may write.
    #[serde(default)]
    pub writable: bool,
}

/// Capabilities granted to a plugin; everything else is denied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Capabilities {
    /// Host environment variables passed through by name.
    pub env: Vec<String>,
    /// Directories the plugin may open.
    pub dirs: Vec<DirGrant>,
    /// Outbound HTTP an agent may make (`http` import); none without it.
    pub http: Option<HttpGrant>,
    /// MCP tools an agent may use (`tools` import); none without it.
    pub tools: Option<ToolsGrant>,
}

/// Everything needed to load one plugin.
#[derive(Clone)]
pub struct PluginSpec {
    /// Configured name (the slot name).
    pub name: String,
    /// The world the slot requires.
    pub world: World,
    /// The component.
    pub source: PluginSource,
    /// Version label; defaults to the digest's first 12 hex digits.
    pub version: Option<String>,
    /// Pinned sha256 (hex, optionally prefixed `sha256:`).
    pub sha256: Option<String>,
    /// Resource limits.
    pub limits: PluginLimits,
    /// Operator settings, readable through the `settings` import.
    pub settings: BTreeMap<String, String>,
    /// Granted capabilities.
    pub capabilities: Capabilities,
    /// The MCP servers the tools grant names (`[mcp.<server>]`).
    pub mcp_servers: BTreeMap<String, McpServerConfig>,
    /// Whether an instance may serve more than one call.
    pub isolation: Isolation,
}

/// Settings may hold resolved secrets (`${env:…}`), so Debug shows their keys only.
impl fmt::Debug for PluginSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginSpec")
            .field("name", &self.name)
            .field("world", &self.world)
            .field("source", &self.source.origin())
            .field("version", &self.version)
            .field("sha256", &self.sha256)
            .field("limits", &self.limits)
            .field("settings", &self.settings.keys().collect::<Vec<_>>())
            .field("capabilities", &self.capabilities)
            .field("mcp_servers", &self.mcp_servers.keys().collect::<Vec<_>>())
            .field("isolation", &self.isolation)
            .finish()
    }
}

impl PluginSpec {
    /// A spec with default limits (agent defaults for agents), no settings
    /// and no capabilities.
    pub fn new(name: impl Into<String>, world: World, source: PluginSource) -> Self {
        let limits = if world == World::Agent {
            PluginLimits::agent_defaults()
        } else {
            PluginLimits::default()
        };
        Self {
            name: name.into(),
            world,
            source,
            version: None,
            sha256: None,
            limits,
            settings: BTreeMap::new(),
            capabilities: Capabilities::default(),
            mcp_servers: BTreeMap::new(),
            isolation: Isolation::PerCall,
        }
    }
}

/// Settings of the runtime as a whole.
#[derive(Clone, Debug, Default)]
pub struct RuntimeSettings {
    /// Engine settings.
    pub engine: EngineSettings,
    /// AOT cache directory; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
}

/// The plugin runtime: one engine, one linker per world, the AOT cache.
pub struct Runtime {
    engine: Engine,
    linkers: bindings::Linkers,
    allocator: AllocatorKind,
    cache: Option<AotCache>,
    kv: Arc<dyn KvStore>,
    pool: Arc<admission::Pool>,
    ticker: Arc<engine::Ticker>,
    /// Spare instances kept per validator, router and recovery plugin.
    spare_instances: usize,
    metrics: Option<Arc<crate::telemetry::Metrics>>,
}

impl Runtime {
    /// Builds the engine, starts the epoch ticker and opens the AOT cache.
    pub fn new(settings: &RuntimeSettings, kv: Arc<dyn KvStore>) -> Result<Self, wasmtime::Error> {
        let (engine, allocator) = engine::build_engine(&settings.engine)?;
        let ticker = engine::Ticker::start(
            &engine,
            Duration::from_millis(settings.engine.epoch_tick_ms.max(1)),
        );
        let linkers = bindings::Linkers::new(&engine)?;
        let cache = match &settings.cache_dir {
            Some(dir) => Some(AotCache::open(dir, &engine).map_err(|e| {
                wasmtime::Error::msg(format!(
                    "cannot open the plugin cache at {}: {e}; set [runtime] cache_dir to a writable directory",
                    dir.display()
                ))
            })?),
            None => None,
        };
        tracing::debug!(?allocator, cache = ?settings.cache_dir, "plugin runtime ready");
        Ok(Self {
            engine,
            linkers,
            allocator,
            cache,
            kv,
            pool: admission::Pool::new(settings.engine.pool_instances),
            ticker,
            spare_instances: settings.engine.spare_instances as usize,
            metrics: None,
        })
    }

    /// Counts every call of plugins loaded from now on in `metrics`
    /// (calls, failures by kind, duration, fuel), labelled by plugin and
    /// version.
    pub fn with_metrics(mut self, metrics: Arc<crate::telemetry::Metrics>) -> Self {
        self.pool.set_metrics(metrics.clone());
        self.metrics = Some(metrics);
        self
    }

    /// The shared engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Plugin instances in use now, over every plugin.
    pub fn instances_in_use(&self) -> u32 {
        self.pool.in_use()
    }

    /// Which allocator is in use.
    pub fn allocator(&self) -> AllocatorKind {
        self.allocator
    }

    /// The AOT cache, if configured.
    pub fn cache(&self) -> Option<&AotCache> {
        self.cache.as_ref()
    }

    /// Says what `bytes` are without loading them into a slot or compiling
    /// them ([`inspect::read`]): `plugin inspect` and `plugin call` use it.
    pub fn inspect(&self, bytes: &[u8]) -> Result<inspect::ComponentInfo, inspect::InspectError> {
        inspect::read(bytes)
    }

    /// Loads, verifies, compiles and type-checks a plugin.
    pub fn load(&self, spec: PluginSpec) -> Result<Plugin, PluginError> {
        spec.limits.validate(&spec.name)?;
        let origin = spec.source.origin();
        let bytes = read_source(&spec.name, &spec.source)?;
        let digest = sha256_hex(&bytes);
        if let Some(pinned) = &spec.sha256 {
            let expected = pinned
                .trim()
                .trim_start_matches("sha256:")
                .to_ascii_lowercase();
            if expected != digest {
                return Err(PluginError::DigestMismatch {
                    plugin: spec.name,
                    origin,
                    expected,
                    actual: digest,
                });
            }
        }
        inspect::check_header(&bytes).map_err(|reason| PluginError::NotComponent {
            plugin: spec.name.clone(),
            origin: origin.clone(),
            reason,
        })?;
        let component =
            self.compile(&spec.name, &digest, &bytes)
                .map_err(|e| PluginError::Compile {
                    plugin: spec.name.clone(),
                    origin: origin.clone(),
                    detail: format!("{e:#}"),
                })?;
        plugin::Plugin::new(self, spec, origin, digest, component)
    }

    /// Compiles (or loads from the AOT cache) and counts where the code
    /// came from: a Python or JavaScript component takes seconds to
    /// compile, so a restart that misses the cache shows.
    fn compile(
        &self,
        plugin: &str,
        digest: &str,
        bytes: &[u8],
    ) -> Result<wasmtime::component::Component, wasmtime::Error> {
        let (component, outcome) = match &self.cache {
            Some(cache) => {
                let (component, outcome) = cache.load_or_compile(&self.engine, digest, bytes)?;
                let outcome = match outcome {
                    CacheOutcome::Hit => "hit",
                    CacheOutcome::Compiled => "miss",
                };
                (component, outcome)
            }
            None => (
                wasmtime::component::Component::new(&self.engine, bytes)?,
                "uncached",
            ),
        };
        if let Some(metrics) = &self.metrics {
            metrics
                .plugin_compilations
                .get_or_create(&crate::telemetry::metrics::PluginCompileLabels {
                    plugin: plugin.to_string(),
                    outcome: outcome.to_string(),
                })
                .inc();
        }
        Ok(component)
    }
}

/// Hex sha256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn read_source(plugin: &str, source: &PluginSource) -> Result<Cow<'static, [u8]>, PluginError> {
    match source {
        PluginSource::File(path) => read_file(plugin, path).map(Cow::Owned),
        PluginSource::Bytes { bytes, .. } => Ok(bytes.clone()),
    }
}

fn read_file(plugin: &str, path: &Path) -> Result<Vec<u8>, PluginError> {
    std::fs::read(path).map_err(|cause| PluginError::Read {
        plugin: plugin.to_string(),
        path: path.to_path_buf(),
        cause,
    })
}
