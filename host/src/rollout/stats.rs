//! Per-arm counters of a rollout, and the statistics read from them.
//!
//! Counters are plain atomics: the request path only ever adds to them, and
//! the controller and the admin API read snapshots. A snapshot taken while
//! calls finish may be off by one call between fields, which no decision
//! here is sensitive to.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Calls, errors and latency of one arm (stable or candidate) of a rollout.
#[derive(Debug, Default)]
pub struct ArmStats {
    calls: AtomicU64,
    errors: AtomicU64,
    micros: AtomicU64,
}

/// A point-in-time copy of [`ArmStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ArmSnapshot {
    /// Calls made.
    pub calls: u64,
    /// Calls that failed (a plugin error, or an agent's failure).
    pub errors: u64,
    /// Total time in calls, microseconds.
    pub micros: u64,
    /// `errors / calls` (0 without calls).
    pub error_rate: f64,
    /// Mean latency in milliseconds (0 without calls).
    pub mean_latency_ms: f64,
}

impl ArmStats {
    /// Counters starting from persisted values (a resumed rollout).
    pub fn starting_at(calls: u64, errors: u64, micros: u64) -> Self {
        Self {
            calls: AtomicU64::new(calls),
            errors: AtomicU64::new(errors),
            micros: AtomicU64::new(micros),
        }
    }

    /// Counts one call.
    pub fn record(&self, elapsed: Duration, failed: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Current values with derived rates.
    pub fn snapshot(&self) -> ArmSnapshot {
        let calls = self.calls.load(Ordering::Relaxed);
        let errors = self.errors.load(Ordering::Relaxed);
        let micros = self.micros.load(Ordering::Relaxed);
        let (error_rate, mean_latency_ms) = if calls == 0 {
            (0.0, 0.0)
        } else {
            (
                errors as f64 / calls as f64,
                micros as f64 / calls as f64 / 1000.0,
            )
        };
        ArmSnapshot {
            calls,
            errors,
            micros,
            error_rate,
            mean_latency_ms,
        }
    }
}

/// A two-proportion z-test of the arms' error rates.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ZTest {
    /// `(p_candidate - p_stable) / standard error`; positive when the
    /// candidate fails more often.
    pub z: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// Whether `p_value < 0.05`.
    pub significant: bool,
}

/// Tests whether two arms' error rates differ, pooling them under the null
/// hypothesis. With no calls in an arm, or no variance at all (both arms
/// always or never failing), there is no evidence of a difference: z = 0, p = 1.
pub fn two_proportion_z_test(stable: &ArmSnapshot, candidate: &ArmSnapshot) -> ZTest {
    let (n1, n2) = (stable.calls as f64, candidate.calls as f64);
    let none = ZTest {
        z: 0.0,
        p_value: 1.0,
        significant: false,
    };
    if n1 == 0.0 || n2 == 0.0 {
        return none;
    }
    let (p1, p2) = (stable.errors as f64 / n1, candidate.errors as f64 / n2);
    let pooled = (stable.errors + candidate.errors) as f64 / (n1 + n2);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if se == 0.0 || !se.is_finite() {
        return none;
    }
    let z = (p2 - p1) / se;
    let p_value = (2.0 * (1.0 - normal_cdf(z.abs()))).clamp(0.0, 1.0);
    ZTest {
        z,
        p_value,
        significant: p_value < 0.05,
    }
}

/// The standard normal CDF, through erf (Abramowitz & Stegun 7.1.26, error
/// below 1.5e-7: plenty for a significance flag).
fn normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

fn erf(x: f64) -> f64 {
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    sign * (1.0 - poly * (-x * x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(calls: u64, errors: u64) -> ArmSnapshot {
        ArmStats::starting_at(calls, errors, 0).snapshot()
    }

    #[test]
    fn z_test_matches_a_textbook_example() {
        // 10/100 vs 25/100 failures: pooled p = 0.175, z ≈ 2.7915, p ≈ 0.00525.
        let t = two_proportion_z_test(&arm(100, 10), &arm(100, 25));
        assert!((t.z - 2.7915).abs() < 0.001, "{t:?}");
        assert!((t.p_value - 0.00525).abs() < 0.00005, "{t:?}");
        assert!(t.significant);
    }

    #[test]
    fn z_test_sees_no_difference_without_evidence() {
        let same = two_proportion_z_test(&arm(50, 5), &arm(50, 5));
        assert_eq!(same.z, 0.0);
        assert!(!same.significant);
        let empty = two_proportion_z_test(&arm(0, 0), &arm(10, 10));
        assert_eq!(empty.p_value, 1.0);
        let no_variance = two_proportion_z_test(&arm(10, 0), &arm(10, 0));
        assert_eq!(no_variance.p_value, 1.0);
    }

    #[test]
    fn snapshot_derives_rates() {
        let s = ArmStats::starting_at(4, 1, 8000).snapshot();
        assert_eq!(s.error_rate, 0.25);
        assert_eq!(s.mean_latency_ms, 2.0);
    }
}
