//! The `azure_logs_ingestion` sink: Microsoft Sentinel through the Azure Monitor Logs
//! Ingestion API, into the streams and tables of Sentinel's "Miro" solution.
//!
//! `config` validates the keys, `auth` gets Entra tokens, `batch` turns rows into stream
//! records and chunks under 1 MB, `upload` sends a chunk and decides on the answer,
//! `template` prints the ARM template deploying the tables, DCE and DCRs.
//!
//! Invariants: `send` returns the highest `_seq` of the contiguous prefix of rows Azure
//! acknowledged, so with several uploads in flight the offset never passes a row that is
//! not in Azure; chunks acknowledged beyond that prefix are remembered (in memory) and not
//! sent again, so Azure only gets a duplicate when an acknowledgement itself was lost (or
//! after a restart); a row Azure will never accept as it is (alone over the 1 MB call
//! limit, or refused alone as malformed while the stream accepts other rows) is reported
//! as rejected with its reason, for the delivery task to set aside (dead letters); any
//! other refusal (401, 403, 404, a 400 for the whole stream) stops delivery at that row.

mod auth;
mod batch;
mod config;
pub mod template;
mod upload;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinSet;

pub(crate) use config::validate as validate_config;
pub use config::{
    AzureAuth, Cloud, DcrTarget, MAX_BATCH_BYTES, ManagedIdentityEndpoint, RawSentinelSink,
    SecretSource, SentinelConfig, is_dcr_immutable_id,
};

use super::{RowVerdict, SinkError};
use crate::config::SourceKind;
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
    /// Rows acknowledged beyond the contiguous prefix, per source (not sent again).
    acked_ahead: BTreeMap<SourceKind, BTreeSet<i64>>,
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
            acked_ahead: BTreeMap::new(),
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

    /// Sends rows of one source (in `_seq` order); returns the highest `_seq` of the
    /// contiguous prefix Azure acknowledged or refused for good.
    pub async fn send(
        &mut self,
        source: SourceKind,
        rows: &[OutboxRow],
        verdict: &mut (dyn FnMut(RowVerdict<'_>) + Send),
    ) -> Result<i64, SinkError> {
        let Some(first) = rows.first() else {
            return Ok(0);
        };
        let target = self
            .config
            .target(source)
            .ok_or(SinkError::NoDcr { kind: source })?;
        let target = Arc::new(Target {
            endpoint: self.config.endpoint.clone(),
            dcr: target.dcr_immutable_id.clone(),
            stream: target.stream.clone(),
        });
        let ahead = self.acked_ahead.entry(source).or_default();
        // Everything before this read was acknowledged and is behind the offset.
        *ahead = ahead.split_off(&first.seq);
        let todo: Vec<OutboxRow> = rows
            .iter()
            .filter(|r| !ahead.contains(&r.seq))
            .cloned()
            .collect();
        let (records, long) = batch::encode(source, &todo).map_err(SinkError::Encode)?;
        for l in &long {
            tracing::warn!(source = %source, seq = l.seq, column = %l.column, bytes = l.bytes, "value over 64 KB: Azure truncates it in Log Analytics (the local store keeps it whole)");
        }
        self.uploader
            .stats
            .long_values
            .fetch_add(long.len() as u64, Ordering::Relaxed);
        let lengths: Vec<usize> = records.iter().map(|r| r.json.len()).collect();
        let chunks = batch::chunks(&lengths, self.config.max_batch_bytes);
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
                &todo[start..start + outcome.results.len()],
                &outcome.results,
                verdict,
            );
            outcomes[index] = Some(outcome);
        }

        // Which records are done with (in Azure, or refused for good), then the
        // contiguous prefix over all rows.
        let mut acked_record = vec![false; records.len()];
        // Refused rows are done with for the prefix, but not remembered as in Azure: if
        // setting one aside fails, it must be sent (and refused) again.
        let mut refused_record = vec![false; records.len()];
        let mut first_error = None;
        for (range, outcome) in chunks.iter().zip(outcomes) {
            let Some(outcome) = outcome else { continue };
            for (i, result) in outcome.results.iter().enumerate() {
                acked_record[range.start + i] = true;
                refused_record[range.start + i] = result.is_some();
            }
            if first_error.is_none() {
                first_error = outcome.error;
            }
        }
        let mut record_index = 0;
        let mut prefix = None;
        let mut in_prefix = true;
        for row in rows {
            let (acked, refused) = if ahead.contains(&row.seq) {
                (true, false)
            } else {
                let a = (acked_record[record_index], refused_record[record_index]);
                record_index += 1;
                a
            };
            if in_prefix && acked {
                prefix = Some(row.seq);
            } else {
                in_prefix = false;
                if acked && !refused {
                    ahead.insert(row.seq);
                }
            }
        }
        if let Some(p) = prefix {
            *ahead = ahead.split_off(&(p + 1));
        }
        match (prefix, first_error) {
            (Some(p), None) => Ok(p),
            (Some(p), Some(e)) => {
                tracing::debug!(through = p, error = %e, "delivered a prefix; the rest failed");
                Ok(p)
            }
            (None, Some(e)) => Err(e),
            (None, None) => unreachable!("rows were neither acknowledged nor failed"),
        }
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
