//! Rate limits shared by every replica: the buckets live in Redis and are
//! changed only by Lua scripts, which Redis runs atomically, so replicas
//! never race on a bucket.
//!
//! - Requests per second use GCRA (the algorithm governor uses locally):
//!   one number per bucket, the *theoretical arrival time*. A request is
//!   admitted while `tat + T - burst·T <= now` (T = 1/rate), and then moves
//!   `tat` on by T. Time is Redis's own (`TIME`), so replicas' clocks never
//!   disagree about a bucket.
//! - Tokens per minute use the debt bucket of [`super::TokenBucket`]: a
//!   level refilled at `capacity` per minute, admitted while above zero,
//!   charged after the answer with the real usage.
//!
//! One admission is one round trip: [`ADMIT`] takes every check of a
//! request in order and stops at the first refusal (the request GCRA is
//! last, so a refused request takes no slot). Keys expire once a bucket
//! would be full again, so idle clients cost Redis nothing.

use crate::cluster::{Cluster, ClusterError};
use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;

/// Checks in order; `KEYS[i]` is check i's bucket, `ARGV` holds per check
/// its kind (`g` GCRA, `t` token bucket) and two numbers: for `g` the
/// emission interval (ms) and the burst, for `t` the capacity and the
/// refill per ms. Returns `{0, 0}` when every check passes, else
/// `{i, wait_ms}` for the first that refused.
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
for i, key in ipairs(KEYS) do
  local kind = ARGV[3 * i - 2]
  local a = tonumber(ARGV[3 * i - 1])
  local b = tonumber(ARGV[3 * i])
  if kind == 'g' then
    local tat = tonumber(redis.call('GET', key) or now)
    if tat < now then tat = now end
    local next_tat = tat + a
    local allow_at = next_tat - b * a
    if allow_at > now then
      return {i, math.ceil(allow_at - now)}
    end
    redis.call('SET', key, tostring(next_tat), 'PX', math.ceil(next_tat - now) + 1000)
  else
    local level = tonumber(redis.call('HGET', key, 'level') or a)
    local at = tonumber(redis.call('HGET', key, 'at') or now)
    level = math.min(a, level + (now - at) * b)
    if level <= 0 then
      return {i, math.ceil((-level + 0.001) / b)}
    end
  end
end
return {0, 0}
"#,
    )
});

/// Charges token buckets: `KEYS[i]` bucket, `ARGV` per bucket capacity,
/// refill per ms and the amount taken.
static CHARGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
for i, key in ipairs(KEYS) do
  local cap = tonumber(ARGV[3 * i - 2])
  local per_ms = tonumber(ARGV[3 * i - 1])
  local amount = tonumber(ARGV[3 * i])
  local level = tonumber(redis.call('HGET', key, 'level') or cap)
  local at = tonumber(redis.call('HGET', key, 'at') or now)
  level = math.min(cap, level + (now - at) * per_ms) - amount
  redis.call('HSET', key, 'level', tostring(level), 'at', tostring(now))
  -- Until the bucket is full again (the debt included).
  redis.call('PEXPIRE', key, math.ceil((cap - level) / per_ms) + 1000)
end
return 0
"#,
    )
});

/// One check of an admission.
#[derive(Clone, Debug)]
pub(super) enum SharedCheck {
    /// A GCRA request bucket: `rate` per second, `burst` at once.
    Requests {
        /// The bucket's name (below the cluster's prefix).
        bucket: String,
        /// Sustained requests per second.
        rate: f64,
        /// Requests at once.
        burst: u32,
    },
    /// A token bucket of `per_min` tokens per minute, refused while in debt.
    Tokens {
        /// The bucket's name.
        bucket: String,
        /// Tokens per minute.
        per_min: u64,
    },
}

/// The limits in Redis.
pub(super) struct SharedLimits {
    cluster: std::sync::Arc<Cluster>,
}

impl SharedLimits {
    pub(super) fn new(cluster: std::sync::Arc<Cluster>) -> Self {
        Self { cluster }
    }

    pub(super) fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Runs `checks` in order: `Ok(None)` when all pass, `Ok(Some((i,
    /// wait)))` when check `i` refused.
    pub(super) async fn admit(
        &self,
        checks: &[SharedCheck],
    ) -> Result<Option<(usize, Duration)>, ClusterError> {
        if checks.is_empty() {
            return Ok(None);
        }
        let mut invocation = ADMIT.prepare_invoke();
        for check in checks {
            match check {
                SharedCheck::Requests {
                    bucket,
                    rate,
                    burst,
                } => {
                    invocation
                        .key(self.cluster.key(&format!("rl:{bucket}")))
                        .arg("g")
                        .arg(1000.0 / rate)
                        .arg(*burst);
                }
                SharedCheck::Tokens { bucket, per_min } => {
                    invocation
                        .key(self.cluster.key(&format!("rl:{bucket}")))
                        .arg("t")
                        .arg(*per_min)
                        .arg(*per_min as f64 / 60_000.0);
                }
            }
        }
        let (index, wait_ms): (usize, u64) = self
            .cluster
            .run("ratelimit", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        Ok((index > 0).then(|| (index - 1, Duration::from_millis(wait_ms))))
    }

    /// Takes `tokens` from each `(bucket, per_min)`.
    pub(super) async fn charge(
        &self,
        buckets: &[(String, u64)],
        tokens: u64,
    ) -> Result<(), ClusterError> {
        if buckets.is_empty() {
            return Ok(());
        }
        let mut invocation = CHARGE.prepare_invoke();
        for (bucket, per_min) in buckets {
            invocation
                .key(self.cluster.key(&format!("rl:{bucket}")))
                .arg(*per_min)
                .arg(*per_min as f64 / 60_000.0)
                .arg(tokens);
        }
        self.cluster
            .run("ratelimit", |mut conn| async move {
                invocation.invoke_async::<i64>(&mut conn).await
            })
            .await?;
        Ok(())
    }
}
