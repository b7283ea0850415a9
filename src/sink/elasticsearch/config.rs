//! `[sinks.NAME]` with `type = "elasticsearch"`: the keys as written (`RawElasticSink`)
//! and their validated form (`ElasticConfig`). Defaults are justified in the README.
//!
//! Validation resolves every default once; the credential (an API key, or a user's
//! password) is only named here (a variable or a file) and read when the sink is built,
//! into a `SecretString`.

use std::path::PathBuf;

use serde::Deserialize;
use url::Url;

use crate::net::secure_url;
use crate::secret::SecretSource;
use crate::settings::ConfigError;
use crate::sink::http::{HttpDefaults, http_keys, secret_source, validate_http};
use crate::sink::{HttpOptions, SinkContext, SinkKindConfig, ValidatedSink};
use crate::source::SourceKind;

/// The keys of an `elasticsearch` sink.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawElasticSink {
    /// The cluster URL, `https://HOST:9200` (a path prefix of a proxy is kept), or a list
    /// of node URLs of one cluster, tried in turn when one does not answer.
    pub endpoint: Option<RawEndpoints>,
    /// Environment variable holding the API key, the base64 `id:api_key` form that
    /// Elasticsearch shows as `encoded` (default `ELASTICSEARCH_API_KEY`).
    pub api_key_env: Option<String>,
    /// File holding the API key.
    pub api_key_file: Option<PathBuf>,
    /// Basic authentication user (instead of an API key).
    pub username: Option<String>,
    /// Environment variable holding the user's password (default `ELASTICSEARCH_PASSWORD`).
    pub password_env: Option<String>,
    /// File holding the user's password.
    pub password_file: Option<PathBuf>,
    /// Data stream or index of audit log documents (default `logs-miro.audit-default`).
    pub audit_logs_target: Option<String>,
    /// Data stream or index of content log documents (default `logs-miro.content-default`).
    pub content_logs_target: Option<String>,
    /// Data stream or index of AI interaction log documents (default `logs-miro.ai-default`).
    pub ai_interaction_logs_target: Option<String>,
    /// Compress request bodies with gzip (default true).
    pub gzip: Option<bool>,
    /// PEM file of the CA that signed the cluster's certificate (private CAs);
    /// verification stays on either way.
    pub ca_file: Option<PathBuf>,
    /// Uncompressed bytes per `_bulk` request (default 5000000).
    pub max_batch_bytes: Option<usize>,
    /// Timeout of one request (default `60s`).
    pub request_timeout: Option<String>,
    /// Rows read from the store per delivery round (default 5000).
    pub batch_rows: Option<usize>,
    /// Where a new sink starts: `beginning` (default) or `now`.
    pub start: Option<String>,
}

/// `endpoint` as written: one URL or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawEndpoints {
    One(String),
    Many(Vec<String>),
}

/// How the sink authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElasticAuth {
    /// `Authorization: ApiKey <encoded>`.
    ApiKey(SecretSource),
    /// `Authorization: Basic base64(user:password)`.
    Basic {
        username: String,
        password: SecretSource,
    },
}

/// A validated `elasticsearch` sink.
#[derive(Debug, Clone)]
pub struct ElasticConfig {
    /// The node URLs (at least one), without a trailing slash in their paths.
    pub endpoints: Vec<Url>,
    pub auth: ElasticAuth,
    pub audit_logs_target: String,
    pub content_logs_target: String,
    pub ai_interaction_logs_target: String,
    /// `gzip`, `ca_file`, `max_batch_bytes`, `request_timeout`.
    pub http: HttpOptions,
    /// The config has several organisations (`[[orgs]]`): a document's `_id` is
    /// `<org_id>:<Miro id>`, since Miro ids are unique only per organisation (with one
    /// organisation it is the Miro id). Set from the whole config, not a sink key.
    pub org_in_id: bool,
}

impl ElasticConfig {
    /// The data stream or index of `source`'s documents.
    pub fn target(&self, source: SourceKind) -> &str {
        match source {
            SourceKind::AuditLogs => &self.audit_logs_target,
            SourceKind::ContentLogs => &self.content_logs_target,
            SourceKind::AiInteractionLogs => &self.ai_interaction_logs_target,
        }
    }

    /// The first `endpoint` + `path` (`/_bulk`, `/`), keeping a proxy's path prefix.
    pub fn url(&self, path: &str) -> Url {
        self.node_url(0, path)
    }

    /// Node `node` (modulo their number) + `path`.
    pub fn node_url(&self, node: usize, path: &str) -> Url {
        let mut url = self.endpoints[node % self.endpoints.len()].clone();
        let prefix = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{prefix}{path}"));
        url
    }
}

/// The default API key variable.
pub(super) const DEFAULT_API_KEY_ENV: &str = "ELASTICSEARCH_API_KEY";
/// The default password variable.
pub(super) const DEFAULT_PASSWORD_ENV: &str = "ELASTICSEARCH_PASSWORD";
/// The defaults of the keys every HTTP sink has.
const HTTP_DEFAULTS: HttpDefaults = HttpDefaults {
    max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
    request_timeout: "60s",
    server: "the cluster",
};

/// The default uncompressed bytes per request: well under Elasticsearch's default
/// `http.max_content_length` (100mb) and in the range its docs suggest for bulk requests.
pub(super) const DEFAULT_MAX_BATCH_BYTES: usize = 5_000_000;

/// Whether `name` can be an index or data stream name (Elasticsearch's rules: lowercase,
/// none of `\ / * ? " < > | , #` or a space, not starting with `-`, `_` or `+`, not `.`
/// or `..`, at most 255 bytes).
fn is_index_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.starts_with(['-', '_', '+'])
        && !name
            .chars()
            .any(|c| c.is_uppercase() || c.is_whitespace() || "\\/*?\"<>|,#:".contains(c))
}

pub(in crate::sink) fn validate(
    raw: RawElasticSink,
    cx: &SinkContext<'_>,
) -> Result<ValidatedSink, ConfigError> {
    let texts = match raw.endpoint {
        None => {
            return Err(cx.invalid(
                "endpoint",
                "is required: the Elasticsearch or OpenSearch URL, like \
                 https://es.example.com:9200 (Elastic Cloud: the Elasticsearch endpoint of the \
                 deployment), or a list of node URLs"
                    .into(),
            ));
        }
        Some(RawEndpoints::One(t)) => vec![t],
        Some(RawEndpoints::Many(list)) if list.is_empty() => {
            return Err(cx.invalid(
                "endpoint",
                "is an empty list: give at least one node URL".into(),
            ));
        }
        Some(RawEndpoints::Many(list)) => list,
    };
    let mut endpoints = Vec::with_capacity(texts.len());
    for text in &texts {
        let mut endpoint = secure_url(text).map_err(|m| cx.invalid("endpoint", m))?;
        if endpoint.query().is_some() {
            return Err(cx.invalid(
                "endpoint",
                format!("`{text}` has a query: give the cluster URL only; mirotrail adds /_bulk"),
            ));
        }
        let path = endpoint.path().trim_end_matches('/').to_string();
        if path.ends_with("/_bulk") {
            return Err(cx.invalid(
                "endpoint",
                format!(
                    "`{text}` ends in /_bulk: give the cluster URL only; mirotrail adds /_bulk"
                ),
            ));
        }
        endpoint.set_path(&path);
        endpoints.push(endpoint);
    }

    let auth = match &raw.username {
        Some(user) => {
            if raw.api_key_env.is_some() || raw.api_key_file.is_some() {
                return Err(cx.invalid(
                    "username",
                    "set either an API key (`api_key_env`/`api_key_file`) or a user \
                     (`username` with `password_env`/`password_file`), not both"
                        .into(),
                ));
            }
            if user.trim().is_empty() || user.contains(':') {
                return Err(cx.invalid(
                    "username",
                    format!("`{user}` is empty or holds `:`; write the user name alone"),
                ));
            }
            ElasticAuth::Basic {
                username: user.clone(),
                password: secret_source(
                    cx,
                    ("password_env", &raw.password_env),
                    ("password_file", &raw.password_file),
                    DEFAULT_PASSWORD_ENV,
                )?,
            }
        }
        None => {
            if raw.password_env.is_some() || raw.password_file.is_some() {
                return Err(cx.invalid(
                    "username",
                    "is required with `password_env`/`password_file`: name the user the \
                     password belongs to (or use an API key: `api_key_env`)"
                        .into(),
                ));
            }
            ElasticAuth::ApiKey(secret_source(
                cx,
                ("api_key_env", &raw.api_key_env),
                ("api_key_file", &raw.api_key_file),
                DEFAULT_API_KEY_ENV,
            )?)
        }
    };
    let http = validate_http(&HTTP_DEFAULTS, cx, http_keys!(raw))?;

    let target = |key: &str, value: Option<String>, default: &str| {
        let v = value.unwrap_or_else(|| default.to_string());
        if is_index_name(&v) {
            Ok(v)
        } else {
            Err(cx.invalid(
                key,
                format!(
                    "`{v}` is not an index or data stream name: lowercase, no spaces or any \
                     of \\ / * ? \" < > | , # :, not starting with - _ +"
                ),
            ))
        }
    };
    let audit_logs_target = target(
        "audit_logs_target",
        raw.audit_logs_target,
        "logs-miro.audit-default",
    )?;
    let content_logs_target = target(
        "content_logs_target",
        raw.content_logs_target,
        "logs-miro.content-default",
    )?;
    let ai_interaction_logs_target = target(
        "ai_interaction_logs_target",
        raw.ai_interaction_logs_target,
        "logs-miro.ai-default",
    )?;
    Ok(ValidatedSink {
        kind: SinkKindConfig::Elastic(Box::new(ElasticConfig {
            endpoints,
            auth,
            audit_logs_target,
            content_logs_target,
            ai_interaction_logs_target,
            http,
            org_in_id: false,
        })),
        batch_rows: raw.batch_rows,
        start: raw.start,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sink::http::validate_section;

    fn load(keys: &str) -> Result<ElasticConfig, String> {
        match validate_section(keys, "https://es.example.com:9200", validate)? {
            SinkKindConfig::Elastic(c) => Ok(*c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_minimal_section_gets_the_documented_defaults() {
        let c = load("").unwrap();
        assert_eq!(
            c.url("/_bulk").as_str(),
            "https://es.example.com:9200/_bulk"
        );
        assert_eq!(
            c.auth,
            ElasticAuth::ApiKey(SecretSource::Env("ELASTICSEARCH_API_KEY".into()))
        );
        assert_eq!(c.target(SourceKind::AuditLogs), "logs-miro.audit-default");
        assert_eq!(
            c.target(SourceKind::ContentLogs),
            "logs-miro.content-default"
        );
        assert_eq!(
            c.target(SourceKind::AiInteractionLogs),
            "logs-miro.ai-default"
        );
        assert!(c.http.gzip);
        assert_eq!(c.http.max_batch_bytes, 5_000_000);
        assert_eq!(c.http.request_timeout, Duration::from_secs(60));
    }

    #[test]
    fn basic_auth_a_proxy_prefix_and_targets_are_read() {
        let c = load(
            "endpoint = \"https://proxy.example.com/es/\"\nusername = \"shipper\"\n\
             password_file = \"pw\"\naudit_logs_target = \"miro-audit\"\ngzip = false\n",
        )
        .unwrap();
        assert_eq!(
            c.url("/_bulk").as_str(),
            "https://proxy.example.com/es/_bulk"
        );
        assert_eq!(
            c.auth,
            ElasticAuth::Basic {
                username: "shipper".into(),
                password: SecretSource::File("/etc/mirotrail/pw".into())
            }
        );
        assert_eq!(c.target(SourceKind::AuditLogs), "miro-audit");
        assert!(!c.http.gzip);
        let c = load("endpoint = [\"https://n1:9200\", \"https://n2:9200/\"]").unwrap();
        assert_eq!(c.node_url(1, "/_bulk").as_str(), "https://n2:9200/_bulk");
        assert_eq!(c.node_url(2, "/_bulk").as_str(), "https://n1:9200/_bulk");
    }

    #[test]
    fn each_bad_value_names_its_key_and_the_fix() {
        for (keys, words) in [
            (
                "endpoint = \"http://es.example.com:9200\"",
                "sinks.s.endpoint",
            ),
            (
                "endpoint = \"https://es.example.com/_bulk\"",
                "cluster URL only",
            ),
            ("api_key_env = \"A\"\napi_key_file = \"b\"", "not both"),
            ("username = \"u\"\napi_key_env = \"A\"", "not both"),
            ("password_env = \"P\"", "sinks.s.username"),
            (
                "audit_logs_target = \"Miro Audit\"",
                "sinks.s.audit_logs_target",
            ),
            ("content_logs_target = \"_x\"", "not an index"),
            ("max_batch_bytes = 10", "at least 1024"),
            ("ca_file = \"/nonexistent/ca.pem\"", "sinks.s.ca_file"),
            ("api_kye_env = \"X\"", "api_kye_env"),
            ("endpoint = []", "empty list"),
            (
                "endpoint = [\"https://n1:9200\", \"http://n2:9200\"]",
                "sinks.s.endpoint",
            ),
        ] {
            let e = load(keys).unwrap_err();
            assert!(e.contains(words), "{keys}: {e}");
        }
        assert!(load("endpoint = \"http://127.0.0.1:9200\"").is_ok());
    }
}
