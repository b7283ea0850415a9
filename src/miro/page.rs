//! Parsing one page of either log endpoint, tolerantly.
//!
//! The array may be called `data` (current API) or `content` (older SDK builds); each
//! item is kept as the exact JSON text Miro sent, so that nothing (unknown fields
//! included) is lost and the Sentinel stream records can be rebuilt from it.

use serde::Deserialize;
use serde_json::value::RawValue;

/// One page of items and the cursor of the next page (`None` on the last page).
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Box<RawValue>>,
    pub next_cursor: Option<String>,
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
struct RawPage {
    data: Option<Vec<Box<RawValue>>>,
    content: Option<Vec<Box<RawValue>>>,
    cursor: Option<serde_json::Value>,
}

/// Parses a page body.
pub fn parse_page(body: &[u8]) -> Result<Page, PageError> {
    let page: RawPage = serde_json::from_slice(body).map_err(|e| {
        let start = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        PageError::NotJson(e.to_string(), start)
    })?;
    let items = page.data.or(page.content).ok_or(PageError::NoItems)?;
    if let Some(i) = items.iter().position(|item| !item.get().starts_with('{')) {
        return Err(PageError::ItemNotObject(i));
    }
    let next_cursor = match page.cursor {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    Ok(Page { items, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_data_or_content_and_the_cursor() {
        let p = parse_page(br#"{"type":"cursor-list","limit":2,"size":2,"cursor":"abc","data":[{"id":"1"},{"id":"2","x":{"y":1}}]}"#).unwrap();
        assert_eq!(p.items.len(), 2);
        assert_eq!(p.items[1].get(), r#"{"id":"2","x":{"y":1}}"#);
        assert_eq!(p.next_cursor.as_deref(), Some("abc"));
        let p = parse_page(br#"{"content":[{"id":"1"}],"cursor":""}"#).unwrap();
        assert_eq!(p.items.len(), 1);
        assert_eq!(p.next_cursor, None);
        let p = parse_page(br#"{"data":[],"cursor":null}"#).unwrap();
        assert!(p.items.is_empty() && p.next_cursor.is_none());
    }

    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes (invalid UTF-8, NUL bytes, cut JSON) are a page or a typed
        /// error, never a panic; a page's items are always JSON objects.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(page) = parse_page(&bytes) {
                let all_objects = page.items.iter().all(|i| i.get().starts_with('{'));
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
            match parse_page(body.as_bytes()) {
                Ok(page) => {
                    let all_objects = items.iter().all(|i| i.starts_with('{'));
                    prop_assert!(all_objects, "a non-object item was accepted");
                    prop_assert_eq!(page.items.len(), items.len());
                    for (got, sent) in page.items.iter().zip(&items) {
                        prop_assert_eq!(got.get(), sent.as_str());
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
            let page = parse_page(body.as_bytes()).unwrap();
            assert_eq!(page.items[1].get(), item);
            assert_eq!(page.next_cursor.as_deref(), Some("c#2"));
        }
    }

    #[test]
    fn rejects_what_is_not_a_page() {
        assert!(matches!(
            parse_page(b"<html>oops</html>"),
            Err(PageError::NotJson(..))
        ));
        assert!(matches!(
            parse_page(br#"{"data":[{"id":"1"},{"id":"#),
            Err(PageError::NotJson(..))
        ));
        assert_eq!(
            parse_page(br#"{"type":"error"}"#).unwrap_err(),
            PageError::NoItems
        );
        assert_eq!(
            parse_page(br#"{"data":[{"id":"1"}, 5]}"#).unwrap_err(),
            PageError::ItemNotObject(1)
        );
    }
}
