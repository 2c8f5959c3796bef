//! `worker`: an agent that answers a task in one configured role.
//!
//! It makes a single completion, without tools, and counts the tasks it has
//! handled in its key/value store to show that plugins can keep state.
#![warn(missing_docs)]

use agentrouter_sdk::agent::{
    Agent, CompletionRequest, Failure, Message, Task, TaskResult, config, kv, llm,
};

/// Key/value key of the handled-task counter.
pub const COUNTER_KEY: &str = "tasks_handled";

/// The system prompt for a role and its instructions.
///
/// Trailing whitespace is trimmed so that empty instructions leave no dangling
/// space after the role sentence.
pub fn system_prompt(role: &str, instructions: &str) -> String {
    format!("You are the {role}. {instructions}")
        .trim_end()
        .to_string()
}

/// The counter value after one more task, given its stored bytes.
///
/// The counter is a little-endian `u64`; anything else (absent, or written
/// in another shape) restarts it rather than failing the task.
pub fn next_count(stored: Option<&[u8]>) -> u64 {
    let current = stored
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    current.saturating_add(1)
}

/// Bumps the handled-task counter. The counter is a demonstration, so store
/// errors are ignored instead of failing the task.
fn count_task() {
    let next = next_count(kv::get(COUNTER_KEY).as_deref());
    let _ = kv::set(COUNTER_KEY, &next.to_le_bytes(), None);
}

/// The exported agent.
pub struct Worker;

impl Agent for Worker {
    fn handle(task: Task) -> Result<TaskResult, Failure> {
        count_task();
        let role = config::get_or("role", "assistant");
        let instructions = config::get_or("instructions", "");
        let mut messages = Vec::with_capacity(1 + task.input.len());
        messages.push(Message::system(system_prompt(&role, &instructions)));
        messages.extend(task.input);
        let completion = llm::complete(&CompletionRequest {
            model: config::get_or("model", ""),
            messages,
            tools: Vec::new(),
            // Unset or unparsable values leave the choice to the upstream.
            temperature: config::get("temperature").and_then(|v| v.trim().parse().ok()),
            max_tokens: config::get("max_tokens").and_then(|v| v.trim().parse().ok()),
            metadata: task.metadata,
        })?;
        Ok(TaskResult {
            output: completion.message,
            usage: completion.usage,
        })
    }
}

agentrouter_sdk::export_agent!(Worker);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_names_the_role() {
        assert_eq!(
            system_prompt("researcher", "Cite sources."),
            "You are the researcher. Cite sources."
        );
        assert_eq!(system_prompt("assistant", ""), "You are the assistant.");
    }

    #[test]
    fn counter_starts_at_one_and_counts_up() {
        assert_eq!(next_count(None), 1);
        assert_eq!(next_count(Some(&41u64.to_le_bytes())), 42);
        assert_eq!(next_count(Some(b"junk")), 1);
        assert_eq!(next_count(Some(&u64::MAX.to_le_bytes())), u64::MAX);
    }
}
