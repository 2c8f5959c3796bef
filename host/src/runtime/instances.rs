//! Where a plugin's instances come from, and where they go.
//!
//! Every call runs on an instance of its own, used once and then dropped:
//! nothing a guest does survives into another call except through `kv`.
//! Making an instance (a store, a pool slot, the component's start-up) and
//! tearing it down (the pooling allocator resets the slot's memory) cost
//! more than a small validator's call itself. So for the worlds that need
//! nothing from the request to start — validators, routers, recovery — the
//! host makes a few **spare** instances ahead, off the request path: a call
//! takes a ready one, and hands the spent store to a background task that
//! drops it and makes the next spare. Agents are instantiated per call, as
//! before: their store carries the way back into the pipeline, and their
//! calls take milliseconds anyway.
//!
//! What holds either way (docs/runtime.md#isolation): each instance serves
//! exactly one call; a spare has run nothing but the component's own
//! start-up, under the same limits, with no request in reach. A spare holds
//! a pool slot while it waits; spares are made only while at least half the
//! pool is free, and a call that finds the pool full reclaims one
//! ([`Reclaim`]): they never stand between a call and an instance.
//!
//! A slot configured with `isolation = "reuse"` gives that promise up for
//! speed: an instance whose call succeeded, wrote nothing to stdio and
//! holds no host resource goes back to the spares ([`Maker::keep`]) and
//! serves the next call, up to [`REUSED_CALLS`] calls. Whatever else ended
//! the call (a trap, a limit, an error) drops the instance, so the next
//! call starts fresh.

use super::admission::{Admitted, Pool, Reclaim};
use super::bindings::{Instance, Pre};
use super::engine::Ticker;
use super::error::PluginError;
use super::host::{AgentCall, KvMetrics, PluginInfo, PluginState};
use super::limits::{Limiter, PluginLimits, TimeoutTrap};
use super::{Capabilities, Isolation, REUSED_CALLS, World};
use crate::store::KvStore;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// Bytes of guest stdout/stderr kept per call (the rest is dropped).
const OUTPUT_CAPTURE_BYTES: usize = 16 * 1024;
/// Fuel given to plugins without a fuel limit: effectively unbounded, but
/// still counted, so the fuel metric works for every plugin.
const UNLIMITED_FUEL: u64 = i64::MAX as u64;

/// Most reused instances kept waiting per plugin version: enough for the
/// calls that overlap on a few cores; beyond it a spent one is dropped.
const REUSED_KEPT: usize = 8;

/// An instance made ahead, or kept after a call, with the pool slot it holds.
pub(super) struct Ready {
    pub store: Store<PluginState>,
    pub instance: Instance,
    pub admitted: Admitted,
    /// Calls it has served (0 for a spare made ahead).
    pub served: u32,
}

impl Reclaim for Maker {
    fn reclaim_one(&self) -> bool {
        // Popped under the lock, dropped (its store torn down, its slot
        // freed) after it; spent stores first, since nobody waits for them.
        let mut spares = self.spares();
        if let Some(spent) = spares.spent.pop() {
            drop(spares);
            drop(spent);
            return true;
        }
        let spare = spares.ready.pop();
        drop(spares);
        spare.is_some()
    }
}

/// Everything needed to make an instance of one plugin, shared (behind an
/// `Arc`) with the background tasks that make spares and drop spent ones.
pub(super) struct Maker {
    pub pre: Pre,
    pub engine: Engine,
    pub limits: PluginLimits,
    pub capabilities: Capabilities,
    pub env: Vec<(String, String)>,
    pub info: Arc<PluginInfo>,
    pub kv: Arc<dyn KvStore>,
    pub kv_metrics: Option<Arc<KvMetrics>>,
    /// The instance pool every instance is admitted to (`admission.rs`).
    pub pool: Arc<Pool>,
    pub ticker: Arc<Ticker>,
    /// `name@version`, shared with every request that calls it.
    pub label: Arc<str>,
    /// Spares to keep ready; zero for agents or when configured off.
    target: usize,
    /// Whether an instance serves more than one call (`isolation = "reuse"`).
    reuse: bool,
    spares: Mutex<Spares>,
    /// Whether a background task is tearing down spent stores and making
    /// spares now: calls that end meanwhile leave their store to it
    /// instead of starting another task.
    tending: AtomicBool,
    /// Set when making a spare failed: calls then make their own instance
    /// and report why, instead of a background task retrying forever.
    given_up: AtomicBool,
}

#[derive(Default)]
struct Spares {
    ready: Vec<Ready>,
    /// Stores whose call is over, with their slots, waiting to be dropped.
    spent: Vec<(Store<PluginState>, Admitted)>,
    /// Being made now (counted so concurrent refills do not overshoot).
    making: usize,
}

impl Maker {
    /// `spares` ready instances are kept for the worlds that can use them.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        world: World,
        spares: usize,
        isolation: Isolation,
        pre: Pre,
        engine: Engine,
        limits: PluginLimits,
        capabilities: Capabilities,
        env: Vec<(String, String)>,
        info: Arc<PluginInfo>,
        kv: Arc<dyn KvStore>,
        kv_metrics: Option<Arc<KvMetrics>>,
        pool: Arc<Pool>,
        ticker: Arc<Ticker>,
        label: Arc<str>,
    ) -> Maker {
        Maker {
            pre,
            engine,
            limits,
            capabilities,
            env,
            info,
            kv,
            kv_metrics,
            pool,
            ticker,
            label,
            target: if world == World::Agent { 0 } else { spares },
            reuse: world != World::Agent && isolation == Isolation::Reuse,
            spares: Mutex::new(Spares::default()),
            tending: AtomicBool::new(false),
            given_up: AtomicBool::new(false),
        }
    }

    fn spares(&self) -> std::sync::MutexGuard<'_, Spares> {
        // Pushes and pops are single statements: a panic cannot leave the
        // list half-written.
        self.spares.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spares waiting now.
    pub(super) fn ready(&self) -> usize {
        self.spares().ready.len()
    }

    /// The fuel a call starts with.
    pub(super) fn fuel_budget(&self) -> u64 {
        self.limits.fuel.unwrap_or(UNLIMITED_FUEL)
    }

    /// A ready instance, if one is waiting. Its clock and fuel are reset, so
    /// the call's limits run from now.
    pub(super) fn take(&self, timeout: Duration) -> Option<Ready> {
        if self.target == 0 && !self.reuse {
            return None;
        }
        let mut ready = self.spares().ready.pop()?;
        if self.arm(&mut ready.store, timeout).is_err() {
            return None;
        }
        Some(ready)
    }

    /// Gives back a spare a call could not use (its request's share was
    /// spent): it is as fresh as when it was made.
    pub(super) fn put_back(&self, ready: Ready) {
        self.spares().ready.push(ready);
    }

    /// Hands a spent store (and its pool slot) to a background task that
    /// drops it and makes the next spare; one task at a time does that
    /// work, so under load a call costs a push, not a task. Outside a tokio
    /// runtime, or for plugins without spares, the store is dropped here.
    pub(super) fn recycle(self: &Arc<Self>, store: Store<PluginState>, admitted: Admitted) {
        if self.target == 0 {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.spares().spent.push((store, admitted));
        self.tend(&runtime);
    }

    /// After a call that succeeded on `instance`: under `isolation =
    /// "reuse"` it waits for the next call, if it is clean (nothing written
    /// to stdio, no host resource held) and has served fewer than
    /// [`REUSED_CALLS`]; otherwise, and always without reuse, it is dropped
    /// as [`Maker::recycle`] drops it.
    pub(super) fn keep(
        self: &Arc<Self>,
        mut store: Store<PluginState>,
        instance: Instance,
        mut admitted: Admitted,
        served: u32,
    ) {
        if !self.reuse || served >= REUSED_CALLS || !store.data_mut().ready_for_another_call() {
            return self.recycle(store, admitted);
        }
        // Parked before the lock: parking takes the pool's.
        self.pool.park(&mut admitted);
        let mut spares = self.spares();
        if spares.ready.len() >= REUSED_KEPT.max(self.target) {
            drop(spares);
            return self.recycle(store, admitted);
        }
        spares.ready.push(Ready {
            store,
            instance,
            admitted,
            served,
        });
    }

    /// Starts making spares in the background (at load, after the warm-up).
    pub(super) fn prefill(self: &Arc<Self>) {
        if self.target == 0 {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.tend(&runtime);
        }
    }

    /// Starts the background task unless it runs already.
    fn tend(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        if self.tending.swap(true, Ordering::AcqRel) {
            return;
        }
        let maker = self.clone();
        runtime.spawn(async move {
            loop {
                // Dropped outside the lock: teardown resets the slots' memory.
                let spent = std::mem::take(&mut maker.spares().spent);
                drop(spent);
                maker.refill().await;
                maker.tending.store(false, Ordering::Release);
                // A call that ended after the take above saw `tending` set
                // and left its store here: pick it up, unless another task
                // has started meanwhile.
                if maker.spares().spent.is_empty() || maker.tending.swap(true, Ordering::AcqRel) {
                    return;
                }
            }
        });
    }

    /// Makes spares until `target` are ready or being made, while the pool
    /// has room to spare.
    async fn refill(&self) {
        loop {
            if self.given_up.load(Ordering::Relaxed) || !self.pool.has_headroom() {
                return;
            }
            {
                let mut spares = self.spares();
                if spares.ready.len() + spares.making >= self.target {
                    return;
                }
                spares.making += 1;
            }
            let made = self.make_spare().await;
            let mut spares = self.spares();
            spares.making -= 1;
            match made {
                Ok(Some(ready)) => spares.ready.push(ready),
                Ok(None) => return,
                Err(e) => {
                    drop(spares);
                    self.given_up.store(true, Ordering::Relaxed);
                    tracing::debug!(plugin = %self.label, error = %e, "no spare instances for this plugin: calls instantiate their own");
                    return;
                }
            }
        }
    }

    /// A new spare; `None` when the pool has no free slot for one now.
    async fn make_spare(&self) -> Result<Option<Ready>, PluginError> {
        let timeout = Duration::from_millis(self.limits.timeout_ms);
        let Some(admitted) = self.pool.admit_spare(&self.label) else {
            return Ok(None);
        };
        let mut store = self.new_store(None, timeout)?;
        let _ticking = self.ticker.enter();
        let made = tokio::time::timeout(timeout, self.pre.instantiate(&mut store)).await;
        match made {
            Ok(Ok(instance)) => Ok(Some(Ready {
                store,
                instance,
                admitted,
                served: 0,
            })),
            Ok(Err(e)) => Err(self.instantiate_error(format!("{e:#}"))),
            Err(_) => Err(self.instantiate_error("timed out".into())),
        }
    }

    fn instantiate_error(&self, detail: String) -> PluginError {
        PluginError::Instantiate {
            plugin: self.label.to_string(),
            detail,
        }
    }

    /// A fresh store with the plugin's limits, capabilities and captured
    /// stdio; `agent` is the way back into the pipeline, for agents.
    pub(super) fn new_store(
        &self,
        agent: Option<AgentCall>,
        timeout: Duration,
    ) -> Result<Store<PluginState>, PluginError> {
        let stdout = MemoryOutputPipe::new(OUTPUT_CAPTURE_BYTES);
        let stderr = MemoryOutputPipe::new(OUTPUT_CAPTURE_BYTES);
        let mut wasi = WasiCtxBuilder::new();
        // Deny by default: no preopens, no inherited env or stdio, no sockets.
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .envs(&self.env);
        for dir in &self.capabilities.dirs {
            let perms = if dir.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            wasi.preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(|e| {
                    self.instantiate_error(format!(
                        "granted directory {} is unavailable: {e:#}",
                        dir.host.display()
                    ))
                })?;
        }
        let state = PluginState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: Limiter::new(&self.limits),
            info: self.info.clone(),
            kv: self.kv.clone(),
            kv_quota: self.limits.kv_quota(),
            kv_metrics: self.kv_metrics.clone(),
            agent,
            stdout,
            stderr,
            log_events: 0,
            kv_refusal_logged: false,
            http_usage: Default::default(),
            tools_usage: Default::default(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_hostcall_fuel(self.limits.hostcall_fuel);
        self.arm(&mut store, timeout)?;
        Ok(store)
    }

    /// Gives `store` a full fuel budget and a wall-clock bound of `timeout`
    /// from now.
    fn arm(&self, store: &mut Store<PluginState>, timeout: Duration) -> Result<(), PluginError> {
        store
            .set_fuel(self.fuel_budget())
            .map_err(|e| self.instantiate_error(format!("{e:#}")))?;
        // Every epoch tick the guest yields to tokio, so a spinning plugin
        // never starves other tasks; once its time is up it traps.
        store.set_epoch_deadline(1);
        let started = Instant::now();
        store.epoch_deadline_callback(move |_| {
            if started.elapsed() >= timeout {
                Err(wasmtime::Error::new(TimeoutTrap))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        Ok(())
    }
}
