//! `agentrouter store backup FILE` / `restore FILE`: see the library's
//! `backup` module for what a backup holds, and `docs/operations.md` for
//! the disaster-recovery runbook.

use agentrouter::backup::{self, Backup};
use agentrouter::config::Config;
use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

/// `agentrouter store …`.
#[derive(Subcommand)]
pub enum StoreCommand {
    /// Write the state of a config's store (sled, or the cluster's Redis
    /// with [cluster]) to FILE: API keys, rollouts and their components,
    /// spend; the response cache with --cache. Stop the gateway first when
    /// it uses sled; a cluster keeps serving.
    Backup {
        /// The gateway's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// Also the cached answers.
        #[arg(long)]
        cache: bool,
        /// The backup file to write.
        file: PathBuf,
    },
    /// Write FILE's state into a config's store (sled, or the cluster's
    /// Redis with [cluster]): what it holds is overwritten, the rest kept.
    Restore {
        /// The gateway's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// The backup file to read.
        file: PathBuf,
    },
}

/// Runs a `store` subcommand.
pub async fn run(command: StoreCommand) -> anyhow::Result<ExitCode> {
    match command {
        StoreCommand::Backup {
            config,
            cache,
            file,
        } => {
            let config = Config::from_file(&config)?;
            let taken = backup::backup(&config, cache).await?;
            let text = serde_json::to_vec_pretty(&taken)?;
            // Written whole to a neighbour, then renamed: a backup that was
            // cut short never replaces a good one.
            let partial = file.with_extension("partial");
            std::fs::write(&partial, &text)
                .with_context(|| format!("cannot write {}", partial.display()))?;
            std::fs::rename(&partial, &file)
                .with_context(|| format!("cannot write {}", file.display()))?;
            eprintln!(
                "backed up {} keys, {} rollout records, {} components, {} spend entries{} from {} to {}",
                taken.keys.len(),
                taken.rollouts.len(),
                taken.components.len(),
                taken.spend.len(),
                taken
                    .cache
                    .as_ref()
                    .map(|c| format!(", {} cached answers", c.len()))
                    .unwrap_or_default(),
                taken.source,
                file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Restore { config, file } => {
            let config = Config::from_file(&config)?;
            let text =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let taken: Backup = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not an agentrouter backup", file.display()))?;
            let report = backup::restore(&config, &taken).await?;
            eprintln!(
                "restored {} keys, {} rollout records, {} components, {} spend entries, {} cached answers into {}",
                report.keys,
                report.rollouts,
                report.components,
                report.spend,
                report.cache,
                report.target
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
