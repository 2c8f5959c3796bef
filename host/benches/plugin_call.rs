//! Cost of one plugin call: a fresh instance from the pre-instance, the
//! call, and teardown — what every validator, router and recovery decision
//! pays per request. Compared across the pooling and on-demand allocators.
//!
//! Run: `cargo bench -p agentrouter --bench plugin_call`

use agentrouter::domain::{Candidate, CircuitState, Message, RouteRequest, Stage};
use agentrouter::plugins;
use agentrouter::runtime::{
    AllocatorChoice, EngineSettings, PluginSource, PluginSpec, Runtime, RuntimeSettings, World,
};
use agentrouter::store::Store;
use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;

fn runtime(allocator: AllocatorChoice) -> Runtime {
    let settings = RuntimeSettings {
        engine: EngineSettings {
            allocator,
            ..Default::default()
        },
        cache_dir: None,
    };
    Runtime::new(&settings, Arc::new(Store::temporary().unwrap())).unwrap()
}

fn candidates() -> Vec<Candidate> {
    ["usf-mini", "usf-mini-x1", "backup"]
        .iter()
        .enumerate()
        .map(|(i, name)| Candidate {
            name: name.to_string(),
            model: name.to_string(),
            input_cost_per_1k: 0.001 * (i + 1) as f64,
            output_cost_per_1k: 0.002 * (i + 1) as f64,
            ewma_latency_ms: 120.0,
            error_rate: 0.01,
            circuit: CircuitState::Closed,
            weight: 1,
            tags: if i == 1 {
                vec!["reasoning".into()]
            } else {
                vec![]
            },
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_current_thread()
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

    for (label, allocator) in [
        ("pooling", AllocatorChoice::Pooling),
        ("on-demand", AllocatorChoice::OnDemand),
    ] {
        let rt = runtime(allocator);
        let minimal = rt.load(minimal.clone()).unwrap();
        let guard = rt
            .load(plugins::get("input-guard").unwrap().spec("input-guard"))
            .unwrap();
        let router = rt
            .load(plugins::get("cost-router").unwrap().spec("cost-router"))
            .unwrap();

        let mut group = c.benchmark_group(format!("instantiate+call/{label}"));
        group.bench_function("validator/minimal", |b| {
            b.to_async(&tokio)
                .iter(|| minimal.validate(Stage::Input, &messages))
        });
        group.bench_function("validator/input-guard", |b| {
            b.to_async(&tokio)
                .iter(|| guard.validate(Stage::Input, &messages))
        });
        group.bench_function("router/cost-router", |b| {
            b.to_async(&tokio)
                .iter(|| router.route(&route_req, &candidates))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
