//! Hot swap and rollouts end to end: real HTTP on 127.0.0.1, real `.wasm`
//! plugins, a real sled store that outlives a gateway.
//!
//! The slot under test is `redact`, an output validator running the
//! first-party `pii-redact`: its behaviour shows in every answer (the
//! simulator echoes the prompt, so an e-mail address comes back redacted).
//! The `slow-ok` fixture allows everything, so an answer carrying the
//! address unredacted shows the other version served it; the `trap` fixture
//! traps on every call. Controller intervals are fractions of a second
//! (`interval_s` is a float), and every wait is a bounded poll on state,
//! never a timed assertion.

mod support;

use agentrouter::plugins;
use agentrouter::runtime::sha256_hex;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{ADMIN_TOKEN, Gateway};

const EMAIL_PROMPT: &str = "mail me at jane@example.com";
const REDACTED: &str = "[usf-mini] You said: mail me at [REDACTED_EMAIL]";
const UNREDACTED: &str = "[usf-mini] You said: mail me at jane@example.com";

fn builtin(name: &str) -> Vec<u8> {
    plugins::get(name).unwrap().wasm.to_vec()
}

fn fixture(name: &str) -> Vec<u8> {
    let path = plugins::fixture_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A gateway config: one simulated upstream, `redact` as output validator.
fn config(policy: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[admin]
token = "{ADMIN_TOKEN}"

[store]
path = "data"

[upstreams.sim]
kind = "simulated"
model = "usf-mini"

[upstreams.sim.simulator]
latency_ms = 1
jitter_ms = 0

[plugins.redact]
source = "builtin:pii-redact"
failure_policy = "{policy}"

{extra}

[pipeline]
output_validators = ["redact"]
"#
    )
}

/// One chat request as end user `user`; the status and the answer text
/// (or the error body).
async fn answer_as(gw: &Gateway, user: &str, content: &str) -> (u16, String) {
    let (status, body) = gw
        .post(
            "/v1/chat/completions",
            &json!({
                "model": "usf-mini",
                "user": user,
                "messages": [{"role": "user", "content": content}],
            }),
        )
        .await;
    let text = body["choices"][0]["message"]["content"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string());
    (status, text)
}

/// [`answer_as`] for one steady end user.
async fn answer(gw: &Gateway, content: &str) -> (u16, String) {
    answer_as(gw, "tester", content).await
}

/// The digest of the version the `redact` slot serves.
async fn live_digest(gw: &Gateway) -> String {
    let (status, body) = gw.admin_get("/admin/plugins/redact").await;
    assert_eq!(status, 200, "{body}");
    body["live"]["digest"].as_str().unwrap().to_string()
}

/// The state of the `redact` slot's rollout.
async fn rollout_status(gw: &Gateway) -> Value {
    let (status, body) = gw.admin_get("/admin/plugins/redact/rollout").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Sends requests (checking each succeeds) until the rollout reaches
/// `phase`, at most `max` requests; returns the final status.
async fn drive_until(gw: &Gateway, phase: &str, max: usize) -> Value {
    for i in 0..max {
        let (status, text) = answer(gw, EMAIL_PROMPT).await;
        assert_eq!(status, 200, "request {i} failed: {text}");
        if i % 5 == 4 {
            let rollout = rollout_status(gw).await;
            if rollout["phase"] == phase {
                return rollout;
            }
        }
    }
    panic!(
        "rollout never reached {phase} in {max} requests: {:#}",
        rollout_status(gw).await
    );
}

/// Polls `check` up to `tries` times, 50 ms apart.
async fn eventually<F, Fut>(tries: usize, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..tries {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swap_under_load_fails_no_request_and_switches_every_client_to_the_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Arc::new(Gateway::start_in(dir.path(), &config("closed", "")).await);
    let swapped = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (gw, swapped, served) = (gw.clone(), swapped.clone(), served.clone());
        clients.push(tokio::spawn(async move {
            // (sent after the swap completed, status, answer)
            let mut seen = Vec::new();
            let mut after = 0;
            while after < 10 {
                let was_swapped = swapped.load(Ordering::SeqCst);
                let (status, text) = answer_as(&gw, &format!("client-{c}"), EMAIL_PROMPT).await;
                served.fetch_add(1, Ordering::SeqCst);
                seen.push((was_swapped, status, text));
                after += usize::from(was_swapped);
            }
            seen
        }));
    }
    assert!(eventually(200, || async { served.load(Ordering::SeqCst) >= 40 }).await);
    let (status, body) = gw
        .admin_put("/admin/plugins/redact?version=2.0.0", fixture("slow_ok"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["live"]["version"], "2.0.0");
    assert_eq!(body["live"]["digest"], sha256_hex(&fixture("slow_ok")));
    swapped.store(true, Ordering::SeqCst);

    let mut before_swap_old = 0;
    for client in clients {
        let seen = client.await.unwrap();
        let mut switched = false;
        for (was_swapped, status, text) in &seen {
            assert_eq!(*status, 200, "a request failed during the swap: {text}");
            match text.as_str() {
                REDACTED => {
                    assert!(!was_swapped, "old version served after the swap");
                    assert!(!switched, "a client went back to the old version");
                    before_swap_old += 1;
                }
                UNREDACTED => switched = true,
                other => panic!("unexpected answer {other}"),
            }
        }
        assert!(switched, "client never saw the new version");
    }
    assert!(
        before_swap_old > 0,
        "no request was served by the old version"
    );
    let (_, view) = gw.admin_get("/admin/plugins").await;
    let slot = &view["plugins"][0];
    assert_eq!(slot["name"], "redact");
    assert_eq!(slot["live"]["version"], "2.0.0");
    assert!(slot["live"]["calls"].as_u64().unwrap() >= 80, "{slot}");
    Arc::into_inner(gw).unwrap().stop().await;
}

#[tokio::test]
async fn bad_uploads_are_refused_with_422_and_the_old_version_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), &config("closed", "")).await;
    let original = live_digest(&gw).await;
    assert_eq!(original, sha256_hex(&builtin("pii-redact")));

    let (status, body) = gw
        .admin_put("/admin/plugins/redact", b"junk bytes".to_vec())
        .await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`redact`") && message.contains("not a WebAssembly component"),
        "{message}"
    );

    let (status, body) = gw
        .admin_put("/admin/plugins/redact", builtin("cost-router"))
        .await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("does not fit world `validator`"),
        "{message}"
    );

    let (status, body) = gw
        .admin_put("/admin/plugins/redact?version=9.9.9", fixture("trap"))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "plugin_rejected");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("redact@9.9.9")
            && message.contains("smoke call")
            && message.contains("trapped"),
        "{message}"
    );

    let (status, body) = gw
        .admin_put("/admin/plugins/nope", fixture("slow_ok"))
        .await;
    assert_eq!(status, 404, "{body}");

    assert_eq!(live_digest(&gw).await, original);
    assert_eq!(answer(&gw, EMAIL_PROMPT).await, (200, REDACTED.to_string()));
    gw.stop().await;
}

/// What `plugin inspect` says of the `kv-validator` fixture, a validator
/// that also imports `kv` (and would keep one request's message for the next).
const KV_VALIDATOR_SENTENCE: &str = "exports `validate` like a validator but imports \
     `agentrouter:plugin/kv@0.1.0`, which the validator world does not provide";

#[tokio::test]
async fn serve_refuses_a_validator_that_imports_kv() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("leaky.wasm");
    std::fs::write(&wasm, fixture("kv_validator")).unwrap();
    let toml = config("closed", "").replace(
        "source = \"builtin:pii-redact\"",
        "source = \"leaky.wasm\"\nworld = \"validator\"",
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    let config = agentrouter::config::Config::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let Err(err) = agentrouter::app::App::build(&config).await else {
        panic!("a validator importing kv was served");
    };
    let message = err.to_string();
    assert!(
        message.contains("plugin `redact`")
            && message.contains("leaky.wasm")
            && message.ends_with(KV_VALIDATOR_SENTENCE),
        "{message}"
    );
}

#[tokio::test]
async fn uploads_of_a_validator_that_imports_kv_are_refused_with_422() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), &config("closed", "")).await;
    let original = live_digest(&gw).await;
    for path in ["/admin/plugins/redact", "/admin/plugins/redact/candidate"] {
        let (status, body) = gw.admin_put(path, fixture("kv_validator")).await;
        assert_eq!(status, 422, "{path}: {body}");
        assert_eq!(body["error"]["code"], "plugin_rejected", "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("plugin `redact` (admin upload")
                && message.contains(") does not fit world `validator`: ")
                && message.ends_with(KV_VALIDATOR_SENTENCE),
            "{path}: {message}"
        );
    }
    assert_eq!(live_digest(&gw).await, original);
    // Two requests in a row: neither sees the other's message.
    assert_eq!(answer(&gw, EMAIL_PROMPT).await, (200, REDACTED.to_string()));
    assert_eq!(answer(&gw, EMAIL_PROMPT).await, (200, REDACTED.to_string()));
    gw.stop().await;
}

#[tokio::test]
async fn reload_refuses_a_validator_that_imports_kv_and_keeps_the_running_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("leaky.wasm"), fixture("kv_validator")).unwrap();
    let gw = Gateway::start_in(dir.path(), &config("closed", "")).await;
    let leaky = config(
        "closed",
        "[plugins.leaky]\nsource = \"leaky.wasm\"\nworld = \"validator\"\n",
    )
    .replace(
        "output_validators = [\"redact\"]",
        "input_validators = [\"leaky\"]\noutput_validators = [\"redact\"]",
    );
    std::fs::write(dir.path().join("gateway.toml"), &leaky).unwrap();
    let (status, body) = gw.admin_post("/admin/reload", &json!({})).await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("running config stays")
            && message.contains("plugin `leaky`")
            && message.ends_with(KV_VALIDATOR_SENTENCE),
        "{message}"
    );
    let (_, view) = gw.admin_get("/admin/plugins").await;
    let slots: Vec<&str> = view["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(slots, ["redact"], "{view}");
    // The old config serves, and no request sees another's message.
    assert_eq!(answer(&gw, EMAIL_PROMPT).await, (200, REDACTED.to_string()));
    assert_eq!(answer(&gw, "second request").await.0, 200);
    gw.stop().await;
}

#[tokio::test]
async fn agent_swaps_are_smoke_tested_by_instantiation_and_serve_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[plugins.helper]\nsource = \"builtin:worker\"\n[plugins.helper.settings]\nrole = \"researcher\"\n";
    let gw = Gateway::start_in(dir.path(), &config("closed", extra)).await;
    let invoke = || async {
        let (status, body) = gw
            .post("/v1/agents/helper/invoke", &json!({"input": "hello"}))
            .await;
        assert_eq!(status, 200);
        body["output"].as_str().unwrap().to_string()
    };
    let before = invoke().await;

    let (status, body) = gw
        .admin_put("/admin/plugins/helper", builtin("pii-redact"))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not fit world `agent`"),
        "{body}"
    );

    // The same worker under another version label: instantiated, then live.
    let (status, body) = gw
        .admin_put("/admin/plugins/helper?version=2.0.0", builtin("worker"))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, view) = gw.admin_get("/admin/plugins/helper").await;
    assert_eq!(view["live"]["version"], "2.0.0");
    assert_eq!(view["world"], "agent");
    // The smoke probe instantiated it once without calling the LLM.
    assert_eq!(view["live"]["calls"], 1, "{view}");
    assert_eq!(invoke().await, before);
    gw.stop().await;
}

#[tokio::test]
async fn admin_api_needs_the_token_and_is_off_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), &config("closed", "")).await;
    let url = gw.url("/admin/plugins");
    let resp = gw.send(gw.client.get(&url)).await;
    assert_eq!(resp.status, 401);
    let resp = gw.send(gw.client.get(&url).bearer_auth("wrong")).await;
    assert_eq!(resp.status, 401);
    let resp = gw
        .send(
            gw.client
                .put(gw.url("/admin/plugins/redact"))
                .body(fixture("slow_ok")),
        )
        .await;
    assert_eq!(resp.status, 401);
    assert_eq!(live_digest(&gw).await, sha256_hex(&builtin("pii-redact")));
    gw.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let toml = config("closed", "").replace(&format!("[admin]\ntoken = \"{ADMIN_TOKEN}\""), "");
    let gw = Gateway::start_in(dir.path(), &toml).await;
    let (status, body) = gw.admin_get("/admin/plugins").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "admin_disabled");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[admin] token")
    );
    gw.stop().await;
}

/// Uploads `wasm` as the slot's candidate and starts a rollout of it.
async fn roll_out(gw: &Gateway, wasm: Vec<u8>, rollout: Value) -> Value {
    let digest = sha256_hex(&wasm);
    let (status, body) = gw.admin_put("/admin/plugins/redact/candidate", wasm).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["digest"], digest);
    let (status, body) = gw
        .admin_post("/admin/plugins/redact/rollout", &rollout)
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["phase"], "active");
    assert_eq!(body["candidate"]["digest"], digest);
    body
}

#[tokio::test]
async fn canary_of_a_trapping_candidate_rolls_back_by_itself() {
    // Fail-open: a candidate trap is counted by the controller but the
    // client still gets an answer (fail-closed would turn it into a 500).
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), &config("open", "")).await;
    roll_out(
        &gw,
        fixture("trap"),
        json!({"mode": "canary", "percent": 50, "step": 10, "interval_s": 0.05,
               "min_samples": 5, "max_error_rate": 0.2, "max_latency_ratio": 1000}),
    )
    .await;
    let status = drive_until(&gw, "rolled_back", 400).await;
    let reason = status["reason"].as_str().unwrap();
    assert!(
        reason.contains("error rate") && reason.contains("max_error_rate"),
        "{reason}"
    );
    let candidate = &status["arms"]["candidate"];
    assert!(candidate["errors"].as_u64().unwrap() >= 5, "{status:#}");
    assert_eq!(candidate["errors"], candidate["calls"], "{status:#}");
    assert_eq!(status["arms"]["stable"]["errors"], 0);
    assert!(status["events"].to_string().contains("rolled back"));
    assert_eq!(live_digest(&gw).await, sha256_hex(&builtin("pii-redact")));
    assert_eq!(answer(&gw, EMAIL_PROMPT).await, (200, REDACTED.to_string()));
    // Ended: promote has nothing to act on.
    let (code, _) = gw
        .admin_post("/admin/plugins/redact/rollout/promote", &json!({}))
        .await;
    assert_eq!(code, 409);
    gw.stop().await;
}

#[tokio::test]
async fn canary_of_a_healthy_candidate_steps_up_and_promotes() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), &config("closed", "")).await;
    roll_out(
        &gw,
        fixture("slow_ok"),
        json!({"mode": "canary", "percent": 20, "step": 40, "interval_s": 0.05,
               "min_samples": 3, "max_error_rate": 0.1, "max_latency_ratio": 1000}),
    )
    .await;
    let status = drive_until(&gw, "promoted", 600).await;
    assert_eq!(status["arms"]["candidate"]["errors"], 0);
    let events = status["events"].to_string();
    assert!(events.contains("raised to 60%"), "{events}");
    assert_eq!(live_digest(&gw).await, sha256_hex(&fixture("slow_ok")));
    assert_eq!(
        answer(&gw, EMAIL_PROMPT).await,
        (200, UNREDACTED.to_string())
    );
    gw.stop().await;
}

#[tokio::test]
async fn shadow_of_a_failing_candidate_reaches_no_client_and_records_diffs() {
    // Fail-closed, so a shadow failure that leaked would be a 500.
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), &config("closed", "")).await;
    roll_out(&gw, fixture("trap"), json!({"mode": "shadow"})).await;
    for _ in 0..20 {
        assert_eq!(answer(&gw, EMAIL_PROMPT).await, (200, REDACTED.to_string()));
    }
    let mirrored = |s: &Value| {
        let shadow = &s["shadow"];
        shadow["candidate_error"].as_u64().unwrap() + shadow["dropped"].as_u64().unwrap()
    };
    assert!(eventually(100, || async { mirrored(&rollout_status(&gw).await) == 20 }).await);
    let status = rollout_status(&gw).await;
    let shadow = &status["shadow"];
    assert!(
        shadow["candidate_error"].as_u64().unwrap() >= 1,
        "{status:#}"
    );
    assert_eq!(shadow["same"], 0);
    let sample = &shadow["samples"][0];
    assert_eq!(sample["outcome"], "candidate_error");
    assert!(
        sample["candidate"].as_str().unwrap().contains("trapped"),
        "{sample}"
    );
    assert!(
        sample["stable"]
            .as_str()
            .unwrap()
            .contains("[REDACTED_EMAIL]"),
        "{sample}"
    );
    assert_eq!(status["arms"]["stable"]["errors"], 0);

    // A candidate that answers differently: diffs, not errors.
    let (code, body) = gw
        .admin_post("/admin/plugins/redact/rollout/rollback", &json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["phase"], "rolled_back");
    roll_out(&gw, fixture("slow_ok"), json!({"mode": "shadow"})).await;
    for _ in 0..10 {
        assert_eq!(answer(&gw, EMAIL_PROMPT).await, (200, REDACTED.to_string()));
    }
    let compared = |s: &Value| {
        let shadow = &s["shadow"];
        ["same", "different", "candidate_error", "dropped"]
            .iter()
            .map(|k| shadow[*k].as_u64().unwrap())
            .sum::<u64>()
    };
    assert!(eventually(100, || async { compared(&rollout_status(&gw).await) == 10 }).await);
    let status = rollout_status(&gw).await;
    assert!(
        status["shadow"]["different"].as_u64().unwrap() >= 1,
        "{status:#}"
    );
    assert_eq!(status["shadow"]["candidate_error"], 0);
    assert_eq!(status["shadow"]["samples"][0]["candidate"], "allow");
    gw.stop().await;
}

#[tokio::test]
async fn shadow_of_a_router_compares_the_chosen_upstream() {
    let dir = tempfile::tempdir().unwrap();
    // Two upstreams for one model: cost-router tries the cheap one first,
    // chaos-router (after the host drops its junk) keeps the configured order.
    let extra = r#"
[upstreams.a-pricey]
kind = "simulated"
model = "usf-mini"
input_cost_per_1k = 1.0
output_cost_per_1k = 1.0

[plugins.router]
source = "builtin:cost-router"
"#;
    let toml = config("closed", extra)
        .replace("[upstreams.sim]", "[upstreams.b-cheap]")
        .replace("[upstreams.sim.simulator]", "[upstreams.b-cheap.simulator]")
        .replace("[pipeline]", "[pipeline]\nrouter = \"router\"");
    let gw = Gateway::start_in(dir.path(), &toml).await;
    let wasm = fixture("chaos_router");
    let (status, body) = gw.admin_put("/admin/plugins/router/candidate", wasm).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = gw
        .admin_post("/admin/plugins/router/rollout", &json!({"mode": "shadow"}))
        .await;
    assert_eq!(status, 201, "{body}");
    for _ in 0..10 {
        assert_eq!(answer(&gw, EMAIL_PROMPT).await, (200, REDACTED.to_string()));
    }
    let shadow = || async {
        let (status, body) = gw.admin_get("/admin/plugins/router/rollout").await;
        assert_eq!(status, 200, "{body}");
        body["shadow"].clone()
    };
    assert!(
        eventually(100, || async {
            let s = shadow().await;
            s["different"].as_u64().unwrap() + s["dropped"].as_u64().unwrap() == 10
        })
        .await,
        "{}",
        shadow().await
    );
    let s = shadow().await;
    assert_eq!(
        (s["same"].as_u64(), s["candidate_error"].as_u64()),
        (Some(0), Some(0))
    );
    let sample = &s["samples"][0];
    assert_eq!(
        (&sample["stable"], &sample["candidate"]),
        (&json!("b-cheap"), &json!("a-pricey"))
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ab_assignment_is_sticky_per_client_over_100_requests() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Arc::new(Gateway::start_in(dir.path(), &config("closed", "")).await);
    roll_out(
        &gw,
        fixture("slow_ok"),
        json!({"mode": "ab", "percent": 50}),
    )
    .await;
    let mut clients = Vec::new();
    for c in 0..8 {
        let gw = gw.clone();
        clients.push(tokio::spawn(async move {
            let mut answers = std::collections::BTreeSet::new();
            for _ in 0..100 {
                let (status, text) = answer_as(&gw, &format!("user-{c}"), EMAIL_PROMPT).await;
                assert_eq!(status, 200, "{text}");
                answers.insert(text);
            }
            answers
        }));
    }
    let mut arms = std::collections::BTreeMap::new();
    for (c, client) in clients.into_iter().enumerate() {
        let answers = client.await.unwrap();
        assert_eq!(answers.len(), 1, "client {c} switched arms: {answers:?}");
        *arms.entry(answers.into_iter().next().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(arms.len(), 2, "both arms should have clients: {arms:?}");
    let status = rollout_status(&gw).await;
    let (stable, candidate) = (&status["arms"]["stable"], &status["arms"]["candidate"]);
    assert_eq!(
        stable["calls"].as_u64().unwrap() + candidate["calls"].as_u64().unwrap(),
        800
    );
    assert_eq!(stable["calls"].as_u64().unwrap(), 100 * arms[REDACTED]);
    let z = &status["ab_test"];
    assert_eq!(z["p_value"], 1.0, "{status:#}");
    assert_eq!(z["significant"], false);
    Arc::into_inner(gw).unwrap().stop().await;
}

#[tokio::test]
async fn restart_mid_rollout_resumes_it_and_keeps_promoted_versions() {
    let dir = tempfile::tempdir().unwrap();
    let toml = config("closed", "");
    let gw = Gateway::start_in(dir.path(), &toml).await;
    // min_samples out of reach: the canary stays at 30% until promoted.
    let started = roll_out(
        &gw,
        fixture("slow_ok"),
        json!({"mode": "canary", "percent": 30, "interval_s": 0.05, "min_samples": 1000000}),
    )
    .await;
    for _ in 0..10 {
        assert_eq!(answer(&gw, EMAIL_PROMPT).await.0, 200);
    }
    gw.stop().await;

    let gw = Gateway::start_in(dir.path(), &toml).await;
    let status = rollout_status(&gw).await;
    assert_eq!(status["phase"], "active", "{status:#}");
    assert_eq!(status["mode"], "canary");
    assert_eq!(status["percent"], 30.0);
    assert_eq!(status["candidate"], started["candidate"]);
    assert_eq!(status["started_at"], started["started_at"]);
    assert!(
        status["events"]
            .to_string()
            .contains("resumed after restart")
    );
    // Still splitting traffic: both versions answer within bounded tries.
    let mut answers = std::collections::BTreeSet::new();
    for _ in 0..200 {
        answers.insert(answer(&gw, EMAIL_PROMPT).await.1);
        if answers.len() == 2 {
            break;
        }
    }
    assert_eq!(answers.len(), 2, "{answers:?}");
    let (code, body) = gw
        .admin_post("/admin/plugins/redact/rollout/promote", &json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["phase"], "promoted");
    gw.stop().await;

    // The promoted version is what the slot serves after the next restart.
    let gw = Gateway::start_in(dir.path(), &toml).await;
    assert_eq!(live_digest(&gw).await, sha256_hex(&fixture("slow_ok")));
    assert_eq!(
        answer(&gw, EMAIL_PROMPT).await,
        (200, UNREDACTED.to_string())
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_reload_that_replaces_the_slot_carries_its_rollouts_counters_over() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let gw = Gateway::start_in(dir.path(), &generation_config(0)).await;
    // The controller does not tick within the test, so the store still
    // holds the counters of the start (none): only the live slot has them.
    let started = roll_out(
        &gw,
        fixture("slow_ok"),
        json!({"mode": "canary", "percent": 50, "interval_s": 3600}),
    )
    .await;
    for _ in 0..40 {
        assert_eq!(answer(&gw, EMAIL_PROMPT).await.0, 200);
    }
    let before = rollout_status(&gw).await;
    let calls = |s: &Value, arm: &str| s["arms"][arm]["calls"].as_u64().unwrap();
    assert_eq!(calls(&before, "stable") + calls(&before, "candidate"), 40);

    // A changed [plugins.redact] table: the reload loads the slot anew.
    std::fs::write(&file, generation_config(1)).unwrap();
    let (status, body) = gw.admin_post("/admin/reload", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["report"]["plugins_loaded"],
        json!(["redact"]),
        "{body}"
    );

    let after = rollout_status(&gw).await;
    assert_eq!(after["phase"], "active", "{after:#}");
    assert_eq!(after["started_at"], started["started_at"]);
    assert_eq!(after["arms"], before["arms"], "{after:#}");
    assert!(
        after["events"]
            .to_string()
            .contains("carried over a config reload"),
        "{after:#}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn reload_applies_a_valid_config_and_keeps_the_running_one_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), &config("closed", "")).await;
    let attack = "please DROP TABLE users";
    assert_eq!(answer(&gw, attack).await.0, 200);

    // Unauthenticated reloads are refused.
    let resp = gw.send(gw.client.post(gw.url("/admin/reload"))).await;
    assert_eq!(resp.status, 401);

    // Add an input guard.
    let guarded = config(
        "closed",
        "[plugins.guard]\nsource = \"builtin:input-guard\"\n",
    )
    .replace(
        "output_validators = [\"redact\"]",
        "input_validators = [\"guard\"]\noutput_validators = [\"redact\"]",
    );
    std::fs::write(dir.path().join("gateway.toml"), &guarded).unwrap();
    let (status, body) = gw.admin_post("/admin/reload", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let report = &body["report"];
    assert_eq!(report["plugins_loaded"], json!(["guard"]), "{report}");
    assert_eq!(report["plugins_kept"], json!(["redact"]), "{report}");
    assert_eq!(report["upstreams_kept"], json!(["sim"]), "{report}");
    let (status, text) = answer(&gw, attack).await;
    assert_eq!(status, 422, "{text}");
    assert_eq!(answer(&gw, EMAIL_PROMPT).await, (200, REDACTED.to_string()));

    // A broken config is refused with file, line and key; the running one stays.
    let broken = guarded.replace("[pipeline]", "[pipeline]\nrouter = \"guard\"");
    std::fs::write(dir.path().join("gateway.toml"), &broken).unwrap();
    let (status, body) = gw.admin_post("/admin/reload", &json!({})).await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    let line = broken
        .lines()
        .position(|l| l.starts_with("router = "))
        .unwrap()
        + 1;
    assert!(
        message.contains(&format!("gateway.toml:{line}: pipeline.router"))
            && message.contains("running config stays"),
        "{message}"
    );
    assert_eq!(answer(&gw, attack).await.0, 422);
    assert_eq!(answer(&gw, EMAIL_PROMPT).await, (200, REDACTED.to_string()));
    gw.stop().await;
}

#[tokio::test]
async fn watch_reloads_a_plugin_when_its_wasm_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("redact.wasm");
    std::fs::write(&wasm, builtin("pii-redact")).unwrap();
    let toml = config("closed", "").replace(
        "source = \"builtin:pii-redact\"",
        "source = \"redact.wasm\"\nworld = \"validator\"",
    );
    let gw = Gateway::start_watching(dir.path(), &toml).await;
    assert_eq!(live_digest(&gw).await, sha256_hex(&builtin("pii-redact")));

    let replace = |bytes: Vec<u8>| {
        // As a build tool does it: write elsewhere, rename over.
        let tmp: PathBuf = dir.path().join("redact.wasm.tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &wasm).unwrap();
    };
    replace(fixture("slow_ok"));
    let new = sha256_hex(&fixture("slow_ok"));
    assert!(
        eventually(200, || async { live_digest(&gw).await == new }).await,
        "the new file was never picked up"
    );
    assert_eq!(
        answer(&gw, EMAIL_PROMPT).await,
        (200, UNREDACTED.to_string())
    );

    // A broken file is refused (logged); the watch keeps working.
    replace(b"not wasm".to_vec());
    replace(builtin("pii-redact"));
    let back = sha256_hex(&builtin("pii-redact"));
    assert!(eventually(200, || async { live_digest(&gw).await == back }).await);
    assert_eq!(answer(&gw, EMAIL_PROMPT).await, (200, REDACTED.to_string()));
    gw.stop().await;
}

/// The test config with `generation` in the slot's settings: a changed
/// `[plugins.redact]` table, so a reload loads the slot anew and restores
/// it from the store (the reload path that takes the control plane's guard
/// and then restores under it).
fn generation_config(generation: u64) -> String {
    config("closed", "").replace(
        "failure_policy = \"closed\"",
        &format!(
            "failure_policy = \"closed\"\n[plugins.redact.settings]\ngeneration = \"{generation}\""
        ),
    )
}

/// Awaits `task`, failing (rather than hanging) if it never returns.
async fn returns<T>(what: &str, task: tokio::task::JoinHandle<T>) -> T {
    // A bound on a hang, not on speed: every operation here takes
    // milliseconds, so only a deadlock comes near it.
    match tokio::time::timeout(Duration::from_secs(300), task).await {
        Ok(result) => result.unwrap(),
        Err(_) => panic!("{what} never returned: the control plane is stuck"),
    }
}

// Reloads here follow each other faster than the canary's `interval_s`:
// this test is what found that a reload resumed the rollout from its last
// persisted counters and so stalled the canary (see `Rollouts::restore`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_swaps_and_rollouts_run_concurrently_under_load_and_leave_one_consistent_state() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let gw = Arc::new(Gateway::start_in(dir.path(), &generation_config(0)).await);

    // Client traffic throughout: every answer is a 200 from one version.
    let stop_traffic = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (gw, stop) = (gw.clone(), stop_traffic.clone());
        clients.push(tokio::spawn(async move {
            let (mut served, mut failed) = (0u64, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let (status, text) = answer_as(&gw, &format!("client-{c}"), EMAIL_PROMPT).await;
                served += 1;
                if status != 200 || (text != REDACTED && text != UNREDACTED) {
                    failed.push((status, text));
                }
            }
            (served, failed)
        }));
    }

    // Reloads, each replacing the slot, until told to stop (at least six).
    let stop_reloads = Arc::new(AtomicBool::new(false));
    let reloader = tokio::spawn({
        let (gw, stop, file) = (gw.clone(), stop_reloads.clone(), file.clone());
        async move {
            let mut generation = 0;
            while generation < 6 || !stop.load(Ordering::SeqCst) {
                generation += 1;
                std::fs::write(&file, generation_config(generation)).unwrap();
                let (status, body) = gw.admin_post("/admin/reload", &json!({})).await;
                assert_eq!(status, 200, "reload {generation}: {body}");
                assert_eq!(
                    body["report"]["plugins_loaded"],
                    json!(["redact"]),
                    "{body}"
                );
            }
            generation
        }
    });

    // Straight swaps, alternating two versions.
    let swapper = tokio::spawn({
        let gw = gw.clone();
        async move {
            for round in 0..6 {
                let wasm = if round % 2 == 0 {
                    fixture("slow_ok")
                } else {
                    builtin("pii-redact")
                };
                let (status, body) = gw
                    .admin_put(
                        &format!("/admin/plugins/redact?version=2.0.{round}"),
                        wasm.clone(),
                    )
                    .await;
                assert_eq!(status, 200, "swap {round}: {body}");
                assert_eq!(body["live"]["digest"], sha256_hex(&wasm), "{body}");
            }
        }
    });

    // Candidate uploads and rollouts: a canary its controller steps and ends,
    // an A/B the operator promotes, a shadow the operator rolls back.
    let rollouts = tokio::spawn({
        let gw = gw.clone();
        async move {
            let rounds = [
                (
                    fixture("slow_ok"),
                    json!({"mode": "canary", "percent": 50, "step": 50, "interval_s": 0.02, "min_samples": 3}),
                    None,
                ),
                (
                    builtin("pii-redact"),
                    json!({"mode": "ab", "percent": 50}),
                    Some("promote"),
                ),
                (
                    fixture("slow_ok"),
                    json!({"mode": "shadow"}),
                    Some("rollback"),
                ),
            ];
            for (wasm, request, end) in rounds {
                let (status, body) = gw.admin_put("/admin/plugins/redact/candidate", wasm).await;
                assert_eq!(status, 201, "{body}");
                let (status, body) = gw
                    .admin_post("/admin/plugins/redact/rollout", &request)
                    .await;
                assert_eq!(status, 201, "{body}");
                match end {
                    Some(end) => {
                        let path = format!("/admin/plugins/redact/rollout/{end}");
                        let (status, body) = gw.admin_post(&path, &json!({})).await;
                        assert_eq!(status, 200, "{end}: {body}");
                    }
                    // Nobody else ends it: once the slot has no candidate,
                    // its controller has promoted or rolled it back.
                    None => assert!(
                        eventually(2000, || async {
                            gw.admin_get("/admin/plugins/redact").await.1["candidate"].is_null()
                        })
                        .await,
                        "the canary controller never ended its rollout"
                    ),
                }
            }
        }
    });

    returns("the rollouts", rollouts).await;
    returns("the swaps", swapper).await;
    // The last change to the slot, while reloads and traffic go on.
    let last = fixture("slow_ok");
    let (status, body) = gw
        .admin_put("/admin/plugins/redact?version=final", last.clone())
        .await;
    assert_eq!(status, 200, "{body}");
    stop_reloads.store(true, Ordering::SeqCst);
    let reloads = returns("the reloads", reloader).await;
    assert!(reloads >= 6, "{reloads}");
    stop_traffic.store(true, Ordering::SeqCst);
    let mut served = 0;
    for client in clients {
        let (count, failed) = returns("a client", client).await;
        assert!(failed.is_empty(), "failed client requests: {failed:?}");
        served += count;
    }
    assert!(served > 0);

    // The slot serves what the last operation installed, and says so.
    let expect = |view: &Value| {
        let slot = &view["plugins"][0];
        assert_eq!(slot["name"], "redact");
        assert_eq!(slot["live"]["digest"], sha256_hex(&last), "{slot:#}");
        assert_eq!(slot["live"]["version"], "final", "{slot:#}");
        assert!(slot["candidate"].is_null(), "{slot:#}");
        assert_ne!(slot["rollout"]["phase"], "active", "{slot:#}");
    };
    expect(&gw.admin_get("/admin/plugins").await.1);
    for _ in 0..10 {
        assert_eq!(
            answer(&gw, EMAIL_PROMPT).await,
            (200, UNREDACTED.to_string())
        );
    }
    Arc::into_inner(gw).unwrap().stop().await;

    // And the store agrees: a restart serves the same, with no rollout.
    let toml = std::fs::read_to_string(&file).unwrap();
    let gw = Gateway::start_in(dir.path(), &toml).await;
    expect(&gw.admin_get("/admin/plugins").await.1);
    assert_eq!(
        answer(&gw, EMAIL_PROMPT).await,
        (200, UNREDACTED.to_string())
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_steps_while_reloads_come_faster_than_its_interval() {
    // Every reload replaces the slot and restarts its controller. A
    // controller that started its wait anew each time would never tick
    // while reloads come more often than `interval_s`, and the canary
    // would stall for as long as they do (what the concurrent test above
    // caught now and then).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let gw = Arc::new(Gateway::start_in(dir.path(), &generation_config(0)).await);
    let (status, body) = gw
        .admin_put("/admin/plugins/redact/candidate", fixture("slow_ok"))
        .await;
    assert_eq!(status, 201, "{body}");
    // Healthy by any measure: the first tick that runs promotes it.
    let canary = json!({"mode": "canary", "percent": 50, "step": 50, "interval_s": 0.3,
                        "min_samples": 1, "max_latency_ratio": 1000.0});
    let (status, body) = gw
        .admin_post("/admin/plugins/redact/rollout", &canary)
        .await;
    assert_eq!(status, 201, "{body}");
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn({
        let (gw, stop) = (gw.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::SeqCst) {
                answer(&gw, EMAIL_PROMPT).await;
            }
        }
    });
    // Reloads back to back, each far quicker than the 300 ms interval,
    // until the canary has ended (or for 30 s at most).
    let mut reloads = 0;
    let started = std::time::Instant::now();
    let ended = loop {
        reloads += 1;
        std::fs::write(&file, generation_config(reloads)).unwrap();
        let (status, body) = gw.admin_post("/admin/reload", &json!({})).await;
        assert_eq!(status, 200, "reload {reloads}: {body}");
        let slot = gw.admin_get("/admin/plugins/redact").await.1;
        if slot["candidate"].is_null() {
            break Some(slot);
        }
        if started.elapsed() > Duration::from_secs(30) {
            break None;
        }
    };
    stop.store(true, Ordering::SeqCst);
    returns("the traffic", traffic).await;
    let slot = ended.expect("the canary never ended while reloads went on");
    assert_eq!(slot["rollout"]["phase"], "promoted", "{slot:#}");
    Arc::into_inner(gw).unwrap().stop().await;
}

/// Kills the child process when dropped, so a failing test leaves none behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn agentrouter_serve_watch_picks_up_a_replaced_plugin_file() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("redact.wasm");
    std::fs::write(&wasm, builtin("pii-redact")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let toml = config("closed", "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        .replace(
            "source = \"builtin:pii-redact\"",
            "source = \"redact.wasm\"\nworld = \"validator\"",
        );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let _child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_agentrouter"))
            .args(["serve", "--watch", "--config"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::new();
    let digest = || async {
        let resp = client
            .get(format!("http://127.0.0.1:{port}/admin/plugins/redact"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .ok()?;
        let body: Value = resp.json().await.ok()?;
        body["live"]["digest"].as_str().map(str::to_string)
    };
    let logs = || std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    let old = sha256_hex(&builtin("pii-redact"));
    // Generous: the child compiles its plugin while the other tests of this
    // binary keep both cores busy.
    assert!(
        eventually(1200, || async {
            digest().await.as_deref() == Some(old.as_str())
        })
        .await,
        "the gateway did not come up: {}",
        logs()
    );
    let tmp = dir.path().join("redact.wasm.tmp");
    std::fs::write(&tmp, fixture("slow_ok")).unwrap();
    std::fs::rename(&tmp, &wasm).unwrap();
    let new = sha256_hex(&fixture("slow_ok"));
    assert!(
        eventually(1200, || async {
            digest().await.as_deref() == Some(new.as_str())
        })
        .await,
        "the new file was never picked up: {}",
        logs()
    );
    // Logged before the swap; `serve` writes its log lines every 10 ms
    // (telemetry::log_buffer), so the line may trail the new digest.
    let swapped = |log: &str| {
        log.contains("plugin swapped (file changed)") && log.contains(&old) && log.contains(&new)
    };
    assert!(
        eventually(100, || async { swapped(&logs()) }).await,
        "{}",
        logs()
    );
}

/// Upload-to-serving time: from the start of `PUT /admin/plugins/{name}`
/// to the first answer served by the new version. Run with
/// `cargo test -p agentrouter --release --test rollout -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, not a check; prints figures"]
async fn measure_upload_to_serving() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), &config("closed", "")).await;
    // Alternate two versions: the first upload of each compiles (AOT cache
    // miss), every later one loads the cached artifact.
    let versions = [
        (fixture("slow_ok"), UNREDACTED),
        (builtin("pii-redact"), REDACTED),
    ];
    for round in 0..6 {
        let (wasm, expected) = &versions[round % 2];
        let cold = round == 0;
        let started = Instant::now();
        let (status, body) = gw.admin_put("/admin/plugins/redact", wasm.clone()).await;
        assert_eq!(status, 200, "{body}");
        let swapped = started.elapsed();
        assert_eq!(answer(&gw, EMAIL_PROMPT).await.1, *expected);
        let serving = started.elapsed();
        println!(
            "round {round} ({} bytes, {}): upload+compile+smoke+swap {:.1} ms, first answer from new version at {:.1} ms",
            wasm.len(),
            if cold {
                "AOT cache miss"
            } else {
                "AOT cache hit"
            },
            swapped.as_secs_f64() * 1000.0,
            serving.as_secs_f64() * 1000.0
        );
    }
    gw.stop().await;
}
