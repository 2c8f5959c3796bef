//! Responses passed through to upstreams that speak the API themselves
//! (`serves = ["responses"]`): the upstreams of the model that declare it,
//! in configured order, then those of its fallback models, each tried once
//! through its guards, every attempt a step in the request's ledger.
//!
//! The request is the client's, as sent, so the validators, the router and
//! the recovery plugin — which speak conversations in the chat shape — are
//! not consulted (docs/openai-api.md says so).

use super::guarded::AttemptError;
use super::{GuardedUpstream, Pipeline, PipelineError};
use crate::domain::{CallContext, Endpoint, Failure};
use crate::upstream::ResponsesReply;
use serde_json::Value;
use std::sync::Arc;

impl Pipeline {
    /// Whether an upstream speaks the Responses API for `model`.
    pub fn speaks_responses(&self, model: &str) -> bool {
        !self.responders(model).is_empty()
    }

    fn responders(&self, model: &str) -> Vec<Arc<GuardedUpstream>> {
        self.upstreams
            .iter()
            .filter(|u| u.info().model == model && u.info().serves(Endpoint::Responses))
            .cloned()
            .collect()
    }

    /// Passes the Responses request `body` for `model` through: the first
    /// upstream that answers; at most `resilience.max_attempts` attempts;
    /// a client error ends it at once.
    pub async fn respond_through(
        &self,
        ctx: &CallContext,
        model: &str,
        body: &Value,
        stream: bool,
    ) -> Result<ResponsesReply, PipelineError> {
        let mut serving = self.responders(model);
        if serving.is_empty() {
            return Err(PipelineError::UnknownModel(model.to_string()));
        }
        for fallback in self.settings.fallbacks.get(model).into_iter().flatten() {
            serving.extend(self.responders(fallback));
        }
        let mut last: Option<Failure> = None;
        let mut full: Option<String> = None;
        let max = self.settings.max_attempts.max(1) as usize;
        for upstream in serving.iter().take(max) {
            match upstream.respond(ctx, body, stream).await {
                Ok(reply) => return Ok(reply),
                Err(AttemptError::Failed(f)) if f.is_client_error() => {
                    last = Some(f);
                    break;
                }
                Err(AttemptError::Failed(f)) => last = Some(f),
                Err(AttemptError::Refused(f)) => {
                    last.get_or_insert(f);
                }
                Err(AttemptError::Saturated) => {
                    full.get_or_insert_with(|| upstream.name().to_string());
                }
            }
        }
        Err(match (last, full) {
            (Some(failure), _) => PipelineError::Upstream {
                model: model.to_string(),
                failure,
            },
            (None, Some(scope)) => PipelineError::Overloaded { scope },
            (None, None) => PipelineError::Upstream {
                model: model.to_string(),
                failure: Failure::Timeout,
            },
        })
    }
}
