//! Parsing one page of either log endpoint, tolerantly.
//!
//! The array may be called `data` (current API) or `content` (older SDK builds); each
//! item is kept as the exact JSON text Miro sent, so that nothing (unknown fields
//! included) is lost and the Sentinel stream records can be rebuilt from it. The page
//! keeps the body it was read from and each item as a slice of it: one parse, no copy
//! per item.
//!
//! [`parse_page_reading`] also reads each item into its row in the same pass: the body is
//! walked by hand for the page's usual shape (one object with a `data` or `content` array
//! of objects, keys without escapes, no duplicate `data`/`content`/`cursor`), and each item
//! is parsed once, by the row reader, from where it starts (the store's hand-written item
//! scanner, serde_json for what it does not vouch for); the row's plain string cells are
//! ranges of the body, not copies. Any other body, valid or not,
//! goes to [`parse_page`]'s serde parse, so what is a page, what is refused and the
//! messages are the same either way (the property test `the_one_pass_reading_equals_parse_page`).

use std::ops::Range;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::store::transform::StoredRow;

/// One page of items and the cursor of the next page (`None` on the last page).
#[derive(Debug)]
pub struct Page {
    /// The whole body.
    text: String,
    /// Where each item's JSON text lies in `text`.
    items: Vec<Range<usize>>,
    /// Each item's row when the page was read with [`parse_page_reading`] and the item
    /// took the row reader's path (one per item, or empty: none read).
    rows: Vec<Option<StoredRow>>,
    pub next_cursor: Option<String>,
}

impl Page {
    /// Each item's JSON text, exactly as sent.
    pub fn items(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.items.iter().map(|r| &self.text[r.clone()])
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The rows read with the page, one per item (`None`: the item is to be read on its
    /// own), taken once: an empty vector if the page was read without rows.
    pub fn take_rows(&mut self) -> Vec<Option<StoredRow>> {
        std::mem::take(&mut self.rows)
    }

    /// Bytes the page holds on the heap: its body and the rows read with it (each row,
    /// its cells and their text), which take about as much again as the body.
    pub fn held_bytes(&self) -> usize {
        let rows: usize = self
            .rows
            .iter()
            .map(|row| {
                std::mem::size_of::<Option<StoredRow>>()
                    + row.as_ref().map_or(0, StoredRow::heap_bytes)
            })
            .sum();
        self.text.capacity() + self.items.capacity() * std::mem::size_of::<Range<usize>>() + rows
    }
}

/// A body that is not a page. Treated as transient: a proxy's HTML error page or a
/// truncated body usually heals on retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("the response is not JSON ({0}); it starts with {1:?}")]
    NotJson(String, String),
    #[error("the response is JSON but has neither a `data` nor a `content` array")]
    NoItems,
    #[error("item {0} of the page is not a JSON object")]
    ItemNotObject(usize),
}

#[derive(Deserialize)]
struct RawPage<'a> {
    #[serde(borrow)]
    data: Option<Vec<&'a RawValue>>,
    #[serde(borrow)]
    content: Option<Vec<&'a RawValue>>,
    cursor: Option<serde_json::Value>,
}

/// Parses a page body.
pub fn parse_page(body: Vec<u8>) -> Result<Page, PageError> {
    let not_json = |e: String, body: &[u8]| {
        let start = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        PageError::NotJson(e, start)
    };
    let text = String::from_utf8(body).map_err(|e| {
        let reason = e.utf8_error().to_string();
        not_json(reason, e.as_bytes())
    })?;
    let page: RawPage<'_> =
        serde_json::from_str(&text).map_err(|e| not_json(e.to_string(), text.as_bytes()))?;
    let raw_items = page.data.or(page.content).ok_or(PageError::NoItems)?;
    if let Some(i) = raw_items
        .iter()
        .position(|item| !item.get().starts_with('{'))
    {
        return Err(PageError::ItemNotObject(i));
    }
    let base = text.as_ptr().addr();
    let items = raw_items
        .iter()
        .map(|item| {
            let start = item.get().as_ptr().addr() - base;
            start..start + item.get().len()
        })
        .collect();
    let next_cursor = match page.cursor {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    Ok(Page {
        text,
        items,
        rows: Vec::new(),
        next_cursor,
    })
}

/// [`parse_page`], reading each item into its row in the same pass. `read` gets the text
/// from an item's `{` to the end of the body and returns the item's length and row, or
/// `None` (the item is then only delimited, its row left to the caller).
pub fn parse_page_reading(
    body: Vec<u8>,
    mut read: impl FnMut(&str) -> Option<(usize, StoredRow)>,
) -> Result<Page, PageError> {
    let text = match String::from_utf8(body) {
        Ok(text) => text,
        Err(e) => return parse_page(e.into_bytes()),
    };
    match read_usual_page(&text, &mut read) {
        Some((items, rows, next_cursor)) => Ok(Page {
            text,
            items,
            rows,
            next_cursor,
        }),
        None => parse_page(text.into_bytes()),
    }
}

/// JSON whitespace.
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b
        .get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
    {
        i += 1;
    }
    i
}

/// The length of the JSON value `T` that starts `rest`, and the value.
fn value_len<'a, T: Deserialize<'a>>(rest: &'a str) -> Option<(usize, T)> {
    let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<T>();
    let value = stream.next()?.ok()?;
    Some((stream.byte_offset(), value))
}

/// Each item's range in the body and its row, if read.
type Items = (Vec<Range<usize>>, Vec<Option<StoredRow>>);
type Read = (Vec<Range<usize>>, Vec<Option<StoredRow>>, Option<String>);

/// A page of the usual shape, read in one pass; `None` for anything else (the caller then
/// parses it as [`parse_page`] does).
fn read_usual_page(
    text: &str,
    read: &mut impl FnMut(&str) -> Option<(usize, StoredRow)>,
) -> Option<Read> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    let mut found: Option<Items> = None;
    let mut seen = [false; 3];
    let mut cursor: Option<serde_json::Value> = None;
    if b.get(i) == Some(&b'}') {
        return None;
    }
    loop {
        // A key without escapes or control characters.
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let len = text[i + 1..].find('"')?;
        let key = &text[i + 1..i + 1 + len];
        if key.bytes().any(|c| c == b'\\' || c < 0x20) {
            return None;
        }
        i = skip_ws(b, i + 2 + len);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let known = ["data", "content", "cursor"].iter().position(|k| *k == key);
        if let Some(k) = known
            && std::mem::replace(&mut seen[k], true)
        {
            return None;
        }
        match known {
            Some(0 | 1) => {
                if found.is_some() || b.get(i) != Some(&b'[') {
                    return None;
                }
                let (mut items, mut rows) = (Vec::new(), Vec::new());
                i = skip_ws(b, i + 1);
                if b.get(i) == Some(&b']') {
                    i += 1;
                } else {
                    loop {
                        if b.get(i) != Some(&b'{') {
                            return None;
                        }
                        let rest = &text[i..];
                        let (len, row) = match read(rest) {
                            Some((len, row)) => (len, Some(row)),
                            None => (value_len::<&RawValue>(rest)?.0, None),
                        };
                        items.push(i..i + len);
                        rows.push(row);
                        i = skip_ws(b, i + len);
                        match b.get(i) {
                            Some(b',') => i = skip_ws(b, i + 1),
                            Some(b']') => {
                                i += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
                found = Some((items, rows));
            }
            Some(_) => {
                let (len, value) = value_len::<serde_json::Value>(&text[i..])?;
                cursor = Some(value);
                i += len;
            }
            None => i += value_len::<IgnoredAny>(&text[i..])?.0,
        }
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => {
                i += 1;
                break;
            }
            _ => return None,
        }
    }
    if skip_ws(b, i) != b.len() {
        return None;
    }
    let (items, rows) = found?;
    let next_cursor = match cursor {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    Some((items, rows, next_cursor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &[u8]) -> Result<Page, PageError> {
        parse_page(body.to_vec())
    }

    #[test]
    fn reads_data_or_content_and_the_cursor() {
        let p = parse(br#"{"type":"cursor-list","limit":2,"size":2,"cursor":"abc","data":[{"id":"1"},{"id":"2","x":{"y":1}}]}"#).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p.items().nth(1).unwrap(), r#"{"id":"2","x":{"y":1}}"#);
        assert_eq!(p.next_cursor.as_deref(), Some("abc"));
        let p = parse(br#"{"content":[{"id":"1"}],"cursor":""}"#).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p.next_cursor, None);
        let p = parse(br#"{"data":[],"cursor":null}"#).unwrap();
        assert!(p.is_empty() && p.next_cursor.is_none());
    }

    /// [`parse_page_reading`] against [`parse_page`] on one body: the same items and
    /// cursor or the same error; every row read with the page is the item's stored row.
    fn assert_one_pass_equals_parse_page(body: &[u8]) {
        use crate::config::SourceKind;
        for source in SourceKind::ALL {
            let want = parse(body);
            let got = parse_page_reading(body.to_vec(), |rest| {
                crate::store::stored_row_prefix(source, rest)
            });
            let shown = String::from_utf8_lossy(body);
            match (want, got) {
                (Ok(want), Ok(mut got)) => {
                    assert!(got.items().eq(want.items()), "{shown}");
                    assert_eq!(got.next_cursor, want.next_cursor, "{shown}");
                    let rows = got.take_rows();
                    assert!(rows.is_empty() || rows.len() == got.len(), "{shown}");
                    for (row, item) in rows.into_iter().zip(got.items()) {
                        if let Some(row) = row {
                            assert_eq!(row, crate::store::stored_row(source, item), "{shown}");
                        }
                    }
                }
                (Err(want), Err(got)) => assert_eq!(got, want, "{shown}"),
                (want, got) => panic!("{shown}: {want:?} against {got:?}"),
            }
        }
    }

    /// A page read with its rows counts them in what it holds (the reader's group budget,
    /// `collect::reader::GROUP_MAX_BYTES`): each row at least its own size and its cells.
    #[test]
    fn held_bytes_count_the_rows_read_with_the_page() {
        use crate::config::SourceKind;
        let item = r#"{"id":"a1","createdAt":"2024-05-01T10:00:00Z","event":"sign_in","createdBy":{"id":"u1","email":"a@example.com"}}"#;
        let body = format!(r#"{{"data":[{item},{item},{item}],"cursor":"c"}}"#);
        let plain = parse(body.as_bytes()).unwrap();
        let read = parse_page_reading(body.clone().into_bytes(), |rest| {
            crate::store::stored_row_prefix(SourceKind::AuditLogs, rest)
        })
        .unwrap();
        assert!(plain.held_bytes() >= body.len());
        let row = std::mem::size_of::<StoredRow>()
            + crate::store::transform::AUDIT_COLUMNS.len()
                * std::mem::size_of::<crate::store::transform::Cell>();
        assert!(
            read.held_bytes() >= plain.held_bytes() + 3 * row,
            "{} against {}",
            read.held_bytes(),
            plain.held_bytes()
        );
    }

    /// The one-pass reading takes the usual page and leaves every other shape to the
    /// serde parse, with the same results.
    #[test]
    fn the_one_pass_reading_equals_parse_page() {
        let item = r#"{"id":"a1","createdAt":"2024-05-01T10:00:00Z","event":"sign_in","details":{"k":[1,2]}}"#;
        let bodies = [
            format!(
                r#"{{"type":"cursor-list","limit":2,"size":2,"cursor":"c2","data":[{item},{item}]}}"#
            ),
            format!(" \n{{ \"data\" : [ {item} , {item} ] , \"cursor\" : 17 }} \r\n"),
            format!(r#"{{"content":[{item}],"cursor":""}}"#),
            format!(r#"{{"data":[{item}],"content":[{item},5]}}"#),
            format!(r#"{{"data":[{item}],"data":[{item}]}}"#),
            format!(r#"{{"data":[{item}],"cursor":"a","cursor":"b"}}"#),
            format!(r#"{{"d\u0061ta":[{item}]}}"#),
            format!(r#"{{"data":null,"content":[{item}]}}"#),
            format!(r#"{{"data":[{item},]}}"#),
            format!(r#"{{"data":[{item}],}}"#),
            format!(r#"{{"data":[{item}]}} x"#),
            format!(r#"{{"data":[{item}]}}{{}}"#),
            format!(r#"{{"data":[{item} {item}]}}"#),
            format!(r#"{{"da\nta":[{item}]}}"#),
            format!("{{\"x{}\":1,\"data\":[{item}]}}", '\u{1}'),
            format!(r#"{{"data":[{item}, 5]}}"#),
            format!(r#"{{"data":[{{"id":"1","id":"2"}},{{"x":{{"y":[[[1]]]}}}},{item}]}}"#),
            format!(
                r#"{{"data":[{{"id":"1","details":{}1{}}}]}}"#,
                "[".repeat(300),
                "]".repeat(300)
            ),
            r#"{"data":[{"id":"1","event":"a\u0062"},{"id":2,"event":"bad\x"}]}"#.to_string(),
            format!(r#"{{"data":[{item}],"cursor":{{"a":1}},"more":[1,{{"b":"c"}}]}}"#),
            r#"{"data":[]}"#.to_string(),
            r#"{"data":[ ]}"#.to_string(),
            "{}".to_string(),
            r#"{"type":"error"}"#.to_string(),
            r#"{"data":[{"id":"1"},{"id":"#.to_string(),
        ];
        for body in &bodies {
            assert_one_pass_equals_parse_page(body.as_bytes());
        }
        assert_one_pass_equals_parse_page(b"{\"data\":[{\"id\":\"\xff\"}]}");
        // The usual page is read in one pass: a row for every item.
        let mut page = parse_page_reading(bodies[0].as_bytes().to_vec(), |rest| {
            crate::store::stored_row_prefix(crate::config::SourceKind::AuditLogs, rest)
        })
        .unwrap();
        let rows = page.take_rows();
        assert_eq!(rows.len(), 2);
        assert!(
            rows.iter()
                .all(|r| r.as_ref().is_some_and(|r| r.id == "a1"))
        );
    }

    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes (invalid UTF-8, NUL bytes, cut JSON) are a page or a typed
        /// error, never a panic; a page's items are always JSON objects.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(page) = parse(&bytes) {
                let all_objects = page.items().all(|i| i.starts_with('{'));
                prop_assert!(all_objects, "an item is not an object");
            }
            assert_one_pass_equals_parse_page(&bytes);
        }

        /// Pages built from arbitrary items: every object item kept verbatim, any
        /// non-object item refused, the cursor read whatever its JSON type.
        #[test]
        fn pages_of_arbitrary_items(
            items in proptest::collection::vec(prop_oneof![
                "[a-z0-9]{0,12}".prop_map(|s| format!(r#"{{"id":"{s}","n":{{"d":[1,2]}}}}"#)),
                Just("5".to_string()),
                Just("\"text\"".to_string()),
                Just("null".to_string()),
            ], 0..20),
            cursor in prop_oneof![Just("null".to_string()), Just("\"\"".to_string()), Just("\"c1\"".to_string()), Just("17".to_string()), Just("{}".to_string())],
            array in prop_oneof![Just("data"), Just("content")],
        ) {
            let body = format!(r#"{{"type":"cursor-list","cursor":{cursor},"{array}":[{}]}}"#, items.join(","));
            assert_one_pass_equals_parse_page(body.as_bytes());
            match parse(body.as_bytes()) {
                Ok(page) => {
                    let all_objects = items.iter().all(|i| i.starts_with('{'));
                    prop_assert!(all_objects, "a non-object item was accepted");
                    prop_assert_eq!(page.len(), items.len());
                    for (got, sent) in page.items().zip(&items) {
                        prop_assert_eq!(got, sent.as_str());
                    }
                    prop_assert_eq!(page.next_cursor.is_some(), cursor == "\"c1\"" || cursor == "17");
                }
                Err(PageError::ItemNotObject(i)) => {
                    let object = items[i].starts_with('{');
                    prop_assert!(!object, "an object item was refused");
                }
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }
    }

    /// serde_json's depth limit (128) does not apply to items kept as raw text: a page
    /// with an item nested far deeper is read whole, not failed for good.
    #[test]
    fn deeply_nested_items_do_not_fail_the_page() {
        for depth in [129, 1000, 200_000] {
            let deep = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            let item = format!(r#"{{"id":"a#1","details":{{"d":{deep}}}}}"#);
            let body =
                format!(r#"{{"type":"cursor-list","cursor":"c#2","data":[{{"id":"0"}},{item}]}}"#);
            let page = parse(body.as_bytes()).unwrap();
            assert_eq!(page.items().nth(1).unwrap(), item);
            assert_eq!(page.next_cursor.as_deref(), Some("c#2"));
        }
    }

    #[test]
    fn rejects_what_is_not_a_page() {
        assert!(matches!(
            parse(b"<html>oops</html>"),
            Err(PageError::NotJson(..))
        ));
        assert!(matches!(
            parse(br#"{"data":[{"id":"1"},{"id":"#),
            Err(PageError::NotJson(..))
        ));
        assert_eq!(
            parse(br#"{"type":"error"}"#).unwrap_err(),
            PageError::NoItems
        );
        assert_eq!(
            parse(br#"{"data":[{"id":"1"}, 5]}"#).unwrap_err(),
            PageError::ItemNotObject(1)
        );
    }
}
