//! A stored row as an Elasticsearch document in ECS field names (`docs/elasticsearch.md`,
//! "Documents"). Pure.
//!
//! Invariants: the Miro item is embedded under `miro` exactly as stored (its text, so
//! numbers beyond 2^64 keep every digit); the ECS fields are only ever copies of item
//! fields, never a replacement for them; an ECS categorisation is set only where an ECS
//! allowed value fits (a Miro category or event name the mapping does not know gets none).

use std::borrow::Cow;

use serde_json::{Map, Value, json};

use crate::sink::line::json_string;
use crate::source::SourceKind;
use crate::store::OutboxRow;
use crate::timefmt::UnixMs;

/// The ECS version the documents follow.
pub(super) const ECS_VERSION: &str = "8.11.0";

/// `event.dataset` of each stream.
pub(super) fn dataset(source: SourceKind) -> &'static str {
    match source {
        SourceKind::AuditLogs => "miro.audit",
        SourceKind::ContentLogs => "miro.content",
        SourceKind::AiInteractionLogs => "miro.ai",
    }
}

/// ECS `event.category`, `event.type` and `event.outcome` of an audit event, from its
/// Miro `event` and `category`; `None` where no ECS allowed value fits.
pub(super) fn audit_categorisation(
    event: &str,
    category: &str,
) -> Option<(&'static str, &'static str, Option<&'static str>)> {
    match (event, category) {
        ("sign_in_succeeded", _) => Some(("authentication", "start", Some("success"))),
        ("sign_in_failed", _) => Some(("authentication", "start", Some("failure"))),
        ("sign_out_succeeded", _) => Some(("authentication", "end", Some("success"))),
        (_, "authentication") => Some(("authentication", "info", None)),
        (_, "users") => Some(("iam", "user", None)),
        (_, "teams") => Some(("iam", "group", None)),
        (_, "administration" | "security" | "organization") => {
            Some(("configuration", "change", None))
        }
        _ => None,
    }
}

fn text<'a>(item: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut v = item;
    for p in path {
        v = v.get(p)?;
    }
    v.as_str().filter(|s| !s.is_empty())
}

/// The document (JSON text) of `row` of `source`.
pub fn document(source: SourceKind, row: &OutboxRow) -> String {
    match fast::Read::item(source, &row.raw) {
        Some(read) => {
            let mut out = String::with_capacity(row.raw.len() + 512);
            read.write_document(source, row, &mut out);
            out
        }
        None => general(source, row),
    }
}

/// Appends `row`'s `create` action (to `target`) and its document, as two NDJSON lines,
/// to `out`. The `_id` is the item's `id` when that is a JSON string (even an empty one,
/// as every earlier version sent it), else one made from the row's `_seq` (an item
/// without an id is never stored by the collector, but may be in an old store).
pub(super) fn write_action(
    target: &str,
    source: SourceKind,
    row: &OutboxRow,
    org: Option<&str>,
    out: &mut String,
) {
    let read = fast::Read::item(source, &row.raw);
    let id = match &read {
        Some(r) => r.id.clone(),
        None => serde_json::from_str::<Value>(&row.raw)
            .ok()
            .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string))
            .map(Cow::Owned),
    };
    // An item without an id (never stored by the collector) gets one from its row.
    let id = id.unwrap_or_else(|| Cow::Owned(format!("mirotrail-seq-{}", row.seq)));
    out.push_str("{\"create\":{\"_id\":");
    match org {
        Some(org) => json_string(&format!("{org}:{id}"), out),
        None => json_string(&id, out),
    }
    out.push_str(",\"_index\":");
    json_string(target, out);
    out.push_str("}}\n");
    match read {
        Some(r) => r.write_document(source, row, out),
        None => out.push_str(&general(source, row)),
    }
    out.push('\n');
}

/// The document by way of a `serde_json::Value` of the item and the table row: the
/// reading of the items `fast` does not take, and the reference it is tested against.
fn general(source: SourceKind, row: &OutboxRow) -> String {
    let item: Value = serde_json::from_str(&row.raw).unwrap_or(Value::Null);
    let mut doc = Map::new();
    // The event time: `createdAt` / `actionTime` (column 2), else `TimeGenerated`.
    let cells = row.cells(source);
    if let Some(t) = [2, 0]
        .iter()
        .filter_map(|&i| cells.get(i).cloned().flatten())
        .find_map(|t| UnixMs::parse(&t))
    {
        doc.insert("@timestamp".into(), t.to_iso().into());
    }
    let mut event = Map::new();
    event.insert("kind".into(), "event".into());
    event.insert("module".into(), "miro".into());
    event.insert("dataset".into(), dataset(source).into());
    if let Some(id) = text(&item, &["id"]) {
        event.insert("id".into(), id.into());
    }
    let (action, user) = match source {
        SourceKind::AuditLogs => {
            let action = text(&item, &["event"]);
            if let Some((category, kind, outcome)) = audit_categorisation(
                action.unwrap_or_default(),
                text(&item, &["category"]).unwrap_or_default(),
            ) {
                event.insert("category".into(), json!([category]));
                event.insert("type".into(), json!([kind]));
                if let Some(o) = outcome {
                    event.insert("outcome".into(), o.into());
                }
            }
            (action, "createdBy")
        }
        SourceKind::ContentLogs => (text(&item, &["actionType"]), "actor"),
        SourceKind::AiInteractionLogs => (
            text(&item, &["aiFeatureName"]).or_else(|| text(&item, &["logType"])),
            "actor",
        ),
    };
    if let Some(a) = action {
        event.insert("action".into(), a.into());
    }
    doc.insert("event".into(), Value::Object(event));
    let mut u = Map::new();
    let mut related_users = Vec::new();
    for (ecs, miro) in [("id", "id"), ("email", "email"), ("name", "name")] {
        if let Some(v) = text(&item, &[user, miro]) {
            u.insert(ecs.into(), v.into());
            if !related_users.contains(&v) {
                related_users.push(v);
            }
        }
    }
    if !u.is_empty() {
        doc.insert("user".into(), Value::Object(u));
    }
    let mut related = Map::new();
    if !related_users.is_empty() {
        related.insert("user".into(), json!(related_users));
    }
    if let Some(ip) =
        text(&item, &["context", "ip"]).filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
    {
        doc.insert("source".into(), json!({ "ip": ip }));
        related.insert("ip".into(), json!([ip]));
    }
    if !related.is_empty() {
        doc.insert("related".into(), Value::Object(related));
    }
    // ECS `organization.id`: the Miro organisation the row came from (`[[orgs]]`).
    if let Some(id) = &row.org_id {
        doc.insert("organization".into(), json!({ "id": id }));
    }
    doc.insert("ecs".into(), json!({ "version": ECS_VERSION }));
    let mut text = Value::Object(doc).to_string();
    // Append `"miro": <item>` without re-encoding it; an item that is not a JSON object
    // (never stored by the collector, but possible in an old store) is kept as text.
    text.pop();
    text.push_str(",\"miro\":");
    if item.is_object() {
        text.push_str(row.raw.trim());
    } else {
        text.push_str(&json!({ "unparsed": row.raw }).to_string());
    }
    text.push('}');
    text
}

/// The document written from one borrowed reading of the item, without a `Value` tree
/// or the table row: the same text as [`general`] (tested on hostile items), for every
/// item it takes. It takes only an item that is a JSON object which `serde_json::Value`
/// would read the same way: no duplicate keys among the members it reads (else
/// `general`, where the last one wins), no escape that may be a lone surrogate, and no
/// nesting `Value` might refuse (judged by counting every `{` and `[`).
mod fast {
    use std::borrow::Cow;

    use serde::Deserialize;
    use serde_json::value::RawValue;

    use super::{ECS_VERSION, audit_categorisation, dataset};
    use crate::sink::line::json_string;
    use crate::source::SourceKind;
    use crate::store::OutboxRow;
    use crate::store::transform::fast::Obj;
    use crate::timefmt::UnixMs;

    /// Items with more opening brackets than this go to the general path (serde_json
    /// refuses nesting beyond 128 levels when it builds a `Value`).
    const MAX_BRACKETS: usize = 100;

    type Raw<'a> = Option<&'a RawValue>;

    #[derive(Deserialize)]
    struct Item<'a> {
        #[serde(borrow)]
        id: Raw<'a>,
        #[serde(borrow)]
        event: Raw<'a>,
        #[serde(borrow)]
        category: Raw<'a>,
        #[serde(borrow, rename = "createdAt")]
        created_at: Raw<'a>,
        #[serde(borrow, rename = "actionTime")]
        action_time: Raw<'a>,
        #[serde(borrow, rename = "actionType")]
        action_type: Raw<'a>,
        #[serde(borrow, rename = "aiFeatureName")]
        ai_feature_name: Raw<'a>,
        #[serde(borrow, rename = "logType")]
        log_type: Raw<'a>,
        #[serde(borrow, default, rename = "createdBy")]
        created_by: Obj<User<'a>>,
        #[serde(borrow, default)]
        actor: Obj<User<'a>>,
        #[serde(borrow, default)]
        context: Obj<Context<'a>>,
    }

    #[derive(Deserialize, Default)]
    struct User<'a> {
        #[serde(borrow)]
        id: Raw<'a>,
        #[serde(borrow)]
        email: Raw<'a>,
        #[serde(borrow)]
        name: Raw<'a>,
    }

    #[derive(Deserialize, Default)]
    struct Context<'a> {
        #[serde(borrow)]
        ip: Raw<'a>,
    }

    /// A member that is a JSON string: its text (`Value::as_str`).
    fn string(raw: Raw<'_>) -> Option<Cow<'_, str>> {
        let t = raw?.get();
        let inner = t.strip_prefix('"')?.strip_suffix('"')?;
        if inner.contains('\\') {
            serde_json::from_str::<Cow<'_, str>>(t).ok()
        } else {
            Some(Cow::Borrowed(inner))
        }
    }

    /// A member that is a non-empty JSON string (`super::text`).
    fn text(raw: Raw<'_>) -> Option<Cow<'_, str>> {
        string(raw).filter(|s| !s.is_empty())
    }

    /// What the document needs of an item, read once.
    pub(super) struct Read<'a> {
        /// The item's `id` when it is a JSON string.
        pub(super) id: Option<Cow<'a, str>>,
        event_id: Option<Cow<'a, str>>,
        time: Option<Cow<'a, str>>,
        action: Option<Cow<'a, str>>,
        category: Option<Cow<'a, str>>,
        user: [Option<Cow<'a, str>>; 3],
        ip: Option<Cow<'a, str>>,
    }

    impl<'a> Read<'a> {
        /// Reads `raw`, or `None` when the general path must (see the module doc).
        pub(super) fn item(source: SourceKind, raw: &'a str) -> Option<Read<'a>> {
            if !raw.trim_start().starts_with('{') {
                return None;
            }
            let bytes = raw.as_bytes();
            if bytes.iter().filter(|&&b| b == b'{' || b == b'[').count() > MAX_BRACKETS {
                return None;
            }
            // `\uD800`-`\uDFFF`: maybe a lone surrogate, which `Value` refuses even in
            // a member this reading skips.
            if bytes.windows(4).any(|w| {
                w[0] == b'\\'
                    && w[1] == b'u'
                    && matches!(w[2], b'd' | b'D')
                    && matches!(w[3], b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
            }) {
                return None;
            }
            let item: Item<'a> = serde_json::from_str(raw).ok()?;
            let (time, action, user) = match source {
                SourceKind::AuditLogs => (item.created_at, text(item.event), item.created_by),
                SourceKind::ContentLogs => (item.action_time, text(item.action_type), item.actor),
                SourceKind::AiInteractionLogs => (
                    item.created_at,
                    text(item.ai_feature_name).or_else(|| text(item.log_type)),
                    item.actor,
                ),
            };
            let Obj(user) = user;
            let Obj(context) = item.context;
            Some(Read {
                id: string(item.id),
                event_id: text(item.id),
                time: string(time),
                action,
                category: match source {
                    SourceKind::AuditLogs => text(item.category),
                    _ => None,
                },
                user: [text(user.id), text(user.email), text(user.name)],
                ip: text(context.ip).filter(|ip| ip.parse::<std::net::IpAddr>().is_ok()),
            })
        }

        /// Appends the document (keys in the order `general`'s `Value` map writes them).
        pub(super) fn write_document(&self, source: SourceKind, row: &OutboxRow, out: &mut String) {
            out.push('{');
            // As the table row derives it: the event time read, written, and read again.
            if let Some(t) = self
                .time
                .as_deref()
                .and_then(UnixMs::parse)
                .and_then(|t| UnixMs::parse(&t.to_iso()))
            {
                out.push_str("\"@timestamp\":\"");
                out.push_str(&t.to_iso());
                out.push_str("\",");
            }
            out.push_str("\"ecs\":{\"version\":\"");
            out.push_str(ECS_VERSION);
            out.push_str("\"},\"event\":{");
            if let Some(a) = &self.action {
                out.push_str("\"action\":");
                json_string(a, out);
                out.push(',');
            }
            let categorisation = match source {
                SourceKind::AuditLogs => audit_categorisation(
                    self.action.as_deref().unwrap_or_default(),
                    self.category.as_deref().unwrap_or_default(),
                ),
                _ => None,
            };
            if let Some((category, _, _)) = categorisation {
                out.push_str("\"category\":[\"");
                out.push_str(category);
                out.push_str("\"],");
            }
            out.push_str("\"dataset\":\"");
            out.push_str(dataset(source));
            out.push_str("\",");
            if let Some(id) = &self.event_id {
                out.push_str("\"id\":");
                json_string(id, out);
                out.push(',');
            }
            out.push_str("\"kind\":\"event\",\"module\":\"miro\"");
            if let Some((_, kind, outcome)) = categorisation {
                if let Some(o) = outcome {
                    out.push_str(",\"outcome\":\"");
                    out.push_str(o);
                    out.push('"');
                }
                out.push_str(",\"type\":[\"");
                out.push_str(kind);
                out.push_str("\"]");
            }
            out.push('}');
            if let Some(id) = &row.org_id {
                out.push_str(",\"organization\":{\"id\":");
                json_string(id, out);
                out.push('}');
            }
            let mut related_users: Vec<&str> = Vec::with_capacity(3);
            for v in self.user.iter().flatten() {
                if !related_users.contains(&v.as_ref()) {
                    related_users.push(v);
                }
            }
            if !related_users.is_empty() || self.ip.is_some() {
                out.push_str(",\"related\":{");
                if let Some(ip) = &self.ip {
                    out.push_str("\"ip\":[");
                    json_string(ip, out);
                    out.push(']');
                    if !related_users.is_empty() {
                        out.push(',');
                    }
                }
                if !related_users.is_empty() {
                    out.push_str("\"user\":[");
                    for (i, u) in related_users.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        json_string(u, out);
                    }
                    out.push(']');
                }
                out.push('}');
            }
            if let Some(ip) = &self.ip {
                out.push_str(",\"source\":{\"ip\":");
                json_string(ip, out);
                out.push('}');
            }
            if self.user.iter().any(Option::is_some) {
                out.push_str(",\"user\":{");
                let mut first = true;
                // `Value`'s map order: email, id, name.
                for (key, v) in [
                    ("email", &self.user[1]),
                    ("id", &self.user[0]),
                    ("name", &self.user[2]),
                ] {
                    if let Some(v) = v {
                        if !first {
                            out.push(',');
                        }
                        first = false;
                        out.push('"');
                        out.push_str(key);
                        out.push_str("\":");
                        json_string(v, out);
                    }
                }
                out.push('}');
            }
            out.push_str(",\"miro\":");
            out.push_str(row.raw.trim());
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(source: SourceKind, raw: &str) -> Value {
        let out = OutboxRow {
            seq: 1,
            raw: raw.to_string(),
            org_id: None,
        };
        let text = document(source, &out);
        assert!(text.contains(raw), "the item is embedded as stored: {text}");
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn an_audit_sign_in_gets_ecs_fields_and_keeps_the_item_digit_for_digit() {
        let raw = r#"{"id":"e#1","type":"event","event":"sign_in_failed","category":"authentication","createdAt":"2024-05-01T10:00:00.123+0000","createdBy":{"type":"user","id":"u1","email":"a@example.com","name":"Ann"},"context":{"ip":"203.0.113.9"},"details":{"big":30744573469876543210123}}"#;
        let d = doc(SourceKind::AuditLogs, raw);
        assert_eq!(d["@timestamp"], "2024-05-01T10:00:00.123Z");
        assert_eq!(d["event"]["action"], "sign_in_failed");
        assert_eq!(d["event"]["category"], json!(["authentication"]));
        assert_eq!(d["event"]["outcome"], "failure");
        assert_eq!(d["event"]["kind"], "event");
        assert_eq!(d["event"]["id"], "e#1");
        assert_eq!(
            d["user"],
            json!({"id":"u1","email":"a@example.com","name":"Ann"})
        );
        assert_eq!(d["source"]["ip"], "203.0.113.9");
        assert_eq!(
            d["related"],
            json!({"user":["u1","a@example.com","Ann"],"ip":["203.0.113.9"]})
        );
        assert_eq!(d["miro"]["category"], "authentication");
        assert_eq!(
            d["miro"]["details"]["big"].to_string(),
            "30744573469876543210123"
        );
    }

    #[test]
    fn unknown_categories_get_no_ecs_category_and_other_streams_map_their_actor() {
        let d = doc(
            SourceKind::AuditLogs,
            r#"{"id":"e2","event":"board_opened","category":"boards","createdAt":"2024-05-01T10:00:00.000+0000","createdBy":{"id":"u1"},"context":{"ip":"not an ip"}}"#,
        );
        assert!(d["event"].get("category").is_none());
        assert!(d.get("source").is_none(), "a bad IP is left in `miro` only");
        let c = doc(
            SourceKind::ContentLogs,
            r#"{"id":"c1","contentId":"b1","actionType":"delete","actionTime":"2024-05-01T11:00:00.250Z","actor":{"id":"u2","email":"b@example.com"},"itemType":"widget","itemId":"w1"}"#,
        );
        assert_eq!(c["event"]["action"], "delete");
        assert_eq!(c["event"]["dataset"], "miro.content");
        assert_eq!(c["user"]["email"], "b@example.com");
        assert_eq!(c["@timestamp"], "2024-05-01T11:00:00.250Z");
        let a = doc(
            SourceKind::AiInteractionLogs,
            r#"{"id":"ai1","createdAt":"2024-05-01T12:00:00.000Z","storedAt":"2024-05-01T12:00:00.500Z","aiFeatureName":"ai_generate_sticky_notes","logType":"request","actor":{"id":"u3"}}"#,
        );
        assert_eq!(a["event"]["action"], "ai_generate_sticky_notes");
        assert_eq!(a["@timestamp"], "2024-05-01T12:00:00.000Z");
    }

    /// The action line as earlier versions wrote it: the item parsed for its id.
    fn reference_action(target: &str, row: &OutboxRow, org_in_id: bool) -> String {
        let id = serde_json::from_str::<Value>(&row.raw)
            .ok()
            .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string))
            .unwrap_or_else(|| format!("mirotrail-seq-{}", row.seq));
        let id = match (&row.org_id, org_in_id) {
            (Some(org_id), true) => format!("{org_id}:{id}"),
            _ => id,
        };
        json!({ "create": { "_index": target, "_id": id } }).to_string()
    }

    #[test]
    fn the_one_pass_document_and_id_equal_the_value_reading_on_hostile_items() {
        let mut fast = 0;
        for raw in crate::sink::line::hostile_items() {
            for source in SourceKind::ALL {
                for org_id in [None, Some("3074\"457\\345".to_string())] {
                    let row = OutboxRow {
                        seq: 7,
                        raw: raw.clone(),
                        org_id,
                    };
                    assert_eq!(
                        document(source, &row),
                        general(source, &row),
                        "{source:?} {raw}"
                    );
                    for org_in_id in [false, true] {
                        let org = row.org_id.as_deref().filter(|_| org_in_id);
                        let mut out = String::new();
                        write_action("logs-miro.audit-x\"y", source, &row, org, &mut out);
                        let (action, doc) = out.split_once('\n').unwrap();
                        assert_eq!(
                            action,
                            reference_action("logs-miro.audit-x\"y", &row, org_in_id),
                            "{raw}"
                        );
                        assert_eq!(doc, format!("{}\n", general(source, &row)), "{raw}");
                    }
                    fast += usize::from(fast::Read::item(source, &row.raw).is_some());
                }
            }
        }
        // Most of them are read in one pass; the rest show the general path is taken.
        assert!(fast > 40, "{fast}");
    }
}
