//! `rules export sentinel`: the pack as Sentinel content.
//! - one YAML file per rule in the Azure-Sentinel repository's analytic-rule format
//!   (`Detections/…`: id, name, description, severity, requiredDataConnectors,
//!   queryFrequency, queryPeriod, triggerOperator, triggerThreshold, tactics,
//!   relevantTechniques, query, entityMappings, version, kind);
//! - one hunting query per rule (the same query over 14 days, no threshold window), in the
//!   repository's hunting-query format;
//! - an ARM template deploying every rule as a `Microsoft.SecurityInsights/alertRules`
//!   resource of kind `Scheduled`, to which other content (parsers) can be added with
//!   [`ArmTemplate::add_resource`].
//!
//! The KQL is the compiler's (`compile::kql`); a scheduled rule runs every window over the
//! last window, so Sentinel's windows slide where the local ones are aligned (see
//! `docs/detections.md`).

use std::path::Path;

use serde_json::{Value, json};

use super::compile;
use super::rule::Rule;

/// The data connectors of the Sentinel "Miro" solution the rules need.
fn required_connector(rule: &Rule) -> (&'static str, &'static str) {
    match rule.source {
        crate::source::SourceKind::AuditLogs => ("MiroAuditLogsDataConnector", "MiroAuditLogs_CL"),
        crate::source::SourceKind::ContentLogs => {
            ("MiroContentLogsDataConnector", "MiroContentLogs_CL")
        }
        crate::source::SourceKind::AiInteractionLogs => {
            unreachable!("the rule loader accepts only the audit and content streams")
        }
    }
}

/// A YAML scalar, always quoted (JSON strings are valid YAML double-quoted scalars).
fn yq(text: &str) -> String {
    Value::String(text.to_string()).to_string()
}

fn yaml_block(text: &str, indent: &str) -> String {
    text.lines()
        .map(|l| format!("{indent}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The rule's KQL, as exported.
pub fn rule_query(rule: &Rule) -> String {
    compile::kql(&compile::plan(rule))
}

/// ISO 8601 duration of a window (`PT10M`, `PT1H`, `P1D`), for ARM.
fn iso_duration(secs: i64) -> String {
    if secs % 86_400 == 0 {
        format!("P{}D", secs / 86_400)
    } else if secs % 3_600 == 0 {
        format!("PT{}H", secs / 3_600)
    } else if secs % 60 == 0 {
        format!("PT{}M", secs / 60)
    } else {
        format!("PT{secs}S")
    }
}

/// The entity mappings: (entity type, identifier, column).
fn entity_mappings(rule: &Rule) -> Vec<(&'static str, &'static str, String)> {
    rule.entities
        .iter()
        .map(|(kind, key)| {
            let (entity, identifier) = kind.sentinel();
            let column = if *kind == super::rule::EntityKind::Url && key == "board" {
                "board_url".to_string()
            } else {
                key.clone()
            };
            (entity, identifier, column)
        })
        .collect()
}

/// The analytic rule, in the Azure-Sentinel repository's YAML format.
pub fn analytic_rule_yaml(rule: &Rule) -> String {
    let (connector, data_type) = required_connector(rule);
    let window = compile::kql_timespan(rule.window_secs());
    let mut y = String::new();
    y.push_str(&format!("id: {}\n", rule.id));
    y.push_str(&format!("name: {}\n", yq(&rule.name)));
    y.push_str("description: |\n");
    y.push_str(&yaml_block(&rule.description, "  "));
    y.push('\n');
    y.push_str(&format!("severity: {}\n", rule.severity.as_str()));
    y.push_str("requiredDataConnectors:\n");
    y.push_str(&format!(
        "  - connectorId: {connector}\n    dataTypes:\n      - {data_type}\n"
    ));
    y.push_str(&format!(
        "queryFrequency: {window}\nqueryPeriod: {window}\n"
    ));
    y.push_str("triggerOperator: gt\ntriggerThreshold: 0\n");
    y.push_str("tactics:\n");
    for t in &rule.tactics {
        y.push_str(&format!("  - {t}\n"));
    }
    y.push_str("relevantTechniques:\n");
    for t in &rule.techniques {
        y.push_str(&format!("  - {t}\n"));
    }
    y.push_str("query: |\n");
    y.push_str(&yaml_block(&rule_query(rule), "  "));
    y.push('\n');
    if !rule.entities.is_empty() {
        y.push_str("entityMappings:\n");
        for (entity, identifier, column) in entity_mappings(rule) {
            y.push_str(&format!(
                "  - entityType: {entity}\n    fieldMappings:\n      - identifier: {identifier}\n        columnName: {column}\n"
            ));
        }
    }
    y.push_str("version: 1.0.0\nkind: Scheduled\n");
    y
}

/// The hunting query: the rule's query over the last 14 days.
pub fn hunting_query_yaml(rule: &Rule) -> String {
    let (connector, data_type) = required_connector(rule);
    let mut y = String::new();
    // A hunting query needs its own stable id: the rule's with the last block marked.
    let id = format!("{}{}", &rule.id[..24], "4e4e4e4e4e4e");
    y.push_str(&format!("id: {id}\n"));
    y.push_str(&format!(
        "name: {}\n",
        yq(&format!("{} (hunting)", rule.name))
    ));
    y.push_str("description: |\n");
    y.push_str(&yaml_block(&rule.description, "  "));
    y.push('\n');
    y.push_str("requiredDataConnectors:\n");
    y.push_str(&format!(
        "  - connectorId: {connector}\n    dataTypes:\n      - {data_type}\n"
    ));
    y.push_str("tactics:\n");
    for t in &rule.tactics {
        y.push_str(&format!("  - {t}\n"));
    }
    y.push_str("relevantTechniques:\n");
    for t in &rule.techniques {
        y.push_str(&format!("  - {t}\n"));
    }
    y.push_str("query: |\n");
    y.push_str(&yaml_block(
        &format!("let lookback = 14d;\n{}", hunting_query(rule)),
        "  ",
    ));
    y.push_str("\nversion: 1.0.0\n");
    y
}

/// The hunting KQL: the rule's query limited to `lookback`.
pub fn hunting_query(rule: &Rule) -> String {
    rule_query(rule).replace(
        rule.source.table(),
        &format!(
            "{} | where TimeGenerated > ago(lookback)",
            rule.source.table()
        ),
    )
}

/// An ARM template for a Log Analytics workspace with Sentinel.
#[derive(Debug, Clone)]
pub struct ArmTemplate {
    resources: Vec<Value>,
}

impl ArmTemplate {
    /// A template holding every rule as a scheduled analytic rule.
    pub fn with_rules(rules: &[Rule]) -> Self {
        let mut template = ArmTemplate {
            resources: Vec::new(),
        };
        for rule in rules {
            template.add_resource(alert_rule_resource(rule));
        }
        template
    }

    /// Adds a resource (e.g. a saved-search parser function) to the same template. It may
    /// use the parameter `workspace` and the variable `workspaceResourceId`.
    pub fn add_resource(&mut self, resource: Value) {
        self.resources.push(resource);
    }

    pub fn to_json(&self) -> Value {
        json!({
            "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
            "contentVersion": "1.0.0.0",
            "parameters": {
                "workspaceName": {
                    "type": "string",
                    "metadata": {"description": "The Log Analytics workspace with Microsoft Sentinel and the Miro solution's tables"}
                }
            },
            "variables": {
                "workspaceResourceId": "[resourceId('Microsoft.OperationalInsights/workspaces', parameters('workspaceName'))]"
            },
            "resources": self.resources,
        })
    }
}

/// One scheduled analytic rule as an ARM resource.
pub fn alert_rule_resource(rule: &Rule) -> Value {
    let window = iso_duration(rule.window_secs());
    let entities: Vec<Value> = entity_mappings(rule)
        .into_iter()
        .map(|(entity, identifier, column)| {
            json!({"entityType": entity, "fieldMappings": [{"identifier": identifier, "columnName": column}]})
        })
        .collect();
    json!({
        "type": "Microsoft.SecurityInsights/alertRules",
        "apiVersion": "2023-02-01",
        "name": rule.id,
        "scope": "[concat('Microsoft.OperationalInsights/workspaces/', parameters('workspaceName'))]",
        "kind": "Scheduled",
        "properties": {
            "displayName": rule.name,
            "description": rule.description,
            "severity": rule.severity.as_str(),
            "enabled": true,
            "query": rule_query(rule),
            "queryFrequency": window,
            "queryPeriod": window,
            "triggerOperator": "GreaterThan",
            "triggerThreshold": 0,
            "suppressionDuration": "PT1H",
            "suppressionEnabled": false,
            "tactics": rule.tactics,
            "techniques": rule.techniques.iter().map(|t| t.split('.').next().unwrap_or(t)).collect::<Vec<_>>(),
            "entityMappings": entities,
        }
    })
}

/// Writes `analytic-rules/*.yaml`, `hunting-queries/*.yaml` and `azuredeploy.json` into
/// `dir`, with `extra` resources added to the template. Returns the files written.
pub fn write_sentinel(
    dir: &Path,
    rules: &[Rule],
    extra: Vec<Value>,
) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut written = Vec::new();
    let analytic = dir.join("analytic-rules");
    let hunting = dir.join("hunting-queries");
    std::fs::create_dir_all(&analytic)?;
    std::fs::create_dir_all(&hunting)?;
    for rule in rules {
        let path = analytic.join(format!("{}.yaml", rule.slug));
        std::fs::write(&path, analytic_rule_yaml(rule))?;
        written.push(path);
        let path = hunting.join(format!("{}.yaml", rule.slug));
        std::fs::write(&path, hunting_query_yaml(rule))?;
        written.push(path);
    }
    let mut template = ArmTemplate::with_rules(rules);
    for resource in extra {
        template.add_resource(resource);
    }
    let path = dir.join("azuredeploy.json");
    let text = serde_json::to_string_pretty(&template.to_json()).map_err(std::io::Error::other)?;
    std::fs::write(&path, text + "\n")?;
    written.push(path);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The top-level keys of an exported YAML file, in order.
    fn top_keys(yaml: &str) -> Vec<String> {
        yaml.lines()
            .filter(|l| !l.starts_with(' ') && !l.starts_with('-') && l.contains(':'))
            .map(|l| l.split(':').next().unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn analytic_rules_have_the_sentinel_repository_keys() {
        let want = [
            "id",
            "name",
            "description",
            "severity",
            "requiredDataConnectors",
            "queryFrequency",
            "queryPeriod",
            "triggerOperator",
            "triggerThreshold",
            "tactics",
            "relevantTechniques",
            "query",
            "entityMappings",
            "version",
            "kind",
        ];
        for rule in crate::detect::pack().expect("pack") {
            let yaml = analytic_rule_yaml(&rule);
            assert_eq!(top_keys(&yaml), want, "{}:\n{yaml}", rule.slug);
            assert!(yaml.contains(&format!("id: {}\n", rule.id)));
            // The query is the compiler's, indented as a YAML block.
            for line in rule_query(&rule).lines() {
                assert!(
                    yaml.contains(&format!("\n  {line}\n")),
                    "{}: {line}",
                    rule.slug
                );
            }
            // Every entity column is a column the query outputs.
            for (_, _, column) in entity_mappings(&rule) {
                assert!(
                    rule_query(&rule).contains(&format!("{column} =")),
                    "{}: {column}",
                    rule.slug
                );
            }
            let hunting = hunting_query_yaml(&rule);
            assert!(hunting.contains("ago(lookback)") && !hunting.contains("queryFrequency"));
        }
    }

    #[test]
    fn the_arm_template_deploys_every_rule_and_takes_more_resources() {
        let rules = crate::detect::pack().expect("pack");
        let mut template = ArmTemplate::with_rules(&rules);
        template.add_resource(json!({"type": "Microsoft.OperationalInsights/workspaces/savedSearches", "name": "parser"}));
        let value = template.to_json();
        let resources = value["resources"].as_array().expect("resources");
        assert_eq!(resources.len(), rules.len() + 1);
        for (rule, resource) in rules.iter().zip(resources) {
            assert_eq!(resource["type"], "Microsoft.SecurityInsights/alertRules");
            assert_eq!(resource["kind"], "Scheduled");
            assert_eq!(resource["name"], rule.id.as_str());
            assert_eq!(resource["properties"]["query"], rule_query(rule).as_str());
            assert!(
                resource["properties"]["queryPeriod"]
                    .as_str()
                    .is_some_and(|p| p.starts_with('P'))
            );
        }
        assert_eq!(resources[rules.len()]["name"], "parser");
    }

    #[test]
    fn written_files_are_one_per_rule_plus_the_template() {
        let dir = tempfile::tempdir().expect("temp dir");
        let rules = crate::detect::pack().expect("pack");
        let written = write_sentinel(dir.path(), &rules, Vec::new()).expect("writes");
        assert_eq!(written.len(), 2 * rules.len() + 1);
        let template: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("azuredeploy.json")).expect("template"),
        )
        .expect("json");
        assert_eq!(
            template["resources"].as_array().map(Vec::len),
            Some(rules.len())
        );
    }
}
