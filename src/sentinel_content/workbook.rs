//! The Sentinel workbook: the report's views (`super::views`) as an Azure Monitor
//! workbook over `MiroAuditLogs_CL` and `MiroContentLogs_CL`, plus the alerts Sentinel
//! raised from mirotrail's analytic rules (`SecurityAlert`, rule names starting with
//! [`ALERT_NAME_PREFIX`]). `mirotrail template workbook` prints the workbook's content
//! (what the workbook editor's "Advanced editor" shows); the ARM template deploys it as a
//! `Microsoft.Insights/workbooks` resource whose `serializedData` is that JSON as a string.

use serde_json::{Value, json};

use super::kql_check::SECURITY_ALERT;
use super::{View, ViewShape, views};

/// Analytic rules of mirotrail's rule pack are named `Miro: ...`; the alert view reads
/// the alerts of rules named so.
pub const ALERT_NAME_PREFIX: &str = "Miro: ";

/// The workbook's display name.
pub const WORKBOOK_NAME: &str = "Miro activity (mirotrail)";

/// The KQL of the alert view.
pub fn alerts_kql() -> String {
    format!(
        "{SECURITY_ALERT}\n| where AlertName startswith \"{ALERT_NAME_PREFIX}\"\n| summarize Alerts = count(), LastSeen = max(TimeGenerated) by AlertName, AlertSeverity\n| sort by Alerts desc"
    )
}

/// Every KQL query in the workbook, with its item name.
pub fn queries() -> Vec<(String, String)> {
    views()
        .into_iter()
        .map(|v| (v.id.to_string(), v.kql))
        .chain([("alerts".to_string(), alerts_kql())])
        .collect()
}

fn query_item(name: &str, title: &str, kql: &str, visualization: &str, half: bool) -> Value {
    let mut item = json!({
        "type": 3,
        "content": {
            "version": "KqlItem/1.0",
            "query": kql,
            "size": 0,
            "title": title,
            "timeContextFromParameter": "TimeRange",
            "queryType": 0,
            "resourceType": "microsoft.operationalinsights/workspaces",
            "visualization": visualization,
        },
        "name": name,
    });
    if half {
        item["customWidth"] = json!("50");
    }
    item
}

fn view_item(v: &View) -> Value {
    let (visualization, half) = match v.shape {
        ViewShape::TimeSeries => ("timechart", false),
        ViewShape::Bars => ("barchart", true),
        ViewShape::Table => ("table", false),
    };
    query_item(v.id, v.title, &v.kql, visualization, half)
}

/// The workbook content (Notebook/1.0).
pub fn workbook() -> Value {
    let mut items = vec![
        json!({
            "type": 1,
            "content": {"json": "## Miro activity\nAudit and board content logs collected by mirotrail into the Sentinel \"Miro\" tables. The same views as `mirotrail report`, for the chosen time range."},
            "name": "intro",
        }),
        json!({
            "type": 9,
            "content": {
                "version": "KqlParameterItem/1.0",
                "parameters": [{
                    "id": "8d1c3b0e-4f2a-4c6e-9a7b-2e5d1f0c3a91",
                    "version": "KqlParameterItem/1.0",
                    "name": "TimeRange",
                    "label": "Time range",
                    "type": 4,
                    "isRequired": true,
                    "value": {"durationMs": 604_800_000},
                    "typeSettings": {
                        "selectableValues": [
                            {"durationMs": 86_400_000},
                            {"durationMs": 604_800_000},
                            {"durationMs": 2_592_000_000_u64},
                            {"durationMs": 7_776_000_000_u64},
                        ],
                    },
                }],
                "style": "pills",
                "queryType": 0,
                "resourceType": "microsoft.operationalinsights/workspaces",
            },
            "name": "parameters",
        }),
    ];
    items.extend(views().iter().map(view_item));
    items.push(query_item(
        "alerts",
        "Alerts from mirotrail's analytic rules",
        &alerts_kql(),
        "table",
        false,
    ));
    json!({
        "version": "Notebook/1.0",
        "items": items,
        "fallbackResourceIds": [],
        "$schema": "https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json",
    })
}

/// The workbook as an ARM resource in the workspace's resource group (shown under
/// Sentinel > Workbooks).
pub fn arm_resource() -> Value {
    let serialized = serde_json::to_string(&workbook()).expect("a workbook serializes");
    json!({
        "type": "Microsoft.Insights/workbooks",
        "apiVersion": "2022-04-01",
        "name": "[guid(resourceGroup().id, parameters('workspaceName'), 'mirotrail-workbook')]",
        "location": "[parameters('location')]",
        "kind": "shared",
        "properties": {
            "displayName": WORKBOOK_NAME,
            "serializedData": serialized,
            "version": "1.0",
            "sourceId": "[resourceId('Microsoft.OperationalInsights/workspaces', parameters('workspaceName'))]",
            "category": "sentinel",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sentinel_content::kql_check::check;

    #[test]
    fn every_workbook_query_names_only_contract_columns_with_the_right_types() {
        let mut n = 0;
        for item in workbook()["items"].as_array().unwrap() {
            if item["type"] == 3 {
                let kql = item["content"]["query"].as_str().unwrap();
                check(kql, &[]).unwrap_or_else(|e| panic!("{}: {e:?}\n{kql}", item["name"]));
                n += 1;
            }
        }
        assert_eq!(
            n,
            queries().len(),
            "every view and the alerts are in the workbook"
        );
    }

    #[test]
    fn the_workbook_has_every_view_of_the_report_and_the_alerts() {
        let w = workbook();
        let names: Vec<&str> = w["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["name"].as_str())
            .collect();
        for v in views() {
            assert!(names.contains(&v.id), "{}", v.id);
        }
        assert!(names.contains(&"alerts"));
        assert_eq!(w["version"], "Notebook/1.0");
    }

    #[test]
    fn the_arm_resource_carries_the_workbook_as_a_string() {
        let r = arm_resource();
        assert_eq!(r["type"], "Microsoft.Insights/workbooks");
        let data: Value =
            serde_json::from_str(r["properties"]["serializedData"].as_str().unwrap()).unwrap();
        assert_eq!(data, workbook());
    }
}
