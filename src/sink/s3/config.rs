//! `[sinks.NAME]` with `type = "s3"`: the keys as written (`RawS3Sink`) and their
//! validated form (`S3Config`). Defaults are justified in the README.
//!
//! Validation resolves every default once. Static keys are only named here (variables or
//! files, `secret.rs`) and read when the client is built; without them the standard AWS
//! credential chain is used (`docs/s3.md`, "Credentials").

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::net::secure_url;
use crate::secret::SecretSource;
use crate::settings::{ConfigError, parse_duration};
use crate::sink::{RecordFormat, SinkContext, SinkKindConfig, ValidatedSink};

/// The keys of an `s3` sink.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawS3Sink {
    /// The bucket objects are written to (required).
    pub bucket: Option<String>,
    /// Key prefix of every object (default none), like `miro/` or `logs/miro`.
    pub prefix: Option<String>,
    /// The bucket's region (default: from the AWS chain, `AWS_REGION` or the profile).
    pub region: Option<String>,
    /// An S3-compatible endpoint (MinIO, R2, ...); default: AWS's own for the region.
    pub endpoint: Option<String>,
    /// Address buckets as `ENDPOINT/BUCKET/KEY` instead of `BUCKET.ENDPOINT/KEY` (MinIO and
    /// most S3-compatible servers need it; default false).
    pub force_path_style: Option<bool>,
    /// The named profile of the AWS config files to take credentials and region from.
    pub profile: Option<String>,
    /// Environment variable holding a static access key id (with `secret_access_key_*`).
    pub access_key_id_env: Option<String>,
    /// File holding the static access key id.
    pub access_key_id_file: Option<PathBuf>,
    /// Environment variable holding the static secret access key.
    pub secret_access_key_env: Option<String>,
    /// File holding the static secret access key.
    pub secret_access_key_file: Option<PathBuf>,
    /// Environment variable holding a session token for temporary static keys.
    pub session_token_env: Option<String>,
    /// How rows are written: `"json"` (default), the table row as the file sink writes it.
    pub format: Option<String>,
    /// Uncompressed bytes per object, at most (default 8388608, 8 MiB): bounds memory.
    pub max_object_bytes: Option<usize>,
    /// PEM file of the CA that signed the endpoint's certificate (private CAs);
    /// verification stays on either way.
    pub ca_file: Option<PathBuf>,
    /// Timeout of one request (default `60s`).
    pub request_timeout: Option<String>,
    /// Rows read from the store per delivery round (default 5000).
    pub batch_rows: Option<usize>,
    /// Where a new sink starts: `beginning` (default) or `now`.
    pub start: Option<String>,
}

/// Static keys named in the config (instead of the AWS chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticKeys {
    pub access_key_id: SecretSource,
    pub secret_access_key: SecretSource,
    pub session_token: Option<SecretSource>,
}

/// A validated `s3` sink.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Empty, or ends with `/`.
    pub prefix: String,
    pub region: Option<String>,
    pub endpoint: Option<Url>,
    pub force_path_style: bool,
    pub profile: Option<String>,
    /// `None`: the standard AWS credential chain.
    pub keys: Option<StaticKeys>,
    pub format: RecordFormat,
    pub max_object_bytes: usize,
    pub ca_file: Option<PathBuf>,
    pub request_timeout: Duration,
}

/// The default uncompressed bytes per object.
pub(super) const DEFAULT_MAX_OBJECT_BYTES: usize = 8 * 1024 * 1024;

pub(in crate::sink) fn validate(
    raw: RawS3Sink,
    cx: &SinkContext<'_>,
) -> Result<ValidatedSink, ConfigError> {
    let bucket = raw.bucket.ok_or_else(|| {
        cx.invalid(
            "bucket",
            "is required: the name of the bucket objects are written to".into(),
        )
    })?;
    // S3's bucket naming rules (general purpose buckets), loosely: the server has the last
    // word, this catches a URL or a path written by mistake.
    if bucket.len() < 3
        || bucket.len() > 63
        || !bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err(cx.invalid(
            "bucket",
            format!(
                "`{bucket}` is not a bucket name: 3 to 63 lowercase letters, digits, `.` and \
                 `-` (the name alone, no s3:// or path; a key prefix goes into `prefix`)"
            ),
        ));
    }
    let prefix = match raw.prefix.as_deref().map(|p| p.trim_matches('/')) {
        None | Some("") => String::new(),
        Some(p) if p.contains("//") || p.chars().any(char::is_control) => {
            return Err(cx.invalid(
                "prefix",
                format!("`{p}` has an empty path segment or a control character"),
            ));
        }
        Some(p) => format!("{p}/"),
    };
    let region = match raw.region {
        Some(r) if r.trim().is_empty() || r.trim() != r => {
            return Err(cx.invalid(
                "region",
                format!("`{r}` is empty or has spaces; write the region alone, like eu-west-1"),
            ));
        }
        other => other,
    };
    let endpoint = match &raw.endpoint {
        None => None,
        Some(text) => {
            let mut url = secure_url(text).map_err(|m| cx.invalid("endpoint", m))?;
            if !matches!(url.path(), "" | "/") || url.query().is_some() {
                return Err(cx.invalid(
                    "endpoint",
                    format!(
                        "`{text}` has a path: give the S3 API's base URL only (scheme, host \
                         and port, like https://minio.example.com:9000); the bucket goes \
                         into `bucket`"
                    ),
                ));
            }
            url.set_path("");
            Some(url)
        }
    };
    let either = |key: &str, var: Option<String>, file: Option<PathBuf>| match (var, file) {
        (Some(_), Some(_)) => Err(cx.invalid(
            &format!("{key}_file"),
            format!("set either `{key}_file` or `{key}_env`, not both"),
        )),
        (Some(var), None) => Ok(Some(SecretSource::Env(var))),
        (None, Some(file)) => Ok(Some(SecretSource::File((cx.resolve)(&file)))),
        (None, None) => Ok(None),
    };
    let id = either(
        "access_key_id",
        raw.access_key_id_env,
        raw.access_key_id_file,
    )?;
    let secret = either(
        "secret_access_key",
        raw.secret_access_key_env,
        raw.secret_access_key_file,
    )?;
    let keys = match (id, secret) {
        (None, None) => {
            if raw.session_token_env.is_some() {
                return Err(cx.invalid(
                    "session_token_env",
                    "goes with static keys: set `access_key_id_env` and \
                     `secret_access_key_env` (or their `_file` forms) too, or remove it to use \
                     the AWS credential chain"
                        .into(),
                ));
            }
            None
        }
        (None, Some(_)) => {
            return Err(cx.invalid(
                "access_key_id_env",
                "is required with a static secret access key: name the variable (or with \
                 `access_key_id_file` the file) holding the access key id, or remove the \
                 secret key settings to use the AWS credential chain"
                    .into(),
            ));
        }
        (Some(_), None) => {
            return Err(cx.invalid(
                "secret_access_key_env",
                "is required with a static access key id: name the variable (or with \
                 `secret_access_key_file` the file) holding the secret access key"
                    .into(),
            ));
        }
        (Some(access_key_id), Some(secret_access_key)) => Some(StaticKeys {
            access_key_id,
            secret_access_key,
            session_token: raw.session_token_env.map(SecretSource::Env),
        }),
    };
    let format = RecordFormat::parse(raw.format.as_deref()).map_err(|m| cx.invalid("format", m))?;
    let max_object_bytes = raw.max_object_bytes.unwrap_or(DEFAULT_MAX_OBJECT_BYTES);
    if !(4096..=1024 * 1024 * 1024).contains(&max_object_bytes) {
        return Err(cx.invalid(
            "max_object_bytes",
            format!(
                "{max_object_bytes} is out of range: from 4096 to 1073741824 (default \
                 {DEFAULT_MAX_OBJECT_BYTES}); an object is built in memory before it is sent"
            ),
        ));
    }
    let request_timeout = parse_duration(raw.request_timeout.as_deref().unwrap_or("60s"))
        .map_err(|m| cx.invalid("request_timeout", m))?;
    if request_timeout.is_zero() {
        return Err(cx.invalid("request_timeout", "must be longer than zero".into()));
    }
    let ca_file = raw.ca_file.map(|f| (cx.resolve)(&f));
    if let Some(f) = &ca_file
        && let Err(e) = std::fs::metadata(f)
    {
        return Err(cx.invalid(
            "ca_file",
            format!(
                "cannot read {}: {e}; give the PEM file of the CA that signed the endpoint's \
                 certificate",
                f.display()
            ),
        ));
    }
    Ok(ValidatedSink {
        kind: SinkKindConfig::S3(Box::new(S3Config {
            bucket,
            prefix,
            region,
            endpoint,
            force_path_style: raw.force_path_style.unwrap_or(false),
            profile: raw.profile,
            keys,
            format,
            max_object_bytes,
            ca_file,
            request_timeout,
        })),
        batch_rows: raw.batch_rows,
        start: raw.start,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Validates a `[sinks.s]` section as the config loader does (paths relative to
    /// /etc/mirotrail).
    fn load(keys: &str) -> Result<S3Config, String> {
        let bucket = if keys.contains("bucket =") {
            ""
        } else {
            "bucket = \"miro-logs\"\n"
        };
        let raw: RawS3Sink =
            toml::from_str(&format!("{bucket}{keys}")).map_err(|e| e.to_string())?;
        let resolve = |p: &Path| Path::new("/etc/mirotrail").join(p);
        let env = |_: &str| None;
        let cx = SinkContext {
            name: "s",
            enabled: &[],
            path: Path::new("/etc/mirotrail/mirotrail.toml"),
            env: &env,
            resolve: &resolve,
        };
        match validate(raw, &cx).map_err(|e| e.to_string())?.kind {
            SinkKindConfig::S3(c) => Ok(*c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_use_the_aws_chain_and_json() {
        let c = load("").unwrap();
        assert_eq!(c.bucket, "miro-logs");
        assert_eq!(c.prefix, "");
        assert_eq!(c.keys, None);
        assert_eq!(c.format, RecordFormat::Json);
        assert_eq!(c.max_object_bytes, DEFAULT_MAX_OBJECT_BYTES);
        assert!(!c.force_path_style);
        assert_eq!(c.endpoint, None);
        assert_eq!(load("prefix = \"/a/b/\"").unwrap().prefix, "a/b/");
    }

    #[test]
    fn static_keys_come_from_variables_or_a_file() {
        let c = load(
            "access_key_id_env = \"ID\"\nsecret_access_key_file = \"s3-secret\"\n\
             session_token_env = \"TOK\"",
        )
        .unwrap();
        assert_eq!(
            c.keys,
            Some(StaticKeys {
                access_key_id: SecretSource::Env("ID".into()),
                secret_access_key: SecretSource::File("/etc/mirotrail/s3-secret".into()),
                session_token: Some(SecretSource::Env("TOK".into())),
            })
        );
    }

    #[test]
    fn each_bad_key_gets_an_error_naming_it_and_the_fix() {
        for (keys, words) in [
            ("bucket = \"s3://miro-logs\"", "sinks.s.bucket"),
            ("bucket = \"Miro_Logs\"", "lowercase"),
            ("endpoint = \"http://minio.example.com:9000\"", "https"),
            (
                "endpoint = \"https://minio.example.com/bucket\"",
                "has a path",
            ),
            ("format = \"xml\"", "sinks.s.format"),
            ("max_object_bytes = 10", "4096"),
            ("secret_access_key_env = \"S\"", "access_key_id_env"),
            ("access_key_id_env = \"I\"", "secret_access_key_env"),
            (
                "access_key_id_env = \"I\"\naccess_key_id_file = \"f\"\nsecret_access_key_env = \"S\"",
                "sinks.s.access_key_id_file",
            ),
            (
                "access_key_id_env = \"I\"\nsecret_access_key_env = \"S\"\nsecret_access_key_file = \"f\"",
                "not both",
            ),
            ("session_token_env = \"T\"", "static keys"),
            ("region = \" eu-west-1\"", "region"),
            ("request_timeout = \"0s\"", "longer than zero"),
            ("ca_file = \"/nonexistent/ca.pem\"", "ca_file"),
            ("bukket = \"x\"", "unknown field"),
        ] {
            let e = load(keys).unwrap_err();
            assert!(e.contains(words), "{keys}: {e}");
        }
        // Plain http is for loopback only (emulators, a local MinIO).
        assert!(load("endpoint = \"http://127.0.0.1:9000\"").is_ok());
    }
}
