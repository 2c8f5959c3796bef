//! `wit-c`: what the C example needs from the component-model tooling,
//! built from the crates the workspace already compiles.
//!
//! ```text
//! wit-c bindings WIT_DIR WORLD OUT_DIR   C bindings of WORLD (wit-bindgen's C generator)
//! wit-c adapter OUT.wasm                 the WASI preview1 reactor adapter of wasmtime 48
//! ```
//!
//! `examples/c-router/build.sh` runs both. The C generator is pinned to the
//! wit-bindgen release the host's SDK uses (wit-bindgen-core 0.61.1 over
//! wit-parser 0.258.3, the versions of the host's Cargo.lock); built
//! unoptimised it costs ~30 s where `cargo install wit-bindgen-cli` cost
//! ~5 minutes. Its output is what `wit-bindgen c WIT_DIR --world WORLD
//! --out-dir OUT_DIR` writes.

use std::path::Path;
use std::process::ExitCode;
use wit_bindgen_core::Files;
use wit_bindgen_core::wit_parser::Resolve;

const USAGE: &str = "usage: wit-c bindings WIT_DIR WORLD OUT_DIR | wit-c adapter OUT.wasm";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["bindings", wit, world, out] => bindings(Path::new(wit), world, Path::new(out)),
        ["adapter", out] => write(
            Path::new(out),
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        ),
        _ => Err(USAGE.to_string()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("wit-c: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the C bindings of `world` in the WIT package at `wit` into `out`:
/// `<world>.h`, `<world>.c` and `<world>_component_type.o`.
fn bindings(wit: &Path, world: &str, out: &Path) -> Result<(), String> {
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_path(wit)
        .map_err(|e| format!("{}: {e:#}", wit.display()))?;
    let world_id = resolve
        .select_world(&[package], Some(world))
        .map_err(|e| format!("{}: world {world}: {e:#}", wit.display()))?;
    let mut files = Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world_id, &mut files)
        .map_err(|e| format!("generating the C bindings of {world}: {e:#}"))?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    for (name, contents) in files.iter() {
        write(&out.join(name), contents)?;
    }
    Ok(())
}

fn write(path: &Path, contents: &[u8]) -> Result<(), String> {
    std::fs::write(path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
