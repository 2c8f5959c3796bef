//! [`SimServer`]: the simulator behind its OpenAI-compatible HTTP server on
//! 127.0.0.1, with the config snippets that point a gateway at it.

use agentrouter::upstream::sim::{SimRecord, SimSettings, Simulator};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Simulator settings without faults or jitter: every answer takes exactly
/// `latency_ms`, so request counts (not timings) are what a test checks.
pub fn steady(latency_ms: u64) -> SimSettings {
    SimSettings {
        latency_ms,
        jitter_ms: 0,
        ..Default::default()
    }
}

/// A simulated provider over HTTP. It stops when dropped.
pub struct SimServer {
    /// Base URL for an `openai` upstream, ending in `/v1`.
    pub base_url: String,
    sim: Arc<Simulator>,
    models: Vec<String>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<JoinHandle<std::io::Result<()>>>,
}

impl SimServer {
    /// Serves `models` with `settings` on an ephemeral port.
    pub async fn start(settings: SimSettings, models: &[&str]) -> SimServer {
        let sim = Arc::new(Simulator::new(settings));
        let models: Vec<String> = models.iter().map(|m| m.to_string()).collect();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(agentrouter::upstream::sim_server::serve(
            listener,
            sim.clone(),
            models.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        SimServer {
            base_url: format!("http://{addr}/v1"),
            sim,
            models,
            stop: Some(stop),
            done: Some(done),
        }
    }

    /// Requests it has decided so far.
    pub fn requests(&self) -> u64 {
        self.sim.requests()
    }

    /// What it decided, and when, request by request.
    pub fn log(&self) -> Vec<SimRecord> {
        self.sim.log()
    }

    /// Changes its behaviour for the requests that follow.
    pub fn set_settings(&self, settings: SimSettings) {
        self.sim.set_settings(settings);
    }

    /// An `[upstreams.<name>]` table serving `model` from this server;
    /// `extra` is appended inside the table.
    pub fn upstream(&self, name: &str, model: &str, extra: &str) -> String {
        format!(
            "[upstreams.{name}]\nkind = \"openai\"\nmodel = \"{model}\"\nbase_url = \"{}\"\n{extra}\n",
            self.base_url
        )
    }

    /// A whole gateway config: an ephemeral port, the store in `data` (under
    /// the gateway's directory), and this server as upstream `sim` for its
    /// first model at USD 1 per 1k tokens each way; `extra` is appended.
    pub fn config(&self, extra: &str) -> String {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"

[store]
path = "data"

[upstreams.sim]
kind = "openai"
model = "{}"
base_url = "{}"
input_cost_per_1k = 1.0
output_cost_per_1k = 1.0

{extra}
"#,
            self.models[0], self.base_url
        )
    }

    /// Stops it and checks that its server shut down cleanly.
    pub async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        if let Some(done) = self.done.take() {
            done.await.unwrap().unwrap();
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
    }
}
