//! `POST /v1/embeddings` for a caller: key admission (allowed model,
//! budget, limits), the response cache, and the accounting of what the
//! upstream read — as for a chat request.
//!
//! An embedding is a deterministic function of its input, so it is cached
//! whenever the cache is on (no `temperature = 0` or `metadata.cache` is
//! needed, and there is no field to ask for either). The cache stores
//! answers as [`Completion`]s: an embeddings answer is kept as one whose
//! content is its vectors' JSON, so every tier (memory, sled, Redis) holds
//! it unchanged.

use super::{Gateway, GatewayError, context, new_id};
use crate::auth::Identity;
use crate::cache::{CacheKey, Filled, Served};
use crate::domain::{Completion, EmbeddingRequest, Embeddings, Failure, Message, Target};
use crate::pipeline::PipelineError;
use crate::telemetry::request;

/// A served embeddings request.
pub struct EmbeddingAnswer {
    /// Its id (`emb-…`, for the log and `x-request-id`).
    pub id: String,
    /// The vectors.
    pub embeddings: Embeddings,
    /// What it cost, USD (0 for a cache hit).
    pub cost_usd: f64,
    /// What the cache did.
    pub cache: super::CacheStatus,
}

impl Gateway {
    /// Serves `POST /v1/embeddings`.
    pub async fn embed(
        &self,
        caller: &Identity,
        req: EmbeddingRequest,
    ) -> Result<EmbeddingAnswer, GatewayError> {
        let live = self.live.load_full();
        let pipeline = &live.pipeline;
        let known = pipeline.embeds(&req.model);
        // Unknown names are noted as `unknown`, so clients cannot mint labels.
        request::with_current(|s| s.set_target(if known { &req.model } else { "unknown" }));
        if !known {
            return Err(PipelineError::UnknownModel(req.model.clone()).into());
        }
        let target = Target::Model(req.model.clone());
        let held = self.admit(caller, &target).await?;
        let id = new_id("emb");
        let user = req
            .extra
            .get("user")
            .and_then(|u| u.as_str())
            .map(String::from);
        let ctx = context(&live, caller, &id, user);
        let mut charge = self.charge(pipeline, caller, &target, &ctx, held);
        let Some(cache) = self.cache.clone() else {
            let embeddings = pipeline.embed(&ctx, &req).await?;
            charge.settle().await;
            return Ok(EmbeddingAnswer {
                id,
                embeddings,
                cost_usd: ctx.ledger.cost_usd(),
                cache: super::CacheStatus::Bypass,
            });
        };
        let key = CacheKey::of_embedding(&cache.namespace("embeddings", &caller.name), &req);
        let served = cache
            .get_or_fill(key, || async {
                let embeddings = pipeline.embed(&ctx, &req).await?;
                Ok::<_, GatewayError>(Filled {
                    completion: to_cached(&embeddings),
                    cost_usd: ctx.ledger.cost_usd(),
                })
            })
            .await?;
        // A hit made no steps: its ledger is empty and settles with nothing.
        charge.settle().await;
        let (completion, cost_usd, cache) = match served {
            Served::Hit(hit, from) => {
                let level = match from {
                    crate::cache::HitFrom::Tier(level) => level,
                    crate::cache::HitFrom::Flight => "flight",
                };
                (hit.completion.clone(), 0.0, super::CacheStatus::Hit(level))
            }
            Served::Miss(filled) => (filled.completion, filled.cost_usd, super::CacheStatus::Miss),
        };
        let embeddings = from_cached(&completion).ok_or_else(|| PipelineError::Upstream {
            model: req.model.clone(),
            // Only an entry written by another version could fail to read.
            failure: Failure::Internal("cached embeddings entry is unreadable".into()),
        })?;
        Ok(EmbeddingAnswer {
            id,
            embeddings,
            cost_usd,
            cache,
        })
    }
}

/// An embeddings answer as the cache stores it (see the module docs).
fn to_cached(embeddings: &Embeddings) -> Completion {
    Completion {
        message: Message::assistant(serde_json::to_string(&embeddings.vectors).unwrap_or_default()),
        model: embeddings.model.clone(),
        finish_reason: "embeddings".into(),
        usage: embeddings.usage,
        cached: false,
        details: Default::default(),
    }
}

/// An embeddings answer back from the cache.
fn from_cached(completion: &Completion) -> Option<Embeddings> {
    Some(Embeddings {
        model: completion.model.clone(),
        vectors: serde_json::from_str(&completion.message.content).ok()?,
        usage: completion.usage,
    })
}
