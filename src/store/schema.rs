//! Ordered migrations under `PRAGMA user_version`. Append only: never edit a shipped step.

use rusqlite::Connection;

use super::transform::{AUDIT_COLUMNS, CONTENT_COLUMNS, DATETIME_COLUMNS, DYNAMIC_COLUMNS};

fn table_ddl(table: &str, columns: &[&str]) -> String {
    let mut ddl = format!("CREATE TABLE {table} (\n");
    for column in columns {
        let decl = if *column == "id" {
            "TEXT NOT NULL UNIQUE".to_string()
        } else if DATETIME_COLUMNS.contains(column) || DYNAMIC_COLUMNS.contains(column) {
            "TEXT".to_string()
        } else {
            "TEXT NOT NULL DEFAULT ''".to_string()
        };
        ddl.push_str(&format!("  {column} {decl},\n"));
    }
    ddl.push_str(
        "  _raw TEXT NOT NULL,\n  _ingested_at TEXT NOT NULL,\n  _seq INTEGER PRIMARY KEY AUTOINCREMENT\n);\n",
    );
    ddl
}

/// The migrations, in order. Step N brings `user_version` from N to N+1.
fn migrations() -> Vec<String> {
    vec![
        // 1: the two Sentinel tables, checkpoints, delivery offsets.
        [
            table_ddl("MiroAuditLogs_CL", &AUDIT_COLUMNS),
            "CREATE INDEX MiroAuditLogs_CL_time ON MiroAuditLogs_CL (TimeGenerated);".into(),
            table_ddl("MiroContentLogs_CL", &CONTENT_COLUMNS),
            "CREATE INDEX MiroContentLogs_CL_time ON MiroContentLogs_CL (TimeGenerated);".into(),
            "CREATE TABLE checkpoints (
                source TEXT PRIMARY KEY,
                watermark_ms INTEGER NOT NULL,
                watermark_polled_ms INTEGER NOT NULL,
                window_from_ms INTEGER,
                window_to_ms INTEGER,
                window_started_ms INTEGER,
                window_read_through_ms INTEGER,
                cursor TEXT,
                pages_total INTEGER NOT NULL DEFAULT 0,
                requests_total INTEGER NOT NULL DEFAULT 0,
                last_success_ms INTEGER,
                last_error TEXT,
                last_error_ms INTEGER
            );"
            .into(),
            "CREATE TABLE sink_offsets (
                sink TEXT NOT NULL,
                source TEXT NOT NULL,
                delivered_seq INTEGER NOT NULL,
                updated_ms INTEGER NOT NULL,
                last_error TEXT,
                PRIMARY KEY (sink, source)
            );"
            .into(),
        ]
        .join("\n"),
        // 2: acknowledgements beyond a sink's offset (out-of-order uploads), so that a
        // restart does not resend what the destination already has.
        "CREATE TABLE sink_acked (
            sink TEXT NOT NULL,
            source TEXT NOT NULL,
            first_seq INTEGER NOT NULL,
            last_seq INTEGER NOT NULL,
            PRIMARY KEY (sink, source, first_seq)
        );"
        .into(),
        // 3: backfill progress, one row per time slice of a source.
        "CREATE TABLE backfill_slices (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            from_ms INTEGER NOT NULL,
            to_ms INTEGER NOT NULL,
            read_from_ms INTEGER NOT NULL,
            read_through_ms INTEGER,
            cursor TEXT,
            done INTEGER NOT NULL DEFAULT 0,
            pages INTEGER NOT NULL DEFAULT 0,
            requests INTEGER NOT NULL DEFAULT 0,
            inserted INTEGER NOT NULL DEFAULT 0,
            duplicates INTEGER NOT NULL DEFAULT 0,
            created_ms INTEGER NOT NULL,
            done_ms INTEGER,
            UNIQUE (source, from_ms, to_ms)
        );"
        .into(),
        // 4: when each source last re-read its overlap (`overlap_every`).
        "ALTER TABLE checkpoints ADD COLUMN last_sweep_ms INTEGER;".into(),
        // 5: rows a sink's destination will never accept, set aside so they do not block
        // the rest (the row stays in its table; retention keeps it while listed here).
        "CREATE TABLE dead_letters (
            id INTEGER PRIMARY KEY,
            sink TEXT NOT NULL,
            source TEXT NOT NULL,
            seq INTEGER NOT NULL,
            reason TEXT NOT NULL,
            first_ms INTEGER NOT NULL,
            last_ms INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 1,
            requeued INTEGER NOT NULL DEFAULT 0,
            UNIQUE (sink, source, seq)
        );
        CREATE INDEX dead_letters_source_seq ON dead_letters (source, seq);"
            .into(),
        // 6: rows stored with only some columns derived (the item is whole in `_raw`),
        // shown by `status`; written in the page's transaction, only for new rows.
        "CREATE TABLE partial_rows (
            source TEXT NOT NULL,
            id TEXT NOT NULL,
            unread TEXT NOT NULL,
            stored_ms INTEGER NOT NULL,
            PRIMARY KEY (source, id)
        );"
        .into(),
    ]
}

/// Brings the schema up to date; safe to run on every open, twice in a row, and from two
/// processes at once (`run` beside `backfill`): each step reads the version inside an
/// immediate (write-locked) transaction, so only one process applies it.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let steps = migrations();
    loop {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let Some(step) = steps.get(current.max(0) as usize) else {
            return Ok(());
        };
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", current.max(0) + 1)?;
        tx.commit()?;
    }
}

/// The schema version this build writes.
pub fn latest_version() -> i64 {
    migrations().len() as i64
}
