//! Entra ID tokens for the Logs Ingestion API: client credentials (secret or federated
//! assertion) or a managed identity, cached and renewed before they expire.
//!
//! Invariants: secrets and tokens are only held as `SecretString` and never enter a log
//! line or an error message; one fetch at a time (concurrent uploads share it); a token
//! refused by ingestion (401) is dropped once, by the first upload that saw it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::net::{BodyError, MAX_AUXILIARY_BODY_BYTES, error_chain, read_body_capped};
use crate::secret::{ReadSecretError, read_secret};

use super::config::{AzureAuth, ManagedIdentityEndpoint, SecretSource, SentinelConfig};

/// A token failure; `permanent` ones need someone to change the configuration.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    pub message: String,
    pub permanent: bool,
}

impl AuthError {
    fn transient(message: String) -> Self {
        AuthError {
            message,
            permanent: false,
        }
    }
    fn permanent(message: String) -> Self {
        AuthError {
            message,
            permanent: true,
        }
    }
}

/// The credential, with its secret loaded.
#[derive(Debug)]
enum Credential {
    Secret {
        tenant_id: String,
        client_id: String,
        secret: SecretString,
        from: String,
    },
    Federated {
        tenant_id: String,
        client_id: String,
        token_file: PathBuf,
    },
    ManagedIdentity {
        client_id: Option<String>,
        endpoint: Url,
        /// `X-IDENTITY-HEADER` for the `IDENTITY_ENDPOINT` convention; `None` for IMDS.
        identity_header: Option<SecretString>,
    },
}

/// A bearer token with the id of its fetch (to drop exactly it after a 401).
#[derive(Debug, Clone)]
pub(crate) struct AccessToken {
    pub secret: SecretString,
    pub id: u64,
}

#[derive(Debug)]
struct Cached {
    token: AccessToken,
    renew_at: Instant,
}

/// Fetches and caches tokens.
#[derive(Debug)]
pub(crate) struct TokenProvider {
    http: reqwest::Client,
    credential: Credential,
    authority_host: Url,
    audience: String,
    cached: tokio::sync::Mutex<Option<Cached>>,
    fetches: AtomicU64,
}

/// Renew this long before expiry (or at half the lifetime, for short-lived tokens).
const RENEW_EARLY: Duration = Duration::from_secs(5 * 60);

impl TokenProvider {
    /// Loads the secret the configuration points at; fails when it is missing.
    #[allow(
        clippy::disallowed_methods,
        reason = "config loading: the client secret comes from the variable the sink config names"
    )]
    pub(crate) fn new(config: &SentinelConfig, http: reqwest::Client) -> Result<Self, AuthError> {
        Self::with_env(config, http, &|var| std::env::var(var).ok())
    }

    pub(crate) fn with_env(
        config: &SentinelConfig,
        http: reqwest::Client,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, AuthError> {
        let credential = match &config.auth {
            AzureAuth::ClientSecret {
                tenant_id,
                client_id,
                secret,
            } => Credential::Secret {
                tenant_id: tenant_id.clone(),
                client_id: client_id.clone(),
                secret: load_secret(secret, env)?,
                from: secret.to_string(),
            },
            AzureAuth::FederatedToken {
                tenant_id,
                client_id,
                token_file,
            } => {
                read_assertion(token_file)?;
                Credential::Federated {
                    tenant_id: tenant_id.clone(),
                    client_id: client_id.clone(),
                    token_file: token_file.clone(),
                }
            }
            AzureAuth::ManagedIdentity {
                client_id,
                endpoint,
            } => match endpoint {
                ManagedIdentityEndpoint::Imds(url) => Credential::ManagedIdentity {
                    client_id: client_id.clone(),
                    endpoint: url.clone(),
                    identity_header: None,
                },
                ManagedIdentityEndpoint::IdentityEndpoint(url) => Credential::ManagedIdentity {
                    client_id: client_id.clone(),
                    endpoint: url.clone(),
                    identity_header: Some(
                        env("IDENTITY_HEADER")
                            .filter(|h| !h.is_empty())
                            .map(SecretString::from)
                            .ok_or_else(|| {
                                AuthError::permanent(
                                    "IDENTITY_ENDPOINT is set but IDENTITY_HEADER is not: the \
                                     managed identity endpoint needs both (they are set by the \
                                     Azure host)"
                                        .into(),
                                )
                            })?,
                    ),
                },
            },
        };
        Ok(TokenProvider {
            http,
            credential,
            authority_host: config.authority_host.clone(),
            audience: config.audience.clone(),
            cached: tokio::sync::Mutex::new(None),
            fetches: AtomicU64::new(0),
        })
    }

    /// A valid token: the cached one, or a new one.
    pub(crate) async fn token(&self) -> Result<AccessToken, AuthError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.renew_at
        {
            return Ok(c.token.clone());
        }
        let (secret, lifetime) = self.fetch().await?;
        let id = self.fetches.fetch_add(1, Ordering::Relaxed) + 1;
        let early = RENEW_EARLY.min(lifetime / 2);
        let token = AccessToken { secret, id };
        *cached = Some(Cached {
            token: token.clone(),
            renew_at: Instant::now() + lifetime.saturating_sub(early),
        });
        tracing::debug!(
            lifetime_secs = lifetime.as_secs(),
            "obtained an Entra token for the logs ingestion API"
        );
        Ok(token)
    }

    /// Drops the token `id` (refused by the ingestion API) so that the next call fetches one.
    pub(crate) async fn invalidate(&self, id: u64) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| c.token.id == id) {
            *cached = None;
        }
    }

    async fn fetch(&self) -> Result<(SecretString, Duration), AuthError> {
        let scope = format!("{}//.default", self.audience);
        let (request, token_url, who) = match &self.credential {
            Credential::Secret {
                tenant_id,
                client_id,
                secret,
                ..
            } => {
                let url = self.token_url(tenant_id);
                let form = [
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", secret.expose_secret()),
                    ("scope", scope.as_str()),
                ];
                (self.http.post(url.clone()).form(&form), url, Who::App)
            }
            Credential::Federated {
                tenant_id,
                client_id,
                token_file,
            } => {
                let assertion = read_assertion(token_file)?;
                let url = self.token_url(tenant_id);
                let form = [
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", assertion.expose_secret()),
                    ("scope", scope.as_str()),
                ];
                (self.http.post(url.clone()).form(&form), url, Who::App)
            }
            Credential::ManagedIdentity {
                client_id,
                endpoint,
                identity_header,
            } => {
                let mut query = vec![
                    (
                        "api-version",
                        if identity_header.is_some() {
                            "2019-08-01"
                        } else {
                            "2018-02-01"
                        },
                    ),
                    ("resource", self.audience.as_str()),
                ];
                if let Some(id) = client_id {
                    query.push(("client_id", id.as_str()));
                }
                let mut request = self.http.get(endpoint.clone()).query(&query);
                request = match identity_header {
                    Some(h) => request.header("X-IDENTITY-HEADER", h.expose_secret()),
                    None => request.header("Metadata", "true"),
                };
                (request, endpoint.clone(), Who::ManagedIdentity)
            }
        };
        let response = request.send().await.map_err(|e| {
            AuthError::transient(format!(
                "cannot reach the token endpoint {}: {}",
                redact_url(&token_url),
                error_chain(&e)
            ))
        })?;
        let status = response.status().as_u16();
        let body = read_body_capped(response, MAX_AUXILIARY_BODY_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::Transport(e) => AuthError::transient(format!(
                    "the token endpoint {} broke off its answer: {}",
                    redact_url(&token_url),
                    error_chain(&e)
                )),
                // A token answer is a few KB: a larger one is not a token endpoint's.
                too_large @ BodyError::TooLarge { .. } => AuthError::transient(format!(
                    "the token endpoint {} answered {status}, but {too_large}; check \
                     `authority_host` (or the managed identity endpoint)",
                    redact_url(&token_url),
                )),
            })?;
        if (200..300).contains(&status) {
            return parse_token(&body).ok_or_else(|| {
                AuthError::transient(format!(
                    "the token endpoint {} answered {status} without a usable access token",
                    redact_url(&token_url)
                ))
            });
        }
        if status == 429 || status == 408 || status >= 500 {
            return Err(AuthError::transient(format!(
                "the token endpoint {} answered {status}; retrying",
                redact_url(&token_url)
            )));
        }
        let entra: EntraError = serde_json::from_slice(&body).unwrap_or_default();
        Err(AuthError::permanent(explain_entra_error(
            status,
            &entra,
            &self.describe(),
            who,
        )))
    }

    fn token_url(&self, tenant_id: &str) -> Url {
        let base = self.authority_host.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/{tenant_id}/oauth2/v2.0/token")).expect("token URL")
    }

    fn describe(&self) -> Subject {
        match &self.credential {
            Credential::Secret {
                tenant_id,
                client_id,
                from,
                ..
            } => Subject {
                tenant_id: tenant_id.clone(),
                client_id: client_id.clone(),
                credential: format!("the client secret in {from}"),
                audience: self.audience.clone(),
            },
            Credential::Federated {
                tenant_id,
                client_id,
                token_file,
            } => Subject {
                tenant_id: tenant_id.clone(),
                client_id: client_id.clone(),
                credential: format!("the federated token in {}", token_file.display()),
                audience: self.audience.clone(),
            },
            Credential::ManagedIdentity { client_id, .. } => Subject {
                tenant_id: String::new(),
                client_id: client_id
                    .clone()
                    .unwrap_or_else(|| "(system-assigned)".into()),
                credential: "the managed identity".into(),
                audience: self.audience.clone(),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Who {
    App,
    ManagedIdentity,
}

/// What an Entra error is about, for its message.
#[derive(Debug, Clone)]
pub(crate) struct Subject {
    pub tenant_id: String,
    pub client_id: String,
    pub credential: String,
    pub audience: String,
}

/// An Entra (or managed identity endpoint) error body.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct EntraError {
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub error_description: Option<String>,
    #[serde(default)]
    pub error_codes: Vec<u64>,
}

/// One actionable line for an Entra token error.
pub(crate) fn explain_entra_error(status: u16, e: &EntraError, s: &Subject, who: Who) -> String {
    let code = e.error.as_deref().unwrap_or("");
    let description = e.error_description.as_deref().unwrap_or("");
    let aadsts = e.error_codes.first().copied().or_else(|| {
        let digits: String = description
            .strip_prefix("AADSTS")?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    });
    let first_line = description
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect::<String>();
    let (tenant, client) = (&s.tenant_id, &s.client_id);
    let advice = match (who, aadsts) {
        (Who::ManagedIdentity, _) => format!(
            "the managed identity {client} got no token ({status} {code}): check that the identity \
             is assigned to this host and, for a user-assigned one, that \
             `managed_identity_client_id` is its client id"
        ),
        (_, Some(7_000_215)) => format!(
            "wrong client secret for app {client} (AADSTS7000215): put the secret's Value (not its \
             Secret ID) from Entra ID > App registrations > Certificates & secrets into {}",
            s.credential
        ),
        (_, Some(7_000_222)) => format!(
            "the client secret of app {client} has expired (AADSTS7000222): create a new one and put \
             it into {}",
            s.credential
        ),
        (_, Some(700_016)) => format!(
            "wrong client id or tenant: app {client} does not exist in tenant {tenant} (AADSTS700016); \
             check `client_id` (the Application (client) id) and `tenant_id`"
        ),
        (_, Some(90_002)) | (_, Some(900_023)) | (_, Some(90_013)) => format!(
            "wrong tenant: tenant `{tenant}` was not found (AADSTS{}); set `tenant_id` to the \
             Directory (tenant) id of the app registration",
            aadsts.unwrap_or_default()
        ),
        (_, Some(700_213)) | (_, Some(70_021)) | (_, Some(700_211)) => format!(
            "the federated token was refused for app {client} (AADSTS{}): add a federated credential \
             to the app whose issuer and subject match the token in {}",
            aadsts.unwrap_or_default(),
            s.credential
        ),
        (_, Some(700_024)) => format!(
            "the federated token in {} has expired (AADSTS700024): the platform should refresh it; \
             check the workload identity setup",
            s.credential
        ),
        (_, Some(500_011)) | (_, Some(70_011)) => format!(
            "the token audience {} is wrong for this cloud (AADSTS{}): check `cloud` or `audience`",
            s.audience,
            aadsts.unwrap_or_default()
        ),
        _ if code == "invalid_client" => format!(
            "Entra rejected the credentials of app {client} in tenant {tenant} (invalid_client): \
             check {} and `client_id`",
            s.credential
        ),
        _ if code == "unauthorized_client" => format!(
            "wrong client id or tenant: app {client} may not get tokens in tenant {tenant} \
             (unauthorized_client); check `client_id` and `tenant_id`"
        ),
        _ => format!(
            "Entra refused a token for app {client} in tenant {tenant} ({status} {code}); check \
             `tenant_id`, `client_id` and {}",
            s.credential
        ),
    };
    if first_line.is_empty() {
        advice
    } else {
        format!("{advice} [Entra: {first_line}]")
    }
}

/// Reads the access token and its lifetime from a token response (Entra: numbers; IMDS:
/// strings).
fn parse_token(body: &[u8]) -> Option<(SecretString, Duration)> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let token = value.get("access_token")?.as_str()?.to_string();
    if token.is_empty() {
        return None;
    }
    let expires_in = match value.get("expires_in") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .unwrap_or(300);
    Some((
        SecretString::from(token),
        Duration::from_secs(expires_in.max(1)),
    ))
}

fn load_secret(
    source: &SecretSource,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SecretString, AuthError> {
    read_secret(source, env).map_err(|e| {
        AuthError::permanent(match (source, e) {
            (_, ReadSecretError::Empty) => {
                format!("the Azure client secret in {source} is empty")
            }
            (SecretSource::Env(var), _) => format!(
                "the Azure client secret is not set: export it in the environment variable {var} \
                 (or set `client_secret_file`, `federated_token_file` or `managed_identity`)"
            ),
            (SecretSource::File(path), ReadSecretError::Unreadable(e)) => format!(
                "cannot read the Azure client secret from {}: {e}",
                path.display()
            ),
            (SecretSource::File(_), ReadSecretError::NotSet) => {
                unreachable!("only a variable can be unset")
            }
        })
    })
}

fn read_assertion(path: &std::path::Path) -> Result<SecretString, AuthError> {
    read_secret(&SecretSource::File(path.to_path_buf()), &|_| None).map_err(|e| {
        AuthError::permanent(match e {
            ReadSecretError::Empty => {
                format!("the federated token file {} is empty", path.display())
            }
            ReadSecretError::Unreadable(e) => format!(
                "cannot read the federated token file {}: {e}",
                path.display()
            ),
            ReadSecretError::NotSet => unreachable!("only a variable can be unset"),
        })
    })
}

/// The URL without its query (which may carry ids, never secrets, but keep logs short).
pub(crate) fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> Subject {
        Subject {
            tenant_id: "t1".into(),
            client_id: "c1".into(),
            credential: "the client secret in the environment variable AZURE_CLIENT_SECRET".into(),
            audience: "https://monitor.azure.com".into(),
        }
    }

    fn explain(error: &str, code: u64) -> String {
        let e = EntraError {
            error: Some(error.into()),
            error_description: Some(format!("AADSTS{code}: something.\r\nTrace ID: x")),
            error_codes: vec![code],
        };
        explain_entra_error(401, &e, &subject(), Who::App)
    }

    #[test]
    fn each_entra_error_gets_one_actionable_line() {
        let m = explain("invalid_client", 7_000_215);
        assert!(
            m.starts_with("wrong client secret for app c1") && m.contains("AZURE_CLIENT_SECRET"),
            "{m}"
        );
        assert!(!m.contains('\n') && !m.contains("Trace ID"), "{m}");
        assert!(explain("invalid_client", 7_000_222).contains("expired"));
        assert!(explain("unauthorized_client", 700_016).starts_with("wrong client id or tenant"));
        assert!(explain("invalid_request", 90_002).starts_with("wrong tenant"));
        assert!(explain("invalid_request", 900_023).starts_with("wrong tenant"));
        assert!(explain("invalid_client", 700_213).contains("federated credential"));
        assert!(explain("invalid_resource", 500_011).contains("`audience`"));
        let none = EntraError {
            error: Some("unauthorized_client".into()),
            ..EntraError::default()
        };
        assert!(
            explain_entra_error(400, &none, &subject(), Who::App)
                .starts_with("wrong client id or tenant")
        );
        let none = EntraError {
            error: Some("invalid_client".into()),
            ..EntraError::default()
        };
        assert!(explain_entra_error(401, &none, &subject(), Who::App).contains("invalid_client"));
        assert!(
            explain_entra_error(
                400,
                &EntraError::default(),
                &subject(),
                Who::ManagedIdentity
            )
            .contains("managed identity")
        );
    }

    #[test]
    fn token_responses_from_entra_and_imds_parse() {
        let (t, l) =
            parse_token(br#"{"token_type":"Bearer","expires_in":3599,"access_token":"abc"}"#)
                .unwrap();
        assert_eq!((t.expose_secret(), l), ("abc", Duration::from_secs(3599)));
        let (_, l) = parse_token(br#"{"access_token":"abc","expires_in":"86399"}"#).unwrap();
        assert_eq!(l, Duration::from_secs(86399));
        assert!(parse_token(br#"{"access_token":""}"#).is_none());
    }
}
