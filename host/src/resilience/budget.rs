//! A retry budget: retries are capped as a fraction of recent traffic.
//!
//! During an outage every request fails and every failure wants a retry; if
//! each is granted, the failing upstream receives a multiple of its normal
//! load exactly when it can least take it. The budget allows
//! `ratio × requests` retries over a sliding window, plus a small floor of
//! `min_per_s` so that a quiet service can still retry at all. Time is
//! passed in so the window is tested without sleeping.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Budget thresholds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetSettings {
    /// Retries allowed per first attempt in the window.
    pub ratio: f64,
    /// Retries per second allowed whatever the traffic.
    pub min_per_s: f64,
    /// Length of the sliding window.
    pub window: Duration,
}

impl Default for BudgetSettings {
    /// Half a retry per first attempt, plus 10 per second, over 10 s. A
    /// lone upstream failing a share `p` of its calls independently needs
    /// `p + p² + p³ + p⁴ ≈ p / (1 - p)` retries per request for five
    /// attempts: 0.43 at 30 % (which is what the other upstream of a pair
    /// faces while its partner cools down after a 429), so 0.5 rides
    /// through error rates up to a third, and an upstream failing more
    /// than that gets at most 1.5 times its load from this gateway until
    /// its breaker opens.
    fn default() -> Self {
        Self {
            ratio: 0.5,
            min_per_s: 10.0,
            window: Duration::from_secs(10),
        }
    }
}

/// Slots the window is divided into; a request ages out one slot at a time.
const SLOTS: usize = 10;

#[derive(Debug)]
struct Window {
    /// Per slot: first attempts and retries.
    slots: [(u64, u64); SLOTS],
    /// Index of the slot `epoch` falls in, and that slot's start.
    head: usize,
    head_start: Instant,
}

/// A sliding-window retry budget for one upstream.
#[derive(Debug)]
pub struct RetryBudget {
    settings: BudgetSettings,
    window: Mutex<Window>,
}

impl RetryBudget {
    /// An empty budget whose window starts at `now`.
    pub fn new(settings: BudgetSettings, now: Instant) -> Self {
        Self {
            settings,
            window: Mutex::new(Window {
                slots: [(0, 0); SLOTS],
                head: 0,
                head_start: now,
            }),
        }
    }

    fn slot_len(&self) -> Duration {
        (self.settings.window / SLOTS as u32).max(Duration::from_millis(1))
    }

    /// Moves the head to the slot holding `now`, clearing slots passed over.
    fn advance(&self, w: &mut Window, now: Instant) {
        let len = self.slot_len();
        let passed = (now.saturating_duration_since(w.head_start).as_nanos() / len.as_nanos())
            .min(SLOTS as u128) as usize;
        for _ in 0..passed {
            w.head = (w.head + 1) % SLOTS;
            w.slots[w.head] = (0, 0);
        }
        if passed > 0 {
            w.head_start = if passed == SLOTS {
                now
            } else {
                w.head_start + len * passed as u32
            };
        }
    }

    /// Counts a first attempt (not a retry) made at `now`.
    pub fn deposit(&self, now: Instant) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        self.advance(&mut w, now);
        let head = w.head;
        w.slots[head].0 += 1;
    }

    /// Takes one retry from the budget if it has one left at `now`.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        self.advance(&mut w, now);
        let (requests, retries) = w
            .slots
            .iter()
            .fold((0u64, 0u64), |(q, r), s| (q + s.0, r + s.1));
        let allowed = self.settings.ratio * requests as f64
            + self.settings.min_per_s * self.settings.window.as_secs_f64();
        if (retries as f64) < allowed {
            let head = w.head;
            w.slots[head].1 += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_s: f64, now: Instant) -> RetryBudget {
        RetryBudget::new(
            BudgetSettings {
                ratio,
                min_per_s,
                window: Duration::from_secs(10),
            },
            now,
        )
    }

    #[test]
    fn retries_are_capped_at_the_ratio_of_requests() {
        let t0 = Instant::now();
        let b = budget(0.2, 0.0, t0);
        for _ in 0..100 {
            b.deposit(t0);
        }
        let granted = (0..100).filter(|_| b.try_withdraw(t0)).count();
        assert_eq!(granted, 20);
    }

    #[test]
    fn the_floor_allows_retries_without_traffic() {
        let t0 = Instant::now();
        let b = budget(0.2, 1.0, t0);
        // 1 per second over a 10 s window.
        assert_eq!((0..50).filter(|_| b.try_withdraw(t0)).count(), 10);
    }

    #[test]
    fn old_traffic_and_retries_age_out_of_the_window() {
        let t0 = Instant::now();
        let b = budget(0.5, 0.0, t0);
        for _ in 0..10 {
            b.deposit(t0);
        }
        assert_eq!((0..10).filter(|_| b.try_withdraw(t0)).count(), 5);
        // Half a window later the same traffic is still counted.
        assert!(!b.try_withdraw(t0 + Duration::from_secs(5)));
        // A whole window later both requests and retries are forgotten.
        let later = t0 + Duration::from_secs(11);
        assert!(!b.try_withdraw(later));
        for _ in 0..4 {
            b.deposit(later);
        }
        assert_eq!((0..10).filter(|_| b.try_withdraw(later)).count(), 2);
    }
}
