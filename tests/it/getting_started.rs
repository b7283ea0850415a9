//! A new user's first hour: error messages that say each thing once, config files found
//! where expected, a starter config, the emulator banners, listen addresses.

use crate::support::*;

const AUDIT_ONLY: &str = "[sources.audit_logs]\ninitial_lookback = \"2h\"\n";

async fn small_env() -> Env {
    let now = mirotrail_emulator::UnixMs::now();
    Env::start(org(200, 50, now.minus(minutes(90)), now.minus(minutes(5)))).await
}

/// The `error: ...` lines of standard error.
fn error_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("error: "))
        .map(str::to_string)
        .collect()
}

/// The stdout line of `check` about `subject`.
fn check_line(out: &std::process::Output, subject: &str) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.get(13..).is_some_and(|rest| rest.starts_with(subject)))
        .unwrap_or_else(|| panic!("no line about {subject}: {}", text(out)))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_source_and_the_call_once() {
    let env = small_env().await;
    let cfg = env.config(AUDIT_ONLY);
    let cfg = cfg.to_str().unwrap();

    // A refused token: `run` names the source once, `check` not at all (its line says it).
    let out = env
        .run(&["run", "--config", cfg, "--once"], "not-a-token")
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let refused = "Miro rejected the token (401: \"Token is invalid or has been revoked\"): \
                   it is invalid or was revoked. If it came from Company settings > Apps and \
                   integrations > Enterprise integrations, check that the \"SIEM\" toggle is \
                   still on, then copy the token again";
    assert_eq!(
        error_lines(&out),
        [format!("error: audit_logs: {refused}")],
        "{}",
        text(&out)
    );
    let out = env.run(&["check", "--config", cfg], "not-a-token").await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        check_line(&out, "miro token"),
        format!("problem      miro token: {refused}")
    );

    // A missing scope: content logs enabled with an audit-only token.
    let both =
        format!("{AUDIT_ONLY}[sources.content_logs]\nenabled = true\ninitial_lookback = \"2h\"\n");
    let cfg_both = env.config(&both);
    let out = env
        .run(
            &["run", "--config", cfg_both.to_str().unwrap(), "--once"],
            AUDIT_ONLY_TOKEN,
        )
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let lines = error_lines(&out);
    assert_eq!(lines.len(), 1, "{}", text(&out));
    assert!(
        lines[0].starts_with("error: content_logs: Miro refused access to content_logs (403"),
        "{}",
        text(&out)
    );
    assert_eq!(lines[0].matches("content_logs:").count(), 1, "{}", lines[0]);

    // A down endpoint: the token check says it was the token introspection, the page
    // check says it was a page request, and neither names a source or says "next cycle".
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let down = env.dir.path().join("down.toml");
    std::fs::write(
        &down,
        format!("[miro]\napi_base = \"http://127.0.0.1:{port}\"\nmax_retries = 0\n\n{AUDIT_ONLY}"),
    )
    .unwrap();
    let down = down.to_str().unwrap();
    let out = env.run(&["check", "--config", down], TOKEN).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let token = check_line(&out, "miro token");
    assert!(
        token.starts_with(
            "problem      miro token: the token introspection (GET /v1/oauth-token) failed 1 time, last: could not connect"
        ) && token.ends_with(&format!(
            "; check `miro.api_base` (http://127.0.0.1:{port}) and the network"
        )),
        "{token}"
    );
    assert!(
        !token.contains("client error (Connect)") && !token.contains("tcp connect error"),
        "the connection failure is said once: {token}"
    );
    let page = check_line(&out, "miro audit_logs");
    assert!(
        page.starts_with(
            "problem      miro audit_logs: the page request failed 1 time, last: could not connect"
        ) && !page.contains("next cycle"),
        "{page}"
    );
    let out = env.run(&["run", "--config", down, "--once"], TOKEN).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let lines = error_lines(&out);
    assert_eq!(lines.len(), 1, "{}", text(&out));
    assert!(
        lines[0].starts_with("error: audit_logs: the page request failed 1 time, last: ")
            && !lines[0].contains("next cycle"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_errors_are_one_line_and_toml_errors_keep_the_caret() {
    let env = small_env().await;
    let dir = env.dir.path();

    // No --config, no MIROTRAIL_CONFIG, no ./mirotrail.toml: one line saying where it looked.
    let out = env.run(&["check"], TOKEN).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let real_dir = std::fs::canonicalize(dir).unwrap();
    assert_eq!(
        stderr,
        format!(
            "error: config file mirotrail.toml: not found (the default in {}: no --config \
             given and MIROTRAIL_CONFIG is not set); write a starter config with `mirotrail \
             init --path mirotrail.toml`, or name another file with --config FILE or \
             MIROTRAIL_CONFIG\n",
            real_dir.display()
        )
    );

    // MIROTRAIL_CONFIG names a file that is not there.
    let mut cmd = env.command(&["status"], TOKEN);
    cmd.env("MIROTRAIL_CONFIG", "elsewhere.toml");
    let out = cmd.output().await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: config file elsewhere.toml: not found (named by MIROTRAIL_CONFIG); write a \
         starter config with `mirotrail init --path elsewhere.toml`, or name another file \
         with --config FILE or MIROTRAIL_CONFIG\n"
    );

    // A directory: one line, no OS error text.
    let out = env.run(&["check", "--config", "."], TOKEN).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: config file .: is a directory (named by --config); give the path of the TOML file in it\n"
    );

    // A TOML mistake keeps the parser's snippet with the caret under it.
    std::fs::write(dir.join("mirotrail.toml"), "[miro]\napi_bas = 1\n").unwrap();
    let out = env.run(&["check"], TOKEN).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(
            "error: config file mirotrail.toml:\nTOML parse error at line 2, column 1\n  |\n2 | api_bas = 1\n  | ^^^^^^^\nunknown field `api_bas`"
        ),
        "{stderr}"
    );

    // An empty token file: the message names the file.
    std::fs::write(dir.join("token"), "\n").unwrap();
    std::fs::write(
        dir.join("mirotrail.toml"),
        format!(
            "[miro]\napi_base = \"{}\"\ntoken_file = \"token\"\n",
            env.emu.base_url()
        ),
    )
    .unwrap();
    let out = env.run(&["run", "--once"], TOKEN).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        error_lines(&out),
        [
            "error: the Miro token is empty: the file token holds nothing (or only whitespace); put the token in it"
        ],
        "{}",
        text(&out)
    );
}

/// Starts `mirotrail emulate miro --listen LISTEN` and returns it with its banner (the
/// standard error lines up to "stops it.").
async fn start_miro_emulator(listen: &str, token: &str) -> (tokio::process::Child, String) {
    start_emulator(&[
        "emulate",
        "miro",
        "--listen",
        listen,
        "--days",
        "1",
        "--audit-events",
        "50",
        "--content-items",
        "10",
        "--token",
        token,
    ])
    .await
}

/// Starts `mirotrail ARGS` (an `emulate` command) and returns it with its banner.
async fn start_emulator(args: &[&str]) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mirotrail"))
        .args(args)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut banner = String::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            banner.push_str(&line);
            banner.push('\n');
            if line.ends_with("stops it.") {
                break;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), read)
        .await
        .expect("the banner within 30 s");
    (child, banner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulate_miro_prints_a_config_block_and_token_that_check_accepts() {
    let dir = tempfile::tempdir().unwrap();
    for listen in ["localhost:0", "0.0.0.0:0"] {
        let (child, banner) = start_miro_emulator(listen, "tok-first-hour").await;
        if listen.starts_with("0.0.0.0") {
            assert!(banner.contains("every interface"), "{banner}");
        }
        // The block from `[miro]` to the blank line, pasted as it is.
        let block: String = banner
            .lines()
            .skip_while(|l| *l != "[miro]")
            .take_while(|l| !l.is_empty())
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(
            block.contains("org_id = \"3074457345821141000\""),
            "{banner}"
        );
        let token = banner
            .lines()
            .find_map(|l| l.strip_prefix("export MIRO_TOKEN="))
            .unwrap_or_else(|| panic!("no export line: {banner}"));
        assert_eq!(token, "tok-first-hour");
        let cfg = dir.path().join("mirotrail.toml");
        std::fs::write(
            &cfg,
            format!("{block}\n[sources.content_logs]\nenabled = true\n"),
        )
        .unwrap();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mirotrail"))
            .args(["check", "--config", cfg.to_str().unwrap()])
            .env("MIRO_TOKEN", token)
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{listen}: {banner}\n{}", text(&out));
        // SIGTERM (systemd, `kill`, containers) stops it, like Ctrl-C.
        let mut child = child;
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &child.id().unwrap().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
            .await
            .expect("the emulator stops within 10 s of SIGTERM")
            .unwrap();
        assert!(status.success(), "{status:?}");
    }
}

/// The value of `key = "VALUE"` in an emulator's banner.
fn banner_value(banner: &str, key: &str) -> String {
    let prefix = format!("{key} = \"");
    let line = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key} in: {banner}"));
    line.trim_end_matches('"').to_owned()
}

/// Sends SIGTERM and waits (at most 10 s) for a clean exit.
async fn stop(mut child: tokio::process::Child) {
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .expect("the emulator stops within 10 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulators_write_what_they_served_and_acknowledged_when_stopped() {
    // What the pipeline bench reads from the emulators it runs as child processes: an
    // org over an explicit span, the Miro stats, the Azure stats and acknowledgement times.
    let dir = tempfile::tempdir().unwrap();
    let now = mirotrail_emulator::UnixMs::now();
    let (start, end) = (now.minus(minutes(90)), now.minus(minutes(30)));
    let (start_ms, end_ms) = (start.0.to_string(), end.0.to_string());
    let miro_stats = dir.path().join("miro.json");
    let azure_stats = dir.path().join("azure.json");
    let acks = dir.path().join("acks.tsv");
    let (miro, miro_banner) = start_emulator(&[
        "emulate",
        "miro",
        "--listen",
        "127.0.0.1:0",
        "--start-ms",
        &start_ms,
        "--end-ms",
        &end_ms,
        "--audit-events",
        "300",
        "--content-items",
        "40",
        "--late-share",
        "0",
        "--no-rate-limit",
        "--stats-out",
        miro_stats.to_str().unwrap(),
    ])
    .await;
    let (azure, azure_banner) = start_emulator(&[
        "emulate",
        "azure",
        "--listen",
        "127.0.0.1:0",
        "--discard-rows",
        "--stats-out",
        azure_stats.to_str().unwrap(),
        "--acks-out",
        acks.to_str().unwrap(),
    ])
    .await;
    let azure_url = banner_value(&azure_banner, "endpoint");
    let cfg = dir.path().join("mirotrail.toml");
    std::fs::write(
        &cfg,
        format!(
            "[miro]\napi_base = \"{}\"\norg_id = \"{}\"\n\
             [sources.audit_logs]\ninitial_lookback = \"2h\"\n\
             [sources.content_logs]\nenabled = true\ninitial_lookback = \"2h\"\n\
             [store]\npath = \"{}\"\n\
             [sinks.sentinel]\ntype = \"azure_logs_ingestion\"\nendpoint = \"{azure_url}\"\n\
             authority_host = \"{azure_url}\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\n\
             client_secret_env = \"AZURE_CLIENT_SECRET\"\naudit_logs_dcr = \"{}\"\n\
             content_logs_dcr = \"{}\"\n",
            banner_value(&miro_banner, "api_base"),
            banner_value(&miro_banner, "org_id"),
            dir.path().join("mirotrail.db").display(),
            banner_value(&azure_banner, "tenant_id"),
            banner_value(&azure_banner, "client_id"),
            banner_value(&azure_banner, "audit_logs_dcr"),
            banner_value(&azure_banner, "content_logs_dcr"),
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mirotrail"))
        .args(["run", "--once", "--config", cfg.to_str().unwrap()])
        .env("MIRO_TOKEN", "emulator-token")
        .env("AZURE_CLIENT_SECRET", "emulator-client-secret")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !miro_stats.exists() && !acks.exists(),
        "written on stop only"
    );
    stop(miro).await;
    stop(azure).await;

    let miro: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&miro_stats).unwrap()).unwrap();
    assert!(miro["items_served"].as_u64().unwrap() >= 340, "{miro}");
    assert!(miro["audit_requests"].as_u64().unwrap() >= 1, "{miro}");
    assert!(miro["content_requests"].as_u64().unwrap() >= 1, "{miro}");
    let azure: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&azure_stats).unwrap()).unwrap();
    assert_eq!(azure["records_accepted"], 340, "{azure}");
    let acked: Vec<(String, i64)> = std::fs::read_to_string(&acks)
        .unwrap()
        .lines()
        .map(|l| {
            let (id, at) = l.split_once('\t').expect("ID<TAB>UNIX_MS");
            (id.to_owned(), at.parse().expect("milliseconds"))
        })
        .collect();
    assert_eq!(acked.len(), 340);
    assert!(
        acked.iter().all(|(_, at)| *at >= now.0),
        "acknowledged during the run"
    );
}

/// Lines of a file sink's audit-log file (0 when it does not exist).
fn ndjson_lines(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("MiroAuditLogs_CL.ndjson"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_sink_gets_the_whole_store_unless_it_starts_now() {
    let env = small_env().await;
    let recent = "[sources.audit_logs]\ninitial_lookback = \"30m\"\n";
    let cfg = env.config(recent);
    let cfg_s = cfg.to_str().unwrap().to_string();
    let out = env.run(&["run", "--config", &cfg_s, "--once"], TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    let stored = usize::try_from(count(&env.db(), "MiroAuditLogs_CL")).unwrap();
    assert!(stored > 0);

    // Two sinks are added: `history` (the default start) and `fresh` (start = "now").
    env.config(&format!(
        "{recent}[sinks.history]\ntype = \"file\"\npath = \"history\"\n\
         [sinks.fresh]\ntype = \"file\"\npath = \"fresh\"\nstart = \"now\"\n"
    ));
    let out = env.run(&["check", "--config", &cfg_s], TOKEN).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "sink history: new sink: its first run sends it every row already in the store ({stored} now)"
        )) && stdout.contains(&format!(
            "sink fresh: new sink with start = \"now\": the {stored} row(s) already in the store are not sent to it"
        )),
        "{}",
        text(&out)
    );
    let out = env.run(&["run", "--config", &cfg_s, "--once"], TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    let (history, fresh) = (env.dir.path().join("history"), env.dir.path().join("fresh"));
    assert_eq!(ndjson_lines(&history), stored);
    assert_eq!(ndjson_lines(&fresh), 0);

    // Rows stored later (a backfill of older history) reach both; `start` is not applied
    // again to a sink that has an offset.
    let out = env
        .run(&["backfill", "--config", &cfg_s, "--since", "2h"], TOKEN)
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let total = usize::try_from(count(&env.db(), "MiroAuditLogs_CL")).unwrap();
    assert!(total > stored, "{total} after backfill, {stored} before");
    let out = env.run(&["run", "--config", &cfg_s, "--once"], TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(ndjson_lines(&history), total);
    assert_eq!(ndjson_lines(&fresh), total - stored);
}

async fn mirotrail(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_mirotrail"))
        .args(args)
        .current_dir(dir)
        .env_remove("MIROTRAIL_CONFIG")
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_writes_a_starter_config_that_loads_and_never_overwrites_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = mirotrail(dir.path(), &["init"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let path = dir.path().join("mirotrail.toml");
    let written = std::fs::read_to_string(&path).unwrap();
    // The real loader takes it as it is; every key is in it, with its default.
    let config = mirotrail::config::Config::load(&path).unwrap();
    assert_eq!(config.store_path, dir.path().join("mirotrail.db"));
    for k in mirotrail::config::keys::all() {
        let value = k.default.or(k.example).unwrap();
        assert!(
            written.contains(&format!("# {} = {value}\n", k.key)),
            "{}.{} missing: {written}",
            k.section,
            k.key
        );
    }
    assert!(!written.to_lowercase().contains("secret ="), "{written}");

    // Not overwritten without --force, and the message says how.
    std::fs::write(&path, "# mine\n").unwrap();
    let out = mirotrail(dir.path(), &["init"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists")
            && String::from_utf8_lossy(&out.stderr).contains("--force"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "# mine\n");
    let out = mirotrail(dir.path(), &["init", "--force"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), written);

    // --path, and `check` finds ./mirotrail.toml without --config.
    let out = mirotrail(dir.path(), &["init", "--path", "other.toml"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.path().join("other.toml").exists());
    let out = mirotrail(dir.path(), &["check"]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("config: mirotrail.toml is valid"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manual_refers_to_no_missing_page_and_documents_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = mirotrail(dir.path(), &["manpage"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        !page.contains("mirotrail\\-run") && !page.contains("mirotrail-run"),
        "{page}"
    );
    assert!(!page.contains("(1)"), "{page}");
    assert!(page.contains(".SH CONFIGURATION") && page.contains(".SH COMMANDS"));
    for command in ["run", "check", "init", "emulate miro", "backfill"] {
        assert!(
            page.contains(&format!(".SS mirotrail {command}")),
            "{command}"
        );
    }
    for k in mirotrail::config::keys::all() {
        assert!(page.contains(&format!("\\fB{}\\fR", k.key)), "{}", k.key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_promises_a_config_default_only_where_there_is_a_config() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["completions", "emulate", "demo", "manpage", "init"] {
        let out = mirotrail(dir.path(), &[command, "--help"]).await;
        let help = String::from_utf8_lossy(&out.stdout);
        let line = help
            .lines()
            .skip_while(|l| !l.contains("--log-format"))
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            line.contains("[default: text") && !line.contains("from the config"),
            "{command}: {help}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_explains_credits_and_empty_emails_and_its_hint_works() {
    let dir = tempfile::tempdir().unwrap();
    let out = mirotrail(
        dir.path(),
        &[
            "demo",
            "--days",
            "1",
            "--audit-events",
            "400",
            "--content-items",
            "40",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let credits = stdout
        .lines()
        .find(|l| l.starts_with("credits used: "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        credits.contains("(credits: Miro's rate limit") && credits.contains("per minute"),
        "{credits}"
    );
    assert!(
        stdout.contains("An empty createdBy_email is not missing data") && stdout.contains("SCIM"),
        "{stdout}"
    );
    // It ends with the HTML report of what it collected.
    assert!(
        stdout.contains("report: mirotrail-demo/report.html ("),
        "{stdout}"
    );
    let report = std::fs::read_to_string(dir.path().join("mirotrail-demo/report.html")).unwrap();
    assert!(report.contains("data-view=\"events-by-category\""));
    // Both forms of the closing hint are shown; the installed form runs as printed.
    let installed = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("mirotrail query "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        stdout.contains("cargo run --release -- query --config mirotrail-demo/mirotrail.toml"),
        "{stdout}"
    );
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "\"{}\" query {installed}",
            env!("CARGO_BIN_EXE_mirotrail")
        ))
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("count(*)"),
        "{}",
        text(&out)
    );
}
