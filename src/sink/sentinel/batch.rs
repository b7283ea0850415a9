//! Records and chunks: each stored row becomes its stream record (`stream_record`: the
//! Miro item restricted to the stream declaration's columns), serialized once;
//! consecutive records are packed into chunks of at most `max_batch_bytes` of
//! uncompressed JSON array, then gzipped.
//!
//! Invariants: chunks keep `_seq` order and cover every record exactly once; a chunk is
//! over the limit only when it holds a single record that alone is over it.

use std::io::Write;
use std::ops::Range;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::source::SourceKind;
use crate::store::OutboxRow;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::store::transform::{TransformError, kql_tostring, members, stream_columns};

/// The Sentinel stream record for a raw item: the item restricted to the stream
/// declaration's columns (the DCR in Azure then applies the transformation).
///
/// A member nested deeper than serde_json follows (as the store's transform does) is sent as a string
/// holding its exact JSON text, so that the item still reaches Sentinel whole.
pub fn stream_record(source: SourceKind, raw: &str) -> Result<Map<String, Value>, TransformError> {
    let mut record = Map::new();
    if let Ok(Value::Object(mut item)) = serde_json::from_str::<Value>(raw) {
        for column in stream_columns(source) {
            if let Some(v) = item.remove(*column) {
                record.insert((*column).to_string(), v);
            }
        }
        return Ok(record);
    }
    for (key, value) in members(raw).map_err(TransformError)? {
        if stream_columns(source).contains(&key.as_ref()) {
            let v = serde_json::from_str::<Value>(value.get())
                .unwrap_or_else(|_| Value::String(value.get().trim().to_string()));
            record.insert(key.into_owned(), v);
        }
    }
    Ok(record)
}

/// Azure truncates a field value longer than this.
pub(crate) const MAX_VALUE_BYTES: usize = 64 * 1024;

/// A value Azure will truncate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LongValue {
    pub seq: i64,
    pub column: String,
    pub bytes: usize,
}

/// The serialized stream records of a batch, one after the other in one buffer (no
/// allocation per record).
#[derive(Debug, Default)]
pub(crate) struct Records {
    buf: Vec<u8>,
    spans: Vec<Span>,
}

/// Where one record is in [`Records::buf`].
#[derive(Debug, Clone)]
struct Span {
    seq: i64,
    json: Range<usize>,
    /// The JSON text of the record's `id` value (empty when it has none).
    id: Range<usize>,
}

impl Records {
    pub(crate) fn seq(&self, i: usize) -> i64 {
        self.spans[i].seq
    }

    /// Record `i` as JSON.
    pub(crate) fn json(&self, i: usize) -> &[u8] {
        &self.buf[self.spans[i].json.clone()]
    }

    /// The Miro id of record `i` (KQL `tostring`), to name it in errors.
    pub(crate) fn id(&self, i: usize) -> String {
        let text = &self.buf[self.spans[i].id.clone()];
        let value = serde_json::from_slice::<Value>(text).ok();
        kql_tostring(value.as_ref())
    }

    /// The serialized length of each record.
    pub(crate) fn lengths(&self) -> Vec<usize> {
        self.spans.iter().map(|s| s.json.len()).collect()
    }
}

/// Serializes the stream records of `rows`, listing values over 64 KB. Each record is
/// the item's stream members spliced as Miro sent them (keys in sorted order, as
/// `stream_record` gives them): no JSON tree is built, except for a member that may
/// not parse on its own (a `\u` escape, or nested deeper than serde_json follows),
/// which goes through [`stream_record`]'s rules.
pub(crate) fn encode(
    source: SourceKind,
    rows: &[OutboxRow],
) -> Result<(Records, Vec<LongValue>), String> {
    let columns = stream_columns(source);
    let mut order: Vec<usize> = (0..columns.len()).collect();
    order.sort_by_key(|&i| columns[i]);
    let total: usize = rows.iter().map(|r| r.raw.len()).sum();
    let mut out = Records {
        buf: Vec::with_capacity(total),
        spans: Vec::with_capacity(rows.len()),
    };
    let mut long = Vec::new();
    let mut picked: Vec<Option<&RawValue>> = vec![None; columns.len()];
    for row in rows {
        let cannot = |e: String| {
            format!(
                "stored row _seq {} cannot be sent to Sentinel: {e}",
                row.seq
            )
        };
        let members = members(&row.raw).map_err(|e| cannot(TransformError(e).to_string()))?;
        picked.iter_mut().for_each(|p| *p = None);
        for (key, value) in &members {
            if let Some(i) = columns.iter().position(|c| *c == key.as_ref()) {
                // A repeated key: the last one counts, as when the item is parsed.
                picked[i] = Some(value);
            }
        }
        let start = out.buf.len();
        let mut id = 0..0;
        out.buf.push(b'{');
        let mut first = true;
        for &i in &order {
            let Some(value) = picked[i] else { continue };
            if !first {
                out.buf.push(b',');
            }
            first = false;
            out.buf.push(b'"');
            out.buf.extend_from_slice(columns[i].as_bytes());
            out.buf.extend_from_slice(b"\":");
            let at = out.buf.len();
            let bytes = write_member(&mut out.buf, value.get());
            if columns[i] == "id" {
                id = at..out.buf.len();
            }
            if bytes > MAX_VALUE_BYTES {
                long.push(LongValue {
                    seq: row.seq,
                    column: columns[i].to_string(),
                    bytes,
                });
            }
        }
        out.buf.push(b'}');
        out.spans.push(Span {
            seq: row.seq,
            json: start..out.buf.len(),
            id,
        });
    }
    Ok((out, long))
}

/// Writes one member's value: its JSON text as sent (whitespace around it dropped), or,
/// when it may not parse on its own, what [`stream_record`] makes of it (the parsed value,
/// or a string holding its text). Returns the value's length as Azure counts it (a
/// string's characters, another value's JSON text).
fn write_member(buf: &mut Vec<u8>, text: &str) -> usize {
    let text = text.trim();
    let bytes = text.as_bytes();
    let simple = !text.contains("\\u") && nesting_depth(bytes) < 100;
    if simple {
        buf.extend_from_slice(bytes);
        return if bytes.first() == Some(&b'"') {
            if text.contains('\\') {
                serde_json::from_str::<String>(text).map_or(bytes.len(), |s| s.len())
            } else {
                bytes.len() - 2
            }
        } else {
            bytes.len()
        };
    }
    let value =
        serde_json::from_str::<Value>(text).unwrap_or_else(|_| Value::String(text.to_string()));
    serde_json::to_writer(&mut *buf, &value).expect("a JSON value serializes");
    match &value {
        Value::String(s) => s.len(),
        other => other.to_string().len(),
    }
}

/// The deepest nesting of arrays and objects in a JSON text.
fn nesting_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Packs records (given by their serialized lengths) into consecutive chunks whose JSON
/// array (`[` + records joined by `,` + `]`) is at most `max_bytes`; a record that alone
/// is larger gets a chunk of its own.
pub(crate) fn chunks(lengths: &[usize], max_bytes: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 2; // "[]"
    for (i, len) in lengths.iter().enumerate() {
        let added = len + usize::from(i > start);
        if i > start && size + added > max_bytes {
            out.push(start..i);
            start = i;
            size = 2 + len;
        } else {
            size += added;
        }
    }
    if start < lengths.len() {
        out.push(start..lengths.len());
    }
    out
}

/// The gzip of the JSON array of records `range`, written straight from the records
/// (the array itself is never built).
pub(crate) fn gzip_array(records: &Records, range: Range<usize>) -> Vec<u8> {
    let raw: usize = range.clone().map(|i| records.spans[i].json.len() + 1).sum();
    let encoder = GzEncoder::new(Vec::with_capacity(raw / 6 + 64), Compression::fast());
    // flate2 zero-fills the output's spare capacity on every write: the records go in
    // 64 KB blocks, not one write per record.
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, encoder);
    let mut write = |bytes: &[u8]| out.write_all(bytes).expect("writing to memory");
    write(b"[");
    for (n, i) in range.enumerate() {
        if n > 0 {
            write(b",");
        }
        write(records.json(i));
    }
    write(b"]");
    out.into_inner()
        .map_err(|e| e.into_error())
        .expect("writing to memory")
        .finish()
        .expect("writing to memory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn row(seq: i64, raw: &str) -> OutboxRow {
        OutboxRow {
            seq,
            raw: raw.into(),
            org_id: None,
        }
    }

    #[test]
    fn records_are_stream_records_and_long_values_are_counted() {
        let big = "x".repeat(MAX_VALUE_BYTES + 1);
        let rows = [
            row(1, r#"{"id":"a","event":"e","extra":1}"#),
            row(2, &format!(r#"{{"id":"b","details":{{"t":"{big}"}}}}"#)),
        ];
        let (records, long) = encode(SourceKind::AuditLogs, &rows).unwrap();
        assert_eq!(records.json(0), br#"{"event":"e","id":"a"}"#);
        assert_eq!(records.id(1), "b");
        assert_eq!(long.len(), 1);
        assert_eq!((long[0].seq, long[0].column.as_str()), (2, "details"));
        let mut body = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&gzip_array(&records, 0..1)[..]),
            &mut body,
        )
        .unwrap();
        assert_eq!(body, br#"[{"event":"e","id":"a"}]"#);
        assert!(
            encode(SourceKind::AuditLogs, &[row(3, "[1]")])
                .unwrap_err()
                .contains("_seq 3")
        );
    }

    #[test]
    fn an_oversized_record_goes_alone() {
        assert_eq!(chunks(&[3, 50, 3, 3], 20), vec![0..1, 1..2, 2..4]);
        assert_eq!(chunks(&[], 20), Vec::<Range<usize>>::new());
        // "[" + 8 + "," + 8 + "]" = 19
        assert_eq!(chunks(&[8, 8, 8], 19), vec![0..2, 2..3]);
        assert_eq!(chunks(&[8, 8, 8], 18), vec![0..1, 1..2, 2..3]);
    }

    proptest! {
        #[test]
        fn chunks_cover_in_order_and_respect_the_limit(
            lengths in proptest::collection::vec(1usize..300, 0..200),
            max in 10usize..1000,
        ) {
            let out = chunks(&lengths, max);
            let mut next = 0;
            for c in &out {
                prop_assert_eq!(c.start, next);
                prop_assert!(c.end > c.start);
                next = c.end;
                let size = 2 + lengths[c.clone()].iter().sum::<usize>() + c.len() - 1;
                prop_assert!(size <= max || c.len() == 1, "{:?} {}", c, size);
                // Greedy: the next record would not have fitted.
                if c.end < lengths.len() {
                    prop_assert!(size + 1 + lengths[c.end] > max);
                }
            }
            prop_assert_eq!(next, lengths.len());
        }
    }

    /// The spliced record is the record `stream_record` builds, for any item.
    #[test]
    fn spliced_records_are_the_stream_records() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let items = [
            r#"{"id":"1","event":"e","type":"event","createdAt":"2024-05-01T10:00:00.000+0000","createdBy":{"id":3074457346235995512123,"email":"a@b"},"context":{"ip":"1.2.3.4"},"details":{"x":[1,2.50,"\u00e9\"q\""]},"object":null,"extra":1}"#.to_string(),
            r#"{ "id" : 7 , "event" : "caf\u00e9" , "details" : { "f" : 1e400 } , "id" : "8" }"#.to_string(),
            format!(r#"{{"id":"9","details":{deep},"event":"x"}}"#),
            format!(r#"{{"id":"10","extra":{deep},"category":"c\\d"}}"#),
            r#"{}"#.to_string(),
        ];
        let rows: Vec<OutboxRow> = items
            .iter()
            .enumerate()
            .map(|(i, raw)| row(i64::try_from(i).unwrap(), raw))
            .collect();
        let (records, _) = encode(SourceKind::AuditLogs, &rows).unwrap();
        for (i, raw) in items.iter().enumerate() {
            let expected =
                serde_json::to_vec(&stream_record(SourceKind::AuditLogs, raw).unwrap()).unwrap();
            let spliced: Value = serde_json::from_slice(records.json(i)).unwrap();
            let expected: Value = serde_json::from_slice(&expected).unwrap();
            assert_eq!(spliced, expected, "item {i}");
        }
        assert_eq!(records.id(1), "8");
        assert_eq!(records.id(4), "");
    }

    #[test]
    fn nesting_depth_skips_strings() {
        assert_eq!(nesting_depth(br#"{"a":["[[[{",{"b":1}]}"#), 3);
        assert_eq!(nesting_depth(br#""\"[""#), 0);
    }
}
