//! An OpenAI-compatible provider reached over HTTP (OpenAI, Azure-style
//! proxies, vLLM, Ollama, the simulator's server, …).
//!
//! Requests go to `{base_url}/chat/completions` (embeddings to
//! `{base_url}/embeddings`, Responses passed through to
//! `{base_url}/responses`) over [`super::transport`]: connections driven in
//! the request's own task for `http://`, the shared client for `https://`.
//! Streamed answers are read as server-sent events and passed on chunk by
//! chunk as the provider sent them (text, refusals,
//! tool-call fragments, logprobs, every choice), while an
//! [`Assembly`] puts the whole answer back together for the `Done` event.

mod passthrough;

use super::sse::SseParser;
use super::transport::{Reply, Target, Transport, TransportError};
use super::{
    Chunk, EventStream, StreamEvent, Upstream, UpstreamInfo, estimate_tokens, failure_for_status,
    prompt_chars,
};
use crate::domain::{
    Completion, CompletionRequest, EmbeddingInput, EmbeddingRequest, Embeddings, Failure, Usage,
};
use crate::openai::{Assembly, ChatChunk, ChatRequest, ChatResponse, embedding};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use hyper::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// Largest answer body read; a bigger one is an invalid response.
const MAX_BODY: usize = 16 << 20;
/// Largest error body read (a client error's body goes back to the client;
/// past this it is cut, and quoted as text).
const MAX_ERROR_BODY: usize = 64 << 10;

/// An upstream speaking the OpenAI chat-completions API.
#[derive(Clone)]
pub struct OpenAiUpstream {
    inner: Arc<Inner>,
}

struct Inner {
    info: UpstreamInfo,
    /// How the provider is reached; `Err` says why it cannot be (a
    /// `base_url` that is not a URL, an `api_key` that cannot be a header),
    /// and fails every request with it.
    transport: Result<Transport, String>,
    /// `{base_url}/chat/completions`, resolved once: parsing a URL per
    /// request cost more than building the request.
    url: Result<Target, String>,
    /// `{base_url}/embeddings`, likewise.
    embeddings_url: Result<Target, String>,
    /// `{base_url}/responses`, likewise.
    responses_url: Result<Target, String>,
    /// `Bearer {api_key}`, built once and marked sensitive.
    auth: Option<HeaderValue>,
    /// Where the provider's rate-limit headroom (`x-ratelimit-*`) goes.
    quota: Option<Arc<crate::telemetry::Metrics>>,
}

impl std::fmt::Debug for OpenAiUpstream {
    // Hand-written so that the API key can never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiUpstream")
            .field("info", &self.inner.info)
            .field("url", &self.inner.url)
            .field("api_key", &self.inner.auth.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl OpenAiUpstream {
    /// An upstream posting to `{base_url}/chat/completions`, with bearer
    /// auth when `api_key` is set. `base_url` usually ends in `/v1`.
    pub fn new(
        info: UpstreamInfo,
        base_url: impl Into<String>,
        api_key: Option<String>,
        client: reqwest::Client,
    ) -> Self {
        let base: String = base_url.into();
        let mut transport =
            Transport::new(&base, client).map_err(|e| format!("base_url is not a valid URL: {e}"));
        let at = |path: &str| match &transport {
            Ok(transport) => transport
                .target(path)
                .map_err(|e| format!("base_url is not a valid URL: {e}")),
            Err(e) => Err(e.clone()),
        };
        let (url, embeddings_url, responses_url) =
            (at("chat/completions"), at("embeddings"), at("responses"));
        let mut auth = None;
        if let Some(key) = api_key {
            match HeaderValue::from_str(&format!("Bearer {key}")) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    auth = Some(value);
                }
                Err(_) => {
                    transport = Err("api_key has characters a header cannot carry".into());
                }
            }
        }
        Self {
            inner: Arc::new(Inner {
                info,
                url,
                embeddings_url,
                responses_url,
                transport,
                auth,
                quota: None,
            }),
        }
    }

    /// Also records the provider's rate-limit headroom in `metrics`
    /// (`agentrouter_upstream_quota_*`). Call it on a fresh upstream, before
    /// it is shared (it has no effect once cloned).
    pub fn with_quota_metrics(mut self, metrics: Arc<crate::telemetry::Metrics>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.quota = Some(metrics);
        }
        self
    }
}

impl Inner {
    /// Sends the request and returns the response once it is a 2xx.
    async fn send(
        &self,
        req: &CompletionRequest,
        stream: bool,
        timeout: Duration,
    ) -> Result<Reply, Failure> {
        let mut body = ChatRequest::from_domain(req, stream);
        body.model = self.info.model.clone();
        self.post(&self.url, &body, stream, timeout).await
    }

    /// Posts `body` to `url` and returns the response once it is a 2xx.
    async fn post(
        &self,
        url: &Result<Target, String>,
        body: &impl serde::Serialize,
        stream: bool,
        timeout: Duration,
    ) -> Result<Reply, Failure> {
        let unusable =
            |e: &String| Failure::Internal(format!("upstream `{}`: {e}", self.info.name));
        let (transport, url) = match (&self.transport, url) {
            (Ok(transport), Ok(url)) => (transport, url),
            (Err(e), _) | (_, Err(e)) => return Err(unusable(e)),
        };
        let body = serde_json::to_vec(body)
            .map_err(|e| Failure::Internal(format!("upstream `{}`: {e}", self.info.name)))?;
        let mut headers = HeaderMap::new();
        crate::telemetry::traces::inject_current(&mut headers);
        if stream {
            headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        }
        if let Some(auth) = &self.auth {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        // The timeout covers connect, headers and the whole body, the
        // streamed body included.
        let reply = transport
            .post(url, headers, body, timeout)
            .await
            .map_err(|e| self.transport(e))?;
        self.observe_quota(&reply.headers);
        let status = reply.status;
        if status.is_success() {
            return Ok(reply);
        }
        let headers = reply.headers.clone();
        // A body we cannot read still tells the status, so read errors are
        // ignored here.
        let (body, _) = reply.read_capped(MAX_ERROR_BODY).await.unwrap_or_default();
        let failure = failure_for_status(&self.info.name, status.as_u16(), &headers, &body);
        tracing::warn!(upstream = %self.info.name, status = status.as_u16(), %failure, "upstream refused the request");
        Err(failure)
    }

    /// Records what the provider says is left of its rate limits: OpenAI's
    /// (and most compatible providers') `x-ratelimit-limit-{requests,tokens}`
    /// and `x-ratelimit-remaining-{requests,tokens}` headers, so alerts can
    /// fire before the quota runs out rather than on the first 429.
    fn observe_quota(&self, headers: &HeaderMap) {
        let Some(metrics) = &self.quota else {
            return;
        };
        // Header names are fixed and labels built only for a header that
        // is there: most answers carry none, and this runs on every one.
        const HEADERS: [(&str, &str, &str); 2] = [
            (
                "requests",
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
            ),
            (
                "tokens",
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
            ),
        ];
        let read = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok())
        };
        for (resource, limit_header, remaining_header) in HEADERS {
            let (limit, left) = (read(limit_header), read(remaining_header));
            if limit.is_none() && left.is_none() {
                continue;
            }
            let labels = crate::telemetry::metrics::QuotaLabels {
                upstream: self.info.name.clone(),
                resource: resource.to_string(),
            };
            if let Some(limit) = limit {
                metrics
                    .upstream_quota_limit
                    .get_or_create(&labels)
                    .set(limit);
            }
            if let Some(left) = left {
                metrics
                    .upstream_quota_remaining
                    .get_or_create(&labels)
                    .set(left);
            }
        }
    }

    /// The failure for a transport error (see the module table in `super`).
    fn transport(&self, e: TransportError) -> Failure {
        let failure = match &e {
            TransportError::Timeout => Failure::Timeout,
            TransportError::Decode(e) => self.invalid(format!("undecodable body: {e}")),
            TransportError::Io(_) => Failure::UpstreamStatus(502),
        };
        tracing::warn!(upstream = %self.info.name, error = %e, %failure, "upstream transport error");
        failure
    }

    fn invalid(&self, reason: impl std::fmt::Display) -> Failure {
        invalid(&self.info.name, reason)
    }

    async fn complete(
        self: Arc<Self>,
        req: CompletionRequest,
        timeout: Duration,
    ) -> Result<Completion, Failure> {
        let resp = self.send(&req, false, timeout).await?;
        let (body, cut) = resp
            .read_capped(MAX_BODY)
            .await
            .map_err(|e| self.transport(e))?;
        if cut {
            return Err(self.invalid(format!("body over {MAX_BODY} bytes")));
        }
        let parsed: ChatResponse = serde_json::from_slice(&body)
            .map_err(|e| self.invalid(format!("unparsable body: {e}")))?;
        parsed.into_completion().map_err(|f| match f {
            Failure::InvalidResponse(reason) => self.invalid(reason),
            other => other,
        })
    }

    async fn embed(
        self: Arc<Self>,
        req: EmbeddingRequest,
        timeout: Duration,
    ) -> Result<Embeddings, Failure> {
        let body = embedding::upstream_body(&req, &self.info.model);
        let resp = self
            .post(&self.embeddings_url, &body, false, timeout)
            .await?;
        let (body, cut) = resp
            .read_capped(MAX_BODY)
            .await
            .map_err(|e| self.transport(e))?;
        if cut {
            return Err(self.invalid(format!("body over {MAX_BODY} bytes")));
        }
        let parsed: embedding::EmbeddingsResponse = serde_json::from_slice(&body)
            .map_err(|e| self.invalid(format!("unparsable embeddings body: {e}")))?;
        let estimate = req.input.iter().map(EmbeddingInput::tokens).sum();
        parsed
            .into_embeddings(req.input.len(), estimate)
            .map_err(|reason| self.invalid(reason))
    }

    async fn stream(
        self: Arc<Self>,
        req: CompletionRequest,
        timeout: Duration,
    ) -> Result<EventStream, Failure> {
        let resp = self.send(&req, true, timeout).await?;
        let pump = Pump {
            body: body_stream(resp),
            sse: SseParser::default(),
            decoder: StreamDecoder::new(
                self.info.name.clone(),
                self.info.model.clone(),
                prompt_chars(&req),
            ),
            out: VecDeque::new(),
            ended: false,
            upstream: self,
        };
        Ok(futures::stream::unfold(pump, Pump::next).boxed())
    }
}

fn invalid(upstream: &str, reason: impl std::fmt::Display) -> Failure {
    Failure::InvalidResponse(format!("upstream `{upstream}`: {reason}"))
}

/// The body's pieces as a stream.
fn body_stream(reply: Reply) -> BoxStream<'static, Result<Bytes, TransportError>> {
    futures::stream::unfold(reply, |mut reply| async move {
        reply.chunk().await.transpose().map(|chunk| (chunk, reply))
    })
    .boxed()
}

impl Upstream for OpenAiUpstream {
    fn info(&self) -> &UpstreamInfo {
        &self.inner.info
    }

    fn complete(
        &self,
        req: CompletionRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Completion, Failure>> {
        Box::pin(self.inner.clone().complete(req, timeout))
    }

    fn stream(
        &self,
        req: CompletionRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<EventStream, Failure>> {
        Box::pin(self.inner.clone().stream(req, timeout))
    }

    fn embed(
        &self,
        req: EmbeddingRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Embeddings, Failure>> {
        Box::pin(self.inner.clone().embed(req, timeout))
    }

    fn respond(
        &self,
        body: serde_json::Value,
        stream: bool,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<super::ResponsesReply, Failure>> {
        Box::pin(self.inner.clone().respond(body, stream, timeout))
    }
}

/// Drives a streamed response: bytes in, events out.
struct Pump {
    upstream: Arc<Inner>,
    body: BoxStream<'static, Result<Bytes, TransportError>>,
    sse: SseParser,
    decoder: StreamDecoder,
    out: VecDeque<Result<StreamEvent, Failure>>,
    ended: bool,
}

impl Pump {
    async fn next(mut self) -> Option<(Result<StreamEvent, Failure>, Self)> {
        loop {
            if let Some(event) = self.out.pop_front() {
                return Some((event, self));
            }
            if self.ended {
                return None;
            }
            match self.body.next().await {
                Some(Ok(bytes)) => match self.sse.push(&bytes) {
                    Ok(datas) => self.feed(datas),
                    Err(reason) => self.fail(self.upstream.invalid(reason)),
                },
                Some(Err(e)) => {
                    let failure = self.upstream.transport(e);
                    self.fail(failure);
                }
                None => {
                    let last = self.sse.finish();
                    self.feed(last);
                    if !self.ended {
                        // Without `[DONE]`: a finish reason still makes the
                        // answer complete (some servers omit `[DONE]`).
                        match self.decoder.finish() {
                            Ok(events) => self.out.extend(events.into_iter().map(Ok)),
                            Err(f) => self.out.push_back(Err(f)),
                        }
                        self.ended = true;
                    }
                }
            }
        }
    }

    fn feed(&mut self, datas: Vec<String>) {
        for data in datas {
            if self.ended {
                return;
            }
            match self.decoder.on_data(&data) {
                Ok(events) => self.out.extend(events.into_iter().map(Ok)),
                Err(f) => self.fail(f),
            }
            self.ended |= self.decoder.done;
        }
    }

    fn fail(&mut self, failure: Failure) {
        self.out.push_back(Err(failure));
        self.ended = true;
    }
}

/// Turns chunk payloads into events: each chunk's non-empty choice deltas
/// are passed on (roles are the writer's to set), and every chunk goes
/// into the assembly of the whole answer.
#[derive(Debug)]
struct StreamDecoder {
    upstream: String,
    prompt_chars: usize,
    assembly: Option<Assembly>,
    done: bool,
}

impl StreamDecoder {
    fn new(upstream: String, model: String, prompt_chars: usize) -> Self {
        Self {
            upstream,
            prompt_chars,
            assembly: Some(Assembly::new(model)),
            done: false,
        }
    }

    /// The events of one `data` payload; `[DONE]` completes the answer.
    fn on_data(&mut self, data: &str) -> Result<Vec<StreamEvent>, Failure> {
        let data = data.trim();
        if data == "[DONE]" {
            return self.finish();
        }
        let chunk: ChatChunk = serde_json::from_str(data)
            .map_err(|e| invalid(&self.upstream, format!("unparsable stream chunk: {e}")))?;
        // OpenAI reports a failure after the stream began as an event with
        // an `error` object and no choices: the stream is over, and its
        // message must reach the client rather than "no finish reason".
        if let Some(error) = chunk
            .extra
            .get("error")
            .filter(|_| chunk.choices.is_empty())
        {
            let message = error["message"].as_str().unwrap_or("no message");
            return Err(invalid(
                &self.upstream,
                format!("the stream ended with an error: {message}"),
            ));
        }
        if let Some(assembly) = &mut self.assembly {
            assembly
                .push(&chunk)
                .map_err(|reason| invalid(&self.upstream, reason))?;
        }
        let choices: Vec<_> = chunk
            .choices
            .into_iter()
            .map(|mut choice| {
                choice.delta.role = None;
                choice
            })
            .filter(|choice| !choice.is_empty())
            .collect();
        if choices.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![StreamEvent::Chunk(Chunk {
            choices,
            extra: chunk.extra,
        })])
    }

    /// The closing event: the whole answer, its usage estimated when the
    /// stream reported none.
    fn finish(&mut self) -> Result<Vec<StreamEvent>, Failure> {
        let Some(assembly) = self.assembly.take() else {
            return Ok(Vec::new());
        };
        self.done = true;
        let assembled = assembly
            .finish()
            .map_err(|reason| invalid(&self.upstream, reason))?;
        let mut completion = assembled.completion;
        if !assembled.usage_reported {
            completion.usage = Usage::new(
                estimate_tokens(self.prompt_chars),
                estimate_tokens(assembled.answer_chars),
            );
        }
        Ok(vec![StreamEvent::Done(Box::new(completion))])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unusable_base_url_or_api_key_fails_each_request_naming_the_upstream() {
        let info = UpstreamInfo {
            name: "broken".into(),
            model: "m".into(),
            input_cost_per_1k: 0.0,
            cached_input_cost_per_1k: 0.0,
            output_cost_per_1k: 0.0,
            tags: Vec::new(),
            weight: 1,
            serves: Vec::new(),
        };
        let client = crate::net::http_client();
        let cases = [
            ("not a url", None, "base_url is not a valid URL"),
            (
                "http://127.0.0.1:9/v1",
                Some("sk-\nsplit".to_string()),
                "api_key",
            ),
        ];
        for (base, key, why) in cases {
            let upstream = OpenAiUpstream::new(info.clone(), base, key, client.clone());
            let req = CompletionRequest {
                messages: vec![crate::domain::Message::user("hi")],
                ..Default::default()
            };
            let Err(Failure::Internal(e)) = upstream.complete(req, Duration::from_secs(1)).await
            else {
                panic!("{base}: an unusable upstream answered");
            };
            assert!(
                e.starts_with("upstream `broken`: ") && e.contains(why),
                "{e}"
            );
        }
    }

    fn chunk(delta: &str, finish: Option<&str>, usage: Option<&str>) -> String {
        let finish = finish.map_or("null".to_string(), |f| format!("\"{f}\""));
        let usage = usage.map_or(String::new(), |u| format!(",\"usage\":{u}"));
        format!(
            r#"{{"id":"c","object":"chat.completion.chunk","created":1,"model":"real-model","choices":[{{"index":0,"delta":{delta},"finish_reason":{finish}}}]{usage}}}"#
        )
    }

    /// Every event of a stream's payloads, `[DONE]` last.
    fn decode(d: &mut StreamDecoder, datas: &[String]) -> Vec<StreamEvent> {
        let mut events = Vec::new();
        for data in datas {
            events.extend(d.on_data(data).unwrap());
        }
        events.extend(d.on_data("[DONE]").unwrap());
        events
    }

    #[test]
    fn decoder_passes_tool_call_fragments_on_and_assembles_them() {
        let mut d = StreamDecoder::new("up".into(), "m".into(), 40);
        let events = decode(
            &mut d,
            &[
                chunk(r#"{"role":"assistant","content":""}"#, None, None),
                chunk(r#"{"content":"Hi"}"#, None, None),
                chunk(
                    r#"{"tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"search","arguments":"{\"q\""}}]}"#,
                    None,
                    None,
                ),
                chunk(
                    r#"{"tool_calls":[{"index":1,"id":"b","function":{"name":"fetch","arguments":"{}"}}]}"#,
                    None,
                    None,
                ),
                chunk(
                    r#"{"tool_calls":[{"index":0,"function":{"arguments":":\"x\"}"}}]}"#,
                    Some("tool_calls"),
                    None,
                ),
            ],
        );
        // The role-only opening chunk adds nothing; the other four pass on.
        assert_eq!(events.len(), 5, "{events:?}");
        assert_eq!(events[0].text(), "Hi");
        let StreamEvent::Chunk(fragment) = &events[1] else {
            panic!("a chunk expected: {events:?}")
        };
        assert_eq!(
            fragment.choices[0].delta.tool_calls.as_ref().unwrap()[0]["function"]["arguments"],
            "{\"q\""
        );
        let done = events[4].done().expect("Done last");
        let calls = &done.message.tool_calls;
        assert_eq!(
            (calls[0].id.as_str(), calls[0].name.as_str()),
            ("a", "search")
        );
        assert_eq!(calls[0].arguments, r#"{"q":"x"}"#);
        assert_eq!(calls[1].name, "fetch");
        assert_eq!(done.finish_reason, "tool_calls");
        assert_eq!(done.model, "real-model");
        // No usage reported: estimated from 40 prompt chars and 2 + 9 + 2 answer chars.
        assert_eq!(done.usage, Usage::new(10, 4));
    }

    #[test]
    fn decoder_takes_usage_from_the_last_chunk_and_names_the_upstream() {
        let mut d = StreamDecoder::new("up".into(), "m".into(), 4);
        let events = decode(
            &mut d,
            &[
                chunk(r#"{"content":"x"}"#, Some("stop"), None),
                r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10,"prompt_tokens_details":{"cached_tokens":5}}}"#.to_string(),
            ],
        );
        let done = events.last().and_then(StreamEvent::done).unwrap();
        assert_eq!(done.usage.prompt_tokens, 7);
        assert_eq!(done.usage.cached_prompt_tokens, 5);
        assert_eq!(
            done.details.usage["prompt_tokens_details"]["cached_tokens"],
            5
        );

        let mut d = StreamDecoder::new("up".into(), "m".into(), 4);
        let err = d.on_data("{\"id\":").unwrap_err();
        assert!(matches!(err, Failure::InvalidResponse(m) if m.contains("`up`")));
        let mut d = StreamDecoder::new("up".into(), "m".into(), 4);
        assert!(d.on_data("[DONE]").is_err(), "no finish reason");
        let mut d = StreamDecoder::new("up".into(), "m".into(), 4);
        let err = d
            .on_data(r#"{"error":{"message":"The server had an error.","type":"server_error"}}"#)
            .unwrap_err();
        assert!(
            matches!(&err, Failure::InvalidResponse(m) if m.contains("`up`") && m.contains("The server had an error.")),
            "{err}"
        );
    }
}
