//! `standard-recovery`: a recovery strategy covering the common failures.
//!
//! A failure the provider may not repeat elsewhere — a server error, a rate
//! limit, a timeout — moves to an alternative upstream at once when the
//! host offers one (it offers only upstreams that can take a call now, the
//! untried first), and is retried with exponential backoff when it offers
//! none; oversized input is chunked, and unparsable answers are retried
//! with a nudge to the model. Failures that no retry can fix end the
//! request; host-side ones, and a provider refusing our credentials
//! (401/403), also alert the operator.
//! 408 and 409 are handled like server errors; the host never asks about
//! other 4xx (the request's own fault, answered with the upstream's error
//! as it came).
#![warn(missing_docs)]

use agentrouter_sdk::recovery::{
    Action, Failure, FailureContext, Level, Message, Recovery, config, logging,
};

/// Appended to the conversation when the model's reply could not be parsed.
pub const REFINE_PROMPT: &str =
    "Your previous reply could not be parsed. Reply again, in plain well-formed text.";

/// What to do first about a server error (5xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnServerError {
    /// Move to an alternative at once; retry only when there is none. The
    /// default: a client waits one call, not a backoff, and the failing
    /// provider gets no second call from this request.
    Fallback,
    /// Retry the same upstream (with backoff) while attempts remain, then
    /// fall back: for an upstream much cheaper than its alternatives.
    Retry,
}

impl std::str::FromStr for OnServerError {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s.trim() {
            "fallback" => Ok(Self::Fallback),
            "retry" => Ok(Self::Retry),
            _ => Err(()),
        }
    }
}

/// The strategy's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Delay before the first retry.
    pub base_delay_ms: u32,
    /// Upper bound on computed delays.
    pub max_delay_ms: u32,
    /// Chunk size for oversized input.
    pub chunk_chars: u32,
    /// What to do first about a server error.
    pub on_server_error: OnServerError,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            base_delay_ms: 200,
            max_delay_ms: 5000,
            chunk_chars: 4000,
            on_server_error: OnServerError::Fallback,
        }
    }
}

impl Settings {
    /// Reads the settings from the host.
    pub fn load() -> Self {
        let d = Self::default();
        Self {
            base_delay_ms: config::parse_or("base_delay_ms", d.base_delay_ms),
            max_delay_ms: config::parse_or("max_delay_ms", d.max_delay_ms),
            chunk_chars: config::parse_or("chunk_chars", d.chunk_chars),
            on_server_error: config::parse_or("on_server_error", d.on_server_error),
        }
    }
}

/// Exponential backoff: `min(max, base * 2^(attempt-1))`, without overflow
/// for large attempts (attempt 0 is treated as 1).
pub fn backoff(attempt: u32, settings: &Settings) -> u32 {
    let exponent = attempt.saturating_sub(1).min(32);
    let delay = u64::from(settings.base_delay_ms).saturating_mul(1u64 << exponent);
    // The min() result is at most max_delay_ms, so it fits in u32.
    delay.min(u64::from(settings.max_delay_ms)) as u32
}

/// The action for a failure.
pub fn decide(ctx: &FailureContext, settings: &Settings) -> Action {
    let retries_left = ctx.attempt < ctx.max_attempts;
    let fallback = || ctx.alternatives.first().cloned().map(Action::Fallback);
    match &ctx.failure {
        // Another upstream can serve now; else the upstream's own hint is
        // the best estimate of when this one can, so it is not capped.
        Failure::RateLimited(hint) => fallback().unwrap_or_else(|| {
            Action::Retry(hint.unwrap_or_else(|| backoff(ctx.attempt, settings)))
        }),
        // A slow upstream is likely to stay slow: move on if possible.
        Failure::Timeout => fallback().unwrap_or(if retries_left {
            Action::Retry(backoff(ctx.attempt, settings))
        } else {
            Action::Fail(false)
        }),
        Failure::TokenLimitExceeded => Action::ChunkAndRetry(settings.chunk_chars),
        Failure::InvalidResponse(_) if retries_left => {
            let mut messages = ctx.request.messages.clone();
            messages.push(Message::user(REFINE_PROMPT));
            Action::Refine(messages)
        }
        Failure::InvalidResponse(_) => Action::Fail(false),
        // Server errors are often transient, and so are a request timeout
        // (408) and a conflict (409), which OpenAI's own SDKs retry; but
        // another upstream answers sooner than a backoff ends (unless the
        // operator prefers retries).
        Failure::UpstreamStatus(status) if *status >= 500 || matches!(status, 408 | 409) => {
            let retry = || retries_left.then(|| Action::Retry(backoff(ctx.attempt, settings)));
            let first = match settings.on_server_error {
                OnServerError::Fallback => fallback().or_else(retry),
                OnServerError::Retry => retry().or_else(fallback),
            };
            first.unwrap_or(Action::Fail(false))
        }
        // The provider refused our credentials: every request will fail
        // until an operator fixes the key, so say so loudly.
        Failure::UpstreamStatus(401 | 403) => Action::Fail(true),
        // Other client errors would fail the same way anywhere. (The host
        // answers them with the upstream's own error without asking; this
        // arm serves hosts and agents that still ask.)
        Failure::UpstreamStatus(_) => Action::Fail(false),
        Failure::CircuitOpen(_) => fallback().unwrap_or(Action::Fail(false)),
        // Policy outcomes, not faults: retrying would not change them.
        Failure::Rejected(_) | Failure::BudgetExceeded => Action::Fail(false),
        // Host-side faults need a human.
        Failure::Internal(_) | Failure::Denied(_) => Action::Fail(true),
    }
}

/// A short name for an action, for logs.
fn action_name(action: &Action) -> String {
    match action {
        Action::Retry(ms) => format!("retry after {ms} ms"),
        Action::Fallback(upstream) => format!("fall back to {upstream}"),
        Action::ChunkAndRetry(chars) => format!("chunk into {chars} characters"),
        Action::Refine(_) => "refine".to_string(),
        Action::Fail(alert) => format!("fail (alert: {alert})"),
    }
}

/// The exported recovery strategy.
pub struct StandardRecovery;

impl Recovery for StandardRecovery {
    fn recover(ctx: FailureContext) -> Action {
        let action = decide(&ctx, &Settings::load());
        logging::with_fields(
            Level::Debug,
            "standard-recovery decision",
            &[
                ("upstream", &ctx.upstream),
                ("attempt", &ctx.attempt.to_string()),
                ("action", &action_name(&action)),
            ],
        );
        action
    }
}

agentrouter_sdk::export_recovery!(StandardRecovery);

#[cfg(test)]
mod tests {
    use super::*;
    use agentrouter_sdk::recovery::CompletionRequest;

    fn ctx(failure: Failure, attempt: u32, alternatives: &[&str]) -> FailureContext {
        FailureContext {
            failure,
            upstream: "primary".into(),
            attempt,
            max_attempts: 3,
            remaining_ms: 10_000,
            alternatives: alternatives.iter().map(|a| a.to_string()).collect(),
            request: CompletionRequest {
                model: "gpt".into(),
                messages: vec![Message::user("hi")],
                tools: Vec::new(),
                temperature: None,
                max_tokens: None,
                metadata: Vec::new(),
            },
        }
    }

    fn run(failure: Failure, attempt: u32, alternatives: &[&str]) -> Action {
        decide(&ctx(failure, attempt, alternatives), &Settings::default())
    }

    /// A comparable summary (the generated `Action` has no `PartialEq`).
    fn show(action: Action) -> String {
        match action {
            Action::Refine(m) => {
                format!(
                    "refine:{}",
                    m.iter()
                        .map(|m| m.content.as_str())
                        .collect::<Vec<_>>()
                        .join("|")
                )
            }
            other => action_name(&other),
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let s = Settings::default();
        let delays: Vec<u32> = (0..=7).map(|a| backoff(a, &s)).collect();
        assert_eq!(delays, [200, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff(u32::MAX, &s), 5000);
    }

    #[test]
    fn rate_limits_move_on_or_honour_the_hint_uncapped() {
        assert_eq!(
            show(run(Failure::RateLimited(Some(1000)), 1, &["b"])),
            "fall back to b"
        );
        assert_eq!(
            show(run(Failure::RateLimited(Some(60_000)), 1, &[])),
            "retry after 60000 ms"
        );
        assert_eq!(
            show(run(Failure::RateLimited(None), 3, &[])),
            "retry after 800 ms"
        );
        assert_eq!(
            show(run(Failure::RateLimited(None), 9, &[])),
            "retry after 5000 ms"
        );
    }

    #[test]
    fn timeouts_fall_back_then_retry_then_fail() {
        assert_eq!(
            show(run(Failure::Timeout, 1, &["b", "c"])),
            "fall back to b"
        );
        assert_eq!(show(run(Failure::Timeout, 2, &[])), "retry after 400 ms");
        assert_eq!(show(run(Failure::Timeout, 3, &[])), "fail (alert: false)");
    }

    #[test]
    fn token_limits_chunk() {
        assert_eq!(
            show(run(Failure::TokenLimitExceeded, 1, &[])),
            "chunk into 4000 characters"
        );
    }

    #[test]
    fn invalid_responses_refine_while_attempts_remain() {
        assert_eq!(
            show(run(Failure::InvalidResponse("bad json".into()), 1, &[])),
            format!("refine:hi|{REFINE_PROMPT}")
        );
        assert_eq!(
            show(run(Failure::InvalidResponse("x".into()), 3, &[])),
            "fail (alert: false)"
        );
    }

    #[test]
    fn server_errors_fall_back_then_retry() {
        assert_eq!(
            show(run(Failure::UpstreamStatus(503), 1, &["b"])),
            "fall back to b"
        );
        assert_eq!(
            show(run(Failure::UpstreamStatus(503), 2, &[])),
            "retry after 400 ms"
        );
        assert_eq!(
            show(run(Failure::UpstreamStatus(502), 3, &[])),
            "fail (alert: false)"
        );
        assert_eq!(
            show(run(Failure::UpstreamStatus(404), 1, &["b"])),
            "fail (alert: false)"
        );
        // 408 and 409 are treated as server errors.
        assert_eq!(
            show(run(Failure::UpstreamStatus(408), 1, &["b"])),
            "fall back to b"
        );
        assert_eq!(
            show(run(Failure::UpstreamStatus(408), 1, &[])),
            "retry after 200 ms"
        );
        assert_eq!(
            show(run(Failure::UpstreamStatus(409), 3, &["b"])),
            "fall back to b"
        );
        assert_eq!(
            show(run(Failure::UpstreamStatus(429), 1, &["b"])),
            "fail (alert: false)"
        );
        assert_eq!(
            show(run(Failure::UpstreamStatus(401), 1, &["b"])),
            "fail (alert: true)"
        );
        assert_eq!(
            show(run(Failure::UpstreamStatus(403), 1, &[])),
            "fail (alert: true)"
        );
    }

    #[test]
    fn server_errors_can_be_retried_first() {
        let retry_first = Settings {
            on_server_error: OnServerError::Retry,
            ..Settings::default()
        };
        let decide_with = |attempt, alternatives: &[&str]| {
            show(decide(
                &ctx(Failure::UpstreamStatus(500), attempt, alternatives),
                &retry_first,
            ))
        };
        assert_eq!(decide_with(2, &["b"]), "retry after 400 ms");
        assert_eq!(decide_with(3, &["b"]), "fall back to b");
        assert_eq!(decide_with(3, &[]), "fail (alert: false)");
        assert_eq!("retry".parse(), Ok(OnServerError::Retry));
        assert_eq!(" fallback ".parse(), Ok(OnServerError::Fallback));
        assert_eq!("sometimes".parse::<OnServerError>(), Err(()));
    }

    #[test]
    fn open_circuits_fall_back() {
        assert_eq!(
            show(run(Failure::CircuitOpen("a".into()), 1, &["b"])),
            "fall back to b"
        );
        assert_eq!(
            show(run(Failure::CircuitOpen("a".into()), 1, &[])),
            "fail (alert: false)"
        );
    }

    #[test]
    fn final_failures() {
        assert_eq!(
            show(run(Failure::Rejected("no".into()), 1, &["b"])),
            "fail (alert: false)"
        );
        assert_eq!(
            show(run(Failure::BudgetExceeded, 1, &["b"])),
            "fail (alert: false)"
        );
        assert_eq!(
            show(run(Failure::Internal("x".into()), 1, &["b"])),
            "fail (alert: true)"
        );
        assert_eq!(
            show(run(Failure::Denied("x".into()), 1, &["b"])),
            "fail (alert: true)"
        );
    }
}
