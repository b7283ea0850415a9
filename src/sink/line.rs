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
    let mut out = String::with_capacity(row.raw.len() + 256);
    write_table_row(source, row, &transform::to_row(source, &row.raw), &mut out);
    out
}

/// Appends `row`'s table row line (no newline) to `out`, from `derived`, the transform
/// of its `raw` (`transform::to_row`), so that a caller needing other cells (the S3
/// sink's event hour) transforms the item once.
///
/// A dynamic column's cell is compact JSON exactly as serde_json writes it (the
/// transform's one form, `docs/sentinel-contract.md`), so it is copied, not parsed and
/// written again; only a partial row (an item the transform could not fully read) may
/// hold a dynamic cell that is not JSON, which is then written as a string.
pub(super) fn write_table_row(
    source: SourceKind,
    row: &OutboxRow,
    derived: &transform::Row,
    out: &mut String,
) {
    let columns = transform::columns(source);
    out.push('{');
    for (i, (column, cell)) in columns.iter().zip(&derived.cells).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(column);
        out.push_str("\":");
        match cell {
            None => out.push_str("null"),
            Some(text) if transform::DYNAMIC_COLUMNS.contains(column) => {
                if derived.partial.is_none() {
                    out.push_str(text);
                } else {
                    match serde_json::from_str::<serde_json::Value>(text) {
                        Ok(v) => out.push_str(&v.to_string()),
                        Err(_) => json_string(text, out),
                    }
                }
            }
            Some(text) => json_string(text, out),
        }
    }
    out.push_str(",\"Type\":\"");
    out.push_str(source.table());
    out.push_str("\",\"_org_id\":");
    match &row.org_id {
        Some(id) => json_string(id, out),
        None => out.push_str("null"),
    }
    out.push('}');
}

/// Appends `text` as a JSON string, escaped as serde_json escapes it (`"`, `\\` and the
/// control characters; a text with none of them is copied between quotes).
pub(crate) fn json_string(text: &str, out: &mut String) {
    if text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(&serde_json::to_string(text).expect("a string serialises"));
    } else {
        out.push('"');
        out.push_str(text);
        out.push('"');
    }
}

/// Items an encoder must treat exactly as its reference does: escapes, duplicate keys,
/// members of every JSON type where a string or object is expected, numbers no machine
/// type holds, nesting around serde_json's limit, and text that is not an object.
#[cfg(test)]
pub(crate) fn hostile_items() -> Vec<String> {
    let nest = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let mut items: Vec<String> = [
        r#"{"id":"1","event":"sign_in_failed","category":"authentication","createdAt":"2024-05-01T10:00:00.123+0000","createdBy":{"type":"user","id":"u1","email":"a@example.com","name":"Ann"},"context":{"ip":"203.0.113.9","team":{"id":"t"},"organization":{"name":"o"}},"details":{"b":1,"a":[true,null,"x"]}}"#,
        r#"{"id":"2","event":"user_role_changed","category":"users","createdAt":"2024-05-01T10:00:00Z","createdBy":{"id":"u1","email":"u1","name":"u1"},"context":{"ip":"2001:db8::1"}}"#,
        r#"{"id":"3","event":"x","category":"security","createdAt":"2024-05-01T10:00:00Z","createdBy":["a"],"context":"203.0.113.9"}"#,
        r#"{"id":"4","event":"x","createdAt":"2024-05-01T10:00:00Z","createdBy":"u","context":{"ip":42},"details":"text"}"#,
        r#"{"id":"5","event":"a","event":"sign_in_succeeded","createdAt":"2024-05-01T10:00:00Z"}"#,
        r#"{"id":"6","createdBy":{"id":"a","id":"b"},"createdAt":"2024-05-01T10:00:00Z"}"#,
        r#"{"id":"7","event":"q\"uote\\back\nline\u0001\u00e9\u2028\ud83d\ude00é","createdBy":{"name":"\u0041nn \"the\" </script>"}}"#,
        r#"{"id":"8","event":"lone \ud800 surrogate"}"#,
        r#"{"id":"9","details":{"s":"lone \udfff"}}"#,
        r#"{"id":10,"event":"number id"}"#,
        r#"{"id":"","event":"empty id"}"#,
        r#"{"event":"no id","createdAt":"2024-05-01T10:00:00Z"}"#,
        r#"{"id":{"a":1},"event":"object id"}"#,
        r#"{"id":"11","details":{"big":30744573469876543210123,"huge":1e400,"neg":-0,"exp":1.0E+2,"frac":0.1000}}"#,
        r#"{"id":"12","createdAt":"not a time","createdBy":null,"context":null,"details":null}"#,
        r#"{"id":"13","createdAt":1714557600000,"createdBy":7,"context":[1,{"ip":"1.2.3.4"}]}"#,
        r#"{"id":"14","createdAt":"+10000-01-01T00:00:00Z"}"#,
        r#"{"\u0069d":"15","\u0065vent":"escaped keys","createdBy":{"\u0065mail":"e@x"}}"#,
        r#"{"id":"16","details":{"k":1,"k":2,"a":{"z":0,"y":[{"b":1,"a":2}]}}}"#,
        "  \n{\"id\":\"17\",\"event\":\"spaced\"}\n ",
        r#"{"id":"18","contentId":"b","actionType":"update","actionTime":"2024-05-01T11:00:00.250Z","actor":{"id":"u2","email":"b@example.com","name":"B"},"itemType":"widget","itemId":"w","state":{"x":"\u00e9"},"relationships":[{"b":1}]}"#,
        r#"{"id":"19","actionType":"","actionTime":"2024-05-01T11:00:00Z","actor":{"id":""}}"#,
        r#"{"id":"20","createdAt":"2024-05-01T12:00:00.000Z","storedAt":"2024-05-01T12:00:00.500Z","aiFeatureName":"","logType":"request","actor":{"id":"u3"},"object":{"id":"o"},"details":{"prompt":"\t"}}"#,
        r#"["not","an","object"]"#,
        r#""a string""#,
        "42",
        "null",
        "",
        "{not json",
        r#"{"id":"21"} trailing"#,
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    for depth in [98, 99, 100, 101, 126, 127, 128, 129, 200] {
        items.push(format!(
            r#"{{"id":"d{depth}","event":"deep","createdAt":"2024-05-01T10:00:00Z","createdBy":{{"id":"u"}},"details":{}}}"#,
            nest(depth)
        ));
        items.push(format!(
            r#"{{"id":"e{depth}","context":{{"ip":"10.0.0.1"}},"other":{}}}"#,
            nest(depth)
        ));
    }
    items
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

    /// The line as earlier versions wrote it: every dynamic cell parsed and written again.
    fn reference_table_row_json(source: SourceKind, row: &OutboxRow) -> String {
        let columns = transform::columns(source);
        let mut out = String::new();
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

    #[test]
    fn table_rows_copy_dynamic_cells_and_equal_the_reparsing_encoder_on_hostile_items() {
        for raw in hostile_items() {
            for source in SourceKind::ALL {
                for org_id in [None, Some("30744573458\"2\\1141000\u{7}".to_string())] {
                    let row = OutboxRow {
                        seq: 9,
                        raw: raw.clone(),
                        org_id,
                    };
                    assert_eq!(
                        table_row_json(source, &row),
                        reference_table_row_json(source, &row),
                        "{source:?} {raw}"
                    );
                }
            }
        }
    }

    #[test]
    fn json_strings_are_escaped_as_serde_json_escapes_them() {
        for text in ["", "plain é \u{2028} 😀", "q\"b\\", "\u{0}\u{1f}\u{7f}\n\t"] {
            let mut out = String::new();
            json_string(text, &mut out);
            assert_eq!(out, serde_json::to_string(text).unwrap());
        }
    }
}
