//! [`drive`] and [`drive_streams`]: many chat completions at a fixed
//! concurrency, whole or streamed, and what came back ([`Load`]): status
//! counts, and latencies for the benches (tests assert on the counts only).

use super::{Gateway, chat};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What a run of requests got back.
#[derive(Debug, Default)]
pub struct Load {
    /// Responses by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Every request's latency (send to body read), sorted.
    pub latencies: Vec<Duration>,
    /// Wall-clock time of the whole run.
    pub elapsed: Duration,
    /// Streams answered 200 that did not end whole: an error event, no
    /// `[DONE]`, or text that is not the answer (always 0 for [`drive`]).
    pub broken: u64,
}

impl Load {
    /// Requests sent.
    pub fn total(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// Responses with `status`.
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// Share of requests answered 200 (and, for streams, whole).
    pub fn success(&self) -> f64 {
        self.whole() as f64 / self.total().max(1) as f64
    }

    /// Requests answered 200 (and, for streams, whole).
    pub fn whole(&self) -> u64 {
        self.count(200) - self.broken
    }

    /// The `q` quantile of the latencies (nearest rank).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank =
            ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1]
    }

    /// The statuses as `958 × 200, 42 × 502`.
    pub fn summary(&self) -> String {
        self.statuses
            .iter()
            .map(|(status, n)| format!("{n} × {status}"))
            .chain((self.broken > 0).then(|| format!("{} broken streams", self.broken)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Whether `text` is a whole SSE answer to `prompt` from the simulator:
/// chunks only, `[DONE]` last, and the deltas spelling the answer.
fn whole_stream(text: &str, prompt: &str) -> bool {
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    let Some((&"[DONE]", chunks)) = events.split_last() else {
        return false;
    };
    let mut joined = String::new();
    for chunk in chunks {
        let Ok(chunk) = serde_json::from_str::<serde_json::Value>(chunk) else {
            return false;
        };
        if chunk.get("error").is_some() {
            return false;
        }
        if let Some(delta) = chunk["choices"][0]["delta"]["content"].as_str() {
            joined.push_str(delta);
        }
    }
    joined.ends_with(&format!("You said: {prompt}"))
}

/// Like [`drive`], with `"stream": true`: each 200 is read to its end and
/// counted [`Load::broken`] unless it is the whole answer.
pub async fn drive_streams(gw: &Gateway, model: &str, requests: usize, concurrency: usize) -> Load {
    let started = Instant::now();
    let results: Vec<(u16, bool, Duration)> = futures::stream::iter(0..requests)
        .map(|i| async move {
            let sent = Instant::now();
            let prompt = format!("stream {i}");
            let mut req = chat(model, &prompt);
            req["stream"] = serde_json::json!(true);
            let reply = gw.chat(&req).await;
            let broken = reply.status == 200 && !whole_stream(&reply.text, &prompt);
            (reply.status, broken, sent.elapsed())
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut load = Load {
        elapsed: started.elapsed(),
        ..Load::default()
    };
    for (status, broken, latency) in results {
        *load.statuses.entry(status).or_default() += 1;
        load.broken += u64::from(broken);
        load.latencies.push(latency);
    }
    load.latencies.sort();
    load
}

/// Sends `requests` one-message completions for `model` to `gw`, at most
/// `concurrency` at a time, each with a distinct prompt (so no answer comes
/// from a cache), and reads every answer whole.
pub async fn drive(gw: &Gateway, model: &str, requests: usize, concurrency: usize) -> Load {
    let started = Instant::now();
    let results: Vec<(u16, Duration)> = futures::stream::iter(0..requests)
        .map(|i| async move {
            let sent = Instant::now();
            let reply = gw.chat(&chat(model, &format!("request {i}"))).await;
            (reply.status, sent.elapsed())
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut load = Load {
        elapsed: started.elapsed(),
        ..Load::default()
    };
    for (status, latency) in results {
        *load.statuses.entry(status).or_default() += 1;
        load.latencies.push(latency);
    }
    load.latencies.sort();
    load
}
