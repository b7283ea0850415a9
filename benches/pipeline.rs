//! `cargo bench --bench pipeline`: mirotrail against the emulators on loopback, and the
//! Sentinel CCF pollers' way of polling against the same emulated org.
//!
//! The measured process is the real `mirotrail` binary, run as a child process (its peak
//! RSS and CPU time come from `wait4`); the emulators run in this process. Prints one
//! table and writes it, with the machine description, to `BENCHMARKS.md`.
//!
//! Knobs (environment): `BENCH_AUDIT_EVENTS` (1,000,000), `BENCH_CONTENT_ITEMS`
//! (200,000), `BENCH_LIVE_SECS` (330: the live phase, long enough for the CCF profile's
//! second 5-minute poll), `BENCH_OUT` (`BENCHMARKS.md`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mirotrail_emulator::UnixMs;
use mirotrail_emulator::azure::{AUDIT_DCR, AzureEmulator, AzureEmulatorConfig, CONTENT_DCR};
use mirotrail_emulator::miro::{
    EmulatedToken, LateArrival, MiroEmulator, MiroEmulatorConfig, MiroEmulatorHandle,
};
use mirotrail_test_support::{self as support, env_u64};

const TOKEN: &str = "bench-token-5d1c0e";
const BIN: &str = env!("CARGO_BIN_EXE_mirotrail");

/// A text knob from the environment, `default` when unset.
#[allow(
    clippy::disallowed_methods,
    reason = "benchmark knobs, not mirotrail's configuration"
)]
fn env_text(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

/// The tests' org of `audit` + `content` events over `[start, end)` (no rate limit), with
/// the given late arrivals, pages of up to 500 audit events and the benchmark's token.
fn org(
    audit: u64,
    content: u64,
    start: UnixMs,
    end: UnixMs,
    late: LateArrival,
) -> MiroEmulatorConfig {
    let mut c = support::org(audit, content, start, end);
    c.late = late;
    c.audit_max_limit = 500;
    c.tokens = vec![EmulatedToken {
        token: TOKEN.into(),
        scopes: vec!["auditlogs:read".into(), "contentlogs:export".into()],
    }];
    c
}

const NO_LATE: LateArrival = LateArrival {
    share: 0.0,
    max_delay: Duration::ZERO,
};

/// The emulator's default late arrivals (as in `mirotrail demo`): 2% of events become
/// visible up to 30 s after their timestamp.
const DEFAULT_LATE: LateArrival = LateArrival {
    share: 0.02,
    max_delay: Duration::from_secs(30),
};

/// What `wait4` says about a finished child.
#[derive(Debug, Clone, Copy)]
struct ChildUsage {
    wall: Duration,
    cpu: Duration,
    max_rss_kb: u64,
    success: bool,
}

/// Runs the binary to its end; peak RSS and CPU from `wait4`.
async fn run_child(dir: &Path, args: &[&str], log: &str) -> ChildUsage {
    let stderr = std::fs::File::create(dir.join(log)).unwrap();
    let child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("MIRO_TOKEN", TOKEN)
        .env(
            "AZURE_CLIENT_SECRET",
            AzureEmulatorConfig::default().client_secret,
        )
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("mirotrail starts");
    wait_child(child).await
}

async fn wait_child(child: std::process::Child) -> ChildUsage {
    let started = Instant::now();
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    tokio::task::spawn_blocking(move || {
        let mut status = 0;
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a child of this process, waited for once; `status` and `usage` are valid.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        assert_eq!(r, pid, "wait4 failed");
        drop(child);
        let tv = |t: libc::timeval| {
            Duration::new(
                t.tv_sec.unsigned_abs(),
                u32::try_from(t.tv_usec).expect("below 10^6") * 1000,
            )
        };
        ChildUsage {
            wall: started.elapsed(),
            cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
            max_rss_kb: usage.ru_maxrss.unsigned_abs(),
            success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        }
    })
    .await
    .unwrap()
}

fn sigterm(child: &std::process::Child) {
    // SAFETY: sending a signal to our own child.
    unsafe {
        libc::kill(
            libc::pid_t::try_from(child.id()).expect("a pid"),
            libc::SIGTERM,
        );
    }
}

/// Rows in a table of the store.
fn count(db: &Path, table: &str) -> u64 {
    u64::try_from(support::count(db, table)).expect("a row count")
}

fn miro_section(emu: &MiroEmulatorHandle, org_id: &str) -> String {
    format!(
        "[miro]\napi_base = \"{}\"\norg_id = \"{org_id}\"\nretry_initial_backoff = \"50ms\"\n\n[store]\npath = \"mirotrail.db\"\n\n",
        emu.base_url()
    )
}

fn sentinel_section(base: &str) -> String {
    let a = AzureEmulatorConfig::default();
    format!(
        "[sinks.sentinel]\ntype = \"azure_logs_ingestion\"\nendpoint = \"{base}\"\nauthority_host = \"{base}\"\n\
         audit_logs_dcr = \"{AUDIT_DCR}\"\ncontent_logs_dcr = \"{CONTENT_DCR}\"\n\
         tenant_id = \"{}\"\nclient_id = \"{}\"\nclient_secret_env = \"AZURE_CLIENT_SECRET\"\n",
        a.tenant_id, a.client_id
    )
}

/// One backfill of the whole emulated span.
struct BackfillRun {
    audit: u64,
    content: u64,
    usage: ChildUsage,
    stored: u64,
    audit_requests: u64,
    content_requests: u64,
    dir: tempfile::TempDir,
}

async fn backfill(audit: u64, content: u64) -> BackfillRun {
    let now = UnixMs::now();
    let config = org(
        audit,
        content,
        now.minus(days(28)),
        now.minus(days(2)),
        NO_LATE,
    );
    let org_id = config.org_id.clone();
    let emu = MiroEmulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir_in(env_text("BENCH_DIR", ".")).unwrap();
    let toml = format!(
        "{}[sources.content_logs]\nenabled = true\n\n[budget]\ncredits_per_minute = 1000000000\n",
        miro_section(&emu, &org_id)
    );
    std::fs::write(dir.path().join("mirotrail.toml"), toml).unwrap();
    let usage = run_child(
        dir.path(),
        &[
            "backfill",
            "--config",
            "mirotrail.toml",
            "--since",
            "29d",
            "--slice",
            "1d",
        ],
        "backfill.log",
    )
    .await;
    assert!(
        usage.success,
        "backfill failed: see {}",
        dir.path().join("backfill.log").display()
    );
    let stats = emu.stats();
    emu.shutdown().await;
    let db = dir.path().join("mirotrail.db");
    let stored = count(&db, "MiroAuditLogs_CL") + count(&db, "MiroContentLogs_CL");
    assert_eq!(stored, audit + content, "every event stored once");
    BackfillRun {
        audit,
        content,
        usage,
        stored,
        audit_requests: stats.audit_requests,
        content_requests: stats.content_requests,
        dir,
    }
}

/// The store of `run` delivered to the Azure emulator by `run --once`.
struct DeliveryRun {
    usage: ChildUsage,
    records: u64,
    bytes: u64,
}

async fn deliver(run: &BackfillRun) -> DeliveryRun {
    let azure_config = AzureEmulatorConfig {
        keep_rows: false,
        ..AzureEmulatorConfig::default()
    };
    let azure = AzureEmulator::start(azure_config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // The collector finds nothing new (the org ends two days ago): this is delivery.
    let now = UnixMs::now();
    let emu = MiroEmulator::start(
        org(0, 0, now.minus(days(3)), now.minus(days(2)), NO_LATE),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let toml = format!(
        "{}[sources.content_logs]\nenabled = true\n\n{}",
        miro_section(&emu, "3074457345821141000"),
        sentinel_section(&azure.base_url())
    );
    std::fs::write(run.dir.path().join("deliver.toml"), toml).unwrap();
    let usage = run_child(
        run.dir.path(),
        &["run", "--once", "--config", "deliver.toml"],
        "deliver.log",
    )
    .await;
    assert!(usage.success, "delivery failed: see deliver.log");
    let stats = azure.stats();
    azure.shutdown().await;
    emu.shutdown().await;
    DeliveryRun {
        usage,
        records: stats.records_accepted,
        bytes: stats.bytes_received,
    }
}

/// One polling profile in live mode.
struct LiveRun {
    name: &'static str,
    expected: u64,
    missed: u64,
    late_expected: u64,
    late_missed: u64,
    stored: u64,
    audit_requests: u64,
    content_requests: u64,
    audit_stored: u64,
    content_stored: u64,
    to_store: Vec<i64>,
    to_ack: Vec<i64>,
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "p in [0, 1]: an index into `sorted`"
)]
fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn live(name: &'static str, sources: &str, secs: u64) -> LiveRun {
    let t0 = UnixMs::now();
    // 20 audit events and 5 content items a second, from 10 minutes ago to an hour ahead:
    // events become visible as the clock reaches them (plus their late delay).
    let (start, end) = (
        t0.minus(Duration::from_secs(600)),
        t0.plus(Duration::from_secs(3600)),
    );
    let config = org(20 * 4200, 5 * 4200, start, end, DEFAULT_LATE);
    let org_id = config.org_id.clone();
    let emu = MiroEmulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let azure_config = AzureEmulatorConfig {
        keep_rows: false,
        record_ack_times: true,
        ..AzureEmulatorConfig::default()
    };
    let azure = AzureEmulator::start(azure_config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir_in(env_text("BENCH_DIR", ".")).unwrap();
    let toml = format!(
        "{}{sources}\n{}",
        miro_section(&emu, &org_id),
        sentinel_section(&azure.base_url())
    );
    std::fs::write(dir.path().join("mirotrail.toml"), toml).unwrap();
    let log = std::fs::File::create(dir.path().join("run.log")).unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config", "mirotrail.toml"])
        .current_dir(dir.path())
        .env("MIRO_TOKEN", TOKEN)
        .env(
            "AZURE_CLIENT_SECRET",
            AzureEmulatorConfig::default().client_secret,
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let stopped_at = UnixMs::now();
    sigterm(&child);
    let usage = wait_child(child).await;
    assert!(
        usage.success,
        "{name}: run failed, see {}",
        dir.path().join("run.log").display()
    );

    let db = dir.path().join("mirotrail.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let org = emu.org();
    let mut out = LiveRun {
        name,
        expected: 0,
        missed: 0,
        late_expected: 0,
        late_missed: 0,
        stored: 0,
        audit_requests: 0,
        content_requests: 0,
        audit_stored: 0,
        content_stored: 0,
        to_store: Vec::new(),
        to_ack: Vec::new(),
    };
    let acked: HashMap<String, UnixMs> = azure.acknowledged().into_iter().collect();
    for (source, table, time_col) in [
        ("audit_logs", "MiroAuditLogs_CL", "createdAt"),
        ("content_logs", "MiroContentLogs_CL", "actionTime"),
    ] {
        let (from, watermark): (i64, i64) = conn
            .query_row(
                "SELECT window_from_ms, watermark_ms FROM checkpoints WHERE source = ?1",
                [source],
                |r| Ok((r.get::<_, Option<i64>>(0)?.unwrap_or(0), r.get(1)?)),
            )
            .unwrap();
        let _ = from;
        let mut stored: HashMap<String, i64> = HashMap::new();
        let mut stmt = conn
            .prepare(&format!("SELECT id, _ingested_at, {time_col} FROM {table}"))
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .unwrap();
        for row in rows {
            let (id, at) = row.unwrap();
            stored.insert(id, UnixMs::parse(&at).unwrap().0);
        }
        let first_stored = stored.len();
        // Expected: every event with its time from the collector's start to its watermark
        // (all visible long before the run stopped).
        let lookback_start = t0.minus(Duration::from_secs(120));
        let range = if source == "audit_logs" {
            org.audit_range(lookback_start, UnixMs(watermark))
        } else {
            org.content_range(lookback_start, UnixMs(watermark))
        };
        for i in range {
            let (item, visible) = if source == "audit_logs" {
                (org.audit_event(i), org.audit_visible_at(i))
            } else {
                (org.content_item(i), org.content_visible_at(i))
            };
            let time = if source == "audit_logs" {
                org.audit_time(i)
            } else {
                org.content_time(i)
            };
            assert!(visible <= stopped_at);
            let id = item["id"].as_str().unwrap().to_string();
            let late = visible > time;
            out.expected += 1;
            out.late_expected += u64::from(late);
            match stored.get(&id) {
                None => {
                    out.missed += 1;
                    out.late_missed += u64::from(late);
                }
                // Freshness of live events only (not of the start's look-back backlog).
                Some(_) if visible < t0 => {}
                Some(at) => {
                    out.to_store.push(at - visible.0);
                    if let Some(ack) = acked.get(&id) {
                        out.to_ack.push(ack.0 - visible.0);
                    }
                }
            }
        }
        out.stored += first_stored as u64;
        if source == "audit_logs" {
            out.audit_stored = first_stored as u64;
        } else {
            out.content_stored = first_stored as u64;
        }
    }
    let stats = emu.stats();
    out.audit_requests = stats.audit_requests;
    out.content_requests = stats.content_requests;
    out.to_store.sort_unstable();
    out.to_ack.sort_unstable();
    emu.shutdown().await;
    azure.shutdown().await;
    out
}

/// The raw ceiling: the same pages, parsed with serde_json and inserted into SQLite (same
/// pragmas, one transaction per page), nothing else. Page generation is not timed.
fn raw_ceiling(events: u64) -> (u64, Duration) {
    let now = UnixMs::now();
    let org = mirotrail_emulator::miro::MiroOrg::new(&org(
        events,
        0,
        now.minus(days(28)),
        now.minus(days(2)),
        NO_LATE,
    ));
    let dir = tempfile::tempdir_in(env_text("BENCH_DIR", ".")).unwrap();
    let mut conn = rusqlite::Connection::open(dir.path().join("raw.db")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute_batch("CREATE TABLE t (id TEXT NOT NULL UNIQUE, raw TEXT NOT NULL)")
        .unwrap();
    let mut timed = Duration::ZERO;
    let mut i = 0;
    while i < events {
        let n = 500.min(events - i);
        let data: Vec<serde_json::Value> = (i..i + n).map(|k| org.audit_event(k)).collect();
        let page =
            serde_json::json!({"type": "cursor-list", "limit": 500, "size": n, "cursor": "x", "data": data})
                .to_string();
        let t = Instant::now();
        let parsed: serde_json::Value = serde_json::from_str(&page).unwrap();
        let tx = conn.transaction().unwrap();
        {
            let mut stmt = tx
                .prepare_cached("INSERT OR IGNORE INTO t (id, raw) VALUES (?1, ?2)")
                .unwrap();
            for item in parsed["data"].as_array().unwrap() {
                stmt.execute(rusqlite::params![
                    item["id"].as_str().unwrap(),
                    item.to_string()
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
        timed += t.elapsed();
        i += n;
    }
    (events, timed)
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown".into(), |s| s.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or("unknown".into(), |kb| {
            format!("{:.1} GiB", kb as f64 / 1048576.0)
        });
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "{cores} cores ({model}), {mem} RAM, {rustc}, Linux {}",
        kernel()
    )
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn per_k(requests: u64, events: u64) -> f64 {
    requests as f64 * 1000.0 / events.max(1) as f64
}

fn main() {
    let audit = env_u64("BENCH_AUDIT_EVENTS", 1_000_000);
    let content = env_u64("BENCH_CONTENT_ITEMS", 200_000);
    let live_secs = env_u64("BENCH_LIVE_SECS", 330);
    let out_path = PathBuf::from(env_text("BENCH_OUT", "BENCHMARKS.md"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let machine = machine();
        eprintln!("machine: {machine}");
        eprintln!("raw ceiling (serde_json + SQLite, {} events)...", audit / 4);
        let (raw_n, raw_t) = tokio::task::spawn_blocking(move || raw_ceiling(audit / 4))
            .await
            .unwrap();
        let raw_rate = raw_n as f64 / raw_t.as_secs_f64();
        eprintln!("backfill of {} + {}...", audit / 4, content / 4);
        let small = backfill(audit / 4, content / 4).await;
        eprintln!("backfill of {audit} + {content}...");
        let big = backfill(audit, content).await;
        eprintln!("delivery of {} rows to the Azure emulator...", big.stored);
        let delivery = deliver(&big).await;
        eprintln!("live mode, ours and sentinel-ccf side by side, {live_secs} s...");
        let ours = "[sources.audit_logs]\ninitial_lookback = \"2m\"\npoll_interval = \"5s\"\n\n\
                    [sources.content_logs]\nenabled = true\ninitial_lookback = \"2m\"\npoll_interval = \"5s\"\n";
        let ccf = "[sources.audit_logs]\ninitial_lookback = \"2m\"\npoll_interval = \"5m\"\nsettle_lag = \"0s\"\noverlap = \"0s\"\nmax_window = \"5m\"\npage_size = 100\n\n\
                   [sources.content_logs]\nenabled = true\ninitial_lookback = \"2m\"\npoll_interval = \"5m\"\nsettle_lag = \"0s\"\noverlap = \"0s\"\nmax_window = \"5m\"\npage_size = 100\n";
        let (ours, ccf) = tokio::join!(
            live("mirotrail", ours, live_secs),
            live("sentinel-ccf", ccf, live_secs)
        );

        let mut t = String::new();
        let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
        let big_rate = rate(big.stored, big.usage.wall);
        let _ = writeln!(t, "| figure | value | target |");
        let _ = writeln!(t, "|---|---|---|");
        let _ = writeln!(
            t,
            "| collector -> store, backfill of {} audit + {} content (events/s) | {:.0} | >= 100,000 |",
            big.audit, big.content, big_rate
        );
        let _ = writeln!(
            t,
            "| collector -> store, backfill of {} audit + {} content (events/s) | {:.0} | |",
            small.audit,
            small.content,
            rate(small.stored, small.usage.wall)
        );
        let _ = writeln!(
            t,
            "| store -> Azure emulator, {} rows (events/s) | {:.0} | >= 100,000 |",
            delivery.records,
            rate(delivery.records, delivery.usage.wall)
        );
        let _ = writeln!(
            t,
            "| store -> Azure emulator (MB/s sent, gzip) | {:.2} | |",
            delivery.bytes as f64 / 1e6 / delivery.usage.wall.as_secs_f64()
        );
        for r in [&small, &big] {
            let _ = writeln!(
                t,
                "| peak RSS of the backfill process, {} events (MB) | {:.1} | < 64 |",
                r.stored,
                r.usage.max_rss_kb as f64 / 1024.0
            );
        }
        let _ = writeln!(
            t,
            "| peak RSS of the delivery process, {} rows (MB) | {:.1} | |",
            delivery.records,
            delivery.usage.max_rss_kb as f64 / 1024.0
        );
        let _ = writeln!(
            t,
            "| CPU seconds per 100,000 events, backfill (user+sys) | {:.2} | |",
            big.usage.cpu.as_secs_f64() * 100_000.0 / big.stored as f64
        );
        let _ = writeln!(
            t,
            "| CPU seconds per 100,000 events, delivery (user+sys) | {:.2} | |",
            delivery.usage.cpu.as_secs_f64() * 100_000.0 / delivery.records.max(1) as f64
        );
        let _ = writeln!(
            t,
            "| backfill audit logs: requests / credits per 1,000 events | {:.2} / {:.0} | |",
            per_k(big.audit_requests, big.audit),
            per_k(big.audit_requests * 100, big.audit)
        );
        let _ = writeln!(
            t,
            "| backfill content logs: requests / credits per 1,000 events | {:.2} / {:.0} | 1 request per 1,000 |",
            per_k(big.content_requests, big.content),
            per_k(big.content_requests * 2000, big.content)
        );
        let _ = writeln!(
            t,
            "| raw ceiling: serde_json + SQLite insert, {raw_n} audit events (events/s) | {raw_rate:.0} | |"
        );
        let _ = writeln!(
            t,
            "| collector -> store as a share of the raw ceiling | {:.0}% | |",
            big_rate * 100.0 / raw_rate
        );
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "Live mode, {live_secs} s, the same emulated org for both (20 audit events/s, 5 content items/s, 2% of events late by up to 30 s):"
        );
        let _ = writeln!(t);
        let _ = writeln!(t, "| profile | events expected | missed | late expected | late missed | audit req / credits per 1,000 | content req / credits per 1,000 | visible -> stored p50 / p99 (s) | visible -> Azure ack p50 / p99 (s) |");
        let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|");
        for r in [&ours, &ccf] {
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {:.1} / {:.0} | {:.1} / {:.0} | {:.1} / {:.1} | {:.1} / {:.1} |",
                r.name,
                r.expected,
                r.missed,
                r.late_expected,
                r.late_missed,
                per_k(r.audit_requests, r.audit_stored),
                per_k(r.audit_requests * 100, r.audit_stored),
                per_k(r.content_requests, r.content_stored),
                per_k(r.content_requests * 2000, r.content_stored),
                percentile(&r.to_store, 0.5),
                percentile(&r.to_store, 0.99),
                percentile(&r.to_ack, 0.5),
                percentile(&r.to_ack, 0.99),
            );
        }
        let ratio = |a: f64, b: f64| if b == 0.0 { f64::NAN } else { a / b };
        let _ = writeln!(
            t,
            "| ours / theirs | | {} vs {} | | {} vs {} | {:.2} | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |",
            ours.missed,
            ccf.missed,
            ours.late_missed,
            ccf.late_missed,
            ratio(per_k(ours.audit_requests, ours.audit_stored), per_k(ccf.audit_requests, ccf.audit_stored)),
            ratio(per_k(ours.content_requests, ours.content_stored), per_k(ccf.content_requests, ccf.content_stored)),
            ratio(percentile(&ours.to_store, 0.5), percentile(&ccf.to_store, 0.5)),
            ratio(percentile(&ours.to_store, 0.99), percentile(&ccf.to_store, 0.99)),
            ratio(percentile(&ours.to_ack, 0.5), percentile(&ccf.to_ack, 0.5)),
            ratio(percentile(&ours.to_ack, 0.99), percentile(&ccf.to_ack, 0.99)),
        );
        println!("{machine}\n\n{t}");
        let doc = format!(
            "# Benchmarks\n\nMeasured with `cargo bench --bench pipeline` on {machine}.\n\
             The measured process is the release `mirotrail` binary run as a child process \
             (peak RSS = `ru_maxrss` from `wait4`, i.e. VmHWM; CPU = user + system time); \
             the Miro and Azure emulators run in the benchmark process on loopback and \
             share the same cores.\n\n{t}"
        );
        std::fs::write(&out_path, doc).unwrap();
        eprintln!("written to {}", out_path.display());
    });
}
