//! The `file` sink: one NDJSON file per stream (`MiroAuditLogs_CL.ndjson`,
//! `MiroContentLogs_CL.ndjson`, `MiroAiInteractionLogs_CL.ndjson`) in a directory, rotated by size. A batch is written and
//! flushed to disk (fsync) before it is acknowledged. The file work (repair, rotation,
//! write, fsync) runs on the blocking pool, never on an async runtime thread.
//!
//! With `format = "ocsf"` the lines are OCSF events (`line.rs`, `docs/ocsf.md`) in files of
//! their own, `<table>.ocsf.ndjson`, with the same rotation; a row that has no OCSF form is
//! set aside as a dead letter (with the reason) instead of holding up the stream.
//!
//! Owns its config: `RawFileSink` is the section as written, `validate` checks it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{
    RowVerdict, SendFuture, Sink, SinkContext, SinkError, SinkKindConfig, ValidatedSink,
    line::{RecordFormat, encode_batch},
};
use crate::settings::ConfigError;
use crate::source::SourceKind;
use crate::store::OutboxRow;
use crate::timefmt::UnixMs;

/// `[sinks.NAME]` with `type = "file"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFileSink {
    /// The folder the files are written to, relative to the config file's folder.
    pub path: PathBuf,
    /// Size at which a file is rotated (default 100 MiB, at least 4096).
    pub max_file_bytes: Option<u64>,
    pub batch_rows: Option<usize>,
    /// `beginning` (default: the whole store) or `now` (rows stored from the sink's
    /// first start on); only read while the sink has no delivery offset.
    pub start: Option<String>,
    /// `json` (default: table rows) or `ocsf` (OCSF 1.1.0 events).
    pub format: Option<String>,
}

/// Checks a file sink's keys.
pub(super) fn validate(
    raw: RawFileSink,
    cx: &SinkContext<'_>,
) -> Result<ValidatedSink, ConfigError> {
    let max_file_bytes = raw.max_file_bytes.unwrap_or(100 * 1024 * 1024);
    if max_file_bytes < 4096 {
        return Err(cx.invalid("max_file_bytes", "must be at least 4096".into()));
    }
    let format = RecordFormat::parse(raw.format.as_deref()).map_err(|e| cx.invalid("format", e))?;
    Ok(ValidatedSink {
        kind: SinkKindConfig::File {
            dir: (cx.resolve)(&raw.path),
            max_file_bytes,
            format,
        },
        batch_rows: raw.batch_rows,
        start: raw.start,
    })
}

#[derive(Debug, Clone)]
pub struct FileSink {
    dir: PathBuf,
    max_file_bytes: u64,
    format: RecordFormat,
}

impl FileSink {
    pub fn new(dir: PathBuf, max_file_bytes: u64, format: RecordFormat) -> Result<Self, SinkError> {
        crate::private::create_dir_all(&dir).map_err(|source| SinkError::FileDir {
            dir: dir.clone(),
            source,
        })?;
        // Files archived before (by an older version, or under another umask) become
        // private too; new ones are created 0600.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "ndjson") {
                    crate::private::tighten_file(&path);
                }
            }
        }
        Ok(FileSink {
            dir,
            max_file_bytes,
            format,
        })
    }

    /// A stream's file name before `.ndjson`: the table, plus `.ocsf` for OCSF lines (so
    /// the two formats never share a file).
    fn stem(&self, source: SourceKind) -> String {
        match self.format {
            RecordFormat::Json => source.table().to_string(),
            RecordFormat::Ocsf => format!("{}.ocsf", source.table()),
        }
    }

    /// The file a stream is currently written to.
    pub fn current_path(&self, source: SourceKind) -> PathBuf {
        self.dir.join(format!("{}.ndjson", self.stem(source)))
    }

    /// Appends rows of one source to its file, synced to disk, then acknowledges them.
    pub async fn write(
        &mut self,
        source: SourceKind,
        rows: &[OutboxRow],
        verdict: &mut (dyn FnMut(RowVerdict<'_>) + Send),
    ) -> Result<(), SinkError> {
        let batch = encode_batch(self.format, source, rows);
        let first = rows.first().map_or(0, |r| r.seq);
        let sink = self.clone();
        let buf = batch.bytes;
        tokio::task::spawn_blocking(move || sink.append(source, first, &buf))
            .await
            .expect("file sink write task panicked")?;
        super::ack_all_but(rows, &batch.refused, verdict);
        Ok(())
    }

    /// Appends `buf` (whole lines; `first` is the batch's first `_seq`) to the stream's
    /// file, rotating it first if it would grow past the limit, and syncs it. Blocking.
    fn append(&self, source: SourceKind, first: i64, buf: &[u8]) -> Result<(), SinkError> {
        let path = self.current_path(source);
        let io_err = |what: &str, e: std::io::Error| {
            SinkError::transient(format!("cannot {what} {}: {e}", path.display()))
        };
        // A write cut short (a crash, a full disk) leaves a partial last line; its batch
        // was not acknowledged and comes again, so the fragment goes.
        let size = drop_partial_line(&path).map_err(|e| io_err("repair", e))?;
        if size > 0 && size + buf.len() as u64 > self.max_file_bytes {
            let rotated = self.dir.join(format!(
                "{}-{}-{first}.ndjson",
                self.stem(source),
                UnixMs::now().to_iso().replace(':', "")
            ));
            std::fs::rename(&path, &rotated).map_err(|e| io_err("rotate", e))?;
            sync_dir(&self.dir);
        }
        let mut file: File = crate::private::file_options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err("open", e))?;
        file.write_all(buf).map_err(|e| io_err("write", e))?;
        file.sync_data().map_err(|e| io_err("sync", e))?;
        Ok(())
    }
}

impl Sink for FileSink {
    fn send<'a>(
        &'a mut self,
        source: SourceKind,
        rows: &'a [OutboxRow],
        verdict: &'a mut (dyn FnMut(RowVerdict<'_>) + Send),
    ) -> SendFuture<'a> {
        Box::pin(self.write(source, rows, verdict))
    }
}

/// Truncates the file after its last newline if it does not end with one; returns its
/// length afterwards (0 when it does not exist).
fn drop_partial_line(path: &Path) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::End(-1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(len);
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut end = len;
    let keep = loop {
        let start = end.saturating_sub(buf.len() as u64);
        let n = usize::try_from(end - start).expect("at most the buffer's length");
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(pos) = buf[..n].iter().rposition(|&b| b == b'\n') {
            break start + pos as u64 + 1;
        }
        if start == 0 {
            break 0;
        }
        end = start;
    };
    file.set_len(keep)?;
    file.sync_data()?;
    tracing::warn!(
        file = %path.display(),
        bytes = len - keep,
        "removed a partial line left by an interrupted write; its rows are written again"
    );
    Ok(keep)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(_source: SourceKind, ids: std::ops::Range<i64>) -> Vec<OutboxRow> {
        ids.map(|i| {
            let raw = format!(r#"{{"id":"{i}","event":"board_opened"}}"#);
            OutboxRow {
                seq: i,
                raw,
                org_id: None,
            }
        })
        .collect()
    }

    #[tokio::test]
    async fn a_partial_line_from_an_interrupted_write_is_dropped_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink =
            FileSink::new(dir.path().to_path_buf(), 1 << 20, RecordFormat::Json).unwrap();
        let source = SourceKind::AuditLogs;
        sink.write(source, &rows(source, 1..4), &mut |_| {})
            .await
            .unwrap();
        // A crash in the middle of the next write.
        let path = sink.current_path(source);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"TimeGenerated":null,"id":"4","ev"#)
            .unwrap();
        drop(f);
        sink.write(source, &rows(source, 4..6), &mut |_| {})
            .await
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(ids, ["1", "2", "3", "4", "5"]);
        // A file that is nothing but a fragment is emptied.
        std::fs::write(&path, b"{\"id\":").unwrap();
        sink.write(source, &rows(source, 6..7), &mut |_| {})
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    }

    /// An OCSF file sink writes its own files, one event per row, and sets aside (with
    /// the reason) a row that has no OCSF form instead of blocking the stream.
    #[tokio::test]
    async fn an_ocsf_sink_writes_events_to_its_own_files_and_sets_aside_rows_without_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink =
            FileSink::new(dir.path().to_path_buf(), 1 << 20, RecordFormat::Ocsf).unwrap();
        let source = SourceKind::AuditLogs;
        let rows: Vec<OutboxRow> = (1..=5)
            .map(|i| OutboxRow {
                org_id: None,
                seq: i,
                raw: if i == 3 {
                    format!(r#"{{"id":"{i}","event":"board_opened"}}"#)
                } else {
                    format!(
                        r#"{{"id":"{i}","event":"board_opened","createdAt":"2024-01-01T00:00:0{i}.000+0000"}}"#
                    )
                },
            })
            .collect();
        let mut verdicts = Vec::new();
        sink.write(source, &rows, &mut |v| {
            verdicts.push(match v {
                RowVerdict::Acked { first, last } => format!("acked {first}..={last}"),
                RowVerdict::Rejected { seq, reason } => {
                    assert!(reason.contains("createdAt"), "{reason}");
                    format!("rejected {seq}")
                }
            })
        })
        .await
        .unwrap();
        assert_eq!(verdicts, ["acked 1..=2", "rejected 3", "acked 4..=5"]);
        let path = sink.current_path(source);
        assert_eq!(
            path.file_name().unwrap().to_str(),
            Some("MiroAuditLogs_CL.ocsf.ndjson")
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let events: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 4);
        assert!(
            events
                .iter()
                .all(|e| e["class_uid"] == 6001 && e["metadata"]["log_name"] == "audit_logs")
        );
    }

    #[tokio::test]
    async fn files_rotate_by_size_and_keep_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::new(dir.path().to_path_buf(), 4096, RecordFormat::Json).unwrap();
        let source = SourceKind::ContentLogs;
        for start in (0..200).step_by(10) {
            sink.write(source, &rows(source, start..start + 10), &mut |_| {})
                .await
                .unwrap();
        }
        let mut lines = 0;
        let mut files = 0;
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let p = e.unwrap().path();
            assert!(std::fs::metadata(&p).unwrap().len() <= 4096 + 4096);
            lines += std::fs::read_to_string(&p).unwrap().lines().count();
            files += 1;
        }
        assert_eq!(lines, 200);
        assert!(files > 2, "{files}");
    }
}
