//! Cache keys: the SHA-256 of a normalised request.
//!
//! Two requests share a key when an upstream would be asked the same thing:
//! the model, the messages as the pipeline sees them (text, and the wire
//! detail it forwards: content parts, role names, other message fields),
//! the tools as sent, the token bound and the field it came in, and every
//! other field the gateway forwards (`extra`: `top_p`, `stop`, `seed`, `n`,
//! `response_format`, `logprobs`, fields it has never heard of, ...). Only
//! what cannot change the answer is left out — `stream` and
//! `stream_options` (a streamed and a non-streamed request share an entry),
//! `user` and `metadata` — because a field in the key can only cost a hit,
//! while a field missing from it could serve a wrong answer.

use crate::domain::{CompletionRequest, EmbeddingRequest};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::fmt;

/// Forwarded request fields that never change an answer, left out of the
/// key.
pub const NOT_IN_KEY: &[&str] = &["stream", "stream_options", "user", "metadata"];

/// SHA-256 of a normalised request.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

/// The forwarded fields of a request that are part of its key: all but
/// those in [`NOT_IN_KEY`] and explicit nulls (read as "not given").
fn keyed_params(extra: &Map<String, Value>) -> Map<String, Value> {
    extra
        .iter()
        .filter(|(k, v)| !NOT_IN_KEY.contains(&k.as_str()) && !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl CacheKey {
    /// The key of `req` in `namespace` (see [`super::ResponseCache::namespace`]).
    pub fn of(namespace: &str, req: &CompletionRequest) -> CacheKey {
        let params = keyed_params(&req.extra);
        // serde_json's map is ordered by key, so this text is canonical.
        // Version 2: every forwarded field is in the key, and answers keep
        // every choice; entries of version 1 were made without them.
        let normalised = json!({
            "v": 2,
            "namespace": namespace,
            "model": req.model,
            "messages": req.messages,
            "tools": req.tools,
            "tool_choice": req.tool_choice,
            "temperature": req.temperature,
            "max_tokens": req.max_tokens,
            "token_bound": req.token_bound,
            "params": params,
        });
        let bytes = serde_json::to_vec(&normalised).unwrap_or_default();
        CacheKey(Sha256::digest(&bytes).into())
    }

    /// The key of an embeddings request in `namespace`: the model, the
    /// inputs, the dimensions and every other forwarded field but those in
    /// [`NOT_IN_KEY`]. Tagged apart from completions, so the two never
    /// share a key.
    pub fn of_embedding(namespace: &str, req: &EmbeddingRequest) -> CacheKey {
        let params = keyed_params(&req.extra);
        let normalised = json!({
            "v": 1,
            "endpoint": "embeddings",
            "namespace": namespace,
            "model": req.model,
            "input": req.input,
            "dimensions": req.dimensions,
            "params": params,
        });
        let bytes = serde_json::to_vec(&normalised).unwrap_or_default();
        CacheKey(Sha256::digest(&bytes).into())
    }

    /// Lower-case hex.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", &self.hex()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Message;

    fn req(content: &str, temperature: Option<f32>) -> CompletionRequest {
        CompletionRequest {
            model: "m".into(),
            messages: vec![Message::user(content)],
            temperature,
            ..Default::default()
        }
    }

    /// `req` with the request body fields `text` as its extra fields.
    fn with(mut req: CompletionRequest, text: &str) -> CompletionRequest {
        req.extra = serde_json::from_str(text).unwrap();
        req
    }

    #[test]
    fn ignores_stream_user_and_metadata_but_not_any_other_field() {
        let r = req("hi", Some(0.0));
        let base = CacheKey::of(
            "ns",
            &with(
                r.clone(),
                r#"{"stream":true,"user":"u1","metadata":{"a":"b"}}"#,
            ),
        );
        assert_eq!(base, CacheKey::of("ns", &with(r.clone(), "{}")));
        assert_ne!(
            base,
            CacheKey::of("ns", &with(r.clone(), r#"{"top_p":0.5}"#))
        );
        assert_ne!(
            base,
            CacheKey::of("ns", &with(r.clone(), r#"{"stop":["x"]}"#))
        );
        assert_ne!(
            base,
            CacheKey::of("ns", &with(r.clone(), r#"{"a_field_from_next_year":1}"#))
        );
        let mut pictured = r.clone();
        pictured.messages[0].wire.parts = vec![
            json!({"type": "text", "text": "hi"}),
            json!({"type": "image_url", "image_url": {"url": "u"}}),
        ];
        assert_ne!(base, CacheKey::of("ns", &with(pictured, "{}")));
        let mut bound = r.clone();
        bound.max_tokens = Some(5);
        let mut renamed = bound.clone();
        renamed.token_bound = crate::domain::TokenBound::MaxCompletionTokens;
        assert_ne!(
            CacheKey::of("ns", &with(bound, "{}")),
            CacheKey::of("ns", &with(renamed, "{}"))
        );
        assert_ne!(base, CacheKey::of("other", &with(r.clone(), "{}")));
        assert_ne!(base, CacheKey::of("ns", &with(req("hi!", Some(0.0)), "{}")));
        assert_ne!(base, CacheKey::of("ns", &with(req("hi", Some(0.5)), "{}")));
        let mut limited = r.clone();
        limited.max_tokens = Some(5);
        assert_ne!(base, CacheKey::of("ns", &with(limited, "{}")));
    }
}
