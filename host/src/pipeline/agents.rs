//! Agents in the pipeline: running an agent slot under the caller's
//! context, and the [`AgentHost`] through which agents call back in —
//! `llm.complete` onto the completion path, `agents.call` onto other slots.

use super::{Pipeline, PipelineError};
use crate::domain::{
    CallContext, Completion, CompletionRequest, Failure, Step, StepKind, Task, TaskResult,
};
use crate::runtime::AgentHost;
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
        inner: CallContext,
        name: &str,
        task: Task,
    ) -> Result<TaskResult, PipelineError> {
        let slot = self
            .agent_slot(name)
            .ok_or_else(|| PipelineError::UnknownAgent(name.to_string()))?;
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

/// The pipeline as seen by agent plugins.
struct PipelineHost(Arc<Pipeline>);

impl AgentHost for PipelineHost {
    fn complete(
        &self,
        ctx: CallContext,
        req: CompletionRequest,
    ) -> BoxFuture<'static, Result<Completion, Failure>> {
        let pipeline = self.0.clone();
        Box::pin(async move {
            if !req.model.is_empty() && !pipeline.serves(&req.model) {
                return Err(Failure::Denied(format!(
                    "model `{}` does not exist",
                    req.model
                )));
            }
            let span = Pipeline::completion_span(&ctx, &req.model);
            pipeline
                .complete(&ctx, req)
                .instrument(span)
                .await
                .map_err(|e| e.to_failure())
        })
    }

    fn call_agent(
        &self,
        ctx: CallContext,
        agent: String,
        task: Task,
    ) -> BoxFuture<'static, Result<TaskResult, Failure>> {
        let pipeline = self.0.clone();
        Box::pin(async move {
            // The runtime already entered `agent` (depth, cycle and deadline
            // guards) before the call left the sandbox.
            pipeline
                .run_agent(ctx, &agent, task)
                .await
                .map_err(|e| e.to_failure())
        })
    }
}
