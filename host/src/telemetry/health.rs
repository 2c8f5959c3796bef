//! Readiness checks: each part of the gateway that owns a fact reports it
//! as a [`Check`], and `/health/ready` lists them.

use serde::Serialize;

/// One readiness check's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The check's name in the readiness body (`store`, `plugins`, ...).
    #[serde(skip)]
    pub name: &'static str,
    /// Whether it passed.
    #[serde(serialize_with = "status")]
    pub status: bool,
    /// What it found, for an operator reading the body.
    pub detail: String,
}

fn status<S: serde::Serializer>(ok: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if *ok { "ok" } else { "fail" })
}

impl Check {
    /// A check named `name` that passed when `ok`.
    pub fn new(name: &'static str, ok: bool, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: ok,
            detail: detail.into(),
        }
    }
}
