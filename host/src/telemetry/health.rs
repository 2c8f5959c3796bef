//! Readiness checks: each part of the gateway that owns a fact reports it
//! as a [`Check`], and `/health/ready` lists them.
//!
//! A check passes, fails (the replica reports 503 and a load balancer takes
//! it out), or passes *degraded*: the replica still serves, in a reduced
//! mode an operator should know about — e.g. shared state unreachable, so
//! limits fall back to local ones. Degraded is not a failure on purpose:
//! every replica shares the same dependency, so taking them all out of the
//! load balancer would turn a degraded service into an outage.

use serde::Serialize;

/// One readiness check's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The check's name in the readiness body (`store`, `plugins`, ...).
    #[serde(skip)]
    pub name: &'static str,
    /// Whether it passed (a degraded check passed).
    #[serde(skip)]
    pub status: bool,
    /// Whether it passed in a reduced mode (see the module docs).
    #[serde(skip)]
    pub degraded: bool,
    /// `ok`, `degraded` or `fail`, as the body shows it.
    #[serde(rename = "status")]
    state: &'static str,
    /// What it found, for an operator reading the body.
    pub detail: String,
}

impl Check {
    /// A check named `name` that passed when `ok`.
    pub fn new(name: &'static str, ok: bool, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: ok,
            degraded: false,
            state: if ok { "ok" } else { "fail" },
            detail: detail.into(),
        }
    }

    /// A check named `name` that passed, degraded.
    pub fn degraded(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: true,
            degraded: true,
            state: "degraded",
            detail: detail.into(),
        }
    }
}
