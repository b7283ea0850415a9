//! `mirotrail query`: read-only SQL on the store, as a table, CSV or JSON.

use std::io::Write;
use std::path::Path;

use anyhow::anyhow;
use clap::{Args, ValueEnum};
use rusqlite::types::ValueRef;

use super::{ConfigArgs, Failure, load_config};
use crate::store::Store;

#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Stop after this many rows, with a note on standard error (default: 10000 for
    /// `table`, which is held in memory to lay it out; no limit for `csv` and `json`,
    /// which are streamed). 0: no limit.
    #[arg(long, value_name = "N")]
    max_rows: Option<u64>,
    /// The SQL (a single read-only statement), e.g.
    /// "SELECT event, count(*) FROM MiroAuditLogs_CL GROUP BY event".
    sql: String,
}

/// Rows a table holds at most unless `--max-rows` says otherwise: a table is laid out
/// in memory and nobody reads more than this on a terminal.
pub(crate) const DEFAULT_TABLE_MAX_ROWS: u64 = 10_000;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum Format {
    Table,
    Csv,
    Json,
}

/// A query result: column names and rows of JSON values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
}

pub(crate) fn run(args: QueryArgs) -> Result<(), Failure> {
    let config = load_config(&args.config)?;
    let max_rows = match (args.max_rows, args.format) {
        (Some(0), _) => None,
        (Some(n), _) => Some(n),
        (None, Format::Table) => Some(DEFAULT_TABLE_MAX_ROWS),
        (None, Format::Csv | Format::Json) => None,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = write_query(
        &config.store_path,
        &args.sql,
        args.format,
        max_rows,
        &mut out,
    )?;
    out.flush().map_err(super::output::stdout_error)?;
    if written.cut {
        eprintln!(
            "output cut after {} rows (--max-rows {}); the query has more: raise \
             --max-rows, pass --max-rows 0 for no limit, or narrow the query (WHERE, LIMIT)",
            written.rows, written.rows
        );
    }
    Ok(())
}

/// What `write_query` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub rows: u64,
    /// True when the query had more rows than `max_rows`.
    pub cut: bool,
}

/// Runs one read-only statement on the store at `path` and writes its rows to `out` as
/// they come (a table is laid out once its rows are in), stopping after `max_rows`.
pub(crate) fn write_query(
    path: &Path,
    sql: &str,
    format: Format,
    max_rows: Option<u64>,
    out: &mut dyn Write,
) -> Result<Written, Failure> {
    let conn = open(path)?;
    let mut stmt = prepare(&conn, sql)?;
    let columns: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
    let n = columns.len();
    write_rows(columns, format, out, |row| {
        each_row(&mut stmt, n, max_rows, row)
    })
}

/// Writes a result held in memory (small, known lists such as `deadletter list`) to
/// standard output in `format`.
pub(crate) fn print_result(result: QueryResult, format: Format) -> Result<(), Failure> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let QueryResult { columns, rows } = result;
    write_rows(columns, format, &mut out, |row| {
        let total = rows.len() as u64;
        rows.into_iter().try_for_each(row)?;
        Ok(Written {
            rows: total,
            cut: false,
        })
    })?;
    out.flush().map_err(super::output::stdout_error)
}

/// A source of rows: hands each row to the callback in turn.
type RowSink<'a> = &'a mut dyn FnMut(Vec<serde_json::Value>) -> Result<(), Failure>;

/// Writes `columns` and the rows `source` produces to `out` in `format`, streaming
/// (`csv`, `json`) or laid out once all rows are in (`table`).
fn write_rows(
    columns: Vec<String>,
    format: Format,
    out: &mut dyn Write,
    source: impl FnOnce(RowSink<'_>) -> Result<Written, Failure>,
) -> Result<Written, Failure> {
    let write_err = super::output::stdout_error;
    let written = match format {
        Format::Table => {
            let mut rows = Vec::new();
            let written = source(&mut |row| {
                rows.push(row);
                Ok(())
            })?;
            let text = render_table(&QueryResult { columns, rows });
            out.write_all(text.as_bytes()).map_err(write_err)?;
            written
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(&mut *out);
            let csv_err = |e: csv::Error| match e.into_kind() {
                csv::ErrorKind::Io(e) => write_err(e),
                other => Failure::runtime(anyhow!("cannot write CSV: {other:?}")),
            };
            w.write_record(&columns).map_err(csv_err)?;
            let written =
                source(&mut |row| w.write_record(row.iter().map(cell_text)).map_err(csv_err))?;
            w.flush().map_err(write_err)?;
            written
        }
        Format::Json => {
            let mut first = true;
            let written = source(&mut |row| {
                let object = serde_json::Value::Object(columns.iter().cloned().zip(row).collect());
                let text = serde_json::to_string_pretty(&object)
                    .map_err(|e| Failure::runtime(anyhow!("cannot write JSON: {e}")))?;
                let sep = if first { "[\n" } else { ",\n" };
                first = false;
                out.write_all(sep.as_bytes()).map_err(write_err)?;
                for (i, line) in text.lines().enumerate() {
                    if i > 0 {
                        out.write_all(b"\n").map_err(write_err)?;
                    }
                    out.write_all(b"  ").map_err(write_err)?;
                    out.write_all(line.as_bytes()).map_err(write_err)?;
                }
                Ok(())
            })?;
            let end: &[u8] = if first { b"[]\n" } else { b"\n]\n" };
            out.write_all(end).map_err(write_err)?;
            written
        }
    };
    Ok(written)
}

/// Runs one read-only statement on the store at `path` and holds all its rows (for
/// small, known queries such as the demo's summaries).
pub(crate) fn query_store(path: &Path, sql: &str) -> Result<QueryResult, Failure> {
    let conn = open(path)?;
    let mut stmt = prepare(&conn, sql)?;
    let columns: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
    let mut rows = Vec::new();
    each_row(&mut stmt, columns.len(), None, &mut |row| {
        rows.push(row);
        Ok(())
    })?;
    Ok(QueryResult { columns, rows })
}

fn open(path: &Path) -> Result<rusqlite::Connection, Failure> {
    Store::open_read_only(path).map_err(|e| {
        Failure::runtime(anyhow!(
            "{e}; has `mirotrail run` collected into it yet? (the store path is `store.path` in the config)"
        ))
    })
}

fn prepare<'c>(
    conn: &'c rusqlite::Connection,
    sql: &str,
) -> Result<rusqlite::Statement<'c>, Failure> {
    let stmt = conn
        .prepare(sql)
        .map_err(|e| Failure::usage(anyhow!("the query is not valid SQL for the store: {e}")))?;
    if !stmt.readonly() {
        return Err(Failure::usage(anyhow!(
            "`query` only reads; this statement would change the store"
        )));
    }
    Ok(stmt)
}

/// Hands each row to `f` as it is read, at most `max_rows` of them; `cut` tells whether
/// a further row was there.
fn each_row(
    stmt: &mut rusqlite::Statement<'_>,
    n: usize,
    max_rows: Option<u64>,
    f: RowSink<'_>,
) -> Result<Written, Failure> {
    let mut cursor = stmt
        .query([])
        .map_err(|e| Failure::usage(anyhow!("the query failed: {e}")))?;
    let mut rows = 0u64;
    while let Some(row) = cursor
        .next()
        .map_err(|e| Failure::runtime(anyhow!("the query failed: {e}")))?
    {
        if max_rows.is_some_and(|max| rows >= max) {
            return Ok(Written { rows, cut: true });
        }
        let mut values = Vec::with_capacity(n);
        for i in 0..n {
            let v = row
                .get_ref(i)
                .map_err(|e| Failure::runtime(anyhow!("cannot read column {i}: {e}")))?;
            values.push(match v {
                ValueRef::Null => serde_json::Value::Null,
                ValueRef::Integer(i) => serde_json::Value::from(i),
                ValueRef::Real(f) => serde_json::Value::from(f),
                ValueRef::Text(t) => {
                    serde_json::Value::String(String::from_utf8_lossy(t).into_owned())
                }
                ValueRef::Blob(b) => serde_json::Value::String(format!("<{} bytes>", b.len())),
            });
        }
        f(values)?;
        rows += 1;
    }
    Ok(Written { rows, cut: false })
}

fn cell_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Lays a result out as a table, with its row count.
pub(crate) fn render_table(result: &QueryResult) -> String {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(&result.columns);
    for row in &result.rows {
        table.add_row(row.iter().map(|v| {
            let text = cell_text(v);
            if text.chars().count() > 80 {
                text.chars().take(79).collect::<String>() + "…"
            } else {
                text
            }
        }));
    }
    format!("{table}\n({} rows)\n", result.rows.len())
}
