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
//! | any other non-2xx                               | `UpstreamStatus(status)` |
//! | 2xx with a body we cannot parse or use          | `InvalidResponse("upstream `name`: …")` |
//! | nothing before the deadline                     | `Timeout` |
//! | connection refused / reset / closed mid-answer  | `UpstreamStatus(502)` |
//!
//! A transport failure is reported as 502 rather than `Timeout` because it is
//! what a gateway in front of a dead host answers ("bad gateway"): it is fast,
//! says nothing about how long the upstream takes, and lets a breaker count it
//! as an upstream error, whereas `Timeout` is kept for "the deadline passed".

pub mod observed;
pub mod openai;
pub mod sim;
pub mod sim_server;
mod sse;

use crate::domain::{Completion, CompletionRequest, Failure, ToolCall, Usage};
use futures::future::BoxFuture;
use reqwest::header::HeaderMap;
use std::time::{Duration, SystemTime};

pub use observed::ObservedUpstream;
pub use openai::OpenAiUpstream;
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
    /// USD per 1k completion tokens.
    pub output_cost_per_1k: f64,
    /// Capability tags.
    pub tags: Vec<String>,
    /// Operator weight for weighted routing.
    pub weight: u32,
}

impl UpstreamInfo {
    /// What `usage` costs on this upstream, USD: the one cost formula of the
    /// host (steps, the ledger, metrics and budgets all use it).
    ///
    /// ```
    /// # use agentrouter::upstream::UpstreamInfo;
    /// # use agentrouter::domain::Usage;
    /// let info = UpstreamInfo { name: "a".into(), model: "m".into(), input_cost_per_1k: 1.0,
    ///     output_cost_per_1k: 2.0, tags: vec![], weight: 1 };
    /// let usage = Usage { prompt_tokens: 500, completion_tokens: 250 };
    /// assert_eq!(info.cost(usage), 1.0);
    /// ```
    pub fn cost(&self, usage: Usage) -> f64 {
        f64::from(usage.prompt_tokens) / 1000.0 * self.input_cost_per_1k
            + f64::from(usage.completion_tokens) / 1000.0 * self.output_cost_per_1k
    }
}

/// One piece of a streamed answer.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// A piece of answer text.
    Delta(String),
    /// Tool calls, each one whole.
    ToolCalls(Vec<ToolCall>),
    /// The answer is complete; always the last event.
    Done {
        /// `stop`, `length` or `tool_calls`.
        finish_reason: String,
        /// Tokens used (estimated when the upstream did not say).
        usage: Usage,
        /// The model that answered.
        model: String,
    },
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
}

/// The failure for a non-2xx answer of upstream `name`.
///
/// `body` is only inspected for a 400, to tell a context overflow from other
/// bad requests; providers put the code in `error.code` (OpenAI) or
/// `error.type`, so both are checked.
pub fn failure_for_status(status: u16, headers: &HeaderMap, body: &[u8]) -> Failure {
    match status {
        429 => Failure::RateLimited(retry_after_ms(headers, SystemTime::now())),
        400 if is_context_overflow(body) => Failure::TokenLimitExceeded,
        _ => Failure::UpstreamStatus(status),
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

/// Splits text into pieces of about four words, cutting only where a word
/// starts, so the pieces concatenate back to the text exactly.
pub fn word_chunks(text: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut words = 0;
    let mut prev_space = true;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        if prev_space && !space {
            if words > 0 && words % 4 == 0 {
                chunks.push(text[start..i].to_string());
                start = i;
            }
            words += 1;
        }
        prev_space = space;
    }
    if start < text.len() {
        chunks.push(text[start..].to_string());
    }
    chunks
}

/// The events of a whole answer, as [`SimUpstream::stream`] emits them.
pub fn completion_events(c: Completion) -> Vec<StreamEvent> {
    let mut events: Vec<StreamEvent> = word_chunks(&c.message.content)
        .into_iter()
        .map(StreamEvent::Delta)
        .collect();
    if !c.message.tool_calls.is_empty() {
        events.push(StreamEvent::ToolCalls(c.message.tool_calls));
    }
    events.push(StreamEvent::Done {
        finish_reason: c.finish_reason,
        usage: c.usage,
        model: c.model,
    });
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_chunks_cut_at_word_starts_and_rejoin() {
        let text = "one two  three four five six seven eight nine\nten";
        let chunks = word_chunks(text);
        assert_eq!(
            chunks,
            vec!["one two  three four ", "five six seven eight ", "nine\nten"]
        );
        assert_eq!(chunks.concat(), text);
        assert!(word_chunks("").is_empty());
        assert_eq!(word_chunks("  lead"), vec!["  lead"]);
    }
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
        assert_eq!(
            failure_for_status(400, &none, overflow),
            Failure::TokenLimitExceeded
        );
        assert_eq!(
            failure_for_status(400, &none, b"{not json"),
            Failure::UpstreamStatus(400)
        );
        assert_eq!(
            failure_for_status(429, &headers(&[("retry-after", "1")]), b""),
            Failure::RateLimited(Some(1000))
        );
        assert_eq!(
            failure_for_status(429, &none, b""),
            Failure::RateLimited(None)
        );
        assert_eq!(
            failure_for_status(503, &none, overflow),
            Failure::UpstreamStatus(503)
        );
    }

    #[test]
    fn token_estimate_rounds_up_and_is_never_zero() {
        assert_eq!(estimate_tokens(0), 1);
        assert_eq!(estimate_tokens(4), 1);
        assert_eq!(estimate_tokens(5), 2);
    }
}
