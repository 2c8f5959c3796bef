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
use crate::upstream::{EventStream, StreamEvent};
use futures::StreamExt;
use std::sync::Arc;

/// The stream, settled at its end (and cached there when `cache` is given:
/// the whole answer `Done` carries, as the upstream sent it).
pub(super) fn settle(
    events: EventStream,
    charge: Charge,
    cache: Option<(Arc<ResponseCache>, CacheKey)>,
) -> EventStream {
    struct State {
        charge: Charge,
        cache: Option<(Arc<ResponseCache>, CacheKey)>,
    }
    let state = Arc::new(tokio::sync::Mutex::new(State { charge, cache }));
    Box::pin(events.then(move |event| {
        let state = state.clone();
        async move {
            if let Ok(StreamEvent::Done(completion)) = &event {
                let mut s = state.lock().await;
                // The guarded upstream recorded the step (and its cost)
                // before the event reached this layer.
                s.charge.settle().await;
                if let Some((cache, key)) = s.cache.take() {
                    cache
                        .store(&key, completion, s.charge.ctx.ledger.cost_usd())
                        .await;
                }
            }
            event
        }
    }))
}
