//! Several replicas sharing one Redis (`[cluster]`), end to end: three real
//! gateways on their own ports and stores, a real `redis-server`, the
//! simulator behind HTTP. Limits are set so counts are exact (rates far
//! below the test's duration); every wait is a bounded poll on state, never
//! a timed assertion.

mod support;

use agentrouter::runtime::sha256_hex;
use serde_json::{Value, json};
use std::time::Duration;
use support::{ADMIN_TOKEN, Gateway, RedisServer, SimServer, Webhook, chat, series, steady, value};

/// Three gateways on `toml`, each with its own store.
async fn replicas(toml: &str) -> Vec<Gateway> {
    let mut all = Vec::new();
    for _ in 0..3 {
        all.push(Gateway::start(toml).await);
    }
    all
}

async fn stop_all(gateways: Vec<Gateway>) {
    for gw in gateways {
        gw.stop().await;
    }
}

/// Polls `done` every 50 ms, at most `tries` times; panics with `what`.
async fn eventually<F, Fut>(what: &str, tries: usize, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..tries {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gave up waiting: {what}");
}

fn admin() -> String {
    format!("[admin]\ntoken = \"{ADMIN_TOKEN}\"\n")
}

/// Creates a key through `gw`'s admin API; its secret.
async fn create_key(gw: &Gateway, body: Value) -> String {
    let (status, created) = gw.admin_post("/admin/keys", &body).await;
    assert_eq!(status, 201, "{created}");
    created["secret"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn three_replicas_refuse_beyond_one_shared_request_limit() {
    let redis = RedisServer::start();
    let up = SimServer::start(steady(0), &["m"]).await;
    // Ten requests at once, then one per 1000 s: the test sees 10 in all.
    let toml = up.config(&format!(
        "[rate_limits]\nrequests_per_s = 0.001\nburst = 10\n\n{}",
        redis.cluster_table("")
    ));
    let gws = replicas(&toml).await;
    let (mut ok, mut limited) = (0, 0);
    for i in 0..30 {
        let reply = gws[i % 3].chat(&chat("m", "hi")).await;
        match reply.status {
            200 => ok += 1,
            429 => {
                assert_eq!(reply.code(), "rate_limit_exceeded", "{}", reply.text);
                assert!(reply.header("retry-after").is_some());
                limited += 1;
            }
            other => panic!("unexpected {other}: {}", reply.text),
        }
    }
    assert_eq!(
        (ok, limited),
        (10, 20),
        "the limit is global, not per replica"
    );
    let refused: f64 = futures::future::join_all(gws.iter().map(|g| g.metrics()))
        .await
        .iter()
        .map(|m| {
            series(
                m,
                r#"agentrouter_rate_limited_total{key="anonymous",limit="requests"}"#,
            )
        })
        .sum();
    assert_eq!(refused, 20.0);
    stop_all(gws).await;
}

#[tokio::test]
async fn a_keys_budget_holds_across_replicas_within_the_requests_in_flight() {
    let redis = RedisServer::start();
    // 20 ms per answer, so requests of different replicas overlap.
    let up = SimServer::start(steady(20), &["m"]).await;
    let toml = up.config(&format!(
        "{}\n[auth]\nenabled = true\nbudget_reservation_usd = 0.0\n\n{}",
        admin(),
        redis.cluster_table("")
    ));
    let gws = replicas(&toml).await;
    let budget = 0.5;
    let key = create_key(
        &gws[0],
        json!({"name": "shared", "daily_budget_usd": budget}),
    )
    .await;
    // Two workers per replica, each sending until the budget is exhausted.
    const WORKERS_PER_REPLICA: usize = 2;
    let mut workers = Vec::new();
    for (r, gw) in gws.iter().enumerate() {
        for w in 0..WORKERS_PER_REPLICA {
            let (client, url, key) = (
                gw.client.clone(),
                gw.url("/v1/chat/completions"),
                key.clone(),
            );
            workers.push(tokio::spawn(async move {
                let mut costs = Vec::new();
                for i in 0..400 {
                    let body = chat("m", &format!("replica {r} worker {w} request {i}"));
                    let resp = client
                        .post(&url)
                        .bearer_auth(&key)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    let status = resp.status().as_u16();
                    let cost = resp
                        .headers()
                        .get("x-agentrouter-cost-usd")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<f64>().ok());
                    let text = resp.text().await.unwrap();
                    match status {
                        200 => costs.push(cost.unwrap()),
                        429 if text.contains("exhausted") => return costs,
                        // Held by requests in flight: they settle soon.
                        429 => tokio::time::sleep(Duration::from_millis(5)).await,
                        other => panic!("unexpected {other}: {text}"),
                    }
                }
                panic!("the budget never ran out");
            }));
        }
    }
    let mut costs = Vec::new();
    for w in workers {
        costs.extend(w.await.unwrap());
    }
    let spent: f64 = costs.iter().sum();
    let largest = costs.iter().cloned().fold(0.0, f64::max);
    let in_flight = 3 * WORKERS_PER_REPLICA;
    let overshoot = spent - budget;
    eprintln!(
        "budget {budget} USD, spent {spent:.6} USD in {} requests of at most {largest:.6} USD: overshoot {overshoot:.6} USD = {:.2} requests (bound: {in_flight} in flight)",
        costs.len(),
        overshoot / largest
    );
    assert!(spent >= budget, "the budget was used up: {spent}");
    assert!(
        overshoot <= in_flight as f64 * largest,
        "overshoot {overshoot} beyond {in_flight} requests in flight of {largest}"
    );
    // Every replica refuses now, whichever served the last request.
    for gw in &gws {
        let refused = gw.chat_as(&key, &chat("m", "one more")).await;
        assert_eq!(refused.status, 429, "{}", refused.text);
        assert_eq!(refused.code(), "budget_exceeded");
    }
    stop_all(gws).await;
}

#[tokio::test]
async fn a_budget_threshold_alerts_once_through_the_webhook_whichever_replica_crosses_it() {
    let redis = RedisServer::start();
    let hook = Webhook::start().await;
    let up = SimServer::start(steady(0), &["m"]).await;
    let toml = up.config(&format!(
        "{}
[auth]
enabled = true
budget_alert_thresholds = [0.5, 1.0]

[resilience]
alert_webhook = \"{}\"

{}",
        admin(),
        hook.url,
        redis.cluster_table("")
    ));
    let gws = replicas(&toml).await;
    let key = create_key(&gws[0], json!({"name": "watched", "daily_budget_usd": 0.1})).await;
    let mut served = 0;
    for i in 0..100 {
        let reply = gws[i % 3].chat_as(&key, &chat("m", "spend")).await;
        if reply.status == 429 {
            break;
        }
        assert_eq!(reply.status, 200, "{}", reply.text);
        served += 1;
    }
    assert!(served > 2, "{served}");
    let posted = hook.wait_for(2).await;
    let budget: Vec<&Value> = posted.iter().filter(|a| a["kind"] == "budget").collect();
    assert_eq!(
        budget.len(),
        2,
        "one alert per threshold, not one per replica: {posted:#?}"
    );
    assert!(budget.iter().all(|a| a["key"] == "watched"), "{budget:#?}");
    assert!(
        budget[0]["failure"].as_str().unwrap().contains("50%"),
        "{budget:#?}"
    );
    assert!(
        budget[1]["failure"].as_str().unwrap().contains("100%"),
        "{budget:#?}"
    );
    // The budget and the provider's quota are series for the alert rules.
    let m = gws[(served - 1) % 3].metrics().await;
    assert!(
        series(&m, r#"agentrouter_budget_spent_usd{key="watched"}"#) >= 0.1,
        "{m}"
    );
    assert_eq!(
        series(&m, r#"agentrouter_budget_limit_usd{key="watched"}"#),
        0.1
    );
    assert_eq!(
        series(
            &m,
            r#"agentrouter_upstream_quota_limit{upstream="sim",resource="requests"}"#
        ),
        10_000.0
    );
    let left = series(
        &m,
        r#"agentrouter_upstream_quota_remaining{upstream="sim",resource="requests"}"#,
    );
    assert!(left > 0.0 && left < 10_000.0, "{left}");
    stop_all(gws).await;
}

#[tokio::test]
async fn a_cache_entry_stored_through_one_replica_is_a_hit_through_the_others() {
    let redis = RedisServer::start();
    let up = SimServer::start(steady(0), &["m"]).await;
    let gws = replicas(&up.config(&redis.cluster_table(""))).await;
    let mut request = chat("m", "cache me once");
    request["temperature"] = json!(0);
    let first = gws[0].chat(&request).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.header("x-agentrouter-cache"), Some("miss"));
    for gw in &gws[1..] {
        let hit = gw.chat(&request).await;
        assert_eq!(hit.status, 200, "{}", hit.text);
        assert_eq!(hit.header("x-agentrouter-cache"), Some("hit"));
        assert_eq!(hit.header("x-agentrouter-cache-level"), Some("l3"));
        assert_eq!(hit.json()["choices"], first.json()["choices"]);
        // Copied into this replica's own tiers on the way back.
        let again = gw.chat(&request).await;
        assert_eq!(again.header("x-agentrouter-cache-level"), Some("l1"));
    }
    assert_eq!(up.requests(), 1, "one upstream call for three replicas");
    let m = gws[1].metrics().await;
    assert_eq!(
        series(
            &m,
            r#"agentrouter_cache_lookups_total{level="l3",result="hit"}"#
        ),
        1.0
    );
    stop_all(gws).await;
}

#[tokio::test]
async fn a_key_created_rotated_or_revoked_through_one_replica_applies_on_all_at_once() {
    let redis = RedisServer::start();
    let up = SimServer::start(steady(0), &["m"]).await;
    let toml = up.config(&format!(
        "{}\n[auth]\nenabled = true\n\n{}",
        admin(),
        redis.cluster_table("")
    ));
    let gws = replicas(&toml).await;
    let hi = chat("m", "hi");
    let secret = create_key(&gws[0], json!({"name": "team-c", "models": ["m"]})).await;
    for gw in &gws {
        let reply = gw.chat_as(&secret, &hi).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let (status, dup) = gws[2]
        .admin_post("/admin/keys", &json!({"name": "team-c"}))
        .await;
    assert_eq!(
        (status, dup["error"]["code"].as_str()),
        (409, Some("key_exists"))
    );

    let (status, rotated) = gws[1]
        .admin_post("/admin/keys/team-c/rotate", &json!({"grace_s": 0}))
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap();
    for gw in &gws {
        assert_eq!(gw.chat_as(new_secret, &hi).await.status, 200);
        let old = gw.chat_as(&secret, &hi).await;
        assert_eq!(old.status, 401, "{}", old.text);
    }

    let (status, revoked) = gws[2]
        .admin_post("/admin/keys/team-c/revoke", &json!({}))
        .await;
    assert_eq!((status, revoked["status"].as_str()), (200, Some("revoked")));
    for gw in &gws {
        let refused = gw.chat_as(new_secret, &hi).await;
        assert_eq!(refused.status, 401, "{}", refused.text);
        assert_eq!(refused.code(), "revoked_api_key");
    }
    let (_, listed) = gws[0].admin_get("/admin/keys").await;
    assert_eq!(listed["shared"], true);
    assert!(
        !listed.to_string().contains(new_secret),
        "secrets are never listed"
    );
    stop_all(gws).await;
}

/// A config serving `usf-mini` with the `redact` slot (pii-redact) as
/// output validator, so which version serves shows in every answer.
fn rollout_config(redis: &RedisServer) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

{}

[upstreams.sim]
kind = "simulated"
model = "usf-mini"

[plugins.redact]
source = "builtin:pii-redact"

[pipeline]
output_validators = ["redact"]

{}
"#,
        admin(),
        redis.cluster_table("")
    )
}

async fn answer(gw: &Gateway) -> String {
    let (status, body) = gw
        .post(
            "/v1/chat/completions",
            &chat("usf-mini", "mail me at jane@example.com"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_canary_promoted_on_one_replica_is_served_by_all() {
    let redis = RedisServer::start();
    let gws = replicas(&rollout_config(&redis)).await;
    for gw in &gws {
        assert!(answer(gw).await.contains("[REDACTED_EMAIL]"));
    }
    // `slow-ok` allows everything: an unredacted answer shows it served.
    let path = agentrouter::plugins::fixture_dir().join("slow_ok.wasm");
    let wasm = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let digest = sha256_hex(&wasm);
    let (status, body) = gws[0]
        .admin_put("/admin/plugins/redact/candidate", wasm)
        .await;
    assert_eq!(status, 201, "{body}");
    // A canary no controller will step on its own (a long interval).
    let (status, body) = gws[0]
        .admin_post(
            "/admin/plugins/redact/rollout",
            &json!({"mode": "canary", "percent": 0, "interval_s": 3600}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    for gw in &gws[1..] {
        eventually("the canary reaches every replica", 100, || async {
            gw.admin_get("/admin/plugins/redact").await.1["candidate"]["digest"] == digest
        })
        .await;
    }
    let (status, body) = gws[0]
        .admin_post("/admin/plugins/redact/rollout/promote", &json!({}))
        .await;
    assert_eq!(
        (status, body["phase"].as_str()),
        (200, Some("promoted")),
        "{body}"
    );
    for gw in &gws {
        eventually("the promotion reaches every replica", 100, || async {
            gw.admin_get("/admin/plugins/redact").await.1["live"]["digest"] == digest
        })
        .await;
        assert!(
            answer(gw).await.contains("jane@example.com"),
            "the candidate serves"
        );
        let (_, slot) = gw.admin_get("/admin/plugins/redact").await;
        assert!(slot["candidate"].is_null(), "{slot:#}");
    }
    let (_, status) = gws[2].admin_get("/admin/plugins/redact/rollout").await;
    assert_eq!(status["phase"], "promoted", "{status:#}");
    stop_all(gws).await;
}

#[tokio::test]
async fn replicas_keep_serving_without_redis_under_their_policies_and_recover() {
    let mut redis = RedisServer::start();
    let up = SimServer::start(steady(0), &["m"]).await;
    let toml = up.config(&format!(
        "{}\n[auth]\nenabled = true\n\n[rate_limits]\nrequests_per_s = 1000.0\n\n{}",
        admin(),
        redis.cluster_table(
            "[cluster.on_redis_loss]\nrequests = \"fail-open\"\nbudgets = \"fail-closed\""
        )
    ));
    let gws = replicas(&toml).await;
    let plain = create_key(&gws[0], json!({"name": "plain"})).await;
    let budgeted = create_key(
        &gws[0],
        json!({"name": "budgeted", "daily_budget_usd": 100.0}),
    )
    .await;
    let hi = chat("m", "hi");
    for gw in &gws {
        assert_eq!(gw.chat_as(&plain, &hi).await.status, 200);
        assert_eq!(gw.chat_as(&budgeted, &hi).await.status, 200);
        let (status, ready) = gw.get("/health/ready").await;
        assert_eq!(
            (status, ready["status"].as_str()),
            (200, Some("ready")),
            "{ready}"
        );
        assert_eq!(ready["checks"]["cluster"]["status"], "ok");
    }

    redis.stop();
    for gw in &gws {
        eventually("readiness reports the loss", 100, || async {
            gw.get("/health/ready").await.1["status"] == "degraded"
        })
        .await;
        let (status, ready) = gw.get("/health/ready").await;
        assert_eq!(status, 200, "degraded still serves: {ready}");
        assert_eq!(ready["checks"]["cluster"]["status"], "degraded", "{ready}");
        // fail-open: the local limit decides; keys from the synced copy.
        let served = gw.chat_as(&plain, &hi).await;
        assert_eq!(served.status, 200, "{}", served.text);
        // fail-closed: the budget cannot be checked, so it is refused.
        let refused = gw.chat_as(&budgeted, &hi).await;
        assert_eq!(refused.status, 503, "{}", refused.text);
        assert_eq!(refused.code(), "limit_unavailable");
        assert!(refused.header("retry-after").is_some());
        let m = gw.metrics().await;
        let up = format!(
            "agentrouter_cluster_redis_up{{redis=\"127.0.0.1:{}\"}}",
            redis.port
        );
        assert_eq!(value(&m, &up), 0.0, "{m}");
        assert!(
            series(
                &m,
                r#"agentrouter_cluster_fallbacks_total{limit="budget",policy="closed"}"#
            ) >= 1.0
        );
        assert!(
            series(
                &m,
                r#"agentrouter_cluster_fallbacks_total{limit="requests",policy="open"}"#
            ) >= 1.0
        );
    }

    redis.restart();
    for gw in &gws {
        eventually("the replica rejoins", 100, || async {
            gw.get("/health/ready").await.1["status"] == "ready"
        })
        .await;
        assert_eq!(gw.chat_as(&budgeted, &hi).await.status, 200);
        assert_eq!(
            series(
                &gw.metrics().await,
                &format!(
                    "agentrouter_cluster_redis_up{{redis=\"127.0.0.1:{}\"}}",
                    redis.port
                )
            ),
            1.0
        );
    }
    // Shared again: the spend of all three lives in one place.
    let spent = redis.cli(&["--scan", "--pattern", "agentrouter:spend:budgeted:*"]);
    assert!(!spent.is_empty(), "the budget is shared again");
    stop_all(gws).await;
}

#[tokio::test]
async fn a_cluster_url_in_the_old_cache_key_is_refused_saying_where_it_moved() {
    let err = agentrouter::config::Config::parse(
        "[upstreams.a]\nkind = \"simulated\"\nmodel = \"m\"\n\n[cache]\nredis_url = \"redis://r:6379\"\n",
        "old.toml",
        std::path::Path::new("."),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("old.toml:6: cache.redis_url") && err.contains("[cluster]"),
        "{err}"
    );
}
