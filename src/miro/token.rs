//! Where the bearer token of every Miro call comes from: a static token, or an expiring
//! access token obtained by refresh (`POST /v1/oauth/token`, see `docs/miro-api.md`,
//! "Authentication").
//!
//! Invariants:
//! - One `TokenProvider` (cloned) serves every Miro call of a process; its refreshes are
//!   serialised by one async lock, so a process never refreshes one chain twice at once
//!   (a refresh invalidates the old pair); across processes sharing the refresh-token
//!   file, a file lock (`<file>.lock`) held from reading the file to writing the new
//!   token does the same.
//! - The NEW refresh token is persisted (temp file 0600, fsync, rename, fsync of the
//!   folder) BEFORE the new access token is used. A crash after Miro rotated the pair and
//!   before the rename completes loses the chain: that window is one HTTP answer plus one
//!   small file write (RELIABILITY.md, "Expiring tokens").
//! - An access token is refreshed `REFRESH_MARGIN` before it expires (or at a fifth of a
//!   short lifetime), and once more when Miro answers 401 to it.
//! - Secrets (client secret, tokens) are held in `SecretString` and never formatted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Refresh this long before the access token expires (Miro's tokens live an hour).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(120);

/// The bearer token source shared by every Miro call of a process.
#[derive(Clone)]
pub struct TokenProvider(Kind);

#[derive(Clone)]
enum Kind {
    Static(SecretString),
    Expiring(Arc<Refresher>),
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Kind::Static(_) => "TokenProvider::Static",
            Kind::Expiring(_) => "TokenProvider::Expiring",
        })
    }
}

/// What an expiring token needs: the app's credentials and the refresh-token file.
#[derive(Debug, Clone)]
pub struct ExpiringTokenConfig {
    /// `POST` target, `{api_base}/v1/oauth/token`.
    pub token_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub refresh_token_file: PathBuf,
}

/// A refresh that failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Miro refused the refresh token or the client credentials: an admin must act.
    #[error(
        "Miro refused to refresh the access token (HTTP {status}{detail}): the refresh token in \
         {file} is invalid, used or expired, or `miro.client_id`/the client secret is wrong. \
         Check the client id and secret, then run `mirotrail auth login` to authorise again"
    )]
    Refused {
        status: u16,
        detail: String,
        file: String,
    },
    /// The network or Miro failed; retrying may help.
    #[error("refreshing the Miro access token failed: {0}")]
    Transient(String),
    /// The refresh-token file cannot be read or written.
    #[error("{0}")]
    File(String),
}

impl TokenError {
    /// Whether retrying the same refresh later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, TokenError::Transient(_))
    }
}

/// What `check` shows about the token.
#[derive(Debug, Clone)]
pub enum TokenStatus {
    Static,
    Expiring {
        /// Time left on the access token in hand (`None` before the first refresh).
        access_expires_in: Option<Duration>,
        /// Age of the refresh-token file (its modification time).
        refresh_token_age: Option<Duration>,
    },
}

struct Current {
    access: SecretString,
    refresh_at: Instant,
    expires_at: Instant,
}

struct Refresher {
    http: reqwest::Client,
    config: ExpiringTokenConfig,
    current: tokio::sync::Mutex<Option<Current>>,
}

#[derive(Deserialize)]
struct Grant {
    access_token: String,
    refresh_token: String,
    expires_in: u64,
}

impl TokenProvider {
    pub fn fixed(token: SecretString) -> Self {
        TokenProvider(Kind::Static(token))
    }

    pub fn expiring(config: ExpiringTokenConfig, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(crate::net::USER_AGENT)
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        TokenProvider(Kind::Expiring(Arc::new(Refresher {
            http,
            config,
            current: tokio::sync::Mutex::new(None),
        })))
    }

    /// The access token to send now, refreshing first when it is due.
    pub async fn bearer(&self) -> Result<SecretString, TokenError> {
        match &self.0 {
            Kind::Static(t) => Ok(t.clone()),
            Kind::Expiring(r) => r.bearer().await,
        }
    }

    /// Miro answered 401 to `used`: forget it so the next `bearer` refreshes. Returns
    /// whether a refresh may help (an expiring token).
    pub async fn rejected(&self, used: &SecretString) -> bool {
        match &self.0 {
            Kind::Static(_) => false,
            Kind::Expiring(r) => {
                let mut current = r.current.lock().await;
                if current
                    .as_ref()
                    .is_some_and(|c| c.access.expose_secret() == used.expose_secret())
                {
                    *current = None;
                }
                true
            }
        }
    }

    pub async fn status(&self) -> TokenStatus {
        match &self.0 {
            Kind::Static(_) => TokenStatus::Static,
            Kind::Expiring(r) => {
                let now = Instant::now();
                let access_expires_in = r
                    .current
                    .lock()
                    .await
                    .as_ref()
                    .map(|c| c.expires_at.saturating_duration_since(now));
                let refresh_token_age = std::fs::metadata(&r.config.refresh_token_file)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok());
                TokenStatus::Expiring {
                    access_expires_in,
                    refresh_token_age,
                }
            }
        }
    }
}

impl Refresher {
    async fn bearer(&self) -> Result<SecretString, TokenError> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.access.clone());
        }
        let fresh = self.refresh().await?;
        let access = fresh.access.clone();
        *current = Some(fresh);
        Ok(access)
    }

    /// One refresh: read the refresh token, exchange it, persist the new one, and only
    /// then hand out the new access token. The caller holds the lock.
    async fn refresh(&self) -> Result<Current, TokenError> {
        let file = self.config.refresh_token_file.clone();
        // Another process on this file (`check` beside `run`, two instances sharing an
        // app) must not refresh the same chain at the same time: the second exchange would
        // send a refresh token the first has just used up. The lock is held from reading
        // the file to writing the new token, so the second reads the new one.
        let lock_path = file.clone();
        let _chain = tokio::task::spawn_blocking(move || lock_chain(&lock_path))
            .await
            .map_err(|e| TokenError::File(format!("locking the refresh token failed: {e}")))??;
        let old = read_refresh_token(&file)?;
        let sent = self
            .http
            .post(&self.config.token_url)
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", old.expose_secret()),
                ("client_id", self.config.client_id.as_str()),
                ("client_secret", self.config.client_secret.expose_secret()),
            ])
            .send()
            .await
            .map_err(|e| TokenError::Transient(super::client::describe_reqwest_error(&e)))?;
        let status = sent.status().as_u16();
        let body = sent
            .bytes()
            .await
            .map_err(|e| TokenError::Transient(super::client::describe_reqwest_error(&e)))?;
        if status != 200 {
            let detail = error_detail(&body);
            return Err(if status == 400 || status == 401 {
                TokenError::Refused {
                    status,
                    detail,
                    file: file.display().to_string(),
                }
            } else {
                TokenError::Transient(format!("HTTP {status}{detail}"))
            });
        }
        let grant: Grant = serde_json::from_slice(&body).map_err(|e| {
            TokenError::Transient(format!("the token answer is not usable JSON: {e}"))
        })?;
        let new_refresh = SecretString::from(grant.refresh_token);
        // Miro has rotated the pair: the old refresh token is dead from here on, so the
        // new one must be on disk before anything else happens.
        tokio::task::spawn_blocking(move || write_refresh_token(&file, &new_refresh))
            .await
            .map_err(|e| TokenError::File(format!("saving the refresh token failed: {e}")))??;
        let now = Instant::now();
        let lifetime = Duration::from_secs(grant.expires_in);
        let margin = REFRESH_MARGIN.min(lifetime / 5);
        Ok(Current {
            access: SecretString::from(grant.access_token),
            refresh_at: now + lifetime.saturating_sub(margin),
            expires_at: now + lifetime,
        })
    }
}

fn error_detail(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct E {
        error: Option<String>,
        error_description: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<E>(body) {
        Ok(e) => {
            let parts: Vec<String> = [e.error, e.error_description, e.message]
                .into_iter()
                .flatten()
                .collect();
            if parts.is_empty() {
                String::new()
            } else {
                format!(": {}", parts.join(": "))
            }
        }
        Err(_) => String::new(),
    }
}

/// Takes the exclusive lock of the refresh-token chain in `path` (`<path>.lock`, mode
/// 0600), waiting for another process's refresh to end. Released when the file is dropped.
fn lock_chain(path: &Path) -> Result<std::fs::File, TokenError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = std::path::PathBuf::from(name);
    let fail = |e: std::io::Error| {
        TokenError::File(format!(
            "cannot lock {} ({e}): the folder of the refresh-token file must be writable by \
             mirotrail",
            lock_path.display()
        ))
    };
    let file = crate::private::file_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(fail)?;
    file.lock().map_err(fail)?;
    Ok(file)
}

/// Reads the refresh token (trimmed) from `path`.
pub fn read_refresh_token(path: &Path) -> Result<SecretString, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        TokenError::File(format!(
            "cannot read the Miro refresh token from {} ({e}): run `mirotrail auth login` to \
             create it",
            path.display()
        ))
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError::File(format!(
            "the Miro refresh-token file {} is empty: run `mirotrail auth login` to fill it",
            path.display()
        )));
    }
    Ok(SecretString::from(token.to_owned()))
}

/// Replaces `path` with `token` atomically and durably: a temp file (0600) beside it,
/// fsync, rename over `path`, fsync of the folder. A crash leaves either the old or the
/// new token, never a torn file.
pub fn write_refresh_token(path: &Path, token: &SecretString) -> Result<(), TokenError> {
    use std::io::Write;
    let fail = |what: &str, e: std::io::Error| {
        TokenError::File(format!(
            "cannot save the new Miro refresh token to {} ({what}: {e}); the old one is no \
             longer valid, so run `mirotrail auth login` once the file is writable",
            path.display()
        ))
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = crate::private::file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| fail("create temp file", e))?;
    f.write_all(token.expose_secret().as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .map_err(|e| fail("write temp file", e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| fail("rename", e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        d.sync_all().map_err(|e| fail("fsync folder", e))?;
    }
    Ok(())
}
