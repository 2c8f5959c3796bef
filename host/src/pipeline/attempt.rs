//! [`Attempt`]: what one attempt of a completion produces — a whole answer,
//! or a live stream holding its first event — so that both follow one plan
//! (`completion.rs`): the same retries, budgets, backoff, attempt cap,
//! recovery decisions and hedges. A stream is an answer once its first
//! event is in hand; before that nothing has reached the client, and the
//! plan may retry, fall back or hedge it like a whole answer.

use super::Pipeline;
use super::decision::MAX_CHUNKS;
use super::guarded::{AttemptError, GuardedUpstream};
use crate::domain::{CallContext, Completion, CompletionRequest, Failure, Role};
use crate::upstream::EventStream;
use futures::FutureExt;
use futures::future::BoxFuture;
use std::sync::Arc;

/// The answer of one attempt.
pub(super) trait Attempt: Sized + Send + 'static {
    /// One call to `upstream` through its guards; `retry`: a repeat call
    /// there, whose retry budget was already asked.
    fn call(
        upstream: Arc<GuardedUpstream>,
        ctx: CallContext,
        req: CompletionRequest,
        retry: bool,
    ) -> BoxFuture<'static, Result<Self, AttemptError>>;

    /// The input split into chunks of at most `max_chars`, each completed
    /// on `upstream`, joined into one answer; `None` when answers of this
    /// kind cannot be joined (a stream).
    fn chunked<'a>(
        pipeline: &'a Pipeline,
        ctx: &'a CallContext,
        upstream: &'a GuardedUpstream,
        req: &CompletionRequest,
        max_chars: usize,
    ) -> Option<BoxFuture<'a, Result<Self, AttemptError>>>;
}

impl Attempt for Completion {
    fn call(
        upstream: Arc<GuardedUpstream>,
        ctx: CallContext,
        req: CompletionRequest,
        retry: bool,
    ) -> BoxFuture<'static, Result<Self, AttemptError>> {
        async move { upstream.complete(&ctx, &req, retry).await }.boxed()
    }

    fn chunked<'a>(
        pipeline: &'a Pipeline,
        ctx: &'a CallContext,
        upstream: &'a GuardedUpstream,
        req: &CompletionRequest,
        max_chars: usize,
    ) -> Option<BoxFuture<'a, Result<Self, AttemptError>>> {
        Some(
            pipeline
                .chunked(ctx, upstream, req.clone(), max_chars)
                .boxed(),
        )
    }
}

impl Attempt for EventStream {
    fn call(
        upstream: Arc<GuardedUpstream>,
        ctx: CallContext,
        req: CompletionRequest,
        retry: bool,
    ) -> BoxFuture<'static, Result<Self, AttemptError>> {
        async move { upstream.stream(&ctx, &req, retry).await }.boxed()
    }

    fn chunked<'a>(
        _: &'a Pipeline,
        _: &'a CallContext,
        _: &'a GuardedUpstream,
        _: &CompletionRequest,
        _: usize,
    ) -> Option<BoxFuture<'a, Result<Self, AttemptError>>> {
        None
    }
}

impl Pipeline {
    /// Splits the last user message into chunks of at most `max_chars`,
    /// completes each on `upstream`, and merges the answers.
    async fn chunked(
        &self,
        ctx: &CallContext,
        upstream: &GuardedUpstream,
        req: CompletionRequest,
        max_chars: usize,
    ) -> Result<Completion, AttemptError> {
        let refuse = || AttemptError::Failed(Failure::TokenLimitExceeded);
        let Some(pos) = req.messages.iter().rposition(|m| m.role == Role::User) else {
            return Err(refuse());
        };
        let chars: Vec<char> = req.messages[pos].content.chars().collect();
        if max_chars == 0 || chars.len().div_ceil(max_chars) > MAX_CHUNKS {
            return Err(refuse());
        }
        let mut merged: Option<Completion> = None;
        for chunk in chars.chunks(max_chars) {
            let mut part = req.clone();
            part.messages[pos].content = chunk.iter().collect();
            let answer = upstream.complete(ctx, &part, false).await?;
            merged = Some(match merged {
                None => answer,
                Some(mut acc) => {
                    acc.message.content.push('\n');
                    acc.message.content.push_str(&answer.message.content);
                    acc.usage = acc.usage.plus(answer.usage);
                    acc
                }
            });
        }
        merged.ok_or_else(refuse)
    }
}
