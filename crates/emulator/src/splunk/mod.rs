//! The Splunk HTTP Event Collector (HEC) emulator: the event endpoint, indexer
//! acknowledgement (channels and `/services/collector/ack`) and the health endpoint, on one
//! loopback port, faithful to mirotrail's `docs/splunk-hec.md`.
//!
//! It checks what HEC checks, in its order (the token and its scheme, the token being
//! enabled, the channel when the token uses indexer acknowledgement, a body, each event's
//! JSON, its `event` field and its index), answers with HEC's status codes and
//! `{"text","code"}` bodies (`invalid-event-number` for a refused event; the events before
//! it are indexed, as HEC does), numbers each channel's requests with `ackId`s from 0, and
//! forgets an acknowledgement once it has reported it `true`. Faults: a busy server (503,
//! code 9), acknowledgements lost on the wire (events indexed, connection closed), batches
//! accepted but never indexed (their `ackId` never turns `true`), slow indexing, and
//! refused events.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::azure::http::{self, Reply, Request, Response};

/// HEC's status codes (the `code` of every answer).
pub mod code {
    pub const SUCCESS: u64 = 0;
    pub const TOKEN_DISABLED: u64 = 1;
    pub const TOKEN_REQUIRED: u64 = 2;
    pub const INVALID_AUTHORIZATION: u64 = 3;
    pub const INVALID_TOKEN: u64 = 4;
    pub const NO_DATA: u64 = 5;
    pub const INVALID_DATA_FORMAT: u64 = 6;
    pub const INCORRECT_INDEX: u64 = 7;
    pub const INTERNAL_ERROR: u64 = 8;
    pub const SERVER_BUSY: u64 = 9;
    pub const CHANNEL_MISSING: u64 = 10;
    pub const INVALID_CHANNEL: u64 = 11;
    pub const EVENT_REQUIRED: u64 = 12;
    pub const EVENT_BLANK: u64 = 13;
    pub const ACK_DISABLED: u64 = 14;
    pub const HEALTHY: u64 = 17;
    pub const UNHEALTHY_QUEUES_FULL: u64 = 18;
}

/// Injected faults (shares are probabilities per event request).
#[derive(Debug, Clone)]
pub struct SplunkFaults {
    /// Answer 503 `Server is busy` (code 9); nothing is indexed.
    pub busy_share: f64,
    /// Index the events, then close the connection without an answer.
    pub lost_ack_share: f64,
    /// Answer 200 with an `ackId` but never index the events: the ack stays `false`.
    pub never_indexed_share: f64,
    /// Events become indexed (their ack `true`) this long after they were accepted.
    pub index_delay: Duration,
    /// Refuse (400, code 6, `invalid-event-number`) an event whose `event.id` is listed.
    pub reject_ids: Vec<String>,
    /// The health endpoint answers 503 (queues full) and every event request 503 code 9.
    pub unhealthy: bool,
}

impl Default for SplunkFaults {
    fn default() -> Self {
        SplunkFaults {
            busy_share: 0.0,
            lost_ack_share: 0.0,
            never_indexed_share: 0.0,
            index_delay: Duration::ZERO,
            reject_ids: Vec::new(),
            unhealthy: false,
        }
    }
}

/// What the emulated HEC looks like (one token).
#[derive(Debug, Clone)]
pub struct SplunkEmulatorConfig {
    pub token: String,
    pub token_enabled: bool,
    /// Indexer acknowledgement enabled on the token.
    pub ack_enabled: bool,
    /// Indexes the token may write to; events without `index` go to `default_index`.
    pub indexes: Vec<String>,
    pub default_index: String,
    pub faults: SplunkFaults,
}

impl Default for SplunkEmulatorConfig {
    fn default() -> Self {
        SplunkEmulatorConfig {
            token: "00000000-5b1c-4e0a-9d3f-emulator0001".into(),
            token_enabled: true,
            ack_enabled: true,
            indexes: vec!["main".into(), "miro".into()],
            default_index: "main".into(),
            faults: SplunkFaults::default(),
        }
    }
}

/// What the emulator saw (`emulate splunk --stats-out` writes it as JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SplunkStats {
    /// Event requests by the status answered (lost acknowledgements not included).
    pub events_by_status: BTreeMap<u16, u64>,
    pub ack_queries: u64,
    pub events_indexed: u64,
    pub lost_acks: u64,
    pub never_indexed: u64,
    /// Requests whose body came gzip-compressed.
    pub gzip_requests: u64,
    /// Distinct channels seen.
    pub channels: u64,
}

impl SplunkStats {
    pub fn events(&self, status: u16) -> u64 {
        self.events_by_status.get(&status).copied().unwrap_or(0)
    }
}

/// One accepted request waiting to be indexed (and acknowledged).
#[derive(Debug)]
struct Pending {
    events: Vec<Value>,
    /// When it becomes indexed; `None`: never.
    at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Channel {
    next_ack: u64,
    pending: HashMap<u64, Pending>,
    /// Indexed, not yet reported `true`.
    indexed: HashSet<u64>,
}

#[derive(Debug)]
struct State {
    config: SplunkEmulatorConfig,
    channels: HashMap<String, Channel>,
    indexed: Vec<Value>,
    stats: SplunkStats,
}

type Shared = Arc<Mutex<State>>;

/// The emulator.
#[derive(Debug)]
pub struct SplunkEmulator;

/// A running emulator.
#[derive(Debug)]
pub struct SplunkEmulatorHandle {
    server: http::Running<State>,
}

impl SplunkEmulator {
    /// Listens on `addr` (port 0: any free port) and serves until shut down.
    pub async fn start(
        config: SplunkEmulatorConfig,
        addr: SocketAddr,
    ) -> std::io::Result<SplunkEmulatorHandle> {
        let state = State {
            config,
            channels: HashMap::new(),
            indexed: Vec::new(),
            stats: SplunkStats::default(),
        };
        let server = http::start(addr, state, |state, request| async move {
            route(&state, &request)
        })
        .await?;
        Ok(SplunkEmulatorHandle { server })
    }
}

impl SplunkEmulatorHandle {
    /// `http://127.0.0.1:PORT` (an emulator bound to every interface is reached on loopback).
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Every indexed event envelope (`time`, `host`, `source`, `sourcetype`, `index`,
    /// `event`), in indexing order.
    pub fn indexed(&self) -> Vec<Value> {
        let mut state = self.server.lock();
        settle(&mut state);
        state.indexed.clone()
    }

    pub fn stats(&self) -> SplunkStats {
        self.server.lock().stats.clone()
    }

    pub fn set_faults(&self, faults: SplunkFaults) {
        self.server.lock().config.faults = faults;
    }

    pub fn set_token_enabled(&self, enabled: bool) {
        self.server.lock().config.token_enabled = enabled;
    }

    /// Stops serving and closes every connection.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// HEC's answer body.
fn answer(status: u16, code: u64, text: &str) -> Response {
    Response::json(status, &json!({"text": text, "code": code}))
}

fn event_error(code: u64, text: &str, number: usize) -> Response {
    Response::json(
        400,
        &json!({"text": text, "code": code, "invalid-event-number": number}),
    )
}

fn route(state: &Shared, request: &Request) -> Reply {
    let path = request.path.trim_end_matches('/');
    match (request.method.as_str(), path) {
        ("GET", "/services/collector/health" | "/services/collector/health/1.0") => {
            let s = state.lock().expect("emulator state");
            Reply::Respond(if s.config.faults.unhealthy {
                answer(
                    503,
                    code::UNHEALTHY_QUEUES_FULL,
                    "HEC is unhealthy, queues are full",
                )
            } else {
                answer(200, code::HEALTHY, "HEC is healthy")
            })
        }
        ("POST", "/services/collector" | "/services/collector/event")
        | ("POST", "/services/collector/event/1.0") => {
            let reply = event(state, request);
            let mut s = state.lock().expect("emulator state");
            if let Reply::Respond(r) = &reply {
                *s.stats.events_by_status.entry(r.status).or_default() += 1;
            }
            reply
        }
        ("POST", "/services/collector/ack" | "/services/collector/ack/1.0") => {
            Reply::Respond(ack(state, request))
        }
        _ => Reply::Respond(Response::json(
            404,
            &json!({"text": "The requested URL was not found on this server.", "code": 404}),
        )),
    }
}

/// The token check HEC makes first: `Authorization: Splunk <token>`.
fn authorize(state: &State, request: &Request) -> Result<(), Response> {
    let Some(value) = request.header("authorization") else {
        return Err(answer(401, code::TOKEN_REQUIRED, "Token is required"));
    };
    let Some(token) = value.strip_prefix("Splunk ") else {
        return Err(answer(
            401,
            code::INVALID_AUTHORIZATION,
            "Invalid authorization",
        ));
    };
    if token.trim() != state.config.token {
        return Err(answer(403, code::INVALID_TOKEN, "Invalid token"));
    }
    if !state.config.token_enabled {
        return Err(answer(403, code::TOKEN_DISABLED, "Token disabled"));
    }
    Ok(())
}

/// The request's channel (header, else `channel` query parameter), when the token uses
/// indexer acknowledgement.
fn channel(request: &Request) -> Result<String, Response> {
    let Some(text) = request
        .header("x-splunk-request-channel")
        .or_else(|| request.query("channel"))
    else {
        return Err(answer(
            400,
            code::CHANNEL_MISSING,
            "Data channel is missing",
        ));
    };
    if !is_guid(text) {
        return Err(answer(400, code::INVALID_CHANNEL, "Invalid data channel"));
    }
    Ok(text.to_ascii_lowercase())
}

fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn event(state: &Shared, request: &Request) -> Reply {
    let mut s = state.lock().expect("emulator state");
    if let Err(r) = authorize(&s, request) {
        return Reply::Respond(r);
    }
    let channel = if s.config.ack_enabled {
        match channel(request) {
            Ok(c) => Some(c),
            Err(r) => return Reply::Respond(r),
        }
    } else {
        None
    };
    let faults = s.config.faults.clone();
    if faults.unhealthy || crate::azure::chance(faults.busy_share) {
        return Reply::Respond(answer(503, code::SERVER_BUSY, "Server is busy"));
    }
    let body = match request.header("content-encoding") {
        Some(e) if e.eq_ignore_ascii_case("gzip") => {
            s.stats.gzip_requests += 1;
            let mut out = Vec::new();
            if flate2::read::GzDecoder::new(&request.body[..])
                .read_to_end(&mut out)
                .is_err()
            {
                return Reply::Respond(event_error(
                    code::INVALID_DATA_FORMAT,
                    "Invalid data format",
                    0,
                ));
            }
            out
        }
        _ => request.body.clone(),
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Reply::Respond(answer(400, code::NO_DATA, "No data"));
    }
    // Concatenated JSON objects; each is checked in turn, and those before a refused one
    // are indexed (HEC processes a batch in order and stops at the first bad event).
    let mut accepted = Vec::new();
    let mut refused = None;
    for (number, item) in serde_json::Deserializer::from_slice(&body)
        .into_iter::<Value>()
        .enumerate()
    {
        let verdict = match item {
            Ok(Value::Object(mut envelope)) => match envelope.get("event") {
                None => Err((code::EVENT_REQUIRED, "Event field is required")),
                Some(Value::Null) => Err((code::EVENT_BLANK, "Event field cannot be blank")),
                Some(Value::String(t)) if t.is_empty() => {
                    Err((code::EVENT_BLANK, "Event field cannot be blank"))
                }
                Some(e)
                    if e.get("id")
                        .and_then(Value::as_str)
                        .is_some_and(|id| faults.reject_ids.iter().any(|r| r == id)) =>
                {
                    Err((code::INVALID_DATA_FORMAT, "Invalid data format"))
                }
                Some(_) => {
                    let index = envelope
                        .get("index")
                        .and_then(Value::as_str)
                        .unwrap_or(&s.config.default_index)
                        .to_string();
                    if s.config.indexes.contains(&index) {
                        envelope.insert("index".into(), Value::String(index));
                        Ok(Value::Object(envelope))
                    } else {
                        Err((code::INCORRECT_INDEX, "Incorrect index"))
                    }
                }
            },
            _ => Err((code::INVALID_DATA_FORMAT, "Invalid data format")),
        };
        match verdict {
            Ok(e) => accepted.push(e),
            Err((code, text)) => {
                refused = Some((code, text, number));
                break;
            }
        }
    }
    if let Some((code, text, number)) = refused {
        s.stats.events_indexed += accepted.len() as u64;
        s.indexed.extend(accepted);
        return Reply::Respond(event_error(code, text, number));
    }
    let Some(channel) = channel else {
        s.stats.events_indexed += accepted.len() as u64;
        s.indexed.extend(accepted);
        return respond_or_lose(&mut s, &faults, json!({"text": "Success", "code": 0}));
    };
    let never = crate::azure::chance(faults.never_indexed_share);
    if never {
        s.stats.never_indexed += 1;
    }
    let is_new = !s.channels.contains_key(&channel);
    if is_new {
        s.stats.channels += 1;
    }
    let ch = s.channels.entry(channel).or_default();
    let id = ch.next_ack;
    ch.next_ack += 1;
    ch.pending.insert(
        id,
        Pending {
            events: if never { Vec::new() } else { accepted },
            at: (!never).then(|| Instant::now() + faults.index_delay),
        },
    );
    settle(&mut s);
    respond_or_lose(
        &mut s,
        &faults,
        json!({"text": "Success", "code": code::SUCCESS, "ackId": id}),
    )
}

/// Answers, or (a lost acknowledgement) closes the connection with the work done.
fn respond_or_lose(s: &mut State, faults: &SplunkFaults, body: Value) -> Reply {
    if crate::azure::chance(faults.lost_ack_share) {
        s.stats.lost_acks += 1;
        return Reply::Drop;
    }
    Reply::Respond(Response::json(200, &body))
}

/// Indexes what is due.
fn settle(s: &mut State) {
    let now = Instant::now();
    let mut done = Vec::new();
    for ch in s.channels.values_mut() {
        let due: Vec<u64> = ch
            .pending
            .iter()
            .filter(|(_, p)| p.at.is_some_and(|at| at <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            let p = ch.pending.remove(&id).expect("due");
            done.extend(p.events);
            ch.indexed.insert(id);
        }
    }
    s.stats.events_indexed += done.len() as u64;
    s.indexed.extend(done);
}

fn ack(state: &Shared, request: &Request) -> Response {
    let mut s = state.lock().expect("emulator state");
    if let Err(r) = authorize(&s, request) {
        return r;
    }
    if !s.config.ack_enabled {
        return answer(400, code::ACK_DISABLED, "ACK is disabled");
    }
    let channel = match channel(request) {
        Ok(c) => c,
        Err(r) => return r,
    };
    s.stats.ack_queries += 1;
    let ids: Vec<u64> = match serde_json::from_slice::<Value>(&request.body) {
        Ok(v) => match v.get("acks").and_then(Value::as_array) {
            Some(items) => items.iter().filter_map(Value::as_u64).collect(),
            None => return answer(400, code::INVALID_DATA_FORMAT, "Invalid data format"),
        },
        Err(_) => return answer(400, code::INVALID_DATA_FORMAT, "Invalid data format"),
    };
    settle(&mut s);
    let mut acks = serde_json::Map::new();
    let ch = s.channels.entry(channel).or_default();
    for id in ids {
        // Reported `true` once, then forgotten: asking again gives `false`.
        let done = ch.indexed.remove(&id);
        acks.insert(id.to_string(), Value::Bool(done));
    }
    Response::json(200, &json!({ "acks": acks }))
}

#[cfg(test)]
mod tests;
