//! OpenAI's Responses API wire format (`/v1/responses`), and its
//! translation to and from chat completions.
//!
//! A Responses request becomes a chat-completions request body
//! ([`ResponsesRequest::chat_body`]) that the gateway then serves like any
//! other chat request; the answer comes back as output items
//! ([`output_items`]) in a response object ([`ResponseObject`]). Input and
//! output items share their shapes (messages, `function_call`,
//! `function_call_output`), so one translation ([`chat_messages`]) turns
//! both into chat messages — which is how a stored conversation is carried
//! on by `previous_response_id`. What is translated, and what is refused,
//! is listed in `docs/openai-api.md`.

use serde::Deserialize;
use serde_json::{Map, Value, json};

mod output;
#[cfg(test)]
mod tests;

pub use output::{ResponseObject, output_items, usage};

/// Body of `POST /v1/responses`.
#[derive(Clone, Debug, Deserialize)]
pub struct ResponsesRequest {
    /// The model, or `agent:<name>`.
    #[serde(default)]
    pub model: String,
    /// A string (one user message) or a list of input items.
    #[serde(default)]
    pub input: Value,
    /// A system message for this response only (not carried on by
    /// `previous_response_id`).
    #[serde(default)]
    pub instructions: Option<String>,
    /// The stored response this one continues.
    #[serde(default)]
    pub previous_response_id: Option<String>,
    /// Whether to keep the response for retrieval and chaining (default
    /// true).
    #[serde(default)]
    pub store: Option<bool>,
    /// Stream the answer as Responses events.
    #[serde(default, deserialize_with = "super::null_as_default")]
    pub stream: bool,
    /// Tools offered (function tools only, when translated).
    #[serde(default, deserialize_with = "super::null_as_default")]
    pub tools: Vec<Value>,
    /// `auto`, `none`, `required` or `{"type": "function", "name": …}`.
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Bound on generated tokens.
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Whether the model may call several tools at once.
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// Request metadata.
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    /// End-user identifier.
    #[serde(default)]
    pub user: Option<String>,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", …}}`.
    #[serde(default)]
    pub text: Option<Value>,
    /// `{"effort": …}` for reasoning models.
    #[serde(default)]
    pub reasoning: Option<Value>,
    /// Every other field (`truncation`, `include`, `service_tier`, …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why a Responses request cannot be served: the message and the field.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct InvalidResponsesRequest {
    /// What is wrong.
    pub message: String,
    /// The field at fault.
    pub param: String,
}

fn invalid(param: impl Into<String>, message: impl Into<String>) -> InvalidResponsesRequest {
    InvalidResponsesRequest {
        message: message.into(),
        param: param.into(),
    }
}

/// Fields of a request that are the gateway's own, or have no chat
/// equivalent and change nothing a chat upstream could do; dropped when
/// translating. Every other unknown field is forwarded as sent.
const NOT_FORWARDED: &[&str] = &[
    "include",
    "truncation",
    "background",
    "prompt_cache_key",
    "safety_identifier",
    "stream_options",
    "conversation",
    "max_tool_calls",
];

impl ResponsesRequest {
    /// The input as items, each with its `type`: a string is one user
    /// message; a message's string content becomes one text part.
    pub fn input_items(&self) -> Result<Vec<Value>, InvalidResponsesRequest> {
        let items = match &self.input {
            Value::String(text) if !text.is_empty() => {
                vec![json!({"type": "message", "role": "user",
                    "content": [{"type": "input_text", "text": text}]})]
            }
            Value::Array(items) if !items.is_empty() => items.clone(),
            _ => {
                return Err(invalid(
                    "input",
                    "`input` must be a non-empty string or a non-empty list of input items",
                ));
            }
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| normalise(i, item))
            .collect()
    }

    /// The chat-completions body for this request: `instructions` as the
    /// system message, then `history` (chat messages of the responses it
    /// continues), then the input items translated; the sampling fields,
    /// tools and formats under their chat names.
    pub fn chat_body(
        &self,
        history: Vec<Value>,
        items: &[Value],
    ) -> Result<Value, InvalidResponsesRequest> {
        let mut messages = Vec::new();
        if let Some(instructions) = self.instructions.as_ref().filter(|i| !i.is_empty()) {
            messages.push(json!({"role": "system", "content": instructions}));
        }
        messages.extend(history);
        messages.extend(chat_messages(items, "input")?);
        let mut body: Map<String, Value> = self
            .extra
            .iter()
            .filter(|(k, _)| !NOT_FORWARDED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        body.insert("model".into(), json!(self.model));
        body.insert("messages".into(), Value::Array(messages));
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(v) = value.filter(|v| !v.is_null()) {
                body.insert(key.into(), v);
            }
        };
        put("temperature", self.temperature.map(|t| json!(t)));
        put("top_p", self.top_p.map(|t| json!(t)));
        put(
            "max_completion_tokens",
            self.max_output_tokens.map(|t| json!(t)),
        );
        put(
            "parallel_tool_calls",
            self.parallel_tool_calls.map(|p| json!(p)),
        );
        put("metadata", self.metadata.clone().map(Value::Object));
        put("user", self.user.clone().map(Value::String));
        put(
            "reasoning_effort",
            self.reasoning
                .as_ref()
                .and_then(|r| r.get("effort"))
                .cloned(),
        );
        put("response_format", self.response_format()?);
        if !self.tools.is_empty() {
            put("tools", Some(Value::Array(self.chat_tools()?)));
        }
        put(
            "tool_choice",
            self.tool_choice.as_ref().map(chat_tool_choice),
        );
        Ok(Value::Object(body))
    }

    /// `text.format` as a chat `response_format` (`text` is the default and
    /// sent as nothing).
    fn response_format(&self) -> Result<Option<Value>, InvalidResponsesRequest> {
        let Some(format) = self.text.as_ref().and_then(|t| t.get("format")) else {
            return Ok(None);
        };
        match format["type"].as_str() {
            Some("text") | None => Ok(None),
            Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
            Some("json_schema") => {
                let mut schema = format.as_object().cloned().unwrap_or_default();
                schema.remove("type");
                Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
            }
            Some(other) => Err(invalid(
                "text.format.type",
                format!("`text.format.type` `{other}` is not supported"),
            )),
        }
    }

    /// Function tools in their chat shape; other tool types (web search,
    /// file search, computer use, …) have none and are refused.
    fn chat_tools(&self) -> Result<Vec<Value>, InvalidResponsesRequest> {
        self.tools
            .iter()
            .enumerate()
            .map(|(i, tool)| {
                if tool["type"].as_str() != Some("function") {
                    return Err(invalid(
                        format!("tools[{i}].type"),
                        format!(
                            "tool type `{}` is not supported through a chat-completions upstream; only `function` tools are",
                            tool["type"].as_str().unwrap_or("?")
                        ),
                    ));
                }
                let mut function = tool.as_object().cloned().unwrap_or_default();
                function.remove("type");
                if function.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
                    return Err(invalid(format!("tools[{i}].name"), "a function tool needs a `name`"));
                }
                // A null description or strictness is "not given" on the chat side.
                function.retain(|_, v| !v.is_null());
                Ok(json!({"type": "function", "function": function}))
            })
            .collect()
    }
}

/// `tool_choice` in its chat shape.
fn chat_tool_choice(choice: &Value) -> Value {
    match choice {
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            json!({"type": "function", "function": {"name": o.get("name").cloned().unwrap_or(Value::Null)}})
        }
        other => other.clone(),
    }
}

/// One input item with its `type` (an item with a `role` and no type is a
/// message) and a message's content as parts.
fn normalise(index: usize, item: Value) -> Result<Value, InvalidResponsesRequest> {
    let Value::Object(mut item) = item else {
        return Err(invalid(
            format!("input[{index}]"),
            "an input item must be an object",
        ));
    };
    let kind = match item.get("type").and_then(Value::as_str) {
        Some(kind) => kind.to_string(),
        None if item.contains_key("role") => "message".to_string(),
        None => {
            return Err(invalid(
                format!("input[{index}].type"),
                "an input item needs a `type`",
            ));
        }
    };
    item.insert("type".into(), json!(kind));
    if kind == "message"
        && let Some(Value::String(text)) = item.get("content")
    {
        let part = if item.get("role").and_then(Value::as_str) == Some("assistant") {
            "output_text"
        } else {
            "input_text"
        };
        let parts = json!([{"type": part, "text": text}]);
        item.insert("content".into(), parts);
    }
    Ok(Value::Object(item))
}

/// The text of content parts (`input_text`, `output_text`, `text`), joined;
/// a refusal's text too.
fn parts_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| {
                p.get("text")
                    .or_else(|| p.get("refusal"))
                    .and_then(Value::as_str)
            })
            .collect(),
        _ => String::new(),
    }
}

/// A user-side content part in its chat shape.
fn chat_part(field: &str, part: &Value) -> Result<Value, InvalidResponsesRequest> {
    match part["type"].as_str() {
        Some("input_text" | "output_text" | "text") => {
            Ok(json!({"type": "text", "text": part["text"].as_str().unwrap_or_default()}))
        }
        Some("input_image") => {
            let url = match (part.get("image_url"), part.get("file_id")) {
                (Some(Value::String(url)), _) => url.clone(),
                _ => {
                    return Err(invalid(
                        field,
                        "an `input_image` needs an `image_url` (file ids are not supported)",
                    ));
                }
            };
            let mut image = json!({"url": url});
            if let Some(detail) = part.get("detail").filter(|d| !d.is_null()) {
                image["detail"] = detail.clone();
            }
            Ok(json!({"type": "image_url", "image_url": image}))
        }
        Some("input_file") => {
            let mut file = part.as_object().cloned().unwrap_or_default();
            file.remove("type");
            Ok(json!({"type": "file", "file": file}))
        }
        Some("input_audio") => Ok(json!({"type": "input_audio",
            "input_audio": part.get("input_audio").cloned().unwrap_or_default()})),
        other => Err(invalid(
            field,
            format!(
                "content part type `{}` is not supported",
                other.unwrap_or("?")
            ),
        )),
    }
}

/// Items (input or output: their shapes are shared) as chat messages:
/// messages by role, `function_call`s as the assistant's tool calls (calls
/// in a row, or after the assistant's text, join one message), and
/// `function_call_output`s as tool messages. Reasoning items carry nothing
/// a chat upstream reads and are skipped; other types are refused, naming
/// `field[i]`.
pub fn chat_messages(items: &[Value], field: &str) -> Result<Vec<Value>, InvalidResponsesRequest> {
    let mut out: Vec<Value> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{field}[{i}]");
        match item["type"].as_str().unwrap_or_default() {
            "message" => {
                let role = item["role"].as_str().unwrap_or_default();
                let content = &item["content"];
                let message = match role {
                    "assistant" => json!({"role": "assistant", "content": parts_text(content)}),
                    "user" | "system" | "developer" => {
                        let parts = match content {
                            Value::Array(parts) => parts
                                .iter()
                                .enumerate()
                                .map(|(j, p)| chat_part(&format!("{at}.content[{j}]"), p))
                                .collect::<Result<Vec<_>, _>>()?,
                            _ => vec![json!({"type": "text", "text": parts_text(content)})],
                        };
                        // Text only: a plain string, as most upstreams expect.
                        let text_only = parts.iter().all(|p| p["type"] == "text");
                        if text_only {
                            let text: String =
                                parts.iter().filter_map(|p| p["text"].as_str()).collect();
                            json!({"role": role, "content": text})
                        } else {
                            json!({"role": role, "content": parts})
                        }
                    }
                    other => {
                        return Err(invalid(
                            format!("{at}.role"),
                            format!("unknown role `{other}`"),
                        ));
                    }
                };
                out.push(message);
            }
            "function_call" => {
                let call = json!({
                    "id": item["call_id"].as_str().unwrap_or_default(),
                    "type": "function",
                    "function": {
                        "name": item["name"].as_str().unwrap_or_default(),
                        "arguments": item["arguments"].as_str().unwrap_or("{}"),
                    }
                });
                match out.last_mut() {
                    Some(last) if last["role"] == "assistant" => {
                        let calls = last
                            .as_object_mut()
                            .and_then(|m| {
                                m.entry("tool_calls")
                                    .or_insert_with(|| json!([]))
                                    .as_array_mut()
                            })
                            .ok_or_else(|| invalid(&at, "malformed assistant message"))?;
                        calls.push(call);
                    }
                    _ => out
                        .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            "function_call_output" => {
                let Some(call_id) = item["call_id"].as_str() else {
                    return Err(invalid(
                        format!("{at}.call_id"),
                        "a `function_call_output` needs its `call_id`",
                    ));
                };
                out.push(json!({"role": "tool", "tool_call_id": call_id,
                    "content": parts_text(&item["output"])}));
            }
            "reasoning" => {}
            other => {
                return Err(invalid(
                    format!("{at}.type"),
                    format!("input item type `{other}` is not supported"),
                ));
            }
        }
    }
    Ok(out)
}
