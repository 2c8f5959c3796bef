//! The host's check of a plugin's decision, before carrying it out.
//!
//! A recovery plugin decides what happens after a failed attempt; the host
//! carries the decision out only when it makes sense. Nonsense — a chunk
//! size of 0, a retry that would start after the deadline, a fallback to an
//! upstream that serves neither the model nor its fallback chain, a
//! refinement the host's rules refuse — is refused with an error naming the
//! plugin and what it decided, so the client is never blamed for it (an
//! 18-character prompt is not `context_length_exceeded`). Refusals are
//! counted in `agentrouter_plugin_decisions_refused_total`.

use super::plan::Plan;
use super::{Pipeline, PipelineError};
use crate::domain::{Action, FailureContext, Role};
use crate::telemetry::metrics::DecisionLabels;

/// Most chunks a chunk-and-retry may produce.
pub(super) const MAX_CHUNKS: usize = 32;

/// An action as messages name it: `chunk-and-retry(0)`, `retry(250 ms)`.
pub(super) fn describe(action: &Action) -> String {
    match action {
        Action::Retry(ms) => format!("retry({ms} ms)"),
        Action::Fallback(upstream) => format!("fallback({upstream})"),
        Action::ChunkAndRetry(chars) => format!("chunk-and-retry({chars})"),
        Action::Refine(messages) => format!("refine({} messages)", messages.len()),
        Action::Fail(true) => "fail(alert)".into(),
        Action::Fail(false) => "fail".into(),
    }
}

/// The metric label of an action.
pub(super) fn action_label(action: &Action) -> &'static str {
    match action {
        Action::Retry(_) => "retry",
        Action::Fallback(_) => "fallback",
        Action::ChunkAndRetry(_) => "chunk",
        Action::Refine(_) => "refine",
        Action::Fail(_) => "fail",
    }
}

impl Pipeline {
    /// Counts a decision of slot `slot` that the host refused.
    pub(super) fn refused_decision(&self, slot: &str, decision: &str) {
        self.metrics()
            .plugin_decisions_refused
            .get_or_create(&DecisionLabels {
                plugin: slot.to_string(),
                decision: decision.to_string(),
            })
            .inc();
    }

    /// Refuses `action`, decided by `by` (`recovery name@version`, slot
    /// `slot`) after the failure in `fctx`, when the host will not carry it
    /// out within `plan`.
    pub(super) fn check_decision(
        &self,
        (by, slot): (&str, &str),
        action: &Action,
        fctx: &FailureContext,
        plan: &Plan,
    ) -> Result<(), PipelineError> {
        let Err(reason) = self.judge(action, fctx, plan) else {
            return Ok(());
        };
        self.refused_decision(slot, action_label(action));
        let error = PipelineError::Decision {
            plugin: by.to_string(),
            decision: describe(action),
            after: format!("upstream `{}` failed ({})", fctx.upstream, fctx.failure),
            reason,
        };
        tracing::warn!(plugin = %by, error = %error, "plugin decision refused");
        Err(error)
    }

    /// Why the host will not carry out `action`, if it will not.
    fn judge(&self, action: &Action, fctx: &FailureContext, plan: &Plan) -> Result<(), String> {
        match action {
            // An ask is the ceiling of a jittered wait, capped at
            // `max_delay_ms`; only when even the capped ceiling reaches the
            // deadline is it a retry that cannot happen in time.
            Action::Retry(ms)
                if u64::from(*ms).min(self.settings.max_delay.as_millis() as u64)
                    >= fctx.remaining_ms =>
            {
                Err(format!(
                    "refused: the request's deadline is in {} ms",
                    fctx.remaining_ms
                ))
            }
            Action::ChunkAndRetry(0) => {
                Err("invalid: a chunk must hold at least one character".into())
            }
            Action::ChunkAndRetry(max_chars) => {
                let Some(message) = fctx.request.messages.iter().rfind(|m| m.role == Role::User)
                else {
                    return Err("refused: the request has no user message to split".into());
                };
                let chars = message.content.chars().count();
                let chunks = chars.div_ceil(*max_chars as usize);
                if chunks > MAX_CHUNKS {
                    return Err(format!(
                        "refused: it would split the {chars}-character message into {chunks} chunks; the host makes at most {MAX_CHUNKS}"
                    ));
                }
                Ok(())
            }
            Action::Fallback(name) if !plan.order().iter().any(|u| u.name() == name) => {
                Err(format!(
                    "refused: no upstream `{name}` serves model `{}` or its fallback chain",
                    fctx.request.model
                ))
            }
            Action::Refine(messages) => self
                .settings
                .rules
                .check("messages", messages)
                .map_err(|v| format!("refused: {v}")),
            _ => Ok(()),
        }
    }
}
