//! What agents may make the host do: the `[budgets]` table, per-slot
//! overrides, and how a refused effect is recorded.
//!
//! Two scopes bound every host-mediated effect of an agent (see
//! [`crate::budget`]): the **agent call** (one `handle` of one slot: its own
//! LLM calls, tokens, delegations, the wall time during which it may start
//! effects, and the size and concurrency of its `call-all` fan-outs) and the
//! **request** (everything every agent in it does together, and its share
//! of the plugin instance pool). A refused effect is a typed `denied`
//! result to the agent — it can still answer with what it has — and a step
//! in the request's ledger, a metric and a log line.

use super::Pipeline;
use crate::budget::{Budgets, Exceeded, Limits, Meter, Resource, Scope};
use crate::domain::{CallContext, Failure, Step, StepKind};
use crate::telemetry::metrics::BudgetLabels;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// Default `budgets.request.max_llm_calls`.
pub const DEFAULT_REQUEST_LLM_CALLS: u64 = 256;
/// Default `budgets.request.max_tokens`.
pub const DEFAULT_REQUEST_TOKENS: u64 = 1_000_000;
/// Default `budgets.request.max_delegations`.
pub const DEFAULT_REQUEST_DELEGATIONS: u64 = 256;
/// Default `budgets.agent_call.max_llm_calls`.
pub const DEFAULT_CALL_LLM_CALLS: u64 = 64;
/// Default `budgets.agent_call.max_tokens`.
pub const DEFAULT_CALL_TOKENS: u64 = 250_000;
/// Default `budgets.agent_call.max_delegations`.
pub const DEFAULT_CALL_DELEGATIONS: u64 = 64;
/// Default `budgets.agent_call.max_call_all_tasks`.
pub const DEFAULT_CALL_ALL_TASKS: u32 = 64;
/// Default `budgets.agent_call.max_call_all_concurrency`.
pub const DEFAULT_CALL_ALL_CONCURRENCY: u32 = 8;

/// `[budgets]`: defaults for every request and every agent call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetsConfig {
    /// `[budgets.request]`: one request, every nesting level together.
    pub request: RequestBudget,
    /// `[budgets.agent_call]`: one call of an agent slot, unless the slot's
    /// `[plugins.<slot>.budget]` overrides it.
    pub agent_call: AgentCallBudget,
}

/// `[budgets.request]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestBudget {
    /// `llm.complete` calls of every agent in the request.
    pub max_llm_calls: u64,
    /// Tokens of those completions (prompt and completion).
    pub max_tokens: u64,
    /// Agents started by agents (`agents.call`, each `call-all` task).
    pub max_delegations: u64,
    /// Time after the request starts during which agents may start
    /// effects; `server.request_timeout_ms` bounds the request anyway.
    pub max_wall_ms: Option<u64>,
    /// Plugin instances the request may hold at once (its share of
    /// `runtime.pool_instances`); a quarter of the pool when absent.
    pub max_plugin_instances: Option<u32>,
}

impl Default for RequestBudget {
    fn default() -> Self {
        Self {
            max_llm_calls: DEFAULT_REQUEST_LLM_CALLS,
            max_tokens: DEFAULT_REQUEST_TOKENS,
            max_delegations: DEFAULT_REQUEST_DELEGATIONS,
            max_wall_ms: None,
            max_plugin_instances: None,
        }
    }
}

/// `[budgets.agent_call]`: the default budget of one agent call.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentCallBudget {
    /// `llm.complete` calls.
    pub max_llm_calls: u64,
    /// Tokens of those completions.
    pub max_tokens: u64,
    /// Agents it starts (`agents.call`, each `call-all` task).
    pub max_delegations: u64,
    /// Time after the call starts during which it may start effects (an
    /// effect in flight then is not cut); the slot's `limits.timeout_ms`
    /// still ends the call.
    pub max_wall_ms: Option<u64>,
    /// Tasks one `call-all` may run; the rest get a `denied` result at once.
    pub max_call_all_tasks: u32,
    /// Tasks of one `call-all` running at once.
    pub max_call_all_concurrency: u32,
}

impl Default for AgentCallBudget {
    fn default() -> Self {
        Self {
            max_llm_calls: DEFAULT_CALL_LLM_CALLS,
            max_tokens: DEFAULT_CALL_TOKENS,
            max_delegations: DEFAULT_CALL_DELEGATIONS,
            max_wall_ms: None,
            max_call_all_tasks: DEFAULT_CALL_ALL_TASKS,
            max_call_all_concurrency: DEFAULT_CALL_ALL_CONCURRENCY,
        }
    }
}

/// `[plugins.<slot>.budget]`: an agent slot's overrides of
/// `[budgets.agent_call]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentBudgetOverrides {
    /// See [`AgentCallBudget::max_llm_calls`].
    pub max_llm_calls: Option<u64>,
    /// See [`AgentCallBudget::max_tokens`].
    pub max_tokens: Option<u64>,
    /// See [`AgentCallBudget::max_delegations`].
    pub max_delegations: Option<u64>,
    /// See [`AgentCallBudget::max_wall_ms`].
    pub max_wall_ms: Option<u64>,
    /// See [`AgentCallBudget::max_call_all_tasks`].
    pub max_call_all_tasks: Option<u32>,
    /// See [`AgentCallBudget::max_call_all_concurrency`].
    pub max_call_all_concurrency: Option<u32>,
}

impl AgentBudgetOverrides {
    /// Whether it overrides anything.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// These overrides over `base`.
    pub fn merge(&self, base: &AgentCallBudget) -> AgentCallBudget {
        AgentCallBudget {
            max_llm_calls: self.max_llm_calls.unwrap_or(base.max_llm_calls),
            max_tokens: self.max_tokens.unwrap_or(base.max_tokens),
            max_delegations: self.max_delegations.unwrap_or(base.max_delegations),
            max_wall_ms: self.max_wall_ms.or(base.max_wall_ms),
            max_call_all_tasks: self.max_call_all_tasks.unwrap_or(base.max_call_all_tasks),
            max_call_all_concurrency: self
                .max_call_all_concurrency
                .unwrap_or(base.max_call_all_concurrency),
        }
    }
}

/// One agent slot's budget, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentBudget {
    /// Limits of one call.
    pub limits: Limits,
    /// Tasks one `call-all` may run.
    pub max_call_all_tasks: usize,
    /// Tasks of one `call-all` running at once.
    pub max_call_all_concurrency: usize,
    /// The table the limits come from (`plugins.<slot>.budget` or
    /// `budgets.agent_call`), named in refusals.
    pub table: String,
}

impl AgentBudget {
    /// The resolved form of `budget`, read from table `table`.
    pub fn new(budget: &AgentCallBudget, table: impl Into<String>) -> AgentBudget {
        AgentBudget {
            limits: Limits::UNLIMITED
                .with(Resource::LlmCalls, Some(budget.max_llm_calls))
                .with(Resource::Tokens, Some(budget.max_tokens))
                .with(Resource::Delegations, Some(budget.max_delegations))
                .with(Resource::WallTime, budget.max_wall_ms),
            max_call_all_tasks: budget.max_call_all_tasks as usize,
            max_call_all_concurrency: budget.max_call_all_concurrency.max(1) as usize,
            table: table.into(),
        }
    }
}

/// Every budget of a pipeline, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetSettings {
    /// Limits of one request.
    pub request: Limits,
    /// Agent slots with a budget of their own.
    pub agents: HashMap<String, AgentBudget>,
    /// Every other agent slot's.
    pub agent_default: AgentBudget,
}

impl Default for BudgetSettings {
    /// The defaults, with a request share of 64 instances (a quarter of
    /// the default pool).
    fn default() -> Self {
        Self::new(&BudgetsConfig::default(), &HashMap::new(), 64)
    }
}

impl BudgetSettings {
    /// Resolves `[budgets]` and the slots' overrides; `share` is the
    /// request's share of the instance pool.
    pub fn new(
        config: &BudgetsConfig,
        overrides: &HashMap<String, AgentBudgetOverrides>,
        share: u32,
    ) -> BudgetSettings {
        let r = &config.request;
        BudgetSettings {
            request: Limits::UNLIMITED
                .with(Resource::LlmCalls, Some(r.max_llm_calls))
                .with(Resource::Tokens, Some(r.max_tokens))
                .with(Resource::Delegations, Some(r.max_delegations))
                .with(Resource::WallTime, r.max_wall_ms)
                .with(Resource::PluginInstances, Some(u64::from(share))),
            agents: overrides
                .iter()
                .filter(|(_, o)| !o.is_empty())
                .map(|(slot, o)| {
                    let budget = o.merge(&config.agent_call);
                    (
                        slot.clone(),
                        AgentBudget::new(&budget, format!("plugins.{slot}.budget")),
                    )
                })
                .collect(),
            agent_default: AgentBudget::new(&config.agent_call, "budgets.agent_call"),
        }
    }

    /// The budget of agent slot `slot`.
    pub fn agent(&self, slot: &str) -> &AgentBudget {
        self.agents.get(slot).unwrap_or(&self.agent_default)
    }
}

impl Pipeline {
    /// Fresh budgets for a request.
    pub fn request_budgets(&self) -> Budgets {
        Budgets::for_request(self.settings.budgets.request)
    }

    /// A meter for one call of agent slot `slot`, starting now.
    pub(super) fn agent_meter(&self, slot: &str) -> Arc<Meter> {
        let budget = self.settings.budgets.agent(slot);
        Meter::new(
            Scope::AgentCall(slot.to_string()),
            budget.table.clone(),
            budget.limits,
        )
    }

    /// Records an effect the host refused to the agent on top of `ctx` — a
    /// step in the request's ledger, a metric, a log line — and returns the
    /// `denied` failure the agent gets.
    pub(super) fn deny(
        &self,
        ctx: &CallContext,
        kind: StepKind,
        target: &str,
        scope: &str,
        resource: &str,
        message: String,
    ) -> Failure {
        let agent = ctx.caller().to_string();
        tracing::warn!(
            request_id = %ctx.request_id,
            agent = %agent,
            scope,
            resource,
            "{message}"
        );
        self.metrics()
            .budget_denials
            .get_or_create(&BudgetLabels {
                agent: agent.clone(),
                scope: scope.to_string(),
                resource: resource.to_string(),
            })
            .inc();
        let failure = Failure::Denied(message);
        ctx.ledger.push(Step {
            kind,
            target: target.to_string(),
            upstream: None,
            caller: agent,
            depth: ctx.chain.len() as u32,
            latency_ms: 0,
            usage: Default::default(),
            cost_usd: 0.0,
            ok: false,
            error: Some(failure.to_string()),
        });
        failure
    }

    /// [`Pipeline::deny`] for a spent budget.
    pub(super) fn deny_budget(
        &self,
        ctx: &CallContext,
        kind: StepKind,
        target: &str,
        exceeded: Exceeded,
    ) -> Failure {
        let (scope, resource) = (exceeded.scope.as_str(), exceeded.resource.as_str());
        self.deny(ctx, kind, target, scope, resource, exceeded.to_string())
    }
}
