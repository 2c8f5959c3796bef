//! AgentRouter: a production host for multi-agent AI systems.
//!
//! The native host owns networking, state and limits; agents, validators,
//! routers and recovery strategies are sandboxed WebAssembly components
//! loaded through the `agentrouter:plugin` WIT contract (see `wit/`).
#![deny(missing_docs)]

pub mod app;
pub mod auth;
pub mod cache;
pub mod config;
pub mod domain;
pub mod openai;
pub mod pipeline;
pub mod plugins;
pub mod ratelimit;
pub mod resilience;
pub mod rollout;
pub mod runtime;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod upstream;
