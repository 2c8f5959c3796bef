//! API keys shared by every replica: records in Redis, so a key created,
//! rotated or revoked through any replica's admin API is what every
//! replica's next request sees.
//!
//! Layout under the cluster's prefix: `key:<name>` the record (JSON, as in
//! sled), `keyhash:<sha256>` → name for every hash that may authenticate
//! (current and, during a rotation's grace, previous), and the set `keys`
//! of names. Authentication is one round trip ([`LOOKUP`]); there is no
//! cache to go stale, which is what makes a revocation take effect at once.
//! A change is a compare-and-set ([`PUT`]): two replicas changing one key
//! at once cannot lose either change.
//!
//! Each replica also keeps a copy of every record, refreshed every
//! `cluster.key_sync_ms` and by its own changes: while Redis cannot be
//! reached, keys authenticate from that copy (a key created meanwhile on
//! another replica is unknown here until Redis is back).

use super::{AuthError, KeyRecord};
use crate::cluster::{Cluster, ClusterError};
use redis::Script;
use std::sync::{Arc, LazyLock};

/// `KEYS[1]` the hash's entry; `ARGV[1]` the key prefix. The record whose
/// secret hashes to it, or nil.
static LOOKUP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local name = redis.call('GET', KEYS[1])
if not name then return false end
return redis.call('GET', ARGV[1] .. 'key:' .. name)
"#,
    )
});

/// Compare-and-set of one record. `KEYS[1]` the record, `KEYS[2]` the set
/// of names; `ARGV[1]` the expected JSON (empty: must not exist), `ARGV[2]`
/// the new JSON, `ARGV[3]` the name, `ARGV[4]` the key prefix, then hashes
/// to map to the name, `--`, hashes to drop. Returns 1, or 0 when the
/// record was not as expected.
static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
  if current then return 0 end
elseif current ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
local dropping = false
for i = 5, #ARGV do
  if ARGV[i] == '--' then
    dropping = true
  elseif dropping then
    redis.call('DEL', ARGV[4] .. 'keyhash:' .. ARGV[i])
  else
    redis.call('SET', ARGV[4] .. 'keyhash:' .. ARGV[i], ARGV[3])
  end
end
return 1
"#,
    )
});

/// The keys in Redis.
pub struct SharedKeys {
    cluster: Arc<Cluster>,
}

fn err(e: ClusterError) -> AuthError {
    AuthError::Store(e.to_string())
}

/// The hashes of `record` that may authenticate.
fn hashes(record: &KeyRecord) -> Vec<String> {
    let mut all = vec![record.hash.clone()];
    all.extend(record.previous.iter().map(|p| p.hash.clone()));
    all
}

impl SharedKeys {
    /// Keys in `cluster`'s Redis.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster }
    }

    /// The cluster.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    fn prefix(&self) -> String {
        self.cluster.key("")
    }

    /// The record a secret's `hash` authenticates, if any.
    pub async fn lookup(&self, hash: &str) -> Result<Option<KeyRecord>, ClusterError> {
        let mut invocation = LOOKUP.prepare_invoke();
        invocation
            .key(self.cluster.key(&format!("keyhash:{hash}")))
            .arg(self.prefix());
        let raw: Option<String> = self
            .cluster
            .run("keys", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        Ok(raw.and_then(|text| serde_json::from_str(&text).ok()))
    }

    /// The record of `name`, with its JSON text (for a later [`Self::put`]).
    pub async fn get(&self, name: &str) -> Result<Option<(KeyRecord, String)>, AuthError> {
        let key = self.cluster.key(&format!("key:{name}"));
        let raw: Option<String> = self
            .cluster
            .run("keys", |mut conn| async move {
                redis::cmd("GET").arg(key).query_async(&mut conn).await
            })
            .await
            .map_err(err)?;
        match raw {
            Some(text) => {
                let record =
                    serde_json::from_str(&text).map_err(|e| AuthError::Store(e.to_string()))?;
                Ok(Some((record, text)))
            }
            None => Ok(None),
        }
    }

    /// Every record.
    pub async fn list(&self) -> Result<Vec<KeyRecord>, ClusterError> {
        let set = self.cluster.key("keys");
        let names: Vec<String> = self
            .cluster
            .run("keys", |mut conn| async move {
                redis::cmd("SMEMBERS").arg(set).query_async(&mut conn).await
            })
            .await?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = names
            .iter()
            .map(|n| self.cluster.key(&format!("key:{n}")))
            .collect();
        let raw: Vec<Option<String>> = self
            .cluster
            .run("keys", |mut conn| async move {
                redis::cmd("MGET").arg(keys).query_async(&mut conn).await
            })
            .await?;
        let mut records: Vec<KeyRecord> = raw
            .into_iter()
            .flatten()
            .filter_map(|text| serde_json::from_str(&text).ok())
            .collect();
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(records)
    }

    /// Writes `record` if the stored one is still `expected` (`None`: there
    /// is none); `Ok(false)` when another change came first.
    pub async fn put(
        &self,
        record: &KeyRecord,
        expected: Option<&str>,
        previous: Option<&KeyRecord>,
    ) -> Result<bool, AuthError> {
        let json = serde_json::to_string(record).map_err(|e| AuthError::Store(e.to_string()))?;
        let keep = hashes(record);
        let drop: Vec<String> = previous
            .map(hashes)
            .unwrap_or_default()
            .into_iter()
            .filter(|h| !keep.contains(h))
            .collect();
        let mut invocation = PUT.prepare_invoke();
        invocation
            .key(self.cluster.key(&format!("key:{}", record.name)))
            .key(self.cluster.key("keys"))
            .arg(expected.unwrap_or(""))
            .arg(json)
            .arg(&record.name)
            .arg(self.prefix());
        for h in &keep {
            invocation.arg(h);
        }
        invocation.arg("--");
        for h in &drop {
            invocation.arg(h);
        }
        let written: i64 = self
            .cluster
            .run("keys", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await
            .map_err(err)?;
        Ok(written == 1)
    }

    /// Writes `record` whatever is stored (a restore from a backup).
    pub async fn restore(&self, record: &KeyRecord) -> Result<(), AuthError> {
        for _ in 0..5 {
            let current = self.get(&record.name).await?;
            let (expected, previous) = match &current {
                Some((r, text)) => (Some(text.as_str()), Some(r)),
                None => (None, None),
            };
            if self.put(record, expected, previous).await? {
                return Ok(());
            }
        }
        Err(AuthError::Store(format!(
            "key `{}` kept changing while it was restored",
            record.name
        )))
    }
}
