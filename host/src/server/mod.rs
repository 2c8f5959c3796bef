//! The HTTP surface: an OpenAI-compatible API, agent invocation, health,
//! and the admin API (`/admin`, see [`admin`]).
//!
//! Handlers convert HTTP into domain types, hand them to the request layer
//! ([`Gateway`]) and render its [`Answer`](crate::gateway::Answer) — nothing
//! below this module knows HTTP. Every error is rendered once, by
//! [`ApiError`]. Connection-level bounds (slow clients, header sizes) and
//! the global bulkhead live here, because they are about connections and
//! responses, not about what a request asks for.

pub mod admin;
pub mod batch;
mod chat;
mod embeddings;
mod error;
mod guard;
mod keys;
mod observe;
mod responses;

pub use admin::{AdminState, Reload, ReloadReport};
pub use error::ApiError;

use crate::gateway::{Gateway, ServerLimits};
use crate::pipeline::Pipeline;
use crate::resilience::Bulkhead;
use crate::store::Store;
use crate::telemetry::health::Check;
use crate::telemetry::metrics::ShedLabels;
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
use std::time::Duration;

/// Everything a handler needs, behind one `Arc`: axum clones the state for
/// every middleware and handler of every request, so a clone must be one
/// reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<ServerState>);

impl AppState {
    /// A handle on `state`.
    pub fn new(state: ServerState) -> AppState {
        AppState(Arc::new(state))
    }
}

impl std::ops::Deref for AppState {
    type Target = ServerState;

    fn deref(&self) -> &ServerState {
        &self.0
    }
}

/// What the server holds (see [`AppState`]).
pub struct ServerState {
    /// The request layer, with the live configuration a handler loads once
    /// per request (so a reload never changes a request midway).
    pub gateway: Arc<Gateway>,
    /// Files and batches, and the runner of batches.
    pub batches: Arc<batch::Batches>,
    /// The store (checked by readiness).
    pub store: Store,
    /// Set once shutdown begins; readiness then reports 503.
    pub draining: Arc<AtomicBool>,
    /// Global bulkhead on API requests (`resilience.max_concurrent_requests`).
    pub bulkhead: Bulkhead,
    /// Where the running config came from (readiness names it).
    pub config_origin: Arc<str>,
    /// The admin API's control plane.
    pub admin: AdminState,
    /// The shared state of a cluster of replicas (`[cluster]`), whose
    /// reachability readiness reports.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl ServerState {
    /// The current pipeline.
    pub fn pipeline(&self) -> Arc<Pipeline> {
        self.gateway.pipeline()
    }

    /// The current request limits.
    pub fn limits(&self) -> ServerLimits {
        self.gateway.limits()
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
        .route("/v1/embeddings", post(embeddings::create))
        .route("/v1/responses", post(responses::create))
        .route_layer(middleware::from_fn_with_state(state.clone(), shed));
    let v1 = Router::new()
        .merge(api)
        .route("/v1/models", get(chat::models))
        // Ids may hold slashes (`org/model`), so the rest of the path is the id.
        .route("/v1/models/{*id}", get(chat::model))
        .route(
            "/v1/responses/{id}",
            get(responses::get).delete(responses::delete),
        )
        .route(
            "/v1/responses/{id}/input_items",
            get(responses::input_items),
        )
        .route("/v1/files", post(batch::upload_file).get(batch::list_files))
        .route(
            "/v1/files/{id}",
            get(batch::get_file).delete(batch::delete_file),
        )
        .route("/v1/files/{id}/content", get(batch::file_content))
        .route(
            "/v1/batches",
            post(batch::create_batch).get(batch::list_batches),
        )
        .route("/v1/batches/{id}", get(batch::get_batch))
        .route("/v1/batches/{id}/cancel", post(batch::cancel_batch))
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
        // Answers are written in small pieces (headers, then the body; SSE
        // events one by one): with Nagle on, a piece that follows an
        // unacknowledged one waits for the client's delayed ACK, ~40 ms.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
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
    axum::Json(json!({"status": "ok", "timestamp": crate::clock::now_rfc3339()})).into_response()
}

/// The global bulkhead: a place for the whole response (a streamed body
/// keeps it until the stream ends), or 503 with `Retry-After` at once.
async fn shed(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(place) = state.bulkhead.try_enter() else {
        state
            .gateway
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
    // Gauges of state owned elsewhere are read at scrape time.
    state.pipeline().record_gauges();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.gateway.metrics().render(),
    )
        .into_response()
}

/// `/health/ready`: every check of the parts that own a fact — shutdown,
/// the store, the plugins, the upstreams, the config, the cluster's Redis.
/// A degraded check (Redis lost) still answers 200, `"status": "degraded"`.
async fn ready(State(state): State<AppState>) -> Response {
    let draining = state.draining.load(Ordering::SeqCst);
    let store = state.store.db().contains_key(b"__readiness__");
    let pipeline = state.pipeline();
    let mut checks = vec![
        Check::new(
            "accepting",
            !draining,
            if draining {
                "draining for shutdown"
            } else {
                "accepting requests"
            },
        ),
        Check::new(
            "store",
            store.is_ok(),
            store.err().map_or_else(|| "open".into(), |e| e.to_string()),
        ),
        pipeline.plugin_check(),
        pipeline.upstream_check(),
        Check::new(
            "config",
            true,
            format!("loaded from {}", state.config_origin),
        ),
    ];
    if let Some(cluster) = &state.cluster {
        checks.push(cluster.check());
    }
    let ok = checks.iter().all(|c| c.status);
    let degraded = checks.iter().any(|c| c.degraded);
    let body: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .map(|c| (c.name.to_string(), json!(c)))
        .collect();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // Degraded still answers 200: the replica serves (see `Check`).
    let summary = match (ok, degraded) {
        (false, _) => "not_ready",
        (true, true) => "degraded",
        (true, false) => "ready",
    };
    let body = json!({"status": summary, "checks": body, "timestamp": crate::clock::now_rfc3339()});
    (status, axum::Json(body)).into_response()
}
