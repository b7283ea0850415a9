//! `mirotrail backfill` end to end: the binary against the Miro emulator.

use std::path::Path;
use std::time::Duration;

use mirotrail_emulator::UnixMs;
use mirotrail_emulator::miro::Faults;

use crate::support::*;

fn hours(n: i64) -> Duration {
    minutes(n * 60)
}

/// `(id, done, pages)` of every backfill slice of a source.
fn slices(db: &Path, source: &str) -> Vec<(i64, bool, i64)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare("SELECT id, done, pages FROM backfill_slices WHERE source = ?1 ORDER BY id")
        .unwrap();
    stmt.query_map([source], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn slice_sum(db: &Path, column: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(
        &format!("SELECT coalesce(sum({column}), 0) FROM backfill_slices"),
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// Every event of a multi-day span, both streams, lands exactly once; every slice ends
/// done; progress is logged without a terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_of_a_multi_day_span_lands_every_event_exactly_once() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(hours(72)), now.minus(minutes(30)));
    let env = Env::start(org(6000, 2500, start, end)).await;
    let config = env.config(
        "[sources.audit_logs]\npage_size = 200\n\n[sources.content_logs]\nenabled = true\npage_size = 300\n",
    );
    let out = env
        .run(
            &[
                "backfill",
                "--config",
                config.to_str().unwrap(),
                "--since",
                "73h",
                "--slice",
                "6h",
                "--concurrency",
                "3",
            ],
            TOKEN,
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("backfill progress"), "{}", text(&out));

    let audit = expected_audit(&env.emu, start, end);
    let content = expected_content(&env.emu, start, end);
    assert_eq!((audit.len(), content.len()), (6000, 2500));
    assert_exactly_once(&env.db(), "MiroAuditLogs_CL", &audit);
    assert_exactly_once(&env.db(), "MiroContentLogs_CL", &content);
    for source in ["audit_logs", "content_logs"] {
        let s = slices(&env.db(), source);
        // 73 hours on a 6-hour grid: 13 or 14 slices.
        assert!((13..=14).contains(&s.len()), "{source}: {s:?}");
        assert!(s.iter().all(|(_, done, _)| *done), "{source}: {s:?}");
    }
    assert_eq!(slice_sum(&env.db(), "inserted"), 8500);

    // Asked again: nothing is read twice, nothing is added.
    let before = env.emu.stats().requests;
    let out = env
        .run(
            &[
                "backfill",
                "--config",
                config.to_str().unwrap(),
                "--since",
                "73h",
                "--until",
                "40m",
                "--slice",
                "6h",
            ],
            TOKEN,
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.emu.stats().requests, before, "{}", text(&out));
    assert_eq!(count(&env.db(), "MiroAuditLogs_CL"), 6000);
}

/// SIGKILL in the middle of a backfill, then the same command again: slices finished
/// before the kill are not fetched again, and nothing is lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_backfill_resumes_without_refetching_done_slices() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(hours(48)), now.minus(minutes(30)));
    let mut org = org(12_000, 0, start, end);
    org.faults = Faults {
        slow_share: 0.5,
        slow_delay: Duration::from_millis(40),
        ..Faults::default()
    };
    let env = Env::start(org).await;
    let config = env.config("[sources.audit_logs]\npage_size = 50\n");
    let args = [
        "backfill",
        "--config",
        config.to_str().unwrap(),
        "--since",
        "49h",
        "--slice",
        "2h",
        "--concurrency",
        "2",
    ];
    let mut child = env
        .command(&args, TOKEN)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill once a few slices are done and others are under way.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if env.db().exists() {
            let conn = rusqlite::Connection::open_with_flags(
                env.db(),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .unwrap();
            let done: i64 = conn
                .query_row(
                    "SELECT count(*) FROM backfill_slices WHERE done = 1",
                    [],
                    |r| r.get(0),
                )
                .unwrap_or(0);
            if done >= 6 {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no slices done in 2 minutes"
        );
    }
    child.start_kill().unwrap(); // SIGKILL
    let status = child.wait().await.unwrap();
    assert!(!status.success());
    let at_kill = slices(&env.db(), "audit_logs");
    let rows_at_kill = count(&env.db(), "MiroAuditLogs_CL");
    let done_at_kill: Vec<(i64, bool, i64)> = at_kill.iter().filter(|s| s.1).cloned().collect();
    assert!(
        done_at_kill.len() < at_kill.len(),
        "the backfill finished before the kill: {at_kill:?}"
    );
    assert!(rows_at_kill > 0 && rows_at_kill < 12_000);
    let requests_at_kill = env.emu.stats().audit_requests;

    let out = env.run(&args, TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_exactly_once(
        &env.db(),
        "MiroAuditLogs_CL",
        &expected_audit(&env.emu, start, end),
    );
    let after = slices(&env.db(), "audit_logs");
    assert!(after.iter().all(|s| s.1), "{after:?}");
    for done in &done_at_kill {
        let now = after.iter().find(|s| s.0 == done.0).unwrap();
        assert_eq!(now, done, "a slice done before the kill was read again");
    }
    // The resumed run only fetched the pages the unfinished slices still needed (plus at
    // most one page per slice that was in flight when the kill came).
    let resumed_requests = env.emu.stats().audit_requests - requests_at_kill;
    let pages_left: i64 = after.iter().zip(&at_kill).map(|(a, b)| a.2 - b.2).sum();
    assert!(
        (pages_left..=pages_left + 2).contains(&(i64::try_from(resumed_requests).unwrap())),
        "resumed with {resumed_requests} requests for {pages_left} pages left\n{}",
        text(&out)
    );
}

/// A backfill beside a running `run` on the same store: allowed, and the rows `run`
/// stored are counted as duplicates, never stored twice. A second backfill is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_beside_live_collection_duplicates_nothing() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(hours(30)), now.minus(minutes(2)));
    let env = Env::start(org(9000, 1200, start, end)).await;
    let config = env.config(
        "[sources.audit_logs]\ninitial_lookback = \"12h\"\npoll_interval = \"1s\"\npage_size = 100\n\n\
         [sources.content_logs]\nenabled = true\ninitial_lookback = \"12h\"\npoll_interval = \"1s\"\npage_size = 100\n",
    );
    let cfg = config.to_str().unwrap();
    let mut run = env
        .command(&["run", "--config", cfg], TOKEN)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count(&env.db(), "MiroAuditLogs_CL") < 3000 {
        assert!(std::time::Instant::now() < deadline, "run stored nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let backfill_args = [
        "backfill", "--config", cfg, "--since", "31h", "--slice", "3h",
    ];
    let mut first = env
        .command(&backfill_args, TOKEN)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = env.run(&backfill_args, TOKEN).await;
    let first = first.wait().await.unwrap();
    assert!(first.success());
    if !second.status.success() {
        assert_eq!(second.status.code(), Some(1), "{}", text(&second));
        assert!(
            String::from_utf8_lossy(&second.stderr).contains("another backfill is running"),
            "{}",
            text(&second)
        );
    }
    let pid = run.id().unwrap().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::time::timeout(Duration::from_secs(30), run.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());

    assert_exactly_once(
        &env.db(),
        "MiroAuditLogs_CL",
        &expected_audit(&env.emu, start, end),
    );
    assert_exactly_once(
        &env.db(),
        "MiroContentLogs_CL",
        &expected_content(&env.emu, start, end),
    );
    assert!(
        slice_sum(&env.db(), "duplicates") > 0,
        "the backfill met none of the live rows"
    );
}

/// Asking for more history than the API keeps warns and still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_history_than_the_api_keeps_is_a_warning() {
    let now = UnixMs::now();
    let env = Env::start(org(500, 0, now.minus(hours(24 * 95)), now.minus(hours(1)))).await;
    let config = env.config("");
    let out = env
        .run(
            &[
                "backfill",
                "--config",
                config.to_str().unwrap(),
                "--since",
                "100d",
                "--slice",
                "30d",
                "--source",
                "audit_logs",
            ],
            TOKEN,
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("keeps about 90 days"),
        "{}",
        text(&out)
    );
    assert_eq!(count(&env.db(), "MiroAuditLogs_CL"), 500);
}

/// A backfill handed a cursor too long for any request URL restarts the slice from the
/// latest stored item instead of failing it on every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_cursor_restarts_the_backfill_slice() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(hours(5)), now.minus(minutes(30)));
    let env = Env::start(org(800, 0, start, end)).await;
    env.emu.hand_out_oversized_cursors(2);
    let config = env.config("[sources.audit_logs]\npage_size = 50\n");
    let out = env
        .run(
            &[
                "backfill",
                "--config",
                config.to_str().unwrap(),
                "--since",
                "6h",
                "--slice",
                "3h",
            ],
            TOKEN,
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot continue from the cursor")
            && stderr.contains("cannot be sent back"),
        "{}",
        text(&out)
    );
    assert_eq!(
        env.emu.stats().faults.get("oversized_cursor").copied(),
        Some(2)
    );
    assert_exactly_once(
        &env.db(),
        "MiroAuditLogs_CL",
        &expected_audit(&env.emu, start, end),
    );
    assert!(
        slices(&env.db(), "audit_logs")
            .iter()
            .all(|(_, done, _)| *done)
    );
}

/// Sum of `column` over the rows of `table` (0 when the table is still empty or missing).
fn committed_sum(db: &Path, table: &str, column: &str) -> i64 {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    conn.query_row(
        &format!("SELECT coalesce(sum({column}), 0) FROM {table}"),
        [],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

/// Runs `args` and SIGKILLs it at a moment when pages were fetched but their group was
/// not committed yet (Miro counted more requests than the committed progress in `table`
/// records in `column`), retrying the kill a few times if a commit slipped in between.
/// Returns the requests Miro counted and the ones committed, at the kill.
async fn kill_inside_a_group(env: &Env, args: &[&str], table: &str, column: &str) -> (i64, i64) {
    for _ in 0..5 {
        let mut child = env
            .command(args, TOKEN)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let committed = committed_sum(&env.db(), table, column);
            let fetched = i64::try_from(env.emu.stats().audit_requests).unwrap();
            if committed > 0 && fetched >= committed + 5 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no group of uncommitted pages in 2 minutes"
            );
            assert!(child.try_wait().unwrap().is_none(), "the run ended first");
        }
        child.start_kill().unwrap(); // SIGKILL
        let _ = child.wait().await;
        let committed = committed_sum(&env.db(), table, column);
        let fetched = i64::try_from(env.emu.stats().audit_requests).unwrap();
        // More than the one request that may have been in flight.
        if fetched > committed + 1 {
            return (fetched, committed);
        }
    }
    panic!("every kill came right after a commit");
}

/// SIGKILL while a group of fetched pages is not committed yet (pages are committed up
/// to 64, 1 MiB or 1 s at a time): rows and progress were committed together, and the
/// resumed backfill fetches exactly the pages it had not committed, losing and
/// duplicating nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_inside_a_group_of_backfill_pages_refetches_only_that_group() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(hours(20)), now.minus(minutes(30)));
    let mut org = org(10_000, 0, start, end);
    org.faults = Faults {
        slow_share: 0.5,
        slow_delay: Duration::from_millis(30),
        ..Faults::default()
    };
    let env = Env::start(org).await;
    let config = env.config("[sources.audit_logs]\npage_size = 20\n");
    let args = [
        "backfill",
        "--config",
        config.to_str().unwrap(),
        "--since",
        "21h",
        "--slice",
        "1d",
        "--concurrency",
        "1",
    ];
    let (fetched, committed) =
        kill_inside_a_group(&env, &args, "backfill_slices", "requests").await;
    // The rows stored are exactly the ones the committed progress counts.
    assert_eq!(
        count(&env.db(), "MiroAuditLogs_CL"),
        committed_sum(&env.db(), "backfill_slices", "inserted")
    );
    assert!(count(&env.db(), "MiroAuditLogs_CL") < 10_000);

    let out = env.run(&args, TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_exactly_once(
        &env.db(),
        "MiroAuditLogs_CL",
        &expected_audit(&env.emu, start, end),
    );
    // Every request of the resumed run is one its slices committed: it started at the
    // stored cursor, so it read again the pages fetched but not committed at the kill
    // (and nothing committed before it).
    let resumed = i64::try_from(env.emu.stats().audit_requests).unwrap() - fetched;
    let committed_after = committed_sum(&env.db(), "backfill_slices", "requests");
    assert_eq!(resumed, committed_after - committed, "{}", text(&out));
}

/// The same for live collection catching up a long window: a kill inside a group
/// commits neither its rows nor the checkpoint after it, and the next run reads those
/// pages again from the stored cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_inside_a_group_of_live_pages_refetches_only_that_group() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(hours(20)), now.minus(minutes(30)));
    let mut org = org(10_000, 0, start, end);
    org.faults = Faults {
        slow_share: 0.5,
        slow_delay: Duration::from_millis(30),
        ..Faults::default()
    };
    let env = Env::start(org).await;
    let config = env.config("[sources.audit_logs]\ninitial_lookback = \"21h\"\npage_size = 20\n");
    let args = ["run", "--once", "--config", config.to_str().unwrap()];
    let (fetched, committed) =
        kill_inside_a_group(&env, &args, "checkpoints", "requests_total").await;
    assert!(count(&env.db(), "MiroAuditLogs_CL") < 10_000);

    let out = env.run(&args, TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_exactly_once(
        &env.db(),
        "MiroAuditLogs_CL",
        &expected_audit(&env.emu, start, end),
    );
    let resumed = i64::try_from(env.emu.stats().audit_requests).unwrap() - fetched;
    let committed_after = committed_sum(&env.db(), "checkpoints", "requests_total");
    assert_eq!(resumed, committed_after - committed, "{}", text(&out));
}
