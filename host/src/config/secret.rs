//! Secrets and secret references.
//!
//! A value that is exactly `${env:VAR}` or `${file:PATH}` is replaced at load
//! by the variable's value or the file's contents (trailing newline trimmed,
//! `PATH` relative to the config file's directory). Resolved values live in
//! [`Secret`], whose `Debug` never shows them, so a logged config is safe.

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use std::fmt;
use std::path::{Path, PathBuf};

pub use crate::secret::Secret;

/// A plugin setting: plain text, or a resolved secret reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettingValue {
    /// Written in the file (numbers, booleans and lists already converted).
    Plain(String),
    /// Resolved from `${env:...}` or `${file:...}`.
    Secret(Secret),
}

impl SettingValue {
    /// The value as the plugin sees it.
    pub fn expose(&self) -> &str {
        match self {
            SettingValue::Plain(s) => s,
            SettingValue::Secret(s) => s.expose(),
        }
    }
}

// Settings reach plugins as strings, so scalars are accepted and converted
// here; a table or a date has no obvious string form and is refused.
impl<'de> Deserialize<'de> for SettingValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SettingValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number, boolean or array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(SettingValue::Plain(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(SettingValue::Plain(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(SettingValue::Plain(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(SettingValue::Plain(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(SettingValue::Plain(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(SettingValue::Plain(items.join(",")))
            }
        }
        d.deserialize_any(V)
    }
}

/// Looks up an environment variable; injectable so tests need not mutate
/// the process environment.
pub(crate) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Why a secret reference could not be resolved; the message is what the
/// config error at the key says.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// `${env:}`.
    #[error("`${{env:}}` names no variable")]
    NoVariable,
    /// The variable is not set.
    #[error("environment variable `{0}` is not set")]
    Unset(String),
    /// The file cannot be read.
    #[error("cannot read secret file {}: {source}", path.display())]
    Unreadable {
        /// The file, resolved against the config's directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `${...}` with a scheme other than `env` or `file`; only the scheme is
    /// kept, since the rest could be a mistyped secret.
    #[error("unknown secret reference scheme `{0}`: use `${{env:VAR}}` or `${{file:PATH}}`")]
    UnknownScheme(String),
}

/// Resolves `value` if it is a secret reference: `Ok(None)` when it is plain
/// text, an error when the reference is malformed or cannot be resolved.
pub(crate) fn resolve(
    value: &str,
    base_dir: &Path,
    env: EnvLookup<'_>,
) -> Result<Option<Secret>, SecretError> {
    let Some(inner) = value
        .strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'))
    else {
        return Ok(None);
    };
    if let Some(var) = inner.strip_prefix("env:") {
        if var.is_empty() {
            return Err(SecretError::NoVariable);
        }
        return env(var)
            .map(|v| Some(Secret::new(v)))
            .ok_or_else(|| SecretError::Unset(var.to_string()));
    }
    if let Some(file) = inner.strip_prefix("file:") {
        let path = base_dir.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|source| SecretError::Unreadable { path, source })?;
        let trimmed = text.strip_suffix('\n').unwrap_or(&text);
        let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
        return Ok(Some(Secret::new(trimmed)));
    }
    // Looks like a reference but is not one we know: a typo such as
    // `${ENV:KEY}` must not silently become the literal setting.
    let scheme = inner.split(':').next().unwrap_or_default();
    Err(SecretError::UnknownScheme(scheme.to_string()))
}

/// The process environment, for real loads.
pub(crate) fn process_env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}
