//! The four world exports as typed calls.
//!
//! Each export is a few lines over the one generic [`Plugin::call`]: convert
//! the arguments to WIT once, call the guest function, apply the host's
//! rules to what comes back. [`Export`] names each world's input and output,
//! so code generic over worlds — a rollout slot (`crate::rollout`) picks a
//! version, records its arm and mirrors a shadow once for all four — calls
//! any of them the same way.
//!
//! Inputs borrow on the request path (`Cow::Borrowed`); an owned copy is made
//! only when a call must outlive its caller, as a shadow call does.

use super::bindings::wit;
use super::convert;
use super::error::PluginError;
use super::host::{AgentCall, AgentHost};
use super::{Plugin, World};
use crate::domain::{
    Action, CallContext, Candidate, Failure, FailureContext, Message, RouteRequest, Stage, Task,
    TaskResult, Verdict,
};
use std::borrow::Cow;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

/// Longest reject reason passed on to clients.
const MAX_REASON_CHARS: usize = 1024;

/// One world's export: what a call takes, what it gives back, and how it is
/// made. Implemented by [`Validate`], [`Route`], [`Recover`] and [`Handle`].
///
/// ```no_run
/// # async fn run(plugin: &agentrouter::runtime::Plugin) -> Result<(), agentrouter::runtime::PluginError> {
/// use agentrouter::domain::{Message, Stage};
/// use agentrouter::runtime::{Export, Validate};
/// use std::borrow::Cow;
///
/// let messages = [Message::user("hello")];
/// let verdict = Validate::call(plugin, None, (Stage::Input, Cow::Borrowed(&messages))).await?;
/// # let _ = verdict; Ok(()) }
/// ```
pub trait Export: Send + Sync + 'static {
    /// The world whose export this is.
    const WORLD: World;
    /// The arguments of one call.
    type Input<'a>: Send;
    /// The answer, with the host's rules applied.
    type Output: Send + 'static;

    /// Calls the export of `plugin` once, on a fresh instance admitted for
    /// the request of `ctx` (`None`: a background call, outside any
    /// request's share; an agent's own context is in its input). A plugin
    /// of another world is refused with [`PluginError::WorldMismatch`].
    fn call(
        plugin: &Plugin,
        ctx: Option<&CallContext>,
        input: Self::Input<'_>,
    ) -> impl Future<Output = Result<Self::Output, PluginError>> + Send;
}

/// A guest's answer as the generic call classifies it.
pub(super) trait Answer {
    /// The error kind counted when the answer, though the call succeeded, is
    /// a refusal: a validator's reject is the plugin doing its job, but it is
    /// counted (and marked on the call's span), so one that rejects
    /// everything shows.
    fn refusal(&self) -> Option<&'static str> {
        None
    }
}

impl Answer for () {}
impl Answer for Vec<String> {}
impl Answer for wit::Action {}
impl Answer for Result<wit::TaskResult, wit::Failure> {}

impl Answer for wit::Verdict {
    fn refusal(&self) -> Option<&'static str> {
        matches!(self, wit::Verdict::Reject(_)).then_some("rejected")
    }
}

/// `validate` of the validator world.
pub enum Validate {}

impl Export for Validate {
    const WORLD: World = World::Validator;
    /// The stage and the messages.
    type Input<'a> = (Stage, Cow<'a, [Message]>);
    /// The verdict; a reject reason is capped at 1024 characters.
    type Output = Verdict;

    async fn call(
        plugin: &Plugin,
        ctx: Option<&CallContext>,
        (stage, messages): Self::Input<'_>,
    ) -> Result<Verdict, PluginError> {
        let args = convert::messages_to_wit(&messages);
        let verdict: Verdict = plugin
            .call(
                Some(Self::WORLD),
                "validate",
                ctx,
                None,
                plugin.timeout(),
                async |i, store| i.validate(store, stage.into(), &args).await,
            )
            .await?
            .into();
        Ok(match verdict {
            Verdict::Reject(reason) if reason.chars().count() > MAX_REASON_CHARS => {
                Verdict::Reject(reason.chars().take(MAX_REASON_CHARS).collect())
            }
            other => other,
        })
    }
}

/// `route` of the router world.
pub enum Route {}

impl Export for Route {
    const WORLD: World = World::Router;
    /// The request and the candidates.
    type Input<'a> = (Cow<'a, RouteRequest>, Cow<'a, [Candidate]>);
    /// Candidate names in the order to try them, sanitised: unknown names
    /// and repeats are dropped, so a misbehaving router can only reorder or
    /// shorten the list.
    type Output = Vec<String>;

    async fn call(
        plugin: &Plugin,
        ctx: Option<&CallContext>,
        (req, candidates): Self::Input<'_>,
    ) -> Result<Vec<String>, PluginError> {
        let wit_req: wit::RouteRequest = req.as_ref().into();
        let wit_candidates: Vec<wit::Candidate> = candidates.iter().map(Into::into).collect();
        let names = plugin
            .call(
                Some(Self::WORLD),
                "route",
                ctx,
                None,
                plugin.timeout(),
                async |i, store| i.route(store, &wit_req, &wit_candidates).await,
            )
            .await?;
        let known: HashSet<&str> = candidates.iter().map(|c| c.name.as_str()).collect();
        let mut seen = HashSet::new();
        let mut order = Vec::with_capacity(candidates.len());
        for name in names {
            if known.contains(name.as_str()) && seen.insert(name.clone()) {
                order.push(name);
            }
        }
        Ok(order)
    }
}

/// `recover` of the recovery world.
pub enum Recover {}

impl Export for Recover {
    const WORLD: World = World::Recovery;
    /// What failed, and where.
    type Input<'a> = Cow<'a, FailureContext>;
    /// The action; the host still enforces its own bounds on it.
    type Output = Action;

    async fn call(
        plugin: &Plugin,
        ctx: Option<&CallContext>,
        failure: Self::Input<'_>,
    ) -> Result<Action, PluginError> {
        let wit_ctx: wit::FailureContext = failure.as_ref().into();
        let action = plugin
            .call(
                Some(Self::WORLD),
                "recover",
                ctx,
                None,
                plugin.timeout(),
                async |i, store| i.recover(store, &wit_ctx).await,
            )
            .await?;
        Ok(action.into())
    }
}

/// `handle` of the agent world.
pub enum Handle {}

impl Export for Handle {
    const WORLD: World = World::Agent;
    /// The task, the context inside the agent (its name already on the
    /// chain) and the way back into the pipeline for its `llm` and `agents`
    /// imports.
    type Input<'a> = (Cow<'a, Task>, CallContext, Arc<dyn AgentHost>);
    /// The agent's own answer or failure; the sandbox's verdict is the
    /// outer `Result` of [`Export::call`].
    type Output = Result<TaskResult, Failure>;

    async fn call(
        plugin: &Plugin,
        _caller: Option<&CallContext>,
        (task, ctx, host): Self::Input<'_>,
    ) -> Result<Result<TaskResult, Failure>, PluginError> {
        // Bounded by the plugin's timeout and by what is left of the request.
        let timeout = plugin.timeout().min(ctx.remaining());
        let wit_task: wit::Task = task.as_ref().into();
        let agent = Some(AgentCall { host, ctx });
        let result = plugin
            .call(
                Some(Self::WORLD),
                "handle",
                None,
                agent,
                timeout,
                async |i, store| i.handle(store, &wit_task).await,
            )
            .await?;
        Ok(result.map(Into::into).map_err(Into::into))
    }
}

/// The exports as methods, for callers that know the world they hold;
/// calls outside any request (smoke tests, benches), except an agent's,
/// which runs in the request of its context.
impl Plugin {
    /// Runs a validator over `messages` at `stage` (see [`Validate`]).
    pub async fn validate(
        &self,
        stage: Stage,
        messages: &[Message],
    ) -> Result<Verdict, PluginError> {
        Validate::call(self, None, (stage, Cow::Borrowed(messages))).await
    }

    /// Asks a router for the order in which to try `candidates` (see [`Route`]).
    pub async fn route(
        &self,
        req: &RouteRequest,
        candidates: &[Candidate],
    ) -> Result<Vec<String>, PluginError> {
        Route::call(self, None, (Cow::Borrowed(req), Cow::Borrowed(candidates))).await
    }

    /// Asks a recovery strategy what to do after a failure (see [`Recover`]).
    pub async fn recover(&self, ctx: &FailureContext) -> Result<Action, PluginError> {
        Recover::call(self, None, Cow::Borrowed(ctx)).await
    }

    /// Runs an agent on `task` (see [`Handle`]). `ctx` is the context inside
    /// this agent (its name already on the chain). The outer `Result` is the
    /// sandbox's verdict, the inner one the agent's.
    pub async fn handle(
        &self,
        task: &Task,
        ctx: CallContext,
        host: Arc<dyn AgentHost>,
    ) -> Result<Result<TaskResult, Failure>, PluginError> {
        Handle::call(self, None, (Cow::Borrowed(task), ctx, host)).await
    }
}
