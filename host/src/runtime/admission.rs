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
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How holders are named when a call needs none of a request's context.
const BACKGROUND: &str = "(background: warm-up, spare instances, smoke or shadow calls)";
/// Requests named in a pool-full message.
const NAMED_HOLDERS: usize = 3;

/// The instances one request holds, by plugin.
#[derive(Default)]
struct Holding {
    count: u32,
    plugins: HashMap<Arc<str>, u32>,
}

/// Holders of instances nobody is using yet — spare instances
/// (`instances.rs`) — which give one back when the pool runs out, so spares
/// never stand between a call and an instance.
pub(crate) trait Reclaim: Send + Sync {
    /// Drops one instance no call uses (a spent store not yet torn down, or
    /// a waiting spare), freeing its slot; false if there is none.
    fn reclaim_one(&self) -> bool;
}

/// The process-wide pool of plugin instances.
pub(crate) struct Pool {
    permits: Arc<Semaphore>,
    capacity: u32,
    holders: Mutex<HashMap<Arc<str>, Holding>>,
    reclaimers: Mutex<Vec<Weak<dyn Reclaim>>>,
    /// Slots held by spares no call has taken yet: held, not in use.
    waiting: AtomicU32,
    metrics: OnceLock<Arc<Metrics>>,
}

/// One admitted instance: a slot of the pool and of its request's share,
/// both given back on drop (after the call's store is gone).
pub(crate) struct Admitted {
    permit: Option<OwnedSemaphorePermit>,
    share: Option<Hold>,
    pool: Arc<Pool>,
    request: Arc<str>,
    plugin: Arc<str>,
    /// A spare's slot that no call has taken yet.
    waiting: bool,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if std::mem::take(&mut self.waiting) {
            self.pool.waiting.fetch_sub(1, Ordering::Relaxed);
        }
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
            reclaimers: Mutex::new(Vec::new()),
            waiting: AtomicU32::new(0),
            metrics: OnceLock::new(),
        })
    }

    /// Counts admissions and refusals in `metrics` from now on.
    pub(crate) fn set_metrics(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Instances in use now: serving a call (spares waiting for one are
    /// not in use).
    pub(crate) fn in_use(&self) -> u32 {
        self.held().saturating_sub(self.spares_waiting())
    }

    /// Spare instances waiting for a call.
    pub(crate) fn spares_waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Slots held, by calls or by spares.
    fn held(&self) -> u32 {
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
        let permit = match self.try_acquire() {
            Some(permit) => Some(permit),
            None if first => tokio::time::timeout(wait, self.permits.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
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
        self.hold(&request, plugin);
        self.observe();
        Ok(Admitted {
            permit: Some(permit),
            share,
            pool: self.clone(),
            request,
            plugin: plugin.clone(),
            waiting: false,
        })
    }

    /// A slot for a spare instance, if one is free now: never waits, and
    /// never reclaims another spare to make this one.
    pub(crate) fn admit_spare(self: &Arc<Self>, plugin: &Arc<str>) -> Option<Admitted> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        let request: Arc<str> = Arc::from(BACKGROUND);
        self.hold(&request, plugin);
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.observe();
        Some(Admitted {
            permit: Some(permit),
            share: None,
            pool: self.clone(),
            request,
            plugin: plugin.clone(),
            waiting: true,
        })
    }

    /// A free slot now, reclaiming waiting spares if there is none.
    fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        loop {
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                return Some(permit);
            }
            if !self.reclaim_one() {
                return None;
            }
        }
    }

    /// Registers a holder of waiting instances, which gives them back when
    /// the pool runs out.
    pub(crate) fn add_reclaimer(&self, reclaimer: Weak<dyn Reclaim>) {
        let mut reclaimers = self.reclaimers.lock().unwrap_or_else(|p| p.into_inner());
        reclaimers.retain(|r| r.strong_count() > 0);
        reclaimers.push(reclaimer);
    }

    /// Has some registered holder drop one waiting instance.
    fn reclaim_one(&self) -> bool {
        // Upgraded first, called after: a reclaim drops a store, and that
        // must not happen under this lock.
        let live: Vec<Arc<dyn Reclaim>> = self
            .reclaimers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        live.iter().any(|r| r.reclaim_one())
    }

    /// Whether at least half the pool is free: spare instances
    /// (`instances.rs`) are made only then, so they never stand between a
    /// request and an instance.
    pub(crate) fn has_headroom(&self) -> bool {
        self.permits.available_permits() as u32 * 2 >= self.capacity
    }

    /// Moves an instance admitted in the background (a spare) to the
    /// request of `ctx`, drawing on that request's share as [`Pool::admit`]
    /// would. On a refusal `admitted` is left as it was.
    pub(crate) fn assign(
        &self,
        admitted: &mut Admitted,
        ctx: Option<&CallContext>,
    ) -> Result<(), PluginError> {
        if let Some(ctx) = ctx {
            let share = ctx.budgets.hold(Resource::PluginInstances).map_err(|e| {
                self.refused("request");
                PluginError::ShareExhausted {
                    plugin: admitted.plugin.to_string(),
                    exceeded: e,
                }
            })?;
            let request: Arc<str> = Arc::from(ctx.request_id.as_str());
            self.release(&admitted.request, &admitted.plugin);
            self.hold(&request, &admitted.plugin);
            admitted.request = request;
            admitted.share = Some(share);
        }
        if std::mem::take(&mut admitted.waiting) {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            self.observe();
        }
        Ok(())
    }

    /// Hands an instance whose call is over back to the background as a
    /// waiting spare (a reused instance, `isolation = "reuse"`): its
    /// request's share is given back, and the pool may reclaim it.
    pub(crate) fn park(&self, admitted: &mut Admitted) {
        drop(admitted.share.take());
        if &*admitted.request != BACKGROUND {
            let background: Arc<str> = Arc::from(BACKGROUND);
            self.release(&admitted.request, &admitted.plugin);
            self.hold(&background, &admitted.plugin);
            admitted.request = background;
        }
        if !std::mem::replace(&mut admitted.waiting, true) {
            self.waiting.fetch_add(1, Ordering::Relaxed);
            self.observe();
        }
    }

    /// Counts one instance of `plugin` as held by `request`.
    fn hold(&self, request: &Arc<str>, plugin: &Arc<str>) {
        let mut holders = self.holders();
        let holding = holders.entry(request.clone()).or_default();
        holding.count += 1;
        *holding.plugins.entry(plugin.clone()).or_default() += 1;
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
            metrics
                .plugin_instances_spare
                .set(i64::from(self.spares_waiting()));
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
