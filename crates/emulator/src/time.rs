//! Instants as UTC milliseconds since the UNIX epoch, and their ISO 8601 text forms.
//!
//! The emulator keeps its own small time type so that it depends on nothing of the
//! program it emulates services for (it is an independent check of it).
//! [`UnixMs::to_iso`] writes Miro's query form `2023-03-30T17:26:50.000Z`;
//! [`UnixMs::parse`] reads RFC 3339 and Miro's offset without a colon (`+0000`), flooring
//! sub-millisecond digits, which covers every form the emulated organisation writes
//! (`TimeForm`) and every query parameter the API takes.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::time::OffsetDateTime;
use ::time::format_description::well_known::Rfc3339;
use ::time::macros::format_description;

/// An instant in milliseconds since the UNIX epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMs(pub i64);

impl UnixMs {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        UnixMs(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }

    /// Adds a duration, saturating.
    pub fn plus(self, d: Duration) -> Self {
        UnixMs(self.0.saturating_add(millis(d)))
    }

    /// Subtracts a duration, saturating.
    pub fn minus(self, d: Duration) -> Self {
        UnixMs(self.0.saturating_sub(millis(d)))
    }

    /// Parses an RFC 3339 date-time, or one whose offset has no colon (`+0000`, as Miro
    /// writes audit times). Sub-millisecond digits are floored.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let b = text.as_bytes();
        // `...+hhmm` -> `...+hh:mm`
        let colon;
        let text = match b.len().checked_sub(5).map(|i| (i, &b[i..])) {
            Some((i, [b'+' | b'-', rest @ ..])) if rest.iter().all(u8::is_ascii_digit) => {
                colon = format!("{}:{}", &text[..i + 3], &text[i + 3..]);
                colon.as_str()
            }
            _ => text,
        };
        let dt = OffsetDateTime::parse(text, &Rfc3339).ok()?;
        i64::try_from(dt.unix_timestamp_nanos().div_euclid(1_000_000))
            .ok()
            .map(UnixMs)
    }

    /// The Miro query form: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub fn to_iso(self) -> String {
        self.to_string()
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl fmt::Display for UnixMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let form = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        match OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000) {
            Ok(dt) => match dt.format(&form) {
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
    fn writes_the_query_form_and_reads_every_form_the_org_writes() {
        let t = UnixMs(1_693_560_610_840);
        assert_eq!(t.to_iso(), "2023-09-01T09:30:10.840Z");
        for text in [
            "2023-09-01T09:30:10.840Z",
            "2023-09-01T09:30:10.840+0000",
            "2023-09-01T09:30:10.840+00:00",
            "2023-09-01T09:30:10.840687Z",
            "2023-09-01T15:00:10.840687123+05:30",
            "2023-09-01T04:00:10.840-0530",
        ] {
            assert_eq!(UnixMs::parse(text), Some(t), "{text}");
        }
        assert_eq!(
            UnixMs::parse("2023-09-01T09:30:10Z"),
            Some(UnixMs(1_693_560_610_000))
        );
        for bad in [
            "yesterday",
            "2023-09-01T09:30:10",
            "2023-09-01T09:30:10+000",
        ] {
            assert_eq!(UnixMs::parse(bad), None, "{bad}");
        }
    }
}
