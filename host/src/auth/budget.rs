//! Spend per key per UTC day, with reservations: a request reserves what it
//! is expected to cost before it runs, and settles with what it really cost
//! (the request's ledger) when it ends.
//!
//! A request is admitted while `spent + reserved < budget`; it then adds its
//! reservation — the key's recent mean cost per request, at least
//! `auth.budget_reservation_usd` — to `reserved`. Settling removes the
//! reservation and adds the real cost. So requests admitted together cannot
//! together promise more than the budget, and the overshoot is bounded by
//! what requests in flight cost *beyond their reservation* (without
//! reservations: by everything in flight). `docs/security.md` has the
//! measured figures.
//!
//! Where the numbers live: in sled (`auth\0spend\0<key>\0<day>`, surviving
//! restarts) and, for reservations, in memory — one replica. With
//! `[cluster]` all three live in one Redis hash per key and day, changed by
//! Lua scripts ([`RESERVE`], [`SETTLE`]) so that replicas share them
//! atomically; sled keeps counting what this replica spent, which is what
//! `cluster.on_redis_loss.budgets = "fail-open"` decides with while Redis is
//! unreachable.

use super::AuthError;
use crate::cluster::{Cluster, ClusterError, LossPolicy};
use crate::store::Store;
use redis::Script;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

const PREFIX: &[u8] = b"auth\0spend\0";
const DAY_S: u64 = 86_400;
/// Weight of the newest request in a key's mean cost.
const MEAN_WEIGHT: f64 = 0.2;

/// `KEYS[1]` the key's hash for the day; `ARGV` budget, smallest
/// reservation, hash lifetime (s). Returns `{admitted, spent, reserved,
/// reservation}` as strings (Lua numbers would be truncated to integers).
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local budget = tonumber(ARGV[1])
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
if spent + reserved >= budget then
  return {0, tostring(spent), tostring(reserved), '0'}
end
local mean = tonumber(redis.call('HGET', KEYS[1], 'mean') or ARGV[2])
local r = math.max(mean, tonumber(ARGV[2]))
redis.call('HINCRBYFLOAT', KEYS[1], 'reserved', r)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, tostring(spent), tostring(reserved + r), tostring(r)}
"#,
    )
});

/// `KEYS[1]` the key's hash for the day; `ARGV` the reservation, the real
/// cost, the mean's weight, hash lifetime (s). Returns `{before, after}`
/// spend as strings.
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local r = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
reserved = math.max(0, reserved - r)
local after = spent + cost
redis.call('HSET', KEYS[1], 'spent', tostring(after), 'reserved', tostring(reserved))
if cost > 0 then
  local mean = tonumber(redis.call('HGET', KEYS[1], 'mean') or tostring(cost))
  local w = tonumber(ARGV[3])
  redis.call('HSET', KEYS[1], 'mean', tostring(mean * (1 - w) + cost * w))
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {tostring(spent), tostring(after)}
"#,
    )
});

/// Days since the Unix epoch, UTC.
pub fn utc_day(unix_s: u64) -> u64 {
    unix_s / DAY_S
}

/// Seconds until the next UTC midnight.
pub fn seconds_to_midnight(unix_s: u64) -> u64 {
    DAY_S - unix_s % DAY_S
}

/// How long a counted cost may wait in memory before it is written to the
/// store: a crash loses at most this much spend (sled itself flushes its
/// log every 500 ms, so a write is not on disk sooner anyway).
pub const SPEND_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Daily spend: what this replica spent, per key and UTC day.
///
/// Totals are counted in memory and written to sled behind the requests
/// (every [`SPEND_FLUSH_INTERVAL`], by a background task, and when the
/// last handle drops): reading and updating sled on every request was half
/// of what admitting a key cost (bench/README.md). Only this process
/// writes these entries (sled admits one process), so the memory figure is
/// the true one; sled holds it across restarts.
#[derive(Clone)]
pub struct Spend {
    inner: Arc<SpendInner>,
}

struct SpendInner {
    store: Store,
    /// Key name → the days it spent on, loaded from sled on first use.
    totals: Mutex<HashMap<String, Vec<Total>>>,
    /// Held through a whole flush: two flushes writing at once could store
    /// an older total after a newer one.
    flushing: Mutex<()>,
}

#[derive(Clone, Copy)]
struct Total {
    day: u64,
    usd: f64,
    /// Counted since it was last written to sled.
    dirty: bool,
}

impl Spend {
    /// Spend tracking in `store`. Inside a tokio runtime, a task writes
    /// new spend to the store every [`SPEND_FLUSH_INTERVAL`] while this
    /// (or a clone) lives; elsewhere (a CLI command) call [`Spend::flush`]
    /// or rely on the flush when the last handle drops.
    pub fn new(store: Store) -> Self {
        let inner = Arc::new(SpendInner {
            store,
            totals: Mutex::default(),
            flushing: Mutex::default(),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&inner);
            runtime.spawn(async move {
                let mut ticks = tokio::time::interval(SPEND_FLUSH_INTERVAL);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let Some(inner) = weak.upgrade() else { return };
                    inner.flush();
                }
            });
        }
        Self { inner }
    }

    fn db_key(name: &str, day: u64) -> Vec<u8> {
        [PREFIX, name.as_bytes(), b"\0", &day.to_be_bytes()].concat()
    }

    fn decode(raw: Option<&[u8]>) -> f64 {
        raw.and_then(|r| <[u8; 8]>::try_from(r).ok())
            .map(f64::from_be_bytes)
            .unwrap_or(0.0)
    }

    /// USD spent by `name` on `day`.
    pub fn spent(&self, name: &str, day: u64) -> Result<f64, AuthError> {
        self.inner.update(name, day, |_| {})
    }

    /// Every `(key, day, usd)` recorded (a backup).
    pub fn all(&self) -> Result<Vec<(String, u64, f64)>, AuthError> {
        self.inner.flush();
        let mut out = Vec::new();
        for item in self.inner.store.db().scan_prefix(PREFIX) {
            let (k, v) = item.map_err(|e| AuthError::Store(e.to_string()))?;
            let rest = &k[PREFIX.len()..];
            if rest.len() < 9 {
                continue;
            }
            let (name, day) = rest.split_at(rest.len() - 9);
            let day = u64::from_be_bytes(day[1..].try_into().unwrap_or([0; 8]));
            out.push((
                String::from_utf8_lossy(name).to_string(),
                day,
                Self::decode(Some(&v)),
            ));
        }
        Ok(out)
    }

    /// Sets what `name` spent on `day` (a restore), in sled at once.
    pub fn set(&self, name: &str, day: u64, usd: f64) -> Result<(), AuthError> {
        let mut totals = self.inner.lock();
        self.inner
            .store
            .db()
            .insert(Self::db_key(name, day), usd.to_be_bytes().to_vec())
            .map_err(|e| AuthError::Store(e.to_string()))?;
        let days = totals.entry(name.to_string()).or_default();
        days.retain(|t| t.day != day);
        days.push(Total {
            day,
            usd,
            dirty: false,
        });
        Ok(())
    }

    /// Adds `usd` to what `name` spent on `day`; returns the new total. It
    /// reaches sled within [`SPEND_FLUSH_INTERVAL`].
    pub fn add(&self, name: &str, day: u64, usd: f64) -> Result<f64, AuthError> {
        self.inner.update(name, day, |t| {
            t.usd += usd;
            t.dirty = true;
        })
    }

    /// Writes every total counted since the last flush to sled now, and
    /// forgets days before yesterday (a request admitted before midnight
    /// may still settle on its day).
    pub fn flush(&self) {
        self.inner.flush();
    }
}

impl SpendInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Total>>> {
        // Every change is one assignment: a panic cannot leave a total
        // half-written.
        self.totals.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `change` to `name`'s total for `day` (read from sled the
    /// first time) and returns it.
    fn update(
        &self,
        name: &str,
        day: u64,
        change: impl FnOnce(&mut Total),
    ) -> Result<f64, AuthError> {
        let mut totals = self.lock();
        if let Some(total) = totals
            .get_mut(name)
            .and_then(|days| days.iter_mut().find(|t| t.day == day))
        {
            change(total);
            return Ok(total.usd);
        }
        let raw = self
            .store
            .db()
            .get(Spend::db_key(name, day))
            .map_err(|e| AuthError::Store(e.to_string()))?;
        let mut total = Total {
            day,
            usd: Spend::decode(raw.as_deref()),
            dirty: false,
        };
        change(&mut total);
        totals.entry(name.to_string()).or_default().push(total);
        Ok(total.usd)
    }

    fn flush(&self) {
        let _one_at_a_time = self.flushing.lock().unwrap_or_else(|e| e.into_inner());
        let today = utc_day(crate::clock::unix_s());
        let mut dirty = Vec::new();
        {
            let mut totals = self.lock();
            for (name, days) in totals.iter_mut() {
                for t in days.iter_mut().filter(|t| t.dirty) {
                    t.dirty = false;
                    dirty.push((Spend::db_key(name, t.day), t.usd, name.clone(), t.day));
                }
                days.retain(|t| t.day + 1 >= today);
            }
            totals.retain(|_, days| !days.is_empty());
        }
        // Written outside the lock, so requests never wait for sled; a
        // total counted meanwhile is dirty again and written next time.
        for (key, usd, name, day) in dirty {
            if let Err(e) = self.store.db().insert(key, usd.to_be_bytes().to_vec()) {
                tracing::warn!(key = %name, day, error = %e, "cannot record spend; retrying at the next flush");
                let mut totals = self.lock();
                let days = totals.entry(name).or_default();
                match days.iter_mut().find(|t| t.day == day) {
                    Some(t) => t.dirty = true,
                    None => days.push(Total {
                        day,
                        usd,
                        dirty: true,
                    }),
                }
            }
        }
    }
}

impl Drop for SpendInner {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Budget held for one admitted request until it settles.
#[derive(Debug)]
pub struct Reservation {
    key: String,
    day: u64,
    budget_usd: f64,
    amount_usd: f64,
    /// Reserved in Redis (else in this replica's memory).
    shared: bool,
}

impl Reservation {
    /// The key it was taken for.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What it holds, USD.
    pub fn amount_usd(&self) -> f64 {
        self.amount_usd
    }
}

/// A key's spend before and after a request settled.
#[derive(Clone, Debug, PartialEq)]
pub struct SpendUpdate {
    /// The key.
    pub key: String,
    /// Spent today before this request, USD.
    pub before_usd: f64,
    /// Spent today after it, USD.
    pub after_usd: f64,
    /// The key's daily budget, USD.
    pub budget_usd: f64,
}

/// Why a request was not admitted against its budget.
#[derive(Debug)]
pub struct BudgetExceeded {
    /// Spent today, USD.
    pub spent_usd: f64,
    /// Held by requests in flight, USD.
    pub reserved_usd: f64,
    /// The daily budget, USD.
    pub budget_usd: f64,
    /// Seconds until a retry can succeed: UTC midnight when the budget is
    /// spent, a moment when requests in flight hold the rest.
    pub resets_in_s: u64,
    /// The budget could not be checked (Redis lost and
    /// `cluster.on_redis_loss.budgets = "fail-closed"`): why.
    pub unavailable: Option<String>,
}

/// A key's reservations in flight and mean cost, for one UTC day.
#[derive(Debug, Default)]
struct Outstanding {
    day: u64,
    reserved: f64,
    mean: Option<f64>,
}

/// Daily budgets: reservations and spend, local or shared.
pub struct Budgets {
    spend: Spend,
    /// Key name → today's reservations: one entry per key, reset when the
    /// day turns, so settling never scans the map.
    local: Mutex<HashMap<String, Outstanding>>,
    cluster: Option<Arc<Cluster>>,
    min_reservation_usd: f64,
}

impl Budgets {
    /// Budgets in `store`, shared through `cluster` when given; every
    /// request reserves at least `min_reservation_usd`.
    pub fn new(store: Store, cluster: Option<Arc<Cluster>>, min_reservation_usd: f64) -> Self {
        Self {
            spend: Spend::new(store),
            local: Mutex::default(),
            cluster,
            min_reservation_usd,
        }
    }

    fn redis_key(cluster: &Cluster, name: &str, day: u64) -> String {
        cluster.key(&format!("spend:{name}:{day}"))
    }

    /// Admits a request of key `name` against `budget_usd` for today, or
    /// says why not.
    pub async fn reserve(
        &self,
        name: &str,
        budget_usd: f64,
    ) -> Result<Reservation, BudgetExceeded> {
        let now_s = crate::clock::unix_s();
        let day = utc_day(now_s);
        if let Some(cluster) = &self.cluster {
            match self.reserve_shared(cluster, name, day, budget_usd).await {
                Ok((true, _, _, amount)) => {
                    return Ok(Reservation {
                        key: name.to_string(),
                        day,
                        budget_usd,
                        amount_usd: amount,
                        shared: true,
                    });
                }
                Ok((false, spent, reserved, _)) => {
                    return Err(refusal(spent, reserved, budget_usd, now_s, None));
                }
                Err(e) => {
                    let policy = cluster.policies().budgets;
                    cluster.note_fallback("budget", policy);
                    if policy == LossPolicy::FailClosed {
                        let why = format!(
                            "the shared budget cannot be checked ({e}) and cluster.on_redis_loss.budgets says fail-closed"
                        );
                        return Err(refusal(0.0, 0.0, budget_usd, now_s, Some(why)));
                    }
                }
            }
        }
        let spent = self.spend.spent(name, day).unwrap_or_else(|e| {
            tracing::warn!(key = %name, error = %e, "cannot read spend; assuming none");
            0.0
        });
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up by `&str`: a key's name is copied once, not per request.
        if !local.contains_key(name) {
            local.insert(name.to_string(), Outstanding::default());
        }
        let entry = local.get_mut(name).expect("inserted above");
        if entry.day != day {
            // A new day: what was held and learnt yesterday is of no use.
            *entry = Outstanding {
                day,
                ..Outstanding::default()
            };
        }
        if spent + entry.reserved >= budget_usd {
            return Err(refusal(spent, entry.reserved, budget_usd, now_s, None));
        }
        let amount = entry
            .mean
            .unwrap_or(self.min_reservation_usd)
            .max(self.min_reservation_usd);
        entry.reserved += amount;
        Ok(Reservation {
            key: name.to_string(),
            day,
            budget_usd,
            amount_usd: amount,
            shared: false,
        })
    }

    async fn reserve_shared(
        &self,
        cluster: &Cluster,
        name: &str,
        day: u64,
        budget_usd: f64,
    ) -> Result<(bool, f64, f64, f64), ClusterError> {
        let mut invocation = RESERVE.prepare_invoke();
        invocation
            .key(Self::redis_key(cluster, name, day))
            .arg(budget_usd)
            .arg(self.min_reservation_usd)
            .arg(2 * DAY_S);
        let (admitted, spent, reserved, amount): (u8, f64, f64, f64) = cluster
            .run("budget", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        Ok((admitted == 1, spent, reserved, amount))
    }

    /// Settles `reservation` with the request's real cost (0 for a request
    /// that failed or was answered from the cache); returns the spend
    /// before and after.
    pub async fn settle(&self, reservation: Reservation, cost_usd: f64) -> SpendUpdate {
        let r = reservation;
        let cost = cost_usd.max(0.0);
        // Always counted locally too: the fail-open fallback and a backup
        // of this replica's spend.
        let local_total = if cost > 0.0 {
            self.spend.add(&r.key, r.day, cost).unwrap_or_else(|e| {
                tracing::warn!(key = %r.key, error = %e, "cannot record spend");
                0.0
            })
        } else {
            self.spend.spent(&r.key, r.day).unwrap_or(0.0)
        };
        if r.shared
            && let Some(cluster) = &self.cluster
        {
            let mut invocation = SETTLE.prepare_invoke();
            invocation
                .key(Self::redis_key(cluster, &r.key, r.day))
                .arg(r.amount_usd)
                .arg(cost)
                .arg(MEAN_WEIGHT)
                .arg(2 * DAY_S);
            let settled: Result<(f64, f64), _> = cluster
                .run("budget", |mut conn| async move {
                    invocation.invoke_async(&mut conn).await
                })
                .await;
            match settled {
                Ok((before, after)) => {
                    return SpendUpdate {
                        key: r.key,
                        before_usd: before,
                        after_usd: after,
                        budget_usd: r.budget_usd,
                    };
                }
                // The reservation in Redis expires with the day's hash; the
                // cost is in the local spend.
                Err(e) => {
                    tracing::warn!(key = %r.key, error = %e, cost_usd = cost, "could not settle the shared budget; the cost is counted locally only")
                }
            }
        } else {
            let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = local.get_mut(&r.key).filter(|e| e.day == r.day) {
                entry.reserved = (entry.reserved - r.amount_usd).max(0.0);
                if cost > 0.0 {
                    entry.mean = Some(match entry.mean {
                        Some(m) => m * (1.0 - MEAN_WEIGHT) + cost * MEAN_WEIGHT,
                        None => cost,
                    });
                }
            }
        }
        SpendUpdate {
            key: r.key,
            before_usd: local_total - cost,
            after_usd: local_total,
            budget_usd: r.budget_usd,
        }
    }

    /// Every `(key, day, spent)` (a backup): from Redis with `[cluster]`,
    /// else from sled.
    pub async fn export(&self) -> Result<Vec<(String, u64, f64)>, AuthError> {
        let Some(cluster) = &self.cluster else {
            return self.spend.all();
        };
        let store = |e: ClusterError| AuthError::Store(e.to_string());
        let prefix = cluster.key("spend:");
        let mut out = Vec::new();
        for key in cluster.scan("spend:*").await.map_err(store)? {
            let Some((name, day)) = key
                .strip_prefix(&prefix)
                .and_then(|rest| rest.rsplit_once(':'))
                .and_then(|(n, d)| Some((n.to_string(), d.parse::<u64>().ok()?)))
            else {
                continue;
            };
            let spent: Option<f64> = cluster
                .run("budget", |mut conn| async move {
                    redis::cmd("HGET")
                        .arg(key)
                        .arg("spent")
                        .query_async(&mut conn)
                        .await
                })
                .await
                .map_err(store)?;
            out.push((name, day, spent.unwrap_or(0.0)));
        }
        Ok(out)
    }

    /// Sets what `name` spent on `day` (a restore), in Redis with
    /// `[cluster]`, else in sled.
    pub async fn import(&self, name: &str, day: u64, spent: f64) -> Result<(), AuthError> {
        let Some(cluster) = &self.cluster else {
            return self.spend.set(name, day, spent);
        };
        let key = Self::redis_key(cluster, name, day);
        cluster
            .run("budget", |mut conn| async move {
                redis::pipe()
                    .cmd("HSET")
                    .arg(&key)
                    .arg("spent")
                    .arg(spent)
                    .ignore()
                    .cmd("EXPIRE")
                    .arg(&key)
                    .arg(2 * DAY_S)
                    .ignore()
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await
            .map_err(|e| AuthError::Store(e.to_string()))
    }

    /// What `name` spent today, USD: the shared figure with `[cluster]`
    /// (this replica's own while Redis is lost).
    pub async fn spent_today(&self, name: &str) -> f64 {
        let day = utc_day(crate::clock::unix_s());
        if let Some(cluster) = &self.cluster {
            let key = Self::redis_key(cluster, name, day);
            let spent = cluster
                .run("budget", |mut conn| async move {
                    redis::cmd("HGET")
                        .arg(key)
                        .arg("spent")
                        .query_async::<Option<f64>>(&mut conn)
                        .await
                })
                .await;
            if let Ok(spent) = spent {
                return spent.unwrap_or(0.0);
            }
        }
        self.spend.spent(name, day).unwrap_or(0.0)
    }
}

fn refusal(
    spent: f64,
    reserved: f64,
    budget: f64,
    now_s: u64,
    unavailable: Option<String>,
) -> BudgetExceeded {
    // Spent: nothing before midnight. Held by requests in flight: those
    // settle within a request's deadline, so try again in a moment.
    let resets_in_s = if spent >= budget {
        seconds_to_midnight(now_s)
    } else {
        1
    };
    BudgetExceeded {
        spent_usd: spent,
        reserved_usd: reserved,
        budget_usd: budget,
        resets_in_s,
        unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spend_adds_up_per_key_and_day() {
        let s = Spend::new(Store::temporary().unwrap());
        s.add("a", 10, 0.25).unwrap();
        assert_eq!(s.add("a", 10, 0.5).unwrap(), 0.75);
        assert_eq!(s.spent("a", 11).unwrap(), 0.0);
        assert_eq!(s.spent("b", 10).unwrap(), 0.0);
        assert_eq!(seconds_to_midnight(86_400 * 3 + 1), 86_399);
    }

    fn on_disk(dir: &std::path::Path, name: &str, day: u64) -> Option<f64> {
        let raw = Store::open(dir)
            .unwrap()
            .db()
            .get(Spend::db_key(name, day))
            .unwrap();
        raw.map(|r| Spend::decode(Some(&r)))
    }

    #[test]
    fn spend_reaches_the_store_on_flush_and_when_the_last_handle_drops() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let spend = Spend::new(store.clone());
        spend.add("a", 10, 0.25).unwrap();
        spend.flush();
        let written = store.db().get(Spend::db_key("a", 10)).unwrap();
        assert_eq!(Spend::decode(written.as_deref()), 0.25);
        // Counted after the flush, written when the handles (and the
        // store) are gone: a graceful exit loses nothing.
        let clone = spend.clone();
        clone.add("a", 10, 0.5).unwrap();
        drop((spend, clone, store));
        assert_eq!(on_disk(dir.path(), "a", 10), Some(0.75));
        // A restart reads the total back before adding to it.
        let spend = Spend::new(Store::open(dir.path()).unwrap());
        assert_eq!(spend.add("a", 10, 1.0).unwrap(), 1.75);
        // A restore overrides what was counted.
        spend.set("a", 10, 0.1).unwrap();
        assert_eq!(spend.spent("a", 10).unwrap(), 0.1);
        assert_eq!(spend.all().unwrap(), vec![("a".to_string(), 10, 0.1)]);
    }

    #[tokio::test]
    async fn a_running_gateway_writes_new_spend_behind_the_requests() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let spend = Spend::new(store.clone());
        spend.add("k", 20, 0.125).unwrap();
        // Nobody flushes: the background task does, within an interval.
        let written = async {
            loop {
                if let Some(raw) = store.db().get(Spend::db_key("k", 20)).unwrap() {
                    return Spend::decode(Some(&raw));
                }
                tokio::time::sleep(SPEND_FLUSH_INTERVAL / 4).await;
            }
        };
        let usd = tokio::time::timeout(Duration::from_secs(10), written)
            .await
            .expect("the spend was never written");
        assert_eq!(usd, 0.125);
        drop(spend);
    }

    #[tokio::test]
    async fn a_reservation_from_yesterday_settles_without_touching_todays() {
        let b = Budgets::new(Store::temporary().unwrap(), None, 0.4);
        let today = b.reserve("k", 1.0).await.unwrap();
        let yesterday = Reservation {
            key: "k".into(),
            day: today.day - 1,
            budget_usd: 1.0,
            amount_usd: 0.4,
            shared: false,
        };
        b.settle(yesterday, 0.0).await;
        // Today's 0.4 is still held: two more fit, a fourth waits.
        b.reserve("k", 1.0).await.unwrap();
        b.reserve("k", 1.0).await.unwrap();
        let refused = b.reserve("k", 1.0).await.unwrap_err();
        assert!((refused.reserved_usd - 1.2).abs() < 1e-9, "{refused:?}");
    }

    #[tokio::test]
    async fn reservations_hold_the_budget_until_requests_settle() {
        let b = Budgets::new(Store::temporary().unwrap(), None, 0.4);
        // 1.0 of budget, 0.4 reserved per request, admitted while spent +
        // reserved < budget: 0.8 reserved still admits a third (so the
        // budget can be used up), 1.2 makes a fourth wait.
        let first = b.reserve("k", 1.0).await.unwrap();
        let second = b.reserve("k", 1.0).await.unwrap();
        let third = b.reserve("k", 1.0).await.unwrap();
        let refused = b.reserve("k", 1.0).await.unwrap_err();
        assert!((refused.reserved_usd - 1.2).abs() < 1e-9, "{refused:?}");
        assert_eq!(refused.resets_in_s, 1, "in flight, not spent: soon");
        let update = b.settle(first, 0.3).await;
        assert_eq!((update.before_usd, update.after_usd), (0.0, 0.3));
        b.settle(second, 0.3).await;
        b.settle(third, 0.3).await;
        // 0.9 spent; the mean cost is now under the minimum reservation.
        let fourth = b.reserve("k", 1.0).await.unwrap();
        assert_eq!(fourth.amount_usd(), 0.4);
        b.settle(fourth, 0.5).await;
        let spent = b.reserve("k", 1.0).await.unwrap_err();
        assert!(spent.resets_in_s > 1 && spent.spent_usd >= 1.0, "{spent:?}");
    }
}
