//! `agentrouter store backup` / `restore`, run as an operator would: the
//! binary against real stores — a stopped gateway's sled directory, and a
//! live cluster's `redis-server` — with gateways showing that what was
//! restored is what serves.

mod support;

use agentrouter::runtime::sha256_hex;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::{ADMIN_TOKEN, Gateway, RedisServer, SimServer, chat, steady};

/// Runs `agentrouter store <args>`; panics with its stderr unless it succeeds.
fn store(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_agentrouter"))
        .arg("store")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "store {args:?}: {stderr}");
    stderr
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A config with auth, the admin API and the `redact` slot (pii-redact as
/// output validator) over the simulator `up`.
fn config(up: &SimServer, extra: &str) -> String {
    up.config(&format!(
        r#"
[admin]
token = "{ADMIN_TOKEN}"

[auth]
enabled = true

[plugins.redact]
source = "builtin:pii-redact"

[pipeline]
output_validators = ["redact"]

{extra}
"#
    ))
}

async fn create_key(gw: &Gateway, body: Value) -> String {
    let (status, created) = gw.admin_post("/admin/keys", &body).await;
    assert_eq!(status, 201, "{created}");
    created["secret"].as_str().unwrap().to_string()
}

fn slow_ok() -> Vec<u8> {
    let path = agentrouter::plugins::fixture_dir().join("slow_ok.wasm");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn a_sled_backup_restores_keys_rollouts_spend_and_cache_into_a_new_store() {
    let up = SimServer::start(steady(0), &["m"]).await;
    let toml = config(&up, "");
    let (old, new) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let gw = Gateway::start_in(old.path(), &toml).await;
    let secret = create_key(&gw, json!({"name": "kept", "daily_budget_usd": 100.0})).await;
    let wasm = slow_ok();
    let (status, body) = gw.admin_put("/admin/plugins/redact", wasm.clone()).await;
    assert_eq!(status, 200, "{body}");
    let mut cached = chat("m", "remember this");
    cached["temperature"] = json!(0);
    let first = gw.chat_as(&secret, &cached).await;
    assert_eq!(
        first.header("x-agentrouter-cache"),
        Some("miss"),
        "{}",
        first.text
    );
    gw.stop().await;

    let file = old.path().join("backup.json");
    let said = store(&[
        "backup",
        "--config",
        path(&old.path().join("gateway.toml")),
        "--cache",
        path(&file),
    ]);
    assert!(
        said.contains("1 keys") && said.contains("from sled"),
        "{said}"
    );
    let backup: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(backup["format"], "agentrouter-backup");
    assert!(
        !backup.to_string().contains(&secret),
        "only hashes are backed up"
    );

    // A fresh directory: nothing but the config, then the restore.
    std::fs::write(new.path().join("gateway.toml"), &toml).unwrap();
    let said = store(&[
        "restore",
        "--config",
        path(&new.path().join("gateway.toml")),
        path(&file),
    ]);
    assert!(said.contains("into sled"), "{said}");
    let gw = Gateway::start_in(new.path(), &toml).await;
    let (_, slot) = gw.admin_get("/admin/plugins/redact").await;
    assert_eq!(slot["live"]["digest"], sha256_hex(&wasm), "{slot:#}");
    let hit = gw.chat_as(&secret, &cached).await;
    assert_eq!(hit.status, 200, "the key came back: {}", hit.text);
    assert_eq!(hit.header("x-agentrouter-cache"), Some("hit"));
    assert_eq!(hit.json()["choices"], first.json()["choices"]);
    let spent: f64 = backup["spend"][0]["usd"].as_f64().unwrap();
    assert!(spent > 0.0, "{backup}");
    gw.stop().await;
}

#[tokio::test]
async fn a_cluster_survives_losing_its_redis_data_through_a_backup_taken_while_serving() {
    let redis = RedisServer::start();
    let up = SimServer::start(steady(0), &["m"]).await;
    let toml = config(&up, &redis.cluster_table(""));
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), &toml).await;
    let secret = create_key(&gw, json!({"name": "survivor"})).await;
    let wasm = slow_ok();
    let (status, _) = gw
        .admin_put("/admin/plugins/redact/candidate", wasm.clone())
        .await;
    assert_eq!(status, 201);
    assert_eq!(gw.chat_as(&secret, &chat("m", "hi")).await.status, 200);
    // Published in the background, right after the upload.
    let digest = sha256_hex(&wasm);
    let wasm_key = format!("agentrouter:rollout:wasm:{digest}");
    for _ in 0..100 {
        if redis.cli(&["EXISTS", &wasm_key]) == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Taken from Redis while the gateway serves.
    let file = dir.path().join("cluster-backup.json");
    let config_file = dir.path().join("gateway.toml");
    let said = store(&["backup", "--config", path(&config_file), path(&file)]);
    assert!(said.contains("from redis"), "{said}");

    // The disaster: Redis loses everything.
    assert_eq!(redis.cli(&["FLUSHALL"]), "OK");
    let lost = gw.chat_as(&secret, &chat("m", "hi")).await;
    assert_eq!(
        lost.status, 401,
        "the key is gone with Redis: {}",
        lost.text
    );

    let said = store(&["restore", "--config", path(&config_file), path(&file)]);
    assert!(said.contains("into redis"), "{said}");
    let back = gw.chat_as(&secret, &chat("m", "hi")).await;
    assert_eq!(back.status, 200, "{}", back.text);
    // The uploaded candidate is in Redis again, by digest.
    assert_eq!(redis.cli(&["EXISTS", &wasm_key]), "1");
    gw.stop().await;
}
