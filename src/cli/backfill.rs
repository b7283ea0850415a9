//! `mirotrail backfill`: history into the store, slice by slice, with a progress bar per
//! source on a terminal (progress log lines otherwise).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use clap::{Args, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{ConfigArgs, Failure, load_config};
use crate::collect::backfill::{
    Backfill, BackfillOptions, BackfillSpan, SourceProgress, retention,
};
use crate::config::{SourceKind, parse_duration};
use crate::miro::{CreditBudget, MiroClient};
use crate::store::Store;
use crate::timefmt::UnixMs;

#[derive(Debug, Args)]
pub(crate) struct BackfillArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Where history starts: a duration back from now (`90d`, `36h`) or an RFC 3339 time.
    #[arg(long, value_name = "T")]
    since: String,
    /// Where it ends: a duration back from now or an RFC 3339 time (default: now minus the
    /// source's `settle_lag`).
    #[arg(long, value_name = "T")]
    until: Option<String>,
    /// Only this source (default: every enabled source).
    #[arg(long, value_enum)]
    source: Option<SourceArg>,
    /// Slices read at once (all sources together), within the backfill's credit share.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
    /// Length of one slice (the unit of progress and of resumption).
    #[arg(long, default_value = "1d", value_name = "DURATION")]
    slice: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SourceArg {
    #[value(name = "audit_logs")]
    AuditLogs,
    #[value(name = "content_logs")]
    ContentLogs,
}

impl From<SourceArg> for SourceKind {
    fn from(s: SourceArg) -> Self {
        match s {
            SourceArg::AuditLogs => SourceKind::AuditLogs,
            SourceArg::ContentLogs => SourceKind::ContentLogs,
        }
    }
}

/// A duration back from `now`, or an RFC 3339 time.
fn parse_time(flag: &str, text: &str, now: UnixMs) -> Result<UnixMs, Failure> {
    if let Some(t) = UnixMs::parse(text) {
        return Ok(t);
    }
    parse_duration(text).map(|d| now.minus(d)).map_err(|_| {
        Failure::usage(anyhow!(
            "--{flag} `{text}` is neither a duration back from now (like \"90d\" or \"36h\") \
             nor an RFC 3339 time (like \"2024-05-01T00:00:00Z\")"
        ))
    })
}

pub(crate) async fn run(args: BackfillArgs) -> Result<(), Failure> {
    let config = load_config(&args.config)?;
    let now = UnixMs::now();
    let since = parse_time("since", &args.since, now)?;
    let slice = parse_duration(&args.slice)
        .ok()
        .filter(|d| *d >= Duration::from_secs(60))
        .ok_or_else(|| {
            Failure::usage(anyhow!(
                "--slice `{}` must be a duration of at least a minute, like \"6h\" or \"1d\"",
                args.slice
            ))
        })?;
    let sources: Vec<_> = match args.source {
        Some(s) => vec![config.source(s.into()).clone()],
        None => config.enabled_sources().cloned().collect(),
    };
    if sources
        .iter()
        .any(|s| s.kind == SourceKind::ContentLogs && config.miro.org_id.is_none())
    {
        return Err(Failure::usage(anyhow!(
            "content logs need `miro.org_id` in {}",
            config.path.display()
        )));
    }
    let mut spans = Vec::new();
    for source in sources {
        let until = match &args.until {
            Some(t) => parse_time("until", t, now)?,
            None => now.minus(source.settle_lag),
        };
        if until <= since {
            return Err(Failure::usage(anyhow!(
                "{}: --until {until} is not after --since {since}",
                source.kind
            )));
        }
        let oldest = now.minus(retention(source.kind));
        if since < oldest {
            tracing::warn!(
                source = %source.kind,
                since = %since,
                kept_since = %oldest,
                "the Miro API keeps about {} days of {}; older history is asked for but will \
                 likely come back empty (export it from the Miro UI instead)",
                retention(source.kind).as_secs() / 86_400,
                source.kind
            );
        }
        spans.push(BackfillSpan {
            source,
            since,
            until,
        });
    }
    if config.budget.share + config.budget.backfill_share > 1.0 {
        tracing::warn!(
            share = config.budget.share,
            backfill_share = config.budget.backfill_share,
            "budget.share + budget.backfill_share is above 1: `run` and `backfill` together may \
             exceed the token's budget and meet 429s (they slow down, nothing is lost)"
        );
    }

    let token = config.load_miro_token()?;
    let store = Arc::new(Store::open_backfill(&config.store_path).map_err(Failure::runtime)?);
    let budget = Arc::new(CreditBudget::new(
        config.budget.credits_per_minute,
        config.budget.backfill_share,
    ));
    let client = MiroClient::new(&config.miro, token, budget).map_err(Failure::runtime)?;
    let progress: BTreeMap<SourceKind, Arc<SourceProgress>> = spans
        .iter()
        .map(|s| (s.source.kind, Arc::new(SourceProgress::default())))
        .collect();
    let shutdown = super::shutdown_on_signals();
    let display = Display::start(progress.clone());
    let started = Instant::now();
    let result = Backfill {
        client,
        store,
        spans,
        options: BackfillOptions {
            slice,
            concurrency: args.concurrency as usize,
        },
        progress,
    }
    .run(shutdown.clone())
    .await;
    display.finish().await;
    let report = result.map_err(Failure::runtime)?;
    let secs = started.elapsed().as_secs_f64();
    // A stop by signal leaves slices unfinished: never report it as finished.
    let interrupted = shutdown
        .is_set()
        .then(|| super::stop_signal().unwrap_or(super::Signal::Interrupt));
    let outcome = if interrupted.is_some() {
        "backfill interrupted"
    } else {
        "backfill finished"
    };
    for (kind, r) in &report.sources {
        tracing::info!(
            source = %kind,
            new_events = r.collect.inserted,
            duplicates = r.collect.duplicates,
            requests = r.collect.requests,
            credits = r.collect.requests * kind.credits_per_call(),
            slices_done = r.slices_done,
            slices = r.slices_total,
            slices_done_before = r.slices_done_before,
            secs,
            "{outcome}"
        );
    }
    if let Some(signal) = interrupted {
        let (done, total) = report
            .sources
            .values()
            .fold((0, 0), |(d, t), r| (d + r.slices_done, t + r.slices_total));
        return Err(Failure::interrupted(
            signal,
            anyhow!(
                "backfill interrupted by {}: {done} of {total} slices done; run the same \
                 command again to resume where it stopped (finished slices are not read again)",
                signal.name()
            ),
        ));
    }
    if report.ok() {
        Ok(())
    } else {
        let failed: Vec<String> = report
            .sources
            .values()
            .flat_map(|r| r.failed.iter().cloned())
            .collect();
        Err(Failure::runtime(anyhow!(
            "{} slice(s) left unfinished (run the same command again to resume them):\n{}",
            failed.len(),
            failed.join("\n")
        )))
    }
}

/// The progress display: bars on a terminal, log lines otherwise.
struct Display {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// What the display shows of one source at one moment.
struct Snapshot {
    fraction: f64,
    covered: Duration,
    events: u64,
    rate: f64,
    credits: u64,
    eta: Option<Duration>,
}

fn snapshot(kind: SourceKind, p: &SourceProgress, elapsed: Duration) -> Snapshot {
    let total = p.total_ms.load(Ordering::Relaxed).max(1);
    let covered = p.covered_ms.load(Ordering::Relaxed).clamp(0, total);
    let this_run = covered - p.covered_at_start_ms.load(Ordering::Relaxed);
    let events = p.inserted.load(Ordering::Relaxed) + p.duplicates.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64().max(1e-3);
    let eta = (this_run > 0)
        .then(|| Duration::from_secs_f64((total - covered) as f64 * secs / this_run as f64));
    Snapshot {
        fraction: covered as f64 / total as f64,
        covered: Duration::from_millis(covered as u64),
        events,
        rate: events as f64 / secs,
        credits: p.requests.load(Ordering::Relaxed) * kind.credits_per_call(),
        eta,
    }
}

fn human_span(d: Duration) -> String {
    let h = d.as_secs() / 3600;
    if h >= 48 {
        format!("{}d{}h", h / 24, h % 24)
    } else {
        format!("{h}h{}m", d.as_secs() / 60 % 60)
    }
}

impl Display {
    fn start(progress: BTreeMap<SourceKind, Arc<SourceProgress>>) -> Display {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let terminal = std::io::stderr().is_terminal();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let multi = MultiProgress::with_draw_target(if terminal {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            });
            let style = ProgressStyle::with_template("{prefix:>12} [{bar:28}] {percent:>3}% {msg}")
                .expect("valid progress template")
                .progress_chars("=> ");
            let bars: Vec<(SourceKind, Arc<SourceProgress>, ProgressBar)> = progress
                .into_iter()
                .map(|(kind, p)| {
                    let bar = multi.add(ProgressBar::new(1000));
                    bar.set_style(style.clone());
                    bar.set_prefix(kind.name());
                    (kind, p, bar)
                })
                .collect();
            let tick = if terminal {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(10)
            };
            loop {
                let finished = tokio::select! {
                    _ = tokio::time::sleep(tick) => false,
                    _ = stopped.changed() => true,
                };
                for (kind, p, bar) in &bars {
                    let s = snapshot(*kind, p, started.elapsed());
                    let eta = s
                        .eta
                        .map_or_else(|| "?".to_string(), |d| format!("{}s", d.as_secs()));
                    if terminal {
                        bar.set_position((s.fraction * 1000.0) as u64);
                        bar.set_message(format!(
                            "{} covered, {} events, {:.0}/s, {} credits, ETA {eta}",
                            human_span(s.covered),
                            s.events,
                            s.rate,
                            s.credits
                        ));
                    } else {
                        tracing::info!(
                            source = %kind,
                            percent = format!("{:.1}", s.fraction * 100.0),
                            covered = %human_span(s.covered),
                            events = s.events,
                            events_per_sec = s.rate.round() as u64,
                            credits = s.credits,
                            eta_secs = s.eta.map(|d| d.as_secs()),
                            "backfill progress"
                        );
                    }
                }
                if finished {
                    // Where they stand: a bar reaches 100% only if its span was read.
                    for (_, _, bar) in &bars {
                        bar.abandon();
                    }
                    return;
                }
            }
        });
        Display { stop, task }
    }

    async fn finish(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
