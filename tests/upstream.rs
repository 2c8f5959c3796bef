//! Upstreams over real HTTP on 127.0.0.1: the OpenAI client against the
//! simulator's server (answers, streams, every fault), against peers that
//! hang or are gone, and the in-process simulated upstream.

mod support;

use agentrouter::domain::*;
use agentrouter::net::http_client;
use agentrouter::upstream::{
    EventStream, OpenAiUpstream, SimOutcome, SimSettings, SimUpstream, Simulator, StreamEvent,
    Upstream, UpstreamInfo,
};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use support::SimServer;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

const MODEL: &str = "sim-model";
const LONG: Duration = Duration::from_secs(10);

fn info(name: &str) -> UpstreamInfo {
    UpstreamInfo {
        name: name.into(),
        model: MODEL.into(),
        input_cost_per_1k: 0.001,
        cached_input_cost_per_1k: 0.001,
        output_cost_per_1k: 0.002,
        tags: vec!["test".into()],
        weight: 1,
        serves: vec![agentrouter::domain::Endpoint::Chat],
    }
}

/// The HTTP client against a simulator server serving [`MODEL`]; the
/// server stops when the returned [`SimServer`] is dropped.
async fn openai(settings: SimSettings) -> (OpenAiUpstream, SimServer) {
    let sim = SimServer::start(settings, &[MODEL]).await;
    let up = OpenAiUpstream::new(
        info("sim-http"),
        sim.base_url.clone(),
        Some("sk-very-secret".into()),
        http_client(),
    );
    (up, sim)
}

fn sim_upstream(settings: SimSettings) -> SimUpstream {
    SimUpstream::new(info("sim-local"), Arc::new(Simulator::new(settings)))
}

fn plain() -> CompletionRequest {
    CompletionRequest {
        model: "whatever-the-pipeline-chose".into(),
        messages: vec![
            Message::system("be brief"),
            Message::user("Hello, my email is ann@example.com and I like long walks on the beach"),
        ],
        ..Default::default()
    }
}

fn with_tools() -> CompletionRequest {
    let mut req = plain();
    req.tools = ["search", "fetch"]
        .iter()
        .map(|n| Tool {
            name: n.to_string(),
            description: format!("{n} things"),
            parameters: r#"{"type":"object"}"#.into(),
            wire: None,
        })
        .collect();
    req
}

fn after_tools() -> CompletionRequest {
    let mut req = with_tools();
    let mut call = Message::assistant("");
    call.tool_calls = vec![ToolCall {
        id: "call_0".into(),
        name: "search".into(),
        arguments: "{}".into(),
    }];
    req.messages.push(call);
    for (id, text) in [("call_0", "found A"), ("call_1", "found B")] {
        let mut result = Message::new(Role::Tool, text);
        result.tool_call_id = Some(id.into());
        req.messages.push(result);
    }
    req
}

fn assert_content_rules(plain: &Completion, tools: &Completion, after: &Completion) {
    assert_eq!(
        plain.message.content,
        "[sim-model] You said: Hello, my email is ann@example.com and I like long walks on the beach"
    );
    assert_eq!(plain.finish_reason, "stop");
    assert_eq!(plain.model, MODEL);
    // 8 + 69 prompt chars, 91 answer chars.
    assert_eq!(plain.usage, Usage::new(20, 23));

    assert_eq!(tools.finish_reason, "tool_calls");
    assert_eq!(tools.message.content, "");
    let names: Vec<_> = tools
        .message
        .tool_calls
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let ids: Vec<_> = tools
        .message
        .tool_calls
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(names, ["search", "fetch"]);
    assert_eq!(ids, ["call_0", "call_1"]);
    let args: serde_json::Value =
        serde_json::from_str(&tools.message.tool_calls[0].arguments).unwrap();
    assert_eq!(
        args["task"],
        "Hello, my email is ann@example.com and I like long walks on the beach"
    );

    assert_eq!(
        after.message.content,
        "Summary of 2 results: found A | found B"
    );
    assert_eq!(after.finish_reason, "stop");
    assert!(after.message.tool_calls.is_empty());
}

async fn collect(stream: EventStream) -> Vec<StreamEvent> {
    stream.map(|e| e.expect("stream event")).collect().await
}

/// Text and tool calls of a stream's chunks, and the whole answer of its
/// `Done`; checks `Done` is last.
fn replay(events: &[StreamEvent]) -> (String, Vec<ToolCall>, &Completion) {
    let (last, rest) = events.split_last().expect("at least Done");
    let done = last
        .done()
        .unwrap_or_else(|| panic!("Done last: {events:?}"));
    let mut text = String::new();
    let mut calls = Vec::new();
    for e in rest {
        let StreamEvent::Chunk(chunk) = e else {
            panic!("Done before the end: {events:?}")
        };
        text.push_str(e.text());
        for fragment in chunk
            .choices
            .iter()
            .filter_map(|c| c.delta.tool_calls.as_ref())
        {
            assert!(
                calls.is_empty(),
                "the simulator sends tool calls whole, in one chunk"
            );
            calls = fragment
                .iter()
                .map(|c| ToolCall {
                    id: c["id"].as_str().unwrap().into(),
                    name: c["function"]["name"].as_str().unwrap().into(),
                    arguments: c["function"]["arguments"].as_str().unwrap().into(),
                })
                .collect();
        }
    }
    (text, calls, done)
}

#[tokio::test]
async fn http_content_rules() {
    let (up, sim) = openai(SimSettings::default()).await;
    let plain_c = up.complete(plain(), LONG).await.unwrap();
    let tools_c = up.complete(with_tools(), LONG).await.unwrap();
    let after_c = up.complete(after_tools(), LONG).await.unwrap();
    assert_content_rules(&plain_c, &tools_c, &after_c);
    assert_eq!(sim.requests(), 3);
}

#[tokio::test]
async fn http_stream_matches_whole_answer() {
    let (up, sim) = openai(SimSettings::default()).await;
    for req in [plain(), with_tools(), after_tools()] {
        let whole = up.complete(req.clone(), LONG).await.unwrap();
        let events = collect(up.stream(req, LONG).await.unwrap()).await;
        let (text, calls, done) = replay(&events);
        assert_eq!(text, whole.message.content);
        assert_eq!(calls, whole.message.tool_calls);
        assert_eq!(done, &whole, "the stream assembles to the whole answer");
        if !whole.message.content.is_empty() {
            let deltas = events.iter().filter(|e| !e.text().is_empty());
            assert!(deltas.count() > 1, "answer streamed in pieces: {events:?}");
        }
    }
    assert_eq!(sim.requests(), 6);
}

#[tokio::test]
async fn http_faults_map_to_failures() {
    let cases = [
        (
            SimSettings {
                fail_rate: 1.0,
                ..Default::default()
            },
            Failure::UpstreamStatus(500),
        ),
        (
            SimSettings {
                rate_limit_rate: 1.0,
                ..Default::default()
            },
            Failure::RateLimited(Some(1000)),
        ),
        (
            SimSettings {
                context_chars: 10,
                ..Default::default()
            },
            Failure::TokenLimitExceeded,
        ),
    ];
    for (settings, expected) in cases {
        let (up, _sim) = openai(settings).await;
        assert_eq!(up.complete(plain(), LONG).await.unwrap_err(), expected);
        let err = up.stream(plain(), LONG).await.err();
        assert_eq!(err, Some(expected), "stream refused before any event");
    }
}

#[tokio::test]
async fn http_malformed_body_names_the_upstream() {
    let (up, _sim) = openai(SimSettings {
        malformed_rate: 1.0,
        ..Default::default()
    })
    .await;
    let err = up.complete(plain(), LONG).await.unwrap_err();
    assert!(
        matches!(&err, Failure::InvalidResponse(m) if m.contains("sim-http")),
        "{err:?}"
    );
    let mut stream = up.stream(plain(), LONG).await.unwrap();
    let first = stream.next().await.expect("one event");
    assert!(
        matches!(&first, Err(Failure::InvalidResponse(m)) if m.contains("sim-http")),
        "{first:?}"
    );
    assert!(stream.next().await.is_none(), "an error ends the stream");
}

/// A peer that accepts connections, reads, and never answers.
async fn silent_peer() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_secs(3600)).await;
            });
        }
    });
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn silent_upstream_times_out() {
    let up = OpenAiUpstream::new(info("silent"), silent_peer().await, None, http_client());
    let short = Duration::from_millis(300);
    // The outer bound only keeps a broken build from hanging the suite.
    let err = tokio::time::timeout(LONG, up.complete(plain(), short))
        .await
        .expect("the upstream's own timeout fires")
        .unwrap_err();
    assert_eq!(err, Failure::Timeout);
    let err = tokio::time::timeout(LONG, up.stream(plain(), short))
        .await
        .expect("the upstream's own timeout fires")
        .err();
    assert_eq!(err, Some(Failure::Timeout));
}

#[tokio::test]
async fn stream_that_stalls_ends_with_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 8192];
        let _ = sock.read(&mut buf).await;
        let chunk = r#"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"partial"}}]}"#;
        let body = format!("{chunk}\n\n");
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n",
            body.len()
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    let up = OpenAiUpstream::new(
        info("stall"),
        format!("http://{addr}/v1"),
        None,
        http_client(),
    );
    let stream = up
        .stream(plain(), Duration::from_millis(500))
        .await
        .unwrap();
    let events: Vec<_> = tokio::time::timeout(LONG, stream.collect::<Vec<_>>())
        .await
        .expect("the upstream's own timeout fires");
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].as_ref().map(StreamEvent::text), Ok("partial"));
    assert_eq!(events[1], Err(Failure::Timeout));
}

#[tokio::test]
async fn refused_connection_is_bad_gateway() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let up = OpenAiUpstream::new(
        info("gone"),
        format!("http://{addr}/v1"),
        None,
        http_client(),
    );
    assert_eq!(
        up.complete(plain(), LONG).await.unwrap_err(),
        Failure::UpstreamStatus(502)
    );
    assert_eq!(
        up.stream(plain(), LONG).await.err(),
        Some(Failure::UpstreamStatus(502))
    );
}

#[tokio::test]
async fn api_key_stays_out_of_debug_output() {
    let (up, _sim) = openai(SimSettings::default()).await;
    let debug = format!("{up:?}");
    assert!(!debug.contains("sk-very-secret"), "{debug}");
    assert!(debug.contains("redacted"), "{debug}");
}

#[tokio::test]
async fn sim_server_http_surface() {
    let sim = SimServer::start(SimSettings::default(), &[MODEL]).await;
    let base = &sim.base_url;
    let http = http_client();
    let root = base.trim_end_matches("/v1");
    assert_eq!(
        http.get(format!("{root}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let models: serde_json::Value = http
        .get(format!("{base}/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], MODEL);

    let unknown = http
        .post(format!("{base}/chat/completions"))
        .json(&serde_json::json!({"model": "nope", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let body: serde_json::Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");

    let bad = http
        .post(format!("{base}/chat/completions"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

/// The kind of each outcome, enough to compare sequences.
fn kind(o: &SimOutcome) -> String {
    match o {
        SimOutcome::Answer(_) => "answer".into(),
        SimOutcome::Fail { status, .. } => status.to_string(),
        SimOutcome::Malformed => "malformed".into(),
    }
}

#[tokio::test]
async fn same_seed_same_outcomes() {
    let settings = SimSettings {
        fail_rate: 0.3,
        jitter_ms: 50,
        seed: Some(7),
        ..Default::default()
    };
    let run = |settings: SimSettings| {
        let sim = Simulator::new(settings);
        (0..50)
            .map(|_| {
                let (latency, outcome) = sim.decide(MODEL, &plain());
                (latency, kind(&outcome))
            })
            .collect::<Vec<_>>()
    };
    let a = run(settings.clone());
    assert_eq!(a, run(settings.clone()));
    let failures = a.iter().filter(|(_, k)| k == "500").count();
    assert!(failures > 0 && failures < 50, "{failures} failures");

    // The same sequence over HTTP, as the client sees it.
    let (up, sim) = openai(settings).await;
    let mut seen = Vec::new();
    for _ in 0..50 {
        seen.push(match up.complete(plain(), LONG).await {
            Ok(_) => "answer".to_string(),
            Err(Failure::UpstreamStatus(s)) => s.to_string(),
            Err(other) => panic!("unexpected {other:?}"),
        });
    }
    let expected: Vec<_> = a.into_iter().map(|(_, k)| k).collect();
    assert_eq!(seen, expected);
    assert_eq!(sim.requests(), 50);
}

#[tokio::test]
async fn in_process_content_rules_and_stream() {
    let up = sim_upstream(SimSettings::default());
    let plain_c = up.complete(plain(), LONG).await.unwrap();
    let tools_c = up.complete(with_tools(), LONG).await.unwrap();
    let after_c = up.complete(after_tools(), LONG).await.unwrap();
    assert_content_rules(&plain_c, &tools_c, &after_c);

    for whole in [plain_c, tools_c, after_c] {
        let req = if whole.message.tool_calls.is_empty() && whole.message.content.starts_with('[') {
            plain()
        } else if whole.message.tool_calls.is_empty() {
            after_tools()
        } else {
            with_tools()
        };
        let events = collect(up.stream(req, LONG).await.unwrap()).await;
        let (text, calls, done) = replay(&events);
        assert_eq!(text, whole.message.content);
        assert_eq!(calls, whole.message.tool_calls);
        assert_eq!(done.usage, whole.usage);
    }
    assert_eq!(up.simulator().requests(), 6);
}

#[tokio::test]
async fn in_process_faults() {
    let cases = [
        (
            SimSettings {
                fail_rate: 1.0,
                ..Default::default()
            },
            "UpstreamStatus(500)",
        ),
        (
            SimSettings {
                rate_limit_rate: 1.0,
                retry_after_ms: 250,
                ..Default::default()
            },
            "RateLimited(Some(250))",
        ),
        (
            SimSettings {
                context_chars: 10,
                ..Default::default()
            },
            "TokenLimitExceeded",
        ),
        (
            SimSettings {
                malformed_rate: 1.0,
                ..Default::default()
            },
            "InvalidResponse(\"upstream `sim-local`: malformed response body\")",
        ),
        (
            SimSettings {
                latency_ms: 60_000,
                ..Default::default()
            },
            "Timeout",
        ),
    ];
    for (settings, expected) in cases {
        let up = sim_upstream(settings);
        let short = Duration::from_millis(200);
        let err = up.complete(plain(), short).await.unwrap_err();
        assert_eq!(format!("{err:?}"), expected);
        let err = up.stream(plain(), short).await.err().unwrap();
        assert_eq!(format!("{err:?}"), expected);
    }
}

#[tokio::test]
async fn max_tokens_truncates_over_http() {
    let (up, _sim) = openai(SimSettings::default()).await;
    let mut req = plain();
    req.max_tokens = Some(5);
    let c = up.complete(req, LONG).await.unwrap();
    assert_eq!(c.message.content, "[sim-model] You said");
    assert_eq!(c.finish_reason, "length");
}
