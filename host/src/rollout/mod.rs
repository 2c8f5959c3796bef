//! Hot swap and rollouts: slots whose plugin version changes while traffic
//! flows.
//!
//! Each configured slot is a [`HotPlugin`]: an atomic pointer (`arc-swap`)
//! to a [`SlotState`] holding the stable version and, optionally, a
//! [`Rollout`] with a candidate. A call loads the pointer once, picks the
//! version it runs on and keeps that `Arc<Plugin>` until it is done, so a
//! swap never disturbs a call in flight and a call never takes a lock.
//!
//! - **canary**: a random share of calls runs on the candidate; the
//!   [`controller`] steps the share up while error rate and latency stay
//!   within bounds, then promotes, or rolls back by itself and says why;
//! - **shadow**: every call is answered by stable; a share is mirrored to the
//!   candidate in a spawned task (bounded concurrency), whose answer is only
//!   compared, never returned;
//! - **A/B**: a sticky split by a hash of the caller
//!   ([`CallContext::sticky_key`]), with per-arm counters and a
//!   two-proportion z-test.
//!
//! Picking a version, recording its arm and mirroring a shadow are written
//! once, generic over the world's export ([`SlotExport`], on top of the
//! runtime's [`Export`]); a shadow compares typed answers on what matters
//! for the world (a validator's verdict, a router's first choice, a
//! recovery's action, an agent's answer text) and keeps a readable sample.
//!
//! [`Rollouts`] is the control plane behind the admin API: it loads and
//! smoke-tests versions, starts and ends rollouts, persists every change in
//! the store ([`persist`]) and resumes rollouts after a restart. [`watch`]
//! reloads file plugins when they change on disk (`serve --watch`).

pub mod controller;
mod manager;
pub mod persist;
pub mod plan;
pub mod shared;
pub mod stats;
pub mod watch;

pub use manager::{ControlGuard, RolloutError, Rollouts, SlotView, VersionView, smoke};
pub use plan::{
    Mode, OutOfRange, Phase, Rollout, RolloutRequest, RolloutSpec, RolloutStatus, ShadowError,
    ShadowOutcome, VersionRef,
};

use crate::domain::{
    Action, CallContext, Candidate, Failure, FailureContext, Message, RouteRequest, Stage, Task,
    TaskResult, Verdict,
};
use crate::runtime::{
    AgentHost, Export, Handle, Plugin, PluginError, PluginIdentity, PluginSpec, Recover, Route,
    Validate, World,
};
use arc_swap::ArcSwap;
use rand::Rng;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;

/// Shadow calls of one slot allowed in flight at once; beyond it mirrors are
/// dropped (and counted), so a slow candidate cannot pile up work.
pub const SHADOW_CONCURRENCY: usize = 16;

/// Maps `key` to a bucket in 0..10000 with sha256, so the assignment is the
/// same in every process and release (unlike std's seeded hasher).
fn bucket(slot: &str, key: &str) -> u32 {
    let digest = Sha256::new()
        .chain_update(slot.as_bytes())
        .chain_update([0])
        .chain_update(key.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % 10_000) as u32
}

/// What a slot serves right now. Changed only through
/// [`HotPlugin::update`], under the control-plane guard.
#[derive(Clone, Debug)]
pub struct SlotState {
    /// The version answering calls.
    pub stable: Arc<Plugin>,
    /// The rollout in progress, if any.
    pub rollout: Option<Arc<Rollout>>,
    /// The last finished rollout, for its status.
    pub last: Option<Arc<Rollout>>,
    /// Digest of what the config loads into this slot. An admin-installed
    /// version survives restarts only while this stays the same.
    pub base_digest: String,
    /// Replaced or removed by a config reload: calls in flight may still
    /// finish here, but no control-plane change applies to it any more (its
    /// successor owns the slot's record in the store).
    pub retired: bool,
}

/// Which version a call runs on.
struct Pick {
    primary: Arc<Plugin>,
    /// The rollout and whether `primary` is its candidate.
    arm: Option<(Arc<Rollout>, bool)>,
    /// A shadow rollout that wants this call mirrored.
    shadow: Option<Arc<Rollout>>,
}

impl Pick {
    fn record(&self, started: Instant, failed: bool) {
        if let Some((rollout, is_candidate)) = &self.arm {
            let stats = if *is_candidate {
                &rollout.candidate_stats
            } else {
                &rollout.stable_stats
            };
            stats.record(started.elapsed(), failed);
        }
    }
}

/// A plugin slot whose version can change while it serves.
pub struct HotPlugin {
    name: String,
    world: World,
    /// How to load a new version into this slot: the configured limits,
    /// settings and capabilities (the source is replaced per version).
    template: PluginSpec,
    state: ArcSwap<SlotState>,
    shadow_permits: Arc<Semaphore>,
}

impl std::fmt::Debug for HotPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotPlugin")
            .field("name", &self.name)
            .field("live", &self.live().identity())
            .finish_non_exhaustive()
    }
}

/// A world's export as a rollout slot runs it: what counts as a failed call
/// for its arm, and what a shadow compares.
pub trait SlotExport: Export {
    /// The part of an answer a shadow compares.
    type Key: PartialEq + Send + 'static;

    /// A copy of `input` for a shadow call, which outlives the caller.
    fn detach(input: &Self::Input<'_>) -> Self::Input<'static>;

    /// Whether a call counts as an error of its arm.
    fn failed(result: &Result<Self::Output, PluginError>) -> bool {
        result.is_err()
    }

    /// What a shadow compares of a call's result, or why there is nothing.
    fn key(result: &Result<Self::Output, PluginError>) -> Result<Self::Key, ShadowError>;

    /// How a shadow sample shows a key.
    fn describe(key: &Self::Key) -> String;
}

/// The whole verdict matters: a candidate that allows what stable rejects,
/// or rewrites differently, changes what the client gets.
impl SlotExport for Validate {
    type Key = Verdict;

    fn detach((stage, messages): &Self::Input<'_>) -> Self::Input<'static> {
        (*stage, Cow::Owned(messages.to_vec()))
    }

    fn key(result: &Result<Verdict, PluginError>) -> Result<Verdict, ShadowError> {
        result.as_ref().cloned().map_err(Into::into)
    }

    fn describe(verdict: &Verdict) -> String {
        match verdict {
            Verdict::Allow => "allow".into(),
            Verdict::Reject(reason) => format!("reject: {reason}"),
            Verdict::Rewrite(messages) => {
                let texts: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
                format!("rewrite: {}", texts.join(" | "))
            }
        }
    }
}

/// The first choice matters: it is the upstream that would have been called;
/// the fallback order behind it rarely comes into play.
impl SlotExport for Route {
    type Key = Option<String>;

    fn detach((req, candidates): &Self::Input<'_>) -> Self::Input<'static> {
        (
            Cow::Owned(req.clone().into_owned()),
            Cow::Owned(candidates.to_vec()),
        )
    }

    fn key(result: &Result<Vec<String>, PluginError>) -> Result<Option<String>, ShadowError> {
        match result {
            Ok(order) => Ok(order.first().cloned()),
            Err(e) => Err(e.into()),
        }
    }

    fn describe(first: &Option<String>) -> String {
        first.clone().unwrap_or_else(|| "(no preference)".into())
    }
}

/// The whole action matters: it is what the host does next.
impl SlotExport for Recover {
    type Key = Action;

    fn detach(ctx: &Self::Input<'_>) -> Self::Input<'static> {
        Cow::Owned(ctx.clone().into_owned())
    }

    fn key(result: &Result<Action, PluginError>) -> Result<Action, ShadowError> {
        result.as_ref().cloned().map_err(Into::into)
    }

    fn describe(action: &Action) -> String {
        match action {
            Action::Retry(ms) => format!("retry after {ms} ms"),
            Action::Fallback(upstream) => format!("fall back to {upstream}"),
            Action::ChunkAndRetry(chars) => format!("chunk by {chars} chars and retry"),
            Action::Refine(messages) => {
                let texts: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
                format!("refine: {}", texts.join(" | "))
            }
            Action::Fail(true) => "fail and alert".into(),
            Action::Fail(false) => "fail".into(),
        }
    }
}

/// The answer text matters (usage differs from run to run). An agent's own
/// failure counts as an error of its arm. A shadowed agent runs with a step
/// log of its own, so its LLM calls (which are real, and cost) never show in
/// the client's steps, and budgets of its own, so it never spends the
/// client's request budget.
impl SlotExport for Handle {
    type Key = String;

    fn detach((task, ctx, host): &Self::Input<'_>) -> Self::Input<'static> {
        // Its own ledger and budgets: a shadow never spends the request's.
        (
            Cow::Owned(task.clone().into_owned()),
            ctx.detached(),
            host.clone(),
        )
    }

    fn failed(result: &Result<Result<TaskResult, Failure>, PluginError>) -> bool {
        !matches!(result, Ok(Ok(_)))
    }

    fn key(
        result: &Result<Result<TaskResult, Failure>, PluginError>,
    ) -> Result<String, ShadowError> {
        match result {
            Ok(Ok(r)) => Ok(r.output.content.clone()),
            Ok(Err(f)) => Err(ShadowError::Agent(f.clone())),
            Err(e) => Err(e.into()),
        }
    }

    fn describe(text: &String) -> String {
        text.clone()
    }
}

impl HotPlugin {
    /// A slot serving `plugin`, loaded from `template`.
    pub fn new(template: PluginSpec, plugin: Arc<Plugin>) -> Self {
        let base_digest = plugin.identity().digest.clone();
        Self {
            name: template.name.clone(),
            world: template.world,
            template,
            state: ArcSwap::from_pointee(SlotState {
                stable: plugin,
                rollout: None,
                last: None,
                base_digest,
                retired: false,
            }),
            shadow_permits: Arc::new(Semaphore::new(SHADOW_CONCURRENCY)),
        }
    }

    /// The slot's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The world the slot requires.
    pub fn world(&self) -> World {
        self.world
    }

    /// The load spec new versions start from.
    pub fn template(&self) -> &PluginSpec {
        &self.template
    }

    /// The stable version.
    pub fn live(&self) -> Arc<Plugin> {
        self.state.load().stable.clone()
    }

    /// The stable version's identity.
    pub fn identity(&self) -> PluginIdentity {
        self.state.load().stable.identity().clone()
    }

    /// Everything the slot serves right now.
    pub fn state(&self) -> Arc<SlotState> {
        self.state.load_full()
    }

    /// Changes what the slot serves: `change` edits a copy of the current
    /// state, which then replaces it in one atomic store, so a call sees the
    /// state before or after, never half of it, and calls in flight finish
    /// on the versions they picked. The guard is the only way in: every
    /// change is the control plane's, one at a time, so the load-then-store
    /// here cannot lose a concurrent change.
    fn update(&self, _guard: &ControlGuard<'_>, change: impl FnOnce(&mut SlotState)) {
        let mut next = SlotState::clone(&self.state.load());
        change(&mut next);
        self.state.store(Arc::new(next));
    }

    /// Whether a config reload replaced or removed this slot.
    pub fn is_retired(&self) -> bool {
        self.state.load().retired
    }

    /// Whether `rollout` is the one in progress here.
    pub fn is_current(&self, rollout: &Arc<Rollout>) -> bool {
        self.state
            .load()
            .rollout
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(r, rollout))
    }

    /// Picks the version for one call: one atomic load, then a coin (canary,
    /// shadow) or a hash of the caller (A/B).
    fn pick(&self, ctx: &CallContext) -> Pick {
        let state = self.state.load();
        let Some(rollout) = &state.rollout else {
            return Pick {
                primary: state.stable.clone(),
                arm: None,
                shadow: None,
            };
        };
        let bp = rollout.basis_points();
        let stable = Pick {
            primary: state.stable.clone(),
            arm: Some((rollout.clone(), false)),
            shadow: None,
        };
        let candidate = || Pick {
            primary: rollout.candidate.clone(),
            arm: Some((rollout.clone(), true)),
            shadow: None,
        };
        match rollout.spec.mode {
            Mode::Canary if rand::rng().random_range(0..10_000) < bp => candidate(),
            Mode::Canary => stable,
            Mode::Ab if bucket(&self.name, &ctx.sticky_key()) < bp => candidate(),
            Mode::Ab => stable,
            Mode::Shadow => Pick {
                shadow: (rand::rng().random_range(0..10_000) < bp).then(|| rollout.clone()),
                ..stable
            },
        }
    }

    /// Starts one call, for any world: picks the version and, when the call
    /// is mirrored, copies its input for the shadow (before the call, which
    /// may consume it: an agent's context).
    ///
    /// The call itself is awaited by the world's method, between
    /// [`begin`](Self::begin) and [`end`](Self::end): a future generic over
    /// the world, held across an await, trips a known limitation of the
    /// compiler's `Send` proofs (rust-lang/rust#100013).
    fn begin<E: SlotExport>(&self, ctx: &CallContext, input: &E::Input<'_>) -> SlotCall<E> {
        let pick = self.pick(ctx);
        let shadow = pick.shadow.clone().map(|r| (r, E::detach(input)));
        SlotCall {
            pick,
            shadow,
            started: Instant::now(),
        }
    }

    /// Ends one call: records its arm, and mirrors it to the shadow
    /// candidate when [`begin`](Self::begin) said so.
    fn end<E: SlotExport>(&self, call: SlotCall<E>, result: &Result<E::Output, PluginError>) {
        call.pick.record(call.started, E::failed(result));
        if let Some((rollout, input)) = call.shadow {
            self.mirror::<E>(rollout, E::key(result), input);
        }
    }

    /// Mirrors a call to the shadow candidate, off the response path.
    fn mirror<E: SlotExport>(
        &self,
        rollout: Arc<Rollout>,
        stable: Result<E::Key, ShadowError>,
        input: E::Input<'static>,
    ) {
        let Ok(permit) = self.shadow_permits.clone().try_acquire_owned() else {
            rollout.shadow.drop_one();
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            // Outside the request's share: a shadow must never take
            // instances the client's request needs.
            let candidate = E::call(&rollout.candidate, None, input).await;
            rollout
                .candidate_stats
                .record(started.elapsed(), E::failed(&candidate));
            rollout
                .shadow
                .record(&stable, &E::key(&candidate), E::describe);
        });
    }

    /// Runs the slot's validator (see [`Validate`]) for the caller in `ctx`.
    pub async fn validate(
        &self,
        ctx: &CallContext,
        stage: Stage,
        messages: &[Message],
    ) -> Result<Verdict, PluginError> {
        let input = (stage, Cow::Borrowed(messages));
        let call = self.begin::<Validate>(ctx, &input);
        let result = Validate::call(call.plugin(), Some(ctx), input).await;
        self.end(call, &result);
        result
    }

    /// Runs the slot's router (see [`Route`]) for the caller in `ctx`.
    pub async fn route(
        &self,
        ctx: &CallContext,
        req: &RouteRequest,
        candidates: &[Candidate],
    ) -> Result<Vec<String>, PluginError> {
        let input = (Cow::Borrowed(req), Cow::Borrowed(candidates));
        let call = self.begin::<Route>(ctx, &input);
        let result = Route::call(call.plugin(), Some(ctx), input).await;
        self.end(call, &result);
        result
    }

    /// Runs the slot's recovery strategy (see [`Recover`]) for the caller in `ctx`.
    pub async fn recover(
        &self,
        ctx: &CallContext,
        failure: &FailureContext,
    ) -> Result<Action, PluginError> {
        let input = Cow::Borrowed(failure);
        let call = self.begin::<Recover>(ctx, &input);
        let result = Recover::call(call.plugin(), Some(ctx), input).await;
        self.end(call, &result);
        result
    }

    /// Runs the slot's agent (see [`Handle`]) in `ctx`, the context inside
    /// the agent.
    pub async fn handle(
        &self,
        task: &Task,
        ctx: CallContext,
        host: Arc<dyn AgentHost>,
    ) -> Result<Result<TaskResult, Failure>, PluginError> {
        let input = (Cow::Borrowed(task), ctx, host);
        let call = self.begin::<Handle>(&input.1, &input);
        let result = Handle::call(call.plugin(), None, input).await;
        self.end(call, &result);
        result
    }
}

/// One call in progress on a slot: the version picked, when it started,
/// and the copy of its input a shadow will run on.
struct SlotCall<E: SlotExport> {
    pick: Pick,
    shadow: Option<(Arc<Rollout>, E::Input<'static>)>,
    started: Instant,
}

impl<E: SlotExport> SlotCall<E> {
    /// The version the call runs on.
    fn plugin(&self) -> &Plugin {
        &self.pick.primary
    }
}

#[cfg(test)]
mod tests {
    use super::bucket;

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(bucket("slot", "alice"), bucket("slot", "alice"));
        let under_half = (0..1000)
            .filter(|i| bucket("slot", &format!("client-{i}")) < 5000)
            .count();
        assert!((400..600).contains(&under_half), "{under_half}");
    }
}
