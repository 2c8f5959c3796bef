//! The completion path: router → guarded upstream attempts → recovery.
//!
//! The router plugin orders the upstreams serving the requested model using
//! their live health; each failed attempt asks the recovery plugin what to
//! do next, and the host carries the decision out inside its own bounds:
//!
//! - attempts per completion (`resilience.max_attempts`) and the request's
//!   deadline; every attempt is also cut to its upstream's `timeout_ms`;
//! - retries wait a full-jitter draw below the plugin's ask (capped at
//!   `max_delay_ms`), never less than the upstream's `Retry-After`, and
//!   only while the upstream's retry budget has room;
//! - an upstream that answered 429 with a hint is not called again, by any
//!   request, before the hint expires;
//! - a circuit breaker and a bulkhead per upstream: an open breaker refuses
//!   without calling, a full bulkhead moves on to the next upstream (and
//!   answers 503 when every one is full);
//! - fallbacks only to upstreams serving the model or a model of its
//!   configured fallback chain; chunking is capped;
//! - an upstream's refusal of the request itself (`Failure::ClientError`,
//!   a 4xx such as 400 `unsupported_parameter`) ends the completion at
//!   once with the upstream's answer: no retry, no fallback, no recovery
//!   plugin, no alert, and nothing held against the upstream.
//!
//! Where a completion stands is a [`Plan`]; each attempt is made, gated and
//! recorded by its [`GuardedUpstream`].

use super::guarded::{AttemptError, GuardedUpstream};
use super::plan::{Move, Plan};
use super::{FailurePolicy, Pipeline, PipelineError};
use crate::domain::{
    Action, CallContext, Candidate, Completion, CompletionRequest, Failure, FailureContext,
    Message, Role, RouteRequest,
};
use crate::resilience::{Alert, retry_delay};
use crate::telemetry::metrics::ActionLabels;
use crate::upstream::EventStream;
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most chunks a chunk-and-retry may produce; beyond it the input is refused.
const MAX_CHUNKS: usize = 32;

/// The short name of an action, for metric labels.
fn action_label(action: &Action) -> &'static str {
    match action {
        Action::Retry(_) => "retry",
        Action::Fallback(_) => "fallback",
        Action::ChunkAndRetry(_) => "chunk",
        Action::Refine(_) => "refine",
        Action::Fail(_) => "fail",
    }
}

/// Approximate tokens of a conversation (4 characters per token).
fn estimate_tokens(messages: &[Message]) -> u32 {
    let chars: usize = messages.iter().map(|m| m.content.chars().count()).sum();
    crate::upstream::estimate_tokens(chars)
}

impl Pipeline {
    /// The upstreams to try for `req.model` (empty: every upstream), in the
    /// router's order.
    async fn route(
        &self,
        ctx: &CallContext,
        req: &CompletionRequest,
    ) -> Result<Vec<Arc<GuardedUpstream>>, PipelineError> {
        let serving: Vec<Arc<GuardedUpstream>> = self
            .upstreams
            .iter()
            .filter(|u| req.model.is_empty() || u.info().model == req.model)
            .cloned()
            .collect();
        if serving.is_empty() {
            return Err(PipelineError::UnknownModel(req.model.clone()));
        }
        let Some(router) = self
            .settings
            .router
            .as_ref()
            .and_then(|r| self.slots.get(r))
        else {
            return Ok(serving);
        };
        let route_req = RouteRequest {
            model: req.model.clone(),
            prompt_tokens: estimate_tokens(&req.messages),
            message_count: req.messages.len() as u32,
            has_tools: !req.tools.is_empty(),
            metadata: req.metadata.clone(),
        };
        let now = Instant::now();
        let described: Vec<Candidate> = serving.iter().map(|u| u.candidate(now)).collect();
        match router.plugin.route(ctx, &route_req, &described).await {
            Ok(order) if !order.is_empty() => Ok(order
                .iter()
                .filter_map(|n| serving.iter().find(|u| u.name() == n).cloned())
                .collect()),
            // A router that offers nothing leaves the configured order.
            Ok(_) => Ok(serving),
            Err(e) if router.policy == FailurePolicy::Open => {
                tracing::warn!(router = %router.plugin.identity(), error = %e, "router failed; using configured order");
                Ok(serving)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Adds the upstreams of the model's fallback chain to `plan` (each
    /// model routed by the router like a request for it), once.
    async fn add_chain(
        &self,
        ctx: &CallContext,
        req: &CompletionRequest,
        plan: &mut Plan,
    ) -> Result<(), PipelineError> {
        if plan.chained() {
            return Ok(());
        }
        let mut chain = Vec::new();
        for model in self
            .settings
            .fallbacks
            .get(&req.model)
            .into_iter()
            .flatten()
        {
            let mut next = req.clone();
            next.model = model.clone();
            chain.extend(self.route(ctx, &next).await?);
        }
        plan.add_chain(chain);
        Ok(())
    }

    /// The plan for `req`: the routed upstreams, and — when none of them can
    /// serve right now — the fallback chain's behind them, healthy ones first.
    async fn plan(
        &self,
        ctx: &CallContext,
        req: &CompletionRequest,
    ) -> Result<Plan, PipelineError> {
        let order = self.route(ctx, req).await?;
        let mut plan = Plan::new(order, false)
            .ok_or_else(|| PipelineError::UnknownModel(req.model.clone()))?;
        let now = Instant::now();
        if !plan.order().iter().any(|u| u.health().healthy(now)) {
            self.add_chain(ctx, req, &mut plan).await?;
            plan.healthy_first(now);
        }
        Ok(plan)
    }

    /// What to do after a failure: the recovery plugin's choice, or — with
    /// no recovery plugin — the next upstream in the routed order.
    async fn decide(
        &self,
        ctx: &CallContext,
        fctx: &FailureContext,
    ) -> Result<Action, PipelineError> {
        let default = || match fctx.alternatives.first() {
            Some(next) => Action::Fallback(next.clone()),
            None => Action::Fail(false),
        };
        let Some(slot) = self
            .settings
            .recovery
            .as_ref()
            .and_then(|r| self.slots.get(r))
        else {
            return Ok(default());
        };
        match slot.plugin.recover(ctx, fctx).await {
            Ok(action) => Ok(action),
            Err(e) if slot.policy == FailurePolicy::Open => {
                tracing::warn!(recovery = %slot.plugin.identity(), error = %e, "recovery plugin failed; falling back to the next upstream");
                Ok(default())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Raises the alert a recovery plugin asked for.
    fn alert(&self, ctx: &CallContext, model: &str, upstream: &str, failure: &Failure) {
        let source = self
            .settings
            .recovery
            .as_ref()
            .and_then(|r| self.slots.get(r))
            .map_or_else(|| "host".to_string(), |s| s.plugin.identity().to_string());
        self.alerter.raise(Alert {
            event: "agentrouter.alert",
            source,
            model: model.to_string(),
            upstream: upstream.to_string(),
            failure: failure.to_string(),
            request_id: ctx.request_id.clone(),
            timestamp: crate::clock::unix_s(),
        });
    }

    /// Serves a completion for a model (empty model: any upstream the router picks).
    pub(super) async fn complete(
        &self,
        ctx: &CallContext,
        mut req: CompletionRequest,
    ) -> Result<Completion, PipelineError> {
        let mut plan = self.plan(ctx, &req).await?;
        let model = req.model.clone();
        let give_up = |failure| PipelineError::Upstream {
            model: model.clone(),
            failure,
        };
        let max_attempts = self.settings.max_attempts.max(1);
        loop {
            let upstream = plan.current().clone();
            let failure = match upstream.complete(ctx, &req, plan.retrying()).await {
                Ok(completion) => return Ok(completion),
                // The upstream refused the request itself: no retry, other
                // upstream or recovery plugin can mend it, and the client
                // gets the upstream's own answer.
                Err(AttemptError::Failed(failure)) if failure.is_client_error() => {
                    return Err(give_up(failure));
                }
                Err(AttemptError::Failed(failure)) => failure,
                // A full bulkhead is not a failure of the upstream: move on
                // to one with room without spending an attempt.
                Err(AttemptError::Saturated) => {
                    self.add_chain(ctx, &req, &mut plan).await?;
                    if plan.skip_saturated() {
                        continue;
                    }
                    return Err(PipelineError::Overloaded {
                        scope: upstream.name().to_string(),
                    });
                }
            };
            plan.failed();
            if plan.attempts() >= max_attempts || ctx.remaining().is_zero() {
                return Err(give_up(failure));
            }
            self.add_chain(ctx, &req, &mut plan).await?;
            let fctx = FailureContext {
                failure: failure.clone(),
                upstream: upstream.name().to_string(),
                attempt: plan.attempts(),
                max_attempts,
                remaining_ms: ctx.remaining().as_millis() as u64,
                alternatives: plan.alternatives(Instant::now()),
                request: req.clone(),
            };
            let action = self.decide(ctx, &fctx).await?;
            self.metrics()
                .recovery_actions
                .get_or_create(&ActionLabels {
                    upstream: upstream.name().to_string(),
                    action: action_label(&action).to_string(),
                })
                .inc();
            match plan.apply(&action) {
                Move::Next => {}
                Move::Again => {
                    if !upstream.take_retry(ctx) {
                        return Err(give_up(failure));
                    }
                    match action {
                        Action::Retry(delay_ms) => {
                            let hint = upstream.health().cooling(Instant::now());
                            let Some(delay) = retry_delay(
                                Duration::from_millis(u64::from(delay_ms)),
                                hint,
                                self.settings.max_delay,
                                ctx.remaining(),
                                rand::rng().random::<f64>(),
                            ) else {
                                // The upstream's hint outlasts the deadline.
                                return Err(give_up(failure));
                            };
                            tokio::time::sleep(delay).await;
                        }
                        Action::Refine(messages) => {
                            req.messages = super::rewrite::carry_over(&req.messages, messages);
                        }
                        _ => {}
                    }
                }
                Move::Chunk(max_chars) => {
                    return match self.chunked(ctx, &upstream, req, max_chars).await {
                        Ok(completion) => Ok(completion),
                        Err(AttemptError::Failed(failure)) => Err(give_up(failure)),
                        Err(AttemptError::Saturated) => Err(PipelineError::Overloaded {
                            scope: upstream.name().to_string(),
                        }),
                    };
                }
                Move::GiveUp { alert } => {
                    if alert {
                        self.alert(ctx, &model, upstream.name(), &failure);
                    }
                    return Err(give_up(failure));
                }
            }
        }
    }

    /// Splits the last user message into chunks of at most `max_chars`,
    /// completes each on `upstream`, and merges the answers.
    async fn chunked(
        &self,
        ctx: &CallContext,
        upstream: &GuardedUpstream,
        req: CompletionRequest,
        max_chars: usize,
    ) -> Result<Completion, AttemptError> {
        let refuse = || AttemptError::Failed(Failure::TokenLimitExceeded);
        let Some(pos) = req.messages.iter().rposition(|m| m.role == Role::User) else {
            return Err(refuse());
        };
        let chars: Vec<char> = req.messages[pos].content.chars().collect();
        if max_chars == 0 || chars.len().div_ceil(max_chars) > MAX_CHUNKS {
            return Err(refuse());
        }
        let mut merged: Option<Completion> = None;
        for chunk in chars.chunks(max_chars) {
            let mut part = req.clone();
            part.messages[pos].content = chunk.iter().collect();
            let answer = upstream.complete(ctx, &part, false).await?;
            merged = Some(match merged {
                None => answer,
                Some(mut acc) => {
                    acc.message.content.push('\n');
                    acc.message.content.push_str(&answer.message.content);
                    acc.usage = acc.usage.plus(answer.usage);
                    acc
                }
            });
        }
        merged.ok_or_else(refuse)
    }

    /// Opens a live stream for a completion. Upstreams are tried in planned
    /// order (fallback chain included) until one produces a first event
    /// within its `first_token_timeout_ms`; before that nothing has reached
    /// the client, so a failure moves on to the next upstream. Once the
    /// first event is in hand the stream is the answer: it is never retried,
    /// and a silence longer than `idle_timeout_ms` (or the request's
    /// deadline) ends it with a timeout.
    pub(super) async fn open_stream(
        &self,
        ctx: &CallContext,
        req: CompletionRequest,
    ) -> Result<EventStream, PipelineError> {
        let mut plan = self.plan(ctx, &req).await?;
        self.add_chain(ctx, &req, &mut plan).await?;
        let max_attempts = self.settings.max_attempts.max(1);
        let mut last = None;
        let mut attempts = 0;
        for upstream in plan.order() {
            if attempts >= max_attempts || ctx.remaining().is_zero() {
                break;
            }
            match upstream.stream(ctx, &req).await {
                Ok(events) => return Ok(events),
                Err(AttemptError::Saturated) => continue,
                // As for a whole answer: the request's own fault ends it.
                Err(AttemptError::Failed(failure)) if failure.is_client_error() => {
                    return Err(PipelineError::Upstream {
                        model: req.model,
                        failure,
                    });
                }
                Err(AttemptError::Failed(failure)) => {
                    attempts += 1;
                    last = Some(failure);
                }
            }
        }
        match last {
            Some(failure) => Err(PipelineError::Upstream {
                model: req.model,
                failure,
            }),
            // Nothing was attempted: every upstream's bulkhead was full.
            None if !ctx.remaining().is_zero() => Err(PipelineError::Overloaded {
                scope: plan.order()[0].name().to_string(),
            }),
            None => Err(PipelineError::Upstream {
                model: req.model,
                failure: Failure::Timeout,
            }),
        }
    }
}
