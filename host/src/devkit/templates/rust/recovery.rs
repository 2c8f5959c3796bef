//! __NAME__: an AgentRouter recovery strategy.
//!
//! Retries rate limits after the upstream's hint, falls back on timeouts,
//! retries server errors while attempts remain, and gives up otherwise.

use agentrouter_sdk::recovery::{Action, Failure, FailureContext, Recovery, config};

struct Plugin;

impl Recovery for Plugin {
    fn recover(ctx: FailureContext) -> Action {
        let delay_ms: u32 = config::parse_or("delay_ms", 200);
        match ctx.failure {
            Failure::RateLimited(hint) => Action::Retry(hint.unwrap_or(delay_ms)),
            Failure::Timeout => match ctx.alternatives.first() {
                Some(other) => Action::Fallback(other.clone()),
                None => Action::Fail(false),
            },
            Failure::UpstreamStatus(status) if status >= 500 && ctx.attempt < ctx.max_attempts => {
                Action::Retry(delay_ms)
            }
            _ => Action::Fail(false),
        }
    }
}

agentrouter_sdk::export_recovery!(Plugin);
