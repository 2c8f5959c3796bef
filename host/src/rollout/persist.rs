//! Rollout state in the store, so swaps and rollouts survive restarts.
//!
//! Per slot one JSON record under `rollout\0slot\0<name>`: the digest the
//! config loaded (`base_digest`), an admin-installed live version, the latest
//! uploaded candidate, and the rollout in progress with its progress.
//! Component bytes live once per digest under `rollout\0wasm\0<sha256>`, so
//! a restart can load them without the file they were uploaded from.
//!
//! An admin-installed version applies at start only while the config still
//! loads the same `base_digest`: once an operator changes the config's
//! plugin, the config wins and the record is reset.

use super::plan::{Progress, RolloutSpec, VersionRef};
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};

/// What the store remembers about one slot.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SlotRecord {
    /// Digest of the version the config loads into the slot.
    pub base_digest: String,
    /// A version installed through the admin API (or a promotion).
    pub live: Option<VersionRef>,
    /// The latest candidate uploaded for the slot.
    pub staged: Option<VersionRef>,
    /// The rollout in progress.
    pub rollout: Option<RolloutRecord>,
}

/// A rollout in progress, as persisted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// Its settings.
    pub spec: RolloutSpec,
    /// The candidate.
    pub candidate: VersionRef,
    /// Unix seconds when it started.
    pub started_at: u64,
    /// Split, counters and events so far.
    pub progress: Progress,
}

fn slot_key(name: &str) -> Vec<u8> {
    [b"rollout\0slot\0".as_slice(), name.as_bytes()].concat()
}

fn wasm_key(digest: &str) -> Vec<u8> {
    [b"rollout\0wasm\0".as_slice(), digest.as_bytes()].concat()
}

fn sled_err(store: &Store, cause: sled::Error) -> StoreError {
    StoreError::Sled {
        path: store.path().to_string(),
        cause,
    }
}

/// The record of slot `name`, if any. A record that no longer parses (an
/// older format) is treated as absent rather than failing the start.
pub fn load(store: &Store, name: &str) -> Result<Option<SlotRecord>, StoreError> {
    let raw = store
        .db()
        .get(slot_key(name))
        .map_err(|e| sled_err(store, e))?;
    Ok(raw.and_then(|bytes| match serde_json::from_slice(&bytes) {
        Ok(record) => Some(record),
        Err(e) => {
            tracing::warn!(plugin = %name, error = %e, "ignoring unreadable rollout record");
            None
        }
    }))
}

/// Writes the record of slot `name` and flushes it to disk.
pub fn save(store: &Store, name: &str, record: &SlotRecord) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(record).unwrap_or_default();
    store
        .db()
        .insert(slot_key(name), bytes)
        .map_err(|e| sled_err(store, e))?;
    store.db().flush().map_err(|e| sled_err(store, e))?;
    Ok(())
}

/// Keeps component bytes under their digest.
pub fn put_wasm(store: &Store, digest: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let key = wasm_key(digest);
    if !store
        .db()
        .contains_key(&key)
        .map_err(|e| sled_err(store, e))?
    {
        store
            .db()
            .insert(key, bytes)
            .map_err(|e| sled_err(store, e))?;
    }
    Ok(())
}

/// Component bytes stored under `digest`.
pub fn get_wasm(store: &Store, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(store
        .db()
        .get(wasm_key(digest))
        .map_err(|e| sled_err(store, e))?
        .map(|v| v.to_vec()))
}

/// Every slot's record, by slot name (a backup).
pub fn all(store: &Store) -> Result<Vec<(String, SlotRecord)>, StoreError> {
    let prefix = b"rollout\0slot\0";
    let mut out = Vec::new();
    for item in store.db().scan_prefix(prefix) {
        let (k, v) = item.map_err(|e| sled_err(store, e))?;
        let name = String::from_utf8_lossy(&k[prefix.len()..]).to_string();
        if let Ok(record) = serde_json::from_slice(&v) {
            out.push((name, record));
        }
    }
    Ok(out)
}

/// Every stored component, by digest (a backup).
pub fn all_wasm(store: &Store) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let prefix = b"rollout\0wasm\0";
    let mut out = Vec::new();
    for item in store.db().scan_prefix(prefix) {
        let (k, v) = item.map_err(|e| sled_err(store, e))?;
        out.push((
            String::from_utf8_lossy(&k[prefix.len()..]).to_string(),
            v.to_vec(),
        ));
    }
    Ok(out)
}
