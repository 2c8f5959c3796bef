//! The simulator behind an OpenAI-compatible HTTP server.
//!
//! Lets the real HTTP upstream, and anything else that speaks OpenAI, be
//! exercised against a provider whose faults are under control: the same
//! [`Simulator`] decides, and its outcomes are rendered the way OpenAI would
//! render them (error bodies, `Retry-After`, SSE chunks).

use super::sim::{SimOutcome, Simulator, error_kind};
use super::{ChunkWriter, completion_events};
use crate::clock;
use crate::domain::Completion;
use crate::openai::embedding::{self, EmbeddingsRequest};
use crate::openai::{ChatRequest, ChatResponse, ErrorBody};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use futures::StreamExt;
use serde_json::json;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// What a malformed answer looks like: JSON cut off mid-way.
const MALFORMED_BODY: &str = r#"{"id":"x","choices":["#;

struct SimState {
    sim: Arc<Simulator>,
    models: Vec<String>,
}

/// The request quota the simulator announces, like OpenAI's
/// `x-ratelimit-limit-requests`; `x-ratelimit-remaining-requests` counts
/// down from it with every request it decides.
pub const ANNOUNCED_REQUEST_QUOTA: u64 = 10_000;

/// The simulator's routes: `POST /v1/chat/completions`, `POST
/// /v1/embeddings`, `POST /v1/responses`, `GET /v1/models`
/// and `GET /health`. Only the listed `models` are served.
pub fn router(sim: Arc<Simulator>, models: Vec<String>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_with_quota))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/responses", post(responses))
        .route("/v1/models", get(list_models))
        .route("/health", get(|| async { "ok" }))
        .with_state(Arc::new(SimState { sim, models }))
}

/// Serves [`router`] on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sim: Arc<Simulator>,
    models: Vec<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // TCP_NODELAY, as the gateway's own listener: without it a stream's last
    // events wait ~40 ms for the client's delayed ACK (Nagle).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(sim, models))
        .with_graceful_shutdown(shutdown)
        .await
}

fn error(status: StatusCode, kind: &str, code: &str, message: impl Into<String>) -> Response {
    (status, axum::Json(ErrorBody::new(message, kind, code))).into_response()
}

/// A 400 as OpenAI words one.
fn bad_request(code: &str, message: impl Into<String>) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        code,
        message,
    )
}

/// The 404 for a model the simulator does not serve.
fn unknown_model(model: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "model_not_found",
        format!("the model `{model}` does not exist"),
    )
}

/// A decided failure or malformed answer, rendered as a provider sends it
/// (whatever the endpoint: they fail alike). An answer is the caller's to
/// render and never reaches here.
fn refusal(outcome: SimOutcome) -> Response {
    match outcome {
        SimOutcome::Fail {
            status,
            retry_after_ms,
            code,
            message,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = error(status, error_kind(status.as_u16()), code, message);
            if let Some(ms) = retry_after_ms {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, ms.div_ceil(1000).into());
            }
            resp
        }
        SimOutcome::Malformed => {
            ([(header::CONTENT_TYPE, "application/json")], MALFORMED_BODY).into_response()
        }
        SimOutcome::Answer(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal",
            "the simulator rendered an answer as a failure",
        ),
    }
}

async fn list_models(State(state): State<Arc<SimState>>) -> Response {
    let data: Vec<_> = state
        .models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "agentrouter-sim"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// `POST /v1/embeddings`: decided like a completion of the inputs (see
/// [`super::sim_embed`]), answered with their deterministic vectors.
async fn embeddings(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    let parsed = serde_json::from_slice::<EmbeddingsRequest>(&body)
        .map_err(|e| e.to_string())
        .and_then(|w| w.to_domain().map_err(|e| e.to_string()));
    let (req, format) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return bad_request("invalid_request", format!("invalid request body: {e}")),
    };
    if !state.models.contains(&req.model) {
        return unknown_model(&req.model);
    }
    let (latency, outcome) = state.sim.decide(&req.model, &super::sim_embed::probe(&req));
    tokio::time::sleep(latency).await;
    match outcome {
        SimOutcome::Answer(_) => {
            let dims = state.sim.settings().embedding_dimensions;
            let answer = super::sim_embed::answer(&req.model, &req, dims);
            axum::Json(embedding::render(&answer, format)).into_response()
        }
        failed => refusal(failed),
    }
}

/// `POST /v1/responses`: the simulator speaking the Responses API (see
/// [`super::sim_responses`]).
async fn responses(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    let parsed = serde_json::from_slice::<serde_json::Value>(&body)
        .map_err(|e| e.to_string())
        .and_then(|body| super::sim_responses::probe(&body));
    let (req, probe) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return bad_request("invalid_request", format!("invalid request body: {e}")),
    };
    if !state.models.contains(&req.model) {
        return unknown_model(&req.model);
    }
    let (latency, outcome) = state.sim.decide(&req.model, &probe);
    tokio::time::sleep(latency).await;
    match outcome {
        SimOutcome::Answer(c) => {
            match super::sim_responses::reply(state.sim.requests(), &req, c, req.stream) {
                super::ResponsesReply::Whole(object) => axum::Json(object).into_response(),
                super::ResponsesReply::Events(events) => {
                    let text: Vec<String> = events
                        .filter_map(|e| async move { e.ok() })
                        .map(|e| {
                            format!(
                                "event: {}\ndata: {e}\n\n",
                                e["type"].as_str().unwrap_or_default()
                            )
                        })
                        .collect()
                        .await;
                    ([(header::CONTENT_TYPE, "text/event-stream")], text.concat()).into_response()
                }
            }
        }
        failed => refusal(failed),
    }
}

/// [`chat`], with rate-limit headers as a provider sends them.
async fn chat_with_quota(state: State<Arc<SimState>>, body: Bytes) -> Response {
    let sim = state.sim.clone();
    let mut response = chat(state, body).await;
    let left = ANNOUNCED_REQUEST_QUOTA.saturating_sub(sim.requests());
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit-requests", ANNOUNCED_REQUEST_QUOTA.into());
    headers.insert("x-ratelimit-remaining-requests", left.into());
    response
}

async fn chat(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    let wire: ChatRequest = match serde_json::from_slice(&body) {
        Ok(w) => w,
        Err(e) => return bad_request("invalid_json", format!("invalid request body: {e}")),
    };
    let req = match wire.to_domain() {
        Ok(r) => r,
        Err(e) => return bad_request("invalid_request", e.to_string()),
    };
    if !state.models.contains(&wire.model) {
        return unknown_model(&wire.model);
    }
    let (latency, outcome) = state.sim.decide(&wire.model, &req);
    let interval = Duration::from_millis(state.sim.settings().chunk_interval_ms);
    tokio::time::sleep(latency).await;
    let id = format!("chatcmpl-sim-{}", state.sim.requests());
    match outcome {
        SimOutcome::Answer(c) if wire.stream => sse(chunks(&id, c, wire.include_usage()), interval),
        SimOutcome::Answer(c) => {
            axum::Json(ChatResponse::from_completion(id, clock::unix_s(), &c)).into_response()
        }
        SimOutcome::Malformed if wire.stream => {
            sse(vec![MALFORMED_BODY.to_string()], Duration::ZERO)
        }
        failed => refusal(failed),
    }
}

/// The SSE payloads of an answer, OpenAI style: text pieces (the first
/// carrying the role), tool calls whole, a finish chunk, a usage-only chunk
/// when asked for, `[DONE]`.
fn chunks(id: &str, c: Completion, include_usage: bool) -> Vec<String> {
    let mut writer = ChunkWriter::new(id, clock::unix_s(), c.model.clone(), include_usage);
    let mut out: Vec<String> = completion_events(c)
        .iter()
        .flat_map(|event| writer.write(event))
        .map(|chunk| serde_json::to_string(&chunk).unwrap_or_default())
        .collect();
    out.push("[DONE]".into());
    out
}

/// Server-sent events, `interval` apart after the first.
fn sse(payloads: Vec<String>, interval: Duration) -> Response {
    let frames =
        futures::stream::iter(payloads.into_iter().enumerate()).then(move |(i, p)| async move {
            if i > 0 && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            Ok::<_, Infallible>(Bytes::from(format!("data: {p}\n\n")))
        });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(frames),
    )
        .into_response()
}
