//! The `agent` world: solve a task, calling the LLM and other agents.
//!
//! Every call an agent makes goes back through the host's pipeline with the
//! agent's identity, budget and deadline: [`llm::complete`] uses the cache,
//! router and resilience layers; [`agents::call`] and [`agents::call_all`]
//! run other agents (the latter concurrently) under depth and cycle guards.
//! [`http::fetch`] and [`tools::list`] / [`tools::call`] (contract 0.2.0)
//! reach outside the host only as far as the operator's grant for the slot
//! allows (`[plugins.<slot>.capabilities.http]` / `.tools`); without one
//! they answer `Failure::Denied` naming the key to add, and `tools::list`
//! is empty. Credentials for granted hosts are added by the host: the
//! plugin never sees them.
//!
//! ```no_run
//! use agentrouter_sdk::agent::{
//!     config, llm, Agent, CompletionRequest, Failure, Message, Task, TaskResult,
//! };
//!
//! struct Echo;
//!
//! impl Agent for Echo {
//!     fn handle(task: Task) -> Result<TaskResult, Failure> {
//!         let mut messages = vec![Message::system(config::get_or(
//!             "instructions",
//!             "Answer briefly.",
//!         ))];
//!         messages.extend(task.input);
//!         let answer = llm::complete(&CompletionRequest {
//!             model: config::get_or("model", ""),
//!             messages,
//!             tools: Vec::new(),
//!             temperature: None,
//!             max_tokens: None,
//!             metadata: task.metadata,
//!         })?;
//!         Ok(TaskResult { output: answer.message, usage: answer.usage })
//!     }
//! }
//!
//! agentrouter_sdk::export_agent!(Echo);
//! ```

/// Generated bindings for the `agent` world.
#[allow(missing_docs, clippy::all)] // generated code
pub mod bindings {
    wit_bindgen::generate!({
        world: "agent",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_agent",
        default_bindings_module: "agentrouter_sdk::agent::bindings",
        runtime_path: "agentrouter_sdk::__wit_bindgen::rt",
    });
}

world_helpers!(self::bindings);

pub use bindings::Guest as Agent;
pub use bindings::agentrouter::plugin::log::Level;
pub use bindings::agentrouter::plugin::types::{
    Completion, CompletionRequest, Failure, Message, Role, Task, TaskResult, Tool, ToolCall, Usage,
};
pub use bindings::agentrouter::plugin::{agents, http, kv, llm, tools};

impl CompletionRequest {
    /// A request for `model` (empty: let the router choose) with these messages.
    pub fn new(model: impl Into<String>, messages: Vec<Message>) -> Self {
        Self {
            model: model.into(),
            messages,
            tools: Vec::new(),
            temperature: None,
            max_tokens: None,
            metadata: Vec::new(),
        }
    }
}

impl Task {
    /// The value of a metadata key, if present.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
