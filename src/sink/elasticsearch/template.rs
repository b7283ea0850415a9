//! What `mirotrail template elasticsearch` prints: a composable index template for the
//! default data streams (`logs-miro.*-*`) mapping the ECS fields the sink writes
//! (`doc.rs`) and the Miro item under `miro` as one `flattened` field
//! (`docs/elasticsearch.md`, "Template").
//!
//! Invariant: every field `doc.rs` writes has a mapping here (a test checks it), so no
//! document depends on dynamic mapping for an ECS field.

use serde_json::{Value, json};

/// The template's name in `PUT _index_template/NAME`.
pub const NAME: &str = "logs-miro";

/// The body of `PUT _index_template/logs-miro`.
pub fn index_template() -> Value {
    let keyword = json!({ "type": "keyword", "ignore_above": 1024 });
    json!({
        "index_patterns": ["logs-miro.*-*"],
        "data_stream": {},
        // Above the built-in `logs-*-*` template (priority 100).
        "priority": 200,
        "template": {
            "mappings": {
                "dynamic": false,
                "properties": {
                    "@timestamp": { "type": "date" },
                    "ecs": { "properties": { "version": keyword } },
                    "event": { "properties": {
                        "kind": keyword, "module": keyword, "dataset": keyword,
                        "id": keyword, "action": keyword, "category": keyword,
                        "type": keyword, "outcome": keyword
                    }},
                    "user": { "properties": {
                        "id": keyword, "email": keyword, "name": keyword
                    }},
                    "source": { "properties": { "ip": { "type": "ip" } } },
                    "related": { "properties": {
                        "user": keyword, "ip": { "type": "ip" }
                    }},
                    // Free-form `details` and `state` would clash in an object mapping (a
                    // field a number in one item and text in another); flattened keeps
                    // every leaf searchable as a keyword, and `_source` keeps each value
                    // as sent, digit for digit.
                    "miro": { "type": "flattened", "ignore_above": 8191 },
                    "data_stream": { "properties": {
                        "type": { "type": "constant_keyword" },
                        "dataset": { "type": "constant_keyword" },
                        "namespace": { "type": "constant_keyword" }
                    }}
                }
            }
        },
        "_meta": {
            "description": "Miro audit, content and AI interaction logs delivered by mirotrail (ECS)",
            "managed_by": "mirotrail"
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::elasticsearch::document;
    use crate::source::SourceKind;
    use crate::store::OutboxRow;

    /// Every leaf path of `doc` outside `miro` has a mapping.
    fn unmapped(doc: &Value, mappings: &Value, prefix: &str, out: &mut Vec<String>) {
        let Some(obj) = doc.as_object() else { return };
        for (k, v) in obj {
            let path = format!("{prefix}{k}");
            let Some(m) = mappings.get(k) else {
                out.push(path);
                continue;
            };
            if k == "miro" {
                continue;
            }
            if v.is_object() {
                unmapped(v, &m["properties"], &format!("{path}."), out);
            }
        }
    }

    #[test]
    fn every_field_the_sink_writes_is_mapped() {
        let template = index_template();
        let props = &template["template"]["mappings"]["properties"];
        let raw = r#"{"id":"e1","event":"sign_in_succeeded","category":"authentication","createdAt":"2024-05-01T10:00:00.000+0000","createdBy":{"id":"u1","email":"a@example.com","name":"A"},"context":{"ip":"192.0.2.1"}}"#;
        let doc: Value = serde_json::from_str(&document(
            SourceKind::AuditLogs,
            &OutboxRow {
                seq: 1,
                raw: raw.into(),
                org_id: None,
            },
        ))
        .unwrap();
        let mut missing = Vec::new();
        unmapped(&doc, props, "", &mut missing);
        assert!(missing.is_empty(), "unmapped: {missing:?}");
    }
}
