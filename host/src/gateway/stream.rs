//! Settling a live stream: its usage and cost are known only at its end.
//!
//! [`settle`] watches the events on their way to the client. At `Done` —
//! before that event is passed on, so a client that saw the end of the
//! stream finds it accounted and cached — it charges the request's ledger
//! to the caller and, for a cacheable request, stores the whole answer. A
//! stream that breaks off is never cached (and its failed step used
//! nothing the caller could be charged for).

use super::charge;
use crate::auth::{Auth, Identity};
use crate::cache::{CacheKey, ResponseCache};
use crate::domain::{CallContext, Target};
use crate::ratelimit::RateLimiter;
use crate::upstream::{EventStream, StreamEvent};
use futures::StreamExt;
use std::sync::Arc;

/// Who pays for a stream, and how to charge them.
pub(super) struct Settlement {
    pub rate_limits: Arc<RateLimiter>,
    pub auth: Arc<Auth>,
    pub caller: Identity,
    pub target: Target,
    pub ctx: CallContext,
}

/// The stream, settled at its end (and cached there when `cache` is given:
/// the whole answer `Done` carries, as the upstream sent it).
pub(super) fn settle(
    events: EventStream,
    settlement: Settlement,
    cache: Option<(Arc<ResponseCache>, CacheKey)>,
) -> EventStream {
    struct State {
        settlement: Settlement,
        cache: Option<(Arc<ResponseCache>, CacheKey)>,
    }
    let state = Arc::new(tokio::sync::Mutex::new(State { settlement, cache }));
    Box::pin(events.then(move |event| {
        let state = state.clone();
        async move {
            if let Ok(StreamEvent::Done(completion)) = &event {
                let mut s = state.lock().await;
                // The guarded upstream recorded the step (and its cost)
                // before the event reached this layer.
                let t = &s.settlement;
                charge(&t.rate_limits, &t.auth, &t.caller, &t.target, &t.ctx);
                if let Some((cache, key)) = s.cache.take() {
                    cache
                        .store(&key, completion, s.settlement.ctx.ledger.cost_usd())
                        .await;
                }
            }
            event
        }
    }))
}
