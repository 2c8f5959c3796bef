//! Assembles a running gateway from a [`Config`]: store, plugin runtime,
//! plugins, upstreams, pipeline and HTTP server.

use crate::config::{Config, UpstreamKind};
use crate::pipeline::{Pipeline, PipelineSettings, Slot, UpstreamSetup};
use crate::runtime::Runtime;
use crate::server::{self, AppState, ServerLimits};
use crate::store::Store;
use crate::upstream::openai::{OpenAiUpstream, http_client};
use crate::upstream::sim::{SimUpstream, Simulator};
use crate::upstream::{Upstream, UpstreamInfo};
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
    grace: Duration,
    _runtime: Arc<Runtime>,
}

impl App {
    /// Opens the store, loads every plugin, connects upstreams and wires the
    /// pipeline.
    pub async fn build(config: &Config) -> Result<App, AppError> {
        let store = Store::open(&config.store_path())?;
        let runtime = Runtime::new(&config.runtime_settings(), Arc::new(store.clone()))
            .map_err(|e| AppError::Runtime(format!("{e:#}")))?;
        let mut slots = HashMap::new();
        for spec in config.plugin_specs()? {
            let policy = config
                .plugins
                .get(&spec.name)
                .map(|p| p.failure_policy)
                .unwrap_or_default();
            let name = spec.name.clone();
            let plugin = runtime.load(spec)?;
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
            let upstream: Arc<dyn Upstream> = match up.kind {
                UpstreamKind::Simulated => {
                    let settings = up.simulator.clone().unwrap_or_default();
                    Arc::new(SimUpstream::new(info, Arc::new(Simulator::new(settings))))
                }
                UpstreamKind::Openai => Arc::new(OpenAiUpstream::new(
                    info,
                    up.base_url.clone().unwrap_or_default(),
                    up.api_key.as_ref().map(|k| k.expose().to_string()),
                    client.clone(),
                )),
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
            ..Default::default()
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
        };
        Ok(App {
            state,
            grace: Duration::from_millis(config.server.shutdown_grace_ms),
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
        server::serve(listener, self.state, shutdown, self.grace)
    }
}
