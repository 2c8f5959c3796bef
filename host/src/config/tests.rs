//! Unit tests of parsing, validation, secrets and error locations.

use super::*;
use crate::runtime::{PluginLimits, World};

const ORIGIN: &str = "test.toml";
/// The smallest valid config: one upstream.
const UPSTREAM: &str = "[upstreams.a]\nkind = \"simulated\"\nmodel = \"m\"\n";

fn env(var: &str) -> Option<String> {
    (var == "AR_TEST_KEY").then(|| "sk-live-123".to_string())
}

fn parse_in(text: &str, base_dir: &Path) -> Result<Config, Vec<ConfigError>> {
    Config::parse_with(text, ORIGIN, base_dir, &env)
}

fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    parse_in(text, Path::new("/nonexistent-base"))
}

/// The only error of `text`, which must be invalid.
fn only_error(text: &str) -> ConfigError {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(mut errors) => {
            assert_eq!(errors.len(), 1, "{errors:#?}");
            errors.remove(0)
        }
    }
}

#[test]
fn quickstart_yields_seven_plugin_specs_with_their_worlds() {
    let config = Config::embedded_quickstart();
    let specs = config.plugin_specs().unwrap();
    let worlds: Vec<(&str, World)> = specs.iter().map(|s| (s.name.as_str(), s.world)).collect();
    assert_eq!(
        worlds,
        [
            ("cost-router", World::Router),
            ("input-guard", World::Validator),
            ("manager", World::Agent),
            ("pii-redact", World::Validator),
            ("researcher", World::Agent),
            ("standard-recovery", World::Recovery),
            ("writer", World::Agent),
        ]
    );
    assert_eq!(
        config.agents().collect::<Vec<_>>(),
        ["manager", "researcher", "writer"]
    );
    let manager = specs.iter().find(|s| s.name == "manager").unwrap();
    assert_eq!(manager.settings["workers"], "researcher,writer");
    assert_eq!(manager.limits, PluginLimits::agent_defaults());
    let x1 = &config.reloadable.upstreams["usf-mini-x1"];
    assert_eq!(x1.tags, ["reasoning"]);
    assert_eq!(x1.simulator.as_ref().unwrap().latency_ms, 60);
    assert_eq!(config.startup.server.listen.to_string(), "127.0.0.1:8080");
    let settings = config.runtime_settings();
    assert_eq!(
        settings.cache_dir,
        Some(config.base_dir.join("data").join("plugin-cache"))
    );
}

#[test]
fn unknown_key_is_refused_with_its_name_and_line() {
    let e = only_error(&format!(
        "[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 8080\n{UPSTREAM}"
    ));
    assert_eq!(e.key, "server.listen_port");
    assert_eq!(e.line, Some(3));
    assert!(e.message.contains("unknown field `listen_port`"), "{e}");
    assert!(
        e.to_string()
            .starts_with("test.toml:3: server.listen_port: "),
        "{e}"
    );
}

#[test]
fn missing_kind_is_reported_at_its_table() {
    let e = only_error("\n[upstreams.a]\nmodel = \"m\"\n");
    assert_eq!(e.key, "upstreams.a");
    assert_eq!(e.line, Some(2));
    assert!(e.message.contains("missing field `kind`"), "{e}");
}

#[test]
fn router_pointing_at_a_validator_names_key_line_and_reason() {
    let e = only_error(&format!(
        "{UPSTREAM}[plugins.input-guard]\nsource = \"builtin:input-guard\"\n\
         [pipeline]\nrouter = \"input-guard\"\n"
    ));
    assert_eq!(e.key, "pipeline.router");
    assert_eq!(e.line, Some(7));
    assert_eq!(e.message, "slot `input-guard` is a validator, not a router");
    assert_eq!(
        e.to_string(),
        "test.toml:7: pipeline.router: slot `input-guard` is a validator, not a router"
    );
}

#[test]
fn pipeline_reference_to_a_missing_slot_is_refused() {
    let e = only_error(&format!(
        "{UPSTREAM}[pipeline]\ninput_validators = [\n  \"nope\",\n]\n"
    ));
    assert_eq!(e.key, "pipeline.input_validators[0]");
    assert_eq!(e.line, Some(6));
    assert!(e.message.contains("no plugin slot `nope`"), "{e}");
}

#[test]
fn unknown_builtin_lists_the_available_ones() {
    let e = only_error(&format!(
        "{UPSTREAM}[plugins.g]\nsource = \"builtin:nope\"\n"
    ));
    assert_eq!(e.key, "plugins.g.source");
    assert_eq!(e.line, Some(5));
    assert!(e.message.contains("unknown builtin `nope`"), "{e}");
    for name in [
        "input-guard",
        "pii-redact",
        "cost-router",
        "manager",
        "worker",
    ] {
        assert!(e.message.contains(name), "{e}");
    }
}

#[test]
fn builtin_of_another_world_is_refused() {
    let e = only_error(&format!(
        "{UPSTREAM}[plugins.g]\nsource = \"builtin:worker\"\nworld = \"router\"\n"
    ));
    assert_eq!(e.key, "plugins.g.world");
    assert!(e.message.contains("implements world `agent`"), "{e}");
}

#[test]
fn missing_plugin_file_names_the_path() {
    let e = only_error(&format!(
        "{UPSTREAM}[plugins.g]\nsource = \"plugins/g.wasm\"\nworld = \"validator\"\n"
    ));
    assert_eq!(e.key, "plugins.g.source");
    assert!(
        e.message.contains("/nonexistent-base/plugins/g.wasm"),
        "{e}"
    );
}

const OPENAI: &str = "[upstreams.openai]\nkind = \"openai\"\nmodel = \"gpt-4o-mini\"\n\
                      base_url = \"https://api.openai.com/v1\"\n";

#[test]
fn env_reference_is_resolved_and_a_missing_one_names_the_key() {
    let config = parse(&format!("{OPENAI}api_key = \"${{env:AR_TEST_KEY}}\"\n")).unwrap();
    let key = config.reloadable.upstreams["openai"]
        .api_key
        .as_ref()
        .unwrap();
    assert_eq!(key.expose(), "sk-live-123");

    let e = only_error(&format!("{OPENAI}api_key = \"${{env:AR_UNSET}}\"\n"));
    assert_eq!(e.key, "upstreams.openai.api_key");
    assert_eq!(e.line, Some(5));
    assert!(e.message.contains("`AR_UNSET` is not set"), "{e}");
}

#[test]
fn file_reference_resolves_against_the_base_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/token"), "s3cret\n").unwrap();
    let text = format!(
        "{UPSTREAM}[plugins.w]\nsource = \"builtin:worker\"\n\
         [plugins.w.settings]\ntoken = \"${{file:secrets/token}}\"\n"
    );
    let config = parse_in(&text, dir.path()).unwrap();
    assert_eq!(
        config.reloadable.plugins["w"].settings["token"].expose(),
        "s3cret"
    );
    let spec = &config.plugin_specs().unwrap()[0];
    assert_eq!(spec.settings["token"], "s3cret");

    let errors = parse_in(
        &text.replace("secrets/token", "secrets/missing"),
        dir.path(),
    );
    let e = &errors.unwrap_err()[0];
    assert_eq!(e.key, "plugins.w.settings.token");
    assert!(e.message.contains("secrets/missing"), "{e}");
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "file-secret-456").unwrap();
    let text = format!(
        "{OPENAI}api_key = \"${{env:AR_TEST_KEY}}\"\n\
         [upstreams.literal]\nkind = \"openai\"\nmodel = \"m\"\n\
         base_url = \"http://localhost:1\"\napi_key = \"sk-literal-789\"\n\
         [plugins.w]\nsource = \"builtin:worker\"\n\
         [plugins.w.settings]\ntoken = \"${{file:token}}\"\n"
    );
    let config = parse_in(&text, dir.path()).unwrap();
    let debug = format!("{config:?} {config:#?}");
    for secret in ["sk-live-123", "file-secret-456", "sk-literal-789"] {
        assert!(!debug.contains(secret), "{secret} leaked");
    }
    assert!(debug.contains("Secret(***)"));
}

#[test]
fn malformed_reference_is_refused_without_echoing_it() {
    let e = only_error(&format!("{OPENAI}api_key = \"${{ENV:sk-oops}}\"\n"));
    assert!(e.message.contains("scheme `ENV`"), "{e}");
    assert!(!e.message.contains("sk-oops"), "{e}");
}

#[test]
fn bad_limit_is_keyed_under_the_slot() {
    let e = only_error(&format!(
        "{UPSTREAM}[plugins.g]\nsource = \"builtin:input-guard\"\n\
         [plugins.g.limits]\nmemory_mb = 0\n"
    ));
    assert_eq!(e.key, "plugins.g.limits.memory_mb");
    assert_eq!(e.line, Some(7));
    assert!(e.message.contains("between 1 and 4096"), "{e}");
}

#[test]
fn limits_merge_over_world_defaults() {
    let config = parse(&format!(
        "{UPSTREAM}[plugins.w]\nsource = \"builtin:worker\"\n\
         [plugins.w.limits]\nmemory_mb = 16\n"
    ))
    .unwrap();
    let spec = &config.plugin_specs().unwrap()[0];
    assert_eq!(spec.limits.memory_mb, 16);
    assert_eq!(
        spec.limits.timeout_ms,
        PluginLimits::agent_defaults().timeout_ms
    );
}

#[test]
fn rate_outside_zero_one_is_refused() {
    let e = only_error(&format!(
        "{UPSTREAM}[upstreams.a.simulator]\nfail_rate = 1.5\n"
    ));
    assert_eq!(e.key, "upstreams.a.simulator.fail_rate");
    assert_eq!(e.line, Some(5));
    assert!(e.message.contains("between 0 and 1"), "{e}");
}

#[test]
fn settings_accept_scalars_and_string_lists() {
    let config = parse(&format!(
        "{UPSTREAM}[plugins.w]\nsource = \"builtin:worker\"\n[plugins.w.settings]\n\
         max_tokens = 256\ntemperature = 0.5\nverbose = true\nstages = [\"input\", \"output\"]\n"
    ))
    .unwrap();
    let s = &config.plugin_specs().unwrap()[0].settings;
    assert_eq!(s["max_tokens"], "256");
    assert_eq!(s["temperature"], "0.5");
    assert_eq!(s["verbose"], "true");
    assert_eq!(s["stages"], "input,output");

    let e = only_error(&format!(
        "{UPSTREAM}[plugins.w]\nsource = \"builtin:worker\"\n[plugins.w.settings]\nnested = {{ a = 1 }}\n"
    ));
    assert_eq!(e.key, "plugins.w.settings.nested");
}

#[test]
fn kind_specific_fields_are_checked() {
    let e = only_error(&format!("{UPSTREAM}base_url = \"http://x\"\n"));
    assert_eq!(e.key, "upstreams.a.base_url");
    let e = only_error("[upstreams.o]\nkind = \"openai\"\nmodel = \"m\"\n");
    assert_eq!(e.key, "upstreams.o.base_url");
    assert!(e.message.contains("required"), "{e}");
    let e = only_error(&format!(
        "{OPENAI}[upstreams.openai.simulator]\nlatency_ms = 1\n"
    ));
    assert_eq!(e.key, "upstreams.openai.simulator");
}

#[test]
fn every_problem_is_reported_at_once() {
    let errors = parse(
        "[server]\nrequest_timeout_ms = 0\n\
         [upstreams.a]\nkind = \"simulated\"\nmodel = \" \"\ninput_cost_per_1k = -1.0\n",
    )
    .unwrap_err();
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "server.request_timeout_ms",
            "upstreams.a.model",
            "upstreams.a.input_cost_per_1k"
        ]
    );
}

#[test]
fn no_upstreams_and_syntax_errors_are_refused() {
    let e = only_error("[server]\n");
    assert_eq!(e.key, "upstreams");
    let e = only_error("[server\nlisten = 1\n");
    assert_eq!(e.line, Some(1));
    assert!(!e.message.contains('|'), "toml's excerpt is stripped: {e}");
}

#[test]
fn config_file_paths_resolve_against_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, format!("[store]\npath = \"state\"\n{UPSTREAM}")).unwrap();
    let config = Config::from_file(&path).unwrap();
    assert_eq!(config.store_path(), dir.path().join("state"));
    let e = Config::from_file(&dir.path().join("missing.toml")).unwrap_err();
    assert!(e.to_string().contains("missing.toml: cannot read"), "{e}");
}

#[test]
fn cache_auth_limits_and_hardening_keys_are_checked_with_their_lines() {
    let text = format!(
        "{UPSTREAM}[server]\nmax_header_bytes = 100\nmax_messages = 0\n\
         [cache]\nredis_url = \"redis://x\"\n\
         [auth]\nenabled = true\n\
         [[auth.keys]]\nname = \"a\"\nsecret = \"short\"\nmodels = [\"m\", \"gpt-9\"]\nburst = 5\n\
         [[auth.keys]]\nname = \"a\"\nsecret = \"${{env:AR_TEST_KEY}}xxxxxxxx\"\n\
         [rate_limits.models.nope]\nrequests_per_s = -1.0\n"
    );
    let errors = parse(&text).unwrap_err();
    let found: Vec<(String, Option<usize>)> =
        errors.iter().map(|e| (e.key.clone(), e.line)).collect();
    for (key, line) in [
        ("server.max_header_bytes", 5),
        ("server.max_messages", 6),
        ("cache.redis_url", 8),
        ("auth.keys[0].secret", 13),
        ("auth.keys[0].models[1]", 14),
        ("auth.keys[0].burst", 15),
        ("auth.keys[1].name", 17),
        ("rate_limits.models.nope", 19),
        ("rate_limits.models.nope.requests_per_s", 20),
    ] {
        assert!(
            found.contains(&(key.to_string(), Some(line))),
            "{key}:{line} in {errors:#?}"
        );
    }
    let secret = errors
        .iter()
        .find(|e| e.key == "auth.keys[0].secret")
        .unwrap();
    assert!(secret.message.contains("at least 16"), "{secret}");
    // A literal that merely contains a reference is not one: the env value
    // is not resolved, and the secret is long enough.
    assert!(
        !found.iter().any(|(k, _)| k == "auth.keys[1].secret"),
        "{errors:#?}"
    );

    let ok = parse(&format!(
        "{UPSTREAM}[auth]\nenabled = true\n[[auth.keys]]\nname = \"team.a\"\n\
         secret = \"${{env:AR_TEST_KEY}}\"\n[cache]\nscope = \"per-key\"\npolicy = \"opt-in\"\n"
    ));
    // `sk-live-123` is 11 characters: too short once resolved.
    let errors = ok.unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].key, "auth.keys[0].secret");
}

#[test]
fn resilience_defaults_and_fallback_chains() {
    let c = parse(&format!(
        "{UPSTREAM}[upstreams.b]\nkind = \"simulated\"\nmodel = \"mini\"\n\
         [resilience.fallbacks]\nm = [\"mini\"]\n"
    ))
    .unwrap();
    assert_eq!(c.reloadable.resilience.max_attempts, DEFAULT_MAX_ATTEMPTS);
    assert_eq!(c.reloadable.resilience.retry_budget.settings().ratio, 0.5);
    assert_eq!(
        c.reloadable.resilience.fallbacks["m"],
        vec!["mini".to_string()]
    );
}

#[test]
fn bad_resilience_keys_name_key_and_line() {
    let e = only_error(&format!(
        "{UPSTREAM}[resilience.fallbacks]\nm = [\"nope\"]\n"
    ));
    assert_eq!(e.key, "resilience.fallbacks.m");
    assert_eq!(e.line, Some(5));
    assert!(e.message.contains("`nope` is not a model"), "{e}");
    let e = only_error(&format!("{UPSTREAM}[resilience.fallbacks]\nm = [\"m\"]\n"));
    assert!(e.message.contains("cannot fall back to itself"), "{e}");
    let e = only_error(&format!("{UPSTREAM}[resilience]\nmax_attempts = 0\n"));
    assert_eq!(
        (e.key.as_str(), e.line),
        ("resilience.max_attempts", Some(5))
    );
    let e = only_error(&format!(
        "{UPSTREAM}[resilience.retry_budget]\nratio = -1.0\n"
    ));
    assert_eq!(e.key, "resilience.retry_budget.ratio");
    let e = only_error(&format!(
        "{UPSTREAM}[resilience.hedge]\nenabled = true\ndelay_ms = 0\n"
    ));
    assert_eq!(
        (e.key.as_str(), e.line),
        ("resilience.hedge.delay_ms", Some(6))
    );
    let e = only_error(&format!("{UPSTREAM}[resilience.hedge]\nratio = -0.5\n"));
    assert_eq!(e.key, "resilience.hedge.ratio");
    let e = only_error(&format!(
        "{UPSTREAM}[upstreams.a.breaker]\nslow_call_ms = 0\n"
    ));
    assert_eq!(e.key, "upstreams.a.breaker.slow_call_ms");
    let e = only_error(&format!(
        "{UPSTREAM}[resilience]\nalert_webhook = \"ftp://x\"\n"
    ));
    assert_eq!(e.key, "resilience.alert_webhook");
    let e = only_error(&format!("{UPSTREAM}max_concurrent = 0\n"));
    assert_eq!(
        (e.key.as_str(), e.line),
        ("upstreams.a.max_concurrent", Some(4))
    );
    let e = only_error(&format!("{UPSTREAM}idle_timeout_ms = 0\n"));
    assert_eq!(e.key, "upstreams.a.idle_timeout_ms");
}

#[test]
fn simulator_scripts_are_checked() {
    let e = only_error(&format!(
        "{UPSTREAM}[upstreams.a.simulator]\nscript = [\"ok\", \"500\", \"later\"]\n"
    ));
    assert_eq!(e.key, "upstreams.a.simulator.script");
    assert!(e.message.contains("entry 3 is `later`"), "{e}");
    let c = parse(&format!(
        "{UPSTREAM}[upstreams.a.simulator]\nscript = [\"hang\", \"429\", \"malformed\", \"context\", \"ok\"]\n"
    ))
    .unwrap();
    assert_eq!(
        c.reloadable.upstreams["a"]
            .simulator
            .as_ref()
            .unwrap()
            .script
            .len(),
        5
    );
}

#[test]
fn telemetry_defaults_export_nothing() {
    let config = parse(UPSTREAM).unwrap();
    assert_eq!(config.startup.telemetry.otlp_endpoint, None);
    assert_eq!(config.startup.telemetry.sample_rate, 1.0);
    assert_eq!(config.startup.telemetry.service_name, "agentrouter");
}

#[test]
fn telemetry_endpoint_and_sample_rate_are_checked_with_key_and_line() {
    let e = only_error(&format!(
        "{UPSTREAM}[telemetry]\notlp_endpoint = \"collector:4318\"\n"
    ));
    assert_eq!(e.key, "telemetry.otlp_endpoint");
    assert_eq!(e.line, Some(5));
    assert!(e.message.contains("http://"), "{e}");
    let e = only_error(&format!("{UPSTREAM}[telemetry]\nsample_rate = 1.5\n"));
    assert_eq!(e.key, "telemetry.sample_rate");
    assert!(e.message.contains("between 0 and 1"), "{e}");
    let e = only_error(&format!("{UPSTREAM}[telemetry]\nservice_name = \" \"\n"));
    assert_eq!(e.key, "telemetry.service_name");
    let ok = parse(&format!(
        "{UPSTREAM}[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nsample_rate = 0.1\n"
    ))
    .unwrap();
    assert_eq!(ok.startup.telemetry.sample_rate, 0.1);
}

#[test]
fn admin_token_is_a_secret_that_must_resolve_and_be_long_enough() {
    let config = parse(&format!(
        "[admin]\ntoken = \"0123456789abcdef\"\n{UPSTREAM}"
    ))
    .unwrap();
    let token = config.reloadable.admin.token.as_ref().unwrap();
    assert_eq!(token.expose(), "0123456789abcdef");
    assert!(!format!("{config:?}").contains("0123456789abcdef"));
    assert!(parse(UPSTREAM).unwrap().reloadable.admin.token.is_none());

    let short = only_error(&format!("[admin]\ntoken = \"short\"\n{UPSTREAM}"));
    assert_eq!((short.key.as_str(), short.line), ("admin.token", Some(2)));
    assert!(short.message.contains("at least 16"), "{short}");

    let missing = only_error(&format!("[admin]\ntoken = \"${{env:NOPE}}\"\n{UPSTREAM}"));
    assert_eq!(missing.key, "admin.token");
    assert!(missing.message.contains("`NOPE` is not set"), "{missing}");
}

#[test]
fn server_and_resilience_keys_land_in_the_part_that_says_when_they_apply() {
    let c = parse(&format!(
        "[server]\nlisten = \"127.0.0.1:9000\"\nrequest_timeout_ms = 5000\n\
         max_body_bytes = 2048\nbody_read_timeout_ms = 7\n\
         [resilience]\nmax_concurrent_requests = 3\nmax_attempts = 2\n{UPSTREAM}"
    ))
    .unwrap();
    assert_eq!(c.startup.server.listen.to_string(), "127.0.0.1:9000");
    assert_eq!(c.startup.server.max_body_bytes, 2048);
    assert_eq!(c.startup.resilience.max_concurrent_requests, Some(3));
    assert_eq!(c.reloadable.server.request_timeout_ms, 5000);
    assert_eq!(c.reloadable.server.body_read_timeout_ms, 7);
    assert_eq!(c.reloadable.resilience.max_attempts, 2);
    // Unset keys take their defaults, in both parts.
    assert_eq!(c.startup.server.max_headers, DEFAULT_MAX_HEADERS);
    assert_eq!(c.reloadable.server.max_agent_depth, DEFAULT_MAX_AGENT_DEPTH);
    assert_eq!(c.reloadable.resilience.max_delay_ms, DEFAULT_MAX_DELAY_MS);
    // The flat tables still refuse unknown keys, at their line.
    let e = only_error(&format!("{UPSTREAM}[resilience]\nmax_retries = 3\n"));
    assert_eq!(e.line, Some(5));
    assert!(e.message.contains("unknown field `max_retries`"), "{e}");
}

#[test]
fn defaults_of_other_modules_are_theirs() {
    let c = parse(UPSTREAM).unwrap();
    let engine = crate::runtime::EngineSettings::default();
    assert_eq!(c.startup.runtime.pool_instances, engine.pool_instances);
    assert_eq!(c.startup.runtime.epoch_tick_ms, engine.epoch_tick_ms);
    assert_eq!(
        c.reloadable.server.max_agent_depth,
        crate::domain::DEFAULT_MAX_DEPTH
    );
    let up = &c.reloadable.upstreams["a"];
    assert_eq!(
        std::time::Duration::from_millis(up.timeout_ms),
        crate::resilience::DEFAULT_UPSTREAM_TIMEOUT
    );
    assert_eq!(
        up.breaker.settings(),
        crate::resilience::BreakerSettings::default()
    );
}

#[test]
fn needs_restart_names_each_changed_startup_key_and_no_reloadable_one() {
    let keys = "[[auth.keys]]\nname = \"a\"\nsecret = \"0123456789abcdef-one\"\n\
                [[auth.keys]]\nname = \"b\"\nsecret = \"0123456789abcdef-two\"\n";
    let running = parse(&format!("{UPSTREAM}{keys}")).unwrap();
    let same = parse(&format!("{UPSTREAM}{keys}")).unwrap();
    assert_eq!(
        running.startup.needs_restart(&same.startup),
        Vec::<String>::new()
    );

    let file = parse(&format!(
        "[server]\nlisten = \"127.0.0.1:9999\"\nrequest_timeout_ms = 5\n\
         [cache]\nttl_s = 5\n\
         [resilience]\nmax_concurrent_requests = 3\nmax_attempts = 2\n\
         [rate_limits.models.m]\nrequests_per_s = 1.0\n\
         {UPSTREAM}weight = 3\n{}",
        keys.replace("abcdef-two", "abcdef-2nd")
    ))
    .unwrap();
    assert_eq!(
        running.startup.needs_restart(&file.startup),
        [
            "auth.keys[1].secret",
            "cache.ttl_s",
            "rate_limits.models.m",
            "resilience.max_concurrent_requests",
            "server.listen",
        ]
    );
    // A key added to a list is named by the list.
    let more = parse(&format!(
        "{UPSTREAM}{keys}[[auth.keys]]\nname = \"c\"\nsecret = \"0123456789abcdef-3rd\"\n"
    ))
    .unwrap();
    assert_eq!(running.startup.needs_restart(&more.startup), ["auth.keys"]);
}

#[test]
fn startup_settings_serialise_secrets_as_fingerprints_only() {
    let c = parse(&format!(
        "{UPSTREAM}[[auth.keys]]\nname = \"a\"\nsecret = \"0123456789abcdef-one\"\n"
    ))
    .unwrap();
    let text = serde_json::to_string(&c.startup).unwrap();
    assert!(!text.contains("0123456789abcdef-one"), "{text}");
    assert!(text.contains("secret:"), "{text}");
}

#[test]
fn what_an_upstream_serves_is_checked_with_its_line() {
    let config = parse(UPSTREAM).unwrap();
    assert_eq!(
        config.reloadable.upstreams["a"].serves,
        [crate::domain::Endpoint::Chat],
        "chat by default"
    );
    let e = only_error(&format!("{UPSTREAM}serves = []\n"));
    assert_eq!((e.key.as_str(), e.line), ("upstreams.a.serves", Some(4)));
    let e = only_error(&format!("{UPSTREAM}serves = [\"chat\", \"chat\"]\n"));
    assert!(e.message.contains("`chat` twice"), "{e}");
    let e = only_error(&format!("{UPSTREAM}serves = [\"images\"]\n"));
    assert!(e.message.contains("images"), "{e}");
    assert_eq!(e.line, Some(4));
    let e = only_error(&format!(
        "{UPSTREAM}[upstreams.a.simulator]\nembedding_dimensions = 0\n"
    ));
    assert_eq!(e.key, "upstreams.a.simulator.embedding_dimensions");
}

#[test]
fn stored_responses_keep_a_positive_time() {
    let config = parse(UPSTREAM).unwrap();
    assert_eq!(
        config.startup.responses.ttl_s,
        crate::gateway::DEFAULT_RESPONSES_TTL_S
    );
    let e = only_error(&format!("{UPSTREAM}[responses]\nttl_s = 0\n"));
    assert_eq!((e.key.as_str(), e.line), ("responses.ttl_s", Some(5)));
    let e = only_error(&format!("{UPSTREAM}[responses]\nttl = 5\n"));
    assert!(e.message.contains("ttl"), "{e}");
}

#[test]
fn batch_concurrency_is_bounded() {
    let config = parse(UPSTREAM).unwrap();
    assert_eq!(
        config.startup.batches.max_concurrency,
        crate::server::batch::DEFAULT_BATCH_CONCURRENCY
    );
    let config = parse(&format!("{UPSTREAM}[batches]\nmax_concurrency = 16\n")).unwrap();
    assert_eq!(config.startup.batches.max_concurrency, 16);
    for bad in ["0", "1025"] {
        let e = only_error(&format!("{UPSTREAM}[batches]\nmax_concurrency = {bad}\n"));
        assert_eq!(
            (e.key.as_str(), e.line),
            ("batches.max_concurrency", Some(5))
        );
    }
    let e = only_error(&format!("{UPSTREAM}[batches]\nconcurrency = 5\n"));
    assert!(e.message.contains("concurrency"), "{e}");
}

#[test]
fn batch_file_size_is_bounded() {
    let config = parse(UPSTREAM).unwrap();
    assert_eq!(
        config.startup.batches.max_file_bytes,
        crate::server::batch::DEFAULT_MAX_FILE_BYTES
    );
    let config = parse(&format!("{UPSTREAM}[batches]\nmax_file_bytes = 4096\n")).unwrap();
    assert_eq!(config.startup.batches.max_file_bytes, 4096);
    for bad in ["0", "1073741825"] {
        let e = only_error(&format!("{UPSTREAM}[batches]\nmax_file_bytes = {bad}\n"));
        assert_eq!(
            (e.key.as_str(), e.line),
            ("batches.max_file_bytes", Some(5)),
            "{e}"
        );
        assert!(e.message.contains(bad), "{e}");
    }
}

#[test]
fn batch_completion_window_is_at_most_a_day() {
    let config = parse(UPSTREAM).unwrap();
    assert_eq!(config.startup.batches.completion_window_s, 86_400);
    let config = parse(&format!("{UPSTREAM}[batches]\ncompletion_window_s = 1\n")).unwrap();
    assert_eq!(config.startup.batches.completion_window_s, 1);
    for bad in ["0", "86401"] {
        let e = only_error(&format!(
            "{UPSTREAM}[batches]\ncompletion_window_s = {bad}\n"
        ));
        assert_eq!(
            (e.key.as_str(), e.line),
            ("batches.completion_window_s", Some(5)),
            "{e}"
        );
    }
}
