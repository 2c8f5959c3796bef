//! [`Gateway`]: the real app serving on 127.0.0.1, and the requests tests
//! send it.
//!
//! Two levels of request, so a test reads at the level it asserts on:
//! [`Gateway::get`] and [`Gateway::post`] give the status and the JSON body;
//! [`Gateway::chat`], [`Gateway::chat_as`] and [`Gateway::send`] give the
//! whole [`Reply`] (status, headers, text) for headers and streams. Admin
//! requests carry [`ADMIN_TOKEN`]; [`Gateway::raw`] writes bytes on a bare
//! TCP connection for the hardening tests.

use agentrouter::app::App;
use agentrouter::auth::Auth;
use agentrouter::config::Config;
use agentrouter::rollout::watch::Watch;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The admin token the `admin_*` requests carry; a config enables the admin
/// API with `[admin]\ntoken = "{ADMIN_TOKEN}"`.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A running gateway. Dropping it ends the server at once; [`Gateway::stop`]
/// drains it and waits until its store is closed (so a test can start
/// another on the same directory).
pub struct Gateway {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Where it listens, for raw connections.
    pub addr: SocketAddr,
    /// A client for it.
    pub client: reqwest::Client,
    /// The API key registry: create, rotate and revoke keys while serving.
    pub auth: Arc<Auth>,
    /// Set once shutdown begins.
    pub draining: Arc<AtomicBool>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<JoinHandle<std::io::Result<()>>>,
    _watch: Option<Watch>,
    _dir: Option<tempfile::TempDir>,
}

/// A response, read whole.
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body as text.
    pub text: String,
}

impl Reply {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// A header's value, when present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `error.code` of an OpenAI-style error body (empty when none).
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Gateway {
    /// Serves `toml` (parsed as `test.toml`) with its store and any relative
    /// paths in a fresh temporary directory that lives as long as it does.
    pub async fn start(toml: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(toml, "test.toml", dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let mut gw = Self::serve(&config, false).await;
        gw._dir = Some(dir);
        gw
    }

    /// Writes `toml` to `<dir>/gateway.toml` and serves that file: its store
    /// and relative paths are in `dir`, which the test owns, so a second
    /// gateway started in `dir` finds the first one's store, and
    /// `POST /admin/reload` re-reads the file.
    pub async fn start_in(dir: &Path, toml: &str) -> Gateway {
        Self::serve(&Self::write_config(dir, toml), false).await
    }

    /// Like [`Gateway::start_in`], also reloading file plugins when their
    /// `.wasm` changes (`serve --watch`).
    pub async fn start_watching(dir: &Path, toml: &str) -> Gateway {
        Self::serve(&Self::write_config(dir, toml), true).await
    }

    fn write_config(dir: &Path, toml: &str) -> Config {
        let path = dir.join("gateway.toml");
        std::fs::write(&path, toml).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Config::from_file(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    async fn serve(config: &Config, watch: bool) -> Gateway {
        let app = App::build(config).await.unwrap_or_else(|e| panic!("{e}"));
        let watch = watch.then(|| app.watch().unwrap_or_else(|e| panic!("watch: {e}")));
        let auth = app.auth().clone();
        let draining = app.draining();
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
            draining,
            stop: Some(stop),
            done: Some(done),
            _watch: watch,
            _dir: None,
        }
    }

    /// The URL of `path` on this gateway.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request built on [`Gateway::client`] and reads the reply.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let resp = request.send().await.unwrap();
        Reply {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            text: resp.text().await.unwrap(),
        }
    }

    /// GETs `path`: the status and the JSON body (`Null` when not JSON).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let reply = self.send(self.client.get(self.url(path))).await;
        (reply.status, reply.json())
    }

    /// POSTs `body` as JSON: the status and the JSON body (`Null` when not
    /// JSON).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let reply = self.send(self.client.post(self.url(path)).json(body)).await;
        (reply.status, reply.json())
    }

    /// A chat completion without an API key, read whole.
    pub async fn chat(&self, body: &Value) -> Reply {
        self.send(
            self.client
                .post(self.url("/v1/chat/completions"))
                .json(body),
        )
        .await
    }

    /// A chat completion with API key `key` as bearer token, read whole.
    pub async fn chat_as(&self, key: &str, body: &Value) -> Reply {
        self.send(
            self.client
                .post(self.url("/v1/chat/completions"))
                .bearer_auth(key)
                .json(body),
        )
        .await
    }

    /// GETs an admin path with [`ADMIN_TOKEN`]: the status and JSON body.
    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        self.admin(self.client.get(self.url(path))).await
    }

    /// PUTs `wasm` to an admin path with [`ADMIN_TOKEN`].
    pub async fn admin_put(&self, path: &str, wasm: Vec<u8>) -> (u16, Value) {
        self.admin(self.client.put(self.url(path)).body(wasm)).await
    }

    /// POSTs `body` (JSON text) to an admin path with [`ADMIN_TOKEN`].
    pub async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.admin(self.client.post(self.url(path)).body(body.to_string()))
            .await
    }

    async fn admin(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let reply = self.send(request.bearer_auth(ADMIN_TOKEN)).await;
        (reply.status, reply.json())
    }

    /// The `/metrics` exposition (checked to be served).
    pub async fn metrics(&self) -> String {
        let reply = self.send(self.client.get(self.url("/metrics"))).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.text
    }

    /// Writes `bytes` on a fresh TCP connection and returns whatever the
    /// server answers before it closes the connection (or within 5 s).
    pub async fn raw(&self, bytes: &[u8]) -> String {
        let mut socket = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        socket.write_all(bytes).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).to_string()
    }

    /// Sends the shutdown signal without waiting: draining begins.
    pub fn begin_shutdown(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
    }

    /// Shuts down and waits until the drain is over and the store closed.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        if let Some(done) = self.done.take() {
            done.await.unwrap().unwrap();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // Not stopped (a test that failed, or one that ends mid-drain):
        // end the server rather than leave it serving.
        if let Some(done) = self.done.take() {
            done.abort();
        }
    }
}
