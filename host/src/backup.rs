//! `agentrouter store backup FILE` / `restore FILE`: the state a gateway
//! cannot rebuild from its config — API keys, rollout records and the
//! components they name, today's spend — and, on request, the response
//! cache, as one JSON file.
//!
//! The file says what things *are* (key records, slot records), not how a
//! store lays them out, so it restores into either kind of store: from the
//! sled store of a single gateway (which must be stopped: sled admits one
//! process) or from the cluster's Redis (with `[cluster]`; gateways keep
//! serving, Redis is read with `SCAN`), into either. Restoring a single
//! gateway's backup under a `[cluster]` config is how it becomes a
//! cluster. A restore overwrites what it brings and leaves the rest; rollout
//! records restored into Redis are published as new revisions, so running
//! replicas apply them within `cluster.rollout_sync_ms`.
//!
//! The disaster-recovery runbook built on this is in `docs/operations.md`.

use crate::auth::{Budgets, KeyRecord, KeyStore, shared::SharedKeys};
use crate::cache::{CacheKey, CacheTier, CachedAnswer, RedisTier, SledTier};
use crate::cluster::{Cluster, ClusterError};
use crate::config::Config;
use crate::rollout::{persist, persist::SlotRecord, shared};
use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The `format` of a backup file.
pub const FORMAT: &str = "agentrouter-backup";
/// The version of the format this build writes and reads.
pub const VERSION: u32 = 1;

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The sled store could not be opened (a gateway holds it, ...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Redis failed or cannot be reached.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Reading or writing keys or spend failed.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// Reading or writing the cache failed.
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    /// The file is not a backup this build can restore.
    #[error("{0}")]
    Format(String),
}

/// One day's spend of a key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpendEntry {
    /// The key.
    pub key: String,
    /// Days since the Unix epoch (UTC).
    pub day: u64,
    /// USD spent.
    pub usd: f64,
}

/// One cached answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The cache key, hex.
    pub key: String,
    /// The answer (it carries its own expiry).
    pub answer: CachedAnswer,
}

/// A backup file's contents.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Backup {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`] when written.
    pub version: u32,
    /// When it was taken (RFC 3339).
    pub created_at: String,
    /// `sled` or `redis`.
    pub source: String,
    /// API keys of the store (the config file's are in the config file).
    pub keys: Vec<KeyRecord>,
    /// Rollout records, by slot.
    pub rollouts: BTreeMap<String, SlotRecord>,
    /// Components the records name, by sha256, base64.
    pub components: BTreeMap<String, String>,
    /// Spend per key and day.
    pub spend: Vec<SpendEntry>,
    /// Cached answers, when asked for (`--cache`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<Vec<CacheEntry>>,
}

/// What a restore wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    /// `sled` or `redis`.
    pub target: String,
    /// Keys written.
    pub keys: usize,
    /// Slot records written.
    pub rollouts: usize,
    /// Components written.
    pub components: usize,
    /// Spend entries written.
    pub spend: usize,
    /// Cached answers written (expired ones are skipped).
    pub cache: usize,
}

/// Where a config keeps its state.
enum Target {
    Sled(Store),
    Redis(Arc<Cluster>),
}

impl Target {
    /// The cluster's Redis with `[cluster]`, else the config's sled store.
    async fn of(config: &Config) -> Result<Target, BackupError> {
        let metrics = Arc::new(Metrics::new());
        match Cluster::connect(&config.startup.cluster, metrics).await? {
            Some(cluster) => {
                if !cluster.is_up() {
                    return Err(ClusterError::Unavailable {
                        addr: cluster.addr().to_string(),
                        reason: "it does not answer".into(),
                    }
                    .into());
                }
                Ok(Target::Redis(cluster))
            }
            None => Ok(Target::Sled(Store::open(&config.store_path())?)),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Target::Sled(_) => "sled",
            Target::Redis(_) => "redis",
        }
    }

    fn budgets(&self) -> Result<Budgets, BackupError> {
        Ok(match self {
            Target::Sled(store) => Budgets::new(store.clone(), None, 0.0),
            // The spend lives in Redis; sled is not touched (a temporary
            // one stands in), so this runs next to serving gateways.
            Target::Redis(cluster) => Budgets::new(Store::temporary()?, Some(cluster.clone()), 0.0),
        })
    }
}

/// Takes a backup of the state `config` names; the cache too when
/// `with_cache`.
pub async fn backup(config: &Config, with_cache: bool) -> Result<Backup, BackupError> {
    let target = Target::of(config).await?;
    let (keys, rollouts, components, cache) = match &target {
        Target::Sled(store) => {
            let cache = if with_cache {
                Some(SledTier::new(store.clone()).entries()?)
            } else {
                None
            };
            (
                KeyStore::new(store.clone()).list()?,
                persist::all(store)?,
                persist::all_wasm(store)?,
                cache,
            )
        }
        Target::Redis(cluster) => {
            let keys = SharedKeys::new(cluster.clone()).list().await?;
            let (records, components) = shared::export(cluster).await?;
            let cache = if with_cache {
                Some(RedisTier::new(cluster.clone()).entries().await?)
            } else {
                None
            };
            (keys, records, components, cache)
        }
    };
    let spend = target
        .budgets()?
        .export()
        .await?
        .into_iter()
        .map(|(key, day, usd)| SpendEntry { key, day, usd })
        .collect();
    Ok(Backup {
        format: FORMAT.into(),
        version: VERSION,
        created_at: crate::clock::now_rfc3339(),
        source: target.name().into(),
        keys,
        rollouts: rollouts.into_iter().collect(),
        components: components
            .into_iter()
            .map(|(digest, bytes)| (digest, STANDARD.encode(bytes)))
            .collect(),
        spend,
        cache: cache.map(|entries| {
            entries
                .into_iter()
                .map(|(key, answer)| CacheEntry {
                    key: key.hex(),
                    answer,
                })
                .collect()
        }),
    })
}

/// Checks a backup's format and decodes its components, before anything
/// is written: a bad file restores nothing.
fn decode(backup: &Backup) -> Result<Vec<(String, Vec<u8>)>, BackupError> {
    if backup.format != FORMAT {
        return Err(BackupError::Format(format!(
            "not an agentrouter backup (format `{}`)",
            backup.format
        )));
    }
    if backup.version > VERSION {
        return Err(BackupError::Format(format!(
            "backup format version {} is newer than this agentrouter reads ({VERSION}); restore it with a newer agentrouter",
            backup.version
        )));
    }
    backup
        .components
        .iter()
        .map(|(digest, text)| {
            let bytes = STANDARD
                .decode(text)
                .map_err(|e| BackupError::Format(format!("component {digest}: {e}")))?;
            if crate::runtime::sha256_hex(&bytes) != *digest {
                return Err(BackupError::Format(format!(
                    "component {digest} does not match its digest"
                )));
            }
            Ok((digest.clone(), bytes))
        })
        .collect()
}

/// Writes `backup` into the state `config` names.
pub async fn restore(config: &Config, backup: &Backup) -> Result<RestoreReport, BackupError> {
    let components = decode(backup)?;
    let target = Target::of(config).await?;
    let records: Vec<(String, SlotRecord)> = backup
        .rollouts
        .iter()
        .map(|(slot, record)| (slot.clone(), record.clone()))
        .collect();
    let mut report = RestoreReport {
        target: target.name().into(),
        keys: backup.keys.len(),
        rollouts: records.len(),
        components: components.len(),
        spend: backup.spend.len(),
        cache: 0,
    };
    let live_cache: Vec<(CacheKey, Arc<CachedAnswer>)> = backup
        .cache
        .iter()
        .flatten()
        .filter(|e| !e.answer.expired())
        .filter_map(|e| {
            let key = <[u8; 32]>::try_from(hex::decode(&e.key).ok()?).ok()?;
            Some((CacheKey(key), Arc::new(e.answer.clone())))
        })
        .collect();
    report.cache = live_cache.len();
    match &target {
        Target::Sled(store) => {
            let keys = KeyStore::new(store.clone());
            for record in &backup.keys {
                keys.put(record)?;
            }
            for (digest, bytes) in &components {
                persist::put_wasm(store, digest, bytes)?;
            }
            for (slot, record) in &records {
                persist::save(store, slot, record)?;
            }
            let tier = SledTier::new(store.clone());
            for (key, answer) in &live_cache {
                tier.put(key, answer).await?;
            }
        }
        Target::Redis(cluster) => {
            let keys = SharedKeys::new(cluster.clone());
            for record in &backup.keys {
                keys.restore(record).await?;
            }
            shared::import(cluster, &records, &components).await?;
            let tier = RedisTier::new(cluster.clone());
            for (key, answer) in &live_cache {
                tier.put(key, answer).await?;
            }
        }
    }
    let budgets = target.budgets()?;
    for entry in &backup.spend {
        budgets.import(&entry.key, entry.day, entry.usd).await?;
    }
    if let Target::Sled(store) = &target {
        store.db().flush().map_err(|cause| StoreError::Sled {
            path: store.path().to_string(),
            cause,
        })?;
    }
    Ok(report)
}
