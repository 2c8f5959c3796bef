//! The `agentrouter` command line.

use agentrouter::runtime::{self, RuntimeSettings, inspect};
use agentrouter::store::Store;
use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// AgentRouter: a production host for multi-agent AI systems.
#[derive(Parser)]
#[command(name = "agentrouter", version, about)]
struct Cli {
    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Json, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Pretty,
}

#[derive(Subcommand)]
enum Command {
    /// Work with plugin components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Show which world a component implements, its imports, exports and digest.
    Inspect {
        /// The `.wasm` component.
        file: PathBuf,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Plugin {
            command: PluginCommand::Inspect { file },
        } => plugin_inspect(&file),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn plugin_inspect(file: &PathBuf) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let kv = Arc::new(Store::temporary()?);
    let rt = runtime::Runtime::new(&RuntimeSettings::default(), kv)
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let info = inspect::inspect(rt.engine(), &bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    println!("file:    {}", file.display());
    println!("digest:  sha256:{}", info.digest);
    println!("size:    {} bytes", info.size);
    println!("exports: {}", info.exports.join(", "));
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
