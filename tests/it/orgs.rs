//! Several Miro organisations in one deployment (`[[orgs]]`): one emulator per
//! organisation (one token is one organisation, as in Miro), one store, one sink.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use mirotrail_emulator::UnixMs;
use mirotrail_emulator::miro::{EmulatedToken, Faults, MiroEmulator, MiroEmulatorHandle};

use crate::support::*;

/// An organisation of the test: its emulator, id, name and token.
struct EmulatedOrg {
    name: &'static str,
    id: &'static str,
    token: &'static str,
    emu: MiroEmulatorHandle,
}

/// Starts three emulated organisations: `alpha` and `beta` generate the same item ids
/// (same seed), which must be stored once for each; `gamma` has its own.
async fn three_orgs(start: UnixMs, end: UnixMs, audit: u64, content: u64) -> Vec<EmulatedOrg> {
    let mut out = Vec::new();
    for (name, id, token, seed_offset, audit) in [
        ("alpha", "3074457345000000001", "tok-alpha-1c2d3e", 0, audit),
        ("beta", "3074457345000000002", "tok-beta-4f5a6b", 0, audit),
        (
            "gamma",
            "3074457345000000003",
            "tok-gamma-7c8d9e",
            7,
            audit / 2,
        ),
    ] {
        let mut c = org(audit, content, start, end);
        c.org_id = id.into();
        c.seed += seed_offset;
        c.tokens = vec![EmulatedToken {
            token: token.into(),
            scopes: vec!["auditlogs:read".into(), "contentlogs:export".into()],
        }];
        c.faults = Faults {
            server_error_share: 0.03,
            expire_cursor_share: 0.02,
            slow_share: 0.2,
            slow_delay: Duration::from_millis(20),
            ..Faults::default()
        };
        let emu = MiroEmulator::start(c, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        out.push(EmulatedOrg {
            name,
            id,
            token,
            emu,
        });
    }
    out
}

/// The config: the three organisations (tokens from `MIRO_TOKEN_<NAME>`), one store, a
/// file sink.
fn config(env: &Env, orgs: &[EmulatedOrg]) -> std::path::PathBuf {
    let mut text = String::from(
        "[store]\npath = \"mirotrail.db\"\n\n[sources.audit_logs]\ninitial_lookback = \"7h\"\n\
         page_size = 100\nmax_window = \"2h\"\n[sources.content_logs]\nenabled = true\n\
         initial_lookback = \"7h\"\npage_size = 100\n\n\
         [sinks.archive]\ntype = \"file\"\npath = \"archive\"\nbatch_rows = 300\n\n",
    );
    for o in orgs {
        text.push_str(&format!(
            "[[orgs]]\nname = \"{}\"\norg_id = \"{}\"\napi_base = \"{}\"\n\
             token_env = \"MIRO_TOKEN_{}\"\nmax_retries = 12\nretry_initial_backoff = \"20ms\"\n\n",
            o.name,
            o.id,
            o.emu.base_url(),
            o.name.to_uppercase()
        ));
    }
    let path = env.dir.path().join("orgs.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn command(env: &Env, orgs: &[EmulatedOrg], args: &[&str]) -> tokio::process::Command {
    let mut cmd = env.command(args, "unused");
    for o in orgs {
        cmd.env(format!("MIRO_TOKEN_{}", o.name.to_uppercase()), o.token);
    }
    cmd
}

/// Ids stored for the organisation `org_id`, with how often each is stored.
fn stored_ids(env: &Env, table: &str, org_id: &str) -> HashMap<String, usize> {
    let conn = mirotrail::store::Store::open_read_only(&env.db()).unwrap();
    let mut stmt = conn
        .prepare(&format!("SELECT id FROM {table} WHERE _org_id = ?1"))
        .unwrap();
    let mut out: HashMap<String, usize> = HashMap::new();
    for id in stmt.query_map([org_id], |r| r.get::<_, String>(0)).unwrap() {
        *out.entry(id.unwrap()).or_default() += 1;
    }
    out
}

fn assert_once(stored: &HashMap<String, usize>, expected: &HashSet<String>, what: &str) {
    let missing = expected
        .iter()
        .filter(|id| !stored.contains_key(*id))
        .count();
    let extra = stored.keys().filter(|id| !expected.contains(*id)).count();
    let dup = stored.values().filter(|n| **n > 1).count();
    assert_eq!(
        (missing, extra, dup),
        (0, 0, 0),
        "{what}: {} expected, {} stored: missing, extra, duplicated",
        expected.len(),
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_organisations_killed_and_resumed_lose_and_duplicate_nothing() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(6 * 60)), now.minus(minutes(5)));
    let orgs = three_orgs(start, end, 3_000, 600).await;
    let env = Env::start(org(0, 0, start, end)).await;
    let cfg = config(&env, &orgs);
    let args = ["run", "--config", cfg.to_str().unwrap(), "--once"];

    let mut kills = 0;
    let mut wait_ms = 150u64;
    while kills < 8 {
        let mut child = env.spawn(command(&env, &orgs, &args));
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        wait_ms = 150 + (wait_ms * 7 + 131) % 700;
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "a run failed on its own: {status:?}");
            break;
        }
        child.start_kill().unwrap();
        let _ = child.wait().await;
        kills += 1;
    }
    for o in &orgs {
        o.emu.set_faults(Faults::default());
    }
    let out = command(&env, &orgs, &args).output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let mut audit_sets = Vec::new();
    for o in &orgs {
        let audit: HashSet<String> = expected_audit(&o.emu, start, end).into_keys().collect();
        let content: HashSet<String> = expected_content(&o.emu, start, end).into_keys().collect();
        assert!(!audit.is_empty() && !content.is_empty());
        assert_once(
            &stored_ids(&env, "MiroAuditLogs_CL", o.id),
            &audit,
            &format!("{} audit logs", o.name),
        );
        assert_once(
            &stored_ids(&env, "MiroContentLogs_CL", o.id),
            &content,
            &format!("{} content logs", o.name),
        );
        audit_sets.push(audit);
    }
    // alpha and beta sent the same ids: each organisation keeps its own row.
    let shared = audit_sets[0].intersection(&audit_sets[1]).count();
    assert_eq!(
        shared,
        audit_sets[0].len(),
        "alpha and beta share their ids"
    );
    assert!(audit_sets[0].intersection(&audit_sets[2]).count() < audit_sets[0].len());

    // Checkpoints are per organisation: three per source.
    let conn = mirotrail::store::Store::open_read_only(&env.db()).unwrap();
    let checkpoints: i64 = conn
        .query_row(
            "SELECT count(*) FROM checkpoints WHERE source = 'audit_logs'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(checkpoints, 3);
    // Each emulator only ever saw its own token (one budget each): every one served.
    for o in &orgs {
        assert!(o.emu.stats().requests > 0, "{} was polled", o.name);
    }
    eprintln!(
        "three organisations: {kills} SIGKILLs; {} + {} + {} audit events stored exactly once per organisation ({shared} ids shared by alpha and beta, stored for each)",
        audit_sets[0].len(),
        audit_sets[1].len(),
        audit_sets[2].len()
    );

    // The file sink's lines say which organisation each row came from.
    let mut lines_per_org: HashMap<String, usize> = HashMap::new();
    for entry in std::fs::read_dir(env.dir.path().join("archive")).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().contains("MiroAuditLogs_CL") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            *lines_per_org
                .entry(v["_org_id"].as_str().unwrap_or("none").to_string())
                .or_default() += 1;
        }
    }
    for (o, audit) in orgs.iter().zip(&audit_sets) {
        // At least once (the file sink rewrites a batch in flight at a kill).
        let lines = lines_per_org.get(o.id).copied().unwrap_or(0);
        assert!(lines >= audit.len(), "{}: {lines} lines", o.name);
    }
    assert_eq!(lines_per_org.len(), 3, "{lines_per_org:?}");

    // `/metrics`: per-source series and the credit budget are labelled by organisation.
    let config = mirotrail::config::Config::load(&cfg).unwrap();
    let store = mirotrail::store::Store::open(&env.db()).unwrap();
    let identities: Vec<_> = config.orgs.iter().map(|o| o.identity()).collect();
    let keys = store.register_orgs(&identities, true).unwrap();
    let telemetry = mirotrail::service::Telemetry::for_orgs(
        &config,
        mirotrail::store::StoreHandle::new(std::sync::Arc::new(store)),
        config
            .orgs
            .iter()
            .zip(keys)
            .map(|(o, key)| mirotrail::service::OrgTelemetry {
                name: o.name.clone(),
                key,
                budget: std::sync::Arc::new(mirotrail::miro::CreditBudget::new(
                    o.budget.credits_per_minute,
                    o.budget.share,
                )),
            })
            .collect(),
    );
    let metrics = telemetry.render();
    for o in &orgs {
        for series in [
            format!(
                "mirotrail_watermark_lag_seconds{{org=\"{}\",source=\"audit_logs\"}}",
                o.name
            ),
            format!(
                "mirotrail_watermark_lag_seconds{{org=\"{}\",source=\"content_logs\"}}",
                o.name
            ),
            format!(
                "mirotrail_events_collected_total{{org=\"{}\",source=\"audit_logs\"}}",
                o.name
            ),
            format!(
                "mirotrail_miro_credits_allowance_per_minute{{org=\"{}\"}}",
                o.name
            ),
        ] {
            assert!(metrics.contains(&series), "{series} in\n{metrics}");
        }
    }
    drop(telemetry);

    // `status` names each organisation's sources.
    let out = command(&env, &orgs, &["status", "--config", cfg.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    for o in &orgs {
        assert!(status.contains(o.name), "{status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_verifies_each_organisation_with_its_own_token_and_id() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(60)), now.minus(minutes(5)));
    let orgs = three_orgs(start, end, 10, 5).await;
    for o in &orgs {
        o.emu.set_faults(Faults::default());
    }
    let env = Env::start(org(0, 0, start, end)).await;
    let cfg = config(&env, &orgs);
    let out = command(&env, &orgs, &["check", "--config", cfg.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    for o in &orgs {
        assert!(
            report.contains(&format!("miro {} organization", o.name)),
            "{report}"
        );
    }
    // gamma's entry names beta's organisation: check says which entry to fix.
    let text_cfg = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(orgs[2].id, "3074457345000000009");
    std::fs::write(&cfg, text_cfg).unwrap();
    let out = command(&env, &orgs, &["check", "--config", cfg.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{}", text(&out));
    let line = report
        .lines()
        .find(|l| l.contains("miro gamma organization"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        line.contains("orgs[2].org_id") && line.contains(orgs[2].id),
        "{report}"
    );
    assert!(!report.contains(orgs[0].token), "no token in the output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_reads_one_organisation_with_its_own_slices_and_budget() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(5 * 60)), now.minus(minutes(10)));
    let orgs = three_orgs(start, end, 600, 100).await;
    for o in &orgs {
        o.emu.set_faults(Faults::default());
    }
    let env = Env::start(org(0, 0, start, end)).await;
    let cfg = config(&env, &orgs);
    let cfg_arg = cfg.to_str().unwrap();
    // Several organisations: backfill asks which one.
    let out = command(
        &env,
        &orgs,
        &["backfill", "--config", cfg_arg, "--since", "6h"],
    )
    .output()
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--org") && stderr.contains("alpha, beta, gamma"),
        "{stderr}"
    );
    let args = [
        "backfill",
        "--config",
        cfg_arg,
        "--since",
        "6h",
        "--source",
        "audit_logs",
        "--org",
        "beta",
        "--slice",
        "1h",
    ];
    let out = command(&env, &orgs, &args).output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Only beta was asked, with beta's token; its rows carry its id.
    assert_eq!(orgs[0].emu.stats().audit_requests, 0);
    assert_eq!(orgs[2].emu.stats().audit_requests, 0);
    let beta: HashSet<String> = expected_audit(&orgs[1].emu, start, end)
        .into_keys()
        .collect();
    assert_once(
        &stored_ids(&env, "MiroAuditLogs_CL", orgs[1].id),
        &beta,
        "beta after its backfill",
    );
    assert!(stored_ids(&env, "MiroAuditLogs_CL", orgs[0].id).is_empty());
    // Its slices are beta's: alpha's backfill of the same span reads every slice again,
    // and stores alpha's rows (the same ids) beside beta's.
    let args_alpha = [
        "backfill",
        "--config",
        cfg_arg,
        "--since",
        "6h",
        "--source",
        "audit_logs",
        "--org",
        "alpha",
        "--slice",
        "1h",
    ];
    let out = command(&env, &orgs, &args_alpha).output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(orgs[0].emu.stats().audit_requests > 0);
    let alpha: HashSet<String> = expected_audit(&orgs[0].emu, start, end)
        .into_keys()
        .collect();
    assert_once(
        &stored_ids(&env, "MiroAuditLogs_CL", orgs[0].id),
        &alpha,
        "alpha after its backfill",
    );
    let conn = mirotrail::store::Store::open_read_only(&env.db()).unwrap();
    let per_org: Vec<(i64, i64)> = conn
        .prepare("SELECT org, count(*) FROM backfill_slices GROUP BY org ORDER BY org")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(per_org.len(), 2, "{per_org:?}");
    assert_eq!(per_org[0].1, per_org[1].1, "{per_org:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_organisation_has_its_own_credit_budget_and_metrics() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(60)), now.minus(minutes(5)));
    let orgs = three_orgs(start, end, 200, 20).await;
    for o in &orgs {
        o.emu.set_faults(Faults::default());
    }
    let env = Env::start(org(0, 0, start, end)).await;
    // Tokens from files here (`run` is started with one variable only).
    let mut text = String::from(
        "[store]\npath = \"mirotrail.db\"\n[service]\nlisten = \"127.0.0.1:0\"\n\
         [sources.audit_logs]\ninitial_lookback = \"2h\"\n\n",
    );
    for (o, share) in orgs.iter().zip(["0.3", "0.5", "0.1"]) {
        let file = env.dir.path().join(format!("token-{}", o.name));
        std::fs::write(&file, o.token).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        text.push_str(&format!(
            "[[orgs]]\nname = \"{}\"\norg_id = \"{}\"\napi_base = \"{}\"\ntoken_file = \"token-{}\"\n\
             [orgs.budget]\nshare = {share}\n\n",
            o.name,
            o.id,
            o.emu.base_url(),
            o.name
        ));
    }
    let cfg = env.dir.path().join("budget.toml");
    std::fs::write(&cfg, text).unwrap();
    let run = crate::ops::Running::start(&env, &cfg, "unused").await;
    let (_, m) = run
        .wait_for("/metrics", |_, m| {
            orgs.iter().all(|o| {
                crate::ops::sample(
                    m,
                    &format!(
                        "mirotrail_source_last_success_timestamp_seconds{{org=\"{}\",source=\"audit_logs\"}}",
                        o.name
                    ),
                )
                .is_some_and(|v| v > 0.0)
            })
        })
        .await;
    // Each budget is its share of its own token's limit (the emulators announce the same
    // limit in `X-RateLimit-Limit`): 0.3, 0.5 and 0.1 of it.
    let allowance = |o: &EmulatedOrg| {
        crate::ops::sample(
            &m,
            &format!(
                "mirotrail_miro_credits_allowance_per_minute{{org=\"{}\"}}",
                o.name
            ),
        )
        .unwrap_or_else(|| panic!("{}: {m}", o.name))
    };
    let beta = allowance(&orgs[1]);
    assert!(beta > 0.0);
    assert!((allowance(&orgs[0]) / beta - 0.6).abs() < 1e-9, "{m}");
    assert!((allowance(&orgs[2]) / beta - 0.2).abs() < 1e-9, "{m}");
    for o in &orgs {
        let spent = crate::ops::sample(
            &m,
            &format!(
                "mirotrail_miro_requests_total{{org=\"{}\",source=\"audit_logs\",status=\"200\"}}",
                o.name
            ),
        )
        .unwrap_or(0.0);
        // Each organisation's requests went to its own emulator, with its own token (the
        // emulator may have served more since the scrape).
        let served = o.emu.stats().by_status.get(&200).copied().unwrap_or(0) as f64;
        assert!(
            spent > 0.0 && spent <= served,
            "{}: {spent} of {served}",
            o.name
        );
    }
    assert!(run.stop().await.success());
}

/// Commits `items` of `source` for organisation `key` as its collector would, with a
/// checkpoint of `pages` pages.
fn commit_org_items(
    store: &mirotrail::store::Store,
    key: mirotrail::store::OrgKey,
    source: mirotrail::source::SourceKind,
    items: &[String],
    pages: i64,
) {
    let rows: Vec<(mirotrail::store::StoredRow, &str)> = items
        .iter()
        .map(|raw| (mirotrail::store::stored_row(source, raw), raw.as_str()))
        .collect();
    let checkpoint = mirotrail::store::Checkpoint {
        org: key,
        source,
        watermark: mirotrail::timefmt::UnixMs(1_704_067_200_000),
        watermark_polled: mirotrail::timefmt::UnixMs(1_704_067_200_000),
        reread_through: None,
        window: None,
        pages_total: pages,
        requests_total: pages,
        last_success: None,
        last_error: None,
        last_error_at: None,
    };
    store.commit_page(source, &rows, &checkpoint).unwrap();
}

/// `status` with `[[orgs]]`: each organisation's line counts its own rows and its own
/// partly derived rows, though the organisations share item ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_each_organisations_rows_and_partial_rows() {
    use mirotrail::source::SourceKind;
    let now = UnixMs::now();
    let env = Env::start(org(0, 0, now.minus(minutes(60)), now)).await;
    let orgs = [
        ("alpha", "3074457345000000001", 30u64, 3u64, 0u64),
        ("beta", "3074457345000000002", 20, 2, 7),
        ("gamma", "3074457345000000003", 0, 0, 0),
    ];
    let mut toml = String::from(
        "[store]\npath = \"mirotrail.db\"\n[sources.content_logs]\nenabled = true\n\n",
    );
    for (name, id, ..) in &orgs {
        toml.push_str(&format!(
            "[[orgs]]\nname = \"{name}\"\norg_id = \"{id}\"\napi_base = \"{}\"\n\
             token_env = \"MIRO_TOKEN_{}\"\n\n",
            env.emu.base_url(),
            name.to_uppercase()
        ));
    }
    let cfg = env.dir.path().join("status.toml");
    std::fs::write(&cfg, &toml).unwrap();
    {
        let store = mirotrail::store::Store::open(&env.db()).unwrap();
        let identities: Vec<_> = orgs
            .iter()
            .map(|(name, id, ..)| mirotrail::store::OrgIdentity {
                name: (*name).into(),
                org_id: Some((*id).into()),
            })
            .collect();
        let keys = store.register_orgs(&identities, true).unwrap();
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        for ((_, _, audit, partial, content), key) in orgs.iter().zip(keys) {
            // The same ids in every organisation; the first `partial` items cannot be
            // derived in full.
            let items: Vec<String> = (0..*audit)
                .map(|i| {
                    let details = if i < *partial { deep.as_str() } else { "{}" };
                    format!(
                        r#"{{"id":"shared-{i}","event":"board_opened","createdAt":"2024-01-01T00:00:00.000Z","details":{details}}}"#
                    )
                })
                .collect();
            if !items.is_empty() {
                commit_org_items(&store, key, SourceKind::AuditLogs, &items, 4);
            }
            let items: Vec<String> = (0..*content)
                .map(|i| {
                    format!(r#"{{"id":"c-{i}","actionTime":"2024-01-01T00:00:00Z","itemId":"w"}}"#)
                })
                .collect();
            if !items.is_empty() {
                commit_org_items(&store, key, SourceKind::ContentLogs, &items, 1);
            }
        }
    }
    let mut cmd = env.command(
        &[
            "status",
            "--format",
            "json",
            "--config",
            cfg.to_str().unwrap(),
        ],
        "unused",
    );
    for (name, ..) in &orgs {
        cmd.env(format!("MIRO_TOKEN_{}", name.to_uppercase()), "tok-unused");
    }
    let out = cmd.output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let line = |org: &str, source: &str| -> serde_json::Value {
        status["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["org"] == org && s["source"] == source)
            .unwrap_or_else(|| panic!("{org} {source} in {status}"))
            .clone()
    };
    for (name, _, audit, partial, content) in &orgs {
        let a = line(name, "audit_logs");
        assert_eq!(a["events_stored"], *audit, "{name}: {a}");
        assert_eq!(a["partial_rows"], *partial, "{name}: {a}");
        let pages = if *audit > 0 { 4 } else { 0 };
        assert_eq!(a["pages"], pages, "{name}: {a}");
        let c = line(name, "content_logs");
        assert_eq!(c["events_stored"], *content, "{name}: {c}");
        assert_eq!(c["partial_rows"], 0, "{name}: {c}");
    }
    // The table names each organisation's partly derived rows.
    let mut cmd = env.command(&["status", "--config", cfg.to_str().unwrap()], "unused");
    for (name, ..) in &orgs {
        cmd.env(format!("MIRO_TOKEN_{}", name.to_uppercase()), "tok-unused");
    }
    let out = cmd.output().await.unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("alpha audit_logs: 3 rows stored with only some columns derived"),
        "{table}"
    );
    assert!(
        table.contains("beta audit_logs: 2 rows stored with only some columns derived"),
        "{table}"
    );
    assert!(!table.contains("gamma audit_logs:"), "{table}");
}

/// One organisation's token runs out of credits (another client of the same user and
/// app spent its budget: 429, nothing remaining, `X-RateLimit-Reset` in the future, no
/// `Retry-After`) for a while during a live `run`: the other organisation is collected on
/// time all along, the throttled one waits for its reset, then catches up, and every
/// event of both is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_organisations_exhausted_budget_leaves_the_others_collection_on_time() {
    const SETTLE_LAG_SECS: u64 = 1;
    let began = UnixMs::now();
    let (start, end) = (
        began.minus(minutes(20)),
        began.plus(Duration::from_secs(30)),
    );
    let mut orgs = Vec::new();
    for (name, id, token) in [
        ("alpha", "3074457345000000001", "tok-alpha-1c2d3e"),
        ("beta", "3074457345000000002", "tok-beta-4f5a6b"),
    ] {
        // The same seed: both organisations hand out the same ids.
        let mut c = org(1_500, 0, start, end);
        c.org_id = id.into();
        c.tokens = vec![EmulatedToken {
            token: token.into(),
            scopes: vec!["auditlogs:read".into()],
        }];
        c.rate_limit = Some(mirotrail_emulator::miro::RateLimit {
            credits_per_minute: 100_000,
            retry_after_header: false,
        });
        let emu = MiroEmulator::start(c, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        orgs.push(EmulatedOrg {
            name,
            id,
            token,
            emu,
        });
    }
    let (alpha, beta) = (&orgs[0], &orgs[1]);
    let env = Env::start(org(0, 0, start, end)).await;
    let mut toml = format!(
        "[store]\npath = \"mirotrail.db\"\n[service]\nlisten = \"127.0.0.1:0\"\n\
         [sources.audit_logs]\ninitial_lookback = \"30m\"\npoll_interval = \"1s\"\n\
         settle_lag = \"{SETTLE_LAG_SECS}s\"\n\n"
    );
    for o in &orgs {
        let file = env.dir.path().join(format!("token-{}", o.name));
        std::fs::write(&file, o.token).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        toml.push_str(&format!(
            "[[orgs]]\nname = \"{}\"\norg_id = \"{}\"\napi_base = \"{}\"\ntoken_file = \"token-{}\"\n\n",
            o.name,
            o.id,
            o.emu.base_url(),
            o.name
        ));
    }
    let cfg = env.dir.path().join("throttled.toml");
    std::fs::write(&cfg, toml).unwrap();
    let run = crate::ops::Running::start(&env, &cfg, "unused").await;
    // Both organisations have caught up with their history.
    run.wait_for("/metrics", |_, m| {
        orgs.iter().all(|o| {
            crate::ops::sample(
                m,
                &format!(
                    "mirotrail_source_last_success_timestamp_seconds{{org=\"{}\",source=\"audit_logs\"}}",
                    o.name
                ),
            )
            .is_some_and(|v| v > 0.0)
        })
    })
    .await;

    // beta's budget is spent by someone else for 14 s.
    let throttled_at = UnixMs::now();
    let reset = throttled_at.plus(Duration::from_secs(14));
    beta.emu.exhaust_credits(beta.token, reset);
    let beta_served_before = beta.emu.stats().by_status.get(&200).copied().unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let checked_at = UnixMs::now();
    assert!(checked_at < reset, "the check ran within the throttle");

    // While beta is refused, alpha keeps being collected: every event visible 6 s ago
    // (settle lag, poll interval and slack for a loaded machine) is stored already.
    let on_time = checked_at.minus(Duration::from_secs(6));
    assert!(on_time > throttled_at.plus(Duration::from_secs(3)));
    let alpha_due: HashSet<String> = expected_audit(&alpha.emu, start, on_time)
        .into_keys()
        .collect();
    let alpha_stored = stored_ids(&env, "MiroAuditLogs_CL", alpha.id);
    let late: Vec<&String> = alpha_due
        .iter()
        .filter(|id| !alpha_stored.contains_key(*id))
        .collect();
    assert!(
        late.is_empty(),
        "alpha: {} of {} events due by {on_time} not stored while beta was throttled\n{}",
        late.len(),
        alpha_due.len(),
        run.stderr()
    );
    // beta was refused, served nothing, and waited (no storm of retries): its events of
    // the throttled time are not stored yet.
    let beta_stats = beta.emu.stats();
    assert!(beta_stats.rate_limited > 0, "beta was refused");
    assert_eq!(
        beta_stats.by_status.get(&200).copied().unwrap_or(0),
        beta_served_before,
        "beta served nothing while its budget was spent"
    );
    assert!(
        beta_stats.rate_limited <= 20,
        "beta waited for the reset: {} refusals in 12 s",
        beta_stats.rate_limited
    );
    let beta_stored = stored_ids(&env, "MiroAuditLogs_CL", beta.id);
    let beta_due: HashSet<String> = expected_audit(&beta.emu, start, on_time)
        .into_keys()
        .collect();
    assert!(
        beta_due.iter().any(|id| !beta_stored.contains_key(id)),
        "beta's events of the throttled time wait for its reset"
    );

    // After the reset and the end of both streams, beta has caught up.
    let caught_up_by = end.plus(Duration::from_secs(SETTLE_LAG_SECS + 3));
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let all: Vec<HashSet<String>> = loop {
        if UnixMs::now() > caught_up_by {
            // Every event of both streams is visible now.
            let all: Vec<HashSet<String>> = orgs
                .iter()
                .map(|o| expected_audit(&o.emu, start, end).into_keys().collect())
                .collect();
            let caught_up = orgs.iter().zip(&all).all(|(o, ids)| {
                let stored = stored_ids(&env, "MiroAuditLogs_CL", o.id);
                ids.iter().all(|id| stored.contains_key(id))
            });
            if caught_up {
                break all;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "beta did not catch up after its reset\n{}",
            run.stderr()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(run.stop().await.success());
    for (o, ids) in orgs.iter().zip(&all) {
        assert_once(
            &stored_ids(&env, "MiroAuditLogs_CL", o.id),
            ids,
            &format!("{} audit logs", o.name),
        );
    }
    assert_eq!(all[0], all[1], "alpha and beta share their ids");
    assert!(
        beta.emu.stats().by_status.get(&200).copied().unwrap_or(0) > beta_served_before,
        "beta was served again after its reset"
    );
    eprintln!(
        "beta throttled for 14 s ({} refusals): alpha's {} events due by then stored on time; \
         both organisations' {} events stored exactly once",
        beta_stats.rate_limited,
        alpha_due.len(),
        all[0].len()
    );
}
