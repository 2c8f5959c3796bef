//! Single-flight: concurrent identical misses make one upstream call.
//!
//! The first miss for a key becomes the *leader* and computes the answer;
//! misses arriving meanwhile become *followers* and wait for it. Followers
//! subscribe while holding the map's lock and the leader publishes while
//! holding it, so no follower can miss the answer. A leader that fails, or
//! whose request is dropped (client gone), publishes nothing: its followers
//! wake up and race again, one of them becoming the next leader — a failure
//! is never shared, so each client gets its own attempt and its own error.

use super::{CacheKey, CachedAnswer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

type Answer = Option<Arc<CachedAnswer>>;

/// The keys being computed right now.
#[derive(Default)]
pub(crate) struct Flights {
    in_flight: Mutex<HashMap<CacheKey, broadcast::Sender<Answer>>>,
}

/// The role of a request in a flight.
pub(crate) enum Join {
    /// Compute the answer, then [`Leader::finish`].
    Leader(Leader),
    /// Wait for the leader's answer.
    Follower(broadcast::Receiver<Answer>),
}

impl Flights {
    /// Joins the flight for `key`, starting it when there is none.
    pub(crate) fn join(self: &Arc<Self>, key: CacheKey) -> Join {
        let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = map.get(&key) {
            return Join::Follower(tx.subscribe());
        }
        let (tx, _) = broadcast::channel(1);
        map.insert(key, tx);
        Join::Leader(Leader {
            flights: self.clone(),
            key,
            done: false,
        })
    }

    /// Followers waiting on `key`.
    #[cfg(test)]
    pub(crate) fn waiting(&self, key: &CacheKey) -> usize {
        let map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).map_or(0, |tx| tx.receiver_count())
    }

    fn end(&self, key: &CacheKey, answer: Answer) {
        let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = map.remove(key)
            && answer.is_some()
        {
            // No receivers is fine: nobody was waiting.
            let _ = tx.send(answer);
        }
    }
}

/// The request computing a key's answer; dropping it without
/// [`Leader::finish`] releases the followers to try themselves.
pub(crate) struct Leader {
    flights: Arc<Flights>,
    key: CacheKey,
    done: bool,
}

impl Leader {
    /// Publishes the answer (or `None` after a failure) and ends the flight.
    pub(crate) fn finish(mut self, answer: Answer) {
        self.done = true;
        self.flights.end(&self.key, answer);
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if !self.done {
            self.flights.end(&self.key, None);
        }
    }
}
