//! `mirotrail auth login`: OAuth 2.0's authorisation-code flow for expiring Miro tokens
//! (`docs/miro-api.md`, "Authentication"). The user opens the printed URL and approves;
//! the code comes back to a one-request loopback listener (or is pasted with `--paste` on
//! a headless server); it is exchanged for a pair at `{api_base}/v1/oauth/token`, and the
//! refresh token is written to `miro.refresh_token_file` (atomically, 0600).
//!
//! Invariants: the client secret and tokens are never printed; a callback whose `state`
//! differs from the one sent is refused (another site cannot inject its code).

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{ConfigArgs, Failure, load_config};
use crate::config::load_secret;
use crate::miro::token::write_refresh_token;

#[derive(Debug, Args)]
pub(crate) struct AuthArgs {
    #[command(subcommand)]
    command: AuthCommand,
}

#[derive(Debug, Subcommand)]
enum AuthCommand {
    /// Authorise the Miro app (`miro.client_id`) and write `miro.refresh_token_file`.
    ///
    /// Prints a URL to open in a browser. By default the browser is sent back to a
    /// listener on 127.0.0.1:--port (register `http://127.0.0.1:PORT/callback` as the
    /// app's redirect URI); with --paste, paste the code (or the whole address the
    /// browser ended on) instead, for a server without a browser.
    Login(LoginArgs),
}

#[derive(Debug, Args)]
struct LoginArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Read the code from standard input instead of listening for the redirect.
    #[arg(long)]
    paste: bool,
    /// Loopback port of the redirect listener (0: any free port).
    #[arg(long, default_value_t = 8976)]
    port: u16,
    /// The redirect URI registered for the app [default: http://127.0.0.1:PORT/callback].
    #[arg(long, value_name = "URI")]
    redirect_uri: Option<String>,
    /// Miro's authorisation page.
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://miro.com/oauth/authorize"
    )]
    authorize_url: String,
    /// The `[[orgs]]` entry whose app to authorise (needed when the config has several).
    #[arg(long, value_name = "NAME")]
    org: Option<String>,
}

pub(crate) async fn run(args: AuthArgs) -> Result<(), Failure> {
    match args.command {
        AuthCommand::Login(a) => login(a).await,
    }
}

async fn login(args: LoginArgs) -> Result<(), Failure> {
    let config = load_config(&args.config)?;
    let names = || {
        config
            .orgs
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let miro = match (&args.org, config.orgs.as_slice()) {
        (None, [only]) => &only.miro,
        (None, _) => {
            return Err(Failure::usage(anyhow!(
                "{} names several organisations; say whose app to authorise with --org NAME ({})",
                config.path.display(),
                names()
            )));
        }
        (Some(name), orgs) => match orgs.iter().find(|o| &o.name == name) {
            Some(o) => &o.miro,
            None => {
                return Err(Failure::usage(anyhow!(
                    "--org `{name}` is not an organisation of {} ({})",
                    config.path.display(),
                    names()
                )));
            }
        },
    };
    let Some(oauth) = miro.oauth.clone() else {
        return Err(Failure::usage(anyhow!(
            "`auth login` needs `miro.client_id` and `miro.refresh_token_file` in the config \
             (and the client secret in MIRO_CLIENT_SECRET or `miro.client_secret_file`)"
        )));
    };
    let secret = load_secret(&oauth.client_secret, "Miro client secret")?;
    let listener = if args.paste {
        None
    } else {
        Some(
            TcpListener::bind(("127.0.0.1", args.port))
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on 127.0.0.1:{} for the redirect; pick another --port \
                         (and register it as the app's redirect URI) or use --paste",
                        args.port
                    )
                })
                .map_err(Failure::runtime)?,
        )
    };
    let redirect_uri = match (&args.redirect_uri, &listener) {
        (Some(u), _) => u.clone(),
        (None, Some(l)) => format!(
            "http://127.0.0.1:{}/callback",
            l.local_addr().map_err(Failure::runtime)?.port()
        ),
        (None, None) => format!("http://127.0.0.1:{}/callback", args.port),
    };
    let state = format!("{:032x}", rand::random::<u128>());
    let mut url = url::Url::parse(&args.authorize_url)
        .map_err(|e| Failure::usage(anyhow!("--authorize-url is not a URL: {e}")))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &oauth.client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("state", &state);
    println!("Open this address in a browser and approve the app:\n{url}");
    let code = match listener {
        Some(l) => {
            println!("Waiting for the redirect on {redirect_uri} ...");
            receive_code(l, &state).await.map_err(Failure::runtime)?
        }
        None => {
            println!("Then paste the code (or the whole address the browser ended on):");
            paste_code(&state).await.map_err(Failure::runtime)?
        }
    };
    let refresh = exchange(
        &miro.api_base,
        &oauth.client_id,
        &secret,
        &code,
        &redirect_uri,
        miro.request_timeout,
    )
    .await
    .map_err(Failure::runtime)?;
    write_refresh_token(&oauth.refresh_token_file, &refresh).map_err(Failure::runtime)?;
    println!(
        "Saved the refresh token to {}; `mirotrail check` now uses it",
        oauth.refresh_token_file.display()
    );
    Ok(())
}

/// The code from a `code=` query (a pasted address) or the pasted code itself.
fn code_from(text: &str, state: &str) -> anyhow::Result<String> {
    let text = text.trim();
    let query = text.split_once('?').map(|(_, q)| q);
    let Some(query) = query else {
        if text.is_empty() {
            bail!("nothing was pasted");
        }
        return Ok(text.to_owned());
    };
    let pairs: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
    if let Some(error) = pairs.get("error") {
        bail!("Miro did not authorise the app: {error}");
    }
    if pairs.get("state").map(String::as_str) != Some(state) {
        bail!("the answer's `state` is not the one sent: start `auth login` again");
    }
    pairs
        .get("code")
        .cloned()
        .ok_or_else(|| anyhow!("the address holds no `code`"))
}

async fn paste_code(state: &str) -> anyhow::Result<String> {
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await??;
    code_from(&line, state)
}

/// Accepts connections until one brings the callback (at most 10 minutes).
async fn receive_code(listener: TcpListener, state: &str) -> anyhow::Result<String> {
    let wait = async {
        loop {
            let (mut stream, _) = listener.accept().await?;
            let mut buf = vec![0u8; 8192];
            let n = stream.read(&mut buf).await?;
            let head = String::from_utf8_lossy(&buf[..n]);
            let target = head
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("");
            if !target.starts_with("/callback") {
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await;
                continue;
            }
            let result = code_from(target, state);
            let body = match &result {
                Ok(_) => {
                    "mirotrail received the authorisation; you can close this page.".to_owned()
                }
                Err(e) => format!("mirotrail could not use this answer: {e}"),
            };
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
            return result;
        }
    };
    tokio::time::timeout(Duration::from_secs(600), wait)
        .await
        .map_err(|_| anyhow!("no redirect came within 10 minutes; run `auth login` again"))?
}

async fn exchange(
    api_base: &url::Url,
    client_id: &str,
    secret: &SecretString,
    code: &str,
    redirect_uri: &str,
    timeout: Duration,
) -> anyhow::Result<SecretString> {
    #[derive(serde::Deserialize)]
    struct Grant {
        refresh_token: String,
    }
    let url = format!("{}/v1/oauth/token", api_base.as_str().trim_end_matches('/'));
    let reply = reqwest::Client::builder()
        .user_agent(crate::net::USER_AGENT)
        .timeout(timeout)
        .build()?
        .post(&url)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("client_id", client_id),
            ("client_secret", secret.expose_secret()),
        ])
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = reply.status().as_u16();
    let body = reply.bytes().await?;
    if status != 200 {
        bail!(
            "Miro refused the code (HTTP {status}: {}): check `miro.client_id`, the client \
             secret and that the redirect URI is the app's registered one, then run `auth \
             login` again",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    let grant: Grant =
        serde_json::from_slice(&body).context("Miro's token answer is not the expected JSON")?;
    Ok(SecretString::from(grant.refresh_token))
}
