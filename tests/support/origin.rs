//! [`Origin`]: an HTTP API on 127.0.0.1 that a plugin's outbound requests
//! reach — what a third-party agent's search API would be. It records the
//! headers of every request, so a test can say what the host sent on the
//! plugin's behalf (an injected credential) without the plugin seeing it.
//!
//! Routes: `/api/ok` answers `ok`; `/api/big` answers 64 KiB;
//! `/api/redirect` answers 302 to the URL set with [`Origin::redirect_to`].

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<(String, BTreeMap<String, String>)>>,
    redirect: Mutex<String>,
}

/// A running origin; it serves until the test ends.
pub struct Origin {
    /// Its port on 127.0.0.1.
    pub port: u16,
    seen: Arc<Seen>,
}

impl Origin {
    /// Starts an origin on an ephemeral port.
    pub async fn start() -> Origin {
        let seen = Arc::new(Seen::default());
        let record = |seen: Arc<Seen>, path: &'static str| {
            move |headers: HeaderMap| {
                let seen = seen.clone();
                async move {
                    let headers = headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    seen.requests
                        .lock()
                        .unwrap()
                        .push((path.to_string(), headers));
                    match path {
                        "/api/big" => (StatusCode::OK, "x".repeat(64 * 1024)).into_response(),
                        "/api/redirect" => {
                            let to = seen.redirect.lock().unwrap().clone();
                            (StatusCode::FOUND, [(header::LOCATION, to)], "").into_response()
                        }
                        _ => (StatusCode::OK, "ok").into_response(),
                    }
                }
            }
        };
        let app = axum::Router::new()
            .route(
                "/api/ok",
                axum::routing::get(record(seen.clone(), "/api/ok")),
            )
            .route(
                "/api/big",
                axum::routing::get(record(seen.clone(), "/api/big")),
            )
            .route(
                "/api/redirect",
                axum::routing::get(record(seen.clone(), "/api/redirect")),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Origin { port, seen }
    }

    /// Where `/api/redirect` sends clients.
    pub fn redirect_to(&self, url: &str) {
        *self.seen.redirect.lock().unwrap() = url.to_string();
    }

    /// Path and headers (names lower case) of every request, in order.
    pub fn requests(&self) -> Vec<(String, BTreeMap<String, String>)> {
        self.seen.requests.lock().unwrap().clone()
    }
}
