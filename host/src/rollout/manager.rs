//! [`Rollouts`]: the control plane behind the admin API and `--watch`.
//!
//! Every change to a slot goes through here: load (compile and type-check
//! against the slot's world), smoke-test, swap, persist. Changes are
//! serialised by one async lock whose guard ([`ControlGuard`]) every change
//! takes as a parameter — config reloads (in `app`) and restores included —
//! and which is never taken on the request path.

use super::persist::{self, RolloutRecord, SlotRecord};
use super::plan::{OutOfRange, Phase, Rollout, RolloutRequest, RolloutStatus, VersionRef};
use super::shared::SharedRollouts;
use super::{HotPlugin, controller};
use crate::domain::{
    Candidate, CompletionRequest, Failure, FailureContext, Message, RouteRequest, Stage,
};
use crate::runtime::{Plugin, PluginError, PluginSource, Runtime, World};
use crate::store::{Store, StoreError};
use serde::Serialize;
use std::borrow::Cow;
use std::path::Path;
use std::sync::{Arc, OnceLock, Weak};

/// Why a control-plane operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// No slot by that name.
    #[error("no plugin slot `{0}`")]
    UnknownSlot(String),
    /// The component did not load (not a component, wrong world, ...).
    #[error("{0}")]
    Load(#[from] PluginError),
    /// The component loaded but its smoke call failed.
    #[error(
        "plugin {plugin} failed its smoke call ({call}); the previous version keeps serving: {source}"
    )]
    Smoke {
        /// `name@version` of the refused version.
        plugin: String,
        /// What was called.
        call: &'static str,
        /// The failure.
        source: Box<PluginError>,
    },
    /// The request does not fit the slot's state (no rollout, one already
    /// running, the slot replaced by a reload meanwhile).
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// A rollout setting is out of range.
    #[error("{0}")]
    OutOfRange(#[from] OutOfRange),
    /// The blocking task compiling the component died (a panic in the
    /// compiler).
    #[error("plugin load task failed: {0}")]
    LoadTask(#[from] tokio::task::JoinError),
    /// A referenced candidate is not in the store.
    #[error("{0}")]
    NotFound(String),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// A version as `GET /admin/plugins` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct VersionView {
    /// Name, version and digest.
    #[serde(flatten)]
    pub id: VersionRef,
    /// Where it came from (`builtin:…`, a path, `admin upload`).
    pub origin: String,
    /// Calls since it was loaded.
    pub calls: u64,
    /// Failed calls since it was loaded.
    pub errors: u64,
    /// Mean call latency, ms.
    pub mean_latency_ms: f64,
    /// Largest linear memory seen, bytes.
    pub peak_memory_bytes: u64,
}

impl From<&Plugin> for VersionView {
    fn from(p: &Plugin) -> Self {
        let s = p.stats();
        Self {
            id: p.identity().into(),
            origin: p.origin().to_string(),
            calls: s.calls,
            errors: s.errors,
            mean_latency_ms: if s.calls == 0 {
                0.0
            } else {
                s.busy_micros as f64 / s.calls as f64 / 1000.0
            },
            peak_memory_bytes: s.peak_memory_bytes,
        }
    }
}

/// A slot as `GET /admin/plugins` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct SlotView {
    /// Slot name.
    pub name: String,
    /// Its world.
    pub world: String,
    /// The stable version.
    pub live: VersionView,
    /// The candidate of the rollout in progress.
    pub candidate: Option<VersionView>,
    /// The latest uploaded candidate, not necessarily in a rollout.
    pub staged: Option<VersionRef>,
    /// The rollout in progress, or else the last one that ended.
    pub rollout: Option<RolloutStatus>,
}

/// The control plane: loads, swaps and rolls out plugin versions.
pub struct Rollouts {
    runtime: Arc<Runtime>,
    store: Store,
    lock: tokio::sync::Mutex<()>,
    /// The controllers of running rollouts: background tasks this type owns,
    /// stopped by [`Rollouts::shutdown`].
    controllers: controller::Controllers,
    me: Weak<Rollouts>,
    /// The cluster's shared rollout state, once joined.
    shared: OnceLock<Arc<SharedRollouts>>,
}

/// Proof that the holder has the control plane to itself.
///
/// Every change to a slot — a config reload, an admin swap, a candidate
/// upload, a rollout's start, step and end (operator or controller), a
/// `--watch` reload, restoring a slot from the store — needs one, and only
/// [`Rollouts::lock`] makes one, so those changes happen one at a time. A
/// function that needs the lock takes `&ControlGuard` rather than locking,
/// so one that holds it (a reload restoring the slots it loads) calls
/// another without deadlocking on the mutex, which is not reentrant.
///
/// The request path never takes it: calls read the slot's state through one
/// atomic load. Hold it for a control-plane operation, not across waiting
/// on a client.
pub struct ControlGuard<'a> {
    held: tokio::sync::MutexGuard<'a, ()>,
}

impl std::fmt::Debug for ControlGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlGuard")
    }
}

impl Rollouts {
    /// A control plane loading through `runtime` and persisting in `store`.
    pub fn new(runtime: Arc<Runtime>, store: Store) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            runtime,
            store,
            lock: tokio::sync::Mutex::new(()),
            controllers: controller::Controllers::default(),
            me: me.clone(),
            shared: OnceLock::new(),
        })
    }

    /// Shares every change with the other replicas of `cluster`, and applies
    /// theirs (see [`super::shared`]; start [`super::shared::sync`] too).
    pub fn join_cluster(&self, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.shared.set(SharedRollouts::new(cluster));
    }

    /// The shared state, with a cluster.
    pub(super) fn shared(&self) -> Option<&Arc<SharedRollouts>> {
        self.shared.get()
    }

    /// Keeps component bytes under their digest, in sled and the cluster.
    fn keep_wasm(&self, digest: &str, bytes: &[u8]) -> Result<(), StoreError> {
        persist::put_wasm(&self.store, digest, bytes)?;
        if let Some(shared) = self.shared() {
            shared.wasm(digest, bytes);
        }
        Ok(())
    }

    /// Stops every rollout controller and waits for them, a tick in
    /// progress (and its store write) included: after this, nothing of the
    /// control plane runs in the background or holds the store. Rollout
    /// state is persisted, so the next start resumes where this one stopped.
    pub async fn shutdown(&self) {
        self.controllers.stop().await;
    }

    /// The store rollout records persist in.
    pub(super) fn store(&self) -> &Store {
        &self.store
    }

    /// The plugin runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Waits for the control plane (first come, first served) and holds it
    /// until the guard is dropped. Never call it while holding a guard.
    pub async fn lock(&self) -> ControlGuard<'_> {
        ControlGuard {
            held: self.lock.lock().await,
        }
    }

    /// Refuses a guard of another control plane: it would serialise nothing.
    pub(super) fn check(&self, guard: &ControlGuard<'_>) {
        assert!(
            std::ptr::eq(tokio::sync::MutexGuard::mutex(&guard.held), &self.lock),
            "a ControlGuard of another control plane was passed to this one"
        );
    }

    /// Checks the guard, and that `hot` still owns its slot.
    fn serving(&self, guard: &ControlGuard<'_>, hot: &HotPlugin) -> Result<(), RolloutError> {
        self.check(guard);
        if hot.is_retired() {
            return Err(RolloutError::Conflict(format!(
                "slot `{}` was replaced by a config reload meanwhile: retry",
                hot.name()
            )));
        }
        Ok(())
    }

    /// Compiles and type-checks `source` with the slot's limits, settings and
    /// capabilities. Compilation runs on a blocking thread.
    pub(super) async fn load(
        &self,
        hot: &HotPlugin,
        source: PluginSource,
        version: Option<String>,
    ) -> Result<Arc<Plugin>, RolloutError> {
        let mut spec = hot.template().clone();
        spec.source = source;
        spec.version = version;
        // A pin in config names the configured component; an operator
        // uploading another version through the admin API means to replace it.
        spec.sha256 = None;
        let runtime = self.runtime.clone();
        let plugin = tokio::task::spawn_blocking(move || runtime.load(spec)).await??;
        Ok(Arc::new(plugin))
    }

    async fn load_bytes(
        &self,
        hot: &HotPlugin,
        bytes: Vec<u8>,
        version: Option<String>,
    ) -> Result<Arc<Plugin>, RolloutError> {
        let source = PluginSource::Bytes {
            origin: format!("admin upload to `{}`", hot.name()),
            bytes: Cow::Owned(bytes),
        };
        self.load(hot, source, version).await
    }

    pub(super) async fn load_stored(
        &self,
        hot: &HotPlugin,
        id: &VersionRef,
    ) -> Result<Arc<Plugin>, RolloutError> {
        let mut bytes = persist::get_wasm(&self.store, &id.digest)?;
        if bytes.is_none()
            && let Some(shared) = self.shared()
        {
            // Uploaded to another replica: fetched by digest, kept here.
            match shared.fetch_wasm(&id.digest).await {
                Ok(Some(fetched)) if crate::runtime::sha256_hex(&fetched) == id.digest => {
                    persist::put_wasm(&self.store, &id.digest, &fetched)?;
                    bytes = Some(fetched);
                }
                Ok(Some(_)) => {
                    tracing::warn!(plugin = %hot.name(), digest = %id.digest, "the cluster's component does not match its digest; ignored")
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(plugin = %hot.name(), error = %e, "cannot fetch the component from the cluster")
                }
            }
        }
        let bytes = bytes.ok_or_else(|| {
            RolloutError::NotFound(format!(
                "no uploaded component with digest {} for slot `{}`: upload it with PUT /admin/plugins/{}/candidate",
                id.digest,
                hot.name(),
                hot.name()
            ))
        })?;
        // A label that is just the digest prefix was defaulted, not chosen.
        let defaulted = id.digest.get(..12).is_some_and(|p| p == id.version);
        let version = (!defaulted).then(|| id.version.clone());
        self.load_bytes(hot, bytes, version).await
    }

    fn record(&self, hot: &HotPlugin) -> SlotRecord {
        persist::load(&self.store, hot.name())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// The slot's record with what it serves now written in, then `update`.
    fn next_record(&self, hot: &HotPlugin, update: impl FnOnce(&mut SlotRecord)) -> SlotRecord {
        let state = hot.state();
        let mut record = self.record(hot);
        record.base_digest = state.base_digest.clone();
        record.rollout = state.rollout.as_ref().map(|r| RolloutRecord {
            spec: r.spec.clone(),
            candidate: r.candidate.identity().into(),
            started_at: r.started_at,
            progress: r.progress(),
        });
        update(&mut record);
        record
    }

    /// Writes what the slot serves now into its record. Synchronous on
    /// purpose: between changing a slot and persisting it there is no await,
    /// so an operation whose client hangs up cannot stop halfway.
    fn save(
        &self,
        guard: &ControlGuard<'_>,
        hot: &HotPlugin,
        update: impl FnOnce(&mut SlotRecord),
    ) -> Result<(), StoreError> {
        self.check(guard);
        let record = self.next_record(hot, update);
        persist::save(&self.store, hot.name(), &record)?;
        if let Some(shared) = self.shared() {
            shared.record(hot.name(), record);
        }
        Ok(())
    }

    /// Persists the slot's counters, logging (not returning) a failure: the
    /// controller's periodic write, which has no one to report to. The
    /// write (a sled flush) runs on a blocking thread, so however often a
    /// rollout's `interval_s` asks for it, it never holds up the async
    /// workers serving requests.
    pub(super) async fn persist_quietly(&self, guard: &ControlGuard<'_>, hot: &HotPlugin) {
        self.check(guard);
        let record = self.next_record(hot, |_| {});
        let (store, name) = (self.store.clone(), hot.name().to_string());
        let written = tokio::task::spawn_blocking(move || persist::save(&store, &name, &record));
        let error = match written.await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(plugin = %hot.name(), error = %error, "could not persist rollout state");
    }

    /// Replaces the slot's stable version with `bytes` after compiling,
    /// type-checking and smoke-calling it. Calls in flight finish on the old
    /// version; on any failure the old version keeps serving.
    pub async fn swap(
        &self,
        guard: &ControlGuard<'_>,
        hot: &Arc<HotPlugin>,
        bytes: Vec<u8>,
        version: Option<String>,
        candidates: &[Candidate],
    ) -> Result<Arc<Plugin>, RolloutError> {
        self.serving(guard, hot)?;
        let digest = crate::runtime::sha256_hex(&bytes);
        let plugin = self.load_bytes(hot, bytes.clone(), version).await?;
        smoke(&plugin, candidates).await?;
        self.keep_wasm(&digest, &bytes)?;
        self.install(guard, hot, plugin.clone(), "admin upload");
        self.save(guard, hot, |r| r.live = Some(plugin.identity().into()))?;
        Ok(plugin)
    }

    /// Makes `plugin` the stable version, keeping any rollout running.
    pub(super) fn install(
        &self,
        guard: &ControlGuard<'_>,
        hot: &HotPlugin,
        plugin: Arc<Plugin>,
        why: &str,
    ) {
        log_swap(hot, &plugin, why);
        hot.update(guard, |s| s.stable = plugin);
    }

    /// Reloads a slot from its `.wasm` file (`serve --watch`): the file is the
    /// configured source, so it becomes the slot's base and any admin
    /// override is dropped.
    pub async fn reload_file(
        &self,
        guard: &ControlGuard<'_>,
        hot: &Arc<HotPlugin>,
        path: &Path,
        candidates: &[Candidate],
    ) -> Result<Arc<Plugin>, RolloutError> {
        self.serving(guard, hot)?;
        let version = hot.template().version.clone();
        let plugin = self
            .load(hot, PluginSource::File(path.to_path_buf()), version)
            .await?;
        if plugin.identity().digest == hot.identity().digest {
            return Ok(plugin);
        }
        smoke(&plugin, candidates).await?;
        log_swap(hot, &plugin, "file changed");
        hot.update(guard, |s| {
            s.stable = plugin.clone();
            s.base_digest = plugin.identity().digest.clone();
        });
        self.save(guard, hot, |r| r.live = None)?;
        Ok(plugin)
    }

    /// Stores an uploaded candidate after compiling and type-checking it.
    /// No smoke call: finding out how a candidate behaves under real traffic
    /// is what the rollout is for (a candidate that traps is rolled back).
    pub async fn stage(
        &self,
        guard: &ControlGuard<'_>,
        hot: &Arc<HotPlugin>,
        bytes: Vec<u8>,
        version: Option<String>,
    ) -> Result<Arc<Plugin>, RolloutError> {
        self.serving(guard, hot)?;
        let digest = crate::runtime::sha256_hex(&bytes);
        let plugin = self.load_bytes(hot, bytes.clone(), version).await?;
        self.keep_wasm(&digest, &bytes)?;
        self.save(guard, hot, |r| r.staged = Some(plugin.identity().into()))?;
        tracing::info!(plugin = %hot.name(), candidate = %plugin.identity(), digest = %digest, "candidate uploaded");
        Ok(plugin)
    }

    /// Starts a rollout of a stored candidate.
    pub async fn start(
        &self,
        guard: &ControlGuard<'_>,
        hot: &Arc<HotPlugin>,
        req: RolloutRequest,
    ) -> Result<RolloutStatus, RolloutError> {
        self.serving(guard, hot)?;
        let spec = req.resolve()?;
        if let Some(r) = &hot.state().rollout {
            return Err(RolloutError::Conflict(format!(
                "slot `{}` already has a {} rollout of {} in progress: promote or roll it back first",
                hot.name(),
                r.spec.mode.as_str(),
                r.candidate.identity()
            )));
        }
        let record = self.record(hot);
        let wanted = match &req.candidate {
            Some(d) => d.trim().trim_start_matches("sha256:").to_ascii_lowercase(),
            None => record.staged.as_ref().map(|s| s.digest.clone()).ok_or_else(|| {
                RolloutError::Invalid(format!(
                    "no candidate for slot `{}`: upload one with PUT /admin/plugins/{}/candidate or name its digest in `candidate`",
                    hot.name(),
                    hot.name()
                ))
            })?,
        };
        if wanted.len() != 64 || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RolloutError::Invalid(format!(
                "rollout `candidate` must be a sha256 digest (64 hex digits, optionally prefixed `sha256:`), got `{wanted}`"
            )));
        }
        let id = match &record.staged {
            Some(staged) if staged.digest == wanted => staged.clone(),
            _ => VersionRef {
                name: hot.name().to_string(),
                version: wanted[..12].to_string(),
                digest: wanted.clone(),
            },
        };
        let candidate = self.load_stored(hot, &id).await?;
        let rollout = Arc::new(Rollout::new(spec, candidate, crate::clock::unix_s(), None));
        let stable = hot.identity();
        rollout.event(format!(
            "started {} of {} at {}% against {stable}",
            rollout.spec.mode.as_str(),
            rollout.candidate.identity(),
            rollout.percent(),
        ));
        hot.update(guard, |s| s.rollout = Some(rollout.clone()));
        self.save(guard, hot, |_| {})?;
        self.supervise(hot, &rollout);
        Ok(rollout.status(&stable))
    }

    pub(super) fn supervise(&self, hot: &Arc<HotPlugin>, rollout: &Arc<Rollout>) {
        self.controllers.spawn(
            self.me.clone(),
            Arc::downgrade(hot),
            Arc::downgrade(rollout),
        );
    }

    /// Ends the slot's rollout by the operator's decision.
    pub async fn conclude(
        &self,
        guard: &ControlGuard<'_>,
        hot: &Arc<HotPlugin>,
        phase: Phase,
    ) -> Result<RolloutStatus, RolloutError> {
        self.serving(guard, hot)?;
        let Some(rollout) = hot.state().rollout.clone() else {
            return Err(RolloutError::Conflict(format!(
                "slot `{}` has no rollout in progress",
                hot.name()
            )));
        };
        let reason = match phase {
            Phase::Promoted => "promoted by the operator",
            _ => "rolled back by the operator",
        };
        self.end(guard, hot, &rollout, phase, reason.to_string())?;
        Ok(rollout.status(&hot.identity()))
    }

    /// Moves a canary's split to `percent` (the controller's step), if
    /// `rollout` is still the slot's.
    pub(super) async fn step(
        &self,
        guard: &ControlGuard<'_>,
        hot: &HotPlugin,
        rollout: &Rollout,
        percent: f64,
    ) {
        rollout.set_percent(percent);
        rollout.event(format!("healthy: candidate share raised to {percent}%"));
        self.persist_quietly(guard, hot).await;
        if let Some(shared) = self.shared() {
            shared.record(hot.name(), self.next_record(hot, |_| {}));
        }
    }

    /// Whether this replica decides `rollout`'s next step: always alone;
    /// in a cluster, while it holds the slot's lease.
    pub(super) async fn leads(&self, hot: &HotPlugin, rollout: &super::Rollout) -> bool {
        match self.shared() {
            None => true,
            Some(shared) => {
                let lease = std::time::Duration::from_secs_f64(rollout.spec.interval_s * 3.0);
                shared.leads(hot.name(), lease).await
            }
        }
    }

    /// Ends `rollout`, which must be the slot's: a promotion makes its
    /// candidate stable; either way it becomes the slot's last rollout.
    pub(super) fn end(
        &self,
        guard: &ControlGuard<'_>,
        hot: &Arc<HotPlugin>,
        rollout: &Arc<Rollout>,
        phase: Phase,
        reason: String,
    ) -> Result<(), RolloutError> {
        self.serving(guard, hot)?;
        if !hot.is_current(rollout) {
            return Ok(());
        }
        rollout.finish(phase, reason);
        let promoted = (phase == Phase::Promoted).then(|| rollout.candidate.clone());
        if let Some(new) = &promoted {
            tracing::info!(
                plugin = %hot.name(),
                old_digest = %hot.identity().digest,
                new_digest = %new.identity().digest,
                "candidate promoted to stable"
            );
        }
        hot.update(guard, |s| {
            if let Some(new) = &promoted {
                s.stable = new.clone();
            }
            s.rollout = None;
            s.last = Some(rollout.clone());
        });
        self.save(guard, hot, |r| {
            if let Some(new) = &promoted {
                r.live = Some(new.identity().into());
            }
        })?;
        Ok(())
    }

    /// Retires a slot a config reload replaced or removed: its controller
    /// stops, and no later change to it touches the slot's record, which its
    /// successor owns now.
    pub fn retire(&self, guard: &ControlGuard<'_>, hot: &HotPlugin) {
        self.check(guard);
        hot.update(guard, |s| s.retired = true);
    }

    /// Re-applies what the store remembers about a freshly loaded slot: an
    /// admin-installed version, then a rollout in progress (its controller
    /// restarts). Problems are logged and leave the configured version
    /// serving: a stale record must never stop the gateway from starting.
    ///
    /// `predecessor` is the slot a config reload is replacing. Its rollout's
    /// counters are newer than the record (the controller persists them only
    /// on its ticks), so the resumed rollout starts from them, and its
    /// controller keeps the predecessor's schedule: resuming from the record
    /// would drop every call since the last tick, and restarting the wait
    /// would let no tick run at all while reloads come faster than
    /// `interval_s` — either would stall a canary for good.
    pub async fn restore(
        &self,
        guard: &ControlGuard<'_>,
        hot: &Arc<HotPlugin>,
        predecessor: Option<&HotPlugin>,
    ) {
        self.check(guard);
        let record = self.record(hot);
        let base = hot.state().base_digest.clone();
        if record.base_digest != base {
            if !record.base_digest.is_empty() {
                tracing::info!(plugin = %hot.name(), old = %record.base_digest, new = %base, "configured plugin changed: admin-installed version and rollout discarded");
            }
            let fresh = SlotRecord {
                base_digest: base,
                ..Default::default()
            };
            if let Err(e) = persist::save(&self.store, hot.name(), &fresh) {
                tracing::warn!(plugin = %hot.name(), error = %e, "could not persist rollout state");
            }
            return;
        }
        if let Some(live) = &record.live
            && live.digest != base
        {
            match self.load_stored(hot, live).await {
                Ok(plugin) => self.install(guard, hot, plugin, "restored from the store"),
                Err(e) => {
                    tracing::warn!(plugin = %hot.name(), error = %e, "could not restore the admin-installed version; serving the configured one")
                }
            }
        }
        if let Some(r) = record.rollout {
            match self.load_stored(hot, &r.candidate).await {
                Ok(candidate) => {
                    // Read after the candidate compiled, so the calls the
                    // predecessor served meanwhile count too.
                    let carried = predecessor
                        .and_then(|p| p.state().rollout.clone())
                        .filter(|p| {
                            p.candidate.identity().digest == r.candidate.digest
                                && p.started_at == r.started_at
                                && p.phase() == Phase::Active
                        })
                        .map(|p| (p.progress(), p.due()));
                    let why = if carried.is_some() {
                        "carried over a config reload"
                    } else {
                        "resumed after restart"
                    };
                    let (progress, due) = match carried {
                        Some((progress, due)) => (progress, Some(due)),
                        None => (r.progress, None),
                    };
                    let rollout = Arc::new(Rollout::new(
                        r.spec,
                        candidate,
                        r.started_at,
                        Some(progress),
                    ));
                    if let Some(due) = due {
                        rollout.set_due(due);
                    }
                    rollout.event(format!("{why} at {}%", rollout.percent()));
                    hot.update(guard, |s| {
                        s.rollout = Some(rollout.clone());
                        s.last = None;
                    });
                    self.supervise(hot, &rollout);
                }
                Err(e) => {
                    tracing::warn!(plugin = %hot.name(), error = %e, "could not resume the rollout; serving the stable version")
                }
            }
        }
    }

    /// The admin API's view of a slot.
    pub fn view(&self, hot: &HotPlugin) -> SlotView {
        let state = hot.state();
        let shown = state.rollout.as_ref().or(state.last.as_ref());
        SlotView {
            name: hot.name().to_string(),
            world: hot.world().to_string(),
            live: state.stable.as_ref().into(),
            candidate: state.rollout.as_ref().map(|r| r.candidate.as_ref().into()),
            staged: self.record(hot).staged,
            rollout: shown.map(|r| r.status(state.stable.identity())),
        }
    }
}

/// Logs a change of the slot's stable version with both digests.
fn log_swap(hot: &HotPlugin, plugin: &Plugin, why: &str) {
    let old = hot.identity();
    tracing::info!(
        plugin = %hot.name(),
        old_version = %old.version,
        old_digest = %old.digest,
        new_version = %plugin.identity().version,
        new_digest = %plugin.identity().digest,
        "plugin swapped ({why})"
    );
}

/// Calls a freshly loaded version once with a harmless input; it must not
/// fail. Validators validate one short user message (any verdict passes);
/// routers order the pipeline's real upstream candidates; recovery
/// strategies advise on a timeout of the first candidate; agents are only
/// instantiated, since their export would call the LLM.
pub async fn smoke(plugin: &Plugin, candidates: &[Candidate]) -> Result<(), RolloutError> {
    let model = candidates
        .first()
        .map(|c| c.model.clone())
        .unwrap_or_default();
    let request = CompletionRequest {
        model: model.clone(),
        messages: vec![Message::user("ping")],
        ..Default::default()
    };
    let (call, result) = match plugin.world() {
        World::Validator => (
            "validate one user message",
            plugin
                .validate(Stage::Input, &request.messages)
                .await
                .map(drop),
        ),
        World::Router => {
            let req = RouteRequest {
                model,
                prompt_tokens: 1,
                message_count: 1,
                ..Default::default()
            };
            (
                "route over the configured upstreams",
                plugin.route(&req, candidates).await.map(drop),
            )
        }
        World::Recovery => {
            let ctx = FailureContext {
                failure: Failure::Timeout,
                upstream: candidates
                    .first()
                    .map(|c| c.name.clone())
                    .unwrap_or_default(),
                attempt: 1,
                max_attempts: 3,
                remaining_ms: 10_000,
                alternatives: candidates.iter().skip(1).map(|c| c.name.clone()).collect(),
                request,
            };
            (
                "recover from an upstream timeout",
                plugin.recover(&ctx).await.map(drop),
            )
        }
        World::Agent => ("instantiate", plugin.probe().await),
    };
    result.map_err(|source| RolloutError::Smoke {
        plugin: plugin.identity().to_string(),
        call,
        source: Box::new(source),
    })
}
