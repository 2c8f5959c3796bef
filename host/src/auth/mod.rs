//! API keys: who is calling, what they may use, and what they may spend.
//!
//! Keys come from the config file (`[[auth.keys]]`) and from the store
//! (`agentrouter keys create`); both are held as SHA-256 hashes. A presented
//! key is hashed once and compared with every known hash in constant time
//! (`subtle`), so response timing says nothing about how close a guess was.
//! Clients send `Authorization: Bearer <key>` (what OpenAI SDKs do) or, when
//! allowed, `x-api-key: <key>`. The admin token is a separate credential.

mod budget;
mod config;
mod keys;

pub use budget::{Spend, seconds_to_midnight, utc_day};
pub use config::{AuthConfig, DEFAULT_ROTATION_GRACE_S, KeyConfig, valid_key_name};
pub use keys::{
    KeyPolicy, KeyRecord, KeyStore, PreviousSecret, SECRET_PREFIX, generate_secret, hash_secret,
};

use crate::clock;
use crate::domain::Target;
use crate::ratelimit::Limits;
use crate::store::Store;
use axum::http::{HeaderMap, header};
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

/// The budget of a key is spent for today.
#[derive(Debug)]
pub struct BudgetExceeded {
    /// Spent today, USD.
    pub spent_usd: f64,
    /// The daily budget, USD.
    pub budget_usd: f64,
    /// Seconds until the budget resets (UTC midnight).
    pub resets_in_s: u64,
}

/// The gateway's authenticator and key registry.
pub struct Auth {
    enabled: bool,
    accept_x_api_key: bool,
    keys: RwLock<Vec<KeyRecord>>,
    store: KeyStore,
    spend: Spend,
}

impl Auth {
    /// Keys from `config` and from `store`; a name in both is an error.
    pub fn new(config: &AuthConfig, store: &Store) -> Result<Auth, AuthError> {
        let key_store = KeyStore::new(store.clone());
        let mut keys = key_store.list()?;
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
            keys: RwLock::new(keys),
            store: key_store,
            spend: Spend::new(store.clone()),
        })
    }

    /// Whether requests need a key.
    pub fn enabled(&self) -> bool {
        self.enabled
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

    /// The identity of a request: `anonymous` when auth is off, else the
    /// key its credentials match.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, AuthError> {
        if !self.enabled {
            return Ok(Identity::anonymous());
        }
        let hash = hash_secret(&self.presented(headers)?);
        let now = clock::unix_ms();
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        // Compare against every key, without stopping at the first match,
        // so the time taken does not depend on which key (if any) matched.
        let mut current = None;
        let mut previous = None;
        for (i, k) in keys.iter().enumerate() {
            if bool::from(k.hash.as_bytes().ct_eq(hash.as_bytes())) {
                current = Some(i);
            }
            if let Some(p) = &k.previous
                && bool::from(p.hash.as_bytes().ct_eq(hash.as_bytes()))
            {
                previous = Some((i, p.valid_until_ms));
            }
        }
        let (index, grace_ok) = match (current, previous) {
            (Some(i), _) => (i, true),
            (None, Some((i, until))) => (i, now < until),
            (None, None) => return Err(AuthError::Unknown),
        };
        let key = &keys[index];
        if key.revoked_at_ms.is_some() {
            return Err(AuthError::Revoked(key.name.clone()));
        }
        if !grace_ok {
            return Err(AuthError::GraceEnded(key.name.clone()));
        }
        Ok(Identity {
            name: key.name.clone(),
            policy: Arc::new(key.policy.clone()),
        })
    }

    fn replace(&self, record: KeyRecord) {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        match keys.iter_mut().find(|k| k.name == record.name) {
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

    /// Creates a key in the store and serves it at once; returns its secret.
    pub fn create(&self, name: &str, policy: KeyPolicy) -> Result<String, AuthError> {
        self.stored(name)?;
        let (record, secret) = self.store.create(name, policy)?;
        self.replace(record);
        Ok(secret)
    }

    /// Rotates a stored key; the old secret works for `grace` more.
    pub fn rotate(&self, name: &str, grace: Duration) -> Result<String, AuthError> {
        self.stored(name)?;
        let (record, secret) = self.store.rotate(name, grace)?;
        self.replace(record);
        Ok(secret)
    }

    /// Revokes a stored key, effective immediately.
    pub fn revoke(&self, name: &str) -> Result<(), AuthError> {
        self.stored(name)?;
        let record = self.store.revoke(name)?;
        self.replace(record);
        Ok(())
    }

    /// Refuses an identity whose daily budget is spent.
    pub fn check_budget(&self, id: &Identity) -> Result<(), BudgetExceeded> {
        let Some(budget) = id.policy.daily_budget_usd else {
            return Ok(());
        };
        let now_s = clock::unix_s();
        let spent = self
            .spend
            .spent(&id.name, utc_day(now_s))
            .unwrap_or_else(|e| {
                tracing::warn!(key = %id.name, error = %e, "cannot read spend; assuming none");
                0.0
            });
        if spent >= budget {
            return Err(BudgetExceeded {
                spent_usd: spent,
                budget_usd: budget,
                resets_in_s: seconds_to_midnight(now_s),
            });
        }
        Ok(())
    }

    /// Adds the real cost of an answer to the identity's spend today.
    pub fn record_spend(&self, id: &Identity, usd: f64) {
        if usd <= 0.0 || id.policy.daily_budget_usd.is_none() {
            return;
        }
        if let Err(e) = self.spend.add(&id.name, utc_day(clock::unix_s()), usd) {
            tracing::warn!(key = %id.name, error = %e, "cannot record spend");
        }
    }

    /// What `id` spent today, USD.
    pub fn spent_today(&self, id: &Identity) -> f64 {
        self.spend
            .spent(&id.name, utc_day(clock::unix_s()))
            .unwrap_or(0.0)
    }
}
