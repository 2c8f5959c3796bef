//! The request pipeline: input validators → target (agent, or the
//! completion path: router → upstream with recovery) → output validators,
//! with usage and cost accounted per step.
//!
//! Agents re-enter the completion path through [`AgentHost`]: their
//! `llm.complete` calls are routed and recovered like a client's, and their
//! `agents.call` delegations run other agent slots, all under the caller's
//! [`CallContext`] (identity, deadline, depth, cycle guard, step log).
//! Validators apply at the request's edge, not to an agent's inner calls.

mod completion;
mod error;

pub use error::PipelineError;

use crate::domain::{
    CallContext, Candidate, Completion, CompletionRequest, Failure, Message, Stage, Step, Task,
    TaskResult, Verdict,
};
use crate::resilience::{Alerter, BreakerSettings, BudgetSettings};
use crate::rollout::HotPlugin;
use crate::runtime::{AgentHost, World};
use crate::telemetry::Metrics;
use crate::upstream::{EventStream, Upstream};
use completion::UpstreamHealth;
use futures::future::BoxFuture;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Default per-attempt bound of an upstream call.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// What the pipeline does when a plugin itself fails (trap, limit, garbage).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Fail the request (safe default for validators: nothing unchecked passes).
    #[default]
    Closed,
    /// Log, count, and carry on as if the plugin had allowed / had no opinion.
    Open,
}

/// A configured plugin slot.
#[derive(Clone, Debug)]
pub struct Slot {
    /// The slot's plugin: the live version, swappable while serving, and any
    /// rollout in progress (see [`crate::rollout`]).
    pub plugin: Arc<HotPlugin>,
    /// Its failure policy.
    pub policy: FailurePolicy,
}

/// How the pipeline is wired.
#[derive(Clone, Debug)]
pub struct PipelineSettings {
    /// Validator slots run on input, in order.
    pub input_validators: Vec<String>,
    /// Validator slots run on output, in order.
    pub output_validators: Vec<String>,
    /// Router slot.
    pub router: Option<String>,
    /// Recovery slot.
    pub recovery: Option<String>,
    /// Upper bound on upstream attempts per completion (retries, refinements
    /// and fallbacks together).
    pub max_attempts: u32,
    /// Cap on a retry's backoff (an upstream's `Retry-After` may exceed it).
    pub max_delay: Duration,
    /// Retry budget of each upstream.
    pub retry_budget: BudgetSettings,
    /// Per model, the models to fall back to when its own upstreams cannot serve.
    pub fallbacks: HashMap<String, Vec<String>>,
    /// Where alerts are posted, besides the log and the metric.
    pub alert_webhook: Option<String>,
    /// Bound on nested agent calls.
    pub max_depth: u32,
    /// Where the pipeline counts what it does.
    pub metrics: Arc<Metrics>,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            input_validators: Vec::new(),
            output_validators: Vec::new(),
            router: None,
            recovery: None,
            max_attempts: crate::config::DEFAULT_MAX_ATTEMPTS,
            max_delay: Duration::from_millis(crate::config::DEFAULT_MAX_DELAY_MS),
            retry_budget: BudgetSettings::default(),
            fallbacks: HashMap::new(),
            alert_webhook: None,
            max_depth: crate::domain::DEFAULT_MAX_DEPTH,
            metrics: Arc::new(Metrics::new()),
        }
    }
}

/// The outcome of a chat request.
#[derive(Clone, Debug)]
pub struct ChatOutcome {
    /// The final answer (after output validators).
    pub completion: Completion,
    /// Every step made.
    pub steps: Vec<Step>,
    /// Total cost in USD.
    pub cost_usd: f64,
}

/// How a streamed answer starts.
pub enum StreamStart {
    /// The whole answer, validated, to be replayed as a stream.
    Buffered(ChatOutcome),
    /// Events straight from the upstream.
    Live {
        /// The requested model.
        model: String,
        /// The upstream's events.
        events: EventStream,
    },
}

/// An upstream with the host's bounds around it.
pub struct UpstreamSetup {
    /// The upstream.
    pub upstream: Arc<dyn Upstream>,
    /// Bound of one attempt.
    pub timeout: Duration,
    /// Its circuit breaker's thresholds.
    pub breaker: BreakerSettings,
    /// Most calls in flight to it; unbounded when `None`.
    pub max_concurrent: Option<u32>,
    /// Streams: bound on the wait for the first event (`timeout` when `None`).
    pub first_token_timeout: Option<Duration>,
    /// Streams: bound on a silence between events (`timeout` when `None`).
    pub idle_timeout: Option<Duration>,
}

impl UpstreamSetup {
    /// An upstream with default bounds: `timeout` per attempt, the default
    /// breaker, no bulkhead.
    pub fn new(upstream: Arc<dyn Upstream>, timeout: Duration) -> Self {
        Self {
            upstream,
            timeout,
            breaker: BreakerSettings::default(),
            max_concurrent: None,
            first_token_timeout: None,
            idle_timeout: None,
        }
    }
}

/// The request pipeline; shared as `Arc<Pipeline>`.
pub struct Pipeline {
    slots: HashMap<String, Slot>,
    upstreams: Vec<Arc<dyn Upstream>>,
    /// Per upstream name: its bound, live statistics and breaker; shared
    /// with the next pipeline on a config reload when the upstream is kept.
    health: HashMap<String, Arc<UpstreamHealth>>,
    settings: PipelineSettings,
    alerter: Alerter,
    me: Weak<Pipeline>,
}

impl Pipeline {
    /// Wires a pipeline from slots and upstreams. Slot references in
    /// `settings` must exist with the right world (config validation
    /// guarantees it; this re-checks).
    pub fn new(
        slots: HashMap<String, Slot>,
        upstreams: Vec<UpstreamSetup>,
        settings: PipelineSettings,
    ) -> Result<Arc<Pipeline>, String> {
        Self::succeeding(None, slots, upstreams, settings)
    }

    /// Like [`Pipeline::new`], for a config reload: an upstream that is the
    /// very same object in `previous` keeps its statistics and breaker
    /// state, so a reload neither forgets an outage nor resets a recovery.
    pub fn succeeding(
        previous: Option<&Pipeline>,
        slots: HashMap<String, Slot>,
        upstreams: Vec<UpstreamSetup>,
        settings: PipelineSettings,
    ) -> Result<Arc<Pipeline>, String> {
        let check = |name: &String, world: World| match slots.get(name) {
            Some(slot) if slot.plugin.world() == world => Ok(()),
            Some(slot) => Err(format!(
                "slot `{name}` is a {}, not a {world}",
                slot.plugin.world()
            )),
            None => Err(format!("slot `{name}` does not exist")),
        };
        for name in settings
            .input_validators
            .iter()
            .chain(&settings.output_validators)
        {
            check(name, World::Validator)?;
        }
        if let Some(router) = &settings.router {
            check(router, World::Router)?;
        }
        if let Some(recovery) = &settings.recovery {
            check(recovery, World::Recovery)?;
        }
        if upstreams.is_empty() {
            return Err("no upstreams configured".into());
        }
        let kept = |u: &UpstreamSetup| {
            let name = &u.upstream.info().name;
            let previous = previous?;
            previous
                .upstreams
                .iter()
                .any(|p| Arc::ptr_eq(p, &u.upstream))
                .then(|| previous.health.get(name).cloned())
                .flatten()
        };
        let health = upstreams
            .iter()
            .map(|u| {
                let health = kept(u).unwrap_or_else(|| Arc::new(UpstreamHealth::new(u, &settings)));
                (u.upstream.info().name.clone(), health)
            })
            .collect();
        let upstreams = upstreams.into_iter().map(|u| u.upstream).collect();
        let alerter = Alerter::new(
            settings.alert_webhook.clone(),
            crate::upstream::http_client(),
            settings.metrics.clone(),
        );
        Ok(Arc::new_cyclic(|me| Pipeline {
            slots,
            upstreams,
            health,
            settings,
            alerter,
            me: me.clone(),
        }))
    }

    /// The pipeline's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.settings.metrics
    }

    /// The settings.
    pub fn settings(&self) -> &PipelineSettings {
        &self.settings
    }

    /// Every slot, by name.
    pub fn slots(&self) -> &HashMap<String, Slot> {
        &self.slots
    }

    /// The upstreams.
    pub fn upstreams(&self) -> &[Arc<dyn Upstream>] {
        &self.upstreams
    }

    /// Each upstream's name, model and circuit-breaker state.
    pub fn circuits(&self) -> Vec<(String, String, crate::domain::CircuitState)> {
        let now = Instant::now();
        self.upstreams
            .iter()
            .map(|u| {
                let info = u.info();
                let state = self.health.get(&info.name).map(|h| h.breaker.state(now));
                (
                    info.name.clone(),
                    info.model.clone(),
                    state.unwrap_or(crate::domain::CircuitState::Closed),
                )
            })
            .collect()
    }

    /// The upstreams as a router sees them, with their circuit state (and no
    /// latency or error history): what a router's smoke call is given.
    pub fn candidates(&self) -> Vec<Candidate> {
        self.upstreams
            .iter()
            .zip(self.circuits())
            .map(|(u, (_, _, circuit))| {
                let info = u.info();
                Candidate {
                    name: info.name.clone(),
                    model: info.model.clone(),
                    input_cost_per_1k: info.input_cost_per_1k,
                    output_cost_per_1k: info.output_cost_per_1k,
                    ewma_latency_ms: 0.0,
                    error_rate: 0.0,
                    circuit,
                    weight: info.weight,
                    tags: info.tags.clone(),
                }
            })
            .collect()
    }

    /// Model names clients can ask for: upstream models, then `agent:<slot>`.
    pub fn models(&self) -> Vec<String> {
        let mut models: Vec<String> = self
            .upstreams
            .iter()
            .map(|u| u.info().model.clone())
            .collect();
        models.sort();
        models.dedup();
        let mut agents: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, s)| s.plugin.world() == World::Agent)
            .map(|(n, _)| format!("agent:{n}"))
            .collect();
        agents.sort();
        models.extend(agents);
        models
    }

    /// Whether `model` names an upstream model or an agent.
    pub fn knows_model(&self, model: &str) -> bool {
        match model.strip_prefix("agent:") {
            Some(agent) => self.agent_slot(agent).is_some(),
            None => self.upstreams.iter().any(|u| u.info().model == model),
        }
    }

    fn agent_slot(&self, name: &str) -> Option<&Slot> {
        self.slots
            .get(name)
            .filter(|s| s.plugin.world() == World::Agent)
    }

    /// The span of one completion for `ctx`: routing, every upstream
    /// attempt and the recovery decisions between them.
    fn completion_span(ctx: &CallContext, model: &str) -> tracing::Span {
        let model = if model.is_empty() { "-" } else { model };
        tracing::info_span!(
            "completion",
            otel.name = %format_args!("completion {model}"),
            gen_ai.operation.name = "chat",
            gen_ai.request.model = %model,
            agentrouter.caller = %ctx.caller(),
            agentrouter.depth = ctx.chain.len(),
        )
    }

    fn host(&self) -> Arc<dyn AgentHost> {
        Arc::new(PipelineHost(
            self.me
                .upgrade()
                .expect("a pipeline is only used through its Arc"),
        ))
    }

    /// Serves a chat request for a model or an `agent:<name>`.
    pub async fn chat(
        &self,
        ctx: CallContext,
        req: CompletionRequest,
    ) -> Result<ChatOutcome, PipelineError> {
        self.chat_inner(ctx, req).await
    }

    async fn chat_inner(
        &self,
        ctx: CallContext,
        mut req: CompletionRequest,
    ) -> Result<ChatOutcome, PipelineError> {
        if !self.knows_model(&req.model) {
            return Err(match req.model.strip_prefix("agent:") {
                Some(agent) => PipelineError::UnknownAgent(agent.to_string()),
                None => PipelineError::UnknownModel(req.model.clone()),
            });
        }
        req.messages = self.validate(&ctx, Stage::Input, req.messages).await?;
        let mut completion = match req.model.strip_prefix("agent:") {
            Some(agent) => {
                let task = Task {
                    id: ctx.request_id.clone(),
                    input: req.messages,
                    metadata: req.metadata,
                };
                let inner = ctx.enter(agent).map_err(|failure| PipelineError::Agent {
                    agent: agent.to_string(),
                    failure,
                })?;
                let result = self.run_agent(inner, agent, task).await?;
                Completion {
                    message: result.output,
                    model: req.model.clone(),
                    finish_reason: "stop".into(),
                    usage: result.usage,
                    cached: false,
                }
            }
            None => {
                let span = Self::completion_span(&ctx, &req.model);
                self.complete(&ctx, req).instrument(span).await?
            }
        };
        if !self.settings.output_validators.is_empty() {
            let validated = self
                .validate(&ctx, Stage::Output, vec![completion.message.clone()])
                .await?;
            if let Some(last) = validated.into_iter().last() {
                completion.message = last;
            }
        }
        Ok(ChatOutcome {
            completion,
            steps: ctx.steps.snapshot(),
            cost_usd: ctx.steps.cost_usd(),
        })
    }

    /// Serves a chat request that asked for `stream: true`.
    ///
    /// A model request with no output validators streams live from the
    /// upstream. Agents, and answers that output validators must see whole
    /// before any of it leaves (PII redaction), are completed first and then
    /// replayed as a stream.
    pub async fn chat_stream(
        &self,
        ctx: CallContext,
        req: CompletionRequest,
    ) -> Result<StreamStart, PipelineError> {
        self.chat_stream_inner(ctx, req).await
    }

    async fn chat_stream_inner(
        &self,
        ctx: CallContext,
        mut req: CompletionRequest,
    ) -> Result<StreamStart, PipelineError> {
        if req.model.starts_with("agent:") || !self.settings.output_validators.is_empty() {
            return self.chat_inner(ctx, req).await.map(StreamStart::Buffered);
        }
        if !self.knows_model(&req.model) {
            return Err(PipelineError::UnknownModel(req.model));
        }
        req.messages = self.validate(&ctx, Stage::Input, req.messages).await?;
        let model = req.model.clone();
        let span = Self::completion_span(&ctx, &model);
        let events = self.open_stream(&ctx, req).instrument(span).await?;
        Ok(StreamStart::Live { model, events })
    }

    /// Runs agent `name` for a client (`/v1/agents/{name}/invoke`), with the
    /// input and output validators of a chat request.
    pub async fn invoke(
        &self,
        ctx: CallContext,
        name: &str,
        mut task: Task,
    ) -> Result<ChatOutcome, PipelineError> {
        if self.agent_slot(name).is_none() {
            return Err(PipelineError::UnknownAgent(name.to_string()));
        }
        let req = CompletionRequest {
            model: format!("agent:{name}"),
            messages: std::mem::take(&mut task.input),
            metadata: std::mem::take(&mut task.metadata),
            ..Default::default()
        };
        self.chat(ctx, req).await
    }

    /// Runs validators of one stage in order; a rewrite feeds the next one.
    async fn validate(
        &self,
        ctx: &CallContext,
        stage: Stage,
        messages: Vec<Message>,
    ) -> Result<Vec<Message>, PipelineError> {
        let names = match stage {
            Stage::Input => &self.settings.input_validators,
            Stage::Output => &self.settings.output_validators,
        };
        if names.is_empty() {
            return Ok(messages);
        }
        let stage_name = match stage {
            Stage::Input => "input",
            Stage::Output => "output",
        };
        let span = tracing::info_span!(
            "validate",
            otel.name = %format_args!("validate {stage_name}"),
            agentrouter.stage = stage_name,
            agentrouter.validators = names.len(),
        );
        self.run_validators(ctx, names, stage, messages)
            .instrument(span)
            .await
    }

    async fn run_validators(
        &self,
        ctx: &CallContext,
        names: &[String],
        stage: Stage,
        mut messages: Vec<Message>,
    ) -> Result<Vec<Message>, PipelineError> {
        for name in names {
            let Some(slot) = self.slots.get(name) else {
                continue;
            };
            match slot.plugin.validate(ctx, stage, &messages).await {
                Ok(Verdict::Allow) => {}
                Ok(Verdict::Rewrite(rewritten)) => messages = rewritten,
                Ok(Verdict::Reject(reason)) => {
                    return Err(PipelineError::Rejected {
                        validator: name.clone(),
                        stage,
                        reason,
                    });
                }
                Err(e) if slot.policy == FailurePolicy::Open => {
                    tracing::warn!(validator = %name, error = %e, "validator failed; passing (failure_policy = open)");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(messages)
    }

    /// Runs an agent slot in `inner`, a context that has already entered the
    /// agent (so depth, cycle and deadline guards were applied), and records
    /// the step for the caller.
    async fn run_agent(
        &self,
        inner: CallContext,
        name: &str,
        task: Task,
    ) -> Result<TaskResult, PipelineError> {
        let slot = self
            .agent_slot(name)
            .ok_or_else(|| PipelineError::UnknownAgent(name.to_string()))?;
        // `inner` has `name` on top of its chain; the step belongs to the caller below it.
        let depth = inner.chain.len().saturating_sub(1);
        let caller = if depth == 0 {
            "client".to_string()
        } else {
            inner.chain[depth - 1].clone()
        };
        let steps = inner.steps.clone();
        let started = Instant::now();
        let span = tracing::info_span!(
            "agent",
            otel.name = %format_args!("invoke_agent {name}"),
            otel.status_code = tracing::field::Empty,
            gen_ai.operation.name = "invoke_agent",
            gen_ai.agent.name = %name,
            agentrouter.caller = %caller,
            agentrouter.depth = depth,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let result = slot
            .plugin
            .handle(&task, inner, self.host())
            .instrument(span.clone())
            .await;
        let (usage, error) = match &result {
            Ok(Ok(r)) => (r.usage, None),
            Ok(Err(f)) => (Default::default(), Some(f.to_string())),
            Err(e) => (Default::default(), Some(e.to_string())),
        };
        span.record("gen_ai.usage.input_tokens", usage.prompt_tokens)
            .record("gen_ai.usage.output_tokens", usage.completion_tokens);
        if error.is_some() {
            span.record("otel.status_code", "ERROR")
                .record("error.type", "agent_failed");
        }
        steps.push(Step {
            kind: "agent".into(),
            target: name.to_string(),
            upstream: None,
            caller,
            depth: depth as u32,
            latency_ms: started.elapsed().as_millis() as u64,
            usage,
            cost_usd: 0.0,
            ok: error.is_none(),
            error,
        });
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(failure)) => Err(PipelineError::Agent {
                agent: name.to_string(),
                failure,
            }),
            Err(e) => Err(e.into()),
        }
    }
}

/// The pipeline as seen by agent plugins.
struct PipelineHost(Arc<Pipeline>);

impl AgentHost for PipelineHost {
    fn complete(
        &self,
        ctx: CallContext,
        req: CompletionRequest,
    ) -> BoxFuture<'static, Result<Completion, Failure>> {
        let pipeline = self.0.clone();
        Box::pin(async move {
            if !req.model.is_empty()
                && !pipeline
                    .upstreams
                    .iter()
                    .any(|u| u.info().model == req.model)
            {
                return Err(Failure::Denied(format!(
                    "model `{}` does not exist",
                    req.model
                )));
            }
            let span = Pipeline::completion_span(&ctx, &req.model);
            pipeline
                .complete(&ctx, req)
                .instrument(span)
                .await
                .map_err(|e| e.to_failure())
        })
    }

    fn call_agent(
        &self,
        ctx: CallContext,
        agent: String,
        task: Task,
    ) -> BoxFuture<'static, Result<TaskResult, Failure>> {
        let pipeline = self.0.clone();
        Box::pin(async move {
            // The runtime already entered `agent` (depth, cycle and deadline
            // guards) before the call left the sandbox.
            pipeline
                .run_agent(ctx, &agent, task)
                .await
                .map_err(|e| e.to_failure())
        })
    }
}
