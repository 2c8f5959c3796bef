//! The admin API under `/admin`: plugin versions, hot swap, rollouts,
//! config reload and API keys (`super::keys`), behind a bearer token.
//!
//! Every change takes the control-plane guard ([`Rollouts::lock`]) before
//! it looks its slot up, so changes from several clients, the rollout
//! controllers, `--watch` and config reloads apply one at a time, each to
//! the slot actually served. Reads (`GET`) take no lock.
//!
//! Without `[admin] token` every admin route answers 403 saying how to turn
//! it on. The token is compared in constant time (`subtle`), over sha256
//! digests so that not even the token's length leaks through timing.

use super::{ApiError, AppState};
use crate::config::ConfigError;
use crate::rollout::{HotPlugin, Phase, RolloutError, RolloutRequest, Rollouts};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Largest component an admin upload may carry (interpreted-language
/// plugins bundle their interpreter and reach tens of MiB).
pub const ADMIN_MAX_BODY_BYTES: usize = 64 << 20;

/// What a config reload changed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReloadReport {
    /// The file that was read.
    pub file: String,
    /// Slots loaded anew (new, or their config or file changed).
    pub plugins_loaded: Vec<String>,
    /// Slots kept as they were, with any swapped version and rollout.
    pub plugins_kept: Vec<String>,
    /// Slots that no longer exist.
    pub plugins_removed: Vec<String>,
    /// Upstreams built anew (their breaker state starts closed).
    pub upstreams_rebuilt: Vec<String>,
    /// Upstreams kept with their statistics and breaker state.
    pub upstreams_kept: Vec<String>,
    /// Dotted keys (`server.listen`, `auth.keys[0].secret`) of settings read
    /// only at start whose value in the file differs from the running one:
    /// they take effect after a restart (see `config::StartupConfig`).
    pub needs_restart: Vec<String>,
}

/// Why a config reload was refused; the running config stays in effect.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The gateway runs a config that was not read from a file.
    #[error("the gateway was not started from a config file")]
    NoConfigFile,
    /// The file is invalid; the error names file, line and key.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The file is valid but could not be applied (a plugin that does not
    /// load, an inconsistent pipeline).
    #[error("{file}: {source}")]
    Apply {
        /// The config file.
        file: String,
        /// What failed, from the assembly.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Re-reads the config and swaps in what it says (implemented by the app,
/// which knows how to assemble a pipeline).
pub trait Reload: Send + Sync {
    /// Validates the config file and applies it, or explains (file:line) why not.
    fn reload(&self) -> BoxFuture<'_, Result<ReloadReport, ReloadError>>;
}

/// What the admin routes need besides the live pipeline.
#[derive(Clone)]
pub struct AdminState {
    /// The control plane.
    pub rollouts: Arc<Rollouts>,
    /// Config reloads; `None` when the gateway runs without a config file.
    pub reloader: Option<Arc<dyn Reload>>,
}

/// The `/admin` routes.
pub(super) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/admin/plugins", get(list))
        .route("/admin/plugins/{name}", get(show).put(swap))
        .route("/admin/plugins/{name}/candidate", put(candidate))
        .route("/admin/plugins/{name}/rollout", get(status).post(start))
        .route("/admin/plugins/{name}/rollout/promote", post(promote))
        .route("/admin/plugins/{name}/rollout/rollback", post(rollback))
        .route("/admin/reload", post(reload))
        .merge(super::keys::routes())
        .layer(DefaultBodyLimit::max(ADMIN_MAX_BODY_BYTES))
        .route_layer(middleware::from_fn_with_state(state, authorize))
}

fn admin_error(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, "admin_error", code, message)
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Lets a request through only with `Authorization: Bearer <admin.token>`.
async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let live = state.gateway.live().load();
    let Some(token) = live.admin_token.as_ref() else {
        return admin_error(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "the admin API is disabled: set [admin] token (e.g. token = \"${env:AGENTROUTER_ADMIN_TOKEN}\") in the config",
        )
        .into_response();
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = presented.is_some_and(|p| {
        bool::from(digest(p.as_bytes()).ct_eq(&digest(token.expose().as_bytes())))
    });
    drop(live);
    if !ok {
        let mut response = admin_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "admin requests need `Authorization: Bearer <admin token>`",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
        return response;
    }
    next.run(request).await
}

impl From<RolloutError> for ApiError {
    fn from(e: RolloutError) -> Self {
        let message = e.to_string();
        match e {
            RolloutError::UnknownSlot(_) => {
                admin_error(StatusCode::NOT_FOUND, "plugin_not_found", message)
            }
            RolloutError::Load(_) | RolloutError::Smoke { .. } => {
                admin_error(StatusCode::UNPROCESSABLE_ENTITY, "plugin_rejected", message)
            }
            RolloutError::Conflict(_) => admin_error(StatusCode::CONFLICT, "conflict", message),
            RolloutError::Invalid(_) | RolloutError::OutOfRange(_) | RolloutError::LoadTask(_) => {
                admin_error(StatusCode::BAD_REQUEST, "invalid_request", message)
            }
            RolloutError::NotFound(_) => {
                admin_error(StatusCode::NOT_FOUND, "candidate_not_found", message)
            }
            RolloutError::Store(_) => {
                admin_error(StatusCode::INTERNAL_SERVER_ERROR, "store_error", message)
            }
        }
    }
}

/// The slot `name` of the live pipeline. Changes look it up while holding
/// the control-plane guard: only a config reload replaces the pipeline's
/// slots, and it holds the guard too, so the slot found is the one served
/// until the change is done.
fn slot(state: &AppState, name: &str) -> Result<Arc<HotPlugin>, ApiError> {
    state
        .pipeline()
        .slots()
        .get(name)
        .map(|s| s.plugin.clone())
        .ok_or_else(|| RolloutError::UnknownSlot(name.to_string()).into())
}

fn upload(raw: Result<Bytes, BytesRejection>) -> Result<Vec<u8>, ApiError> {
    let bytes = raw.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(ADMIN_MAX_BODY_BYTES)
        } else {
            ApiError::bad_request(format!("could not read the upload: {rejection}"))
        }
    })?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "the body must be a .wasm component (e.g. curl --data-binary @plugin.wasm)",
        ));
    }
    Ok(bytes.to_vec())
}

/// Query of an upload: an optional version label.
#[derive(Deserialize)]
struct UploadQuery {
    version: Option<String>,
}

/// `GET /admin/plugins`.
async fn list(State(state): State<AppState>) -> Response {
    let pipeline = state.pipeline();
    let mut names: Vec<&String> = pipeline.slots().keys().collect();
    names.sort();
    let plugins: Vec<_> = names
        .into_iter()
        .filter_map(|n| pipeline.slots().get(n))
        .map(|s| {
            let mut view =
                serde_json::to_value(state.admin.rollouts.view(&s.plugin)).unwrap_or_default();
            view["failure_policy"] = json!(format!("{:?}", s.policy).to_lowercase());
            view
        })
        .collect();
    Json(json!({ "plugins": plugins })).into_response()
}

/// `GET /admin/plugins/{name}`.
async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let hot = slot(&state, &name)?;
    Ok(Json(state.admin.rollouts.view(&hot)).into_response())
}

/// `PUT /admin/plugins/{name}`: compile, type-check, smoke-call, swap.
async fn swap(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<UploadQuery>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let rollouts = &state.admin.rollouts;
    let guard = rollouts.lock().await;
    let hot = slot(&state, &name)?;
    let bytes = upload(raw)?;
    let previous = hot.identity();
    let candidates = state.pipeline().candidates();
    let plugin = rollouts
        .swap(&guard, &hot, bytes, query.version, &candidates)
        .await?;
    drop(guard);
    let id = plugin.identity();
    Ok(Json(json!({
        "name": name,
        "previous": {"version": previous.version, "digest": previous.digest},
        "live": {"version": id.version, "digest": id.digest},
    }))
    .into_response())
}

/// `PUT /admin/plugins/{name}/candidate`: compile, type-check, store.
async fn candidate(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<UploadQuery>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let rollouts = &state.admin.rollouts;
    let guard = rollouts.lock().await;
    let hot = slot(&state, &name)?;
    let bytes = upload(raw)?;
    let plugin = rollouts.stage(&guard, &hot, bytes, query.version).await?;
    drop(guard);
    let id = plugin.identity();
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": name, "version": id.version, "digest": id.digest})),
    )
        .into_response())
}

/// `POST /admin/plugins/{name}/rollout`.
async fn start(
    State(state): State<AppState>,
    Path(name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let rollouts = &state.admin.rollouts;
    let guard = rollouts.lock().await;
    let hot = slot(&state, &name)?;
    let bytes = raw.map_err(|e| ApiError::bad_request(format!("could not read the body: {e}")))?;
    let req: RolloutRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid rollout request: {e}")))?;
    let status = rollouts.start(&guard, &hot, req).await?;
    drop(guard);
    Ok((StatusCode::CREATED, Json(status)).into_response())
}

/// `GET /admin/plugins/{name}/rollout`: the rollout in progress, or else
/// the last one that ended.
async fn status(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let hot = slot(&state, &name)?;
    match state.admin.rollouts.view(&hot).rollout {
        Some(status) => Ok(Json(status).into_response()),
        None => Err(admin_error(
            StatusCode::NOT_FOUND,
            "no_rollout",
            format!("slot `{name}` has had no rollout since the gateway started"),
        )),
    }
}

async fn conclude(state: AppState, name: String, phase: Phase) -> Result<Response, ApiError> {
    let rollouts = &state.admin.rollouts;
    let guard = rollouts.lock().await;
    let hot = slot(&state, &name)?;
    let status = rollouts.conclude(&guard, &hot, phase).await?;
    drop(guard);
    Ok(Json(status).into_response())
}

/// `POST /admin/plugins/{name}/rollout/promote`.
async fn promote(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    conclude(state, name, Phase::Promoted).await
}

/// `POST /admin/plugins/{name}/rollout/rollback`.
async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    conclude(state, name, Phase::RolledBack).await
}

/// `POST /admin/reload`.
async fn reload(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some(reloader) = state.admin.reloader.clone() else {
        return Err(admin_error(
            StatusCode::CONFLICT,
            "no_config_file",
            "the gateway runs the embedded quickstart, so there is no file to reload: start it with --config FILE",
        ));
    };
    match reloader.reload().await {
        Ok(report) => Ok(Json(json!({"status": "reloaded", "report": report})).into_response()),
        Err(why) => Err(admin_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_config",
            format!("config not reloaded; the running config stays in effect: {why}"),
        )),
    }
}
