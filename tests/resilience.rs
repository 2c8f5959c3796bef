//! Resilience under combined faults (issue 20), over real HTTP: simulator
//! servers behind `openai` upstreams, the real gateway with `cost-router`
//! and `standard-recovery`. Assertions are on counts — statuses, calls the
//! simulators received, series in /metrics — never on durations.

mod support;

use agentrouter::upstream::sim::SimSettings;
use support::load::drive;
use support::matrix::{self, Cell, Fault, Tuning};
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

const ROUTED: &str = r#"
[plugins.cost-router]
source = "builtin:cost-router"
[plugins.standard-recovery]
source = "builtin:standard-recovery"
[pipeline]
router = "cost-router"
recovery = "standard-recovery"
"#;

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
