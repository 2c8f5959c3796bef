//! Start-up failures as an operator meets them: the real binary, each
//! failure a single `error:` line that names the thing and the fix, with no
//! cause repeated.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

fn agentrouter(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentrouter"))
        .args(args)
        .output()
        .unwrap()
}

/// The one `error:` line the command printed; panics unless it failed and
/// printed exactly one.
fn error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected a failure: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{stderr}");
    errors[0].to_string()
}

/// A valid config with its store in `data` under `dir`, plus `extra`.
fn write_config(dir: &Path, extra: &str) -> String {
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[store]\npath = \"data\"\n\n[upstreams.sim]\nkind = \"simulated\"\nmodel = \"m\"\n{extra}"
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn a_store_held_by_another_process_is_named_once_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let store = dir.path().join("data");
    // This test process holds sled's lock, as a running gateway would.
    let _held = agentrouter::store::Store::open(&store).unwrap();
    let expected = format!(
        "error: the store at {} is in use by another process (an agentrouter serving from it, or `agentrouter keys` on it); stop that process, or set [store] path to another directory",
        store.display()
    );
    assert_eq!(
        error_line(&agentrouter(&["serve", "--config", &config])),
        expected
    );
    assert_eq!(
        error_line(&agentrouter(&["keys", "list", "--config", &config])),
        expected
    );
}

#[test]
fn a_port_in_use_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    assert_eq!(
        error_line(&agentrouter(&[
            "serve", "--config", &config, "--listen", &addr
        ])),
        format!(
            "error: cannot listen on {addr}: the address is already in use (is another agentrouter running?); stop that process, or choose another address with --listen or [server] listen"
        )
    );
}

#[test]
fn a_missing_or_unreadable_config_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml").display().to_string();
    assert_eq!(
        error_line(&agentrouter(&["serve", "--config", &missing])),
        format!(
            "error: {missing}: no such config file; pass an existing file, or omit --config to run the embedded quickstart"
        )
    );
    // A directory where the file should be (root reads any file, so a
    // permission test would pass vacuously under CI).
    let not_a_file = dir.path().display().to_string();
    assert_eq!(
        error_line(&agentrouter(&["serve", "--config", &not_a_file])),
        format!("error: {not_a_file}: cannot read config file: Is a directory (os error 21)")
    );
}

#[test]
fn a_missing_plugin_file_is_named_with_its_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "\n[plugins.guard]\nsource = \"missing.wasm\"\nworld = \"validator\"\n\n[pipeline]\ninput_validators = [\"guard\"]\n",
    );
    assert_eq!(
        error_line(&agentrouter(&["serve", "--config", &config])),
        format!(
            "error: {config}:12: plugins.guard.source: plugin file {} does not exist",
            dir.path().join("missing.wasm").display()
        )
    );
}

#[test]
fn an_unusable_store_or_cache_directory_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where a directory must be: unusable even for root.
    std::fs::write(dir.path().join("afile"), "x").unwrap();
    let store_config = dir.path().join("store.toml");
    std::fs::write(
        &store_config,
        "[store]\npath = \"afile/data\"\n\n[upstreams.sim]\nkind = \"simulated\"\nmodel = \"m\"\n",
    )
    .unwrap();
    assert_eq!(
        error_line(&agentrouter(&[
            "serve",
            "--config",
            store_config.to_str().unwrap()
        ])),
        format!(
            "error: cannot open the store at {}: IO error: Not a directory (os error 20); set [store] path to a writable directory",
            dir.path().join("afile/data").display()
        )
    );
    let cache_config = write_config(dir.path(), "\n[runtime]\ncache_dir = \"afile/cache\"\n");
    assert_eq!(
        error_line(&agentrouter(&["serve", "--config", &cache_config])),
        format!(
            "error: plugin runtime: cannot open the plugin cache at {}: Not a directory (os error 20); set [runtime] cache_dir to a writable directory",
            dir.path().join("afile/cache").display()
        )
    );
}
