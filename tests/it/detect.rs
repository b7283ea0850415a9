//! Detections end to end: the real binary collects an emulated organisation with attacks
//! injected (`Scenario`), `run` raises alerts, and the tests check each rule fired on its
//! attack with the attack's entities, that a benign week raises nothing, and that alerts
//! survive SIGKILLs exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mirotrail_emulator::UnixMs;
use mirotrail_emulator::miro::{MiroEmulatorConfig, MiroOrg, Scenario, StreamShape};
use serde_json::Value;

use crate::support::*;

/// `(rule, group key)` the rule must raise for the scenario, read from the emulator's
/// own items of the burst (never hard-coded).
fn expected_alert(org: &MiroOrg, scenario: Scenario) -> (&'static str, BTreeMap<String, String>) {
    let range = org
        .scenario_ranges()
        .into_iter()
        .find(|(s, _)| *s == scenario)
        .expect("injected")
        .1;
    let first = if scenario == Scenario::MassDeletion {
        org.content_item(range.start)
    } else {
        org.audit_event(range.start)
    };
    let last = org.audit_event(range.end - 1);
    let s = |v: &Value| v.as_str().expect("a string").to_string();
    let one = |k: &str, v: String| BTreeMap::from([(k.to_string(), v)]);
    match scenario {
        Scenario::BruteForce => (
            "sign-in-failures-by-actor",
            one("account", s(&first["createdBy"]["email"])),
        ),
        Scenario::PasswordSpray => (
            "sign-in-failures-by-ip",
            one("ip", s(&first["context"]["ip"])),
        ),
        Scenario::GuessedPassword => (
            "sign-in-success-after-failures",
            one("account", s(&last["createdBy"]["email"])),
        ),
        Scenario::AdminGrant => (
            "admin-role-granted",
            one("account", s(&first["createdBy"]["email"])),
        ),
        Scenario::SsoDisabled => (
            "sso-settings-changed",
            one("account", s(&first["createdBy"]["id"])),
        ),
        Scenario::ScimToken => ("scim-changed", one("account", s(&first["createdBy"]["id"]))),
        Scenario::DomainAllowlist => (
            "domain-allowlist-changed",
            one("account", s(&first["createdBy"]["id"])),
        ),
        Scenario::PublicBoard => (
            "board-shared-publicly",
            BTreeMap::from([
                ("account".to_string(), s(&first["createdBy"]["id"])),
                ("board".to_string(), s(&first["object"]["id"])),
            ]),
        ),
        Scenario::GuestSharing => (
            "guest-sharing-enabled",
            one("account", s(&first["createdBy"]["id"])),
        ),
        Scenario::MassExport => (
            "mass-board-export",
            one("account", s(&first["createdBy"]["email"])),
        ),
        Scenario::MassDeletion => (
            "mass-content-deletion",
            one("account", s(&first["actor"]["email"])),
        ),
        Scenario::ActiveAfterDeactivation => (
            "activity-after-deactivation",
            one("account", s(&first["object"]["id"])),
        ),
        Scenario::AppAdmin => (
            "app-admin-actions",
            one("account", s(&first["createdBy"]["id"])),
        ),
    }
}

/// Text columns of a query on the store, read-only.
fn rows(env: &Env, sql: &str) -> Vec<Vec<String>> {
    // The store's tables are views whose columns mirotrail's SQL functions derive.
    let conn = mirotrail::store::Store::open_read_only(&env.db()).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| r.get::<_, rusqlite::types::Value>(i))
            .map(|v| {
                v.map(|v| match v {
                    rusqlite::types::Value::Text(t) => t,
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    other => format!("{other:?}"),
                })
            })
            .collect()
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// The stored alerts: (rule, group, window start).
fn stored_alerts(env: &Env) -> Vec<(String, BTreeMap<String, String>, String)> {
    rows(
        env,
        "SELECT rule, group_key, window_start FROM alerts ORDER BY seq",
    )
    .into_iter()
    .map(|r| {
        let group: BTreeMap<String, String> = serde_json::from_str(&r[1]).unwrap();
        (r[0].clone(), group, r[2].clone())
    })
    .collect()
}

/// A week of audit events and two days of dense content items (60 deletions must fit
/// in 10 minutes), with `scenarios` injected.
fn week(scenarios: Vec<Scenario>, content_days: i64) -> (MiroEmulatorConfig, UnixMs, UnixMs) {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(7 * 24 * 60)), now.minus(minutes(5)));
    let mut config = org(20_000, 30_000, start, end);
    config.content = StreamShape {
        count: 30_000,
        start: now.minus(minutes(content_days * 24 * 60)),
        end,
    };
    config.scenarios = scenarios;
    (config, start, end)
}

const SOURCES: &str = "[sources.audit_logs]\ninitial_lookback = \"8d\"\n\
     [sources.content_logs]\nenabled = true\ninitial_lookback = \"8d\"\n\
     [sinks.archive]\ntype = \"file\"\npath = \"archive\"\n";

/// The alerts the file sink wrote (`MiroAlerts.ndjson`): (rule, group, window start).
fn alerts_in_file(env: &Env) -> Vec<(String, BTreeMap<String, String>, String)> {
    let path = env.dir.path().join("archive").join("MiroAlerts.ndjson");
    std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["Type"], "MiroAlerts", "{line}");
            let group = v["Entities"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            (
                v["Rule"].as_str().unwrap().to_string(),
                group,
                v["WindowStart"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_fires_its_rule_with_its_entities() {
    let (config, _, _) = week(Scenario::ALL.to_vec(), 2);
    let env = Env::start(config).await;
    let cfg = env.config(SOURCES);
    let out = env
        .run(&["run", "--config", cfg.to_str().unwrap(), "--once"], TOKEN)
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let alerts = stored_alerts(&env);
    // The file sink has each alert once, as the `MiroAlerts` stream.
    assert_eq!(alerts_in_file(&env), alerts);
    let org = env.emu.org();
    for scenario in Scenario::ALL {
        let (rule, group) = expected_alert(&org, scenario);
        assert!(
            alerts.iter().any(|(r, g, _)| r == rule && *g == group),
            "{}: no {rule} alert for {group:?}; alerts: {alerts:?}",
            scenario.name()
        );
    }
    // Every alert is about an attack: none comes from the benign events around them.
    let expected: Vec<(&str, BTreeMap<String, String>)> = Scenario::ALL
        .iter()
        .map(|s| expected_alert(&org, *s))
        .collect();
    for (rule, group, window) in &alerts {
        let explained = expected
            .iter()
            .any(|(_, g)| g.values().any(|v| group.values().any(|w| w == v)));
        assert!(
            explained,
            "{rule} {group:?} at {window} is not about an injected attack"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pack_raises_nothing_on_a_benign_week() {
    let (config, start, end) = week(Vec::new(), 7);
    let env = Env::start(config).await;
    let cfg = env.config(SOURCES);
    let out = env
        .run(&["run", "--config", cfg.to_str().unwrap(), "--once"], TOKEN)
        .await;
    assert!(out.status.success(), "{}", text(&out));
    // The week was collected and the rules had their events to read.
    assert_eq!(
        usize::try_from(count(&env.db(), "MiroAuditLogs_CL")).unwrap(),
        expected_audit(&env.emu, start, end).len()
    );
    let failures: usize = rows(
        &env,
        "SELECT count(*) FROM MiroAuditLogs_CL WHERE event = 'sign_in_failed'",
    )[0][0]
        .parse()
        .unwrap();
    assert!(failures > 100, "only {failures} sign-in failures in a week");
    let offsets = rows(&env, "SELECT source, evaluated_seq FROM detect_offsets");
    assert_eq!(offsets.len(), 2, "both sources evaluated: {offsets:?}");
    let alerts = stored_alerts(&env);
    assert!(alerts.is_empty(), "a benign week raised alerts: {alerts:?}");
    // The retro-hunt agrees.
    let out = env
        .run(
            &[
                "detect",
                "--config",
                cfg.to_str().unwrap(),
                "--since",
                "30d",
            ],
            TOKEN,
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no alerts"),
        "{}",
        text(&out)
    );
    // Coverage on this store: a rule event name it never saw, and a frequent event no
    // rule reads.
    let out = env
        .run(
            &["rules", "coverage", "--config", cfg.to_str().unwrap()],
            TOKEN,
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let (rule_names, uncovered) = printed.split_once("no rule reads").expect("two tables");
    let line_of = |table: &str, name: &str| {
        table
            .lines()
            .find(|l| l.contains(&format!(" {name} ")))
            .map(str::to_string)
    };
    let sso = line_of(rule_names, "sso_settings_changed").expect("listed");
    assert!(sso.contains("┆ 0 "), "{sso}");
    let failed = line_of(rule_names, "sign_in_failed").expect("listed");
    assert!(
        failed.contains("┆ yes ") && !failed.contains("┆ 0 "),
        "{failed}"
    );
    assert!(line_of(uncovered, "board_opened").is_some(), "{printed}");
    assert!(line_of(uncovered, "sign_in_failed").is_none(), "{printed}");
    // Unknown rule names are usage errors that list the rules.
    let out = env.run(&["rules", "show", "mass-exports"], TOKEN).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("mass-board-export"), "{}", text(&out));
    let out = env.run(&["rules", "test"], TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("FAIL"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_survive_kills_once_per_rule_group_and_window() {
    let (config, _, _) = week(Scenario::ALL.to_vec(), 2);
    let env = Env::start(config).await;
    let cfg = env.config(SOURCES);
    let args = ["run", "--config", cfg.to_str().unwrap(), "--once"];
    // Kill runs at moments spread over collection and the final evaluation.
    for wait_ms in [150u64, 400, 700, 1000, 1300, 1600, 2000, 2500] {
        let mut child = env.spawn(env.command(&args, TOKEN));
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        if child.try_wait().unwrap().is_none() {
            child.start_kill().unwrap();
        }
        let _ = child.wait().await;
    }
    let out = env.run(&args, TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    // A second complete run on the same rows adds nothing.
    let out = env.run(&args, TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    let alerts = stored_alerts(&env);
    let unique: BTreeSet<_> = alerts.iter().cloned().collect();
    assert_eq!(unique.len(), alerts.len(), "an alert was stored twice");
    // Every alert reached the file sink (at least once: a kill between the write and the
    // offset update sends it again).
    let in_file: BTreeSet<_> = alerts_in_file(&env).into_iter().collect();
    assert_eq!(in_file, unique);
    // Exactly what a retro-hunt over the whole store finds: nothing lost.
    let out = env
        .run(
            &[
                "detect",
                "--config",
                cfg.to_str().unwrap(),
                "--since",
                "30d",
            ],
            TOKEN,
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        printed.contains(&format!("{} alert(s)", alerts.len())),
        "stored {} alerts, the retro-hunt found: {printed}",
        alerts.len()
    );
    let org = env.emu.org();
    for scenario in Scenario::ALL {
        let (rule, group) = expected_alert(&org, scenario);
        assert!(
            alerts.iter().any(|(r, g, _)| r == rule && *g == group),
            "{}",
            scenario.name()
        );
    }
}
