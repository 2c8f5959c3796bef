//! Cache keys: the SHA-256 of a normalised request.
//!
//! Two requests share a key when an upstream would be asked the same thing:
//! the model, the messages as the pipeline sees them (content parts joined,
//! `developer` read as `system`), the tools and every sampling parameter.
//! `stream`, `stream_options`, `user` and `metadata` never reach the answer,
//! so they are left out — a streamed and a non-streamed request share an
//! entry. Parameters the gateway does not forward yet (`top_p`, `stop`,
//! `seed`, ...) are still part of the key (the request carries them in
//! `extra`): a parameter in the key can only cost a hit, a parameter
//! missing from it could serve a wrong answer.

use crate::domain::CompletionRequest;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::fmt;

/// Request fields that may change an answer beyond what the domain request
/// names; read from its `extra` fields.
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
    /// The key of `req` in `namespace` (see [`super::ResponseCache::namespace`]).
    pub fn of(namespace: &str, req: &CompletionRequest) -> CacheKey {
        let params: Map<String, Value> = SAMPLING_PARAMS
            .iter()
            .filter_map(|p| req.extra.get(*p).map(|v| (p.to_string(), v.clone())))
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

    /// `req` with the request body fields `text` as its extra fields.
    fn with(mut req: CompletionRequest, text: &str) -> CompletionRequest {
        req.extra = serde_json::from_str(text).unwrap();
        req
    }

    #[test]
    fn ignores_stream_user_and_metadata_but_not_sampling_params() {
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
        assert_ne!(base, CacheKey::of("other", &with(r.clone(), "{}")));
        assert_ne!(base, CacheKey::of("ns", &with(req("hi!", Some(0.0)), "{}")));
        assert_ne!(base, CacheKey::of("ns", &with(req("hi", Some(0.5)), "{}")));
        let mut limited = r.clone();
        limited.max_tokens = Some(5);
        assert_ne!(base, CacheKey::of("ns", &with(limited, "{}")));
    }
}
