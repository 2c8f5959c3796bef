//! [`Webhook`]: an HTTP receiver on 127.0.0.1 that keeps every JSON body
//! POSTed to it — what an alert webhook receives.

use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running receiver; it serves until the test ends.
pub struct Webhook {
    /// Its URL, for `resilience.alert_webhook`.
    pub url: String,
    received: Arc<Mutex<Vec<Value>>>,
}

impl Webhook {
    /// Starts a receiver on an ephemeral port.
    pub async fn start() -> Webhook {
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push(body);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Webhook { url, received }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (bounded, 2 s) until at least `n` bodies arrived; all of them.
    pub async fn wait_for(&self, n: usize) -> Vec<Value> {
        for _ in 0..100 {
            if self.received.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.received()
    }
}
