//! Host-side bindings of the `agentrouter:plugin@0.1.0` worlds.
//!
//! The `agent` world imports every host interface, so its bindings own the
//! shared interfaces; the other worlds reuse them through `with`, which keeps
//! one Rust type per WIT type and lets one linker serve all four worlds.

#![allow(missing_docs)] // generated code

/// The `agent` world (also home of the shared interfaces).
pub mod agent {
    wasmtime::component::bindgen!({
        world: "agent",
        path: "../wit",
        imports: {
            "agentrouter:plugin/llm": async | trappable,
            "agentrouter:plugin/agents": async | trappable,
            default: trappable,
        },
        exports: { default: async },
    });
}

/// The `validator` world.
pub mod validator {
    wasmtime::component::bindgen!({
        world: "validator",
        path: "../wit",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "agentrouter:plugin/types": super::agent::agentrouter::plugin::types,
            "agentrouter:plugin/log": super::agent::agentrouter::plugin::log,
            "agentrouter:plugin/settings": super::agent::agentrouter::plugin::settings,
        },
    });
}

/// The `router` world.
pub mod router {
    wasmtime::component::bindgen!({
        world: "router",
        path: "../wit",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "agentrouter:plugin/types": super::agent::agentrouter::plugin::types,
            "agentrouter:plugin/log": super::agent::agentrouter::plugin::log,
            "agentrouter:plugin/settings": super::agent::agentrouter::plugin::settings,
        },
    });
}

/// The `recovery` world.
pub mod recovery {
    wasmtime::component::bindgen!({
        world: "recovery",
        path: "../wit",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "agentrouter:plugin/types": super::agent::agentrouter::plugin::types,
            "agentrouter:plugin/log": super::agent::agentrouter::plugin::log,
            "agentrouter:plugin/settings": super::agent::agentrouter::plugin::settings,
        },
    });
}

pub use agent::agentrouter::plugin::types as wit;
