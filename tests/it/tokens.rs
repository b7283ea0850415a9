//! Expiring Miro tokens: mirotrail refreshes them with the app's credentials, keeps the
//! rotated refresh token on disk before using the new access token, and survives kills
//! around refreshes (`MIROTRAIL_TOKEN_KILLS`, default 12; `scripts/token-harness` runs a
//! long one).

use std::time::Duration;

use mirotrail_emulator::UnixMs;
use mirotrail_emulator::miro::OAuthApp;

use crate::support::*;

const CLIENT_ID: &str = "3458764500000000042";
const CLIENT_SECRET: &str = "emu-app-secret-4c1d";

fn app(lifetime: Duration) -> OAuthApp {
    OAuthApp {
        client_id: CLIENT_ID.to_owned(),
        client_secret: CLIENT_SECRET.to_owned(),
        scopes: vec!["auditlogs:read".to_owned(), "contentlogs:export".to_owned()],
        access_lifetime: lifetime,
    }
}

/// An env whose emulator issues access tokens living `lifetime`, a first refresh token
/// in `refresh-token`, and a config using them (no static token).
async fn expiring_env(
    audit: u64,
    lifetime: Duration,
    extra: &str,
) -> (Env, std::path::PathBuf, UnixMs, UnixMs) {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(60)), now.minus(minutes(5)));
    let env = Env::start(org(audit, 0, start, end)).await;
    env.emu.enable_oauth(app(lifetime));
    std::fs::write(
        env.dir.path().join("refresh-token"),
        env.emu.issue_refresh_token(),
    )
    .unwrap();
    let cfg = env.config(&format!(
        "[sources.audit_logs]\ninitial_lookback = \"2h\"\npage_size = 50\n{extra}"
    ));
    // `[miro]` comes first in the file: add the expiring-token keys to it.
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        "[miro]\n",
        &format!("[miro]\nclient_id = \"{CLIENT_ID}\"\nrefresh_token_file = \"refresh-token\"\n"),
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    (env, cfg, start, end)
}

fn command(env: &Env, args: &[&str]) -> tokio::process::Command {
    let mut cmd = env.command(args, "");
    cmd.env_remove("MIRO_TOKEN")
        .env("MIRO_CLIENT_SECRET", CLIENT_SECRET);
    cmd
}

#[tokio::test]
async fn expiring_tokens_are_refreshed_and_the_rotated_refresh_token_is_kept() {
    let (env, cfg, start, end) = expiring_env(400, Duration::from_secs(3600), "").await;
    let file = env.dir.path().join("refresh-token");
    let first = std::fs::read_to_string(&file).unwrap();
    let args = ["run", "--config", cfg.to_str().unwrap(), "--once"];
    let out = command(&env, &args).output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let second = std::fs::read_to_string(&file).unwrap();
    assert_ne!(first, second, "the rotated refresh token was written");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let audit = expected_audit(&env.emu, start, end);
    assert_exactly_once(&env.db(), "MiroAuditLogs_CL", &audit);
    // The chain goes on: a second process refreshes with the saved token.
    let out = command(&env, &args).output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stats = env.emu.oauth_stats();
    assert_eq!((stats.refreshes, stats.rejected_refresh_tokens), (2, 0));

    // `check` names the token type and its times.
    let out = command(&env, &["check", "--config", cfg.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let report = text(&out);
    assert!(
        report.contains("expiring: the access token expires in"),
        "{report}"
    );
    assert!(!report.contains(CLIENT_SECRET), "the secret is never shown");
}

#[tokio::test]
async fn a_dead_refresh_token_stops_with_a_message_naming_auth_login() {
    let (env, cfg, _, _) = expiring_env(50, Duration::from_secs(3600), "").await;
    std::fs::write(env.dir.path().join("refresh-token"), "emu-rt-not-issued").unwrap();
    let out = command(&env, &["run", "--config", cfg.to_str().unwrap(), "--once"])
        .output()
        .await
        .unwrap();
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("mirotrail auth login"), "{all}");
}

#[tokio::test]
async fn half_configured_expiring_tokens_are_refused_with_the_missing_key() {
    let (env, cfg, _, _) = expiring_env(10, Duration::from_secs(3600), "").await;
    let text_cfg = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("refresh_token_file = \"refresh-token\"\n", "");
    std::fs::write(&cfg, text_cfg).unwrap();
    let out = command(&env, &["run", "--config", cfg.to_str().unwrap(), "--once"])
        .output()
        .await
        .unwrap();
    let all = text(&out);
    assert!(!out.status.success());
    assert!(all.contains("refresh_token_file"), "{all}");
}

/// Kills `mirotrail run` at random moments while access tokens live 2 s (a refresh at
/// every start and every 1.6 s), restarting each time. A broken chain (the saved refresh
/// token refused) is counted, re-authorised as an admin would, and reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_around_refreshes_keep_the_refresh_chain() {
    let kills_wanted = env_u64("MIROTRAIL_TOKEN_KILLS", 12);
    let seed = env_u64("MIROTRAIL_TOKEN_SEED", UnixMs::now().0.unsigned_abs() | 1);
    let (env, cfg, _, _) = expiring_env(
        3000,
        Duration::from_secs(2),
        "poll_interval = \"1s\"\nsettle_lag = \"0s\"\n",
    )
    .await;
    let file = env.dir.path().join("refresh-token");
    let args = ["run", "--config", cfg.to_str().unwrap()];
    let mut x = seed;
    let mut breaks = 0u64;
    let began = std::time::Instant::now();
    for _ in 0..kills_wanted {
        let rejected_before = env.emu.oauth_stats().rejected_refresh_tokens;
        let mut child = env.spawn(command(&env, &args));
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        tokio::time::sleep(Duration::from_millis(20 + x % 2500)).await;
        let exited = child.try_wait().unwrap();
        child.start_kill().unwrap();
        let _ = child.wait().await;
        if env.emu.oauth_stats().rejected_refresh_tokens > rejected_before || exited.is_some() {
            breaks += 1;
            std::fs::write(&file, env.emu.issue_refresh_token()).unwrap();
        }
    }
    let out = command(&env, &["run", "--config", cfg.to_str().unwrap(), "--once"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stats = env.emu.oauth_stats();
    eprintln!(
        "token harness (seed {seed}): {kills_wanted} SIGKILLs, {} refreshes, {breaks} broken \
         chains ({} refused refresh tokens); {:.1}s",
        stats.refreshes,
        stats.rejected_refresh_tokens,
        began.elapsed().as_secs_f64()
    );
    assert!(
        stats.refreshes > kills_wanted,
        "every start refreshes: {} refreshes",
        stats.refreshes
    );
    // Persisting before use leaves only the in-flight answer and a file write exposed:
    // a break at most kills would mean the order is wrong.
    assert!(
        breaks * 2 <= kills_wanted,
        "{breaks} broken chains in {kills_wanted} kills"
    );
}

/// Another client refreshes the chain under a running `run` (as `check` would): the
/// process's access token dies with the old pair, Miro answers 401, and `run` refreshes
/// once from the file, which already holds the new refresh token, and goes on.
#[tokio::test]
async fn a_401_after_a_refresh_elsewhere_is_ridden_out_by_one_refresh_from_the_file() {
    let (env, cfg, _, _) = expiring_env(
        200,
        Duration::from_secs(3600),
        "poll_interval = \"1s\"\nsettle_lag = \"0s\"\n",
    )
    .await;
    let file = env.dir.path().join("refresh-token");
    let mut child = env.spawn(command(&env, &["run", "--config", cfg.to_str().unwrap()]));
    let wait_for = |n: u64| {
        let emu = env.emu.clone();
        async move {
            for _ in 0..100 {
                if emu.oauth_stats().refreshes >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("no refresh number {n}");
        }
    };
    wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let old = std::fs::read_to_string(&file).unwrap();
    let reply: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/oauth/token", env.emu.base_url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", old.trim()),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    std::fs::write(&file, reply["refresh_token"].as_str().unwrap()).unwrap();
    let before = env.emu.stats().by_status.get(&401).copied().unwrap_or(0);
    wait_for(3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(child.try_wait().unwrap().is_none(), "run goes on");
    let stats = env.emu.oauth_stats();
    assert_eq!((stats.refreshes, stats.rejected_refresh_tokens), (3, 0));
    assert!(
        env.emu.stats().by_status.get(&401).copied().unwrap_or(0) > before,
        "the old access token was refused once"
    );
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

/// `auth login` end to end: the test plays the browser (follows the printed URL through
/// the emulator's authorisation page to the loopback listener); the refresh token it
/// writes then collects. `--paste` takes the address the browser ended on.
#[tokio::test]
async fn auth_login_writes_a_working_refresh_token_by_redirect_and_by_paste() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (env, cfg, _, _) = expiring_env(100, Duration::from_secs(3600), "").await;
    let file = env.dir.path().join("refresh-token");
    std::fs::remove_file(&file).unwrap();
    let authorize = format!("{}/oauth/authorize", env.emu.base_url());
    let login = |extra: &[&str]| {
        let mut args = vec![
            "auth",
            "login",
            "--config",
            cfg.to_str().unwrap(),
            "--authorize-url",
            &authorize,
        ];
        args.extend_from_slice(extra);
        let mut cmd = command(&env, &args);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let first_url = |child: &mut tokio::process::Child| {
        let stdout = child.stdout.take().unwrap();
        async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.starts_with("http") {
                    // Keep reading, so the child's later lines have somewhere to go.
                    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                    return line;
                }
            }
            panic!("no URL printed");
        }
    };

    // Redirect to the loopback listener.
    let mut child = login(&["--port", "0"]);
    let url = first_url(&mut child).await;
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("you can close"));
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert_eq!(env.emu.oauth_stats().code_exchanges, 1);
    let out = command(&env, &["run", "--config", cfg.to_str().unwrap(), "--once"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    // Paste the address the browser ended on.
    let mut child = login(&["--paste", "--redirect-uri", "http://127.0.0.1:9/callback"]);
    let url = first_url(&mut child).await;
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = no_follow.get(&url).send().await.unwrap();
    let landed = answer.headers()["location"].to_str().unwrap().to_owned();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{landed}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.emu.oauth_stats().code_exchanges, 2);
    let out = command(&env, &["run", "--config", cfg.to_str().unwrap(), "--once"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

/// Two processes on one refresh-token file (`check` beside `run`, or two instances of one
/// app) refreshing at the same moment: without a lock across processes both would send the
/// same refresh token and Miro would refuse the second, leaving one of them stopped. Each
/// provider here stands for a process (the lock is a file lock, per open file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_refreshing_one_chain_at_once_both_succeed() {
    use mirotrail::miro::{ExpiringTokenConfig, TokenProvider};
    let (env, _cfg, _, _) = expiring_env(10, Duration::from_secs(3600), "").await;
    let file = env.dir.path().join("refresh-token");
    let provider = || {
        TokenProvider::expiring(
            ExpiringTokenConfig {
                token_url: format!("{}/v1/oauth/token", env.emu.base_url()),
                client_id: CLIENT_ID.to_owned(),
                client_secret: secrecy::SecretString::from(CLIENT_SECRET),
                refresh_token_file: file.clone(),
            },
            Duration::from_secs(10),
        )
    };
    let (a, b) = (provider(), provider());
    let rounds = 15;
    for round in 0..rounds {
        let (ta, tb) = tokio::join!(a.bearer(), b.bearer());
        let ta = ta.unwrap_or_else(|e| panic!("round {round}, first: {e}"));
        let tb = tb.unwrap_or_else(|e| panic!("round {round}, second: {e}"));
        // Forget both access tokens, so that the next round refreshes in both again.
        a.rejected(&ta).await;
        b.rejected(&tb).await;
    }
    let stats = env.emu.oauth_stats();
    assert_eq!(
        (stats.refreshes, stats.rejected_refresh_tokens),
        (2 * rounds, 0)
    );
}
