//! Batches over HTTP, as a client drives them: three keys, JSONL input
//! files of chat requests, multipart uploads, and the batch and file
//! routes (`tests/batches.rs`, `tests/batch_files.rs`).

use super::{ALICE, Gateway, Reply, SimServer, two_keys};
use serde_json::Value;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

pub const THRIFTY: &str = "thrifty-secret-0123456789";

/// `up` as upstream `sim`, keys alice and bob, `[batches]` as `batches`.
pub fn config(up: &SimServer, batches: &str) -> String {
    up.config(&format!("{}\n[batches]\n{batches}\n", two_keys()))
}

/// A JSONL input file of `n` chat requests for model `m`, `req-<i>` each.
pub fn chat_lines(n: usize) -> String {
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
pub fn multipart(text: &str) -> String {
    format!(
        "--B0undary\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--B0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{text}\r\n--B0undary--\r\n"
    )
}

/// Uploads `text` as a batch file with key `key`.
pub async fn upload(gw: &Gateway, key: &str, text: &str) -> Reply {
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

pub async fn get(gw: &Gateway, key: &str, path: &str) -> Reply {
    gw.send(gw.client.get(gw.url(path)).bearer_auth(key)).await
}

pub async fn post(gw: &Gateway, key: &str, path: &str, body: &Value) -> Reply {
    gw.send(gw.client.post(gw.url(path)).bearer_auth(key).json(body))
        .await
}

/// Uploads `text` and starts a chat batch of it; the batch object.
pub async fn start_batch(gw: &Gateway, text: &str) -> Value {
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
pub async fn wait_for(gw: &Gateway, id: &str, done: impl Fn(&Value) -> bool) -> Value {
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

pub fn status(batch: &Value) -> &str {
    batch["status"].as_str().unwrap_or_default()
}

/// The lines of file `id`.
pub async fn lines(gw: &Gateway, id: &Value) -> Vec<Value> {
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
pub fn custom_ids(lines: &[Value]) -> HashSet<String> {
    let ids: HashSet<String> = lines
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), lines.len(), "a request answered twice");
    ids
}
