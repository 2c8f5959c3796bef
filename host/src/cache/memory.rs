//! L1: answers in memory, bounded in bytes, with a time to live (moka).
//!
//! Each entry weighs what its text weighs (plus a fixed overhead), so
//! `l1_max_mb` bounds memory rather than an entry count; moka evicts the
//! least useful entries (TinyLFU) once the bound is reached.

use super::{CacheError, CacheKey, CacheTier, CachedAnswer};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// Bookkeeping bytes per entry on top of its text.
const ENTRY_OVERHEAD_BYTES: usize = 256;

/// The in-memory tier.
pub struct MemoryTier {
    entries: moka::future::Cache<CacheKey, Arc<CachedAnswer>>,
}

impl MemoryTier {
    /// A tier holding at most `max_bytes`, each entry for at most `ttl`.
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        let entries = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key, answer: &Arc<CachedAnswer>| {
                u32::try_from(answer.weight_bytes() + ENTRY_OVERHEAD_BYTES).unwrap_or(u32::MAX)
            })
            .time_to_live(ttl)
            .build();
        Self { entries }
    }
}

impl CacheTier for MemoryTier {
    fn level(&self) -> &'static str {
        "l1"
    }

    fn get<'a>(
        &'a self,
        key: &'a CacheKey,
    ) -> BoxFuture<'a, Result<Option<Arc<CachedAnswer>>, CacheError>> {
        Box::pin(async move {
            match self.entries.get(key).await {
                // An entry promoted from L2 keeps its own, earlier expiry.
                Some(answer) if answer.expired() => {
                    self.entries.invalidate(key).await;
                    Ok(None)
                }
                found => Ok(found),
            }
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a CacheKey,
        answer: &'a Arc<CachedAnswer>,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            self.entries.insert(*key, answer.clone()).await;
            Ok(())
        })
    }
}
