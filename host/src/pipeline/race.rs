//! [`Race`]: the attempts of one completion that are in flight at once,
//! and the timer that says when to hedge.
//!
//! Most of the time a race holds one attempt. A second one joins when the
//! first is slower than its upstream's hedge delay (a *hedge*), or when an
//! attempt fails while another is still running and the recovery plugin
//! sends the request elsewhere. The first good answer ends the race;
//! dropping the race drops the other attempts, which cancels their calls
//! (each records itself as a cancelled step when dropped, see
//! `guarded.rs`).

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use std::time::Instant;

/// An attempt that has ended: which plan entry it was for, whether it was a
/// hedge, and what it produced.
pub(super) struct Finished<T, E> {
    /// Index of the upstream in the plan.
    pub entry: usize,
    /// Whether it was sent as a hedge.
    pub hedge: bool,
    /// The answer, or why there is none.
    pub result: Result<T, E>,
}

/// What happened next in a race.
pub(super) enum Event<T, E> {
    /// An attempt ended.
    Finished(Finished<T, E>),
    /// The attempt on this plan entry has run past its hedge delay.
    Hedge(usize),
}

/// Attempts in flight, and at most one hedge timer.
pub(super) struct Race<T, E> {
    running: FuturesUnordered<BoxFuture<'static, Finished<T, E>>>,
    /// When to hedge, and the entry whose attempt would be hedged.
    hedge_at: Option<(Instant, usize)>,
}

impl<T, E> Race<T, E> {
    /// An empty race.
    pub(super) fn new() -> Self {
        Self {
            running: FuturesUnordered::new(),
            hedge_at: None,
        }
    }

    /// Adds an attempt.
    pub(super) fn push(&mut self, attempt: BoxFuture<'static, Finished<T, E>>) {
        self.running.push(attempt);
    }

    /// Attempts in flight.
    pub(super) fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether nothing is in flight.
    pub(super) fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Hedges `entry`'s attempt at `at` unless it ends first; replaces any
    /// earlier timer (only the newest attempt is hedged).
    pub(super) fn hedge_at(&mut self, at: Instant, entry: usize) {
        self.hedge_at = Some((at, entry));
    }

    /// Stops the hedge timer.
    pub(super) fn no_hedge(&mut self) {
        self.hedge_at = None;
    }

    /// The next event, or `None` when nothing is in flight (a timer alone
    /// does not keep a race going: there is nothing left to hedge).
    pub(super) async fn next(&mut self) -> Option<Event<T, E>> {
        if self.running.is_empty() {
            return None;
        }
        let timer = self.hedge_at;
        let fire = async move {
            match timer {
                Some((at, entry)) => {
                    tokio::time::sleep_until(at.into()).await;
                    entry
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // An answer that is ready wins over a timer that is due.
            biased;
            Some(done) = self.running.next() => {
                if self.hedge_at.is_some_and(|(_, entry)| entry == done.entry) {
                    self.hedge_at = None;
                }
                Some(Event::Finished(done))
            }
            entry = fire => {
                self.hedge_at = None;
                Some(Event::Hedge(entry))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::time::Duration;

    fn attempt(
        entry: usize,
        after_ms: u64,
        result: Result<u32, ()>,
    ) -> BoxFuture<'static, Finished<u32, ()>> {
        async move {
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            Finished {
                entry,
                hedge: false,
                result,
            }
        }
        .boxed()
    }

    #[tokio::test]
    async fn the_hedge_timer_fires_while_the_attempt_is_slow() {
        let mut race = Race::new();
        race.push(attempt(0, 60_000, Ok(1)));
        race.hedge_at(Instant::now() + Duration::from_millis(50), 0);
        assert!(matches!(race.next().await, Some(Event::Hedge(0))));
        race.push(attempt(1, 10, Ok(2)));
        match race.next().await {
            Some(Event::Finished(f)) => assert_eq!((f.entry, f.result), (1, Ok(2))),
            _ => panic!("the hedge answers first"),
        }
        assert_eq!(race.len(), 1, "the slow attempt is still running");
    }

    #[tokio::test]
    async fn an_attempt_that_ends_first_stops_its_timer() {
        let mut race = Race::new();
        race.push(attempt(0, 10, Err(())));
        race.hedge_at(Instant::now() + Duration::from_secs(60), 0);
        assert!(matches!(race.next().await, Some(Event::Finished(_))));
        assert!(race.is_empty());
        assert!(race.next().await.is_none(), "nothing left to hedge");
    }
}
