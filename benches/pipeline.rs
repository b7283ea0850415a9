//! `cargo bench --bench pipeline`: mirotrail against the emulators on loopback, and the
//! Sentinel CCF pollers' way of polling against the same emulated org.
//!
//! Every process is measured on its own: the `mirotrail` binary under test, the Miro and
//! Azure emulators (`mirotrail emulate miro|azure`, each a child process) and the raw
//! ceiling's minimal client (this bench binary started again in another role). CPU (user +
//! system) and peak RSS come from `wait4` on each child, so mirotrail's figures are its own
//! and the emulators' CPU is reported beside them rather than hidden in them. Each figure
//! is taken `BENCH_RUNS` times and printed as min / median / max; when two binaries are
//! compared their runs are interleaved (A B A B ...).
//!
//! Phases, in each run: a backfill of the newest quarter of the org's span (the same org, so
//! the same density: peak RSS must not grow with the span) and of the whole org, delivery
//! of the whole org's store to the Azure emulator (three `run --once`, each measured: delivery
//! alone with detection off, the first detection pass alone with no sink, and both, as
//! after a backfill), and the raw ceiling: a minimal client
//! (paging requests, serde_json, one SQLite transaction per page) reading the same org from
//! the same emulator. Then the destinations phase: one store delivered in full to each
//! destination in [`DESTINATIONS`] (Sentinel, Splunk HEC with and without indexer
//! acknowledgement, Elasticsearch, each against its emulator, S3 against moto's S3 server
//! (`pip install 'moto[server]'`), and NDJSON files), a new
//! sink each time. Then the live phase: mirotrail at its default settings and the CCF
//! profile (5-minute polls of 5-minute windows, no lag, no overlap, `limit=100`) side by
//! side, each against its own emulated org where events appear as the clock reaches them,
//! 2% of them up to 30 s late.
//!
//! `cargo test --bench pipeline` (no `--bench` argument) runs a smoke test instead: the
//! defaults become 4,000 + 800 events, one run and the phases `backfill,delivery,raw`
//! (every assertion of the full bench still holds), written to
//! `target/pipeline-bench-smoke.md`; the knobs below still override them.
//!
//! Knobs (environment):
//! - `BENCH_AUDIT_EVENTS` (1,000,000), `BENCH_CONTENT_ITEMS` (200,000): the backfilled org.
//! - `BENCH_RUNS` (3): runs of each backfill, delivery and raw ceiling figure.
//! - `BENCH_LIVE_SECS` (1800): length of the live phase. The CCF profile polls every 5
//!   minutes, so its freshness means something only over several polls: 1800 s gives
//!   freshness over the events of the first 20 minutes (4 CCF polls). A run shorter than
//!   about `BENCH_LIVE_TAIL` + 600 s says nothing about the CCF profile.
//! - `BENCH_LIVE_CONTENT` (1): 0 leaves content logs off in both live profiles (mirotrail's
//!   default), so the live phase measures mirotrail exactly at its defaults.
//! - `BENCH_LIVE_TAIL` (600): events that became visible in the last this-many seconds of
//!   the live phase are left out of the freshness figures (neither profile had a fair
//!   chance to store them); an event visible before that and still not stored counts as
//!   not stored (shown as `>`), never as dropped from the figure.
//! - `BENCH_LIVE_RUNS` (`BENCH_RUNS`): live phases (each takes `BENCH_LIVE_SECS`).
//! - `BENCH_DESTINATION_ROWS` (200,000): the store of the destinations phase (five
//!   audit events to one content item).
//! - `BENCH_PHASES` (`backfill,delivery,raw,destinations,live`): the phases to run
//!   (delivery needs backfill).
//! - `BENCH_BIN` (this build's `mirotrail`): the binary measured; `BENCH_BIN_B`: a second
//!   binary compared with it, run for run (backfill and delivery); `BENCH_EMULATOR_BIN`
//!   (this build's `mirotrail`): the binary whose `emulate` serves.
//! - `BENCH_AUDIT_TIME_FORM` (the emulator's default, Miro's own `+0000`): the backfilled
//!   org's audit `createdAt` form (`emulate miro --audit-time-form`); `z` lets a
//!   `BENCH_BIN_B` that predates the `+0000` parser (v0.1) read the same org, for the
//!   backfill phase.
//! - `BENCH_DIR` (`.`): where the stores are made; `BENCH_OUT`
//!   (`target/pipeline-bench.md`): where the tables are written (also printed).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mirotrail_emulator::UnixMs;
use mirotrail_emulator::azure::{AUDIT_DCR, AzureEmulatorConfig, CONTENT_DCR};
use mirotrail_emulator::elastic::ElasticEmulatorConfig;
use mirotrail_emulator::miro::{MiroEmulatorConfig, MiroOrg};
use mirotrail_emulator::splunk::SplunkEmulatorConfig;
use mirotrail_test_support::{self as support, env_u64};
use serde_json::Value;

const TOKEN: &str = "bench-token-5d1c0e";
const ORG_ID: &str = "3074457345821141000";
/// The seed `emulate miro` is started with, so that this process can build the same org.
const SEED: u64 = 1;
/// Miro's credit budget per token and minute (docs/miro-api.md).
const BUDGET_PER_MINUTE: f64 = 100_000.0;
/// Credits of one audit logs call (level 2) and one content logs call (level 4).
const AUDIT_CALL_CREDITS: f64 = 100.0;
const CONTENT_CALL_CREDITS: f64 = 2_000.0;
/// The live org: audit events and content items a second, and the late share (its
/// maximum delay is the emulator's 30 s).
const LIVE_AUDIT_PER_SEC: u64 = 20;
const LIVE_CONTENT_PER_SEC: u64 = 5;
const LIVE_LATE_SHARE: f64 = 0.02;
/// How far back both live profiles start (`initial_lookback`).
const LIVE_LOOKBACK: Duration = Duration::from_secs(120);

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

/// What `wait4` says about a finished child.
#[derive(Debug, Clone, Copy)]
struct ChildUsage {
    wall: Duration,
    cpu: Duration,
    max_rss_kb: u64,
    success: bool,
}

impl ChildUsage {
    fn cpu_per_100k(&self, events: u64) -> f64 {
        self.cpu.as_secs_f64() * 100_000.0 / events.max(1) as f64
    }

    fn rss_mb(&self) -> f64 {
        self.max_rss_kb as f64 / 1024.0
    }

    fn rate(&self, events: u64) -> f64 {
        events as f64 / self.wall.as_secs_f64()
    }
}

/// Waits for a child; CPU and peak RSS from `wait4`, wall time from `started`.
fn wait_child(child: Child, started: Instant) -> ChildUsage {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    let mut status = 0;
    // SAFETY: `rusage` is plain data; all zeroes is a valid value.
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
}

fn sigterm(child: &Child) {
    // SAFETY: sending a signal to our own child.
    unsafe {
        libc::kill(
            libc::pid_t::try_from(child.id()).expect("a pid"),
            libc::SIGTERM,
        );
    }
}

/// `bin args` in `dir`, stderr to `dir/log`, with the tokens both emulators accept.
fn spawn(bin: &Path, args: &[String], dir: &Path, log: &str) -> Child {
    let stderr = std::fs::File::create(dir.join(log)).unwrap();
    Command::new(bin)
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
        .unwrap_or_else(|e| panic!("{} starts: {e}", bin.display()))
}

/// Runs `bin args` to its end.
fn run_child(bin: &Path, args: &[&str], dir: &Path, log: &str) -> ChildUsage {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let started = Instant::now();
    wait_child(spawn(bin, &args, dir, log), started)
}

/// An emulator running as a child process, killed if the bench panics before `stop`.
struct Emulator {
    /// `None` once `stop` has taken it.
    child: Option<Child>,
    started: Instant,
    base: String,
    stats: PathBuf,
}

impl Emulator {
    /// `emulate SERVICE --listen 127.0.0.1:0 --stats-out ... args`; the URL is read from
    /// its banner (`key = "URL"`).
    fn start(emu_bin: &Path, dir: &Path, name: &str, service: &str, args: &[String]) -> Self {
        let stats = dir.join(format!("{name}-stats.json"));
        let mut all = vec![
            "emulate".to_owned(),
            service.to_owned(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--stats-out".into(),
            stats.display().to_string(),
        ];
        all.extend_from_slice(args);
        let log = format!("{name}.log");
        let started = Instant::now();
        let child = spawn(emu_bin, &all, dir, &log);
        let key = if service == "miro" {
            "api_base = \""
        } else {
            "endpoint = \""
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let base = loop {
            let text = std::fs::read_to_string(dir.join(&log)).unwrap_or_default();
            let url = text.find(key).and_then(|at| {
                let rest = &text[at + key.len()..];
                rest.find('"').map(|end| rest[..end].to_owned())
            });
            if url.is_some() || Instant::now() > deadline {
                break url;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let Some(base) = base else {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the {service} emulator did not start: see {}",
                dir.join(&log).display()
            );
        };
        Emulator {
            child: Some(child),
            started,
            base,
            stats,
        }
    }

    /// SIGTERM; its usage and the stats it wrote.
    fn stop(mut self) -> (ChildUsage, Value) {
        let child = self.child.take().expect("an emulator is stopped once");
        sigterm(&child);
        let usage = wait_child(child, self.started);
        assert!(usage.success, "an emulator failed to stop cleanly");
        let stats = std::fs::read_to_string(&self.stats).expect("emulator stats written");
        (usage, serde_json::from_str(&stats).expect("stats are JSON"))
    }
}

impl Drop for Emulator {
    /// A bench that panics mid-phase must not leave its emulators running.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn stat(stats: &Value, key: &str) -> u64 {
    stats[key].as_u64().unwrap_or(0)
}

/// `emulate miro` arguments for an org of `audit` + `content` events over `[start, end)`.
fn miro_args(audit: u64, content: u64, start: UnixMs, end: UnixMs, late: f64) -> Vec<String> {
    let mut a: Vec<String> = [
        "--token",
        TOKEN,
        "--seed",
        &SEED.to_string(),
        "--start-ms",
        &start.0.to_string(),
        "--end-ms",
        &end.0.to_string(),
        "--audit-events",
        &audit.to_string(),
        "--content-items",
        &content.to_string(),
        "--late-share",
        &late.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if late == 0.0 {
        a.push("--no-rate-limit".into());
    }
    a
}

/// The org `emulate miro` serves for [`miro_args`], built the same way, to know what it
/// holds and when each event became visible.
fn miro_org(audit: u64, content: u64, start: UnixMs, end: UnixMs, late: f64) -> MiroOrg {
    let mut c = MiroEmulatorConfig::demo(end, 1, audit, content, TOKEN);
    c.audit.start = start;
    c.audit.end = end;
    c.content.start = start;
    c.content.end = end;
    c.seed = SEED;
    c.late.share = late;
    MiroOrg::new(&c)
}

fn miro_section(base: &str) -> String {
    format!(
        "[miro]\napi_base = \"{base}\"\norg_id = \"{ORG_ID}\"\nretry_initial_backoff = \"50ms\"\n\n[store]\npath = \"mirotrail.db\"\n\n",
    )
}

fn sentinel_section(base: &str) -> String {
    format!("[sinks.sentinel]\n{}", sentinel_sink(base))
}

/// The keys of a Sentinel sink sending to the Azure emulator at `base`.
fn sentinel_sink(base: &str) -> String {
    let a = AzureEmulatorConfig::default();
    format!(
        "type = \"azure_logs_ingestion\"\nendpoint = \"{base}\"\nauthority_host = \"{base}\"\n\
         audit_logs_dcr = \"{AUDIT_DCR}\"\ncontent_logs_dcr = \"{CONTENT_DCR}\"\n\
         tenant_id = \"{}\"\nclient_id = \"{}\"\nclient_secret_env = \"AZURE_CLIENT_SECRET\"\n",
        a.tenant_id, a.client_id
    )
}

/// Rows in a table of the store.
fn count(db: &Path, table: &str) -> u64 {
    u64::try_from(support::count(db, table)).expect("a row count")
}

/// Where the measured binaries and the emulators come from.
struct Bins {
    emulator: PathBuf,
    /// Label and path of each binary measured (one, or A and B).
    measured: Vec<(&'static str, PathBuf)>,
}

/// One backfill of the whole emulated span.
struct BackfillRun {
    events: u64,
    usage: ChildUsage,
    emulator: ChildUsage,
    audit_requests: u64,
    content_requests: u64,
    dir: tempfile::TempDir,
}

/// The backfilled orgs end two days ago, so that delivery's `run --once` finds nothing new.
fn backfill_span() -> (UnixMs, UnixMs) {
    let now = UnixMs::now();
    (now.minus(days(28)), now.minus(days(2)))
}

/// A backfill of the org of `audit` + `content` events over `backfill_span`: all of it, or
/// with `quarter` only its newest quarter (`--since` the time three quarters in), the same
/// org at the same density over a quarter of the span.
fn backfill(bins: &Bins, bin: &Path, audit: u64, content: u64, quarter: bool) -> BackfillRun {
    let (start, end) = backfill_span();
    let since = if quarter {
        UnixMs(end.0 - (end.0 - start.0) / 4)
    } else {
        start
    };
    let dir = tempfile::tempdir_in(env_text("BENCH_DIR", ".")).unwrap();
    let mut args = miro_args(audit, content, start, end, 0.0);
    // Passed only when set, so an emulator binary from before the flag still serves.
    let form = env_text("BENCH_AUDIT_TIME_FORM", "");
    if !form.is_empty() {
        args.extend(["--audit-time-form".to_owned(), form]);
    }
    let emu = Emulator::start(&bins.emulator, dir.path(), "miro", "miro", &args);
    let toml = format!(
        "{}[sources.content_logs]\nenabled = true\n\n[budget]\ncredits_per_minute = 1000000000\n",
        miro_section(&emu.base)
    );
    std::fs::write(dir.path().join("mirotrail.toml"), toml).unwrap();
    let usage = run_child(
        bin,
        &[
            "backfill",
            "--config",
            "mirotrail.toml",
            "--since",
            &if quarter {
                since.to_string()
            } else {
                "29d".to_owned()
            },
            "--slice",
            "1d",
        ],
        dir.path(),
        "backfill.log",
    );
    let (emulator, stats) = emu.stop();
    assert!(
        usage.success,
        "backfill failed: see {}",
        dir.path().join("backfill.log").display()
    );
    let db = dir.path().join("mirotrail.db");
    let stored = count(&db, "MiroAuditLogs_CL") + count(&db, "MiroContentLogs_CL");
    let org = miro_org(audit, content, start, end, 0.0);
    let expected = org.audit_range(since, end).count() + org.content_range(since, end).count();
    assert_eq!(
        stored, expected as u64,
        "every event of the span stored once"
    );
    BackfillRun {
        events: stored,
        usage,
        emulator,
        audit_requests: stat(&stats, "audit_requests"),
        content_requests: stat(&stats, "content_requests"),
        dir,
    }
}

/// The store of a backfill run over by `run --once` three ways, in this order, each by the
/// same binary on the same rows:
/// - delivery alone: the Sentinel sink to the Azure emulator, `[detect] enabled = false`
///   (a sink name of its own, so that the combined run below starts from the beginning);
/// - the first detection pass alone: no sink, on a copy of the store (so that the combined
///   run still finds every row not yet evaluated);
/// - both: the Sentinel sink and detection, what `run --once` after a backfill costs.
struct DeliveryRun {
    /// Both (the figure the bench has always reported).
    usage: ChildUsage,
    azure: ChildUsage,
    records: u64,
    bytes: u64,
    /// Delivery alone.
    alone: ChildUsage,
    alone_azure: ChildUsage,
    /// The first detection pass alone.
    detection: ChildUsage,
}

/// One `run --once` over the store in `dir` (`name`.toml, `name`.log): with the Sentinel
/// sink `sink` to a fresh Azure emulator when given, detection on or off. The Azure
/// emulator's usage and stats come back with mirotrail's usage.
fn run_once(
    bins: &Bins,
    bin: &Path,
    dir: &Path,
    name: &str,
    sink: Option<&str>,
    detect: bool,
) -> (ChildUsage, Option<(ChildUsage, Value)>) {
    let azure = sink.map(|_| {
        Emulator::start(
            &bins.emulator,
            dir,
            &format!("{name}-azure"),
            "azure",
            &["--discard-rows".into()],
        )
    });
    // The collector finds nothing new (the org ends two days ago).
    let now = UnixMs::now();
    let miro = Emulator::start(
        &bins.emulator,
        dir,
        &format!("{name}-miro"),
        "miro",
        &miro_args(0, 0, now.minus(days(3)), now.minus(days(2)), 0.0),
    );
    let mut toml = format!(
        "{}[sources.content_logs]\nenabled = true\n\n[detect]\nenabled = {detect}\n\n",
        miro_section(&miro.base),
    );
    if let (Some(sink), Some(azure)) = (sink, &azure) {
        let _ = write!(toml, "[sinks.{sink}]\n{}", sentinel_sink(&azure.base));
    }
    let config = format!("{name}.toml");
    std::fs::write(dir.join(&config), toml).unwrap();
    let log = format!("{name}.log");
    let usage = run_child(bin, &["run", "--once", "--config", &config], dir, &log);
    let azure = azure.map(Emulator::stop);
    let _ = miro.stop();
    assert!(
        usage.success,
        "{name} failed: see {}",
        dir.join(&log).display()
    );
    (usage, azure)
}

fn deliver(bins: &Bins, bin: &Path, run: &BackfillRun) -> DeliveryRun {
    let dir = run.dir.path();
    let delivered = |azure: &Option<(ChildUsage, Value)>, what: &str| {
        let (_, stats) = azure.as_ref().expect("a run with the sink");
        let records = stat(stats, "records_accepted");
        assert_eq!(records, run.events, "{what}: every stored row delivered");
        (records, stat(stats, "bytes_received"))
    };
    let (alone, azure) = run_once(bins, bin, dir, "deliver-alone", Some("alone"), false);
    delivered(&azure, "delivery alone");
    let alone_azure = azure.expect("a run with the sink").0;

    // The detection pass on a copy of the store (the backfill's process has ended: its
    // WAL, if any, is copied with it).
    let copy = dir.join("detect-alone");
    std::fs::create_dir_all(&copy).unwrap();
    for file in ["mirotrail.db", "mirotrail.db-wal"] {
        if dir.join(file).exists() {
            std::fs::copy(dir.join(file), copy.join(file)).unwrap();
        }
    }
    let (detection, _) = run_once(bins, bin, &copy, "detect-alone", None, true);
    std::fs::remove_dir_all(&copy).unwrap();

    let (usage, azure) = run_once(bins, bin, dir, "deliver", Some("sentinel"), true);
    let (records, bytes) = delivered(&azure, "delivery and detection");
    DeliveryRun {
        usage,
        azure: azure.expect("a run with the sink").0,
        records,
        bytes,
        alone,
        alone_azure,
        detection,
    }
}

/// One destination of the `destinations` phase. Adding one (an S3 bucket behind a local
/// server, say) is a row in [`DESTINATIONS`]: the server to start, the sink section, and
/// where the number of rows it accepted is read.
struct Destination {
    /// The row's name in the table, and the key the sink's name is made from.
    name: &'static str,
    key: &'static str,
    /// The server it delivers to.
    server: Server,
    /// The body of the sink's `[sinks.NAME]` section for the server at `base`, in `dir`
    /// (where a credential file may be written).
    section: fn(base: &str, dir: &Path) -> String,
    /// The rows the destination accepted: from the server's `--stats-out` JSON, or from
    /// `dir` (the sink's folder) for a local one.
    accepted: fn(stats: &Value, dir: &Path) -> u64,
}

/// What a destination of the bench delivers to.
#[derive(Clone, Copy)]
enum Server {
    /// Nothing: mirotrail writes locally (its own CPU is then the whole cost).
    Local,
    /// `emulate SERVICE ARGS`, one of our emulators.
    Emulate(&'static str, &'static [&'static str]),
    /// moto's standalone S3 server (the Python package `moto[server]`, as in the tests),
    /// with the bucket [`S3_BUCKET`]; `--stats-out` has no equivalent there, so the rows it
    /// holds are counted from the bucket itself.
    Moto,
}

const S3_BUCKET: &str = "mirotrail-bench";

/// A credential file `dir/name` for a sink, private to the user (as mirotrail asks); its
/// path.
fn credential(dir: &Path, name: &str, secret: &str) -> String {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    f.write_all(secret.as_bytes()).unwrap();
    path.display().to_string()
}

fn splunk_section(base: &str, dir: &Path) -> String {
    let token = credential(dir, "hec-token", &SplunkEmulatorConfig::default().token);
    format!("type = \"splunk_hec\"\nendpoint = \"{base}\"\ntoken_file = \"{token}\"\n")
}

const DESTINATIONS: &[Destination] = &[
    Destination {
        name: "Sentinel (Azure emulator)",
        key: "sentinel",
        server: Server::Emulate("azure", &["--discard-rows"]),
        section: |base, _| sentinel_sink(base),
        accepted: |stats, _| stat(stats, "records_accepted"),
    },
    Destination {
        name: "Splunk HEC, indexer acknowledgement (HEC emulator)",
        key: "splunk_ack",
        server: Server::Emulate("splunk", &[]),
        section: splunk_section,
        accepted: |stats, _| stat(stats, "events_indexed"),
    },
    Destination {
        name: "Splunk HEC, no acknowledgement (HEC emulator)",
        key: "splunk",
        server: Server::Emulate("splunk", &["--no-ack"]),
        section: splunk_section,
        accepted: |stats, _| stat(stats, "events_indexed"),
    },
    Destination {
        name: "Elasticsearch (emulator)",
        key: "elasticsearch",
        server: Server::Emulate("elasticsearch", &[]),
        section: |base, dir| {
            let key = credential(dir, "es-key", &ElasticEmulatorConfig::default().api_key);
            format!("type = \"elasticsearch\"\nendpoint = \"{base}\"\napi_key_file = \"{key}\"\n")
        },
        accepted: |stats, _| stat(&stats["items_by_status"], "201"),
    },
    Destination {
        name: "S3 (moto's S3 server)",
        key: "s3",
        server: Server::Moto,
        section: |base, dir| {
            let id = credential(dir, "s3-id", "AKIAMIROTRAILBENCH01");
            let secret = credential(dir, "s3-secret", "bench-secret-key");
            format!(
                "type = \"s3\"\nbucket = \"{S3_BUCKET}\"\nendpoint = \"{base}\"\nregion = \"us-east-1\"\n\
                 force_path_style = true\naccess_key_id_file = \"{id}\"\nsecret_access_key_file = \"{secret}\"\n"
            )
        },
        // Counted from the bucket by `Moto::rows_and_stop`.
        accepted: |stats, _| stat(stats, "rows"),
    },
    Destination {
        name: "file (NDJSON)",
        key: "file",
        server: Server::Local,
        section: |_, dir| format!("type = \"file\"\npath = \"{}\"\n", dir.display()),
        accepted: |_, dir| ndjson_lines(dir),
    },
];

/// Lines in the files under `dir` (the file sink's NDJSON, one row a line), read in
/// small pieces: this process's own peak RSS is a floor under every child's (see
/// [`own_peak_rss_mb`]), so it must not hold a whole file.
fn ndjson_lines(dir: &Path) -> u64 {
    use std::io::Read as _;
    let mut n = 0;
    let mut buf = vec![0u8; 64 * 1024];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            n += ndjson_lines(&path);
            continue;
        }
        let mut file = std::fs::File::open(&path).unwrap();
        loop {
            let read = file.read(&mut buf).unwrap();
            if read == 0 {
                break;
            }
            n += buf[..read].iter().filter(|b| **b == b'\n').count() as u64;
        }
    }
    n
}

/// This process's peak RSS (`VmHWM`) in MB. Linux carries a process's high-water mark
/// across `exec`, so a child started from here reports at least this much as its own
/// peak RSS (`ru_maxrss`): its figure means something only above it.
fn own_peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The server of one delivery run.
enum Running {
    Emulator(Emulator),
    Moto(Moto),
}

impl Running {
    fn base(&self) -> &str {
        match self {
            Running::Emulator(e) => &e.base,
            Running::Moto(m) => &m.base,
        }
    }
}

/// moto's standalone S3 server ([`mirotrail_test_support::moto::Moto`], as in the tests)
/// with an empty bucket [`S3_BUCKET`], for one delivery run.
struct Moto {
    rt: tokio::runtime::Runtime,
    server: mirotrail_test_support::moto::Moto,
    started: Instant,
    base: String,
}

impl Moto {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let started = Instant::now();
        let server = rt.block_on(mirotrail_test_support::moto::Moto::start());
        rt.block_on(server.create_bucket(S3_BUCKET));
        let base = server.url.clone();
        Moto {
            rt,
            server,
            started,
            base,
        }
    }

    /// The server's CPU and peak RSS so far (from `/proc`, before the bench reads the
    /// bucket back, so that reading is not counted), then the rows in the bucket's objects
    /// (gzip NDJSON); the server stops when this returns.
    fn rows_and_stop(self) -> (ChildUsage, u64) {
        let pid = self.server.pid();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // The fields after the command name; utime and stime are the 12th and 13th.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let cpu = (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / ticks;
        let max_rss_kb = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse().ok())
            .unwrap_or(0);
        let usage = ChildUsage {
            wall: self.started.elapsed(),
            cpu: Duration::from_secs_f64(cpu),
            max_rss_kb,
            success: true,
        };
        // One object at a time: this process's peak RSS is a floor under every later
        // child's (see [`own_peak_rss_mb`]).
        let rows = self.rt.block_on(self.server.count_lines(S3_BUCKET));
        (usage, rows)
    }
}

/// One delivery of the whole store to one destination.
struct DestinationRun {
    rows: u64,
    usage: ChildUsage,
    /// The destination's server, when there is one.
    server: Option<ChildUsage>,
}

/// Delivers every row of the backfilled store in `run` to `dest` by `run --once`, through
/// a sink of its own (a new name each time, so it starts at the beginning of the store).
/// Detection is off: only delivery is measured.
fn deliver_to(
    bins: &Bins,
    bin: &Path,
    run: &BackfillRun,
    dest: &Destination,
    n: u64,
) -> DestinationRun {
    let dir = run.dir.path();
    let sink = format!("{}_{n}", dest.key);
    let out = dir.join(format!("{sink}-out"));
    std::fs::create_dir_all(&out).unwrap();
    let server = match dest.server {
        Server::Local => None,
        Server::Emulate(service, args) => {
            let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            Some(Running::Emulator(Emulator::start(
                &bins.emulator,
                dir,
                &sink,
                service,
                &args,
            )))
        }
        Server::Moto => Some(Running::Moto(Moto::start())),
    };
    let now = UnixMs::now();
    let miro = Emulator::start(
        &bins.emulator,
        dir,
        &format!("{sink}-miro"),
        "miro",
        &miro_args(0, 0, now.minus(days(3)), now.minus(days(2)), 0.0),
    );
    let base = server.as_ref().map_or("", Running::base);
    let toml = format!(
        "{}[sources.content_logs]\nenabled = true\n\n[detect]\nenabled = false\n\n[sinks.{sink}]\n{}",
        miro_section(&miro.base),
        (dest.section)(base, &out)
    );
    let config = format!("{sink}.toml");
    std::fs::write(dir.join(&config), toml).unwrap();
    let log = format!("{sink}-run.log");
    let usage = run_child(bin, &["run", "--once", "--config", &config], dir, &log);
    let (server, stats) = match server {
        Some(Running::Emulator(s)) => {
            let (u, stats) = s.stop();
            (Some(u), stats)
        }
        Some(Running::Moto(m)) => {
            let (u, rows) = m.rows_and_stop();
            (Some(u), serde_json::json!({ "rows": rows }))
        }
        None => (None, Value::Null),
    };
    let _ = miro.stop();
    assert!(
        usage.success,
        "delivery to {} failed: see {}",
        dest.name,
        dir.join(&log).display()
    );
    let rows = (dest.accepted)(&stats, &out);
    assert_eq!(
        rows, run.events,
        "{}: every stored row delivered once",
        dest.name
    );
    DestinationRun {
        rows,
        usage,
        server,
    }
}

/// The `destinations` phase: one store of `audit` + `content` events, then `runs`
/// deliveries of all of it to each destination (interleaved: each run goes through the
/// whole list).
fn destinations(bins: &Bins, audit: u64, content: u64, runs: u64) -> Vec<Vec<DestinationRun>> {
    let bin = &bins.measured[0].1;
    log(&format!("destinations: backfill of {audit} + {content}"));
    let store = backfill(bins, bin, audit, content, false);
    let mut out: Vec<Vec<DestinationRun>> = DESTINATIONS.iter().map(|_| Vec::new()).collect();
    for n in 1..=runs {
        for (k, dest) in DESTINATIONS.iter().enumerate() {
            log(&format!(
                "destinations run {n}/{runs}: {} rows to {}",
                store.events, dest.name
            ));
            out[k].push(deliver_to(bins, bin, &store, dest, n));
        }
    }
    out
}

/// The table of the `destinations` phase.
fn destinations_report(bins: &Bins, runs: &[Vec<DestinationRun>]) -> String {
    let mut t = String::new();
    let rows = runs.iter().flatten().next().map_or(0, |r| r.rows);
    let _ = writeln!(
        t,
        "Store -> destination, {rows} rows ({} runs, `{}`, `run --once` with a new sink \
         each run, detection off). min / median / max; the bench process's own peak RSS \
         ({:.1} MB) is a floor under every peak RSS figure:",
        runs.first().map_or(0, Vec::len),
        bins.measured[0].1.display(),
        own_peak_rss_mb()
    );
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "| destination | rows/s | mirotrail CPU s per 100k rows | destination CPU s per 100k rows | mirotrail peak RSS (MB) |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|");
    for (dest, rs) in DESTINATIONS.iter().zip(runs) {
        let f = |g: &dyn Fn(&DestinationRun) -> f64, d: usize| {
            mmm(&rs.iter().map(g).collect::<Vec<_>>(), d)
        };
        let server = if !matches!(dest.server, Server::Local) {
            f(
                &|r| r.server.map_or(f64::NAN, |s| s.cpu_per_100k(r.rows)),
                2,
            )
        } else {
            "- (in mirotrail)".into()
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {server} | {} |",
            dest.name,
            f(&|r| r.usage.rate(r.rows), 0),
            f(&|r| r.usage.cpu_per_100k(r.rows), 2),
            f(&|r| r.usage.rss_mb(), 1),
        );
    }
    t
}

/// The raw ceiling: the minimal client (see [`raw_client`]) in its own process against
/// its own emulator with the backfill's org.
struct RawRun {
    events: u64,
    usage: ChildUsage,
    emulator: ChildUsage,
}

fn raw_ceiling(bins: &Bins, audit: u64, content: u64) -> RawRun {
    let (start, end) = backfill_span();
    let dir = tempfile::tempdir_in(env_text("BENCH_DIR", ".")).unwrap();
    let emu = Emulator::start(
        &bins.emulator,
        dir.path(),
        "miro",
        "miro",
        &miro_args(audit, content, start, end, 0.0),
    );
    let me = std::env::current_exe().expect("the bench binary");
    let started = Instant::now();
    let child = Command::new(me)
        .current_dir(dir.path())
        .env("BENCH_ROLE", "raw-client")
        .env("BENCH_RAW_BASE", &emu.base)
        .env("BENCH_RAW_FROM_MS", start.0.to_string())
        .env("BENCH_RAW_TO_MS", end.0.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("raw.log")).unwrap())
        .spawn()
        .unwrap();
    let usage = wait_child(child, started);
    let (emulator, _) = emu.stop();
    assert!(
        usage.success,
        "the raw client failed: see {}",
        dir.path().join("raw.log").display()
    );
    let db = dir.path().join("raw.db");
    let events = count(&db, "audit") + count(&db, "content");
    assert_eq!(events, audit + content, "the raw client read every event");
    RawRun {
        events,
        usage,
        emulator,
    }
}

/// The raw client's role (`BENCH_ROLE=raw-client`): the least a collector does. It pages
/// through both endpoints over the whole span (one window, the cursor URL-encoded),
/// parses each page with serde_json and inserts each item's id and text into SQLite (WAL,
/// `synchronous = NORMAL`, one transaction per page) in `raw.db`. No retries, no
/// checkpoints, no derived columns.
fn raw_client() {
    let base = env_text("BENCH_RAW_BASE", "");
    let from = UnixMs(env_text("BENCH_RAW_FROM_MS", "0").parse().unwrap());
    let to = UnixMs(env_text("BENCH_RAW_TO_MS", "0").parse().unwrap());
    let mut conn = rusqlite::Connection::open("raw.db").unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.execute_batch(
        "CREATE TABLE audit (id TEXT NOT NULL UNIQUE, raw TEXT NOT NULL);
         CREATE TABLE content (id TEXT NOT NULL UNIQUE, raw TEXT NOT NULL);",
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let audit_url = format!("{base}/v2/audit/logs");
    let content_url = format!("{base}/v2/orgs/{ORG_ID}/content-logs/items");
    let audit_query = [
        ("createdAfter", from.to_iso()),
        ("createdBefore", to.to_iso()),
        ("limit", "500".into()),
        ("sorting", "ASC".into()),
    ];
    let content_query = [
        ("from", from.to_iso()),
        ("to", to.to_iso()),
        ("limit", "1000".into()),
    ];
    for (table, url, query) in [
        ("audit", &audit_url, &audit_query[..]),
        ("content", &content_url, &content_query[..]),
    ] {
        let mut cursor: Option<String> = None;
        loop {
            let mut req = client.get(url).bearer_auth(TOKEN).query(query);
            if let Some(c) = &cursor {
                req = req.query(&[("cursor", c)]);
            }
            let body = rt
                .block_on(async { req.send().await?.error_for_status()?.bytes().await })
                .unwrap();
            let page: Value = serde_json::from_slice(&body).unwrap();
            let tx = conn.transaction().unwrap();
            {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "INSERT OR IGNORE INTO {table} (id, raw) VALUES (?1, ?2)"
                    ))
                    .unwrap();
                for item in page["data"].as_array().unwrap() {
                    stmt.execute(rusqlite::params![
                        item["id"].as_str().unwrap(),
                        item.to_string()
                    ])
                    .unwrap();
                }
            }
            tx.commit().unwrap();
            cursor = page["cursor"]
                .as_str()
                .filter(|c| !c.is_empty())
                .map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
    }
}

/// One polling profile in live mode.
struct LiveRun {
    expected: u64,
    missed: u64,
    late_expected: u64,
    late_missed: u64,
    audit_requests: u64,
    content_requests: u64,
    audit_stored: u64,
    content_stored: u64,
    /// Share of the credit budget spent over the run, in percent.
    budget_pct: f64,
    /// The part spent on each stream (requests times their documented cost).
    budget_pct_audit: f64,
    budget_pct_content: f64,
    /// Visible -> stored and visible -> acknowledged by Azure, in ms, of the events that
    /// became visible from the start to `tail` before the end; `None`: not yet.
    to_store: Vec<Option<i64>>,
    to_ack: Vec<Option<i64>>,
    /// `to_store` of audit events and of content items apart: the two streams have their
    /// own polling defaults (a content call costs 20 times an audit call).
    to_store_audit: Vec<Option<i64>>,
    to_store_content: Vec<Option<i64>>,
    cpu: Duration,
}

/// How long after the stop a profile may still store an event that was visible before it,
/// per source (audit, content): the next poll, and the late re-read that covers it
/// (`overlap + overlap_every + settle_lag + poll_interval`). Events visible later than
/// `stop - horizon` are not judged as missed: the re-read that would store them was not
/// due yet.
fn live(
    bins: &Bins,
    name: &str,
    sources: &str,
    horizons: [Duration; 2],
    secs: u64,
    tail: u64,
) -> LiveRun {
    let t0 = UnixMs::now();
    // From 10 minutes ago to 10 minutes past the end: events become visible as the clock
    // reaches them (plus their late delay).
    let (start, end) = (
        t0.minus(Duration::from_secs(600)),
        t0.plus(Duration::from_secs(secs + 600)),
    );
    let span_secs = u64::try_from((end.0 - start.0) / 1000).expect("a positive span");
    let (audit, content) = (
        LIVE_AUDIT_PER_SEC * span_secs,
        LIVE_CONTENT_PER_SEC * span_secs,
    );
    let dir = tempfile::tempdir_in(env_text("BENCH_DIR", ".")).unwrap();
    let emu = Emulator::start(
        &bins.emulator,
        dir.path(),
        "miro",
        "miro",
        &miro_args(audit, content, start, end, LIVE_LATE_SHARE),
    );
    let acks = dir.path().join("acks.tsv");
    let azure = Emulator::start(
        &bins.emulator,
        dir.path(),
        "azure",
        "azure",
        &[
            "--discard-rows".into(),
            "--acks-out".into(),
            acks.display().to_string(),
        ],
    );
    let toml = format!(
        "{}{sources}\n{}",
        miro_section(&emu.base),
        sentinel_section(&azure.base)
    );
    std::fs::write(dir.path().join("mirotrail.toml"), toml).unwrap();
    let bin = &bins.measured[0].1;
    let started = Instant::now();
    let spawned_at = UnixMs::now();
    let child = spawn(
        bin,
        &["run".into(), "--config".into(), "mirotrail.toml".into()],
        dir.path(),
        "run.log",
    );
    std::thread::sleep(Duration::from_secs(secs));
    let stopped_at = UnixMs::now();
    sigterm(&child);
    let usage = wait_child(child, started);
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let (_, miro_stats) = emu.stop();
    let _ = azure.stop();
    assert!(
        usage.success,
        "{name}: run failed, see {}",
        dir.path().join("run.log").display()
    );
    let acked: HashMap<String, i64> = std::fs::read_to_string(&acks)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(id, at)| (id.to_owned(), at.parse().unwrap()))
        .collect();

    let db = dir.path().join("mirotrail.db");
    // The tables are views whose columns mirotrail's SQL functions derive.
    let conn = mirotrail::store::Store::open_read_only(&db).unwrap();
    let org = miro_org(audit, content, start, end, LIVE_LATE_SHARE);
    // The profile's look-back starts when its first cycle reads the clock, a moment after
    // it was started: events before that were never asked for. Judge from 5 s later.
    let lookback_start = spawned_at.plus(Duration::from_secs(5)).minus(LIVE_LOOKBACK);
    let fresh_until = stopped_at.minus(Duration::from_secs(tail));
    let mut out = LiveRun {
        expected: 0,
        missed: 0,
        late_expected: 0,
        late_missed: 0,
        audit_requests: stat(&miro_stats, "audit_requests"),
        content_requests: stat(&miro_stats, "content_requests"),
        audit_stored: 0,
        content_stored: 0,
        budget_pct: stat(&miro_stats, "credits_spent") as f64 * 100.0
            / (BUDGET_PER_MINUTE * minutes),
        budget_pct_audit: stat(&miro_stats, "audit_requests") as f64 * AUDIT_CALL_CREDITS * 100.0
            / (BUDGET_PER_MINUTE * minutes),
        budget_pct_content: stat(&miro_stats, "content_requests") as f64
            * CONTENT_CALL_CREDITS
            * 100.0
            / (BUDGET_PER_MINUTE * minutes),
        to_store: Vec::new(),
        to_ack: Vec::new(),
        to_store_audit: Vec::new(),
        to_store_content: Vec::new(),
        cpu: usage.cpu,
    };
    for (source, table) in [
        ("audit_logs", "MiroAuditLogs_CL"),
        ("content_logs", "MiroContentLogs_CL"),
    ] {
        let audit = source == "audit_logs";
        if !audit && !sources.contains("[sources.content_logs]") {
            // Not collected (`BENCH_LIVE_CONTENT=0`): nothing is expected of it.
            continue;
        }
        let judge_until = stopped_at.minus(horizons[usize::from(!audit)]);
        let watermark: i64 = conn
            .query_row(
                "SELECT watermark_ms FROM checkpoints WHERE source = ?1",
                [source],
                |r| r.get(0),
            )
            .unwrap();
        let mut stored: HashMap<String, i64> = HashMap::new();
        let mut stmt = conn
            .prepare(&format!("SELECT id, _ingested_at FROM {table}"))
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .unwrap();
        for row in rows {
            let (id, at) = row.unwrap();
            stored.insert(id, UnixMs::parse(&at).unwrap().0);
        }
        if audit {
            out.audit_stored = stored.len() as u64;
        } else {
            out.content_stored = stored.len() as u64;
        }
        // The whole org: the first overlap re-read may reach before the look-back.
        let range = if audit {
            org.audit_range(start, end)
        } else {
            org.content_range(start, end)
        };
        let mut known = 0;
        for i in range {
            let (item, time, visible) = if audit {
                (
                    org.audit_event(i),
                    org.audit_time(i),
                    org.audit_visible_at(i),
                )
            } else {
                (
                    org.content_item(i),
                    org.content_time(i),
                    org.content_visible_at(i),
                )
            };
            let id = item["id"].as_str().unwrap();
            let at = stored.get(id).copied();
            known += u64::from(at.is_some());
            let late = visible > time;
            // Nothing lost: every event before the collector's watermark that was visible
            // long enough before the stop for its poll and its late re-read to be due is
            // stored. (Later ones cannot be judged yet: their re-read was still to come.)
            if time >= lookback_start && time.0 < watermark && visible <= judge_until {
                out.expected += 1;
                out.late_expected += u64::from(late);
                if at.is_none() {
                    out.missed += 1;
                    out.late_missed += u64::from(late);
                }
            }
            // Freshness of the events that became visible while the run went on (not of
            // the look-back backlog at its start), up to `tail` before its end.
            if visible >= t0 && visible <= fresh_until {
                out.to_store.push(at.map(|at| at - visible.0));
                if audit {
                    out.to_store_audit.push(at.map(|at| at - visible.0));
                } else {
                    out.to_store_content.push(at.map(|at| at - visible.0));
                }
                out.to_ack.push(acked.get(id).map(|&ack| ack - visible.0));
            }
        }
        assert_eq!(
            known,
            stored.len() as u64,
            "{name}: the store holds events this bench's copy of the org does not know"
        );
    }
    out
}

/// The `p` quantile of latencies in ms, as seconds; `None` (not stored yet) sorts last.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "p in [0, 1]: an index into the latencies"
)]
fn percentile(latencies: &[Option<i64>], p: f64) -> Option<f64> {
    let mut sorted: Vec<i64> = latencies.iter().map(|l| l.unwrap_or(i64::MAX)).collect();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return Some(f64::NAN);
    }
    let v = sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    (v != i64::MAX).then(|| v as f64 / 1000.0)
}

/// `min / median / max` of `xs`.
fn mmm(xs: &[f64], decimals: usize) -> String {
    let mut s: Vec<f64> = xs.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return "-".into();
    }
    format!(
        "{:.d$} / {:.d$} / {:.d$}",
        s[0],
        median(&s),
        s[s.len() - 1],
        d = decimals
    )
}

fn median(xs: &[f64]) -> f64 {
    let mut s: Vec<f64> = xs.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
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
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({model}), {mem} RAM, {rustc}, Linux {}",
        kernel.trim()
    )
}

fn per_k(requests: u64, events: u64) -> f64 {
    requests as f64 * 1000.0 / events.max(1) as f64
}

/// The figures of one measured binary over all runs.
#[derive(Default)]
struct Series {
    small: Vec<BackfillRun>,
    big: Vec<BackfillRun>,
    delivery: Vec<DeliveryRun>,
}

fn log(line: &str) {
    eprintln!("[{}] {line}", UnixMs::now());
    let _ = std::io::stderr().flush();
}

fn main() {
    if env_text("BENCH_ROLE", "") == "raw-client" {
        raw_client();
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --bench pipeline` (or `--all-targets`)
    // does not, and then the bench only checks that it works: a small org, one run, the
    // phases that need nothing from outside the repository.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let audit = env_u64("BENCH_AUDIT_EVENTS", if smoke { 4_000 } else { 1_000_000 });
    let content = env_u64("BENCH_CONTENT_ITEMS", if smoke { 800 } else { 200_000 });
    let runs = env_u64("BENCH_RUNS", if smoke { 1 } else { 3 }).max(1);
    let live_runs = env_u64("BENCH_LIVE_RUNS", runs);
    let live_secs = env_u64("BENCH_LIVE_SECS", 1800);
    let tail = env_u64("BENCH_LIVE_TAIL", 600);
    let all_phases = if smoke {
        "backfill,delivery,raw"
    } else {
        "backfill,delivery,raw,destinations,live"
    };
    let phases = env_text("BENCH_PHASES", all_phases);
    let phase = |p: &str| phases.split(',').any(|x| x.trim() == p);
    let default_out = if smoke {
        "target/pipeline-bench-smoke.md"
    } else {
        "target/pipeline-bench.md"
    };
    let out_path = PathBuf::from(env_text("BENCH_OUT", default_out));
    let own = env!("CARGO_BIN_EXE_mirotrail");
    let mut measured = vec![("A", PathBuf::from(env_text("BENCH_BIN", own)))];
    let b = env_text("BENCH_BIN_B", "");
    if !b.is_empty() {
        measured.push(("B", PathBuf::from(b)));
    }
    let bins = Bins {
        emulator: PathBuf::from(env_text("BENCH_EMULATOR_BIN", own)),
        measured,
    };
    let machine = machine();
    log(&format!("machine: {machine}"));
    for (label, path) in &bins.measured {
        log(&format!("binary {label}: {}", path.display()));
    }

    let mut series: Vec<Series> = bins.measured.iter().map(|_| Series::default()).collect();
    let mut raw: Vec<RawRun> = Vec::new();
    for run in 1..=runs {
        for (k, (label, bin)) in bins.measured.iter().enumerate() {
            if phase("backfill") {
                log(&format!(
                    "run {run}/{runs}, {label}: backfill of the newest quarter of the span of {audit} + {content}"
                ));
                let small = backfill(&bins, bin, audit, content, true);
                series[k].small.push(small);
                log(&format!(
                    "run {run}/{runs}, {label}: backfill of {audit} + {content}"
                ));
                let big = backfill(&bins, bin, audit, content, false);
                if phase("delivery") {
                    log(&format!(
                        "run {run}/{runs}, {label}: delivery of {} rows",
                        big.events
                    ));
                    let d = deliver(&bins, bin, &big);
                    series[k].delivery.push(d);
                }
                series[k].big.push(big);
            }
        }
        if phase("raw") {
            log(&format!(
                "run {run}/{runs}: raw ceiling, {audit} + {content}"
            ));
            raw.push(raw_ceiling(&bins, audit, content));
        }
    }

    let dest_runs = if phase("destinations") {
        let rows = env_u64("BENCH_DESTINATION_ROWS", 200_000);
        let dest = destinations(&bins, rows - rows / 6, rows / 6, runs);
        Some(destinations_report(&bins, &dest))
    } else {
        None
    };

    let mut live_pairs: Vec<(LiveRun, LiveRun)> = Vec::new();
    if phase("live") {
        // mirotrail at its defaults (only the look-back is set, as for the CCF profile).
        // Content logs are off by default (they need Enterprise Guard): with
        // `BENCH_LIVE_CONTENT=0` neither profile enables them, so mirotrail runs exactly
        // at its defaults and the content figures stay empty.
        let with_content = env_u64("BENCH_LIVE_CONTENT", 1) != 0;
        let ours = if with_content {
            "[sources.audit_logs]\ninitial_lookback = \"2m\"\n\n\
             [sources.content_logs]\nenabled = true\ninitial_lookback = \"2m\"\n"
        } else {
            "[sources.audit_logs]\ninitial_lookback = \"2m\"\n"
        };
        let ccf_audit = "[sources.audit_logs]\ninitial_lookback = \"2m\"\npoll_interval = \"5m\"\nsettle_lag = \"0s\"\nrecent_overlap = \"0s\"\noverlap = \"0s\"\nmax_window = \"5m\"\npage_size = 100\n";
        let ccf_content = "\n[sources.content_logs]\nenabled = true\ninitial_lookback = \"2m\"\npoll_interval = \"5m\"\nsettle_lag = \"0s\"\nrecent_overlap = \"0s\"\noverlap = \"0s\"\nmax_window = \"5m\"\npage_size = 100\n";
        let ccf = if with_content {
            format!("{ccf_audit}{ccf_content}")
        } else {
            ccf_audit.to_owned()
        };
        let ccf = ccf.as_str();
        // The judging horizons: mirotrail's from its defaults, the CCF profile's its poll.
        let defaults = mirotrail::config::Config::from_toml("", Path::new("mirotrail.toml"))
            .expect("the defaults are a valid config");
        let horizon = |kind| {
            let s = defaults.source(kind);
            let reread = if s.overlap > s.recent_overlap {
                s.overlap + s.overlap_every
            } else {
                Duration::ZERO
            };
            reread + s.settle_lag + s.poll_interval
        };
        let ours_horizons = [
            horizon(mirotrail::config::SourceKind::AuditLogs),
            horizon(mirotrail::config::SourceKind::ContentLogs),
        ];
        let ccf_horizons = [Duration::from_secs(300); 2];
        log(&format!(
            "missed events are judged up to {:?} (audit) and {:?} (content) before the stop for mirotrail, 300 s for the CCF profile",
            ours_horizons[0], ours_horizons[1]
        ));
        for run in 1..=live_runs {
            log(&format!(
                "live {run}/{live_runs}: mirotrail and sentinel-ccf side by side, {live_secs} s"
            ));
            let pair = std::thread::scope(|s| {
                let a = s.spawn(|| live(&bins, "mirotrail", ours, ours_horizons, live_secs, tail));
                let b = s.spawn(|| live(&bins, "sentinel-ccf", ccf, ccf_horizons, live_secs, tail));
                (a.join().unwrap(), b.join().unwrap())
            });
            live_pairs.push(pair);
        }
    }

    let t = report(
        &bins,
        &series,
        &raw,
        &live_pairs,
        audit,
        content,
        live_secs,
        tail,
    );
    let t = match dest_runs {
        Some(d) if t.is_empty() => d,
        Some(d) => format!("{t}\n{d}"),
        None => t,
    };
    println!("{machine}\n\n{t}");
    let doc = format!(
        "Measured with `cargo bench --bench pipeline` on {machine}.\n\
         Each process on its own (mirotrail, each emulator, the raw client), CPU = user + \
         system time and peak RSS (`ru_maxrss`) from `wait4`; min / median / max over \
         the runs.\n\n{t}"
    );
    if let Some(parent) = out_path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&out_path, doc).unwrap();
    log(&format!("written to {}", out_path.display()));
}

#[expect(clippy::too_many_arguments, reason = "the report's inputs, once")]
fn report(
    bins: &Bins,
    series: &[Series],
    raw: &[RawRun],
    live_pairs: &[(LiveRun, LiveRun)],
    audit: u64,
    content: u64,
    live_secs: u64,
    tail: u64,
) -> String {
    let mut t = String::new();
    let col = |f: &dyn Fn(&Series) -> Vec<f64>, d: usize| -> String {
        series
            .iter()
            .map(|s| mmm(&f(s), d))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let labels: Vec<&str> = bins.measured.iter().map(|(l, _)| *l).collect();
    let runs_taken = series.first().map_or(0, |s| s.big.len()).max(raw.len());
    if series.iter().any(|s| !s.big.is_empty()) || !raw.is_empty() {
        let _ = writeln!(
            t,
            "{runs_taken} runs; {}.",
            bins.measured
                .iter()
                .map(|(l, p)| format!("{l}: `{}`", p.display()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "| figure (min / median / max) | {} |",
            labels.join(" | ")
        );
        let _ = writeln!(t, "|---|{}", "---|".repeat(labels.len()));
    }
    if series.iter().any(|s| !s.big.is_empty()) {
        for (name, pick) in [
            (
                format!(
                    "backfill of the newest quarter of the span ({audit} + {content} over all of it)"
                ),
                (|s: &Series| &s.small) as fn(&Series) -> &Vec<BackfillRun>,
            ),
            (
                format!("backfill of {audit} audit + {content} content"),
                |s: &Series| &s.big,
            ),
        ] {
            let _ = writeln!(
                t,
                "| {name}: events/s | {} |",
                col(
                    &|s| pick(s).iter().map(|r| r.usage.rate(r.events)).collect(),
                    0
                )
            );
            let _ = writeln!(
                t,
                "| {name}: mirotrail CPU s per 100k events | {} |",
                col(
                    &|s| pick(s)
                        .iter()
                        .map(|r| r.usage.cpu_per_100k(r.events))
                        .collect(),
                    2
                )
            );
            let _ = writeln!(
                t,
                "| {name}: Miro emulator CPU s per 100k events | {} |",
                col(
                    &|s| pick(s)
                        .iter()
                        .map(|r| r.emulator.cpu_per_100k(r.events))
                        .collect(),
                    2
                )
            );
            let _ = writeln!(
                t,
                "| {name}: mirotrail peak RSS (MB) | {} |",
                col(&|s| pick(s).iter().map(|r| r.usage.rss_mb()).collect(), 1)
            );
        }
        let _ = writeln!(
            t,
            "| backfill audit logs: requests per 1,000 events | {} |",
            col(
                &|s| s
                    .big
                    .iter()
                    .map(|r| per_k(r.audit_requests, audit))
                    .collect(),
                2
            )
        );
        let _ = writeln!(
            t,
            "| backfill content logs: requests per 1,000 items | {} |",
            col(
                &|s| s
                    .big
                    .iter()
                    .map(|r| per_k(r.content_requests, content))
                    .collect(),
                2
            )
        );
    }
    if series.iter().any(|s| !s.delivery.is_empty()) {
        let rows = series[0].delivery.first().map_or(0, |d| d.records);
        // (label, figure of one run, decimals): delivery alone, detection alone, both.
        type Figure = fn(&DeliveryRun) -> f64;
        let figures: [(String, Figure, usize); 10] = [
            (
                format!(
                    "delivery alone (`[detect] enabled = false`) of {rows} rows to the Azure emulator: rows/s"
                ),
                |d| d.alone.rate(d.records),
                0,
            ),
            (
                "delivery alone: mirotrail CPU s per 100k rows".into(),
                |d| d.alone.cpu_per_100k(d.records),
                2,
            ),
            (
                "delivery alone: Azure emulator CPU s per 100k rows".into(),
                |d| d.alone_azure.cpu_per_100k(d.records),
                2,
            ),
            (
                "delivery alone: mirotrail peak RSS (MB)".into(),
                |d| d.alone.rss_mb(),
                1,
            ),
            (
                "first detection pass alone (no sink): mirotrail CPU s per 100k rows".into(),
                |d| d.detection.cpu_per_100k(d.records),
                2,
            ),
            (
                "first detection pass alone: mirotrail peak RSS (MB)".into(),
                |d| d.detection.rss_mb(),
                1,
            ),
            (
                "delivery and the first detection pass (`run --once` after a backfill): rows/s"
                    .into(),
                |d| d.usage.rate(d.records),
                0,
            ),
            (
                "delivery: MB/s sent (gzip)".into(),
                |d| d.bytes as f64 / 1e6 / d.usage.wall.as_secs_f64(),
                2,
            ),
            (
                "delivery and detection: mirotrail CPU s per 100k rows".into(),
                |d| d.usage.cpu_per_100k(d.records),
                2,
            ),
            (
                "delivery and detection: mirotrail peak RSS (MB)".into(),
                |d| d.usage.rss_mb(),
                1,
            ),
        ];
        for (label, figure, decimals) in figures {
            let _ = writeln!(
                t,
                "| {label} | {} |",
                col(&|s| s.delivery.iter().map(figure).collect(), decimals)
            );
        }
        let _ = writeln!(
            t,
            "| delivery: gzip bytes sent per row | {} |",
            col(
                &|s| s
                    .delivery
                    .iter()
                    .map(|d| d.bytes as f64 / d.records as f64)
                    .collect(),
                1
            )
        );
        let _ = writeln!(
            t,
            "| delivery and detection: Azure emulator CPU s per 100k rows | {} |",
            col(
                &|s| s
                    .delivery
                    .iter()
                    .map(|d| d.azure.cpu_per_100k(d.records))
                    .collect(),
                2
            )
        );
    }
    if !raw.is_empty() {
        let same = |f: &dyn Fn(&RawRun) -> f64, d: usize| -> String {
            let v = mmm(&raw.iter().map(f).collect::<Vec<_>>(), d);
            vec![v; labels.len()].join(" | ")
        };
        let _ = writeln!(
            t,
            "| raw ceiling (minimal client, own process), {audit} + {content}: events/s | {} |",
            same(&|r| r.usage.rate(r.events), 0)
        );
        let _ = writeln!(
            t,
            "| raw ceiling: client CPU s per 100k events | {} |",
            same(&|r| r.usage.cpu_per_100k(r.events), 2)
        );
        let _ = writeln!(
            t,
            "| raw ceiling: Miro emulator CPU s per 100k events | {} |",
            same(&|r| r.emulator.cpu_per_100k(r.events), 2)
        );
        let raw_cpu = median(
            &raw.iter()
                .map(|r| r.usage.cpu_per_100k(r.events))
                .collect::<Vec<_>>(),
        );
        if series.iter().any(|s| !s.big.is_empty()) {
            let _ = writeln!(
                t,
                "| mirotrail backfill CPU per event / raw client's (medians) | {} |",
                series
                    .iter()
                    .map(|s| format!(
                        "{:.2}",
                        median(
                            &s.big
                                .iter()
                                .map(|r| r.usage.cpu_per_100k(r.events))
                                .collect::<Vec<_>>()
                        ) / raw_cpu
                    ))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
        }
    }
    if series.len() == 2 {
        let med = |v: Vec<f64>| median(&v);
        let cpu_big = |s: &Series| {
            med(s
                .big
                .iter()
                .map(|r| r.usage.cpu_per_100k(r.events))
                .collect())
        };
        let cpu_del = |s: &Series| {
            med(s
                .delivery
                .iter()
                .map(|d| d.usage.cpu_per_100k(d.records))
                .collect())
        };
        let mut ratios = Vec::new();
        if !series[0].big.is_empty() {
            ratios.push(format!(
                "backfill {:.2}",
                cpu_big(&series[1]) / cpu_big(&series[0])
            ));
        }
        if !series[0].delivery.is_empty() {
            let cpu =
                |s: &Series, f: fn(&DeliveryRun) -> f64| med(s.delivery.iter().map(f).collect());
            let alone: fn(&DeliveryRun) -> f64 = |d| d.alone.cpu_per_100k(d.records);
            let detection: fn(&DeliveryRun) -> f64 = |d| d.detection.cpu_per_100k(d.records);
            ratios.push(format!(
                "delivery alone {:.2}, first detection pass {:.2}, delivery and detection {:.2}",
                cpu(&series[1], alone) / cpu(&series[0], alone),
                cpu(&series[1], detection) / cpu(&series[0], detection),
                cpu_del(&series[1]) / cpu_del(&series[0])
            ));
        }
        let _ = writeln!(t);
        let _ = writeln!(t, "B / A, medians of CPU per event: {}.", ratios.join(", "));
    }
    if !live_pairs.is_empty() {
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "Live mode of A, {} run(s) of {live_secs} s, each profile against its own emulated org \
             ({LIVE_AUDIT_PER_SEC} audit events/s, {LIVE_CONTENT_PER_SEC} content items/s, \
             {:.0}% of events late by up to 30 s, Miro's budget of {BUDGET_PER_MINUTE:.0} credits \
             a minute). Freshness over the events that became visible from the start to {tail} s \
             before the end; `>run`: not stored by the end. Missed: events visible before the \
             stop minus the time their poll and late re-read take to come due (mirotrail: \
             `overlap + overlap_every + settle_lag + poll_interval` of each source; CCF: its \
             5-minute poll) and not stored. min / median / max over the runs:",
            live_pairs.len(),
            LIVE_LATE_SHARE * 100.0
        );
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "| profile | events expected | missed | late expected | late missed | audit req per 1,000 | content req per 1,000 | credit budget spent (%) | of which audit / content (%) | visible -> stored p50 (s) | p99 (s) | visible -> Azure ack p50 (s) | p99 (s) | audit stored p50 / p99 (s) | content stored p50 / p99 (s) | mirotrail CPU (s) |"
        );
        let _ = writeln!(
            t,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for (name, k) in [("mirotrail (defaults)", 0), ("sentinel-ccf", 1)] {
            let rs: Vec<&LiveRun> = live_pairs
                .iter()
                .map(|p| if k == 0 { &p.0 } else { &p.1 })
                .collect();
            let f = |g: &dyn Fn(&LiveRun) -> f64, d: usize| {
                mmm(&rs.iter().map(|r| g(r)).collect::<Vec<_>>(), d)
            };
            let lat = |p: f64, ack: bool| {
                let xs: Vec<f64> = rs
                    .iter()
                    .map(|r| {
                        percentile(if ack { &r.to_ack } else { &r.to_store }, p)
                            .unwrap_or(f64::INFINITY)
                    })
                    .collect();
                mmm(&xs, 1).replace("inf", ">run")
            };
            let stream = |p: f64, audit: bool| {
                let xs: Vec<f64> = rs
                    .iter()
                    .map(|r| {
                        let v = if audit {
                            &r.to_store_audit
                        } else {
                            &r.to_store_content
                        };
                        percentile(v, p).unwrap_or(f64::INFINITY)
                    })
                    .collect();
                mmm(&xs, 1).replace("inf", ">run")
            };
            let _ = writeln!(
                t,
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} / {} | {} / {} | {} |",
                f(&|r| r.expected as f64, 0),
                f(&|r| r.missed as f64, 0),
                f(&|r| r.late_expected as f64, 0),
                f(&|r| r.late_missed as f64, 0),
                f(&|r| per_k(r.audit_requests, r.audit_stored), 1),
                f(&|r| per_k(r.content_requests, r.content_stored), 1),
                f(&|r| r.budget_pct, 2),
                f(&|r| r.budget_pct_audit, 2),
                f(&|r| r.budget_pct_content, 2),
                lat(0.5, false),
                lat(0.99, false),
                lat(0.5, true),
                lat(0.99, true),
                stream(0.5, true),
                stream(0.99, true),
                stream(0.5, false),
                stream(0.99, false),
                f(&|r| r.cpu.as_secs_f64(), 1),
            );
        }
    }
    t
}
