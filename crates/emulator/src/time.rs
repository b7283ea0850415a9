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
        match iso_text(self.0) {
            Some(text) => String::from_utf8(text.to_vec()).expect("ASCII digits"),
            None => self.to_string(),
        }
    }
}

/// Milliseconds of 10000-01-01T00:00:00Z: [`iso_text`] writes instants before it.
const YEAR_10000_MS: i64 = 253_402_300_800_000;

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for an instant from 1970 to 9999 (`None` outside), by
/// arithmetic: the emulator writes one or two per item, and a formatting machinery per
/// call was a tenth of its CPU. The civil date comes from the day count by Howard
/// Hinnant's `civil_from_days` (proleptic Gregorian); `iso_text_matches_the_time_crate`
/// checks it against the `time` crate's formatting.
fn iso_text(ms: i64) -> Option<[u8; 24]> {
    if !(0..YEAR_10000_MS).contains(&ms) {
        return None;
    }
    let ms = ms.unsigned_abs();
    let days = ms / 86_400_000;
    let in_day = ms % 86_400_000;
    // civil_from_days, for days >= 0 (so every quotient is of non-negative numbers).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + u8::try_from(n % 10).expect("a digit");
            n /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, in_day / 3_600_000);
    put(14, 2, in_day / 60_000 % 60);
    put(17, 2, in_day / 1000 % 60);
    put(20, 3, in_day % 1000);
    Some(out)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl fmt::Display for UnixMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(text) = iso_text(self.0) {
            return f.write_str(std::str::from_utf8(&text).expect("ASCII digits"));
        }
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

    /// The `time` crate's text of `ms` in the query form.
    fn time_crate_text(ms: i64) -> String {
        let form = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap()
            .format(&form)
            .unwrap()
    }

    #[test]
    fn iso_text_matches_the_time_crate() {
        let day = 86_400_000;
        let mut instants = vec![0, 1, day - 1, day, YEAR_10000_MS - 1];
        // Around every 1 March and 1 January from 1970 to 2500 (leap days, centuries).
        for year in 1970..2500 {
            let jan = OffsetDateTime::from_unix_timestamp(0)
                .unwrap()
                .replace_year(year)
                .unwrap();
            let jan_ms = jan.unix_timestamp() * 1000;
            let mar = jan.replace_month(::time::Month::March).unwrap();
            let mar_ms = mar.unix_timestamp() * 1000;
            instants.extend([jan_ms - 1, jan_ms, mar_ms - day, mar_ms - 1, mar_ms]);
        }
        // And a spread of instants up to year 9999.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            instants.push(i64::try_from(x % YEAR_10000_MS.unsigned_abs()).unwrap());
        }
        for ms in instants.into_iter().filter(|&ms| ms >= 0) {
            let ours = iso_text(ms).map(|t| String::from_utf8(t.to_vec()).unwrap());
            assert_eq!(ours, Some(time_crate_text(ms)), "{ms}");
            assert_eq!(UnixMs(ms).to_iso(), time_crate_text(ms));
        }
        assert_eq!(iso_text(-1), None);
        assert_eq!(iso_text(YEAR_10000_MS), None);
        assert_eq!(UnixMs(-1).to_iso(), "1969-12-31T23:59:59.999Z");
    }
}
