//! The canary controller: every `interval_s` it looks at both arms and
//! steps the candidate's share up, promotes it, or rolls it back.
//!
//! Rules, in order (see [`evaluate`]):
//! 1. fewer than `min_samples` candidate calls since the last step: wait;
//! 2. candidate error rate above `max_error_rate`: roll back;
//! 3. stable has `min_samples` calls too and the candidate's mean latency is
//!    above `max_latency_ratio` × stable's: roll back;
//! 4. otherwise add `step` points; at 100% promote.
//!
//! Shadow and A/B rollouts get the same task, which only persists their
//! counters every `interval_s`. Each tick takes the control-plane guard, as
//! every other change to a slot does. The task holds only weak references:
//! when the slot is replaced (config reload: the slot is retired) or the
//! gateway stops, it ends on its next tick.

use super::plan::{Mode, Phase, Rollout, RolloutSpec};
use super::stats::ArmSnapshot;
use super::{ControlGuard, HotPlugin, Rollouts};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// What the controller does after one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Not enough evidence yet.
    Wait,
    /// Move the candidate to this share (percent).
    Step(f64),
    /// The candidate becomes stable.
    Promote,
    /// The candidate is removed, for this reason.
    Rollback(String),
}

/// Applies the canary rules to one snapshot of both arms.
pub fn evaluate(
    spec: &RolloutSpec,
    percent: f64,
    stable: &ArmSnapshot,
    candidate: &ArmSnapshot,
    candidate_calls_since_step: u64,
) -> Decision {
    if candidate_calls_since_step < spec.min_samples {
        return Decision::Wait;
    }
    if candidate.error_rate > spec.max_error_rate {
        return Decision::Rollback(format!(
            "candidate error rate {:.3} exceeds max_error_rate {} ({} errors in {} calls; stable {:.3})",
            candidate.error_rate,
            spec.max_error_rate,
            candidate.errors,
            candidate.calls,
            stable.error_rate
        ));
    }
    if stable.calls >= spec.min_samples && stable.mean_latency_ms > 0.0 {
        let ratio = candidate.mean_latency_ms / stable.mean_latency_ms;
        if ratio > spec.max_latency_ratio {
            return Decision::Rollback(format!(
                "candidate mean latency {:.3} ms is {ratio:.2}× stable's {:.3} ms, above max_latency_ratio {}",
                candidate.mean_latency_ms, stable.mean_latency_ms, spec.max_latency_ratio
            ));
        }
    }
    let next = (percent + spec.step).min(100.0);
    if next >= 100.0 {
        Decision::Promote
    } else {
        Decision::Step(next)
    }
}

/// The running controllers, owned by the control plane so a shutdown can
/// stop them: a controller holds the control plane (and so the store) while
/// it ticks, and one left running would keep the store locked after the
/// gateway stopped.
#[derive(Debug, Default)]
pub(super) struct Controllers {
    stopping: tokio::sync::watch::Sender<bool>,
    tasks: std::sync::Mutex<tokio::task::JoinSet<()>>,
}

impl Controllers {
    /// Starts the controller of `rollout` in slot `hot`: a tick every
    /// `interval_s` until the rollout ends or [`Controllers::stop`] is called.
    pub(super) fn spawn(
        &self,
        manager: Weak<Rollouts>,
        hot: Weak<HotPlugin>,
        rollout: Weak<Rollout>,
    ) {
        let Some(interval) = rollout
            .upgrade()
            .map(|r| Duration::from_secs_f64(r.spec.interval_s))
        else {
            return;
        };
        let mut stopping = self.stopping.subscribe();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        // Finished controllers are reaped here, so the set stays small.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            loop {
                // Due when the rollout says: a rollout carried over a reload
                // keeps the schedule its predecessor's controller had.
                let Some(due) = rollout.upgrade().map(|r| r.due()) else {
                    return;
                };
                // A stop is only seen between ticks: a tick in progress
                // finishes its decision and its store write.
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => {}
                    _ = stopping.wait_for(|stop| *stop) => return,
                }
                let (Some(manager), Some(hot), Some(rollout)) =
                    (manager.upgrade(), hot.upgrade(), rollout.upgrade())
                else {
                    return;
                };
                if !tick(&manager, &hot, &rollout).await {
                    return;
                }
                rollout.set_due(std::time::Instant::now() + interval);
            }
        });
    }

    /// Stops every controller and waits until each has returned.
    pub(super) async fn stop(&self) {
        self.stopping.send_replace(true);
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        while tasks.join_next().await.is_some() {}
    }
}

/// One evaluation; false once the rollout is over. It runs under the
/// control-plane guard, so a decision is taken on the state it acts on: an
/// operator's promote, a swap or a reload either happened before it (and it
/// sees that) or waits for it.
async fn tick(manager: &Rollouts, hot: &Arc<HotPlugin>, rollout: &Arc<Rollout>) -> bool {
    let guard = manager.lock().await;
    if hot.is_retired() || !hot.is_current(rollout) || rollout.phase() != Phase::Active {
        return false;
    }
    if rollout.spec.mode != Mode::Canary {
        // Shadow and A/B end by the operator's decision; keep their
        // counters persisted so a restart resumes with them.
        manager.persist_quietly(&guard, hot).await;
        return true;
    }
    // In a cluster one replica decides (see `rollout::shared`); the others
    // follow what it publishes.
    if !manager.leads(hot, rollout).await {
        return true;
    }
    let decision = evaluate(
        &rollout.spec,
        rollout.percent(),
        &rollout.stable_stats.snapshot(),
        &rollout.candidate_stats.snapshot(),
        rollout.candidate_calls_since_step(),
    );
    match decision {
        Decision::Wait => {
            // Counters move on the request path; persist them now and then so
            // a restart resumes with them.
            manager.persist_quietly(&guard, hot).await;
            true
        }
        Decision::Step(percent) => {
            manager.step(&guard, hot, rollout, percent).await;
            true
        }
        Decision::Promote => {
            let reason = format!(
                "healthy at every step up to 100% ({} candidate calls)",
                rollout.candidate_stats.snapshot().calls
            );
            end(manager, &guard, hot, rollout, Phase::Promoted, reason);
            false
        }
        Decision::Rollback(reason) => {
            tracing::warn!(plugin = %hot.name(), candidate = %rollout.candidate.identity(), %reason, "canary rolled back automatically");
            end(manager, &guard, hot, rollout, Phase::RolledBack, reason);
            false
        }
    }
}

/// Ends the rollout, logging what could not be persisted (the controller
/// has no one to report to; the slot itself has changed either way).
fn end(
    manager: &Rollouts,
    guard: &ControlGuard<'_>,
    hot: &Arc<HotPlugin>,
    rollout: &Arc<Rollout>,
    phase: Phase,
    reason: String,
) {
    if let Err(e) = manager.end(guard, hot, rollout, phase, reason) {
        tracing::warn!(plugin = %hot.name(), error = %e, "could not persist the end of the rollout");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::plan::RolloutRequest;
    use crate::rollout::stats::ArmStats;

    fn spec() -> RolloutSpec {
        RolloutRequest {
            mode: Mode::Canary,
            candidate: None,
            percent: Some(20.0),
            step: Some(40.0),
            interval_s: None,
            max_error_rate: Some(0.1),
            max_latency_ratio: Some(2.0),
            min_samples: Some(10),
        }
        .resolve()
        .unwrap()
    }

    fn arm(calls: u64, errors: u64, ms_each: u64) -> ArmSnapshot {
        ArmStats::starting_at(calls, errors, calls * ms_each * 1000).snapshot()
    }

    #[test]
    fn waits_for_min_samples_since_the_last_step() {
        let d = evaluate(&spec(), 20.0, &arm(100, 0, 1), &arm(50, 50, 1), 9);
        assert_eq!(d, Decision::Wait);
    }

    #[test]
    fn canary_rolls_back_when_error_rate_exceeds_threshold() {
        let d = evaluate(&spec(), 20.0, &arm(100, 0, 1), &arm(10, 2, 1), 10);
        assert!(matches!(d, Decision::Rollback(r) if r.contains("error rate 0.200")));
    }

    #[test]
    fn canary_rolls_back_when_latency_ratio_is_exceeded() {
        let d = evaluate(&spec(), 20.0, &arm(100, 0, 1), &arm(10, 0, 3), 10);
        assert!(matches!(d, Decision::Rollback(r) if r.contains("max_latency_ratio")));
        // Too few stable samples to compare latency with: no verdict on it.
        let d = evaluate(&spec(), 20.0, &arm(5, 0, 1), &arm(10, 0, 3), 10);
        assert_eq!(d, Decision::Step(60.0));
    }

    #[test]
    fn canary_steps_then_promotes() {
        let s = spec();
        assert_eq!(
            evaluate(&s, 20.0, &arm(100, 0, 1), &arm(10, 0, 1), 10),
            Decision::Step(60.0)
        );
        assert_eq!(
            evaluate(&s, 60.0, &arm(100, 0, 1), &arm(20, 0, 1), 10),
            Decision::Promote
        );
    }
}
