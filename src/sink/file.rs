//! The `file` sink: one NDJSON file per stream (`MiroAuditLogs_CL.ndjson`,
//! `MiroContentLogs_CL.ndjson`) in a directory, rotated by size. A batch is written and
//! flushed to disk (fsync) before it is acknowledged.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{SinkError, line::table_row_json};
use crate::config::SourceKind;
use crate::store::OutboxRow;
use crate::timefmt::UnixMs;

#[derive(Debug)]
pub struct FileSink {
    dir: PathBuf,
    max_file_bytes: u64,
}

impl FileSink {
    pub fn new(dir: PathBuf, max_file_bytes: u64) -> Result<Self, SinkError> {
        std::fs::create_dir_all(&dir).map_err(|e| SinkError {
            message: format!(
                "cannot create the file sink directory {}: {e}",
                dir.display()
            ),
            permanent: true,
            retry_after: None,
        })?;
        Ok(FileSink {
            dir,
            max_file_bytes,
        })
    }

    /// The file a stream is currently written to.
    pub fn current_path(&self, source: SourceKind) -> PathBuf {
        self.dir.join(format!("{}.ndjson", source.table()))
    }

    pub fn send(
        &mut self,
        source: SourceKind,
        rows: &[OutboxRow],
        ack: &mut (dyn FnMut(i64, i64) + Send),
    ) -> Result<i64, SinkError> {
        let path = self.current_path(source);
        let io_err = |what: &str, e: std::io::Error| {
            SinkError::transient(format!("cannot {what} {}: {e}", path.display()))
        };
        let mut buf = Vec::with_capacity(rows.len() * 512);
        for row in rows {
            buf.extend_from_slice(table_row_json(source, row).as_bytes());
            buf.push(b'\n');
        }
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if size > 0 && size + buf.len() as u64 > self.max_file_bytes {
            let first = rows.first().map_or(0, |r| r.seq);
            let rotated = self.dir.join(format!(
                "{}-{}-{first}.ndjson",
                source.table(),
                UnixMs::now().to_iso().replace(':', "")
            ));
            std::fs::rename(&path, &rotated).map_err(|e| io_err("rotate", e))?;
            sync_dir(&self.dir);
        }
        let mut file: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err("open", e))?;
        file.write_all(&buf).map_err(|e| io_err("write", e))?;
        file.sync_data().map_err(|e| io_err("sync", e))?;
        Ok(super::ack_all(rows, ack))
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
