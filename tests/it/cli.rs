//! The command line: errors and exit codes, query, status, signals, secrets.

use std::time::Duration;

use mirotrail_emulator::UnixMs;

use crate::support::*;

const AUDIT_ONLY: &str = "[sources.audit_logs]\ninitial_lookback = \"2h\"\n";

async fn small_env() -> (Env, UnixMs, UnixMs) {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(90)), now.minus(minutes(5)));
    (Env::start(org(800, 300, start, end)).await, start, end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_exits_1_and_tells_the_admin_about_the_siem_toggle() {
    let (env, _, _) = small_env().await;
    let cfg = env.config(AUDIT_ONLY);
    let out = env
        .run(
            &["run", "--config", cfg.to_str().unwrap(), "--once"],
            "not-a-token",
        )
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("SIEM"),
        "{stderr}"
    );
    // The failure is also on record for `status`.
    let status = env
        .run(&["status", "--config", cfg.to_str().unwrap()], "")
        .await;
    assert!(status.status.success(), "{}", text(&status));
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("401"),
        "{}",
        text(&status)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_scopes_enterprise_guard_and_org_id_each_say_what_to_fix() {
    let (env, _, _) = small_env().await;
    let both = "[sources.audit_logs]\ninitial_lookback = \"2h\"\n[sources.content_logs]\nenabled = true\ninitial_lookback = \"2h\"\n";
    let cfg = env.config(both);
    let args = ["run", "--config", cfg.to_str().unwrap(), "--once"];

    let out = env.run(&args, CONTENT_ONLY_TOKEN).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("auditlogs:read"),
        "{}",
        text(&out)
    );

    let out = env.run(&args, AUDIT_ONLY_TOKEN).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("contentlogs:export"),
        "{}",
        text(&out)
    );
    // The audit source still collected everything it could.
    assert!(count(&env.db(), "MiroAuditLogs_CL") > 0);

    env.emu.set_enterprise_guard(false);
    let out = env.run(&args, TOKEN).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Enterprise Guard"),
        "{}",
        text(&out)
    );
    env.emu.set_enterprise_guard(true);

    let wrong_org = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&env.org_id, "1234567890");
    std::fs::write(&cfg, wrong_org).unwrap();
    let out = env.run(&args, TOKEN).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("404") && stderr.contains("org_id"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_exit_2_and_name_the_key_and_file() {
    let (env, _, _) = small_env().await;
    let cfg = env.config("[sources.audit_logs]\npoll_intervall = \"30s\"\n");
    let out = env
        .run(&["run", "--config", cfg.to_str().unwrap(), "--once"], TOKEN)
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("poll_intervall") && stderr.contains("mirotrail.toml"),
        "{stderr}"
    );

    let cfg = env.config("[sources.audit_logs]\noverlap = \"soon\"\n");
    let out = env
        .run(&["run", "--config", cfg.to_str().unwrap(), "--once"], TOKEN)
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sources.audit_logs.overlap"),
        "{}",
        text(&out)
    );

    let out = env
        .run(&["run", "--config", "does-not-exist.toml"], TOKEN)
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does-not-exist.toml"),
        "{}",
        text(&out)
    );

    // No token in the environment: exit 2, naming the variable.
    let cfg = env.config(AUDIT_ONLY);
    let mut cmd = env.command(&["run", "--config", cfg.to_str().unwrap(), "--once"], "");
    cmd.env_remove("MIRO_TOKEN");
    let out = cmd.output().await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("MIRO_TOKEN"),
        "{}",
        text(&out)
    );

    let out = env.run(&["run", "--bogus"], TOKEN).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_answers_read_only_sql_as_table_csv_and_json() {
    let (env, start, end) = small_env().await;
    let cfg = env.config(AUDIT_ONLY);
    let cfg = cfg.to_str().unwrap();
    let out = env.run(&["run", "--config", cfg, "--once"], TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    let expected = expected_audit(&env.emu, start, end).len();

    let sql = "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM MiroAuditLogs_CL";
    let out = env
        .run(&["query", "--config", cfg, "--format", "json", sql], "")
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["n"], i64::try_from(expected).unwrap());
    assert_eq!(v[0]["ids"], i64::try_from(expected).unwrap());

    let out = env
        .run(
            &[
                "query",
                "--config",
                cfg,
                "-f",
                "csv",
                "SELECT id, event FROM MiroAuditLogs_CL ORDER BY id LIMIT 3",
            ],
            "",
        )
        .await;
    let csv = String::from_utf8_lossy(&out.stdout);
    assert_eq!(csv.lines().next(), Some("id,event"), "{csv}");
    assert_eq!(csv.lines().count(), 4, "{csv}");

    let out = env
        .run(
            &[
                "query",
                "--config",
                cfg,
                "SELECT event, count(*) FROM MiroAuditLogs_CL GROUP BY event",
            ],
            "",
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rows)"),
        "{}",
        text(&out)
    );

    let out = env
        .run(
            &["query", "--config", cfg, "DELETE FROM MiroAuditLogs_CL"],
            "",
        )
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only reads"),
        "{}",
        text(&out)
    );
    assert_eq!(
        usize::try_from(count(&env.db(), "MiroAuditLogs_CL")).unwrap(),
        expected
    );

    let out = env.run(&["query", "--config", cfg, "SELEKT 1"], "").await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let out = env.run(&["status", "--config", cfg], "").await;
    assert!(out.status.success(), "{}", text(&out));
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains("audit_logs") && status.contains(&expected.to_string()),
        "{status}"
    );
}

/// `run` without `--once` keeps polling, picks up new events, and stops cleanly on
/// SIGTERM (exit 0), between pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_keeps_polling_and_stops_cleanly_on_sigterm() {
    let now = UnixMs::now();
    // Events keep arriving: one every 100 ms until 10 minutes from now.
    let (start, end) = (now.minus(minutes(10)), now.plus(minutes(10)));
    let env = Env::start(org(12_000, 0, start, end)).await;
    let cfg = env.config("[sources.audit_logs]\ninitial_lookback = \"15m\"\nsettle_lag = \"0s\"\noverlap = \"5s\"\npoll_interval = \"1s\"\n");
    let child = env.spawn(env.command(&["run", "--config", cfg.to_str().unwrap()], TOKEN));
    let pid = child.id().unwrap();
    // The past 10 minutes (about 6,000 events) are caught up first; a loaded machine
    // may take longer than a quiet one, so wait for it rather than for a fixed time.
    let caught_up = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut first = 0;
    while tokio::time::Instant::now() < caught_up {
        first = count(&env.db(), "MiroAuditLogs_CL");
        if first > 5000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = count(&env.db(), "MiroAuditLogs_CL");
    assert!(first > 5000 && second > first, "{first} then {second}");
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("stopped within 15 s of SIGTERM")
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // What it stored is consistent: each id once, nothing before the start missing.
    let watermark = audit_watermark(&env.db()).0;
    let expected = expected_audit(&env.emu, start, UnixMs(watermark));
    let stored: std::collections::HashSet<String> = table(&env.db(), "MiroAuditLogs_CL")
        .into_iter()
        .map(|r| r["id"].clone().unwrap())
        .collect();
    assert!(expected.keys().all(|id| stored.contains(id)));
}

/// The token appears nowhere: not in stdout or stderr at debug level, not in the store,
/// the checkpoints or the NDJSON output; nor when Miro refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_appears_nowhere() {
    let (env, _, _) = small_env().await;
    let cfg = env.config(
        "[sources.audit_logs]\ninitial_lookback = \"2h\"\n[sources.content_logs]\nenabled = true\ninitial_lookback = \"2h\"\n[sinks.out]\ntype = \"stdout\"\n[sinks.archive]\ntype = \"file\"\npath = \"archive\"\n",
    );
    let cfg = cfg.to_str().unwrap();
    let mut outputs = Vec::new();
    for (args, token) in [
        (vec!["run", "--config", cfg, "--once"], TOKEN),
        (vec!["status", "--config", cfg], TOKEN),
        (
            vec!["query", "--config", cfg, "SELECT * FROM checkpoints"],
            TOKEN,
        ),
        (
            vec!["run", "--config", cfg, "--once"],
            "tok-revoked-3c5e7a9b1d2f4e6a",
        ),
    ] {
        let mut cmd = env.command(&args, token);
        cmd.env("RUST_LOG", "trace");
        let out = cmd.output().await.unwrap();
        outputs.push((token, out));
    }
    assert!(outputs[0].1.status.success(), "{}", text(&outputs[0].1));
    assert!(outputs[0].1.stderr.len() > 1000, "debug logs were written");
    for (token, out) in &outputs {
        let all = text(out);
        assert!(!all.contains(token), "token in output: {all}");
    }
    let mut files = vec![];
    for entry in walk(env.dir.path()) {
        let name = entry.file_name().unwrap().to_string_lossy().to_string();
        if name != "mirotrail.toml" {
            files.push(entry);
        }
    }
    assert!(files.iter().any(|f| f.ends_with("mirotrail.db")));
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for token in [TOKEN, "tok-revoked-3c5e7a9b1d2f4e6a"] {
            assert!(
                !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                "token found in {}",
                f.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_store_is_refused() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(10)), now.plus(minutes(10)));
    let env = Env::start(org(1000, 0, start, end)).await;
    let cfg =
        env.config("[sources.audit_logs]\ninitial_lookback = \"15m\"\npoll_interval = \"1s\"\n");
    let cfg = cfg.to_str().unwrap();
    let first = env.spawn(env.command(&["run", "--config", cfg], TOKEN));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = env.run(&["run", "--config", cfg, "--once"], TOKEN).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use by another mirotrail process"),
        "{}",
        text(&out)
    );
    drop(first);
}

/// A token file readable by group or others gets a warning (and still works); the token
/// is never echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_world_readable_token_file_gets_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let (env, _, _) = small_env().await;
    let token_path = env.dir.path().join("miro-token");
    std::fs::write(&token_path, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = env.config(AUDIT_ONLY);
    let text_cfg = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[miro]\n", "[miro]\ntoken_file = \"miro-token\"\n");
    std::fs::write(&cfg, text_cfg).unwrap();
    let mut cmd = env.command(&["run", "--config", cfg.to_str().unwrap(), "--once"], "");
    cmd.env_remove("MIRO_TOKEN");
    let out = cmd.output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(!text(&out).contains(TOKEN));

    std::fs::set_permissions(&token_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = env.command(&["run", "--config", cfg.to_str().unwrap(), "--once"], "");
    cmd.env_remove("MIRO_TOKEN");
    let out = cmd.output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}
