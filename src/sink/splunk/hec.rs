//! One HEC exchange and what its answer means: the pure classification of a status and
//! its `{"text","code"}` body (see `docs/splunk-hec.md`, "Status codes"), and the request
//! driven by the one retry loop (`crate::retry`).

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::net::MAX_AUXILIARY_BODY_BYTES;
use crate::retry::{Decision, Exchange, GiveUp, Policy};
use crate::sink::http::send;

/// The header naming the indexer acknowledgement channel.
pub(super) const CHANNEL_HEADER: &str = "X-Splunk-Request-Channel";

/// A failure of the HEC (or of reaching it), with the remedy.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Splunk HEC {endpoint}: {message}")]
pub struct HecError {
    pub endpoint: String,
    pub message: String,
    /// Retrying cannot help until someone changes something.
    pub permanent: bool,
}

/// HEC's answer body: tolerant, every field optional.
#[derive(Debug, Default, Deserialize)]
struct Body {
    text: Option<String>,
    code: Option<u64>,
    #[serde(rename = "ackId")]
    ack_id: Option<u64>,
    #[serde(rename = "invalid-event-number")]
    invalid_event_number: Option<usize>,
}

/// What an event request's answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    /// 200: accepted; `ack_id` when the token uses indexer acknowledgement.
    Accepted { ack_id: Option<u64> },
    /// One event refused for what it is (400 with `invalid-event-number`); HEC processed
    /// the events before it and none after it.
    EventRefused { number: usize, reason: String },
    /// 400, code 5: the request held no event (the token was valid: HEC checks it first).
    NoData,
}

/// The verdict on one answer of the event or ack endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    Answer(Answer),
    /// Send again after a backoff.
    Retry(String),
    /// Send again after `wait` (429 from Splunk Cloud or a proxy).
    Throttled(Duration),
    /// Someone must change something: the remedy.
    Permanent(String),
}

/// Classifies an answer of `/services/collector/event`. `index` is the configured index
/// (named in the remedy of an incorrect index). Pure.
pub(super) fn classify(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
    index: Option<&str>,
) -> Verdict {
    let b: Body = serde_json::from_slice(body).unwrap_or_default();
    let said = match (&b.text, b.code) {
        (Some(t), Some(c)) => format!("{status}, code {c} \"{t}\""),
        (Some(t), None) => format!("{status} \"{t}\""),
        _ => format!("{status}"),
    };
    match (status, b.code) {
        (200..=299, None | Some(0)) => Verdict::Answer(Answer::Accepted { ack_id: b.ack_id }),
        (400, Some(5)) => Verdict::Answer(Answer::NoData),
        (429, _) => Verdict::Throttled(retry_after.unwrap_or(Duration::from_secs(1))),
        (_, Some(2)) => Verdict::Permanent(format!(
            "refused the request ({said}): no token was sent; this is a bug, please report it"
        )),
        (_, Some(3 | 4)) => Verdict::Permanent(format!(
            "refused the token ({said}): the variable or file named by `token_env`/`token_file` \
             must hold the token value shown in Splunk under Settings > Data inputs > HTTP \
             Event Collector"
        )),
        (_, Some(1)) => Verdict::Permanent(format!(
            "refused the token ({said}): it is disabled; enable it in Splunk under Settings > \
             Data inputs > HTTP Event Collector"
        )),
        (_, Some(7)) => Verdict::Permanent(format!(
            "refused the index ({said}): {} is not among the token's allowed indexes; add it \
             to the token (Settings > Data inputs > HTTP Event Collector > Edit) or change \
             `index`",
            index.map_or("the token's default index".to_string(), |i| format!(
                "`{i}`"
            ))
        )),
        (_, Some(10 | 11)) => Verdict::Permanent(format!(
            "asks for an indexer acknowledgement channel ({said}): the token has indexer \
             acknowledgement on; set `ack = \"auto\"` or `ack = true` in this sink's section"
        )),
        (_, Some(14)) => Verdict::Permanent(format!(
            "has indexer acknowledgement off for this token ({said}): turn on \"Enable indexer \
             acknowledgement\" on the token, or set `ack = \"auto\"` or `ack = false` (then a \
             200 counts as delivered)"
        )),
        (400, Some(6 | 12 | 13 | 15)) if b.invalid_event_number.is_some() => {
            Verdict::Answer(Answer::EventRefused {
                number: b.invalid_event_number.expect("checked"),
                reason: format!("Splunk HEC refused this event ({said})"),
            })
        }
        (404, _) => Verdict::Permanent(format!(
            "has no HTTP Event Collector at this URL ({said}): check `endpoint` (scheme, host \
             and the HEC port, 8088 by default) and that HEC is enabled under Settings > Data \
             inputs > HTTP Event Collector > Global Settings"
        )),
        (413, _) => Verdict::Permanent(format!(
            "refused a request as too large ({said}): lower `max_batch_bytes` below the \
             HEC's max_content_length"
        )),
        (500..=599, _) => Verdict::Retry(format!(
            "is busy or failing ({said}); its queues may be full"
        )),
        _ => Verdict::Permanent(format!("refused the request ({said})")),
    }
}

/// One POST with retries: the event or the ack endpoint.
pub(super) struct Post<'a> {
    pub http: &'a reqwest::Client,
    pub url: Url,
    pub token: &'a SecretString,
    pub channel: Option<&'a str>,
    pub body: Vec<u8>,
    pub gzip: bool,
    pub index: Option<&'a str>,
    /// What the answer holds, for the ack endpoint (its body, read whole).
    pub raw_answer: bool,
}

/// What a POST returned.
pub(super) enum Posted {
    Event(Answer),
    /// The body of a 200 from the ack endpoint.
    Raw(Vec<u8>),
}

impl Exchange for Post<'_> {
    type Output = Posted;
    type Error = HecError;

    async fn acquire(&mut self) -> Result<(), HecError> {
        Ok(())
    }

    async fn send(&mut self) -> Decision<Result<Posted, HecError>> {
        let mut request = crate::net::credential_header(
            self.http.post(self.url.clone()),
            AUTHORIZATION,
            &format!("Splunk {}", self.token.expose_secret()),
        )
        .header(CONTENT_TYPE, "application/json")
        .body(self.body.clone());
        if self.gzip {
            request = request.header(CONTENT_ENCODING, "gzip");
        }
        if let Some(c) = self.channel {
            request = request.header(CHANNEL_HEADER, c);
        }
        // No answer: the HEC may or may not have the events; they are sent again.
        let answer = match send(request, MAX_AUXILIARY_BODY_BYTES).await {
            Ok(a) => a,
            Err(reason) => return Decision::Retry { reason },
        };
        let (status, body) = (answer.status, answer.body);
        if self.raw_answer && (200..300).contains(&status) {
            return Decision::Finish(Ok(Posted::Raw(body)));
        }
        match classify(status, &body, answer.retry_after, self.index) {
            Verdict::Answer(a) => Decision::Finish(Ok(Posted::Event(a))),
            Verdict::Retry(reason) => Decision::Retry { reason },
            Verdict::Throttled(wait) => Decision::Throttled { wait },
            Verdict::Permanent(message) => Decision::Finish(Err(self.error(message, true))),
        }
    }

    async fn throttled(&mut self, wait: Duration) -> Result<(), HecError> {
        tokio::time::sleep(wait).await;
        Ok(())
    }

    fn retrying(&mut self, failures: u32, wait: Duration, reason: &str) {
        tracing::warn!(endpoint = %self.endpoint(), failures, retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), reason, "Splunk HEC request failed; retrying");
    }

    async fn sleep(&mut self, wait: Duration) -> Result<(), HecError> {
        tokio::time::sleep(wait).await;
        Ok(())
    }

    fn give_up(&mut self, why: GiveUp) -> HecError {
        let message = match why {
            GiveUp::Failures { failures, reason } => {
                format!("failed {failures} times in a row; last: {reason}")
            }
            GiveUp::Throttled { throttled, .. } => {
                format!("kept throttling (429, {throttled} times)")
            }
        };
        self.error(message, false)
    }
}

impl Post<'_> {
    fn endpoint(&self) -> String {
        self.url.as_str().to_string()
    }

    fn error(&self, message: String, permanent: bool) -> HecError {
        HecError {
            endpoint: self.endpoint(),
            message,
            permanent,
        }
    }

    /// Sends with retries under `policy`.
    pub(super) async fn run(mut self, policy: &Policy) -> Result<Posted, HecError> {
        crate::retry::run(policy, &mut self).await
    }
}

/// A random GUID (version 4 form), for a new acknowledgement channel.
pub(super) fn new_channel() -> String {
    let b: [u8; 16] = rand::random();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    // Version 4, variant 10.
    format!(
        "{}-{}-4{}-{:x}{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        (b[8] & 0x3) | 0x8,
        &hex[17..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(status: u16, body: &str) -> Verdict {
        classify(status, body.as_bytes(), None, Some("miro"))
    }

    #[test]
    fn each_documented_code_is_a_retry_a_refused_event_or_a_remedy() {
        assert_eq!(
            v(200, r#"{"text":"Success","code":0,"ackId":7}"#),
            Verdict::Answer(Answer::Accepted { ack_id: Some(7) })
        );
        assert_eq!(
            v(200, r#"{"text":"Success","code":0}"#),
            Verdict::Answer(Answer::Accepted { ack_id: None })
        );
        assert!(matches!(
            v(503, r#"{"text":"Server is busy","code":9}"#),
            Verdict::Retry(_)
        ));
        assert!(matches!(
            v(500, r#"{"text":"Internal server error","code":8}"#),
            Verdict::Retry(_)
        ));
        assert!(matches!(
            v(502, "<html>bad gateway</html>"),
            Verdict::Retry(_)
        ));
        assert_eq!(
            classify(429, b"", Some(Duration::from_secs(7)), None),
            Verdict::Throttled(Duration::from_secs(7))
        );
        for (status, body, words) in [
            (403, r#"{"text":"Invalid token","code":4}"#, "token_env"),
            (
                401,
                r#"{"text":"Invalid authorization","code":3}"#,
                "token_env",
            ),
            (403, r#"{"text":"Token disabled","code":1}"#, "enable it"),
            (
                400,
                r#"{"text":"Incorrect index","code":7,"invalid-event-number":0}"#,
                "`miro`",
            ),
            (
                400,
                r#"{"text":"Data channel is missing","code":10}"#,
                "ack = \"auto\"",
            ),
            (
                400,
                r#"{"text":"ACK is disabled","code":14}"#,
                "indexer acknowledgement",
            ),
            (404, "", "endpoint"),
            (413, "", "max_batch_bytes"),
        ] {
            match v(status, body) {
                Verdict::Permanent(m) => assert!(m.contains(words), "{body}: {m}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        assert_eq!(
            v(
                400,
                r#"{"text":"Invalid data format","code":6,"invalid-event-number":3}"#
            ),
            Verdict::Answer(Answer::EventRefused {
                number: 3,
                reason: "Splunk HEC refused this event (400, code 6 \"Invalid data format\")"
                    .into()
            })
        );
        // Without the event's number it is a refusal of the request, not of one event.
        assert!(matches!(
            v(400, r#"{"text":"Invalid data format","code":6}"#),
            Verdict::Permanent(_)
        ));
    }

    #[test]
    fn channels_are_version_4_guids() {
        let a = new_channel();
        assert_ne!(a, new_channel());
        let groups: Vec<&str> = a.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(groups[2].starts_with('4'), "{a}");
        assert!(a.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
    }
}
