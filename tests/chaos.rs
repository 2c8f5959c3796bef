//! Chaos tests: the gateway against upstreams that fail, hang, rate-limit,
//! slow down and answer garbage, over real HTTP (the simulator's server
//! behind `openai` upstreams). Assertions are on counts — requests served,
//! requests the upstream saw, series in /metrics — never on durations; the
//! only time-based checks are lower bounds the host guarantees (nothing is
//! sent before a `Retry-After` expires).

mod support;

use agentrouter::upstream::sim::SimSettings;
use futures::StreamExt;
use serde_json::{Value, json};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use support::{Gateway, SimServer, Webhook, chat, content, series};

/// Fast, seeded simulator settings.
fn sim(seed: u64) -> SimSettings {
    SimSettings {
        latency_ms: 2,
        jitter_ms: 3,
        seed: Some(seed),
        ..Default::default()
    }
}

/// The standard recovery plugin with short backoffs, as the recovery slot.
const RECOVERY: &str = r#"
[plugins.standard-recovery]
source = "builtin:standard-recovery"
[plugins.standard-recovery.settings]
base_delay_ms = 20
max_delay_ms = 200
chunk_chars = 80

[pipeline]
recovery = "standard-recovery"
"#;

/// Log lines written while this test binary runs (JSON, one per line).
fn captured_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        struct Sink;
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                captured_logs()
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt()
            .json()
            .with_writer(|| Sink)
            .with_max_level(tracing::Level::WARN)
            .try_init();
        Mutex::new(Vec::new())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_server_errors_and_latency_spikes_still_serve_99_percent() {
    let faulty = |seed| SimSettings {
        fail_rate: 0.3,
        spike_rate: 0.05,
        spike_ms: 2000,
        ..sim(seed)
    };
    let a = SimServer::start(faulty(1), &["m"]).await;
    let b = SimServer::start(faulty(2), &["m"]).await;
    // A spike outlasts the per-attempt timeout, so it becomes a timeout
    // and a fallback. Riding through a 30% error rate needs a retry budget
    // above it, and a breaker that does not trip on chance streaks. An
    // attempt fails with p = 0.3 + 0.7 × 0.05 ≈ 0.335, so a request fails
    // all of 6 attempts with p ≈ 0.0014: about 0.7 of 500 are expected to,
    // and 6 or more (what would break the assertion) happen once in ~10⁴
    // runs. With 5 attempts, 2.1 are expected and 6 happen in ~2 % of runs.
    let limits = "timeout_ms = 500\n[upstreams.{}.breaker]\nfailure_threshold = 12";
    let gw = Gateway::start(&format!(
        "{}{}{RECOVERY}\n[resilience]\nmax_attempts = 6\n[resilience.retry_budget]\nratio = 0.8\n",
        a.upstream("a", "m", &limits.replace("{}", "a")),
        b.upstream("b", "m", &limits.replace("{}", "b")),
    ))
    .await;
    let gw = Arc::new(gw);
    let statuses: Vec<u16> = futures::stream::iter(0..500)
        .map(|i| {
            let gw = gw.clone();
            async move {
                gw.post("/v1/chat/completions", &chat("m", &format!("request {i}")))
                    .await
                    .0
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(ok >= 495, "only {ok} of 500 succeeded: {statuses:?}");
    // The faults were real: the upstreams saw well over one call per request.
    let calls = a.requests() + b.requests();
    assert!(calls > 550, "only {calls} upstream calls for 500 requests");
    let metrics = gw.metrics().await;
    // A server error moves to the other upstream first (a fallback), and
    // one that fails there too is retried on the first.
    let actions = |action: &str| {
        ["a", "b"]
            .iter()
            .map(|u| {
                series(
                    &metrics,
                    &format!(
                        r#"agentrouter_recovery_actions_total{{upstream="{u}",action="{action}"}}"#
                    ),
                )
            })
            .sum::<f64>()
    };
    assert!(actions("fallback") > 0.0, "{metrics}");
    assert!(actions("fallback") > actions("retry"), "{metrics}");
    Arc::into_inner(gw).unwrap().stop().await;
}

#[tokio::test]
async fn a_hanging_upstream_times_out_and_falls_back_within_the_deadline() {
    let hung = SimServer::start(
        SimSettings {
            hang_rate: 1.0,
            ..sim(3)
        },
        &["m"],
    )
    .await;
    let healthy = SimServer::start(sim(4), &["m"]).await;
    // Hedging off: this is the timeout's own fallback (with hedges on, the
    // whole answer would be hedged after a tenth of the 300 ms instead).
    let gw = Gateway::start(&format!(
        "[server]\nrequest_timeout_ms = 10000\n{}{}{RECOVERY}\n[resilience.hedge]\nenabled = false\n",
        hung.upstream("hung", "m", "timeout_ms = 300"),
        healthy.upstream("spare", "m", ""),
    ))
    .await;
    // Whole answers: the hung upstream is first in configured (name) order.
    let (status, body) = gw.post("/v1/chat/completions", &chat("m", "hello")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content(&body), "[m] You said: hello");
    assert_eq!((hung.requests(), healthy.requests()), (1, 1));
    // Streams: no first token in time, so the next upstream serves the stream.
    let mut req = chat("m", "streamed");
    req["stream"] = json!(true);
    let reply = gw.chat(&req).await;
    assert_eq!(reply.status, 200);
    let text = reply.text;
    assert!(
        text.contains("You said") && text.contains("[DONE]"),
        "{text}"
    );
    assert_eq!((hung.requests(), healthy.requests()), (2, 2));
    let metrics = gw.metrics().await;
    assert_eq!(
        series(
            &metrics,
            r#"agentrouter_upstream_attempts_total{upstream="hung",outcome="timeout"}"#
        ),
        2.0,
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_failing_upstream_opens_then_probes_and_closes_once_it_recovers() {
    let flaky = SimServer::start(
        SimSettings {
            fail_rate: 1.0,
            ..sim(5)
        },
        &["m"],
    )
    .await;
    let gw = Gateway::start(&flaky.upstream(
        "flaky",
        "m",
        "[upstreams.flaky.breaker]\nfailure_threshold = 3\nrecovery_timeout_s = 1\nhalf_open_probes = 2",
    ))
    .await;
    // No recovery plugin and no alternative: each request makes one attempt.
    for _ in 0..3 {
        assert_eq!(
            gw.post("/v1/chat/completions", &chat("m", "x")).await.0,
            502
        );
    }
    assert_eq!(flaky.requests(), 3);
    // Open: refused without reaching the upstream, and the replica is unready.
    for _ in 0..5 {
        let (status, body) = gw.post("/v1/chat/completions", &chat("m", "x")).await;
        assert_eq!(status, 502);
        assert!(body.to_string().contains("circuit open"), "{body}");
    }
    assert_eq!(flaky.requests(), 3);
    assert_eq!(gw.get("/health/ready").await.0, 503);
    assert!(
        gw.metrics()
            .await
            .contains(r#"agentrouter_upstream_breaker_state{upstream="flaky"} 2"#)
    );
    // The provider recovers; after recovery_timeout_s probes go through.
    flaky.set_settings(sim(6));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("m", "probe 1"))
            .await
            .0,
        200
    );
    assert!(
        gw.metrics()
            .await
            .contains(r#"agentrouter_upstream_breaker_state{upstream="flaky"} 1"#)
    );
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("m", "probe 2"))
            .await
            .0,
        200
    );
    // Two successful probes closed it.
    assert_eq!(flaky.requests(), 5);
    assert_eq!(gw.get("/health/ready").await.0, 200);
    assert!(
        gw.metrics()
            .await
            .contains(r#"agentrouter_upstream_breaker_state{upstream="flaky"} 0"#)
    );
    for _ in 0..5 {
        assert_eq!(
            gw.post("/v1/chat/completions", &chat("m", "x")).await.0,
            200
        );
    }
    assert_eq!(flaky.requests(), 10);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_is_held_off_until_retry_after_expires() {
    let limited = SimServer::start(
        SimSettings {
            script: vec!["429".into(); 8],
            retry_after_ms: 1000,
            ..sim(7)
        },
        &["m"],
    )
    .await;
    let gw = Arc::new(
        Gateway::start(&format!(
            "{}{RECOVERY}",
            limited.upstream("limited", "m", "")
        ))
        .await,
    );
    let statuses: Vec<u16> = futures::future::join_all((0..8).map(|i| {
        let gw = gw.clone();
        async move {
            gw.post("/v1/chat/completions", &chat("m", &format!("storm {i}")))
                .await
                .0
        }
    }))
    .await;
    assert_eq!(statuses, vec![200; 8]);
    let log = limited.log();
    let first_429 = log.iter().find(|r| r.status == 429).expect("a 429").at;
    let limited_count = log.iter().filter(|r| r.status == 429).count();
    let served: Vec<_> = log.iter().filter(|r| r.status == 200).collect();
    // The script answered 429 to the first 8 calls; every later call came
    // after the hint, and each request retried once.
    assert_eq!((limited_count, served.len()), (8, 8), "{log:?}");
    for record in served {
        assert!(
            record.at.duration_since(first_429) >= Duration::from_millis(1000),
            "a call reached the upstream {:?} after its 429 asked for 1 s",
            record.at.duration_since(first_429)
        );
    }
    let gw = Arc::into_inner(gw).unwrap();
    // A hint longer than the request's deadline is not slept on: the
    // client gets the 429 and the hint at once.
    limited.set_settings(SimSettings {
        script: vec!["429".into()],
        retry_after_ms: 120_000,
        ..sim(8)
    });
    let reply = gw.chat(&chat("m", "later")).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("120"));
    assert_eq!(limited.requests(), 17);
    gw.stop().await;
}

#[tokio::test]
async fn token_limits_are_chunked_and_unparsable_answers_refined() {
    let small = SimServer::start(
        SimSettings {
            context_chars: 100,
            ..sim(9)
        },
        &["m"],
    )
    .await;
    let gw = Gateway::start(&format!("{}{RECOVERY}", small.upstream("small", "m", ""))).await;
    let long: String = "abcdefghij".repeat(25);
    let (status, body) = gw.post("/v1/chat/completions", &chat("m", &long)).await;
    assert_eq!(status, 200, "{body}");
    // One refused call, then ceil(250 / 80) = 4 chunks, answers merged.
    assert_eq!(small.requests(), 5);
    let answer = content(&body);
    assert_eq!(answer.lines().count(), 4, "{answer}");
    assert!(
        answer.lines().all(|l| l.starts_with("[m] You said: ")),
        "{answer}"
    );
    // An unparsable answer: the refinement asks again, with a nudge.
    small.set_settings(SimSettings {
        script: vec!["malformed".into()],
        ..sim(10)
    });
    let (status, body) = gw.post("/v1/chat/completions", &chat("m", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert!(content(&body).contains("could not be parsed"), "{body}");
    assert_eq!(small.requests(), 7);
    let metrics = gw.metrics().await;
    for action in ["chunk", "refine"] {
        assert_eq!(
            series(
                &metrics,
                &format!(
                    r#"agentrouter_recovery_actions_total{{upstream="small",action="{action}"}}"#
                )
            ),
            1.0,
            "{metrics}"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn alert_and_fail_is_logged_counted_and_posted() {
    captured_logs();
    let hook = Webhook::start().await;
    let url = hook.url.clone();
    // The provider refuses our key: standard-recovery fails with an alert.
    let refusing = SimServer::start(
        SimSettings {
            script: vec!["401".into()],
            ..sim(11)
        },
        &["m"],
    )
    .await;
    let gw = Gateway::start(&format!(
        "{}{RECOVERY}\n[resilience]\nalert_webhook = \"{url}\"\n",
        refusing.upstream("refusing", "m", "")
    ))
    .await;
    let (status, body) = gw.post("/v1/chat/completions", &chat("m", "hi")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(refusing.requests(), 1);
    let metrics = gw.metrics().await;
    assert_eq!(
        series(
            &metrics,
            r#"agentrouter_alerts_total{source="standard-recovery",upstream="refusing"}"#
        ),
        1.0,
        "{metrics}"
    );
    // The webhook is posted in the background; wait for it (bounded).
    let posted = hook.wait_for(1).await;
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(posted[0]["event"], "agentrouter.alert");
    assert_eq!(posted[0]["upstream"], "refusing");
    assert_eq!(posted[0]["model"], "m");
    assert!(
        posted[0]["source"]
            .as_str()
            .unwrap()
            .starts_with("standard-recovery@")
    );
    assert!(posted[0]["failure"].as_str().unwrap().contains("401"));
    let request_id = posted[0]["request_id"].as_str().unwrap().to_string();
    let logs = String::from_utf8(captured_logs().lock().unwrap().clone()).unwrap();
    let event = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["fields"]["alert"] == true && e["fields"]["request_id"] == request_id.as_str())
        .unwrap_or_else(|| panic!("no alert log event for {request_id} in\n{logs}"));
    assert_eq!(event["level"], "ERROR");
    assert_eq!(event["fields"]["upstream"], "refusing");
    gw.stop().await;
}

/// An upstream answering 200 with a different unusable body each time.
async fn garbage_upstream() -> (String, Arc<Mutex<usize>>) {
    const BODIES: [&str; 6] = [
        "not json at all",
        "{}",
        r#"{"choices": []}"#,
        r#"{"choices": [{"message": {"role": "assistant", "content": 5}}]}"#,
        "<html><body>502 Bad Gateway</body></html>",
        "",
    ];
    let calls = Arc::new(Mutex::new(0usize));
    let counter = calls.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                let mut n = counter.lock().unwrap();
                let body = BODIES[*n % BODIES.len()];
                *n += 1;
                ([("content-type", "application/json")], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

#[tokio::test]
async fn malformed_bodies_are_typed_errors_retried_per_policy() {
    let (url, calls) = garbage_upstream().await;
    let gw = Gateway::start(&format!(
        "[upstreams.junk]\nkind = \"openai\"\nmodel = \"m\"\nbase_url = \"{url}\"\n\
         [upstreams.junk.breaker]\nfailure_threshold = 100\n{RECOVERY}\n[resilience]\nmax_attempts = 2\n"
    ))
    .await;
    for i in 0..6 {
        let (status, body) = gw.post("/v1/chat/completions", &chat("m", "hi")).await;
        assert_eq!(status, 502, "request {i}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("invalid upstream response"),
            "request {i}: {message}"
        );
    }
    // Each request: the first answer, then one refinement (the bound of 2).
    assert_eq!(*calls.lock().unwrap(), 12);
    // Streamed, the garbage fails before the first byte: a clean JSON error.
    let mut req = chat("m", "hi");
    req["stream"] = json!(true);
    let (status, body) = gw.post("/v1/chat/completions", &req).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(gw.get("/health/live").await.0, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_bulkheads_move_on_then_shed_with_503_and_retry_after() {
    let slow = SimServer::start(
        SimSettings {
            latency_ms: 1500,
            ..sim(12)
        },
        &["m"],
    )
    .await;
    let spare = SimServer::start(
        SimSettings {
            latency_ms: 1500,
            ..sim(13)
        },
        &["m"],
    )
    .await;
    let gw = Arc::new(
        Gateway::start(&format!(
            "{}{}",
            slow.upstream("slow", "m", "max_concurrent = 2"),
            spare.upstream("spare", "m", "max_concurrent = 1"),
        ))
        .await,
    );
    let send = |i: u32| {
        let gw = gw.clone();
        tokio::spawn(async move {
            let reply = gw.chat(&chat("m", &format!("r{i}"))).await;
            let retry_after = reply.header("retry-after").map(str::to_string);
            (reply.status, retry_after)
        })
    };
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(send(i));
        // Wait until the upstreams hold it (bounded), so the order is known.
        for _ in 0..200 {
            if slow.requests() + spare.requests() > u64::from(i) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!((slow.requests(), spare.requests()), (2, 1));
    // Every place is taken: refused at once, nothing reaches an upstream.
    for i in 3..6 {
        let (status, retry_after) = send(i).await.unwrap();
        assert_eq!((status, retry_after.as_deref()), (503, Some("1")));
    }
    for h in held {
        assert_eq!(h.await.unwrap().0, 200);
    }
    assert_eq!((slow.requests(), spare.requests()), (2, 1));
    let metrics = gw.metrics().await;
    assert_eq!(
        series(
            &metrics,
            r#"agentrouter_bulkhead_rejections_total{scope="spare"}"#
        ),
        3.0,
        "{metrics}"
    );
    Arc::into_inner(gw).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_bulkhead_sheds_api_requests_but_not_probes() {
    let slow = SimServer::start(
        SimSettings {
            latency_ms: 1500,
            ..sim(14)
        },
        &["m"],
    )
    .await;
    let gw = Arc::new(
        Gateway::start(&format!(
            "{}\n[resilience]\nmax_concurrent_requests = 1\n",
            slow.upstream("slow", "m", "")
        ))
        .await,
    );
    let first = {
        let gw = gw.clone();
        tokio::spawn(async move { gw.post("/v1/chat/completions", &chat("m", "first")).await.0 })
    };
    for _ in 0..200 {
        if slow.requests() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reply = gw.chat(&chat("m", "second")).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.json()["error"]["code"], "overloaded");
    assert_eq!(gw.get("/health/live").await.0, 200);
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(slow.requests(), 1);
    assert!(
        gw.metrics()
            .await
            .contains(r#"agentrouter_bulkhead_rejections_total{scope="global"} 1"#)
    );
    Arc::into_inner(gw).unwrap().stop().await;
}

#[tokio::test]
async fn a_model_falls_back_along_its_chain_when_its_upstreams_cannot_serve() {
    let big = SimServer::start(
        SimSettings {
            fail_rate: 1.0,
            ..sim(15)
        },
        &["x1"],
    )
    .await;
    let mini = SimServer::start(sim(16), &["mini"]).await;
    // No recovery plugin: the host's default is the next alternative.
    let gw = Gateway::start(&format!(
        "{}{}\n[resilience.fallbacks]\nx1 = [\"mini\"]\n",
        big.upstream(
            "big",
            "x1",
            "[upstreams.big.breaker]\nfailure_threshold = 1\nrecovery_timeout_s = 3600"
        ),
        mini.upstream("mini", "mini", ""),
    ))
    .await;
    let (status, body) = gw.post("/v1/chat/completions", &chat("x1", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content(&body), "[mini] You said: hi");
    assert_eq!((big.requests(), mini.requests()), (1, 1));
    // big's breaker is open: no healthy candidate, so the chain serves first.
    let (status, body) = gw.post("/v1/chat/completions", &chat("x1", "again")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((big.requests(), mini.requests()), (1, 2));
    // x1 is still served, so the replica stays ready.
    let (status, body) = gw.get("/health/ready").await;
    assert_eq!(status, 200, "{body}");
    gw.stop().await;
}

#[tokio::test]
async fn the_retry_budget_keeps_an_outage_from_being_amplified() {
    let down = SimServer::start(
        SimSettings {
            fail_rate: 1.0,
            ..sim(17)
        },
        &["m"],
    )
    .await;
    let gw = Gateway::start(&format!(
        "{}{RECOVERY}\n[resilience]\nmax_attempts = 4\n\
         [resilience.retry_budget]\nratio = 0.1\nmin_per_s = 0.1\nwindow_s = 60\n",
        down.upstream(
            "down",
            "m",
            "[upstreams.down.breaker]\nfailure_threshold = 1000"
        ),
    ))
    .await;
    for _ in 0..50 {
        assert_eq!(
            gw.post("/v1/chat/completions", &chat("m", "x")).await.0,
            502
        );
    }
    // Unbudgeted, 4 attempts each would be 200 calls. The budget allows
    // 10% of 50 requests plus a floor of 0.1/s over 60 s: 11 retries; the
    // other 48 retries the recovery plugin asked for were refused.
    assert_eq!(down.requests(), 50 + 11);
    let metrics = gw.metrics().await;
    assert_eq!(
        series(
            &metrics,
            r#"agentrouter_retry_budget_exhausted_total{upstream="down"}"#
        ),
        48.0,
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_stream_that_falls_silent_is_cut_by_the_idle_timeout() {
    // The same trickling provider in process and over HTTP.
    let trickle = SimServer::start(
        SimSettings {
            chunk_interval_ms: 2000,
            ..sim(18)
        },
        &["m"],
    )
    .await;
    let gw = Gateway::start(&format!(
        "{}
[upstreams.local]
kind = \"simulated\"
model = \"local\"
idle_timeout_ms = 100
\
         [upstreams.local.simulator]
latency_ms = 1
jitter_ms = 0
chunk_interval_ms = 2000
",
        trickle.upstream("remote", "m", "idle_timeout_ms = 100"),
    ))
    .await;
    for model in ["m", "local"] {
        let mut req = chat(model, "one two three four five six seven eight");
        req["stream"] = json!(true);
        let reply = gw.chat(&req).await;
        assert_eq!(reply.status, 200);
        let text = reply.text;
        // The first chunk arrived, then silence: an error event, no [DONE].
        assert!(text.contains("chat.completion.chunk"), "{model}: {text}");
        assert!(
            text.contains("stream_interrupted") && text.contains("timed out"),
            "{model}: {text}"
        );
        assert!(!text.contains("[DONE]"), "{model}: {text}");
    }
    assert_eq!(trickle.requests(), 1);
    gw.stop().await;
}
