//! The official OpenAI SDKs and the frameworks built on them against a real
//! gateway and the recording upstream:
//!
//! - the pytest suites of `tests/openai_sdk/`: the official `openai` Python
//!   SDK (every parameter reaches the upstream unchanged, every field the
//!   upstream answers comes back, an upstream 400 is the SDK's
//!   `BadRequestError`, sent once), langchain-openai (structured output with
//!   a JSON schema parses) and the openai-agents SDK (an agent with a
//!   function tool runs in chat-completions mode, streamed and not);
//! - `tests/openai_sdk/js/openai_js.test.mjs` with `node --test`: the
//!   official `openai` JS SDK, the same way.
//!
//! The Python clients live in a venv that `.ci/run` makes (pinned in
//! `tests/openai_sdk/requirements.txt`) and names in
//! `AGENTROUTER_OPENAI_VENV`, else `target/openai-sdk-venv`; the JS SDK in
//! an npm prefix (pinned in `tests/openai_sdk/js/package.json`) named in
//! `AGENTROUTER_OPENAI_JS`, else `target/openai-js-sdk`. A missing one fails
//! its test under CI (`CI` set) and skips it, saying how to make it,
//! elsewhere.

mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{Gateway, Recorder};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The install named in `var` (else `default` under the workspace) when
/// `probe` exists in it; `None` outside CI when it does not.
fn install(var: &str, default: &str, probe: &str, how: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(default));
    if dir.join(probe).exists() {
        return Some(dir);
    }
    let how = how.replace("{dir}", &dir.display().to_string());
    if std::env::var_os("CI").is_some() {
        panic!(
            "nothing installed at {} (CI must make it: {how})",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPED: nothing installed at {}; make it with `{how}`",
        dir.display()
    );
    None
}

/// Beside `gpt-rec`: a simulated upstream serving embeddings for
/// `sim-embed` (the suites' embeddings cases).
const MORE_UPSTREAMS: &str = r#"
[upstreams.embed]
kind = "simulated"
model = "sim-embed"
serves = ["embeddings"]
input_cost_per_1k = 0.0001

[upstreams.embed.simulator]
latency_ms = 0
jitter_ms = 0
"#;

/// Runs `program args` against a gateway serving `gpt-rec` from a fresh
/// recorder (and the upstreams of [`MORE_UPSTREAMS`]), with their URLs in `AGENTROUTER_GATEWAY` and
/// `AGENTROUTER_RECORDER` (and `env`), and fails with its output unless it
/// succeeds and its report says `ran` (that some cases passed: a runner
/// that finds none may still exit 0).
async fn run_suite(program: &Path, args: &[&OsStr], env: &[(&str, &OsStr)], ran: &str) {
    let recorder = Recorder::start().await;
    let gw = Gateway::start(&recorder.config("gpt-rec", MORE_UPSTREAMS)).await;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(workspace())
        .env("AGENTROUTER_GATEWAY", &gw.base)
        .env("AGENTROUTER_RECORDER", &recorder.root)
        // Nothing leaves 127.0.0.1: no trace export by the agents SDK or
        // langsmith, whatever the machine's environment says.
        .env("OPENAI_AGENTS_DISABLE_TRACING", "1")
        .env("LANGSMITH_TRACING", "false")
        .env("LANGCHAIN_TRACING_V2", "false")
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    // Bounded: a hung suite fails instead of hanging CI.
    let out = tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .expect("the suite finished within 300 s")
        .expect("the suite started");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Shown with `--nocapture`: which cases ran.
    eprintln!("{report}");
    assert!(out.status.success(), "the suite failed:\n{report}");
    assert!(report.contains(ran), "no case ran:\n{report}");
    gw.stop().await;
    recorder.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_python_sdk_gets_what_openai_would_send() {
    let Some(venv) = install(
        "AGENTROUTER_OPENAI_VENV",
        "target/openai-sdk-venv",
        "bin/python",
        "python3 -m venv {dir} && {dir}/bin/pip install -r tests/openai_sdk/requirements.txt",
    ) else {
        return;
    };
    let suites = workspace().join("tests/openai_sdk");
    let args = ["-m", "pytest", "-v", "-p", "no:cacheprovider"].map(OsStr::new);
    run_suite(
        &venv.join("bin/python"),
        &[&args[..], &[suites.as_os_str()]].concat(),
        &[],
        " passed in ",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_js_sdk_gets_what_openai_would_send() {
    let Some(prefix) = install(
        "AGENTROUTER_OPENAI_JS",
        "target/openai-js-sdk",
        "node_modules/openai/package.json",
        "mkdir -p {dir} && cp tests/openai_sdk/js/package.json {dir}/ && npm install --prefix {dir}",
    ) else {
        return;
    };
    let suite = workspace().join("tests/openai_sdk/js/openai_js.test.mjs");
    run_suite(
        Path::new("node"),
        &[OsStr::new("--test"), suite.as_os_str()],
        &[("AGENTROUTER_OPENAI_JS", prefix.as_os_str())],
        "\n# fail 0\n",
    )
    .await;
}
