//! A stored row as an Elasticsearch document in ECS field names (`docs/elasticsearch.md`,
//! "Documents"). Pure.
//!
//! Invariants: the Miro item is embedded under `miro` exactly as stored (its text, so
//! numbers beyond 2^64 keep every digit); the ECS fields are only ever copies of item
//! fields, never a replacement for them; an ECS categorisation is set only where an ECS
//! allowed value fits (a Miro category or event name the mapping does not know gets none).

use serde_json::{Map, Value, json};

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
}
