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
//! - **A/B**: a sticky split by a hash of the caller (`CallContext::sticky_key`), with
//!   per-arm counters and a two-proportion z-test.
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
    Mode, OutOfRange, Phase, Rollout, RolloutRequest, RolloutSpec, RolloutStatus, VersionRef,
};

use crate::domain::{
    Action, CallContext, Candidate, Failure, FailureContext, Message, RouteRequest, Stage, Task,
    TaskResult, Verdict,
};
use crate::runtime::{AgentHost, Plugin, PluginError, PluginIdentity, PluginSpec, World};
use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use rand::Rng;
use sha2::{Digest, Sha256};
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

pub(crate) fn unix_now() -> u64 {
    crate::clock::unix_s()
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

/// Describes a validator's verdict for shadow comparison.
fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Allow => "allow".into(),
        Verdict::Reject(reason) => format!("reject: {reason}"),
        Verdict::Rewrite(messages) => {
            let texts: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
            format!("rewrite: {}", texts.join(" | "))
        }
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

    /// Mirrors a call to the shadow candidate, off the response path.
    fn mirror(
        &self,
        rollout: Arc<Rollout>,
        stable: Result<String, String>,
        run: impl FnOnce(Arc<Plugin>) -> BoxFuture<'static, Result<String, String>> + Send + 'static,
    ) {
        let Ok(permit) = self.shadow_permits.clone().try_acquire_owned() else {
            rollout.shadow.drop_one();
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            let candidate = run(rollout.candidate.clone()).await;
            rollout
                .candidate_stats
                .record(started.elapsed(), candidate.is_err());
            rollout.shadow.record(&stable, &candidate);
        });
    }

    /// Runs the slot's validator (see [`Plugin::validate`]).
    pub async fn validate(
        &self,
        ctx: &CallContext,
        stage: Stage,
        messages: &[Message],
    ) -> Result<Verdict, PluginError> {
        let pick = self.pick(ctx);
        let started = Instant::now();
        let result = pick.primary.validate(stage, messages).await;
        pick.record(started, result.is_err());
        if let Some(rollout) = pick.shadow {
            let stable = result
                .as_ref()
                .map(verdict_text)
                .map_err(ToString::to_string);
            let messages = messages.to_vec();
            self.mirror(rollout, stable, move |p| {
                Box::pin(async move {
                    p.validate(stage, &messages)
                        .await
                        .map(|v| verdict_text(&v))
                        .map_err(|e| e.to_string())
                })
            });
        }
        result
    }

    /// Runs the slot's router (see [`Plugin::route`]). Shadow compares the
    /// first choice, the upstream that would have been called.
    pub async fn route(
        &self,
        ctx: &CallContext,
        req: &RouteRequest,
        candidates: &[Candidate],
    ) -> Result<Vec<String>, PluginError> {
        let pick = self.pick(ctx);
        let started = Instant::now();
        let result = pick.primary.route(req, candidates).await;
        pick.record(started, result.is_err());
        if let Some(rollout) = pick.shadow {
            let first = |order: &Vec<String>| {
                order
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "(no preference)".into())
            };
            let stable = result.as_ref().map(first).map_err(ToString::to_string);
            let (req, candidates) = (req.clone(), candidates.to_vec());
            self.mirror(rollout, stable, move |p| {
                Box::pin(async move {
                    p.route(&req, &candidates)
                        .await
                        .map(|o| first(&o))
                        .map_err(|e| e.to_string())
                })
            });
        }
        result
    }

    /// Runs the slot's recovery strategy (see [`Plugin::recover`]).
    pub async fn recover(
        &self,
        call: &CallContext,
        ctx: &FailureContext,
    ) -> Result<Action, PluginError> {
        let pick = self.pick(call);
        let started = Instant::now();
        let result = pick.primary.recover(ctx).await;
        pick.record(started, result.is_err());
        if let Some(rollout) = pick.shadow {
            let stable = result
                .as_ref()
                .map(|a| format!("{a:?}"))
                .map_err(ToString::to_string);
            let ctx = ctx.clone();
            self.mirror(rollout, stable, move |p| {
                Box::pin(async move {
                    p.recover(&ctx)
                        .await
                        .map(|a| format!("{a:?}"))
                        .map_err(|e| e.to_string())
                })
            });
        }
        result
    }

    /// Runs the slot's agent (see [`Plugin::handle`]). An agent's own failure
    /// counts as an error of its arm. A shadowed agent runs with its own step
    /// log, so its LLM calls (which are real, and cost) never show in the
    /// client's steps; the answer texts are compared.
    pub async fn handle(
        &self,
        task: &Task,
        ctx: CallContext,
        host: Arc<dyn AgentHost>,
    ) -> Result<Result<TaskResult, Failure>, PluginError> {
        let pick = self.pick(&ctx);
        let shadow_ctx = pick.shadow.as_ref().map(|_| {
            let mut copy = ctx.clone();
            copy.ledger = Default::default();
            copy
        });
        let started = Instant::now();
        let result = pick.primary.handle(task, ctx, host.clone()).await;
        pick.record(started, !matches!(result, Ok(Ok(_))));
        if let (Some(rollout), Some(shadow_ctx)) = (pick.shadow, shadow_ctx) {
            let text = |r: &Result<Result<TaskResult, Failure>, PluginError>| match r {
                Ok(Ok(r)) => Ok(r.output.content.clone()),
                Ok(Err(f)) => Err(format!("agent failed: {f}")),
                Err(e) => Err(e.to_string()),
            };
            let stable = text(&result);
            let task = task.clone();
            self.mirror(rollout, stable, move |p| {
                Box::pin(async move { text(&p.handle(&task, shadow_ctx, host).await) })
            });
        }
        result
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
