//! Errors of the request pipeline; mapped to HTTP once, in `server`.

use super::RuleViolation;
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
    #[error("{validator} rejected the {stage}: {reason}", stage = stage_name(*stage))]
    Rejected {
        /// Validator slot.
        validator: String,
        /// Where it ran.
        stage: Stage,
        /// Its reason.
        reason: String,
    },
    /// A validator rewrote the conversation into one the host's rules
    /// refuse (empty, too many or too long messages, an answer that is not
    /// the assistant's).
    #[error("validator {validator} rewrote the {stage} into something the host refuses: {violation}", stage = stage_name(*stage))]
    Rewrite {
        /// `name@version` of the validator.
        validator: String,
        /// Where it ran.
        stage: Stage,
        /// The rule broken.
        violation: RuleViolation,
    },
    /// A plugin decided something the host refuses to carry out (a chunk
    /// size of 0, a retry past the deadline, a fallback to an unknown
    /// upstream).
    #[error("{plugin} asked {decision} after {after}: {reason}")]
    Decision {
        /// The plugin's world and `name@version`, e.g. `recovery standard-recovery@0.1.0`.
        plugin: String,
        /// What it asked, e.g. `chunk-and-retry(0)`.
        decision: String,
        /// What it was deciding about, e.g. `upstream \`sim\` answered HTTP 500`.
        after: String,
        /// Why the host refused, starting `invalid:` or `refused:`.
        reason: String,
    },
    /// A plugin's decision ended the completion (recovery `fail`, or a
    /// retry the host could not grant): the last failure, and who decided.
    #[error("upstream failure for model `{model}`: {failure} ({decision})")]
    GaveUp {
        /// The requested model.
        model: String,
        /// The last failure.
        failure: Failure,
        /// Who decided what, e.g. `recovery standard-recovery@0.1.0 decided fail`.
        decision: String,
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
            // Not started for lack of an instance: the host said no.
            PipelineError::Plugin(e) if e.is_admission() => Failure::Denied(e.to_string()),
            PipelineError::Plugin(e) => Failure::Internal(e.to_string()),
            PipelineError::Rewrite { .. } | PipelineError::Decision { .. } => {
                Failure::Internal(self.to_string())
            }
            PipelineError::GaveUp { failure, .. } => failure.clone(),
            PipelineError::Overloaded { .. } => Failure::UpstreamStatus(503),
            PipelineError::Upstream { failure, .. } | PipelineError::Agent { failure, .. } => {
                failure.clone()
            }
        }
    }
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Input => "input",
        Stage::Output => "output",
    }
}
