//! `worker`: an agent that answers a task in one configured role.
//!
//! It makes a completion and counts the tasks it has handled in its
//! key/value store to show that plugins can keep state. When its slot is
//! granted MCP tools (`capabilities.tools`), it offers them to the model
//! and runs the tool calls the model asks for, up to `max_tool_rounds`
//! (setting, default 4) rounds; without a grant the tool list is empty and
//! it makes one completion, as before.
#![warn(missing_docs)]

use agentrouter_sdk::agent::{
    Agent, CompletionRequest, Failure, Message, Role, Task, TaskResult, Tool, Usage, config, kv,
    llm, tools,
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

/// A tool's name as the model sees it: OpenAI tool names allow no `.`, so
/// `<server>.<tool>` becomes `<server>__<tool>`.
pub fn model_name(tool: &str) -> String {
    tool.replacen('.', "__", 1)
}

/// The granted tool's name back from the model's name.
pub fn tool_name(model: &str) -> String {
    model.replacen("__", ".", 1)
}

/// What a tool message says for one call's outcome.
fn tool_text(result: Result<tools::ToolOutput, Failure>) -> String {
    match result {
        Ok(out) if out.is_error => format!("error: {}", out.text),
        Ok(out) => out.text,
        Err(f) => format!("error: {f:?}"),
    }
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
        let offered: Vec<Tool> = tools::list()?
            .into_iter()
            .map(|t| Tool {
                name: model_name(&t.name),
                ..t
            })
            .collect();
        let rounds: u32 = config::get("max_tool_rounds")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(4);
        let mut usage = Usage {
            prompt_tokens: 0,
            completion_tokens: 0,
        };
        let mut round = 0;
        loop {
            // The last round offers no tools, so the model has to answer.
            let tools = if round < rounds {
                offered.clone()
            } else {
                Vec::new()
            };
            let completion = llm::complete(&CompletionRequest {
                model: config::get_or("model", ""),
                messages: messages.clone(),
                tools,
                // Unset or unparsable values leave the choice to the upstream.
                temperature: config::get("temperature").and_then(|v| v.trim().parse().ok()),
                max_tokens: config::get("max_tokens").and_then(|v| v.trim().parse().ok()),
                metadata: task.metadata.clone(),
            })?;
            usage.prompt_tokens += completion.usage.prompt_tokens;
            usage.completion_tokens += completion.usage.completion_tokens;
            let calls = completion.message.tool_calls.clone();
            if calls.is_empty() || round >= rounds {
                return Ok(TaskResult {
                    output: completion.message,
                    usage,
                });
            }
            messages.push(completion.message);
            for call in calls {
                let text = tool_text(tools::call(&tool_name(&call.name), &call.arguments));
                messages.push(Message {
                    role: Role::Tool,
                    content: text,
                    name: None,
                    tool_calls: Vec::new(),
                    tool_call_id: Some(call.id),
                });
            }
            round += 1;
        }
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
    fn tool_names_survive_the_round_trip_through_the_model() {
        assert_eq!(model_name("search.web_search"), "search__web_search");
        assert_eq!(tool_name("search__web_search"), "search.web_search");
    }

    #[test]
    fn counter_starts_at_one_and_counts_up() {
        assert_eq!(next_count(None), 1);
        assert_eq!(next_count(Some(&41u64.to_le_bytes())), 42);
        assert_eq!(next_count(Some(b"junk")), 1);
        assert_eq!(next_count(Some(&u64::MAX.to_le_bytes())), u64::MAX);
    }
}
