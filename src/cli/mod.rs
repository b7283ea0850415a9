//! The command line: parse, set up logging, run the command, map errors to exit codes
//! (0 success, 2 usage or config error, 1 runtime failure).

mod backfill;
mod demo;
mod emulate;
mod manpage;
mod query;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, ConfigError, ConfigLocation};
use crate::pipeline::{self, RunOptions, StartError};

/// Collect Miro Enterprise audit logs and board content logs, completely and without
/// duplicates, into a local SQLite store, and deliver them to security tools.
#[derive(Debug, Parser)]
#[command(
    name = "mirotrail",
    version,
    propagate_version = true,
    after_help = "Start with `mirotrail demo` (no Miro account needed). With a real organisation: \
                  write a config with `mirotrail init` (./mirotrail.toml, read when --config is \
                  not given), run `mirotrail check`, then `mirotrail run`.\n\
                  Exit codes: 0 success, 1 runtime failure (the message says what to fix), \
                  2 usage or configuration error.\n\
                  Secrets are never taken on the command line: the Miro token comes from \
                  MIRO_TOKEN (or `miro.token_env` / `miro.token_file`)."
)]
pub struct Cli {
    /// Log format on standard error [default: text; `run` and `check` use
    /// `service.log_format` of their config when it is set]. Filter with RUST_LOG, e.g.
    /// `RUST_LOG=mirotrail=debug` or `RUST_LOG=warn`.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
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
    /// Try mirotrail without a Miro account: collect an emulated organisation.
    ///
    /// Starts the built-in Miro emulator, collects the emulated organisation's last days
    /// through the real pipeline into a local store, and shows what happened. Touches
    /// nothing outside DIR.
    Demo(demo::DemoArgs),
    /// Collect from Miro and deliver to the sinks, until SIGINT/SIGTERM (or --once).
    ///
    /// Polls each enabled source every `poll_interval`, commits each page to the store,
    /// and sends stored rows to every sink. With --once: catch up to now, deliver, exit
    /// (for cron or systemd timers). With a `[service]` section in the config it also
    /// serves /metrics (Prometheus), /healthz and /readyz, and logs in
    /// `service.log_format` unless --log-format says otherwise. Run `mirotrail check` first.
    Run(RunArgs),
    /// Check the config against Miro and every sink, without collecting or writing.
    ///
    /// Asks Miro about the token (scopes, team, organization, `miro.org_id`), makes one
    /// one-item request per enabled source, and for Sentinel sinks gets an Entra token and
    /// sends an empty batch to each DCR stream. Prints one line per check: `ok`, `problem`
    /// with how to fix it, or `not verified` with why. Exit 1 if any problem, 2 if the
    /// config file is invalid.
    Check(ConfigArgs),
    /// Fetch history (`--since 90d`) into the store, resumably, beside `run` if need be.
    ///
    /// Cuts the span into time slices read concurrently within `budget.backfill_share`
    /// of the token's credits; each page is committed with its slice's progress, so an
    /// interrupted backfill resumes where it stopped. Rows already collected by `run` are
    /// not stored twice.
    Backfill(backfill::BackfillArgs),
    /// Show where collection and delivery stand, from the store alone.
    ///
    /// Per source: watermark, lag, events stored, last success and last error; per sink:
    /// rows delivered and backlog. No network; works while `run` is running.
    Status(ConfigArgs),
    /// Answer a read-only SQL query on the store (tables MiroAuditLogs_CL,
    /// MiroContentLogs_CL, with the Sentinel columns).
    Query(query::QueryArgs),
    /// Run an emulator of a service mirotrail talks to, on loopback.
    Emulate(emulate::EmulateArgs),
    /// Print a deployment template: `azure` prints the ARM template (JSON) deploying the
    /// Sentinel "Miro" tables, a data collection endpoint and the two DCRs.
    Template(TemplateArgs),
    /// Print a shell completion script, e.g.
    /// `mirotrail completions bash > /etc/bash_completion.d/mirotrail`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write a starter config: every key with its default (commented out) and why.
    ///
    /// Writes `mirotrail.toml` (or --path, or the file named by MIROTRAIL_CONFIG), which
    /// `mirotrail check` then reads without --config. Refuses to overwrite an existing
    /// file unless --force. The file holds no secret: the Miro token stays in MIRO_TOKEN.
    Init(InitArgs),
    /// Print the manual page (roff), e.g. `mirotrail manpage > /usr/share/man/man1/mirotrail.1`.
    Manpage,
}

#[derive(Debug, Args)]
struct InitArgs {
    /// Where to write the config [default: $MIROTRAIL_CONFIG if set, else ./mirotrail.toml].
    #[arg(long, value_name = "FILE")]
    path: Option<PathBuf>,
    /// Overwrite the file if it exists.
    #[arg(long)]
    force: bool,
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
    /// The configuration file (TOML; relative paths in it are relative to its folder)
    /// [default: $MIROTRAIL_CONFIG if set, else ./mirotrail.toml].
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ConfigArgs {
    /// The config file to use: `--config`, else `MIROTRAIL_CONFIG`, else `./mirotrail.toml`.
    fn location(&self) -> ConfigLocation {
        ConfigLocation::resolve(self.config.clone())
    }
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
    let format = cli.log_format.unwrap_or_else(|| {
        // The config is read again (and its errors reported) by the command itself.
        let location = match &cli.command {
            Command::Run(args) => Some(args.config.location()),
            Command::Check(args) => Some(args.location()),
            _ => None,
        };
        match location
            .and_then(|l| Config::load_from(&l).ok())
            .and_then(|c| c.service.log_format)
        {
            Some(crate::config::LogFormat::Json) => LogFormat::Json,
            _ => LogFormat::Text,
        }
    });
    init_logging(format, default_level);
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
            Command::Check(args) => check(args).await,
            Command::Backfill(args) => backfill::run(args).await,
            Command::Status(args) => status::run(args),
            Command::Query(args) => query::run(args),
            Command::Emulate(args) => emulate::run(args).await,
            Command::Template(args) => template(args),
            Command::Completions { shell } => {
                let mut cmd = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut cmd, "mirotrail", &mut std::io::stdout());
                Ok(())
            }
            Command::Manpage => manpage::render(&mut std::io::stdout()).map_err(Failure::runtime),
            Command::Init(args) => init(args),
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
    use std::io::IsTerminal;
    // Colours only on a terminal: journald and log shippers get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub(crate) fn load_config(args: &ConfigArgs) -> Result<Config, Failure> {
    Ok(Config::load_from(&args.location())?)
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

async fn check(args: ConfigArgs) -> Result<(), Failure> {
    use crate::check::Verdict;
    let config = load_config(&args)?;
    let report = crate::check::run_checks(&config).await;
    for line in &report.lines {
        println!("{line}");
    }
    let problems = report.count(Verdict::Problem);
    println!(
        "{} ok, {} problem(s), {} not verified",
        report.count(Verdict::Ok),
        problems,
        report.count(Verdict::NotVerified)
    );
    if problems == 0 {
        Ok(())
    } else {
        Err(Failure::runtime(anyhow::anyhow!(
            "{problems} problem(s) found; each `problem` line says what to fix"
        )))
    }
}

fn init(args: InitArgs) -> Result<(), Failure> {
    use std::io::Write;
    let path = ConfigLocation::resolve(args.path).path;
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if args.force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Failure::usage(anyhow::anyhow!(
            "{} already exists; keep it, choose another --path, or pass --force to overwrite it",
            path.display()
        )),
        _ => Failure::runtime(anyhow::anyhow!("cannot write {}: {e}", path.display())),
    })?;
    file.write_all(crate::config::keys::starter_config().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Failure::runtime(anyhow::anyhow!("cannot write {}: {e}", path.display())))?;
    let config_flag = if path == std::path::Path::new(crate::config::DEFAULT_CONFIG_FILE) {
        String::new()
    } else {
        format!(" --config {}", path.display())
    };
    println!(
        "wrote {}: every key with its default, commented out. Next:\n  \
         export MIRO_TOKEN=...   # the token from Miro (Enterprise integrations > SIEM)\n  \
         mirotrail check{config_flag}\n  \
         mirotrail run{config_flag} --once",
        path.display()
    );
    Ok(())
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
        // A failure is logged by the collector and ends the run's error message below.
        if let Ok(r) = result {
            tracing::info!(source = %source, new_events = r.inserted, pages = r.pages, requests = r.requests, "collection finished")
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
