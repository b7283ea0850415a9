//! Detections: the rule pack (`rules/*.toml`, embedded in the binary), its validation,
//! the two compilers (SQL for the local store, KQL for Sentinel), the evaluator that turns
//! stored rows into alerts, and the Sentinel export.
//!
//! Invariants:
//! - one definition per rule: the SQL and the KQL are both rendered from one [`compile::Plan`];
//! - every field a rule names is a column of its table (or a member of a dynamic column),
//!   checked when the rule is loaded (`fields.rs`), so the KQL names only contract columns;
//! - an alert is raised once per rule, group and window (`alerts` is unique on them), and
//!   the evaluation offset moves in the same transaction as the alerts it produced, so a
//!   crash neither loses nor duplicates an alert (`eval.rs`).
//!
//! The rule format and the pack are documented in `docs/detections.md`.

pub mod compile;
mod config;
pub mod deliver;
pub mod eval;
pub mod export;
pub mod fields;
pub mod rule;
pub mod samples;

pub use config::{DetectConfig, RawDetect, RuleOverride};
pub use eval::{Alert, AlertCounts};
pub use rule::{RawRule, Rule, RuleError, Severity};

/// The pack: (file stem, text) of every `rules/*.toml`, embedded at build time.
/// `tests::every_rule_file_is_in_the_pack` keeps this list and the folder equal.
const PACK: [(&str, &str); 13] = [
    (
        "sign-in-failures-by-actor",
        include_str!("../../rules/sign-in-failures-by-actor.toml"),
    ),
    (
        "sign-in-failures-by-ip",
        include_str!("../../rules/sign-in-failures-by-ip.toml"),
    ),
    (
        "sign-in-success-after-failures",
        include_str!("../../rules/sign-in-success-after-failures.toml"),
    ),
    (
        "admin-role-granted",
        include_str!("../../rules/admin-role-granted.toml"),
    ),
    (
        "sso-settings-changed",
        include_str!("../../rules/sso-settings-changed.toml"),
    ),
    (
        "scim-changed",
        include_str!("../../rules/scim-changed.toml"),
    ),
    (
        "domain-allowlist-changed",
        include_str!("../../rules/domain-allowlist-changed.toml"),
    ),
    (
        "board-shared-publicly",
        include_str!("../../rules/board-shared-publicly.toml"),
    ),
    (
        "guest-sharing-enabled",
        include_str!("../../rules/guest-sharing-enabled.toml"),
    ),
    (
        "mass-board-export",
        include_str!("../../rules/mass-board-export.toml"),
    ),
    (
        "mass-content-deletion",
        include_str!("../../rules/mass-content-deletion.toml"),
    ),
    (
        "activity-after-deactivation",
        include_str!("../../rules/activity-after-deactivation.toml"),
    ),
    (
        "app-admin-actions",
        include_str!("../../rules/app-admin-actions.toml"),
    ),
];

/// Reads and validates one rule file's text.
pub fn parse_rule(slug: &str, text: &str) -> Result<Rule, RuleError> {
    let file = format!("rules/{slug}.toml");
    let raw: RawRule = toml::from_str(text).map_err(|e| RuleError {
        file: file.clone(),
        key: e
            .span()
            .map(|s| text[s].lines().next().unwrap_or_default().to_string())
            .unwrap_or_default(),
        message: e.message().to_string(),
    })?;
    raw.validate(&file, slug)
}

/// The built-in pack, validated, in its documented order.
pub fn pack() -> Result<Vec<Rule>, RuleError> {
    let rules = PACK
        .iter()
        .map(|(slug, text)| parse_rule(slug, text))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ids: Vec<&str> = rules.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    if let Some(pair) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(RuleError {
            file: "rules/".into(),
            key: "id".into(),
            message: format!("two rules share the id {}; give each its own GUID", pair[0]),
        });
    }
    Ok(rules)
}

/// The pack with the config's overrides applied and its disabled rules left out.
pub fn active_rules(config: &DetectConfig) -> Vec<Rule> {
    let rules = pack().expect("the built-in pack validates (tests::the_pack_validates)");
    config.apply(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pack_validates() {
        let rules = pack().expect("valid pack");
        assert_eq!(rules.len(), PACK.len());
    }

    #[test]
    fn every_rule_file_is_in_the_pack() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("rules/")
            .filter_map(|e| {
                let name = e.expect("entry").file_name().into_string().expect("utf-8");
                name.strip_suffix(".toml").map(str::to_string)
            })
            .collect();
        files.sort();
        let mut packed: Vec<String> = PACK.iter().map(|(s, _)| (*s).to_string()).collect();
        packed.sort();
        assert_eq!(files, packed);
        for (slug, text) in PACK {
            let on_disk = std::fs::read_to_string(dir.join(format!("{slug}.toml"))).expect("file");
            assert_eq!(on_disk, text, "{slug}");
        }
    }

    #[test]
    fn each_rule_has_a_firing_and_a_quiet_sample() {
        for rule in pack().expect("pack") {
            assert!(
                rule.samples.iter().any(|s| s.fires) && rule.samples.iter().any(|s| !s.fires),
                "{}: needs a positive and a negative sample",
                rule.slug
            );
        }
    }
}
