//! API keys: who is calling, what they may use, and what they may spend.
//!
//! Keys come from the config file (`[[auth.keys]]`) and from the store
//! (`agentrouter keys create`); both are held as SHA-256 hashes. A presented
//! key is hashed once and compared with every known hash in constant time
//! (`subtle`), so response timing says nothing about how close a guess was.
//! Clients send `Authorization: Bearer <key>` (what OpenAI SDKs do) or, when
//! allowed, `x-api-key: <key>`. The admin token is a separate credential.
//!
//! With `[cluster]`, keys created through the admin API live in Redis
//! ([`shared`]) and every replica authenticates against them; budgets are
//! shared the same way ([`budget`]).

mod budget;
mod config;
mod keys;
pub mod shared;

pub use budget::{
    BudgetExceeded, Budgets, Reservation, Spend, SpendUpdate, seconds_to_midnight, utc_day,
};
pub use config::{
    AuthConfig, DEFAULT_BUDGET_ALERT_THRESHOLDS, DEFAULT_BUDGET_RESERVATION_USD,
    DEFAULT_ROTATION_GRACE_S, KeyConfig, valid_key_name,
};
pub use keys::{
    KeyPolicy, KeyRecord, KeyStore, PreviousSecret, SECRET_PREFIX, generate_secret, hash_secret,
    new_key, revoked, rotated,
};

use crate::clock;
use crate::cluster::Cluster;
use crate::domain::Target;
use crate::ratelimit::Limits;
use crate::store::Store;
use axum::http::{HeaderMap, header};
use shared::SharedKeys;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Why a key was refused, or a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credentials in the request.
    #[error("missing API key: send `Authorization: Bearer <key>`")]
    Missing,
    /// An `Authorization` header that is not `Bearer <key>`.
    #[error("malformed Authorization header: expected `Bearer <key>`")]
    Malformed,
    /// No key matches.
    #[error("invalid API key")]
    Unknown,
    /// The key was revoked.
    #[error("API key `{0}` has been revoked")]
    Revoked(String),
    /// The secret was rotated and its grace period is over.
    #[error(
        "API key `{0}` was rotated and this secret's grace period has ended; use the new secret"
    )]
    GraceEnded(String),
    /// A key of that name already exists.
    #[error("a key named `{0}` already exists")]
    Exists(String),
    /// A key is both in the config file and in the store.
    #[error(
        "key `{0}` is declared in [[auth.keys]] and also exists in the store; rename one of them"
    )]
    Conflict(String),
    /// No key of that name.
    #[error("no key named `{0}`")]
    NotFound(String),
    /// The key is declared in the config file and cannot be changed here.
    #[error("key `{0}` is declared in the config file ([[auth.keys]]); change it there")]
    FromConfig(String),
    /// Not a valid key name.
    #[error("`{0}` is not a valid key name: use 1-64 letters, digits, `-`, `_` or `.`")]
    InvalidName(String),
    /// The store failed.
    #[error("key store: {0}")]
    Store(String),
}

/// Who is calling.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The key's name, or `anonymous` without auth.
    pub name: String,
    /// What the key may do.
    pub policy: Arc<KeyPolicy>,
}

impl Identity {
    /// The identity of every client when auth is off.
    pub fn anonymous() -> Identity {
        Identity {
            name: "anonymous".into(),
            policy: Arc::default(),
        }
    }

    /// Whether this identity may use `target`.
    pub fn check_target(&self, target: &Target) -> Result<(), NotAllowed> {
        let allowed = match target {
            Target::Agent(_) => &self.policy.agents,
            Target::Model(_) => &self.policy.models,
        };
        match allowed {
            Some(list) if !list.iter().any(|m| m == target.name()) => Err(NotAllowed {
                key: self.name.clone(),
                target: target.clone(),
                allowed: list.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// The key's own rate limits.
    pub fn limits(&self) -> Limits {
        Limits {
            requests_per_s: self.policy.requests_per_s,
            burst: self.policy.burst,
            tokens_per_min: self.policy.tokens_per_min,
        }
    }
}

/// A key may not use a model or agent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "API key `{key}` may not use {what} `{name}`; allowed: {list}",
    what = if target.is_agent() { "agent" } else { "model" },
    name = target.name(),
    list = if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
)]
pub struct NotAllowed {
    /// The key.
    pub key: String,
    /// What it asked for.
    pub target: Target,
    /// The models (or agents) it may use.
    pub allowed: Vec<String>,
}

/// The gateway's authenticator and key registry.
pub struct Auth {
    enabled: bool,
    accept_x_api_key: bool,
    rotation_grace: Duration,
    /// Keys of the config file, then the store's (sled's, or with a
    /// cluster the last synced copy of the shared ones).
    keys: RwLock<Vec<KeyRecord>>,
    store: KeyStore,
    shared: Option<SharedKeys>,
    budgets: Budgets,
}

/// A change of a shared key that raced another change this many times in a
/// row is given up (each retry reads the newer record first).
const SHARED_RETRIES: usize = 5;

impl Auth {
    /// Keys from `config` and from `store` (with `cluster`, from Redis; the
    /// store's keys are copied there when Redis lacks them); a name in both
    /// the config and a store is an error.
    pub async fn new(
        config: &AuthConfig,
        store: &Store,
        cluster: Option<Arc<Cluster>>,
    ) -> Result<Auth, AuthError> {
        let key_store = KeyStore::new(store.clone());
        let mut keys = key_store.list()?;
        let shared = cluster.clone().map(SharedKeys::new);
        if let Some(shared) = &shared {
            keys = import(shared, keys).await;
        }
        for k in &config.keys {
            if keys.iter().any(|r| r.name == k.name) {
                return Err(AuthError::Conflict(k.name.clone()));
            }
            keys.push(KeyRecord {
                name: k.name.clone(),
                hash: hash_secret(k.secret.expose()),
                previous: None,
                created_at_ms: 0,
                rotated_at_ms: None,
                revoked_at_ms: None,
                policy: KeyPolicy {
                    models: k.models.clone(),
                    agents: k.agents.clone(),
                    requests_per_s: k.requests_per_s,
                    burst: k.burst,
                    tokens_per_min: k.tokens_per_min,
                    daily_budget_usd: k.daily_budget_usd,
                },
                from_config: true,
            });
        }
        Ok(Auth {
            enabled: config.enabled,
            accept_x_api_key: config.accept_x_api_key,
            rotation_grace: Duration::from_secs(config.rotation_grace_s),
            keys: RwLock::new(keys),
            store: key_store,
            shared,
            budgets: Budgets::new(store.clone(), cluster, config.budget_reservation_usd),
        })
    }

    /// Whether requests need a key.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether keys are shared through a cluster.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// The default grace period of a rotation (`auth.rotation_grace_s`).
    pub fn rotation_grace(&self) -> Duration {
        self.rotation_grace
    }

    /// Names of every known key.
    pub fn key_names(&self) -> Vec<String> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|k| k.name.clone())
            .collect()
    }

    /// Every key: the config file's, then the store's (with a cluster,
    /// read from Redis, or the last synced copy while it is lost).
    pub async fn list(&self) -> Vec<KeyRecord> {
        if self.shared.is_some() {
            self.sync().await;
        }
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Refreshes the copy of the shared keys (with a cluster; called every
    /// `cluster.key_sync_ms`). Keeps the copy when Redis is unreachable.
    pub async fn sync(&self) {
        let Some(shared) = &self.shared else {
            return;
        };
        match shared.list().await {
            Ok(records) => {
                let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
                keys.retain(|k| k.from_config);
                keys.extend(records.into_iter().filter(|r| !r.from_config));
            }
            Err(e) => tracing::debug!(error = %e, "keeping the last copy of the shared keys"),
        }
    }

    fn presented(&self, headers: &HeaderMap) -> Result<String, AuthError> {
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let value = value.to_str().map_err(|_| AuthError::Malformed)?.trim();
            let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
            if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
                return Err(AuthError::Malformed);
            }
            return Ok(token.trim().to_string());
        }
        if self.accept_x_api_key
            && let Some(value) = headers.get("x-api-key")
        {
            let token = value.to_str().map_err(|_| AuthError::Malformed)?.trim();
            if !token.is_empty() {
                return Ok(token.to_string());
            }
        }
        Err(AuthError::Missing)
    }

    /// The identity of key `name` now (`anonymous` when auth is off): what
    /// a batch, created by that key, runs its requests as. A revoked or
    /// removed key is an error, so its batch's remaining requests fail.
    pub fn identity_named(&self, name: &str) -> Result<Identity, AuthError> {
        if !self.enabled {
            return Ok(Identity::anonymous());
        }
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let record = keys
            .iter()
            .find(|k| k.name == name)
            .ok_or(AuthError::Unknown)?;
        identity_of(record, &record.hash, clock::unix_ms())
    }

    /// The identity of a request: `anonymous` when auth is off, else the
    /// key its credentials match.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, AuthError> {
        if !self.enabled {
            return Ok(Identity::anonymous());
        }
        let hash = hash_secret(&self.presented(headers)?);
        let now = clock::unix_ms();
        if let Some(shared) = &self.shared {
            if let Some(found) = self.match_local(&hash, now, true) {
                return found;
            }
            match shared.lookup(&hash).await {
                Ok(Some(record)) => {
                    let answer = identity_of(&record, &hash, now);
                    self.replace(record);
                    return answer;
                }
                Ok(None) => return Err(AuthError::Unknown),
                Err(e) => {
                    tracing::debug!(error = %e, "authenticating from the last copy of the shared keys")
                }
            }
        }
        self.match_local(&hash, now, false)
            .unwrap_or(Err(AuthError::Unknown))
    }

    /// Matches `hash` against the known keys (only the config file's when
    /// `config_only`), comparing with every one in constant time, without
    /// stopping at the first match, so the time taken does not depend on
    /// which key (if any) matched.
    fn match_local(
        &self,
        hash: &str,
        now: u64,
        config_only: bool,
    ) -> Option<Result<Identity, AuthError>> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let mut current = None;
        let mut previous = None;
        for (i, k) in keys.iter().enumerate() {
            if config_only && !k.from_config {
                continue;
            }
            if bool::from(k.hash.as_bytes().ct_eq(hash.as_bytes())) {
                current = Some(i);
            }
            if let Some(p) = &k.previous
                && bool::from(p.hash.as_bytes().ct_eq(hash.as_bytes()))
            {
                previous = Some(i);
            }
        }
        current
            .or(previous)
            .map(|i| identity_of(&keys[i], hash, now))
    }

    fn replace(&self, record: KeyRecord) {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        match keys.iter_mut().find(|k| k.name == record.name) {
            Some(k) if k.from_config => {}
            Some(k) => *k = record,
            None => keys.push(record),
        }
    }

    fn stored(&self, name: &str) -> Result<(), AuthError> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        match keys.iter().find(|k| k.name == name) {
            Some(k) if k.from_config => Err(AuthError::FromConfig(name.to_string())),
            _ => Ok(()),
        }
    }

    /// Creates a key in the store and serves it at once; returns it and
    /// its secret.
    pub async fn create(
        &self,
        name: &str,
        policy: KeyPolicy,
    ) -> Result<(KeyRecord, String), AuthError> {
        self.stored(name)?;
        let (record, secret) = match &self.shared {
            Some(shared) => {
                if !valid_key_name(name) {
                    return Err(AuthError::InvalidName(name.to_string()));
                }
                let (record, secret) = new_key(name, policy);
                if !shared.put(&record, None, None).await? {
                    return Err(AuthError::Exists(name.to_string()));
                }
                (record, secret)
            }
            None => self.store.create(name, policy)?,
        };
        self.replace(record.clone());
        Ok((record, secret))
    }

    /// Rotates a stored key; the old secret works for `grace` more.
    pub async fn rotate(
        &self,
        name: &str,
        grace: Duration,
    ) -> Result<(KeyRecord, String), AuthError> {
        self.stored(name)?;
        let mut secret = String::new();
        let record = self
            .change(
                name,
                |record| {
                    let (next, s) = rotated(record, grace)?;
                    secret = s;
                    Ok(next)
                },
                |store| store.rotate(name, grace).map(|(r, s)| (r, Some(s))),
            )
            .await?;
        Ok((record.0, record.1.unwrap_or(secret)))
    }

    /// Revokes a stored key, effective immediately.
    pub async fn revoke(&self, name: &str) -> Result<KeyRecord, AuthError> {
        self.stored(name)?;
        let (record, _) = self
            .change(
                name,
                |record| Ok(revoked(record)),
                |store| store.revoke(name).map(|r| (r, None)),
            )
            .await?;
        Ok(record)
    }

    /// Applies `edit` to the shared record of `name` (compare-and-set,
    /// retried when another replica changed it meanwhile), or `local` to
    /// the sled store without a cluster.
    async fn change(
        &self,
        name: &str,
        mut edit: impl FnMut(KeyRecord) -> Result<KeyRecord, AuthError>,
        local: impl FnOnce(&KeyStore) -> Result<(KeyRecord, Option<String>), AuthError>,
    ) -> Result<(KeyRecord, Option<String>), AuthError> {
        let Some(shared) = &self.shared else {
            let changed = local(&self.store)?;
            self.replace(changed.0.clone());
            return Ok(changed);
        };
        for _ in 0..SHARED_RETRIES {
            let (record, text) = shared
                .get(name)
                .await?
                .ok_or_else(|| AuthError::NotFound(name.to_string()))?;
            let next = edit(record.clone())?;
            if shared.put(&next, Some(&text), Some(&record)).await? {
                self.replace(next.clone());
                return Ok((next, None));
            }
        }
        Err(AuthError::Store(format!(
            "key `{name}` kept changing on other replicas; try again"
        )))
    }

    /// Admits a request of `id` against its daily budget: `None` without a
    /// budget, else the reservation to settle with its real cost.
    pub async fn reserve_budget(
        &self,
        id: &Identity,
    ) -> Result<Option<Reservation>, BudgetExceeded> {
        let Some(budget) = id.policy.daily_budget_usd else {
            return Ok(None);
        };
        self.budgets.reserve(&id.name, budget).await.map(Some)
    }

    /// Settles a reservation with what the request really cost.
    pub async fn settle(&self, reservation: Reservation, cost_usd: f64) -> SpendUpdate {
        self.budgets.settle(reservation, cost_usd).await
    }

    /// What `id` spent today, USD.
    pub async fn spent_today(&self, id: &Identity) -> f64 {
        self.budgets.spent_today(&id.name).await
    }
}

/// The identity `record` gives a secret hashing to `hash`, or why not.
fn identity_of(record: &KeyRecord, hash: &str, now: u64) -> Result<Identity, AuthError> {
    if record.revoked_at_ms.is_some() {
        return Err(AuthError::Revoked(record.name.clone()));
    }
    let current = bool::from(record.hash.as_bytes().ct_eq(hash.as_bytes()));
    let in_grace = record.previous.as_ref().is_some_and(|p| {
        bool::from(p.hash.as_bytes().ct_eq(hash.as_bytes())) && now < p.valid_until_ms
    });
    if !current && !in_grace {
        return Err(AuthError::GraceEnded(record.name.clone()));
    }
    Ok(Identity {
        name: record.name.clone(),
        policy: Arc::new(record.policy.clone()),
    })
}

/// Copies the sled store's keys into Redis where Redis lacks them (a
/// single replica turned into a cluster), and returns the shared keys —
/// or, with Redis unreachable, the sled ones.
async fn import(shared: &SharedKeys, local: Vec<KeyRecord>) -> Vec<KeyRecord> {
    for record in &local {
        match shared.put(record, None, None).await {
            Ok(true) => {
                tracing::info!(key = %record.name, "copied a key of the local store into the cluster")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the cluster's keys; serving the local store's until it answers");
                return local;
            }
        }
    }
    match shared.list().await {
        Ok(records) => records,
        Err(_) => local,
    }
}
