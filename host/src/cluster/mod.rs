//! Shared state for several replicas: one Redis, reached through
//! [`Cluster`].
//!
//! `[cluster] redis_url` turns it on. The parts that share state own their
//! data in Redis and their scripts: the rate limits (`ratelimit::shared`),
//! budgets and API keys (`auth::shared`), the L3 response cache
//! (`cache::RedisTier`) and rollouts (`rollout::shared`). This module only
//! holds the connection and knows whether Redis is reachable.
//!
//! # Loss and recovery
//!
//! Every command runs through [`Cluster::run`] with a deadline
//! (`op_timeout_ms`). A connection error or a timeout marks Redis *lost*:
//! from then on commands fail at once with [`ClusterError::Unavailable`]
//! instead of each request waiting out the deadline, and each limit applies
//! its `on_redis_loss` policy (local limits, or refusal). A probe pings Redis
//! every `probe_interval_ms` whatever the state, so loss is noticed while
//! idle and recovery within one interval; when a ping answers, commands go
//! to Redis again. Readiness reports the loss as *degraded* (the replica
//! still serves), and `agentrouter_cluster_redis_up` says the same.
//!
//! The connection is redis-rs's `ConnectionManager`: one multiplexed
//! connection shared by every request, reconnecting by itself.
//!
//! The module sits below the parts that use it and above `telemetry` and
//! `secret`.

mod config;

pub use config::{
    ClusterConfig, DEFAULT_KEY_PREFIX, DEFAULT_KEY_SYNC_MS, DEFAULT_OP_TIMEOUT_MS,
    DEFAULT_PROBE_INTERVAL_MS, DEFAULT_ROLLOUT_SYNC_MS, LossPolicies, LossPolicy,
};

use crate::telemetry::Metrics;
use crate::telemetry::health::Check;
use crate::telemetry::metrics::{ClusterFallbackLabels, ClusterOpLabels, RedisLabels};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Why a shared-state operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `cluster.redis_url` is not a Redis URL.
    #[error("cluster.redis_url: {0}")]
    Url(String),
    /// Redis is unreachable (lost earlier, not yet back).
    #[error("Redis at {addr} is unreachable: {reason}")]
    Unavailable {
        /// Where Redis should be (no credentials).
        addr: String,
        /// The last error seen.
        reason: String,
    },
    /// A command failed for a reason other than reachability (a script
    /// error, a wrong type): a bug or a foreign key in our namespace.
    #[error("Redis command `{op}` failed: {cause}")]
    Command {
        /// The operation, as named by its caller.
        op: &'static str,
        /// What Redis said.
        cause: String,
    },
}

/// The reachability of Redis.
#[derive(Debug, Default)]
struct Health {
    lost: AtomicBool,
    /// The error that marked it lost, with when (RFC 3339).
    reason: Mutex<Option<(String, String)>>,
}

/// The shared Redis of a cluster of replicas; cheap to share as `Arc`.
pub struct Cluster {
    conn: ConnectionManager,
    addr: String,
    prefix: String,
    op_timeout: Duration,
    probe_interval: Duration,
    policies: LossPolicies,
    health: Health,
    metrics: Arc<Metrics>,
    /// The probe task; ended when the cluster is dropped.
    probe: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("addr", &self.addr)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(probe) = self.probe.lock().ok().and_then(|mut p| p.take()) {
            probe.abort();
        }
    }
}

/// Whether `e` says Redis is unreachable (as opposed to refusing one command).
fn is_loss(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

impl Cluster {
    /// The cluster `config` describes, or `None` without `redis_url`. It
    /// does not wait for Redis: a replica starts while Redis is down, in
    /// the degraded mode its policies say, and joins when Redis answers.
    /// Must be called within a tokio runtime (the probe is spawned).
    pub async fn connect(
        config: &ClusterConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Arc<Cluster>>, ClusterError> {
        let Some(url) = &config.redis_url else {
            return Ok(None);
        };
        let client =
            redis::Client::open(url.expose()).map_err(|e| ClusterError::Url(e.to_string()))?;
        let addr = client.get_connection_info().addr().to_string();
        let op_timeout = Duration::from_millis(config.op_timeout_ms);
        // Reconnects are the probe's job: one quick attempt per command,
        // never a backoff a request would wait through.
        let manager_config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(op_timeout)
            .set_connection_timeout(Some(op_timeout))
            .set_response_timeout(Some(op_timeout));
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| ClusterError::Url(e.to_string()))?;
        let cluster = Arc::new(Cluster {
            conn,
            addr,
            prefix: config.key_prefix.clone(),
            op_timeout,
            probe_interval: Duration::from_millis(config.probe_interval_ms),
            policies: config.on_redis_loss,
            health: Health::default(),
            metrics,
            probe: Mutex::new(None),
        });
        cluster.probe_once().await;
        let probe = tokio::spawn(probe_loop(Arc::downgrade(&cluster)));
        if let Ok(mut slot) = cluster.probe.lock() {
            *slot = Some(probe);
        }
        Ok(Some(cluster))
    }

    /// Where Redis is, without credentials (`host:port`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `<key_prefix>:<name>`: every key this gateway writes.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// The configured policies for a loss of Redis.
    pub fn policies(&self) -> LossPolicies {
        self.policies
    }

    /// Whether Redis answered the last command or ping.
    pub fn is_up(&self) -> bool {
        !self.health.lost.load(Ordering::SeqCst)
    }

    /// Runs one Redis operation `op` (named for errors and metrics) within
    /// `op_timeout_ms`. While Redis is lost it fails at once.
    pub async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, ClusterError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.is_up() {
            return Err(self.unavailable());
        }
        match tokio::time::timeout(self.op_timeout, f(self.conn.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if is_loss(&e) => {
                self.count_error(op);
                self.lose(e.to_string());
                Err(self.unavailable())
            }
            Ok(Err(e)) => {
                self.count_error(op);
                Err(ClusterError::Command {
                    op,
                    cause: e.to_string(),
                })
            }
            Err(_) => {
                self.count_error(op);
                self.lose(format!(
                    "`{op}` took longer than cluster.op_timeout_ms ({} ms)",
                    self.op_timeout.as_millis()
                ));
                Err(self.unavailable())
            }
        }
    }

    /// Every key matching `<prefix>:<pattern>` (a backup; `SCAN`, so Redis
    /// keeps serving while it runs).
    pub async fn scan(&self, pattern: &str) -> Result<Vec<String>, ClusterError> {
        let pattern = self.key(pattern);
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let p = pattern.clone();
            let (next, batch): (u64, Vec<String>) = self
                .run("scan", |mut conn| async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(p)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    /// Counts a decision a limit took without Redis, under its policy.
    pub fn note_fallback(&self, limit: &str, policy: LossPolicy) {
        self.metrics
            .cluster_fallbacks
            .get_or_create(&ClusterFallbackLabels {
                limit: limit.to_string(),
                policy: policy.label().to_string(),
            })
            .inc();
    }

    /// The readiness check: `ok` while Redis answers, `degraded` while not
    /// (the replica serves on under its policies).
    pub fn check(&self) -> Check {
        if self.is_up() {
            return Check::new("cluster", true, format!("Redis at {} answers", self.addr));
        }
        let p = self.policies;
        Check::degraded(
            "cluster",
            format!(
                "{}; serving with on_redis_loss requests={}, tokens={}, models={}, budgets={}, API keys from the last synced copy",
                self.unavailable(),
                p.requests.as_str(),
                p.tokens.as_str(),
                p.models.as_str(),
                p.budgets.as_str()
            ),
        )
    }

    fn unavailable(&self) -> ClusterError {
        let reason = self
            .health
            .reason
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .map(|(why, since)| format!("{why} (since {since})"))
            .unwrap_or_else(|| "not reachable".into());
        ClusterError::Unavailable {
            addr: self.addr.clone(),
            reason,
        }
    }

    fn up_gauge(&self) -> prometheus_client::metrics::gauge::Gauge {
        self.metrics
            .cluster_redis_up
            .get_or_create(&RedisLabels {
                redis: self.addr.clone(),
            })
            .clone()
    }

    fn count_error(&self, op: &'static str) {
        self.metrics
            .cluster_errors
            .get_or_create(&ClusterOpLabels { op: op.to_string() })
            .inc();
    }

    fn lose(&self, reason: String) {
        if !self.health.lost.swap(true, Ordering::SeqCst) {
            tracing::error!(redis = %self.addr, %reason, "lost Redis: limits apply their on_redis_loss policies until it is back");
            if let Ok(mut r) = self.health.reason.lock() {
                *r = Some((reason, crate::clock::now_rfc3339()));
            }
            self.up_gauge().set(0);
        }
    }

    fn recover(&self) {
        if self.health.lost.swap(false, Ordering::SeqCst) {
            tracing::info!(redis = %self.addr, "Redis is back: shared limits, budgets, keys and cache resume");
        }
        self.up_gauge().set(1);
    }

    /// One ping: marks Redis up or lost.
    async fn probe_once(&self) {
        let ping = tokio::time::timeout(self.op_timeout, async {
            let mut conn = self.conn.clone();
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await;
        match ping {
            Ok(Ok(_)) => self.recover(),
            Ok(Err(e)) => self.lose(e.to_string()),
            Err(_) => self.lose(format!(
                "PING took longer than cluster.op_timeout_ms ({} ms)",
                self.op_timeout.as_millis()
            )),
        }
    }
}

/// Pings every `probe_interval_ms` until the cluster is dropped.
async fn probe_loop(cluster: Weak<Cluster>) {
    loop {
        let Some(interval) = cluster.upgrade().map(|c| c.probe_interval) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(c) = cluster.upgrade() else {
            return;
        };
        c.probe_once().await;
    }
}
