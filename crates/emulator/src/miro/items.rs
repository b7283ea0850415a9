//! The served shapes of audit events, content log items and AI interaction log entries:
//! borrowed structs that `serde_json` writes straight into the page body, so serving an
//! item allocates only its few computed texts (ids, times) and builds no JSON tree.
//!
//! Invariant: an item's bytes are those of the same item as a `serde_json::Value`, whose
//! objects write their keys in sorted (byte) order. So every struct here declares its
//! fields in the byte order of their JSON names, an absent optional field is skipped,
//! and the free-form objects (`details`) are [`Fields`], which sorts its keys itself.
//! The pool's objects (a user as `createdBy` or `actor`, a board or team as `object`,
//! the organization) are written once by serde_json from these structs when the org is
//! built and copied in as `RawValue`s.
//! `org/oracle.rs` keeps the `Value` construction for the tests, which compare whole
//! served pages with it byte for byte (`tests.rs`,
//! `served_pages_match_the_value_oracle_byte_for_byte`).

use std::borrow::Cow;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// An object with an id, a name and a type (`context.organization`, `context.team`).
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Typed<'a> {
    pub id: &'a str,
    pub name: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
}

/// An audit event's `object`: an id and a name.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Named<'a> {
    pub id: &'a str,
    pub name: &'a str,
}

/// An audit event's `createdBy`: a user of the pool, written once (`org.rs`,
/// `Fragments`), or an application, SCIM or automation principal.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(super) enum CreatedBy<'a> {
    Pool(&'a RawValue),
    Other(Principal<'a>),
}

/// An audit event's `createdBy`; only a user has an email.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Principal<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<&'a str>,
    pub id: Cow<'a, str>,
    pub name: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
}

/// An actor of content and AI interaction logs: email, id and name.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Person<'a> {
    pub email: &'a str,
    pub id: &'a str,
    pub name: &'a str,
}

/// A value of a [`Fields`] object.
#[derive(Debug, Clone, Copy)]
pub(super) enum Scalar<'a> {
    Str(&'a str),
    U64(u64),
    Bool(bool),
    StrList(&'a [&'a str]),
}

impl Serialize for Scalar<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Scalar::Str(v) => s.serialize_str(v),
            Scalar::U64(v) => s.serialize_u64(v),
            Scalar::Bool(v) => s.serialize_bool(v),
            Scalar::StrList(v) => s.collect_seq(v),
        }
    }
}

/// Most keys a [`Fields`] object holds.
const MAX_FIELDS: usize = 3;

/// A small free-form object (`details`), written with its keys sorted; or the hostile
/// value that replaces it under the `hostile_item_share` fault.
#[derive(Debug, Clone, Copy)]
pub(super) enum Fields<'a> {
    Object {
        pairs: [(&'static str, Scalar<'a>); MAX_FIELDS],
        len: usize,
    },
    Hostile(&'static Value),
}

impl<'a> Fields<'a> {
    /// An object of `pairs` (distinct keys, at most [`MAX_FIELDS`], in any order).
    pub(super) fn of(pairs: &[(&'static str, Scalar<'a>)]) -> Self {
        assert!(pairs.len() <= MAX_FIELDS, "at most {MAX_FIELDS} fields");
        let mut sorted = [("", Scalar::Bool(false)); MAX_FIELDS];
        sorted[..pairs.len()].copy_from_slice(pairs);
        sorted[..pairs.len()].sort_unstable_by_key(|(k, _)| *k);
        Fields::Object {
            pairs: sorted,
            len: pairs.len(),
        }
    }
}

impl Serialize for Fields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Fields::Object { pairs, len } => {
                let mut map = s.serialize_map(Some(*len))?;
                for (k, v) in &pairs[..*len] {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Fields::Hostile(v) => v.serialize(s),
        }
    }
}

/// An audit event as served (`docs/miro-api.md`).
#[derive(Debug, Clone, Serialize)]
pub(super) struct AuditEvent<'a> {
    pub category: &'a str,
    pub context: AuditContext<'a>,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    #[serde(rename = "createdBy", skip_serializing_if = "Option::is_none")]
    pub created_by: Option<CreatedBy<'a>>,
    pub details: Fields<'a>,
    pub event: &'a str,
    pub id: String,
    /// A [`Named`] of the pool, written once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<&'a RawValue>,
    #[serde(rename = "type")]
    pub kind: &'a str,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct AuditContext<'a> {
    pub ip: Cow<'a, str>,
    /// [`Typed`] objects of the pool, written once.
    pub organization: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<&'a RawValue>,
}

/// A content log item as served.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ContentItem<'a> {
    #[serde(rename = "actionTime")]
    pub action_time: String,
    #[serde(rename = "actionType")]
    pub action_type: &'a str,
    /// A [`Person`] of the pool, written once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<&'a RawValue>,
    #[serde(rename = "contentId")]
    pub content_id: &'a str,
    pub id: String,
    #[serde(rename = "itemId")]
    pub item_id: String,
    #[serde(rename = "itemType")]
    pub item_type: &'a str,
    /// Written as a list of zero or one.
    #[serde(serialize_with = "zero_or_one")]
    pub relationships: Option<Relationship<'a>>,
    pub state: State<'a>,
}

fn zero_or_one<S: Serializer>(r: &Option<Relationship<'_>>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(r.iter())
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct Relationship<'a> {
    #[serde(rename = "itemId")]
    pub item_id: String,
    #[serde(rename = "itemType")]
    pub item_type: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
}

/// A content item's `state`: `null` for a deletion, else the item's shape.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(super) enum State<'a> {
    Null(()),
    Widget {
        data: WidgetData,
        geometry: Geometry,
        position: Position,
        style: Style<'a>,
        #[serde(rename = "type")]
        kind: &'a str,
    },
    Thread {
        position: Position,
        resolved: bool,
    },
    Message {
        content: &'a str,
        #[serde(rename = "threadId")]
        thread_id: String,
    },
    Hostile(&'static Value),
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct WidgetData {
    pub content: String,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Geometry {
    pub height: u64,
    pub width: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Position {
    pub origin: &'static str,
    pub x: f64,
    pub y: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Style<'a> {
    #[serde(rename = "fillColor")]
    pub fill_color: &'a str,
}

/// An AI interaction log entry as served.
#[derive(Debug, Clone, Serialize)]
pub(super) struct AiEntry<'a> {
    /// A [`Person`] of the pool, written once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<&'a RawValue>,
    #[serde(rename = "aiFeatureName")]
    pub ai_feature_name: &'a str,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    pub details: Fields<'a>,
    pub id: String,
    #[serde(rename = "logType")]
    pub log_type: &'a str,
    #[serde(rename = "messageId")]
    pub message_id: String,
    /// An [`AiObject`] of the pool, written once.
    pub object: &'a RawValue,
    #[serde(rename = "sessionId")]
    pub session_id: String,
    #[serde(rename = "storedAt")]
    pub stored_at: String,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct AiObject<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
}

/// One item of any stream, as served.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(super) enum Item<'a> {
    Audit(AuditEvent<'a>),
    Content(ContentItem<'a>),
    Ai(AiEntry<'a>),
}

impl Item<'_> {
    /// The item as a `serde_json::Value` (for the library API and tests).
    pub(super) fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("an item serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_write_their_keys_sorted_whatever_the_order_given() {
        let f = Fields::of(&[
            ("userAgent", Scalar::Str("x")),
            ("authType", Scalar::Str("SSO")),
            ("n", Scalar::U64(3)),
        ]);
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"authType":"SSO","n":3,"userAgent":"x"}"#
        );
        assert_eq!(serde_json::to_string(&Fields::of(&[])).unwrap(), "{}");
        let list = Fields::of(&[
            ("domains", Scalar::StrList(&["a\"b"])),
            ("on", Scalar::Bool(false)),
        ]);
        assert_eq!(
            serde_json::to_string(&list).unwrap(),
            r#"{"domains":["a\"b"],"on":false}"#
        );
    }
}
