//! Resilience under combined faults (issue 20), over real HTTP: simulator
//! servers behind `openai` upstreams, the real gateway with `cost-router`
//! and `standard-recovery`. Assertions are on counts — statuses, calls the
//! simulators received, series in /metrics — never on durations.

mod support;

use agentrouter::upstream::sim::SimSettings;
use support::load::{drive, drive_streams};
use support::matrix::{self, Cell, Fault, Tuning};
use support::table::{self, ROUTED};
use support::{Gateway, SimServer, series};

/// Fast, seeded simulator settings.
fn sim(seed: u64) -> SimSettings {
    SimSettings {
        latency_ms: 2,
        jitter_ms: 3,
        seed: Some(seed),
        ..Default::default()
    }
}

/// Requests per matrix cell, and their concurrency.
const CELL_REQUESTS: usize = 100;
const CELL_CONCURRENCY: usize = 8;
/// Every upstream's `timeout_ms` in the matrix: a hang on a lone upstream
/// costs this, not the 30 s default; long enough that a healthy call on a
/// loaded 2-core machine does not time out.
const CALL_BOUND_MS: u64 = 3000;

/// The least share of a cell's requests that must be served. One upstream
/// cannot hide its own faults entirely: what is asserted there is what
/// retries within the budget recover. With two or more, the request must
/// look served by one reliable provider.
fn least_success(cell: &Cell) -> f64 {
    match (cell.fault, cell.upstreams, cell.tuning) {
        // A lone upstream whose calls hang: with the default breaker its
        // timeouts come in a row once they fill the concurrency, and it
        // may open: clients are then failed fast instead of held (the call
        // bound below is what is checked). Hedges need a second upstream.
        (Fault::Hangs, 1, Tuning::Default) => 0.0,
        // A lone rate-limited upstream: a client whose only candidate is
        // cooling down is answered 429 once the retry budget is spent.
        (Fault::RateLimits, 1, Tuning::Default) => 0.8,
        (_, 1, Tuning::Default) => 0.85,
        (_, 1, Tuning::Tuned) => 0.95,
        _ => 0.97,
    }
}

async fn run_matrix(tuning: Tuning) {
    let mut failures = Vec::new();
    let mut table = vec![matrix::HEADER.to_string()];
    for cell in matrix::cells(tuning) {
        let outcome = cell
            .run(sim(0), CELL_REQUESTS, CELL_CONCURRENCY, Some(CALL_BOUND_MS))
            .await;
        table.push(matrix::row(&cell, &outcome));
        let requests = CELL_REQUESTS as u64;
        assert_eq!(outcome.load.total(), requests, "{}", cell.name());
        if outcome.load.success() < least_success(&cell) {
            failures.push(format!(
                "{}: success below {}",
                cell.name(),
                least_success(&cell)
            ));
        }
        // No amplification: retries and hedges together stay within one
        // extra call per request on average.
        let most = 2 * requests;
        if outcome.calls > most {
            failures.push(format!("{}: {} upstream calls", cell.name(), outcome.calls));
        }
        // A 429 reaches a client only when no other upstream could serve.
        if cell.upstreams > 1 && cell.fault != Fault::RateLimits && outcome.load.count(429) > 0 {
            failures.push(format!("{}: answered 429", cell.name()));
        }
    }
    let table = table.join("\n");
    eprintln!("{table}");
    assert!(failures.is_empty(), "{failures:#?}\n{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chaos_matrix_with_default_settings_rides_through() {
    run_matrix(Tuning::Default).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chaos_matrix_with_tuned_settings_rides_through() {
    run_matrix(Tuning::Tuned).await;
}

/// Requests per row of the issue's table, and their concurrency: the
/// issue's own load. At 1,000 requests "99 %" allows 10 failures; the
/// defaults' expected failures are about 2.4 in the rows with 30 % of
/// server errors (five attempts: 0.3⁵), so the bound is not met by chance.
const TABLE_REQUESTS: usize = 1000;
const TABLE_CONCURRENCY: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issues_table_rides_through_with_the_default_config() {
    let mut failures = Vec::new();
    let mut lines = vec![table::HEADER.to_string()];
    for row in table::rows() {
        let outcome = row.run(TABLE_REQUESTS, TABLE_CONCURRENCY).await;
        lines.push(table::line(&row, &outcome));
        let load = &outcome.load;
        let requests = TABLE_REQUESTS as u64;
        assert_eq!(load.total(), requests, "{}", row.name);
        if row.outage {
            // Nothing can serve: every client gets the upstreams' 502, and
            // the breakers stop the calls. Before both open, each has
            // recorded at most its 10 failures in a row, and the requests
            // in flight then (32, each with at most an attempt and a
            // hedge running) add at most 64 calls per upstream.
            if load.count(502) != requests {
                failures.push(format!("{}: {}", row.name, load.summary()));
            }
            let most = 2 * (10 + 2 * TABLE_CONCURRENCY as u64);
            if outcome.calls > most {
                failures.push(format!(
                    "{}: {} upstream calls, more than {most}",
                    row.name, outcome.calls
                ));
            }
            continue;
        }
        // Issue 20, deliverable 4: two flaky providers look like one
        // reliable one.
        if load.count(200) * 100 < requests * 99 {
            failures.push(format!("{}: under 99 %: {}", row.name, load.summary()));
        }
        // One provider always has room: no client is told 429.
        if load.count(429) > 0 {
            failures.push(format!("{}: answered 429", row.name));
        }
        // No amplification: at most one extra call per request on average
        // (the 30 % rows need about 0.43).
        if outcome.calls > 2 * requests {
            failures.push(format!("{}: {} upstream calls", row.name, outcome.calls));
        }
    }
    let lines = lines.join("\n");
    eprintln!("{lines}");
    assert!(failures.is_empty(), "{failures:#?}\n{lines}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_retry_budget_still_falls_back_and_never_answers_a_429_nobody_sent() {
    // One provider also rate-limits (Retry-After 1 s); neither may retry at
    // all. A fallback is a first attempt on the other upstream, so it is
    // never refused by the budget, and a request whose first upstream is
    // cooling down goes to the other one.
    let a = SimServer::start(
        SimSettings {
            fail_rate: 0.3,
            rate_limit_rate: 0.05,
            retry_after_ms: 1000,
            ..sim(1)
        },
        &["usf-mini"],
    )
    .await;
    let b = SimServer::start(
        SimSettings {
            fail_rate: 0.3,
            ..sim(2)
        },
        &["usf-mini"],
    )
    .await;
    let gw = Gateway::start(&format!(
        "{}{}{ROUTED}\n[resilience.retry_budget]\nratio = 0.0\nmin_per_s = 0.0\n",
        a.upstream(
            "a",
            "usf-mini",
            "[upstreams.a.breaker]\nfailure_threshold = 1000"
        ),
        b.upstream(
            "b",
            "usf-mini",
            "[upstreams.b.breaker]\nfailure_threshold = 1000"
        ),
    ))
    .await;
    let load = drive(&gw, "usf-mini", 300, 16).await;
    let metrics = gw.metrics().await;
    // b never rate-limits, so no client may see a 429.
    assert_eq!(load.count(429), 0, "{}", load.summary());
    // Without retries a request fails when both of its calls fail, or when
    // b fails while a cools down after a 429 (then nothing can serve it).
    assert!(load.success() >= 0.6, "{}", load.summary());
    // The budget was really spent: retries were asked for and refused.
    let exhausted = series(
        &metrics,
        r#"agentrouter_retry_budget_exhausted_total{upstream="a"}"#,
    ) + series(
        &metrics,
        r#"agentrouter_retry_budget_exhausted_total{upstream="b"}"#,
    );
    assert!(exhausted > 0.0, "{metrics}");
    // Every request made one call, plus at most one fallback.
    assert!(a.requests() + b.requests() <= 600);
    gw.stop().await;
}

#[tokio::test]
async fn a_429_reaches_the_client_only_when_every_candidate_is_cooling_down() {
    let limited = |seed| SimSettings {
        rate_limit_rate: 1.0,
        // Longer than the request's deadline: no retry can wait it out.
        retry_after_ms: 600_000,
        ..sim(seed)
    };
    let a = SimServer::start(limited(3), &["usf-mini"]).await;
    let b = SimServer::start(limited(4), &["usf-mini"]).await;
    let gw = Gateway::start(&format!(
        "{}{}{ROUTED}",
        a.upstream("a", "usf-mini", ""),
        b.upstream("b", "usf-mini", ""),
    ))
    .await;
    let load = drive(&gw, "usf-mini", 10, 1).await;
    assert_eq!(load.count(429), 10, "{}", load.summary());
    // The first request met both 429s; the rest were refused by the host
    // without a call, both upstreams cooling down for ten minutes.
    assert_eq!((a.requests(), b.requests()), (1, 1));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outage_of_both_upstreams_is_not_amplified() {
    let down = |seed| SimSettings {
        fail_rate: 1.0,
        ..sim(seed)
    };
    let a = SimServer::start(down(5), &["usf-mini"]).await;
    let b = SimServer::start(down(6), &["usf-mini"]).await;
    let gw = Gateway::start(&format!(
        "{}{}{ROUTED}",
        a.upstream("a", "usf-mini", ""),
        b.upstream("b", "usf-mini", ""),
    ))
    .await;
    let load = drive(&gw, "usf-mini", 300, 16).await;
    assert_eq!(load.count(502), 300, "{}", load.summary());
    // Both breakers open after 10 consecutive failures each; until then
    // the requests in flight make at most 4 attempts each, within the
    // retry budget's floor (100 per 10 s). Once open, no call is made
    // until the 30 s recovery timeout: 300 requests, at most 100 calls.
    let calls = a.requests() + b.requests();
    assert!(calls <= 100, "{calls} upstream calls for 300 requests");
    gw.stop().await;
}

#[tokio::test]
async fn a_hanging_upstream_is_hedged_and_its_breaker_opened_by_slow_calls() {
    // a is cheaper, so the router tries it first; it never answers.
    let a = SimServer::start(
        SimSettings {
            hang_rate: 1.0,
            ..sim(7)
        },
        &["usf-mini"],
    )
    .await;
    let b = SimServer::start(sim(8), &["usf-mini"]).await;
    let gw = Gateway::start(&format!(
        "{}{}{ROUTED}\n[resilience.hedge]\ndelay_ms = 50\n",
        a.upstream(
            "a",
            "usf-mini",
            "input_cost_per_1k = 0.1\n[upstreams.a.breaker]\nfailure_threshold = 3\nslow_call_ms = 40"
        ),
        b.upstream("b", "usf-mini", "input_cost_per_1k = 1.0"),
    ))
    .await;
    // One at a time, so the breaker's count is exact.
    let load = drive(&gw, "usf-mini", 20, 1).await;
    assert_eq!(load.count(200), 20, "{}", load.summary());
    let metrics = gw.metrics().await;
    // Three hedged requests, each abandoning a call slower than 40 ms,
    // opened a's breaker: the other 17 went straight to b.
    assert_eq!(a.requests(), 3);
    assert_eq!(b.requests(), 20);
    assert_eq!(
        series(
            &metrics,
            r#"agentrouter_hedges_total{upstream="a",outcome="sent"}"#
        ),
        3.0,
        "{metrics}"
    );
    assert_eq!(
        series(
            &metrics,
            r#"agentrouter_upstream_attempts_total{upstream="a",outcome="cancelled"}"#
        ),
        3.0,
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_stream_whose_upstream_fails_before_its_first_byte_falls_back() {
    // a is first in configured order (no router) and fails each way a
    // stream can fail before anything reaches the client: a 5xx, a first
    // event that is not a chunk, a 429. Until the first byte nothing has
    // reached the client, so nothing is lost by moving on.
    let a = SimServer::start(
        SimSettings {
            script: ["500", "malformed", "429"].map(String::from).to_vec(),
            retry_after_ms: 600_000,
            ..sim(9)
        },
        &["usf-mini"],
    )
    .await;
    let b = SimServer::start(sim(10), &["usf-mini"]).await;
    let gw = Gateway::start(&format!(
        "{}{}",
        a.upstream("a", "usf-mini", ""),
        b.upstream("b", "usf-mini", ""),
    ))
    .await;
    for i in 0..4 {
        let mut req = support::chat("usf-mini", &format!("stream {i}"));
        req["stream"] = serde_json::json!(true);
        let reply = gw.chat(&req).await;
        assert_eq!(reply.status, 200, "stream {i}: {}", reply.text);
        let (_, text) = support::sse_text(&reply.text);
        assert_eq!(text, format!("[usf-mini] You said: stream {i}"));
    }
    // The fourth went to b first: a was cooling down after its 429, and
    // was not called.
    assert_eq!((a.requests(), b.requests()), (3, 4));
    let metrics = gw.metrics().await;
    for outcome in ["server-error", "invalid-response", "rate-limited"] {
        assert_eq!(
            series(
                &metrics,
                &format!(
                    r#"agentrouter_upstream_attempts_total{{upstream="a",outcome="{outcome}"}}"#
                )
            ),
            1.0,
            "{outcome}: {metrics}"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_hedge_never_duplicates_a_call_in_flight_and_goes_back_to_a_failed_upstream() {
    let hangs = |seed| SimSettings {
        hang_rate: 1.0,
        ..sim(seed)
    };
    let fails_once = |seed| SimSettings {
        script: vec!["500".to_string()],
        ..sim(seed)
    };
    // No router: the configured (name) order, a then b.
    let config = |a: &SimServer, b: &SimServer| {
        format!(
            "{}{}\n[plugins.standard-recovery]\nsource = \"builtin:standard-recovery\"\n\
             [plugins.standard-recovery.settings]\nbase_delay_ms = 20\n\
             [pipeline]\nrecovery = \"standard-recovery\"\n[resilience.hedge]\ndelay_ms = 50\n",
            a.upstream("a", "usf-mini", "timeout_ms = 5000"),
            b.upstream("b", "usf-mini", "timeout_ms = 5000"),
        )
    };
    let attempts = |metrics: &str, upstream: &str, outcome: &str| {
        series(
            metrics,
            &format!(
                r#"agentrouter_upstream_attempts_total{{upstream="{upstream}",outcome="{outcome}"}}"#
            ),
        )
    };

    // a hangs; its hedge on b fails. The only other upstream, a, has this
    // request's call in flight, so no second call goes there: the request
    // waits for a, hedges it again after the delay, and that hedge goes
    // back to b (a retry there).
    let (a, b) = (
        SimServer::start(hangs(11), &["usf-mini"]).await,
        SimServer::start(fails_once(12), &["usf-mini"]).await,
    );
    let gw = Gateway::start(&config(&a, &b)).await;
    let reply = gw.chat(&support::chat("usf-mini", "hello")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!((a.requests(), b.requests()), (1, 2));
    let metrics = gw.metrics().await;
    assert_eq!(attempts(&metrics, "a", "cancelled"), 1.0, "{metrics}");
    gw.stop().await;

    // a fails; the fallback to b hangs. Every upstream has been tried, so
    // the hedge goes back to a (a retry there), not nowhere: the request
    // does not wait for b's 5 s timeout.
    let (a, b) = (
        SimServer::start(fails_once(13), &["usf-mini"]).await,
        SimServer::start(hangs(14), &["usf-mini"]).await,
    );
    let gw = Gateway::start(&config(&a, &b)).await;
    let reply = gw.chat(&support::chat("usf-mini", "hello")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!((a.requests(), b.requests()), (2, 1));
    let metrics = gw.metrics().await;
    assert_eq!(
        series(
            &metrics,
            r#"agentrouter_hedges_total{upstream="b",outcome="sent"}"#
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(attempts(&metrics, "b", "cancelled"), 1.0, "{metrics}");
    assert_eq!(attempts(&metrics, "b", "timeout"), 0.0, "{metrics}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_ride_through_30_percent_of_5xx_on_both_upstreams() {
    // The issue's second row, streamed, with the default config: before
    // its first byte a stream follows the plan a whole answer does —
    // fallback, retries of the same upstream within its budget, five
    // attempts — so it fails only when all five fail (0.3⁵ = 0.24 %).
    let flaky = |seed| SimSettings {
        fail_rate: 0.3,
        ..sim(seed)
    };
    let a = SimServer::start(flaky(15), &["usf-mini"]).await;
    let b = SimServer::start(flaky(16), &["usf-mini"]).await;
    let gw = Gateway::start(&format!(
        "{}{}{ROUTED}",
        a.upstream("a", "usf-mini", ""),
        b.upstream("b", "usf-mini", ""),
    ))
    .await;
    // 1,000 rather than 200: "99 %" of 200 allows 2 failures against an
    // expected 0.5–0.6 (measured), which 200 streams exceed about one run
    // in forty; of 1,000 it allows 10 against 3–5 measured (2.4 by the
    // model), as the issue's table does for whole answers.
    const STREAMS: u64 = 1000;
    let load = drive_streams(&gw, "usf-mini", STREAMS as usize, 16).await;
    let calls = a.requests() + b.requests();
    let metrics = gw.metrics().await;
    let hedges = matrix::tally(&metrics, "agentrouter_hedges_total", r#"outcome="sent""#);
    eprintln!(
        "streams: {}; {calls} upstream calls, {hedges} hedges",
        load.summary()
    );
    assert_eq!(load.total(), STREAMS);
    // Moving on through the other upstream alone, as before, served about
    // 91 % (88.5 % of 200 measured).
    assert!(load.whole() * 100 >= STREAMS * 99, "{}", load.summary());
    assert_eq!(load.broken, 0, "{}", load.summary());
    assert_eq!(load.count(429), 0, "{}", load.summary());
    // No amplification: about 1.43 calls per stream (1 / 0.7), plus the
    // hedges of slow openings within their budget.
    assert!(
        calls <= 2 * STREAMS,
        "{calls} upstream calls for {STREAMS} streams"
    );
    // The recovery plugin decided what each failed opening did next.
    let decisions = matrix::tally(&metrics, "agentrouter_recovery_actions_total", "");
    assert!(decisions > 0, "{metrics}");
    gw.stop().await;
}

/// One streamed request for `prompt`, answered 200: the text of the
/// answer, which must have come whole (ended with `[DONE]`).
async fn stream_once(gw: &Gateway, prompt: &str) -> String {
    let mut req = support::chat("usf-mini", prompt);
    req["stream"] = serde_json::json!(true);
    let reply = gw.chat(&req).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    support::sse_text(&reply.text).1
}

#[tokio::test]
async fn a_stream_on_a_lone_upstream_is_retried_before_its_first_byte() {
    // No other upstream to fall back to: the recovery plugin retries the
    // same one, within its retry budget, as for a whole answer.
    let a = SimServer::start(
        SimSettings {
            script: ["500", "500"].map(String::from).to_vec(),
            ..sim(17)
        },
        &["usf-mini"],
    )
    .await;
    let gw = Gateway::start(&format!(
        "{}\n[plugins.standard-recovery]\nsource = \"builtin:standard-recovery\"\n\
         [plugins.standard-recovery.settings]\nbase_delay_ms = 20\n\
         [pipeline]\nrecovery = \"standard-recovery\"\n",
        a.upstream("a", "usf-mini", ""),
    ))
    .await;
    let text = stream_once(&gw, "again").await;
    assert_eq!(text, "[usf-mini] You said: again");
    assert_eq!(a.requests(), 3);
    let metrics = gw.metrics().await;
    assert_eq!(
        series(
            &metrics,
            r#"agentrouter_recovery_actions_total{upstream="a",action="retry"}"#
        ),
        2.0,
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_stream_is_hedged_before_its_first_byte_and_never_after_it() {
    // No router: the configured (name) order, a then b.
    let config = |a: &SimServer, b: &SimServer| {
        format!(
            "{}{}\n[resilience.hedge]\ndelay_ms = 50\n",
            a.upstream("a", "usf-mini", "timeout_ms = 5000"),
            b.upstream("b", "usf-mini", "timeout_ms = 5000"),
        )
    };
    let counted = |metrics: &str, family: &str, outcome: &str| {
        series(
            metrics,
            &format!(r#"agentrouter_{family}_total{{upstream="a",outcome="{outcome}"}}"#),
        )
    };

    // a never answers: after the hedge delay the stream is opened on b as
    // well, b's first event wins, and a's call is cancelled — the stream
    // does not wait for a's first-token timeout (5 s).
    let a = SimServer::start(
        SimSettings {
            hang_rate: 1.0,
            ..sim(18)
        },
        &["usf-mini"],
    )
    .await;
    let b = SimServer::start(sim(19), &["usf-mini"]).await;
    let gw = Gateway::start(&config(&a, &b)).await;
    let text = stream_once(&gw, "hedged").await;
    assert_eq!(text, "[usf-mini] You said: hedged");
    assert_eq!((a.requests(), b.requests()), (1, 1));
    let metrics = gw.metrics().await;
    assert_eq!(counted(&metrics, "hedges", "sent"), 1.0, "{metrics}");
    assert_eq!(
        counted(&metrics, "upstream_attempts", "cancelled"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        counted(&metrics, "upstream_attempts", "timeout"),
        0.0,
        "{metrics}"
    );
    gw.stop().await;

    // a's first event comes at once and the rest 100 ms apart, well past
    // the hedge delay: the stream is the answer, and never duplicated.
    let a = SimServer::start(
        SimSettings {
            chunk_interval_ms: 100,
            ..sim(20)
        },
        &["usf-mini"],
    )
    .await;
    let b = SimServer::start(sim(21), &["usf-mini"]).await;
    let gw = Gateway::start(&config(&a, &b)).await;
    let text = stream_once(&gw, "slow but started").await;
    assert_eq!(text, "[usf-mini] You said: slow but started");
    assert_eq!((a.requests(), b.requests()), (1, 0));
    let metrics = gw.metrics().await;
    assert_eq!(counted(&metrics, "hedges", "sent"), 0.0, "{metrics}");
    assert_eq!(
        counted(&metrics, "upstream_attempts", "ok"),
        1.0,
        "{metrics}"
    );
    gw.stop().await;
}
