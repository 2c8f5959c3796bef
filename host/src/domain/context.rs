//! Who is calling and what a request has used: the [`CallContext`] every
//! nested call carries, and the request's one [`Ledger`] of steps.

use super::{Failure, Usage};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Default bound on nested agent calls.
pub const DEFAULT_MAX_DEPTH: u32 = 4;

/// What a step was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// An upstream completion (one attempt).
    Completion,
    /// A delegation to an agent.
    Agent,
    /// An upstream embeddings call (one attempt).
    Embedding,
}

/// One completion or delegation made while serving a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// A completion or an agent delegation.
    pub kind: StepKind,
    /// The model (for completions) or agent (for delegations).
    pub target: String,
    /// The upstream that served a completion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Who made the call: the agent on top of the chain, or `client`.
    pub caller: String,
    /// Nesting depth (0 = made for the client directly).
    pub depth: u32,
    /// Wall-clock time of the step.
    pub latency_ms: u64,
    /// Tokens used (for an agent: everything below it).
    pub usage: Usage,
    /// Cost of a completion in USD (agents: 0, their completions are steps too).
    pub cost_usd: f64,
    /// Whether it succeeded.
    pub ok: bool,
    /// The failure, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The one ledger of a request: every step made for it, across all nesting
/// levels, from which its usage and cost are read. Shared (cloning shares),
/// append-only.
///
/// It is the only record of what a request used: the request log line, the
/// `/invoke` steps, the cost header and the key's spend all read it, so they
/// can never disagree.
#[derive(Clone, Debug, Default)]
pub struct Ledger(std::sync::Arc<std::sync::Mutex<Vec<Step>>>);

impl Ledger {
    /// Appends a step.
    pub fn push(&self, step: Step) {
        self.with(|steps| steps.push(step));
    }

    fn with<R>(&self, f: impl FnOnce(&mut Vec<Step>) -> R) -> R {
        // A panic while holding the lock cannot leave a step half-written.
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A copy of the steps so far.
    pub fn steps(&self) -> Vec<Step> {
        self.with(|steps| steps.clone())
    }

    /// Tokens of the completions recorded (an agent step's usage is the sum
    /// of completions that are steps too, so agents are not added again).
    pub fn usage(&self) -> Usage {
        self.with(|steps| {
            steps
                .iter()
                .filter(|s| s.kind == StepKind::Completion)
                .fold(Usage::default(), |total, s| total.plus(s.usage))
        })
    }

    /// Total cost of the completions recorded, USD.
    pub fn cost_usd(&self) -> f64 {
        self.with(|steps| steps.iter().map(|s| s.cost_usd).sum())
    }
}

/// Who is calling and under which bounds; travels with every nested call.
///
/// An agent's `llm.complete` and `agents.call` run with the caller's identity,
/// deadline and depth, so a delegation chain can never outlive or outgrow the
/// request that started it.
#[derive(Clone, Debug)]
pub struct CallContext {
    /// Client identity (API key id, or `anonymous`).
    pub client: String,
    /// The end user the client acts for (OpenAI's `user` field), if given.
    pub end_user: Option<String>,
    /// Request id for correlation.
    pub request_id: String,
    /// When the whole request must be done.
    pub deadline: Instant,
    /// Agents on the current call path, outermost first.
    pub chain: Vec<String>,
    /// Bound on `chain.len()`.
    pub max_depth: u32,
    /// The request's ledger: every step made for it, across all nesting levels.
    pub ledger: Ledger,
    /// What the request, and the agent call on top of the chain, may still
    /// make the host do (see [`crate::budget`]).
    pub budgets: crate::budget::Budgets,
}

impl CallContext {
    /// A root context for a request.
    pub fn new(client: impl Into<String>, request_id: impl Into<String>, budget: Duration) -> Self {
        Self {
            client: client.into(),
            end_user: None,
            request_id: request_id.into(),
            deadline: Instant::now() + budget,
            chain: Vec::new(),
            max_depth: DEFAULT_MAX_DEPTH,
            ledger: Ledger::default(),
            budgets: crate::budget::Budgets::default(),
        }
    }

    /// A copy for work that must not show in, or spend from, this request
    /// (a shadow call): a ledger and budgets of its own.
    pub fn detached(&self) -> CallContext {
        let mut ctx = self.clone();
        ctx.ledger = Ledger::default();
        ctx.budgets = self.budgets.fresh();
        ctx
    }

    /// Who this request is for, as one stable key: the client identity and,
    /// when the request names one, its end user. A/B rollouts assign arms by
    /// it, so one user keeps seeing one version.
    pub fn sticky_key(&self) -> String {
        match &self.end_user {
            Some(user) => format!("{}\n{user}", self.client),
            None => self.client.clone(),
        }
    }

    /// The agent making calls in this context, or `client` at the top.
    pub fn caller(&self) -> &str {
        self.chain.last().map(String::as_str).unwrap_or("client")
    }

    /// Time left before the deadline (zero when passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The context for calling `agent` from here, refused when it would
    /// exceed the depth limit, revisit an agent already on the path, or start
    /// after the deadline.
    pub fn enter(&self, agent: &str) -> Result<CallContext, Failure> {
        if self.chain.iter().any(|a| a == agent) {
            let path = self.chain.join(" → ");
            return Err(Failure::Denied(format!("agent cycle: {path} → {agent}")));
        }
        if self.chain.len() as u32 >= self.max_depth {
            return Err(Failure::Denied(format!(
                "agent depth limit {} reached calling `{agent}` from {}",
                self.max_depth,
                self.chain.join(" → ")
            )));
        }
        if self.remaining().is_zero() {
            return Err(Failure::Timeout);
        }
        let mut child = self.clone();
        child.chain.push(agent.to_string());
        Ok(child)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_context_refuses_cycles_and_excess_depth() {
        let root = CallContext::new("c", "r", Duration::from_secs(5));
        let a = root.enter("a").unwrap();
        let b = a.enter("b").unwrap();
        assert!(matches!(b.enter("a"), Err(Failure::Denied(m)) if m.contains("a → b → a")));
        let c = b.enter("c").unwrap().enter("d").unwrap();
        assert!(matches!(c.enter("e"), Err(Failure::Denied(m)) if m.contains("depth limit 4")));
    }

    #[test]
    fn call_context_refuses_after_deadline() {
        let root = CallContext::new("c", "r", Duration::ZERO);
        assert_eq!(root.enter("a").unwrap_err(), Failure::Timeout);
    }
}
