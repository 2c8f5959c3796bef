//! Resilience mechanisms the host applies around upstream calls, whatever
//! the plugins decide: circuit breakers (counting slow calls too), retry
//! delays with full jitter and `Retry-After` floors, retry and hedge
//! budgets, latency quantiles for hedging, bulkheads and alerts, combined
//! per upstream in [`UpstreamHealth`]; [`config`] holds the tables that
//! configure them. The completion path
//! (`pipeline/completion.rs`) consults them; each is tested on its own here.

mod alert;
mod backoff;
mod breaker;
mod budget;
mod bulkhead;
pub mod config;
mod health;
mod latency;

pub use alert::{Alert, Alerter};
pub use backoff::retry_delay;
pub use breaker::{Breaker, BreakerSettings, Permit};
pub use budget::{BudgetSettings, RetryBudget};
pub use bulkhead::{Bulkhead, Slot};
pub use config::{BreakerConfig, HedgeConfig, RetryBudgetConfig};
pub use health::{
    DEFAULT_UPSTREAM_TIMEOUT, HealthSettings, HedgeSettings, Refusal, UpstreamHealth,
    counts_against_upstream,
};
pub use latency::LatencyWindow;
