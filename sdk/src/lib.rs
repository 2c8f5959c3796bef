//! Write AgentRouter plugins in Rust.
//!
//! A plugin is a WebAssembly component implementing one of four worlds of the
//! `agentrouter:plugin@0.2.0` contract (see `wit/plugin.wit`). This crate hides
//! the `wit-bindgen` plumbing: enable the cargo feature of your world,
//! implement one trait, invoke one export macro, and build with
//! `cargo build --release --target wasm32-wasip2`.
//!
//! | world | feature | trait | macro |
//! |---|---|---|---|
//! | agent | `agent` | [`agent::Agent`] | [`export_agent!`] |
//! | validator | `validator` | [`validator::Validator`] | [`export_validator!`] |
//! | router | `router` | [`router::Router`] | [`export_router!`] |
//! | recovery | `recovery` | [`recovery::Recovery`] | [`export_recovery!`] |
//!
//! Enable exactly one world feature per plugin crate: the type information of
//! every enabled world is linked into the component, and a component that
//! claims several worlds fits none of them.
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! agentrouter-sdk = { path = "../../sdk", features = ["validator"] }
//! ```
//!
//! Each world module documents a complete plugin. Types are generated per
//! world (`Message`, `Usage`, ...), so import them from your world's module.
#![deny(missing_docs)]

// Lets the generated bindings and the public export macros name this crate by
// one path, whether they expand inside it or inside a plugin crate.
extern crate self as agentrouter_sdk;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

#[cfg(any(
    feature = "agent",
    feature = "validator",
    feature = "router",
    feature = "recovery"
))]
#[macro_use]
mod helpers;

#[cfg(feature = "agent")]
pub mod agent;
#[cfg(feature = "recovery")]
pub mod recovery;
#[cfg(feature = "router")]
pub mod router;
#[cfg(feature = "validator")]
pub mod validator;

// The export macros are generated inside each world's `bindings` module;
// re-export them at the crate root, where the documentation names them.
#[cfg(feature = "agent")]
pub use agent::bindings::export_agent;
#[cfg(feature = "recovery")]
pub use recovery::bindings::export_recovery;
#[cfg(feature = "router")]
pub use router::bindings::export_router;
#[cfg(feature = "validator")]
pub use validator::bindings::export_validator;
