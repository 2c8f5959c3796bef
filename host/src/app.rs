//! Assembles a running gateway from a [`Config`]: store, plugin runtime,
//! plugins, upstreams, pipeline and HTTP server.

use crate::auth::Auth;
use crate::cache::ResponseCache;
use crate::config::{Config, UpstreamKind};
use crate::pipeline::{Pipeline, PipelineSettings, Slot, UpstreamSetup};
use crate::ratelimit::RateLimiter;
use crate::runtime::Runtime;
use crate::server::{self, AppState, ServerLimits, Shutdown};
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::upstream::openai::{OpenAiUpstream, http_client};
use crate::upstream::sim::{SimUpstream, Simulator};
use crate::upstream::{ObservedUpstream, Upstream, UpstreamInfo};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The config is invalid.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// The store could not be opened.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// The plugin runtime could not start.
    #[error("plugin runtime: {0}")]
    Runtime(String),
    /// A plugin failed to load.
    #[error("{0}")]
    Plugin(#[from] crate::runtime::PluginError),
    /// The pipeline's wiring is inconsistent.
    #[error("pipeline: {0}")]
    Pipeline(String),
    /// The API keys could not be loaded.
    #[error("auth: {0}")]
    Auth(#[from] crate::auth::AuthError),
}

/// A gateway ready to serve.
pub struct App {
    state: AppState,
    shutdown: Shutdown,
    _runtime: Arc<Runtime>,
}

impl App {
    /// Opens the store, loads every plugin, connects upstreams and wires the
    /// pipeline.
    pub async fn build(config: &Config) -> Result<App, AppError> {
        let store = Store::open(&config.store_path())?;
        let metrics = Arc::new(Metrics::new());
        let runtime = Runtime::new(&config.runtime_settings(), Arc::new(store.clone()))
            .map_err(|e| AppError::Runtime(format!("{e:#}")))?
            .with_metrics(metrics.clone());
        let mut slots = HashMap::new();
        for spec in config.plugin_specs()? {
            let policy = config
                .plugins
                .get(&spec.name)
                .map(|p| p.failure_policy)
                .unwrap_or_default();
            let name = spec.name.clone();
            let plugin = runtime.load(spec)?;
            // A plugin that cannot even be instantiated keeps the replica
            // not-ready (see `/health/ready`) rather than failing the start,
            // so the operator can read why from a running gateway.
            if let Err(e) = plugin.warm().await {
                tracing::error!(plugin = %plugin.identity(), error = %e, "plugin could not be instantiated");
            }
            tracing::info!(plugin = %plugin.identity(), world = %plugin.world(), digest = %plugin.identity().digest, "plugin loaded");
            slots.insert(
                name,
                Slot {
                    plugin: Arc::new(plugin),
                    policy,
                },
            );
        }
        let client = http_client();
        let mut upstreams = Vec::new();
        for (name, up) in &config.upstreams {
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
            let upstream = Arc::new(ObservedUpstream::new(upstream, metrics.clone(), system));
            upstreams.push(UpstreamSetup {
                upstream,
                timeout: Duration::from_millis(up.timeout_ms),
                breaker: up.breaker.settings(),
                max_concurrent: up.max_concurrent,
                first_token_timeout: up.first_token_timeout_ms.map(Duration::from_millis),
                idle_timeout: up.idle_timeout_ms.map(Duration::from_millis),
            });
        }
        let settings = PipelineSettings {
            input_validators: config.pipeline.input_validators.clone(),
            output_validators: config.pipeline.output_validators.clone(),
            router: config.pipeline.router.clone(),
            recovery: config.pipeline.recovery.clone(),
            max_depth: config.server.max_agent_depth,
            max_attempts: config.resilience.max_attempts,
            max_delay: Duration::from_millis(config.resilience.max_delay_ms),
            retry_budget: config.resilience.retry_budget.settings(),
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
            metrics,
        };
        let pipeline = Pipeline::new(slots, upstreams, settings).map_err(AppError::Pipeline)?;
        let auth = Auth::new(&config.auth, &store)?;
        if !auth.enabled() {
            tracing::warn!(
                "authentication is off ([auth] enabled = false): every client is served as `anonymous`"
            );
        }
        let validators = config
            .pipeline
            .input_validators
            .iter()
            .chain(&config.pipeline.output_validators)
            .filter_map(|name| {
                let slot = pipeline.slots().get(name)?;
                Some((name.as_str(), slot.plugin.identity().digest.as_str()))
            });
        let generation = ResponseCache::generation(validators);
        let cache = ResponseCache::from_config(
            &config.cache,
            &store,
            generation,
            pipeline.metrics().clone(),
        )
        .map(Arc::new);
        let rate_limits = Arc::new(RateLimiter::from_config(
            &config.rate_limits,
            pipeline.metrics().clone(),
        ));
        let s = &config.server;
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let state = AppState {
            pipeline,
            store,
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
            draining: Arc::new(AtomicBool::new(false)),
            cache,
            auth: Arc::new(auth),
            rate_limits,
            bulkhead: crate::resilience::Bulkhead::new(config.resilience.max_concurrent_requests),
            config_origin: Arc::from(config.origin()),
        };
        Ok(App {
            state,
            shutdown: Shutdown {
                drain_delay: Duration::from_millis(config.server.drain_delay_ms),
                grace: Duration::from_millis(config.server.shutdown_grace_ms),
            },
            _runtime: Arc::new(runtime),
        })
    }

    /// Set once shutdown begins (readiness turns 503).
    pub fn draining(&self) -> Arc<AtomicBool> {
        self.state.draining.clone()
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.state.pipeline
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
