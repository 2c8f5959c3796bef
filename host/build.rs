//! Builds the first-party plugins (and the test fixtures) for wasm32-wasip2
//! and generates `builtin_plugins.rs`, which embeds the first-party ones.
//!
//! Plugins live in their own cargo workspace (`plugins/`) and are built one
//! world at a time: the SDK links the type information of every enabled
//! world into a component, so feature unification across worlds would make
//! every plugin claim them all. The nested cargo gets its own target
//! directory, next to the outer profile dirs, so it never waits on the outer
//! build's lock and is shared by debug, release and clippy builds.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const WORLDS: [&str; 4] = ["agent", "validator", "router", "recovery"];

struct PluginCrate {
    name: String,
    /// `None` for fixtures that do not use the SDK.
    world: Option<&'static str>,
    fixture: bool,
    is_bin: bool,
}

fn main() -> ExitCode {
    if let Err(message) = ensure_wasm_target() {
        // One line a newcomer can act on; a panic would bury it in a backtrace.
        eprintln!("error: {message}");
        return ExitCode::FAILURE;
    }
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("host/ lives in the workspace root")
        .to_path_buf();
    let plugins = root.join("plugins");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is <target>[/<triple>]/<profile>/build/<pkg>-<hash>/out.
    let wasm_target = out_dir
        .ancestors()
        .nth(4)
        .unwrap_or(&out_dir)
        .join("wasm-plugins");

    for path in [
        "wit",
        "sdk/src",
        "sdk/Cargo.toml",
        "plugins/Cargo.toml",
        "plugins/Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    let crates = discover(&plugins);
    for c in &crates {
        let dir = crate_dir(&plugins, c);
        println!("cargo:rerun-if-changed={}", dir.join("src").display());
        println!(
            "cargo:rerun-if-changed={}",
            dir.join("Cargo.toml").display()
        );
    }

    let mut groups: Vec<(Option<&str>, Vec<&PluginCrate>)> = Vec::new();
    for c in &crates {
        match groups.iter_mut().find(|(w, _)| *w == c.world) {
            Some((_, members)) => members.push(c),
            None => groups.push((c.world, vec![c])),
        }
    }
    for (world, members) in &groups {
        // Crates without the SDK may pull in anything; build them alone.
        let batches: Vec<Vec<&PluginCrate>> = match world {
            Some(_) => vec![members.clone()],
            None => members.iter().map(|c| vec![*c]).collect(),
        };
        for batch in batches {
            build(&plugins, &wasm_target, &batch);
        }
    }

    let release = wasm_target.join("wasm32-wasip2").join("release");
    let mut generated = String::from("/// First-party plugins: (name, world, component bytes).\n");
    generated.push_str("pub(crate) const EMBEDDED: &[(&str, &str, &[u8])] = &[\n");
    for c in crates.iter().filter(|c| !c.fixture) {
        let wasm = release.join(artifact(c));
        let world = c.world.expect("first-party plugins use the SDK");
        writeln!(
            generated,
            "    ({:?}, {:?}, include_bytes!({:?})),",
            c.name,
            world,
            wasm.display().to_string()
        )
        .unwrap();
    }
    generated.push_str("];\n");
    writeln!(generated, "/// Directory holding the compiled test fixtures.\npub(crate) const FIXTURE_DIR: &str = {:?};", release.display().to_string()).unwrap();
    std::fs::write(out_dir.join("builtin_plugins.rs"), generated)
        .expect("write builtin_plugins.rs");
    ExitCode::SUCCESS
}

/// The target the plugins are compiled for.
const WASM_TARGET: &str = "wasm32-wasip2";

/// Makes sure the toolchain running this build can compile for wasm32-wasip2,
/// adding the target with rustup when it is missing.
///
/// `rust-toolchain.toml` lists the target, but rustup installs listed targets
/// only together with the toolchain: with the toolchain already present (and
/// `RUSTUP_AUTO_INSTALL=0`) the target stays missing. Left to the nested
/// plugin build, that surfaces as "can't find crate for core" after the
/// nested cargo has spent minutes competing with the host build for the
/// jobserver. Checking here costs one `rustc --print` and fails (or heals)
/// before anything else is compiled.
fn ensure_wasm_target() -> Result<(), String> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output()
        .map_err(|e| format!("could not run `{rustc} --print target-libdir`: {e}"))?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&libdir.stdout).trim());
    if has_core(&libdir) {
        return Ok(());
    }
    // The proxy that started cargo names the toolchain; without it, rustup
    // resolves rust-toolchain.toml from the working directory as cargo did.
    let toolchain = env::var("RUSTUP_TOOLCHAIN").ok();
    let exact = match &toolchain {
        Some(toolchain) => format!("rustup target add {WASM_TARGET} --toolchain {toolchain}"),
        None => format!("rustup target add {WASM_TARGET}"),
    };
    if Command::new("rustup").arg("--version").output().is_err() {
        // <sysroot>/lib/rustlib/<target>/lib
        let sysroot = libdir.ancestors().nth(4).unwrap_or(&libdir).display();
        return Err(format!(
            "the {WASM_TARGET} target is not installed for the Rust toolchain at {sysroot}, and rustup is not on PATH to add it: install that target's standard library (with rustup: `{exact}`), then build again"
        ));
    }
    println!(
        "cargo:warning=the {WASM_TARGET} target is missing; running `{exact}` to build the plugins"
    );
    eprintln!("agentrouter build: running `{exact}`");
    let mut add = Command::new("rustup");
    add.args(["target", "add", WASM_TARGET]);
    if let Some(toolchain) = &toolchain {
        add.args(["--toolchain", toolchain]);
    }
    let added = add.status();
    // A concurrent build (tests and clippy at once) may have added it meanwhile.
    if has_core(&libdir) {
        return Ok(());
    }
    Err(match added {
        Err(e) => format!("could not run `{exact}`: {e}; run it by hand, then build again"),
        Ok(status) => format!("`{exact}` failed ({status}); run it by hand, then build again"),
    })
}

/// Whether `libdir` holds the target's standard library.
fn has_core(libdir: &Path) -> bool {
    std::fs::read_dir(libdir).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
    })
}

fn crate_dir(plugins: &Path, c: &PluginCrate) -> PathBuf {
    if c.fixture {
        plugins.join("fixtures").join(&c.name)
    } else {
        plugins.join(&c.name)
    }
}

fn artifact(c: &PluginCrate) -> String {
    if c.is_bin {
        format!("{}.wasm", c.name)
    } else {
        format!("{}.wasm", c.name.replace('-', "_"))
    }
}

/// Finds plugin crates: `plugins/<name>/` and `plugins/fixtures/<name>/`.
fn discover(plugins: &Path) -> Vec<PluginCrate> {
    let mut crates = Vec::new();
    for (dir, fixture) in [
        (plugins.to_path_buf(), false),
        (plugins.join("fixtures"), true),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("Cargo.toml").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let manifest =
                std::fs::read_to_string(dir.join(&name).join("Cargo.toml")).unwrap_or_default();
            let world = WORLDS
                .into_iter()
                .find(|w| manifest.contains(&format!("features = [\"{w}\"]")));
            let is_bin = !manifest.contains("cdylib");
            crates.push(PluginCrate {
                name,
                world,
                fixture,
                is_bin,
            });
        }
    }
    crates
}

fn build(plugins: &Path, target_dir: &Path, batch: &[&PluginCrate]) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--target")
        .arg("wasm32-wasip2")
        .arg("--manifest-path")
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    for c in batch {
        cmd.arg("-p").arg(&c.name);
    }
    // The outer build's settings are not the plugins' (a clippy wrapper,
    // host RUSTFLAGS, a target dir that is locked by the outer build).
    for var in [
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let names: Vec<&str> = batch.iter().map(|c| c.name.as_str()).collect();
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run cargo to build plugins {names:?}: {e}"));
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        panic!("building plugins {names:?} for wasm32-wasip2 failed:\n{stderr}");
    }
}
