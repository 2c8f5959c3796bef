//! Conversions between the host's domain types and the WIT-generated ones.
//!
//! This is the only place the two meet (see `domain`).

use super::bindings::wit;
use crate::domain::{self as d, Metadata};

fn metadata_to_wit(m: &Metadata) -> Vec<(String, String)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn metadata_from_wit(m: Vec<(String, String)>) -> Metadata {
    m.into_iter().collect()
}

impl From<d::Role> for wit::Role {
    fn from(r: d::Role) -> Self {
        match r {
            d::Role::System => wit::Role::System,
            d::Role::User => wit::Role::User,
            d::Role::Assistant => wit::Role::Assistant,
            d::Role::Tool => wit::Role::Tool,
        }
    }
}

impl From<wit::Role> for d::Role {
    fn from(r: wit::Role) -> Self {
        match r {
            wit::Role::System => d::Role::System,
            wit::Role::User => d::Role::User,
            wit::Role::Assistant => d::Role::Assistant,
            wit::Role::Tool => d::Role::Tool,
        }
    }
}

impl From<&d::Message> for wit::Message {
    fn from(m: &d::Message) -> Self {
        wit::Message {
            role: m.role.into(),
            content: m.content.clone(),
            name: m.name.clone(),
            tool_calls: m
                .tool_calls
                .iter()
                .map(|c| wit::ToolCall {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    arguments: c.arguments.clone(),
                })
                .collect(),
            tool_call_id: m.tool_call_id.clone(),
        }
    }
}

impl From<wit::Message> for d::Message {
    fn from(m: wit::Message) -> Self {
        d::Message {
            role: m.role.into(),
            content: m.content,
            name: m.name,
            tool_calls: m
                .tool_calls
                .into_iter()
                .map(|c| d::ToolCall {
                    id: c.id,
                    name: c.name,
                    arguments: c.arguments,
                })
                .collect(),
            tool_call_id: m.tool_call_id,
            wire: Default::default(),
        }
    }
}

pub(crate) fn messages_to_wit(messages: &[d::Message]) -> Vec<wit::Message> {
    messages.iter().map(Into::into).collect()
}

fn messages_from_wit(messages: Vec<wit::Message>) -> Vec<d::Message> {
    messages.into_iter().map(Into::into).collect()
}

impl From<&d::CompletionRequest> for wit::CompletionRequest {
    fn from(r: &d::CompletionRequest) -> Self {
        wit::CompletionRequest {
            model: r.model.clone(),
            messages: messages_to_wit(&r.messages),
            tools: r
                .tools
                .iter()
                .map(|t| wit::Tool {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    parameters: t.parameters.clone(),
                })
                .collect(),
            temperature: r.temperature,
            max_tokens: r.max_tokens,
            metadata: metadata_to_wit(&r.metadata),
        }
    }
}

impl From<wit::CompletionRequest> for d::CompletionRequest {
    fn from(r: wit::CompletionRequest) -> Self {
        d::CompletionRequest {
            model: r.model,
            messages: messages_from_wit(r.messages),
            tools: r
                .tools
                .into_iter()
                .map(|t| d::Tool {
                    name: t.name,
                    description: t.description,
                    parameters: t.parameters,
                    wire: None,
                })
                .collect(),
            temperature: r.temperature,
            max_tokens: r.max_tokens,
            metadata: metadata_from_wit(r.metadata),
            ..Default::default()
        }
    }
}

impl From<d::Usage> for wit::Usage {
    fn from(u: d::Usage) -> Self {
        wit::Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        }
    }
}

impl From<wit::Usage> for d::Usage {
    fn from(u: wit::Usage) -> Self {
        d::Usage::new(u.prompt_tokens, u.completion_tokens)
    }
}

impl From<d::Completion> for wit::Completion {
    fn from(c: d::Completion) -> Self {
        wit::Completion {
            message: (&c.message).into(),
            model: c.model,
            finish_reason: c.finish_reason,
            usage: c.usage.into(),
            cached: c.cached,
        }
    }
}

impl From<d::Failure> for wit::Failure {
    fn from(f: d::Failure) -> Self {
        match f {
            d::Failure::Timeout => wit::Failure::Timeout,
            d::Failure::RateLimited(ms) => wit::Failure::RateLimited(ms),
            d::Failure::TokenLimitExceeded => wit::Failure::TokenLimitExceeded,
            d::Failure::UpstreamStatus(s) => wit::Failure::UpstreamStatus(s),
            // Plugins know an upstream's refusal by its status alone.
            d::Failure::ClientError(e) => wit::Failure::UpstreamStatus(e.status),
            d::Failure::InvalidResponse(m) => wit::Failure::InvalidResponse(m),
            d::Failure::CircuitOpen(u) => wit::Failure::CircuitOpen(u),
            d::Failure::Rejected(r) => wit::Failure::Rejected(r),
            d::Failure::BudgetExceeded => wit::Failure::BudgetExceeded,
            d::Failure::Denied(r) => wit::Failure::Denied(r),
            d::Failure::Internal(m) => wit::Failure::Internal(m),
        }
    }
}

impl From<wit::Failure> for d::Failure {
    fn from(f: wit::Failure) -> Self {
        match f {
            wit::Failure::Timeout => d::Failure::Timeout,
            wit::Failure::RateLimited(ms) => d::Failure::RateLimited(ms),
            wit::Failure::TokenLimitExceeded => d::Failure::TokenLimitExceeded,
            wit::Failure::UpstreamStatus(s) => d::Failure::UpstreamStatus(s),
            wit::Failure::InvalidResponse(m) => d::Failure::InvalidResponse(m),
            wit::Failure::CircuitOpen(u) => d::Failure::CircuitOpen(u),
            wit::Failure::Rejected(r) => d::Failure::Rejected(r),
            wit::Failure::BudgetExceeded => d::Failure::BudgetExceeded,
            wit::Failure::Denied(r) => d::Failure::Denied(r),
            wit::Failure::Internal(m) => d::Failure::Internal(m),
        }
    }
}

impl From<&d::Task> for wit::Task {
    fn from(t: &d::Task) -> Self {
        wit::Task {
            id: t.id.clone(),
            input: messages_to_wit(&t.input),
            metadata: metadata_to_wit(&t.metadata),
        }
    }
}

impl From<wit::Task> for d::Task {
    fn from(t: wit::Task) -> Self {
        d::Task {
            id: t.id,
            input: messages_from_wit(t.input),
            metadata: metadata_from_wit(t.metadata),
        }
    }
}

impl From<d::TaskResult> for wit::TaskResult {
    fn from(r: d::TaskResult) -> Self {
        wit::TaskResult {
            output: (&r.output).into(),
            usage: r.usage.into(),
        }
    }
}

impl From<wit::TaskResult> for d::TaskResult {
    fn from(r: wit::TaskResult) -> Self {
        d::TaskResult {
            output: r.output.into(),
            usage: r.usage.into(),
        }
    }
}

impl From<d::Stage> for wit::Stage {
    fn from(s: d::Stage) -> Self {
        match s {
            d::Stage::Input => wit::Stage::Input,
            d::Stage::Output => wit::Stage::Output,
        }
    }
}

impl From<wit::Verdict> for d::Verdict {
    fn from(v: wit::Verdict) -> Self {
        match v {
            wit::Verdict::Allow => d::Verdict::Allow,
            wit::Verdict::Reject(r) => d::Verdict::Reject(r),
            wit::Verdict::Rewrite(m) => d::Verdict::Rewrite(messages_from_wit(m)),
        }
    }
}

impl From<d::CircuitState> for wit::CircuitState {
    fn from(c: d::CircuitState) -> Self {
        match c {
            d::CircuitState::Closed => wit::CircuitState::Closed,
            d::CircuitState::Open => wit::CircuitState::Open,
            d::CircuitState::HalfOpen => wit::CircuitState::HalfOpen,
        }
    }
}

impl From<&d::Candidate> for wit::Candidate {
    fn from(c: &d::Candidate) -> Self {
        wit::Candidate {
            name: c.name.clone(),
            model: c.model.clone(),
            input_cost_per_1k: c.input_cost_per_1k,
            output_cost_per_1k: c.output_cost_per_1k,
            ewma_latency_ms: c.ewma_latency_ms,
            error_rate: c.error_rate,
            circuit: c.circuit.into(),
            weight: c.weight,
            tags: c.tags.clone(),
        }
    }
}

impl From<&d::RouteRequest> for wit::RouteRequest {
    fn from(r: &d::RouteRequest) -> Self {
        wit::RouteRequest {
            model: r.model.clone(),
            prompt_tokens: r.prompt_tokens,
            message_count: r.message_count,
            has_tools: r.has_tools,
            metadata: metadata_to_wit(&r.metadata),
        }
    }
}

impl From<&d::FailureContext> for wit::FailureContext {
    fn from(c: &d::FailureContext) -> Self {
        wit::FailureContext {
            failure: c.failure.clone().into(),
            upstream: c.upstream.clone(),
            attempt: c.attempt,
            max_attempts: c.max_attempts,
            remaining_ms: c.remaining_ms,
            alternatives: c.alternatives.clone(),
            request: (&c.request).into(),
        }
    }
}

impl From<wit::Action> for d::Action {
    fn from(a: wit::Action) -> Self {
        match a {
            wit::Action::Retry(ms) => d::Action::Retry(ms),
            wit::Action::Fallback(u) => d::Action::Fallback(u),
            wit::Action::ChunkAndRetry(n) => d::Action::ChunkAndRetry(n),
            wit::Action::Refine(m) => d::Action::Refine(messages_from_wit(m)),
            wit::Action::Fail(alert) => d::Action::Fail(alert),
        }
    }
}

/// Bad input never panics, and nothing is lost crossing the boundary: any
/// domain value converted to WIT and back is the same value
/// (`PROPTEST_CASES` sets the run's length; see docs/security.md).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn role() -> impl Strategy<Value = d::Role> {
        prop_oneof![
            Just(d::Role::System),
            Just(d::Role::User),
            Just(d::Role::Assistant),
            Just(d::Role::Tool),
        ]
    }

    fn message() -> impl Strategy<Value = d::Message> {
        (
            role(),
            any::<String>(),
            proptest::option::of(any::<String>()),
            prop::collection::vec((any::<String>(), any::<String>(), any::<String>()), 0..3),
            proptest::option::of(any::<String>()),
        )
            .prop_map(|(role, content, name, calls, tool_call_id)| d::Message {
                role,
                content,
                name,
                tool_calls: calls
                    .into_iter()
                    .map(|(id, name, arguments)| d::ToolCall {
                        id,
                        name,
                        arguments,
                    })
                    .collect(),
                tool_call_id,
                // The wire details stay on the host side of the WIT line.
                wire: Default::default(),
            })
    }

    fn metadata() -> impl Strategy<Value = d::Metadata> {
        prop::collection::btree_map(any::<String>(), any::<String>(), 0..4)
    }

    fn failure() -> impl Strategy<Value = d::Failure> {
        prop_oneof![
            Just(d::Failure::Timeout),
            proptest::option::of(any::<u32>()).prop_map(d::Failure::RateLimited),
            Just(d::Failure::TokenLimitExceeded),
            any::<u16>().prop_map(d::Failure::UpstreamStatus),
            any::<String>().prop_map(d::Failure::InvalidResponse),
            any::<String>().prop_map(d::Failure::CircuitOpen),
            any::<String>().prop_map(d::Failure::Rejected),
            Just(d::Failure::BudgetExceeded),
            any::<String>().prop_map(d::Failure::Denied),
            any::<String>().prop_map(d::Failure::Internal),
        ]
    }

    proptest! {
        #[test]
        fn messages_and_tasks_survive_the_boundary(
            messages in prop::collection::vec(message(), 0..4),
            meta in metadata(),
            id in any::<String>(),
        ) {
            let task = d::Task { id, input: messages.clone(), metadata: meta };
            let back: d::Task = wit::Task::from(&task).into();
            prop_assert_eq!(back, task);
            let back: Vec<d::Message> = messages_from_wit(messages_to_wit(&messages));
            prop_assert_eq!(back, messages);
        }

        #[test]
        fn completion_requests_survive_the_boundary(
            messages in prop::collection::vec(message(), 0..4),
            model in any::<String>(),
            temperature in proptest::option::of(any::<f32>().prop_filter("comparable", |t| !t.is_nan())),
            max_tokens in proptest::option::of(any::<u32>()),
            meta in metadata(),
        ) {
            let req = d::CompletionRequest {
                model,
                messages,
                temperature,
                max_tokens,
                metadata: meta,
                ..Default::default()
            };
            let back: d::CompletionRequest = wit::CompletionRequest::from(&req).into();
            prop_assert_eq!(back, req);
        }

        #[test]
        fn failures_and_results_survive_the_boundary(
            f in failure(),
            output in message(),
            prompt in any::<u32>(),
            completion in any::<u32>(),
        ) {
            let back: d::Failure = wit::Failure::from(f.clone()).into();
            prop_assert_eq!(back, f);
            let result = d::TaskResult {
                output,
                usage: d::Usage {
                    prompt_tokens: prompt,
                    completion_tokens: completion,
                    // Host-side details the WIT usage does not carry.
                    ..Default::default()
                },
            };
            let back: d::TaskResult = wit::TaskResult::from(result.clone()).into();
            prop_assert_eq!(back, result);
        }

        #[test]
        fn any_guest_answer_converts(
            messages in prop::collection::vec(message(), 0..4),
            text in any::<String>(),
            n in any::<u32>(),
            pick in 0u8..8,
        ) {
            // What a guest can hand back: every verdict and action.
            let wit_messages = messages_to_wit(&messages);
            let _: d::Verdict = match pick % 3 {
                0 => wit::Verdict::Allow,
                1 => wit::Verdict::Reject(text.clone()),
                _ => wit::Verdict::Rewrite(wit_messages.clone()),
            }
            .into();
            let _: d::Action = match pick % 5 {
                0 => wit::Action::Retry(n),
                1 => wit::Action::Fallback(text),
                2 => wit::Action::ChunkAndRetry(n),
                3 => wit::Action::Refine(wit_messages),
                _ => wit::Action::Fail(n % 2 == 0),
            }
            .into();
        }
    }
}
