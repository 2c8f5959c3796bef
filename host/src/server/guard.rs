//! Admission at the API edge: who is calling (API key), whether they may
//! send another request now (request rate), and reading the body within its
//! bounds. What the request asks for (its messages, its target, the key's
//! budget) is the request layer's to check, once the body is parsed.
//!
//! Order matters and is cheap-first: the key and the request bucket are
//! checked before the body is read, so a flood of unauthenticated or
//! over-limit requests costs no body reads and no JSON parsing.

use super::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// Middleware of every `/v1` route: authenticates, takes one request from
/// the client's bucket, and hands the [`Identity`](crate::auth::Identity) to the
/// handler.
pub(super) async fn admit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let gateway = &state.gateway;
    let identity = match gateway.auth().authenticate(req.headers()).await {
        Ok(identity) => identity,
        Err(e) => {
            tracing::info!(error = %e, path = %req.uri().path(), "request refused: authentication");
            return ApiError::from(e).into_response();
        }
    };
    // Logged and counted under the key from here on, refusals included.
    crate::telemetry::request::with_current(|s| s.set_client(&identity.name));
    if let Err(limited) = gateway
        .rate_limits()
        .admit_request(&identity.name, identity.limits())
        .await
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
