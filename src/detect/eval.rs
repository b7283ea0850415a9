//! Evaluating rules on the store: [`find`] runs a rule's SQL over a time range (retro-hunt,
//! samples, `rules test`), [`evaluate_new`] turns rows stored since the last evaluation
//! into alerts incrementally, from per-group aggregates (docs/detections.md).
//!
//! Invariants (crash-safe like a sink):
//! - `alerts` is unique on (rule id, group, window start) and alerts are inserted with
//!   `INSERT OR IGNORE`, so an alert is raised once per rule, group and window, however
//!   often its window is evaluated again;
//! - `detect_offsets.evaluated_seq`, the aggregates (`detect_plans`, `detect_groups`) and
//!   the alerts the evaluation of those rows raised move in one transaction: a crash
//!   before the commit re-evaluates the same rows (nothing lost, nothing counted twice),
//!   after it nothing is evaluated twice into a second alert;
//! - a plan's aggregates (count of first-step rows, first and last of them, last
//!   second-step row, per organisation, group and window) cover exactly the source's rows
//!   up to its offset in the windows from its horizon on (the last [`AGGREGATE_SECS`]):
//!   a pass adds the new rows alone (`_seq` in `(offset, last]`; each aggregate is a
//!   count, a minimum or a maximum, so they add up exactly), and a plan without
//!   aggregates (first pass, a new or edited rule, a store from before them) is first
//!   seeded from every row since its horizon up to the offset, raising nothing;
//! - a new row of a window behind the horizon (a backfill, a row days late) is evaluated
//!   with the rule's full SQL over its window and every stored row, as [`find`] does;
//! - a group the new rows touched is checked against the rule's HAVING with its
//!   aggregates over every stored row, so an alert's hits, first and last time are what
//!   [`find`] gives for its window at that moment, and a late row completes the window it
//!   belongs to (a window that already alerted stays one alert); a group no new row
//!   touched cannot change and is not read: a pass costs in proportion to the new rows,
//!   not to the rules' window lengths;
//! - a plan is named by its aggregate SQL (`compile::sql_aggregate`), so editing a rule's
//!   match, keys or window starts new aggregates, while its threshold, which only the
//!   HAVING reads, keeps them; the aggregates of a plan no rule has any more are dropped,
//!   and retention drops those of the windows it empties ([`forget_windows_before`]).

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value, json};

use crate::source::SourceKind;
use crate::timefmt::UnixMs;

use super::compile;
use super::rule::Rule;

/// An alert: one rule, one group, one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub rule_id: String,
    pub rule: String,
    pub rule_name: String,
    pub severity: String,
    pub source: SourceKind,
    /// Group key -> value, in the rule's order.
    pub keys: Vec<(String, String)>,
    pub window_start: UnixMs,
    pub window_end: UnixMs,
    pub hits: i64,
    pub first_seen: String,
    pub last_seen: String,
    /// The Miro organisation of the rows (`_org_id`; unknown for a `[miro]` without
    /// `org_id`).
    pub org_id: Option<String>,
}

impl Alert {
    /// The group as stored in `alerts.group_key`: a JSON object, keys in rule order.
    pub fn group_key(&self) -> String {
        let mut map = Map::new();
        for (k, v) in &self.keys {
            map.insert(k.clone(), Value::String(v.clone()));
        }
        Value::Object(map).to_string()
    }
}

fn secs_to_ms(secs: i64) -> UnixMs {
    UnixMs(secs.saturating_mul(1000))
}

/// The bounds of the whole windows of `w` seconds (aligned on the epoch) that cover
/// `[from, to]`.
fn whole_windows(w: i64, from: UnixMs, to: UnixMs) -> (UnixMs, UnixMs) {
    let from_secs = from.0.div_euclid(1000).div_euclid(w) * w;
    let to_secs = (to.0.div_euclid(1000).div_euclid(w) + 1) * w;
    (secs_to_ms(from_secs), secs_to_ms(to_secs))
}

/// The alerts of `rule` over whole windows covering `[from, to)`.
pub fn find(
    conn: &Connection,
    rule: &Rule,
    from: UnixMs,
    to: UnixMs,
) -> rusqlite::Result<Vec<Alert>> {
    let plan = compile::plan(rule);
    let w = rule.window_secs();
    let (start, end) = whole_windows(w, from, to);
    let mut stmt = conn.prepare_cached(&compile::sql(&plan))?;
    let n = plan.keys.len();
    let map = |r: &rusqlite::Row<'_>| {
        let mut keys = Vec::with_capacity(n);
        for (i, k) in plan.keys.iter().enumerate() {
            keys.push((k.clone(), r.get::<_, String>(i)?));
        }
        let start: i64 = r.get(n)?;
        Ok(Alert {
            rule_id: rule.id.clone(),
            rule: rule.slug.clone(),
            rule_name: rule.name.clone(),
            severity: rule.severity.as_str().to_string(),
            source: rule.source,
            keys,
            window_start: secs_to_ms(start),
            window_end: secs_to_ms(start + w),
            hits: r.get(n + 1)?,
            first_seen: r.get(n + 2)?,
            last_seen: r.get(n + 3)?,
            org_id: r.get(n + 5)?,
        })
    };
    stmt.query_map(params![start.to_iso(), end.to_iso()], map)?
        .collect()
}

/// Stores an alert unless its rule, group and window already has one; true if new.
pub fn insert_alert(conn: &Connection, alert: &Alert, raised_at: UnixMs) -> rusqlite::Result<bool> {
    let n = conn.execute(
        "INSERT OR IGNORE INTO alerts (rule_id, rule, rule_name, severity, source, group_key,
             window_start, window_end, hits, first_seen, last_seen, raised_at, org)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,
                 coalesce((SELECT key FROM orgs WHERE org_id = ?13), 1))",
        params![
            alert.rule_id,
            alert.rule,
            alert.rule_name,
            alert.severity,
            alert.source.name(),
            alert.group_key(),
            alert.window_start.to_iso(),
            alert.window_end.to_iso(),
            alert.hits,
            alert.first_seen,
            alert.last_seen,
            raised_at.to_iso(),
            alert.org_id,
        ],
    )?;
    Ok(n == 1)
}

/// One group of a plan as [`compile::sql_aggregate`] left it.
#[derive(Debug)]
struct Group {
    org_id: Option<String>,
    keys: Vec<String>,
    window_start: i64,
    hits: i64,
    first_seen: Option<String>,
    last_seen: Option<String>,
    then_seen: Option<String>,
}

impl Group {
    /// The rule's HAVING (`compile::sql`): enough first-step rows and, for a sequence
    /// rule, a second-step row after the first of them (ISO 8601 UTC text compares as
    /// SQLite's `>` does).
    fn alert(&self, rule: &Rule, plan: &compile::Plan) -> Option<Alert> {
        if self.hits < i64::from(plan.threshold) {
            return None;
        }
        let first_seen = self.first_seen.clone()?;
        if plan.steps.len() > 1 && self.then_seen.as_deref().is_none_or(|t| *t <= *first_seen) {
            return None;
        }
        let w = plan.window_secs;
        Some(Alert {
            rule_id: rule.id.clone(),
            rule: rule.slug.clone(),
            rule_name: rule.name.clone(),
            severity: rule.severity.as_str().to_string(),
            source: rule.source,
            keys: plan
                .keys
                .iter()
                .cloned()
                .zip(self.keys.iter().cloned())
                .collect(),
            window_start: secs_to_ms(self.window_start),
            window_end: secs_to_ms(self.window_start + w),
            hits: self.hits,
            first_seen,
            last_seen: self.last_seen.clone().unwrap_or_default(),
            org_id: self.org_id.clone(),
        })
    }
}

/// A key value as the alert names it: text as is, anything else (a number) as JSON.
fn key_text(value: Value) -> String {
    match value {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Adds the rows stored in `(after, through]` of `_seq` from `horizon` on to the
/// aggregates of plan `id` (`sql`: its [`compile::sql_aggregate`]) and returns the groups
/// they touched, as they now are, ordered by window, organisation and keys.
fn add_rows(
    tx: &Connection,
    sql: &str,
    plan: &PlanState,
    after: i64,
    through: i64,
) -> rusqlite::Result<Vec<Group>> {
    let mut stmt = tx.prepare_cached(sql)?;
    let mut rows = stmt.query(params![
        after,
        through,
        plan.id,
        secs_to_ms(plan.horizon).to_iso()
    ])?;
    // A group can come back twice (two ids of one organisation): its aggregates only
    // grow, so the one with the most rows is the latest.
    let mut groups: std::collections::BTreeMap<(i64, Option<String>, String), Group> =
        std::collections::BTreeMap::new();
    while let Some(r) = rows.next()? {
        let org_id: Option<String> = r.get(0)?;
        let key_json: String = r.get(1)?;
        let window_start: i64 = r.get(2)?;
        let hits: i64 = r.get(3)?;
        let keys = match serde_json::from_str::<Value>(&key_json) {
            Ok(Value::Array(values)) => values.into_iter().map(key_text).collect(),
            _ => Vec::new(),
        };
        let group = Group {
            org_id: org_id.clone(),
            keys,
            window_start,
            hits,
            first_seen: r.get(4)?,
            last_seen: r.get(5)?,
            then_seen: r.get(6)?,
        };
        let slot = groups.entry((window_start, org_id, key_json));
        match slot {
            std::collections::btree_map::Entry::Occupied(mut o) => {
                if o.get().hits <= hits {
                    o.insert(group);
                }
            }
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(group);
            }
        }
    }
    Ok(groups.into_values().collect())
}

/// How far back a plan keeps aggregates: windows that start at least this long before
/// the pass's clock have none (their rows are rarely stored any more: a late re-read is
/// minutes behind). A row stored for such a window (a backfill, a late row days old) is
/// evaluated with the rule's full SQL over its window instead ([`find`]), so the
/// aggregates stay a couple of days of groups however long the store's history is.
pub const AGGREGATE_SECS: i64 = 2 * 86_400;

/// Above this many new rows in a pass, [`evaluate_new`] counts the rows since the
/// horizon to choose how to find the new ones (a live pass has a few hundred).
/// (Tests use a small number, so that both ways are taken.)
const MANY_NEW_ROWS: i64 = if cfg!(test) { 50 } else { 5_000 };

/// The horizon of a plan of `window_secs` at `now`: the start of the window
/// [`AGGREGATE_SECS`] back (UNIX seconds).
fn horizon_at(now: UnixMs, window_secs: i64) -> i64 {
    (now.0.div_euclid(1000) - AGGREGATE_SECS).div_euclid(window_secs) * window_secs
}

/// A plan's aggregates: its `detect_plans.id` and horizon (UNIX seconds).
struct PlanState {
    id: i64,
    horizon: i64,
}

/// The aggregates of `plan`, whose aggregate SQL is `sql`, with the horizon moved to
/// `now`'s (the groups of windows it leaves behind are dropped). A plan without
/// aggregates yet (first evaluation, a new or edited rule, a store from before them) is
/// seeded from every row of `source` from the horizon up to `offset` first, without
/// alerts: what a pass adds to it then is what the evaluation of the same rows over every
/// stored row would see.
fn plan_state(
    tx: &Connection,
    source: SourceKind,
    plan: &compile::Plan,
    sql: &str,
    offset: i64,
    now: UnixMs,
) -> rusqlite::Result<PlanState> {
    let horizon = horizon_at(now, plan.window_secs);
    if let Some((id, stored)) = tx
        .prepare_cached("SELECT id, horizon FROM detect_plans WHERE definition = ?1")?
        .query_row([sql], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
        .optional()?
    {
        if horizon > stored {
            tx.prepare_cached("DELETE FROM detect_groups WHERE plan = ?1 AND window_start < ?2")?
                .execute(params![id, horizon])?;
            tx.prepare_cached("UPDATE detect_plans SET horizon = ?2 WHERE id = ?1")?
                .execute(params![id, horizon])?;
        }
        return Ok(PlanState {
            id,
            horizon: horizon.max(stored),
        });
    }
    tx.execute(
        "INSERT INTO detect_plans (source, window_secs, horizon, definition) VALUES (?1, ?2, ?3, ?4)",
        params![source.name(), plan.window_secs, horizon, sql],
    )?;
    let state = PlanState {
        id: tx.last_insert_rowid(),
        horizon,
    };
    if offset > 0 {
        add_rows(tx, &compile::sql_aggregate(plan, true), &state, 0, offset)?;
    }
    Ok(state)
}

/// The alerts of `rule` that the new rows (`_seq` in `(offset, last]`) from before the
/// plan's horizon can have raised: their windows, evaluated with every stored row by the
/// rule's full SQL (as [`find`] does).
fn alerts_before_horizon(
    tx: &Connection,
    rule: &Rule,
    plan: &compile::Plan,
    horizon: i64,
    offset: i64,
    last: i64,
) -> rusqlite::Result<Vec<Alert>> {
    let horizon = secs_to_ms(horizon).to_iso();
    let (oldest, newest): (Option<String>, Option<String>) = tx
        .prepare_cached(&compile::sql_old_matches(plan))?
        .query_row(params![offset, last, horizon], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    match oldest
        .as_deref()
        .and_then(UnixMs::parse)
        .zip(newest.as_deref().and_then(UnixMs::parse))
    {
        Some((oldest, newest)) => find(tx, rule, oldest, newest),
        None => Ok(Vec::new()),
    }
}

/// Forgets the aggregates of plans no rule in `definitions` has any longer (a rule
/// edited or removed): a rule that comes back is seeded again.
fn forget_other_plans(tx: &Connection, definitions: &[String]) -> rusqlite::Result<()> {
    let stored: Vec<(i64, String)> = tx
        .prepare_cached("SELECT id, definition FROM detect_plans")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, definition) in stored {
        if !definitions.contains(&definition) {
            tx.execute("DELETE FROM detect_groups WHERE plan = ?1", [id])?;
            tx.execute("DELETE FROM detect_plans WHERE id = ?1", [id])?;
        }
    }
    Ok(())
}

/// Forgets the aggregates of `source`'s windows that end at or before `cutoff`: the
/// windows whose rows retention deletes (`Store::apply_retention`). Returns how many.
pub fn forget_windows_before(
    conn: &Connection,
    source: SourceKind,
    cutoff: UnixMs,
) -> rusqlite::Result<u64> {
    let n = conn.execute(
        "DELETE FROM detect_groups WHERE plan IN (SELECT id FROM detect_plans WHERE source = ?1)
           AND window_start + (SELECT window_secs FROM detect_plans WHERE id = plan) <= ?2",
        params![source.name(), cutoff.0.div_euclid(1000)],
    )?;
    Ok(n as u64)
}

/// Evaluates `rules` on the rows stored since the last evaluation of each source, raises
/// their alerts and moves the offsets, all on `tx` (the caller commits). Returns the
/// alerts newly raised.
///
/// Each distinct rule plan adds the new rows to its aggregates once
/// ([`compile::sql_aggregate`], reading the new rows alone), and each rule checks its
/// HAVING on the groups those rows touched: a pass costs in proportion to the new rows,
/// not to the rules' windows.
pub fn evaluate_new(tx: &Connection, rules: &[Rule], now: UnixMs) -> rusqlite::Result<Vec<Alert>> {
    let plans: Vec<(&Rule, compile::Plan, String)> = rules
        .iter()
        .map(|rule| {
            let plan = compile::plan(rule);
            let sql = compile::sql_aggregate(&plan, false);
            (rule, plan, sql)
        })
        .collect();
    let definitions: Vec<String> = plans.iter().map(|(_, _, sql)| sql.clone()).collect();
    forget_other_plans(tx, &definitions)?;
    let mut raised = Vec::new();
    for source in SourceKind::ALL {
        let offset: i64 = tx
            .query_row(
                "SELECT evaluated_seq FROM detect_offsets WHERE source = ?1",
                [source.name()],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let last: Option<i64> = tx.query_row(
            &format!("SELECT max(_seq) FROM {} WHERE _seq > ?1", source.table()),
            [offset],
            |r| r.get(0),
        )?;
        let Some(last) = last else { continue };
        // The new rows are found by `_seq`, unless there are more of them than rows since
        // the earliest horizon (a first pass after a backfill of older history): then
        // through the time index.
        let by_time = last - offset > MANY_NEW_ROWS && {
            let earliest = plans
                .iter()
                .filter(|(r, _, _)| r.source == source)
                .map(|(_, p, _)| horizon_at(now, p.window_secs))
                .min()
                .unwrap_or(0);
            let since: i64 = tx.query_row(
                &format!(
                    "SELECT count(*) FROM {} WHERE TimeGenerated >= ?1",
                    source.table()
                ),
                [secs_to_ms(earliest).to_iso()],
                |r| r.get(0),
            )?;
            since < last - offset
        };
        // Rules with the same plan share its aggregates: the new rows are added once.
        let mut touched: std::collections::HashMap<&str, (PlanState, Vec<Group>)> =
            std::collections::HashMap::new();
        for (rule, plan, sql) in plans.iter().filter(|(r, _, _)| r.source == source) {
            if !touched.contains_key(sql.as_str()) {
                let state = plan_state(tx, source, plan, sql, offset, now)?;
                let groups = if by_time {
                    add_rows(
                        tx,
                        &compile::sql_aggregate(plan, true),
                        &state,
                        offset,
                        last,
                    )?
                } else {
                    add_rows(tx, sql, &state, offset, last)?
                };
                touched.insert(sql.as_str(), (state, groups));
            }
            let (state, groups) = &touched[sql.as_str()];
            let mut alerts: Vec<Alert> =
                groups.iter().filter_map(|g| g.alert(rule, plan)).collect();
            alerts.extend(alerts_before_horizon(
                tx,
                rule,
                plan,
                state.horizon,
                offset,
                last,
            )?);
            for alert in alerts {
                if insert_alert(tx, &alert, now)? {
                    raised.push(alert);
                }
            }
        }
        tx.execute(
            "INSERT INTO detect_offsets (source, evaluated_seq, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (source) DO UPDATE SET evaluated_seq = excluded.evaluated_seq,
               updated_ms = excluded.updated_ms",
            params![source.name(), last, now.0],
        )?;
    }
    Ok(raised)
}

/// Alert counts for `status` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertCounts {
    /// Rule slug -> alerts stored.
    pub by_rule: Vec<(String, i64)>,
    pub total: i64,
}

/// Counts stored alerts per rule (a store without the table yet counts none).
pub fn alert_counts(conn: &Connection) -> rusqlite::Result<AlertCounts> {
    let exists: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'alerts'",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(AlertCounts::default());
    }
    let mut stmt =
        conn.prepare_cached("SELECT rule, count(*) FROM alerts GROUP BY rule ORDER BY rule")?;
    let by_rule = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<(String, i64)>>>()?;
    let total = by_rule.iter().map(|(_, n)| n).sum();
    Ok(AlertCounts { by_rule, total })
}

/// Stored alerts with `seq > after`, oldest first, as `(seq, raised_at, alert)`.
pub fn stored_alerts(
    conn: &Connection,
    after: i64,
    limit: i64,
) -> rusqlite::Result<Vec<(i64, String, Value)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, raised_at, rule_id, rule, rule_name, severity, source, group_key,
                window_start, window_end, hits, first_seen, last_seen, orgs.org_id, orgs.name
         FROM alerts LEFT JOIN orgs ON orgs.key = alerts.org
         WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after, limit], |r| {
        let group: String = r.get(7)?;
        let source: String = r.get(6)?;
        let raised: String = r.get(1)?;
        let value = json!({
            "Type": "MiroAlerts",
            "TimeGenerated": raised,
            "RuleId": r.get::<_, String>(2)?,
            "Rule": r.get::<_, String>(3)?,
            "RuleName": r.get::<_, String>(4)?,
            "Severity": r.get::<_, String>(5)?,
            "Source": SourceKind::from_name(&source).map_or(source.clone(), |s| s.table().to_string()),
            "Entities": serde_json::from_str::<Value>(&group).unwrap_or(Value::String(group)),
            "WindowStart": r.get::<_, String>(8)?,
            "WindowEnd": r.get::<_, String>(9)?,
            "Hits": r.get::<_, i64>(10)?,
            "FirstSeen": r.get::<_, String>(11)?,
            "LastSeen": r.get::<_, String>(12)?,
            "OrgId": r.get::<_, Option<String>>(13)?,
            "Org": r.get::<_, Option<String>>(14)?,
        });
        Ok((r.get(0)?, raised, value))
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store;

    /// Sign-in failures of three accounts over three hours, in time order, some late.
    fn items() -> Vec<String> {
        let start = UnixMs(1_767_607_200_000);
        let mut out = Vec::new();
        for i in 0..180u32 {
            let account = ["ada", "bruno", "chloe"][usize::try_from(i % 3).expect("small")];
            // Bursts every 40 minutes, quiet in between.
            let minute = i64::from(i / 3);
            if minute % 40 > 8 {
                continue;
            }
            let t = UnixMs(start.0 + minute * 60_000 + i64::from(i % 3) * 1000);
            // Rows no rule counts, between them: pages of only such rows raise nothing
            // and read no window, without changing what the later rows raise.
            for n in 0..4 {
                out.push(
                    serde_json::json!({
                        "id": format!("b{i}-{n}"),
                        "event": "board_opened",
                        "category": "boards",
                        "createdAt": UnixMs(t.0 + 100 + n).to_iso(),
                        "createdBy": {"type": "user", "id": account, "email": format!("{account}@acme.example")},
                    })
                    .to_string(),
                );
            }
            // A success after a burst: the sequence rule's second step.
            if minute % 40 == 8 {
                out.push(
                    serde_json::json!({
                        "id": format!("s{i}"),
                        "event": "sign_in_succeeded",
                        "category": "authentication",
                        "createdAt": UnixMs(t.0 + 500).to_iso(),
                        "createdBy": {"type": "user", "id": account, "email": format!("{account}@acme.example")},
                        "context": {"ip": "198.18.0.1"},
                    })
                    .to_string(),
                );
            }
            out.push(
                serde_json::json!({
                    "id": format!("e{i}"),
                    "event": "sign_in_failed",
                    "category": "authentication",
                    "createdAt": t.to_iso(),
                    "createdBy": {"type": "user", "id": account, "email": format!("{account}@acme.example")},
                    "context": {"ip": "198.18.0.1"},
                })
                .to_string(),
            );
        }
        out
    }

    fn alerts(conn: &Connection) -> Vec<(String, String, String)> {
        let mut stmt = conn
            .prepare("SELECT rule, group_key, window_start FROM alerts ORDER BY 1, 2, 3")
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    #[test]
    fn the_same_activity_in_two_organisations_raises_an_alert_for_each_never_one_together() {
        let rules = crate::detect::pack().expect("pack");
        let items = items();
        let now = UnixMs(1_767_700_000_000);
        let mut one = store::scratch().expect("store");
        store::insert_items(&mut one, SourceKind::AuditLogs, &items).expect("insert");
        let tx = one.transaction().expect("tx");
        let alone = evaluate_new(&tx, &rules, now).expect("evaluate");
        tx.commit().expect("commit");
        assert!(!alone.is_empty());

        // The same items (same ids) from a second organisation, and half of them only
        // from a third: no group may add up rows of two organisations.
        let mut two = store::scratch().expect("store");
        two.execute_batch(
            "UPDATE orgs SET org_id = '100' WHERE key = 1;
             INSERT INTO orgs (key, name, org_id, created_ms) VALUES (2, 'b', '200', 0);",
        )
        .expect("orgs");
        store::insert_items(&mut two, SourceKind::AuditLogs, &items).expect("insert");
        store::insert_org_items(&mut two, store::OrgKey(2), SourceKind::AuditLogs, &items)
            .expect("insert");
        let tx = two.transaction().expect("tx");
        let both = evaluate_new(&tx, &rules, now).expect("evaluate");
        tx.commit().expect("commit");
        assert_eq!(both.len(), alone.len() * 2, "one alert per organisation");
        for org in ["100", "200"] {
            let mine: Vec<_> = both
                .iter()
                .filter(|a| a.org_id.as_deref() == Some(org))
                .collect();
            assert_eq!(mine.len(), alone.len(), "{org}");
            for (a, b) in mine.iter().zip(&alone) {
                assert_eq!(
                    (a.hits, &a.keys),
                    (b.hits, &b.keys),
                    "{org}: the same counts"
                );
            }
        }
        // The stored and delivered alert names its organisation.
        let delivered = stored_alerts(&two, 0, 1000).expect("alerts");
        let orgs: std::collections::BTreeSet<String> = delivered
            .iter()
            .map(|(_, _, v)| format!("{}/{}", v["Org"], v["OrgId"]))
            .collect();
        assert_eq!(
            orgs.into_iter().collect::<Vec<_>>(),
            vec!["\"b\"/\"200\"", "\"default\"/\"100\""]
        );
    }

    #[test]
    fn incremental_evaluation_with_crashes_equals_one_pass() {
        let rules = crate::detect::pack().expect("pack");
        let items = items();
        let now = UnixMs(1_767_700_000_000);

        // One pass over everything.
        let mut whole = store::scratch().expect("store");
        store::insert_items(&mut whole, SourceKind::AuditLogs, &items).expect("insert");
        let tx = whole.transaction().expect("tx");
        evaluate_new(&tx, &rules, now).expect("evaluate");
        tx.commit().expect("commit");
        let expected = alerts(&whole);
        assert!(expected.len() >= 6, "the data raises alerts: {expected:?}");
        assert!(
            expected
                .iter()
                .any(|(rule, _, _)| rule == "sign-in-success-after-failures"),
            "the sequence rule fires: {expected:?}"
        );

        // Pages of 7 items, late ones out of order, every third evaluation lost to a
        // crash (rolled back), each evaluation done twice.
        let mut paged = store::scratch().expect("store");
        let mut order: Vec<&String> = items.iter().collect();
        order.swap(3, 200);
        order.swap(10, 150);
        order.swap(60, 270);
        // The successes come last, in pages of their own: a window completed by a row
        // of the sequence's second step alone.
        order.sort_by_key(|item| item.contains("sign_in_succeeded"));
        for (n, page) in order.chunks(7).enumerate() {
            let page: Vec<String> = page.iter().map(|s| (*s).clone()).collect();
            store::insert_items(&mut paged, SourceKind::AuditLogs, &page).expect("insert");
            let tx = paged.transaction().expect("tx");
            evaluate_new(&tx, &rules, now).expect("evaluate");
            if n % 3 == 2 {
                drop(tx); // a crash before the commit
            } else {
                tx.commit().expect("commit");
            }
            let tx = paged.transaction().expect("tx");
            evaluate_new(&tx, &rules, now).expect("evaluate");
            tx.commit().expect("commit");
        }
        let tx = paged.transaction().expect("tx");
        evaluate_new(&tx, &rules, now).expect("evaluate");
        tx.commit().expect("commit");
        assert_eq!(alerts(&paged), expected);
    }

    /// A small deterministic generator (xorshift64*): the cases are reproducible by seed.
    struct Xorshift(u64);

    impl Xorshift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % u64::try_from(n).expect("small")).expect("small")
        }
    }

    /// Every sample item of every rule of `rules` (firing and quiet), copied `copies`
    /// times at random shifts (0 to a day, so copies fall in one window or the next and
    /// add up across samples), each tagged with its source and whether organisation 2
    /// (and sometimes also organisation 1) has it.
    fn random_items(
        rules: &[Rule],
        copies: usize,
        rng: &mut Xorshift,
    ) -> Vec<(SourceKind, Vec<store::OrgKey>, String)> {
        let shifts_secs = [0i64, 45, 240, 600, 1800, 3600, 5 * 3600, 86_400];
        let mut out = Vec::new();
        for rule in rules {
            for sample in &rule.samples {
                let items = crate::detect::samples::sample_items(rule.source, sample)
                    .expect("sample items");
                for c in 0..copies {
                    let shift = shifts_secs[rng.below(shifts_secs.len())] * 1000;
                    for item in &items {
                        let mut v: Value = serde_json::from_str(item).expect("json");
                        let obj = v.as_object_mut().expect("object");
                        for key in ["createdAt", "actionTime"] {
                            if let Some(Value::String(t)) = obj.get(key) {
                                let t = UnixMs::parse(t).expect("sample time");
                                obj.insert(key.into(), Value::String(UnixMs(t.0 + shift).to_iso()));
                            }
                        }
                        let id = obj["id"].as_str().expect("id").to_string();
                        obj.insert(
                            "id".into(),
                            Value::String(format!("{}-{id}-c{c}", rule.slug)),
                        );
                        let orgs = match rng.below(4) {
                            0 => vec![store::OrgKey(2)],
                            1 => vec![store::OrgKey(1), store::OrgKey(2)],
                            _ => vec![store::OrgKey(1)],
                        };
                        out.push((rule.source, orgs, v.to_string()));
                    }
                }
            }
        }
        // Any order: late rows land in windows that already alerted, and a sequence's
        // steps arrive in either order.
        for i in (1..out.len()).rev() {
            out.swap(i, rng.below(i + 1));
        }
        out
    }

    /// (rule id, group, window start, organisation id) of every stored alert.
    fn stored_alert_groups(
        conn: &Connection,
    ) -> std::collections::BTreeSet<(String, String, String, Option<String>)> {
        let mut stmt = conn
            .prepare(
                "SELECT rule_id, group_key, window_start, orgs.org_id
                 FROM alerts LEFT JOIN orgs ON orgs.key = alerts.org",
            )
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    fn alert_group(a: &Alert) -> (String, String, String, Option<String>) {
        (
            a.rule_id.clone(),
            a.group_key(),
            a.window_start.to_iso(),
            a.org_id.clone(),
        )
    }

    /// Every alert of `rule` over all stored rows (`find` over every window).
    fn find_all(conn: &Connection, rule: &Rule) -> Vec<Alert> {
        find(
            conn,
            rule,
            UnixMs(1_700_000_000_000),
            UnixMs(1_800_000_000_000),
        )
        .expect("find")
    }

    /// The incremental evaluation raises what `find`, the rules' full SQL, finds over
    /// every stored row, for every rule of the pack: random pages of the samples' rows in
    /// random order (late rows into windows that already alerted), two organisations
    /// (with and without a recorded id), evaluations lost to crashes, and a rule edited
    /// half-way (threshold and match). Each alert's hits, first and last time are what
    /// `find` gives for its window at the moment it is raised.
    #[test]
    fn incremental_alerts_equal_the_full_sql_on_random_pages_orgs_crashes_and_an_edited_rule() {
        let pack = crate::detect::pack().expect("pack");
        // The clock moves so that the aggregates' horizon sweeps over the rows' span (a
        // day and some hours from the samples' start): late rows land both in windows
        // with aggregates and in windows behind the horizon.
        let start = crate::detect::samples::SAMPLE_START;
        let clock = |done: usize, all: usize| {
            let frac = i64::try_from(done * 1000 / all.max(1)).expect("small");
            UnixMs(start.0 + (AGGREGATE_SECS - 2 * 3600) * 1000 + frac * 36 * 3_600_000 / 1000)
        };
        let edited_slug = "sign-in-failures-by-actor";
        for seed in 1..=6u64 {
            let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x1234_5678_9abc));
            let items = random_items(&pack, 3, &mut rng);
            let mut conn = store::scratch().expect("store");
            conn.execute_batch(if seed % 2 == 0 {
                "UPDATE orgs SET org_id = '100' WHERE key = 1;
                 INSERT INTO orgs (key, name, org_id, created_ms) VALUES (2, 'b', '200', 0);"
            } else {
                "INSERT INTO orgs (key, name, org_id, created_ms) VALUES (2, 'b', '200', 0);"
            })
            .expect("orgs");
            let mut rules = pack.clone();
            let mut edited_at: Option<(Vec<Alert>, usize)> = None;
            let mut raised_after_edit = Vec::new();
            let mut at = 0;
            let mut page_no = 0usize;
            while at < items.len() {
                // Odd seeds store the last 40% in one page, once the horizon has passed
                // most rows: more new rows than rows since the horizon.
                let n = if seed % 2 == 1 && at * 10 >= items.len() * 6 {
                    items.len() - at
                } else {
                    (1 + rng.below(25)).min(items.len() - at)
                };
                for (source, orgs, item) in &items[at..at + n] {
                    for org in orgs {
                        store::insert_org_items(
                            &mut conn,
                            *org,
                            *source,
                            std::slice::from_ref(item),
                        )
                        .expect("insert");
                    }
                }
                at += n;
                page_no += 1;
                // Half-way, the rule is edited: a lower threshold and one more event.
                if edited_at.is_none() && at * 2 >= items.len() {
                    let rule = rules
                        .iter_mut()
                        .find(|r| r.slug == edited_slug)
                        .expect("the edited rule is in the pack");
                    rule.threshold = 3;
                    rule.matcher.events.push(("sign_in_succeeded".into(), true));
                    // What the edited rule finds over the rows already evaluated (the
                    // page just stored is evaluated by the edited rule).
                    let tx = conn.transaction().expect("tx");
                    let before = find_all(&tx, rule);
                    drop(tx);
                    edited_at = Some((before, page_no));
                }
                let now = clock(at, items.len());
                let tx = conn.transaction().expect("tx");
                let raised = evaluate_new(&tx, &rules, now).expect("evaluate");
                for alert in &raised {
                    let rule = rules.iter().find(|r| r.id == alert.rule_id).expect("rule");
                    let full =
                        find(&tx, rule, alert.window_start, alert.window_start).expect("find");
                    let same = full
                        .iter()
                        .find(|a| alert_group(a) == alert_group(alert))
                        .unwrap_or_else(|| panic!("seed {seed}: {alert:?} is not in {full:?}"));
                    assert_eq!(
                        (same.hits, &same.first_seen, &same.last_seen),
                        (alert.hits, &alert.first_seen, &alert.last_seen),
                        "seed {seed}: {}",
                        alert.rule
                    );
                }
                if rng.below(4) == 0 {
                    drop(tx); // a crash before the commit: the next pass does it again
                } else {
                    tx.commit().expect("commit");
                    if edited_at.is_some() {
                        raised_after_edit
                            .extend(raised.into_iter().filter(|a| a.rule == edited_slug));
                    }
                }
            }
            let tx = conn.transaction().expect("tx");
            let raised = evaluate_new(&tx, &rules, clock(1, 1)).expect("evaluate");
            raised_after_edit.extend(raised.into_iter().filter(|a| a.rule == edited_slug));
            tx.commit().expect("commit");
            let (kept, behind): (i64, i64) = conn
                .query_row(
                    "SELECT count(*), coalesce(sum(g.window_start < p.horizon), 0)
                     FROM detect_groups g JOIN detect_plans p ON p.id = g.plan",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .expect("groups");
            assert!(kept > 0, "seed {seed}: the aggregates are used");
            assert_eq!(behind, 0, "seed {seed}: none kept behind the horizon");

            let stored = stored_alert_groups(&conn);
            let mut total = 0;
            for rule in &rules {
                let mine: std::collections::BTreeSet<_> =
                    stored.iter().filter(|g| g.0 == rule.id).cloned().collect();
                let full = find_all(&conn, rule);
                if rule.slug != edited_slug {
                    let expected: std::collections::BTreeSet<_> =
                        full.iter().map(alert_group).collect();
                    assert_eq!(mine, expected, "seed {seed}: {}", rule.slug);
                    total += mine.len();
                    continue;
                }
                // The edited rule: what it raised after the edit is what the full SQL of
                // the edited rule finds; a group that SQL finds and no alert names got no
                // row after the edit (the seed alone raises nothing, as before).
                let (before, _) = edited_at.as_ref().expect("edited");
                for alert in &raised_after_edit {
                    assert!(
                        full.iter().any(|a| alert_group(a) == alert_group(alert)),
                        "seed {seed}: {alert:?}"
                    );
                }
                for a in &full {
                    if !mine.contains(&alert_group(a)) {
                        let old = before
                            .iter()
                            .find(|b| alert_group(b) == alert_group(a))
                            .unwrap_or_else(|| panic!("seed {seed}: not alerted: {a:?}"));
                        assert_eq!((old.hits, &old.last_seen), (a.hits, &a.last_seen));
                    }
                }
                assert!(
                    !raised_after_edit.is_empty(),
                    "seed {seed}: the edit raises"
                );
            }
            assert!(
                total >= rules.len(),
                "seed {seed}: the samples raise alerts"
            );
        }
    }

    /// A pass's SQLite work (virtual machine steps, counted by the progress handler)
    /// after a whole day of rows that `activity-after-deactivation` (a 1-day window whose
    /// second step is nearly every row) counts is about what it is after an hour of
    /// them: it follows the new rows, not the rules' windows.
    #[test]
    fn a_pass_costs_the_new_rows_not_the_windows() {
        let rules = crate::detect::pack().expect("pack");
        let day = UnixMs(1_767_571_200_000); // 2026-01-05T00:00:00Z
        let row = |n: usize, t: UnixMs| {
            serde_json::json!({
                "id": format!("r{n}"),
                "event": "board_opened",
                "category": "boards",
                "createdAt": t.to_iso(),
                "createdBy": {"type": "user", "id": format!("u{}", n % 40), "email": format!("u{}@acme.example", n % 40)},
            })
            .to_string()
        };
        let work = |history_secs: i64| -> u64 {
            let mut conn = store::scratch().expect("store");
            let end = day.0 + 86_400_000;
            let mut items = vec![
                serde_json::json!({
                    "id": "deactivated",
                    "event": "user_deactivated",
                    "category": "users",
                    "createdAt": UnixMs(end - history_secs * 1000).to_iso(),
                    "createdBy": {"type": "user", "id": "admin"},
                    "object": {"id": "u7"},
                })
                .to_string(),
            ];
            // One row every 15 s over the history.
            let rows = usize::try_from(history_secs / 15).expect("small");
            for n in 0..rows {
                let t = end - history_secs * 1000 + i64::try_from(n).expect("small") * 15_000 + 1;
                items.push(row(n, UnixMs(t)));
            }
            store::insert_items(&mut conn, SourceKind::AuditLogs, &items).expect("insert");
            let tx = conn.transaction().expect("tx");
            evaluate_new(&tx, &rules, UnixMs(end)).expect("evaluate");
            tx.commit().expect("commit");
            // A page of new rows in the last minute of the day.
            let new: Vec<String> = (0..20)
                .map(|n| {
                    row(
                        100_000 + n,
                        UnixMs(end - 60_000 + i64::try_from(n).expect("small") * 1000),
                    )
                })
                .collect();
            store::insert_items(&mut conn, SourceKind::AuditLogs, &new).expect("insert");
            let steps = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let counter = std::sync::Arc::clone(&steps);
            conn.progress_handler(
                100,
                Some(move || {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    false
                }),
            )
            .expect("handler");
            let tx = conn.transaction().expect("tx");
            let raised = evaluate_new(&tx, &rules, UnixMs(end)).expect("evaluate");
            tx.commit().expect("commit");
            assert!(
                raised
                    .iter()
                    .all(|a| a.rule != "activity-after-deactivation"),
                "u7 alerted in the first pass already"
            );
            steps.load(std::sync::atomic::Ordering::Relaxed)
        };
        let hour = work(3_600);
        let whole_day = work(86_400 - 60);
        assert!(
            whole_day * 2 <= hour * 3,
            "a pass after a day of rows did {whole_day} x100 SQLite steps, after an hour {hour}"
        );
    }
}
