//! The host's own small domain types.
//!
//! The pipeline, the server and the runtime speak these. WIT-generated types
//! stay inside `runtime` and are converted once at the plugin boundary, so a
//! change to the contract's generated code never ripples through the host.
//!
//! What the OpenAI wire carries beyond these views lives in `wire.rs`; the
//! calling context and the request's ledger in `context.rs`. Both are
//! re-exported here, so every type is `domain::Name`.

mod context;
mod embedding;
mod wire;

pub use context::{CallContext, DEFAULT_MAX_DEPTH, Ledger, Step, StepKind};
pub use embedding::{EmbeddingInput, EmbeddingRequest, Embeddings, Endpoint};
pub use wire::{Choice, Details, MessageWire, TokenBound, UpstreamError};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Who wrote a chat message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Framing instructions.
    System,
    /// The end user or the calling agent.
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
}

/// A tool invocation requested by a model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Identifier answered by a `tool` message.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments as JSON text.
    pub arguments: String,
}

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Author.
    pub role: Role,
    /// Text content.
    pub content: String,
    /// Optional author name.
    pub name: Option<String>,
    /// Tool calls of an assistant message.
    pub tool_calls: Vec<ToolCall>,
    /// For tool messages: the call answered.
    pub tool_call_id: Option<String>,
    /// How the message was written on the wire beyond this view (content
    /// parts, the role's own name, other fields), so that it is forwarded
    /// as it came. Plugins never see it; see [`MessageWire`].
    #[serde(default, skip_serializing_if = "MessageWire::is_empty")]
    pub wire: Box<MessageWire>,
}

impl Message {
    /// A plain message with a role and text.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            name: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
            wire: Box::default(),
        }
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
}

/// A tool offered to a model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tool {
    /// Name.
    pub name: String,
    /// Description for the model.
    pub description: String,
    /// JSON schema of the arguments, as JSON text.
    pub parameters: String,
    /// The tool exactly as the client sent it (`strict`, tool types other
    /// than `function`), forwarded as is; `None` for tools a plugin made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wire: Option<Value>,
}

/// Free-form request hints, ordered so that cache keys are stable.
pub type Metadata = BTreeMap<String, String>;

/// A chat completion request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// Model name; empty lets the router choose.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Tools offered.
    pub tools: Vec<Tool>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Bound on generated tokens: `max_completion_tokens` when the client
    /// sent it, else `max_tokens`. Plugins see this one number.
    pub max_tokens: Option<u32>,
    /// The field `max_tokens` came in, and is forwarded in.
    #[serde(default)]
    pub token_bound: TokenBound,
    /// Hints.
    pub metadata: Metadata,
    /// OpenAI `tool_choice`, passed through to upstreams untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<serde_json::Value>,
    /// Fields of the client's request forwarded as sent to OpenAI-kind
    /// upstreams: every field the gateway does not read (`top_p`, `seed`,
    /// `response_format`, `n`, `logprobs`, ...), and `user` and `metadata`,
    /// which it reads and forwards too. Part of the cache key (but for
    /// `user`, `metadata` and `stream_options`, see `cache::key`).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// What a request addresses: an upstream model, or an agent slot, which
/// clients name `agent:<slot>`. Parsed once, where a request enters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A model served by upstreams.
    Model(String),
    /// An agent slot, by slot name (without the prefix).
    Agent(String),
}

impl Target {
    /// How clients mark an agent in the `model` field.
    pub const AGENT_PREFIX: &'static str = "agent:";

    /// The target a `model` field names.
    ///
    /// ```
    /// use agentrouter::domain::Target;
    /// assert_eq!(Target::parse("agent:manager"), Target::Agent("manager".into()));
    /// assert_eq!(Target::parse("gpt-4o"), Target::Model("gpt-4o".into()));
    /// ```
    pub fn parse(model: &str) -> Target {
        match model.strip_prefix(Self::AGENT_PREFIX) {
            Some(agent) => Target::Agent(agent.to_string()),
            None => Target::Model(model.to_string()),
        }
    }

    /// The name without the agent prefix: the model or the agent slot.
    pub fn name(&self) -> &str {
        match self {
            Target::Model(name) | Target::Agent(name) => name,
        }
    }

    /// Whether it is an agent.
    pub fn is_agent(&self) -> bool {
        matches!(self, Target::Agent(_))
    }
}

/// The name clients use: the model, or `agent:<slot>`.
impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Model(model) => f.write_str(model),
            Target::Agent(agent) => write!(f, "{}{agent}", Self::AGENT_PREFIX),
        }
    }
}

/// Token counts, as OpenAI reports them: `cached_prompt_tokens` are part
/// of `prompt_tokens` and `reasoning_tokens` part of `completion_tokens`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Completion tokens (reasoning tokens included).
    pub completion_tokens: u32,
    /// Of the prompt tokens, those the provider served from its prompt cache
    /// (`prompt_tokens_details.cached_tokens`); priced at the upstream's
    /// `cached_input_cost_per_1k`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_prompt_tokens: u32,
    /// Of the completion tokens, those spent reasoning
    /// (`completion_tokens_details.reasoning_tokens`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reasoning_tokens: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Usage {
    /// Prompt and completion tokens, with no details.
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            ..Usage::default()
        }
    }

    /// Saturating sum.
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.saturating_add(other.prompt_tokens),
            completion_tokens: self
                .completion_tokens
                .saturating_add(other.completion_tokens),
            cached_prompt_tokens: self
                .cached_prompt_tokens
                .saturating_add(other.cached_prompt_tokens),
            reasoning_tokens: self.reasoning_tokens.saturating_add(other.reasoning_tokens),
        }
    }

    /// Prompt plus completion tokens.
    pub fn total(&self) -> u32 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// A model's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// The generated message.
    pub message: Message,
    /// The model that answered.
    pub model: String,
    /// `stop`, `length` or `tool_calls`.
    pub finish_reason: String,
    /// Tokens used.
    pub usage: Usage,
    /// Served from cache.
    pub cached: bool,
    /// What the upstream's answer carried beyond this view (more choices,
    /// logprobs, `system_fingerprint`, usage details, ...), passed back to
    /// the client as it came.
    #[serde(default, skip_serializing_if = "wire::no_details")]
    pub details: Box<Details>,
}

impl Completion {
    /// Every choice's message and other fields, the first one first: what
    /// output validators go through one by one.
    pub fn choices_mut(&mut self) -> Vec<(&mut Message, &mut Map<String, Value>)> {
        let mut all = vec![(&mut self.message, &mut self.details.choice)];
        all.extend(
            self.details
                .choices
                .iter_mut()
                .map(|c| (&mut c.message, &mut c.extra)),
        );
        all
    }
}

/// Why an operation failed, in the contract's vocabulary.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Failure {
    /// A deadline passed.
    #[error("timed out")]
    Timeout,
    /// Rate-limited, with an optional retry-after hint in milliseconds.
    #[error("rate limited{}", .0.map(|ms| format!(" (retry after {ms} ms)")).unwrap_or_default())]
    RateLimited(Option<u32>),
    /// The input exceeded the model's context window.
    #[error("token limit exceeded")]
    TokenLimitExceeded,
    /// The upstream answered with this HTTP status, and it is not the
    /// client's mistake (5xx, 401/403 for the gateway's credentials, 408 and
    /// 409, which are transient).
    #[error("upstream answered HTTP {0}")]
    UpstreamStatus(u16),
    /// The upstream refused the request itself (a 4xx other than 401, 403,
    /// 408, 409 and 429): its answer is the client's answer. Never retried,
    /// never held against the upstream; plugins see it as
    /// `upstream-status(status)`.
    #[error("{0}")]
    ClientError(UpstreamError),
    /// The upstream's body could not be understood.
    #[error("invalid upstream response: {0}")]
    InvalidResponse(String),
    /// The named upstream's breaker is open.
    #[error("circuit open for upstream `{0}`")]
    CircuitOpen(String),
    /// A validator rejected the content.
    #[error("rejected: {0}")]
    Rejected(String),
    /// A budget is exhausted.
    #[error("budget exceeded")]
    BudgetExceeded,
    /// The host refused the operation.
    #[error("denied: {0}")]
    Denied(String),
    /// Anything else.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Failure {
    /// A short, bounded name of the kind of failure, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::RateLimited(_) => "rate-limited",
            Failure::TokenLimitExceeded => "token-limit",
            Failure::UpstreamStatus(s) if *s >= 500 => "server-error",
            Failure::UpstreamStatus(_) | Failure::ClientError(_) => "client-error",
            Failure::InvalidResponse(_) => "invalid-response",
            Failure::CircuitOpen(_) => "circuit-open",
            Failure::Rejected(_) => "rejected",
            Failure::BudgetExceeded => "budget-exceeded",
            Failure::Denied(_) => "denied",
            Failure::Internal(_) => "internal",
        }
    }
}

impl Failure {
    /// Whether the upstream refused the request itself: what the client
    /// must fix, so nothing the host could do (retry, fall back) helps.
    pub fn is_client_error(&self) -> bool {
        matches!(self, Failure::ClientError(_))
    }
}

/// A unit of work for an agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Correlation id.
    pub id: String,
    /// Input conversation.
    pub input: Vec<Message>,
    /// Hints.
    pub metadata: Metadata,
}

/// What an agent returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    /// Final answer.
    pub output: Message,
    /// Tokens used over every step.
    pub usage: Usage,
}

/// Where a validator runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Before the target sees the request.
    Input,
    /// Before the client sees the answer.
    Output,
}

/// A validator's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Pass unchanged.
    Allow,
    /// Refuse with a reason.
    Reject(String),
    /// Replace the messages.
    Rewrite(Vec<Message>),
}

/// Circuit breaker state of an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CircuitState {
    /// Traffic flows.
    Closed,
    /// Traffic refused.
    Open,
    /// Probing.
    HalfOpen,
}

/// An upstream a router may choose.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Upstream name.
    pub name: String,
    /// Model served.
    pub model: String,
    /// USD per 1k prompt tokens.
    pub input_cost_per_1k: f64,
    /// USD per 1k completion tokens.
    pub output_cost_per_1k: f64,
    /// Moving-average latency.
    pub ewma_latency_ms: f64,
    /// Recent error rate in [0, 1].
    pub error_rate: f64,
    /// Breaker state.
    pub circuit: CircuitState,
    /// Operator weight.
    pub weight: u32,
    /// Capability tags.
    pub tags: Vec<String>,
}

/// What a router routes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRequest {
    /// Requested model (may be empty).
    pub model: String,
    /// Approximate prompt tokens.
    pub prompt_tokens: u32,
    /// Messages in the conversation.
    pub message_count: u32,
    /// Whether tools are offered.
    pub has_tools: bool,
    /// Hints.
    pub metadata: Metadata,
}

/// What a recovery strategy knows about a failure.
#[derive(Clone, Debug, PartialEq)]
pub struct FailureContext {
    /// What went wrong.
    pub failure: Failure,
    /// The upstream that failed.
    pub upstream: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// Host attempt bound.
    pub max_attempts: u32,
    /// Milliseconds before the deadline.
    pub remaining_ms: u64,
    /// Other upstreams for the same model family.
    pub alternatives: Vec<String>,
    /// The failed request.
    pub request: CompletionRequest,
}

/// What the host should do after a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Retry the same upstream after this many milliseconds.
    Retry(u32),
    /// Try this upstream.
    Fallback(String),
    /// Split input into chunks of at most this many characters.
    ChunkAndRetry(u32),
    /// Retry with these messages.
    Refine(Vec<Message>),
    /// Give up; `true` raises an alert.
    Fail(bool),
}
