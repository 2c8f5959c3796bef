//! The `recovery` world: decide what to do after a failed upstream call.
//!
//! The host asks the strategy after every failure and carries out the action
//! it returns, within host-enforced bounds: a strategy can ask for a retry,
//! but never for more attempts, more time or more retry budget than the
//! operator allows.
//!
//! ```no_run
//! use agentrouter_sdk::recovery::{Action, Failure, FailureContext, Recovery};
//!
//! struct Backoff;
//!
//! impl Recovery for Backoff {
//!     fn recover(ctx: FailureContext) -> Action {
//!         match ctx.failure {
//!             Failure::RateLimited(hint) => Action::Retry(hint.unwrap_or(250)),
//!             Failure::Timeout => match ctx.alternatives.first() {
//!                 Some(other) => Action::Fallback(other.clone()),
//!                 None => Action::Fail(false),
//!             },
//!             _ => Action::Fail(true),
//!         }
//!     }
//! }
//!
//! agentrouter_sdk::export_recovery!(Backoff);
//! ```

/// Generated bindings for the `recovery` world.
#[allow(missing_docs, clippy::all)] // generated code
pub mod bindings {
    wit_bindgen::generate!({
        world: "recovery",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_recovery",
        default_bindings_module: "agentrouter_sdk::recovery::bindings",
        runtime_path: "agentrouter_sdk::__wit_bindgen::rt",
    });
}

world_helpers!(self::bindings);

pub use bindings::Guest as Recovery;
pub use bindings::agentrouter::plugin::log::Level;
pub use bindings::agentrouter::plugin::types::{
    Action, CompletionRequest, Failure, FailureContext, Message, Role,
};
