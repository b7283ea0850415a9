//! One chunk to the Logs Ingestion API: gzip, POST, and the decision on the answer.
//!
//! `classify` is the one place that decides what an answer means; `upload_chunk` follows
//! it through the shared retry loop (`crate::retry`): retries (bounded, within one
//! `send`), renews the token once on 401, halves a chunk on 413 until it fits, and
//! reports how many leading records were acknowledged.
//!
//! A 429 waits for its `Retry-After`; 408, 5xx and connection errors are resent after a
//! jittered backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use super::MAX_BATCH_BYTES;
use super::auth::TokenProvider;
use super::batch::{Records, gzip_array};
use crate::net::{BodyError, MAX_AUXILIARY_BODY_BYTES, error_chain, read_body_capped};
use crate::retry::{self, Decision, Exchange, GiveUp, Policy};
use crate::sink::SinkError;

/// How an ingestion answer ends the request, when waiting cannot change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// 2xx (204): the records are in.
    Accepted,
    /// 413: the body is over Azure's limit; halve the chunk and resend.
    Split,
    /// 401: the token expired or is invalid; get a new one, once.
    RenewToken,
    /// 400: Azure refused the records as malformed. For one record of a stream that
    /// accepts others, the record is at fault; otherwise the DCR or stream is.
    Malformed(AzureError),
    /// Resending cannot help; the message says what to change.
    Permanent(AzureError),
}

/// What Azure refused, with the status, the DCR and stream, and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AzureError {
    /// 403: the identity lacks the role on the DCR.
    #[error(
        "Azure refused to let this identity write to DCR {dcr} (stream {stream}) (403{detail}): \
         grant it the \"Monitoring Metrics Publisher\" role on that data collection rule \
         (Access control (IAM) > Add role assignment); a new assignment can take up to 30 \
         minutes to apply"
    )]
    RoleMissing {
        dcr: String,
        stream: String,
        detail: String,
    },
    /// 400: the records do not fit the stream's declaration.
    #[error(
        "Azure rejected the records for DCR {dcr}, stream {stream} as malformed (400{detail}): \
         check that the DCR declares this stream with the Sentinel \"Miro\" columns \
         (`mirotrail template azure` shows them)"
    )]
    Malformed {
        dcr: String,
        stream: String,
        detail: String,
    },
    /// 404: the endpoint does not know the DCR or the stream.
    #[error(
        "the data collection endpoint {endpoint} does not know DCR {dcr} or stream {stream} \
         (404{detail}): check the DCR's immutable id, the stream name, and that the DCE is \
         the one associated with the DCR (same region)"
    )]
    UnknownDcr {
        endpoint: Url,
        dcr: String,
        stream: String,
        detail: String,
    },
    /// A freshly issued token is refused too (401 after a renewal).
    #[error(
        "the logs ingestion API refused a freshly issued token for DCR {dcr} ({what}): check \
         that `audience`/`cloud` match the endpoint {endpoint} and that the token comes from \
         the DCR's tenant"
    )]
    TokenRefused {
        dcr: String,
        endpoint: Url,
        what: &'static str,
    },
    #[error("the logs ingestion API answered {status}{detail} for DCR {dcr}, stream {stream}")]
    Unexpected {
        status: u16,
        dcr: String,
        stream: String,
        detail: String,
    },
}

/// Where a chunk goes (named in messages).
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub endpoint: Url,
    pub dcr: String,
    pub stream: String,
}

impl Target {
    /// The ingestion URL of the DCR's stream.
    fn url(&self) -> String {
        format!(
            "{}/dataCollectionRules/{}/streams/{}?api-version=2023-01-01",
            self.endpoint.as_str().trim_end_matches('/'),
            self.dcr,
            self.stream
        )
    }
}

/// What an ingestion answer's head says: the status, `Retry-After` and
/// `x-ms-error-code`.
fn answer_head(response: &reqwest::Response) -> (u16, Option<Duration>, Option<String>) {
    let headers = response.headers();
    let retry_after = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let header_code = headers
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (response.status().as_u16(), retry_after, header_code)
}

/// The error body of the ingestion API.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct IngestionError {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorEnvelope {
    #[serde(default)]
    error: IngestionError,
}

impl IngestionError {
    /// Reads `{"error":{"code","message"}}`, with `x-ms-error-code` as the fallback code.
    pub(crate) fn parse(body: &[u8], header_code: Option<&str>) -> Self {
        let mut e = serde_json::from_slice::<ErrorEnvelope>(body)
            .map(|e| e.error)
            .unwrap_or_default();
        if e.code.is_none() {
            e.code = header_code.map(str::to_string);
        }
        e
    }

    fn detail(&self) -> String {
        let code = self.code.as_deref().unwrap_or("");
        let message: String = self
            .message
            .as_deref()
            .unwrap_or("")
            .chars()
            .take(300)
            .collect();
        match (code.is_empty(), message.is_empty()) {
            (true, true) => String::new(),
            (false, true) => format!(" {code}"),
            (true, false) => format!(": \"{message}\""),
            (false, false) => format!(" {code}: \"{message}\""),
        }
    }
}

/// Decides what an ingestion answer means.
pub(crate) fn classify(
    status: u16,
    retry_after: Option<Duration>,
    error: &IngestionError,
    target: &Target,
) -> Decision<Verdict> {
    let Target {
        endpoint,
        dcr,
        stream,
    } = target;
    let detail = error.detail();
    match status {
        200..=299 => Decision::Finish(Verdict::Accepted),
        413 => Decision::Finish(Verdict::Split),
        401 => Decision::Finish(Verdict::RenewToken),
        429 => Decision::Throttled {
            wait: retry_after
                .unwrap_or(Duration::from_secs(10))
                .clamp(Duration::from_secs(1), Duration::from_secs(300)),
        },
        408 | 500..=599 => Decision::Retry {
            reason: format!("the logs ingestion API answered {status}{detail}"),
        },
        403 => Decision::Finish(Verdict::Permanent(AzureError::RoleMissing {
            dcr: dcr.clone(),
            stream: stream.clone(),
            detail,
        })),
        400 => Decision::Finish(Verdict::Malformed(AzureError::Malformed {
            dcr: dcr.clone(),
            stream: stream.clone(),
            detail,
        })),
        404 => Decision::Finish(Verdict::Permanent(AzureError::UnknownDcr {
            endpoint: endpoint.clone(),
            dcr: dcr.clone(),
            stream: stream.clone(),
            detail,
        })),
        _ => Decision::Finish(Verdict::Permanent(AzureError::Unexpected {
            status,
            dcr: dcr.clone(),
            stream: stream.clone(),
            detail,
        })),
    }
}

/// Counters of the sink (read by tests and `status`).
#[derive(Debug, Default)]
pub(crate) struct UploadStats {
    pub requests: AtomicU64,
    pub accepted_records: AtomicU64,
    pub retries: AtomicU64,
    pub throttled: AtomicU64,
    pub splits: AtomicU64,
    pub token_renewals: AtomicU64,
    pub long_values: AtomicU64,
}

/// What a chunk upload needs, shared by concurrent uploads.
#[derive(Debug)]
pub(crate) struct Uploader {
    pub http: reqwest::Client,
    pub tokens: TokenProvider,
    pub backoff_base: Duration,
    pub max_attempts: u32,
    pub max_throttled: u32,
    pub stats: UploadStats,
    /// `dcr/stream` targets that accepted records since start.
    pub accepting: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// How a chunk went: its leading records in order, each accepted (`None`) or refused
/// for good with a reason (`Some`); `error` stopped the rest.
#[derive(Debug)]
pub(crate) struct ChunkOutcome {
    pub results: Vec<Option<String>>,
    pub error: Option<SinkError>,
}

enum PostError {
    TooLarge,
    /// 400: the records were refused as malformed.
    Malformed(SinkError),
    Failed(SinkError),
}

impl Uploader {
    /// Uploads `records` in order, halving on 413 and on 400 until the refused record is
    /// found; a record Azure will never take (alone over the 1 MB call limit, or refused
    /// as malformed alone while the stream accepts other records) is reported as refused
    /// and the rest goes on. Stops at the first other failure.
    pub(crate) async fn upload_chunk(
        self: Arc<Self>,
        target: Arc<Target>,
        records: Arc<Records>,
        range: std::ops::Range<usize>,
    ) -> ChunkOutcome {
        let mut stack = vec![range.clone()];
        let mut results: Vec<Option<String>> = Vec::with_capacity(range.len());
        // A record refused alone (400) before any later record was accepted: it may be
        // the DCR that is wrong, not the record. (index in `results`, the error)
        let mut suspect: Option<(usize, SinkError)> = None;
        while let Some(r) = stack.pop() {
            if r.len() == 1 && records.json(r.start).len() + 2 > MAX_BATCH_BYTES {
                // Alone over the limit of one call: no request can carry it.
                results.push(Some(format!(
                    "row _seq {} (Miro id `{}`) is {} bytes of JSON, more than the {MAX_BATCH_BYTES} \
                     bytes Azure accepts in one call (DCR {}, stream {}); it was not sent",
                    records.seq(r.start),
                    records.id(r.start),
                    records.json(r.start).len(),
                    target.dcr,
                    target.stream
                )));
                continue;
            }
            match self.post(&target, &records, r.clone()).await {
                Ok(()) => {
                    results.extend(r.clone().map(|_| None));
                    self.stats
                        .accepted_records
                        .fetch_add(r.len() as u64, Ordering::Relaxed);
                    self.mark_accepting(&target);
                    // The stream takes records: the earlier refusal was the record's.
                    suspect = None;
                }
                Err(PostError::TooLarge | PostError::Malformed(_)) if r.len() > 1 => {
                    self.stats.splits.fetch_add(1, Ordering::Relaxed);
                    let mid = r.start + r.len() / 2;
                    tracing::debug!(
                        records = r.len(),
                        "413 or 400 from the logs ingestion API; halving the chunk"
                    );
                    stack.push(mid..r.end);
                    stack.push(r.start..mid);
                }
                Err(PostError::TooLarge) => {
                    results.push(Some(format!(
                        "row _seq {} (Miro id `{}`) is {} bytes of JSON, more than Azure accepts \
                         in one call (413 from DCR {}, stream {}); it was sent alone and refused",
                        records.seq(r.start),
                        records.id(r.start),
                        records.json(r.start).len(),
                        target.dcr,
                        target.stream
                    )));
                }
                Err(PostError::Malformed(e)) => {
                    if let Some((at, first)) = suspect.take() {
                        // Two records in a row refused, none taken: the DCR or stream is
                        // at fault; stop before the first of them, as for any 400.
                        results.truncate(at);
                        return ChunkOutcome {
                            results,
                            error: Some(first),
                        };
                    }
                    results.push(Some(format!(
                        "Azure refused row _seq {} (Miro id `{}`) alone as malformed while \
                         accepting the others: {e}",
                        records.seq(r.start),
                        records.id(r.start)
                    )));
                    suspect = Some((results.len() - 1, e));
                }
                Err(PostError::Failed(e)) => {
                    if let Some((at, _)) = suspect {
                        results.truncate(at);
                    }
                    return ChunkOutcome {
                        results,
                        error: Some(e),
                    };
                }
            }
        }
        if let Some((at, first)) = suspect
            && !self.accepting(&target)
        {
            // No record of this stream was ever taken: nothing shows the record is at
            // fault rather than the DCR.
            results.truncate(at);
            return ChunkOutcome {
                results,
                error: Some(first),
            };
        }
        ChunkOutcome {
            results,
            error: None,
        }
    }

    /// Remembers that `target` accepted records (so a lone refused record is its own fault).
    fn mark_accepting(&self, target: &Target) {
        let key = format!("{}/{}", target.dcr, target.stream);
        let mut set = self.accepting.lock().expect("accepting lock");
        if !set.contains(&key) {
            set.insert(key);
        }
    }

    fn accepting(&self, target: &Target) -> bool {
        let key = format!("{}/{}", target.dcr, target.stream);
        self.accepting
            .lock()
            .expect("accepting lock")
            .contains(&key)
    }

    async fn post(
        &self,
        target: &Target,
        records: &Records,
        range: std::ops::Range<usize>,
    ) -> Result<(), PostError> {
        let url = target.url();
        let policy = Policy {
            max_retries: self.max_attempts.saturating_sub(1),
            max_throttled: Some(self.max_throttled),
            // The upload's first retry has always waited up to twice its base.
            backoff_base: self.backoff_base.saturating_mul(2),
            backoff_cap: Duration::from_secs(30),
        };
        let mut exchange = UploadExchange {
            uploader: self,
            target,
            url,
            body: gzip_array(records, range),
            token: None,
            renewed: false,
            request_id: String::new(),
        };
        retry::run(&policy, &mut exchange).await
    }
}

/// One chunk's POST as the retry loop drives it: a token before each request, one
/// renewal on 401, 429s slept out.
struct UploadExchange<'a> {
    uploader: &'a Uploader,
    target: &'a Target,
    url: String,
    body: Vec<u8>,
    token: Option<super::auth::AccessToken>,
    renewed: bool,
    /// The id of the last request, for logs.
    request_id: String,
}

impl Exchange for UploadExchange<'_> {
    type Output = ();
    type Error = PostError;

    async fn acquire(&mut self) -> Result<(), PostError> {
        let token = self
            .uploader
            .tokens
            .token()
            .await
            .map_err(|e| PostError::Failed(SinkError::Auth(e)))?;
        self.token = Some(token);
        Ok(())
    }

    async fn send(&mut self) -> Decision<Result<(), PostError>> {
        let token = self.token.as_ref().expect("acquired before each send");
        let target = self.target;
        self.uploader.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.request_id = request_id();
        let sent = self
            .uploader
            .http
            .post(&self.url)
            .bearer_auth(token.secret.expose_secret())
            .header("Content-Type", "application/json")
            .header("Content-Encoding", "gzip")
            .header("x-ms-client-request-id", &self.request_id)
            .body(self.body.clone())
            .send()
            .await;
        let decision = match sent {
            Err(e) => Decision::Retry {
                reason: format!(
                    "cannot reach the logs ingestion endpoint {}: {}",
                    target.endpoint,
                    error_chain(&e)
                ),
            },
            Ok(response) => {
                let (status, retry_after, header_code) = answer_head(&response);
                match read_body_capped(response, MAX_AUXILIARY_BODY_BYTES).await {
                    Ok(bytes) => {
                        let error = if (200..300).contains(&status) {
                            IngestionError::default()
                        } else {
                            IngestionError::parse(&bytes, header_code.as_deref())
                        };
                        classify(status, retry_after, &error, target)
                    }
                    // Not read further: the status and `x-ms-error-code` decide.
                    Err(BodyError::TooLarge { .. }) => {
                        let error = IngestionError::parse(b"", header_code.as_deref());
                        classify(status, retry_after, &error, target)
                    }
                    Err(BodyError::Transport(e)) if (200..300).contains(&status) => {
                        tracing::debug!(error = %error_chain(&e), "acknowledgement body broke off; the status counts");
                        Decision::Finish(Verdict::Accepted)
                    }
                    Err(BodyError::Transport(e)) => Decision::Retry {
                        reason: format!("the answer {status} broke off: {}", error_chain(&e)),
                    },
                }
            }
        };
        let verdict = match decision {
            Decision::Finish(verdict) => verdict,
            Decision::Again => return Decision::Again,
            Decision::Throttled { wait } => {
                self.uploader
                    .stats
                    .throttled
                    .fetch_add(1, Ordering::Relaxed);
                return Decision::Throttled { wait };
            }
            Decision::Retry { reason } => return Decision::Retry { reason },
        };
        Decision::Finish(match verdict {
            Verdict::Accepted => Ok(()),
            Verdict::Split => Err(PostError::TooLarge),
            Verdict::RenewToken if !self.renewed => {
                self.renewed = true;
                self.uploader
                    .stats
                    .token_renewals
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(dcr = %target.dcr, "the logs ingestion API refused the token (401); getting a new one");
                self.uploader.tokens.invalidate(token.id).await;
                return Decision::Again;
            }
            Verdict::RenewToken => Err(PostError::Failed(SinkError::from(token_refused(
                target,
                "401 twice",
            )))),
            Verdict::Malformed(e) => Err(PostError::Malformed(e.into())),
            Verdict::Permanent(e) => Err(PostError::Failed(e.into())),
        })
    }

    async fn throttled(&mut self, wait: Duration) -> Result<(), PostError> {
        tracing::warn!(dcr = %self.target.dcr, wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), request_id = %self.request_id, "throttled by the logs ingestion API (429); waiting");
        tokio::time::sleep(wait).await;
        Ok(())
    }

    fn retrying(&mut self, _attempt: u32, wait: Duration, reason: &str) {
        self.uploader.stats.retries.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(dcr = %self.target.dcr, error = %reason, request_id = %self.request_id, retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "upload failed; retrying");
    }

    async fn sleep(&mut self, wait: Duration) -> Result<(), PostError> {
        tokio::time::sleep(wait).await;
        Ok(())
    }

    fn give_up(&mut self, why: GiveUp) -> PostError {
        PostError::Failed(match why {
            GiveUp::Failures { failures, reason } => {
                SinkError::transient(format!("{reason} (after {failures} attempts)"))
            }
            GiveUp::Throttled { wait, .. } => SinkError::Throttled {
                dcr: self.target.dcr.clone(),
                retry_after: wait,
            },
        })
    }
}

/// A freshly issued token that the ingestion API still refuses.
fn token_refused(target: &Target, what: &'static str) -> AzureError {
    AzureError::TokenRefused {
        dcr: target.dcr.clone(),
        endpoint: target.endpoint.clone(),
        what,
    }
}

/// What an empty batch (`[]`) told about a DCR and stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// 2xx: endpoint, token, DCR, stream and role all passed; nothing was written.
    Accepted { status: u16 },
    /// The answer proves nothing either way (400 to an empty body, 429, 5xx).
    Inconclusive(String),
}

/// Posts an empty JSON array to the DCR's stream: the same checks as an upload (endpoint,
/// token, DCR, role, stream) without writing a row. `Err` is a definite problem with its
/// remedy (the same messages as delivery).
pub(crate) async fn probe(
    http: &reqwest::Client,
    token: &SecretString,
    target: &Target,
) -> Result<ProbeOutcome, String> {
    let url = target.url();
    let response = http
        .post(&url)
        .bearer_auth(token.expose_secret())
        .header("Content-Type", "application/json")
        .header("x-ms-client-request-id", request_id())
        .body("[]")
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot reach the logs ingestion endpoint {}: {}; check `endpoint` (the data \
                 collection endpoint's logs ingestion URL, or the DCR's own for a Direct DCR)",
                target.endpoint,
                error_chain(&e)
            )
        })?;
    let (status, retry_after, header_code) = answer_head(&response);
    let body = read_body_capped(response, MAX_AUXILIARY_BODY_BYTES)
        .await
        .unwrap_or_default();
    let error = IngestionError::parse(&body, header_code.as_deref());
    match classify(status, retry_after, &error, target) {
        Decision::Finish(Verdict::Accepted) => Ok(ProbeOutcome::Accepted { status }),
        Decision::Finish(Verdict::RenewToken) => Err(token_refused(target, "401").to_string()),
        // Azure may refuse an empty batch as such; that says nothing about the rest.
        Decision::Finish(Verdict::Malformed(_))
            if error.code.as_deref() != Some("InvalidStream") =>
        {
            Ok(ProbeOutcome::Inconclusive(format!(
                "the endpoint answered 400{} to an empty batch",
                error.detail()
            )))
        }
        Decision::Finish(Verdict::Permanent(e) | Verdict::Malformed(e)) => Err(e.to_string()),
        Decision::Finish(Verdict::Split) => Ok(ProbeOutcome::Inconclusive(
            "the endpoint answered 413 to an empty batch".into(),
        )),
        Decision::Throttled { .. } | Decision::Retry { .. } | Decision::Again => {
            Ok(ProbeOutcome::Inconclusive(format!(
                "the endpoint answered {status}{}; try again later",
                error.detail()
            )))
        }
    }
}

/// A random GUID-shaped request id.
fn request_id() -> String {
    let n: u128 = rand::random();
    let h = format!("{n:032x}");
    format!(
        "{}-{}-4{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            endpoint: Url::parse("https://dce.eastus-1.ingest.monitor.azure.com").unwrap(),
            dcr: "dcr-0123456789abcdef0123456789abcdef".into(),
            stream: "Custom-MiroAuditLogs_CL".into(),
        }
    }

    fn c(status: u16) -> Decision<Verdict> {
        let e = IngestionError::parse(
            br#"{"error":{"code":"OperationFailed","message":"The authentication token provided does not have access"}}"#,
            None,
        );
        classify(status, Some(Duration::from_secs(7)), &e, &target())
    }

    fn permanent(d: Decision<Verdict>) -> String {
        match d {
            Decision::Finish(Verdict::Permanent(e)) => e.to_string(),
            other => panic!("not permanent: {other:?}"),
        }
    }

    #[test]
    fn status_204_is_accepted() {
        assert_eq!(c(204), Decision::Finish(Verdict::Accepted));
        assert_eq!(c(200), Decision::Finish(Verdict::Accepted));
    }

    #[test]
    fn status_413_splits() {
        assert_eq!(c(413), Decision::Finish(Verdict::Split));
    }

    #[test]
    fn status_429_waits_retry_after() {
        assert_eq!(
            c(429),
            Decision::Throttled {
                wait: Duration::from_secs(7)
            }
        );
        let d = classify(429, None, &IngestionError::default(), &target());
        assert_eq!(
            d,
            Decision::Throttled {
                wait: Duration::from_secs(10)
            }
        );
        let d = classify(
            429,
            Some(Duration::ZERO),
            &IngestionError::default(),
            &target(),
        );
        assert_eq!(
            d,
            Decision::Throttled {
                wait: Duration::from_secs(1)
            }
        );
    }

    #[test]
    fn status_408_and_5xx_retry() {
        for s in [408, 500, 502, 503, 504] {
            assert!(matches!(c(s), Decision::Retry { .. }), "{s}");
        }
    }

    #[test]
    fn status_401_renews_the_token() {
        assert_eq!(c(401), Decision::Finish(Verdict::RenewToken));
    }

    #[test]
    fn status_403_names_the_dcr_stream_and_role() {
        let m = permanent(c(403));
        assert!(m.contains("dcr-0123456789abcdef0123456789abcdef"), "{m}");
        assert!(m.contains("Custom-MiroAuditLogs_CL"), "{m}");
        assert!(
            m.contains("\"Monitoring Metrics Publisher\"") && m.contains("30 minutes"),
            "{m}"
        );
        assert!(m.contains("OperationFailed"), "{m}");
    }

    #[test]
    fn status_400_names_the_dcr_and_stream() {
        let Decision::Finish(Verdict::Malformed(e)) = c(400) else {
            panic!("400 is malformed")
        };
        let m = e.to_string();
        assert!(
            m.contains("dcr-0123456789abcdef0123456789abcdef")
                && m.contains("Custom-MiroAuditLogs_CL"),
            "{m}"
        );
    }

    #[test]
    fn status_404_points_at_the_dcr_id_and_endpoint() {
        let m = permanent(c(404));
        assert!(
            m.contains("immutable id") && m.contains("dce.eastus-1"),
            "{m}"
        );
        assert!(permanent(c(302)).contains("302"));
    }

    #[test]
    fn error_code_falls_back_to_the_header() {
        let e = IngestionError::parse(b"not json", Some("InvalidStream"));
        assert_eq!(e.code.as_deref(), Some("InvalidStream"));
    }

    #[test]
    fn request_ids_look_like_guids() {
        let id = request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }
}
