//! What `deploy/` ships agrees with the gateway: the alert rules use only
//! series it exports, and the Kubernetes ConfigMap holds a config it
//! accepts. (Their schemas are checked in CI by `promtool` and
//! `kubernetes-validate`; see `.ci/run`.)

use agentrouter::config::Config;
use std::path::Path;

/// Every `agentrouter_…` name in `text`, with the exposition suffixes
/// (`_total`, `_bucket`, ...) taken off.
fn families(text: &str) -> Vec<String> {
    text.match_indices("agentrouter_")
        .map(|(at, _)| {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            ["_bucket", "_total", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name)
                .to_string()
        })
        .collect()
}

#[test]
fn the_alert_rules_use_only_series_the_gateway_exports() {
    let metrics = agentrouter::telemetry::Metrics::new();
    let exported = metrics.families();
    for (file, text, least) in [
        (
            "alerts.yml",
            include_str!("../deploy/prometheus/alerts.yml"),
            15,
        ),
        (
            "alerts.test.yml",
            include_str!("../deploy/prometheus/alerts.test.yml"),
            4,
        ),
    ] {
        let used = families(text);
        assert!(used.len() >= least, "{file}: {used:?}");
        for family in used {
            assert!(
                exported.contains(&family),
                "deploy/prometheus/{file}: {family} is not a series the gateway exports"
            );
        }
    }
    // Each critical series of the issue has a rule.
    let rules = include_str!("../deploy/prometheus/alerts.yml");
    for needed in [
        "agentrouter_http_request_duration_seconds_bucket",
        "status=~\"5..\"",
        "agentrouter_upstream_quota_remaining",
        "agentrouter_process_resident_memory_bytes",
        "agentrouter_budget_spent_usd",
        "agentrouter_cache_lookups_total",
        "agentrouter_cluster_redis_up",
    ] {
        assert!(rules.contains(needed), "no rule on {needed}");
    }
}

/// The TOML of `deploy/kubernetes/configmap.yaml`'s `agentrouter.toml`.
fn configmap_toml() -> String {
    let yaml = include_str!("../deploy/kubernetes/configmap.yaml");
    let (_, block) = yaml
        .split_once("agentrouter.toml: |\n")
        .expect("the ConfigMap has agentrouter.toml");
    block
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_kubernetes_configmap_holds_a_config_the_gateway_accepts() {
    // The Deployment fills these from the Secret; stand-ins of the right shape.
    let toml = configmap_toml()
        .replace(
            "${env:AGENTROUTER_ADMIN_TOKEN}",
            "an-admin-token-of-some-length",
        )
        .replace("${env:REDIS_URL}", "redis://agentrouter-redis:6379/0")
        .replace("${env:OPENAI_API_KEY}", "sk-test")
        .replace(
            "${env:AGENTROUTER_ALERT_WEBHOOK}",
            "https://alerts.example/hook",
        );
    assert!(
        !toml.contains("${env:"),
        "a secret the test does not stand in for:\n{toml}"
    );
    let config =
        Config::parse(&toml, "configmap.yaml", Path::new("/")).unwrap_or_else(|e| panic!("{e}"));
    let s = &config.startup;
    assert!(s.cluster.redis_url.is_some());
    assert_eq!(
        s.server.listen.port(),
        8080,
        "the Deployment's containerPort"
    );
    // The pod's grace covers preStop, the drain delay and the drain.
    let deployment = include_str!("../deploy/kubernetes/deployment.yaml");
    let grace: u64 = deployment
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("terminationGracePeriodSeconds");
    let pre_stop_s = 5;
    assert!(
        grace * 1000 > pre_stop_s * 1000 + s.server.drain_delay_ms + s.server.shutdown_grace_ms,
        "terminationGracePeriodSeconds {grace} is shorter than preStop + drain_delay_ms + shutdown_grace_ms"
    );
}
