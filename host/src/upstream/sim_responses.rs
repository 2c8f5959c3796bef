//! The simulator speaking the Responses API itself (an upstream with
//! `serves = ["responses"]`): a request is read as the gateway would
//! translate it, decided and answered like a completion (scripts and faults
//! apply), and answered as a response object or its events, with the
//! simulator's own ids (`resp_sim…`). It keeps no responses: a
//! `previous_response_id` is accepted and ignored.

use super::{ResponsesReply, ResponsesWriter, completion_events};
use crate::domain::{Completion, CompletionRequest};
use crate::openai::ChatRequest;
use crate::openai::responses::{ResponseObject, ResponsesRequest};
use futures::StreamExt;
use serde_json::Value;

/// The request in `body`, and the completion request its answer is
/// decided on; `Err` says why the body is not a request.
pub(crate) fn probe(body: &Value) -> Result<(ResponsesRequest, CompletionRequest), String> {
    let req: ResponsesRequest = serde_json::from_value(body.clone()).map_err(|e| e.to_string())?;
    let items = req.input_items().map_err(|e| e.to_string())?;
    let chat = req
        .chat_body(Vec::new(), &items)
        .map_err(|e| e.to_string())?;
    let chat: ChatRequest = serde_json::from_value(chat).map_err(|e| e.to_string())?;
    let completion = chat.to_domain().map_err(|e| e.to_string())?;
    Ok((req, completion))
}

/// The answer to `req`, the simulator's `n`th request: the object, or its
/// events when `stream`.
pub(crate) fn reply(
    n: u64,
    req: &ResponsesRequest,
    answer: Completion,
    stream: bool,
) -> ResponsesReply {
    let object = ResponseObject::new(format!("resp_sim{n}"), crate::clock::unix_s(), req);
    if !stream {
        return ResponsesReply::Whole(object.finished(&answer));
    }
    let mut writer = ResponsesWriter::new(object);
    let mut events: Vec<Value> = writer.start().into_iter().map(|(_, e)| e).collect();
    for event in completion_events(answer) {
        events.extend(writer.write(&event).into_iter().map(|(_, e)| e));
    }
    ResponsesReply::Events(futures::stream::iter(events.into_iter().map(Ok)).boxed())
}
