//! Bad input never panics: property-based fuzzing of the parsers that read
//! what clients and operators write — the chat request (OpenAI wire format
//! → domain) and the config file. (The upstream SSE parser and the WIT ↔
//! domain conversions, which are private, are fuzzed next to their code:
//! `upstream/sse.rs`, `runtime/convert.rs`.)
//!
//! Inputs are drawn from the formats' own vocabulary (field and table
//! names, the values that have meaning) mixed with arbitrary bytes, so
//! cases reach deep into the parsers instead of failing at the first byte.
//! CI runs the default 256 cases per property; a longer run:
//!
//! ```sh
//! PROPTEST_CASES=100000 cargo test --all-features --test fuzz --release
//! ```
//!
//! A failure prints the minimal input; proptest saves its seed under
//! `tests/fuzz.proptest-regressions`, which is committed so every crash found
//! stays a regression case, and the case also goes into `regressions()`.

use agentrouter::config::Config;
use agentrouter::openai::ChatRequest;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Object keys a chat request uses, and a few it does not.
const CHAT_KEYS: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "name",
    "tool_calls",
    "tool_call_id",
    "id",
    "type",
    "function",
    "arguments",
    "text",
    "tools",
    "description",
    "parameters",
    "temperature",
    "max_tokens",
    "metadata",
    "stream",
    "user",
    "tool_choice",
    "top_p",
    "n",
];

/// Strings with meaning in a chat request.
const CHAT_WORDS: &[&str] = &[
    "user",
    "system",
    "developer",
    "assistant",
    "tool",
    "function",
    "robot",
    "text",
    "image_url",
    "agent:manager",
    "",
];

fn json(
    keys: &'static [&'static str],
    words: &'static [&'static str],
) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(words).prop_map(|w| Value::String(w.to_string())),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 96, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        prop::sample::select(keys).prop_map(str::to_string),
                        any::<String>()
                    ],
                    inner
                ),
                0..8
            )
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Parses a body as the server does, then converts it as the gateway does.
fn chat_request(bytes: &[u8]) {
    if let Ok(wire) = serde_json::from_slice::<ChatRequest>(bytes) {
        let _ = wire.to_domain();
        for (i, m) in wire.messages.iter().enumerate() {
            let _ = m.to_domain(i);
        }
    }
}

/// TOML tables and keys the config knows, and a few it does not.
const TABLES: &[&str] = &[
    "server",
    "store",
    "runtime",
    "admin",
    "upstreams.a",
    "upstreams.a.simulator",
    "upstreams.a.breaker",
    "plugins.p",
    "plugins.p.limits",
    "plugins.p.budget",
    "plugins.p.settings",
    "plugins.p.capabilities",
    "pipeline",
    "budgets.request",
    "budgets.agent_call",
    "resilience",
    "resilience.retry_budget",
    "resilience.fallbacks",
    "cache",
    "auth",
    "rate_limits",
    "rate_limits.models.m",
    "telemetry",
    "nonsense",
];

const CONFIG_KEYS: &[&str] = &[
    "kind",
    "model",
    "base_url",
    "api_key",
    "source",
    "world",
    "listen",
    "path",
    "pool_instances",
    "timeout_ms",
    "memory_mb",
    "fuel",
    "max_messages",
    "max_message_chars",
    "max_llm_calls",
    "max_tokens",
    "max_plugin_instances",
    "max_call_all_tasks",
    "max_call_all_concurrency",
    "kv_max_keys",
    "kv_max_total_bytes",
    "input_validators",
    "recovery",
    "router",
    "max_attempts",
    "fail_rate",
    "script",
    "enabled",
    "ttl_s",
    "requests_per_s",
    "burst",
    "sample_rate",
    "otlp_endpoint",
    "m",
    "nonsense",
];

const CONFIG_VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "18446744073709551615",
    "1e400",
    "nan",
    "true",
    "\"simulated\"",
    "\"openai\"",
    "\"m\"",
    "\"builtin:input-guard\"",
    "\"builtin:nope\"",
    "\"validator\"",
    "\"agent\"",
    "\"${env:NOPE}\"",
    "\"${file:missing}\"",
    "\"http://127.0.0.1:1\"",
    "\"127.0.0.1:0\"",
    "[\"p\"]",
    "[\"500\", \"ok\", \"boom\"]",
    "{ a = 1 }",
    "\"\"",
];

fn config_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        prop::sample::select(TABLES).prop_map(|t| format!("[{t}]")),
        (
            prop::sample::select(CONFIG_KEYS),
            prop_oneof![
                prop::sample::select(CONFIG_VALUES).prop_map(str::to_string),
                any::<i64>().prop_map(|n| n.to_string()),
                "[ -~]{0,12}".prop_map(|s| format!("{s:?}")),
            ]
        )
            .prop_map(|(k, v)| format!("{k} = {v}")),
        "[ -~\n]{0,24}",
    ];
    prop::collection::vec(line, 0..40).prop_map(|lines| lines.join("\n"))
}

fn parse_config(text: &str) {
    let dir = std::env::temp_dir();
    let _ = Config::parse(text, "fuzz.toml", &dir);
}

proptest! {
    #[test]
    fn any_chat_request_json_is_parsed_or_refused_without_panicking(value in json(CHAT_KEYS, CHAT_WORDS)) {
        chat_request(value.to_string().as_bytes());
        // The same, as the body of a request object.
        let mut body = Map::new();
        body.insert("model".into(), Value::String("m".into()));
        body.insert("messages".into(), value);
        chat_request(Value::Object(body).to_string().as_bytes());
    }

    #[test]
    fn any_bytes_as_a_chat_request_are_refused_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        chat_request(&bytes);
    }

    #[test]
    fn any_config_text_is_parsed_or_refused_without_panicking(text in config_text()) {
        parse_config(&text);
    }

    #[test]
    fn the_quickstart_with_any_line_added_is_parsed_or_refused_without_panicking(
        text in config_text(),
        at in any::<prop::sample::Index>(),
    ) {
        let quickstart = agentrouter::config::QUICKSTART_TOML;
        let lines: Vec<&str> = quickstart.lines().collect();
        let at = at.index(lines.len() + 1);
        let mutated = [&lines[..at], &[text.as_str()], &lines[at..]].concat().join("\n");
        parse_config(&mutated);
    }
}

/// Inputs that once broke a parser, kept as plain cases (none found yet by
/// these targets; add each one here with what it broke).
#[test]
fn regressions() {
    for body in [
        r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]}"#,
        r#"{"model":"m","messages":[{"role":"tool","content":null,"tool_calls":[{}]}]}"#,
    ] {
        chat_request(body.as_bytes());
    }
    parse_config("[budgets.request]\nmax_plugin_instances = 0\n[runtime]\npool_instances = 0\n");
}
