//! Fields a rule may name, checked against the Sentinel table schemas the store already
//! has (`store::transform` column lists): a column, or a path inside a dynamic column
//! (`details.newRole`). Each field renders as a text expression in SQL and in KQL with
//! the same meaning: KQL's `tostring()` of a missing value is `""`, and the SQL form
//! gives `""` too (booleans as `true`/`false`, like `tostring`).

use std::fmt;

use crate::source::SourceKind;
use crate::store::transform::{
    AI_COLUMNS, AUDIT_COLUMNS, CONTENT_COLUMNS, DATETIME_COLUMNS, DYNAMIC_COLUMNS,
};

/// A column's type in Log Analytics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Datetime,
    Dynamic,
}

/// The type of `column` in `table`'s schema, `None` when the table has no such column.
pub fn column_type(source: SourceKind, column: &str) -> Option<FieldType> {
    let columns: &[&str] = match source {
        SourceKind::AuditLogs => &AUDIT_COLUMNS,
        SourceKind::ContentLogs => &CONTENT_COLUMNS,
        SourceKind::AiInteractionLogs => &AI_COLUMNS,
    };
    if !columns.contains(&column) {
        return None;
    }
    Some(if DATETIME_COLUMNS.contains(&column) {
        FieldType::Datetime
    } else if DYNAMIC_COLUMNS.contains(&column) {
        FieldType::Dynamic
    } else {
        FieldType::String
    })
}

/// A field of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Column(&'static str, FieldType),
    /// A dynamic column and a path of member names inside it.
    Path(&'static str, Vec<String>),
}

impl Field {
    /// Parses `column` or `dynamic_column.member[.member…]`.
    pub fn parse(source: SourceKind, text: &str) -> Result<Field, String> {
        let mut parts = text.split('.');
        let head = parts.next().unwrap_or_default();
        let columns: &[&'static str] = match source {
            SourceKind::AuditLogs => &AUDIT_COLUMNS,
            SourceKind::ContentLogs => &CONTENT_COLUMNS,
            SourceKind::AiInteractionLogs => &AI_COLUMNS,
        };
        let Some(column) = columns.iter().copied().find(|c| *c == head) else {
            return Err(format!(
                "`{text}` is not a column of {}; use one of {}",
                source.table(),
                columns.join(", ")
            ));
        };
        let kind = column_type(source, column).expect("a column of the table");
        let path: Vec<String> = parts.map(str::to_string).collect();
        if path.is_empty() {
            return Ok(Field::Column(column, kind));
        }
        if kind != FieldType::Dynamic {
            return Err(format!(
                "`{text}`: `{column}` is not a dynamic column, so it has no members; name the column alone"
            ));
        }
        if path
            .iter()
            .any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            return Err(format!(
                "`{text}`: member names are letters, digits and `_`, separated by `.`"
            ));
        }
        Ok(Field::Path(column, path))
    }

    pub fn kind(&self) -> FieldType {
        match self {
            Field::Column(_, kind) => *kind,
            Field::Path(..) => FieldType::String,
        }
    }

    /// A text expression in SQLite: `""` where the value is missing.
    pub fn sql(&self) -> String {
        match self {
            Field::Column(name, _) => format!("coalesce({name}, '')"),
            Field::Path(column, path) => {
                let json_path = format!("$.{}", path.join("."));
                format!(
                    "(CASE json_type({column}, '{json_path}') WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' \
                     WHEN 'null' THEN '' ELSE coalesce(CAST(json_extract({column}, '{json_path}') AS TEXT), '') END)"
                )
            }
        }
    }

    /// A string expression in KQL.
    pub fn kql(&self) -> String {
        match self {
            Field::Column(name, FieldType::String) => (*name).to_string(),
            Field::Column(name, _) => format!("tostring({name})"),
            Field::Path(column, path) => format!("tostring({column}.{})", path.join(".")),
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Column(name, _) => f.write_str(name),
            Field::Path(column, path) => write!(f, "{column}.{}", path.join(".")),
        }
    }
}
