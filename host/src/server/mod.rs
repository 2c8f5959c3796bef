//! The HTTP surface: an OpenAI-compatible API, agent invocation, health,
//! and the admin API (`/admin`, see [`admin`]).
//!
//! Handlers parse and check the request, hand domain types to the pipeline,
//! and render its answer; every error is rendered once, by [`ApiError`].

pub mod admin;
mod chat;
mod error;
mod guard;
mod observe;

pub use admin::{AdminState, Reload, ReloadReport};
pub use error::ApiError;

use crate::auth::Auth;
use crate::cache::ResponseCache;
use crate::config::Secret;
use crate::domain::CircuitState;
use crate::pipeline::Pipeline;
use crate::ratelimit::RateLimiter;
use crate::resilience::Bulkhead;
use crate::store::Store;
use crate::telemetry::metrics::{PluginLabels, ShedLabels, UpstreamName};
use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Request-level limits.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Deadline of one request, agents included.
    pub request_timeout: Duration,
    /// Bound on nested agent calls.
    pub max_agent_depth: u32,
    /// Most messages in one request.
    pub max_messages: usize,
    /// Longest message content, in characters.
    pub max_message_chars: usize,
    /// Most request headers (HTTP/1).
    pub max_headers: usize,
    /// Largest request head, bytes.
    pub max_header_bytes: usize,
    /// Time to receive a request's headers; also the keep-alive idle bound.
    pub header_read_timeout: Duration,
    /// Time to receive a request's body.
    pub body_read_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        use crate::config as c;
        Self {
            max_body_bytes: c::DEFAULT_MAX_BODY_BYTES as usize,
            request_timeout: Duration::from_millis(c::DEFAULT_REQUEST_TIMEOUT_MS),
            max_agent_depth: c::DEFAULT_MAX_AGENT_DEPTH,
            max_messages: c::DEFAULT_MAX_MESSAGES as usize,
            max_message_chars: c::DEFAULT_MAX_MESSAGE_CHARS as usize,
            max_headers: c::DEFAULT_MAX_HEADERS as usize,
            max_header_bytes: c::DEFAULT_MAX_HEADER_BYTES as usize,
            header_read_timeout: Duration::from_millis(c::DEFAULT_HEADER_READ_TIMEOUT_MS),
            body_read_timeout: Duration::from_millis(c::DEFAULT_BODY_READ_TIMEOUT_MS),
        }
    }
}

/// What a config reload replaces, swapped as one: a request sees either
/// the old or the new of all of it.
pub struct Live {
    /// The request pipeline.
    pub pipeline: Arc<Pipeline>,
    /// Limits.
    pub limits: ServerLimits,
    /// The admin token; `None` disables the admin API.
    pub admin_token: Option<Secret>,
}

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState {
    /// The live configuration; a handler loads it once per request and keeps
    /// that snapshot, so a reload never changes a request midway.
    pub live: Arc<ArcSwap<Live>>,
    /// The store (checked by readiness).
    pub store: Store,
    /// Set once shutdown begins; readiness then reports 503.
    pub draining: Arc<AtomicBool>,
    /// The response cache, when enabled.
    pub cache: Option<Arc<ResponseCache>>,
    /// API keys and budgets.
    pub auth: Arc<Auth>,
    /// Per-client and per-model rate limits.
    pub rate_limits: Arc<RateLimiter>,
    /// Global bulkhead on API requests (`resilience.max_concurrent_requests`).
    pub bulkhead: Bulkhead,
    /// Where the running config came from (readiness names it).
    pub config_origin: Arc<str>,
    /// The admin API's control plane.
    pub admin: AdminState,
}

impl AppState {
    /// The current pipeline.
    pub fn pipeline(&self) -> Arc<Pipeline> {
        self.live.load().pipeline.clone()
    }

    /// The current request limits.
    pub fn limits(&self) -> ServerLimits {
        self.live.load().limits
    }
}

/// The application's routes.
pub fn router(state: AppState) -> Router {
    // Changing the body limit needs a restart: it is part of the router.
    let limit = state.limits().max_body_bytes;
    // Only the completion routes are behind the bulkhead: probes and scrapes
    // must answer precisely when the replica is busiest. Every /v1 route
    // needs a key (when auth is on) and passes the key's request bucket,
    // before it takes a bulkhead place; health and metrics stay open.
    let api = Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/agents/{name}/invoke", post(chat::invoke))
        .route_layer(middleware::from_fn_with_state(state.clone(), shed));
    let v1 = Router::new()
        .merge(api)
        .route("/v1/models", get(chat::models))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard::admit));
    Router::new()
        .merge(v1)
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(admin::routes(state.clone()))
        .fallback(|| async { ApiError::not_found("not_found", "no such route") })
        .layer(DefaultBodyLimit::max(limit))
        // `Router::layer` wraps each route after matching, so the layer
        // sees the route template (`MatchedPath`).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .with_state(state)
}

/// How the server stops.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shutdown {
    /// After the shutdown signal, how long to keep accepting requests while
    /// readiness reports 503 (so load balancers stop sending traffic first).
    pub drain_delay: Duration,
    /// Then, how long in-flight requests may finish.
    pub grace: Duration,
}

/// Serves until `shutdown` resolves; then reports not-ready for
/// `timing.drain_delay` while still serving, stops accepting, and drains
/// in-flight requests for at most `timing.grace` before returning.
///
/// Connections are served by hyper directly (not `axum::serve`) because the
/// slow-client bounds live on hyper's builder: a client has
/// `header_read_timeout` to send a request head — which also closes idle
/// keep-alive connections — and heads are bounded in count and bytes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    timing: Shutdown,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;

    let draining = state.draining.clone();
    let limits = state.limits();
    let app = router(state);
    let grace = timing.grace;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Resolves once the listener should close: after the signal, readiness
    // turns 503 and new connections are still accepted for the drain delay.
    let stop_accepting = async move {
        shutdown.await;
        draining.store(true, Ordering::SeqCst);
        if !timing.drain_delay.is_zero() {
            tracing::info!(
                drain_delay_ms = timing.drain_delay.as_millis() as u64,
                "shutting down: reporting not-ready before closing the listener"
            );
            tokio::time::sleep(timing.drain_delay).await;
        }
    };
    let mut stop_accepting = std::pin::pin!(stop_accepting);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather
                    // than spin; per-connection errors are not fatal.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop_accepting => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "drain grace period expired; abandoning in-flight requests");
        }
    }
    Ok(())
}

async fn live() -> Response {
    axum::Json(json!({"status": "ok", "timestamp": now_rfc3339()})).into_response()
}

/// The global bulkhead: a place for the whole response (a streamed body
/// keeps it until the stream ends), or 503 with `Retry-After` at once.
async fn shed(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(place) = state.bulkhead.try_enter() else {
        state
            .pipeline()
            .metrics()
            .bulkhead_rejections
            .get_or_create(&ShedLabels {
                scope: "global".into(),
            })
            .inc();
        return ApiError::overloaded(
            "the gateway is at resilience.max_concurrent_requests; retry shortly",
        )
        .into_response();
    };
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    let body = body.into_data_stream().map(move |chunk| {
        let _held = &place;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(body))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let pipeline = state.pipeline();
    let metrics = pipeline.metrics();
    // Gauges of state owned elsewhere are read at scrape time.
    for (upstream, _, circuit) in pipeline.circuits() {
        let value = match circuit {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        };
        metrics
            .breaker_state
            .get_or_create(&UpstreamName { upstream })
            .set(value);
    }
    for slot in pipeline.slots().values() {
        let identity = slot.plugin.identity();
        let peak = slot.plugin.live().stats().peak_memory_bytes;
        metrics
            .plugin_peak_memory
            .get_or_create(&PluginLabels {
                plugin: identity.name.clone(),
                version: identity.version.clone(),
            })
            .set(i64::try_from(peak).unwrap_or(i64::MAX));
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

async fn ready(State(state): State<AppState>) -> Response {
    let mut checks = serde_json::Map::new();
    let mut ok = true;
    let mut check = |name: &str, passed: bool, detail: String| {
        ok &= passed;
        checks.insert(
            name.into(),
            json!({"status": if passed { "ok" } else { "fail" }, "detail": detail}),
        );
    };
    let draining = state.draining.load(Ordering::SeqCst);
    check(
        "accepting",
        !draining,
        if draining {
            "draining for shutdown".into()
        } else {
            "accepting requests".into()
        },
    );
    let store = state.store.db().contains_key(b"__readiness__");
    check(
        "store",
        store.is_ok(),
        store
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "open".into()),
    );
    let pipeline = state.pipeline();
    let slots = pipeline.slots();
    let mut cold: Vec<String> = slots
        .values()
        .filter(|s| !s.plugin.live().is_warm())
        .map(|s| s.plugin.identity().to_string())
        .collect();
    cold.sort();
    check(
        "plugins",
        cold.is_empty(),
        if cold.is_empty() {
            format!("{} plugins loaded and warm", slots.len())
        } else {
            format!(
                "{} of {} plugins could not be instantiated: {}",
                cold.len(),
                slots.len(),
                cold.join(", ")
            )
        },
    );
    // Every model needs one upstream whose breaker lets traffic through
    // (its own, or one of its fallback chain's):
    // one provider down is the router's business, a model nobody can serve
    // is not a replica that should receive traffic.
    let mut models: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for (_, model, circuit) in pipeline.circuits() {
        let entry = models.entry(model).or_default();
        entry.0 += 1;
        if circuit != CircuitState::Open {
            entry.1 += 1;
        }
    }
    // A model whose fallback chain can serve is served (by the chain).
    let usable = |model: &str| models.get(model).is_some_and(|(_, usable)| *usable > 0);
    let fallbacks = &pipeline.settings().fallbacks;
    let down: Vec<&str> = models
        .keys()
        .filter(|model| {
            !usable(model)
                && !fallbacks
                    .get(model.as_str())
                    .is_some_and(|chain| chain.iter().any(|m| usable(m)))
        })
        .map(String::as_str)
        .collect();
    let upstreams: usize = models.values().map(|(n, _)| n).sum();
    let detail = if down.is_empty() {
        format!(
            "{} models, each with an upstream whose circuit is not open ({upstreams} upstreams)",
            models.len()
        )
    } else {
        let open: Vec<String> = pipeline
            .circuits()
            .into_iter()
            .filter(|(_, m, c)| down.contains(&m.as_str()) && *c == CircuitState::Open)
            .map(|(name, _, _)| name)
            .collect();
        format!(
            "no upstream can serve {}: circuit open for {}",
            down.join(", "),
            open.join(", ")
        )
    };
    check("upstreams", !models.is_empty() && down.is_empty(), detail);
    check(
        "config",
        true,
        format!("loaded from {}", state.config_origin),
    );
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({"status": if ok { "ready" } else { "not_ready" }, "checks": checks, "timestamp": now_rfc3339()});
    (status, axum::Json(body)).into_response()
}

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> u64 {
    crate::cache::now_ms()
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The current UTC time as RFC 3339.
fn now_rfc3339() -> String {
    rfc3339(unix_now())
}

/// Unix seconds as an RFC 3339 UTC time (civil-from-days, no calendar crate).
pub fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
