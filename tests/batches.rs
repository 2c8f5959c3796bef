//! Batches over real HTTP (`/v1/files`, `/v1/batches`) against the
//! simulator's HTTP server: a batch of 200 completes, one is cancelled, one
//! resumes after a restart without running a finished request twice (the
//! upstream's request count says so), a bad input file is refused naming
//! its line, and another key sees neither the file nor the batch.

mod support;

use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;
use support::{Gateway, Reply, SimServer, steady};

const ALICE: &str = "alice-secret-0123456789";
const BOB: &str = "bob-secret-0123456789ab";
const THRIFTY: &str = "thrifty-secret-0123456789";

/// `up` as upstream `sim`, keys alice and bob, `[batches]` as `batches`.
fn config(up: &SimServer, batches: &str) -> String {
    up.config(&format!(
        r#"
[auth]
enabled = true

[[auth.keys]]
name = "alice"
secret = "{ALICE}"

[[auth.keys]]
name = "bob"
secret = "{BOB}"

[batches]
{batches}
"#
    ))
}

/// A JSONL input file of `n` chat requests for model `m`, `req-<i>` each.
fn chat_lines(n: usize) -> String {
    (0..n)
        .map(|i| {
            json!({"custom_id": format!("req-{i}"), "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "m", "messages": [{"role": "user", "content": format!("question {i}")}]}})
            .to_string()
                + "\n"
        })
        .collect()
}

/// The multipart body of an upload of `text` (built here as any client
/// builds it).
fn multipart(text: &str) -> String {
    format!(
        "--B0undary\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--B0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{text}\r\n--B0undary--\r\n"
    )
}

/// Uploads `text` as a batch file with key `key`.
async fn upload(gw: &Gateway, key: &str, text: &str) -> Reply {
    let body = multipart(text);
    gw.send(
        gw.client
            .post(gw.url("/v1/files"))
            .bearer_auth(key)
            .header("content-type", "multipart/form-data; boundary=B0undary")
            .body(body),
    )
    .await
}

async fn get(gw: &Gateway, key: &str, path: &str) -> Reply {
    gw.send(gw.client.get(gw.url(path)).bearer_auth(key)).await
}

async fn post(gw: &Gateway, key: &str, path: &str, body: &Value) -> Reply {
    gw.send(gw.client.post(gw.url(path)).bearer_auth(key).json(body))
        .await
}

/// Uploads `text` and starts a chat batch of it; the batch object.
async fn start_batch(gw: &Gateway, text: &str) -> Value {
    let file = upload(gw, ALICE, text).await;
    assert_eq!(file.status, 200, "{}", file.text);
    let batch = post(
        gw,
        ALICE,
        "/v1/batches",
        &json!({"input_file_id": file.json()["id"], "endpoint": "/v1/chat/completions",
            "completion_window": "24h", "metadata": {"run": "test"}}),
    )
    .await;
    assert_eq!(batch.status, 200, "{}", batch.text);
    batch.json()
}

/// Polls batch `id` until `done` holds for it (bounded, so a stuck batch
/// fails the test rather than hanging it).
async fn wait_for(gw: &Gateway, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..3000 {
        let reply = get(gw, ALICE, &format!("/v1/batches/{id}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let batch = reply.json();
        if done(&batch) {
            return batch;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("batch {id} never got there");
}

fn status(batch: &Value) -> &str {
    batch["status"].as_str().unwrap_or_default()
}

/// The lines of file `id`.
async fn lines(gw: &Gateway, id: &Value) -> Vec<Value> {
    let id = id.as_str().unwrap_or_else(|| panic!("no file id: {id}"));
    let reply = get(gw, ALICE, &format!("/v1/files/{id}/content")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The custom ids of `lines`, checked to be distinct.
fn custom_ids(lines: &[Value]) -> HashSet<String> {
    let ids: HashSet<String> = lines
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), lines.len(), "a request answered twice");
    ids
}

#[tokio::test]
async fn a_batch_of_200_requests_completes_with_200_output_lines() {
    let up = SimServer::start(steady(0), &["m"]).await;
    let gw = Gateway::start(&config(&up, "max_concurrency = 8")).await;
    let batch = start_batch(&gw, &chat_lines(200)).await;
    assert_eq!(batch["object"], "batch");
    assert_eq!(batch["request_counts"]["total"], 200);
    let id = batch["id"].as_str().unwrap().to_string();
    let done = wait_for(&gw, &id, |b| status(b) == "completed").await;
    assert_eq!(
        done["request_counts"],
        json!({"total": 200, "completed": 200, "failed": 0})
    );
    assert_eq!(done["metadata"], json!({"run": "test"}));
    assert!(done["error_file_id"].is_null(), "{done}");
    let output = lines(&gw, &done["output_file_id"]).await;
    assert_eq!(output.len(), 200);
    assert_eq!(custom_ids(&output).len(), 200);
    for (i, line) in output.iter().enumerate() {
        assert_eq!(line["custom_id"], format!("req-{i}"), "in input order");
        assert_eq!(line["response"]["status_code"], 200);
        assert_eq!(
            line["response"]["body"]["choices"][0]["message"]["content"],
            format!("[m] You said: question {i}")
        );
        assert!(
            line["response"]["request_id"]
                .as_str()
                .unwrap()
                .starts_with("chatcmpl-")
        );
    }
    assert_eq!(up.requests(), 200);
    let metrics = gw.metrics().await;
    assert_eq!(
        support::value(
            &metrics,
            "agentrouter_batch_requests_total{result=\"completed\"}"
        ),
        200.0
    );
    // The list has it, and the output file is alice's.
    let list = get(&gw, ALICE, "/v1/batches?limit=5").await.json();
    assert_eq!(list["data"][0]["id"], id.as_str());
    let file = get(
        &gw,
        ALICE,
        &format!("/v1/files/{}", done["output_file_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(file.json()["purpose"], "batch_output");
    gw.stop().await;
}

#[tokio::test]
async fn failed_requests_go_to_the_error_file_and_cancel_stops_a_batch() {
    // One request names a model that does not exist: a 404 line in the error file.
    let up = SimServer::start(steady(0), &["m"]).await;
    let gw = Gateway::start(&config(&up, "max_concurrency = 1")).await;
    let text = chat_lines(2)
        + &chat_lines(1)
            .replace("req-0", "bad")
            .replace("\"m\"", "\"nope\"");
    let batch = start_batch(&gw, &text).await;
    let id = batch["id"].as_str().unwrap();
    let done = wait_for(&gw, id, |b| status(b) == "completed").await;
    assert_eq!(
        done["request_counts"],
        json!({"total": 3, "completed": 2, "failed": 1})
    );
    let errors = lines(&gw, &done["error_file_id"]).await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["custom_id"], "bad");
    assert_eq!(errors[0]["response"]["status_code"], 404);
    assert_eq!(
        errors[0]["response"]["body"]["error"]["code"],
        "model_not_found"
    );
    let again = post(&gw, ALICE, &format!("/v1/batches/{id}/cancel"), &json!({})).await;
    assert_eq!(again.status, 409, "a finished batch cannot be cancelled");

    // A slow upstream and one request at a time: cancelled after the first.
    up.set_settings(steady(30));
    let before = up.requests();
    let batch = start_batch(&gw, &chat_lines(100)).await;
    let id = batch["id"].as_str().unwrap();
    wait_for(&gw, id, |b| {
        b["request_counts"]["completed"].as_u64() >= Some(1)
    })
    .await;
    let cancelling = post(&gw, ALICE, &format!("/v1/batches/{id}/cancel"), &json!({})).await;
    assert_eq!(cancelling.status, 200, "{}", cancelling.text);
    assert_eq!(status(&cancelling.json()), "cancelling");
    let cancelled = wait_for(&gw, id, |b| status(b) == "cancelled").await;
    let completed = cancelled["request_counts"]["completed"].as_u64().unwrap();
    assert!(completed < 100, "{cancelled}");
    assert!(cancelled["cancelled_at"].is_u64());
    let output = lines(&gw, &cancelled["output_file_id"]).await;
    assert_eq!(output.len() as u64, completed);
    assert_eq!(
        up.requests() - before,
        completed,
        "nothing ran after the cancel"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_batch_resumes_after_a_restart_without_running_a_request_twice() {
    let up = SimServer::start(steady(40), &["m"]).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config(&up, "max_concurrency = 2");
    let gw = Gateway::start_in(dir.path(), &toml).await;
    let batch = start_batch(&gw, &chat_lines(40)).await;
    let id = batch["id"].as_str().unwrap().to_string();
    wait_for(&gw, &id, |b| {
        b["request_counts"]["completed"].as_u64() >= Some(4)
    })
    .await;
    // A graceful stop: the requests under way are finished and recorded.
    gw.stop().await;
    let ran = up.requests();
    assert!(ran < 40, "the batch was stopped midway ({ran} run)");

    let gw = Gateway::start_in(dir.path(), &toml).await;
    let done = wait_for(&gw, &id, |b| status(b) == "completed").await;
    assert_eq!(
        done["request_counts"],
        json!({"total": 40, "completed": 40, "failed": 0})
    );
    assert_eq!(up.requests(), 40, "every request ran exactly once");
    let output = lines(&gw, &done["output_file_id"]).await;
    assert_eq!(custom_ids(&output).len(), 40);
    gw.stop().await;
}

#[tokio::test]
async fn a_bad_input_file_is_refused_with_its_line_and_another_key_sees_nothing() {
    let up = SimServer::start(steady(0), &["m"]).await;
    let gw = Gateway::start(&config(&up, "")).await;
    let bad = chat_lines(2) + "{\"custom_id\": \"x\", \"method\": \"POST\"\n";
    let refused = upload(&gw, ALICE, &bad).await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    let error = &refused.json()["error"];
    assert!(
        error["message"].as_str().unwrap().contains("line 3"),
        "{error}"
    );
    assert_eq!(error["param"], "file");
    let not_batch = upload(&gw, ALICE, &chat_lines(1)).await;
    assert_eq!(not_batch.status, 200);
    let file_id = not_batch.json()["id"].as_str().unwrap().to_string();
    let wrong_endpoint = post(
        &gw,
        ALICE,
        "/v1/batches",
        &json!({"input_file_id": file_id, "endpoint": "/v1/embeddings", "completion_window": "24h"}),
    )
    .await;
    assert_eq!(wrong_endpoint.status, 400);
    assert!(
        wrong_endpoint.text.contains("line 1"),
        "{}",
        wrong_endpoint.text
    );
    for (field, value) in [("completion_window", "1h"), ("endpoint", "/v1/responses")] {
        let mut body = json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions",
            "completion_window": "24h"});
        body[field] = json!(value);
        let reply = post(&gw, ALICE, "/v1/batches", &body).await;
        assert_eq!(
            (reply.status, reply.json()["error"]["param"].as_str()),
            (400, Some(field))
        );
    }

    // Bob can neither read, use nor delete alice's file, nor see her batch.
    let batch = start_batch(&gw, &chat_lines(1)).await;
    let batch_id = batch["id"].as_str().unwrap();
    for path in [
        format!("/v1/files/{file_id}"),
        format!("/v1/files/{file_id}/content"),
        format!("/v1/batches/{batch_id}"),
    ] {
        assert_eq!(get(&gw, BOB, &path).await.status, 404, "{path}");
    }
    let use_it = post(
        &gw,
        BOB,
        "/v1/batches",
        &json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
    )
    .await;
    assert_eq!(use_it.status, 404);
    let cancel = post(
        &gw,
        BOB,
        &format!("/v1/batches/{batch_id}/cancel"),
        &json!({}),
    )
    .await;
    assert_eq!(cancel.status, 404);
    assert_eq!(get(&gw, BOB, "/v1/batches").await.json()["data"], json!([]));
    let delete = gw
        .send(
            gw.client
                .delete(gw.url(&format!("/v1/files/{file_id}")))
                .bearer_auth(BOB),
        )
        .await;
    assert_eq!(delete.status, 404);
    let delete = gw
        .send(
            gw.client
                .delete(gw.url(&format!("/v1/files/{file_id}")))
                .bearer_auth(ALICE),
        )
        .await;
    assert_eq!(
        (delete.status, delete.json()["deleted"].as_bool()),
        (200, Some(true))
    );
    assert_eq!(
        get(&gw, ALICE, &format!("/v1/files/{file_id}"))
            .await
            .status,
        404
    );
    gw.stop().await;
}

#[tokio::test]
async fn batch_requests_share_the_cache_and_are_charged_to_the_creators_budget() {
    let up = SimServer::start(steady(0), &["m"]).await;
    let toml = config(&up, "max_concurrency = 1").replace(
        "[batches]",
        &format!(
            "[[auth.keys]]\nname = \"thrifty\"\nsecret = \"{THRIFTY}\"\ndaily_budget_usd = 0.001\n\n[cache]\n\n[batches]"
        ),
    );
    let gw = Gateway::start(&toml).await;
    // Five deterministic lines asking the same: one upstream call, the
    // rest answered by the cache.
    let same: String = (0..5)
        .map(|i| {
            json!({"custom_id": format!("same-{i}"), "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "m", "temperature": 0,
                    "messages": [{"role": "user", "content": "always the same"}]}})
            .to_string()
                + "\n"
        })
        .collect();
    let batch = start_batch(&gw, &same).await;
    let done = wait_for(&gw, batch["id"].as_str().unwrap(), |b| {
        status(b) == "completed"
    })
    .await;
    assert_eq!(done["request_counts"]["completed"], 5);
    assert_eq!(up.requests(), 1, "the cache answered the repeats");
    // What the batch computed answers interactive requests too.
    let interactive = gw
        .send(
            gw.client
                .post(gw.url("/v1/chat/completions"))
                .bearer_auth(ALICE)
                .json(&json!({"model": "m", "temperature": 0,
                    "messages": [{"role": "user", "content": "always the same"}]})),
        )
        .await;
    assert_eq!(interactive.header("x-agentrouter-cache"), Some("hit"));

    // A key with a tiny daily budget: its batch's first answer spends it,
    // the rest are refused as its interactive requests would be.
    let file = upload(&gw, THRIFTY, &chat_lines(3)).await;
    assert_eq!(file.status, 200, "{}", file.text);
    let batch = post(
        &gw,
        THRIFTY,
        "/v1/batches",
        &json!({"input_file_id": file.json()["id"], "endpoint": "/v1/chat/completions",
            "completion_window": "24h"}),
    )
    .await
    .json();
    let id = batch["id"].as_str().unwrap();
    let mut done = Value::Null;
    for _ in 0..3000 {
        done = get(&gw, THRIFTY, &format!("/v1/batches/{id}")).await.json();
        if status(&done) == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        done["request_counts"],
        json!({"total": 3, "completed": 1, "failed": 2}),
        "{done}"
    );
    let errors = get(
        &gw,
        THRIFTY,
        &format!(
            "/v1/files/{}/content",
            done["error_file_id"].as_str().unwrap()
        ),
    )
    .await;
    for line in errors.text.lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        assert_eq!(line["response"]["status_code"], 429, "{line}");
        assert_eq!(line["response"]["body"]["error"]["code"], "budget_exceeded");
    }
    gw.stop().await;
}

#[tokio::test]
async fn uploads_are_bounded_by_batches_max_file_bytes_not_the_body_limit() {
    let up = SimServer::start(steady(0), &["m"]).await;
    let toml = config(&up, "max_file_bytes = 65536").replace(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\nmax_body_bytes = 4096\n",
    );
    let gw = Gateway::start(&toml).await;
    // ~25 KiB: over server.max_body_bytes, under batches.max_file_bytes.
    let text = chat_lines(200);
    assert!(text.len() > 4096 && text.len() < 60_000, "{}", text.len());
    let file = upload(&gw, ALICE, &text).await;
    assert_eq!(file.status, 200, "{}", file.text);
    assert_eq!(file.json()["bytes"], text.len());
    let got = get(
        &gw,
        ALICE,
        &format!("/v1/files/{}/content", file.json()["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(got.text, text, "stored as uploaded");
    // Every other route keeps server.max_body_bytes.
    let big = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(5000)}]});
    let reply = gw.chat_as(ALICE, &big).await;
    assert_eq!(reply.status, 413, "{}", reply.text);
    assert_eq!(reply.code(), "request_too_large");

    // Over the file limit with a Content-Length: refused before it is read.
    let text = chat_lines(600);
    assert!(multipart(&text).len() > 65536);
    let reply = upload(&gw, ALICE, &text).await;
    assert_eq!(reply.status, 413, "{}", reply.text);
    assert_eq!(reply.code(), "file_too_large");
    assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
    assert_eq!(reply.json()["error"]["param"], "file");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("`batches.max_file_bytes`") && message.contains("65536"),
        "{message}"
    );

    // Streamed without a length (chunked): refused once the limit is passed.
    let body = multipart(&text).into_bytes();
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(8192).map(|c| Ok(c.to_vec())).collect();
    let reply = gw
        .send(
            gw.client
                .post(gw.url("/v1/files"))
                .bearer_auth(ALICE)
                .header("content-type", "multipart/form-data; boundary=B0undary")
                .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces))),
        )
        .await;
    assert_eq!(reply.status, 413, "{}", reply.text);
    assert_eq!(reply.code(), "file_too_large");
    // A chunked upload under the limit is taken.
    let text = chat_lines(10);
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = multipart(&text)
        .into_bytes()
        .chunks(100)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let reply = gw
        .send(
            gw.client
                .post(gw.url("/v1/files"))
                .bearer_auth(ALICE)
                .header("content-type", "multipart/form-data; boundary=B0undary")
                .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces))),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["bytes"], text.len());
    gw.stop().await;
}
