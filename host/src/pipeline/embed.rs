//! The embeddings path: the upstreams that declare `embeddings` for the
//! model, then those of its fallback models, each tried once through its
//! guards (cooldown, bulkhead, breaker), every attempt a step in the
//! request's ledger.
//!
//! Validators, the router and the recovery plugin are not consulted: their
//! contract is about conversations and completions, and an embeddings
//! input is neither (docs/openai-api.md says so).

use super::guarded::AttemptError;
use super::{GuardedUpstream, Pipeline, PipelineError};
use crate::domain::{CallContext, EmbeddingRequest, Embeddings, Endpoint, Failure};
use std::sync::Arc;

impl Pipeline {
    /// Whether an upstream serves embeddings for `model`.
    pub fn embeds(&self, model: &str) -> bool {
        !self.embedders(model).is_empty()
    }

    fn embedders(&self, model: &str) -> Vec<Arc<GuardedUpstream>> {
        self.upstreams
            .iter()
            .filter(|u| u.info().model == model && u.info().serves(Endpoint::Embeddings))
            .cloned()
            .collect()
    }

    /// Serves an embeddings request in `ctx`: the first upstream that
    /// answers, in configured order, then the model's fallbacks; at most
    /// `resilience.max_attempts` attempts. A client error (the upstream
    /// refused the request itself) ends it at once.
    pub async fn embed(
        &self,
        ctx: &CallContext,
        req: &EmbeddingRequest,
    ) -> Result<Embeddings, PipelineError> {
        let model = &req.model;
        let mut serving = self.embedders(model);
        if serving.is_empty() {
            return Err(PipelineError::UnknownModel(model.clone()));
        }
        for fallback in self.settings.fallbacks.get(model).into_iter().flatten() {
            serving.extend(self.embedders(fallback));
        }
        let mut last: Option<Failure> = None;
        let mut full: Option<String> = None;
        let max = self.settings.max_attempts.max(1) as usize;
        for upstream in serving.iter().take(max) {
            match upstream.embed(ctx, req).await {
                Ok(answer) => return Ok(answer),
                Err(AttemptError::Failed(f)) if f.is_client_error() => {
                    return Err(PipelineError::Upstream {
                        model: model.clone(),
                        failure: f,
                    });
                }
                Err(AttemptError::Failed(f)) => last = Some(f),
                // A refusal is only the answer when no upstream said more.
                Err(AttemptError::Refused(f)) => {
                    last.get_or_insert(f);
                }
                Err(AttemptError::Saturated) => {
                    full.get_or_insert_with(|| upstream.name().to_string());
                }
            }
        }
        match (last, full) {
            (Some(failure), _) => Err(PipelineError::Upstream {
                model: model.clone(),
                failure,
            }),
            (None, Some(scope)) => Err(PipelineError::Overloaded { scope }),
            (None, None) => Err(PipelineError::Upstream {
                model: model.clone(),
                failure: Failure::Timeout,
            }),
        }
    }
}
