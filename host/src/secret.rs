//! [`Secret`]: a value that must never be printed.
//!
//! API keys, tokens and resolved `${env:…}` / `${file:…}` references are
//! held in it wherever they travel (config sections, key records, upstream
//! clients), so a logged value or a serialised comparison never shows them.

use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::OnceLock;

/// A value that must never be printed: API keys, resolved secret references.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that needs it (a request header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Serialises as a fingerprint, never the value: a sha256 of the value
/// under a key drawn once per process. Equal secrets serialise alike within
/// one process, which is all a reload needs to tell that one changed, and
/// the output is worthless anywhere else (no dictionary attack on a
/// fingerprint whose key never left the process).
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        static KEY: OnceLock<[u8; 32]> = OnceLock::new();
        let key = KEY.get_or_init(rand::random);
        let digest = Sha256::new()
            .chain_update(key)
            .chain_update(self.0.as_bytes())
            .finalize();
        s.serialize_str(&format!("secret:{}", hex::encode(&digest[..8])))
    }
}
