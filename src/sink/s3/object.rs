//! How a batch of rows becomes objects: pure and deterministic, so the same rows always
//! give the same objects under the same keys (`docs/s3.md`, "Object keys").
//!
//! Rows are grouped by the hour of their event time (`TimeGenerated`), in `_seq` order
//! within a group; a group is cut into objects of at most `max_object_bytes` uncompressed
//! (a single row larger than that is an object alone). An object's key is
//! `{prefix}stream={Table}/year=YYYY/month=MM/day=DD/hour=HH/{first:020}-{last:020}.ndjson.gz`,
//! `first` and `last` being the `_seq` of its first and last row; a row without an event
//! time goes under `stream={Table}/undated/`.

use std::collections::BTreeMap;
use std::io::Write;

use crate::sink::RecordFormat;
use crate::sink::line::{encode_line, write_table_row};
use crate::source::SourceKind;
use crate::store::{OutboxRow, transform};
use crate::timefmt::UnixMs;

/// One row, encoded.
#[derive(Debug, Clone)]
pub(super) struct Line {
    pub seq: i64,
    /// The partition path (`year=.../hour=HH` or `undated`).
    pub partition: String,
    pub text: String,
}

/// Encodes a row as one line (no newline) with its partition, or says why the row has
/// no line in `format`.
pub(super) fn encode(
    format: RecordFormat,
    source: SourceKind,
    row: &OutboxRow,
) -> Result<Line, String> {
    // The item is transformed once, for its line and its event time (`TimeGenerated`).
    let derived = transform::to_row(source, &row.raw);
    let text = match format {
        RecordFormat::Json => {
            let mut text = String::with_capacity(row.raw.len() + 256);
            write_table_row(source, row, &derived, &mut text);
            text
        }
        RecordFormat::Ocsf => encode_line(format, source, row)?,
    };
    let time = derived
        .cells
        .first()
        .and_then(Option::as_deref)
        .and_then(UnixMs::parse);
    Ok(Line {
        seq: row.seq,
        partition: partition(time),
        text,
    })
}

/// The hour partition of an event time.
pub(super) fn partition(time: Option<UnixMs>) -> String {
    match time.map(UnixMs::to_iso) {
        // `to_iso` is `YYYY-MM-DDTHH:MM:SS.mmmZ` for years 0..=9999.
        Some(iso) if iso.len() == 24 => format!(
            "year={}/month={}/day={}/hour={}",
            &iso[0..4],
            &iso[5..7],
            &iso[8..10],
            &iso[11..13]
        ),
        _ => "undated".to_string(),
    }
}

/// An object to write: its key and which lines it holds (indices, in `_seq` order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Planned {
    pub key: String,
    pub first: i64,
    pub last: i64,
    pub lines: Vec<usize>,
}

/// Cuts `lines` (in `_seq` order) into objects. Pure: the same lines and limits give the
/// same objects.
pub(super) fn plan(
    prefix: &str,
    source: SourceKind,
    lines: &[Line],
    max_object_bytes: usize,
) -> Vec<Planned> {
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        groups.entry(line.partition.as_str()).or_default().push(i);
    }
    let mut out = Vec::new();
    for (partition, indices) in groups {
        let mut current: Vec<usize> = Vec::new();
        let mut bytes = 0usize;
        for i in indices {
            let size = lines[i].text.len() + 1;
            if !current.is_empty() && bytes + size > max_object_bytes {
                out.push(planned(
                    prefix,
                    source,
                    partition,
                    lines,
                    std::mem::take(&mut current),
                ));
                bytes = 0;
            }
            current.push(i);
            bytes += size;
        }
        if !current.is_empty() {
            out.push(planned(prefix, source, partition, lines, current));
        }
    }
    out
}

fn planned(
    prefix: &str,
    source: SourceKind,
    partition: &str,
    lines: &[Line],
    indices: Vec<usize>,
) -> Planned {
    let first = lines[indices[0]].seq;
    let last = lines[*indices.last().expect("an object has a row")].seq;
    Planned {
        key: format!(
            "{prefix}stream={}/{partition}/{first:020}-{last:020}.ndjson.gz",
            source.table()
        ),
        first,
        last,
        lines: indices,
    }
}

/// The lines handed to the gzip encoder at a time. The encoder's every `write` prepares
/// its whole 32 KiB output buffer, so a write per line would cost more than compressing
/// the line; lines are gathered into pieces of this size first.
const GZIP_PIECE_BYTES: usize = 256 * 1024;

/// The gzip NDJSON body of an object: its lines, each followed by a newline.
pub(super) fn body(lines: &[Line], object: &Planned) -> Vec<u8> {
    let plain: usize = object.lines.iter().map(|&i| lines[i].text.len() + 1).sum();
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(plain / 4 + 64),
        flate2::Compression::default(),
    );
    let mut piece: Vec<u8> = Vec::with_capacity(GZIP_PIECE_BYTES.min(plain));
    for &i in &object.lines {
        let text = lines[i].text.as_bytes();
        if !piece.is_empty() && piece.len() + text.len() + 1 > GZIP_PIECE_BYTES {
            gz.write_all(&piece).expect("writing to memory");
            piece.clear();
        }
        piece.extend_from_slice(text);
        piece.push(b'\n');
    }
    gz.write_all(&piece).expect("writing to memory");
    gz.finish().expect("writing to memory")
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn row(seq: i64, time: &str) -> OutboxRow {
        OutboxRow {
            org_id: None,
            seq,
            raw: format!(
                r#"{{"id":"{seq}","event":"board_opened","createdAt":"{time}","details":{{"pad":"{}"}}}}"#,
                "x".repeat(200)
            ),
        }
    }

    fn lines(rows: &[OutboxRow]) -> Vec<Line> {
        rows.iter()
            .map(|r| encode(RecordFormat::Json, SourceKind::AuditLogs, r).unwrap())
            .collect()
    }

    #[test]
    fn rows_are_grouped_by_event_hour_and_keyed_by_their_seq_range() {
        let rows = [
            row(1, "2024-03-05T10:59:59Z"),
            row(2, "2024-03-05T11:00:00Z"),
            row(3, "2024-03-05T10:00:00.000+0000"),
            row(4, "not a time"),
        ];
        let lines = lines(&rows);
        let objects = plan("miro/", SourceKind::AuditLogs, &lines, 1 << 20);
        let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "miro/stream=MiroAuditLogs_CL/undated/00000000000000000004-00000000000000000004.ndjson.gz",
                "miro/stream=MiroAuditLogs_CL/year=2024/month=03/day=05/hour=10/00000000000000000001-00000000000000000003.ndjson.gz",
                "miro/stream=MiroAuditLogs_CL/year=2024/month=03/day=05/hour=11/00000000000000000002-00000000000000000002.ndjson.gz",
            ]
        );
        assert_eq!(objects[1].lines, [0, 2]);
        // The body is the file sink's lines, gzipped.
        let mut text = String::new();
        flate2::read::GzDecoder::new(&body(&lines, &objects[1])[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(
            text,
            format!(
                "{}\n{}\n",
                crate::sink::table_row_json(SourceKind::AuditLogs, &rows[0]),
                crate::sink::table_row_json(SourceKind::AuditLogs, &rows[2])
            )
        );
    }

    #[test]
    fn objects_stay_under_the_size_limit_and_a_big_row_stands_alone() {
        let mut rows: Vec<OutboxRow> = (1..=20).map(|s| row(s, "2024-03-05T10:00:00Z")).collect();
        rows[9].raw = rows[9].raw.replace("xxxx", &"y".repeat(5000));
        let lines = lines(&rows);
        let limit = 1500;
        let objects = plan("", SourceKind::AuditLogs, &lines, limit);
        let mut seen = Vec::new();
        for o in &objects {
            let size: usize = o.lines.iter().map(|&i| lines[i].text.len() + 1).sum();
            assert!(size <= limit || o.lines.len() == 1, "{o:?}");
            seen.extend(o.lines.iter().map(|&i| lines[i].seq));
        }
        assert_eq!(
            seen,
            (1..=20).collect::<Vec<_>>(),
            "every row once, in order"
        );
        assert!(objects.iter().any(|o| o.first == 10 && o.last == 10));
        // Deterministic: the same rows give the same keys.
        assert_eq!(objects, plan("", SourceKind::AuditLogs, &lines, limit));
    }

    #[test]
    fn an_object_larger_than_a_gzip_piece_is_its_lines_exactly() {
        let rows: Vec<OutboxRow> = (1..=3000).map(|s| row(s, "2024-03-05T10:00:00Z")).collect();
        let lines = lines(&rows);
        let objects = plan("", SourceKind::AuditLogs, &lines, 64 << 20);
        assert_eq!(objects.len(), 1);
        let expected: String = lines.iter().map(|l| format!("{}\n", l.text)).collect();
        assert!(expected.len() > 2 * GZIP_PIECE_BYTES, "{}", expected.len());
        let mut text = String::new();
        flate2::read::GzDecoder::new(&body(&lines, &objects[0])[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, expected);
    }
}
