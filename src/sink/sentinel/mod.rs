//! The `azure_logs_ingestion` sink: Microsoft Sentinel through the Azure Monitor Logs
//! Ingestion API, into the streams and tables of Sentinel's "Miro" solution.
//!
//! `config` validates the keys, `auth` gets Entra tokens, `batch` turns rows into stream
//! records and chunks under 1 MB, `upload` sends a chunk and decides on the answer,
//! `template` prints the ARM template deploying the tables, DCE and DCRs.
//!
//! Invariants: `send` reports each chunk Azure acknowledged as soon as it is, with several
//! uploads in flight, and never reports a row that is not in Azure; the delivery task's
//! ack ledger (`sink::ack`) moves the offset over the contiguous prefix and remembers the
//! chunks acknowledged beyond it, so they are not sent again and Azure only gets a
//! duplicate when an acknowledgement itself was lost; a row Azure will never accept as it
//! is (alone over the 1 MB call limit, or refused alone as malformed while the stream
//! accepts other rows) is reported as rejected with its reason, for the delivery task to
//! set aside (dead letters); any other refusal (401, 403, 404, a 400 for the whole stream)
//! stops delivery at that row.

mod auth;
mod batch;
mod config;
pub mod template;
mod upload;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinSet;

pub use batch::stream_record;
pub(crate) use config::validate as validate_config;
pub use config::{
    AzureAuth, Cloud, DcrTarget, MAX_BATCH_BYTES, ManagedIdentityEndpoint, RawSentinelSink,
    SecretSource, SentinelConfig, is_dcr_immutable_id,
};

use super::{RowVerdict, SendFuture, Sink, SinkError};
use crate::source::SourceKind;
use crate::store::OutboxRow;
pub use auth::AuthError;
pub use upload::{AzureError, ProbeOutcome};
use upload::{ChunkOutcome, Target, UploadStats, Uploader};

/// What the sink has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentinelStats {
    pub requests: u64,
    pub accepted_records: u64,
    pub retries: u64,
    pub throttled: u64,
    pub splits: u64,
    pub token_renewals: u64,
    /// Values over 64 KB (Azure truncates them).
    pub long_values: u64,
}

/// Delivers rows to Sentinel.
#[derive(Debug)]
pub struct SentinelSink {
    config: SentinelConfig,
    uploader: Arc<Uploader>,
}

impl SentinelSink {
    /// Builds the HTTP client and loads the credential (a missing secret fails here).
    pub fn new(config: SentinelConfig) -> Result<Self, SinkError> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .user_agent(crate::net::USER_AGENT)
            .build()
            .map_err(SinkError::HttpClient)?;
        // A credential that cannot even be loaded needs the configuration changed.
        let tokens = auth::TokenProvider::new(&config, http.clone()).map_err(|e| {
            SinkError::Auth(AuthError {
                permanent: true,
                ..e
            })
        })?;
        Ok(SentinelSink {
            uploader: Arc::new(Uploader {
                http,
                tokens,
                backoff_base: Duration::from_millis(500),
                max_attempts: 5,
                max_throttled: 10,
                stats: UploadStats::default(),
                accepting: Default::default(),
            }),
            config,
        })
    }

    /// Shortens the first backoff step after a transient failure (tests, benchmarks).
    pub fn with_backoff_base(mut self, base: Duration) -> Self {
        Arc::get_mut(&mut self.uploader)
            .expect("not yet shared")
            .backoff_base = base;
        self
    }

    pub fn config(&self) -> &SentinelConfig {
        &self.config
    }

    pub fn stats(&self) -> SentinelStats {
        let s = &self.uploader.stats;
        SentinelStats {
            requests: s.requests.load(Ordering::Relaxed),
            accepted_records: s.accepted_records.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            throttled: s.throttled.load(Ordering::Relaxed),
            splits: s.splits.load(Ordering::Relaxed),
            token_renewals: s.token_renewals.load(Ordering::Relaxed),
            long_values: s.long_values.load(Ordering::Relaxed),
        }
    }

    /// Gets an Entra token (for `mirotrail check`); the error says what to fix.
    pub async fn check_token(&self) -> Result<(), String> {
        self.uploader
            .tokens
            .token()
            .await
            .map(|_| ())
            .map_err(|e| e.message)
    }

    /// Posts an empty batch to `source`'s DCR and stream (for `mirotrail check`): nothing
    /// is written. `Err` is a definite problem with its remedy.
    pub async fn probe(&self, source: SourceKind) -> Result<ProbeOutcome, String> {
        let target = self.config.target(source).ok_or_else(|| {
            format!(
                "no DCR is configured for {source}: set `{}_dcr` in this sink's section",
                source.name()
            )
        })?;
        let token = self.uploader.tokens.token().await.map_err(|e| e.message)?;
        let target = Target {
            endpoint: self.config.endpoint.clone(),
            dcr: target.dcr_immutable_id.clone(),
            stream: target.stream.clone(),
        };
        upload::probe(&self.uploader.http, &token.secret, &target).await
    }

    /// Sends rows of one source (in `_seq` order), reporting each acknowledged run and
    /// each row refused for good through `verdict`. `Err` when the first chunk got
    /// nothing done; a failure after that is logged and its rows come again.
    async fn send_rows(
        &mut self,
        source: SourceKind,
        rows: &[OutboxRow],
        verdict: &mut (dyn FnMut(RowVerdict<'_>) + Send),
    ) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        let target = self
            .config
            .target(source)
            .ok_or(SinkError::NoDcr { kind: source })?;
        let target = Arc::new(Target {
            endpoint: self.config.endpoint.clone(),
            dcr: target.dcr_immutable_id.clone(),
            stream: target.stream.clone(),
        });
        let (records, long) = batch::encode(source, rows).map_err(SinkError::Encode)?;
        for l in &long {
            tracing::warn!(source = %source, seq = l.seq, column = %l.column, bytes = l.bytes, "value over 64 KB: Azure truncates it in Log Analytics (the local store keeps it whole)");
        }
        self.uploader
            .stats
            .long_values
            .fetch_add(long.len() as u64, Ordering::Relaxed);
        let chunks = batch::chunks(&records.lengths(), self.config.max_batch_bytes);
        let records = Arc::new(records);

        // Up to `max_concurrency` uploads in flight; after a failure no new one starts.
        let mut outcomes: Vec<Option<ChunkOutcome>> = (0..chunks.len()).map(|_| None).collect();
        let mut in_flight = JoinSet::new();
        let mut next = 0;
        let mut failed = false;
        loop {
            while !failed
                && next < chunks.len()
                && in_flight.len() < self.config.max_concurrency.get()
            {
                let uploader = self.uploader.clone();
                let (target, records, range) =
                    (target.clone(), records.clone(), chunks[next].clone());
                let index = next;
                in_flight.spawn(async move {
                    (index, uploader.upload_chunk(target, records, range).await)
                });
                next += 1;
            }
            let Some(done) = in_flight.join_next().await else {
                break;
            };
            let (index, outcome) = done.expect("chunk upload task panicked");
            failed |= outcome.error.is_some();
            let start = chunks[index].start;
            report_verdicts(
                &rows[start..start + outcome.results.len()],
                &outcome.results,
                verdict,
            );
            outcomes[index] = Some(outcome);
        }

        // The first chunk decides whether this was progress: rows after a failure come
        // again in the next round, the error with them if it persists.
        let mut outcomes = outcomes.into_iter().flatten();
        let first = outcomes.next().expect("the first chunk is always sent");
        let progressed = !first.results.is_empty();
        match first.error.or_else(|| outcomes.find_map(|o| o.error)) {
            None => Ok(()),
            Some(e) if progressed => {
                tracing::debug!(error = %e, "delivered the first rows; the rest failed");
                Ok(())
            }
            Some(e) => Err(e),
        }
    }
}

impl Sink for SentinelSink {
    fn send<'a>(
        &'a mut self,
        source: SourceKind,
        rows: &'a [OutboxRow],
        verdict: &'a mut (dyn FnMut(RowVerdict<'_>) + Send),
    ) -> SendFuture<'a> {
        Box::pin(self.send_rows(source, rows, verdict))
    }
}

/// Reports the outcome of consecutive rows: runs of accepted rows as one `Acked`, each
/// refused row as `Rejected`.
fn report_verdicts(
    rows: &[OutboxRow],
    results: &[Option<String>],
    verdict: &mut (dyn FnMut(RowVerdict<'_>) + Send),
) {
    let mut run: Option<(i64, i64)> = None;
    for (row, result) in rows.iter().zip(results) {
        match result {
            None => {
                run = Some(run.map_or((row.seq, row.seq), |(first, _)| (first, row.seq)));
            }
            Some(reason) => {
                if let Some((first, last)) = run.take() {
                    verdict(RowVerdict::Acked { first, last });
                }
                verdict(RowVerdict::Rejected {
                    seq: row.seq,
                    reason,
                });
            }
        }
    }
    if let Some((first, last)) = run {
        verdict(RowVerdict::Acked { first, last });
    }
}
