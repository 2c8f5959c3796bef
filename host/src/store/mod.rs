//! Persistent state: the embedded sled store.
//!
//! sled is the embedded default (no server to run); it holds the plugin
//! key/value namespaces now, and the cache, rollout state and API keys as
//! those features land. Keys are prefixed by purpose so one tree serves all.

use crate::clock;
use std::path::Path;

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the store's lock: sled admits one process at a time.
    #[error(
        "the store at {path} is in use by another process (an agentrouter serving from it, or `agentrouter keys` on it); stop that process, or set [store] path to another directory"
    )]
    Locked {
        /// The store's directory.
        path: String,
    },
    /// The store could not be opened (missing permissions, not a directory, ...).
    #[error("cannot open the store at {path}: {cause}; set [store] path to a writable directory")]
    Open {
        /// The store's directory.
        path: String,
        /// What the file system said.
        cause: sled::Error,
    },
    /// sled failed while serving (I/O, corruption).
    #[error("store at {path}: {cause}")]
    Sled {
        /// The store's directory.
        path: String,
        /// Underlying error (part of the message, not a separate cause, so
        /// a chain of errors never prints it twice).
        cause: sled::Error,
    },
    /// A key or value exceeds the store's bounds.
    #[error("{0}")]
    TooLarge(String),
}

impl StoreError {
    /// The error for a failed `sled::open` of `path`: a held lock is named
    /// as such, because sled reports it as a bare I/O error.
    fn opening(path: String, cause: sled::Error) -> StoreError {
        // sled wraps the lock's EWOULDBLOCK in an error of its own kind
        // whose text is all that says what happened.
        let locked = matches!(&cause, sled::Error::Io(io)
            if io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock"));
        if locked {
            StoreError::Locked { path }
        } else {
            StoreError::Open { path, cause }
        }
    }
}

/// Largest key a plugin may use, in bytes.
pub const MAX_KV_KEY_BYTES: usize = 512;
/// Largest value a plugin may store, in bytes.
pub const MAX_KV_VALUE_BYTES: usize = 1 << 20;

/// Key/value storage for plugins, namespaced per plugin.
pub trait KvStore: Send + Sync + 'static {
    /// The value under `key` in `namespace`, unless absent or expired.
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Store a value, expiring after `ttl_seconds` when given.
    fn set(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        ttl_seconds: Option<u32>,
    ) -> Result<(), StoreError>;
    /// Remove a value.
    fn delete(&self, namespace: &str, key: &str) -> Result<(), StoreError>;
}

/// The sled-backed store.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    path: String,
}

impl Store {
    /// Open (or create) a store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.display().to_string();
        let db = sled::open(dir).map_err(|cause| StoreError::opening(path.clone(), cause))?;
        Ok(Self { db, path })
    }

    /// A throw-away in-memory store (tests, `plugin inspect`).
    pub fn temporary() -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|cause| StoreError::Open {
                path: "<temporary>".into(),
                cause,
            })?;
        Ok(Self {
            db,
            path: "<temporary>".into(),
        })
    }

    /// Where the store lives, for messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The underlying database, for other host services.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    fn err(&self, cause: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            cause,
        }
    }

    fn kv_key(namespace: &str, key: &str) -> Vec<u8> {
        // The namespace is a configured plugin name, which cannot contain NUL,
        // so `kv\0<plugin>\0<key>` cannot collide across plugins.
        let mut k = Vec::with_capacity(4 + namespace.len() + key.len());
        k.extend_from_slice(b"kv\0");
        k.extend_from_slice(namespace.as_bytes());
        k.push(0);
        k.extend_from_slice(key.as_bytes());
        k
    }
}

impl KvStore for Store {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let k = Self::kv_key(namespace, key);
        let Some(raw) = self.db.get(&k).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        // Layout: 8-byte big-endian expiry in unix ms (0 = never), then the value.
        if raw.len() < 8 {
            return Ok(None);
        }
        let expires = u64::from_be_bytes(raw[..8].try_into().unwrap_or([0; 8]));
        if expires != 0 && expires <= clock::unix_ms() {
            self.db.remove(&k).map_err(|e| self.err(e))?;
            return Ok(None);
        }
        Ok(Some(raw[8..].to_vec()))
    }

    fn set(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        ttl_seconds: Option<u32>,
    ) -> Result<(), StoreError> {
        if key.len() > MAX_KV_KEY_BYTES {
            return Err(StoreError::TooLarge(format!(
                "key is {} bytes, limit is {MAX_KV_KEY_BYTES}",
                key.len()
            )));
        }
        if value.len() > MAX_KV_VALUE_BYTES {
            return Err(StoreError::TooLarge(format!(
                "value is {} bytes, limit is {MAX_KV_VALUE_BYTES}",
                value.len()
            )));
        }
        let expires = ttl_seconds
            .map(|s| clock::unix_ms() + u64::from(s) * 1000)
            .unwrap_or(0);
        let mut raw = Vec::with_capacity(8 + value.len());
        raw.extend_from_slice(&expires.to_be_bytes());
        raw.extend_from_slice(value);
        self.db
            .insert(Self::kv_key(namespace, key), raw)
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<(), StoreError> {
        self.db
            .remove(Self::kv_key(namespace, key))
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_is_namespaced_and_expires() {
        let store = Store::temporary().unwrap();
        store.set("a", "k", b"1", None).unwrap();
        store.set("b", "k", b"2", Some(0)).unwrap();
        assert_eq!(store.get("a", "k").unwrap(), Some(b"1".to_vec()));
        // ttl 0 expires immediately: the value is gone on the next read.
        assert_eq!(store.get("b", "k").unwrap(), None);
        store.delete("a", "k").unwrap();
        assert_eq!(store.get("a", "k").unwrap(), None);
        let big = vec![0u8; MAX_KV_VALUE_BYTES + 1];
        assert!(matches!(
            store.set("a", "k", &big, None),
            Err(StoreError::TooLarge(_))
        ));
    }
}
