//! The health of one upstream, owned in one place: its circuit breaker,
//! retry and hedge budgets, bulkhead, `Retry-After` cooldown, moving
//! averages of latency and errors, the latency quantile hedging waits for,
//! and the bounds of one call.
//!
//! The completion path asks it two questions — may a call go ahead now
//! ([`UpstreamHealth::gate`]), and what happened ([`UpstreamHealth::record`])
//! — and routers, readiness and metrics read it. Time is passed in where a
//! decision depends on it, so the rules are tested without sleeping.

use super::latency::LatencyWindow;
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

/// The latency quantile an attempt must outlast before it is hedged.
pub const HEDGE_QUANTILE: f64 = 0.95;

/// When a slow attempt gets a copy on another upstream.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HedgeSettings {
    /// Whether attempts are hedged at all.
    pub enabled: bool,
    /// Fixed delay; `None`: the upstream's observed [`HEDGE_QUANTILE`].
    pub delay: Option<Duration>,
    /// Hedges as a share of the upstream's first attempts.
    pub budget: BudgetSettings,
}

impl Default for HedgeSettings {
    /// On, after the observed p95, for at most 20 % of the upstream's
    /// traffic (plus a floor of 1 per second): a p95 delay hedges about
    /// 5 % of healthy traffic, and the rest of the budget is room for an
    /// upstream whose calls hang, while a hedge can never more than
    /// double-call a fifth of the requests.
    fn default() -> Self {
        Self {
            enabled: true,
            delay: None,
            budget: BudgetSettings {
                ratio: 0.2,
                min_per_s: 1.0,
                window: Duration::from_secs(10),
            },
        }
    }
}

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
    /// Hedging of slow attempts.
    pub hedge: HedgeSettings,
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
            hedge: HedgeSettings::default(),
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
    hedges: RetryBudget,
    bulkhead: Bulkhead,
    /// Latencies of recent good calls, for the hedge delay.
    latency: Mutex<LatencyWindow>,
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
            hedges: RetryBudget::new(settings.hedge.budget, now),
            latency: Mutex::default(),
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

    /// Whether a call that took `latency` was slow enough to count as a
    /// failure (`breaker.slow_call_ms`).
    fn slow(&self, latency: Duration) -> bool {
        self.settings
            .breaker
            .slow_call
            .is_some_and(|limit| latency >= limit)
    }

    /// Records a call's outcome: averages, breaker (a slow answer counts as
    /// a failure there), the latency of a good answer, and a 429's hint as
    /// a cooldown every request honours.
    pub fn record(&self, latency: Duration, outcome: Result<(), &Failure>, now: Instant) {
        if outcome.is_ok() {
            self.latency
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(latency);
        }
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
        self.breaker.record(healthy && !self.slow(latency), now);
        if let Err(Failure::RateLimited(Some(ms))) = outcome {
            self.cool_down(now, Duration::from_millis(u64::from(*ms)));
        }
    }

    /// Records a call abandoned after `latency` because another attempt
    /// answered first. It says nothing about errors, but a call that had
    /// run past `breaker.slow_call_ms` was slow, and counts as a failure:
    /// without this an upstream whose calls hang would never open its
    /// breaker while hedges keep its clients served. A call abandoned
    /// sooner is not recorded at all: it is neither a success (that could
    /// close a half-open breaker on no evidence) nor a failure.
    pub fn record_abandoned(&self, latency: Duration, now: Instant) {
        if self.slow(latency) {
            self.breaker.record(false, now);
        }
    }

    /// How long to wait for an attempt before hedging it, at the moment:
    /// the fixed `delay_ms`, or the observed p95 of good calls once there
    /// are enough of them; `None` when hedging is off or the estimate is
    /// not there yet.
    pub fn hedge_delay(&self) -> Option<Duration> {
        let hedge = &self.settings.hedge;
        if !hedge.enabled {
            return None;
        }
        hedge.delay.or_else(|| {
            self.latency
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .quantile(HEDGE_QUANTILE)
        })
    }

    /// Takes a hedge of this upstream's attempt from its hedge budget;
    /// `false` when it is spent.
    pub fn take_hedge(&self, now: Instant) -> bool {
        self.hedges.try_withdraw(now)
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
        self.hedges.deposit(now);
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
                slow_call: None,
            },
            ..HealthSettings::default()
        }
    }

    #[test]
    fn slow_calls_open_the_breaker_when_a_threshold_is_set() {
        let t0 = Instant::now();
        let mut s = settings();
        s.breaker.slow_call = Some(Duration::from_millis(100));
        let h = UpstreamHealth::new(s, t0);
        h.record(Duration::from_millis(99), Ok(()), t0);
        assert_eq!(h.circuit(t0), CircuitState::Closed);
        h.record(Duration::from_millis(100), Ok(()), t0);
        assert_eq!(
            h.circuit(t0),
            CircuitState::Open,
            "a slow answer is a failure"
        );
        let h = UpstreamHealth::new(s, t0);
        h.record_abandoned(Duration::from_millis(50), t0);
        assert_eq!(h.circuit(t0), CircuitState::Closed);
        h.record_abandoned(Duration::from_secs(5), t0);
        assert_eq!(
            h.circuit(t0),
            CircuitState::Open,
            "so is an abandoned slow call"
        );
        let h = UpstreamHealth::new(settings(), t0);
        h.record_abandoned(Duration::from_secs(5), t0);
        assert_eq!(
            h.circuit(t0),
            CircuitState::Closed,
            "no threshold, no judgement"
        );
    }

    #[test]
    fn the_hedge_delay_is_the_p95_of_good_calls_once_known() {
        let t0 = Instant::now();
        let h = UpstreamHealth::new(settings(), t0);
        assert_eq!(h.hedge_delay(), None);
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms), Ok(()), t0);
            h.record(Duration::from_secs(9), Err(&Failure::Timeout), t0);
        }
        assert_eq!(h.hedge_delay(), Some(Duration::from_millis(95)));
        let mut fixed = settings();
        fixed.hedge.delay = Some(Duration::from_millis(40));
        assert_eq!(
            UpstreamHealth::new(fixed, t0).hedge_delay(),
            Some(Duration::from_millis(40))
        );
        fixed.hedge.enabled = false;
        assert_eq!(UpstreamHealth::new(fixed, t0).hedge_delay(), None);
    }

    #[test]
    fn hedges_are_budgeted_per_first_attempt() {
        let t0 = Instant::now();
        let mut s = settings();
        s.hedge.budget = BudgetSettings {
            ratio: 0.1,
            min_per_s: 0.0,
            window: Duration::from_secs(10),
        };
        let h = UpstreamHealth::new(s, t0);
        for _ in 0..50 {
            h.count_first_attempt(t0);
        }
        assert_eq!((0..50).filter(|_| h.take_hedge(t0)).count(), 5);
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
