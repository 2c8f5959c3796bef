//! Typed errors of the plugin runtime.
//!
//! Every error names the plugin (and, once loaded, its version) and where it
//! came from, so an operator can act on the message alone.

use std::fmt;
use std::path::PathBuf;

/// A resource limit a plugin can exceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// Linear memory, in bytes.
    Memory,
    /// Wall-clock time of one call, in milliseconds.
    WallClock,
    /// Deterministic fuel (roughly, executed instructions).
    Fuel,
    /// Table elements.
    Table,
}

impl LimitKind {
    /// Short stable name, used in metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Memory => "memory",
            LimitKind::WallClock => "timeout",
            LimitKind::Fuel => "fuel",
            LimitKind::Table => "table",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            LimitKind::Memory => "bytes",
            LimitKind::WallClock => "ms",
            LimitKind::Fuel => "fuel units",
            LimitKind::Table => "elements",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::Memory => "memory",
            LimitKind::WallClock => "wall-clock",
            LimitKind::Fuel => "fuel",
            LimitKind::Table => "table",
        })
    }
}

/// Everything that can go wrong loading or calling a plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The `.wasm` file could not be read.
    #[error("plugin `{plugin}`: cannot read {}: {cause}", path.display())]
    Read {
        /// Configured plugin name.
        plugin: String,
        /// Path that failed.
        path: PathBuf,
        /// Underlying error (in the message, so it is not a separate cause).
        cause: std::io::Error,
    },
    /// The bytes are not a WebAssembly component.
    #[error("plugin `{plugin}` ({origin}) is not a WebAssembly component: {reason}")]
    NotComponent {
        /// Configured plugin name.
        plugin: String,
        /// Where the bytes came from.
        origin: String,
        /// What is wrong.
        reason: super::inspect::HeaderError,
    },
    /// The component's digest differs from the pinned one.
    #[error(
        "plugin `{plugin}` ({origin}): digest mismatch: pinned sha256:{expected}, found sha256:{actual}"
    )]
    DigestMismatch {
        /// Configured plugin name.
        plugin: String,
        /// Where the bytes came from.
        origin: String,
        /// Pinned digest (hex).
        expected: String,
        /// Actual digest (hex).
        actual: String,
    },
    /// The component failed to compile.
    #[error("plugin `{plugin}` ({origin}) failed to compile: {detail}")]
    Compile {
        /// Configured plugin name.
        plugin: String,
        /// Where the bytes came from.
        origin: String,
        /// Compiler message.
        detail: String,
    },
    /// The component does not implement the world its slot requires.
    #[error("plugin `{plugin}` ({origin}) does not fit world `{world}`: {detail}")]
    WorldMismatch {
        /// Configured plugin name.
        plugin: String,
        /// Where the bytes came from.
        origin: String,
        /// The required world.
        world: super::World,
        /// The missing import or export.
        detail: String,
    },
    /// A configured limit or capability is nonsense.
    #[error("plugin `{plugin}`: invalid setting `{key}` = {value}: {reason}")]
    InvalidConfig {
        /// Configured plugin name.
        plugin: String,
        /// The offending key.
        key: &'static str,
        /// Its value.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A call exceeded a resource limit; the instance was discarded.
    #[error("plugin {plugin} exceeded its {limit} limit: used {used} {unit}, allowed {allowed} {unit}", unit = limit.unit())]
    LimitExceeded {
        /// `name@version`.
        plugin: String,
        /// Which limit.
        limit: LimitKind,
        /// What the call used (or tried to use).
        used: u64,
        /// What the plugin is allowed.
        allowed: u64,
    },
    /// The guest trapped (panic, unreachable, out-of-bounds access, ...).
    #[error("plugin {plugin} trapped: {message}")]
    Trap {
        /// `name@version`.
        plugin: String,
        /// Trap description with the guest backtrace when available.
        message: String,
    },
    /// The guest returned a value that breaks the contract.
    #[error("plugin {plugin} returned invalid output: {detail}")]
    InvalidOutput {
        /// `name@version`.
        plugin: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The request has its whole share of the instance pool in use; the
    /// call was not started.
    #[error("{exceeded}; {plugin} was not started")]
    ShareExhausted {
        /// `name@version` of the plugin that was not started.
        plugin: String,
        /// The request's share, and its use.
        exceeded: crate::budget::Exceeded,
    },
    /// Every instance of the pool is in use; the call was not started. The
    /// message names who holds the pool.
    #[error(
        "the plugin instance pool is full ({capacity} instances, runtime.pool_instances): {holders}; {plugin} was not started"
    )]
    PoolFull {
        /// `name@version` of the plugin that was not started.
        plugin: String,
        /// The pool's size.
        capacity: u32,
        /// Who holds it: the requests holding most, with their plugins.
        holders: String,
    },
    /// Instantiation failed (start function trapped, ...).
    #[error("plugin {plugin} could not be instantiated: {detail}")]
    Instantiate {
        /// `name@version`.
        plugin: String,
        /// Why.
        detail: String,
    },
}

impl PluginError {
    /// Whether the host refused to start the call (no instance could be
    /// admitted): the plugin did nothing wrong, and did not run.
    pub fn is_admission(&self) -> bool {
        matches!(
            self,
            PluginError::ShareExhausted { .. } | PluginError::PoolFull { .. }
        )
    }

    /// Short stable kind, for metrics labels and failure policies.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::Read { .. } => "read",
            PluginError::NotComponent { .. } => "not_component",
            PluginError::DigestMismatch { .. } => "digest_mismatch",
            PluginError::Compile { .. } => "compile",
            PluginError::WorldMismatch { .. } => "world_mismatch",
            PluginError::InvalidConfig { .. } => "invalid_config",
            PluginError::LimitExceeded { limit, .. } => limit.as_str(),
            PluginError::Trap { .. } => "trap",
            PluginError::InvalidOutput { .. } => "invalid_output",
            PluginError::Instantiate { .. } => "instantiate",
            PluginError::ShareExhausted { .. } => "share_exhausted",
            PluginError::PoolFull { .. } => "pool_full",
        }
    }
}
