//! `POST /v1/chat/completions` requests: what the gateway reads, named;
//! everything else carried in flattened maps and forwarded unchanged.
//!
//! The domain view ([`d::CompletionRequest`], [`d::Message`]) is what the
//! host and plugins read; the wire detail it does not model (content parts,
//! a `developer` role, unknown fields, tools as sent, which field carried
//! the token bound) rides along in it, so [`ChatRequest::from_domain`]
//! writes the client's request back out as it came, with only what the
//! gateway changed (the model, validators' rewrites) changed.

use super::WireError;
use crate::domain::{self as d, Metadata, TokenBound};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// `POST /v1/chat/completions` request body.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Model name, or `agent:<name>` at the gateway.
    pub model: String,
    /// The conversation.
    pub messages: Vec<WireMessage>,
    /// Stream the answer as server-sent events.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Streaming options; `include_usage` asks for a final usage chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Sampling temperature (read by the cache policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Bound on generated tokens (the older name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Bound on generated tokens (the name reasoning models require).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Tools offered to the model, as sent (read: names, for routers and
    /// agents).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Value>,
    /// Tool choice, passed through untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// Request metadata (read as routing hints; forwarded too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// End-user identifier (read for sticky A/B; forwarded too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Every other field, as sent (`top_p`, `seed`, `response_format`, `n`,
    /// `logprobs`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `stream_options` of a streamed request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk carrying the usage of the whole answer.
    #[serde(default)]
    pub include_usage: bool,
    /// Other options, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A message on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireMessage {
    /// `system`, `developer` (treated as system), `user`, `assistant` or `tool`.
    pub role: String,
    /// Text, null, or a list of content parts.
    #[serde(default)]
    pub content: Value,
    /// Optional author name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool calls of an assistant message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<WireToolCall>,
    /// For tool messages: the call answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Every other field, as sent (`refusal`, `annotations`, `audio`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A tool call on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireToolCall {
    /// Call id.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// Function name and JSON arguments.
    pub function: WireFunctionCall,
}

/// The function part of a tool call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireFunctionCall {
    /// Function name.
    pub name: String,
    /// Arguments as JSON text.
    #[serde(default)]
    pub arguments: String,
}

pub(super) fn function_type() -> String {
    "function".into()
}

fn role_from_wire(index: usize, role: &str) -> Result<d::Role, WireError> {
    Ok(match role {
        "system" | "developer" => d::Role::System,
        "user" => d::Role::User,
        "assistant" => d::Role::Assistant,
        "tool" | "function" => d::Role::Tool,
        other => {
            return Err(WireError::Role {
                index,
                role: other.to_string(),
            });
        }
    })
}

/// The wire name of a role.
pub fn role_to_wire(role: d::Role) -> &'static str {
    match role {
        d::Role::System => "system",
        d::Role::User => "user",
        d::Role::Assistant => "assistant",
        d::Role::Tool => "tool",
    }
}

fn text_of(part: &Value) -> Option<&str> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => part.get("text").and_then(Value::as_str),
        _ => None,
    }
}

/// The text view of content parts: the text parts, joined in order.
fn parts_text(parts: &[Value]) -> String {
    parts.iter().filter_map(text_of).collect()
}

/// Content as sent: its text view, and its parts when it was a list. Any
/// part type passes (`image_url`, `input_audio`, `file`, ...): the upstream
/// judges them; only text parts must carry their text.
fn content_from_wire(index: usize, content: &Value) -> Result<(String, Vec<Value>), WireError> {
    let bad = |reason: String| WireError::Content { index, reason };
    match content {
        Value::Null => Ok((String::new(), Vec::new())),
        Value::String(s) => Ok((s.clone(), Vec::new())),
        Value::Array(parts) => {
            for (i, part) in parts.iter().enumerate() {
                match part.get("type").and_then(Value::as_str) {
                    None => return Err(bad(format!("part {i} has no `type`"))),
                    Some("text") if text_of(part).is_none() => {
                        return Err(bad(format!("text part {i} has no string `text`")));
                    }
                    Some(_) => {}
                }
            }
            Ok((parts_text(parts), parts.clone()))
        }
        _ => Err(bad(
            "must be a string, null or a list of content parts".into()
        )),
    }
}

/// Content parts with the text view `content` written in: unchanged when
/// the text parts still say `content`; otherwise the new text takes the
/// first text part's place (keeping its other fields) and the other text
/// parts go, so non-text parts keep their order around what the host
/// approved.
pub fn render_parts(parts: &[Value], content: &str) -> Vec<Value> {
    if parts_text(parts) == content {
        return parts.to_vec();
    }
    let mut out = Vec::with_capacity(parts.len() + 1);
    let mut placed = false;
    for part in parts {
        if text_of(part).is_none() {
            out.push(part.clone());
        } else if !placed {
            let mut first = part.clone();
            first["text"] = Value::String(content.to_string());
            out.push(first);
            placed = true;
        }
    }
    if !placed && !content.is_empty() {
        out.insert(0, json!({"type": "text", "text": content}));
    }
    out
}

impl WireMessage {
    /// Converts to a domain message; `index` names it in errors.
    pub fn to_domain(&self, index: usize) -> Result<d::Message, WireError> {
        let role = role_from_wire(index, &self.role)?;
        let (content, parts) = content_from_wire(index, &self.content)?;
        Ok(d::Message {
            role,
            content,
            name: self.name.clone(),
            tool_calls: self
                .tool_calls
                .iter()
                .map(|c| d::ToolCall {
                    id: c.id.clone(),
                    name: c.function.name.clone(),
                    arguments: c.function.arguments.clone(),
                })
                .collect(),
            tool_call_id: self.tool_call_id.clone(),
            wire: Box::new(d::MessageWire {
                role: (self.role != role_to_wire(role)).then(|| self.role.clone()),
                parts,
                extra: self.extra.clone(),
            }),
        })
    }
}

impl From<&d::Message> for WireMessage {
    fn from(m: &d::Message) -> Self {
        let content = if !m.wire.parts.is_empty() {
            Value::Array(render_parts(&m.wire.parts, &m.content))
        } else if m.content.is_empty()
            && (!m.tool_calls.is_empty()
                || m.wire.extra.get("refusal").is_some_and(|r| !r.is_null()))
        {
            Value::Null
        } else {
            Value::String(m.content.clone())
        };
        WireMessage {
            role: m
                .wire
                .role
                .clone()
                .unwrap_or_else(|| role_to_wire(m.role).into()),
            content,
            name: m.name.clone(),
            tool_calls: m
                .tool_calls
                .iter()
                .map(|c| WireToolCall {
                    id: c.id.clone(),
                    kind: function_type(),
                    function: WireFunctionCall {
                        name: c.name.clone(),
                        arguments: c.arguments.clone(),
                    },
                })
                .collect(),
            tool_call_id: m.tool_call_id.clone(),
            extra: m.wire.extra.clone(),
        }
    }
}

/// The domain view of a tool as sent: a function's name, description and
/// parameters; for another tool type, the name in its own object (or the
/// type). The tool itself is kept whole, to be forwarded.
fn tool_from_wire(index: usize, tool: &Value) -> Result<d::Tool, WireError> {
    let bad = |reason: &str| WireError::Tool {
        index,
        reason: reason.to_string(),
    };
    let kind = tool
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("function");
    let body = tool
        .get(kind)
        .ok_or_else(|| bad("missing its definition"))?;
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing a string `name`"))?;
    Ok(d::Tool {
        name: name.to_string(),
        description: body
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        parameters: body
            .get("parameters")
            .map_or_else(|| "{}".to_string(), Value::to_string),
        wire: Some(tool.clone()),
    })
}

fn tool_to_wire(tool: &d::Tool) -> Value {
    if let Some(wire) = &tool.wire {
        return wire.clone();
    }
    json!({"type": "function", "function": {
        "name": tool.name,
        "description": tool.description,
        "parameters": serde_json::from_str::<Value>(&tool.parameters).unwrap_or(Value::Null),
    }})
}

/// Metadata values as strings (non-string JSON values are rendered as JSON).
pub fn metadata_from_wire(map: Option<&Map<String, Value>>) -> Metadata {
    map.map(|m| {
        m.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect()
    })
    .unwrap_or_default()
}

impl ChatRequest {
    /// Whether the client asked for a final usage chunk.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }

    /// The domain request (model left as given). Fields the gateway reads
    /// and forwards (`user`, `metadata`, other `stream_options`) and a
    /// `max_tokens` sent beside `max_completion_tokens` go into `extra` as
    /// sent, to be written back out by [`ChatRequest::from_domain`].
    pub fn to_domain(&self) -> Result<d::CompletionRequest, WireError> {
        let mut extra = self.extra.clone();
        if let Some(user) = &self.user {
            extra.insert("user".into(), Value::String(user.clone()));
        }
        if let Some(metadata) = &self.metadata {
            extra.insert("metadata".into(), Value::Object(metadata.clone()));
        }
        if let Some(options) = self.stream_options.as_ref().filter(|o| !o.extra.is_empty()) {
            extra.insert(
                "stream_options".into(),
                Value::Object(options.extra.clone()),
            );
        }
        let (max_tokens, token_bound) = match (self.max_completion_tokens, self.max_tokens) {
            (Some(bound), other) => {
                if let Some(other) = other {
                    extra.insert("max_tokens".into(), other.into());
                }
                (Some(bound), TokenBound::MaxCompletionTokens)
            }
            (None, bound) => (bound, TokenBound::MaxTokens),
        };
        Ok(d::CompletionRequest {
            model: self.model.clone(),
            messages: self
                .messages
                .iter()
                .enumerate()
                .map(|(i, m)| m.to_domain(i))
                .collect::<Result<_, _>>()?,
            tools: self
                .tools
                .iter()
                .enumerate()
                .map(|(i, t)| tool_from_wire(i, t))
                .collect::<Result<_, _>>()?,
            temperature: self.temperature,
            max_tokens,
            token_bound,
            metadata: metadata_from_wire(self.metadata.as_ref()),
            tool_choice: self.tool_choice.clone(),
            extra,
        })
    }

    /// The wire request for a domain request: the client's request as it
    /// came, with the domain's view (messages, tools, token bound) written
    /// in. A stream always asks for usage, which the gateway accounts;
    /// whether the client gets it is decided where the stream is rendered.
    pub fn from_domain(req: &d::CompletionRequest, stream: bool) -> Self {
        let mut extra = req.extra.clone();
        let options = extra.remove("stream_options");
        let stream_options = stream.then(|| StreamOptions {
            include_usage: true,
            extra: match options {
                Some(Value::Object(map)) => map,
                _ => Map::new(),
            },
        });
        let (max_tokens, max_completion_tokens) = match req.token_bound {
            TokenBound::MaxTokens => (req.max_tokens, None),
            TokenBound::MaxCompletionTokens => (None, req.max_tokens),
        };
        ChatRequest {
            model: req.model.clone(),
            messages: req.messages.iter().map(Into::into).collect(),
            stream,
            stream_options,
            temperature: req.temperature,
            max_tokens: max_tokens.or_else(|| take_u32(&mut extra, "max_tokens")),
            max_completion_tokens,
            tools: req.tools.iter().map(tool_to_wire).collect(),
            tool_choice: req.tool_choice.clone(),
            // Both travel in `extra`, as sent (see `to_domain`).
            metadata: None,
            user: None,
            extra,
        }
    }
}

/// Removes `key` from `map` when it is a `u32` (the client's own
/// `max_tokens` sent beside `max_completion_tokens`).
fn take_u32(map: &mut Map<String, Value>, key: &str) -> Option<u32> {
    let n = map.get(key)?.as_u64().and_then(|n| u32::try_from(n).ok())?;
    map.remove(key);
    Some(n)
}
