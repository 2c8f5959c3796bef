//! `/v1/chat/completions`, `/v1/models` and `/v1/agents/{name}/invoke`.

use super::guard::{account, check_messages, check_target, read_body};
use super::{ApiError, AppState, unix_now};
use crate::auth::Identity;
use crate::cache::{CacheKey, CachedAnswer, HitFrom, ResponseCache, Served};
use crate::domain::{CallContext, Completion, Message, Task};
use crate::openai::{ChatRequest, ChatResponse, ChunkWriter, ErrorBody, WireMessage, WireUsage};
use crate::pipeline::{Pipeline, StreamStart};
use crate::telemetry::request;
use crate::upstream::{EventStream, StreamEvent, completion_events};
use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderValue;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

fn new_id(prefix: &str) -> String {
    let suffix: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("{prefix}-{suffix}")
}

/// The fingerprint of the validators that approve answers, as they are
/// live now (their slots in order, with the serving plugin's digest).
fn validator_generation(pipeline: &Pipeline) -> String {
    let settings = pipeline.settings();
    let live: Vec<(String, String)> = settings
        .input_validators
        .iter()
        .chain(&settings.output_validators)
        .filter_map(|name| {
            let slot = pipeline.slots().get(name)?;
            Some((name.clone(), slot.plugin.identity().digest))
        })
        .collect();
    ResponseCache::generation(live.iter().map(|(n, d)| (n.as_str(), d.as_str())))
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn context(
    state: &AppState,
    request_id: &str,
    identity: &Identity,
    end_user: Option<&str>,
) -> CallContext {
    let mut ctx = CallContext::new(&identity.name, request_id, state.limits().request_timeout);
    ctx.max_depth = state.limits().max_agent_depth;
    // The A/B assignment key: the end user when the client names one.
    ctx.end_user = end_user.map(str::to_string);
    request::with_current(|s| s.set_client(&ctx.client));
    ctx
}

/// Notes the model or `agent:<name>` a request addressed, for its metrics
/// and log line; a name that does not exist is noted as `unknown`, so
/// clients cannot mint label values.
fn note_target(state: &AppState, model: &str) {
    let known = state.pipeline().knows_model(model);
    request::with_current(|s| s.set_target(if known { model } else { "unknown" }));
}

/// What `x-agentrouter-cache` says about an answer.
#[derive(Clone, Copy)]
enum CacheStatus {
    /// Served from a tier (`l1`, `l2`) or a concurrent identical request (`flight`).
    Hit(&'static str),
    /// Cacheable; computed now and stored.
    Miss,
    /// Not cacheable (or the cache is off).
    Bypass,
}

fn with_headers(
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
    match cache {
        Some(CacheStatus::Hit(level)) => {
            headers.insert("x-agentrouter-cache", HeaderValue::from_static("hit"));
            headers.insert("x-agentrouter-cache-level", HeaderValue::from_static(level));
        }
        Some(CacheStatus::Miss) => {
            headers.insert("x-agentrouter-cache", HeaderValue::from_static("miss"));
        }
        Some(CacheStatus::Bypass) => {
            headers.insert("x-agentrouter-cache", HeaderValue::from_static("bypass"));
        }
        None => {}
    }
    response
}

/// A finished answer as a response: JSON, or replayed as a stream.
fn respond(
    id: &str,
    created: u64,
    stream: bool,
    completion: &Completion,
    cost_usd: f64,
    cache: CacheStatus,
) -> Response {
    let response = if stream {
        let events =
            futures::stream::iter(completion_events(completion.clone()).into_iter().map(Ok));
        sse(id, created, completion.model.clone(), Box::pin(events)).into_response()
    } else {
        Json(ChatResponse::from_completion(
            id.to_string(),
            created,
            completion,
        ))
        .into_response()
    };
    with_headers(response, id, Some(cost_usd), Some(cache))
}

/// A cached answer as this request's answer: marked cached, costing nothing.
fn from_cache(answer: &CachedAnswer) -> Completion {
    Completion {
        cached: true,
        ..answer.completion.clone()
    }
}

/// `POST /v1/chat/completions`.
pub(super) async fn completions(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&state, body).await?;
    let wire: ChatRequest = parse(&bytes)?;
    if wire.model.trim().is_empty() {
        return Err(ApiError::bad_request("`model` must not be empty"));
    }
    note_target(&state, &wire.model);
    if wire.messages.is_empty() {
        return Err(ApiError::bad_request(
            "`messages` must contain at least one message",
        ));
    }
    let req = wire
        .to_domain()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    check_messages(&state, "messages", &req.messages)?;
    check_target(&state, &identity, &req.model)?;
    let id = new_id("chatcmpl");
    let ctx = context(&state, &id, &identity, wire.user.as_deref());
    let created = unix_now();
    let target = req.model.clone();
    let cached = state
        .cache
        .clone()
        .filter(|c| c.cacheable(&req))
        .map(|cache| {
            let raw: serde_json::Map<String, Value> =
                serde_json::from_slice(&bytes).unwrap_or_default();
            let generation = validator_generation(&state.pipeline());
            let key = CacheKey::of(&cache.namespace(&generation, &identity.name), &req, &raw);
            (cache, key)
        });

    if wire.stream {
        let status = match &cached {
            Some((cache, key)) => {
                if let Some((answer, level)) = cache.lookup(key).await {
                    return Ok(respond(
                        &id,
                        created,
                        true,
                        &from_cache(&answer),
                        0.0,
                        CacheStatus::Hit(level),
                    ));
                }
                CacheStatus::Miss
            }
            None => CacheStatus::Bypass,
        };
        return Ok(
            match state.pipeline().chat_stream(ctx.clone(), req).await? {
                StreamStart::Buffered(outcome) => {
                    if let Some((cache, key)) = &cached {
                        cache
                            .store(key, &outcome.completion, outcome.cost_usd)
                            .await;
                    }
                    account(
                        &state,
                        &identity,
                        &target,
                        outcome.completion.usage,
                        outcome.cost_usd,
                    );
                    respond(
                        &id,
                        created,
                        true,
                        &outcome.completion,
                        outcome.cost_usd,
                        status,
                    )
                }
                StreamStart::Live { model, events } => {
                    let events = settle_live(state.clone(), identity, target, ctx, cached, events);
                    with_headers(
                        sse(&id, created, model, events).into_response(),
                        &id,
                        None,
                        Some(status),
                    )
                }
            },
        );
    }

    let Some((cache, key)) = cached else {
        let outcome = state.pipeline().chat(ctx, req).await?;
        account(
            &state,
            &identity,
            &target,
            outcome.completion.usage,
            outcome.cost_usd,
        );
        return Ok(respond(
            &id,
            created,
            false,
            &outcome.completion,
            outcome.cost_usd,
            CacheStatus::Bypass,
        ));
    };
    let pipeline = state.pipeline();
    let served = cache
        .get_or_fill(key, || pipeline.chat(ctx.clone(), req.clone()))
        .await?;
    Ok(match served {
        Served::Hit(answer, from) => {
            let level = match from {
                HitFrom::Tier(level) => level,
                HitFrom::Flight => "flight",
            };
            respond(
                &id,
                created,
                false,
                &from_cache(&answer),
                0.0,
                CacheStatus::Hit(level),
            )
        }
        Served::Miss(outcome) => {
            account(
                &state,
                &identity,
                &target,
                outcome.completion.usage,
                outcome.cost_usd,
            );
            respond(
                &id,
                created,
                false,
                &outcome.completion,
                outcome.cost_usd,
                CacheStatus::Miss,
            )
        }
    })
}

/// Watches a live stream to the end: charges its usage and cost, and stores
/// the whole answer in the cache when the request was cacheable — before the
/// final event reaches the client, so a client that saw the end of the
/// stream finds the answer cached. A stream that breaks off is never cached.
fn settle_live(
    state: AppState,
    identity: Identity,
    target: String,
    ctx: CallContext,
    cached: Option<(Arc<ResponseCache>, CacheKey)>,
    events: EventStream,
) -> EventStream {
    let seen = Arc::new(Mutex::new(Message::assistant("")));
    let settle = Arc::new((state, identity, target, ctx, cached));
    Box::pin(events.then(move |event| {
        let seen = seen.clone();
        let settle = settle.clone();
        async move {
            let (state, identity, target, ctx, cached) = &*settle;
            match &event {
                Ok(StreamEvent::Delta(piece)) if cached.is_some() => {
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .content
                        .push_str(piece);
                }
                Ok(StreamEvent::ToolCalls(calls)) if cached.is_some() => {
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .tool_calls
                        .extend(calls.iter().cloned());
                }
                Ok(StreamEvent::Done {
                    finish_reason,
                    usage,
                    model,
                }) => {
                    // The pipeline recorded the step (and its cost) before
                    // the event reached this layer.
                    let cost = ctx.steps.cost_usd();
                    account(state, identity, target, *usage, cost);
                    if let Some((cache, key)) = cached {
                        let message = std::mem::replace(
                            &mut *seen.lock().unwrap_or_else(|e| e.into_inner()),
                            Message::assistant(""),
                        );
                        let completion = Completion {
                            message,
                            model: model.clone(),
                            finish_reason: finish_reason.clone(),
                            usage: *usage,
                            cached: false,
                        };
                        cache.store(key, &completion, cost).await;
                    }
                }
                _ => {}
            }
            event
        }
    }))
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

/// `GET /v1/models`: what the calling key may use.
pub(super) async fn models(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) -> Response {
    let data: Vec<Value> = state
        .pipeline()
        .models()
        .into_iter()
        .filter(|id| identity.check_target(id).is_ok())
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
    Extension(identity): Extension<Identity>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    note_target(&state, &format!("agent:{name}"));
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
    check_messages(&state, "input", &input)?;
    let target = format!("agent:{name}");
    if state.pipeline().knows_model(&target) {
        check_target(&state, &identity, &target)?;
    }
    let id = new_id("task");
    let task = Task {
        id: id.clone(),
        input,
        metadata: crate::openai::metadata_from_wire(req.metadata.as_ref()),
    };
    let outcome = state
        .pipeline()
        .invoke(context(&state, &id, &identity, None), &name, task)
        .await?;
    account(
        &state,
        &identity,
        &target,
        outcome.completion.usage,
        outcome.cost_usd,
    );
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
        Some(outcome.cost_usd),
        None,
    ))
}
