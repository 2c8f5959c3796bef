//! [`Plan`]: the state of one completion's way through its upstreams.
//!
//! The completion loop (`completion.rs`) is a plan over guarded attempts:
//! the plan knows the order to try upstreams in, which were tried, which
//! were full, how many attempts failed and whether the next attempt is a
//! retry (a second call to an upstream, whichever action led to it); the loop asks the recovery plugin what to do and [`Plan::apply`]
//! turns the answer into the next move — or into a reason to give up.

use super::guarded::GuardedUpstream;
use crate::domain::Action;
use std::sync::Arc;
use std::time::Instant;

/// Where a completion stands.
pub(super) struct Plan {
    /// Upstreams to try, in order: the routed ones, then (once added) the
    /// model's fallback chain.
    order: Vec<Arc<GuardedUpstream>>,
    /// Whether the fallback chain is in `order`.
    chained: bool,
    /// The upstream the next attempt goes to.
    current: Arc<GuardedUpstream>,
    /// Whether the next attempt repeats one (a retry or refinement).
    retrying: bool,
    /// Failed attempts (refusals by a full bulkhead are not attempts).
    attempts: u32,
    /// Upstreams attempted (or in flight), in first-attempt order.
    tried: Vec<String>,
    /// Upstreams found full.
    saturated: Vec<String>,
}

/// What to do after a failed attempt, once the recovery action is applied.
#[derive(Debug, PartialEq)]
pub(super) enum Move {
    /// Attempt `current` again (a retry or a refinement), after the caller's
    /// delay for a retry.
    Again,
    /// Attempt the (new) `current`.
    Next,
    /// Split the input and complete the chunks on `current`.
    Chunk(usize),
    /// Give up with the last failure; `true` raises an alert.
    GiveUp { alert: bool },
}

impl Plan {
    /// A plan over `order` (`chained`: the fallback chain is in it already);
    /// `None` when there is nothing to try.
    pub(super) fn new(order: Vec<Arc<GuardedUpstream>>, chained: bool) -> Option<Plan> {
        let current = order.first()?.clone();
        Some(Plan {
            order,
            chained,
            current,
            retrying: false,
            attempts: 0,
            tried: Vec::new(),
            saturated: Vec::new(),
        })
    }

    /// The upstream the next attempt goes to.
    pub(super) fn current(&self) -> &Arc<GuardedUpstream> {
        &self.current
    }

    /// Whether the next attempt repeats the last one.
    pub(super) fn retrying(&self) -> bool {
        self.retrying
    }

    /// Failed attempts so far.
    pub(super) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Where `current` is in [`Self::order`].
    pub(super) fn entry(&self) -> usize {
        self.order
            .iter()
            .position(|u| u.name() == self.current.name())
            .unwrap_or(0)
    }

    /// Makes `order[entry]` current, as a first attempt there (an attempt
    /// that ended is being dealt with, or a hedge is about to go there).
    pub(super) fn select(&mut self, entry: usize) {
        if let Some(upstream) = self.order.get(entry) {
            self.current = upstream.clone();
            self.retrying = false;
        }
    }

    /// Notes that an attempt on `current` is under way.
    pub(super) fn started(&mut self) {
        let name = self.current.name();
        if !self.tried.iter().any(|t| t == name) {
            self.tried.push(name.to_string());
        }
    }

    /// The first upstream (in plan order) that this request has not tried
    /// and that can take a call now: where a hedge goes, and where a
    /// request whose retry budget is spent is still served.
    pub(super) fn untried(&self, now: Instant) -> Option<usize> {
        self.order
            .iter()
            .position(|u| u.health().healthy(now) && !self.tried.iter().any(|t| t == u.name()))
    }

    /// Every upstream in the plan, in order.
    pub(super) fn order(&self) -> &[Arc<GuardedUpstream>] {
        &self.order
    }

    /// Whether the fallback chain has been added.
    pub(super) fn chained(&self) -> bool {
        self.chained
    }

    /// Adds the fallback chain's upstreams behind the others, once.
    pub(super) fn add_chain(&mut self, chain: Vec<Arc<GuardedUpstream>>) {
        for upstream in chain {
            if !self.order.iter().any(|u| u.name() == upstream.name()) {
                self.order.push(upstream);
            }
        }
        self.chained = true;
    }

    /// Puts upstreams that can take a call now first (keeping the order
    /// among each) and starts with the first: the chain's when the model's
    /// own are all down, another when the router's first is cooling down.
    pub(super) fn healthy_first(&mut self, now: Instant) {
        self.order.sort_by_key(|u| !u.health().healthy(now));
        self.current = self.order[0].clone();
    }

    /// `current` was full: moves to the first upstream not found full, or
    /// returns `false` when every one is.
    pub(super) fn skip_saturated(&mut self) -> bool {
        self.saturated.push(self.current.name().to_string());
        match self
            .order
            .iter()
            .find(|u| !self.saturated.iter().any(|s| s == u.name()))
        {
            Some(next) => {
                self.current = next.clone();
                self.retrying = false;
                true
            }
            None => false,
        }
    }

    /// Counts a failed attempt on `current`.
    pub(super) fn failed(&mut self) {
        self.attempts += 1;
        self.started();
    }

    /// Upstreams to offer the recovery plugin after `current` failed: those
    /// that can take a call now (breaker not open, no `Retry-After`
    /// pending, room in the bulkhead), untried ones first, in routed
    /// order, so that "fall back to the first alternative" makes progress
    /// and never goes where the host would refuse the call.
    pub(super) fn alternatives(&self, now: Instant) -> Vec<String> {
        let mut alternatives: Vec<(bool, &str)> = self
            .order
            .iter()
            .filter(|u| u.name() != self.current.name() && u.health().healthy(now))
            .map(|u| (self.tried.iter().any(|t| t == u.name()), u.name()))
            .collect();
        alternatives.sort_by_key(|(tried, _)| *tried);
        alternatives
            .into_iter()
            .map(|(_, name)| name.to_string())
            .collect()
    }

    /// Applies the recovery plugin's `action` to the plan. Retries and
    /// refinements repeat `current` (the caller checks the retry budget
    /// and waits); a fallback must name an upstream of the plan, and is a
    /// first attempt there — unless this request tried it already, which
    /// makes it a retry of that upstream, under its budget.
    pub(super) fn apply(&mut self, action: &Action) -> Move {
        match action {
            Action::Retry(_) => {
                self.retrying = true;
                Move::Again
            }
            Action::Refine(messages) if !messages.is_empty() => {
                self.retrying = true;
                Move::Again
            }
            Action::Refine(_) => Move::GiveUp { alert: false },
            Action::Fallback(name) => match self.order.iter().find(|u| u.name() == name) {
                Some(next) => {
                    self.current = next.clone();
                    self.retrying = self.tried.iter().any(|t| t == name);
                    if self.retrying {
                        Move::Again
                    } else {
                        Move::Next
                    }
                }
                None => {
                    tracing::warn!(upstream = %name, "recovery asked to fall back to an upstream that serves neither the model nor its fallback chain");
                    Move::GiveUp { alert: false }
                }
            },
            Action::ChunkAndRetry(max_chars) => Move::Chunk(*max_chars as usize),
            Action::Fail(alert) => Move::GiveUp { alert: *alert },
        }
    }
}
