//! `/v1/chat/completions`, `/v1/models` and `/v1/agents/{name}/invoke`.

use super::{ApiError, AppState, unix_now};
use crate::domain::{CallContext, Completion, Message, Task};
use crate::openai::{
    ChatChunk, ChatRequest, ChatResponse, ChunkChoice, Delta, WireMessage, WireUsage,
};
use crate::pipeline::ChatOutcome;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
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
fn body(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(state.limits.max_body_bytes)
        } else {
            ApiError::bad_request(format!("could not read the request body: {rejection}"))
        }
    })
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn context(state: &AppState, request_id: &str) -> CallContext {
    let mut ctx = CallContext::new("anonymous", request_id, state.limits.request_timeout);
    ctx.max_depth = state.limits.max_agent_depth;
    ctx
}

fn with_headers(mut response: Response, request_id: &str, outcome: &ChatOutcome) -> Response {
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{:.8}", outcome.cost_usd)) {
        headers.insert("x-agentrouter-cost-usd", v);
    }
    response
}

/// `POST /v1/chat/completions`.
pub(super) async fn completions(
    State(state): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body(&state, raw)?;
    let wire: ChatRequest = parse(&bytes)?;
    if wire.model.trim().is_empty() {
        return Err(ApiError::bad_request("`model` must not be empty"));
    }
    if wire.messages.is_empty() {
        return Err(ApiError::bad_request(
            "`messages` must contain at least one message",
        ));
    }
    let req = wire
        .to_domain()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let id = new_id("chatcmpl");
    let outcome = state.pipeline.chat(context(&state, &id), req).await?;
    let created = unix_now();
    let response = if wire.stream {
        sse(&id, created, &outcome.completion).into_response()
    } else {
        Json(ChatResponse::from_completion(
            id.clone(),
            created,
            &outcome.completion,
        ))
        .into_response()
    };
    Ok(with_headers(response, &id, &outcome))
}

/// Renders a finished completion as `chat.completion.chunk` events.
///
/// The pipeline hands over a validated answer (output validators such as
/// PII redaction must see the whole text before any of it leaves), so the
/// stream replays it in word-sized pieces, then a final chunk with the
/// finish reason and usage, then `[DONE]`.
fn sse(
    id: &str,
    created: u64,
    completion: &Completion,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>> + use<>> {
    let chunk = |delta: Delta, finish: Option<String>, usage: Option<WireUsage>| ChatChunk {
        id: id.to_string(),
        object: "chat.completion.chunk".into(),
        created,
        model: completion.model.clone(),
        choices: vec![ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish,
        }],
        usage,
    };
    let mut chunks = vec![chunk(
        Delta {
            role: Some("assistant".into()),
            ..Default::default()
        },
        None,
        None,
    )];
    for piece in split_words(&completion.message.content, 4) {
        chunks.push(chunk(
            Delta {
                content: Some(piece),
                ..Default::default()
            },
            None,
            None,
        ));
    }
    if !completion.message.tool_calls.is_empty() {
        let calls = WireMessage::from(&completion.message).tool_calls;
        let calls: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"index": i, "id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}))
            .collect();
        chunks.push(chunk(
            Delta {
                tool_calls: Some(calls),
                ..Default::default()
            },
            None,
            None,
        ));
    }
    chunks.push(chunk(
        Delta::default(),
        Some(completion.finish_reason.clone()),
        Some(completion.usage.into()),
    ));
    let mut events: Vec<Event> = chunks
        .iter()
        .map(|c| Event::default().data(serde_json::to_string(c).unwrap_or_default()))
        .collect();
    events.push(Event::default().data("[DONE]"));
    Sse::new(futures::stream::iter(events.into_iter().map(Ok)))
}

/// Splits text into pieces of `words` words, keeping all whitespace, so the
/// pieces concatenate back to the original.
fn split_words(text: &str, words: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut count = 0;
    for part in text.split_inclusive(char::is_whitespace) {
        current.push_str(part);
        if part.ends_with(char::is_whitespace) {
            count += 1;
        }
        if count == words {
            pieces.push(std::mem::take(&mut current));
            count = 0;
        }
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// `GET /v1/models`.
pub(super) async fn models(State(state): State<AppState>) -> Response {
    let data: Vec<Value> = state
        .pipeline
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
    let bytes = body(&state, raw)?;
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
    let outcome = state
        .pipeline
        .invoke(context(&state, &id), &name, task)
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
    Ok(with_headers(Json(body).into_response(), &id, &outcome))
}

#[cfg(test)]
mod tests {
    use super::split_words;

    #[test]
    fn word_pieces_concatenate_back_to_the_text() {
        let text = "one two  three\nfour five six seven";
        let pieces = split_words(text, 2);
        assert_eq!(pieces.concat(), text);
        assert!(pieces.len() >= 3);
    }
}
