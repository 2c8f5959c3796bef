//! Errors of the request pipeline; mapped to HTTP once, in `server`.

use crate::domain::{Failure, Stage};
use crate::runtime::{PluginError, World};

/// Why a pipeline could not be wired from its slots and upstreams (config
/// validation catches these first; the pipeline re-checks).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WiringError {
    /// A slot named by the pipeline is of another world.
    #[error("slot `{slot}` is a {actual}, not a {expected}")]
    WrongWorld {
        /// The slot.
        slot: String,
        /// Its world.
        actual: World,
        /// The world its place in the pipeline needs.
        expected: World,
    },
    /// A slot named by the pipeline does not exist.
    #[error("slot `{0}` does not exist")]
    MissingSlot(String),
    /// Nothing to send completions to.
    #[error("no upstreams configured")]
    NoUpstreams,
}

/// Why a request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// No upstream serves the model.
    #[error("model `{0}` does not exist")]
    UnknownModel(String),
    /// No agent slot by that name.
    #[error("agent `{0}` does not exist")]
    UnknownAgent(String),
    /// The request is malformed.
    #[error("{0}")]
    InvalidRequest(String),
    /// A validator refused the content.
    #[error("{validator} rejected the {stage}: {reason}", stage = match stage { Stage::Input => "input", Stage::Output => "output" })]
    Rejected {
        /// Validator slot.
        validator: String,
        /// Where it ran.
        stage: Stage,
        /// Its reason.
        reason: String,
    },
    /// A fail-closed plugin failed (trap, limit, invalid output, ...).
    #[error("{0}")]
    Plugin(#[from] PluginError),
    /// Every upstream attempt failed; the last failure.
    #[error("upstream failure for model `{model}`: {failure}")]
    Upstream {
        /// The requested model.
        model: String,
        /// The last failure.
        failure: Failure,
    },
    /// Every upstream that could serve is at its concurrency limit.
    #[error(
        "upstream `{scope}` is at its concurrency limit and no other upstream has room; retry shortly"
    )]
    Overloaded {
        /// The (first) upstream that was full.
        scope: String,
    },
    /// The agent itself returned a failure.
    #[error("agent `{agent}` failed: {failure}")]
    Agent {
        /// Agent slot.
        agent: String,
        /// Its failure.
        failure: Failure,
    },
}

impl PipelineError {
    /// The contract-level failure this error amounts to, for agents that
    /// made the call that failed.
    pub fn to_failure(&self) -> Failure {
        match self {
            PipelineError::UnknownModel(m) => {
                Failure::Denied(format!("model `{m}` does not exist"))
            }
            PipelineError::UnknownAgent(a) => {
                Failure::Denied(format!("agent `{a}` does not exist"))
            }
            PipelineError::InvalidRequest(r) => Failure::Denied(r.clone()),
            PipelineError::Rejected { reason, .. } => Failure::Rejected(reason.clone()),
            PipelineError::Plugin(e) => Failure::Internal(e.to_string()),
            PipelineError::Overloaded { .. } => Failure::UpstreamStatus(503),
            PipelineError::Upstream { failure, .. } | PipelineError::Agent { failure, .. } => {
                failure.clone()
            }
        }
    }
}
