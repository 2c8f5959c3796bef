//! The official OpenAI Python SDK against a real gateway and the recording
//! upstream (`tests/openai_sdk/test_openai_sdk.py`, run with pytest): every
//! parameter the SDK sends reaches the upstream unchanged and every field
//! the upstream answers comes back; an upstream 400 is the SDK's
//! `BadRequestError`, sent once.
//!
//! The SDK lives in a venv that `.ci/run` makes (pinned versions in
//! `tests/openai_sdk/requirements.txt`) and names in
//! `AGENTROUTER_OPENAI_VENV`; without that variable the test looks in
//! `target/openai-sdk-venv`. A missing venv fails the test under CI
//! (`CI` set) and skips it, saying how to make one, elsewhere.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{Gateway, Recorder};

/// The venv's python, or `None` (outside CI) when there is no venv.
fn venv_python(workspace: &Path) -> Option<PathBuf> {
    let venv = std::env::var_os("AGENTROUTER_OPENAI_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target/openai-sdk-venv"));
    let python = venv.join("bin/python");
    if python.is_file() {
        return Some(python);
    }
    let how = format!(
        "python3 -m venv {v} && {v}/bin/pip install -r tests/openai_sdk/requirements.txt",
        v = venv.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!(
            "no OpenAI SDK venv at {} (CI must make it: {how})",
            venv.display()
        );
    }
    eprintln!(
        "SKIPPED the OpenAI SDK suite: no venv at {}; make one with `{how}`",
        venv.display()
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_python_sdk_gets_what_openai_would_send() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let Some(python) = venv_python(&workspace) else {
        return;
    };
    let recorder = Recorder::start().await;
    let gw = Gateway::start(&recorder.config("gpt-rec", "")).await;
    let run = tokio::process::Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(workspace.join("tests/openai_sdk"))
        .env("AGENTROUTER_GATEWAY", &gw.base)
        .env("AGENTROUTER_RECORDER", &recorder.root)
        .kill_on_drop(true)
        .output();
    // Bounded: a hung suite fails instead of hanging CI.
    let out = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the SDK suite finished within 300 s")
        .expect("pytest started");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the OpenAI SDK suite failed:\n{report}"
    );
    assert!(report.contains(" passed"), "{report}");
    gw.stop().await;
    recorder.stop().await;
}
