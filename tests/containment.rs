//! Containment: what a plugin can make the host do is bounded, and every
//! failure names its cause.
//!
//! Misbehaving fixture plugins (`plugins/fixtures/hostile-agent`,
//! `rewriter`, `bad-recovery`) are loaded by config next to healthy ones,
//! through real HTTP. For each way a plugin can ask too much — a fan-out
//! of 10 000 tasks, thousands of LLM calls or delegations, 100 000 kv
//! writes — the hostile request gets a typed answer naming the plugin and
//! the config key that bounds it, 50 neighbour requests sent meanwhile keep
//! succeeding, and the gateway's memory stays bounded. Rewrites that break
//! the host's rules and nonsense recovery decisions are refused naming the
//! plugin and what it decided.

mod support;

use agentrouter::plugins;
use serde_json::{Value, json};
use support::{Gateway, SimServer, chat, series, steady};

fn fixture(name: &str) -> String {
    plugins::fixture_dir()
        .join(format!("{name}.wasm"))
        .display()
        .to_string()
}

/// A gateway config: upstream `sim` serving `m` from `up`, the builtin
/// input guard on every request, a hostile agent slot `hostile` and a
/// worker slot `worker` (the same fixture, answering with one completion),
/// and `extra`.
fn config(up: &SimServer, extra: &str) -> String {
    let agent = fixture("hostile_agent");
    up.config(&format!(
        r#"
[plugins.guard]
source = "builtin:input-guard"

[plugins.hostile]
source = "{agent}"
world = "agent"

[plugins.worker]
source = "{agent}"
world = "agent"

[pipeline]
input_validators = ["guard"]

{extra}
"#
    ))
}

/// Resident memory of this process (the gateway runs in it), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Invokes agent `hostile` on `input` while 50 neighbour requests (a plain
/// completion of model `m`, through the input guard) run; returns the
/// hostile answer and how many neighbours succeeded.
async fn with_neighbours(gw: &Gateway, input: &str) -> ((u16, Value), usize) {
    let body = json!({ "input": input });
    let hostile = gw.post("/v1/agents/hostile/invoke", &body);
    let neighbours = futures::future::join_all((0..50).map(|i| async move {
        // Spread over the hostile request's run.
        tokio::time::sleep(std::time::Duration::from_millis(i * 5)).await;
        gw.chat(&chat("m", &format!("neighbour {i}"))).await.status
    }));
    let (answer, statuses) = tokio::join!(hostile, neighbours);
    let ok = statuses.iter().filter(|s| **s == 200).count();
    (answer, ok)
}

fn output(body: &Value) -> &str {
    body["output"]
        .as_str()
        .unwrap_or_else(|| panic!("no output in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_of_ten_thousand_tasks_is_bounded_and_neighbours_keep_being_served() {
    let up = SimServer::start(steady(20), &["m"]).await;
    let gw = Gateway::start(&config(
        &up,
        r#"
[runtime]
pool_instances = 32

[budgets.request]
max_plugin_instances = 8

[plugins.hostile.budget]
max_call_all_tasks = 16
max_call_all_concurrency = 4
"#,
    ))
    .await;
    let before = rss_bytes();
    let ((status, body), ok) = with_neighbours(&gw, "fanout 10000 worker").await;
    assert_eq!(status, 200, "{body}");
    let text = output(&body);
    assert!(text.starts_with("ok=16 denied=9984 failed=0"), "{text}");
    assert!(
        text.contains(
            "denied: call-all of 10000 tasks: only the first 16 run; agent `hostile` may start 16 tasks per call-all (plugins.hostile.budget.max_call_all_tasks)"
        ),
        "{text}"
    );
    assert!(ok >= 49, "only {ok} of 50 neighbours succeeded");
    // One step records the refused tasks; the 16 delegations are steps too.
    let steps = body["steps"].as_array().unwrap();
    let refused: Vec<&Value> = steps.iter().filter(|s| s["ok"] == false).collect();
    assert_eq!(refused.len(), 1, "{steps:#?}");
    assert_eq!(refused[0]["target"], "call-all");
    assert_eq!(steps.iter().filter(|s| s["target"] == "worker").count(), 16);
    let metrics = gw.metrics().await;
    assert_eq!(
        series(
            &metrics,
            r#"agentrouter_budget_denials_total{agent="hostile",scope="agent_call",resource="call_all_tasks"}"#
        ),
        1.0
    );
    // Nothing is held once the request is done.
    assert_eq!(series(&metrics, "agentrouter_plugin_instances_in_use"), 0.0);
    let grown = rss_bytes().saturating_sub(before);
    eprintln!("gateway RSS grew by {} KiB", grown / 1024);
    assert!(grown < 64 << 20, "RSS grew by {grown} bytes");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_takes_at_most_its_share_of_the_pool() {
    let up = SimServer::start(steady(50), &["m"]).await;
    // Concurrency 8 but a share of 4: the agent and three workers at once.
    let gw = Gateway::start(&config(
        &up,
        r#"
[runtime]
pool_instances = 16

[budgets.request]
max_plugin_instances = 4

[plugins.hostile.budget]
max_call_all_tasks = 8
max_call_all_concurrency = 8
"#,
    ))
    .await;
    let ((status, body), ok) = with_neighbours(&gw, "fanout 8 worker").await;
    assert_eq!(status, 200, "{body}");
    let text = output(&body);
    assert!(
        text.contains("denied=") && !text.contains("denied=0"),
        "{text}"
    );
    assert!(
        text.contains(
            "the request may use 4 plugin instances at once and has used 4 (budgets.request.max_plugin_instances); worker@"
        ),
        "{text}"
    );
    assert!(ok >= 49, "only {ok} of 50 neighbours succeeded");
    let metrics = gw.metrics().await;
    assert!(
        series(
            &metrics,
            r#"agentrouter_plugin_admissions_refused_total{scope="request"}"#
        ) >= 1.0,
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_names_the_request_and_plugins_that_hold_it() {
    let fast = SimServer::start(steady(0), &["m"]).await;
    let slow = SimServer::start(steady(3000), &["slow"]).await;
    // A pool of 8 and a share of the whole pool (a misconfiguration that
    // lets one request fill it): the agent and 7 workers waiting on a slow
    // model hold every instance.
    let gw = Gateway::start(&config(
        &fast,
        &format!(
            r#"
{}

[runtime]
pool_instances = 8
# Spares of the guard would serve the neighbour from the slots they hold
# until the hostile request reclaims them: this test is about a pool the
# hostile request holds entirely.
spare_instances = 0

[budgets.request]
max_plugin_instances = 8

[plugins.worker.settings]
model = "slow"

[plugins.guard.limits]
timeout_ms = 200
"#,
            slow.upstream("slow", "slow", "")
        ),
    ))
    .await;
    let body = json!({"input": "fanout 7 worker"});
    let hostile = gw.post("/v1/agents/hostile/invoke", &body);
    let neighbour = async {
        // Bounded poll until the hostile request holds the whole pool.
        for _ in 0..200 {
            let metrics = gw.metrics().await;
            if series(&metrics, "agentrouter_plugin_instances_in_use") == 8.0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        gw.chat(&chat("m", "hello")).await
    };
    let ((status, body), reply) = tokio::join!(hostile, neighbour);
    assert_eq!(status, 200, "{body}");
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert_eq!(reply.code(), "plugin_capacity");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains(
            "the plugin instance pool is full (8 instances, runtime.pool_instances): request task-"
        ),
        "{message}"
    );
    assert!(message.contains("holds 8 (worker@"), "{message}");
    assert!(message.contains("×7, hostile@"), "{message}");
    // The plugin that found it full is not blamed for it.
    assert!(
        message.ends_with("guard@0.1.0 was not started"),
        "{message}"
    );
    gw.stop().await;
}

/// The answer of agent `hostile` to `input` in a gateway with `extra`
/// config, with 50 neighbours alongside; the body of `/invoke`.
async fn hostile_run(extra: &str, input: &str) -> (Value, String) {
    let up = SimServer::start(steady(5), &["m"]).await;
    let gw = Gateway::start(&config(&up, extra)).await;
    let ((status, body), ok) = with_neighbours(&gw, input).await;
    assert_eq!(status, 200, "{body}");
    assert!(ok >= 49, "only {ok} of 50 neighbours succeeded");
    let metrics = gw.metrics().await;
    gw.stop().await;
    (body, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_calls_budget_of_llm_calls_is_a_denied_result_it_can_answer_with() {
    let (body, metrics) =
        hostile_run("[plugins.hostile.budget]\nmax_llm_calls = 5\n", "llm 5000").await;
    assert_eq!(
        output(&body),
        "calls=5; stopped: denied: budget exceeded: this call of agent `hostile` may use 5 LLM calls and has used 5 (plugins.hostile.budget.max_llm_calls)"
    );
    let steps = body["steps"].as_array().unwrap();
    assert_eq!(
        steps
            .iter()
            .filter(|s| s["ok"] == true && s["kind"] == "completion")
            .count(),
        5
    );
    let denied: Vec<&Value> = steps.iter().filter(|s| s["ok"] == false).collect();
    assert_eq!(denied.len(), 1, "{steps:#?}");
    assert_eq!(denied[0]["caller"], "hostile");
    assert!(
        denied[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("denied: budget exceeded")
    );
    assert_eq!(
        series(
            &metrics,
            r#"agentrouter_budget_denials_total{agent="hostile",scope="agent_call",resource="llm_calls"}"#
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_budget_bounds_every_agent_in_it_together() {
    // Each worker makes one completion; the request allows 3 in all, the
    // manager-like hostile agent's own budget would allow 100.
    let (body, metrics) = hostile_run(
        "[budgets.request]\nmax_llm_calls = 3\n",
        "delegate 10 worker",
    )
    .await;
    assert_eq!(
        output(&body),
        "delegations=3; stopped: denied: budget exceeded: the request may use 3 LLM calls and has used 3 (budgets.request.max_llm_calls)"
    );
    assert_eq!(
        series(
            &metrics,
            r#"agentrouter_budget_denials_total{agent="worker",scope="request",resource="llm_calls"}"#
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_delegations_and_wall_time_are_budgeted_too() {
    let (body, _) = hostile_run("[budgets.request]\nmax_tokens = 40\n", "llm 5000").await;
    let text = output(&body);
    assert!(text.starts_with("calls="), "{text}");
    assert!(
        text.ends_with("(budgets.request.max_tokens)") && text.contains("may use 40 tokens"),
        "{text}"
    );

    let (body, _) = hostile_run(
        "[plugins.hostile.budget]\nmax_delegations = 2\n",
        "delegate 1000 worker",
    )
    .await;
    assert_eq!(
        output(&body),
        "delegations=2; stopped: denied: budget exceeded: this call of agent `hostile` may use 2 delegations and has used 2 (plugins.hostile.budget.max_delegations)"
    );

    let (body, metrics) = hostile_run(
        "[plugins.hostile.budget]\nmax_wall_ms = 150\n",
        "llm 100000",
    )
    .await;
    let text = output(&body);
    assert!(
        text.contains(
            "stopped: denied: budget exceeded: this call of agent `hostile` may use 150 ms"
        ) && text.ends_with("(plugins.hostile.budget.max_wall_ms)"),
        "{text}"
    );
    assert_eq!(
        series(
            &metrics,
            r#"agentrouter_budget_denials_total{agent="hostile",scope="agent_call",resource="wall_time"}"#
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_quotas_refuse_writes_through_kv_set_and_bound_memory() {
    let up = SimServer::start(steady(5), &["m"]).await;
    let gw = Gateway::start(&config(
        &up,
        r#"
[plugins.hostile.limits]
kv_max_keys = 1000

[plugins.worker.limits]
kv_max_total_bytes = 100000
kv_max_value_bytes = 2048
"#,
    ))
    .await;
    let before = rss_bytes();
    let ((status, body), ok) = with_neighbours(&gw, "kv 100000 1024").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        output(&body),
        "written=1000; refused: kv quota of plugin `hostile`: at most 1000 keys (limits.kv_max_keys); the namespace holds 1000"
    );
    assert!(ok >= 49, "only {ok} of 50 neighbours succeeded");
    // Byte quotas hold per namespace: `worker` has its own.
    let (status, body) = gw
        .post(
            "/v1/agents/worker/invoke",
            &json!({"input": "kv 1000 1024"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let text = output(&body);
    assert!(
        text.starts_with("written=97; refused: kv quota of plugin `worker`: at most 100000 bytes of keys and values (limits.kv_max_total_bytes)"),
        "{text}"
    );
    // A value over the per-value limit is refused too.
    let (_, body) = gw
        .post("/v1/agents/worker/invoke", &json!({"input": "kv 1 4096"}))
        .await;
    assert_eq!(
        output(&body),
        "written=0; refused: value is 4096 bytes, limit is 2048 (limits.kv_max_value_bytes)"
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        series(
            &metrics,
            r#"agentrouter_kv_writes_refused_total{plugin="worker",reason="too_large"}"#
        ),
        1.0
    );
    assert_eq!(
        series(&metrics, r#"agentrouter_kv_keys{plugin="hostile"}"#),
        1000.0
    );
    assert_eq!(
        series(&metrics, r#"agentrouter_kv_keys{plugin="worker"}"#),
        97.0
    );
    assert!(
        series(
            &metrics,
            r#"agentrouter_kv_writes_refused_total{plugin="hostile",reason="quota"}"#
        ) >= 1.0
    );
    let grown = rss_bytes().saturating_sub(before);
    eprintln!("gateway RSS grew by {} KiB", grown / 1024);
    assert!(grown < 64 << 20, "RSS grew by {grown} bytes");
    gw.stop().await;
}

/// The reply to a chat completion through a gateway whose only validator
/// (input, or output when `output`) is the `rewriter` fixture in `mode`,
/// and how many requests reached the upstream.
async fn rewritten(mode: &str, count: u32, output: bool) -> (support::Reply, u64) {
    let up = SimServer::start(steady(0), &["m"]).await;
    let stage = if output {
        "output_validators"
    } else {
        "input_validators"
    };
    let gw = Gateway::start(&up.config(&format!(
        r#"
[plugins.rewriter]
source = "{}"
world = "validator"

[plugins.rewriter.settings]
mode = "{mode}"
count = "{count}"

[pipeline]
{stage} = ["rewriter"]
"#,
        fixture("rewriter")
    )))
    .await;
    let reply = gw.chat(&chat("m", "hello")).await;
    gw.stop().await;
    (reply, up.requests())
}

#[tokio::test]
async fn validator_rewrites_are_held_to_the_rules_of_the_clients_request() {
    for (mode, count, rule) in [
        ("empty", 0, "`messages` must contain at least one message"),
        (
            "many",
            20_000,
            "`messages` has 20000 messages; the limit is 1024 (server.max_messages)",
        ),
        (
            "long",
            300_000,
            "`messages[0].content` has 300000 characters; the limit is 262144 (server.max_message_chars)",
        ),
    ] {
        let (reply, upstream_requests) = rewritten(mode, count, false).await;
        assert_eq!(reply.status, 500, "{mode}: {}", reply.text);
        assert_eq!(reply.code(), "plugin_error");
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            message.starts_with("validator rewriter@")
                && message.contains("rewrote the input into something the host refuses: ")
                && message.ends_with(rule),
            "{mode}: {message}"
        );
        // Nothing the host refuses was sent upstream.
        assert_eq!(upstream_requests, 0, "{mode}");
    }
    let (reply, _) = rewritten("system", 0, true).await;
    assert_eq!(reply.status, 500, "{}", reply.text);
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("rewrote the output into something the host refuses: the answer's last message has role `system`"),
        "{message}"
    );
}

/// A chat completion of `m` against an upstream that fails as `script`
/// says, with recovery slot `recovery` from `source` and `settings`, and
/// `server` lines added to `[server]`.
async fn recovered(source: &str, settings: &str, script: &str, server: &str) -> support::Reply {
    let up = SimServer::start(
        agentrouter::upstream::SimSettings {
            script: script.split(',').map(str::to_string).collect(),
            ..steady(0)
        },
        &["m"],
    )
    .await;
    let config = up.config(&format!(
        r#"
[plugins.recovery]
source = "{source}"
world = "recovery"

[plugins.recovery.settings]
{settings}

[pipeline]
recovery = "recovery"
"#
    ));
    let gw =
        Gateway::start(&config.replacen("[server]\n", &format!("[server]\n{server}\n"), 1)).await;
    let reply = gw.chat(&chat("m", "an 18-char prompt.")).await;
    gw.stop().await;
    reply
}

fn message(reply: &support::Reply) -> String {
    reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", reply.text))
        .to_string()
}

#[tokio::test]
async fn nonsense_recovery_decisions_are_refused_naming_the_plugin() {
    let bad = fixture("bad_recovery");
    let reply = recovered(&bad, r#"action = "chunk:0""#, "500,500", "").await;
    // Not a 400 blaming the client's 18-character prompt.
    assert_eq!(reply.status, 500, "{}", reply.text);
    assert_eq!(reply.code(), "plugin_error");
    let text = message(&reply);
    assert!(
        text.starts_with("recovery recovery@")
            && text.ends_with(
                "asked chunk-and-retry(0) after upstream `sim` failed (upstream answered HTTP 500): invalid: a chunk must hold at least one character"
            ),
        "{text}"
    );

    let reply = recovered(
        &bad,
        r#"action = "retry:90000""#,
        "500,500",
        "request_timeout_ms = 5000",
    )
    .await;
    let text = message(&reply);
    assert!(
        text.contains("asked retry(90000 ms) after upstream `sim` failed")
            && text.contains("refused: the request's deadline is in"),
        "{text}"
    );

    let reply = recovered(&bad, r#"action = "fallback:nowhere""#, "500,500", "").await;
    let text = message(&reply);
    assert!(
        text.ends_with("refused: no upstream `nowhere` serves model `m` or its fallback chain"),
        "{text}"
    );

    let reply = recovered(&bad, r#"action = "refine-empty""#, "500,500", "").await;
    assert!(
        message(&reply).ends_with("refused: `messages` must contain at least one message"),
        "{}",
        reply.text
    );

    // A plugin's decision to give up is named in the upstream failure.
    let reply = recovered(&bad, r#"action = "fail""#, "500", "").await;
    assert_eq!(reply.status, 502, "{}", reply.text);
    assert_eq!(
        message(&reply),
        format!(
            "upstream failure for model `m`: upstream answered HTTP 500 (recovery recovery@{} asked fail)",
            &agentrouter::runtime::sha256_hex(&std::fs::read(&bad).unwrap())[..12]
        )
    );
}

#[tokio::test]
async fn the_first_party_recovery_asked_for_zero_sized_chunks_is_named_not_the_client() {
    // The issue's case: standard-recovery configured with chunk_chars = 0,
    // after the upstream says the context overflowed.
    let reply = recovered(
        "builtin:standard-recovery",
        r#"chunk_chars = "0""#,
        "context,context",
        "",
    )
    .await;
    assert_eq!(reply.status, 500, "{}", reply.text);
    let text = message(&reply);
    assert!(
        text.starts_with("recovery recovery@")
            && text.contains("asked chunk-and-retry(0) after upstream `sim` failed (token limit exceeded): invalid"),
        "{text}"
    );
    assert_ne!(reply.code(), "context_length_exceeded");
}

/// Why `Config::parse` refuses `text`.
fn refused(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    agentrouter::config::Config::parse(text, "test.toml", dir.path())
        .unwrap_err()
        .to_string()
}

#[tokio::test]
async fn reusing_an_agents_instance_is_refused_naming_the_key() {
    let up = SimServer::start(steady(0), &["m"]).await;
    let agent = fixture("hostile_agent");
    let extra = format!(
        "[plugins.reused]\nsource = \"{agent}\"\nworld = \"agent\"\nisolation = \"reuse\"\n"
    );
    let err = refused(&config(&up, &extra));
    assert!(
        err.contains("plugins.reused.isolation")
            && err.contains("only for validator, router and recovery slots"),
        "{err}"
    );
}

#[tokio::test]
async fn budget_config_mistakes_are_refused_naming_the_key() {
    let up = SimServer::start(steady(0), &["m"]).await;
    let err = refused(&config(&up, "[plugins.guard.budget]\nmax_llm_calls = 3\n"));
    assert!(
        err.contains("plugins.guard.budget") && err.contains("only for agent slots"),
        "{err}"
    );
    let err = refused(&config(
        &up,
        "[budgets.request]\nmax_plugin_instances = 999\n",
    ));
    assert!(
        err.contains("budgets.request.max_plugin_instances")
            && err.contains("more than the whole pool (runtime.pool_instances = 256)"),
        "{err}"
    );
}
