//! `agentrouter plugin new` end to end: for every world in Rust, Python and
//! JavaScript, the generated project builds with its own README's command,
//! passes `agentrouter plugin inspect` as that world, and answers
//! `agentrouter plugin call` with what its example code does.
//!
//! The toolchains are real: cargo with the wasm32-wasip2 target, the pinned
//! componentize-py on PATH, node and npm. Under `.ci/run`
//! (`AGENTROUTER_TOOLCHAINS_REQUIRED` set) a missing one fails the test;
//! elsewhere it is skipped with a loud message. JavaScript
//! projects take their node_modules from `$AGENTROUTER_JS_TOOLCHAIN` when
//! set (CI points it at the installed, locked toolchain of
//! `examples/js-validator`, whose pins the scaffold must match), else one
//! `npm install` is shared by the four projects.
//!
//! What the gateway's own build already compiled is reused rather than
//! built again (CI time): the Rust scaffolds build in a copy of the target
//! directory host/build.rs compiles the first-party plugins in (same
//! profile, same target, same wit-bindgen), with plugins/Cargo.lock, so
//! only the SDK copy and the plugin itself are compiled; `plugin inspect`
//! reads a component without compiling it, and `plugin call` compiles into
//! one AOT cache per test (in its temp dir, never the user's).

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::skip_or_fail;

const WORLDS: [&str; 4] = ["agent", "validator", "router", "recovery"];

fn agentrouter() -> Command {
    Command::new(env!("CARGO_BIN_EXE_agentrouter"))
}

/// The directory host/build.rs builds the plugins workspace in:
/// `<target>/wasm-plugins`, next to the profile dir of the binary.
fn plugins_target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_agentrouter"))
        .ancestors()
        .nth(2)
        .expect("the binary lives in <target>/<profile>/")
        .join("wasm-plugins")
}

/// Copies the directory `from` to `to` with `cp -a`: cargo's fingerprints
/// compare modification times, so a copy that does not keep them (as
/// `std::fs::copy` does not) rebuilds everything.
fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap_or_else(|e| panic!("cannot run cp: {e}"));
    assert!(
        status.success(),
        "cp -a {} {}: {status}",
        from.display(),
        to.display()
    );
}

/// Runs `cmd` in `dir`, panicking with its output unless it succeeds.
fn run(mut cmd: Command, dir: &Path, what: &str) -> String {
    let output = cmd
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Whether `tool --version` runs; in CI its absence fails the test.
fn have(tool: &str, lang: &str) -> bool {
    if Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    let why = format!(
        "`{tool}` is not on PATH, so the {lang} scaffolds cannot be built \
         (.ci/run installs it; see examples/README.md)"
    );
    skip_or_fail(&why);
    false
}

/// `plugin new` for `world` in `lang` under `root`; the project directory.
fn scaffold(root: &Path, lang: &str, world: &str) -> PathBuf {
    let name = format!("my-{world}");
    let dir = root.join(format!("{lang}-{world}"));
    let mut cmd = agentrouter();
    cmd.args([
        "plugin", "new", "--world", world, "--lang", lang, &name, "--dir",
    ])
    .arg(&dir);
    let out = run(cmd, root, "plugin new");
    assert!(out.contains("build it:"), "{out}");
    dir
}

/// The build command the project's README gives, run as a shell command.
fn readme_build(dir: &Path) -> Command {
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap_or_else(|| panic!("no sh block in {}", dir.display()));
    // The block's last line is the build; earlier lines are one-time setup.
    let build = block.lines().rfind(|l| !l.trim().is_empty()).unwrap();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", build]);
    cmd
}

/// Inspects and calls the built component; checks the world and the answer.
/// The call compiles into the AOT cache `cache`.
fn check(dir: &Path, wasm: &Path, world: &str, cache: &Path) {
    assert!(wasm.is_file(), "{} was not built", wasm.display());
    let mut inspect = agentrouter();
    inspect.args(["plugin", "inspect"]).arg(wasm);
    let out = run(inspect, dir, "plugin inspect");
    assert!(out.contains(&format!("world:   {world}")), "{out}");

    let (input, expected): (Value, Value) = match world {
        "validator" => (
            json!({"stage": "input", "messages": ["hello"]}),
            json!({"verdict": "allow"}),
        ),
        "router" => (
            json!({"candidates": [{"name": "a", "ewma_latency_ms": 90}, {"name": "b", "ewma_latency_ms": 20},
                                  {"name": "c", "circuit": "open"}]}),
            json!({"order": ["b", "a"]}),
        ),
        "recovery" => (
            json!({"failure": "Timeout", "upstream": "a", "alternatives": ["b"]}),
            json!({"action": "fallback", "upstream": "b"}),
        ),
        _ => (json!({"input": "hello"}), json!("[stub-llm stub] hello")),
    };
    let mut call = agentrouter();
    call.args(["--log-format", "json", "plugin", "call"])
        .arg(wasm)
        .args(["--input", &input.to_string()])
        .arg("--cache-dir")
        .arg(cache);
    let out = run(call, dir, "plugin call");
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(report["world"], world, "{report:#}");
    if world == "agent" {
        assert_eq!(report["output"]["output"], expected, "{report:#}");
        assert_eq!(
            report["host_calls"][0]["import"], "llm.complete",
            "{report:#}"
        );
    } else {
        assert_eq!(report["output"], expected, "{report:#}");
    }
}

#[test]
fn rust_scaffolds_of_every_world_build_and_pass_inspect() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("aot-cache");
    // One target directory for the four, seeded with the plugins' build:
    // wit-bindgen's proc-macro chain (wit-parser, wit-component, ...) for
    // the host and the wasm32 crates are then already compiled. Without
    // that build (another layout), the first scaffold compiles them.
    let target = root.path().join("target");
    let plugins_target = plugins_target_dir();
    if plugins_target.is_dir() {
        copy_tree(&plugins_target, &target);
    }
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/Cargo.lock");
    for world in WORLDS {
        let dir = scaffold(root.path(), "rust", world);
        // The versions the plugins' build compiled (a scaffold has no lock
        // of its own; cargo keeps the entries it uses and drops the rest).
        std::fs::copy(&lock, dir.join("Cargo.lock")).unwrap();
        let mut build = readme_build(&dir);
        build.env("CARGO_TARGET_DIR", &target);
        run(build, &dir, &format!("building the rust {world} scaffold"));
        let wasm = target
            .join("wasm32-wasip2/release")
            .join(format!("my_{world}.wasm"));
        check(&dir, &wasm, world, &cache);
    }
}

#[test]
fn python_scaffolds_of_every_world_build_and_pass_inspect() {
    if !have("componentize-py", "python") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("aot-cache");
    for world in WORLDS {
        let dir = scaffold(root.path(), "python", world);
        let pins = std::fs::read_to_string(dir.join("requirements.txt")).unwrap();
        let example = include_str!("../examples/python-agent/requirements.txt");
        assert!(
            example.contains(pins.trim()),
            "scaffold pins {pins} differ from the example's"
        );
        run(
            readme_build(&dir),
            &dir,
            &format!("building the python {world} scaffold"),
        );
        check(&dir, &dir.join(format!("my-{world}.wasm")), world, &cache);
    }
}

#[test]
fn js_scaffolds_of_every_world_build_and_pass_inspect() {
    if !have("node", "js") || !have("npm", "js") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("aot-cache");
    let example: Value =
        serde_json::from_str(include_str!("../examples/js-validator/package.json")).unwrap();
    let mut toolchain = std::env::var_os("AGENTROUTER_JS_TOOLCHAIN").map(PathBuf::from);
    for world in WORLDS {
        let dir = scaffold(root.path(), "js", world);
        let manifest: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("package.json")).unwrap())
                .unwrap();
        assert_eq!(
            manifest["devDependencies"], example["devDependencies"],
            "the scaffold must pin the toolchain examples/js-validator locks"
        );
        match &toolchain {
            Some(modules) => std::os::unix::fs::symlink(modules, dir.join("node_modules")).unwrap(),
            None => {
                let mut install = Command::new("npm");
                install.args(["install", "--no-audit", "--no-fund"]);
                run(install, &dir, "npm install");
                toolchain = Some(dir.join("node_modules"));
            }
        }
        let mut build = Command::new("npm");
        build.args(["run", "build"]);
        run(build, &dir, &format!("building the js {world} scaffold"));
        check(&dir, &dir.join(format!("my-{world}.wasm")), world, &cache);
    }
}
