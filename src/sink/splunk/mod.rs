//! The `splunk_hec` sink: Splunk's HTTP Event Collector, with indexer acknowledgement
//! when the token has it (`docs/splunk-hec.md`).
//!
//! `config` validates the keys, `hec` sends one request through the retry loop and
//! classifies HEC's status codes. Each row becomes one event envelope: `time` (the Miro
//! event time, epoch seconds with milliseconds), `host`, `source`, `sourcetype` (per
//! stream), `index`, and the Miro item exactly as stored as `event`; envelopes are
//! concatenated into gzip requests under `max_batch_bytes`.
//!
//! Invariants: a row is reported acknowledged only when HEC confirmed it: with indexer
//! acknowledgement, when `/services/collector/ack` says its request's `ackId` is indexed
//! (a 200 alone moves nothing); without it, on the 200. Rows whose acknowledgement does not
//! come within `ack_timeout` are not reported, so the delivery task sends them again: HEC
//! may then hold them twice, the only case of a duplicate (besides an answer lost on the
//! wire). An event HEC refuses for what it is (`invalid-event-number`) is reported
//! rejected, for the dead letters; any other refusal (token, index, channel) stops
//! delivery with the remedy. The channel GUID is kept in the store (`sink_state`), so a
//! restarted sink uses the same channel. The token is only ever held as `SecretString`.

mod config;
mod hec;

use std::io::Write;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::value::RawValue;

pub(in crate::sink) use config::validate;
pub use config::{AckMode, RawSplunkSink, SplunkConfig};
pub use hec::HecError;
use hec::{Answer, Post, Posted};

use super::{RowVerdict, SendFuture, Sink, SinkError};
use crate::retry::Policy;
use crate::sink::http::{ClientError, RETRY_POLICY, client, read_sink_secret};
use crate::source::SourceKind;
use crate::store::{OutboxRow, StoreHandle};
use crate::timefmt::UnixMs;

/// The `sink_state` key of the channel.
const CHANNEL_KEY: &str = "splunk_hec_channel";

/// What `check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    Ok(String),
    NotVerified(String),
}

/// Delivers rows to a Splunk HEC.
#[derive(Debug)]
pub struct SplunkSink {
    config: SplunkConfig,
    http: reqwest::Client,
    token: SecretString,
    channel: String,
    policy: Policy,
}

impl SplunkSink {
    /// Builds the HTTP client (with the CA file) and reads the token.
    pub fn new(config: SplunkConfig) -> Result<Self, SinkError> {
        let token = read_sink_secret(&config.token).map_err(|e| {
            config_error(
                &config,
                format!(
                    "the token: {e}; put the HEC token there (Splunk: Settings > Data \
                     inputs > HTTP Event Collector), or name another with `token_env`/`token_file`"
                ),
            )
        })?;
        let http = client(&config.http).map_err(|e| match e {
            ClientError::CaFile(message) => config_error(&config, message),
            ClientError::Build(e) => SinkError::HttpClient(e),
        })?;
        Ok(SplunkSink {
            config,
            http,
            token,
            channel: hec::new_channel(),
            policy: RETRY_POLICY,
        })
    }

    /// Shortens the first backoff step after a transient failure (tests).
    pub fn with_backoff_base(mut self, base: Duration) -> Self {
        self.policy.backoff_base = base;
        self
    }

    pub fn config(&self) -> &SplunkConfig {
        &self.config
    }

    /// The acknowledgement channel in use.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    fn post(&self, path: &str, body: Vec<u8>, gzip: bool, raw_answer: bool) -> Post<'_> {
        Post {
            http: &self.http,
            url: self.config.url(path),
            token: &self.token,
            channel: (self.config.ack != AckMode::Off).then_some(self.channel.as_str()),
            body,
            gzip,
            index: self.config.index.as_deref(),
            raw_answer,
        }
    }

    /// For `mirotrail check`, without writing an event: the health endpoint, then the
    /// token through a request with no events (HEC checks the token before the body and
    /// answers "No data", code 5, to a valid one). `Err` is a definite problem.
    pub async fn check(&self) -> Result<Vec<CheckOutcome>, String> {
        let mut out = Vec::new();
        let health = self.config.url("/services/collector/health");
        let answer = self
            .http
            .get(health.clone())
            .send()
            .await
            .map_err(|e| format!("cannot reach {health}: {}", crate::net::error_chain(&e)))?;
        let status = answer.status().as_u16();
        let body = crate::net::read_body_capped(answer, crate::net::MAX_AUXILIARY_BODY_BYTES)
            .await
            .unwrap_or_default();
        // What HEC says, in a line (a proxy may answer with a whole page).
        let text: String = String::from_utf8_lossy(&body)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(200)
            .collect();
        match status {
            200 => out.push(CheckOutcome::Ok(format!("{health} answered 200 {text}"))),
            503 => {
                return Err(format!(
                    "{health} answered 503 {text}: HEC is up but cannot take events now \
                     (queues full or acknowledgement unavailable); delivery waits and retries"
                ));
            }
            404 => {
                return Err(format!(
                    "{health} answered 404: no HTTP Event Collector there; check `endpoint` \
                     (the HEC port, 8088 by default) and that HEC is enabled (Global Settings)"
                ));
            }
            _ => out.push(CheckOutcome::NotVerified(format!(
                "{health} answered {status} {text}"
            ))),
        }
        let empty = self.post("/services/collector/event", Vec::new(), false, true);
        match empty
            .run(&Policy {
                max_retries: 0,
                ..self.policy
            })
            .await
        {
            Ok(
                Posted::Raw(_)
                | Posted::Event(Answer::Accepted { .. } | Answer::EventRefused { .. }),
            ) => out.push(CheckOutcome::NotVerified(
                "an empty request was accepted, which HEC does not do; the token is not verified"
                    .into(),
            )),
            Ok(Posted::Event(Answer::NoData)) => out.push(CheckOutcome::Ok(format!(
                "the token is valid and enabled (an empty request got \"No data\"; nothing \
                 written); the index {} is only checked with the first event",
                self.config
                    .index
                    .as_deref()
                    .map_or("(the token's default)".to_string(), |i| format!("`{i}`"))
            ))),
            Err(e) => return Err(e.to_string()),
        }
        Ok(out)
    }

    /// Sends `rows` and reports what HEC confirmed.
    async fn send_rows(
        &mut self,
        source: SourceKind,
        rows: &[OutboxRow],
        verdict: &mut (dyn FnMut(RowVerdict<'_>) + Send),
    ) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = rows.iter().map(|r| self.envelope(source, r)).collect();
        let mut progressed = false;
        let mut failure: Option<HecError> = None;
        // Requests waiting for indexer acknowledgement: (ackId, first row, last row).
        let mut pending: Vec<(u64, usize, usize)> = Vec::new();
        let mut start = 0;
        while start < rows.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < rows.len()
                && (end == start || bytes + lines[end].len() <= self.config.http.max_batch_bytes)
            {
                bytes += lines[end].len();
                end += 1;
            }
            let body = self.body(&lines[start..end]);
            let answer = self
                .post(
                    "/services/collector/event",
                    body,
                    self.config.http.gzip,
                    false,
                )
                .run(&self.policy)
                .await;
            match answer {
                Ok(Posted::Event(Answer::Accepted { ack_id: Some(id) }))
                    if self.config.ack != AckMode::Off =>
                {
                    pending.push((id, start, end - 1));
                }
                Ok(Posted::Event(Answer::Accepted { .. })) => {
                    if self.config.ack == AckMode::On {
                        failure = Some(HecError {
                            endpoint: self.config.endpoint.to_string(),
                            message: "answered without an ackId although `ack = true`: the \
                                      token has indexer acknowledgement off; turn it on for \
                                      the token, or set `ack = \"auto\"` or `ack = false`"
                                .into(),
                            permanent: true,
                        });
                        break;
                    }
                    verdict(RowVerdict::Acked {
                        first: rows[start].seq,
                        last: rows[end - 1].seq,
                    });
                    progressed = true;
                }
                Ok(Posted::Event(Answer::EventRefused { number, reason })) => {
                    let refused = start + number.min(end - start - 1);
                    // HEC processed the events before the refused one. Without indexer
                    // acknowledgement that answer is all the confirmation there is; with
                    // it, they have no ackId and are sent again (HEC may hold them twice).
                    if refused > start && self.config.ack != AckMode::On {
                        verdict(RowVerdict::Acked {
                            first: rows[start].seq,
                            last: rows[refused - 1].seq,
                        });
                    }
                    verdict(RowVerdict::Rejected {
                        seq: rows[refused].seq,
                        reason: &reason,
                    });
                    progressed = true;
                    // The rows after it come again in the next round.
                    break;
                }
                Ok(Posted::Event(Answer::NoData)) => {
                    failure = Some(HecError {
                        endpoint: self.config.endpoint.to_string(),
                        message: "answered \"No data\" (code 5) to a request with events; a \
                                  proxy may be stripping request bodies"
                            .into(),
                        permanent: false,
                    });
                    break;
                }
                Ok(Posted::Raw(_)) => unreachable!("event requests are classified"),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            start = end;
        }
        if !pending.is_empty() {
            match self.await_acks(rows, pending, verdict).await {
                Ok(acked) => progressed |= acked,
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            None => Ok(()),
            Some(e) if progressed && !e.permanent => {
                tracing::debug!(error = %e, "delivered the first rows; the rest failed");
                Ok(())
            }
            Some(e) => Err(SinkError::Splunk(Box::new(e))),
        }
    }

    /// Polls `/services/collector/ack` until every pending request is indexed or
    /// `ack_timeout` passed; reports each indexed request's rows. `Ok(true)` when at least
    /// one was; `Err` when none was and the last poll failed, or when none came in time.
    async fn await_acks(
        &self,
        rows: &[OutboxRow],
        mut pending: Vec<(u64, usize, usize)>,
        verdict: &mut (dyn FnMut(RowVerdict<'_>) + Send),
    ) -> Result<bool, HecError> {
        let started = Instant::now();
        let mut acked_any = false;
        let mut last_error: Option<HecError> = None;
        while !pending.is_empty() && started.elapsed() < self.config.ack_timeout {
            tokio::time::sleep(self.config.ack_poll_interval).await;
            let ids: Vec<u64> = pending.iter().map(|p| p.0).collect();
            let body = serde_json::json!({ "acks": ids }).to_string().into_bytes();
            let mut post = self.post("/services/collector/ack", body, false, true);
            post.url
                .query_pairs_mut()
                .append_pair("channel", &self.channel);
            let statuses = match post.run(&self.policy).await {
                Ok(Posted::Raw(b)) => b,
                Ok(Posted::Event(_)) => unreachable!("ack answers are raw"),
                Err(e) if e.permanent => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot ask Splunk HEC for acknowledgements; asking again");
                    last_error = Some(e);
                    continue;
                }
            };
            let statuses: serde_json::Value = serde_json::from_slice(&statuses).unwrap_or_default();
            pending.retain(|&(id, first, last)| {
                let done = statuses
                    .get("acks")
                    .and_then(|a| a.get(id.to_string()))
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false);
                if done {
                    verdict(RowVerdict::Acked {
                        first: rows[first].seq,
                        last: rows[last].seq,
                    });
                    acked_any = true;
                }
                !done
            });
        }
        if pending.is_empty() || acked_any {
            if !pending.is_empty() {
                tracing::warn!(
                    requests = pending.len(),
                    timeout_secs = self.config.ack_timeout.as_secs(),
                    "Splunk HEC did not confirm indexing of some requests in time; their rows are sent again (HEC may then hold them twice)"
                );
            }
            return Ok(acked_any);
        }
        Err(last_error.unwrap_or_else(|| HecError {
            endpoint: self.config.endpoint.to_string(),
            message: format!(
                "accepted {} request(s) but did not confirm indexing within `ack_timeout` ({}s); \
                 their rows are sent again (HEC may then hold them twice). If indexing is \
                 just slow, raise `ack_timeout`",
                pending.len(),
                self.config.ack_timeout.as_secs()
            ),
            permanent: false,
        }))
    }

    /// One event envelope (JSON text). The Miro item is embedded as stored, digit for digit.
    fn envelope(&self, source: SourceKind, row: &OutboxRow) -> String {
        let event: Box<RawValue> = RawValue::from_string(row.raw.clone()).unwrap_or_else(|_| {
            RawValue::from_string(serde_json::Value::String(row.raw.clone()).to_string())
                .expect("a JSON string")
        });
        // The event time: `createdAt` / `actionTime` (column 2), else `TimeGenerated`.
        let cells = row.cells(source);
        let time = [2, 0]
            .iter()
            .filter_map(|&i| cells.get(i).cloned().flatten())
            .find_map(|t| UnixMs::parse(&t));
        let mut envelope = serde_json::Map::new();
        if let Some(t) = time {
            let text = format!("{}.{:03}", t.0.div_euclid(1000), t.0.rem_euclid(1000));
            envelope.insert(
                "time".into(),
                serde_json::from_str(&text).expect("a decimal number"),
            );
        }
        if let Some(h) = &self.config.host {
            envelope.insert("host".into(), h.clone().into());
        }
        envelope.insert("source".into(), self.config.source.clone().into());
        envelope.insert(
            "sourcetype".into(),
            self.config.sourcetype(source).to_string().into(),
        );
        if let Some(i) = &self.config.index {
            envelope.insert("index".into(), i.clone().into());
        }
        // An indexed field (HEC `fields`): the Miro organisation the row came from.
        if let Some(id) = &row.org_id {
            envelope.insert("fields".into(), serde_json::json!({ "miro_org_id": id }));
        }
        let mut text = serde_json::Value::Object(envelope).to_string();
        // Append `"event": <raw>` without re-encoding the item.
        text.pop();
        if text.len() > 1 {
            text.push(',');
        }
        text.push_str("\"event\":");
        text.push_str(event.get());
        text.push('}');
        text
    }

    /// Concatenated envelopes, gzip-compressed when configured.
    fn body(&self, lines: &[String]) -> Vec<u8> {
        let mut plain = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            plain.extend_from_slice(l.as_bytes());
            plain.push(b'\n');
        }
        if !self.config.http.gzip {
            return plain;
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).expect("writing to memory");
        gz.finish().expect("writing to memory")
    }
}

/// A problem with the sink's own settings (permanent).
fn config_error(config: &SplunkConfig, message: String) -> SinkError {
    SinkError::Splunk(Box::new(HecError {
        endpoint: config.endpoint.to_string(),
        message,
        permanent: true,
    }))
}

impl Sink for SplunkSink {
    fn send<'a>(
        &'a mut self,
        source: SourceKind,
        rows: &'a [OutboxRow],
        verdict: &'a mut (dyn FnMut(RowVerdict<'_>) + Send),
    ) -> SendFuture<'a> {
        Box::pin(self.send_rows(source, rows, verdict))
    }

    fn prepare<'a>(&'a mut self, store: &'a StoreHandle, name: &'a str) -> SendFuture<'a> {
        Box::pin(async move {
            if self.config.ack == AckMode::Off {
                return Ok(());
            }
            let channel = store
                .sink_state_or_insert(name, CHANNEL_KEY, &self.channel)
                .await
                .map_err(|e| {
                    SinkError::transient(format!(
                        "{e}; this run uses a new acknowledgement channel"
                    ))
                })?;
            self.channel = channel;
            Ok(())
        })
    }
}
