//! The command line: parse, set up logging, run the command, map errors to exit codes
//! (0 success, 2 usage or config error, 1 runtime failure).

mod backfill;
mod demo;
mod emulate;
mod query;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, ConfigError};
use crate::pipeline::{self, RunOptions, StartError};

/// Collect Miro Enterprise audit logs and board content logs, completely and without
/// duplicates, into a local SQLite store, and deliver them to security tools.
#[derive(Debug, Parser)]
#[command(name = "mirotrail", version, propagate_version = true)]
pub struct Cli {
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the built-in Miro emulator, collect an emulated organisation's last days into
    /// a local store, and show what happened. Touches nothing outside DIR.
    Demo(demo::DemoArgs),
    /// Start the built-in Miro emulator, collect an emulated organisation's last days into
    /// a local store, and show what happened. Touches nothing outside DIR.

    /// Collect and deliver continuously (until SIGINT/SIGTERM), or catch up once and exit.
    Run(RunArgs),
    /// Fetch history (`--since 90d`) into the store, in time slices read concurrently
    /// within `budget.backfill_share`; resumable, and allowed beside `run`.
    Backfill(backfill::BackfillArgs),
    /// Show per source the watermark, lag, events stored and last error, and per sink the
    /// backlog.
    Status(ConfigArgs),
    /// Answer a read-only SQL query on the store (tables MiroAuditLogs_CL,
    /// MiroContentLogs_CL, with the Sentinel columns).
    Query(query::QueryArgs),
    /// Run an emulator of a service mirotrail talks to, on loopback.
    Emulate(emulate::EmulateArgs),
    /// Print a deployment template: `azure` prints the ARM template (JSON) deploying the
    /// Sentinel "Miro" tables, a data collection endpoint and the two DCRs.
    Template(TemplateArgs),
}

#[derive(Debug, Args)]
struct TemplateArgs {
    #[command(subcommand)]
    target: TemplateTarget,
}

#[derive(Debug, Subcommand)]
enum TemplateTarget {
    /// ARM template for `az deployment group create` (parameters: workspaceName, location).
    Azure,
}

#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Catch up both enabled sources to now, deliver what is stored, and exit.
    #[arg(long)]
    once: bool,
}

/// An error with its exit code.
pub(crate) struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    pub(crate) fn usage(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: 2,
            error: error.into(),
        }
    }
    pub(crate) fn runtime(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: 1,
            error: error.into(),
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::usage(e)
    }
}

impl From<StartError> for Failure {
    fn from(e: StartError) -> Self {
        match e {
            StartError::Config(e) => Failure::usage(e),
            StartError::Sink { .. } => Failure::usage(e),
            other => Failure::runtime(other),
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let default_level = match cli.command {
        Command::Run(_) | Command::Emulate(_) => "info",
        // On a terminal the progress bars say it; elsewhere progress is logged.
        Command::Backfill(_) if std::io::IsTerminal::is_terminal(&std::io::stderr()) => "warn",
        Command::Backfill(_) => "info",
        _ => "warn",
    };
    init_logging(cli.log_format, default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Run(args) => run(args).await,
            Command::Backfill(args) => backfill::run(args).await,
            Command::Status(args) => status::run(args),
            Command::Query(args) => query::run(args),
            Command::Emulate(args) => emulate::run(args).await,
            Command::Template(args) => template(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub(crate) fn load_config(args: &ConfigArgs) -> Result<Config, Failure> {
    Ok(Config::load(&args.config)?)
}

/// Installs SIGINT/SIGTERM handlers that trigger a clean stop.
pub(crate) fn shutdown_on_signals() -> crate::shutdown::Shutdown {
    let (trigger, shutdown) = crate::shutdown::channel();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        trigger.trigger();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("stopping: finishing the current page");
        trigger.trigger();
    });
    shutdown
}

fn template(args: TemplateArgs) -> Result<(), Failure> {
    match args.target {
        TemplateTarget::Azure => {
            let text =
                serde_json::to_string_pretty(&crate::sink::sentinel::template::arm_template())
                    .map_err(Failure::runtime)?;
            println!("{text}");
            Ok(())
        }
    }
}

async fn run(args: RunArgs) -> Result<(), Failure> {
    let config = load_config(&args.config)?;
    let shutdown = shutdown_on_signals();
    let report = pipeline::run(
        &config,
        RunOptions {
            once: args.once,
            ..RunOptions::default()
        },
        shutdown,
    )
    .await?;
    for (source, result) in &report.sources {
        match result {
            Ok(r) => {
                tracing::info!(source = %source, new_events = r.inserted, pages = r.pages, requests = r.requests, "collection finished")
            }
            Err(e) => tracing::error!(source = %source, error = %e, "collection failed"),
        }
    }
    let failed: Vec<String> = report
        .sources
        .iter()
        .filter_map(|(s, r)| r.as_ref().err().map(|e| format!("{s}: {e}")))
        .chain(report.sinks.iter().filter_map(|(name, r)| match r {
            Err(e) => Some(format!("sink {name}: {e}")),
            Ok(d) => d.gave_up.as_ref().map(|e| format!("sink {name}: {e}")),
        }))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::runtime(anyhow::anyhow!(failed.join("\n"))))
    }
}
