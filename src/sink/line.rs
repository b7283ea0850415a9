//! The lines the file and stdout sinks write, in the sink's [`RecordFormat`]: `json`, a
//! table row (the table's columns in order, dynamic columns as JSON, null datetimes as
//! null, `Type`, the table name, as Log Analytics shows it, and `_org_id`, the Miro
//! organisation the row came from (null when the config does not give it), as the store's
//! views show it), or `ocsf`, the row's Miro item as an OCSF event (`crate::ocsf`,
//! `docs/ocsf.md`).
//!
//! Invariant: a batch's lines are in `_seq` order, one per row; a row with no line in the
//! format (an OCSF event needs a time) is listed with the reason, never skipped silently.

use crate::ocsf;
use crate::source::SourceKind;
use crate::store::{OutboxRow, transform};

/// What a file or stdout sink writes for each row (`format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordFormat {
    /// The table row as NDJSON (the default).
    #[default]
    Json,
    /// The Miro item as an OCSF 1.1.0 event, one per line.
    Ocsf,
}

impl RecordFormat {
    /// Reads the `format` key (absent: `json`); the error says what is allowed.
    pub fn parse(text: Option<&str>) -> Result<Self, String> {
        match text {
            None | Some("json") => Ok(RecordFormat::Json),
            Some("ocsf") => Ok(RecordFormat::Ocsf),
            Some(other) => Err(format!(
                "`{other}` is not a format: use \"json\" (table rows, the default) or \"ocsf\" \
                 (OCSF 1.1.0 events, docs/ocsf.md)"
            )),
        }
    }
}

/// A batch's lines, and the rows that have none (`_seq`, why).
#[derive(Debug, Default)]
pub(super) struct EncodedBatch {
    pub(super) bytes: Vec<u8>,
    pub(super) refused: Vec<(i64, String)>,
}

/// The lines (each ending in a newline) of `rows` in `format`.
pub(super) fn encode_batch(
    format: RecordFormat,
    source: SourceKind,
    rows: &[OutboxRow],
) -> EncodedBatch {
    let mut batch = EncodedBatch {
        bytes: Vec::with_capacity(rows.len() * 512),
        refused: Vec::new(),
    };
    for row in rows {
        match format {
            RecordFormat::Json => {
                batch
                    .bytes
                    .extend_from_slice(table_row_json(source, row).as_bytes());
            }
            RecordFormat::Ocsf => {
                if let Err(e) =
                    ocsf::encode_for_org(source, &row.raw, row.org_id.as_deref(), &mut batch.bytes)
                {
                    batch.refused.push((row.seq, e.to_string()));
                    continue;
                }
            }
        }
        batch.bytes.push(b'\n');
    }
    batch
}

/// One row as one line in `format` (no newline), or why it has none (OCSF needs what
/// the item may lack, such as a readable time).
pub(super) fn encode_line(
    format: RecordFormat,
    source: SourceKind,
    row: &OutboxRow,
) -> Result<String, String> {
    match format {
        RecordFormat::Json => Ok(table_row_json(source, row)),
        RecordFormat::Ocsf => {
            let mut out = Vec::with_capacity(2 * row.raw.len());
            ocsf::encode_for_org(source, &row.raw, row.org_id.as_deref(), &mut out)
                .map_err(|e| e.to_string())?;
            String::from_utf8(out).map_err(|e| format!("the OCSF event is not UTF-8: {e}"))
        }
    }
}

/// One row as a JSON object text (no newline).
pub fn table_row_json(source: SourceKind, row: &OutboxRow) -> String {
    let columns = transform::columns(source);
    let mut out = String::with_capacity(row.raw.len() + 256);
    out.push('{');
    for (i, (column, cell)) in columns.iter().zip(row.cells(source)).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(column);
        out.push_str("\":");
        match cell {
            None => out.push_str("null"),
            Some(text) if transform::DYNAMIC_COLUMNS.contains(column) => {
                // Stored by the transform as JSON text; keep it as JSON, or as a string
                // if it somehow is not.
                match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(v) => out.push_str(&v.to_string()),
                    Err(_) => out.push_str(&serde_json::Value::String(text).to_string()),
                }
            }
            Some(text) => out.push_str(&serde_json::Value::String(text).to_string()),
        }
    }
    out.push_str(",\"Type\":\"");
    out.push_str(source.table());
    out.push_str("\",\"_org_id\":");
    match &row.org_id {
        Some(id) => out.push_str(&serde_json::Value::String(id.clone()).to_string()),
        None => out.push_str("null"),
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ocsf_batch_has_a_line_per_row_and_lists_rows_without_one() {
        let rows = [
            OutboxRow {
                org_id: None,
                seq: 1,
                raw: r#"{"id":"1","event":"board_opened","createdAt":"2024-01-01T00:00:00+0000"}"#
                    .into(),
            },
            OutboxRow {
                org_id: None,
                seq: 2,
                raw: r#"{"id":"2","event":"board_opened"}"#.into(),
            },
            OutboxRow {
                org_id: None,
                seq: 3,
                raw: r#"{"id":"3","event":"sign_in_failed","createdAt":"2024-01-01T00:00:01Z"}"#
                    .into(),
            },
        ];
        let batch = encode_batch(RecordFormat::Ocsf, SourceKind::AuditLogs, &rows);
        let text = String::from_utf8(batch.bytes).unwrap();
        let uids: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["metadata"]["uid"].to_string()
            })
            .collect();
        assert_eq!(uids, [r#""1""#, r#""3""#]);
        assert_eq!(batch.refused.len(), 1);
        assert_eq!(batch.refused[0].0, 2);
        assert!(
            batch.refused[0].1.contains("createdAt"),
            "{:?}",
            batch.refused
        );
        let json = encode_batch(RecordFormat::Json, SourceKind::AuditLogs, &rows);
        assert_eq!(json.bytes.iter().filter(|&&b| b == b'\n').count(), 3);
        assert!(json.refused.is_empty());
    }

    /// Two organisations' items of the same id: each OCSF event names its organisation
    /// in `metadata.tenant_uid` (none when the organisation is unknown).
    #[test]
    fn ocsf_events_name_the_organisation_of_their_row() {
        let raw = r#"{"id":"same","event":"board_opened","createdAt":"2024-01-01T00:00:00+0000"}"#;
        let rows: Vec<OutboxRow> = [Some("111"), Some("222"), None]
            .into_iter()
            .enumerate()
            .map(|(i, org)| OutboxRow {
                org_id: org.map(str::to_string),
                seq: i64::try_from(i).unwrap() + 1,
                raw: raw.into(),
            })
            .collect();
        let batch = encode_batch(RecordFormat::Ocsf, SourceKind::AuditLogs, &rows);
        let tenants: Vec<serde_json::Value> = String::from_utf8(batch.bytes)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["metadata"]["tenant_uid"]
                    .clone()
            })
            .collect();
        assert_eq!(
            tenants,
            [
                serde_json::json!("111"),
                serde_json::json!("222"),
                serde_json::Value::Null
            ]
        );
    }

    #[test]
    fn the_format_key_takes_json_or_ocsf_and_says_so_otherwise() {
        assert_eq!(RecordFormat::parse(None), Ok(RecordFormat::Json));
        assert_eq!(RecordFormat::parse(Some("ocsf")), Ok(RecordFormat::Ocsf));
        let err = RecordFormat::parse(Some("OCSF")).unwrap_err();
        assert!(
            err.contains("\"json\"") && err.contains("\"ocsf\""),
            "{err}"
        );
    }

    #[test]
    fn a_row_is_one_json_object_in_column_order() {
        let raw = r#"{"id":"1","event":"board_opened","createdAt":"2024-01-01T00:00:00Z","details":{"a":"\"q\""}}"#;
        let line = table_row_json(
            SourceKind::AuditLogs,
            &OutboxRow {
                seq: 1,
                raw: raw.into(),
                org_id: None,
            },
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["id"], "1");
        assert_eq!(v["details"]["a"], "\"q\"");
        assert_eq!(v["createdBy_email"], "");
        assert_eq!(v["Type"], "MiroAuditLogs_CL");
        assert!(line.starts_with("{\"TimeGenerated\":\"2024-01-01T00:00:00.000Z\",\"id\":\"1\""));
    }

    /// Integers beyond 2^53 in `details` lost digits in the NDJSON line.
    #[test]
    fn big_numbers_keep_their_digits_in_the_line() {
        let raw = r#"{"id":"1","details":{"big":30744573469876543210123}}"#;
        let line = table_row_json(
            SourceKind::AuditLogs,
            &OutboxRow {
                seq: 1,
                raw: raw.into(),
                org_id: None,
            },
        );
        assert!(
            line.contains(r#""details":{"big":30744573469876543210123}"#),
            "{line}"
        );
    }
}
