//! Admission at the API edge: who is calling (API key), whether they may
//! send another request now (request rate), and — once the body is read —
//! whether the request is within bounds and the key may use its target
//! (allowed models/agents, daily budget, token and model limits).
//!
//! Order matters and is cheap-first: the key and the request bucket are
//! checked before the body is read, so a flood of unauthenticated or
//! over-limit requests costs no body reads and no JSON parsing.

use super::{ApiError, AppState};
use crate::auth::Identity;
use crate::domain::{Message, Usage};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// Middleware of every `/v1` route: authenticates, takes one request from
/// the client's bucket, and hands the [`Identity`] to the handler.
pub(super) async fn admit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let identity = match state.auth.authenticate(req.headers()) {
        Ok(identity) => identity,
        Err(e) => {
            tracing::info!(error = %e, path = %req.uri().path(), "request refused: authentication");
            return ApiError::from(e).into_response();
        }
    };
    // Logged and counted under the key from here on, refusals included.
    crate::telemetry::request::with_current(|s| s.set_client(&identity.name));
    if let Err(limited) = state
        .rate_limits
        .admit_request(&identity.name, identity.limits())
    {
        return ApiError::rate_limited(&limited).into_response();
    }
    req.extensions_mut().insert(identity);
    next.run(req).await
}

/// Reads the body within `server.body_read_timeout_ms` and
/// `server.max_body_bytes`.
pub(super) async fn read_body(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let limits = state.limits();
    let read = axum::body::to_bytes(body, limits.max_body_bytes);
    match tokio::time::timeout(limits.body_read_timeout, read).await {
        Err(_) => Err(ApiError::body_timeout(
            limits.body_read_timeout.as_millis() as u64
        )),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let inner = e.into_inner();
            if inner.is::<http_body_util::LengthLimitError>() {
                Err(ApiError::too_large(limits.max_body_bytes))
            } else {
                Err(ApiError::bad_request(format!(
                    "could not read the request body: {inner}"
                )))
            }
        }
    }
}

/// Refuses a conversation over `server.max_messages` or with a message over
/// `server.max_message_chars`; `field` names the list in the message.
pub(super) fn check_messages(
    state: &AppState,
    field: &str,
    messages: &[Message],
) -> Result<(), ApiError> {
    let limits = state.limits();
    if messages.len() > limits.max_messages {
        return Err(ApiError::over_limit(
            "too_many_messages",
            format!(
                "`{field}` has {} messages; the limit is {} (server.max_messages)",
                messages.len(),
                limits.max_messages
            ),
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        // Bytes bound characters from above: count only when it matters.
        if m.content.len() > limits.max_message_chars {
            let chars = m.content.chars().count();
            if chars > limits.max_message_chars {
                return Err(ApiError::over_limit(
                    "message_too_long",
                    format!(
                        "`{field}[{i}].content` has {chars} characters; the limit is {} (server.max_message_chars)",
                        limits.max_message_chars
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Whether `identity` may send a request to `target` (a model or
/// `agent:<name>`) now: allowed target (403), daily budget, token and model
/// limits (429).
pub(super) fn check_target(
    state: &AppState,
    identity: &Identity,
    target: &str,
) -> Result<(), ApiError> {
    identity.check_target(target).map_err(ApiError::forbidden)?;
    if let Err(b) = state.auth.check_budget(identity) {
        state
            .pipeline()
            .metrics()
            .rate_limited
            .get_or_create(&crate::telemetry::metrics::RateLimitLabels {
                key: identity.name.clone(),
                limit: "budget".into(),
            })
            .inc();
        return Err(ApiError::budget_exceeded(&identity.name, &b));
    }
    state
        .rate_limits
        .admit_completion(&identity.name, identity.limits(), target)
        .map_err(|limited| ApiError::rate_limited(&limited))
}

/// Charges what an answer really used: tokens to the client's and model's
/// buckets, cost to the key's daily spend. Cached answers cost nothing and
/// are not charged.
pub(super) fn account(
    state: &AppState,
    identity: &Identity,
    target: &str,
    usage: Usage,
    cost_usd: f64,
) {
    state.rate_limits.charge(
        &identity.name,
        identity.limits(),
        target,
        u64::from(usage.total()),
    );
    state.auth.record_spend(identity, cost_usd);
}
