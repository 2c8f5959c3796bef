//! The gateway's configuration: one TOML file, parsed, resolved and checked.
//!
//! [`Config::parse`] does everything that needs no plugin runtime: the schema
//! (unknown keys refused), secret references, paths, and semantic checks such
//! as a pipeline naming a slot of the wrong world. [`check`] goes further and
//! loads every plugin, so a component that does not fit its world is caught
//! before the server starts. Every error names the file, key and line.
//!
//! The reference for operators is `docs/config.md`.

mod check;
mod error;
mod schema;
mod secret;
mod split;
#[cfg(test)]
mod tests;
mod validate;
mod validate_outbound;
mod validate_shared;

pub use crate::auth::valid_key_name;
pub use check::{CheckReport, SlotSummary, UpstreamSummary, check};
pub use error::ConfigError;
pub use schema::*;
pub use secret::{Secret, SecretError, SettingValue};
pub use split::{ReloadableConfig, StartupConfig};

use crate::plugins;
use crate::runtime::{
    EngineSettings, McpServerConfig, PluginSource, PluginSpec, RuntimeSettings, World,
};
use error::{Errors, SpanIndex};
use serde::Deserialize;
use split::{ResilienceTable, ServerTable};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The quickstart configuration, embedded so the binary runs without a file.
pub const QUICKSTART_TOML: &str = include_str!("../../../examples/quickstart.toml");

/// The whole configuration, validated, with secrets resolved, split by when
/// each setting takes effect (see [`StartupConfig`] and [`ReloadableConfig`]).
#[derive(Clone, Debug)]
pub struct Config {
    /// Read once when the gateway starts; a change needs a restart.
    pub startup: StartupConfig,
    /// Applied by `POST /admin/reload`.
    pub reloadable: ReloadableConfig,
    /// Directory relative paths resolve against (the file's directory).
    pub base_dir: PathBuf,
    /// Where the text came from, for errors raised after parsing.
    origin: String,
    /// The file it was read from, for reloads.
    file: Option<PathBuf>,
    /// Lines of the keys, for errors raised after parsing.
    spans: SpanIndex,
}

/// The document as serde sees it: the file's tables as written. [`Config`]
/// splits them and adds where they came from.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Document {
    server: ServerTable,
    admin: AdminConfig,
    store: StoreConfig,
    runtime: RuntimeConfig,
    upstreams: BTreeMap<String, UpstreamConfig>,
    plugins: BTreeMap<String, PluginConfig>,
    mcp: BTreeMap<String, McpServerConfig>,
    pipeline: PipelineConfig,
    cache: CacheConfig,
    auth: AuthConfig,
    rate_limits: RateLimitsConfig,
    resilience: ResilienceTable,
    telemetry: TelemetryConfig,
    budgets: BudgetsConfig,
    cluster: ClusterConfig,
    responses: ResponsesConfig,
    batches: BatchesConfig,
}

impl Document {
    /// The tables, each given to the part that says when it takes effect.
    fn split(self) -> (StartupConfig, ReloadableConfig) {
        // Exhaustive on purpose: a new table must be given a side here.
        let Document {
            server,
            admin,
            store,
            runtime,
            upstreams,
            plugins,
            mcp,
            pipeline,
            cache,
            auth,
            rate_limits,
            resilience,
            telemetry,
            budgets,
            cluster,
            responses,
            batches,
        } = self;
        let (listener, request_limits) = server.split();
        let (resilience, bulkhead) = resilience.split();
        (
            StartupConfig {
                server: listener,
                store,
                runtime,
                cache,
                auth,
                rate_limits,
                resilience: bulkhead,
                telemetry,
                cluster,
                responses,
                batches,
            },
            ReloadableConfig {
                server: request_limits,
                admin,
                upstreams,
                plugins,
                mcp,
                pipeline,
                resilience,
                budgets,
            },
        )
    }
}

impl Config {
    /// Reads, parses and validates a config file; relative paths in it
    /// resolve against its directory.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        Self::load(path).map_err(first)
    }

    /// Parses and validates `text`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        Self::parse_with(text, origin, base_dir, &secret::process_env).map_err(first)
    }

    /// The embedded quickstart, with paths relative to the current directory.
    pub fn embedded_quickstart() -> Config {
        let base_dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        // The text is ours and a unit test parses it, so failure is a bug.
        Self::parse(QUICKSTART_TOML, "<embedded quickstart>", &base_dir)
            .unwrap_or_else(|e| panic!("embedded quickstart config is invalid: {e}"))
    }

    /// Like [`Config::from_file`], reporting every problem.
    pub(crate) fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ConfigError {
                origin: origin.clone(),
                key: String::new(),
                line: None,
                message: format!("cannot read config file: {e}"),
            }]
        })?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        // Absolute, so paths stay right if the process changes directory.
        let base_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let mut config = Self::parse_with(&text, &origin, &base_dir, &secret::process_env)?;
        config.file = Some(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
        Ok(config)
    }

    /// The file this config was read from (`None` for parsed text and the
    /// embedded quickstart); `POST /admin/reload` re-reads it.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Parses with an injectable environment, reporting every problem.
    pub(crate) fn parse_with(
        text: &str,
        origin: &str,
        base_dir: &Path,
        env: secret::EnvLookup<'_>,
    ) -> Result<Config, Vec<ConfigError>> {
        let spans =
            SpanIndex::parse(text).map_err(|e| vec![error::from_toml(origin, None, text, &e)])?;
        let doc: Document = toml::from_str(text)
            .map_err(|e| vec![error::from_toml(origin, Some(&spans), text, &e)])?;
        let (startup, reloadable) = doc.split();
        let mut config = Config {
            startup,
            reloadable,
            base_dir: base_dir.to_path_buf(),
            origin: origin.to_string(),
            file: None,
            spans: SpanIndex::default(),
        };
        let mut errors = Errors::new(origin, &spans);
        validate::validate(&mut config, &mut errors, env);
        if !errors.list.is_empty() {
            return Err(errors.list);
        }
        config.spans = spans;
        Ok(config)
    }

    /// Where the config came from (its file, or the embedded quickstart).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// An error about `key` of this config, with the key's line when known.
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: self.origin.clone(),
            key: key.to_string(),
            line: self.spans.line(key),
            message: message.into(),
        }
    }

    /// One load spec per plugin slot: builtins resolved, limits merged over
    /// the world's defaults, settings and capability paths resolved.
    pub fn plugin_specs(&self) -> Result<Vec<PluginSpec>, ConfigError> {
        self.reloadable
            .plugins
            .iter()
            .map(|(slot, p)| {
                let key = |field: &str| format!("plugins.{slot}.{field}");
                let world = p
                    .world
                    .ok_or_else(|| self.error(&key("world"), "is required"))?;
                let mut spec = match &p.source {
                    SourceRef::Builtin(name) => {
                        let builtin = plugins::get(name).ok_or_else(|| {
                            self.error(&key("source"), format!("unknown builtin `{name}`"))
                        })?;
                        if builtin.world != world {
                            return Err(self.error(
                                &key("world"),
                                format!("builtin `{name}` implements world `{}`", builtin.world),
                            ));
                        }
                        builtin.spec(slot)
                    }
                    SourceRef::File(path) => PluginSpec::new(
                        slot.clone(),
                        world,
                        PluginSource::File(self.base_dir.join(path)),
                    ),
                };
                if p.version.is_some() {
                    spec.version = p.version.clone();
                }
                spec.sha256 = p.sha256.clone();
                spec.limits = p.limits.merge(world);
                spec.settings = p
                    .settings
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().to_string()))
                    .collect();
                spec.capabilities = p.capabilities.clone();
                spec.isolation = p.isolation;
                if let Some(tools) = &p.capabilities.tools {
                    for name in &tools.allow {
                        let server = name.split_once('.').map_or(name.as_str(), |(s, _)| s);
                        if let Some(config) = self.reloadable.mcp.get(server) {
                            spec.mcp_servers.insert(server.to_string(), config.clone());
                        }
                    }
                }
                for dir in &mut spec.capabilities.dirs {
                    dir.host = self.base_dir.join(&dir.host);
                }
                Ok(spec)
            })
            .collect()
    }

    /// Settings of the plugin runtime; the compiled-plugin cache defaults to
    /// `<store>/plugin-cache`.
    pub fn runtime_settings(&self) -> RuntimeSettings {
        let runtime = &self.startup.runtime;
        let cache_dir = match &runtime.cache_dir {
            Some(dir) => self.base_dir.join(dir),
            None => self.store_path().join(DEFAULT_CACHE_SUBDIR),
        };
        RuntimeSettings {
            engine: EngineSettings {
                allocator: runtime.allocator,
                pool_instances: runtime.pool_instances,
                epoch_tick_ms: runtime.epoch_tick_ms,
                spare_instances: runtime.spare_instances,
            },
            cache_dir: Some(cache_dir),
        }
    }

    /// The sled directory, resolved against the config's directory.
    pub fn store_path(&self) -> PathBuf {
        self.base_dir.join(&self.startup.store.path)
    }

    /// Slots of world `agent`, addressable as `agent:<slot>`.
    pub fn agents(&self) -> impl Iterator<Item = &str> {
        self.reloadable
            .plugins
            .iter()
            .filter(|(_, p)| p.world == Some(World::Agent))
            .map(|(slot, _)| slot.as_str())
    }
}

fn first(errors: Vec<ConfigError>) -> ConfigError {
    // Callers of the single-error API get the earliest problem in the file.
    errors
        .into_iter()
        .min_by_key(|e| e.line.unwrap_or(usize::MAX))
        .unwrap_or_else(|| ConfigError {
            origin: String::new(),
            key: String::new(),
            line: None,
            message: "invalid configuration".into(),
        })
}
