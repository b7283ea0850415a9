//! `mirotrail template azure`: an ARM template deploying what the Sentinel "Miro"
//! solution would (the two tables, a data collection endpoint and the two DCRs with their
//! stream declarations and transformations), plus mirotrail's own third table and DCR for
//! AI interaction logs (`MiroAiInteractionLogs_CL`, not part of the solution), generated
//! from the same column lists the local store uses, so they can not drift apart; plus the
//! Sentinel content over those tables (`crate::sentinel_content`: the ASIM parsers and the
//! workbook).

use serde_json::{Value, json};

use crate::source::SourceKind;
use crate::store::transform::{DATETIME_COLUMNS, DYNAMIC_COLUMNS, columns, stream_columns};

/// The type of a stream declaration column (contract section 2).
pub fn stream_column_type(column: &str) -> &'static str {
    match column {
        "createdBy" | "context" | "details" | "object" | "actor" | "state" | "relationships" => {
            "dynamic"
        }
        _ => "string",
    }
}

/// The type of a table column (contract section 4).
pub fn table_column_type(column: &str) -> &'static str {
    if DATETIME_COLUMNS.contains(&column) {
        "datetime"
    } else if DYNAMIC_COLUMNS.contains(&column) {
        "dynamic"
    } else {
        "string"
    }
}

/// The KQL expression of a table column over the stream record, `None` when the stream
/// column passes through unchanged.
fn column_expression(source: SourceKind, column: &str) -> Option<String> {
    // When the event happened (for AI interaction logs not `storedAt`, the API's window).
    let time = match source {
        SourceKind::AuditLogs | SourceKind::AiInteractionLogs => "createdAt",
        SourceKind::ContentLogs => "actionTime",
    };
    if column == "TimeGenerated" {
        return Some(format!("todatetime({time})"));
    }
    if DATETIME_COLUMNS.contains(&column) && stream_columns(source).contains(&column) {
        return Some(format!("todatetime({column})"));
    }
    if source == SourceKind::AuditLogs && column == "logType" {
        return Some("tostring(['type'])".into());
    }
    if stream_columns(source).contains(&column) {
        return None;
    }
    // `createdBy_email` is `createdBy.email`, `context_team_id` is `context.team.id`.
    Some(format!("tostring({})", column.replace('_', ".")))
}

/// The DCR's `transformKql` for a source (contract section 3).
pub fn transform_kql(source: SourceKind) -> String {
    let extends: Vec<String> = columns(source)
        .iter()
        .filter_map(|c| column_expression(source, c).map(|e| format!("{c} = {e}")))
        .collect();
    format!(
        "source | extend {} | project {}",
        extends.join(", "),
        columns(source).join(", ")
    )
}

fn column_list(names: &[&str], ty: fn(&str) -> &'static str) -> Value {
    Value::Array(
        names
            .iter()
            .map(|c| json!({"name": c, "type": ty(c)}))
            .collect(),
    )
}

fn dcr_param(source: SourceKind) -> &'static str {
    match source {
        SourceKind::AuditLogs => "auditLogsDcrName",
        SourceKind::ContentLogs => "contentLogsDcrName",
        SourceKind::AiInteractionLogs => "aiInteractionLogsDcrName",
    }
}

/// The ARM template (deploy with `az deployment group create`).
pub fn arm_template() -> Value {
    let workspace_id =
        "[resourceId('Microsoft.OperationalInsights/workspaces', parameters('workspaceName'))]";
    let dce_id = "[resourceId('Microsoft.Insights/dataCollectionEndpoints', parameters('dataCollectionEndpointName'))]";
    let mut resources = Vec::new();
    for source in SourceKind::ALL {
        resources.push(json!({
            "type": "Microsoft.OperationalInsights/workspaces/tables",
            "apiVersion": "2022-10-01",
            "name": format!("[concat(parameters('workspaceName'), '/{}')]", source.table()),
            "properties": {
                "schema": {
                    "name": source.table(),
                    "columns": column_list(columns(source), table_column_type),
                },
            },
        }));
    }
    resources.push(json!({
        "type": "Microsoft.Insights/dataCollectionEndpoints",
        "apiVersion": "2022-06-01",
        "name": "[parameters('dataCollectionEndpointName')]",
        "location": "[parameters('location')]",
        "properties": {"networkAcls": {"publicNetworkAccess": "Enabled"}},
    }));
    for source in SourceKind::ALL {
        resources.push(json!({
            "type": "Microsoft.Insights/dataCollectionRules",
            "apiVersion": "2022-06-01",
            "name": format!("[parameters('{}')]", dcr_param(source)),
            "location": "[parameters('location')]",
            "dependsOn": [
                dce_id,
                format!("[resourceId('Microsoft.OperationalInsights/workspaces/tables', parameters('workspaceName'), '{}')]", source.table()),
            ],
            "properties": {
                "dataCollectionEndpointId": dce_id,
                "streamDeclarations": {
                    source.stream(): {"columns": column_list(stream_columns(source), stream_column_type)},
                },
                "destinations": {
                    "logAnalytics": [{"workspaceResourceId": workspace_id, "name": "workspace"}],
                },
                "dataFlows": [{
                    "streams": [source.stream()],
                    "destinations": ["workspace"],
                    "transformKql": transform_kql(source),
                    "outputStream": source.stream(),
                }],
            },
        }));
    }
    // Sentinel content over the tables: the ASIM parsers and the workbook.
    resources.extend(crate::sentinel_content::asim::arm_resources(true));
    resources.push(crate::sentinel_content::workbook::arm_resource());
    let dcr_id = |source: SourceKind| {
        format!(
            "[reference(resourceId('Microsoft.Insights/dataCollectionRules', parameters('{}'))).immutableId]",
            dcr_param(source)
        )
    };
    json!({
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "metadata": {"description": "mirotrail: the Sentinel \"Miro\" tables, a data collection endpoint and the two DCRs (streams Custom-MiroAuditLogs_CL, Custom-MiroContentLogs_CL), mirotrail's own table and DCR for AI interaction logs (stream Custom-MiroAiInteractionLogs_CL; not part of Sentinel's Miro solution), the ASIM parsers (vimAuthenticationMiro, ASimAuthenticationMiro, vimAuditEventMiro, ASimAuditEventMiro) and the Miro workbook."},
        "parameters": {
            "workspaceName": {"type": "string", "metadata": {"description": "The Log Analytics workspace (of Microsoft Sentinel) in this resource group."}},
            "location": {"type": "string", "defaultValue": "[resourceGroup().location]", "metadata": {"description": "Region of the DCE and DCRs: the workspace's region."}},
            "dataCollectionEndpointName": {"type": "string", "defaultValue": "mirotrail-dce"},
            "auditLogsDcrName": {"type": "string", "defaultValue": "mirotrail-miro-audit-logs"},
            "contentLogsDcrName": {"type": "string", "defaultValue": "mirotrail-miro-content-logs"},
            "aiInteractionLogsDcrName": {"type": "string", "defaultValue": "mirotrail-miro-ai-interaction-logs"},
        },
        "resources": resources,
        "outputs": {
            "endpoint": {"type": "string", "value": "[reference(resourceId('Microsoft.Insights/dataCollectionEndpoints', parameters('dataCollectionEndpointName'))).logsIngestion.endpoint]"},
            "audit_logs_dcr": {"type": "string", "value": dcr_id(SourceKind::AuditLogs)},
            "content_logs_dcr": {"type": "string", "value": dcr_id(SourceKind::ContentLogs)},
            "ai_interaction_logs_dcr": {"type": "string", "value": dcr_id(SourceKind::AiInteractionLogs)},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_and_types(columns: &Value) -> Vec<(String, String)> {
        columns
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["type"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// The contract (`docs/sentinel-contract.md`), written out independently.
    fn contract_stream(source: SourceKind) -> Vec<(String, String)> {
        pairs(match source {
            SourceKind::AuditLogs => &[
                ("id", "string"),
                ("event", "string"),
                ("category", "string"),
                ("type", "string"),
                ("createdAt", "string"),
                ("createdBy", "dynamic"),
                ("context", "dynamic"),
                ("details", "dynamic"),
                ("object", "dynamic"),
            ],
            SourceKind::ContentLogs => &[
                ("id", "string"),
                ("contentId", "string"),
                ("actionType", "string"),
                ("actionTime", "string"),
                ("actor", "dynamic"),
                ("itemType", "string"),
                ("itemId", "string"),
                ("state", "dynamic"),
                ("relationships", "dynamic"),
            ],
            SourceKind::AiInteractionLogs => &[
                ("id", "string"),
                ("createdAt", "string"),
                ("storedAt", "string"),
                ("sessionId", "string"),
                ("messageId", "string"),
                ("aiFeatureName", "string"),
                ("logType", "string"),
                ("object", "dynamic"),
                ("actor", "dynamic"),
                ("details", "dynamic"),
            ],
        })
    }

    fn contract_table(source: SourceKind) -> Vec<(String, String)> {
        pairs(match source {
            SourceKind::AuditLogs => &[
                ("TimeGenerated", "datetime"),
                ("id", "string"),
                ("createdAt", "datetime"),
                ("event", "string"),
                ("category", "string"),
                ("logType", "string"),
                ("createdBy_email", "string"),
                ("createdBy_id", "string"),
                ("createdBy_name", "string"),
                ("createdBy_type", "string"),
                ("object_id", "string"),
                ("object_name", "string"),
                ("context_ip", "string"),
                ("context_team_id", "string"),
                ("context_team_name", "string"),
                ("context_team_type", "string"),
                ("context_organization_id", "string"),
                ("context_organization_name", "string"),
                ("context_organization_type", "string"),
                ("details", "dynamic"),
            ],
            SourceKind::ContentLogs => &[
                ("TimeGenerated", "datetime"),
                ("id", "string"),
                ("actionTime", "datetime"),
                ("actionType", "string"),
                ("actor_id", "string"),
                ("actor_email", "string"),
                ("actor_name", "string"),
                ("contentId", "string"),
                ("itemId", "string"),
                ("itemType", "string"),
                ("relationships", "dynamic"),
                ("state", "dynamic"),
            ],
            SourceKind::AiInteractionLogs => &[
                ("TimeGenerated", "datetime"),
                ("id", "string"),
                ("createdAt", "datetime"),
                ("storedAt", "datetime"),
                ("sessionId", "string"),
                ("messageId", "string"),
                ("aiFeatureName", "string"),
                ("logType", "string"),
                ("object_id", "string"),
                ("object_type", "string"),
                ("actor_id", "string"),
                ("actor_email", "string"),
                ("actor_name", "string"),
                ("details", "dynamic"),
            ],
        })
    }

    fn resource<'a>(t: &'a Value, ty: &str, name_has: &str) -> &'a Value {
        t["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == ty && r["name"].as_str().unwrap().contains(name_has))
            .unwrap_or_else(|| panic!("no {ty} {name_has}"))
    }

    #[test]
    fn the_template_matches_the_contract_column_for_column() {
        let t = arm_template();
        assert!(t["parameters"]["workspaceName"].is_object());
        assert!(t["parameters"]["location"].is_object());
        resource(
            &t,
            "Microsoft.Insights/dataCollectionEndpoints",
            "dataCollectionEndpointName",
        );
        for source in SourceKind::ALL {
            let table = resource(
                &t,
                "Microsoft.OperationalInsights/workspaces/tables",
                source.table(),
            );
            assert_eq!(table["properties"]["schema"]["name"], source.table());
            assert_eq!(
                names_and_types(&table["properties"]["schema"]["columns"]),
                contract_table(source),
                "{source} table"
            );
            let param = match source {
                SourceKind::AuditLogs => "auditLogsDcrName",
                SourceKind::ContentLogs => "contentLogsDcrName",
                SourceKind::AiInteractionLogs => "aiInteractionLogsDcrName",
            };
            let dcr = &resource(&t, "Microsoft.Insights/dataCollectionRules", param)["properties"];
            assert!(
                dcr["dataCollectionEndpointId"]
                    .as_str()
                    .unwrap()
                    .contains("dataCollectionEndpoints")
            );
            assert_eq!(
                names_and_types(&dcr["streamDeclarations"][source.stream()]["columns"]),
                contract_stream(source),
                "{source} stream"
            );
            assert!(
                dcr["destinations"]["logAnalytics"][0]["workspaceResourceId"]
                    .as_str()
                    .unwrap()
                    .contains("parameters('workspaceName')")
            );
            let flow = &dcr["dataFlows"][0];
            assert_eq!(flow["streams"][0], source.stream());
            assert_eq!(flow["outputStream"], source.stream());
            assert_eq!(flow["destinations"][0], "workspace");
            let kql = flow["transformKql"].as_str().unwrap();
            let projected: Vec<String> = kql
                .rsplit_once("| project ")
                .unwrap()
                .1
                .split(',')
                .map(|c| c.trim().to_string())
                .collect();
            let table_columns: Vec<String> =
                contract_table(source).into_iter().map(|(c, _)| c).collect();
            assert_eq!(
                projected, table_columns,
                "{source} transform projects exactly the table"
            );
        }
    }

    #[test]
    fn the_transform_follows_the_contract() {
        let kql = transform_kql(SourceKind::AuditLogs);
        for part in [
            "TimeGenerated = todatetime(createdAt)",
            "createdAt = todatetime(createdAt)",
            "logType = tostring(['type'])",
            "createdBy_email = tostring(createdBy.email)",
            "object_name = tostring(object.name)",
            "context_ip = tostring(context.ip)",
            "context_team_type = tostring(context.team.type)",
            "context_organization_name = tostring(context.organization.name)",
        ] {
            assert!(kql.contains(part), "{part}: {kql}");
        }
        assert!(!kql.contains("details ="), "{kql}");
        let kql = transform_kql(SourceKind::ContentLogs);
        for part in [
            "TimeGenerated = todatetime(actionTime)",
            "actionTime = todatetime(actionTime)",
            "actor_id = tostring(actor.id)",
            "actor_email = tostring(actor.email)",
            "actor_name = tostring(actor.name)",
        ] {
            assert!(kql.contains(part), "{part}: {kql}");
        }
        let kql = transform_kql(SourceKind::AiInteractionLogs);
        for part in [
            "TimeGenerated = todatetime(createdAt)",
            "createdAt = todatetime(createdAt)",
            "storedAt = todatetime(storedAt)",
            "object_id = tostring(object.id)",
            "object_type = tostring(object.type)",
            "actor_email = tostring(actor.email)",
        ] {
            assert!(kql.contains(part), "{part}: {kql}");
        }
        // Passed through as sent: the stream already has them under the table's names.
        for column in ["logType", "sessionId", "aiFeatureName", "details"] {
            assert!(!kql.contains(&format!("{column} =")), "{column}: {kql}");
        }
    }
}
