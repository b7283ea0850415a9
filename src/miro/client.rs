//! The HTTP client of the two log endpoints: one request per page, within the shared
//! credit budget, retried per `status::classify_status` through `crate::retry`. No answer is read past
//! `miro.max_response_bytes` (`net::read_body_capped`); an oversized page is a permanent
//! error, since fetching it again would bring the same bytes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{ACCEPT, HeaderMap, RETRY_AFTER};
use secrecy::ExposeSecret;

use super::budget::CreditBudget;
use super::page::{Page, parse_page_reading};
use super::status::{Permanent, Verdict, classify_status};
use super::token::TokenProvider;
use crate::config::{MiroConfig, SourceKind};
use crate::net::{BodyError, USER_AGENT, read_body_capped, root_cause};
use crate::retry::{self, Decision, Exchange, GiveUp, Policy};
use crate::service::Telemetry;
use crate::shutdown::Shutdown;
use crate::timefmt::UnixMs;

/// What one page request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageQuery {
    pub source: SourceKind,
    pub from: UnixMs,
    pub to: UnixMs,
    pub cursor: Option<String>,
    pub limit: u32,
}

/// Why a page could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The stored cursor cannot be used: Miro refused it (400), or no request can carry
    /// it (too long for a URL). The window is read again from the latest item stored.
    #[error("{reason}")]
    CursorRejected { reason: String },
    #[error(transparent)]
    Permanent(#[from] Permanent),
    /// `what` names the call (`the page request`, `the token introspection`): the caller
    /// knows the source and says what happens next.
    #[error("{what} failed {}, last: {reason}", times(*attempts))]
    RetriesExhausted {
        what: &'static str,
        attempts: u32,
        reason: String,
    },
    #[error("stopped")]
    Stopped,
}

/// `1 time`, `3 times`.
fn times(n: u32) -> String {
    if n == 1 {
        "1 time".to_string()
    } else {
        format!("{n} times")
    }
}

/// What `GET /v1/oauth-token` says about the token (tolerant: every field optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenInfo {
    pub scopes: Vec<String>,
    pub team: Option<Named>,
    pub organization: Option<Named>,
}

/// A team or organization: its id (a long decimal, kept as text) and name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Named {
    pub id: String,
    pub name: String,
}

impl std::fmt::Display for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\" ({})", self.name, self.id)
    }
}

impl TokenInfo {
    /// Parses the introspection body; `None` when it is not a JSON object.
    pub fn parse(body: &[u8]) -> Option<TokenInfo> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let v = v.as_object()?;
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let named = |key: &str| {
            let o = v.get(key)?.as_object()?;
            Some(Named {
                id: o.get("id").and_then(text)?,
                name: o.get("name").and_then(text).unwrap_or_default(),
            })
        };
        let scopes = match v.get("scopes") {
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(text).collect(),
            // The refresh-token answer writes scopes as one space-separated string.
            Some(serde_json::Value::String(s)) => {
                s.split_whitespace().map(str::to_string).collect()
            }
            _ => Vec::new(),
        };
        Some(TokenInfo {
            scopes,
            team: named("team"),
            organization: named("organization"),
        })
    }
}

/// What one kind of call costs and how patient it is.
struct Call {
    source: SourceKind,
    /// What the call is, for errors: `the page request`, `the token introspection`.
    what: &'static str,
    cost: u64,
    had_cursor: bool,
    /// Length of the cursor sent, for messages.
    cursor_chars: usize,
    /// Give up after this many 429s (`None`: wait them out forever, as collection does).
    max_rate_limited: Option<u32>,
}

/// Counters of what the client did (for `demo`, `status` and tests).
#[derive(Debug, Default)]
pub struct ClientStats {
    pub requests: AtomicU64,
    pub rate_limited: AtomicU64,
    pub retries: AtomicU64,
    by_status: Mutex<BTreeMap<u16, u64>>,
}

impl ClientStats {
    pub fn by_status(&self) -> BTreeMap<u16, u64> {
        self.by_status.lock().expect("stats lock").clone()
    }
    fn count(&self, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        *self
            .by_status
            .lock()
            .expect("stats lock")
            .entry(status)
            .or_default() += 1;
    }
}

/// A Miro API client for one token.
#[derive(Debug, Clone)]
pub struct MiroClient {
    http: reqwest::Client,
    api_base: String,
    token: TokenProvider,
    org_id: String,
    max_retries: u32,
    budget: Arc<CreditBudget>,
    stats: Arc<ClientStats>,
    backoff_base: Duration,
    max_response_bytes: usize,
    telemetry: Option<Arc<Telemetry>>,
    /// The organisation's name in metrics labels.
    org_name: Arc<str>,
}

impl MiroClient {
    pub fn new(
        config: &MiroConfig,
        token: TokenProvider,
        budget: Arc<CreditBudget>,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(config.request_timeout)
            .connect_timeout(Duration::from_secs(10).min(config.request_timeout))
            .build()?;
        Ok(MiroClient {
            http,
            api_base: config.api_base.as_str().trim_end_matches('/').to_string(),
            token,
            org_id: config.org_id.clone().unwrap_or_default(),
            max_retries: config.max_retries,
            budget,
            stats: Arc::new(ClientStats::default()),
            backoff_base: config.retry_initial_backoff,
            max_response_bytes: config.max_response_bytes,
            telemetry: None,
            org_name: Arc::from(crate::config::DEFAULT_ORG_NAME),
        })
    }

    pub fn token_provider(&self) -> &TokenProvider {
        &self.token
    }

    /// Counts every page request by source and status.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// Labels this client's requests with its organisation's name (`[[orgs]]`).
    pub fn with_org_name(mut self, name: &str) -> Self {
        self.org_name = Arc::from(name);
        self
    }

    /// Shortens the first backoff step (tests and the demo's emulator).
    pub fn with_backoff_base(mut self, base: Duration) -> Self {
        self.backoff_base = base;
        self
    }

    pub fn stats(&self) -> &Arc<ClientStats> {
        &self.stats
    }

    pub fn budget(&self) -> &Arc<CreditBudget> {
        &self.budget
    }

    fn request(&self, q: &PageQuery, bearer: &str) -> reqwest::RequestBuilder {
        let limit = q.limit.to_string();
        let from = q.from.to_iso();
        let to = q.to.to_iso();
        let (url, mut params) = match q.source {
            SourceKind::AuditLogs => (
                format!("{}/v2/audit/logs", self.api_base),
                vec![
                    ("createdAfter", from.as_str()),
                    ("createdBefore", to.as_str()),
                    ("limit", limit.as_str()),
                    ("sorting", "ASC"),
                ],
            ),
            SourceKind::ContentLogs => (
                format!(
                    "{}/v2/orgs/{}/content-logs/items",
                    self.api_base, self.org_id
                ),
                vec![
                    ("from", from.as_str()),
                    ("to", to.as_str()),
                    ("limit", limit.as_str()),
                    ("sorting", "asc"),
                ],
            ),
            // `from`/`to` filter on `storedAt` here (docs/miro-api.md).
            SourceKind::AiInteractionLogs => (
                format!(
                    "{}/v2/orgs/{}/ai-interaction-logs",
                    self.api_base, self.org_id
                ),
                vec![
                    ("from", from.as_str()),
                    ("to", to.as_str()),
                    ("limit", limit.as_str()),
                    ("sorting", "asc"),
                ],
            ),
        };
        if let Some(cursor) = &q.cursor {
            params.push(("cursor", cursor.as_str()));
        }
        self.http
            .get(url)
            .query(&params)
            .bearer_auth(bearer)
            .header(ACCEPT, "application/json")
    }

    /// Fetches one page, waiting for credits, retrying transient failures and waiting
    /// out 429s. Returns the page and how many HTTP requests it took.
    pub async fn fetch_page(
        &self,
        q: &PageQuery,
        shutdown: &mut Shutdown,
    ) -> Result<(Page, u32), FetchError> {
        let call = Call {
            source: q.source,
            what: "the page request",
            cost: q.source.credits_per_call(),
            had_cursor: q.cursor.is_some(),
            cursor_chars: q.cursor.as_ref().map_or(0, |c| c.chars().count()),
            max_rate_limited: None,
        };
        self.call(
            &call,
            |bearer: &str| self.request(q, bearer),
            |body| {
                parse_page_reading(body, |rest| crate::store::stored_row_prefix(q.source, rest))
                    .map_err(|e| e.to_string())
            },
            shutdown,
        )
        .await
    }

    /// Introspects the token (`GET /v1/oauth-token`, 50 credits). `source` picks which
    /// toggle a 401 message names. Transient failures are retried like pages; after three
    /// 429s it gives up (a check should not wait for minutes).
    pub async fn token_info(&self, source: SourceKind) -> Result<TokenInfo, FetchError> {
        let url = format!("{}/v1/oauth-token", self.api_base);
        let call = Call {
            source,
            what: "the token introspection (GET /v1/oauth-token)",
            cost: 50,
            had_cursor: false,
            cursor_chars: 0,
            max_rate_limited: Some(3),
        };
        let request = |bearer: &str| {
            self.http
                .get(&url)
                .bearer_auth(bearer)
                .header(ACCEPT, "application/json")
        };
        let parse = |body: Vec<u8>| {
            TokenInfo::parse(&body).ok_or_else(|| "not a token description".to_string())
        };
        let (_trigger, mut never) = crate::shutdown::channel();
        self.call(&call, request, parse, &mut never)
            .await
            .map(|(info, _)| info)
    }

    /// One call through the shared retry loop (`crate::retry`): credits first, then the
    /// request, then the decision of `classify_status` (retry with backoff, wait out a
    /// 429, or give up). Returns the parsed body and how many requests it took.
    async fn call<T, R, P>(
        &self,
        call: &Call,
        request: R,
        parse: P,
        shutdown: &mut Shutdown,
    ) -> Result<(T, u32), FetchError>
    where
        R: Fn(&str) -> reqwest::RequestBuilder,
        P: Fn(Vec<u8>) -> Result<T, String>,
    {
        let policy = Policy {
            max_retries: self.max_retries,
            max_throttled: call.max_rate_limited,
            backoff_base: self.backoff_base,
            backoff_cap: Duration::from_secs(60),
        };
        let mut exchange = MiroExchange {
            client: self,
            call,
            request,
            parse,
            shutdown,
            requests: 0,
            refreshed_on_401: false,
        };
        let value = retry::run(&policy, &mut exchange).await?;
        Ok((value, exchange.requests))
    }

    /// Sends one request and decides what its answer means.
    async fn send_once<T>(
        &self,
        call: &Call,
        request: reqwest::RequestBuilder,
        parse: impl Fn(Vec<u8>) -> Result<T, String>,
    ) -> Decision<Result<T, FetchError>> {
        let sent = request.send().await;
        // A request that cannot even be built (a cursor too long for a URL) fails
        // the same way every time: retrying is pointless.
        if let Err(e) = &sent
            && e.is_builder()
        {
            let reason = describe_reqwest_error(e);
            return Decision::Finish(Err(if call.had_cursor {
                FetchError::CursorRejected {
                    reason: format!(
                        "the cursor Miro handed out cannot be sent back ({reason}; {} characters)",
                        call.cursor_chars
                    ),
                }
            } else {
                FetchError::Permanent(Permanent::Unsendable { reason })
            }));
        }
        if let Some(t) = &self.telemetry {
            t.miro_request(
                &self.org_name,
                call.source,
                sent.as_ref().ok().map(|r| r.status().as_u16()),
            );
        }
        let resp = match sent {
            Err(e) => {
                return Decision::Retry {
                    reason: describe_reqwest_error(&e),
                };
            }
            Ok(resp) => resp,
        };
        let status = resp.status().as_u16();
        self.stats.count(status);
        let headers = resp.headers().clone();
        let reset_in = self.observe_rate_headers(&headers);
        let retry_after = header_u64(&headers, RETRY_AFTER.as_str()).map(Duration::from_secs);
        let classify = |message: Option<&str>| {
            classify_status(
                call.source,
                status,
                call.had_cursor,
                message,
                retry_after,
                reset_in,
                &self.org_id,
            )
        };
        let decision = match read_body_capped(resp, self.max_response_bytes).await {
            Err(BodyError::Transport(e)) => {
                return Decision::Retry {
                    reason: format!(
                        "HTTP {status}, body cut short: {}",
                        describe_reqwest_error(&e)
                    ),
                };
            }
            // An oversized error answer still says what its status says.
            Err(BodyError::TooLarge {
                max_bytes,
                declared,
            }) => match classify(None) {
                Decision::Finish(Verdict::Success) => {
                    Decision::Finish(Verdict::Permanent(Permanent::TooLarge {
                        kind: call.source,
                        max_bytes,
                        declared: declared
                            .map(|n| format!(", it announced {n} bytes"))
                            .unwrap_or_default(),
                    }))
                }
                other => other,
            },
            // A 2xx body is parsed once, straight into the page (or token) type; only an
            // error answer is read for Miro's `message`.
            Ok(body) if (200..=299).contains(&status) => {
                return match parse(body) {
                    Ok(value) => Decision::Finish(Ok(value)),
                    Err(e) => Decision::Retry {
                        reason: format!("HTTP {status} with an unusable body: {e}"),
                    },
                };
            }
            Ok(body) => classify(error_message(&body).as_deref()),
        };
        match decision {
            // `classify_status` says `Success` for 2xx only, which returned above.
            Decision::Finish(Verdict::Success) => unreachable!("2xx is handled above"),
            Decision::Finish(Verdict::CursorRejected) => {
                Decision::Finish(Err(FetchError::CursorRejected {
                    reason: "Miro refused the cursor (400; expired?)".into(),
                }))
            }
            Decision::Finish(Verdict::Permanent(p)) => {
                Decision::Finish(Err(FetchError::Permanent(p)))
            }
            Decision::Again => Decision::Again,
            Decision::Throttled { wait } => {
                self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                Decision::Throttled { wait }
            }
            Decision::Retry { reason } => Decision::Retry { reason },
        }
    }

    /// Feeds `X-RateLimit-*` to the budget; returns the time until the reset.
    fn observe_rate_headers(&self, headers: &HeaderMap) -> Option<Duration> {
        let limit = header_u64(headers, "x-ratelimit-limit");
        let remaining = header_u64(headers, "x-ratelimit-remaining");
        let reset_in = header_u64(headers, "x-ratelimit-reset").map(|reset_epoch_secs| {
            let now_ms = UnixMs::now().0;
            Duration::from_millis(
                (i64::try_from(reset_epoch_secs)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1000)
                    - now_ms)
                    .max(0)
                    .unsigned_abs(),
            )
        });
        if limit.is_some() || remaining.is_some() {
            self.budget.observe(limit, remaining, reset_in);
        }
        reset_in
    }
}

/// One Miro call as the retry loop drives it: credits from the shared budget, a 429
/// pauses the budget (so every caller of this token waits), shutdown ends the waits.
struct MiroExchange<'a, R, P> {
    client: &'a MiroClient,
    call: &'a Call,
    request: R,
    parse: P,
    shutdown: &'a mut Shutdown,
    requests: u32,
    /// A 401 already led to one refresh in this call (only one is tried).
    refreshed_on_401: bool,
}

impl<T, R, P> Exchange for MiroExchange<'_, R, P>
where
    R: Fn(&str) -> reqwest::RequestBuilder,
    P: Fn(Vec<u8>) -> Result<T, String>,
{
    type Output = T;
    type Error = FetchError;

    async fn acquire(&mut self) -> Result<(), FetchError> {
        tokio::select! {
            _ = self.client.budget.acquire(self.call.cost) => Ok(()),
            _ = self.shutdown.wait() => Err(FetchError::Stopped),
        }
    }

    async fn send(&mut self) -> Decision<Result<T, FetchError>> {
        let bearer = match self.client.token.bearer().await {
            Ok(b) => b,
            Err(e) if e.is_transient() => {
                return Decision::Retry {
                    reason: e.to_string(),
                };
            }
            Err(e) => {
                return Decision::Finish(Err(FetchError::Permanent(Permanent::Token {
                    reason: e.to_string(),
                })));
            }
        };
        self.requests += 1;
        let decision = self
            .client
            .send_once(
                self.call,
                (self.request)(bearer.expose_secret()),
                &self.parse,
            )
            .await;
        // An expiring access token Miro refuses (revoked, or expired early): refresh
        // once and send again before calling it permanent.
        if let Decision::Finish(Err(FetchError::Permanent(Permanent::Unauthorized { .. }))) =
            &decision
            && !self.refreshed_on_401
            && self.client.token.rejected(&bearer).await
        {
            self.refreshed_on_401 = true;
            return Decision::Again;
        }
        decision
    }

    async fn throttled(&mut self, wait: Duration) -> Result<(), FetchError> {
        tracing::warn!(
            source = %self.call.source,
            wait_secs = wait.as_secs_f64(),
            "Miro rate limit reached (429); waiting for the budget to reset"
        );
        self.client.budget.pause(wait);
        Ok(())
    }

    fn retrying(&mut self, attempt: u32, wait: Duration, reason: &str) {
        self.client.stats.retries.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            source = %self.call.source,
            attempt,
            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            %reason,
            "Miro request failed; retrying"
        );
    }

    async fn sleep(&mut self, wait: Duration) -> Result<(), FetchError> {
        if self.shutdown.sleep(wait).await {
            Ok(())
        } else {
            Err(FetchError::Stopped)
        }
    }

    fn give_up(&mut self, why: GiveUp) -> FetchError {
        match why {
            GiveUp::Failures { failures, reason } => FetchError::RetriesExhausted {
                what: self.call.what,
                attempts: failures,
                reason,
            },
            GiveUp::Throttled {
                failures,
                throttled,
                ..
            } => FetchError::RetriesExhausted {
                what: self.call.what,
                attempts: failures + throttled,
                reason: "Miro kept answering 429".into(),
            },
        }
    }
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a finite, non-negative header value; `as` saturates and drops the fraction"
)]
fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers
        .get(name)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v as u64)
}

/// Miro's `message` from an error body, if the body is Miro's error shape.
fn error_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("message")?.as_str().map(str::to_string)
}

/// A short description of a transport error, without the URL's query (no secrets are in
/// it, but cursors are long).
pub(super) fn describe_reqwest_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "body cut short"
    } else if e.is_builder() {
        "cannot build the request"
    } else {
        "transport error"
    };
    // The layers between reqwest and the OS each restate the kind ("client error
    // (Connect)", "tcp connect error"); the innermost cause says what happened.
    match root_cause(e) {
        Some(root) => format!("{kind}: {root}"),
        None => kind.to_string(),
    }
}
