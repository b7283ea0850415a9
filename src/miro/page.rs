//! Parsing one page of either log endpoint, tolerantly.
//!
//! The array may be called `data` (current API) or `content` (older SDK builds); each
//! item is kept as the exact JSON text Miro sent, so that nothing (unknown fields
//! included) is lost and the Sentinel stream records can be rebuilt from it. The page
//! keeps the body it was read from and each item as a slice of it: one parse, no copy
//! per item.

use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;

/// One page of items and the cursor of the next page (`None` on the last page).
#[derive(Debug)]
pub struct Page {
    /// The whole body.
    text: String,
    /// Where each item's JSON text lies in `text`.
    items: Vec<Range<usize>>,
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

    /// Bytes of the body the page holds.
    pub fn body_bytes(&self) -> usize {
        self.text.len()
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
        next_cursor,
    })
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
