//! Instants as UNIX milliseconds, and the one text form both Miro and the store use.
//!
//! Miro wants `2023-03-30T17:26:50.000Z` (UTC, milliseconds, trailing `Z`); the store keeps
//! datetimes in the same form so that text order is time order.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// An instant in milliseconds since the UNIX epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMs(pub i64);

impl UnixMs {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        UnixMs(since.as_millis() as i64)
    }

    /// Adds a duration, saturating.
    pub fn plus(self, d: Duration) -> Self {
        UnixMs(self.0.saturating_add(d.as_millis() as i64))
    }

    /// Subtracts a duration, saturating.
    pub fn minus(self, d: Duration) -> Self {
        UnixMs(self.0.saturating_sub(d.as_millis() as i64))
    }

    /// The duration from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: UnixMs) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    /// Parses an RFC 3339 / ISO 8601 datetime with an offset (`Z` or `+hh:mm`).
    pub fn parse(text: &str) -> Option<Self> {
        let dt = OffsetDateTime::parse(text.trim(), &Rfc3339).ok()?;
        Some(UnixMs((dt.unix_timestamp_nanos() / 1_000_000) as i64))
    }

    /// The Miro and store text form: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub fn to_iso(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for UnixMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fmt = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        match OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000) {
            Ok(dt) => match dt.format(&fmt) {
                Ok(s) => f.write_str(&s),
                Err(_) => write!(f, "@{}ms", self.0),
            },
            Err(_) => write!(f, "@{}ms", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_milliseconds_and_z() {
        assert_eq!(
            UnixMs(1_680_197_210_000).to_iso(),
            "2023-03-30T17:26:50.000Z"
        );
        assert_eq!(
            UnixMs(1_680_197_210_123).to_iso(),
            "2023-03-30T17:26:50.123Z"
        );
    }

    #[test]
    fn parses_z_and_offsets_and_round_trips() {
        let t = UnixMs::parse("2023-03-30T17:26:50.123Z").unwrap();
        assert_eq!(t, UnixMs(1_680_197_210_123));
        assert_eq!(UnixMs::parse("2023-03-30T19:26:50.123+02:00"), Some(t));
        assert_eq!(UnixMs::parse(&t.to_iso()), Some(t));
        assert_eq!(
            UnixMs::parse("2023-03-30T17:26:50Z"),
            Some(UnixMs(1_680_197_210_000))
        );
        assert_eq!(UnixMs::parse("yesterday"), None);
        assert_eq!(UnixMs::parse("2023-03-30 17:26:50"), None);
    }
}
