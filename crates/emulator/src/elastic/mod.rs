//! The Elasticsearch / OpenSearch emulator: `GET /` (cluster information), `POST /_bulk`
//! and `POST /_security/user/_has_privileges`, on one loopback port, faithful to
//! mirotrail's `docs/elasticsearch.md`.
//!
//! It checks what the cluster checks, in its order: the credential (`ApiKey` or `Basic`;
//! 401 `security_exception` otherwise), the request size (413 above
//! `max_content_length`), the NDJSON body (a final newline, one action object per
//! action line, a source line after `create` and `index`), then each action alone:
//! `create` stores a document under its `_id` or answers 409
//! `version_conflict_engine_exception` when that `_id` is taken in that target; a data
//! stream target (a name matching `logs-*-*`) takes only `create` and a document with
//! `@timestamp`. Each item's result is in request order, with `errors` true when any
//! failed. Faults: whole requests answered 503, items refused with 429
//! `es_rejected_execution_exception`, a mapping error (400 `mapper_parsing_exception`)
//! for chosen `_id`s, and answers lost on the wire (the documents stored, the connection
//! closed).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::azure::http::{self, Reply, Request, Response};

/// Injected faults.
#[derive(Debug, Clone, Default)]
pub struct ElasticFaults {
    /// Share of `_bulk` requests answered 503 as a whole (nothing stored).
    pub busy_share: f64,
    /// Share of items refused with 429 `es_rejected_execution_exception` (not stored).
    pub item_reject_share: f64,
    /// Share of `_bulk` requests whose answer is lost: documents stored, connection closed.
    pub lost_response_share: f64,
    /// `_id`s whose document fails to map (400 `mapper_parsing_exception`), every time.
    pub mapping_error_ids: Vec<String>,
}

/// What the emulated cluster looks like.
#[derive(Debug, Clone)]
pub struct ElasticEmulatorConfig {
    /// The accepted API key (the `encoded` form sent after `ApiKey `).
    pub api_key: String,
    /// An accepted user and password (basic authentication).
    pub user: (String, String),
    /// Whether the credentials hold `create_doc` on every target.
    pub create_doc: bool,
    /// Bodies above this many bytes (as sent, compressed or not) are refused with 413.
    pub max_content_length: usize,
    /// `elasticsearch` or `opensearch` (OpenSearch has no `_security/user/_has_privileges`).
    pub distribution: String,
    pub faults: ElasticFaults,
}

impl Default for ElasticEmulatorConfig {
    fn default() -> Self {
        ElasticEmulatorConfig {
            api_key: "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==".into(),
            user: ("elastic".into(), "emulator-password".into()),
            create_doc: true,
            max_content_length: 100 * 1024 * 1024,
            distribution: "elasticsearch".into(),
            faults: ElasticFaults::default(),
        }
    }
}

/// What the emulator saw (`emulate elasticsearch --stats-out` writes it as JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ElasticStats {
    /// `_bulk` requests by the status answered (lost answers not included).
    pub bulk_by_status: BTreeMap<u16, u64>,
    /// Items by their own status.
    pub items_by_status: BTreeMap<u16, u64>,
    pub lost_responses: u64,
    pub gzip_requests: u64,
}

impl ElasticStats {
    pub fn items(&self, status: u16) -> u64 {
        self.items_by_status.get(&status).copied().unwrap_or(0)
    }
}

#[derive(Debug)]
struct State {
    config: ElasticEmulatorConfig,
    /// Target -> `_id` -> document.
    targets: HashMap<String, HashMap<String, Value>>,
    /// Every stored document as (target, `_id`, document), in storing order.
    stored: Vec<(String, String, Value)>,
    stats: ElasticStats,
}

type Shared = Arc<Mutex<State>>;

/// The emulator.
#[derive(Debug)]
pub struct ElasticEmulator;

/// A running emulator.
#[derive(Debug)]
pub struct ElasticEmulatorHandle {
    server: http::Running<State>,
}

impl ElasticEmulator {
    /// Listens on `addr` (port 0: any free port) and serves until shut down.
    pub async fn start(
        config: ElasticEmulatorConfig,
        addr: SocketAddr,
    ) -> std::io::Result<ElasticEmulatorHandle> {
        let state = State {
            config,
            targets: HashMap::new(),
            stored: Vec::new(),
            stats: ElasticStats::default(),
        };
        let server = http::start(addr, state, |state, request| async move {
            route(&state, &request)
        })
        .await?;
        Ok(ElasticEmulatorHandle { server })
    }
}

impl ElasticEmulatorHandle {
    /// `http://127.0.0.1:PORT` (an emulator bound to every interface is reached on loopback).
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Every stored document as (target, `_id`, document), in storing order.
    pub fn stored(&self) -> Vec<(String, String, Value)> {
        self.server.lock().stored.clone()
    }

    pub fn stats(&self) -> ElasticStats {
        self.server.lock().stats.clone()
    }

    pub fn set_faults(&self, faults: ElasticFaults) {
        self.server.lock().config.faults = faults;
    }

    /// Stops serving and closes every connection.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// Elasticsearch's error body: `{"error":{"root_cause":[..],"type","reason"},"status"}`.
fn error(status: u16, kind: &str, reason: &str) -> Response {
    let cause = json!({"type": kind, "reason": reason});
    Response::json(
        status,
        &json!({"error": {"root_cause": [cause], "type": kind, "reason": reason}, "status": status}),
    )
}

fn route(state: &Shared, request: &Request) -> Reply {
    let mut s = state.lock().expect("emulator state");
    if let Err(r) = authorize(&s.config, request) {
        return Reply::Respond(r);
    }
    let path = request.path.trim_end_matches('/');
    match (request.method.as_str(), path) {
        ("GET" | "HEAD", "") => Reply::Respond(Response::json(
            200,
            &json!({
                "name": "emulator-node-1",
                "cluster_name": "mirotrail-emulator",
                "version": {
                    "distribution": s.config.distribution,
                    "number": if s.config.distribution == "opensearch" { "2.13.0" } else { "8.13.4" }
                },
                "tagline": "You Know, for Search"
            }),
        )),
        ("POST" | "PUT", "/_bulk") => {
            let reply = bulk(&mut s, request);
            if let Reply::Respond(r) = &reply {
                *s.stats.bulk_by_status.entry(r.status).or_default() += 1;
            }
            reply
        }
        ("GET" | "POST", "/_security/user/_has_privileges")
            if s.config.distribution != "opensearch" =>
        {
            Reply::Respond(has_privileges(&s.config, request))
        }
        _ => Reply::Respond(error(
            400,
            "illegal_argument_exception",
            &format!(
                "request [{}] contains unrecognized parameter or path: [{}]",
                request.method, request.path
            ),
        )),
    }
}

fn authorize(config: &ElasticEmulatorConfig, request: &Request) -> Result<(), Response> {
    let basic = format!(
        "Basic {}",
        base64(format!("{}:{}", config.user.0, config.user.1).as_bytes())
    );
    let ok = match request.header("authorization") {
        Some(v) => {
            v.strip_prefix("ApiKey ").map(str::trim) == Some(config.api_key.as_str())
                || v.trim() == basic
        }
        None => false,
    };
    if ok {
        return Ok(());
    }
    let reason = if request.header("authorization").is_some() {
        "unable to authenticate with provided credentials and anonymous access is not allowed for this request"
    } else {
        "missing authentication credentials for REST request"
    };
    Err(error(401, "security_exception", reason)
        .with_header(
            "WWW-Authenticate",
            "Basic realm=\"security\", charset=\"UTF-8\"",
        )
        .with_header("WWW-Authenticate", "ApiKey"))
}

fn has_privileges(config: &ElasticEmulatorConfig, request: &Request) -> Response {
    let ask: Value = serde_json::from_slice(&request.body).unwrap_or_default();
    let mut index = serde_json::Map::new();
    for entry in ask["index"].as_array().into_iter().flatten() {
        for name in entry["names"].as_array().into_iter().flatten() {
            let mut privileges = serde_json::Map::new();
            for p in entry["privileges"].as_array().into_iter().flatten() {
                if let Some(p) = p.as_str() {
                    privileges.insert(p.into(), Value::Bool(config.create_doc));
                }
            }
            if let Some(n) = name.as_str() {
                index.insert(n.into(), Value::Object(privileges));
            }
        }
    }
    Response::json(
        200,
        &json!({
            "username": config.user.0,
            "has_all_requested": config.create_doc,
            "cluster": {},
            "index": index,
            "application": {}
        }),
    )
}

/// A target name matching the built-in `logs-*-*` data stream template.
fn is_data_stream(target: &str) -> bool {
    target
        .strip_prefix("logs-")
        .is_some_and(|rest| rest.contains('-'))
}

fn bulk(s: &mut State, request: &Request) -> Reply {
    let faults = s.config.faults.clone();
    if request.body.len() > s.config.max_content_length {
        return Reply::Respond(Response::empty(413));
    }
    match request.header("content-type") {
        Some(t) if t.starts_with("application/x-ndjson") || t.starts_with("application/json") => {}
        other => {
            return Reply::Respond(error(
                406,
                "media_type_header_exception",
                &format!(
                    "Content-Type header [{}] is not supported",
                    other.unwrap_or("")
                ),
            ));
        }
    }
    let body = match request.header("content-encoding") {
        Some(e) if e.eq_ignore_ascii_case("gzip") => {
            s.stats.gzip_requests += 1;
            let mut out = Vec::new();
            if flate2::read::GzDecoder::new(&request.body[..])
                .read_to_end(&mut out)
                .is_err()
            {
                return Reply::Respond(error(
                    400,
                    "parse_exception",
                    "request body is not valid gzip",
                ));
            }
            out
        }
        _ => request.body.clone(),
    };
    if body.is_empty() {
        return Reply::Respond(error(
            400,
            "action_request_validation_exception",
            "Validation Failed: 1: no requests added;",
        ));
    }
    if body.last() != Some(&b'\n') {
        return Reply::Respond(error(
            400,
            "illegal_argument_exception",
            "The bulk request must be terminated by a newline [\\n]",
        ));
    }
    if crate::azure::chance(faults.busy_share) {
        return Reply::Respond(error(
            503,
            "cluster_block_exception",
            "blocked by: [SERVICE_UNAVAILABLE/2/no master];",
        ));
    }
    let text = match std::str::from_utf8(&body) {
        Ok(t) => t,
        Err(_) => return Reply::Respond(error(400, "parse_exception", "body is not UTF-8")),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    // Parse every action first: a malformed action line fails the whole request.
    let mut actions = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Ok(Value::Object(action)) = serde_json::from_str::<Value>(lines[i]) else {
            return Reply::Respond(error(
                400,
                "x_content_parse_exception",
                &format!(
                    "[{}:1] Malformed action/metadata line [{}], expected START_OBJECT",
                    i + 1,
                    i + 1
                ),
            ));
        };
        let Some((op, meta)) = action.into_iter().next() else {
            return Reply::Respond(error(
                400,
                "illegal_argument_exception",
                "Malformed action/metadata line, expected FIELD_NAME",
            ));
        };
        let needs_source = matches!(op.as_str(), "create" | "index" | "update");
        if !matches!(op.as_str(), "create" | "index" | "update" | "delete") {
            return Reply::Respond(error(
                400,
                "illegal_argument_exception",
                &format!(
                    "Malformed action/metadata line [{}], expected one of [create, delete, index, update] but found [{op}]",
                    i + 1
                ),
            ));
        }
        let source = if needs_source {
            i += 1;
            match lines.get(i) {
                Some(l) => Some(*l),
                None => {
                    return Reply::Respond(error(
                        400,
                        "illegal_argument_exception",
                        "The bulk request must be terminated by a newline [\\n]",
                    ));
                }
            }
        } else {
            None
        };
        let Some(index) = meta
            .get("_index")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return Reply::Respond(error(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: index is missing;",
            ));
        };
        actions.push((
            op,
            index,
            meta.get("_id").and_then(Value::as_str).map(str::to_string),
            source,
        ));
        i += 1;
    }
    let mut items = Vec::new();
    let mut errors = false;
    for (op, index, id, source) in actions {
        let (status, result) = item(s, &faults, &op, &index, id.as_deref(), source);
        *s.stats.items_by_status.entry(status).or_default() += 1;
        errors |= status >= 300;
        let mut r = json!({"_index": index, "status": status});
        if let Some(id) = &id {
            r["_id"] = Value::String(id.clone());
        }
        match result {
            Ok(()) => {
                r["result"] = "created".into();
                r["_version"] = 1.into();
                r["_shards"] = json!({"total": 1, "successful": 1, "failed": 0});
            }
            Err(e) => r["error"] = e,
        }
        let mut entry = serde_json::Map::new();
        entry.insert(op, r);
        items.push(Value::Object(entry));
    }
    if crate::azure::chance(faults.lost_response_share) {
        s.stats.lost_responses += 1;
        return Reply::Drop;
    }
    Reply::Respond(Response::json(
        200,
        &json!({"took": 1, "errors": errors, "items": items}),
    ))
}

/// One action: its status and the stored result or the error object.
fn item(
    s: &mut State,
    faults: &ElasticFaults,
    op: &str,
    index: &str,
    id: Option<&str>,
    source: Option<&str>,
) -> (u16, Result<(), Value>) {
    let err = |kind: &str, reason: String| json!({"type": kind, "reason": reason, "index": index});
    if !s.config.create_doc {
        return (
            403,
            Err(err(
                "security_exception",
                format!(
                    "action [indices:data/write/bulk[s]] is unauthorized for user [{}] on indices [{index}]",
                    s.config.user.0
                ),
            )),
        );
    }
    if op != "create" && is_data_stream(index) {
        return (
            400,
            Err(err(
                "illegal_argument_exception",
                "only write ops with an op_type of create are allowed in data streams".to_string(),
            )),
        );
    }
    if op != "create" && op != "index" {
        return (
            400,
            Err(err(
                "illegal_argument_exception",
                format!("the emulator does not implement [{op}]"),
            )),
        );
    }
    if crate::azure::chance(faults.item_reject_share) {
        return (
            429,
            Err(err(
                "es_rejected_execution_exception",
                "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, max_coordinating_and_primary_bytes=0]".into(),
            )),
        );
    }
    let Ok(Value::Object(doc)) = serde_json::from_str::<Value>(source.unwrap_or_default()) else {
        return (
            400,
            Err(err("mapper_parsing_exception", "failed to parse".into())),
        );
    };
    if id.is_some_and(|id| faults.mapping_error_ids.iter().any(|m| m == id)) {
        return (
            400,
            Err(err(
                "mapper_parsing_exception",
                "failed to parse field [miro.details] of type [flattened] in document".into(),
            )),
        );
    }
    if is_data_stream(index) && !doc.contains_key("@timestamp") {
        return (
            400,
            Err(err(
                "document_parsing_exception",
                "data stream timestamp field [@timestamp] is missing".into(),
            )),
        );
    }
    let id = id.map_or_else(|| format!("auto-{}", s.stored.len()), str::to_string);
    let target = s.targets.entry(index.to_string()).or_default();
    if op == "create" && target.contains_key(&id) {
        return (
            409,
            Err(err(
                "version_conflict_engine_exception",
                format!("[{id}]: version conflict, document already exists (current version [1])"),
            )),
        );
    }
    let doc = Value::Object(doc);
    target.insert(id.clone(), doc.clone());
    s.stored.push((index.to_string(), id, doc));
    (201, Ok(()))
}

/// Standard base64 with padding (the `Basic` credential).
fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests;
