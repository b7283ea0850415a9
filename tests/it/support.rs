//! Shared helpers: an emulated org, a config in a temp dir, running the binary, reading
//! the store.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use mirotrail::config::SourceKind;
use mirotrail::emulator::azure::AzureEmulatorHandle;
use mirotrail::emulator::miro::{
    EmulatedToken, LateArrival, MiroEmulator, MiroEmulatorConfig, MiroEmulatorHandle, StreamShape,
};
use mirotrail::timefmt::UnixMs;
use serde_json::Value;

pub const TOKEN: &str = "tok-7f3a9c2e5b8d41f6a0c3e9b2d7f1a4c8";
pub const AUDIT_ONLY_TOKEN: &str = "tok-audit-only-51c9e2";
pub const CONTENT_ONLY_TOKEN: &str = "tok-content-only-8e2d1f";

/// An emulated org with `audit` events and `content` items evenly over `[start, end)`,
/// no rate limit, no late arrivals, no faults.
pub fn org(audit: u64, content: u64, start: UnixMs, end: UnixMs) -> MiroEmulatorConfig {
    let mut c = MiroEmulatorConfig::demo(UnixMs::now(), 1, audit, content, TOKEN);
    c.audit = StreamShape {
        count: audit,
        start,
        end,
    };
    c.content = StreamShape {
        count: content,
        start,
        end,
    };
    c.rate_limit = None;
    c.late = LateArrival {
        share: 0.0,
        max_delay: Duration::ZERO,
    };
    c.tokens = vec![
        EmulatedToken {
            token: TOKEN.into(),
            scopes: vec![
                "auditlogs:read".into(),
                "contentlogs:export".into(),
                "boards:read".into(),
            ],
        },
        EmulatedToken {
            token: AUDIT_ONLY_TOKEN.into(),
            scopes: vec!["auditlogs:read".into()],
        },
        EmulatedToken {
            token: CONTENT_ONLY_TOKEN.into(),
            scopes: vec!["contentlogs:export".into()],
        },
    ];
    c
}

pub fn minutes(n: i64) -> Duration {
    Duration::from_secs((n * 60) as u64)
}

/// A test directory with a running emulator and a config file.
pub struct Env {
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
    pub async fn start(config: MiroEmulatorConfig) -> Env {
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

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("mirotrail.db")
    }

    /// Writes `mirotrail.toml`: the emulator's base URL and org id, the store in the temp
    /// dir, then `extra` (sections and keys).
    pub fn config(&self, extra: &str) -> PathBuf {
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
    pub async fn run(&self, args: &[&str], token: &str) -> Output {
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
    pub fn spawn(&self, mut cmd: tokio::process::Command) -> tokio::process::Child {
        let mut logs = self.child_logs.lock().unwrap();
        let path = self.dir.path().join(format!("child-{}.log", logs.len()));
        let file = std::fs::File::create(&path).unwrap();
        cmd.stdout(file.try_clone().unwrap()).stderr(file);
        logs.push(path);
        cmd.spawn().unwrap()
    }

    pub fn command(&self, args: &[&str], token: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_mirotrail"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("MIRO_TOKEN", token)
            .env_remove("MIROTRAIL_CONFIG")
            .kill_on_drop(true);
        cmd
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// All rows of a table as column -> value (text or null).
pub fn table(db: &Path, table: &str) -> Vec<BTreeMap<String, Option<String>>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM {table} ORDER BY _seq"))
        .unwrap();
    let names: Vec<String> = stmt.column_names().map(str::to_string).collect();
    let rows = stmt
        .query_map([], |r| {
            let mut m = BTreeMap::new();
            for (i, n) in names.iter().enumerate() {
                let v: rusqlite::types::Value = r.get(i)?;
                m.insert(
                    n.clone(),
                    match v {
                        rusqlite::types::Value::Null => None,
                        rusqlite::types::Value::Integer(i) => Some(i.to_string()),
                        rusqlite::types::Value::Real(f) => Some(f.to_string()),
                        rusqlite::types::Value::Text(t) => Some(t),
                        rusqlite::types::Value::Blob(_) => Some("<blob>".into()),
                    },
                );
            }
            Ok(m)
        })
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// Row count of a table (0 when the store does not exist yet).
pub fn count(db: &Path, table: &str) -> i64 {
    if !db.exists() {
        return 0;
    }
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap_or(0)
}

/// The emulated audit events with `createdAt` in `[from, to)` and visible now, by id.
pub fn expected_audit(
    emu: &MiroEmulatorHandle,
    from: UnixMs,
    to: UnixMs,
) -> HashMap<String, Value> {
    expected_audit_visible_by(emu, from, to, UnixMs::now())
}

/// The emulated audit events with `createdAt` in `[from, to)` that were visible at `by`.
pub fn expected_audit_visible_by(
    emu: &MiroEmulatorHandle,
    from: UnixMs,
    to: UnixMs,
    by: UnixMs,
) -> HashMap<String, Value> {
    let org = emu.org();
    org.audit_range(from, to)
        .filter(|&i| org.audit_visible_at(i) <= by)
        .map(|i| {
            let ev = org.audit_event(i);
            (ev["id"].as_str().unwrap().to_string(), ev)
        })
        .collect()
}

/// The emulated content items with `actionTime` in `[from, to)` and visible now, by id.
pub fn expected_content(
    emu: &MiroEmulatorHandle,
    from: UnixMs,
    to: UnixMs,
) -> HashMap<String, Value> {
    let org = emu.org();
    let now = UnixMs::now();
    org.content_range(from, to)
        .filter(|&i| org.content_visible_at(i) <= now)
        .map(|i| {
            let ev = org.content_item(i);
            (ev["id"].as_str().unwrap().to_string(), ev)
        })
        .collect()
}

/// KQL `tostring()` of a JSON pointer into an item, written independently of the
/// product's transform: missing and null are `""`.
pub fn kql(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Asserts that each id in `ids` appears exactly once in the table and nothing else does.
pub fn assert_exactly_once(db: &Path, table: &str, expected: &HashMap<String, Value>) {
    let rows = self::table(db, table);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in &rows {
        *seen.entry(r["id"].clone().unwrap()).or_default() += 1;
    }
    let missing: Vec<&String> = expected
        .keys()
        .filter(|id| !seen.contains_key(*id))
        .collect();
    let extra: Vec<&String> = seen
        .keys()
        .filter(|id| !expected.contains_key(*id))
        .collect();
    let dup: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && dup.is_empty(),
        "{table}: {} expected, {} rows; missing {} (e.g. {:?}), extra {} (e.g. {:?}), duplicated {}",
        expected.len(),
        rows.len(),
        missing.len(),
        missing.iter().take(3).collect::<Vec<_>>(),
        extra.len(),
        extra.iter().take(3).collect::<Vec<_>>(),
        dup.len()
    );
}

/// The audit source's watermark: everything before it has been read.
pub fn audit_watermark(db: &Path) -> UnixMs {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    UnixMs(
        conn.query_row(
            "SELECT watermark_ms FROM checkpoints WHERE source = 'audit_logs'",
            [],
            |r| r.get(0),
        )
        .unwrap(),
    )
}

/// Rows of a local table as the Azure emulator shapes them, by id.
pub fn local_rows(env: &Env, source: SourceKind) -> HashMap<String, Value> {
    table(&env.db(), source.table())
        .into_iter()
        .map(|r| {
            let cells: Vec<Option<String>> = mirotrail::store::transform::columns(source)
                .iter()
                .map(|c| r[*c].clone())
                .collect();
            (
                r["id"].clone().unwrap(),
                mirotrail::emulator::azure::table_row(source, &cells),
            )
        })
        .collect()
}

/// Every local row is in the emulated Azure table, equal to the local row. Returns how
/// many rows Azure holds more than once.
pub fn assert_all_in_azure(env: &Env, azure: &AzureEmulatorHandle, source: SourceKind) -> usize {
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
