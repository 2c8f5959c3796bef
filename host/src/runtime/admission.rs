//! Admission of plugin instances: who may take a slot of the pool, and who
//! holds them when there are none left.
//!
//! The pool (`runtime.pool_instances`) bounds how many plugin instances
//! exist at once; wasmtime's pooling allocator refuses the one past it with
//! an error that names whichever plugin came last — usually a healthy one.
//! The host admits every instance first, so that never happens:
//!
//! - each request draws from its **share** (`budgets.request.
//!   max_plugin_instances`, a [`Hold`] on its budget): an agent's fan-out,
//!   delegations, and the routers and recovery plugins its completions
//!   call, all count, so one request can never take the whole pool;
//! - then from the **pool**. A call whose request holds no instance yet
//!   (a validator at the edge of a new request, a background smoke call)
//!   waits for a slot, within its own time bound: it holds nothing anyone
//!   waits for, so waiting cannot deadlock. A nested call (its request
//!   already holds one) is refused at once instead — a parent waiting on a
//!   child that waits on the parent's slot would never finish.
//!
//! A refusal names who holds the pool: the requests holding the most
//! instances and the plugins they run, not the plugin that found it full.

use super::error::PluginError;
use crate::budget::{Hold, Resource};
use crate::domain::CallContext;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::AdmissionLabels;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How holders are named when a call needs none of a request's context.
const BACKGROUND: &str = "(background: warm-up, smoke or shadow calls)";
/// Requests named in a pool-full message.
const NAMED_HOLDERS: usize = 3;

/// The instances one request holds, by plugin.
#[derive(Default)]
struct Holding {
    count: u32,
    plugins: HashMap<Arc<str>, u32>,
}

/// The process-wide pool of plugin instances.
pub(crate) struct Pool {
    permits: Arc<Semaphore>,
    capacity: u32,
    holders: Mutex<HashMap<Arc<str>, Holding>>,
    metrics: OnceLock<Arc<Metrics>>,
}

/// One admitted instance: a slot of the pool and of its request's share,
/// both given back on drop (after the call's store is gone).
pub(crate) struct Admitted {
    permit: Option<OwnedSemaphorePermit>,
    _share: Option<Hold>,
    pool: Arc<Pool>,
    request: Arc<str>,
    plugin: Arc<str>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.pool.release(&self.request, &self.plugin);
    }
}

impl Pool {
    /// A pool of `capacity` instances.
    pub(crate) fn new(capacity: u32) -> Arc<Pool> {
        let capacity = capacity.max(1);
        Arc::new(Pool {
            permits: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            holders: Mutex::new(HashMap::new()),
            metrics: OnceLock::new(),
        })
    }

    /// Counts admissions and refusals in `metrics` from now on.
    pub(crate) fn set_metrics(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Instances in use now.
    pub(crate) fn in_use(&self) -> u32 {
        self.capacity - self.permits.available_permits() as u32
    }

    fn holders(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Holding>> {
        // The map is updated in single statements; a panic elsewhere cannot
        // leave it half-written.
        self.holders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits one instance of `plugin` (`name@version`) for the request of
    /// `ctx` (none: a background call), waiting at most `wait` for a slot
    /// when the request holds none yet.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        plugin: &Arc<str>,
        ctx: Option<&CallContext>,
        wait: Duration,
    ) -> Result<Admitted, PluginError> {
        let share = match ctx {
            Some(ctx) => Some(ctx.budgets.hold(Resource::PluginInstances).map_err(|e| {
                self.refused("request");
                PluginError::ShareExhausted {
                    plugin: plugin.to_string(),
                    exceeded: e,
                }
            })?),
            None => None,
        };
        // This call's hold is the request's only one: it holds nothing else.
        let first = ctx.is_none_or(|c| c.budgets.request.used(Resource::PluginInstances) <= 1);
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) if first => tokio::time::timeout(wait, self.permits.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok),
            Err(_) => None,
        };
        let Some(permit) = permit else {
            self.refused("pool");
            return Err(PluginError::PoolFull {
                plugin: plugin.to_string(),
                capacity: self.capacity,
                holders: self.describe_holders(),
            });
        };
        let request: Arc<str> = Arc::from(ctx.map_or(BACKGROUND, |c| c.request_id.as_str()));
        {
            let mut holders = self.holders();
            let holding = holders.entry(request.clone()).or_default();
            holding.count += 1;
            *holding.plugins.entry(plugin.clone()).or_default() += 1;
        }
        self.observe();
        Ok(Admitted {
            permit: Some(permit),
            _share: share,
            pool: self.clone(),
            request,
            plugin: plugin.clone(),
        })
    }

    fn release(&self, request: &Arc<str>, plugin: &Arc<str>) {
        let mut holders = self.holders();
        if let Some(holding) = holders.get_mut(request) {
            holding.count = holding.count.saturating_sub(1);
            if let Some(n) = holding.plugins.get_mut(plugin) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    holding.plugins.remove(plugin);
                }
            }
            if holding.count == 0 {
                holders.remove(request);
            }
        }
        drop(holders);
        self.observe();
    }

    /// Who holds the pool: the requests holding the most, each with the
    /// plugins it runs.
    fn describe_holders(&self) -> String {
        let holders = self.holders();
        let mut requests: Vec<(&Arc<str>, &Holding)> = holders.iter().collect();
        requests.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        let mut parts: Vec<String> = requests
            .iter()
            .take(NAMED_HOLDERS)
            .map(|(request, holding)| {
                let mut plugins: Vec<(&Arc<str>, &u32)> = holding.plugins.iter().collect();
                plugins.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                let plugins: Vec<String> =
                    plugins.iter().map(|(p, n)| format!("{p} ×{n}")).collect();
                format!(
                    "request {request} holds {} ({})",
                    holding.count,
                    plugins.join(", ")
                )
            })
            .collect();
        if requests.len() > NAMED_HOLDERS {
            parts.push(format!("{} more requests", requests.len() - NAMED_HOLDERS));
        }
        if parts.is_empty() {
            // Released between the refusal and this description.
            return "its holders have just released it".into();
        }
        parts.join("; ")
    }

    fn refused(&self, scope: &str) {
        if let Some(metrics) = self.metrics.get() {
            metrics
                .plugin_admissions_refused
                .get_or_create(&AdmissionLabels {
                    scope: scope.to_string(),
                })
                .inc();
        }
    }

    fn observe(&self) {
        if let Some(metrics) = self.metrics.get() {
            metrics
                .plugin_instances_in_use
                .set(i64::from(self.in_use()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{Budgets, Limits};

    fn ctx(id: &str, share: u64) -> CallContext {
        let mut ctx = CallContext::new("c", id, Duration::from_secs(5));
        ctx.budgets =
            Budgets::for_request(Limits::UNLIMITED.with(Resource::PluginInstances, Some(share)));
        ctx
    }

    #[tokio::test]
    async fn a_request_cannot_take_more_than_its_share() {
        let pool = Pool::new(8);
        let p: Arc<str> = Arc::from("fanout@1");
        let hog = ctx("r1", 2);
        let _a = pool.admit(&p, Some(&hog), Duration::ZERO).await.unwrap();
        let _b = pool.admit(&p, Some(&hog), Duration::ZERO).await.unwrap();
        let err = pool
            .admit(&p, Some(&hog), Duration::ZERO)
            .await
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("budgets.request.max_plugin_instances"),
            "{err}"
        );
        assert_eq!(pool.in_use(), 2);
    }

    #[tokio::test]
    async fn a_full_pool_names_the_request_that_holds_it() {
        let pool = Pool::new(2);
        let hog_plugin: Arc<str> = Arc::from("fanout@1");
        let hog = ctx("task-hog", 4);
        let a = pool
            .admit(&hog_plugin, Some(&hog), Duration::ZERO)
            .await
            .unwrap();
        let _b = pool
            .admit(&hog_plugin, Some(&hog), Duration::ZERO)
            .await
            .unwrap();
        let guard: Arc<str> = Arc::from("guard@1");
        let err = pool
            .admit(&guard, Some(&ctx("other", 4)), Duration::from_millis(10))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("request task-hog holds 2 (fanout@1 ×2)"),
            "{err}"
        );
        // A waiting first call gets the slot once the holder lets go.
        let waiting = {
            let pool = pool.clone();
            let guard = guard.clone();
            tokio::spawn(async move {
                pool.admit(&guard, Some(&ctx("other", 4)), Duration::from_secs(5))
                    .await
                    .is_ok()
            })
        };
        tokio::task::yield_now().await;
        drop(a);
        assert!(waiting.await.unwrap());
    }
}
