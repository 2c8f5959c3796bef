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

/// One linker per world, each with WASI p2 and that world's imports only.
pub(crate) struct Linkers {
    agent: Linker<PluginState>,
    validator: Linker<PluginState>,
    router: Linker<PluginState>,
    recovery: Linker<PluginState>,
}

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

impl Linkers {
    pub(crate) fn new(engine: &Engine) -> wasmtime::Result<Self> {
        Ok(Self {
            agent: linker(engine, |l| {
                agent::Agent::add_to_linker::<_, HasSelf<PluginState>>(l, |s| s)
            })?,
            validator: linker(engine, |l| {
                validator::Validator::add_to_linker::<_, HasSelf<PluginState>>(l, |s| s)
            })?,
            router: linker(engine, |l| {
                router::Router::add_to_linker::<_, HasSelf<PluginState>>(l, |s| s)
            })?,
            recovery: linker(engine, |l| {
                recovery::Recovery::add_to_linker::<_, HasSelf<PluginState>>(l, |s| s)
            })?,
        })
    }

    pub(crate) fn pre(&self, world: World, component: &Component) -> Result<Pre, LinkError> {
        let linker = match world {
            World::Agent => &self.agent,
            World::Validator => &self.validator,
            World::Router => &self.router,
            World::Recovery => &self.recovery,
        };
        let pre = linker
            .instantiate_pre(component)
            .map_err(LinkError::Imports)?;
        match world {
            World::Agent => agent::AgentPre::new(pre).map(Pre::Agent),
            World::Validator => validator::ValidatorPre::new(pre).map(Pre::Validator),
            World::Router => router::RouterPre::new(pre).map(Pre::Router),
            World::Recovery => recovery::RecoveryPre::new(pre).map(Pre::Recovery),
        }
        .map_err(LinkError::Exports)
    }
}

/// A component type-checked against one world.
pub(crate) enum Pre {
    Agent(agent::AgentPre<PluginState>),
    Validator(validator::ValidatorPre<PluginState>),
    Router(router::RouterPre<PluginState>),
    Recovery(recovery::RecoveryPre<PluginState>),
}

impl Pre {
    pub(crate) async fn instantiate(
        &self,
        store: &mut Store<PluginState>,
    ) -> wasmtime::Result<Instance> {
        Ok(match self {
            Pre::Agent(pre) => Instance::Agent(pre.instantiate_async(store).await?),
            Pre::Validator(pre) => Instance::Validator(pre.instantiate_async(store).await?),
            Pre::Router(pre) => Instance::Router(pre.instantiate_async(store).await?),
            Pre::Recovery(pre) => Instance::Recovery(pre.instantiate_async(store).await?),
        })
    }
}

/// An instance of one world.
pub(crate) enum Instance {
    Agent(agent::Agent),
    Validator(validator::Validator),
    Router(router::Router),
    Recovery(recovery::Recovery),
}

/// The runtime checks the world before it instantiates, so this is a bug,
/// reported as an error rather than a panic.
fn not_a(world: World) -> wasmtime::Error {
    wasmtime::Error::msg(format!("the instance is not of the {world} world"))
}

impl Instance {
    pub(crate) async fn validate(
        &self,
        store: &mut Store<PluginState>,
        stage: wit::Stage,
        messages: &[wit::Message],
    ) -> wasmtime::Result<wit::Verdict> {
        let Instance::Validator(i) = self else {
            return Err(not_a(World::Validator));
        };
        i.call_validate(store, stage, messages).await
    }

    pub(crate) async fn route(
        &self,
        store: &mut Store<PluginState>,
        req: &wit::RouteRequest,
        candidates: &[wit::Candidate],
    ) -> wasmtime::Result<Vec<String>> {
        let Instance::Router(i) = self else {
            return Err(not_a(World::Router));
        };
        i.call_route(store, req, candidates).await
    }

    pub(crate) async fn recover(
        &self,
        store: &mut Store<PluginState>,
        ctx: &wit::FailureContext,
    ) -> wasmtime::Result<wit::Action> {
        let Instance::Recovery(i) = self else {
            return Err(not_a(World::Recovery));
        };
        i.call_recover(store, ctx).await
    }

    pub(crate) async fn handle(
        &self,
        store: &mut Store<PluginState>,
        task: &wit::Task,
    ) -> wasmtime::Result<Result<wit::TaskResult, wit::Failure>> {
        let Instance::Agent(i) = self else {
            return Err(not_a(World::Agent));
        };
        i.call_handle(store, task).await
    }
}
