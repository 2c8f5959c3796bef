//! The gateway end to end: real HTTP on 127.0.0.1, the real first-party
//! plugins, a real sled store, simulated upstreams (in process, and the
//! simulator's HTTP server behind an `openai` upstream).

mod support;

use agentrouter::upstream::sim::SimSettings;
use serde_json::{Value, json};
use std::path::Path;
use support::{Gateway, SimServer, chat, content, quickstart, sse_text};
use tokio::sync::oneshot;

#[tokio::test]
async fn completes_through_a_model_with_an_openai_shaped_response() {
    let gw = Gateway::start(&quickstart("")).await;
    let (status, body) = gw
        .post("/v1/chat/completions", &chat("usf-mini", "What is WASI?"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().unwrap() > 0);
    assert_eq!(body["model"], "usf-mini");
    assert_eq!(body["choices"][0]["index"], 0);
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(content(&body), "[usf-mini] You said: What is WASI?");
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    gw.stop().await;
}

#[tokio::test]
async fn manager_agent_delegates_to_both_workers_visible_in_steps() {
    let gw = Gateway::start(&quickstart("")).await;
    let (status, body) = gw
        .post(
            "/v1/agents/manager/invoke",
            &json!({"input": "Explain WASI briefly"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["agent"], "manager");
    let output = body["output"].as_str().unwrap();
    assert!(output.starts_with("Summary of 2 results"), "{output}");
    let steps = body["steps"].as_array().unwrap();
    let agents: Vec<&str> = steps
        .iter()
        .filter(|s| s["kind"] == "agent")
        .map(|s| s["target"].as_str().unwrap())
        .collect();
    for expected in ["researcher", "writer", "manager"] {
        assert!(agents.contains(&expected), "{expected} in {agents:?}");
    }
    // The workers were called by the manager, one level down.
    for step in steps
        .iter()
        .filter(|s| s["kind"] == "agent" && s["target"] != "manager")
    {
        assert_eq!(step["caller"], "manager", "{step}");
        assert_eq!(step["depth"], 1, "{step}");
    }
    let completions = steps.iter().filter(|s| s["kind"] == "completion").count();
    assert_eq!(
        completions, 4,
        "manager twice, each worker once: {steps:#?}"
    );
    let summed: u64 = steps
        .iter()
        .filter(|s| s["kind"] == "completion")
        .map(|s| s["usage"]["prompt_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(body["usage"]["prompt_tokens"].as_u64().unwrap(), summed);

    // The same through the chat API.
    let (status, body) = gw
        .post(
            "/v1/chat/completions",
            &chat("agent:manager", "Explain WASI briefly"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "agent:manager");
    assert!(content(&body).starts_with("Summary of 2 results"));
    gw.stop().await;
}

/// Streams `body`, checks it is served as an event stream ending with
/// `[DONE]`, and returns the chunks with the text they add up to.
async fn stream_chunks(gw: &Gateway, body: &Value) -> (Vec<Value>, String) {
    let reply = gw.chat(body).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    sse_text(&reply.text)
}

#[tokio::test]
async fn streams_models_and_agents_as_chunks_ending_with_done() {
    let gw = Gateway::start(&quickstart("")).await;
    for model in ["usf-mini", "agent:researcher"] {
        let mut req = chat(model, "Tell me about components in one line");
        let (_, whole) = gw.post("/v1/chat/completions", &req).await;
        req["stream"] = json!(true);
        req["stream_options"] = json!({"include_usage": true});
        let (chunks, text) = stream_chunks(&gw, &req).await;
        assert!(chunks.len() >= 3, "{chunks:?}");
        assert!(
            chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"])
        );
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(text, content(&whole), "{model}");
        // As OpenAI streams it: the finish chunk, then (asked for) a
        // usage chunk with no choices.
        let [.., finish, last] = &chunks[..] else {
            panic!("{chunks:?}")
        };
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        assert!(finish.get("usage").is_none(), "{finish}");
        assert_eq!(last["choices"], json!([]));
        assert!(last["usage"]["total_tokens"].as_u64().unwrap() > 0);
    }
    gw.stop().await;
}

#[tokio::test]
async fn streams_live_from_the_upstream_when_no_output_validator_needs_the_whole_answer() {
    // No validators at all: the stream comes straight from the upstream. The
    // first upstream refuses before sending anything, so the gateway falls
    // back to the second before the first byte reaches the client.
    let gw = Gateway::start(
        r#"
[server]
listen = "127.0.0.1:0"

[upstreams.a-broken]
kind = "simulated"
model = "shared"
[upstreams.a-broken.simulator]
fail_rate = 1.0

[upstreams.b-healthy]
kind = "simulated"
model = "shared"
"#,
    )
    .await;
    let mut req = chat("shared", "stream this answer to me word by word please");
    let (status, whole) = gw.post("/v1/chat/completions", &req).await;
    assert_eq!(status, 200, "{whole}");
    req["stream"] = json!(true);
    let (chunks, text) = stream_chunks(&gw, &req).await;
    assert_eq!(text, content(&whole));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.len() > 3, "several text pieces: {chunks:?}");
    gw.stop().await;
}

#[tokio::test]
async fn lists_upstream_models_and_agents() {
    let gw = Gateway::start(&quickstart("")).await;
    let (status, body) = gw.get("/v1/models").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "usf-mini",
            "usf-mini-x1",
            "agent:manager",
            "agent:researcher",
            "agent:writer"
        ]
    );
    gw.stop().await;
}

fn assert_error(status: u16, body: &Value, expected: u16, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        !body["error"]["message"].as_str().unwrap().is_empty(),
        "{body}"
    );
    assert!(body["error"]["type"].is_string(), "{body}");
}

#[tokio::test]
async fn client_mistakes_get_openai_errors_with_the_right_status() {
    let gw = Gateway::start(&quickstart("")).await;
    let reply = gw
        .send(
            gw.client
                .post(gw.url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    assert_error(reply.status, &reply.json(), 400, "invalid_request");

    let (status, body) = gw
        .post("/v1/chat/completions", &json!({"model": "usf-mini"}))
        .await;
    assert_error(status, &body, 400, "invalid_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages"),
        "{body}"
    );
    let (status, body) = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "usf-mini", "messages": []}),
        )
        .await;
    assert_error(status, &body, 400, "invalid_request");
    let (status, body) = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "usf-mini", "messages": [{"role": "robot", "content": "x"}]}),
        )
        .await;
    assert_error(status, &body, 400, "invalid_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages[0].role"),
        "{body}"
    );

    let (status, body) = gw.post("/v1/chat/completions", &chat("gpt-9", "hi")).await;
    assert_error(status, &body, 404, "model_not_found");
    let (status, body) = gw
        .post("/v1/chat/completions", &chat("agent:nobody", "hi"))
        .await;
    assert_error(status, &body, 404, "agent_not_found");
    let (status, body) = gw
        .post("/v1/agents/nobody/invoke", &json!({"input": "hi"}))
        .await;
    assert_error(status, &body, 404, "agent_not_found");
    let (status, body) = gw
        .post("/v1/agents/manager/invoke", &json!({"input": 42}))
        .await;
    assert_error(status, &body, 400, "invalid_request");

    let huge = "x".repeat(2 * 1024 * 1024);
    let (status, body) = gw
        .post("/v1/chat/completions", &chat("usf-mini", &huge))
        .await;
    assert_error(status, &body, 413, "request_too_large");

    // Unknown request fields are tolerated, as OpenAI does.
    let mut req = chat("usf-mini", "hi");
    req["logprobs"] = json!(false);
    req["frequency_penalty"] = json!(0.5);
    assert_eq!(gw.post("/v1/chat/completions", &req).await.0, 200);
    gw.stop().await;
}

#[tokio::test]
async fn validators_reject_rewrite_and_redact() {
    let gw = Gateway::start(&quickstart("")).await;
    let (status, body) = gw
        .post(
            "/v1/chat/completions",
            &chat("usf-mini", "please DROP TABLE users"),
        )
        .await;
    assert_error(status, &body, 422, "content_rejected");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("input-guard") && message.contains("drop table"),
        "{message}"
    );

    let (status, body) = gw
        .post(
            "/v1/chat/completions",
            &chat("usf-mini", "<b>bold</b> statement"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content(&body), "[usf-mini] You said: bold statement");

    let (status, body) = gw
        .post(
            "/v1/chat/completions",
            &chat(
                "usf-mini",
                "I am jane.doe@example.com, card 4111 1111 1111 1111",
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let text = content(&body);
    assert!(
        text.contains("[REDACTED_EMAIL]") && text.contains("[REDACTED_CARD]"),
        "{text}"
    );
    assert!(
        !text.contains("jane.doe") && !text.contains("4111"),
        "{text}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn upstream_failures_and_timeouts_map_to_502_and_504() {
    let gw = Gateway::start(&quickstart(
        r#"
[upstreams.broken]
kind = "simulated"
model = "broken-model"
[upstreams.broken.simulator]
fail_rate = 1.0

[upstreams.slow]
kind = "simulated"
model = "slow-model"
timeout_ms = 100
[upstreams.slow.simulator]
latency_ms = 5000
"#,
    ))
    .await;
    let (status, body) = gw
        .post("/v1/chat/completions", &chat("broken-model", "hi"))
        .await;
    assert_error(status, &body, 502, "upstream_failed");
    let (status, body) = gw
        .post("/v1/chat/completions", &chat("slow-model", "hi"))
        .await;
    assert_error(status, &body, 504, "timeout");
    gw.stop().await;
}

#[tokio::test]
async fn openai_upstreams_work_against_the_simulator_over_http() {
    let remote = SimServer::start(SimSettings::default(), &["remote-model"]).await;
    let gw = Gateway::start(&quickstart(&remote.upstream(
        "remote",
        "remote-model",
        "api_key = \"${env:PATH}\"",
    )))
    .await;
    let (status, body) = gw
        .post(
            "/v1/chat/completions",
            &chat("remote-model", "over the wire"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content(&body), "[remote-model] You said: over the wire");
    gw.stop().await;
    remote.stop().await;
}

#[tokio::test]
async fn a_failing_upstream_opens_its_breaker_and_stops_receiving_traffic() {
    let sim = SimServer::start(
        SimSettings {
            fail_rate: 1.0,
            ..Default::default()
        },
        &["flaky-model"],
    )
    .await;
    let upstream = sim.upstream(
        "flaky",
        "flaky-model",
        "[upstreams.flaky.breaker]\nfailure_threshold = 2\nrecovery_timeout_s = 3600",
    );
    let gw = Gateway::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

{upstream}
[plugins.standard-recovery]
source = "builtin:standard-recovery"

[pipeline]
recovery = "standard-recovery"
"#
    ))
    .await;
    assert_eq!(gw.get("/health/ready").await.0, 200);
    // Attempt 1 fails, the recovery plugin retries, attempt 2 fails and opens
    // the breaker, attempt 3 is refused by the host without reaching it.
    let (status, body) = gw
        .post("/v1/chat/completions", &chat("flaky-model", "hi"))
        .await;
    assert_error(status, &body, 502, "upstream_failed");
    assert_eq!(sim.requests(), 2);
    // While open, requests fail fast and the upstream sees none of them.
    for _ in 0..3 {
        let (status, body) = gw
            .post("/v1/chat/completions", &chat("flaky-model", "hi"))
            .await;
        assert_error(status, &body, 502, "upstream_failed");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("circuit open"),
            "{body}"
        );
    }
    assert_eq!(sim.requests(), 2);
    // Its only upstream is open: the replica is not ready.
    let (status, body) = gw.get("/health/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["upstreams"]["status"], "fail", "{body}");
    assert!(
        body["checks"]["upstreams"]["detail"]
            .as_str()
            .unwrap()
            .contains("flaky"),
        "{body}"
    );
    gw.stop().await;
    sim.stop().await;
}

#[tokio::test]
async fn readiness_reports_checks_and_liveness_answers() {
    let gw = Gateway::start(&quickstart("")).await;
    let (status, body) = gw.get("/health/live").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    let (status, body) = gw.get("/health/ready").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    for check in ["store", "plugins", "upstreams", "config"] {
        assert_eq!(body["checks"][check]["status"], "ok", "{body}");
    }
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    gw.stop().await;
}

/// An upstream that holds each request until told to answer, so a test can
/// act while a request is provably in flight.
async fn held_upstream() -> (
    std::net::SocketAddr,
    oneshot::Receiver<()>,
    oneshot::Sender<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (arrived_tx, arrived) = oneshot::channel();
    let (release, released) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // Read the headers and the body announced by content-length.
        loop {
            let n = socket.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    break;
                }
            }
        }
        let _ = arrived_tx.send(());
        let _ = released.await;
        let body = json!({"id": "held", "object": "chat.completion", "created": 1, "model": "held-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "finished"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        .to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(response.as_bytes()).await.unwrap();
    });
    (addr, arrived, release)
}

#[tokio::test]
async fn shutdown_finishes_the_in_flight_request() {
    let (addr, arrived, release) = held_upstream().await;
    let mut gw = Gateway::start(&quickstart(&format!(
        r#"
[upstreams.held]
kind = "openai"
model = "held-model"
base_url = "http://{addr}/v1"
"#
    )))
    .await;
    let client = gw.client.clone();
    let url = gw.url("/v1/chat/completions");
    let in_flight = tokio::spawn(async move {
        client
            .post(url)
            .json(&chat("held-model", "finish me"))
            .send()
            .await
    });
    arrived.await.unwrap();
    // Shutdown begins while the request waits on the upstream...
    gw.begin_shutdown();
    while !gw.draining.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::task::yield_now().await;
    }
    // ...and the upstream answers only afterwards.
    release.send(()).unwrap();
    let resp = in_flight
        .await
        .unwrap()
        .expect("the in-flight request was answered");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(content(&body), "finished");
    gw.stop().await;
}

#[test]
fn check_refuses_a_bad_config_naming_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"[upstreams.mini]
kind = "simulated"
model = "usf-mini"

[plugins.guard]
source = "builtin:input-guard"

[pipeline]
router = "guard"
"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentrouter"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pipeline.router") && stderr.contains(":9"),
        "{stderr}"
    );

    // `check` warms the plugin cache next to the config, so check a copy.
    let good = dir.path().join("quickstart.toml");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart.toml"),
        &good,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentrouter"))
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
