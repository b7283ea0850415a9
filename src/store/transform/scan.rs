//! A hand-written reader for the usual shape of an API item: a JSON object whose keys
//! hold no escapes, with a few nested objects. It walks the item's bytes once, gives each
//! wanted member's exact JSON text (as serde_json's `RawValue` would) and the item's end,
//! and skips every other value after checking it.
//!
//! Invariant: it accepts only what serde_json accepts, and reads it the same way. Whatever
//! it does not vouch for (an escape or a control character in a key, a duplicate wanted
//! key, a bad escape, a number or literal outside JSON's grammar, nesting deeper than
//! [`MAX_DEPTH`], a cut text) makes it give up (`None`), and the caller reads the item
//! with serde_json as before, which then decides (the property tests
//! `fast::tests::the_scanner_reads_as_serde_reads` and `..._on_mutated_items`). Strings
//! are checked as serde_json checks a value it skips: no control character, escapes
//! `\" \\ \/ \b \f \n \r \t \uXXXX` (a lone surrogate is decoded, or refused, later by
//! whoever reads the string); the text is a `&str`, so its UTF-8 is valid already.
//!
//! Keys are handed to the readers as their bytes taken as a number ([`Key`]), which the
//! readers compare with their wanted keys' numbers: equal numbers are equal keys, since a
//! key the scanner accepts holds no NUL byte and a wanted key has at most 15 bytes.

/// Nesting (arrays and objects inside a member's value) beyond which the scanner gives up.
/// serde_json skips raw values at any depth; the fallback reads such items.
pub(super) const MAX_DEPTH: u32 = 64;

/// An object key the scanner read (a string without escapes), as its bytes taken as a
/// number ([`key_word`]) when it has at most 15, `u128::MAX` otherwise. A key holds no NUL
/// byte (a control character, which the scanner refuses), so two keys of at most 15 bytes
/// are equal exactly when their words are: the readers match keys by word, and want none
/// longer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Key {
    pub(super) word: u128,
}

/// The word of a wanted key ([`Key::word`]): its bytes, little-endian, zero above them.
/// At most 15 bytes and no NUL (checked when the readers' constants are built).
pub(super) const fn key_word(key: &str) -> u128 {
    let b = key.as_bytes();
    assert!(b.len() <= 15, "a wanted key has at most 15 bytes");
    let mut word = 0u128;
    let mut i = 0;
    while i < b.len() {
        assert!(b[i] != 0, "a wanted key has no NUL byte");
        word |= (b[i] as u128) << (8 * i);
        i += 1;
    }
    word
}

/// [`Key::word`] of a key read by the general string scan.
fn word_of(key: &str) -> u128 {
    if key.len() > 15 {
        return u128::MAX;
    }
    key.bytes()
        .rev()
        .fold(0u128, |word, b| (word << 8) | u128::from(b))
}

/// A position in the text being read.
pub(super) struct Scan<'a> {
    text: &'a str,
    i: usize,
}

impl<'a> Scan<'a> {
    /// A scanner at the start of `text`.
    pub(super) fn new(text: &'a str) -> Scan<'a> {
        Scan { text, i: 0 }
    }

    /// Bytes read so far.
    pub(super) fn offset(&self) -> usize {
        self.i
    }

    /// Whether only JSON whitespace is left.
    pub(super) fn at_end(&mut self) -> bool {
        self.ws();
        self.i == self.text.len()
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.i).copied()
    }

    fn ws(&mut self) {
        let b = self.text.as_bytes();
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// A string starting at the current `"`: its text without the quotes, and whether it
    /// holds an escape.
    #[inline(always)]
    fn string(&mut self) -> Option<(&'a str, bool)> {
        let b = self.text.as_bytes();
        let start = self.i + 1;
        let mut i = start;
        let mut escaped = false;
        loop {
            i = next_special(b, i);
            match *b.get(i)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    i += 1;
                    match *b.get(i)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 1,
                        b'u' => {
                            let hex = b.get(i + 1..i + 5)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            i += 5;
                        }
                        _ => return None,
                    }
                }
                0..0x20 => return None,
                _ => i += 1,
            }
        }
        self.i = i + 1;
        Some((self.text.get(start..i)?, escaped))
    }

    /// An object key (with the `:` after it): a string without escapes.
    ///
    /// A key whose closing quote is in the sixteen bytes after its opening one (every
    /// key the readers want, and most others) is found with one look at those bytes,
    /// which also give its [`Key::word`]; any other key is read as any string is.
    fn key(&mut self) -> Option<Key> {
        self.ws();
        let b = self.text.as_bytes();
        if *b.get(self.i)? != b'"' {
            return None;
        }
        let start = self.i + 1;
        if let Some(chunk) = b.get(start..).and_then(<[u8]>::first_chunk::<16>)
            && let Some(len) = first_special(chunk)
            && chunk[len] == b'"'
        {
            let end = start + len;
            self.i = end + 1;
            self.eat(b':')?;
            // The key's bytes, the ones after it (the quote on) masked off: `len` < 16.
            let word = u128::from_le_bytes(*chunk) & ((1u128 << (8 * len)) - 1);
            return Some(Key { word });
        }
        let (key, escaped) = self.string()?;
        if escaped {
            return None;
        }
        self.eat(b':')?;
        Some(Key { word: word_of(key) })
    }

    fn digits(&mut self) -> Option<()> {
        let b = self.text.as_bytes();
        let start = self.i;
        while b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        (self.i > start).then_some(())
    }

    /// A number in JSON's grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => {
                self.i += 1;
                if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    return None;
                }
            }
            b'1'..=b'9' => self.digits()?,
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.digits()?;
        }
        Some(())
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let end = self.i + word.len();
        (self.text.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// Skips one value (after whitespace), checking it; whether a string in it holds an
    /// escape (a key with one is not read).
    pub(super) fn skip(&mut self, depth: u32) -> Option<bool> {
        self.ws();
        match self.peek()? {
            b'"' => self.string().map(|(_, escaped)| escaped),
            b'{' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                let mut escaped = false;
                self.members(|s, _| {
                    escaped |= s.skip(depth + 1)?;
                    Some(())
                })?;
                Some(escaped)
            }
            b'[' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(false);
                }
                let mut escaped = false;
                loop {
                    escaped |= self.skip(depth + 1)?;
                    self.ws();
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(escaped);
                        }
                        _ => return None,
                    }
                }
            }
            b't' => self.literal("true").map(|()| false),
            b'f' => self.literal("false").map(|()| false),
            b'n' => self.literal("null").map(|()| false),
            _ => self.number().map(|()| false),
        }
    }

    /// The members of the object that starts here (after whitespace): `member` is called
    /// with each key and must read its value.
    pub(super) fn members(
        &mut self,
        mut member: impl FnMut(&mut Self, Key) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let key = self.key()?;
            member(self, key)?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A member's value as its exact JSON text, `None` for `null` (what serde gives an
    /// `Option<&RawValue>`), and whether it is a string without escapes, and whether it
    /// holds no escape at all (then no backslash: keys with one are not read; and it
    /// nests less than [`MAX_DEPTH`] deep); the outer `None`: not read.
    pub(super) fn raw(&mut self) -> Option<Option<(&'a str, bool, bool)>> {
        self.ws();
        let start = self.i;
        let (plain, escaped) = match self.peek()? {
            b'n' => return self.literal("null").map(|()| None),
            b'"' => {
                let escaped = self.string()?.1;
                (!escaped, escaped)
            }
            _ => (false, self.skip(0)?),
        };
        Some(Some((self.text.get(start..self.i)?, plain, !escaped)))
    }

    /// What the value is, for a member read as a nested object: `Some(true)` an object
    /// (to be read with [`Scan::members`]), `Some(false)` anything else, which was
    /// skipped (it has no fields: `null`, a number, an array, a string without escapes);
    /// `None`: not read (a string with an escape, which serde_json would decode).
    pub(super) fn object_or_skip(&mut self) -> Option<bool> {
        self.ws();
        match self.peek()? {
            b'{' => Some(true),
            b'"' => {
                let (_, escaped) = self.string()?;
                (!escaped).then_some(false)
            }
            _ => self.skip(0).map(|_| false),
        }
    }
}

/// The index of the first quote, backslash or control character in `b` from `i` on
/// (`b.len()` if none): sixteen bytes at a time where SSE2 is there (every x86-64),
/// then eight.
fn next_special(b: &[u8], mut i: usize) -> usize {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    while let Some(chunk) = b.get(i..).and_then(<[u8]>::first_chunk::<16>) {
        // SAFETY: the build enables SSE2 (`target_feature = "sse2"`, part of x86-64's
        // baseline), the only requirement of calling `special_mask`.
        let found = unsafe { special_mask(chunk) };
        if found != 0 {
            return i + found.trailing_zeros() as usize;
        }
        i += 16;
    }
    while let Some(chunk) = b.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let found = special_bytes(u64::from_le_bytes(*chunk));
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while b
        .get(i)
        .is_some_and(|&c| c != b'"' && c != b'\\' && c >= 0x20)
    {
        i += 1;
    }
    i
}

/// The index of the first quote, backslash or control character in `chunk`, if any.
#[inline(always)]
fn first_special(chunk: &[u8; 16]) -> Option<usize> {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        // SAFETY: as in `next_special`: the build enables SSE2.
        let found = unsafe { special_mask(chunk) };
        (found != 0).then(|| found.trailing_zeros() as usize)
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    {
        let (lo, hi) = chunk.split_at(8);
        let word = |w: &[u8]| u64::from_le_bytes(w.try_into().expect("eight bytes of sixteen"));
        match (special_bytes(word(lo)), special_bytes(word(hi))) {
            (0, 0) => None,
            (0, found) => Some(8 + (found.trailing_zeros() / 8) as usize),
            (found, _) => Some((found.trailing_zeros() / 8) as usize),
        }
    }
}

/// Bit `k` set for each byte `k` of `chunk` that is a quote, a backslash or a control
/// character.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
fn special_mask(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set_epi64x,
        _mm_set1_epi8,
    };
    let (lo, hi) = chunk.split_at(8);
    let word = |w: &[u8]| i64::from_le_bytes(w.try_into().expect("eight bytes of sixteen"));
    let x = _mm_set_epi64x(word(hi), word(lo));
    let quote = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'"'.cast_signed()));
    let backslash = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'\\'.cast_signed()));
    // A control character: the unsigned maximum of it and 0x1f is 0x1f.
    let control = _mm_cmpeq_epi8(_mm_max_epu8(x, _mm_set1_epi8(0x1f)), _mm_set1_epi8(0x1f));
    _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)).cast_unsigned()
}

/// The high bit of each byte of `word` (little-endian: the first byte lowest) that is a
/// quote, a backslash or a control character, and maybe of bytes after the first such
/// one: its lowest set bit is exact (the usual word-at-a-time zero-byte test).
fn special_bytes(word: u64) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let zero = |w: u64| w.wrapping_sub(ONES) & !w;
    (zero(quote) | zero(backslash) | (word.wrapping_sub(ONES * 0x20) & !word)) & HIGH
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time test finds the first special byte wherever it is, and none
    /// in a word without one.
    #[test]
    fn special_bytes_finds_the_first_quote_backslash_or_control() {
        for special in [b'"', b'\\', 0, 0x1f, b'\n'] {
            for at in 0..8 {
                for filler in [b'a', 0x7f, 0x80, 0xff, 0x20, b'!', b'#', b'[', b']'] {
                    let mut bytes = [filler; 8];
                    bytes[at] = special;
                    if at < 7 {
                        bytes[at + 1] = special.wrapping_add(1);
                    }
                    let found = special_bytes(u64::from_le_bytes(bytes));
                    assert_eq!(found.trailing_zeros() as usize / 8, at, "{bytes:?}");
                }
            }
        }
        // The same through `next_special`, at every offset of a longer text.
        for special in [b'"', b'\\', 0, 0x1f, b'\n'] {
            for len in 0..40 {
                for at in 0..=len {
                    for filler in [b'a', 0x7f, 0x80, 0xff, 0x20, b'!', b'#', b']'] {
                        let mut bytes = vec![filler; len];
                        if at < len {
                            bytes[at] = special;
                        }
                        for from in 0..=at.min(len) {
                            assert_eq!(next_special(&bytes, from), at, "{bytes:?} from {from}");
                        }
                    }
                }
            }
        }
        for filler in 0x20..=0xffu8 {
            if filler != b'"' && filler != b'\\' {
                assert_eq!(
                    special_bytes(u64::from_le_bytes([filler; 8])),
                    0,
                    "{filler}"
                );
            }
        }
    }
}
