//! L2: answers in the sled store, so they survive restarts.
//!
//! Entries live under `cache\0<32-byte key>` as JSON carrying their own
//! expiry; an expired entry is never served and is removed when read, and
//! [`SledTier::sweep`] removes the rest at startup.

use super::{CacheError, CacheKey, CacheTier, CachedAnswer};
use crate::store::Store;
use futures::future::BoxFuture;
use std::sync::Arc;

const PREFIX: &[u8] = b"cache\0";

/// The persistent tier.
pub struct SledTier {
    store: Store,
}

impl SledTier {
    /// A tier in `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    fn db_key(key: &CacheKey) -> Vec<u8> {
        let mut k = Vec::with_capacity(PREFIX.len() + 32);
        k.extend_from_slice(PREFIX);
        k.extend_from_slice(&key.0);
        k
    }

    /// Every live entry (a backup).
    pub fn entries(&self) -> Result<Vec<(CacheKey, CachedAnswer)>, CacheError> {
        let mut out = Vec::new();
        for item in self.store.db().scan_prefix(PREFIX) {
            let (k, v) = item.map_err(|e| CacheError::Store(e.to_string()))?;
            let Ok(key) = <[u8; 32]>::try_from(&k[PREFIX.len()..]) else {
                continue;
            };
            if let Ok(answer) = serde_json::from_slice::<CachedAnswer>(&v)
                && !answer.expired()
            {
                out.push((CacheKey(key), answer));
            }
        }
        Ok(out)
    }

    /// Removes every expired (or unreadable) entry; returns how many.
    pub fn sweep(&self) -> Result<usize, CacheError> {
        let db = self.store.db();
        let mut removed = 0;
        for item in db.scan_prefix(PREFIX) {
            let (k, v) = item.map_err(|e| CacheError::Store(e.to_string()))?;
            let keep = serde_json::from_slice::<CachedAnswer>(&v).is_ok_and(|a| !a.expired());
            if !keep {
                db.remove(k).map_err(|e| CacheError::Store(e.to_string()))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl CacheTier for SledTier {
    fn level(&self) -> &'static str {
        "l2"
    }

    fn get<'a>(
        &'a self,
        key: &'a CacheKey,
    ) -> BoxFuture<'a, Result<Option<Arc<CachedAnswer>>, CacheError>> {
        Box::pin(async move {
            let db = self.store.db();
            let k = Self::db_key(key);
            let Some(raw) = db.get(&k).map_err(|e| CacheError::Store(e.to_string()))? else {
                return Ok(None);
            };
            match serde_json::from_slice::<CachedAnswer>(&raw) {
                Ok(answer) if !answer.expired() => Ok(Some(Arc::new(answer))),
                // Expired, or written by an incompatible version: never served.
                _ => {
                    db.remove(&k)
                        .map_err(|e| CacheError::Store(e.to_string()))?;
                    Ok(None)
                }
            }
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a CacheKey,
        answer: &'a Arc<CachedAnswer>,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            let bytes = serde_json::to_vec(answer.as_ref())
                .map_err(|e| CacheError::Store(e.to_string()))?;
            self.store
                .db()
                .insert(Self::db_key(key), bytes)
                .map_err(|e| CacheError::Store(e.to_string()))?;
            Ok(())
        })
    }
}
