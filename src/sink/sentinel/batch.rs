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

/// One serialized stream record.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub seq: i64,
    /// The Miro id, to name the row in errors.
    pub id: String,
    pub json: Vec<u8>,
}

/// A value Azure will truncate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LongValue {
    pub seq: i64,
    pub column: String,
    pub bytes: usize,
}

/// Serializes the stream records of `rows`, listing values over 64 KB.
pub(crate) fn encode(
    source: SourceKind,
    rows: &[OutboxRow],
) -> Result<(Vec<Record>, Vec<LongValue>), String> {
    let mut records = Vec::with_capacity(rows.len());
    let mut long = Vec::new();
    for row in rows {
        let record = stream_record(source, &row.raw).map_err(|e| {
            format!(
                "stored row _seq {} cannot be sent to Sentinel: {e}",
                row.seq
            )
        })?;
        for (column, value) in &record {
            let bytes = match value {
                serde_json::Value::String(s) => s.len(),
                other => other.to_string().len(),
            };
            if bytes > MAX_VALUE_BYTES {
                long.push(LongValue {
                    seq: row.seq,
                    column: column.clone(),
                    bytes,
                });
            }
        }
        let id = kql_tostring(record.get("id"));
        let json = serde_json::to_vec(&record).expect("a JSON map serializes");
        records.push(Record {
            seq: row.seq,
            id,
            json,
        });
    }
    Ok((records, long))
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

/// The JSON array of `records`.
pub(crate) fn json_array(records: &[Record]) -> Vec<u8> {
    let total: usize = records.iter().map(|r| r.json.len() + 1).sum::<usize>() + 1;
    let mut body = Vec::with_capacity(total);
    body.push(b'[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&r.json);
    }
    body.push(b']');
    body
}

/// gzip of `bytes`.
pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4 + 64),
        Compression::fast(),
    );
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn row(seq: i64, raw: &str) -> OutboxRow {
        OutboxRow {
            seq,
            raw: raw.into(),
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
        assert_eq!(records[0].json, br#"{"event":"e","id":"a"}"#);
        assert_eq!(records[1].id, "b");
        assert_eq!(long.len(), 1);
        assert_eq!((long[0].seq, long[0].column.as_str()), (2, "details"));
        let body = json_array(&records[..1]);
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

    #[test]
    fn gzip_round_trips() {
        let data = b"[{\"id\":\"1\"}]".repeat(100);
        let mut out = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&gzip(&data)[..]),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, data);
    }
}
