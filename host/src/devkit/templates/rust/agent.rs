//! __NAME__: an AgentRouter agent.
//!
//! Answers a task with one completion, framed by the `instructions` setting.

use agentrouter_sdk::agent::{
    Agent, CompletionRequest, Failure, Message, Task, TaskResult, config, logging,
};

struct Plugin;

impl Agent for Plugin {
    fn handle(task: Task) -> Result<TaskResult, Failure> {
        let mut messages = vec![Message::system(config::get_or(
            "instructions",
            "Answer briefly.",
        ))];
        messages.extend(task.input);
        let mut req = CompletionRequest::new(config::get_or("model", ""), messages);
        req.metadata = task.metadata;
        let answer = agentrouter_sdk::agent::llm::complete(&req)?;
        logging::info("answered");
        Ok(TaskResult {
            output: answer.message,
            usage: answer.usage,
        })
    }
}

agentrouter_sdk::export_agent!(Plugin);
