//! Instants as UNIX milliseconds, and the one text form both Miro and the store use.
//!
//! Miro wants `2023-03-30T17:26:50.000Z` (UTC, milliseconds, trailing `Z`) in queries; the
//! store keeps datetimes in the same form so that text order is time order.
//!
//! What Miro *sends* is looser: audit `createdAt` comes as `2023-09-01T09:30:10.840+0000`
//! (an offset without a colon, which RFC 3339 does not allow), other times with `Z`, and
//! servers may send any number of fractional digits. [`UnixMs::parse`] accepts every such
//! ISO 8601 extended form (see its doc); digits beyond the millisecond are truncated (the
//! instant is floored to its millisecond, so a time never moves into the next one), and the
//! item's raw JSON keeps them exactly.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
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
        UnixMs(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }

    /// Adds a duration, saturating.
    pub fn plus(self, d: Duration) -> Self {
        UnixMs(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// Subtracts a duration, saturating.
    pub fn minus(self, d: Duration) -> Self {
        UnixMs(
            self.0
                .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// The duration from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: UnixMs) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0).unsigned_abs())
    }

    /// Parses an ISO 8601 date-time with an explicit offset:
    /// `YYYY-MM-DDTHH:MM:SS[.f]` then `Z`, `+hh:mm`, `+hhmm` or `+hh` (or `-`), where the
    /// fraction has 1 to 9 digits and `T`/`Z` may be lowercase. Sub-millisecond digits are
    /// truncated (floored). A time without an offset is ambiguous and gives `None`.
    pub fn parse(text: &str) -> Option<Self> {
        parse_iso8601(text.trim()).map(UnixMs)
    }

    /// The Miro and store text form: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub fn to_iso(self) -> String {
        self.iso_text()
            .map_or_else(|| self.to_string(), |t| t.as_str().to_owned())
    }

    /// [`UnixMs::to_iso`]'s text held inline, for the years 0 to 9999 (every time Miro
    /// sends; `None` for others, whose text is longer).
    pub fn iso_text(self) -> Option<IsoText> {
        // Written digit by digit: the same text as `Display` (which goes through `time`'s
        // format descriptions, several times slower, once per row).
        let days = self.0.div_euclid(86_400_000);
        let ms_of_day = self.0.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        if !(0..=9999).contains(&year) {
            return None;
        }
        let mut out = [0u8; 24];
        let mut put = |at: usize, width: usize, mut n: i64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + u8::try_from(n % 10).unwrap_or(0);
                n /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, ms_of_day / 3_600_000);
        put(14, 2, ms_of_day / 60_000 % 60);
        put(17, 2, ms_of_day / 1000 % 60);
        put(20, 3, ms_of_day % 1000);
        for (i, c) in [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
            (23, b'Z'),
        ] {
            out[i] = c;
        }
        Some(IsoText(out))
    }
}

/// A time's text in the store's form ([`UnixMs::iso_text`]), without an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsoText([u8; 24]);

impl IsoText {
    /// The text: ASCII digits and separators, written only by [`UnixMs::iso_text`].
    pub fn as_str(&self) -> &str {
        debug_assert!(self.0.is_ascii());
        // SAFETY: the bytes are ASCII (`UnixMs::iso_text` writes digits and separators
        // only, and nothing else writes them), so they are UTF-8; not checking saves a
        // validation per time cell read.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

/// The proleptic Gregorian date `(year, month, day)` of a day count from 1970-01-01
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The day count from 1970-01-01 of the proleptic Gregorian date `(year, month, day)`
/// (H. Hinnant's `days_from_civil`, the inverse of [`civil_from_days`]); the date is
/// valid (the caller checks it).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The days of `month` (1 to 12) of `year` in the proleptic Gregorian calendar.
fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `n` ASCII digits at the start of `b`, as a number.
fn digits(b: &[u8], n: usize) -> Option<u32> {
    let d = b.get(..n)?;
    d.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// The UNIX milliseconds of an ISO 8601 date-time ([`UnixMs::parse`]'s forms), computed
/// from its fields: the same dates, times and offsets as the `time` crate accepts
/// (`Date::from_calendar_date`, `Time::from_hms_nano`, `UtcOffset::from_hms`), the same
/// instant (the test `the_direct_parse_equals_the_time_crate`), without building its types
/// once per row.
fn parse_iso8601(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    // YYYY-MM-DDTHH:MM:SS is 19 bytes, then an optional fraction, then the offset.
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = i64::from(digits(b, 4)?);
    let month = digits(&b[5..], 2)?;
    let day = digits(&b[8..], 2)?;
    let (hour, minute, second) = (
        digits(&b[11..], 2)?,
        digits(&b[14..], 2)?,
        digits(&b[17..], 2)?,
    );
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix(b".").or_else(|| rest.strip_prefix(b",")) {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return None;
        }
        // The first three digits (padded with zeros): later ones are truncated.
        millis = digits(frac, n.min(3))? * 10u32.pow(3 - u32::try_from(n.min(3)).ok()?);
        rest = &frac[n..];
    }
    let offset_minutes = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), tail @ ..] => {
            let (h, m) = match tail {
                [_, _] => (digits(tail, 2)?, 0),
                [_, _, _, _] => (digits(tail, 2)?, digits(&tail[2..], 2)?),
                [_, _, b':', _, _] => (digits(tail, 2)?, digits(&tail[3..], 2)?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = i64::from(h * 60 + m);
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return None,
    };
    let days = days_from_civil(year, i64::from(month), i64::from(day));
    let seconds =
        days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_minutes * 60;
    Some(seconds * 1000 + i64::from(millis))
}

impl fmt::Display for UnixMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fmt = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        match OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000) {
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
    use time::{Date, Month, PrimitiveDateTime, Time, UtcOffset};

    /// The parse as it was written with the `time` crate's types: the oracle of
    /// [`parse_iso8601`].
    fn parse_with_time(text: &str) -> Option<i64> {
        let b = text.as_bytes();
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't')
            || b[13] != b':'
            || b[16] != b':'
        {
            return None;
        }
        let year = i32::try_from(digits(b, 4)?).ok()?;
        let month = Month::try_from(u8::try_from(digits(&b[5..], 2)?).ok()?).ok()?;
        let day = u8::try_from(digits(&b[8..], 2)?).ok()?;
        let (hour, minute, second) = (
            u8::try_from(digits(&b[11..], 2)?).ok()?,
            u8::try_from(digits(&b[14..], 2)?).ok()?,
            u8::try_from(digits(&b[17..], 2)?).ok()?,
        );
        let mut rest = &b[19..];
        let mut nanos = 0u32;
        if let Some(frac) = rest.strip_prefix(b".").or_else(|| rest.strip_prefix(b",")) {
            let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
            if !(1..=9).contains(&n) {
                return None;
            }
            nanos = digits(frac, n)? * 10u32.pow(9 - u32::try_from(n).ok()?);
            rest = &frac[n..];
        }
        let offset = match rest {
            [b'Z' | b'z'] => UtcOffset::UTC,
            [sign @ (b'+' | b'-'), tail @ ..] => {
                let (h, m) = match tail {
                    [_, _] => (digits(tail, 2)?, 0),
                    [_, _, _, _] => (digits(tail, 2)?, digits(&tail[2..], 2)?),
                    [_, _, b':', _, _] => (digits(tail, 2)?, digits(&tail[3..], 2)?),
                    _ => return None,
                };
                if h > 23 || m > 59 {
                    return None;
                }
                let sign = if *sign == b'-' { -1 } else { 1 };
                UtcOffset::from_hms(
                    sign * i8::try_from(h).ok()?,
                    sign * i8::try_from(m).ok()?,
                    0,
                )
                .ok()?
            }
            _ => return None,
        };
        let date = Date::from_calendar_date(year, month, day).ok()?;
        let time = Time::from_hms_nano(hour, minute, second, nanos).ok()?;
        let dt = PrimitiveDateTime::new(date, time).assume_offset(offset);
        i64::try_from(dt.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
    }

    proptest::proptest! {
        /// The direct parse accepts exactly the texts the `time` crate's types accept and
        /// gives the same instant: every field in and out of its range (days past the
        /// month's end, leap years, hour 24, second 60, offsets of every form).
        #[test]
        fn the_direct_parse_equals_the_time_crate(
            text in "[0-9]{4}-(0[0-9]|1[0-3]|[0-9]{2})-([0-3][0-9])[Tt]([0-2][0-9]):([0-6][0-9]):([0-6][0-9])([.,][0-9]{0,10})?([Zz]|[+-][0-9]{2}(:?[0-9]{2})?|[+-][0-9]{3})?",
        ) {
            proptest::prop_assert_eq!(parse_iso8601(&text), parse_with_time(&text), "{}", text);
        }

        /// The same over dates that exist, the common case (the regex above mostly makes
        /// dates that do not).
        #[test]
        fn the_direct_parse_equals_the_time_crate_on_real_dates(
            ms in -62_135_596_800_000i64..253_402_300_799_999,
            frac_digits in 0usize..=9,
            zone in "[Zz]|[+-](0[0-9]|1[0-9]|2[0-3])(:?[0-5][0-9])?",
        ) {
            let iso = UnixMs(ms).to_iso();
            let frac = format!(".{:0<9}", &iso[20..23]);
            let frac = if frac_digits == 0 { "" } else { &frac[..=frac_digits] };
            let text = format!("{}{frac}{zone}", &iso[..19]);
            proptest::prop_assert_eq!(parse_iso8601(&text), parse_with_time(&text), "{}", text);
        }
    }

    proptest::proptest! {
        /// `to_iso` writes exactly what `Display` writes, over the whole range.
        #[test]
        fn to_iso_is_the_display_form(ms in proptest::prelude::any::<i64>(), near in -100_000_000_000_000i64..400_000_000_000_000) {
            for t in [UnixMs(ms), UnixMs(near)] {
                proptest::prop_assert_eq!(t.to_iso(), t.to_string());
            }
        }
    }

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

    /// Miro's audit `createdAt` (`+0000`, no colon) gave no time at all.
    #[test]
    fn miro_offset_without_colon_parses() {
        assert_eq!(
            UnixMs::parse("2023-09-01T09:30:10.840+0000"),
            UnixMs::parse("2023-09-01T09:30:10.840Z")
        );
        assert!(UnixMs::parse("2023-09-01T09:30:10.840+0000").is_some());
        assert_eq!(
            UnixMs::parse("2023-09-01T04:00:10.840-0530"),
            UnixMs::parse("2023-09-01T09:30:10.840Z")
        );
        assert_eq!(
            UnixMs::parse("2023-09-01t15:00:10.840+05:30"),
            UnixMs::parse("2023-09-01T09:30:10.840z")
        );
        assert_eq!(
            UnixMs::parse("2023-09-01T11:30:10.840+02"),
            UnixMs::parse("2023-09-01T09:30:10.840Z")
        );
    }

    #[test]
    fn sub_millisecond_digits_are_truncated_and_bad_forms_refused() {
        let t = UnixMs::parse("2023-09-01T09:30:10.840Z").unwrap();
        assert_eq!(UnixMs::parse("2023-09-01T09:30:10.840999999Z"), Some(t));
        assert_eq!(UnixMs::parse("2023-09-01T09:30:10.840687Z"), Some(t));
        assert_eq!(UnixMs::parse("2023-09-01T09:30:10.84Z"), Some(t));
        // Floored also before 1970.
        assert_eq!(UnixMs::parse("1969-12-31T23:59:59.9995Z"), Some(UnixMs(-1)));
        for bad in [
            "2023-09-01T09:30:10.Z",
            "2023-09-01T09:30:10.1234567890Z",
            "2023-09-01T09:30:10",
            "2023-09-01T09:30:10+000",
            "2023-09-01T09:30:10+00:0",
            "2023-09-01T09:30:10+24:00",
            "2023-02-30T09:30:10Z",
            "2023-09-01T25:30:10Z",
            "2023-09-01T09:30:10Zjunk",
            "２023-09-01T09:30:10Z",
        ] {
            assert_eq!(UnixMs::parse(bad), None, "{bad}");
        }
    }

    use proptest::prelude::*;

    proptest! {
        /// Any instant, written in any form a server may send, parses to the same
        /// millisecond, whose canonical text parses back to it.
        #[test]
        fn every_iso_form_of_an_instant_gives_the_same_ms(
            nanos in -2_208_988_800_000_000_000i128..4_102_444_800_000_000_000i128,
            offset_min in -840i32..=840,
            frac_digits in 0usize..=9,
            style in 0usize..5,
            lower in any::<bool>(),
        ) {
            // The instant truncated to what `frac_digits` can carry.
            let step = 10i128.pow(9 - u32::try_from(frac_digits).unwrap());
            let utc = OffsetDateTime::from_unix_timestamp_nanos(nanos.div_euclid(step) * step).unwrap();
            let offset_min = if style == 0 { 0 } else { offset_min };
            let offset = UtcOffset::from_whole_seconds(offset_min * 60).unwrap();
            let local = utc.to_offset(offset);
            let frac = if frac_digits == 0 {
                String::new()
            } else {
                let n = local.nanosecond() / 10u32.pow(9 - u32::try_from(frac_digits).unwrap());
                format!(".{n:0frac_digits$}")
            };
            let (sign, abs) = if offset_min < 0 { ('-', -offset_min) } else { ('+', offset_min) };
            let (oh, om) = (abs / 60, abs % 60);
            let zone = match style {
                0 => "Z".to_string(),
                1 => format!("{sign}{oh:02}:{om:02}"),
                2 => format!("{sign}{oh:02}{om:02}"),
                3 if om == 0 => format!("{sign}{oh:02}"),
                _ => format!("{sign}{oh:02}{om:02}"),
            };
            let t = if lower { 't' } else { 'T' };
            let zone = if lower { zone.to_lowercase() } else { zone };
            let text = format!(
                "{:04}-{:02}-{:02}{t}{:02}:{:02}:{:02}{frac}{zone}",
                local.year(), u8::from(local.month()), local.day(),
                local.hour(), local.minute(), local.second(),
            );
            let expected = UnixMs(i64::try_from(utc.unix_timestamp_nanos().div_euclid(1_000_000)).unwrap());
            prop_assert_eq!(UnixMs::parse(&text), Some(expected), "{}", text);
            prop_assert_eq!(UnixMs::parse(&expected.to_iso()), Some(expected));
        }
    }
}
