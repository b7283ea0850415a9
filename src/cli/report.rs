//! `mirotrail report`: the HTML report of the store's last days (`crate::report`).

use std::path::PathBuf;

use clap::Args;

use super::{ConfigArgs, Failure, load_config, output};
use crate::report;
use crate::timefmt::UnixMs;

#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Start of the period: a duration back from now (`7d`, `36h`) or an RFC 3339 time.
    #[arg(long, default_value = "7d")]
    since: String,
    /// The HTML file to write (created private to the user: it holds audit data).
    #[arg(long, short = 'o', default_value = "report.html")]
    out: PathBuf,
}

pub(crate) fn run(args: ReportArgs) -> Result<(), Failure> {
    let config = load_config(&args.config)?;
    let now = UnixMs::now();
    let since = super::backfill::parse_time("since", &args.since, now)?;
    if since >= now {
        return Err(Failure::usage(anyhow::anyhow!(
            "--since {} is not in the past; give a duration back from now like \"7d\"",
            args.since
        )));
    }
    let written = write_report(&config.store_path, since, now, &args.out)?;
    output::println(&written)
}

/// Writes the report of `[since, now]` to `out`; returns the line saying what it wrote.
pub(crate) fn write_report(
    store: &std::path::Path,
    since: UnixMs,
    now: UnixMs,
    out: &std::path::Path,
) -> Result<String, Failure> {
    let data = report::build(store, since, now).map_err(Failure::runtime)?;
    report::write(&data, out).map_err(Failure::runtime)?;
    Ok(format!(
        "report: {} ({} audit events, {} content log items since {})",
        out.display(),
        data.audit_events,
        data.content_items,
        since
    ))
}
