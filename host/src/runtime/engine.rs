//! Construction of the process-wide wasmtime `Engine` and its epoch ticker.
//!
//! One engine serves every plugin: compiled code, the instance pool and the
//! epoch counter are per engine, and sharing them is what makes a fresh
//! instance per call cost microseconds.

use serde::Deserialize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How instances get their memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllocatorChoice {
    /// Pooling when the address space allows it, else on-demand.
    #[default]
    Auto,
    /// Pooling or fail.
    Pooling,
    /// mmap per instance: slower instantiation, no up-front reservation.
    OnDemand,
}

/// The allocator actually in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocatorKind {
    /// Slots reserved up front; instantiation reuses them (copy-on-write images).
    Pooling,
    /// Memory mapped per instance.
    OnDemand,
}

/// Engine-wide settings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// Allocation strategy.
    pub allocator: AllocatorChoice,
    /// Concurrent plugin instances the pool can hold. Each in-flight plugin
    /// call holds one (an agent's nested calls hold one each).
    pub pool_instances: u32,
    /// Granularity of wall-clock limits, in milliseconds.
    pub epoch_tick_ms: u64,
    /// Instances of each validator, router and recovery plugin made ahead of
    /// the calls that use them (each still serves one call); 0 makes every
    /// instance on its call. See `runtime/instances.rs`.
    pub spare_instances: u32,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            allocator: AllocatorChoice::Auto,
            pool_instances: 256,
            epoch_tick_ms: 1,
            spare_instances: 0,
        }
    }
}

fn base_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // Epochs bound wall-clock time cheaply (a load and compare per loop
    // header); fuel is always on so that a per-plugin fuel budget and the
    // fuel-consumed metric work for every plugin (~10% guest slowdown,
    // negligible next to the host work around a plugin call).
    config.epoch_interruption(true);
    config.consume_fuel(true);
    // Copy-on-write images make instantiation independent of data-segment size.
    config.memory_init_cow(true);
    config.parallel_compilation(true);
    config
}

fn pooling_config(settings: &EngineSettings) -> PoolingAllocationConfig {
    let n = settings.pool_instances.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n);
    // Big guests (see docs/runtime.md, "Big guests"): a Rust component is
    // one core module plus WASI adapter shims (3-4 core instances); a
    // componentize-js one instantiates 4; a componentize-py one 14 (libc,
    // libpython and its extension modules, dynamically linked, plus shims).
    // Size the pool so that `pool_instances` concurrent calls fit even if
    // every one is a Python plugin; an unused core-instance slot costs
    // address space, not memory.
    pool.total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_CALL));
    pool.total_memories(n.saturating_mul(2));
    pool.total_tables(n.saturating_mul(4));
    pool.total_stacks(n);
    pool.max_memory_size(super::limits::MAX_MEMORY_MB as usize * 1024 * 1024);
    pool.max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT);
    pool.max_memories_per_component(4);
    pool.max_tables_per_component(8);
    // The pool's per-table bound is the largest `limits.table_elements` a
    // slot may set, so the plugin's own limit is the one that trips (with
    // its typed error), never the pool's (wasmtime's default is 20000).
    pool.table_elements(super::limits::MAX_TABLE_ELEMENTS as usize);
    // A fresh instance per call means every call reuses a slot another call
    // just dirtied. Resetting a slot with madvise makes the next call take a
    // page fault on every page it touches (stack, data and heap: tens of
    // faults for a small Rust plugin). Where the kernel can report dirty
    // pages (PAGEMAP_SCAN), keep the low part of each memory resident and
    // reset only the dirtied pages with memset, so calls stay fault-free.
    // Without it, keeping memory resident would mean memsetting all of it on
    // every reset, which costs more than the faults; keep the defaults then.
    if pagemap_scan_supported() {
        pool.pagemap_scan(Enabled::Auto);
        pool.linear_memory_keep_resident(KEEP_RESIDENT_BYTES);
        pool.table_keep_resident(64 << 10);
        pool.async_stack_keep_resident(64 << 10);
    }
    pool
}

/// Core instances one call may need, on average over the pool: a Python
/// component's 14 with headroom.
const CORE_INSTANCES_PER_CALL: u32 = 16;

/// Core instances one component may instantiate: twice a Python
/// component's 14, for guests that link more libraries.
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 32;

/// Bytes of each linear memory kept resident between calls: a Rust guest's
/// 1 MiB stack region plus its data and first heap pages.
const KEEP_RESIDENT_BYTES: usize = 2 << 20;

/// Whether the kernel has the PAGEMAP_SCAN ioctl (Linux 6.7 and later).
fn pagemap_scan_supported() -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    matches!((parts.next(), parts.next()), (Some(major), Some(minor)) if (major, minor) >= (6, 7))
}

/// Builds the engine. With [`AllocatorChoice::Auto`] the pooling allocator is
/// tried first: creating it reserves the whole pool's virtual address space,
/// so success is the probe. Where the space is not there (a low `ulimit -v`,
/// some sandboxes and emulators) it falls back to on-demand allocation.
pub fn build_engine(settings: &EngineSettings) -> Result<(Engine, AllocatorKind), wasmtime::Error> {
    if settings.allocator != AllocatorChoice::OnDemand {
        let mut config = base_config();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(
            settings,
        )));
        match Engine::new(&config) {
            Ok(engine) => return Ok((engine, AllocatorKind::Pooling)),
            Err(e) if settings.allocator == AllocatorChoice::Auto => {
                tracing::warn!(error = %e, "pooling allocator unavailable; falling back to on-demand allocation");
            }
            Err(e) => return Err(e),
        }
    }
    let mut config = base_config();
    config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
    Ok((Engine::new(&config)?, AllocatorKind::OnDemand))
}

/// Ticks the engine's epoch while plugin code may run, and sleeps otherwise.
///
/// Epochs bound a plugin's wall-clock time and make a spinning guest yield,
/// so they must advance while any plugin call is in flight. Ticking every
/// millisecond forever cost an idle gateway ~2.4 % of a core, so the ticker
/// parks once no call has run for [`IDLE_TICKS`] ticks, and the next call
/// wakes it ([`Ticker::enter`]). Under load it never parks, and entering
/// costs an atomic add and a load.
#[derive(Debug)]
pub struct Ticker {
    active: AtomicUsize,
    parked: AtomicBool,
    thread: OnceLock<std::thread::Thread>,
}

/// Ticks without a call before the ticker parks: long enough that steady
/// traffic never parks it (a park and wake per request would cost more than
/// the ticks), short enough that idle gateways stop ticking at once.
pub const IDLE_TICKS: u32 = 100;

/// Held while plugin code may run (instantiation or a call).
#[must_use]
pub struct Ticking<'a>(&'a Ticker);

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Ticker {
    /// Starts the single epoch ticker thread. It holds only a weak reference
    /// to the engine and exits once the engine is dropped, so it can never
    /// keep an engine alive.
    pub fn start(engine: &Engine, tick: Duration) -> Arc<Ticker> {
        let ticker = Arc::new(Ticker {
            active: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
            thread: OnceLock::new(),
        });
        let weak = engine.weak();
        let shared = Arc::downgrade(&ticker);
        let spawned = std::thread::Builder::new()
            .name("agentrouter-epoch".into())
            .spawn(move || tick_until_dropped(&weak, &shared, tick));
        match spawned {
            Ok(handle) => {
                let _ = ticker.thread.set(handle.thread().clone());
            }
            // Without a ticker, wall-clock limits still hold through the
            // tokio timeout around each call; spinning guests would just not
            // yield.
            Err(e) => tracing::error!(error = %e, "could not start the epoch ticker thread"),
        }
        ticker
    }

    /// Marks plugin code as running until the guard drops, waking the
    /// ticker if it sleeps.
    pub fn enter(&self) -> Ticking<'_> {
        self.active.fetch_add(1, Ordering::SeqCst);
        // SeqCst on both sides: either this load sees the ticker parked (and
        // wakes it), or the ticker's check after publishing `parked` sees
        // this call and does not park.
        if self.parked.load(Ordering::SeqCst)
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
        Ticking(self)
    }

    /// Whether the ticker sleeps now (no call ran for a while).
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }
}

fn tick_until_dropped(engine: &wasmtime::EngineWeak, ticker: &Weak<Ticker>, tick: Duration) {
    let mut idle = 0u32;
    loop {
        std::thread::sleep(tick);
        let (Some(strong), Some(ticker)) = (engine.upgrade(), ticker.upgrade()) else {
            return;
        };
        strong.increment_epoch();
        drop(strong);
        if ticker.active.load(Ordering::SeqCst) > 0 {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle < IDLE_TICKS {
            continue;
        }
        ticker.parked.store(true, Ordering::SeqCst);
        while ticker.active.load(Ordering::SeqCst) == 0 {
            // Woken by `enter` (an unpark before the park is not lost); the
            // timeout only lets a dropped engine end the thread.
            std::thread::park_timeout(Duration::from_secs(1));
            if engine.upgrade().is_none() {
                return;
            }
        }
        ticker.parked.store(false, Ordering::SeqCst);
        idle = 0;
    }
}
