//! Assembles a running gateway from a [`Config`]: store, plugin runtime,
//! plugins, upstreams, pipeline and HTTP server.

use crate::config::{Config, UpstreamKind};
use crate::pipeline::{Pipeline, PipelineSettings, Slot, UpstreamSetup};
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
        let state = AppState {
            pipeline,
            store,
            limits: ServerLimits {
                max_body_bytes: usize::try_from(config.server.max_body_bytes).unwrap_or(usize::MAX),
                request_timeout: Duration::from_millis(config.server.request_timeout_ms),
                max_agent_depth: config.server.max_agent_depth,
            },
            draining: Arc::new(AtomicBool::new(false)),
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

    /// Serves on `listener` until `shutdown` resolves, then drains.
    pub fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
        server::serve(listener, self.state, shutdown, self.shutdown)
    }
}
