//! `agentrouter check`: everything short of serving traffic.
//!
//! Beyond [`Config::load`], every plugin is compiled and type-checked against
//! its world in a real runtime (with a throw-away store), so a component that
//! imports something the host does not provide is caught before deployment,
//! and so is a third-party component that imports `http` or `tools` in a
//! slot that grants it neither.
//! Compiled plugins land in the configured cache, warming it for the server.

use super::schema::SourceRef;
use super::{Config, ConfigError, UpstreamKind};
use crate::runtime::inspect::GRANTED_IMPORTS;
use crate::runtime::{Runtime, World};
use crate::store::Store;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// What a successful check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// Upstreams, by name.
    pub upstreams: Vec<UpstreamSummary>,
    /// Distinct models served, sorted.
    pub models: Vec<String>,
    /// Plugin slots, by name, as loaded.
    pub slots: Vec<SlotSummary>,
}

/// One upstream of a [`CheckReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamSummary {
    /// Its name.
    pub name: String,
    /// What serves it.
    pub kind: UpstreamKind,
    /// The model it serves.
    pub model: String,
}

/// One loaded plugin slot of a [`CheckReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotSummary {
    /// Slot name.
    pub name: String,
    /// Its world.
    pub world: World,
    /// Where the component came from (`builtin:<name>` or a path).
    pub origin: String,
    /// Version label.
    pub version: String,
    /// sha256 of the component, hex.
    pub digest: String,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "upstreams:")?;
        for u in &self.upstreams {
            writeln!(f, "  {} ({}) serves {}", u.name, u.kind, u.model)?;
        }
        writeln!(f, "models: {}", self.models.join(", "))?;
        writeln!(f, "plugins:")?;
        for s in &self.slots {
            writeln!(
                f,
                "  {} [{}] {} {} sha256:{}",
                s.name, s.world, s.origin, s.version, s.digest
            )?;
        }
        Ok(())
    }
}

/// A refusal when the component in `slot` imports `http` or `tools` but
/// the slot grants it none, naming the config key to add. First-party
/// builtins are exempt: they use those imports only when granted (the
/// worker lists no tools without a grant) and the operator did not pick
/// them for what they import.
fn ungranted(config: &Config, slot: &str, imports: &[String]) -> Option<ConfigError> {
    let p = config.reloadable.plugins.get(slot)?;
    if matches!(p.source, SourceRef::Builtin(_)) {
        return None;
    }
    let missing: Vec<String> = GRANTED_IMPORTS
        .into_iter()
        .filter(|(iface, _)| imports.iter().any(|i| i == iface))
        .filter(|(iface, _)| match *iface {
            "http" => p.capabilities.http.is_none(),
            _ => p.capabilities.tools.is_none(),
        })
        .map(|(iface, key)| format!("`{iface}` (add [plugins.{slot}.{key}])"))
        .collect();
    (!missing.is_empty()).then(|| {
        config.error(
            &format!("plugins.{slot}"),
            format!(
                "the component imports {} without a grant: grant it or use another component",
                missing.join(" and ")
            ),
        )
    })
}

/// Parses and validates the file at `path`, then loads every plugin in a
/// runtime built from its settings; returns every problem found.
pub async fn check(path: &Path) -> Result<CheckReport, Vec<ConfigError>> {
    let config = Config::load(path)?;
    let store = Store::temporary().map_err(|e| vec![config.error("store", e.to_string())])?;
    let runtime = Runtime::new(&config.runtime_settings(), Arc::new(store))
        .map_err(|e| vec![config.error("runtime", format!("{e:#}"))])?;
    let specs = config.plugin_specs().map_err(|e| vec![e])?;
    // Compiling is CPU-bound (seconds on a cold cache): keep it off the
    // async workers.
    let loaded = tokio::task::spawn_blocking(move || {
        specs
            .into_iter()
            .map(|spec| {
                let slot = spec.name.clone();
                (slot, runtime.load(spec))
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| vec![config.error("plugins", format!("plugin loading panicked: {e}"))])?;

    let mut errors = Vec::new();
    let mut slots = Vec::new();
    for (slot, result) in loaded {
        match result {
            Ok(plugin) => {
                if let Some(e) = ungranted(&config, &slot, plugin.capabilities()) {
                    errors.push(e);
                    continue;
                }
                let id = plugin.identity();
                slots.push(SlotSummary {
                    name: slot,
                    world: plugin.world(),
                    origin: plugin.origin().to_string(),
                    version: id.version.clone(),
                    digest: id.digest.clone(),
                });
            }
            Err(e) => errors.push(config.error(&format!("plugins.{slot}"), e.to_string())),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let upstreams: Vec<UpstreamSummary> = config
        .reloadable
        .upstreams
        .iter()
        .map(|(name, u)| UpstreamSummary {
            name: name.clone(),
            kind: u.kind,
            model: u.model.clone(),
        })
        .collect();
    let mut models: Vec<String> = upstreams.iter().map(|u| u.model.clone()).collect();
    models.sort();
    models.dedup();
    Ok(CheckReport {
        upstreams,
        models,
        slots,
    })
}
