//! The observation wrapped around every route: one server span, the
//! request metrics, one structured log event, and the `x-trace-id` header.
//!
//! Handlers and the code below them note what the request did in its
//! [`RequestScope`] (target, key, tokens, plugins, upstream waits); this
//! layer reads the scope once the response is ready — or, for a stream,
//! once its body has been sent or abandoned — so labels and log fields come
//! from one place. Routes are labelled by their template (`MatchedPath`),
//! targets only by names that exist in the config: label sets stay bounded
//! whatever clients send.

use super::AppState;
use crate::telemetry::metrics::{RequestLabels, RouteLabels};
use crate::telemetry::request::{self, RequestScope, RequestSummary};
use crate::telemetry::{Metrics, traces};
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tracing::Instrument;
use tracing::field::Empty;

/// Label of requests that matched no route (they share one series).
const UNMATCHED_ROUTE: &str = "unmatched";

/// Runs a request inside its scope and span, then measures and logs it.
pub(super) async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_string();
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = Empty,
        gen_ai.request.model = Empty,
        agentrouter.request_id = Empty,
        trace_id = Empty,
    );
    traces::adopt_remote_parent(&span, req.headers());
    // With the OpenTelemetry layer the span knows its trace; without it the
    // caller's trace id (or a fresh one) still ties log lines to the
    // response. As a span field it appears on every log line of the request.
    let trace_id = traces::trace_id(&span)
        .or_else(|| traces::remote_trace_id(req.headers()))
        .unwrap_or_else(fresh_trace_id);
    span.record("trace_id", trace_id.as_str());
    let scope = RequestScope::new();
    let mut response = request::scope(scope.clone(), next.run(req))
        .instrument(span.clone())
        .await;
    if let Ok(value) = HeaderValue::from_str(&trace_id) {
        response.headers_mut().insert("x-trace-id", value);
    }
    let done = Finished {
        metrics: state.gateway.metrics().clone(),
        route,
        method: method.to_string(),
        trace_id,
        span,
        scope,
        status: response.status().as_u16(),
        request_id: header_text(&response, "x-request-id"),
        cache: header_text(&response, "x-agentrouter-cache"),
    };
    let streamed = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !streamed {
        done.record();
        return response;
    }
    // A stream's tokens and duration are known only when its body ends:
    // record after its last chunk (before hyper ends the response, so a
    // client that has read the whole stream sees it counted), or when the
    // body is dropped early because the client went away.
    let (parts, body) = response.into_parts();
    let mut guard = OnDrop(Some(done));
    let tail = futures::stream::poll_fn(move |_| -> Poll<Option<Result<Bytes, axum::Error>>> {
        guard.record();
        Poll::Ready(None)
    });
    let body = body.into_data_stream().chain(tail);
    Response::from_parts(parts, Body::from_stream(body))
}

fn header_text(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// 32 random hex digits: a W3C trace id for a request nobody traced.
fn fresh_trace_id() -> String {
    use rand::Rng;
    let id: u128 = rand::rng().random::<u128>().max(1);
    format!("{id:032x}")
}

/// What is left to do once a response is complete.
struct Finished {
    metrics: Arc<Metrics>,
    route: String,
    method: String,
    trace_id: String,
    span: tracing::Span,
    scope: Arc<RequestScope>,
    status: u16,
    request_id: Option<String>,
    cache: Option<String>,
}

impl Finished {
    fn record(self) {
        let elapsed = self.scope.started().elapsed();
        let summary = self.scope.summary();
        let target = summary.target.as_deref().unwrap_or("-");
        let labels = RequestLabels {
            route: self.route.clone(),
            target: target.to_string(),
            status: self.status,
        };
        self.metrics.requests.get_or_create(&labels).inc();
        self.metrics
            .request_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        let overhead = elapsed.saturating_sub(summary.upstream_wait);
        self.metrics
            .gateway_overhead
            .get_or_create(&RouteLabels {
                route: self.route.clone(),
            })
            .observe(overhead.as_secs_f64());
        let span = &self.span;
        span.record("http.response.status_code", self.status);
        span.record("gen_ai.request.model", target);
        if let Some(id) = &self.request_id {
            span.record("agentrouter.request_id", id.as_str());
        }
        if self.status >= 500 {
            span.record("otel.status_code", "ERROR");
        }
        self.log(&summary, target, elapsed, overhead);
    }

    /// The one structured event per request. Probes and scrapes log at
    /// debug so they do not drown the traffic.
    fn log(&self, summary: &RequestSummary, target: &str, elapsed: Duration, overhead: Duration) {
        let plugins = summary
            .plugins
            .iter()
            .map(|p| &**p)
            .collect::<Vec<&str>>()
            .join(",");
        macro_rules! event {
            ($level:expr) => {
                tracing::event!(
                    target: "agentrouter::request",
                    parent: None,
                    $level,
                    route = %self.route,
                    method = %self.method,
                    status = self.status,
                    duration_ms = elapsed.as_secs_f64() * 1000.0,
                    overhead_ms = overhead.as_secs_f64() * 1000.0,
                    key = %summary.client,
                    target = %target,
                    prompt_tokens = summary.usage.prompt_tokens,
                    completion_tokens = summary.usage.completion_tokens,
                    cost_usd = summary.cost_usd,
                    cache = self.cache.as_deref().unwrap_or("-"),
                    plugins = %plugins,
                    request_id = self.request_id.as_deref().unwrap_or("-"),
                    trace_id = %self.trace_id,
                    "request"
                )
            };
        }
        if self.route.starts_with("/health/") || self.route == "/metrics" {
            event!(tracing::Level::DEBUG);
        } else {
            event!(tracing::Level::INFO);
        }
    }
}

/// Records a streamed request once: at the end of its body, or when the
/// body is dropped unfinished.
struct OnDrop(Option<Finished>);

impl OnDrop {
    fn record(&mut self) {
        if let Some(done) = self.0.take() {
            done.record();
        }
    }
}

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.record();
    }
}
