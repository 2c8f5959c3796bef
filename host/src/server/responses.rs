//! `/v1/responses`: HTTP in, a [`ResponsesRequest`] to the request layer,
//! its answer out as a response object or as the Responses API's
//! server-sent events ([`ResponsesWriter`]); and the stored responses:
//! `GET`, `DELETE` and the input items list.

use super::chat::{parse, with_headers};
use super::guard::read_body;
use super::{ApiError, AppState};
use crate::auth::Identity;
use crate::gateway::{Reply, ResponsesAnswer, ResponsesOutput};
use crate::openai::responses::ResponsesRequest;
use crate::upstream::{EventStream, ResponsesReply, ResponsesWriter, completion_events};
use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;

/// `POST /v1/responses`.
pub(super) async fn create(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&state, body).await?;
    let body: Value = parse(&bytes)?;
    let req: ResponsesRequest = serde_json::from_value(body.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    let stream = req.stream;
    let ResponsesAnswer { id, output, cache } = state.gateway.respond(&identity, req, body).await?;
    let (object, reply) = match output {
        ResponsesOutput::Translated { object, reply } => (*object, reply),
        ResponsesOutput::Passed { reply, cost_usd } => {
            let response = match reply {
                ResponsesReply::Whole(object) => Json(object).into_response(),
                ResponsesReply::Events(events) => passed(events),
            };
            return Ok(with_headers(response, &id, cost_usd, Some(cache)));
        }
    };
    let (response, cost) = match reply {
        Reply::Whole {
            completion,
            cost_usd,
        } if stream => {
            let events = futures::stream::iter(completion_events(completion).into_iter().map(Ok));
            (
                sse(ResponsesWriter::new(object), Box::pin(events)),
                Some(cost_usd),
            )
        }
        Reply::Whole {
            completion,
            cost_usd,
        } => (
            Json(object.finished(&completion)).into_response(),
            Some(cost_usd),
        ),
        Reply::Live { events, .. } => (sse(ResponsesWriter::new(object), events), None),
    };
    Ok(with_headers(response, &id, cost, Some(cache)))
}

/// `GET /v1/responses/{id}`.
pub(super) async fn get(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.gateway.response(&identity, &id)?).into_response())
}

/// `DELETE /v1/responses/{id}`.
pub(super) async fn delete(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.gateway.delete_response(&identity, &id)?;
    Ok(Json(json!({"id": id, "object": "response.deleted", "deleted": true})).into_response())
}

/// Query of the input items list.
#[derive(Deserialize)]
pub(super) struct ItemsQuery {
    /// `asc` or `desc` (the default, as OpenAI's).
    #[serde(default)]
    order: Option<String>,
    /// Most items answered, 1 to 100 (default 20).
    #[serde(default)]
    limit: Option<usize>,
    /// Answer the items after this one.
    #[serde(default)]
    after: Option<String>,
}

/// `GET /v1/responses/{id}/input_items`: a page of the items, OpenAI's
/// list object (`first_id`, `last_id`, `has_more`).
pub(super) async fn input_items(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
    Query(query): Query<ItemsQuery>,
) -> Result<Response, ApiError> {
    let mut items = state.gateway.response_input_items(&identity, &id)?;
    match query.order.as_deref() {
        None | Some("desc") => items.reverse(),
        Some("asc") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`order` must be `asc` or `desc`, not `{other}`"
            ))
            .with_param("order"));
        }
    }
    if let Some(after) = &query.after {
        let at = items.iter().position(|i| i["id"].as_str() == Some(after));
        items = at.map_or_else(Vec::new, |at| items.split_off(at + 1));
    }
    let limit = query.limit.unwrap_or(20).clamp(1, 100);
    let has_more = items.len() > limit;
    items.truncate(limit);
    let first = items.first().map(|i| i["id"].clone());
    let last = items.last().map(|i| i["id"].clone());
    Ok(
        Json(json!({"object": "list", "data": items, "first_id": first,
        "last_id": last, "has_more": has_more}))
        .into_response(),
    )
}

/// An upstream's Responses events as it sent them, each as `event:
/// <type>`; a failure midway becomes an `error` event.
fn passed(
    events: futures::stream::BoxStream<'static, Result<Value, crate::domain::Failure>>,
) -> Response {
    let mut sequence = 0u64;
    let all = events.map(move |event| {
        let data = match event {
            Ok(data) => {
                sequence = data["sequence_number"].as_u64().map_or(sequence, |n| n + 1);
                data
            }
            Err(failure) => json!({"type": "error", "code": "stream_interrupted",
                "message": format!("upstream failed mid-stream: {failure}"), "param": null,
                "sequence_number": sequence}),
        };
        let kind = data["type"].as_str().unwrap_or("message").to_string();
        Ok::<_, Infallible>(Event::default().event(kind).data(data.to_string()))
    });
    Sse::new(all).into_response()
}

/// The answer events rendered as Responses events, each `event: <type>`
/// with its JSON; a failure midway becomes an `error` event and
/// `response.failed`.
fn sse(mut writer: ResponsesWriter, events: EventStream) -> Response {
    let start = futures::stream::iter(writer.start());
    let mut finished = false;
    let rest = events.flat_map(move |event| {
        let out = match event {
            _ if finished => Vec::new(),
            Ok(event) => {
                finished = event.done().is_some();
                writer.write(&event)
            }
            Err(failure) => {
                finished = true;
                writer.fail(&format!("upstream failed mid-stream: {failure}"))
            }
        };
        futures::stream::iter(out)
    });
    let all = start.chain(rest).map(|(kind, data)| {
        Ok::<_, Infallible>(Event::default().event(kind).data(data.to_string()))
    });
    Sse::new(all).into_response()
}
