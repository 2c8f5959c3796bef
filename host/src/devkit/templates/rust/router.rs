//! __NAME__: an AgentRouter router.
//!
//! Drops upstreams whose circuit is open and tries the fastest first.

use agentrouter_sdk::router::{Candidate, CircuitState, RouteRequest, Router};

struct Plugin;

impl Router for Plugin {
    fn route(_req: RouteRequest, mut candidates: Vec<Candidate>) -> Vec<String> {
        candidates.retain(|c| c.circuit != CircuitState::Open);
        candidates.sort_by(|a, b| a.ewma_latency_ms.total_cmp(&b.ewma_latency_ms));
        candidates.into_iter().map(|c| c.name).collect()
    }
}

agentrouter_sdk::export_router!(Plugin);
