//! `[detect]`: turning the pack off, disabling rules, and tuning a rule's event names,
//! threshold and window without editing the pack. Validated against the pack, so a
//! misspelt rule name is an error naming the key and the rules that exist.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::settings::parse_duration;

use super::rule::Rule;

/// `[detect]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDetect {
    /// Evaluate the rules during `run` (default true).
    pub enabled: Option<bool>,
    /// Rules to leave out, by name (file stem) or id.
    #[serde(default)]
    pub disabled: Vec<String>,
    /// `[detect.rules.NAME]`: per-rule overrides.
    #[serde(default)]
    pub rules: BTreeMap<String, RawRuleOverride>,
}

/// `[detect.rules.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuleOverride {
    /// Replaces the event names of the rule's first step (`match`).
    pub events: Option<Vec<String>>,
    pub threshold: Option<u32>,
    pub window: Option<String>,
}

/// A validated override.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleOverride {
    pub events: Option<Vec<String>>,
    pub threshold: Option<u32>,
    pub window: Option<Duration>,
}

/// `[detect]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectConfig {
    pub enabled: bool,
    /// Rule slugs left out.
    pub disabled: Vec<String>,
    /// Rule slug -> override.
    pub overrides: BTreeMap<String, RuleOverride>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            enabled: true,
            disabled: Vec::new(),
            overrides: BTreeMap::new(),
        }
    }
}

impl RawDetect {
    /// Validates against the built-in pack; `Err((key, message))`.
    pub fn validate(self) -> Result<DetectConfig, (String, String)> {
        let pack = super::pack().map_err(|e| ("detect".to_string(), e.to_string()))?;
        let find = |name: &str| {
            pack.iter()
                .find(|r| r.slug == name || r.id == name.to_lowercase())
                .map(|r| r.slug.clone())
        };
        let names = || {
            pack.iter()
                .map(|r| r.slug.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut disabled = Vec::new();
        for name in &self.disabled {
            let slug = find(name).ok_or_else(|| {
                (
                    "detect.disabled".to_string(),
                    format!(
                        "`{name}` is not a rule; `mirotrail rules list` shows them: {}",
                        names()
                    ),
                )
            })?;
            disabled.push(slug);
        }
        let mut overrides = BTreeMap::new();
        for (name, raw) in self.rules {
            let key = format!("detect.rules.{name}");
            let slug = find(&name).ok_or_else(|| {
                (
                    key.clone(),
                    format!(
                        "`{name}` is not a rule; `mirotrail rules list` shows them: {}",
                        names()
                    ),
                )
            })?;
            if raw.threshold == Some(0) {
                return Err((format!("{key}.threshold"), "is 0; write 1 or more".into()));
            }
            if let Some(events) = &raw.events
                && (events.is_empty()
                    || events
                        .iter()
                        .any(|e| e.trim().is_empty() || e.contains(['\'', '"'])))
            {
                return Err((
                    format!("{key}.events"),
                    "needs one or more event names (no quotes); to turn the rule off, list it in `detect.disabled`".into(),
                ));
            }
            let window = raw
                .window
                .as_deref()
                .map(|w| {
                    let d = parse_duration(w).map_err(|m| (format!("{key}.window"), m))?;
                    if d < Duration::from_secs(60)
                        || d.subsec_nanos() != 0
                        || d > Duration::from_secs(14 * 86_400)
                    {
                        return Err((
                            format!("{key}.window"),
                            format!("`{w}` must be whole seconds, from \"1m\" to \"14d\""),
                        ));
                    }
                    Ok(d)
                })
                .transpose()?;
            overrides.insert(
                slug,
                RuleOverride {
                    events: raw.events,
                    threshold: raw.threshold,
                    window,
                },
            );
        }
        Ok(DetectConfig {
            enabled: self.enabled.unwrap_or(true),
            disabled,
            overrides,
        })
    }
}

impl DetectConfig {
    /// The rules left after `disabled`, with the overrides applied.
    pub fn apply(&self, rules: Vec<Rule>) -> Vec<Rule> {
        rules
            .into_iter()
            .filter(|r| !self.disabled.contains(&r.slug))
            .map(|mut rule| {
                if let Some(o) = self.overrides.get(&rule.slug) {
                    if let Some(events) = &o.events {
                        let confirmed = |name: &str| {
                            rule.matcher
                                .events
                                .iter()
                                .any(|(n, c)| *c && n.eq_ignore_ascii_case(name))
                        };
                        rule.matcher.events =
                            events.iter().map(|e| (e.clone(), confirmed(e))).collect();
                    }
                    if let Some(t) = o.threshold {
                        rule.threshold = t;
                    }
                    if let Some(w) = o.window {
                        rule.window = w;
                    }
                }
                rule
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DetectConfig, (String, String)> {
        toml::from_str::<RawDetect>(text).expect("toml").validate()
    }

    #[test]
    fn overrides_replace_events_threshold_and_window() {
        let config = parse(
            "disabled = [\"app-admin-actions\"]\n[rules.mass-board-export]\nevents = [\"board_downloaded\"]\nthreshold = 3\nwindow = \"2h\"\n",
        )
        .expect("valid");
        let rules = config.apply(super::super::pack().expect("pack"));
        assert!(!rules.iter().any(|r| r.slug == "app-admin-actions"));
        let export = rules
            .iter()
            .find(|r| r.slug == "mass-board-export")
            .expect("rule");
        assert_eq!(export.threshold, 3);
        assert_eq!(export.window_secs(), 7200);
        assert_eq!(
            export.matcher.events,
            vec![("board_downloaded".to_string(), false)]
        );
        let kql = super::super::compile::kql(&super::super::compile::plan(export));
        assert!(
            kql.contains("\"board_downloaded\"") && kql.contains("Hits >= 3") && kql.contains("2h"),
            "{kql}"
        );
    }

    #[test]
    fn a_misspelt_rule_names_the_key_and_the_rules() {
        let (key, message) =
            parse("[rules.mass-board-exports]\nthreshold = 3\n").expect_err("unknown");
        assert_eq!(key, "detect.rules.mass-board-exports");
        assert!(message.contains("mass-board-export,"), "{message}");
        let (key, _) = parse("disabled = [\"nope\"]\n").expect_err("unknown");
        assert_eq!(key, "detect.disabled");
        let (key, _) = parse("[rules.mass-board-export]\nthreshold = 0\n").expect_err("zero");
        assert_eq!(key, "detect.rules.mass-board-export.threshold");
    }
}
