//! L3: answers in the cluster's Redis, shared by every replica.
//!
//! Entries live under `<prefix>:cache:<hex key>` as the same JSON as L2,
//! with a Redis expiry at the answer's `expires_at_ms`, so Redis drops them
//! by itself. A hit here is copied into L1 (and L2) of the replica that
//! found it. While Redis is lost the tier fails at once (see `cluster`),
//! which the cache treats as a miss.

use super::{CacheError, CacheKey, CacheTier, CachedAnswer};
use crate::cluster::Cluster;
use futures::future::BoxFuture;
use std::sync::Arc;

/// The shared tier.
pub struct RedisTier {
    cluster: Arc<Cluster>,
}

impl RedisTier {
    /// A tier in `cluster`'s Redis.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster }
    }

    /// Every live entry (a backup).
    pub async fn entries(&self) -> Result<Vec<(CacheKey, CachedAnswer)>, CacheError> {
        let store = |e: crate::cluster::ClusterError| CacheError::Store(e.to_string());
        let prefix = self.cluster.key("cache:");
        let mut out = Vec::new();
        for k in self.cluster.scan("cache:*").await.map_err(store)? {
            let Some(key) = k
                .strip_prefix(&prefix)
                .and_then(|h| hex::decode(h).ok())
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
            else {
                continue;
            };
            if let Some(answer) = self.get(&CacheKey(key)).await? {
                out.push((CacheKey(key), (*answer).clone()));
            }
        }
        Ok(out)
    }

    fn redis_key(&self, key: &CacheKey) -> String {
        self.cluster.key(&format!("cache:{}", key.hex()))
    }
}

impl CacheTier for RedisTier {
    fn level(&self) -> &'static str {
        "l3"
    }

    fn get<'a>(
        &'a self,
        key: &'a CacheKey,
    ) -> BoxFuture<'a, Result<Option<Arc<CachedAnswer>>, CacheError>> {
        Box::pin(async move {
            let k = self.redis_key(key);
            let raw: Option<Vec<u8>> = self
                .cluster
                .run("cache", |mut conn| async move {
                    redis::cmd("GET").arg(k).query_async(&mut conn).await
                })
                .await
                .map_err(|e| CacheError::Store(e.to_string()))?;
            Ok(raw
                .and_then(|bytes| serde_json::from_slice::<CachedAnswer>(&bytes).ok())
                .filter(|answer| !answer.expired())
                .map(Arc::new))
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a CacheKey,
        answer: &'a Arc<CachedAnswer>,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            let ttl_ms = answer.expires_at_ms.saturating_sub(crate::clock::unix_ms());
            if ttl_ms == 0 {
                return Ok(());
            }
            let bytes = serde_json::to_vec(answer.as_ref())
                .map_err(|e| CacheError::Store(e.to_string()))?;
            let k = self.redis_key(key);
            self.cluster
                .run("cache", |mut conn| async move {
                    redis::cmd("SET")
                        .arg(k)
                        .arg(bytes)
                        .arg("PX")
                        .arg(ttl_ms)
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await
                .map_err(|e| CacheError::Store(e.to_string()))
        })
    }
}
