//! One rule, two compilers: [`plan`] turns a rule into predicates and keys once, and
//! [`sql`] and [`kql`] only render that plan, so the local query and the Sentinel query
//! cannot say different things.
//!
//! Semantics shared by both: rows matching `match` (step 1) and, for a sequence rule,
//! rows matching `then` (step 2) are grouped by the rule's keys and a tumbling window
//! (`bin(TimeGenerated, window)`, aligned on the UNIX epoch); rows whose keys are empty do
//! not count. A group raises an alert when its step-1 rows reach the threshold and, for a
//! sequence rule, a step-2 row comes after the first step-1 row. Text comparisons ignore
//! case (KQL `in~`, SQL `lower()`).

use super::fields::{Field, FieldType};
use super::rule::{EntityKind, Match, Rule};

/// A condition on a row: `field` is (or with `negate`, is not) one of `values` (lowercase).
#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    pub field: Field,
    pub values: Vec<String>,
    pub negate: bool,
}

/// One step of a rule: which rows, and the group keys read from them.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub predicates: Vec<Predicate>,
    pub keys: Vec<(String, Field)>,
}

/// What both compilers render.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub table: &'static str,
    pub steps: Vec<Step>,
    pub window_secs: i64,
    pub threshold: u32,
    /// The group keys, in the rule's order.
    pub keys: Vec<String>,
    /// Adds `board_url` (a URL entity of the board).
    pub board_url: bool,
}

fn step(m: &Match, group_by: &[String]) -> Step {
    let mut predicates = Vec::new();
    let column = |name: &'static str| Field::Column(name, FieldType::String);
    if !m.events.is_empty() {
        predicates.push(Predicate {
            field: column("event"),
            values: m.events.iter().map(|(n, _)| n.to_lowercase()).collect(),
            negate: false,
        });
    }
    if !m.categories.is_empty() {
        predicates.push(Predicate {
            field: column("category"),
            values: m.categories.iter().map(|c| c.to_lowercase()).collect(),
            negate: false,
        });
    }
    for c in &m.conditions {
        predicates.push(Predicate {
            field: c.field.clone(),
            values: c.values.clone(),
            negate: c.negate,
        });
    }
    Step {
        predicates,
        keys: group_by
            .iter()
            .map(|k| (k.clone(), m.keys[k].clone()))
            .collect(),
    }
}

/// The plan of a rule.
pub fn plan(rule: &Rule) -> Plan {
    let mut steps = vec![step(&rule.matcher, &rule.group_by)];
    if let Some(then) = &rule.then {
        steps.push(step(then, &rule.group_by));
    }
    Plan {
        table: rule.source.table(),
        steps,
        window_secs: rule.window_secs(),
        threshold: rule.threshold,
        keys: rule.group_by.clone(),
        board_url: rule
            .entities
            .iter()
            .any(|(kind, key)| *kind == EntityKind::Url && key == "board"),
    }
}

fn sql_text(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn kql_text(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn sql_predicate(p: &Predicate) -> String {
    let list: Vec<String> = p.values.iter().map(|v| sql_text(v)).collect();
    format!(
        "lower({}) {}IN ({})",
        p.field.sql(),
        if p.negate { "NOT " } else { "" },
        list.join(", ")
    )
}

fn kql_predicate(p: &Predicate) -> String {
    let list: Vec<String> = p.values.iter().map(|v| kql_text(v)).collect();
    format!(
        "{} {}in~ ({})",
        p.field.kql(),
        if p.negate { "!" } else { "" },
        list.join(", ")
    )
}

/// The SQL over the local store. Parameters: `?1` and `?2`, the ISO 8601 UTC bounds
/// `[from, to)` of `TimeGenerated` (whole windows); one result row per alert, columns:
/// the keys (as `k_<key>`), `window_start` (UNIX seconds), `hits`, `first_seen`,
/// `last_seen`, `then_seen`, `org` (the Miro organisation id, `_org_id`). Groups are
/// also split by organisation: the rows of two organisations never make one alert (a
/// store may hold several, `[[orgs]]`; in Sentinel each organisation's rows are told
/// apart only where the table has a column for it).
pub fn sql(plan: &Plan) -> String {
    let w = plan.window_secs;
    let (key_cols, non_empty) = key_columns(plan);
    let mut group = key_cols.clone();
    group.push("window_start".into());
    group.push("o".into());
    let mut having = vec![format!("hits >= {}", plan.threshold)];
    if plan.steps.len() > 1 {
        having.push("then_seen > first_seen".into());
    }
    let mut select = key_cols.clone();
    select.push(format!("(unixepoch(t) / {w}) * {w} AS window_start"));
    select.extend(AGGREGATES.iter().map(|a| (*a).to_string()));
    select.push("o AS org".into());
    format!(
        "WITH m AS ({}) SELECT {} FROM m{} GROUP BY {} HAVING {} ORDER BY window_start, {}",
        step_rows(plan, Rows::Windows),
        select.join(", "),
        if non_empty.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", non_empty.join(" AND "))
        },
        group.join(", "),
        having.join(" AND "),
        if key_cols.is_empty() {
            "hits".to_string()
        } else {
            key_cols.join(", ")
        }
    )
}

/// Which stored rows each step's `SELECT` reads.
#[derive(Clone, Copy, PartialEq)]
enum Rows {
    /// `TimeGenerated` in `[?1, ?2)`.
    Windows,
    /// `_seq` in `(?1, ?2]` and `TimeGenerated >= ?4`, found by `_seq`.
    SeqSince,
    /// `TimeGenerated >= ?4` and `_seq` in `(?1, ?2]`, found through the time index.
    Since,
}

/// One `SELECT` per step, `UNION ALL`ed: the keys (`k_<key>`), `t` (`TimeGenerated`),
/// `step` (1 or 2) and `o` (`_org_id`) of the rows each step matches.
fn step_rows(plan: &Plan, rows: Rows) -> String {
    let mut parts = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        let mut select: Vec<String> = step
            .keys
            .iter()
            .map(|(k, f)| format!("{} AS k_{k}", f.sql()))
            .collect();
        select.push("TimeGenerated AS t".into());
        select.push(format!("{} AS step", i + 1));
        select.push("_org_id AS o".into());
        let mut conditions = Vec::new();
        match rows {
            Rows::Windows => {
                conditions.extend([
                    "TimeGenerated >= ?1".to_string(),
                    "TimeGenerated < ?2".to_string(),
                ]);
            }
            Rows::SeqSince => {
                // `+`: the rows are found by `_seq`, the time only filters them (first:
                // an older row's predicates are not evaluated).
                conditions.extend([
                    "+TimeGenerated >= ?4".to_string(),
                    "_seq > ?1".to_string(),
                    "_seq <= ?2".to_string(),
                ]);
            }
            Rows::Since => {
                // `+`: found through the time index, not the rowid.
                conditions.extend([
                    "TimeGenerated >= ?4".to_string(),
                    "+_seq > ?1".to_string(),
                    "+_seq <= ?2".to_string(),
                ]);
            }
        }
        conditions.extend(step.predicates.iter().map(sql_predicate));
        parts.push(format!(
            "SELECT {} FROM {} WHERE {}",
            select.join(", "),
            plan.table,
            conditions.join(" AND ")
        ));
    }
    parts.join(" UNION ALL ")
}

/// The key columns of a plan's rows (`k_<key>`, in the rule's order) and the condition
/// that none is empty (rows with an empty key do not count).
fn key_columns(plan: &Plan) -> (Vec<String>, Vec<String>) {
    let key_cols: Vec<String> = plan.keys.iter().map(|k| format!("k_{k}")).collect();
    let non_empty = key_cols.iter().map(|k| format!("{k} <> ''")).collect();
    (key_cols, non_empty)
}

/// The aggregates of one group: first-step rows, the first and last of them, the last
/// second-step row. [`sql`] and [`sql_aggregate`] both compute them with these.
const AGGREGATES: [&str; 4] = [
    "sum(step = 1) AS hits",
    "min(CASE WHEN step = 1 THEN t END) AS first_seen",
    "max(CASE WHEN step = 1 THEN t END) AS last_seen",
    "max(CASE WHEN step = 2 THEN t END) AS then_seen",
];

/// The SQL that adds rows to a plan's aggregates in `detect_groups` and returns every
/// group it touched, as it now is. Parameters: `?1` and `?2`, the range `(after,
/// through]` of `_seq` of the rows added; `?3`, the plan's `detect_plans.id`; `?4`, the
/// plan's horizon (ISO 8601 UTC, the start of a window): only rows from then on are
/// added (older windows keep no aggregates). `by_time`: the rows are found through the
/// time index from the horizon on (a seed, or a pass with more new rows than rows since
/// the horizon), otherwise by `_seq` (a live pass). Result
/// columns: `org` (the organisation's `orgs.org_id`, NULL when not recorded),
/// `group_key` (a JSON array of the key values, in the rule's order), `window_start`
/// (UNIX seconds), `hits`, `first_seen`, `last_seen`, `then_seen`.
///
/// Groups and aggregates are those of [`sql`] (rows with an empty key do not count; the
/// window is `bin(TimeGenerated, window)`; organisations apart), and each aggregate is a
/// count, a minimum or a maximum, so adding the new rows' to the stored ones gives what
/// [`sql`] computes over all the rows. The HAVING is not applied: the caller applies the
/// rule's threshold (which is not part of the text, so editing it keeps the aggregates;
/// editing anything else changes the text, which `eval` uses as the plan's identity).
///
/// Organisations are told apart by their `orgs.key` (what `_org_id` names, or the first
/// organisation for rows without one, as `alerts.org`), so an id recorded later keeps
/// the rows already counted in the same group.
pub fn sql_aggregate(plan: &Plan, by_time: bool) -> String {
    let w = plan.window_secs;
    let (key_cols, mut conditions) = key_columns(plan);
    conditions.push("window_start IS NOT NULL".into());
    let mut select = vec![
        "?3".to_string(),
        "coalesce((SELECT key FROM orgs WHERE org_id = o), 1)".to_string(),
        format!("json_array({})", key_cols.join(", ")),
        "window_start".to_string(),
    ];
    select.extend(AGGREGATES.iter().map(|a| (*a).to_string()));
    let mut group = key_cols.clone();
    group.extend(["window_start".to_string(), "o".to_string()]);
    let mut inner = key_cols;
    inner.extend([
        format!("(unixepoch(t) / {w}) * {w} AS window_start"),
        "t".into(),
        "step".into(),
        "o".into(),
    ]);
    format!(
        "INSERT INTO detect_groups (plan, org, group_key, window_start, hits, first_seen, last_seen, then_seen) \
         SELECT {} FROM (SELECT {} FROM ({})) WHERE {} GROUP BY {} \
         ON CONFLICT (plan, window_start, org, group_key) DO UPDATE SET \
         hits = hits + excluded.hits, \
         first_seen = coalesce(min(first_seen, excluded.first_seen), first_seen, excluded.first_seen), \
         last_seen = coalesce(max(last_seen, excluded.last_seen), last_seen, excluded.last_seen), \
         then_seen = coalesce(max(then_seen, excluded.then_seen), then_seen, excluded.then_seen) \
         RETURNING (SELECT org_id FROM orgs WHERE orgs.key = detect_groups.org), group_key, window_start, \
         hits, first_seen, last_seen, then_seen",
        select.join(", "),
        inner.join(", "),
        step_rows(plan, if by_time { Rows::Since } else { Rows::SeqSince }),
        conditions.join(" AND "),
        group.join(", "),
    )
}

/// The SQL that finds when the rows stored in a `_seq` range that match a step of the
/// plan and happened before a plan's horizon did. Parameters: `?1` and `?2`, the range
/// `(after, through]` of `_seq`; `?3`, the horizon (ISO 8601 UTC); one result row: the
/// least and the greatest `TimeGenerated` (both NULL when no row matches). `eval`
/// evaluates the windows between the two with [`sql`] (such rows have no aggregates to
/// add to).
pub fn sql_old_matches(plan: &Plan) -> String {
    let steps: Vec<String> = plan
        .steps
        .iter()
        .map(|step| {
            let preds: Vec<String> = step.predicates.iter().map(sql_predicate).collect();
            if preds.is_empty() {
                "1".to_string()
            } else {
                format!("({})", preds.join(" AND "))
            }
        })
        .collect();
    format!(
        "SELECT min(TimeGenerated), max(TimeGenerated) FROM {} \
         WHERE _seq > ?1 AND _seq <= ?2 AND TimeGenerated < ?3 AND ({})",
        plan.table,
        steps.join(" OR ")
    )
}

/// The KQL duration literal of whole seconds (`10m`, `1h`, `90s`).
pub fn kql_timespan(secs: i64) -> String {
    if secs % 86_400 == 0 {
        format!("{}d", secs / 86_400)
    } else if secs % 3_600 == 0 {
        format!("{}h", secs / 3_600)
    } else if secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// The KQL over the Sentinel tables: one result row per alert, columns: the keys,
/// `WindowStart`, `Hits`, `FirstSeen`, `LastSeen` (and `board_url` for a URL entity).
pub fn kql(plan: &Plan) -> String {
    let w = kql_timespan(plan.window_secs);
    let sequence = plan.steps.len() > 1;
    let step_query = |i: usize, step: &Step| {
        let mut lines = vec![plan.table.to_string()];
        if !step.predicates.is_empty() {
            let preds: Vec<String> = step.predicates.iter().map(kql_predicate).collect();
            lines.push(format!("| where {}", preds.join(" and ")));
        }
        let mut extend: Vec<String> = step
            .keys
            .iter()
            .map(|(k, f)| format!("{k} = {}", f.kql()))
            .collect();
        if sequence {
            extend.push(format!("Step = {}", i + 1));
        }
        if !extend.is_empty() {
            lines.push(format!("| extend {}", extend.join(", ")));
        }
        lines.join("\n")
    };
    let mut lines = Vec::new();
    if sequence {
        let parts: Vec<String> = plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| format!("({})", step_query(i, s).replace('\n', "\n    ")))
            .collect();
        lines.push(format!("union\n    {}", parts.join(",\n    ")));
    } else {
        lines.push(step_query(0, &plan.steps[0]));
    }
    if !plan.keys.is_empty() {
        let non_empty: Vec<String> = plan
            .keys
            .iter()
            .map(|k| format!("isnotempty({k})"))
            .collect();
        lines.push(format!("| where {}", non_empty.join(" and ")));
    }
    let mut by = plan.keys.clone();
    by.push(format!("WindowStart = bin(TimeGenerated, {w})"));
    if sequence {
        lines.push(format!(
            "| summarize Hits = countif(Step == 1), FirstSeen = minif(TimeGenerated, Step == 1), \
             LastSeen = maxif(TimeGenerated, Step == 1), ThenSeen = maxif(TimeGenerated, Step == 2) by {}",
            by.join(", ")
        ));
        lines.push(format!(
            "| where Hits >= {} and ThenSeen > FirstSeen",
            plan.threshold
        ));
    } else {
        lines.push(format!(
            "| summarize Hits = count(), FirstSeen = min(TimeGenerated), LastSeen = max(TimeGenerated) by {}",
            by.join(", ")
        ));
        lines.push(format!("| where Hits >= {}", plan.threshold));
    }
    if plan.board_url {
        lines.push(
            "| extend board_url = strcat(\"https://miro.com/app/board/\", board, \"/\")".into(),
        );
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::fields::column_type;
    use crate::source::SourceKind;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone, PartialEq)]
    enum Tok {
        Ident(String),
        Str,
        Literal,
        Punct(String),
    }

    fn tokenize(q: &str) -> Vec<Tok> {
        let chars: Vec<char> = q.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
            } else if c == '"' {
                i += 1;
                while chars[i] != '"' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                out.push(Tok::Str);
            } else if c.is_ascii_digit() {
                while i < chars.len() && chars[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                out.push(Tok::Literal);
            } else if c.is_ascii_alphabetic() || c == '_' {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if i < chars.len() && chars[i] == '~' {
                    i += 1;
                    out.push(Tok::Punct(format!("{word}~")));
                } else {
                    out.push(Tok::Ident(word));
                }
            } else {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                if ["==", ">=", "<=", "!="].contains(&two.as_str()) {
                    out.push(Tok::Punct(two));
                    i += 2;
                } else {
                    out.push(Tok::Punct(c.to_string()));
                    i += 1;
                }
            }
        }
        out
    }

    const KEYWORDS: [&str; 6] = ["where", "extend", "summarize", "by", "and", "union"];
    /// Functions and the type their first argument must have (None: any).
    const FUNCTIONS: [(&str, Option<FieldType>); 11] = [
        ("tostring", None),
        ("isnotempty", Some(FieldType::String)),
        ("strcat", None),
        ("count", None),
        ("countif", None),
        ("min", Some(FieldType::Datetime)),
        ("max", Some(FieldType::Datetime)),
        ("minif", Some(FieldType::Datetime)),
        ("maxif", Some(FieldType::Datetime)),
        ("bin", Some(FieldType::Datetime)),
        ("ago", None),
    ];

    /// Checks a query the compiler made: it reads one of the contract's tables, every
    /// name is a column of that table or defined earlier in the query, members are read
    /// only from dynamic columns, `in~` compares strings, and time functions get datetimes.
    fn check_kql(q: &str) -> Result<(), String> {
        let toks = tokenize(q);
        let source = match toks.first() {
            Some(Tok::Ident(t)) if t == "let" => return Err("starts with let".into()),
            _ => {
                let first_table = toks.iter().find_map(|t| match t {
                    Tok::Ident(w) if w.ends_with("_CL") => Some(w.clone()),
                    _ => None,
                });
                match first_table.as_deref() {
                    Some("MiroAuditLogs_CL") => SourceKind::AuditLogs,
                    Some("MiroContentLogs_CL") => SourceKind::ContentLogs,
                    other => return Err(format!("reads no contract table: {other:?}")),
                }
            }
        };
        let mut defined: BTreeMap<String, FieldType> = BTreeMap::new();
        let type_of = |name: &str, defined: &BTreeMap<String, FieldType>| {
            column_type(source, name).or_else(|| defined.get(name).copied())
        };
        let mut i = 0;
        while i < toks.len() {
            let Tok::Ident(word) = &toks[i] else {
                i += 1;
                continue;
            };
            let next = toks.get(i + 1);
            if word.ends_with("_CL") {
                if word != source.table() {
                    return Err(format!("reads {word} beside {}", source.table()));
                }
                i += 1;
                continue;
            }
            if KEYWORDS.contains(&word.as_str()) {
                i += 1;
                continue;
            }
            if next == Some(&Tok::Punct("(".into())) {
                let Some((_, arg_type)) = FUNCTIONS.iter().find(|(f, _)| f == word) else {
                    return Err(format!("unknown function {word}"));
                };
                if let (Some(want), Some(Tok::Ident(arg))) = (arg_type, toks.get(i + 2)) {
                    let got = if toks.get(i + 3) == Some(&Tok::Punct(".".into())) {
                        None
                    } else {
                        type_of(arg, &defined)
                    };
                    if got != Some(*want) {
                        return Err(format!("{word}({arg}): expects {want:?}, {arg} is {got:?}"));
                    }
                }
                i += 1;
                continue;
            }
            if next == Some(&Tok::Punct("=".into())) {
                // A definition: its type is the first name or function of its expression.
                let ty = match (toks.get(i + 2), toks.get(i + 3)) {
                    (Some(Tok::Ident(f)), Some(Tok::Punct(p))) if p == "(" => match f.as_str() {
                        "tostring" | "strcat" => FieldType::String,
                        "min" | "max" | "minif" | "maxif" | "bin" => FieldType::Datetime,
                        _ => FieldType::Dynamic,
                    },
                    (Some(Tok::Ident(c)), _) => type_of(c, &defined)
                        .ok_or_else(|| format!("{word} = {c}: {c} is not a column"))?,
                    _ => FieldType::Dynamic,
                };
                defined.insert(word.clone(), ty);
                i += 2;
                continue;
            }
            let Some(ty) = type_of(word, &defined) else {
                return Err(format!("`{word}` is not a column of {}", source.table()));
            };
            if next == Some(&Tok::Punct(".".into())) {
                if ty != FieldType::Dynamic {
                    return Err(format!("`{word}.…`: {word} is not dynamic"));
                }
                // Skip the member path.
                i += 1;
                while toks.get(i) == Some(&Tok::Punct(".".into())) {
                    i += 2;
                }
                continue;
            }
            let is_in = matches!(next, Some(Tok::Punct(p)) if p == "in~")
                || (next == Some(&Tok::Punct("!".into()))
                    && matches!(toks.get(i + 2), Some(Tok::Punct(p)) if p == "in~"));
            if is_in && ty != FieldType::String {
                return Err(format!("`{word} in~`: {word} is {ty:?}, not a string"));
            }
            i += 1;
        }
        Ok(())
    }

    #[test]
    fn the_checker_refuses_what_the_contract_does_not_have() {
        let bad = [
            "MiroAuditLogs_CL | where createdBy_mail in~ (\"x\")",
            "MiroAuditLogs_CL | where details in~ (\"x\")",
            "MiroAuditLogs_CL | where tostring(event.x) in~ (\"x\")",
            "MiroAuditLogs_CL | summarize n = count() by bin(createdBy_email, 1h)",
            "MiroContentLogs_CL | where event in~ (\"x\")",
            "MiroAuditLogs_CL | where parse_json(details) in~ (\"x\")",
            "MiroSignIns_CL | where event in~ (\"x\")",
        ];
        for q in bad {
            assert!(check_kql(q).is_err(), "accepted: {q}");
        }
        let good = "MiroAuditLogs_CL | where tostring(details.a.b) in~ (\"x\") | extend k = createdBy_id | summarize Hits = count(), F = min(TimeGenerated) by k, W = bin(TimeGenerated, 1h) | where Hits >= 2";
        check_kql(good).expect("valid");
    }

    #[test]
    fn every_rule_compiles_to_kql_over_the_contract_columns() {
        for rule in crate::detect::pack().expect("pack") {
            let q = kql(&plan(&rule));
            check_kql(&q).unwrap_or_else(|e| panic!("{}: {e}\n{q}", rule.slug));
            let hunting = crate::detect::export::hunting_query(&rule);
            check_kql(&hunting.replace("ago(lookback)", "ago(14d)"))
                .unwrap_or_else(|e| panic!("{} (hunting): {e}\n{hunting}", rule.slug));
        }
    }

    #[test]
    fn every_kql_query_has_the_rules_structure() {
        for rule in crate::detect::pack().expect("pack") {
            let q = kql(&plan(&rule));
            let lines: Vec<&str> = q.lines().collect();
            assert!(
                lines[0] == rule.source.table() || lines[0] == "union",
                "{q}"
            );
            let summarize = lines
                .iter()
                .position(|l| l.starts_with("| summarize "))
                .expect("one summarize");
            let window = kql_timespan(rule.window_secs());
            assert!(
                lines[summarize].ends_with(&format!("WindowStart = bin(TimeGenerated, {window})")),
                "{q}"
            );
            for key in &rule.group_by {
                assert!(
                    lines[summarize].contains(&format!(" by {key}"))
                        || lines[summarize].contains(&format!(", {key},"))
                        || lines[summarize].contains(&format!(" {key}, ")),
                    "{}: key {key}",
                    rule.slug
                );
            }
            assert!(
                lines[summarize + 1].starts_with(&format!("| where Hits >= {}", rule.threshold)),
                "{q}"
            );
            for (name, _) in rule.event_names() {
                assert!(
                    q.contains(&format!("\"{}\"", name.to_lowercase())),
                    "{}: {name}",
                    rule.slug
                );
            }
            assert_eq!(
                rule.then.is_some(),
                q.contains("ThenSeen > FirstSeen"),
                "{q}"
            );
            let pre: Vec<&str> = lines[..summarize].to_vec();
            assert!(
                pre.iter().any(|l| l.contains("| where ")),
                "{}: filters before summarize",
                rule.slug
            );
        }
    }

    #[test]
    fn every_rule_compiles_to_sql_that_runs_on_a_store() {
        let conn = crate::store::scratch().expect("scratch store");
        for rule in crate::detect::pack().expect("pack") {
            let q = sql(&plan(&rule));
            let mut stmt = conn
                .prepare(&q)
                .unwrap_or_else(|e| panic!("{}: {e}\n{q}", rule.slug));
            let n = stmt
                .query_map(
                    ["2026-01-01T00:00:00.000Z", "2026-02-01T00:00:00.000Z"],
                    |_| Ok(()),
                )
                .expect("runs")
                .count();
            assert_eq!(n, 0, "{}: alerts on an empty store", rule.slug);
        }
    }

    #[test]
    fn text_literals_are_escaped_in_both_languages() {
        assert_eq!(sql_text("o'neil"), "'o''neil'");
        assert_eq!(kql_text("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
