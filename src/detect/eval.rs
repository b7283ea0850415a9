//! Evaluating rules on the store: [`find`] runs a rule's SQL over a time range (retro-hunt,
//! samples), [`evaluate_new`] turns rows stored since the last evaluation into alerts.
//!
//! Invariants (crash-safe like a sink):
//! - `alerts` is unique on (rule id, group, window start) and alerts are inserted with
//!   `INSERT OR IGNORE`, so an alert is raised once per rule, group and window, however
//!   often its window is evaluated again;
//! - `detect_offsets.evaluated_seq` moves in the same transaction as the alerts the
//!   evaluation of those rows raised: a crash before the commit re-evaluates the same
//!   rows (nothing lost), after it nothing is evaluated twice into a second alert;
//! - new rows a rule counts (matching one of its steps) are evaluated together with every
//!   stored row of the windows they fall in, so a late row completes the window it
//!   belongs to (a window that already alerted stays one alert); windows that received
//!   no such row cannot change and are not read again, and a window that received only
//!   second-step rows of a sequence rule is read for its first-step rows and the new
//!   second-step rows only (`alerts_of_new_rows`), so a pass costs in proportion to the
//!   new rows and the rules' rare first-step rows, not to the rules' window lengths.

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

/// When the new rows (`_seq` in `(offset, last]`) that `rule` counts happened: those
/// matching its first step, and those matching its second step (a sequence rule). `None`:
/// no such row.
fn new_match_span(
    tx: &Connection,
    plan: &compile::Plan,
    step: usize,
    offset: i64,
    last: i64,
) -> rusqlite::Result<Option<(UnixMs, UnixMs)>> {
    let (oldest, newest): (Option<String>, Option<String>) = tx
        .prepare_cached(&compile::sql_new_matches(plan, step))?
        .query_row(params![offset, last], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(oldest
        .as_deref()
        .and_then(UnixMs::parse)
        .zip(newest.as_deref().and_then(UnixMs::parse)))
}

/// The alerts of `rule` that the new rows (`_seq` in `(offset, last]`) can have raised.
/// Windows with new first-step rows are evaluated with every stored row. Windows with new
/// second-step rows are evaluated with every stored first-step row but only the new
/// second-step rows: older second-step rows were evaluated with the first-step rows they
/// could complete when either arrived, so only a new one can complete a sequence now.
/// (A second step such as "any action by a user" matches nearly every row; reading all of
/// a 1-day window's rows on every pass was most of live mode's CPU.)
fn alerts_of_new_rows(
    tx: &Connection,
    rule: &Rule,
    offset: i64,
    last: i64,
) -> rusqlite::Result<Vec<Alert>> {
    let plan = compile::plan(rule);
    let mut alerts = Vec::new();
    if let Some((oldest, newest)) = new_match_span(tx, &plan, 0, offset, last)? {
        alerts.extend(find(tx, rule, oldest, newest)?);
    }
    if plan.steps.len() > 1
        && let Some((oldest, newest)) = new_match_span(tx, &plan, 1, offset, last)?
    {
        alerts.extend(query_alerts(
            tx,
            rule,
            &plan,
            &compile::sql_new_second_step(&plan),
            oldest,
            newest,
            Some((offset, last)),
        )?);
    }
    Ok(alerts)
}

/// The alerts of `rule` over whole windows covering `[from, to)`.
pub fn find(
    conn: &Connection,
    rule: &Rule,
    from: UnixMs,
    to: UnixMs,
) -> rusqlite::Result<Vec<Alert>> {
    let plan = compile::plan(rule);
    query_alerts(conn, rule, &plan, &compile::sql(&plan), from, to, None)
}

/// Runs one of the plan's alert queries over whole windows covering `[from, to)`
/// (`seq`: the `_seq` range of [`compile::sql_new_second_step`]).
fn query_alerts(
    conn: &Connection,
    rule: &Rule,
    plan: &compile::Plan,
    sql: &str,
    from: UnixMs,
    to: UnixMs,
    seq: Option<(i64, i64)>,
) -> rusqlite::Result<Vec<Alert>> {
    let w = rule.window_secs();
    let (start, end) = whole_windows(w, from, to);
    let mut stmt = conn.prepare_cached(sql)?;
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
    let rows = match seq {
        None => stmt.query_map(params![start.to_iso(), end.to_iso()], map)?,
        Some((after, through)) => {
            stmt.query_map(params![start.to_iso(), end.to_iso(), after, through], map)?
        }
    };
    rows.collect()
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

/// Evaluates `rules` on the rows stored since the last evaluation of each source, raises
/// their alerts and moves the offsets, all on `tx` (the caller commits). Returns the
/// alerts newly raised.
pub fn evaluate_new(tx: &Connection, rules: &[Rule], now: UnixMs) -> rusqlite::Result<Vec<Alert>> {
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
        for rule in rules.iter().filter(|r| r.source == source) {
            // Only new rows the rule counts can change its alerts: the windows they fall
            // in are evaluated again (with every stored row), the others are not read.
            for alert in alerts_of_new_rows(tx, rule, offset, last)? {
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
}
