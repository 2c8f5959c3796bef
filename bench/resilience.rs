//! Resilience under combined faults, measured: the scenarios of issue 20
//! (two flaky providers that must look like one reliable one).
//!
//! Everything crosses real HTTP on 127.0.0.1: each provider is the
//! simulator's OpenAI-compatible server (`agentrouter sim`'s, in process)
//! behind a `kind = "openai"` upstream, and the gateway is the real app with
//! `cost-router` and `standard-recovery` and the default `[resilience]`.
//!
//! `table`: the issue's table — two upstreams serving `usf-mini`, the
//! simulator's default latency (20 ms + up to 10 ms jitter), 1,000 requests
//! at concurrency 32 per row; prints the client results, the real upstream
//! calls and latency quantiles.
//!
//! `matrix`: the chaos matrix of `tests/resilience.rs` ({5xx, 429, hang,
//! malformed} × {1, 2, 3 upstreams} × {default, tuned}, the simulator's
//! default latency, every upstream's default 30 s call bound), printed.
//!
//! Run: `cargo bench -p agentrouter --bench resilience -- table` (or
//! `matrix`; both without a name). `RESILIENCE_REQUESTS` and
//! `RESILIENCE_CONCURRENCY` change the load.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use agentrouter::upstream::sim::SimSettings;
use std::time::Duration;
use support::load::{Load, drive};
use support::matrix::{self, Tuning};
use support::{Gateway, SimServer};

/// A provider as `agentrouter sim` starts it (20 ms + up to 10 ms), seeded.
fn provider(seed: u64) -> SimSettings {
    SimSettings {
        seed: Some(seed),
        ..SimSettings::default()
    }
}

/// One row of the issue's table: what each of the two providers does.
struct Row {
    name: &'static str,
    a: SimSettings,
    b: SimSettings,
}

fn rows() -> Vec<Row> {
    let healthy = provider;
    let failing = |seed, rate| SimSettings {
        fail_rate: rate,
        ..provider(seed)
    };
    vec![
        Row {
            name: "healthy",
            a: healthy(1),
            b: healthy(2),
        },
        Row {
            name: "30 % 5xx on both",
            a: failing(3, 0.3),
            b: failing(4, 0.3),
        },
        Row {
            name: "30 % 5xx on both, plus 5 % 429 (Retry-After 1 s) on one",
            a: SimSettings {
                rate_limit_rate: 0.05,
                ..failing(5, 0.3)
            },
            b: failing(6, 0.3),
        },
        Row {
            name: "5 % 429 on one, the other healthy",
            a: SimSettings {
                rate_limit_rate: 0.05,
                ..provider(7)
            },
            b: healthy(8),
        },
        Row {
            name: "10 % hangs on one, 30 % 5xx on the other",
            a: SimSettings {
                hang_rate: 0.1,
                ..provider(9)
            },
            b: failing(10, 0.3),
        },
        Row {
            name: "100 % 5xx on both",
            a: failing(11, 1.0),
            b: failing(12, 1.0),
        },
    ]
}

/// The operator's gateway: two `openai` upstreams for `usf-mini`, the cost
/// router, standard recovery, every `[resilience]` key at its default.
fn gateway_config(a: &SimServer, b: &SimServer) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[store]
path = "data"

{}{}
[plugins.cost-router]
source = "builtin:cost-router"

[plugins.standard-recovery]
source = "builtin:standard-recovery"

[pipeline]
router = "cost-router"
recovery = "standard-recovery"
"#,
        a.upstream("a", "usf-mini", ""),
        b.upstream("b", "usf-mini", ""),
    )
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn print_row(name: &str, load: &Load, calls: u64) {
    println!(
        "| {name} | {} ({:.1} %) | {calls} | {} | {} | {} | {:.1} |",
        load.summary(),
        load.success() * 100.0,
        ms(load.quantile(0.5)),
        ms(load.quantile(0.99)),
        ms(load.quantile(1.0)),
        load.elapsed.as_secs_f64(),
    );
}

async fn table(requests: usize, concurrency: usize) {
    println!(
        "\n{requests} requests at concurrency {concurrency} per row; two `openai` upstreams (simulator servers) serving usf-mini\n"
    );
    println!("| faults | client results | upstream calls | p50 ms | p99 ms | max ms | run s |");
    println!("|---|---|---|---|---|---|---|");
    for row in rows() {
        let a = SimServer::start(row.a, &["usf-mini"]).await;
        let b = SimServer::start(row.b, &["usf-mini"]).await;
        let gw = Gateway::start(&gateway_config(&a, &b)).await;
        let load = drive(&gw, "usf-mini", requests, concurrency).await;
        print_row(row.name, &load, a.requests() + b.requests());
        drop(gw);
    }
}

async fn matrix(requests: usize, concurrency: usize) {
    println!("\n{requests} requests at concurrency {concurrency} per cell\n");
    println!("{}", matrix::HEADER);
    for tuning in Tuning::ALL {
        for cell in matrix::cells(tuning) {
            let outcome = cell
                .run(SimSettings::default(), requests, concurrency, None)
                .await;
            println!("{}", matrix::row(&cell, &outcome));
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; a scenario name selects what runs.
    let chosen = |name: &str| args.iter().any(|a| a == name);
    let everything = !chosen("table") && !chosen("matrix");
    let requests = env("RESILIENCE_REQUESTS", 1000);
    let concurrency = env("RESILIENCE_CONCURRENCY", 32);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        if everything || chosen("table") {
            table(requests, concurrency).await;
        }
        if everything || chosen("matrix") {
            matrix(requests, concurrency).await;
        }
    });
}
