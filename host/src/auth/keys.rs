//! API key records and their persistence in the sled store.
//!
//! A record holds the SHA-256 of the secret, never the secret: the secret is
//! printed once by `agentrouter keys create` / `rotate` and exists nowhere
//! else. After a rotation the previous hash stays valid until the end of the
//! grace period, so clients can move to the new secret without downtime.
//! Records live under `auth\0key\0<name>` as JSON.

use super::AuthError;
use crate::clock;
use crate::store::Store;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;

const PREFIX: &[u8] = b"auth\0key\0";
/// Prefix of generated secrets, so they are recognisable in leaks and scans.
pub const SECRET_PREFIX: &str = "sk-ar-";

/// What a key may do.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyPolicy {
    /// Models the key may use; `None` means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Agents the key may use; `None` means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<String>>,
    /// Sustained requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_s: Option<f64>,
    /// Burst above the sustained rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_min: Option<u64>,
    /// Spend allowed per UTC day, USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_budget_usd: Option<f64>,
}

/// A secret replaced by a rotation, valid until the grace period ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreviousSecret {
    /// SHA-256 of the old secret, hex.
    pub hash: String,
    /// End of the grace period, Unix milliseconds.
    pub valid_until_ms: u64,
}

/// One API key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Name: the client identity in logs, metrics, limits and budgets.
    pub name: String,
    /// SHA-256 of the current secret, hex.
    pub hash: String,
    /// The secret before the last rotation, during its grace period.
    #[serde(default)]
    pub previous: Option<PreviousSecret>,
    /// Creation time, Unix milliseconds (0 for keys from the config file).
    pub created_at_ms: u64,
    /// Last rotation, Unix milliseconds.
    #[serde(default)]
    pub rotated_at_ms: Option<u64>,
    /// Revocation time; a revoked key is refused.
    #[serde(default)]
    pub revoked_at_ms: Option<u64>,
    /// What it may do.
    #[serde(default)]
    pub policy: KeyPolicy,
    /// Declared in the config file (not in the store): read-only.
    #[serde(skip)]
    pub from_config: bool,
}

/// SHA-256 of a secret, hex.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random secret: `sk-ar-` and 43 alphanumerics (~256 bits).
pub fn generate_secret() -> String {
    let body: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(43)
        .map(char::from)
        .collect();
    format!("{SECRET_PREFIX}{body}")
}

/// Keys in the store: what the `keys` CLI and the gateway share.
#[derive(Clone)]
pub struct KeyStore {
    store: Store,
}

impl KeyStore {
    /// The keys of `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    fn db_key(name: &str) -> Vec<u8> {
        [PREFIX, name.as_bytes()].concat()
    }

    fn err(e: impl std::fmt::Display) -> AuthError {
        AuthError::Store(e.to_string())
    }

    /// Every stored key, by name.
    pub fn list(&self) -> Result<Vec<KeyRecord>, AuthError> {
        self.store
            .db()
            .scan_prefix(PREFIX)
            .map(|item| {
                let (_, v) = item.map_err(Self::err)?;
                serde_json::from_slice(&v).map_err(Self::err)
            })
            .collect()
    }

    /// The key called `name`.
    pub fn get(&self, name: &str) -> Result<Option<KeyRecord>, AuthError> {
        match self.store.db().get(Self::db_key(name)).map_err(Self::err)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(Self::err)?)),
            None => Ok(None),
        }
    }

    /// Writes `record` as it is (a restore from a backup).
    pub fn put(&self, record: &KeyRecord) -> Result<(), AuthError> {
        let bytes = serde_json::to_vec(record).map_err(Self::err)?;
        self.store
            .db()
            .insert(Self::db_key(&record.name), bytes)
            .map_err(Self::err)?;
        self.store.db().flush().map_err(Self::err)?;
        Ok(())
    }

    fn existing(&self, name: &str) -> Result<KeyRecord, AuthError> {
        self.get(name)?
            .ok_or_else(|| AuthError::NotFound(name.to_string()))
    }

    /// Creates a key; returns it and its secret (shown once, never stored).
    pub fn create(&self, name: &str, policy: KeyPolicy) -> Result<(KeyRecord, String), AuthError> {
        if !super::valid_key_name(name) {
            return Err(AuthError::InvalidName(name.to_string()));
        }
        if self.get(name)?.is_some() {
            return Err(AuthError::Exists(name.to_string()));
        }
        let (record, secret) = new_key(name, policy);
        self.put(&record)?;
        Ok((record, secret))
    }

    /// Revokes a key: it is refused from now on (and so is a secret still
    /// in its rotation grace period).
    pub fn revoke(&self, name: &str) -> Result<KeyRecord, AuthError> {
        let record = revoked(self.existing(name)?);
        self.put(&record)?;
        Ok(record)
    }

    /// Gives a key a new secret; the old one keeps working for `grace`.
    pub fn rotate(&self, name: &str, grace: Duration) -> Result<(KeyRecord, String), AuthError> {
        let (record, secret) = rotated(self.existing(name)?, grace)?;
        self.put(&record)?;
        Ok((record, secret))
    }
}

/// A new key `name` with `policy`, and its secret.
pub fn new_key(name: &str, policy: KeyPolicy) -> (KeyRecord, String) {
    let secret = generate_secret();
    let record = KeyRecord {
        name: name.to_string(),
        hash: hash_secret(&secret),
        previous: None,
        created_at_ms: clock::unix_ms(),
        rotated_at_ms: None,
        revoked_at_ms: None,
        policy,
        from_config: false,
    };
    (record, secret)
}

/// `record`, revoked (its grace-period secret too).
pub fn revoked(mut record: KeyRecord) -> KeyRecord {
    if record.revoked_at_ms.is_none() {
        record.revoked_at_ms = Some(clock::unix_ms());
    }
    record.previous = None;
    record
}

/// `record` with a new secret (returned), the old one valid for `grace`.
pub fn rotated(mut record: KeyRecord, grace: Duration) -> Result<(KeyRecord, String), AuthError> {
    if record.revoked_at_ms.is_some() {
        return Err(AuthError::Revoked(record.name));
    }
    let secret = generate_secret();
    let now = clock::unix_ms();
    record.previous = (!grace.is_zero()).then(|| PreviousSecret {
        hash: std::mem::take(&mut record.hash),
        valid_until_ms: now.saturating_add(grace.as_millis() as u64),
    });
    record.hash = hash_secret(&secret);
    record.rotated_at_ms = Some(now);
    Ok((record, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_hashes_never_secrets() {
        let store = Store::temporary().unwrap();
        let keys = KeyStore::new(store.clone());
        let (record, secret) = keys.create("team-a", KeyPolicy::default()).unwrap();
        assert!(secret.starts_with(SECRET_PREFIX) && secret.len() == 49);
        assert_eq!(record.hash, hash_secret(&secret));
        for item in store.db().iter() {
            let (k, v) = item.unwrap();
            let text = String::from_utf8_lossy(&v);
            assert!(!text.contains(&secret), "{k:?}");
        }
        assert!(matches!(
            keys.create("team-a", KeyPolicy::default()),
            Err(AuthError::Exists(_))
        ));
        assert!(matches!(
            keys.create("bad name", KeyPolicy::default()),
            Err(AuthError::InvalidName(_))
        ));
    }

    #[test]
    fn rotation_keeps_the_old_hash_for_the_grace_period() {
        let keys = KeyStore::new(Store::temporary().unwrap());
        let (old, _) = keys.create("k", KeyPolicy::default()).unwrap();
        let (rotated, secret) = keys.rotate("k", Duration::from_secs(60)).unwrap();
        assert_eq!(rotated.hash, hash_secret(&secret));
        assert_eq!(rotated.previous.as_ref().unwrap().hash, old.hash);
        let revoked = keys.revoke("k").unwrap();
        assert!(revoked.revoked_at_ms.is_some() && revoked.previous.is_none());
        assert!(matches!(
            keys.rotate("k", Duration::ZERO),
            Err(AuthError::Revoked(_))
        ));
        assert!(matches!(keys.revoke("nope"), Err(AuthError::NotFound(_))));
    }
}
