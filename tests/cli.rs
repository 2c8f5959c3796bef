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
        stdout.contains("agentrouter:plugin/settings@0.2.0")
            && stdout.contains("contract: agentrouter:plugin@0.2.0"),
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
        stdout.contains("world:   agent") && stdout.contains("agentrouter:plugin/agents@0.2.0"),
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

#[test]
fn keys_create_list_rotate_revoke_round_trip() {
    use agentrouter::auth::{Auth, AuthError};
    use agentrouter::config::Config;
    use agentrouter::store::Store;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        "[auth]\nenabled = true\n\n[upstreams.m]\nkind = \"simulated\"\nmodel = \"m\"\n",
    )
    .unwrap();
    let config = path.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["keys"];
        all.extend_from_slice(args);
        let out = agentrouter(&all);
        let (stdout, stderr) = text(&out);
        (out.status.success(), stdout, stderr)
    };

    let (ok, secret, stderr) = run(&["create", "--config", config, "team-x", "--models", "m"]);
    assert!(ok, "{stderr}");
    let secret = secret.trim().to_string();
    assert!(secret.starts_with("sk-ar-"), "{secret}");
    assert!(stderr.contains("shown once"), "{stderr}");
    let (ok, _, stderr) = run(&["create", "--config", config, "team-x"]);
    assert!(!ok && stderr.contains("already exists"), "{stderr}");
    let (ok, _, stderr) = run(&["create", "--config", config, "other", "--models", "gpt-9"]);
    assert!(!ok && stderr.contains("gpt-9"), "{stderr}");

    let (ok, list, _) = run(&["list", "--config", config]);
    assert!(ok);
    let line = list.lines().find(|l| l.starts_with("team-x")).unwrap();
    assert!(
        line.contains("store") && line.contains("active") && line.contains(r#""models":["m"]"#),
        "{list}"
    );

    let (ok, rotated, stderr) = run(&["rotate", "--config", config, "team-x", "--grace", "1h"]);
    assert!(ok, "{stderr}");
    let rotated = rotated.trim().to_string();
    assert!(rotated.starts_with("sk-ar-") && rotated != secret);
    let (_, list, _) = run(&["list", "--config", config]);
    assert!(list.contains("old secret until"), "{list}");

    // Only hashes reached the disk, and both secrets work within the grace.
    for entry in std::fs::read_dir(dir.path().join("data")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(&secret) && !text.contains(&rotated),
                "{path:?}"
            );
        }
    }
    let check = |secret: &str| {
        let config = Config::from_file(&path).unwrap();
        let store = Store::open(&config.store_path()).unwrap();
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("authorization", format!("Bearer {secret}").parse().unwrap());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let auth = Auth::new(&config.startup.auth, &store, None).await.unwrap();
            auth.authenticate(&headers).await.map(|id| id.name)
        })
    };
    assert_eq!(check(&secret).unwrap(), "team-x");
    assert_eq!(check(&rotated).unwrap(), "team-x");

    let (ok, _, stderr) = run(&["revoke", "--config", config, "team-x"]);
    assert!(ok, "{stderr}");
    let (_, list, _) = run(&["list", "--config", config]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("team-x") && l.contains("revoked")),
        "{list}"
    );
    assert!(matches!(check(&rotated), Err(AuthError::Revoked(name)) if name == "team-x"));
    let (ok, _, stderr) = run(&["rotate", "--config", config, "team-x"]);
    assert!(!ok && stderr.contains("revoked"), "{stderr}");
    let (ok, _, stderr) = run(&["revoke", "--config", config, "nobody"]);
    assert!(!ok && stderr.contains("no key named `nobody`"), "{stderr}");
}

#[test]
fn check_exits_non_zero_naming_a_validator_that_imports_kv() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = plugins::fixture_dir().join("kv_validator.wasm");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[upstreams.a]\nkind = \"simulated\"\nmodel = \"m\"\n\n\
             [plugins.leaky]\nsource = {:?}\nworld = \"validator\"\n\n\
             [pipeline]\ninput_validators = [\"leaky\"]\n",
            fixture.display().to_string()
        ),
    )
    .unwrap();
    let out = agentrouter(&["check", "--config", config.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains(&format!("{}:5: plugins.leaky: ", config.display()))
            && stderr.contains(
                "exports `validate` like a validator but imports \
                 `agentrouter:plugin/kv@0.1.0`, which the validator world does not provide"
            ),
        "{stderr}"
    );

    // `plugin inspect` says the same of the file.
    let out = agentrouter(&["plugin", "inspect", fixture.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out)
            .1
            .contains("which the validator world does not provide"),
        "{}",
        text(&out).1
    );
}
