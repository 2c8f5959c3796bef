//! What the plugin benches share: a runtime over a throw-away store, and
//! the router candidates every routing call is given.

use agentrouter::domain::{Candidate, CircuitState};
use agentrouter::runtime::{AllocatorChoice, EngineSettings, Runtime, RuntimeSettings};
use agentrouter::store::Store;
use std::path::PathBuf;
use std::sync::Arc;

/// A runtime with `allocator`, `spare_instances` and the compile cache in
/// `cache_dir` (`None`: every load compiles), the other settings the
/// gateway's defaults.
pub fn runtime(
    allocator: AllocatorChoice,
    spare_instances: u32,
    cache_dir: Option<PathBuf>,
) -> Runtime {
    let settings = RuntimeSettings {
        engine: EngineSettings {
            allocator,
            spare_instances,
            ..Default::default()
        },
        cache_dir,
    };
    Runtime::new(&settings, Arc::new(Store::temporary().unwrap())).unwrap()
}

/// Three upstreams of different prices, one tagged `reasoning`.
pub fn candidates() -> Vec<Candidate> {
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
