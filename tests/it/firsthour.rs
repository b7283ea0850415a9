//! What a new user meets in the first hour: `status` figures, closed pipes, `run --once`
//! against a sink that cannot deliver, an interrupted backfill, and the feedback of
//! `backfill`, `run` and `status`.

use std::process::Stdio;
use std::time::Duration;

use mirotrail_emulator::UnixMs;

use crate::support::*;

const AUDIT_ONLY: &str = "[sources.audit_logs]\ninitial_lookback = \"2h\"\n";

async fn small_env() -> Env {
    let now = UnixMs::now();
    Env::start(org(800, 0, now.minus(minutes(90)), now.minus(minutes(5)))).await
}

/// Runs the binary with its standard output closed before it writes anything.
async fn run_with_closed_stdout(env: &Env, args: &[&str]) -> std::process::Output {
    let mut cmd = env.command(args, TOKEN);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("mirotrail starts");
    drop(child.stdout.take());
    tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("mirotrail ends")
        .expect("mirotrail runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_every_printing_command_quietly() {
    let env = small_env().await;
    let cfg = env.config(&format!(
        "{AUDIT_ONLY}\n[sinks.archive]\ntype = \"file\"\npath = \"archive\"\n"
    ));
    let cfg = cfg.to_str().unwrap();
    let out = env.run(&["run", "--config", cfg, "--once"], TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    for args in [
        vec!["status", "--config", cfg],
        vec!["check", "--config", cfg],
        vec!["template", "azure"],
        vec!["template", "workbook"],
        vec![
            "report",
            "--config",
            cfg,
            "--out",
            "closed-stdout-report.html",
        ],
        vec!["completions", "bash"],
        vec!["manpage"],
        vec!["query", "--config", cfg, "SELECT id FROM MiroAuditLogs_CL"],
    ] {
        let out = run_with_closed_stdout(&env, &args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() == Some(0)
                && !stderr.contains("panicked")
                && !stderr.contains("error"),
            "{args:?}: {}",
            text(&out)
        );
    }
}

/// The cells of the table line that contains every one of `needles`.
fn table_line(out: &str, needles: &[&str]) -> Vec<String> {
    let line = out
        .lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("no line with {needles:?} in\n{out}"));
    line.split(['│', '┆'])
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

fn max_seq(db: &std::path::Path, table: &str) -> i64 {
    let conn = mirotrail::store::Store::open_read_only(db).unwrap();
    conn.query_row(&format!("SELECT max(_seq) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_rows_delivered_not_the_sequence_number() {
    let now = UnixMs::now();
    let env = Env::start(org(1500, 0, now.minus(minutes(170)), now.minus(minutes(5)))).await;
    let cfg = env.config(
        "[sources.audit_logs]\ninitial_lookback = \"3h\"\npage_size = 100\n\n[sinks.archive]\ntype = \"file\"\npath = \"archive\"\n",
    );
    let cfg = cfg.to_str().unwrap();
    // The older half first, then `run` reads it again (duplicates use up `_seq`
    // numbers) and the rest after it.
    let out = env
        .run(
            &[
                "backfill", "--config", cfg, "--since", "3h", "--until", "90m",
            ],
            TOKEN,
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let out = env.run(&["run", "--config", cfg, "--once"], TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    let rows = count(&env.db(), "MiroAuditLogs_CL");
    assert!(
        max_seq(&env.db(), "MiroAuditLogs_CL") > rows,
        "the scenario must leave gaps in _seq"
    );
    let lines = std::fs::read_to_string(env.dir.path().join("archive/MiroAuditLogs_CL.ndjson"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(i64::try_from(lines).unwrap(), rows);

    let out = env.run(&["status", "--config", cfg], "").await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let cells = table_line(&stdout, &["archive", "audit_logs"]);
    assert_eq!(cells[2], rows.to_string(), "delivered\n{stdout}");
    assert_eq!(cells[3], "0", "pending\n{stdout}");

    let out = env
        .run(&["status", "--config", cfg, "--format", "json"], "")
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sink = v["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sink"] == "archive" && s["source"] == "audit_logs")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(sink["delivered"], rows, "{v}");
    assert_eq!(sink["pending"], 0, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_ends_when_its_stdout_sink_is_closed_and_names_the_backlog() {
    let env = small_env().await;
    let cfg = env.config(&format!("{AUDIT_ONLY}\n[sinks.out]\ntype = \"stdout\"\n"));
    let out =
        run_with_closed_stdout(&env, &["run", "--config", cfg.to_str().unwrap(), "--once"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let rows = count(&env.db(), "MiroAuditLogs_CL");
    assert!(rows > 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "sink out: {rows} audit_logs rows wait in the store"
        )) && stderr.contains("broken pipe"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_ends_within_its_retry_time_when_sentinel_is_down() {
    use mirotrail_emulator::azure::{
        AUDIT_DCR, AzureEmulator, AzureEmulatorConfig, AzureFaults, CONTENT_DCR,
    };
    let env = small_env().await;
    let azure_config = AzureEmulatorConfig {
        client_secret: "azure-secret-for-the-down-test".into(),
        faults: AzureFaults {
            server_error_share: 1.0,
            ..AzureFaults::default()
        },
        ..AzureEmulatorConfig::default()
    };
    let azure = AzureEmulator::start(azure_config.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let secret = env.dir.path().join("azure-secret");
    std::fs::write(&secret, &azure_config.client_secret).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = env.config(&format!(
        "{AUDIT_ONLY}\n[sinks.sentinel]\ntype = \"azure_logs_ingestion\"\nendpoint = \"{base}\"\n\
         audit_logs_dcr = \"{AUDIT_DCR}\"\ncontent_logs_dcr = \"{CONTENT_DCR}\"\n\
         authority_host = \"{base}\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\n\
         client_secret_file = \"azure-secret\"\n",
        azure_config.tenant_id,
        azure_config.client_id,
        base = azure.base_url(),
    ));
    let started = std::time::Instant::now();
    let out = env
        .run(
            &[
                "run",
                "--config",
                cfg.to_str().unwrap(),
                "--once",
                "--retry-for",
                "3s",
            ],
            TOKEN,
        )
        .await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // One upload attempt (with its own few retries) may still be under way at 3 s.
    assert!(took < Duration::from_secs(60), "took {took:?}");
    let rows = count(&env.db(), "MiroAuditLogs_CL");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "sink sentinel: {rows} audit_logs rows wait in the store"
        )) && stderr.contains("503")
            && stderr.contains("--retry-for"),
        "{}",
        text(&out)
    );
    assert!(azure.rows("MiroAuditLogs_CL").is_empty());
}

/// Starts a backfill, signals it once rows are arriving, and returns its output.
async fn signal_backfill_midway(env: &Env, args: &[&str], signal: &str) -> std::process::Output {
    let before = count(&env.db(), "MiroAuditLogs_CL");
    let mut cmd = env.command(args, TOKEN);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("mirotrail starts");
    let pid = child.id().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count(&env.db(), "MiroAuditLogs_CL") <= before {
        assert!(std::time::Instant::now() < deadline, "no rows arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("backfill stops after the signal")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_backfill_says_so_and_exits_130_or_143() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(72 * 60)), now.minus(minutes(30)));
    let mut config = org(6000, 0, start, end);
    config.faults = mirotrail_emulator::miro::Faults {
        slow_share: 1.0,
        slow_delay: Duration::from_millis(150),
        ..Default::default()
    };
    let env = Env::start(config).await;
    let cfg = env.config("[sources.audit_logs]\npage_size = 50\n");
    let args = [
        "backfill",
        "--config",
        cfg.to_str().unwrap(),
        "--since",
        "73h",
        "--slice",
        "6h",
        "--concurrency",
        "2",
    ];
    for (signal, code, name) in [("-INT", 130, "SIGINT"), ("-TERM", 143, "SIGTERM")] {
        let out = signal_backfill_midway(&env, &args, signal).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{}", text(&out));
        assert!(
            stderr.contains(&format!("backfill interrupted by {name}"))
                && stderr.contains("run the same command again")
                && !stderr.contains("backfill finished"),
            "{}",
            text(&out)
        );
        assert!(count(&env.db(), "MiroAuditLogs_CL") < 6000);
    }
    // The same command resumes and completes.
    let out = env.run(&args, TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_exactly_once(
        &env.db(),
        "MiroAuditLogs_CL",
        &expected_audit(&env.emu, start, end),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_readyz_agree_that_a_failing_poll_has_not_completed() {
    let now = UnixMs::now();
    let mut config = org(800, 0, now.minus(minutes(90)), now.minus(minutes(5)));
    // Every page after the first repeats its cursor: pages are stored, the poll never
    // completes.
    config.faults = mirotrail_emulator::miro::Faults {
        repeat_cursor_share: 1.0,
        ..Default::default()
    };
    let env = Env::start(config).await;
    let cfg = env.config("[sources.audit_logs]\ninitial_lookback = \"2h\"\npage_size = 100\n");
    let cfg = cfg.to_str().unwrap();
    let out = env.run(&["run", "--config", cfg, "--once"], TOKEN).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        count(&env.db(), "MiroAuditLogs_CL") > 0,
        "pages were stored"
    );

    let out = env.run(&["status", "--config", cfg], "").await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let cells = table_line(&stdout, &["audit_logs", "true"]);
    assert_eq!(cells[7], "never", "last poll completed\n{stdout}");
    // The long error is cut in the table, and the table says where the full text is.
    assert!(
        cells[8].contains("Miro returned cursor") && cells[8].contains('…'),
        "{stdout}"
    );
    assert!(stdout.contains("--format json"), "{stdout}");

    // The JSON has the full error and the same verdict.
    let out = env
        .run(&["status", "--config", cfg, "--format", "json"], "")
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let audit = &v["sources"][0];
    assert_eq!(audit["source"], "audit_logs");
    assert!(audit["last_poll_completed"].is_null(), "{v}");
    assert!(
        audit["last_error"]
            .as_str()
            .unwrap()
            .ends_with("read again from its start next cycle"),
        "{v}"
    );

    // Once Miro behaves, one poll completes: status shows it and the error is gone.
    env.emu
        .set_faults(mirotrail_emulator::miro::Faults::default());
    let out = env.run(&["run", "--config", cfg, "--once"], TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = env.run(&["status", "--config", cfg], "").await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let cells = table_line(&stdout, &["audit_logs", "true"]);
    assert!(cells[7].ends_with("s ago"), "{stdout}");
    assert_eq!(cells[8], "-", "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_logs_the_rows_it_delivered_per_sink_and_stream() {
    let env = small_env().await;
    let cfg = env.config(&format!(
        "{AUDIT_ONLY}\n[sinks.archive]\ntype = \"file\"\npath = \"archive\"\n"
    ));
    let out = env
        .run(&["run", "--config", cfg.to_str().unwrap(), "--once"], TOKEN)
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let rows = count(&env.db(), "MiroAuditLogs_CL");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("delivered this run") && l.contains("source=audit_logs"))
        .unwrap_or_else(|| panic!("no delivery line at INFO\n{}", text(&out)));
    assert!(
        line.contains("sink=archive")
            && line.contains(&format!("rows={rows}"))
            && line.contains("pending=0"),
        "{line}"
    );
}

/// The value of `key=` in a log line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let at = line
        .find(&format!(" {key}="))
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    line[at + key.len() + 2..].split(' ').next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_reports_the_span_asked_for_and_new_events_apart_from_stored_ones() {
    let now = UnixMs::now();
    let env = Env::start(org(
        1200,
        0,
        now.minus(minutes(31 * 60)),
        now.minus(minutes(5)),
    ))
    .await;
    let cfg = env.config("[sources.audit_logs]\npage_size = 200\ninitial_lookback = \"31h\"\n");
    let cfg = cfg.to_str().unwrap();
    // `run` stores every event; a first backfill leaves slices from 30 to 20 hours ago.
    let out = env.run(&["run", "--config", cfg, "--once"], TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = env
        .run(
            &[
                "backfill", "--config", cfg, "--since", "30h", "--until", "20h",
            ],
            TOKEN,
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    // Those slices reach before 25 hours ago: only the span asked for counts, and every
    // event in it is already stored.
    let out = env
        .run(&["backfill", "--config", cfg, "--since", "25h"], TOKEN)
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("backfill finished"))
        .unwrap_or_else(|| panic!("{}", text(&out)));
    // `--until` defaults to now minus the settle lag (1 minute): 24h59m, or 24h58m if
    // the minute turned.
    assert!(field(line, "span").starts_with("24h5"), "{line}");
    assert_eq!(field(line, "covered"), field(line, "span"), "{line}");
    assert_eq!(field(line, "new_events"), "0", "{line}");
    assert_ne!(field(line, "already_stored"), "0", "{line}");
    let progress = stderr
        .lines()
        .rfind(|l| l.contains("backfill progress"))
        .unwrap_or_else(|| panic!("{}", text(&out)));
    assert_eq!(field(progress, "new_events"), "0", "{progress}");
    assert_eq!(
        field(progress, "covered"),
        field(line, "covered"),
        "{progress}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_says_when_it_waits_for_the_credit_budget() {
    let now = UnixMs::now();
    let mut config = org(3000, 0, now.minus(minutes(6 * 60)), now.minus(minutes(5)));
    // A budget of 400 credits a minute: the backfill's share (a quarter) is one audit
    // call a minute, so the second call waits for the budget.
    config.rate_limit = Some(mirotrail_emulator::miro::RateLimit {
        credits_per_minute: 400,
        retry_after_header: true,
    });
    let env = Env::start(config).await;
    let cfg = env.config("[sources.audit_logs]\npage_size = 100\n");
    let mut cmd = env.command(
        &[
            "backfill",
            "--config",
            cfg.to_str().unwrap(),
            "--since",
            "6h",
        ],
        TOKEN,
    );
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    // The first progress line comes after 10 s, during the wait.
    tokio::time::sleep(Duration::from_secs(12)).await;
    std::process::Command::new("kill")
        .args(["-INT", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let progress = stderr
        .lines()
        .find(|l| l.contains("backfill progress"))
        .unwrap_or_else(|| panic!("{}", text(&out)));
    assert!(
        progress.contains("waiting for Miro's credit budget (resets in"),
        "{}",
        text(&out)
    );
    let secs: u64 = field(progress, "waiting_for_credits_secs").parse().unwrap();
    assert!((1..=60).contains(&secs), "{progress}");
}
