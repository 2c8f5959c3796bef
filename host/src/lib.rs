//! AgentRouter: a production host for multi-agent AI systems.
//!
//! The native host owns networking, state and limits; agents, validators,
//! routers and recovery strategies are sandboxed WebAssembly components
//! loaded through the `agentrouter:plugin` WIT contract (see `wit/`).
//!
//! # How the modules depend on each other
//!
//! Data flows one way, and so do imports — a module uses only the ones
//! below it:
//!
//! ```text
//! app backup    assemble everything from a Config (reload re-assembles);
//!               back up and restore the state a config names
//! server        HTTP ⇄ domain types, admin API, one error mapping (ApiError)
//! gateway       serves one request for a caller: rules, key admission,
//!               cache, accounting, stream settlement
//! pipeline      validators → agent | completion plan over guarded
//!               upstreams → validators; the request's ledger
//! rollout runtime upstream resilience cache auth ratelimit
//!               hot-swappable slots, the sandbox, providers, breakers and
//!               budgets, the response cache, keys, limits
//! cluster       the shared Redis of several replicas (`[cluster]`): the
//!               connection and whether it answers; each module above owns
//!               its data and scripts in it
//! telemetry     metrics, readiness checks, the request record
//! domain budget clock net secret store openai
//!               small shared types, budgets of a request and its agent
//!               calls, wall-clock time, the HTTP client, secret values,
//!               sled, the OpenAI wire format
//! ```
//!
//! `devkit` (the `agentrouter plugin` commands: scaffolds and the local
//! call harness) sits on top too, using `runtime` and `domain`.
//!
//! `config` sits on top with `app`: it is the schema, naming the settings
//! of the modules it configures (each module owns its section's type, so a
//! module never needs `config`); only `app`, `main` and the admin API's
//! reload errors use it. WIT-generated types stay inside `runtime`, HTTP
//! types inside `server` (and the clients that speak HTTP).
#![deny(missing_docs)]

pub mod app;
pub mod auth;
pub mod backup;
pub mod budget;
pub mod cache;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod devkit;
pub mod domain;
pub mod gateway;
pub mod net;
pub mod openai;
pub mod pipeline;
pub mod plugins;
pub mod ratelimit;
pub mod resilience;
pub mod rollout;
pub mod runtime;
pub mod secret;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod upstream;
