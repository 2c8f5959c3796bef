//! The built-in simulated provider.
//!
//! Gives the gateway something to route to without network or keys, with
//! latency and faults injected on demand, and deterministic under a seed so
//! that tests and demos repeat exactly. [`Simulator`] decides what happens to
//! a request; [`SimUpstream`] runs it in process and
//! [`sim_server`](super::sim_server) serves it over OpenAI-compatible HTTP.
//!
//! The answer content follows fixed rules (see [`Simulator::decide`]) that
//! tests of the gateway rely on.

use super::{
    EventStream, ResponsesReply, Upstream, UpstreamInfo, completion_events, estimate_tokens,
    prompt_chars, sim_embed, sim_responses,
};
use crate::domain::{
    Completion, CompletionRequest, EmbeddingRequest, Embeddings, Failure, Message, Role, ToolCall,
    Usage,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Behaviour of a simulated provider; also the `[upstreams.<name>.simulator]`
/// config table. Defaults: 20 ms latency plus up to 10 ms jitter, no faults,
/// a 32000-character context, a 1000 ms retry hint.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimSettings {
    /// Base latency of every answer.
    pub latency_ms: u64,
    /// Up to this much extra latency, drawn uniformly.
    pub jitter_ms: u64,
    /// Share of requests answered with HTTP 500.
    pub fail_rate: f64,
    /// Share of requests answered with HTTP 429.
    pub rate_limit_rate: f64,
    /// Share of requests answered with an unparsable body.
    pub malformed_rate: f64,
    /// Seed for a repeatable sequence of outcomes; entropy when absent.
    pub seed: Option<u64>,
    /// Prompts longer than this many characters overflow the context.
    pub context_chars: usize,
    /// Retry hint sent with a 429.
    pub retry_after_ms: u32,
    /// Share of requests delayed by an extra `spike_ms` (a latency spike).
    pub spike_rate: f64,
    /// Extra latency of a spike.
    pub spike_ms: u64,
    /// Share of requests never answered (the caller's timeout ends them).
    pub hang_rate: f64,
    /// Pause between the events of a streamed answer.
    pub chunk_interval_ms: u64,
    /// Outcomes of the first requests, in order, before any drawn fault:
    /// `ok`, `hang`, `malformed`, `context` (context overflow) or an HTTP
    /// status such as `500`, `429` or `400` (a 4xx is answered as the
    /// request's own fault, `invalid_request_error`). For tests and demos
    /// that need an exact sequence, e.g. `["malformed", "ok"]`.
    pub script: Vec<String>,
    /// Components of an embedding vector when the request names no
    /// `dimensions`.
    pub embedding_dimensions: u32,
}

impl Default for SimSettings {
    fn default() -> Self {
        Self {
            latency_ms: 20,
            jitter_ms: 10,
            fail_rate: 0.0,
            rate_limit_rate: 0.0,
            malformed_rate: 0.0,
            seed: None,
            context_chars: 32_000,
            retry_after_ms: 1000,
            spike_rate: 0.0,
            spike_ms: 1000,
            hang_rate: 0.0,
            chunk_interval_ms: 0,
            script: Vec::new(),
            embedding_dimensions: DEFAULT_EMBEDDING_DIMENSIONS,
        }
    }
}

/// Default `simulator.embedding_dimensions`: small, so tests and demos
/// move little data, yet enough to tell vectors apart.
pub const DEFAULT_EMBEDDING_DIMENSIONS: u32 = 64;

/// What the simulator does with one request.
#[derive(Clone, Debug, PartialEq)]
pub enum SimOutcome {
    /// A well-formed answer.
    Answer(Completion),
    /// An HTTP error.
    Fail {
        /// HTTP status.
        status: u16,
        /// Retry hint (429 only).
        retry_after_ms: Option<u32>,
        /// OpenAI error code.
        code: &'static str,
        /// Error message.
        message: String,
    },
    /// A 200 whose body cannot be parsed.
    Malformed,
}

/// How long a hung request waits: longer than any sane timeout.
const HANG: Duration = Duration::from_secs(3600);
/// Decisions kept in the log (the newest).
const LOG_LIMIT: usize = 10_000;

/// One decided request, for tests that check what the provider saw when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimRecord {
    /// When it was decided (when it "arrived").
    pub at: Instant,
    /// The HTTP status it got; 200 for answers and malformed bodies, 0 for
    /// requests left hanging.
    pub status: u16,
    /// The retry hint sent with it, if any.
    pub retry_after_ms: Option<u32>,
}

/// Decides latency and outcome of simulated requests; shareable across tasks.
#[derive(Debug)]
pub struct Simulator {
    settings: RwLock<SimSettings>,
    rng: Mutex<StdRng>,
    requests: AtomicU64,
    /// Position in the script, reset when the settings change.
    scripted: AtomicUsize,
    log: Mutex<VecDeque<SimRecord>>,
}

impl Simulator {
    /// A simulator seeded from `settings.seed`, or from entropy.
    pub fn new(settings: SimSettings) -> Self {
        let rng = match settings.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self {
            settings: RwLock::new(settings),
            rng: Mutex::new(rng),
            requests: AtomicU64::new(0),
            scripted: AtomicUsize::new(0),
            log: Mutex::new(VecDeque::new()),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> SimSettings {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Changes the behaviour from the next request on (a provider going
    /// down or recovering); the script starts over. The random sequence
    /// carries on.
    pub fn set_settings(&self, settings: SimSettings) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = settings;
        self.scripted.store(0, Ordering::SeqCst);
    }

    /// The most recent decisions, oldest first.
    pub fn log(&self) -> Vec<SimRecord> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }

    fn remember(&self, latency: Duration, outcome: &SimOutcome) {
        let (status, retry_after_ms) = match outcome {
            _ if latency >= HANG => (0, None),
            SimOutcome::Answer(_) | SimOutcome::Malformed => (200, None),
            SimOutcome::Fail {
                status,
                retry_after_ms,
                ..
            } => (*status, *retry_after_ms),
        };
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() == LOG_LIMIT {
            log.pop_front();
        }
        log.push_back(SimRecord {
            at: Instant::now(),
            status,
            retry_after_ms,
        });
    }

    /// Requests decided so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Latency and outcome of one request answered as `model`.
    ///
    /// A scripted outcome comes first (see [`SimSettings::script`]); then
    /// faults are drawn in order hang, rate limit (429), failure (500),
    /// malformed body; then a prompt over `context_chars` is refused (400
    /// `context_length_exceeded`). A spike adds `spike_ms` to the latency.
    /// Otherwise the answer is:
    /// - tools offered and no tool result after the last user message: one
    ///   call per tool, id `call_<i>`, arguments `{"task": <last user
    ///   message, first 200 chars>}`, finish reason `tool_calls`;
    /// - tool results after the last user message: `Summary of <n>
    ///   results: ` and the results joined with ` | `;
    /// - otherwise `[<model>] You said: <last user message>`, cut to
    ///   `max_tokens * 4` chars (finish reason `length` when cut).
    ///
    /// Usage is chars / 4 rounded up, at least 1, for prompt and answer.
    pub fn decide(&self, model: &str, req: &CompletionRequest) -> (Duration, SimOutcome) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let s = self.settings();
        // Every request draws the same number of values in the same order,
        // so a seed fixes the whole sequence whatever the requests contain
        // (spikes and hangs draw only when enabled, so enabling them does
        // not change the sequence of configurations without them).
        let (jitter, rate_limited, failed, malformed, spiked, hung) = {
            // A poisoned lock only means another thread panicked mid-draw;
            // the generator state is still usable.
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            let jitter = rng.random_range(0..=s.jitter_ms);
            let draws: [f64; 3] = [rng.random(), rng.random(), rng.random()];
            let spiked = s.spike_rate > 0.0 && rng.random::<f64>() < s.spike_rate;
            let hung = s.hang_rate > 0.0 && rng.random::<f64>() < s.hang_rate;
            (
                jitter,
                draws[0] < s.rate_limit_rate,
                draws[1] < s.fail_rate,
                draws[2] < s.malformed_rate,
                spiked,
                hung,
            )
        };
        let mut latency = Duration::from_millis(s.latency_ms.saturating_add(jitter));
        if spiked {
            latency += Duration::from_millis(s.spike_ms);
        }
        let step = self.scripted.fetch_add(1, Ordering::SeqCst);
        let scripted = s.script.get(step).map(String::as_str);
        let context_overflow = || SimOutcome::Fail {
            status: 400,
            retry_after_ms: None,
            code: "context_length_exceeded",
            message: format!(
                "prompt of {} chars exceeds the context of {} chars",
                prompt_chars(req),
                s.context_chars
            ),
        };
        let rate_limit = || SimOutcome::Fail {
            status: 429,
            retry_after_ms: Some(s.retry_after_ms),
            code: "rate_limit_exceeded",
            message: "simulated rate limit".into(),
        };
        let server_error = |status: u16| SimOutcome::Fail {
            status,
            retry_after_ms: None,
            code: "server_error",
            message: "simulated upstream failure".into(),
        };
        let client_error = |status: u16| SimOutcome::Fail {
            status,
            retry_after_ms: None,
            code: "simulated_client_error",
            message: format!("simulated refusal of the request (HTTP {status})"),
        };
        let outcome = match scripted {
            Some("ok") => SimOutcome::Answer(answer(model, req)),
            Some("hang") => {
                latency = HANG;
                SimOutcome::Answer(answer(model, req))
            }
            Some("malformed") => SimOutcome::Malformed,
            Some("context") => context_overflow(),
            Some("429") => rate_limit(),
            Some(status) => match status.parse().unwrap_or(500) {
                status @ 400..=499 => client_error(status),
                status => server_error(status),
            },
            None if hung => {
                latency = HANG;
                SimOutcome::Answer(answer(model, req))
            }
            None if rate_limited => rate_limit(),
            None if failed => server_error(500),
            None if malformed => SimOutcome::Malformed,
            None if prompt_chars(req) > s.context_chars => context_overflow(),
            None => SimOutcome::Answer(answer(model, req)),
        };
        self.remember(latency, &outcome);
        (latency, outcome)
    }
}

/// The answer to a request that did not fail (see [`Simulator::decide`]).
fn answer(model: &str, req: &CompletionRequest) -> Completion {
    let last_user = req.messages.iter().rposition(|m| m.role == Role::User);
    let after = &req.messages[last_user.map_or(0, |i| i + 1)..];
    let user_text = last_user.map_or("", |i| req.messages[i].content.as_str());
    let results: Vec<&str> = after
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| m.content.as_str())
        .collect();

    let mut message = Message::assistant("");
    let finish_reason;
    if !req.tools.is_empty() && results.is_empty() {
        let task: String = user_text.chars().take(200).collect();
        let arguments = serde_json::json!({ "task": task }).to_string();
        message.tool_calls = req
            .tools
            .iter()
            .enumerate()
            .map(|(i, t)| ToolCall {
                id: format!("call_{i}"),
                name: t.name.clone(),
                arguments: arguments.clone(),
            })
            .collect();
        finish_reason = "tool_calls";
    } else if !results.is_empty() {
        message.content = format!(
            "Summary of {} results: {}",
            results.len(),
            results.join(" | ")
        );
        finish_reason = "stop";
    } else {
        let text = format!("[{model}] You said: {user_text}");
        let limit = req
            .max_tokens
            .map_or(usize::MAX, |t| (t as usize).saturating_mul(4));
        if text.chars().count() > limit {
            message.content = text.chars().take(limit).collect();
            finish_reason = "length";
        } else {
            message.content = text;
            finish_reason = "stop";
        }
    }
    Completion {
        usage: Usage::new(
            estimate_tokens(prompt_chars(req)),
            estimate_tokens(message.content.chars().count()),
        ),
        message,
        model: model.to_string(),
        finish_reason: finish_reason.into(),
        cached: false,
        details: Default::default(),
    }
}

/// The OpenAI error type of a simulated HTTP error.
pub(crate) fn error_kind(status: u16) -> &'static str {
    match status {
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

/// The failure upstream `upstream` reports for a simulated HTTP error; the
/// same mapping as for a real provider's answer.
fn fail_to_failure(
    upstream: &str,
    status: u16,
    retry_after_ms: Option<u32>,
    code: &str,
    message: &str,
) -> Failure {
    match status {
        429 => Failure::RateLimited(retry_after_ms),
        400 if code == "context_length_exceeded" => Failure::TokenLimitExceeded,
        s if super::is_client_error(s) => {
            let body = crate::openai::ErrorBody::new(message, error_kind(s), code);
            let body = serde_json::to_vec(&body).unwrap_or_default();
            Failure::ClientError(super::client_error(upstream, s, &body))
        }
        _ => Failure::UpstreamStatus(status),
    }
}

/// The simulated provider as an in-process upstream (kind `simulated`).
pub struct SimUpstream {
    info: UpstreamInfo,
    sim: Arc<Simulator>,
}

impl SimUpstream {
    /// An upstream answering as `info.model` through `sim`.
    pub fn new(info: UpstreamInfo, sim: Arc<Simulator>) -> Self {
        Self { info, sim }
    }

    /// The simulator behind this upstream.
    pub fn simulator(&self) -> &Arc<Simulator> {
        &self.sim
    }

    /// Decides, waits the latency (bounded by `timeout`) and maps faults.
    fn run(
        &self,
        req: CompletionRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Completion, Failure>> {
        let decided = self.sim.decide(&self.info.model, &req);
        self.settle(decided, timeout)
    }

    /// Waits a decided latency (bounded by `timeout`) and maps faults.
    fn settle(
        &self,
        (latency, outcome): (Duration, SimOutcome),
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Completion, Failure>> {
        let name = self.info.name.clone();
        Box::pin(async move {
            if latency > timeout {
                tokio::time::sleep(timeout).await;
                return Err(Failure::Timeout);
            }
            tokio::time::sleep(latency).await;
            match outcome {
                SimOutcome::Answer(c) => Ok(c),
                SimOutcome::Fail {
                    status,
                    retry_after_ms,
                    code,
                    message,
                } => Err(fail_to_failure(
                    &name,
                    status,
                    retry_after_ms,
                    code,
                    &message,
                )),
                SimOutcome::Malformed => Err(Failure::InvalidResponse(format!(
                    "upstream `{name}`: malformed response body"
                ))),
            }
        })
    }
}

impl std::fmt::Debug for SimUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimUpstream")
            .field("info", &self.info)
            .field("settings", &self.sim.settings())
            .finish()
    }
}

impl Upstream for SimUpstream {
    fn info(&self) -> &UpstreamInfo {
        &self.info
    }

    fn complete(
        &self,
        req: CompletionRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Completion, Failure>> {
        self.run(req, timeout)
    }

    fn stream(
        &self,
        req: CompletionRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<EventStream, Failure>> {
        let answer = self.run(req, timeout);
        let interval = Duration::from_millis(self.sim.settings().chunk_interval_ms);
        Box::pin(async move {
            let events = completion_events(answer.await?);
            let events = futures::stream::iter(events.into_iter().enumerate());
            let stream: EventStream = if interval.is_zero() {
                Box::pin(events.map(|(_, e)| Ok(e)))
            } else {
                // The first event comes with the answer; the rest trickle.
                Box::pin(events.then(move |(i, e)| async move {
                    if i > 0 {
                        tokio::time::sleep(interval).await;
                    }
                    Ok(e)
                }))
            };
            Ok(stream)
        })
    }

    /// Read as the gateway translates it, decided and answered like a
    /// completion (see [`sim_responses`]).
    fn respond(
        &self,
        body: serde_json::Value,
        stream: bool,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<ResponsesReply, Failure>> {
        let (req, probe) = match sim_responses::probe(&body) {
            Ok(parsed) => parsed,
            Err(message) => {
                let failure =
                    fail_to_failure(&self.info.name, 400, None, "invalid_request", &message);
                return Box::pin(async move { Err(failure) });
            }
        };
        let settled = self.settle(self.sim.decide(&self.info.model, &probe), timeout);
        let n = self.sim.requests();
        Box::pin(async move { Ok(sim_responses::reply(n, &req, settled.await?, stream)) })
    }

    /// Decided like a completion of the inputs (scripts and faults apply);
    /// an answer is the inputs' deterministic vectors.
    fn embed(
        &self,
        req: EmbeddingRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Embeddings, Failure>> {
        let decided = self.sim.decide(&self.info.model, &sim_embed::probe(&req));
        let settled = self.settle(decided, timeout);
        let model = self.info.model.clone();
        let dims = self.sim.settings().embedding_dimensions;
        Box::pin(async move {
            settled.await?;
            Ok(sim_embed::answer(&model, &req, dims))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_defaults_and_strict_keys() {
        let s: SimSettings = serde_json::from_str(r#"{"fail_rate":0.5}"#).unwrap();
        assert_eq!(s.context_chars, 32_000);
        assert_eq!(s.retry_after_ms, 1000);
        assert!(serde_json::from_str::<SimSettings>(r#"{"fail_rat":0.5}"#).is_err());
    }

    #[test]
    fn max_tokens_cuts_the_echo() {
        let sim = Simulator::new(SimSettings::default());
        let mut req = CompletionRequest {
            messages: vec![Message::user("hello there, how are you")],
            max_tokens: Some(2),
            ..Default::default()
        };
        let (_, SimOutcome::Answer(c)) = sim.decide("m", &req) else {
            panic!("answer expected")
        };
        assert_eq!(c.message.content, "[m] You ");
        assert_eq!(c.finish_reason, "length");
        req.max_tokens = Some(100);
        let (_, SimOutcome::Answer(c)) = sim.decide("m", &req) else {
            panic!("answer expected")
        };
        assert_eq!(c.finish_reason, "stop");
        assert_eq!(sim.requests(), 2);
    }
}
