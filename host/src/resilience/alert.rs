//! Alerts: when a recovery strategy gives up and says a human should know,
//! or a key's spend crosses one of `auth.budget_alert_thresholds`.
//!
//! One alert is three things, so that whichever an operator watches sees
//! it: a structured log event (`alert = true`), the `agentrouter_alerts`
//! counter, and — when `resilience.alert_webhook` is set — a JSON POST to
//! that URL. Delivery is fire-and-forget with a short timeout: a slow or
//! dead alert receiver must never hold up, or fail, the client's request.

use crate::telemetry::Metrics;
use crate::telemetry::metrics::AlertLabels;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// How long a webhook delivery may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// What an alert says; also the webhook's JSON body.
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    /// Always `agentrouter.alert`, so receivers can route on it.
    pub event: &'static str,
    /// `request_failed` (a recovery strategy gave up) or `budget` (a key's
    /// spend crossed a threshold).
    pub kind: &'static str,
    /// Who raised it: the recovery plugin (`name@version`), or `host`.
    pub source: String,
    /// The requested model.
    pub model: String,
    /// The upstream whose failure ended the request.
    pub upstream: String,
    /// The failure, as text.
    pub failure: String,
    /// The request's id.
    pub request_id: String,
    /// Seconds since the Unix epoch.
    pub timestamp: u64,
    /// The API key concerned (budget alerts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Raises alerts; cheap to clone.
#[derive(Clone, Debug)]
pub struct Alerter {
    webhook: Option<String>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
}

impl Alerter {
    /// An alerter posting to `webhook` (when set) with `client`.
    pub fn new(webhook: Option<String>, client: reqwest::Client, metrics: Arc<Metrics>) -> Self {
        Self {
            webhook,
            client,
            metrics,
        }
    }

    /// Logs, counts and (in the background) posts `alert`.
    pub fn raise(&self, alert: Alert) {
        if alert.kind == "budget" {
            tracing::warn!(
                alert = true,
                kind = alert.kind,
                key = alert.key.as_deref().unwrap_or("-"),
                model = %alert.model,
                failure = %alert.failure,
                request_id = %alert.request_id,
                "alert: a key's spend crossed a budget threshold"
            );
        } else {
            tracing::error!(
                alert = true,
                kind = alert.kind,
                source = %alert.source,
                model = %alert.model,
                upstream = %alert.upstream,
                failure = %alert.failure,
                request_id = %alert.request_id,
                "alert: a request failed and the recovery strategy asked for an operator"
            );
        }
        // The label is the slot name without the version, to keep the
        // series stable across plugin upgrades.
        let source = alert
            .source
            .split('@')
            .next()
            .unwrap_or(&alert.source)
            .to_string();
        self.metrics
            .alerts
            .get_or_create(&AlertLabels {
                source,
                upstream: alert.upstream.clone(),
            })
            .inc();
        let Some(url) = self.webhook.clone() else {
            return;
        };
        let client = self.client.clone();
        tokio::spawn(async move {
            let sent = client
                .post(&url)
                .timeout(WEBHOOK_TIMEOUT)
                .json(&alert)
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status().is_success() => {}
                Ok(resp) => {
                    tracing::warn!(status = resp.status().as_u16(), request_id = %alert.request_id, "alert webhook refused the alert")
                }
                Err(e) => {
                    tracing::warn!(error = %e, request_id = %alert.request_id, "alert webhook unreachable")
                }
            }
        });
    }
}
