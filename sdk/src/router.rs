//! The `router` world: order upstream candidates for one completion.
//!
//! The host passes every upstream able to serve the request with live
//! statistics (latency, error rate, circuit state, price); the router returns
//! names in the order the host should try them. Names it leaves out are not
//! tried; unknown names are ignored.
//!
//! ```no_run
//! use agentrouter_sdk::router::{Candidate, CircuitState, RouteRequest, Router};
//!
//! struct Fastest;
//!
//! impl Router for Fastest {
//!     fn route(_req: RouteRequest, mut candidates: Vec<Candidate>) -> Vec<String> {
//!         candidates.retain(|c| c.circuit != CircuitState::Open);
//!         candidates.sort_by(|a, b| a.ewma_latency_ms.total_cmp(&b.ewma_latency_ms));
//!         candidates.into_iter().map(|c| c.name).collect()
//!     }
//! }
//!
//! agentrouter_sdk::export_router!(Fastest);
//! ```

/// Generated bindings for the `router` world.
#[allow(missing_docs, clippy::all)] // generated code
pub mod bindings {
    wit_bindgen::generate!({
        world: "router",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_router",
        default_bindings_module: "agentrouter_sdk::router::bindings",
        runtime_path: "agentrouter_sdk::__wit_bindgen::rt",
    });
}

world_helpers!(self::bindings);

pub use bindings::Guest as Router;
pub use bindings::agentrouter::plugin::log::Level;
pub use bindings::agentrouter::plugin::types::{Candidate, CircuitState, RouteRequest};

/// The value of a metadata key, if present.
pub fn metadata<'a>(req: &'a RouteRequest, key: &str) -> Option<&'a str> {
    req.metadata
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}
