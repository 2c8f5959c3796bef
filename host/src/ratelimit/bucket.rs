//! A token bucket that may go into debt, for tokens per minute.
//!
//! governor's GCRA answers "may this cell pass now?" for a cost known in
//! advance. A completion's token count is only known after the answer, so
//! this bucket is charged afterwards with the real usage and may go below
//! zero; a new request is admitted while the level is above zero, and the
//! debt delays the next admission by exactly what was overspent.

use std::time::{Duration, Instant};

/// A bucket of `capacity` tokens refilled at `capacity` per `period`.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    level: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket of `capacity`, refilled evenly over `period`.
    pub fn new(capacity: u64, period: Duration, now: Instant) -> Self {
        let capacity = capacity as f64;
        Self {
            capacity,
            per_second: capacity / period.as_secs_f64().max(f64::MIN_POSITIVE),
            level: capacity,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * self.per_second).min(self.capacity);
        self.updated = now;
    }

    /// `Ok` while the level is above zero; otherwise how long until it is.
    pub fn check(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.level > 0.0 {
            return Ok(());
        }
        // Strictly above zero: a hair more than the debt.
        let secs = (-self.level + 1e-6) / self.per_second;
        Err(Duration::from_secs_f64(secs))
    }

    /// Takes `amount` tokens, going into debt if needed.
    pub fn charge(&mut self, amount: u64, now: Instant) {
        self.refill(now);
        self.level -= amount as f64;
    }

    /// The current level (negative in debt).
    pub fn level(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_while_positive_and_waits_out_the_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(60, Duration::from_secs(60), t0);
        assert!(b.check(t0).is_ok());
        b.charge(50, t0);
        assert!(b.check(t0).is_ok(), "10 left");
        b.charge(40, t0);
        // 30 in debt at one token per second.
        let wait = b.check(t0).unwrap_err();
        assert_eq!(wait.as_secs_f64().ceil() as u64, 31);
        assert!(b.check(t0 + Duration::from_secs(29)).is_err());
        assert!(b.check(t0 + Duration::from_secs(31)).is_ok());
        // Refill stops at capacity.
        assert_eq!(b.level(t0 + Duration::from_secs(3600)), 60.0);
    }
}
