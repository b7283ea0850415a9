//! Collection: one task per organisation and source reads time windows page by page and
//! commits the pages, in groups, with its checkpoint (the organisation's: `Collector::with_org`).
//!
//! Invariants:
//! - the rows of a group of pages and the checkpoint that follows its last page (next
//!   cursor, or the new watermark after the window's last page) are committed in one
//!   transaction (`reader::read_window` bounds a group by pages, bytes and age);
//! - a restart resumes at the stored cursor; a refused cursor restarts the window;
//! - a cursor that repeats, or a run of empty pages that never ends, stops the window
//!   with an error instead of looping;
//! - the watermark only advances over windows read to their last page, and
//!   `reread_through` only over late re-read windows read to their last page (so a crash
//!   resumes a due re-read, never skips it); which windows are read: `window.rs`.

pub mod backfill;
mod reader;
mod window;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{SourceConfig, SourceKind};
use crate::miro::{FetchError, MiroClient};
use crate::service::Telemetry;
use crate::shutdown::Shutdown;
use crate::store::{
    Checkpoint, OrgKey, PageCommit, StoreError, StoreHandle, StoredRow, WindowProgress,
};
use crate::timefmt::UnixMs;

use reader::CursorRestarts;
pub use reader::{PageCommitter, PageStep, WindowRead, read_window};
pub use window::{NextWindow, WindowPolicy, next_window, reread_after_poll};

/// Why a cycle stopped short.
///
/// Messages do not name the source: every place that shows one already does (the log
/// field `source`, `status`, `/readyz`, the `run` summary), and naming it twice reads as
/// `audit_logs: audit_logs: ...`. Like every error here, a message includes its cause's
/// text and does not also return it as `source()`, so a printed chain says each thing once.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("{error}")]
    Fetch { kind: SourceKind, error: FetchError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "Miro returned cursor {cursor:?} again in window {from}..{to}; the page \
         does not advance, so the window is abandoned and read again from its start next cycle"
    )]
    CursorRepeated {
        kind: SourceKind,
        cursor: String,
        from: UnixMs,
        to: UnixMs,
    },
    #[error(
        "{pages} pages in a row came back empty but with a cursor in window \
         {from}..{to}; the window is read again from its start next cycle"
    )]
    Stalled {
        kind: SourceKind,
        pages: u32,
        from: UnixMs,
        to: UnixMs,
    },
    #[error("the cursor could not be used {times} times in one cycle, last: {reason}")]
    CursorRefusedRepeatedly {
        kind: SourceKind,
        times: u32,
        reason: String,
    },
    #[error("stopped")]
    Stopped,
}

impl CollectError {
    /// True when retrying later cannot help without someone changing something.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            CollectError::Fetch {
                error: FetchError::Permanent(_),
                ..
            }
        )
    }
}

/// What one cycle (or a whole run) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CollectReport {
    pub windows: u64,
    pub pages: u64,
    pub requests: u64,
    pub inserted: u64,
    pub duplicates: u64,
    pub outside_window: u64,
    pub derived_ids: u64,
    /// Items stored with only some columns derived (`Row::partial`).
    pub partial_rows: u64,
}

impl CollectReport {
    pub fn add(&mut self, other: &CollectReport) {
        self.windows += other.windows;
        self.pages += other.pages;
        self.requests += other.requests;
        self.inserted += other.inserted;
        self.duplicates += other.duplicates;
        self.outside_window += other.outside_window;
        self.derived_ids += other.derived_ids;
        self.partial_rows += other.partial_rows;
    }
}

/// The collector of one source.
#[derive(Debug, Clone)]
pub struct Collector {
    source: SourceConfig,
    /// The organisation collected (its rows and checkpoint carry its key).
    org: OrgKey,
    /// Its name (log fields, metrics labels).
    org_name: Arc<str>,
    client: MiroClient,
    store: StoreHandle,
    /// Where a fresh store starts, instead of `now - initial_lookback` (tests, demo).
    start_override: Option<UnixMs>,
    /// Woken after each committed page (delivery tasks wait on it).
    new_rows: Option<Arc<tokio::sync::Notify>>,
    /// Metrics and readiness.
    telemetry: Option<Arc<Telemetry>>,
}

impl Collector {
    pub fn new(source: SourceConfig, client: MiroClient, store: StoreHandle) -> Self {
        Collector {
            source,
            org: OrgKey::DEFAULT,
            org_name: Arc::from(crate::config::DEFAULT_ORG_NAME),
            client,
            store,
            start_override: None,
            new_rows: None,
            telemetry: None,
        }
    }

    /// Collects for organisation `org` (named `name`) rather than the default one.
    pub fn with_org(mut self, org: OrgKey, name: &str) -> Self {
        self.org = org;
        self.org_name = Arc::from(name);
        self
    }

    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    pub fn with_notify(mut self, new_rows: Arc<tokio::sync::Notify>) -> Self {
        self.new_rows = Some(new_rows);
        self
    }

    pub fn with_start(mut self, start: UnixMs) -> Self {
        self.start_override = Some(start);
        self
    }

    pub fn kind(&self) -> SourceKind {
        self.source.kind
    }

    fn policy(&self) -> WindowPolicy {
        WindowPolicy {
            settle_lag: self.source.settle_lag,
            recent_overlap: self.source.recent_overlap,
            overlap: self.source.overlap,
            max_window: self.source.max_window,
            overlap_every: self.source.overlap_every,
        }
    }

    /// Polls until shutdown (or, with `once`, until caught up). A failed cycle is
    /// logged with its remediation and recorded on the checkpoint; `once` returns it.
    pub async fn run(
        &self,
        once: bool,
        mut shutdown: Shutdown,
    ) -> Result<CollectReport, CollectError> {
        let mut total = CollectReport::default();
        loop {
            match self.cycle(&mut shutdown).await {
                Ok(report) => {
                    total.add(&report);
                    if let Some(t) = &self.telemetry {
                        t.poll_completed(&self.org_name, self.source.kind);
                    }
                }
                Err(CollectError::Stopped) => return Ok(total),
                Err(e) => {
                    if let Some(t) = &self.telemetry {
                        t.poll_failed(
                            &self.org_name,
                            self.source.kind,
                            &e.to_string(),
                            e.is_permanent(),
                        );
                    }
                    if e.is_permanent() {
                        tracing::error!(org = %self.org_name, source = %self.source.kind, error = %e, "collection is blocked until this is fixed");
                    } else if once {
                        tracing::error!(org = %self.org_name, source = %self.source.kind, error = %e, "collection cycle failed");
                    } else {
                        tracing::error!(org = %self.org_name, source = %self.source.kind, error = %e, "collection cycle failed; trying again next cycle");
                    }
                    if let Err(store_err) = self
                        .store
                        .record_error(self.org, self.source.kind, &e.to_string())
                        .await
                    {
                        tracing::error!(source = %self.source.kind, error = %store_err, "cannot record the error in the store");
                    }
                    if once {
                        return Err(e);
                    }
                }
            }
            if once || !shutdown.sleep(self.source.poll_interval).await {
                return Ok(total);
            }
        }
    }

    /// Reads windows until caught up with `now - settle_lag`.
    pub async fn cycle(&self, shutdown: &mut Shutdown) -> Result<CollectReport, CollectError> {
        let kind = self.source.kind;
        let mut report = CollectReport::default();
        let mut cp = match self.store.load_checkpoint(self.org, kind).await? {
            Some(cp) => cp,
            None => {
                let now = UnixMs::now();
                let start = self
                    .start_override
                    .unwrap_or_else(|| now.minus(self.source.initial_lookback));
                Checkpoint {
                    org: self.org,
                    source: kind,
                    watermark: start,
                    watermark_polled: now,
                    reread_through: Some(start),
                    window: None,
                    pages_total: 0,
                    requests_total: 0,
                    last_success: None,
                    last_error: None,
                    last_error_at: None,
                }
            }
        };
        // A store from before late re-reads existed: nothing is due before its watermark.
        if cp.reread_through.is_none() {
            cp.reread_through = Some(cp.watermark);
        }
        let mut cursor_restarts = CursorRestarts::default();
        // A cycle catches up to the time it started; later time is the next cycle's.
        let cycle_now = UnixMs::now();
        loop {
            if shutdown.is_set() {
                return Err(CollectError::Stopped);
            }
            if cp.window.is_none() {
                let now = UnixMs::now();
                match next_window(
                    cp.watermark,
                    cp.watermark_polled,
                    cp.reread_through.unwrap_or(cp.watermark),
                    cycle_now,
                    &self.policy(),
                ) {
                    None => {
                        // Caught up: the poll completed. This is the one moment both
                        // `status` (last poll completed) and `/readyz` count.
                        cp.last_success = Some(UnixMs::now());
                        cp.last_error = None;
                        cp.last_error_at = None;
                        self.store.save_checkpoint(&cp).await?;
                        return Ok(report);
                    }
                    Some(NextWindow { from, to, reread }) => {
                        cp.window = Some(WindowProgress {
                            from,
                            to,
                            started: now,
                            read_through: None,
                            cursor: None,
                            reread,
                        });
                        self.store.save_checkpoint(&cp).await?;
                    }
                }
            }
            match self.read_window(&mut cp, &mut report, shutdown).await {
                Ok(()) => report.windows += 1,
                Err(CollectError::Fetch {
                    error: FetchError::CursorRejected { reason },
                    ..
                }) => {
                    let w = cp.window.as_mut().expect("a window is being read");
                    if let Err(times) =
                        cursor_restarts.restart(&mut w.cursor, &mut w.from, w.read_through)
                    {
                        return Err(CollectError::CursorRefusedRepeatedly {
                            kind,
                            times,
                            reason,
                        });
                    }
                    tracing::warn!(source = %kind, resume_from = %w.from, cause = %reason, "cannot continue from the cursor; reading the rest of the window again from the latest item stored");
                    self.store.save_checkpoint(&cp).await?;
                }
                Err(e @ (CollectError::CursorRepeated { .. } | CollectError::Stalled { .. })) => {
                    if let Some(w) = cp.window.as_mut() {
                        w.cursor = None;
                    }
                    self.store.save_checkpoint(&cp).await?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the window in `cp` from its stored cursor to its last page.
    async fn read_window(
        &self,
        cp: &mut Checkpoint,
        report: &mut CollectReport,
        shutdown: &mut Shutdown,
    ) -> Result<(), CollectError> {
        let window = cp.window.clone().expect("a window is set");
        let committer = Arc::new(CheckpointCommitter {
            store: self.store.clone(),
            kind: self.source.kind,
            org_name: self.org_name.clone(),
            policy: self.policy(),
            telemetry: self.telemetry.clone(),
        });
        reader::read_window(
            WindowRead {
                client: &self.client,
                kind: self.source.kind,
                page_size: self.source.page_size.get(),
                from: window.from,
                to: window.to,
                cursor: window.cursor,
                new_rows: self.new_rows.as_deref(),
            },
            &committer,
            cp,
            report,
            shutdown,
        )
        .await
    }
}

/// Live collection commits each page with the source's checkpoint.
struct CheckpointCommitter {
    store: StoreHandle,
    kind: SourceKind,
    org_name: Arc<str>,
    policy: WindowPolicy,
    telemetry: Option<Arc<Telemetry>>,
}

impl PageCommitter for CheckpointCommitter {
    type Progress = Checkpoint;

    fn advance(&self, cp: &Checkpoint, step: &PageStep) -> Checkpoint {
        let mut next = cp.clone();
        next.pages_total += 1;
        next.requests_total += i64::from(step.requests);
        if step.repeated {
            // Keep the rows, but do not advance onto a cursor that loops.
        } else if step.last_page() {
            let window = next.window.take().expect("a window is being read");
            if window.reread {
                next.reread_through = Some(window.to);
            } else {
                next.reread_through = Some(reread_after_poll(
                    next.reread_through.unwrap_or(window.from),
                    window.from,
                    window.to,
                    window.started,
                    &self.policy,
                ));
                next.watermark = window.to;
                next.watermark_polled = window.started;
            }
        } else if let Some(w) = next.window.as_mut() {
            w.cursor = step.next_cursor.clone();
        }
        if let Some(w) = next.window.as_mut() {
            w.read_through = w.read_through.max(step.latest);
        }
        next
    }

    fn commit(
        &self,
        rows: &[(StoredRow, &str)],
        _before: &Checkpoint,
        cp: &Checkpoint,
    ) -> Result<PageCommit, StoreError> {
        // Called on a blocking thread (the page loop's transform task).
        let commit = self.store.blocking().commit_page(self.kind, rows, cp)?;
        if let Some(t) = &self.telemetry {
            t.page_committed(&self.org_name, self.kind, commit.inserted, commit.partial);
        }
        Ok(commit)
    }
}

/// Lag of a source: how far its watermark is behind now.
pub fn lag(cp: &Checkpoint, now: UnixMs) -> Duration {
    now.since(cp.watermark)
}
