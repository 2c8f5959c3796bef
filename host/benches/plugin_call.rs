//! Cost of one plugin call on the request path — what every validator,
//! router and recovery decision pays per request: with the instance made
//! and torn down on the call (the default), with spare instances (made
//! ahead and torn down on another thread), with one instance reused across
//! calls (`isolation = "reuse"`), and across the pooling and on-demand
//! allocators.
//!
//! The tokio runtime has one worker thread besides the bench's: the spares'
//! background work runs there, as it runs on the gateway's other cores.
//! Calls are timed one at a time with an untimed gap between them, as
//! requests make them (see [`GAP`]); back to back, the background work would
//! compete with the calls for the same cores, which is what a saturated
//! gateway's throughput (the `bench/` harness) shows instead.
//!
//! Run: `cargo bench -p agentrouter --bench plugin_call`

mod common;

use agentrouter::domain::{Message, RouteRequest, Stage};
use agentrouter::plugins;
use agentrouter::runtime::{AllocatorChoice, Isolation, PluginSource, PluginSpec, World};
use common::{candidates, runtime};
use criterion::{Bencher, Criterion, criterion_group, criterion_main};
use std::future::Future;
use std::time::{Duration, Instant};

fn bench(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let messages = vec![Message::user(
        "Summarise the attached report in three bullet points.",
    )];
    let route_req = RouteRequest {
        prompt_tokens: 40,
        message_count: 1,
        ..Default::default()
    };
    let candidates = candidates();
    let minimal = PluginSpec::new(
        "minimal",
        World::Validator,
        PluginSource::File(plugins::fixture_dir().join("slow_ok.wasm")),
    );

    for (label, allocator, spares, isolation) in [
        (
            "pooling+reuse",
            AllocatorChoice::Pooling,
            0,
            Isolation::Reuse,
        ),
        (
            "pooling+spares",
            AllocatorChoice::Pooling,
            2,
            Isolation::PerCall,
        ),
        ("pooling", AllocatorChoice::Pooling, 0, Isolation::PerCall),
        (
            "on-demand",
            AllocatorChoice::OnDemand,
            0,
            Isolation::PerCall,
        ),
    ] {
        let rt = runtime(allocator, spares, None);
        let load = |mut spec: PluginSpec| {
            spec.isolation = isolation;
            rt.load(spec).unwrap()
        };
        let minimal = load(minimal.clone());
        let guard = load(plugins::get("input-guard").unwrap().spec("input-guard"));
        let router = load(plugins::get("cost-router").unwrap().spec("cost-router"));

        for plugin in [&minimal, &guard, &router] {
            tokio.block_on(plugin.warm()).unwrap();
        }
        let mut group = c.benchmark_group(format!("call/{label}"));
        group.bench_function("validator/minimal", |b| {
            paced(b, &tokio, || minimal.validate(Stage::Input, &messages))
        });
        group.bench_function("validator/input-guard", |b| {
            paced(b, &tokio, || guard.validate(Stage::Input, &messages))
        });
        group.bench_function("router/cost-router", |b| {
            paced(b, &tokio, || router.route(&route_req, &candidates))
        });
        group.finish();
    }
}

/// The gap between two timed calls: requests arrive with network time
/// between them, and that is when background work (a spare's teardown and
/// the next spare) runs. The gap is not timed; only the call is.
const GAP: Duration = Duration::from_micros(200);

/// Times one call at a time, `GAP` apart.
fn paced<F, Fut>(b: &mut Bencher<'_>, tokio: &tokio::runtime::Runtime, mut call: F)
where
    F: FnMut() -> Fut,
    Fut: Future,
{
    b.iter_custom(|iters| {
        tokio.block_on(async {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                std::thread::sleep(GAP);
                let started = Instant::now();
                std::hint::black_box(call().await);
                timed += started.elapsed();
            }
            timed
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
