//! The `validator` world: decide whether messages may pass, or rewrite them.
//!
//! A validator runs at the `input` stage (before an agent or model sees the
//! request) and at the `output` stage (before the client sees the answer).
//!
//! ```no_run
//! use agentrouter_sdk::validator::{config, Message, Stage, Validator, Verdict};
//!
//! struct MaxLength;
//!
//! impl Validator for MaxLength {
//!     fn validate(stage: Stage, messages: Vec<Message>) -> Verdict {
//!         let limit: usize = config::parse_or("max_chars", 10_000);
//!         let total: usize = messages.iter().map(|m| m.content.chars().count()).sum();
//!         match stage {
//!             Stage::Input if total > limit => {
//!                 Verdict::Reject(format!("input has {total} characters, limit is {limit}"))
//!             }
//!             _ => Verdict::Allow,
//!         }
//!     }
//! }
//!
//! agentrouter_sdk::export_validator!(MaxLength);
//! ```

/// Generated bindings for the `validator` world.
#[allow(missing_docs, clippy::all)] // generated code
pub mod bindings {
    wit_bindgen::generate!({
        world: "validator",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_validator",
        default_bindings_module: "agentrouter_sdk::validator::bindings",
        runtime_path: "agentrouter_sdk::__wit_bindgen::rt",
    });
}

world_helpers!(self::bindings);

pub use bindings::Guest as Validator;
pub use bindings::agentrouter::plugin::log::Level;
pub use bindings::agentrouter::plugin::types::{Message, Role, Stage, ToolCall, Verdict};
