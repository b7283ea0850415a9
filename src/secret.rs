//! Where a secret (the Miro token, an Azure client secret) is read from, and the one
//! reader of it. Each caller words its own messages (what the secret is, which setting
//! to change); this module only says what went wrong.
//!
//! Invariants: a secret is trimmed, never empty, and held as a `SecretString` from the
//! moment it is read; no error here carries its value.

use std::path::PathBuf;

use secrecy::SecretString;

/// Where a secret is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Env(var) => write!(f, "the environment variable {var}"),
            SecretSource::File(path) => write!(f, "the file {}", path.display()),
        }
    }
}

/// Why a secret could not be read.
#[derive(Debug)]
pub enum ReadSecretError {
    /// The environment variable is not set.
    NotSet,
    /// The file cannot be read.
    Unreadable(std::io::Error),
    /// The variable or file holds nothing but whitespace.
    Empty,
}

/// Reads the secret from `source`, looking environment variables up with `env`.
pub fn read_secret(
    source: &SecretSource,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SecretString, ReadSecretError> {
    let value = match source {
        SecretSource::Env(var) => env(var).ok_or(ReadSecretError::NotSet)?,
        SecretSource::File(path) => {
            std::fs::read_to_string(path).map_err(ReadSecretError::Unreadable)?
        }
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(ReadSecretError::Empty);
    }
    Ok(SecretString::from(value.to_string()))
}
