//! Budgets: how much a request, and each agent call inside it, may make the
//! host do on its behalf.
//!
//! A [`Meter`] counts one scope's use of each [`Resource`] against its
//! limits; a request has one, and every agent call has one of its own. A
//! host-mediated effect (an `llm.complete`, a delegation, a plugin instance
//! — and, with contract 0.2, an outbound request or a tool call) draws from
//! every scope it happens in through [`Budgets::draw`] or
//! [`Budgets::hold`], all or nothing, so an effect is either admitted by the
//! agent call *and* the request or refused with an [`Exceeded`] naming the
//! scope, the resource and the config key that bounds it. New effects add a
//! [`Resource`] variant; the mechanism does not change.
//!
//! Counting is lock-free (one atomic per resource and scope), so a budget
//! check costs a few nanoseconds on paths that run per LLM call.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Something a plugin can make the host spend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `llm.complete` calls.
    LlmCalls,
    /// Tokens of completions (prompt and completion).
    Tokens,
    /// Agents started through `agents.call` or `agents.call-all`.
    Delegations,
    /// Plugin instances held at once (the request's share of the pool).
    PluginInstances,
    /// Wall time during which effects are admitted.
    WallTime,
}

impl Resource {
    /// Every resource, in index order.
    pub const ALL: [Resource; 5] = [
        Resource::LlmCalls,
        Resource::Tokens,
        Resource::Delegations,
        Resource::PluginInstances,
        Resource::WallTime,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// Short stable name, for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::LlmCalls => "llm_calls",
            Resource::Tokens => "tokens",
            Resource::Delegations => "delegations",
            Resource::PluginInstances => "plugin_instances",
            Resource::WallTime => "wall_time",
        }
    }

    /// The config key that bounds it, within a budget table.
    pub fn key(self) -> &'static str {
        match self {
            Resource::LlmCalls => "max_llm_calls",
            Resource::Tokens => "max_tokens",
            Resource::Delegations => "max_delegations",
            Resource::PluginInstances => "max_plugin_instances",
            Resource::WallTime => "max_wall_ms",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Resource::LlmCalls => "LLM calls",
            Resource::Tokens => "tokens",
            Resource::Delegations => "delegations",
            Resource::PluginInstances => "plugin instances at once",
            Resource::WallTime => "ms",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whose budget a meter is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The whole request, every nesting level together.
    Request,
    /// One call of an agent slot.
    AgentCall(String),
}

impl Scope {
    /// `request` or `agent_call`, for metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Request => "request",
            Scope::AgentCall(_) => "agent_call",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Request => f.write_str("the request"),
            Scope::AgentCall(agent) => write!(f, "this call of agent `{agent}`"),
        }
    }
}

/// A refused effect: which budget, which resource, how much of it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "budget exceeded: {scope} may use {allowed} {unit} and has used {used} ({key})",
    unit = resource.unit()
)]
pub struct Exceeded {
    /// The scope whose budget is spent.
    pub scope: Scope,
    /// The resource.
    pub resource: Resource,
    /// What was used when the effect was refused.
    pub used: u64,
    /// The limit.
    pub allowed: u64,
    /// The config key that sets the limit, e.g. `budgets.request.max_llm_calls`.
    pub key: String,
}

/// Limits of one scope: `None` is unbounded. Indexed by [`Resource`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits([Option<u64>; 5]);

impl Limits {
    /// No limits at all.
    pub const UNLIMITED: Limits = Limits([None; 5]);

    /// These limits with `resource` bounded by `limit`.
    pub fn with(mut self, resource: Resource, limit: Option<u64>) -> Limits {
        self.0[resource.index()] = limit;
        self
    }

    /// The limit of `resource`.
    pub fn get(&self, resource: Resource) -> Option<u64> {
        self.0[resource.index()]
    }
}

/// One scope's use of every resource, against its limits.
#[derive(Debug)]
pub struct Meter {
    scope: Scope,
    /// The table its limits come from, for messages (`budgets.request`).
    table: String,
    limits: Limits,
    used: [AtomicU64; 5],
    started: Instant,
}

impl Meter {
    /// A meter for `scope` starting now, with `limits` read from config
    /// table `table`.
    pub fn new(scope: Scope, table: impl Into<String>, limits: Limits) -> Arc<Meter> {
        Arc::new(Meter {
            scope,
            table: table.into(),
            limits,
            used: Default::default(),
            started: Instant::now(),
        })
    }

    /// A meter that never refuses.
    pub fn unlimited(scope: Scope) -> Arc<Meter> {
        Self::new(scope, "-", Limits::UNLIMITED)
    }

    /// Whose budget it is.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// What has been used of `resource` (for [`Resource::WallTime`]: the
    /// milliseconds since the scope started).
    pub fn used(&self, resource: Resource) -> u64 {
        match resource {
            Resource::WallTime => self.started.elapsed().as_millis() as u64,
            r => self.used[r.index()].load(Ordering::Relaxed),
        }
    }

    /// How much of `resource` is left (`None`: unbounded).
    pub fn remaining(&self, resource: Resource) -> Option<u64> {
        self.limits
            .get(resource)
            .map(|limit| limit.saturating_sub(self.used(resource)))
    }

    /// When effects stop being admitted, if the scope has a wall budget.
    pub fn wall_deadline(&self) -> Option<Instant> {
        self.limits
            .get(Resource::WallTime)
            .map(|ms| self.started + Duration::from_millis(ms))
    }

    fn exceeded(&self, resource: Resource, used: u64, allowed: u64) -> Exceeded {
        Exceeded {
            scope: self.scope.clone(),
            resource,
            used,
            allowed,
            key: format!("{}.{}", self.table, resource.key()),
        }
    }

    /// Takes `n` of `resource`, or refuses without taking anything when that
    /// would go past the limit.
    fn take(&self, resource: Resource, n: u64) -> Result<(), Exceeded> {
        let counter = &self.used[resource.index()];
        let Some(allowed) = self.limits.get(resource) else {
            counter.fetch_add(n, Ordering::Relaxed);
            return Ok(());
        };
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= allowed)
            })
            .map(|_| ())
            .map_err(|used| self.exceeded(resource, used, allowed))
    }

    /// Refuses when `resource` is already used up (at or past its limit).
    fn check_left(&self, resource: Resource) -> Result<(), Exceeded> {
        match self.limits.get(resource) {
            Some(allowed) if self.used(resource) >= allowed => {
                Err(self.exceeded(resource, self.used(resource), allowed))
            }
            _ => Ok(()),
        }
    }

    fn give_back(&self, resource: Resource, n: u64) {
        let _ =
            self.used[resource.index()].fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            });
    }

    fn add(&self, resource: Resource, n: u64) {
        self.used[resource.index()].fetch_add(n, Ordering::Relaxed);
    }
}

/// The budgets an effect draws from: the request's and, inside an agent,
/// the agent call's. Cloning shares the meters.
#[derive(Clone, Debug)]
pub struct Budgets {
    /// The request's meter.
    pub request: Arc<Meter>,
    /// The meter of the agent call on top of the chain, if any.
    pub call: Option<Arc<Meter>>,
}

impl Default for Budgets {
    /// A request without limits (tests, `agentrouter check`).
    fn default() -> Self {
        Budgets {
            request: Meter::unlimited(Scope::Request),
            call: None,
        }
    }
}

impl Budgets {
    /// Budgets of a request with these limits.
    pub fn for_request(limits: Limits) -> Budgets {
        Budgets {
            request: Meter::new(Scope::Request, "budgets.request", limits),
            call: None,
        }
    }

    /// Every meter, innermost first.
    fn meters(&self) -> impl Iterator<Item = &Arc<Meter>> {
        self.call.iter().chain(std::iter::once(&self.request))
    }

    /// Refuses when a wall budget is spent: no effect starts after it.
    pub fn check_wall(&self) -> Result<(), Exceeded> {
        let now = Instant::now();
        for meter in self.meters() {
            if let Some(deadline) = meter.wall_deadline()
                && now >= deadline
            {
                let allowed = meter.limits.get(Resource::WallTime).unwrap_or(0);
                return Err(meter.exceeded(
                    Resource::WallTime,
                    meter.used(Resource::WallTime),
                    allowed,
                ));
            }
        }
        Ok(())
    }

    /// Fresh meters with the same limits, for work that must not spend
    /// this request's budget (a shadow call).
    pub fn fresh(&self) -> Budgets {
        let copy = |m: &Meter| Meter::new(m.scope.clone(), m.table.clone(), m.limits);
        Budgets {
            request: copy(&self.request),
            call: self.call.as_deref().map(copy),
        }
    }

    /// Takes `n` of `resource` from every scope, or from none: a refusal
    /// by the request gives back what the agent call had taken. Also
    /// refuses once a wall budget is spent.
    pub fn draw(&self, resource: Resource, n: u64) -> Result<(), Exceeded> {
        self.check_wall()?;
        let mut taken: Vec<&Arc<Meter>> = Vec::with_capacity(2);
        for meter in self.meters() {
            if let Err(e) = meter.take(resource, n) {
                for m in taken {
                    m.give_back(resource, n);
                }
                return Err(e);
            }
            taken.push(meter);
        }
        Ok(())
    }

    /// Refuses when any scope has nothing left of `resource` (for amounts
    /// known only afterwards, like tokens), or a wall budget is spent.
    pub fn check_left(&self, resource: Resource) -> Result<(), Exceeded> {
        self.check_wall()?;
        self.meters().try_for_each(|m| m.check_left(resource))
    }

    /// Adds `n` of `resource` used, to every scope (tokens, once a
    /// completion reports them). May go past a limit: the next
    /// [`check_left`](Self::check_left) refuses.
    pub fn record(&self, resource: Resource, n: u64) {
        for meter in self.meters() {
            meter.add(resource, n);
        }
    }

    /// The least left of `resource` over every scope (`None`: unbounded).
    pub fn remaining(&self, resource: Resource) -> Option<u64> {
        self.meters().filter_map(|m| m.remaining(resource)).min()
    }

    /// Holds one unit of `resource` (a concurrent resource, like plugin
    /// instances) in the request's scope until the [`Hold`] drops.
    pub fn hold(&self, resource: Resource) -> Result<Hold, Exceeded> {
        self.request.take(resource, 1)?;
        Ok(Hold {
            meter: self.request.clone(),
            resource,
        })
    }
}

/// One unit of a concurrent resource, given back on drop.
#[derive(Debug)]
pub struct Hold {
    meter: Arc<Meter>,
    resource: Resource,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.meter.give_back(self.resource, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(limits: Limits) -> Arc<Meter> {
        Meter::new(Scope::AgentCall("a".into()), "plugins.a.budget", limits)
    }

    #[test]
    fn draws_from_every_scope_or_none() {
        let mut b = Budgets::for_request(Limits::UNLIMITED.with(Resource::LlmCalls, Some(3)));
        b.call = Some(agent(Limits::UNLIMITED.with(Resource::LlmCalls, Some(2))));
        b.draw(Resource::LlmCalls, 1).unwrap();
        b.draw(Resource::LlmCalls, 1).unwrap();
        let e = b.draw(Resource::LlmCalls, 1).unwrap_err();
        assert_eq!(e.scope, Scope::AgentCall("a".into()));
        assert_eq!(e.key, "plugins.a.budget.max_llm_calls");
        assert!(
            e.to_string().contains("may use 2 LLM calls and has used 2"),
            "{e}"
        );
        // A second agent call in the same request: the request refuses, and
        // the agent call's draw is given back.
        let mut other = b.clone();
        other.call = Some(agent(Limits::UNLIMITED.with(Resource::LlmCalls, Some(5))));
        other.draw(Resource::LlmCalls, 1).unwrap();
        let e = other.draw(Resource::LlmCalls, 1).unwrap_err();
        assert_eq!(e.scope, Scope::Request);
        assert_eq!(e.key, "budgets.request.max_llm_calls");
        assert_eq!(other.call.as_ref().unwrap().used(Resource::LlmCalls), 1);
    }

    #[test]
    fn tokens_are_checked_before_and_recorded_after() {
        let b = Budgets::for_request(Limits::UNLIMITED.with(Resource::Tokens, Some(100)));
        b.check_left(Resource::Tokens).unwrap();
        b.record(Resource::Tokens, 150);
        assert_eq!(b.remaining(Resource::Tokens), Some(0));
        assert!(b.check_left(Resource::Tokens).is_err());
    }

    #[test]
    fn holds_are_given_back_and_wall_time_stops_effects() {
        let b = Budgets::for_request(
            Limits::UNLIMITED
                .with(Resource::PluginInstances, Some(1))
                .with(Resource::WallTime, Some(0)),
        );
        let hold = b.hold(Resource::PluginInstances).unwrap();
        assert!(b.hold(Resource::PluginInstances).is_err());
        drop(hold);
        assert!(b.hold(Resource::PluginInstances).is_ok());
        let e = b.draw(Resource::LlmCalls, 1).unwrap_err();
        assert_eq!(e.resource, Resource::WallTime);
    }
}
