//! Tools for plugin authors: the `agentrouter plugin` commands.
//!
//! - [`scaffold`]: `plugin new` writes a project for any world in Rust,
//!   Python or JavaScript that builds as generated;
//! - [`harness`]: `plugin call` runs one call of a component's export in
//!   the gateway's sandbox, without the gateway (agents get a stub `llm`
//!   and `agents` that answer deterministically);
//! - [`cli`]: the `plugin` subcommands (`inspect`, `new`, `call`).
//!
//! It sits on top with `app`: it uses the runtime and the domain types, and
//! nothing below it uses it.

pub mod cli;
pub mod harness;
pub mod scaffold;

pub use cli::PluginCommand;
