//! `agentrouter:plugin@0.1.0`: the first contract, kept so components built
//! against it load and run unchanged.
//!
//! Its WIT (`wit/0.1.0/`) is frozen. 0.2.0 changed no 0.1.0 type, so these
//! bindings reuse the latest `types` (`with`): a 0.1.0 guest's arguments and
//! results are the latest types as they are, checked structurally by
//! wasmtime at link time. Its interfaces are generated anew (their instance
//! names carry `@0.1.0`) and implemented by calling the latest ones; the
//! only conversion is the `log` level, an enum of each version's own.

use super::LinkError;
use crate::runtime::World;
use crate::runtime::host::PluginState;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

/// The `agent` world (also home of the shared interfaces).
pub mod agent {
    wasmtime::component::bindgen!({
        world: "agent",
        path: "../wit/0.1.0",
        imports: {
            "agentrouter:plugin/llm": async | trappable,
            "agentrouter:plugin/agents": async | trappable,
            default: trappable,
        },
        exports: { default: async },
        with: {
            "agentrouter:plugin/types": super::super::latest::wit,
        },
    });
}

/// The `validator` world.
pub mod validator {
    wasmtime::component::bindgen!({
        world: "validator",
        path: "../wit/0.1.0",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "agentrouter:plugin/types": super::super::latest::wit,
            "agentrouter:plugin/log": super::agent::agentrouter::plugin::log,
            "agentrouter:plugin/settings": super::agent::agentrouter::plugin::settings,
        },
    });
}

/// The `router` world.
pub mod router {
    wasmtime::component::bindgen!({
        world: "router",
        path: "../wit/0.1.0",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "agentrouter:plugin/types": super::super::latest::wit,
            "agentrouter:plugin/log": super::agent::agentrouter::plugin::log,
            "agentrouter:plugin/settings": super::agent::agentrouter::plugin::settings,
        },
    });
}

/// The `recovery` world.
pub mod recovery {
    wasmtime::component::bindgen!({
        world: "recovery",
        path: "../wit/0.1.0",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "agentrouter:plugin/types": super::super::latest::wit,
            "agentrouter:plugin/log": super::agent::agentrouter::plugin::log,
            "agentrouter:plugin/settings": super::agent::agentrouter::plugin::settings,
        },
    });
}

/// The data types: the latest ones.
use super::latest::wit;
/// The 0.1.0 interfaces, as generated once.
pub use agent::agentrouter::plugin as interfaces;

/// A linker with WASI and the imports `add` adds.
fn linker(
    engine: &Engine,
    add: impl FnOnce(&mut Linker<PluginState>) -> wasmtime::Result<()>,
) -> wasmtime::Result<Linker<PluginState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    // `types` holds no functions; its instance only has to exist, and the
    // reused latest `types` module registers the 0.2.0 name, not this one.
    linker.instance("agentrouter:plugin/types@0.1.0")?;
    add(&mut linker)?;
    Ok(linker)
}

super::world_glue!();

// The 0.1.0 imports, each the latest one under its 0.1.0 name.
use super::latest::interfaces as latest;

impl interfaces::llm::Host for PluginState {
    async fn complete(
        &mut self,
        req: wit::CompletionRequest,
    ) -> wasmtime::Result<Result<wit::Completion, wit::Failure>> {
        latest::llm::Host::complete(self, req).await
    }
}

impl interfaces::agents::Host for PluginState {
    async fn call(
        &mut self,
        agent: String,
        task: wit::Task,
    ) -> wasmtime::Result<Result<wit::TaskResult, wit::Failure>> {
        latest::agents::Host::call(self, agent, task).await
    }

    async fn call_all(
        &mut self,
        calls: Vec<(String, wit::Task)>,
    ) -> wasmtime::Result<Vec<Result<wit::TaskResult, wit::Failure>>> {
        latest::agents::Host::call_all(self, calls).await
    }
}

impl interfaces::kv::Host for PluginState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        latest::kv::Host::get(self, key)
    }

    fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<(), String>> {
        latest::kv::Host::set(self, key, value, ttl_seconds)
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        latest::kv::Host::delete(self, key)
    }
}

impl interfaces::log::Host for PluginState {
    fn log(
        &mut self,
        level: interfaces::log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        use interfaces::log::Level as Old;
        use latest::log::Level as New;
        let level = match level {
            Old::Trace => New::Trace,
            Old::Debug => New::Debug,
            Old::Info => New::Info,
            Old::Warn => New::Warn,
            Old::Error => New::Error,
        };
        latest::log::Host::log(self, level, message, fields)
    }
}

impl interfaces::settings::Host for PluginState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        latest::settings::Host::get(self, key)
    }
}
