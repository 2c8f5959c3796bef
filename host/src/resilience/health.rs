//! The health of one upstream, owned in one place: its circuit breaker,
//! retry budget, bulkhead, `Retry-After` cooldown, moving averages of
//! latency and errors, and the bounds of one call.
//!
//! The completion path asks it two questions — may a call go ahead now
//! ([`UpstreamHealth::gate`]), and what happened ([`UpstreamHealth::record`])
//! — and routers, readiness and metrics read it. Time is passed in where a
//! decision depends on it, so the rules are tested without sleeping.

use super::{Breaker, BreakerSettings, BudgetSettings, Bulkhead, Permit, RetryBudget, Slot};
use crate::domain::{CircuitState, Failure};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default bound of one upstream call (`upstreams.<name>.timeout_ms`): long
/// enough for a slow model's whole answer, short enough that a hung
/// provider is given up on while the request's own deadline still leaves
/// room for a fallback.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// Weight of the newest sample in the moving averages.
const EWMA_ALPHA: f64 = 0.2;

/// How one upstream is guarded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HealthSettings {
    /// Bound of one attempt.
    pub timeout: Duration,
    /// Streams: bound on the wait for the first event.
    pub first_token_timeout: Duration,
    /// Streams: bound on a silence between events.
    pub idle_timeout: Duration,
    /// Circuit breaker thresholds.
    pub breaker: BreakerSettings,
    /// Most calls in flight; unbounded when `None`.
    pub max_concurrent: Option<u32>,
    /// Retry budget.
    pub retry_budget: BudgetSettings,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self::with_timeout(DEFAULT_UPSTREAM_TIMEOUT)
    }
}

impl HealthSettings {
    /// Default guards with `timeout` per attempt (also the stream bounds).
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            timeout,
            first_token_timeout: timeout,
            idle_timeout: timeout,
            breaker: BreakerSettings::default(),
            max_concurrent: None,
            retry_budget: BudgetSettings::default(),
        }
    }
}

/// Why a call may not go ahead now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The upstream asked not to be called for this long (its `Retry-After`).
    CoolingDown(Duration),
    /// Its bulkhead is full: not a failure of the upstream, go elsewhere.
    Saturated,
    /// Its breaker is open.
    CircuitOpen,
}

/// Moving averages of latency (ms) and error rate, for routers.
#[derive(Debug, Default)]
struct Averages {
    latency_ms: f64,
    error_rate: f64,
    seeded: bool,
}

/// Everything the host tracks about one upstream.
#[derive(Debug)]
pub struct UpstreamHealth {
    settings: HealthSettings,
    breaker: Breaker,
    budget: RetryBudget,
    bulkhead: Bulkhead,
    averages: Mutex<Averages>,
    /// Until when the upstream asked not to be called.
    cooldown: Mutex<Option<Instant>>,
}

/// Whether a failure says the upstream is unhealthy (and counts towards
/// opening its breaker). Rate limits and request-specific refusals (a 4xx,
/// `ClientError` included) mean a healthy upstream said no to this request.
pub fn counts_against_upstream(failure: &Failure) -> bool {
    match failure {
        Failure::Timeout | Failure::InvalidResponse(_) => true,
        Failure::UpstreamStatus(status) => *status >= 500,
        _ => false,
    }
}

impl UpstreamHealth {
    /// A healthy upstream (closed breaker, empty budget window) as of `now`.
    pub fn new(settings: HealthSettings, now: Instant) -> Self {
        Self {
            breaker: Breaker::new(settings.breaker),
            budget: RetryBudget::new(settings.retry_budget, now),
            bulkhead: Bulkhead::new(settings.max_concurrent),
            averages: Mutex::default(),
            cooldown: Mutex::new(None),
            settings,
        }
    }

    /// How it is guarded.
    pub fn settings(&self) -> &HealthSettings {
        &self.settings
    }

    /// The breaker's state at `now`.
    pub fn circuit(&self, now: Instant) -> CircuitState {
        self.breaker.state(now)
    }

    /// Moving averages `(latency ms, error rate)` for routers.
    pub fn averages(&self) -> (f64, f64) {
        let a = self.averages.lock().unwrap_or_else(|p| p.into_inner());
        (a.latency_ms, a.error_rate)
    }

    /// How long the upstream's `Retry-After` still holds at `now`.
    pub fn cooling(&self, now: Instant) -> Option<Duration> {
        let until = (*self.cooldown.lock().unwrap_or_else(|p| p.into_inner()))?;
        let left = until.saturating_duration_since(now);
        (!left.is_zero()).then_some(left)
    }

    /// Whether a call could go ahead at `now`: breaker not open, no
    /// `Retry-After` pending, room in the bulkhead (a hint; [`Self::gate`]
    /// decides).
    pub fn healthy(&self, now: Instant) -> bool {
        self.breaker.state(now) != CircuitState::Open
            && self.cooling(now).is_none()
            && self.bulkhead.has_room()
    }

    /// The checks before a call, in the order that leaks nothing: a pending
    /// `Retry-After` refuses first, then the bulkhead (a place is taken),
    /// then the breaker (a half-open probe is taken only when the call will
    /// really be made). The place is held until the returned slot drops.
    pub fn gate(&self, now: Instant) -> Result<Slot, Refusal> {
        if let Some(wait) = self.cooling(now) {
            return Err(Refusal::CoolingDown(wait));
        }
        let slot = self.bulkhead.try_enter().ok_or(Refusal::Saturated)?;
        if self.breaker.acquire(now) == Permit::Refused {
            return Err(Refusal::CircuitOpen);
        }
        Ok(slot)
    }

    /// Records a call's outcome: averages, breaker, and a 429's hint as a
    /// cooldown every request honours.
    pub fn record(&self, latency: Duration, outcome: Result<(), &Failure>, now: Instant) {
        {
            let mut a = self.averages.lock().unwrap_or_else(|p| p.into_inner());
            let ms = latency.as_secs_f64() * 1000.0;
            // A refused request is the client's mistake, not an upstream error.
            let failed = outcome.is_err_and(|f| !f.is_client_error());
            let err = if failed { 1.0 } else { 0.0 };
            if a.seeded {
                a.latency_ms += EWMA_ALPHA * (ms - a.latency_ms);
                a.error_rate += EWMA_ALPHA * (err - a.error_rate);
            } else {
                *a = Averages {
                    latency_ms: ms,
                    error_rate: err,
                    seeded: true,
                };
            }
        }
        let healthy = outcome.is_ok() || outcome.is_err_and(|f| !counts_against_upstream(f));
        self.breaker.record(healthy, now);
        if let Err(Failure::RateLimited(Some(ms))) = outcome {
            self.cool_down(now, Duration::from_millis(u64::from(*ms)));
        }
    }

    /// Holds calls off until `now + wait`, unless a later hint holds already.
    fn cool_down(&self, now: Instant, wait: Duration) {
        let mut until = self.cooldown.lock().unwrap_or_else(|p| p.into_inner());
        let end = now + wait;
        if until.is_none_or(|u| u < end) {
            *until = Some(end);
        }
    }

    /// Counts a first attempt (new traffic) in the retry budget.
    pub fn count_first_attempt(&self, now: Instant) {
        self.budget.deposit(now);
    }

    /// Takes a retry from the budget; `false` when it is spent.
    pub fn take_retry(&self, now: Instant) -> bool {
        self.budget.try_withdraw(now)
    }

    /// How long one attempt may take with `remaining` of the request left;
    /// `None` once the deadline has passed.
    pub fn attempt_bound(&self, remaining: Duration) -> Option<Duration> {
        (!remaining.is_zero()).then(|| self.settings.timeout.min(remaining))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> HealthSettings {
        HealthSettings {
            max_concurrent: Some(1),
            breaker: BreakerSettings {
                failure_threshold: 1,
                recovery_timeout: Duration::from_secs(10),
                half_open_probes: 1,
            },
            ..HealthSettings::default()
        }
    }

    #[test]
    fn a_rate_limit_hint_refuses_calls_until_it_expires() {
        let t0 = Instant::now();
        let h = UpstreamHealth::new(settings(), t0);
        h.record(Duration::ZERO, Err(&Failure::RateLimited(Some(500))), t0);
        assert_eq!(
            h.gate(t0).unwrap_err(),
            Refusal::CoolingDown(Duration::from_millis(500))
        );
        assert_eq!(
            h.circuit(t0),
            CircuitState::Closed,
            "a 429 is not ill health"
        );
        assert!(h.gate(t0 + Duration::from_millis(500)).is_ok());
    }

    #[test]
    fn a_full_bulkhead_refuses_before_the_breaker_is_asked() {
        let t0 = Instant::now();
        let h = UpstreamHealth::new(settings(), t0);
        let held = h.gate(t0).unwrap();
        assert_eq!(h.gate(t0).unwrap_err(), Refusal::Saturated);
        assert!(!h.healthy(t0));
        drop(held);
        h.record(Duration::ZERO, Err(&Failure::UpstreamStatus(500)), t0);
        assert_eq!(h.gate(t0).unwrap_err(), Refusal::CircuitOpen);
    }

    #[test]
    fn attempts_are_cut_to_what_is_left_of_the_request() {
        let h = UpstreamHealth::new(settings(), Instant::now());
        assert_eq!(
            h.attempt_bound(Duration::from_secs(2)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            h.attempt_bound(Duration::from_secs(90)),
            Some(DEFAULT_UPSTREAM_TIMEOUT)
        );
        assert_eq!(h.attempt_bound(Duration::ZERO), None);
    }
}
