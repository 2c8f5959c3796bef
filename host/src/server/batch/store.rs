//! Files and batches in the sled store, so both survive restarts.
//!
//! Keys: `files\0<id>` (a [`FileRecord`]), `filedata\0<id>` (its bytes),
//! `batches\0<id>` (a [`BatchRecord`]) and `batchres\0<batch>\0<index>`
//! (one request's result, written before the runner moves on, so a resumed
//! batch runs only the requests without one). Every record names its
//! owner: for any other key it does not exist.

use crate::store::Store;
use serde::{Deserialize, Serialize};
use serde_json::Value;

const FILES: &[u8] = b"files\0";
const FILE_DATA: &[u8] = b"filedata\0";
const BATCHES: &[u8] = b"batches\0";
const RESULTS: &[u8] = b"batchres\0";

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("batch store: {0}")]
pub struct BatchStoreError(String);

fn err(e: impl std::fmt::Display) -> BatchStoreError {
    BatchStoreError(e.to_string())
}

/// One uploaded (or produced) file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileRecord {
    /// The key (client name) that owns it.
    pub owner: String,
    /// The file object, as OpenAI answers it.
    pub object: Value,
}

/// One batch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchRecord {
    /// The key (client name) that created it; its requests run as this key.
    pub owner: String,
    /// The batch object without `request_counts` (counted from the
    /// results when answered).
    pub object: Value,
    /// How many requests the input file holds.
    pub total: usize,
    /// When the batch expires, in Unix milliseconds (`expires_at` is in
    /// seconds; a short test window needs finer). Records written before
    /// this field use `expires_at`.
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
}

impl BatchRecord {
    /// The batch's `status`.
    pub fn status(&self) -> &str {
        self.object["status"].as_str().unwrap_or_default()
    }

    /// Whether its completion window has passed at `now_ms`.
    pub fn expired_at(&self, now_ms: u64) -> bool {
        let at = self.expires_at_ms.or_else(|| {
            self.object["expires_at"]
                .as_u64()
                .map(|s| s.saturating_mul(1000))
        });
        at.is_some_and(|at| now_ms >= at)
    }
}

/// One request's recorded result: the output (or error) file line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestResult {
    /// Whether the request succeeded (a 2xx): an output line, else an
    /// error line.
    pub ok: bool,
    /// The line, in OpenAI's batch output shape.
    pub line: Value,
}

/// Files and batches in the sled store.
#[derive(Clone)]
pub struct BatchStore {
    store: Store,
}

fn key(prefix: &[u8], id: &str) -> Vec<u8> {
    [prefix, id.as_bytes()].concat()
}

fn result_prefix(batch: &str) -> Vec<u8> {
    [RESULTS, batch.as_bytes(), b"\0"].concat()
}

impl BatchStore {
    /// Files and batches in `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    fn get<T: for<'de> Deserialize<'de>>(&self, k: &[u8]) -> Result<Option<T>, BatchStoreError> {
        let Some(bytes) = self.store.db().get(k).map_err(err)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(err)
    }

    fn put<T: Serialize>(&self, k: Vec<u8>, value: &T) -> Result<(), BatchStoreError> {
        let bytes = serde_json::to_vec(value).map_err(err)?;
        self.store.db().insert(k, bytes).map_err(err)?;
        Ok(())
    }

    /// Stores file `id` with its content.
    pub fn put_file(
        &self,
        id: &str,
        record: &FileRecord,
        data: &[u8],
    ) -> Result<(), BatchStoreError> {
        self.store
            .db()
            .insert(key(FILE_DATA, id), data)
            .map_err(err)?;
        self.put(key(FILES, id), record)
    }

    /// File `id` if `owner` owns it.
    pub fn file(&self, owner: &str, id: &str) -> Result<Option<FileRecord>, BatchStoreError> {
        let record: Option<FileRecord> = self.get(&key(FILES, id))?;
        Ok(record.filter(|r| r.owner == owner))
    }

    /// The content of file `id` if `owner` owns it.
    pub fn file_content(&self, owner: &str, id: &str) -> Result<Option<Vec<u8>>, BatchStoreError> {
        if self.file(owner, id)?.is_none() {
            return Ok(None);
        }
        let data = self.store.db().get(key(FILE_DATA, id)).map_err(err)?;
        Ok(data.map(|d| d.to_vec()))
    }

    /// Every file `owner` owns, `(id, record)`, in key order (the records
    /// only: no content is read).
    pub fn files(&self, owner: &str) -> Result<Vec<(String, FileRecord)>, BatchStoreError> {
        let mut out = Vec::new();
        for item in self.store.db().scan_prefix(FILES) {
            let (k, v) = item.map_err(err)?;
            let id = String::from_utf8_lossy(&k[FILES.len()..]).to_string();
            // An unreadable record is skipped, not fatal: the others still serve.
            if let Ok(record) = serde_json::from_slice::<FileRecord>(&v)
                && record.owner == owner
            {
                out.push((id, record));
            }
        }
        Ok(out)
    }

    /// Removes file `id` if `owner` owns it; whether it was there.
    pub fn delete_file(&self, owner: &str, id: &str) -> Result<bool, BatchStoreError> {
        if self.file(owner, id)?.is_none() {
            return Ok(false);
        }
        let db = self.store.db();
        db.remove(key(FILES, id)).map_err(err)?;
        db.remove(key(FILE_DATA, id)).map_err(err)?;
        Ok(true)
    }

    /// Stores batch `id`.
    pub fn put_batch(&self, id: &str, record: &BatchRecord) -> Result<(), BatchStoreError> {
        self.put(key(BATCHES, id), record)
    }

    /// Batch `id`, whoever owns it (the runner's view).
    pub fn batch_any(&self, id: &str) -> Result<Option<BatchRecord>, BatchStoreError> {
        self.get(&key(BATCHES, id))
    }

    /// Batch `id` if `owner` created it.
    pub fn batch(&self, owner: &str, id: &str) -> Result<Option<BatchRecord>, BatchStoreError> {
        Ok(self.batch_any(id)?.filter(|r| r.owner == owner))
    }

    /// Every batch, `(id, record)`, in key order.
    pub fn batches(&self) -> Result<Vec<(String, BatchRecord)>, BatchStoreError> {
        let mut out = Vec::new();
        for item in self.store.db().scan_prefix(BATCHES) {
            let (k, v) = item.map_err(err)?;
            let id = String::from_utf8_lossy(&k[BATCHES.len()..]).to_string();
            // An unreadable record is skipped, not fatal: the others still serve.
            if let Ok(record) = serde_json::from_slice(&v) {
                out.push((id, record));
            }
        }
        Ok(out)
    }

    /// Records the result of request `index` of batch `batch`.
    pub fn put_result(
        &self,
        batch: &str,
        index: usize,
        result: &RequestResult,
    ) -> Result<(), BatchStoreError> {
        let mut k = result_prefix(batch);
        k.extend_from_slice(format!("{index:08}").as_bytes());
        self.put(k, result)
    }

    /// The recorded results of batch `batch`, `(index, result)`, in order.
    pub fn results(&self, batch: &str) -> Result<Vec<(usize, RequestResult)>, BatchStoreError> {
        let prefix = result_prefix(batch);
        let mut out = Vec::new();
        for item in self.store.db().scan_prefix(&prefix) {
            let (k, v) = item.map_err(err)?;
            let index = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(|s| s.parse().ok());
            if let (Some(index), Ok(result)) = (index, serde_json::from_slice(&v)) {
                out.push((index, result));
            }
        }
        Ok(out)
    }

    /// Makes the writes so far durable (a result is recorded before the
    /// runner moves on, and must outlive a crash).
    pub fn flush(&self) -> Result<(), BatchStoreError> {
        self.store.db().flush().map(|_| ()).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn files_and_batches_are_their_owners() {
        let store = BatchStore::new(Store::temporary().unwrap());
        let file = FileRecord {
            owner: "a".into(),
            object: json!({"id": "file-1"}),
        };
        store.put_file("file-1", &file, b"{}\n").unwrap();
        assert!(store.file("b", "file-1").unwrap().is_none());
        assert!(store.file_content("b", "file-1").unwrap().is_none());
        assert_eq!(
            store.file_content("a", "file-1").unwrap().as_deref(),
            Some(&b"{}\n"[..])
        );
        assert!(!store.delete_file("b", "file-1").unwrap());
        assert!(store.delete_file("a", "file-1").unwrap());
        assert!(store.file("a", "file-1").unwrap().is_none());

        let other = FileRecord {
            owner: "b".into(),
            object: json!({"id": "file-2"}),
        };
        store.put_file("file-2", &other, b"{}\n").unwrap();
        let ids = |owner| -> Vec<String> {
            store
                .files(owner)
                .unwrap()
                .into_iter()
                .map(|(id, _)| id)
                .collect()
        };
        assert_eq!(ids("b"), ["file-2"]);
        assert!(ids("a").is_empty(), "a's file was deleted");

        let batch = BatchRecord {
            owner: "a".into(),
            object: json!({"status": "in_progress", "expires_at": 10}),
            total: 2,
            expires_at_ms: None,
        };
        assert!(!batch.expired_at(9_999) && batch.expired_at(10_000));
        let finer = BatchRecord {
            expires_at_ms: Some(10_500),
            ..batch.clone()
        };
        assert!(!finer.expired_at(10_499) && finer.expired_at(10_500));
        store.put_batch("batch_1", &batch).unwrap();
        assert!(store.batch("b", "batch_1").unwrap().is_none());
        assert_eq!(
            store.batch("a", "batch_1").unwrap().unwrap().status(),
            "in_progress"
        );
        let result = RequestResult {
            ok: true,
            line: json!({"custom_id": "x"}),
        };
        store.put_result("batch_1", 1, &result).unwrap();
        store.put_result("batch_10", 0, &result).unwrap();
        let results = store.results("batch_1").unwrap();
        assert_eq!(
            results.len(),
            1,
            "another batch's results are not this one's"
        );
        assert_eq!(results[0].0, 1);
    }
}
