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

/// Nesting (arrays and objects inside a member's value) beyond which the scanner gives up.
/// serde_json skips raw values at any depth; the fallback reads such items.
const MAX_DEPTH: u32 = 64;

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

    /// A string starting at the current `"`; returns its text without the quotes.
    fn string(&mut self) -> Option<&'a str> {
        let b = self.text.as_bytes();
        let start = self.i + 1;
        let mut i = start;
        loop {
            match *b.get(i)? {
                b'"' => break,
                b'\\' => {
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
        self.text.get(start..i)
    }

    /// An object key (with the `:` after it): a string without escapes.
    fn key(&mut self) -> Option<&'a str> {
        self.ws();
        if self.peek()? != b'"' {
            return None;
        }
        let key = self.string()?;
        if key.contains('\\') {
            return None;
        }
        self.eat(b':')?;
        Some(key)
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

    /// Skips one value (after whitespace), checking it.
    pub(super) fn skip(&mut self, depth: u32) -> Option<()> {
        self.ws();
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.members(|s, _| s.skip(depth + 1))
            }
            b'[' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.skip(depth + 1)?;
                    self.ws();
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            _ => self.number(),
        }
    }

    /// The members of the object that starts here (after whitespace): `member` is called
    /// with each key and must read its value.
    pub(super) fn members(
        &mut self,
        mut member: impl FnMut(&mut Self, &'a str) -> Option<()>,
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
    /// `Option<&RawValue>`); the outer `None`: not read.
    pub(super) fn raw(&mut self) -> Option<Option<&'a str>> {
        self.ws();
        let start = self.i;
        if self.peek()? == b'n' {
            return self.literal("null").map(|()| None);
        }
        self.skip(0)?;
        Some(Some(self.text.get(start..self.i)?))
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
                let s = self.string()?;
                (!s.contains('\\')).then_some(false)
            }
            _ => self.skip(0).map(|()| false),
        }
    }
}
