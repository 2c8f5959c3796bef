//! What a cache hit costs next to the upstream path it replaces.
//!
//! Three ways to answer the same request, in process (no HTTP):
//! - `upstream`: the pipeline with a simulated upstream answering at once
//!   (0 ms latency) — the floor of a miss; real upstreams add 100s of ms;
//! - `l1_hit`: key the request (normalise + SHA-256) and read it from memory;
//! - `l2_hit`: the same from the sled store on disk (L1 off).
//!
//! Run: `cargo bench -p agentrouter --bench cache`; figures in docs/cache.md.

use agentrouter::cache::{CacheKey, CacheTier, MemoryTier, ResponseCache, SledTier};
use agentrouter::config::{CachePolicy, CacheScope};
use agentrouter::domain::{CallContext, CompletionRequest, Message};
use agentrouter::pipeline::{Pipeline, PipelineSettings, UpstreamSetup};
use agentrouter::store::Store;
use agentrouter::telemetry::Metrics;
use agentrouter::upstream::sim::{SimSettings, SimUpstream, Simulator};
use agentrouter::upstream::{Upstream, UpstreamInfo};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

fn pipeline() -> Arc<Pipeline> {
    let info = UpstreamInfo {
        name: "sim".into(),
        model: "m".into(),
        input_cost_per_1k: 0.001,
        output_cost_per_1k: 0.002,
        tags: vec![],
        weight: 1,
    };
    let sim = Simulator::new(SimSettings {
        latency_ms: 0,
        jitter_ms: 0,
        ..Default::default()
    });
    let upstream: Arc<dyn Upstream> = Arc::new(SimUpstream::new(info, Arc::new(sim)));
    let setup = UpstreamSetup {
        upstream,
        timeout: Duration::from_secs(5),
        breaker: Default::default(),
    };
    Pipeline::new(HashMap::new(), vec![setup], PipelineSettings::default()).unwrap()
}

fn cache(tier: Arc<dyn CacheTier>) -> ResponseCache {
    ResponseCache::new(
        vec![tier],
        Duration::from_secs(3600),
        CachePolicy::Deterministic,
        CacheScope::Global,
        "bench".into(),
        Arc::new(Metrics::new()),
    )
}

fn request() -> CompletionRequest {
    CompletionRequest {
        model: "m".into(),
        messages: vec![
            Message::system("You are a concise assistant."),
            Message::user("Summarise the attached report in three bullet points, please."),
        ],
        temperature: Some(0.0),
        max_tokens: Some(256),
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pipeline = pipeline();
    let req = request();
    let raw: Map<String, Value> = Map::new();
    let ctx = || CallContext::new("bench", "r", Duration::from_secs(30));
    let outcome = tokio.block_on(pipeline.chat(ctx(), req.clone())).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let l1 = cache(Arc::new(MemoryTier::new(
        64 << 20,
        Duration::from_secs(3600),
    )));
    let l2 = cache(Arc::new(SledTier::new(store)));
    let key = CacheKey::of(&l1.namespace("bench"), &req, &raw);
    tokio.block_on(async {
        l1.store(&key, &outcome.completion, outcome.cost_usd).await;
        l2.store(&key, &outcome.completion, outcome.cost_usd).await;
    });

    let mut group = c.benchmark_group("answer");
    group.bench_function("upstream", |b| {
        b.to_async(&tokio)
            .iter(|| async { pipeline.chat(ctx(), req.clone()).await.unwrap() })
    });
    group.bench_function("l1_hit", |b| {
        b.to_async(&tokio).iter(|| async {
            let key = CacheKey::of(&l1.namespace("bench"), &req, &raw);
            l1.lookup(&key).await.unwrap()
        })
    });
    group.bench_function("l2_hit", |b| {
        b.to_async(&tokio).iter(|| async {
            let key = CacheKey::of(&l2.namespace("bench"), &req, &raw);
            l2.lookup(&key).await.unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
