//! `mirotrail query`: read-only SQL on the store, as a table, CSV or JSON.

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
    /// The SQL (a single read-only statement), e.g.
    /// "SELECT event, count(*) FROM MiroAuditLogs_CL GROUP BY event".
    sql: String,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum Format {
    Table,
    Csv,
    Json,
}

/// A query result: column names and rows of JSON values.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
}

pub(crate) fn run(args: QueryArgs) -> Result<(), Failure> {
    let config = load_config(&args.config)?;
    let result = query_store(&config.store_path, &args.sql)?;
    let text = render(&result, args.format).map_err(Failure::runtime)?;
    super::output::print(&text)
}

/// Runs one read-only statement on the store at `path`.
pub fn query_store(path: &Path, sql: &str) -> Result<QueryResult, Failure> {
    let conn = Store::open_read_only(path).map_err(|e| {
        Failure::runtime(anyhow!(
            "{e}; has `mirotrail run` collected into it yet? (the store path is `store.path` in the config)"
        ))
    })?;
    let mut stmt = conn
        .prepare(sql)
        .map_err(|e| Failure::usage(anyhow!("the query is not valid SQL for the store: {e}")))?;
    if !stmt.readonly() {
        return Err(Failure::usage(anyhow!(
            "`query` only reads; this statement would change the store"
        )));
    }
    let columns: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
    let n = columns.len();
    let mut rows = Vec::new();
    let mut cursor = stmt
        .query([])
        .map_err(|e| Failure::usage(anyhow!("the query failed: {e}")))?;
    while let Some(row) = cursor
        .next()
        .map_err(|e| Failure::runtime(anyhow!("the query failed: {e}")))?
    {
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
        rows.push(values);
    }
    Ok(QueryResult { columns, rows })
}

fn cell_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders a result in the chosen format.
pub(crate) fn render(result: &QueryResult, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Table => {
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
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(&result.columns)?;
            for row in &result.rows {
                w.write_record(row.iter().map(cell_text))?;
            }
            String::from_utf8(w.into_inner()?)?
        }
        Format::Json => {
            let objects: Vec<serde_json::Value> = result
                .rows
                .iter()
                .map(|row| {
                    serde_json::Value::Object(
                        result
                            .columns
                            .iter()
                            .cloned()
                            .zip(row.iter().cloned())
                            .collect(),
                    )
                })
                .collect();
            serde_json::to_string_pretty(&objects)? + "\n"
        }
    })
}
