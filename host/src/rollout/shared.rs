//! Rollout state shared by the replicas of a cluster (`[cluster]`).
//!
//! Every structural change a replica makes to a slot — a swap, a candidate
//! upload, a rollout's start, canary step and end — is published to Redis
//! after it is persisted in sled: the slot's record (the same JSON as in
//! sled) under `<prefix>:rollout:slot:<name>` with a revision number that
//! each publication increments, and uploaded components once per digest
//! under `<prefix>:rollout:wasm:<sha256>`. Publications leave in the order
//! the changes were made (one queue, one publisher task), components before
//! the records naming them.
//!
//! Every replica polls the revisions every `cluster.rollout_sync_ms` and
//! applies a newer record under the control-plane guard, fetching any
//! component it lacks by digest ([`Rollouts::apply_shared`]). So a change
//! on one replica is served by all within one sync interval plus the time
//! to compile a new component. Concurrent changes of one slot on two
//! replicas converge on the later publication.
//!
//! A canary's controller runs on every replica, but only the holder of the
//! slot's lease in Redis (`rollout:lease:<name>`, held for three
//! evaluation intervals and renewed at each) decides steps, promotion and
//! rollback; it decides on the calls it served itself, a sample of the
//! traffic. While Redis is lost nobody holds a lease: canaries pause,
//! replicas keep serving their current split.

use super::Rollouts;
use super::persist::SlotRecord;
use super::watch::SlotLookup;
use crate::cluster::{Cluster, ClusterError};
use rand::Rng;
use rand::distr::Alphanumeric;
use redis::Script;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// `KEYS[1]` the slot's hash; `ARGV[1]` the record. Returns the new revision.
static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local rev = redis.call('HINCRBY', KEYS[1], 'rev', 1)
redis.call('HSET', KEYS[1], 'record', ARGV[1])
return rev
"#,
    )
});

/// `KEYS[1]` the lease; `ARGV` this replica's id, the lease in ms. Returns
/// 1 when this replica holds it (now, or still).
static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#,
    )
});

/// What the publisher sends, in order.
enum Publication {
    Wasm {
        digest: String,
        bytes: Vec<u8>,
    },
    Record {
        slot: String,
        record: Box<SlotRecord>,
    },
}

/// A replica's link to the shared rollout state.
pub struct SharedRollouts {
    cluster: Arc<Cluster>,
    /// This replica, as a lease holder.
    id: String,
    /// Per slot, the revision this replica's state reflects.
    seen: Mutex<HashMap<String, u64>>,
    queue: mpsc::UnboundedSender<Publication>,
}

impl SharedRollouts {
    /// Joins the cluster: starts the publisher task (it ends when this is
    /// dropped).
    pub(super) fn new(cluster: Arc<Cluster>) -> Arc<SharedRollouts> {
        let (queue, mut next) = mpsc::unbounded_channel();
        let id: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(16)
            .map(char::from)
            .collect();
        let shared = Arc::new(SharedRollouts {
            cluster,
            id,
            seen: Mutex::default(),
            queue,
        });
        let me = Arc::downgrade(&shared);
        tokio::spawn(async move {
            while let Some(publication) = next.recv().await {
                let Some(shared) = me.upgrade() else { return };
                shared.publish(publication).await;
            }
        });
        shared
    }

    fn slot_key(&self, slot: &str) -> String {
        self.cluster.key(&format!("rollout:slot:{slot}"))
    }

    fn wasm_key(&self, digest: &str) -> String {
        self.cluster.key(&format!("rollout:wasm:{digest}"))
    }

    /// Queues `record` of `slot` for publication (called right after it is
    /// persisted in sled, without waiting).
    pub(super) fn record(&self, slot: &str, record: SlotRecord) {
        let _ = self.queue.send(Publication::Record {
            slot: slot.to_string(),
            record: Box::new(record),
        });
    }

    /// Queues a component for publication under its digest.
    pub(super) fn wasm(&self, digest: &str, bytes: &[u8]) {
        let _ = self.queue.send(Publication::Wasm {
            digest: digest.to_string(),
            bytes: bytes.to_vec(),
        });
    }

    async fn publish(&self, publication: Publication) {
        let published = match publication {
            Publication::Wasm { digest, bytes } => {
                let key = self.wasm_key(&digest);
                self.cluster
                    .run("rollout", |mut conn| async move {
                        redis::cmd("SET")
                            .arg(key)
                            .arg(bytes)
                            .arg("NX")
                            .query_async::<()>(&mut conn)
                            .await
                    })
                    .await
            }
            Publication::Record { slot, record } => {
                let json = serde_json::to_string(&record).unwrap_or_default();
                let mut invocation = PUBLISH.prepare_invoke();
                invocation.key(self.slot_key(&slot)).arg(json);
                let rev: Result<u64, _> = self
                    .cluster
                    .run("rollout", |mut conn| async move {
                        invocation.invoke_async(&mut conn).await
                    })
                    .await;
                rev.map(|rev| {
                    // Ours is the latest unless another replica published
                    // in between: then the next sync applies the latest.
                    let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                    let last = seen.entry(slot).or_default();
                    if rev == *last + 1 {
                        *last = rev;
                    }
                })
            }
        };
        if let Err(e) = published {
            tracing::warn!(error = %e, "could not publish a rollout change to the cluster; other replicas do not see it");
        }
    }

    /// A component by digest from Redis.
    pub(super) async fn fetch_wasm(&self, digest: &str) -> Result<Option<Vec<u8>>, ClusterError> {
        let key = self.wasm_key(digest);
        self.cluster
            .run("rollout", |mut conn| async move {
                redis::cmd("GET").arg(key).query_async(&mut conn).await
            })
            .await
    }

    /// Records of `slots` whose revision is newer than this replica's.
    async fn changed(
        &self,
        slots: &[String],
    ) -> Result<Vec<(String, u64, SlotRecord)>, ClusterError> {
        let mut pipe = redis::pipe();
        for slot in slots {
            pipe.cmd("HGET").arg(self.slot_key(slot)).arg("rev");
        }
        let revs: Vec<Option<u64>> = self
            .cluster
            .run("rollout", |mut conn| async move {
                pipe.query_async(&mut conn).await
            })
            .await?;
        let mut changed = Vec::new();
        for (slot, rev) in slots.iter().zip(revs) {
            let Some(rev) = rev else { continue };
            let seen = self
                .seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(slot)
                .copied()
                .unwrap_or(0);
            if rev <= seen {
                continue;
            }
            let key = self.slot_key(slot);
            let fetched: (Option<u64>, Option<String>) = self
                .cluster
                .run("rollout", |mut conn| async move {
                    redis::cmd("HMGET")
                        .arg(key)
                        .arg("rev")
                        .arg("record")
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            if let (Some(rev), Some(text)) = fetched {
                match serde_json::from_str::<SlotRecord>(&text) {
                    Ok(record) => changed.push((slot.clone(), rev, record)),
                    Err(e) => {
                        tracing::warn!(plugin = %slot, error = %e, "ignoring an unreadable shared rollout record")
                    }
                }
            }
        }
        Ok(changed)
    }

    fn applied(&self, slot: &str, rev: u64) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let last = seen.entry(slot.to_string()).or_default();
        *last = (*last).max(rev);
    }

    /// Whether this replica decides for `slot`'s canary now (holds or took
    /// the lease of `lease` length).
    pub(super) async fn leads(&self, slot: &str, lease: Duration) -> bool {
        let mut invocation = LEASE.prepare_invoke();
        invocation
            .key(self.cluster.key(&format!("rollout:lease:{slot}")))
            .arg(&self.id)
            .arg(lease.as_millis().max(1) as u64);
        let held: Result<i64, _> = self
            .cluster
            .run("rollout", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await;
        matches!(held, Ok(1))
    }
}

/// Every shared slot record and component (a backup).
pub async fn export(
    cluster: &Cluster,
) -> Result<(Vec<(String, SlotRecord)>, Vec<(String, Vec<u8>)>), ClusterError> {
    let slot_prefix = cluster.key("rollout:slot:");
    let mut records = Vec::new();
    for key in cluster.scan("rollout:slot:*").await? {
        let name = key.strip_prefix(&slot_prefix).unwrap_or(&key).to_string();
        let text: Option<String> = cluster
            .run("rollout", |mut conn| async move {
                redis::cmd("HGET")
                    .arg(key)
                    .arg("record")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        if let Some(record) = text.and_then(|t| serde_json::from_str(&t).ok()) {
            records.push((name, record));
        }
    }
    let wasm_prefix = cluster.key("rollout:wasm:");
    let mut components = Vec::new();
    for key in cluster.scan("rollout:wasm:*").await? {
        let digest = key.strip_prefix(&wasm_prefix).unwrap_or(&key).to_string();
        let bytes: Option<Vec<u8>> = cluster
            .run("rollout", |mut conn| async move {
                redis::cmd("GET").arg(key).query_async(&mut conn).await
            })
            .await?;
        if let Some(bytes) = bytes {
            components.push((digest, bytes));
        }
    }
    Ok((records, components))
}

/// Writes slot records and components into the cluster (a restore): each
/// record is published as a new revision, so running replicas apply it.
pub async fn import(
    cluster: &Cluster,
    records: &[(String, SlotRecord)],
    components: &[(String, Vec<u8>)],
) -> Result<(), ClusterError> {
    for (digest, bytes) in components {
        let key = cluster.key(&format!("rollout:wasm:{digest}"));
        let bytes = bytes.clone();
        cluster
            .run("rollout", |mut conn| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(bytes)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await?;
    }
    for (slot, record) in records {
        let json = serde_json::to_string(record).unwrap_or_default();
        let mut invocation = PUBLISH.prepare_invoke();
        invocation
            .key(cluster.key(&format!("rollout:slot:{slot}")))
            .arg(json);
        cluster
            .run("rollout", |mut conn| async move {
                invocation.invoke_async::<u64>(&mut conn).await
            })
            .await?;
    }
    Ok(())
}

/// A running sync; dropping it stops it.
pub struct Sync {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sync {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Applies other replicas' changes every `every` to the slots `lookup`
/// returns, until the control plane is gone. The first pass runs at once,
/// so a replica joining the cluster serves what the others serve.
pub fn sync(rollouts: Weak<Rollouts>, lookup: SlotLookup, every: Duration) -> Sync {
    let task = tokio::spawn(async move {
        loop {
            let Some(r) = rollouts.upgrade() else { return };
            sync_once(&r, &lookup).await;
            drop(r);
            tokio::time::sleep(every).await;
        }
    });
    Sync { task }
}

/// One pass: applies every newer shared record.
pub async fn sync_once(rollouts: &Rollouts, lookup: &SlotLookup) {
    let Some(shared) = rollouts.shared() else {
        return;
    };
    let (slots, _) = lookup();
    let names: Vec<String> = slots.iter().map(|s| s.name().to_string()).collect();
    let changed = match shared.changed(&names).await {
        Ok(changed) => changed,
        Err(e) => {
            tracing::debug!(error = %e, "rollout sync skipped");
            return;
        }
    };
    for (slot, rev, record) in changed {
        let Some(hot) = slots.iter().find(|s| s.name() == slot) else {
            continue;
        };
        let guard = rollouts.lock().await;
        rollouts.apply_shared(&guard, hot, record).await;
        drop(guard);
        shared.applied(&slot, rev);
    }
}

impl Rollouts {
    /// Makes `hot` serve what another replica published in `record`: its
    /// stable version, then its rollout (started, stepped or ended), and
    /// keeps the record in sled. Components missing here are fetched by
    /// digest. A slot configured differently here (another base digest)
    /// is left alone: the replicas disagree on the config, which a rolling
    /// deploy of a new config causes for a moment.
    pub async fn apply_shared(
        &self,
        guard: &super::ControlGuard<'_>,
        hot: &Arc<super::HotPlugin>,
        record: SlotRecord,
    ) {
        self.check(guard);
        let state = hot.state();
        if state.retired {
            return;
        }
        if record.base_digest != state.base_digest {
            tracing::warn!(plugin = %hot.name(), here = %state.base_digest, shared = %record.base_digest, "the cluster's record of this slot is for another configured version; not applied");
            return;
        }
        let want_stable = record
            .live
            .as_ref()
            .map_or(state.base_digest.clone(), |v| v.digest.clone());
        // A rollout that ended elsewhere ends here, the same way.
        if let Some(local) = &state.rollout {
            let same = record
                .rollout
                .as_ref()
                .is_some_and(|r| r.candidate.digest == local.candidate.identity().digest);
            if !same {
                let promoted = local.candidate.identity().digest == want_stable;
                let phase = if promoted {
                    super::Phase::Promoted
                } else {
                    super::Phase::RolledBack
                };
                local.finish(phase, "decided on another replica of the cluster".into());
                let local = local.clone();
                hot.update(guard, |s| {
                    if promoted {
                        s.stable = local.candidate.clone();
                    }
                    s.rollout = None;
                    s.last = Some(local.clone());
                });
            }
        }
        if hot.identity().digest != want_stable {
            let loaded = if want_stable == state.base_digest {
                let template = hot.template();
                self.load(hot, template.source.clone(), template.version.clone())
                    .await
            } else {
                match &record.live {
                    Some(live) => self.load_stored(hot, live).await,
                    None => return,
                }
            };
            match loaded {
                Ok(plugin) => self.install(guard, hot, plugin, "applied from the cluster"),
                Err(e) => {
                    tracing::warn!(plugin = %hot.name(), error = %e, "cannot apply the cluster's stable version; keeping this one");
                    return;
                }
            }
        }
        if let Some(shared) = &record.rollout {
            match hot.state().rollout.clone() {
                Some(local) if local.candidate.identity().digest == shared.candidate.digest => {
                    if (local.percent() - shared.progress.percent).abs() > f64::EPSILON {
                        local.set_percent(shared.progress.percent);
                        local.event(format!(
                            "candidate share set to {}% on another replica",
                            shared.progress.percent
                        ));
                    }
                }
                _ => match self.load_stored(hot, &shared.candidate).await {
                    Ok(candidate) => {
                        let rollout = Arc::new(super::Rollout::new(
                            shared.spec.clone(),
                            candidate,
                            shared.started_at,
                            Some(shared.progress.clone()),
                        ));
                        rollout.event(format!("joined from the cluster at {}%", rollout.percent()));
                        hot.update(guard, |s| {
                            s.rollout = Some(rollout.clone());
                            s.last = None;
                        });
                        self.supervise(hot, &rollout);
                    }
                    Err(e) => {
                        tracing::warn!(plugin = %hot.name(), error = %e, "cannot join the cluster's rollout; serving the stable version")
                    }
                },
            }
        }
        if let Err(e) = super::persist::save(self.store(), hot.name(), &record) {
            tracing::warn!(plugin = %hot.name(), error = %e, "could not persist the cluster's rollout state");
        }
    }
}
