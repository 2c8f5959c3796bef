//! `/v1/responses` for a caller: a Responses request is translated to a
//! chat request (see [`crate::openai::responses`]) and served by
//! [`Gateway::chat`] — so rules, key admission, budgets, limits, the cache,
//! validators, the router, recovery and cost apply exactly as for chat —
//! then its answer is made a response object, stored (unless `store:
//! false`) for retrieval and for `previous_response_id`, which continues
//! the stored conversation of the caller's own earlier response.

use super::response_store::{ResponseStore, StoredResponse};
use super::{Answer, CacheStatus, ChatRequest, Gateway, GatewayError, Reply};
use crate::auth::Identity;
use crate::domain::Target;
use crate::openai::responses::{ResponseObject, ResponsesRequest, chat_messages};
use crate::upstream::StreamEvent;
use futures::StreamExt;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};

/// A served Responses request.
pub struct ResponsesAnswer {
    /// The response id (`resp_…`).
    pub id: String,
    /// The answer.
    pub output: ResponsesOutput,
    /// What the cache did.
    pub cache: CacheStatus,
}

/// How a Responses request was answered.
pub enum ResponsesOutput {
    /// Translated to chat: the answer, to be rendered as a response.
    Translated {
        /// The response object's fixed parts (id, echo of the request);
        /// boxed, being far larger than a passed-through answer.
        object: Box<ResponseObject>,
        /// The answer, whole or live; a live one is stored when it ends.
        reply: Reply,
    },
    /// Passed through to an upstream that speaks the Responses API: its
    /// answer as it came.
    Passed {
        /// The object, or the events.
        reply: crate::upstream::ResponsesReply,
        /// What it cost, USD (known now for a whole answer).
        cost_usd: Option<f64>,
    },
}

/// What storing a response needs once its answer is known.
#[derive(Clone)]
struct Pending {
    store: ResponseStore,
    owner: String,
    object: ResponseObject,
    input_items: Vec<Value>,
    /// History and input, as chat messages; the output is added at the end.
    conversation: Vec<Value>,
}

impl Pending {
    fn save(&self, completion: &crate::domain::Completion) {
        let response = self.object.finished(completion);
        let mut conversation = self.conversation.clone();
        if let Some(output) = response["output"].as_array() {
            // Output items are made by the gateway: they always translate.
            conversation.extend(chat_messages(output, "output").unwrap_or_default());
        }
        let entry = StoredResponse {
            owner: self.owner.clone(),
            expires_at_ms: self.store.expiry(),
            response,
            input_items: self.input_items.clone(),
            conversation,
            upstream_held: false,
        };
        if let Err(e) = self.store.put(&self.object.id, &entry) {
            tracing::warn!(response = %self.object.id, error = %e, "could not store the response; it cannot be retrieved or continued");
        }
    }
}

pub(super) fn suffix() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

impl Gateway {
    /// Responses are kept in `store` (without one, nothing is stored and no
    /// response can be continued).
    pub fn with_responses(mut self, store: ResponseStore) -> Self {
        self.responses = Some(store);
        self
    }

    fn stored(&self, caller: &Identity, id: &str) -> Result<Option<StoredResponse>, GatewayError> {
        match &self.responses {
            Some(store) => store.get(&caller.name, id).map_err(GatewayError::Store),
            None => Ok(None),
        }
    }

    /// Serves `POST /v1/responses`: `req` is `body` read. A model with an
    /// upstream that speaks the Responses API gets `body` passed through to
    /// it; every other request is translated to chat.
    pub async fn respond(
        &self,
        caller: &Identity,
        req: ResponsesRequest,
        body: Value,
    ) -> Result<ResponsesAnswer, GatewayError> {
        let bad = |e: crate::openai::responses::InvalidResponsesRequest| GatewayError::BadRequest {
            message: e.message,
            param: e.param,
        };
        if req.model.trim().is_empty() {
            return Err(GatewayError::BadRequest {
                message: "`model` must not be empty".into(),
                param: "model".into(),
            });
        }
        let items = req.input_items().map_err(bad)?;
        let previous =
            match &req.previous_response_id {
                None => None,
                Some(id) => Some(self.stored(caller, id)?.ok_or_else(|| {
                    GatewayError::ResponseNotFound {
                        id: id.clone(),
                        previous: true,
                    }
                })?),
            };
        if let Target::Model(model) = Target::parse(&req.model)
            && self.pipeline().speaks_responses(&model)
        {
            return self.respond_through(caller, &req, items, body).await;
        }
        let history = match previous {
            None => Vec::new(),
            Some(p) if p.upstream_held => {
                return Err(GatewayError::BadRequest {
                    message: "this response's conversation is held by the upstream that made it; continue it with a model served by that upstream".into(),
                    param: "previous_response_id".into(),
                });
            }
            Some(p) => p.conversation,
        };
        let body = req.chat_body(history.clone(), &items).map_err(bad)?;
        let wire: crate::openai::ChatRequest =
            serde_json::from_value(body).map_err(|e| GatewayError::BadRequest {
                message: format!("cannot be translated to a chat request: {e}"),
                param: "input".into(),
            })?;
        let request = wire.to_domain().map_err(|e| GatewayError::BadRequest {
            message: e.to_string(),
            param: "input".into(),
        })?;
        let suffix = suffix();
        let object = ResponseObject::new(format!("resp_{suffix}"), crate::clock::unix_s(), &req);
        let input_items: Vec<Value> = items
            .iter()
            .enumerate()
            .map(|(i, item)| with_id(item, &suffix, i))
            .collect();
        let pending = match &self.responses {
            Some(store) if req.store != Some(false) => {
                let mut conversation = history;
                conversation.extend(chat_messages(&items, "input").map_err(bad)?);
                Some(Pending {
                    store: store.clone(),
                    owner: caller.name.clone(),
                    object: object.clone(),
                    input_items,
                    conversation,
                })
            }
            _ => None,
        };
        let chat = ChatRequest {
            target: Target::parse(&req.model),
            request,
            stream: req.stream,
            // The writer needs the usage for `response.completed`.
            include_usage: true,
            end_user: req.user.clone(),
        };
        let Answer { reply, cache, .. } = self.chat_as(caller, chat, object.id.clone()).await?;
        let id = object.id.clone();
        let reply = match (reply, pending) {
            (reply, None) => reply,
            (
                Reply::Whole {
                    completion,
                    cost_usd,
                },
                Some(pending),
            ) => {
                pending.save(&completion);
                Reply::Whole {
                    completion,
                    cost_usd,
                }
            }
            (Reply::Live { model, events }, Some(pending)) => Reply::Live {
                model,
                events: Box::pin(events.inspect(move |event| {
                    if let Ok(StreamEvent::Done(completion)) = event {
                        pending.save(completion);
                    }
                })),
            },
        };
        Ok(ResponsesAnswer {
            id,
            output: ResponsesOutput::Translated {
                object: Box::new(object),
                reply,
            },
            cache,
        })
    }

    /// `GET /v1/responses/{id}`: the caller's stored response.
    pub fn response(&self, caller: &Identity, id: &str) -> Result<Value, GatewayError> {
        self.stored(caller, id)?
            .map(|r| r.response)
            .ok_or_else(|| not_found(id))
    }

    /// `GET /v1/responses/{id}/input_items`: its input items, oldest first.
    pub fn response_input_items(
        &self,
        caller: &Identity,
        id: &str,
    ) -> Result<Vec<Value>, GatewayError> {
        self.stored(caller, id)?
            .map(|r| r.input_items)
            .ok_or_else(|| not_found(id))
    }

    /// `DELETE /v1/responses/{id}`.
    pub fn delete_response(&self, caller: &Identity, id: &str) -> Result<(), GatewayError> {
        let deleted = match &self.responses {
            Some(store) => store
                .delete(&caller.name, id)
                .map_err(GatewayError::Store)?,
            None => false,
        };
        if deleted { Ok(()) } else { Err(not_found(id)) }
    }
}

fn not_found(id: &str) -> GatewayError {
    GatewayError::ResponseNotFound {
        id: id.to_string(),
        previous: false,
    }
}

/// An input item with an id, as `input_items` lists it (one the client
/// gave is kept).
pub(super) fn with_id(item: &Value, suffix: &str, index: usize) -> Value {
    let mut item = item.clone();
    if item.get("id").is_none_or(Value::is_null) {
        let prefix = if item["type"] == "message" {
            "msg"
        } else {
            "item"
        };
        item["id"] = json!(format!("{prefix}_{suffix}_{index}"));
    }
    item
}
