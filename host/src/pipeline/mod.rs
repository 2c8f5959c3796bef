//! The request pipeline: input validators → target (agent, or the
//! completion path: router → guarded upstreams with recovery) → output
//! validators, every step recorded in the request's ledger.
//!
//! Agents re-enter the completion path through [`AgentHost`]: their
//! `llm.complete` calls are routed and recovered like a client's, and their
//! `agents.call` delegations run other agent slots, all under the caller's
//! [`CallContext`] (identity, deadline, depth, cycle guard, ledger).
//! Validators apply at the request's edge, not to an agent's inner calls.
//!
//! The pipeline knows nothing of HTTP, caching or keys: the request layer
//! (`gateway`) hands it a target, a request and a context, and reads the
//! context's ledger afterwards.

mod agents;
mod attempt;
pub mod budget;
mod completion;
mod decision;
mod embed;
mod error;
mod guarded;
mod passthrough;
mod plan;
mod race;
mod rewrite;
mod rules;
mod status;

pub use budget::{AgentBudgetOverrides, BudgetSettings, BudgetsConfig};
pub use error::{PipelineError, WiringError};
pub use guarded::GuardedUpstream;
pub use rules::{MessageLimit, MessageRules, RuleViolation};

use crate::domain::{
    CallContext, Candidate, Completion, CompletionRequest, Endpoint, Message, Stage, Target, Task,
    Verdict,
};
use crate::resilience::Alerter;
use crate::rollout::HotPlugin;
use crate::runtime::World;
use crate::telemetry::Metrics;
use crate::upstream::EventStream;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tracing::Instrument;

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
    /// Per model, the models to fall back to when its own upstreams cannot serve.
    pub fallbacks: HashMap<String, Vec<String>>,
    /// Where alerts are posted, besides the log and the metric.
    pub alert_webhook: Option<String>,
    /// The host's rules for a conversation: the client's, and whatever a
    /// plugin hands back in its place (a rewrite, a refinement, an agent's
    /// completion request or delegated task).
    pub rules: MessageRules,
    /// What agents may make the host do, per call and per request.
    pub budgets: BudgetSettings,
    /// Where the pipeline counts what it does.
    pub metrics: Arc<Metrics>,
}

/// Default `resilience.max_attempts`: five, so that two providers each
/// failing 30 % of calls independently still serve 99 % of requests
/// (`1 - 0.3^5` = 99.76 %; four attempts give 99.19 % on average, which a
/// run of 1,000 requests misses about one time in five). The retry budget,
/// not this bound, is what keeps an outage from being amplified.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Default `resilience.max_delay_ms`.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10);

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            input_validators: Vec::new(),
            output_validators: Vec::new(),
            router: None,
            recovery: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_delay: DEFAULT_MAX_DELAY,
            fallbacks: HashMap::new(),
            alert_webhook: None,
            rules: MessageRules::default(),
            budgets: BudgetSettings::default(),
            metrics: Arc::new(Metrics::new()),
        }
    }
}

/// A served answer.
pub enum Output {
    /// The whole answer, after output validators.
    Whole(Completion),
    /// Events straight from the upstream (a stream with no output validators).
    Live {
        /// The requested model.
        model: String,
        /// The upstream's events; the step is in the ledger when they end.
        events: EventStream,
    },
}

/// The request pipeline; shared as `Arc<Pipeline>`.
pub struct Pipeline {
    slots: HashMap<String, Slot>,
    upstreams: Vec<Arc<GuardedUpstream>>,
    settings: PipelineSettings,
    alerter: Alerter,
    me: Weak<Pipeline>,
}

impl Pipeline {
    /// Wires a pipeline from slots and guarded upstreams. Slot references in
    /// `settings` must exist with the right world (config validation
    /// guarantees it; this re-checks). Upstreams kept from a previous
    /// pipeline keep their health.
    pub fn new(
        slots: HashMap<String, Slot>,
        upstreams: Vec<Arc<GuardedUpstream>>,
        settings: PipelineSettings,
    ) -> Result<Arc<Pipeline>, WiringError> {
        let check = |name: &String, expected: World| match slots.get(name) {
            Some(slot) if slot.plugin.world() == expected => Ok(()),
            Some(slot) => Err(WiringError::WrongWorld {
                slot: name.clone(),
                actual: slot.plugin.world(),
                expected,
            }),
            None => Err(WiringError::MissingSlot(name.clone())),
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
            return Err(WiringError::NoUpstreams);
        }
        let alerter = Alerter::new(
            settings.alert_webhook.clone(),
            crate::net::http_client(),
            settings.metrics.clone(),
        );
        Ok(Arc::new_cyclic(|me| Pipeline {
            slots,
            upstreams,
            settings,
            alerter,
            me: me.clone(),
        }))
    }

    /// Raises alerts (log, metric, `resilience.alert_webhook`).
    pub fn alerter(&self) -> &Alerter {
        &self.alerter
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

    /// The guarded upstreams.
    pub fn upstreams(&self) -> &[Arc<GuardedUpstream>] {
        &self.upstreams
    }

    /// The upstreams as a router sees them now: what a router's smoke call
    /// is given.
    pub fn candidates(&self) -> Vec<Candidate> {
        let now = Instant::now();
        self.upstreams.iter().map(|u| u.candidate(now)).collect()
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
            .map(|(n, _)| Target::Agent(n.clone()).to_string())
            .collect();
        agents.sort();
        models.extend(agents);
        models
    }

    /// Whether `target` names an upstream model or an agent slot.
    pub fn knows(&self, target: &Target) -> bool {
        match target {
            Target::Agent(agent) => self.agent_slot(agent).is_some(),
            Target::Model(model) => self.serves(model),
        }
    }

    /// Whether an upstream serves chat completions for `model` (one that
    /// speaks the Responses API serves `/v1/responses` for it too).
    fn serves(&self, model: &str) -> bool {
        self.upstreams.iter().any(|u| {
            u.info().model == model
                && (u.info().serves(Endpoint::Chat) || u.info().serves(Endpoint::Responses))
        })
    }

    /// The endpoints served for model `id` (every one of its upstreams'),
    /// or for an agent (`chat`: agents answer conversations).
    pub fn endpoints(&self, id: &str) -> Vec<Endpoint> {
        if let Target::Agent(_) = Target::parse(id) {
            return vec![Endpoint::Chat];
        }
        let mut all: Vec<Endpoint> = Vec::new();
        for u in self.upstreams.iter().filter(|u| u.info().model == id) {
            for e in &u.info().serves {
                if !all.contains(e) {
                    all.push(*e);
                }
            }
        }
        all
    }

    /// The validators that approve answers, as they are live now: their
    /// slots in order, with the serving plugin's digest. A cached answer is
    /// only valid under the same validators.
    pub fn answer_validators(&self) -> Vec<(String, String)> {
        self.settings
            .input_validators
            .iter()
            .chain(&self.settings.output_validators)
            .filter_map(|name| {
                let slot = self.slots.get(name)?;
                Some((name.clone(), slot.plugin.identity().digest))
            })
            .collect()
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

    /// Serves `req` for `target` in `ctx`: validated input, the agent or
    /// the completion path, validated output.
    pub async fn serve(
        &self,
        ctx: &CallContext,
        target: &Target,
        req: CompletionRequest,
    ) -> Result<Completion, PipelineError> {
        let req = self.admit(ctx, target, req).await?;
        let mut completion = match target {
            Target::Agent(agent) => {
                let task = Task {
                    id: ctx.request_id.clone(),
                    input: req.messages,
                    metadata: req.metadata,
                };
                let inner = ctx.enter(agent).map_err(|failure| PipelineError::Agent {
                    agent: agent.clone(),
                    failure,
                })?;
                let result = self.run_agent(inner, agent, task).await?;
                Completion {
                    message: result.output,
                    model: target.to_string(),
                    finish_reason: "stop".into(),
                    usage: result.usage,
                    cached: false,
                    details: Default::default(),
                }
            }
            Target::Model(model) => {
                let span = Self::completion_span(ctx, model);
                self.complete(ctx, req).instrument(span).await?
            }
        };
        if !self.settings.output_validators.is_empty() {
            self.validate_answer(ctx, &mut completion).await?;
        }
        Ok(completion)
    }

    /// Runs the output validators on every choice of an answer, one choice
    /// at a time (each is an answer on its own, as one assistant message —
    /// the contract's view of an answer); any rejection rejects the whole
    /// answer. A choice whose text a validator rewrote loses its logprobs:
    /// they spell the text the validator replaced.
    async fn validate_answer(
        &self,
        ctx: &CallContext,
        completion: &mut Completion,
    ) -> Result<(), PipelineError> {
        for (message, extra) in completion.choices_mut() {
            let validated = self
                .validate(ctx, Stage::Output, vec![message.clone()])
                .await?;
            if let Some(last) = rewrite::carry_over(std::slice::from_ref(message), validated).pop()
            {
                if last.content != message.content {
                    extra.remove("logprobs");
                }
                *message = last;
            }
        }
        Ok(())
    }

    /// Serves `req` for a client that wants a stream: a model request with
    /// no output validators streams live from the upstream; agents, and
    /// answers that output validators must see whole before any of it
    /// leaves (PII redaction), are answered whole for the caller to replay.
    pub async fn serve_stream(
        &self,
        ctx: &CallContext,
        target: &Target,
        req: CompletionRequest,
    ) -> Result<Output, PipelineError> {
        let Target::Model(model) = target else {
            return self.serve(ctx, target, req).await.map(Output::Whole);
        };
        if !self.settings.output_validators.is_empty() {
            return self.serve(ctx, target, req).await.map(Output::Whole);
        }
        let req = self.admit(ctx, target, req).await?;
        let span = Self::completion_span(ctx, model);
        let events = self.open_stream(ctx, req).instrument(span).await?;
        Ok(Output::Live {
            model: model.clone(),
            events,
        })
    }

    /// Refuses a target that does not exist, and runs the input validators.
    async fn admit(
        &self,
        ctx: &CallContext,
        target: &Target,
        mut req: CompletionRequest,
    ) -> Result<CompletionRequest, PipelineError> {
        if !self.knows(target) {
            return Err(match target {
                Target::Agent(agent) => PipelineError::UnknownAgent(agent.clone()),
                Target::Model(model) => PipelineError::UnknownModel(model.clone()),
            });
        }
        req.messages = self.validate(ctx, Stage::Input, req.messages).await?;
        Ok(req)
    }

    /// Runs validators of one stage in order; a rewrite feeds the next one.
    async fn validate(
        &self,
        ctx: &CallContext,
        stage: Stage,
        mut messages: Vec<Message>,
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
        async {
            for name in names {
                let Some(slot) = self.slots.get(name) else {
                    continue;
                };
                match slot.plugin.validate(ctx, stage, &messages).await {
                    Ok(Verdict::Allow) => {}
                    Ok(Verdict::Rewrite(rewritten)) => {
                        // A rewrite is held to the client's rules.
                        match self.settings.rules.check_stage(stage, &rewritten) {
                            Ok(()) => messages = rewrite::carry_over(&messages, rewritten),
                            Err(violation) if slot.policy == FailurePolicy::Open => {
                                self.refused_decision(name, "rewrite");
                                tracing::warn!(validator = %slot.plugin.identity(), error = %violation, "validator rewrite breaks the host's rules; ignored (failure_policy = open)");
                            }
                            Err(violation) => {
                                self.refused_decision(name, "rewrite");
                                return Err(PipelineError::Rewrite {
                                    validator: slot.plugin.identity().to_string(),
                                    stage,
                                    violation,
                                });
                            }
                        }
                    }
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
        .instrument(span)
        .await
    }
}
