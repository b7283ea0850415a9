//! AI interaction logs end to end: the Miro emulator's `ai-interaction-logs` endpoint ->
//! the `mirotrail` binary (`run`, `backfill`, restarts) -> the store, a file sink and the
//! Azure emulator's third stream; and why the source needs no long overlap (its window is
//! on `storedAt`).

use std::collections::HashMap;
use std::time::Duration;

use mirotrail::config::SourceKind;
use mirotrail_emulator::UnixMs;
use mirotrail_emulator::azure::{
    AI_DCR, AUDIT_DCR, AzureEmulator, AzureEmulatorConfig, AzureEmulatorHandle, CONTENT_DCR,
};
use mirotrail_emulator::miro::{LateArrival, MiroEmulatorConfig, StreamShape};

use crate::support::*;

const SECRET: &str = "azure-secret-a1b2c3d4e5f6";
const TABLE: &str = "MiroAiInteractionLogs_CL";

/// An org with only AI interaction entries: `count` spread by `storedAt` over
/// `[start, end)`, a `late_share` of them created up to `max_delay` before they were stored.
fn ai_org(
    count: u64,
    start: UnixMs,
    end: UnixMs,
    late_share: f64,
    max_delay: Duration,
) -> MiroEmulatorConfig {
    let mut c = org(0, 0, start, end);
    c.ai = StreamShape { count, start, end };
    c.late = LateArrival {
        share: late_share,
        max_delay,
    };
    c
}

fn sentinel_section(azure: &AzureEmulatorHandle, config: &AzureEmulatorConfig) -> String {
    format!(
        "[sinks.sentinel]\ntype = \"azure_logs_ingestion\"\nendpoint = \"{base}\"\n\
         audit_logs_dcr = \"{AUDIT_DCR}\"\ncontent_logs_dcr = \"{CONTENT_DCR}\"\n\
         ai_interaction_logs_dcr = \"{AI_DCR}\"\n\
         authority_host = \"{base}\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\n\
         client_secret_file = \"azure-secret\"\n",
        config.tenant_id,
        config.client_id,
        base = azure.base_url(),
    )
}

fn write_secret(env: &Env) {
    let path = env.dir.path().join("azure-secret");
    std::fs::write(&path, SECRET).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The AI source's watermark: every entry stored before it has been read.
fn ai_watermark(env: &Env) -> UnixMs {
    let conn =
        rusqlite::Connection::open_with_flags(env.db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    UnixMs(
        conn.query_row(
            "SELECT watermark_ms FROM checkpoints WHERE source = 'ai_interaction_logs'",
            [],
            |r| r.get(0),
        )
        .unwrap(),
    )
}

/// The ids in the file sink's NDJSON files of the AI table, with how often each occurs.
fn archived_ids(env: &Env) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for entry in std::fs::read_dir(env.dir.path().join("archive")).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(TABLE)
        {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            *ids.entry(v["id"].as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    ids
}

/// `run --once`, `backfill` of older history, a restart: every entry stored in the span is
/// in the store once, in the file sink once and in the Azure emulator's
/// `MiroAiInteractionLogs_CL` once, equal to the local row; `status` and `query` show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_logs_are_collected_backfilled_and_delivered_once_across_restarts() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(6 * 60)), now.minus(minutes(5)));
    let env = Env::start(ai_org(900, start, end, 0.3, Duration::from_secs(7200))).await;
    let azure_config = AzureEmulatorConfig {
        client_secret: SECRET.into(),
        ..AzureEmulatorConfig::default()
    };
    let azure = AzureEmulator::start(azure_config.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    write_secret(&env);
    let cfg = env.config(&format!(
        "[sources.audit_logs]\nenabled = false\n\
         [sources.ai_interaction_logs]\nenabled = true\ninitial_lookback = \"2h\"\n\
         [sinks.archive]\ntype = \"file\"\npath = \"archive\"\n{}",
        sentinel_section(&azure, &azure_config)
    ));
    let cfg = cfg.to_str().unwrap();

    let out = env.run(&["run", "--config", cfg, "--once"], TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    let recent = count(&env.db(), TABLE);
    // The last two hours hold about a third of the entries (by storedAt).
    assert!((250..=350).contains(&recent), "{recent}");

    let out = env
        .run(
            &[
                "backfill",
                "--config",
                cfg,
                "--since",
                "7h",
                "--source",
                "ai_interaction_logs",
            ],
            TOKEN,
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let out = env.run(&["run", "--config", cfg, "--once"], TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));

    let expected = expected_ai(&env.emu, start, end);
    assert_eq!(expected.len(), 900);
    assert_exactly_once(&env.db(), TABLE, &expected);
    // Late entries (created hours before they were stored) are among them.
    let org = env.emu.org();
    let late = (0..900)
        .filter(|&i| org.ai_stored_at(i).0 - org.ai_created_at(i).0 > 60_000)
        .count();
    assert!(late > 100, "{late}");

    // Every column as the table is designed, from the item as served.
    for row in table(&env.db(), TABLE) {
        let id = row["id"].clone().unwrap();
        let item = &expected[&id];
        let time = |key: &str| UnixMs::parse(item[key].as_str().unwrap()).map(UnixMs::to_iso);
        assert_eq!(row["TimeGenerated"], time("createdAt"), "{id}");
        assert_eq!(row["createdAt"], time("createdAt"), "{id}");
        assert_eq!(row["storedAt"], time("storedAt"), "{id}");
        for (column, pointer) in [
            ("sessionId", "/sessionId"),
            ("messageId", "/messageId"),
            ("aiFeatureName", "/aiFeatureName"),
            ("logType", "/logType"),
            ("object_id", "/object/id"),
            ("object_type", "/object/type"),
            ("actor_id", "/actor/id"),
            ("actor_email", "/actor/email"),
            ("actor_name", "/actor/name"),
        ] {
            assert_eq!(
                row[column].as_deref(),
                Some(kql(item, pointer).as_str()),
                "{id} {column}"
            );
        }
        let details: serde_json::Value =
            serde_json::from_str(row["details"].as_deref().unwrap()).unwrap();
        assert_eq!(details, item["details"], "{id}");
        let raw: serde_json::Value = serde_json::from_str(row["_raw"].as_deref().unwrap()).unwrap();
        assert_eq!(&raw, item, "{id}");
    }

    // Delivered: once to the file sink, once to Sentinel, equal to the local rows.
    let archived = archived_ids(&env);
    assert_eq!(archived.len(), 900);
    assert!(
        archived.values().all(|n| *n == 1),
        "a row was written twice"
    );
    let dup = assert_all_in_azure(&env, &azure, SourceKind::AiInteractionLogs);
    assert_eq!(dup, 0);

    // `status` and `query` show the source and its table.
    let out = env
        .run(&["status", "--config", cfg, "--format", "json"], TOKEN)
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let source = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "ai_interaction_logs")
        .unwrap();
    assert_eq!(source["events_stored"], 900);
    assert_eq!(source["enabled"], true);
    for sink in ["archive", "sentinel"] {
        let line = status["sinks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["sink"] == sink && s["source"] == "ai_interaction_logs")
            .unwrap();
        assert_eq!(
            (line["delivered"].as_i64(), line["pending"].as_i64()),
            (Some(900), Some(0)),
            "{line}"
        );
        assert!(line["not_sent"].is_null(), "{line}");
    }
    let out = env
        .run(
            &[
                "query",
                "--config",
                cfg,
                "--format",
                "csv",
                "SELECT count(DISTINCT sessionId) > 0, count(*) FROM MiroAiInteractionLogs_CL",
            ],
            TOKEN,
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1,900"),
        "{}",
        text(&out)
    );
    azure.shutdown().await;
}

/// The window is on `storedAt`: an entry created long before the watermark but stored
/// after it is in a later window, so a 30-second overlap collects it, exactly once. (A
/// window on `createdAt` with that overlap would lose every such entry.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ai_entry_stored_late_is_collected_exactly_once_with_the_small_overlap() {
    let now = UnixMs::now();
    // About one entry a second, the last ones stored 30 s from now; every one created up
    // to an hour before it was stored.
    let (start, end) = (now.minus(minutes(5)), now.plus(Duration::from_secs(30)));
    let env = Env::start(ai_org(330, start, end, 1.0, Duration::from_secs(3600))).await;
    let cfg = env.config(
        "[sources.audit_logs]\nenabled = false\n\
         [sources.ai_interaction_logs]\nenabled = true\ninitial_lookback = \"10m\"\n",
    );
    let cfg = cfg.to_str().unwrap();
    let out = env.run(&["run", "--config", cfg, "--once"], TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    let first_watermark = ai_watermark(&env);
    let first = count(&env.db(), TABLE);
    assert!(first > 200, "{first}");

    // Entries are stored meanwhile, each created long before the first watermark.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let out = env.run(&["run", "--config", cfg, "--once"], TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    let second_watermark = ai_watermark(&env);
    assert!(second_watermark > first_watermark);

    let org = env.emu.org();
    let overlap = Duration::from_secs(30);
    let stored_late: Vec<u64> = org
        .ai_range(first_watermark, second_watermark)
        .filter(|&i| org.ai_created_at(i) < first_watermark.minus(overlap))
        .collect();
    assert!(
        stored_late.len() >= 5,
        "entries created before the first window ended (less the overlap) and stored \
         after it: {}",
        stored_late.len()
    );
    // Everything stored before the second watermark: once, the late ones included.
    let expected = expected_ai(&env.emu, start, second_watermark);
    for i in &stored_late {
        assert!(expected.contains_key(org.ai_entry(*i)["id"].as_str().unwrap()));
    }
    assert_exactly_once(&env.db(), TABLE, &expected);
}

/// A Sentinel sink without `ai_interaction_logs_dcr` does not get the stream (the table
/// is mirotrail's own, not the solution's): `run` succeeds and sends nothing there,
/// `status` and `check` say so; `check` verifies the scope with a one-item request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_dcr_the_ai_stream_is_not_sent_to_sentinel_and_check_says_so() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(60)), now.minus(minutes(2)));
    let mut miro = ai_org(50, start, end, 0.0, Duration::ZERO);
    miro.audit = StreamShape {
        count: 30,
        start,
        end,
    };
    let env = Env::start(miro).await;
    let azure_config = AzureEmulatorConfig {
        client_secret: SECRET.into(),
        ..AzureEmulatorConfig::default()
    };
    let azure = AzureEmulator::start(azure_config.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    write_secret(&env);
    let section = sentinel_section(&azure, &azure_config)
        .replace(&format!("ai_interaction_logs_dcr = \"{AI_DCR}\"\n"), "");
    let cfg = env.config(&format!(
        "[sources.ai_interaction_logs]\nenabled = true\ninitial_lookback = \"2h\"\n{section}"
    ));
    let cfg = cfg.to_str().unwrap();

    let out = env.run(&["check", "--config", cfg], TOKEN).await;
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        report.contains("`aiinteractionlogs:read` (ai_interaction_logs)"),
        "{report}"
    );
    assert!(
        report.lines().any(|l| l.starts_with("ok")
            && l.contains("miro ai_interaction_logs")
            && l.contains("limit=1")),
        "{report}"
    );
    assert!(
        report
            .lines()
            .any(|l| l.contains("sink sentinel ai_interaction_logs")
                && l.contains("not sent to this sink: no `ai_interaction_logs_dcr`")),
        "{report}"
    );
    let requests_before = env.emu.stats().ai_requests;
    assert_eq!(requests_before, 1, "one one-item request");

    let out = env.run(&["run", "--config", cfg, "--once"], TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_exactly_once(&env.db(), TABLE, &expected_ai(&env.emu, start, end));
    assert!(azure.rows(TABLE).is_empty());
    assert_eq!(
        azure.rows("MiroAuditLogs_CL").len(),
        30,
        "the other stream is sent"
    );
    let out = env.run(&["status", "--config", cfg], TOKEN).await;
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        status.contains("not sent")
            && status.contains("sentinel ai_interaction_logs: not sent to this sink"),
        "{status}"
    );

    // A token without the scope: `check` names it and what grants it.
    let out = env.run(&["check", "--config", cfg], AUDIT_ONLY_TOKEN).await;
    assert!(!out.status.success(), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        report.contains("the token lacks `aiinteractionlogs:read`, needed for ai_interaction_logs")
            && report.contains("Enterprise Guard"),
        "{report}"
    );
    azure.shutdown().await;
}

/// Expired cursors (the window resumes from the latest stored `storedAt`), duplicated
/// items, 5xx and cut bodies on the AI endpoint lose and duplicate nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_logs_ride_out_expired_cursors_duplicates_and_server_errors() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(120)), now.minus(minutes(1)));
    let mut miro = ai_org(1500, start, end, 0.5, Duration::from_secs(3600));
    miro.faults = mirotrail_emulator::miro::Faults {
        expire_cursor_share: 0.2,
        duplicate_item_share: 0.3,
        server_error_share: 0.1,
        truncate_share: 0.05,
        ..mirotrail_emulator::miro::Faults::default()
    };
    let env = Env::start(miro).await;
    let cfg = env.config(
        "[sources.audit_logs]\nenabled = false\n\
         [sources.ai_interaction_logs]\nenabled = true\ninitial_lookback = \"3h\"\n",
    );
    let out = env
        .run(&["run", "--config", cfg.to_str().unwrap(), "--once"], TOKEN)
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let stats = env.emu.stats();
    assert!(
        stats.faults.get("expire_cursor").copied().unwrap_or(0) > 0
            && stats.faults.get("duplicate_item").copied().unwrap_or(0) > 0,
        "{stats:?}"
    );
    assert_exactly_once(&env.db(), TABLE, &expected_ai(&env.emu, start, end));
}
