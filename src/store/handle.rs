//! The store as async code sees it: [`StoreHandle`], whose methods are awaited and run
//! their SQLite work on tokio's blocking pool, never on a runtime worker thread.
//!
//! Why `spawn_blocking` behind a typed API rather than a dedicated writer thread: the
//! synchronous [`Store`] already serialises its writer and reader connections behind
//! mutexes, so any blocking thread may use it, and SQLite itself serialises writers across
//! processes (a `backfill` beside `run` waits on the busy timeout). A writer thread would
//! add a second serialisation point, queue reads (`/metrics`, backlog counts) behind slow
//! writes, and need its own shutdown and join so the store's lock file is released when
//! `run` ends. With `spawn_blocking`, a write that waits seconds for the lock holds one
//! blocking-pool thread and nothing else: the runtime keeps serving `/healthz`, `/metrics`
//! and the other tasks.
//!
//! The one place that needs ordering without waiting is acknowledgement persistence: a
//! sink reports acknowledgements through a synchronous callback in the middle of its
//! `send`, so it cannot await. [`StoreHandle::ack_lane`] gives it an [`AckLane`]: writes
//! are queued without waiting and applied one after the other, in the order queued, by one
//! task that runs each on the blocking pool.
//!
//! Invariants:
//! - every method keeps the transaction of the [`Store`] method it calls (a page and its
//!   checkpoint in one transaction; dead letters and the offset move in one transaction);
//! - an ack lane applies its writes in the order they were queued (so an offset move
//!   queued after an acknowledged range is written after it), and after one write fails it
//!   applies none of the later ones, so a delivery offset never passes a row whose
//!   acknowledgement or dead letter was not recorded (the rows are sent again);
//! - [`AckLane::finish`] returns only once every queued write was applied or skipped:
//!   `deliver` awaits it before it reads the next batch.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{BackfillSlice, Checkpoint, OrgKey, OutboxRow, Store, StoreError};
use crate::config::SourceKind;
use crate::timefmt::UnixMs;

/// The async face of the store; cheap to clone (one shared [`Store`]).
#[derive(Debug, Clone)]
pub struct StoreHandle {
    store: Arc<Store>,
}

impl From<Store> for StoreHandle {
    fn from(store: Store) -> Self {
        StoreHandle::new(Arc::new(store))
    }
}

impl StoreHandle {
    pub fn new(store: Arc<Store>) -> Self {
        StoreHandle { store }
    }

    /// [`Store::open`] on the blocking pool (migrations may wait on the busy timeout).
    pub async fn open(path: &Path) -> Result<StoreHandle, StoreError> {
        let path = path.to_path_buf();
        let store = tokio::task::spawn_blocking(move || Store::open(&path))
            .await
            .expect("store task panicked")?;
        Ok(StoreHandle::from(store))
    }

    /// [`Store::open_backfill`] on the blocking pool.
    pub async fn open_backfill(path: &Path) -> Result<StoreHandle, StoreError> {
        let path = path.to_path_buf();
        let store = tokio::task::spawn_blocking(move || Store::open_backfill(&path))
            .await
            .expect("store task panicked")?;
        Ok(StoreHandle::from(store))
    }

    /// The synchronous store, for code already running on a blocking thread (a page
    /// commit after its transform, `/metrics` rendering): never call it from async code.
    pub fn blocking(&self) -> &Store {
        &self.store
    }

    /// Runs `f` on the blocking pool and awaits its result.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .expect("store task panicked")
    }

    pub async fn load_checkpoint(
        &self,
        org: OrgKey,
        source: SourceKind,
    ) -> Result<Option<Checkpoint>, StoreError> {
        self.run(move |s| s.load_checkpoint(org, source)).await
    }

    pub async fn save_checkpoint(&self, cp: &Checkpoint) -> Result<(), StoreError> {
        let cp = cp.clone();
        self.run(move |s| s.save_checkpoint(&cp)).await
    }

    pub async fn record_error(
        &self,
        org: OrgKey,
        source: SourceKind,
        message: &str,
    ) -> Result<(), StoreError> {
        let message = message.to_string();
        self.run(move |s| s.record_error(org, source, &message))
            .await
    }

    pub async fn backfill_slices(
        &self,
        org: OrgKey,
        source: SourceKind,
    ) -> Result<Vec<BackfillSlice>, StoreError> {
        self.run(move |s| s.backfill_slices(org, source)).await
    }

    pub async fn add_backfill_slices(
        &self,
        org: OrgKey,
        source: SourceKind,
        ranges: &[(UnixMs, UnixMs)],
    ) -> Result<(), StoreError> {
        let ranges = ranges.to_vec();
        self.run(move |s| s.add_backfill_slices(org, source, &ranges))
            .await
    }

    pub async fn save_backfill_slice(&self, slice: &BackfillSlice) -> Result<(), StoreError> {
        let slice = slice.clone();
        self.run(move |s| s.save_backfill_slice(&slice)).await
    }

    /// See `Store::sink_state_or_insert`.
    pub async fn sink_state_or_insert(
        &self,
        sink: &str,
        key: &str,
        proposed: &str,
    ) -> Result<String, StoreError> {
        let (sink, key, proposed) = (sink.to_string(), key.to_string(), proposed.to_string());
        self.run(move |s| s.sink_state_or_insert(&sink, &key, &proposed))
            .await
    }

    /// See `Store::sink_state`.
    pub async fn sink_state(&self, sink: &str, key: &str) -> Result<Option<String>, StoreError> {
        let (sink, key) = (sink.to_string(), key.to_string());
        self.run(move |s| s.sink_state(&sink, &key)).await
    }

    /// See `Store::set_sink_state`.
    pub async fn set_sink_state(
        &self,
        sink: &str,
        key: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        let (sink, key, value) = (sink.to_string(), key.to_string(), value.to_string());
        self.run(move |s| s.set_sink_state(&sink, &key, &value))
            .await
    }

    pub async fn delivered_offset(
        &self,
        sink: &str,
        source: SourceKind,
    ) -> Result<i64, StoreError> {
        let sink = sink.to_string();
        self.run(move |s| s.delivered_offset(&sink, source)).await
    }

    pub async fn start_sink_now(
        &self,
        sink: &str,
        source: SourceKind,
    ) -> Result<Option<i64>, StoreError> {
        let sink = sink.to_string();
        self.run(move |s| s.start_sink_now(&sink, source)).await
    }

    pub async fn acked_ranges(
        &self,
        sink: &str,
        source: SourceKind,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let sink = sink.to_string();
        self.run(move |s| s.acked_ranges(&sink, source)).await
    }

    pub async fn dead_letter(
        &self,
        sink: &str,
        source: SourceKind,
        rows: Vec<(i64, String)>,
        offset: Option<i64>,
    ) -> Result<(), StoreError> {
        let sink = sink.to_string();
        self.run(move |s| s.dead_letter(&sink, source, &rows, offset))
            .await
    }

    pub async fn requeued_rows(
        &self,
        sink: &str,
        source: SourceKind,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let sink = sink.to_string();
        self.run(move |s| s.requeued_rows(&sink, source, limit))
            .await
    }

    pub async fn record_sink_error(
        &self,
        sink: &str,
        source: SourceKind,
        message: &str,
    ) -> Result<(), StoreError> {
        let (sink, message) = (sink.to_string(), message.to_string());
        self.run(move |s| s.record_sink_error(&sink, source, &message))
            .await
    }

    pub async fn read_outbox(
        &self,
        source: SourceKind,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        self.run(move |s| s.read_outbox(source, after_seq, limit))
            .await
    }

    pub async fn pending(&self, sink: &str, source: SourceKind) -> Result<i64, StoreError> {
        let sink = sink.to_string();
        self.run(move |s| s.pending(&sink, source)).await
    }

    pub async fn apply_retention(
        &self,
        cutoff: UnixMs,
        sinks: Vec<String>,
    ) -> Result<Vec<(SourceKind, u64)>, StoreError> {
        self.run(move |s| s.apply_retention(cutoff, &sinks)).await
    }

    /// See [`Store::apply_alert_retention`].
    pub async fn apply_alert_retention(
        &self,
        cutoff: UnixMs,
        alert_sinks: Vec<String>,
    ) -> Result<u64, StoreError> {
        self.run(move |s| s.apply_alert_retention(cutoff, &alert_sinks))
            .await
    }

    /// An ordered lane of writes for one sink's batch (see the module doc). Must be called
    /// inside a tokio runtime.
    pub fn ack_lane(&self, sink: &str, source: SourceKind) -> AckLane {
        let (queue, mut jobs) = mpsc::unbounded_channel::<LaneWrite>();
        let store = self.store.clone();
        let (sink_name, kind) = (sink.to_string(), source);
        let task = tokio::spawn(async move {
            let mut failed: Option<StoreError> = None;
            while let Some(write) = jobs.recv().await {
                if failed.is_some() {
                    continue;
                }
                let store = store.clone();
                let sink = sink_name.clone();
                let result = tokio::task::spawn_blocking(move || write.apply(&store, &sink, kind))
                    .await
                    .expect("store task panicked");
                if let Err(e) = result {
                    failed = Some(e);
                }
            }
            failed.map_or(Ok(()), Err)
        });
        AckLane { queue, task }
    }
}

/// One write an [`AckLane`] applies.
#[derive(Debug)]
enum LaneWrite {
    /// [`Store::record_acked`].
    Acked { first: i64, last: i64 },
    /// [`Store::advance_offset`].
    Offset(i64),
    /// [`Store::dead_letter`]: rows set aside and, in the same transaction, the offset.
    DeadLetter {
        rows: Vec<(i64, String)>,
        offset: Option<i64>,
    },
    /// [`Store::clear_dead_letters`] of re-queued rows the destination accepted.
    ClearDeadLetters { seqs: Vec<i64> },
}

impl LaneWrite {
    fn apply(self, store: &Store, sink: &str, source: SourceKind) -> Result<(), StoreError> {
        match self {
            LaneWrite::Acked { first, last } => store.record_acked(sink, source, first, last),
            LaneWrite::Offset(seq) => store.advance_offset(sink, source, seq),
            LaneWrite::DeadLetter { rows, offset } => {
                store.dead_letter(sink, source, &rows, offset)
            }
            LaneWrite::ClearDeadLetters { seqs } => {
                let mut n = 0;
                for seq in seqs {
                    n += store.clear_dead_letters(sink, source, seq, seq)?;
                }
                if n > 0 {
                    tracing::info!(sink, source = %source, rows = n, "re-queued dead letters delivered");
                }
                Ok(())
            }
        }
    }
}

/// Writes queued from a synchronous acknowledgement callback, applied in order off the
/// runtime (see the module doc).
#[derive(Debug)]
pub struct AckLane {
    queue: mpsc::UnboundedSender<LaneWrite>,
    task: tokio::task::JoinHandle<Result<(), StoreError>>,
}

impl AckLane {
    fn push(&self, write: LaneWrite) {
        // The task ends only once the queue is closed (`finish`): it is always there.
        let _ = self.queue.send(write);
    }

    /// Queues: the destination acknowledged rows `first..=last`.
    pub fn record_acked(&self, first: i64, last: i64) {
        self.push(LaneWrite::Acked { first, last });
    }

    /// Queues: the delivery offset moves forward to `seq`.
    pub fn advance_offset(&self, seq: i64) {
        self.push(LaneWrite::Offset(seq));
    }

    /// Queues: `rows` are set aside and, in the same transaction, the offset moves to
    /// `offset` if given.
    pub fn dead_letter(&self, rows: Vec<(i64, String)>, offset: Option<i64>) {
        self.push(LaneWrite::DeadLetter { rows, offset });
    }

    /// Queues: the dead-letter entries of the re-queued rows `seqs` are removed.
    pub fn clear_dead_letters(&self, seqs: Vec<i64>) {
        self.push(LaneWrite::ClearDeadLetters { seqs });
    }

    /// Waits until every queued write was applied; the first failure, if any (the writes
    /// queued after it were not applied).
    pub async fn finish(self) -> Result<(), StoreError> {
        let AckLane { queue, task } = self;
        drop(queue);
        task.await.expect("acknowledgement writer panicked")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: SourceKind = SourceKind::AuditLogs;

    fn open() -> (tempfile::TempDir, StoreHandle) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.db")).unwrap();
        (dir, StoreHandle::from(store))
    }

    #[tokio::test]
    async fn an_ack_lane_applies_its_writes_in_order_before_finish_returns() {
        let (_dir, store) = open();
        let lane = store.ack_lane("out", SOURCE);
        lane.record_acked(3, 5);
        lane.record_acked(8, 9);
        // Written after the ranges, the offset move forgets the one it passes.
        lane.advance_offset(5);
        lane.finish().await.unwrap();
        assert_eq!(store.delivered_offset("out", SOURCE).await.unwrap(), 5);
        assert_eq!(
            store.acked_ranges("out", SOURCE).await.unwrap(),
            vec![(8, 9)]
        );
    }

    #[tokio::test]
    async fn an_ack_lane_applies_nothing_after_a_failed_write() {
        let (dir, store) = open();
        // Setting a row aside fails (its table is gone): the offset must not pass it.
        rusqlite::Connection::open(dir.path().join("store.db"))
            .unwrap()
            .execute_batch("DROP TABLE dead_letters")
            .unwrap();
        let lane = store.ack_lane("out", SOURCE);
        lane.record_acked(1, 1);
        lane.dead_letter(vec![(2, "too large".into())], Some(2));
        lane.record_acked(3, 3);
        lane.advance_offset(3);
        assert!(lane.finish().await.is_err());
        assert_eq!(store.delivered_offset("out", SOURCE).await.unwrap(), 0);
        assert_eq!(
            store.acked_ranges("out", SOURCE).await.unwrap(),
            vec![(1, 1)]
        );
    }
}
