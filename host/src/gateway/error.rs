//! Why the request layer refused or failed a request; mapped to HTTP once,
//! in `server`.

use crate::auth::{BudgetExceeded, NotAllowed};
use crate::pipeline::{PipelineError, RuleViolation};
use crate::ratelimit::Limited;

/// Why a request was not served.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The conversation breaks a host rule (too many or too long messages).
    #[error(transparent)]
    Rules(#[from] RuleViolation),
    /// The key may not use this model or agent.
    #[error(transparent)]
    NotAllowed(#[from] NotAllowed),
    /// The key's daily budget is spent.
    #[error("daily budget exhausted for API key `{key}`")]
    BudgetExceeded {
        /// The key.
        key: String,
        /// What was spent of what.
        budget: BudgetExceeded,
    },
    /// A gateway rate limit (key tokens/min, model limit) refused it.
    #[error("{}", .0.message)]
    RateLimited(Limited),
    /// The pipeline failed it.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}
