//! Resilience mechanisms the host applies around upstream calls, whatever
//! the plugins decide: circuit breakers, retry delays with full jitter and
//! `Retry-After` floors, retry budgets, bulkheads and alerts, combined per
//! upstream in [`UpstreamHealth`]. The completion path
//! (`pipeline/completion.rs`) consults them; each is tested on its own here.

mod alert;
mod backoff;
mod breaker;
mod budget;
mod bulkhead;
mod health;

pub use alert::{Alert, Alerter};
pub use backoff::retry_delay;
pub use breaker::{Breaker, BreakerSettings, Permit};
pub use budget::{BudgetSettings, RetryBudget};
pub use bulkhead::{Bulkhead, Slot};
pub use health::{
    DEFAULT_UPSTREAM_TIMEOUT, HealthSettings, Refusal, UpstreamHealth, counts_against_upstream,
};
