//! Plugin key/value namespaces in sled, with per-namespace quotas.
//!
//! Each plugin (slot) has a namespace. What a namespace holds — keys, and
//! bytes of keys plus values — is counted in memory: read from sled the
//! first time the namespace is touched in this process, then kept exact by
//! every write, delete and sweep, which all go through one lock so a quota
//! check and the write it admits cannot interleave with another write.
//! Quotas are checked against that count, so a refused write costs a map
//! lookup, not a scan. Expired entries count until they are swept: by the
//! periodic sweep ([`KvStore::sweep_expired`]), by a read that finds one,
//! or — before a write is refused for quota — by a sweep of that namespace.

use super::{Store, StoreError};
use crate::clock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Largest key a plugin may use, in bytes.
pub const MAX_KV_KEY_BYTES: usize = 512;
/// Largest value a plugin may store, in bytes (the most `limits.kv_max_value_bytes` may allow).
pub const MAX_KV_VALUE_BYTES: usize = 1 << 20;

/// Bounds on one plugin's namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvQuota {
    /// Most keys.
    pub max_keys: u64,
    /// Largest value, bytes.
    pub max_value_bytes: usize,
    /// Most bytes of keys and values together.
    pub max_total_bytes: u64,
}

impl KvQuota {
    /// No bound beyond the store's own key and value limits.
    pub const UNLIMITED: KvQuota = KvQuota {
        max_keys: u64::MAX,
        max_value_bytes: MAX_KV_VALUE_BYTES,
        max_total_bytes: u64::MAX,
    };
}

/// What a namespace holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvUsage {
    /// Keys, expired ones not yet swept included.
    pub keys: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
}

/// What a sweep removed from one namespace, and what it holds after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Swept {
    /// The namespace (plugin slot).
    pub namespace: String,
    /// Expired entries removed.
    pub removed: u64,
    /// What it holds now.
    pub usage: KvUsage,
}

/// Key/value storage for plugins, namespaced per plugin.
pub trait KvStore: Send + Sync + 'static {
    /// The value under `key` in `namespace`, unless absent or expired.
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores a value, expiring after `ttl_seconds` when given, unless that
    /// would take the namespace past `quota`; returns what it holds after.
    fn set(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        ttl_seconds: Option<u32>,
        quota: &KvQuota,
    ) -> Result<KvUsage, StoreError>;
    /// Removes a value; returns what the namespace holds after.
    fn delete(&self, namespace: &str, key: &str) -> Result<KvUsage, StoreError>;
    /// What `namespace` holds.
    fn usage(&self, namespace: &str) -> Result<KvUsage, StoreError>;
    /// Removes every expired entry, reporting per namespace that had any.
    fn sweep_expired(&self) -> Result<Vec<Swept>, StoreError>;
}

/// Usage by namespace, for namespaces touched in this process.
pub(super) type UsageTable = Arc<Mutex<HashMap<String, KvUsage>>>;

/// Every kv key starts with this.
const PREFIX: &[u8] = b"kv\0";

fn prefix(namespace: &str) -> Vec<u8> {
    // The namespace is a configured plugin name, which cannot contain NUL,
    // so `kv\0<plugin>\0<key>` cannot collide across plugins.
    let mut k = Vec::with_capacity(PREFIX.len() + namespace.len() + 1);
    k.extend_from_slice(PREFIX);
    k.extend_from_slice(namespace.as_bytes());
    k.push(0);
    k
}

fn kv_key(namespace: &str, key: &str) -> Vec<u8> {
    let mut k = prefix(namespace);
    k.extend_from_slice(key.as_bytes());
    k
}

/// Layout of a stored value: 8-byte big-endian expiry in unix ms (0 =
/// never), then the value.
fn expiry(raw: &[u8]) -> Option<u64> {
    let head: [u8; 8] = raw.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(head))
}

fn expired(raw: &[u8], now_ms: u64) -> bool {
    match expiry(raw) {
        Some(0) => false,
        Some(at) => at <= now_ms,
        // Unreadable: treat as gone, so it is swept.
        None => true,
    }
}

/// Bytes an entry counts for: its key within the namespace and its value.
fn entry_bytes(full_key_len: usize, namespace: &str, raw_len: usize) -> u64 {
    let key = full_key_len.saturating_sub(PREFIX.len() + namespace.len() + 1);
    (key + raw_len.saturating_sub(8)) as u64
}

impl Store {
    fn usage_table(&self) -> std::sync::MutexGuard<'_, HashMap<String, KvUsage>> {
        // Entries are replaced whole; a panic cannot leave one half-written.
        self.kv_usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a namespace from sled.
    fn count(&self, namespace: &str) -> Result<KvUsage, StoreError> {
        let mut usage = KvUsage::default();
        for entry in self.db.scan_prefix(prefix(namespace)) {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            usage.keys += 1;
            usage.bytes += entry_bytes(k.len(), namespace, v.len());
        }
        Ok(usage)
    }

    /// Removes the entry at full key `k` of `namespace`, if any, and takes
    /// it off the namespace's usage; returns the usage after.
    fn remove_counted(&self, namespace: &str, k: &[u8]) -> Result<KvUsage, StoreError> {
        let mut table = self.usage_table();
        let mut usage = self.loaded(&mut table, namespace)?;
        if let Some(old) = self.db.remove(k).map_err(|e| self.err(e))? {
            usage.keys = usage.keys.saturating_sub(1);
            usage.bytes = usage
                .bytes
                .saturating_sub(entry_bytes(k.len(), namespace, old.len()));
            table.insert(namespace.to_string(), usage);
        }
        Ok(usage)
    }

    /// The namespace's usage, counted on first touch. Called with the lock held.
    fn loaded(
        &self,
        table: &mut HashMap<String, KvUsage>,
        namespace: &str,
    ) -> Result<KvUsage, StoreError> {
        if let Some(usage) = table.get(namespace) {
            return Ok(*usage);
        }
        let usage = self.count(namespace)?;
        table.insert(namespace.to_string(), usage);
        Ok(usage)
    }

    /// Removes expired entries of `namespace`; returns how many. Called
    /// with the lock held.
    fn sweep_namespace(
        &self,
        table: &mut HashMap<String, KvUsage>,
        namespace: &str,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let mut usage = self.loaded(table, namespace)?;
        let mut removed = 0;
        for entry in self.db.scan_prefix(prefix(namespace)) {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            if expired(&v, now_ms) && self.db.remove(&k).map_err(|e| self.err(e))?.is_some() {
                removed += 1;
                usage.keys = usage.keys.saturating_sub(1);
                usage.bytes = usage
                    .bytes
                    .saturating_sub(entry_bytes(k.len(), namespace, v.len()));
            }
        }
        table.insert(namespace.to_string(), usage);
        Ok(removed)
    }

    /// Why `namespace` cannot take a write leaving it at `after`, if it cannot.
    fn over_quota(namespace: &str, after: KvUsage, quota: &KvQuota) -> Option<StoreError> {
        if after.keys > quota.max_keys {
            return Some(StoreError::Quota(format!(
                "kv quota of plugin `{namespace}`: at most {} keys (limits.kv_max_keys); the namespace holds {}",
                quota.max_keys,
                after.keys - 1
            )));
        }
        if after.bytes > quota.max_total_bytes {
            return Some(StoreError::Quota(format!(
                "kv quota of plugin `{namespace}`: at most {} bytes of keys and values (limits.kv_max_total_bytes); this write would make it {}",
                quota.max_total_bytes, after.bytes
            )));
        }
        None
    }
}

impl KvStore for Store {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let k = kv_key(namespace, key);
        let Some(raw) = self.db.get(&k).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        if !expired(&raw, clock::unix_ms()) {
            return Ok(Some(raw[8..].to_vec()));
        }
        self.remove_counted(namespace, &k)?;
        Ok(None)
    }

    fn set(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        ttl_seconds: Option<u32>,
        quota: &KvQuota,
    ) -> Result<KvUsage, StoreError> {
        if key.len() > MAX_KV_KEY_BYTES {
            return Err(StoreError::TooLarge(format!(
                "key is {} bytes, limit is {MAX_KV_KEY_BYTES}",
                key.len()
            )));
        }
        let max_value = quota.max_value_bytes.min(MAX_KV_VALUE_BYTES);
        if value.len() > max_value {
            return Err(StoreError::TooLarge(format!(
                "value is {} bytes, limit is {max_value} (limits.kv_max_value_bytes)",
                value.len()
            )));
        }
        let now = clock::unix_ms();
        let expires = ttl_seconds.map(|s| now + u64::from(s) * 1000).unwrap_or(0);
        let k = kv_key(namespace, key);
        let mut table = self.usage_table();
        let mut usage = self.loaded(&mut table, namespace)?;
        let old = self.db.get(&k).map_err(|e| self.err(e))?;
        let new_bytes = (key.len() + value.len()) as u64;
        let after = |usage: KvUsage| match &old {
            Some(old) => KvUsage {
                keys: usage.keys,
                bytes: usage
                    .bytes
                    .saturating_sub(entry_bytes(k.len(), namespace, old.len()))
                    + new_bytes,
            },
            None => KvUsage {
                keys: usage.keys + 1,
                bytes: usage.bytes + new_bytes,
            },
        };
        if Self::over_quota(namespace, after(usage), quota).is_some()
            && self.sweep_namespace(&mut table, namespace, now)? > 0
        {
            usage = self.loaded(&mut table, namespace)?;
        }
        // The sweep may have removed this very key (it had expired).
        let old_still = old.is_some() && self.db.contains_key(&k).map_err(|e| self.err(e))?;
        let after = if old.is_some() && !old_still {
            KvUsage {
                keys: usage.keys + 1,
                bytes: usage.bytes + new_bytes,
            }
        } else {
            after(usage)
        };
        if let Some(refused) = Self::over_quota(namespace, after, quota) {
            return Err(refused);
        }
        let mut raw = Vec::with_capacity(8 + value.len());
        raw.extend_from_slice(&expires.to_be_bytes());
        raw.extend_from_slice(value);
        self.db.insert(k, raw).map_err(|e| self.err(e))?;
        table.insert(namespace.to_string(), after);
        Ok(after)
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<KvUsage, StoreError> {
        self.remove_counted(namespace, &kv_key(namespace, key))
    }

    fn usage(&self, namespace: &str) -> Result<KvUsage, StoreError> {
        let mut table = self.usage_table();
        self.loaded(&mut table, namespace)
    }

    fn sweep_expired(&self) -> Result<Vec<Swept>, StoreError> {
        let now = clock::unix_ms();
        // Find the namespaces with expired entries without the lock, then
        // sweep each under it (a concurrent write is then counted right).
        let mut namespaces: Vec<String> = Vec::new();
        for entry in self.db.scan_prefix(PREFIX) {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            if !expired(&v, now) {
                continue;
            }
            let rest = &k[PREFIX.len()..];
            let Some(end) = rest.iter().position(|&b| b == 0) else {
                continue;
            };
            let namespace = String::from_utf8_lossy(&rest[..end]).into_owned();
            if namespaces.last() != Some(&namespace) && !namespaces.contains(&namespace) {
                namespaces.push(namespace);
            }
        }
        let mut report = Vec::with_capacity(namespaces.len());
        for namespace in namespaces {
            let mut table = self.usage_table();
            let removed = self.sweep_namespace(&mut table, &namespace, now)?;
            let usage = self.loaded(&mut table, &namespace)?;
            report.push(Swept {
                namespace,
                removed,
                usage,
            });
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: KvQuota = KvQuota::UNLIMITED;

    #[test]
    fn kv_is_namespaced_and_expires() {
        let store = Store::temporary().unwrap();
        store.set("a", "k", b"1", None, &Q).unwrap();
        store.set("b", "k", b"2", Some(0), &Q).unwrap();
        assert_eq!(store.get("a", "k").unwrap(), Some(b"1".to_vec()));
        // ttl 0 expires immediately: the value is gone on the next read.
        assert_eq!(store.get("b", "k").unwrap(), None);
        assert_eq!(store.usage("b").unwrap(), KvUsage::default());
        store.delete("a", "k").unwrap();
        assert_eq!(store.get("a", "k").unwrap(), None);
        let big = vec![0u8; MAX_KV_VALUE_BYTES + 1];
        assert!(matches!(
            store.set("a", "k", &big, None, &Q),
            Err(StoreError::TooLarge(_))
        ));
    }

    #[test]
    fn quotas_bound_keys_and_bytes_and_count_overwrites_once() {
        let store = Store::temporary().unwrap();
        let quota = KvQuota {
            max_keys: 2,
            max_value_bytes: 100,
            max_total_bytes: 20,
        };
        assert_eq!(
            store.set("p", "a", b"12345", None, &quota).unwrap(),
            KvUsage { keys: 1, bytes: 6 }
        );
        // Overwriting a key changes bytes, not keys.
        assert_eq!(
            store.set("p", "a", b"123", None, &quota).unwrap(),
            KvUsage { keys: 1, bytes: 4 }
        );
        store.set("p", "b", b"1", None, &quota).unwrap();
        let e = store.set("p", "c", b"1", None, &quota).unwrap_err();
        assert!(
            e.to_string()
                .contains("at most 2 keys (limits.kv_max_keys)"),
            "{e}"
        );
        let e = store.set("p", "b", &[0; 30], None, &quota).unwrap_err();
        assert!(
            e.to_string().contains("limits.kv_max_value_bytes")
                || e.to_string().contains("kv_max_total_bytes"),
            "{e}"
        );
        // Another namespace has its own quota.
        store.set("q", "c", b"1", None, &quota).unwrap();
        // Deleting makes room.
        store.delete("p", "a").unwrap();
        store.set("p", "c", b"1", None, &quota).unwrap();
    }

    #[test]
    fn expired_keys_are_swept_and_make_room() {
        let store = Store::temporary().unwrap();
        let quota = KvQuota {
            max_keys: 1,
            ..KvQuota::UNLIMITED
        };
        store.set("p", "old", b"x", Some(0), &quota).unwrap();
        // Full, but of an expired key: swept before the write is refused.
        store.set("p", "new", b"y", None, &quota).unwrap();
        store.set("s", "gone", b"z", Some(0), &Q).unwrap();
        store.set("s", "kept", b"z", None, &Q).unwrap();
        let swept = store.sweep_expired().unwrap();
        assert_eq!(
            swept,
            vec![Swept {
                namespace: "s".into(),
                removed: 1,
                usage: KvUsage { keys: 1, bytes: 5 },
            }]
        );
        // A fresh count agrees with the kept one.
        store.usage_table().clear();
        assert_eq!(store.usage("s").unwrap(), KvUsage { keys: 1, bytes: 5 });
        assert_eq!(store.usage("p").unwrap(), KvUsage { keys: 1, bytes: 4 });
    }
}
