//! API keys, rate limits, budgets and request hardening end to end: real
//! HTTP on 127.0.0.1, a real sled store, raw TCP for slow clients. Limits
//! are set so that counts are exact (rates far below the test's duration).

mod support;

use agentrouter::auth::KeyPolicy;
use serde_json::json;
use std::time::Duration;
use support::{Gateway, Reply, SimServer, chat, steady};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG_KEY: &str = "sk-config-key-0123456789";

fn with_auth(up: &SimServer, extra: &str) -> String {
    up.config(&format!(
        r#"
[auth]
enabled = true

[[auth.keys]]
name = "declared"
secret = "{CONFIG_KEY}"
models = ["m"]

{extra}
"#
    ))
}

fn assert_refused(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(reply.code(), code, "{}", reply.text);
    assert!(reply.json()["error"]["type"].is_string(), "{}", reply.text);
    assert!(
        !reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .is_empty(),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn missing_unknown_and_revoked_keys_get_401_and_a_foreign_model_403() {
    let up = SimServer::start(steady(0), &["m"]).await;
    let gw = Gateway::start(&with_auth(
        &up,
        "[upstreams.other]\nkind = \"simulated\"\nmodel = \"other\"\n",
    ))
    .await;
    let hi = chat("m", "hi");

    let missing = gw.chat(&hi).await;
    assert_refused(&missing, 401, "missing_api_key");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    assert_refused(
        &gw.chat_as("sk-ar-guess", &hi).await,
        401,
        "invalid_api_key",
    );
    let (status, _) = gw.get("/v1/models").await;
    assert_eq!(status, 401, "the API needs a key, health does not");
    assert_eq!(gw.get("/health/live").await.0, 200);

    // The declared key works by Bearer and by x-api-key...
    assert_eq!(gw.chat_as(CONFIG_KEY, &hi).await.status, 200);
    let by_header = gw
        .send(
            gw.client
                .post(gw.url("/v1/chat/completions"))
                .header("x-api-key", CONFIG_KEY)
                .json(&hi),
        )
        .await;
    assert_eq!(by_header.status, 200);
    // ...but only for its models, and lists only those.
    let mut other = hi.clone();
    other["model"] = json!("other");
    let denied = gw.chat_as(CONFIG_KEY, &other).await;
    assert_refused(&denied, 403, "model_not_allowed");
    let message = denied.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("declared") && message.contains("`other`"),
        "{message}"
    );
    let listed = gw
        .send(gw.client.get(gw.url("/v1/models")).bearer_auth(CONFIG_KEY))
        .await
        .json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");

    // A created key works until it is revoked.
    let secret = gw
        .auth
        .create("temp", KeyPolicy::default())
        .await
        .unwrap()
        .1;
    assert_eq!(gw.chat_as(&secret, &hi).await.status, 200);
    gw.auth.revoke("temp").await.unwrap();
    let revoked = gw.chat_as(&secret, &hi).await;
    assert_refused(&revoked, 401, "revoked_api_key");
    assert!(revoked.text.contains("temp"), "{}", revoked.text);
    // Config keys are changed in the config, not at runtime.
    assert!(gw.auth.revoke("declared").await.is_err());
    gw.stop().await;
}

#[tokio::test]
async fn a_rotated_key_works_old_and_new_within_the_grace_period_then_only_new() {
    let up = SimServer::start(steady(0), &["m"]).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), &with_auth(&up, "")).await;
    let hi = chat("m", "hi");
    let old = gw
        .auth
        .create("rotor", KeyPolicy::default())
        .await
        .unwrap()
        .1;
    assert_eq!(gw.chat_as(&old, &hi).await.status, 200);
    let new = gw
        .auth
        .rotate("rotor", Duration::from_millis(800))
        .await
        .unwrap()
        .1;
    assert_ne!(old, new);
    assert_eq!(gw.chat_as(&old, &hi).await.status, 200, "old, within grace");
    assert_eq!(gw.chat_as(&new, &hi).await.status, 200, "new");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let expired = gw.chat_as(&old, &hi).await;
    assert_refused(&expired, 401, "expired_api_key");
    assert_eq!(gw.chat_as(&new, &hi).await.status, 200);
    gw.stop().await;

    // The rotation is in the store: a restarted gateway agrees.
    let gw = Gateway::start_in(dir.path(), &with_auth(&up, "")).await;
    assert_refused(&gw.chat_as(&old, &hi).await, 401, "expired_api_key");
    assert_eq!(gw.chat_as(&new, &hi).await.status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn a_burst_of_twelve_against_a_bucket_of_five_gets_exactly_seven_429s() {
    let up = SimServer::start(steady(0), &["m"]).await;
    let gw = Gateway::start(&with_auth(&up, "")).await;
    let key = gw
        .auth
        .create(
            "bursty",
            KeyPolicy {
                requests_per_s: Some(0.001),
                burst: Some(5),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .1;
    let mut ok = 0;
    let mut limited = Vec::new();
    for _ in 0..12 {
        let reply = gw.chat_as(&key, &chat("m", "hi")).await;
        match reply.status {
            200 => ok += 1,
            _ => limited.push(reply),
        }
    }
    assert_eq!(ok, 5);
    assert_eq!(limited.len(), 7);
    for reply in &limited {
        assert_refused(reply, 429, "rate_limit_exceeded");
        let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!(retry >= 1, "{retry}");
    }
    // Other keys have their own buckets.
    assert_eq!(gw.chat_as(CONFIG_KEY, &chat("m", "hi")).await.status, 200);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"agentrouter_rate_limited_total{key="bursty",limit="requests"} 7"#),
        "{metrics}"
    );
    // The refusals are requests served too: counted by status.
    let refused: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("agentrouter_http_requests_total{")
                && l.contains(r#"route="/v1/chat/completions""#)
                && l.contains(r#"status="429""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(refused, 7.0, "{metrics}");
    gw.stop().await;
}

#[tokio::test]
async fn token_and_model_limits_refuse_once_spent() {
    let up = SimServer::start(steady(0), &["m"]).await;
    let gw = Gateway::start(&up.config(
        r#"
[rate_limits]
tokens_per_min = 50

[rate_limits.models.m]
requests_per_s = 0.001
burst = 3
"#,
    ))
    .await;
    // ~100 prompt tokens: the first request passes (the bucket is full) and
    // puts the client in debt; the next is refused until it is repaid.
    let long = chat("m", &"word ".repeat(80));
    assert_eq!(gw.chat(&long).await.status, 200);
    let refused = gw.chat(&long).await;
    assert_refused(&refused, 429, "rate_limit_exceeded");
    assert!(refused.text.contains("tokens/min"), "{}", refused.text);
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 30, "a debt of ~100 tokens at 50/min: {retry}");

    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"agentrouter_rate_limited_total{key="anonymous",limit="tokens"} 1"#),
        "{metrics}"
    );
    gw.stop().await;

    // The model's own bucket: three requests, then 429 for everyone.
    let gw =
        Gateway::start(&up.config("[rate_limits.models.m]\nrequests_per_s = 0.001\nburst = 3\n"))
            .await;
    let hi = chat("m", "hi");
    let statuses: Vec<u16> = futures::future::join_all((0..5).map(|_| gw.chat(&hi)))
        .await
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    let refused = gw.chat(&chat("m", "hi")).await;
    assert_refused(&refused, 429, "rate_limit_exceeded");
    assert!(refused.text.contains("model `m`"), "{}", refused.text);
    gw.stop().await;
}

#[tokio::test]
async fn an_exhausted_daily_budget_refuses_with_budget_exceeded() {
    let up = SimServer::start(steady(0), &["m"]).await;
    let gw = Gateway::start(&with_auth(&up, "")).await;
    // One request at USD 1 per 1k tokens costs more than this.
    let key = gw
        .auth
        .create(
            "thrifty",
            KeyPolicy {
                daily_budget_usd: Some(0.000_001),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .1;
    let first = gw.chat_as(&key, &chat("m", "spend it all")).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let refused = gw.chat_as(&key, &chat("m", "and more")).await;
    assert_refused(&refused, 429, "budget_exceeded");
    assert_eq!(refused.json()["error"]["type"], "budget_exceeded");
    assert!(refused.text.contains("thrifty"), "{}", refused.text);
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "until UTC midnight: {retry}");
    // Other keys are unaffected.
    assert_eq!(gw.chat_as(CONFIG_KEY, &chat("m", "hi")).await.status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn oversized_bodies_and_conversations_are_refused_with_the_limit_named() {
    let up = SimServer::start(steady(0), &["m"]).await;
    let gw = Gateway::start(&up.config("").replace(
        "[server]\n",
        "[server]\nmax_body_bytes = 4096\nmax_messages = 3\nmax_message_chars = 100\n",
    ))
    .await;
    let huge = gw.chat(&chat("m", &"x".repeat(5000))).await;
    assert_refused(&huge, 413, "request_too_large");

    let message = json!({"role": "user", "content": "hi"});
    let many = json!({"model": "m", "messages": [message, message, message, message]});
    let refused = gw.chat(&many).await;
    assert_refused(&refused, 400, "too_many_messages");
    assert!(
        refused.text.contains("server.max_messages"),
        "{}",
        refused.text
    );

    let long = gw.chat(&chat("m", &"y".repeat(101))).await;
    assert_refused(&long, 400, "message_too_long");
    assert!(long.text.contains("messages[0]"), "{}", long.text);
    assert_eq!(gw.chat(&chat("m", &"y".repeat(100))).await.status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn a_slow_client_is_cut_off_while_others_are_served() {
    let up = SimServer::start(steady(0), &["m"]).await;
    let gw = Gateway::start(
        &up.config("")
            .replace("[server]\n", "[server]\nheader_read_timeout_ms = 300\n"),
    )
    .await;
    let head = format!(
        "GET /health/live HTTP/1.1\r\nhost: {}\r\nx-slow: {}\r\n\r\n",
        gw.addr,
        "z".repeat(40)
    );
    let addr = gw.addr;
    // Sends its head a byte every 25 ms (~2 s in all, far past 300 ms).
    let slow = tokio::spawn(async move {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        for byte in head.as_bytes() {
            if socket.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).to_string()
    });
    // Meanwhile, other clients are served.
    for _ in 0..3 {
        assert_eq!(gw.chat(&chat("m", "hi")).await.status, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = slow.await.unwrap();
    assert!(
        !answer.starts_with("HTTP/1.1 200"),
        "the slow client was served: {answer}"
    );

    // An idle keep-alive connection is closed after the same bound.
    let mut socket = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    socket
        .write_all(format!("GET /health/live HTTP/1.1\r\nhost: {}\r\n\r\n", gw.addr).as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = socket.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert_eq!(
        closed,
        Ok(true),
        "the idle connection was closed by the server"
    );
    gw.stop().await;
}

#[tokio::test]
async fn the_production_example_checks_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("production.toml");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/production.toml"),
        &path,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentrouter"))
        .args(["check", "--config"])
        .arg(&path)
        .env("TEAM_A_KEY", "team-a-secret-0123456789")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the secret's variable, the key is named.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentrouter"))
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("TEAM_A_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("auth.keys[0].secret") && stderr.contains("TEAM_A_KEY"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_trickling_body_gets_408_and_a_header_flood_431() {
    let up = SimServer::start(steady(0), &["m"]).await;
    let gw = Gateway::start(&up.config("").replace(
        "[server]\n",
        "[server]\nbody_read_timeout_ms = 300\nmax_headers = 10\n",
    ))
    .await;
    // Announces 100 bytes, sends 10, then waits.
    let partial = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"model\":",
        gw.addr
    );
    let answer = gw.raw(partial.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("server.body_read_timeout_ms"), "{answer}");

    let mut flood = format!("GET /health/live HTTP/1.1\r\nhost: {}\r\n", gw.addr);
    for i in 0..20 {
        flood.push_str(&format!("x-h{i}: v\r\n"));
    }
    flood.push_str("\r\n");
    let answer = gw.raw(flood.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // Within the bounds, the same requests are served.
    assert_eq!(gw.chat(&chat("m", "hi")).await.status, 200);
    gw.stop().await;
}
