//! `mirotrail demo`: the built-in Miro emulator on loopback, an emulated organisation's
//! last days collected into a local store through the real pipeline (config file, token
//! file, HTTP, store, file sink), then a summary, two of the Sentinel solution's sample
//! queries answered from the store, and the HTML report (`report.html` in the demo's dir).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;

use super::query::{query_store, render_table};
use super::{Failure, status::human};
use crate::config::Config;
use crate::pipeline::{self, RunOptions};
use crate::timefmt::UnixMs;
use mirotrail_emulator::miro::{MiroEmulator, MiroEmulatorConfig};

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Directory for the demo's config, token file, store and NDJSON archive (its old
    /// store is replaced).
    #[arg(long, default_value = "mirotrail-demo")]
    dir: PathBuf,
    /// Days of history to collect.
    #[arg(long, default_value_t = 3)]
    days: u32,
    /// Audit events the emulated organisation has over those days.
    #[arg(long, default_value_t = 30_000)]
    audit_events: u64,
    /// Content log items over those days.
    #[arg(long, default_value_t = 8_000)]
    content_items: u64,
    /// Attacks injected into the emulated organisation (comma-separated, `all`, or `none`);
    /// the demo ends with the alerts the detection rules raised on them. See
    /// `mirotrail emulate miro --help` for the list.
    /// [default: brute-force,guessed-password,mass-export,public-board,admin-grant with
    /// --days 2 or more, else none]
    #[arg(long, value_name = "LIST")]
    scenario: Option<String>,
}

/// The attacks the demo injects when `--scenario` is not given (and `--days` allows).
const DEMO_SCENARIOS: &str = "brute-force,guessed-password,mass-export,public-board,admin-grant";

/// Why some rows of the sample queries have no email.
pub(crate) const EMPTY_EMAIL_NOTE: &str = "An empty createdBy_email is not missing data: the actor \
     was an application, SCIM provisioning or a Miro automation, not a person, and only \
     people have an email (createdBy_type says which).";

/// The Sentinel solution's sample queries, in SQL on the local store.
pub(crate) const SAMPLE_QUERIES: [(&str, &str); 2] = [
    (
        "Recent audit events (Sentinel sample query)",
        "SELECT TimeGenerated, event, category, createdBy_email, context_ip FROM MiroAuditLogs_CL ORDER BY TimeGenerated DESC LIMIT 20",
    ),
    (
        "Activity by user and event type (Sentinel sample query; top 15)",
        "SELECT createdBy_email, event, category, count(*) AS count FROM MiroAuditLogs_CL GROUP BY createdBy_email, event, category ORDER BY count DESC LIMIT 15",
    ),
];

pub(crate) async fn run(args: DemoArgs) -> Result<(), Failure> {
    if args.days == 0 || args.days > 90 {
        return Err(Failure::usage(anyhow!(
            "--days must be 1..=90 (the API keeps 90 days of audit logs)"
        )));
    }
    let dir = &args.dir;
    crate::private::create_dir_all(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
        .map_err(Failure::runtime)?;
    for name in ["mirotrail.db", "mirotrail.db-wal", "mirotrail.db-shm"] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let _ = std::fs::remove_dir_all(dir.join("archive"));

    let scenarios = match args.scenario.as_deref().map(str::trim) {
        Some("none") => Vec::new(),
        Some(_) if args.days < 2 => {
            return Err(Failure::usage(anyhow!(
                "--scenario needs --days 2 or more (the attacks happen on the middle day of the span)"
            )));
        }
        Some(list) => mirotrail_emulator::miro::Scenario::parse_list(list)
            .map_err(|e| Failure::usage(anyhow!("--scenario: {e}")))?,
        None if args.days < 2 => Vec::new(),
        None => mirotrail_emulator::miro::Scenario::parse_list(DEMO_SCENARIOS)
            .expect("the demo's scenarios are valid"),
    };
    let now = UnixMs::now();
    let token = format!("demo-{:016x}", rand::random::<u64>());
    let mut emulator_config = MiroEmulatorConfig::demo(
        mirotrail_emulator::UnixMs(now.0),
        args.days,
        args.audit_events,
        args.content_items,
        &token,
    );
    emulator_config.scenarios = scenarios.clone();
    let org_id = emulator_config.org_id.clone();
    let emulator = MiroEmulator::start(
        emulator_config,
        "127.0.0.1:0".parse().expect("loopback address"),
    )
    .await
    .map_err(|e| Failure::runtime(anyhow!("cannot start the Miro emulator on loopback: {e}")))?;

    let config_path = write_demo_files(dir, &emulator.base_url(), &org_id, &token, args.days)
        .map_err(Failure::runtime)?;
    let config = Config::load(&config_path)?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "mirotrail demo: Miro emulator on {}, organization {org_id}, last {} days\n",
        emulator.base_url(),
        args.days
    );
    let _ = out.flush();
    let (_trigger, shutdown) = crate::shutdown::channel();
    let report = pipeline::run(
        &config,
        RunOptions {
            once: true,
            start: Some(now.minus(Duration::from_secs(u64::from(args.days) * 86_400))),
            backoff_base: Some(Duration::from_millis(50)),
            ..RunOptions::default()
        },
        shutdown,
    )
    .await?;
    let emu_stats = emulator.stats();
    emulator.shutdown().await;

    let secs = report.elapsed.as_secs_f64();
    let _ = writeln!(
        out,
        "{:<20} {:>9} {:>7} {:>9} {:>11}",
        "stream", "events", "pages", "requests", "duplicates"
    );
    let mut total = 0;
    for ((_, source), result) in &report.sources {
        match result {
            Ok(r) => {
                total += r.inserted;
                let _ = writeln!(
                    out,
                    "{:<20} {:>9} {:>7} {:>9} {:>11}",
                    source.name(),
                    r.inserted,
                    r.pages,
                    r.requests,
                    r.duplicates
                );
            }
            Err(e) => {
                let _ = writeln!(out, "{:<20} failed: {e}", source.name());
            }
        }
    }
    let statuses: Vec<String> = report
        .by_status
        .iter()
        .map(|(s, n)| format!("{n}x{s}"))
        .collect();
    let _ = writeln!(
        out,
        "\nrequests: {} ({}), 429s waited out: {}, retries: {}\ncredits used: {} (credits: Miro's rate limit, a budget of 100,000 per token per minute that each call draws on, 100 for audit logs and 2000 for content and AI interaction logs; mirotrail uses at most a share of {})\ntime taken: {} ({:.0} events/s); emulator served {} items\n",
        report.requests,
        statuses.join(", "),
        report.rate_limited,
        report.retries,
        report.credits_used,
        config.budget.share,
        if secs < 60.0 {
            format!("{secs:.2}s")
        } else {
            human(report.elapsed)
        },
        total as f64 / secs.max(1e-3),
        emu_stats.items_served,
    );
    for (title, sql) in SAMPLE_QUERIES {
        // SQLite on the blocking pool, like every store read from async code.
        let path = config.store_path.clone();
        let result = tokio::task::spawn_blocking(move || query_store(&path, sql))
            .await
            .expect("demo query task panicked")?;
        let text = render_table(&result);
        let _ = writeln!(out, "{title}:\n{sql}\n{text}");
    }
    let _ = writeln!(out, "{EMPTY_EMAIL_NOTE}\n");
    let path = config.store_path.clone();
    let alerts = tokio::task::spawn_blocking(
        move || -> anyhow::Result<Vec<(i64, String, serde_json::Value)>> {
            let conn = crate::store::Store::open_read_only(&path)?;
            Ok(crate::detect::eval::stored_alerts(&conn, 0, 1000)?)
        },
    )
    .await
    .expect("demo alerts task panicked")
    .map_err(Failure::runtime)?;
    let injected: Vec<&str> = scenarios.iter().map(|s| s.name()).collect();
    let _ = writeln!(
        out,
        "Alerts raised by the detection rules ({} rules; attacks injected: {}):",
        crate::detect::active_rules(&config.detect).len(),
        if injected.is_empty() {
            "none".to_string()
        } else {
            injected.join(", ")
        }
    );
    if alerts.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for (_, _, a) in &alerts {
        let _ = writeln!(
            out,
            "  {} [{}] {} hits={} window {}",
            a["Rule"].as_str().unwrap_or_default(),
            a["Severity"].as_str().unwrap_or_default(),
            a["Entities"],
            a["Hits"],
            a["WindowStart"].as_str().unwrap_or_default(),
        );
    }
    let _ = writeln!(
        out,
        "  (all of them: mirotrail query --config {} \"SELECT * FROM alerts\"; the rules: mirotrail rules list)\n",
        config_path.display()
    );
    // The report of what was collected, like `mirotrail report` writes it.
    let report_path = dir.join("report.html");
    let (store, since, out_path) = (
        config.store_path.clone(),
        now.minus(Duration::from_secs(u64::from(args.days) * 86_400)),
        report_path.clone(),
    );
    let written = tokio::task::spawn_blocking(move || {
        super::report::write_report(&store, since, UnixMs::now(), &out_path)
    })
    .await
    .expect("demo report task panicked")?;
    let _ = writeln!(
        out,
        "{written}\n  open it in a browser: {}\n",
        report_path.display()
    );
    let query = "\"SELECT event, count(*) FROM MiroAuditLogs_CL GROUP BY event\"";
    let _ = writeln!(
        out,
        "store: {}\narchive (NDJSON): {}\nask it more:\n  \
         mirotrail query --config {config} {query}\n    \
         (with mirotrail on the PATH: `cargo install --path .` in the checkout)\n  \
         cargo run --release -- query --config {config} {query}\n    \
         (from the checkout, without installing)",
        config.store_path.display(),
        dir.join("archive").display(),
        config = config_path.display(),
    );
    if report.ok() {
        Ok(())
    } else {
        Err(Failure::runtime(anyhow!(
            "the demo run did not complete; see the messages above"
        )))
    }
}

/// Writes the demo's config and token file; returns the config path.
fn write_demo_files(
    dir: &Path,
    api_base: &str,
    org_id: &str,
    token: &str,
    days: u32,
) -> anyhow::Result<PathBuf> {
    let token_path = dir.join("miro-token");
    write_private(&token_path, token)?;
    let config_path = dir.join("mirotrail.toml");
    let text = format!(
        r#"# Written by `mirotrail demo`: points at the emulator it started (now stopped).
[miro]
api_base = "{api_base}"
token_file = "miro-token"
org_id = "{org_id}"

[sources.audit_logs]
enabled = true
initial_lookback = "{days}d"

[sources.content_logs]
enabled = true
initial_lookback = "{days}d"

[sources.ai_interaction_logs]
enabled = true
initial_lookback = "{days}d"

[store]
path = "mirotrail.db"

[sinks.archive]
type = "file"
path = "archive"
"#
    );
    write_private(&config_path, &text)?;
    Ok(config_path)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    crate::private::tighten_file(path);
    let mut f = crate::private::file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}
