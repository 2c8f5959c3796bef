//! The OpenAI chat-completions wire format.
//!
//! Shared by the gateway's own API (`server`), the `openai` upstream client
//! and the simulator, and converted to and from the domain types here and
//! nowhere else. Requests are parsed leniently, as OpenAI does: unknown
//! fields are ignored, `content` may be a string, null or a list of parts.

use crate::domain::{self as d, Completion, Failure, Metadata, Usage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Bound on generated tokens (`max_completion_tokens` is accepted too).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "max_completion_tokens"
    )]
    pub max_tokens: Option<u32>,
    /// Tools offered to the model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<WireTool>,
    /// Tool choice, passed through untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// Request metadata (OpenAI's string map).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, Value>>,
    /// End-user identifier, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Every other field, as sent (`top_p`, `seed`, `response_format`, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// `stream_options` of a streamed request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk carrying the usage of the whole answer.
    #[serde(default)]
    pub include_usage: bool,
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

/// A tool on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireTool {
    /// Always `function`.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// The function.
    pub function: WireFunction,
}

/// A function definition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireFunction {
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// JSON schema of the arguments.
    #[serde(default)]
    pub parameters: Value,
}

fn function_type() -> String {
    "function".into()
}

/// Response body of a non-streamed completion.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChatResponse {
    /// Completion id.
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// One choice.
    pub choices: Vec<Choice>,
    /// Token usage.
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

/// One choice of a completion.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Choice {
    /// Always 0 here.
    #[serde(default)]
    pub index: u32,
    /// The answer.
    pub message: WireMessage,
    /// `stop`, `length` or `tool_calls`.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// Usage on the wire.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct WireUsage {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Completion tokens.
    pub completion_tokens: u32,
    /// Their sum.
    #[serde(default)]
    pub total_tokens: u32,
}

/// One server-sent event of a streamed completion.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChatChunk {
    /// Completion id (the same for every chunk).
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// Model.
    pub model: String,
    /// One choice delta.
    pub choices: Vec<ChunkChoice>,
    /// Usage, on the final chunk only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<WireUsage>,
}

/// The delta of one choice.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Always 0 here.
    #[serde(default)]
    pub index: u32,
    /// What this chunk adds.
    pub delta: Delta,
    /// Set on the last chunk.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// Incremental message content.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Delta {
    /// Role, on the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Text added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tool calls (sent whole, in one chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
}

/// OpenAI-style error body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Error details.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Human-readable message.
    pub message: String,
    /// Error class, e.g. `invalid_request_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Machine-readable code.
    #[serde(default)]
    pub code: Option<String>,
}

/// Why a wire message could not become a domain message.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Unknown role.
    #[error("messages[{index}].role: unknown role `{role}`")]
    Role {
        /// Message index.
        index: usize,
        /// The role given.
        role: String,
    },
    /// Content of an unsupported shape.
    #[error("messages[{index}].content: {reason}")]
    Content {
        /// Message index.
        index: usize,
        /// Why.
        reason: String,
    },
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

fn content_from_wire(index: usize, content: &Value) -> Result<String, WireError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (
                    part.get("type").and_then(Value::as_str),
                    part.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (kind, _) => {
                        return Err(WireError::Content {
                            index,
                            reason: format!(
                                "unsupported content part type {}",
                                kind.unwrap_or("(missing)")
                            ),
                        });
                    }
                }
            }
            Ok(text)
        }
        _ => Err(WireError::Content {
            index,
            reason: "must be a string, null or a list of text parts".into(),
        }),
    }
}

impl WireMessage {
    /// Converts to a domain message; `index` names it in errors.
    pub fn to_domain(&self, index: usize) -> Result<d::Message, WireError> {
        Ok(d::Message {
            role: role_from_wire(index, &self.role)?,
            content: content_from_wire(index, &self.content)?,
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
        })
    }
}

impl From<&d::Message> for WireMessage {
    fn from(m: &d::Message) -> Self {
        let content = if m.content.is_empty() && !m.tool_calls.is_empty() {
            Value::Null
        } else {
            Value::String(m.content.clone())
        };
        WireMessage {
            role: role_to_wire(m.role).into(),
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
        }
    }
}

/// Metadata values as strings (non-string JSON values are rendered as JSON).
pub fn metadata_from_wire(map: Option<&serde_json::Map<String, Value>>) -> Metadata {
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
    /// The domain request (model left as given).
    pub fn to_domain(&self) -> Result<d::CompletionRequest, WireError> {
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
                .map(|t| d::Tool {
                    name: t.function.name.clone(),
                    description: t.function.description.clone(),
                    parameters: t.function.parameters.to_string(),
                })
                .collect(),
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            metadata: metadata_from_wire(self.metadata.as_ref()),
            tool_choice: self.tool_choice.clone(),
            extra: self.extra.clone(),
        })
    }

    /// The wire request for a domain request.
    pub fn from_domain(req: &d::CompletionRequest, stream: bool) -> Self {
        ChatRequest {
            model: req.model.clone(),
            messages: req.messages.iter().map(Into::into).collect(),
            stream,
            // Without it, OpenAI-compatible servers stream no usage at all.
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
            temperature: req.temperature,
            max_tokens: req.max_tokens,
            tools: req
                .tools
                .iter()
                .map(|t| WireTool {
                    kind: function_type(),
                    function: WireFunction {
                        name: t.name.clone(),
                        description: t.description.clone(),
                        parameters: serde_json::from_str(&t.parameters).unwrap_or(Value::Null),
                    },
                })
                .collect(),
            tool_choice: req.tool_choice.clone(),
            metadata: None,
            user: None,
            // Forwarding the client's other fields is not done yet.
            extra: Default::default(),
        }
    }
}

impl From<Usage> for WireUsage {
    fn from(u: Usage) -> Self {
        WireUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total(),
        }
    }
}

impl ChatResponse {
    /// The response body for a completion.
    pub fn from_completion(id: String, created: u64, c: &Completion) -> Self {
        ChatResponse {
            id,
            object: "chat.completion".into(),
            created,
            model: c.model.clone(),
            choices: vec![Choice {
                index: 0,
                message: (&c.message).into(),
                finish_reason: Some(c.finish_reason.clone()),
            }],
            usage: Some(c.usage.into()),
        }
    }

    /// The completion in this body; a body without a usable choice is an
    /// invalid response.
    pub fn into_completion(self) -> Result<Completion, Failure> {
        let choice = self
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| Failure::InvalidResponse("no choices".into()))?;
        let message = choice
            .message
            .to_domain(0)
            .map_err(|e| Failure::InvalidResponse(e.to_string()))?;
        let usage = self.usage.unwrap_or_default();
        Ok(Completion {
            message,
            model: self.model,
            finish_reason: choice.finish_reason.unwrap_or_else(|| "stop".into()),
            usage: Usage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
            },
            cached: false,
        })
    }
}

impl ErrorBody {
    /// An error body.
    pub fn new(message: impl Into<String>, kind: &str, code: &str) -> Self {
        ErrorBody {
            error: ErrorDetail {
                message: message.into(),
                kind: kind.into(),
                code: Some(code.into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lenient_openai_requests() {
        let body = r#"{"model":"m","messages":[
            {"role":"developer","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"hi "},{"type":"text","text":"there"}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}
        ],"logprobs":true,"max_completion_tokens":9,"metadata":{"tier":"gold"}}"#;
        let req: ChatRequest = serde_json::from_str(body).unwrap();
        let domain = req.to_domain().unwrap();
        assert_eq!(domain.messages[0].role, d::Role::System);
        assert_eq!(domain.messages[1].content, "hi there");
        assert_eq!(domain.messages[2].tool_calls[0].name, "f");
        assert_eq!(domain.max_tokens, Some(9));
        assert_eq!(domain.metadata["tier"], "gold");
    }

    #[test]
    fn names_the_bad_message() {
        let req: ChatRequest = serde_json::from_str(r#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"robot","content":"b"}]}"#).unwrap();
        assert_eq!(
            req.to_domain().unwrap_err().to_string(),
            "messages[1].role: unknown role `robot`"
        );
    }
}

/// Builds the `chat.completion.chunk` payloads of one streamed answer. The
/// first chunk carries the assistant role, as OpenAI's do.
#[derive(Debug)]
pub struct ChunkWriter {
    id: String,
    created: u64,
    model: String,
    role_sent: bool,
}

impl ChunkWriter {
    /// A writer for the answer `id` from `model`.
    pub fn new(id: impl Into<String>, created: u64, model: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            created,
            model: model.into(),
            role_sent: false,
        }
    }

    fn chunk(
        &mut self,
        mut delta: Delta,
        finish_reason: Option<String>,
        usage: Option<WireUsage>,
        choice: bool,
    ) -> ChatChunk {
        if choice && !self.role_sent {
            delta.role = Some("assistant".into());
            self.role_sent = true;
        }
        let choices = if choice {
            vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
            }]
        } else {
            Vec::new()
        };
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        }
    }

    /// A piece of text.
    pub fn content(&mut self, text: String) -> ChatChunk {
        self.chunk(
            Delta {
                content: Some(text),
                ..Default::default()
            },
            None,
            None,
            true,
        )
    }

    /// Whole tool calls, indexed as OpenAI's deltas are.
    pub fn tool_calls(&mut self, calls: &[d::ToolCall]) -> ChatChunk {
        let calls = calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                serde_json::json!({"index": i, "id": c.id, "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments}})
            })
            .collect();
        self.chunk(
            Delta {
                tool_calls: Some(calls),
                ..Default::default()
            },
            None,
            None,
            true,
        )
    }

    /// The last choice chunk, with the finish reason (and usage, if given).
    pub fn finish(&mut self, reason: String, usage: Option<Usage>) -> ChatChunk {
        self.chunk(Delta::default(), Some(reason), usage.map(Into::into), true)
    }

    /// A usage-only chunk with no choices (`stream_options.include_usage`).
    pub fn usage(&mut self, usage: Usage) -> ChatChunk {
        self.chunk(Delta::default(), None, Some(usage.into()), false)
    }
}
