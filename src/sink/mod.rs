//! Delivery: one task per sink reads stored rows past the sink's offset, hands them to
//! the sink, and advances the offset only over what the sink acknowledged.
//!
//! Invariants: the offset never passes a row the sink did not confirm or set aside, so
//! every stored row reaches every sink at least once or is listed in its dead letters; a
//! row the destination will never accept is set aside (`dead_letters`) in the same
//! transaction that lets the offset pass it, so it does not block the rest; a failing
//! destination only grows the backlog; batches are bounded (`batch_rows`), so memory does
//! not grow with the backlog. Rows re-queued by `deadletter retry` are sent before the
//! backlog, without moving the offset back.

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

/// What a sink reports about rows it was handed, as soon as it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowVerdict<'a> {
    /// The destination acknowledged rows `first..=last` (of those handed over).
    Acked { first: i64, last: i64 },
    /// The destination will never accept this row as it is (too big for one request
    /// even alone, refused alone as malformed); `reason` says why.
    Rejected { seq: i64, reason: &'a str },
}

/// A delivery failure of a whole sink (a row the destination refuses alone is a
/// [`RowVerdict::Rejected`] instead, and goes to the dead letters).
///
/// Permanent failures need someone to change something (a role, a DCR, the config);
/// they are still retried, slowly. Each message names the destination and the remedy.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Retrying may help: a connection, a write, or the store failed.
    #[error("{0}")]
    Transient(String),
    /// The destination kept asking for a pause (429) beyond the sink's patience.
    #[error("the logs ingestion API keeps throttling DCR {dcr} (429)")]
    Throttled { dcr: String, retry_after: Duration },
    /// Azure refused the records or the identity (status, DCR, stream and remedy).
    #[error(transparent)]
    Azure(Box<sentinel::AzureError>),
    /// No Entra token (`AuthError::permanent` says whether retrying can help).
    #[error(transparent)]
    Auth(#[from] sentinel::AuthError),
    #[error("cannot set up the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("no DCR is configured for {kind}: set `{}_dcr` in this sink's section", kind.name())]
    NoDcr { kind: SourceKind },
    /// A row cannot be encoded for the destination's stream.
    #[error("{0}")]
    Encode(String),
    #[error("cannot create the file sink directory {}: {source}", dir.display())]
    FileDir {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "standard output was closed by the program reading it (broken pipe); run again with \
         a reader that consumes every line"
    )]
    StdoutClosed,
}

impl From<sentinel::AzureError> for SinkError {
    fn from(e: sentinel::AzureError) -> Self {
        SinkError::Azure(Box::new(e))
    }
}

impl SinkError {
    pub fn transient(message: impl Into<String>) -> Self {
        SinkError::Transient(message.into())
    }

    /// Retrying cannot help until someone changes something; still retried, slowly.
    pub fn is_permanent(&self) -> bool {
        match self {
            SinkError::Transient(_) | SinkError::Throttled { .. } => false,
            SinkError::Auth(e) => e.permanent,
            SinkError::Azure(_)
            | SinkError::HttpClient(_)
            | SinkError::NoDcr { .. }
            | SinkError::Encode(_)
            | SinkError::FileDir { .. }
            | SinkError::StdoutClosed => true,
        }
    }

    /// The pause the destination asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SinkError::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
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

    /// Sends rows of one source, in `_seq` order, calling `verdict` for each run of rows
    /// the destination acknowledged and each row it will never accept, as soon as it
    /// knows (in any order). Returns the highest `_seq` of the contiguous prefix done with.
    pub async fn send(
        &mut self,
        source: SourceKind,
        rows: &[OutboxRow],
        verdict: &mut (dyn FnMut(RowVerdict<'_>) + Send),
    ) -> Result<i64, SinkError> {
        match self {
            Sink::File(s) => s.send(source, rows, verdict),
            Sink::Stdout(s) => s.send(source, rows, verdict),
            Sink::Sentinel(s) => s.send(source, rows, verdict).await,
        }
    }
}

/// Acknowledges all of `rows` at once (sinks that confirm a whole batch); returns the
/// last `_seq`.
fn ack_all(rows: &[OutboxRow], verdict: &mut (dyn FnMut(RowVerdict<'_>) + Send)) -> i64 {
    match (rows.first(), rows.last()) {
        (Some(first), Some(last)) => {
            verdict(RowVerdict::Acked {
                first: first.seq,
                last: last.seq,
            });
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
    /// `_seq` of the rows set aside this round.
    rejected: Vec<i64>,
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
            rejected: Vec::new(),
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

    /// Sets a row the destination will never accept aside and, in the same
    /// transaction, lets the offset pass it. If that fails, the row stays before the
    /// offset and is sent again.
    fn reject(&mut self, seq: i64, reason: &str) {
        self.ranges.push((seq, seq));
        let mut next = self.next;
        while next < self.seqs.len() && self.covered(self.seqs[next]) {
            next += 1;
        }
        let offset = (next > self.next).then(|| self.seqs[next - 1]);
        match self
            .store
            .dead_letter(self.sink, self.source, &[(seq, reason.to_string())], offset)
        {
            Ok(()) => {
                if let Some(offset) = offset {
                    self.next = next;
                    self.offset = offset;
                }
                self.rejected.push(seq);
            }
            Err(e) => {
                self.ranges.pop();
                tracing::error!(sink = %self.sink, source = %self.source, seq, error = %e, "cannot set a refused row aside; it is sent again");
            }
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

/// The Miro id of a stored row.
fn miro_id(source: SourceKind, row: &OutboxRow) -> Option<String> {
    let i = crate::store::transform::columns(source)
        .iter()
        .position(|c| *c == "id")?;
    row.cells.get(i).cloned().flatten()
}

/// Whether re-queued dead letters were there to send.
enum Requeued {
    None,
    Sent,
}

/// Sends the rows `deadletter retry` re-queued for this sink (before the backlog, without
/// touching the offset): an accepted row leaves the dead letters, a refused one goes back
/// with its new reason.
async fn send_requeued(
    sink: &mut Sink,
    name: &str,
    store: &Arc<Store>,
    source: SourceKind,
    batch_rows: usize,
) -> Result<Requeued, SinkError> {
    let reader = store.clone();
    let sink_name = name.to_string();
    let rows =
        tokio::task::spawn_blocking(move || reader.requeued_rows(&sink_name, source, batch_rows))
            .await
            .expect("dead-letter read task panicked")
            .map_err(|e| SinkError::transient(e.to_string()))?;
    if rows.is_empty() {
        return Ok(Requeued::None);
    }
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    let mut resolved: Vec<i64> = Vec::new();
    let mut store_error = None;
    let result = sink
        .send(source, &rows, &mut |verdict| {
            let done = match verdict {
                RowVerdict::Acked { first, last } => {
                    let mut n = 0;
                    let mut result = Ok(());
                    for &seq in seqs.iter().filter(|s| (first..=last).contains(*s)) {
                        resolved.push(seq);
                        match store.clear_dead_letters(name, source, seq, seq) {
                            Ok(k) => n += k,
                            Err(e) => result = Err(e),
                        }
                    }
                    if n > 0 {
                        tracing::info!(sink = %name, source = %source, rows = n, "re-queued dead letters delivered");
                    }
                    result
                }
                RowVerdict::Rejected { seq, reason } => {
                    resolved.push(seq);
                    tracing::warn!(sink = %name, source = %source, seq, reason, "re-queued row refused again; set aside with the new reason");
                    store.dead_letter(name, source, &[(seq, reason.to_string())], None)
                }
            };
            if let Err(e) = done {
                store_error = Some(e);
            }
        })
        .await;
    if let Some(e) = store_error {
        return Err(SinkError::transient(e.to_string()));
    }
    match result {
        Ok(_) => Ok(Requeued::Sent),
        Err(e) if e.is_permanent() => {
            // Retrying cannot help until something changes: the rows not sent go back to
            // the list with this reason (the user asked for them; they see why).
            let back: Vec<(i64, String)> = seqs
                .iter()
                .filter(|s| !resolved.contains(s))
                .map(|&s| (s, e.to_string()))
                .collect();
            tracing::warn!(sink = %name, source = %source, rows = back.len(), error = %e, "re-queued rows not delivered; set aside again with this reason");
            store
                .dead_letter(name, source, &back, None)
                .map_err(|e| SinkError::transient(e.to_string()))?;
            Ok(Requeued::Sent)
        }
        Err(e) => Err(e),
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
            match send_requeued(&mut sink, &name, &store, source, batch_rows).await {
                Ok(Requeued::None) => {}
                Ok(Requeued::Sent) => {
                    pending = true;
                    progressed = true;
                }
                Err(e) => {
                    // Re-queued rows wait; the backlog below goes on as usual.
                    pending = true;
                    report.last_error = Some(e.to_string());
                    tracing::warn!(sink = %name, source = %source, error = %e, "re-queued dead letters not delivered; trying again later");
                }
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
                sink.send(source, &todo, &mut |verdict| match verdict {
                    RowVerdict::Acked { first, last } => tracker.ack(first, last),
                    RowVerdict::Rejected { seq, reason } => {
                        let id = todo
                            .iter()
                            .find(|r| r.seq == seq)
                            .and_then(|r| miro_id(source, r))
                            .unwrap_or_default();
                        tracing::warn!(sink = %name, source = %source, seq, id, reason, "row set aside (dead letter): the destination will never accept it as it is; the rest goes on. `mirotrail deadletter list` shows it, `mirotrail deadletter retry` sends it again once the cause is fixed");
                        tracker.reject(seq, reason);
                    }
                })
                .await
            };
            if !tracker.rejected.is_empty() {
                progressed = true;
            }
            let delivered = tracker.offset - offset;
            if tracker.offset > offset {
                // Rows set aside are passed, not delivered.
                let n = rows
                    .iter()
                    .filter(|r| r.seq <= tracker.offset && !tracker.rejected.contains(&r.seq))
                    .count() as u64;
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
                    report.last_error = Some(e.to_string());
                    store.record_sink_error(&name, source, &e.to_string())?;
                    if let Some(t) = &telemetry {
                        let cause = if e.is_permanent() {
                            "permanent"
                        } else if e.retry_after().is_some() {
                            "throttled"
                        } else {
                            "transient"
                        };
                        t.delivery_failed(&name, cause, &e.to_string());
                    }
                    let mut wait = e.retry_after().unwrap_or_else(|| {
                        crate::retry::backoff(
                            failures_in_row.min(10),
                            Duration::from_millis(500),
                            Duration::from_secs(if e.is_permanent() { 300 } else { 60 }),
                        )
                    });
                    if let DeliveryMode::Drain { retry_for, .. } = mode {
                        if e.is_permanent() || failing_for >= retry_for {
                            let why = if e.is_permanent() {
                                e.to_string()
                            } else {
                                format!(
                                    "{} (gave up after {failures_in_row} failed attempt(s) in {}s; \
                                     `run --once --retry-for` sets how long to keep trying)",
                                    e,
                                    failing_for.as_secs()
                                )
                            };
                            tracing::error!(sink = %name, source = %source, error = %why, "delivery gave up for this run; rows wait in the store for the next run");
                            report.gave_up = Some(why);
                            return Ok(report);
                        }
                        wait = wait.min(retry_for - failing_for);
                    }
                    if e.is_permanent() {
                        tracing::error!(sink = %name, source = %source, error = %e, retry_in_secs = wait.as_secs(), "delivery is blocked until this is fixed; rows wait in the store");
                    } else {
                        tracing::warn!(sink = %name, source = %source, error = %e, retry_in_ms = wait.as_millis() as u64, "delivery failed; retrying");
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
