//! The `stdout` sink: NDJSON table rows on standard output, for piping into any shipper.

use std::io::Write;

use super::{SinkError, line::table_row_json};
use crate::source::SourceKind;
use crate::store::OutboxRow;

#[derive(Debug, Default)]
pub struct StdoutSink;

impl StdoutSink {
    pub fn send(
        &mut self,
        source: SourceKind,
        rows: &[OutboxRow],
        verdict: &mut (dyn FnMut(super::RowVerdict<'_>) + Send),
    ) -> Result<(), SinkError> {
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
                    SinkError {
                        message: "standard output was closed by the program reading it (broken \
                                  pipe); run again with a reader that consumes every line"
                            .into(),
                        permanent: true,
                        retry_after: None,
                    }
                } else {
                    SinkError::transient(format!("cannot write to standard output: {e}"))
                }
            })?;
        super::ack_all(rows, verdict);
        Ok(())
    }
}
