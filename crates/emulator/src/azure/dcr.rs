//! The Sentinel "Miro" solution's two streams and their DCR transformations, plus the
//! third stream mirotrail deploys itself for AI interaction logs (not part of the
//! solution), written from the contract in mirotrail's `docs/sentinel-contract.md` (stream
//! declarations, DCR transformations, table schemas) and independent of mirotrail's own implementation, so
//! that comparing the emulator's tables with mirotrail's local store checks both.
//!
//! KQL semantics: `tostring()` of a missing or null field is `""`, also for a nested field
//! of a missing object or of an object without that field; a datetime that does not parse
//! is null; a dynamic column holds the JSON value (compact text) and is null when missing.

use serde_json::{Map, Value};

use crate::time::UnixMs;

/// One of the solution's two DCR streams, or mirotrail's own third one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// `Custom-MiroAuditLogs_CL` into `MiroAuditLogs_CL`.
    AuditLogs,
    /// `Custom-MiroContentLogs_CL` into `MiroContentLogs_CL`.
    ContentLogs,
    /// `Custom-MiroAiInteractionLogs_CL` into `MiroAiInteractionLogs_CL` (mirotrail's own).
    AiInteractionLogs,
}

/// How a table column is derived from a stream record.
enum Derive {
    /// A datetime column: the record's string member at this key, parsed.
    Datetime(&'static str),
    /// A string column: KQL `tostring()` of the value at this path.
    Text(&'static [&'static str]),
    /// A dynamic column: the record's member at this key, as is.
    Dynamic(&'static str),
}

use Derive::{Datetime, Dynamic, Text};

/// `MiroAuditLogs_CL`, in the table's column order, with each column's derivation.
const AUDIT_TABLE: [(&str, Derive); 20] = [
    ("TimeGenerated", Datetime("createdAt")),
    ("id", Text(&["id"])),
    ("createdAt", Datetime("createdAt")),
    ("event", Text(&["event"])),
    ("category", Text(&["category"])),
    ("logType", Text(&["type"])),
    ("createdBy_email", Text(&["createdBy", "email"])),
    ("createdBy_id", Text(&["createdBy", "id"])),
    ("createdBy_name", Text(&["createdBy", "name"])),
    ("createdBy_type", Text(&["createdBy", "type"])),
    ("object_id", Text(&["object", "id"])),
    ("object_name", Text(&["object", "name"])),
    ("context_ip", Text(&["context", "ip"])),
    ("context_team_id", Text(&["context", "team", "id"])),
    ("context_team_name", Text(&["context", "team", "name"])),
    ("context_team_type", Text(&["context", "team", "type"])),
    (
        "context_organization_id",
        Text(&["context", "organization", "id"]),
    ),
    (
        "context_organization_name",
        Text(&["context", "organization", "name"]),
    ),
    (
        "context_organization_type",
        Text(&["context", "organization", "type"]),
    ),
    ("details", Dynamic("details")),
];

/// `MiroContentLogs_CL`, in the table's column order, with each column's derivation.
const CONTENT_TABLE: [(&str, Derive); 12] = [
    ("TimeGenerated", Datetime("actionTime")),
    ("id", Text(&["id"])),
    ("actionTime", Datetime("actionTime")),
    ("actionType", Text(&["actionType"])),
    ("actor_id", Text(&["actor", "id"])),
    ("actor_email", Text(&["actor", "email"])),
    ("actor_name", Text(&["actor", "name"])),
    ("contentId", Text(&["contentId"])),
    ("itemId", Text(&["itemId"])),
    ("itemType", Text(&["itemType"])),
    ("relationships", Dynamic("relationships")),
    ("state", Dynamic("state")),
];

/// `MiroAiInteractionLogs_CL`, in the table's column order, with each column's derivation.
const AI_TABLE: [(&str, Derive); 14] = [
    ("TimeGenerated", Datetime("createdAt")),
    ("id", Text(&["id"])),
    ("createdAt", Datetime("createdAt")),
    ("storedAt", Datetime("storedAt")),
    ("sessionId", Text(&["sessionId"])),
    ("messageId", Text(&["messageId"])),
    ("aiFeatureName", Text(&["aiFeatureName"])),
    ("logType", Text(&["logType"])),
    ("object_id", Text(&["object", "id"])),
    ("object_type", Text(&["object", "type"])),
    ("actor_id", Text(&["actor", "id"])),
    ("actor_email", Text(&["actor", "email"])),
    ("actor_name", Text(&["actor", "name"])),
    ("details", Dynamic("details")),
];

impl Stream {
    pub const ALL: [Stream; 3] = [
        Stream::AuditLogs,
        Stream::ContentLogs,
        Stream::AiInteractionLogs,
    ];

    /// The stream's name in a DCR (`streamDeclarations`, and the ingestion URL).
    pub fn name(self) -> &'static str {
        match self {
            Stream::AuditLogs => "Custom-MiroAuditLogs_CL",
            Stream::ContentLogs => "Custom-MiroContentLogs_CL",
            Stream::AiInteractionLogs => "Custom-MiroAiInteractionLogs_CL",
        }
    }

    /// The stream whose name this is.
    pub fn from_name(name: &str) -> Option<Stream> {
        Stream::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The Log Analytics table the stream's DCR writes into.
    pub fn table(self) -> &'static str {
        match self {
            Stream::AuditLogs => "MiroAuditLogs_CL",
            Stream::ContentLogs => "MiroContentLogs_CL",
            Stream::AiInteractionLogs => "MiroAiInteractionLogs_CL",
        }
    }

    /// The stream declaration's columns, in order: the only members a record may have.
    pub fn declared_columns(self) -> &'static [&'static str] {
        match self {
            Stream::AuditLogs => &[
                "id",
                "event",
                "category",
                "type",
                "createdAt",
                "createdBy",
                "context",
                "details",
                "object",
            ],
            Stream::ContentLogs => &[
                "id",
                "contentId",
                "actionType",
                "actionTime",
                "actor",
                "itemType",
                "itemId",
                "state",
                "relationships",
            ],
            Stream::AiInteractionLogs => &[
                "id",
                "createdAt",
                "storedAt",
                "sessionId",
                "messageId",
                "aiFeatureName",
                "logType",
                "object",
                "actor",
                "details",
            ],
        }
    }

    fn table_derivation(self) -> &'static [(&'static str, Derive)] {
        match self {
            Stream::AuditLogs => &AUDIT_TABLE,
            Stream::ContentLogs => &CONTENT_TABLE,
            Stream::AiInteractionLogs => &AI_TABLE,
        }
    }

    /// The table's columns, in the table's order.
    pub fn table_columns(self) -> impl Iterator<Item = &'static str> {
        self.table_derivation().iter().map(|(column, _)| *column)
    }

    /// The DCR transformation of one stream record: the table row as
    /// `{column: text or null}` (datetimes as `YYYY-MM-DDTHH:MM:SS.mmmZ`).
    pub fn transform(self, record: &Map<String, Value>) -> Value {
        let mut row = Map::new();
        for (column, derive) in self.table_derivation() {
            let cell = match derive {
                Datetime(key) => record
                    .get(*key)
                    .and_then(Value::as_str)
                    .and_then(UnixMs::parse)
                    .map_or(Value::Null, |t| Value::String(t.to_iso())),
                Text(path) => Value::String(kql_tostring(lookup(record, path))),
                Dynamic(key) => match record.get(*key) {
                    None | Some(Value::Null) => Value::Null,
                    Some(v) => Value::String(v.to_string()),
                },
            };
            row.insert((*column).to_string(), cell);
        }
        Value::Object(row)
    }
}

/// KQL `tostring()`: strings as they are, other scalars as text, objects and arrays as
/// compact JSON, missing and null as `""`.
pub fn kql_tostring(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Follows a path of object keys; anything that is not an object on the way gives `None`.
fn lookup<'a>(record: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut current = record.get(*first)?;
    for key in rest {
        current = current.as_object()?.get(*key)?;
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn audit_record_becomes_the_documented_row() {
        let record = json!({
            "id": "450256789", "type": "event", "event": "board_opened",
            "category": "boards", "createdAt": "2018-10-19T23:59:45.000+0000",
            "createdBy": {"type": "user", "id": "3074", "name": "Test"},
            "context": {"ip": "10.10.10.10", "team": {"id": "7"}},
            "details": {"role": "OWNER"},
        });
        let row = Stream::AuditLogs.transform(record.as_object().unwrap());
        assert_eq!(row["TimeGenerated"], "2018-10-19T23:59:45.000Z");
        assert_eq!(row["createdAt"], "2018-10-19T23:59:45.000Z");
        assert_eq!(row["logType"], "event");
        assert_eq!(row["createdBy_id"], "3074");
        assert_eq!(row["createdBy_email"], "", "missing nested field");
        assert_eq!(row["object_id"], "", "field of a missing object");
        assert_eq!(row["context_team_id"], "7");
        assert_eq!(row["details"], r#"{"role":"OWNER"}"#);
        assert_eq!(row.as_object().unwrap().len(), 20);
    }

    #[test]
    fn content_record_with_bad_time_and_no_dynamics() {
        let record = json!({"id": 12, "actionTime": "yesterday", "actor": "not an object"});
        let row = Stream::ContentLogs.transform(record.as_object().unwrap());
        assert_eq!(row["id"], "12");
        assert_eq!(row["TimeGenerated"], Value::Null);
        assert_eq!(row["actor_id"], "");
        assert_eq!(row["state"], Value::Null);
        assert_eq!(row.as_object().unwrap().len(), 12);
    }

    #[test]
    fn ai_record_becomes_the_documented_row() {
        let record = json!({
            "id": "3f6c1b1e-8f0a-4c7e-9d52-0b7c5a1e2f33",
            "createdAt": "2024-05-01T10:00:00.250+0000", "storedAt": "2024-05-01T10:07:00Z",
            "sessionId": "s1", "messageId": "m1", "aiFeatureName": "ai_generate_sticky_notes",
            "logType": "request", "object": {"id": "uXjVOD6LSME=", "type": "board"},
            "actor": {"id": "3074", "email": "a@x.io"},
            "details": serde_json::from_str::<Value>(r#"{"n":30744573469876543210123}"#).unwrap(),
        });
        let row = Stream::AiInteractionLogs.transform(record.as_object().unwrap());
        assert_eq!(row["TimeGenerated"], "2024-05-01T10:00:00.250Z");
        assert_eq!(row["createdAt"], "2024-05-01T10:00:00.250Z");
        assert_eq!(row["storedAt"], "2024-05-01T10:07:00.000Z");
        assert_eq!(row["logType"], "request");
        assert_eq!(row["object_type"], "board");
        assert_eq!(row["actor_name"], "", "missing nested field");
        assert_eq!(row["details"], r#"{"n":30744573469876543210123}"#);
        assert_eq!(row.as_object().unwrap().len(), 14);
    }
}
