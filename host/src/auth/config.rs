//! `[auth]` and `[[auth.keys]]`: how keys are configured. The schema's
//! section lives with `auth` so it needs nothing from `config`, which
//! re-exports it.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};

/// Default `auth.rotation_grace_s`.
pub const DEFAULT_ROTATION_GRACE_S: u64 = 3600;
/// Default `auth.budget_reservation_usd`: the least a request holds of its
/// key's budget while it runs (see `auth::Budgets`).
pub const DEFAULT_BUDGET_RESERVATION_USD: f64 = 0.001;
/// Default `auth.budget_alert_thresholds`: alert at 80 % and at 100 %.
pub const DEFAULT_BUDGET_ALERT_THRESHOLDS: &[f64] = &[0.8, 1.0];

/// `[auth]`: API keys.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Whether `/v1/*` requires an API key.
    pub enabled: bool,
    /// Also accept the key in an `x-api-key` header (besides `Authorization: Bearer`).
    pub accept_x_api_key: bool,
    /// Default grace period of `agentrouter keys rotate`, seconds.
    pub rotation_grace_s: u64,
    /// The least a request reserves of its key's daily budget while it
    /// runs, USD; it reserves the key's mean cost per request when higher.
    pub budget_reservation_usd: f64,
    /// Fractions of a key's daily budget whose crossing raises an alert
    /// (log event, `agentrouter_alerts_total`, `resilience.alert_webhook`).
    pub budget_alert_thresholds: Vec<f64>,
    /// Keys declared in the file.
    pub keys: Vec<KeyConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            accept_x_api_key: true,
            rotation_grace_s: DEFAULT_ROTATION_GRACE_S,
            budget_reservation_usd: DEFAULT_BUDGET_RESERVATION_USD,
            budget_alert_thresholds: DEFAULT_BUDGET_ALERT_THRESHOLDS.to_vec(),
            keys: Vec::new(),
        }
    }
}

/// `[[auth.keys]]`: one API key declared in the config.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Key name: the client identity in logs, metrics and limits.
    pub name: String,
    /// The secret clients present (resolved; use `${env:...}`).
    pub secret: Secret,
    /// Models the key may use; absent means every model.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Agents the key may use; absent means every agent.
    #[serde(default)]
    pub agents: Option<Vec<String>>,
    /// Sustained requests per second.
    #[serde(default)]
    pub requests_per_s: Option<f64>,
    /// Requests allowed at once above the sustained rate.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Tokens (prompt + completion) per minute.
    #[serde(default)]
    pub tokens_per_min: Option<u64>,
    /// Spend allowed per UTC day, USD.
    #[serde(default)]
    pub daily_budget_usd: Option<f64>,
}

/// Whether `name` may name an API key: 1-64 letters, digits, `-`, `_` or
/// `.` (it appears in logs, metric labels and store keys).
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
