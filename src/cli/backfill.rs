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
use crate::store::StoreHandle;
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
    /// The organisation to backfill, by its `[[orgs]]` name (needed when the config has
    /// several; each has its own token and credit budget).
    #[arg(long, value_name = "NAME")]
    org: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[allow(
    clippy::enum_variant_names,
    reason = "the sources' own names, as `SourceKind` has them"
)]
enum SourceArg {
    #[value(name = "audit_logs")]
    AuditLogs,
    #[value(name = "content_logs")]
    ContentLogs,
    #[value(name = "ai_interaction_logs")]
    AiInteractionLogs,
}

impl From<SourceArg> for SourceKind {
    fn from(s: SourceArg) -> Self {
        match s {
            SourceArg::AuditLogs => SourceKind::AuditLogs,
            SourceArg::ContentLogs => SourceKind::ContentLogs,
            SourceArg::AiInteractionLogs => SourceKind::AiInteractionLogs,
        }
    }
}

/// A duration back from `now`, or an RFC 3339 time.
pub(crate) fn parse_time(flag: &str, text: &str, now: UnixMs) -> Result<UnixMs, Failure> {
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
    let org = match (&args.org, config.orgs.as_slice()) {
        (None, [only]) => only,
        (None, _) => {
            let names: Vec<&str> = config.orgs.iter().map(|o| o.name.as_str()).collect();
            return Err(Failure::usage(anyhow!(
                "{} names several organisations; say which to backfill with --org NAME ({})",
                config.path.display(),
                names.join(", ")
            )));
        }
        (Some(name), orgs) => orgs.iter().find(|o| &o.name == name).ok_or_else(|| {
            let names: Vec<&str> = config.orgs.iter().map(|o| o.name.as_str()).collect();
            Failure::usage(anyhow!(
                "--org `{name}` is not an organisation of {} ({})",
                config.path.display(),
                names.join(", ")
            ))
        })?,
    };
    let sources: Vec<_> = match args.source {
        Some(s) => vec![org.source(s.into()).clone()],
        None => org.enabled_sources().cloned().collect(),
    };
    if let Some(s) = sources
        .iter()
        .find(|s| s.kind.needs_org_id() && org.miro.org_id.is_none())
    {
        return Err(Failure::usage(anyhow!(
            "{} need `miro.org_id` in {}",
            s.kind,
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
        if let Some(kept) = retention(source.kind)
            && since < now.minus(kept)
        {
            tracing::warn!(
                source = %source.kind,
                since = %since,
                kept_since = %now.minus(kept),
                "the Miro API keeps about {} days of {}; older history is asked for but will \
                 likely come back empty (export it from the Miro UI instead)",
                kept.as_secs() / 86_400,
                source.kind
            );
        }
        spans.push(BackfillSpan {
            source,
            since,
            until,
        });
    }
    if org.budget.share + org.budget.backfill_share > 1.0 {
        tracing::warn!(
            share = org.budget.share,
            backfill_share = org.budget.backfill_share,
            "budget.share + budget.backfill_share is above 1: `run` and `backfill` together may \
             exceed the token's budget and meet 429s (they slow down, nothing is lost)"
        );
    }

    let token = org.token_provider()?;
    let store = StoreHandle::open_backfill(&config.store_path)
        .await
        .map_err(Failure::runtime)?;
    let identities: Vec<_> = config.orgs.iter().map(|o| o.identity()).collect();
    let named = config.named_orgs;
    let keys = store
        .run(move |s| s.register_orgs(&identities, named))
        .await
        .map_err(Failure::runtime)?;
    let org_key = config
        .orgs
        .iter()
        .position(|o| o.name == org.name)
        .map_or(crate::store::OrgKey::DEFAULT, |i| keys[i]);
    // One budget per token: the backfill's share of this organisation's credits.
    let budget = Arc::new(CreditBudget::new(
        org.budget.credits_per_minute,
        org.budget.backfill_share,
    ));
    let client = MiroClient::new(&org.miro, token, budget.clone()).map_err(Failure::runtime)?;
    let progress: BTreeMap<SourceKind, Arc<SourceProgress>> = spans
        .iter()
        .map(|s| (s.source.kind, Arc::new(SourceProgress::default())))
        .collect();
    let shutdown = super::shutdown_on_signals();
    let display = Display::start(progress.clone(), budget);
    let started = Instant::now();
    let result = Backfill {
        org: org_key,
        client,
        store,
        spans,
        options: BackfillOptions {
            slice,
            concurrency: args.concurrency as usize,
        },
        progress: progress.clone(),
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
    let terminal = std::io::stderr().is_terminal();
    if terminal {
        // The bars stay on screen; the summary starts below them.
        eprintln!();
    }
    for (kind, r) in &report.sources {
        let (covered, span) = progress.get(kind).map_or((0, 0), |p| {
            (
                p.covered_ms.load(Ordering::Relaxed),
                p.total_ms.load(Ordering::Relaxed),
            )
        });
        let (covered, span) = (
            Duration::from_millis(covered.max(0).unsigned_abs()),
            Duration::from_millis(span.max(0).unsigned_abs()),
        );
        let credits = r.collect.requests * kind.credits_per_call();
        if terminal {
            // The log level on a terminal is `warn` (the bars say the rest): the summary
            // is printed, not logged.
            eprintln!(
                "{kind}: {outcome}: {} of {} covered, {} new events, {} already stored, \
                 {} requests ({credits} credits), {} of {} slices done, in {}",
                human_span(covered),
                human_span(span),
                r.collect.inserted,
                r.collect.duplicates,
                r.collect.requests,
                r.slices_done,
                r.slices_total,
                super::status::human(started.elapsed()),
            );
        } else {
            tracing::info!(
                source = %kind,
                covered = %human_span(covered),
                span = %human_span(span),
                new_events = r.collect.inserted,
                already_stored = r.collect.duplicates,
                requests = r.collect.requests,
                credits,
                slices_done = r.slices_done,
                slices = r.slices_total,
                slices_done_before = r.slices_done_before,
                secs,
                "{outcome}"
            );
        }
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
    new_events: u64,
    already_stored: u64,
    /// Events read per second (new or not) over the rate window; unknown in the first
    /// seconds.
    rate: Option<f64>,
    credits: u64,
    eta: Option<Duration>,
}

/// The ETA and rate follow the last minute, the period of Miro's credit budget: an
/// average since the start would count the first minute's burst of credits and promise
/// far too early an end once the budget paces the calls.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// No ETA before this much of the run has been seen.
const MIN_RATE_SPAN: Duration = Duration::from_secs(5);

/// Recent `(when, covered ms, events read)` samples of one source.
#[derive(Default)]
struct RateWindow {
    samples: std::collections::VecDeque<(Instant, i64, u64)>,
}

impl RateWindow {
    /// Adds a sample; returns `(covered ms per second, events per second)` over the
    /// window, once it spans `MIN_RATE_SPAN`.
    fn push(&mut self, now: Instant, covered: i64, events: u64) -> Option<(f64, f64)> {
        self.samples.push_back((now, covered, events));
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(t, _, _)| now.duration_since(*t) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let &(t0, c0, e0) = self.samples.front()?;
        let span = now.duration_since(t0);
        (span >= MIN_RATE_SPAN).then(|| {
            let secs = span.as_secs_f64();
            (
                (covered - c0) as f64 / secs,
                events.saturating_sub(e0) as f64 / secs,
            )
        })
    }
}

fn snapshot(
    kind: SourceKind,
    p: &SourceProgress,
    window: &mut RateWindow,
    now: Instant,
) -> Snapshot {
    let total = p.total_ms.load(Ordering::Relaxed).max(1);
    let covered = p.covered_ms.load(Ordering::Relaxed).clamp(0, total);
    let new_events = p.inserted.load(Ordering::Relaxed);
    let already_stored = p.duplicates.load(Ordering::Relaxed);
    let rates = window.push(now, covered, new_events + already_stored);
    let eta = match rates {
        _ if covered >= total => Some(Duration::ZERO),
        Some((ms_per_sec, _)) if ms_per_sec > 0.0 => Some(Duration::from_secs_f64(
            ((total - covered) as f64 / ms_per_sec).min(1e9),
        )),
        _ => None,
    };
    Snapshot {
        fraction: covered as f64 / total as f64,
        covered: Duration::from_millis(covered.max(0).unsigned_abs()),
        new_events,
        already_stored,
        rate: rates.map(|(_, events)| events),
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
    fn start(
        progress: BTreeMap<SourceKind, Arc<SourceProgress>>,
        budget: Arc<CreditBudget>,
    ) -> Display {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let terminal = std::io::stderr().is_terminal();
        let task = tokio::spawn(async move {
            let multi = MultiProgress::with_draw_target(if terminal {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            });
            let style = ProgressStyle::with_template("{prefix:>12} [{bar:28}] {percent:>3}% {msg}")
                .expect("valid progress template")
                .progress_chars("=> ");
            let mut bars: Vec<(SourceKind, Arc<SourceProgress>, ProgressBar, RateWindow)> =
                progress
                    .into_iter()
                    .map(|(kind, p)| {
                        let bar = multi.add(ProgressBar::new(1000));
                        bar.set_style(style.clone());
                        bar.set_prefix(kind.name());
                        (kind, p, bar, RateWindow::default())
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
                let now = Instant::now();
                let waiting = budget.waiting_for();
                for (kind, p, bar, window) in &mut bars {
                    let s = snapshot(*kind, p, window, now);
                    let eta = s.eta.map_or_else(|| "?".to_string(), super::status::human);
                    let wait_note = waiting
                        .filter(|_| !finished)
                        .map(|d| {
                            format!(
                                "; waiting for Miro's credit budget (resets in {} s)",
                                d.as_secs().max(1)
                            )
                        })
                        .unwrap_or_default();
                    if terminal {
                        #[expect(
                            clippy::cast_possible_truncation,
                            clippy::cast_sign_loss,
                            reason = "a fraction in [0, 1] times 1000"
                        )]
                        bar.set_position((s.fraction * 1000.0) as u64);
                        bar.set_message(format!(
                            "{} covered, {} new, {} already stored, {} events/s, {} credits, ETA {eta}{wait_note}",
                            human_span(s.covered),
                            s.new_events,
                            s.already_stored,
                            s.rate.map_or("-".to_string(), |r| format!("{r:.0}")),
                            s.credits
                        ));
                    } else {
                        #[expect(
                            clippy::cast_possible_truncation,
                            clippy::cast_sign_loss,
                            reason = "a rate in events per second: finite and non-negative"
                        )]
                        let events_per_sec = s.rate.map(|r| r.round() as u64);
                        tracing::info!(
                            source = %kind,
                            percent = format!("{:.1}", s.fraction * 100.0),
                            covered = %human_span(s.covered),
                            new_events = s.new_events,
                            already_stored = s.already_stored,
                            events_per_sec,
                            credits = s.credits,
                            eta_secs = s.eta.map(|d| d.as_secs()),
                            waiting_for_credits_secs = waiting.map(|d| d.as_secs().max(1)),
                            "backfill progress{wait_note}"
                        );
                    }
                }
                if finished {
                    // Where they stand: a bar reaches 100% only if its span was read.
                    for (_, _, bar, _) in &bars {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The first minute's burst of credits covered half the span in 10 s; since then the
    /// budget paces the calls to 1 s of history per second. The ETA follows the pace
    /// (380 s left), not the average since the start (which said 80 s).
    #[test]
    fn the_eta_follows_the_recent_pace_not_the_first_burst() {
        let p = SourceProgress::default();
        p.total_ms.store(1_000_000, Ordering::Relaxed);
        let mut window = RateWindow::default();
        let t0 = Instant::now();
        let mut last = None;
        for second in 0..=130u64 {
            let covered = if second <= 10 {
                50_000 * i64::try_from(second).unwrap()
            } else {
                500_000 + 1_000 * (i64::try_from(second).unwrap() - 10)
            };
            p.covered_ms.store(covered, Ordering::Relaxed);
            p.inserted.store(second * 3, Ordering::Relaxed);
            last = Some(snapshot(
                SourceKind::AuditLogs,
                &p,
                &mut window,
                t0 + Duration::from_secs(second),
            ));
        }
        let s = last.unwrap();
        let eta = s.eta.unwrap().as_secs();
        assert!((375..=385).contains(&eta), "ETA {eta} s");
        let rate = s.rate.expect("known after the minimum span");
        assert!((rate - 3.0).abs() < 0.01, "{rate}");
    }

    #[test]
    fn no_eta_before_the_pace_is_known_and_zero_when_done() {
        let p = SourceProgress::default();
        p.total_ms.store(1_000, Ordering::Relaxed);
        let mut window = RateWindow::default();
        let t0 = Instant::now();
        assert!(
            snapshot(SourceKind::AuditLogs, &p, &mut window, t0)
                .eta
                .is_none()
        );
        p.covered_ms.store(1_000, Ordering::Relaxed);
        let s = snapshot(SourceKind::AuditLogs, &p, &mut window, t0);
        assert_eq!(s.eta, Some(Duration::ZERO));
    }
}
