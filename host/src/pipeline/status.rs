//! What the pipeline reports about itself: readiness checks for its plugins
//! and upstreams, and the gauges of state it owns, read at scrape time.

use super::Pipeline;
use crate::domain::CircuitState;
use crate::telemetry::health::Check;
use crate::telemetry::metrics::{PluginLabels, UpstreamName};
use std::collections::BTreeMap;
use std::time::Instant;

impl Pipeline {
    /// Readiness of the plugins: every slot instantiated at least once.
    pub fn plugin_check(&self) -> Check {
        let mut cold: Vec<String> = self
            .slots
            .values()
            .filter(|s| !s.plugin.live().is_warm())
            .map(|s| s.plugin.identity().to_string())
            .collect();
        cold.sort();
        let total = self.slots.len();
        let detail = if cold.is_empty() {
            format!("{total} plugins loaded and warm")
        } else {
            format!(
                "{} of {total} plugins could not be instantiated: {}",
                cold.len(),
                cold.join(", ")
            )
        };
        Check::new("plugins", cold.is_empty(), detail)
    }

    /// Readiness of the upstreams: every model needs one upstream whose
    /// breaker lets traffic through — its own, or one of its fallback
    /// chain's. One provider down is the router's business; a model nobody
    /// can serve is not a replica that should receive traffic.
    pub fn upstream_check(&self) -> Check {
        let now = Instant::now();
        // Per model: (upstreams, usable upstreams).
        let mut models: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for u in &self.upstreams {
            let entry = models.entry(u.info().model.as_str()).or_default();
            entry.0 += 1;
            if u.health().circuit(now) != CircuitState::Open {
                entry.1 += 1;
            }
        }
        let usable = |model: &str| models.get(model).is_some_and(|(_, usable)| *usable > 0);
        let down: Vec<&str> = models
            .keys()
            .copied()
            .filter(|model| {
                !usable(model)
                    && !self
                        .settings
                        .fallbacks
                        .get(*model)
                        .is_some_and(|chain| chain.iter().any(|m| usable(m)))
            })
            .collect();
        let detail = if down.is_empty() {
            let upstreams: usize = models.values().map(|(n, _)| n).sum();
            format!(
                "{} models, each with an upstream whose circuit is not open ({upstreams} upstreams)",
                models.len()
            )
        } else {
            let open: Vec<&str> = self
                .upstreams
                .iter()
                .filter(|u| {
                    down.contains(&u.info().model.as_str())
                        && u.health().circuit(now) == CircuitState::Open
                })
                .map(|u| u.name())
                .collect();
            format!(
                "no upstream can serve {}: circuit open for {}",
                down.join(", "),
                open.join(", ")
            )
        };
        Check::new("upstreams", !models.is_empty() && down.is_empty(), detail)
    }

    /// Sets the gauges of state this pipeline owns (breaker states, plugin
    /// memory peaks), read at scrape time.
    pub fn record_gauges(&self) {
        let metrics = self.metrics();
        let now = Instant::now();
        for u in &self.upstreams {
            let value = match u.health().circuit(now) {
                CircuitState::Closed => 0,
                CircuitState::HalfOpen => 1,
                CircuitState::Open => 2,
            };
            metrics
                .breaker_state
                .get_or_create(&UpstreamName {
                    upstream: u.name().to_string(),
                })
                .set(value);
        }
        for slot in self.slots.values() {
            let identity = slot.plugin.identity();
            let peak = slot.plugin.live().stats().peak_memory_bytes;
            metrics
                .plugin_peak_memory
                .get_or_create(&PluginLabels {
                    plugin: identity.name.clone(),
                    version: identity.version.clone(),
                })
                .set(i64::try_from(peak).unwrap_or(i64::MAX));
        }
    }
}
