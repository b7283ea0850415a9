//! The rule format: one TOML file per rule (`rules/*.toml`), read into [`RawRule`] (as
//! written, unknown keys refused) and validated into [`Rule`] (field names checked
//! against the table's schema, durations parsed, ids GUIDs). Validation errors name the
//! file, the key and the fix. The format is documented in `docs/detections.md`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::settings::parse_duration;
use crate::source::SourceKind;

use super::fields::{Field, FieldType};

/// A rule file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Stable GUID: Sentinel keys the analytic rule on it; never change it.
    pub id: String,
    pub name: String,
    pub description: String,
    /// `Informational`, `Low`, `Medium` or `High`.
    pub severity: String,
    /// MITRE ATT&CK tactics, in Sentinel's spelling (`CredentialAccess`).
    pub tactics: Vec<String>,
    /// MITRE ATT&CK technique ids (`T1110`, `T1110.001`).
    pub techniques: Vec<String>,
    /// `audit` (`MiroAuditLogs_CL`) or `content` (`MiroContentLogs_CL`).
    pub stream: String,
    /// Entity keys an alert is per (`account`, `ip`, `board`); empty: one per window.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Tumbling window, e.g. `"10m"`.
    pub window: String,
    /// Matches of `match` in one window and group that raise the alert.
    pub threshold: u32,
    /// What a row must be to count.
    #[serde(rename = "match")]
    pub matcher: RawMatch,
    /// When set: the alert also needs a row matching this after the first `match` row
    /// (same group and window): "a success after failures".
    pub then: Option<RawMatch>,
    /// Entities of the alert, each from a group key.
    #[serde(default)]
    pub entities: Vec<RawEntity>,
    /// Built-in examples `rules test` runs.
    #[serde(default)]
    pub samples: Vec<RawSample>,
}

/// A filter on rows.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// Event names (audit `event`); empty: any. Each says whether a public source
    /// confirms Miro sends it.
    #[serde(default)]
    pub events: Vec<RawEventName>,
    /// Categories (audit `category`); empty: any.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Conditions on fields (a column, or `details.x` / `state.x` inside a dynamic column).
    #[serde(default, rename = "where")]
    pub conditions: Vec<RawCondition>,
    /// Group keys for this step when they are not the stream's defaults, e.g.
    /// `account = "object_id"` (the user a deactivation is about).
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEventName {
    pub name: String,
    pub confirmed: bool,
}

/// `field` compared case-insensitively with a list: `in` (one of) or `not_in`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCondition {
    pub field: String,
    #[serde(default, rename = "in")]
    pub any_of: Vec<String>,
    #[serde(default)]
    pub not_in: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntity {
    /// Sentinel entity type: `Account`, `IP` or `URL`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The group key it comes from.
    pub key: String,
}

/// A sample: rows as the API sends them (`items`) and whether the rule must fire.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSample {
    pub name: String,
    /// `true`: exactly one alert; `false`: none.
    pub fires: bool,
    /// API items (TOML tables); each may have `offset_secs` (time after the sample's
    /// start) in place of a time field.
    pub items: Vec<toml::Value>,
}

/// Severity, in Sentinel's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Informational => "Informational",
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
        }
    }
}

/// A Sentinel entity type the rules map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    Account,
    Ip,
    Url,
}

impl EntityKind {
    /// The entity type and the identifier the group key fills.
    pub fn sentinel(self) -> (&'static str, &'static str) {
        match self {
            EntityKind::Account => ("Account", "FullName"),
            EntityKind::Ip => ("IP", "Address"),
            EntityKind::Url => ("URL", "Url"),
        }
    }
}

/// A validated filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// (name, confirmed).
    pub events: Vec<(String, bool)>,
    pub categories: Vec<String>,
    pub conditions: Vec<Condition>,
    /// Group key name -> the field it is read from, for every key of the rule.
    pub keys: BTreeMap<String, Field>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub field: Field,
    /// Lowercase; true: the value must be one of them; false: none of them.
    pub values: Vec<String>,
    pub negate: bool,
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The file's stem, e.g. `sign-in-failures-by-actor`: the short name used by the CLI,
    /// the config (`[detect.rules.SLUG]`) and the emulator's scenarios.
    pub slug: String,
    pub id: String,
    pub name: String,
    pub description: String,
    pub severity: Severity,
    pub tactics: Vec<String>,
    pub techniques: Vec<String>,
    pub source: SourceKind,
    pub group_by: Vec<String>,
    pub window: Duration,
    pub threshold: u32,
    pub matcher: Match,
    pub then: Option<Match>,
    pub entities: Vec<(EntityKind, String)>,
    pub samples: Vec<RawSample>,
}

impl Rule {
    /// The window in whole seconds (validation keeps it whole and at least a minute).
    pub fn window_secs(&self) -> i64 {
        i64::try_from(self.window.as_secs()).unwrap_or(i64::MAX)
    }

    /// Every event name the rule matches, with whether it is confirmed.
    pub fn event_names(&self) -> Vec<(String, bool)> {
        let mut names = self.matcher.events.clone();
        if let Some(then) = &self.then {
            names.extend(then.events.iter().cloned());
        }
        names
    }
}

/// A rule that does not validate: the file, the key and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {file}: `{key}`: {message}")]
pub struct RuleError {
    pub file: String,
    pub key: String,
    pub message: String,
}

/// Sentinel's tactic names (MITRE ATT&CK Enterprise).
pub const TACTICS: [&str; 14] = [
    "Reconnaissance",
    "ResourceDevelopment",
    "InitialAccess",
    "Execution",
    "Persistence",
    "PrivilegeEscalation",
    "DefenseEvasion",
    "CredentialAccess",
    "Discovery",
    "LateralMovement",
    "Collection",
    "CommandAndControl",
    "Exfiltration",
    "Impact",
];

/// The default group keys of a stream and the column each is read from.
pub fn default_keys(source: SourceKind) -> &'static [(&'static str, &'static str)] {
    match source {
        SourceKind::AuditLogs => &[
            ("account", "createdBy_email"),
            ("ip", "context_ip"),
            ("board", "object_id"),
        ],
        SourceKind::ContentLogs => &[("account", "actor_email"), ("board", "contentId")],
        SourceKind::AiInteractionLogs => &[("account", "actor_email"), ("board", "object_id")],
    }
}

fn is_guid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn is_technique(text: &str) -> bool {
    let bytes = text.as_bytes();
    let main = bytes.len() >= 5 && bytes[0] == b'T' && bytes[1..5].iter().all(u8::is_ascii_digit);
    main && (bytes.len() == 5
        || (bytes.len() == 9 && bytes[5] == b'.' && bytes[6..].iter().all(u8::is_ascii_digit)))
}

impl RawRule {
    /// Validates a rule read from `file` (named in errors), whose stem is `slug`.
    pub fn validate(self, file: &str, slug: &str) -> Result<Rule, RuleError> {
        let err = |key: &str, message: String| RuleError {
            file: file.to_string(),
            key: key.to_string(),
            message,
        };
        if !is_guid(&self.id) {
            return Err(err(
                "id",
                format!(
                    "`{}` is not a GUID; write one like 8c3f5a0e-2b1d-4e6f-9a7b-0c1d2e3f4a5b (and never change it: Sentinel keys the rule on it)",
                    self.id
                ),
            ));
        }
        for (key, text) in [("name", &self.name), ("description", &self.description)] {
            if text.trim().is_empty() {
                return Err(err(key, "is empty; say what the rule finds".into()));
            }
        }
        let severity = match self.severity.as_str() {
            "Informational" => Severity::Informational,
            "Low" => Severity::Low,
            "Medium" => Severity::Medium,
            "High" => Severity::High,
            other => {
                return Err(err(
                    "severity",
                    format!(
                        "`{other}` is not a severity; write Informational, Low, Medium or High"
                    ),
                ));
            }
        };
        if self.tactics.is_empty() {
            return Err(err(
                "tactics",
                "is empty; name at least one MITRE tactic".into(),
            ));
        }
        for tactic in &self.tactics {
            if !TACTICS.contains(&tactic.as_str()) {
                return Err(err(
                    "tactics",
                    format!(
                        "`{tactic}` is not a MITRE tactic in Sentinel's spelling; use one of {}",
                        TACTICS.join(", ")
                    ),
                ));
            }
        }
        for technique in &self.techniques {
            if !is_technique(technique) {
                return Err(err(
                    "techniques",
                    format!("`{technique}` is not a technique id; write T1110 or T1110.001"),
                ));
            }
        }
        let source = match self.stream.as_str() {
            "audit" => SourceKind::AuditLogs,
            "content" => SourceKind::ContentLogs,
            other => {
                return Err(err(
                    "stream",
                    format!("`{other}` is not a stream; write \"audit\" or \"content\""),
                ));
            }
        };
        let window = parse_duration(&self.window).map_err(|m| err("window", m))?;
        if window < Duration::from_secs(60) || window.subsec_nanos() != 0 {
            return Err(err(
                "window",
                format!(
                    "`{}` must be whole seconds and at least \"1m\"",
                    self.window
                ),
            ));
        }
        if window > Duration::from_secs(14 * 86_400) {
            return Err(err(
                "window",
                format!(
                    "`{}` is longer than 14 days (Sentinel's longest query period); shorten it",
                    self.window
                ),
            ));
        }
        if self.threshold == 0 {
            return Err(err("threshold", "is 0; write 1 or more".into()));
        }
        let known: Vec<&str> = default_keys(source).iter().map(|(k, _)| *k).collect();
        for key in &self.group_by {
            if !known.contains(&key.as_str()) {
                return Err(err(
                    "group_by",
                    format!(
                        "`{key}` is not a group key of the {} stream; use {}",
                        self.stream,
                        known.join(", ")
                    ),
                ));
            }
        }
        let matcher = validate_match(&self.matcher, source, &self.group_by, "match", &err)?;
        let then = self
            .then
            .as_ref()
            .map(|m| validate_match(m, source, &self.group_by, "then", &err))
            .transpose()?;
        let mut entities = Vec::new();
        for entity in &self.entities {
            let kind = match entity.kind.as_str() {
                "Account" => EntityKind::Account,
                "IP" => EntityKind::Ip,
                "URL" => EntityKind::Url,
                other => {
                    return Err(err(
                        "entities.type",
                        format!("`{other}` is not a supported entity; write Account, IP or URL"),
                    ));
                }
            };
            if !self.group_by.contains(&entity.key) {
                return Err(err(
                    "entities.key",
                    format!(
                        "`{}` is not in group_by; an entity comes from a group key",
                        entity.key
                    ),
                ));
            }
            entities.push((kind, entity.key.clone()));
        }
        Ok(Rule {
            slug: slug.to_string(),
            id: self.id.to_lowercase(),
            name: self.name,
            description: self.description.trim().to_string(),
            severity,
            tactics: self.tactics,
            techniques: self.techniques,
            source,
            group_by: self.group_by,
            window,
            threshold: self.threshold,
            matcher,
            then,
            entities,
            samples: self.samples,
        })
    }
}

fn validate_match(
    raw: &RawMatch,
    source: SourceKind,
    group_by: &[String],
    at: &str,
    err: &dyn Fn(&str, String) -> RuleError,
) -> Result<Match, RuleError> {
    let field = |key: &str, name: &str| {
        Field::parse(source, name).map_err(|m| err(&format!("{at}.{key}"), m))
    };
    if source == SourceKind::ContentLogs && (!raw.events.is_empty() || !raw.categories.is_empty()) {
        return Err(err(
            &format!("{at}.events"),
            "content logs have no event names or categories; match on `actionType` with a `where` condition".into(),
        ));
    }
    let mut conditions = Vec::new();
    for c in &raw.conditions {
        let f = field("where.field", &c.field)?;
        if f.kind() == FieldType::Datetime {
            return Err(err(
                &format!("{at}.where.field"),
                format!(
                    "`{}` is a datetime; conditions compare text fields",
                    c.field
                ),
            ));
        }
        let (values, negate) = match (c.any_of.is_empty(), c.not_in.is_empty()) {
            (false, true) => (&c.any_of, false),
            (true, false) => (&c.not_in, true),
            _ => {
                return Err(err(
                    &format!("{at}.where"),
                    format!(
                        "condition on `{}` needs exactly one of `in` or `not_in`",
                        c.field
                    ),
                ));
            }
        };
        conditions.push(Condition {
            field: f,
            values: values.iter().map(|v| v.to_lowercase()).collect(),
            negate,
        });
    }
    for key in raw.keys.keys() {
        if !group_by.contains(key) {
            return Err(err(
                &format!("{at}.keys.{key}"),
                "is not in group_by; remove it or add it there".into(),
            ));
        }
    }
    let mut keys = BTreeMap::new();
    for key in group_by {
        let column = raw.keys.get(key).map(String::as_str).unwrap_or_else(|| {
            default_keys(source)
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, c)| *c)
                .expect("group_by was checked against the default keys")
        });
        keys.insert(key.clone(), field(&format!("keys.{key}"), column)?);
    }
    for name in &raw.events {
        if name.name.trim().is_empty() || name.name.contains('\'') || name.name.contains('"') {
            return Err(err(
                &format!("{at}.events"),
                format!("`{}` is not an event name", name.name),
            ));
        }
    }
    Ok(Match {
        events: raw
            .events
            .iter()
            .map(|e| (e.name.clone(), e.confirmed))
            .collect(),
        categories: raw.categories.clone(),
        conditions,
        keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
id = "0b6c7a52-3c7e-4f0e-9c55-2f1f0e6f9a01"
name = "n"
description = "d"
severity = "Low"
tactics = ["CredentialAccess"]
techniques = ["T1110"]
stream = "audit"
group_by = ["account"]
window = "10m"
threshold = 3
[match]
events = [{ name = "sign_in_failed", confirmed = true }]
"#;

    fn validate(text: &str) -> Result<Rule, RuleError> {
        let raw: RawRule = toml::from_str(text).expect("parses");
        raw.validate("rules/x.toml", "x")
    }

    #[test]
    fn a_minimal_rule_validates() {
        let rule = validate(MINIMAL).expect("valid");
        assert_eq!(rule.window_secs(), 600);
        assert_eq!(rule.matcher.keys["account"].to_string(), "createdBy_email");
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_fix() {
        let cases = [
            (
                "id = \"0b6c7a52-3c7e-4f0e-9c55-2f1f0e6f9a01\"",
                "id = \"abc\"",
                "`id`",
                "GUID",
            ),
            (
                "severity = \"Low\"",
                "severity = \"Severe\"",
                "`severity`",
                "High",
            ),
            (
                "window = \"10m\"",
                "window = \"10 parsecs\"",
                "`window`",
                "duration",
            ),
            ("threshold = 3", "threshold = 0", "`threshold`", "1 or more"),
            (
                "group_by = [\"account\"]",
                "group_by = [\"device\"]",
                "`group_by`",
                "account, ip, board",
            ),
            (
                "tactics = [\"CredentialAccess\"]",
                "tactics = [\"Credential Access\"]",
                "`tactics`",
                "CredentialAccess",
            ),
            (
                "stream = \"audit\"",
                "stream = \"boards\"",
                "`stream`",
                "\"content\"",
            ),
        ];
        for (from, to, key, fix) in cases {
            let text = MINIMAL.replace(from, to);
            let e = validate(&text).expect_err(to).to_string();
            assert!(e.starts_with("rule rules/x.toml: "), "{e}");
            assert!(e.contains(key) && e.contains(fix), "{to}: {e}");
        }
        let bad_field =
            format!("{MINIMAL}[[match.where]]\nfield = \"createdBy_mail\"\nin = [\"x\"]\n");
        let e = validate(&bad_field)
            .expect_err("unknown column")
            .to_string();
        assert!(
            e.contains("match.where.field") && e.contains("createdBy_email"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = format!("{MINIMAL}treshold = 4\n");
        let e = toml::from_str::<RawRule>(&text).expect_err("typo");
        assert!(e.to_string().contains("treshold"), "{e}");
    }
}
