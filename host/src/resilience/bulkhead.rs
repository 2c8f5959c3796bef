//! Bulkheads: a bound on concurrent calls that refuses excess at once.
//!
//! Queueing behind a slow upstream turns its latency into everyone's
//! latency and grows memory without bound; a full bulkhead instead answers
//! immediately so the caller can go elsewhere or come back later.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A concurrency bound; unlimited when built with `None`.
#[derive(Clone, Debug)]
pub struct Bulkhead(Option<Arc<Semaphore>>);

/// A place in a bulkhead, given back when dropped.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl Bulkhead {
    /// A bulkhead admitting `limit` concurrent holders (`None`: no bound).
    pub fn new(limit: Option<u32>) -> Self {
        Self(limit.map(|n| Arc::new(Semaphore::new(n as usize))))
    }

    /// A place, or `None` when it is full.
    pub fn try_enter(&self) -> Option<Slot> {
        match &self.0 {
            None => Some(Slot(None)),
            Some(sem) => sem.clone().try_acquire_owned().ok().map(|p| Slot(Some(p))),
        }
    }

    /// Whether a place is free right now (a hint; [`Self::try_enter`] decides).
    pub fn has_room(&self) -> bool {
        self.0.as_ref().is_none_or(|s| s.available_permits() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_beyond_the_limit_and_frees_on_drop() {
        let b = Bulkhead::new(Some(2));
        let one = b.try_enter().unwrap();
        let _two = b.try_enter().unwrap();
        assert!(b.try_enter().is_none());
        assert!(!b.has_room());
        drop(one);
        assert!(b.try_enter().is_some());
        let unbounded = Bulkhead::new(None);
        let held: Vec<_> = (0..1000).filter_map(|_| unbounded.try_enter()).collect();
        assert_eq!(held.len(), 1000);
    }
}
