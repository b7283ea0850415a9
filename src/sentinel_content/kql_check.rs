//! A KQL checker without a Kusto engine: every query mirotrail emits (workbook, ASIM
//! parsers) is tokenized and walked stage by stage (`|`), and every name it uses must be
//! a column of the table in scope (`docs/sentinel-contract.md`, plus Sentinel's own
//! `SecurityAlert`), a name the query defined before (`X = ...`), or a declared function
//! parameter; every function and tabular operator must be one this checker knows.
//!
//! Types it checks: a member access (`details.authType`) needs a `dynamic` column; the
//! first argument of `bin` a `datetime`; a column compared with a string literal (`==`,
//! `!=`, `in`, `has`, `startswith`, ...) or passed to `isempty`/`isnotempty`/`strcat` a
//! `string`; a column compared with `<`/`>` against `ago()`, `datetime()` or a datetime
//! parameter a `datetime`.
//!
//! Scope: `extend` adds its names; `project` keeps exactly the listed names; `summarize`
//! keeps its named aggregates and its `by` items (a `bin(col, ...)` keeps `col`). Names of
//! unnamed aggregates (`count_`) are not modelled: queries here name every aggregate.
//!
//! Limits (what this cannot verify, also said in the README): function argument counts
//! and types beyond the rules above, operator precedence, the type of a computed
//! expression (a defined name is accepted anywhere), `let`, `join`/`union`, and whether
//! Kusto accepts the query at all. It catches the common failure: a misspelt or
//! non-existent column, a column of the wrong type, or a column used after `project` or
//! `summarize` dropped it.

use std::collections::BTreeMap;

use crate::source::SourceKind;
use crate::store::transform::columns;

/// A KQL scalar type, as far as this checker tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KqlType {
    String,
    DateTime,
    Dynamic,
    Int,
    /// A computed name: accepted anywhere.
    Unknown,
}

impl KqlType {
    fn of_contract(name: &str) -> KqlType {
        match crate::sink::sentinel::template::table_column_type(name) {
            "datetime" => KqlType::DateTime,
            "dynamic" => KqlType::Dynamic,
            _ => KqlType::String,
        }
    }
}

/// The columns of a table mirotrail's KQL may read.
pub fn table_columns(table: &str) -> Option<BTreeMap<String, KqlType>> {
    for source in SourceKind::ALL {
        if source.table() == table {
            return Some(
                columns(source)
                    .iter()
                    .map(|c| (c.to_string(), KqlType::of_contract(c)))
                    .collect(),
            );
        }
    }
    if table == SECURITY_ALERT {
        return Some(
            SECURITY_ALERT_COLUMNS
                .iter()
                .map(|(c, t)| (c.to_string(), *t))
                .collect(),
        );
    }
    None
}

/// Sentinel's alert table, which the workbook's alert view reads.
pub const SECURITY_ALERT: &str = "SecurityAlert";
/// The `SecurityAlert` columns the workbook uses (a subset of the table's schema).
const SECURITY_ALERT_COLUMNS: &[(&str, KqlType)] = &[
    ("TimeGenerated", KqlType::DateTime),
    ("AlertName", KqlType::String),
    ("AlertSeverity", KqlType::String),
    ("ProductName", KqlType::String),
    ("ProviderName", KqlType::String),
    ("CompromisedEntity", KqlType::String),
    ("Entities", KqlType::String),
    ("Description", KqlType::String),
    ("StartTime", KqlType::DateTime),
    ("EndTime", KqlType::DateTime),
];

const OPERATORS: &[&str] = &[
    "where",
    "extend",
    "project",
    "summarize",
    "sort",
    "order",
    "top",
    "take",
    "limit",
    "distinct",
    "render",
];

const FUNCTIONS: &[&str] = &[
    "ago",
    "arg_max",
    "array_length",
    "case",
    "bin",
    "coalesce",
    "count",
    "countif",
    "datetime",
    "dcount",
    "dynamic",
    "has_any_ipv4_prefix",
    "iff",
    "isempty",
    "isnotempty",
    "isnull",
    "make_set",
    "max",
    "min",
    "not",
    "now",
    "strcat",
    "tolower",
    "tostring",
    "todatetime",
    "toint",
];

const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "by",
    "asc",
    "desc",
    "nulls",
    "first",
    "last",
    "in",
    "has",
    "has_any",
    "contains",
    "startswith",
    "endswith",
    "true",
    "false",
    "timechart",
    "barchart",
    "piechart",
    "table",
];

/// Operators after which a string literal makes the left side a string.
const STRING_OPERATORS: &[&str] = &[
    "==",
    "!=",
    "=~",
    "in",
    "has",
    "has_any",
    "contains",
    "startswith",
    "endswith",
];

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str,
    /// A number or a timespan literal (`1h`).
    Number,
    Punct(String),
}

fn tokenize(query: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = query.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' {
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated string literal".into()),
                    Some('\\') => i += 2,
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            out.push(Token::Str);
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            out.push(Token::Number);
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            if ["==", "!=", "=~", "<=", ">="].contains(&two.as_str()) {
                out.push(Token::Punct(two));
                i += 2;
            } else if "|(),=.[]<>+-*/;:!".contains(c) {
                out.push(Token::Punct(c.to_string()));
                i += 1;
            } else {
                return Err(format!("unexpected character `{c}`"));
            }
        }
    }
    Ok(out)
}

fn is_punct(t: Option<&Token>, p: &str) -> bool {
    matches!(t, Some(Token::Punct(x)) if x == p)
}

/// Splits tokens at top-level `|` (outside parentheses and brackets).
fn stages(tokens: &[Token]) -> Vec<&[Token]> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, t) in tokens.iter().enumerate() {
        match t {
            Token::Punct(p) if p == "(" || p == "[" => depth += 1,
            Token::Punct(p) if p == ")" || p == "]" => depth -= 1,
            Token::Punct(p) if p == "|" && depth == 0 => {
                out.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&tokens[start..]);
    out
}

/// Splits a stage's tokens at top-level commas.
fn items(tokens: &[Token]) -> Vec<&[Token]> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, t) in tokens.iter().enumerate() {
        match t {
            Token::Punct(p) if p == "(" || p == "[" => depth += 1,
            Token::Punct(p) if p == ")" || p == "]" => depth -= 1,
            Token::Punct(p) if p == "," && depth == 0 => {
                out.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < tokens.len() {
        out.push(&tokens[start..]);
    }
    out
}

/// The name an output item of `project`/`summarize`/`by` gives its column.
fn item_name(item: &[Token], scope: &BTreeMap<String, KqlType>) -> Option<(String, KqlType)> {
    match item {
        [Token::Ident(name), Token::Punct(eq), ..] if eq == "=" => {
            Some((name.clone(), KqlType::Unknown))
        }
        [Token::Ident(name)] => Some((
            name.clone(),
            scope.get(name).copied().unwrap_or(KqlType::Unknown),
        )),
        [Token::Ident(f), Token::Punct(open), Token::Ident(col), ..]
            if f == "bin" && open == "(" =>
        {
            Some((
                col.clone(),
                scope.get(col).copied().unwrap_or(KqlType::Unknown),
            ))
        }
        _ => None,
    }
}

/// Checks one query against the schema; `parameters` are names the query may use
/// besides columns (a function's declared parameters), with their types.
pub fn check(query: &str, parameters: &[(&str, KqlType)]) -> Result<(), Vec<String>> {
    let tokens = tokenize(query).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let params: BTreeMap<String, KqlType> = parameters
        .iter()
        .map(|(n, t)| (n.to_string(), *t))
        .collect();
    let stages = stages(&tokens);
    let table = match stages.first().copied() {
        Some([Token::Ident(t)]) => t.clone(),
        _ => return Err(vec!["a query must start with a table name alone".into()]),
    };
    let Some(mut scope) = table_columns(&table) else {
        return Err(vec![format!("`{table}` is not a table the contract knows")]);
    };
    for stage in &stages[1..] {
        let (op, body) = match stage.split_first() {
            Some((Token::Ident(op), body)) => (op.as_str(), body),
            _ => {
                errors.push("a `|` must be followed by a tabular operator".into());
                continue;
            }
        };
        if !OPERATORS.contains(&op) {
            errors.push(format!("unknown tabular operator `{op}`"));
            continue;
        }
        // Names this stage defines are usable within it after their definition.
        let mut local = scope.clone();
        check_expression(body, &mut local, &params, &mut errors);
        scope = match op {
            "extend" => local,
            "project" => items(body)
                .iter()
                .filter_map(|item| item_name(item, &scope))
                .collect(),
            "summarize" => {
                let by = body
                    .iter()
                    .position(|t| *t == Token::Ident("by".into()))
                    .unwrap_or(body.len());
                let (aggregates, keys) = body.split_at(by);
                let keys = keys.get(1..).unwrap_or(&[]);
                let mut next = BTreeMap::new();
                for item in items(aggregates) {
                    match item_name(item, &scope) {
                        Some((name, t)) if is_punct(item.get(1), "=") => {
                            next.insert(name, t);
                        }
                        _ => errors
                            .push("every summarize aggregate must be named (`N = count()`)".into()),
                    }
                }
                for item in items(keys) {
                    match item_name(item, &scope) {
                        Some((name, t)) => {
                            next.insert(name, t);
                        }
                        None => errors.push(
                            "a `by` item must be a column, `bin(column, ...)` or `Name = expr`"
                                .into(),
                        ),
                    }
                }
                next
            }
            _ => scope,
        };
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Checks every name in `tokens` against `scope` (adding names defined with `X =`).
fn check_expression(
    tokens: &[Token],
    scope: &mut BTreeMap<String, KqlType>,
    params: &BTreeMap<String, KqlType>,
    errors: &mut Vec<String>,
) {
    for (i, t) in tokens.iter().enumerate() {
        let Token::Ident(name) = t else { continue };
        let prev = i.checked_sub(1).and_then(|j| tokens.get(j));
        let next = tokens.get(i + 1);
        if is_punct(prev, ".") {
            continue; // a member of a dynamic value
        }
        if KEYWORDS.contains(&name.as_str()) && !FUNCTIONS.contains(&name.as_str()) {
            continue; // `in (...)`, `by`, `and`, ...
        }
        if is_punct(next, "(") {
            if !FUNCTIONS.contains(&name.as_str()) {
                errors.push(format!("unknown function `{name}`"));
            }
            if let ("bin", Some(Token::Ident(arg))) = (name.as_str(), tokens.get(i + 2)) {
                want(arg, KqlType::DateTime, "bin", scope, params, errors);
            }
            if ["isempty", "isnotempty", "strcat"].contains(&name.as_str()) {
                for arg in call_arguments(&tokens[i + 1..]) {
                    if let [Token::Ident(a)] = arg {
                        want(a, KqlType::String, name, scope, params, errors);
                    }
                }
            }
            continue;
        }
        if is_punct(next, "=") {
            scope.insert(name.clone(), KqlType::Unknown);
            continue;
        }
        let Some(ty) = scope.get(name).or_else(|| params.get(name)).copied() else {
            errors.push(format!("`{name}` is not a column here"));
            continue;
        };
        if is_punct(next, ".") || is_punct(next, "[") {
            if !matches!(ty, KqlType::Dynamic | KqlType::Unknown) {
                errors.push(format!(
                    "`{name}` is {ty:?}, but member access needs a dynamic column"
                ));
            }
            continue;
        }
        let op = match next {
            Some(Token::Punct(p)) => Some(p.as_str()),
            Some(Token::Ident(k)) => Some(k.as_str()),
            _ => None,
        };
        let right = tokens.get(i + 2);
        let right_after_paren = tokens.get(i + 3);
        if let Some(op) = op {
            if STRING_OPERATORS.contains(&op)
                && (right == Some(&Token::Str)
                    || (is_punct(right, "(") && right_after_paren == Some(&Token::Str)))
            {
                want(name, KqlType::String, op, scope, params, errors);
            }
            if ["<", ">", "<=", ">="].contains(&op) {
                let datetime_right = match right {
                    Some(Token::Ident(f)) if f == "ago" || f == "datetime" || f == "now" => true,
                    Some(Token::Ident(p)) => params.get(p) == Some(&KqlType::DateTime),
                    _ => false,
                };
                if datetime_right {
                    want(name, KqlType::DateTime, op, scope, params, errors);
                }
            }
        }
    }
}

/// The top-level arguments of the call whose `(` starts `tokens`.
fn call_arguments(tokens: &[Token]) -> Vec<&[Token]> {
    let mut depth = 0i32;
    for (i, t) in tokens.iter().enumerate() {
        match t {
            Token::Punct(p) if p == "(" || p == "[" => depth += 1,
            Token::Punct(p) if p == ")" || p == "]" => {
                depth -= 1;
                if depth == 0 {
                    return items(&tokens[1..i]);
                }
            }
            _ => {}
        }
    }
    Vec::new()
}

fn want(
    name: &str,
    wanted: KqlType,
    context: &str,
    scope: &BTreeMap<String, KqlType>,
    params: &BTreeMap<String, KqlType>,
    errors: &mut Vec<String>,
) {
    let Some(ty) = scope.get(name).or_else(|| params.get(name)).copied() else {
        return; // reported as unknown by the caller
    };
    if ty != wanted && ty != KqlType::Unknown {
        errors.push(format!(
            "`{name}` is {ty:?}, but `{context}` needs {wanted:?}"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(q: &str) -> Vec<String> {
        check(q, &[("starttime", KqlType::DateTime)])
            .err()
            .unwrap_or_default()
    }

    #[test]
    fn accepts_a_well_formed_query() {
        let q = "MiroAuditLogs_CL\n| where TimeGenerated > ago(7d) and event in (\"a\", \"b\")\n\
                 | extend Method = tostring(details.authType)\n\
                 | summarize N = count() by Method, bin(TimeGenerated, 1h)\n| top 10 by N";
        assert_eq!(errors(q), Vec::<String>::new());
    }

    #[test]
    fn catches_each_kind_of_mistake() {
        let cases = [
            (
                "MiroAuditLogs_CL | where evnt == \"x\"",
                "`evnt` is not a column",
            ),
            (
                "MiroAuditLogs_CL | extend M = tostring(event.x)",
                "member access needs a dynamic",
            ),
            (
                "MiroAuditLogs_CL | summarize N = count() by bin(category, 1h)",
                "`bin` needs DateTime",
            ),
            (
                "MiroAuditLogs_CL | where details == \"x\"",
                "`==` needs String",
            ),
            (
                "MiroAuditLogs_CL | where createdAt == \"x\"",
                "`==` needs String",
            ),
            (
                "MiroAuditLogs_CL | where event > ago(1d)",
                "`>` needs DateTime",
            ),
            (
                "MiroAuditLogs_CL | where context_ip > starttime",
                "`>` needs DateTime",
            ),
            (
                "MiroAuditLogs_CL | where isempty(details)",
                "`isempty` needs String",
            ),
            (
                "MiroAuditLogs_CL | project event | where category == \"x\"",
                "`category` is not a column",
            ),
            (
                "MiroAuditLogs_CL | summarize N = count() by event | where context_ip == \"x\"",
                "`context_ip` is not a column",
            ),
            (
                "MiroAuditLogs_CL | summarize count() by event",
                "must be named",
            ),
            (
                "MiroAuditLogs_CL | wher event == \"x\"",
                "unknown tabular operator",
            ),
            (
                "MiroAuditLogs_CL | where tostrin(event) == \"x\"",
                "unknown function",
            ),
            (
                "MiroContentLogs_CL | where event == \"x\"",
                "`event` is not a column",
            ),
            ("MiroAuditLog_CL | take 1", "not a table"),
            ("MiroAuditLogs_CL | where event == \"x", "unterminated"),
        ];
        for (q, want) in cases {
            let e = errors(q);
            assert!(e.iter().any(|m| m.contains(want)), "{q}: {e:?}");
        }
    }

    #[test]
    fn names_defined_in_a_stage_are_usable_later() {
        let q = "MiroContentLogs_CL | extend A = actor_email | project A, actionType | where A == \"x\" and actionType == \"delete\"";
        assert_eq!(errors(q), Vec::<String>::new());
    }
}
