//! `agentrouter plugin call`: one call of a plugin's export, outside the
//! gateway, with the same runtime, limits and sandbox the gateway uses.
//!
//! The input is JSON in the shape of the world's export (see
//! `docs/authoring.md`); the answer is printed as JSON. An agent's `llm` and
//! `agents` imports are served by [`StubHost`], which answers
//! deterministically and records every call, so an agent can be tested
//! without upstreams or other agents. `kv` is a real sled store (temporary,
//! or a directory that survives between calls); `log` and the plugin's
//! stdout/stderr go to the process's log output, tagged as in the gateway.

use crate::domain::{
    Action, CallContext, Candidate, CircuitState, Completion, CompletionRequest, Failure,
    FailureContext, Message, Metadata, Role, RouteRequest, Stage, Task, TaskResult, Usage, Verdict,
};
use crate::runtime::{
    AgentHost, Plugin, PluginError, PluginLimits, PluginSource, PluginSpec, Runtime,
    RuntimeSettings, World,
};
use crate::store::{Store, StoreError};
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How to call the plugin.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// The slot name the plugin runs as (its `kv` namespace and log tag);
    /// default: the file name without `.wasm`.
    pub name: Option<String>,
    /// Version label; default: the digest's first 12 hex digits.
    pub version: Option<String>,
    /// The operator settings the `settings` import reads.
    pub settings: BTreeMap<String, String>,
    /// A directory for the `kv` store that survives between calls; default:
    /// a temporary store, gone after the call.
    pub store_dir: Option<PathBuf>,
    /// Limits; default: the gateway's defaults for the plugin's world.
    pub limits: Option<PluginLimits>,
    /// Where compiled components are cached; `None` compiles every time.
    /// The CLI defaults it to [`user_cache_dir`].
    pub cache_dir: Option<PathBuf>,
}

/// The per-user AOT cache the `plugin` commands share:
/// `$XDG_CACHE_HOME/agentrouter/plugin-cache`, else
/// `$HOME/.cache/agentrouter/plugin-cache`; `None` without either.
pub fn user_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".cache"))
        })?;
    Some(base.join("agentrouter").join("plugin-cache"))
}

/// What one call did.
#[derive(Debug)]
pub struct CallReport {
    /// `name@version`.
    pub plugin: String,
    /// The world the component implements.
    pub world: World,
    /// The export's answer, as JSON (see the module docs).
    pub output: Value,
    /// For agents: every `llm.complete` and `agents.call` the plugin made,
    /// in order, with what the stub answered.
    pub host_calls: Vec<Value>,
    /// Fuel the call consumed (deterministic for the same input).
    pub fuel: u64,
    /// Largest linear memory the call reached, in bytes.
    pub peak_memory_bytes: u64,
}

impl CallReport {
    /// The report as one JSON object, as `plugin call` prints it.
    pub fn to_json(&self) -> Value {
        json!({
            "plugin": self.plugin,
            "world": self.world.as_str(),
            "output": self.output,
            "host_calls": self.host_calls,
            "fuel": self.fuel,
            "peak_memory_bytes": self.peak_memory_bytes,
        })
    }
}

/// Why a harness call did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The file could not be read.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The file is no plugin, or implements no world.
    #[error("{path}: {reason}")]
    NotAPlugin {
        /// The file.
        path: PathBuf,
        /// Why, in the words `plugin inspect` uses.
        reason: String,
    },
    /// The input JSON does not fit the world's export.
    #[error("--input does not fit the {world} world: {detail} (expected {expected})")]
    Input {
        /// The world.
        world: World,
        /// What serde said, naming the field.
        detail: String,
        /// The shape expected.
        expected: &'static str,
    },
    /// The kv store could not be opened.
    #[error("cannot open the kv store: {0}")]
    Store(#[from] StoreError),
    /// The runtime could not start.
    #[error("cannot start the plugin runtime: {0}")]
    Runtime(String),
    /// The plugin failed to load or its call failed (the message names it).
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// The shape of `--input` per world, for error messages.
fn expected(world: World) -> &'static str {
    match world {
        World::Validator => {
            r#"{"stage": "input"|"output", "messages": ["text" | {"role": "user", "content": "..."}]}"#
        }
        World::Router => {
            r#"{"request": {"model": "", "prompt_tokens": 0, ...}, "candidates": [{"name": "a", "model": "m", ...}]}"#
        }
        World::Recovery => {
            r#"{"failure": "Timeout" | {"UpstreamStatus": 503} | ..., "upstream": "a", "attempt": 1, "max_attempts": 3, "alternatives": [...]}"#
        }
        World::Agent => r#"{"input": "text" | [messages], "metadata": {"key": "value"}}"#,
    }
}

/// A message as authors write it: a string (a user message) or an object
/// whose optional fields may be left out.
#[derive(Deserialize)]
#[serde(untagged)]
enum MessageIn {
    Text(String),
    Full {
        role: Role,
        #[serde(default)]
        content: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        tool_calls: Vec<crate::domain::ToolCall>,
        #[serde(default)]
        tool_call_id: Option<String>,
    },
}

impl From<MessageIn> for Message {
    fn from(m: MessageIn) -> Self {
        match m {
            MessageIn::Text(text) => Message::user(text),
            MessageIn::Full {
                role,
                content,
                name,
                tool_calls,
                tool_call_id,
            } => Message {
                role,
                content,
                name,
                tool_calls,
                tool_call_id,
                wire: Default::default(),
            },
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Conversation {
    Text(String),
    Messages(Vec<MessageIn>),
}

impl From<Conversation> for Vec<Message> {
    fn from(c: Conversation) -> Self {
        match c {
            Conversation::Text(text) => vec![Message::user(text)],
            Conversation::Messages(ms) => ms.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidatorInput {
    #[serde(default = "input_stage")]
    stage: Stage,
    messages: Vec<MessageIn>,
}

fn input_stage() -> Stage {
    Stage::Input
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteRequestIn {
    #[serde(default)]
    model: String,
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    message_count: u32,
    #[serde(default)]
    has_tools: bool,
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CandidateIn {
    name: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    input_cost_per_1k: f64,
    #[serde(default)]
    output_cost_per_1k: f64,
    #[serde(default)]
    ewma_latency_ms: f64,
    #[serde(default)]
    error_rate: f64,
    #[serde(default = "closed")]
    circuit: CircuitState,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    tags: Vec<String>,
}

fn closed() -> CircuitState {
    CircuitState::Closed
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouterInput {
    #[serde(default)]
    request: Option<RouteRequestIn>,
    candidates: Vec<CandidateIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoveryInput {
    failure: Failure,
    #[serde(default)]
    upstream: String,
    #[serde(default = "one")]
    attempt: u32,
    #[serde(default = "three")]
    max_attempts: u32,
    #[serde(default = "ten_seconds")]
    remaining_ms: u64,
    #[serde(default)]
    alternatives: Vec<String>,
    #[serde(default)]
    messages: Vec<MessageIn>,
    #[serde(default)]
    model: String,
}

fn three() -> u32 {
    3
}

fn ten_seconds() -> u64 {
    10_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentInput {
    input: Conversation,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    id: Option<String>,
}

fn parse<T: for<'de> Deserialize<'de>>(world: World, input: &Value) -> Result<T, HarnessError> {
    serde_json::from_value(input.clone()).map_err(|e| HarnessError::Input {
        world,
        detail: e.to_string(),
        expected: expected(world),
    })
}

/// The world a component implements, in the words `plugin inspect` uses.
fn world_of(rt: &Runtime, path: &Path, bytes: &[u8]) -> Result<World, HarnessError> {
    let not_a_plugin = |reason: String| HarnessError::NotAPlugin {
        path: path.to_path_buf(),
        reason,
    };
    let info = rt.inspect(bytes).map_err(|e| not_a_plugin(e.to_string()))?;
    info.world.map_err(|e| not_a_plugin(e.to_string()))
}

/// A runtime for one command: default engine, `store` behind `kv`, and
/// the AOT cache at `cache_dir` (an unusable cache directory only costs a
/// compile, so it is dropped with a warning rather than failing).
pub fn runtime(store: Store, cache_dir: Option<&Path>) -> Result<Runtime, HarnessError> {
    let store: Arc<Store> = Arc::new(store);
    let settings = RuntimeSettings {
        cache_dir: cache_dir.map(Path::to_path_buf),
        ..Default::default()
    };
    match Runtime::new(&settings, store.clone()) {
        Ok(rt) => Ok(rt),
        Err(e) if cache_dir.is_some() => {
            tracing::warn!(error = %format!("{e:#}"), "plugin cache unusable; compiling without it");
            Runtime::new(&RuntimeSettings::default(), store)
                .map_err(|e| HarnessError::Runtime(format!("{e:#}")))
        }
        Err(e) => Err(HarnessError::Runtime(format!("{e:#}"))),
    }
}

/// Loads `file` and calls its world's export once on `input`.
pub async fn call(
    file: &Path,
    input: &Value,
    options: &CallOptions,
) -> Result<CallReport, HarnessError> {
    let bytes = std::fs::read(file).map_err(|cause| HarnessError::Read {
        path: file.to_path_buf(),
        cause,
    })?;
    let store = match &options.store_dir {
        Some(dir) => Store::open(dir)?,
        None => Store::temporary()?,
    };
    let rt = runtime(store, options.cache_dir.as_deref())?;
    let world = world_of(&rt, file, &bytes)?;
    let name = options.name.clone().unwrap_or_else(|| {
        file.file_stem()
            .map(|s| s.to_string_lossy().replace('_', "-"))
            .unwrap_or_else(|| "plugin".into())
    });
    let mut spec = PluginSpec::new(
        name,
        world,
        PluginSource::Bytes {
            origin: file.display().to_string(),
            bytes: bytes.into(),
        },
    );
    spec.version = options.version.clone();
    spec.settings = options.settings.clone();
    if let Some(limits) = &options.limits {
        spec.limits = limits.clone();
    }
    let plugin = rt.load(spec)?;
    let stub = Arc::new(StubHost::default());
    let output = run(&plugin, world, input, stub.clone()).await?;
    let stats = plugin.stats();
    Ok(CallReport {
        plugin: plugin.identity().to_string(),
        world,
        output,
        host_calls: stub.calls(),
        fuel: stats.last_fuel,
        peak_memory_bytes: stats.peak_memory_bytes,
    })
}

async fn run(
    plugin: &Plugin,
    world: World,
    input: &Value,
    stub: Arc<StubHost>,
) -> Result<Value, HarnessError> {
    Ok(match world {
        World::Validator => {
            let input: ValidatorInput = parse(world, input)?;
            let messages: Vec<Message> = input.messages.into_iter().map(Into::into).collect();
            verdict_json(plugin.validate(input.stage, &messages).await?)
        }
        World::Router => {
            let input: RouterInput = parse(world, input)?;
            let candidates: Vec<Candidate> = input
                .candidates
                .into_iter()
                .map(|c| Candidate {
                    name: c.name,
                    model: c.model,
                    input_cost_per_1k: c.input_cost_per_1k,
                    output_cost_per_1k: c.output_cost_per_1k,
                    ewma_latency_ms: c.ewma_latency_ms,
                    error_rate: c.error_rate,
                    circuit: c.circuit,
                    weight: c.weight,
                    tags: c.tags,
                })
                .collect();
            let req = input.request.unwrap_or(RouteRequestIn {
                model: String::new(),
                prompt_tokens: 0,
                message_count: 1,
                has_tools: false,
                metadata: Metadata::new(),
            });
            let req = RouteRequest {
                model: req.model,
                prompt_tokens: req.prompt_tokens,
                message_count: req.message_count,
                has_tools: req.has_tools,
                metadata: req.metadata,
            };
            json!({ "order": plugin.route(&req, &candidates).await? })
        }
        World::Recovery => {
            let input: RecoveryInput = parse(world, input)?;
            let ctx = FailureContext {
                failure: input.failure,
                upstream: input.upstream,
                attempt: input.attempt,
                max_attempts: input.max_attempts,
                remaining_ms: input.remaining_ms,
                alternatives: input.alternatives,
                request: CompletionRequest {
                    model: input.model,
                    messages: input.messages.into_iter().map(Into::into).collect(),
                    ..Default::default()
                },
            };
            action_json(plugin.recover(&ctx).await?)
        }
        World::Agent => {
            let input: AgentInput = parse(world, input)?;
            let task = Task {
                id: input.id.unwrap_or_else(|| "task-local".into()),
                input: input.input.into(),
                metadata: input.metadata,
            };
            let name = plugin.identity().name.clone();
            let ctx = CallContext::new("local", &task.id, Duration::from_secs(600))
                .enter(&name)
                .map_err(|f| HarnessError::Runtime(f.to_string()))?;
            match plugin.handle(&task, ctx, stub).await? {
                Ok(result) => json!({
                    "output": result.output.content,
                    "message": result.output,
                    "usage": result.usage,
                }),
                Err(failure) => json!({ "failure": failure, "error": failure.to_string() }),
            }
        }
    })
}

fn verdict_json(verdict: Verdict) -> Value {
    match verdict {
        Verdict::Allow => json!({"verdict": "allow"}),
        Verdict::Reject(reason) => json!({"verdict": "reject", "reason": reason}),
        Verdict::Rewrite(messages) => json!({"verdict": "rewrite", "messages": messages}),
    }
}

fn action_json(action: Action) -> Value {
    match action {
        Action::Retry(ms) => json!({"action": "retry", "delay_ms": ms}),
        Action::Fallback(upstream) => json!({"action": "fallback", "upstream": upstream}),
        Action::ChunkAndRetry(chars) => json!({"action": "chunk-and-retry", "chunk_chars": chars}),
        Action::Refine(messages) => json!({"action": "refine", "messages": messages}),
        Action::Fail(alert) => json!({"action": "fail", "alert": alert}),
    }
}

/// Stands in for the pipeline behind an agent's `llm` and `agents`
/// imports: answers at once and deterministically, and records each call.
///
/// - `llm.complete` answers `[stub-llm <model>] <last user message>` (model
///   `stub` when the request names none), finish reason `stop`, usage
///   counted in words (prompt: every message; completion: the answer);
/// - `agents.call` / `call-all` answer `[stub-agent <agent>] <last user
///   message of the task>` with usage counted the same way. The depth and
///   cycle guards are the real ones ([`CallContext::enter`]).
#[derive(Debug, Default)]
pub struct StubHost {
    calls: Mutex<Vec<Value>>,
}

impl StubHost {
    /// Every call recorded so far.
    pub fn calls(&self) -> Vec<Value> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record(&self, call: Value) {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(call);
    }
}

fn last_user(messages: &[Message]) -> &str {
    messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .unwrap_or("")
}

fn words(text: &str) -> u32 {
    text.split_whitespace().count() as u32
}

impl AgentHost for StubHost {
    fn complete(
        &self,
        _ctx: CallContext,
        req: CompletionRequest,
    ) -> BoxFuture<'static, Result<Completion, Failure>> {
        let model = if req.model.is_empty() {
            "stub".to_string()
        } else {
            req.model.clone()
        };
        let answer = format!("[stub-llm {model}] {}", last_user(&req.messages));
        let usage = Usage::new(
            req.messages.iter().map(|m| words(&m.content)).sum(),
            words(&answer),
        );
        self.record(json!({
            "import": "llm.complete",
            "model": req.model,
            "messages": req.messages,
            "answer": answer,
        }));
        let completion = Completion {
            message: Message::assistant(answer),
            model,
            finish_reason: "stop".into(),
            usage,
            cached: false,
            details: Default::default(),
        };
        Box::pin(async move { Ok(completion) })
    }

    fn call_agent(
        &self,
        _ctx: CallContext,
        agent: String,
        task: Task,
    ) -> BoxFuture<'static, Result<TaskResult, Failure>> {
        let answer = format!("[stub-agent {agent}] {}", last_user(&task.input));
        let usage = Usage::new(
            task.input.iter().map(|m| words(&m.content)).sum(),
            words(&answer),
        );
        self.record(json!({
            "import": "agents.call",
            "agent": agent,
            "input": task.input,
            "answer": answer,
        }));
        let result = TaskResult {
            output: Message::assistant(answer),
            usage,
        };
        Box::pin(async move { Ok(result) })
    }

    fn call_all(
        &self,
        ctx: CallContext,
        calls: Vec<(String, Task)>,
    ) -> BoxFuture<'static, Vec<Result<TaskResult, Failure>>> {
        // In order, one at a time: the stub answers at once, and the
        // recorded calls then read in the order the plugin made them.
        let answers: Vec<_> = calls
            .into_iter()
            .map(|(agent, task)| self.call_agent(ctx.clone(), agent, task))
            .collect();
        Box::pin(futures::future::join_all(answers))
    }
}
