//! Files and the end of a batch over real HTTP: uploads bounded by
//! `batches.max_file_bytes` (not `server.max_body_bytes`), with and without
//! a length; `GET /v1/files` per key with its `purpose` filter, order and
//! pages; a batch past its completion window `expired` with its unstarted
//! requests in the error file, also when the window passed while the
//! gateway was down.

mod support;

use serde_json::{Value, json};
use support::batch::*;
use support::{ALICE, BOB, Gateway, Reply, SimServer, steady};

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
    let reply = upload_chunked(&gw, &text, 8192).await;
    assert_eq!(reply.status, 413, "{}", reply.text);
    assert_eq!(reply.code(), "file_too_large");
    // A chunked upload under the limit is taken.
    let text = chat_lines(10);
    let reply = upload_chunked(&gw, &text, 100).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["bytes"], text.len());
    gw.stop().await;
}

/// Uploads `text` as a batch file in pieces of `piece` bytes, without a
/// length (chunked).
async fn upload_chunked(gw: &Gateway, text: &str, piece: usize) -> Reply {
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = multipart(text)
        .into_bytes()
        .chunks(piece)
        .map(|c| Ok(c.to_vec()))
        .collect();
    gw.send(
        gw.client
            .post(gw.url("/v1/files"))
            .bearer_auth(ALICE)
            .header("content-type", "multipart/form-data; boundary=B0undary")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces))),
    )
    .await
}

#[tokio::test]
async fn the_file_list_is_the_callers_and_filters_by_purpose() {
    let up = SimServer::start(steady(0), &["m"]).await;
    let gw = Gateway::start(&config(&up, "")).await;
    let kept = upload(&gw, ALICE, &chat_lines(2)).await.json();
    let batch = start_batch(&gw, &chat_lines(3)).await;
    let done = wait_for(&gw, batch["id"].as_str().unwrap(), |b| {
        status(b) == "completed"
    })
    .await;
    let output = done["output_file_id"].as_str().unwrap();
    let ids = |list: &Value| -> Vec<String> {
        list["data"]
            .as_array()
            .unwrap_or_else(|| panic!("not a list: {list}"))
            .iter()
            .map(|f| f["id"].as_str().unwrap().to_string())
            .collect()
    };

    let all = get(&gw, ALICE, "/v1/files").await;
    assert_eq!(all.status, 200, "{}", all.text);
    let all = all.json();
    assert_eq!(all["object"], "list");
    assert_eq!(all["has_more"], false);
    let every = ids(&all);
    assert_eq!(every.len(), 3, "two inputs and one output: {all}");
    assert!(every.contains(&kept["id"].as_str().unwrap().to_string()));
    assert!(every.contains(&output.to_string()));
    assert_eq!(all["first_id"].as_str(), every.first().map(String::as_str));
    assert_eq!(all["last_id"].as_str(), every.last().map(String::as_str));
    let file = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == kept["id"])
        .unwrap();
    assert_eq!(file, &kept, "the list holds the file objects");

    let inputs = get(&gw, ALICE, "/v1/files?purpose=batch").await.json();
    assert_eq!(ids(&inputs).len(), 2, "{inputs}");
    assert!(!ids(&inputs).contains(&output.to_string()));
    let outputs = get(&gw, ALICE, "/v1/files?purpose=batch_output")
        .await
        .json();
    assert_eq!(ids(&outputs), [output]);
    let none = get(&gw, ALICE, "/v1/files?purpose=batch_error")
        .await
        .json();
    assert!(ids(&none).is_empty(), "{none}");

    // Newest first by default; `asc` is the same list reversed; `limit`
    // and `after` page through it.
    let mut ascending = ids(&get(&gw, ALICE, "/v1/files?order=asc").await.json());
    ascending.reverse();
    assert_eq!(ascending, every);
    let page = get(&gw, ALICE, "/v1/files?limit=2").await.json();
    assert_eq!(
        (ids(&page), &page["has_more"]),
        (every[..2].to_vec(), &json!(true))
    );
    let rest = get(&gw, ALICE, &format!("/v1/files?limit=2&after={}", every[1]))
        .await
        .json();
    assert_eq!(
        (ids(&rest), &rest["has_more"]),
        (every[2..].to_vec(), &json!(false))
    );
    let bad = get(&gw, ALICE, "/v1/files?order=sideways").await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert_eq!(bad.json()["error"]["param"], "order");

    // Another key's list is empty.
    let bobs = get(&gw, BOB, "/v1/files").await;
    assert_eq!(bobs.status, 200, "{}", bobs.text);
    assert!(ids(&bobs.json()).is_empty(), "{}", bobs.text);
    gw.stop().await;
}

#[tokio::test]
async fn a_batch_past_its_window_expires_with_its_unstarted_requests_in_the_error_file() {
    // 20 requests of 300 ms one at a time take 6 s; the window is 1 s.
    let up = SimServer::start(steady(300), &["m"]).await;
    let gw = Gateway::start(&config(&up, "max_concurrency = 1\ncompletion_window_s = 1")).await;
    let batch = start_batch(&gw, &chat_lines(20)).await;
    assert_eq!(
        batch["expires_at"].as_u64().unwrap(),
        batch["created_at"].as_u64().unwrap() + 1,
        "{batch}"
    );
    let id = batch["id"].as_str().unwrap().to_string();
    let done = wait_for(&gw, &id, |b| {
        !matches!(status(b), "in_progress" | "finalizing")
    })
    .await;
    assert_eq!(status(&done), "expired", "{done}");
    assert!(done["expired_at"].as_u64().unwrap() >= done["expires_at"].as_u64().unwrap());
    assert!(
        done["completed_at"].is_null() && done["cancelled_at"].is_null(),
        "{done}"
    );
    let completed = done["request_counts"]["completed"].as_u64().unwrap() as usize;
    assert!(completed < 20, "{done}");
    assert_eq!(
        done["request_counts"],
        json!({"total": 20, "completed": completed, "failed": 20 - completed})
    );
    // What ran is in the output file; every request that never started
    // is an error line, `batch_expired`, with no response.
    let expired = lines(&gw, &done["error_file_id"]).await;
    assert_eq!(expired.len(), 20 - completed);
    for line in &expired {
        assert_eq!(line["error"]["code"], "batch_expired", "{line}");
        assert!(line["response"].is_null(), "{line}");
    }
    let mut seen = custom_ids(&expired);
    if completed > 0 {
        let output = lines(&gw, &done["output_file_id"]).await;
        assert_eq!(output.len(), completed);
        for id in custom_ids(&output) {
            assert!(seen.insert(id), "a request both ran and expired");
        }
    }
    assert_eq!(seen.len(), 20);
    assert_eq!(
        up.requests() as usize,
        completed,
        "no expired request reached the upstream"
    );
    // Expired is final: it cannot be cancelled.
    let cancel = post(&gw, ALICE, &format!("/v1/batches/{id}/cancel"), &json!({})).await;
    assert_eq!(cancel.status, 409, "{}", cancel.text);
    gw.stop().await;
}

#[tokio::test]
async fn a_batch_whose_window_passed_while_the_gateway_was_down_expires_at_resume() {
    let up = SimServer::start(steady(300), &["m"]).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config(&up, "max_concurrency = 1\ncompletion_window_s = 2");
    let gw = Gateway::start_in(dir.path(), &toml).await;
    let batch = start_batch(&gw, &chat_lines(20)).await;
    let id = batch["id"].as_str().unwrap().to_string();
    wait_for(&gw, &id, |b| {
        b["request_counts"]["completed"].as_u64() >= Some(1) || status(b) != "in_progress"
    })
    .await;
    // A graceful stop: the request under way is finished and recorded.
    gw.stop().await;
    let ran = up.requests();
    assert!(ran < 20, "the batch was stopped midway ({ran} run)");
    // Down until the window has passed (the store's clock is the wall clock).
    let expires_at = batch["expires_at"].as_u64().unwrap();
    while agentrouter::clock::unix_s() <= expires_at {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let gw = Gateway::start_in(dir.path(), &toml).await;
    let done = wait_for(&gw, &id, |b| {
        !matches!(status(b), "in_progress" | "finalizing")
    })
    .await;
    assert_eq!(status(&done), "expired", "{done}");
    assert_eq!(up.requests(), ran, "nothing ran after the window");
    let completed = done["request_counts"]["completed"].as_u64().unwrap();
    assert_eq!(completed, ran);
    let expired = lines(&gw, &done["error_file_id"]).await;
    assert_eq!(expired.len() as u64, 20 - ran);
    assert!(
        expired
            .iter()
            .all(|l| l["error"]["code"] == "batch_expired")
    );
    gw.stop().await;
}
