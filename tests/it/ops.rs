//! Running as a service: `check` against every fault the emulators can produce, and the
//! `/metrics`, `/healthz` and `/readyz` endpoints of `run`.

use std::process::Output;

use mirotrail::emulator::azure::{AUDIT_DCR, AzureEmulator, AzureEmulatorConfig, CONTENT_DCR};
use mirotrail::timefmt::UnixMs;

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
