//! The HTTP side of batches: `/v1/files` (upload, list, get, content, delete)
//! and `/v1/batches` (create, get, list, cancel), in OpenAI's shapes. A
//! file or batch belongs to the key that made it: for any other key it
//! does not exist (404).

use super::input::ENDPOINTS;
use super::{BatchRecord, FileRecord, file_object, input, new_id};
use crate::auth::Identity;
use crate::server::guard::read_body;
use crate::server::{ApiError, AppState};
use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

fn store_error(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "batch store failure");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "store_error",
        "the store failed",
    )
}

fn no_file(id: &str) -> ApiError {
    ApiError::not_found("file_not_found", format!("No such file: `{id}`"))
}

fn no_batch(id: &str) -> ApiError {
    ApiError::not_found("batch_not_found", format!("No such batch: `{id}`"))
}

/// The 413 of an upload over `batches.max_file_bytes`.
fn file_too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        "file_too_large",
        format!(
            "the upload is larger than the {limit}-byte limit of `batches.max_file_bytes` \
             (the gateway's config)"
        ),
    )
    .with_param("file")
}

/// Reads an upload's body within `batches.max_file_bytes` (instead of
/// `server.max_body_bytes`) and `server.body_read_timeout_ms`. A declared
/// `Content-Length` over the limit is refused before any byte is read;
/// otherwise the read stops at the first byte past it, so no more than the
/// limit is ever held.
async fn read_upload(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<bytes::Bytes, ApiError> {
    let limit = state.batches.max_file_bytes();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(file_too_large(limit));
    }
    let timeout = state.limits().body_read_timeout;
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(ApiError::body_timeout(timeout.as_millis() as u64)),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let inner = e.into_inner();
            if inner.is::<http_body_util::LengthLimitError>() {
                Err(file_too_large(limit))
            } else {
                Err(ApiError::bad_request(format!(
                    "could not read the request body: {inner}"
                )))
            }
        }
    }
}

/// `POST /v1/files`: a `multipart/form-data` upload with `purpose` and
/// `file`, up to `batches.max_file_bytes`; a `batch` file is checked line
/// by line.
pub(in crate::server) async fn upload_file(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = read_upload(&state, &headers, body).await?;
    let parts = input::multipart(&content_type, &bytes)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let purpose = parts
        .iter()
        .find(|p| p.name == "purpose")
        .map(|p| String::from_utf8_lossy(&p.data).trim().to_string());
    if purpose.as_deref() != Some("batch") {
        return Err(ApiError::bad_request(
            "`purpose` must be `batch` (the only files the gateway keeps)",
        )
        .with_param("purpose"));
    }
    let file = parts
        .into_iter()
        .find(|p| p.name == "file")
        .ok_or_else(|| ApiError::bad_request("a `file` part is required").with_param("file"))?;
    input::check(&file.data).map_err(|e| {
        ApiError::bad_request(format!("invalid batch file: {e}")).with_param("file")
    })?;
    let id = new_id("file-");
    let filename = file.filename.unwrap_or_else(|| "input.jsonl".into());
    let object = file_object(&id, file.data.len(), &filename, "batch");
    let record = FileRecord {
        owner: identity.name.clone(),
        object: object.clone(),
    };
    state
        .batches
        .store()
        .put_file(&id, &record, &file.data)
        .map_err(store_error)?;
    Ok(Json(object).into_response())
}

/// Query of the file list, as OpenAI's.
#[derive(Deserialize)]
pub(in crate::server) struct FileListQuery {
    /// Only files of this purpose (`batch`, `batch_output`, `batch_error`).
    #[serde(default)]
    purpose: Option<String>,
    /// Most files answered, 1 to 10,000 (default 10,000).
    #[serde(default)]
    limit: Option<usize>,
    /// `asc` or `desc` (default) by `created_at`.
    #[serde(default)]
    order: Option<String>,
    /// Answer the files after this one (in the list's order).
    #[serde(default)]
    after: Option<String>,
}

/// `GET /v1/files`: the caller's files, OpenAI's list (`data`,
/// `first_id`, `last_id`, `has_more`), with `purpose`, `limit`, `order`
/// and `after`.
pub(in crate::server) async fn list_files(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Query(query): Query<FileListQuery>,
) -> Result<Response, ApiError> {
    let descending = match query.order.as_deref() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`order` must be `asc` or `desc`, not `{other}`"
            ))
            .with_param("order"));
        }
    };
    let mut mine: Vec<(String, FileRecord)> = state
        .batches
        .store()
        .files(&identity.name)
        .map_err(store_error)?
        .into_iter()
        .filter(|(_, r)| {
            query
                .purpose
                .as_deref()
                .is_none_or(|p| r.object["purpose"].as_str() == Some(p))
        })
        .collect();
    mine.sort_by_key(|(id, r)| (r.object["created_at"].as_u64(), id.clone()));
    if descending {
        mine.reverse();
    }
    if let Some(after) = &query.after {
        let at = mine.iter().position(|(id, _)| id == after);
        mine = at.map_or_else(Vec::new, |at| mine.split_off(at + 1));
    }
    let limit = query.limit.unwrap_or(10_000).clamp(1, 10_000);
    let has_more = mine.len() > limit;
    mine.truncate(limit);
    let data: Vec<Value> = mine.into_iter().map(|(_, r)| r.object).collect();
    let first = data.first().map(|f| f["id"].clone());
    let last = data.last().map(|f| f["id"].clone());
    Ok(Json(
        json!({"object": "list", "data": data, "first_id": first, "last_id": last,
        "has_more": has_more}),
    )
    .into_response())
}

/// `GET /v1/files/{id}`.
pub(in crate::server) async fn get_file(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = state
        .batches
        .store()
        .file(&identity.name, &id)
        .map_err(store_error)?;
    Ok(Json(record.ok_or_else(|| no_file(&id))?.object).into_response())
}

/// `GET /v1/files/{id}/content`: the bytes as uploaded (or produced).
pub(in crate::server) async fn file_content(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let data = state
        .batches
        .store()
        .file_content(&identity.name, &id)
        .map_err(store_error)?
        .ok_or_else(|| no_file(&id))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}

/// `DELETE /v1/files/{id}`.
pub(in crate::server) async fn delete_file(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !state
        .batches
        .store()
        .delete_file(&identity.name, &id)
        .map_err(store_error)?
    {
        return Err(no_file(&id));
    }
    Ok(Json(json!({"id": id, "object": "file", "deleted": true})).into_response())
}

/// Body of `POST /v1/batches`.
#[derive(Deserialize)]
pub(in crate::server) struct CreateBatch {
    input_file_id: String,
    endpoint: String,
    completion_window: String,
    #[serde(default)]
    metadata: Option<Value>,
}

/// `POST /v1/batches`: checks the input file against the endpoint and
/// starts the batch.
pub(in crate::server) async fn create_batch(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&state, body).await?;
    let req: CreateBatch = crate::server::chat::parse(&bytes)?;
    if !ENDPOINTS.contains(&req.endpoint.as_str()) {
        return Err(ApiError::bad_request(format!(
            "`endpoint` must be one of {}, not `{}`",
            ENDPOINTS.join(", "),
            req.endpoint
        ))
        .with_param("endpoint"));
    }
    if req.completion_window != "24h" {
        return Err(ApiError::bad_request("`completion_window` must be `24h`")
            .with_param("completion_window"));
    }
    let store = state.batches.store();
    let content = store
        .file_content(&identity.name, &req.input_file_id)
        .map_err(store_error)?
        .ok_or_else(|| no_file(&req.input_file_id).with_param("input_file_id"))?;
    let lines = input::jsonl(&content).map_err(|e| {
        ApiError::bad_request(format!("invalid batch file: {e}")).with_param("input_file_id")
    })?;
    if let Some(at) = lines.iter().position(|l| l.url != req.endpoint) {
        return Err(ApiError::bad_request(format!(
            "invalid batch file: line {}: `url` `{}` is not the batch's endpoint `{}`",
            at + 1,
            lines[at].url,
            req.endpoint
        ))
        .with_param("input_file_id"));
    }
    let id = new_id("batch_");
    let now_ms = crate::clock::unix_ms();
    let now = now_ms / 1000;
    let window_s = state.batches.window_s();
    let object = json!({
        "id": id, "object": "batch", "endpoint": req.endpoint, "errors": null,
        "input_file_id": req.input_file_id, "completion_window": "24h",
        "status": "in_progress", "output_file_id": null, "error_file_id": null,
        "created_at": now, "in_progress_at": now, "expires_at": now + window_s,
        "finalizing_at": null, "completed_at": null, "failed_at": null, "expired_at": null,
        "cancelling_at": null, "cancelled_at": null, "metadata": req.metadata,
    });
    let record = BatchRecord {
        owner: identity.name.clone(),
        object,
        total: lines.len(),
        expires_at_ms: Some(now_ms + window_s * 1000),
    };
    store.put_batch(&id, &record).map_err(store_error)?;
    let answer = answered(&state, &id, record)?;
    state.batches.start(&state, id);
    Ok(Json(answer).into_response())
}

/// The batch object with its `request_counts`, counted from its results.
fn answered(state: &AppState, id: &str, record: BatchRecord) -> Result<Value, ApiError> {
    let results = state.batches.store().results(id).map_err(store_error)?;
    let completed = results.iter().filter(|(_, r)| r.ok).count();
    let mut object = record.object;
    object["request_counts"] = json!({"total": record.total, "completed": completed,
        "failed": results.len() - completed});
    Ok(object)
}

/// `GET /v1/batches/{id}`.
pub(in crate::server) async fn get_batch(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = state
        .batches
        .store()
        .batch(&identity.name, &id)
        .map_err(store_error)?;
    let record = record.ok_or_else(|| no_batch(&id))?;
    Ok(Json(answered(&state, &id, record)?).into_response())
}

/// `POST /v1/batches/{id}/cancel`: a running batch turns `cancelling`
/// (no new request starts) and then `cancelled`, with the files of what
/// ran; any other is a 409.
pub(in crate::server) async fn cancel_batch(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.batches.store();
    let _records = state.batches.lock();
    let mut record = store
        .batch(&identity.name, &id)
        .map_err(store_error)?
        .ok_or_else(|| no_batch(&id))?;
    if record.status() != "in_progress" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            "batch_not_cancellable",
            format!("Cannot cancel a batch with status `{}`", record.status()),
        ));
    }
    record.object["status"] = json!("cancelling");
    record.object["cancelling_at"] = json!(crate::clock::unix_s());
    store.put_batch(&id, &record).map_err(store_error)?;
    Ok(Json(answered(&state, &id, record)?).into_response())
}

/// Query of the batch list.
#[derive(Deserialize)]
pub(in crate::server) struct ListQuery {
    /// Most batches answered, 1 to 100 (default 20).
    #[serde(default)]
    limit: Option<usize>,
    /// Answer the batches after this one.
    #[serde(default)]
    after: Option<String>,
}

/// `GET /v1/batches`: the caller's batches, newest first, OpenAI's list.
pub(in crate::server) async fn list_batches(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let mut mine: Vec<(String, BatchRecord)> = state
        .batches
        .store()
        .batches()
        .map_err(store_error)?
        .into_iter()
        .filter(|(_, r)| r.owner == identity.name)
        .collect();
    mine.sort_by_key(|(id, r)| {
        (
            std::cmp::Reverse(r.object["created_at"].as_u64()),
            id.clone(),
        )
    });
    if let Some(after) = &query.after {
        let at = mine.iter().position(|(id, _)| id == after);
        mine = at.map_or_else(Vec::new, |at| mine.split_off(at + 1));
    }
    let limit = query.limit.unwrap_or(20).clamp(1, 100);
    let has_more = mine.len() > limit;
    mine.truncate(limit);
    let data = mine
        .into_iter()
        .map(|(id, r)| answered(&state, &id, r))
        .collect::<Result<Vec<_>, _>>()?;
    let first = data.first().map(|b| b["id"].clone());
    let last = data.last().map(|b| b["id"].clone());
    Ok(Json(
        json!({"object": "list", "data": data, "first_id": first, "last_id": last,
        "has_more": has_more}),
    )
    .into_response())
}
