//! `/admin/keys`: API keys created, rotated and revoked while the gateway
//! runs. With `[cluster]` the keys live in Redis, so a change through one
//! replica is what every replica's next request sees; without it, in this
//! replica's store. Secrets are in a response exactly once (create,
//! rotate); only their hashes are stored. Keys of the config file are
//! listed, and changed only in the file.

use super::{ApiError, AppState};
use crate::auth::{AuthError, KeyPolicy, KeyRecord};
use crate::domain::Target;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// The key routes (behind the admin token, see `admin::routes`).
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/keys", get(list).post(create))
        .route("/admin/keys/{name}/rotate", post(rotate))
        .route("/admin/keys/{name}/revoke", post(revoke))
}

fn key_error(e: AuthError) -> ApiError {
    let message = e.to_string();
    let (status, code) = match e {
        AuthError::Exists(_) => (StatusCode::CONFLICT, "key_exists"),
        AuthError::NotFound(_) => (StatusCode::NOT_FOUND, "key_not_found"),
        AuthError::FromConfig(_) => (StatusCode::CONFLICT, "key_from_config"),
        AuthError::Revoked(_) => (StatusCode::CONFLICT, "key_revoked"),
        AuthError::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "key_store_unavailable"),
    };
    ApiError::new(status, "admin_error", code, message)
}

fn body<T: for<'de> Deserialize<'de>>(raw: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = raw.map_err(|e| ApiError::bad_request(format!("could not read the body: {e}")))?;
    let bytes = if bytes.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        bytes
    };
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

/// A key as the admin API shows it: never its secret or hashes.
fn view(k: &KeyRecord) -> Value {
    let now = crate::clock::unix_ms();
    let status = match (&k.revoked_at_ms, &k.previous) {
        (Some(_), _) => "revoked",
        (None, Some(p)) if p.valid_until_ms > now => "rotating",
        _ => "active",
    };
    json!({
        "name": k.name,
        "source": if k.from_config { "config" } else { "store" },
        "status": status,
        "created_at_ms": k.created_at_ms,
        "rotated_at_ms": k.rotated_at_ms,
        "revoked_at_ms": k.revoked_at_ms,
        "previous_valid_until_ms": k.previous.as_ref().map(|p| p.valid_until_ms),
        "policy": k.policy,
    })
}

/// `GET /admin/keys`.
async fn list(State(state): State<AppState>) -> Response {
    let auth = state.gateway.auth();
    let keys: Vec<Value> = auth.list().await.iter().map(view).collect();
    Json(json!({"shared": auth.is_shared(), "keys": keys})).into_response()
}

/// Body of `POST /admin/keys`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    models: Option<Vec<String>>,
    agents: Option<Vec<String>>,
    requests_per_s: Option<f64>,
    burst: Option<u32>,
    tokens_per_min: Option<u64>,
    daily_budget_usd: Option<f64>,
}

/// Checks a policy like `[[auth.keys]]` is checked, naming the field.
fn check_policy(state: &AppState, policy: &KeyPolicy) -> Result<(), ApiError> {
    let pipeline = state.pipeline();
    for (field, list, agent) in [
        ("models", &policy.models, false),
        ("agents", &policy.agents, true),
    ] {
        for name in list.iter().flatten() {
            let target = if agent {
                Target::Agent(name.clone())
            } else {
                Target::Model(name.clone())
            };
            if !pipeline.knows(&target) {
                return Err(ApiError::bad_request(format!(
                    "`{field}`: no {} `{name}` is configured",
                    if agent { "agent" } else { "model" }
                )));
            }
        }
    }
    if let Some(rate) = policy.requests_per_s
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err(ApiError::bad_request("`requests_per_s` must be > 0"));
    }
    if policy.burst == Some(0) || (policy.burst.is_some() && policy.requests_per_s.is_none()) {
        return Err(ApiError::bad_request(
            "`burst` must be at least 1, next to `requests_per_s`",
        ));
    }
    if policy.tokens_per_min == Some(0) {
        return Err(ApiError::bad_request("`tokens_per_min` must be positive"));
    }
    if let Some(b) = policy.daily_budget_usd
        && !(b.is_finite() && b >= 0.0)
    {
        return Err(ApiError::bad_request("`daily_budget_usd` must be >= 0"));
    }
    Ok(())
}

/// `POST /admin/keys`: creates a key; the secret is in this answer only.
async fn create(
    State(state): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: CreateKey = body(raw)?;
    let policy = KeyPolicy {
        models: req.models,
        agents: req.agents,
        requests_per_s: req.requests_per_s,
        burst: req.burst,
        tokens_per_min: req.tokens_per_min,
        daily_budget_usd: req.daily_budget_usd,
    };
    check_policy(&state, &policy)?;
    let (record, secret) = state
        .gateway
        .auth()
        .create(&req.name, policy)
        .await
        .map_err(key_error)?;
    tracing::info!(key = %record.name, "API key created through the admin API");
    let mut answer = view(&record);
    answer["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// Body of `POST /admin/keys/{name}/rotate`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateKey {
    /// How long the old secret keeps working; `auth.rotation_grace_s` when absent.
    grace_s: Option<u64>,
}

/// `POST /admin/keys/{name}/rotate`: a new secret, in this answer only.
async fn rotate(
    State(state): State<AppState>,
    Path(name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: RotateKey = body(raw)?;
    let auth = state.gateway.auth();
    let grace = req
        .grace_s
        .map(Duration::from_secs)
        .unwrap_or_else(|| auth.rotation_grace());
    let (record, secret) = auth.rotate(&name, grace).await.map_err(key_error)?;
    tracing::info!(key = %name, grace_s = grace.as_secs(), "API key rotated through the admin API");
    let mut answer = view(&record);
    answer["secret"] = json!(secret);
    Ok(Json(answer).into_response())
}

/// `POST /admin/keys/{name}/revoke`: refused from now on.
async fn revoke(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let record = state
        .gateway
        .auth()
        .revoke(&name)
        .await
        .map_err(key_error)?;
    tracing::info!(key = %name, "API key revoked through the admin API");
    Ok(Json(view(&record)).into_response())
}
