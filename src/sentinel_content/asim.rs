//! ASIM parsers for Miro, as Log Analytics functions (saved searches) deployed by the ARM
//! template, so Sentinel's normalized content (`imAuthentication`, `imAuditEvent`)
//! covers Miro once the parsers are added to the unifying parsers:
//!
//! - `vimAuthenticationMiro` (filtering) and `ASimAuthenticationMiro` (parameterless):
//!   sign-ins and sign-outs ([`super::vocab`]) as the Authentication schema: `EventType`
//!   Logon/Logoff, `EventResult`, `TargetUsername`, `SrcIpAddr`, `LogonMethod` from
//!   `details.authType` (Miro's value as is), and the mandatory common fields.
//! - `vimAuditEventMiro` and `ASimAuditEventMiro`: events of the administrative
//!   categories as the Audit Event schema: `Operation` (the Miro event name), `Object`,
//!   `ObjectType`, `OldValue`/`NewValue` where the details carry them, `ActorUsername`.
//!
//! Every parser's KQL passes `kql_check` with its declared parameters (tested).

use serde_json::{Value, json};

use super::kql_check::KqlType;
use super::kql_details_coalesce;
use super::vocab::{
    ADMIN_CATEGORIES, AUTH_METHOD_KEY, NEW_VALUE_KEYS, OLD_VALUE_KEYS, SIGN_IN_FAILED,
    SIGN_IN_SUCCEEDED, SIGN_OUT, names,
};

/// One parser function.
#[derive(Debug, Clone)]
pub struct Parser {
    /// The function name (ASIM naming: `vim<Schema>Miro`, `ASim<Schema>Miro`).
    pub alias: &'static str,
    pub display_name: &'static str,
    /// `(name, KQL type, default)`.
    pub parameters: Vec<(&'static str, &'static str, &'static str)>,
    pub query: String,
}

impl Parser {
    /// `name:type=default, ...` as a saved search declares them.
    pub fn parameter_declaration(&self) -> String {
        self.parameters
            .iter()
            .map(|(n, t, d)| format!("{n}:{t}={d}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The parameters with the types the KQL checker tracks.
    pub fn checker_parameters(&self) -> Vec<(&'static str, KqlType)> {
        self.parameters
            .iter()
            .map(|(n, t, _)| {
                let ty = match *t {
                    "datetime" => KqlType::DateTime,
                    "string" => KqlType::String,
                    "dynamic" => KqlType::Dynamic,
                    _ => KqlType::Unknown,
                };
                (*n, ty)
            })
            .collect()
    }
}

fn kql_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("({})", quoted.join(", "))
}

const DISABLED: (&str, &str, &str) = ("disabled", "bool", "False");
const START: (&str, &str, &str) = ("starttime", "datetime", "datetime(null)");
const END: (&str, &str, &str) = ("endtime", "datetime", "datetime(null)");

/// The actor or user as ASIM wants it: the email (a UPN) for people, else the name.
const USERNAME: &str = "iff(isnotempty(createdBy_email), createdBy_email, createdBy_name)";
const USERNAME_TYPE: &str = "iff(isnotempty(createdBy_email), \"UPN\", \"Simple\")";
const USER_TYPE: &str = "case(createdBy_type == \"user\", \"Regular\", createdBy_type == \"application\", \"Application\", isempty(createdBy_type), \"\", \"System\")";

const COMMON: &str = "EventCount = toint(1), EventStartTime = TimeGenerated, EventEndTime = TimeGenerated, EventVendor = \"Miro\", EventProduct = \"Miro\", EventOriginalType = event, EventOriginalUid = id, Dvc = \"Miro\", TargetAppName = \"Miro\", TargetAppType = \"SaaS application\", SrcIpAddr = context_ip, IpAddr = context_ip";

fn time_filter() -> &'static str {
    "| where (isnull(starttime) or TimeGenerated >= starttime) and (isnull(endtime) or TimeGenerated <= endtime)\n"
}

fn authentication(filtering: bool) -> Parser {
    let ok = names(SIGN_IN_SUCCEEDED);
    let failed = names(SIGN_IN_FAILED);
    let out = names(SIGN_OUT);
    let all: Vec<&str> = ok.iter().chain(&failed).chain(&out).copied().collect();
    let mut q = String::from("MiroAuditLogs_CL\n| where not(disabled)\n");
    if filtering {
        q.push_str(time_filter());
    }
    q.push_str(&format!(
        "| where event in {all}\n\
         | extend {COMMON}, EventSchema = \"Authentication\", EventSchemaVersion = \"0.1.3\"\n\
         | extend EventType = iff(event in {out}, \"Logoff\", \"Logon\"), EventResult = iff(event in {failed}, \"Failure\", \"Success\")\n\
         | extend TargetUsername = {USERNAME}, TargetUsernameType = {USERNAME_TYPE}, TargetUserType = {USER_TYPE}, User = {USERNAME}\n\
         | extend LogonMethod = tostring(details.{AUTH_METHOD_KEY})",
        all = kql_list(&all),
        out = kql_list(&out),
        failed = kql_list(&failed),
    ));
    let mut parameters = vec![DISABLED];
    if filtering {
        q.push_str(
            "\n| where array_length(username_has_any) == 0 or TargetUsername has_any (username_has_any)\n\
             | where array_length(targetappname_has_any) == 0 or TargetAppName has_any (targetappname_has_any)\n\
             | where array_length(srcipaddr_has_any_prefix) == 0 or has_any_ipv4_prefix(SrcIpAddr, srcipaddr_has_any_prefix)\n\
             | where array_length(srchostname_has_any) == 0\n\
             | where array_length(eventtype_in) == 0 or EventType in (eventtype_in)\n\
             | where array_length(eventresultdetails_in) == 0\n\
             | where eventresult == \"*\" or EventResult == eventresult",
        );
        parameters = vec![
            START,
            END,
            ("username_has_any", "dynamic", "dynamic([])"),
            ("targetappname_has_any", "dynamic", "dynamic([])"),
            ("srcipaddr_has_any_prefix", "dynamic", "dynamic([])"),
            ("srchostname_has_any", "dynamic", "dynamic([])"),
            ("eventtype_in", "dynamic", "dynamic([])"),
            ("eventresultdetails_in", "dynamic", "dynamic([])"),
            ("eventresult", "string", "'*'"),
            DISABLED,
        ];
    }
    Parser {
        alias: if filtering {
            "vimAuthenticationMiro"
        } else {
            "ASimAuthenticationMiro"
        },
        display_name: if filtering {
            "Authentication ASIM filtering parser for Miro"
        } else {
            "Authentication ASIM parser for Miro"
        },
        parameters,
        query: q,
    }
}

fn audit_event(filtering: bool) -> Parser {
    let mut q = String::from("MiroAuditLogs_CL\n| where not(disabled)\n");
    if filtering {
        q.push_str(time_filter());
    }
    q.push_str(&format!(
        "| where category in {cats}\n\
         | extend {COMMON}, EventSchema = \"AuditEvent\", EventSchemaVersion = \"0.1\", EventResult = \"Success\"\n\
         | extend EventType = case(event endswith \"_created\" or event endswith \"_invited\" or event endswith \"_generated\", \"Create\", event endswith \"_deleted\", \"Delete\", event endswith \"_enabled\" or event endswith \"_reactivated\", \"Enable\", event endswith \"_disabled\" or event endswith \"_deactivated\", \"Disable\", \"Set\")\n\
         | extend Operation = event, Object = iff(isnotempty(object_name), object_name, object_id), ObjectType = iff(category in (\"users\", \"teams\"), \"Other\", \"Configuration Atom\")\n\
         | extend OldValue = {old}, NewValue = {new}, ValueType = \"Other\"\n\
         | extend ActorUsername = {USERNAME}, ActorUsernameType = {USERNAME_TYPE}, ActorUserType = {USER_TYPE}, User = {USERNAME}",
        cats = kql_list(ADMIN_CATEGORIES),
        old = kql_details_coalesce(OLD_VALUE_KEYS),
        new = kql_details_coalesce(NEW_VALUE_KEYS),
    ));
    let mut parameters = vec![DISABLED];
    if filtering {
        q.push_str(
            "\n| where array_length(srcipaddr_has_any_prefix) == 0 or has_any_ipv4_prefix(SrcIpAddr, srcipaddr_has_any_prefix)\n\
             | where array_length(eventtype_in) == 0 or EventType in (eventtype_in)\n\
             | where eventresult == \"*\" or EventResult == eventresult\n\
             | where array_length(actorusername_has_any) == 0 or ActorUsername has_any (actorusername_has_any)\n\
             | where array_length(operation_has_any) == 0 or Operation has_any (operation_has_any)\n\
             | where array_length(object_has_any) == 0 or Object has_any (object_has_any)\n\
             | where array_length(newvalue_has_any) == 0 or NewValue has_any (newvalue_has_any)",
        );
        parameters = vec![
            START,
            END,
            ("srcipaddr_has_any_prefix", "dynamic", "dynamic([])"),
            ("eventtype_in", "dynamic", "dynamic([])"),
            ("eventresult", "string", "'*'"),
            ("actorusername_has_any", "dynamic", "dynamic([])"),
            ("operation_has_any", "dynamic", "dynamic([])"),
            ("object_has_any", "dynamic", "dynamic([])"),
            ("newvalue_has_any", "dynamic", "dynamic([])"),
            DISABLED,
        ];
    }
    Parser {
        alias: if filtering {
            "vimAuditEventMiro"
        } else {
            "ASimAuditEventMiro"
        },
        display_name: if filtering {
            "Audit Event ASIM filtering parser for Miro"
        } else {
            "Audit Event ASIM parser for Miro"
        },
        parameters,
        query: q,
    }
}

/// The four parsers.
pub fn parsers() -> Vec<Parser> {
    vec![
        authentication(true),
        authentication(false),
        audit_event(true),
        audit_event(false),
    ]
}

/// The parsers as ARM resources (workspace functions under the category `ASIM`), in a
/// template with the `workspaceName` parameter. `with_tables`: the template also deploys
/// the tables (`template azure`), so each function waits for them; without it (`rules
/// export sentinel`), the tables must already exist in the workspace.
pub fn arm_resources(with_tables: bool) -> Vec<Value> {
    parsers()
        .into_iter()
        .map(|p| {
            let mut resource = json!({
                "type": "Microsoft.OperationalInsights/workspaces/savedSearches",
                "apiVersion": "2020-08-01",
                "name": format!("[concat(parameters('workspaceName'), '/{}')]", p.alias),
                "dependsOn": [
                    "[resourceId('Microsoft.OperationalInsights/workspaces/tables', parameters('workspaceName'), 'MiroAuditLogs_CL')]",
                ],
                "properties": {
                    "etag": "*",
                    "displayName": p.display_name,
                    "category": "ASIM",
                    "functionAlias": p.alias,
                    "functionParameters": p.parameter_declaration(),
                    "query": p.query,
                    "version": 2,
                },
            });
            if !with_tables {
                resource
                    .as_object_mut()
                    .expect("a resource is an object")
                    .remove("dependsOn");
            }
            resource
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sentinel_content::kql_check::check;

    #[test]
    fn every_parser_names_only_contract_columns_with_the_right_types() {
        for p in parsers() {
            check(&p.query, &p.checker_parameters())
                .unwrap_or_else(|e| panic!("{}: {e:?}\n{}", p.alias, p.query));
        }
    }

    /// The ASIM fields the schemas make mandatory (common and per schema) are all set.
    #[test]
    fn parsers_set_the_mandatory_asim_fields() {
        let common = [
            "EventCount",
            "EventStartTime",
            "EventEndTime",
            "EventType",
            "EventResult",
            "EventProduct",
            "EventVendor",
            "EventSchema",
            "EventSchemaVersion",
            "Dvc",
        ];
        for p in parsers() {
            let specific: &[&str] = if p.alias.contains("Authentication") {
                &["TargetUsername", "SrcIpAddr", "LogonMethod", "User"]
            } else {
                &[
                    "Operation",
                    "Object",
                    "ObjectType",
                    "OldValue",
                    "NewValue",
                    "ActorUsername",
                ]
            };
            for field in common.iter().chain(specific) {
                assert!(
                    p.query.contains(&format!(" {field} = ")),
                    "{}: {field}\n{}",
                    p.alias,
                    p.query
                );
            }
        }
    }

    #[test]
    fn filtering_parsers_declare_what_they_use_and_parameterless_ones_only_disabled() {
        for p in parsers() {
            if p.alias.starts_with("ASim") {
                assert_eq!(p.parameter_declaration(), "disabled:bool=False");
            } else {
                for (name, _, _) in &p.parameters {
                    assert!(p.query.contains(name), "{}: {name} unused", p.alias);
                }
            }
        }
    }

    #[test]
    fn the_sign_in_vocabulary_maps_to_logon_logoff_and_results() {
        let q = &authentication(false).query;
        assert!(
            q.contains("EventType = iff(event in (\"sign_out_succeeded\"), \"Logoff\", \"Logon\")")
        );
        assert!(q.contains(
            "EventResult = iff(event in (\"sign_in_failed\"), \"Failure\", \"Success\")"
        ));
        assert!(q.contains("LogonMethod = tostring(details.authType)"));
    }
}
