//! The emulator's OAuth app: Miro's expiring access tokens with rotating refresh tokens
//! (`POST /v1/oauth/token`) and a test-only `GET /oauth/authorize` that grants at once.
//!
//! Invariants (see `docs/miro-api.md`, "Expiring tokens"):
//! - A refresh token works once: using it returns a new access/refresh pair and the old
//!   pair is invalid from then on (a second use of the refresh token gets 400
//!   `invalid_grant`; the access token issued with it gets 401).
//! - An authorisation code works once, only with the `redirect_uri` it was issued for.
//! - An access token is accepted until `issued + access_lifetime`, then answers 401.
//! - Wrong client credentials get 401 `invalid_client`; nothing is rotated then.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::time::UnixMs;

/// The app the emulator's OAuth endpoints act for.
#[derive(Debug, Clone)]
pub struct OAuthApp {
    pub client_id: String,
    pub client_secret: String,
    /// Scopes of every token issued to this app.
    pub scopes: Vec<String>,
    /// How long an access token lives (Miro: 1 hour, `expires_in` 3599).
    pub access_lifetime: Duration,
}

/// Counts of what the OAuth endpoints did, for tests and the token harness.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OAuthStats {
    pub refreshes: u64,
    pub code_exchanges: u64,
    /// Refresh requests with an unknown or already used refresh token.
    pub rejected_refresh_tokens: u64,
}

#[derive(Default)]
pub(super) struct OAuthState {
    app: Option<OAuthApp>,
    /// Live refresh tokens (each usable once) and the access token issued with each.
    refresh_tokens: HashMap<String, Option<String>>,
    /// Live access tokens and when they stop working.
    access_tokens: HashMap<String, UnixMs>,
    /// Unused authorisation codes and the redirect URI each was issued for.
    codes: HashMap<String, String>,
    /// `team_id` of token responses (the emulated team, a number as Miro sends it).
    team_id: u64,
    pub(super) stats: OAuthStats,
}

/// A reply of the token endpoint: status and JSON body.
pub(super) struct TokenReply {
    pub status: u16,
    pub body: String,
}

fn new_secret(prefix: &str) -> String {
    format!("{prefix}-{:032x}", rand::random::<u128>())
}

fn oauth_error(status: u16, error: &str, description: &str) -> TokenReply {
    TokenReply {
        status,
        body: json!({"error": error, "error_description": description}).to_string(),
    }
}

impl OAuthState {
    pub(super) fn new(team_id: u64) -> Self {
        OAuthState {
            team_id,
            ..OAuthState::default()
        }
    }

    pub(super) fn enable(&mut self, app: OAuthApp) {
        self.app = Some(app);
    }

    /// A refresh token as if a user had authorised the app (the start of a chain).
    pub(super) fn issue_refresh_token(&mut self) -> String {
        let token = new_secret("emu-rt");
        self.refresh_tokens.insert(token.clone(), None);
        token
    }

    /// A one-time code for `redirect_uri`, or `None` if OAuth is off or `client_id` is wrong.
    pub(super) fn authorize(&mut self, client_id: &str, redirect_uri: &str) -> Option<String> {
        let app = self.app.as_ref()?;
        if app.client_id != client_id {
            return None;
        }
        let code = new_secret("emu-code");
        self.codes.insert(code.clone(), redirect_uri.to_owned());
        Some(code)
    }

    /// The scopes of a live issued access token; `None` if unknown or expired.
    pub(super) fn access_scopes(&self, token: &str, now: UnixMs) -> Option<Vec<String>> {
        let app = self.app.as_ref()?;
        let expires = self.access_tokens.get(token)?;
        (now < *expires).then(|| app.scopes.clone())
    }

    /// Answers `POST /v1/oauth/token` with the form fields `form`.
    pub(super) fn token(&mut self, form: &HashMap<String, String>, now: UnixMs) -> TokenReply {
        let Some(app) = self.app.clone() else {
            return oauth_error(400, "invalid_client", "OAuth is not enabled for this app");
        };
        let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        if field("client_id") != app.client_id || field("client_secret") != app.client_secret {
            return oauth_error(401, "invalid_client", "Client authentication failed");
        }
        match field("grant_type") {
            "refresh_token" => {
                let Some(paired_access) = self.refresh_tokens.remove(field("refresh_token")) else {
                    self.stats.rejected_refresh_tokens += 1;
                    return oauth_error(
                        400,
                        "invalid_grant",
                        "The refresh token is invalid, expired or already used",
                    );
                };
                if let Some(access) = paired_access {
                    self.access_tokens.remove(&access);
                }
                self.stats.refreshes += 1;
            }
            "authorization_code" => {
                let code = field("code");
                match self.codes.get(code) {
                    Some(uri) if uri == field("redirect_uri") => {
                        self.codes.remove(code);
                    }
                    Some(_) => {
                        return oauth_error(400, "invalid_grant", "redirect_uri does not match");
                    }
                    None => {
                        return oauth_error(
                            400,
                            "invalid_grant",
                            "The code is invalid or already used",
                        );
                    }
                }
                self.stats.code_exchanges += 1;
            }
            "" => return oauth_error(400, "invalid_request", "grant_type is missing"),
            _ => return oauth_error(400, "unsupported_grant_type", "Unsupported grant_type"),
        }
        let access = new_secret("emu-at");
        let refresh = new_secret("emu-rt");
        self.refresh_tokens
            .insert(refresh.clone(), Some(access.clone()));
        self.access_tokens
            .insert(access.clone(), now.plus(app.access_lifetime));
        let expires_in = app.access_lifetime.as_secs().saturating_sub(1);
        TokenReply {
            status: 200,
            body: json!({
                "token_type": "bearer",
                "team_id": self.team_id,
                "access_token": access,
                "refresh_token": refresh,
                "scope": app.scopes.join(" "),
                "expires_in": expires_in,
            })
            .to_string(),
        }
    }
}
