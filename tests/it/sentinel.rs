//! The Sentinel sink against the Azure emulator: rows from a real store, delivered by the
//! real delivery loop over loopback HTTP, with faults injected on the Azure side.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mirotrail::config::{Config, SinkKindConfig, SourceKind};
use mirotrail::sink::sentinel::SentinelSink;
use mirotrail::sink::{
    AckLedger, Delivery, DeliveryMode, DeliveryReport, RowVerdict, Sink, SinkError, deliver,
};
use mirotrail::store::{Checkpoint, OutboxRow, Store, StoreHandle, transform};
use mirotrail::timefmt::UnixMs;
use mirotrail_emulator::azure::{
    AI_DCR, AUDIT_DCR, AzureEmulator, AzureEmulatorConfig, AzureEmulatorHandle, AzureFaults,
    CONTENT_DCR, table_row,
};
use serde_json::Value;
use tempfile::TempDir;

const SINK: &str = "sentinel";

struct World {
    dir: TempDir,
    store: Arc<Store>,
    azure: AzureEmulatorHandle,
    azure_config: AzureEmulatorConfig,
}

async fn world(azure_config: AzureEmulatorConfig) -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("m.db")).unwrap());
    let azure = AzureEmulator::start(azure_config.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    World {
        dir,
        store,
        azure,
        azure_config,
    }
}

/// An integer beyond 2^64, as Miro may send inside `details` or `state`.
const BIG: &str = "30744573469876543210123";

fn big_number() -> Value {
    serde_json::from_str(BIG).unwrap()
}

fn audit_item(i: usize, pad: usize) -> String {
    serde_json::json!({
        "id": format!("a{i:06}"), "type": "event", "event": "board_opened", "category": "boards",
        "createdAt": format!("2024-05-01T10:{:02}:{:02}.000+0000", i / 60 % 60, i % 60),
        "createdBy": {"type": "user", "id": format!("u{}", i % 7), "name": "User", "email": format!("u{}@example.com", i % 7)},
        "context": {"ip": "10.0.0.1", "team": {"type": "team", "id": "t1", "name": "Team"},
                    "organization": {"type": "organization", "id": "o1", "name": "Org"}},
        "details": {"role": "OWNER", "pad": "x".repeat(pad), "big": big_number()},
        "object": {"id": "b1", "name": "Board"},
        "somethingNew": 1
    })
    .to_string()
}

fn content_item(i: usize, pad: usize) -> String {
    serde_json::json!({
        "id": format!("c{i:06}"), "contentId": "b1", "actionType": "update",
        "actionTime": format!("2024-05-01T11:{:02}:{:02}.250Z", i / 60 % 60, i % 60),
        "actor": {"id": "u1", "email": "a@example.com"}, "itemType": "widget", "itemId": format!("w{i}"),
        "state": {"text": "y".repeat(pad), "big": big_number()}, "relationships": [{"type": "parent", "itemId": "f1"}],
        "organizationId": "o1"
    })
    .to_string()
}

/// An AI interaction log entry in Miro's documented shape, with a `#` in its id (ids are
/// opaque text), a `+0000` time and a number beyond 2^64 in `details`.
fn ai_item(i: usize, pad: usize) -> String {
    serde_json::json!({
        "id": format!("ai-{i:06}#x"),
        "createdAt": format!("2024-05-01T12:{:02}:{:02}.125+0000", i / 60 % 60, i % 60),
        "storedAt": format!("2024-05-01T12:{:02}:{:02}.900Z", i / 60 % 60, i % 60),
        "sessionId": format!("s{}", i / 4), "messageId": format!("m{}", i / 2),
        "aiFeatureName": "ai_generate_sticky_notes", "logType": "request",
        "object": {"id": "uXjVOD6LSME=", "type": "board"},
        "actor": {"id": "u1", "email": "a@example.com", "name": "A"},
        "details": {"prompt": "z".repeat(pad), "big": big_number()},
        "somethingNew": true
    })
    .to_string()
}

/// Commits raw items to the store the way the collector does, in pages.
fn commit(store: &Store, source: SourceKind, items: &[String]) {
    for page in items.chunks(500) {
        let rows: Vec<(transform::Row, &str)> = page
            .iter()
            .map(|raw| (transform::to_row(source, raw), raw.as_str()))
            .collect();
        let checkpoint = Checkpoint {
            source,
            watermark: UnixMs(0),
            watermark_polled: UnixMs(0),
            reread_through: None,
            window: None,
            pages_total: 0,
            requests_total: 0,
            last_success: None,
            last_error: None,
            last_error_at: None,
        };
        store.commit_page(source, &rows, &checkpoint).unwrap();
    }
}

fn fill(w: &World, source: SourceKind, n: usize, pad: usize) {
    let items: Vec<String> = (0..n)
        .map(|i| match source {
            SourceKind::AuditLogs => audit_item(i, pad),
            SourceKind::ContentLogs => content_item(i, pad),
            SourceKind::AiInteractionLogs => ai_item(i, pad),
        })
        .collect();
    commit(&w.store, source, &items);
}

fn stored(w: &World, source: SourceKind) -> Vec<OutboxRow> {
    w.store.read_outbox(source, 0, 1_000_000).unwrap()
}

/// The sink's config, through the real config file path. `extra` adds keys.
fn sink_config(w: &World, secret: &str, extra: &str) -> Config {
    let secret_file = w.dir.path().join("secret");
    std::fs::write(&secret_file, secret).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let text = format!(
        "[miro]\norg_id = \"1\"\n[sources.content_logs]\nenabled = true\n\
         [sinks.{SINK}]\ntype = \"azure_logs_ingestion\"\nendpoint = \"{base}\"\n\
         audit_logs_dcr = \"{AUDIT_DCR}\"\ncontent_logs_dcr = \"{CONTENT_DCR}\"\n\
         ai_interaction_logs_dcr = \"{AI_DCR}\"\n\
         authority_host = \"{base}\"\nrequest_timeout = \"20s\"\n{extra}",
        base = w.azure.base_url(),
    );
    let auth = if extra.contains("managed_identity") || extra.contains("federated_token_file") {
        String::new()
    } else {
        format!(
            "tenant_id = \"{}\"\nclient_id = \"{}\"\nclient_secret_file = \"secret\"\n",
            w.azure_config.tenant_id, w.azure_config.client_id
        )
    };
    // Also on disk, for the commands that read the store (`status`, `deadletter`).
    let file = w.dir.path().join("mirotrail.toml");
    std::fs::write(&file, format!("{text}{auth}\n[store]\npath = \"m.db\"\n")).unwrap();
    Config::from_toml(&format!("{text}{auth}"), &file).unwrap()
}

/// Runs the binary with the config written by `sink_config`; returns stdout.
async fn cli(w: &World, args: &[&str]) -> String {
    let file = w.dir.path().join("mirotrail.toml");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--config", file.to_str().unwrap()]);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mirotrail"))
        .args(&all)
        .current_dir(w.dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The dead-letter entries of the sink: (_seq, reason, attempts, requeued).
fn dead_letters(w: &World) -> Vec<(i64, String, i64, bool)> {
    let conn = rusqlite::Connection::open_with_flags(
        w.dir.path().join("m.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT seq, reason, attempts, requeued FROM dead_letters WHERE sink = ?1 ORDER BY seq",
        )
        .unwrap();
    stmt.query_map([SINK], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn sentinel(config: &Config) -> SentinelSink {
    match &config.sinks[0].kind {
        SinkKindConfig::Sentinel(c) => SentinelSink::new((**c).clone())
            .unwrap()
            .with_backoff_base(Duration::from_millis(5)),
        other => panic!("{other:?}"),
    }
}

/// A Sentinel sink with its own ack ledger, as the delivery task keeps one: `send` does
/// not hand over rows acknowledged before and returns the offset (the contiguous prefix
/// of rows acknowledged or refused for good).
struct Ledgered {
    sink: SentinelSink,
    ledger: AckLedger,
}

impl Ledgered {
    fn new(sink: SentinelSink) -> Self {
        Ledgered {
            sink,
            ledger: AckLedger::new(0, []),
        }
    }

    async fn send(&mut self, source: SourceKind, rows: &[OutboxRow]) -> Result<i64, SinkError> {
        self.ledger.read(rows.iter().map(|r| r.seq));
        let todo: Vec<OutboxRow> = rows
            .iter()
            .filter(|r| !self.ledger.is_acked(r.seq))
            .cloned()
            .collect();
        let ledger = &mut self.ledger;
        self.sink
            .send(source, &todo, &mut |verdict| {
                let (first, last) = match verdict {
                    RowVerdict::Acked { first, last } => (first, last),
                    RowVerdict::Rejected { seq, .. } => (seq, seq),
                };
                ledger.ack(first, last);
            })
            .await?;
        Ok(self.ledger.offset())
    }
}

async fn drain(w: &World, sink: SentinelSink, batch_rows: usize) -> DeliveryReport {
    let (_trigger, shutdown) = mirotrail::shutdown::channel();
    tokio::time::timeout(
        Duration::from_secs(120),
        deliver(
            Delivery {
                name: SINK.into(),
                sink: Box::new(sink),
                batch_rows,
                store: StoreHandle::new(w.store.clone()),
                sources: SourceKind::ALL.to_vec(),
                mode: DeliveryMode::Drain {
                    collectors_done: Arc::new(AtomicBool::new(true)),
                    retry_for: mirotrail::sink::DEFAULT_ONCE_RETRY_FOR,
                },
                new_rows: Arc::new(tokio::sync::Notify::new()),
                telemetry: None,
            },
            shutdown,
        ),
    )
    .await
    .expect("delivery finished in time")
    .unwrap()
}

/// 60 audit rows, ten records per chunk (four uploads in flight), and an emulator that
/// refuses every record of the 3rd chunk of 6 (`a000020`..`a000029`).
async fn refused_third_chunk() -> (World, Vec<OutboxRow>, Config) {
    let w = world(AzureEmulatorConfig {
        faults: AzureFaults {
            // Every record of the chunk: a refusal of the stream, not of one record
            // (a record refused alone while others pass is set aside instead).
            reject_ids: (20..30).map(|i| format!("a{i:06}")).collect(),
            ..AzureFaults::default()
        },
        ..AzureEmulatorConfig::default()
    })
    .await;
    fill(&w, SourceKind::AuditLogs, 60, 100);
    let rows = stored(&w, SourceKind::AuditLogs);
    let len = serde_json::to_vec(
        &mirotrail::sink::sentinel::stream_record(SourceKind::AuditLogs, &rows[0].raw).unwrap(),
    )
    .unwrap()
    .len();
    let config = sink_config(
        &w,
        &w.azure_config.client_secret,
        &format!(
            "max_batch_bytes = {}\nmax_concurrency = 4\n",
            2 + 10 * len + 9
        ),
    );
    (w, rows, config)
}

fn offset(w: &World, source: SourceKind) -> i64 {
    w.store.delivered_offset(SINK, source).unwrap()
}

/// Each row (as JSON text) with how often it occurs.
fn counted(rows: impl IntoIterator<Item = Value>) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in rows {
        *out.entry(r.to_string()).or_default() += 1;
    }
    out
}

fn local_rows(w: &World, source: SourceKind) -> HashMap<String, usize> {
    counted(
        stored(w, source)
            .iter()
            .map(|r| table_row(crate::support::stream(source), &r.cells(source))),
    )
}

fn azure_rows(w: &World, source: SourceKind) -> HashMap<String, usize> {
    counted(w.azure.rows(source.table()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_arrives_equal_to_the_local_cells() {
    let w = world(AzureEmulatorConfig::default()).await;
    fill(&w, SourceKind::AuditLogs, 1200, 200);
    fill(&w, SourceKind::ContentLogs, 300, 100);
    fill(&w, SourceKind::AiInteractionLogs, 200, 100);
    let config = sink_config(
        &w,
        &w.azure_config.client_secret,
        "max_batch_bytes = 50000\n",
    );
    let report = drain(&w, sentinel(&config), 500).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    for source in SourceKind::ALL {
        assert_eq!(azure_rows(&w, source), local_rows(&w, source), "{source}");
        assert_eq!(offset(&w, source), stored(&w, source).last().unwrap().seq);
        // Integers beyond 2^64 reach Azure digit for digit (they came out as 3.07e22).
        let column = match source {
            SourceKind::AuditLogs | SourceKind::AiInteractionLogs => "details",
            SourceKind::ContentLogs => "state",
        };
        for row in w.azure.rows(source.table()) {
            assert!(
                row[column].to_string().contains(&format!(":{BIG}")),
                "{row}"
            );
        }
    }
    let stats = w.azure.stats();
    assert!(stats.max_body_bytes <= 50_000, "{stats:?}");
    assert_eq!(stats.records_accepted, 1700);
    assert!(stats.bytes_received < 1700 * 200, "gzip: {stats:?}");
    w.azure.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_server_errors_and_expired_tokens_are_ridden_out() {
    let w = world(AzureEmulatorConfig {
        faults: AzureFaults {
            throttle_share: 0.2,
            server_error_share: 0.2,
            ..AzureFaults::default()
        },
        ..AzureEmulatorConfig::default()
    })
    .await;
    fill(&w, SourceKind::AuditLogs, 800, 300);
    let config = sink_config(
        &w,
        &w.azure_config.client_secret,
        "max_batch_bytes = 20000\n",
    );
    let report = drain(&w, sentinel(&config), 5000).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    // Tokens expire in Azure while the sink still holds one.
    w.azure.expire_tokens();
    commit(
        &w.store,
        SourceKind::AuditLogs,
        &(800..1000).map(|i| audit_item(i, 300)).collect::<Vec<_>>(),
    );
    let report = drain(&w, sentinel(&config), 5000).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    let stats = w.azure.stats();
    assert!(
        stats.ingestion(429) > 0 && stats.ingestion(503) > 0,
        "{stats:?}"
    );
    assert!(
        stats.ingestion(401) == 0,
        "a new sink fetches its own token: {stats:?}"
    );
    assert_eq!(
        azure_rows(&w, SourceKind::AuditLogs),
        local_rows(&w, SourceKind::AuditLogs)
    );
    w.azure.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expired_in_azure_is_renewed_once_on_401() {
    let w = world(AzureEmulatorConfig::default()).await;
    fill(&w, SourceKind::AuditLogs, 100, 10);
    let config = sink_config(&w, &w.azure_config.client_secret, "");
    let mut sink = Ledgered::new(sentinel(&config));
    let rows = stored(&w, SourceKind::AuditLogs);
    let acked = sink.send(SourceKind::AuditLogs, &rows[..50]).await.unwrap();
    assert_eq!(acked, rows[49].seq);
    w.azure.expire_tokens();
    let acked = sink.send(SourceKind::AuditLogs, &rows[50..]).await.unwrap();
    assert_eq!(acked, rows[99].seq);
    let stats = w.azure.stats();
    assert_eq!(stats.ingestion(401), 1, "{stats:?}");
    assert_eq!(stats.token_by_status.get(&200), Some(&2), "{stats:?}");
    assert_eq!(
        azure_rows(&w, SourceKind::AuditLogs),
        local_rows(&w, SourceKind::AuditLogs)
    );
    w.azure.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_over_the_azure_limit_are_split_on_413() {
    let w = world(AzureEmulatorConfig {
        max_body_bytes: 100_000,
        ..AzureEmulatorConfig::default()
    })
    .await;
    fill(&w, SourceKind::ContentLogs, 60, 30_000);
    let config = sink_config(&w, &w.azure_config.client_secret, "");
    let report = drain(&w, sentinel(&config), 5000).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    let stats = w.azure.stats();
    assert!(stats.ingestion(413) > 0, "{stats:?}");
    assert_eq!(
        azure_rows(&w, SourceKind::ContentLogs),
        local_rows(&w, SourceKind::ContentLogs),
        "every row once: a 413 stores nothing"
    );
    w.azure.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_never_exceed_one_mb() {
    let w = world(AzureEmulatorConfig::default()).await;
    fill(&w, SourceKind::AuditLogs, 3000, 2000);
    let config = sink_config(&w, &w.azure_config.client_secret, "");
    let report = drain(&w, sentinel(&config), 5000).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    let stats = w.azure.stats();
    assert!(stats.max_body_bytes <= 1_000_000, "{stats:?}");
    assert!(
        stats.max_body_bytes > 900_000,
        "chunks are filled: {stats:?}"
    );
    assert!(stats.batches_accepted >= 6, "{stats:?}");
    assert_eq!(stats.ingestion(413), 0, "{stats:?}");
    assert_eq!(stats.records_accepted, 3000);
    w.azure.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acknowledgements_duplicate_only_their_batches() {
    let w = world(AzureEmulatorConfig {
        faults: AzureFaults {
            lost_ack_share: 0.25,
            ..AzureFaults::default()
        },
        ..AzureEmulatorConfig::default()
    })
    .await;
    fill(&w, SourceKind::AuditLogs, 800, 300);
    let config = sink_config(
        &w,
        &w.azure_config.client_secret,
        "max_batch_bytes = 20000\n",
    );
    let report = drain(&w, sentinel(&config), 5000).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    let stats = w.azure.stats();
    assert!(stats.lost_acks > 0, "{stats:?}");
    let local = local_rows(&w, SourceKind::AuditLogs);
    let azure = azure_rows(&w, SourceKind::AuditLogs);
    assert_eq!(
        azure.keys().collect::<std::collections::BTreeSet<_>>(),
        local.keys().collect()
    );
    let extra: usize = azure.values().map(|n| n - 1).sum();
    assert_eq!(extra as u64, stats.lost_ack_records, "{stats:?}");
    w.azure.shutdown().await;
}

/// A 10 MB record can never be sent (Azure takes 1 MB per call). It used to stop
/// delivery at it for good; it is now set aside (dead letter) with the reason, in the same
/// transaction that lets the offset pass it, and everything after it is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10mb_record_is_set_aside_and_the_rest_is_delivered() {
    let w = world(AzureEmulatorConfig::default()).await;
    let mut items: Vec<String> = (0..10).map(|i| audit_item(i, 100)).collect();
    items.push(audit_item(10, 10_000_000));
    items.extend((11..21).map(|i| audit_item(i, 100)));
    commit(&w.store, SourceKind::AuditLogs, &items);
    let config = sink_config(&w, &w.azure_config.client_secret, "");
    let report = drain(&w, sentinel(&config), 5000).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    let rows = stored(&w, SourceKind::AuditLogs);
    assert_eq!(offset(&w, SourceKind::AuditLogs), rows[20].seq);
    // The rows around it are in Azure, the big one is not.
    let azure = w.azure.rows(SourceKind::AuditLogs.table());
    assert_eq!(azure.len(), 20);
    assert!(azure.iter().all(|r| r["id"] != "a000010"));
    // It is set aside with a reason naming the row and the limit; still in the store.
    let dead = dead_letters(&w);
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (seq, reason, attempts, _) = &dead[0];
    assert_eq!(*seq, rows[10].seq);
    assert_eq!(*attempts, 1);
    assert!(
        reason.contains("a000010") && reason.contains("1000000 bytes Azure accepts in one call"),
        "{reason}"
    );
    assert!(rows[10].raw.len() > 10_000_000);
    // `status` and the metrics show it.
    let status = cli(&w, &["status"]).await;
    assert!(
        status.contains("rows set aside") && status.contains("deadletter list"),
        "{status}"
    );
    let line = status
        .lines()
        .find(|l| l.contains(SINK) && l.contains("MiroAuditLogs_CL"))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(line.contains(" 1 "), "{status}");
    let telemetry = mirotrail::service::Telemetry::new(
        &config,
        StoreHandle::new(w.store.clone()),
        Arc::new(mirotrail::miro::CreditBudget::new(100_000, 0.5)),
    );
    let metrics = telemetry.render();
    assert!(
        metrics.contains(&format!(
            "mirotrail_sink_dead_letter_rows{{sink=\"{SINK}\",source=\"audit_logs\"}} 1"
        )),
        "{metrics}"
    );
    // `deadletter list` names it.
    let list = cli(&w, &["deadletter", "list", "-f", "json"]).await;
    assert!(
        list.contains("a000010") && list.contains("MiroAuditLogs_CL"),
        "{list}"
    );
    w.azure.shutdown().await;
}

/// A record Azure refuses alone as malformed (400) while taking the others is set aside;
/// `deadletter retry` sends it again: refused again, it goes back with one more attempt;
/// once Azure takes it, it leaves the list and is in Azure exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_refused_alone_is_set_aside_and_delivered_by_retry_once_the_cause_is_fixed() {
    let w = world(AzureEmulatorConfig {
        faults: AzureFaults {
            reject_ids: vec!["a000025".into()],
            ..AzureFaults::default()
        },
        ..AzureEmulatorConfig::default()
    })
    .await;
    fill(&w, SourceKind::AuditLogs, 60, 100);
    let rows = stored(&w, SourceKind::AuditLogs);
    let config = sink_config(&w, &w.azure_config.client_secret, "");
    let report = drain(&w, sentinel(&config), 5000).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    assert_eq!(offset(&w, SourceKind::AuditLogs), rows[59].seq);
    assert_eq!(w.azure.rows("MiroAuditLogs_CL").len(), 59);
    let dead = dead_letters(&w);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, rows[25].seq);
    assert!(
        dead[0].1.contains("a000025") && dead[0].1.contains("400"),
        "{}",
        dead[0].1
    );

    // Retried before the cause is fixed: refused again, back in the list.
    let out = cli(&w, &["deadletter", "retry", "--all"]).await;
    assert!(out.contains("1 row(s) queued"), "{out}");
    assert!(dead_letters(&w)[0].3, "re-queued");
    let report = drain(&w, sentinel(&config), 5000).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    let dead = dead_letters(&w);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].2, dead[0].3), (2, false), "{dead:?}");

    // A sink the config does not have is a usage error that names the sinks it has.
    let file = w.dir.path().join("mirotrail.toml");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mirotrail"))
        .args(["deadletter", "retry", "--all", "--sink", "nope", "--config"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no sink `nope`") && stderr.contains(SINK),
        "{stderr}"
    );

    // Fixed: the retry delivers it; the offset never moved back.
    w.azure.set_faults(AzureFaults::default());
    cli(&w, &["deadletter", "retry", "--sink", SINK, "--id", "1"]).await;
    let report = drain(&w, sentinel(&config), 5000).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    assert!(dead_letters(&w).is_empty());
    let out = cli(&w, &["deadletter", "retry", "--all"]).await;
    assert!(out.contains("no rows set aside"), "{out}");
    assert_eq!(offset(&w, SourceKind::AuditLogs), rows[59].seq);
    assert_eq!(
        azure_rows(&w, SourceKind::AuditLogs),
        local_rows(&w, SourceKind::AuditLogs),
        "every row once"
    );
    w.azure.shutdown().await;
}

/// A refusal of the whole stream (every record refused) is not blamed on the rows: no
/// dead letters, delivery stops at the first refused row as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_refuses_every_record_dead_letters_nothing() {
    let w = world(AzureEmulatorConfig {
        faults: AzureFaults {
            reject_ids: (0..40).map(|i| format!("a{i:06}")).collect(),
            ..AzureFaults::default()
        },
        ..AzureEmulatorConfig::default()
    })
    .await;
    fill(&w, SourceKind::AuditLogs, 40, 100);
    let config = sink_config(&w, &w.azure_config.client_secret, "");
    let report = drain(&w, sentinel(&config), 5000).await;
    let message = report.gave_up.expect("a permanent error");
    assert!(
        message.contains("400") && message.contains(AUDIT_DCR),
        "{message}"
    );
    assert!(dead_letters(&w).is_empty());
    assert_eq!(offset(&w, SourceKind::AuditLogs), 0);
    w.azure.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_concurrent_batch_holds_the_offset_before_it() {
    // Ten records per chunk: the 3rd of 6 chunks holds the refused record.
    let (w, rows, config) = refused_third_chunk().await;
    let mut sink = Ledgered::new(sentinel(&config));
    let acked = sink.send(SourceKind::AuditLogs, &rows).await.unwrap();
    assert_eq!(
        acked, rows[19].seq,
        "the prefix ends before the refused chunk"
    );
    let accepted: Vec<String> = w
        .azure
        .rows("MiroAuditLogs_CL")
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        accepted.contains(&"a000030".to_string()),
        "a 4th chunk was in flight"
    );
    assert!(
        !accepted
            .iter()
            .any(|id| ("a000020".."a000030").contains(&id.as_str()))
    );
    // The refused chunk fails again, with a message naming the DCR and stream.
    let err = sink
        .send(SourceKind::AuditLogs, &rows[20..])
        .await
        .unwrap_err();
    assert!(err.is_permanent());
    let message = err.to_string();
    assert!(
        message.contains(AUDIT_DCR) && message.contains("Custom-MiroAuditLogs_CL"),
        "{message}"
    );
    // Once Azure takes it, the chunks acknowledged earlier are not sent again.
    w.azure.set_faults(AzureFaults::default());
    let acked = sink.send(SourceKind::AuditLogs, &rows[20..]).await.unwrap();
    assert_eq!(acked, rows[59].seq);
    assert_eq!(
        azure_rows(&w, SourceKind::AuditLogs),
        local_rows(&w, SourceKind::AuditLogs),
        "no duplicates"
    );
    w.azure.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offset_stops_before_a_refused_batch_in_the_delivery_loop() {
    // Ten records per chunk: the 3rd of 6 chunks holds the refused record.
    let (w, rows, config) = refused_third_chunk().await;
    let report = drain(&w, sentinel(&config), 5000).await;
    assert!(report.gave_up.unwrap().contains("400"));
    assert_eq!(offset(&w, SourceKind::AuditLogs), rows[19].seq);
    w.azure.shutdown().await;
}

async fn one_error(w: &World, config: &Config) -> String {
    let report = drain(w, sentinel(config), 5000).await;
    assert_eq!(offset(w, SourceKind::AuditLogs), 0);
    assert!(w.azure.rows("MiroAuditLogs_CL").is_empty());
    let message = report.gave_up.expect("a permanent error");
    assert!(!message.contains('\n'), "one line: {message}");
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_secret_wrong_dcr_and_missing_role_each_give_one_clear_error() {
    let w = world(AzureEmulatorConfig::default()).await;
    fill(&w, SourceKind::AuditLogs, 10, 10);

    let m = one_error(&w, &sink_config(&w, "not-the-secret", "")).await;
    assert!(
        m.starts_with("wrong client secret for app") && m.contains("AADSTS7000215"),
        "{m}"
    );

    let mut config = sink_config(&w, &w.azure_config.client_secret, "");
    if let SinkKindConfig::Sentinel(c) = &mut config.sinks[0].kind {
        c.audit_logs.as_mut().unwrap().dcr_immutable_id =
            "dcr-99999999999999999999999999999999".into();
    }
    let m = one_error(&w, &config).await;
    assert!(
        m.contains("does not know DCR dcr-99999999999999999999999999999999")
            && m.contains("immutable id"),
        "{m}"
    );

    let mut config = sink_config(&w, &w.azure_config.client_secret, "");
    if let SinkKindConfig::Sentinel(c) = &mut config.sinks[0].kind {
        c.auth = mirotrail::sink::sentinel::AzureAuth::ClientSecret {
            tenant_id: "00000000-0000-0000-0000-00000000dead".into(),
            client_id: w.azure_config.client_id.clone(),
            secret: mirotrail::sink::sentinel::SecretSource::File(w.dir.path().join("secret")),
        };
    }
    let m = one_error(&w, &config).await;
    assert!(m.starts_with("wrong tenant"), "{m}");

    w.azure.set_roles_granted(false);
    let m = one_error(&w, &sink_config(&w, &w.azure_config.client_secret, "")).await;
    assert!(
        m.contains("\"Monitoring Metrics Publisher\"")
            && m.contains(AUDIT_DCR)
            && m.contains("Custom-MiroAuditLogs_CL")
            && m.contains("403"),
        "{m}"
    );
    w.azure.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_token_and_managed_identity_also_deliver() {
    let w = world(AzureEmulatorConfig {
        federated_assertion: Some("eyJ.federated.assertion".into()),
        ..AzureEmulatorConfig::default()
    })
    .await;
    fill(&w, SourceKind::AuditLogs, 30, 10);
    let token_file = w.dir.path().join("federated-token");
    std::fs::write(&token_file, "eyJ.federated.assertion\n").unwrap();
    let federated = sink_config(
        &w,
        "",
        &format!(
            "tenant_id = \"{}\"\nclient_id = \"{}\"\nfederated_token_file = \"{}\"\n",
            w.azure_config.tenant_id,
            w.azure_config.client_id,
            token_file.display()
        ),
    );
    let mut sink = Ledgered::new(sentinel(&federated));
    let rows = stored(&w, SourceKind::AuditLogs);
    assert_eq!(
        sink.send(SourceKind::AuditLogs, &rows[..15]).await.unwrap(),
        rows[14].seq
    );

    let managed = sink_config(
        &w,
        "",
        &format!(
            "managed_identity = true\nmanaged_identity_client_id = \"{}\"\nmanaged_identity_endpoint = \"{}/metadata/identity/oauth2/token\"\n",
            w.azure_config.client_id,
            w.azure.base_url()
        ),
    );
    let mut sink = Ledgered::new(sentinel(&managed));
    assert_eq!(
        sink.send(SourceKind::AuditLogs, &rows[15..]).await.unwrap(),
        rows[29].seq
    );
    assert_eq!(
        azure_rows(&w, SourceKind::AuditLogs),
        local_rows(&w, SourceKind::AuditLogs)
    );
    // A wrong assertion is one clear line.
    std::fs::write(&token_file, "eyJ.someone.else").unwrap();
    let mut sink = Ledgered::new(sentinel(&federated));
    let err = sink
        .send(SourceKind::AuditLogs, &rows[..1])
        .await
        .unwrap_err();
    assert!(
        err.is_permanent() && err.to_string().contains("federated credential"),
        "{err}"
    );
    w.azure.shutdown().await;
}

/// A tracing writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn secrets_and_tokens_never_reach_logs_or_errors() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let w = world(AzureEmulatorConfig {
        faults: AzureFaults {
            server_error_share: 0.3,
            ..AzureFaults::default()
        },
        ..AzureEmulatorConfig::default()
    })
    .await;
    fill(&w, SourceKind::AuditLogs, 200, 100);
    let secret = w.azure_config.client_secret.clone();
    let config = sink_config(&w, &secret, "max_batch_bytes = 10000\n");
    let sink = sentinel(&config);
    let debug = format!("{sink:?} {config:?}");
    assert!(!debug.contains(&secret), "{debug}");
    let mut sink = Ledgered::new(sink);
    let rows = stored(&w, SourceKind::AuditLogs);
    let mut errors = String::new();
    let mut from = 0;
    while from < rows.len() {
        let slice = &rows[from..(from + 50).min(rows.len())];
        match sink.send(SourceKind::AuditLogs, slice).await {
            Ok(acked) => from = rows.iter().position(|r| r.seq == acked).unwrap() + 1,
            Err(e) => errors.push_str(&e.to_string()),
        }
        w.azure.expire_tokens();
    }
    let bad = sink_config(&w, "wrong-secret-value", "");
    let report = drain(&w, sentinel(&bad), 5000).await;
    errors.push_str(&report.gave_up.unwrap());
    drop(_guard);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("401"), "the renewal was logged: {logs}");
    let tokens = w.azure.issued_tokens();
    assert!(tokens.len() >= 2);
    for needle in tokens
        .iter()
        .chain([&secret, &"wrong-secret-value".to_string()])
    {
        assert!(
            !logs.contains(needle.as_str()),
            "leaked into logs: {needle}"
        );
        assert!(
            !errors.contains(needle.as_str()),
            "leaked into errors: {needle}"
        );
    }
    w.azure.shutdown().await;
}

/// Chunks Azure acknowledged beyond a refused one are recorded in the store, so a new
/// process (a restart) does not send them again: a row is resent only if its batch was
/// not acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_acknowledged_beyond_the_offset_are_not_resent_after_a_restart() {
    // Ten records per chunk: the 3rd of 6 chunks holds the refused record.
    let (w, rows, config) = refused_third_chunk().await;
    // First process: chunk 3 is refused, chunks after it land anyway.
    let report = drain(&w, sentinel(&config), 5000).await;
    assert!(report.gave_up.is_some());
    assert_eq!(offset(&w, SourceKind::AuditLogs), rows[19].seq);
    let before = w.azure.rows("MiroAuditLogs_CL").len();
    assert!(
        before > 20,
        "chunks beyond the refused one landed: {before}"
    );
    // The refusal is fixed; a new sink instance (as after a restart) delivers the rest.
    w.azure.set_faults(AzureFaults::default());
    let report = drain(&w, sentinel(&config), 5000).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    assert_eq!(offset(&w, SourceKind::AuditLogs), rows[59].seq);
    assert_eq!(
        azure_rows(&w, SourceKind::AuditLogs),
        local_rows(&w, SourceKind::AuditLogs),
        "every row once: nothing acknowledged was sent again"
    );
    w.azure.shutdown().await;
}
