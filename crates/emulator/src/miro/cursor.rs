//! Opaque page cursors in Miro's shape, `<time>#<payload>-DDB` (like its audit ids, so a
//! client must URL-encode the `#`): the payload is hex of (version, stream, query
//! fingerprint, next position, check).
//!
//! A cursor only decodes with the seed that made it, and only fits the query whose
//! fingerprint it carries; anything else is a bad cursor (400). A cursor sent raw in a
//! URL loses everything from `#` on (a fragment is not sent), so it is a bad cursor too.

use super::hash::hash;
use super::org::Stream;

const VERSION: u8 = 1;
const LEN: usize = 1 + 1 + 8 + 8 + 4;
/// The low 48 bits of the position field are the position; the high 16 bits a nonce, so
/// that two cursors of one position can differ (the empty-page fault).
const POSITION_MASK: u64 = (1 << 48) - 1;

fn stream_byte(stream: Stream) -> u8 {
    match stream {
        Stream::Audit => b'a',
        Stream::Content => b'c',
        Stream::Ai => b'i',
    }
}

fn check(seed: u64, payload: &[u8]) -> u32 {
    let words: Vec<u64> = payload.iter().map(|&b| u64::from(b)).collect();
    (hash(&[seed, hash(&words)]) >> 32) as u32
}

/// Encodes where the next page of a query starts.
pub(super) fn encode(seed: u64, stream: Stream, fingerprint: u64, position: u64) -> String {
    let mut bytes = Vec::with_capacity(LEN);
    bytes.push(VERSION);
    bytes.push(stream_byte(stream));
    bytes.extend_from_slice(&fingerprint.to_be_bytes());
    bytes.extend_from_slice(&position.to_be_bytes());
    let c = check(seed, &bytes);
    bytes.extend_from_slice(&c.to_be_bytes());
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let stamp = crate::time::UnixMs(
        1_600_000_000_000 + i64::try_from(position % 100_000_000_000).expect("below 10^11"),
    );
    let stamp = stamp.to_iso();
    format!("{}{:03}Z#{hex}-DDB", &stamp[..stamp.len() - 1], c % 1000)
}

/// Decodes a cursor of `stream` into `(fingerprint, position)`; `None` if it is not one of ours.
pub(super) fn decode(seed: u64, stream: Stream, text: &str) -> Option<(u64, u64)> {
    let text = text.split_once('#')?.1.strip_suffix("-DDB")?;
    if text.len() != LEN * 2 || !text.is_ascii() {
        return None;
    }
    let bytes: Vec<u8> = (0..LEN)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
        .collect::<Option<_>>()?;
    if bytes[0] != VERSION || bytes[1] != stream_byte(stream) {
        return None;
    }
    let c = u32::from_be_bytes(bytes[18..22].try_into().ok()?);
    if c != check(seed, &bytes[..18]) {
        return None;
    }
    let fingerprint = u64::from_be_bytes(bytes[2..10].try_into().ok()?);
    let position = u64::from_be_bytes(bytes[10..18].try_into().ok()?) & POSITION_MASK;
    Some((fingerprint, position))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_foreign_or_damaged_cursors() {
        let c = encode(5, Stream::Audit, 0xDEAD_BEEF, 12_345);
        assert_eq!(decode(5, Stream::Audit, &c), Some((0xDEAD_BEEF, 12_345)));
        assert_eq!(decode(6, Stream::Audit, &c), None, "other seed");
        assert_eq!(decode(5, Stream::Content, &c), None, "other stream");
        assert!(c.contains('#') && c.ends_with("-DDB"), "{c}");
        let raw_in_url = c.split('#').next().unwrap();
        assert_eq!(decode(5, Stream::Audit, raw_in_url), None, "cut at the #");
        let mut damaged = c.clone().into_bytes();
        let at = c.find('#').unwrap() + 30;
        damaged[at] = if damaged[at] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            decode(5, Stream::Audit, std::str::from_utf8(&damaged).unwrap()),
            None
        );
        assert_eq!(decode(5, Stream::Audit, "abc"), None);
        assert_eq!(decode(5, Stream::Audit, &"zz".repeat(LEN)), None);
        assert_eq!(decode(5, Stream::Audit, ""), None);
    }
}
