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

/// Daily spend in the sled store: what this replica spent.
#[derive(Clone)]
pub struct Spend {
    store: Store,
}

impl Spend {
    /// Spend tracking in `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
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
        let raw = self
            .store
            .db()
            .get(Self::db_key(name, day))
            .map_err(|e| AuthError::Store(e.to_string()))?;
        Ok(Self::decode(raw.as_deref()))
    }

    /// Every `(key, day, usd)` recorded (a backup).
    pub fn all(&self) -> Result<Vec<(String, u64, f64)>, AuthError> {
        let mut out = Vec::new();
        for item in self.store.db().scan_prefix(PREFIX) {
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

    /// Sets what `name` spent on `day` (a restore).
    pub fn set(&self, name: &str, day: u64, usd: f64) -> Result<(), AuthError> {
        self.store
            .db()
            .insert(Self::db_key(name, day), usd.to_be_bytes().to_vec())
            .map_err(|e| AuthError::Store(e.to_string()))?;
        Ok(())
    }

    /// Adds `usd` to what `name` spent on `day`; returns the new total.
    pub fn add(&self, name: &str, day: u64, usd: f64) -> Result<f64, AuthError> {
        let total = self
            .store
            .db()
            .update_and_fetch(Self::db_key(name, day), |old| {
                Some((Self::decode(old) + usd).to_be_bytes().to_vec())
            })
            .map_err(|e| AuthError::Store(e.to_string()))?;
        Ok(Self::decode(total.as_deref()))
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

#[derive(Debug, Default)]
struct Outstanding {
    reserved: f64,
    mean: Option<f64>,
}

/// Daily budgets: reservations and spend, local or shared.
pub struct Budgets {
    spend: Spend,
    local: Mutex<HashMap<(String, u64), Outstanding>>,
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
        let entry = local.entry((name.to_string(), day)).or_default();
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
            if let Some(entry) = local.get_mut(&(r.key.clone(), r.day)) {
                entry.reserved = (entry.reserved - r.amount_usd).max(0.0);
                if cost > 0.0 {
                    entry.mean = Some(match entry.mean {
                        Some(m) => m * (1.0 - MEAN_WEIGHT) + cost * MEAN_WEIGHT,
                        None => cost,
                    });
                }
            }
            // Yesterday's entries are of no use any more.
            local.retain(|(_, day), _| *day >= r.day);
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
