//! What the OpenAI wire carries beyond the domain view, kept so that a
//! request is forwarded and an answer returned as they came: a message's
//! content parts and other fields, which field bound the generated tokens,
//! an answer's more choices and other fields, an upstream's error body.
//!
//! These are domain types, not `openai`'s: [`super::Message`],
//! [`super::CompletionRequest`], [`super::Completion`] and
//! [`super::Failure`] hold them, and `openai` (which converts to and from
//! the domain) sits above `domain`, so putting them there would turn the
//! one-way module graph into a cycle. Plugins never see them.

use super::Message;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a wire message carried beyond the text view of [`Message`]: the
/// gateway keeps it to forward the message unchanged.
///
/// `content` stays the text the host and plugins read (the text parts
/// joined, in order); `parts` keeps the list as sent. When the text view is
/// changed (a validator's rewrite, a chunk), the parts are rendered with
/// the new text in place of the old (see `openai::render_parts`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageWire {
    /// The role as written when it is not the canonical name of [`Role`]
    /// (`developer` for a system message, `function` for a tool one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The content parts (`text`, `image_url`, `input_audio`, `file`, ...),
    /// as sent, when content was a list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Value>,
    /// The message's other fields, as sent (`refusal`, `annotations`,
    /// `audio`, ...).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl MessageWire {
    /// Whether there is nothing beyond the text view.
    pub fn is_empty(&self) -> bool {
        self.role.is_none() && self.parts.is_empty() && self.extra.is_empty()
    }
}

/// Which request field carried the bound on generated tokens, so that it
/// is forwarded under the name the client used (reasoning models refuse
/// `max_tokens`; older servers know only `max_tokens`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenBound {
    /// `max_tokens` (also what a plugin's request is sent with).
    #[default]
    MaxTokens,
    /// `max_completion_tokens`.
    MaxCompletionTokens,
}

/// The parts of an upstream's answer the host does not read, kept so the
/// client gets them as the upstream sent them. Plugins never see them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Details {
    /// Response fields other than `id`, `object`, `created`, `model`,
    /// `choices` and `usage` (`system_fingerprint`, `service_tier`, ...).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub response: Map<String, Value>,
    /// The first choice's fields other than `index`, `message` and
    /// `finish_reason` (`logprobs`, ...).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub choice: Map<String, Value>,
    /// The choices after the first, when the client asked for several (`n`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<Choice>,
    /// Usage fields other than the three counts (`prompt_tokens_details`,
    /// `completion_tokens_details`, ...).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub usage: Map<String, Value>,
}

/// Whether an answer carried nothing beyond the domain view (for serde).
pub(super) fn no_details(details: &Details) -> bool {
    details.is_empty()
}

impl Details {
    /// Whether the answer had nothing beyond the view.
    pub fn is_empty(&self) -> bool {
        self.response.is_empty()
            && self.choice.is_empty()
            && self.choices.is_empty()
            && self.usage.is_empty()
    }
}

/// One more choice of an answer (`n` > 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Its message.
    pub message: Message,
    /// Its finish reason.
    pub finish_reason: String,
    /// Its other fields (`logprobs`, ...), as sent.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// An upstream's refusal of a request, as it answered it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamError {
    /// The upstream that refused.
    pub upstream: String,
    /// Its HTTP status.
    pub status: u16,
    /// Its error body, OpenAI-shaped (`{"error": {"message", "type", ...}}`):
    /// as sent when it was, else wrapped in that shape.
    pub body: Value,
}

impl UpstreamError {
    /// The upstream's error message.
    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "upstream `{}` refused the request with HTTP {}: {}",
            self.upstream,
            self.status,
            self.message()
        )
    }
}
