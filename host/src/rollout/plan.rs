//! What a rollout is: its mode and thresholds ([`RolloutSpec`]), and the live
//! state of one in progress ([`Rollout`]): the candidate, the current split,
//! per-arm counters, shadow diffs and how it ended.

use super::stats::{ArmSnapshot, ArmStats, ZTest, two_proportion_z_test};
use crate::domain::Failure;
use crate::runtime::{Plugin, PluginError, PluginIdentity};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shadow samples kept per rollout (the most recent ones).
pub const SHADOW_SAMPLES: usize = 16;
/// Longest text kept per side of a shadow sample.
const SAMPLE_CHARS: usize = 240;

/// How a candidate gets traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A random `percent` of calls go to the candidate; a controller steps the
    /// share up while it stays healthy, then promotes it, or rolls it back.
    Canary,
    /// The stable version answers every call; `percent` of calls also run on
    /// the candidate, off the response path, and the outputs are compared.
    Shadow,
    /// Sticky split: each client (and end user) hashes to one arm, `percent`
    /// of them to the candidate. Promotion is the operator's decision.
    Ab,
}

impl Mode {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Canary => "canary",
            Mode::Shadow => "shadow",
            Mode::Ab => "ab",
        }
    }
}

/// Body of `POST /admin/plugins/{name}/rollout`; unset fields take the
/// defaults in [`RolloutRequest::resolve`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    /// The mode.
    pub mode: Mode,
    /// Digest of an uploaded candidate; default: the slot's latest upload.
    #[serde(default)]
    pub candidate: Option<String>,
    /// Starting share of the candidate, 0–100.
    #[serde(default)]
    pub percent: Option<f64>,
    /// Canary: percentage points added per healthy evaluation.
    #[serde(default)]
    pub step: Option<f64>,
    /// Canary: seconds between evaluations (fractions allowed).
    #[serde(default)]
    pub interval_s: Option<f64>,
    /// Canary: highest tolerated candidate error rate, 0–1.
    #[serde(default)]
    pub max_error_rate: Option<f64>,
    /// Canary: highest tolerated candidate/stable mean-latency ratio.
    #[serde(default)]
    pub max_latency_ratio: Option<f64>,
    /// Canary: candidate calls needed before each decision.
    #[serde(default)]
    pub min_samples: Option<u64>,
}

/// A rollout's settings, defaults filled in and checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutSpec {
    /// The mode.
    pub mode: Mode,
    /// Starting share of the candidate, percent.
    pub percent: f64,
    /// Percentage points per canary step.
    pub step: f64,
    /// Seconds between canary evaluations.
    pub interval_s: f64,
    /// Highest tolerated candidate error rate.
    pub max_error_rate: f64,
    /// Highest tolerated candidate/stable mean-latency ratio.
    pub max_latency_ratio: f64,
    /// Candidate calls needed before each canary decision.
    pub min_samples: u64,
}

/// A rollout setting outside its range, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rollout `{field}` is out of range: {allowed}")]
pub struct OutOfRange {
    /// The field of the request, e.g. `percent`.
    pub field: &'static str,
    /// What it may be, e.g. `0 to 100`.
    pub allowed: &'static str,
}

impl RolloutRequest {
    /// Fills in defaults (canary 10% stepping by 10 every 30 s, 5% errors,
    /// 3× latency, 20 samples; shadow mirrors 100%; A/B splits 50/50) and
    /// checks ranges, naming the offending field.
    pub fn resolve(&self) -> Result<RolloutSpec, OutOfRange> {
        let default_percent = match self.mode {
            Mode::Canary => 10.0,
            Mode::Shadow => 100.0,
            Mode::Ab => 50.0,
        };
        let spec = RolloutSpec {
            mode: self.mode,
            percent: self.percent.unwrap_or(default_percent),
            step: self.step.unwrap_or(10.0),
            interval_s: self.interval_s.unwrap_or(30.0),
            max_error_rate: self.max_error_rate.unwrap_or(0.05),
            max_latency_ratio: self.max_latency_ratio.unwrap_or(3.0),
            min_samples: self.min_samples.unwrap_or(20),
        };
        let checks = [
            ("percent", (0.0..=100.0).contains(&spec.percent), "0 to 100"),
            (
                "step",
                spec.step > 0.0 && spec.step <= 100.0,
                "above 0, at most 100",
            ),
            (
                "interval_s",
                spec.interval_s.is_finite() && spec.interval_s >= 0.001,
                "at least 0.001 seconds",
            ),
            (
                "max_error_rate",
                (0.0..=1.0).contains(&spec.max_error_rate),
                "0 to 1",
            ),
            (
                "max_latency_ratio",
                spec.max_latency_ratio.is_finite() && spec.max_latency_ratio > 0.0,
                "above 0",
            ),
            ("min_samples", spec.min_samples >= 1, "at least 1"),
        ];
        match checks.into_iter().find(|(_, ok, _)| !ok) {
            Some((field, _, allowed)) => Err(OutOfRange { field, allowed }),
            None => Ok(spec),
        }
    }
}

/// Where a rollout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Receiving traffic.
    Active,
    /// The candidate became the stable version.
    Promoted,
    /// The candidate was removed; the stable version kept serving.
    RolledBack,
}

/// How a shadow call compared with the stable one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShadowOutcome {
    /// Both answered, and what the comparison looks at is equal.
    Same,
    /// They differ, or only the stable version failed.
    Different,
    /// The candidate failed (stable's answer still went to the client).
    CandidateError,
}

impl ShadowOutcome {
    /// Compares two sides on their typed keys.
    pub fn of<K: PartialEq>(
        stable: &Result<K, ShadowError>,
        candidate: &Result<K, ShadowError>,
    ) -> Self {
        match (stable, candidate) {
            (_, Err(_)) => ShadowOutcome::CandidateError,
            (Ok(a), Ok(b)) if a == b => ShadowOutcome::Same,
            _ => ShadowOutcome::Different,
        }
    }
}

/// Why one side of a shadow comparison has no answer to compare.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ShadowError {
    /// The sandbox refused the call (a limit, a trap, invalid output...),
    /// as its message reads; the error itself went to the caller.
    #[error("{0}")]
    Plugin(String),
    /// An agent answered with a failure of its own.
    #[error("agent failed: {0}")]
    Agent(Failure),
}

impl From<&PluginError> for ShadowError {
    fn from(e: &PluginError) -> Self {
        ShadowError::Plugin(e.to_string())
    }
}

/// One side-by-side comparison of a shadow call.
#[derive(Clone, Debug, Serialize)]
pub struct ShadowSample {
    /// `same`, `different` or `candidate_error`.
    pub outcome: ShadowOutcome,
    /// What the stable version answered (truncated).
    pub stable: String,
    /// What the candidate answered, or its error (truncated).
    pub candidate: String,
}

/// Counts and recent samples of shadow comparisons.
#[derive(Debug, Default)]
pub struct ShadowLog {
    same: AtomicU64,
    different: AtomicU64,
    candidate_errors: AtomicU64,
    dropped: AtomicU64,
    samples: Mutex<VecDeque<ShadowSample>>,
}

/// A copy of a [`ShadowLog`], for the status.
#[derive(Clone, Debug, Serialize)]
pub struct ShadowSummary {
    /// Candidate answered like stable.
    pub same: u64,
    /// Candidate answered differently.
    pub different: u64,
    /// Candidate failed (stable's answer still went to the client).
    pub candidate_error: u64,
    /// Mirrors skipped because the shadow concurrency bound was reached.
    pub dropped: u64,
    /// Most recent comparisons, oldest first.
    pub samples: Vec<ShadowSample>,
}

fn truncate(text: &str) -> String {
    if text.chars().count() <= SAMPLE_CHARS {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(SAMPLE_CHARS).collect();
        cut.push('…');
        cut
    }
}

impl ShadowLog {
    /// Records one comparison: `stable` is what the client got (or stable's
    /// error), `candidate` the candidate's answer or error, each reduced to
    /// the key its world compares; `describe` shows a key in a sample.
    pub fn record<K: PartialEq>(
        &self,
        stable: &Result<K, ShadowError>,
        candidate: &Result<K, ShadowError>,
        describe: impl Fn(&K) -> String,
    ) {
        let outcome = ShadowOutcome::of(stable, candidate);
        match outcome {
            ShadowOutcome::Same => &self.same,
            ShadowOutcome::Different => &self.different,
            ShadowOutcome::CandidateError => &self.candidate_errors,
        }
        .fetch_add(1, Ordering::Relaxed);
        let text = |r: &Result<K, ShadowError>| match r {
            Ok(key) => truncate(&describe(key)),
            Err(e) => truncate(&format!("error: {e}")),
        };
        let sample = ShadowSample {
            outcome,
            stable: text(stable),
            candidate: text(candidate),
        };
        // Held for a push and a pop, never across an await.
        if let Ok(mut samples) = self.samples.lock() {
            if samples.len() == SHADOW_SAMPLES {
                samples.pop_front();
            }
            samples.push_back(sample);
        }
    }

    /// Counts a mirror that was skipped.
    pub fn drop_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Current counts and samples.
    pub fn summary(&self) -> ShadowSummary {
        ShadowSummary {
            same: self.same.load(Ordering::Relaxed),
            different: self.different.load(Ordering::Relaxed),
            candidate_error: self.candidate_errors.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            samples: self
                .samples
                .lock()
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

/// How a rollout ended, and what happened on the way.
#[derive(Clone, Debug)]
struct Outcome {
    phase: Phase,
    reason: Option<String>,
    events: Vec<String>,
}

/// A rollout in progress (or just finished), shared by the slot, the
/// controller and the admin API.
#[derive(Debug)]
pub struct Rollout {
    /// Its settings.
    pub spec: RolloutSpec,
    /// The version under test.
    pub candidate: Arc<Plugin>,
    /// Calls served by the stable version while the rollout ran.
    pub stable_stats: ArmStats,
    /// Calls served (or shadowed) by the candidate.
    pub candidate_stats: ArmStats,
    /// Shadow comparisons.
    pub shadow: ShadowLog,
    /// Unix seconds when it started.
    pub started_at: u64,
    /// Current candidate share in hundredths of a percent.
    basis_points: AtomicU32,
    /// Candidate calls when the split last changed (a step needs new samples).
    calls_at_last_step: AtomicU64,
    /// When its controller's next tick is due. A rollout carried over a
    /// config reload keeps its predecessor's, so reloads more frequent than
    /// `interval_s` do not restart the wait every time (and never let a
    /// tick run).
    due: Mutex<Instant>,
    outcome: Mutex<Outcome>,
}

/// The persisted part of a rollout's progress.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Progress {
    /// Current candidate share, percent.
    pub percent: f64,
    /// Stable arm: calls, errors, microseconds.
    pub stable: (u64, u64, u64),
    /// Candidate arm: calls, errors, microseconds.
    pub candidate: (u64, u64, u64),
    /// Candidate calls at the last step.
    pub calls_at_last_step: u64,
    /// Events so far.
    pub events: Vec<String>,
}

fn to_bp(percent: f64) -> u32 {
    (percent.clamp(0.0, 100.0) * 100.0).round() as u32
}

impl Rollout {
    /// A new rollout of `candidate` under `spec`, or a resumed one when
    /// `progress` is given.
    pub fn new(
        spec: RolloutSpec,
        candidate: Arc<Plugin>,
        started_at: u64,
        progress: Option<Progress>,
    ) -> Self {
        let p = progress.unwrap_or(Progress {
            percent: spec.percent,
            stable: (0, 0, 0),
            candidate: (0, 0, 0),
            calls_at_last_step: 0,
            events: Vec::new(),
        });
        Self {
            basis_points: AtomicU32::new(to_bp(p.percent)),
            stable_stats: ArmStats::starting_at(p.stable.0, p.stable.1, p.stable.2),
            candidate_stats: ArmStats::starting_at(p.candidate.0, p.candidate.1, p.candidate.2),
            calls_at_last_step: AtomicU64::new(p.calls_at_last_step),
            shadow: ShadowLog::default(),
            started_at,
            due: Mutex::new(Instant::now() + Duration::from_secs_f64(spec.interval_s)),
            outcome: Mutex::new(Outcome {
                phase: Phase::Active,
                reason: None,
                events: p.events,
            }),
            spec,
            candidate,
        }
    }

    /// When its controller's next tick is due.
    pub(super) fn due(&self) -> Instant {
        *self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets when its controller's next tick is due.
    pub(super) fn set_due(&self, due: Instant) {
        *self.due.lock().unwrap_or_else(|p| p.into_inner()) = due;
    }

    /// The candidate's current share, percent.
    pub fn percent(&self) -> f64 {
        f64::from(self.basis_points.load(Ordering::Relaxed)) / 100.0
    }

    /// The candidate's current share in hundredths of a percent.
    pub(super) fn basis_points(&self) -> u32 {
        self.basis_points.load(Ordering::Relaxed)
    }

    /// Moves the split to `percent`, marking a new step.
    pub fn set_percent(&self, percent: f64) {
        self.basis_points.store(to_bp(percent), Ordering::Relaxed);
        self.calls_at_last_step
            .store(self.candidate_stats.snapshot().calls, Ordering::Relaxed);
    }

    /// Candidate calls since the split last changed.
    pub fn candidate_calls_since_step(&self) -> u64 {
        self.candidate_stats
            .snapshot()
            .calls
            .saturating_sub(self.calls_at_last_step.load(Ordering::Relaxed))
    }

    /// Where it stands.
    pub fn phase(&self) -> Phase {
        self.outcome
            .lock()
            .map(|o| o.phase)
            .unwrap_or(Phase::Active)
    }

    /// Appends to the event log (and the tracing log).
    pub fn event(&self, text: String) {
        tracing::info!(plugin = %self.candidate.identity().name, candidate = %self.candidate.identity(), "rollout: {text}");
        if let Ok(mut o) = self.outcome.lock() {
            o.events.push(format!("{} {text}", crate::clock::unix_s()));
        }
    }

    /// Marks it finished.
    pub fn finish(&self, phase: Phase, reason: String) {
        self.event(format!("{}: {reason}", phase_name(phase)));
        if let Ok(mut o) = self.outcome.lock() {
            o.phase = phase;
            o.reason = Some(reason);
        }
    }

    /// What to persist to resume it.
    pub fn progress(&self) -> Progress {
        let arm = |s: ArmSnapshot| (s.calls, s.errors, s.micros);
        Progress {
            percent: self.percent(),
            stable: arm(self.stable_stats.snapshot()),
            candidate: arm(self.candidate_stats.snapshot()),
            calls_at_last_step: self.calls_at_last_step.load(Ordering::Relaxed),
            events: self
                .outcome
                .lock()
                .map(|o| o.events.clone())
                .unwrap_or_default(),
        }
    }

    /// The status document of the admin API.
    pub fn status(&self, stable: &PluginIdentity) -> RolloutStatus {
        let (phase, reason, events) = self
            .outcome
            .lock()
            .map(|o| (o.phase, o.reason.clone(), o.events.clone()))
            .unwrap_or((Phase::Active, None, Vec::new()));
        let stable_arm = self.stable_stats.snapshot();
        let candidate_arm = self.candidate_stats.snapshot();
        RolloutStatus {
            mode: self.spec.mode,
            phase,
            reason,
            percent: self.percent(),
            stable: stable.into(),
            candidate: self.candidate.identity().into(),
            spec: self.spec.clone(),
            started_at: self.started_at,
            arms: Arms {
                stable: stable_arm,
                candidate: candidate_arm,
            },
            ab_test: (self.spec.mode == Mode::Ab)
                .then(|| two_proportion_z_test(&stable_arm, &candidate_arm)),
            shadow: (self.spec.mode == Mode::Shadow).then(|| self.shadow.summary()),
            events,
        }
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Active => "active",
        Phase::Promoted => "promoted",
        Phase::RolledBack => "rolled back",
    }
}

/// A version as the admin API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionRef {
    /// Slot name.
    pub name: String,
    /// Version label.
    pub version: String,
    /// sha256, hex.
    pub digest: String,
}

impl From<&PluginIdentity> for VersionRef {
    fn from(id: &PluginIdentity) -> Self {
        Self {
            name: id.name.clone(),
            version: id.version.clone(),
            digest: id.digest.clone(),
        }
    }
}

/// Both arms' counters.
#[derive(Clone, Debug, Serialize)]
pub struct Arms {
    /// The stable version.
    pub stable: ArmSnapshot,
    /// The candidate.
    pub candidate: ArmSnapshot,
}

/// `GET /admin/plugins/{name}/rollout`.
#[derive(Clone, Debug, Serialize)]
pub struct RolloutStatus {
    /// The mode.
    pub mode: Mode,
    /// Active, promoted or rolled back.
    pub phase: Phase,
    /// Why it ended.
    pub reason: Option<String>,
    /// The candidate's current share, percent.
    pub percent: f64,
    /// The version serving the rest.
    pub stable: VersionRef,
    /// The version under test.
    pub candidate: VersionRef,
    /// Settings.
    pub spec: RolloutSpec,
    /// Unix seconds.
    pub started_at: u64,
    /// Per-arm counters since the rollout started.
    pub arms: Arms,
    /// A/B only: whether the error rates differ significantly.
    pub ab_test: Option<ZTest>,
    /// Shadow only: the comparison summary.
    pub shadow: Option<ShadowSummary>,
    /// What happened, oldest first (`<unix seconds> <text>`).
    pub events: Vec<String>,
}
