//! Assembles a running gateway from a [`Config`]: store, plugin runtime,
//! plugins, upstreams, pipeline and HTTP server — and re-assembles the
//! pipeline on `POST /admin/reload`, keeping what did not change.
//!
//! Assembly runs under the control-plane guard ([`ControlGuard`]), at start
//! as on every reload, so a reload never interleaves with an admin swap, a
//! rollout step or a `--watch` reload. It is a few small steps: keep or load
//! each plugin slot ([`load_slots`]), keep or build each upstream
//! ([`build_upstreams`], each guarded as [`health_settings`] says), map the
//! config onto the pipeline ([`pipeline_settings`]) and the request limits
//! ([`server_limits`]); only when nothing can fail any more do the freshly
//! loaded slots take over what the store remembers about them. What needs a
//! restart is not decided here: the config's [`StartupConfig`] is read once,
//! and a reload reports where the file differs from it.

use crate::auth::Auth;
use crate::cache::ResponseCache;
use crate::cluster::Cluster;
use crate::config::{
    Config, ListenerConfig, ReloadableConfig, RequestLimitsConfig, StartupConfig, UpstreamConfig,
    UpstreamKind,
};
use crate::gateway::{Gateway, Live, ServerLimits};
use crate::net::http_client;
use crate::pipeline::{
    AgentBudgetOverrides, BudgetSettings, GuardedUpstream, Pipeline, PipelineSettings, Slot,
};
use crate::ratelimit::RateLimiter;
use crate::resilience::HealthSettings;
use crate::rollout::shared;
use crate::rollout::watch::{self, Watch};
use crate::rollout::{ControlGuard, HotPlugin, Rollouts};
use crate::runtime::{PluginSource, PluginSpec, Runtime, sha256_hex};
use crate::server::admin::ReloadError;
use crate::server::{self, AdminState, AppState, Reload, ReloadReport, ServerState, Shutdown};
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

/// Why the gateway could not start, or a reload could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The plugin runtime could not start (the wasmtime engine refused its
    /// settings).
    #[error("plugin runtime: {0:#}")]
    Runtime(wasmtime::Error),
    /// The blocking task compiling a plugin died (a panic in the compiler).
    #[error("plugin runtime: plugin load task failed: {0}")]
    LoadTask(#[from] tokio::task::JoinError),
    /// A plugin failed to load.
    #[error(transparent)]
    Plugin(#[from] crate::runtime::PluginError),
    /// The pipeline's wiring is inconsistent.
    #[error("pipeline: {0}")]
    Pipeline(#[from] crate::pipeline::WiringError),
    /// The API keys could not be loaded.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// `[cluster]` could not be set up (a malformed Redis URL).
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// A gateway ready to serve.
pub struct App {
    state: AppState,
    shutdown: Shutdown,
    rollouts: Arc<Rollouts>,
    sweeper: tokio::task::JoinHandle<()>,
    /// Background work of a cluster member (key copy refresh, rollout
    /// sync); ended when the app stops serving.
    background: Vec<tokio::task::JoinHandle<()>>,
    rollout_sync: Option<shared::Sync>,
}

impl App {
    /// Opens the store, loads every plugin (re-applying admin-installed
    /// versions and resuming rollouts the store remembers), connects
    /// upstreams and wires the pipeline.
    pub async fn build(config: &Config) -> Result<App, AppError> {
        let startup = &config.startup;
        let store = Store::open(&config.store_path())?;
        let metrics = Arc::new(Metrics::new());
        let cluster = Cluster::connect(&startup.cluster, metrics.clone()).await?;
        let runtime = Runtime::new(&config.runtime_settings(), Arc::new(store.clone()))
            .map_err(AppError::Runtime)?
            .with_metrics(metrics.clone());
        let rollouts = Rollouts::new(Arc::new(runtime), store.clone());
        let responses = crate::gateway::ResponseStore::new(store.clone(), &startup.responses);
        let sweeper = spawn_sweeper(
            store.clone(),
            responses.clone(),
            Duration::from_secs(startup.store.kv_sweep_interval_s),
            metrics.clone(),
        );
        if let Some(cluster) = &cluster {
            rollouts.join_cluster(cluster.clone());
        }
        let (live, _) = {
            let guard = rollouts.lock().await;
            assemble(&guard, &rollouts, config, startup, None, metrics).await?
        };
        let live = Arc::new(ArcSwap::from_pointee(live));
        let reloader = config.file().map(|_| {
            Arc::new(ConfigReloader {
                startup: startup.clone(),
                current: ArcSwap::from_pointee(config.clone()),
                rollouts: rollouts.clone(),
                live: live.clone(),
            }) as Arc<dyn Reload>
        });
        let pipeline = live.load().pipeline.clone();
        let auth = Arc::new(Auth::new(&startup.auth, &store, cluster.clone()).await?);
        if !auth.enabled() {
            tracing::warn!(
                "authentication is off ([auth] enabled = false): every client is served as `anonymous`"
            );
        }
        let cache = ResponseCache::from_config(
            &startup.cache,
            &store,
            cluster.as_ref(),
            pipeline.metrics().clone(),
        )
        .map(Arc::new);
        let rate_limits = Arc::new(RateLimiter::from_config(
            &startup.rate_limits,
            pipeline.metrics().clone(),
            cluster.clone(),
        ));
        let mut background = Vec::new();
        let mut rollout_sync = None;
        if cluster.is_some() {
            background.push(tokio::spawn(sync_keys(
                Arc::downgrade(&auth),
                Duration::from_millis(startup.cluster.key_sync_ms),
            )));
            // Serve what the other replicas serve before taking traffic.
            let lookup = slot_lookup(&live);
            shared::sync_once(&rollouts, &lookup).await;
            rollout_sync = Some(shared::sync(
                Arc::downgrade(&rollouts),
                lookup,
                Duration::from_millis(startup.cluster.rollout_sync_ms),
            ));
        }
        let gateway = Arc::new(
            Gateway::new(
                live,
                cache,
                auth,
                rate_limits,
                &startup.auth.budget_alert_thresholds,
            )
            .with_responses(responses),
        );
        let batches = Arc::new(crate::server::batch::Batches::new(
            store.clone(),
            &startup.batches,
            gateway.metrics().clone(),
        ));
        let state = AppState::new(ServerState {
            batches: batches.clone(),
            gateway,
            store,
            draining: Arc::new(AtomicBool::new(false)),
            bulkhead: crate::resilience::Bulkhead::new(startup.resilience.max_concurrent_requests),
            config_origin: Arc::from(config.origin()),
            admin: AdminState {
                rollouts: rollouts.clone(),
                reloader,
            },
            cluster,
        });
        // Unfinished batches go on where they stopped.
        batches.resume(&state);
        Ok(App {
            state,
            shutdown: Shutdown {
                drain_delay: Duration::from_millis(startup.server.drain_delay_ms),
                grace: Duration::from_millis(startup.server.shutdown_grace_ms),
            },
            rollouts,
            sweeper,
            background,
            rollout_sync,
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
        watch::watch(
            Arc::downgrade(&self.rollouts),
            slot_lookup(self.state.gateway.live()),
        )
    }

    /// The API key registry (create, rotate and revoke keys while serving).
    pub fn auth(&self) -> &Arc<Auth> {
        self.state.gateway.auth()
    }

    /// The response cache, when enabled.
    pub fn cache(&self) -> Option<&Arc<ResponseCache>> {
        self.state.gateway.cache()
    }

    /// Serves on `listener` until `shutdown` resolves, then drains and
    /// stops the control plane's background work, so the store is released
    /// when the returned future resolves.
    pub fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
        let rollouts = self.rollouts;
        let sweeper = self.sweeper;
        let background = self.background;
        let rollout_sync = self.rollout_sync;
        let batches = self.state.batches.clone();
        let served = server::serve(listener, self.state, shutdown, self.shutdown);
        async move {
            let result = served.await;
            // The batch runner holds the store: its requests under way are
            // recorded, the rest resume at the next start.
            batches.shutdown().await;
            drop(rollout_sync);
            for task in background {
                task.abort();
            }
            rollouts.shutdown().await;
            // The sweep holds the store: stop it so the store closes.
            sweeper.abort();
            let _ = sweeper.await;
            result
        }
    }
}

/// How often expired stored responses are removed from disk (besides at
/// start and when read). Their scan reads every stored response, so it runs
/// far less often than the kv sweep; an expired one is never served anyway.
const RESPONSE_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// Removes expired plugin kv entries every `interval`, counting them per
/// namespace, and expired stored responses every
/// [`RESPONSE_SWEEP_INTERVAL`]. A sweep is a synchronous scan, so it runs
/// inline rather than on a blocking thread, which would outlive an abort
/// and keep the store open.
fn spawn_sweeper(
    store: Store,
    responses: crate::gateway::ResponseStore,
    interval: Duration,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    use crate::store::KvStore;
    use crate::telemetry::metrics::KvLabels;
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut responses_swept: Option<std::time::Instant> = None;
        // The first tick is immediate: sweep what expired while stopped.
        loop {
            ticks.tick().await;
            if responses_swept.is_none_or(|at| at.elapsed() >= RESPONSE_SWEEP_INTERVAL) {
                responses_swept = Some(std::time::Instant::now());
                match responses.sweep() {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "removed expired stored responses"),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not sweep expired stored responses")
                    }
                }
            }
            match store.sweep_expired() {
                Ok(swept) => {
                    for s in swept {
                        let labels = KvLabels {
                            plugin: s.namespace,
                        };
                        metrics
                            .kv_expired_swept
                            .get_or_create(&labels)
                            .inc_by(s.removed);
                        metrics
                            .kv_keys
                            .get_or_create(&labels)
                            .set(s.usage.keys as i64);
                        metrics
                            .kv_bytes
                            .get_or_create(&labels)
                            .set(s.usage.bytes as i64);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "kv sweep failed"),
            }
        }
    })
}

/// The slots `live` serves now, with their smoke-call candidates.
fn slot_lookup(live: &Arc<ArcSwap<Live>>) -> watch::SlotLookup {
    let live = live.clone();
    Arc::new(move || {
        let pipeline = live.load().pipeline.clone();
        let slots = pipeline
            .slots()
            .values()
            .map(|s| s.plugin.clone())
            .collect();
        (slots, pipeline.candidates())
    })
}

/// Refreshes the copy of the shared keys every `every` (the keys a replica
/// authenticates with while Redis cannot be reached), until the key
/// registry is gone.
async fn sync_keys(auth: std::sync::Weak<Auth>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(auth) = auth.upgrade() else {
            return;
        };
        auth.sync().await;
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
    guard: &ControlGuard<'_>,
    rollouts: &Rollouts,
    config: &Config,
    startup: &StartupConfig,
    previous: Option<Previous<'_>>,
    metrics: Arc<Metrics>,
) -> Result<(Live, ReloadReport), AppError> {
    let mut report = ReloadReport::default();
    let slots = load_slots(rollouts.runtime(), config, previous.as_ref(), &mut report).await?;
    let upstreams = build_upstreams(&config.reloadable, previous.as_ref(), &metrics, &mut report);
    let pipeline = Pipeline::new(
        slots.serving,
        upstreams,
        pipeline_settings(&config.reloadable, startup, metrics),
    )?;
    // Only now, with nothing left to fail, do fresh slots take over their
    // records: a refused reload must not reset a record, or resume a
    // rollout, for a slot that never serves.
    for hot in &slots.fresh {
        let predecessor = previous
            .as_ref()
            .and_then(|p| p.live.pipeline.slots().get(hot.name()))
            .map(|s| &*s.plugin);
        rollouts.restore(guard, hot, predecessor).await;
    }
    let live = Live {
        pipeline,
        limits: server_limits(&startup.server, &config.reloadable.server),
        admin_token: config.reloadable.admin.token.clone(),
    };
    Ok((live, report))
}

/// The slots a pipeline serves, and which of them were loaded anew.
#[derive(Default)]
struct Slots {
    serving: HashMap<String, Slot>,
    /// Loaded by this assembly; their stored records are not applied yet.
    fresh: Vec<Arc<HotPlugin>>,
}

/// Keeps or loads every configured slot, noting which in `report`.
async fn load_slots(
    runtime: &Arc<Runtime>,
    config: &Config,
    previous: Option<&Previous<'_>>,
    report: &mut ReloadReport,
) -> Result<Slots, AppError> {
    let mut slots = Slots::default();
    for spec in config.plugin_specs()? {
        let name = spec.name.clone();
        let policy = config
            .reloadable
            .plugins
            .get(&name)
            .map(|p| p.failure_policy)
            .unwrap_or_default();
        let plugin = match previous.and_then(|p| reusable_slot(p, config, &spec)) {
            Some(hot) => {
                report.plugins_kept.push(name.clone());
                hot
            }
            None => {
                let hot = load_slot(runtime, spec).await?;
                report.plugins_loaded.push(name.clone());
                slots.fresh.push(hot.clone());
                hot
            }
        };
        slots.serving.insert(name, Slot { plugin, policy });
    }
    if let Some(p) = previous {
        report.plugins_removed = p
            .live
            .pipeline
            .slots()
            .keys()
            .filter(|n| !slots.serving.contains_key(*n))
            .cloned()
            .collect();
    }
    Ok(slots)
}

/// The slot `previous` served under `spec`'s name, if nothing that shapes
/// it changed: its `[plugins.<slot>]` table, the `[mcp.<server>]` tables
/// its tools grant names and, for a file source, the file's contents.
fn reusable_slot(
    previous: &Previous<'_>,
    config: &Config,
    spec: &PluginSpec,
) -> Option<Arc<HotPlugin>> {
    let old = previous.live.pipeline.slots().get(&spec.name)?;
    let mut before = previous.config.reloadable.plugins.get(&spec.name)?.clone();
    let after = config.reloadable.plugins.get(&spec.name)?;
    // The policy is the slot's, not the plugin's: it may change alone.
    before.failure_policy = after.failure_policy;
    let same_file = match &spec.source {
        PluginSource::File(path) => std::fs::read(path)
            .map(|b| sha256_hex(&b) == old.plugin.state().base_digest)
            .unwrap_or(false),
        PluginSource::Bytes { .. } => true,
    };
    // A slot's MCP clients are made at load: a changed server must reload it.
    let same_mcp = spec
        .mcp_servers
        .iter()
        .all(|(name, server)| previous.config.reloadable.mcp.get(name) == Some(server));
    (before == *after && same_file && same_mcp).then(|| old.plugin.clone())
}

/// Loads one slot: compile (on a blocking thread) and type-check, then one
/// instantiation. A plugin that cannot even be instantiated keeps the
/// replica not-ready (see `/health/ready`) rather than failing the start,
/// so the operator can read why from a running gateway.
async fn load_slot(runtime: &Arc<Runtime>, spec: PluginSpec) -> Result<Arc<HotPlugin>, AppError> {
    let template = spec.clone();
    let runtime = runtime.clone();
    let plugin = tokio::task::spawn_blocking(move || runtime.load(spec)).await??;
    if let Err(e) = plugin.warm().await {
        tracing::error!(plugin = %plugin.identity(), error = %e, "plugin could not be instantiated");
    }
    tracing::info!(plugin = %plugin.identity(), world = %plugin.world(), digest = %plugin.identity().digest, "plugin loaded");
    Ok(Arc::new(HotPlugin::new(template, Arc::new(plugin))))
}

/// Keeps or builds every configured upstream, noting which in `report`.
/// A kept upstream keeps its health (breaker, budget, statistics), so a
/// reload neither forgets an outage nor resets a recovery.
fn build_upstreams(
    config: &ReloadableConfig,
    previous: Option<&Previous<'_>>,
    metrics: &Arc<Metrics>,
    report: &mut ReloadReport,
) -> Vec<Arc<GuardedUpstream>> {
    let client = http_client();
    config
        .upstreams
        .iter()
        .map(
            |(name, up)| match previous.and_then(|p| reusable_upstream(p, config, name)) {
                Some(upstream) => {
                    report.upstreams_kept.push(name.clone());
                    upstream
                }
                None => {
                    report.upstreams_rebuilt.push(name.clone());
                    let upstream = build_upstream(name, up, &client, metrics);
                    let guards = health_settings(config, up);
                    Arc::new(GuardedUpstream::new(upstream, guards, metrics.clone()))
                }
            },
        )
        .collect()
}

/// The upstream `previous` served as `name`, if its table is unchanged.
fn reusable_upstream(
    previous: &Previous<'_>,
    config: &ReloadableConfig,
    name: &str,
) -> Option<Arc<GuardedUpstream>> {
    let before = &previous.config.reloadable;
    // The retry and hedge budgets are per upstream but configured
    // globally: a changed budget rebuilds the upstream's health with it.
    let unchanged = before.upstreams.get(name)? == config.upstreams.get(name)?
        && before.resilience.retry_budget == config.resilience.retry_budget
        && before.resilience.hedge == config.resilience.hedge;
    if !unchanged {
        return None;
    }
    previous
        .live
        .pipeline
        .upstreams()
        .iter()
        .find(|u| u.name() == name)
        .cloned()
}

/// Builds upstream `name` from its table: the simulator or an
/// OpenAI-compatible client (sharing `client`'s connection pool), observed
/// by `metrics`.
fn build_upstream(
    name: &str,
    up: &UpstreamConfig,
    client: &reqwest::Client,
    metrics: &Arc<Metrics>,
) -> Arc<dyn Upstream> {
    let info = UpstreamInfo {
        name: name.to_string(),
        model: up.model.clone(),
        input_cost_per_1k: up.input_cost_per_1k,
        cached_input_cost_per_1k: up.cached_input_cost_per_1k.unwrap_or(up.input_cost_per_1k),
        output_cost_per_1k: up.output_cost_per_1k,
        tags: up.tags.clone(),
        weight: up.weight,
        serves: up.serves.clone(),
    };
    let (upstream, system): (Arc<dyn Upstream>, _) = match up.kind {
        UpstreamKind::Simulated => {
            let settings = up.simulator.clone().unwrap_or_default();
            let sim = SimUpstream::new(info, Arc::new(Simulator::new(settings)));
            (Arc::new(sim), "agentrouter.simulator")
        }
        UpstreamKind::Openai => (
            Arc::new(
                OpenAiUpstream::new(
                    info,
                    up.base_url.clone().unwrap_or_default(),
                    up.api_key.as_ref().map(|k| k.expose().to_string()),
                    client.clone(),
                )
                .with_quota_metrics(metrics.clone()),
            ),
            "openai",
        ),
    };
    Arc::new(ObservedUpstream::new(upstream, metrics.clone(), system))
}

/// The host's guards around one upstream, from its table (and the global
/// retry budget).
fn health_settings(config: &ReloadableConfig, up: &UpstreamConfig) -> HealthSettings {
    let timeout = Duration::from_millis(up.timeout_ms);
    HealthSettings {
        timeout,
        first_token_timeout: up
            .first_token_timeout_ms
            .map_or(timeout, Duration::from_millis),
        idle_timeout: up.idle_timeout_ms.map_or(timeout, Duration::from_millis),
        breaker: up.breaker.settings(),
        max_concurrent: up.max_concurrent,
        retry_budget: config.resilience.retry_budget.settings(),
        hedge: config.resilience.hedge.settings(),
    }
}

/// How the pipeline is wired and bounded, from the config (and the
/// instance pool the gateway started with). `metrics` is the gateway's one
/// registry: a reload must not reset counters.
fn pipeline_settings(
    config: &ReloadableConfig,
    startup: &StartupConfig,
    metrics: Arc<Metrics>,
) -> PipelineSettings {
    let resilience = &config.resilience;
    let limits = server_limits(&startup.server, &config.server);
    let pool = startup.runtime.pool_instances;
    // A quarter of the pool unless configured: four requests fanning out
    // at once still leave room for everyone else's validators.
    let share = config
        .budgets
        .request
        .max_plugin_instances
        .unwrap_or((pool / 4).max(1))
        .min(pool);
    let overrides: HashMap<String, AgentBudgetOverrides> = config
        .plugins
        .iter()
        .map(|(slot, p)| (slot.clone(), p.budget.clone()))
        .collect();
    PipelineSettings {
        input_validators: config.pipeline.input_validators.clone(),
        output_validators: config.pipeline.output_validators.clone(),
        router: config.pipeline.router.clone(),
        recovery: config.pipeline.recovery.clone(),
        max_attempts: resilience.max_attempts,
        max_delay: Duration::from_millis(resilience.max_delay_ms),
        fallbacks: resilience
            .fallbacks
            .iter()
            .map(|(model, chain)| (model.clone(), chain.clone()))
            .collect(),
        alert_webhook: resilience
            .alert_webhook
            .as_ref()
            .map(|hook| hook.expose().trim().to_string()),
        rules: limits.message_rules(),
        budgets: BudgetSettings::new(&config.budgets, &overrides, share),
        metrics,
    }
}

/// The server's limits: the listener's, read once at start, and the
/// per-request ones, which a reload replaces.
fn server_limits(listener: &ListenerConfig, request: &RequestLimitsConfig) -> ServerLimits {
    let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    ServerLimits {
        max_body_bytes: size(listener.max_body_bytes),
        request_timeout: Duration::from_millis(request.request_timeout_ms),
        max_agent_depth: request.max_agent_depth,
        max_messages: request.max_messages as usize,
        max_message_chars: size(request.max_message_chars),
        max_headers: listener.max_headers as usize,
        max_header_bytes: size(listener.max_header_bytes),
        header_read_timeout: Duration::from_millis(listener.header_read_timeout_ms),
        body_read_timeout: Duration::from_millis(request.body_read_timeout_ms),
    }
}

/// Retires every slot of `old` that `new` no longer serves (replaced or
/// removed), so its controller and any late change leave the slot's record
/// to its successor.
fn retire_replaced(guard: &ControlGuard<'_>, rollouts: &Rollouts, old: &Live, new: &Live) {
    for (name, slot) in old.pipeline.slots() {
        let kept = new
            .pipeline
            .slots()
            .get(name)
            .is_some_and(|s| Arc::ptr_eq(&s.plugin, &slot.plugin));
        if !kept {
            rollouts.retire(guard, &slot.plugin);
        }
    }
}

/// `POST /admin/reload`: re-reads the config file the gateway started from.
struct ConfigReloader {
    /// The startup settings the gateway runs with: a reload never changes
    /// them, and reports where the file differs from them.
    startup: StartupConfig,
    /// The config last applied; slots and upstreams are kept by comparing
    /// with it.
    current: ArcSwap<Config>,
    rollouts: Arc<Rollouts>,
    live: Arc<ArcSwap<Live>>,
}

impl Reload for ConfigReloader {
    fn reload(&self) -> BoxFuture<'_, Result<ReloadReport, ReloadError>> {
        Box::pin(async move {
            // Held from reading the file to swapping the pipeline in: reloads
            // apply in order, and no admin change or rollout step lands on a
            // slot this reload is about to replace.
            let guard = self.rollouts.lock().await;
            let current = self.current.load_full();
            let path = current
                .file()
                .ok_or(ReloadError::NoConfigFile)?
                .to_path_buf();
            let config = Config::from_file(&path)?;
            let old = self.live.load_full();
            let previous = Previous {
                config: &current,
                live: &old,
            };
            let metrics = old.pipeline.metrics().clone();
            let (live, mut report) = assemble(
                &guard,
                &self.rollouts,
                &config,
                &self.startup,
                Some(previous),
                metrics,
            )
            .await
            .map_err(|e| ReloadError::Apply {
                file: path.display().to_string(),
                source: Box::new(e),
            })?;
            let live = Arc::new(live);
            self.live.store(live.clone());
            retire_replaced(&guard, &self.rollouts, &old, &live);
            report.needs_restart = self.startup.needs_restart(&config.startup);
            report.file = path.display().to_string();
            tracing::info!(?report, "config reloaded");
            self.current.store(Arc::new(config));
            Ok(report)
        })
    }
}
