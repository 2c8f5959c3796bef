//! The completion path: router → upstream attempts → recovery decisions.
//!
//! The router plugin orders the upstreams serving the requested model using
//! live statistics; each failed attempt asks the recovery plugin what to do
//! next. The host bounds every decision: attempts per completion, the
//! request's deadline, fallbacks only to upstreams serving the same model,
//! and a cap on chunks.

use super::{DEFAULT_UPSTREAM_TIMEOUT, FailurePolicy, Pipeline, PipelineError};
use crate::domain::{
    Action, CallContext, Candidate, CircuitState, Completion, CompletionRequest, Failure,
    FailureContext, Message, Role, RouteRequest, Step, Usage,
};
use crate::resilience::{Breaker, Permit};
use crate::upstream::{EventStream, StreamEvent, Upstream};
use futures::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most chunks a chunk-and-retry may produce; beyond it the input is refused.
const MAX_CHUNKS: usize = 32;
/// Weight of the newest sample in the moving averages.
const EWMA_ALPHA: f64 = 0.2;

/// Moving averages of one upstream's latency and error rate, for routers.
#[derive(Debug, Default)]
pub(super) struct UpstreamStats(Mutex<(f64, f64, bool)>);

impl UpstreamStats {
    fn record(&self, latency: Duration, ok: bool) {
        if let Ok(mut s) = self.0.lock() {
            let ms = latency.as_secs_f64() * 1000.0;
            let err = if ok { 0.0 } else { 1.0 };
            if s.2 {
                s.0 += EWMA_ALPHA * (ms - s.0);
                s.1 += EWMA_ALPHA * (err - s.1);
            } else {
                *s = (ms, err, true);
            }
        }
    }

    fn snapshot(&self) -> (f64, f64) {
        self.0.lock().map(|s| (s.0, s.1)).unwrap_or((0.0, 0.0))
    }
}

/// What the pipeline tracks per upstream.
#[derive(Debug)]
pub(super) struct UpstreamHealth {
    timeout: Duration,
    stats: UpstreamStats,
    pub(super) breaker: Breaker,
}

impl UpstreamHealth {
    pub(super) fn new(setup: &super::UpstreamSetup) -> Self {
        Self {
            timeout: setup.timeout,
            stats: UpstreamStats::default(),
            breaker: Breaker::new(setup.breaker),
        }
    }
}

/// Whether a failure says the upstream is unhealthy (and counts towards
/// opening its breaker). Rate limits and request-specific refusals mean a
/// healthy upstream said no to this request.
fn counts_against_upstream(failure: &Failure) -> bool {
    match failure {
        Failure::Timeout | Failure::InvalidResponse(_) => true,
        Failure::UpstreamStatus(status) => *status >= 500,
        _ => false,
    }
}

/// Approximate tokens of a conversation (4 characters per token).
fn estimate_tokens(messages: &[Message]) -> u32 {
    let chars: usize = messages.iter().map(|m| m.content.chars().count()).sum();
    chars.div_ceil(4).max(1) as u32
}

fn cost(upstream: &dyn Upstream, usage: Usage) -> f64 {
    let info = upstream.info();
    f64::from(usage.prompt_tokens) / 1000.0 * info.input_cost_per_1k
        + f64::from(usage.completion_tokens) / 1000.0 * info.output_cost_per_1k
}

impl Pipeline {
    fn candidate(&self, upstream: &dyn Upstream) -> Candidate {
        let info = upstream.info();
        let health = self.health.get(&info.name);
        let (ewma_latency_ms, error_rate) =
            health.map(|h| h.stats.snapshot()).unwrap_or((0.0, 0.0));
        let circuit = health
            .map(|h| h.breaker.state(Instant::now()))
            .unwrap_or(CircuitState::Closed);
        Candidate {
            name: info.name.clone(),
            model: info.model.clone(),
            input_cost_per_1k: info.input_cost_per_1k,
            output_cost_per_1k: info.output_cost_per_1k,
            ewma_latency_ms,
            error_rate,
            circuit,
            weight: info.weight,
            tags: info.tags.clone(),
        }
    }

    /// The upstreams to try, in order.
    async fn route(
        &self,
        req: &CompletionRequest,
    ) -> Result<Vec<Arc<dyn Upstream>>, PipelineError> {
        let candidates: Vec<Arc<dyn Upstream>> = self
            .upstreams
            .iter()
            .filter(|u| req.model.is_empty() || u.info().model == req.model)
            .cloned()
            .collect();
        if candidates.is_empty() {
            return Err(PipelineError::UnknownModel(req.model.clone()));
        }
        let Some(router) = self
            .settings
            .router
            .as_ref()
            .and_then(|r| self.slots.get(r))
        else {
            return Ok(candidates);
        };
        let route_req = RouteRequest {
            model: req.model.clone(),
            prompt_tokens: estimate_tokens(&req.messages),
            message_count: req.messages.len() as u32,
            has_tools: !req.tools.is_empty(),
            metadata: req.metadata.clone(),
        };
        let described: Vec<Candidate> = candidates
            .iter()
            .map(|u| self.candidate(u.as_ref()))
            .collect();
        match router.plugin.route(&route_req, &described).await {
            Ok(order) if !order.is_empty() => Ok(order
                .iter()
                .filter_map(|n| candidates.iter().find(|u| &u.info().name == n).cloned())
                .collect()),
            // A router that offers nothing leaves the configured order.
            Ok(_) => Ok(candidates),
            Err(e) if router.policy == FailurePolicy::Open => {
                tracing::warn!(router = %router.plugin.identity(), error = %e, "router failed; using configured order");
                Ok(candidates)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// What to do after `failure`: the recovery plugin's choice, or — with
    /// no recovery plugin — the next upstream in the routed order.
    async fn decide(&self, fctx: &FailureContext) -> Result<Action, PipelineError> {
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
        match slot.plugin.recover(fctx).await {
            Ok(action) => Ok(action),
            Err(e) if slot.policy == FailurePolicy::Open => {
                tracing::warn!(recovery = %slot.plugin.identity(), error = %e, "recovery plugin failed; falling back to the next upstream");
                Ok(default())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// How long one attempt on `upstream` may take: its own bound, cut to
    /// what is left of the request; `None` once the deadline has passed.
    fn attempt_bound(&self, ctx: &CallContext, upstream: &dyn Upstream) -> Option<Duration> {
        let bound = self
            .health
            .get(&upstream.info().name)
            .map(|h| h.timeout)
            .unwrap_or(DEFAULT_UPSTREAM_TIMEOUT);
        let remaining = ctx.remaining();
        (!remaining.is_zero()).then(|| bound.min(remaining))
    }

    /// Whether the upstream's breaker lets a call through now.
    fn admit(&self, upstream: &dyn Upstream) -> bool {
        self.health
            .get(&upstream.info().name)
            .is_none_or(|h| h.breaker.acquire(Instant::now()) == Permit::Allowed)
    }

    /// Records one upstream call as a step, in the upstream's stats and in
    /// its breaker.
    fn record(
        &self,
        ctx: &CallContext,
        upstream: &dyn Upstream,
        latency: Duration,
        outcome: Result<Usage, &Failure>,
    ) {
        let info = upstream.info();
        if let Some(health) = self.health.get(&info.name) {
            health.stats.record(latency, outcome.is_ok());
            let healthy = outcome.is_ok() || outcome.is_err_and(|f| !counts_against_upstream(f));
            health.breaker.record(healthy, Instant::now());
        }
        let usage = outcome.as_ref().copied().unwrap_or_default();
        ctx.steps.push(Step {
            kind: "completion".into(),
            target: info.model.clone(),
            upstream: Some(info.name.clone()),
            caller: ctx.caller().to_string(),
            depth: ctx.chain.len() as u32,
            latency_ms: latency.as_millis() as u64,
            usage,
            cost_usd: cost(upstream, usage),
            ok: outcome.is_ok(),
            error: outcome.err().map(ToString::to_string),
        });
    }

    /// One upstream call, recorded as a step and in the upstream's stats.
    async fn attempt(
        &self,
        ctx: &CallContext,
        upstream: &Arc<dyn Upstream>,
        req: &CompletionRequest,
    ) -> Result<Completion, Failure> {
        let Some(bound) = self.attempt_bound(ctx, upstream.as_ref()) else {
            return Err(Failure::Timeout);
        };
        if !self.admit(upstream.as_ref()) {
            return Err(Failure::CircuitOpen(upstream.info().name.clone()));
        }
        let started = Instant::now();
        let result = upstream.complete(req.clone(), bound).await;
        self.record(
            ctx,
            upstream.as_ref(),
            started.elapsed(),
            result.as_ref().map(|c| c.usage),
        );
        result
    }

    /// Serves a completion for a model (empty model: any upstream the router picks).
    pub(super) async fn complete(
        &self,
        ctx: &CallContext,
        mut req: CompletionRequest,
    ) -> Result<Completion, PipelineError> {
        let order = self.route(&req).await?;
        let model = req.model.clone();
        let give_up = |failure| PipelineError::Upstream {
            model: model.clone(),
            failure,
        };
        let mut current = order
            .first()
            .cloned()
            .ok_or_else(|| PipelineError::UnknownModel(req.model.clone()))?;
        let max_attempts = self.settings.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match self.attempt(ctx, &current, &req).await {
                Ok(completion) => return Ok(completion),
                Err(failure) => failure,
            };
            if attempt >= max_attempts || ctx.remaining().is_zero() {
                return Err(give_up(failure));
            }
            let alternatives: Vec<String> = order
                .iter()
                .map(|u| u.info().name.clone())
                .filter(|n| *n != current.info().name)
                .collect();
            let fctx = FailureContext {
                failure: failure.clone(),
                upstream: current.info().name.clone(),
                attempt,
                max_attempts,
                remaining_ms: ctx.remaining().as_millis() as u64,
                alternatives,
                request: req.clone(),
            };
            match self.decide(&fctx).await? {
                Action::Retry(delay_ms) => {
                    let delay = Duration::from_millis(u64::from(delay_ms)).min(ctx.remaining());
                    tokio::time::sleep(delay).await;
                }
                Action::Fallback(name) => match order.iter().find(|u| u.info().name == name) {
                    Some(next) => current = next.clone(),
                    None => {
                        tracing::warn!(upstream = %name, "recovery asked to fall back to an upstream that does not serve this model");
                        return Err(give_up(failure));
                    }
                },
                Action::Refine(messages) if !messages.is_empty() => req.messages = messages,
                Action::Refine(_) => return Err(give_up(failure)),
                Action::ChunkAndRetry(max_chars) => {
                    return self
                        .chunked(ctx, &current, req, max_chars as usize)
                        .await
                        .map_err(give_up);
                }
                Action::Fail(alert) => {
                    if alert {
                        tracing::error!(alert = true, upstream = %current.info().name, failure = %failure, request = %ctx.request_id, "recovery raised an alert");
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
        upstream: &Arc<dyn Upstream>,
        req: CompletionRequest,
        max_chars: usize,
    ) -> Result<Completion, Failure> {
        let Some(pos) = req.messages.iter().rposition(|m| m.role == Role::User) else {
            return Err(Failure::TokenLimitExceeded);
        };
        let chars: Vec<char> = req.messages[pos].content.chars().collect();
        if max_chars == 0 || chars.len().div_ceil(max_chars) > MAX_CHUNKS {
            return Err(Failure::TokenLimitExceeded);
        }
        let mut merged: Option<Completion> = None;
        for chunk in chars.chunks(max_chars) {
            let mut part = req.clone();
            part.messages[pos].content = chunk.iter().collect();
            let answer = self.attempt(ctx, upstream, &part).await?;
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
        merged.ok_or(Failure::TokenLimitExceeded)
    }
}

impl Pipeline {
    /// Opens a live stream for a completion. Upstreams are tried in routed
    /// order until one accepts the request; once it has, the stream is the
    /// answer — a stream is never retried after its first byte may have
    /// reached the client. The step is recorded when the stream ends.
    pub(super) async fn open_stream(
        &self,
        ctx: &CallContext,
        req: CompletionRequest,
    ) -> Result<EventStream, PipelineError> {
        let order = self.route(&req).await?;
        let mut last = Failure::Timeout;
        for upstream in order
            .iter()
            .take(self.settings.max_attempts.max(1) as usize)
        {
            let Some(bound) = self.attempt_bound(ctx, upstream.as_ref()) else {
                break;
            };
            if !self.admit(upstream.as_ref()) {
                last = Failure::CircuitOpen(upstream.info().name.clone());
                continue;
            }
            let started = Instant::now();
            match upstream.stream(req.clone(), bound).await {
                Ok(events) => {
                    return Ok(self.record_stream(ctx, upstream.clone(), started, events));
                }
                Err(failure) => {
                    self.record(ctx, upstream.as_ref(), started.elapsed(), Err(&failure));
                    last = failure;
                }
            }
        }
        Err(PipelineError::Upstream {
            model: req.model,
            failure: last,
        })
    }

    /// Records a stream's step once it finishes (or fails midway).
    fn record_stream(
        &self,
        ctx: &CallContext,
        upstream: Arc<dyn Upstream>,
        started: Instant,
        events: EventStream,
    ) -> EventStream {
        let pipeline = self.me.upgrade();
        let ctx = ctx.clone();
        Box::pin(events.inspect(move |event| {
            let Some(pipeline) = &pipeline else { return };
            match event {
                Ok(StreamEvent::Done { usage, .. }) => {
                    pipeline.record(&ctx, upstream.as_ref(), started.elapsed(), Ok(*usage));
                }
                Err(failure) => {
                    pipeline.record(&ctx, upstream.as_ref(), started.elapsed(), Err(failure))
                }
                Ok(_) => {}
            }
        }))
    }
}
