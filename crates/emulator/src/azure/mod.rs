//! The Azure emulator: Entra ID's token endpoint, the managed identity (IMDS) endpoint and
//! the Azure Monitor Logs Ingestion API, on one loopback port, faithful to
//! `docs/azure-logs-ingestion.md` and `docs/sentinel-contract.md`.
//!
//! It checks what Azure checks (bearer tokens and their expiry, DCR and stream, the role
//! assignment, the body limit, the stream declaration's columns), answers with Azure's
//! status codes and error shapes, applies the Sentinel DCR transformation
//! (`dcr`, from the contract) so its tables can be compared with the local store, and
//! injects faults: throttling, server errors, slow answers and lost acknowledgements
//! (rows stored, connection closed without an answer).

mod dcr;
mod entra;
pub(crate) mod http;
mod ingest;
mod records;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

pub use dcr::{Stream, kql_tostring};

/// The DCR immutable id the emulator gives the audit logs stream by default.
pub const AUDIT_DCR: &str = "dcr-a0d17000000000000000000000000001";
/// The DCR immutable id the emulator gives the content logs stream by default.
pub const CONTENT_DCR: &str = "dcr-c0e7e000000000000000000000000002";
/// The DCR immutable id the emulator gives the AI interaction logs stream by default.
pub const AI_DCR: &str = "dcr-a1a1a000000000000000000000000003";

/// Injected faults (shares are probabilities per ingestion request).
#[derive(Debug, Clone)]
pub struct AzureFaults {
    /// Answer 429 with `Retry-After: retry_after`.
    pub throttle_share: f64,
    pub retry_after: Duration,
    /// Answer 503.
    pub server_error_share: f64,
    /// Wait `slow_delay` before handling.
    pub slow_share: f64,
    pub slow_delay: Duration,
    /// Accept and store the rows, then close the connection without an answer.
    pub lost_ack_share: f64,
    /// Refuse (400) any batch holding a record with one of these `id`s.
    pub reject_ids: Vec<String>,
    /// When not 0, the Entra token endpoint answers 200 with a gzip bomb: a body of
    /// about 1 KB per MiB that decodes to this many MiB (`Content-Encoding: gzip`).
    pub token_gzip_bomb_mib: u64,
    /// When not 0, every upload is answered 503 with a gzip bomb decoding to this many
    /// MiB (`Content-Encoding: gzip`).
    pub error_gzip_bomb_mib: u64,
}

impl Default for AzureFaults {
    fn default() -> Self {
        AzureFaults {
            throttle_share: 0.0,
            retry_after: Duration::from_secs(1),
            server_error_share: 0.0,
            slow_share: 0.0,
            slow_delay: Duration::from_secs(2),
            lost_ack_share: 0.0,
            reject_ids: Vec::new(),
            token_gzip_bomb_mib: 0,
            error_gzip_bomb_mib: 0,
        }
    }
}

/// What the emulated tenant looks like.
#[derive(Debug, Clone)]
pub struct AzureEmulatorConfig {
    pub tenant_id: String,
    /// The app registration's client id (also the user-assigned managed identity's).
    pub client_id: String,
    pub client_secret: String,
    /// The accepted `client_assertion` (federated token), if any.
    pub federated_assertion: Option<String>,
    /// DCR immutable ids and the stream each declares.
    pub dcrs: Vec<(String, String)>,
    /// Whether the identity holds "Monitoring Metrics Publisher" on the DCRs.
    pub roles_granted: bool,
    pub token_lifetime: Duration,
    /// Largest uncompressed body accepted (Azure: 1 MB).
    pub max_body_bytes: usize,
    pub faults: AzureFaults,
    /// Keep the transformed rows (`rows()`); off for benchmarks of millions of records.
    pub keep_rows: bool,
    /// Record when each record was acknowledged (`acknowledged()`), for freshness figures.
    pub record_ack_times: bool,
}

impl Default for AzureEmulatorConfig {
    fn default() -> Self {
        AzureEmulatorConfig {
            tenant_id: "72f988bf-0000-4000-8000-000000000001".into(),
            client_id: "0c1a7e57-0000-4000-8000-000000000002".into(),
            client_secret: "emulator-client-secret".into(),
            federated_assertion: None,
            dcrs: vec![
                (AUDIT_DCR.into(), Stream::AuditLogs.name().into()),
                (CONTENT_DCR.into(), Stream::ContentLogs.name().into()),
                (AI_DCR.into(), Stream::AiInteractionLogs.name().into()),
            ],
            roles_granted: true,
            token_lifetime: Duration::from_secs(3599),
            max_body_bytes: 1024 * 1024,
            faults: AzureFaults::default(),
            keep_rows: true,
            record_ack_times: false,
        }
    }
}

/// What the emulator saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AzureStats {
    /// Ingestion requests by the status answered (lost acknowledgements not included).
    pub ingestion_by_status: BTreeMap<u16, u64>,
    /// Token requests (Entra and managed identity) by status.
    pub token_by_status: BTreeMap<u16, u64>,
    pub records_accepted: u64,
    /// Request bytes as received (gzip or plain).
    pub bytes_received: u64,
    /// Ingestion requests whose records were stored.
    pub batches_accepted: u64,
    /// The largest uncompressed ingestion body seen.
    pub max_body_bytes: u64,
    pub lost_acks: u64,
    /// Records in batches whose acknowledgement was lost.
    pub lost_ack_records: u64,
}

impl AzureStats {
    /// Ingestion requests answered with `status`.
    pub fn ingestion(&self, status: u16) -> u64 {
        self.ingestion_by_status.get(&status).copied().unwrap_or(0)
    }
}

#[derive(Debug)]
struct State {
    config: AzureEmulatorConfig,
    tokens: HashMap<String, Instant>,
    tables: BTreeMap<&'static str, Vec<Value>>,
    /// `(id, acknowledged at)` per record, when `record_ack_times` is on.
    acked: Vec<(String, crate::time::UnixMs)>,
    stats: AzureStats,
}

type Shared = Arc<Mutex<State>>;

/// The emulator.
#[derive(Debug)]
pub struct AzureEmulator;

/// A running emulator.
#[derive(Debug)]
pub struct AzureEmulatorHandle {
    server: http::Running<State>,
}

impl AzureEmulator {
    /// Listens on `addr` (port 0: any free port) and serves until `shutdown`.
    pub async fn start(
        config: AzureEmulatorConfig,
        addr: SocketAddr,
    ) -> std::io::Result<AzureEmulatorHandle> {
        let state = State {
            config,
            tokens: HashMap::new(),
            tables: BTreeMap::new(),
            acked: Vec::new(),
            stats: AzureStats::default(),
        };
        let server = http::start(addr, state, route).await?;
        Ok(AzureEmulatorHandle { server })
    }
}

async fn route(state: Shared, request: http::Request) -> http::Reply {
    let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
    match (request.method.as_str(), segments.as_slice()) {
        ("POST", [tenant, "oauth2", "v2.0", "token"]) => {
            let tenant = tenant.to_string();
            http::Reply::Respond(entra::token(&state, &tenant, &request))
        }
        ("GET", ["metadata", "identity", "oauth2", "token"]) => {
            http::Reply::Respond(entra::managed_identity(&state, &request))
        }
        ("POST", ["dataCollectionRules", dcr, "streams", stream]) => {
            let (dcr, stream) = (dcr.to_string(), stream.to_string());
            ingest::upload(&state, &dcr, &stream, &request).await
        }
        _ => http::Reply::Respond(ingest::error(
            404,
            "NotFound",
            &format!("no such endpoint: {} {}", request.method, request.path),
        )),
    }
}

impl AzureEmulatorHandle {
    /// `http://127.0.0.1:PORT`: the authority host, the managed identity host and the DCE.
    /// Bound to every interface (`0.0.0.0`, `::`), it is reached on loopback from this host.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The address it is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The rows of a Log Analytics table (`MiroAuditLogs_CL`, `MiroContentLogs_CL`) after
    /// the DCR transformation, in arrival order; see `table_row`.
    pub fn rows(&self, table: &str) -> Vec<Value> {
        let state = self.server.lock();
        state.tables.get(table).cloned().unwrap_or_default()
    }

    /// `(id, when)` of every record acknowledged (stored and answered 204), when
    /// `record_ack_times` is on.
    pub fn acknowledged(&self) -> Vec<(String, crate::time::UnixMs)> {
        self.server.lock().acked.clone()
    }

    pub fn stats(&self) -> AzureStats {
        self.server.lock().stats.clone()
    }

    pub fn set_faults(&self, faults: AzureFaults) {
        self.server.lock().config.faults = faults;
    }

    pub fn set_roles_granted(&self, granted: bool) {
        self.server.lock().config.roles_granted = granted;
    }

    /// Makes every token issued so far expired (the next ingestion with one gets a 401).
    pub fn expire_tokens(&self) {
        let mut state = self.server.lock();
        let now = Instant::now();
        for expiry in state.tokens.values_mut() {
            *expiry = now;
        }
    }

    /// Every access token issued so far (to check that none leaks into logs).
    pub fn issued_tokens(&self) -> Vec<String> {
        let state = self.server.lock();
        state.tokens.keys().cloned().collect()
    }

    /// Stops serving and closes every connection.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// A table row as the emulator stores it: `{column: text or null}` over the table's
/// columns, from cells in column order (as the local store holds them).
pub fn table_row(stream: Stream, cells: &[Option<String>]) -> Value {
    let mut row = Map::new();
    for (column, cell) in stream.table_columns().zip(cells) {
        row.insert(
            column.to_string(),
            cell.clone().map_or(Value::Null, Value::String),
        );
    }
    Value::Object(row)
}

/// True with probability `share`.
pub(crate) fn chance(share: f64) -> bool {
    share > 0.0 && rand::random::<f64>() < share
}
