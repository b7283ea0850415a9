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

/// Step 10, the compact store (`docs/store.md`): each source's rows (the AI interaction
/// logs' as well) move to a stored table
/// (`<table>_rows`) that keeps `_seq`, `id`, `TimeGenerated`, the columns the Sentinel
/// sample queries group by, `_raw` and `_ingested_at`; the other columns are pure
/// projections of `_raw` and are derived on read by a view with the Sentinel table's
/// name and columns, in order (`mirotrail_column`, `mirotrail_raw`: `store/raw.rs`).
/// `_raw` moves as it is (text); `raw::compact` compresses it once a dictionary is
/// trained. The `_seq` counter moves with the rows (`sqlite_sequence`), so `_seq` keeps
/// growing past every delivery offset. Deleting from a view deletes the stored rows.
const STEP_10: &str = r#"CREATE TABLE raw_dictionaries (
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
BEGIN DELETE FROM MiroContentLogs_CL_rows WHERE _seq = OLD._seq; END;
CREATE TABLE MiroAiInteractionLogs_CL_rows (
  _seq INTEGER PRIMARY KEY AUTOINCREMENT,
  TimeGenerated TEXT,
  id TEXT NOT NULL UNIQUE,
  storedAt TEXT,
  aiFeatureName TEXT NOT NULL DEFAULT '',
  actor_email TEXT NOT NULL DEFAULT '',
  _raw BLOB NOT NULL,
  _ingested_at TEXT NOT NULL
);
INSERT INTO MiroAiInteractionLogs_CL_rows (_seq, TimeGenerated, id, storedAt, aiFeatureName, actor_email, _raw, _ingested_at)
  SELECT _seq, TimeGenerated, id, storedAt, aiFeatureName, actor_email, _raw, _ingested_at FROM MiroAiInteractionLogs_CL ORDER BY _seq;
DELETE FROM sqlite_sequence WHERE name = 'MiroAiInteractionLogs_CL_rows';
UPDATE sqlite_sequence SET name = 'MiroAiInteractionLogs_CL_rows' WHERE name = 'MiroAiInteractionLogs_CL';
DROP TABLE MiroAiInteractionLogs_CL;
CREATE INDEX MiroAiInteractionLogs_CL_rows_time ON MiroAiInteractionLogs_CL_rows (TimeGenerated);
CREATE INDEX MiroAiInteractionLogs_CL_rows_stored ON MiroAiInteractionLogs_CL_rows (storedAt);
CREATE INDEX MiroAiInteractionLogs_CL_rows_text ON MiroAiInteractionLogs_CL_rows (_seq) WHERE typeof(_raw) = 'text';
CREATE VIEW MiroAiInteractionLogs_CL AS SELECT
  TimeGenerated,
  id,
  mirotrail_column('ai_interaction_logs', 'createdAt', _raw) AS createdAt,
  storedAt,
  mirotrail_column('ai_interaction_logs', 'sessionId', _raw) AS sessionId,
  mirotrail_column('ai_interaction_logs', 'messageId', _raw) AS messageId,
  aiFeatureName,
  mirotrail_column('ai_interaction_logs', 'logType', _raw) AS logType,
  mirotrail_column('ai_interaction_logs', 'object_id', _raw) AS object_id,
  mirotrail_column('ai_interaction_logs', 'object_type', _raw) AS object_type,
  mirotrail_column('ai_interaction_logs', 'actor_id', _raw) AS actor_id,
  actor_email,
  mirotrail_column('ai_interaction_logs', 'actor_name', _raw) AS actor_name,
  mirotrail_column('ai_interaction_logs', 'details', _raw) AS details,
  mirotrail_raw(_raw) AS _raw,
  _ingested_at,
  _seq
FROM MiroAiInteractionLogs_CL_rows;
CREATE TRIGGER MiroAiInteractionLogs_CL_delete INSTEAD OF DELETE ON MiroAiInteractionLogs_CL
BEGIN DELETE FROM MiroAiInteractionLogs_CL_rows WHERE _seq = OLD._seq; END;"#;

/// Step 11, several organisations in one store (`docs/store.md`, "Organisations"): an
/// `orgs` table (a small integer `key`, the config's `name`, the Miro `org_id`), and the
/// organisation's key on every stored row (`_org`), checkpoint, backfill slice and alert.
/// Ids are unique per organisation (`UNIQUE (id, _org)`): two organisations' items never
/// deduplicate against each other. The views gain `_org_id` (the Miro organisation id)
/// after `_seq`. Everything already stored belongs to organisation 1, `default`, whose
/// `org_id` is unknown to SQL: the first `run` fills it from the config
/// (`Store::register_orgs`). `_seq` and the alerts' `seq` counters move with their rows.
/// The views are dropped first and created last: renaming a table makes SQLite parse the
/// schema's views and triggers, and a migration may run before mirotrail's SQL functions
/// are registered.
const STEP_11: &str = r#"CREATE TABLE orgs (
  key INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  org_id TEXT UNIQUE,
  created_ms INTEGER NOT NULL
);
INSERT INTO orgs (key, name, org_id, created_ms) VALUES (1, 'default', NULL, 0);
DROP VIEW MiroAuditLogs_CL;
DROP VIEW MiroContentLogs_CL;
DROP VIEW MiroAiInteractionLogs_CL;
ALTER TABLE MiroAuditLogs_CL_rows RENAME TO MiroAuditLogs_CL_rows_v10;
CREATE TABLE MiroAuditLogs_CL_rows (
  _seq INTEGER PRIMARY KEY AUTOINCREMENT,
  _org INTEGER NOT NULL DEFAULT 1 REFERENCES orgs (key),
  TimeGenerated TEXT,
  id TEXT NOT NULL,
  event TEXT NOT NULL DEFAULT '',
  category TEXT NOT NULL DEFAULT '',
  createdBy_email TEXT NOT NULL DEFAULT '',
  _raw BLOB NOT NULL,
  _ingested_at TEXT NOT NULL,
  UNIQUE (id, _org)
);
INSERT INTO MiroAuditLogs_CL_rows (_seq, TimeGenerated, id, event, category, createdBy_email, _raw, _ingested_at)
  SELECT _seq, TimeGenerated, id, event, category, createdBy_email, _raw, _ingested_at FROM MiroAuditLogs_CL_rows_v10 ORDER BY _seq;
DELETE FROM sqlite_sequence WHERE name = 'MiroAuditLogs_CL_rows';
UPDATE sqlite_sequence SET name = 'MiroAuditLogs_CL_rows' WHERE name = 'MiroAuditLogs_CL_rows_v10';
DROP TABLE MiroAuditLogs_CL_rows_v10;
CREATE INDEX MiroAuditLogs_CL_rows_time ON MiroAuditLogs_CL_rows (TimeGenerated);
CREATE INDEX MiroAuditLogs_CL_rows_text ON MiroAuditLogs_CL_rows (_seq) WHERE typeof(_raw) = 'text';
ALTER TABLE MiroContentLogs_CL_rows RENAME TO MiroContentLogs_CL_rows_v10;
CREATE TABLE MiroContentLogs_CL_rows (
  _seq INTEGER PRIMARY KEY AUTOINCREMENT,
  _org INTEGER NOT NULL DEFAULT 1 REFERENCES orgs (key),
  TimeGenerated TEXT,
  id TEXT NOT NULL,
  actionType TEXT NOT NULL DEFAULT '',
  actor_email TEXT NOT NULL DEFAULT '',
  _raw BLOB NOT NULL,
  _ingested_at TEXT NOT NULL,
  UNIQUE (id, _org)
);
INSERT INTO MiroContentLogs_CL_rows (_seq, TimeGenerated, id, actionType, actor_email, _raw, _ingested_at)
  SELECT _seq, TimeGenerated, id, actionType, actor_email, _raw, _ingested_at FROM MiroContentLogs_CL_rows_v10 ORDER BY _seq;
DELETE FROM sqlite_sequence WHERE name = 'MiroContentLogs_CL_rows';
UPDATE sqlite_sequence SET name = 'MiroContentLogs_CL_rows' WHERE name = 'MiroContentLogs_CL_rows_v10';
DROP TABLE MiroContentLogs_CL_rows_v10;
CREATE INDEX MiroContentLogs_CL_rows_time ON MiroContentLogs_CL_rows (TimeGenerated);
CREATE INDEX MiroContentLogs_CL_rows_text ON MiroContentLogs_CL_rows (_seq) WHERE typeof(_raw) = 'text';
ALTER TABLE MiroAiInteractionLogs_CL_rows RENAME TO MiroAiInteractionLogs_CL_rows_v10;
CREATE TABLE MiroAiInteractionLogs_CL_rows (
  _seq INTEGER PRIMARY KEY AUTOINCREMENT,
  _org INTEGER NOT NULL DEFAULT 1 REFERENCES orgs (key),
  TimeGenerated TEXT,
  id TEXT NOT NULL,
  storedAt TEXT,
  aiFeatureName TEXT NOT NULL DEFAULT '',
  actor_email TEXT NOT NULL DEFAULT '',
  _raw BLOB NOT NULL,
  _ingested_at TEXT NOT NULL,
  UNIQUE (id, _org)
);
INSERT INTO MiroAiInteractionLogs_CL_rows (_seq, TimeGenerated, id, storedAt, aiFeatureName, actor_email, _raw, _ingested_at)
  SELECT _seq, TimeGenerated, id, storedAt, aiFeatureName, actor_email, _raw, _ingested_at FROM MiroAiInteractionLogs_CL_rows_v10 ORDER BY _seq;
DELETE FROM sqlite_sequence WHERE name = 'MiroAiInteractionLogs_CL_rows';
UPDATE sqlite_sequence SET name = 'MiroAiInteractionLogs_CL_rows' WHERE name = 'MiroAiInteractionLogs_CL_rows_v10';
DROP TABLE MiroAiInteractionLogs_CL_rows_v10;
CREATE INDEX MiroAiInteractionLogs_CL_rows_time ON MiroAiInteractionLogs_CL_rows (TimeGenerated);
CREATE INDEX MiroAiInteractionLogs_CL_rows_stored ON MiroAiInteractionLogs_CL_rows (storedAt);
CREATE INDEX MiroAiInteractionLogs_CL_rows_text ON MiroAiInteractionLogs_CL_rows (_seq) WHERE typeof(_raw) = 'text';
ALTER TABLE checkpoints RENAME TO checkpoints_v10;
CREATE TABLE checkpoints (
  org INTEGER NOT NULL DEFAULT 1 REFERENCES orgs (key),
  source TEXT NOT NULL,
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
  last_error_ms INTEGER,
  last_sweep_ms INTEGER,
  PRIMARY KEY (org, source)
);
INSERT INTO checkpoints (org, source, watermark_ms, watermark_polled_ms, window_from_ms, window_to_ms,
    window_started_ms, window_read_through_ms, cursor, pages_total, requests_total, last_success_ms,
    last_error, last_error_ms, last_sweep_ms)
  SELECT 1, source, watermark_ms, watermark_polled_ms, window_from_ms, window_to_ms,
    window_started_ms, window_read_through_ms, cursor, pages_total, requests_total, last_success_ms,
    last_error, last_error_ms, last_sweep_ms FROM checkpoints_v10;
DROP TABLE checkpoints_v10;
ALTER TABLE backfill_slices RENAME TO backfill_slices_v10;
CREATE TABLE backfill_slices (
  id INTEGER PRIMARY KEY,
  org INTEGER NOT NULL DEFAULT 1 REFERENCES orgs (key),
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
  UNIQUE (org, source, from_ms, to_ms)
);
INSERT INTO backfill_slices (id, org, source, from_ms, to_ms, read_from_ms, read_through_ms, cursor,
    done, pages, requests, inserted, duplicates, created_ms, done_ms)
  SELECT id, 1, source, from_ms, to_ms, read_from_ms, read_through_ms, cursor,
    done, pages, requests, inserted, duplicates, created_ms, done_ms FROM backfill_slices_v10;
DROP TABLE backfill_slices_v10;
ALTER TABLE alerts RENAME TO alerts_v10;
CREATE TABLE alerts (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  org INTEGER NOT NULL DEFAULT 1 REFERENCES orgs (key),
  rule_id TEXT NOT NULL,
  rule TEXT NOT NULL,
  rule_name TEXT NOT NULL,
  severity TEXT NOT NULL,
  source TEXT NOT NULL,
  group_key TEXT NOT NULL,
  window_start TEXT NOT NULL,
  window_end TEXT NOT NULL,
  hits INTEGER NOT NULL,
  first_seen TEXT NOT NULL,
  last_seen TEXT NOT NULL,
  raised_at TEXT NOT NULL,
  UNIQUE (org, rule_id, group_key, window_start)
);
INSERT INTO alerts (seq, org, rule_id, rule, rule_name, severity, source, group_key, window_start,
    window_end, hits, first_seen, last_seen, raised_at)
  SELECT seq, 1, rule_id, rule, rule_name, severity, source, group_key, window_start,
    window_end, hits, first_seen, last_seen, raised_at FROM alerts_v10 ORDER BY seq;
DELETE FROM sqlite_sequence WHERE name = 'alerts';
UPDATE sqlite_sequence SET name = 'alerts' WHERE name = 'alerts_v10';
DROP TABLE alerts_v10;
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
  _seq,
  (SELECT org_id FROM orgs WHERE orgs.key = _org) AS _org_id
FROM MiroAuditLogs_CL_rows;
CREATE TRIGGER MiroAuditLogs_CL_delete INSTEAD OF DELETE ON MiroAuditLogs_CL
BEGIN DELETE FROM MiroAuditLogs_CL_rows WHERE _seq = OLD._seq; END;
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
  _seq,
  (SELECT org_id FROM orgs WHERE orgs.key = _org) AS _org_id
FROM MiroContentLogs_CL_rows;
CREATE TRIGGER MiroContentLogs_CL_delete INSTEAD OF DELETE ON MiroContentLogs_CL
BEGIN DELETE FROM MiroContentLogs_CL_rows WHERE _seq = OLD._seq; END;
CREATE VIEW MiroAiInteractionLogs_CL AS SELECT
  TimeGenerated,
  id,
  mirotrail_column('ai_interaction_logs', 'createdAt', _raw) AS createdAt,
  storedAt,
  mirotrail_column('ai_interaction_logs', 'sessionId', _raw) AS sessionId,
  mirotrail_column('ai_interaction_logs', 'messageId', _raw) AS messageId,
  aiFeatureName,
  mirotrail_column('ai_interaction_logs', 'logType', _raw) AS logType,
  mirotrail_column('ai_interaction_logs', 'object_id', _raw) AS object_id,
  mirotrail_column('ai_interaction_logs', 'object_type', _raw) AS object_type,
  mirotrail_column('ai_interaction_logs', 'actor_id', _raw) AS actor_id,
  actor_email,
  mirotrail_column('ai_interaction_logs', 'actor_name', _raw) AS actor_name,
  mirotrail_column('ai_interaction_logs', 'details', _raw) AS details,
  mirotrail_raw(_raw) AS _raw,
  _ingested_at,
  _seq,
  (SELECT org_id FROM orgs WHERE orgs.key = _org) AS _org_id
FROM MiroAiInteractionLogs_CL_rows;
CREATE TRIGGER MiroAiInteractionLogs_CL_delete INSTEAD OF DELETE ON MiroAiInteractionLogs_CL
BEGIN DELETE FROM MiroAiInteractionLogs_CL_rows WHERE _seq = OLD._seq; END;"#;

/// Step 13, partly derived rows per organisation (`docs/store.md`, "Organisations"):
/// `partial_rows` is keyed by `(org, source, id)`, as the rows it notes are (ids are
/// unique only per organisation: keyed by `(source, id)`, a second organisation's row of
/// the same id replaced the first one's note, and retention kept or dropped a note by
/// another organisation's row). An existing note belongs to the organisation whose row of
/// that id was stored last no later than the note (the note is written in the row's own
/// transaction, after its `_ingested_at`); a note whose row is gone stays with
/// organisation 1, and goes with the next retention pass as before. The notes are copied
/// aside rather than the table renamed: a rename makes SQLite parse the views, and a
/// migration may run before mirotrail's SQL functions are registered.
const STEP_13: &str = r#"CREATE TEMP TABLE partial_rows_v12 AS SELECT * FROM partial_rows;
DROP TABLE partial_rows;
CREATE TABLE partial_rows (
  org INTEGER NOT NULL DEFAULT 1 REFERENCES orgs (key),
  source TEXT NOT NULL,
  id TEXT NOT NULL,
  unread TEXT NOT NULL,
  stored_ms INTEGER NOT NULL,
  PRIMARY KEY (org, source, id)
);
INSERT INTO partial_rows (org, source, id, unread, stored_ms)
  SELECT coalesce(CASE p.source
      WHEN 'audit_logs' THEN (SELECT t._org FROM MiroAuditLogs_CL_rows t
        WHERE t.id = p.id AND t._ingested_at <= (strftime('%Y-%m-%dT%H:%M:%S', p.stored_ms / 1000, 'unixepoch') || printf('.%03dZ', p.stored_ms % 1000))
        ORDER BY t._seq DESC LIMIT 1)
      WHEN 'content_logs' THEN (SELECT t._org FROM MiroContentLogs_CL_rows t
        WHERE t.id = p.id AND t._ingested_at <= (strftime('%Y-%m-%dT%H:%M:%S', p.stored_ms / 1000, 'unixepoch') || printf('.%03dZ', p.stored_ms % 1000))
        ORDER BY t._seq DESC LIMIT 1)
      WHEN 'ai_interaction_logs' THEN (SELECT t._org FROM MiroAiInteractionLogs_CL_rows t
        WHERE t.id = p.id AND t._ingested_at <= (strftime('%Y-%m-%dT%H:%M:%S', p.stored_ms / 1000, 'unixepoch') || printf('.%03dZ', p.stored_ms % 1000))
        ORDER BY t._seq DESC LIMIT 1)
    END, 1), p.source, p.id, p.unread, p.stored_ms
  FROM temp.partial_rows_v12 p;
DROP TABLE temp.partial_rows_v12;"#;

/// Step 14, stored rule columns (`docs/store.md`): the derived columns that the rule pack,
/// the report and the Sentinel sample queries read over every row (no event filter to
/// narrow them) are stored, so such a query reads no item: `createdBy_id`,
/// `createdBy_type`, `context_ip` and `context_organization_name` of the audit logs,
/// `contentId` of the content logs. In one transaction: the columns are added, filled from
/// `_raw` by `mirotrail_column` (the function the views read them with, so every value is
/// what the view showed: a connection that runs this step has mirotrail's SQL functions),
/// and the two views read them instead of deriving them. The columns are nullable and
/// without a default: they hold exactly what the transform derives.
const STEP_14: &str = r#"ALTER TABLE MiroAuditLogs_CL_rows ADD COLUMN createdBy_id TEXT;
ALTER TABLE MiroAuditLogs_CL_rows ADD COLUMN createdBy_type TEXT;
ALTER TABLE MiroAuditLogs_CL_rows ADD COLUMN context_ip TEXT;
ALTER TABLE MiroAuditLogs_CL_rows ADD COLUMN context_organization_name TEXT;
UPDATE MiroAuditLogs_CL_rows SET
  createdBy_id = mirotrail_column('audit_logs', 'createdBy_id', _raw),
  createdBy_type = mirotrail_column('audit_logs', 'createdBy_type', _raw),
  context_ip = mirotrail_column('audit_logs', 'context_ip', _raw),
  context_organization_name = mirotrail_column('audit_logs', 'context_organization_name', _raw);
ALTER TABLE MiroContentLogs_CL_rows ADD COLUMN contentId TEXT;
UPDATE MiroContentLogs_CL_rows SET
  contentId = mirotrail_column('content_logs', 'contentId', _raw);
DROP VIEW MiroAuditLogs_CL;
CREATE VIEW MiroAuditLogs_CL AS SELECT
  TimeGenerated,
  id,
  mirotrail_column('audit_logs', 'createdAt', _raw) AS createdAt,
  event,
  category,
  mirotrail_column('audit_logs', 'logType', _raw) AS logType,
  createdBy_email,
  createdBy_id,
  mirotrail_column('audit_logs', 'createdBy_name', _raw) AS createdBy_name,
  createdBy_type,
  mirotrail_column('audit_logs', 'object_id', _raw) AS object_id,
  mirotrail_column('audit_logs', 'object_name', _raw) AS object_name,
  context_ip,
  mirotrail_column('audit_logs', 'context_team_id', _raw) AS context_team_id,
  mirotrail_column('audit_logs', 'context_team_name', _raw) AS context_team_name,
  mirotrail_column('audit_logs', 'context_team_type', _raw) AS context_team_type,
  mirotrail_column('audit_logs', 'context_organization_id', _raw) AS context_organization_id,
  context_organization_name,
  mirotrail_column('audit_logs', 'context_organization_type', _raw) AS context_organization_type,
  mirotrail_column('audit_logs', 'details', _raw) AS details,
  mirotrail_raw(_raw) AS _raw,
  _ingested_at,
  _seq,
  (SELECT org_id FROM orgs WHERE orgs.key = _org) AS _org_id
FROM MiroAuditLogs_CL_rows;
CREATE TRIGGER MiroAuditLogs_CL_delete INSTEAD OF DELETE ON MiroAuditLogs_CL
BEGIN DELETE FROM MiroAuditLogs_CL_rows WHERE _seq = OLD._seq; END;
DROP VIEW MiroContentLogs_CL;
CREATE VIEW MiroContentLogs_CL AS SELECT
  TimeGenerated,
  id,
  mirotrail_column('content_logs', 'actionTime', _raw) AS actionTime,
  actionType,
  mirotrail_column('content_logs', 'actor_id', _raw) AS actor_id,
  actor_email,
  mirotrail_column('content_logs', 'actor_name', _raw) AS actor_name,
  contentId,
  mirotrail_column('content_logs', 'itemId', _raw) AS itemId,
  mirotrail_column('content_logs', 'itemType', _raw) AS itemType,
  mirotrail_column('content_logs', 'relationships', _raw) AS relationships,
  mirotrail_column('content_logs', 'state', _raw) AS state,
  mirotrail_raw(_raw) AS _raw,
  _ingested_at,
  _seq,
  (SELECT org_id FROM orgs WHERE orgs.key = _org) AS _org_id
FROM MiroContentLogs_CL_rows;
CREATE TRIGGER MiroContentLogs_CL_delete INSTEAD OF DELETE ON MiroContentLogs_CL
BEGIN DELETE FROM MiroContentLogs_CL_rows WHERE _seq = OLD._seq; END;"#;

/// Incremental detection: `detect_plans` names each distinct rule plan by its aggregate
/// SQL (`definition`: a rule edited in anything but its threshold is a new plan, seeded
/// from the stored rows), `detect_groups` holds that plan's count of first-step rows,
/// first and last of them, and last second-step row per window, organisation
/// (`orgs.key`) and group (a JSON array of the key values), for the windows from the
/// plan's `horizon` (UNIX seconds, a window start, a couple of days back) on. They cover
/// exactly those windows' rows up to the source's `detect_offsets.evaluated_seq` and move
/// in its transaction.
const STEP_15: &str = r#"CREATE TABLE detect_plans (
  id INTEGER PRIMARY KEY,
  source TEXT NOT NULL,
  window_secs INTEGER NOT NULL,
  horizon INTEGER NOT NULL,
  definition TEXT NOT NULL UNIQUE
);
CREATE TABLE detect_groups (
  plan INTEGER NOT NULL,
  window_start INTEGER NOT NULL,
  org INTEGER NOT NULL,
  group_key TEXT NOT NULL,
  hits INTEGER NOT NULL,
  first_seen TEXT,
  last_seen TEXT,
  then_seen TEXT,
  PRIMARY KEY (plan, window_start, org, group_key)
) WITHOUT ROWID;"#;

/// The index of the rows stored as text (`raw::compact` finds them with it) says "text"
/// as `_raw < x''` rather than `typeof(_raw) = 'text'` (`_raw` is only ever text or a
/// blob, and SQLite orders every text before every blob): the same rows, but with a
/// function call in an index's condition SQLite may have to stop an `INSERT` halfway, so
/// it kept a statement journal for each multi-row `INSERT` (`docs/store.md`, "Writing
/// rows").
const STEP_16: &str = r#"DROP INDEX MiroAuditLogs_CL_rows_text;
CREATE INDEX MiroAuditLogs_CL_rows_text ON MiroAuditLogs_CL_rows (_seq) WHERE _raw < x'';
DROP INDEX MiroContentLogs_CL_rows_text;
CREATE INDEX MiroContentLogs_CL_rows_text ON MiroContentLogs_CL_rows (_seq) WHERE _raw < x'';
DROP INDEX MiroAiInteractionLogs_CL_rows_text;
CREATE INDEX MiroAiInteractionLogs_CL_rows_text ON MiroAiInteractionLogs_CL_rows (_seq) WHERE _raw < x'';"#;

/// The migrations, in order. Step N brings `user_version` from N to N+1.
fn migrations() -> [&'static str; 16] {
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
        // 7: AI interaction logs, mirotrail's own table designed like the two Sentinel
        // tables (`docs/sentinel-contract.md`): `TimeGenerated` from `createdAt`, and the
        // index on `storedAt` as well, the time the API's windows filter on.
        "CREATE TABLE MiroAiInteractionLogs_CL (
            TimeGenerated TEXT,
            id TEXT NOT NULL UNIQUE,
            createdAt TEXT,
            storedAt TEXT,
            sessionId TEXT NOT NULL DEFAULT '',
            messageId TEXT NOT NULL DEFAULT '',
            aiFeatureName TEXT NOT NULL DEFAULT '',
            logType TEXT NOT NULL DEFAULT '',
            object_id TEXT NOT NULL DEFAULT '',
            object_type TEXT NOT NULL DEFAULT '',
            actor_id TEXT NOT NULL DEFAULT '',
            actor_email TEXT NOT NULL DEFAULT '',
            actor_name TEXT NOT NULL DEFAULT '',
            details TEXT,
            _raw TEXT NOT NULL,
            _ingested_at TEXT NOT NULL,
            _seq INTEGER PRIMARY KEY AUTOINCREMENT
        );
        CREATE INDEX MiroAiInteractionLogs_CL_time ON MiroAiInteractionLogs_CL (TimeGenerated);
        CREATE INDEX MiroAiInteractionLogs_CL_stored ON MiroAiInteractionLogs_CL (storedAt);",
        // 8: what a sink keeps between runs besides its offset (a Splunk HEC sink's
        // acknowledgement channel), one value per sink and key.
        "CREATE TABLE sink_state (
            sink TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (sink, key)
        );",
        // 9: alerts raised by the detection rules (one per rule, group and window), and
        // how far each source's rows have been evaluated (moved in the alerts'
        // transaction). `seq` orders alerts for delivery.
        "CREATE TABLE alerts (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            rule_id TEXT NOT NULL,
            rule TEXT NOT NULL,
            rule_name TEXT NOT NULL,
            severity TEXT NOT NULL,
            source TEXT NOT NULL,
            group_key TEXT NOT NULL,
            window_start TEXT NOT NULL,
            window_end TEXT NOT NULL,
            hits INTEGER NOT NULL,
            first_seen TEXT NOT NULL,
            last_seen TEXT NOT NULL,
            raised_at TEXT NOT NULL,
            UNIQUE (rule_id, group_key, window_start)
        );
        CREATE TABLE detect_offsets (
            source TEXT PRIMARY KEY,
            evaluated_seq INTEGER NOT NULL,
            updated_ms INTEGER NOT NULL
        );",
        // 10: the compact store: derived columns on read, `_raw` compressed (see STEP_10).
        STEP_10,
        // 11: organisations: `orgs`, and the organisation on every row, checkpoint,
        // backfill slice and alert (see STEP_11).
        STEP_11,
        // 12: late re-reads (`collect/window.rs`): how far each source's slices of time
        // have been re-read once `overlap` old (empty on an older store: nothing before the
        // watermark is due), and whether the window in progress is such a re-read.
        // `last_sweep_ms` (step 4) is no longer written or read.
        "ALTER TABLE checkpoints ADD COLUMN reread_through_ms INTEGER;
        ALTER TABLE checkpoints ADD COLUMN window_reread INTEGER NOT NULL DEFAULT 0;",
        // 13: partly derived rows noted per organisation (see STEP_13).
        STEP_13,
        // 14: stored rule columns: what rules and reports read over every row is stored,
        // filled from `_raw` (see STEP_14; needs mirotrail's SQL functions).
        STEP_14,
        // 15: incremental detection (`detect/eval.rs`): each rule plan's aggregates per
        // organisation, group and window, moved with `detect_offsets` (see STEP_15).
        STEP_15,
        // 16: the index of rows stored as text without a function call in its condition,
        // so a multi-row insert needs no statement journal (see STEP_16).
        STEP_16,
    ]
}

/// Brings the schema up to date; safe to run on every open, twice in a row, and from two
/// processes at once (`run` beside `backfill`): each step reads the version inside an
/// immediate (write-locked) transaction, so only one process applies it. `conn` must have
/// mirotrail's SQL functions (`raw::register_functions`): some steps fill columns with them.
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

/// The version of a store just before the organisations step (tests convert such a
/// store; the step's number is found, not written, so steps can be renumbered).
#[cfg(test)]
pub(crate) fn version_before_orgs() -> i64 {
    let index = migrations()
        .iter()
        .position(|step| *step == STEP_11)
        .expect("the organisations step is a migration");
    i64::try_from(index).expect("a few steps")
}

/// The version of a store just before partly derived rows were noted per organisation.
#[cfg(test)]
pub(crate) fn version_before_partial_rows_per_org() -> i64 {
    let index = migrations()
        .iter()
        .position(|step| *step == STEP_13)
        .expect("the partial rows step is a migration");
    i64::try_from(index).expect("a few steps")
}

/// The version of a store just before the stored rule columns step (found, like
/// [`version_before_orgs`], not written).
#[cfg(test)]
pub(crate) fn version_before_rule_columns() -> i64 {
    let index = migrations()
        .iter()
        .position(|step| *step == STEP_14)
        .expect("the stored rule columns step is a migration");
    i64::try_from(index).expect("a few steps")
}

/// Whether bringing a store from `version` up to date rewrites every stored row in place
/// (the stored rule columns step fills its columns in each row), which leaves the
/// tables' pages part full (`Store::open` then rewrites the file).
pub(crate) fn rewrites_rows(version: i64) -> bool {
    let index = migrations()
        .iter()
        .position(|step| *step == STEP_14)
        .expect("the stored rule columns step is a migration");
    usize::try_from(version).is_ok_and(|v| v > 0 && v <= index)
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

    #[test]
    fn only_a_store_from_before_the_rule_columns_has_its_rows_rewritten() {
        assert!(rewrites_rows(version_before_rule_columns()));
        assert!(rewrites_rows(version_before_orgs()));
        assert!(!rewrites_rows(version_before_rule_columns() + 1));
        assert!(!rewrites_rows(latest_version()));
        // A new store has no rows to rewrite.
        assert!(!rewrites_rows(0));
    }

    /// Every table's columns, in the store, are the transform's column list followed by
    /// the bookkeeping columns (a later step that adds a table must keep them in step).
    #[test]
    fn every_table_has_the_transform_columns_in_order() {
        let mut conn = Connection::open_in_memory().unwrap();
        // The views derive columns, and a step fills them, with mirotrail's SQL functions.
        crate::store::raw::register_functions(&conn, &crate::store::raw::RawCodec::new(None))
            .unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        for source in crate::config::SourceKind::ALL {
            let stmt = conn
                .prepare(&format!("SELECT * FROM {} LIMIT 0", source.table()))
                .unwrap();
            let names: Vec<&str> = stmt.column_names().collect();
            let mut expected: Vec<&str> = crate::store::transform::columns(source).to_vec();
            expected.extend(["_raw", "_ingested_at", "_seq", "_org_id"]);
            assert_eq!(names, expected, "{source}");
            drop(stmt);
        }
    }

    /// A function call in the condition of a rows table's index makes SQLite keep a
    /// statement journal for every multi-row insert (STEP_16): no index condition calls
    /// one, and the rows stored as text are still found through their index.
    #[test]
    fn rows_index_conditions_call_no_function_and_the_text_rows_index_is_used() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::raw::register_functions(&conn, &crate::store::raw::RawCodec::new(None))
            .unwrap();
        migrate(&mut conn).unwrap();
        for source in crate::config::SourceKind::ALL {
            let table = crate::store::raw::rows_table(source);
            let conditions: Vec<String> = conn
                .prepare(
                    "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 \
                     AND sql LIKE '% WHERE %'",
                )
                .unwrap()
                .query_map([table], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(conditions.len(), 1, "{table}: {conditions:?}");
            for sql in &conditions {
                let condition = &sql[sql.find(" WHERE ").unwrap()..];
                assert!(!condition.contains('('), "{table}: {sql}");
            }
            let plan: Vec<String> = conn
                .prepare(&format!(
                    "EXPLAIN QUERY PLAN {}",
                    crate::store::raw::text_rows_sql(table)
                ))
                .unwrap()
                .query_map([0, 10], |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan.iter().any(|d| d.contains(&format!("{table}_text"))),
                "{table}: {plan:?}"
            );
        }
    }
}
