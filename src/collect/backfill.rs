//! Backfill: history `[since, until)` of a source, fetched as time slices read
//! concurrently with the collector's page loop, into the same store.
//!
//! Invariants:
//! - the rows of a group of pages and its slice's progress after the last of them
//!   (cursor, latest item time, done, counts) are committed in one transaction, so an
//!   interrupted backfill resumes each slice at its stored cursor (fetching again only the
//!   pages of the group it had not committed) and never reads a finished slice again;
//! - a run only adds slices for the parts of the span no earlier slice covers, cut on a
//!   fixed grid, so re-running the same command (whose `now` has moved) adds at most the
//!   new edges;
//! - rows go through the same `INSERT OR IGNORE` tables as live collection: what `run`
//!   already stored is a duplicate, not a second row;
//! - every call goes through the client's credit budget (the backfill's own share).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::reader::{CursorRestarts, PageCommitter, PageStep, WindowRead, read_window};
use super::{CollectError, CollectReport};
use crate::config::{SourceConfig, SourceKind};
use crate::miro::{FetchError, MiroClient};
use crate::shutdown::Shutdown;
use crate::store::{BackfillSlice, OrgKey, PageCommit, StoreError, StoreHandle, StoredRow};
use crate::timefmt::UnixMs;

/// Attempts at one slice (each after the client's own request retries) before it is left
/// for the next run.
const SLICE_ATTEMPTS: u32 = 3;

/// How long the API keeps a source's history (the API reference: audit logs about 90
/// days, content logs 30 days by default; `None`: not documented, AI interaction logs).
pub fn retention(kind: SourceKind) -> Option<Duration> {
    match kind {
        SourceKind::AuditLogs => Some(Duration::from_secs(90 * 86_400)),
        SourceKind::ContentLogs => Some(Duration::from_secs(30 * 86_400)),
        SourceKind::AiInteractionLogs => None,
    }
}

/// One source's span to backfill.
#[derive(Debug, Clone)]
pub struct BackfillSpan {
    pub source: SourceConfig,
    pub since: UnixMs,
    pub until: UnixMs,
}

/// How the span is cut and read.
#[derive(Debug, Clone, Copy)]
pub struct BackfillOptions {
    /// Slice length (and grid): one window per slice.
    pub slice: Duration,
    /// Slices read at once, over all sources.
    pub concurrency: usize,
}

/// Live counters of one source's backfill, for the progress display.
#[derive(Debug, Default)]
pub struct SourceProgress {
    /// Milliseconds of the span planned (done slices included).
    pub total_ms: AtomicI64,
    /// Milliseconds read so far (done slices included).
    pub covered_ms: AtomicI64,
    /// Covered before this run started (to compute this run's rate).
    pub covered_at_start_ms: AtomicI64,
    pub inserted: AtomicU64,
    pub duplicates: AtomicU64,
    pub requests: AtomicU64,
    pub slices_total: AtomicU64,
    pub slices_done: AtomicU64,
}

/// What a backfill did, per source.
#[derive(Debug, Clone, Default)]
pub struct BackfillReport {
    pub sources: BTreeMap<SourceKind, SourceBackfillReport>,
}

#[derive(Debug, Clone, Default)]
pub struct SourceBackfillReport {
    pub collect: CollectReport,
    pub slices_total: u64,
    /// Slices found already done (by an earlier, interrupted run).
    pub slices_done_before: u64,
    pub slices_done: u64,
    /// Slices left unfinished, with the last error of each.
    pub failed: Vec<String>,
}

impl BackfillReport {
    pub fn ok(&self) -> bool {
        self.sources.values().all(|s| s.failed.is_empty())
    }
}

/// The ranges of `[since, until)` that no existing slice covers, cut on a grid of
/// `slice` (aligned to the UNIX epoch), oldest first.
pub fn plan_slices(
    existing: &[BackfillSlice],
    since: UnixMs,
    until: UnixMs,
    slice: Duration,
) -> Vec<(UnixMs, UnixMs)> {
    let step = i64::try_from(slice.as_millis()).unwrap_or(i64::MAX).max(1);
    let mut covered: Vec<(i64, i64)> = existing.iter().map(|s| (s.from.0, s.to.0)).collect();
    covered.sort_unstable();
    let mut gaps = Vec::new();
    let mut at = since.0;
    for (from, to) in covered {
        if to <= at {
            continue;
        }
        if from >= until.0 {
            break;
        }
        if from > at {
            gaps.push((at, from));
        }
        at = at.max(to);
    }
    if at < until.0 {
        gaps.push((at, until.0));
    }
    let mut out = Vec::new();
    for (mut from, to) in gaps {
        while from < to {
            let grid_end = (from.div_euclid(step) + 1) * step;
            let end = grid_end.min(to);
            out.push((UnixMs(from), UnixMs(end)));
            from = end;
        }
    }
    out
}

/// A backfill over one store and one client (with the backfill's budget).
#[derive(Debug)]
pub struct Backfill {
    /// The organisation backfilled (the client holds its token and budget).
    pub org: OrgKey,
    pub client: MiroClient,
    pub store: StoreHandle,
    pub spans: Vec<BackfillSpan>,
    pub options: BackfillOptions,
    pub progress: BTreeMap<SourceKind, Arc<SourceProgress>>,
}

/// A slice to read, its source's settings and the span asked for.
struct Job {
    source: SourceConfig,
    slice: BackfillSlice,
    span: (UnixMs, UnixMs),
}

/// Milliseconds of `[since, until)` that `slice` has read. Slices of an earlier backfill
/// may reach beyond the span asked for (they were cut for another `--since`); only their
/// part inside it counts, so progress reports the span actually asked for.
pub fn covered_within(slice: &BackfillSlice, since: UnixMs, until: UnixMs) -> i64 {
    let read_to = slice.from.0 + slice.covered_ms();
    (read_to.min(until.0) - slice.from.0.max(since.0)).max(0)
}

/// Milliseconds of `[since, until)` inside `slice`.
fn length_within(slice: &BackfillSlice, since: UnixMs, until: UnixMs) -> i64 {
    (slice.to.0.min(until.0) - slice.from.0.max(since.0)).max(0)
}

impl Backfill {
    /// Plans and adds the missing slices, then reads every unfinished slice of the spans.
    pub async fn run(self, shutdown: Shutdown) -> Result<BackfillReport, StoreError> {
        let mut report = BackfillReport::default();
        let mut jobs: Vec<Job> = Vec::new();
        for span in &self.spans {
            let kind = span.source.kind;
            let existing = self.store.backfill_slices(self.org, kind).await?;
            let new = plan_slices(&existing, span.since, span.until, self.options.slice);
            self.store.add_backfill_slices(self.org, kind, &new).await?;
            let slices: Vec<BackfillSlice> = self
                .store
                .backfill_slices(self.org, kind)
                .await?
                .into_iter()
                .filter(|s| s.to > span.since && s.from < span.until)
                .collect();
            let progress = self.progress.get(&kind).cloned().unwrap_or_default();
            let (since, until) = (span.since, span.until);
            let total: i64 = slices.iter().map(|s| length_within(s, since, until)).sum();
            let covered: i64 = slices.iter().map(|s| covered_within(s, since, until)).sum();
            let done = slices.iter().filter(|s| s.done).count() as u64;
            progress.total_ms.store(total, Ordering::Relaxed);
            progress.covered_ms.store(covered, Ordering::Relaxed);
            progress
                .covered_at_start_ms
                .store(covered, Ordering::Relaxed);
            progress
                .slices_total
                .store(slices.len() as u64, Ordering::Relaxed);
            progress.slices_done.store(done, Ordering::Relaxed);
            tracing::info!(
                source = %kind,
                since = %span.since,
                until = %span.until,
                slices = slices.len(),
                new_slices = new.len(),
                already_done = done,
                "backfill planned"
            );
            report.sources.insert(
                kind,
                SourceBackfillReport {
                    slices_total: slices.len() as u64,
                    slices_done_before: done,
                    slices_done: done,
                    ..SourceBackfillReport::default()
                },
            );
            jobs.extend(slices.into_iter().filter(|s| !s.done).map(|slice| Job {
                source: span.source.clone(),
                slice,
                span: (span.since, span.until),
            }));
        }
        // Oldest first: the oldest history is the next to leave the API's retention.
        jobs.sort_by_key(|j| (j.slice.from, j.slice.source));
        let queue = Arc::new(Mutex::new(VecDeque::from(jobs)));
        let report = Arc::new(Mutex::new(report));
        let abort = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for _ in 0..self.options.concurrency.max(1) {
            let queue = queue.clone();
            let report = report.clone();
            let abort = abort.clone();
            let client = self.client.clone();
            let store = self.store.clone();
            let progress = self.progress.clone();
            let mut shutdown = shutdown.clone();
            workers.push(tokio::spawn(async move {
                loop {
                    if abort.load(Ordering::Relaxed) || shutdown.is_set() {
                        return Ok::<(), StoreError>(());
                    }
                    let Some(job) = queue.lock().expect("backfill queue").pop_front() else {
                        return Ok(());
                    };
                    let kind = job.source.kind;
                    let source_progress = progress.get(&kind).cloned().unwrap_or_default();
                    let mut collect = CollectReport::default();
                    let outcome = read_slice(
                        &client,
                        &store,
                        job,
                        &source_progress,
                        &mut collect,
                        &mut shutdown,
                    )
                    .await;
                    let mut r = report.lock().expect("backfill report");
                    let r = r.sources.entry(kind).or_default();
                    r.collect.add(&collect);
                    match outcome {
                        Ok(()) => {
                            r.slices_done += 1;
                            source_progress.slices_done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(SliceError::Stopped) => {}
                        Err(SliceError::Store(e)) => {
                            abort.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                        Err(SliceError::Failed { error, permanent }) => {
                            if permanent {
                                abort.store(true, Ordering::Relaxed);
                            }
                            r.failed.push(error);
                        }
                    }
                }
            }));
        }
        let mut store_error = None;
        for w in workers {
            if let Err(e) = w.await.expect("backfill worker panicked") {
                store_error.get_or_insert(e);
            }
        }
        if let Some(e) = store_error {
            return Err(e);
        }
        let report = report.lock().expect("backfill report").clone();
        Ok(report)
    }
}

enum SliceError {
    Stopped,
    Store(StoreError),
    Failed { error: String, permanent: bool },
}

/// Reads one slice to its end, resuming at its cursor; retries a failed read a few times.
async fn read_slice(
    client: &MiroClient,
    store: &StoreHandle,
    job: Job,
    progress: &Arc<SourceProgress>,
    report: &mut CollectReport,
    shutdown: &mut Shutdown,
) -> Result<(), SliceError> {
    let Job {
        source,
        slice,
        span,
    } = job;
    let source = &source;
    let kind = source.kind;
    let committer = Arc::new(SliceCommitter {
        store: store.clone(),
        kind,
        progress: progress.clone(),
        span,
    });
    let mut state = SliceProgress { slice };
    let mut cursor_restarts = CursorRestarts::default();
    let mut attempts = 0;
    loop {
        let s = &state.slice;
        let result = read_window(
            WindowRead {
                client,
                kind,
                page_size: source.page_size.get(),
                from: s.read_from,
                to: s.to,
                cursor: s.cursor.clone(),
                new_rows: None,
            },
            &committer,
            &mut state,
            report,
            shutdown,
        )
        .await;
        let s = &mut state.slice;
        let error = match result {
            Ok(()) => return Ok(()),
            Err(CollectError::Stopped) => return Err(SliceError::Stopped),
            Err(CollectError::Store(e)) => return Err(SliceError::Store(e)),
            Err(CollectError::Fetch {
                error: FetchError::CursorRejected { reason },
                ..
            }) => {
                let restarted =
                    cursor_restarts.restart(&mut s.cursor, &mut s.read_from, s.read_through);
                store
                    .save_backfill_slice(s)
                    .await
                    .map_err(SliceError::Store)?;
                match restarted {
                    Ok(()) => {
                        tracing::warn!(source = %kind, resume_from = %s.read_from, cause = %reason, "cannot continue from the cursor; reading the rest of the slice again from the latest item stored");
                        continue;
                    }
                    Err(times) => CollectError::CursorRefusedRepeatedly {
                        kind,
                        times,
                        reason,
                    },
                }
            }
            Err(e) => {
                if matches!(
                    e,
                    CollectError::CursorRepeated { .. } | CollectError::Stalled { .. }
                ) {
                    s.cursor = None;
                    store
                        .save_backfill_slice(s)
                        .await
                        .map_err(SliceError::Store)?;
                }
                e
            }
        };
        attempts += 1;
        let permanent = error.is_permanent();
        if permanent || attempts >= SLICE_ATTEMPTS {
            tracing::error!(source = %kind, from = %s.from, to = %s.to, error = %error, "backfill slice left unfinished; run the same command again to resume it");
            return Err(SliceError::Failed {
                error: format!("{kind} {}..{}: {error}", s.from, s.to),
                permanent,
            });
        }
        tracing::warn!(source = %kind, from = %s.from, to = %s.to, error = %error, attempt = attempts, "backfill slice failed; retrying");
        if !shutdown
            .sleep(Duration::from_secs(u64::from(attempts)))
            .await
        {
            return Err(SliceError::Stopped);
        }
    }
}

/// A slice as the page loop moves it.
#[derive(Debug, Clone)]
struct SliceProgress {
    slice: BackfillSlice,
}

/// Backfill commits each group of pages with its slice's progress.
struct SliceCommitter {
    store: StoreHandle,
    kind: SourceKind,
    progress: Arc<SourceProgress>,
    /// The span asked for: progress counts only what lies inside it.
    span: (UnixMs, UnixMs),
}

impl PageCommitter for SliceCommitter {
    type Progress = SliceProgress;

    fn advance(&self, p: &SliceProgress, step: &PageStep) -> SliceProgress {
        let mut s = p.slice.clone();
        s.pages += 1;
        s.requests += i64::from(step.requests);
        if step.repeated {
            // Keep the rows, but do not advance onto a cursor that loops.
        } else if step.last_page() {
            s.done = true;
            s.cursor = None;
        } else {
            s.cursor = step.next_cursor.clone();
        }
        s.read_through = s.read_through.max(step.latest);
        SliceProgress { slice: s }
    }

    fn commit(
        &self,
        rows: &[(StoredRow, &str)],
        before: &SliceProgress,
        after: &SliceProgress,
    ) -> Result<PageCommit, StoreError> {
        // Called on a blocking thread (the page loop's transform task).
        let commit = self
            .store
            .blocking()
            .commit_backfill_page(self.kind, rows, &after.slice)?;
        let (since, until) = self.span;
        let g = &self.progress;
        g.covered_ms.fetch_add(
            covered_within(&after.slice, since, until)
                - covered_within(&before.slice, since, until),
            Ordering::Relaxed,
        );
        g.requests.fetch_add(
            (after.slice.requests - before.slice.requests).unsigned_abs(),
            Ordering::Relaxed,
        );
        g.inserted.fetch_add(commit.inserted, Ordering::Relaxed);
        g.duplicates.fetch_add(commit.duplicates, Ordering::Relaxed);
        Ok(commit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn slice(from: i64, to: i64, done: bool) -> BackfillSlice {
        BackfillSlice {
            org: OrgKey::DEFAULT,
            id: 0,
            source: SourceKind::AuditLogs,
            from: UnixMs(from),
            to: UnixMs(to),
            read_from: UnixMs(from),
            read_through: None,
            cursor: None,
            done,
            pages: 0,
            requests: 0,
            inserted: 0,
            duplicates: 0,
        }
    }

    #[test]
    fn a_fresh_span_is_cut_on_the_grid() {
        let got = plan_slices(
            &[],
            UnixMs(H / 2),
            UnixMs(3 * H + 5),
            Duration::from_secs(3600),
        );
        let want: Vec<(UnixMs, UnixMs)> =
            [(H / 2, H), (H, 2 * H), (2 * H, 3 * H), (3 * H, 3 * H + 5)]
                .iter()
                .map(|&(a, b)| (UnixMs(a), UnixMs(b)))
                .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_rerun_only_adds_the_uncovered_edges() {
        let existing = [
            slice(H / 2, H, true),
            slice(H, 2 * H, false),
            slice(2 * H, 2 * H + 7, true),
        ];
        let got = plan_slices(
            &existing,
            UnixMs(H / 3),
            UnixMs(3 * H),
            Duration::from_secs(3600),
        );
        assert_eq!(
            got,
            vec![
                (UnixMs(H / 3), UnixMs(H / 2)),
                (UnixMs(2 * H + 7), UnixMs(3 * H))
            ]
        );
        assert!(
            plan_slices(&existing, UnixMs(H), UnixMs(2 * H), Duration::from_secs(60)).is_empty()
        );
    }

    proptest::proptest! {
        /// The new slices and the existing ones cover the span without a gap, and new
        /// slices never overlap existing ones or each other.
        #[test]
        fn plans_cover_the_span_without_overlap(
            cuts in proptest::collection::vec((0i64..100_000, 1i64..20_000), 0..8),
            since in 0i64..120_000, len in 0i64..120_000, step_s in 1u64..50,
        ) {
            let mut existing: Vec<BackfillSlice> = Vec::new();
            for (from, l) in cuts {
                if existing.iter().all(|s| from + l <= s.from.0 || from >= s.to.0) {
                    existing.push(slice(from, from + l, false));
                }
            }
            let until = since + len;
            let new = plan_slices(&existing, UnixMs(since), UnixMs(until), Duration::from_secs(step_s));
            let mut all: Vec<(i64, i64)> = new.iter().map(|(a, b)| (a.0, b.0)).collect();
            for (a, b) in &all {
                proptest::prop_assert!(a < b);
                proptest::prop_assert!(b - a <= i64::try_from(step_s).unwrap() * 1000);
            }
            all.extend(existing.iter().map(|s| (s.from.0, s.to.0)));
            all.sort_unstable();
            let mut at = since;
            for (a, b) in all {
                if b <= since || a >= until { continue; }
                proptest::prop_assert!(a <= at, "gap before {a}");
                at = at.max(b);
            }
            proptest::prop_assert!(at >= until || len == 0);
            for (i, x) in new.iter().enumerate() {
                for y in &new[i + 1..] {
                    proptest::prop_assert!(x.1 <= y.0 || y.1 <= x.0);
                }
                for s in &existing {
                    proptest::prop_assert!(x.1 <= s.from || s.to <= x.0);
                }
            }
        }
    }
}
