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
/// which goes through [`stream_record`]'s rules. The item is read once ([`pick`]): member
/// names are compared where they stand in the item, only the stream members' values are
/// kept (as spans of the item), the others are skipped.
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
        picked.iter_mut().for_each(|p| *p = None);
        pick(&row.raw, columns, &mut picked).map_err(|e| {
            format!(
                "stored row _seq {} cannot be sent to Sentinel: {}",
                row.seq,
                TransformError(e)
            )
        })?;
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

/// Reads the item `raw` (a JSON object) once, setting `picked[i]` to the value of its
/// member named `columns[i]` (a repeated name: the last one, as when the item is parsed).
/// The same items are refused as by `transform::members`: anything but one JSON object.
fn pick<'a>(
    raw: &'a str,
    columns: &[&str],
    picked: &mut [Option<&'a RawValue>],
) -> Result<(), String> {
    use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
    use std::borrow::Cow;

    /// A member name, borrowed from the item unless it holds an escape.
    struct Key<'de>(Cow<'de, str>);
    impl<'de> serde::Deserialize<'de> for Key<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Key<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a member name")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Owned(v.to_owned())))
                }
            }
            d.deserialize_str(V)
        }
    }
    struct Pick<'p, 'a> {
        columns: &'p [&'p str],
        picked: &'p mut [Option<&'a RawValue>],
    }
    impl<'a> Visitor<'a> for Pick<'_, 'a> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(Key(key)) = map.next_key::<Key<'a>>()? {
                match self.columns.iter().position(|c| *c == key) {
                    Some(i) => self.picked[i] = Some(map.next_value::<&'a RawValue>()?),
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }
    }
    impl<'a> DeserializeSeed<'a> for Pick<'_, 'a> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw);
    Pick { columns, picked }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| e.to_string())
}

/// Writes one member's value: its JSON text as sent (whitespace around it dropped), or,
/// when it may not parse on its own, what [`stream_record`] makes of it (the parsed value,
/// or a string holding its text). Returns the value's length as Azure counts it (a
/// string's characters, another value's JSON text).
fn write_member(buf: &mut Vec<u8>, text: &str) -> usize {
    let text = text.trim();
    let bytes = text.as_bytes();
    // Cheap tests first: a `\u` needs a backslash, and nesting 100 deep needs 100 brackets.
    let escaped = bytes.contains(&b'\\');
    let string = bytes.first() == Some(&b'"');
    let simple = !(escaped && text.contains("\\u"))
        && (string || brackets(bytes) < 100 || nesting_depth(bytes) < 100);
    if simple {
        buf.extend_from_slice(bytes);
        return if string {
            if escaped {
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

/// How many `[` and `{` a JSON text holds (in strings too): at least its nesting depth.
fn brackets(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'[' || b == b'{').count()
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

    /// The encode before the one-pass read (`transform::members`, a name allocated per
    /// member, the nesting scanned per value): what the new one must write, byte for byte.
    fn encode_by_members(
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
                let bytes = write_member_before(&mut out.buf, value.get());
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

    fn write_member_before(buf: &mut Vec<u8>, text: &str) -> usize {
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

    fn same_as_before(items: &[String]) {
        for source in [SourceKind::AuditLogs, SourceKind::ContentLogs] {
            let rows: Vec<OutboxRow> = items
                .iter()
                .enumerate()
                .map(|(i, raw)| row(i64::try_from(i).unwrap(), raw))
                .collect();
            match (encode(source, &rows), encode_by_members(source, &rows)) {
                (Ok((new, new_long)), Ok((old, old_long))) => {
                    assert_eq!(new.buf, old.buf, "{items:?}");
                    for i in 0..rows.len() {
                        assert_eq!(new.json(i), old.json(i));
                        assert_eq!(new.id(i), old.id(i));
                        assert_eq!(new.seq(i), old.seq(i));
                    }
                    assert_eq!(new_long, old_long);
                }
                (new, old) => assert_eq!(new.map(|_| ()), old.map(|_| ()), "{items:?}"),
            }
        }
    }

    /// Hostile items: huge numbers, `#` ids, unicode and escaped names, nulls, repeated
    /// and escaped keys, deep nesting, long values, whitespace, and items that are not
    /// objects at all.
    #[test]
    fn records_are_written_as_before_for_hostile_items() {
        let deep = format!("{}1{}", "[".repeat(130), "]".repeat(130));
        let deep99 = format!("{}1{}", "{\"a\":".repeat(99), "}".repeat(99));
        let brackets = format!("\"{}\"", "[".repeat(300));
        let long = "é".repeat(MAX_VALUE_BYTES);
        let items = [
            r#"{"id":30744573462359955121234567890,"event":"e","details":{"n":1e400,"m":-0.0}}"#
                .to_string(),
            r##"{"id":"#1","event":"board#opened","contentId":"#c","actor":{"id":"#a"}}"##
                .to_string(),
            r#"{"id":"é\u00e9\ud83d\ude00","event":"caf\u00e9","category":"\\u0041","state":null}"#
                .to_string(),
            r#"{"\u0069d":"escaped name","ev\u0065nt":1,"évènement":"x","id":"last"}"#.to_string(),
            r#"{"id":null,"event":null,"createdBy":null,"itemId":null,"relationships":[]}"#
                .to_string(),
            r#" { "id" : 7 , "details" : { "f" : [ 1 , 2 ] } , "id" : "8" } "#.to_string(),
            format!(r#"{{"id":"d","details":{deep},"state":{deep}}}"#),
            format!(r#"{{"id":"d99","details":{deep99},"state":{deep99}}}"#),
            format!(r#"{{"id":"b","event":{brackets},"details":[{brackets}]}}"#),
            format!(r#"{{"id":"l","details":"{long}","actionType":"{long}x"}}"#),
            r#"{"id":"q","details":"tab\there \"quoted\" \/ back\\slash"}"#.to_string(),
            "{}".to_string(),
        ];
        same_as_before(&items);
        for bad in ["[1]", "\"s\"", "{\"id\":1} x", "{\"id\":}", "", "null"] {
            same_as_before(&[r#"{"id":"ok"}"#.to_string(), bad.to_string()]);
        }
    }

    fn json_value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            "[0-9]{20,40}",
            any::<f64>().prop_map(|f| serde_json::to_string(&f).unwrap()),
            any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just(r##""\u00e9\n\"#\"""##.to_string()),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec((key(), inner), 0..4).prop_map(|v| {
                    let members: Vec<String> =
                        v.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
                    format!("{{{}}}", members.join(" ,"))
                }),
            ]
        })
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(vec![
                "id",
                "event",
                "category",
                "type",
                "createdAt",
                "createdBy",
                "context",
                "details",
                "object",
                "contentId",
                "actionType",
                "actionTime",
                "actor",
                "itemType",
                "itemId",
                "state",
                "relationships",
            ])
            .prop_map(|k| format!("\"{k}\"")),
            Just(r#""\u0069d""#.to_string()),
            any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
        ]
    }

    proptest! {
        /// For arbitrary items, the one-pass encode writes what the encode before it did.
        #[test]
        fn records_are_written_as_before(
            items in proptest::collection::vec(
                proptest::collection::vec((key(), json_value()), 0..10).prop_map(|m| {
                    let members: Vec<String> =
                        m.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    format!("{{{}}}", members.join(","))
                }),
                1..5,
            )
        ) {
            same_as_before(&items);
        }
    }

    #[test]
    fn nesting_depth_skips_strings() {
        assert_eq!(nesting_depth(br#"{"a":["[[[{",{"b":1}]}"#), 3);
        assert_eq!(nesting_depth(br#""\"[""#), 0);
    }
}
