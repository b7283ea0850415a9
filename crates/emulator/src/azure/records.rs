//! The records of an ingestion body, checked against the stream declaration: each must
//! be a JSON object whose members are all declared columns; a record whose `id` is in
//! the injected `reject_ids` refuses the batch.
//!
//! Two readings give the same verdicts: [`check`] with `keep` builds each record as a
//! JSON object (the DCR transformation needs it when the emulator keeps its rows or
//! their acknowledgement times); without it, each record is only scanned: its member
//! names are compared as they are read, `id` is the only value built, the other values
//! are skipped (still checked as JSON), so a benchmark of millions of records measures
//! the client, not the emulator's allocations.
//!
//! Invariant: the first refused record (in body order) decides the answer, and within a
//! record an undeclared column (the first in sorted order, as a JSON object lists its
//! keys) comes before a rejected id; a body that does not parse as a JSON array (as a
//! whole, nesting limit included) is refused as such, whatever its records hold.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::kql_tostring;

/// Why a batch is refused at one of its records (400 `InvalidPayload`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Record `index` is not a JSON object.
    NotObject { index: usize },
    /// Record `index` has a member the stream does not declare.
    Undeclared { index: usize, column: String },
    /// Record `index` has an `id` (KQL `tostring`) in `reject_ids`.
    Rejected { index: usize, id: String },
}

/// The body's records as checked.
#[derive(Debug, Default)]
pub(super) struct Checked {
    /// How many records the body holds.
    pub count: usize,
    /// The records, when asked to keep them and none was refused.
    pub kept: Vec<Map<String, Value>>,
    /// The first refused record, if any.
    pub refusal: Option<Refusal>,
}

/// The body is not a JSON array (of anything).
#[derive(Debug)]
pub(super) struct NotAnArray;

/// Checks the records of `body` (a JSON array) against the declared `columns` and
/// `reject_ids`, keeping them as objects when `keep`.
pub(super) fn check(
    body: &[u8],
    columns: &[&str],
    reject_ids: &[String],
    keep: bool,
) -> Result<Checked, NotAnArray> {
    let records: Vec<&RawValue> = serde_json::from_slice(body).map_err(|_| NotAnArray)?;
    let mut out = Checked {
        count: records.len(),
        ..Checked::default()
    };
    for (index, raw) in records.iter().enumerate() {
        let text = raw.get();
        if !builds(text) {
            return Err(NotAnArray);
        }
        if out.refusal.is_some() {
            // The rest is only read for the syntax: a body that does not parse is
            // refused as such, whatever its records hold.
            continue;
        }
        if !text.starts_with('{') {
            out.refusal = Some(Refusal::NotObject { index });
            continue;
        }
        let (undeclared, id) = if keep {
            let map: Map<String, Value> = serde_json::from_str(text).map_err(|_| NotAnArray)?;
            let undeclared = map.keys().find(|k| !columns.contains(&k.as_str())).cloned();
            let id = kql_tostring(map.get("id"));
            out.kept.push(map);
            (undeclared, id)
        } else {
            let scan = serde_json::Deserializer::from_str(text)
                .deserialize_map(Scan { columns })
                .map_err(|_| NotAnArray)?;
            (
                scan.undeclared.map(Cow::into_owned),
                kql_tostring(scan.id.as_ref()),
            )
        };
        if let Some(column) = undeclared {
            out.refusal = Some(Refusal::Undeclared { index, column });
        } else if reject_ids.contains(&id) {
            out.refusal = Some(Refusal::Rejected { index, id });
        }
    }
    if out.refusal.is_some() {
        out.kept.clear();
    }
    Ok(out)
}

/// Whether serde_json builds a record as a JSON tree inside the body's array: skipping a
/// value (a raw value, an ignored member) follows any nesting, building one stops at 128
/// levels, and Azure reads the body as a whole. Only a record with that many brackets
/// is built to find out.
fn builds(text: &str) -> bool {
    let brackets = text.bytes().filter(|b| matches!(b, b'[' | b'{')).count();
    brackets < 100 || serde_json::from_str::<Value>(&format!("[{text}]")).is_ok()
}

/// What a scan of one record found.
struct Scanned<'de> {
    /// The smallest undeclared member name.
    undeclared: Option<Cow<'de, str>>,
    /// The last `id` member's value (a repeated key: the last one counts, as in an object).
    id: Option<Value>,
}

/// Scans one JSON object without building it.
struct Scan<'c> {
    columns: &'c [&'c str],
}

impl<'de> Visitor<'de> for Scan<'_> {
    type Value = Scanned<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Scanned {
            undeclared: None,
            id: None,
        };
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if key == "id" {
                out.id = Some(map.next_value::<Value>()?);
                continue;
            }
            map.next_value::<IgnoredAny>()?;
            if !self.columns.contains(&key.as_ref())
                && out.undeclared.as_ref().is_none_or(|u| key < *u)
            {
                out.undeclared = Some(key);
            }
        }
        Ok(out)
    }
}

/// A member name, borrowed from the body unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::Stream;

    fn both(body: &str, reject: &[&str]) -> (Option<Refusal>, Option<Refusal>, usize) {
        let columns = Stream::AuditLogs.declared_columns();
        let reject: Vec<String> = reject.iter().map(|s| (*s).to_string()).collect();
        let kept = check(body.as_bytes(), columns, &reject, true).unwrap();
        let scanned = check(body.as_bytes(), columns, &reject, false).unwrap();
        assert_eq!(kept.count, scanned.count, "{body}");
        assert!(scanned.kept.is_empty());
        if kept.refusal.is_none() {
            assert_eq!(kept.kept.len(), kept.count);
        }
        (kept.refusal, scanned.refusal, kept.count)
    }

    /// Keeping or scanning, the same record is refused for the same reason, for
    /// hostile records: huge numbers, escaped and unicode names, nulls, repeated keys.
    #[test]
    fn scanning_and_keeping_refuse_the_same_record() {
        let cases: &[(&str, &[&str], Option<Refusal>)] = &[
            (r#"[]"#, &[], None),
            (
                r#"[{"id":"1","event":"e","details":{"x":[1,2.50,"\u00e9"]},"createdBy":null}]"#,
                &[],
                None,
            ),
            (
                r#"[{"id":30744573462359955121234567890,"event":"e"}]"#,
                &["30744573462359955121234567890"],
                Some(Refusal::Rejected {
                    index: 0,
                    id: "30744573462359955121234567890".into(),
                }),
            ),
            (
                r##"[{"id":"a"},{"id":"#b","zeta":1,"\u0061lpha":2}]"##,
                &["#b"],
                Some(Refusal::Undeclared {
                    index: 1,
                    column: "alpha".into(),
                }),
            ),
            (
                r##"[{"id":"#b"},{"id":"x","id":"#c"}]"##,
                &["#c"],
                Some(Refusal::Rejected {
                    index: 1,
                    id: "#c".into(),
                }),
            ),
            (
                r#"[{"id":"1"}, 7, {"évènement":1}]"#,
                &[],
                Some(Refusal::NotObject { index: 1 }),
            ),
            (
                r#"[{"id":null,"évènement":"é"}]"#,
                &[""],
                Some(Refusal::Undeclared {
                    index: 0,
                    column: "évènement".into(),
                }),
            ),
            (
                r#"[{"id":{"n":1.50e400}}]"#,
                // A dynamic value as compact JSON, numbers as serde_json writes them.
                &[r#"{"n":1.50e+400}"#],
                Some(Refusal::Rejected {
                    index: 0,
                    id: r#"{"n":1.50e+400}"#.into(),
                }),
            ),
            (r#"[[1],{}]"#, &[], Some(Refusal::NotObject { index: 0 })),
        ];
        for (body, reject, expected) in cases {
            let (kept, scanned, _) = both(body, reject);
            assert_eq!(&kept, expected, "{body}");
            assert_eq!(&scanned, expected, "{body}");
        }
    }

    /// The body parses or not as it did when it was built as one JSON tree, however
    /// deep its records are nested, and wherever the deep one stands.
    #[test]
    fn nesting_refuses_the_body_as_a_tree_would() {
        let columns = Stream::AuditLogs.declared_columns();
        for depth in [60, 120, 125, 126, 127, 128, 129, 200] {
            let deep = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            for body in [
                format!(r#"[{{"id":"1","details":{deep}}}]"#),
                format!(r#"[{{"zeta":1}},{{"id":"2","details":{deep}}}]"#),
                format!(r#"[7,{deep}]"#),
                format!(r#"[{{"id":{deep}}}]"#),
            ] {
                let tree = serde_json::from_str::<Value>(&body).is_ok();
                for keep in [true, false] {
                    assert_eq!(
                        check(body.as_bytes(), columns, &[], keep).is_ok(),
                        tree,
                        "depth {depth}, keep {keep}: {}",
                        &body[..20]
                    );
                }
            }
        }
    }

    #[test]
    fn a_body_that_is_not_an_array_of_json_is_refused_whole() {
        let columns = Stream::AuditLogs.declared_columns();
        for body in [
            r#"{"id":"1"}"#,
            r#"[{"id":"1"},{"bad":}]"#,
            r#"[{"zeta":1}, {"id":"1""#,
            r#"[{"id":"1"}] x"#,
            "",
        ] {
            for keep in [true, false] {
                assert!(
                    check(body.as_bytes(), columns, &[], keep).is_err(),
                    "{body} {keep}"
                );
            }
        }
    }
}
