//! Stored responses (`/v1/responses` with `store` on, the default): what
//! `GET /v1/responses/{id}` answers, its input items, and the conversation
//! a later request continues with `previous_response_id`.
//!
//! Entries live in sled under `responses\0<id>` as JSON carrying their
//! owner and their expiry, so they survive restarts; an expired entry is
//! never served and is removed when read, and [`ResponseStore::sweep`]
//! removes the rest at startup. A response belongs to the key that made it:
//! another key asking for it is told it does not exist.

use crate::store::Store;
use serde::{Deserialize, Serialize};
use serde_json::Value;

const PREFIX: &[u8] = b"responses\0";

/// Default `responses.ttl_s`: 30 days, as OpenAI keeps responses.
pub const DEFAULT_RESPONSES_TTL_S: u64 = 30 * 24 * 3600;

/// `[responses]`: how stored responses are kept.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponsesConfig {
    /// How long a stored response can be read and continued, seconds.
    pub ttl_s: u64,
}

impl Default for ResponsesConfig {
    fn default() -> Self {
        Self {
            ttl_s: DEFAULT_RESPONSES_TTL_S,
        }
    }
}

/// One stored response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredResponse {
    /// The key (client name) that made it.
    pub owner: String,
    /// When it stops being served, Unix milliseconds.
    pub expires_at_ms: u64,
    /// The response object, as the client got it.
    pub response: Value,
    /// Its input items, with ids.
    pub input_items: Vec<Value>,
    /// The chat messages of the whole conversation up to and including its
    /// answer (the responses it continued, its input, its output; not the
    /// instructions, which are per response): what a continuation starts
    /// from.
    pub conversation: Vec<Value>,
    /// Whether the conversation is the upstream's (a response passed
    /// through to an upstream that speaks the Responses API, which keeps
    /// it): continued by forwarding `previous_response_id` to it.
    #[serde(default)]
    pub upstream_held: bool,
}

/// Why the store could not be read or written; a write failure is logged
/// (the answer is still the client's), a read failure is an error.
#[derive(Debug, thiserror::Error)]
#[error("response store: {0}")]
pub struct ResponseStoreError(String);

/// The responses in the sled store.
#[derive(Clone)]
pub struct ResponseStore {
    store: Store,
    ttl_ms: u64,
}

impl ResponseStore {
    /// Responses in `store`, kept for `config.ttl_s`.
    pub fn new(store: Store, config: &ResponsesConfig) -> Self {
        Self {
            store,
            ttl_ms: config.ttl_s.saturating_mul(1000),
        }
    }

    fn key(id: &str) -> Vec<u8> {
        [PREFIX, id.as_bytes()].concat()
    }

    /// When an entry stored now expires, Unix milliseconds.
    pub fn expiry(&self) -> u64 {
        crate::clock::unix_ms().saturating_add(self.ttl_ms)
    }

    /// Stores `entry` as `id`.
    pub fn put(&self, id: &str, entry: &StoredResponse) -> Result<(), ResponseStoreError> {
        let bytes = serde_json::to_vec(entry).map_err(|e| ResponseStoreError(e.to_string()))?;
        self.store
            .db()
            .insert(Self::key(id), bytes)
            .map_err(|e| ResponseStoreError(e.to_string()))?;
        Ok(())
    }

    /// Response `id` if `owner` made it and it has not expired.
    pub fn get(&self, owner: &str, id: &str) -> Result<Option<StoredResponse>, ResponseStoreError> {
        let Some(bytes) = self
            .store
            .db()
            .get(Self::key(id))
            .map_err(|e| ResponseStoreError(e.to_string()))?
        else {
            return Ok(None);
        };
        let Ok(entry) = serde_json::from_slice::<StoredResponse>(&bytes) else {
            return Ok(None);
        };
        if entry.expires_at_ms <= crate::clock::unix_ms() {
            let _ = self.store.db().remove(Self::key(id));
            return Ok(None);
        }
        Ok((entry.owner == owner).then_some(entry))
    }

    /// Removes response `id` if `owner` made it; whether it was there.
    pub fn delete(&self, owner: &str, id: &str) -> Result<bool, ResponseStoreError> {
        if self.get(owner, id)?.is_none() {
            return Ok(false);
        }
        self.store
            .db()
            .remove(Self::key(id))
            .map_err(|e| ResponseStoreError(e.to_string()))?;
        Ok(true)
    }

    /// Removes every expired (or unreadable) entry; returns how many.
    pub fn sweep(&self) -> Result<usize, ResponseStoreError> {
        let db = self.store.db();
        let now = crate::clock::unix_ms();
        let mut removed = 0;
        for item in db.scan_prefix(PREFIX) {
            let (k, v) = item.map_err(|e| ResponseStoreError(e.to_string()))?;
            let keep =
                serde_json::from_slice::<StoredResponse>(&v).is_ok_and(|e| e.expires_at_ms > now);
            if !keep {
                db.remove(k)
                    .map_err(|e| ResponseStoreError(e.to_string()))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(owner: &str, expires_at_ms: u64) -> StoredResponse {
        StoredResponse {
            owner: owner.into(),
            expires_at_ms,
            response: json!({"id": "resp_1"}),
            input_items: vec![],
            conversation: vec![],
            upstream_held: false,
        }
    }

    #[test]
    fn a_response_is_its_owners_until_it_expires() {
        let store = ResponseStore::new(Store::temporary().unwrap(), &ResponsesConfig::default());
        store.put("resp_1", &entry("a", store.expiry())).unwrap();
        store.put("resp_old", &entry("a", 1)).unwrap();
        assert!(store.get("a", "resp_1").unwrap().is_some());
        assert!(
            store.get("b", "resp_1").unwrap().is_none(),
            "another key never reads it"
        );
        assert!(!store.delete("b", "resp_1").unwrap(), "nor deletes it");
        assert!(store.get("a", "resp_old").unwrap().is_none(), "expired");
        store.put("resp_old", &entry("a", 1)).unwrap();
        assert_eq!(store.sweep().unwrap(), 1);
        assert!(store.delete("a", "resp_1").unwrap());
        assert!(store.get("a", "resp_1").unwrap().is_none());
    }
}
