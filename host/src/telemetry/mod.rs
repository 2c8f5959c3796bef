//! Telemetry: Prometheus metrics, readiness checks, the per-request record
//! the server logs and measures, and log/trace setup (JSON logs,
//! OpenTelemetry export, W3C trace context). The operator's reference is
//! `docs/observability.md`.

pub mod config;
pub mod health;
pub mod log_buffer;
pub mod metrics;
pub mod request;
pub mod span_fields;
pub mod traces;

pub use metrics::Metrics;
pub use traces::{LogFormat, TelemetryGuard};
