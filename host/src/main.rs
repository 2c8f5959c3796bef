//! The `agentrouter` command line.

mod cli;

use agentrouter::app::App;
use agentrouter::auth::{KeyPolicy, KeyStore};
use agentrouter::clock::rfc3339;
use agentrouter::config::{self, Config, TelemetryConfig};
use agentrouter::devkit::{self, PluginCommand};
use agentrouter::store::Store;
use agentrouter::telemetry::{self, TelemetryGuard, traces::TelemetryError};
use agentrouter::upstream::sim::{SimSettings, Simulator};
use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

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
    /// Run the gateway (without --config: the embedded quickstart).
    Serve {
        /// The TOML config file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address, overriding `server.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Reload a file plugin (`source = "path.wasm"`) when it changes on
        /// disk: the development loop.
        #[arg(long)]
        watch: bool,
    },
    /// Validate a config and type-check every plugin against its world.
    Check {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the simulated OpenAI-compatible upstream on its own.
    Sim {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: SocketAddr,
        /// Models to serve (comma-separated).
        #[arg(long, default_value = "usf-mini,usf-mini-x1", value_delimiter = ',')]
        models: Vec<String>,
        /// Base latency per request.
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
        /// Random extra latency, up to this much.
        #[arg(long, default_value_t = 10)]
        jitter_ms: u64,
        /// Fraction of requests answered with HTTP 500.
        #[arg(long, default_value_t = 0.0)]
        fail_rate: f64,
        /// Fraction of requests answered with HTTP 429.
        #[arg(long, default_value_t = 0.0)]
        rate_limit_rate: f64,
        /// Fraction of requests answered with a malformed body.
        #[arg(long, default_value_t = 0.0)]
        malformed_rate: f64,
        /// Fraction of requests delayed by an extra `--spike-ms`.
        #[arg(long, default_value_t = 0.0)]
        spike_rate: f64,
        /// Extra latency of a spike, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        spike_ms: u64,
        /// Fraction of requests never answered.
        #[arg(long, default_value_t = 0.0)]
        hang_rate: f64,
        /// Seed for a deterministic sequence of outcomes.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Work with plugin components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Manage API keys in the store of a config. sled admits one process at
    /// a time: run these while the gateway using that store is stopped.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Back up and restore a config's store (keys, rollouts, spend, cache):
    /// the disaster-recovery commands.
    Store {
        #[command(subcommand)]
        command: cli::store::StoreCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print its secret (shown once; only its hash is stored).
    Create {
        /// The gateway's TOML config (its store holds the keys).
        #[arg(long)]
        config: PathBuf,
        /// Key name: the client identity in logs, metrics and limits.
        name: String,
        /// Models the key may use (comma-separated; default: all).
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Agents the key may use (comma-separated; default: all).
        #[arg(long, value_delimiter = ',')]
        agents: Option<Vec<String>>,
        /// Sustained requests per second.
        #[arg(long)]
        requests_per_s: Option<f64>,
        /// Requests allowed at once above the sustained rate.
        #[arg(long)]
        burst: Option<u32>,
        /// Tokens (prompt + completion) per minute.
        #[arg(long)]
        tokens_per_min: Option<u64>,
        /// Spend allowed per UTC day, USD.
        #[arg(long)]
        daily_budget_usd: Option<f64>,
    },
    /// List keys (config and store) with their status.
    List {
        /// The gateway's TOML config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Revoke a key: refused from now on.
    Revoke {
        /// The gateway's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// Key name.
        name: String,
    },
    /// Give a key a new secret; the old one keeps working for the grace period.
    Rotate {
        /// The gateway's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// Key name.
        name: String,
        /// How long the old secret keeps working, e.g. `90s`, `30m`, `1h`, `2d`
        /// (default: `auth.rotation_grace_s`).
        #[arg(long, value_parser = parse_duration)]
        grace: Option<Duration>,
    },
}

/// `500ms`, `90s`, `30m`, `1h`, `2d`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 30m, 1h or 2d"))?;
    let ms = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use ms, s, m, h or d)"
            ));
        }
    };
    Ok(Duration::from_millis(n.saturating_mul(ms)))
}

impl From<LogFormat> for telemetry::LogFormat {
    fn from(format: LogFormat) -> Self {
        match format {
            LogFormat::Json => telemetry::LogFormat::Json,
            LogFormat::Pretty => telemetry::LogFormat::Pretty,
        }
    }
}

/// Logs without trace export, for the commands that serve no requests
/// (no exporter, so no runtime is needed yet).
fn init_logging(format: LogFormat) -> Result<TelemetryGuard, TelemetryError> {
    telemetry::traces::init(format.into(), &TelemetryConfig::default())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.log_format;
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            watch,
        } => serve_command(config, listen, watch, format),
        Command::Check { config } => run_async(async move {
            let _logs = init_logging(format)?;
            check(config).await
        }),
        Command::Sim {
            listen,
            models,
            latency_ms,
            jitter_ms,
            fail_rate,
            rate_limit_rate,
            malformed_rate,
            spike_rate,
            spike_ms,
            hang_rate,
            seed,
        } => {
            let settings = SimSettings {
                latency_ms,
                jitter_ms,
                fail_rate,
                rate_limit_rate,
                malformed_rate,
                spike_rate,
                spike_ms,
                hang_rate,
                seed,
                ..Default::default()
            };
            run_async(async move {
                let _logs = init_logging(format)?;
                sim(listen, models, settings).await
            })
        }
        Command::Plugin { command } => init_logging(format)
            .map_err(Into::into)
            .and_then(|_logs| devkit::cli::run(command)),
        Command::Keys { command } => init_logging(format)
            .map_err(Into::into)
            .and_then(|_logs| keys(command)),
        Command::Store { command } => run_async(async move {
            let _logs = init_logging(format)?;
            cli::store::run(command).await
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes as one line, each cause once: a cause whose text
/// an outer message already quotes is not repeated.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

/// Binds `addr`, saying what to do when another process holds it.
async fn listen(addr: SocketAddr, setting: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "cannot listen on {addr}: the address is already in use (is another agentrouter running?); stop that process, or choose another address with {setting}"
            )
        } else {
            anyhow::anyhow!("cannot listen on {addr}: {e}")
        }
    })
}

fn run_async(
    fut: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// `serve`: the config is read first, because its `[telemetry]` table
/// decides where traces go; the subscriber (and its exporter) lives until
/// the runtime has stopped serving, so queued spans are flushed on exit.
fn serve_command(
    path: Option<PathBuf>,
    listen: Option<SocketAddr>,
    watch: bool,
    format: LogFormat,
) -> anyhow::Result<ExitCode> {
    let config = match &path {
        Some(path) if !path.exists() => anyhow::bail!(
            "{}: no such config file; pass an existing file, or omit --config to run the embedded quickstart",
            path.display()
        ),
        Some(path) => Config::from_file(path)?,
        None => Config::embedded_quickstart(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let telemetry = runtime.block_on(async {
        telemetry::traces::init_serving(format.into(), &config.startup.telemetry)
    })?;
    if path.is_none() {
        tracing::info!(
            "no --config given: running the embedded quickstart (examples/quickstart.toml)"
        );
    }
    if let Some(endpoint) = &config.startup.telemetry.otlp_endpoint {
        tracing::info!(%endpoint, sample_rate = config.startup.telemetry.sample_rate, "exporting traces over OTLP/HTTP");
    }
    let result = runtime.block_on(serve(config, listen, watch));
    // Flush spans while the runtime that carries the exports still runs.
    drop(telemetry);
    result
}

async fn serve(
    config: Config,
    listen: Option<SocketAddr>,
    watch: bool,
) -> anyhow::Result<ExitCode> {
    let app = App::build(&config).await?;
    if config.reloadable.admin.token.is_none() {
        tracing::info!("admin API disabled: set [admin] token to enable hot swap and rollouts");
    }
    let _watch = if watch {
        let watch = app.watch().context("cannot watch plugin files")?;
        if watch.files.is_empty() {
            tracing::warn!("--watch: no plugin is loaded from a .wasm file, nothing to watch");
        }
        Some(watch)
    } else {
        None
    };
    let addr = listen.unwrap_or(config.startup.server.listen);
    let listener = self::listen(addr, "--listen or [server] listen").await?;
    tracing::info!(addr = %listener.local_addr()?, models = ?app.pipeline().models(), "agentrouter listening");
    app.serve(listener, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn check(path: PathBuf) -> anyhow::Result<ExitCode> {
    match config::check(&path).await {
        Ok(report) => {
            println!("{}: ok", path.display());
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!("{}: {} error(s)", path.display(), errors.len());
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn sim(
    listen: SocketAddr,
    models: Vec<String>,
    settings: SimSettings,
) -> anyhow::Result<ExitCode> {
    let listener = self::listen(listen, "--listen").await?;
    tracing::info!(addr = %listener.local_addr()?, ?models, "simulated upstream listening");
    let sim = Arc::new(Simulator::new(settings));
    agentrouter::upstream::sim_server::serve(listener, sim, models, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// The config and the key store of its gateway.
fn key_store(path: &std::path::Path) -> anyhow::Result<(Config, KeyStore)> {
    let config = Config::from_file(path)?;
    let dir = config.store_path();
    // A store held by a running gateway is refused with the reason.
    let store = Store::open(&dir)?;
    Ok((config, KeyStore::new(store)))
}

fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create {
            config,
            name,
            models,
            agents,
            requests_per_s,
            burst,
            tokens_per_min,
            daily_budget_usd,
        } => {
            let (config, store) = key_store(&config)?;
            if config.startup.auth.keys.iter().any(|k| k.name == name) {
                anyhow::bail!("key `{name}` is declared in the config file ([[auth.keys]])");
            }
            let known: Vec<String> = config
                .reloadable
                .upstreams
                .values()
                .map(|u| u.model.clone())
                .collect();
            for m in models.iter().flatten() {
                anyhow::ensure!(known.contains(m), "--models: no model `{m}` is configured");
            }
            let agent_names: Vec<&str> = config.agents().collect();
            for a in agents.iter().flatten() {
                anyhow::ensure!(
                    agent_names.contains(&a.as_str()),
                    "--agents: no agent `{a}` is configured"
                );
            }
            if let Some(rate) = requests_per_s {
                anyhow::ensure!(
                    rate.is_finite() && rate > 0.0,
                    "--requests-per-s must be > 0"
                );
            }
            anyhow::ensure!(burst != Some(0), "--burst must be at least 1");
            anyhow::ensure!(
                burst.is_none() || requests_per_s.is_some(),
                "--burst needs --requests-per-s"
            );
            anyhow::ensure!(
                tokens_per_min != Some(0),
                "--tokens-per-min must be positive"
            );
            if let Some(b) = daily_budget_usd {
                anyhow::ensure!(b.is_finite() && b >= 0.0, "--daily-budget-usd must be >= 0");
            }
            let policy = KeyPolicy {
                models,
                agents,
                requests_per_s,
                burst,
                tokens_per_min,
                daily_budget_usd,
            };
            let (record, secret) = store.create(&name, policy)?;
            eprintln!(
                "created key `{}`; its secret is shown once, store it now:",
                record.name
            );
            println!("{secret}");
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List { config } => {
            let (config, store) = key_store(&config)?;
            let now_ms = agentrouter::clock::unix_ms();
            let row = |name: &str, source: &str, status: &str, created: &str, policy: &str| {
                println!("{name:<24} {source:<7} {status:<44} {created:<22} {policy}");
            };
            row("NAME", "SOURCE", "STATUS", "CREATED", "POLICY");
            for k in &config.startup.auth.keys {
                row(&k.name, "config", "active", "-", "(see the config file)");
            }
            for k in store.list()? {
                let status = match (&k.revoked_at_ms, &k.previous) {
                    (Some(at), _) => format!("revoked {}", rfc3339(at / 1000)),
                    (None, Some(p)) if p.valid_until_ms > now_ms => {
                        format!(
                            "active (old secret until {})",
                            rfc3339(p.valid_until_ms / 1000)
                        )
                    }
                    _ => "active".to_string(),
                };
                let policy = serde_json::to_string(&k.policy).unwrap_or_default();
                row(
                    &k.name,
                    "store",
                    &status,
                    &rfc3339(k.created_at_ms / 1000),
                    &policy,
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { config, name } => {
            let (config, store) = key_store(&config)?;
            if config.startup.auth.keys.iter().any(|k| k.name == name) {
                anyhow::bail!(
                    "key `{name}` is declared in the config file ([[auth.keys]]); remove it there"
                );
            }
            store.revoke(&name)?;
            println!("revoked key `{name}`");
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Rotate {
            config,
            name,
            grace,
        } => {
            let (config, store) = key_store(&config)?;
            if config.startup.auth.keys.iter().any(|k| k.name == name) {
                anyhow::bail!(
                    "key `{name}` is declared in the config file ([[auth.keys]]); change its secret there"
                );
            }
            let grace = grace.unwrap_or(Duration::from_secs(config.startup.auth.rotation_grace_s));
            let (_, secret) = store.rotate(&name, grace)?;
            eprintln!(
                "rotated key `{name}`; the old secret works for {}s more. The new secret is shown once:",
                grace.as_secs()
            );
            println!("{secret}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
