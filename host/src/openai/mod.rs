//! The OpenAI chat-completions wire format.
//!
//! Shared by the gateway's own API (`server`), the `openai` upstream client
//! and the simulator, and converted to and from the domain types here and
//! nowhere else. Requests are parsed leniently, as OpenAI does (`content`
//! may be a string, null or a list of parts), and nothing is dropped: each
//! wire type names the fields the gateway reads and keeps every other one
//! in a flattened map, which is written back out unchanged — the client's
//! request to the upstream ([`request`]), the upstream's answer to the
//! client ([`response`], [`chunk`]). What the gateway reads, may change and
//! never touches is listed in `docs/openai-api.md`.

pub mod chunk;
pub mod embedding;
pub mod request;
pub mod response;
pub mod responses;

pub use chunk::{Assembled, Assembly, ChatChunk, ChunkChoice, Delta};
pub use request::{
    ChatRequest, StreamOptions, WireFunctionCall, WireMessage, WireToolCall, metadata_from_wire,
    render_parts, role_to_wire,
};
pub use response::{ChatResponse, Choice, WireUsage};

use serde::{Deserialize, Deserializer, Serialize};

/// Reads an explicit `null` as the field's default, as OpenAI reads it as
/// "not given": clients send `"stream": null` or `"tools": null`, a pydantic
/// dump of an answer sent back in the history carries `"tool_calls": null`,
/// and so do some OpenAI-compatible servers' answers. Such a field is then
/// forwarded as absent.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
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
    /// The request field at fault, when one is (OpenAI always sends the key).
    #[serde(default)]
    pub param: Option<String>,
    /// Machine-readable code.
    #[serde(default)]
    pub code: Option<String>,
}

impl ErrorBody {
    /// An error body.
    pub fn new(message: impl Into<String>, kind: &str, code: &str) -> Self {
        ErrorBody {
            error: ErrorDetail {
                message: message.into(),
                kind: kind.into(),
                param: None,
                code: Some(code.into()),
            },
        }
    }

    /// The same, naming the request field at fault.
    pub fn with_param(mut self, param: &str) -> Self {
        self.error.param = Some(param.into());
        self
    }
}

/// Why a wire request could not become a domain request.
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
    /// A tool the gateway cannot name.
    #[error("tools[{index}]: {reason}")]
    Tool {
        /// Tool index.
        index: usize,
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
mod tests;
