//! Miro records as OCSF 1.1.0 events (the Open Cybersecurity Schema Framework, which
//! Amazon Security Lake and other OCSF tools read): [`encode`] turns one stored item
//! (`_raw`, the item as Miro sent it) of any source into one OCSF JSON object. It knows no
//! sink: the `file` and `stdout` sinks call it for `format = "ocsf"`, and any other
//! destination can.
//!
//! Which class and activity each event becomes is `mapping.rs`; `docs/ocsf.md` explains
//! every choice and every field.
//!
//! Invariants:
//! - Every record becomes an event: an unknown event name or category becomes a Base
//!   Event (activity Other), never nothing. Only an item that is not a JSON object, or
//!   has no readable time (OCSF requires `time`), is refused with an [`OcsfError`] saying
//!   which.
//! - Nothing Miro sent is lost: `raw_data` is the item exactly as stored (ids, times and
//!   numbers digit for digit), and `unmapped` holds the fields no OCSF attribute took,
//!   numbers beyond 2^53 with their digits (`serde_json`'s `arbitrary_precision`).
//! - Ids are strings; `time` is epoch milliseconds read from any ISO 8601 form Miro sends
//!   (`Z`, `+00:00`, `+0000`), `metadata.original_time` the text as sent.
//! - `type_uid` is `class_uid * 100 + activity_id`; every `*_id` has its caption beside it.

mod mapping;

use serde_json::{Map, Value, json};

use crate::source::SourceKind;
use crate::timefmt::UnixMs;

pub use mapping::{AUDIT_EVENTS, AuditMapping, Class, Status, Target};

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.1.0";

/// `severity_id` of every event: Informational. A single audit record carries no
/// severity of its own; mirotrail's detections (`rules/`) say what matters.
const SEVERITY_INFORMATIONAL: u8 = 1;

/// Why a stored item cannot be written as an OCSF event.
#[derive(Debug, thiserror::Error)]
pub enum OcsfError {
    #[error("the stored {kind} item is not a JSON object, so it has no OCSF form: {detail}")]
    NotAnObject { kind: SourceKind, detail: String },
    #[error(
        "the {kind} item {id} has no readable `{field}` (OCSF requires `time`); it stays \
         in the store and in the other sinks' output"
    )]
    NoTime {
        kind: SourceKind,
        id: String,
        field: &'static str,
    },
}

/// Appends `raw_item` (one item of `source` as Miro sent it) to `out` as one OCSF JSON
/// object, without a newline.
pub fn encode(source: SourceKind, raw_item: &str, out: &mut Vec<u8>) -> Result<(), OcsfError> {
    encode_for_org(source, raw_item, None, out)
}

/// [`encode`] for an item of the Miro organisation `org_id` (the row's `_org_id`), which
/// the event names in `metadata.tenant_uid`: ids are unique only per organisation, so
/// with several organisations `metadata.uid` alone does not tell two events apart.
pub fn encode_for_org(
    source: SourceKind,
    raw_item: &str,
    org_id: Option<&str>,
    out: &mut Vec<u8>,
) -> Result<(), OcsfError> {
    let mut event = event(source, raw_item)?;
    if let Some(org_id) = org_id
        && let Some(metadata) = event.get_mut("metadata").and_then(Value::as_object_mut)
    {
        metadata.insert("tenant_uid".into(), json!(org_id));
    }
    serde_json::to_writer(out, &event).expect("writing JSON to a Vec cannot fail");
    Ok(())
}

/// The OCSF event of one item, as a JSON value.
pub fn event(source: SourceKind, raw_item: &str) -> Result<Value, OcsfError> {
    let item = match serde_json::from_str::<Value>(raw_item) {
        Ok(Value::Object(item)) => item,
        Ok(other) => {
            return Err(OcsfError::NotAnObject {
                kind: source,
                detail: format!("it is {}", kind_of(&other)),
            });
        }
        Err(e) => {
            return Err(OcsfError::NotAnObject {
                kind: source,
                detail: e.to_string(),
            });
        }
    };
    let time_field = match source {
        SourceKind::ContentLogs => "actionTime",
        SourceKind::AuditLogs | SourceKind::AiInteractionLogs => "createdAt",
    };
    let original_time = item.get(time_field).and_then(Value::as_str);
    let Some(time) = original_time.and_then(UnixMs::parse) else {
        return Err(OcsfError::NoTime {
            kind: source,
            id: item.get("id").and_then(id_text).unwrap_or_default(),
            field: time_field,
        });
    };

    let parts = match source {
        SourceKind::AuditLogs => audit_event(&item),
        SourceKind::ContentLogs => content_item(&item),
        SourceKind::AiInteractionLogs => ai_entry(&item),
    };
    let Parts {
        class,
        activity_id,
        activity_name,
        status,
        status_detail,
        message,
        event_code,
        mut fields,
        mapped,
    } = parts;

    let mut metadata = Map::new();
    metadata.insert("version".into(), json!(OCSF_VERSION));
    metadata.insert(
        "product".into(),
        json!({"name": "Miro", "vendor_name": "Miro", "feature": {"name": feature(source)}}),
    );
    metadata.insert("log_name".into(), json!(source.name()));
    if let Some(id) = item.get("id").and_then(id_text) {
        metadata.insert("uid".into(), json!(id));
    }
    if let Some(text) = original_time {
        metadata.insert("original_time".into(), json!(text));
    }
    if let Some(code) = event_code {
        metadata.insert("event_code".into(), json!(code));
    }
    if source == SourceKind::AiInteractionLogs {
        if let Some(stored) = str_at(&item, "storedAt").and_then(UnixMs::parse) {
            metadata.insert("logged_time".into(), json!(stored.0));
        }
        if let Some(session) = item.get("sessionId").and_then(id_text) {
            metadata.insert("correlation_uid".into(), json!(session));
        }
    }
    if class.needs_host_profile() && fields.contains_key("actor") {
        metadata.insert("profiles".into(), json!(["host"]));
    }

    // `type_name` is the caption of `type_uid` ("...: Other" for 99), whatever name of
    // our own `activity_name` carries.
    let caption = class.activity_name(activity_id);
    let activity_name = activity_name.unwrap_or_else(|| caption.into());
    let type_uid = class.uid() * 100 + u32::from(activity_id);
    fields.insert("metadata".into(), Value::Object(metadata));
    fields.insert("class_uid".into(), json!(class.uid()));
    fields.insert("class_name".into(), json!(class.name()));
    fields.insert("category_uid".into(), json!(class.category_uid()));
    fields.insert("category_name".into(), json!(class.category_name()));
    fields.insert("activity_id".into(), json!(activity_id));
    fields.insert(
        "type_name".into(),
        json!(format!("{}: {caption}", class.name())),
    );
    fields.insert("activity_name".into(), json!(activity_name));
    fields.insert("type_uid".into(), json!(type_uid));
    fields.insert("severity_id".into(), json!(SEVERITY_INFORMATIONAL));
    fields.insert("severity".into(), json!("Informational"));
    fields.insert("status_id".into(), json!(status.id()));
    fields.insert("status".into(), json!(status.name()));
    if let Some(detail) = status_detail {
        fields.insert("status_detail".into(), json!(detail));
    }
    if let Some(message) = message {
        fields.insert("message".into(), json!(message));
    }
    fields.insert("time".into(), json!(time.0));
    // What no attribute took, moved rather than copied.
    let mut unmapped = item;
    unmapped.retain(|k, _| !mapped.contains(&k.as_str()));
    if !unmapped.is_empty() {
        fields.insert("unmapped".into(), Value::Object(unmapped));
    }
    fields.insert("raw_data".into(), json!(raw_item));
    Ok(Value::Object(fields))
}

/// What a source's mapping decides; `fields` holds the class-specific attributes
/// (`actor`, `user`, `web_resources`, ...), `mapped` the item's top-level keys they
/// took in full (the rest go to `unmapped`).
struct Parts {
    class: Class,
    activity_id: u8,
    /// A name of our own for an activity the class calls Other (AI features).
    activity_name: Option<String>,
    status: Status,
    status_detail: Option<String>,
    message: Option<String>,
    event_code: Option<String>,
    fields: Map<String, Value>,
    mapped: Vec<&'static str>,
}

fn audit_event(item: &Map<String, Value>) -> Parts {
    let event = str_at(item, "event");
    let mapping = mapping::audit(event, str_at(item, "category"));
    let class = mapping.class;
    let mut fields = Map::new();
    let mut mapped = vec!["id", "createdAt", "event"];
    let actor = item.get("createdBy").and_then(user);
    if let (Some(actor), true) = (&actor, class.has_actor()) {
        fields.insert("actor".into(), json!({"user": actor}));
        mapped.push("createdBy");
    }
    let object = item.get("object").and_then(Value::as_object);
    let details = item.get("details").and_then(Value::as_object);
    match mapping.target {
        Target::SignIn => {
            // The person signing in is the actor (their own `object` too).
            let who = actor
                .clone()
                .or_else(|| item.get("object").and_then(user))
                .unwrap_or_else(unknown_user);
            fields.insert("user".into(), who);
            fields.insert("service".into(), json!({"name": "Miro"}));
        }
        Target::Account => {
            let mut target = item
                .get("object")
                .and_then(user)
                .unwrap_or_else(unknown_user);
            let email = details.and_then(|d| {
                ["email", "invitedEmail"]
                    .iter()
                    .find_map(|k| d.get(*k).and_then(Value::as_str))
            });
            if let (Some(email), Some(t)) = (email.filter(|e| is_email(e)), target.as_object_mut())
            {
                t.insert("email_addr".into(), json!(email));
            }
            fields.insert("user".into(), target);
            if class == Class::UserAccess {
                let role = details.and_then(|d| {
                    ["newRole", "role", "value"]
                        .iter()
                        .find_map(|k| d.get(*k).and_then(Value::as_str))
                });
                fields.insert(
                    "privileges".into(),
                    json!(role.into_iter().collect::<Vec<_>>()),
                );
            }
            mapped.push("object");
        }
        Target::Board => {
            let mut board = named(object).unwrap_or_else(|| json!({"name": "unknown"}));
            board["type"] = json!("board");
            fields.insert("web_resources".into(), json!([board]));
            mapped.push("object");
        }
        Target::Entity(kind) => {
            let mut entity = named(object).unwrap_or_else(|| json!({"name": kind}));
            entity["type"] = json!(kind);
            fields.insert("entity".into(), entity);
            mapped.push("object");
        }
        Target::None => {}
    }
    let ip = item
        .get("context")
        .and_then(|c| c.get("ip"))
        .and_then(Value::as_str);
    // OCSF's `ip_t` is an address; anything else stays in `unmapped.context`.
    let ip = ip.filter(|ip| ip.parse::<std::net::IpAddr>().is_ok());
    if let (Some(ip), true) = (ip, class.has_src_endpoint()) {
        fields.insert("src_endpoint".into(), json!({"ip": ip}));
    }
    let status_detail = (mapping.status == Status::Failure)
        .then(|| {
            details
                .and_then(|d| d.get("reason"))
                .and_then(Value::as_str)
        })
        .flatten()
        .map(str::to_string);
    Parts {
        class,
        activity_id: mapping.activity_id,
        activity_name: None,
        status: mapping.status,
        status_detail,
        message: event.map(str::to_string),
        event_code: event.map(str::to_string),
        fields,
        mapped,
    }
}

fn content_item(item: &Map<String, Value>) -> Parts {
    let action = str_at(item, "actionType");
    let mut fields = Map::new();
    let mut mapped = vec!["id", "actionTime", "actionType"];
    if let Some(actor) = item.get("actor").and_then(user) {
        fields.insert("actor".into(), json!({"user": actor}));
        mapped.push("actor");
    }
    let item_type = str_at(item, "itemType");
    let mut resource = match item.get("itemId").and_then(id_text) {
        Some(id) => json!({"uid": id}),
        None => json!({"name": "unknown"}),
    };
    if let Some(kind) = item_type {
        resource["type"] = json!(kind);
    }
    let mut resources = vec![resource];
    if let Some(board) = item.get("contentId").and_then(id_text) {
        resources.push(json!({"uid": board, "type": "board"}));
    }
    fields.insert("web_resources".into(), Value::Array(resources));
    mapped.extend(["itemId", "itemType", "contentId"]);
    let message = match (action, item_type) {
        (Some(a), Some(t)) => Some(format!("{t} {a}")),
        (Some(a), None) => Some(a.to_string()),
        _ => None,
    };
    Parts {
        class: Class::WebResourcesActivity,
        activity_id: mapping::content_activity(action),
        activity_name: None,
        status: Status::Success,
        status_detail: None,
        message,
        event_code: action.map(str::to_string),
        fields,
        mapped,
    }
}

fn ai_entry(item: &Map<String, Value>) -> Parts {
    let feature = str_at(item, "aiFeatureName");
    let log_type = str_at(item, "logType");
    let mut fields = Map::new();
    let mut mapped = vec!["id", "createdAt", "storedAt", "sessionId"];
    if let Some(actor) = item.get("actor").and_then(user) {
        fields.insert("actor".into(), json!({"user": actor}));
        mapped.push("actor");
    }
    let object = item.get("object").and_then(Value::as_object);
    let mut resource = named(object).unwrap_or_else(|| json!({"name": "unknown"}));
    if let Some(kind) = object.and_then(|o| o.get("type")).and_then(Value::as_str) {
        resource["type"] = json!(kind);
    }
    fields.insert("web_resources".into(), json!([resource]));
    mapped.push("object");
    let message = match (feature, log_type) {
        (Some(f), Some(l)) => Some(format!("{f} {l}")),
        (Some(f), None) => Some(f.to_string()),
        _ => None,
    };
    Parts {
        class: Class::WebResourcesActivity,
        activity_id: mapping::OTHER,
        activity_name: Some(feature.unwrap_or("AI interaction").to_string()),
        status: Status::Unknown,
        status_detail: None,
        message,
        event_code: feature.map(str::to_string),
        fields,
        mapped,
    }
}

/// An OCSF `user` from a Miro `{id, name, email, type}` object; `None` when it names no
/// one.
fn user(value: &Value) -> Option<Value> {
    let object = value.as_object()?;
    let mut user = Map::new();
    if let Some(id) = object.get("id").and_then(id_text) {
        user.insert("uid".into(), json!(id));
    }
    // An empty string names no one (Miro sends `""` for an application's address).
    let text = |key: &str| {
        object
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let email = text("email");
    match (text("name"), email) {
        (Some(name), _) => {
            user.insert("name".into(), json!(name));
        }
        // OCSF wants a name or a uid; an address alone names the person too.
        (None, Some(email)) if user.is_empty() => {
            user.insert("name".into(), json!(email));
        }
        _ => {}
    }
    if let Some(email) = email.filter(|e| is_email(e)) {
        user.insert("email_addr".into(), json!(email));
    }
    if user.is_empty() {
        return None;
    }
    if let Some(kind) = object.get("type").and_then(Value::as_str) {
        // OCSF user types: 1 User, 3 System, 99 Other (with Miro's word as `type`).
        let (id, caption) = match kind {
            "user" => (1, "User"),
            "miro_automation" => (3, "System"),
            other => (99, other),
        };
        user.insert("type_id".into(), json!(id));
        user.insert("type".into(), json!(caption));
    }
    Some(Value::Object(user))
}

/// Whether `text` has the shape OCSF 1.1's `email_t` demands (`local@domain.tld`, ASCII
/// letters, digits and `_.+-`). An address of another shape is left out of `email_addr`
/// (an OCSF reader would refuse the event) and stays in `raw_data`.
fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    let Some((host, tld)) = domain.split_once('.') else {
        return false;
    };
    let ok = |s: &str, extra: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
    };
    ok(local, "_.+-") && ok(host, "-") && ok(tld, "-.")
}

/// A required `user` Miro does not name.
fn unknown_user() -> Value {
    json!({"name": "unknown"})
}

/// `{uid, name}` from a Miro `{id, name}` object, when it has either.
fn named(object: Option<&Map<String, Value>>) -> Option<Value> {
    let object = object?;
    let mut out = Map::new();
    if let Some(id) = object.get("id").and_then(id_text) {
        out.insert("uid".into(), json!(id));
    }
    if let Some(name) = object.get("name").and_then(Value::as_str) {
        out.insert("name".into(), json!(name));
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// An id as text: a string as is, a number with its exact digits.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn str_at<'a>(item: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    item.get(key).and_then(Value::as_str)
}

fn feature(source: SourceKind) -> &'static str {
    match source {
        SourceKind::AuditLogs => "Audit logs",
        SourceKind::ContentLogs => "Content logs",
        SourceKind::AiInteractionLogs => "AI interaction logs",
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
