//! Batches over real HTTP (`/v1/files`, `/v1/batches`) against the
//! simulator's HTTP server: a batch of 200 completes, one is cancelled, one
//! resumes after a restart without running a finished request twice (the
//! upstream's request count says so), a bad input file is refused naming
//! its line, and another key sees neither the file nor the batch.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::batch::*;
use support::{ALICE, BOB, Gateway, SimServer, steady};

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
