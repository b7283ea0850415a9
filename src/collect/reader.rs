//! The page loop shared by live collection and backfill: read one window `[from, to)`
//! from a cursor to its last page, committing each page together with the progress that
//! follows it (a source checkpoint, or a backfill slice) through a [`PageCommitter`].
//!
//! Invariants: rows are committed in one transaction with the progress after the last
//! page they came from (the committer's `commit`), a group of at most [`GROUP_MAX_PAGES`]
//! pages, [`GROUP_MAX_BYTES`] of items and [`GROUP_MAX_AGE`] at a time, so a crash loses
//! only pages that are fetched again; groups commit in page order, one at a time per
//! window (the next pages are fetched meanwhile), and the progress in memory moves only
//! after its commit; a cursor that repeats, or a run of empty pages that never ends, stops
//! the window with an error instead of looping.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{CollectError, CollectReport};
use crate::config::SourceKind;
use crate::miro::{FetchError, MiroClient, Page, PageQuery};
use crate::shutdown::Shutdown;
use crate::store::{PageCommit, StoreError, StoredRow};
use crate::timefmt::UnixMs;

/// Consecutive empty pages that still carry a cursor before a window is declared stalled.
const MAX_EMPTY_PAGES: u32 = 25;

/// Cursor refusals without progress tolerated in one collection cycle (or backfill
/// slice) before it fails.
const MAX_CURSOR_RESTARTS: u32 = 3;

/// How a window goes on after Miro refused its cursor, shared by live collection and
/// backfill: pages come in ascending time order, so the window resumes just before the
/// latest item committed (ids deduplicate the re-read), and even cursors that expire
/// often cannot keep a long window from completing. Only refusals that made no such
/// progress count towards `MAX_CURSOR_RESTARTS`.
#[derive(Debug, Default)]
pub(crate) struct CursorRestarts {
    without_progress: u32,
}

impl CursorRestarts {
    /// Drops `cursor` and moves `from` to just before `read_through`. `Err` carries how
    /// many refusals made no progress, once there were too many.
    pub(crate) fn restart(
        &mut self,
        cursor: &mut Option<String>,
        from: &mut UnixMs,
        read_through: Option<UnixMs>,
    ) -> Result<(), u32> {
        *cursor = None;
        match read_through
            .map(|t| t.minus(Duration::from_millis(1)))
            .filter(|t| *t > *from)
        {
            Some(t) => *from = t,
            None => self.without_progress += 1,
        }
        if self.without_progress > MAX_CURSOR_RESTARTS {
            Err(self.without_progress)
        } else {
            Ok(())
        }
    }
}

/// What one fetched page changes, for the committer to work out the progress it commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageStep {
    /// HTTP requests the page took (retries included).
    pub requests: u32,
    /// The cursor of the next page; `None` on the last page.
    pub next_cursor: Option<String>,
    /// The next cursor was seen before in this window: do not advance onto it.
    pub repeated: bool,
    /// The latest item time in the page before the window's end.
    pub latest: Option<UnixMs>,
}

impl PageStep {
    pub fn last_page(&self) -> bool {
        self.next_cursor.is_none()
    }
}

/// Where a window reader commits pages: the progress type and how a page moves it.
pub trait PageCommitter: Send + Sync + 'static {
    /// What is committed with each group of pages (a checkpoint, a backfill slice).
    type Progress: Clone + Send + 'static;

    /// The progress after a page.
    fn advance(&self, progress: &Self::Progress, step: &PageStep) -> Self::Progress;

    /// Commits the rows of a group of pages and the progress after its last page
    /// (`after`) in one transaction; `before` is the progress last committed (called off
    /// the async runtime).
    fn commit(
        &self,
        rows: &[(StoredRow, &str)],
        before: &Self::Progress,
        after: &Self::Progress,
    ) -> Result<PageCommit, StoreError>;
}

/// When pages fetched but not yet committed are committed together: after this many
/// pages (a window's first group is one page, each next one twice the last), ...
pub(crate) const GROUP_MAX_PAGES: usize = 64;
/// ... this many bytes of pages, their bodies and the rows read with them
/// (`Page::held_bytes`; bounds memory: backfill reads several slices at once, and a window
/// holds the group it fetches beside the one committing), ...
pub(crate) const GROUP_MAX_BYTES: usize = 1024 * 1024;
/// ... or once the oldest of them is this old, even while the next page is still being
/// fetched (bounds how late rows and `status` are), whichever comes first. A window's
/// last page, and any page after which the window stops, is committed at once.
pub(crate) const GROUP_MAX_AGE: Duration = Duration::from_secs(1);

/// One window to read.
#[derive(Debug, Clone)]
pub struct WindowRead<'a> {
    pub client: &'a MiroClient,
    pub kind: SourceKind,
    pub page_size: u32,
    pub from: UnixMs,
    pub to: UnixMs,
    /// Where to resume (`None` = the first page).
    pub cursor: Option<String>,
    /// Woken after a page that inserted rows.
    pub new_rows: Option<&'a Notify>,
}

/// A page fetched but not yet committed.
struct FetchedPage {
    page: Page,
    requests: u32,
    next_cursor: Option<String>,
    repeated: bool,
}

/// Pages fetched but not yet committed (see [`GROUP_MAX_PAGES`]).
#[derive(Default)]
struct PageGroup {
    pages: Vec<FetchedPage>,
    bytes: usize,
    /// When the oldest page of the group arrived.
    since: Option<Instant>,
}

impl PageGroup {
    fn push(&mut self, page: FetchedPage) {
        self.bytes += page.page.held_bytes();
        self.since.get_or_insert_with(Instant::now);
        self.pages.push(page);
    }

    /// Whether the group holds `max_pages` pages, or enough bytes, or is old enough.
    fn full(&self, max_pages: usize) -> bool {
        self.pages.len() >= max_pages
            || self.bytes >= GROUP_MAX_BYTES
            || self.since.is_some_and(|t| t.elapsed() >= GROUP_MAX_AGE)
    }

    /// When the group must be committed even if no page arrives.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        self.since
            .map(|t| tokio::time::Instant::from_std(t + GROUP_MAX_AGE))
    }
}

/// A group of pages being committed on a blocking thread while the next pages are fetched.
type PendingCommit<P> = tokio::task::JoinHandle<Result<GroupCommitted<P>, StoreError>>;

/// What committing a group did.
struct GroupCommitted<P> {
    commit: PageCommit,
    outside: u64,
    derived: u64,
    partial: u64,
    /// The progress after the group's last page, now committed.
    next: P,
}

/// Reads a window from its cursor to its last page; `progress` follows every commit.
///
/// Pages are committed in groups (bounded by [`GROUP_MAX_PAGES`], [`GROUP_MAX_BYTES`] and
/// [`GROUP_MAX_AGE`]): the rows of every page of a group and the progress after its last
/// page in one transaction. A group is transformed and committed on a blocking thread
/// while the window's next pages are fetched; at most one group of a window is being
/// committed at a time, so groups commit in page order, and the next one starts from the
/// progress the last one committed. `progress` only ever holds what was committed, so a
/// crash loses at most the groups in memory, whose pages are fetched again from the
/// committed cursor. Before any return the pending groups are committed (and the commit
/// in flight awaited), so the caller's next step (restarting a refused cursor from the
/// latest item stored, saving a stopped window) starts from everything fetched.
pub async fn read_window<S: PageCommitter>(
    w: WindowRead<'_>,
    committer: &Arc<S>,
    progress: &mut S::Progress,
    report: &mut CollectReport,
    shutdown: &mut Shutdown,
) -> Result<(), CollectError> {
    let kind = w.kind;
    let (from, to) = (w.from, w.to);
    let mut seen_cursors: HashSet<String> = w.cursor.iter().cloned().collect();
    let mut cursor = w.cursor.clone();
    let mut empty_pages = 0;
    let started = Instant::now();
    let mut window_inserted = 0;
    let mut group = PageGroup::default();
    // The commit in flight, if any.
    let mut pending: Option<PendingCommit<S::Progress>> = None;
    // The first group of a window is its first page, and each group may hold twice as
    // many pages as the one before, up to `GROUP_MAX_PAGES`: a window's first rows are
    // stored at once, and a process stopped again and again still makes progress.
    let mut group_pages = 1;
    // `settle!()` waits for the commit in flight (if any) and moves `progress` and the
    // report by it; `?` on its error.
    macro_rules! settle {
        () => {
            if let Some(commit) = pending.take() {
                let committed = commit.await.expect("page commit task panicked");
                settled(&w, committed, progress, report, &mut window_inserted)?;
            }
        };
    }
    // `flush!()` starts committing the group fetched (if any) once the commit in flight
    // is settled; `flush!(and_grow)` also lets the next group hold twice as many pages.
    // `finish!()` commits the group fetched and waits for it: before a return.
    macro_rules! flush {
        (and_grow) => {
            if !group.pages.is_empty() {
                group_pages = (group_pages * 2).min(GROUP_MAX_PAGES);
            }
            flush!()
        };
        () => {
            settle!();
            let pages = std::mem::take(&mut group).pages;
            if !pages.is_empty() {
                pending = Some(start_commit(&w, committer, pages, progress.clone()));
            }
        };
    }
    macro_rules! finish {
        () => {
            flush!();
            settle!();
        };
    }
    loop {
        if shutdown.is_set() {
            finish!();
            return Err(CollectError::Stopped);
        }
        let query = PageQuery {
            source: kind,
            from,
            to,
            cursor: cursor.clone(),
            limit: w.page_size,
        };
        let fetched = {
            let fetch = w.client.fetch_page(&query, shutdown);
            tokio::pin!(fetch);
            loop {
                let deadline = group.deadline();
                // The commit in flight is settled as soon as it ends, not at the next
                // flush: `progress` and the new-rows notice follow it at once.
                let committing = async {
                    match pending.as_mut() {
                        Some(commit) => commit.await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    fetched = &mut fetch => break fetched,
                    committed = committing => {
                        pending = None;
                        let committed = committed.expect("page commit task panicked");
                        settled(&w, committed, progress, report, &mut window_inserted)?;
                    }
                    () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)),
                        if deadline.is_some() =>
                    {
                        flush!(and_grow);
                    }
                }
            }
        };
        let (page, requests) = match fetched {
            Ok(fetched) => fetched,
            Err(error) => {
                finish!();
                return Err(match error {
                    FetchError::Stopped => CollectError::Stopped,
                    error => CollectError::Fetch { kind, error },
                });
            }
        };
        report.pages += 1;
        report.requests += u64::from(requests);

        let repeated = page
            .next_cursor
            .as_ref()
            .filter(|c| seen_cursors.contains(*c))
            .cloned();
        if page.is_empty() && page.next_cursor.is_some() {
            empty_pages += 1;
        } else {
            empty_pages = 0;
        }
        let next_cursor = page.next_cursor.clone();
        group.push(FetchedPage {
            page,
            requests,
            next_cursor: next_cursor.clone(),
            repeated: repeated.is_some(),
        });
        let stops = next_cursor.is_none() || repeated.is_some() || empty_pages >= MAX_EMPTY_PAGES;
        if stops || group.full(group_pages) {
            flush!(and_grow);
        }
        if stops {
            // The window ends here (complete or stopped with an error): its last group
            // is committed before the caller goes on.
            settle!();
        }

        if let Some(cursor) = repeated {
            return Err(CollectError::CursorRepeated {
                kind,
                cursor,
                from,
                to,
            });
        }
        if empty_pages >= MAX_EMPTY_PAGES {
            return Err(CollectError::Stalled {
                kind,
                pages: empty_pages,
                from,
                to,
            });
        }
        match next_cursor {
            None => {
                tracing::info!(
                    source = %kind,
                    %from,
                    %to,
                    new_events = window_inserted,
                    took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "window complete"
                );
                return Ok(());
            }
            Some(c) => {
                seen_cursors.insert(c.clone());
                cursor = Some(c);
            }
        }
    }
}

/// Starts transforming the pages of a group and committing their rows with the progress
/// after the last of them (`before` is the progress last committed), on a blocking
/// thread. An item whose row was read with its page (`miro::parse_page_reading`) is not
/// read again.
fn start_commit<S: PageCommitter>(
    w: &WindowRead<'_>,
    committer: &Arc<S>,
    pages: Vec<FetchedPage>,
    before: S::Progress,
) -> PendingCommit<S::Progress> {
    let (kind, from, to) = (w.kind, w.from, w.to);
    let committer = committer.clone();
    tokio::task::spawn_blocking(move || {
        let mut pages = pages;
        // The rows read with each page (`MiroClient::fetch_page`); an item without one
        // is read here.
        let read: Vec<Vec<Option<StoredRow>>> =
            pages.iter_mut().map(|p| p.page.take_rows()).collect();
        let mut rows: Vec<(StoredRow, &str)> =
            Vec::with_capacity(pages.iter().map(|p| p.page.len()).sum());
        let mut outside = 0u64;
        let mut derived = 0u64;
        let mut partial = 0u64;
        let mut next = before.clone();
        for (page, read) in pages.iter().zip(read) {
            let mut latest: Option<UnixMs> = None;
            let mut read = read.into_iter();
            for item in page.page.items() {
                // Every item becomes a row: one whose columns cannot all be derived is
                // stored with what can be, plus `_raw`, and reported.
                let row = read
                    .next()
                    .flatten()
                    .unwrap_or_else(|| crate::store::stored_row(kind, item));
                if let Some(t) = row.time {
                    if t < from || t > to {
                        outside += 1;
                    } else if t < to {
                        latest = latest.max(Some(t));
                    }
                }
                if row.id_derived {
                    derived += 1;
                }
                if let Some(what) = &row.partial {
                    partial += 1;
                    tracing::warn!(source = %kind, id = %row.id, unread = %what, "item stored with only some columns derived; `_raw` keeps it whole");
                }
                rows.push((row, item));
            }
            let step = PageStep {
                requests: page.requests,
                next_cursor: page.next_cursor.clone(),
                repeated: page.repeated,
                latest,
            };
            next = committer.advance(&next, &step);
        }
        committer
            .commit(&rows, &before, &next)
            .map(|commit| GroupCommitted {
                commit,
                outside,
                derived,
                partial,
                next,
            })
    })
}

/// Moves `progress` and the report by a commit that ended; `progress` moves only once
/// the transaction committed.
fn settled<P>(
    w: &WindowRead<'_>,
    committed: Result<GroupCommitted<P>, StoreError>,
    progress: &mut P,
    report: &mut CollectReport,
    window_inserted: &mut u64,
) -> Result<(), CollectError> {
    let GroupCommitted {
        commit,
        outside,
        derived,
        partial,
        next,
    } = committed?;
    let (kind, from, to) = (w.kind, w.from, w.to);
    *progress = next;
    report.inserted += commit.inserted;
    report.duplicates += commit.duplicates;
    report.outside_window += outside;
    report.derived_ids += derived;
    report.partial_rows += partial;
    *window_inserted += commit.inserted;
    if commit.inserted > 0
        && let Some(n) = w.new_rows
    {
        n.notify_waiters();
    }
    if outside > 0 {
        tracing::warn!(source = %kind, outside, %from, %to, "Miro returned items outside the requested window; stored them anyway");
    }
    if derived > 0 {
        tracing::warn!(source = %kind, derived, "items without an `id`: stored under an id derived from their content");
    }
    tracing::debug!(
        source = %kind,
        items = commit.inserted + commit.duplicates,
        inserted = commit.inserted,
        "pages committed"
    );
    Ok(())
}
