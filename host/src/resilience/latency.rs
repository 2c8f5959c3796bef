//! A latency quantile estimate over an upstream's recent good calls.
//!
//! Hedging waits "as long as a good answer usually takes" before sending a
//! second copy of a request, so it needs a tail quantile (p95) per
//! upstream, not the moving average routers get. The estimate is the exact
//! quantile of the last [`WINDOW`] samples: small enough to follow a
//! provider that slows down within seconds at production rates, large
//! enough that one outlier moves a p95 by one rank. Only calls that
//! answered are sampled: a timeout or a cancelled call says "longer than
//! this", not how long, and counting its cut-off time would let hedging
//! feed its own delay.

use std::time::Duration;

/// Samples kept.
pub const WINDOW: usize = 128;

/// Samples needed before a quantile is given: below this a p95 is a guess.
pub const MIN_SAMPLES: usize = 20;

/// The last [`WINDOW`] latencies, and the last quantile asked for.
#[derive(Debug, Default)]
pub struct LatencyWindow {
    /// Ring buffer of samples, in microseconds.
    samples: Vec<u64>,
    /// Where the next sample goes once the ring is full.
    next: usize,
    /// Samples recorded since the cached quantile was computed.
    since: usize,
    /// `(q, value)` as last computed.
    cached: Option<(f64, Duration)>,
}

impl LatencyWindow {
    /// Adds a good call's latency.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if self.samples.len() < WINDOW {
            self.samples.push(micros);
        } else {
            self.samples[self.next] = micros;
            self.next = (self.next + 1) % WINDOW;
        }
        self.since += 1;
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The `q` quantile (nearest rank) of the samples held, once there are
    /// [`MIN_SAMPLES`]. Sorting 128 numbers costs about a microsecond, and
    /// the result is kept until 8 more samples arrive, so asking on every
    /// request is cheap.
    pub fn quantile(&mut self, q: f64) -> Option<Duration> {
        if self.samples.len() < MIN_SAMPLES {
            return None;
        }
        if let Some((cached_q, value)) = self.cached
            && cached_q == q
            && self.since < 8
        {
            return Some(value);
        }
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let rank =
            ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        let value = Duration::from_micros(sorted[rank - 1]);
        self.cached = Some((q, value));
        self.since = 0;
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn no_quantile_before_enough_samples() {
        let mut w = LatencyWindow::default();
        for _ in 0..MIN_SAMPLES - 1 {
            w.record(MS(10));
        }
        assert_eq!(w.quantile(0.95), None);
        w.record(MS(10));
        assert_eq!(w.quantile(0.95), Some(MS(10)));
    }

    #[test]
    fn p95_of_a_hundred_samples_is_the_ninety_fifth() {
        let mut w = LatencyWindow::default();
        for ms in (1..=100).rev() {
            w.record(MS(ms));
        }
        assert_eq!(w.quantile(0.95), Some(MS(95)));
        assert_eq!(w.quantile(0.5), Some(MS(50)));
        assert_eq!(w.quantile(1.0), Some(MS(100)));
    }

    #[test]
    fn old_samples_age_out_so_the_estimate_follows_a_slowdown() {
        let mut w = LatencyWindow::default();
        for _ in 0..WINDOW {
            w.record(MS(20));
        }
        assert_eq!(w.quantile(0.95), Some(MS(20)));
        // The provider slows down to 300 ms: within one window the p95
        // is the new latency, not a blend that hedges too early.
        for _ in 0..WINDOW / 10 {
            w.record(MS(300));
        }
        assert_eq!(w.quantile(0.95), Some(MS(300)));
        for _ in 0..WINDOW {
            w.record(MS(300));
        }
        assert_eq!(w.quantile(0.5), Some(MS(300)));
        assert_eq!(w.len(), WINDOW);
    }
}
