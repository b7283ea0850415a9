//! Helpers shared by the integration tests (`tests/it`) and the benchmarks (`benches/`):
//! an emulated org, reading a store read-only, what the emulated org should have delivered,
//! and the exactly-once assertion.
//!
//! Depends on the emulator crate, not on `mirotrail`: what needs the `mirotrail` binary or
//! library (a test directory running the binary, comparing with the local transform) stays
//! in `tests/it/support.rs`.

pub mod moto;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use mirotrail_emulator::UnixMs;
use mirotrail_emulator::miro::{
    EmulatedToken, LateArrival, MiroEmulatorConfig, MiroEmulatorHandle, StreamShape,
};
use serde_json::Value;

pub const TOKEN: &str = "tok-7f3a9c2e5b8d41f6a0c3e9b2d7f1a4c8";
pub const AUDIT_ONLY_TOKEN: &str = "tok-audit-only-51c9e2";
pub const CONTENT_ONLY_TOKEN: &str = "tok-content-only-8e2d1f";

/// An emulated org with `audit` events and `content` items evenly over `[start, end)`,
/// no AI interaction entries (tests that want them set `ai`), no rate limit, no late
/// arrivals, no faults.
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
    c.ai = StreamShape {
        count: 0,
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
                "aiinteractionlogs:read".into(),
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

/// A number from the environment (test and benchmark knobs), `default` when unset.
#[allow(
    clippy::disallowed_methods,
    reason = "test and benchmark knobs, not mirotrail's configuration"
)]
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn minutes(n: i64) -> Duration {
    Duration::from_secs(u64::try_from(n * 60).expect("minutes are not negative"))
}

pub fn text(out: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// All rows of a table as column -> value (text or null). The Sentinel tables of the
/// store are views that need the store's SQL functions: pass a connection from
/// `mirotrail::store::Store::open_read_only`.
pub fn table(conn: &rusqlite::Connection, table: &str) -> Vec<BTreeMap<String, Option<String>>> {
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
    // The Sentinel tables are views over `<table>_rows` (store schema step 7), which need
    // the store's SQL functions; the stored table counts the same rows without them.
    let table = stored_table(&conn, table);
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap_or(0)
}

/// `<table>_rows` when the store keeps the Sentinel table `table` as a view over it.
fn stored_table(conn: &rusqlite::Connection, table: &str) -> String {
    let stored = format!("{table}_rows");
    let has_stored: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = ?1",
            [&stored],
            |r| r.get(0),
        )
        .unwrap_or(false);
    if has_stored {
        stored
    } else {
        table.to_string()
    }
}

/// The `id` of every row of a Sentinel table, in `_seq` order.
fn ids(db: &Path, table: &str) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let table = stored_table(&conn, table);
    let mut stmt = conn
        .prepare(&format!("SELECT id FROM {table} ORDER BY _seq"))
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
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

/// The emulated AI interaction entries with `storedAt` in `[from, to)` and visible now
/// (every stored entry is), by id.
pub fn expected_ai(emu: &MiroEmulatorHandle, from: UnixMs, to: UnixMs) -> HashMap<String, Value> {
    let org = emu.org();
    let now = UnixMs::now();
    org.ai_range(from, to)
        .filter(|&i| org.ai_stored_at(i) <= now)
        .map(|i| {
            let e = org.ai_entry(i);
            (e["id"].as_str().unwrap().to_string(), e)
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
    let rows = ids(db, table);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for id in &rows {
        *seen.entry(id.clone()).or_default() += 1;
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
