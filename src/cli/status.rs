//! `mirotrail status`: where each source stands and what each sink still has to send.

use anyhow::anyhow;

use super::{ConfigArgs, Failure, load_config};
use crate::config::SourceKind;
use crate::store::{Store, backlog, table_stats};
use crate::timefmt::UnixMs;

pub(crate) fn run(args: ConfigArgs) -> Result<(), Failure> {
    let config = load_config(&args)?;
    let conn = Store::open_read_only(&config.store_path).map_err(|e| {
        Failure::runtime(anyhow!(
            "{e}; run `mirotrail run --config {}` first",
            config.path.display()
        ))
    })?;
    let now = UnixMs::now();
    let mut sources = comfy_table::Table::new();
    sources.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    sources.set_header([
        "source",
        "enabled",
        "watermark",
        "lag",
        "events stored",
        "pages",
        "requests",
        "last success",
        "last error",
    ]);
    let ago = |t: Option<i64>| {
        t.map_or("never".to_string(), |ms| {
            format!("{} ago", human(now.since(UnixMs(ms))))
        })
    };
    for kind in SourceKind::ALL {
        let enabled = config.source(kind).enabled;
        let stats = table_stats(&conn, kind).map_err(Failure::runtime)?;
        let cp = conn
            .query_row(
                "SELECT watermark_ms, pages_total, requests_total, last_success_ms, last_error, last_error_ms
                 FROM checkpoints WHERE source = ?1",
                [kind.name()],
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
        let row: Vec<String> = match cp {
            Some((wm, pages, requests, success, error, error_at)) => vec![
                kind.name().into(),
                enabled.to_string(),
                UnixMs(wm).to_iso(),
                human(now.since(UnixMs(wm))),
                stats.rows.to_string(),
                pages.to_string(),
                requests.to_string(),
                ago(success),
                error.map_or("-".into(), |e| format!("{} ({})", e, ago(error_at))),
            ],
            None => vec![
                kind.name().into(),
                enabled.to_string(),
                "-".into(),
                "-".into(),
                stats.rows.to_string(),
                "0".into(),
                "0".into(),
                "never".into(),
                "-".into(),
            ],
        };
        sources.add_row(row);
    }
    println!("{sources}");

    let mut sinks = comfy_table::Table::new();
    sinks.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    sinks.set_header(["sink", "source", "delivered", "backlog", "last error"]);
    for sink in &config.sinks {
        for kind in SourceKind::ALL {
            let (delivered, error): (i64, Option<String>) = conn
                .query_row(
                    "SELECT delivered_seq, last_error FROM sink_offsets WHERE sink = ?1 AND source = ?2",
                    [sink.name.as_str(), kind.name()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap_or((0, None));
            let backlog = backlog(&conn, kind, delivered).map_err(Failure::runtime)?;
            sinks.add_row([
                sink.name.clone(),
                kind.name().into(),
                delivered.to_string(),
                backlog.max(0).to_string(),
                error.unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    if !config.sinks.is_empty() {
        println!("{sinks}");
    }
    Ok(())
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
