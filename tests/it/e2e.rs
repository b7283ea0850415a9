//! End to end over loopback: Miro emulator -> the `mirotrail` binary -> Azure emulator.

use std::time::Duration;

use mirotrail::config::SourceKind;
use mirotrail_emulator::UnixMs;
use mirotrail_emulator::azure::{
    AUDIT_DCR, AzureEmulator, AzureEmulatorConfig, AzureEmulatorHandle, AzureFaults, CONTENT_DCR,
};
use mirotrail_emulator::miro::Faults;

use crate::support::*;

const SECRET: &str = "azure-secret-5d0c9e1b7a2f";

fn sentinel_section(
    azure: &AzureEmulatorHandle,
    config: &AzureEmulatorConfig,
    extra: &str,
) -> String {
    format!(
        "[sinks.sentinel]\ntype = \"azure_logs_ingestion\"\nendpoint = \"{base}\"\n\
         audit_logs_dcr = \"{AUDIT_DCR}\"\ncontent_logs_dcr = \"{CONTENT_DCR}\"\n\
         authority_host = \"{base}\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\n\
         client_secret_file = \"azure-secret\"\nbatch_rows = 400\nmax_concurrency = 4\n{extra}",
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

/// Miro -> store -> Sentinel with faults on both sides: everything arrives, equal to the
/// local rows; duplicates only from lost acknowledgements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miro_to_sentinel_with_faults_on_both_sides() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(180)), now.minus(minutes(5)));
    let mut miro = org(5000, 1500, start, end);
    miro.faults = Faults {
        server_error_share: 0.05,
        truncate_share: 0.03,
        ..Faults::default()
    };
    let env = Env::start(miro).await;
    let azure_config = AzureEmulatorConfig {
        client_secret: SECRET.into(),
        token_lifetime: Duration::from_secs(2),
        faults: AzureFaults {
            throttle_share: 0.1,
            retry_after: Duration::from_secs(1),
            server_error_share: 0.1,
            lost_ack_share: 0.08,
            ..AzureFaults::default()
        },
        ..AzureEmulatorConfig::default()
    };
    let azure = AzureEmulator::start(azure_config.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    write_secret(&env);
    let cfg = env.config(&format!(
        "[sources.audit_logs]\ninitial_lookback = \"4h\"\npage_size = 200\n[sources.content_logs]\nenabled = true\ninitial_lookback = \"4h\"\n{}",
        sentinel_section(&azure, &azure_config, "max_batch_bytes = 40000\n")
    ));
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
    let dup = assert_all_in_azure(&env, &azure, SourceKind::AuditLogs)
        + assert_all_in_azure(&env, &azure, SourceKind::ContentLogs);
    let stats = azure.stats();
    assert!(
        stats.lost_acks > 0 && stats.ingestion(429) > 0 && stats.ingestion(503) > 0,
        "{stats:?}"
    );
    assert!(
        dup as u64 <= stats.lost_ack_records,
        "{dup} duplicates but only {} records in lost-ack batches",
        stats.lost_ack_records
    );
    assert!(stats.max_body_bytes <= 1_000_000, "{stats:?}");
    assert!(!text(&out).contains(SECRET));
}

/// SIGKILL in the middle of concurrent uploads (Azure slow), then restart: no row is
/// missing in Azure, and duplicates stay within the batches that were in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_concurrent_uploads_then_restart_misses_nothing_in_azure() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(120)), now.minus(minutes(5)));
    let env = Env::start(org(6000, 0, start, end)).await;
    let azure_config = AzureEmulatorConfig {
        client_secret: SECRET.into(),
        faults: AzureFaults {
            slow_share: 1.0,
            slow_delay: Duration::from_millis(150),
            ..AzureFaults::default()
        },
        ..AzureEmulatorConfig::default()
    };
    let azure = AzureEmulator::start(azure_config.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    write_secret(&env);
    let cfg = env.config(&format!(
        "[sources.audit_logs]\ninitial_lookback = \"3h\"\n{}",
        sentinel_section(&azure, &azure_config, "max_batch_bytes = 60000\n")
    ));
    let args = ["run", "--config", cfg.to_str().unwrap(), "--once"];
    let mut kills = 0u64;
    for i in 0..10u64 {
        let mut child = env.spawn(env.command(&args, TOKEN));
        tokio::time::sleep(Duration::from_millis(400 + i * 37 % 300)).await;
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.start_kill().unwrap();
        let _ = child.wait().await;
        kills += 1;
    }
    azure.set_faults(AzureFaults::default());
    let out = env.run(&args, TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(kills >= 3, "only {kills} kills landed");
    assert_exactly_once(
        &env.db(),
        "MiroAuditLogs_CL",
        &expected_audit(&env.emu, start, end),
    );
    let dup = assert_all_in_azure(&env, &azure, SourceKind::AuditLogs) as u64;
    // At most the batches in flight at each kill come again: 4 concurrent chunks of at
    // most 400 rows per kill.
    assert!(
        dup <= kills * 4 * 400,
        "{dup} duplicates after {kills} kills"
    );
    eprintln!("{kills} kills during uploads; {dup} rows resent");
}

/// Every command, at trace level, with known secret values (the Miro token, the Azure
/// client secret, the Entra access tokens issued): none of them appears in stdout, stderr,
/// the store (tables, checkpoints, WAL) or the NDJSON output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_any_output_or_file() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(90)), now.minus(minutes(5)));
    let env = Env::start(org(800, 300, start, end)).await;
    let azure_config = AzureEmulatorConfig {
        client_secret: SECRET.into(),
        ..AzureEmulatorConfig::default()
    };
    let azure = AzureEmulator::start(azure_config.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    write_secret(&env);
    let cfg = env.config(&format!(
        "[sources.audit_logs]\ninitial_lookback = \"2h\"\n[sources.content_logs]\nenabled = true\ninitial_lookback = \"2h\"\n\
         [sinks.out]\ntype = \"stdout\"\n[sinks.archive]\ntype = \"file\"\npath = \"archive\"\n{}",
        sentinel_section(&azure, &azure_config, "")
    ));
    let cfg = cfg.to_str().unwrap();
    let revoked = "tok-revoked-3c5e7a9b1d2f4e6a";
    let commands: Vec<(Vec<&str>, &str)> = vec![
        (vec!["run", "--config", cfg, "--once"], TOKEN),
        (vec!["check", "--config", cfg], TOKEN),
        (vec!["status", "--config", cfg], TOKEN),
        (
            vec!["query", "--config", cfg, "SELECT * FROM checkpoints"],
            TOKEN,
        ),
        (
            vec!["query", "--config", cfg, "SELECT * FROM sink_offsets"],
            TOKEN,
        ),
        (vec!["run", "--config", cfg, "--once"], revoked),
        (vec!["check", "--config", cfg], revoked),
        (
            vec![
                "backfill", "--config", cfg, "--since", "3h", "--slice", "1h",
            ],
            TOKEN,
        ),
        (vec!["backfill", "--config", cfg, "--since", "4h"], revoked),
    ];
    let mut outputs = Vec::new();
    for (args, token) in &commands {
        let mut cmd = env.command(args, token);
        cmd.env("RUST_LOG", "trace");
        outputs.push(cmd.output().await.unwrap());
    }
    assert!(outputs[0].status.success(), "{}", text(&outputs[0]));
    assert!(outputs[0].stderr.len() > 2_000, "trace logs were written");
    assert!(!azure.rows("MiroAuditLogs_CL").is_empty(), "Azure got rows");
    // A wrong Azure secret too: its value must not be echoed either.
    std::fs::write(env.dir.path().join("azure-secret"), "wrong-secret-0e4f9a").unwrap();
    let mut cmd = env.command(&["run", "--config", cfg, "--once"], TOKEN);
    cmd.env("RUST_LOG", "trace");
    outputs.push(cmd.output().await.unwrap());

    let mut secrets: Vec<String> = vec![
        TOKEN.into(),
        revoked.into(),
        SECRET.into(),
        "wrong-secret-0e4f9a".into(),
    ];
    secrets.extend(azure.issued_tokens());
    assert!(secrets.len() > 4, "Entra tokens were issued");
    for out in &outputs {
        let all = text(out);
        for s in &secrets {
            assert!(
                !all.contains(s.as_str()),
                "a secret in the output of a command: {all}"
            );
        }
    }
    let files: Vec<_> = crate::support::files_under(env.dir.path())
        .into_iter()
        .filter(|p| !p.ends_with("mirotrail.toml") && !p.ends_with("azure-secret"))
        .collect();
    assert!(files.iter().any(|f| f.ends_with("mirotrail.db")));
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "ndjson"))
    );
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for s in &secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "a secret in {}",
                f.display()
            );
        }
    }
}

/// Azure unreachable (every upload answered 503) while collection goes on: only the
/// backlog grows; once Azure answers again everything arrives, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_down_only_grows_the_backlog_and_everything_arrives_when_it_is_back() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(10)), now.minus(Duration::from_secs(30)));
    let env = Env::start(org(6000, 0, start, end)).await;
    let azure_config = AzureEmulatorConfig {
        client_secret: SECRET.into(),
        faults: AzureFaults {
            server_error_share: 1.0,
            ..AzureFaults::default()
        },
        ..AzureEmulatorConfig::default()
    };
    let azure = AzureEmulator::start(azure_config.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    write_secret(&env);
    let cfg = env.config(&format!(
        "[sources.audit_logs]\ninitial_lookback = \"15m\"\nsettle_lag = \"0s\"\npoll_interval = \"1s\"\n{}",
        sentinel_section(&azure, &azure_config, "")
    ));
    let child = env
        .command(&["run", "--config", cfg.to_str().unwrap()], TOKEN)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Collection goes on while Azure is down: every event is stored (polled, so a loaded
    // machine does not fail the test; the bound only stops a hung run).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut stored = 0;
    while std::time::Instant::now() < deadline {
        stored = count(&env.db(), "MiroAuditLogs_CL");
        if stored == 6000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(stored, 6000, "collection goes on while Azure is down");
    assert!(azure.rows("MiroAuditLogs_CL").is_empty());
    let status = env
        .run(&["status", "--config", cfg.to_str().unwrap()], "")
        .await;
    let backlog_line = String::from_utf8_lossy(&status.stdout)
        .lines()
        .find(|l| l.contains("sentinel") && l.contains("audit_logs"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        backlog_line.contains("6000"),
        "status shows the backlog: {}",
        text(&status)
    );
    // Azure is back.
    azure.set_faults(AzureFaults::default());
    let db = env.db();
    let mut delivered = false;
    for _ in 0..150 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let conn = mirotrail::store::Store::open_read_only(&db).unwrap();
        let (max_seq, offset): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT max(_seq) FROM MiroAuditLogs_CL), \
                 (SELECT delivered_seq FROM sink_offsets WHERE sink = 'sentinel' AND source = 'audit_logs')",
                [],
                |r| Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0))),
            )
            .unwrap();
        if offset >= max_seq
            && i64::try_from(azure.rows("MiroAuditLogs_CL").len()).unwrap() >= stored
        {
            delivered = true;
            break;
        }
    }
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(delivered, "the backlog drained once Azure was back");
    assert!(out.status.success(), "{}", text(&out));
    let dup = assert_all_in_azure(&env, &azure, SourceKind::AuditLogs);
    assert_eq!(
        dup, 0,
        "no duplicates: nothing was acknowledged while Azure was down"
    );
}
