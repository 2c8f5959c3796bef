//! [`drive`]: many chat completions at a fixed concurrency, and what came
//! back ([`Load`]): status counts, and latencies for the benches (tests
//! assert on the counts only).

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

    /// Share of requests answered 200.
    pub fn success(&self) -> f64 {
        self.count(200) as f64 / self.total().max(1) as f64
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
            .collect::<Vec<_>>()
            .join(", ")
    }
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
