//! [`Plan`]: the state of one completion's way through its upstreams.
//!
//! The completion loop (`completion.rs`) is a plan over guarded attempts:
//! the plan knows the order to try upstreams in, which were tried, which
//! were full, how many attempts were spent and whether the next attempt is
//! a retry; the loop asks the recovery plugin what to do and [`Plan::apply`]
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
    /// Attempts made (refusals by a full bulkhead are not attempts).
    attempts: u32,
    /// Upstreams attempted, in first-attempt order.
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

    /// Attempts made so far.
    pub(super) fn attempts(&self) -> u32 {
        self.attempts
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

    /// Puts healthy upstreams first (keeping the order among each) and
    /// starts with the first: the chain when the model's own are all down.
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
        let name = self.current.name();
        if !self.tried.iter().any(|t| t == name) {
            self.tried.push(name.to_string());
        }
    }

    /// Upstreams to offer the recovery plugin after `current` failed:
    /// untried healthy ones first, in routed order, then the rest, so that
    /// "fall back to the first alternative" makes progress.
    pub(super) fn alternatives(&self, now: Instant) -> Vec<String> {
        let mut alternatives: Vec<(bool, bool, &str)> = self
            .order
            .iter()
            .filter(|u| u.name() != self.current.name())
            .map(|u| {
                let name = u.name();
                (
                    !u.health().healthy(now),
                    self.tried.iter().any(|t| t == name),
                    name,
                )
            })
            .collect();
        alternatives.sort_by_key(|(unhealthy, tried, _)| (*unhealthy, *tried));
        alternatives
            .into_iter()
            .map(|(_, _, name)| name.to_string())
            .collect()
    }

    /// Applies the recovery plugin's `action` to the plan. Retries and
    /// refinements repeat `current` (the caller checks the retry budget
    /// and waits); a fallback must name an upstream of the plan.
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
                    self.retrying = false;
                    Move::Next
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
