//! Shared harness of the end-to-end tests: a gateway on 127.0.0.1 with an
//! ephemeral port, and the simulator served over OpenAI-compatible HTTP so
//! that upstream faults cross a real network boundary.
#![allow(dead_code)]

use agentrouter::app::App;
use agentrouter::config::Config;
use agentrouter::upstream::sim::{SimSettings, Simulator};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::oneshot;

/// A running gateway and the means to stop it.
pub struct Gateway {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Set once shutdown begins.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// A client for it.
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts a gateway on `toml` (its store in a fresh temporary directory).
    pub async fn start(toml: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(toml, "test.toml", dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let app = App::build(&config).await.unwrap_or_else(|e| panic!("{e}"));
        let draining = app.draining();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(app.serve(listener, async {
            let _ = stopped.await;
        }));
        Gateway {
            base,
            draining,
            client: reqwest::Client::new(),
            stop: Some(stop),
            done,
            _dir: dir,
        }
    }

    /// POSTs JSON; the status and the JSON body (`Null` when not JSON).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self.post_raw(path, body).await;
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// POSTs JSON and hands back the response as it is.
    pub async fn post_raw(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// GETs; the status and the JSON body (`Null` when not JSON).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The Prometheus exposition.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Sends the shutdown signal without waiting: draining begins.
    pub fn begin_shutdown(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
    }

    /// Stops it and waits for the drain to finish.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        self.done.await.unwrap().unwrap();
    }
}

/// The simulator behind its HTTP server.
pub struct SimServer {
    /// The simulator: count requests, read its log, change its faults.
    pub sim: Arc<Simulator>,
    /// Base URL for an `openai` upstream, ending in `/v1`.
    pub base_url: String,
    stop: Option<oneshot::Sender<()>>,
}

impl SimServer {
    /// Serves `models` with `settings` on an ephemeral port.
    pub async fn start(settings: SimSettings, models: &[&str]) -> SimServer {
        let sim = Arc::new(Simulator::new(settings));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(agentrouter::upstream::sim_server::serve(
            listener,
            sim.clone(),
            models.iter().map(|m| m.to_string()).collect(),
            async {
                let _ = stopped.await;
            },
        ));
        SimServer {
            sim,
            base_url: format!("http://{addr}/v1"),
            stop: Some(stop),
        }
    }

    /// Requests it has decided so far.
    pub fn requests(&self) -> u64 {
        self.sim.requests()
    }

    /// An `[upstreams.<name>]` table pointing at this server; `extra` is
    /// appended inside the table.
    pub fn upstream(&self, name: &str, model: &str, extra: &str) -> String {
        format!(
            "[upstreams.{name}]\nkind = \"openai\"\nmodel = \"{model}\"\nbase_url = \"{}\"\n{extra}\n",
            self.base_url
        )
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
    }
}

/// A one-message chat request.
pub fn chat(model: &str, content: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": content}]})
}

/// The answer text of a chat completion.
pub fn content(body: &Value) -> &str {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content in {body}"))
}

/// The value of a series in a Prometheus exposition (0 when absent).
pub fn series(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(name_and_labels)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map_or(0.0, |v| v.trim().parse().unwrap_or(f64::NAN))
}
