//! The `agentrouter` binary's commands, run as a user would run them.

use agentrouter::plugins;
use std::process::{Command, Output};

fn agentrouter(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentrouter"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plugin_inspect_names_the_world_imports_exports_and_digest() {
    let dir = tempfile::tempdir().unwrap();
    let guard = plugins::get("input-guard").unwrap();
    let path = dir.path().join("input-guard.wasm");
    std::fs::write(&path, guard.wasm).unwrap();
    let out = agentrouter(&["plugin", "inspect", path.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("world:   validator"), "{stdout}");
    assert!(stdout.contains("exports: validate"), "{stdout}");
    assert!(
        stdout.contains("agentrouter:plugin/settings@0.1.0"),
        "{stdout}"
    );
    let digest = agentrouter::runtime::sha256_hex(guard.wasm);
    assert!(stdout.contains(&format!("sha256:{digest}")), "{stdout}");

    let manager = dir.path().join("manager.wasm");
    std::fs::write(&manager, plugins::get("manager").unwrap().wasm).unwrap();
    let (stdout, _) = text(&agentrouter(&[
        "plugin",
        "inspect",
        manager.to_str().unwrap(),
    ]));
    assert!(
        stdout.contains("world:   agent") && stdout.contains("agentrouter:plugin/agents@0.1.0"),
        "{stdout}"
    );
}

#[test]
fn plugin_inspect_refuses_foreign_and_broken_files_with_the_reason() {
    let command = plugins::fixture_dir().join("wasi-command.wasm");
    let out = agentrouter(&["plugin", "inspect", command.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("wasi:cli/run") && stderr.contains("not an AgentRouter plugin"),
        "{stderr}"
    );

    let vault = plugins::fixture_dir().join("foreign_import.wasm");
    let out = agentrouter(&["plugin", "inspect", vault.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("acme:vault/secrets"),
        "{}",
        text(&out).1
    );

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm at all").unwrap();
    let out = agentrouter(&["plugin", "inspect", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("junk.wasm") && text(&out).1.contains("not a WebAssembly file"),
        "{}",
        text(&out).1
    );

    let out = agentrouter(&[
        "plugin",
        "inspect",
        dir.path().join("missing.wasm").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("missing.wasm"), "{}", text(&out).1);
}
