//! Sandboxed agents reach the world only through the host (issue 19):
//! outbound HTTP within a slot's grant, MCP tools from configured servers,
//! and contract 0.1.0 components next to 0.2.0 ones.
//!
//! Real boundaries throughout: the gateway on 127.0.0.1, an HTTP API there
//! ([`Origin`]), an MCP server built with the official Python SDK
//! (`tests/mcp/server.py`, in the venv `.ci/run` makes: `AGENTROUTER_MCP_VENV`,
//! else `target/mcp-venv`; under CI a missing venv fails, elsewhere the MCP
//! test is skipped with a message), the `outbound` fixture agent, the
//! builtin worker, and 0.1.0 components committed as they were built
//! before 0.2.0 existed (`tests/fixtures/contract-0.1.0/`).

mod support;

use agentrouter::plugins;
use serde_json::json;
use std::path::PathBuf;
use std::process::Stdio;
use support::{Gateway, Origin, SimServer, steady};
use tokio::io::AsyncBufReadExt;

const TOKEN: &str = "sk-origin-4c1d2f9e";

fn fixture(name: &str) -> String {
    plugins::fixture_dir()
        .join(format!("{name}.wasm"))
        .display()
        .to_string()
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The answer of agent `slot` to `input`.
async fn invoke(gw: &Gateway, slot: &str, input: &str) -> String {
    let (status, body) = gw
        .post(
            &format!("/v1/agents/{slot}/invoke"),
            &json!({ "input": input }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["output"].as_str().unwrap_or_default().to_string()
}

fn metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_is_granted_per_rule_and_every_refusal_names_the_rule() {
    let origin = Origin::start().await;
    let other = Origin::start().await;
    let (p, p2) = (origin.port, other.port);
    origin.redirect_to(&format!("http://127.0.0.2:{p}/api/ok"));
    let up = SimServer::start(steady(0), &["m"]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token.txt"), format!("Bearer {TOKEN}\n")).unwrap();
    let config = up.config(&format!(
        r#"
[plugins.out]
source = "{out}"
world = "agent"

[plugins.out.capabilities.http]
max_requests_per_call = 4
max_response_bytes = 4096

[[plugins.out.capabilities.http.allow]]
host = "127.0.0.1"
ports = [{p}]
path_prefixes = ["/api/"]
allow_private = true
allow_plain_http = true
inject_headers = {{ authorization = "${{file:token.txt}}" }}

[[plugins.out.capabilities.http.allow]]
host = "localhost"
ports = [{p}]
allow_plain_http = true

# Another service on the same address, without a credential.
[[plugins.out.capabilities.http.allow]]
host = "127.0.0.1"
ports = [{p2}]
allow_private = true
allow_plain_http = true
"#,
        out = fixture("outbound"),
    ));
    let gw = Gateway::start_in(dir.path(), &config).await;
    let script = [
        format!("fetch GET http://127.0.0.1:{p}/api/ok Authorization: Bearer forged"),
        format!("fetch GET http://127.0.0.2:{p}/api/ok"),
        format!("fetch GET http://127.0.0.1:{p}/api/redirect"),
        format!("fetch GET http://localhost:{p}/api/ok"),
        format!("fetch GET http://127.0.0.1:{p}/api/big"),
        format!("fetch GET http://127.0.0.1:{p}/private"),
        format!("fetch POST http://127.0.0.1:{p}/api/ok"),
        format!("fetch GET http://127.0.0.1:{p}/api/ok"),
        format!("fetch GET http://127.0.0.1:{p}/api/ok"),
        "env".to_string(),
        "setting authorization".to_string(),
    ]
    .join("\n");
    let answer = invoke(&gw, "out", &script).await;
    let lines: Vec<&str> = answer.lines().collect();
    assert_eq!(lines.len(), 11, "{answer}");
    let key = "plugins.out.capabilities.http";
    assert!(lines[0].starts_with("status=200 body=ok "), "{answer}");
    let denied = |line: &str, rule: &str| {
        assert!(
            line.starts_with("failure=") && line.contains("Denied(") && line.contains(rule),
            "expected a denial by {rule}, got {line}"
        )
    };
    denied(
        lines[1],
        &format!("{key}.allow: host `127.0.0.2` is not allowed"),
    );
    // The redirect's target is checked like a first request.
    denied(
        lines[2],
        &format!("{key}.allow: host `127.0.0.2` is not allowed"),
    );
    denied(
        lines[3],
        &format!("{key}.allow[1].allow_private: `localhost` is the private address"),
    );
    denied(lines[4], &format!("{key}.max_response_bytes"));
    denied(lines[5], &format!("{key}.allow[0].path_prefixes"));
    denied(lines[6], &format!("{key}.allow[0].methods: method POST"));
    // Requests so far: ok, redirect, big; the fourth is the last allowed.
    assert!(lines[7].starts_with("status=200"), "{answer}");
    denied(lines[8], &format!("{key}.max_requests_per_call"));
    // The credential reached the origin, replacing the plugin's forgery,
    // and the plugin can read it nowhere.
    let seen = origin.requests();
    assert_eq!(seen[0].0, "/api/ok");
    assert_eq!(seen[0].1["authorization"], format!("Bearer {TOKEN}"));
    assert!(
        seen.iter().all(|(path, _)| path.starts_with("/api/")),
        "{seen:?}"
    );
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(!answer.contains(TOKEN), "{answer}");
    assert_eq!(lines[10], "none");

    // A redirect to an allowed service that has no credential: the
    // credential stays with the rule that injects it. (A new call: a new
    // request budget.)
    origin.redirect_to(&format!("http://127.0.0.1:{p2}/api/ok"));
    let answer = invoke(
        &gw,
        "out",
        &format!("fetch GET http://127.0.0.1:{p}/api/redirect"),
    )
    .await;
    assert!(answer.starts_with("status=200 body=ok"), "{answer}");
    let first = origin.requests();
    let hop = first.last().unwrap();
    assert_eq!(
        (hop.0.as_str(), hop.1["authorization"].as_str()),
        ("/api/redirect", format!("Bearer {TOKEN}").as_str())
    );
    let second = other.requests();
    assert_eq!(second.len(), 1, "{second:?}");
    assert!(!second[0].1.contains_key("authorization"), "{second:?}");

    let metrics = gw.metrics().await;
    let calls = |outcome: &str| {
        metric(
            &metrics,
            &format!(
                r#"agentrouter_plugin_outbound_calls_total{{plugin="out",kind="http",outcome="{outcome}"}}"#
            ),
        )
    };
    assert_eq!((calls("ok"), calls("denied")), (3.0, 7.0), "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            r#"agentrouter_plugin_outbound_bytes_total{plugin="out",kind="http",direction="received"}"#
        ),
        6.0
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_grant_every_request_and_tool_call_is_denied() {
    let up = SimServer::start(steady(0), &["m"]).await;
    let config = up.config(&format!(
        "[plugins.out]\nsource = \"{}\"\nworld = \"agent\"\n",
        fixture("outbound")
    ));
    let gw = Gateway::start(&config).await;
    let answer = invoke(
        &gw,
        "out",
        "fetch GET https://example.com/\ntools\ncall kb.search {}",
    )
    .await;
    let lines: Vec<&str> = answer.lines().collect();
    assert!(
        lines[0].contains("Denied(")
            && lines[0].contains("plugins.out.capabilities.http: no outbound HTTP is granted"),
        "{answer}"
    );
    assert_eq!(lines[1], "tools=");
    assert!(
        lines[2].contains("plugins.out.capabilities.tools: no tools are granted"),
        "{answer}"
    );
    gw.stop().await;
}

/// The MCP test server's venv, or `None` (outside CI) when it is missing.
fn mcp_python() -> Option<PathBuf> {
    let venv = std::env::var_os("AGENTROUTER_MCP_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/mcp-venv"));
    let python = venv.join("bin/python");
    if python.exists() {
        return Some(python);
    }
    let how = "python3 -m venv target/mcp-venv && target/mcp-venv/bin/pip install -r tests/mcp/requirements.txt";
    if std::env::var_os("CI").is_some() {
        panic!("no MCP venv at {} (CI must make it: {how})", venv.display());
    }
    eprintln!(
        "SKIPPED: no MCP venv at {}; make it with `{how}`",
        venv.display()
    );
    None
}

/// Starts `tests/mcp/server.py`; the child (killed on drop) and its port.
async fn mcp_server(python: &PathBuf) -> (tokio::process::Child, u16) {
    let mut child = tokio::process::Command::new(python)
        .arg(workspace().join("tests/mcp/server.py"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the MCP server starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .expect("the MCP server printed its port within 30 s")
        .unwrap()
        .unwrap_or_default();
    let port = line
        .strip_prefix("port=")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line from the MCP server: {line}"));
    (child, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_list_and_call_their_granted_mcp_tools_and_nothing_else() {
    let Some(python) = mcp_python() else { return };
    let (_server, port) = mcp_server(&python).await;
    let up = SimServer::start(steady(0), &["m"]).await;
    let config = up.config(&format!(
        r#"
[mcp.kb]
url = "http://127.0.0.1:{port}/mcp"

# The same server, spoken to in the stateless revision.
[mcp.kb-stateless]
url = "http://127.0.0.1:{port}/mcp"
protocol_version = "2026-07-28"

[plugins.researcher]
source = "builtin:worker"

[plugins.researcher.capabilities.tools]
allow = ["kb.search", "kb-stateless.weather"]

[plugins.out]
source = "{out}"
world = "agent"

[plugins.out.capabilities.tools]
allow = ["kb.search", "kb.weather", "kb.bulky"]
max_result_bytes = 1024
max_calls_per_call = 3
"#,
        out = fixture("outbound"),
    ));
    let gw = Gateway::start(&config).await;
    // The worker offers both tools (one per protocol revision); the
    // simulator calls each one with the task, then summarises the results.
    let answer = invoke(&gw, "researcher", "rain in Paris").await;
    assert_eq!(
        answer,
        "Summary of 2 results: results for rain in Paris | sunny where rain in Paris"
    );

    let script = [
        "tools",
        r#"call kb.secret_tool {"task": "x"}"#,
        r#"call kb.bulky {"task": "x"}"#,
        r#"call kb.search {"task": "x"}"#,
        r#"call kb.weather {"task": "y"}"#,
        r#"call kb.search {"task": "z"}"#,
    ]
    .join("\n");
    let answer = invoke(&gw, "out", &script).await;
    let lines: Vec<&str> = answer.lines().collect();
    let key = "plugins.out.capabilities.tools";
    assert_eq!(lines[0], "tools=kb.search,kb.weather,kb.bulky", "{answer}");
    assert!(
        lines[1].contains("Denied(")
            && lines[1].contains(&format!(
                "{key}.allow: tool `kb.secret_tool` is not allowed"
            )),
        "{answer}"
    );
    assert!(
        lines[2].contains("Denied(") && lines[2].contains(&format!("{key}.max_result_bytes")),
        "{answer}"
    );
    assert_eq!(lines[3], "text=results for x error=false");
    assert_eq!(lines[4], "text=sunny where y error=false");
    assert!(
        lines[5].contains("Denied(") && lines[5].contains(&format!("{key}.max_calls_per_call")),
        "{answer}"
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"agentrouter_plugin_outbound_calls_total{plugin="researcher",kind="tool",outcome="ok"}"#
        ),
        2.0,
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_0_1_0_components_run_unchanged_next_to_0_2_0_ones() {
    let old = workspace().join("tests/fixtures/contract-0.1.0");
    let up = SimServer::start(steady(0), &["m"]).await;
    let config = up.config(&format!(
        r#"
[plugins.old-worker]
source = "{worker}"
world = "agent"

[plugins.new-worker]
source = "builtin:worker"

[plugins.old-redact]
source = "{redact}"
world = "validator"

[pipeline]
output_validators = ["old-redact"]
"#,
        worker = old.join("worker.wasm").display(),
        redact = old.join("pii_redact.wasm").display(),
    ));
    let gw = Gateway::start(&config).await;
    for slot in ["old-worker", "new-worker"] {
        assert_eq!(invoke(&gw, slot, "hello").await, "[m] You said: hello");
    }
    // The 0.1.0 validator still redacts what the 0.2.0 pipeline answers.
    let (status, body) = gw
        .post(
            "/v1/chat/completions",
            &support::chat("m", "mail me at someone@example.com"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let text = support::content(&body);
    assert!(!text.contains("someone@example.com"), "{text}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_a_component_importing_http_or_tools_without_a_grant() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[store]
path = "store"

[upstreams.sim]
kind = "simulated"
model = "m"

[plugins.out]
source = "{out}"
world = "agent"
"#,
        out = fixture("outbound"),
    );
    let path = dir.path().join("agentrouter.toml");
    std::fs::write(&path, &toml).unwrap();
    let errors = agentrouter::config::check(&path).await.unwrap_err();
    let text = errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("plugins.out")
            && text.contains("`http` (add [plugins.out.capabilities.http])")
            && text.contains("`tools` (add [plugins.out.capabilities.tools])"),
        "{text}"
    );
    // Granting http alone leaves tools to add.
    std::fs::write(
        &path,
        format!("{toml}\n[plugins.out.capabilities.http]\nallow = []\n"),
    )
    .unwrap();
    let errors = agentrouter::config::check(&path).await.unwrap_err();
    let text = errors[0].to_string();
    assert!(
        text.contains("`tools` (add [plugins.out.capabilities.tools])") && !text.contains("`http`"),
        "{text}"
    );
}

#[test]
fn plugin_inspect_shows_the_contract_version_and_the_capabilities_imported() {
    let inspect = |path: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentrouter"))
            .args(["plugin", "inspect", path])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let out = inspect(&fixture("outbound"));
    assert!(out.contains("contract: agentrouter:plugin@0.2.0"), "{out}");
    assert!(out.contains("capabilities: http, settings, tools"), "{out}");
    assert!(
        out.contains("  http: needs [plugins.<slot>.capabilities.http]"),
        "{out}"
    );
    let old = workspace().join("tests/fixtures/contract-0.1.0/worker.wasm");
    let out = inspect(old.to_str().unwrap());
    assert!(out.contains("contract: agentrouter:plugin@0.1.0"), "{out}");
    assert!(out.contains("capabilities: kv, llm, settings"), "{out}");
    assert!(!out.contains("needs ["), "{out}");
}

#[test]
fn bad_grants_are_config_errors_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let parse = |extra: &str| {
        let toml = format!(
            "[upstreams.sim]\nkind = \"simulated\"\nmodel = \"m\"\n\n[plugins.out]\nsource = \"{}\"\nworld = \"agent\"\n{extra}",
            fixture("outbound")
        );
        agentrouter::config::Config::parse(&toml, "test.toml", dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let e = parse("\n[plugins.out.capabilities.tools]\nallow = [\"kb.search\"]\n");
    assert!(
        e.starts_with("test.toml:10: plugins.out.capabilities.tools.allow[0]:")
            && e.contains("names no [mcp.kb] server"),
        "{e}"
    );
    let e =
        parse("\n[mcp.kb]\nurl = \"http://127.0.0.1:1/mcp\"\nprotocol_version = \"2024-01-01\"\n");
    assert!(
        e.starts_with("test.toml:11: mcp.kb.protocol_version:") && e.contains("2026-07-28"),
        "{e}"
    );
    let e = parse(
        "\n[[plugins.out.capabilities.http.allow]]\nhost = \"api.example.com\"\ninject_headers = { authorization = \"${env:I19_SURELY_UNSET_VARIABLE}\" }\n",
    );
    assert!(
        e.contains("plugins.out.capabilities.http.allow[0].inject_headers.authorization")
            && e.contains("I19_SURELY_UNSET_VARIABLE"),
        "{e}"
    );
    let validator = "[upstreams.sim]\nkind = \"simulated\"\nmodel = \"m\"\n\n[plugins.v]\nsource = \"builtin:input-guard\"\n\n[plugins.v.capabilities.http]\nallow = []\n";
    let e = agentrouter::config::Config::parse(validator, "test.toml", dir.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("plugins.v.capabilities") && e.contains("agents only"),
        "{e}"
    );
}
