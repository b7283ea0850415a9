//! Collection end to end: the binary against the Miro emulator.

use std::time::Duration;

use mirotrail_emulator::UnixMs;
use mirotrail_emulator::miro::{Faults, LateArrival, OVERSIZED_CURSOR_CHARS, RateLimit};
use serde_json::Value;

use crate::support::*;

const SOURCES_BOTH: &str = "[sources.audit_logs]\nenabled = true\ninitial_lookback = \"7h\"\npage_size = 100\nmax_window = \"1h\"\n\n[sources.content_logs]\nenabled = true\ninitial_lookback = \"7h\"\npage_size = 150\nmax_window = \"90m\"\n";

/// Every emulated event of a multi-page, multi-window span lands in the store exactly
/// once, field by field as the DCR transformation defines.
/// The stored form of an item time: UTC milliseconds with `Z`, whatever form Miro used
/// (audit `createdAt` comes as `+0000`).
fn canonical(time: &Value) -> Option<String> {
    UnixMs::parse(time.as_str()?).map(UnixMs::to_iso)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_lands_exactly_once_field_by_field() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(6 * 60)), now.minus(minutes(10)));
    let env = Env::start(org(4000, 1500, start, end)).await;
    let config = env.config(SOURCES_BOTH);
    let out = env
        .run(
            &["run", "--config", config.to_str().unwrap(), "--once"],
            TOKEN,
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));

    let audit = expected_audit(&env.emu, start, end);
    let content = expected_content(&env.emu, start, end);
    assert_eq!(audit.len(), 4000);
    assert_eq!(content.len(), 1500);
    assert_exactly_once(&env.db(), "MiroAuditLogs_CL", &audit);
    assert_exactly_once(&env.db(), "MiroContentLogs_CL", &content);

    let mut missing_created_by = 0;
    let mut missing_object = 0;
    let mut missing_team = 0;
    for row in table(&env.db(), "MiroAuditLogs_CL") {
        let id = row["id"].clone().unwrap();
        let ev = &audit[&id];
        let s = |c: &str| row[c].clone().unwrap_or_default();
        assert_eq!(
            row["TimeGenerated"].as_deref(),
            canonical(&ev["createdAt"]).as_deref(),
            "{id}"
        );
        assert_eq!(
            row["createdAt"].as_deref(),
            canonical(&ev["createdAt"]).as_deref(),
            "{id}"
        );
        assert_eq!(s("event"), kql(ev, "/event"));
        assert_eq!(s("category"), kql(ev, "/category"));
        assert_eq!(s("logType"), kql(ev, "/type"));
        for (col, ptr) in [
            ("createdBy_email", "/createdBy/email"),
            ("createdBy_id", "/createdBy/id"),
            ("createdBy_name", "/createdBy/name"),
            ("createdBy_type", "/createdBy/type"),
            ("object_id", "/object/id"),
            ("object_name", "/object/name"),
            ("context_ip", "/context/ip"),
            ("context_team_id", "/context/team/id"),
            ("context_team_name", "/context/team/name"),
            ("context_team_type", "/context/team/type"),
            ("context_organization_id", "/context/organization/id"),
            ("context_organization_name", "/context/organization/name"),
            ("context_organization_type", "/context/organization/type"),
        ] {
            assert_eq!(s(col), kql(ev, ptr), "{id} {col}");
        }
        let details: Option<Value> = row["details"]
            .as_deref()
            .map(|d| serde_json::from_str(d).unwrap());
        assert_eq!(
            details.as_ref(),
            ev.get("details").filter(|v| !v.is_null()),
            "{id} details"
        );
        let raw: Value = serde_json::from_str(row["_raw"].as_deref().unwrap()).unwrap();
        assert_eq!(&raw, ev, "{id} raw");
        missing_created_by += u32::from(ev.get("createdBy").is_none());
        missing_object += u32::from(ev.get("object").is_none());
        missing_team += u32::from(ev.pointer("/context/team").is_none());
    }
    assert!(missing_created_by > 0 && missing_object > 0 && missing_team > 0);

    for row in table(&env.db(), "MiroContentLogs_CL") {
        let id = row["id"].clone().unwrap();
        let ev = &content[&id];
        let s = |c: &str| row[c].clone().unwrap_or_default();
        assert_eq!(
            row["TimeGenerated"].as_deref(),
            canonical(&ev["actionTime"]).as_deref(),
            "{id}"
        );
        assert_eq!(
            row["actionTime"].as_deref(),
            canonical(&ev["actionTime"]).as_deref(),
            "{id}"
        );
        for (col, ptr) in [
            ("actionType", "/actionType"),
            ("actor_id", "/actor/id"),
            ("actor_email", "/actor/email"),
            ("actor_name", "/actor/name"),
            ("contentId", "/contentId"),
            ("itemId", "/itemId"),
            ("itemType", "/itemType"),
        ] {
            assert_eq!(s(col), kql(ev, ptr), "{id} {col}");
        }
        for col in ["state", "relationships"] {
            let stored: Option<Value> = row[col]
                .as_deref()
                .map(|d| serde_json::from_str(d).unwrap());
            assert_eq!(
                stored.as_ref(),
                ev.get(col).filter(|v| !v.is_null()),
                "{id} {col}"
            );
        }
    }

    // A second run re-reads nothing new and inserts nothing.
    let out = env
        .run(
            &["run", "--config", config.to_str().unwrap(), "--once"],
            TOKEN,
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(count(&env.db(), "MiroAuditLogs_CL"), 4000);
    assert_eq!(count(&env.db(), "MiroContentLogs_CL"), 1500);
    // Multi-page and multi-window for real: content logs at 150 per page over 6 windows.
    let stats = env.emu.stats();
    assert!(
        stats.content_requests >= 10 && stats.audit_requests >= 40,
        "{stats:?}"
    );
}

/// Late arrivals: with an overlap re-read on every poll they are caught; with overlap 0
/// (the Sentinel poller's setting) the same run loses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_are_caught_by_the_overlap_and_lost_without_it() {
    async fn lost_with(overlap: &str) -> (usize, usize) {
        let now = UnixMs::now();
        let (start, end) = (now.minus(minutes(2)), now.plus(minutes(2)));
        let mut config = org(12_000, 0, start, end);
        config.late = LateArrival {
            share: 0.3,
            max_delay: Duration::from_secs(4),
        };
        let env = Env::start(config).await;
        let cfg = env.config(&format!(
            "[sources.audit_logs]\ninitial_lookback = \"3m\"\nsettle_lag = \"0s\"\nrecent_overlap = \"{overlap}\"\noverlap = \"{overlap}\"\n"
        ));
        let args = ["run", "--config", cfg.to_str().unwrap(), "--once"];
        let mut last_start = UnixMs::now();
        for pause in [5, 5, 0] {
            last_start = UnixMs::now();
            let out = env.run(&args, TOKEN).await;
            assert!(out.status.success(), "{}", text(&out));
            tokio::time::sleep(Duration::from_secs(pause)).await;
        }
        // Everything before the final watermark that was visible when the last run
        // started must be there (what became visible during it may or may not be).
        let watermark = audit_watermark(&env.db()).0;
        let expected = expected_audit_visible_by(
            &env.emu,
            start.minus(minutes(1)),
            UnixMs(watermark),
            last_start,
        );
        let stored: std::collections::HashSet<String> = table(&env.db(), "MiroAuditLogs_CL")
            .into_iter()
            .map(|r| r["id"].clone().unwrap())
            .collect();
        let lost = expected.keys().filter(|id| !stored.contains(*id)).count();
        (lost, expected.len())
    }
    let (lost_without, total) = lost_with("0s").await;
    assert!(
        lost_without > 0,
        "overlap 0 lost nothing of {total}: the test cannot tell"
    );
    let (lost_with_overlap, total) = lost_with("30s").await;
    assert_eq!(lost_with_overlap, 0, "of {total}");
    eprintln!("late events lost: {lost_without} with overlap 0, 0 with overlap 30s");
}

/// The late re-read: each poll reads only new time (`recent_overlap = "0s"`), and each
/// slice of time is read once more when `overlap` old. Runs are SIGKILLed at moments
/// spread over their windows, the late re-reads included, and restarted: every event up
/// to `overlap + settle_lag` late whose slice the re-reads have passed is stored exactly
/// once. The same runs with `overlap = "0s"` lose late events, so the check can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_are_caught_by_the_late_reread_across_kills() {
    async fn lost_with(overlap: &str) -> (usize, usize, usize) {
        let now = UnixMs::now();
        let (start, end) = (now.minus(minutes(2)), now.plus(minutes(2)));
        let mut config = org(12_000, 0, start, end);
        config.late = LateArrival {
            share: 0.3,
            max_delay: Duration::from_secs(4),
        };
        config.faults = Faults {
            slow_share: 0.3,
            slow_delay: Duration::from_millis(40),
            ..Faults::default()
        };
        let env = Env::start(config).await;
        let cfg = env.config(&format!(
            "[sources.audit_logs]\ninitial_lookback = \"3m\"\nsettle_lag = \"0s\"\nrecent_overlap = \"0s\"\noverlap = \"{overlap}\"\noverlap_every = \"0s\"\npage_size = 100\n"
        ));
        let args = ["run", "--config", cfg.to_str().unwrap(), "--once"];
        let mut kills = 0;
        for i in 0..14u64 {
            let mut child = env.spawn(env.command(&args, TOKEN));
            // Kill most runs part-way (two in three), let the others finish. A run that
            // only catches up takes a few hundred milliseconds: the kills are spread over
            // 30-261 ms so that most of them land inside a run.
            let wait_ms = if i % 3 != 2 {
                30 + (i * 37 % 250)
            } else {
                30_000
            };
            let killed = tokio::time::timeout(Duration::from_millis(wait_ms), child.wait())
                .await
                .is_err();
            if killed {
                child.start_kill().unwrap(); // SIGKILL
                let _ = child.wait().await;
                kills += 1;
            }
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let out = env.run(&args, TOKEN).await;
        assert!(out.status.success(), "{}", text(&out));
        // Everything before the late re-reads' mark (with overlap 0: the watermark) was
        // read again after every event up to `overlap` late in it had appeared.
        let conn = rusqlite::Connection::open_with_flags(
            env.db(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let reread: Option<i64> = conn
            .query_row(
                "SELECT reread_through_ms FROM checkpoints WHERE source = 'audit_logs'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let through = if overlap == "0s" {
            audit_watermark(&env.db())
        } else {
            UnixMs(reread.expect("late re-reads ran"))
        };
        let expected = expected_audit(&env.emu, start.minus(minutes(1)), through);
        assert!(
            expected.len() > 4_000,
            "only {} events before {through:?}: the runs did not get far",
            expected.len()
        );
        let stored: std::collections::HashMap<String, usize> = table(&env.db(), "MiroAuditLogs_CL")
            .into_iter()
            .fold(std::collections::HashMap::new(), |mut m, r| {
                *m.entry(r["id"].clone().unwrap()).or_default() += 1;
                m
            });
        assert!(stored.values().all(|&n| n == 1), "a row stored twice");
        let lost = expected
            .keys()
            .filter(|id| !stored.contains_key(*id))
            .count();
        (lost, expected.len(), kills)
    }
    let (lost_without, total, _) = lost_with("0s").await;
    assert!(
        lost_without > 0,
        "overlap 0 lost nothing of {total}: the test cannot tell"
    );
    let (lost_with_reread, total, kills) = lost_with("6s").await;
    assert!(kills >= 4, "only {kills} runs were killed part-way");
    assert_eq!(lost_with_reread, 0, "of {total}");
    eprintln!(
        "late events lost: {lost_without} with overlap 0, 0 with a late re-read at 6 s ({kills} kills)"
    );
}

/// 429 storms, 5xx, truncated bodies and HTML error pages are survived with nothing lost
/// and nothing duplicated; the real credit budget is respected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_server_errors_and_cut_bodies_lose_nothing() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(120)), now.minus(minutes(5)));
    let mut config = org(3000, 600, start, end);
    config.rate_limit = Some(RateLimit {
        credits_per_minute: 100_000,
        retry_after_header: false,
    });
    config.faults = Faults {
        server_error_share: 0.12,
        truncate_share: 0.1,
        html_share: 0.1,
        throttle_share: 0.1,
        ..Faults::default()
    };
    let env = Env::start(config).await;
    let cfg = env.config(
        "[sources.audit_logs]\ninitial_lookback = \"3h\"\npage_size = 50\n\n[sources.content_logs]\nenabled = true\ninitial_lookback = \"3h\"\npage_size = 100\n\n[budget]\nshare = 1.0\n",
    );
    let out = env
        .run(&["run", "--config", cfg.to_str().unwrap(), "--once"], TOKEN)
        .await;
    assert!(out.status.success(), "{}", text(&out));
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
    let stats = env.emu.stats();
    for fault in ["server_error", "truncate", "html", "throttle"] {
        assert!(
            stats.faults.get(fault).copied().unwrap_or(0) > 0,
            "{fault} never injected: {stats:?}"
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("429"), "the 429s are reported: {stderr}");
}

/// Refused and repeated cursors: a refused cursor restarts the window, a repeating
/// cursor is reported and not looped on, duplicate items in a page are stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cursors_and_duplicate_items_are_handled() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(60)), now.minus(minutes(5)));
    let mut config = org(2000, 0, start, end);
    config.faults = Faults {
        expire_cursor_share: 0.2,
        duplicate_item_share: 0.3,
        ..Faults::default()
    };
    let env = Env::start(config).await;
    // 40 pages in one window, a fifth of the cursors refused: progress only because a
    // refused cursor resumes from the latest stored item.
    let cfg = env.config("[sources.audit_logs]\ninitial_lookback = \"2h\"\npage_size = 50\n");
    let args = ["run", "--config", cfg.to_str().unwrap(), "--once"];
    let out = env.run(&args, TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_exactly_once(
        &env.db(),
        "MiroAuditLogs_CL",
        &expected_audit(&env.emu, start, end),
    );
    let stats = env.emu.stats();
    assert!(
        stats.faults.get("expire_cursor").copied().unwrap_or(0) > 0,
        "{stats:?}"
    );

    // A cursor that comes back unchanged: the run fails with a clear message, quickly.
    let mut config = org(2000, 0, start, end);
    config.faults = Faults {
        repeat_cursor_share: 1.0,
        ..Faults::default()
    };
    let env = Env::start(config).await;
    let cfg = env.config("[sources.audit_logs]\ninitial_lookback = \"2h\"\npage_size = 100\n");
    let out = env
        .run(&["run", "--config", cfg.to_str().unwrap(), "--once"], TOKEN)
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("again") && stderr.contains("does not advance"),
        "{stderr}"
    );
    assert!(
        env.emu.stats().audit_requests < 5,
        "it looped: {:?}",
        env.emu.stats()
    );
    // What it read before noticing is kept: the first page, and the page that came
    // back with its own cursor.
    assert_eq!(count(&env.db(), "MiroAuditLogs_CL"), 200);
}

/// SIGKILL between and during page commits, then restart: nothing lost, nothing
/// duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_then_restart_loses_and_duplicates_nothing() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(180)), now.minus(minutes(5)));
    let mut config = org(6000, 1200, start, end);
    config.faults = Faults {
        slow_share: 0.5,
        slow_delay: Duration::from_millis(60),
        ..Faults::default()
    };
    let env = Env::start(config).await;
    let cfg = env.config(
        "[sources.audit_logs]\ninitial_lookback = \"4h\"\npage_size = 50\nmax_window = \"40m\"\n\n[sources.content_logs]\nenabled = true\ninitial_lookback = \"4h\"\npage_size = 40\n\n[sinks.archive]\ntype = \"file\"\npath = \"archive\"\nbatch_rows = 300\n",
    );
    let args = ["run", "--config", cfg.to_str().unwrap(), "--once"];
    let mut kills = 0;
    let mut rows_at_kill = Vec::new();
    for i in 0..12u64 {
        let mut child = env.spawn(env.command(&args, TOKEN));
        let wait_ms = 150 + (i * 7919 % 600);
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.start_kill().unwrap(); // SIGKILL
        let _ = child.wait().await;
        kills += 1;
        rows_at_kill.push(count(&env.db(), "MiroAuditLogs_CL"));
    }
    let out = env.run(&args, TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        kills >= 5,
        "only {kills} kills landed before the run finished"
    );
    assert!(
        rows_at_kill.windows(2).any(|w| w[0] < w[1]),
        "no progress between kills: {rows_at_kill:?}"
    );
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
    // The file sink got every row at least once.
    let lines =
        std::fs::read_to_string(env.dir.path().join("archive/MiroAuditLogs_CL.ndjson")).unwrap();
    let ids: std::collections::HashSet<String> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 6000);
    eprintln!("{kills} kills; audit rows at each kill: {rows_at_kill:?}");
}

/// The stored cursor of the audit window (`None` when no window is open).
fn stored_cursor_chars(db: &std::path::Path) -> Option<usize> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(
        "SELECT cursor FROM checkpoints WHERE source = 'audit_logs'",
        [],
        |r| r.get::<_, Option<String>>(0),
    )
    .unwrap()
    .map(|c| c.len())
}

/// A cursor too long for any request URL (100,000 characters) used to be saved in the
/// checkpoint and retried as a transient error, so every later run failed without a
/// request. It now restarts the window from the latest stored item, like a refused cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_cursor_restarts_the_window_instead_of_blocking_the_source() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(60)), now.minus(minutes(5)));
    let env = Env::start(org(1000, 0, start, end)).await;
    env.emu.hand_out_oversized_cursors(1);
    let cfg = env.config("[sources.audit_logs]\ninitial_lookback = \"2h\"\npage_size = 50\n");
    let args = ["run", "--config", cfg.to_str().unwrap(), "--once"];
    let out = env.run(&args, TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_exactly_once(
        &env.db(),
        "MiroAuditLogs_CL",
        &expected_audit(&env.emu, start, end),
    );
    assert_eq!(
        env.emu.stats().faults.get("oversized_cursor").copied(),
        Some(1)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot continue from the cursor")
            && stderr.contains("cannot be sent back")
            && stderr.contains(&format!("{OVERSIZED_CURSOR_CHARS} characters")),
        "the warning names the cause: {}",
        text(&out)
    );
    assert!(stored_cursor_chars(&env.db()).is_none_or(|n| n < 1000));

    // The next run is not stuck either, even when handed such a cursor again.
    env.emu.hand_out_oversized_cursors(1);
    let out = env.run(&args, TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_exactly_once(
        &env.db(),
        "MiroAuditLogs_CL",
        &expected_audit(&env.emu, start, end),
    );
}

/// A checkpoint that already holds an oversized cursor (saved by v0.1) recovers: the
/// window is read again instead of failing every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_oversized_cursor_from_an_older_version_recovers() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(60)), now.minus(minutes(5)));
    let env = Env::start(org(600, 0, start, end)).await;
    let cfg = env.config("[sources.audit_logs]\ninitial_lookback = \"2h\"\npage_size = 50\n");
    let args = ["run", "--config", cfg.to_str().unwrap(), "--once"];
    let out = env.run(&args, TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    {
        // What v0.1 left behind: an open window over the whole span with the cursor.
        let conn = rusqlite::Connection::open(env.db()).unwrap();
        conn.execute(
            "UPDATE checkpoints SET window_from_ms = ?1, window_to_ms = watermark_ms,
                 window_started_ms = watermark_ms, window_read_through_ms = NULL, cursor = ?2
             WHERE source = 'audit_logs'",
            rusqlite::params![start.0 - 1000, "7".repeat(OVERSIZED_CURSOR_CHARS)],
        )
        .unwrap();
    }
    let out = env.run(&args, TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot be sent back"), "{}", text(&out));
    assert!(stored_cursor_chars(&env.db()).is_none_or(|n| n < 1000));
    assert_exactly_once(
        &env.db(),
        "MiroAuditLogs_CL",
        &expected_audit(&env.emu, start, end),
    );
}

/// Miro's audit ids and cursors hold a `#` (`2023-09-01T09:30:10.840687Z#…-DDB`). The
/// cursor must go back URL-encoded (sent raw, everything from `#` on is a URL fragment and
/// never reaches the server: page 2 is refused), and the ids must stay exactly as sent in
/// the store and in every sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_and_cursors_with_hash_round_trip_to_the_store_and_every_sink() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(60)), now.minus(minutes(5)));
    let env = Env::start(org(1200, 0, start, end)).await;
    let cfg = env.config(
        "[sources.audit_logs]\ninitial_lookback = \"2h\"\npage_size = 100\n\
         [sinks.archive]\ntype = \"file\"\npath = \"archive\"\n\
         [sinks.out]\ntype = \"stdout\"\n",
    );
    let out = env
        .run(&["run", "--config", cfg.to_str().unwrap(), "--once"], TOKEN)
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let stats = env.emu.stats();
    assert!(
        stats.audit_requests >= 12,
        "cursors were followed: {stats:?}"
    );
    assert_eq!(
        stats.by_status.get(&400),
        None,
        "no cursor refused: {stats:?}"
    );

    let expected: std::collections::BTreeSet<String> =
        expected_audit(&env.emu, start, end).into_keys().collect();
    assert_eq!(expected.len(), 1200);
    assert!(expected.iter().all(|id| id.contains('#')));
    let stored: std::collections::BTreeSet<String> = table(&env.db(), "MiroAuditLogs_CL")
        .into_iter()
        .map(|r| {
            let raw: Value = serde_json::from_str(r["_raw"].as_deref().unwrap()).unwrap();
            assert_eq!(raw["id"].as_str(), r["id"].as_deref());
            r["id"].clone().unwrap()
        })
        .collect();
    assert_eq!(stored, expected, "store");
    let ids_of = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                v["id"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    let file =
        std::fs::read_to_string(env.dir.path().join("archive/MiroAuditLogs_CL.ndjson")).unwrap();
    assert_eq!(ids_of(&file), expected, "file sink");
    assert_eq!(
        ids_of(&String::from_utf8_lossy(&out.stdout)),
        expected,
        "stdout sink"
    );
}
