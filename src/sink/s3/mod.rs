//! The `s3` sink: gzip NDJSON objects in an S3 bucket (AWS, or any S3-compatible server
//! such as MinIO or R2), partitioned by stream and event hour (`docs/s3.md`).
//!
//! `config` validates the keys, `object` turns a batch of rows into objects and keys (pure,
//! deterministic), `client` builds the AWS SDK client and classifies S3's errors.
//!
//! Invariants: a row is acknowledged only after every object of its batch was written
//! (S3 answered 200 to each PUT). An object's key is derived from the rows it holds, and
//! the same rows always land under the same key: before the first PUT of a batch, its
//! `_seq` range and object limit are recorded in the store (`sink_state`, key
//! `s3_batch_<source>`); after a restart, a batch whose acknowledgement was not stored
//! is rebuilt from exactly that range, so its objects are rewritten under the same keys
//! instead of being added again under new ones. Objects are at most `max_object_bytes`
//! uncompressed (a single larger row alone), so memory is bounded by the batch. Secrets
//! (static keys) are read into `secrecy` types and handed only to the SDK, whose logs
//! below INFO are silenced (`cli::init_logging`): they describe requests being signed.

mod client;
mod config;
mod object;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use client::S3Error;
use client::{Put, Verdict};
pub(in crate::sink) use config::validate;
pub use config::{RawS3Sink, S3Config};

use super::{RowVerdict, SendFuture, Sink, SinkError};
use crate::retry::Policy;
use crate::source::SourceKind;
use crate::store::{OutboxRow, StoreHandle};

/// What `check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    Ok(String),
    NotVerified(String),
}

/// A batch being delivered, as recorded in the store before its first PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Batch {
    /// `_seq` of its first and last row.
    first: i64,
    last: i64,
    /// Its rows (to read it again).
    rows: usize,
    /// The object limit it was cut with.
    max_object_bytes: usize,
    /// Every object was written.
    written: bool,
}

impl Batch {
    fn key(source: SourceKind) -> String {
        format!("s3_batch_{}", source.name())
    }

    fn to_text(self) -> String {
        format!(
            "v1 {} {} {} {} {}",
            self.first,
            self.last,
            self.rows,
            self.max_object_bytes,
            u8::from(self.written)
        )
    }

    fn parse(text: &str) -> Option<Batch> {
        let mut parts = text.split(' ');
        if parts.next()? != "v1" {
            return None;
        }
        let batch = Batch {
            first: parts.next()?.parse().ok()?,
            last: parts.next()?.parse().ok()?,
            rows: parts.next()?.parse().ok()?,
            max_object_bytes: parts.next()?.parse().ok()?,
            written: parts.next()? == "1",
        };
        parts.next().is_none().then_some(batch)
    }
}

/// Delivers rows to an S3 bucket.
#[derive(Debug)]
pub struct S3Sink {
    config: S3Config,
    /// Static keys, if the config names any.
    keys: Option<client::ReadKeys>,
    client: Option<aws_sdk_s3::Client>,
    /// The store and the sink's name, from `prepare`.
    store: Option<(StoreHandle, String)>,
    /// The recorded batch of each source, once read from the store.
    batches: HashMap<SourceKind, Option<Batch>>,
    policy: Policy,
}

impl S3Sink {
    /// Reads the static keys, if the config names any (the client is built on first use).
    #[allow(
        clippy::disallowed_methods,
        reason = "config loading: the keys come from the variables the sink config names"
    )]
    pub fn new(config: S3Config) -> Result<Self, SinkError> {
        let keys = client::read_keys(&config, &|v| std::env::var(v).ok())
            .map_err(|m| config_error(&config, m))?;
        Ok(S3Sink {
            config,
            keys,
            client: None,
            store: None,
            batches: HashMap::new(),
            policy: Policy {
                max_retries: 5,
                max_throttled: Some(10),
                backoff_base: Duration::from_millis(500),
                backoff_cap: Duration::from_secs(30),
            },
        })
    }

    /// Shortens the first backoff step after a transient failure (tests).
    pub fn with_backoff_base(mut self, base: Duration) -> Self {
        self.policy.backoff_base = base;
        self
    }

    pub fn config(&self) -> &S3Config {
        &self.config
    }

    async fn client(&mut self) -> Result<aws_sdk_s3::Client, SinkError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let c = client::build(&self.config, self.keys.as_ref())
            .await
            .map_err(|m| config_error(&self.config, m))?;
        self.client = Some(c.clone());
        Ok(c)
    }

    /// For `mirotrail check`, without writing: HeadBucket (the bucket exists and the
    /// credentials may use it), then a ListObjectsV2 of one key under the prefix. `Err` is
    /// a definite problem.
    pub async fn check(&mut self) -> Result<Vec<CheckOutcome>, String> {
        let client = self.client().await.map_err(|e| e.to_string())?;
        let bucket = self.config.bucket.clone();
        let fail = |v: Verdict| match v {
            Verdict::Retry(m) | Verdict::Permanent(m) => format!("S3 bucket {bucket}: {m}"),
        };
        let mut out = Vec::new();
        match client.head_bucket().bucket(&bucket).send().await {
            Ok(_) => out.push(CheckOutcome::Ok(format!(
                "bucket `{bucket}` exists and the credentials may use it (HeadBucket; nothing \
                 written)"
            ))),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                return Err(fail(client::classify_sdk(&e, &bucket, status)));
            }
        }
        let listed = client
            .list_objects_v2()
            .bucket(&bucket)
            .prefix(&self.config.prefix)
            .max_keys(1)
            .send()
            .await;
        match listed {
            Ok(_) => out.push(CheckOutcome::NotVerified(format!(
                "listing `{}` is allowed; writing (s3:PutObject) is only verified by the first \
                 upload",
                if self.config.prefix.is_empty() {
                    "the bucket"
                } else {
                    &self.config.prefix
                }
            ))),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                out.push(CheckOutcome::NotVerified(format!(
                    "{} (listing is not needed for delivery)",
                    fail(client::classify_sdk(&e, &bucket, status))
                )));
            }
        }
        Ok(out)
    }

    /// The batch recorded for `source`, read from the store the first time.
    async fn recorded(&mut self, source: SourceKind) -> Result<Option<Batch>, SinkError> {
        if let Some(b) = self.batches.get(&source) {
            return Ok(*b);
        }
        let (store, name) = self.store()?;
        let text = store
            .sink_state(&name, &Batch::key(source))
            .await
            .map_err(|e| SinkError::transient(e.to_string()))?;
        let batch = text.as_deref().and_then(Batch::parse);
        self.batches.insert(source, batch);
        Ok(batch)
    }

    async fn record(&mut self, source: SourceKind, batch: Batch) -> Result<(), SinkError> {
        let (store, name) = self.store()?;
        store
            .set_sink_state(&name, &Batch::key(source), &batch.to_text())
            .await
            .map_err(|e| SinkError::transient(e.to_string()))?;
        self.batches.insert(source, Some(batch));
        Ok(())
    }

    fn store(&self) -> Result<(StoreHandle, String), SinkError> {
        self.store.clone().ok_or_else(|| {
            SinkError::transient(
                "the S3 sink has no store to record its batches in (prepare was not called); \
                 this is a bug, please report it",
            )
        })
    }

    /// Writes the objects of `rows` (one batch), cut with `max_object_bytes`. Returns the
    /// rows that have no line in the sink's format (`_seq`, why), which are in no object:
    /// encoding is pure, so a resend refuses the same rows.
    async fn write(
        &mut self,
        source: SourceKind,
        rows: &[OutboxRow],
        max_object_bytes: usize,
    ) -> Result<Vec<(i64, String)>, SinkError> {
        let client = self.client().await?;
        let format = self.config.format;
        let mut refused = Vec::new();
        let mut encoded = Vec::with_capacity(rows.len());
        for row in rows {
            match object::encode(format, source, row) {
                Ok(line) => encoded.push(line),
                Err(reason) => refused.push((row.seq, reason)),
            }
        }
        let lines: Arc<Vec<object::Line>> = Arc::new(encoded);
        for planned in object::plan(&self.config.prefix, source, &lines, max_object_bytes) {
            let (l, p) = (lines.clone(), planned.clone());
            let body = tokio::task::spawn_blocking(move || object::body(&l, &p))
                .await
                .expect("gzip task panicked");
            Put {
                client: &client,
                bucket: &self.config.bucket,
                key: &planned.key,
                body: &body,
            }
            .run(&self.policy)
            .await
            .map_err(|e| SinkError::S3(Box::new(e)))?;
            tracing::debug!(bucket = %self.config.bucket, key = %planned.key, rows = planned.lines.len(), bytes = body.len(), "object written");
        }
        Ok(refused)
    }

    /// Sends `rows`: first what is left of a recorded batch, exactly as recorded; else
    /// records them as a new batch, writes its objects, and acknowledges them.
    async fn send_rows(
        &mut self,
        source: SourceKind,
        rows: &[OutboxRow],
        verdict: &mut (dyn FnMut(RowVerdict<'_>) + Send),
    ) -> Result<(), SinkError> {
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(());
        };
        if let Some(mut batch) = self.recorded(source).await? {
            if first.seq < batch.first {
                // Rows before the recorded batch (re-queued dead letters, which this sink
                // never makes itself): written as a batch of their own, not recorded.
                let n = rows.partition_point(|r| r.seq < batch.first);
                let refused = self
                    .write(source, &rows[..n], self.config.max_object_bytes)
                    .await?;
                super::ack_all_but(&rows[..n], &refused, verdict);
                return Ok(());
            }
            if first.seq <= batch.last {
                // Its acknowledgement was not stored (a crash, a failure): the same rows
                // again, under the same keys.
                let refused;
                if !batch.written {
                    let (store, _) = self.store()?;
                    let again: Vec<OutboxRow> = store
                        .read_outbox(source, batch.first - 1, batch.rows)
                        .await
                        .map_err(|e| SinkError::transient(e.to_string()))?
                        .into_iter()
                        .filter(|r| r.seq <= batch.last)
                        .collect();
                    tracing::info!(sink = %self.store()?.1, source = %source, first = batch.first, last = batch.last, "rewriting the objects of a batch whose delivery was not recorded");
                    refused = self.write(source, &again, batch.max_object_bytes).await?;
                    batch.written = true;
                    self.record(source, batch).await?;
                } else {
                    // Written before the restart: which rows had no line is found again
                    // by encoding them (pure), without writing anything.
                    let format = self.config.format;
                    refused = rows
                        .iter()
                        .filter(|r| r.seq <= batch.last)
                        .filter_map(|r| object::encode(format, source, r).err().map(|e| (r.seq, e)))
                        .collect();
                }
                let n = rows.partition_point(|r| r.seq <= batch.last);
                super::ack_all_but(&rows[..n], &refused, verdict);
                // Rows after it make the next batch, in the next round.
                return Ok(());
            }
            // Past it: that batch was acknowledged; the new record replaces it.
        }
        let mut batch = Batch {
            first: first.seq,
            last: last.seq,
            rows: rows.len(),
            max_object_bytes: self.config.max_object_bytes,
            written: false,
        };
        self.record(source, batch).await?;
        let refused = self.write(source, rows, batch.max_object_bytes).await?;
        batch.written = true;
        self.record(source, batch).await?;
        super::ack_all_but(rows, &refused, verdict);
        Ok(())
    }
}

/// A problem with the sink's own settings (permanent).
fn config_error(config: &S3Config, message: String) -> SinkError {
    SinkError::S3(Box::new(S3Error {
        bucket: config.bucket.clone(),
        message,
        permanent: true,
    }))
}

impl Sink for S3Sink {
    fn send<'a>(
        &'a mut self,
        source: SourceKind,
        rows: &'a [OutboxRow],
        verdict: &'a mut (dyn FnMut(RowVerdict<'_>) + Send),
    ) -> SendFuture<'a> {
        Box::pin(self.send_rows(source, rows, verdict))
    }

    fn prepare<'a>(&'a mut self, store: &'a StoreHandle, name: &'a str) -> SendFuture<'a> {
        self.store = Some((store.clone(), name.to_string()));
        self.batches.clear();
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_batch_reads_back_as_written() {
        for written in [false, true] {
            let b = Batch {
                first: 17,
                last: 5016,
                rows: 5000,
                max_object_bytes: 8 << 20,
                written,
            };
            assert_eq!(Batch::parse(&b.to_text()), Some(b));
        }
        assert_eq!(Batch::parse("v2 1 2 3 4 1"), None);
        assert_eq!(Batch::parse("v1 1 2 3"), None);
    }
}
