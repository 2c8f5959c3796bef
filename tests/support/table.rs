//! The table of issue 20: two `openai` upstreams serving `usf-mini`, each a
//! simulator server, in front of a gateway with `cost-router`,
//! `standard-recovery` and every `[resilience]`, breaker and upstream key
//! at its default (30 s `timeout_ms` included) — the operator's setup of
//! the issue — under six combinations of faults. The chaos test
//! (`tests/resilience.rs`) asserts bounds on each row's counts; the bench
//! (`bench/resilience.rs`) prints the table with latency quantiles.

use super::load::drive;
use super::matrix::{Outcome, tally};
use super::{Gateway, SimServer};
use agentrouter::upstream::sim::SimSettings;

/// One row: what each of the two providers does.
pub struct Row {
    /// The faults, as the issue names them.
    pub name: &'static str,
    /// Provider `a`.
    pub a: SimSettings,
    /// Provider `b`.
    pub b: SimSettings,
    /// Whether both providers fail every call (nothing can be served).
    pub outage: bool,
}

/// The rows, every provider seeded and at the simulator's default latency
/// (20 ms + up to 10 ms), as `agentrouter sim` starts it.
pub fn rows() -> Vec<Row> {
    let provider = |seed| SimSettings {
        seed: Some(seed),
        ..SimSettings::default()
    };
    let failing = |seed, rate| SimSettings {
        fail_rate: rate,
        ..provider(seed)
    };
    let row = |name, a, b| Row {
        name,
        a,
        b,
        outage: false,
    };
    vec![
        row("healthy", provider(1), provider(2)),
        row("30 % 5xx on both", failing(3, 0.3), failing(4, 0.3)),
        row(
            "30 % 5xx on both, plus 5 % 429 (Retry-After 1 s) on one",
            SimSettings {
                rate_limit_rate: 0.05,
                ..failing(5, 0.3)
            },
            failing(6, 0.3),
        ),
        row(
            "5 % 429 on one, the other healthy",
            SimSettings {
                rate_limit_rate: 0.05,
                ..provider(7)
            },
            provider(8),
        ),
        row(
            "10 % hangs on one, 30 % 5xx on the other",
            SimSettings {
                hang_rate: 0.1,
                ..provider(9)
            },
            failing(10, 0.3),
        ),
        Row {
            outage: true,
            ..row("100 % 5xx on both", failing(11, 1.0), failing(12, 1.0))
        },
    ]
}

/// The first-party router and recovery plugin, as an operator configures
/// them for resilience.
pub const ROUTED: &str = r#"
[plugins.cost-router]
source = "builtin:cost-router"
[plugins.standard-recovery]
source = "builtin:standard-recovery"
[pipeline]
router = "cost-router"
recovery = "standard-recovery"
"#;

/// The operator's gateway for `a` and `b`: nothing but the upstreams and
/// the two plugins is configured.
pub fn config(a: &SimServer, b: &SimServer) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[store]
path = "data"

{}{}{ROUTED}"#,
        a.upstream("a", "usf-mini", ""),
        b.upstream("b", "usf-mini", ""),
    )
}

impl Row {
    /// Starts the two providers and the gateway, drives `requests`
    /// completions at `concurrency`, and counts.
    pub async fn run(&self, requests: usize, concurrency: usize) -> Outcome {
        let a = SimServer::start(self.a.clone(), &["usf-mini"]).await;
        let b = SimServer::start(self.b.clone(), &["usf-mini"]).await;
        let gw = Gateway::start(&config(&a, &b)).await;
        let load = drive(&gw, "usf-mini", requests, concurrency).await;
        let metrics = gw.metrics().await;
        gw.stop().await;
        Outcome {
            load,
            calls: a.requests() + b.requests(),
            retries_refused: tally(&metrics, "agentrouter_retry_budget_exhausted_total", ""),
            hedges: tally(&metrics, "agentrouter_hedges_total", r#"outcome="sent""#),
        }
    }
}

/// The table's header.
pub const HEADER: &str = "| faults | client results | upstream calls | retries refused | hedges | p50 ms | p99 ms | max ms | run s |\n|---|---|---|---|---|---|---|---|---|";

/// One table line.
pub fn line(row: &Row, outcome: &Outcome) -> String {
    let load = &outcome.load;
    let ms = |d: std::time::Duration| format!("{:.0}", d.as_secs_f64() * 1000.0);
    format!(
        "| {} | {} ({:.1} %) | {} | {} | {} | {} | {} | {} | {:.1} |",
        row.name,
        load.summary(),
        load.success() * 100.0,
        outcome.calls,
        outcome.retries_refused,
        outcome.hedges,
        ms(load.quantile(0.5)),
        ms(load.quantile(0.99)),
        ms(load.quantile(1.0)),
        load.elapsed.as_secs_f64(),
    )
}
