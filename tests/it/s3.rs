//! The S3 sink against a real S3 implementation: moto's standalone server (`moto[server]`,
//! started per test on a free loopback port), rows from a real store delivered by the real
//! delivery loop; the bucket is created, listed and read with the AWS SDK (signed
//! requests), never through the sink under test.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mirotrail::config::{Config, SinkKindConfig, SourceKind};
use mirotrail::sink::{Delivery, DeliveryMode, DeliveryReport, S3Sink, Sink, deliver};
use mirotrail::store::{Store, StoreHandle};
use serde_json::Value;
use tempfile::TempDir;

const SINK: &str = "s3";
const BUCKET: &str = "miro-archive";

pub(crate) use mirotrail_test_support::moto::Moto;

struct World {
    dir: TempDir,
    store: Arc<Store>,
    moto: Moto,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("m.db")).unwrap());
    World {
        dir,
        store,
        moto: Moto::start().await,
    }
}

/// The `i`-th audit item: event hours 10, 11 and 12 interleaved (late events), ids `a…`
/// from `base`.
fn audit_item(i: usize) -> String {
    format!(
        r#"{{"id":"a{i:06}","type":"event","event":"board_opened","category":"boards","createdAt":"2024-05-01T{:02}:{:02}:{:02}.000+0000","createdBy":{{"type":"user","id":"u1","email":"u1@example.com"}},"details":{{"big":{},"pad":"{}"}}}}"#,
        10 + i % 3,
        i / 60 % 60,
        i % 60,
        crate::support::BIG,
        "x".repeat(150)
    )
}

fn fill_audit(w: &World, from: usize, to: usize) {
    let items: Vec<String> = (from..to).map(audit_item).collect();
    crate::support::commit_items(&w.store, SourceKind::AuditLogs, &items);
}

fn offset(w: &World, source: SourceKind) -> i64 {
    w.store.delivered_offset(SINK, source).unwrap()
}

/// The sink's config through the real config file path; static keys from files.
fn sink_config(w: &World, secret: &str, extra: &str) -> Config {
    std::fs::write(w.dir.path().join("s3-id"), "AKIAMIROTRAILTEST01").unwrap();
    std::fs::write(w.dir.path().join("s3-secret"), secret).unwrap();
    let text = format!(
        "[miro]\norg_id = \"1\"\n[sources.content_logs]\nenabled = true\n\
         [sources.ai_interaction_logs]\nenabled = true\n\
         [sinks.{SINK}]\ntype = \"s3\"\nbucket = \"{BUCKET}\"\nprefix = \"miro/logs\"\n\
         endpoint = \"{}\"\nregion = \"us-east-1\"\nforce_path_style = true\n\
         access_key_id_file = \"s3-id\"\nsecret_access_key_file = \"s3-secret\"\n{extra}",
        w.moto.url
    );
    Config::from_toml(&text, &w.dir.path().join("mirotrail.toml")).unwrap()
}

fn s3(config: &Config) -> S3Sink {
    match &config.sinks[0].kind {
        SinkKindConfig::S3(c) => S3Sink::new((**c).clone())
            .unwrap()
            .with_backoff_base(Duration::from_millis(5)),
        other => panic!("{other:?}"),
    }
}

async fn drain(w: &World, sink: S3Sink, batch_rows: usize) -> DeliveryReport {
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

/// Checks the bucket against the store: every stored row in exactly one object, as the
/// file sink's line, under its stream and event hour, in an object whose key names the
/// `_seq` range of its rows. Returns the number of objects.
fn assert_bucket_matches_store(
    w: &World,
    objects: &BTreeMap<String, Vec<String>>,
    max_object_bytes: usize,
) -> usize {
    // id -> (source, seq, the file sink's line)
    let mut stored: HashMap<String, (SourceKind, i64, String)> = HashMap::new();
    for source in SourceKind::ALL {
        for row in w.store.read_outbox(source, 0, 1_000_000).unwrap() {
            let id = serde_json::from_str::<Value>(&row.raw).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string();
            let line = mirotrail::sink::table_row_json(source, &row);
            stored.insert(id, (source, row.seq, line));
        }
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (key, lines) in objects {
        let rest = key
            .strip_prefix("miro/logs/stream=")
            .expect("under the prefix");
        let (table, rest) = rest.split_once('/').unwrap();
        let (partition, name) = rest.rsplit_once('/').unwrap();
        let range = name.strip_suffix(".ndjson.gz").expect("named .ndjson.gz");
        let (first, last) = range.split_once('-').unwrap();
        assert_eq!((first.len(), last.len()), (20, 20), "{key}");
        let (first, last): (i64, i64) = (first.parse().unwrap(), last.parse().unwrap());
        let size: usize = lines.iter().map(|l| l.len() + 1).sum();
        assert!(
            size <= max_object_bytes || lines.len() == 1,
            "{key}: {size} bytes"
        );
        let mut seqs = Vec::new();
        for line in lines {
            let v: Value = serde_json::from_str(line).unwrap();
            let id = v["id"].as_str().unwrap().to_string();
            let (source, seq, expected) =
                stored.get(&id).unwrap_or_else(|| panic!("{id} not stored"));
            assert_eq!(line, expected, "{key}: the file sink's line");
            assert_eq!(table, source.table(), "{key}");
            let t = v["TimeGenerated"].as_str().unwrap();
            assert_eq!(
                partition,
                format!(
                    "year={}/month={}/day={}/hour={}",
                    &t[0..4],
                    &t[5..7],
                    &t[8..10],
                    &t[11..13]
                ),
                "{key}: {id} at {t}"
            );
            seqs.push(*seq);
            *seen.entry(id).or_default() += 1;
        }
        assert!(seqs.is_sorted(), "{key}: rows in _seq order");
        assert_eq!((seqs[0], *seqs.last().unwrap()), (first, last), "{key}");
    }
    for id in stored.keys() {
        assert_eq!(seen.get(id), Some(&1), "{id} in exactly one object, once");
    }
    assert_eq!(seen.len(), stored.len(), "nothing but stored rows");
    objects.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_lands_once_in_objects_by_stream_and_event_hour() {
    let w = world().await;
    w.moto.create_bucket(BUCKET).await;
    fill_audit(&w, 0, 900);
    crate::support::fill_store(&w.store, SourceKind::ContentLogs, 300);
    crate::support::fill_store(&w.store, SourceKind::AiInteractionLogs, 120);
    let max = 40_000;
    let config = sink_config(
        &w,
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        &format!("max_object_bytes = {max}\n"),
    );
    let report = drain(&w, s3(&config), 400).await;
    assert_eq!(report.gave_up, None, "{report:?}");
    assert_eq!(report.rows, 1320);
    let objects = w.moto.objects(BUCKET).await;
    let n = assert_bucket_matches_store(&w, &objects, max);
    // 900 audit rows over three hours in batches of 400, cut at 40 kB: several objects.
    assert!(n > 9, "{n} objects");
    for source in SourceKind::ALL {
        let last = w
            .store
            .read_outbox(source, 0, 1_000_000)
            .unwrap()
            .last()
            .unwrap()
            .seq;
        assert_eq!(offset(&w, source), last, "{source} delivered");
    }
}

/// `format = "ocsf"`: the objects hold one OCSF event per stored row (the same encoder as
/// the file sink); a row OCSF cannot take (no readable time) is set aside, not lost, and
/// the rows around it are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocsf_objects_hold_one_event_per_row_and_set_aside_what_ocsf_refuses() {
    let w = world().await;
    w.moto.create_bucket(BUCKET).await;
    fill_audit(&w, 0, 200);
    crate::support::fill_store(&w.store, SourceKind::ContentLogs, 60);
    // No time OCSF can read: it needs `time`.
    let bad = r#"{"id":"untimed","type":"event","event":"board_opened","createdAt":"yesterday"}"#;
    let row = mirotrail::store::stored_row(SourceKind::AuditLogs, bad);
    let checkpoint = w
        .store
        .load_checkpoint(mirotrail::store::OrgKey::DEFAULT, SourceKind::AuditLogs)
        .unwrap()
        .unwrap();
    w.store
        .commit_page(SourceKind::AuditLogs, &[(row, bad)], &checkpoint)
        .unwrap();
    let config = sink_config(
        &w,
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "format = \"ocsf\"\n",
    );
    let report = drain(&w, s3(&config), 100).await;
    assert_eq!(report.gave_up, None, "{report:?}");
    let objects = w.moto.objects(BUCKET).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (key, lines) in &objects {
        for line in lines {
            let v: Value = serde_json::from_str(line).unwrap();
            assert!(v["class_uid"].is_u64(), "{key}: {line}");
            assert_eq!(v["metadata"]["version"], "1.1.0", "{key}");
            *seen
                .entry(v["metadata"]["uid"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    for source in [SourceKind::AuditLogs, SourceKind::ContentLogs] {
        let rows = w.store.read_outbox(source, 0, 1_000_000).unwrap();
        for row in &rows {
            let id = serde_json::from_str::<Value>(&row.raw).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string();
            let expected = usize::from(id != "untimed");
            assert_eq!(seen.get(&id).copied().unwrap_or(0), expected, "{id}");
        }
        assert_eq!(offset(&w, source), rows.last().unwrap().seq, "{source}");
    }
    assert_eq!(seen.len(), 200 + 60);
    let dead = mirotrail::store::dead_letters(
        &Store::open_read_only(&w.dir.path().join("m.db")).unwrap(),
        Some(SINK),
        None,
    )
    .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].miro_id.as_deref(), Some("untimed"));
}

/// The batch of a crashed run is rewritten under the same keys, even when more rows were
/// stored meanwhile and the batch size changed: every row in exactly one object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_after_a_crash_rewrites_the_same_keys() {
    let w = world().await;
    w.moto.create_bucket(BUCKET).await;
    fill_audit(&w, 0, 600);
    let config = sink_config(&w, "secret-one", "max_object_bytes = 20000\n");
    let store = StoreHandle::new(w.store.clone());

    // Run 1: every object of a 300-row batch written, then a crash before the delivery
    // offset is stored (the acknowledgement goes nowhere).
    let mut sink = s3(&config);
    sink.prepare(&store, SINK).await.unwrap();
    let batch = w.store.read_outbox(SourceKind::AuditLogs, 0, 300).unwrap();
    sink.send(SourceKind::AuditLogs, &batch, &mut |_| {})
        .await
        .unwrap();
    drop(sink);
    let first_run: Vec<String> = w.moto.objects(BUCKET).await.into_keys().collect();
    assert!(first_run.len() >= 3, "{first_run:?}");

    // Run 2: more rows stored, another batch size; the crashed batch is acknowledged
    // as it was written, then the next batch is recorded and cut short after two
    // objects (the credentials stop working).
    fill_audit(&w, 600, 700);
    w.moto.authenticate_after(2).await;
    let report = drain(&w, s3(&config), 250).await;
    let m = report.gave_up.expect("stopped by the credentials");
    assert!(m.contains("InvalidAccessKeyId"), "{m}");
    assert_eq!(
        offset(&w, SourceKind::AuditLogs),
        300,
        "the first batch, not rewritten"
    );
    w.moto.authenticate_after(1_000_000_000).await;
    let second_run = w.moto.objects(BUCKET).await;
    assert_eq!(
        second_run.len(),
        first_run.len() + 2,
        "two objects of the cut batch"
    );
    for key in &first_run {
        assert!(second_run.contains_key(key), "{key}");
    }

    // Restart with more rows and other batch sizes: what was written is written again
    // under the same keys, nothing twice.
    fill_audit(&w, 700, 1000);
    let report = drain(&w, s3(&config), 170).await;
    assert_eq!(report.gave_up, None, "{report:?}");
    let objects = w.moto.objects(BUCKET).await;
    assert_bucket_matches_store(&w, &objects, 20_000);
    for key in second_run.keys() {
        assert!(
            objects.contains_key(key),
            "{key} rewritten, not replaced by another key"
        );
    }
    assert_eq!(offset(&w, SourceKind::AuditLogs), 1000);
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

/// A missing bucket and unknown keys each stop delivery with the remedy, move no offset,
/// and never show the secret key.
#[tokio::test(flavor = "current_thread")]
async fn a_missing_bucket_and_bad_keys_give_one_clear_error_and_lose_nothing() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let w = world().await;
    fill_audit(&w, 0, 50);
    let secret = "Zq9+SECRET+ACCESS+KEY+7f3a9c2e5b8d41f6a0c3e9b2";
    let config = sink_config(&w, secret, "");
    let debug = format!("{:?} {config:?}", s3(&config));
    let mut errors = String::new();

    let report = drain(&w, s3(&config), 500).await;
    let m = report.gave_up.expect("a permanent error");
    assert!(
        m.contains("NoSuchBucket") && m.contains("create the bucket"),
        "{m}"
    );
    assert!(!m.contains('\n'), "one line: {m}");
    assert_eq!(offset(&w, SourceKind::AuditLogs), 0);
    errors.push_str(&m);

    w.moto.create_bucket(BUCKET).await;
    w.moto.authenticate_after(0).await;
    let report = drain(&w, s3(&config), 500).await;
    let m = report.gave_up.expect("a permanent error");
    assert!(
        m.contains("InvalidAccessKeyId") && m.contains("access_key_id_env"),
        "{m}"
    );
    assert_eq!(offset(&w, SourceKind::AuditLogs), 0);
    errors.push_str(&m);
    let m = s3(&config).check().await.unwrap_err();
    assert!(m.contains("403") && m.contains("credentials"), "{m}");
    errors.push_str(&m);
    w.moto.authenticate_after(1_000_000_000).await;
    assert!(w.moto.objects(BUCKET).await.is_empty(), "nothing written");

    // Once fixed, everything arrives.
    let report = drain(&w, s3(&config), 500).await;
    assert_eq!(report.gave_up, None);
    assert_eq!(offset(&w, SourceKind::AuditLogs), 50);
    drop(_guard);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(!logs.contains(secret), "the secret key in the logs");
    assert!(!errors.contains(secret), "the secret key in errors");
    assert!(!debug.contains(secret), "the secret key in Debug output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_verifies_the_bucket_without_writing() {
    use mirotrail::sink::s3::CheckOutcome;
    let w = world().await;
    let config = sink_config(&w, "secret", "");
    let m = s3(&config).check().await.unwrap_err();
    assert!(m.contains("404") && m.contains("create the bucket"), "{m}");

    w.moto.create_bucket(BUCKET).await;
    let outcomes = s3(&config).check().await.unwrap();
    assert!(
        matches!(&outcomes[..], [CheckOutcome::Ok(head), CheckOutcome::NotVerified(list)]
            if head.contains("exists") && list.contains("`miro/logs/`")),
        "{outcomes:?}"
    );
    assert!(w.moto.objects(BUCKET).await.is_empty(), "nothing written");
}

/// The real binary: `run --once` from the Miro emulator to moto with the credentials from
/// the AWS chain's environment variables, then `check`, at trace level; every row in the
/// bucket once, and neither the secret key nor the session token in any output or file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_delivers_to_s3_and_never_prints_the_secret() {
    use crate::support::{Env, TOKEN, minutes, org, text};
    let now = mirotrail_emulator::UnixMs::now();
    let (start, end) = (now.minus(minutes(150)), now.minus(minutes(5)));
    let env = Env::start(org(600, 200, start, end)).await;
    let moto = Moto::start().await;
    moto.create_bucket(BUCKET).await;
    let secret = "s3SecretKey/7f3a9c2e5b8d41f6a0c3e9b2d7f1a4c8";
    let session = "FwoGZXIvYXdzEXAMPLEsessionTOKEN0123456789abcdef";
    let cfg = env.config(&format!(
        "[sources.audit_logs]\ninitial_lookback = \"3h\"\n[sources.content_logs]\nenabled = true\n\
         initial_lookback = \"3h\"\n[sinks.s3]\ntype = \"s3\"\nbucket = \"{BUCKET}\"\n\
         endpoint = \"{}\"\nregion = \"us-east-1\"\nforce_path_style = true\n",
        moto.url
    ));
    let cfg = cfg.to_str().unwrap();
    let mut outputs = Vec::new();
    for args in [
        vec!["run", "--config", cfg, "--once"],
        vec!["check", "--config", cfg],
    ] {
        let mut cmd = env.command(&args, TOKEN);
        cmd.env("RUST_LOG", "trace")
            .env("AWS_ACCESS_KEY_ID", "ASIAMIROTRAILTEST02")
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_SESSION_TOKEN", session)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", env.dir.path().join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                env.dir.path().join("no-aws-credentials"),
            )
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_REGION")
            .env_remove("AWS_ENDPOINT_URL");
        outputs.push(cmd.output().await.unwrap());
    }
    assert!(outputs[0].status.success(), "{}", text(&outputs[0]));
    let check = text(&outputs[1]);
    assert!(
        check.contains("sink s3") && check.contains("exists"),
        "{check}"
    );

    let mut ids: HashMap<String, usize> = HashMap::new();
    for lines in moto.objects(BUCKET).await.values() {
        for l in lines {
            let v: Value = serde_json::from_str(l).unwrap();
            *ids.entry(v["id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let db = env.db();
    let stored = crate::support::count(&db, "MiroAuditLogs_CL")
        + crate::support::count(&db, "MiroContentLogs_CL");
    assert!(stored > 600, "{stored}");
    assert_eq!(
        i64::try_from(ids.len()).unwrap(),
        stored,
        "every stored row"
    );
    assert!(ids.values().all(|&n| n == 1), "each once");

    for out in &outputs {
        for needle in [secret, session] {
            assert!(!text(out).contains(needle), "{needle} in {}", text(out));
        }
    }
    let mut dirs = vec![env.dir.path().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            for needle in [secret, session] {
                let found = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
                assert!(!found, "{needle} in {}", p.display());
            }
        }
    }
}
