//! A rule's built-in samples (`[[samples]]`), run through the same path as real data: the
//! items become API JSON, are stored by the store's own transform into a scratch
//! database, and the rule's compiled SQL runs over them. `rules test` prints the outcome;
//! the unit tests require every sample of the pack to pass.

use serde_json::{Map, Value};

use crate::source::SourceKind;
use crate::store;
use crate::timefmt::UnixMs;

use super::eval::{self, Alert};
use super::rule::{RawSample, Rule};

/// Where sample times start: a Monday, 10:00 UTC (aligned to every window of the pack).
pub const SAMPLE_START: UnixMs = UnixMs(1_767_607_200_000);

/// The outcome of one sample.
#[derive(Debug, Clone)]
pub struct SampleOutcome {
    pub name: String,
    pub expected_alert: bool,
    pub alerts: Vec<Alert>,
}

impl SampleOutcome {
    /// A firing sample raises exactly one alert; a quiet one none.
    pub fn passed(&self) -> bool {
        self.alerts.len() == usize::from(self.expected_alert)
    }
}

/// The API items of a sample, as JSON text: `repeat`/`every_secs` expanded,
/// `offset_secs` turned into the stream's time field, ids made unique.
pub fn sample_items(source: SourceKind, sample: &RawSample) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (i, item) in sample.items.iter().enumerate() {
        let Value::Object(mut map) = serde_json::to_value(item).map_err(|e| e.to_string())? else {
            return Err(format!(
                "sample `{}`: item {} is not a table",
                sample.name,
                i + 1
            ));
        };
        let mut number = |key: &str, default: i64| -> Result<i64, String> {
            match map.remove(key) {
                None => Ok(default),
                Some(v) => v.as_i64().ok_or_else(|| {
                    format!(
                        "sample `{}`: item {}: `{key}` must be a whole number",
                        sample.name,
                        i + 1
                    )
                }),
            }
        };
        let offset = number("offset_secs", 0)?;
        let repeat = number("repeat", 1)?;
        let every = number("every_secs", 0)?;
        for k in 0..repeat.max(1) {
            let mut item: Map<String, Value> = map.clone();
            let t = SAMPLE_START.plus(std::time::Duration::from_secs(
                u64::try_from(offset + k * every).unwrap_or(0),
            ));
            let (time_key, iso) = match source {
                // Miro's own audit time form: an offset without a colon.
                SourceKind::AuditLogs => ("createdAt", t.to_iso().replace('Z', "+0000")),
                SourceKind::ContentLogs => ("actionTime", t.to_iso()),
                SourceKind::AiInteractionLogs => ("createdAt", t.to_iso()),
            };
            item.entry(time_key.to_string())
                .or_insert(Value::String(iso));
            item.entry("id".to_string())
                .or_insert(Value::String(format!("sample-{}-{i}-{k}", t.0)));
            if source == SourceKind::AuditLogs {
                item.entry("type".to_string())
                    .or_insert(Value::String("event".into()));
            }
            out.push(Value::Object(item).to_string());
        }
    }
    Ok(out)
}

/// Runs every sample of `rule`.
pub fn run_samples(rule: &Rule) -> Result<Vec<SampleOutcome>, String> {
    let mut outcomes = Vec::new();
    for sample in &rule.samples {
        let items = sample_items(rule.source, sample)?;
        let mut conn = store::scratch().map_err(|e| e.to_string())?;
        store::insert_items(&mut conn, rule.source, &items).map_err(|e| e.to_string())?;
        let alerts = eval::find(
            &conn,
            rule,
            SAMPLE_START.minus(std::time::Duration::from_secs(86_400)),
            SAMPLE_START.plus(std::time::Duration::from_secs(2 * 86_400)),
        )
        .map_err(|e| format!("rule {}: the compiled SQL failed: {e}", rule.slug))?;
        outcomes.push(SampleOutcome {
            name: sample.name.clone(),
            expected_alert: sample.fires,
            alerts,
        });
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_of_the_pack_passes() {
        for rule in super::super::pack().expect("pack") {
            for outcome in run_samples(&rule).expect("runs") {
                assert!(
                    outcome.passed(),
                    "{}: sample `{}` expected {} alert(s), got {:?}",
                    rule.slug,
                    outcome.name,
                    usize::from(outcome.expected_alert),
                    outcome.alerts
                );
            }
        }
    }

    #[test]
    fn the_sample_start_is_a_monday_at_ten() {
        assert_eq!(SAMPLE_START.to_iso(), "2026-01-05T10:00:00.000Z");
    }
}
