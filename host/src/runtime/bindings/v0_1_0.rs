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
    // `types` holds no functions; its instance only has to exist, and the
    // reused latest `types` module registers the 0.2.0 name, not this one.
    linker.instance("agentrouter:plugin/types@0.1.0")?;
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
