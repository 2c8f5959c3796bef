//! [`Recorder`]: an OpenAI-compatible upstream on 127.0.0.1 that records
//! exactly what it receives and answers what the test scripted — a JSON
//! body with any status, or server-sent events — so a test can say which
//! bytes reached the provider and what came back from it.
//!
//! Tests script it in Rust ([`Recorder::reply`], [`Recorder::requests`]);
//! the OpenAI SDK suite (`tests/openai_sdk/`) does the same over HTTP:
//! `POST /control/replies` queues a reply (a [`Canned`] as JSON),
//! `GET /control/requests` lists what `/v1/chat/completions` received,
//! `POST /control/reset` forgets both. With nothing queued it answers a
//! plain completion (or its stream), so a gateway's own calls succeed.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One answer the recorder gives, in the order queued.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Canned {
    /// A JSON body with this status (an answer or an error).
    Json {
        /// HTTP status.
        status: u16,
        /// The body.
        body: Value,
    },
    /// A 200 event stream: each payload as one `data:` event, then
    /// `data: [DONE]`.
    Sse {
        /// The chunk payloads.
        chunks: Vec<Value>,
    },
}

impl Canned {
    /// A 200 with `body`.
    pub fn ok(body: Value) -> Canned {
        Canned::Json { status: 200, body }
    }

    /// An error answer: `status` with an OpenAI-style body.
    pub fn error(status: u16, message: &str, code: &str) -> Canned {
        Canned::Json {
            status,
            body: json!({"error": {"message": message, "type": "invalid_request_error",
                "param": null, "code": code}}),
        }
    }
}

/// What one `POST /v1/chat/completions` carried.
#[derive(Clone, Debug, Serialize)]
pub struct Recorded {
    /// Header names (lower case) and values.
    pub headers: BTreeMap<String, String>,
    /// The body, parsed (`Null` when it was not JSON).
    pub body: Value,
    /// The body as received.
    #[serde(skip)]
    pub raw: Bytes,
}

#[derive(Default)]
struct Tape {
    requests: Mutex<Vec<Recorded>>,
    replies: Mutex<VecDeque<Canned>>,
}

/// The recording upstream. It stops when dropped.
pub struct Recorder {
    /// Base URL for an `openai` upstream, ending in `/v1`.
    pub base_url: String,
    /// Where the control routes are (`http://127.0.0.1:<port>`).
    pub root: String,
    tape: Arc<Tape>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<JoinHandle<std::io::Result<()>>>,
}

impl Recorder {
    /// Serves on an ephemeral port.
    pub async fn start() -> Recorder {
        let tape = Arc::new(Tape::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/control/replies", post(queue))
            .route("/control/requests", get(requests))
            .route("/control/reset", post(reset))
            .with_state(tape.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Recorder {
            base_url: format!("http://{addr}/v1"),
            root: format!("http://{addr}"),
            tape,
            stop: Some(stop),
            done: Some(done),
        }
    }

    /// Queues the answer to the next request not yet answered.
    pub fn reply(&self, canned: Canned) {
        self.tape.replies.lock().unwrap().push_back(canned);
    }

    /// Every chat request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.tape.requests.lock().unwrap().clone()
    }

    /// The body of the only request received so far (panics otherwise).
    pub fn only_body(&self) -> Value {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "{requests:?}");
        requests[0].body.clone()
    }

    /// A gateway config serving `model` from this recorder as upstream
    /// `rec`, at USD 1 per 1k tokens each way; `extra` is appended.
    pub fn config(&self, model: &str, extra: &str) -> String {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"

[store]
path = "data"

[upstreams.rec]
kind = "openai"
model = "{model}"
base_url = "{}"
input_cost_per_1k = 1.0
output_cost_per_1k = 1.0

{extra}
"#,
            self.base_url
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

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
    }
}

async fn chat(State(tape): State<Arc<Tape>>, headers: HeaderMap, raw: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let headers = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let canned = tape
        .replies
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| plain(&body));
    tape.requests
        .lock()
        .unwrap()
        .push(Recorded { headers, body, raw });
    render(canned)
}

/// The answer when nothing was queued: `recorded` (streamed when asked).
fn plain(req: &Value) -> Canned {
    let model = req["model"].clone();
    let usage = json!({"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4});
    if req["stream"] == true {
        return Canned::Sse {
            chunks: vec![
                json!({"id": "chatcmpl-rec", "object": "chat.completion.chunk", "created": 1, "model": model,
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": "recorded"}, "finish_reason": null}]}),
                json!({"id": "chatcmpl-rec", "object": "chat.completion.chunk", "created": 1, "model": model,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
                json!({"id": "chatcmpl-rec", "object": "chat.completion.chunk", "created": 1, "model": model,
                    "choices": [], "usage": usage}),
            ],
        };
    }
    Canned::ok(
        json!({"id": "chatcmpl-rec", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "recorded"}, "finish_reason": "stop"}],
        "usage": usage}),
    )
}

fn render(canned: Canned) -> Response {
    match canned {
        Canned::Json { status, body } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(body),
        )
            .into_response(),
        Canned::Sse { chunks } => {
            let mut text: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
            text.push_str("data: [DONE]\n\n");
            (
                [(header::CONTENT_TYPE, "text/event-stream")],
                Body::from(text),
            )
                .into_response()
        }
    }
}

async fn queue(State(tape): State<Arc<Tape>>, raw: Bytes) -> Response {
    let canned: Vec<Canned> = match serde_json::from_slice::<Value>(&raw) {
        Ok(Value::Array(list)) => match list.into_iter().map(serde_json::from_value).collect() {
            Ok(list) => list,
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        },
        Ok(one) => match serde_json::from_value(one) {
            Ok(one) => vec![one],
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        },
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    tape.replies.lock().unwrap().extend(canned);
    StatusCode::NO_CONTENT.into_response()
}

async fn requests(State(tape): State<Arc<Tape>>) -> Response {
    axum::Json(tape.requests.lock().unwrap().clone()).into_response()
}

async fn reset(State(tape): State<Arc<Tape>>) -> Response {
    tape.requests.lock().unwrap().clear();
    tape.replies.lock().unwrap().clear();
    StatusCode::NO_CONTENT.into_response()
}
