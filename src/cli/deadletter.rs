//! `mirotrail deadletter list|retry`: the rows a sink set aside because its destination
//! will never accept them as they are, and sending them again once the cause is fixed.
//!
//! Nothing here deletes a stored row: `retry` only marks entries for the delivery task,
//! which sends them before its backlog; a row accepted then leaves the list, a row refused
//! again stays with the new reason.

use anyhow::anyhow;
use clap::{Args, Subcommand};

use super::query::{Format, QueryResult, print_result};
use super::{ConfigArgs, Failure, load_config};
use crate::store::{Store, dead_letters, requeue_dead_letters};

#[derive(Debug, Args)]
pub(crate) struct DeadLetterArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List the rows set aside: sink, table, `_seq`, Miro id, reason, when, attempts.
    List {
        #[command(flatten)]
        config: ConfigArgs,
        /// Only this sink's rows.
        #[arg(long, value_name = "SINK")]
        sink: Option<String>,
        /// Output format.
        #[arg(long, short = 'f', value_enum, default_value_t = Format::Table)]
        format: Format,
        /// List at most this many rows, the oldest first, with a note on standard error
        /// when there are more (default: 1000). 0: no limit.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ROWS)]
        max_rows: u64,
    },
    /// Queue rows set aside for delivery again (after fixing the cause). The running
    /// `mirotrail run` sends them within a second, or the next run does.
    Retry {
        #[command(flatten)]
        config: ConfigArgs,
        /// Only this sink's rows.
        #[arg(long, value_name = "SINK")]
        sink: Option<String>,
        /// Dead-letter ids (the `id` column of `deadletter list`); repeatable.
        #[arg(
            long = "id",
            value_name = "ID",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        ids: Vec<i64>,
        /// Every row set aside (of `--sink`, if given).
        #[arg(long)]
        all: bool,
    },
}

pub(crate) fn run(args: DeadLetterArgs) -> Result<(), Failure> {
    match args.action {
        Action::List {
            config,
            sink,
            format,
            max_rows,
        } => list(&config, sink.as_deref(), format, max_rows),
        Action::Retry {
            config,
            sink,
            ids,
            all,
        } => retry(&config, sink.as_deref(), (!all).then_some(ids)),
    }
}

/// Refuses a sink name the config does not have (a typo would silently match nothing).
fn check_sink(config: &crate::config::Config, sink: Option<&str>) -> Result<(), Failure> {
    if let Some(name) = sink
        && !config.sinks.iter().any(|s| s.name == name)
    {
        let known: Vec<&str> = config.sinks.iter().map(|s| s.name.as_str()).collect();
        return Err(Failure::usage(anyhow!(
            "no sink `{name}` in the config; its sinks are: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    Ok(())
}

/// Rows `deadletter list` shows unless `--max-rows` says otherwise.
const DEFAULT_MAX_ROWS: u64 = 1000;

fn list(
    args: &ConfigArgs,
    sink: Option<&str>,
    format: Format,
    max_rows: u64,
) -> Result<(), Failure> {
    let config = load_config(args)?;
    check_sink(&config, sink)?;
    let conn = Store::open_read_only(&config.store_path).map_err(|e| {
        Failure::runtime(anyhow!(
            "{e}; run `mirotrail run --config {}` first",
            config.path.display()
        ))
    })?;
    // One more than shown, to tell whether the list was cut.
    let limit = (max_rows > 0).then(|| max_rows.saturating_add(1));
    let mut rows = dead_letters(&conn, sink, limit).map_err(Failure::runtime)?;
    let cut = limit.is_some_and(|n| rows.len() as u64 >= n);
    if cut {
        rows.truncate(usize::try_from(max_rows).unwrap_or(usize::MAX));
    }
    let result = QueryResult {
        columns: [
            "id",
            "sink",
            "table",
            "_seq",
            "miro_id",
            "org_id",
            "reason",
            "set_aside",
            "last_refused",
            "attempts",
            "requeued",
        ]
        .iter()
        .map(|c| c.to_string())
        .collect(),
        rows: rows
            .iter()
            .map(|d| {
                vec![
                    d.id.into(),
                    d.sink.clone().into(),
                    d.source.table().into(),
                    d.seq.into(),
                    d.miro_id.clone().into(),
                    d.org_id.clone().into(),
                    d.reason.clone().into(),
                    d.first.to_iso().into(),
                    d.last.to_iso().into(),
                    d.attempts.into(),
                    d.requeued.into(),
                ]
            })
            .collect(),
    };
    print_result(result, format)?;
    if cut {
        eprintln!(
            "listed the oldest {max_rows} rows set aside; there are more: raise --max-rows, \
             pass --max-rows 0 for all, or narrow with --sink"
        );
    }
    Ok(())
}

fn retry(args: &ConfigArgs, sink: Option<&str>, ids: Option<Vec<i64>>) -> Result<(), Failure> {
    let config = load_config(args)?;
    check_sink(&config, sink)?;
    let n = requeue_dead_letters(&config.store_path, sink, ids.as_deref()).map_err(|e| {
        Failure::runtime(anyhow!(
            "{e}; run `mirotrail run --config {}` first",
            config.path.display()
        ))
    })?;
    if n == 0 {
        println!(
            "no rows set aside match; `mirotrail deadletter list --config {}` shows them",
            config.path.display()
        );
    } else {
        println!(
            "{n} row(s) queued for delivery again: a running `mirotrail run` sends them \
             within a second, otherwise the next `mirotrail run` does; a row refused again \
             goes back to the list with the new reason"
        );
    }
    Ok(())
}
