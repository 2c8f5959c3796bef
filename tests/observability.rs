//! Observability end to end: Prometheus series that move after specific
//! events, the span tree of a multi-agent request (in-memory OpenTelemetry
//! exporter), W3C trace context in and out, readiness, and the structured
//! log events — all over real HTTP on 127.0.0.1 with the real plugins.
//!
//! One process runs every test here, and a process has one global tracing
//! subscriber: it is installed once (JSON logs into a buffer, spans into an
//! in-memory exporter) and each test picks out its own spans by trace id
//! and its own log lines by request id.

mod support;

use agentrouter::telemetry::LogFormat;
use agentrouter::telemetry::traces;
use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use support::{Gateway, chat, quickstart, series, sse_text, value};

/// What the process-wide subscriber captured.
struct Captured {
    spans: InMemorySpanExporter,
    logs: Arc<Mutex<Vec<u8>>>,
}

/// Log lines go here (a `MakeWriter` over a shared buffer).
#[derive(Clone)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Installs the gateway's own subscriber once, with test sinks.
fn captured() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let spans = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .with_sampler(traces::sampler(1.0))
            .build();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let subscriber = traces::subscriber(
            LogFormat::Json,
            tracing_subscriber::EnvFilter::new("info,agentrouter=debug"),
            LogBuffer(logs.clone()),
            Some(&provider),
        );
        tracing::subscriber::set_global_default(subscriber).unwrap();
        // The provider lives as long as the process.
        std::mem::forget(provider);
        Captured { spans, logs }
    })
}

/// Finished spans of one trace, by span id.
fn trace_spans(trace_id: &str) -> HashMap<SpanId, SpanData> {
    let trace_id = TraceId::from_hex(trace_id).unwrap();
    captured()
        .spans
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace_id)
        .map(|s| (s.span_context.span_id(), s))
        .collect()
}

/// Every captured JSON log line.
fn log_lines() -> Vec<Value> {
    let bytes = captured().logs.lock().unwrap().clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Starts the shared gateway once the capturing subscriber is installed, so
/// its spans and log lines land in the test sinks.
async fn gateway(toml: &str) -> Gateway {
    captured();
    Gateway::start(toml).await
}

#[tokio::test]
async fn a_completion_moves_the_request_token_cost_and_plugin_series() {
    let gw = gateway(&quickstart("")).await;
    let answer = gw.chat(&chat("usf-mini", "What is WASI?")).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let body = answer.json();
    let usage = &body["usage"];
    let m = gw.metrics().await;
    assert_eq!(
        value(
            &m,
            r#"agentrouter_http_requests_total{route="/v1/chat/completions",target="usf-mini",status="200"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"agentrouter_http_request_duration_seconds_count{route="/v1/chat/completions",target="usf-mini",status="200"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"agentrouter_gateway_overhead_seconds_count{route="/v1/chat/completions"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"agentrouter_tokens_total{key="anonymous",model="usf-mini",direction="input"}"#
        ),
        usage["prompt_tokens"].as_f64().unwrap()
    );
    assert_eq!(
        value(
            &m,
            r#"agentrouter_tokens_total{key="anonymous",model="usf-mini",direction="output"}"#
        ),
        usage["completion_tokens"].as_f64().unwrap()
    );
    let cost: f64 = answer
        .header("x-agentrouter-cost-usd")
        .unwrap()
        .parse()
        .unwrap();
    let counted = value(
        &m,
        r#"agentrouter_cost_usd_total{key="anonymous",model="usf-mini"}"#,
    );
    assert!(
        cost > 0.0 && (counted - cost).abs() < 1e-8,
        "{counted} vs {cost}"
    );
    // Input guard, router and PII redaction each ran once, as the same version.
    let version = env!("CARGO_PKG_VERSION");
    for plugin in ["input-guard", "cost-router", "pii-redact"] {
        let labels = format!(r#"{{plugin="{plugin}",version="{version}"}}"#);
        assert_eq!(
            value(&m, &format!("agentrouter_plugin_calls_total{labels}")),
            1.0
        );
        assert_eq!(
            value(
                &m,
                &format!("agentrouter_plugin_call_duration_seconds_count{labels}")
            ),
            1.0
        );
        assert!(
            value(
                &m,
                &format!("agentrouter_plugin_fuel_consumed_total{labels}")
            ) > 0.0
        );
        assert!(value(&m, &format!("agentrouter_plugin_peak_memory_bytes{labels}")) > 0.0);
    }
    assert_eq!(
        value(
            &m,
            r#"agentrouter_upstream_breaker_state{upstream="usf-mini"}"#
        ),
        0.0
    );

    // A validator's refusal and a model nobody serves are counted too, the
    // latter under a bounded label rather than the client's string.
    let refused = gw.chat(&chat("usf-mini", "please DROP TABLE users")).await;
    assert_eq!(refused.status, 422);
    let unknown = gw.chat(&chat("gpt-from-the-client", "hi")).await;
    assert_eq!(unknown.status, 404);
    let m = gw.metrics().await;
    assert_eq!(
        value(
            &m,
            &format!(
                r#"agentrouter_plugin_errors_total{{plugin="input-guard",version="{version}",kind="rejected"}}"#
            )
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"agentrouter_http_requests_total{route="/v1/chat/completions",target="usf-mini",status="422"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"agentrouter_http_requests_total{route="/v1/chat/completions",target="unknown",status="404"}"#
        ),
        1.0
    );
    assert!(!m.contains("gpt-from-the-client"));
    gw.stop().await;
}

#[tokio::test]
async fn a_trapping_plugin_is_counted_as_a_trap_of_its_version() {
    let trap = agentrouter::plugins::fixture_dir().join("trap.wasm");
    let gw = gateway(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[upstreams.mini]
kind = "simulated"
model = "usf-mini"

[plugins.trap]
source = "{}"
world = "validator"
version = "2.0.0-test"

[pipeline]
input_validators = ["trap"]
"#,
        trap.display()
    ))
    .await;
    let answer = gw.chat(&chat("usf-mini", "hi")).await;
    assert_eq!(answer.status, 500, "{}", answer.text);
    let m = gw.metrics().await;
    assert_eq!(
        value(
            &m,
            r#"agentrouter_plugin_errors_total{plugin="trap",version="2.0.0-test",kind="trap"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"agentrouter_plugin_calls_total{plugin="trap",version="2.0.0-test"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"agentrouter_http_requests_total{route="/v1/chat/completions",target="usf-mini",status="500"}"#
        ),
        1.0
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_upstream_rate_limit_surfacing_as_429_is_counted_by_status() {
    let gw = gateway(
        r#"
[server]
listen = "127.0.0.1:0"

[upstreams.limited]
kind = "simulated"
model = "limited-model"
[upstreams.limited.simulator]
rate_limit_rate = 1.0
"#,
    )
    .await;
    let answer = gw.chat(&chat("limited-model", "hi")).await;
    assert_eq!(answer.status, 429, "{}", answer.text);
    let m = gw.metrics().await;
    assert_eq!(
        value(
            &m,
            r#"agentrouter_http_requests_total{route="/v1/chat/completions",target="limited-model",status="429"}"#
        ),
        1.0
    );
    // Nothing was produced, so nothing was billed.
    assert_eq!(
        series(
            &m,
            r#"agentrouter_tokens_total{key="anonymous",model="limited-model",direction="output"}"#
        ),
        0.0
    );
    gw.stop().await;
}

/// The spans of one trace as a tree: name → children's names.
struct Tree(HashMap<SpanId, SpanData>);

impl Tree {
    fn named(&self, name: &str) -> Vec<&SpanData> {
        self.0.values().filter(|s| s.name == name).collect()
    }

    fn one(&self, name: &str) -> &SpanData {
        let found = self.named(name);
        assert_eq!(found.len(), 1, "one `{name}` span in {:#?}", self.names());
        found[0]
    }

    fn parent(&self, span: &SpanData) -> Option<&SpanData> {
        self.0.get(&span.parent_span_id)
    }

    fn parent_name(&self, span: &SpanData) -> &str {
        self.parent(span).map_or("<root>", |p| &*p.name)
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .0
            .values()
            .map(|s| format!("{} <- {}", s.name, self.parent_name(s)))
            .collect();
        names.sort();
        names
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[tokio::test]
async fn an_agent_request_yields_one_trace_shaped_like_the_delegation() {
    let gw = gateway(&quickstart("")).await;
    let answer = gw
        .chat(&chat("agent:manager", "Explain WASI briefly"))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let trace_id = answer.header("x-trace-id").unwrap().to_string();
    let tree = Tree(trace_spans(&trace_id));

    // The server span is the root, and the trace id in the header is its trace.
    let root = tree.one("POST /v1/chat/completions");
    assert_eq!(root.span_kind, SpanKind::Server);
    assert_eq!(tree.parent_name(root), "<root>");
    assert_eq!(root.span_context.trace_id().to_string(), trace_id);
    assert_eq!(
        attribute(root, "gen_ai.request.model").as_deref(),
        Some("agent:manager")
    );
    assert_eq!(
        attribute(root, "http.response.status_code").as_deref(),
        Some("200")
    );

    // Validators at the edge, each plugin call below its stage.
    for (stage, plugin) in [("input", "input-guard"), ("output", "pii-redact")] {
        let stage_span = tree.one(&format!("validate {stage}"));
        assert_eq!(tree.parent_name(stage_span), "POST /v1/chat/completions");
        let call = tree.one(&format!("plugin validate {plugin}"));
        assert_eq!(tree.parent_name(call), format!("validate {stage}"));
        assert_eq!(
            attribute(call, "agentrouter.plugin.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
    }

    // The manager runs under the request; its workers run inside its call.
    let manager = tree.one("invoke_agent manager");
    assert_eq!(tree.parent_name(manager), "POST /v1/chat/completions");
    assert_eq!(
        attribute(manager, "gen_ai.agent.name").as_deref(),
        Some("manager")
    );
    let manager_call = tree.one("plugin handle manager");
    assert_eq!(tree.parent_name(manager_call), "invoke_agent manager");
    for worker in ["researcher", "writer"] {
        let span = tree.one(&format!("invoke_agent {worker}"));
        assert_eq!(tree.parent_name(span), "plugin handle manager");
        assert_eq!(attribute(span, "agentrouter.depth").as_deref(), Some("1"));
        let call = tree.one(&format!("plugin handle {worker}"));
        assert_eq!(tree.parent_name(call), format!("invoke_agent {worker}"));
    }

    // Four completions (the manager's two, one per worker), each routed by
    // the router plugin and served by one upstream client span carrying the
    // GenAI attributes.
    let completions: Vec<&SpanData> = tree
        .0
        .values()
        .filter(|s| s.name.starts_with("completion "))
        .collect();
    assert_eq!(completions.len(), 4, "{:#?}", tree.names());
    for completion in &completions {
        let parent = tree.parent_name(completion);
        assert!(parent.starts_with("plugin handle "), "{parent}");
    }
    let upstream: Vec<&SpanData> = tree
        .0
        .values()
        .filter(|s| s.span_kind == SpanKind::Client)
        .collect();
    assert_eq!(upstream.len(), 4, "{:#?}", tree.names());
    let mut input_tokens = 0;
    for call in &upstream {
        assert!(call.name.starts_with("chat "), "{}", call.name);
        assert!(tree.parent_name(call).starts_with("completion "));
        assert_eq!(
            attribute(call, "gen_ai.operation.name").as_deref(),
            Some("chat")
        );
        assert_eq!(
            attribute(call, "gen_ai.system").as_deref(),
            Some("agentrouter.simulator")
        );
        assert!(attribute(call, "gen_ai.request.model").is_some());
        input_tokens += attribute(call, "gen_ai.usage.input_tokens")
            .unwrap()
            .parse::<u64>()
            .unwrap();
    }
    assert_eq!(
        input_tokens,
        answer.json()["usage"]["prompt_tokens"].as_u64().unwrap()
    );
    assert_eq!(tree.named("plugin route cost-router").len(), 4);
    gw.stop().await;
}

/// An OpenAI-shaped upstream that records the `traceparent` it receives.
async fn recording_upstream() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    use axum::routing::post;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |headers: axum::http::HeaderMap| {
            let record = record.clone();
            async move {
                let parent = headers
                    .get("traceparent")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                record.lock().unwrap().push(parent);
                axum::Json(json!({
                    "id": "rec", "object": "chat.completion", "created": 1, "model": "remote-model",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "recorded"}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

#[tokio::test]
async fn the_callers_traceparent_is_continued_and_propagated_to_the_upstream() {
    let (addr, seen) = recording_upstream().await;
    let gw = gateway(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[upstreams.remote]
kind = "openai"
model = "remote-model"
base_url = "http://{addr}/v1"
"#
    ))
    .await;
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let answer = gw
        .send(
            gw.client
                .post(gw.url("/v1/chat/completions"))
                .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
                .json(&chat("remote-model", "carry my trace")),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.header("x-trace-id"), Some(caller_trace));

    let received = seen.lock().unwrap().clone();
    assert_eq!(received.len(), 1, "{received:?}");
    let parts: Vec<&str> = received[0].split('-').collect();
    assert_eq!(parts.len(), 4, "{}", received[0]);
    assert_eq!((parts[0], parts[1], parts[3]), ("00", caller_trace, "01"));
    // The upstream's parent is the gateway's client span, a span of the
    // same trace whose own parent chain ends at the caller's span.
    let tree = Tree(trace_spans(caller_trace));
    let client = tree
        .0
        .get(&SpanId::from_hex(parts[2]).unwrap())
        .unwrap_or_else(|| panic!("no span {} in {:#?}", parts[2], tree.names()));
    assert_eq!(client.span_kind, SpanKind::Client);
    assert_eq!(client.name, "chat remote-model");
    assert_eq!(
        attribute(client, "gen_ai.system").as_deref(),
        Some("openai")
    );
    let root = tree.one("POST /v1/chat/completions");
    assert_eq!(root.parent_span_id.to_string(), caller_span);
    gw.stop().await;
}

#[tokio::test]
async fn readiness_fails_while_any_model_has_no_upstream_with_a_closed_circuit() {
    let gw = gateway(
        r#"
[server]
listen = "127.0.0.1:0"

[upstreams.steady]
kind = "simulated"
model = "steady-model"

[upstreams.flaky]
kind = "simulated"
model = "flaky-model"
[upstreams.flaky.simulator]
fail_rate = 1.0
[upstreams.flaky.breaker]
failure_threshold = 1
recovery_timeout_s = 3600
"#,
    )
    .await;
    let (status, ready) = gw.get("/health/ready").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["checks"]["plugins"]["status"], "ok");
    assert_eq!(ready["checks"]["config"]["detail"], "loaded from test.toml");
    let failed = gw.chat(&chat("flaky-model", "hi")).await;
    assert_eq!(failed.status, 502, "{}", failed.text);
    // `steady-model` still has a healthy upstream, but `flaky-model` has
    // none: this replica cannot serve every model it advertises.
    let (status, ready) = gw.get("/health/ready").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["status"], "not_ready");
    let upstreams = &ready["checks"]["upstreams"];
    assert_eq!(upstreams["status"], "fail", "{ready}");
    let detail = upstreams["detail"].as_str().unwrap();
    assert!(
        detail.contains("flaky-model") && detail.contains("flaky") && !detail.contains("steady"),
        "{detail}"
    );
    let m = gw.metrics().await;
    assert_eq!(
        value(
            &m,
            r#"agentrouter_upstream_breaker_state{upstream="flaky"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            r#"agentrouter_upstream_breaker_state{upstream="steady"}"#
        ),
        0.0
    );
    gw.stop().await;
}

#[tokio::test]
async fn readiness_fails_for_a_plugin_that_cannot_be_instantiated() {
    let trap = agentrouter::plugins::fixture_dir().join("trap.wasm");
    let gw = gateway(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[upstreams.mini]
kind = "simulated"
model = "usf-mini"

[plugins.cramped]
source = "{}"
world = "validator"
[plugins.cramped.limits]
memory_mb = 1
"#,
        trap.display()
    ))
    .await;
    let (status, ready) = gw.get("/health/ready").await;
    assert_eq!(status, 503, "{ready}");
    let plugins = &ready["checks"]["plugins"];
    assert_eq!(plugins["status"], "fail");
    assert!(
        plugins["detail"].as_str().unwrap().contains("cramped@"),
        "{ready}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn readiness_turns_503_during_the_drain_delay_while_requests_are_still_served() {
    let mut gw = gateway(&quickstart("").replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\ndrain_delay_ms = 60000",
    ))
    .await;
    assert_eq!(gw.get("/health/ready").await.0, 200);
    gw.begin_shutdown();
    // Shutdown has begun: readiness flips, the listener stays open.
    let (mut status, mut ready) = gw.get("/health/ready").await;
    while status == 200 {
        tokio::task::yield_now().await;
        (status, ready) = gw.get("/health/ready").await;
    }
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["checks"]["accepting"]["status"], "fail");
    assert_eq!(
        ready["checks"]["accepting"]["detail"],
        "draining for shutdown"
    );
    assert_eq!(gw.get("/health/live").await.0, 200);
    let answer = gw.chat(&chat("usf-mini", "still there?")).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    // Dropped mid-drain: the server ends without waiting out the delay.
    drop(gw);
}

#[tokio::test]
async fn each_request_logs_one_event_with_route_key_target_status_tokens_and_plugins() {
    let gw = gateway(&quickstart("")).await;
    let answer = gw.chat(&chat("usf-mini", "log me")).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let request_id = answer.header("x-request-id").unwrap().to_string();
    let events: Vec<Value> = log_lines()
        .into_iter()
        .filter(|l| l["fields"]["request_id"] == request_id.as_str())
        .collect();
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event["target"], "agentrouter::request");
    assert_eq!(event["level"], "INFO");
    let f = &event["fields"];
    assert_eq!(f["message"], "request");
    assert_eq!(f["route"], "/v1/chat/completions");
    assert_eq!(f["method"], "POST");
    assert_eq!(f["status"], 200);
    assert_eq!(f["key"], "anonymous");
    assert_eq!(f["target"], "usf-mini");
    // Not cacheable (no `temperature: 0`): the cache was bypassed.
    assert_eq!(f["cache"], "bypass");
    assert_eq!(f["trace_id"], answer.header("x-trace-id").unwrap());
    let body = answer.json();
    assert_eq!(f["prompt_tokens"], body["usage"]["prompt_tokens"]);
    assert_eq!(f["completion_tokens"], body["usage"]["completion_tokens"]);
    assert!(f["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(f["cost_usd"].as_f64().unwrap() > 0.0);
    let version = env!("CARGO_PKG_VERSION");
    let plugins: Vec<&str> = f["plugins"].as_str().unwrap().split(',').collect();
    for plugin in ["input-guard", "cost-router", "pii-redact"] {
        assert!(
            plugins.contains(&format!("{plugin}@{version}").as_str()),
            "{plugins:?}"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn plugin_log_calls_carry_the_plugin_name_and_version() {
    let gw = gateway(&quickstart("")).await;
    let answer = gw
        .send(
            gw.client
                .post(gw.url("/v1/agents/manager/invoke"))
                .json(&json!({"input": "Explain WASI"})),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let body = answer.json();
    let task = body["id"].as_str().unwrap();
    // The manager logs each iteration through the `log` import, with the
    // task id among its fields.
    let events: Vec<Value> = log_lines()
        .into_iter()
        .filter(|l| {
            l["fields"]["message"] == "manager iteration"
                && l["fields"]["fields"]
                    .as_str()
                    .is_some_and(|f| f.contains(&format!("task={task}")))
        })
        .collect();
    assert!(!events.is_empty(), "no plugin log event for {task}");
    let trace_id = answer.header("x-trace-id").unwrap();
    for event in &events {
        // The request's span (outermost) carries its trace id on every line.
        assert_eq!(event["spans"][0]["trace_id"], trace_id, "{event}");
        assert_eq!(event["fields"]["plugin"], "manager", "{event}");
        assert_eq!(event["fields"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(event["level"], "DEBUG");
    }
    gw.stop().await;
}

#[test]
fn the_grafana_dashboard_uses_only_series_the_gateway_exports() {
    let dashboard: Value =
        serde_json::from_str(include_str!("../deploy/grafana/agentrouter.json")).unwrap();
    let metrics = agentrouter::telemetry::Metrics::new();
    let exported = metrics.families();
    let mut used = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for (at, _) in expr.match_indices("agentrouter_") {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let family = ["_bucket", "_total", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(&name);
                assert!(
                    exported.iter().any(|f| f == family),
                    "{name} (panel {}) is not exported",
                    panel["title"]
                );
                used += 1;
            }
        }
    }
    assert!(used >= 20, "{used}");
}

#[test]
fn every_exported_family_is_in_the_metrics_reference() {
    let reference = include_str!("../docs/metrics.md");
    for family in agentrouter::telemetry::Metrics::new().families() {
        let counter = format!("`{family}_total`");
        assert!(
            reference.contains(&format!("`{family}`")) || reference.contains(&counter),
            "docs/metrics.md does not describe {family}"
        );
    }
}

#[tokio::test]
async fn a_live_stream_is_counted_and_logged_with_its_tokens_once_its_body_ends() {
    // No output validators: the answer streams live from the upstream.
    let gw = gateway(
        r#"
[server]
listen = "127.0.0.1:0"

[upstreams.streamer]
kind = "simulated"
model = "stream-model"
input_cost_per_1k = 1.0
output_cost_per_1k = 1.0
"#,
    )
    .await;
    let mut req = chat("stream-model", "stream a few words back to me please");
    req["stream"] = json!(true);
    // As with OpenAI, the stream ends with a usage chunk only when asked.
    req["stream_options"] = json!({"include_usage": true});
    let reply = gw.chat(&req).await;
    assert_eq!(reply.status, 200);
    let request_id = reply.header("x-request-id").unwrap();
    let trace_id = reply.header("x-trace-id").unwrap();
    let (chunks, _) = sse_text(&reply.text);
    let last = chunks.last().unwrap();
    let output = last["usage"]["completion_tokens"].as_f64().unwrap();
    assert!(output > 0.0, "{last}");

    let m = gw.metrics().await;
    assert_eq!(
        value(
            &m,
            r#"agentrouter_http_requests_total{route="/v1/chat/completions",target="stream-model",status="200"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"agentrouter_tokens_total{key="anonymous",model="stream-model",direction="output"}"#
        ),
        output
    );
    let events: Vec<Value> = log_lines()
        .into_iter()
        .filter(|l| l["fields"]["request_id"] == request_id)
        .collect();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        events[0]["fields"]["completion_tokens"].as_f64(),
        Some(output)
    );
    assert_eq!(events[0]["fields"]["trace_id"], trace_id);
    gw.stop().await;
}

#[tokio::test]
async fn an_outbound_request_is_a_span_and_a_log_line_tagged_with_the_plugin() {
    let origin = support::Origin::start().await;
    let p = origin.port;
    let out = agentrouter::plugins::fixture_dir().join("outbound.wasm");
    let gw = gateway(&quickstart(&format!(
        r#"
[plugins.obs-out]
source = "{}"
world = "agent"

[[plugins.obs-out.capabilities.http.allow]]
host = "127.0.0.1"
ports = [{p}]
allow_private = true
allow_plain_http = true
"#,
        out.display()
    )))
    .await;
    let script = format!(
        "fetch GET http://127.0.0.1:{p}/api/ok?token=t0ps3cret\nfetch GET http://127.0.0.2:{p}/"
    );
    let (status, body) = gw
        .post(
            "/v1/agents/obs-out/invoke",
            &serde_json::json!({ "input": script }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let spans: Vec<SpanData> = captured()
        .spans
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.name == "plugin.http" && attribute(s, "plugin").as_deref() == Some("obs-out"))
        .collect();
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert_eq!(
        attribute(&spans[0], "url.host").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(attribute(&spans[0], "http.status").as_deref(), Some("200"));
    let lines: Vec<Value> = log_lines()
        .into_iter()
        .filter(|l| l["fields"]["plugin"] == "obs-out" && l["fields"]["outbound"] == "http")
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    // The URL is logged without its query, which may carry a token.
    assert_eq!(
        lines[0]["fields"]["url"],
        format!("http://127.0.0.1:{p}/api/ok"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1]["fields"]["outcome"], "denied", "{}", lines[1]);
    assert!(
        !lines.iter().any(|l| l.to_string().contains("t0ps3cret")),
        "{lines:?}"
    );
    gw.stop().await;
}
