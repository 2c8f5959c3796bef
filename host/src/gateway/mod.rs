//! The request layer: serves one request for a caller — a model or an
//! agent, whole or streamed, cached or not — and answers with its cost and
//! cache status.
//!
//! [`Gateway`] owns everything a request goes through between HTTP and the
//! pipeline: the host's rules on the conversation, whether the caller's key
//! may use the target now (allowed targets, daily budget, token and model
//! limits), the response cache (lookup, single-flight fill, store), and the
//! accounting of what the answer really used (tokens to the rate limits,
//! cost to the key's spend) — for a live stream, when it ends. The server
//! converts HTTP into a [`ChatRequest`] and an [`Answer`] back into HTTP;
//! the pipeline below knows nothing of keys or caches.
//!
//! A request loads the [`Live`] snapshot once and keeps it, so a config
//! reload never changes a request midway.

mod accounting;
mod embed;
mod error;
mod passthrough;
mod response_store;
mod responses;
mod stream;

pub use embed::EmbeddingAnswer;
pub use error::GatewayError;
pub use response_store::{
    DEFAULT_RESPONSES_TTL_S, ResponseStore, ResponseStoreError, ResponsesConfig, StoredResponse,
};
pub use responses::{ResponsesAnswer, ResponsesOutput};

use crate::auth::{Auth, Identity};
use crate::cache::{CacheKey, CachedAnswer, Filled, HitFrom, ResponseCache, Served};
use crate::domain::{CallContext, Completion, CompletionRequest, Message, Metadata, Step, Target};
use crate::pipeline::{MessageRules, Output, Pipeline};
use crate::ratelimit::RateLimiter;
use crate::secret::Secret;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::RateLimitLabels;
use crate::telemetry::request;
use crate::upstream::EventStream;
use accounting::{BudgetAlerts, Charge, Held};
use arc_swap::ArcSwap;
use rand::Rng;
use rand::distr::Alphanumeric;
use std::sync::Arc;
use std::time::Duration;

/// Request-level limits.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Deadline of one request, agents included.
    pub request_timeout: Duration,
    /// Bound on nested agent calls.
    pub max_agent_depth: u32,
    /// Most messages in one request.
    pub max_messages: usize,
    /// Longest message content, in characters.
    pub max_message_chars: usize,
    /// Most request headers (HTTP/1).
    pub max_headers: usize,
    /// Largest request head, bytes.
    pub max_header_bytes: usize,
    /// Time to receive a request's headers; also the keep-alive idle bound.
    pub header_read_timeout: Duration,
    /// Time to receive a request's body.
    pub body_read_timeout: Duration,
}

impl ServerLimits {
    /// The rules every conversation entering the pipeline must meet (the
    /// pipeline holds them, for the client's messages and every rewrite).
    pub fn message_rules(&self) -> MessageRules {
        MessageRules {
            max_messages: self.max_messages,
            max_message_chars: self.max_message_chars,
        }
    }
}

/// What a config reload replaces, swapped as one: a request sees either
/// the old or the new of all of it.
pub struct Live {
    /// The request pipeline.
    pub pipeline: Arc<Pipeline>,
    /// Limits.
    pub limits: ServerLimits,
    /// The admin token; `None` disables the admin API.
    pub admin_token: Option<Secret>,
}

/// A chat request, as HTTP delivered it and the pipeline will see it.
#[derive(Clone, Debug)]
pub struct ChatRequest {
    /// What it addresses.
    pub target: Target,
    /// The request; `model` is the target as the client named it.
    pub request: CompletionRequest,
    /// Whether the client wants the answer as a stream.
    pub stream: bool,
    /// Whether a streaming client asked for a last chunk with the usage
    /// (`stream_options.include_usage`).
    pub include_usage: bool,
    /// The end user the client acts for (OpenAI's `user`), for sticky A/B.
    pub end_user: Option<String>,
}

/// What `x-agentrouter-cache` says about an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from a tier (`l1`, `l2`) or a concurrent identical request (`flight`).
    Hit(&'static str),
    /// Cacheable; computed now and stored.
    Miss,
    /// Not cacheable (or the cache is off).
    Bypass,
}

/// The answer itself.
pub enum Reply {
    /// The whole answer; a streaming client gets it replayed as events.
    Whole {
        /// The answer.
        completion: Completion,
        /// What it cost, USD (0 for a cache hit).
        cost_usd: f64,
    },
    /// Events from the upstream as they arrive; usage and cost are
    /// accounted when the stream ends.
    Live {
        /// The requested model.
        model: String,
        /// The events.
        events: EventStream,
    },
}

/// A served chat request.
pub struct Answer {
    /// The response id (`chatcmpl-…`).
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The answer.
    pub reply: Reply,
    /// What the cache did.
    pub cache: CacheStatus,
}

/// A finished agent run (`/v1/agents/{name}/invoke`).
pub struct AgentRun {
    /// The run's id (`task-…`).
    pub id: String,
    /// The agent's answer, after output validators.
    pub output: Completion,
    /// What the run cost, USD.
    pub cost_usd: f64,
    /// Every step made: completions and delegations, at every depth.
    pub steps: Vec<Step>,
}

fn new_id(prefix: &str) -> String {
    let suffix: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("{prefix}-{suffix}")
}

/// The request layer; shared as `Arc<Gateway>`.
pub struct Gateway {
    live: Arc<ArcSwap<Live>>,
    cache: Option<Arc<ResponseCache>>,
    auth: Arc<Auth>,
    rate_limits: Arc<RateLimiter>,
    metrics: Arc<Metrics>,
    budget_alerts: BudgetAlerts,
    /// Stored responses (`/v1/responses`), when the gateway keeps them.
    responses: Option<ResponseStore>,
}

impl Gateway {
    /// A gateway serving from `live`, with the optional response cache,
    /// the key registry, the rate limits, and the fractions of a key's
    /// daily budget whose crossing raises an alert.
    pub fn new(
        live: Arc<ArcSwap<Live>>,
        cache: Option<Arc<ResponseCache>>,
        auth: Arc<Auth>,
        rate_limits: Arc<RateLimiter>,
        budget_alert_thresholds: &[f64],
    ) -> Gateway {
        let metrics = live.load().pipeline.metrics().clone();
        Gateway {
            live,
            cache,
            auth,
            rate_limits,
            metrics,
            budget_alerts: BudgetAlerts {
                thresholds: budget_alert_thresholds.into(),
            },
            responses: None,
        }
    }

    /// The live snapshot (pipeline, limits, admin token) a reload swaps.
    pub fn live(&self) -> &Arc<ArcSwap<Live>> {
        &self.live
    }

    /// The current pipeline.
    pub fn pipeline(&self) -> Arc<Pipeline> {
        self.live.load().pipeline.clone()
    }

    /// The current request limits.
    pub fn limits(&self) -> ServerLimits {
        self.live.load().limits
    }

    /// The gateway's metrics (one registry for its lifetime).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The key registry.
    pub fn auth(&self) -> &Arc<Auth> {
        &self.auth
    }

    /// The rate limits.
    pub fn rate_limits(&self) -> &Arc<RateLimiter> {
        &self.rate_limits
    }

    /// The response cache, when enabled.
    pub fn cache(&self) -> Option<&Arc<ResponseCache>> {
        self.cache.as_ref()
    }

    /// Notes the target a request addressed, for its metrics and log line
    /// (also for a request refused before it reached [`Gateway::chat`]).
    pub fn note(&self, target: &Target) {
        note_target(&self.pipeline(), target);
    }

    /// Models and agents `caller` may use.
    pub fn models(&self, caller: &Identity) -> Vec<String> {
        self.pipeline()
            .models()
            .into_iter()
            .filter(|id| caller.check_target(&Target::parse(id)).is_ok())
            .collect()
    }

    /// Serves `POST /v1/chat/completions`.
    pub async fn chat(&self, caller: &Identity, req: ChatRequest) -> Result<Answer, GatewayError> {
        self.chat_as(caller, req, new_id("chatcmpl")).await
    }

    /// [`Gateway::chat`] as request `id` (a translated Responses request
    /// runs as its `resp_…` id, so its logs and traces carry the id the
    /// client got).
    async fn chat_as(
        &self,
        caller: &Identity,
        req: ChatRequest,
        id: String,
    ) -> Result<Answer, GatewayError> {
        let live = self.live.load_full();
        let pipeline = &live.pipeline;
        note_target(pipeline, &req.target);
        // The pipeline's rules: the same ones every rewrite is held to.
        pipeline
            .settings()
            .rules
            .check("messages", &req.request.messages)?;
        let held = self.admit(caller, &req.target).await?;
        let ctx = context(&live, caller, &id, req.end_user.clone());
        let charge = self.charge(pipeline, caller, &req.target, &ctx, held);
        let created = crate::clock::unix_s();
        let (reply, cache) = match self.cache_entry(pipeline, caller, &req) {
            None => (
                self.run(pipeline, &ctx, &req, charge, None).await?,
                CacheStatus::Bypass,
            ),
            Some(entry) if req.stream => {
                self.cached_stream(pipeline, &ctx, &req, charge, entry)
                    .await?
            }
            Some(entry) => {
                self.cached_whole(pipeline, &ctx, &req, charge, entry)
                    .await?
            }
        };
        Ok(Answer {
            id,
            created,
            reply,
            cache,
        })
    }

    /// A cacheable streamed request: a hit is replayed (and settles with
    /// nothing); a miss is computed (streams are not coalesced) and stored
    /// — a whole answer at once, a live stream when it ends.
    async fn cached_stream(
        &self,
        pipeline: &Pipeline,
        ctx: &CallContext,
        req: &ChatRequest,
        mut charge: Charge,
        (cache, key): (Arc<ResponseCache>, CacheKey),
    ) -> Result<(Reply, CacheStatus), GatewayError> {
        if let Some((hit, level)) = cache.lookup(&key).await {
            charge.settle().await;
            return Ok((from_cache(&hit), CacheStatus::Hit(level)));
        }
        let reply = self
            .run(pipeline, ctx, req, charge, Some((cache.clone(), key)))
            .await?;
        if let Reply::Whole {
            completion,
            cost_usd,
        } = &reply
        {
            cache.store(&key, completion, *cost_usd).await;
        }
        Ok((reply, CacheStatus::Miss))
    }

    /// A cacheable whole request: from the cache, from a concurrent
    /// identical request (single-flight), or computed, settled and stored.
    async fn cached_whole(
        &self,
        pipeline: &Pipeline,
        ctx: &CallContext,
        req: &ChatRequest,
        mut charge: Charge,
        (cache, key): (Arc<ResponseCache>, CacheKey),
    ) -> Result<(Reply, CacheStatus), GatewayError> {
        let served = cache
            .get_or_fill(key, || async {
                let completion = pipeline
                    .serve(ctx, &req.target, req.request.clone())
                    .await?;
                Ok::<_, GatewayError>(Filled {
                    completion,
                    cost_usd: ctx.ledger.cost_usd(),
                })
            })
            .await?;
        // A hit made no steps: its ledger is empty and settles with nothing.
        charge.settle().await;
        Ok(match served {
            Served::Hit(hit, from) => {
                let level = match from {
                    HitFrom::Tier(level) => level,
                    HitFrom::Flight => "flight",
                };
                (from_cache(&hit), CacheStatus::Hit(level))
            }
            Served::Miss(filled) => {
                let reply = Reply::Whole {
                    completion: filled.completion,
                    cost_usd: filled.cost_usd,
                };
                (reply, CacheStatus::Miss)
            }
        })
    }

    /// Serves `POST /v1/agents/{name}/invoke`: agent `name` on `input`,
    /// answered whole with every step.
    pub async fn invoke(
        &self,
        caller: &Identity,
        name: &str,
        input: Vec<Message>,
        metadata: Metadata,
    ) -> Result<AgentRun, GatewayError> {
        let live = self.live.load_full();
        let pipeline = &live.pipeline;
        let target = Target::Agent(name.to_string());
        note_target(pipeline, &target);
        pipeline.settings().rules.check("input", &input)?;
        // An unknown agent is the pipeline's 404, not a key's 403.
        let held = if pipeline.knows(&target) {
            self.admit(caller, &target).await?
        } else {
            Held::new(self.auth.clone(), None)
        };
        let id = new_id("task");
        let ctx = context(&live, caller, &id, None);
        let mut charge = self.charge(pipeline, caller, &target, &ctx, held);
        let request = CompletionRequest {
            model: target.to_string(),
            messages: input,
            metadata,
            ..Default::default()
        };
        let output = pipeline.serve(&ctx, &target, request).await?;
        charge.settle().await;
        Ok(AgentRun {
            id,
            output,
            cost_usd: ctx.ledger.cost_usd(),
            steps: ctx.ledger.steps(),
        })
    }

    /// Whether `caller` may send a request to `target` now: allowed target
    /// (403), daily budget (429; its reservation is held until the request
    /// settles), token and model limits (429).
    async fn admit(&self, caller: &Identity, target: &Target) -> Result<Held, GatewayError> {
        caller.check_target(target)?;
        let reservation = match self.auth.reserve_budget(caller).await {
            Ok(reservation) => reservation,
            Err(budget) => {
                self.metrics
                    .rate_limited
                    .get_or_create(&RateLimitLabels {
                        key: caller.name.clone(),
                        limit: "budget".into(),
                    })
                    .inc();
                return Err(GatewayError::BudgetExceeded {
                    key: caller.name.clone(),
                    budget,
                });
            }
        };
        // Held before the next check, so a refusal releases it.
        let held = Held::new(self.auth.clone(), reservation);
        self.rate_limits
            .admit_completion(&caller.name, caller.limits(), &target.to_string())
            .await
            .map_err(GatewayError::RateLimited)?;
        Ok(held)
    }

    /// The cache entry of a cacheable request: the cache and the key, in the
    /// namespace of the validators live now (so a hot-swapped validator
    /// never serves answers its predecessor approved).
    fn cache_entry(
        &self,
        pipeline: &Pipeline,
        caller: &Identity,
        req: &ChatRequest,
    ) -> Option<(Arc<ResponseCache>, CacheKey)> {
        let cache = self.cache.as_ref()?;
        if !cache.cacheable(&req.target, &req.request) {
            return None;
        }
        let validators = pipeline.answer_validators();
        let generation =
            ResponseCache::generation(validators.iter().map(|(n, d)| (n.as_str(), d.as_str())));
        let key = CacheKey::of(&cache.namespace(&generation, &caller.name), &req.request);
        Some((cache.clone(), key))
    }

    /// Runs the pipeline; a whole answer is charged at once, a live stream
    /// when it ends (and then cached, with `cache`).
    async fn run(
        &self,
        pipeline: &Pipeline,
        ctx: &CallContext,
        req: &ChatRequest,
        mut charge: Charge,
        cache: Option<(Arc<ResponseCache>, CacheKey)>,
    ) -> Result<Reply, GatewayError> {
        let output = if req.stream {
            pipeline
                .serve_stream(ctx, &req.target, req.request.clone())
                .await?
        } else {
            Output::Whole(
                pipeline
                    .serve(ctx, &req.target, req.request.clone())
                    .await?,
            )
        };
        Ok(match output {
            Output::Whole(completion) => {
                charge.settle().await;
                Reply::Whole {
                    completion,
                    cost_usd: ctx.ledger.cost_usd(),
                }
            }
            Output::Live { model, events } => Reply::Live {
                model,
                events: stream::settle(events, charge, cache),
            },
        })
    }

    /// What charging `caller` for this request takes, with its budget hold.
    fn charge(
        &self,
        pipeline: &Pipeline,
        caller: &Identity,
        target: &Target,
        ctx: &CallContext,
        held: Held,
    ) -> Charge {
        Charge {
            rate_limits: self.rate_limits.clone(),
            auth: self.auth.clone(),
            metrics: self.metrics.clone(),
            alerts: self.budget_alerts.clone(),
            alerter: pipeline.alerter().clone(),
            caller: caller.clone(),
            target: target.clone(),
            ctx: ctx.clone(),
            held,
        }
    }
}

/// A cached answer as this request's answer: marked cached, costing nothing.
fn from_cache(answer: &CachedAnswer) -> Reply {
    Reply::Whole {
        completion: Completion {
            cached: true,
            ..answer.completion.clone()
        },
        cost_usd: 0.0,
    }
}

/// The root context of a request by `caller`.
fn context(
    live: &Live,
    caller: &Identity,
    request_id: &str,
    end_user: Option<String>,
) -> CallContext {
    let mut ctx = CallContext::new(&caller.name, request_id, live.limits.request_timeout);
    ctx.max_depth = live.limits.max_agent_depth;
    ctx.budgets = live.pipeline.request_budgets();
    // The A/B assignment key: the end user when the client names one.
    ctx.end_user = end_user;
    request::with_current(|s| {
        s.set_client(&ctx.client);
        s.attach_ledger(&ctx.ledger);
    });
    ctx
}

/// Notes the model or `agent:<name>` a request addressed, for its metrics
/// and log line; a name that does not exist is noted as `unknown`, so
/// clients cannot mint label values.
fn note_target(pipeline: &Pipeline, target: &Target) {
    let known = pipeline.knows(target);
    request::with_current(|s| {
        if known {
            s.set_target(&target.to_string());
        } else {
            s.set_target("unknown");
        }
    });
}
