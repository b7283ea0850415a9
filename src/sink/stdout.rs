//! The `stdout` sink: NDJSON table rows on standard output, for piping into any shipper.

use std::io::Write;

use super::{SinkError, line::table_row_json};
use crate::config::SourceKind;
use crate::store::OutboxRow;

#[derive(Debug, Default)]
pub struct StdoutSink;

impl StdoutSink {
    pub fn send(
        &mut self,
        source: SourceKind,
        rows: &[OutboxRow],
        verdict: &mut (dyn FnMut(super::RowVerdict<'_>) + Send),
    ) -> Result<i64, SinkError> {
        let mut out = String::new();
        for row in rows {
            out.push_str(&table_row_json(source, row));
            out.push('\n');
        }
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        lock.write_all(out.as_bytes())
            .and_then(|()| lock.flush())
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    // Whatever read the output is gone: retrying cannot help.
                    SinkError::StdoutClosed
                } else {
                    SinkError::transient(format!("cannot write to standard output: {e}"))
                }
            })?;
        Ok(super::ack_all(rows, verdict))
    }
}
