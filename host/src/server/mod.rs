//! The HTTP surface: an OpenAI-compatible API, agent invocation, health,
//! and the admin API (`/admin`, see [`admin`]).
//!
//! Handlers parse and check the request, hand domain types to the pipeline,
//! and render its answer; every error is rendered once, by [`ApiError`].

pub mod admin;
mod chat;
mod error;

pub use admin::{AdminState, Reload, ReloadReport};
pub use error::ApiError;

use crate::config::Secret;
use crate::domain::CircuitState;
use crate::pipeline::Pipeline;
use crate::store::Store;
use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
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
    /// The admin API's control plane.
    pub admin: AdminState,
}

impl AppState {
    /// The current pipeline.
    pub fn pipeline(&self) -> Arc<Pipeline> {
        self.live.load().pipeline.clone()
    }
}

/// The application's routes.
pub fn router(state: AppState) -> Router {
    // Changing the body limit needs a restart: it is part of the router.
    let limit = state.live.load().limits.max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/models", get(chat::models))
        .route("/v1/agents/{name}/invoke", post(chat::invoke))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(admin::routes(state.clone()))
        .fallback(|| async { ApiError::not_found("not_found", "no such route") })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then drains in-flight requests for at
/// most `grace` before returning.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let draining = state.draining.clone();
    let started_drain = Arc::new(tokio::sync::Notify::new());
    let notify = started_drain.clone();
    let app = router(state);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        draining.store(true, Ordering::SeqCst);
        tracing::info!("shutting down: draining in-flight requests");
        notify.notify_one();
    });
    tokio::select! {
        result = server => result,
        _ = async { started_drain.notified().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "drain grace period expired; abandoning in-flight requests");
            Ok(())
        }
    }
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
        state.pipeline().metrics().render(),
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
    let slots = pipeline.slots().len();
    check("plugins", true, format!("{slots} plugins loaded"));
    // Ready while any upstream's breaker lets traffic through: one provider
    // being down is the router's business, all of them down is not a replica
    // that should receive traffic.
    let circuits = pipeline.circuits();
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

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The current UTC time as RFC 3339 (civil-from-days, no calendar crate).
fn now_rfc3339() -> String {
    let secs = unix_now();
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
