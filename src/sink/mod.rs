//! Sinks and delivery.
//!
//! A destination implements the [`Sink`] trait and owns its config: its keys as written
//! (a raw type), their validation, and its validated settings. The registry below
//! (`RawSink`, `SinkKindConfig`, `RawSink::validate`, [`build`]) is the one place that
//! lists the destinations.
//!
//! Delivery: one task per sink reads stored rows past the sink's offset, hands them to
//! the sink, and advances the offset only over what the sink acknowledged. How far it may
//! move is decided by one pure ack ledger ([`AckLedger`], `ack.rs`); the task persists
//! what the ledger returns.
//!
//! Invariants: the offset never passes a row the sink did not confirm or set aside, so
//! every stored row reaches every sink at least once or is listed in its dead letters; a
//! row the destination will never accept is set aside (`dead_letters`) in the same
//! transaction that lets the offset pass it, so it does not block the rest; a failing
//! destination only grows the backlog; batches are bounded (`batch_rows`), so memory does
//! not grow with the backlog. Rows re-queued by `deadletter retry` are sent before the
//! backlog, without moving the offset back. Store work is awaited through
//! `StoreHandle`; what a sink acknowledges during `send` is written through an ordered
//! `AckLane` that the loop awaits before it reads the next batch.
//!
//! Adding a destination: its own folder `src/sink/NAME/` plus two existing source files
//! (and its keys documented in README.md, "Configuration"):
//! 1. `src/sink/NAME/mod.rs`: the raw keys (`#[derive(Deserialize)]`,
//!    `deny_unknown_fields`, with `batch_rows` and `start`), a `validate` returning a
//!    `ValidatedSink`, the sink type and its `impl Sink` (report each acknowledged run
//!    and each row refused for good through the verdict callback; `stdout/` is the
//!    smallest example).
//! 2. Here: `mod NAME;`, a `RawSink` variant (its `type`), a `SinkKindConfig` variant,
//!    and one arm each in `RawSink::validate` and [`build`].
//! 3. `src/check.rs`: what `mirotrail check` verifies for it (one arm).

mod ack;
pub mod elasticsearch;
mod file;
mod http;
mod line;
pub mod s3;
pub mod sentinel;
pub mod splunk;
mod stdout;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Notify;

use crate::service::Telemetry;
use crate::settings::ConfigError;
use crate::shutdown::Shutdown;
use crate::source::SourceKind;
use crate::store::{AckLane, OutboxRow, StoreError, StoreHandle};

pub use ack::{AckLedger, AckUpdate};
pub use elasticsearch::ElasticSink;
pub use file::FileSink;
pub use file::RawFileSink;
pub use http::HttpOptions;
pub use line::{RecordFormat, table_row_json};
pub use s3::S3Sink;
pub use sentinel::SentinelSink;
use sentinel::{RawSentinelSink, SentinelConfig};
pub use splunk::SplunkSink;
pub use stdout::{RawStdoutSink, StdoutSink};

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
    /// The Splunk HEC refused the request or could not be reached (remedy inside).
    #[error(transparent)]
    Splunk(Box<splunk::HecError>),
    /// Elasticsearch or OpenSearch refused the request or could not be reached (remedy
    /// inside).
    #[error(transparent)]
    Elastic(Box<elasticsearch::ElasticError>),
    /// S3 refused the request, could not be reached, or no credentials were found
    /// (remedy inside).
    #[error(transparent)]
    S3(Box<s3::S3Error>),
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
            SinkError::Splunk(e) => e.permanent,
            SinkError::Elastic(e) => e.permanent,
            SinkError::S3(e) => e.permanent,
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

/// The future a sink's `send` returns.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// A destination. The delivery task owns one per configured sink and hands it rows.
pub trait Sink: Send + std::fmt::Debug {
    /// Sends rows of one source, in `_seq` order, calling `verdict` for each run of rows
    /// the destination acknowledged and each row it will never accept, as soon as it
    /// knows (in any order). `Err` means the first rows were not done with: the sink
    /// made no progress and the error says why. The delivery task's ack ledger
    /// (`ack`) decides how far the offset moves; a sink never tracks that itself.
    fn send<'a>(
        &'a mut self,
        source: SourceKind,
        rows: &'a [OutboxRow],
        verdict: &'a mut (dyn FnMut(RowVerdict<'_>) + Send),
    ) -> SendFuture<'a>;

    /// Called once by the delivery task before the first `send`, for a sink that keeps
    /// state in the store between runs (a Splunk HEC sink's channel); `name` is the
    /// sink's `[sinks.NAME]`. Most sinks keep nothing.
    fn prepare<'a>(&'a mut self, store: &'a StoreHandle, name: &'a str) -> SendFuture<'a> {
        let _ = (store, name);
        Box::pin(std::future::ready(Ok(())))
    }
}

// The registry: every destination is one variant of `RawSink` (its `type`), one of
// `SinkKindConfig`, and one arm in each match below.

/// `[sinks.NAME]` as written, tagged by `type`; each destination's keys are documented
/// on its raw type.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum RawSink {
    /// Rotating NDJSON files, one per stream.
    #[serde(rename = "file")]
    File(file::RawFileSink),
    /// NDJSON on standard output.
    #[serde(rename = "stdout")]
    Stdout(stdout::RawStdoutSink),
    /// Microsoft Sentinel through the Azure Monitor Logs Ingestion API.
    #[serde(rename = "azure_logs_ingestion")]
    AzureLogsIngestion(Box<RawSentinelSink>),
    /// Splunk's HTTP Event Collector.
    #[serde(rename = "splunk_hec")]
    SplunkHec(Box<splunk::RawSplunkSink>),
    /// Elasticsearch or OpenSearch (the `_bulk` API).
    #[serde(rename = "elasticsearch")]
    Elasticsearch(Box<elasticsearch::RawElasticSink>),
    /// An S3 bucket (AWS or any S3-compatible server): gzip NDJSON objects.
    #[serde(rename = "s3")]
    S3(Box<s3::RawS3Sink>),
}

/// One `[sinks.NAME]` section, validated.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub name: String,
    pub kind: SinkKindConfig,
    pub batch_rows: usize,
    pub start: SinkStart,
}

impl SinkConfig {
    /// Why this sink does not receive `source`, or `None` when it does. Only a Sentinel
    /// sink without `ai_interaction_logs_dcr` leaves a source out (the AI interaction logs
    /// table is mirotrail's own, not part of Sentinel's Miro solution); `check` and
    /// `status` show this reason.
    pub fn skips(&self, source: SourceKind) -> Option<String> {
        match &self.kind {
            SinkKindConfig::Sentinel(c) if c.target(source).is_none() => Some(format!(
                "not sent to this sink: no `{}_dcr` under [sinks.{}] (deploy the DCR with \
                 `mirotrail template azure` and set its immutable id to send it)",
                source.name(),
                self.name
            )),
            _ => None,
        }
    }
}

/// Where a sink that has never delivered starts (`start`). Only a sink without a
/// delivery offset in the store is affected; later changes of the key do nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SinkStart {
    /// Every row already in the store, then new ones (history reaches the destination).
    #[default]
    Beginning,
    /// Only rows stored after the sink's first start.
    Now,
}

/// A sink's destination-specific settings, validated.
#[derive(Debug, Clone)]
pub enum SinkKindConfig {
    File {
        dir: PathBuf,
        max_file_bytes: u64,
        format: RecordFormat,
    },
    Stdout {
        format: RecordFormat,
    },
    /// `azure_logs_ingestion`: Microsoft Sentinel.
    Sentinel(Box<SentinelConfig>),
    /// `splunk_hec`: Splunk's HTTP Event Collector.
    Splunk(Box<splunk::SplunkConfig>),
    /// `elasticsearch`: Elasticsearch or OpenSearch.
    Elastic(Box<elasticsearch::ElasticConfig>),
    /// `s3`: an S3 bucket.
    S3(Box<s3::S3Config>),
}

impl SinkKindConfig {
    /// Whether the sink takes the detection alerts (`MiroAlerts`, `detect/deliver.rs`):
    /// the file and stdout sinks do; a destination with its own detection (Sentinel's
    /// exported analytic rules) or no place for them takes the Miro streams only.
    pub fn takes_alerts(&self) -> bool {
        matches!(self, Self::File { .. } | Self::Stdout { .. })
    }
}

/// What validating a sink's keys may use.
pub(crate) struct SinkContext<'a> {
    /// The sink's name (`[sinks.NAME]`), for keys in errors.
    pub name: &'a str,
    /// The enabled sources.
    pub enabled: &'a [SourceKind],
    /// The config file, for errors.
    pub path: &'a Path,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Makes a path from the file relative to the file's folder.
    pub resolve: &'a dyn Fn(&Path) -> PathBuf,
}

impl SinkContext<'_> {
    /// An error about the key `sinks.NAME.key`.
    pub(crate) fn invalid(&self, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: format!("sinks.{}.{key}", self.name),
            message,
        }
    }
}

/// The keys every sink has, as written, beside its validated settings.
pub(crate) struct ValidatedSink {
    pub kind: SinkKindConfig,
    pub batch_rows: Option<usize>,
    pub start: Option<String>,
}

impl RawSink {
    /// Validates the destination's own keys.
    pub(crate) fn validate(self, cx: &SinkContext<'_>) -> Result<ValidatedSink, ConfigError> {
        match self {
            RawSink::File(raw) => file::validate(raw, cx),
            RawSink::Stdout(raw) => stdout::validate(raw, cx),
            RawSink::SplunkHec(raw) => splunk::validate(*raw, cx),
            RawSink::Elasticsearch(raw) => elasticsearch::validate(*raw, cx),
            RawSink::S3(raw) => s3::validate(*raw, cx),
            RawSink::AzureLogsIngestion(mut raw) => {
                let batch_rows = raw.batch_rows;
                let start = raw.start.take();
                let config = sentinel::validate_config(
                    *raw, cx.name, cx.enabled, cx.path, cx.env, cx.resolve,
                )?;
                Ok(ValidatedSink {
                    kind: SinkKindConfig::Sentinel(Box::new(config)),
                    batch_rows,
                    start,
                })
            }
        }
    }
}

/// Builds the configured destination.
pub fn build(config: &SinkConfig) -> Result<Box<dyn Sink>, SinkError> {
    Ok(match &config.kind {
        SinkKindConfig::File {
            dir,
            max_file_bytes,
            format,
        } => Box::new(FileSink::new(dir.clone(), *max_file_bytes, *format)?),
        SinkKindConfig::Stdout { format } => Box::new(StdoutSink::new(*format)),
        SinkKindConfig::Sentinel(c) => Box::new(SentinelSink::new((**c).clone())?),
        SinkKindConfig::Splunk(c) => Box::new(SplunkSink::new((**c).clone())?),
        SinkKindConfig::Elastic(c) => Box::new(ElasticSink::new((**c).clone())?),
        SinkKindConfig::S3(c) => Box::new(S3Sink::new((**c).clone())?),
    })
}

/// Sets aside the rows listed in `refused` (`_seq`, why; in `_seq` order, as the encoders
/// list them) and acknowledges the others, in runs between them (sinks that write a whole batch at once but cannot encode every row).
fn ack_all_but(
    rows: &[OutboxRow],
    refused: &[(i64, String)],
    verdict: &mut (dyn FnMut(RowVerdict<'_>) + Send),
) {
    // Rows and `refused` are both in `_seq` order: one pass over each.
    let mut next = refused.iter().peekable();
    let mut run: Option<(i64, i64)> = None;
    for row in rows {
        while next.next_if(|(seq, _)| *seq < row.seq).is_some() {}
        match next.next_if(|(seq, _)| *seq == row.seq) {
            Some((seq, reason)) => {
                if let Some((first, last)) = run.take() {
                    verdict(RowVerdict::Acked { first, last });
                }
                verdict(RowVerdict::Rejected { seq: *seq, reason });
            }
            None => run = Some((run.map_or(row.seq, |(first, _)| first), row.seq)),
        }
    }
    if let Some((first, last)) = run {
        verdict(RowVerdict::Acked { first, last });
    }
}

/// Turns acknowledgements into durable progress: the ledger ([`AckLedger`]) decides, the
/// store persists what it returns (each acknowledged run of rows, and the offset when it
/// moves). After a crash, rows acknowledged beyond the offset are recognised and not sent
/// again, so a row is resent only if its batch was not acknowledged. The callbacks cannot
/// await: their writes go, in order, to an [`AckLane`], which `deliver` awaits (`finish`)
/// before it reads the next batch.
struct AckTracker {
    lane: AckLane,
    ledger: AckLedger,
    /// `_seq` of the rows set aside this round.
    rejected: Vec<i64>,
}

impl AckTracker {
    async fn new(
        store: &StoreHandle,
        sink: &str,
        source: SourceKind,
        offset: i64,
        rows: &[OutboxRow],
    ) -> Result<Self, StoreError> {
        let mut ledger = AckLedger::new(offset, store.acked_ranges(sink, source).await?);
        let lane = store.ack_lane(sink, source);
        if let Some(offset) = ledger.read(rows.iter().map(|r| r.seq)) {
            lane.advance_offset(offset);
        }
        Ok(AckTracker {
            lane,
            ledger,
            rejected: Vec::new(),
        })
    }

    fn ack(&mut self, first: i64, last: i64) {
        let update = self.ledger.ack(first, last);
        self.lane.record_acked(first, last);
        if let Some(offset) = update.offset {
            self.lane.advance_offset(offset);
        }
    }

    /// Sets a row the destination will never accept aside and, in the same
    /// transaction, lets the offset pass it (a row set aside counts as passed). If that
    /// write fails, the lane applies none after it: the row stays before the stored
    /// offset and is sent again.
    fn reject(&mut self, seq: i64, reason: &str) {
        let update = self.ledger.ack(seq, seq);
        self.lane
            .dead_letter(vec![(seq, reason.to_string())], update.offset);
        self.rejected.push(seq);
    }

    /// Waits for the queued writes; the offset and rows set aside as stored.
    async fn finish(
        self,
        store: &StoreHandle,
        sink: &str,
        source: SourceKind,
    ) -> Result<(i64, Vec<i64>), StoreError> {
        match self.lane.finish().await {
            Ok(()) => Ok((self.ledger.offset(), self.rejected)),
            Err(e) => {
                // Not fatal: what was not recorded is sent again from the stored offset.
                tracing::error!(sink = %sink, source = %source, error = %e, "cannot record a delivery acknowledgement or set a refused row aside; those rows are sent again");
                let offset = store.delivered_offset(sink, source).await?;
                let rejected = self.rejected.into_iter().filter(|&s| s <= offset).collect();
                Ok((offset, rejected))
            }
        }
    }
}

/// The Miro id of a stored row.
fn miro_id(source: SourceKind, row: &OutboxRow) -> Option<String> {
    Some(crate::store::transform::to_row(source, &row.raw).id)
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
    sink: &mut dyn Sink,
    name: &str,
    store: &StoreHandle,
    source: SourceKind,
    batch_rows: usize,
) -> Result<Requeued, SinkError> {
    let rows = store
        .requeued_rows(name, source, batch_rows)
        .await
        .map_err(|e| SinkError::transient(e.to_string()))?;
    if rows.is_empty() {
        return Ok(Requeued::None);
    }
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    let mut resolved: Vec<i64> = Vec::new();
    // The callback cannot await: its writes are applied in order by the lane.
    let lane = store.ack_lane(name, source);
    let result = sink
        .send(source, &rows, &mut |verdict| match verdict {
            RowVerdict::Acked { first, last } => {
                let accepted: Vec<i64> = seqs
                    .iter()
                    .copied()
                    .filter(|s| (first..=last).contains(s))
                    .collect();
                resolved.extend(&accepted);
                lane.clear_dead_letters(accepted);
            }
            RowVerdict::Rejected { seq, reason } => {
                resolved.push(seq);
                tracing::warn!(sink = %name, source = %source, seq, reason, "re-queued row refused again; set aside with the new reason");
                lane.dead_letter(vec![(seq, reason.to_string())], None);
            }
        })
        .await;
    if let Err(e) = lane.finish().await {
        return Err(SinkError::transient(e.to_string()));
    }
    match result {
        Ok(()) => Ok(Requeued::Sent),
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
                .dead_letter(name, source, back, None)
                .await
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
    pub sink: Box<dyn Sink>,
    pub batch_rows: usize,
    pub store: StoreHandle,
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
    if let Err(e) = sink.prepare(&store, &name).await {
        // Not fatal: the sink works on without what it keeps (it says what that costs).
        tracing::warn!(sink = %name, error = %e, "cannot read or record this sink's state in the store");
    }
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
            match send_requeued(sink.as_mut(), &name, &store, source, batch_rows).await {
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
            let offset = store.delivered_offset(&name, source).await?;
            let rows = store.read_outbox(source, offset, batch_rows).await?;
            if rows.is_empty() {
                continue;
            }
            pending = true;
            let mut tracker = AckTracker::new(&store, &name, source, offset, &rows).await?;
            // The rows move to the sink (no copy); their `_seq`s stay for the count below.
            let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
            let todo: Vec<OutboxRow> = rows
                .into_iter()
                .filter(|r| !tracker.ledger.is_acked(r.seq))
                .collect();
            let result = if todo.is_empty() {
                Ok(())
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
            let (tracker_offset, rejected) = tracker.finish(&store, &name, source).await?;
            if !rejected.is_empty() {
                progressed = true;
            }
            let delivered = tracker_offset - offset;
            if tracker_offset > offset {
                // Rows set aside are passed, not delivered.
                let n = seqs
                    .iter()
                    .filter(|&&s| s <= tracker_offset && !rejected.contains(&s))
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
                tracing::debug!(sink = %name, source = %source, rows = n, through = tracker_offset, "delivered");
            }
            if delivered > 0 {
                failing_since = None;
            }
            match result {
                Ok(()) => {
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
                    store
                        .record_sink_error(&name, source, &e.to_string())
                        .await?;
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
                        tracing::warn!(sink = %name, source = %source, error = %e, retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "delivery failed; retrying");
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

#[cfg(test)]
mod tests {
    /// `config` imports the sink registry (each sink validates its own section), so no
    /// sink may import `config` back: they share only the leaf module `settings`.
    #[test]
    fn no_sink_module_imports_config() {
        fn walk(dir: &std::path::Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, found);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    if text.contains(concat!("crate", "::config")) {
                        found.push(path.display().to_string());
                    }
                }
            }
        }
        let mut found = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sink"),
            &mut found,
        );
        assert!(
            found.is_empty(),
            "these sink files import config: {found:?}"
        );
    }
}
