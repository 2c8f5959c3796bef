//! Cache keys: the SHA-256 of a normalised request.
//!
//! Two requests share a key when an upstream would be asked the same thing:
//! the model, the messages as the pipeline sees them (content parts joined,
//! `developer` read as `system`), the tools and every sampling parameter.
//! `stream`, `stream_options`, `user` and `metadata` never reach the answer,
//! so they are left out — a streamed and a non-streamed request share an
//! entry. Parameters the gateway does not forward yet (`top_p`, `stop`,
//! `seed`, ...) are still part of the key: a parameter in the key can only
//! cost a hit, a parameter missing from it could serve a wrong answer.

use crate::domain::CompletionRequest;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::fmt;

/// Request fields that may change an answer beyond what the domain request
/// carries; read from the raw body.
pub const SAMPLING_PARAMS: &[&str] = &[
    "top_p",
    "stop",
    "seed",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "response_format",
    "parallel_tool_calls",
    "reasoning_effort",
];

/// SHA-256 of a normalised request.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// The key of `req` in `namespace` (see [`super::ResponseCache::namespace`]);
    /// `raw` is the request body as JSON, for parameters the domain request
    /// does not carry.
    pub fn of(namespace: &str, req: &CompletionRequest, raw: &Map<String, Value>) -> CacheKey {
        let params: Map<String, Value> = SAMPLING_PARAMS
            .iter()
            .filter_map(|p| raw.get(*p).map(|v| (p.to_string(), v.clone())))
            .filter(|(_, v)| !v.is_null())
            .collect();
        // serde_json's map is ordered by key, so this text is canonical.
        let normalised = json!({
            "v": 1,
            "namespace": namespace,
            "model": req.model,
            "messages": req.messages,
            "tools": req.tools,
            "tool_choice": req.tool_choice,
            "temperature": req.temperature,
            "max_tokens": req.max_tokens,
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

    fn raw(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn ignores_stream_user_and_metadata_but_not_sampling_params() {
        let r = req("hi", Some(0.0));
        let base = CacheKey::of(
            "ns",
            &r,
            &raw(r#"{"stream":true,"user":"u1","metadata":{"a":"b"}}"#),
        );
        assert_eq!(base, CacheKey::of("ns", &r, &raw("{}")));
        assert_ne!(base, CacheKey::of("ns", &r, &raw(r#"{"top_p":0.5}"#)));
        assert_ne!(base, CacheKey::of("ns", &r, &raw(r#"{"stop":["x"]}"#)));
        assert_ne!(base, CacheKey::of("other", &r, &raw("{}")));
        assert_ne!(base, CacheKey::of("ns", &req("hi!", Some(0.0)), &raw("{}")));
        assert_ne!(base, CacheKey::of("ns", &req("hi", Some(0.5)), &raw("{}")));
        let mut limited = r.clone();
        limited.max_tokens = Some(5);
        assert_ne!(base, CacheKey::of("ns", &limited, &raw("{}")));
    }
}
