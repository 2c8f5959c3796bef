//! Telemetry: Prometheus metrics today; traces and log setup live here too
//! as they grow.

pub mod metrics;

pub use metrics::Metrics;
