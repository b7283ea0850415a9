//! The `stdout` sink: NDJSON table rows on standard output, for piping into any shipper.
//!
//! The smallest destination, and the model for a new one: its config (`RawStdoutSink`,
//! `validate`), its `Sink` implementation, and its registration in `sink/mod.rs` (see
//! the recipe there).

use std::io::Write;

use serde::Deserialize;

use super::{
    RowVerdict, SendFuture, Sink, SinkError, SinkKindConfig, ValidatedSink, line::table_row_json,
};
use crate::source::SourceKind;
use crate::store::OutboxRow;

/// `[sinks.NAME]` with `type = "stdout"`, as written: only the keys every sink has.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStdoutSink {
    pub batch_rows: Option<usize>,
    pub start: Option<String>,
}

/// A stdout sink has no keys of its own to check.
pub(super) fn validate(raw: RawStdoutSink) -> ValidatedSink {
    ValidatedSink {
        kind: SinkKindConfig::Stdout,
        batch_rows: raw.batch_rows,
        start: raw.start,
    }
}

#[derive(Debug, Default)]
pub struct StdoutSink;

impl Sink for StdoutSink {
    fn send<'a>(
        &'a mut self,
        source: SourceKind,
        rows: &'a [OutboxRow],
        verdict: &'a mut (dyn FnMut(RowVerdict<'_>) + Send),
    ) -> SendFuture<'a> {
        Box::pin(std::future::ready(write(source, rows, verdict)))
    }
}

/// Writes rows of one source as NDJSON lines, flushed, then acknowledges them.
fn write(
    source: SourceKind,
    rows: &[OutboxRow],
    verdict: &mut (dyn FnMut(RowVerdict<'_>) + Send),
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
                SinkError::StdoutClosed
            } else {
                SinkError::transient(format!("cannot write to standard output: {e}"))
            }
        })?;
    super::ack_all(rows, verdict);
    Ok(())
}
