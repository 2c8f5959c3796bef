//! The one harness of the end-to-end tests: a real gateway on 127.0.0.1
//! with an ephemeral port and a real sled store ([`Gateway`]), the simulator
//! behind its OpenAI-compatible HTTP server so upstream faults cross a real
//! network boundary ([`SimServer`]), an upstream that records exactly what
//! it receives and answers what the test scripted ([`Recorder`]), an API
//! that plugins' outbound requests reach ([`Origin`]), and the
//! few readers a test needs to
//! state what it expects: request bodies ([`chat`]), answer text
//! ([`content`]), SSE streams ([`sse_text`]) and Prometheus series
//! ([`series`], [`value`]).
//!
//! ```ignore
//! let up = SimServer::start(steady(0), &["m"]).await;
//! let gw = Gateway::start(&up.config("")).await;
//! let (status, body) = gw.post("/v1/chat/completions", &chat("m", "hi")).await;
//! assert_eq!((status, content(&body)), (200, "[m] You said: hi"));
//! assert_eq!(up.requests(), 1);
//! gw.stop().await;
//! ```
//!
//! Every test binary compiles this module and uses a part of it, hence the
//! `allow`s: what one binary leaves unused another needs.
#![allow(dead_code)]

pub mod batch;
mod gateway;
pub mod load;
pub mod matrix;
mod origin;
mod recorder;
mod redis;
mod sim;
pub mod table;
mod webhook;

#[allow(unused_imports)]
pub use gateway::{ADMIN_TOKEN, Gateway, Reply};
#[allow(unused_imports)]
pub use origin::Origin;
#[allow(unused_imports)]
pub use recorder::{Canned, Recorded, Recorder};
#[allow(unused_imports)]
pub use redis::RedisServer;
#[allow(unused_imports)]
pub use sim::{SimServer, steady};
#[allow(unused_imports)]
pub use webhook::Webhook;

/// The secret of key `alice` in [`two_keys`].
pub const ALICE: &str = "alice-secret-0123456789";
/// The secret of key `bob` in [`two_keys`].
pub const BOB: &str = "bob-secret-0123456789ab";

/// `[auth]` on with two keys, `alice` ([`ALICE`]) and `bob` ([`BOB`]): for
/// tests of what one key may not see of another's.
pub fn two_keys() -> String {
    format!(
        r#"
[auth]
enabled = true

[[auth.keys]]
name = "alice"
secret = "{ALICE}"

[[auth.keys]]
name = "bob"
secret = "{BOB}"
"#
    )
}

use serde_json::{Value, json};

/// The quickstart config (`examples/quickstart.toml`) on an ephemeral port,
/// with `extra` appended: new upstreams, plugins or tables (a table the
/// quickstart already has cannot be given twice).
pub fn quickstart(extra: &str) -> String {
    let text = include_str!("../../examples/quickstart.toml");
    format!(
        "{}\n{extra}\n",
        text.replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"")
    )
}

/// A one-message chat request.
pub fn chat(model: &str, content: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": content}]})
}

/// The answer text of a chat completion body.
pub fn content(body: &Value) -> &str {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content in {body}"))
}

/// The `data:` payloads of an SSE body, `[DONE]` excluded, as JSON, and the
/// text their deltas add up to. Panics unless the stream ended with `[DONE]`.
pub fn sse_text(text: &str) -> (Vec<Value>, String) {
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap_or_else(|err| panic!("{err}: {e}")))
        .collect();
    let joined = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    (chunks, joined)
}

/// The value of one series of a Prometheus exposition, named with all its
/// labels in declaration order (`agentrouter_tokens_total{key="a",...}`),
/// or 0 while it is absent (a counter that has not moved is not exported).
pub fn series(metrics: &str, name_and_labels: &str) -> f64 {
    lookup(metrics, name_and_labels).unwrap_or(0.0)
}

/// Like [`series`], for a series that must be there: panics when absent.
pub fn value(metrics: &str, name_and_labels: &str) -> f64 {
    lookup(metrics, name_and_labels)
        .unwrap_or_else(|| panic!("no series {name_and_labels} in\n{metrics}"))
}

fn lookup(metrics: &str, name_and_labels: &str) -> Option<f64> {
    let mut found = metrics.lines().filter_map(|line| {
        let value = line.strip_prefix(name_and_labels)?.strip_prefix(' ')?;
        Some(
            value
                .trim()
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("{line}: {e}")),
        )
    });
    let value = found.next()?;
    assert!(
        found.next().is_none(),
        "{name_and_labels} appears more than once"
    );
    Some(value)
}

/// Set by `.ci/run`, which installs the toolchains of the examples and
/// scaffolds in other languages and builds the examples first: where it is
/// set, a missing toolchain or component is a failure, not a skip.
pub const TOOLCHAINS_REQUIRED: &str = "AGENTROUTER_TOOLCHAINS_REQUIRED";

/// A test that needs a toolchain (or its output) found it missing: in CI
/// (see [`TOOLCHAINS_REQUIRED`]) that fails the test with `why`; on a
/// developer's machine the test prints a loud skip message and returns.
pub fn skip_or_fail(why: &str) {
    if std::env::var_os(TOOLCHAINS_REQUIRED).is_some() {
        panic!("{why} ({TOOLCHAINS_REQUIRED} is set: .ci/run installed the toolchains)");
    }
    eprintln!("\n*** SKIPPED: {why}\n    (set {TOOLCHAINS_REQUIRED}=1 to make this a failure)\n");
}
