//! A loaded plugin and the one generic call every export goes through.
//!
//! [`Plugin::call`] creates a store, instantiates from the type-checked
//! pre-instance, runs a closure over the instance and store under the
//! plugin's limits, then turns whatever happened into a typed result and
//! updates the plugin's counters, span and metrics. The exports themselves
//! (`validate`, `route`, `recover`, `handle`) are a few lines each in
//! [`exports`](super::exports). Each instance serves one call and is then
//! dropped, so nothing a guest did survives into the next call except
//! through `kv` — unless its slot chose `isolation = "reuse"`; where
//! instances come from (spares made ahead, kept for reuse) and where they
//! go is [`instances`](super::instances).

use super::bindings::{Instance, LinkError};
use super::error::{LimitKind, PluginError};
use super::exports::Answer;
use super::host::{AgentCall, KvMetrics, PluginInfo, PluginState};
use super::inspect;
use super::instances::Maker;
use super::limits::{LimitTrap, PluginLimits, TimeoutTrap};
use super::{Capabilities, Isolation, PluginSpec, Runtime, World};
use crate::domain::CallContext;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{KvLabels, PluginErrorLabels, PluginLabels};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::Instrument;
use tracing::field::Empty;
use wasmtime::component::Component;
use wasmtime::{Store, Trap};

/// Who a plugin is: configured name, version label and content digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginIdentity {
    /// Configured (slot) name.
    pub name: String,
    /// Version label.
    pub version: String,
    /// sha256 of the component, hex.
    pub digest: String,
}

impl fmt::Display for PluginIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// Per-plugin counters, updated on every call.
#[derive(Debug, Default)]
pub struct PluginStats {
    calls: AtomicU64,
    errors: AtomicU64,
    fuel_consumed: AtomicU64,
    last_fuel: AtomicU64,
    peak_memory_bytes: AtomicU64,
    busy_micros: AtomicU64,
    spare_calls: AtomicU64,
    reused_calls: AtomicU64,
}

/// A point-in-time copy of [`PluginStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Calls made.
    pub calls: u64,
    /// Calls that ended in a [`PluginError`].
    pub errors: u64,
    /// Fuel consumed over all calls.
    pub fuel_consumed: u64,
    /// Fuel consumed by the most recent call.
    pub last_fuel: u64,
    /// Largest linear memory seen, in bytes.
    pub peak_memory_bytes: u64,
    /// Total time spent in calls, in microseconds.
    pub busy_micros: u64,
    /// Calls served by an instance made ahead (a spare) rather than on the
    /// call.
    pub spare_calls: u64,
    /// Calls served by an instance that had served an earlier call
    /// (`isolation = "reuse"`).
    pub reused_calls: u64,
}

impl PluginStats {
    fn record(&self, elapsed: Duration, fuel: u64, peak_memory: usize, failed: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.fuel_consumed.fetch_add(fuel, Ordering::Relaxed);
        self.last_fuel.store(fuel, Ordering::Relaxed);
        self.peak_memory_bytes
            .fetch_max(peak_memory as u64, Ordering::Relaxed);
        self.busy_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Current values.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            fuel_consumed: self.fuel_consumed.load(Ordering::Relaxed),
            last_fuel: self.last_fuel.load(Ordering::Relaxed),
            peak_memory_bytes: self.peak_memory_bytes.load(Ordering::Relaxed),
            busy_micros: self.busy_micros.load(Ordering::Relaxed),
            spare_calls: self.spare_calls.load(Ordering::Relaxed),
            reused_calls: self.reused_calls.load(Ordering::Relaxed),
        }
    }
}

/// Which step of a call failed.
enum Step {
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
}

/// A plugin's own series, looked up once at load: a family lookup hashes
/// the labels under a lock, and every call would pay it three times. The
/// handles share their values with the families' (prometheus-client series
/// are reference-counted), and no family ever drops a series.
struct Meters {
    metrics: Arc<Metrics>,
    labels: PluginLabels,
    calls: Counter,
    duration: Histogram,
    fuel: Counter,
}

impl Meters {
    fn new(metrics: Arc<Metrics>, labels: PluginLabels) -> Meters {
        let calls = metrics.plugin_calls.get_or_create(&labels).clone();
        let duration = metrics.plugin_duration.get_or_create(&labels).clone();
        let fuel = metrics.plugin_fuel.get_or_create(&labels).clone();
        Meters {
            metrics,
            labels,
            calls,
            duration,
            fuel,
        }
    }
}

/// A compiled, type-checked plugin, ready to be called concurrently.
pub struct Plugin {
    identity: PluginIdentity,
    origin: String,
    world: World,
    /// The contract interfaces it imports (`inspect::capabilities`).
    imports: Vec<String>,
    /// How its instances are made (and spares kept), shared with the
    /// background tasks that do it.
    make: Arc<Maker>,
    stats: PluginStats,
    /// Where calls are counted, with this plugin's labels.
    metrics: Option<Meters>,
    /// Instantiated at least once: by [`Plugin::warm`] at load, or by any
    /// call (a version swapped in after a smoke call counts as warm).
    warm: AtomicBool,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("identity", &self.identity)
            .field("world", &self.world)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    pub(super) fn new(
        rt: &Runtime,
        spec: PluginSpec,
        origin: String,
        digest: String,
        component: Component,
    ) -> Result<Plugin, PluginError> {
        let mismatch = |detail: String| PluginError::WorldMismatch {
            plugin: spec.name.clone(),
            origin: origin.clone(),
            world: spec.world,
            detail,
        };
        // A world is a capability boundary. A component importing more than
        // the world it claims (its export) is refused before it is linked, in
        // the words `plugin inspect` uses; the world's own linker would refuse
        // it too, but naming only the first import it cannot resolve.
        let (imports, exports) = inspect::names(rt.engine(), &component);
        let detected = inspect::detect_world(&imports, &exports);
        if let Err(why) = &detected
            && why.is_import()
        {
            return Err(mismatch(why.to_string()));
        }
        let pre = rt.linkers.pre(spec.world, &component).map_err(|e| {
            let found = inspect::describe(&detected);
            match e {
                LinkError::Imports(e) => mismatch(format!(
                    "it needs an import the {} world does not provide: {e:#}; {found}",
                    spec.world
                )),
                LinkError::Exports(e) => mismatch(format!("{e:#}; {found}")),
            }
        })?;
        if spec.world == World::Agent && spec.isolation == Isolation::Reuse {
            return Err(PluginError::InvalidConfig {
                plugin: spec.name.clone(),
                key: "isolation",
                value: "reuse".into(),
                reason: "is only for validator, router and recovery plugins: an agent's instance carries its request".into(),
            });
        }
        let env = resolve_capabilities(&spec.name, &spec.capabilities)?;
        let version = spec
            .version
            .clone()
            .unwrap_or_else(|| digest[..12].to_string());
        let identity = PluginIdentity {
            name: spec.name.clone(),
            version: version.clone(),
            digest,
        };
        let labels = PluginLabels {
            plugin: identity.name.clone(),
            version: identity.version.clone(),
        };
        // Namespaced by slot, like the kv itself: every version shares it.
        let kv_metrics = rt.metrics.clone().map(|metrics| {
            Arc::new(KvMetrics {
                metrics,
                plugin: KvLabels {
                    plugin: spec.name.clone(),
                },
            })
        });
        let http = match spec.capabilities.http.clone() {
            Some(grant) => Some(
                super::http::HttpPolicy::new(&spec.name, grant, rt.metrics.clone()).map_err(
                    |e| PluginError::InvalidConfig {
                        plugin: spec.name.clone(),
                        key: "capabilities.http",
                        value: String::new(),
                        reason: format!("cannot build its HTTP client: {e}"),
                    },
                )?,
            ),
            None => None,
        };
        let tools = match spec.capabilities.tools.clone() {
            Some(grant) => Some(super::tools::ToolsPolicy::from_grant(
                &spec.name,
                grant,
                &spec.mcp_servers,
                rt.metrics.clone(),
            )?),
            None => None,
        };
        let info = Arc::new(PluginInfo {
            name: spec.name,
            version,
            settings: spec.settings,
            http,
            tools,
        });
        let make = Maker::new(
            spec.world,
            rt.spare_instances,
            spec.isolation,
            pre,
            rt.engine.clone(),
            spec.limits,
            spec.capabilities,
            env,
            info,
            rt.kv.clone(),
            kv_metrics,
            rt.pool.clone(),
            rt.ticker.clone(),
            Arc::from(identity.to_string()),
        );
        let make = Arc::new(make);
        let weak = Arc::downgrade(&make);
        let reclaimer: std::sync::Weak<dyn super::admission::Reclaim> = weak;
        rt.pool.add_reclaimer(reclaimer);
        Ok(Plugin {
            metrics: rt.metrics.clone().map(|m| Meters::new(m, labels)),
            warm: AtomicBool::new(false),
            identity,
            origin,
            world: spec.world,
            imports: inspect::capabilities(&imports),
            make,
            stats: PluginStats::default(),
        })
    }

    /// Name, version and digest.
    pub fn identity(&self) -> &PluginIdentity {
        &self.identity
    }

    /// Where the component came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The world it implements.
    pub fn world(&self) -> World {
        self.world
    }

    /// The contract interfaces it imports, `types` aside (`llm`, `http`, ...).
    pub fn capabilities(&self) -> &[String] {
        &self.imports
    }

    /// Its limits.
    pub fn limits(&self) -> &PluginLimits {
        &self.make.limits
    }

    /// Its counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Instantiates the plugin once without calling it, so the first
    /// request does not pay for first-touch work (pool slot, memory image),
    /// and proves that an instance fits its limits. Readiness reports a
    /// plugin that never warmed.
    pub async fn warm(&self) -> Result<(), PluginError> {
        let make = &self.make;
        let _admitted = make.pool.admit(&make.label, None, self.timeout()).await?;
        let mut store = make.new_store(None, self.timeout())?;
        let _ticking = make.ticker.enter();
        make.pre.instantiate(&mut store).await.map_err(|e| {
            let state = store.data();
            match state.limiter.exceeded {
                Some((limit, used, allowed)) => self.limit(limit, used, allowed),
                None => PluginError::Instantiate {
                    plugin: self.identity.to_string(),
                    detail: format!("{e:#}"),
                },
            }
        })?;
        self.warm.store(true, Ordering::Relaxed);
        make.prefill();
        Ok(())
    }

    /// Instances made ahead and waiting for a call (validators, routers and
    /// recovery plugins; see `runtime.spare_instances`).
    pub fn spares_ready(&self) -> usize {
        self.make.ready()
    }

    /// Whether an instance has been created: by [`Plugin::warm`] or a call.
    pub fn is_warm(&self) -> bool {
        self.warm.load(Ordering::Relaxed)
    }

    /// The span of one call of export `op`.
    fn call_span(&self, op: &'static str) -> tracing::Span {
        tracing::info_span!(
            "plugin",
            otel.name = %format_args!("plugin {op} {}", self.identity.name),
            otel.status_code = Empty,
            agentrouter.plugin.name = %self.identity.name,
            agentrouter.plugin.version = %self.identity.version,
            agentrouter.plugin.world = %self.world,
            agentrouter.plugin.fuel = Empty,
            error.type = Empty,
        )
    }

    /// Counts a call's outcome in the metrics, the span and the request.
    fn observe(
        &self,
        span: &tracing::Span,
        elapsed: Duration,
        fuel: u64,
        error_kind: Option<&'static str>,
    ) {
        span.record("agentrouter.plugin.fuel", fuel);
        if let Some(kind) = error_kind {
            span.record("otel.status_code", "ERROR")
                .record("error.type", kind);
        }
        crate::telemetry::request::with_current(|r| r.note_plugin(&self.make.label));
        let Some(meters) = &self.metrics else {
            return;
        };
        meters.calls.inc();
        meters.duration.observe(elapsed.as_secs_f64());
        meters.fuel.inc_by(fuel);
        if let Some(kind) = error_kind {
            self.count_error(kind);
        }
    }

    /// Counts one failed (or, for `rejected`, refusing) call of kind `kind`.
    fn count_error(&self, kind: &str) {
        if let Some(Meters {
            metrics, labels, ..
        }) = &self.metrics
        {
            metrics
                .plugin_errors
                .get_or_create(&PluginErrorLabels {
                    plugin: labels.plugin.clone(),
                    version: labels.version.clone(),
                    kind: kind.to_string(),
                })
                .inc();
        }
    }

    fn fuel_budget(&self) -> u64 {
        self.make.fuel_budget()
    }

    fn wrong_world(&self, called_as: World) -> PluginError {
        PluginError::WorldMismatch {
            plugin: self.identity.name.clone(),
            origin: self.origin.clone(),
            world: self.world,
            detail: format!("called as a {called_as}"),
        }
    }

    /// Turns the outcome of a call into a typed result and records it.
    fn finish<T: Answer>(
        &self,
        span: &tracing::Span,
        store: &Store<PluginState>,
        started: Instant,
        timeout: Duration,
        outcome: Result<Result<T, Step>, tokio::time::error::Elapsed>,
    ) -> Result<T, PluginError> {
        let elapsed = started.elapsed();
        let fuel_used = self
            .fuel_budget()
            .saturating_sub(store.get_fuel().unwrap_or(0));
        let state = store.data();
        state.flush_output();
        let result = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(step)) => Err(self.classify(step, state, elapsed, timeout, fuel_used)),
            Err(_) => Err(self.limit(
                LimitKind::WallClock,
                elapsed.as_millis() as u64,
                timeout.as_millis() as u64,
            )),
        };
        self.stats.record(
            elapsed,
            fuel_used,
            state.limiter.peak_memory,
            result.is_err(),
        );
        self.observe(
            span,
            elapsed,
            fuel_used,
            result.as_ref().err().map(PluginError::kind),
        );
        match &result {
            Ok(answer) => {
                if let Some(kind) = answer.refusal() {
                    span.record("error.type", kind);
                    self.count_error(kind);
                }
            }
            Err(e) => {
                tracing::warn!(plugin = %self.identity, kind = e.kind(), error = %e, "plugin call failed");
            }
        }
        result
    }

    fn limit(&self, limit: LimitKind, used: u64, allowed: u64) -> PluginError {
        PluginError::LimitExceeded {
            plugin: self.identity.to_string(),
            limit,
            used,
            allowed,
        }
    }

    fn classify(
        &self,
        step: Step,
        state: &PluginState,
        elapsed: Duration,
        timeout: Duration,
        fuel_used: u64,
    ) -> PluginError {
        let (error, instantiating) = match step {
            Step::Instantiate(e) => (e, true),
            Step::Call(e) => (e, false),
        };
        if let Some((limit, used, allowed)) = state.limiter.exceeded {
            return self.limit(limit, used, allowed);
        }
        if error.is::<LimitTrap>()
            || error.is::<TimeoutTrap>()
            || matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt))
        {
            return self.limit(
                LimitKind::WallClock,
                elapsed.as_millis() as u64,
                timeout.as_millis() as u64,
            );
        }
        let plugin = self.identity.to_string();
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => self.limit(LimitKind::Fuel, fuel_used, self.fuel_budget()),
            Some(trap) => {
                let mut message = trap.to_string();
                if let Some(tail) = state.stderr_tail() {
                    message.push_str(&format!(" (guest stderr: {tail})"));
                }
                if let Some(bt) = error.downcast_ref::<wasmtime::WasmBacktrace>() {
                    tracing::debug!(plugin = %self.identity, "guest backtrace:\n{bt}");
                }
                PluginError::Trap { plugin, message }
            }
            None if instantiating => PluginError::Instantiate {
                plugin,
                detail: format!("{error:#}"),
            },
            None => PluginError::InvalidOutput {
                plugin,
                detail: format!("{error:#}"),
            },
        }
    }

    /// The wall-clock bound of one call.
    pub(super) fn timeout(&self) -> Duration {
        Duration::from_millis(self.make.limits.timeout_ms)
    }

    /// The one way into a plugin. Checks that it is of `world`, admits an
    /// instance for the request of `ctx` (for agents, of `agent`'s context;
    /// neither: a background call) from its share and the pool, creates a
    /// store (with `agent`, the way back into the pipeline, for agents),
    /// instantiates, runs `f` over the instance and store as export `op`,
    /// all within `timeout`, then classifies and records the outcome.
    /// Everything an export adds is its arguments, its guest call in `f`,
    /// and the host rules applied to what comes back.
    pub(super) async fn call<T: Answer>(
        &self,
        world: Option<World>,
        op: &'static str,
        ctx: Option<&CallContext>,
        agent: Option<AgentCall>,
        timeout: Duration,
        f: impl AsyncFnOnce(&Instance, &mut Store<PluginState>) -> wasmtime::Result<T>,
    ) -> Result<T, PluginError> {
        if let Some(called_as) = world
            && called_as != self.world
        {
            return Err(self.wrong_world(called_as));
        }
        // Held until the store below is gone: the slot is free only then.
        let ctx = ctx.or(agent.as_ref().map(|a| &a.ctx));
        let make = &self.make;
        let _ticking = make.ticker.enter();
        // Agents start with the way back into the pipeline in their store,
        // so they never take a spare (none are made for them either).
        let spare = if agent.is_none() {
            make.take(timeout)
        } else {
            None
        };
        let (mut store, mut instance, admitted, served) = match spare {
            Some(mut ready) => match make.pool.assign(&mut ready.admitted, ctx) {
                Ok(()) => {
                    let counter = if ready.served == 0 {
                        &self.stats.spare_calls
                    } else {
                        &self.stats.reused_calls
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    (
                        ready.store,
                        Some(ready.instance),
                        ready.admitted,
                        ready.served,
                    )
                }
                Err(e) => {
                    make.put_back(ready);
                    tracing::warn!(plugin = %self.identity, error = %e, "plugin call not admitted");
                    return Err(e);
                }
            },
            None => {
                let wait = ctx.map_or(timeout, |c| timeout.min(c.remaining()));
                let admitted = make
                    .pool
                    .admit(&make.label, ctx, wait)
                    .await
                    .inspect_err(|e| {
                        tracing::warn!(plugin = %self.identity, error = %e, "plugin call not admitted");
                    })?;
                (make.new_store(agent, timeout)?, None, admitted, 0)
            }
        };
        let started = Instant::now();
        let span = self.call_span(op);
        // The instance, once its call has returned: only then may it serve
        // another (`isolation = "reuse"`).
        let mut returned = None;
        let outcome = tokio::time::timeout(timeout, async {
            let instance = match instance.take() {
                Some(ready) => ready,
                None => make
                    .pre
                    .instantiate(&mut store)
                    .await
                    .map_err(Step::Instantiate)?,
            };
            self.warm.store(true, Ordering::Relaxed);
            let value = f(&instance, &mut store).await.map_err(Step::Call)?;
            returned = Some(instance);
            Ok(value)
        })
        .instrument(span.clone())
        .await;
        let result = self.finish(&span, &store, started, timeout, outcome);
        match returned {
            Some(instance) if result.is_ok() => {
                make.keep(store, instance, admitted, served + 1);
            }
            _ => make.recycle(store, admitted),
        }
        result
    }

    /// Instantiates the plugin once without calling its export: start
    /// functions and constructors run, under the plugin's limits. The smoke
    /// check for agents, whose export would call the LLM.
    pub async fn probe(&self) -> Result<(), PluginError> {
        self.call(None, "probe", None, None, self.timeout(), async |_, _| {
            Ok(())
        })
        .await
    }
}

/// Checks granted capabilities and snapshots granted environment variables.
fn resolve_capabilities(
    plugin: &str,
    caps: &Capabilities,
) -> Result<Vec<(String, String)>, PluginError> {
    let invalid = |key, value: String, reason: String| PluginError::InvalidConfig {
        plugin: plugin.to_string(),
        key,
        value,
        reason,
    };
    for dir in &caps.dirs {
        if !dir.host.is_dir() {
            return Err(invalid(
                "capabilities.dirs.host",
                dir.host.display().to_string(),
                "is not a directory".into(),
            ));
        }
        if !dir.guest.starts_with('/') {
            return Err(invalid(
                "capabilities.dirs.guest",
                dir.guest.clone(),
                "must be an absolute guest path".into(),
            ));
        }
    }
    let mut env = Vec::with_capacity(caps.env.len());
    for name in &caps.env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(invalid(
                "capabilities.env",
                name.clone(),
                "is not a valid variable name".into(),
            ));
        }
        // An unset variable is simply absent for the guest, as on a shell.
        if let Ok(value) = std::env::var(name) {
            env.push((name.clone(), value));
        }
    }
    Ok(env)
}
