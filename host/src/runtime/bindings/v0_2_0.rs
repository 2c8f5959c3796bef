//! `agentrouter:plugin@0.2.0`, the latest contract: the generated bindings
//! of its four worlds, one linker per world, and calls into an instance of
//! any of them. Its types are the ones the whole host uses.
//!
//! The `agent` world's bindings own the shared interfaces; the other worlds
//! reuse them through `with`, so there is one Rust type per WIT type and one
//! host implementation per interface. Each world still gets a linker of its
//! own holding only its imports: a world is a capability boundary, and a
//! component asking for more than its world grants does not link.

use super::LinkError;
use crate::runtime::World;
use crate::runtime::host::PluginState;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

/// The `agent` world (also home of the shared interfaces).
pub mod agent {
    wasmtime::component::bindgen!({
        world: "agent",
        path: "../wit",
        imports: {
            "agentrouter:plugin/llm": async | trappable,
            "agentrouter:plugin/agents": async | trappable,
            "agentrouter:plugin/http": async | trappable,
            "agentrouter:plugin/tools": async | trappable,
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

/// The interfaces every world shares, as generated once.
pub use agent::agentrouter::plugin as interfaces;
/// The contract's data types.
pub use agent::agentrouter::plugin::types as wit;

/// A linker with WASI and the imports `add` adds.
fn linker(
    engine: &Engine,
    add: impl FnOnce(&mut Linker<PluginState>) -> wasmtime::Result<()>,
) -> wasmtime::Result<Linker<PluginState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    add(&mut linker)?;
    Ok(linker)
}

super::world_glue!();
