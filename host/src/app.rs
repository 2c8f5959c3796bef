//! Assembles a running gateway from a [`Config`]: store, plugin runtime,
//! plugins, upstreams, pipeline and HTTP server — and re-assembles the
//! pipeline on `POST /admin/reload`, keeping what did not change.

use crate::auth::Auth;
use crate::cache::ResponseCache;
use crate::config::{Config, StartupConfig, UpstreamKind};
use crate::pipeline::{Pipeline, PipelineSettings, Slot, UpstreamSetup};
use crate::ratelimit::RateLimiter;
use crate::rollout::watch::{self, Watch};
use crate::rollout::{HotPlugin, Rollouts};
use crate::runtime::{PluginSource, Runtime, sha256_hex};
use crate::server::{
    self, AdminState, AppState, Live, Reload, ReloadReport, ServerLimits, Shutdown,
};
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::upstream::openai::{OpenAiUpstream, http_client};
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
    Pipeline(String),
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
        let startup = &config.startup;
        let (live, _) = assemble(config, startup, &rollouts, None, metrics).await?;
        let live = Arc::new(ArcSwap::from_pointee(live));
        let reloader = config.file().map(|_| {
            Arc::new(ConfigReloader {
                startup: startup.clone(),
                current: tokio::sync::Mutex::new(config.clone()),
                rollouts: rollouts.clone(),
                live: live.clone(),
            }) as Arc<dyn Reload>
        });
        let pipeline = live.load().pipeline.clone();
        let auth = Auth::new(&startup.auth, &store)?;
        if !auth.enabled() {
            tracing::warn!(
                "authentication is off ([auth] enabled = false): every client is served as `anonymous`"
            );
        }
        let cache = ResponseCache::from_config(&startup.cache, &store, pipeline.metrics().clone())
            .map(Arc::new);
        let rate_limits = Arc::new(RateLimiter::from_config(
            &startup.rate_limits,
            pipeline.metrics().clone(),
        ));
        let state = AppState {
            live,
            store,
            draining: Arc::new(AtomicBool::new(false)),
            cache,
            auth: Arc::new(auth),
            rate_limits,
            bulkhead: crate::resilience::Bulkhead::new(startup.resilience.max_concurrent_requests),
            config_origin: Arc::from(config.origin()),
            admin: AdminState {
                rollouts: rollouts.clone(),
                reloader,
            },
        };
        Ok(App {
            state,
            shutdown: Shutdown {
                drain_delay: Duration::from_millis(startup.server.drain_delay_ms),
                grace: Duration::from_millis(startup.server.shutdown_grace_ms),
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
        let live = self.state.live.clone();
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
        &self.state.auth
    }

    /// The response cache, when enabled.
    pub fn cache(&self) -> Option<&Arc<ResponseCache>> {
        self.state.cache.as_ref()
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

/// Builds the live state for `config`, with the startup settings the
/// gateway runs with (`startup`: at a reload, the ones it started with, not
/// the file's). With `previous`, slots whose config (and file contents) did
/// not change keep their [`HotPlugin`] — swapped versions, rollouts and
/// counters included — and unchanged upstreams keep their client,
/// statistics and breaker.
async fn assemble(
    config: &Config,
    startup: &StartupConfig,
    rollouts: &Arc<Rollouts>,
    previous: Option<Previous<'_>>,
    metrics: Arc<Metrics>,
) -> Result<(Live, ReloadReport), AppError> {
    let mut report = ReloadReport::default();
    let mut slots = HashMap::new();
    for spec in config.plugin_specs()? {
        let name = spec.name.clone();
        let slot_config = config.reloadable.plugins.get(&name);
        let policy = slot_config.map(|p| p.failure_policy).unwrap_or_default();
        let kept = previous.as_ref().and_then(|p| {
            let old = p.live.pipeline.slots().get(&name)?;
            let mut before = p.config.reloadable.plugins.get(&name)?.clone();
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
    for (name, up) in &config.reloadable.upstreams {
        let reused = previous.as_ref().and_then(|p| {
            // The retry budget is per upstream but configured globally: a
            // changed budget rebuilds the upstream's health with it.
            let (before, after) = (&p.config.reloadable, &config.reloadable);
            (before.upstreams.get(name)? == up
                && before.resilience.retry_budget == after.resilience.retry_budget)
                .then(|| {
                    p.live
                        .pipeline
                        .upstreams()
                        .iter()
                        .find(|u| &u.info().name == name)
                        .cloned()
                })
                .flatten()
        });
        let upstream: Arc<dyn Upstream> = match reused {
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
                Arc::new(ObservedUpstream::new(upstream, metrics.clone(), system))
            }
        };
        upstreams.push(UpstreamSetup {
            upstream,
            timeout: Duration::from_millis(up.timeout_ms),
            breaker: up.breaker.settings(),
            max_concurrent: up.max_concurrent,
            first_token_timeout: up.first_token_timeout_ms.map(Duration::from_millis),
            idle_timeout: up.idle_timeout_ms.map(Duration::from_millis),
        });
    }
    let previous_pipeline = previous.as_ref().map(|p| p.live.pipeline.as_ref());
    let r = &config.reloadable;
    let settings = PipelineSettings {
        input_validators: r.pipeline.input_validators.clone(),
        output_validators: r.pipeline.output_validators.clone(),
        router: r.pipeline.router.clone(),
        recovery: r.pipeline.recovery.clone(),
        max_depth: r.server.max_agent_depth,
        max_attempts: r.resilience.max_attempts,
        max_delay: Duration::from_millis(r.resilience.max_delay_ms),
        retry_budget: r.resilience.retry_budget.settings(),
        fallbacks: r
            .resilience
            .fallbacks
            .iter()
            .map(|(model, chain)| (model.clone(), chain.clone()))
            .collect(),
        alert_webhook: r
            .resilience
            .alert_webhook
            .as_ref()
            .map(|hook| hook.expose().trim().to_string()),
        // One metrics registry per gateway: a reload must not reset counters.
        metrics,
    };
    let pipeline = Pipeline::succeeding(previous_pipeline, slots, upstreams, settings)
        .map_err(AppError::Pipeline)?;
    let (s, r) = (&startup.server, &config.reloadable.server);
    let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    let live = Live {
        pipeline,
        limits: ServerLimits {
            max_body_bytes: size(s.max_body_bytes),
            request_timeout: Duration::from_millis(r.request_timeout_ms),
            max_agent_depth: r.max_agent_depth,
            max_messages: r.max_messages as usize,
            max_message_chars: size(r.max_message_chars),
            max_headers: s.max_headers as usize,
            max_header_bytes: size(s.max_header_bytes),
            header_read_timeout: Duration::from_millis(s.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(r.body_read_timeout_ms),
        },
        admin_token: config.reloadable.admin.token.clone(),
    };
    Ok((live, report))
}

/// `POST /admin/reload`: re-reads the config file the gateway started from.
struct ConfigReloader {
    /// The startup settings the gateway runs with: a reload never changes
    /// them, and reports where the file differs from them.
    startup: StartupConfig,
    /// The config last applied; the lock also serialises reloads.
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
                &self.startup,
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
            report.needs_restart = self.startup.needs_restart(&config.startup);
            report.file = path.display().to_string();
            tracing::info!(?report, "config reloaded");
            *current = config;
            Ok(report)
        })
    }
}
