//! The Responses API on the upstream side: what an upstream that speaks it
//! answers ([`ResponsesReply`], passed through to the client as it came),
//! the usage read from it, and [`ResponsesWriter`], which renders an answer's
//! events as Responses events (the gateway's translated streams and the
//! simulator's own).

use super::StreamEvent;
use crate::domain::{Failure, Usage};
use crate::openai::responses::{ResponseObject, output_items};
use futures::stream::BoxStream;
use serde_json::{Value, json};

/// What an upstream that speaks the Responses API answered.
pub enum ResponsesReply {
    /// The response object.
    Whole(Value),
    /// The event payloads (each with its `type`), ending with
    /// `response.completed`, `response.incomplete` or `response.failed`;
    /// an `Err` ends the stream.
    Events(BoxStream<'static, Result<Value, Failure>>),
}

/// Whether an event ends a Responses stream, and the response it carries.
pub fn terminal(event: &Value) -> Option<&Value> {
    match event["type"].as_str() {
        Some("response.completed" | "response.incomplete" | "response.failed") => {
            Some(&event["response"])
        }
        _ => None,
    }
}

/// The usage of a response object (zero when it reports none).
pub fn usage_of(response: &Value) -> Usage {
    let u = &response["usage"];
    let n = |v: &Value| {
        v.as_u64()
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    Usage {
        prompt_tokens: n(&u["input_tokens"]),
        completion_tokens: n(&u["output_tokens"]),
        cached_prompt_tokens: n(&u["input_tokens_details"]["cached_tokens"]),
        reasoning_tokens: n(&u["output_tokens_details"]["reasoning_tokens"]),
    }
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
