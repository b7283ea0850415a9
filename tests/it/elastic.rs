//! The Elasticsearch sink against the Elasticsearch emulator: rows from a real store,
//! delivered by the real delivery loop over loopback HTTP, with faults injected on the
//! cluster side (lost answers, items refused with 429, mapping errors, 413, 503).

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mirotrail::config::{Config, SinkKindConfig, SourceKind};
use mirotrail::sink::{Delivery, DeliveryMode, DeliveryReport, ElasticSink, deliver};
use mirotrail::store::{Checkpoint, OutboxRow, Store, StoreHandle, transform};
use mirotrail::timefmt::UnixMs;
use mirotrail_emulator::elastic::{
    ElasticEmulator, ElasticEmulatorConfig, ElasticEmulatorHandle, ElasticFaults,
};
use serde_json::Value;
use tempfile::TempDir;

use crate::support::{BIG, fill_store, sink_item as item};

const SINK: &str = "elastic";

struct World {
    dir: TempDir,
    store: Arc<Store>,
    es: ElasticEmulatorHandle,
    es_config: ElasticEmulatorConfig,
}

async fn world(es_config: ElasticEmulatorConfig) -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("m.db")).unwrap());
    let es = ElasticEmulator::start(es_config.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    World {
        dir,
        store,
        es,
        es_config,
    }
}

fn fill(w: &World, source: SourceKind, n: usize) {
    fill_store(&w.store, source, n);
}

fn stored(w: &World, source: SourceKind) -> Vec<OutboxRow> {
    w.store.read_outbox(source, 0, 1_000_000).unwrap()
}

fn offset(w: &World, source: SourceKind) -> i64 {
    w.store.delivered_offset(SINK, source).unwrap()
}

/// The sink's config through the real config file path; the API key comes from a file.
fn sink_config(w: &World, api_key: &str, extra: &str) -> Config {
    std::fs::write(w.dir.path().join("es-key"), api_key).unwrap();
    let text = format!(
        "[miro]\norg_id = \"1\"\n[sources.content_logs]\nenabled = true\n\
         [sinks.{SINK}]\ntype = \"elasticsearch\"\nendpoint = \"{}\"\napi_key_file = \"es-key\"\n\
         {extra}",
        w.es.base_url()
    );
    Config::from_toml(&text, &w.dir.path().join("mirotrail.toml")).unwrap()
}

fn elastic(config: &Config) -> ElasticSink {
    match &config.sinks[0].kind {
        SinkKindConfig::Elastic(c) => ElasticSink::new((**c).clone())
            .unwrap()
            .with_backoff_base(Duration::from_millis(5)),
        other => panic!("{other:?}"),
    }
}

async fn drain(w: &World, sink: ElasticSink, batch_rows: usize) -> DeliveryReport {
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
                    retry_for: Duration::from_secs(20),
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

/// How often each Miro id was written (every write the emulator accepted, so an
/// overwrite would count twice).
fn written_ids(w: &World) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for (_, id, doc) in w.es.stored() {
        assert_eq!(
            doc["miro"]["id"].as_str(),
            Some(id.as_str()),
            "_id is the Miro id"
        );
        *out.entry(id).or_default() += 1;
    }
    out
}

fn all_ids(w: &World) -> Vec<String> {
    SourceKind::ALL
        .iter()
        .flat_map(|&s| stored(w, s))
        .map(|r| {
            serde_json::from_str::<Value>(&r.raw).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn dead_letters(w: &World) -> i64 {
    let conn = rusqlite::Connection::open(w.dir.path().join("m.db")).unwrap();
    conn.query_row(
        "SELECT count(*) FROM dead_letters WHERE sink = ?1",
        [SINK],
        |r| r.get(0),
    )
    .unwrap()
}

fn assert_exactly_once(w: &World) {
    let ids = written_ids(w);
    let expected = all_ids(w);
    assert_eq!(ids.len(), expected.len(), "every row stored");
    for id in &expected {
        assert_eq!(ids.get(id), Some(&1), "{id} stored exactly once");
    }
    for source in SourceKind::ALL {
        assert_eq!(
            offset(w, source),
            stored(w, source).last().map_or(0, |r| r.seq),
            "{source}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_becomes_one_ecs_document_in_its_streams_data_stream() {
    let w = world(ElasticEmulatorConfig::default()).await;
    fill(&w, SourceKind::AuditLogs, 700);
    fill(&w, SourceKind::ContentLogs, 300);
    fill(&w, SourceKind::AiInteractionLogs, 60);
    let config = sink_config(&w, &w.es_config.api_key, "max_batch_bytes = 100000\n");
    let report = drain(&w, elastic(&config), 500).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    assert_exactly_once(&w);
    let stats = w.es.stats();
    assert!(
        stats.bulk_by_status[&200] > 3,
        "several requests: {stats:?}"
    );
    assert_eq!(
        stats.gzip_requests, stats.bulk_by_status[&200],
        "gzip by default"
    );
    for (target, id, doc) in w.es.stored() {
        let (dataset, action) = match id.chars().next().unwrap() {
            'a' if id.starts_with("ai") => ("miro.ai", "ai_generate_sticky_notes"),
            'a' => ("miro.audit", "board_opened"),
            _ => ("miro.content", "update"),
        };
        assert_eq!(target, format!("logs-{dataset}-default"));
        assert_eq!(doc["event"]["dataset"], dataset);
        assert_eq!(doc["event"]["action"], action);
        assert_eq!(doc["event"]["kind"], "event");
        assert_eq!(doc["user"]["id"], "u1");
        assert!(
            doc["@timestamp"]
                .as_str()
                .unwrap()
                .starts_with("2024-05-01T1"),
            "{doc}"
        );
        let big = if dataset == "miro.content" {
            &doc["miro"]["state"]["big"]
        } else {
            &doc["miro"]["details"]["big"]
        };
        assert_eq!(big.to_string(), BIG, "digit for digit");
    }
    w.es.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_busy_requests_and_refused_items_lose_and_duplicate_nothing() {
    let w = world(ElasticEmulatorConfig {
        faults: ElasticFaults {
            busy_share: 0.1,
            item_reject_share: 0.2,
            lost_response_share: 0.3,
            ..ElasticFaults::default()
        },
        ..ElasticEmulatorConfig::default()
    })
    .await;
    fill(&w, SourceKind::AuditLogs, 600);
    fill(&w, SourceKind::ContentLogs, 200);
    let config = sink_config(&w, &w.es_config.api_key, "max_batch_bytes = 20000\n");
    let report = drain(&w, elastic(&config), 300).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    assert_exactly_once(&w);
    let stats = w.es.stats();
    assert!(stats.lost_responses > 0, "{stats:?}");
    assert!(stats.items(429) > 0, "{stats:?}");
    // Resent batches met documents already there: counted as delivered (not set aside),
    // not written again.
    assert!(stats.items(409) > 0, "{stats:?}");
    assert_eq!(dead_letters(&w), 0);
    w.es.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_error_is_set_aside_and_the_rest_is_delivered() {
    let w = world(ElasticEmulatorConfig {
        faults: ElasticFaults {
            mapping_error_ids: vec!["a000037".into()],
            ..ElasticFaults::default()
        },
        ..ElasticEmulatorConfig::default()
    })
    .await;
    fill(&w, SourceKind::AuditLogs, 100);
    let config = sink_config(&w, &w.es_config.api_key, "max_batch_bytes = 10000\n");
    let report = drain(&w, elastic(&config), 500).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    let rows = stored(&w, SourceKind::AuditLogs);
    let conn = rusqlite::Connection::open(w.dir.path().join("m.db")).unwrap();
    let letters: Vec<(i64, String)> = conn
        .prepare("SELECT seq, reason FROM dead_letters WHERE sink = ?1")
        .unwrap()
        .query_map([SINK], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].0, rows[37].seq);
    assert!(
        letters[0].1.contains("mapper_parsing_exception"),
        "{letters:?}"
    );
    let ids = written_ids(&w);
    assert_eq!(ids.len(), 99);
    assert!(!ids.contains_key("a000037"));
    assert_eq!(offset(&w, SourceKind::AuditLogs), rows.last().unwrap().seq);
    w.es.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_after_the_acknowledged_rows() {
    let w = world(ElasticEmulatorConfig::default()).await;
    fill(&w, SourceKind::AuditLogs, 50);
    let config = sink_config(&w, &w.es_config.api_key, "");
    drain(&w, elastic(&config), 500).await;
    fill_more(&w, 50);
    drain(&w, elastic(&config), 500).await;
    assert_exactly_once(&w);
    assert_eq!(
        w.es.stats().items(409),
        0,
        "nothing acknowledged was sent again"
    );
    assert_eq!(w.es.stats().items(201), 100);
    w.es.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_too_large_for_the_cluster_is_split() {
    let w = world(ElasticEmulatorConfig {
        max_content_length: 8_000,
        ..ElasticEmulatorConfig::default()
    })
    .await;
    fill(&w, SourceKind::AuditLogs, 120);
    let config = sink_config(&w, &w.es_config.api_key, "gzip = false\n");
    let report = drain(&w, elastic(&config), 500).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    assert_exactly_once(&w);
    assert!(w.es.stats().bulk_by_status[&413] > 0);
    w.es.shutdown().await;
}

fn fill_more(w: &World, n: usize) {
    let items: Vec<String> = (1000..1000 + n)
        .map(|i| item(SourceKind::AuditLogs, i))
        .collect();
    let rows: Vec<(transform::Row, &str)> = items
        .iter()
        .map(|raw| (transform::to_row(SourceKind::AuditLogs, raw), raw.as_str()))
        .collect();
    let checkpoint = Checkpoint {
        source: SourceKind::AuditLogs,
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
    w.store
        .commit_page(SourceKind::AuditLogs, &rows, &checkpoint)
        .unwrap();
}

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
async fn bad_credentials_and_missing_privileges_give_one_clear_error_and_no_secret() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let w = world(ElasticEmulatorConfig::default()).await;
    fill(&w, SourceKind::AuditLogs, 10);
    let wrong = "d3JvbmdrZXk6d3JvbmdzZWNyZXQtMDAwMDA0Mg==";
    let config = sink_config(&w, wrong, "");
    let debug = format!("{:?} {config:?}", elastic(&config));
    let report = drain(&w, elastic(&config), 500).await;
    let m = report.gave_up.expect("a permanent error");
    assert!(m.contains("401") && m.contains("API key"), "{m}");
    assert_eq!(offset(&w, SourceKind::AuditLogs), 0);
    let check = elastic(&config).check().await.unwrap_err();
    assert!(check.contains("401"), "{check}");
    let mut errors = format!("{m}\n{check}");

    // Basic authentication, with the password from a file.
    let password = w.es_config.user.1.clone();
    std::fs::write(w.dir.path().join("es-password"), &password).unwrap();
    let text = format!(
        "[miro]\norg_id = \"1\"\n[sinks.{SINK}]\ntype = \"elasticsearch\"\nendpoint = \"{}\"\n\
         username = \"elastic\"\npassword_file = \"es-password\"\n",
        w.es.base_url()
    );
    let basic = Config::from_toml(&text, &w.dir.path().join("mirotrail.toml")).unwrap();
    let outcomes = elastic(&basic).check().await.unwrap();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert!(w.es.stored().is_empty(), "check writes nothing");
    let report = drain(&w, elastic(&basic), 500).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    assert_eq!(written_ids(&w).len(), 10);
    w.es.shutdown().await;

    // A credential without `create_doc`.
    let w = world(ElasticEmulatorConfig {
        create_doc: false,
        ..ElasticEmulatorConfig::default()
    })
    .await;
    fill(&w, SourceKind::AuditLogs, 10);
    let config = sink_config(&w, &w.es_config.api_key, "");
    let check = elastic(&config).check().await.unwrap_err();
    assert!(check.contains("create_doc"), "{check}");
    let report = drain(&w, elastic(&config), 500).await;
    let m = report.gave_up.expect("a permanent error");
    assert!(m.contains("create_doc") && m.contains("403"), "{m}");
    errors.push_str(&m);
    drop(_guard);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for needle in [wrong, w.es_config.api_key.as_str(), password.as_str()] {
        assert!(!logs.contains(needle), "leaked into logs: {needle}");
        assert!(!errors.contains(needle), "leaked into errors: {needle}");
        assert!(!debug.contains(needle), "leaked into Debug: {needle}");
    }
    w.es.shutdown().await;
}

/// The real binary: `run --once` from the Miro emulator to the Elasticsearch emulator
/// (with lost answers and items refused with 429), then `check`, at trace level; every
/// row stored once, and the API key in no output and no file (the key file aside).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_delivers_to_elasticsearch_and_never_prints_the_key() {
    use crate::support::{Env, TOKEN, minutes, org, text};
    let now = mirotrail_emulator::UnixMs::now();
    let (start, end) = (now.minus(minutes(90)), now.minus(minutes(5)));
    let env = Env::start(org(800, 300, start, end)).await;
    let es_config = ElasticEmulatorConfig {
        api_key: "bWlyb3RyYWlsLWl0OnNlY3JldC1rZXktMDA0Mi1lbGFzdGlj".into(),
        faults: ElasticFaults {
            lost_response_share: 0.2,
            item_reject_share: 0.1,
            ..ElasticFaults::default()
        },
        ..ElasticEmulatorConfig::default()
    };
    let es = ElasticEmulator::start(es_config.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let key_file = env.dir.path().join("es-key");
    std::fs::write(&key_file, &es_config.api_key).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let cfg = env.config(&format!(
        "[sources.audit_logs]\ninitial_lookback = \"2h\"\n[sources.content_logs]\nenabled = true\n\
         initial_lookback = \"2h\"\n[sinks.elastic]\ntype = \"elasticsearch\"\nendpoint = \"{}\"\n\
         api_key_file = \"es-key\"\nmax_batch_bytes = 200000\n",
        es.base_url()
    ));
    let cfg = cfg.to_str().unwrap();
    let mut outputs = Vec::new();
    for args in [
        vec!["run", "--config", cfg, "--once"],
        vec!["check", "--config", cfg],
    ] {
        let mut cmd = env.command(&args, TOKEN);
        cmd.env("RUST_LOG", "trace");
        outputs.push(cmd.output().await.unwrap());
    }
    assert!(outputs[0].status.success(), "{}", text(&outputs[0]));
    let check = text(&outputs[1]);
    assert!(
        check.contains("sink elastic") && check.contains("`create_doc`"),
        "{check}"
    );

    let mut ids: HashMap<String, usize> = HashMap::new();
    for (_, id, _) in es.stored() {
        *ids.entry(id).or_default() += 1;
    }
    let db = env.db();
    let stored = crate::support::count(&db, "MiroAuditLogs_CL")
        + crate::support::count(&db, "MiroContentLogs_CL");
    assert!(stored > 1000, "{stored}");
    assert_eq!(
        i64::try_from(ids.len()).unwrap(),
        stored,
        "every stored row in Elasticsearch"
    );
    assert!(ids.values().all(|&n| n == 1), "each once");

    for out in &outputs {
        assert!(!text(out).contains(&es_config.api_key), "{}", text(out));
    }
    let mut dirs = vec![env.dir.path().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p != key_file {
                let bytes = std::fs::read(&p).unwrap();
                let found = bytes
                    .windows(es_config.api_key.len())
                    .any(|w| w == es_config.api_key.as_bytes());
                assert!(!found, "the API key in {}", p.display());
            }
        }
    }
    es.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_answer_is_passed_over_for_the_next() {
    let w = world(ElasticEmulatorConfig::default()).await;
    fill(&w, SourceKind::AuditLogs, 200);
    // A port nothing listens on: bound, then released.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    std::fs::write(w.dir.path().join("es-key"), &w.es_config.api_key).unwrap();
    let text = format!(
        "[miro]\norg_id = \"1\"\n[sinks.{SINK}]\ntype = \"elasticsearch\"\n\
         endpoint = [\"http://{dead}\", \"{}\"]\napi_key_file = \"es-key\"\nmax_batch_bytes = 20000\n",
        w.es.base_url()
    );
    let config = Config::from_toml(&text, &w.dir.path().join("mirotrail.toml")).unwrap();
    let report = drain(&w, elastic(&config), 500).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    assert_exactly_once(&w);
    assert!(
        w.es.stats().bulk_by_status[&200] > 1,
        "several requests, all to the live node"
    );
    // `check` names the node that does not answer.
    let m = elastic(&config).check().await.unwrap_err();
    assert!(m.contains(&dead.to_string()), "{m}");
    w.es.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_on_opensearch_says_the_privilege_is_not_verified_and_writes_nothing() {
    use mirotrail::sink::elasticsearch::CheckOutcome;
    let w = world(ElasticEmulatorConfig {
        distribution: "opensearch".into(),
        ..ElasticEmulatorConfig::default()
    })
    .await;
    let outcomes = elastic(&sink_config(&w, &w.es_config.api_key, ""))
        .check()
        .await
        .unwrap();
    assert!(
        matches!(&outcomes[..], [CheckOutcome::Ok(root), CheckOutcome::NotVerified(why)]
            if root.contains("OpenSearch") && why.contains("OpenSearch")),
        "{outcomes:?}"
    );
    assert!(w.es.stored().is_empty());
    assert!(w.es.stats().bulk_by_status.is_empty(), "no bulk request");
    w.es.shutdown().await;
}
