//! Configuration: the TOML file as written (`raw`), then the validated runtime form.
//!
//! Step one deserializes with `deny_unknown_fields` so a typo is an error naming the key
//! and the file; step two turns strings into types that rule out bad values (durations,
//! URLs, non-zero page sizes) and loads secrets into redacting types. Relative paths are
//! resolved against the directory of the config file.
//!
//! Organisations: `[miro]` (with `[sources.*]` and `[budget]`) is one organisation named
//! `default`; `[[orgs]]` entries are several, each with its own token keys, and
//! `[orgs.sources.*]` / `[orgs.budget]` overriding the top-level sections key by key
//! ([`OrgConfig`]). The two cannot be mixed; errors name `orgs[N].key`.

pub mod keys;
mod raw;

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

use crate::secret::{ReadSecretError, read_secret};
use url::Url;

pub use raw::RawConfig;

pub use crate::settings::{ConfigError, parse_duration};
pub use crate::sink::{SinkConfig, SinkKindConfig, SinkStart};
pub use crate::source::SourceKind;

pub use crate::secret::SecretSource;

/// `[miro]`, validated.
#[derive(Debug, Clone)]
pub struct MiroConfig {
    pub api_base: Url,
    /// Where the Miro token comes from (unused when `oauth` is set).
    pub token_source: SecretSource,
    /// Expiring tokens refreshed with the app's credentials, instead of a static token.
    pub oauth: Option<MiroOAuthConfig>,
    pub org_id: Option<String>,
    pub request_timeout: Duration,
    pub max_retries: u32,
    pub retry_initial_backoff: Duration,
    /// Largest Miro answer read, after gzip decoding (bytes).
    pub max_response_bytes: usize,
}

/// `[miro]`'s expiring-token keys, validated.
#[derive(Debug, Clone)]
pub struct MiroOAuthConfig {
    pub client_id: String,
    pub client_secret: SecretSource,
    pub refresh_token_file: std::path::PathBuf,
}

/// `[sources.*]`, validated.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub kind: SourceKind,
    pub enabled: bool,
    pub initial_lookback: Duration,
    pub poll_interval: Duration,
    pub settle_lag: Duration,
    /// Each poll re-reads this much before the watermark.
    pub recent_overlap: Duration,
    /// Each slice of time is read once more when this old (`collect/window.rs`).
    pub overlap: Duration,
    pub max_window: Duration,
    pub overlap_every: Duration,
    pub page_size: NonZeroU32,
}

/// `[budget]`, validated.
#[derive(Debug, Clone)]
pub struct BudgetConfig {
    /// Share of the token's budget `run` may use.
    pub share: f64,
    /// Share of the token's budget a `backfill` process may use (beside `run`).
    pub backfill_share: f64,
    pub credits_per_minute: u64,
}

/// Log output format on standard error (`[service] log_format`, `--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `[service]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Where `run` serves `/metrics`, `/healthz` and `/readyz`; `None`: nowhere.
    pub listen: Option<std::net::SocketAddr>,
    /// From the config file; the command line's `--log-format` wins.
    pub log_format: Option<LogFormat>,
}

/// The label of the one organisation of a config with `[miro]` (and of every row stored
/// before organisations were named).
pub const DEFAULT_ORG_NAME: &str = "default";

/// One Miro organisation: `[miro]` with `[sources.*]` and `[budget]`, or one `[[orgs]]`
/// entry (its sources and budget keys default to the top-level sections).
#[derive(Debug, Clone)]
pub struct OrgConfig {
    /// `default` for `[miro]`; the entry's `name` for `[[orgs]]`.
    pub name: String,
    pub miro: MiroConfig,
    /// Every source, enabled or not, in `SourceKind::ALL` order.
    pub sources: Vec<SourceConfig>,
    /// The share of this organisation's token's credits (one budget per token).
    pub budget: BudgetConfig,
}

impl OrgConfig {
    /// The enabled source configurations of the first organisation (see `miro`).
    pub fn enabled_sources(&self) -> impl Iterator<Item = &SourceConfig> {
        self.sources.iter().filter(|s| s.enabled)
    }

    /// The configuration of one source.
    pub fn source(&self, kind: SourceKind) -> &SourceConfig {
        self.sources
            .iter()
            .find(|s| s.kind == kind)
            .expect("every source is always configured")
    }

    /// What the store knows this organisation by.
    pub fn identity(&self) -> crate::store::OrgIdentity {
        crate::store::OrgIdentity {
            name: self.name.clone(),
            org_id: self.miro.org_id.clone(),
        }
    }

    /// This organisation's token provider: its static token, or expiring tokens
    /// refreshed with its app's credentials (the client secret is loaded here).
    pub fn token_provider(&self) -> Result<crate::miro::TokenProvider, ConfigError> {
        token_provider(&self.miro)
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    /// The first organisation's `[miro]` keys (the only one's, without `[[orgs]]`); code
    /// that collects goes through `orgs`.
    pub miro: MiroConfig,
    /// The first organisation's sources (see `miro`).
    pub sources: Vec<SourceConfig>,
    /// The first organisation's budget (see `miro`).
    pub budget: BudgetConfig,
    /// Every organisation collected, in the config's order (one for `[miro]`).
    pub orgs: Vec<OrgConfig>,
    /// True when the config names its organisations with `[[orgs]]` (labels are shown).
    pub named_orgs: bool,
    pub store_path: PathBuf,
    /// Rows older than this are deleted once every sink has them.
    pub retention: Duration,
    pub sinks: Vec<SinkConfig>,
    pub service: ServiceConfig,
    /// `[detect]`: which rules `run` evaluates, with the overrides applied.
    pub detect: crate::detect::DetectConfig,
}

/// The environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "MIROTRAIL_CONFIG";
/// The config file used when neither `--config` nor `MIROTRAIL_CONFIG` names one.
pub const DEFAULT_CONFIG_FILE: &str = "mirotrail.toml";

/// Which config file a command uses, and what chose it (for errors that say where
/// mirotrail looked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigLocation {
    pub path: PathBuf,
    pub origin: ConfigOrigin,
}

/// What chose the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// `--config FILE`.
    Flag,
    /// The `MIROTRAIL_CONFIG` environment variable.
    Env,
    /// Neither: `./mirotrail.toml`.
    Default,
}

impl ConfigLocation {
    /// `--config` if given, else `MIROTRAIL_CONFIG` if set and not empty, else
    /// `./mirotrail.toml`.
    #[allow(
        clippy::disallowed_methods,
        reason = "config loading: `MIROTRAIL_CONFIG` names the config file"
    )]
    pub fn resolve(flag: Option<PathBuf>) -> ConfigLocation {
        ConfigLocation::resolve_with_env(flag, std::env::var_os(CONFIG_ENV))
    }

    /// `resolve` with the value of `MIROTRAIL_CONFIG` given (for tests).
    pub fn resolve_with_env(
        flag: Option<PathBuf>,
        env: Option<std::ffi::OsString>,
    ) -> ConfigLocation {
        match (flag, env.filter(|v| !v.is_empty())) {
            (Some(path), _) => ConfigLocation {
                path,
                origin: ConfigOrigin::Flag,
            },
            (None, Some(path)) => ConfigLocation {
                path: PathBuf::from(path),
                origin: ConfigOrigin::Env,
            },
            (None, None) => ConfigLocation {
                path: PathBuf::from(DEFAULT_CONFIG_FILE),
                origin: ConfigOrigin::Default,
            },
        }
    }

    /// How this file was chosen, e.g. `named by MIROTRAIL_CONFIG`.
    fn chosen_by(&self) -> String {
        match self.origin {
            ConfigOrigin::Flag => "named by --config".to_string(),
            ConfigOrigin::Env => format!("named by {CONFIG_ENV}"),
            ConfigOrigin::Default => {
                let cwd = std::env::current_dir()
                    .map(|d| format!(" in {}", d.display()))
                    .unwrap_or_default();
                format!("the default{cwd}: no --config given and {CONFIG_ENV} is not set")
            }
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_from(&ConfigLocation {
            path: path.to_path_buf(),
            origin: ConfigOrigin::Flag,
        })
    }

    /// Reads, parses and validates the config file at `location`; a file that cannot be
    /// read gets one line saying where mirotrail looked and what to do.
    pub fn load_from(location: &ConfigLocation) -> Result<Config, ConfigError> {
        let path = &location.path;
        let read_error = |reason: String| ConfigError::Read {
            path: path.clone(),
            reason,
        };
        if path.is_dir() {
            return Err(read_error(format!(
                "is a directory ({}); give the path of the TOML file in it",
                location.chosen_by()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            read_error(match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "not found ({}); write a starter config with `mirotrail init --path {}`, or \
                     name another file with --config FILE or {CONFIG_ENV}",
                    location.chosen_by(),
                    path.display()
                ),
                std::io::ErrorKind::PermissionDenied => format!(
                    "permission denied ({}); let the user running mirotrail read it",
                    location.chosen_by()
                ),
                _ => format!("cannot be read ({}): {e}", location.chosen_by()),
            })
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates config text; `path` names the file in errors and anchors
    /// relative paths.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            // The parser's own text: the position, the line with a caret under the
            // problem, then what is wrong.
            message: e.to_string().trim_end().to_string(),
        })?;
        raw.validate(path)
    }

    /// The enabled source configurations of the first organisation (see `miro`).
    pub fn enabled_sources(&self) -> impl Iterator<Item = &SourceConfig> {
        self.sources.iter().filter(|s| s.enabled)
    }

    /// The sources enabled in at least one organisation.
    pub fn enabled_kinds(&self) -> Vec<SourceKind> {
        SourceKind::ALL
            .into_iter()
            .filter(|k| self.orgs.iter().any(|o| o.source(*k).enabled))
            .collect()
    }

    /// The configuration of one source of the first organisation (see `miro`).
    pub fn source(&self, kind: SourceKind) -> &SourceConfig {
        self.sources
            .iter()
            .find(|s| s.kind == kind)
            .expect("both sources are always configured")
    }

    /// Loads the Miro token from its configured source.
    pub fn load_miro_token(&self) -> Result<SecretString, ConfigError> {
        load_secret(&self.miro.token_source, "Miro token")
    }

    /// The first organisation's token provider (see `miro`).
    pub fn miro_token_provider(&self) -> Result<crate::miro::TokenProvider, ConfigError> {
        token_provider(&self.miro)
    }
}

/// The token provider of one organisation's `[miro]` keys.
fn token_provider(miro: &MiroConfig) -> Result<crate::miro::TokenProvider, ConfigError> {
    use crate::miro::{ExpiringTokenConfig, TokenProvider};
    match &miro.oauth {
        None => Ok(TokenProvider::fixed(load_secret(
            &miro.token_source,
            "Miro token",
        )?)),
        Some(o) => Ok(TokenProvider::expiring(
            ExpiringTokenConfig {
                token_url: format!(
                    "{}/v1/oauth/token",
                    miro.api_base.as_str().trim_end_matches('/')
                ),
                client_id: o.client_id.clone(),
                client_secret: load_secret(&o.client_secret, "Miro client secret")?,
                refresh_token_file: o.refresh_token_file.clone(),
            },
            miro.request_timeout,
        )),
    }
}

/// Reads a secret from an environment variable or a file (trimmed).
#[allow(
    clippy::disallowed_methods,
    reason = "config loading: secrets come from the environment variable the config names"
)]
pub fn load_secret(source: &SecretSource, what: &str) -> Result<SecretString, ConfigError> {
    let value = read_secret(source, &|var| std::env::var(var).ok()).map_err(|e| {
        ConfigError::Secret(match (source, e) {
            (SecretSource::Env(var), ReadSecretError::Empty) => format!(
                "the {what} is empty: the environment variable {var} is set but holds nothing"
            ),
            (SecretSource::Env(var), _) => format!(
                "the {what} is not set: export it in the environment variable {var} \
                 (or set `token_file` in the config)"
            ),
            (SecretSource::File(path), ReadSecretError::Empty) => format!(
                "the {what} is empty: the file {} holds nothing (or only whitespace); put the \
                 token in it",
                path.display()
            ),
            (SecretSource::File(path), ReadSecretError::Unreadable(e)) => {
                format!("cannot read the {what} from {}: {e}", path.display())
            }
            (SecretSource::File(_), ReadSecretError::NotSet) => {
                unreachable!("only a variable can be unset")
            }
        })
    })?;
    if let SecretSource::File(path) = source {
        warn_if_world_readable(path, what);
    }
    Ok(value)
}

#[cfg(unix)]
fn warn_if_world_readable(path: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %path.display(),
            "the {what} file is readable by group or others; restrict it with `chmod 600`"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_world_readable(_path: &Path, _what: &str) {}

/// Resolves a listen address written as `IP:PORT` or `HOST:PORT` (`localhost:9464`).
/// A host name that resolves to several addresses listens on the first IPv4 one (else the
/// first), so `localhost` means 127.0.0.1 wherever it also names ::1.
pub fn resolve_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let text = text.trim();
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return Ok(addr);
    }
    if text
        .rsplit_once(':')
        .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    {
        return Err(format!(
            "`{text}` is not an address with a port; write IP:PORT or HOST:PORT, like \
             \"127.0.0.1:9464\", \"localhost:9464\" or \"0.0.0.0:9464\" (every interface)"
        ));
    }
    let addrs: Vec<std::net::SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{text}`: {e}; write an IP address instead"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("`{text}` resolves to no address; write an IP address instead"))
}

/// Sink names in a stable order (for status output).
pub fn sink_names(sinks: &[SinkConfig]) -> BTreeMap<&str, &SinkConfig> {
    sinks.iter().map(|s| (s.name.as_str(), s)).collect()
}
