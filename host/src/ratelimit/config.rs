//! `[rate_limits]`: how the limits are configured. The schema's section
//! lives with the limiter so it needs nothing from `config`, which
//! re-exports it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A request and token limit (`[rate_limits]` defaults, or one model's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitConfig {
    /// Sustained requests per second.
    pub requests_per_s: Option<f64>,
    /// Requests allowed at once above the sustained rate.
    pub burst: Option<u32>,
    /// Tokens (prompt + completion) per minute.
    pub tokens_per_min: Option<u64>,
}

/// `[rate_limits]`: defaults per client, and limits per model.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// Sustained requests per second of a client without its own limit.
    pub requests_per_s: Option<f64>,
    /// Burst of a client without its own limit.
    pub burst: Option<u32>,
    /// Tokens per minute of a client without its own limit.
    pub tokens_per_min: Option<u64>,
    /// Limits per model, shared by every client.
    pub models: BTreeMap<String, LimitConfig>,
}
