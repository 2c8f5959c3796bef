//! The HTTP surface: an OpenAI-compatible API, agent invocation, health.
//!
//! Handlers parse and check the request, hand domain types to the pipeline,
//! and render its answer; every error is rendered once, by [`ApiError`].

mod chat;
mod error;
mod guard;

pub use error::ApiError;

use crate::auth::Auth;
use crate::cache::ResponseCache;
use crate::domain::CircuitState;
use crate::pipeline::Pipeline;
use crate::ratelimit::RateLimiter;
use crate::store::Store;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState {
    /// The request pipeline.
    pub pipeline: Arc<Pipeline>,
    /// The store (checked by readiness).
    pub store: Store,
    /// Limits.
    pub limits: ServerLimits,
    /// Set once shutdown begins; readiness then reports 503.
    pub draining: Arc<AtomicBool>,
    /// The response cache, when enabled.
    pub cache: Option<Arc<ResponseCache>>,
    /// API keys and budgets.
    pub auth: Arc<Auth>,
    /// Per-client and per-model rate limits.
    pub rate_limits: Arc<RateLimiter>,
}

/// The application's routes.
pub fn router(state: AppState) -> Router {
    let limit = state.limits.max_body_bytes;
    // The API needs a key (when auth is on) and passes the request limits;
    // health and metrics stay open for probes and scrapers.
    let api = Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/models", get(chat::models))
        .route("/v1/agents/{name}/invoke", post(chat::invoke))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard::admit));
    Router::new()
        .merge(api)
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("not_found", "no such route") })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then drains in-flight requests for at
/// most `grace` before returning.
///
/// Connections are served by hyper directly (not `axum::serve`) because the
/// slow-client bounds live on hyper's builder: a client has
/// `header_read_timeout` to send a request head — which also closes idle
/// keep-alive connections — and heads are bounded in count and bytes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;

    let draining = state.draining.clone();
    let limits = state.limits;
    let app = router(state);
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
    let mut shutdown = std::pin::pin!(shutdown);
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
            _ = &mut shutdown => break,
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
    draining.store(true, Ordering::SeqCst);
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

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.pipeline.metrics().render(),
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
    let slots = state.pipeline.slots().len();
    check("plugins", true, format!("{slots} plugins loaded"));
    // Ready while any upstream's breaker lets traffic through: one provider
    // being down is the router's business, all of them down is not a replica
    // that should receive traffic.
    let circuits = state.pipeline.circuits();
    let open: Vec<&str> = circuits
        .iter()
        .filter(|(_, _, c)| *c == CircuitState::Open)
        .map(|(name, _, _)| name.as_str())
        .collect();
    let detail = if open.is_empty() {
        format!("{} upstreams, all circuits closed", circuits.len())
    } else {
        format!(
            "{} of {} upstreams have an open circuit: {}",
            open.len(),
            circuits.len(),
            open.join(", ")
        )
    };
    check(
        "upstreams",
        !circuits.is_empty() && open.len() < circuits.len(),
        detail,
    );

    check("config", true, "loaded".into());
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
