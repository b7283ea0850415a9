//! The Sentinel DCR transformations, applied locally: an API item becomes a table row
//! exactly as `docs/sentinel-contract.md` (DCR transformations and table schemas) defines it.
//!
//! Reading an item: the usual item is read by a hand-written scanner (`scan`: each wanted
//! member's exact text in one walk of its bytes), anything it does not vouch for by
//! serde_json into the same borrowed struct, with the same result; then the general and
//! partial paths below. The collector's rows ([`StoredRow`]) keep only the store's columns,
//! a plain string cell as a range of the item's text rather than a copy.
//!
//! KQL semantics kept: `tostring()` of a missing or null field is `""`, also for a nested
//! field of a missing or partial object; datetimes that do not parse are null; dynamic
//! columns hold the JSON as is (compact text here).
//!
//! Numbers keep their digits: serde_json is built with `arbitrary_precision`, so a
//! `Value::Number` carries the text Miro sent (`30744573469876543210123` stays that, `1e400`
//! is kept as a number instead of refusing the item) through the dynamic columns, the NDJSON
//! lines and the Sentinel records. Chosen over carrying dynamic values as raw text because
//! every consumer (sinks, `query`) already speaks `Value`, and the
//! dynamic columns keep their one canonical compact form (keys sorted). The cost is a small
//! string per parsed number; nothing in the crate relies on numbers being `f64`-backed
//! (no untagged or flattened serde types are read from JSON).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

mod scan;

use crate::config::SourceKind;
use crate::timefmt::{IsoText, UnixMs};

/// `MiroAuditLogs_CL` columns, in the table's order.
pub const AUDIT_COLUMNS: [&str; 20] = [
    "TimeGenerated",
    "id",
    "createdAt",
    "event",
    "category",
    "logType",
    "createdBy_email",
    "createdBy_id",
    "createdBy_name",
    "createdBy_type",
    "object_id",
    "object_name",
    "context_ip",
    "context_team_id",
    "context_team_name",
    "context_team_type",
    "context_organization_id",
    "context_organization_name",
    "context_organization_type",
    "details",
];

/// `MiroContentLogs_CL` columns, in the table's order.
pub const CONTENT_COLUMNS: [&str; 12] = [
    "TimeGenerated",
    "id",
    "actionTime",
    "actionType",
    "actor_id",
    "actor_email",
    "actor_name",
    "contentId",
    "itemId",
    "itemType",
    "relationships",
    "state",
];

/// `MiroAiInteractionLogs_CL` columns, in the table's order: mirotrail's own table (no
/// Sentinel solution has one), designed like the two above (`docs/sentinel-contract.md`).
pub const AI_COLUMNS: [&str; 14] = [
    "TimeGenerated",
    "id",
    "createdAt",
    "storedAt",
    "sessionId",
    "messageId",
    "aiFeatureName",
    "logType",
    "object_id",
    "object_type",
    "actor_id",
    "actor_email",
    "actor_name",
    "details",
];

/// Columns whose type is `datetime` (stored as ISO 8601 UTC text) in any table.
pub const DATETIME_COLUMNS: [&str; 4] = ["TimeGenerated", "createdAt", "actionTime", "storedAt"];
/// Columns whose type is `dynamic` (stored as JSON text) in any table.
pub const DYNAMIC_COLUMNS: [&str; 3] = ["details", "relationships", "state"];

/// The stream declaration columns of `Custom-MiroAuditLogs_CL`, in order.
pub const AUDIT_STREAM_COLUMNS: [&str; 9] = [
    "id",
    "event",
    "category",
    "type",
    "createdAt",
    "createdBy",
    "context",
    "details",
    "object",
];
/// The stream declaration columns of `Custom-MiroContentLogs_CL`, in order.
pub const CONTENT_STREAM_COLUMNS: [&str; 9] = [
    "id",
    "contentId",
    "actionType",
    "actionTime",
    "actor",
    "itemType",
    "itemId",
    "state",
    "relationships",
];

/// The stream declaration columns of `Custom-MiroAiInteractionLogs_CL`, in order.
pub const AI_STREAM_COLUMNS: [&str; 10] = [
    "id",
    "createdAt",
    "storedAt",
    "sessionId",
    "messageId",
    "aiFeatureName",
    "logType",
    "object",
    "actor",
    "details",
];

/// The table columns of a source.
pub fn columns(source: SourceKind) -> &'static [&'static str] {
    match source {
        SourceKind::AuditLogs => &AUDIT_COLUMNS,
        SourceKind::ContentLogs => &CONTENT_COLUMNS,
        SourceKind::AiInteractionLogs => &AI_COLUMNS,
    }
}

/// The stream declaration columns of a source.
pub fn stream_columns(source: SourceKind) -> &'static [&'static str] {
    match source {
        SourceKind::AuditLogs => &AUDIT_STREAM_COLUMNS,
        SourceKind::ContentLogs => &CONTENT_STREAM_COLUMNS,
        SourceKind::AiInteractionLogs => &AI_STREAM_COLUMNS,
    }
}

/// One table row: the Miro id (the dedup key), the item's window time, and the cells in
/// the table's column order (`None` = null, for datetime and dynamic columns only).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: String,
    /// The time the API's window filters on (`SourceKind::window_field`): the event time
    /// for audit and content logs, `storedAt` for AI interaction logs (whose
    /// `TimeGenerated` is still `createdAt`).
    pub time: Option<UnixMs>,
    pub cells: Vec<Option<String>>,
    /// True when the item had no usable `id` and one was derived from its content.
    pub id_derived: bool,
    /// `Some(what)` when some columns could not be derived (say `details` nests deeper
    /// than the JSON parser follows): the row holds what could be, `_raw` the whole item.
    pub partial: Option<String>,
}

/// A row as the collector hands it to the store (`store::insert_rows`): [`Row`]'s id,
/// time and flags, and only the cells the store keeps (`keep` of [`to_row_keeping`]), each
/// the row's id, a range of the row's item text or a string of its own. A row goes with
/// its item's text (the pair `(StoredRow, &str)`), which [`StoredRow::cell`] reads a range
/// from: a plain string cell is never copied out of the page body.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    pub id: String,
    /// [`Row::time`].
    pub time: Option<UnixMs>,
    /// One per table column, in the table's order ([`Cell::Null`] for a column not kept).
    pub cells: Vec<Cell>,
    /// [`Row::id_derived`].
    pub id_derived: bool,
    /// [`Row::partial`].
    pub partial: Option<String>,
}

/// A cell of a [`StoredRow`].
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Null, or a column not kept.
    Null,
    /// The row's id ([`StoredRow::id`]).
    Id,
    /// The bytes `start..end` of the row's item text: a JSON string without escapes,
    /// whose text is the cell.
    Item(usize, usize),
    /// The cell's text.
    Text(String),
    /// A time cell's text, held in the row (no allocation of its own).
    Time(IsoText),
}

impl StoredRow {
    /// Cell `i` (the table's column order) of the row whose item text is `item`; `None`
    /// for null.
    pub fn cell<'r>(&'r self, i: usize, item: &'r str) -> Option<&'r str> {
        match self.cells.get(i)? {
            Cell::Null => None,
            Cell::Id => Some(&self.id),
            Cell::Item(start, end) => {
                let text = item.get(*start..*end);
                debug_assert!(text.is_some(), "a cell's range lies in its item");
                text
            }
            Cell::Text(text) => Some(text),
            Cell::Time(text) => Some(text.as_str()),
        }
    }

    /// The row of [`Row`] `row`, keeping the cells at `keep`.
    pub fn from_row(row: Row, keep: &[usize]) -> StoredRow {
        let cells = row
            .cells
            .into_iter()
            .enumerate()
            .map(|(i, cell)| match cell {
                Some(text) if keep.contains(&i) => Cell::Text(text),
                _ => Cell::Null,
            })
            .collect();
        StoredRow {
            id: row.id,
            time: row.time,
            cells,
            id_derived: row.id_derived,
            partial: row.partial,
        }
    }

    /// Bytes the row holds on the heap beyond its own size.
    pub fn heap_bytes(&self) -> usize {
        self.id.capacity()
            + self.cells.capacity() * std::mem::size_of::<Cell>()
            + self
                .cells
                .iter()
                .map(|c| match c {
                    Cell::Text(t) => t.capacity(),
                    _ => 0,
                })
                .sum::<usize>()
            + self.partial.as_ref().map_or(0, String::capacity)
    }
}

/// A raw item that cannot be turned into a Sentinel stream record (not a JSON object;
/// `sink::sentinel::stream_record`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("item is not a JSON object: {0}")]
pub struct TransformError(pub(crate) String);

/// Applies the source's DCR transformation to one raw API item. Never refuses an item:
/// every item Miro returned must be stored (see [`partial_row`]).
pub fn to_row(source: SourceKind, raw: &str) -> Row {
    // The fast path reads the item into borrowed fields; anything it does not handle
    // (duplicate keys, a missing id) takes the general path, and an item even that cannot
    // read (nesting beyond the parser's depth limit, bad escapes) the partial path.
    if let Some(row) = fast::to_row(source, raw) {
        return row;
    }
    general_row(source, raw).unwrap_or_else(|| partial_row(source, raw))
}

/// One stored item's cells for reading a few columns of it (the views' `mirotrail_column`):
/// the item is read once, as [`to_row`] reads it, and a cell that is a plain JSON string
/// stays a range of the item until it is asked for, so reading one column of a row makes
/// no string for the others. Every cell equals `to_row(source, item).cells[i]`.
#[derive(Debug)]
pub(crate) struct ItemCells {
    item: String,
    cells: Vec<fast::Spec>,
}

impl ItemCells {
    pub(crate) fn new(source: SourceKind, item: String) -> ItemCells {
        let cells = fast::specs(source, &item)
            .map(|(_, cells)| {
                cells
                    .into_iter()
                    .map(|spec| match spec {
                        fast::Spec::Dynamic(start, end) => {
                            fast::Spec::Done(fast::render_dynamic(&item[start..end]))
                        }
                        other => other,
                    })
                    .collect()
            })
            .unwrap_or_else(|| {
                to_row(source, &item)
                    .cells
                    .into_iter()
                    .map(fast::Spec::Done)
                    .collect()
            });
        ItemCells { item, cells }
    }

    /// Cell `index` (the table's column order; `None` for null or no such column).
    pub(crate) fn get(&self, index: usize) -> Option<&str> {
        match self.cells.get(index)? {
            fast::Spec::Str(start, end) => self.item.get(*start..*end),
            fast::Spec::Done(cell) => cell.as_deref(),
            fast::Spec::Time(text) => Some(text.as_str()),
            fast::Spec::Dynamic(..) => unreachable!("rendered by `ItemCells::new`"),
        }
    }
}

/// [`to_row`] for a store that keeps only some columns and derives the others on read:
/// the same `id`, `time`, `id_derived` and `partial`, and the same cells at the column
/// indices in `keep` ([`StoredRow::cell`] with `raw`); the other cells are null. An item
/// is read as [`to_row`] reads it (every cell that can fail is still checked, so the same
/// items take the general path), but the text of a plain string cell is never copied (it
/// stays a range of `raw`), and a dynamic cell not kept is not rendered when a scan of its
/// text shows it renders (`fast::Spec::Dynamic`).
pub fn to_row_keeping(source: SourceKind, raw: &str, keep: &[usize]) -> StoredRow {
    let mask = keep_mask(keep);
    fast::specs_keeping(source, raw, mask)
        .and_then(|(time, specs)| kept_row(raw, time, specs, mask))
        .unwrap_or_else(|| StoredRow::from_row(to_row(source, raw), keep))
}

/// The column indices `keep` as a bit set (bit `i` for column `i`; a table has fewer
/// than 64 columns).
fn keep_mask(keep: &[usize]) -> u64 {
    keep.iter().fold(0, |mask, &i| {
        mask | u32::try_from(i)
            .ok()
            .and_then(|i| 1u64.checked_shl(i))
            .unwrap_or(0)
    })
}

/// [`to_row_keeping`] for an item read where it starts in a longer text (a page body):
/// `rest` starts with the item's `{`. Returns the item's length in bytes (its text is
/// `&rest[..len]`, from which the row's cells are read) and the row, or `None` when the
/// item does not take the fast path; the caller then finds the item's end by other means
/// and calls [`to_row_keeping`], which gives what it always gave. When `Some`, the row
/// equals `to_row_keeping(source, &rest[..len], keep)` (checked with every kept-cells
/// test: `assert_prefix_row_equals_the_row`): this is the page's one parse of the item
/// (`miro::page::parse_page_reading`).
pub fn to_row_keeping_prefix(
    source: SourceKind,
    rest: &str,
    keep: &[usize],
) -> Option<(usize, StoredRow)> {
    let mask = keep_mask(keep);
    let (len, time, specs) = fast::specs_prefix(source, rest, mask)?;
    let raw = rest.get(..len)?;
    kept_row(raw, time, specs, mask).map(|row| (len, row))
}

// `kept_row` turns the cells of `fast::specs_keeping` into the row's in their own
// allocation: the two types must have the same size and alignment.
const _: () = assert!(
    std::mem::size_of::<fast::Spec>() == std::mem::size_of::<Cell>()
        && std::mem::align_of::<fast::Spec>() == std::mem::align_of::<Cell>()
);

/// The row of an item read by `fast::specs_keeping` with the columns `keep` (a
/// [`keep_mask`]); `None` if the id is not rendered (the general path then decides).
fn kept_row(
    raw: &str,
    time: Option<UnixMs>,
    mut specs: Vec<fast::Spec>,
    keep: u64,
) -> Option<StoredRow> {
    // Cell 1 is the id, which the fast path always renders: moved out, not copied.
    let id = match specs.get_mut(1) {
        Some(fast::Spec::Done(id @ Some(_))) => id.take()?,
        _ => return None,
    };
    let cells: Vec<Cell> = specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| match spec {
            _ if (keep >> i) & 1 == 0 => Cell::Null,
            _ if i == 1 => Cell::Id,
            fast::Spec::Str(start, end) => Cell::Item(start, end),
            fast::Spec::Dynamic(start, end) => {
                fast::render_dynamic(&raw[start..end]).map_or(Cell::Null, Cell::Text)
            }
            fast::Spec::Done(cell) => cell.map_or(Cell::Null, Cell::Text),
            fast::Spec::Time(text) => Cell::Time(text),
        })
        .collect();
    Some(StoredRow {
        id,
        time,
        cells,
        id_derived: false,
        partial: None,
    })
}

/// The general path: the whole item as a `serde_json::Value`; `None` if it does not parse
/// as a JSON object.
fn general_row(source: SourceKind, raw: &str) -> Option<Row> {
    let Ok(Value::Object(item)) = serde_json::from_str::<Value>(raw) else {
        return None;
    };
    Some(match source {
        SourceKind::AuditLogs => audit_row(&item, raw),
        SourceKind::ContentLogs => content_row(&item, raw),
        SourceKind::AiInteractionLogs => ai_row(&item, raw),
    })
}

/// The top-level members of an object item, each as its JSON text. serde_json skips
/// nested values into a `RawValue` without recursing, so any depth is read here.
pub(crate) type Members<'a> = Vec<(std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue)>;

pub(crate) fn members(raw: &str) -> Result<Members<'_>, String> {
    use serde::de::DeserializeSeed;
    struct MembersVisitor;
    impl<'de> serde::de::Visitor<'de> for MembersVisitor {
        type Value = Members<'de>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    struct MembersSeed;
    impl<'de> DeserializeSeed<'de> for MembersSeed {
        type Value = Members<'de>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(MembersVisitor)
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw);
    MembersSeed
        .deserialize(&mut de)
        .and_then(|m| de.end().map(|()| m))
        .map_err(|e| e.to_string())
}

/// The last resort: each top-level member on its own. Members that parse are used as the
/// general path would; a dynamic column whose member does not parse (nested deeper than
/// serde_json's limit of 128) keeps the member's JSON text exactly as sent, and any other
/// unreadable member counts as missing. If the item is not even an object of members, only
/// the id can be derived (a hash of the raw text, as for items without an id). The row says
/// which members it could not read, for the WARN, the metric and `status`.
fn partial_row(source: SourceKind, raw: &str) -> Row {
    let members = members(raw);
    let mut item = Map::new();
    // (member, its JSON text, why it could not be read)
    let mut unread: Vec<(String, String, String)> = Vec::new();
    match members {
        Ok(members) => {
            for (key, value) in members {
                match serde_json::from_str::<Value>(value.get()) {
                    Ok(v) => {
                        unread.retain(|(k, _, _)| k != key.as_ref());
                        item.insert(key.into_owned(), v);
                    }
                    Err(e) => {
                        item.remove(key.as_ref());
                        unread.retain(|(k, _, _)| k != key.as_ref());
                        unread.push((
                            key.into_owned(),
                            value.get().trim().to_string(),
                            e.to_string(),
                        ));
                    }
                }
            }
        }
        Err(e) => unread.push((String::new(), String::new(), e)),
    }
    let mut row = match source {
        SourceKind::AuditLogs => audit_row(&item, raw),
        SourceKind::ContentLogs => content_row(&item, raw),
        SourceKind::AiInteractionLogs => ai_row(&item, raw),
    };
    let mut reasons = Vec::new();
    for (key, text, error) in unread {
        if let Some(i) = columns(source)
            .iter()
            .position(|c| *c == key.as_str() && DYNAMIC_COLUMNS.contains(c))
        {
            row.cells[i] = Some(text);
        }
        let name = if key.is_empty() {
            "the item"
        } else {
            key.as_str()
        };
        reasons.push(format!("{name}: {error}"));
    }
    row.partial = (!reasons.is_empty()).then(|| reasons.join("; "));
    row
}

fn audit_row(item: &Map<String, Value>, raw: &str) -> Row {
    let (id, id_derived) = item_id(item, raw);
    let time = datetime(item.get("createdAt"));
    let iso = time.map(UnixMs::to_iso);
    let s = |path: &[&str]| Some(kql_tostring(lookup(item, path)));
    let cells = vec![
        iso.clone(),
        Some(id.clone()),
        iso,
        s(&["event"]),
        s(&["category"]),
        s(&["type"]),
        s(&["createdBy", "email"]),
        s(&["createdBy", "id"]),
        s(&["createdBy", "name"]),
        s(&["createdBy", "type"]),
        s(&["object", "id"]),
        s(&["object", "name"]),
        s(&["context", "ip"]),
        s(&["context", "team", "id"]),
        s(&["context", "team", "name"]),
        s(&["context", "team", "type"]),
        s(&["context", "organization", "id"]),
        s(&["context", "organization", "name"]),
        s(&["context", "organization", "type"]),
        dynamic(item.get("details")),
    ];
    Row {
        id,
        time,
        cells,
        id_derived,
        partial: None,
    }
}

fn content_row(item: &Map<String, Value>, raw: &str) -> Row {
    let (id, id_derived) = item_id(item, raw);
    let time = datetime(item.get("actionTime"));
    let iso = time.map(UnixMs::to_iso);
    let s = |path: &[&str]| Some(kql_tostring(lookup(item, path)));
    let cells = vec![
        iso.clone(),
        Some(id.clone()),
        iso,
        s(&["actionType"]),
        s(&["actor", "id"]),
        s(&["actor", "email"]),
        s(&["actor", "name"]),
        s(&["contentId"]),
        s(&["itemId"]),
        s(&["itemType"]),
        dynamic(item.get("relationships")),
        dynamic(item.get("state")),
    ];
    Row {
        id,
        time,
        cells,
        id_derived,
        partial: None,
    }
}

/// `TimeGenerated` is `createdAt` (when the interaction happened, like the other tables'
/// event time); the row's window time is `storedAt`.
fn ai_row(item: &Map<String, Value>, raw: &str) -> Row {
    let (id, id_derived) = item_id(item, raw);
    let created = datetime(item.get("createdAt")).map(UnixMs::to_iso);
    let stored_at = datetime(item.get("storedAt"));
    let s = |path: &[&str]| Some(kql_tostring(lookup(item, path)));
    let cells = vec![
        created.clone(),
        Some(id.clone()),
        created,
        stored_at.map(UnixMs::to_iso),
        s(&["sessionId"]),
        s(&["messageId"]),
        s(&["aiFeatureName"]),
        s(&["logType"]),
        s(&["object", "id"]),
        s(&["object", "type"]),
        s(&["actor", "id"]),
        s(&["actor", "email"]),
        s(&["actor", "name"]),
        dynamic(item.get("details")),
    ];
    Row {
        id,
        time: stored_at,
        cells,
        id_derived,
        partial: None,
    }
}

/// The item's `id` as text; a missing or empty one is derived from the item's bytes so
/// that the item is still stored once (and re-reading it still deduplicates).
fn item_id(item: &Map<String, Value>, raw: &str) -> (String, bool) {
    let id = match item.get("id") {
        // A number too large for 64 bits was read as a float: take its exact digits
        // from the raw text, so two such ids never collapse into one.
        Some(Value::Number(n)) if !(n.is_i64() || n.is_u64()) => {
            exact_id_text(raw).unwrap_or_else(|| n.to_string())
        }
        other => kql_tostring(other),
    };
    if !id.is_empty() {
        return (id, false);
    }
    let digest = Sha256::digest(raw.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    (format!("mirotrail-sha256-{hex}"), true)
}

/// The same transformation without building a DOM of the item: top-level and nested
/// objects are read into borrowed raw fields, and only scalars in unusual shapes and the
/// dynamic columns are parsed further. `None` when the item needs the general path.
pub(crate) mod fast {
    use std::borrow::Cow;

    use serde::Deserialize;
    use serde_json::Value;
    use serde_json::value::RawValue;

    use super::scan::{Key, Scan, key_word};
    use super::{IsoText, Row, SourceKind, UnixMs, kql_tostring};

    /// A member's exact JSON text (a `RawValue`'s), read by serde_json or by the scanner,
    /// and whether it is a string without escapes (whose text between the quotes is the
    /// string).
    #[derive(Debug, Clone, Copy)]
    pub(super) struct Json<'a> {
        text: &'a str,
        plain: bool,
        /// Known to render as a dynamic cell ([`surely_renders`]): the scanner read it,
        /// it holds no backslash and nests less than the scanner's limit, which is under
        /// the canonical writer's. `false`: not known.
        renders: bool,
    }

    const _: () = assert!(super::scan::MAX_DEPTH < super::CANONICAL_MAX_DEPTH);

    /// Equal members: the same text (read by the scanner or by serde).
    impl PartialEq for Json<'_> {
        fn eq(&self, other: &Self) -> bool {
            (self.text, self.plain) == (other.text, other.plain)
        }
    }

    impl<'a> Json<'a> {
        fn get(self) -> &'a str {
            self.text
        }

        /// The text of a member that is a JSON string ([`string`]): a plain one's is
        /// between its quotes, with no look for a backslash (the reader saw none).
        fn string(self) -> Option<Cow<'a, str>> {
            if self.plain {
                return self.text.get(1..self.text.len() - 1).map(Cow::Borrowed);
            }
            string(self.text)
        }

        /// The JSON text `text` the scanner read, and what it knows of it: whether it is
        /// a plain string, and whether it holds no escape.
        fn scanned(text: &'a str, plain: bool, escape_free: bool) -> Json<'a> {
            debug_assert_eq!(plain, text.starts_with('"') && !text.contains('\\'));
            debug_assert_eq!(escape_free, !text.contains('\\'));
            Json {
                text,
                plain,
                renders: escape_free,
            }
        }
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Json<'a> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            <&'a RawValue>::deserialize(d).map(|r| {
                let text = r.get();
                let plain = text.starts_with('"') && !text.contains('\\');
                Json {
                    text,
                    plain,
                    renders: false,
                }
            })
        }
    }

    /// `None`: missing or `null`.
    type Raw<'a> = Option<Json<'a>>;

    #[derive(Deserialize, Default, Debug, PartialEq)]
    struct Audit<'a> {
        #[serde(borrow)]
        id: Raw<'a>,
        #[serde(borrow, rename = "type")]
        kind: Raw<'a>,
        #[serde(borrow)]
        event: Raw<'a>,
        #[serde(borrow)]
        category: Raw<'a>,
        #[serde(borrow, rename = "createdAt")]
        created_at: Raw<'a>,
        #[serde(borrow, default, rename = "createdBy")]
        created_by: Obj<Entity<'a>>,
        #[serde(borrow, default)]
        object: Obj<Entity<'a>>,
        #[serde(borrow, default)]
        context: Obj<Context<'a>>,
        #[serde(borrow)]
        details: Raw<'a>,
    }

    #[derive(Deserialize, Default, Debug, PartialEq)]
    struct Content<'a> {
        #[serde(borrow)]
        id: Raw<'a>,
        #[serde(borrow, rename = "contentId")]
        content_id: Raw<'a>,
        #[serde(borrow, rename = "actionType")]
        action_type: Raw<'a>,
        #[serde(borrow, rename = "actionTime")]
        action_time: Raw<'a>,
        #[serde(borrow, default)]
        actor: Obj<Entity<'a>>,
        #[serde(borrow, rename = "itemType")]
        item_type: Raw<'a>,
        #[serde(borrow, rename = "itemId")]
        item_id: Raw<'a>,
        #[serde(borrow)]
        state: Raw<'a>,
        #[serde(borrow)]
        relationships: Raw<'a>,
    }

    #[derive(Deserialize, Default, Debug, PartialEq)]
    struct Ai<'a> {
        #[serde(borrow)]
        id: Raw<'a>,
        #[serde(borrow, rename = "createdAt")]
        created_at: Raw<'a>,
        #[serde(borrow, rename = "storedAt")]
        stored_at: Raw<'a>,
        #[serde(borrow, rename = "sessionId")]
        session_id: Raw<'a>,
        #[serde(borrow, rename = "messageId")]
        message_id: Raw<'a>,
        #[serde(borrow, rename = "aiFeatureName")]
        ai_feature_name: Raw<'a>,
        #[serde(borrow, rename = "logType")]
        log_type: Raw<'a>,
        #[serde(borrow, default)]
        object: Obj<Entity<'a>>,
        #[serde(borrow, default)]
        actor: Obj<Entity<'a>>,
        #[serde(borrow)]
        details: Raw<'a>,
    }

    /// `createdBy`, `object`, `context.team`, `context.organization` and `actor`.
    #[derive(Deserialize, Default, Debug, PartialEq)]
    struct Entity<'a> {
        #[serde(borrow)]
        id: Raw<'a>,
        #[serde(borrow)]
        name: Raw<'a>,
        #[serde(borrow)]
        email: Raw<'a>,
        #[serde(borrow, rename = "type")]
        kind: Raw<'a>,
    }

    /// `context`.
    #[derive(Deserialize, Default, Debug, PartialEq)]
    struct Context<'a> {
        #[serde(borrow)]
        ip: Raw<'a>,
        #[serde(borrow, default)]
        team: Obj<Entity<'a>>,
        #[serde(borrow, default)]
        organization: Obj<Entity<'a>>,
    }

    /// A nested object's fields, read in the same pass as the item; anything but an
    /// object has none (KQL: `""`). Arrays are skipped element by element as raw text, so
    /// any depth is read, as it is for a raw field. The Elasticsearch sink's one-pass
    /// reading uses it too.
    #[derive(Default, Debug, PartialEq)]
    pub(crate) struct Obj<T>(pub(crate) T);

    impl<'de, T: Deserialize<'de> + Default> Deserialize<'de> for Obj<T> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor<T>(std::marker::PhantomData<T>);
            impl<'de, T: Deserialize<'de> + Default> serde::de::Visitor<'de> for Visitor<T> {
                type Value = Obj<T>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    map: A,
                ) -> Result<Obj<T>, A::Error> {
                    // With `arbitrary_precision` a number also arrives as a map (of
                    // serde_json's private key), whose one key no field matches: no fields.
                    T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Obj)
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<Obj<T>, A::Error> {
                    while seq.next_element::<&'de RawValue>()?.is_some() {}
                    Ok(Obj(T::default()))
                }
                fn visit_bool<E>(self, _: bool) -> Result<Obj<T>, E> {
                    Ok(Obj(T::default()))
                }
                fn visit_i64<E>(self, _: i64) -> Result<Obj<T>, E> {
                    Ok(Obj(T::default()))
                }
                fn visit_u64<E>(self, _: u64) -> Result<Obj<T>, E> {
                    Ok(Obj(T::default()))
                }
                fn visit_f64<E>(self, _: f64) -> Result<Obj<T>, E> {
                    Ok(Obj(T::default()))
                }
                fn visit_str<E>(self, _: &str) -> Result<Obj<T>, E> {
                    Ok(Obj(T::default()))
                }
                fn visit_unit<E>(self) -> Result<Obj<T>, E> {
                    Ok(Obj(T::default()))
                }
                fn visit_none<E>(self) -> Result<Obj<T>, E> {
                    Ok(Obj(T::default()))
                }
            }
            d.deserialize_any(Visitor(std::marker::PhantomData))
        }
    }

    /// Reading a struct's members with the hand-written scanner ([`super::scan`]), as
    /// serde reads them: the same fields, a duplicate field refused (the caller then
    /// reads the item with serde_json, which refuses it too), other members skipped.
    trait Scanned<'a>: Sized + Default {
        /// Reads the member `key`, whose value is next; `seen` holds the fields read so
        /// far. `None`: not read.
        fn member(&mut self, seen: &mut u32, s: &mut Scan<'a>, key: Key) -> Option<()>;
    }

    /// The object that starts at the scanner, read into `T`.
    fn scan_object<'a, T: Scanned<'a>>(s: &mut Scan<'a>) -> Option<T> {
        let (mut t, mut seen) = (T::default(), 0);
        s.members(|s, key| t.member(&mut seen, s, key))?;
        Some(t)
    }

    /// A nested object's fields, as [`Obj`] reads them: none for a value that is not an
    /// object.
    fn scan_obj<'a, T: Scanned<'a>>(s: &mut Scan<'a>) -> Option<Obj<T>> {
        if s.object_or_skip()? {
            scan_object(s).map(Obj)
        } else {
            Some(Obj(T::default()))
        }
    }

    /// A member's text, as serde reads an `Option<&RawValue>` (`null` is `None`).
    fn scan_raw<'a>(s: &mut Scan<'a>) -> Option<Raw<'a>> {
        s.raw()
            .map(|r| r.map(|(text, plain, escape_free)| Json::scanned(text, plain, escape_free)))
    }

    macro_rules! scanned {
        ($t:ident { $($key:literal => $field:ident: $how:ident @ $bit:literal),* $(,)? }) => {
            impl<'a> Scanned<'a> for $t<'a> {
                fn member(
                    &mut self,
                    seen: &mut u32,
                    s: &mut Scan<'a>,
                    key: Key,
                ) -> Option<()> {
                    // The wanted keys' words ([`key_word`]), matched in one comparison
                    // each rather than by length and bytes.
                    const WORDS: &[u128] = &[$(key_word($key)),*];
                    const _: () = {
                        // Each field's bit is its place in the list (`WORDS[$bit]`).
                        let bits = [$($bit),*];
                        let mut i = 0;
                        while i < bits.len() {
                            assert!(bits[i] == i);
                            i += 1;
                        }
                    };
                    match key.word {
                        $(word if word == WORDS[$bit] => {
                            if *seen & (1 << $bit) != 0 {
                                return None;
                            }
                            *seen |= 1 << $bit;
                            self.$field = $how(s)?;
                            Some(())
                        })*
                        _ => s.skip(0).map(drop),
                    }
                }
            }
        };
    }

    scanned!(Audit {
        "id" => id: scan_raw @ 0,
        "type" => kind: scan_raw @ 1,
        "event" => event: scan_raw @ 2,
        "category" => category: scan_raw @ 3,
        "createdAt" => created_at: scan_raw @ 4,
        "createdBy" => created_by: scan_obj @ 5,
        "object" => object: scan_obj @ 6,
        "context" => context: scan_obj @ 7,
        "details" => details: scan_raw @ 8,
    });
    scanned!(Content {
        "id" => id: scan_raw @ 0,
        "contentId" => content_id: scan_raw @ 1,
        "actionType" => action_type: scan_raw @ 2,
        "actionTime" => action_time: scan_raw @ 3,
        "actor" => actor: scan_obj @ 4,
        "itemType" => item_type: scan_raw @ 5,
        "itemId" => item_id: scan_raw @ 6,
        "state" => state: scan_raw @ 7,
        "relationships" => relationships: scan_raw @ 8,
    });
    scanned!(Ai {
        "id" => id: scan_raw @ 0,
        "createdAt" => created_at: scan_raw @ 1,
        "storedAt" => stored_at: scan_raw @ 2,
        "sessionId" => session_id: scan_raw @ 3,
        "messageId" => message_id: scan_raw @ 4,
        "aiFeatureName" => ai_feature_name: scan_raw @ 5,
        "logType" => log_type: scan_raw @ 6,
        "object" => object: scan_obj @ 7,
        "actor" => actor: scan_obj @ 8,
        "details" => details: scan_raw @ 9,
    });
    scanned!(Entity {
        "id" => id: scan_raw @ 0,
        "name" => name: scan_raw @ 1,
        "email" => email: scan_raw @ 2,
        "type" => kind: scan_raw @ 3,
    });
    scanned!(Context {
        "ip" => ip: scan_raw @ 0,
        "team" => team: scan_obj @ 1,
        "organization" => organization: scan_obj @ 2,
    });

    /// A JSON string's text: borrowed from the raw text when it holds no escape (the
    /// item was parsed already, so the string is valid JSON), decoded otherwise.
    fn string(t: &str) -> Option<Cow<'_, str>> {
        match t.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            Some(inner) if !inner.contains('\\') => Some(Cow::Borrowed(inner)),
            _ => serde_json::from_str::<Cow<'_, str>>(t).ok(),
        }
    }

    /// KQL `tostring()` of a raw field, as the general path computes it.
    fn text(raw: Raw<'_>) -> Option<String> {
        let Some(r) = raw else {
            return Some(String::new());
        };
        let t = r.get();
        if t.starts_with('"') {
            r.string().map(Cow::into_owned)
        } else {
            serde_json::from_str::<Value>(t)
                .ok()
                .map(|v| kql_tostring(Some(&v)))
        }
    }

    fn datetime(raw: Raw<'_>) -> Option<UnixMs> {
        let r = raw?;
        if !r.get().starts_with('"') {
            return None;
        }
        UnixMs::parse(&r.string()?)
    }

    /// A dynamic column: compact JSON (keys sorted, as the general path writes it).
    fn dynamic(raw: Raw<'_>) -> Option<Option<String>> {
        let Some(r) = raw else {
            return Some(None);
        };
        render_dynamic(r.get()).map(Some)
    }

    /// A dynamic cell of the JSON text `t`: its canonical form, `None` if it has none.
    pub(super) fn render_dynamic(t: &str) -> Option<String> {
        let mut out = String::with_capacity(t.len());
        if super::write_canonical(t, &mut out, 0) {
            return Some(out);
        }
        serde_json::from_str::<Value>(t).ok().map(|v| v.to_string())
    }

    /// A dynamic cell: left as a range of the item ([`Spec::Dynamic`]) when a scan shows
    /// it renders, otherwise rendered now, exactly as [`dynamic`] does (it can fail).
    fn dynamic_spec(item: &str, raw: Raw<'_>) -> Option<Spec> {
        match raw {
            Some(r) if r.renders || surely_renders(r.get()) => {
                let start = r.get().as_ptr().addr() - item.as_ptr().addr();
                Some(Spec::Dynamic(start, start + r.get().len()))
            }
            _ => dynamic(raw).map(Spec::Done),
        }
    }

    /// Whether [`super::write_canonical`] surely accepts `t`, a JSON value the item's
    /// parse already read: it refuses such a value only for an escape serde_json will not
    /// decode (a lone surrogate) or nesting of [`super::CANONICAL_MAX_DEPTH`] or more, so
    /// a value without a backslash whose brackets (outside strings, which then end at
    /// their next quote) nest less deep renders. A value this scan does not vouch for may
    /// still render: [`dynamic`] decides.
    pub(super) fn surely_renders(t: &str) -> bool {
        let (mut depth, mut deepest, mut in_string) = (0u32, 0u32, false);
        for &b in t.as_bytes() {
            match b {
                b'\\' => return false,
                b'"' => in_string = !in_string,
                b'{' | b'[' if !in_string => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                b'}' | b']' if !in_string => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        deepest < super::CANONICAL_MAX_DEPTH
    }

    /// The id as text; `None` (general path) when it is missing, empty or not a plain
    /// string or 64-bit integer.
    fn id(raw: Raw<'_>) -> Option<String> {
        let r = raw?;
        let t = r.get();
        let id = if t.starts_with('"') {
            r.string()?.into_owned()
        } else if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
            match serde_json::from_str::<Value>(t).ok()? {
                Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
                _ => return None,
            }
        } else {
            return None;
        };
        (!id.is_empty()).then_some(id)
    }

    pub(super) fn to_row(source: SourceKind, raw: &str) -> Option<Row> {
        match source {
            SourceKind::AuditLogs => {
                let (a, _): (Audit<'_>, _) = read(raw, true)?;
                let id = id(a.id)?;
                let time = datetime(a.created_at);
                let iso = time.map(UnixMs::to_iso);
                let Obj(by) = a.created_by;
                let Obj(object) = a.object;
                let Obj(context) = a.context;
                let (Obj(team), Obj(org)) = (context.team, context.organization);
                let cells = vec![
                    iso.clone(),
                    Some(id.clone()),
                    iso,
                    Some(text(a.event)?),
                    Some(text(a.category)?),
                    Some(text(a.kind)?),
                    Some(text(by.email)?),
                    Some(text(by.id)?),
                    Some(text(by.name)?),
                    Some(text(by.kind)?),
                    Some(text(object.id)?),
                    Some(text(object.name)?),
                    Some(text(context.ip)?),
                    Some(text(team.id)?),
                    Some(text(team.name)?),
                    Some(text(team.kind)?),
                    Some(text(org.id)?),
                    Some(text(org.name)?),
                    Some(text(org.kind)?),
                    dynamic(a.details)?,
                ];
                Some(Row {
                    id,
                    time,
                    cells,
                    id_derived: false,
                    partial: None,
                })
            }
            SourceKind::ContentLogs => {
                let (c, _): (Content<'_>, _) = read(raw, true)?;
                let id = id(c.id)?;
                let time = datetime(c.action_time);
                let iso = time.map(UnixMs::to_iso);
                let Obj(actor) = c.actor;
                let cells = vec![
                    iso.clone(),
                    Some(id.clone()),
                    iso,
                    Some(text(c.action_type)?),
                    Some(text(actor.id)?),
                    Some(text(actor.email)?),
                    Some(text(actor.name)?),
                    Some(text(c.content_id)?),
                    Some(text(c.item_id)?),
                    Some(text(c.item_type)?),
                    dynamic(c.relationships)?,
                    dynamic(c.state)?,
                ];
                Some(Row {
                    id,
                    time,
                    cells,
                    id_derived: false,
                    partial: None,
                })
            }
            SourceKind::AiInteractionLogs => {
                let (a, _): (Ai<'_>, _) = read(raw, true)?;
                let id = id(a.id)?;
                let created = datetime(a.created_at).map(UnixMs::to_iso);
                let stored_at = datetime(a.stored_at);
                let Obj(object) = a.object;
                let Obj(actor) = a.actor;
                let cells = vec![
                    created.clone(),
                    Some(id.clone()),
                    created,
                    stored_at.map(UnixMs::to_iso),
                    Some(text(a.session_id)?),
                    Some(text(a.message_id)?),
                    Some(text(a.ai_feature_name)?),
                    Some(text(a.log_type)?),
                    Some(text(object.id)?),
                    Some(text(object.kind)?),
                    Some(text(actor.id)?),
                    Some(text(actor.email)?),
                    Some(text(actor.name)?),
                    dynamic(a.details)?,
                ];
                Some(Row {
                    id,
                    time: stored_at,
                    cells,
                    id_derived: false,
                    partial: None,
                })
            }
        }
    }

    /// A cell of an item read by [`specs`]: where its text is in the item, or its value.
    #[derive(Debug, Clone, PartialEq)]
    pub(super) enum Spec {
        /// The bytes `start..end` of the item: a JSON string without escapes, whose text
        /// is the cell.
        Str(usize, usize),
        /// The cell, rendered when the item was read.
        Done(Option<String>),
        /// The bytes `start..end` of the item: a JSON value whose canonical form
        /// ([`render_dynamic`]) is the cell, known to exist ([`surely_renders`]).
        Dynamic(usize, usize),
        /// A time cell's text ([`UnixMs::iso_text`]), held in the cell. (Its size is
        /// [`super::Cell`]'s, so `kept_row` turns the cells into a row's in place.)
        Time(IsoText),
    }

    /// A text cell: a string without escapes stays a range of the item (rendered when it
    /// is read); anything else is rendered now, exactly as [`text`] does (it can fail).
    fn text_spec(item: &str, raw: Raw<'_>) -> Option<Spec> {
        match raw {
            // A plain string's text is its JSON text less the two quotes.
            Some(r) if r.plain && r.text.len() >= 2 => {
                let start = r.text.as_ptr().addr() - item.as_ptr().addr() + 1;
                Some(Spec::Str(start, start + r.text.len() - 2))
            }
            _ => text(raw).map(|t| Spec::Done(Some(t))),
        }
    }

    /// The cells of [`to_row`] without rendering the plain strings: `None` exactly when
    /// [`to_row`] is `None` (every cell that can fail is checked here), otherwise the
    /// rendered cells equal `to_row`'s (the property test `lazy_cells_equal_the_row`).
    /// Also returns the row's `time`, as [`to_row`] gives it.
    pub(super) fn specs(source: SourceKind, raw: &str) -> Option<(Option<UnixMs>, Vec<Spec>)> {
        specs_keeping(source, raw, u64::MAX)
    }

    /// [`specs`] for a reader of the columns `keep` only (bit `i` for column `i`): the
    /// same `None`, `time` and cells at those columns; a time cell elsewhere is left
    /// `Spec::Done(None)` rather than rendered (the other cells are what [`specs`] gives).
    pub(super) fn specs_keeping(
        source: SourceKind,
        raw: &str,
        keep: u64,
    ) -> Option<(Option<UnixMs>, Vec<Spec>)> {
        read_specs(source, raw, true, keep).map(|(_, time, specs)| (time, specs))
    }

    /// [`specs_keeping`] of the item that starts `rest` (with its `{`) and ends where its
    /// JSON value ends, and the item's length in bytes: the same parse, the same cells.
    pub(super) fn specs_prefix(
        source: SourceKind,
        rest: &str,
        keep: u64,
    ) -> Option<(usize, Option<UnixMs>, Vec<Spec>)> {
        read_specs(source, rest, false, keep)
    }

    /// Reads the item into `T`: all of `text` (`whole`, nothing but whitespace after the
    /// value) or its first JSON value; returns it with the bytes of `text` it took.
    ///
    /// The hand-written scanner reads the usual item; what it does not vouch for is read
    /// by serde_json, with the same result (the scanner accepts only what serde_json
    /// accepts, and reads it the same way).
    fn read<'a, T: Deserialize<'a> + Scanned<'a>>(
        text: &'a str,
        whole: bool,
    ) -> Option<(T, usize)> {
        let mut s = Scan::new(text);
        if let Some(t) = scan_object::<T>(&mut s) {
            if !whole {
                return Some((t, s.offset()));
            }
            if s.at_end() {
                return Some((t, text.len()));
            }
        }
        if whole {
            return serde_json::from_str(text).ok().map(|t| (t, text.len()));
        }
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<T>();
        let item = stream.next()?.ok()?;
        Some((item, stream.byte_offset()))
    }

    fn read_specs(
        source: SourceKind,
        raw: &str,
        whole: bool,
        keep: u64,
    ) -> Option<(usize, Option<UnixMs>, Vec<Spec>)> {
        let t = |field: Raw<'_>| text_spec(raw, field);
        // A time cell, for a column kept (rendering it cannot fail).
        let iso = |column: u32, time: Option<UnixMs>| match time {
            Some(time) if (keep >> column) & 1 == 1 => time
                .iso_text()
                .map_or_else(|| Spec::Done(Some(time.to_iso())), Spec::Time),
            _ => Spec::Done(None),
        };
        let len;
        macro_rules! parse {
            () => {{
                let (item, n) = read(raw, whole)?;
                len = n;
                item
            }};
        }
        let (time, specs) = match source {
            SourceKind::AuditLogs => {
                let a: Audit<'_> = parse!();
                let id = id(a.id)?;
                let time = datetime(a.created_at);
                let Obj(by) = a.created_by;
                let Obj(object) = a.object;
                let Obj(context) = a.context;
                let (Obj(team), Obj(org)) = (context.team, context.organization);
                (
                    time,
                    vec![
                        iso(0, time),
                        Spec::Done(Some(id)),
                        iso(2, time),
                        t(a.event)?,
                        t(a.category)?,
                        t(a.kind)?,
                        t(by.email)?,
                        t(by.id)?,
                        t(by.name)?,
                        t(by.kind)?,
                        t(object.id)?,
                        t(object.name)?,
                        t(context.ip)?,
                        t(team.id)?,
                        t(team.name)?,
                        t(team.kind)?,
                        t(org.id)?,
                        t(org.name)?,
                        t(org.kind)?,
                        dynamic_spec(raw, a.details)?,
                    ],
                )
            }
            SourceKind::ContentLogs => {
                let c: Content<'_> = parse!();
                let id = id(c.id)?;
                let time = datetime(c.action_time);
                let Obj(actor) = c.actor;
                (
                    time,
                    vec![
                        iso(0, time),
                        Spec::Done(Some(id)),
                        iso(2, time),
                        t(c.action_type)?,
                        t(actor.id)?,
                        t(actor.email)?,
                        t(actor.name)?,
                        t(c.content_id)?,
                        t(c.item_id)?,
                        t(c.item_type)?,
                        dynamic_spec(raw, c.relationships)?,
                        dynamic_spec(raw, c.state)?,
                    ],
                )
            }
            SourceKind::AiInteractionLogs => {
                let a: Ai<'_> = parse!();
                let id = id(a.id)?;
                let created = datetime(a.created_at);
                let stored_at = datetime(a.stored_at);
                let Obj(object) = a.object;
                let Obj(actor) = a.actor;
                (
                    stored_at,
                    vec![
                        iso(0, created),
                        Spec::Done(Some(id)),
                        iso(2, created),
                        iso(3, stored_at),
                        t(a.session_id)?,
                        t(a.message_id)?,
                        t(a.ai_feature_name)?,
                        t(a.log_type)?,
                        t(object.id)?,
                        t(object.kind)?,
                        t(actor.id)?,
                        t(actor.email)?,
                        t(actor.name)?,
                        dynamic_spec(raw, a.details)?,
                    ],
                )
            }
        };
        Some((len, time, specs))
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::store::transform::tests::{FULL, arb_json, unusual_text};
        use proptest::prelude::*;

        /// The scanner's reading of the item that starts `text`, as `T`: `None` if it
        /// does not vouch for it; otherwise serde_json reads the same `T` from the same
        /// text and ends it at the same byte.
        fn scan_as_serde<'a, T>(text: &'a str) -> Option<T>
        where
            T: Scanned<'a> + Deserialize<'a> + PartialEq + std::fmt::Debug,
        {
            let mut s = Scan::new(text);
            let got = scan_object::<T>(&mut s)?;
            let mut stream = serde_json::Deserializer::from_str(text).into_iter::<T>();
            let want = match stream.next() {
                Some(Ok(want)) => want,
                other => panic!("the scanner read what serde_json refuses ({other:?}): {text}"),
            };
            assert_eq!(got, want, "{text}");
            assert_eq!(s.offset(), stream.byte_offset(), "{text}");
            Some(got)
        }

        /// Every source's reading of `text`; whether the scanner vouched for each.
        fn assert_scans_as_serde(text: &str) -> [bool; 3] {
            [
                scan_as_serde::<Audit<'_>>(text).is_some(),
                scan_as_serde::<Content<'_>>(text).is_some(),
                scan_as_serde::<Ai<'_>>(text).is_some(),
            ]
        }

        /// Realistic items (the emulator's) and the documented example are read by the
        /// scanner, as serde_json reads them; so is what follows them in a page.
        #[test]
        fn the_scanner_takes_realistic_items() {
            use mirotrail_emulator::miro::{MiroEmulatorConfig, MiroOrg};
            let org = MiroOrg::new(&MiroEmulatorConfig::demo(
                mirotrail_emulator::UnixMs(1_700_000_000_000),
                3,
                500,
                500,
                "t",
            ));
            for i in 0..500 {
                for item in [org.audit_event(i), org.content_item(i), org.ai_entry(i)] {
                    let raw = format!("{item},{{\"id\":\"next\"}}]}}");
                    assert_eq!(assert_scans_as_serde(&raw), [true; 3], "{raw}");
                }
            }
            assert_eq!(assert_scans_as_serde(FULL), [true; 3]);
        }

        /// Keys are matched by their bytes taken as a number (`scan::Key`): a wanted key,
        /// the same with bytes after it (to 18 bytes, past the 16 the scanner looks at
        /// at once), a key it starts with, and a key with a control character or an
        /// escape, far from the text's end and at it, are read as serde_json reads them.
        #[test]
        fn keys_match_whole_at_every_length() {
            let wanted = [
                "id",
                "type",
                "name",
                "createdAt",
                "createdBy",
                "organization",
                "relationships",
                "aiFeatureName",
                "contentId",
                "ip",
            ];
            for key in wanted {
                let mut variants = vec![key.to_string(), key[..key.len() - 1].to_string()];
                for more in 1..=(18 - key.len()) {
                    variants.push(format!("{key}{}", "x".repeat(more)));
                }
                variants.push(format!(r"{key}\u0041"));
                variants.push(format!("{key}\t"));
                for k in variants {
                    for text in [
                        format!(r#"{{"{k}":"v","id":"7","type":{{"{k}":1}}}}"#),
                        format!(r#"{{"id":"7","createdBy":{{"{k}":"v"}},"{k}":"w"}}"#),
                        format!(r#"{{"{k}":"v"}}"#),
                    ] {
                        assert_scans_as_serde(&text);
                    }
                }
            }
            // Read by the scanner, wanted keys taking their fields.
            let text = r#"{"id":"7","createdAt":"t","createdAtX":"u","createdBy":{"name":"n","namex":"m"}}"#;
            assert_eq!(assert_scans_as_serde(text), [true; 3]);
        }

        /// What the scanner leaves to serde_json: escapes in keys, duplicate fields,
        /// bad strings, numbers and literals, cut text, deep nesting; and what it reads.
        #[test]
        fn the_scanner_gives_up_on_the_unusual() {
            let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
            for (text, taken) in [
                (r#"{"id":"1","event":"a\u0062\n"}"#.to_string(), [true; 3]),
                (r#"{"id":"1","x":"\ud800"}"#.to_string(), [true; 3]),
                // `createdBy` is a nested object of audit logs only.
                (
                    r#"{"id":"1","createdBy":"\ud800"}"#.to_string(),
                    [false, true, true],
                ),
                (
                    r#"{"id":"1","createdBy":"plain","object":[1,{"a":2}]}"#.to_string(),
                    [true; 3],
                ),
                (r#"{"i\u0064":"1"}"#.to_string(), [false; 3]),
                (r#"{"id":"1","id":"2"}"#.to_string(), [false; 3]),
                (r#"{"id":"1","id":null}"#.to_string(), [false; 3]),
                (
                    r#"{"createdBy":{"id":"1","id":"2"}}"#.to_string(),
                    [false, true, true],
                ),
                (r#"{"x":1,"x":2}"#.to_string(), [true; 3]),
                (r#"{"id":"a\x"}"#.to_string(), [false; 3]),
                (r#"{"id":"a\u00g0"}"#.to_string(), [false; 3]),
                ("{\"id\":\"a\tb\"}".to_string(), [false; 3]),
                (r#"{"id":01}"#.to_string(), [false; 3]),
                (r#"{"id":1.}"#.to_string(), [false; 3]),
                (r#"{"id":-}"#.to_string(), [false; 3]),
                (r#"{"id":1e}"#.to_string(), [false; 3]),
                (r#"{"id":-0.5E+7}"#.to_string(), [true; 3]),
                (r#"{"id":nul}"#.to_string(), [false; 3]),
                (r#"{"id":nullx}"#.to_string(), [false; 3]),
                (r#"{"id":True}"#.to_string(), [false; 3]),
                (r#"{"id":"1",}"#.to_string(), [false; 3]),
                (r#"{"id":"1""#.to_string(), [false; 3]),
                (r#"{"id" "1"}"#.to_string(), [false; 3]),
                (r#"{"details":[1,]}"#.to_string(), [false; 3]),
                (format!(r#"{{"details":{deep}}}"#), [false; 3]),
                (
                    " { \"id\" : \"1\" , \"createdBy\" : null } ".to_string(),
                    [true; 3],
                ),
                ("[1]".to_string(), [false; 3]),
            ] {
                let got = assert_scans_as_serde(text.trim_start());
                assert_eq!(got, taken, "{text}");
            }
        }

        /// `text` with `edits` applied: each removes a character, or inserts or puts one
        /// of JSON's significant characters in place of one.
        fn mutated(text: &str, edits: &[(prop::sample::Index, u8, char)]) -> String {
            let mut chars: Vec<char> = text.chars().collect();
            for (at, op, c) in edits {
                if chars.is_empty() {
                    break;
                }
                let i = at.index(chars.len());
                match op % 3 {
                    0 => {
                        chars.remove(i);
                    }
                    1 => chars.insert(i, *c),
                    _ => chars[i] = *c,
                }
            }
            chars.into_iter().collect()
        }

        const SIGNIFICANT: &[char] = &[
            '"', '\\', '{', '}', '[', ']', ',', ':', ' ', '0', '1', '-', '+', '.', 'e', 'E', 'u',
            'n', 't', 'f', 'l', 'x', '\u{1}', '\n', '\u{e9}',
        ];

        proptest! {
            /// Generated items, as serde_json writes them and in unusual text (escaped
            /// keys, duplicates, whitespace): the scanner reads as serde_json does or
            /// leaves the item to it.
            #[test]
            fn the_scanner_reads_as_serde_reads(value in arb_json()) {
                let mut unusual = String::new();
                unusual_text(&value, &mut unusual);
                for text in [value.to_string(), unusual] {
                    assert_scans_as_serde(&text);
                    // What the scanner says renders, a scan of the text vouches for too.
                    let item = format!(r#"{{"details":{text}}}"#);
                    if let Some(Audit { details: Some(d), .. }) = scan_as_serde::<Audit<'_>>(&item) {
                        prop_assert!(!d.renders || surely_renders(d.get()), "{}", text);
                    }
                    assert_scans_as_serde(&format!("{text}]}}"));
                }
            }

            /// Items with characters removed, added or replaced: never accepted when
            /// serde_json refuses them, never read differently.
            #[test]
            fn the_scanner_reads_as_serde_reads_on_mutated_items(
                which in 0usize..3,
                edits in proptest::collection::vec(
                    (any::<prop::sample::Index>(), any::<u8>(), prop::sample::select(SIGNIFICANT)),
                    1..4,
                ),
            ) {
                let items = [
                    FULL.to_string(),
                    r#"{"id":"c1","contentId":"b1","actionType":"update","actionTime":"2024-05-01T10:00:00.5Z","actor":{"id":"u1","email":"a@x.io"},"itemType":"widget","itemId":"w1","state":{"text":"h\u00e9 \"q\"","n":[1.5e3,-0,true,false,null]},"relationships":[{"type":"parent"}]}"#.to_string(),
                    r#"{"id":"3f6c","createdAt":"2024-05-01T10:00:00.250+0000","storedAt":"2024-05-01T10:00:01Z","sessionId":"s1","object":{"id":"o","type":"board"},"actor":{"id":"u","name":"N"},"details":{"prompt":"x"},"n":-12.5e-3}"#.to_string(),
                ];
                let text = mutated(&items[which], &edits);
                assert_scans_as_serde(&text);
                assert_scans_as_serde(&format!("{text},{{}}]}}"));
            }
        }
    }
}

/// Nesting beyond which [`write_canonical`] leaves the value to `serde_json::Value` (whose
/// own limit, 128, then decides).
const CANONICAL_MAX_DEPTH: u32 = 100;

/// Writes the JSON text `raw` to `out` in the form `Value::to_string` gives it (compact,
/// object keys sorted, the last of duplicate keys kept, strings escaped as serde_json
/// escapes them), without building a `Value` tree: strings without escapes and integers
/// are copied as they are, other strings and numbers go through serde_json one by one.
/// `false` (and `out` in any state) when `raw` is not JSON or nests deeper than
/// [`CANONICAL_MAX_DEPTH`]: the caller then parses it as a `Value`.
fn write_canonical(raw: &str, out: &mut String, depth: u32) -> bool {
    use serde_json::value::RawValue;
    if depth >= CANONICAL_MAX_DEPTH {
        return false;
    }
    let t = raw.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
    match t.as_bytes().first() {
        Some(b'{') => {
            let Ok(mut members) = members(t) else {
                return false;
            };
            // Stable: of duplicate keys the last stays last, and is the one kept.
            members.sort_by(|a, b| a.0.cmp(&b.0));
            out.push('{');
            let mut first = true;
            for (i, (key, value)) in members.iter().enumerate() {
                if members.get(i + 1).is_some_and(|next| next.0 == *key) {
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                if !write_string(key, out) {
                    return false;
                }
                out.push(':');
                if !write_canonical(value.get(), out, depth + 1) {
                    return false;
                }
            }
            out.push('}');
            true
        }
        Some(b'[') => {
            let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(t) else {
                return false;
            };
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if !write_canonical(item.get(), out, depth + 1) {
                    return false;
                }
            }
            out.push(']');
            true
        }
        Some(b'"') if !t.contains('\\') && t.len() >= 2 && t.ends_with('"') => {
            out.push_str(t);
            true
        }
        Some(b'"') => match serde_json::from_str::<std::borrow::Cow<'_, str>>(t) {
            Ok(text) => write_string(&text, out),
            Err(_) => false,
        },
        Some(_) if matches!(t, "true" | "false" | "null") => {
            out.push_str(t);
            true
        }
        Some(_) if is_plain_integer(t) => {
            out.push_str(t);
            true
        }
        Some(_) => match serde_json::from_str::<Value>(t) {
            Ok(v @ Value::Number(_)) => {
                out.push_str(&v.to_string());
                true
            }
            _ => false,
        },
        None => false,
    }
}

/// `text` as a JSON string, escaped as serde_json escapes it.
fn write_string(text: &str, out: &mut String) -> bool {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(text);
        out.push('"');
        return true;
    }
    match serde_json::to_string(text) {
        Ok(quoted) => {
            out.push_str(&quoted);
            true
        }
        Err(_) => false,
    }
}

/// `-?(0|[1-9][0-9]*)`: an integer serde_json (with `arbitrary_precision`) writes back
/// digit for digit.
fn is_plain_integer(t: &str) -> bool {
    let digits = t.strip_prefix('-').unwrap_or(t);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
}

/// The `id` member's JSON text exactly as sent.
fn exact_id_text(raw: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct IdText<'a> {
        #[serde(borrow)]
        id: &'a serde_json::value::RawValue,
    }
    serde_json::from_str::<IdText<'_>>(raw)
        .ok()
        .map(|t| t.id.get().trim().to_string())
}

/// Follows a path of object keys; anything that is not an object on the way gives `None`.
fn lookup<'a>(item: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut current = item.get(*first)?;
    for key in rest {
        current = current.as_object()?.get(*key)?;
    }
    Some(current)
}

/// KQL `tostring()`: strings as they are, other scalars as text, objects and arrays as
/// compact JSON, missing and null as `""`.
pub fn kql_tostring(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => other.to_string(),
    }
}

/// KQL `todatetime()` of a string: `None` when missing or not a datetime.
fn datetime(value: Option<&Value>) -> Option<UnixMs> {
    value.and_then(Value::as_str).and_then(UnixMs::parse)
}

/// A dynamic column: the JSON as compact text; missing or null is null.
fn dynamic(value: Option<&Value>) -> Option<String> {
    match value {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::sentinel::stream_record;

    pub(super) const FULL: &str = r#"{"type":"event","id":"450256789","event":"board_opened","category":"boards",
 "createdAt":"2018-10-19T23:59:45.000Z","details":{"role":"OWNER"},
 "createdBy":{"type":"user","id":"3074457346235995512","name":"Test","email":"test@example.com"},
 "object":{"id":"3074457346235995523","name":"BoardName"},
 "context":{"ip":"10.10.10.10",
   "team":{"type":"team","id":"3074457345710755694","name":"TeamName"},
   "organization":{"type":"organization","id":"3074457345821140123","name":"CompanyName"}},
 "somethingNew":{"a":1}}"#;

    fn cell<'a>(row: &'a Row, column: &str) -> Option<&'a str> {
        let i = AUDIT_COLUMNS
            .iter()
            .chain(CONTENT_COLUMNS.iter())
            .position(|c| *c == column)
            .unwrap();
        let i = if i >= AUDIT_COLUMNS.len() && row.cells.len() == CONTENT_COLUMNS.len() {
            i - AUDIT_COLUMNS.len()
        } else {
            i
        };
        row.cells[i].as_deref()
    }

    #[test]
    fn audit_row_follows_the_dcr() {
        let row = to_row(SourceKind::AuditLogs, FULL);
        assert_eq!(row.cells.len(), AUDIT_COLUMNS.len());
        assert_eq!(row.id, "450256789");
        assert_eq!(
            cell(&row, "TimeGenerated"),
            Some("2018-10-19T23:59:45.000Z")
        );
        assert_eq!(cell(&row, "createdAt"), Some("2018-10-19T23:59:45.000Z"));
        assert_eq!(cell(&row, "logType"), Some("event"));
        assert_eq!(cell(&row, "event"), Some("board_opened"));
        assert_eq!(cell(&row, "createdBy_email"), Some("test@example.com"));
        assert_eq!(cell(&row, "createdBy_type"), Some("user"));
        assert_eq!(cell(&row, "object_name"), Some("BoardName"));
        assert_eq!(cell(&row, "context_ip"), Some("10.10.10.10"));
        assert_eq!(cell(&row, "context_team_id"), Some("3074457345710755694"));
        assert_eq!(
            cell(&row, "context_organization_type"),
            Some("organization")
        );
        assert_eq!(cell(&row, "details"), Some(r#"{"role":"OWNER"}"#));
    }

    #[test]
    fn missing_and_partial_objects_give_empty_strings() {
        let raw = r#"{"id":"1","createdAt":"not a time","createdBy":{"id":"7"},"context":{"ip":"1.2.3.4","team":null},"object":"weird"}"#;
        let row = to_row(SourceKind::AuditLogs, raw);
        assert_eq!(cell(&row, "TimeGenerated"), None);
        assert_eq!(cell(&row, "createdAt"), None);
        assert_eq!(cell(&row, "event"), Some(""));
        assert_eq!(cell(&row, "logType"), Some(""));
        assert_eq!(cell(&row, "createdBy_id"), Some("7"));
        assert_eq!(cell(&row, "createdBy_email"), Some(""));
        assert_eq!(cell(&row, "object_id"), Some(""));
        assert_eq!(cell(&row, "context_ip"), Some("1.2.3.4"));
        assert_eq!(cell(&row, "context_team_name"), Some(""));
        assert_eq!(cell(&row, "context_organization_id"), Some(""));
        assert_eq!(cell(&row, "details"), None);
    }

    #[test]
    fn ids_stay_text_and_missing_ids_are_derived_stably() {
        let row = to_row(SourceKind::AuditLogs, r#"{"id":3074457345821141000}"#);
        assert_eq!(row.id, "3074457345821141000");
        let a = to_row(SourceKind::AuditLogs, r#"{"event":"x"}"#);
        let b = to_row(SourceKind::AuditLogs, r#"{"event":"x"}"#);
        let c = to_row(SourceKind::AuditLogs, r#"{"event":"y"}"#);
        assert!(a.id_derived && a.id.starts_with("mirotrail-sha256-"));
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
    }

    #[test]
    fn content_row_follows_the_dcr() {
        let raw = r#"{"id":"c1","contentId":"b1","actionType":"update","actionTime":"2024-05-01T10:00:00.5Z",
            "actor":{"id":"u1","email":"a@x.io"},"itemType":"widget","itemId":"w1",
            "state":{"text":"hi"},"relationships":[{"type":"parent","itemType":"frame","itemId":"f1"}]}"#;
        let row = to_row(SourceKind::ContentLogs, raw);
        assert_eq!(row.cells.len(), CONTENT_COLUMNS.len());
        assert_eq!(row.cells[0].as_deref(), Some("2024-05-01T10:00:00.500Z"));
        assert_eq!(row.cells[3].as_deref(), Some("update"));
        assert_eq!(row.cells[4].as_deref(), Some("u1"));
        assert_eq!(row.cells[6].as_deref(), Some(""));
        assert_eq!(
            row.cells[10].as_deref(),
            Some(r#"[{"itemId":"f1","itemType":"frame","type":"parent"}]"#)
        );
        assert_eq!(row.cells[11].as_deref(), Some(r#"{"text":"hi"}"#));
    }

    #[test]
    fn ai_row_follows_the_table_design() {
        let raw = r#"{"id":"3f6c1b1e-8f0a-4c7e-9d52-0b7c5a1e2f33","createdAt":"2024-05-01T10:00:00.250+0000",
            "storedAt":"2024-05-01T10:07:00Z","sessionId":"s1","messageId":"m1",
            "aiFeatureName":"ai_generate_sticky_notes","logType":"request",
            "object":{"id":"uXjVOD6LSME=","type":"board"},
            "actor":{"id":"3074457346235995512","email":"a@x.io","name":"A"},
            "details":{"prompt":"hi","tokens":30744573469876543210123},"somethingNew":1}"#;
        let row = to_row(SourceKind::AiInteractionLogs, raw);
        let cells: Vec<Option<&str>> = row.cells.iter().map(|c| c.as_deref()).collect();
        assert_eq!(
            cells,
            [
                Some("2024-05-01T10:00:00.250Z"),
                Some("3f6c1b1e-8f0a-4c7e-9d52-0b7c5a1e2f33"),
                Some("2024-05-01T10:00:00.250Z"),
                Some("2024-05-01T10:07:00.000Z"),
                Some("s1"),
                Some("m1"),
                Some("ai_generate_sticky_notes"),
                Some("request"),
                Some("uXjVOD6LSME="),
                Some("board"),
                Some("3074457346235995512"),
                Some("a@x.io"),
                Some("A"),
                Some(r#"{"prompt":"hi","tokens":30744573469876543210123}"#),
            ]
        );
        // The window follows the storage time, not the interaction time.
        assert_eq!(row.time, UnixMs::parse("2024-05-01T10:07:00Z"));
        assert_eq!(
            fast::to_row(SourceKind::AiInteractionLogs, raw).unwrap(),
            row
        );
        let record = stream_record(SourceKind::AiInteractionLogs, raw).unwrap();
        assert_eq!(record.len(), AI_STREAM_COLUMNS.len());
        assert!(!record.contains_key("somethingNew"));
        // Missing parts: empty strings, null times and details.
        let row = to_row(
            SourceKind::AiInteractionLogs,
            r##"{"id":"a#1","object":"weird"}"##,
        );
        assert_eq!(row.id, "a#1");
        assert_eq!(
            (row.cells[0].as_ref(), row.cells[3].as_ref(), row.time),
            (None, None, None)
        );
        assert_eq!(row.cells[9].as_deref(), Some(""));
        assert_eq!(row.cells[13], None);
    }

    /// Miro's audit times come as `+0000` (no colon): the rows had null times.
    #[test]
    fn miro_time_forms_give_the_canonical_utc_time_on_both_paths() {
        for (source, key) in [
            (SourceKind::AuditLogs, "createdAt"),
            (SourceKind::ContentLogs, "actionTime"),
            (SourceKind::AiInteractionLogs, "createdAt"),
            (SourceKind::AiInteractionLogs, "storedAt"),
        ] {
            for form in [
                "2023-09-01T09:30:10.840+0000",
                "2023-09-01T09:30:10.840687Z",
                "2023-09-01T11:30:10.840+02:00",
                "2023-09-01T04:00:10.840123456-0530",
            ] {
                let raw = format!(r#"{{"id":"a#1","{key}":"{form}"}}"#);
                let fast = fast::to_row(source, &raw).unwrap();
                let general = general_row(source, &raw).unwrap();
                assert_eq!(fast, general, "{raw}");
                let i = columns(source).iter().position(|c| c == &key).unwrap();
                assert_eq!(
                    fast.cells[i].as_deref(),
                    Some("2023-09-01T09:30:10.840Z"),
                    "{raw}"
                );
                if key != "storedAt" {
                    assert_eq!(fast.cells[0], fast.cells[2]);
                }
                assert_eq!(fast.id, "a#1");
            }
        }
    }

    /// Integers beyond 2^53 in dynamic columns came out as `3.074457346987654e+22`.
    #[test]
    fn big_numbers_in_dynamic_columns_keep_their_digits() {
        let big = "30744573469876543210123";
        let audit = format!(
            r#"{{"id":"1","details":{{"big":{big},"neg":-{big},"f":0.10000000000000000000001}}}}"#
        );
        let content = format!(r#"{{"id":"1","state":{{"big":{big}}},"relationships":[{big}]}}"#);
        let ai = format!(r#"{{"id":"1","details":{{"big":{big}}}}}"#);
        for (source, raw, column) in [
            (SourceKind::AuditLogs, &audit, 19),
            (SourceKind::ContentLogs, &content, 11),
            (SourceKind::AiInteractionLogs, &ai, 13),
        ] {
            let fast = fast::to_row(source, raw).unwrap();
            assert_eq!(fast, general_row(source, raw).unwrap());
            let cell = fast.cells[column].as_deref().unwrap();
            assert!(cell.contains(&format!(":{big}")), "{cell}");
            let record = serde_json::to_string(&stream_record(source, raw).unwrap()).unwrap();
            assert!(record.contains(&format!(":{big}")), "{record}");
        }
        let cell = to_row(SourceKind::AuditLogs, &audit).cells[19].clone();
        assert!(cell.unwrap().contains("0.10000000000000000000001"));
    }

    /// `1e400` does not fit an f64: the item was refused and lost.
    #[test]
    fn huge_floats_do_not_lose_the_item() {
        let raw = r#"{"id":"f1","createdAt":"2023-09-01T09:30:10.840+0000","details":{"x":1e400,"y":-1E-400}}"#;
        let row = to_row(SourceKind::AuditLogs, raw);
        assert_eq!(row.id, "f1");
        assert_eq!(row.cells[0].as_deref(), Some("2023-09-01T09:30:10.840Z"));
        let details = row.cells[19].as_deref().unwrap();
        let back: Value = serde_json::from_str(details).unwrap();
        assert_eq!(back["x"].to_string(), "1e+400");
        assert!(stream_record(SourceKind::AuditLogs, raw).is_ok());
    }

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    /// `details` nested beyond serde_json's depth limit: the item was logged as skipped
    /// and lost. It is now a row with every other column, `details` as sent.
    #[test]
    fn deeply_nested_items_are_stored_with_what_can_be_derived() {
        for depth in [129, 300, 100_000] {
            let deep = nested(depth);
            let raw = format!(
                r#"{{"id":"2023-09-01T09:30:10.840687Z#1-DDB","event":"board_opened","createdAt":"2023-09-01T09:30:10.840+0000","details":{{"a":{deep}}},"createdBy":{{"email":"a@x.io"}}}}"#
            );
            let row = to_row(SourceKind::AuditLogs, &raw);
            assert_eq!(row.id, "2023-09-01T09:30:10.840687Z#1-DDB");
            assert!(!row.id_derived);
            assert_eq!(row.cells[0].as_deref(), Some("2023-09-01T09:30:10.840Z"));
            assert_eq!(row.cells[3].as_deref(), Some("board_opened"));
            assert_eq!(row.cells[6].as_deref(), Some("a@x.io"));
            assert_eq!(row.cells[19], Some(format!(r#"{{"a":{deep}}}"#)));
            assert!(row.partial.as_deref().unwrap().starts_with("details: "));
            let record = stream_record(SourceKind::AuditLogs, &raw).unwrap();
            assert_eq!(
                record["details"],
                Value::String(format!(r#"{{"a":{deep}}}"#))
            );
            assert_eq!(record["event"], "board_opened");
        }
        let raw = format!(
            r#"{{"id":"c1","actionTime":"2024-05-01T10:00:00Z","state":{},"itemId":"w"}}"#,
            nested(200)
        );
        let row = to_row(SourceKind::ContentLogs, &raw);
        assert_eq!(
            (row.id.as_str(), row.cells[8].as_deref()),
            ("c1", Some("w"))
        );
        assert_eq!(row.cells[11], Some(nested(200)));
        assert!(row.partial.is_some());
    }

    /// An item whose id itself cannot be read still becomes one stable row.
    #[test]
    fn unreadable_ids_and_items_get_a_stable_derived_id() {
        let raw = format!(r#"{{"id":{},"event":"x"}}"#, nested(500));
        let a = to_row(SourceKind::AuditLogs, &raw);
        assert!(a.id_derived && a.id.starts_with("mirotrail-sha256-"));
        assert_eq!(a, to_row(SourceKind::AuditLogs, &raw));
        assert_eq!(a.cells[3].as_deref(), Some("x"));
        assert!(a.partial.as_deref().unwrap().starts_with("id: "));
        let b = to_row(SourceKind::AuditLogs, "[1,2]");
        assert!(b.id_derived && b.partial.is_some());
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn ids_beyond_64_bits_keep_their_exact_digits() {
        let a = to_row(
            SourceKind::AuditLogs,
            r#"{"id":123456789012345678901234567890}"#,
        );
        let b = to_row(
            SourceKind::AuditLogs,
            r#"{"id":123456789012345678901234567891}"#,
        );
        assert_eq!(a.id, "123456789012345678901234567890");
        assert_ne!(a.id, b.id);
        let c = to_row(SourceKind::AuditLogs, r#"{"id":1.5e3}"#);
        assert_eq!(c.id, "1.5e3");
    }

    /// Any JSON value, with the shapes Miro items have and the ones they should not.
    pub(super) fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,40}".prop_map(Value::String),
            "\\PC*".prop_map(Value::String),
            "[0-9]{15,40}".prop_map(Value::String),
            Just(Value::String("\u{0}nul\u{0}".into())),
            Just(Value::String("2024-05-01T10:00:00.000Z".into())),
            Just(Value::String("2023-09-01T09:30:10.840+0000".into())),
            Just(Value::String("2023-09-01T09:30:10.840687-05:30".into())),
            Just(Value::String(
                "2023-09-01T09:30:10.840687Z#1234567890123456789-DDB".into()
            )),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("id".to_string()),
                        Just("createdBy".to_string()),
                        Just("email".to_string()),
                        Just("context".to_string()),
                        Just("team".to_string()),
                        Just("createdAt".to_string()),
                        Just("actionTime".to_string()),
                        Just("actor".to_string()),
                        Just("state".to_string()),
                        Just("storedAt".to_string()),
                        Just("object".to_string()),
                        Just("sessionId".to_string()),
                        "[a-zA-Z]{1,8}",
                    ],
                    inner,
                    0..8
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    use proptest::prelude::*;

    proptest! {
        /// Any JSON text becomes a row with every column, a non-empty id, and the same
        /// row again for the same text; only what is not an object is partial. Never a panic.
        #[test]
        fn any_json_item_becomes_a_row(value in arb_json(), which in 0usize..3) {
            let source = SourceKind::ALL[which];
            let raw = value.to_string();
            let row = to_row(source, &raw);
            prop_assert_eq!(row.cells.len(), columns(source).len());
            prop_assert!(!row.id.is_empty());
            prop_assert_eq!(row.cells[1].as_deref(), Some(row.id.as_str()));
            prop_assert_eq!(to_row(source, &raw), row.clone());
            prop_assert_eq!(row.partial.is_some(), !value.is_object());
            if value.is_object() {
                let record = stream_record(source, &raw).unwrap();
                prop_assert!(record.keys().all(|k| stream_columns(source).contains(&k.as_str())));
            } else {
                prop_assert!(row.id_derived);
            }
        }

        /// The partial path, given an item the general path reads, gives the same row.
        #[test]
        fn the_partial_path_agrees_with_the_general_path(value in arb_json(), which in 0usize..3) {
            let source = SourceKind::ALL[which];
            let raw = value.to_string();
            if let Some(general) = general_row(source, &raw) {
                prop_assert_eq!(partial_row(source, &raw), general);
            }
        }

        /// The fast path and the general path agree on every item the fast path takes.
        #[test]
        fn the_fast_path_agrees_with_the_general_path(value in arb_json(), which in 0usize..3) {
            let source = SourceKind::ALL[which];
            let raw = value.to_string();
            if let Some(fast) = fast::to_row(source, &raw) {
                prop_assert_eq!(fast, general_row(source, &raw).unwrap());
            }
        }

        /// Reading a row's cells one at a time (the views) gives the cells of the row.
        #[test]
        fn lazy_cells_equal_the_row(value in arb_json(), which in 0usize..3) {
            let source = SourceKind::ALL[which];
            let raw = value.to_string();
            assert_lazy_cells_equal_the_row(source, &raw);
            assert_kept_cells_equal_the_row(source, &raw);
        }

        /// Arbitrary text, including invalid JSON and huge nesting, never panics.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}", depth in 0usize..2000) {
            let _ = to_row(SourceKind::AuditLogs, &text);
            let nested = format!("{{\"id\":{}1{}}}", "[".repeat(depth), "]".repeat(depth));
            let _ = to_row(SourceKind::AuditLogs, &nested);
            let _ = stream_record(SourceKind::ContentLogs, &nested);
        }
    }

    fn assert_lazy_cells_equal_the_row(source: SourceKind, raw: &str) {
        let row = to_row(source, raw);
        let lazy = ItemCells::new(source, raw.to_string());
        for (i, cell) in row.cells.iter().enumerate() {
            assert_eq!(
                lazy.get(i),
                cell.as_deref(),
                "{source:?} column {i} of {raw}"
            );
        }
        assert_eq!(lazy.get(row.cells.len()), None);
    }

    fn assert_kept_cells_equal_the_row(source: SourceKind, raw: &str) {
        let every: Vec<usize> = (0..columns(source).len()).collect();
        for keep in [&[0, 1, 3, 6][..], &every] {
            assert_kept_cells_equal(source, raw, keep);
        }
    }

    fn assert_kept_cells_equal(source: SourceKind, raw: &str, keep: &[usize]) {
        assert_prefix_row_equals_the_row(source, raw, keep);
        let row = to_row(source, raw);
        let kept = to_row_keeping(source, raw, keep);
        assert_eq!(kept.id, row.id, "{raw}");
        assert_eq!(kept.time, row.time, "{raw}");
        assert_eq!(kept.id_derived, row.id_derived, "{raw}");
        assert_eq!(kept.partial, row.partial, "{raw}");
        assert_eq!(kept.cells.len(), row.cells.len(), "{raw}");
        for (i, cell) in row.cells.iter().enumerate() {
            let want = cell.as_deref().filter(|_| keep.contains(&i));
            assert_eq!(kept.cell(i, raw), want, "{source:?} column {i} of {raw}");
        }
    }

    /// An item read where it starts in a page body (followed by what may follow it there)
    /// gives its exact length and the row of the item alone, and takes that path exactly
    /// when the item alone takes the fast path.
    fn assert_prefix_row_equals_the_row(source: SourceKind, raw: &str, keep: &[usize]) {
        let item = raw.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
        if !item.starts_with('{') {
            return;
        }
        let fast = fast::specs(source, item)
            .is_some_and(|(_, s)| matches!(s.get(1), Some(fast::Spec::Done(Some(_)))));
        for after in ["", "]}", ",{\"id\":\"z\"}]}", " \n,", "]"] {
            let rest = format!("{item}{after}");
            let got = to_row_keeping_prefix(source, &rest, keep);
            assert_eq!(got.is_some(), fast, "{source:?} {rest}");
            if let Some((len, row)) = got {
                assert_eq!(&rest[..len], item, "{source:?} {rest}");
                assert_eq!(row, to_row_keeping(source, item, keep), "{source:?} {rest}");
            }
        }
    }

    #[test]
    fn lazy_cells_equal_the_row_on_hostile_items() {
        let deep = nested(300);
        let items = [
            FULL.to_string(),
            // Numbers beyond 2^53 and 64 bits, as ids and as text fields.
            r#"{"id":9007199254740993,"event":12345678901234567890123,"createdBy":{"id":9007199254740993,"email":1e400},"context":{"ip":-0.0}}"#.into(),
            r#"{"id":"30744573469876543210123","actionType":18446744073709551616,"actor":{"id":9007199254740993}}"#.into(),
            // Times with `+0000` and other offsets, and ones that do not parse.
            r#"{"id":"t1","createdAt":"2023-09-01T09:30:10.840+0000","actionTime":"2023-09-01T09:30:10.840687-05:30","storedAt":"2023-09-01T09:30:10Z"}"#.into(),
            r#"{"id":"t2","createdAt":"yesterday","actionTime":42,"storedAt":null}"#.into(),
            // `#` ids (content logs) and escapes in every kind of field.
            r#"{"id":"2023-09-01T09:30:10.840687Z#1234567890123456789-DDB","contentId":"c\"1","actor":{"email":"a\u00e9@x","name":"\ud83d\ude00"},"state":{"b":1,"a":[true,null]}}"#.into(),
            r#"{"id":"e1","event":"a\\b","object":{"name":"tab\tand\nnewline"},"details":{"z":"\u0000","a":1.50}}"#.into(),
            // A lone surrogate escape, duplicate keys, missing and wrong-typed ids, objects
            // where text is expected.
            r#"{"id":"s","event":"\ud800","createdBy":{"name":"x\udc00y"}}"#.into(),
            r#"{"id":"d","id":"d2","event":"x","event":"y"}"#.into(),
            r#"{"event":"no id","createdBy":{"id":"u"}}"#.into(),
            r#"{"id":["x"],"createdBy":"weird","context":{"team":[1]}}"#.into(),
            r#"{"id":"o","createdBy":{"id":{"nested":true},"type":false},"context":{"ip":null}}"#.into(),
            // Too deep for the parser, and not an object at all.
            format!(r#"{{"id":"deep","details":{deep},"createdBy":{{"id":"u"}}}}"#),
            // Dynamic columns around the writer's depth limit, with brackets in strings,
            // escapes and a lone surrogate (which a scan cannot vouch for).
            format!(r#"{{"id":"d99","details":{},"state":{}}}"#, nested(98), nested(99)),
            format!(r#"{{"id":"d100","details":{},"state":{}}}"#, nested(100), nested(101)),
            format!(r#"{{"id":"d130","details":{},"relationships":{}}}"#, nested(130), nested(127)),
            r#"{"id":"b","details":{"a":"[[{","b":["]]}"]},"state":{"x":"\"[","y":"\ud800"}}"#.into(),
            r#"{"id":"c","details":"\udc00","relationships":{"k\ud800":1}}"#.into(),
            "[1,2]".into(),
            "not json".into(),
        ];
        for raw in &items {
            for source in SourceKind::ALL {
                assert_lazy_cells_equal_the_row(source, raw);
                assert_kept_cells_equal_the_row(source, raw);
            }
        }
    }

    #[test]
    fn the_fast_path_takes_realistic_items_and_agrees() {
        use mirotrail_emulator::miro::{MiroEmulatorConfig, MiroOrg};
        let org = MiroOrg::new(&MiroEmulatorConfig::demo(
            mirotrail_emulator::UnixMs(1_700_000_000_000),
            3,
            3000,
            3000,
            "t",
        ));
        for i in 0..3000 {
            for (source, item) in [
                (SourceKind::AuditLogs, org.audit_event(i)),
                (SourceKind::ContentLogs, org.content_item(i)),
                (SourceKind::AiInteractionLogs, org.ai_entry(i)),
            ] {
                let raw = item.to_string();
                assert_lazy_cells_equal_the_row(source, &raw);
                assert_kept_cells_equal_the_row(source, &raw);
                let fast =
                    fast::to_row(source, &raw).expect("a realistic item takes the fast path");
                assert_eq!(fast, general_row(source, &raw).unwrap(), "{raw}");
            }
        }
        for raw in [
            FULL,
            r#"{"id":"1","createdBy":"weird","context":{"team":[1]}}"#,
        ] {
            let fast = fast::to_row(SourceKind::AuditLogs, raw).unwrap();
            assert_eq!(fast, general_row(SourceKind::AuditLogs, raw).unwrap());
        }
        // Nested objects are read in the item's pass: a deep array where an object is
        // expected, or a deep member no column uses, is skipped at any depth.
        let raw = format!(
            r#"{{"id":"1","createdBy":{},"object":{{"id":"o","x":{}}},"context":{{"team":{}}}}}"#,
            nested(300),
            nested(300),
            nested(300)
        );
        let row = fast::to_row(SourceKind::AuditLogs, &raw).expect("skipped at any depth");
        assert_eq!(row.cells[10].as_deref(), Some("o"));
        assert_eq!(row.cells[7].as_deref(), Some(""));
        assert!(row.partial.is_none());
        // Duplicate keys and derived ids go the general way.
        assert!(fast::to_row(SourceKind::AuditLogs, r#"{"id":"1","id":"2"}"#).is_none());
        assert!(fast::to_row(SourceKind::AuditLogs, r#"{"event":"x"}"#).is_none());
    }

    /// `value` as JSON text Miro could send: keys in reverse order, each object key also
    /// sent once before with another value (the last one counts), whitespace around
    /// everything, and every ASCII letter `a` in strings escaped as `\u0061`.
    pub(super) fn unusual_text(value: &Value, out: &mut String) {
        let string = |s: &str, out: &mut String| {
            let quoted = serde_json::to_string(s).unwrap();
            out.push_str(&quoted.replace('a', "\\u0061"));
        };
        match value {
            Value::Object(map) => {
                out.push_str("{ ");
                for (i, (k, v)) in map.iter().rev().enumerate() {
                    if i > 0 {
                        out.push_str(" ,\n");
                    }
                    string(k, out);
                    out.push_str(" : [1, {\"x\": 2}] ,\t");
                    string(k, out);
                    out.push_str(" : ");
                    unusual_text(v, out);
                }
                out.push_str(" }");
            }
            Value::Array(items) => {
                out.push_str("[ ");
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(" , ");
                    }
                    unusual_text(v, out);
                }
                out.push_str(" ]");
            }
            Value::String(s) => string(s, out),
            other => out.push_str(&other.to_string()),
        }
    }

    proptest! {
        /// The dynamic columns' writer gives exactly what `Value::to_string` gives, for
        /// canonical text and for text with unsorted and duplicate keys, whitespace and
        /// escapes.
        #[test]
        fn canonical_writer_agrees_with_value_to_string(value in arb_json()) {
            for text in [value.to_string(), { let mut t = String::new(); unusual_text(&value, &mut t); t }] {
                let want = serde_json::from_str::<Value>(&text).unwrap().to_string();
                let mut got = String::new();
                prop_assert!(write_canonical(&text, &mut got, 0), "refused {text}");
                prop_assert_eq!(got, want, "{}", text);
            }
        }
    }

    proptest! {
        /// A value the scan vouches for is one the canonical writer accepts.
        #[test]
        fn what_surely_renders_renders(value in arb_json(), depth in 0usize..120) {
            let text = format!("{}{}{}", "[".repeat(depth), value, "]".repeat(depth));
            if serde_json::from_str::<&serde_json::value::RawValue>(&text).is_ok()
                && fast::surely_renders(&text)
            {
                prop_assert!(write_canonical(&text, &mut String::new(), 0), "refused {}", text);
            }
        }
    }

    #[test]
    fn canonical_writer_numbers_and_limits() {
        for text in [
            "-0",
            "0",
            "-12",
            "30744573469876543210123",
            "1e400",
            "-1E-400",
            "1.50",
            "0.1e1",
            "[1.0,-0,2e5]",
            r#"{"b":1,"a":{"d":[],"c":{}}}"#,
            r#""\ud83d\ude00 \/ \u001f""#,
        ] {
            let want = serde_json::from_str::<Value>(text).unwrap().to_string();
            let mut got = String::new();
            assert!(write_canonical(text, &mut got, 0), "{text}");
            assert_eq!(got, want, "{text}");
        }
        // Too deep for the writer: left to `Value`, which has its own limit.
        let deep = format!("{}{}", "[".repeat(101), "]".repeat(101));
        assert!(!write_canonical(&deep, &mut String::new(), 0));
        for bad in ["", "[1,", r#"{"a"}"#, "01", "nul", r#""x"#] {
            assert!(!write_canonical(bad, &mut String::new(), 0), "{bad}");
        }
    }

    #[test]
    fn stream_record_keeps_only_declared_columns() {
        let rec = stream_record(SourceKind::AuditLogs, FULL).unwrap();
        let keys: Vec<&str> = rec.keys().map(String::as_str).collect();
        assert!(!keys.contains(&"somethingNew"));
        assert_eq!(keys.len(), 9);
        assert!(stream_record(SourceKind::AuditLogs, "[1,2]").is_err());
    }
}
