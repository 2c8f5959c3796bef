//! Shared by the cache and security tests: a gateway on 127.0.0.1 with its
//! store in a directory the test owns (so a test can restart it on the same
//! store), and a simulated upstream behind real HTTP that counts requests.
#![allow(dead_code)]

use agentrouter::app::App;
use agentrouter::auth::Auth;
use agentrouter::config::Config;
use agentrouter::upstream::sim::{SimSettings, Simulator};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::oneshot;

/// A running gateway.
pub struct Gateway {
    pub base: String,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub auth: Arc<Auth>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A response, read whole.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error code of an OpenAI-style error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Gateway {
    /// Starts the gateway `toml` describes, relative paths in `dir`.
    pub async fn start(toml: &str, dir: &Path) -> Gateway {
        let config = Config::parse(toml, "test.toml", dir).unwrap_or_else(|e| panic!("{e}"));
        let app = App::build(&config).await.unwrap_or_else(|e| panic!("{e}"));
        let auth = app.auth().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(app.serve(listener, async {
            let _ = stopped.await;
        }));
        Gateway {
            base: format!("http://{addr}"),
            addr,
            client: reqwest::Client::new(),
            auth,
            stop: Some(stop),
            done,
        }
    }

    /// POSTs `body` to `path` with an optional bearer key.
    pub async fn post_as(&self, key: Option<&str>, path: &str, body: &Value) -> Reply {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(body);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.unwrap();
        Reply {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            text: resp.text().await.unwrap(),
        }
    }

    /// A chat completion without a key.
    pub async fn chat(&self, body: &Value) -> Reply {
        self.post_as(None, "/v1/chat/completions", body).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        Reply {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            text: resp.text().await.unwrap(),
        }
    }

    /// Stops and waits until the gateway (and its store) is closed.
    pub async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        self.done.await.unwrap().unwrap();
    }
}

/// The simulator behind real HTTP, serving model `m`.
pub struct SimUpstream {
    pub sim: Arc<Simulator>,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl SimUpstream {
    pub async fn start(latency_ms: u64) -> SimUpstream {
        let sim = Arc::new(Simulator::new(SimSettings {
            latency_ms,
            jitter_ms: 0,
            ..Default::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(agentrouter::upstream::sim_server::serve(
            listener,
            sim.clone(),
            vec!["m".into()],
            async {
                let _ = stopped.await;
            },
        ));
        SimUpstream {
            sim,
            addr,
            stop: Some(stop),
        }
    }

    /// Requests the upstream received.
    pub fn requests(&self) -> u64 {
        self.sim.requests()
    }

    /// A config with this upstream as model `m` (USD 1 per 1k tokens each
    /// way), store in `data`, and `extra` appended.
    pub fn config(&self, extra: &str) -> String {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"

[store]
path = "data"

[upstreams.sim]
kind = "openai"
model = "m"
base_url = "http://{}/v1"
input_cost_per_1k = 1.0
output_cost_per_1k = 1.0

{extra}
"#,
            self.addr
        )
    }
}

impl Drop for SimUpstream {
    fn drop(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
    }
}

/// A one-message chat request for model `m`.
pub fn chat(content: &str, temperature: Option<f64>) -> Value {
    let mut body = json!({"model": "m", "messages": [{"role": "user", "content": content}]});
    if let Some(t) = temperature {
        body["temperature"] = json!(t);
    }
    body
}

/// The answer text of a completion body.
pub fn content(body: &Value) -> String {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content in {body}"))
        .to_string()
}

/// The `data:` payloads of an SSE body, `[DONE]` excluded, as JSON, and the
/// text they add up to. Panics unless the stream ended with `[DONE]`.
pub fn sse_text(text: &str) -> (Vec<Value>, String) {
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let joined = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    (chunks, joined)
}
