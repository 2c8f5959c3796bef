//! Subcommands of the `agentrouter` binary kept out of `main.rs` (this
//! module belongs to the binary, not to the library).

pub mod store;
