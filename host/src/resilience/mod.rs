//! Resilience mechanisms the host applies around upstream calls, whatever
//! the plugins decide: circuit breakers now; retries with jitter, retry
//! budgets and bulkheads join them here.

mod breaker;

pub use breaker::{Breaker, BreakerSettings, Permit};
