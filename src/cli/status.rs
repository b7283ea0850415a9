//! `mirotrail status`: where each source stands and what each sink still has to send,
//! as tables (long errors cut to fit) or as JSON (everything, in full).
//!
//! With `[[orgs]]` each line is one organisation's source: its rows and partly derived
//! rows only, each stored table read once for every organisation (`GROUP BY _org`), not
//! once per organisation. With one organisation the lines count whole tables.

use anyhow::anyhow;
use clap::{Args, ValueEnum};
use serde_json::json;

use super::{ConfigArgs, Failure, load_config};
use crate::config::SourceKind;
use crate::store::{
    OrgKey, Store, dead_letter_counts, org_row_counts, partial_row_counts, sink_progress,
    stored_orgs, table_stats,
};
use crate::timefmt::UnixMs;

/// Errors longer than this are cut in the table (`--format json` has them in full).
const TABLE_ERROR_CHARS: usize = 100;

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Output format: `table` for people (long errors cut), `json` for scripts (full text).
    #[arg(long, short = 'f', value_enum, default_value_t = StatusFormat::Table)]
    format: StatusFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum StatusFormat {
    Table,
    Json,
}

/// One source's line.
struct SourceStatus {
    /// The organisation's name (`default` without `[[orgs]]`).
    org: String,
    kind: SourceKind,
    enabled: bool,
    watermark: Option<UnixMs>,
    events_stored: i64,
    pages: i64,
    requests: i64,
    /// When the source last completed a poll (read up to now), the same moment `/readyz`
    /// counts.
    last_poll_completed: Option<UnixMs>,
    last_error: Option<(String, Option<UnixMs>)>,
    /// Rows stored with only some columns derived (each item is whole in `_raw`).
    partial_rows: i64,
}

pub(crate) fn run(args: StatusArgs) -> Result<(), Failure> {
    let config = load_config(&args.config)?;
    let conn = Store::open_read_only(&config.store_path).map_err(|e| {
        Failure::runtime(anyhow!(
            "{e}; run `mirotrail run --config {}` first",
            config.path.display()
        ))
    })?;
    let now = UnixMs::now();
    let stored_orgs = stored_orgs(&conn).map_err(Failure::runtime)?;
    // Each table is counted once for every organisation (one `GROUP BY _org`), and the
    // partly derived rows once for every organisation and source.
    let mut per_org_rows = std::collections::HashMap::new();
    if config.named_orgs && !stored_orgs.is_empty() {
        for kind in SourceKind::ALL {
            per_org_rows.insert(kind, org_row_counts(&conn, kind).map_err(Failure::runtime)?);
        }
    }
    let mut whole_table_rows = std::collections::HashMap::new();
    let partial_rows = partial_row_counts(&conn).map_err(Failure::runtime)?;
    let mut sources = Vec::new();
    for (org, kind) in config
        .orgs
        .iter()
        .flat_map(|o| SourceKind::ALL.map(|k| (o, k)))
    {
        // The store's key of the organisation: by name (a store before organisations
        // has none: its one organisation is the default one).
        let key = if stored_orgs.is_empty() {
            Some(OrgKey::DEFAULT)
        } else {
            stored_orgs
                .iter()
                .find(|s| s.name == org.name)
                .map(|s| s.key)
        };
        let events_stored = match key {
            None => 0,
            // One organisation (or a store from before organisations): the whole table.
            Some(_) if per_org_rows.is_empty() => match whole_table_rows.get(&kind) {
                Some(&n) => n,
                None => {
                    let n = table_stats(&conn, kind).map_err(Failure::runtime)?.rows;
                    whole_table_rows.insert(kind, n);
                    n
                }
            },
            Some(key) => per_org_rows
                .get(&kind)
                .and_then(|counts| counts.get(&key))
                .copied()
                .unwrap_or(0),
        };
        let cp_sql = if stored_orgs.is_empty() {
            "SELECT watermark_ms, pages_total, requests_total, last_success_ms, last_error, last_error_ms
             FROM checkpoints WHERE source = ?1 AND ?2 = ?2"
        } else {
            "SELECT watermark_ms, pages_total, requests_total, last_success_ms, last_error, last_error_ms
             FROM checkpoints WHERE source = ?1 AND org = ?2"
        };
        let cp = conn
            .query_row(
                cp_sql,
                rusqlite::params![kind.name(), key.map_or(-1, |k| k.0)],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                    ))
                },
            )
            .ok();
        let (watermark, pages, requests, success, error) = match cp {
            Some((wm, pages, requests, success, error, error_at)) => (
                Some(UnixMs(wm)),
                pages,
                requests,
                success.map(UnixMs),
                error.map(|e| (e, error_at.map(UnixMs))),
            ),
            None => (None, 0, 0, None, None),
        };
        sources.push(SourceStatus {
            org: org.name.clone(),
            kind,
            enabled: org.source(kind).enabled,
            watermark,
            events_stored,
            pages,
            requests,
            last_poll_completed: success,
            last_error: error,
            // Counted like the rows: the whole table's with one organisation.
            partial_rows: match key {
                None => 0,
                Some(_) if per_org_rows.is_empty() => partial_rows
                    .iter()
                    .filter(|((_, k), _)| *k == kind)
                    .map(|(_, n)| n)
                    .sum(),
                Some(key) => partial_rows.get(&(key, kind)).copied().unwrap_or(0),
            },
        });
    }
    let mut sinks = Vec::new();
    for sink in &config.sinks {
        for kind in SourceKind::ALL {
            let progress = sink_progress(&conn, &sink.name, kind).map_err(Failure::runtime)?;
            let not_sent = sink
                .skips(kind)
                .filter(|_| config.enabled_kinds().contains(&kind));
            sinks.push(SinkLine {
                sink: sink.name.clone(),
                kind,
                progress,
                not_sent,
            });
        }
    }
    let dead_letters = dead_letter_counts(&conn).map_err(Failure::runtime)?;
    let alerts = crate::detect::eval::alert_counts(&conn).map_err(Failure::runtime)?;
    let text = match args.format {
        StatusFormat::Json => {
            let iso = |t: Option<UnixMs>| t.map(|t| t.to_iso());
            let value = json!({
                "sources": sources.iter().map(|s| json!({
                    "org": s.org,
                    "source": s.kind.name(),
                    "enabled": s.enabled,
                    "watermark": iso(s.watermark),
                    "lag_secs": s.watermark.map(|w| now.since(w).as_secs()),
                    "events_stored": s.events_stored,
                    "pages": s.pages,
                    "requests": s.requests,
                    "last_poll_completed": iso(s.last_poll_completed),
                    "last_error": s.last_error.as_ref().map(|(e, _)| e),
                    "last_error_at": iso(s.last_error.as_ref().and_then(|(_, t)| *t)),
                    "partial_rows": s.partial_rows,
                })).collect::<Vec<_>>(),
                "sinks": sinks.iter().map(|l| json!({
                    "sink": l.sink,
                    "source": l.kind.name(),
                    "delivered": l.progress.delivered,
                    "pending": l.progress.pending,
                    "last_error": l.progress.last_error,
                    "not_sent": l.not_sent,
                    "dead_letters": dead_letters.iter()
                        .find(|d| d.sink == l.sink && d.source == l.kind)
                        .map_or(0, |d| d.rows),
                })).collect::<Vec<_>>(),
                "alerts": {
                    "total": alerts.total,
                    "by_rule": alerts.by_rule.iter().map(|(rule, n)| (rule.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
                },
            });
            serde_json::to_string_pretty(&value).map_err(Failure::runtime)? + "\n"
        }
        StatusFormat::Table => {
            render_tables(
                &sources,
                &sinks,
                now,
                config.sinks.is_empty(),
                config.named_orgs,
            ) + &render_partial_rows(&sources, &config.path, config.named_orgs)
                + &render_dead_letters(&dead_letters, &config.path)
                + &render_alerts(&alerts)
        }
    };
    super::output::print(&text)
}

/// One sink's line for one source.
struct SinkLine {
    sink: String,
    kind: SourceKind,
    progress: crate::store::SinkProgress,
    /// Why an enabled source is not sent to this sink (`SinkConfig::skips`).
    not_sent: Option<String>,
}

/// The alerts line: how many the rules raised, per rule (`mirotrail detect` lists them).
fn render_alerts(alerts: &crate::detect::AlertCounts) -> String {
    if alerts.total == 0 {
        return "alerts: none raised by the detection rules\n".to_string();
    }
    let per_rule: Vec<String> = alerts
        .by_rule
        .iter()
        .map(|(rule, n)| format!("{rule} {n}"))
        .collect();
    format!(
        "alerts: {} raised by the detection rules ({}); list them with `mirotrail query \"SELECT * FROM alerts\"`\n",
        alerts.total,
        per_rule.join(", ")
    )
}

fn render_tables(
    sources: &[SourceStatus],
    sinks: &[SinkLine],
    now: UnixMs,
    no_sinks: bool,
    named_orgs: bool,
) -> String {
    let ago = |t: Option<UnixMs>| {
        t.map_or("never".to_string(), |t| {
            format!("{} ago", human(now.since(t)))
        })
    };
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "source",
        "enabled",
        "watermark",
        "lag",
        "events stored",
        "pages",
        "requests",
        "last poll completed",
        "last error",
    ]);
    let mut cut = false;
    for s in sources {
        let error = s.last_error.as_ref().map_or("-".to_string(), |(e, at)| {
            let (text, was_cut) = shorten(e);
            cut |= was_cut;
            format!("{text} ({})", ago(*at))
        });
        table.add_row([
            if named_orgs {
                // `[[orgs]]`: which organisation's source.
                format!("{} {}", s.org, s.kind.name())
            } else {
                s.kind.name().to_string()
            },
            s.enabled.to_string(),
            s.watermark.map_or("-".into(), |w| w.to_iso()),
            s.watermark.map_or("-".into(), |w| human(now.since(w))),
            s.events_stored.to_string(),
            s.pages.to_string(),
            s.requests.to_string(),
            ago(s.last_poll_completed),
            error,
        ]);
    }
    let mut out = format!("{table}\n");
    if !no_sinks {
        let mut table = comfy_table::Table::new();
        table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
        table.set_header(["sink", "source", "delivered", "pending", "last error"]);
        let mut not_sent = String::new();
        for l in sinks {
            let p = &l.progress;
            let error = p.last_error.as_deref().map_or("-".to_string(), |e| {
                let (text, was_cut) = shorten(e);
                cut |= was_cut;
                text
            });
            let pending = match &l.not_sent {
                Some(why) => {
                    not_sent.push_str(&format!("{} {}: {why}\n", l.sink, l.kind));
                    "not sent".to_string()
                }
                None => p.pending.to_string(),
            };
            table.add_row([
                l.sink.clone(),
                l.kind.name().to_string(),
                p.delivered.to_string(),
                pending,
                error,
            ]);
        }
        out.push_str(&format!("{table}\n{not_sent}"));
    }
    if cut {
        out.push_str("(long errors are cut; `--format json` shows them in full)\n");
    }
    out
}

/// The first line of `text`, at most `TABLE_ERROR_CHARS` characters; true when cut.
fn shorten(text: &str) -> (String, bool) {
    let first = text.lines().next().unwrap_or("");
    if first.chars().count() > TABLE_ERROR_CHARS {
        let head: String = first.chars().take(TABLE_ERROR_CHARS - 1).collect();
        (format!("{head}…"), true)
    } else {
        (first.to_string(), first.len() < text.len())
    }
}

/// Rows whose columns could not all be derived, per source, and how to list them.
fn render_partial_rows(
    sources: &[SourceStatus],
    config: &std::path::Path,
    named_orgs: bool,
) -> String {
    sources
        .iter()
        .filter(|s| s.partial_rows > 0)
        .map(|s| {
            format!(
                "{}{}: {} rows stored with only some columns derived (each item is whole in \
                 _raw); list them with: mirotrail query --config {} \"SELECT * FROM partial_rows\"\n",
                if named_orgs {
                    format!("{} ", s.org)
                } else {
                    String::new()
                },
                s.kind.name(),
                s.partial_rows,
                config.display()
            )
        })
        .collect()
}

/// Rows set aside per sink and stream, if any, and how to look at them.
fn render_dead_letters(
    counts: &[crate::store::DeadLetterCount],
    config: &std::path::Path,
) -> String {
    if counts.is_empty() {
        return String::new();
    }
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(["sink", "table", "dead letters", "re-queued"]);
    for c in counts {
        table.add_row([
            c.sink.clone(),
            c.source.table().to_string(),
            c.rows.to_string(),
            c.requeued.to_string(),
        ]);
    }
    format!(
        "rows set aside (the destination will never accept them as they are):\n{table}\n\
         see them: mirotrail deadletter list --config {0}; after fixing the cause: \
         mirotrail deadletter retry --config {0} --all\n",
        config.display()
    )
}

/// `3h 12m`, `45s`.
pub(crate) fn human(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}
