//! Host-side bindings of the `agentrouter:plugin` contract, one module per
//! contract version.
//!
//! The host implements the latest version ([`latest`]): its WIT types are
//! the ones [`convert`](super) maps to domain types, its interfaces the ones
//! `host.rs` implements. Everything else in the runtime reaches a guest
//! through the version-independent [`Pre`] and [`Instance`] below, whose
//! variants name the version a component was built against (the shape of
//! Zed's `extension_host/src/wasm_host/wit.rs`).
//!
//! Two versions today. `v0_2_0` is [`latest`]; `v0_1_0` keeps its own
//! generated interfaces (their instance names say `@0.1.0`) and implements
//! them by calling the latest ones. 0.2.0 only added interfaces, so 0.1.0
//! reuses the latest `types` and needs no conversion of arguments or
//! results; a version that changes a type converts at its `Instance`
//! methods instead. [`Linkers`], [`Pre`] and [`Instance`] hold one variant
//! or field per version, chosen by the version of the `agentrouter:plugin`
//! interfaces a component imports ([`contract_version`]). A plugin built
//! against 0.1.0 keeps loading unchanged.

#![allow(missing_docs)] // generated code

/// What every contract version's bindings module has, written once: one
/// linker per world (each module brings its `fn linker`, which adds what
/// that version needs besides its worlds' imports), the world-checked
/// [`Pre`](latest::Pre) and the [`Instance`](latest::Instance) whose calls the
/// runtime makes. It names the module's own `agent`, `validator`,
/// `router`, `recovery` and `wit`, so each version gets its own types.
macro_rules! world_glue {
    () => {
        /// One linker per world, each with WASI p2 and that world's imports only.
        pub(crate) struct Linkers {
            agent: Linker<PluginState>,
            validator: Linker<PluginState>,
            router: Linker<PluginState>,
            recovery: Linker<PluginState>,
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

            pub(crate) fn pre(
                &self,
                world: World,
                component: &Component,
            ) -> Result<Pre, LinkError> {
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
    };
}
use world_glue;

pub mod v0_1_0;
pub mod v0_2_0;

/// The contract version the host implements.
pub use v0_2_0 as latest;

/// The contract versions the host loads, oldest first.
pub const VERSIONS: [&str; 2] = ["0.1.0", "0.2.0"];

/// The `agentrouter:plugin` version a component's import names carry
/// (`agentrouter:plugin/llm@0.1.0`), or the latest when it imports none of
/// the contract's interfaces (its exports are the same in every version).
pub fn contract_version<'a>(imports: impl IntoIterator<Item = &'a str>) -> &'static str {
    for name in imports {
        if let Some(rest) = name.strip_prefix("agentrouter:plugin/")
            && let Some((_, version)) = rest.split_once('@')
            && let Some(known) = VERSIONS.iter().find(|v| **v == version)
        {
            return known;
        }
    }
    VERSIONS[VERSIONS.len() - 1]
}

/// The WIT types of the latest contract.
pub use latest::wit;

use super::World;
use super::host::PluginState;
use wasmtime::component::Component;
use wasmtime::{Engine, Store};

/// The linkers of every contract version, one per world.
pub(crate) struct Linkers {
    v0_1_0: v0_1_0::Linkers,
    v0_2_0: v0_2_0::Linkers,
}

/// Why a component cannot be pre-instantiated as a world.
pub(crate) enum LinkError {
    /// It imports something the world's linker does not hold.
    Imports(wasmtime::Error),
    /// It lacks (or mistypes) the world's export.
    Exports(wasmtime::Error),
}

impl Linkers {
    /// Builds each world's linker with exactly that world's imports and WASI.
    pub(crate) fn new(engine: &Engine) -> wasmtime::Result<Self> {
        Ok(Self {
            v0_1_0: v0_1_0::Linkers::new(engine)?,
            v0_2_0: v0_2_0::Linkers::new(engine)?,
        })
    }

    /// Type-checks `component` as `world`: pre-instantiated against that
    /// world's linker only, so an import beyond the world cannot resolve.
    /// The linkers of the version the component was built against.
    pub(crate) fn pre(&self, world: World, component: &Component) -> Result<Pre, LinkError> {
        let ty = component.component_type();
        let engine = component.engine();
        match contract_version(ty.imports(engine).map(|(name, _)| name)) {
            "0.1.0" => self.v0_1_0.pre(world, component).map(Pre::V0_1_0),
            _ => self.v0_2_0.pre(world, component).map(Pre::V0_2_0),
        }
    }
}

/// A type-checked component, ready to be instantiated per call.
pub(crate) enum Pre {
    V0_1_0(v0_1_0::Pre),
    V0_2_0(v0_2_0::Pre),
}

impl Pre {
    /// A fresh instance in `store`.
    pub(crate) async fn instantiate(
        &self,
        store: &mut Store<PluginState>,
    ) -> wasmtime::Result<Instance> {
        match self {
            Pre::V0_1_0(pre) => pre.instantiate(store).await.map(Instance::V0_1_0),
            Pre::V0_2_0(pre) => pre.instantiate(store).await.map(Instance::V0_2_0),
        }
    }
}

/// One instance of a plugin, for one call. Arguments and results are the
/// latest contract's types whatever version the guest speaks.
pub(crate) enum Instance {
    V0_1_0(v0_1_0::Instance),
    V0_2_0(v0_2_0::Instance),
}

impl Instance {
    /// `validate` of the validator world.
    pub(crate) async fn validate(
        &self,
        store: &mut Store<PluginState>,
        stage: wit::Stage,
        messages: &[wit::Message],
    ) -> wasmtime::Result<wit::Verdict> {
        match self {
            Instance::V0_1_0(i) => i.validate(store, stage, messages).await,
            Instance::V0_2_0(i) => i.validate(store, stage, messages).await,
        }
    }

    /// `route` of the router world.
    pub(crate) async fn route(
        &self,
        store: &mut Store<PluginState>,
        req: &wit::RouteRequest,
        candidates: &[wit::Candidate],
    ) -> wasmtime::Result<Vec<String>> {
        match self {
            Instance::V0_1_0(i) => i.route(store, req, candidates).await,
            Instance::V0_2_0(i) => i.route(store, req, candidates).await,
        }
    }

    /// `recover` of the recovery world.
    pub(crate) async fn recover(
        &self,
        store: &mut Store<PluginState>,
        ctx: &wit::FailureContext,
    ) -> wasmtime::Result<wit::Action> {
        match self {
            Instance::V0_1_0(i) => i.recover(store, ctx).await,
            Instance::V0_2_0(i) => i.recover(store, ctx).await,
        }
    }

    /// `handle` of the agent world.
    pub(crate) async fn handle(
        &self,
        store: &mut Store<PluginState>,
        task: &wit::Task,
    ) -> wasmtime::Result<Result<wit::TaskResult, wit::Failure>> {
        match self {
            Instance::V0_1_0(i) => i.handle(store, task).await,
            Instance::V0_2_0(i) => i.handle(store, task).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::engine::{AllocatorChoice, EngineSettings, build_engine};

    #[test]
    fn the_contract_version_is_read_from_the_import_names() {
        assert_eq!(
            contract_version(["wasi:cli/environment@0.2.3", "agentrouter:plugin/llm@0.1.0"]),
            "0.1.0"
        );
        assert_eq!(contract_version(["agentrouter:plugin/http@0.2.0"]), "0.2.0");
        // No contract import (a router that only exports): the latest.
        assert_eq!(contract_version(["wasi:io/streams@0.2.3"]), "0.2.0");
        // An unknown version is left to the latest linker, which names the
        // import it cannot resolve.
        assert_eq!(contract_version(["agentrouter:plugin/llm@9.0.0"]), "0.2.0");
    }

    #[test]
    fn a_0_1_0_component_links_against_the_0_1_0_linker_only() {
        let (engine, _) = build_engine(&EngineSettings {
            allocator: AllocatorChoice::OnDemand,
            ..Default::default()
        })
        .unwrap();
        let linkers = Linkers::new(&engine).unwrap();
        let old = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/contract-0.1.0/worker.wasm");
        let old = Component::from_file(&engine, old).unwrap();
        assert!(matches!(
            linkers.pre(World::Agent, &old),
            Ok(Pre::V0_1_0(_))
        ));
        assert!(linkers.v0_2_0.pre(World::Agent, &old).is_err());
    }

    #[test]
    fn each_world_links_only_its_own_imports() {
        let (engine, _) = build_engine(&EngineSettings {
            allocator: AllocatorChoice::OnDemand,
            ..Default::default()
        })
        .unwrap();
        let linkers = Linkers::new(&engine).unwrap();
        let leaky = crate::plugins::fixture_dir().join("kv_validator.wasm");
        let leaky = Component::from_file(&engine, leaky).unwrap();
        assert!(matches!(
            linkers.pre(World::Validator, &leaky),
            Err(LinkError::Imports(_))
        ));
        let worker = crate::plugins::get("worker").unwrap();
        let worker = Component::new(&engine, worker.wasm).unwrap();
        assert!(linkers.pre(World::Agent, &worker).is_ok());
        for world in [World::Validator, World::Router, World::Recovery] {
            assert!(
                matches!(linkers.pre(world, &worker), Err(LinkError::Imports(_))),
                "{world} linker resolved an agent's imports"
            );
        }
    }
}
