//! Embeddings as the host sees them, and which endpoints an upstream
//! serves.

use super::Usage;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An API an upstream serves (`upstreams.<name>.serves`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `/v1/chat/completions` (and the Responses API, translated to it).
    Chat,
    /// `/v1/embeddings`.
    Embeddings,
    /// `/v1/responses`, spoken natively: a Responses request is passed
    /// through instead of being translated to a chat completion.
    Responses,
}

impl Endpoint {
    /// The name in config and in `/v1/models`.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
        }
    }
}

/// One input to embed: text, or tokens as a client's tokenizer made them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// A text.
    Text(String),
    /// Token ids.
    Tokens(Vec<u32>),
}

impl EmbeddingInput {
    /// Its length in characters (a text) or tokens, for usage estimates.
    pub fn size(&self) -> usize {
        match self {
            EmbeddingInput::Text(t) => t.chars().count(),
            EmbeddingInput::Tokens(t) => t.len(),
        }
    }

    /// Estimated tokens (4 characters a token; token ids count as given).
    pub fn tokens(&self) -> u32 {
        match self {
            EmbeddingInput::Text(t) => u32::try_from(t.chars().count().div_ceil(4))
                .unwrap_or(u32::MAX)
                .max(1),
            EmbeddingInput::Tokens(t) => u32::try_from(t.len()).unwrap_or(u32::MAX),
        }
    }
}

/// An embeddings request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    /// The model as the client named it.
    pub model: String,
    /// The inputs, in order (a single input is a batch of one).
    pub input: Vec<EmbeddingInput>,
    /// Dimensions asked for (`dimensions`), when the model allows it.
    pub dimensions: Option<u32>,
    /// Every other field the client sent (`user`, provider extensions),
    /// forwarded as sent. `encoding_format` is not among them: the host
    /// always asks upstreams for floats and encodes for its client.
    pub extra: Map<String, Value>,
}

/// An embeddings answer: one vector per input, in input order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Embeddings {
    /// The model that answered.
    pub model: String,
    /// The vectors.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens read (`prompt_tokens`; embeddings produce none).
    pub usage: Usage,
}
