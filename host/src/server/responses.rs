//! `/v1/responses`: HTTP in, a [`ResponsesRequest`] to the request layer,
//! its answer out as a response object or as the Responses API's
//! server-sent events ([`ResponsesWriter`]); and the stored responses:
//! `GET`, `DELETE` and the input items list.

use super::chat::{parse, with_headers};
use super::guard::read_body;
use super::{ApiError, AppState};
use crate::auth::Identity;
use crate::gateway::{Reply, ResponsesAnswer};
use crate::openai::responses::{ResponseObject, ResponsesRequest, output_items};
use crate::upstream::{EventStream, StreamEvent, completion_events};
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
    let req: ResponsesRequest = parse(&bytes)?;
    let stream = req.stream;
    let ResponsesAnswer {
        object,
        reply,
        cache,
    } = state.gateway.respond(&identity, req).await?;
    let id = object.id.clone();
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

/// Writes one answer's events as the Responses API streams them: the
/// response created and in progress; the assistant's text as a message
/// item whose deltas flow as they come; at the end, the text's and the
/// items' `done` events, each function call as an item with its
/// arguments, and `response.completed` (or `response.incomplete`) with the
/// whole object. Item ids are the ones the stored response has.
pub struct ResponsesWriter {
    object: ResponseObject,
    sequence: u64,
    text: Option<String>,
}

impl ResponsesWriter {
    /// A writer for the response `object`.
    pub fn new(object: ResponseObject) -> Self {
        Self {
            object,
            sequence: 0,
            text: None,
        }
    }

    fn event(&mut self, kind: &'static str, mut data: Value) -> (&'static str, Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        (kind, data)
    }

    fn message_id(&self) -> String {
        format!("msg_{}", self.object.suffix())
    }

    /// The first events.
    pub fn start(&mut self) -> Vec<(&'static str, Value)> {
        let object = self.object.in_progress();
        vec![
            self.event("response.created", json!({"response": object})),
            self.event("response.in_progress", json!({"response": object})),
        ]
    }

    /// The message item opened, with its one text part.
    fn open_text(&mut self) -> Vec<(&'static str, Value)> {
        self.text = Some(String::new());
        let id = self.message_id();
        vec![
            self.event(
                "response.output_item.added",
                json!({"output_index": 0, "item": {"id": id, "type": "message",
                    "status": "in_progress", "role": "assistant", "content": []}}),
            ),
            self.event(
                "response.content_part.added",
                json!({"item_id": id, "output_index": 0, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
            ),
        ]
    }

    fn delta(&mut self, delta: &str) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        if self.text.is_none() {
            out.extend(self.open_text());
        }
        if let Some(text) = &mut self.text {
            text.push_str(delta);
        }
        let id = self.message_id();
        out.push(self.event(
            "response.output_text.delta",
            json!({"item_id": id, "output_index": 0, "content_index": 0, "delta": delta, "logprobs": []}),
        ));
        out
    }

    /// The events of one answer event.
    pub fn write(&mut self, event: &StreamEvent) -> Vec<(&'static str, Value)> {
        match event {
            StreamEvent::Chunk(_) if event.text().is_empty() => Vec::new(),
            StreamEvent::Chunk(_) => self.delta(event.text()),
            StreamEvent::Done(completion) => self.finish(completion),
        }
    }

    fn finish(&mut self, completion: &crate::domain::Completion) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        let items = output_items(self.object.suffix(), completion);
        for (index, item) in items.iter().enumerate() {
            if item["type"] == "message" {
                let text = completion.message.content.as_str();
                if self.text.is_none() {
                    out.extend(self.open_text());
                    if !text.is_empty() {
                        out.extend(self.delta(text));
                    }
                }
                let id = self.message_id();
                out.push(self.event(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
                ));
                out.push(self.event(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                        "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []}}),
                ));
            } else {
                let mut opened = item.clone();
                opened["arguments"] = json!("");
                opened["status"] = json!("in_progress");
                let id = item["id"].clone();
                out.push(self.event(
                    "response.output_item.added",
                    json!({"output_index": index, "item": opened}),
                ));
                out.push(self.event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": id, "output_index": index, "delta": item["arguments"]}),
                ));
                out.push(self.event(
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "arguments": item["arguments"],
                        "name": item["name"]}),
                ));
            }
            out.push(self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": item}),
            ));
        }
        let object = self.object.finished(completion);
        let kind = if object["status"] == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        out.push(self.event(kind, json!({"response": object})));
        out
    }

    /// The events of a stream that broke off.
    pub fn fail(&mut self, message: &str) -> Vec<(&'static str, Value)> {
        let mut object = self.object.in_progress();
        object["status"] = json!("failed");
        object["error"] = json!({"code": "server_error", "message": message});
        vec![
            self.event(
                "error",
                json!({"code": "stream_interrupted", "message": message, "param": null}),
            ),
            self.event("response.failed", json!({"response": object})),
        ]
    }
}
