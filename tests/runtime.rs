//! The plugin runtime, exercised with the real first-party plugins and with
//! misbehaving fixture plugins (`plugins/fixtures/`), all built for
//! wasm32-wasip2 by the host's build script.

use agentrouter::domain::*;
use agentrouter::plugins;
use agentrouter::runtime::{
    AgentHost, Capabilities, DirGrant, EngineSettings, Isolation, LimitKind, Plugin, PluginError,
    PluginSource, PluginSpec, Runtime, RuntimeSettings, World, inspect,
};
use agentrouter::store::{KvStore, Store};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn runtime_with(settings: RuntimeSettings) -> (Runtime, Store) {
    let store = Store::temporary().unwrap();
    (
        Runtime::new(&settings, Arc::new(store.clone())).unwrap(),
        store,
    )
}

fn runtime() -> Runtime {
    runtime_with(RuntimeSettings::default()).0
}

fn fixture(name: &str) -> PathBuf {
    let file = if name == "wasi-command" {
        name.to_string()
    } else {
        name.replace('-', "_")
    };
    plugins::fixture_dir().join(format!("{file}.wasm"))
}

fn fixture_spec(name: &str, world: World) -> PluginSpec {
    PluginSpec::new(name, world, PluginSource::File(fixture(name)))
}

fn builtin(rt: &Runtime, name: &str, settings: &[(&str, &str)]) -> Plugin {
    let mut spec = plugins::get(name)
        .unwrap_or_else(|| panic!("builtin {name} is embedded"))
        .spec(name);
    spec.settings = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    rt.load(spec).unwrap()
}

fn texts(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.content.as_str()).collect()
}

// ---------------------------------------------------------------- validators

#[tokio::test]
async fn every_first_party_plugin_loads_into_its_world() {
    let rt = runtime();
    let names: Vec<&str> = plugins::all().map(|b| b.name).collect();
    for expected in [
        "manager",
        "worker",
        "input-guard",
        "pii-redact",
        "cost-router",
        "standard-recovery",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} is embedded: {names:?}"
        );
    }
    for b in plugins::all() {
        let plugin = rt.load(b.spec(b.name)).unwrap();
        assert_eq!(plugin.world(), b.world);
        assert_eq!(plugin.identity().digest.len(), 64);
    }
}

#[tokio::test]
async fn input_guard_rejects_blocked_patterns_and_rewrites_html() {
    let rt = runtime();
    let guard = builtin(&rt, "input-guard", &[]);
    let verdict = guard
        .validate(Stage::Input, &[Message::user("please DROP TABLE users;")])
        .await
        .unwrap();
    assert!(
        matches!(&verdict, Verdict::Reject(r) if r.contains("drop table")),
        "{verdict:?}"
    );
    // Full-width letters are normalised (NFKC) before matching.
    let verdict = guard
        .validate(Stage::Input, &[Message::user("ＤＲＯＰ ＴＡＢＬＥ x")])
        .await
        .unwrap();
    assert!(matches!(verdict, Verdict::Reject(_)), "{verdict:?}");
    let verdict = guard
        .validate(Stage::Input, &[Message::user("<b>bold</b> claim")])
        .await
        .unwrap();
    match verdict {
        Verdict::Rewrite(messages) => assert_eq!(texts(&messages), ["bold claim"]),
        other => panic!("expected a rewrite, got {other:?}"),
    }
    assert_eq!(
        guard
            .validate(Stage::Input, &[Message::user("a < b is fine")])
            .await
            .unwrap(),
        Verdict::Allow
    );
    assert_eq!(
        guard
            .validate(Stage::Output, &[Message::user("<script>")])
            .await
            .unwrap(),
        Verdict::Allow
    );

    let strict = builtin(&rt, "input-guard", &[("max_chars", "10")]);
    let verdict = strict
        .validate(
            Stage::Input,
            &[Message::user("far more than ten characters")],
        )
        .await
        .unwrap();
    assert!(
        matches!(&verdict, Verdict::Reject(r) if r.contains("limit is 10")),
        "{verdict:?}"
    );
    let rewriting = builtin(&rt, "input-guard", &[("mode", "rewrite")]);
    match rewriting
        .validate(Stage::Input, &[Message::user("read ../../etc/passwd")])
        .await
        .unwrap()
    {
        Verdict::Rewrite(messages) => {
            assert!(!messages[0].content.contains("../.."), "{messages:?}")
        }
        other => panic!("expected a rewrite, got {other:?}"),
    }
}

#[tokio::test]
async fn pii_redact_redacts_email_phone_and_luhn_valid_cards_in_output() {
    let rt = runtime();
    let redact = builtin(&rt, "pii-redact", &[]);
    let answer = Message::assistant(
        "Mail jane.doe@example.com or call +1 (415) 555-0100; card 4111 1111 1111 1111.",
    );
    match redact.validate(Stage::Output, &[answer]).await.unwrap() {
        Verdict::Rewrite(messages) => {
            let text = &messages[0].content;
            assert!(
                text.contains("[REDACTED_EMAIL]") && !text.contains("jane.doe"),
                "{text}"
            );
            assert!(
                text.contains("[REDACTED_PHONE]") && !text.contains("555-0100"),
                "{text}"
            );
            assert!(
                text.contains("[REDACTED_CARD]") && !text.contains("4111"),
                "{text}"
            );
        }
        other => panic!("expected a rewrite, got {other:?}"),
    }
    let clean =
        Message::assistant("In 2024 we shipped version 1.2.3; 4111 1111 1111 1112 fails Luhn.");
    let verdict = redact
        .validate(Stage::Output, std::slice::from_ref(&clean))
        .await
        .unwrap();
    match verdict {
        Verdict::Allow => {}
        Verdict::Rewrite(m) => assert!(
            !m[0].content.contains("[REDACTED_CARD]") && m[0].content.contains("2024"),
            "{m:?}"
        ),
        Verdict::Reject(r) => panic!("unexpected reject {r}"),
    }
    // Input is not its stage by default.
    let verdict = redact
        .validate(Stage::Input, &[Message::user("me@example.com")])
        .await
        .unwrap();
    assert_eq!(verdict, Verdict::Allow);
}

// ---------------------------------------------------------- router, recovery

fn candidate(name: &str, cost: f64, circuit: CircuitState, tags: &[&str]) -> Candidate {
    Candidate {
        name: name.into(),
        model: name.into(),
        input_cost_per_1k: cost,
        output_cost_per_1k: cost,
        ewma_latency_ms: 100.0,
        error_rate: 0.0,
        circuit,
        weight: 1,
        tags: tags.iter().map(|t| t.to_string()).collect(),
    }
}

#[tokio::test]
async fn cost_router_prefers_cheap_models_reasoning_on_request_and_skips_open_circuits() {
    let rt = runtime();
    let router = builtin(&rt, "cost-router", &[]);
    let candidates = vec![
        candidate("x1", 0.01, CircuitState::Closed, &["reasoning"]),
        candidate("mini", 0.001, CircuitState::Closed, &[]),
        candidate("broken", 0.0001, CircuitState::Open, &[]),
    ];
    let simple = RouteRequest {
        prompt_tokens: 20,
        message_count: 1,
        ..Default::default()
    };
    assert_eq!(
        router.route(&simple, &candidates).await.unwrap(),
        ["mini", "x1"]
    );
    let mut complex = simple.clone();
    complex.metadata.insert("complexity".into(), "high".into());
    assert_eq!(
        router.route(&complex, &candidates).await.unwrap(),
        ["x1", "mini"]
    );
}

#[tokio::test]
async fn router_garbage_is_sanitised_to_known_unique_candidates() {
    let rt = runtime();
    let chaos = rt
        .load(fixture_spec("chaos-router", World::Router))
        .unwrap();
    let candidates = vec![
        candidate("a", 1.0, CircuitState::Closed, &[]),
        candidate("b", 1.0, CircuitState::Closed, &[]),
    ];
    let order = chaos
        .route(&RouteRequest::default(), &candidates)
        .await
        .unwrap();
    assert_eq!(order.len(), 2, "{order:?}");
    assert!(order.contains(&"a".to_string()) && order.contains(&"b".to_string()));
}

fn failure_ctx(failure: Failure, attempt: u32, alternatives: &[&str]) -> FailureContext {
    FailureContext {
        failure,
        upstream: "primary".into(),
        attempt,
        max_attempts: 3,
        remaining_ms: 10_000,
        alternatives: alternatives.iter().map(|a| a.to_string()).collect(),
        request: CompletionRequest {
            messages: vec![Message::user("hi")],
            ..Default::default()
        },
    }
}

#[tokio::test]
async fn standard_recovery_chooses_an_action_per_failure() {
    let rt = runtime();
    let recovery = builtin(&rt, "standard-recovery", &[]);
    let act = |f, attempt, alts: &'static [&'static str]| {
        let recovery = &recovery;
        async move {
            recovery
                .recover(&failure_ctx(f, attempt, alts))
                .await
                .unwrap()
        }
    };
    assert_eq!(
        act(Failure::RateLimited(Some(1500)), 1, &[]).await,
        Action::Retry(1500)
    );
    assert_eq!(
        act(Failure::RateLimited(None), 2, &[]).await,
        Action::Retry(400)
    );
    assert_eq!(
        act(Failure::Timeout, 1, &["backup"]).await,
        Action::Fallback("backup".into())
    );
    assert_eq!(
        act(Failure::TokenLimitExceeded, 1, &[]).await,
        Action::ChunkAndRetry(4000)
    );
    match act(Failure::InvalidResponse("junk".into()), 1, &[]).await {
        Action::Refine(messages) => {
            assert!(messages.len() == 2 && messages[1].content.contains("could not be parsed"))
        }
        other => panic!("expected refine, got {other:?}"),
    }
    assert_eq!(
        act(Failure::UpstreamStatus(503), 1, &[]).await,
        Action::Retry(200)
    );
    assert_eq!(
        act(Failure::UpstreamStatus(503), 3, &["backup"]).await,
        Action::Fallback("backup".into())
    );
    assert_eq!(
        act(Failure::Internal("bug".into()), 1, &[]).await,
        Action::Fail(true)
    );
    assert_eq!(
        act(Failure::Rejected("no".into()), 1, &[]).await,
        Action::Fail(false)
    );
}

// -------------------------------------------------------------------- agents

/// A stand-in for the pipeline: a scripted model and real agent plugins.
struct ScriptedHost {
    agents: Mutex<HashMap<String, Arc<Plugin>>>,
    completions: AtomicU32,
    in_flight: AtomicU32,
    max_in_flight: AtomicU32,
    /// When set, delegations wait here until this many have started, which
    /// only succeeds if the host runs them concurrently.
    rendezvous: Option<Arc<tokio::sync::Barrier>>,
}

impl ScriptedHost {
    fn new(rendezvous: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            agents: Mutex::new(HashMap::new()),
            completions: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
            max_in_flight: AtomicU32::new(0),
            rendezvous: rendezvous.map(|n| Arc::new(tokio::sync::Barrier::new(n))),
        })
    }

    fn add(&self, name: &str, plugin: Plugin) {
        self.agents
            .lock()
            .unwrap()
            .insert(name.into(), Arc::new(plugin));
    }

    /// The scripted model: offers of tools get one delegation per tool; once
    /// tool results are in, a final answer quoting them; otherwise an answer
    /// naming the persona (system prompt) and the question.
    fn answer(req: &CompletionRequest) -> Completion {
        let tool_results: Vec<&Message> = req
            .messages
            .iter()
            .filter(|m| m.role == Role::Tool)
            .collect();
        let message = if !req.tools.is_empty() && tool_results.is_empty() {
            let mut m = Message::assistant("");
            m.tool_calls = req
                .tools
                .iter()
                .enumerate()
                .map(|(i, t)| ToolCall {
                    id: format!("call-{i}"),
                    name: t.name.clone(),
                    arguments: format!("{{\"task\": \"part for {}\"}}", t.name),
                })
                .collect();
            m
        } else if !tool_results.is_empty() {
            Message::assistant(format!(
                "final: {}",
                tool_results
                    .iter()
                    .map(|m| m.content.as_str())
                    .collect::<Vec<_>>()
                    .join(" + ")
            ))
        } else {
            let persona = req
                .messages
                .iter()
                .find(|m| m.role == Role::System)
                .map(|m| m.content.clone())
                .unwrap_or_default();
            let question = req
                .messages
                .last()
                .map(|m| m.content.clone())
                .unwrap_or_default();
            Message::assistant(format!("[{persona}] answers: {question}"))
        };
        let finish_reason = if message.tool_calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        };
        Completion {
            message,
            model: "scripted".into(),
            finish_reason: finish_reason.into(),
            usage: Usage::new(10, 5),
            cached: false,
            details: Default::default(),
        }
    }
}

struct HostHandle(Arc<ScriptedHost>);

impl AgentHost for HostHandle {
    fn complete(
        &self,
        _ctx: CallContext,
        req: CompletionRequest,
    ) -> BoxFuture<'static, Result<Completion, Failure>> {
        self.0.completions.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { Ok(ScriptedHost::answer(&req)) })
    }

    fn call_agent(
        &self,
        ctx: CallContext,
        agent: String,
        task: Task,
    ) -> BoxFuture<'static, Result<TaskResult, Failure>> {
        let host = self.0.clone();
        Box::pin(async move {
            // The host enters the callee (depth and cycle guards).
            let ctx = ctx.enter(&agent)?;
            let plugin = host.agents.lock().unwrap().get(&agent).cloned();
            let Some(plugin) = plugin else {
                return Err(Failure::Denied(format!("unknown agent {agent}")));
            };
            let now = host.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            host.max_in_flight.fetch_max(now, Ordering::SeqCst);
            if let Some(barrier) = &host.rendezvous
                && tokio::time::timeout(Duration::from_secs(10), barrier.wait())
                    .await
                    .is_err()
            {
                return Err(Failure::Internal(
                    "delegations did not run concurrently".into(),
                ));
            }
            let result = plugin
                .handle(&task, ctx, Arc::new(HostHandle(host.clone())))
                .await;
            host.in_flight.fetch_sub(1, Ordering::SeqCst);
            result.map_err(|e| Failure::Internal(e.to_string()))?
        })
    }

    fn call_all(
        &self,
        ctx: CallContext,
        calls: Vec<(String, Task)>,
    ) -> BoxFuture<'static, Vec<Result<TaskResult, Failure>>> {
        let calls: Vec<_> = calls
            .into_iter()
            .map(|(agent, task)| self.call_agent(ctx.clone(), agent, task))
            .collect();
        Box::pin(futures::future::join_all(calls))
    }
}

fn root_ctx(agent: &str) -> CallContext {
    CallContext::new("test-client", "req-1", Duration::from_secs(30))
        .enter(agent)
        .unwrap()
}

fn task(text: &str) -> Task {
    Task {
        id: "t1".into(),
        input: vec![Message::user(text)],
        metadata: Default::default(),
    }
}

#[tokio::test]
async fn worker_answers_in_its_persona_and_keeps_state_in_kv() {
    let (rt, store) = runtime_with(RuntimeSettings::default());
    let worker = builtin(
        &rt,
        "worker",
        &[("role", "researcher"), ("instructions", "Cite sources.")],
    );
    let host = ScriptedHost::new(None);
    for _ in 0..2 {
        let result = worker
            .handle(
                &task("What is WASI?"),
                root_ctx("researcher"),
                Arc::new(HostHandle(host.clone())),
            )
            .await;
        let result = result.unwrap().unwrap();
        assert!(
            result.output.content.contains("researcher")
                && result.output.content.contains("What is WASI?"),
            "{result:?}"
        );
        assert_eq!(result.usage, Usage::new(10, 5));
    }
    // The worker counts tasks in its kv namespace, backed by the sled store.
    let counter = store
        .get("worker", "tasks_handled")
        .unwrap()
        .expect("counter stored");
    assert_eq!(u64::from_le_bytes(counter.try_into().unwrap()), 2);
}

#[tokio::test]
async fn manager_delegates_to_both_workers_concurrently_and_sums_usage() {
    let rt = runtime();
    let host = ScriptedHost::new(Some(2));
    host.add(
        "researcher",
        builtin(&rt, "worker", &[("role", "researcher")]),
    );
    host.add("writer", builtin(&rt, "worker", &[("role", "writer")]));
    let manager = builtin(&rt, "manager", &[("workers", "researcher,writer")]);
    let result = manager
        .handle(
            &task("Write a note on WASI"),
            root_ctx("manager"),
            Arc::new(HostHandle(host.clone())),
        )
        .await
        .unwrap()
        .unwrap();
    let answer = &result.output.content;
    assert!(answer.starts_with("final: "), "{answer}");
    assert!(
        answer.contains("[You are the researcher.") && answer.contains("part for researcher"),
        "{answer}"
    );
    assert!(
        answer.contains("[You are the writer.") && answer.contains("part for writer"),
        "{answer}"
    );
    // Two manager completions (delegate, then answer) and one per worker.
    assert_eq!(host.completions.load(Ordering::SeqCst), 4);
    assert_eq!(result.usage, Usage::new(40, 20));
    assert_eq!(
        host.max_in_flight.load(Ordering::SeqCst),
        2,
        "delegations overlapped"
    );
}

#[tokio::test]
async fn agent_cycles_are_refused_by_the_host() {
    let rt = runtime();
    let host = ScriptedHost::new(None);
    host.add(
        "manager",
        builtin(&rt, "manager", &[("workers", "manager")]),
    );
    let manager = builtin(&rt, "manager", &[("workers", "manager")]);
    let result = manager
        .handle(
            &task("loop"),
            root_ctx("manager"),
            Arc::new(HostHandle(host.clone())),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(
        result
            .output
            .content
            .contains("agent cycle: manager → manager"),
        "{}",
        result.output.content
    );
    assert_eq!(
        host.max_in_flight.load(Ordering::SeqCst),
        0,
        "the cyclic call never reached the host"
    );
}

// -------------------------------------------------------------- containment

fn fast_limits(spec: &mut PluginSpec) {
    spec.limits.timeout_ms = 200;
    spec.limits.memory_mb = 16;
}

#[tokio::test]
async fn misbehaving_plugins_are_contained_while_healthy_ones_keep_answering() {
    let rt = runtime();
    let load = |name: &str| {
        let mut spec = fixture_spec(name, World::Validator);
        fast_limits(&mut spec);
        rt.load(spec).unwrap()
    };
    let (spin, hog, trap, garbage) = (load("spin"), load("hog"), load("trap"), load("garbage"));
    let guard = builtin(&rt, "input-guard", &[]);
    let hello = [Message::user("hello")];

    let healthy = async {
        let mut ok = 0;
        for _ in 0..50 {
            if guard.validate(Stage::Input, &hello).await.unwrap() == Verdict::Allow {
                ok += 1;
            }
        }
        ok
    };
    let (spin_r, hog_r, trap_r, garbage_r, ok) = tokio::join!(
        spin.validate(Stage::Input, &hello),
        hog.validate(Stage::Input, &hello),
        trap.validate(Stage::Input, &hello),
        garbage.validate(Stage::Input, &hello),
        healthy,
    );
    assert_eq!(ok, 50);

    match spin_r.unwrap_err() {
        PluginError::LimitExceeded {
            plugin,
            limit: LimitKind::WallClock,
            used,
            allowed,
        } => {
            assert!(plugin.starts_with("spin@"), "{plugin}");
            assert_eq!(allowed, 200);
            assert!(used >= 200, "used {used}");
        }
        other => panic!("spin: expected a wall-clock limit error, got {other}"),
    }
    match hog_r.unwrap_err() {
        e @ PluginError::LimitExceeded {
            limit: LimitKind::Memory,
            used,
            allowed,
            ..
        } => {
            assert_eq!(allowed, 16 << 20);
            assert!(used > allowed);
            let text = e.to_string();
            assert!(
                text.contains("hog@") && text.contains("memory limit"),
                "{text}"
            );
        }
        other => panic!("hog: expected a memory limit error, got {other}"),
    }
    match trap_r.unwrap_err() {
        PluginError::Trap { plugin, message } => {
            assert!(plugin.starts_with("trap@"));
            assert!(message.contains("deliberate panic"), "{message}");
        }
        other => panic!("trap: expected a trap, got {other}"),
    }
    match garbage_r.unwrap_err() {
        PluginError::InvalidOutput { plugin, detail } => {
            assert!(plugin.starts_with("garbage@"));
            assert!(detail.to_lowercase().contains("utf-8"), "{detail}");
        }
        other => panic!("garbage: expected invalid output, got {other}"),
    }
    assert_eq!(spin.stats().errors, 1);
    // The runtime is still healthy after all of that.
    assert_eq!(
        guard.validate(Stage::Input, &hello).await.unwrap(),
        Verdict::Allow
    );
}

fn sneaky_report(verdict: Verdict) -> String {
    match verdict {
        Verdict::Reject(report) => report,
        other => panic!("sneaky reports through a reject, got {other:?}"),
    }
}

#[tokio::test]
async fn plugins_get_no_files_environment_or_sockets_unless_granted() {
    let rt = runtime();
    let sneaky = rt.load(fixture_spec("sneaky", World::Validator)).unwrap();
    let report = sneaky_report(sneaky.validate(Stage::Input, &[]).await.unwrap());
    assert!(report.contains("fs_read=err"), "{report}");
    assert!(report.contains("read_dir=err"), "{report}");
    assert!(report.contains("env_home=none"), "{report}");
    assert!(report.contains("env_count=0"), "{report}");
    assert!(!report.contains("tcp=ok"), "{report}");

    // Grants are honoured, and only what is granted.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("passwd"), "granted file").unwrap();
    let mut spec = fixture_spec("sneaky", World::Validator);
    spec.capabilities = Capabilities {
        env: vec!["PATH".into()],
        dirs: vec![DirGrant {
            host: dir.path().to_path_buf(),
            guest: "/etc".into(),
            writable: false,
        }],
        ..Default::default()
    };
    let granted = rt.load(spec).unwrap();
    let report = sneaky_report(granted.validate(Stage::Input, &[]).await.unwrap());
    assert!(report.contains("fs_read=ok"), "{report}");
    // PATH was granted; HOME was not.
    assert!(
        report.contains("env_home=none") && report.contains("env_count=1"),
        "{report}"
    );
}

#[tokio::test]
async fn fuel_is_counted_for_every_call_and_enforced_when_limited() {
    let rt = runtime();
    let load = |iterations: &str, fuel: Option<u64>| {
        let mut spec = fixture_spec("slow-ok", World::Validator);
        spec.settings.insert("iterations".into(), iterations.into());
        spec.limits.fuel = fuel;
        rt.load(spec).unwrap()
    };
    let small = load("1000", None);
    let large = load("100000", None);
    assert_eq!(
        small.validate(Stage::Input, &[]).await.unwrap(),
        Verdict::Allow
    );
    assert_eq!(
        large.validate(Stage::Input, &[]).await.unwrap(),
        Verdict::Allow
    );
    let (small_fuel, large_fuel) = (small.stats().last_fuel, large.stats().last_fuel);
    assert!(
        small_fuel > 0 && large_fuel > small_fuel * 10,
        "{small_fuel} vs {large_fuel}"
    );

    let limited = load("100000", Some(small_fuel * 2));
    match limited.validate(Stage::Input, &[]).await.unwrap_err() {
        PluginError::LimitExceeded {
            limit: LimitKind::Fuel,
            allowed,
            ..
        } => assert_eq!(allowed, small_fuel * 2),
        other => panic!("expected a fuel limit error, got {other}"),
    }
}

/// What the `remember` fixture says when its instance served no call
/// before this one.
const FIRST_CALL: &str = "calls=1;previous=none";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_gets_an_instance_of_its_own_whether_made_ahead_or_on_the_call() {
    for spares in [2, 0] {
        let (rt, _store) = runtime_with(RuntimeSettings {
            engine: EngineSettings {
                spare_instances: spares,
                ..Default::default()
            },
            cache_dir: None,
        });
        let plugin = rt.load(fixture_spec("remember", World::Validator)).unwrap();
        plugin.warm().await.unwrap();
        if spares > 0 {
            // Made in the background after the warm-up.
            for _ in 0..500 {
                if plugin.spares_ready() == spares as usize {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(plugin.spares_ready(), spares as usize);
        }
        let call = |i: usize| {
            let plugin = &plugin;
            async move {
                let secret = [Message::user(format!("secret {i}"))];
                plugin.validate(Stage::Input, &secret).await.unwrap()
            }
        };
        for i in 0..20 {
            assert_eq!(
                call(i).await,
                Verdict::Reject(FIRST_CALL.into()),
                "call {i}"
            );
        }
        let concurrent = futures::future::join_all((20..36).map(call)).await;
        assert!(
            concurrent
                .iter()
                .all(|v| *v == Verdict::Reject(FIRST_CALL.into())),
            "{concurrent:?}"
        );
        let stats = plugin.stats();
        assert_eq!(stats.calls, 36);
        if spares > 0 {
            assert!(stats.spare_calls >= 1, "{stats:?}");
        } else {
            assert_eq!(stats.spare_calls, 0, "{stats:?}");
            assert_eq!(plugin.spares_ready(), 0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_instance_carries_what_it_kept_into_later_calls_until_it_traps() {
    // The trade `isolation = "reuse"` makes, shown as it is: the guest's
    // memory reaches the next call (any request's), and a trap ends it.
    let rt = runtime();
    let mut spec = fixture_spec("remember", World::Validator);
    spec.isolation = Isolation::Reuse;
    let reused = rt.load(spec).unwrap();
    let per_call = rt.load(fixture_spec("remember", World::Validator)).unwrap();
    async fn validate(plugin: &Plugin, text: &str) -> Result<Verdict, PluginError> {
        plugin.validate(Stage::Input, &[Message::user(text)]).await
    }
    let verdict = |text: &str| Verdict::Reject(text.into());
    assert_eq!(validate(&reused, "a").await.unwrap(), verdict(FIRST_CALL));
    assert_eq!(
        validate(&reused, "b").await.unwrap(),
        verdict("calls=2;previous=a")
    );
    assert_eq!(validate(&per_call, "b").await.unwrap(), verdict(FIRST_CALL));
    let err = validate(&reused, "trap").await.unwrap_err();
    assert!(
        matches!(err, PluginError::Trap { .. })
            && err
                .to_string()
                .contains("asked to trap after calls=3;previous=b"),
        "{err}"
    );
    // The instance that trapped is gone: the next call starts fresh.
    assert_eq!(validate(&reused, "c").await.unwrap(), verdict(FIRST_CALL));
    assert_eq!(
        validate(&reused, "d").await.unwrap(),
        verdict("calls=2;previous=c")
    );
    let stats = reused.stats();
    assert_eq!((stats.calls, stats.errors, stats.reused_calls), (5, 1, 3));
    assert_eq!(per_call.stats().reused_calls, 0);
}

#[tokio::test]
async fn only_stateless_worlds_may_reuse_an_instance() {
    let rt = runtime();
    let mut spec = fixture_spec("hostile-agent", World::Agent);
    spec.isolation = Isolation::Reuse;
    let err = rt.load(spec).unwrap_err();
    assert!(
        matches!(
            err,
            PluginError::InvalidConfig {
                key: "isolation",
                ..
            }
        ),
        "{err}"
    );
}

// ------------------------------------------------------------- loading

#[tokio::test]
async fn components_that_do_not_fit_the_slot_world_are_refused_with_the_reason() {
    let rt = runtime();
    let guard = plugins::get("input-guard").unwrap();
    let mut spec = guard.spec("guard-as-router");
    spec.world = World::Router;
    let err = rt.load(spec).unwrap_err();
    assert!(
        matches!(
            err,
            PluginError::WorldMismatch {
                world: World::Router,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("guard-as-router")
            && text.contains("route")
            && text.contains("`validator` world"),
        "{text}"
    );

    let err = rt
        .load(fixture_spec("foreign-import", World::Validator))
        .unwrap_err()
        .to_string();
    assert!(err.contains("acme:vault"), "{err}");
    let err = rt
        .load(fixture_spec("wasi-command", World::Agent))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("wasi-command") && err.contains("handle"),
        "{err}"
    );
}

/// What `agentrouter plugin inspect` says of the `kv-validator` fixture.
const KV_VALIDATOR_SENTENCE: &str = "exports `validate` like a validator but imports \
     `agentrouter:plugin/kv@0.1.0`, which the validator world does not provide";

#[tokio::test]
async fn a_validator_importing_kv_is_refused_at_load_in_the_words_of_plugin_inspect() {
    let rt = runtime();
    let path = fixture("kv-validator");
    let bytes = std::fs::read(&path).unwrap();
    let inspected = inspect::inspect(rt.engine(), &bytes).unwrap();
    assert_eq!(
        inspect::read(&bytes).unwrap(),
        inspected,
        "read without compiling"
    );
    assert!(
        inspected
            .imports
            .iter()
            .any(|i| i == "agentrouter:plugin/kv@0.1.0"),
        "the fixture really imports kv: {:?}",
        inspected.imports
    );
    assert_eq!(
        inspected.world.unwrap_err().to_string(),
        KV_VALIDATOR_SENTENCE
    );

    for source in [
        PluginSource::File(path.clone()),
        PluginSource::Bytes {
            origin: "admin upload".into(),
            bytes: bytes.clone().into(),
        },
    ] {
        let origin = source.origin();
        let err = rt
            .load(PluginSpec::new("leaky", World::Validator, source))
            .unwrap_err();
        match &err {
            PluginError::WorldMismatch {
                plugin,
                origin: got,
                world: World::Validator,
                detail,
            } => {
                assert_eq!(plugin, "leaky");
                assert_eq!(got, &origin);
                assert_eq!(detail, KV_VALIDATOR_SENTENCE);
            }
            other => panic!("expected a world mismatch, got {other}"),
        }
        assert!(
            err.to_string().starts_with(&format!(
                "plugin `leaky` ({origin}) does not fit world `validator`"
            )),
            "{err}"
        );
    }

    // An agent imports kv legitimately, but not in a validator's slot: the
    // validator world's linker holds no kv.
    let mut spec = plugins::get("worker").unwrap().spec("worker-as-validator");
    spec.world = World::Validator;
    let err = rt.load(spec).unwrap_err().to_string();
    assert!(
        err.contains("the validator world does not provide")
            && err.contains("implements the `agent` world"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_files_digests_and_limits_get_errors_naming_plugin_and_path() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.wasm");
    let err = rt
        .load(PluginSpec::new(
            "ghost",
            World::Validator,
            PluginSource::File(missing.clone()),
        ))
        .unwrap_err();
    assert!(matches!(err, PluginError::Read { .. }));
    assert!(
        err.to_string().contains("ghost") && err.to_string().contains("nope.wasm"),
        "{err}"
    );

    let corrupt = dir.path().join("corrupt.wasm");
    std::fs::write(&corrupt, b"definitely not wasm").unwrap();
    let err = rt
        .load(PluginSpec::new(
            "junk",
            World::Validator,
            PluginSource::File(corrupt),
        ))
        .unwrap_err();
    assert!(matches!(err, PluginError::NotComponent { .. }), "{err}");
    assert!(
        err.to_string().contains("junk") && err.to_string().contains("corrupt.wasm"),
        "{err}"
    );

    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let err = rt
        .load(PluginSpec::new(
            "core",
            World::Validator,
            PluginSource::File(core),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("core WebAssembly module"), "{err}");

    // A truncated component: right header, broken body.
    let real = std::fs::read(fixture("trap")).unwrap();
    let truncated = dir.path().join("truncated.wasm");
    std::fs::write(&truncated, &real[..real.len() / 2]).unwrap();
    let err = rt
        .load(PluginSpec::new(
            "half",
            World::Validator,
            PluginSource::File(truncated),
        ))
        .unwrap_err();
    assert!(matches!(err, PluginError::Compile { .. }), "{err}");

    let mut spec = fixture_spec("trap", World::Validator);
    spec.sha256 = Some(format!("sha256:{}", "0".repeat(64)));
    let err = rt.load(spec).unwrap_err();
    assert!(matches!(err, PluginError::DigestMismatch { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&agentrouter::runtime::sha256_hex(&real)),
        "{err}"
    );
    let mut spec = fixture_spec("trap", World::Validator);
    spec.sha256 = Some(agentrouter::runtime::sha256_hex(&real));
    assert!(rt.load(spec).is_ok(), "the right pin loads");

    let mut spec = fixture_spec("trap", World::Validator);
    spec.limits.memory_mb = 0;
    let err = rt.load(spec).unwrap_err().to_string();
    assert!(
        err.contains("trap") && err.contains("limits.memory_mb"),
        "{err}"
    );
    let mut spec = fixture_spec("trap", World::Validator);
    spec.capabilities.dirs = vec![DirGrant {
        host: dir.path().join("absent"),
        guest: "/data".into(),
        writable: false,
    }];
    let err = rt.load(spec).unwrap_err().to_string();
    assert!(
        err.contains("capabilities.dirs.host") && err.contains("absent"),
        "{err}"
    );
}

#[tokio::test]
async fn compiled_plugins_are_reused_from_the_aot_cache_across_restarts() {
    let cache = tempfile::tempdir().unwrap();
    let settings = RuntimeSettings {
        cache_dir: Some(cache.path().to_path_buf()),
        ..Default::default()
    };
    let guard = plugins::get("input-guard").unwrap();
    {
        let (rt, _) = runtime_with(settings.clone());
        rt.load(guard.spec("guard")).unwrap();
        let stats = &rt.cache().unwrap().stats;
        assert_eq!(
            (
                stats.hits.load(Ordering::Relaxed),
                stats.misses.load(Ordering::Relaxed)
            ),
            (0, 1)
        );
    }
    let (rt, _) = runtime_with(settings);
    let plugin = rt.load(guard.spec("guard")).unwrap();
    let stats = &rt.cache().unwrap().stats;
    assert_eq!(
        (
            stats.hits.load(Ordering::Relaxed),
            stats.misses.load(Ordering::Relaxed)
        ),
        (1, 0)
    );
    // The cached artifact behaves like the freshly compiled one.
    assert_eq!(
        plugin
            .validate(Stage::Input, &[Message::user("hi")])
            .await
            .unwrap(),
        Verdict::Allow
    );

    // A corrupt entry is replaced, not trusted.
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let (rt, _) = runtime_with(RuntimeSettings {
        cache_dir: Some(cache.path().to_path_buf()),
        ..Default::default()
    });
    rt.load(guard.spec("guard")).unwrap();
    assert_eq!(rt.cache().unwrap().stats.misses.load(Ordering::Relaxed), 1);
}

#[test]
fn reading_a_component_without_compiling_it_says_what_compiling_it_says() {
    let rt = runtime();
    let mut seen = 0;
    let builtins = plugins::all().map(|p| p.wasm.to_vec());
    let fixtures = std::fs::read_dir(plugins::fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .map(|p| std::fs::read(p).unwrap());
    for bytes in builtins.chain(fixtures) {
        let Ok(compiled) = inspect::inspect(rt.engine(), &bytes) else {
            assert!(
                inspect::read(&bytes).is_err(),
                "read accepts what compiling refuses"
            );
            continue;
        };
        assert_eq!(inspect::read(&bytes).unwrap(), compiled);
        seen += 1;
    }
    assert!(seen >= 10, "only {seen} components compared");
    let mut cut = plugins::get("input-guard").unwrap().wasm.to_vec();
    cut.truncate(cut.len() / 2);
    let err = inspect::read(&cut).unwrap_err().to_string();
    assert!(err.starts_with("invalid component"), "{err}");
}
