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
//!   configured fallback chain, offered only when they can take a call
//!   now; a fallback is a first attempt there, never charged to the failed
//!   upstream's retry budget, and a spent budget still lets an untried
//!   upstream serve; chunking is capped;
//! - a decision the host will not carry out (chunk size 0, a retry past
//!   the deadline, an unknown fallback) is refused naming the plugin and
//!   what it asked (`decision.rs`), and an end the plugin decided names it;
//! - an attempt still unanswered after its upstream's hedge delay is
//!   hedged to an untried upstream, within the slow upstream's hedge
//!   budget; the first good answer wins and the other call is cancelled;
//! - a completion that gives up reports its last real upstream failure,
//!   never a refusal of the host's own (a pending `Retry-After`) while one
//!   is known.
//! - an upstream's refusal of the request itself (`Failure::ClientError`,
//!   a 4xx such as 400 `unsupported_parameter`) ends the completion at
//!   once with the upstream's answer: no retry, no fallback, no recovery
//!   plugin, no alert, and nothing held against the upstream.
//!
//! A streamed completion follows the same plan until its first event (see
//! `attempt.rs`): nothing has reached the client before it, so it is
//! retried, falls back and is hedged like a whole answer; once the first
//! event is in hand it is the answer and never repeated.
//!
//! Where a completion stands is a [`Plan`]; each attempt is made, gated and
//! recorded by its [`GuardedUpstream`].

use super::attempt::Attempt;
use super::guarded::{AttemptError, GuardedUpstream};
use super::plan::{Move, Plan};
use super::race::{Event, Finished, Race};
use super::{FailurePolicy, Pipeline, PipelineError};
use crate::domain::{
    Action, CallContext, Candidate, Completion, CompletionRequest, Endpoint, Failure,
    FailureContext, Message, RouteRequest,
};
use crate::resilience::{Alert, retry_delay};
use crate::telemetry::metrics::{ActionLabels, UpstreamLabels};
use crate::upstream::EventStream;
use futures::FutureExt;
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::decision::{action_label, describe};

/// The failures of one completion's attempts, and which one a client is
/// told about when the completion gives up.
#[derive(Default)]
struct Failures {
    /// The last failure an upstream really produced other than a rate
    /// limit (a status, a timeout, a malformed body).
    real: Option<Failure>,
    /// The last rate limit an upstream really answered.
    limited: Option<Failure>,
    /// The last call the host refused to make (cooling down, circuit open).
    refused: Option<Failure>,
}

impl Failures {
    /// Notes a real failure; returns it.
    fn real(&mut self, failure: Failure) -> Failure {
        let slot = match failure {
            Failure::RateLimited(_) => &mut self.limited,
            _ => &mut self.real,
        };
        *slot = Some(failure.clone());
        failure
    }

    /// Notes a refusal; returns it.
    fn refused(&mut self, failure: Failure) -> Failure {
        self.refused = Some(failure.clone());
        failure
    }

    /// What to report: the last real failure that is not a rate limit,
    /// else the last rate limit, else the last refusal — so a client is
    /// answered 429 only when every upstream it could go to rate-limited
    /// it or was cooling down, and a spent retry budget shows as the
    /// upstream's own failure (502, 504).
    fn last(self) -> Option<Failure> {
        self.real.or(self.limited).or(self.refused)
    }

    /// The error that ends the completion: naming the recovery plugin's
    /// decision when one ended it.
    fn give_up(self, model: &str, decision: Option<String>) -> PipelineError {
        ended(model, self.last().unwrap_or(Failure::Timeout), decision)
    }
}

/// The error of a completion that ended on `failure`, naming the recovery
/// plugin and what it asked when its decision ended it.
fn ended(model: &str, failure: Failure, decision: Option<String>) -> PipelineError {
    let model = model.to_string();
    match decision {
        Some(decision) => PipelineError::GaveUp {
            model,
            failure,
            decision,
        },
        None => PipelineError::Upstream { model, failure },
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
            .filter(|u| u.info().serves(Endpoint::Chat))
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
        }
        // The router does not see `Retry-After` cooldowns: an upstream
        // that would refuse the call is not the first one tried.
        plan.healthy_first(now);
        Ok(plan)
    }

    /// What to do after a failure: the recovery plugin's choice, with who
    /// made it (`recovery name@version` and its slot), or — with no
    /// recovery plugin, or a fail-open one that failed — the host's: the
    /// next upstream in the routed order.
    async fn decide(
        &self,
        ctx: &CallContext,
        fctx: &FailureContext,
    ) -> Result<(Action, Option<(String, String)>), PipelineError> {
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
            return Ok((default(), None));
        };
        match slot.plugin.recover(ctx, fctx).await {
            Ok(action) => {
                let by = format!("recovery {}", slot.plugin.identity());
                Ok((action, Some((by, slot.plugin.name().to_string()))))
            }
            Err(e) if slot.policy == FailurePolicy::Open => {
                tracing::warn!(recovery = %slot.plugin.identity(), error = %e, "recovery plugin failed; falling back to the next upstream");
                Ok((default(), None))
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
            kind: "request_failed",
            source,
            model: model.to_string(),
            upstream: upstream.to_string(),
            failure: failure.to_string(),
            request_id: ctx.request_id.clone(),
            timestamp: crate::clock::unix_s(),
            key: None,
        });
    }

    /// Starts an attempt on the plan's current upstream after `delay` (a
    /// retry's backoff), and arms the hedge timer for it.
    fn launch<A: Attempt>(
        &self,
        ctx: &CallContext,
        req: &CompletionRequest,
        plan: &mut Plan,
        race: &mut Race<A, AttemptError>,
        delay: Duration,
        hedge: bool,
    ) {
        let entry = plan.entry();
        let upstream = plan.current().clone();
        let retry = plan.retrying();
        plan.started();
        let (ctx, req, called) = (ctx.clone(), req.clone(), upstream.clone());
        race.push(
            async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let result = A::call(called, ctx, req, retry).await;
                Finished {
                    entry,
                    hedge,
                    result,
                }
            }
            .boxed(),
        );
        match upstream.health().hedge_delay() {
            Some(after) => race.hedge_at(Instant::now() + delay + after, entry),
            None => race.no_hedge(),
        }
    }

    /// The attempt on `order[entry]` has outlasted its hedge delay: sends
    /// the request to the next upstream that has not had it, if the slow
    /// upstream's hedge budget and the attempt bound allow — or, once every
    /// upstream has had it, to one whose attempt failed, as a retry there
    /// that its retry budget must allow too (else a request whose first
    /// upstream failed and whose fallback hangs would wait for the whole
    /// `timeout_ms`). The first good answer wins; the other call is
    /// cancelled.
    fn hedge<A: Attempt>(
        &self,
        ctx: &CallContext,
        req: &CompletionRequest,
        plan: &mut Plan,
        race: &mut Race<A, AttemptError>,
        entry: usize,
    ) {
        let max_attempts = self.settings.max_attempts.max(1);
        if plan.attempts() + race.len() as u32 >= max_attempts || ctx.remaining().is_zero() {
            return;
        }
        let now = Instant::now();
        let (target, again) = match plan.untried(now) {
            Some(target) => (target, false),
            None => match plan.idle_tried(now) {
                Some(target) => (target, true),
                None => return,
            },
        };
        let slow = plan.order()[entry].clone();
        let sent =
            slow.health().take_hedge(now) && (!again || plan.order()[target].take_retry(ctx));
        self.metrics()
            .hedges
            .get_or_create(&UpstreamLabels {
                upstream: slow.name().to_string(),
                outcome: if sent { "sent" } else { "budget-exhausted" }.to_string(),
            })
            .inc();
        if sent {
            if again {
                plan.select_again(target);
            } else {
                plan.select(target);
            }
            self.launch(ctx, req, plan, race, Duration::ZERO, true);
        }
    }

    /// Serves a completion for a model (empty model: any upstream the
    /// router picks), answered whole.
    pub(super) async fn complete(
        &self,
        ctx: &CallContext,
        req: CompletionRequest,
    ) -> Result<Completion, PipelineError> {
        self.run(ctx, req).await
    }

    /// Opens a live stream for a completion. Until an upstream produces a
    /// first event (within its `first_token_timeout_ms`) nothing has reached
    /// the client, so a stream follows the plan a whole answer does:
    /// retries within the budget, fallbacks, the recovery plugin's
    /// decisions, the attempt cap and hedges of a slow opening. Once the
    /// first event is in hand the stream is the answer: it is never
    /// retried or hedged, and a silence longer than `idle_timeout_ms` (or
    /// the request's deadline) ends it with a timeout.
    pub(super) async fn open_stream(
        &self,
        ctx: &CallContext,
        req: CompletionRequest,
    ) -> Result<EventStream, PipelineError> {
        self.run(ctx, req).await
    }

    /// Runs a completion's plan until an attempt answers (a whole answer,
    /// or a stream's first event). Attempts run in a [`Race`]: usually one
    /// at a time, two when a slow one is hedged or one fails while a hedge
    /// runs; the first good answer ends the race and cancels the rest.
    async fn run<A: Attempt>(
        &self,
        ctx: &CallContext,
        mut req: CompletionRequest,
    ) -> Result<A, PipelineError> {
        let mut plan = self.plan(ctx, &req).await?;
        let model = req.model.clone();
        let max_attempts = self.settings.max_attempts.max(1);
        let mut race = Race::new();
        let mut failures = Failures::default();
        // What the recovery plugin asked that ended the completion, for the
        // error the client gets once nothing is in flight.
        let mut ended_by: Option<String> = None;
        // The next attempt to start, after this delay.
        let mut next = Some(Duration::ZERO);
        loop {
            if let Some(delay) = next.take() {
                self.launch(ctx, &req, &mut plan, &mut race, delay, false);
            }
            // Nothing in flight and nothing to start: the request has
            // used what it may.
            let Some(event) = race.next().await else {
                return Err(failures.give_up(&model, ended_by));
            };
            let finished = match event {
                Event::Hedge(entry) => {
                    self.hedge(ctx, &req, &mut plan, &mut race, entry);
                    continue;
                }
                Event::Finished(finished) => finished,
            };
            plan.ended(finished.entry);
            let upstream = plan.current().clone();
            let failure = match finished.result {
                Ok(answer) => {
                    if finished.hedge {
                        tracing::debug!(upstream = %upstream.name(), request = %ctx.request_id, "a hedge answered first");
                    }
                    return Ok(answer);
                }
                // The upstream refused the request itself: no retry, other
                // upstream or recovery plugin can mend it, and the client
                // gets the upstream's own answer.
                Err(AttemptError::Failed(failure)) if failure.is_client_error() => {
                    return Err(ended(&model, failure, None));
                }
                Err(AttemptError::Failed(failure)) => failures.real(failure),
                Err(AttemptError::Refused(failure)) => failures.refused(failure),
                // A full bulkhead is not a failure of the upstream: move on
                // to one with room without spending an attempt.
                Err(AttemptError::Saturated) => {
                    self.add_chain(ctx, &req, &mut plan).await?;
                    if plan.skip_saturated() {
                        next = Some(Duration::ZERO);
                        continue;
                    }
                    if race.is_empty() {
                        return Err(PipelineError::Overloaded {
                            scope: upstream.name().to_string(),
                        });
                    }
                    continue;
                }
            };
            plan.failed();
            // Out of attempts or time: let any other attempt finish.
            if plan.attempts() + race.len() as u32 >= max_attempts || ctx.remaining().is_zero() {
                continue;
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
            let (action, by) = self.decide(ctx, &fctx).await?;
            if let Some((who, slot)) = &by {
                self.check_decision((who, slot), &action, &fctx, &plan)?;
            }
            // An end the plugin decided (or a decision the host could not
            // grant) names the plugin and what it asked.
            let decision = |why: &str| {
                by.as_ref()
                    .map(|(who, _)| format!("{who} asked {}{why}", describe(&action)))
            };
            self.metrics()
                .recovery_actions
                .get_or_create(&ActionLabels {
                    upstream: upstream.name().to_string(),
                    action: action_label(&action).to_string(),
                })
                .inc();
            match plan.apply(&action) {
                Move::Next => next = Some(Duration::ZERO),
                // Another attempt of this request is still running (the
                // slow original a hedge failed beside, or the hedge): a
                // retry after a backoff would most likely come after its
                // answer. Wait for it instead, and hedge it again after its
                // delay — to this upstream, as a retry, should it still be
                // running then.
                Move::Again if matches!(action, Action::Retry(_)) && !race.is_empty() => {
                    if let Some(entry) = plan.running_entry()
                        && let Some(after) = plan.order()[entry].health().hedge_delay()
                    {
                        race.hedge_at(Instant::now() + after, entry);
                    }
                }
                Move::Again => {
                    let again = plan.current().clone();
                    if !again.take_retry(ctx) {
                        // The budget caps calls to this upstream only: an
                        // upstream the request has not tried still gets it,
                        // as a first attempt there.
                        if let Some(entry) = plan.untried(Instant::now()) {
                            plan.select(entry);
                            next = Some(Duration::ZERO);
                        } else {
                            ended_by = decision(&format!(
                                "; refused: the retry budget of upstream `{}` is spent",
                                again.name()
                            ));
                        }
                        continue;
                    }
                    next = match action {
                        Action::Retry(delay_ms) => {
                            let delay = retry_delay(
                                Duration::from_millis(u64::from(delay_ms)),
                                again.health().cooling(Instant::now()),
                                self.settings.max_delay,
                                ctx.remaining(),
                                rand::rng().random::<f64>(),
                            );
                            if delay.is_none() {
                                ended_by = decision(
                                    "; refused: the upstream's Retry-After outlasts the deadline",
                                );
                            }
                            delay
                        }
                        Action::Refine(messages) => {
                            req.messages = super::rewrite::carry_over(&req.messages, messages);
                            Some(Duration::ZERO)
                        }
                        _ => Some(Duration::ZERO),
                    };
                }
                Move::Chunk(max_chars) => {
                    let Some(chunks) = A::chunked(self, ctx, &upstream, &req, max_chars) else {
                        // A stream cannot be joined from chunks: as for a
                        // fallback, it moves on to an upstream it has not
                        // tried (one with a larger context may take it).
                        if let Some(entry) = plan.untried(Instant::now()) {
                            plan.select(entry);
                            next = Some(Duration::ZERO);
                        } else {
                            ended_by = decision("; refused: a stream cannot be split into chunks");
                        }
                        continue;
                    };
                    // Chunks go to this upstream alone; a hedge of the
                    // whole input is moot.
                    drop(race);
                    return match chunks.await {
                        Ok(answer) => Ok(answer),
                        Err(AttemptError::Failed(failure) | AttemptError::Refused(failure)) => {
                            Err(ended(&model, failure, decision("")))
                        }
                        Err(AttemptError::Saturated) => Err(PipelineError::Overloaded {
                            scope: upstream.name().to_string(),
                        }),
                    };
                }
                Move::GiveUp { alert } => {
                    if alert {
                        self.alert(ctx, &model, upstream.name(), &failure);
                    }
                    ended_by = decision("");
                }
            }
        }
    }
}
