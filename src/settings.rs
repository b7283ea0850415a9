//! The vocabulary of settings validation, shared by `config` and the sinks that validate
//! their own sections: the configuration error and the duration syntax. A leaf module, so
//! `sink` can use it without importing `config` (which imports the sink registry).

use std::path::PathBuf;
use std::time::Duration;

/// A configuration problem: always exit code 2, always names the file and the key.
///
/// Each message is complete on its own (causes are part of the text, never also a
/// `source()`), so printing the error chain says each thing once.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read; `reason` says why and where it looked.
    #[error("config file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    /// Not TOML, or keys that do not belong; `message` keeps the TOML parser's snippet
    /// of the line with a caret under the problem (several lines).
    #[error("config file {path}:\n{message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{0}")]
    Secret(String),
}

/// Parses a duration written with units (`"30s"`, `"15m"`, `"90d"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write a number with a unit, like \"30s\", \"15m\", \"24h\" or \"90d\"")
    })
}
