//! `manager`: an agent that splits a task among worker agents.
//!
//! Each worker agent is offered to the model as a tool. The manager loops:
//! ask the model, run every delegation it requested (concurrently, through
//! one `agents::call_all`), feed the results back, and stop when the model
//! answers without tool calls. If the iteration bound runs out first, one
//! last completion without tools forces a final answer.
#![warn(missing_docs)]

use agentrouter_sdk::agent::{
    Agent, CompletionRequest, Failure, Level, Message, Task, TaskResult, Tool, ToolCall, Usage,
    agents, config, llm, logging,
};

/// System prompt used when the operator sets no `instructions`.
pub const DEFAULT_INSTRUCTIONS: &str = "You are a manager coordinating a team of specialist agents. \
Break the user's request into focused sub-tasks and delegate each one to the most suitable agent \
by calling its tool with a complete, self-contained `task` description. You may delegate several \
sub-tasks at once. When the agents' results are enough, stop calling tools and write the final \
answer for the user, combining their work.";

/// Iteration bound used when the operator sets no `max_iterations`.
pub const DEFAULT_MAX_ITERATIONS: u32 = 4;

/// The manager's settings, read once per task.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Names of the agents the manager may delegate to.
    pub workers: Vec<String>,
    /// Model to ask (empty: let the router choose).
    pub model: String,
    /// Maximum number of delegation rounds before a forced final answer.
    pub max_iterations: u32,
    /// System prompt.
    pub instructions: String,
}

impl Settings {
    /// Reads the settings from the host.
    ///
    /// Duplicate worker names are dropped: two tools with one name would make
    /// the model's choice ambiguous.
    pub fn load() -> Result<Self, Failure> {
        let mut workers: Vec<String> = Vec::new();
        for name in config::list("workers") {
            if !workers.contains(&name) {
                workers.push(name);
            }
        }
        if workers.is_empty() {
            return Err(Failure::Internal(
                "manager: setting `workers` is empty".to_string(),
            ));
        }
        Ok(Self {
            workers,
            model: config::get_or("model", ""),
            max_iterations: config::parse_or("max_iterations", DEFAULT_MAX_ITERATIONS),
            instructions: config::get_or("instructions", DEFAULT_INSTRUCTIONS),
        })
    }
}

/// One tool per worker; calling it delegates a sub-task to that agent.
pub fn worker_tools(workers: &[String]) -> Vec<Tool> {
    let parameters = serde_json::json!({
        "type": "object",
        "properties": {
            "task": {
                "type": "string",
                "description": "The sub-task for this agent, stated completely: it sees nothing else of the conversation."
            }
        },
        "required": ["task"]
    })
    .to_string();
    workers
        .iter()
        .map(|name| Tool {
            name: name.clone(),
            description: format!("Delegate a sub-task to the {name} agent."),
            parameters: parameters.clone(),
        })
        .collect()
}

/// The sub-task text of a tool call: the `task` field of its JSON arguments.
///
/// Models do not always produce the JSON they were asked for, so anything
/// else (invalid JSON, a missing or non-string field) falls back to the raw
/// arguments rather than losing the request.
pub fn task_text(arguments: &str) -> String {
    serde_json::from_str::<serde_json::Value>(arguments)
        .ok()
        .and_then(|value| value.get("task")?.as_str().map(str::to_string))
        .unwrap_or_else(|| arguments.to_string())
}

/// A human-readable description of a failure, for tool results and logs.
pub fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Timeout => "timeout".to_string(),
        Failure::RateLimited(Some(ms)) => format!("rate limited (retry after {ms} ms)"),
        Failure::RateLimited(None) => "rate limited".to_string(),
        Failure::TokenLimitExceeded => "token limit exceeded".to_string(),
        Failure::UpstreamStatus(status) => format!("upstream returned status {status}"),
        Failure::InvalidResponse(detail) => format!("invalid response: {detail}"),
        Failure::CircuitOpen(upstream) => format!("circuit open for upstream `{upstream}`"),
        Failure::Rejected(reason) => format!("rejected: {reason}"),
        Failure::BudgetExceeded => "budget exceeded".to_string(),
        Failure::Denied(reason) => format!("denied: {reason}"),
        Failure::Internal(detail) => format!("internal error: {detail}"),
    }
}

/// The delegations to run for a round of tool calls: one `(agent, task)`
/// pair per call naming a known worker, in call order.
pub fn delegations(parent: &Task, calls: &[ToolCall], workers: &[String]) -> Vec<(String, Task)> {
    calls
        .iter()
        .filter(|call| workers.contains(&call.name))
        .map(|call| {
            let task = Task {
                // Derived ids let the host's traces tie sub-tasks to the parent.
                id: format!("{}-{}", parent.id, call.id),
                input: vec![Message::user(task_text(&call.arguments))],
                metadata: parent.metadata.clone(),
            };
            (call.name.clone(), task)
        })
        .collect()
}

/// Turns delegation results into one tool message per call, in call order,
/// and sums the usage of the successful delegations.
///
/// `results` holds the results of [`delegations`] for the same calls, in
/// order; calls to unknown agents get an error message instead.
pub fn tool_messages(
    calls: &[ToolCall],
    workers: &[String],
    results: Vec<Result<TaskResult, Failure>>,
) -> (Vec<Message>, Usage) {
    let mut results = results.into_iter();
    let mut usage = Usage::ZERO;
    let mut messages = Vec::with_capacity(calls.len());
    for call in calls {
        let content = if !workers.contains(&call.name) {
            format!("error: unknown agent `{}`", call.name)
        } else {
            match results.next() {
                Some(Ok(result)) => {
                    usage = usage.plus(result.usage);
                    result.output.content
                }
                Some(Err(failure)) => format!("error: {}", describe(&failure)),
                // The host returns one result per call; a short list would be
                // a host bug, reported to the model rather than panicking.
                None => "error: no result from the host".to_string(),
            }
        };
        messages.push(Message::tool_result(call.id.clone(), content));
    }
    (messages, usage)
}

/// The completion request for one step: instructions, the task's input, then
/// the conversation so far.
fn request(
    settings: &Settings,
    task: &Task,
    conversation: &[Message],
    tools: Vec<Tool>,
) -> CompletionRequest {
    let mut messages = Vec::with_capacity(1 + task.input.len() + conversation.len());
    messages.push(Message::system(settings.instructions.clone()));
    messages.extend(task.input.iter().cloned());
    messages.extend(conversation.iter().cloned());
    CompletionRequest {
        model: settings.model.clone(),
        messages,
        tools,
        temperature: None,
        max_tokens: None,
        metadata: task.metadata.clone(),
    }
}

/// Runs the delegation loop for one task.
fn run(task: Task, settings: &Settings) -> Result<TaskResult, Failure> {
    let tools = worker_tools(&settings.workers);
    let mut conversation: Vec<Message> = Vec::new();
    let mut usage = Usage::ZERO;

    for iteration in 1..=settings.max_iterations {
        let completion = llm::complete(&request(settings, &task, &conversation, tools.clone()))?;
        usage = usage.plus(completion.usage);
        let calls = completion.message.tool_calls.clone();
        logging::with_fields(
            Level::Debug,
            "manager iteration",
            &[
                ("task", &task.id),
                ("iteration", &iteration.to_string()),
                ("tool_calls", &calls.len().to_string()),
            ],
        );
        if calls.is_empty() {
            return Ok(TaskResult {
                output: completion.message,
                usage,
            });
        }
        conversation.push(completion.message);

        let batch = delegations(&task, &calls, &settings.workers);
        // One call_all for the whole round: the host runs the agents
        // concurrently, so a round costs as long as its slowest delegate.
        let results = if batch.is_empty() {
            Vec::new()
        } else {
            agents::call_all(&batch)
        };
        let (answers, delegated) = tool_messages(&calls, &settings.workers, results);
        usage = usage.plus(delegated);
        conversation.extend(answers);
    }

    // Every round ended in tool calls: withhold the tools so the model has to
    // answer with what it has.
    logging::debug("manager: iteration limit reached, asking for a final answer");
    let completion = llm::complete(&request(settings, &task, &conversation, Vec::new()))?;
    Ok(TaskResult {
        output: completion.message,
        usage: usage.plus(completion.usage),
    })
}

/// The exported agent.
pub struct Manager;

impl Agent for Manager {
    fn handle(task: Task) -> Result<TaskResult, Failure> {
        let settings = Settings::load()?;
        run(task, &settings)
    }
}

agentrouter_sdk::export_agent!(Manager);

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    fn workers() -> Vec<String> {
        vec!["researcher".to_string(), "writer".to_string()]
    }

    fn ok(content: &str, prompt: u32, completion: u32) -> Result<TaskResult, Failure> {
        Ok(TaskResult {
            output: Message::assistant(content),
            usage: Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
            },
        })
    }

    #[test]
    fn one_tool_per_worker_with_a_task_schema() {
        let tools = worker_tools(&workers());
        assert_eq!(tools.len(), 2);
        assert_eq!(tools[0].name, "researcher");
        assert_eq!(
            tools[0].description,
            "Delegate a sub-task to the researcher agent."
        );
        let schema: serde_json::Value = serde_json::from_str(&tools[1].parameters).unwrap();
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["properties"]["task"]["type"], "string");
        assert_eq!(schema["required"], serde_json::json!(["task"]));
    }

    #[test]
    fn task_text_prefers_the_task_field() {
        assert_eq!(task_text(r#"{"task":"find facts"}"#), "find facts");
        assert_eq!(task_text("just do it"), "just do it");
        assert_eq!(task_text(r#"{"other":1}"#), r#"{"other":1}"#);
        assert_eq!(task_text(r#"{"task":42}"#), r#"{"task":42}"#);
    }

    #[test]
    fn delegations_skip_unknown_agents_and_derive_ids() {
        let parent = Task {
            id: "t1".into(),
            input: vec![Message::user("write a report")],
            metadata: vec![("tenant".into(), "acme".into())],
        };
        let calls = [
            call("c1", "researcher", r#"{"task":"dig"}"#),
            call("c2", "hacker", "{}"),
            call("c3", "writer", "draft it"),
        ];
        let batch = delegations(&parent, &calls, &workers());
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].0, "researcher");
        assert_eq!(batch[0].1.id, "t1-c1");
        assert_eq!(batch[0].1.input[0].content, "dig");
        assert_eq!(batch[0].1.metadata, parent.metadata);
        assert_eq!(batch[1].0, "writer");
        assert_eq!(batch[1].1.id, "t1-c3");
        assert_eq!(batch[1].1.input[0].content, "draft it");
    }

    #[test]
    fn tool_messages_keep_call_order_and_sum_successes() {
        let calls = [
            call("c1", "researcher", "{}"),
            call("c2", "hacker", "{}"),
            call("c3", "writer", "{}"),
        ];
        let results = vec![ok("facts", 10, 5), Err(Failure::Timeout)];
        let (messages, usage) = tool_messages(&calls, &workers(), results);
        let contents: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(
            contents,
            ["facts", "error: unknown agent `hacker`", "error: timeout"]
        );
        let ids: Vec<_> = messages
            .iter()
            .map(|m| m.tool_call_id.clone().unwrap())
            .collect();
        assert_eq!(ids, ["c1", "c2", "c3"]);
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (10, 5));
    }

    #[test]
    fn failures_are_described() {
        assert_eq!(
            describe(&Failure::UpstreamStatus(503)),
            "upstream returned status 503"
        );
        assert_eq!(describe(&Failure::Denied("depth".into())), "denied: depth");
    }
}
