//! What one HTTP request did, gathered while it is served.
//!
//! The server opens a [`RequestScope`] per request and runs the handler
//! inside it (a tokio task-local, the same way the current tracing span
//! travels with a future). Code deep in the call tree — a plugin call, an
//! upstream attempt — notes what it did with [`with_current`] without every
//! signature on the way having to carry a handle; outside a request (unit
//! tests, `agentrouter check`) there is no scope and noting is a no-op.
//! Agents fan out with `join_all` in the same task, so their calls land in
//! the scope of the request that started them.
//!
//! Usage and cost are not noted here: they are the request's [`Ledger`],
//! which the request layer attaches, so the log line and the accounting
//! read the same record.

use crate::domain::{Ledger, Usage};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

tokio::task_local! {
    static SCOPE: Arc<RequestScope>;
}

/// The record of one request, shared by everything that serves it.
#[derive(Debug)]
pub struct RequestScope {
    started: Instant,
    data: Mutex<ScopeData>,
}

#[derive(Debug, Default)]
struct ScopeData {
    client: Option<String>,
    target: Option<String>,
    ledger: Option<Ledger>,
    plugins: Vec<Arc<str>>,
    upstream_busy: Vec<(Instant, Instant)>,
}

/// A copy of what a request did, taken when it is answered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestSummary {
    /// Client identity (API key name), or `anonymous`.
    pub client: String,
    /// Configured model or `agent:<name>` the request addressed; `None`
    /// when it named none that exists (or the route takes none).
    pub target: Option<String>,
    /// Tokens of every completion made for it.
    pub usage: Usage,
    /// Cost of those completions in USD.
    pub cost_usd: f64,
    /// Every plugin called, as `name@version`, in first-call order.
    pub plugins: Vec<Arc<str>>,
    /// Wall time during which at least one upstream call was in flight.
    pub upstream_wait: Duration,
}

impl RequestScope {
    /// A scope for a request that starts now.
    pub fn new() -> Arc<RequestScope> {
        Arc::new(RequestScope {
            started: Instant::now(),
            data: Mutex::new(ScopeData::default()),
        })
    }

    /// When the request started.
    pub fn started(&self) -> Instant {
        self.started
    }

    fn with<R>(&self, f: impl FnOnce(&mut ScopeData) -> R) -> Option<R> {
        self.data.lock().ok().map(|mut d| f(&mut d))
    }

    /// Who is calling (`anonymous` until known).
    pub fn client(&self) -> String {
        self.with(|d| d.client.clone())
            .flatten()
            .unwrap_or_else(|| "anonymous".into())
    }

    /// Records who is calling.
    pub fn set_client(&self, client: &str) {
        self.with(|d| d.client = Some(client.to_string()));
    }

    /// Records the model or `agent:<name>` addressed; callers pass only
    /// names that exist, which keeps metric labels bounded.
    pub fn set_target(&self, target: &str) {
        self.with(|d| d.target = Some(target.to_string()));
    }

    /// Records a call of plugin `identity` (`name@version`).
    pub fn note_plugin(&self, identity: &Arc<str>) {
        self.with(|d| {
            if !d.plugins.iter().any(|p| p == identity) {
                d.plugins.push(identity.clone());
            }
        });
    }

    /// Attaches the request's ledger: its usage and cost are the request's.
    pub fn attach_ledger(&self, ledger: &Ledger) {
        self.with(|d| d.ledger = Some(ledger.clone()));
    }

    /// Records that an upstream call was in flight from `start` to `end`.
    pub fn add_upstream_wait(&self, start: Instant, end: Instant) {
        self.with(|d| d.upstream_busy.push((start, end.max(start))));
    }

    /// What the request did so far.
    pub fn summary(&self) -> RequestSummary {
        self.with(|d| RequestSummary {
            client: d.client.clone().unwrap_or_else(|| "anonymous".into()),
            target: d.target.clone(),
            usage: d.ledger.as_ref().map(Ledger::usage).unwrap_or_default(),
            cost_usd: d.ledger.as_ref().map_or(0.0, Ledger::cost_usd),
            plugins: d.plugins.clone(),
            upstream_wait: union_length(&mut d.upstream_busy),
        })
        .unwrap_or_default()
    }
}

/// Total length covered by `intervals`: overlapping waits (an agent's
/// workers calling upstreams concurrently) count once, so the remainder of
/// the wall time is what the gateway itself spent.
fn union_length(intervals: &mut [(Instant, Instant)]) -> Duration {
    intervals.sort_unstable_by_key(|i| i.0);
    let mut total = Duration::ZERO;
    let mut current: Option<(Instant, Instant)> = None;
    for &(start, end) in intervals.iter() {
        current = match current {
            Some((s, e)) if start <= e => Some((s, e.max(end))),
            Some((s, e)) => {
                total += e - s;
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    if let Some((s, e)) = current {
        total += e - s;
    }
    total
}

/// Runs `fut` with `scope` as the current request scope.
pub async fn scope<F: Future>(scope: Arc<RequestScope>, fut: F) -> F::Output {
    SCOPE.scope(scope, fut).await
}

/// Calls `f` with the current request's scope, if there is one.
pub fn with_current(f: impl FnOnce(&RequestScope)) {
    let _ = SCOPE.try_with(|s| f(s));
}

/// The current request's scope, if there is one (to keep it across a
/// `'static` future that outlives the caller's stack frame).
pub fn current() -> Option<Arc<RequestScope>> {
    SCOPE.try_with(Arc::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Step, StepKind};

    #[test]
    fn overlapping_upstream_waits_count_once() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut waits = vec![
            (t0 + ms(10), t0 + ms(30)),
            (t0, t0 + ms(5)),
            (t0 + ms(20), t0 + ms(40)),
            (t0 + ms(50), t0 + ms(60)),
        ];
        assert_eq!(union_length(&mut waits), ms(5 + 30 + 10));
        assert_eq!(union_length(&mut []), Duration::ZERO);
    }

    #[tokio::test]
    async fn notes_land_in_the_scope_of_the_running_request_only() {
        with_current(|s| s.set_target("nowhere"));
        let s = RequestScope::new();
        let identity: Arc<str> = Arc::from("guard@1");
        let ledger = Ledger::default();
        scope(s.clone(), async {
            with_current(|s| {
                s.set_target("usf-mini");
                s.note_plugin(&identity);
                s.note_plugin(&identity);
                s.attach_ledger(&ledger);
            });
        })
        .await;
        // What the request used is what its ledger says, whenever written.
        ledger.push(Step {
            kind: StepKind::Completion,
            target: "usf-mini".into(),
            upstream: Some("sim".into()),
            caller: "client".into(),
            depth: 0,
            latency_ms: 1,
            usage: Usage::new(3, 4),
            cost_usd: 0.5,
            ok: true,
            error: None,
        });
        let summary = s.summary();
        assert_eq!(summary.target.as_deref(), Some("usf-mini"));
        assert_eq!(summary.client, "anonymous");
        assert_eq!(summary.plugins, vec![identity]);
        assert_eq!(summary.usage.total(), 7);
        assert!(current().is_none());
    }
}
