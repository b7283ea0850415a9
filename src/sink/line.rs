//! The NDJSON line of a table row, shared by the file and stdout sinks: the table's
//! columns in order (dynamic columns as JSON, null datetimes as null), `Type`, the
//! table name, as Log Analytics shows it, and `_org_id`, the Miro organisation the row
//! came from (null when the config does not give it), as the store's views show it.

use crate::source::SourceKind;
use crate::store::{OutboxRow, transform};

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
