//! The command line: parse, set up logging, run the command, map errors to exit codes
//! (0 success, 2 usage or config error, 1 runtime failure).

mod auth;
mod backfill;
mod deadletter;
mod demo;
mod emulate;
mod manpage;
mod output;
mod query;
mod report;
mod rules;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError, ConfigLocation, LogFormat};
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
    /// rows delivered and pending. No network; works while `run` is running.
    Status(status::StatusArgs),
    /// Answer a read-only SQL query on the store (tables MiroAuditLogs_CL,
    /// MiroContentLogs_CL, with the Sentinel columns, and MiroAiInteractionLogs_CL).
    Query(query::QueryArgs),
    /// Write an HTML report of the store's last days (`--since 7d --out report.html`).
    ///
    /// One self-contained file (no network, no script): audit events over time by
    /// category, sign-in results and methods, top actors and IP addresses, admin changes,
    /// board content activity, and the alerts of the detection rules. The same views as
    /// the Sentinel workbook (`mirotrail template workbook`). Reads the store only.
    Report(report::ReportArgs),
    /// List the rows a sink set aside (its destination will never accept them as they
    /// are), or queue them for delivery again after fixing the cause.
    ///
    /// `deadletter list --config F [--sink S] [-f table|csv|json]`;
    /// `deadletter retry --config F [--sink S] (--id N ... | --all)`. Works while `run` is
    /// running. Stored rows are never deleted by this.
    Deadletter(deadletter::DeadLetterArgs),
    /// Run the detection rules over the store's history (a retro-hunt) and print the alerts.
    ///
    /// `detect --since 30d`: every enabled rule (with the config's `[detect]` overrides)
    /// over the last 30 days. Read-only unless --write, which stores the alerts as `run`
    /// would (once per rule, group and window).
    Detect(rules::DetectArgs),
    /// The detection rules: `list`, `show NAME`, `test [NAME]`, `coverage` (for your
    /// store), `export sentinel --out DIR`.
    Rules(rules::RulesArgs),
    /// Obtain a refresh token for expiring Miro tokens (`auth login`).
    Auth(auth::AuthArgs),
    /// Run an emulator of a service mirotrail talks to, on loopback.
    Emulate(emulate::EmulateArgs),
    /// Print a deployment template: `azure` prints the ARM template (JSON) deploying the
    /// Sentinel "Miro" tables, a data collection endpoint, the two DCRs, the ASIM parsers
    /// and the workbook; `workbook` prints the workbook's content alone; `elasticsearch` prints
    /// the index template of the `elasticsearch` sink's default data streams.
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
    /// The Sentinel workbook (JSON, as the workbook editor's Advanced editor shows it).
    Workbook,
    /// Elasticsearch index template for the default data streams (`logs-miro.*-*`), the
    /// body of `PUT _index_template/logs-miro`.
    Elasticsearch,
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
    /// With --once: how long a sink may keep failing without delivering a row before the
    /// run gives up on it and exits 1 naming its backlog (the rows wait in the store for
    /// the next run). A permanent error (a refused role, a closed pipe) gives up at once.
    #[arg(long, value_name = "DURATION", requires = "once", default_value = "1m", value_parser = parse_retry_for)]
    retry_for: std::time::Duration,
}

fn parse_retry_for(text: &str) -> Result<std::time::Duration, String> {
    crate::config::parse_duration(text).map_err(|_| {
        format!("`{text}` is not a duration; write it with a unit, like \"30s\" or \"5m\"")
    })
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
    /// The command was stopped by `signal` before it finished.
    pub(crate) fn interrupted(signal: Signal, error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: signal.exit_code(),
            error: error.into(),
        }
    }
    /// Standard output was closed by its reader (`| head -1`): the command stops
    /// printing and ends quietly, with success.
    pub(crate) fn stdout_closed() -> Self {
        Failure {
            code: 0,
            error: anyhow::anyhow!("standard output was closed"),
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
        location
            .and_then(|l| Config::load_from(&l).ok())
            .and_then(|c| c.service.log_format)
            .unwrap_or(LogFormat::Text)
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
            Command::Report(args) => report::run(args),
            Command::Deadletter(args) => deadletter::run(args),
            Command::Detect(args) => rules::run_detect(args),
            Command::Rules(args) => rules::run(args),
            Command::Emulate(args) => emulate::run(args).await,
            Command::Auth(args) => auth::run(args).await,
            Command::Template(args) => template(args),
            Command::Completions { shell } => {
                let mut cmd = <Cli as clap::CommandFactory>::command();
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut cmd, "mirotrail", &mut script);
                output::print(&String::from_utf8_lossy(&script))
            }
            Command::Manpage => {
                let mut page = Vec::new();
                manpage::render(&mut page).map_err(Failure::runtime)?;
                output::print(&String::from_utf8_lossy(&page))
            }
            Command::Init(args) => init(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed standard output (`| head -1`) ends the command quietly.
        Err(f) if f.code == 0 => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

/// Crates whose DEBUG and TRACE lines may show secrets (the AWS SDK's signing and
/// request logs); whatever `RUST_LOG` asks, they log from INFO up.
const SILENCED_BELOW_INFO: [&str; 8] = [
    "aws_sigv4",
    "aws_runtime",
    "aws_config",
    "aws_credential_types",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http_client",
    "aws_sdk_s3",
];

fn init_logging(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // The AWS SDK (the S3 sink) logs requests being signed below INFO; its current
    // versions redact them, this keeps a future one from printing a session token.
    for target in SILENCED_BELOW_INFO {
        filter = filter.add_directive(format!("{target}=info").parse().expect("a directive"));
    }
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

/// The signal that stopped the command (2 = SIGINT, 15 = SIGTERM; 0 = none yet).
static STOP_SIGNAL: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// The signal that triggered the stop, if one did.
pub(crate) fn stop_signal() -> Option<Signal> {
    match STOP_SIGNAL.load(std::sync::atomic::Ordering::Acquire) {
        2 => Some(Signal::Interrupt),
        15 => Some(Signal::Terminate),
        _ => None,
    }
}

/// A stop request from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Signal {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }

    /// The shell convention for a command ended by this signal: 128 + its number.
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }
}

/// Installs SIGINT/SIGTERM handlers that trigger a clean stop (and record which signal
/// it was, see `stop_signal`).
pub(crate) fn shutdown_on_signals() -> crate::shutdown::Shutdown {
    use std::sync::atomic::Ordering;
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
                        STOP_SIGNAL.store(2, Ordering::Release);
                        trigger.trigger();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => STOP_SIGNAL.store(2, Ordering::Release),
                _ = term.recv() => STOP_SIGNAL.store(15, Ordering::Release),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
            STOP_SIGNAL.store(2, Ordering::Release);
        }
        tracing::info!("stopping: finishing the current page");
        trigger.trigger();
    });
    shutdown
}

async fn check(args: ConfigArgs) -> Result<(), Failure> {
    use crate::check::Verdict;
    let config = load_config(&args)?;
    let report = crate::check::run_checks(&config).await;
    let problems = report.count(Verdict::Problem);
    let mut text = String::new();
    for line in &report.lines {
        text.push_str(&format!("{line}\n"));
    }
    text.push_str(&format!(
        "{} ok, {} problem(s), {} not verified\n",
        report.count(Verdict::Ok),
        problems,
        report.count(Verdict::NotVerified)
    ));
    let printed = output::print(&text);
    // A closed standard output still ends with the verdict's exit code.
    if problems == 0 {
        printed?;
    }
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
            output::println(&text)
        }
        TemplateTarget::Elasticsearch => {
            let text = serde_json::to_string_pretty(
                &crate::sink::elasticsearch::template::index_template(),
            )
            .map_err(Failure::runtime)?;
            output::println(&text)
        }
        TemplateTarget::Workbook => {
            let text = serde_json::to_string_pretty(&crate::sentinel_content::workbook::workbook())
                .map_err(Failure::runtime)?;
            output::println(&text)
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
            once_retry_for: Some(args.retry_for),
            ..RunOptions::default()
        },
        shutdown,
    )
    .await?;
    for ((org, source), result) in &report.sources {
        // A failure is logged by the collector and ends the run's error message below.
        if let Ok(r) = result {
            tracing::info!(org = %org, source = %source, new_events = r.inserted, pages = r.pages, requests = r.requests, "collection finished")
        }
    }
    let failed: Vec<String> = report
        .sources
        .iter()
        .filter_map(|((org, s), r)| {
            r.as_ref().err().map(|e| {
                if config.named_orgs {
                    format!("{org} {s}: {e}")
                } else {
                    format!("{s}: {e}")
                }
            })
        })
        .chain(report.sinks.iter().filter_map(|(name, r)| match r {
            Err(e) => Some(format!("sink {name}: {e}")),
            Ok(d) => d.gave_up.as_ref().map(|e| {
                let waiting: Vec<String> = d
                    .pending
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(s, n)| format!("{n} {s}"))
                    .collect();
                let backlog = if waiting.is_empty() {
                    "no rows".to_string()
                } else {
                    format!("{} rows", waiting.join(" and "))
                };
                format!(
                    "sink {name}: {backlog} wait in the store for the next run; last error: {e}"
                )
            }),
        }))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::runtime(anyhow::anyhow!(failed.join("\n"))))
    }
}
