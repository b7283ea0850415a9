//! A new user's first hour: error messages that say each thing once, config files found
//! where expected, a starter config, the emulator banners, listen addresses.

use crate::support::*;

const AUDIT_ONLY: &str = "[sources.audit_logs]\ninitial_lookback = \"2h\"\n";

async fn small_env() -> Env {
    let now = mirotrail::timefmt::UnixMs::now();
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
/// standard error lines up to "Ctrl-C stops it.").
async fn start_miro_emulator(listen: &str, token: &str) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mirotrail"))
        .args([
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
            if line.contains("Ctrl-C stops it.") {
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
        drop(child);
    }
}
