//! `[sinks.NAME]` with `type = "azure_logs_ingestion"`: the keys as written
//! (`RawSentinelSink`) and their validated form (`SentinelConfig`).
//!
//! Validation resolves every default and environment fallback once, so the sink never
//! reads configuration from the environment later (secrets excepted: they are loaded when
//! the sink is built, and only ever held as `SecretString`).

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::net::{http_url, secure_url};
use crate::settings::{ConfigError, parse_duration};
use crate::source::SourceKind;

/// The keys of an `azure_logs_ingestion` sink. Defaults are justified in the README.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentinelSink {
    /// The data collection endpoint (DCE) URL, `https://NAME.REGION-1.ingest.monitor.azure.com`.
    pub endpoint: Option<String>,
    /// Immutable id (`dcr-` + 32 hex digits) of the DCR for audit logs.
    pub audit_logs_dcr: Option<String>,
    /// Immutable id of the DCR for content logs.
    pub content_logs_dcr: Option<String>,
    /// Stream for audit logs (default `Custom-MiroAuditLogs_CL`).
    pub audit_logs_stream: Option<String>,
    /// Stream for content logs (default `Custom-MiroContentLogs_CL`).
    pub content_logs_stream: Option<String>,
    /// Immutable id of mirotrail's own DCR for AI interaction logs (`mirotrail template
    /// azure`); absent: AI interaction logs are not sent to this sink.
    pub ai_interaction_logs_dcr: Option<String>,
    /// Stream for AI interaction logs (default `Custom-MiroAiInteractionLogs_CL`).
    pub ai_interaction_logs_stream: Option<String>,
    /// Entra tenant id (default: `AZURE_TENANT_ID`).
    pub tenant_id: Option<String>,
    /// Application (client) id (default: `AZURE_CLIENT_ID`).
    pub client_id: Option<String>,
    /// Environment variable holding the client secret (default `AZURE_CLIENT_SECRET`).
    pub client_secret_env: Option<String>,
    /// File holding the client secret.
    pub client_secret_file: Option<PathBuf>,
    /// File holding a federated token (workload identity; default:
    /// `AZURE_FEDERATED_TOKEN_FILE` when no client secret is configured or set).
    pub federated_token_file: Option<PathBuf>,
    /// Use the managed identity of the host (IMDS, or `IDENTITY_ENDPOINT`/`IDENTITY_HEADER`).
    pub managed_identity: Option<bool>,
    /// Client id of a user-assigned managed identity.
    pub managed_identity_client_id: Option<String>,
    /// Managed identity token endpoint (default: `IDENTITY_ENDPOINT`, else IMDS).
    pub managed_identity_endpoint: Option<String>,
    /// `public` (default), `us_gov` or `china`: sets the authority host and audience.
    pub cloud: Option<String>,
    /// Entra authority host (default: `AZURE_AUTHORITY_HOST`, else the cloud's).
    pub authority_host: Option<String>,
    /// Token audience (default: the cloud's monitor audience).
    pub audience: Option<String>,
    /// Upload requests in flight at once (default 4).
    pub max_concurrency: Option<usize>,
    /// Uncompressed JSON bytes per request (default and maximum 1000000).
    pub max_batch_bytes: Option<usize>,
    /// Timeout of one upload or token request (default `60s`).
    pub request_timeout: Option<String>,
    /// Rows read from the store per delivery round (default 5000).
    pub batch_rows: Option<usize>,
    /// Where a new sink starts: `beginning` (default) or `now` (see `config::SinkStart`).
    pub start: Option<String>,
}

/// Azure clouds: where tokens come from and for which audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    Public,
    UsGov,
    China,
}

impl Cloud {
    fn parse(text: &str) -> Option<Cloud> {
        match text {
            "public" => Some(Cloud::Public),
            "us_gov" => Some(Cloud::UsGov),
            "china" => Some(Cloud::China),
            _ => None,
        }
    }

    pub fn authority_host(self) -> &'static str {
        match self {
            Cloud::Public => "https://login.microsoftonline.com",
            Cloud::UsGov => "https://login.microsoftonline.us",
            Cloud::China => "https://login.partner.microsoftonline.cn",
        }
    }

    pub fn audience(self) -> &'static str {
        match self {
            Cloud::Public => "https://monitor.azure.com",
            Cloud::UsGov => "https://monitor.azure.us",
            Cloud::China => "https://monitor.azure.cn",
        }
    }
}

/// Where the client secret is read from (when the sink is built).
pub use crate::secret::SecretSource;

/// How the sink gets its Entra token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AzureAuth {
    /// Client credentials with a secret.
    ClientSecret {
        tenant_id: String,
        client_id: String,
        secret: SecretSource,
    },
    /// Client credentials with a federated token as `client_assertion` (re-read each time).
    FederatedToken {
        tenant_id: String,
        client_id: String,
        token_file: PathBuf,
    },
    /// The host's managed identity.
    ManagedIdentity {
        client_id: Option<String>,
        endpoint: ManagedIdentityEndpoint,
    },
}

/// The managed identity token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagedIdentityEndpoint {
    /// Azure VMs and AKS: `GET .../metadata/identity/oauth2/token` with `Metadata: true`.
    Imds(Url),
    /// App Service, Functions, Container Apps, Arc: `IDENTITY_ENDPOINT` with the
    /// `X-IDENTITY-HEADER` taken from `IDENTITY_HEADER` when the sink is built.
    IdentityEndpoint(Url),
}

/// Where one source's records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcrTarget {
    pub dcr_immutable_id: String,
    pub stream: String,
}

/// A validated `azure_logs_ingestion` sink.
#[derive(Debug, Clone)]
pub struct SentinelConfig {
    pub endpoint: Url,
    pub audit_logs: Option<DcrTarget>,
    pub content_logs: Option<DcrTarget>,
    /// `None`: AI interaction logs are not sent to this sink (no table of Sentinel's
    /// solution holds them; the DCR is mirotrail's own and optional).
    pub ai_interaction_logs: Option<DcrTarget>,
    pub auth: AzureAuth,
    pub authority_host: Url,
    pub audience: String,
    pub max_concurrency: NonZeroUsize,
    pub max_batch_bytes: usize,
    pub request_timeout: Duration,
}

impl SentinelConfig {
    /// The DCR and stream a source is sent to.
    pub fn target(&self, source: SourceKind) -> Option<&DcrTarget> {
        match source {
            SourceKind::AuditLogs => self.audit_logs.as_ref(),
            SourceKind::ContentLogs => self.content_logs.as_ref(),
            SourceKind::AiInteractionLogs => self.ai_interaction_logs.as_ref(),
        }
    }

    /// Whether a DCR missing for an enabled source is a configuration error: the two
    /// streams of Sentinel's Miro solution must be sent; mirotrail's own AI interaction
    /// logs table is optional (`check` and `status` say it is not sent).
    pub fn dcr_required(source: SourceKind) -> bool {
        !matches!(source, SourceKind::AiInteractionLogs)
    }
}

/// Azure's limit on one call, as the official SDKs count it (uncompressed JSON).
pub const MAX_BATCH_BYTES: usize = 1_000_000;
const IMDS_URL: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// Validates the raw keys of sink `name`. `enabled` are the enabled sources, `env` looks
/// up environment variables, `resolve` anchors relative paths at the config file.
pub(crate) fn validate(
    raw: RawSentinelSink,
    name: &str,
    enabled: &[SourceKind],
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<SentinelConfig, ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        key: format!("sinks.{name}.{key}"),
        message,
    };
    let env = |var: &str| env(var).filter(|v| !v.trim().is_empty());

    let endpoint_text = raw.endpoint.as_deref().ok_or_else(|| {
        invalid(
            "endpoint",
            "is required: the logs ingestion URL of your data collection endpoint (Azure portal: \
             Monitor > Data collection endpoints > Overview), like \
             https://NAME.REGION-1.ingest.monitor.azure.com"
                .into(),
        )
    })?;
    let endpoint = secure_url(endpoint_text).map_err(|m| invalid("endpoint", m))?;

    let mut targets = [None, None, None];
    for (i, source) in SourceKind::ALL.into_iter().enumerate() {
        let (dcr_key, stream_key, dcr, stream) = match source {
            SourceKind::AuditLogs => (
                "audit_logs_dcr",
                "audit_logs_stream",
                &raw.audit_logs_dcr,
                &raw.audit_logs_stream,
            ),
            SourceKind::ContentLogs => (
                "content_logs_dcr",
                "content_logs_stream",
                &raw.content_logs_dcr,
                &raw.content_logs_stream,
            ),
            SourceKind::AiInteractionLogs => (
                "ai_interaction_logs_dcr",
                "ai_interaction_logs_stream",
                &raw.ai_interaction_logs_dcr,
                &raw.ai_interaction_logs_stream,
            ),
        };
        let Some(dcr) = dcr else {
            if enabled.contains(&source) && SentinelConfig::dcr_required(source) {
                return Err(invalid(
                    dcr_key,
                    format!(
                        "is required because {source} is enabled: the immutable id (`dcr-` and 32 \
                         hex digits) of the DCR with the stream {} (Azure portal: Monitor > Data \
                         collection rules > JSON view, `immutableId`)",
                        source.stream()
                    ),
                ));
            }
            continue;
        };
        if !is_dcr_immutable_id(dcr) {
            return Err(invalid(
                dcr_key,
                format!(
                    "`{dcr}` is not a DCR immutable id: write `dcr-` and 32 hex digits (the \
                     `immutableId` of the rule, not its name or resource id)"
                ),
            ));
        }
        let stream = stream
            .clone()
            .unwrap_or_else(|| source.stream().to_string());
        if !stream.starts_with("Custom-") || stream.len() == "Custom-".len() {
            return Err(invalid(
                stream_key,
                format!(
                    "`{stream}` is not a custom stream name: they start with `Custom-` (default {})",
                    source.stream()
                ),
            ));
        }
        targets[i] = Some(DcrTarget {
            dcr_immutable_id: dcr.to_ascii_lowercase(),
            stream,
        });
    }
    let [audit_logs, content_logs, ai_interaction_logs] = targets;

    let cloud = match raw.cloud.as_deref() {
        None => Cloud::Public,
        Some(text) => Cloud::parse(text).ok_or_else(|| {
            invalid(
                "cloud",
                format!(
                    "`{text}` is not a cloud; use \"public\" (default), \"us_gov\" or \"china\""
                ),
            )
        })?,
    };
    let (authority_key, authority_text) = match (&raw.authority_host, env("AZURE_AUTHORITY_HOST")) {
        (Some(h), _) => ("authority_host", h.clone()),
        (None, Some(h)) => ("authority_host (from AZURE_AUTHORITY_HOST)", h),
        (None, None) => ("authority_host", cloud.authority_host().to_string()),
    };
    let authority_host = secure_url(&authority_text).map_err(|m| invalid(authority_key, m))?;
    let audience = raw
        .audience
        .clone()
        .unwrap_or_else(|| cloud.audience().to_string());
    secure_url(&audience).map_err(|m| invalid("audience", m))?;
    let audience = audience.trim_end_matches('/').to_string();

    let tenant = || {
        let t = raw
            .tenant_id
            .clone()
            .or_else(|| env("AZURE_TENANT_ID"))
            .ok_or_else(|| {
                invalid(
                    "tenant_id",
                    "is required: set it, or export AZURE_TENANT_ID (the Directory (tenant) id \
                     of the app registration)"
                        .into(),
                )
            })?;
        if t.is_empty()
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(invalid(
                "tenant_id",
                format!(
                    "`{t}` is not a tenant id (a GUID or a domain like contoso.onmicrosoft.com)"
                ),
            ));
        }
        Ok(t)
    };
    let client = |key: &str, value: Option<String>, required: bool| {
        let value = value.or_else(|| {
            if required {
                env("AZURE_CLIENT_ID")
            } else {
                None
            }
        });
        match value {
            None if required => Err(invalid(
                key,
                "is required: set it, or export AZURE_CLIENT_ID (the Application (client) id \
                 of the app registration)"
                    .into(),
            )),
            None => Ok(None),
            Some(id) if is_guid(&id) => Ok(Some(id.to_ascii_lowercase())),
            Some(id) => Err(invalid(
                key,
                format!(
                    "`{id}` is not a client id (a GUID like 00000000-0000-0000-0000-000000000000)"
                ),
            )),
        }
    };

    let managed = raw.managed_identity.unwrap_or(false);
    let secret_configured = raw.client_secret_env.is_some() || raw.client_secret_file.is_some();
    if raw.client_secret_env.is_some() && raw.client_secret_file.is_some() {
        return Err(invalid(
            "client_secret_file",
            "set either `client_secret_file` or `client_secret_env`, not both".into(),
        ));
    }
    if managed && (secret_configured || raw.federated_token_file.is_some()) {
        return Err(invalid(
            "managed_identity",
            "a managed identity needs no secret: remove `client_secret_*` and \
             `federated_token_file`, or set `managed_identity = false`"
                .into(),
        ));
    }
    if secret_configured && raw.federated_token_file.is_some() {
        return Err(invalid(
            "federated_token_file",
            "set either a client secret (`client_secret_env`/`client_secret_file`) or \
             `federated_token_file`, not both"
                .into(),
        ));
    }
    if !managed
        && (raw.managed_identity_client_id.is_some() || raw.managed_identity_endpoint.is_some())
    {
        return Err(invalid(
            "managed_identity",
            "`managed_identity_client_id`/`managed_identity_endpoint` need `managed_identity = true`"
                .into(),
        ));
    }
    let auth = if managed {
        let endpoint = match (&raw.managed_identity_endpoint, env("IDENTITY_ENDPOINT")) {
            (Some(text), _) => ManagedIdentityEndpoint::Imds(
                http_url(text).map_err(|m| invalid("managed_identity_endpoint", m))?,
            ),
            (None, Some(text)) => ManagedIdentityEndpoint::IdentityEndpoint(
                secure_url(&text)
                    .map_err(|m| invalid("managed_identity (IDENTITY_ENDPOINT)", m))?,
            ),
            (None, None) => ManagedIdentityEndpoint::Imds(Url::parse(IMDS_URL).expect("IMDS URL")),
        };
        AzureAuth::ManagedIdentity {
            client_id: client(
                "managed_identity_client_id",
                raw.managed_identity_client_id.clone(),
                false,
            )?,
            endpoint,
        }
    } else {
        let federated = match (&raw.federated_token_file, secret_configured) {
            (Some(file), _) => Some(resolve(file)),
            (None, false) if env("AZURE_CLIENT_SECRET").is_none() => {
                env("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from)
            }
            _ => None,
        };
        let tenant_id = tenant()?;
        let client_id = client("client_id", raw.client_id.clone(), true)?.expect("required");
        match federated {
            Some(token_file) => AzureAuth::FederatedToken {
                tenant_id,
                client_id,
                token_file,
            },
            None => {
                let secret = match (&raw.client_secret_file, &raw.client_secret_env) {
                    (Some(file), _) => SecretSource::File(resolve(file)),
                    (None, var) => {
                        let var = var.clone().unwrap_or_else(|| "AZURE_CLIENT_SECRET".into());
                        if var.is_empty() || var.contains('=') {
                            return Err(invalid(
                                "client_secret_env",
                                format!("`{var}` is not an environment variable name"),
                            ));
                        }
                        SecretSource::Env(var)
                    }
                };
                AzureAuth::ClientSecret {
                    tenant_id,
                    client_id,
                    secret,
                }
            }
        }
    };

    let concurrency = raw.max_concurrency.unwrap_or(4);
    let max_concurrency = NonZeroUsize::new(concurrency)
        .filter(|c| c.get() <= 64)
        .ok_or_else(|| {
            invalid(
                "max_concurrency",
                format!("{concurrency} is out of range; use 1..=64 (default 4)"),
            )
        })?;
    let max_batch_bytes = raw.max_batch_bytes.unwrap_or(MAX_BATCH_BYTES);
    if max_batch_bytes == 0 || max_batch_bytes > MAX_BATCH_BYTES {
        return Err(invalid(
            "max_batch_bytes",
            format!(
                "{max_batch_bytes} is out of range; Azure takes at most 1 MB per call, so use \
                 1..={MAX_BATCH_BYTES} (default {MAX_BATCH_BYTES})"
            ),
        ));
    }
    let timeout_text = raw.request_timeout.as_deref().unwrap_or("60s");
    let request_timeout =
        parse_duration(timeout_text).map_err(|m| invalid("request_timeout", m))?;
    if request_timeout.is_zero() {
        return Err(invalid("request_timeout", "must be more than zero".into()));
    }

    Ok(SentinelConfig {
        endpoint,
        audit_logs,
        content_logs,
        ai_interaction_logs,
        auth,
        authority_host,
        audience,
        max_concurrency,
        max_batch_bytes,
        request_timeout,
    })
}

/// True for `dcr-` followed by 32 hex digits.
pub fn is_dcr_immutable_id(text: &str) -> bool {
    text.strip_prefix("dcr-")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const DCR_A: &str = "dcr-0123456789abcdef0123456789abcdef";
    const DCR_C: &str = "dcr-fedcba9876543210fedcba9876543210";
    const CLIENT: &str = "11111111-2222-3333-4444-555555555555";

    fn base() -> String {
        format!(
            "endpoint = \"https://dce.eastus-1.ingest.monitor.azure.com\"\n\
             audit_logs_dcr = \"{DCR_A}\"\ntenant_id = \"contoso.onmicrosoft.com\"\n\
             client_id = \"{CLIENT}\"\n"
        )
    }

    fn check(
        text: &str,
        enabled: &[SourceKind],
        env: &[(&str, &str)],
    ) -> Result<SentinelConfig, ConfigError> {
        let raw: RawSentinelSink = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "t.toml".into(),
            message: e.to_string(),
        })?;
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        validate(
            raw,
            "sentinel",
            enabled,
            Path::new("/etc/m/t.toml"),
            &|k| env.get(k).cloned(),
            &|p| Path::new("/etc/m").join(p),
        )
    }

    fn err(text: &str, env: &[(&str, &str)]) -> String {
        check(text, &[SourceKind::AuditLogs], env)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = check(&base(), &[SourceKind::AuditLogs], &[]).unwrap();
        assert_eq!(c.audience, "https://monitor.azure.com");
        assert_eq!(
            c.authority_host.as_str(),
            "https://login.microsoftonline.com/"
        );
        assert_eq!(c.max_concurrency.get(), 4);
        assert_eq!(c.max_batch_bytes, 1_000_000);
        assert_eq!(c.request_timeout, Duration::from_secs(60));
        let t = c.target(SourceKind::AuditLogs).unwrap();
        assert_eq!(t.stream, "Custom-MiroAuditLogs_CL");
        assert_eq!(t.dcr_immutable_id, DCR_A);
        assert!(c.content_logs.is_none());
        assert_eq!(
            c.auth,
            AzureAuth::ClientSecret {
                tenant_id: "contoso.onmicrosoft.com".into(),
                client_id: CLIENT.into(),
                secret: SecretSource::Env("AZURE_CLIENT_SECRET".into()),
            }
        );
    }

    #[test]
    fn ids_fall_back_to_the_environment() {
        let text = format!(
            "endpoint = \"https://x.ingest.monitor.azure.com\"\naudit_logs_dcr = \"{DCR_A}\"\n\
             content_logs_dcr = \"{DCR_C}\"\ncontent_logs_stream = \"Custom-Other_CL\"\n"
        );
        let c = check(
            &text,
            &SourceKind::ALL,
            &[("AZURE_TENANT_ID", "t1"), ("AZURE_CLIENT_ID", CLIENT)],
        )
        .unwrap();
        assert!(matches!(&c.auth, AzureAuth::ClientSecret { tenant_id, .. } if tenant_id == "t1"));
        assert_eq!(
            c.target(SourceKind::ContentLogs).unwrap().stream,
            "Custom-Other_CL"
        );
    }

    #[test]
    fn clouds_and_overrides() {
        let c = check(
            &format!("{}cloud = \"us_gov\"\n", base()),
            &[SourceKind::AuditLogs],
            &[],
        )
        .unwrap();
        assert_eq!(c.audience, "https://monitor.azure.us");
        assert_eq!(
            c.authority_host.as_str(),
            "https://login.microsoftonline.us/"
        );
        let c = check(
            &format!("{}cloud = \"china\"\n", base()),
            &[SourceKind::AuditLogs],
            &[],
        )
        .unwrap();
        assert_eq!(c.audience, "https://monitor.azure.cn");
        let c = check(
            &base(),
            &[SourceKind::AuditLogs],
            &[("AZURE_AUTHORITY_HOST", "http://127.0.0.1:9/")],
        )
        .unwrap();
        assert_eq!(c.authority_host.as_str(), "http://127.0.0.1:9/");
        let c = check(
            &format!(
                "{}authority_host = \"https://login.example\"\naudience = \"https://m.example/\"\n",
                base()
            ),
            &[SourceKind::AuditLogs],
            &[("AZURE_AUTHORITY_HOST", "http://127.0.0.1:9/")],
        )
        .unwrap();
        assert_eq!(c.authority_host.as_str(), "https://login.example/");
        assert_eq!(c.audience, "https://m.example");
    }

    #[test]
    fn auth_choices() {
        let c = check(
            &format!("{}client_secret_file = \"secret\"\n", base()),
            &[SourceKind::AuditLogs],
            &[],
        )
        .unwrap();
        assert!(
            matches!(&c.auth, AzureAuth::ClientSecret { secret: SecretSource::File(p), .. } if p == Path::new("/etc/m/secret"))
        );
        let c = check(
            &base(),
            &[SourceKind::AuditLogs],
            &[("AZURE_FEDERATED_TOKEN_FILE", "/var/run/t")],
        )
        .unwrap();
        assert!(
            matches!(&c.auth, AzureAuth::FederatedToken { token_file, .. } if token_file == Path::new("/var/run/t"))
        );
        // A secret in the environment wins over the workload identity file.
        let c = check(
            &base(),
            &[SourceKind::AuditLogs],
            &[
                ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/t"),
                ("AZURE_CLIENT_SECRET", "s"),
            ],
        )
        .unwrap();
        assert!(matches!(&c.auth, AzureAuth::ClientSecret { .. }));
        let text = format!(
            "endpoint = \"https://x.ingest.monitor.azure.com\"\naudit_logs_dcr = \"{DCR_A}\"\n\
             managed_identity = true\nmanaged_identity_client_id = \"{CLIENT}\"\n"
        );
        let c = check(&text, &[SourceKind::AuditLogs], &[]).unwrap();
        match &c.auth {
            AzureAuth::ManagedIdentity {
                client_id,
                endpoint: ManagedIdentityEndpoint::Imds(url),
            } => {
                assert_eq!(client_id.as_deref(), Some(CLIENT));
                assert_eq!(url.as_str(), IMDS_URL);
            }
            other => panic!("{other:?}"),
        }
        let c = check(
            &text,
            &[SourceKind::AuditLogs],
            &[("IDENTITY_ENDPOINT", "http://localhost:42/msi/token")],
        )
        .unwrap();
        assert!(matches!(
            &c.auth,
            AzureAuth::ManagedIdentity {
                endpoint: ManagedIdentityEndpoint::IdentityEndpoint(_),
                ..
            }
        ));
    }

    #[test]
    fn each_error_names_its_key() {
        let b = base();
        let no_endpoint = b.replace(
            "endpoint = \"https://dce.eastus-1.ingest.monitor.azure.com\"\n",
            "",
        );
        for (text, env, key) in [
            (no_endpoint.clone(), vec![], "sinks.sentinel.endpoint"),
            (
                b.replace("https://dce", "http://dce"),
                vec![],
                "must be an https URL",
            ),
            (
                b.replace("https://dce.eastus-1.ingest.monitor.azure.com", "not a url"),
                vec![],
                "sinks.sentinel.endpoint",
            ),
            (
                b.replace(&format!("audit_logs_dcr = \"{DCR_A}\"\n"), ""),
                vec![],
                "sinks.sentinel.audit_logs_dcr",
            ),
            (
                b.replace(DCR_A, "my-dcr"),
                vec![],
                "is not a DCR immutable id",
            ),
            (
                b.replace(DCR_A, "dcr-0123"),
                vec![],
                "sinks.sentinel.audit_logs_dcr",
            ),
            (
                format!("{b}audit_logs_stream = \"MiroAuditLogs_CL\"\n"),
                vec![],
                "sinks.sentinel.audit_logs_stream",
            ),
            (
                b.replace("tenant_id = \"contoso.onmicrosoft.com\"\n", ""),
                vec![],
                "AZURE_TENANT_ID",
            ),
            (
                b.replace("contoso.onmicrosoft.com", "a b"),
                vec![],
                "sinks.sentinel.tenant_id",
            ),
            (
                b.replace(&format!("client_id = \"{CLIENT}\"\n"), ""),
                vec![],
                "AZURE_CLIENT_ID",
            ),
            (
                b.replace(CLIENT, "my-app"),
                vec![],
                "sinks.sentinel.client_id",
            ),
            (
                format!("{b}client_secret_env = \"A\"\nclient_secret_file = \"f\"\n"),
                vec![],
                "sinks.sentinel.client_secret_file",
            ),
            (
                format!("{b}client_secret_env = \"A=B\"\n"),
                vec![],
                "sinks.sentinel.client_secret_env",
            ),
            (
                format!("{b}client_secret_env = \"A\"\nfederated_token_file = \"f\"\n"),
                vec![],
                "sinks.sentinel.federated_token_file",
            ),
            (
                format!("{b}managed_identity = true\nclient_secret_env = \"A\"\n"),
                vec![],
                "sinks.sentinel.managed_identity",
            ),
            (
                format!("{b}managed_identity_client_id = \"{CLIENT}\"\n"),
                vec![],
                "need `managed_identity = true`",
            ),
            (
                format!("{b}managed_identity = true\nmanaged_identity_client_id = \"x\"\n"),
                vec![],
                "sinks.sentinel.managed_identity_client_id",
            ),
            (
                format!("{b}cloud = \"mars\"\n"),
                vec![],
                "sinks.sentinel.cloud",
            ),
            (
                format!("{b}authority_host = \"http://login.example\"\n"),
                vec![],
                "sinks.sentinel.authority_host",
            ),
            (
                b.clone(),
                vec![("AZURE_AUTHORITY_HOST", "nope")],
                "AZURE_AUTHORITY_HOST",
            ),
            (
                format!("{b}audience = \"monitor\"\n"),
                vec![],
                "sinks.sentinel.audience",
            ),
            (
                format!("{b}max_concurrency = 0\n"),
                vec![],
                "sinks.sentinel.max_concurrency",
            ),
            (
                format!("{b}max_concurrency = 65\n"),
                vec![],
                "sinks.sentinel.max_concurrency",
            ),
            (
                format!("{b}max_batch_bytes = 1000001\n"),
                vec![],
                "sinks.sentinel.max_batch_bytes",
            ),
            (
                format!("{b}max_batch_bytes = 0\n"),
                vec![],
                "sinks.sentinel.max_batch_bytes",
            ),
            (
                format!("{b}request_timeout = \"soon\"\n"),
                vec![],
                "sinks.sentinel.request_timeout",
            ),
            (
                format!("{b}request_timeout = \"0s\"\n"),
                vec![],
                "sinks.sentinel.request_timeout",
            ),
            (
                format!("{b}client_sercet_env = \"A\"\n"),
                vec![],
                "client_sercet_env",
            ),
        ] {
            let msg = err(&text, &env);
            assert!(msg.contains(key), "{text}\n=> {msg}");
        }
    }

    #[test]
    fn the_dcr_of_an_enabled_source_is_required() {
        let e = check(&base(), &SourceKind::ALL, &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sinks.sentinel.content_logs_dcr") && e.contains("content_logs is enabled"),
            "{e}"
        );
        // A disabled source needs no DCR.
        assert!(check(&base(), &[SourceKind::AuditLogs], &[]).is_ok());
    }

    /// The AI interaction logs table is mirotrail's own: its DCR is optional even when the
    /// source is enabled (the stream is then not sent to the sink), and checked when set.
    #[test]
    fn the_ai_interaction_logs_dcr_is_optional_and_checked_when_set() {
        let enabled = [SourceKind::AuditLogs, SourceKind::AiInteractionLogs];
        let c = check(&base(), &enabled, &[]).unwrap();
        assert!(c.target(SourceKind::AiInteractionLogs).is_none());
        let dcr = "dcr-A1A1A000000000000000000000000003";
        let text = format!("{}ai_interaction_logs_dcr = \"{dcr}\"\n", base());
        let c = check(&text, &enabled, &[]).unwrap();
        let target = c.target(SourceKind::AiInteractionLogs).unwrap();
        assert_eq!(target.dcr_immutable_id, dcr.to_ascii_lowercase());
        assert_eq!(target.stream, "Custom-MiroAiInteractionLogs_CL");
        let text = format!("{}ai_interaction_logs_dcr = \"my-rule\"\n", base());
        let e = check(&text, &enabled, &[]).unwrap_err().to_string();
        assert!(e.contains("sinks.sentinel.ai_interaction_logs_dcr"), "{e}");
    }
}
