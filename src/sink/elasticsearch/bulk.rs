//! One `_bulk` exchange and what its answer means: the pure classification of a whole
//! answer (status) and of each item of a 200 (see `docs/elasticsearch.md`, "Answers"),
//! and the request driven by the one retry loop (`crate::retry`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::retry::{Decision, Exchange, GiveUp, Policy};
use crate::sink::http::send;

/// The most of a `_bulk` answer read (one item is ~200 bytes; far above any batch).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// A failure of the cluster (or of reaching it), with the remedy.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Elasticsearch {endpoint}: {message}")]
pub struct ElasticError {
    pub endpoint: String,
    pub message: String,
    /// Retrying cannot help until someone changes something.
    pub permanent: bool,
}

/// What one item of a `_bulk` answer means for its row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Item {
    /// Stored: created now (201), or already there with this `_id` (409
    /// `version_conflict_engine_exception`: an earlier send whose answer was lost).
    Stored,
    /// Not stored for a passing reason (429 `es_rejected_execution_exception`, 5xx):
    /// send this item again.
    Retry(String),
    /// Refused for what the document is (400 `mapper_parsing_exception`,
    /// `document_parsing_exception`, ...): the row goes to the dead letters.
    Refused(String),
    /// Refused for the target or the credentials (401, 403, 404): nothing will be
    /// stored until someone fixes it; the remedy.
    Stop(String),
}

/// What a whole `_bulk` answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    /// 200: one outcome per action, in request order.
    Items(Vec<Item>),
    /// 413: the request is larger than `http.max_content_length`; split it.
    TooLarge,
}

/// The verdict on one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    Answer(Answer),
    Retry(String),
    Throttled(Duration),
    Permanent(String),
}

#[derive(Debug, Deserialize)]
struct BulkBody {
    items: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// A `_bulk` answer read without a `Value` tree per item: each item's action (the
/// first in key order, as a `Value` map orders them) and its `status` and `error`
/// members as text.
#[derive(Debug, Deserialize)]
struct BulkItems<'a> {
    #[serde(borrow)]
    items: Vec<std::collections::BTreeMap<&'a str, ItemResult<'a>>>,
}

#[derive(Debug, Deserialize)]
struct ItemResult<'a> {
    #[serde(borrow)]
    status: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    error: Option<&'a serde_json::value::RawValue>,
}

/// The items of a 200's `body` as [`classify`] reads them from a `Value`, or `None`
/// when this reading cannot say the same (escaped keys, duplicate members, an action
/// that is not an object: `classify` then reads the `Value`). The caller checks
/// its number of items.
fn read_items(body: &[u8]) -> Option<Vec<Item>> {
    let b: BulkItems<'_> = serde_json::from_slice(body).ok()?;
    b.items
        .iter()
        .map(|item| {
            let Some(result) = item.values().next() else {
                return Some(classify_item(500, None));
            };
            // `Value::as_u64` of a number's text (`arbitrary_precision`).
            let status = result
                .status
                .and_then(|s| s.get().parse::<u64>().ok())
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(500);
            let error = match result.error {
                None => None,
                Some(e) => Some(serde_json::from_str::<serde_json::Value>(e.get()).ok()?),
            };
            Some(classify_item(status, error.as_ref()))
        })
        .collect()
}

/// `{"error":{"type","reason"}}` (or a string error, as some proxies send).
fn error_text(error: Option<&serde_json::Value>) -> String {
    match error {
        Some(serde_json::Value::Object(e)) => {
            let kind = e.get("type").and_then(|t| t.as_str()).unwrap_or("error");
            match e.get("reason").and_then(|r| r.as_str()) {
                Some(r) => format!("{kind}: {r}"),
                None => kind.to_string(),
            }
        }
        Some(serde_json::Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// One item's outcome from its `status` and `error`. Pure.
pub(super) fn classify_item(status: u16, error: Option<&serde_json::Value>) -> Item {
    let said = format!("{status} {}", error_text(error));
    let said = said.trim_end();
    match status {
        200..=299 | 409 => Item::Stored,
        429 | 500..=599 => Item::Retry(format!("item not stored ({said}); sent again")),
        401 => Item::Stop(format!(
            "refused the credentials ({said}): check the API key or password the sink's \
             `api_key_env`/`api_key_file` or `password_env`/`password_file` names"
        )),
        403 => Item::Stop(format!(
            "refused to write ({said}): give the API key or user the `create_doc` (and, \
             for a new data stream, `auto_configure`) privilege on the sink's targets"
        )),
        404 => Item::Stop(format!(
            "has no such target ({said}): create the index or install the index template \
             (`mirotrail template elasticsearch`), or change the sink's `*_target`"
        )),
        _ => Item::Refused(format!("Elasticsearch refused this document ({said})")),
    }
}

/// Classifies a `_bulk` answer with `actions` actions. Pure.
pub(super) fn classify(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
    actions: usize,
) -> Verdict {
    let text = || -> String {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let e = error_text(v.get("error"));
        if e.is_empty() {
            String::from_utf8_lossy(body)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .take(200)
                .collect()
        } else {
            e
        }
    };
    match status {
        200 => {
            if let Some(items) = read_items(body).filter(|i| i.len() == actions) {
                return Verdict::Answer(Answer::Items(items));
            }
            let Ok(b) = serde_json::from_slice::<BulkBody>(body) else {
                return Verdict::Retry(
                    "answered 200 without a readable `items` list (a proxy?); sent again".into(),
                );
            };
            if b.items.len() != actions {
                return Verdict::Retry(format!(
                    "answered {} items for {actions} actions; sent again",
                    b.items.len()
                ));
            }
            Verdict::Answer(Answer::Items(
                b.items
                    .iter()
                    .map(|item| {
                        // One key: the action (`create`).
                        let result = item.values().next();
                        let status = result
                            .and_then(|r| r.get("status"))
                            .and_then(serde_json::Value::as_u64)
                            .and_then(|s| u16::try_from(s).ok())
                            .unwrap_or(500);
                        classify_item(status, result.and_then(|r| r.get("error")))
                    })
                    .collect(),
            ))
        }
        413 => Verdict::Answer(Answer::TooLarge),
        429 => Verdict::Throttled(retry_after.unwrap_or(Duration::from_secs(1))),
        401 => Verdict::Permanent(format!(
            "refused the credentials (401 {}): the API key (the `encoded` value of \
             POST /_security/api_key) or the user's password in the variable or file the \
             sink names is wrong or expired",
            text()
        )),
        403 => Verdict::Permanent(format!(
            "refused the request (403 {}): give the API key or user the `create_doc` \
             privilege on the sink's targets",
            text()
        )),
        404 | 405 => Verdict::Permanent(format!(
            "has no bulk API at this URL ({status} {}): check `endpoint` (the cluster URL, \
             like https://es.example.com:9200)",
            text()
        )),
        500..=599 => Verdict::Retry(format!("is busy or failing ({status} {})", text())),
        _ => Verdict::Permanent(format!("refused the request ({status} {})", text())),
    }
}

/// One `_bulk` POST with retries of the whole request; a request not answered, or
/// answered 5xx, goes to the next node the next time.
pub(super) struct BulkPost<'a> {
    pub http: &'a reqwest::Client,
    /// The node URLs + `/_bulk`.
    pub urls: &'a [Url],
    /// The node in use (shared by the sink's requests).
    pub node: &'a AtomicUsize,
    pub url: Url,
    /// The whole `Authorization` header value.
    pub authorization: &'a SecretString,
    pub body: Vec<u8>,
    pub gzip: bool,
    pub actions: usize,
}

impl Exchange for BulkPost<'_> {
    type Output = Answer;
    type Error = ElasticError;

    async fn acquire(&mut self) -> Result<(), ElasticError> {
        Ok(())
    }

    async fn send(&mut self) -> Decision<Result<Answer, ElasticError>> {
        let node = self.node.load(Ordering::Relaxed);
        self.url = self.urls[node % self.urls.len()].clone();
        let decision = self.send_once().await;
        if matches!(decision, Decision::Retry { .. }) && self.urls.len() > 1 {
            // Another node of the cluster may answer.
            let _ = self.node.compare_exchange(
                node,
                node.wrapping_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        decision
    }

    async fn throttled(&mut self, wait: Duration) -> Result<(), ElasticError> {
        tokio::time::sleep(wait).await;
        Ok(())
    }

    fn retrying(&mut self, failures: u32, wait: Duration, reason: &str) {
        tracing::warn!(endpoint = %self.url, failures, retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), reason, "Elasticsearch bulk request failed; retrying");
    }

    async fn sleep(&mut self, wait: Duration) -> Result<(), ElasticError> {
        tokio::time::sleep(wait).await;
        Ok(())
    }

    fn give_up(&mut self, why: GiveUp) -> ElasticError {
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

impl BulkPost<'_> {
    async fn send_once(&mut self) -> Decision<Result<Answer, ElasticError>> {
        let mut request = crate::net::credential_header(
            self.http.post(self.url.clone()),
            AUTHORIZATION,
            self.authorization.expose_secret(),
        )
        .header(CONTENT_TYPE, "application/x-ndjson")
        .body(self.body.clone());
        if self.gzip {
            request = request.header(CONTENT_ENCODING, "gzip");
        }
        // No answer: the cluster may hold some documents; `create` with the same `_id`
        // makes sending them again harmless.
        let answer = match send(request, MAX_ANSWER_BYTES).await {
            Ok(a) => a,
            Err(reason) => return Decision::Retry { reason },
        };
        let (status, body) = (answer.status, answer.body);
        match classify(status, &body, answer.retry_after, self.actions) {
            Verdict::Answer(a) => Decision::Finish(Ok(a)),
            Verdict::Retry(reason) => Decision::Retry { reason },
            Verdict::Throttled(wait) => Decision::Throttled { wait },
            Verdict::Permanent(message) => Decision::Finish(Err(self.error(message, true))),
        }
    }

    fn error(&self, message: String, permanent: bool) -> ElasticError {
        ElasticError {
            endpoint: self.url.as_str().to_string(),
            message,
            permanent,
        }
    }

    /// Sends with retries under `policy`.
    pub(super) async fn run(mut self, policy: &Policy) -> Result<Answer, ElasticError> {
        crate::retry::run(policy, &mut self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(body: &str, n: usize) -> Vec<Item> {
        match classify(200, body.as_bytes(), None, n) {
            Verdict::Answer(Answer::Items(i)) => i,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_item_is_stored_retried_refused_or_a_stop() {
        let body = r#"{"took":3,"errors":true,"items":[
          {"create":{"_index":"a","_id":"1","status":201,"result":"created"}},
          {"create":{"_index":"a","_id":"2","status":409,"error":{"type":"version_conflict_engine_exception","reason":"[2]: version conflict, document already exists"}}},
          {"create":{"_index":"a","_id":"3","status":429,"error":{"type":"es_rejected_execution_exception","reason":"rejected execution"}}},
          {"create":{"_index":"a","_id":"4","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [x]"}}},
          {"create":{"_index":"a","_id":"5","status":503,"error":{"type":"unavailable_shards_exception","reason":"primary shard is not active"}}},
          {"create":{"_index":"a","_id":"6","status":404,"error":{"type":"index_not_found_exception","reason":"no such index [a]"}}}
        ]}"#;
        let got = items(body, 6);
        assert_eq!(got[0], Item::Stored);
        assert_eq!(got[1], Item::Stored);
        assert!(matches!(&got[2], Item::Retry(m) if m.contains("es_rejected_execution_exception")));
        assert!(
            matches!(&got[3], Item::Refused(m) if m.contains("mapper_parsing_exception: failed to parse field [x]"))
        );
        assert!(matches!(&got[4], Item::Retry(_)));
        assert!(matches!(&got[5], Item::Stop(m) if m.contains("template")));
    }

    #[test]
    fn whole_answers_are_items_a_split_a_retry_or_a_remedy() {
        assert_eq!(
            classify(413, b"", None, 3),
            Verdict::Answer(Answer::TooLarge)
        );
        assert_eq!(
            classify(429, b"", Some(Duration::from_secs(4)), 3),
            Verdict::Throttled(Duration::from_secs(4))
        );
        assert!(matches!(
            classify(502, b"<html>", None, 1),
            Verdict::Retry(_)
        ));
        // A 200 that does not answer every action is not trusted.
        assert!(matches!(
            classify(200, br#"{"errors":false,"items":[]}"#, None, 2),
            Verdict::Retry(_)
        ));
        for (status, words) in [(401, "password"), (403, "create_doc"), (404, "endpoint")] {
            let body = br#"{"error":{"type":"security_exception","reason":"missing authentication credentials"},"status":401}"#;
            match classify(status, body, None, 1) {
                Verdict::Permanent(m) => assert!(m.contains(words), "{status}: {m}"),
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[test]
    fn items_read_without_a_value_tree_are_classified_as_from_one() {
        let bodies = [
            r#"{"took":3,"errors":true,"items":[
              {"create":{"_index":"a","_id":"1","status":201,"result":"created"}},
              {"create":{"_id":"2","status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}},
              {"create":{"status":429,"error":{"type":"es_rejected_execution_exception"}}},
              {"create":{"status":400,"error":"a string error"}},
              {"create":{"status":"201"}},
              {"create":{"status":201.0}},
              {"create":{"status":70000}},
              {"create":{"error":{"type":"x"}}},
              {"index":{"status":403},"create":{"status":201}},
              {},
              {"create":{"status":404,"error":{"type":"index_not_found_exception","reason":"no such index [\u0061]"}}}
            ]}"#,
            r#"{"items":[{"create":{"status":201,"status":500}}]}"#,
            r#"{"items":[{"create":5}]}"#,
            r#"{"items":[{"cr\u0065ate":{"status":400}}]}"#,
        ];
        for body in bodies {
            let n = serde_json::from_str::<BulkBody>(body).unwrap().items.len();
            let reference: Vec<Item> = serde_json::from_str::<BulkBody>(body)
                .unwrap()
                .items
                .iter()
                .map(|item| {
                    let result = item.values().next();
                    let status = result
                        .and_then(|r| r.get("status"))
                        .and_then(serde_json::Value::as_u64)
                        .and_then(|s| u16::try_from(s).ok())
                        .unwrap_or(500);
                    classify_item(status, result.and_then(|r| r.get("error")))
                })
                .collect();
            assert_eq!(items(body, n), reference, "{body}");
            if let Some(read) = read_items(body.as_bytes()) {
                assert_eq!(read, reference, "{body}");
            }
        }
        assert!(
            read_items(bodies[0].as_bytes()).is_some(),
            "the usual answer is read directly"
        );
    }
}
