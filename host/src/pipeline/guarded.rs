//! [`GuardedUpstream`]: an upstream paired with its health, and the one
//! place where an upstream call is made, gated and recorded.
//!
//! Every attempt — whole answer, chunk, or stream — goes through
//! [`GuardedUpstream::gate`] (cooldown, bulkhead, breaker) and ends in
//! [`GuardedUpstream::record`], which updates the upstream's health, the
//! attempt metrics and the request's ledger. The completion path above it
//! only decides *which* upstream to try next.

use crate::domain::{
    CallContext, Candidate, Completion, CompletionRequest, EmbeddingRequest, Embeddings, Failure,
    Step, StepKind, Usage,
};
use crate::resilience::{HealthSettings, Refusal, Slot, UpstreamHealth};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{ShedLabels, UpstreamLabels, UpstreamName};
use crate::upstream::{
    EventStream, ResponsesReply, StreamEvent, Upstream, UpstreamInfo, terminal, usage_of,
};
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why an attempt did not produce an answer.
#[derive(Debug)]
pub(super) enum AttemptError {
    /// The upstream (or the host on its behalf: a timeout) failed the call.
    Failed(Failure),
    /// The host refused to make the call: the upstream's `Retry-After` is
    /// pending (as a rate limit) or its breaker is open. No upstream said
    /// this about this request, so it is never the answer a client gets
    /// while a real failure is known.
    Refused(Failure),
    /// The upstream's bulkhead is full: not a failure, try elsewhere.
    Saturated,
}

/// A whole-answer call in flight. Ended, it is recorded; dropped before
/// that (a hedge race answered elsewhere, or the client went away), it is
/// recorded as abandoned.
struct InFlight<'a> {
    upstream: &'a GuardedUpstream,
    ctx: &'a CallContext,
    started: Instant,
    ended: bool,
}

impl InFlight<'_> {
    fn end(mut self, outcome: Result<Usage, &Failure>) {
        self.ended = true;
        self.upstream
            .record(self.ctx, self.started.elapsed(), outcome);
    }

    /// A stream's first event is in hand: the stream records the call
    /// when it ends. Returns when the call started.
    fn opened(mut self) -> Instant {
        self.ended = true;
        self.started
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.upstream.abandoned(self.ctx, self.started.elapsed());
        }
    }
}

/// An upstream with the host's guards around it; shared by successive
/// pipelines while its config is unchanged, so a reload neither forgets an
/// outage nor resets a recovery.
pub struct GuardedUpstream {
    upstream: Arc<dyn Upstream>,
    health: UpstreamHealth,
    metrics: Arc<Metrics>,
    /// The series every successful attempt moves, looked up once (a family
    /// lookup hashes its labels under a lock); failures look theirs up.
    ok_attempts: Counter,
    durations: Histogram,
}

impl std::fmt::Debug for GuardedUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedUpstream")
            .field("name", &self.info().name)
            .field("health", &self.health)
            .finish()
    }
}

impl GuardedUpstream {
    /// Guards `upstream` as `settings` say, counting in `metrics`.
    pub fn new(
        upstream: Arc<dyn Upstream>,
        settings: HealthSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let name = &upstream.info().name;
        let ok_attempts = metrics
            .upstream_attempts
            .get_or_create(&UpstreamLabels {
                upstream: name.clone(),
                outcome: "ok".into(),
            })
            .clone();
        let durations = metrics
            .upstream_duration
            .get_or_create(&UpstreamName {
                upstream: name.clone(),
            })
            .clone();
        Self {
            upstream,
            health: UpstreamHealth::new(settings, Instant::now()),
            metrics,
            ok_attempts,
            durations,
        }
    }

    /// Name, model, costs and tags.
    pub fn info(&self) -> &UpstreamInfo {
        self.upstream.info()
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.upstream.info().name
    }

    /// Its health.
    pub fn health(&self) -> &UpstreamHealth {
        &self.health
    }

    /// The upstream as a router sees it now.
    pub fn candidate(&self, now: Instant) -> Candidate {
        let info = self.info();
        let (ewma_latency_ms, error_rate) = self.health.averages();
        Candidate {
            name: info.name.clone(),
            model: info.model.clone(),
            input_cost_per_1k: info.input_cost_per_1k,
            output_cost_per_1k: info.output_cost_per_1k,
            ewma_latency_ms,
            error_rate,
            circuit: self.health.circuit(now),
            weight: info.weight,
            tags: info.tags.clone(),
        }
    }

    fn count_attempt(&self, outcome: &str) {
        if outcome == "ok" {
            self.ok_attempts.inc();
            return;
        }
        self.metrics
            .upstream_attempts
            .get_or_create(&UpstreamLabels {
                upstream: self.name().to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// The host's checks before a call; refusals are counted and turned
    /// into the failure the caller would see (`Retry-After`, open circuit).
    fn gate(&self) -> Result<Slot, AttemptError> {
        match self.health.gate(Instant::now()) {
            Ok(slot) => Ok(slot),
            Err(Refusal::CoolingDown(wait)) => {
                self.count_attempt("cooling-down");
                let ms = u32::try_from(wait.as_millis().max(1)).unwrap_or(u32::MAX);
                Err(AttemptError::Refused(Failure::RateLimited(Some(ms))))
            }
            Err(Refusal::Saturated) => {
                self.metrics
                    .bulkhead_rejections
                    .get_or_create(&ShedLabels {
                        scope: self.name().to_string(),
                    })
                    .inc();
                Err(AttemptError::Saturated)
            }
            Err(Refusal::CircuitOpen) => {
                self.count_attempt("circuit-open");
                Err(AttemptError::Refused(Failure::CircuitOpen(
                    self.name().to_string(),
                )))
            }
        }
    }

    /// Records one call: the upstream's health, the attempt metrics, and a
    /// step (with its cost) in the request's ledger.
    fn record(&self, ctx: &CallContext, latency: Duration, outcome: Result<Usage, &Failure>) {
        self.record_as(StepKind::Completion, ctx, latency, outcome);
    }

    /// [`Self::record`], for a step of `kind`.
    fn record_as(
        &self,
        kind: StepKind,
        ctx: &CallContext,
        latency: Duration,
        outcome: Result<Usage, &Failure>,
    ) {
        self.health
            .record(latency, outcome.map(drop), Instant::now());
        self.count_attempt(outcome.map_or_else(Failure::kind, |_| "ok"));
        self.durations.observe(latency.as_secs_f64());
        let info = self.info();
        let usage = outcome.as_ref().copied().unwrap_or_default();
        ctx.ledger.push(Step {
            kind,
            target: info.model.clone(),
            upstream: Some(info.name.clone()),
            caller: ctx.caller().to_string(),
            depth: ctx.chain.len() as u32,
            latency_ms: latency.as_millis() as u64,
            usage,
            cost_usd: info.cost(usage),
            ok: outcome.is_ok(),
            error: outcome.err().map(ToString::to_string),
        });
    }

    /// Records a call abandoned after `latency` because another attempt of
    /// the request answered first: the breaker hears of it only if it was
    /// slow, and the ledger gets a failed step so that every call made is
    /// on the record.
    fn abandoned(&self, ctx: &CallContext, latency: Duration) {
        self.health.record_abandoned(latency, Instant::now());
        self.count_attempt("cancelled");
        let info = self.info();
        ctx.ledger.push(Step {
            kind: StepKind::Completion,
            target: info.model.clone(),
            upstream: Some(info.name.clone()),
            caller: ctx.caller().to_string(),
            depth: ctx.chain.len() as u32,
            latency_ms: latency.as_millis() as u64,
            usage: Usage::default(),
            cost_usd: 0.0,
            ok: false,
            error: Some("cancelled: another attempt answered first".to_string()),
        });
    }

    /// What every attempt does before it calls the upstream. A retry was
    /// already told to wait for the upstream's hint, but a later 429
    /// (another request's) may have pushed the hint further: it waits for
    /// that too rather than spend an attempt on a refusal. Then `bound`
    /// turns the time the request has left into the attempt's own bound
    /// (`None`: no time left, a timeout), the gate admits the attempt, and
    /// a first attempt counts as new traffic for the retry budget.
    async fn begin<'a>(
        &'a self,
        ctx: &'a CallContext,
        retry: bool,
        bound: impl FnOnce(Duration) -> Option<Duration>,
    ) -> Result<(Duration, Slot, InFlight<'a>), AttemptError> {
        if retry
            && let Some(wait) = self.health.cooling(Instant::now())
            && wait < ctx.remaining()
        {
            tokio::time::sleep(wait).await;
        }
        let Some(bound) = bound(ctx.remaining()) else {
            return Err(AttemptError::Failed(Failure::Timeout));
        };
        let slot = self.gate()?;
        if !retry {
            self.health.count_first_attempt(Instant::now());
        }
        let call = InFlight {
            upstream: self,
            ctx,
            started: Instant::now(),
            ended: false,
        };
        Ok((bound, slot, call))
    }

    /// One whole-answer call through the gate. A `retry` does not count as
    /// new traffic for the retry budget (its withdrawal was already taken).
    pub(super) async fn complete(
        &self,
        ctx: &CallContext,
        req: &CompletionRequest,
        retry: bool,
    ) -> Result<Completion, AttemptError> {
        let (bound, _slot, call) = self
            .begin(ctx, retry, |left| self.health.attempt_bound(left))
            .await?;
        let result = self.upstream.complete(req.clone(), bound).await;
        call.end(result.as_ref().map(|c| c.usage));
        result.map_err(AttemptError::Failed)
    }

    /// One embeddings call through the gate, recorded as an
    /// [`StepKind::Embedding`] step. Not a whole-answer race: nothing
    /// abandons it but the client, so an early drop records nothing.
    pub(super) async fn embed(
        &self,
        ctx: &CallContext,
        req: &EmbeddingRequest,
    ) -> Result<Embeddings, AttemptError> {
        let Some(bound) = self.health.attempt_bound(ctx.remaining()) else {
            return Err(AttemptError::Failed(Failure::Timeout));
        };
        let _slot = self.gate()?;
        self.health.count_first_attempt(Instant::now());
        let started = Instant::now();
        let result = self.upstream.embed(req.clone(), bound).await;
        self.record_as(
            StepKind::Embedding,
            ctx,
            started.elapsed(),
            result.as_ref().map(|e| e.usage),
        );
        result.map_err(AttemptError::Failed)
    }

    /// One pass-through Responses call through the gate: a whole answer is
    /// recorded at once, a stream at its last event (holding its bulkhead
    /// place until then), with the usage the response object reports.
    pub(super) async fn respond(
        self: &Arc<Self>,
        ctx: &CallContext,
        body: &serde_json::Value,
        stream: bool,
    ) -> Result<ResponsesReply, AttemptError> {
        // A stream may run until the request's deadline, as a chat stream.
        let (bound, slot, call) = self
            .begin(ctx, false, |left| {
                if stream {
                    (!left.is_zero()).then_some(left)
                } else {
                    self.health.attempt_bound(left)
                }
            })
            .await?;
        let reply = match self.upstream.respond(body.clone(), stream, bound).await {
            Ok(reply) => reply,
            Err(failure) => {
                call.end(Err(&failure));
                return Err(AttemptError::Failed(failure));
            }
        };
        Ok(match reply {
            ResponsesReply::Whole(object) => {
                call.end(Ok(usage_of(&object)));
                ResponsesReply::Whole(object)
            }
            ResponsesReply::Events(events) => {
                let started = call.opened();
                let me = self.clone();
                let ctx = ctx.clone();
                ResponsesReply::Events(Box::pin(events.inspect(move |event| {
                    let _held = &slot;
                    match event {
                        Ok(e) if e["type"] == "response.failed" => {
                            let failure = Failure::InvalidResponse(format!(
                                "upstream `{}`: the response failed",
                                me.name()
                            ));
                            me.record(&ctx, started.elapsed(), Err(&failure));
                        }
                        Ok(e) => {
                            if let Some(object) = terminal(e) {
                                me.record(&ctx, started.elapsed(), Ok(usage_of(object)));
                            }
                        }
                        Err(failure) => me.record(&ctx, started.elapsed(), Err(failure)),
                    }
                })))
            }
        })
    }

    /// Takes a retry from the budget; counts and logs a refusal.
    pub(super) fn take_retry(&self, ctx: &CallContext) -> bool {
        if self.health.take_retry(Instant::now()) {
            return true;
        }
        tracing::warn!(upstream = %self.name(), request = %ctx.request_id, "retry budget exhausted: not retrying, so retries cannot amplify an outage");
        self.metrics
            .retry_budget_exhausted
            .get_or_create(&UpstreamName {
                upstream: self.name().to_string(),
            })
            .inc();
        false
    }

    /// Opens a stream and waits for its first event within the first-token
    /// timeout; then the stream is the answer, bounded by the idle timeout
    /// and the request's deadline, holding its bulkhead place until it ends,
    /// and recorded when it ends. A `retry` waits out a `Retry-After` set
    /// since it was planned, and is not new traffic for the budgets (as
    /// for [`Self::complete`]). An opening dropped before its first event
    /// (a hedge opened first, or the client went away) is recorded as
    /// abandoned.
    pub(super) async fn stream(
        self: &Arc<Self>,
        ctx: &CallContext,
        req: &CompletionRequest,
        retry: bool,
    ) -> Result<EventStream, AttemptError> {
        // The stream as a whole may run until the request's deadline; the
        // first-token and idle bounds are the host's, below.
        let (total, slot, call) = self
            .begin(ctx, retry, |left| (!left.is_zero()).then_some(left))
            .await?;
        let opening = async {
            let mut events = self.upstream.stream(req.clone(), total).await?;
            match events.next().await {
                Some(Ok(first)) => {
                    let rest: EventStream =
                        Box::pin(futures::stream::once(async { Ok(first) }).chain(events));
                    Ok(rest)
                }
                Some(Err(failure)) => Err(failure),
                None => Err(Failure::InvalidResponse(format!(
                    "upstream `{}`: stream ended before its first event",
                    self.name()
                ))),
            }
        };
        let first_token = self.health.settings().first_token_timeout;
        let events = match tokio::time::timeout(first_token.min(total), opening).await {
            Ok(Ok(events)) => events,
            Ok(Err(failure)) => {
                call.end(Err(&failure));
                return Err(AttemptError::Failed(failure));
            }
            Err(_) => {
                call.end(Err(&Failure::Timeout));
                return Err(AttemptError::Failed(Failure::Timeout));
            }
        };
        let started = call.opened();
        Ok(self.guard_stream(ctx, events, slot, started))
    }

    /// Ends a stream with a timeout when it falls silent for longer than the
    /// idle timeout or outlives the request's deadline, holds the bulkhead
    /// place until it ends, and records the step at its end (or failure).
    fn guard_stream(
        self: &Arc<Self>,
        ctx: &CallContext,
        events: EventStream,
        slot: Slot,
        started: Instant,
    ) -> EventStream {
        let idle = self.health.settings().idle_timeout;
        let deadline = ctx.deadline;
        let guarded = futures::stream::unfold(
            (events, slot, false),
            move |(mut events, slot, ended)| async move {
                if ended {
                    return None;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(idle.min(left), events.next()).await {
                    Ok(Some(event)) => {
                        let last = matches!(event, Err(_) | Ok(StreamEvent::Done(_)));
                        Some((event, (events, slot, last)))
                    }
                    Ok(None) => None,
                    Err(_) => Some((Err(Failure::Timeout), (events, slot, true))),
                }
            },
        );
        // The step is recorded even if a reload replaces this upstream while
        // the stream flows: the stream keeps its upstream alive.
        let me = self.clone();
        let ctx = ctx.clone();
        Box::pin(guarded.inspect(move |event| match event {
            Ok(StreamEvent::Done(c)) => me.record(&ctx, started.elapsed(), Ok(c.usage)),
            Err(failure) => me.record(&ctx, started.elapsed(), Err(failure)),
            Ok(_) => {}
        }))
    }
}
