//! `cost-router`: a router that tries healthy, cheap upstreams first and
//! sends complex requests to reasoning-capable models.
//!
//! Upstreams with an open circuit are never returned. The rest are ordered by
//! health, then by fit for the request's complexity (reasoning-tagged models
//! for complex requests, others for simple ones, so cheap requests do not
//! burn expensive reasoning capacity), then by price, error rate and latency.
#![warn(missing_docs)]

use std::cmp::Ordering;

use agentrouter_sdk::router::{Candidate, CircuitState, RouteRequest, Router, config, metadata};

/// The router's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Tag marking reasoning-capable upstreams.
    pub reasoning_tag: String,
    /// Prompts longer than this many tokens count as complex.
    pub complexity_threshold_tokens: u32,
    /// Upstreams erring more often than this are tried after healthy ones.
    pub max_error_rate: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            reasoning_tag: "reasoning".to_string(),
            complexity_threshold_tokens: 2000,
            max_error_rate: 0.5,
        }
    }
}

impl Settings {
    /// Reads the settings from the host.
    pub fn load() -> Self {
        let defaults = Self::default();
        Self {
            reasoning_tag: config::get_or("reasoning_tag", &defaults.reasoning_tag),
            complexity_threshold_tokens: config::parse_or(
                "complexity_threshold_tokens",
                defaults.complexity_threshold_tokens,
            ),
            max_error_rate: config::parse_or("max_error_rate", defaults.max_error_rate),
        }
    }
}

/// True when the request should go to a reasoning model: the client says so
/// in its metadata, or the prompt is long.
pub fn is_complex(req: &RouteRequest, settings: &Settings) -> bool {
    let complexity = metadata(req, "complexity").map(str::trim);
    complexity
        .is_some_and(|c| c.eq_ignore_ascii_case("high") || c.eq_ignore_ascii_case("reasoning"))
        || metadata(req, "reasoning").is_some_and(|r| r.trim().eq_ignore_ascii_case("true"))
        || req.prompt_tokens > settings.complexity_threshold_tokens
}

/// True when a candidate carries the reasoning tag.
fn is_reasoning(candidate: &Candidate, settings: &Settings) -> bool {
    candidate
        .tags
        .iter()
        .any(|t| t.eq_ignore_ascii_case(&settings.reasoning_tag))
}

/// True when a candidate's circuit is closed and its error rate acceptable.
fn is_healthy(candidate: &Candidate, settings: &Settings) -> bool {
    candidate.circuit == CircuitState::Closed && candidate.error_rate <= settings.max_error_rate
}

/// Compares two candidates by the router's preference (lesser is better).
fn preference(a: &Candidate, b: &Candidate, complex: bool, settings: &Settings) -> Ordering {
    // `false` sorts first, so each key is "is this candidate worse here?".
    let fit = |c: &Candidate| is_reasoning(c, settings) != complex;
    let cost = |c: &Candidate| c.input_cost_per_1k + c.output_cost_per_1k;
    (!is_healthy(a, settings))
        .cmp(&!is_healthy(b, settings))
        .then_with(|| fit(a).cmp(&fit(b)))
        .then_with(|| cost(a).total_cmp(&cost(b)))
        .then_with(|| a.error_rate.total_cmp(&b.error_rate))
        .then_with(|| a.ewma_latency_ms.total_cmp(&b.ewma_latency_ms))
}

/// Candidate names in the order to try them.
///
/// When the client named a model that some upstreams serve, only those are
/// returned, unless every one of them has an open circuit; then any upstream
/// is better than none, so the full ordering is used.
pub fn order(req: &RouteRequest, candidates: &[Candidate], settings: &Settings) -> Vec<String> {
    let complex = is_complex(req, settings);
    let mut usable: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.circuit != CircuitState::Open)
        .collect();
    if !req.model.is_empty() && usable.iter().any(|c| c.model == req.model) {
        usable.retain(|c| c.model == req.model);
    }
    // Stable: ties keep the host's order.
    usable.sort_by(|a, b| preference(a, b, complex, settings));
    usable.into_iter().map(|c| c.name.clone()).collect()
}

/// The exported router.
pub struct CostRouter;

impl Router for CostRouter {
    fn route(req: RouteRequest, candidates: Vec<Candidate>) -> Vec<String> {
        order(&req, &candidates, &Settings::load())
    }
}

agentrouter_sdk::export_router!(CostRouter);

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(name: &str, cost: f64, tags: &[&str]) -> Candidate {
        Candidate {
            name: name.into(),
            model: "gpt".into(),
            input_cost_per_1k: cost,
            output_cost_per_1k: cost,
            ewma_latency_ms: 100.0,
            error_rate: 0.0,
            circuit: CircuitState::Closed,
            weight: 1,
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn request(prompt_tokens: u32, metadata: &[(&str, &str)]) -> RouteRequest {
        RouteRequest {
            model: String::new(),
            prompt_tokens,
            message_count: 1,
            has_tools: false,
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn names(req: &RouteRequest, candidates: &[Candidate]) -> Vec<String> {
        order(req, candidates, &Settings::default())
    }

    #[test]
    fn complexity_signals() {
        let s = Settings::default();
        assert!(!is_complex(&request(10, &[]), &s));
        assert!(is_complex(&request(10, &[("complexity", "high")]), &s));
        assert!(is_complex(&request(10, &[("complexity", "reasoning")]), &s));
        assert!(is_complex(&request(10, &[("reasoning", "true")]), &s));
        assert!(!is_complex(&request(10, &[("complexity", "low")]), &s));
        assert!(!is_complex(&request(2000, &[]), &s));
        assert!(is_complex(&request(2001, &[]), &s));
    }

    #[test]
    fn simple_requests_prefer_cheap_untagged() {
        let cs = [
            candidate("deep", 0.1, &["reasoning"]),
            candidate("pricey", 0.5, &[]),
            candidate("cheap", 0.2, &[]),
        ];
        assert_eq!(names(&request(10, &[]), &cs), ["cheap", "pricey", "deep"]);
    }

    #[test]
    fn complex_requests_prefer_reasoning() {
        let cs = [
            candidate("cheap", 0.1, &[]),
            candidate("deep-pricey", 0.9, &["reasoning"]),
            candidate("deep", 0.5, &["fast", "reasoning"]),
        ];
        assert_eq!(
            names(&request(5000, &[]), &cs),
            ["deep", "deep-pricey", "cheap"]
        );
    }

    #[test]
    fn health_beats_fit_and_open_circuits_are_dropped() {
        let mut flaky = candidate("flaky", 0.1, &[]);
        flaky.error_rate = 0.6;
        let mut probing = candidate("probing", 0.1, &[]);
        probing.circuit = CircuitState::HalfOpen;
        let mut open = candidate("open", 0.0, &[]);
        open.circuit = CircuitState::Open;
        let deep = candidate("deep", 0.9, &["reasoning"]);
        let cs = [flaky, probing, open, deep];
        assert_eq!(names(&request(10, &[]), &cs), ["deep", "probing", "flaky"]);
    }

    #[test]
    fn ties_break_on_error_rate_then_latency() {
        let mut a = candidate("a", 0.1, &[]);
        a.error_rate = 0.2;
        let mut b = candidate("b", 0.1, &[]);
        b.ewma_latency_ms = 300.0;
        let c = candidate("c", 0.1, &[]);
        assert_eq!(names(&request(10, &[]), &[a, b, c]), ["c", "b", "a"]);
    }

    #[test]
    fn requested_model_restricts_unless_all_open() {
        let mut claude = candidate("claude-up", 0.9, &[]);
        claude.model = "claude".into();
        let cs = [candidate("gpt-up", 0.1, &[]), claude.clone()];
        let mut req = request(10, &[]);
        req.model = "claude".into();
        assert_eq!(names(&req, &cs), ["claude-up"]);

        claude.circuit = CircuitState::Open;
        let cs = [candidate("gpt-up", 0.1, &[]), claude];
        assert_eq!(names(&req, &cs), ["gpt-up"]);

        req.model = "unknown".into();
        assert_eq!(names(&req, &cs), ["gpt-up"]);
    }
}
