//! The `stdout` sink: NDJSON table rows on standard output, for piping into any shipper;
//! OCSF events instead with `format = "ocsf"` (`line.rs`, `docs/ocsf.md`), where a row with
//! no OCSF form is set aside as a dead letter.
//!
//! The smallest destination, and the model for a new one: its config (`RawStdoutSink`,
//! `validate`), its `Sink` implementation, and its registration in `sink/mod.rs` (see
//! the recipe there).

use std::io::Write;

use serde::Deserialize;

use super::{
    RowVerdict, SendFuture, Sink, SinkError, SinkKindConfig, ValidatedSink,
    line::{RecordFormat, encode_batch},
};
use crate::settings::ConfigError;
use crate::source::SourceKind;
use crate::store::OutboxRow;

/// `[sinks.NAME]` with `type = "stdout"`, as written: the keys every sink has and the
/// line format.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStdoutSink {
    pub batch_rows: Option<usize>,
    pub start: Option<String>,
    /// `json` (default: table rows) or `ocsf` (OCSF 1.1.0 events).
    pub format: Option<String>,
}

/// Checks the line format.
pub(super) fn validate(
    raw: RawStdoutSink,
    cx: &super::SinkContext<'_>,
) -> Result<ValidatedSink, ConfigError> {
    let format = RecordFormat::parse(raw.format.as_deref()).map_err(|e| cx.invalid("format", e))?;
    Ok(ValidatedSink {
        kind: SinkKindConfig::Stdout { format },
        batch_rows: raw.batch_rows,
        start: raw.start,
    })
}

#[derive(Debug, Default)]
pub struct StdoutSink {
    format: RecordFormat,
}

impl StdoutSink {
    pub fn new(format: RecordFormat) -> Self {
        StdoutSink { format }
    }
}

impl Sink for StdoutSink {
    fn send<'a>(
        &'a mut self,
        source: SourceKind,
        rows: &'a [OutboxRow],
        verdict: &'a mut (dyn FnMut(RowVerdict<'_>) + Send),
    ) -> SendFuture<'a> {
        Box::pin(std::future::ready(write(
            self.format,
            source,
            rows,
            verdict,
        )))
    }
}

/// Writes rows of one source as NDJSON lines, flushed, then acknowledges them.
fn write(
    format: RecordFormat,
    source: SourceKind,
    rows: &[OutboxRow],
    verdict: &mut (dyn FnMut(RowVerdict<'_>) + Send),
) -> Result<(), SinkError> {
    let batch = encode_batch(format, source, rows);
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    lock.write_all(&batch.bytes)
        .and_then(|()| lock.flush())
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                // Whatever read the output is gone: retrying cannot help.
                SinkError::StdoutClosed
            } else {
                SinkError::transient(format!("cannot write to standard output: {e}"))
            }
        })?;
    super::ack_all_but(rows, &batch.refused, verdict);
    Ok(())
}
