//! The config file as written. Every field is documented here; defaults are chosen and
//! justified in the README ("Configuration").

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::sink::RawSink;
use crate::sink::SinkContext;

use super::{
    BudgetConfig, Config, ConfigError, DEFAULT_ORG_NAME, LogFormat, MiroConfig, OrgConfig,
    SecretSource, ServiceConfig, SinkConfig, SourceConfig, SourceKind, parse_duration,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// One organisation (absent: the defaults, unless `[[orgs]]` name several).
    pub miro: Option<RawMiro>,
    /// Several organisations in one deployment, instead of `[miro]`.
    #[serde(default)]
    pub orgs: Vec<RawOrg>,
    #[serde(default)]
    pub sources: RawSources,
    #[serde(default)]
    pub budget: RawBudget,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub sinks: BTreeMap<String, RawSink>,
    /// Absent: no listener (so `run --once` from cron, the demo and tests open no port).
    pub service: Option<RawService>,
    /// Detection rules: on/off, disabled rules, per-rule overrides.
    #[serde(default)]
    pub detect: crate::detect::RawDetect,
}

/// `[service]`: running unattended.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// Address serving `/metrics`, `/healthz` and `/readyz` during `run` (default
    /// `127.0.0.1:9464` once the section exists; `""` turns the listener off).
    pub listen: Option<String>,
    /// Log format on standard error, `text` (default) or `json`; `--log-format` wins.
    pub log_format: Option<String>,
}

/// `[miro]`: where the API is and how to authenticate.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMiro {
    /// Base URL of the Miro REST API (default `https://api.miro.com`).
    pub api_base: Option<String>,
    /// Environment variable holding the token (default `MIRO_TOKEN`).
    pub token_env: Option<String>,
    /// File holding the token (takes precedence over `token_env`).
    pub token_file: Option<PathBuf>,
    /// Expiring tokens: the OAuth app's client id (instead of `token_env`/`token_file`).
    pub client_id: Option<String>,
    /// Environment variable holding the app's client secret (default `MIRO_CLIENT_SECRET`).
    pub client_secret_env: Option<String>,
    /// File holding the app's client secret (instead of `client_secret_env`).
    pub client_secret_file: Option<PathBuf>,
    /// File holding the current refresh token; mirotrail rewrites it on every refresh.
    pub refresh_token_file: Option<PathBuf>,
    /// Organization id, required for content and AI interaction logs.
    pub org_id: Option<String>,
    /// Timeout of one HTTP request (default `30s`).
    pub request_timeout: Option<String>,
    /// Retries of one request on transient failures before the cycle fails (default 8).
    pub max_retries: Option<u32>,
    /// First wait before a retry; it doubles per attempt, with jitter, up to 60 s
    /// (default `500ms`).
    pub retry_initial_backoff: Option<String>,
    /// Largest answer (after gzip decoding) read from Miro, in bytes (default 64 MiB).
    pub max_response_bytes: Option<u64>,
}

/// `[[orgs]]`: one Miro organisation among several, with its own token, sources (each
/// key defaults to the top-level `[sources.*]`) and credit budget (each key defaults to
/// the top-level `[budget]`). The other keys are `[miro]`'s.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOrg {
    /// Short label shown by `status`, `/metrics` and alerts (letters, digits, `_`, `-`).
    pub name: Option<String>,
    /// The Miro organization id (required).
    pub org_id: Option<String>,
    pub api_base: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    pub client_id: Option<String>,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub refresh_token_file: Option<PathBuf>,
    pub request_timeout: Option<String>,
    pub max_retries: Option<u32>,
    pub retry_initial_backoff: Option<String>,
    pub max_response_bytes: Option<u64>,
    /// Overrides of the top-level `[sources.*]` keys for this organisation.
    #[serde(default)]
    pub sources: RawSources,
    /// Overrides of the top-level `[budget]` keys for this organisation's token.
    #[serde(default)]
    pub budget: RawBudget,
}

impl RawOrg {
    /// The `[miro]` keys of this entry.
    fn miro(&self) -> RawMiro {
        RawMiro {
            api_base: self.api_base.clone(),
            token_env: self.token_env.clone(),
            token_file: self.token_file.clone(),
            client_id: self.client_id.clone(),
            client_secret_env: self.client_secret_env.clone(),
            client_secret_file: self.client_secret_file.clone(),
            refresh_token_file: self.refresh_token_file.clone(),
            org_id: self.org_id.clone(),
            request_timeout: self.request_timeout.clone(),
            max_retries: self.max_retries,
            retry_initial_backoff: self.retry_initial_backoff.clone(),
            max_response_bytes: self.max_response_bytes,
        }
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSources {
    pub audit_logs: Option<RawSource>,
    pub content_logs: Option<RawSource>,
    pub ai_interaction_logs: Option<RawSource>,
}

/// `[sources.audit_logs]`, `[sources.content_logs]` and `[sources.ai_interaction_logs]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub enabled: Option<bool>,
    /// Where a fresh store starts collecting, back from now.
    pub initial_lookback: Option<String>,
    /// Pause between polling cycles.
    pub poll_interval: Option<String>,
    /// Windows end this far before now.
    pub settle_lag: Option<String>,
    /// Each poll re-reads this much before the watermark.
    pub recent_overlap: Option<String>,
    /// Each slice of time is read once more when this old.
    pub overlap: Option<String>,
    /// Longest window asked for in one go.
    pub max_window: Option<String>,
    /// The late re-read waits for at least this much due time (`0s`: every poll).
    pub overlap_every: Option<String>,
    /// Items per page (`limit`).
    pub page_size: Option<u32>,
}

impl RawSource {
    /// Each key of `self`, else of `base`.
    fn or(&self, base: &RawSource) -> RawSource {
        RawSource {
            enabled: self.enabled.or(base.enabled),
            initial_lookback: self
                .initial_lookback
                .clone()
                .or(base.initial_lookback.clone()),
            poll_interval: self.poll_interval.clone().or(base.poll_interval.clone()),
            settle_lag: self.settle_lag.clone().or(base.settle_lag.clone()),
            recent_overlap: self.recent_overlap.clone().or(base.recent_overlap.clone()),
            overlap: self.overlap.clone().or(base.overlap.clone()),
            max_window: self.max_window.clone().or(base.max_window.clone()),
            overlap_every: self.overlap_every.clone().or(base.overlap_every.clone()),
            page_size: self.page_size.or(base.page_size),
        }
    }
}

impl RawSources {
    fn get(&self, kind: SourceKind) -> Option<&RawSource> {
        match kind {
            SourceKind::AuditLogs => self.audit_logs.as_ref(),
            SourceKind::ContentLogs => self.content_logs.as_ref(),
            SourceKind::AiInteractionLogs => self.ai_interaction_logs.as_ref(),
        }
    }

    /// Each source's keys of `self`, else of `base`.
    fn or(&self, base: &RawSources) -> RawSources {
        let merge = |kind| match (self.get(kind), base.get(kind)) {
            (None, None) => None,
            (Some(s), None) => Some(s.clone()),
            (None, Some(b)) => Some(b.clone()),
            (Some(s), Some(b)) => Some(s.or(b)),
        };
        RawSources {
            audit_logs: merge(SourceKind::AuditLogs),
            content_logs: merge(SourceKind::ContentLogs),
            ai_interaction_logs: merge(SourceKind::AiInteractionLogs),
        }
    }
}

impl RawBudget {
    /// Each key of `self`, else of `base`.
    fn or(&self, base: &RawBudget) -> RawBudget {
        RawBudget {
            share: self.share.or(base.share),
            backfill_share: self.backfill_share.or(base.backfill_share),
            credits_per_minute: self.credits_per_minute.or(base.credits_per_minute),
        }
    }
}

/// `[budget]`: the share of the token's credits mirotrail may use.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// Share of the token's credits per minute `run` may use (default 0.5).
    pub share: Option<f64>,
    /// Share a `backfill` process may use beside it (default 0.25).
    pub backfill_share: Option<f64>,
    pub credits_per_minute: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub path: Option<PathBuf>,
    /// Rows older than this are deleted once every sink has them (default `400d`).
    pub retention: Option<String>,
}

/// The polling defaults of a source, as duration text (`config/keys.rs` documents them;
/// README, "Freshness and the cost of polling").
pub(crate) struct PollDefaults {
    pub poll_interval: &'static str,
    pub settle_lag: &'static str,
    pub recent_overlap: &'static str,
    pub overlap: &'static str,
    pub overlap_every: &'static str,
}

/// Audit logs: one call costs 100 credits, so a 10 s poll (0.6% of the budget) with a 5 s
/// settle lag keeps them fresh; each poll also re-reads the 10 s before its window (free
/// while they fit in its page), and each slice of time is read once more when 15 minutes
/// old, in 5-minute batches, to catch late events. Content logs: one call costs 2,000
/// credits, so they are polled every 5 minutes (0.4%), with a 1-minute lag, and re-read
/// once when 20 minutes old. AI interaction logs also cost 2,000 credits a call (every 5
/// minutes) but filter on `storedAt`, when Miro stored the entry, so nothing can appear
/// behind a window once `now` is past its end: the lag and the 30-second overlap only
/// cover clock differences, re-read on every poll (no extra request, no late re-read).
pub(crate) fn poll_defaults(kind: SourceKind) -> PollDefaults {
    let (poll_interval, settle_lag, recent_overlap, overlap, overlap_every) = match kind {
        SourceKind::AuditLogs => ("10s", "5s", "10s", "15m", "5m"),
        SourceKind::ContentLogs => ("5m", "1m", "0s", "20m", "20m"),
        SourceKind::AiInteractionLogs => ("5m", "5s", "30s", "30s", "0s"),
    };
    PollDefaults {
        poll_interval,
        settle_lag,
        recent_overlap,
        overlap,
        overlap_every,
    }
}

pub(crate) const DEFAULT_API_BASE: &str = "https://api.miro.com";
/// The default cap on one Miro answer: a full content-logs page (1000 items with large
/// `state` objects) stays far below it (README, "Configuration").
pub(crate) const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Below 64 KiB even a short page of big items would not fit.
const MIN_MAX_RESPONSE_BYTES: u64 = 64 * 1024;
/// Above 1 GiB the cap no longer protects a small host.
const MAX_MAX_RESPONSE_BYTES: u64 = 1024 * 1024 * 1024;
/// Where `[service]` listens unless told otherwise (9464: the port commonly used by
/// Prometheus exporters of this kind; loopback: nothing is exposed to the network).
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

impl RawConfig {
    #[allow(
        clippy::disallowed_methods,
        reason = "config loading: the environment fills the `*_env` keys"
    )]
    pub fn validate(self, path: &Path) -> Result<Config, ConfigError> {
        self.validate_with_env(path, &|var| std::env::var(var).ok())
    }

    /// `validate`, with environment variables looked up through `env` (for tests).
    pub fn validate_with_env(
        self,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base_dir.join(p)
            }
        };
        let duration = |key: &str, value: &Option<String>, default: &str| {
            parse_duration(value.as_deref().unwrap_or(default)).map_err(|m| invalid(key, m))
        };

        let ctx = Ctx {
            invalid: &invalid,
            resolve: &resolve,
            duration: &duration,
        };
        let (orgs, named_orgs) = if self.orgs.is_empty() {
            let m = self.miro.unwrap_or_default();
            let miro = validate_miro(&m, "miro", &ctx)?;
            let org_id_key = miro.org_id.is_none().then_some("miro.org_id");
            let sources = validate_sources(&self.sources, "sources", org_id_key, &ctx)?;
            let budget = validate_budget(&self.budget, "budget", &ctx)?;
            (
                vec![OrgConfig {
                    name: DEFAULT_ORG_NAME.to_string(),
                    miro,
                    sources,
                    budget,
                }],
                false,
            )
        } else {
            if self.miro.is_some() {
                return Err(invalid(
                    "miro",
                    "`[miro]` and `[[orgs]]` cannot be mixed: with several organisations, move \
                     the `[miro]` keys (token, org_id, api_base, ...) into each `[[orgs]]` entry \
                     and delete `[miro]`"
                        .into(),
                ));
            }
            // The top-level sections are every organisation's defaults: a bad value there
            // is named there.
            validate_sources(&self.sources, "sources", None, &ctx)?;
            validate_budget(&self.budget, "budget", &ctx)?;
            let mut orgs: Vec<OrgConfig> = Vec::new();
            for (n, raw) in self.orgs.iter().enumerate() {
                let prefix = format!("orgs[{n}]");
                let key = |k: &str| format!("{prefix}.{k}");
                let name = match raw.name.as_deref() {
                    None => {
                        return Err(invalid(
                            &key("name"),
                            "every `[[orgs]]` entry needs a short `name` (shown by `status`, \
                             `/metrics` and alerts), like \"emea\""
                                .into(),
                        ));
                    }
                    Some(name) => name,
                };
                if name.is_empty()
                    || name.len() > 32
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(invalid(
                        &key("name"),
                        format!(
                            "`{name}` is not an organisation name; use 1 to 32 letters, digits, \
                             `_` and `-`"
                        ),
                    ));
                }
                if let Some(other) = orgs.iter().position(|o| o.name == name) {
                    return Err(invalid(
                        &key("name"),
                        format!(
                            "`{name}` is already the name of orgs[{other}]; names must be unique"
                        ),
                    ));
                }
                if raw.org_id.is_none() {
                    return Err(invalid(
                        &key("org_id"),
                        "every `[[orgs]]` entry needs its `org_id` (find it in Miro under \
                         Company settings, or with `mirotrail check`)"
                            .into(),
                    ));
                }
                let miro = validate_miro(&raw.miro(), &prefix, &ctx)?;
                if let Some(other) = orgs.iter().position(|o| o.miro.org_id == miro.org_id) {
                    return Err(invalid(
                        &key("org_id"),
                        format!(
                            "orgs[{other}] has the same org_id; each organisation is collected once"
                        ),
                    ));
                }
                let sources =
                    validate_sources(&raw.sources.or(&self.sources), &key("sources"), None, &ctx)?;
                let budget = validate_budget(&raw.budget.or(&self.budget), &key("budget"), &ctx)?;
                orgs.push(OrgConfig {
                    name: name.to_string(),
                    miro,
                    sources,
                    budget,
                });
            }
            (orgs, true)
        };
        let first = orgs.first().expect("at least one organisation").clone();

        let store_path = resolve(
            self.store
                .path
                .as_deref()
                .unwrap_or(Path::new("mirotrail.db")),
        );

        let retention = duration("store.retention", &self.store.retention, "400d")?;
        if retention < std::time::Duration::from_secs(86_400) {
            return Err(invalid(
                "store.retention",
                "must be at least 1d (overlapping windows re-read recent rows)".into(),
            ));
        }

        let mut sinks = Vec::new();
        for (name, raw) in self.sinks {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(invalid(
                    &format!("sinks.{name}"),
                    "sink names use letters, digits, `_` and `-` only".into(),
                ));
            }
            let enabled: Vec<SourceKind> = SourceKind::ALL
                .into_iter()
                .filter(|k| orgs.iter().any(|o| o.source(*k).enabled))
                .collect();
            let crate::sink::ValidatedSink {
                kind,
                batch_rows,
                start,
            } = raw.validate(&SinkContext {
                name: &name,
                enabled: &enabled,
                path,
                env,
                resolve: &resolve,
            })?;
            let start = match start.as_deref() {
                None | Some("beginning") => super::SinkStart::Beginning,
                Some("now") => super::SinkStart::Now,
                Some(other) => {
                    return Err(invalid(
                        &format!("sinks.{name}.start"),
                        format!(
                            "`{other}` is not a start; use \"beginning\" (the default: every row \
                             already stored) or \"now\" (only rows stored from the sink's first start on)"
                        ),
                    ));
                }
            };
            let batch_rows = batch_rows.unwrap_or(5000);
            if batch_rows == 0 {
                return Err(invalid(
                    &format!("sinks.{name}.batch_rows"),
                    "must be at least 1".into(),
                ));
            }
            sinks.push(SinkConfig {
                name,
                kind,
                batch_rows,
                start,
            });
        }

        let service = match self.service {
            None => ServiceConfig::default(),
            Some(raw) => {
                let listen = match raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN).trim() {
                    "" => None,
                    text => Some(super::resolve_listen(text).map_err(|e| {
                        invalid("service.listen", format!("{e}; or \"\" to serve nothing"))
                    })?),
                };
                let log_format = match raw.log_format.as_deref() {
                    None => None,
                    Some("text") => Some(LogFormat::Text),
                    Some("json") => Some(LogFormat::Json),
                    Some(other) => {
                        return Err(invalid(
                            "service.log_format",
                            format!("`{other}` is not a log format; use \"text\" or \"json\""),
                        ));
                    }
                };
                ServiceConfig { listen, log_format }
            }
        };

        let detect = self
            .detect
            .validate()
            .map_err(|(key, message)| invalid(&key, message))?;

        // Elasticsearch keys documents by id: with several organisations the id alone
        // is not unique (`ElasticConfig::org_in_id`).
        for sink in &mut sinks {
            if let super::SinkKindConfig::Elastic(c) = &mut sink.kind {
                c.org_in_id = named_orgs;
            }
        }
        Ok(Config {
            path: path.to_path_buf(),
            miro: first.miro,
            sources: first.sources,
            budget: first.budget,
            orgs,
            named_orgs,
            store_path,
            retention,
            sinks,
            service,
            detect,
        })
    }
}

/// What the validation of one section needs from the file's: errors naming the key, paths
/// resolved against the file's directory, durations.
struct Ctx<'a> {
    invalid: &'a dyn Fn(&str, String) -> ConfigError,
    resolve: &'a dyn Fn(&Path) -> PathBuf,
    duration: &'a DurationFn<'a>,
}

/// Parses the duration at a key, or the default when the key is not set.
type DurationFn<'a> =
    dyn Fn(&str, &Option<String>, &str) -> Result<std::time::Duration, ConfigError> + 'a;

/// `[miro]`, or the `[miro]` keys of an `[[orgs]]` entry (`prefix`: `miro` or `orgs[N]`).
fn validate_miro(m: &RawMiro, prefix: &str, ctx: &Ctx<'_>) -> Result<MiroConfig, ConfigError> {
    let (invalid, resolve, duration) = (ctx.invalid, ctx.resolve, ctx.duration);
    let api_base_text = m.api_base.as_deref().unwrap_or(DEFAULT_API_BASE);
    // The token travels with every request: https, or plain http to loopback only.
    let api_base = crate::net::secure_url(api_base_text).map_err(|m| {
        invalid(
            &format!("{prefix}.api_base"),
            format!("{m} (the default is {DEFAULT_API_BASE})"),
        )
    })?;
    let token_source = match (&m.token_file, &m.token_env) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                &format!("{prefix}.token_file"),
                "set either `token_file` or `token_env`, not both".into(),
            ));
        }
        (Some(file), None) => SecretSource::File(resolve(file)),
        (None, env) => {
            let var = env.clone().unwrap_or_else(|| "MIRO_TOKEN".into());
            if var.is_empty() || var.contains('=') {
                return Err(invalid(
                    &format!("{prefix}.token_env"),
                    format!("`{var}` is not an environment variable name"),
                ));
            }
            SecretSource::Env(var)
        }
    };
    let oauth = match (&m.client_id, &m.refresh_token_file) {
        (None, None) => {
            if m.client_secret_env.is_some() || m.client_secret_file.is_some() {
                return Err(invalid(
                    &format!("{prefix}.client_id"),
                    "a client secret is set but no `client_id`: expiring tokens need `client_id`, the client secret and `refresh_token_file`"
                        .into(),
                ));
            }
            None
        }
        (Some(_), None) => {
            return Err(invalid(
                &format!("{prefix}.refresh_token_file"),
                "expiring tokens need `refresh_token_file` beside `client_id`: the file `mirotrail auth login` writes"
                    .into(),
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                &format!("{prefix}.client_id"),
                "expiring tokens need `client_id` (your app's client id, in Miro's app settings) beside `refresh_token_file`"
                    .into(),
            ));
        }
        (Some(id), Some(file)) => {
            if m.token_env.is_some() || m.token_file.is_some() {
                return Err(invalid(
                    &format!("{prefix}.client_id"),
                    "set either a static token (`token_env`/`token_file`) or an expiring one (`client_id`, client secret, `refresh_token_file`), not both"
                        .into(),
                ));
            }
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(
                    &format!("{prefix}.client_id"),
                    format!(
                        "`{id}` is not a Miro client id (a long decimal number, written as a string; it is shown in your app's settings)"
                    ),
                ));
            }
            let client_secret = match (&m.client_secret_file, &m.client_secret_env) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        &format!("{prefix}.client_secret_file"),
                        "set either `client_secret_file` or `client_secret_env`, not both".into(),
                    ));
                }
                (Some(f), None) => SecretSource::File(resolve(f)),
                (None, env) => {
                    let var = env.clone().unwrap_or_else(|| "MIRO_CLIENT_SECRET".into());
                    if var.is_empty() || var.contains('=') {
                        return Err(invalid(
                            &format!("{prefix}.client_secret_env"),
                            format!("`{var}` is not an environment variable name"),
                        ));
                    }
                    SecretSource::Env(var)
                }
            };
            Some(super::MiroOAuthConfig {
                client_id: id.clone(),
                client_secret,
                refresh_token_file: resolve(file),
            })
        }
    };
    if let Some(org) = &m.org_id
        && (org.is_empty() || !org.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid(
            &format!("{prefix}.org_id"),
            format!(
                "`{org}` is not a Miro organization id (a long decimal number, written as a string)"
            ),
        ));
    }
    let request_timeout = duration(
        &format!("{prefix}.request_timeout"),
        &m.request_timeout,
        "30s",
    )?;
    if request_timeout.is_zero() {
        return Err(invalid(
            &format!("{prefix}.request_timeout"),
            "must be more than zero".into(),
        ));
    }
    let max_response_bytes = match m.max_response_bytes {
        None => DEFAULT_MAX_RESPONSE_BYTES,
        Some(n) if (MIN_MAX_RESPONSE_BYTES..=MAX_MAX_RESPONSE_BYTES).contains(&n) => {
            usize::try_from(n).unwrap_or(usize::MAX)
        }
        Some(n) => {
            return Err(invalid(
                &format!("{prefix}.max_response_bytes"),
                format!(
                    "{n} is out of range; use {MIN_MAX_RESPONSE_BYTES}..={MAX_MAX_RESPONSE_BYTES} \
                     bytes (default {DEFAULT_MAX_RESPONSE_BYTES}, 64 MiB)"
                ),
            ));
        }
    };
    Ok(MiroConfig {
        api_base,
        token_source,
        oauth,
        org_id: m.org_id.clone(),
        request_timeout,
        max_retries: m.max_retries.unwrap_or(8),
        retry_initial_backoff: duration(
            &format!("{prefix}.retry_initial_backoff"),
            &m.retry_initial_backoff,
            "500ms",
        )?,
        max_response_bytes,
    })
}

/// `[sources.*]` (`prefix`: `sources` or `orgs[N].sources`). `org_id_key`: the key to
/// name when a source that needs the organization id is enabled without one.
fn validate_sources(
    raw_sources: &RawSources,
    prefix: &str,
    org_id_key: Option<&str>,
    ctx: &Ctx<'_>,
) -> Result<Vec<SourceConfig>, ConfigError> {
    let (invalid, duration) = (ctx.invalid, ctx.duration);
    let mut sources = Vec::new();
    for kind in SourceKind::ALL {
        let raw = raw_sources.get(kind);
        let empty = RawSource::default();
        let raw = raw.unwrap_or(&empty);
        let key = |k: &str| format!("{prefix}.{}.{k}", kind.name());
        let (enabled_default, page_default, page_max) = match kind {
            SourceKind::AuditLogs => (true, 500, 1000),
            SourceKind::ContentLogs => (false, 1000, 1000),
            // Beta and Enterprise Guard: off unless asked for; `limit` is at most 100.
            SourceKind::AiInteractionLogs => (false, 100, 100),
        };
        let PollDefaults {
            poll_interval: poll_default,
            settle_lag: lag_default,
            recent_overlap: recent_default,
            overlap: overlap_default,
            overlap_every: every_default,
        } = poll_defaults(kind);
        let page = raw.page_size.unwrap_or(page_default);
        let page_size = NonZeroU32::new(page)
            .filter(|p| p.get() <= page_max)
            .ok_or_else(|| {
                invalid(
                    &key("page_size"),
                    format!("{page} is out of range; use 1..={page_max} (default {page_default})"),
                )
            })?;
        let source = SourceConfig {
            kind,
            enabled: raw.enabled.unwrap_or(enabled_default),
            initial_lookback: duration(&key("initial_lookback"), &raw.initial_lookback, "24h")?,
            poll_interval: duration(&key("poll_interval"), &raw.poll_interval, poll_default)?,
            settle_lag: duration(&key("settle_lag"), &raw.settle_lag, lag_default)?,
            recent_overlap: duration(&key("recent_overlap"), &raw.recent_overlap, recent_default)?,
            overlap: duration(&key("overlap"), &raw.overlap, overlap_default)?,
            max_window: duration(&key("max_window"), &raw.max_window, "24h")?,
            overlap_every: duration(&key("overlap_every"), &raw.overlap_every, every_default)?,
            page_size,
        };
        if source.poll_interval < std::time::Duration::from_secs(1) {
            return Err(invalid(&key("poll_interval"), "must be at least 1s".into()));
        }
        if source.max_window < std::time::Duration::from_secs(1) {
            return Err(invalid(&key("max_window"), "must be at least 1s".into()));
        }
        if kind.needs_org_id() && source.enabled && org_id_key.is_some() {
            return Err(invalid(
                org_id_key.unwrap_or_default(),
                format!(
                    "{kind} is enabled but `org_id` is not set; find it in Miro under \
                     Company settings, or with `mirotrail check`"
                ),
            ));
        }
        sources.push(source);
    }
    if !sources.iter().any(|s| s.enabled) {
        return Err(invalid(
            prefix,
            "no source is enabled; set `enabled = true` under [sources.audit_logs], \
             [sources.content_logs] or [sources.ai_interaction_logs]"
                .into(),
        ));
    }
    Ok(sources)
}

/// `[budget]` (`prefix`: `budget` or `orgs[N].budget`).
fn validate_budget(
    b: &RawBudget,
    prefix: &str,
    ctx: &Ctx<'_>,
) -> Result<BudgetConfig, ConfigError> {
    let invalid = ctx.invalid;
    let share = b.share.unwrap_or(0.5);
    if !(share > 0.0 && share <= 1.0) {
        return Err(invalid(
            &format!("{prefix}.share"),
            format!("{share} is out of range; use a share above 0 and at most 1 (default 0.5)"),
        ));
    }
    let backfill_share = b.backfill_share.unwrap_or(0.25);
    if !(backfill_share > 0.0 && backfill_share <= 1.0) {
        return Err(invalid(
            &format!("{prefix}.backfill_share"),
            format!(
                "{backfill_share} is out of range; use a share above 0 and at most 1 (default 0.25)"
            ),
        ));
    }
    let credits_per_minute = b.credits_per_minute.unwrap_or(100_000);
    if credits_per_minute < SourceKind::ContentLogs.credits_per_call() {
        return Err(invalid(
            &format!("{prefix}.credits_per_minute"),
            format!("{credits_per_minute} is less than one content-logs call (2000 credits)"),
        ));
    }
    Ok(BudgetConfig {
        share,
        backfill_share,
        credits_per_minute,
    })
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::sink::RecordFormat;
    use std::path::Path;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/mirotrail/mirotrail.toml"))
    }

    #[test]
    fn miro_token_is_refused_over_plain_http_except_to_loopback() {
        let msg = load("[miro]\napi_base = \"http://api.example.com\"")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("miro.api_base") && msg.contains("https") && msg.contains("loopback"),
            "{msg}"
        );
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.9.0.1",
            "http://localhost:1",
            "http://[::1]:2",
            "https://miro.proxy.example.com",
        ] {
            let c = load(&format!("[miro]\napi_base = \"{ok}\"")).unwrap();
            assert!(c.miro.api_base.as_str().starts_with(ok), "{ok}");
        }
    }

    const TWO_ORGS: &str = r#"
[sources.audit_logs]
page_size = 200
[budget]
share = 0.4

[[orgs]]
name = "emea"
org_id = "3074457345821141000"
token_env = "MIRO_TOKEN_EMEA"

[[orgs]]
name = "us-east"
org_id = "3074457345821142000"
token_file = "secrets/us"
api_base = "http://127.0.0.1:9000"
[orgs.sources.audit_logs]
page_size = 50
[orgs.sources.content_logs]
enabled = true
[orgs.budget]
share = 0.2
"#;

    #[test]
    fn several_orgs_each_have_their_token_sources_and_budget() {
        let c = load(TWO_ORGS).unwrap();
        assert!(c.named_orgs);
        let names: Vec<&str> = c.orgs.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["emea", "us-east"]);
        let (emea, us) = (&c.orgs[0], &c.orgs[1]);
        assert_eq!(
            emea.miro.token_source,
            SecretSource::Env("MIRO_TOKEN_EMEA".into())
        );
        assert_eq!(
            us.miro.token_source,
            SecretSource::File(Path::new("/etc/mirotrail/secrets/us").into())
        );
        assert_eq!(emea.miro.org_id.as_deref(), Some("3074457345821141000"));
        assert!(
            us.miro
                .api_base
                .as_str()
                .starts_with("http://127.0.0.1:9000")
        );
        // Top-level sections are the defaults; an entry's own keys win.
        assert_eq!(emea.source(SourceKind::AuditLogs).page_size.get(), 200);
        assert_eq!(us.source(SourceKind::AuditLogs).page_size.get(), 50);
        assert!(!emea.source(SourceKind::ContentLogs).enabled);
        assert!(us.source(SourceKind::ContentLogs).enabled);
        assert_eq!((emea.budget.share, us.budget.share), (0.4, 0.2));
        assert_eq!(
            c.enabled_kinds(),
            vec![SourceKind::AuditLogs, SourceKind::ContentLogs]
        );
        // One `[miro]` is one organisation named `default`, as before.
        let single = load("[miro]\norg_id = \"42\"").unwrap();
        assert!(!single.named_orgs);
        assert_eq!(single.orgs.len(), 1);
        assert_eq!(single.orgs[0].name, DEFAULT_ORG_NAME);
        assert_eq!(single.orgs[0].miro.org_id.as_deref(), Some("42"));
    }

    #[test]
    fn bad_orgs_name_the_entry_and_the_fix() {
        let entry =
            |body: &str| format!("[[orgs]]\nname = \"a\"\norg_id = \"1\"\n[[orgs]]\n{body}");
        for (text, key, words) in [
            (
                format!(
                    "[miro]\ntoken_env = \"T\"\n{}",
                    entry("name = \"b\"\norg_id = \"2\"")
                ),
                "`miro`",
                "cannot be mixed",
            ),
            (
                entry("org_id = \"2\""),
                "`orgs[1].name`",
                "needs a short `name`",
            ),
            (
                entry("name = \"a\"\norg_id = \"2\""),
                "`orgs[1].name`",
                "orgs[0]",
            ),
            (
                entry("name = \"b c\"\norg_id = \"2\""),
                "`orgs[1].name`",
                "letters",
            ),
            (
                entry("name = \"b\""),
                "`orgs[1].org_id`",
                "needs its `org_id`",
            ),
            (
                entry("name = \"b\"\norg_id = \"1\""),
                "`orgs[1].org_id`",
                "same org_id",
            ),
            (
                entry("name = \"b\"\norg_id = \"x1\""),
                "`orgs[1].org_id`",
                "not a Miro organization id",
            ),
            (
                entry("name = \"b\"\norg_id = \"2\"\ntoken_env = \"A\"\ntoken_file = \"f\""),
                "`orgs[1].token_file`",
                "not both",
            ),
            (
                entry("name = \"b\"\norg_id = \"2\"\n[orgs.sources.audit_logs]\npage_size = 0"),
                "`orgs[1].sources.audit_logs.page_size`",
                "out of range",
            ),
            (
                entry("name = \"b\"\norg_id = \"2\"\n[orgs.budget]\nshare = 2.0"),
                "`orgs[1].budget.share`",
                "out of range",
            ),
            (
                format!(
                    "[budget]\nshare = 0\n{}",
                    entry("name = \"b\"\norg_id = \"2\"")
                ),
                "`budget.share`",
                "out of range",
            ),
            (
                entry("name = \"b\"\norg_id = \"2\"\ncolour = 1"),
                "colour",
                "unknown field",
            ),
        ] {
            let msg = load(&text).unwrap_err().to_string();
            assert!(
                msg.contains(key) && msg.contains(words),
                "{text}\n-> {msg}\n(expected {key} and {words})"
            );
        }
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = load("").unwrap();
        assert_eq!(c.miro.api_base.as_str(), "https://api.miro.com/");
        assert_eq!(c.miro.max_response_bytes, 64 * 1024 * 1024);
        let audit = c.source(SourceKind::AuditLogs);
        assert!(audit.enabled);
        assert_eq!(audit.page_size.get(), 500);
        assert_eq!(audit.poll_interval, Duration::from_secs(10));
        assert_eq!(audit.settle_lag, Duration::from_secs(5));
        assert_eq!(audit.overlap, Duration::from_secs(15 * 60));
        assert_eq!(audit.recent_overlap, Duration::from_secs(10));
        assert_eq!(audit.overlap_every, Duration::from_secs(300));
        let content = c.source(SourceKind::ContentLogs);
        assert!(!content.enabled);
        assert_eq!(content.page_size.get(), 1000);
        assert_eq!(content.poll_interval, Duration::from_secs(300));
        assert_eq!(content.settle_lag, Duration::from_secs(60));
        assert_eq!(content.overlap, Duration::from_secs(20 * 60));
        assert_eq!(content.overlap_every, Duration::from_secs(1200));
        // Windowed on `storedAt`: exact with a short lag and overlap, re-read every poll.
        let ai = c.source(SourceKind::AiInteractionLogs);
        assert!(!ai.enabled);
        assert_eq!(ai.page_size.get(), 100);
        assert_eq!(ai.poll_interval, Duration::from_secs(300));
        assert_eq!(ai.settle_lag, Duration::from_secs(5));
        assert_eq!(ai.overlap, Duration::from_secs(30));
        assert_eq!(ai.overlap_every, Duration::ZERO);
        assert_eq!(ai.recent_overlap, ai.overlap, "no late re-read");
        assert_eq!(c.store_path, Path::new("/etc/mirotrail/mirotrail.db"));
        assert_eq!(c.budget.share, 0.5);
        assert_eq!(c.budget.backfill_share, 0.25);
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let err = load("[sources.audit_logs]\npoll_intervall = \"30s\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/etc/mirotrail/mirotrail.toml"), "{msg}");
        assert!(msg.contains("poll_intervall"), "{msg}");
        let err = load("[sinks.a]\ntype = \"file\"\npath = \"x\"\nrotate = 1\n").unwrap_err();
        assert!(err.to_string().contains("rotate"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            (
                "[sources.audit_logs]\noverlap = \"15 parsecs\"",
                "sources.audit_logs.overlap",
            ),
            (
                "[sources.content_logs]\npage_size = 5000",
                "sources.content_logs.page_size",
            ),
            ("[sources.content_logs]\nenabled = true", "miro.org_id"),
            (
                "[sources.ai_interaction_logs]\nenabled = true",
                "ai_interaction_logs is enabled but `org_id` is not set",
            ),
            (
                "[sources.ai_interaction_logs]\npage_size = 101",
                "sources.ai_interaction_logs.page_size",
            ),
            ("[miro]\norg_id = \"abc\"", "miro.org_id"),
            ("[miro]\napi_base = \"ftp://x\"", "miro.api_base"),
            ("[miro]\nmax_response_bytes = 10", "miro.max_response_bytes"),
            ("[budget]\nshare = 1.5", "budget.share"),
            ("[budget]\nbackfill_share = 0", "budget.backfill_share"),
            ("[sources.audit_logs]\nenabled = false", "sources"),
            ("[sinks.x]\ntype = \"carrier-pigeon\"", "carrier-pigeon"),
            (
                "[sinks.s]\ntype = \"azure_logs_ingestion\"\nendpoint = \"https://x\"\nsecret = 1",
                "secret",
            ),
            (
                "[sinks.s]\ntype = \"azure_logs_ingestion\"\nendpoint = \"https://x\"",
                "sinks.s.audit_logs_dcr",
            ),
        ] {
            let msg = load(text).unwrap_err().to_string();
            assert!(msg.contains(key), "{text}: {msg}");
        }
    }

    use proptest::prelude::*;

    /// TOML documents built from the real section and key names with values of any type.
    fn arb_toml() -> impl Strategy<Value = String> {
        let section = prop_oneof![
            Just("miro"),
            Just("sources.audit_logs"),
            Just("sources.content_logs"),
            Just("sources.ai_interaction_logs"),
            Just("budget"),
            Just("store"),
            Just("sinks.a"),
            Just("sinks.b-2"),
            Just("nonsense"),
        ];
        let key = prop_oneof![
            Just("api_base"),
            Just("token_env"),
            Just("token_file"),
            Just("org_id"),
            Just("request_timeout"),
            Just("max_retries"),
            Just("enabled"),
            Just("initial_lookback"),
            Just("poll_interval"),
            Just("settle_lag"),
            Just("overlap"),
            Just("max_window"),
            Just("page_size"),
            Just("share"),
            Just("credits_per_minute"),
            Just("path"),
            Just("type"),
            Just("max_file_bytes"),
            Just("batch_rows"),
            Just("endpoint"),
            Just("bogus"),
        ];
        let value = prop_oneof![
            Just("true".to_string()),
            any::<i64>().prop_map(|i| i.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:?}")),
            "[ -~]{0,20}".prop_map(|s| format!("{:?}", s)),
            Just("\"file\"".to_string()),
            Just("\"stdout\"".to_string()),
            Just("\"azure_logs_ingestion\"".to_string()),
            Just("\"15m\"".to_string()),
            Just("[1, 2]".to_string()),
            Just("{ a = 1 }".to_string()),
        ];
        proptest::collection::vec(
            (section, proptest::collection::vec((key, value), 0..5)),
            0..5,
        )
        .prop_map(|sections| {
            let mut text = String::new();
            let mut seen = std::collections::HashSet::new();
            for (section, keys) in sections {
                if !seen.insert(section) {
                    continue;
                }
                text.push_str(&format!("[{section}]\n"));
                let mut keys_seen = std::collections::HashSet::new();
                for (k, v) in keys {
                    if keys_seen.insert(k) {
                        text.push_str(&format!("{k} = {v}\n"));
                    }
                }
            }
            text
        })
    }

    proptest! {
        /// Arbitrary TOML and arbitrary text: a config or an error naming the file,
        /// never a panic.
        #[test]
        fn any_toml_is_a_config_or_an_error_naming_the_file(text in arb_toml(), junk in "\\PC{0,80}") {
            for input in [text.as_str(), junk.as_str()] {
                if let Err(e) = load(input) {
                    let msg = e.to_string();
                    prop_assert!(
                        msg.contains("/etc/mirotrail/mirotrail.toml") || matches!(e, ConfigError::Secret(_)),
                        "{msg}"
                    );
                }
            }
        }
    }

    #[test]
    fn service_listens_on_loopback_when_asked_and_empty_turns_it_off() {
        assert_eq!(load("").unwrap().service, ServiceConfig::default());
        let c = load("[service]\n").unwrap();
        assert_eq!(c.service.listen, Some("127.0.0.1:9464".parse().unwrap()));
        let c = load("[service]\nlisten = \"[::1]:9100\"\nlog_format = \"json\"\n").unwrap();
        assert_eq!(c.service.listen, Some("[::1]:9100".parse().unwrap()));
        assert_eq!(c.service.log_format, Some(LogFormat::Json));
        assert_eq!(
            load("[service]\nlisten = \"\"\n").unwrap().service.listen,
            None
        );
        for (text, key) in [
            ("[service]\nlisten = \"localhost\"", "service.listen"),
            (
                "[service]\nlisten = \"localhost:http-ish\"",
                "service.listen",
            ),
            ("[service]\nlog_format = \"xml\"", "service.log_format"),
            ("[service]\nport = 1", "port"),
        ] {
            let msg = load(text).unwrap_err().to_string();
            assert!(msg.contains(key), "{text}: {msg}");
        }
    }

    #[test]
    fn service_listen_accepts_a_host_name_and_every_interface() {
        let c = load("[service]\nlisten = \"localhost:9100\"\n").unwrap();
        let addr = c.service.listen.unwrap();
        assert!(addr.ip().is_loopback() && addr.port() == 9100, "{addr}");
        let c = load("[service]\nlisten = \"0.0.0.0:9100\"\n").unwrap();
        assert_eq!(c.service.listen, Some("0.0.0.0:9100".parse().unwrap()));
    }

    #[test]
    fn file_and_stdout_sinks_take_a_format_and_name_the_key_when_it_is_wrong() {
        let c = load(
            "[sinks.lake]\ntype = \"file\"\npath = \"lake\"\nformat = \"ocsf\"\n\
             [sinks.out]\ntype = \"stdout\"\nformat = \"ocsf\"\n\
             [sinks.archive]\ntype = \"file\"\npath = \"archive\"\n",
        )
        .unwrap();
        let formats: Vec<(&str, RecordFormat)> = c
            .sinks
            .iter()
            .map(|s| match &s.kind {
                SinkKindConfig::File { format, .. } | SinkKindConfig::Stdout { format } => {
                    (s.name.as_str(), *format)
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            formats,
            [
                ("archive", RecordFormat::Json),
                ("lake", RecordFormat::Ocsf),
                ("out", RecordFormat::Ocsf)
            ]
        );
        for text in [
            "[sinks.lake]\ntype = \"file\"\npath = \"lake\"\nformat = \"parquet\"\n",
            "[sinks.lake]\ntype = \"stdout\"\nformat = \"parquet\"\n",
        ] {
            let msg = load(text).unwrap_err().to_string();
            assert!(
                msg.contains("sinks.lake.format")
                    && msg.contains("parquet")
                    && msg.contains("\"ocsf\""),
                "{msg}"
            );
        }
    }

    #[test]
    fn sinks_and_relative_paths() {
        let c = load("[sinks.archive]\ntype = \"file\"\npath = \"archive\"\n[sinks.out]\ntype = \"stdout\"\n")
            .unwrap();
        assert_eq!(c.sinks.len(), 2);
        match &c.sinks[0].kind {
            SinkKindConfig::File { dir, .. } => {
                assert_eq!(dir, Path::new("/etc/mirotrail/archive"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
