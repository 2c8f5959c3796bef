//! The OpenAI embeddings wire format (`/v1/embeddings`): the client's
//! request to the domain view and back to an upstream, an upstream's
//! answer to the domain view, and the answer to the client as floats or
//! base64 (`encoding_format`).

use crate::domain::{EmbeddingInput, EmbeddingRequest, Embeddings, Usage};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Most inputs in one request (OpenAI's bound).
pub const MAX_EMBEDDING_INPUTS: usize = 2048;

/// How the client wants vectors written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EncodingFormat {
    /// JSON arrays of numbers.
    #[default]
    Float,
    /// Base64 of the little-endian `f32` bytes (what the official SDKs ask
    /// for by default, and decode).
    Base64,
}

/// Body of `POST /v1/embeddings`.
#[derive(Clone, Debug, Deserialize)]
pub struct EmbeddingsRequest {
    /// The model.
    #[serde(default)]
    pub model: String,
    /// A string, a list of strings, a list of token ids or a list of lists.
    #[serde(default)]
    pub input: Value,
    /// `float` (default) or `base64`.
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Dimensions of the vectors, for models that allow fewer.
    #[serde(default)]
    pub dimensions: Option<u32>,
    /// Every other field (`user`, extensions), forwarded as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why a request cannot be served: the message and the field at fault.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct InvalidEmbeddingRequest {
    /// What is wrong.
    pub message: String,
    /// The field.
    pub param: &'static str,
}

fn invalid(param: &'static str, message: impl Into<String>) -> InvalidEmbeddingRequest {
    InvalidEmbeddingRequest {
        message: message.into(),
        param,
    }
}

impl EmbeddingsRequest {
    /// The domain view and the encoding the client wants.
    pub fn to_domain(&self) -> Result<(EmbeddingRequest, EncodingFormat), InvalidEmbeddingRequest> {
        if self.model.trim().is_empty() {
            return Err(invalid("model", "`model` must not be empty"));
        }
        let format = match self.encoding_format.as_deref() {
            None | Some("float") => EncodingFormat::Float,
            Some("base64") => EncodingFormat::Base64,
            Some(other) => {
                return Err(invalid(
                    "encoding_format",
                    format!("`encoding_format` must be `float` or `base64`, not `{other}`"),
                ));
            }
        };
        if self.dimensions == Some(0) {
            return Err(invalid("dimensions", "`dimensions` must be at least 1"));
        }
        let input = inputs(&self.input)?;
        Ok((
            EmbeddingRequest {
                model: self.model.clone(),
                input,
                dimensions: self.dimensions,
                extra: self.extra.clone(),
            },
            format,
        ))
    }
}

/// The inputs of a request, each a text or a list of token ids.
fn inputs(value: &Value) -> Result<Vec<EmbeddingInput>, InvalidEmbeddingRequest> {
    let shape = "`input` must be a non-empty string, a list of non-empty strings, \
                 a list of token ids or a list of lists of token ids";
    let text = |v: &Value| match v.as_str() {
        Some(t) if !t.is_empty() => Some(EmbeddingInput::Text(t.to_string())),
        _ => None,
    };
    let tokens = |v: &Value| -> Option<EmbeddingInput> {
        let ids: Option<Vec<u32>> = v
            .as_array()?
            .iter()
            .map(|n| n.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect();
        ids.filter(|ids| !ids.is_empty())
            .map(EmbeddingInput::Tokens)
    };
    let all = match value {
        Value::String(_) => vec![text(value)],
        Value::Array(items) if items.iter().all(Value::is_number) => vec![tokens(value)],
        Value::Array(items) if items.iter().all(Value::is_array) => {
            items.iter().map(tokens).collect()
        }
        Value::Array(items) => items.iter().map(text).collect(),
        _ => vec![None],
    };
    let all: Vec<EmbeddingInput> = all
        .into_iter()
        .collect::<Option<_>>()
        .filter(|a: &Vec<_>| !a.is_empty())
        .ok_or_else(|| invalid("input", shape))?;
    if all.len() > MAX_EMBEDDING_INPUTS {
        return Err(invalid(
            "input",
            format!(
                "`input` holds {} items; at most {MAX_EMBEDDING_INPUTS} are allowed",
                all.len()
            ),
        ));
    }
    Ok(all)
}

/// The body sent to an upstream for `req` as `model`: floats always (the
/// host encodes for its client), the inputs as the client wrote them.
pub fn upstream_body(req: &EmbeddingRequest, model: &str) -> Value {
    let mut body = req.extra.clone();
    body.insert("model".into(), json!(model));
    body.insert("input".into(), json!(req.input));
    body.insert("encoding_format".into(), json!("float"));
    if let Some(d) = req.dimensions {
        body.insert("dimensions".into(), json!(d));
    }
    Value::Object(body)
}

/// An upstream's (or the gateway's) embeddings answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EmbeddingsResponse {
    /// The vectors.
    pub data: Vec<EmbeddingData>,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// Tokens read.
    #[serde(default)]
    pub usage: Option<EmbeddingUsage>,
}

/// One vector of an answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EmbeddingData {
    /// Its input's position.
    #[serde(default)]
    pub index: usize,
    /// The vector (floats: the host always asks for them).
    pub embedding: Vec<f32>,
}

/// Usage of an embeddings answer.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    /// Tokens read.
    #[serde(default)]
    pub prompt_tokens: u32,
    /// The same (nothing is generated).
    #[serde(default)]
    pub total_tokens: u32,
}

impl EmbeddingsResponse {
    /// The domain view of an upstream's answer to `inputs` inputs: vectors
    /// in input order; usage estimated from `estimate` when not reported.
    pub fn into_embeddings(mut self, inputs: usize, estimate: u32) -> Result<Embeddings, String> {
        if self.data.len() != inputs {
            return Err(format!(
                "answered {} vectors for {inputs} inputs",
                self.data.len()
            ));
        }
        self.data.sort_by_key(|d| d.index);
        if self.data.iter().enumerate().any(|(i, d)| d.index != i) {
            return Err("vector indices are not 0..n".into());
        }
        let prompt = self.usage.map_or(estimate, |u| u.prompt_tokens);
        Ok(Embeddings {
            model: self.model,
            vectors: self.data.into_iter().map(|d| d.embedding).collect(),
            usage: Usage::new(prompt, 0),
        })
    }
}

/// The answer to a client, vectors written as `format` says.
pub fn render(embeddings: &Embeddings, format: EncodingFormat) -> Value {
    let data: Vec<Value> = embeddings
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = match format {
                EncodingFormat::Float => json!(v),
                EncodingFormat::Base64 => {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens = embeddings.usage.prompt_tokens;
    json!({
        "object": "list",
        "data": data,
        "model": embeddings.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<(EmbeddingRequest, EncodingFormat), InvalidEmbeddingRequest> {
        serde_json::from_value::<EmbeddingsRequest>(body)
            .unwrap()
            .to_domain()
    }

    #[test]
    fn every_input_shape() {
        let (r, f) = parse(json!({"model": "e", "input": "hi"})).unwrap();
        assert_eq!(r.input, vec![EmbeddingInput::Text("hi".into())]);
        assert_eq!(f, EncodingFormat::Float);
        let (r, _) = parse(json!({"model": "e", "input": ["a", "b"]})).unwrap();
        assert_eq!(r.input.len(), 2);
        let (r, _) = parse(json!({"model": "e", "input": [1, 2, 3]})).unwrap();
        assert_eq!(r.input, vec![EmbeddingInput::Tokens(vec![1, 2, 3])]);
        let (r, f) =
            parse(json!({"model": "e", "input": [[1], [2, 3]], "encoding_format": "base64"}))
                .unwrap();
        assert_eq!(r.input.len(), 2);
        assert_eq!(f, EncodingFormat::Base64);
        for bad in [
            json!(""),
            json!([]),
            json!(["a", 1]),
            json!(null),
            json!([[]]),
            json!({"a": 1}),
        ] {
            let e = parse(json!({"model": "e", "input": bad})).unwrap_err();
            assert_eq!(e.param, "input", "{bad}");
        }
        let e = parse(json!({"model": "e", "input": "a", "encoding_format": "int8"})).unwrap_err();
        assert_eq!(e.param, "encoding_format");
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let e = Embeddings {
            model: "e".into(),
            vectors: vec![vec![1.0, -0.5]],
            usage: Usage::new(3, 0),
        };
        let out = render(&e, EncodingFormat::Base64);
        let text = out["data"][0]["embedding"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap();
        assert_eq!(
            bytes,
            [1.0f32.to_le_bytes(), (-0.5f32).to_le_bytes()].concat()
        );
        assert_eq!(
            render(&e, EncodingFormat::Float)["data"][0]["embedding"],
            json!([1.0, -0.5])
        );
        assert_eq!(out["usage"]["total_tokens"], 3);
    }
}
