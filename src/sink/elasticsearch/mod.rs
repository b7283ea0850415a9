//! The `elasticsearch` sink: the `_bulk` API of Elasticsearch or OpenSearch
//! (`docs/elasticsearch.md`).
//!
//! `config` validates the keys, `bulk` sends one request through the retry loop and
//! classifies the answer and each of its items, `doc` turns a row into an ECS document,
//! `template` is what `mirotrail template elasticsearch` prints. Each row becomes one
//! `create` action with `_index` (the stream's data stream or index) and `_id` (the Miro
//! id; `<org_id>:<Miro id>` with several organisations), then its document; actions are packed into gzip NDJSON requests under
//! `max_batch_bytes`.
//!
//! Invariants: `create` with the Miro id as `_id` makes every resend harmless: a document
//! already there answers 409 `version_conflict_engine_exception`, which counts as
//! delivered, so a lost answer never duplicates a document. A row is reported acknowledged
//! only when its own item says stored (201 or 409); items refused for a passing reason
//! (429, 5xx) are sent again, alone, after a backoff; an item refused for what the
//! document is (400) is reported rejected, for the dead letters; an item refused for the
//! target or the credentials (401/403/404) stops delivery with the remedy. A request too
//! large for the cluster (413) is split in halves until one row alone is too large, which
//! is rejected. The credential is only ever held as a `SecretString` (inside the whole
//! `Authorization` value).

mod bulk;
mod config;
mod doc;
pub mod template;

use std::io::Write;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

pub use bulk::ElasticError;
use bulk::{Answer, BulkPost, Item};
pub(in crate::sink) use config::validate;
pub use config::{ElasticAuth, ElasticConfig, RawElasticSink};
pub use doc::document;

use super::{RowVerdict, SendFuture, Sink, SinkError};
use crate::retry::{Policy, backoff};
use crate::secret::SecretSource;
use crate::sink::http::{ClientError, RETRY_POLICY, client, read_sink_secret};
use crate::source::SourceKind;
use crate::store::OutboxRow;

/// What `check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    Ok(String),
    NotVerified(String),
}

/// Delivers rows to Elasticsearch or OpenSearch.
#[derive(Debug)]
pub struct ElasticSink {
    config: ElasticConfig,
    http: reqwest::Client,
    /// The whole `Authorization` header value.
    authorization: SecretString,
    /// Each node's `/_bulk` URL.
    bulk_urls: Vec<url::Url>,
    /// The node in use; the next one after a request it did not answer (or answered 5xx).
    node: AtomicUsize,
    policy: Policy,
}

impl ElasticSink {
    /// Builds the HTTP client (with the CA file) and reads the credential.
    pub fn new(config: ElasticConfig) -> Result<Self, SinkError> {
        let read = |source: &SecretSource, what: &str| {
            read_sink_secret(source).map_err(|e| config_error(&config, format!("{what}: {e}")))
        };
        let authorization = match &config.auth {
            ElasticAuth::ApiKey(source) => {
                let key = read(
                    source,
                    "the API key (create one with POST /_security/api_key and put its \
                     `encoded` value there, or name another with `api_key_env`/`api_key_file`)",
                )?;
                SecretString::from(format!("ApiKey {}", key.expose_secret()))
            }
            ElasticAuth::Basic { username, password } => {
                let password = read(
                    password,
                    "the password (name it with `password_env`/`password_file`)",
                )?;
                let pair = format!("{username}:{}", password.expose_secret());
                SecretString::from(format!("Basic {}", base64(pair.as_bytes())))
            }
        };
        let http = client(&config.http).map_err(|e| match e {
            ClientError::CaFile(message) => config_error(&config, message),
            ClientError::Build(e) => SinkError::HttpClient(e),
        })?;
        let bulk_urls = (0..config.endpoints.len())
            .map(|i| config.node_url(i, "/_bulk"))
            .collect();
        Ok(ElasticSink {
            config,
            http,
            authorization,
            bulk_urls,
            node: AtomicUsize::new(0),
            policy: RETRY_POLICY,
        })
    }

    /// Shortens the first backoff step after a transient failure (tests).
    pub fn with_backoff_base(mut self, base: Duration) -> Self {
        self.policy.backoff_base = base;
        self
    }

    pub fn config(&self) -> &ElasticConfig {
        &self.config
    }

    /// One GET with the credential; the status and the body as JSON (or `Null`).
    async fn get(&self, node: usize, path: &str) -> Result<(u16, serde_json::Value), String> {
        self.request(node, reqwest::Method::GET, path, None).await
    }

    async fn request(
        &self,
        node: usize,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), String> {
        let url = self.config.node_url(node, path);
        let mut request = crate::net::credential_header(
            self.http.request(method, url.clone()),
            reqwest::header::AUTHORIZATION,
            self.authorization.expose_secret(),
        );
        if let Some(b) = body {
            request = request.json(&b);
        }
        let answer = request.send().await.map_err(|e| {
            format!(
                "cannot reach {url}: {}",
                crate::net::error_chain(&e.without_url())
            )
        })?;
        let status = answer.status().as_u16();
        let body = crate::net::read_body_capped(answer, crate::net::MAX_AUXILIARY_BODY_BYTES)
            .await
            .unwrap_or_default();
        Ok((status, serde_json::from_slice(&body).unwrap_or_default()))
    }

    /// For `mirotrail check`, without writing a document: the cluster (`GET /`: the
    /// credential and the product), then whether the credential may `create_doc` on the
    /// targets (`_security/user/_has_privileges`, Elasticsearch only). `Err` is a
    /// definite problem.
    pub async fn check(&self) -> Result<Vec<CheckOutcome>, String> {
        let mut out = Vec::new();
        for node in 0..self.config.endpoints.len() {
            self.check_node(node, &mut out).await?;
        }
        self.check_privileges(&mut out).await?;
        Ok(out)
    }

    /// `GET /` on one node.
    async fn check_node(&self, node: usize, out: &mut Vec<CheckOutcome>) -> Result<(), String> {
        let root = self.config.node_url(node, "/");
        let (status, body) = self.get(node, "/").await?;
        match status {
            200 => {
                let product = if body["version"]["distribution"] == "opensearch" {
                    "OpenSearch"
                } else {
                    "Elasticsearch"
                };
                out.push(CheckOutcome::Ok(format!(
                    "{root}: {product} {} (cluster `{}`), credential accepted",
                    body["version"]["number"].as_str().unwrap_or("?"),
                    body["cluster_name"].as_str().unwrap_or("?")
                )));
            }
            401 => {
                return Err(format!(
                    "{root} answered 401: the credential is refused; check the API key (the \
                     `encoded` value) or the user's password"
                ));
            }
            403 => out.push(CheckOutcome::NotVerified(format!(
                "{root} answered 403: the credential may not read cluster information \
                 (harmless: writing needs only `create_doc`)"
            ))),
            _ => {
                return Err(format!(
                    "{root} answered {status}: no Elasticsearch or OpenSearch there; check \
                     `endpoint`"
                ));
            }
        }
        Ok(())
    }

    /// Whether the credential may `create_doc` on the targets.
    async fn check_privileges(&self, out: &mut Vec<CheckOutcome>) -> Result<(), String> {
        let targets: Vec<&str> = SourceKind::ALL
            .iter()
            .map(|&s| self.config.target(s))
            .collect();
        let ask = serde_json::json!({
            "index": [{ "names": targets, "privileges": ["create_doc"] }]
        });
        let (status, body) = self
            .request(
                0,
                reqwest::Method::POST,
                "/_security/user/_has_privileges",
                Some(ask),
            )
            .await?;
        match (
            status,
            body.get("has_all_requested").and_then(|v| v.as_bool()),
        ) {
            (200, Some(true)) => out.push(CheckOutcome::Ok(format!(
                "the credential has `create_doc` on {} (nothing written)",
                targets.join(", ")
            ))),
            (200, Some(false)) => {
                let missing: Vec<String> = body["index"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter(|(_, p)| p["create_doc"] != true)
                            .map(|(n, _)| n.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                return Err(format!(
                    "the credential lacks `create_doc` on {}: add it to the API key's or \
                     user's role (index privileges `create_doc`, and `auto_configure` for a \
                     new data stream)",
                    missing.join(", ")
                ));
            }
            _ => out.push(CheckOutcome::NotVerified(format!(
                "the write privilege is not verified: _security/user/_has_privileges answered \
                 {status} (OpenSearch and clusters without security do not have it); the \
                 first delivery shows it"
            ))),
        }
        Ok(())
    }

    /// One `create` action and its document, as two NDJSON lines.
    fn action(&self, source: SourceKind, row: &OutboxRow) -> String {
        // Miro ids are unique only per organisation: with several, two organisations'
        // items of the same id are two documents (`create` would call the second one
        // already stored).
        let org = row.org_id.as_deref().filter(|_| self.config.org_in_id);
        let mut out = String::with_capacity(row.raw.len() + 640);
        doc::write_action(self.config.target(source), source, row, org, &mut out);
        out
    }

    fn body(&self, lines: &[&String]) -> Vec<u8> {
        let mut plain = Vec::with_capacity(lines.iter().map(|l| l.len()).sum());
        for l in lines {
            plain.extend_from_slice(l.as_bytes());
        }
        if !self.config.http.gzip {
            return plain;
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).expect("writing to memory");
        gz.finish().expect("writing to memory")
    }

    /// Sends `rows` and reports what the cluster stored or refused, item by item.
    async fn send_rows(
        &mut self,
        source: SourceKind,
        rows: &[OutboxRow],
        verdict: &mut (dyn FnMut(RowVerdict<'_>) + Send),
    ) -> Result<(), SinkError> {
        let lines: Vec<String> = rows.iter().map(|r| self.action(source, r)).collect();
        let mut progressed = false;
        let mut failure: Option<ElasticError> = None;
        let mut todo: Vec<usize> = (0..rows.len()).collect();
        let mut round: u32 = 0;
        'rounds: while !todo.is_empty() {
            // Requests of consecutive rows (indices into `rows`) under `max_batch_bytes`.
            let mut queue: std::collections::VecDeque<Vec<usize>> = Default::default();
            let mut chunk = Vec::new();
            let mut bytes = 0;
            for &i in &todo {
                if !chunk.is_empty() && bytes + lines[i].len() > self.config.http.max_batch_bytes {
                    queue.push_back(std::mem::take(&mut chunk));
                    bytes = 0;
                }
                bytes += lines[i].len();
                chunk.push(i);
            }
            queue.push_back(chunk);
            let mut again: Vec<usize> = Vec::new();
            let mut reason = String::new();
            while let Some(chunk) = queue.pop_front() {
                let body = self.body(&chunk.iter().map(|&i| &lines[i]).collect::<Vec<_>>());
                let answer = BulkPost {
                    http: &self.http,
                    urls: &self.bulk_urls,
                    node: &self.node,
                    url: self.bulk_urls[0].clone(),
                    authorization: &self.authorization,
                    body,
                    gzip: self.config.http.gzip,
                    actions: chunk.len(),
                }
                .run(&self.policy)
                .await;
                match answer {
                    Ok(Answer::Items(items)) => {
                        let mut run: Option<(usize, usize)> = None;
                        let flush = |run: &mut Option<(usize, usize)>,
                                     verdict: &mut (dyn FnMut(RowVerdict<'_>) + Send)| {
                            if let Some((a, b)) = run.take() {
                                verdict(RowVerdict::Acked {
                                    first: rows[a].seq,
                                    last: rows[b].seq,
                                });
                            }
                        };
                        for (&i, item) in chunk.iter().zip(items) {
                            match item {
                                Item::Stored => {
                                    run = match run {
                                        Some((a, b)) if b + 1 == i => Some((a, i)),
                                        other => {
                                            let mut other = other;
                                            flush(&mut other, verdict);
                                            Some((i, i))
                                        }
                                    };
                                    progressed = true;
                                }
                                Item::Retry(r) => {
                                    flush(&mut run, verdict);
                                    reason = r;
                                    again.push(i);
                                }
                                Item::Refused(r) => {
                                    flush(&mut run, verdict);
                                    verdict(RowVerdict::Rejected {
                                        seq: rows[i].seq,
                                        reason: &r,
                                    });
                                    progressed = true;
                                }
                                Item::Stop(m) => {
                                    flush(&mut run, verdict);
                                    failure.get_or_insert(ElasticError {
                                        endpoint: self.config.url("").to_string(),
                                        message: m,
                                        permanent: true,
                                    });
                                }
                            }
                        }
                        flush(&mut run, verdict);
                        if failure.is_some() {
                            break 'rounds;
                        }
                    }
                    Ok(Answer::TooLarge) if chunk.len() == 1 => {
                        verdict(RowVerdict::Rejected {
                            seq: rows[chunk[0]].seq,
                            reason: "Elasticsearch refused this document alone as too large \
                                     (413): above the cluster's http.max_content_length",
                        });
                        progressed = true;
                    }
                    Ok(Answer::TooLarge) => {
                        tracing::info!(
                            rows = chunk.len(),
                            "Elasticsearch refused a bulk request as too large (413); sending it in halves"
                        );
                        let (a, b) = chunk.split_at(chunk.len() / 2);
                        queue.push_front(b.to_vec());
                        queue.push_front(a.to_vec());
                    }
                    Err(e) => {
                        failure = Some(e);
                        break 'rounds;
                    }
                }
            }
            if again.is_empty() {
                break;
            }
            round += 1;
            if round > self.policy.max_retries {
                failure = Some(ElasticError {
                    endpoint: self.config.url("").to_string(),
                    message: format!(
                        "{} document(s) still not stored after {} attempts; last: {reason}",
                        again.len(),
                        round
                    ),
                    permanent: false,
                });
                break;
            }
            let wait = backoff(round - 1, self.policy.backoff_base, self.policy.backoff_cap);
            tracing::warn!(
                documents = again.len(),
                retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                reason,
                "Elasticsearch did not store some documents; sending them again"
            );
            tokio::time::sleep(wait).await;
            todo = again;
        }
        match failure {
            None => Ok(()),
            Some(e) if progressed && !e.permanent => {
                tracing::debug!(error = %e, "delivered some rows; the rest failed");
                Ok(())
            }
            Some(e) => Err(SinkError::Elastic(Box::new(e))),
        }
    }
}

/// Standard base64 with padding (the `Basic` credential).
fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A problem with the sink's own settings (permanent).
fn config_error(config: &ElasticConfig, message: String) -> SinkError {
    SinkError::Elastic(Box::new(ElasticError {
        endpoint: config.url("").to_string(),
        message,
        permanent: true,
    }))
}

impl Sink for ElasticSink {
    fn send<'a>(
        &'a mut self,
        source: SourceKind,
        rows: &'a [OutboxRow],
        verdict: &'a mut (dyn FnMut(RowVerdict<'_>) + Send),
    ) -> SendFuture<'a> {
        Box::pin(self.send_rows(source, rows, verdict))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(plain.as_bytes()), encoded);
        }
    }
}
