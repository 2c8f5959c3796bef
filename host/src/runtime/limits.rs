//! Per-plugin resource limits and the store limiter that enforces them.
//!
//! Memory is enforced by a [`ResourceLimiter`] that traps on the growth that
//! would exceed the limit (rather than letting `memory.grow` return -1), so the
//! error says exactly what was asked for and what was allowed. Time is
//! enforced twice: epochs interrupt guest code that spins, and a tokio timeout
//! bounds calls parked in async host imports (an agent awaiting the LLM).

use super::error::{LimitKind, PluginError};
use serde::Deserialize;
use wasmtime::ResourceLimiter;

/// Limits applied to every call of one plugin.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginLimits {
    /// Largest linear memory, in MiB.
    pub memory_mb: u32,
    /// Wall-clock bound of one call, in milliseconds (agents include the time
    /// they spend waiting on the LLM and on other agents).
    pub timeout_ms: u64,
    /// Optional deterministic fuel budget per call.
    pub fuel: Option<u64>,
    /// Bytes the guest may pass to the host in one host call.
    pub hostcall_fuel: usize,
    /// Largest table, in elements.
    pub table_elements: u32,
    /// Most keys in the plugin's kv namespace.
    pub kv_max_keys: u64,
    /// Largest kv value, bytes.
    pub kv_max_value_bytes: usize,
    /// Most bytes of keys and values in the plugin's kv namespace.
    pub kv_max_total_bytes: u64,
}

/// Upper bound of `memory_mb`: beyond 4 GiB a 32-bit memory cannot grow anyway.
pub const MAX_MEMORY_MB: u32 = 4096;
/// Upper bound of `table_elements` (the pool reserves tables this large).
pub const MAX_TABLE_ELEMENTS: u32 = 1 << 20;
/// Upper bound of `timeout_ms` (10 minutes).
pub const MAX_TIMEOUT_MS: u64 = 600_000;

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            memory_mb: 64,
            timeout_ms: 1_000,
            fuel: None,
            hostcall_fuel: 4 << 20,
            table_elements: 100_000,
            kv_max_keys: DEFAULT_KV_MAX_KEYS,
            kv_max_value_bytes: crate::store::MAX_KV_VALUE_BYTES,
            kv_max_total_bytes: DEFAULT_KV_MAX_TOTAL_BYTES,
        }
    }
}

/// Default `limits.kv_max_keys`.
pub const DEFAULT_KV_MAX_KEYS: u64 = 10_000;
/// Default `limits.kv_max_total_bytes` (16 MiB).
pub const DEFAULT_KV_MAX_TOTAL_BYTES: u64 = 16 << 20;

impl PluginLimits {
    /// Defaults for agents, which wait on the LLM and on other agents.
    pub fn agent_defaults() -> Self {
        Self {
            timeout_ms: 120_000,
            ..Self::default()
        }
    }

    /// Refuses nonsense with an error naming the key.
    pub fn validate(&self, plugin: &str) -> Result<(), PluginError> {
        let invalid = |key, value: String, reason: &str| PluginError::InvalidConfig {
            plugin: plugin.to_string(),
            key,
            value,
            reason: reason.to_string(),
        };
        if self.memory_mb == 0 || self.memory_mb > MAX_MEMORY_MB {
            return Err(invalid(
                "limits.memory_mb",
                self.memory_mb.to_string(),
                "must be between 1 and 4096",
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(invalid(
                "limits.timeout_ms",
                self.timeout_ms.to_string(),
                "must be between 1 and 600000",
            ));
        }
        if self.fuel == Some(0) {
            return Err(invalid(
                "limits.fuel",
                "0".into(),
                "must be positive (omit it for no fuel limit)",
            ));
        }
        if self.hostcall_fuel < 1024 {
            return Err(invalid(
                "limits.hostcall_fuel",
                self.hostcall_fuel.to_string(),
                "must be at least 1024 bytes",
            ));
        }
        if self.kv_max_keys == 0 {
            return Err(invalid(
                "limits.kv_max_keys",
                "0".into(),
                "must be positive",
            ));
        }
        if self.kv_max_value_bytes == 0
            || self.kv_max_value_bytes > crate::store::MAX_KV_VALUE_BYTES
        {
            return Err(invalid(
                "limits.kv_max_value_bytes",
                self.kv_max_value_bytes.to_string(),
                "must be between 1 and 1048576",
            ));
        }
        if self.kv_max_total_bytes == 0 {
            return Err(invalid(
                "limits.kv_max_total_bytes",
                "0".into(),
                "must be positive",
            ));
        }
        if self.table_elements == 0 || self.table_elements > MAX_TABLE_ELEMENTS {
            return Err(invalid(
                "limits.table_elements",
                self.table_elements.to_string(),
                "must be between 1 and 1048576",
            ));
        }
        Ok(())
    }

    /// The plugin's kv quota.
    pub fn kv_quota(&self) -> crate::store::KvQuota {
        crate::store::KvQuota {
            max_keys: self.kv_max_keys,
            max_value_bytes: self.kv_max_value_bytes,
            max_total_bytes: self.kv_max_total_bytes,
        }
    }

    /// The memory limit in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory_mb as usize * 1024 * 1024
    }
}

/// Tracks and bounds one store's memories and tables.
pub(crate) struct Limiter {
    max_memory: usize,
    max_table: usize,
    /// Largest memory size seen, for telemetry.
    pub peak_memory: usize,
    /// The refused growth, when a limit was hit.
    pub exceeded: Option<(LimitKind, u64, u64)>,
}

impl Limiter {
    pub fn new(limits: &PluginLimits) -> Self {
        Self {
            max_memory: limits.memory_bytes(),
            max_table: limits.table_elements as usize,
            peak_memory: 0,
            exceeded: None,
        }
    }
}

/// Error raised inside the guest when a limit is hit; recognised after the call.
#[derive(Debug)]
pub(crate) struct LimitTrap;

impl std::fmt::Display for LimitTrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("plugin resource limit exceeded")
    }
}

impl std::error::Error for LimitTrap {}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.exceeded = Some((LimitKind::Memory, desired as u64, self.max_memory as u64));
            return Err(wasmtime::Error::new(LimitTrap));
        }
        self.peak_memory = self.peak_memory.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_table {
            self.exceeded = Some((LimitKind::Table, desired as u64, self.max_table as u64));
            return Err(wasmtime::Error::new(LimitTrap));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        // Components instantiate a handful of core instances (the guest plus
        // adapter shims; a componentize-py Python component 14, for its
        // dynamically linked libraries); beyond 32 is not a plugin we expect.
        32
    }

    fn tables(&self) -> usize {
        32
    }

    fn memories(&self) -> usize {
        8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_nonsense_limits_naming_the_key() {
        let bad = PluginLimits {
            memory_mb: 0,
            ..Default::default()
        };
        let err = bad.validate("guard").unwrap_err().to_string();
        assert!(
            err.contains("guard") && err.contains("limits.memory_mb"),
            "{err}"
        );
        let bad = PluginLimits {
            timeout_ms: 0,
            ..Default::default()
        };
        assert!(
            bad.validate("g")
                .unwrap_err()
                .to_string()
                .contains("limits.timeout_ms")
        );
        let bad = PluginLimits {
            fuel: Some(0),
            ..Default::default()
        };
        assert!(
            bad.validate("g")
                .unwrap_err()
                .to_string()
                .contains("limits.fuel")
        );
        assert!(PluginLimits::default().validate("g").is_ok());
    }

    #[test]
    fn limiter_records_the_refused_growth() {
        let mut limiter = Limiter::new(&PluginLimits {
            memory_mb: 1,
            ..Default::default()
        });
        assert!(limiter.memory_growing(0, 65536, None).unwrap());
        assert!(limiter.memory_growing(65536, 2 << 20, None).is_err());
        assert_eq!(
            limiter.exceeded,
            Some((LimitKind::Memory, 2 << 20, 1 << 20))
        );
        assert_eq!(limiter.peak_memory, 65536);
    }
}

/// Error raised by the epoch callback when a call's wall-clock time is up.
#[derive(Debug)]
pub(crate) struct TimeoutTrap;

impl std::fmt::Display for TimeoutTrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("plugin wall-clock limit exceeded")
    }
}

impl std::error::Error for TimeoutTrap {}
