//! `mirotrail report`: one self-contained HTML file with the views of the Sentinel
//! workbook (`crate::sentinel_content::views`), computed from the local store.
//!
//! Invariants:
//! - The file fetches nothing: CSS inline, charts as inline SVG drawn here, no script at
//!   all, and a Content-Security-Policy of `default-src 'none'` so a browser refuses any
//!   fetch or script even if one slipped in.
//! - Every value from the store is escaped before it reaches the page (`html::escape`):
//!   actor names, board names, event names and details are attacker-controlled.
//! - The store is opened read-only; the report works while `run` is running.
//! - Alerts come from the `alerts` table (written by the detection rules); while the rules
//!   have never evaluated the store, the section says no detection ran.

mod html;
mod svg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use rusqlite::types::ValueRef;

use crate::sentinel_content::{View, ViewShape, views};
use crate::store::{Store, StoreError};
use crate::timefmt::UnixMs;

pub use html::escape;

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "{0}; has `mirotrail run` collected into it yet? (the store path is `store.path` in the config)"
    )]
    Store(#[source] StoreError),
    #[error("cannot read the view `{view}` from the store: {source}")]
    Query {
        view: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot write the report {path}: {source}; choose another --out")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The data of one view.
#[derive(Debug, Clone, PartialEq)]
pub enum ViewData {
    /// Hour (or day) buckets, oldest first, and the count of each series per bucket.
    TimeSeries {
        buckets: Vec<String>,
        series: Vec<(String, Vec<u64>)>,
    },
    /// Labels with their counts, largest first.
    Bars(Vec<(String, u64)>),
    Table {
        columns: Vec<String>,
        rows: Vec<Vec<String>>,
    },
}

impl ViewData {
    /// The events the view counts (rows for a table).
    pub fn total(&self) -> u64 {
        match self {
            ViewData::TimeSeries { series, .. } => series.iter().flat_map(|(_, v)| v).sum(),
            ViewData::Bars(bars) => bars.iter().map(|(_, n)| n).sum(),
            ViewData::Table { rows, .. } => rows.len() as u64,
        }
    }
}

/// The alerts section.
#[derive(Debug, Clone, PartialEq)]
pub enum Alerts {
    /// The detection rules never evaluated this store.
    NoDetectionRun,
    /// Alerts raised in the period (possibly none), and their count per severity.
    Raised {
        columns: Vec<String>,
        rows: Vec<Vec<String>>,
        by_severity: Vec<(String, u64)>,
    },
}

/// Everything the page shows.
#[derive(Debug, Clone)]
pub struct Report {
    pub since: UnixMs,
    pub until: UnixMs,
    pub organizations: Vec<String>,
    pub audit_events: u64,
    pub content_items: u64,
    pub views: Vec<(View, ViewData)>,
    pub alerts: Alerts,
}

/// More hourly buckets than this are merged into days.
const MAX_HOUR_BUCKETS: usize = 24 * 8;
/// Series beyond this many are summed into "other".
const MAX_SERIES: usize = 8;

/// Reads the report's data for `[since, until]` from the store at `path`.
pub fn build(path: &Path, since: UnixMs, until: UnixMs) -> Result<Report, ReportError> {
    let conn = Store::open_read_only(path).map_err(ReportError::Store)?;
    let since_iso = since.to_iso();
    let count = |table: &str| -> Result<u64, ReportError> {
        conn.query_row(
            &format!("SELECT count(*) FROM {table} WHERE TimeGenerated >= ?1"),
            [&since_iso],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n.unsigned_abs())
        .map_err(|source| ReportError::Query {
            view: format!("{table} count"),
            source,
        })
    };
    let audit_events = count("MiroAuditLogs_CL")?;
    let content_items = count("MiroContentLogs_CL")?;
    let organizations = rows(
        &conn,
        "organizations",
        "SELECT DISTINCT context_organization_name FROM MiroAuditLogs_CL \
         WHERE TimeGenerated >= ?1 AND context_organization_name <> '' LIMIT 5",
        &since_iso,
    )?
    .1
    .into_iter()
    .filter_map(|r| r.into_iter().next())
    .collect();
    let mut data = Vec::new();
    for view in views() {
        let (columns, rows) = rows(&conn, view.id, &view.sql, &since_iso)?;
        let d = match view.shape {
            ViewShape::TimeSeries => time_series(rows, since, until),
            ViewShape::Bars => ViewData::Bars(
                rows.into_iter()
                    .map(|r| (r[0].clone(), r[1].parse().unwrap_or(0)))
                    .collect(),
            ),
            ViewShape::Table => ViewData::Table { columns, rows },
        };
        data.push((view, d));
    }
    let alerts = alerts(&conn, &since_iso)?;
    Ok(Report {
        since,
        until,
        organizations,
        audit_events,
        content_items,
        views: data,
        alerts,
    })
}

/// Writes the page for `report` to `out` (created 0600: it holds audit data).
pub fn write(report: &Report, out: &Path) -> Result<(), ReportError> {
    use std::io::Write;
    let page = html::page(report);
    crate::private::tighten_file(out);
    let err = |source| ReportError::Write {
        path: out.to_path_buf(),
        source,
    };
    let mut f = crate::private::file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .map_err(err)?;
    f.write_all(page.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

/// The page for `report` (for tests and callers that write elsewhere).
pub fn render(report: &Report) -> String {
    html::page(report)
}

fn cell(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => String::new(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Blob(b) => format!("<{} bytes>", b.len()),
    }
}

type Rows = (Vec<String>, Vec<Vec<String>>);

fn rows(conn: &Connection, view: &str, sql: &str, since: &str) -> Result<Rows, ReportError> {
    let err = |source| ReportError::Query {
        view: view.to_string(),
        source,
    };
    let mut stmt = conn.prepare(sql).map_err(err)?;
    let columns: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
    let n = columns.len();
    let mut out = Vec::new();
    let params: &[&dyn rusqlite::ToSql] = if sql.contains("?1") { &[&since] } else { &[] };
    let mut cursor = stmt.query(params).map_err(err)?;
    while let Some(row) = cursor.next().map_err(err)? {
        let mut values = Vec::with_capacity(n);
        for i in 0..n {
            values.push(cell(row.get_ref(i).map_err(err)?));
        }
        out.push(values);
    }
    Ok((columns, out))
}

/// The hour `t` falls in, as the views' SQL writes buckets: `2024-05-01T10:00Z`.
fn hour_of(t: UnixMs) -> String {
    format!("{}:00Z", &t.to_iso()[..13])
}

/// Rows `(bucket, series, n)` into a continuous run of buckets from `since` to `until`
/// (days when there would be too many hours), the largest series first.
fn time_series(rows: Vec<Vec<String>>, since: UnixMs, until: UnixMs) -> ViewData {
    const HOUR_MS: i64 = 3_600_000;
    let mut hours = Vec::new();
    let mut t = UnixMs(since.0 - since.0.rem_euclid(HOUR_MS));
    while t <= until {
        hours.push(hour_of(t));
        t = UnixMs(t.0 + HOUR_MS);
    }
    let by_day = hours.len() > MAX_HOUR_BUCKETS;
    let key = |bucket: &str| -> String {
        if by_day {
            bucket.get(..10).unwrap_or(bucket).to_string()
        } else {
            bucket.to_string()
        }
    };
    let mut buckets: Vec<String> = Vec::new();
    for h in &hours {
        let k = key(h);
        if buckets.last() != Some(&k) {
            buckets.push(k);
        }
    }
    let index: BTreeMap<String, usize> = buckets
        .iter()
        .enumerate()
        .map(|(i, b)| (b.clone(), i))
        .collect();
    let mut series: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for row in rows {
        let [bucket, name, n] = <[String; 3]>::try_from(row).unwrap_or_default();
        let Some(&i) = index.get(&key(&bucket)) else {
            continue; // an event after `until` (a clock ahead of ours)
        };
        let counts = series.entry(name).or_insert_with(|| vec![0; buckets.len()]);
        counts[i] += n.parse::<u64>().unwrap_or(0);
    }
    let mut series: Vec<(String, Vec<u64>)> = series.into_iter().collect();
    series.sort_by_key(|(name, counts)| {
        (std::cmp::Reverse(counts.iter().sum::<u64>()), name.clone())
    });
    if series.len() > MAX_SERIES {
        let rest = series.split_off(MAX_SERIES - 1);
        let mut other = vec![0; buckets.len()];
        for (_, counts) in rest {
            for (o, c) in other.iter_mut().zip(counts) {
                *o += c;
            }
        }
        series.push(("(other)".to_string(), other));
    }
    ViewData::TimeSeries { buckets, series }
}

/// The alerts of the period from the `alerts` table (the detection rules' own, see
/// `crate::detect`); `NoDetectionRun` while the rules have never evaluated this store
/// (no `detect_offsets` row: `run` with detection off, or a store only `backfill` wrote).
fn alerts(conn: &Connection, since: &str) -> Result<Alerts, ReportError> {
    let err = |source| ReportError::Query {
        view: "alerts".to_string(),
        source,
    };
    let evaluated: bool = conn
        .query_row("SELECT EXISTS (SELECT 1 FROM detect_offsets)", [], |r| {
            r.get(0)
        })
        .map_err(err)?;
    if !evaluated {
        return Ok(Alerts::NoDetectionRun);
    }
    // With several organisations, the same rule and group may alert in each: the
    // organisation tells those rows apart.
    let several_orgs = crate::store::stored_orgs(conn)
        .map_err(ReportError::Store)?
        .len()
        > 1;
    let organisation = if several_orgs {
        " (SELECT name FROM orgs WHERE orgs.key = alerts.org) AS organisation,"
    } else {
        ""
    };
    let sql = format!(
        "SELECT last_seen AS \"last seen\", severity, rule_name AS rule,{organisation}
                group_key AS \"group\", hits AS events, first_seen AS \"first seen\"
         FROM alerts WHERE last_seen >= ?1 ORDER BY last_seen DESC LIMIT {}",
        crate::sentinel_content::TABLE_ROWS
    );
    let (columns, rows) = rows(conn, "alerts", &sql, since)?;
    let mut by_severity: BTreeMap<String, u64> = BTreeMap::new();
    if let Some(i) = columns.iter().position(|c| c == "severity") {
        for r in &rows {
            *by_severity.entry(r[i].clone()).or_default() += 1;
        }
    }
    let mut by_severity: Vec<(String, u64)> = by_severity.into_iter().collect();
    by_severity.sort_by_key(|(s, n)| (std::cmp::Reverse(*n), s.clone()));
    Ok(Alerts::Raised {
        columns,
        rows,
        by_severity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(Store::open(&path).unwrap());
        (dir, path)
    }

    #[test]
    fn hours_without_events_are_zero_and_days_replace_hours_over_eight_days() {
        let since = UnixMs::parse("2024-05-01T10:30:00Z").unwrap();
        let until = UnixMs::parse("2024-05-01T13:10:00Z").unwrap();
        let rows = vec![
            vec!["2024-05-01T11:00Z".into(), "boards".into(), "3".into()],
            vec!["2024-05-01T13:00Z".into(), "boards".into(), "1".into()],
        ];
        let ViewData::TimeSeries { buckets, series } = time_series(rows, since, until) else {
            panic!()
        };
        assert_eq!(buckets.len(), 4);
        assert_eq!(series, vec![("boards".to_string(), vec![0, 3, 0, 1])]);
        let long = time_series(
            vec![],
            since,
            until.plus(std::time::Duration::from_secs(10 * 86_400)),
        );
        let ViewData::TimeSeries { buckets, .. } = long else {
            panic!()
        };
        assert_eq!(buckets.len(), 11);
        assert_eq!(buckets[0], "2024-05-01");
    }

    #[test]
    fn many_series_are_folded_into_other() {
        let since = UnixMs::parse("2024-05-01T10:00:00Z").unwrap();
        let rows = (0..12)
            .map(|i| {
                vec![
                    "2024-05-01T10:00Z".into(),
                    format!("c{i:02}"),
                    (i + 1).to_string(),
                ]
            })
            .collect();
        let ViewData::TimeSeries { series, .. } = time_series(rows, since, since) else {
            panic!()
        };
        assert_eq!(series.len(), MAX_SERIES);
        assert_eq!(series[0].0, "c11");
        assert_eq!(series.last().unwrap().0, "(other)");
        let total: u64 = series.iter().flat_map(|(_, v)| v).sum();
        assert_eq!(total, (1..=12).sum::<u64>());
    }

    #[test]
    fn a_store_without_an_alerts_table_says_no_detection_run() {
        let (_dir, path) = store();
        let now = UnixMs::now();
        let r = build(&path, now.minus(std::time::Duration::from_secs(3600)), now).unwrap();
        assert_eq!(r.alerts, Alerts::NoDetectionRun);
        assert!(render(&r).contains("no detection run"));
    }

    #[test]
    fn alerts_of_the_period_are_read_from_the_alerts_table() {
        let (_dir, path) = store();
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "INSERT INTO detect_offsets VALUES ('audit_logs', 10, 0);
             INSERT INTO alerts (rule_id, rule, rule_name, severity, source, group_key,
               window_start, window_end, hits, first_seen, last_seen, raised_at)
             VALUES ('r1', 'brute', 'Miro: <b>brute</b>', 'High', 'audit_logs', 'ip=192.0.2.1',
               '', '', 12, '2024-05-01T10:00:00.000Z', '2024-05-01T10:05:00.000Z', '');
             INSERT INTO alerts (rule_id, rule, rule_name, severity, source, group_key,
               window_start, window_end, hits, first_seen, last_seen, raised_at)
             VALUES ('r2', 'old', 'old', 'Low', 'audit_logs', 'x', '', '', 1,
               '2020-01-01T00:00:00.000Z', '2020-01-01T00:00:00.000Z', '');",
        )
        .unwrap();
        let since = UnixMs::parse("2024-05-01T00:00:00Z").unwrap();
        let r = build(
            &path,
            since,
            since.plus(std::time::Duration::from_secs(86_400)),
        )
        .unwrap();
        let Alerts::Raised {
            columns,
            rows,
            by_severity,
        } = &r.alerts
        else {
            panic!("{:?}", r.alerts)
        };
        assert_eq!(
            columns,
            &[
                "last seen",
                "severity",
                "rule",
                "group",
                "events",
                "first seen"
            ]
        );
        assert_eq!(rows.len(), 1, "only alerts of the period");
        assert_eq!(rows[0][4], "12");
        assert_eq!(by_severity, &[("High".to_string(), 1)]);
        let page = render(&r);
        assert!(page.contains("Miro: &lt;b&gt;brute&lt;/b&gt;"), "escaped");
        assert!(!page.contains("<b>brute"));
    }

    /// Two organisations' alerts of the same rule and group are two rows, each naming
    /// its organisation.
    #[test]
    fn alerts_of_several_organisations_name_their_organisation() {
        let (_dir, path) = store();
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "UPDATE orgs SET name = 'emea', org_id = '111' WHERE key = 1;
             INSERT INTO orgs (key, name, org_id, created_ms) VALUES (2, 'apac', '222', 0);
             INSERT INTO detect_offsets VALUES ('audit_logs', 10, 0);
             INSERT INTO alerts (org, rule_id, rule, rule_name, severity, source, group_key,
               window_start, window_end, hits, first_seen, last_seen, raised_at)
             VALUES (1, 'r1', 'brute', 'brute', 'High', 'audit_logs', 'ip=192.0.2.1',
               '', '', 12, '2024-05-01T10:00:00.000Z', '2024-05-01T10:05:00.000Z', ''),
               (2, 'r1', 'brute', 'brute', 'High', 'audit_logs', 'ip=192.0.2.1',
               '', '', 7, '2024-05-01T10:00:00.000Z', '2024-05-01T10:04:00.000Z', '');",
        )
        .unwrap();
        let since = UnixMs::parse("2024-05-01T00:00:00Z").unwrap();
        let r = build(
            &path,
            since,
            since.plus(std::time::Duration::from_secs(86_400)),
        )
        .unwrap();
        let Alerts::Raised { columns, rows, .. } = &r.alerts else {
            panic!("{:?}", r.alerts)
        };
        let org = columns.iter().position(|c| c == "organisation").unwrap();
        let events = columns.iter().position(|c| c == "events").unwrap();
        let seen: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r[org].as_str(), r[events].as_str()))
            .collect();
        assert_eq!(seen, [("emea", "12"), ("apac", "7")]);
        assert!(render(&r).contains("apac"));
    }
}
