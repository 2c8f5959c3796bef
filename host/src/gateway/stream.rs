//! Settling a live stream: its usage and cost are known only at its end.
//!
//! [`settle`] watches the events on their way to the client. At `Done` —
//! before that event is passed on, so a client that saw the end of the
//! stream finds it accounted and cached — it charges the request's ledger
//! to the caller and, for a cacheable request, stores the whole answer. A
//! stream that breaks off is never cached; its budget reservation is
//! released when the stream is dropped (and its failed step used nothing
//! the caller could be charged for).

use super::accounting::Charge;
use crate::cache::{CacheKey, ResponseCache};
use crate::domain::{Completion, Message};
use crate::upstream::{EventStream, StreamEvent};
use futures::StreamExt;
use std::sync::Arc;

/// The stream, settled at its end (and cached there when `cache` is given).
pub(super) fn settle(
    events: EventStream,
    charge: Charge,
    cache: Option<(Arc<ResponseCache>, CacheKey)>,
) -> EventStream {
    struct State {
        charge: Charge,
        cache: Option<(Arc<ResponseCache>, CacheKey)>,
        /// The answer so far, kept only when it will be cached.
        seen: Message,
    }
    let state = Arc::new(tokio::sync::Mutex::new(State {
        charge,
        cache,
        seen: Message::assistant(""),
    }));
    Box::pin(events.then(move |event| {
        let state = state.clone();
        async move {
            let mut s = state.lock().await;
            match &event {
                Ok(StreamEvent::Delta(piece)) if s.cache.is_some() => {
                    s.seen.content.push_str(piece);
                }
                Ok(StreamEvent::ToolCalls(calls)) if s.cache.is_some() => {
                    s.seen.tool_calls.extend(calls.iter().cloned());
                }
                Ok(StreamEvent::Done {
                    finish_reason,
                    usage,
                    model,
                }) => {
                    // The guarded upstream recorded the step (and its cost)
                    // before the event reached this layer.
                    s.charge.settle().await;
                    if let Some((cache, key)) = s.cache.take() {
                        let completion = Completion {
                            message: std::mem::replace(&mut s.seen, Message::assistant("")),
                            model: model.clone(),
                            finish_reason: finish_reason.clone(),
                            usage: *usage,
                            cached: false,
                        };
                        cache
                            .store(&key, &completion, s.charge.ctx.ledger.cost_usd())
                            .await;
                    }
                }
                _ => {}
            }
            event
        }
    }))
}
