//! Agents in the pipeline: running an agent slot under the caller's
//! context, and the [`AgentHost`] through which agents call back in —
//! `llm.complete` onto the completion path, `agents.call` onto other slots.

use super::{Pipeline, PipelineError};
use crate::budget::Resource;
use crate::domain::{
    CallContext, Completion, CompletionRequest, Failure, Step, StepKind, Task, TaskResult,
};
use crate::runtime::AgentHost;
use futures::StreamExt;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

impl Pipeline {
    fn host(&self) -> Arc<dyn AgentHost> {
        Arc::new(PipelineHost(
            self.me
                .upgrade()
                .expect("a pipeline is only used through its Arc"),
        ))
    }

    /// Runs an agent slot in `inner`, a context that has already entered the
    /// agent (so depth, cycle and deadline guards were applied), and records
    /// the step for the caller.
    pub(super) async fn run_agent(
        &self,
        mut inner: CallContext,
        name: &str,
        task: Task,
    ) -> Result<TaskResult, PipelineError> {
        let slot = self
            .agent_slot(name)
            .ok_or_else(|| PipelineError::UnknownAgent(name.to_string()))?;
        // The call's own budget: what it does below draws from it and from
        // the request's.
        inner.budgets.call = Some(self.agent_meter(name));
        // `inner` has `name` on top of its chain; the step belongs to the caller below it.
        let depth = inner.chain.len().saturating_sub(1);
        let caller = if depth == 0 {
            "client".to_string()
        } else {
            inner.chain[depth - 1].clone()
        };
        let ledger = inner.ledger.clone();
        let started = Instant::now();
        let span = tracing::info_span!(
            "agent",
            otel.name = %format_args!("invoke_agent {name}"),
            otel.status_code = tracing::field::Empty,
            gen_ai.operation.name = "invoke_agent",
            gen_ai.agent.name = %name,
            agentrouter.caller = %caller,
            agentrouter.depth = depth,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let result = slot
            .plugin
            .handle(&task, inner, self.host())
            .instrument(span.clone())
            .await;
        let (usage, error) = match &result {
            Ok(Ok(r)) => (r.usage, None),
            Ok(Err(f)) => (Default::default(), Some(f.to_string())),
            Err(e) => (Default::default(), Some(e.to_string())),
        };
        span.record("gen_ai.usage.input_tokens", usage.prompt_tokens)
            .record("gen_ai.usage.output_tokens", usage.completion_tokens);
        if error.is_some() {
            span.record("otel.status_code", "ERROR")
                .record("error.type", "agent_failed");
        }
        ledger.push(Step {
            kind: StepKind::Agent,
            target: name.to_string(),
            upstream: None,
            caller,
            depth: depth as u32,
            latency_ms: started.elapsed().as_millis() as u64,
            usage,
            cost_usd: 0.0,
            ok: error.is_none(),
            error,
        });
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(failure)) => Err(PipelineError::Agent {
                agent: name.to_string(),
                failure,
            }),
            Err(e) => Err(e.into()),
        }
    }
}

/// The pipeline as seen by agent plugins: every effect an agent asks for
/// is checked against the host's rules and its budgets first.
struct PipelineHost(Arc<Pipeline>);

impl Pipeline {
    /// An agent's `llm.complete`, in `ctx` (the agent on top of its chain).
    async fn agent_completion(
        &self,
        ctx: CallContext,
        req: CompletionRequest,
    ) -> Result<Completion, Failure> {
        let target = if req.model.is_empty() {
            "-"
        } else {
            req.model.as_str()
        };
        if !req.model.is_empty() && !self.serves(&req.model) {
            return Err(Failure::Denied(format!(
                "model `{}` does not exist",
                req.model
            )));
        }
        if let Err(v) = self.settings.rules.check("messages", &req.messages) {
            let message = format!(
                "agent `{}` asked for a completion the host refuses: {v}",
                ctx.caller()
            );
            return Err(self.deny(&ctx, StepKind::Completion, target, "host", "rules", message));
        }
        // Tokens are known only afterwards: refuse once none are left.
        let admitted = ctx
            .budgets
            .check_left(Resource::Tokens)
            .and_then(|()| ctx.budgets.draw(Resource::LlmCalls, 1));
        if let Err(exceeded) = admitted {
            return Err(self.deny_budget(&ctx, StepKind::Completion, target, exceeded));
        }
        let span = Pipeline::completion_span(&ctx, &req.model);
        let completion = self
            .complete(&ctx, req)
            .instrument(span)
            .await
            .map_err(|e| e.to_failure())?;
        ctx.budgets
            .record(Resource::Tokens, u64::from(completion.usage.total()));
        Ok(completion)
    }

    /// An agent's delegation of `task` to `agent`, from `ctx` (the caller's
    /// context): guards, rules and budgets, then the agent.
    async fn delegate(
        &self,
        ctx: &CallContext,
        agent: String,
        task: Task,
    ) -> Result<TaskResult, Failure> {
        let child = ctx.enter(&agent)?;
        if let Err(v) = self.settings.rules.check("input", &task.input) {
            let message = format!(
                "agent `{}` delegated a task to `{agent}` that the host refuses: {v}",
                ctx.caller()
            );
            return Err(self.deny(ctx, StepKind::Agent, &agent, "host", "rules", message));
        }
        if let Err(exceeded) = ctx.budgets.draw(Resource::Delegations, 1) {
            return Err(self.deny_budget(ctx, StepKind::Agent, &agent, exceeded));
        }
        self.run_agent(child, &agent, task)
            .await
            .map_err(|e| e.to_failure())
    }

    /// An agent's `call-all`: at most `max_call_all_tasks` tasks run, at
    /// most `max_call_all_concurrency` at once; the rest are refused at
    /// once, without a plugin instance (one step records them all).
    async fn fan_out(
        &self,
        ctx: CallContext,
        calls: Vec<(String, Task)>,
    ) -> Vec<Result<TaskResult, Failure>> {
        let budget = self.settings.budgets.agent(ctx.caller());
        let (max_tasks, concurrency) = (budget.max_call_all_tasks, budget.max_call_all_concurrency);
        let total = calls.len();
        let mut results: Vec<Option<Result<TaskResult, Failure>>> = Vec::with_capacity(total);
        results.resize_with(total, || None);
        if total > max_tasks {
            let message = format!(
                "call-all of {total} tasks: only the first {max_tasks} run; agent `{}` may start {max_tasks} tasks per call-all ({}.max_call_all_tasks)",
                ctx.caller(),
                budget.table
            );
            let refused = self.deny(
                &ctx,
                StepKind::Agent,
                "call-all",
                "agent_call",
                "call_all_tasks",
                message,
            );
            for slot in &mut results[max_tasks..] {
                *slot = Some(Err(refused.clone()));
            }
        }
        let ctx = &ctx;
        let done: Vec<(usize, Result<TaskResult, Failure>)> =
            futures::stream::iter(calls.into_iter().take(max_tasks).enumerate().map(
                |(i, (agent, task))| async move { (i, self.delegate(ctx, agent, task).await) },
            ))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        for (i, result) in done {
            results[i] = Some(result);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Failure::Internal("call-all task lost".into()))))
            .collect()
    }
}

impl AgentHost for PipelineHost {
    fn complete(
        &self,
        ctx: CallContext,
        req: CompletionRequest,
    ) -> BoxFuture<'static, Result<Completion, Failure>> {
        let pipeline = self.0.clone();
        Box::pin(async move { pipeline.agent_completion(ctx, req).await })
    }

    fn call_agent(
        &self,
        ctx: CallContext,
        agent: String,
        task: Task,
    ) -> BoxFuture<'static, Result<TaskResult, Failure>> {
        let pipeline = self.0.clone();
        Box::pin(async move { pipeline.delegate(&ctx, agent, task).await })
    }

    fn call_all(
        &self,
        ctx: CallContext,
        calls: Vec<(String, Task)>,
    ) -> BoxFuture<'static, Vec<Result<TaskResult, Failure>>> {
        let pipeline = self.0.clone();
        Box::pin(async move { pipeline.fan_out(ctx, calls).await })
    }
}
