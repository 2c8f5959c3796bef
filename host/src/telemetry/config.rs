//! `[telemetry]`: how trace export is configured. The schema's section
//! lives with telemetry so it needs nothing from `config`, which
//! re-exports it.

use serde::{Deserialize, Serialize};

/// Default `telemetry.sample_rate`: every trace, once an endpoint is set.
pub const DEFAULT_SAMPLE_RATE: f64 = 1.0;
/// Default `telemetry.service_name`.
pub const DEFAULT_SERVICE_NAME: &str = "agentrouter";

/// `[telemetry]`: trace export. Metrics (`/metrics`) and logs need no
/// configuration; traces leave the process only when `otlp_endpoint` is set.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OTLP/HTTP collector, e.g. `http://otel-collector:4318`; spans are
    /// posted to `{otlp_endpoint}/v1/traces`. `None`: no trace export.
    pub otlp_endpoint: Option<String>,
    /// Fraction of new traces kept, in `[0, 1]`; a request carrying a W3C
    /// `traceparent` follows its caller's sampling decision.
    pub sample_rate: f64,
    /// `service.name` of exported spans.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            sample_rate: DEFAULT_SAMPLE_RATE,
            service_name: DEFAULT_SERVICE_NAME.to_string(),
        }
    }
}
