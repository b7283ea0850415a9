//! Helpers of the integration tests that run the `mirotrail` binary or use its library;
//! the rest is shared with the benchmarks in the `mirotrail-test-support` crate.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use mirotrail::config::SourceKind;
use mirotrail_emulator::azure::{AzureEmulatorHandle, Stream};
use mirotrail_emulator::miro::{MiroEmulator, MiroEmulatorConfig, MiroEmulatorHandle};
pub(crate) use mirotrail_test_support::*;
use serde_json::Value;

/// All rows of a table of the store as column -> value, read through the store's own
/// connection (the Sentinel tables are views that need its SQL functions).
pub(crate) fn table(
    db: &std::path::Path,
    name: &str,
) -> Vec<std::collections::BTreeMap<String, Option<String>>> {
    mirotrail_test_support::table(&mirotrail::store::Store::open_read_only(db).unwrap(), name)
}

/// A test directory with a running emulator and a config file.
pub(crate) struct Env {
    pub dir: tempfile::TempDir,
    pub emu: MiroEmulatorHandle,
    pub org_id: String,
    /// Files holding the standard output and error of children started with `spawn`:
    /// kept out of `cargo test`'s output, printed by the test when it fails.
    child_logs: std::sync::Mutex<Vec<PathBuf>>,
}

impl Drop for Env {
    /// A failing test shows what its children logged (`eprintln!` from the test's own
    /// thread, which the test harness captures with the failure).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let logs = self
            .child_logs
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        for path in logs {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            eprintln!("--- {} ---\n{text}", path.display());
        }
    }
}

impl Env {
    pub(crate) async fn start(config: MiroEmulatorConfig) -> Env {
        let org_id = config.org_id.clone();
        let emu = MiroEmulator::start(config, "127.0.0.1:0".parse().unwrap())
            .await
            .expect("emulator starts");
        Env {
            dir: tempfile::tempdir().unwrap(),
            emu,
            org_id,
            child_logs: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn db(&self) -> PathBuf {
        self.dir.path().join("mirotrail.db")
    }

    /// Writes `mirotrail.toml`: the emulator's base URL and org id, the store in the temp
    /// dir, then `extra` (sections and keys).
    pub(crate) fn config(&self, extra: &str) -> PathBuf {
        let path = self.dir.path().join("mirotrail.toml");
        let text = format!(
            "[miro]\napi_base = \"{}\"\norg_id = \"{}\"\nmax_retries = 12\nretry_initial_backoff = \"20ms\"\n\n[store]\npath = \"mirotrail.db\"\n\n{extra}\n",
            self.emu.base_url(),
            self.org_id
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs the binary with `MIRO_TOKEN = token` and waits for it.
    pub(crate) async fn run(&self, args: &[&str], token: &str) -> Output {
        let mut cmd = self.command(args, token);
        tokio::time::timeout(Duration::from_secs(240), cmd.output())
            .await
            .expect("mirotrail finished within 4 minutes")
            .expect("mirotrail runs")
    }

    /// Starts `cmd` in the background with its standard output and error going to a log
    /// file of this test (printed only if the test fails), so a passing `cargo test` is
    /// not interleaved with the children's logs. For children whose output the test
    /// reads, pipe it instead.
    pub(crate) fn spawn(&self, mut cmd: tokio::process::Command) -> tokio::process::Child {
        let mut logs = self.child_logs.lock().unwrap();
        let path = self.dir.path().join(format!("child-{}.log", logs.len()));
        let file = std::fs::File::create(&path).unwrap();
        cmd.stdout(file.try_clone().unwrap()).stderr(file);
        logs.push(path);
        cmd.spawn().unwrap()
    }

    pub(crate) fn command(&self, args: &[&str], token: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_mirotrail"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("MIRO_TOKEN", token)
            .env_remove("MIROTRAIL_CONFIG")
            .kill_on_drop(true);
        cmd
    }
}

/// Rows of a local table as the Azure emulator shapes them, by id.
pub(crate) fn local_rows(env: &Env, source: SourceKind) -> HashMap<String, Value> {
    table(&env.db(), source.table())
        .into_iter()
        .map(|r| {
            let cells: Vec<Option<String>> = mirotrail::store::transform::columns(source)
                .iter()
                .map(|c| r[*c].clone())
                .collect();
            (
                r["id"].clone().unwrap(),
                mirotrail_emulator::azure::table_row(stream(source), &cells),
            )
        })
        .collect()
}

/// Every local row is in the emulated Azure table, equal to the local row. Returns how
/// many rows Azure holds more than once.
pub(crate) fn assert_all_in_azure(
    env: &Env,
    azure: &AzureEmulatorHandle,
    source: SourceKind,
) -> usize {
    let local = local_rows(env, source);
    let remote = azure.rows(source.table());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for row in &remote {
        let id = row["id"].as_str().unwrap().to_string();
        let expected = local
            .get(&id)
            .unwrap_or_else(|| panic!("{id} in Azure but not in the store"));
        assert_eq!(row, expected, "{id}");
        *seen.entry(id).or_default() += 1;
    }
    let missing: Vec<&String> = local.keys().filter(|id| !seen.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} rows never reached Azure, e.g. {:?}",
        missing.len(),
        local.len(),
        &missing[..missing.len().min(3)]
    );
    seen.values().map(|n| n - 1).sum()
}

/// The emulator's stream for a source.
pub(crate) fn stream(source: SourceKind) -> Stream {
    match source {
        SourceKind::AuditLogs => Stream::AuditLogs,
        SourceKind::ContentLogs => Stream::ContentLogs,
        SourceKind::AiInteractionLogs => Stream::AiInteractionLogs,
    }
}

/// An integer beyond 2^64, as Miro may send inside `details`.
pub(crate) const BIG: &str = "30744573469876543210123";

/// The `i`-th test item of `source` for the sink tests (ids `a000001`, `c000001`,
/// `ai000001`; `BIG` inside the dynamic member, so exact digits can be checked).
pub(crate) fn sink_item(source: SourceKind, i: usize) -> String {
    match source {
        SourceKind::AuditLogs => format!(
            r#"{{"id":"a{i:06}","type":"event","event":"board_opened","category":"boards","createdAt":"2024-05-01T10:{:02}:{:02}.{:03}+0000","createdBy":{{"type":"user","id":"u1","email":"u1@example.com"}},"details":{{"big":{BIG},"pad":"{}"}}}}"#,
            i / 60 % 60,
            i % 60,
            i % 1000,
            "x".repeat(100)
        ),
        SourceKind::ContentLogs => format!(
            r#"{{"id":"c{i:06}","contentId":"b1","actionType":"update","actionTime":"2024-05-01T11:{:02}:{:02}.250Z","actor":{{"id":"u1"}},"itemType":"widget","itemId":"w{i}","state":{{"big":{BIG}}}}}"#,
            i / 60 % 60,
            i % 60
        ),
        SourceKind::AiInteractionLogs => format!(
            r#"{{"id":"ai{i:06}","createdAt":"2024-05-01T12:{:02}:{:02}.000Z","storedAt":"2024-05-01T12:{:02}:{:02}.500Z","sessionId":"s1","messageId":"m{i}","aiFeatureName":"ai_generate_sticky_notes","logType":"request","actor":{{"id":"u1"}},"details":{{"big":{BIG}}}}}"#,
            i / 60 % 60,
            i % 60,
            i / 60 % 60,
            i % 60
        ),
    }
}

/// Stores `n` items of `source` (pages of 500) as the collector would, without a window.
pub(crate) fn fill_store(store: &mirotrail::store::Store, source: SourceKind, n: usize) {
    let items: Vec<String> = (0..n).map(|i| sink_item(source, i)).collect();
    commit_items(store, source, &items);
}

/// Commits raw `items` of `source` to the store in pages of 500, as the collector does,
/// with a checkpoint that moves no watermark.
pub(crate) fn commit_items(store: &mirotrail::store::Store, source: SourceKind, items: &[String]) {
    commit_org_items(store, mirotrail::store::OrgKey::DEFAULT, source, items);
}

/// [`commit_items`] for organisation `org`.
pub(crate) fn commit_org_items(
    store: &mirotrail::store::Store,
    org: mirotrail::store::OrgKey,
    source: SourceKind,
    items: &[String],
) {
    for page in items.chunks(500) {
        let rows: Vec<(mirotrail::store::StoredRow, &str)> = page
            .iter()
            .map(|raw| (mirotrail::store::stored_row(source, raw), raw.as_str()))
            .collect();
        let checkpoint = mirotrail::store::Checkpoint {
            org,
            source,
            watermark: mirotrail::timefmt::UnixMs(0),
            watermark_polled: mirotrail::timefmt::UnixMs(0),
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

/// A store in a temporary folder beside a destination's emulator: the world of the sink
/// tests (`sentinel.rs`, `splunk.rs`, `elastic.rs`). `server` is the emulator's handle,
/// `server_config` what it was started with.
pub(crate) struct SinkWorld<H, C> {
    pub dir: tempfile::TempDir,
    pub store: std::sync::Arc<mirotrail::store::Store>,
    pub server: H,
    pub server_config: C,
}

impl<H, C> SinkWorld<H, C> {
    /// A new store (`m.db` in a new folder) beside the started `server`.
    pub(crate) fn new(server: H, server_config: C) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = mirotrail::store::Store::open(&dir.path().join("m.db")).unwrap();
        SinkWorld {
            dir,
            store: std::sync::Arc::new(store),
            server,
            server_config,
        }
    }

    /// Every stored row of `source`, in order.
    pub(crate) fn stored(&self, source: SourceKind) -> Vec<mirotrail::store::OutboxRow> {
        self.store.read_outbox(source, 0, 1_000_000).unwrap()
    }

    /// The delivery offset of the sink `sink` for `source`.
    pub(crate) fn offset(&self, sink: &str, source: SourceKind) -> i64 {
        self.store.delivered_offset(sink, source).unwrap()
    }

    /// The Miro id of every stored row, all sources.
    pub(crate) fn all_ids(&self) -> Vec<String> {
        SourceKind::ALL
            .iter()
            .flat_map(|&s| self.stored(s))
            .map(|r| {
                serde_json::from_str::<Value>(&r.raw).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    /// Runs the real delivery loop of the sink `name` over the store until it has
    /// delivered everything (or given up), retrying transient failures for `retry_for`;
    /// at most 120 s.
    pub(crate) async fn drain(
        &self,
        name: &str,
        sink: Box<dyn mirotrail::sink::Sink>,
        batch_rows: usize,
        retry_for: Duration,
    ) -> mirotrail::sink::DeliveryReport {
        use mirotrail::sink::{Delivery, DeliveryMode, deliver};
        let (_trigger, shutdown) = mirotrail::shutdown::channel();
        let delivery = Delivery {
            name: name.into(),
            sink,
            batch_rows,
            store: mirotrail::store::StoreHandle::new(self.store.clone()),
            sources: SourceKind::ALL.to_vec(),
            mode: DeliveryMode::Drain {
                collectors_done: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
                retry_for,
            },
            new_rows: std::sync::Arc::new(tokio::sync::Notify::new()),
            telemetry: None,
        };
        tokio::time::timeout(Duration::from_secs(120), deliver(delivery, shutdown))
            .await
            .expect("delivery finished in time")
            .unwrap()
    }
}

/// What `tracing` logged while a [`capture_logs`] guard lived.
#[derive(Clone, Default)]
pub(crate) struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every `tracing` event of this thread (all levels) until the guard is dropped.
pub(crate) fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// Writes `secret` to `name` in the test folder, readable by the user only (as mirotrail
/// asks of a secret file); its path.
pub(crate) fn private_file(env: &Env, name: &str, secret: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = env.dir.path().join(name);
    std::fs::write(&path, secret).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The real binary, at trace level, with the audit and content logs of the last two
/// hours and the sink section `sinks`: `run --once` (which must succeed), then `check`.
/// Their outputs, in that order.
pub(crate) async fn run_once_then_check(env: &Env, sinks: &str) -> Vec<Output> {
    let cfg = env.config(&format!(
        "[sources.audit_logs]\ninitial_lookback = \"2h\"\n[sources.content_logs]\nenabled = true\n\
         initial_lookback = \"2h\"\n{sinks}"
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
    outputs
}

/// Every audit and content row of the store (more than 1000) is in `delivered` (Miro id
/// -> times written), each once.
pub(crate) fn assert_every_stored_row_once(env: &Env, delivered: &HashMap<String, usize>) {
    let db = env.db();
    let stored = count(&db, "MiroAuditLogs_CL") + count(&db, "MiroContentLogs_CL");
    assert!(stored > 1000, "{stored}");
    assert_eq!(
        i64::try_from(delivered.len()).unwrap(),
        stored,
        "every stored row delivered"
    );
    assert!(delivered.values().all(|&n| n == 1), "each once");
}

/// `secret` is in none of `outputs` and in no file under the test folder but `holder`
/// (the file it is read from).
pub(crate) fn assert_secret_nowhere(
    env: &Env,
    outputs: &[Output],
    secret: &str,
    holder: &std::path::Path,
) {
    for out in outputs {
        assert!(!text(out).contains(secret), "{}", text(out));
    }
    for p in files_under(env.dir.path()) {
        if p != holder {
            let bytes = std::fs::read(&p).unwrap();
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "the secret in {}", p.display());
        }
    }
}

/// Every file under `dir`, at any depth.
pub(crate) fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files
}
