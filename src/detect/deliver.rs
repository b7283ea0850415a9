//! Alerts to the sinks, as their own stream `MiroAlerts` (one NDJSON object per alert,
//! `"Type": "MiroAlerts"`): a `file` sink appends them to `MiroAlerts.ndjson` in its
//! folder, a `stdout` sink prints them. A Sentinel sink gets none: the Sentinel "Miro"
//! solution has no table or DCR stream for them, and the exported analytic rules raise the
//! same alerts in Sentinel itself (README, "Detections").
//!
//! Invariant (like the row sinks): a sink's alert offset (`sink_offsets`, source
//! `alerts`) moves only after its alerts were written (and, for a file, synced), so every
//! alert reaches every file and stdout sink at least once; a crash between the write and
//! the offset update sends those alerts again.

use std::io::Write;

use rusqlite::{OptionalExtension, params};

use crate::sink::{SinkConfig, SinkKindConfig};
use crate::store::{Store, StoreError};
use crate::timefmt::UnixMs;

use super::eval::stored_alerts;

/// The `sink_offsets.source` of the alert stream.
pub const ALERTS_STREAM: &str = "alerts";
/// The alert file of a file sink.
pub const ALERTS_FILE: &str = "MiroAlerts.ndjson";
/// Alerts read per round.
const BATCH: i64 = 1000;

/// Why alerts could not be delivered (they are tried again next round).
#[derive(Debug, thiserror::Error)]
pub enum AlertDeliveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("sink `{sink}`: cannot write alerts to {path}: {cause}")]
    Write {
        sink: String,
        path: String,
        cause: std::io::Error,
    },
}

/// Delivers the alerts each file and stdout sink has not had yet; returns how many lines
/// were written. Blocking (file and SQLite work): call it on a blocking thread.
pub fn deliver_alerts(store: &Store, sinks: &[SinkConfig]) -> Result<usize, AlertDeliveryError> {
    let mut written = 0;
    for sink in sinks {
        // Sentinel, Splunk, Elasticsearch and S3 sinks take the streams only (README, "Detections").
        if !sink.kind.takes_alerts() {
            continue;
        }
        loop {
            let offset: i64 = store.read("reading an alert offset", |c| {
                c.query_row(
                    "SELECT delivered_seq FROM sink_offsets WHERE sink = ?1 AND source = ?2",
                    params![sink.name, ALERTS_STREAM],
                    |r| r.get(0),
                )
                .optional()
                .map(|o| o.unwrap_or(0))
            })?;
            let alerts = store.read("reading alerts", |c| stored_alerts(c, offset, BATCH))?;
            let Some(&(last, _, _)) = alerts.last() else {
                break;
            };
            let mut text = String::new();
            for (_, _, alert) in &alerts {
                text.push_str(&alert.to_string());
                text.push('\n');
            }
            let fail = |path: String, cause: std::io::Error| AlertDeliveryError::Write {
                sink: sink.name.clone(),
                path,
                cause,
            };
            match &sink.kind {
                SinkKindConfig::File { dir, .. } => {
                    let path = dir.join(ALERTS_FILE);
                    let shown = path.display().to_string();
                    crate::private::create_dir_all(dir).map_err(|e| fail(shown.clone(), e))?;
                    let mut file = crate::private::file_options()
                        .append(true)
                        .create(true)
                        .open(&path)
                        .map_err(|e| fail(shown.clone(), e))?;
                    file.write_all(text.as_bytes())
                        .and_then(|()| file.sync_data())
                        .map_err(|e| fail(shown, e))?;
                }
                SinkKindConfig::Stdout { .. } => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(text.as_bytes())
                        .and_then(|()| out.flush())
                        .map_err(|e| fail("standard output".into(), e))?;
                }
                SinkKindConfig::Sentinel(_)
                | SinkKindConfig::Splunk(_)
                | SinkKindConfig::Elastic(_)
                | SinkKindConfig::S3(_) => {
                    unreachable!("skipped above")
                }
            }
            store.write("advancing an alert offset", |tx| {
                tx.execute(
                    "INSERT INTO sink_offsets (sink, source, delivered_seq, updated_ms, last_error)
                     VALUES (?1, ?2, ?3, ?4, NULL)
                     ON CONFLICT (sink, source) DO UPDATE SET
                       delivered_seq = max(delivered_seq, excluded.delivered_seq),
                       updated_ms = excluded.updated_ms",
                    params![sink.name, ALERTS_STREAM, last, UnixMs::now().0],
                )
            })?;
            written += alerts.len();
        }
    }
    Ok(written)
}
