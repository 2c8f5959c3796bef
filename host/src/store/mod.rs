//! Persistent state: the embedded sled store.
//!
//! sled is the embedded default (no server to run); it holds the plugin
//! key/value namespaces now, and the cache, rollout state and API keys as
//! those features land. Keys are prefixed by purpose so one tree serves all.

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
    /// A write would take a plugin's kv namespace past its quota.
    #[error("{0}")]
    Quota(String),
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

mod kv;

pub use kv::{KvQuota, KvStore, KvUsage, MAX_KV_KEY_BYTES, MAX_KV_VALUE_BYTES, Swept};

/// The sled-backed store.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    path: String,
    /// Keys and bytes of each kv namespace, counted once per process (see
    /// [`kv`]); shared by every clone.
    kv_usage: kv::UsageTable,
}

impl Store {
    /// Open (or create) a store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.display().to_string();
        let db = sled::open(dir).map_err(|cause| StoreError::opening(path.clone(), cause))?;
        Ok(Self {
            db,
            path,
            kv_usage: Default::default(),
        })
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
            kv_usage: Default::default(),
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
}
