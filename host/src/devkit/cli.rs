//! The `agentrouter plugin` subcommands: `inspect`, `new` and `call`.

use super::harness::{self, CallOptions};
use super::scaffold::{self, Lang};
use crate::runtime::{PluginLimits, World};
use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

/// `agentrouter plugin …`.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Show which world a component implements, its imports, exports and
    /// digest (read and validated, not compiled: instant for any size).
    Inspect {
        /// The `.wasm` component.
        file: PathBuf,
    },
    /// Write a new plugin project that builds as generated.
    New {
        /// The world the plugin implements.
        #[arg(long, value_enum)]
        world: WorldArg,
        /// The language to write it in.
        #[arg(long, value_enum, default_value_t = LangArg::Rust)]
        lang: LangArg,
        /// The plugin's name (lower-case letters, digits and `-`).
        name: String,
        /// Where to write it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Call a component's export once, in the gateway's sandbox, without
    /// the gateway; prints the answer as JSON.
    Call {
        /// The `.wasm` component.
        file: PathBuf,
        /// The export's input as JSON (`@FILE` reads a file, `-` stdin); its
        /// shape per world is in docs/authoring.md.
        #[arg(long)]
        input: String,
        /// A setting the plugin reads with `settings.get` (repeatable).
        #[arg(long = "setting", value_name = "KEY=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
        /// The slot name to run as (its kv namespace; default: the file name).
        #[arg(long)]
        name: Option<String>,
        /// Version label (default: the digest's first 12 hex digits).
        #[arg(long)]
        version: Option<String>,
        /// Keep the plugin's kv store in this directory between calls
        /// (default: a temporary store).
        #[arg(long)]
        store: Option<PathBuf>,
        /// `limits.memory_mb` (default: the gateway's default).
        #[arg(long)]
        memory_mb: Option<u32>,
        /// `limits.timeout_ms` (default: the gateway's default for the world).
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// `limits.fuel` (default: none).
        #[arg(long)]
        fuel: Option<u64>,
        /// Cache compiled components here (default: ~/.cache/agentrouter/plugin-cache).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
}

/// A world, on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum WorldArg {
    /// `agent`.
    Agent,
    /// `validator`.
    Validator,
    /// `router`.
    Router,
    /// `recovery`.
    Recovery,
}

impl From<WorldArg> for World {
    fn from(w: WorldArg) -> World {
        match w {
            WorldArg::Agent => World::Agent,
            WorldArg::Validator => World::Validator,
            WorldArg::Router => World::Router,
            WorldArg::Recovery => World::Recovery,
        }
    }
}

/// A language, on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LangArg {
    /// Rust, with the SDK.
    Rust,
    /// Python, with componentize-py.
    Python,
    /// JavaScript, with componentize-js.
    Js,
}

impl From<LangArg> for Lang {
    fn from(l: LangArg) -> Lang {
        match l {
            LangArg::Rust => Lang::Rust,
            LangArg::Python => Lang::Python,
            LangArg::Js => Lang::Js,
        }
    }
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

/// Runs one `plugin` subcommand.
pub fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::Inspect { file } => inspect_file(&file),
        PluginCommand::New {
            world,
            lang,
            name,
            dir,
        } => new_project(world.into(), lang.into(), &name, dir),
        PluginCommand::Call {
            file,
            input,
            settings,
            name,
            version,
            store,
            memory_mb,
            timeout_ms,
            fuel,
            cache_dir,
        } => {
            let input = read_input(&input)?;
            let limits =
                (memory_mb.is_some() || timeout_ms.is_some() || fuel.is_some()).then(|| {
                    let mut limits = PluginLimits::default();
                    if let Some(mb) = memory_mb {
                        limits.memory_mb = mb;
                    }
                    if let Some(ms) = timeout_ms {
                        limits.timeout_ms = ms;
                    }
                    limits.fuel = fuel;
                    limits
                });
            let options = CallOptions {
                name,
                version,
                settings: settings.into_iter().collect::<BTreeMap<_, _>>(),
                store_dir: store,
                limits,
                cache_dir: cache_dir.or_else(harness::user_cache_dir),
            };
            let report = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(harness::call(&file, &input, &options))?;
            println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `--input`: JSON text, `@FILE`, or `-` for stdin.
fn read_input(arg: &str) -> anyhow::Result<serde_json::Value> {
    let text = if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read --input from stdin")?;
        text
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read_to_string(path).with_context(|| format!("cannot read --input {arg}"))?
    } else {
        arg.to_string()
    };
    serde_json::from_str(&text).context("--input is not JSON")
}

fn new_project(
    world: World,
    lang: Lang,
    name: &str,
    dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let files = scaffold::scaffold(&dir, name, world, lang)?;
    println!(
        "created {} ({} {world} plugin, {} files)",
        dir.display(),
        lang.as_str(),
        files.len()
    );
    println!(
        "build it:   cd {} && {}",
        dir.display(),
        scaffold::build_command(name, world, lang)
    );
    println!(
        "check it:   agentrouter plugin inspect {}",
        dir.join(scaffold::artifact(name, lang)).display()
    );
    Ok(ExitCode::SUCCESS)
}

fn inspect_file(file: &PathBuf) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let info = crate::runtime::inspect::read(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    println!("file:    {}", file.display());
    println!("digest:  sha256:{}", info.digest);
    println!("size:    {} bytes", info.size);
    println!("exports: {}", info.exports.join(", "));
    println!("contract: agentrouter:plugin@{}", info.contract);
    let caps = if info.capabilities.is_empty() {
        "none".to_string()
    } else {
        info.capabilities.join(", ")
    };
    println!("capabilities: {caps}");
    for (iface, key) in info.needs_grants() {
        println!("  {iface}: needs [plugins.<slot>.{key}] in the slot's config");
    }
    println!("imports:");
    for import in &info.imports {
        println!("  {import}");
    }
    match info.world {
        Ok(world) => {
            println!("world:   {world}");
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            eprintln!("error: {}: {why}", file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}
