//! Batches (`/v1/files`, `/v1/batches`): JSONL files of requests the
//! gateway runs in the background, each line through the same handler as
//! the HTTP request it stands for — so keys, budgets, limits, the cache,
//! validators, routing and cost apply to it exactly as to an interactive
//! request, as the batch creator's key.
//!
//! Batch requests have a lower priority than interactive ones: at most
//! `batches.max_concurrency` run at once, on a semaphore interactive
//! requests never touch, each yielding to the scheduler before it starts;
//! they take no place in the global bulkhead. Every result is recorded in
//! the store (and flushed) before the runner moves on, so a restart resumes
//! a batch with the requests that have no result, never running a finished
//! one twice; at shutdown the runner takes no new request and waits for the
//! ones under way.

mod input;
mod routes;
mod store;

pub use input::{BatchLine, LineError, MultipartError, Part};
pub use store::{BatchRecord, BatchStore, BatchStoreError, FileRecord, RequestResult};

pub(super) use routes::{
    cancel_batch, create_batch, delete_file, file_content, get_batch, get_file, list_batches,
    list_files, upload_file,
};

use super::{ApiError, AppState};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::BatchLabels;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::response::IntoResponse;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Default `batches.max_concurrency`.
pub const DEFAULT_BATCH_CONCURRENCY: usize = 4;

/// Default `batches.max_file_bytes` (100 MiB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 100 * 1024 * 1024;

/// Largest `batches.max_file_bytes` the config accepts (1 GiB): a file is
/// one value in the store and is read whole when its batch runs.
pub const MAX_FILE_BYTES_LIMIT: u64 = 1024 * 1024 * 1024;

/// Default `batches.completion_window_s`: the `24h` clients ask for.
pub const DEFAULT_COMPLETION_WINDOW_S: u64 = 24 * 3600;

/// `[batches]`: how batches run.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchesConfig {
    /// Most batch requests running at once, over every batch.
    pub max_concurrency: usize,
    /// Largest `POST /v1/files` body, in bytes; that route only (every
    /// other one keeps `server.max_body_bytes`).
    pub max_file_bytes: u64,
    /// How long a batch has to finish, in seconds, from its creation (the
    /// `24h` of `completion_window`; shorter only to test expiry or to
    /// give up sooner). A batch not finished by then is `expired`.
    pub completion_window_s: u64,
}

impl Default for BatchesConfig {
    fn default() -> Self {
        Self {
            max_concurrency: DEFAULT_BATCH_CONCURRENCY,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            completion_window_s: DEFAULT_COMPLETION_WINDOW_S,
        }
    }
}

/// A fresh id: `prefix` and 24 random letters and digits.
pub(crate) fn new_id(prefix: &str) -> String {
    use rand::Rng;
    let suffix: String = rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("{prefix}{suffix}")
}

/// The batches of a gateway: their store and their runner.
pub struct Batches {
    store: BatchStore,
    permits: Arc<Semaphore>,
    stopping: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Held around every read-modify-write of a batch record (a cancel
    /// and the runner's finish must not overwrite each other).
    records: Mutex<()>,
    metrics: Arc<Metrics>,
    max_file_bytes: usize,
    window_s: u64,
    /// `batches.max_concurrency`: also how many of one batch's requests
    /// are waiting for a place at once (not every pending line).
    max_concurrency: usize,
}

impl Batches {
    /// Batches kept in `store`, run as `config` says, counted in `metrics`.
    pub fn new(store: crate::store::Store, config: &BatchesConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            store: BatchStore::new(store),
            permits: Arc::new(Semaphore::new(config.max_concurrency.max(1))),
            max_concurrency: config.max_concurrency.max(1),
            stopping: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            records: Mutex::new(()),
            metrics,
            max_file_bytes: usize::try_from(config.max_file_bytes).unwrap_or(usize::MAX),
            window_s: config.completion_window_s,
        }
    }

    /// `batches.completion_window_s`: how long a new batch has.
    pub fn window_s(&self) -> u64 {
        self.window_s
    }

    /// `batches.max_file_bytes`: the largest upload.
    pub fn max_file_bytes(&self) -> usize {
        self.max_file_bytes
    }

    /// The files and batches.
    pub fn store(&self) -> &BatchStore {
        &self.store
    }

    /// Resumes every batch a previous run left unfinished.
    pub fn resume(self: &Arc<Self>, state: &AppState) {
        let batches = match self.store.batches() {
            Ok(batches) => batches,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the batches to resume");
                return;
            }
        };
        for (id, record) in batches {
            if matches!(record.status(), "in_progress" | "cancelling" | "finalizing") {
                tracing::info!(batch = %id, status = record.status(), "resuming batch");
                self.start(state, id);
            }
        }
    }

    /// Runs batch `id` in the background.
    pub(super) fn start(self: &Arc<Self>, state: &AppState, id: String) {
        let task = tokio::spawn(self.clone().run(state.clone(), id));
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Stops the runner: no new request starts, and this returns when the
    /// ones under way are recorded (their batches resume at the next start).
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }

    /// The lock of batch record updates.
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether batch `id` must start no more requests: it is no longer
    /// running (cancelled) or its completion window has passed.
    fn cancelled(&self, id: &str) -> bool {
        self.store
            .batch_any(id)
            .ok()
            .flatten()
            .is_none_or(|r| r.status() != "in_progress" || r.expired_at(crate::clock::unix_ms()))
    }

    async fn run(self: Arc<Self>, state: AppState, id: String) {
        let Ok(Some(record)) = self.store.batch_any(&id) else {
            return;
        };
        let input_id = record.object["input_file_id"].as_str().unwrap_or_default();
        let lines = match self.store.file_content(&record.owner, input_id) {
            Ok(Some(data)) => input::jsonl(&data).map_err(|e| e.to_string()),
            Ok(None) => Err(format!("input file `{input_id}` is gone")),
            Err(e) => Err(e.to_string()),
        };
        let lines = match lines {
            Ok(lines) => lines,
            Err(reason) => return self.fail(&id, record, &reason),
        };
        let done: HashSet<usize> = match self.store.results(&id) {
            Ok(results) => results.into_iter().map(|(i, _)| i).collect(),
            Err(e) => return tracing::error!(batch = %id, error = %e, "cannot read batch results"),
        };
        let pending = (0..lines.len()).filter(|i| !done.contains(i));
        let (this, owner, lines) = (&self, record.owner.as_str(), &lines);
        futures::stream::iter(pending)
            .for_each_concurrent(self.max_concurrency, |index| {
                let (state, id) = (&state, id.as_str());
                async move {
                    let Ok(_permit) = this.permits.acquire().await else {
                        return;
                    };
                    if this.stopping.load(Ordering::SeqCst) || this.cancelled(id) {
                        return;
                    }
                    // Interactive requests go first: let whatever is ready run.
                    tokio::task::yield_now().await;
                    let result = execute(state, owner, &lines[index]).await;
                    let outcome = if result.ok { "completed" } else { "failed" };
                    // Flushed here, on the worker: awaiting sled's flush on
                    // its own threads instead measured no better for
                    // interactive requests (bench/README.md).
                    let recorded = this
                        .store
                        .put_result(id, index, &result)
                        .and_then(|()| this.store.flush());
                    if let Err(e) = recorded {
                        tracing::error!(batch = %id, index, error = %e, "cannot record a batch result");
                    }
                    this.metrics
                        .batch_requests
                        .get_or_create(&BatchLabels {
                            result: outcome.into(),
                        })
                        .inc();
                }
            })
            .await;
        if !self.stopping.load(Ordering::SeqCst) {
            self.expire(&id, lines);
            self.finish(&id);
        }
    }

    /// When batch `id` ran out of its window with requests that never
    /// started, records each of those as OpenAI does (an error-file line,
    /// `batch_expired`) and sets `expired_at` (status `finalizing`), so
    /// that `finish` ends it `expired`. Only after every request under way
    /// has ended: none is recorded twice.
    fn expire(&self, id: &str, lines: &[BatchLine]) {
        let _records = self.lock();
        let expired = (|| {
            let Some(mut record) = self.store.batch_any(id)? else {
                return Ok(false);
            };
            if record.status() != "in_progress" || !record.expired_at(crate::clock::unix_ms()) {
                return Ok(false);
            }
            let done: HashSet<usize> = self
                .store
                .results(id)?
                .into_iter()
                .map(|(i, _)| i)
                .collect();
            let unfinished: Vec<usize> = (0..lines.len()).filter(|i| !done.contains(i)).collect();
            if unfinished.is_empty() {
                return Ok(false);
            }
            for &index in &unfinished {
                let line = json!({
                    "id": new_id("batch_req_"),
                    "custom_id": lines[index].custom_id,
                    "response": null,
                    "error": {"code": "batch_expired", "message":
                        "This request could not be executed before the completion window expired."},
                });
                self.store
                    .put_result(id, index, &RequestResult { ok: false, line })?;
            }
            let now = crate::clock::unix_s();
            record.object["status"] = json!("finalizing");
            record.object["finalizing_at"] = json!(now);
            record.object["expired_at"] = json!(now);
            self.store.put_batch(id, &record)?;
            self.store.flush()?;
            tracing::info!(batch = %id, unfinished = unfinished.len(), "batch expired");
            Ok::<_, BatchStoreError>(true)
        })();
        if let Err(e) = expired {
            tracing::error!(batch = %id, error = %e, "cannot expire a batch");
        }
    }

    fn fail(&self, id: &str, mut record: BatchRecord, reason: &str) {
        tracing::warn!(batch = %id, reason, "batch failed");
        let _records = self.lock();
        record.object["status"] = json!("failed");
        record.object["failed_at"] = json!(crate::clock::unix_s());
        record.object["errors"] = json!({"object": "list", "data": [
            {"code": "invalid_input", "message": reason, "param": null, "line": null}]});
        if let Err(e) = self.store.put_batch(id, &record) {
            tracing::error!(batch = %id, error = %e, "cannot record a failed batch");
        }
    }

    /// Writes the output and error files and ends the batch: `completed`,
    /// `cancelled` when it was being cancelled, `expired` when it ran out
    /// of its window.
    fn finish(&self, id: &str) {
        let _records = self.lock();
        let written = (|| {
            let Some(mut record) = self.store.batch_any(id)? else {
                return Ok(());
            };
            let results = self.store.results(id)?;
            let now = crate::clock::unix_s();
            let (ok, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(|(_, r)| r.ok);
            for (lines, purpose, field) in [
                (ok, "batch_output", "output_file_id"),
                (failed, "batch_error", "error_file_id"),
            ] {
                if lines.is_empty() {
                    continue;
                }
                let mut data = Vec::new();
                for (_, result) in lines {
                    data.extend_from_slice(result.line.to_string().as_bytes());
                    data.push(b'\n');
                }
                let file_id = new_id("file-");
                let object = file_object(
                    &file_id,
                    data.len(),
                    &format!("{id}_{purpose}.jsonl"),
                    purpose,
                );
                let file = FileRecord {
                    owner: record.owner.clone(),
                    object,
                };
                self.store.put_file(&file_id, &file, &data)?;
                record.object[field] = json!(file_id);
            }
            let (status, at) = if record.status() == "cancelling" {
                ("cancelled", "cancelled_at")
            } else if !record.object["expired_at"].is_null() {
                ("expired", "expired_at")
            } else {
                ("completed", "completed_at")
            };
            for field in ["finalizing_at", at] {
                if record.object[field].is_null() {
                    record.object[field] = json!(now);
                }
            }
            record.object["status"] = json!(status);
            self.store.put_batch(id, &record)?;
            self.store.flush()
        })();
        match written {
            Ok(()) => tracing::info!(batch = %id, "batch finished"),
            Err(e) => tracing::error!(batch = %id, error = %e, "cannot finish a batch"),
        }
    }
}

/// An OpenAI file object.
pub(crate) fn file_object(id: &str, bytes: usize, filename: &str, purpose: &str) -> Value {
    json!({"id": id, "object": "file", "bytes": bytes, "created_at": crate::clock::unix_s(),
        "filename": filename, "purpose": purpose, "status": "processed",
        "expires_at": null, "status_details": null})
}

/// Runs one request of a batch as key `owner`, through the handler of its
/// endpoint, and gives its output (or error) line.
async fn execute(state: &AppState, owner: &str, line: &BatchLine) -> RequestResult {
    let body = Body::from(line.body.to_string());
    let response = match state.gateway.auth().identity_named(owner) {
        Err(e) => ApiError::from(e).into_response(),
        Ok(identity) if line.url == "/v1/embeddings" => {
            super::embeddings::create(State(state.clone()), Extension(identity), body)
                .await
                .into_response()
        }
        Ok(identity) => super::chat::completions(State(state.clone()), Extension(identity), body)
            .await
            .into_response(),
    };
    let status = response.status();
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).to_string()));
    RequestResult {
        ok: status.is_success(),
        line: json!({
            "id": new_id("batch_req_"),
            "custom_id": line.custom_id,
            "response": {"status_code": status.as_u16(), "request_id": request_id, "body": body},
            "error": null,
        }),
    }
}
