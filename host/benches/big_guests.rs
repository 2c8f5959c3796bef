//! What big guests cost next to Rust ones: cold compile, AOT-cached load,
//! the first call after load, and a warm call (each call a fresh instance
//! from a pool slot that already holds the plugin's image), plus the fuel
//! a call consumes (deterministic, unlike time).
//!
//! Run: `cargo bench -p agentrouter --bench big_guests` after
//! `examples/build.sh` (components missing from `target/examples/`, or
//! `$AGENTROUTER_EXAMPLES_DIR`, are skipped and named). Figures are in
//! docs/runtime.md, "Big guests".
//!
//! Environment:
//! - `BIG_GUESTS_ONLY=name` measures one plugin (e.g. `python-agent`);
//! - `BIG_GUESTS_CALLS=n` warm calls per plugin (default 2000; 200 for
//!   Python), `BIG_GUESTS_COMPILES=n` cold compiles (default 3);
//! - `BIG_GUESTS_ALLOCATOR=on-demand` (default pooling);
//! - `BIG_GUESTS_SPARES=n` spare instances per validator and router
//!   (default 0, the gateway's default; agents never have spares);
//! - `BIG_GUESTS_CALLS_ONLY=1` skips compile and load timings: for
//!   instruction counts under `valgrind --tool=callgrind`, run twice with
//!   two `BIG_GUESTS_CALLS` values and divide the difference.

mod common;

use agentrouter::devkit::harness::StubHost;
use agentrouter::domain::{CallContext, Message, RouteRequest, Stage, Task};
use agentrouter::plugins;
use agentrouter::runtime::{AllocatorChoice, Plugin, PluginSource, PluginSpec, Runtime, World};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Guest {
    name: &'static str,
    world: World,
    bytes: Vec<u8>,
}

fn examples_dir() -> PathBuf {
    std::env::var_os("AGENTROUTER_EXAMPLES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/examples"))
}

fn guests() -> Vec<Guest> {
    let mut guests = vec![
        Guest {
            name: "rust-minimal",
            world: World::Validator,
            bytes: std::fs::read(plugins::fixture_dir().join("slow_ok.wasm")).unwrap(),
        },
        Guest {
            name: "rust-input-guard",
            world: World::Validator,
            bytes: plugins::get("input-guard").unwrap().wasm.to_vec(),
        },
        Guest {
            name: "rust-worker",
            world: World::Agent,
            bytes: plugins::get("worker").unwrap().wasm.to_vec(),
        },
    ];
    for (name, world) in [
        ("python-agent", World::Agent),
        ("js-validator", World::Validator),
        ("c-router", World::Router),
    ] {
        let path = examples_dir().join(format!("{name}.wasm"));
        match std::fs::read(&path) {
            Ok(bytes) => guests.push(Guest { name, world, bytes }),
            Err(e) => eprintln!(
                "skipping {name}: {}: {e} (run examples/build.sh)",
                path.display()
            ),
        }
    }
    if let Ok(only) = std::env::var("BIG_GUESTS_ONLY") {
        guests.retain(|g| g.name == only);
    }
    guests
}

fn env_usize(key: &str) -> Option<usize> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

fn runtime(cache_dir: Option<PathBuf>) -> Runtime {
    let allocator = match std::env::var("BIG_GUESTS_ALLOCATOR").as_deref() {
        Ok("on-demand") => AllocatorChoice::OnDemand,
        _ => AllocatorChoice::Pooling,
    };
    let spares = env_usize("BIG_GUESTS_SPARES").unwrap_or(0) as u32;
    common::runtime(allocator, spares, cache_dir)
}

fn spec(guest: &Guest) -> PluginSpec {
    let mut spec = PluginSpec::new(
        guest.name,
        guest.world,
        PluginSource::Bytes {
            origin: guest.name.to_string(),
            bytes: guest.bytes.clone().into(),
        },
    );
    if guest.name == "python-agent" {
        spec.settings.insert("worker".into(), "researcher".into());
    }
    spec
}

/// One call of the guest's export, as the pipeline makes it.
async fn call(plugin: &Plugin, stub: &Arc<StubHost>) {
    let messages = [Message::user(
        "Summarise the attached report in three bullet points.",
    )];
    match plugin.world() {
        World::Validator => {
            plugin.validate(Stage::Input, &messages).await.unwrap();
        }
        World::Router => {
            let req = RouteRequest {
                prompt_tokens: 40,
                message_count: 1,
                ..Default::default()
            };
            plugin.route(&req, &common::candidates()).await.unwrap();
        }
        World::Agent => {
            let task = Task {
                id: "bench".into(),
                input: messages.to_vec(),
                metadata: [("client".to_string(), "bench".to_string())].into(),
            };
            let ctx = CallContext::new("bench", "bench", Duration::from_secs(60))
                .enter(&plugin.identity().name)
                .unwrap();
            plugin
                .handle(&task, ctx, stub.clone())
                .await
                .unwrap()
                .unwrap();
        }
        World::Recovery => unreachable!("no recovery guest is measured"),
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn quantile(samples: &[Duration], q: f64) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    s[((s.len() - 1) as f64 * q) as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let calls_only = std::env::var_os("BIG_GUESTS_CALLS_ONLY").is_some();
    let compiles = env_usize("BIG_GUESTS_COMPILES").unwrap_or(3).max(1);
    let stub = Arc::new(StubHost::default());
    println!(
        "| plugin | size | cold compile | cached load | first call | warm call (median) | warm p90 | fuel/call | peak memory |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for guest in guests() {
        let (compile, cached) = if calls_only {
            (Duration::ZERO, Duration::ZERO)
        } else {
            // Cold: no cache, every load compiles.
            let rt = runtime(None);
            let compile = median(
                (0..compiles)
                    .map(|_| {
                        let started = Instant::now();
                        rt.load(spec(&guest)).unwrap();
                        started.elapsed()
                    })
                    .collect(),
            );
            // Cached: the first load stores the artifact; the rest hit it.
            let dir = tempfile::tempdir().unwrap();
            let rt = runtime(Some(dir.path().to_path_buf()));
            rt.load(spec(&guest)).unwrap();
            let cached = median(
                (0..5)
                    .map(|_| {
                        let started = Instant::now();
                        rt.load(spec(&guest)).unwrap();
                        started.elapsed()
                    })
                    .collect(),
            );
            (compile, cached)
        };

        let rt = runtime(None);
        let plugin = rt.load(spec(&guest)).unwrap();
        let started = Instant::now();
        tokio.block_on(call(&plugin, &stub));
        let first = started.elapsed();
        let default_calls = if guest.name == "python-agent" {
            200
        } else {
            2000
        };
        let n = env_usize("BIG_GUESTS_CALLS")
            .unwrap_or(default_calls)
            .max(1);
        for _ in 0..(n / 10).min(50) {
            tokio.block_on(call(&plugin, &stub));
        }
        let fuel = plugin.stats().last_fuel;
        let samples: Vec<Duration> = (0..n)
            .map(|_| {
                let started = Instant::now();
                tokio.block_on(call(&plugin, &stub));
                started.elapsed()
            })
            .collect();
        println!(
            "| {} | {:.1} MB | {} | {} | {} | {} | {} | {} | {:.1} MiB |",
            guest.name,
            guest.bytes.len() as f64 / 1e6,
            ms(compile),
            ms(cached),
            us(first),
            us(quantile(&samples, 0.5)),
            us(quantile(&samples, 0.9)),
            fuel,
            plugin.stats().peak_memory_bytes as f64 / (1 << 20) as f64,
        );
    }
}
