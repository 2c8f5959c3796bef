//! `/v1/chat/completions`, `/v1/models` and `/v1/agents/{name}/invoke`:
//! HTTP in, a [`ChatRequest`] to the request layer, its [`Answer`] out as
//! OpenAI-shaped JSON or server-sent events.

use super::guard::read_body;
use super::{ApiError, AppState};
use crate::auth::Identity;
use crate::domain::{Message, Target};
use crate::gateway::{Answer, CacheStatus, ChatRequest, Reply};
use crate::openai::{self, ChatResponse, ErrorBody, WireMessage, WireUsage};
use crate::upstream::{ChunkWriter, EventStream, completion_events};
use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderValue;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;

pub(super) fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Adds the gateway's headers: the request id, the cost (known for whole
/// answers) and what the cache did.
pub(super) fn with_headers(
    mut response: Response,
    request_id: &str,
    cost_usd: Option<f64>,
    cache: Option<CacheStatus>,
) -> Response {
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", v);
    }
    if let Some(cost) = cost_usd
        && let Ok(v) = HeaderValue::from_str(&format!("{cost:.8}"))
    {
        headers.insert("x-agentrouter-cost-usd", v);
    }
    let status = match cache {
        Some(CacheStatus::Hit(level)) => {
            headers.insert("x-agentrouter-cache-level", HeaderValue::from_static(level));
            Some("hit")
        }
        Some(CacheStatus::Miss) => Some("miss"),
        Some(CacheStatus::Bypass) => Some("bypass"),
        None => None,
    };
    if let Some(status) = status {
        headers.insert("x-agentrouter-cache", HeaderValue::from_static(status));
    }
    response
}

/// `POST /v1/chat/completions`.
pub(super) async fn completions(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&state, body).await?;
    let wire: openai::ChatRequest = parse(&bytes)?;
    if wire.model.trim().is_empty() {
        return Err(ApiError::bad_request("`model` must not be empty"));
    }
    if wire.messages.is_empty() {
        // Noted like any request for a target, so the refusal is counted under it.
        state.gateway.note(&Target::parse(&wire.model));
        return Err(ApiError::bad_request(
            "`messages` must contain at least one message",
        ));
    }
    let request = wire
        .to_domain()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let req = ChatRequest {
        target: Target::parse(&wire.model),
        request,
        stream: wire.stream,
        include_usage: wire.include_usage(),
        end_user: wire.user,
    };
    let (stream, include_usage) = (req.stream, req.include_usage);
    let answer = state.gateway.chat(&identity, req).await?;
    Ok(render(answer, stream.then_some(include_usage)))
}

/// An answer as a response: JSON, or — for a streaming client, `stream`
/// saying whether it asked for the usage chunk — events, live from the
/// upstream or a whole answer replayed, written alike.
fn render(answer: Answer, stream: Option<bool>) -> Response {
    let Answer {
        id,
        created,
        reply,
        cache,
    } = answer;
    let (response, cost) = match reply {
        Reply::Whole {
            completion,
            cost_usd,
        } if stream.is_some() => {
            let include_usage = stream.unwrap_or_default();
            let writer = ChunkWriter::new(&id, created, completion.model.clone(), include_usage);
            let events = futures::stream::iter(completion_events(completion).into_iter().map(Ok));
            (
                sse(writer, Box::pin(events)).into_response(),
                Some(cost_usd),
            )
        }
        Reply::Whole {
            completion,
            cost_usd,
        } => (
            Json(ChatResponse::from_completion(
                id.clone(),
                created,
                &completion,
            ))
            .into_response(),
            Some(cost_usd),
        ),
        Reply::Live { model, events } => {
            let include_usage = stream.unwrap_or_default();
            let writer = ChunkWriter::new(&id, created, model, include_usage);
            (sse(writer, events).into_response(), None)
        }
    };
    with_headers(response, &id, cost, Some(cache))
}

/// Renders answer events as `chat.completion.chunk` server-sent events
/// (see [`ChunkWriter`]), then `[DONE]`. A failure midway (the upstream
/// broke off) becomes an OpenAI-style error event, and the stream ends
/// without `[DONE]`.
fn sse(
    mut writer: ChunkWriter,
    events: EventStream,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>> + use<>> {
    let mut finished = false;
    let chunks = events.flat_map(move |event| {
        let data: Vec<String> = match event {
            _ if finished => Vec::new(),
            Ok(event) => {
                finished = event.done().is_some();
                let mut data: Vec<String> = writer.write(&event).iter().map(json_text).collect();
                if finished {
                    data.push("[DONE]".into());
                }
                data
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

/// `GET /v1/models`: what the calling key may use.
pub(super) async fn models(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) -> Response {
    let pipeline = state.pipeline();
    let data: Vec<Value> = state
        .gateway
        .models(&identity)
        .into_iter()
        .map(|id| model_object(&pipeline, &id))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{id}`: one model or agent the calling key may use, or
/// OpenAI's 404.
pub(super) async fn model(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
) -> Response {
    if state.gateway.models(&identity).contains(&id) {
        return Json(model_object(&state.pipeline(), &id)).into_response();
    }
    let body = ErrorBody::new(
        format!("The model `{id}` does not exist or you do not have access to it."),
        "invalid_request_error",
        "model_not_found",
    )
    .with_param("model");
    (axum::http::StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// A model object; `endpoints` (the gateway's extension) names what
/// serves it: `chat`, `embeddings`, `responses`.
fn model_object(pipeline: &crate::pipeline::Pipeline, id: &str) -> Value {
    let endpoints: Vec<&str> = pipeline.endpoints(id).iter().map(|e| e.as_str()).collect();
    json!({"id": id, "object": "model", "created": 0, "owned_by": "agentrouter",
        "endpoints": endpoints})
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
    Extension(identity): Extension<Identity>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    state.gateway.note(&Target::Agent(name.clone()));
    let bytes = read_body(&state, body).await?;
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
    let metadata = openai::metadata_from_wire(req.metadata.as_ref());
    let run = state
        .gateway
        .invoke(&identity, &name, input, metadata)
        .await?;
    let usage: WireUsage = run.output.usage.into();
    let body = json!({
        "id": run.id,
        "agent": name,
        "output": run.output.message.content,
        "usage": usage,
        "cost_usd": run.cost_usd,
        "steps": run.steps,
    });
    Ok(with_headers(
        Json(body).into_response(),
        &run.id,
        Some(run.cost_usd),
        None,
    ))
}
