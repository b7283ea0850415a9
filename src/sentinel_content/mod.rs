//! The views of Miro activity that mirotrail ships for people to look at, and the Sentinel
//! content built from them: the workbook (`workbook.rs`), the ASIM parsers (`asim.rs`),
//! and the column checker that every KQL query here passes (`kql_check.rs`).
//!
//! Invariants:
//! - One list of views ([`views`]): each has its SQL over the local store (read by
//!   `report`) and its KQL over the Sentinel tables (read by the workbook) side by side,
//!   built from the same event vocabulary ([`vocab`]), so the HTML report and the workbook
//!   show the same things.
//! - Every KQL query emitted here names only columns of the contract's tables
//!   (`docs/sentinel-contract.md`) with the types its use needs (`kql_check.rs`, tested).
//! - Event names Miro does not publish are marked unconfirmed in [`vocab`]; nothing else
//!   in the views hard-codes an event name.

pub mod asim;
pub mod kql_check;
pub mod vocab;
pub mod workbook;

use vocab::{
    ADMIN_CATEGORIES, AUTH_METHOD_KEY, NEW_VALUE_KEYS, OLD_VALUE_KEYS, SIGN_IN_FAILED,
    SIGN_IN_SUCCEEDED, names,
};

/// How a view is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewShape {
    /// Rows `(bucket, series, count)`: counts over time, stacked by series.
    TimeSeries,
    /// Rows `(label, count)`, largest first: a bar per label.
    Bars,
    /// Any columns, shown as a table.
    Table,
}

/// One view: the same question asked of the local store (SQL) and of Sentinel (KQL).
#[derive(Debug, Clone)]
pub struct View {
    /// Stable id, used as the HTML element id and the workbook item name.
    pub id: &'static str,
    pub title: &'static str,
    /// What the view shows and how to read it.
    pub note: &'static str,
    pub shape: ViewShape,
    /// SQLite over the store; `?1` is the start of the period (ISO 8601 UTC text).
    pub sql: String,
    /// KQL over the Sentinel tables (the workbook's time range scopes it).
    pub kql: String,
}

/// The largest number of labels in a top-N view.
pub const TOP_N: usize = 10;
/// The largest number of rows in a table view.
pub const TABLE_ROWS: usize = 30;

/// `('a', 'b')` for SQL and `("a", "b")` for KQL.
fn sql_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| format!("'{}'", s.replace('\'', "''")))
        .collect();
    format!("({})", quoted.join(", "))
}

fn kql_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("({})", quoted.join(", "))
}

/// SQL: the first non-empty of `details.<key>` for `keys`, as text.
fn sql_details_coalesce(keys: &[&str]) -> String {
    let parts: Vec<String> = keys
        .iter()
        .map(|k| format!("NULLIF(CAST(json_extract(details, '$.{k}') AS TEXT), '')"))
        .collect();
    format!("COALESCE({}, '')", parts.join(", "))
}

/// KQL: the first non-empty of `details.<key>` for `keys`, as a string.
pub(crate) fn kql_details_coalesce(keys: &[&str]) -> String {
    let parts: Vec<String> = keys
        .iter()
        .map(|k| format!("tostring(details.{k})"))
        .collect();
    if parts.len() == 1 {
        return parts[0].clone();
    }
    format!("coalesce({})", parts.join(", "))
}

/// The views, in the order the report and the workbook show them.
pub fn views() -> Vec<View> {
    let sign_ins: Vec<&str> = names(SIGN_IN_SUCCEEDED)
        .into_iter()
        .chain(names(SIGN_IN_FAILED))
        .collect();
    let succeeded = names(SIGN_IN_SUCCEEDED);
    let admin = ADMIN_CATEGORIES;
    let top = TOP_N;
    let rows = TABLE_ROWS;
    let old_sql = sql_details_coalesce(OLD_VALUE_KEYS);
    let new_sql = sql_details_coalesce(NEW_VALUE_KEYS);
    let old_kql = kql_details_coalesce(OLD_VALUE_KEYS);
    let new_kql = kql_details_coalesce(NEW_VALUE_KEYS);
    let method = AUTH_METHOD_KEY;
    let actor_sql = "CASE WHEN createdBy_email <> '' THEN createdBy_email WHEN createdBy_name <> '' THEN createdBy_name || ' (' || createdBy_type || ')' ELSE '(unknown)' END";
    let actor_kql = "iff(isnotempty(createdBy_email), createdBy_email, iff(isnotempty(createdBy_name), strcat(createdBy_name, \" (\", createdBy_type, \")\"), \"(unknown)\"))";
    vec![
        View {
            id: "events-by-category",
            title: "Audit events over time, by category",
            note: "Every audit event of the period, per hour, stacked by Miro's category.",
            shape: ViewShape::TimeSeries,
            sql: "SELECT substr(TimeGenerated, 1, 13) || ':00Z' AS bucket, \
                  CASE WHEN category = '' THEN '(none)' ELSE category END AS series, count(*) AS n \
                  FROM MiroAuditLogs_CL WHERE TimeGenerated >= ?1 GROUP BY 1, 2 ORDER BY 1"
                .into(),
            kql: "MiroAuditLogs_CL\n| summarize Events = count() by bin(TimeGenerated, 1h), category"
                .into(),
        },
        View {
            id: "sign-in-results",
            title: "Sign-in results",
            note: "Sign-ins that succeeded and failed.",
            shape: ViewShape::Bars,
            sql: format!(
                "SELECT CASE WHEN event IN {ok} THEN 'Success' ELSE 'Failure' END AS label, count(*) AS n \
                 FROM MiroAuditLogs_CL WHERE TimeGenerated >= ?1 AND event IN {all} GROUP BY 1 ORDER BY 2 DESC",
                ok = sql_list(&succeeded),
                all = sql_list(&sign_ins),
            ),
            kql: format!(
                "MiroAuditLogs_CL\n| where event in {all}\n| extend Result = iff(event in {ok}, \"Success\", \"Failure\")\n| summarize SignIns = count() by Result\n| sort by SignIns desc",
                ok = kql_list(&succeeded),
                all = kql_list(&sign_ins),
            ),
        },
        View {
            id: "sign-in-methods",
            title: "Sign-in methods",
            note: "Successful sign-ins by method (the event's details.authType).",
            shape: ViewShape::Bars,
            sql: format!(
                "SELECT COALESCE(NULLIF(CAST(json_extract(details, '$.{method}') AS TEXT), ''), '(not given)') AS label, \
                 count(*) AS n FROM MiroAuditLogs_CL WHERE TimeGenerated >= ?1 AND event IN {ok} \
                 GROUP BY 1 ORDER BY 2 DESC LIMIT {top}",
                ok = sql_list(&succeeded),
            ),
            kql: format!(
                "MiroAuditLogs_CL\n| where event in {ok}\n| extend Method = tostring(details.{method})\n| extend Method = iff(isempty(Method), \"(not given)\", Method)\n| summarize SignIns = count() by Method\n| top {top} by SignIns",
                ok = kql_list(&succeeded),
            ),
        },
        View {
            id: "top-actors",
            title: "Top actors",
            note: "Who acted most: people by email; applications, SCIM and automations by name and type.",
            shape: ViewShape::Bars,
            sql: format!(
                "SELECT {actor_sql} AS label, count(*) AS n FROM MiroAuditLogs_CL \
                 WHERE TimeGenerated >= ?1 GROUP BY 1 ORDER BY 2 DESC LIMIT {top}"
            ),
            kql: format!(
                "MiroAuditLogs_CL\n| extend Actor = {actor_kql}\n| summarize Events = count() by Actor\n| top {top} by Events"
            ),
        },
        View {
            id: "top-ips",
            title: "Top source IP addresses",
            note: "The addresses audit events came from.",
            shape: ViewShape::Bars,
            sql: format!(
                "SELECT CASE WHEN context_ip = '' THEN '(none)' ELSE context_ip END AS label, count(*) AS n \
                 FROM MiroAuditLogs_CL WHERE TimeGenerated >= ?1 GROUP BY 1 ORDER BY 2 DESC LIMIT {top}"
            ),
            kql: format!(
                "MiroAuditLogs_CL\n| where isnotempty(context_ip)\n| summarize Events = count() by context_ip\n| top {top} by Events"
            ),
        },
        View {
            id: "admin-changes-by-event",
            title: "Admin changes, by event",
            note: "Events of the administrative categories (see docs/miro-api.md).",
            shape: ViewShape::Bars,
            sql: format!(
                "SELECT event AS label, count(*) AS n FROM MiroAuditLogs_CL \
                 WHERE TimeGenerated >= ?1 AND category IN {cats} GROUP BY 1 ORDER BY 2 DESC LIMIT {top}",
                cats = sql_list(admin),
            ),
            kql: format!(
                "MiroAuditLogs_CL\n| where category in {cats}\n| summarize Changes = count() by event\n| top {top} by Changes",
                cats = kql_list(admin),
            ),
        },
        View {
            id: "admin-changes",
            title: "Latest admin changes",
            note: "The most recent administrative events, with the old and new value where the event's details carry them.",
            shape: ViewShape::Table,
            sql: format!(
                "SELECT TimeGenerated AS time, {actor_sql} AS actor, event, \
                 object_name AS object, {old_sql} AS old_value, {new_sql} AS new_value, context_ip AS ip \
                 FROM MiroAuditLogs_CL WHERE TimeGenerated >= ?1 AND category IN {cats} \
                 ORDER BY TimeGenerated DESC LIMIT {rows}",
                cats = sql_list(admin),
            ),
            kql: format!(
                "MiroAuditLogs_CL\n| where category in {cats}\n| extend Actor = {actor_kql}, OldValue = {old_kql}, NewValue = {new_kql}\n| project TimeGenerated, Actor, event, object_name, OldValue, NewValue, context_ip\n| sort by TimeGenerated desc\n| take {rows}",
                cats = kql_list(admin),
            ),
        },
        View {
            id: "content-activity",
            title: "Board content activity over time, by action",
            note: "Content log items (create, update, delete) per hour.",
            shape: ViewShape::TimeSeries,
            sql: "SELECT substr(TimeGenerated, 1, 13) || ':00Z' AS bucket, \
                  CASE WHEN actionType = '' THEN '(none)' ELSE actionType END AS series, count(*) AS n \
                  FROM MiroContentLogs_CL WHERE TimeGenerated >= ?1 GROUP BY 1, 2 ORDER BY 1"
                .into(),
            kql: "MiroContentLogs_CL\n| summarize Items = count() by bin(TimeGenerated, 1h), actionType"
                .into(),
        },
        View {
            id: "content-top-actors",
            title: "Top content editors",
            note: "Who created, changed and deleted the most board content.",
            shape: ViewShape::Bars,
            sql: format!(
                "SELECT CASE WHEN actor_email <> '' THEN actor_email WHEN actor_name <> '' THEN actor_name ELSE '(unknown)' END AS label, \
                 count(*) AS n FROM MiroContentLogs_CL WHERE TimeGenerated >= ?1 GROUP BY 1 ORDER BY 2 DESC LIMIT {top}"
            ),
            kql: format!(
                "MiroContentLogs_CL\n| extend Actor = iff(isnotempty(actor_email), actor_email, iff(isnotempty(actor_name), actor_name, \"(unknown)\"))\n| summarize Items = count() by Actor\n| top {top} by Items"
            ),
        },
        View {
            id: "content-top-boards",
            title: "Most changed boards",
            note: "Boards (content ids) with the most content activity.",
            shape: ViewShape::Bars,
            sql: format!(
                "SELECT CASE WHEN contentId = '' THEN '(none)' ELSE contentId END AS label, count(*) AS n \
                 FROM MiroContentLogs_CL WHERE TimeGenerated >= ?1 GROUP BY 1 ORDER BY 2 DESC LIMIT {top}"
            ),
            kql: format!(
                "MiroContentLogs_CL\n| summarize Items = count() by contentId\n| top {top} by Items"
            ),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_ids_are_unique_and_every_view_has_both_queries() {
        let views = views();
        let mut ids: Vec<&str> = views.iter().map(|v| v.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), views.len());
        for v in &views {
            assert!(v.sql.contains("?1"), "{} filters on the period", v.id);
            assert!(v.kql.starts_with("Miro"), "{} starts at a Miro table", v.id);
        }
    }

    #[test]
    fn every_view_sql_runs_on_a_migrated_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(crate::store::Store::open(&path).unwrap());
        let conn = crate::store::Store::open_read_only(&path).unwrap();
        for v in views() {
            let mut stmt = conn
                .prepare(&v.sql)
                .unwrap_or_else(|e| panic!("{}: {e}", v.id));
            assert!(stmt.readonly(), "{}", v.id);
            let n = stmt
                .query_map(["2000-01-01T00:00:00.000Z"], |_| Ok(()))
                .unwrap()
                .count();
            assert_eq!(n, 0, "{}: an empty store has no rows", v.id);
        }
    }

    #[test]
    fn quoting_keeps_names_literal() {
        assert_eq!(sql_list(&["a'b", "c"]), "('a''b', 'c')");
        assert_eq!(kql_list(&["a\"b"]), "(\"a\\\"b\")");
    }
}
