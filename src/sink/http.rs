//! What the sinks that POST batches to an HTTP endpoint share (Splunk HEC, Elasticsearch;
//! any later one of the kind): validating their common keys (a secret named by a
//! `*_env`/`*_file` pair, `ca_file`, `request_timeout`, `max_batch_bytes`, `gzip`),
//! building their client, reading their secret, and taking one request's answer.
//! Each sink keeps its own words for what the secret is and how to get one.
//!
//! Invariants: certificate verification is never turned off (a `ca_file` adds roots to
//! the system's); an answer body is read under a cap; a secret is only named at
//! validation and read when the sink is built, into a `SecretString`.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use secrecy::SecretString;

use crate::net::{error_chain, read_body_capped};
use crate::secret::{ReadSecretError, SecretSource, read_secret};
use crate::settings::{ConfigError, parse_duration};
use crate::sink::SinkContext;

/// A sink's defaults for [`RawHttpKeys`], and what its server is called in messages.
pub(in crate::sink) struct HttpDefaults {
    pub max_batch_bytes: usize,
    pub request_timeout: &'static str,
    /// `the HEC`, `the cluster`: whose certificate a `ca_file` signed.
    pub server: &'static str,
}

/// The common keys of an HTTP sink, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// Compress request bodies.
    pub gzip: bool,
    /// Resolved against the config file's folder, and readable at validation.
    pub ca_file: Option<PathBuf>,
    /// At least 1024.
    pub max_batch_bytes: usize,
    /// Longer than zero.
    pub request_timeout: Duration,
}

/// How patient an HTTP sink is with one request: up to 5 transient failures and 10
/// throttled answers, backing off from 500 ms up to 30 s (Splunk HEC and Elasticsearch).
pub(in crate::sink) const RETRY_POLICY: crate::retry::Policy = crate::retry::Policy {
    max_retries: 5,
    max_throttled: Some(10),
    backoff_base: Duration::from_millis(500),
    backoff_cap: Duration::from_secs(30),
};

/// The smallest `max_batch_bytes` accepted: one row of a few hundred bytes must fit.
const MIN_BATCH_BYTES: usize = 1024;

/// The common keys as written, in a sink's raw section: `gzip`, `ca_file`,
/// `max_batch_bytes`, `request_timeout`.
pub(in crate::sink) type RawHttpKeys =
    (Option<bool>, Option<PathBuf>, Option<usize>, Option<String>);

/// Moves the common keys out of a sink's raw section (a struct with the fields `gzip`,
/// `ca_file`, `max_batch_bytes` and `request_timeout`) for [`validate_http`].
macro_rules! http_keys {
    ($raw:expr) => {
        (
            $raw.gzip,
            $raw.ca_file,
            $raw.max_batch_bytes,
            $raw.request_timeout,
        )
    };
}
pub(in crate::sink) use http_keys;

/// Validates the common keys as written, filling in `defaults`.
pub(in crate::sink) fn validate_http(
    defaults: &HttpDefaults,
    cx: &SinkContext<'_>,
    (gzip, ca_file, max_batch_bytes, request_timeout): RawHttpKeys,
) -> Result<HttpOptions, ConfigError> {
    let request_timeout = positive_duration(
        cx,
        "request_timeout",
        request_timeout,
        defaults.request_timeout,
    )?;
    let max_batch_bytes = max_batch_bytes.unwrap_or(defaults.max_batch_bytes);
    if max_batch_bytes < MIN_BATCH_BYTES {
        return Err(cx.invalid(
            "max_batch_bytes",
            format!(
                "{max_batch_bytes} is too small: at least {MIN_BATCH_BYTES} (default {})",
                defaults.max_batch_bytes
            ),
        ));
    }
    let ca_file = ca_file.map(|f| (cx.resolve)(&f));
    if let Some(f) = &ca_file
        && let Err(e) = std::fs::metadata(f)
    {
        return Err(cx.invalid(
            "ca_file",
            format!(
                "cannot read {}: {e}; give the PEM file of the CA that signed {}'s certificate",
                f.display(),
                defaults.server
            ),
        ));
    }
    Ok(HttpOptions {
        gzip: gzip.unwrap_or(true),
        ca_file,
        max_batch_bytes,
        request_timeout,
    })
}

/// A duration key that must be longer than zero (`default` when absent).
pub(in crate::sink) fn positive_duration(
    cx: &SinkContext<'_>,
    key: &str,
    value: Option<String>,
    default: &str,
) -> Result<Duration, ConfigError> {
    let d = parse_duration(value.as_deref().unwrap_or(default)).map_err(|m| cx.invalid(key, m))?;
    if d.is_zero() {
        return Err(cx.invalid(key, "must be longer than zero".into()));
    }
    Ok(d)
}

/// Where a secret named by the pair `env_key`/`file_key` is read from: the file (resolved
/// against the config's folder), the variable, or `default_env`; both set is an error.
pub(in crate::sink) fn secret_source(
    cx: &SinkContext<'_>,
    (env_key, env): (&str, &Option<String>),
    (file_key, file): (&str, &Option<PathBuf>),
    default_env: &str,
) -> Result<SecretSource, ConfigError> {
    match (env, file) {
        (Some(_), Some(_)) => Err(cx.invalid(
            file_key,
            format!("set either `{file_key}` or `{env_key}`, not both"),
        )),
        (_, Some(f)) => Ok(SecretSource::File((cx.resolve)(f))),
        (Some(v), None) => Ok(SecretSource::Env(v.clone())),
        (None, None) => Ok(SecretSource::Env(default_env.into())),
    }
}

/// Reads a sink's secret from the process environment or its file. The error says where
/// it was looked for and what is wrong (`the environment variable X is not set`); the
/// sink adds what the secret is and how to get one.
#[allow(
    clippy::disallowed_methods,
    reason = "config loading: the secret comes from the variable the sink config names"
)]
pub(in crate::sink) fn read_sink_secret(source: &SecretSource) -> Result<SecretString, String> {
    read_secret(source, &|v| std::env::var(v).ok()).map_err(|e| {
        let why = match e {
            ReadSecretError::NotSet => "is not set".to_string(),
            ReadSecretError::Unreadable(e) => format!("cannot be read ({e})"),
            ReadSecretError::Empty => "is empty".to_string(),
        };
        format!("{source} {why}")
    })
}

/// Validates the section `keys` (with `endpoint` when `keys` names none) as the config
/// loader does, with paths relative to /etc/mirotrail and the sink named `s`: the unit
/// tests of each HTTP sink's keys.
#[cfg(test)]
pub(in crate::sink) fn validate_section<R: serde::de::DeserializeOwned>(
    keys: &str,
    endpoint: &str,
    validate: fn(R, &SinkContext<'_>) -> Result<crate::sink::ValidatedSink, ConfigError>,
) -> Result<crate::sink::SinkKindConfig, String> {
    use std::path::Path;
    let endpoint = if keys.contains("endpoint") {
        String::new()
    } else {
        format!("endpoint = \"{endpoint}\"\n")
    };
    let raw: R = toml::from_str(&format!("{endpoint}{keys}")).map_err(|e| e.to_string())?;
    let resolve = |p: &Path| Path::new("/etc/mirotrail").join(p);
    let cx = SinkContext {
        name: "s",
        enabled: &[],
        path: Path::new("/etc/mirotrail/m.toml"),
        env: &|_| None,
        resolve: &resolve,
    };
    Ok(validate(raw, &cx).map_err(|e| e.to_string())?.kind)
}

/// Why [`client`] failed.
#[derive(Debug)]
pub(in crate::sink) enum ClientError {
    /// The `ca_file` cannot be read or holds no certificate: the message for the admin.
    CaFile(String),
    /// The HTTP client could not be built.
    Build(reqwest::Error),
}

/// The HTTP client of a sink: mirotrail's user agent, `request_timeout` per request, and
/// the certificates of `ca_file` added to the system's roots.
pub(in crate::sink) fn client(options: &HttpOptions) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .timeout(options.request_timeout)
        .user_agent(crate::net::USER_AGENT);
    if let Some(file) = &options.ca_file {
        let pem = std::fs::read(file).map_err(|e| {
            ClientError::CaFile(format!("cannot read `ca_file` {}: {e}", file.display()))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            ClientError::CaFile(format!(
                "`ca_file` {} holds no PEM certificate ({e}); give the CA certificate in PEM \
                 form (-----BEGIN CERTIFICATE-----)",
                file.display()
            ))
        })?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(ClientError::Build)
}

/// A server's answer to one request.
pub(in crate::sink) struct HttpAnswer {
    pub status: u16,
    /// `Retry-After` in seconds, when the server sent one.
    pub retry_after: Option<Duration>,
    /// At most the cap given to [`send`].
    pub body: Vec<u8>,
}

/// Sends `request` and reads the answer's body up to `max_body_bytes`. `Err` is the
/// reason to retry: no answer (the server may or may not have the batch), or an answer
/// that could not be read in full.
pub(in crate::sink) async fn send(
    request: reqwest::RequestBuilder,
    max_body_bytes: usize,
) -> Result<HttpAnswer, String> {
    let response = request
        .send()
        .await
        .map_err(|e| format!("no answer: {}", error_chain(&e.without_url())))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = read_body_capped(response, max_body_bytes)
        .await
        .map_err(|e| format!("the answer ({status}) could not be read: {e}"))?;
    Ok(HttpAnswer {
        status,
        retry_after,
        body,
    })
}
