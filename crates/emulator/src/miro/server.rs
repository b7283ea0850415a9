//! The axum server: auth, credit budget, parameters, faults, pages, stats.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, Query, RawQuery, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::body_faults::BodyFault;
use super::config::{Faults, LastPageCursor, MiroEmulatorConfig};
use super::cursor;
use super::faults::{self, FaultPlan};
use super::hash::{hash, hash_str};
use super::oauth::{OAuthApp, OAuthState, OAuthStats};
use super::org::{MiroOrg, Stream, fingerprint_strings};
use super::paging::{self, ContentFilter, PageRequest};
use super::rate::{Charge, CreditBuckets, RateStatus};
use crate::time::UnixMs;

const SCOPE_AUDIT: &str = "auditlogs:read";
const SCOPE_CONTENT: &str = "contentlogs:export";
const SCOPE_AI: &str = "aiinteractionlogs:read";
/// AI interaction logs: `limit` 1..=100, default 100.
const AI_MAX_LIMIT: u32 = 100;
const AI_DEFAULT_LIMIT: u32 = 100;
const CONTENT_MAX_LIMIT: u32 = 1000;
const CONTENT_DEFAULT_LIMIT: u32 = 1000;
const AUDIT_DEFAULT_LIMIT: u32 = 100;
const MAX_FILTER_VALUES: usize = 15;
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const TOO_MANY_REQUESTS_BODY: &str = r#"{"status":429,"code":"tooManyRequests","message":"Request rate limit exceed","context":null,"type":"error"}"#;

const HTML_ERROR_PAGE: &str = "<!DOCTYPE html>\n<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n<hr><center>cloudflare</center>\n</body>\n</html>\n";

/// Counters of what the emulator served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmulatorStats {
    pub requests: u64,
    pub by_status: BTreeMap<u16, u64>,
    pub audit_requests: u64,
    pub content_requests: u64,
    pub ai_requests: u64,
    pub credits_spent: u64,
    /// Items in the page bodies sent whole (a duplicated item counts twice).
    pub items_served: u64,
    /// Injected faults by kind: `server_error`, `slow`, `truncate`, `html`,
    /// `expire_cursor`, `repeat_cursor`, `duplicate_item`, `hostile_item` (per item),
    /// `conflict`; body faults: `gzip_bomb`, `huge_body`.
    pub faults: BTreeMap<String, u64>,
    pub rate_limited: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Audit,
    Content,
    Ai,
    TokenInfo,
    Unknown,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Audit => "audit_logs",
            Endpoint::Content => "content_logs",
            Endpoint::Ai => "ai_interaction_logs",
            Endpoint::TokenInfo => "oauth_token",
            Endpoint::Unknown => "unknown",
        }
    }

    /// Credits per call (rate-limit levels: L1 50, L2 100, L4 2000).
    fn cost(self) -> u64 {
        match self {
            Endpoint::Audit => 100,
            Endpoint::Content | Endpoint::Ai => 2000,
            Endpoint::TokenInfo => 50,
            Endpoint::Unknown => 0,
        }
    }
}

/// One response before it becomes HTTP.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    items: u64,
}

impl Reply {
    fn json(status: u16, body: String) -> Self {
        Reply {
            status,
            content_type: "application/json",
            body: body.into_bytes(),
            items: 0,
        }
    }

    fn error(status: u16, code: &str, message: impl Into<String>) -> Self {
        #[derive(Serialize)]
        struct ErrorBody<'a> {
            status: u16,
            code: &'a str,
            message: String,
            #[serde(rename = "type")]
            kind: &'static str,
        }
        let body = ErrorBody {
            status,
            code,
            message: message.into(),
            kind: "error",
        };
        Reply::json(status, serde_json::to_string(&body).unwrap_or_default())
    }

    fn bad_parameter(message: impl Into<String>) -> Self {
        Reply::error(400, "invalidParameters", message)
    }
}

/// The `cursor` field of a page.
enum CursorField {
    Omit,
    Null,
    Text(String),
}

impl Serialize for CursorField {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            CursorField::Text(t) => s.serialize_str(t),
            CursorField::Null | CursorField::Omit => s.serialize_none(),
        }
    }
}

/// A page: the envelope's keys in Miro's order, then its items.
#[derive(Serialize)]
struct PageBody<D> {
    #[serde(rename = "type")]
    kind: &'static str,
    limit: u32,
    size: usize,
    #[serde(skip_serializing_if = "is_omitted")]
    cursor: CursorField,
    data: D,
}

/// One item of a page: its index in the stream, and whether it is served hostile.
#[derive(Debug, Clone, Copy)]
struct PageItem {
    index: u64,
    hostile: bool,
}

/// A page's items, each computed and written straight into the body (no JSON tree).
struct PageItems<'a> {
    org: &'a MiroOrg,
    stream: Stream,
    items: &'a [PageItem],
}

impl Serialize for PageItems<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.items
                .iter()
                .map(|i| self.org.served_record(self.stream, i.index, i.hostile)),
        )
    }
}

/// The bytes of an item as served, about: capacity to reserve for a page body.
const ITEM_BYTES_HINT: usize = 1024;

fn is_omitted(c: &CursorField) -> bool {
    matches!(c, CursorField::Omit)
}

/// The raw query string as key/value pairs (repeated keys kept, in order).
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: &str) -> Self {
        Params(
            url::form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn first(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn time(&self, key: &str) -> Result<UnixMs, Reply> {
        let value = self
            .first(key)
            .ok_or_else(|| Reply::bad_parameter(format!("Required parameter {key} is missing")))?;
        let value = value.trim();
        match UnixMs::parse(value) {
            Some(t) if value.ends_with('Z') => Ok(t),
            _ => Err(Reply::bad_parameter(format!(
                "Invalid parameter {key}: expected a UTC date-time like 2023-03-30T17:26:50.000Z, got '{value}'"
            ))),
        }
    }

    fn limit(&self, default: u32, max: u32) -> Result<u32, Reply> {
        match self.first("limit") {
            None => Ok(default),
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(Reply::bad_parameter(format!(
                    "Invalid parameter limit: must be an integer between 1 and {max}, got '{v}'"
                ))),
            },
        }
    }

    /// `true` for descending; the accepted spellings are exactly `asc` and `desc`.
    fn sorting(&self, asc: &str, desc: &str) -> Result<bool, Reply> {
        match self.first("sorting") {
            None => Ok(false),
            Some(v) if v == asc => Ok(false),
            Some(v) if v == desc => Ok(true),
            Some(v) => Err(Reply::bad_parameter(format!(
                "Invalid parameter sorting: must be {asc} or {desc}, got '{v}'"
            ))),
        }
    }

    fn cursor(&self) -> Option<&str> {
        self.first("cursor").filter(|c| !c.is_empty())
    }
}

struct Shared {
    org: Arc<MiroOrg>,
    seed: u64,
    scopes_by_token: HashMap<String, Vec<String>>,
    revoked: Mutex<HashSet<String>>,
    enterprise_guard: AtomicBool,
    faults: RwLock<Faults>,
    body_fault: RwLock<Option<BodyFault>>,
    request_counter: AtomicU64,
    credits: CreditBuckets,
    retry_after_header: bool,
    audit_max_limit: u32,
    last_page_cursor: LastPageCursor,
    stats: Mutex<EmulatorStats>,
    /// Pages left that hand out an oversized cursor instead of their real one.
    oversized_cursors: AtomicU64,
    oauth: Mutex<OAuthState>,
    /// Tests: pages are assembled from the `Value` oracle (`org/oracle.rs`).
    #[cfg(test)]
    value_oracle: AtomicBool,
}

/// What happened while answering, for the stats.
#[derive(Default)]
struct Outcome {
    credits: u64,
    rate_limited: bool,
    faults: Vec<&'static str>,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl Shared {
    fn new(config: &MiroEmulatorConfig) -> Self {
        Shared {
            org: Arc::new(MiroOrg::new(config)),
            seed: config.seed,
            scopes_by_token: config
                .tokens
                .iter()
                .map(|t| (t.token.clone(), t.scopes.clone()))
                .collect(),
            revoked: Mutex::new(HashSet::new()),
            enterprise_guard: AtomicBool::new(config.enterprise_guard),
            faults: RwLock::new(config.faults.clone()),
            body_fault: RwLock::new(None),
            request_counter: AtomicU64::new(0),
            credits: CreditBuckets::new(config.rate_limit),
            retry_after_header: config.rate_limit.is_some_and(|r| r.retry_after_header),
            audit_max_limit: config.audit_max_limit,
            last_page_cursor: config.last_page_cursor,
            stats: Mutex::new(EmulatorStats::default()),
            oversized_cursors: AtomicU64::new(0),
            oauth: Mutex::new(OAuthState::new(config.team_id.parse().unwrap_or(0))),
            #[cfg(test)]
            value_oracle: AtomicBool::new(false),
        }
    }

    fn faults(&self) -> Faults {
        self.faults
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The scopes of a live token (configured, or an unexpired one issued by the OAuth
    /// endpoint); `None` if unknown, expired or revoked.
    fn scopes(&self, token: &str, now: UnixMs) -> Option<Vec<String>> {
        let revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        if revoked.contains(token) {
            return None;
        }
        if let Some(scopes) = self.scopes_by_token.get(token) {
            return Some(scopes.clone());
        }
        self.oauth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .access_scopes(token, now)
    }

    fn oauth(&self) -> std::sync::MutexGuard<'_, OAuthState> {
        self.oauth.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn handle(
        &self,
        endpoint: Endpoint,
        headers: &HeaderMap,
        raw_query: &str,
        org_id: Option<&str>,
    ) -> Response {
        let request_no = self.request_counter.fetch_add(1, Ordering::Relaxed);
        let now = UnixMs::now();
        let mut outcome = Outcome::default();
        let token = bearer(headers);
        let mut rate = self.credits.peek(None, now);
        let mut retry_after = None;
        let mut throttled = false;

        let reply = 'reply: {
            if endpoint == Endpoint::Unknown {
                break 'reply Reply::error(404, "notFound", "Endpoint not found");
            }
            let Some(token) = token else {
                break 'reply Reply::error(
                    401,
                    "tokenNotProvided",
                    "No authorization token was found",
                );
            };
            let Some(scopes) = self.scopes(token, now) else {
                break 'reply Reply::error(
                    401,
                    "tokenNotFound",
                    "Token is invalid or has been revoked",
                );
            };
            let plan = if endpoint == Endpoint::TokenInfo {
                FaultPlan::default()
            } else {
                faults::plan(self.seed, request_no, &self.faults())
            };
            if plan.throttle {
                outcome.faults.push(faults::THROTTLE);
                outcome.rate_limited = true;
                throttled = true;
                retry_after = Some(1);
                rate = self.credits.peek(Some(token), now);
                break 'reply Reply::json(429, TOO_MANY_REQUESTS_BODY.to_owned());
            }
            match self.credits.charge(token, endpoint.cost(), now) {
                Charge::Charged(status) => {
                    rate = status;
                    outcome.credits = endpoint.cost();
                }
                Charge::Limited {
                    status,
                    retry_after_secs,
                } => {
                    rate = status;
                    retry_after = Some(retry_after_secs);
                    outcome.rate_limited = true;
                    break 'reply Reply::json(429, TOO_MANY_REQUESTS_BODY.to_owned());
                }
            }
            if endpoint == Endpoint::TokenInfo {
                break 'reply self.token_info(&scopes);
            }
            if let Some(delay) = plan.slow {
                outcome.faults.push(faults::SLOW);
                tokio::time::sleep(delay).await;
            }
            self.log_page(
                endpoint,
                &scopes,
                raw_query,
                org_id,
                &plan,
                now,
                &mut outcome,
            )
        };

        let status = reply.status;
        let body_fault = *self.body_fault.read().unwrap_or_else(|e| e.into_inner());
        let body_fault = body_fault.filter(|_| {
            status == 200 && matches!(endpoint, Endpoint::Audit | Endpoint::Content | Endpoint::Ai)
        });
        if let Some(f) = body_fault {
            outcome.faults.push(f.name());
        }
        self.record(endpoint, status, reply.items, &outcome);
        debug!(
            endpoint = endpoint.name(),
            request_no,
            status,
            items = reply.items,
            faults = ?outcome.faults,
            "miro emulator answered"
        );
        let retry_after = retry_after.filter(|_| self.retry_after_header || throttled);
        let mut response = build_response(reply, rate, retry_after);
        if let Some(f) = body_fault {
            f.apply(&mut response);
        }
        response
    }

    fn record(&self, endpoint: Endpoint, status: u16, items: u64, outcome: &Outcome) {
        let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        s.requests += 1;
        *s.by_status.entry(status).or_default() += 1;
        match endpoint {
            Endpoint::Audit => s.audit_requests += 1,
            Endpoint::Content => s.content_requests += 1,
            Endpoint::Ai => s.ai_requests += 1,
            Endpoint::TokenInfo | Endpoint::Unknown => {}
        }
        s.credits_spent += outcome.credits;
        s.items_served += items;
        s.rate_limited += u64::from(outcome.rate_limited);
        for f in &outcome.faults {
            *s.faults.entry((*f).to_owned()).or_default() += 1;
        }
    }

    fn token_info(&self, scopes: &[String]) -> Reply {
        let owner = self.org.token_owner();
        let body = json!({
            "type": "oauth-token",
            "scopes": scopes,
            "team": self.org.token_team(),
            "createdBy": owner,
            "user": owner,
            "organization": self.org.organization(),
        });
        Reply::json(200, body.to_string())
    }

    /// Audit, content or AI interaction logs, after auth and charging.
    #[allow(clippy::too_many_arguments)]
    fn log_page(
        &self,
        endpoint: Endpoint,
        scopes: &[String],
        raw_query: &str,
        org_id: Option<&str>,
        plan: &FaultPlan,
        now: UnixMs,
        outcome: &mut Outcome,
    ) -> Reply {
        let (stream, scope) = match endpoint {
            Endpoint::Content => (Stream::Content, SCOPE_CONTENT),
            Endpoint::Ai => (Stream::Ai, SCOPE_AI),
            _ => (Stream::Audit, SCOPE_AUDIT),
        };
        if !scopes.iter().any(|s| s == scope) {
            return Reply::error(
                403,
                "insufficientPermissions",
                format!("The token does not have the required scope {scope}"),
            );
        }
        if matches!(stream, Stream::Content | Stream::Ai) {
            if org_id != Some(self.org.org_id()) {
                return Reply::error(404, "notFound", "Organization not found");
            }
            if !self.enterprise_guard.load(Ordering::Relaxed) {
                let what = if stream == Stream::Ai {
                    "AI interaction logs"
                } else {
                    "Content logs"
                };
                return Reply::error(
                    403,
                    "insufficientPermissions",
                    format!("{what} require the Enterprise Guard add-on"),
                );
            }
        }
        if let Some(code) = plan.server_error {
            outcome.faults.push(faults::SERVER_ERROR);
            let (name, message) = match code {
                500 => ("internalServerError", "Internal server error"),
                502 => ("badGateway", "Bad gateway"),
                503 => ("serviceUnavailable", "Service is temporarily unavailable"),
                _ => ("gatewayTimeout", "Gateway timeout"),
            };
            return Reply::error(code, name, message);
        }
        if plan.conflict && stream == Stream::Audit {
            outcome.faults.push(faults::CONFLICT);
            return Reply::error(
                409,
                "conflict",
                "The request conflicts with the current state of the resource",
            );
        }
        if plan.html {
            outcome.faults.push(faults::HTML);
            return Reply {
                status: 200,
                content_type: "text/html; charset=utf-8",
                body: HTML_ERROR_PAGE.as_bytes().to_vec(),
                items: 0,
            };
        }

        let params = Params::parse(raw_query);
        let query = match self.parse_query(stream, &params) {
            Ok(q) => q,
            Err(reply) => return reply,
        };
        let incoming_cursor = params.cursor();
        if incoming_cursor.is_some() && plan.expire_cursor {
            outcome.faults.push(faults::EXPIRE_CURSOR);
            return Reply::bad_parameter("Invalid parameter cursor: the cursor has expired");
        }
        let position = match incoming_cursor {
            None => None,
            Some(c) => match cursor::decode(self.seed, stream, c) {
                Some((fp, position)) if fp == query.fingerprint => Some(position),
                _ => {
                    return Reply::bad_parameter(
                        "Invalid parameter cursor: not a cursor of this query",
                    );
                }
            },
        };
        if let (Some(nonce), Some(at)) = (plan.empty_page, position) {
            outcome.faults.push(faults::EMPTY_PAGE);
            let body = PageBody {
                kind: "cursor-list",
                limit: query.limit,
                size: 0,
                cursor: CursorField::Text(cursor::encode(
                    self.seed,
                    stream,
                    query.fingerprint,
                    at | (nonce << 48),
                )),
                data: [(); 0],
            };
            return Reply {
                status: 200,
                content_type: "application/json",
                body: serde_json::to_vec(&body).unwrap_or_default(),
                items: 0,
            };
        }
        let req = PageRequest {
            stream,
            from: query.from,
            to: query.to,
            descending: query.descending,
            limit: query.limit,
            position,
            filter: query.filter.as_ref(),
        };
        let Ok(page) = paging::page(&self.org, &req, now) else {
            return Reply::bad_parameter("Invalid parameter cursor: not a cursor of this query");
        };

        let hostile_share = self.faults().hostile_item_share;
        let items = self.page_items(stream, &page.indices, plan, &query, hostile_share, outcome);
        let cursor = match (incoming_cursor, plan.repeat_cursor) {
            (Some(c), true) => {
                outcome.faults.push(faults::REPEAT_CURSOR);
                CursorField::Text(c.to_owned())
            }
            _ => match page.next {
                Some(next) => {
                    CursorField::Text(cursor::encode(self.seed, stream, query.fingerprint, next))
                }
                None => match self.last_page_cursor {
                    LastPageCursor::Omit => CursorField::Omit,
                    LastPageCursor::Empty => CursorField::Text(String::new()),
                    LastPageCursor::Null => CursorField::Null,
                },
            },
        };
        let cursor = match cursor {
            CursorField::Text(c) if !c.is_empty() && self.take_oversized_cursor() => {
                outcome.faults.push(faults::OVERSIZED_CURSOR);
                CursorField::Text(oversized_cursor(&c))
            }
            other => other,
        };
        let mut text = Vec::with_capacity(256 + items.len() * ITEM_BYTES_HINT);
        #[cfg(test)]
        let oracle = self
            .value_oracle
            .load(Ordering::Relaxed)
            .then(|| self.value_oracle_data(stream, &page.indices, plan, &query, hostile_share));
        #[cfg(not(test))]
        let oracle: Option<Vec<Value>> = None;
        let written = match oracle {
            Some(data) => serde_json::to_writer(
                &mut text,
                &PageBody {
                    kind: "cursor-list",
                    limit: query.limit,
                    size: data.len(),
                    cursor,
                    data,
                },
            ),
            None => serde_json::to_writer(
                &mut text,
                &PageBody {
                    kind: "cursor-list",
                    limit: query.limit,
                    size: items.len(),
                    cursor,
                    data: PageItems {
                        org: &self.org,
                        stream,
                        items: &items,
                    },
                },
            ),
        };
        written.expect("a page serialises");
        let mut served = items.len() as u64;
        if plan.truncate {
            outcome.faults.push(faults::TRUNCATE);
            let mut cut = text.len() / 2;
            // Back to a character boundary: never inside a UTF-8 sequence.
            while cut > 0 && (text[cut] & 0xC0) == 0x80 {
                cut -= 1;
            }
            text.truncate(cut);
            served = 0;
        }
        Reply {
            status: 200,
            content_type: "application/json",
            body: text,
            items: served,
        }
    }

    /// The items of a page of `indices`, after the faults that add items (a duplicated
    /// item, stray items from outside the window); counts the hostile items.
    fn page_items(
        &self,
        stream: Stream,
        indices: &[u64],
        plan: &FaultPlan,
        query: &LogQuery,
        hostile_share: f64,
        outcome: &mut Outcome,
    ) -> Vec<PageItem> {
        let mut items: Vec<PageItem> = Vec::with_capacity(indices.len() + 3);
        items.extend(indices.iter().map(|&index| PageItem {
            index,
            hostile: self.org.is_hostile(stream, index, hostile_share),
        }));
        for _ in items.iter().filter(|i| i.hostile) {
            outcome.faults.push(faults::HOSTILE_ITEM);
        }
        if let Some(h) = plan.duplicate_item
            && !items.is_empty()
        {
            outcome.faults.push(faults::DUPLICATE_ITEM);
            let k = super::hash::index(h, items.len());
            items.insert(k + 1, items[k]);
        }
        if plan.stray_items && !items.is_empty() {
            // Hostile page: one item from before the window and one from after it (in
            // the future when the org reaches past now), beyond `limit`; never hostile.
            outcome.faults.push(faults::STRAY_ITEMS);
            let range = self.org.range(stream, query.from, query.to);
            let count = match stream {
                Stream::Audit => self.org.audit_count(),
                Stream::Content => self.org.content_count(),
                Stream::Ai => self.org.ai_count(),
            };
            if range.start > 0 {
                let index = range.start - 1;
                items.insert(
                    0,
                    PageItem {
                        index,
                        hostile: false,
                    },
                );
            }
            let after = count.saturating_sub(1).min(range.end + 1000);
            if after >= range.end && count > 0 {
                items.push(PageItem {
                    index: after,
                    hostile: false,
                });
            }
        }
        items
    }

    /// The test oracle: a page's items as `serde_json::Value`s, assembled as the emulator
    /// did before it wrote items straight into the body.
    #[cfg(test)]
    fn value_oracle_data(
        &self,
        stream: Stream,
        indices: &[u64],
        plan: &FaultPlan,
        query: &LogQuery,
        hostile_share: f64,
    ) -> Vec<Value> {
        let mut data: Vec<Value> = indices
            .iter()
            .map(|&i| self.org.value_served_item(stream, i, hostile_share))
            .collect();
        if let Some(h) = plan.duplicate_item
            && !data.is_empty()
        {
            let k = super::hash::index(h, data.len());
            data.insert(k + 1, data[k].clone());
        }
        if plan.stray_items && !data.is_empty() {
            let range = self.org.range(stream, query.from, query.to);
            let count = match stream {
                Stream::Audit => self.org.audit_count(),
                Stream::Content => self.org.content_count(),
                Stream::Ai => self.org.ai_count(),
            };
            if range.start > 0 {
                data.insert(0, self.org.value_item(stream, range.start - 1));
            }
            let after = count.saturating_sub(1).min(range.end + 1000);
            if after >= range.end && count > 0 {
                data.push(self.org.value_item(stream, after));
            }
        }
        data
    }

    /// True (and one fewer left) while oversized cursors are still to be handed out.
    fn take_oversized_cursor(&self) -> bool {
        self.oversized_cursors
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    fn parse_query(&self, stream: Stream, params: &Params) -> Result<LogQuery, Reply> {
        let (from_key, to_key) = match stream {
            Stream::Audit => ("createdAfter", "createdBefore"),
            Stream::Content | Stream::Ai => ("from", "to"),
        };
        let from = params.time(from_key)?;
        let to = params.time(to_key)?;
        if to < from {
            return Err(Reply::bad_parameter(format!(
                "Invalid parameter {to_key}: must not be earlier than {from_key}"
            )));
        }
        let (limit, descending) = match stream {
            Stream::Audit => (
                params.limit(AUDIT_DEFAULT_LIMIT, self.audit_max_limit)?,
                params.sorting("ASC", "DESC")?,
            ),
            Stream::Content => (
                params.limit(CONTENT_DEFAULT_LIMIT, CONTENT_MAX_LIMIT)?,
                params.sorting("asc", "desc")?,
            ),
            Stream::Ai => (
                params.limit(AI_DEFAULT_LIMIT, AI_MAX_LIMIT)?,
                params.sorting("asc", "desc")?,
            ),
        };
        let mut fingerprint = hash(&[
            match stream {
                Stream::Audit => 1,
                Stream::Content => 2,
                Stream::Ai => 3,
            },
            from.0.cast_unsigned(),
            to.0.cast_unsigned(),
            u64::from(descending),
            hash_str(self.org.org_id()),
        ]);
        let mut filter = None;
        if matches!(stream, Stream::Content | Stream::Ai) {
            // Content logs filter on boards, AI interaction logs on objects (a board or
            // the organization).
            let object_key = if stream == Stream::Ai {
                "object_ids"
            } else {
                "board_ids"
            };
            let board_ids = params.all(object_key);
            let emails = params.all("emails");
            for (key, values) in [(object_key, &board_ids), ("emails", &emails)] {
                if values.len() > MAX_FILTER_VALUES {
                    return Err(Reply::bad_parameter(format!(
                        "Invalid parameter {key}: at most {MAX_FILTER_VALUES} values are allowed, got {}",
                        values.len()
                    )));
                }
            }
            fingerprint = hash(&[
                fingerprint,
                fingerprint_strings(&board_ids),
                u64::from(board_ids.is_empty()),
                fingerprint_strings(&emails),
                u64::from(emails.is_empty()),
            ]);
            if !board_ids.is_empty() || !emails.is_empty() {
                filter = Some(ContentFilter {
                    organization: stream == Stream::Ai
                        && board_ids.iter().any(|id| id == self.org.org_id()),
                    boards: (!board_ids.is_empty()).then(|| {
                        board_ids
                            .iter()
                            .filter_map(|b| self.org.board_index(b))
                            .collect()
                    }),
                    users: (!emails.is_empty()).then(|| {
                        emails
                            .iter()
                            .filter_map(|e| self.org.user_index(e))
                            .collect()
                    }),
                });
            }
        }
        Ok(LogQuery {
            from,
            to,
            limit,
            descending,
            fingerprint,
            filter,
        })
    }
}

/// A validated log query.
struct LogQuery {
    from: UnixMs,
    to: UnixMs,
    limit: u32,
    descending: bool,
    /// Ties cursors to the window, order and filters (not to `limit`).
    fingerprint: u64,
    filter: Option<ContentFilter>,
}

fn build_response(reply: Reply, rate: RateStatus, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, reply.body).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    headers.insert("x-ratelimit-limit", HeaderValue::from(rate.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(rate.remaining));
    headers.insert(
        "x-ratelimit-reset",
        HeaderValue::from(rate.reset_epoch_secs),
    );
    if let Some(secs) = retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

type AppState = Arc<Shared>;

async fn audit_logs(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    s.handle(Endpoint::Audit, &headers, q.as_deref().unwrap_or(""), None)
        .await
}

async fn content_logs(
    State(s): State<AppState>,
    Path(org_id): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    s.handle(
        Endpoint::Content,
        &headers,
        q.as_deref().unwrap_or(""),
        Some(&org_id),
    )
    .await
}

async fn ai_interaction_logs(
    State(s): State<AppState>,
    Path(org_id): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    s.handle(
        Endpoint::Ai,
        &headers,
        q.as_deref().unwrap_or(""),
        Some(&org_id),
    )
    .await
}

async fn oauth_token(State(s): State<AppState>, headers: HeaderMap) -> Response {
    s.handle(Endpoint::TokenInfo, &headers, "", None).await
}

/// `POST /v1/oauth/token` (form body): refresh or authorisation-code grant.
async fn oauth_grant(
    State(s): State<AppState>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let reply = s.oauth().token(&form, UnixMs::now());
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_REQUEST),
        reply.body,
    )
        .into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `GET /oauth/authorize?response_type=code&client_id=&redirect_uri=&state=`: for tests,
/// grants at once (no login page) and redirects to `redirect_uri?code=…&state=…`.
async fn oauth_authorize(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let redirect_uri = get("redirect_uri");
    let Ok(mut target) = url::Url::parse(redirect_uri) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri is not a URL").into_response();
    };
    if get("response_type") != "code" {
        return (StatusCode::BAD_REQUEST, "response_type must be code").into_response();
    }
    let Some(code) = s.oauth().authorize(get("client_id"), redirect_uri) else {
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    };
    target.query_pairs_mut().append_pair("code", &code);
    if let Some(state) = q.get("state") {
        target.query_pairs_mut().append_pair("state", state);
    }
    (StatusCode::FOUND, [(LOCATION, target.to_string())]).into_response()
}

async fn unknown(State(s): State<AppState>, headers: HeaderMap) -> Response {
    s.handle(Endpoint::Unknown, &headers, "", None).await
}

fn router(shared: AppState) -> Router {
    Router::new()
        .route("/v2/audit/logs", get(audit_logs))
        .route("/v2/orgs/{org_id}/content-logs/items", get(content_logs))
        .route(
            "/v2/orgs/{org_id}/ai-interaction-logs",
            get(ai_interaction_logs),
        )
        .route("/v1/oauth-token", get(oauth_token))
        .route("/v1/oauth/token", post(oauth_grant))
        .route("/oauth/authorize", get(oauth_authorize))
        .fallback(unknown)
        .with_state(shared)
}

/// Starts emulators; see [`MiroEmulator::start`].
#[derive(Debug)]
pub struct MiroEmulator;

impl MiroEmulator {
    /// Binds `listen` (port 0 picks a free port) and serves on the current tokio runtime
    /// until [`MiroEmulatorHandle::shutdown`].
    pub async fn start(
        config: MiroEmulatorConfig,
        listen: SocketAddr,
    ) -> std::io::Result<MiroEmulatorHandle> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(&config));
        let app = router(shared.clone());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(error) = served {
                warn!(%error, "miro emulator stopped with an error");
            }
        });
        debug!(%addr, "miro emulator listening");
        Ok(MiroEmulatorHandle {
            shared,
            addr,
            stop: Arc::new(Mutex::new(Some(stop_tx))),
            task: Arc::new(Mutex::new(Some(task))),
        })
    }
}

/// Length of the cursor handed out by [`MiroEmulatorHandle::hand_out_oversized_cursors`].
pub const OVERSIZED_CURSOR_CHARS: usize = 100_000;

/// A cursor of [`OVERSIZED_CURSOR_CHARS`] characters starting with the real one.
fn oversized_cursor(real: &str) -> String {
    let mut c = String::with_capacity(OVERSIZED_CURSOR_CHARS);
    c.push_str(real);
    while c.len() < OVERSIZED_CURSOR_CHARS {
        c.push('0');
    }
    c
}

/// Controls a running emulator. Clones share the same server.
#[derive(Clone)]
pub struct MiroEmulatorHandle {
    shared: AppState,
    addr: SocketAddr,
    stop: Arc<Mutex<Option<oneshot::Sender<()>>>>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for MiroEmulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiroEmulatorHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MiroEmulatorHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (a wildcard listen address is replaced by loopback).
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    pub fn org(&self) -> Arc<MiroOrg> {
        self.shared.org.clone()
    }

    pub fn stats(&self) -> EmulatorStats {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Later requests with `token` get 401.
    pub fn revoke_token(&self, token: &str) {
        self.shared
            .revoked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_owned());
    }

    /// Another client of the same user and app spends `token`'s whole credit budget and
    /// keeps it spent until `until` (Miro's budget is per user per app): until then every
    /// call with `token` gets 429 with `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset`
    /// at `until` (`Retry-After` as well when the rate limit sends it), and is not
    /// charged. Other tokens keep their own budgets.
    pub fn exhaust_credits(&self, token: &str, until: UnixMs) {
        self.shared.credits.exhaust(token, until);
    }

    pub fn set_enterprise_guard(&self, on: bool) {
        self.shared.enterprise_guard.store(on, Ordering::Relaxed);
    }

    pub fn set_faults(&self, faults: Faults) {
        *self
            .shared
            .faults
            .write()
            .unwrap_or_else(|e| e.into_inner()) = faults;
    }

    /// The next `pages` pages that have a next page hand out a cursor of
    /// [`OVERSIZED_CURSOR_CHARS`] characters instead of their own: too long to fit in a
    /// request URL, so a client cannot send it back (Miro documents no cursor length).
    pub fn hand_out_oversized_cursors(&self, pages: u64) {
        self.shared
            .oversized_cursors
            .store(pages, Ordering::Relaxed);
    }

    /// Serves `fault` instead of every 200 log page from now on (`None`: normal pages).
    pub fn set_body_fault(&self, fault: Option<BodyFault>) {
        *self
            .shared
            .body_fault
            .write()
            .unwrap_or_else(|e| e.into_inner()) = fault;
    }

    /// Tests: assemble pages from the `Value` oracle (`org/oracle.rs`) instead of
    /// writing items straight into the body.
    #[cfg(test)]
    pub(super) fn serve_from_value_oracle(&self) {
        self.shared.value_oracle.store(true, Ordering::Relaxed);
    }

    /// Turns on the OAuth endpoints for `app` (expiring access tokens, rotating refresh
    /// tokens, authorisation codes).
    pub fn enable_oauth(&self, app: OAuthApp) {
        self.shared.oauth().enable(app);
    }

    /// A fresh refresh token, as if a user had just authorised the app.
    pub fn issue_refresh_token(&self) -> String {
        self.shared.oauth().issue_refresh_token()
    }

    pub fn oauth_stats(&self) -> OAuthStats {
        self.shared.oauth().stats.clone()
    }

    /// Stops accepting, lets requests in flight finish (at most 5 s), then stops.
    pub async fn shutdown(self) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = stop.send(());
        }
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut task) = task
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}
