//! Ordered migrations under `PRAGMA user_version`, each literal SQL. Append only: never edit
//! a shipped step (step 1 is checked against the generator it was made with).

use rusqlite::Connection;

/// Step 1, frozen as shipped: the two Sentinel tables (columns in the tables' order, see
/// `docs/sentinel-contract.md`), checkpoints and delivery offsets. It was generated from the
/// column lists of `transform` when it shipped; it is written out so that a later change to
/// those lists cannot change a shipped step (`tests::step_1_is_what_the_column_lists_generated`).
const STEP_1: &str = r#"CREATE TABLE MiroAuditLogs_CL (
  TimeGenerated TEXT,
  id TEXT NOT NULL UNIQUE,
  createdAt TEXT,
  event TEXT NOT NULL DEFAULT '',
  category TEXT NOT NULL DEFAULT '',
  logType TEXT NOT NULL DEFAULT '',
  createdBy_email TEXT NOT NULL DEFAULT '',
  createdBy_id TEXT NOT NULL DEFAULT '',
  createdBy_name TEXT NOT NULL DEFAULT '',
  createdBy_type TEXT NOT NULL DEFAULT '',
  object_id TEXT NOT NULL DEFAULT '',
  object_name TEXT NOT NULL DEFAULT '',
  context_ip TEXT NOT NULL DEFAULT '',
  context_team_id TEXT NOT NULL DEFAULT '',
  context_team_name TEXT NOT NULL DEFAULT '',
  context_team_type TEXT NOT NULL DEFAULT '',
  context_organization_id TEXT NOT NULL DEFAULT '',
  context_organization_name TEXT NOT NULL DEFAULT '',
  context_organization_type TEXT NOT NULL DEFAULT '',
  details TEXT,
  _raw TEXT NOT NULL,
  _ingested_at TEXT NOT NULL,
  _seq INTEGER PRIMARY KEY AUTOINCREMENT
);

CREATE INDEX MiroAuditLogs_CL_time ON MiroAuditLogs_CL (TimeGenerated);
CREATE TABLE MiroContentLogs_CL (
  TimeGenerated TEXT,
  id TEXT NOT NULL UNIQUE,
  actionTime TEXT,
  actionType TEXT NOT NULL DEFAULT '',
  actor_id TEXT NOT NULL DEFAULT '',
  actor_email TEXT NOT NULL DEFAULT '',
  actor_name TEXT NOT NULL DEFAULT '',
  contentId TEXT NOT NULL DEFAULT '',
  itemId TEXT NOT NULL DEFAULT '',
  itemType TEXT NOT NULL DEFAULT '',
  relationships TEXT,
  state TEXT,
  _raw TEXT NOT NULL,
  _ingested_at TEXT NOT NULL,
  _seq INTEGER PRIMARY KEY AUTOINCREMENT
);

CREATE INDEX MiroContentLogs_CL_time ON MiroContentLogs_CL (TimeGenerated);
CREATE TABLE checkpoints (
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
            );
CREATE TABLE sink_offsets (
                sink TEXT NOT NULL,
                source TEXT NOT NULL,
                delivered_seq INTEGER NOT NULL,
                updated_ms INTEGER NOT NULL,
                last_error TEXT,
                PRIMARY KEY (sink, source)
            );"#;

/// Step 7, the compact store (`docs/store.md`): each source's rows move to a stored table
/// (`<table>_rows`) that keeps `_seq`, `id`, `TimeGenerated`, the columns the Sentinel
/// sample queries group by, `_raw` and `_ingested_at`; the other columns are pure
/// projections of `_raw` and are derived on read by a view with the Sentinel table's
/// name and columns, in order (`mirotrail_column`, `mirotrail_raw`: `store/raw.rs`).
/// `_raw` moves as it is (text); `raw::compact` compresses it once a dictionary is
/// trained. The `_seq` counter moves with the rows (`sqlite_sequence`), so `_seq` keeps
/// growing past every delivery offset. Deleting from a view deletes the stored rows.
const STEP_7: &str = r#"CREATE TABLE raw_dictionaries (
  id INTEGER PRIMARY KEY,
  source TEXT NOT NULL,
  dictionary BLOB NOT NULL,
  trained_rows INTEGER NOT NULL,
  created_ms INTEGER NOT NULL
);
CREATE TABLE MiroAuditLogs_CL_rows (
  _seq INTEGER PRIMARY KEY AUTOINCREMENT,
  TimeGenerated TEXT,
  id TEXT NOT NULL UNIQUE,
  event TEXT NOT NULL DEFAULT '',
  category TEXT NOT NULL DEFAULT '',
  createdBy_email TEXT NOT NULL DEFAULT '',
  _raw BLOB NOT NULL,
  _ingested_at TEXT NOT NULL
);
INSERT INTO MiroAuditLogs_CL_rows (_seq, TimeGenerated, id, event, category, createdBy_email, _raw, _ingested_at)
  SELECT _seq, TimeGenerated, id, event, category, createdBy_email, _raw, _ingested_at FROM MiroAuditLogs_CL ORDER BY _seq;
DELETE FROM sqlite_sequence WHERE name = 'MiroAuditLogs_CL_rows';
UPDATE sqlite_sequence SET name = 'MiroAuditLogs_CL_rows' WHERE name = 'MiroAuditLogs_CL';
DROP TABLE MiroAuditLogs_CL;
CREATE INDEX MiroAuditLogs_CL_rows_time ON MiroAuditLogs_CL_rows (TimeGenerated);
CREATE INDEX MiroAuditLogs_CL_rows_text ON MiroAuditLogs_CL_rows (_seq) WHERE typeof(_raw) = 'text';
CREATE VIEW MiroAuditLogs_CL AS SELECT
  TimeGenerated,
  id,
  mirotrail_column('audit_logs', 'createdAt', _raw) AS createdAt,
  event,
  category,
  mirotrail_column('audit_logs', 'logType', _raw) AS logType,
  createdBy_email,
  mirotrail_column('audit_logs', 'createdBy_id', _raw) AS createdBy_id,
  mirotrail_column('audit_logs', 'createdBy_name', _raw) AS createdBy_name,
  mirotrail_column('audit_logs', 'createdBy_type', _raw) AS createdBy_type,
  mirotrail_column('audit_logs', 'object_id', _raw) AS object_id,
  mirotrail_column('audit_logs', 'object_name', _raw) AS object_name,
  mirotrail_column('audit_logs', 'context_ip', _raw) AS context_ip,
  mirotrail_column('audit_logs', 'context_team_id', _raw) AS context_team_id,
  mirotrail_column('audit_logs', 'context_team_name', _raw) AS context_team_name,
  mirotrail_column('audit_logs', 'context_team_type', _raw) AS context_team_type,
  mirotrail_column('audit_logs', 'context_organization_id', _raw) AS context_organization_id,
  mirotrail_column('audit_logs', 'context_organization_name', _raw) AS context_organization_name,
  mirotrail_column('audit_logs', 'context_organization_type', _raw) AS context_organization_type,
  mirotrail_column('audit_logs', 'details', _raw) AS details,
  mirotrail_raw(_raw) AS _raw,
  _ingested_at,
  _seq
FROM MiroAuditLogs_CL_rows;
CREATE TRIGGER MiroAuditLogs_CL_delete INSTEAD OF DELETE ON MiroAuditLogs_CL
BEGIN DELETE FROM MiroAuditLogs_CL_rows WHERE _seq = OLD._seq; END;
CREATE TABLE MiroContentLogs_CL_rows (
  _seq INTEGER PRIMARY KEY AUTOINCREMENT,
  TimeGenerated TEXT,
  id TEXT NOT NULL UNIQUE,
  actionType TEXT NOT NULL DEFAULT '',
  actor_email TEXT NOT NULL DEFAULT '',
  _raw BLOB NOT NULL,
  _ingested_at TEXT NOT NULL
);
INSERT INTO MiroContentLogs_CL_rows (_seq, TimeGenerated, id, actionType, actor_email, _raw, _ingested_at)
  SELECT _seq, TimeGenerated, id, actionType, actor_email, _raw, _ingested_at FROM MiroContentLogs_CL ORDER BY _seq;
DELETE FROM sqlite_sequence WHERE name = 'MiroContentLogs_CL_rows';
UPDATE sqlite_sequence SET name = 'MiroContentLogs_CL_rows' WHERE name = 'MiroContentLogs_CL';
DROP TABLE MiroContentLogs_CL;
CREATE INDEX MiroContentLogs_CL_rows_time ON MiroContentLogs_CL_rows (TimeGenerated);
CREATE INDEX MiroContentLogs_CL_rows_text ON MiroContentLogs_CL_rows (_seq) WHERE typeof(_raw) = 'text';
CREATE VIEW MiroContentLogs_CL AS SELECT
  TimeGenerated,
  id,
  mirotrail_column('content_logs', 'actionTime', _raw) AS actionTime,
  actionType,
  mirotrail_column('content_logs', 'actor_id', _raw) AS actor_id,
  actor_email,
  mirotrail_column('content_logs', 'actor_name', _raw) AS actor_name,
  mirotrail_column('content_logs', 'contentId', _raw) AS contentId,
  mirotrail_column('content_logs', 'itemId', _raw) AS itemId,
  mirotrail_column('content_logs', 'itemType', _raw) AS itemType,
  mirotrail_column('content_logs', 'relationships', _raw) AS relationships,
  mirotrail_column('content_logs', 'state', _raw) AS state,
  mirotrail_raw(_raw) AS _raw,
  _ingested_at,
  _seq
FROM MiroContentLogs_CL_rows;
CREATE TRIGGER MiroContentLogs_CL_delete INSTEAD OF DELETE ON MiroContentLogs_CL
BEGIN DELETE FROM MiroContentLogs_CL_rows WHERE _seq = OLD._seq; END;"#;

/// The migrations, in order. Step N brings `user_version` from N to N+1.
fn migrations() -> [&'static str; 7] {
    [
        // 1: the two Sentinel tables, checkpoints, delivery offsets.
        STEP_1,
        // 2: acknowledgements beyond a sink's offset (out-of-order uploads), so that a
        // restart does not resend what the destination already has.
        "CREATE TABLE sink_acked (
            sink TEXT NOT NULL,
            source TEXT NOT NULL,
            first_seq INTEGER NOT NULL,
            last_seq INTEGER NOT NULL,
            PRIMARY KEY (sink, source, first_seq)
        );",
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
        );",
        // 4: when each source last re-read its overlap (`overlap_every`).
        "ALTER TABLE checkpoints ADD COLUMN last_sweep_ms INTEGER;",
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
        CREATE INDEX dead_letters_source_seq ON dead_letters (source, seq);",
        // 6: rows stored with only some columns derived (the item is whole in `_raw`),
        // shown by `status`; written in the page's transaction, only for new rows.
        "CREATE TABLE partial_rows (
            source TEXT NOT NULL,
            id TEXT NOT NULL,
            unread TEXT NOT NULL,
            stored_ms INTEGER NOT NULL,
            PRIMARY KEY (source, id)
        );",
        // 7: the compact store: derived columns on read, `_raw` compressed (see STEP_7).
        STEP_7,
    ]
}

/// Brings the schema up to date; safe to run on every open, twice in a row, and from two
/// processes at once (`run` beside `backfill`): each step reads the version inside an
/// immediate (write-locked) transaction, so only one process applies it.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    migrate_to(conn, latest_version())
}

/// Brings the schema up to `version` (tests make stores of an older version with it).
pub(crate) fn migrate_to(conn: &mut Connection, version: i64) -> rusqlite::Result<()> {
    let steps = migrations();
    let steps = &steps[..usize::try_from(version.max(0))
        .unwrap_or(0)
        .min(steps.len())];
    loop {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let Some(step) = steps.get(usize::try_from(current.max(0)).unwrap_or(usize::MAX)) else {
            return Ok(());
        };
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", current.max(0) + 1)?;
        tx.commit()?;
    }
}

/// The schema version this build writes.
pub(crate) fn latest_version() -> i64 {
    i64::try_from(migrations().len()).expect("a few steps")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::transform::{
        AUDIT_COLUMNS, CONTENT_COLUMNS, DATETIME_COLUMNS, DYNAMIC_COLUMNS,
    };

    /// The generator step 1 was made with, kept to check the frozen text.
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

    #[test]
    fn step_1_is_what_the_column_lists_generated() {
        let generated = [
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
        .join("\n");
        assert_eq!(STEP_1, generated);
    }
}
