//! `[sinks.NAME]` with `type = "splunk_hec"`: the keys as written (`RawSplunkSink`) and
//! their validated form (`SplunkConfig`). Defaults are justified in the README.
//!
//! Validation resolves every default once; the token is only named here (a variable or a
//! file) and read when the sink is built, into a `SecretString`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::net::secure_url;
use crate::secret::SecretSource;
use crate::settings::ConfigError;
use crate::sink::http::{HttpDefaults, http_keys, positive_duration, secret_source, validate_http};
use crate::sink::{HttpOptions, SinkContext, SinkKindConfig, ValidatedSink};
use crate::source::SourceKind;

/// `ack` as written: `true`, `false` or `"auto"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawAck {
    Bool(bool),
    Text(String),
}

/// The keys of a `splunk_hec` sink.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSplunkSink {
    /// The HEC base URL, `https://HOST:8088` (a path up to `/services/collector` is accepted).
    pub endpoint: Option<String>,
    /// Environment variable holding the HEC token (default `SPLUNK_HEC_TOKEN`).
    pub token_env: Option<String>,
    /// File holding the HEC token.
    pub token_file: Option<PathBuf>,
    /// Index of every event (default: none sent, so the token's default index).
    pub index: Option<String>,
    /// Sourcetype of audit log events (default `miro:audit`).
    pub audit_logs_sourcetype: Option<String>,
    /// Sourcetype of content log events (default `miro:content`).
    pub content_logs_sourcetype: Option<String>,
    /// Sourcetype of AI interaction log entries (default `miro:ai`).
    pub ai_interaction_logs_sourcetype: Option<String>,
    /// The `host` field (default: none sent, so HEC's own).
    pub host: Option<String>,
    /// The `source` field (default `mirotrail`).
    pub source: Option<String>,
    /// Indexer acknowledgement: `"auto"` (default), `true` or `false`.
    pub ack: Option<RawAck>,
    /// How long to wait for indexer acknowledgement before sending again (default `5m`).
    pub ack_timeout: Option<String>,
    /// How often to ask for acknowledgements (default `1s`).
    pub ack_poll_interval: Option<String>,
    /// Compress request bodies with gzip (default true).
    pub gzip: Option<bool>,
    /// PEM file of the CA that signed the HEC's certificate (private CAs); verification
    /// stays on either way.
    pub ca_file: Option<PathBuf>,
    /// Uncompressed bytes per request (default 1000000).
    pub max_batch_bytes: Option<usize>,
    /// Timeout of one request (default `60s`).
    pub request_timeout: Option<String>,
    /// Rows read from the store per delivery round (default 5000).
    pub batch_rows: Option<usize>,
    /// Where a new sink starts: `beginning` (default) or `now`.
    pub start: Option<String>,
}

/// Whether the sink uses indexer acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Always: a token without it is a configuration error.
    On,
    /// Never: a 200 is the acknowledgement; no channel is sent.
    Off,
    /// When the HEC answers with an `ackId` (the token has it on); else a 200 is the
    /// acknowledgement.
    Auto,
}

/// A validated `splunk_hec` sink.
#[derive(Debug, Clone)]
pub struct SplunkConfig {
    /// The base URL (no path): endpoints are appended to it.
    pub endpoint: Url,
    pub token: SecretSource,
    pub index: Option<String>,
    pub audit_logs_sourcetype: String,
    pub content_logs_sourcetype: String,
    pub ai_interaction_logs_sourcetype: String,
    pub host: Option<String>,
    pub source: String,
    pub ack: AckMode,
    pub ack_timeout: Duration,
    pub ack_poll_interval: Duration,
    /// `gzip`, `ca_file`, `max_batch_bytes`, `request_timeout`.
    pub http: HttpOptions,
}

impl SplunkConfig {
    pub fn sourcetype(&self, source: SourceKind) -> &str {
        match source {
            SourceKind::AuditLogs => &self.audit_logs_sourcetype,
            SourceKind::ContentLogs => &self.content_logs_sourcetype,
            SourceKind::AiInteractionLogs => &self.ai_interaction_logs_sourcetype,
        }
    }

    /// `endpoint` + `path` (`/services/collector/event`, ...).
    pub fn url(&self, path: &str) -> Url {
        let mut url = self.endpoint.clone();
        url.set_path(path);
        url
    }
}

/// The default token variable.
pub(super) const DEFAULT_TOKEN_ENV: &str = "SPLUNK_HEC_TOKEN";
/// The defaults of the keys every HTTP sink has.
const HTTP_DEFAULTS: HttpDefaults = HttpDefaults {
    max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
    request_timeout: "60s",
    server: "the HEC",
};

/// The default uncompressed bytes per request: Splunk Cloud's documented request limit.
pub(super) const DEFAULT_MAX_BATCH_BYTES: usize = 1_000_000;

pub(in crate::sink) fn validate(
    raw: RawSplunkSink,
    cx: &SinkContext<'_>,
) -> Result<ValidatedSink, ConfigError> {
    let text = raw.endpoint.as_deref().ok_or_else(|| {
        cx.invalid(
            "endpoint",
            "is required: the HTTP Event Collector URL, like https://splunk.example.com:8088 \
             (Splunk Cloud: https://http-inputs-STACK.splunkcloud.com)"
                .into(),
        )
    })?;
    let mut endpoint = secure_url(text).map_err(|m| cx.invalid("endpoint", m))?;
    let path = endpoint.path().trim_end_matches('/').to_string();
    let base = ["/services/collector/event", "/services/collector"]
        .iter()
        .find_map(|p| path.strip_suffix(p))
        .unwrap_or(&path)
        .to_string();
    if !base.is_empty() {
        return Err(cx.invalid(
            "endpoint",
            format!(
                "`{text}` has a path: give the HEC base URL only (scheme, host and port, \
                 like https://splunk.example.com:8088); mirotrail adds /services/collector/..."
            ),
        ));
    }
    endpoint.set_path("");
    endpoint.set_query(None);

    let token = secret_source(
        cx,
        ("token_env", &raw.token_env),
        ("token_file", &raw.token_file),
        DEFAULT_TOKEN_ENV,
    )?;

    let name_value = |key: &str, value: Option<String>, default: Option<&str>| {
        let value = value.or_else(|| default.map(str::to_string));
        match value {
            Some(v) if v.trim().is_empty() || v.trim() != v => Err(cx.invalid(
                key,
                format!("`{v}` is empty or has leading or trailing spaces; write the name alone"),
            )),
            other => Ok(other),
        }
    };
    let index = name_value("index", raw.index, None)?;
    if let Some(i) = &index
        && !i
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(cx.invalid(
            "index",
            format!(
                "`{i}` is not a Splunk index name: lowercase letters, digits, `_` and `-` only"
            ),
        ));
    }
    let audit_logs_sourcetype = name_value(
        "audit_logs_sourcetype",
        raw.audit_logs_sourcetype,
        Some("miro:audit"),
    )?
    .expect("default");
    let content_logs_sourcetype = name_value(
        "content_logs_sourcetype",
        raw.content_logs_sourcetype,
        Some("miro:content"),
    )?
    .expect("default");
    let ai_interaction_logs_sourcetype = name_value(
        "ai_interaction_logs_sourcetype",
        raw.ai_interaction_logs_sourcetype,
        Some("miro:ai"),
    )?
    .expect("default");
    let host = name_value("host", raw.host, None)?;
    let source = name_value("source", raw.source, Some("mirotrail"))?.expect("default");

    let ack = match raw.ack {
        None => AckMode::Auto,
        Some(RawAck::Bool(true)) => AckMode::On,
        Some(RawAck::Bool(false)) => AckMode::Off,
        Some(RawAck::Text(t)) if t == "auto" => AckMode::Auto,
        Some(RawAck::Text(t)) => {
            return Err(cx.invalid(
                "ack",
                format!("`{t}` is not a choice: write true, false or \"auto\" (the default)"),
            ));
        }
    };
    let ack_timeout = positive_duration(cx, "ack_timeout", raw.ack_timeout, "5m")?;
    let ack_poll_interval =
        positive_duration(cx, "ack_poll_interval", raw.ack_poll_interval, "1s")?;
    if ack_poll_interval >= ack_timeout {
        return Err(cx.invalid(
            "ack_poll_interval",
            "must be shorter than `ack_timeout`, or no acknowledgement could ever be asked for"
                .into(),
        ));
    }
    let http = validate_http(&HTTP_DEFAULTS, cx, http_keys!(raw))?;
    Ok(ValidatedSink {
        kind: SinkKindConfig::Splunk(Box::new(SplunkConfig {
            endpoint,
            token,
            index,
            audit_logs_sourcetype,
            content_logs_sourcetype,
            ai_interaction_logs_sourcetype,
            host,
            source,
            ack,
            ack_timeout,
            ack_poll_interval,
            http,
        })),
        batch_rows: raw.batch_rows,
        start: raw.start,
    })
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::sink::http::validate_section;

    /// Validates a `[sinks.s]` section as the config loader does (keys relative to
    /// /etc/mirotrail).
    fn load(keys: &str) -> Result<SplunkConfig, String> {
        match validate_section(keys, "https://hec.example.com:8088", validate)? {
            SinkKindConfig::Splunk(c) => Ok(*c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_minimal_section_gets_the_documented_defaults() {
        let c = load("").unwrap();
        assert_eq!(c.endpoint.as_str(), "https://hec.example.com:8088/");
        assert_eq!(c.token, SecretSource::Env("SPLUNK_HEC_TOKEN".into()));
        assert_eq!(c.index, None);
        assert_eq!(c.sourcetype(SourceKind::AuditLogs), "miro:audit");
        assert_eq!(c.sourcetype(SourceKind::ContentLogs), "miro:content");
        assert_eq!(c.sourcetype(SourceKind::AiInteractionLogs), "miro:ai");
        assert_eq!((c.host.as_deref(), c.source.as_str()), (None, "mirotrail"));
        assert_eq!(c.ack, AckMode::Auto);
        assert_eq!(c.ack_timeout, Duration::from_secs(300));
        assert_eq!(c.ack_poll_interval, Duration::from_secs(1));
        assert!(c.http.gzip);
        assert_eq!(c.http.max_batch_bytes, 1_000_000);
        assert_eq!(c.http.request_timeout, Duration::from_secs(60));
        assert_eq!(
            c.url("/services/collector/event").as_str(),
            "https://hec.example.com:8088/services/collector/event"
        );
    }

    #[test]
    fn keys_are_read_and_the_collector_path_is_accepted() {
        let c = load(
            "endpoint = \"https://hec.example.com/services/collector/event\"\nack = true\n\
             token_file = \"tok\"\nindex = \"miro_audit\"\naudit_logs_sourcetype = \"a:b\"\n\
             host = \"collector-1\"\ngzip = false\n",
        )
        .unwrap();
        assert_eq!(c.endpoint.as_str(), "https://hec.example.com/");
        assert_eq!(c.ack, AckMode::On);
        assert_eq!(c.token, SecretSource::File("/etc/mirotrail/tok".into()));
        assert_eq!(c.index.as_deref(), Some("miro_audit"));
        assert_eq!(c.sourcetype(SourceKind::AuditLogs), "a:b");
        assert_eq!(c.host.as_deref(), Some("collector-1"));
        assert!(!c.http.gzip);
        assert_eq!(load("ack = false").unwrap().ack, AckMode::Off);
        assert_eq!(load("ack = \"auto\"").unwrap().ack, AckMode::Auto);
    }

    #[test]
    fn each_bad_value_names_its_key_and_the_fix() {
        for (keys, words) in [
            (
                "endpoint = \"http://hec.example.com:8088\"",
                "sinks.s.endpoint",
            ),
            (
                "endpoint = \"https://hec.example.com/splunk\"",
                "base URL only",
            ),
            ("ack = \"yes\"", "true, false or \"auto\""),
            ("index = \"Main Index\"", "sinks.s.index"),
            ("token_env = \"A\"\ntoken_file = \"b\"", "not both"),
            (
                "ack_timeout = \"1s\"\nack_poll_interval = \"2s\"",
                "shorter than",
            ),
            ("max_batch_bytes = 10", "at least 1024"),
            ("ca_file = \"/nonexistent/ca.pem\"", "sinks.s.ca_file"),
            ("audit_logs_sourcetype = \"\"", "empty"),
            ("tokn_env = \"X\"", "tokn_env"),
        ] {
            let e = load(keys).unwrap_err();
            assert!(e.contains(words), "{keys}: {e}");
        }
        // Plain http is fine to loopback only (the token travels).
        assert!(load("endpoint = \"http://127.0.0.1:8088\"").is_ok());
    }
}
