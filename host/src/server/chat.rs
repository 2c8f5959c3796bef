//! `/v1/chat/completions`, `/v1/models` and `/v1/agents/{name}/invoke`.

use super::{ApiError, AppState, Live, unix_now};
use crate::domain::{CallContext, Message, Task};
use crate::openai::{ChatRequest, ChatResponse, ChunkWriter, ErrorBody, WireMessage, WireUsage};
use crate::pipeline::{ChatOutcome, StreamStart};
use crate::telemetry::request;
use crate::upstream::{EventStream, StreamEvent, completion_events};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;

fn new_id(prefix: &str) -> String {
    let suffix: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("{prefix}-{suffix}")
}

/// The body, or the right error for a body that could not be read.
fn body(live: &Live, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(live.limits.max_body_bytes)
        } else {
            ApiError::bad_request(format!("could not read the request body: {rejection}"))
        }
    })
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn context(live: &Live, request_id: &str, end_user: Option<&str>) -> CallContext {
    let mut ctx = CallContext::new("anonymous", request_id, live.limits.request_timeout);
    ctx.max_depth = live.limits.max_agent_depth;
    ctx.end_user = end_user.map(str::to_string);
    request::with_current(|s| s.set_client(&ctx.client));
    ctx
}

/// Notes the model or `agent:<name>` a request addressed, for its metrics
/// and log line; a name that does not exist is noted as `unknown`, so
/// clients cannot mint label values.
fn note_target(live: &Live, model: &str) {
    let known = live.pipeline.knows_model(model);
    request::with_current(|s| s.set_target(if known { model } else { "unknown" }));
}

fn with_headers(
    mut response: Response,
    request_id: &str,
    outcome: Option<&ChatOutcome>,
) -> Response {
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", v);
    }
    if let Some(outcome) = outcome
        && let Ok(v) = HeaderValue::from_str(&format!("{:.8}", outcome.cost_usd))
    {
        headers.insert("x-agentrouter-cost-usd", v);
    }
    response
}

/// `POST /v1/chat/completions`.
pub(super) async fn completions(
    State(state): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let live = state.live.load_full();
    let bytes = body(&live, raw)?;
    let wire: ChatRequest = parse(&bytes)?;
    if wire.model.trim().is_empty() {
        return Err(ApiError::bad_request("`model` must not be empty"));
    }
    note_target(&live, &wire.model);
    if wire.messages.is_empty() {
        return Err(ApiError::bad_request(
            "`messages` must contain at least one message",
        ));
    }
    let req = wire
        .to_domain()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let id = new_id("chatcmpl");
    let ctx = context(&live, &id, wire.user.as_deref());
    let created = unix_now();
    if wire.stream {
        return Ok(match live.pipeline.chat_stream(ctx, req).await? {
            StreamStart::Buffered(outcome) => {
                let model = outcome.completion.model.clone();
                let events = futures::stream::iter(
                    completion_events(outcome.completion.clone())
                        .into_iter()
                        .map(Ok),
                );
                with_headers(
                    sse(&id, created, model, Box::pin(events)).into_response(),
                    &id,
                    Some(&outcome),
                )
            }
            StreamStart::Live { model, events } => {
                with_headers(sse(&id, created, model, events).into_response(), &id, None)
            }
        });
    }
    let outcome = live.pipeline.chat(ctx, req).await?;
    let body = ChatResponse::from_completion(id.clone(), created, &outcome.completion);
    Ok(with_headers(
        Json(body).into_response(),
        &id,
        Some(&outcome),
    ))
}

/// Renders answer events as `chat.completion.chunk` server-sent events: text
/// pieces, tool calls whole, a final chunk with the finish reason and usage,
/// then `[DONE]`. A failure midway (the upstream broke off) becomes an
/// OpenAI-style error event, and the stream ends without `[DONE]`.
fn sse(
    id: &str,
    created: u64,
    model: String,
    events: EventStream,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>> + use<>> {
    let mut writer = ChunkWriter::new(id, created, model);
    let mut finished = false;
    let chunks = events.flat_map(move |event| {
        let data: Vec<String> = match event {
            _ if finished => Vec::new(),
            Ok(StreamEvent::Delta(text)) => vec![json_text(&writer.content(text))],
            Ok(StreamEvent::ToolCalls(calls)) => vec![json_text(&writer.tool_calls(&calls))],
            Ok(StreamEvent::Done {
                finish_reason,
                usage,
                ..
            }) => {
                finished = true;
                vec![
                    json_text(&writer.finish(finish_reason, Some(usage))),
                    "[DONE]".into(),
                ]
            }
            Err(failure) => {
                finished = true;
                let body = ErrorBody::new(
                    format!("upstream failed mid-stream: {failure}"),
                    "upstream_error",
                    "stream_interrupted",
                );
                vec![json_text(&body)]
            }
        };
        futures::stream::iter(data.into_iter().map(|d| Ok(Event::default().data(d))))
    });
    Sse::new(chunks)
}

fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// `GET /v1/models`.
pub(super) async fn models(State(state): State<AppState>) -> Response {
    let data: Vec<Value> = state
        .pipeline()
        .models()
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "agentrouter"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// Body of `POST /v1/agents/{name}/invoke`.
#[derive(Deserialize)]
struct InvokeRequest {
    /// A string (one user message) or a list of chat messages.
    input: Value,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, Value>>,
}

/// `POST /v1/agents/{name}/invoke`.
pub(super) async fn invoke(
    State(state): State<AppState>,
    Path(name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let live = state.live.load_full();
    note_target(&live, &format!("agent:{name}"));
    let bytes = body(&live, raw)?;
    let req: InvokeRequest = parse(&bytes)?;
    let input = match req.input {
        Value::String(text) if !text.trim().is_empty() => vec![Message::user(text)],
        Value::Array(_) => {
            let wire: Vec<WireMessage> = serde_json::from_value(req.input)
                .map_err(|e| ApiError::bad_request(format!("`input` messages: {e}")))?;
            let messages = wire
                .iter()
                .enumerate()
                .map(|(i, m)| m.to_domain(i))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ApiError::bad_request(format!("`input` {e}")))?;
            if messages.is_empty() {
                return Err(ApiError::bad_request("`input` must not be empty"));
            }
            messages
        }
        _ => {
            return Err(ApiError::bad_request(
                "`input` must be a non-empty string or a list of messages",
            ));
        }
    };
    let id = new_id("task");
    let task = Task {
        id: id.clone(),
        input,
        metadata: crate::openai::metadata_from_wire(req.metadata.as_ref()),
    };
    let outcome = live
        .pipeline
        .invoke(context(&live, &id, None), &name, task)
        .await?;
    let usage: WireUsage = outcome.completion.usage.into();
    let body = json!({
        "id": id,
        "agent": name,
        "output": outcome.completion.message.content,
        "usage": usage,
        "cost_usd": outcome.cost_usd,
        "steps": outcome.steps,
    });
    Ok(with_headers(
        Json(body).into_response(),
        &id,
        Some(&outcome),
    ))
}
