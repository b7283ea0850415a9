//! Delivery: one task per sink reads stored rows past the sink's offset, hands them to
//! the sink, and advances the offset only over what the sink acknowledged.
//!
//! Invariants: the offset never passes a row the sink did not confirm, so every stored
//! row reaches every sink at least once; a failing destination only grows the backlog;
//! batches are bounded (`batch_rows`), so memory does not grow with the backlog.

mod file;
mod line;
pub mod sentinel;
mod stdout;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::{SinkConfig, SinkKindConfig, SourceKind};
use crate::service::Telemetry;
use crate::shutdown::Shutdown;
use crate::store::{OutboxRow, Store, StoreError};

pub use file::FileSink;
pub use line::table_row_json;
pub use sentinel::SentinelSink;
pub use stdout::StdoutSink;

/// A delivery failure.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    pub message: String,
    /// Retrying cannot help until someone changes something; still retried, slowly.
    pub permanent: bool,
    /// The destination asked for this pause.
    pub retry_after: Option<Duration>,
}

impl SinkError {
    pub fn transient(message: impl Into<String>) -> Self {
        SinkError {
            message: message.into(),
            permanent: false,
            retry_after: None,
        }
    }
}

/// The configured destinations.
#[derive(Debug)]
pub enum Sink {
    File(FileSink),
    Stdout(StdoutSink),
    Sentinel(Box<SentinelSink>),
}

impl Sink {
    pub fn from_config(config: &SinkConfig) -> Result<Sink, SinkError> {
        Ok(match &config.kind {
            SinkKindConfig::File {
                dir,
                max_file_bytes,
            } => Sink::File(FileSink::new(dir.clone(), *max_file_bytes)?),
            SinkKindConfig::Stdout => Sink::Stdout(StdoutSink),
            SinkKindConfig::Sentinel(c) => {
                Sink::Sentinel(Box::new(SentinelSink::new((**c).clone())?))
            }
        })
    }

    /// Sends rows of one source, in `_seq` order, calling `ack(first_seq, last_seq)` for
    /// each run of rows the destination acknowledged, as soon as it did (in any order).
    /// Returns the highest `_seq` of the contiguous prefix acknowledged.
    pub async fn send(
        &mut self,
        source: SourceKind,
        rows: &[OutboxRow],
        ack: &mut (dyn FnMut(i64, i64) + Send),
    ) -> Result<i64, SinkError> {
        match self {
            Sink::File(s) => s.send(source, rows, ack),
            Sink::Stdout(s) => s.send(source, rows, ack),
            Sink::Sentinel(s) => s.send(source, rows, ack).await,
        }
    }
}

/// Acknowledges all of `rows` at once (sinks that confirm a whole batch); returns the
/// last `_seq`.
fn ack_all(rows: &[OutboxRow], ack: &mut (dyn FnMut(i64, i64) + Send)) -> i64 {
    match (rows.first(), rows.last()) {
        (Some(first), Some(last)) => {
            ack(first.seq, last.seq);
            last.seq
        }
        _ => 0,
    }
}

/// Turns acknowledgements into durable progress: each acknowledged run of rows is
/// recorded in the store at once, and the delivery offset moves over the contiguous
/// prefix of acknowledged rows. After a crash, rows acknowledged beyond the offset are
/// recognised and not sent again, so a row is resent only if its batch was not
/// acknowledged.
struct AckTracker<'a> {
    store: &'a Store,
    sink: &'a str,
    source: SourceKind,
    /// `_seq` of the rows read this round, ascending (all rows past the offset).
    seqs: Vec<i64>,
    /// Acknowledged `(first, last)` ranges past the offset.
    ranges: Vec<(i64, i64)>,
    /// Index in `seqs` of the first row not yet behind the offset.
    next: usize,
    offset: i64,
}

impl<'a> AckTracker<'a> {
    fn new(
        store: &'a Store,
        sink: &'a str,
        source: SourceKind,
        offset: i64,
        rows: &[OutboxRow],
    ) -> Result<Self, StoreError> {
        let mut tracker = AckTracker {
            store,
            sink,
            source,
            seqs: rows.iter().map(|r| r.seq).collect(),
            ranges: store.acked_ranges(sink, source)?,
            next: 0,
            offset,
        };
        tracker.advance()?;
        Ok(tracker)
    }

    fn covered(&self, seq: i64) -> bool {
        self.ranges.iter().any(|&(a, b)| a <= seq && seq <= b)
    }

    fn ack(&mut self, first: i64, last: i64) {
        self.ranges.push((first, last));
        let result = self
            .store
            .record_acked(self.sink, self.source, first, last)
            .and_then(|()| self.advance());
        if let Err(e) = result {
            // Not fatal: the rows are in the destination; at worst they are sent again.
            tracing::error!(sink = %self.sink, source = %self.source, error = %e, "cannot record a delivery acknowledgement");
        }
    }

    fn advance(&mut self) -> Result<(), StoreError> {
        let before = self.next;
        while self.next < self.seqs.len() && self.covered(self.seqs[self.next]) {
            self.next += 1;
        }
        if self.next > before {
            self.offset = self.seqs[self.next - 1];
            self.store
                .advance_offset(self.sink, self.source, self.offset)?;
        }
        Ok(())
    }
}

/// How a delivery task ends.
#[derive(Debug, Clone)]
pub enum DeliveryMode {
    /// Until shutdown.
    Continuous,
    /// Until `collectors_done` is set and the backlog is empty (or shutdown), or until
    /// the sink has failed for `retry_for` without delivering a row (a permanent error
    /// gives up at once): rows it could not deliver wait in the store.
    Drain {
        collectors_done: Arc<AtomicBool>,
        retry_for: Duration,
    },
}

/// How often a delivery task logs (INFO) the rows it delivered since its last line.
pub const DELIVERY_LOG_EVERY: Duration = Duration::from_secs(60);

/// How long `run --once` keeps retrying a sink that delivers nothing (`--retry-for`).
pub const DEFAULT_ONCE_RETRY_FOR: Duration = Duration::from_secs(60);

/// What a delivery task did.
#[derive(Debug, Clone, Default)]
pub struct DeliveryReport {
    pub rows: u64,
    pub batches: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    /// Set when a drain stopped with rows still pending (a permanent error, or its retry
    /// time used up): why.
    pub gave_up: Option<String>,
    /// Rows acknowledged per source (the sources the task delivers, in order).
    pub rows_by_source: Vec<(SourceKind, u64)>,
    /// Rows left undelivered per source when a drain gave up, counted once the run's
    /// collection has ended (filled in by the pipeline).
    pub pending: Vec<(SourceKind, i64)>,
}

/// One sink's delivery task.
#[derive(Debug)]
pub struct Delivery {
    pub name: String,
    pub sink: Sink,
    pub batch_rows: usize,
    pub store: Arc<Store>,
    pub sources: Vec<SourceKind>,
    pub mode: DeliveryMode,
    /// Woken when collectors commit rows.
    pub new_rows: Arc<Notify>,
    /// Metrics and readiness.
    pub telemetry: Option<Arc<Telemetry>>,
}

/// Runs one sink's delivery loop over its sources.
pub async fn deliver(task: Delivery, mut shutdown: Shutdown) -> Result<DeliveryReport, StoreError> {
    let Delivery {
        name,
        mut sink,
        batch_rows,
        store,
        sources,
        mode,
        new_rows,
        telemetry,
    } = task;
    let mut report = DeliveryReport {
        rows_by_source: sources.iter().map(|&s| (s, 0)).collect(),
        ..DeliveryReport::default()
    };
    // What was logged as delivered so far (an INFO line per source every
    // `DELIVERY_LOG_EVERY`, and one at the end of the run by the pipeline).
    let mut logged = report.rows_by_source.clone();
    let mut last_log = std::time::Instant::now();
    let mut failures_in_row: u32 = 0;
    // Since when deliveries fail without a row acknowledged in between.
    let mut failing_since: Option<std::time::Instant> = None;
    loop {
        let done_collecting = match &mode {
            DeliveryMode::Continuous => false,
            DeliveryMode::Drain {
                collectors_done, ..
            } => collectors_done.load(Ordering::Acquire),
        };
        if last_log.elapsed() >= DELIVERY_LOG_EVERY {
            last_log = std::time::Instant::now();
            for ((source, total), (_, before)) in report.rows_by_source.iter().zip(&mut logged) {
                if total > before {
                    tracing::info!(sink = %name, source = %source, rows = total - *before, total_this_run = total, "delivered in the last minute");
                    *before = *total;
                }
            }
        }
        let mut progressed = false;
        let mut pending = false;
        for &source in &sources {
            if shutdown.is_set() {
                return Ok(report);
            }
            let offset = store.delivered_offset(&name, source)?;
            let reader = store.clone();
            let rows =
                tokio::task::spawn_blocking(move || reader.read_outbox(source, offset, batch_rows))
                    .await
                    .expect("outbox read task panicked")?;
            if rows.is_empty() {
                continue;
            }
            pending = true;
            let mut tracker = AckTracker::new(&store, &name, source, offset, &rows)?;
            let todo: Vec<OutboxRow> = rows
                .iter()
                .filter(|r| !tracker.covered(r.seq))
                .cloned()
                .collect();
            let result = if todo.is_empty() {
                Ok(tracker.offset)
            } else {
                sink.send(source, &todo, &mut |first, last| tracker.ack(first, last))
                    .await
            };
            let delivered = tracker.offset - offset;
            if tracker.offset > offset {
                let n = rows.iter().filter(|r| r.seq <= tracker.offset).count() as u64;
                report.rows += n;
                if let Some((_, total)) =
                    report.rows_by_source.iter_mut().find(|(s, _)| *s == source)
                {
                    *total += n;
                }
                if let Some(t) = &telemetry {
                    t.delivered(&name, source, n);
                }
                report.batches += 1;
                progressed = true;
                tracing::debug!(sink = %name, source = %source, rows = n, through = tracker.offset, "delivered");
            }
            if delivered > 0 {
                failing_since = None;
            }
            match result {
                Ok(_) => {
                    if delivered > 0 {
                        failures_in_row = 0;
                    }
                }
                Err(e) => {
                    report.failures += 1;
                    failures_in_row += 1;
                    let failing_for = failing_since
                        .get_or_insert_with(std::time::Instant::now)
                        .elapsed();
                    report.last_error = Some(e.message.clone());
                    store.record_sink_error(&name, source, &e.message)?;
                    if let Some(t) = &telemetry {
                        let cause = if e.permanent {
                            "permanent"
                        } else if e.retry_after.is_some() {
                            "throttled"
                        } else {
                            "transient"
                        };
                        t.delivery_failed(&name, cause, &e.message);
                    }
                    let mut wait = e.retry_after.unwrap_or_else(|| {
                        crate::miro::retry::backoff(
                            failures_in_row.min(10),
                            Duration::from_millis(500),
                            Duration::from_secs(if e.permanent { 300 } else { 60 }),
                        )
                    });
                    if let DeliveryMode::Drain { retry_for, .. } = mode {
                        if e.permanent || failing_for >= retry_for {
                            let why = if e.permanent {
                                e.message.clone()
                            } else {
                                format!(
                                    "{} (gave up after {failures_in_row} failed attempt(s) in {}s; \
                                     `run --once --retry-for` sets how long to keep trying)",
                                    e.message,
                                    failing_for.as_secs()
                                )
                            };
                            tracing::error!(sink = %name, source = %source, error = %why, "delivery gave up for this run; rows wait in the store for the next run");
                            report.gave_up = Some(why);
                            return Ok(report);
                        }
                        wait = wait.min(retry_for - failing_for);
                    }
                    if e.permanent {
                        tracing::error!(sink = %name, source = %source, error = %e.message, retry_in_secs = wait.as_secs(), "delivery is blocked until this is fixed; rows wait in the store");
                    } else {
                        tracing::warn!(sink = %name, source = %source, error = %e.message, retry_in_ms = wait.as_millis() as u64, "delivery failed; retrying");
                    }
                    if !shutdown.sleep(wait).await {
                        return Ok(report);
                    }
                }
            }
        }
        if !progressed {
            if !pending && done_collecting {
                return Ok(report);
            }
            tokio::select! {
                _ = new_rows.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(if done_collecting { 50 } else { 1000 })) => {}
                _ = shutdown.wait() => return Ok(report),
            }
        }
    }
}
