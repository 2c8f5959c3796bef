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
    /// The request is malformed or asks for what cannot be served (a
    /// Responses request that has no chat translation).
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
        /// The request field at fault.
        param: String,
    },
    /// No stored response by that id for this key (none, expired, deleted,
    /// or another key's).
    #[error("{} with id '{id}' not found.", if *previous { "Previous response" } else { "Response" })]
    ResponseNotFound {
        /// The id asked for.
        id: String,
        /// Whether it was named by `previous_response_id`.
        previous: bool,
    },
    /// The response store failed.
    #[error(transparent)]
    Store(#[from] crate::gateway::ResponseStoreError),
}
