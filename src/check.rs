//! `mirotrail check`: asks Miro and each destination, without collecting or writing a
//! row, whether the configuration can work, and says what to fix.
//!
//! Every line is one check with a verdict: `ok`, `problem` (with the remedy, in the same
//! words `run` uses when it meets the same failure: `miro::status` and the Sentinel sink's
//! explanations), or `not verified` (the check could not decide, and says why). Nothing
//! here writes to Miro, Azure, the store or a sink's files.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, MiroConfig, OrgConfig, SinkKindConfig, SourceKind};
use crate::miro::status::{forbidden_advice, scope_of};
use crate::miro::{CreditBudget, FetchError, MiroClient, PageQuery, TokenInfo};
use crate::sink::sentinel::{ProbeOutcome, SentinelSink};
use crate::sink::splunk::{CheckOutcome, SplunkConfig, SplunkSink};
use crate::timefmt::UnixMs;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Problem,
    NotVerified,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Problem => "problem",
            Verdict::NotVerified => "not verified",
        }
    }
}

/// One printed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckLine {
    pub verdict: Verdict,
    /// What was checked, e.g. `miro token`, `sink sentinel audit_logs`.
    pub subject: String,
    /// What was verified, or what is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for CheckLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<13}{}: {}",
            self.verdict.label(),
            self.subject,
            self.message
        )
    }
}

/// All lines, in the order they were checked.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub lines: Vec<CheckLine>,
}

impl CheckReport {
    fn push(&mut self, verdict: Verdict, subject: impl Into<String>, message: impl Into<String>) {
        self.lines.push(CheckLine {
            verdict,
            subject: subject.into(),
            message: message.into(),
        });
    }

    pub fn count(&self, verdict: Verdict) -> usize {
        self.lines.iter().filter(|l| l.verdict == verdict).count()
    }
}

/// Runs every check of a validated configuration.
pub async fn run_checks(config: &Config) -> CheckReport {
    let mut report = CheckReport::default();
    let sources: Vec<SourceKind> = config.enabled_kinds();
    let names: Vec<&str> = sources.iter().map(|s| s.name()).collect();
    let sinks: Vec<&str> = config.sinks.iter().map(|s| s.name.as_str()).collect();
    report.push(
        Verdict::Ok,
        "config",
        format!(
            "{} is valid; sources: {}; sinks: {}",
            config.path.display(),
            names.join(", "),
            if sinks.is_empty() {
                "none (rows stay in the store)".to_string()
            } else {
                sinks.join(", ")
            }
        ),
    );
    // Each organisation: its token, scopes and org id.
    for (n, org) in config.orgs.iter().enumerate() {
        let (section, label) = if config.named_orgs {
            (format!("orgs[{n}]"), format!("miro {}", org.name))
        } else {
            ("miro".to_string(), "miro".to_string())
        };
        let org_sources: Vec<SourceKind> = org.enabled_sources().map(|s| s.kind).collect();
        check_miro(org, &section, &label, &org_sources, &mut report).await;
    }
    check_dir(
        &mut report,
        "store",
        config
            .store_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
        &format!("{}", config.store_path.display()),
    );
    for sink in &config.sinks {
        let subject = format!("sink {}", sink.name);
        match &sink.kind {
            SinkKindConfig::Stdout { .. } => report.push(
                Verdict::Ok,
                subject,
                "writes NDJSON to standard output; nothing to check",
            ),
            SinkKindConfig::File { dir, .. } => {
                check_dir(&mut report, &subject, dir, &format!("{}", dir.display()))
            }
            SinkKindConfig::Sentinel(c) => {
                // A source the sink leaves out (no optional DCR) is said, not probed.
                let mut sent = Vec::new();
                for &source in &sources {
                    match sink.skips(source) {
                        Some(why) => report.push(Verdict::Ok, format!("{subject} {source}"), why),
                        None => sent.push(source),
                    }
                }
                check_sentinel(&subject, (**c).clone(), &sent, &mut report).await
            }
            SinkKindConfig::Splunk(c) => check_splunk(&subject, (**c).clone(), &mut report).await,
            SinkKindConfig::Elastic(c) => check_elastic(&subject, (**c).clone(), &mut report).await,
            SinkKindConfig::S3(c) => check_s3(&subject, (**c).clone(), &mut report).await,
        }
        check_new_sink(config, sink, &mut report).await;
    }
    report
}

/// Says what a sink that has never delivered will receive first: the whole store
/// (`start = "beginning"`, the default) or only new rows (`start = "now"`).
async fn check_new_sink(
    config: &Config,
    sink: &crate::config::SinkConfig,
    report: &mut CheckReport,
) {
    let subject = format!("sink {}", sink.name);
    let (path, name) = (config.store_path.clone(), sink.name.clone());
    let stored = tokio::task::spawn_blocking(move || rows_for_new_sink(&path, &name))
        .await
        .expect("store task panicked");
    let Some(stored) = stored else {
        return;
    };
    let message = match sink.start {
        crate::config::SinkStart::Beginning => format!(
            "new sink: its first run sends it every row already in the store ({stored} now) \
             and then new ones; to send only rows stored from its first run on, set \
             start = \"now\" under [sinks.{}]",
            sink.name
        ),
        crate::config::SinkStart::Now => format!(
            "new sink with start = \"now\": the {stored} row(s) already in the store are not \
             sent to it, only rows stored from its first run on"
        ),
    };
    report.push(Verdict::Ok, subject, message);
}

/// Rows a sink that has never delivered would receive first: `None` when it has an
/// offset already (or the store cannot be read). Blocking: SQLite.
fn rows_for_new_sink(path: &std::path::Path, sink: &str) -> Option<i64> {
    if !path.exists() {
        return Some(0);
    }
    let conn = crate::store::Store::open_read_only(path).ok()?;
    let has_offset: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sink_offsets WHERE sink = ?1",
            [sink],
            |r| r.get(0),
        )
        .unwrap_or(true);
    if has_offset {
        return None;
    }
    Some(
        SourceKind::ALL
            .iter()
            .map(|s| {
                conn.query_row(&format!("SELECT count(*) FROM {}", s.table()), [], |r| {
                    r.get::<_, i64>(0)
                })
                .unwrap_or(0)
            })
            .sum::<i64>(),
    )
}

/// `static`, or `expiring` with the access token's time left and the refresh token's age.
fn describe_token(status: &crate::miro::TokenStatus) -> String {
    use crate::miro::TokenStatus;
    let mins = |d: Duration| format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60);
    match status {
        TokenStatus::Static => "static (does not expire)".to_string(),
        TokenStatus::Expiring {
            access_expires_in,
            refresh_token_age,
        } => format!(
            "expiring: the access token expires in {}; the refresh token is {} old \
             (Miro lets an unused one expire after 60 days; each refresh renews it)",
            access_expires_in.map_or("(not obtained)".to_string(), mins),
            refresh_token_age.map_or("(unknown)".to_string(), |d| {
                if d.as_secs() >= 86_400 {
                    format!("{} days", d.as_secs() / 86_400)
                } else {
                    mins(d)
                }
            }),
        ),
    }
}

async fn check_miro(
    org: &OrgConfig,
    section: &str,
    label: &str,
    sources: &[SourceKind],
    report: &mut CheckReport,
) {
    let token = match org.token_provider() {
        Ok(t) => t,
        Err(e) => {
            report.push(Verdict::Problem, format!("{label} token"), e.to_string());
            for s in sources {
                report.push(
                    Verdict::NotVerified,
                    format!("{label} {s}"),
                    "skipped: there is no token to ask Miro with",
                );
            }
            return;
        }
    };
    // A check should answer within seconds: few retries, short backoff.
    let miro = MiroConfig {
        max_retries: org.miro.max_retries.min(2),
        retry_initial_backoff: org
            .miro
            .retry_initial_backoff
            .min(Duration::from_millis(500)),
        ..org.miro.clone()
    };
    let budget = Arc::new(CreditBudget::new(
        org.budget.credits_per_minute,
        org.budget.share,
    ));
    let client = match MiroClient::new(&miro, token, budget) {
        Ok(c) => c,
        Err(e) => {
            report.push(
                Verdict::Problem,
                format!("{label} token"),
                format!("cannot set up the HTTP client: {e}"),
            );
            return;
        }
    };
    let first = sources.first().copied().unwrap_or(SourceKind::AuditLogs);
    let api = miro.api_base.as_str().trim_end_matches('/');
    match client.token_info(first).await {
        Ok(info) => {
            report.push(
                Verdict::Ok,
                format!("{label} token"),
                format!(
                    "{api} accepted it (GET /v1/oauth-token): scopes {}; team {}; organization {}",
                    if info.scopes.is_empty() {
                        "(none listed)".to_string()
                    } else {
                        info.scopes.join(" ")
                    },
                    info.team
                        .as_ref()
                        .map_or("(not named)".to_string(), |t| t.to_string()),
                    info.organization
                        .as_ref()
                        .map_or("(not named)".to_string(), |o| o.to_string()),
                ),
            );
            check_scopes(&info, sources, label, report);
            check_org(&info, org, section, label, report);
        }
        Err(FetchError::Permanent(p)) => {
            let refused = matches!(
                p,
                crate::miro::status::Permanent::Unauthorized { .. }
                    | crate::miro::status::Permanent::Token { .. }
            );
            report.push(Verdict::Problem, format!("{label} token"), p.to_string());
            if refused {
                for s in sources {
                    report.push(
                        Verdict::NotVerified,
                        format!("{label} {s}"),
                        "skipped: Miro refused the token",
                    );
                }
                return;
            }
        }
        Err(e) => report.push(
            Verdict::Problem,
            format!("{label} token"),
            format!("{e}; check `{section}.api_base` ({api}) and the network"),
        ),
    }
    report.push(
        Verdict::Ok,
        format!("{label} token type"),
        describe_token(&client.token_provider().status().await),
    );
    // Held, never triggered: a dropped trigger would read as a shutdown.
    let (_trigger, mut shutdown) = crate::shutdown::channel();
    for &kind in sources {
        let source = org.source(kind);
        let to = UnixMs::now().minus(source.settle_lag);
        let from = to.minus(Duration::from_secs(60));
        let query = PageQuery {
            source: kind,
            from,
            to,
            cursor: None,
            limit: 1,
        };
        let subject = format!("{label} {kind}");
        match client.fetch_page(&query, &mut shutdown).await {
            Ok((page, _)) => report.push(
                Verdict::Ok,
                subject,
                format!(
                    "a one-minute window ({} .. {}) with limit=1 was answered with {} item(s): collection works",
                    from.to_iso(),
                    to.to_iso(),
                    page.len()
                ),
            ),
            Err(e) => report.push(Verdict::Problem, subject, e.to_string()),
        }
    }
}

fn check_scopes(info: &TokenInfo, sources: &[SourceKind], label: &str, report: &mut CheckReport) {
    let missing: Vec<SourceKind> = sources
        .iter()
        .copied()
        .filter(|s| !info.scopes.iter().any(|have| have == scope_of(*s)))
        .collect();
    if missing.is_empty() {
        let have: Vec<String> = sources
            .iter()
            .map(|s| format!("`{}` ({s})", scope_of(*s)))
            .collect();
        report.push(
            Verdict::Ok,
            format!("{label} scopes"),
            format!("the token has {}", have.join(", ")),
        );
    } else {
        for s in missing {
            report.push(
                Verdict::Problem,
                format!("{label} scopes"),
                format!(
                    "the token lacks `{}`, needed for {s}: {}",
                    scope_of(s),
                    forbidden_advice(s)
                ),
            );
        }
    }
}

fn check_org(
    info: &TokenInfo,
    org: &OrgConfig,
    section: &str,
    label: &str,
    report: &mut CheckReport,
) {
    let config = org;
    // Where the id is set: `[miro]`, or the organisation's `[[orgs]]` entry.
    let under = if section == "miro" {
        "[miro]".to_string()
    } else {
        format!("the `[[orgs]]` entry `{}` ({section})", org.name)
    };
    let content = config.enabled_sources().any(|s| s.kind.needs_org_id());
    match (&info.organization, &org.miro.org_id) {
        (Some(org), Some(configured)) if &org.id == configured => report.push(
            Verdict::Ok,
            format!("{label} organization"),
            format!("`{section}.org_id` matches the token's organization {org}"),
        ),
        (Some(org), Some(configured)) => report.push(
            Verdict::Problem,
            format!("{label} organization"),
            format!(
                "`{section}.org_id` is `{configured}` but the token belongs to organization {org}: \
                 set `org_id = \"{}\"` under {under}",
                org.id
            ),
        ),
        (Some(org), None) => report.push(
            Verdict::Ok,
            format!("{label} organization"),
            format!(
                "the token belongs to organization {org}; to collect content or AI \
                 interaction logs, set `org_id = \"{}\"` under {under}",
                org.id
            ),
        ),
        (None, _) if content => report.push(
            Verdict::NotVerified,
            format!("{label} organization"),
            "the token introspection names no organization, so `{section}.org_id` could not be \
             compared; the requests below tell whether Miro knows it",
        ),
        (None, _) => report.push(
            Verdict::NotVerified,
            format!("{label} organization"),
            "the token introspection names no organization (only needed for content and AI \
             interaction logs)",
        ),
    }
}

/// Checks that `dir` (or its nearest existing ancestor) takes new files, by creating and
/// removing one.
fn check_dir(report: &mut CheckReport, subject: &str, dir: &Path, what: &str) {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    let probe = existing.join(format!(".mirotrail-check-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            let note = if existing == dir {
                format!("{} is writable", dir.display())
            } else {
                format!(
                    "{} will be created (in {}, which is writable)",
                    dir.display(),
                    existing.display()
                )
            };
            report.push(Verdict::Ok, subject, format!("{what}: {note}"));
        }
        Err(e) => report.push(
            Verdict::Problem,
            subject,
            format!(
                "{what}: cannot create files in {}: {e}; give the mirotrail user write access \
                 there or change the path",
                existing.display()
            ),
        ),
    }
}

async fn check_sentinel(
    subject: &str,
    config: crate::sink::sentinel::SentinelConfig,
    sources: &[SourceKind],
    report: &mut CheckReport,
) {
    let endpoint = config.endpoint.clone();
    let sink = match SentinelSink::new(config) {
        Ok(s) => s,
        Err(e) => {
            report.push(Verdict::Problem, format!("{subject} token"), e.to_string());
            return;
        }
    };
    let token_ok = match sink.check_token().await {
        Ok(()) => {
            report.push(
                Verdict::Ok,
                format!("{subject} token"),
                "Entra issued a token for the logs ingestion API",
            );
            true
        }
        Err(message) => {
            report.push(Verdict::Problem, format!("{subject} token"), message);
            false
        }
    };
    for &source in sources {
        let line = format!("{subject} {source}");
        if !token_ok {
            report.push(
                Verdict::NotVerified,
                line,
                "skipped: without a token the DCR cannot be asked",
            );
            continue;
        }
        let target = sink
            .config()
            .target(source)
            .map(|t| format!("DCR {} stream {}", t.dcr_immutable_id, t.stream))
            .unwrap_or_default();
        match sink.probe(source).await {
            Ok(ProbeOutcome::Accepted { status }) => report.push(
                Verdict::Ok,
                line,
                format!(
                    "{endpoint} accepted an empty batch for {target} ({status}): endpoint, \
                     token, DCR, stream and role verified; nothing was written"
                ),
            ),
            Ok(ProbeOutcome::Inconclusive(why)) => report.push(
                Verdict::NotVerified,
                line,
                format!(
                    "token ok; {why} for {target}: DCR reachability and the role are not \
                     verified without writing a row"
                ),
            ),
            Err(message) => report.push(Verdict::Problem, line, message),
        }
    }
}

/// The cluster (`GET /`), then the credential's `create_doc` privilege on the targets
/// (nothing is written).
async fn check_elastic(
    subject: &str,
    config: crate::sink::elasticsearch::ElasticConfig,
    report: &mut CheckReport,
) {
    use crate::sink::elasticsearch::{CheckOutcome, ElasticSink};
    let sink = match ElasticSink::new(config) {
        Ok(s) => s,
        Err(e) => {
            report.push(Verdict::Problem, subject, e.to_string());
            return;
        }
    };
    match sink.check().await {
        Ok(outcomes) => {
            for o in outcomes {
                match o {
                    CheckOutcome::Ok(m) => report.push(Verdict::Ok, subject, m),
                    CheckOutcome::NotVerified(m) => report.push(Verdict::NotVerified, subject, m),
                }
            }
        }
        Err(message) => report.push(Verdict::Problem, subject, message),
    }
}

/// The HEC's health endpoint, then the token through a request without events (nothing
/// is written).
async fn check_splunk(subject: &str, config: SplunkConfig, report: &mut CheckReport) {
    let sink = match SplunkSink::new(config) {
        Ok(s) => s,
        Err(e) => {
            report.push(Verdict::Problem, subject, e.to_string());
            return;
        }
    };
    match sink.check().await {
        Ok(outcomes) => {
            for o in outcomes {
                match o {
                    CheckOutcome::Ok(m) => report.push(Verdict::Ok, subject, m),
                    CheckOutcome::NotVerified(m) => report.push(Verdict::NotVerified, subject, m),
                }
            }
        }
        Err(message) => report.push(Verdict::Problem, subject, message),
    }
}

/// HeadBucket, then a one-key listing under the prefix (nothing is written).
async fn check_s3(subject: &str, config: crate::sink::s3::S3Config, report: &mut CheckReport) {
    let mut sink = match crate::sink::S3Sink::new(config) {
        Ok(s) => s,
        Err(e) => {
            report.push(Verdict::Problem, subject, e.to_string());
            return;
        }
    };
    match sink.check().await {
        Ok(outcomes) => {
            for o in outcomes {
                match o {
                    crate::sink::s3::CheckOutcome::Ok(m) => report.push(Verdict::Ok, subject, m),
                    crate::sink::s3::CheckOutcome::NotVerified(m) => {
                        report.push(Verdict::NotVerified, subject, m)
                    }
                }
            }
        }
        Err(message) => report.push(Verdict::Problem, subject, message),
    }
}
