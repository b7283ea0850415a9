//! Every config key with its default and why, in one table: `mirotrail init` writes it as
//! a commented starter config and `mirotrail manpage` prints it as the CONFIGURATION
//! section. Tests hold it to the code: uncommenting every default of the starter config
//! gives exactly the configuration of an empty file, and every key appears in README.md.

/// One key of the config file.
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    /// The TOML section, e.g. `miro`, `sources.audit_logs`, `sinks.archive`.
    pub section: &'static str,
    pub key: &'static str,
    /// The default as a TOML value, or `None` when the key has no default (then
    /// `example` shows a value).
    pub default: Option<&'static str>,
    /// A value to show for a key without a default (TOML).
    pub example: Option<&'static str>,
    /// Why the default, or what the key does.
    pub why: &'static str,
}

const fn key(
    section: &'static str,
    key: &'static str,
    default: &'static str,
    why: &'static str,
) -> KeyDoc {
    KeyDoc {
        section,
        key,
        default: Some(default),
        example: None,
        why,
    }
}

const fn example(
    section: &'static str,
    key: &'static str,
    example: &'static str,
    why: &'static str,
) -> KeyDoc {
    KeyDoc {
        section,
        key,
        default: None,
        example: Some(example),
        why,
    }
}

/// The keys of one source (`sources.audit_logs`, `sources.content_logs`,
/// `sources.ai_interaction_logs`).
macro_rules! source_keys {
    ($section:literal, $enabled:literal, $enabled_why:literal, $page:literal, $page_why:literal,
     $poll:literal, $poll_why:literal, $lag:literal, $lag_why:literal, $recent:literal,
     $recent_why:literal, $overlap:literal, $overlap_why:literal,
     $every:literal, $every_why:literal $(,)?) => {
        [
            key($section, "enabled", $enabled, $enabled_why),
            key(
                $section,
                "initial_lookback",
                "\"24h\"",
                "where a fresh store starts; older history: `mirotrail backfill`",
            ),
            key($section, "poll_interval", $poll, $poll_why),
            key($section, "settle_lag", $lag, $lag_why),
            key($section, "recent_overlap", $recent, $recent_why),
            key($section, "overlap", $overlap, $overlap_why),
            key($section, "overlap_every", $every, $every_why),
            key(
                $section,
                "max_window",
                "\"24h\"",
                "the longest window read in one go; bounds the work an expired cursor costs",
            ),
            key($section, "page_size", $page, $page_why),
        ]
    };
}

const AUDIT: [KeyDoc; 9] = source_keys!(
    "sources.audit_logs",
    "true",
    "audit logs need the SIEM integration (scope auditlogs:read)",
    "500",
    "the largest `limit` known to work; 1..=1000",
    "\"10s\"",
    "events are stored about 10 s after they appear, for 600 of the 100,000 credits a minute (0.6%)",
    "\"5s\"",
    "windows end this far before now; later arrivals are caught by the overlaps",
    "\"10s\"",
    "each poll re-reads this much before its window, free while it fits in the page: events up to 5 s late (recent_overlap + settle_lag - poll_interval) are stored by the next poll",
    "\"15m\"",
    "each slice of time is read once more when this old, and the store drops the duplicates: events up to 15m5s late (overlap + settle_lag) are caught",
    "\"5m\"",
    "that late re-read waits until this much time is due (\"0s\": on every poll): 5 minutes of events in one go fill whole pages",
);
const CONTENT: [KeyDoc; 9] = source_keys!(
    "sources.content_logs",
    "false",
    "content logs need Enterprise Guard (scope contentlogs:export) and `miro.org_id`",
    "1000",
    "the API maximum",
    "\"5m\"",
    "a call costs 2,000 credits: every 5 minutes is 400 credits a minute (0.4%); \"10s\" would be 12%",
    "\"1m\"",
    "windows end this far before now; later arrivals are caught by the overlaps",
    "\"0s\"",
    "each poll re-reads this much before its window; the 1-minute settle lag already waits for most late items",
    "\"20m\"",
    "each slice of time is read once more when this old: items up to 21 minutes late (overlap + settle_lag) are caught, for one more read of each item",
    "\"20m\"",
    "that late re-read waits until this much time is due (\"0s\": on every poll): one call of 2,000 credits per 20 minutes when there is nothing new",
);
const AI: [KeyDoc; 9] = source_keys!(
    "sources.ai_interaction_logs",
    "false",
    "AI interaction logs (beta) need Enterprise Guard (scope aiinteractionlogs:read) and `miro.org_id`",
    "100",
    "the API maximum",
    "\"5m\"",
    "a call costs 2,000 credits: every 5 minutes is 400 credits a minute (0.4%); entries are collected exactly whatever the interval",
    "\"5s\"",
    "the API filters on when Miro stored the entry, so only clock differences and the moment before a write is readable need waiting for",
    "\"30s\"",
    "each poll re-reads this much before its window (in the same request): an entry stored before a window's end is in that window, whenever it happened",
    "\"30s\"",
    "no longer than recent_overlap, so no late re-read: the endpoint filters on when Miro stored the entry",
    "\"0s\"",
    "unused while overlap is not longer than recent_overlap",
);

const MIRO: [KeyDoc; 12] = [
    key(
        "miro",
        "api_base",
        "\"https://api.miro.com\"",
        "override for proxies and the emulator",
    ),
    key(
        "miro",
        "token_env",
        "\"MIRO_TOKEN\"",
        "the environment variable holding the token; secrets never go in this file or on the command line",
    ),
    example(
        "miro",
        "token_file",
        "\"/run/secrets/miro-token\"",
        "or a file holding the token (mode 600), instead of token_env",
    ),
    example(
        "miro",
        "client_id",
        "\"3458764512345678901\"",
        "expiring tokens instead of token_env/token_file: your OAuth app's client id; needs the client secret and refresh_token_file (`mirotrail auth login` creates it)",
    ),
    example(
        "miro",
        "client_secret_env",
        "\"MIRO_CLIENT_SECRET\"",
        "with client_id: the environment variable holding the app's client secret (default MIRO_CLIENT_SECRET)",
    ),
    example(
        "miro",
        "client_secret_file",
        "\"/run/secrets/miro-client-secret\"",
        "or a file holding the client secret (mode 600), instead of client_secret_env",
    ),
    example(
        "miro",
        "refresh_token_file",
        "\"miro-refresh-token\"",
        "with client_id: the refresh token; mirotrail replaces it atomically on every refresh (each refresh invalidates the previous one), so it must be writable",
    ),
    example(
        "miro",
        "org_id",
        "\"3074457345821141000\"",
        "the organization id, needed for content and AI interaction logs (`mirotrail check` shows it)",
    ),
    key(
        "miro",
        "request_timeout",
        "\"30s\"",
        "cuts off a hung connection; a page comes back in well under a second",
    ),
    key(
        "miro",
        "max_retries",
        "8",
        "transient failures are retried with backoff (about 3 minutes in all) before the cycle fails",
    ),
    key(
        "miro",
        "retry_initial_backoff",
        "\"500ms\"",
        "the first retry wait; it doubles per attempt up to 60 s",
    ),
    key(
        "miro",
        "max_response_bytes",
        "67108864",
        "caps each answer from Miro (64 MiB, far above a page of 1000 items); a larger one fails the source instead of exhausting memory",
    ),
];

const REST: [KeyDoc; 18] = [
    key(
        "budget",
        "share",
        "0.5",
        "the share of the token's credits per minute `run` may use; the rest is left to other users of the token",
    ),
    key(
        "budget",
        "backfill_share",
        "0.25",
        "the share a `backfill` may use beside `run`",
    ),
    key(
        "budget",
        "credits_per_minute",
        "100000",
        "Miro's documented budget; X-RateLimit-Limit overrides it",
    ),
    key(
        "store",
        "path",
        "\"mirotrail.db\"",
        "one SQLite file, relative to this file's folder",
    ),
    key(
        "store",
        "retention",
        "\"400d\"",
        "rows and alerts older than this are deleted once every sink has them",
    ),
    example(
        "sinks.archive",
        "type",
        "\"file\"",
        "a destination: \"file\" (rotating NDJSON), \"stdout\", \"azure_logs_ingestion\" (Sentinel), \"splunk_hec\" (Splunk HTTP Event Collector), \"elasticsearch\" (Elasticsearch or OpenSearch) or \"s3\" (an S3 bucket: AWS, MinIO, R2); their keys in README.md",
    ),
    example(
        "sinks.archive",
        "path",
        "\"archive\"",
        "the folder of a file sink",
    ),
    example(
        "sinks.archive",
        "max_file_bytes",
        "104857600",
        "a file sink rotates at this size (default 100 MiB)",
    ),
    example(
        "sinks.archive",
        "format",
        "\"json\"",
        "file and stdout sinks: \"json\" (table rows, the default) or \"ocsf\" (OCSF 1.1.0 events for Security Lake and other OCSF tools, in <table>.ocsf.ndjson; docs/ocsf.md)",
    ),
    example(
        "sinks.archive",
        "batch_rows",
        "5000",
        "rows read from the store per delivery batch (default 5000)",
    ),
    example(
        "sinks.archive",
        "start",
        "\"beginning\"",
        "a new sink receives the whole store (\"beginning\", the default) or only rows stored from its first start on (\"now\")",
    ),
    example(
        "service",
        "listen",
        "\"127.0.0.1:9464\"",
        "with a [service] section, `run` serves /metrics, /healthz and /readyz here (the default); \"\" serves nothing",
    ),
    example(
        "service",
        "log_format",
        "\"text\"",
        "\"text\" (the default) or \"json\" on standard error; --log-format wins",
    ),
    key(
        "detect",
        "enabled",
        "true",
        "`run` evaluates the rule pack on new rows and stores alerts; cheap: a batch of new rows updates per-group counts (kept for two days of windows), it does not re-read the rules' windows",
    ),
    key(
        "detect",
        "disabled",
        "[]",
        "rules to leave out, by name or id (`mirotrail rules list`)",
    ),
    example(
        RULE_SECTION,
        "events",
        "[\"board_exported\", \"board_downloaded\"]",
        "replaces the rule's event names (`mirotrail rules coverage` shows what your store has)",
    ),
    example(
        RULE_SECTION,
        "threshold",
        "10",
        "matches per group and window that raise an alert (each rule documents its default)",
    ),
    example(
        RULE_SECTION,
        "window",
        "\"1h\"",
        "the rule's window, from \"1m\" to \"14d\"",
    ),
];

/// `[[orgs]]`: several organisations instead of `[miro]` (the other `[miro]` keys work in
/// an entry too; README, "Several organisations").
const ORGS: [KeyDoc; 3] = [
    example(
        "orgs",
        "name",
        "\"emea\"",
        "several organisations: one [[orgs]] entry each instead of [miro]; a short label for status, /metrics and alerts",
    ),
    example(
        "orgs",
        "org_id",
        "\"3074457345821141000\"",
        "the entry's organization id (required)",
    ),
    example(
        "orgs",
        "token_env",
        "\"MIRO_TOKEN_EMEA\"",
        "the entry's own token (each [miro] key works here); [orgs.sources.*] and [orgs.budget] change the top-level sections for this organisation",
    ),
];

/// The example section of a per-rule override (any rule name works the same way).
const RULE_SECTION: &str = "detect.rules.mass-board-export";

/// Every key, in file order.
pub fn all() -> Vec<KeyDoc> {
    MIRO.iter()
        .chain(AUDIT.iter())
        .chain(CONTENT.iter())
        .chain(AI.iter())
        .chain(REST.iter())
        .chain(ORGS.iter())
        .copied()
        .collect()
}

/// The starter config `mirotrail init` writes: every key with its default (commented
/// out) and why. It loads as it is, with the defaults.
pub fn starter_config() -> String {
    let mut out = String::from(
        "# mirotrail configuration, written by `mirotrail init`.\n\
         # Every key is shown with its default, commented out: uncomment a line to change it.\n\
         # Durations take units (\"30s\", \"15m\", \"24h\", \"90d\"); relative paths are relative\n\
         # to this file's folder. No secret goes in this file: the Miro token is read from the\n\
         # environment variable named by token_env (export MIRO_TOKEN=...) or from token_file.\n\
         # Then: `mirotrail check`, `mirotrail run --once`, `mirotrail run`.\n",
    );
    let mut section = "";
    for k in all() {
        if k.section != section {
            section = k.section;
            out.push('\n');
            match section {
                "sinks.archive" => out.push_str(
                    "# Sinks: where stored rows are delivered (none: rows stay in the store).\n\
                     # A new sink receives every row already stored unless it says start = \"now\".\n\
                     # [sinks.archive]\n",
                ),
                "service" => out.push_str(
                    "# With a [service] section, `run` serves /metrics, /healthz and /readyz.\n\
                     # [service]\n",
                ),
                RULE_SECTION => out.push_str(
                    "# Per-rule overrides, [detect.rules.NAME] (names: `mirotrail rules list`).\n\
                     # [detect.rules.mass-board-export]\n",
                ),
                "orgs" => out.push_str(
                    "# Several Miro organisations: delete [miro] and write one [[orgs]] entry each.\n\
                     # [[orgs]]\n",
                ),
                _ => out.push_str(&format!("[{section}]\n")),
            }
        }
        let value = k.default.or(k.example).unwrap_or("\"\"");
        out.push_str(&format!("# {} = {value}\n#   {}\n", k.key, k.why));
    }
    out
}

/// The CONFIGURATION section of the manual page (roff).
pub fn man_section() -> String {
    let mut out = String::from(
        ".SH CONFIGURATION\n\
         The configuration file is TOML: \\fB--config\\fR, else \\fBMIROTRAIL_CONFIG\\fR, else \
         \\fI./mirotrail.toml\\fR. \\fBmirotrail init\\fR writes one with every key. \
         Durations take units (30s, 15m, 24h, 90d); relative paths are relative to the \
         file's folder; an unknown key is an error naming the key and the file. Secrets \
         never go in the file: the Miro token comes from the variable named by \
         \\fBmiro.token_env\\fR (MIRO_TOKEN) or from \\fBmiro.token_file\\fR.\n",
    );
    let mut section = "";
    for k in all() {
        if k.section != section {
            section = k.section;
            let title = if section == "sinks.archive" {
                "[sinks.NAME]"
            } else if section == "orgs" {
                "[[orgs]]"
            } else if section == RULE_SECTION {
                "[detect.rules.NAME]"
            } else {
                section
            };
            out.push_str(&format!(
                ".SS {}\n",
                if title.starts_with('[') {
                    title.to_string()
                } else {
                    format!("[{title}]")
                }
            ));
        }
        let value = match (k.default, k.example) {
            (Some(d), _) => format!("default {d}"),
            (None, Some(e)) => format!("e.g. {e}"),
            (None, None) => String::new(),
        };
        out.push_str(&format!(
            ".TP\n\\fB{}\\fR ({})\n{}\n",
            k.key,
            roff_escape(&value),
            roff_escape(k.why)
        ));
    }
    out
}

/// Escapes text for a roff line: backslashes, and a leading dot or quote.
fn roff_escape(text: &str) -> String {
    let text = text.replace('\\', "\\e");
    if text.starts_with('.') || text.starts_with('\'') {
        format!("\\&{text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The starter config with every default uncommented.
    fn uncommented() -> String {
        let mut out = String::new();
        let mut section = String::new();
        for line in starter_config().lines() {
            let Some(rest) = line.strip_prefix("# ") else {
                if let Some(s) = line.strip_prefix('[') {
                    section = s.trim_end_matches(']').to_string();
                }
                out.push_str(line);
                out.push('\n');
                continue;
            };
            let uncomment = all().iter().any(|k| {
                k.section == section
                    && k.default
                        .is_some_and(|d| rest == format!("{} = {d}", k.key))
            });
            if uncomment {
                out.push_str(rest);
                out.push('\n');
            }
        }
        out
    }

    #[test]
    fn the_starter_config_loads_and_its_defaults_are_the_real_ones() {
        let path = Path::new("/etc/mirotrail/mirotrail.toml");
        let starter = crate::config::Config::from_toml(&starter_config(), path).unwrap();
        let empty = crate::config::Config::from_toml("", path).unwrap();
        assert_eq!(format!("{starter:?}"), format!("{empty:?}"));
        let text = uncommented();
        assert!(
            text.contains("page_size = 1000") && text.contains("share = 0.5"),
            "{text}"
        );
        let all_defaults = crate::config::Config::from_toml(&text, path).unwrap();
        assert_eq!(format!("{all_defaults:?}"), format!("{empty:?}"), "{text}");
    }

    #[test]
    fn every_key_is_documented_in_the_readme() {
        let readme = include_str!("../../README.md");
        for k in all() {
            let section = k
                .section
                .replace("sinks.archive", "sinks.NAME")
                .replace(RULE_SECTION, "detect.rules.NAME");
            let generic = section
                .replace("sources.audit_logs", "sources.*")
                .replace("sources.content_logs", "sources.*")
                .replace("sources.ai_interaction_logs", "sources.*");
            assert!(
                readme.contains(&format!("`{section}.{}`", k.key))
                    || readme.contains(&format!("`{generic}.{}`", k.key))
                    || (section == "sinks.NAME" && readme.contains(&format!("`{}`", k.key))),
                "{}.{} is not in README.md",
                k.section,
                k.key
            );
        }
    }
}
