//! Assembles a running gateway from a [`Config`]: store, plugin runtime,
//! plugins, upstreams, pipeline and HTTP server — and re-assembles the
//! pipeline on `POST /admin/reload`, keeping what did not change.

use crate::auth::Auth;
use crate::cache::ResponseCache;
use crate::config::{Config, UpstreamKind};
use crate::gateway::{Gateway, Live, ServerLimits};
use crate::net::http_client;
use crate::pipeline::{GuardedUpstream, Pipeline, PipelineSettings, Slot};
use crate::ratelimit::RateLimiter;
use crate::resilience::HealthSettings;
use crate::rollout::watch::{self, Watch};
use crate::rollout::{HotPlugin, Rollouts};
use crate::runtime::{PluginSource, Runtime, sha256_hex};
use crate::server::{self, AdminState, AppState, Reload, ReloadReport, Shutdown};
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::upstream::openai::OpenAiUpstream;
use crate::upstream::sim::{SimUpstream, Simulator};
use crate::upstream::{ObservedUpstream, Upstream, UpstreamInfo};
use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The plugin runtime could not start.
    #[error("plugin runtime: {0}")]
    Runtime(String),
    /// A plugin failed to load.
    #[error(transparent)]
    Plugin(#[from] crate::runtime::PluginError),
    /// The pipeline's wiring is inconsistent.
    #[error("pipeline: {0}")]
    Pipeline(#[from] crate::pipeline::WiringError),
    /// The API keys could not be loaded.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
}

/// A gateway ready to serve.
pub struct App {
    state: AppState,
    shutdown: Shutdown,
    rollouts: Arc<Rollouts>,
}

impl App {
    /// Opens the store, loads every plugin (re-applying admin-installed
    /// versions and resuming rollouts the store remembers), connects
    /// upstreams and wires the pipeline.
    pub async fn build(config: &Config) -> Result<App, AppError> {
        let store = Store::open(&config.store_path())?;
        let metrics = Arc::new(Metrics::new());
        let runtime = Runtime::new(&config.runtime_settings(), Arc::new(store.clone()))
            .map_err(|e| AppError::Runtime(format!("{e:#}")))?
            .with_metrics(metrics.clone());
        let rollouts = Rollouts::new(Arc::new(runtime), store.clone());
        let (live, _) = assemble(config, &rollouts, None, metrics).await?;
        let live = Arc::new(ArcSwap::from_pointee(live));
        let reloader = config.file().map(|_| {
            Arc::new(ConfigReloader {
                current: tokio::sync::Mutex::new(config.clone()),
                rollouts: rollouts.clone(),
                live: live.clone(),
            }) as Arc<dyn Reload>
        });
        let pipeline = live.load().pipeline.clone();
        let auth = Auth::new(&config.auth, &store)?;
        if !auth.enabled() {
            tracing::warn!(
                "authentication is off ([auth] enabled = false): every client is served as `anonymous`"
            );
        }
        let cache = ResponseCache::from_config(&config.cache, &store, pipeline.metrics().clone())
            .map(Arc::new);
        let rate_limits = Arc::new(RateLimiter::from_config(
            &config.rate_limits,
            pipeline.metrics().clone(),
        ));
        let gateway = Arc::new(Gateway::new(live, cache, Arc::new(auth), rate_limits));
        let state = AppState {
            gateway,
            store,
            draining: Arc::new(AtomicBool::new(false)),
            bulkhead: crate::resilience::Bulkhead::new(config.resilience.max_concurrent_requests),
            config_origin: Arc::from(config.origin()),
            admin: AdminState {
                rollouts: rollouts.clone(),
                reloader,
            },
        };
        Ok(App {
            state,
            shutdown: Shutdown {
                drain_delay: Duration::from_millis(config.server.drain_delay_ms),
                grace: Duration::from_millis(config.server.shutdown_grace_ms),
            },
            rollouts,
        })
    }

    /// Set once shutdown begins (readiness turns 503).
    pub fn draining(&self) -> Arc<AtomicBool> {
        self.state.draining.clone()
    }

    /// The current pipeline.
    pub fn pipeline(&self) -> Arc<Pipeline> {
        self.state.pipeline()
    }

    /// Reloads file plugins when their `.wasm` changes (`serve --watch`);
    /// watching stops when the returned [`Watch`] is dropped.
    pub fn watch(&self) -> Result<Watch, notify::Error> {
        let live = self.state.gateway.live().clone();
        let lookup: watch::SlotLookup = Arc::new(move || {
            let pipeline = live.load().pipeline.clone();
            let slots = pipeline
                .slots()
                .values()
                .map(|s| s.plugin.clone())
                .collect();
            (slots, pipeline.candidates())
        });
        watch::watch(Arc::downgrade(&self.rollouts), lookup)
    }

    /// The API key registry (create, rotate and revoke keys while serving).
    pub fn auth(&self) -> &Arc<Auth> {
        self.state.gateway.auth()
    }

    /// The response cache, when enabled.
    pub fn cache(&self) -> Option<&Arc<ResponseCache>> {
        self.state.gateway.cache()
    }

    /// Serves on `listener` until `shutdown` resolves, then drains.
    pub fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
        server::serve(listener, self.state, shutdown, self.shutdown)
    }
}

/// The previous assembly a reload builds on.
struct Previous<'a> {
    config: &'a Config,
    live: &'a Live,
}

/// Builds the live state for `config`. With `previous`, slots whose config
/// (and file contents) did not change keep their [`HotPlugin`] — swapped
/// versions, rollouts and counters included — and unchanged upstreams keep
/// their client, statistics and breaker.
async fn assemble(
    config: &Config,
    rollouts: &Arc<Rollouts>,
    previous: Option<Previous<'_>>,
    metrics: Arc<Metrics>,
) -> Result<(Live, ReloadReport), AppError> {
    let mut report = ReloadReport::default();
    let mut slots = HashMap::new();
    for spec in config.plugin_specs()? {
        let name = spec.name.clone();
        let slot_config = config.plugins.get(&name);
        let policy = slot_config.map(|p| p.failure_policy).unwrap_or_default();
        let kept = previous.as_ref().and_then(|p| {
            let old = p.live.pipeline.slots().get(&name)?;
            let mut before = p.config.plugins.get(&name)?.clone();
            let after = slot_config?;
            // The policy is the slot's, not the plugin's: it may change alone.
            before.failure_policy = after.failure_policy;
            let same_file = match &spec.source {
                PluginSource::File(path) => std::fs::read(path)
                    .map(|b| sha256_hex(&b) == old.plugin.state().base_digest)
                    .unwrap_or(false),
                PluginSource::Bytes { .. } => true,
            };
            (before == *after && same_file).then(|| old.plugin.clone())
        });
        let plugin = match kept {
            Some(hot) => {
                report.plugins_kept.push(name.clone());
                hot
            }
            None => {
                let runtime = rollouts.runtime().clone();
                let template = spec.clone();
                let plugin = tokio::task::spawn_blocking(move || runtime.load(spec))
                    .await
                    .map_err(|e| AppError::Runtime(format!("plugin load task failed: {e}")))??;
                // A plugin that cannot even be instantiated keeps the replica
                // not-ready (see `/health/ready`) rather than failing the
                // start, so the operator can read why from a running gateway.
                if let Err(e) = plugin.warm().await {
                    tracing::error!(plugin = %plugin.identity(), error = %e, "plugin could not be instantiated");
                }
                tracing::info!(plugin = %plugin.identity(), world = %plugin.world(), digest = %plugin.identity().digest, "plugin loaded");
                let hot = Arc::new(HotPlugin::new(template, Arc::new(plugin)));
                rollouts.restore(&hot).await;
                report.plugins_loaded.push(name.clone());
                hot
            }
        };
        slots.insert(name, Slot { plugin, policy });
    }
    if let Some(p) = &previous {
        report.plugins_removed = p
            .live
            .pipeline
            .slots()
            .keys()
            .filter(|n| !slots.contains_key(*n))
            .cloned()
            .collect();
    }
    let client = http_client();
    let mut upstreams = Vec::new();
    for (name, up) in &config.upstreams {
        let reused = previous.as_ref().and_then(|p| {
            // The retry budget is per upstream but configured globally: a
            // changed budget rebuilds the upstream's health with it.
            (p.config.upstreams.get(name)? == up
                && p.config.resilience.retry_budget == config.resilience.retry_budget)
                .then(|| {
                    p.live
                        .pipeline
                        .upstreams()
                        .iter()
                        .find(|u| u.name() == name)
                        .cloned()
                })
                .flatten()
        });
        let upstream: Arc<GuardedUpstream> = match reused {
            Some(upstream) => {
                report.upstreams_kept.push(name.clone());
                upstream
            }
            None => {
                report.upstreams_rebuilt.push(name.clone());
                let info = UpstreamInfo {
                    name: name.clone(),
                    model: up.model.clone(),
                    input_cost_per_1k: up.input_cost_per_1k,
                    output_cost_per_1k: up.output_cost_per_1k,
                    tags: up.tags.clone(),
                    weight: up.weight,
                };
                let (upstream, system): (Arc<dyn Upstream>, _) = match up.kind {
                    UpstreamKind::Simulated => {
                        let settings = up.simulator.clone().unwrap_or_default();
                        let sim = SimUpstream::new(info, Arc::new(Simulator::new(settings)));
                        (Arc::new(sim), "agentrouter.simulator")
                    }
                    UpstreamKind::Openai => (
                        Arc::new(OpenAiUpstream::new(
                            info,
                            up.base_url.clone().unwrap_or_default(),
                            up.api_key.as_ref().map(|k| k.expose().to_string()),
                            client.clone(),
                        )),
                        "openai",
                    ),
                };
                let observed = Arc::new(ObservedUpstream::new(upstream, metrics.clone(), system));
                let timeout = Duration::from_millis(up.timeout_ms);
                let guards = HealthSettings {
                    timeout,
                    first_token_timeout: up
                        .first_token_timeout_ms
                        .map_or(timeout, Duration::from_millis),
                    idle_timeout: up.idle_timeout_ms.map_or(timeout, Duration::from_millis),
                    breaker: up.breaker.settings(),
                    max_concurrent: up.max_concurrent,
                    retry_budget: config.resilience.retry_budget.settings(),
                };
                Arc::new(GuardedUpstream::new(observed, guards, metrics.clone()))
            }
        };
        upstreams.push(upstream);
    }
    let settings = PipelineSettings {
        input_validators: config.pipeline.input_validators.clone(),
        output_validators: config.pipeline.output_validators.clone(),
        router: config.pipeline.router.clone(),
        recovery: config.pipeline.recovery.clone(),
        max_attempts: config.resilience.max_attempts,
        max_delay: Duration::from_millis(config.resilience.max_delay_ms),
        fallbacks: config
            .resilience
            .fallbacks
            .iter()
            .map(|(model, chain)| (model.clone(), chain.clone()))
            .collect(),
        alert_webhook: config
            .resilience
            .alert_webhook
            .as_ref()
            .map(|hook| hook.expose().trim().to_string()),
        // One metrics registry per gateway: a reload must not reset counters.
        metrics,
    };
    let pipeline = Pipeline::new(slots, upstreams, settings)?;
    if let Some(p) = &previous {
        let (old, new) = (&p.config.server, &config.server);
        for (key, changed) in [
            ("server.listen", old.listen != new.listen),
            (
                "server.max_body_bytes",
                old.max_body_bytes != new.max_body_bytes,
            ),
            (
                "server.shutdown_grace_ms",
                old.shutdown_grace_ms != new.shutdown_grace_ms,
            ),
            (
                "server.drain_delay_ms",
                old.drain_delay_ms != new.drain_delay_ms,
            ),
            (
                "resilience.max_concurrent_requests",
                p.config.resilience.max_concurrent_requests
                    != config.resilience.max_concurrent_requests,
            ),
            ("telemetry", p.config.telemetry != config.telemetry),
            ("cache", p.config.cache != config.cache),
            ("auth", p.config.auth != config.auth),
            ("rate_limits", p.config.rate_limits != config.rate_limits),
            ("server.max_headers", old.max_headers != new.max_headers),
            (
                "server.max_header_bytes",
                old.max_header_bytes != new.max_header_bytes,
            ),
            (
                "server.header_read_timeout_ms",
                old.header_read_timeout_ms != new.header_read_timeout_ms,
            ),
            ("store", p.config.store != config.store),
            ("runtime", p.config.runtime != config.runtime),
        ] {
            if changed {
                report.needs_restart.push(key.to_string());
            }
        }
    }
    let s = &config.server;
    let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    let live = Live {
        pipeline,
        limits: ServerLimits {
            max_body_bytes: size(s.max_body_bytes),
            request_timeout: Duration::from_millis(s.request_timeout_ms),
            max_agent_depth: s.max_agent_depth,
            max_messages: s.max_messages as usize,
            max_message_chars: size(s.max_message_chars),
            max_headers: s.max_headers as usize,
            max_header_bytes: size(s.max_header_bytes),
            header_read_timeout: Duration::from_millis(s.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(s.body_read_timeout_ms),
        },
        admin_token: config.admin.token.clone(),
    };
    Ok((live, report))
}

/// `POST /admin/reload`: re-reads the config file the gateway started from.
struct ConfigReloader {
    /// The config in effect; the lock also serialises reloads.
    current: tokio::sync::Mutex<Config>,
    rollouts: Arc<Rollouts>,
    live: Arc<ArcSwap<Live>>,
}

impl Reload for ConfigReloader {
    fn reload(&self) -> BoxFuture<'_, Result<ReloadReport, String>> {
        Box::pin(async move {
            let mut current = self.current.lock().await;
            let Some(path) = current.file().map(|p| p.to_path_buf()) else {
                return Err("the gateway was not started from a config file".into());
            };
            let config = Config::from_file(&path).map_err(|e| e.to_string())?;
            let old = self.live.load_full();
            let metrics = old.pipeline.metrics().clone();
            let (live, mut report) = assemble(
                &config,
                &self.rollouts,
                Some(Previous {
                    config: &current,
                    live: &old,
                }),
                metrics,
            )
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
            self.live.store(Arc::new(live));
            report.file = path.display().to_string();
            tracing::info!(?report, "config reloaded");
            *current = config;
            Ok(report)
        })
    }
}
