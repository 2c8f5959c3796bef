//! An [`Upstream`] wrapper that makes every call observable: one client
//! span per attempt with OpenTelemetry GenAI attributes (the span the HTTP
//! upstream's `traceparent` is taken from), the token and cost series by
//! key and model, and the time spent waiting, noted in the request's scope
//! so the server can tell gateway overhead from upstream latency. (What a
//! request used is its ledger's business: the pipeline records each attempt
//! there.)
//!
//! Wrapping at construction keeps all of this out of the completion path:
//! retries, fallbacks and chunks each call the upstream, so each is one span
//! and one accounting entry, whatever the resilience logic decides.

use super::{EventStream, ResponsesReply, StreamEvent, Upstream, UpstreamInfo, terminal, usage_of};
use crate::domain::{Completion, CompletionRequest, EmbeddingRequest, Embeddings, Failure, Usage};
use crate::telemetry::metrics::{TokenLabels, UsageLabels};
use crate::telemetry::{Metrics, request};
use futures::StreamExt;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;
use tracing::field::Empty;

/// An upstream whose calls are traced and accounted.
pub struct ObservedUpstream {
    inner: Arc<dyn Upstream>,
    metrics: Arc<Metrics>,
    system: &'static str,
}

impl ObservedUpstream {
    /// Wraps `inner`; `system` is its `gen_ai.system` (`openai`, or
    /// `agentrouter.simulator` for the built-in simulator).
    pub fn new(inner: Arc<dyn Upstream>, metrics: Arc<Metrics>, system: &'static str) -> Self {
        Self {
            inner,
            metrics,
            system,
        }
    }

    fn span(&self) -> tracing::Span {
        self.span_of("chat")
    }

    /// What a call's end is accounted with: this upstream's metrics and
    /// info, the request's scope (taken now, in the request's task) and the
    /// call's `span`.
    fn accounting(&self, span: &tracing::Span) -> Accounting {
        Accounting {
            metrics: self.metrics.clone(),
            info: self.inner.info().clone(),
            scope: request::current(),
            span: span.clone(),
        }
    }

    /// The span of one call of `operation` (`chat`, `embeddings`: the
    /// GenAI conventions' operation names).
    fn span_of(&self, operation: &'static str) -> tracing::Span {
        let info = self.inner.info();
        tracing::info_span!(
            "upstream",
            otel.name = %format_args!("{operation} {}", info.model),
            otel.kind = "client",
            otel.status_code = Empty,
            gen_ai.operation.name = operation,
            gen_ai.system = self.system,
            gen_ai.request.model = %info.model,
            gen_ai.response.model = Empty,
            gen_ai.response.finish_reasons = Empty,
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
            agentrouter.upstream = %info.name,
            error.type = Empty,
        )
    }
}

/// Everything needed to account for one call after it ends.
struct Accounting {
    metrics: Arc<Metrics>,
    info: UpstreamInfo,
    scope: Option<Arc<request::RequestScope>>,
    span: tracing::Span,
}

impl Accounting {
    /// Tokens and cost of a finished answer, in the metrics and the span.
    fn usage(&self, usage: Usage, model: &str, finish_reason: &str) {
        let info = &self.info;
        let cost = info.cost(usage);
        let key = self
            .scope
            .as_ref()
            .map_or_else(|| "anonymous".into(), |s| s.client());
        for (direction, tokens) in [
            ("input", usage.prompt_tokens),
            ("output", usage.completion_tokens),
        ] {
            self.metrics
                .tokens
                .get_or_create(&TokenLabels {
                    key: key.clone(),
                    model: info.model.clone(),
                    direction: direction.into(),
                })
                .inc_by(u64::from(tokens));
        }
        self.metrics
            .cost_usd
            .get_or_create(&UsageLabels {
                key,
                model: info.model.clone(),
            })
            .inc_by(cost);
        self.span
            .record("gen_ai.usage.input_tokens", usage.prompt_tokens)
            .record("gen_ai.usage.output_tokens", usage.completion_tokens)
            .record("gen_ai.response.model", model)
            .record("gen_ai.response.finish_reasons", finish_reason);
    }

    fn failed(&self, failure: &Failure) {
        self.span
            .record("otel.status_code", "ERROR")
            .record("error.type", failure.kind());
    }

    fn waited(&self, started: Instant) {
        if let Some(scope) = &self.scope {
            scope.add_upstream_wait(started, Instant::now());
        }
    }
}

impl Upstream for ObservedUpstream {
    fn info(&self) -> &UpstreamInfo {
        self.inner.info()
    }

    fn complete(
        &self,
        req: CompletionRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Completion, Failure>> {
        let span = self.span();
        let call = self.inner.complete(req, timeout);
        let acc = self.accounting(&span);
        Box::pin(
            async move {
                let started = Instant::now();
                let result = call.await;
                acc.waited(started);
                match &result {
                    Ok(c) => acc.usage(c.usage, &c.model, &c.finish_reason),
                    Err(f) => acc.failed(f),
                }
                result
            }
            .instrument(span),
        )
    }

    /// The span and the upstream wait last until the stream ends (its
    /// `Done` event or its error): a live stream is upstream time, chunk
    /// by chunk. Tokens are accounted when `Done` passes.
    fn stream(
        &self,
        req: CompletionRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<EventStream, Failure>> {
        let span = self.span();
        let call = self.inner.stream(req, timeout);
        let acc = self.accounting(&span);
        Box::pin(
            async move {
                let started = Instant::now();
                let events = call.await.inspect_err(|f| {
                    acc.waited(started);
                    acc.failed(f);
                })?;
                Ok(events
                    .inspect(move |event| match event {
                        Ok(StreamEvent::Done(c)) => {
                            acc.waited(started);
                            acc.usage(c.usage, &c.model, &c.finish_reason);
                        }
                        Err(f) => {
                            acc.waited(started);
                            acc.failed(f);
                        }
                        Ok(_) => {}
                    })
                    .boxed())
            }
            .instrument(span),
        )
    }

    fn embed(
        &self,
        req: EmbeddingRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Embeddings, Failure>> {
        let span = self.span_of("embeddings");
        let call = self.inner.embed(req, timeout);
        let acc = self.accounting(&span);
        Box::pin(
            async move {
                let started = Instant::now();
                let result = call.await;
                acc.waited(started);
                match &result {
                    Ok(e) => acc.usage(e.usage, &e.model, "stop"),
                    Err(f) => acc.failed(f),
                }
                result
            }
            .instrument(span),
        )
    }

    /// Tokens are accounted from the response object, whole or at the
    /// stream's last event.
    fn respond(
        &self,
        body: serde_json::Value,
        stream: bool,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<ResponsesReply, Failure>> {
        let span = self.span_of("responses");
        let call = self.inner.respond(body, stream, timeout);
        let acc = self.accounting(&span);
        Box::pin(
            async move {
                let started = Instant::now();
                let reply = call.await.inspect_err(|f| {
                    acc.waited(started);
                    acc.failed(f);
                })?;
                Ok(match reply {
                    ResponsesReply::Whole(object) => {
                        acc.waited(started);
                        let model = object["model"].as_str().unwrap_or_default().to_string();
                        acc.usage(usage_of(&object), &model, "stop");
                        ResponsesReply::Whole(object)
                    }
                    ResponsesReply::Events(events) => ResponsesReply::Events(
                        events
                            .inspect(move |event| match event {
                                Ok(e) => {
                                    if let Some(object) = terminal(e) {
                                        acc.waited(started);
                                        let model = object["model"].as_str().unwrap_or_default();
                                        acc.usage(usage_of(object), model, "stop");
                                    }
                                }
                                Err(f) => {
                                    acc.waited(started);
                                    acc.failed(f);
                                }
                            })
                            .boxed(),
                    ),
                })
            }
            .instrument(span),
        )
    }
}
