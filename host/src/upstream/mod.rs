//! Upstreams: the model providers the gateway forwards completions to.
//!
//! Every provider sits behind the [`Upstream`] trait and reports failures in
//! the domain vocabulary ([`Failure`]), so retries, fallbacks and breakers
//! never look at HTTP details. The mapping from HTTP to [`Failure`] lives here
//! and is shared by every HTTP-speaking upstream:
//!
//! | upstream said                                   | failure |
//! |-------------------------------------------------|---------|
//! | 429                                             | `RateLimited(retry-after in ms)` |
//! | 400 with code `context_length_exceeded`         | `TokenLimitExceeded` |
//! | 401, 403 (the gateway's credentials), 408, 409  | `UpstreamStatus(status)` |
//! | any other 4xx                                   | `ClientError(status and error body)` |
//! | 5xx, and anything else not 2xx                  | `UpstreamStatus(status)` |
//! | 2xx with a body we cannot parse or use          | `InvalidResponse("upstream `name`: …")` |
//! | nothing before the deadline                     | `Timeout` |
//! | connection refused / reset / closed mid-answer  | `UpstreamStatus(502)` |
//!
//! A transport failure is reported as 502 rather than `Timeout` because it is
//! what a gateway in front of a dead host answers ("bad gateway"): it is fast,
//! says nothing about how long the upstream takes, and lets a breaker count it
//! as an upstream error, whereas `Timeout` is kept for "the deadline passed".
//!
//! A `ClientError` is the request's own fault (a parameter the provider
//! refuses, a bad schema, an unknown file): the host returns the
//! upstream's status and body to the client at once, without retrying,
//! without asking the recovery plugin and without holding it against the
//! upstream. 401 and 403 are kept apart because they are about the key the
//! gateway holds, not the client's request (the recovery plugin alerts
//! the operator); 408 and 409 because they are transient, and retried.

mod events;
pub mod observed;
pub mod openai;
mod responses;
pub mod sim;
mod sim_embed;
mod sim_responses;
pub mod sim_server;
mod sse;
mod transport;

use crate::domain::{
    Completion, CompletionRequest, EmbeddingRequest, Embeddings, Endpoint, Failure, UpstreamError,
    Usage,
};
use futures::future::BoxFuture;
use reqwest::header::HeaderMap;
use std::time::{Duration, SystemTime};

pub use events::{Chunk, ChunkWriter, StreamEvent, completion_events, word_chunks};
pub use observed::ObservedUpstream;
pub use openai::OpenAiUpstream;
pub use responses::{ResponsesReply, ResponsesWriter, terminal, usage_of};
pub use sim::{SimOutcome, SimSettings, SimUpstream, Simulator};

/// What the gateway knows about an upstream, for routing and accounting.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamInfo {
    /// Unique upstream name (used in logs, errors and routing).
    pub name: String,
    /// The model this upstream sends to its provider.
    pub model: String,
    /// USD per 1k prompt tokens.
    pub input_cost_per_1k: f64,
    /// USD per 1k prompt tokens the provider served from its prompt cache
    /// (`upstreams.<name>.cached_input_cost_per_1k`; the input price when
    /// not set).
    pub cached_input_cost_per_1k: f64,
    /// USD per 1k completion tokens.
    pub output_cost_per_1k: f64,
    /// Capability tags.
    pub tags: Vec<String>,
    /// Operator weight for weighted routing.
    pub weight: u32,
    /// The endpoints it serves (`upstreams.<name>.serves`).
    pub serves: Vec<Endpoint>,
}

impl UpstreamInfo {
    /// What `usage` costs on this upstream, USD: the one cost formula of the
    /// host (steps, the ledger, metrics and budgets all use it). Prompt
    /// tokens served from the provider's cache are priced at
    /// `cached_input_cost_per_1k`, the rest at `input_cost_per_1k`; every
    /// completion token, reasoning tokens included (OpenAI counts them in
    /// `completion_tokens`), at `output_cost_per_1k`.
    ///
    /// ```
    /// # use agentrouter::upstream::UpstreamInfo;
    /// # use agentrouter::domain::Usage;
    /// let info = UpstreamInfo { name: "a".into(), model: "m".into(), input_cost_per_1k: 1.0,
    ///     cached_input_cost_per_1k: 0.5, output_cost_per_1k: 2.0, tags: vec![], weight: 1,
    ///     serves: vec![agentrouter::domain::Endpoint::Chat] };
    /// assert_eq!(info.cost(Usage::new(500, 250)), 1.0);
    /// let cached = Usage { cached_prompt_tokens: 400, ..Usage::new(500, 250) };
    /// assert_eq!(info.cost(cached), 0.1 + 0.2 + 0.5);
    /// ```
    pub fn cost(&self, usage: Usage) -> f64 {
        let cached = usage.cached_prompt_tokens.min(usage.prompt_tokens);
        f64::from(usage.prompt_tokens - cached) / 1000.0 * self.input_cost_per_1k
            + f64::from(cached) / 1000.0 * self.cached_input_cost_per_1k
            + f64::from(usage.completion_tokens) / 1000.0 * self.output_cost_per_1k
    }

    /// Whether it serves `endpoint`.
    pub fn serves(&self, endpoint: Endpoint) -> bool {
        self.serves.contains(&endpoint)
    }
}

/// The events of a streamed answer; an `Err` ends the stream.
pub type EventStream = futures::stream::BoxStream<'static, Result<StreamEvent, Failure>>;

/// A model provider.
pub trait Upstream: Send + Sync + 'static {
    /// Name, model, costs and tags.
    fn info(&self) -> &UpstreamInfo;

    /// Whole answer; `timeout` bounds the call.
    ///
    /// `req.model` is whatever the pipeline resolved; the upstream sends its
    /// own configured `info().model` to the provider.
    fn complete(
        &self,
        req: CompletionRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Completion, Failure>>;

    /// Streamed answer: `Ok(stream)` once the upstream accepted the request
    /// (status 200), then events; the stream ends after `Done`.
    ///
    /// `timeout` bounds the whole answer, the stream included: an answer
    /// still flowing at the deadline ends with `Err(Failure::Timeout)`.
    fn stream(
        &self,
        req: CompletionRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<EventStream, Failure>>;

    /// A Responses request passed through as `body` (its `model` replaced
    /// by this upstream's), streamed when `stream`; `timeout` bounds the
    /// whole answer. Only called on upstreams that declare
    /// [`Endpoint::Responses`]; the default answers that it does not.
    fn respond(
        &self,
        body: serde_json::Value,
        stream: bool,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<ResponsesReply, Failure>> {
        let _ = (body, stream, timeout);
        let name = self.info().name.clone();
        Box::pin(async move {
            Err(Failure::Internal(format!(
                "upstream `{name}` does not speak the Responses API"
            )))
        })
    }

    /// Embeddings of `req.input`, one vector per input in order; `timeout`
    /// bounds the call. Only called on upstreams that declare
    /// [`Endpoint::Embeddings`]; the default answers that it does not.
    fn embed(
        &self,
        req: EmbeddingRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Embeddings, Failure>> {
        let _ = (req, timeout);
        let name = self.info().name.clone();
        Box::pin(async move {
            Err(Failure::Internal(format!(
                "upstream `{name}` does not serve embeddings"
            )))
        })
    }
}

/// The failure for a non-2xx answer of upstream `upstream`.
///
/// A 400 is inspected to tell a context overflow from other bad requests;
/// providers put the code in `error.code` (OpenAI) or `error.type`, so both
/// are checked. A client error keeps the body (see [`client_error`]).
pub fn failure_for_status(
    upstream: &str,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Failure {
    match status {
        429 => Failure::RateLimited(retry_after_ms(headers, SystemTime::now())),
        400 if is_context_overflow(body) => Failure::TokenLimitExceeded,
        s if is_client_error(s) => Failure::ClientError(client_error(upstream, s, body)),
        _ => Failure::UpstreamStatus(status),
    }
}

/// Whether a status says the request itself was refused (see the module
/// table): a 4xx but for the gateway's credentials (401, 403), a timeout
/// (408), a conflict (409, transient) and a rate limit (429).
pub fn is_client_error(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 401 | 403 | 408 | 409 | 429)
}

/// Longest upstream error text quoted when its body is not OpenAI-shaped.
const MAX_QUOTED_ERROR: usize = 1000;

/// The client error of `upstream` for its answer `body`: the body as sent
/// when it is an OpenAI-style error object, else its text (cut to 1000
/// characters) in that shape, so every client can read it.
pub fn client_error(upstream: &str, status: u16, body: &[u8]) -> UpstreamError {
    let body = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) if value["error"].is_object() => value,
        _ => {
            let text: String = String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(MAX_QUOTED_ERROR)
                .collect();
            let message = if text.is_empty() {
                format!("upstream `{upstream}` answered HTTP {status}")
            } else {
                text
            };
            serde_json::json!({"error": {"message": message, "type": "invalid_request_error",
                "param": null, "code": null}})
        }
    };
    UpstreamError {
        upstream: upstream.to_string(),
        status,
        body,
    }
}

fn is_context_overflow(body: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let error = &value["error"];
    ["code", "type"]
        .iter()
        .any(|k| error[k].as_str() == Some("context_length_exceeded"))
}

/// The retry hint of a 429, in milliseconds.
///
/// `retry-after-ms` (Azure, OpenAI) wins because it is more precise; then
/// `Retry-After` as delay-seconds (fractions accepted) or an HTTP-date,
/// measured from `now` (a date in the past means "now", 0 ms).
pub fn retry_after_ms(headers: &HeaderMap, now: SystemTime) -> Option<u32> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = header("retry-after-ms").and_then(|v| parse_delay(v, 1.0)) {
        return Some(ms);
    }
    parse_retry_after(header("retry-after")?, now)
}

/// Parses one `Retry-After` value (seconds or HTTP-date) into milliseconds.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<u32> {
    if let Some(ms) = parse_delay(value, 1000.0) {
        return Some(ms);
    }
    let at = httpdate::parse_http_date(value.trim()).ok()?;
    let wait = at.duration_since(now).unwrap_or(Duration::ZERO);
    Some(u32::try_from(wait.as_millis()).unwrap_or(u32::MAX))
}

/// A non-negative number times `scale`, rounded up and saturated to `u32`.
fn parse_delay(value: &str, scale: f64) -> Option<u32> {
    let n: f64 = value.trim().parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    // `as` saturates for floats, which is the behaviour wanted here.
    Some((n * scale).ceil() as u32)
}

/// Tokens of a text by the usual rule of thumb (4 chars a token), at least 1.
///
/// Used where an upstream reports no usage and by the simulator, so that
/// budgets and costs still move.
pub fn estimate_tokens(chars: usize) -> u32 {
    u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX).max(1)
}

/// Characters of every message content of a request.
pub fn prompt_chars(req: &CompletionRequest) -> usize {
    req.messages.iter().map(|m| m.content.chars().count()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn retry_after_seconds_and_fractions() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("2", now), Some(2000));
        assert_eq!(parse_retry_after(" 0.25 ", now), Some(250));
        assert_eq!(parse_retry_after("0", now), Some(0));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("1e12", now), Some(u32::MAX));
    }

    #[test]
    fn retry_after_http_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:40 GMT", now),
            Some(3000)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(0)
        );
    }

    #[test]
    fn retry_after_ms_header_wins() {
        let now = SystemTime::now();
        let h = headers(&[("retry-after-ms", "1500"), ("retry-after", "9")]);
        assert_eq!(retry_after_ms(&h, now), Some(1500));
        let h = headers(&[("retry-after-ms", "bogus"), ("retry-after", "9")]);
        assert_eq!(retry_after_ms(&h, now), Some(9000));
        assert_eq!(retry_after_ms(&HeaderMap::new(), now), None);
    }

    #[test]
    fn status_mapping() {
        let none = HeaderMap::new();
        let overflow = br#"{"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded"}}"#;
        let status = |s, h: &HeaderMap, b: &[u8]| failure_for_status("up", s, h, b);
        assert_eq!(status(400, &none, overflow), Failure::TokenLimitExceeded);
        let bad = br#"{"error":{"message":"Unsupported parameter: 'max_tokens'","type":"invalid_request_error","param":"max_tokens","code":"unsupported_parameter"}}"#;
        let Failure::ClientError(e) = status(400, &none, bad) else {
            panic!("a client error expected")
        };
        assert_eq!((e.upstream.as_str(), e.status), ("up", 400));
        assert_eq!(
            e.body,
            serde_json::from_slice::<serde_json::Value>(bad).unwrap()
        );
        let Failure::ClientError(e) = status(422, &none, b"<html>nope</html>") else {
            panic!("a client error expected")
        };
        assert_eq!(e.message(), "<html>nope</html>");
        for transient_or_ours in [401, 403, 408, 409] {
            assert_eq!(
                status(transient_or_ours, &none, bad),
                Failure::UpstreamStatus(transient_or_ours)
            );
        }
        assert_eq!(
            status(429, &headers(&[("retry-after", "1")]), b""),
            Failure::RateLimited(Some(1000))
        );
        assert_eq!(status(429, &none, b""), Failure::RateLimited(None));
        assert_eq!(status(503, &none, overflow), Failure::UpstreamStatus(503));
    }

    #[test]
    fn token_estimate_rounds_up_and_is_never_zero() {
        assert_eq!(estimate_tokens(0), 1);
        assert_eq!(estimate_tokens(4), 1);
        assert_eq!(estimate_tokens(5), 2);
    }
}
