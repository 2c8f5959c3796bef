//! `/v1/responses` passed through to an upstream that speaks the API
//! (`serves = ["responses"]`): key admission, budget, limits and cost as
//! for chat, the caller's ownership of `previous_response_id` checked (the
//! upstream holds one API key for every client, so it cannot tell them
//! apart), and the answer recorded as the caller's so it can be retrieved
//! and continued by its owner only. Neither cached nor validated: the
//! request and the answer are the client's and the upstream's, as sent.

use super::response_store::StoredResponse;
use super::responses::{ResponsesAnswer, ResponsesOutput, suffix, with_id};
use super::{CacheStatus, Gateway, GatewayError, context, note_target};
use crate::auth::Identity;
use crate::domain::Target;
use crate::openai::responses::ResponsesRequest;
use crate::upstream::{ResponsesReply, terminal};
use futures::StreamExt;
use serde_json::Value;
use std::sync::Arc;

impl Gateway {
    pub(super) async fn respond_through(
        &self,
        caller: &Identity,
        req: &ResponsesRequest,
        items: Vec<Value>,
        body: Value,
    ) -> Result<ResponsesAnswer, GatewayError> {
        let live = self.live.load_full();
        let pipeline = &live.pipeline;
        let target = Target::Model(req.model.clone());
        note_target(pipeline, &target);
        let held = self.admit(caller, &target).await?;
        let request_id = format!("resp_{}", suffix());
        let ctx = context(&live, caller, &request_id, req.user.clone());
        let mut charge = self.charge(pipeline, caller, &target, &ctx, held);
        let reply = pipeline
            .respond_through(&ctx, &req.model, &body, req.stream)
            .await?;
        let record = self
            .responses
            .clone()
            .filter(|_| req.store != Some(false))
            .map(|store| {
                let suffix = suffix();
                let items: Vec<Value> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| with_id(item, &suffix, i))
                    .collect();
                let owner = caller.name.clone();
                move |response: &Value| {
                    let Some(id) = response["id"].as_str() else {
                        return;
                    };
                    let entry = StoredResponse {
                        owner: owner.clone(),
                        expires_at_ms: store.expiry(),
                        response: response.clone(),
                        input_items: items.clone(),
                        conversation: Vec::new(),
                        upstream_held: true,
                    };
                    if let Err(e) = store.put(id, &entry) {
                        tracing::warn!(response = %id, error = %e, "could not record the response; it cannot be retrieved or continued");
                    }
                }
            });
        match reply {
            ResponsesReply::Whole(object) => {
                charge.settle().await;
                if let Some(record) = &record {
                    record(&object);
                }
                Ok(ResponsesAnswer {
                    id: object["id"].as_str().unwrap_or(&request_id).to_string(),
                    output: ResponsesOutput::Passed {
                        reply: ResponsesReply::Whole(object),
                        cost_usd: Some(ctx.ledger.cost_usd()),
                    },
                    cache: CacheStatus::Bypass,
                })
            }
            ResponsesReply::Events(events) => {
                // Settled and recorded at the last event, before it is
                // passed on (a client that saw the end finds both done).
                let state = Arc::new(tokio::sync::Mutex::new((charge, record)));
                let events = events.then(move |event| {
                    let state = state.clone();
                    async move {
                        if let Ok(e) = &event
                            && let Some(object) = terminal(e)
                        {
                            let mut s = state.lock().await;
                            s.0.settle().await;
                            if let Some(record) = s.1.take() {
                                record(object);
                            }
                        }
                        event
                    }
                });
                Ok(ResponsesAnswer {
                    id: request_id,
                    output: ResponsesOutput::Passed {
                        reply: ResponsesReply::Events(events.boxed()),
                        cost_usd: None,
                    },
                    cache: CacheStatus::Bypass,
                })
            }
        }
    }
}
