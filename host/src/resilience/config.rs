//! The config tables this module owns — `[upstreams.<name>.breaker]`,
//! `[resilience.retry_budget]` and `[resilience.hedge]` — with their
//! defaults, which are the mechanisms' own, and their runtime forms.

use super::{BreakerSettings, BudgetSettings, HedgeSettings};
use serde::Deserialize;
use std::time::Duration;

/// `[upstreams.<name>.breaker]`: when to stop sending traffic to an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures (timeouts, 5xx, malformed bodies, slow calls)
    /// that open it.
    pub failure_threshold: u32,
    /// Seconds an open breaker refuses calls before letting probes through.
    pub recovery_timeout_s: u64,
    /// Successful probes needed to close it again.
    pub half_open_probes: u32,
    /// A call still running after this many milliseconds counts as a
    /// failure, at that moment, whatever it answers later. Absent: only
    /// `timeout_ms` makes a call a failure by its duration.
    pub slow_call_ms: Option<u64>,
}

impl Default for BreakerConfig {
    /// The breaker's own defaults ([`BreakerSettings`]).
    fn default() -> Self {
        let d = BreakerSettings::default();
        Self {
            failure_threshold: d.failure_threshold,
            recovery_timeout_s: d.recovery_timeout.as_secs(),
            half_open_probes: d.half_open_probes,
            slow_call_ms: d.slow_call.map(|d| d.as_millis() as u64),
        }
    }
}

impl BreakerConfig {
    /// The runtime form.
    pub fn settings(&self) -> BreakerSettings {
        BreakerSettings {
            failure_threshold: self.failure_threshold,
            recovery_timeout: Duration::from_secs(self.recovery_timeout_s),
            half_open_probes: self.half_open_probes,
            slow_call: self.slow_call_ms.map(Duration::from_millis),
        }
    }
}

/// `[resilience.retry_budget]`: retries as a share of recent traffic.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryBudgetConfig {
    /// Retries allowed per first attempt over the window.
    pub ratio: f64,
    /// Retries per second allowed whatever the traffic.
    pub min_per_s: f64,
    /// Length of the sliding window, seconds.
    pub window_s: u64,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self::from(BudgetSettings::default())
    }
}

impl From<BudgetSettings> for RetryBudgetConfig {
    fn from(d: BudgetSettings) -> Self {
        Self {
            ratio: d.ratio,
            min_per_s: d.min_per_s,
            window_s: d.window.as_secs(),
        }
    }
}

impl RetryBudgetConfig {
    /// The runtime form.
    pub fn settings(&self) -> BudgetSettings {
        BudgetSettings {
            ratio: self.ratio,
            min_per_s: self.min_per_s,
            window: Duration::from_secs(self.window_s),
        }
    }
}

/// `[resilience.hedge]`: when a slow attempt gets a copy on another
/// upstream, and how many may, per upstream.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HedgeConfig {
    /// Whether slow attempts are hedged at all.
    pub enabled: bool,
    /// Hedge an attempt still unanswered after this many milliseconds.
    /// Absent: after its upstream's observed p95 (of answered calls; of
    /// the first event for streams), once it has 20 such samples.
    pub delay_ms: Option<u64>,
    /// Hedges allowed per first attempt on the slow upstream, over the
    /// window.
    pub ratio: f64,
    /// Hedges per second allowed whatever the traffic.
    pub min_per_s: f64,
    /// Length of the budget's sliding window, seconds.
    pub window_s: u64,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        let d = HedgeSettings::default();
        let budget = RetryBudgetConfig::from(d.budget);
        Self {
            enabled: d.enabled,
            delay_ms: d.delay.map(|d| d.as_millis() as u64),
            ratio: budget.ratio,
            min_per_s: budget.min_per_s,
            window_s: budget.window_s,
        }
    }
}

impl HedgeConfig {
    /// The runtime form.
    pub fn settings(&self) -> HedgeSettings {
        HedgeSettings {
            enabled: self.enabled,
            delay: self.delay_ms.map(Duration::from_millis),
            budget: RetryBudgetConfig {
                ratio: self.ratio,
                min_per_s: self.min_per_s,
                window_s: self.window_s,
            }
            .settings(),
        }
    }
}
