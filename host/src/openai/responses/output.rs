//! The answer side of the Responses API: output items, usage and the
//! response object, made from a chat answer.

use super::ResponsesRequest;
use crate::domain::{Completion, Usage};
use serde_json::{Map, Value, json};

/// The output items of an answer, their ids derived from the response's
/// (`msg_<suffix>`, `fc_<suffix>_<i>`), so a stream announces the same ids
/// the stored response has: the assistant's text as one message (when it
/// has text or no tool calls), then one `function_call` per tool call.
pub fn output_items(suffix: &str, completion: &Completion) -> Vec<Value> {
    let message = &completion.message;
    let mut items = Vec::new();
    if !message.content.is_empty() || message.tool_calls.is_empty() {
        items.push(json!({
            "type": "message",
            "id": format!("msg_{suffix}"),
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": message.content, "annotations": [], "logprobs": []}],
        }));
    }
    for (i, call) in message.tool_calls.iter().enumerate() {
        items.push(json!({
            "type": "function_call",
            "id": format!("fc_{suffix}_{i}"),
            "call_id": call.id,
            "name": call.name,
            "arguments": call.arguments,
            "status": "completed",
        }));
    }
    items
}

/// Usage in the Responses shape.
pub fn usage(u: Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_prompt_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total(),
    })
}

/// A response object's parts that do not depend on the answer: the id,
/// when it was made, and what the request asked for, echoed.
#[derive(Clone, Debug)]
pub struct ResponseObject {
    /// `resp_<suffix>`.
    pub id: String,
    /// Unix seconds.
    pub created_at: u64,
    /// The request's fields echoed in the object.
    pub echo: Map<String, Value>,
}

impl ResponseObject {
    /// The object for `req`, as `id`, made at `created_at`.
    pub fn new(id: String, created_at: u64, req: &ResponsesRequest) -> ResponseObject {
        let mut echo = Map::new();
        echo.insert("model".into(), json!(req.model));
        echo.insert("instructions".into(), json!(req.instructions));
        echo.insert(
            "previous_response_id".into(),
            json!(req.previous_response_id),
        );
        echo.insert("tools".into(), json!(req.tools));
        echo.insert(
            "tool_choice".into(),
            req.tool_choice.clone().unwrap_or(json!("auto")),
        );
        echo.insert(
            "parallel_tool_calls".into(),
            json!(req.parallel_tool_calls.unwrap_or(true)),
        );
        echo.insert("temperature".into(), json!(req.temperature.unwrap_or(1.0)));
        echo.insert("top_p".into(), json!(req.top_p.unwrap_or(1.0)));
        echo.insert("max_output_tokens".into(), json!(req.max_output_tokens));
        echo.insert("store".into(), json!(req.store.unwrap_or(true)));
        echo.insert(
            "metadata".into(),
            json!(req.metadata.clone().unwrap_or_default()),
        );
        echo.insert("user".into(), json!(req.user));
        echo.insert(
            "reasoning".into(),
            req.reasoning
                .clone()
                .unwrap_or(json!({"effort": null, "summary": null})),
        );
        echo.insert(
            "text".into(),
            req.text
                .clone()
                .unwrap_or(json!({"format": {"type": "text"}})),
        );
        echo.insert(
            "truncation".into(),
            req.extra
                .get("truncation")
                .cloned()
                .unwrap_or(json!("disabled")),
        );
        ResponseObject {
            id,
            created_at,
            echo,
        }
    }

    /// The suffix the output items' ids derive from.
    pub fn suffix(&self) -> &str {
        self.id.strip_prefix("resp_").unwrap_or(&self.id)
    }

    /// The object while the answer is being made (a stream's first events).
    pub fn in_progress(&self) -> Value {
        self.render("in_progress", Vec::new(), Value::Null, Value::Null)
    }

    /// The object of a finished answer: `completed`, or `incomplete` when
    /// the token bound (or a content filter) cut it.
    pub fn finished(&self, completion: &Completion) -> Value {
        let (status, details) = match completion.finish_reason.as_str() {
            "length" => ("incomplete", json!({"reason": "max_output_tokens"})),
            "content_filter" => ("incomplete", json!({"reason": "content_filter"})),
            _ => ("completed", Value::Null),
        };
        let mut object = self.render(
            status,
            output_items(self.suffix(), completion),
            usage(completion.usage),
            details,
        );
        // The model that answered, as chat reports it.
        if !completion.model.is_empty() {
            object["model"] = json!(completion.model);
        }
        object
    }

    fn render(&self, status: &str, output: Vec<Value>, usage: Value, incomplete: Value) -> Value {
        let mut object = Map::new();
        object.insert("id".into(), json!(self.id));
        object.insert("object".into(), json!("response"));
        object.insert("created_at".into(), json!(self.created_at));
        object.insert("status".into(), json!(status));
        object.insert("error".into(), Value::Null);
        object.insert("incomplete_details".into(), incomplete);
        object.extend(self.echo.clone());
        object.insert("output".into(), Value::Array(output));
        object.insert("usage".into(), usage);
        Value::Object(object)
    }
}
