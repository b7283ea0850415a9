//! Running as a service: `check` against every fault the emulators can produce, and the
//! `/metrics`, `/healthz` and `/readyz` endpoints of `run`.

use std::process::Output;
use std::time::Duration;

use mirotrail_emulator::UnixMs;
use mirotrail_emulator::azure::{AUDIT_DCR, AzureEmulator, AzureEmulatorConfig, CONTENT_DCR};

use crate::support::*;

const BOTH: &str = "[sources.audit_logs]\ninitial_lookback = \"2h\"\n[sources.content_logs]\nenabled = true\ninitial_lookback = \"2h\"\n";

async fn small_env() -> Env {
    let now = UnixMs::now();
    Env::start(org(300, 100, now.minus(minutes(90)), now.minus(minutes(5)))).await
}

/// A Sentinel sink section pointing at the Azure emulator `base`, with the client secret
/// in the file `secret` (written with `secret_text`).
fn sentinel_section(
    env: &Env,
    base: &str,
    azure: &AzureEmulatorConfig,
    secret_text: &str,
) -> String {
    let secret = env.dir.path().join("secret");
    std::fs::write(&secret, secret_text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    format!(
        "[sinks.sentinel]\ntype = \"azure_logs_ingestion\"\nendpoint = \"{base}\"\n\
         audit_logs_dcr = \"{AUDIT_DCR}\"\ncontent_logs_dcr = \"{CONTENT_DCR}\"\n\
         authority_host = \"{base}\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\n\
         client_secret_file = \"secret\"\nrequest_timeout = \"5s\"\n",
        azure.tenant_id, azure.client_id
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The line of `check` output about `subject` (`ok       miro token: ...`).
fn line<'a>(out: &'a str, subject: &str) -> &'a str {
    out.lines()
        .find(|l| l[13.min(l.len())..].starts_with(&format!("{subject}: ")))
        .unwrap_or_else(|| panic!("no line for `{subject}` in:\n{out}"))
}

fn assert_line(out: &str, subject: &str, verdict: &str, needles: &[&str]) {
    let l = line(out, subject);
    assert!(l.starts_with(&format!("{verdict} ")), "want {verdict}: {l}");
    for n in needles {
        assert!(l.contains(n), "`{n}` missing from: {l}");
    }
}

async fn check(env: &Env, cfg: &std::path::Path, token: &str) -> Output {
    env.run(&["check", "--config", cfg.to_str().unwrap()], token)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_on_a_healthy_setup_and_says_what_it_verified() {
    let env = small_env().await;
    let azure_config = AzureEmulatorConfig::default();
    let azure = AzureEmulator::start(azure_config.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let sinks = sentinel_section(
        &env,
        &azure.base_url(),
        &azure_config,
        &azure_config.client_secret,
    ) + "[sinks.archive]\ntype = \"file\"\npath = \"archive\"\n[sinks.out]\ntype = \"stdout\"\n";
    let cfg = env.config(&format!("{BOTH}{sinks}"));
    let out = check(&env, &cfg, TOKEN).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let o = stdout(&out);
    assert_line(
        &o,
        "config",
        "ok",
        &["is valid", "audit_logs, content_logs"],
    );
    assert_line(
        &o,
        "miro token",
        "ok",
        &[
            "auditlogs:read contentlogs:export",
            "Northwind Traders",
            &env.org_id,
        ],
    );
    assert_line(
        &o,
        "miro scopes",
        "ok",
        &["`auditlogs:read`", "`contentlogs:export`"],
    );
    assert_line(&o, "miro organization", "ok", &["matches", &env.org_id]);
    assert_line(
        &o,
        "miro audit_logs",
        "ok",
        &["limit=1", "collection works"],
    );
    assert_line(&o, "miro content_logs", "ok", &["limit=1"]);
    assert_line(&o, "store", "ok", &["mirotrail.db", "writable"]);
    assert_line(&o, "sink archive", "ok", &["will be created"]);
    assert_line(&o, "sink out", "ok", &["standard output"]);
    assert_line(&o, "sink sentinel token", "ok", &["Entra issued a token"]);
    for (source, dcr) in [("audit_logs", AUDIT_DCR), ("content_logs", CONTENT_DCR)] {
        assert_line(
            &o,
            &format!("sink sentinel {source}"),
            "ok",
            &[dcr, "role verified", "nothing was written"],
        );
    }
    assert!(o.contains("0 problem(s)"), "{o}");
    // Nothing was written anywhere.
    assert_eq!(azure.stats().records_accepted, 0);
    assert!(!env.db().exists() && !env.dir.path().join("archive").exists());
    assert!(
        env.emu.stats().items_served <= 2,
        "one item per source at most"
    );
    azure.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_each_miro_fault_with_its_fix() {
    let env = small_env().await;
    let cfg = env.config(BOTH);

    // Missing scope: introspection shows it, and the request confirms it.
    let out = check(&env, &cfg, AUDIT_ONLY_TOKEN).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let o = stdout(&out);
    assert_line(&o, "miro token", "ok", &["auditlogs:read"]);
    assert_line(
        &o,
        "miro scopes",
        "problem",
        &["lacks `contentlogs:export`", "Company Admin"],
    );
    assert_line(&o, "miro audit_logs", "ok", &[]);
    assert_line(
        &o,
        "miro content_logs",
        "problem",
        &["403", "contentlogs:export"],
    );

    // No Enterprise Guard: the scopes are fine, content logs are refused.
    env.emu.set_enterprise_guard(false);
    let out = check(&env, &cfg, TOKEN).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let o = stdout(&out);
    assert_line(&o, "miro scopes", "ok", &[]);
    assert_line(
        &o,
        "miro content_logs",
        "problem",
        &["403", "Enterprise Guard"],
    );
    env.emu.set_enterprise_guard(true);

    // Wrong organization id: named with the right one.
    let wrong = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&env.org_id, "1234567890");
    let wrong_cfg = env.dir.path().join("wrong-org.toml");
    std::fs::write(&wrong_cfg, wrong).unwrap();
    let out = check(&env, &wrong_cfg, TOKEN).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let o = stdout(&out);
    assert_line(
        &o,
        "miro organization",
        "problem",
        &["`1234567890`", &format!("org_id = \"{}\"", env.org_id)],
    );
    assert_line(&o, "miro content_logs", "problem", &["404", "org_id"]);

    // Revoked token (or the SIEM toggle turned off): 401 with the toggle to check.
    env.emu.revoke_token(TOKEN);
    let out = check(&env, &cfg, TOKEN).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let o = stdout(&out);
    assert_line(
        &o,
        "miro token",
        "problem",
        &["401", "\"SIEM\"", "copy the token again"],
    );
    assert_line(
        &o,
        "miro audit_logs",
        "not verified",
        &["refused the token"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("problem(s) found"));

    // No token at all.
    let out = env
        .command(&["check", "--config", cfg.to_str().unwrap()], "")
        .env_remove("MIRO_TOKEN")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_line(&stdout(&out), "miro token", "problem", &["MIRO_TOKEN"]);

    // A config error is exit 2, before any check.
    let bad = env.dir.path().join("bad.toml");
    std::fs::write(&bad, "[service]\nlisten = \"not an address\"\n").unwrap();
    let out = check(&env, &bad, TOKEN).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("service.listen"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_each_azure_fault_with_its_fix() {
    let env = small_env().await;
    let azure_config = AzureEmulatorConfig::default();
    let azure = AzureEmulator::start(azure_config.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = azure.base_url();
    let good = sentinel_section(&env, &base, &azure_config, &azure_config.client_secret);
    let audit = "[sources.audit_logs]\ninitial_lookback = \"2h\"\n";

    // Bad secret.
    let cfg = env.config(&format!(
        "{audit}{}",
        sentinel_section(&env, &base, &azure_config, "not-the-secret")
    ));
    let out = check(&env, &cfg, TOKEN).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let o = stdout(&out);
    assert_line(&o, "miro audit_logs", "ok", &[]);
    assert_line(
        &o,
        "sink sentinel token",
        "problem",
        &["wrong client secret", "AADSTS7000215"],
    );
    assert_line(&o, "sink sentinel audit_logs", "not verified", &["skipped"]);
    sentinel_section(&env, &base, &azure_config, &azure_config.client_secret);

    // Role missing.
    azure.set_roles_granted(false);
    let cfg = env.config(&format!("{audit}{good}"));
    let out = check(&env, &cfg, TOKEN).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let o = stdout(&out);
    assert_line(&o, "sink sentinel token", "ok", &[]);
    assert_line(
        &o,
        "sink sentinel audit_logs",
        "problem",
        &["403", "\"Monitoring Metrics Publisher\"", AUDIT_DCR],
    );
    azure.set_roles_granted(true);

    // Wrong DCR.
    let wrong_dcr = "dcr-ffffffffffffffffffffffffffffffff";
    let cfg = env.config(&format!("{audit}{}", good.replace(AUDIT_DCR, wrong_dcr)));
    let out = check(&env, &cfg, TOKEN).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_line(
        &stdout(&out),
        "sink sentinel audit_logs",
        "problem",
        &["404", wrong_dcr, "immutable id"],
    );

    // Wrong endpoint (nothing listens there); the token still comes from Entra.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let cfg = env.config(&format!(
        "{audit}{}",
        good.replace(
            &format!("endpoint = \"{base}\""),
            &format!("endpoint = \"{dead_url}\"")
        )
    ));
    let out = check(&env, &cfg, TOKEN).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let o = stdout(&out);
    assert_line(&o, "sink sentinel token", "ok", &[]);
    assert_line(
        &o,
        "sink sentinel audit_logs",
        "problem",
        &["cannot reach the logs ingestion endpoint", "`endpoint`"],
    );

    // Missing secret file.
    std::fs::remove_file(env.dir.path().join("secret")).unwrap();
    let cfg = env.config(&format!("{audit}{good}"));
    let out = check(&env, &cfg, TOKEN).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_line(
        &stdout(&out),
        "sink sentinel token",
        "problem",
        &["client secret"],
    );

    assert_eq!(azure.stats().records_accepted, 0);
    azure.shutdown().await;
}

/// A running `mirotrail run` whose standard error is collected line by line.
pub(crate) struct Running {
    child: tokio::process::Child,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    base: String,
}

impl Running {
    pub(crate) async fn start(env: &Env, cfg: &std::path::Path, token: &str) -> Running {
        use tokio::io::AsyncBufReadExt;
        let mut child = env
            .command(&["run", "--config", cfg.to_str().unwrap()], token)
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let collected = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                collected.lock().unwrap().push(line);
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let base = loop {
            let found = stderr.lock().unwrap().iter().find_map(|l| {
                let at = l.find("url=http://")?;
                Some(l[at + 4..].split_whitespace().next()?.to_string())
            });
            if let Some(base) = found {
                break base;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no listener announced: {:?}",
                stderr.lock().unwrap()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        Running {
            child,
            stderr,
            base,
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("{}{path}", self.base)).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Polls `path` until `pred` holds (30 s at most).
    pub(crate) async fn wait_for(
        &self,
        path: &str,
        pred: impl Fn(u16, &str) -> bool,
    ) -> (u16, String) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (status, body) = self.get(path).await;
            if pred(status, &body) {
                return (status, body);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{path} stayed {status}: {body}\n{}",
                self.stderr.lock().unwrap().join("\n")
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub(crate) async fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(20), self.child.wait())
            .await
            .expect("stopped within 20 s of SIGTERM")
            .unwrap()
    }
}

/// The value of the sample `name{labels}` (exactly as rendered), if present.
pub(crate) fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn must(metrics: &str, series: &str) -> f64 {
    sample(metrics, series).unwrap_or_else(|| panic!("no sample `{series}` in:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_metrics_and_readiness_and_reports_a_revoked_token_and_a_missing_role() {
    let now = UnixMs::now();
    // Events keep arriving during the test.
    let env = Env::start(org(
        6000,
        600,
        now.minus(minutes(10)),
        now.plus(minutes(10)),
    ))
    .await;
    let azure_config = AzureEmulatorConfig::default();
    let azure = AzureEmulator::start(azure_config.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let fast = "initial_lookback = \"15m\"\nsettle_lag = \"0s\"\noverlap = \"5s\"\npoll_interval = \"1s\"\n";
    let cfg = env.config(&format!(
        "[service]\nlisten = \"127.0.0.1:0\"\n\
         [sources.audit_logs]\n{fast}[sources.content_logs]\nenabled = true\n{fast}\
         [sinks.archive]\ntype = \"file\"\npath = \"archive\"\n{}",
        sentinel_section(
            &env,
            &azure.base_url(),
            &azure_config,
            &azure_config.client_secret
        )
    ));
    let run = Running::start(&env, &cfg, TOKEN).await;

    let (_, ready) = run.wait_for("/readyz", |s, _| s == 200).await;
    assert_eq!(ready, "ready\n");
    assert_eq!(run.get("/healthz").await, (200, "ok\n".into()));
    // Let delivery catch up (each sink has delivered rows of each source: the sinks and
    // sources run apart, so one series being up says nothing of the others), then read
    // every metric.
    let (_, m) = run
        .wait_for("/metrics", |_, m| {
            ["archive", "sentinel"].iter().all(|sink| {
                ["audit_logs", "content_logs"].iter().all(|source| {
                    sample(
                        m,
                        &format!(
                            "mirotrail_sink_delivered_rows_total{{sink=\"{sink}\",source=\"{source}\"}}"
                        ),
                    )
                    .is_some_and(|v| v > 0.0)
                })
            })
        })
        .await;
    for source in ["audit_logs", "content_logs"] {
        let l = format!("source=\"{source}\"");
        // Per-source series carry the organisation (`default` with `[miro]`).
        let o = format!("org=\"default\",{l}");
        assert!(must(&m, &format!("mirotrail_events_collected_total{{{o}}}")) > 0.0);
        assert!(must(&m, &format!("mirotrail_miro_pages_total{{{o}}}")) > 0.0);
        assert!(
            must(
                &m,
                &format!("mirotrail_miro_requests_total{{{o},status=\"200\"}}")
            ) > 0.0
        );
        let lag = must(&m, &format!("mirotrail_watermark_lag_seconds{{{o}}}"));
        assert!((0.0..60.0).contains(&lag), "{lag}");
        let last = must(
            &m,
            &format!("mirotrail_source_last_success_timestamp_seconds{{{o}}}"),
        );
        assert!(
            (last - UnixMs::now().0 as f64 / 1000.0).abs() < 60.0,
            "{last}"
        );
        for sink in ["archive", "sentinel"] {
            let s = format!("sink=\"{sink}\",{l}");
            assert!(must(&m, &format!("mirotrail_sink_delivered_rows_total{{{s}}}")) > 0.0);
            assert!(must(&m, &format!("mirotrail_sink_pending_rows{{{s}}}")) >= 0.0);
        }
    }
    for sink in ["archive", "sentinel"] {
        assert!(
            must(
                &m,
                &format!("mirotrail_sink_last_success_timestamp_seconds{{sink=\"{sink}\"}}")
            ) > 0.0
        );
    }
    assert!(
        must(&m, "mirotrail_miro_credits_remaining{org=\"default\"}") >= 0.0,
        "{m}"
    );
    // Half of what X-RateLimit-Limit says (the emulator without a limit sends a huge one).
    assert!(
        must(
            &m,
            "mirotrail_miro_credits_allowance_per_minute{org=\"default\"}"
        ) >= 50_000.0
    );
    assert_eq!(must(&m, "mirotrail_ready"), 1.0);
    assert!(m.contains("mirotrail_build_info{version="), "{m}");
    // Failure series exist at zero from the start, so alerts on their rate work.
    for sink in ["archive", "sentinel"] {
        for cause in ["permanent", "throttled", "transient"] {
            let series = format!(
                "mirotrail_sink_delivery_failures_total{{sink=\"{sink}\",cause=\"{cause}\"}}"
            );
            assert_eq!(must(&m, &series), 0.0);
        }
    }
    assert_eq!(
        must(
            &m,
            "mirotrail_source_cycle_failures_total{org=\"default\",source=\"audit_logs\",cause=\"permanent\"}"
        ),
        0.0
    );

    // The role is taken away: the sentinel sink stops draining, at once (permanent).
    azure.set_roles_granted(false);
    let (_, why) = run
        .wait_for("/readyz", |s, b| s == 503 && b.contains("sink sentinel"))
        .await;
    assert!(
        why.contains("blocked until fixed") && why.contains("Monitoring Metrics Publisher"),
        "{why}"
    );
    let (_, m) = run.get("/metrics").await;
    assert!(
        must(
            &m,
            "mirotrail_sink_delivery_failures_total{sink=\"sentinel\",cause=\"permanent\"}"
        ) >= 1.0
    );
    assert_eq!(must(&m, "mirotrail_ready"), 0.0);
    azure.set_roles_granted(true);

    // The token is revoked mid-run: not ready with the reason, still alive, and an error
    // with the remedy is logged every cycle.
    env.emu.revoke_token(TOKEN);
    let (_, why) = run
        .wait_for("/readyz", |s, b| {
            s == 503 && b.contains("source audit_logs") && b.contains("source content_logs")
        })
        .await;
    assert!(
        why.contains("source audit_logs: blocked until fixed: Miro rejected the token (401"),
        "{why}"
    );
    assert!(
        why.contains("\"SIEM\"") && why.contains("source content_logs"),
        "{why}"
    );
    assert_eq!(run.get("/healthz").await, (200, "ok\n".into()));
    let blocked = |run: &Running| {
        run.stderr()
            .lines()
            .filter(|l| {
                l.contains("collection is blocked until this is fixed")
                    && l.contains("audit_logs")
                    && l.contains("SIEM")
            })
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while blocked(&run) < 3 {
        assert!(std::time::Instant::now() < deadline, "{}", run.stderr());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (_, m) = run.get("/metrics").await;
    assert!(
        must(
            &m,
            "mirotrail_source_cycle_failures_total{org=\"default\",source=\"audit_logs\",cause=\"permanent\"}"
        ) >= 3.0
    );
    assert!(
        must(
            &m,
            "mirotrail_miro_requests_total{org=\"default\",source=\"audit_logs\",status=\"401\"}"
        ) >= 3.0
    );

    let status = run.stop().await;
    assert!(status.success(), "{status:?}");
    azure.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_from_config_rust_log_filters_and_a_busy_port() {
    let env = small_env().await;
    let audit = "[sources.audit_logs]\ninitial_lookback = \"2h\"\n";

    // JSON from the config file; RUST_LOG=debug shows debug lines.
    let cfg = env.config(&format!(
        "[service]\nlisten = \"\"\nlog_format = \"json\"\n{audit}"
    ));
    let out = env
        .command(&["run", "--once", "--config", cfg.to_str().unwrap()], TOKEN)
        .env("RUST_LOG", "mirotrail=debug")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().count() > 2, "{err}");
    for l in err.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string(), "{l}");
    }
    assert!(err.contains("\"level\":\"DEBUG\""), "{err}");
    assert!(
        !err.contains("url=http"),
        "listen = \"\" serves nothing: {err}"
    );

    // `--log-format text` wins over the config; RUST_LOG=warn hides the info lines.
    let out = env
        .command(
            &[
                "run",
                "--once",
                "--log-format",
                "text",
                "--config",
                cfg.to_str().unwrap(),
            ],
            TOKEN,
        )
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("INFO") && !err.contains('{'), "{err}");

    // A port in use is a runtime error that names the key.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = env.config(&format!(
        "[service]\nlisten = \"{}\"\n{audit}",
        busy.local_addr().unwrap()
    ));
    let out = env
        .run(&["run", "--once", "--config", cfg.to_str().unwrap()], TOKEN)
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen on") && err.contains("service.listen"),
        "{err}"
    );
}

#[test]
fn completions_man_page_and_help_come_from_the_cli_definition() {
    let bin = env!("CARGO_BIN_EXE_mirotrail");
    let out = |args: &[&str]| {
        let o = std::process::Command::new(bin).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    for shell in ["bash", "zsh", "fish"] {
        let script = out(&["completions", shell]);
        for word in ["check", "run", "config", "log-format"] {
            assert!(script.contains(word), "{shell}: no `{word}`");
        }
    }
    let man = out(&["manpage"]);
    assert!(
        man.contains(".TH mirotrail 1") && man.contains("check"),
        "{man}"
    );
    for cmd in [
        "run",
        "check",
        "status",
        "query",
        "demo",
        "emulate",
        "template",
        "completions",
        "manpage",
    ] {
        let help = out(&[cmd, "--help"]);
        assert!(help.contains("Usage: mirotrail"), "{cmd}: {help}");
    }
    let top = out(&["--help"]);
    assert!(
        top.contains("Exit codes") && top.contains("mirotrail check"),
        "{top}"
    );
}

#[test]
fn the_packaged_config_is_valid_and_the_unit_is_hardened() {
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dist");
    let config = mirotrail::config::Config::load(&dist.join("mirotrail.toml")).unwrap();
    assert_eq!(
        config.service.listen,
        Some("127.0.0.1:9464".parse().unwrap())
    );
    assert_eq!(
        config.store_path,
        std::path::Path::new("/var/lib/mirotrail/mirotrail.db")
    );
    let unit = std::fs::read_to_string(dist.join("mirotrail.service")).unwrap();
    assert_holds(
        &unit,
        "the unit",
        &[
            "DynamicUser=yes",
            "StateDirectory=mirotrail",
            "LoadCredential=miro-token:",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "CapabilityBoundingSet=\n",
            "Restart=on-failure",
        ],
    );
    // The token the unit hands over is where the config reads it.
    assert!(
        std::fs::read_to_string(dist.join("mirotrail.toml"))
            .unwrap()
            .contains("token_file = \"/run/credentials/mirotrail.service/miro-token\"")
    );
    // The container image's config: the store on the volume, /healthz on the port the
    // image's HEALTHCHECK asks.
    let image = mirotrail::config::Config::load(&dist.join("container.toml")).unwrap();
    assert_eq!(
        image.store_path,
        std::path::Path::new("/var/lib/mirotrail/mirotrail.db")
    );
    assert_eq!(image.service.listen, Some("0.0.0.0:9464".parse().unwrap()));
    let containerfile = std::fs::read_to_string(dist.join("Containerfile")).unwrap();
    assert_holds(
        &containerfile,
        "the Containerfile",
        &[
            "VOLUME /var/lib/mirotrail\n",
            "USER 10001:10001\n",
            "STOPSIGNAL SIGTERM\n",
            "cargo build --release --locked",
            "COPY dist/container.toml /etc/mirotrail/mirotrail.toml\n",
            "/dev/tcp/127.0.0.1/9464",
        ],
    );
}

/// Each of `lines` is somewhere in `text` (the file named `what`).
fn assert_holds(text: &str, what: &str, lines: &[&str]) {
    for line in lines {
        assert!(text.contains(line), "{line:?} missing from {what}");
    }
}

/// The `[Service]` lines of a unit from its `# Hardening` comment on: what confines it.
fn hardening(unit: &str) -> Vec<&str> {
    unit.lines()
        .skip_while(|l| !l.starts_with("# Hardening"))
        .take_while(|l| !l.starts_with('['))
        .filter(|l| l.contains('=') && !l.starts_with('#'))
        .collect()
}

#[test]
fn the_template_unit_runs_one_confined_instance_per_config() {
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dist");
    let single = std::fs::read_to_string(dist.join("mirotrail.service")).unwrap();
    let template = std::fs::read_to_string(dist.join("mirotrail@.service")).unwrap();
    let confined = hardening(&single);
    assert!(confined.len() > 20, "{confined:?}");
    assert_eq!(
        hardening(&template),
        confined,
        "the same hardening as mirotrail.service"
    );
    assert_holds(
        &template,
        "the template",
        &[
            "ExecStart=/usr/local/bin/mirotrail run --config /etc/mirotrail/%i.toml\n",
            "DynamicUser=yes\n",
            "StateDirectory=mirotrail/%i\n",
            "StateDirectoryMode=0700\n",
            "WorkingDirectory=%S/mirotrail/%i\n",
            "UMask=0077\n",
            "LoadCredential=mirotrail:/etc/mirotrail/credentials/%i\n",
            "Restart=on-failure\n",
            "TimeoutStopSec=60s\n",
        ],
    );
    // What the comments tell the admin to write matches what the unit hands over.
    assert!(
        template.contains(
            "token_file = \"/run/credentials/mirotrail@acme.service/mirotrail_miro-token\""
        )
    );
}

/// `systemd-analyze verify` on both units (each with `ExecStart` pointed at the built
/// binary, since verify checks that it exists); any line it prints about a unit fails the
/// test, since systemd ignores a key it cannot parse and says so only as a warning.
#[test]
fn systemd_analyze_verify_finds_nothing_to_say_about_the_units() {
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dist");
    if std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed: the units were not verified");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (file, verify_as) in [
        ("mirotrail.service", "mirotrail.service"),
        ("mirotrail@.service", "mirotrail@acme.service"),
    ] {
        let unit = std::fs::read_to_string(dist.join(file))
            .unwrap()
            .replace("/usr/local/bin/mirotrail", env!("CARGO_BIN_EXE_mirotrail"));
        std::fs::write(dir.path().join(file), unit).unwrap();
        let out = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(dir.path().join(verify_as))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let about_unit: Vec<&str> = text.lines().filter(|l| l.contains("mirotrail")).collect();
        assert!(
            out.status.success() && about_unit.is_empty(),
            "systemd-analyze verify {verify_as}: {:?}\n{text}",
            out.status
        );
    }
}

/// Items stored with only some columns derived were invisible to monitoring (v0.1 lost
/// them silently); `/metrics` now counts them per source, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_items_stored_partially_derived() {
    let now = UnixMs::now();
    let share = 0.1;
    let audit = 500u64;
    let mut config = org(audit, 0, now.minus(minutes(30)), now.minus(minutes(2)));
    config.faults = mirotrail_emulator::miro::Faults {
        hostile_item_share: share,
        ..Default::default()
    };
    let env = Env::start(config).await;
    let hostile = (0..audit)
        .filter(|&i| env.emu.org().audit_event_is_hostile(i, share))
        .count();
    assert!(hostile > 0);
    let cfg = env.config(
        "[service]\nlisten = \"127.0.0.1:0\"\n[sources.audit_logs]\ninitial_lookback = \"1h\"\n\
         poll_interval = \"1s\"\noverlap = \"1h\"\n",
    );
    let run = Running::start(&env, &cfg, TOKEN).await;
    let series = "mirotrail_items_partially_derived_total{org=\"default\",source=\"audit_logs\"}";
    let (_, m) = run
        .wait_for("/metrics", |_, m| {
            sample(
                m,
                "mirotrail_events_collected_total{org=\"default\",source=\"audit_logs\"}",
            )
            .is_some_and(|v| v >= audit as f64)
        })
        .await;
    assert_eq!(must(&m, series), hostile as f64, "{m}");
    // A second poll re-reads the overlap: the same items are not counted again.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (_, m) = run.get("/metrics").await;
    assert_eq!(must(&m, series), hostile as f64);
    assert!(run.stderr().contains("only some columns derived"));
    run.stop().await;
}

/// Another program (a sqlite3 shell, a backup) holds the store's write lock for seconds
/// while `run` collects and delivers to three sinks: every store call waits off the
/// runtime's worker threads, so `/healthz` and `/metrics` keep answering promptly, and
/// collection and delivery go on once the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_on_the_store_does_not_stall_the_runtime() {
    let now = UnixMs::now();
    // Events keep arriving during the test.
    let env = Env::start(org(
        6000,
        600,
        now.minus(minutes(10)),
        now.plus(minutes(10)),
    ))
    .await;
    let fast = "initial_lookback = \"15m\"\nsettle_lag = \"0s\"\noverlap = \"5s\"\npoll_interval = \"1s\"\n";
    let cfg = env.config(&format!(
        "[service]\nlisten = \"127.0.0.1:0\"\n\
         [sources.audit_logs]\n{fast}[sources.content_logs]\nenabled = true\n{fast}\
         [sinks.a]\ntype = \"file\"\npath = \"a\"\n\
         [sinks.b]\ntype = \"file\"\npath = \"b\"\n\
         [sinks.c]\ntype = \"file\"\npath = \"c\"\n"
    ));
    let run = Running::start(&env, &cfg, TOKEN).await;
    let delivered = |m: &str| {
        sample(
            m,
            "mirotrail_sink_delivered_rows_total{sink=\"a\",source=\"audit_logs\"}",
        )
        .unwrap_or(0.0)
    };
    run.wait_for("/metrics", |_, m| delivered(m) > 0.0).await;

    let hold = Duration::from_secs(5);
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let db = env.db();
    let locker = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(hold);
        conn.execute_batch("ROLLBACK").unwrap();
    });
    tokio::task::spawn_blocking(move || locked_rx.recv().unwrap())
        .await
        .unwrap();
    let locked_at = std::time::Instant::now();
    let mut slowest = (Duration::ZERO, "");
    let mut requests = 0;
    while locked_at.elapsed() < hold - Duration::from_millis(500) {
        for path in ["/healthz", "/metrics"] {
            let t = std::time::Instant::now();
            let (status, _) = run.get(path).await;
            assert_eq!(status, 200, "{path}");
            slowest = slowest.max((t.elapsed(), path));
            requests += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::task::spawn_blocking(move || locker.join().unwrap())
        .await
        .unwrap();
    assert!(
        slowest.0 < Duration::from_millis(1500),
        "{} took {:?} while the store was locked ({requests} requests)\n{}",
        slowest.1,
        slowest.0,
        run.stderr()
    );
    // Collection and delivery go on after the lock is released, nothing failed.
    let before = delivered(&run.get("/metrics").await.1);
    run.wait_for("/metrics", |_, m| delivered(m) > before).await;
    assert!(
        !run.stderr().contains("ERROR"),
        "an error while the store was locked:\n{}",
        run.stderr()
    );
    assert!(run.stop().await.success());
}
