//! Accounting: what a request really used, charged to its caller once it
//! is known — tokens to the rate limits, cost to the daily budget — and the
//! budget alerts that charge may raise.
//!
//! Admission reserves part of the key's budget ([`Held`]); the charge
//! settles that reservation with the ledger's real cost. A request that
//! fails, or is answered from the cache, settles with nothing, and one
//! dropped on the way (an error, a client gone) releases its reservation
//! when its [`Held`] drops, so no path keeps budget reserved.

use crate::auth::{Auth, Identity, Reservation, SpendUpdate};
use crate::domain::{CallContext, Target};
use crate::ratelimit::RateLimiter;
use crate::resilience::{Alert, Alerter};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::KeyLabels;
use std::sync::Arc;

/// A request's hold on its key's budget, until it settles.
pub(super) struct Held {
    auth: Arc<Auth>,
    reservation: Option<Reservation>,
}

impl Held {
    pub(super) fn new(auth: Arc<Auth>, reservation: Option<Reservation>) -> Self {
        Self { auth, reservation }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(reservation) = self.reservation.take() else {
            return;
        };
        // Not settled: the request ended without an answer to charge.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let auth = self.auth.clone();
            handle.spawn(async move {
                auth.settle(reservation, 0.0).await;
            });
        }
    }
}

/// Where budget alerts go, and at which fractions of a budget.
#[derive(Clone)]
pub(super) struct BudgetAlerts {
    pub thresholds: Arc<[f64]>,
}

/// Everything a charge needs; a live stream carries it to its end.
pub(super) struct Charge {
    pub rate_limits: Arc<RateLimiter>,
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
    pub alerts: BudgetAlerts,
    pub alerter: Alerter,
    pub caller: Identity,
    pub target: Target,
    pub ctx: CallContext,
    pub held: Held,
}

impl Charge {
    /// Charges the ledger of the request to its caller: tokens to the rate
    /// limits, cost to the budget (settling the reservation). Cached
    /// answers make no steps, so they cost nothing.
    pub(super) async fn settle(&mut self) {
        let usage = self.ctx.ledger.usage();
        self.rate_limits
            .charge(
                &self.caller.name,
                self.caller.limits(),
                &self.target.to_string(),
                u64::from(usage.total()),
            )
            .await;
        let Some(reservation) = self.held.reservation.take() else {
            return;
        };
        let update = self
            .auth
            .settle(reservation, self.ctx.ledger.cost_usd())
            .await;
        self.observe(&update);
    }

    /// Updates the budget gauges, and alerts on each threshold this request
    /// crossed. Shared spend is settled atomically in Redis, so exactly one
    /// request (on one replica) sees each crossing.
    fn observe(&self, update: &SpendUpdate) {
        let labels = KeyLabels {
            key: update.key.clone(),
        };
        self.metrics
            .budget_spent_usd
            .get_or_create(&labels)
            .set(update.after_usd);
        self.metrics
            .budget_limit_usd
            .get_or_create(&labels)
            .set(update.budget_usd);
        for threshold in crossed(&self.alerts.thresholds, update) {
            self.alerter.raise(Alert {
                event: "agentrouter.alert",
                kind: "budget",
                source: "budget".into(),
                model: self.target.to_string(),
                upstream: "-".into(),
                failure: format!(
                    "key `{}` has spent {:.0}% of its daily budget: USD {:.6} of {:.6}",
                    update.key,
                    threshold * 100.0,
                    update.after_usd,
                    update.budget_usd
                ),
                request_id: self.ctx.request_id.clone(),
                timestamp: crate::clock::unix_s(),
                key: Some(update.key.clone()),
            });
        }
    }
}

/// The thresholds (fractions of the budget) `update` went past.
pub(super) fn crossed(thresholds: &[f64], update: &SpendUpdate) -> Vec<f64> {
    thresholds
        .iter()
        .copied()
        .filter(|t| {
            let line = t * update.budget_usd;
            update.before_usd < line && update.after_usd >= line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threshold_alerts_once_when_spend_crosses_it() {
        let update = |before, after| SpendUpdate {
            key: "k".into(),
            before_usd: before,
            after_usd: after,
            budget_usd: 10.0,
        };
        let t = [0.8, 1.0];
        assert!(crossed(&t, &update(0.0, 7.9)).is_empty());
        assert_eq!(crossed(&t, &update(7.9, 8.0)), vec![0.8]);
        assert!(crossed(&t, &update(8.0, 9.0)).is_empty(), "already past");
        assert_eq!(crossed(&t, &update(7.0, 12.0)), vec![0.8, 1.0]);
    }
}
