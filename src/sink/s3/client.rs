//! The S3 client and what its answers mean: building the AWS SDK client (credential
//! chain or static keys, region, endpoint, path style, CA file), the pure classification
//! of S3 error codes (see `docs/s3.md`, "Errors"), and one PUT driven by the one retry loop
//! (`crate::retry`; the SDK's own retries are off).
//!
//! Invariants: secrets are held by the SDK's `Credentials` (whose `Debug` redacts them)
//! and never formatted into a message; every failure names the bucket and the remedy.

use std::time::Duration;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use secrecy::ExposeSecret;

use super::config::S3Config;
use crate::retry::{Decision, Exchange, GiveUp, Policy};
use crate::secret::{ReadSecretError, SecretSource, read_secret};

/// A failure of S3 (or of reaching it, or of finding credentials), with the remedy.
#[derive(Debug, Clone, thiserror::Error)]
#[error("S3 bucket {bucket}: {message}")]
pub struct S3Error {
    pub bucket: String,
    pub message: String,
    /// Retrying cannot help until someone changes something.
    pub permanent: bool,
}

/// The static keys, read (secrets in `secrecy` types until handed to the SDK).
#[derive(Debug, Clone)]
pub(super) struct ReadKeys {
    id: secrecy::SecretString,
    secret: secrecy::SecretString,
    token: Option<secrecy::SecretString>,
}

/// Reads the static keys the config names, if any. `Err` is the remedy.
pub(super) fn read_keys(
    config: &S3Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<ReadKeys>, String> {
    let Some(keys) = &config.keys else {
        return Ok(None);
    };
    let read = |source: &SecretSource, what: &str, key: &str| {
        read_secret(source, env).map_err(|e| {
            let why = match e {
                ReadSecretError::NotSet => "is not set".to_string(),
                ReadSecretError::Unreadable(e) => format!("cannot be read ({e})"),
                ReadSecretError::Empty => "is empty".to_string(),
            };
            format!(
                "the {what}: {source} {why}; put it there, name another with `{key}`, or \
                 remove the static key settings to use the AWS credential chain"
            )
        })
    };
    Ok(Some(ReadKeys {
        id: read(
            &keys.access_key_id,
            "access key id",
            "access_key_id_env`/`access_key_id_file",
        )?,
        secret: read(
            &keys.secret_access_key,
            "secret access key",
            "secret_access_key_env`/`secret_access_key_file",
        )?,
        token: match &keys.session_token {
            Some(s) => Some(read(s, "session token", "session_token_env")?),
            None => None,
        },
    }))
}

/// The region used with an `endpoint` when neither `region` nor the AWS chain names one
/// (S3-compatible servers mostly ignore it; AWS's own default).
const DEFAULT_COMPATIBLE_REGION: &str = "us-east-1";

/// Builds the SDK client. `Err` is the remedy.
pub(super) async fn build(config: &S3Config, keys: Option<&ReadKeys>) -> Result<Client, String> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        // One retry loop for every destination: ours (`crate::retry`).
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(config.request_timeout)
                .build(),
        );
    if let Some(p) = &config.profile {
        loader = loader.profile_name(p);
    }
    if let Some(r) = &config.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(k) = keys {
        loader = loader.credentials_provider(Credentials::new(
            k.id.expose_secret(),
            k.secret.expose_secret(),
            k.token.as_ref().map(|t| t.expose_secret().to_string()),
            None,
            "mirotrail-config",
        ));
    }
    if let Some(file) = &config.ca_file {
        loader = loader.http_client(http_client_with_ca(file)?);
    }
    let shared = loader.load().await;
    let mut s3 =
        aws_sdk_s3::config::Builder::from(&shared).force_path_style(config.force_path_style);
    if shared.region().is_none() {
        if config.endpoint.is_none() {
            return Err(
                "no region: set `region` in this sink's section (the bucket's region, like \
                 eu-west-1), or AWS_REGION, or `region` in the AWS profile"
                    .into(),
            );
        }
        s3 = s3.region(Region::from_static(DEFAULT_COMPATIBLE_REGION));
    }
    if let Some(e) = &config.endpoint {
        s3 = s3.endpoint_url(e.as_str().trim_end_matches('/'));
    }
    Ok(Client::from_conf(s3.build()))
}

/// The SDK's HTTPS client trusting `file`'s CA certificates besides the system's.
fn http_client_with_ca(
    file: &std::path::Path,
) -> Result<aws_sdk_s3::config::SharedHttpClient, String> {
    use aws_smithy_http_client::tls;
    let pem = std::fs::read(file)
        .map_err(|e| format!("cannot read `ca_file` {}: {e}", file.display()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "`ca_file` {} holds no PEM certificate; give the CA certificate in PEM form \
             (-----BEGIN CERTIFICATE-----)",
            file.display()
        ));
    }
    let context = tls::TlsContext::builder()
        .with_trust_store(tls::TrustStore::default().with_pem_certificate(pem))
        .build()
        .map_err(|e| format!("`ca_file` {}: {e}", file.display()))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(context)
        .build_https())
}

/// The verdict on one failed S3 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Send again after a backoff (5xx, SlowDown, throttling, timeouts).
    Retry(String),
    /// Someone must change something: the remedy.
    Permanent(String),
}

/// What S3 answered, as the classification needs it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Answer<'a> {
    pub status: u16,
    /// The S3 error code (`AccessDenied`, `NoSuchBucket`, ...); HEAD answers have none.
    pub code: Option<&'a str>,
    pub message: Option<&'a str>,
}

/// Classifies an S3 error answer. `bucket`: for remedies. Pure.
pub(super) fn classify(answer: Answer<'_>, bucket: &str) -> Verdict {
    let Answer {
        status,
        code,
        message,
    } = answer;
    let said = match (code, message) {
        (Some(c), Some(m)) => format!("{status} {c}: {m}"),
        (Some(c), None) => format!("{status} {c}"),
        _ => format!("{status}"),
    };
    match (status, code) {
        (_, Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded"))
        | (429 | 503, _) => Verdict::Retry(format!("asks to slow down ({said})")),
        (_, Some("InternalError" | "ServiceUnavailable" | "RequestTimeout")) | (500..=599, _) => {
            Verdict::Retry(format!("is failing ({said})"))
        }
        (_, Some("InvalidAccessKeyId")) => Verdict::Permanent(format!(
            "refused the access key id ({said}): the server does not know it; check the \
             credentials mirotrail uses (`access_key_id_env`, or the AWS chain: \
             AWS_ACCESS_KEY_ID, the profile, the instance or pod role) and `endpoint`"
        )),
        (_, Some("SignatureDoesNotMatch")) => Verdict::Permanent(format!(
            "refused the request signature ({said}): the secret access key does not belong to \
             the access key id; check `secret_access_key_env`/`secret_access_key_file` or the \
             AWS chain's secret key"
        )),
        (_, Some("ExpiredToken" | "InvalidToken" | "TokenRefreshRequired")) => {
            Verdict::Permanent(format!(
                "refused the session token ({said}): temporary credentials expired or are \
                 invalid; renew them (a static `session_token_env` is never renewed by \
                 mirotrail: prefer a role from the AWS chain)"
            ))
        }
        // HEAD answers have no body: the SDK names them after the status alone.
        (403, None | Some("Forbidden")) => Verdict::Permanent(format!(
            "refused the request ({said}; a HEAD answer gives no reason): the credentials are \
             unknown or wrong (`access_key_id_env`, `secret_access_key_env`, or the AWS chain), \
             or they may not use the bucket: allow s3:ListBucket on arn:aws:s3:::{bucket} and \
             s3:PutObject on arn:aws:s3:::{bucket}/*"
        )),
        (_, Some("AccessDenied" | "AllAccessDisabled")) => Verdict::Permanent(format!(
            "denied access ({said}): let the credentials in use write to the bucket: \
                 s3:PutObject on arn:aws:s3:::{bucket}/* (and s3:ListBucket on \
                 arn:aws:s3:::{bucket} for `mirotrail check`); check bucket policies and KMS \
                 key policies too"
        )),
        (_, Some("NoSuchBucket")) | (404, None | Some("NotFound")) => Verdict::Permanent(format!(
            "does not exist ({said}): create the bucket, or fix `bucket`, `endpoint` or \
             `region`"
        )),
        (
            _,
            Some(
                "PermanentRedirect"
                | "AuthorizationHeaderMalformed"
                | "IllegalLocationConstraintException",
            ),
        )
        | (301, _) => Verdict::Permanent(format!(
            "is in another region than the one configured ({said}): set `region` to the \
             bucket's region"
        )),
        (_, Some("EntityTooLarge")) | (413, _) => Verdict::Permanent(format!(
            "refused an object as too large ({said}): lower `max_object_bytes`"
        )),
        _ => Verdict::Permanent(format!("refused the request ({said})")),
    }
}

/// Classifies any failure of an SDK call: an S3 answer through [`classify`], and the
/// failures with no answer (connection, timeout, credentials).
pub(super) fn classify_sdk<E, R>(e: &SdkError<E, R>, bucket: &str, status: Option<u16>) -> Verdict
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    match e {
        SdkError::ServiceError(s) => classify(
            Answer {
                status: status.unwrap_or(0),
                code: s.err().code(),
                message: s.err().message(),
            },
            bucket,
        ),
        SdkError::TimeoutError(_) => Verdict::Retry("no answer in time".into()),
        SdkError::ResponseError(_) => {
            let status = status.unwrap_or(0);
            let v = classify(
                Answer {
                    status,
                    code: None,
                    message: None,
                },
                bucket,
            );
            match v {
                // An answer that could not be read is retried unless its status says why.
                Verdict::Permanent(m) if !matches!(status, 301 | 403 | 404 | 413) => {
                    Verdict::Retry(format!(
                        "an answer could not be read ({m}): {}",
                        DisplayErrorContext(e)
                    ))
                }
                v => v,
            }
        }
        SdkError::DispatchFailure(d) => {
            if let Some(c) = credentials_error(e) {
                return c;
            }
            let chain = DisplayErrorContext(e).to_string();
            if d.is_io() || d.is_timeout() {
                Verdict::Retry(format!("cannot reach the endpoint: {chain}"))
            } else {
                Verdict::Retry(format!("the request failed: {chain}"))
            }
        }
        SdkError::ConstructionFailure(_) => Verdict::Permanent(format!(
            "cannot build the request: {}",
            DisplayErrorContext(e)
        )),
        _ => Verdict::Retry(format!("{}", DisplayErrorContext(e))),
    }
}

/// A failure to find or fetch credentials, found in `e`'s sources.
fn credentials_error(e: &(dyn std::error::Error + 'static)) -> Option<Verdict> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(c) = err.downcast_ref::<CredentialsError>() {
            let chain = DisplayErrorContext(c).to_string();
            return Some(match c {
                CredentialsError::CredentialsNotLoaded(_)
                | CredentialsError::InvalidConfiguration(_) => Verdict::Permanent(format!(
                    "no credentials ({chain}): give mirotrail credentials through the AWS \
                         chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile with \
                         `profile` or AWS_PROFILE, web identity, or an instance/pod role), or \
                         name static keys with `access_key_id_env` and \
                         `secret_access_key_env`/`_file`"
                )),
                _ => Verdict::Retry(format!("cannot get credentials: {chain}")),
            });
        }
        next = err.source();
    }
    None
}

/// One PUT of an object, with retries.
pub(super) struct Put<'a> {
    pub client: &'a Client,
    pub bucket: &'a str,
    pub key: &'a str,
    pub body: &'a [u8],
}

impl Exchange for Put<'_> {
    type Output = ();
    type Error = S3Error;

    async fn acquire(&mut self) -> Result<(), S3Error> {
        Ok(())
    }

    async fn send(&mut self) -> Decision<Result<(), S3Error>> {
        let result = self
            .client
            .put_object()
            .bucket(self.bucket)
            .key(self.key)
            .content_type("application/gzip")
            .body(ByteStream::from(self.body.to_vec()))
            .send()
            .await;
        match result {
            Ok(_) => Decision::Finish(Ok(())),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                match classify_sdk(&e, self.bucket, status) {
                    Verdict::Retry(reason) => Decision::Retry { reason },
                    Verdict::Permanent(message) => Decision::Finish(Err(S3Error {
                        bucket: self.bucket.to_string(),
                        message,
                        permanent: true,
                    })),
                }
            }
        }
    }

    async fn throttled(&mut self, wait: Duration) -> Result<(), S3Error> {
        tokio::time::sleep(wait).await;
        Ok(())
    }

    fn retrying(&mut self, failures: u32, wait: Duration, reason: &str) {
        tracing::warn!(
            bucket = self.bucket,
            key = self.key,
            failures,
            retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            reason,
            "S3 upload failed; retrying"
        );
    }

    async fn sleep(&mut self, wait: Duration) -> Result<(), S3Error> {
        tokio::time::sleep(wait).await;
        Ok(())
    }

    fn give_up(&mut self, why: GiveUp) -> S3Error {
        let message = match why {
            GiveUp::Failures { failures, reason } => {
                format!("failed {failures} times in a row; last: {reason}")
            }
            GiveUp::Throttled { throttled, .. } => {
                format!("kept throttling ({throttled} times)")
            }
        };
        S3Error {
            bucket: self.bucket.to_string(),
            message,
            permanent: false,
        }
    }
}

impl Put<'_> {
    pub(super) async fn run(mut self, policy: &Policy) -> Result<(), S3Error> {
        crate::retry::run(policy, &mut self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(status: u16, code: Option<&str>) -> Verdict {
        classify(
            Answer {
                status,
                code,
                message: Some("words from S3"),
            },
            "miro-logs",
        )
    }

    #[test]
    fn each_s3_error_is_a_retry_or_a_remedy() {
        for (status, code) in [
            (503, Some("SlowDown")),
            (500, Some("InternalError")),
            (503, Some("ServiceUnavailable")),
            (400, Some("RequestTimeout")),
            (429, None),
            (502, None),
        ] {
            assert!(
                matches!(v(status, code), Verdict::Retry(_)),
                "{status} {code:?}"
            );
        }
        for (status, code, words) in [
            (403, Some("InvalidAccessKeyId"), "access_key_id_env"),
            (403, Some("SignatureDoesNotMatch"), "secret_access_key_env"),
            (
                403,
                Some("AccessDenied"),
                "s3:PutObject on arn:aws:s3:::miro-logs/*",
            ),
            (403, None, "credentials are unknown or wrong"),
            (403, Some("Forbidden"), "s3:ListBucket"),
            (404, Some("NotFound"), "create the bucket"),
            (404, Some("NoSuchBucket"), "create the bucket"),
            (404, None, "create the bucket"),
            (301, Some("PermanentRedirect"), "`region`"),
            (400, Some("AuthorizationHeaderMalformed"), "`region`"),
            (400, Some("ExpiredToken"), "renew"),
            (400, Some("EntityTooLarge"), "max_object_bytes"),
            (400, Some("InvalidArgument"), "words from S3"),
        ] {
            match v(status, code) {
                Verdict::Permanent(m) => assert!(m.contains(words), "{code:?}: {m}"),
                other => panic!("{code:?}: {other:?}"),
            }
        }
    }
}
