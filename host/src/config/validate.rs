//! Semantic checks and normalisation after serde has accepted the shape.
//!
//! Everything is checked, not just up to the first problem, so an operator
//! fixes a file in one round. Normalisation happens here too: secret
//! references are resolved, file sources made absolute, builtin worlds and
//! simulator defaults filled in, so the rest of the host never re-derives them.

use super::Config;
use super::error::Errors;
use super::schema::{LimitConfig, MIN_MAX_HEADER_BYTES, SimSettings, SourceRef, UpstreamKind};
use super::secret::{self, EnvLookup, SettingValue};
use crate::auth::valid_key_name;
use crate::plugins;
use crate::runtime::{Isolation, PluginError, World};

/// Checks and normalises `config` in place, recording every problem.
pub(crate) fn validate(config: &mut Config, errors: &mut Errors<'_>, env: EnvLookup<'_>) {
    server(config, errors);
    admin(config, errors, env);
    upstreams(config, errors, env);
    plugin_slots(config, errors, env);
    super::validate_outbound::outbound(config, errors, env);
    pipeline(config, errors);
    cache(config, errors);
    auth(config, errors, env);
    rate_limits(config, errors);
    resilience(config, errors, env);
    telemetry(config, errors);
    responses(config, errors);
    batches(config, errors);
    super::validate_shared::cluster(config, errors, env);
    super::validate_shared::moved_cache_url(config, errors);
    super::validate_shared::budgets(config, errors);
    budgets(config, errors);
}

fn budgets(config: &Config, errors: &mut Errors<'_>) {
    let b = &config.reloadable.budgets;
    let r = &b.request;
    let pool = config.startup.runtime.pool_instances;
    for (field, value) in [
        ("max_llm_calls", Some(r.max_llm_calls)),
        ("max_tokens", Some(r.max_tokens)),
        ("max_delegations", Some(r.max_delegations)),
        ("max_wall_ms", r.max_wall_ms),
        (
            "max_plugin_instances",
            r.max_plugin_instances.map(u64::from),
        ),
    ] {
        if value == Some(0) {
            errors.push(format!("budgets.request.{field}"), "must be positive");
        }
    }
    if let Some(share) = r.max_plugin_instances
        && share > pool
    {
        errors.push(
            "budgets.request.max_plugin_instances",
            format!("is {share}, more than the whole pool (runtime.pool_instances = {pool})"),
        );
    }
    let mut tables = vec![("budgets.agent_call".to_string(), b.agent_call.clone())];
    for (slot, p) in &config.reloadable.plugins {
        if p.budget.is_empty() {
            continue;
        }
        if p.world.is_some_and(|w| w != World::Agent) {
            errors.push(
                format!("plugins.{slot}.budget"),
                "is only for agent slots (a budget bounds what an agent makes the host do)",
            );
            continue;
        }
        tables.push((
            format!("plugins.{slot}.budget"),
            p.budget.merge(&b.agent_call),
        ));
    }
    for (table, a) in tables {
        for (field, value) in [
            ("max_llm_calls", Some(a.max_llm_calls)),
            ("max_tokens", Some(a.max_tokens)),
            ("max_delegations", Some(a.max_delegations)),
            ("max_wall_ms", a.max_wall_ms),
            ("max_call_all_tasks", Some(u64::from(a.max_call_all_tasks))),
            (
                "max_call_all_concurrency",
                Some(u64::from(a.max_call_all_concurrency)),
            ),
        ] {
            if value == Some(0) {
                errors.push(format!("{table}.{field}"), "must be positive");
            }
        }
    }
}

fn telemetry(config: &Config, errors: &mut Errors<'_>) {
    let t = &config.startup.telemetry;
    if let Some(endpoint) = &t.otlp_endpoint {
        let rest = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"));
        match rest {
            None => errors.push(
                "telemetry.otlp_endpoint",
                format!(
                    "must be an OTLP/HTTP URL starting with http:// or https://, got `{endpoint}` \
                     (e.g. \"http://otel-collector:4318\")"
                ),
            ),
            Some(host) if host.is_empty() || host.starts_with('/') => errors.push(
                "telemetry.otlp_endpoint",
                format!("`{endpoint}` names no host"),
            ),
            Some(rest) if rest.contains(char::is_whitespace) => errors.push(
                "telemetry.otlp_endpoint",
                format!("`{endpoint}` contains whitespace"),
            ),
            Some(_) => {}
        }
    }
    if !(t.sample_rate.is_finite() && (0.0..=1.0).contains(&t.sample_rate)) {
        errors.push(
            "telemetry.sample_rate",
            format!(
                "must be a fraction between 0 and 1 (0.1 keeps one trace in ten), got {}",
                t.sample_rate
            ),
        );
    }
    if t.service_name.trim().is_empty() {
        errors.push("telemetry.service_name", "must not be empty");
    }
}

fn server(config: &Config, errors: &mut Errors<'_>) {
    let (s, r) = (&config.startup.server, &config.reloadable.server);
    if s.max_body_bytes == 0 {
        errors.push("server.max_body_bytes", "must be positive");
    }
    if r.request_timeout_ms == 0 {
        errors.push("server.request_timeout_ms", "must be positive");
    }
    if r.max_agent_depth == 0 {
        errors.push(
            "server.max_agent_depth",
            "must be at least 1 (the agent a request addresses counts)",
        );
    }
    for (field, value) in [
        ("max_messages", u64::from(r.max_messages)),
        ("max_message_chars", r.max_message_chars),
        ("max_headers", u64::from(s.max_headers)),
        ("header_read_timeout_ms", s.header_read_timeout_ms),
        ("body_read_timeout_ms", r.body_read_timeout_ms),
    ] {
        if value == 0 {
            errors.push(format!("server.{field}"), "must be positive");
        }
    }
    if s.max_header_bytes < MIN_MAX_HEADER_BYTES {
        errors.push(
            "server.max_header_bytes",
            format!(
                "must be at least {MIN_MAX_HEADER_BYTES} (HTTP/1 needs room for one request head), got {}",
                s.max_header_bytes
            ),
        );
    }
    let r = &config.startup.runtime;
    if r.pool_instances == 0 {
        errors.push("runtime.pool_instances", "must be positive");
    }
    if r.epoch_tick_ms == 0 {
        errors.push("runtime.epoch_tick_ms", "must be positive");
    }
    if r.spare_instances > r.pool_instances {
        errors.push(
            "runtime.spare_instances",
            format!(
                "must be at most runtime.pool_instances ({}), got {}",
                r.pool_instances, r.spare_instances
            ),
        );
    }
    if config.startup.store.kv_sweep_interval_s == 0 {
        errors.push("store.kv_sweep_interval_s", "must be positive");
    }
}

fn admin(config: &mut Config, errors: &mut Errors<'_>, env: EnvLookup<'_>) {
    let base_dir = config.base_dir.clone();
    if let Some(token) = &mut config.reloadable.admin.token {
        match secret::resolve(token.expose(), &base_dir, env) {
            Ok(Some(resolved)) => *token = resolved,
            Ok(None) => {}
            Err(reason) => return errors.push("admin.token", reason.to_string()),
        }
        if token.expose().trim().len() < 16 {
            errors.push(
                "admin.token",
                "must be at least 16 characters (it guards plugin uploads)",
            );
        }
    }
}

fn upstreams(config: &mut Config, errors: &mut Errors<'_>, env: EnvLookup<'_>) {
    if config.reloadable.upstreams.is_empty() {
        errors.push(
            "upstreams",
            "at least one upstream is required: add an [upstreams.<name>] table",
        );
    }
    let base_dir = config.base_dir.clone();
    for (name, u) in &mut config.reloadable.upstreams {
        let key = |field: &str| format!("upstreams.{name}.{field}");
        if u.model.trim().is_empty() {
            errors.push(key("model"), "must name the model this upstream serves");
        }
        for (field, cost) in [
            ("input_cost_per_1k", u.input_cost_per_1k),
            (
                "cached_input_cost_per_1k",
                u.cached_input_cost_per_1k.unwrap_or_default(),
            ),
            ("output_cost_per_1k", u.output_cost_per_1k),
        ] {
            if !(cost.is_finite() && cost >= 0.0) {
                errors.push(key(field), format!("must be a price >= 0, got {cost}"));
            }
        }
        if u.timeout_ms == 0 {
            errors.push(key("timeout_ms"), "must be positive");
        }
        if u.serves.is_empty() {
            errors.push(
                key("serves"),
                "must name at least one endpoint: chat, embeddings or responses",
            );
        }
        for (i, endpoint) in u.serves.iter().enumerate() {
            if u.serves[..i].contains(endpoint) {
                errors.push(
                    key("serves"),
                    format!("names `{}` twice", endpoint.as_str()),
                );
            }
        }
        if u.weight == 0 {
            errors.push(
                key("weight"),
                "must be at least 1 (remove the upstream to take it out of service)",
            );
        }
        for (field, value) in [
            (
                "breaker.failure_threshold",
                u64::from(u.breaker.failure_threshold),
            ),
            ("breaker.recovery_timeout_s", u.breaker.recovery_timeout_s),
            (
                "breaker.half_open_probes",
                u64::from(u.breaker.half_open_probes),
            ),
            ("breaker.slow_call_ms", u.breaker.slow_call_ms.unwrap_or(1)),
        ] {
            if value == 0 {
                errors.push(key(field), "must be positive");
            }
        }
        match u.kind {
            UpstreamKind::Simulated => {
                for (field, present) in [
                    ("base_url", u.base_url.is_some()),
                    ("api_key", u.api_key.is_some()),
                ] {
                    if present {
                        errors.push(key(field), "is not allowed for kind = \"simulated\"");
                    }
                }
                let sim = u.simulator.get_or_insert_with(SimSettings::default);
                simulator(sim, &key("simulator"), errors);
            }
            UpstreamKind::Openai => {
                match u.base_url.as_deref().map(str::trim) {
                    None => errors.push(key("base_url"), "is required for kind = \"openai\""),
                    Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                        errors.push(key("base_url"), "must start with http:// or https://")
                    }
                    Some(url) => {
                        if let Err(e) = reqwest::Url::parse(url) {
                            errors.push(key("base_url"), format!("is not a valid URL: {e}"));
                        }
                    }
                }
                if u.simulator.is_some() {
                    errors.push(key("simulator"), "is only allowed for kind = \"simulated\"");
                }
            }
        }
        if u.max_concurrent == Some(0) {
            errors.push(
                key("max_concurrent"),
                "must be at least 1 (remove the upstream to take it out of service)",
            );
        }
        for (field, value) in [
            ("first_token_timeout_ms", u.first_token_timeout_ms),
            ("idle_timeout_ms", u.idle_timeout_ms),
        ] {
            if value == Some(0) {
                errors.push(key(field), "must be positive");
            }
        }
        if let Some(api_key) = &mut u.api_key {
            match secret::resolve(api_key.expose(), &base_dir, env) {
                Ok(Some(resolved)) => *api_key = resolved,
                Ok(None) => {}
                Err(reason) => errors.push(key("api_key"), reason.to_string()),
            }
        }
    }
}

fn responses(config: &Config, errors: &mut Errors<'_>) {
    if config.startup.responses.ttl_s == 0 {
        errors.push(
            "responses.ttl_s",
            "must be positive (send `store: false` to keep a response from being stored)",
        );
    }
}

fn batches(config: &Config, errors: &mut Errors<'_>) {
    let n = config.startup.batches.max_concurrency;
    if !(1..=1024).contains(&n) {
        errors.push(
            "batches.max_concurrency",
            format!("must be between 1 and 1024, not {n}"),
        );
    }
    let bytes = config.startup.batches.max_file_bytes;
    let most = crate::server::batch::MAX_FILE_BYTES_LIMIT;
    if !(1..=most).contains(&bytes) {
        errors.push(
            "batches.max_file_bytes",
            format!("must be between 1 and {most} (1 GiB), not {bytes}"),
        );
    }
    let window = config.startup.batches.completion_window_s;
    let day = crate::server::batch::DEFAULT_COMPLETION_WINDOW_S;
    if !(1..=day).contains(&window) {
        errors.push(
            "batches.completion_window_s",
            format!("must be between 1 and {day} (the `24h` clients ask for), not {window}"),
        );
    }
}

fn simulator(sim: &SimSettings, prefix: &str, errors: &mut Errors<'_>) {
    for (field, rate) in [
        ("fail_rate", sim.fail_rate),
        ("rate_limit_rate", sim.rate_limit_rate),
        ("malformed_rate", sim.malformed_rate),
        ("spike_rate", sim.spike_rate),
        ("hang_rate", sim.hang_rate),
    ] {
        if !(0.0..=1.0).contains(&rate) {
            errors.push(
                format!("{prefix}.{field}"),
                format!("must be between 0 and 1, got {rate}"),
            );
        }
    }
    for (i, step) in sim.script.iter().enumerate() {
        let known = matches!(step.as_str(), "ok" | "hang" | "malformed" | "context")
            || step
                .parse::<u16>()
                .is_ok_and(|code| (400..=599).contains(&code));
        if !known {
            errors.push(
                format!("{prefix}.script"),
                format!(
                    "entry {} is `{step}`: expected ok, hang, malformed, context or an HTTP error status (400-599)",
                    i + 1
                ),
            );
        }
    }
    if sim.context_chars == 0 {
        errors.push(format!("{prefix}.context_chars"), "must be positive");
    }
    if sim.embedding_dimensions == 0 {
        errors.push(format!("{prefix}.embedding_dimensions"), "must be positive");
    }
}

fn plugin_slots(config: &mut Config, errors: &mut Errors<'_>, env: EnvLookup<'_>) {
    let base_dir = config.base_dir.clone();
    for (slot, p) in &mut config.reloadable.plugins {
        let key = |field: &str| format!("plugins.{slot}.{field}");
        match &mut p.source {
            SourceRef::Builtin(name) => match plugins::get(name) {
                None => {
                    let available: Vec<&str> = plugins::all().map(|b| b.name).collect();
                    errors.push(
                        key("source"),
                        format!(
                            "unknown builtin `{name}`; available: {}",
                            available.join(", ")
                        ),
                    );
                }
                Some(b) => match p.world {
                    Some(w) if w != b.world => errors.push(
                        key("world"),
                        format!("builtin `{name}` implements world `{}`, not `{w}`", b.world),
                    ),
                    _ => p.world = Some(b.world),
                },
            },
            SourceRef::File(path) => {
                if path.as_os_str().is_empty() {
                    errors.push(
                        key("source"),
                        "is empty: use builtin:<name> or a .wasm path",
                    );
                } else {
                    *path = base_dir.join(&*path);
                    if !path.is_file() {
                        errors.push(
                            key("source"),
                            format!("plugin file {} does not exist", path.display()),
                        );
                    }
                }
                if p.world.is_none() {
                    errors.push(
                        key("world"),
                        "is required for a file source (agent, validator, router or recovery)",
                    );
                }
            }
        }
        if let Some(digest) = &p.sha256 {
            let hex = digest.trim().trim_start_matches("sha256:");
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                errors.push(
                    key("sha256"),
                    "must be 64 hex digits, optionally prefixed `sha256:`",
                );
            }
        }
        if p.isolation == Isolation::Reuse && p.world == Some(World::Agent) {
            errors.push(
                key("isolation"),
                "`reuse` is only for validator, router and recovery slots (an agent's instance carries its request)",
            );
        }
        // The runtime's own check, so config and load agree on what is valid.
        if let Some(world) = p.world
            && let Err(PluginError::InvalidConfig {
                key: field, reason, ..
            }) = p.limits.merge(world).validate(slot)
        {
            errors.push(key(field), reason);
        }
        for (name, value) in &mut p.settings {
            let SettingValue::Plain(text) = value else {
                continue;
            };
            match secret::resolve(text, &base_dir, env) {
                Ok(Some(resolved)) => *value = SettingValue::Secret(resolved),
                Ok(None) => {}
                Err(reason) => errors.push(key(&format!("settings.{name}")), reason.to_string()),
            }
        }
    }
}

fn pipeline(config: &Config, errors: &mut Errors<'_>) {
    let p = &config.reloadable.pipeline;
    let lists = [
        ("input_validators", &p.input_validators),
        ("output_validators", &p.output_validators),
    ];
    let mut refs: Vec<(String, &str, World)> = Vec::new();
    for (field, list) in lists {
        for (i, slot) in list.iter().enumerate() {
            refs.push((format!("pipeline.{field}[{i}]"), slot, World::Validator));
        }
    }
    if let Some(slot) = &p.router {
        refs.push(("pipeline.router".into(), slot, World::Router));
    }
    if let Some(slot) = &p.recovery {
        refs.push(("pipeline.recovery".into(), slot, World::Recovery));
    }
    for (key, slot, wanted) in refs {
        match config.reloadable.plugins.get(slot) {
            None => errors.push(
                key,
                format!("no plugin slot `{slot}`: define it as [plugins.{slot}]"),
            ),
            // An unknown world was already reported at the slot itself.
            Some(plugin) => match plugin.world {
                Some(world) if world != wanted => errors.push(
                    key,
                    format!(
                        "slot `{slot}` is {} {world}, not {} {wanted}",
                        article(world),
                        article(wanted)
                    ),
                ),
                _ => {}
            },
        }
    }
}

fn article(world: World) -> &'static str {
    if world == World::Agent { "an" } else { "a" }
}

fn cache(config: &Config, errors: &mut Errors<'_>) {
    let c = &config.startup.cache;
    if c.ttl_s == 0 {
        errors.push(
            "cache.ttl_s",
            "must be positive (set `enabled = false` to turn the cache off)",
        );
    }
    if c.l1_max_mb == 0 {
        errors.push("cache.l1_max_mb", "must be positive");
    }
}

/// Shortest secret accepted for a key declared in the config.
const MIN_SECRET_CHARS: usize = 16;

fn auth(config: &mut Config, errors: &mut Errors<'_>, env: EnvLookup<'_>) {
    let base_dir = config.base_dir.clone();
    let models: Vec<String> = config
        .reloadable
        .upstreams
        .values()
        .map(|u| u.model.clone())
        .collect();
    let agents: Vec<String> = config.agents().map(str::to_string).collect();
    let mut seen = std::collections::HashSet::new();
    for (i, k) in config.startup.auth.keys.iter_mut().enumerate() {
        let key = |field: &str| format!("auth.keys[{i}].{field}");
        if !valid_key_name(&k.name) {
            errors.push(
                key("name"),
                format!(
                    "`{}` is not a valid key name: use 1-64 letters, digits, `-`, `_` or `.`",
                    k.name
                ),
            );
        } else if !seen.insert(k.name.clone()) {
            errors.push(key("name"), format!("key `{}` is declared twice", k.name));
        }
        let resolved = match secret::resolve(k.secret.expose(), &base_dir, env) {
            Ok(Some(resolved)) => {
                k.secret = resolved;
                true
            }
            Ok(None) => true,
            Err(reason) => {
                errors.push(key("secret"), reason.to_string());
                false
            }
        };
        if resolved && k.secret.expose().chars().count() < MIN_SECRET_CHARS {
            errors.push(
                key("secret"),
                format!(
                    "key `{}`: a secret must have at least {MIN_SECRET_CHARS} characters (generate one with `agentrouter keys create`)",
                    k.name
                ),
            );
        }
        for (field, list, known, what) in [
            ("models", &k.models, &models, "model"),
            ("agents", &k.agents, &agents, "agent"),
        ] {
            for (j, name) in list.iter().flatten().enumerate() {
                if !known.contains(name) {
                    errors.push(
                        format!("auth.keys[{i}].{field}[{j}]"),
                        format!("key `{}`: no {what} `{name}` is configured", k.name),
                    );
                }
            }
        }
        limit(
            &LimitConfig {
                requests_per_s: k.requests_per_s,
                burst: k.burst,
                tokens_per_min: k.tokens_per_min,
            },
            &format!("auth.keys[{i}]"),
            errors,
        );
        if let Some(budget) = k.daily_budget_usd
            && !(budget.is_finite() && budget >= 0.0)
        {
            errors.push(
                key("daily_budget_usd"),
                format!("must be an amount >= 0, got {budget}"),
            );
        }
    }
    if config.startup.auth.rotation_grace_s > 30 * 86_400 {
        errors.push("auth.rotation_grace_s", "must be at most 30 days (2592000)");
    }
}

fn limit(l: &LimitConfig, prefix: &str, errors: &mut Errors<'_>) {
    if let Some(rate) = l.requests_per_s
        && !(rate.is_finite() && rate > 0.0)
    {
        errors.push(
            format!("{prefix}.requests_per_s"),
            format!("must be a rate > 0, got {rate}"),
        );
    }
    if l.burst == Some(0) {
        errors.push(format!("{prefix}.burst"), "must be at least 1");
    }
    if l.burst.is_some() && l.requests_per_s.is_none() {
        errors.push(
            format!("{prefix}.burst"),
            "needs `requests_per_s` next to it",
        );
    }
    if l.tokens_per_min == Some(0) {
        errors.push(format!("{prefix}.tokens_per_min"), "must be positive");
    }
}

fn rate_limits(config: &Config, errors: &mut Errors<'_>) {
    let r = &config.startup.rate_limits;
    limit(
        &LimitConfig {
            requests_per_s: r.requests_per_s,
            burst: r.burst,
            tokens_per_min: r.tokens_per_min,
        },
        "rate_limits",
        errors,
    );
    for (model, l) in &r.models {
        let prefix = format!("rate_limits.models.{model}");
        if !config
            .reloadable
            .upstreams
            .values()
            .any(|u| &u.model == model)
        {
            errors.push(
                prefix.clone(),
                format!("no upstream serves model `{model}`"),
            );
        }
        limit(l, &prefix, errors);
    }
}

fn resilience(config: &mut Config, errors: &mut Errors<'_>, env: EnvLookup<'_>) {
    let models: std::collections::BTreeSet<String> = config
        .reloadable
        .upstreams
        .values()
        .map(|u| u.model.clone())
        .collect();
    let r = &mut config.reloadable.resilience;
    if r.max_attempts == 0 {
        errors.push(
            "resilience.max_attempts",
            "must be at least 1 (the first attempt counts)",
        );
    }
    if config.startup.resilience.max_concurrent_requests == Some(0) {
        errors.push("resilience.max_concurrent_requests", "must be at least 1");
    }
    let b = &r.retry_budget;
    if !(b.ratio.is_finite() && b.ratio >= 0.0) {
        errors.push(
            "resilience.retry_budget.ratio",
            format!("must be a number >= 0, got {}", b.ratio),
        );
    }
    if !(b.min_per_s.is_finite() && b.min_per_s >= 0.0) {
        errors.push(
            "resilience.retry_budget.min_per_s",
            format!("must be a number >= 0, got {}", b.min_per_s),
        );
    }
    if b.window_s == 0 {
        errors.push("resilience.retry_budget.window_s", "must be positive");
    }
    let h = &r.hedge;
    for (field, value) in [("ratio", h.ratio), ("min_per_s", h.min_per_s)] {
        if !(value.is_finite() && value >= 0.0) {
            errors.push(
                format!("resilience.hedge.{field}"),
                format!("must be a number >= 0, got {value}"),
            );
        }
    }
    if h.window_s == 0 {
        errors.push("resilience.hedge.window_s", "must be positive");
    }
    if h.delay_ms == Some(0) {
        errors.push(
            "resilience.hedge.delay_ms",
            "must be positive (an immediate hedge doubles every call; set enabled = false to turn hedging off)",
        );
    }
    for (model, chain) in &r.fallbacks {
        let key = format!("resilience.fallbacks.{model}");
        if !models.contains(model) {
            errors.push(key.clone(), format!("no upstream serves model `{model}`"));
        }
        for (i, next) in chain.iter().enumerate() {
            if next == model {
                errors.push(key.clone(), format!("`{model}` cannot fall back to itself"));
            } else if !models.contains(next) {
                errors.push(
                    key.clone(),
                    format!("fallback `{next}` is not a model any upstream serves"),
                );
            } else if chain[..i].contains(next) {
                errors.push(key.clone(), format!("fallback `{next}` is listed twice"));
            }
        }
    }
    if let Some(hook) = &mut r.alert_webhook {
        match secret::resolve(hook.expose(), &config.base_dir, env) {
            Ok(Some(resolved)) => *hook = resolved,
            Ok(None) => {}
            Err(reason) => errors.push("resilience.alert_webhook", reason.to_string()),
        }
        let url = hook.expose().trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            errors.push(
                "resilience.alert_webhook",
                "must be an http:// or https:// URL",
            );
        }
    }
}
