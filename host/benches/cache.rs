//! What a cache hit costs next to the upstream path it replaces.
//!
//! Three ways to answer the same request, in process (no HTTP):
//! - `upstream_instant`: the pipeline with an upstream that answers in the
//!   same poll — the gateway's own floor for a miss;
//! - `upstream_sim_0ms`: the pipeline with the simulator at 0 ms latency (its
//!   `sleep(0)` still waits for the next 1 ms timer tick) — real upstreams
//!   add hundreds of ms on top;
//! - `l1_hit`: key the request (normalise + SHA-256) and read it from memory;
//! - `l2_hit`: the same from the sled store on disk (L1 off).
//!
//! Run: `cargo bench -p agentrouter --bench cache`; figures in docs/cache.md.

use agentrouter::cache::{CacheKey, CacheTier, MemoryTier, ResponseCache, SledTier};
use agentrouter::config::{CachePolicy, CacheScope};
use agentrouter::domain::{
    CallContext, Completion, CompletionRequest, Failure, Message, Target, Usage,
};
use agentrouter::pipeline::{GuardedUpstream, Pipeline, PipelineSettings};
use agentrouter::resilience::HealthSettings;
use agentrouter::store::Store;
use agentrouter::telemetry::Metrics;
use agentrouter::upstream::sim::{SimSettings, SimUpstream, Simulator};
use agentrouter::upstream::{EventStream, Upstream, UpstreamInfo};
use criterion::{Criterion, criterion_group, criterion_main};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

fn info() -> UpstreamInfo {
    UpstreamInfo {
        name: "up".into(),
        model: "m".into(),
        input_cost_per_1k: 0.001,
        cached_input_cost_per_1k: 0.001,
        output_cost_per_1k: 0.002,
        tags: vec![],
        weight: 1,
        serves: vec![agentrouter::domain::Endpoint::Chat],
    }
}

/// An upstream that answers without waiting at all.
struct Instant(UpstreamInfo);

impl Upstream for Instant {
    fn info(&self) -> &UpstreamInfo {
        &self.0
    }

    fn complete(
        &self,
        req: CompletionRequest,
        _timeout: Duration,
    ) -> BoxFuture<'static, Result<Completion, Failure>> {
        let text = format!(
            "[m] You said: {}",
            req.messages
                .last()
                .map(|m| m.content.as_str())
                .unwrap_or("")
        );
        Box::pin(async move {
            Ok(Completion {
                message: Message::assistant(text),
                model: "m".into(),
                finish_reason: "stop".into(),
                usage: Usage::new(20, 20),
                cached: false,
                details: Default::default(),
            })
        })
    }

    fn stream(
        &self,
        _req: CompletionRequest,
        _timeout: Duration,
    ) -> BoxFuture<'static, Result<EventStream, Failure>> {
        Box::pin(async { Err(Failure::Internal("not benchmarked".into())) })
    }
}

fn pipeline(upstream: Arc<dyn Upstream>) -> Arc<Pipeline> {
    let settings = PipelineSettings::default();
    let guarded = GuardedUpstream::new(
        upstream,
        HealthSettings::with_timeout(Duration::from_secs(5)),
        settings.metrics.clone(),
    );
    Pipeline::new(HashMap::new(), vec![Arc::new(guarded)], settings).unwrap()
}

fn cache(tier: Arc<dyn CacheTier>) -> ResponseCache {
    ResponseCache::new(
        vec![tier],
        Duration::from_secs(3600),
        CachePolicy::Deterministic,
        CacheScope::Global,
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
    let sim = Simulator::new(SimSettings {
        latency_ms: 0,
        jitter_ms: 0,
        ..Default::default()
    });
    let simulated = pipeline(Arc::new(SimUpstream::new(info(), Arc::new(sim))));
    let pipeline = pipeline(Arc::new(Instant(info())));
    let req = request();
    let ctx = || CallContext::new("bench", "r", Duration::from_secs(30));
    let target = Target::Model("m".into());
    let completion = tokio
        .block_on(pipeline.serve(&ctx(), &target, req.clone()))
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let l1 = cache(Arc::new(MemoryTier::new(
        64 << 20,
        Duration::from_secs(3600),
    )));
    let l2 = cache(Arc::new(SledTier::new(store)));
    let key = CacheKey::of(&l1.namespace("bench", "bench"), &req);
    tokio.block_on(async {
        l1.store(&key, &completion, 0.0).await;
        l2.store(&key, &completion, 0.0).await;
    });

    let mut group = c.benchmark_group("answer");
    group.bench_function("upstream_instant", |b| {
        b.to_async(&tokio)
            .iter(|| async { pipeline.serve(&ctx(), &target, req.clone()).await.unwrap() })
    });
    group.bench_function("upstream_sim_0ms", |b| {
        b.to_async(&tokio)
            .iter(|| async { simulated.serve(&ctx(), &target, req.clone()).await.unwrap() })
    });
    group.bench_function("l1_hit", |b| {
        b.to_async(&tokio).iter(|| async {
            let key = CacheKey::of(&l1.namespace("bench", "bench"), &req);
            l1.lookup(&key).await.unwrap()
        })
    });
    group.bench_function("l2_hit", |b| {
        b.to_async(&tokio).iter(|| async {
            let key = CacheKey::of(&l2.namespace("bench", "bench"), &req);
            l2.lookup(&key).await.unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
