//! `mirotrail detect` (a retro-hunt over the store) and `mirotrail rules list|show|test|
//! coverage|export`: the command-line face of `detect/`. Read-only on the store unless
//! `detect --write` is given.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::{Args, Subcommand};

use super::{ConfigArgs, Failure, load_config};
use crate::config::{Config, ConfigLocation};
use crate::detect::{self, Rule, eval, samples};
use crate::store::Store;
use crate::timefmt::UnixMs;

#[derive(Debug, Args)]
pub(crate) struct DetectArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// How far back to hunt, e.g. `30d`.
    #[arg(long, default_value = "30d", value_parser = super::parse_retry_for)]
    since: std::time::Duration,
    /// Also store the alerts found (as `run` would: once per rule, group and window).
    /// Needs the store's lock, so not while `run` is running.
    #[arg(long)]
    write: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RulesArgs {
    #[command(subcommand)]
    command: RulesCommand,
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// List the rules (with the config's overrides when a config is found).
    List(OptionalConfig),
    /// Show one rule: its settings, event names (confirmed or not), SQL and KQL.
    Show {
        /// The rule's name (e.g. `mass-board-export`) or id.
        rule: String,
        #[command(flatten)]
        config: OptionalConfig,
    },
    /// Run the rules' built-in samples (each must fire, or stay quiet, as it says).
    Test {
        /// One rule's name or id; all rules when absent.
        rule: Option<String>,
    },
    /// For your store: the rules' event names never seen, and frequent events no rule reads.
    Coverage {
        #[command(flatten)]
        config: ConfigArgs,
        /// Event names seen at least this many times count as frequent.
        #[arg(long, default_value_t = 10)]
        min_count: i64,
    },
    /// Export the rules for another tool.
    Export {
        #[command(subcommand)]
        target: ExportTarget,
    },
}

#[derive(Debug, Subcommand)]
enum ExportTarget {
    /// Sentinel analytic rules (YAML), hunting queries (YAML) and an ARM template.
    Sentinel {
        /// The folder to write into (created if needed).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        config: OptionalConfig,
    },
}

#[derive(Debug, Args)]
struct OptionalConfig {
    /// A configuration file whose `[detect]` section applies (overrides, disabled rules);
    /// without it the pack's defaults.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
}

impl OptionalConfig {
    fn rules(&self) -> Result<Vec<Rule>, Failure> {
        let config = match &self.config {
            Some(path) => Some(Config::load_from(&ConfigLocation::resolve(Some(
                path.clone(),
            )))?),
            None => None,
        };
        Ok(match config {
            Some(c) => detect::active_rules(&c.detect),
            None => pack()?,
        })
    }
}

fn pack() -> Result<Vec<Rule>, Failure> {
    detect::pack().map_err(Failure::runtime)
}

fn find<'a>(rules: &'a [Rule], name: &str) -> Result<&'a Rule, Failure> {
    rules
        .iter()
        .find(|r| r.slug == name || r.id == name.to_lowercase())
        .ok_or_else(|| {
            let names: Vec<&str> = rules.iter().map(|r| r.slug.as_str()).collect();
            Failure::usage(anyhow!(
                "`{name}` is not a rule; the rules are: {}",
                names.join(", ")
            ))
        })
}

fn table() -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    t
}

/// Prints alerts as a table.
pub(crate) fn render_alerts(alerts: &[eval::Alert]) -> String {
    if alerts.is_empty() {
        return "no alerts\n".to_string();
    }
    let mut t = table();
    t.set_header([
        "rule",
        "severity",
        "group",
        "window start",
        "hits",
        "first seen",
        "last seen",
    ]);
    for a in alerts {
        let group: Vec<String> = a.keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
        t.add_row([
            a.rule.clone(),
            a.severity.clone(),
            group.join(" "),
            a.window_start.to_iso(),
            a.hits.to_string(),
            a.first_seen.clone(),
            a.last_seen.clone(),
        ]);
    }
    format!("{t}\n{} alert(s)\n", alerts.len())
}

pub(crate) fn run_detect(args: DetectArgs) -> Result<(), Failure> {
    let config = load_config(&args.config)?;
    let rules = detect::active_rules(&config.detect);
    let now = UnixMs::now();
    let from = now.minus(args.since);
    let hunt = |conn: &rusqlite::Connection| -> rusqlite::Result<Vec<eval::Alert>> {
        let mut all = Vec::new();
        for rule in &rules {
            all.extend(eval::find(conn, rule, from, now)?);
        }
        Ok(all)
    };
    let (alerts, stored) = if args.write {
        let store = Store::open(&config.store_path).map_err(Failure::runtime)?;
        store
            .write("storing retro-hunt alerts", |tx| {
                let alerts = hunt(tx)?;
                let mut stored = 0;
                for a in &alerts {
                    stored += usize::from(eval::insert_alert(tx, a, now)?);
                }
                Ok((alerts, Some(stored)))
            })
            .map_err(Failure::runtime)?
    } else {
        let conn = Store::open_read_only(&config.store_path).map_err(|e| {
            Failure::runtime(anyhow!(
                "{e}; run `mirotrail run --config {}` first",
                config.path.display()
            ))
        })?;
        (hunt(&conn).map_err(Failure::runtime)?, None)
    };
    let mut text = render_alerts(&alerts);
    match stored {
        Some(n) => text.push_str(&format!("{n} new alert(s) stored in the alerts table\n")),
        None if !alerts.is_empty() => {
            text.push_str("not stored (add --write to store them in the alerts table)\n")
        }
        None => {}
    }
    super::output::print(&text)
}

pub(crate) fn run(args: RulesArgs) -> Result<(), Failure> {
    match args.command {
        RulesCommand::List(config) => {
            let rules = config.rules()?;
            let mut t = table();
            t.set_header([
                "name",
                "severity",
                "stream",
                "threshold",
                "window",
                "events (confirmed*)",
            ]);
            for r in &rules {
                let events: Vec<String> = r
                    .event_names()
                    .iter()
                    .map(|(n, c)| if *c { format!("{n}*") } else { n.clone() })
                    .collect();
                t.add_row([
                    r.slug.clone(),
                    r.severity.as_str().to_string(),
                    r.source.name().to_string(),
                    r.threshold.to_string(),
                    humantime::format_duration(r.window).to_string(),
                    if events.is_empty() {
                        "(any)".into()
                    } else {
                        events.join(", ")
                    },
                ]);
            }
            super::output::print(&format!(
                "{t}\n{} rule(s); `*` = event name confirmed by a public source\n",
                rules.len()
            ))
        }
        RulesCommand::Show { rule, config } => {
            let rules = config.rules()?;
            let r = find(&rules, &rule)?;
            let plan = detect::compile::plan(r);
            let events: Vec<String> = r
                .event_names()
                .iter()
                .map(|(n, c)| format!("{n} ({})", if *c { "confirmed" } else { "unconfirmed" }))
                .collect();
            let text = format!(
                "{}\nname: {}\nid: {}\nseverity: {}\ntactics: {}\ntechniques: {}\nstream: {} ({})\ngroup by: {}\nthreshold: {} in {}\nevent names: {}\n\n{}\n\nSQL (local store):\n{}\n\nKQL (Sentinel):\n{}\n",
                r.name,
                r.slug,
                r.id,
                r.severity.as_str(),
                r.tactics.join(", "),
                r.techniques.join(", "),
                r.source.name(),
                r.source.table(),
                if r.group_by.is_empty() {
                    "-".into()
                } else {
                    r.group_by.join(", ")
                },
                r.threshold,
                humantime::format_duration(r.window),
                if events.is_empty() {
                    "(any)".into()
                } else {
                    events.join(", ")
                },
                r.description,
                detect::compile::sql(&plan),
                detect::compile::kql(&plan),
            );
            super::output::print(&text)
        }
        RulesCommand::Test { rule } => {
            let rules = pack()?;
            let chosen: Vec<&Rule> = match &rule {
                Some(name) => vec![find(&rules, name)?],
                None => rules.iter().collect(),
            };
            let mut failed = 0;
            let mut text = String::new();
            for r in chosen {
                for outcome in samples::run_samples(r).map_err(|e| Failure::runtime(anyhow!(e)))? {
                    let verdict = if outcome.passed() {
                        "ok  "
                    } else {
                        failed += 1;
                        "FAIL"
                    };
                    text.push_str(&format!(
                        "{verdict} {}: {} (expects {}, got {})\n",
                        r.slug,
                        outcome.name,
                        if outcome.expected_alert {
                            "an alert"
                        } else {
                            "none"
                        },
                        outcome.alerts.len()
                    ));
                }
            }
            super::output::print(&text)?;
            if failed > 0 {
                return Err(Failure::runtime(anyhow!("{failed} sample(s) failed")));
            }
            Ok(())
        }
        RulesCommand::Coverage { config, min_count } => coverage(&config, min_count),
        RulesCommand::Export {
            target: ExportTarget::Sentinel { out, config },
        } => {
            let rules = config.rules()?;
            let written = detect::export::write_sentinel(
                &out,
                &rules,
                crate::sentinel_content::asim::arm_resources(false),
            )
            .map_err(|e| Failure::runtime(anyhow!("cannot write into {}: {e}", out.display())))?;
            super::output::print(&format!(
                "wrote {} file(s) into {}: analytic-rules/*.yaml, hunting-queries/*.yaml, azuredeploy.json\n",
                written.len(),
                out.display()
            ))
        }
    }
}

fn coverage(args: &ConfigArgs, min_count: i64) -> Result<(), Failure> {
    let config = load_config(args)?;
    let rules = detect::active_rules(&config.detect);
    let conn = Store::open_read_only(&config.store_path).map_err(|e| {
        Failure::runtime(anyhow!(
            "{e}; run `mirotrail run --config {}` first",
            config.path.display()
        ))
    })?;
    let mut stmt = conn
        .prepare("SELECT lower(event), count(*) FROM MiroAuditLogs_CL GROUP BY lower(event) ORDER BY count(*) DESC")
        .map_err(Failure::runtime)?;
    let seen: Vec<(String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(Failure::runtime)?
        .collect::<Result<_, _>>()
        .map_err(Failure::runtime)?;
    let count_of = |name: &str| {
        seen.iter()
            .find(|(e, _)| e == &name.to_lowercase())
            .map_or(0, |(_, n)| *n)
    };
    let mut t = table();
    t.set_header(["rule", "event name", "confirmed", "seen in the store"]);
    let mut never = 0;
    for r in &rules {
        for (name, confirmed) in r.event_names() {
            let n = count_of(&name);
            never += usize::from(n == 0);
            t.add_row([
                r.slug.clone(),
                name,
                if confirmed { "yes".into() } else { "no".into() },
                n.to_string(),
            ]);
        }
    }
    let covered = |event: &str| {
        rules.iter().any(|r| {
            r.event_names()
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(event))
        })
    };
    let mut u = table();
    u.set_header(["event name", "count", "categories"]);
    let mut uncovered = 0;
    for (event, n) in seen.iter().filter(|(e, n)| *n >= min_count && !covered(e)) {
        let cats: String = conn
            .query_row(
                "SELECT group_concat(DISTINCT category) FROM MiroAuditLogs_CL WHERE lower(event) = ?1",
                [event],
                |r| r.get::<_, Option<String>>(0),
            )
            .map_err(Failure::runtime)?
            .unwrap_or_default();
        uncovered += 1;
        u.add_row([event.clone(), n.to_string(), cats]);
    }
    let text = format!(
        "Event names the rules read ({never} never seen in this store: if your organisation names them differently, set `[detect.rules.NAME] events`):\n{t}\n\nFrequent event names (at least {min_count}) no rule reads ({uncovered}):\n{u}\n"
    );
    super::output::print(&text)
}
