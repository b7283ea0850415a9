//! The store: one SQLite file (WAL), the single source of truth.
//!
//! Invariants:
//! - the items of a page (or of a group of consecutive pages, `collect::read_window`) are
//!   committed in one transaction together with the source's checkpoint after the last
//!   of them, so a crash leaves either both or neither;
//! - rows are unique on the Miro `id` and the organisation per table (`INSERT OR
//!   IGNORE`, `UNIQUE (id, _org)`), so re-reading an overlap or a page inserts nothing,
//!   and two organisations' items never deduplicate against each other; checkpoints,
//!   backfill slices and `partial_rows` notes are per organisation too (`docs/store.md`,
//!   "Organisations"); what is keyed by `_seq` (dead letters, offsets, acknowledgements)
//!   needs no organisation: `_seq` is unique in its table;
//! - `_seq` only grows and is assigned in commit order (one writer), so a sink's delivery
//!   offset (`sink_offsets.delivered_seq`) marks exactly what it has been handed and
//!   acknowledged. A `backfill` process beside `run` is a second writer, but SQLite
//!   lets one write transaction in at a time (the other waits, busy timeout), so `_seq`
//!   is still assigned in commit order;
//! - a backfill page (or group of pages) is committed in one transaction together with
//!   its slice's progress (`backfill_slices`), like live pages with their checkpoint;
//! - a row a sink's destination will never accept is listed in `dead_letters` in the same
//!   transaction that lets the sink's offset pass it; the row itself stays in its table,
//!   and retention never deletes a row listed there.
//! - every item of a page becomes a row (the transform never refuses one); a row whose
//!   columns could not all be derived is also listed in `partial_rows` (same transaction,
//!   keyed by organisation, source and id).
//! - every `_org` / `org` written is a key of `orgs` (`register_orgs`; keys are never
//!   deleted or changed): the writer does not have SQLite check those foreign keys, which
//!   would keep a statement journal for every multi-row insert (`docs/store.md`, "Writing
//!   rows");
//! - a stored column (`stored_columns`: the keys, the grouped columns and the ones
//!   rules and reports read over every row) holds exactly what the view would derive from
//!   `_raw` (`docs/store.md`); the views derive the rest on read.
//!
//! Durability: WAL with `synchronous = NORMAL`. A commit is in the WAL when it returns, so
//! killing the process at any point loses nothing committed; a power loss or OS crash may
//! roll back the last transactions (with group commits, at most about a second of
//! collection), never part of one: rows and the checkpoint or slice progress after them go
//! back together and the collector fetches those pages again. `wal_autocheckpoint` stays
//! at SQLite's 1,000 pages: the checkpoint is where `NORMAL` fsyncs, and fewer, larger
//! transactions already make it rarer per row (RELIABILITY.md, "Durability of a commit").
//!
//! [`Store`] is synchronous (CLI commands, tests, code already on a blocking thread);
//! async code uses [`StoreHandle`] (`handle.rs`), which keeps SQLite off the runtime's
//! worker threads.

mod borrowed;
mod handle;
mod raw;
mod schema;
pub mod transform;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::config::SourceKind;
use crate::timefmt::UnixMs;
use borrowed::{Param, Statements};
pub use handle::{AckLane, StoreHandle};
use raw::RawCodec;
pub use raw::RawError;
pub use transform::{Row, StoredRow};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store {path}: {cause}")]
    Open {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    #[error("cannot create the store's directory {path}: {cause}")]
    CreateDir {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "the store {path} is in use by another mirotrail process (lock file {lock}); stop \
         that process first, or give this one its own `store.path`"
    )]
    Locked { path: PathBuf, lock: PathBuf },
    #[error(
        "another backfill is running on the store {path} (lock file {lock}); wait for it to \
         finish, or stop it (it resumes where it stopped)"
    )]
    BackfillLocked { path: PathBuf, lock: PathBuf },
    #[error(
        "the store {path} is locked by another program (a sqlite3 shell or a backup holding a \
         transaction?); close it and run again; nothing was lost"
    )]
    Busy { path: PathBuf },
    #[error(
        "the store {path} was written by a newer mirotrail (schema {found}, this build knows {known}); upgrade mirotrail"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error(
        "stored row _seq {seq} cannot be read back: {cause} (the store file is damaged or was \
         edited by hand; restore it from a backup)"
    )]
    Raw { seq: i64, cause: RawError },
    /// The config's organisations do not match the ones the store collected for.
    #[error("the store {path}: {message}")]
    Orgs { path: PathBuf, message: String },
    #[error(
        "store {what} failed: {cause} (if the disk is full, free space; nothing was lost, the work is retried)"
    )]
    Sql {
        what: &'static str,
        cause: rusqlite::Error,
    },
}

fn sql(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |cause| StoreError::Sql { what, cause }
}

/// An organisation's key in the store (`orgs.key`, schema step 11): what every row,
/// checkpoint, backfill slice and alert carries. [`OrgKey::DEFAULT`] is the organisation of
/// a single `[miro]` config and of every row stored before organisations were named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrgKey(pub i64);

impl OrgKey {
    /// Organisation 1, `default`.
    pub const DEFAULT: OrgKey = OrgKey(1);
}

impl std::fmt::Display for OrgKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a source of one organisation stands: everything before `watermark` is
/// collected, and possibly a window in progress with the cursor of its next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub org: OrgKey,
    pub source: SourceKind,
    pub watermark: UnixMs,
    /// When the window that ended at `watermark` started being read: events visible by
    /// then were seen.
    pub watermark_polled: UnixMs,
    /// Late re-reads (`collect/window.rs`) have re-read everything before this; `None`:
    /// a store from before they existed (nothing before the watermark is due).
    pub reread_through: Option<UnixMs>,
    pub window: Option<WindowProgress>,
    pub pages_total: i64,
    pub requests_total: i64,
    /// When the source last completed a poll (read every window up to now minus the
    /// settle lag): what `status` shows and `/readyz` counts.
    pub last_success: Option<UnixMs>,
    /// The last failed cycle's error, cleared when a poll completes.
    pub last_error: Option<String>,
    pub last_error_at: Option<UnixMs>,
}

/// A window being read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowProgress {
    pub from: UnixMs,
    pub to: UnixMs,
    pub started: UnixMs,
    /// The latest item time committed in this window: with ascending pages, everything
    /// before it has been read, so a refused cursor restarts from here, not from `from`.
    pub read_through: Option<UnixMs>,
    /// The cursor of the next page; `None` = the first page has not been committed.
    pub cursor: Option<String>,
    /// A late re-read: its last page moves `reread_through`, not the watermark.
    pub reread: bool,
}

/// What a page commit did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageCommit {
    pub inserted: u64,
    pub duplicates: u64,
    /// New rows stored with only some columns derived (`Row::partial`).
    pub partial: u64,
}

/// A stored row handed to a sink: its `_seq` and the item exactly as Miro sent it. The
/// table columns are derived from the item when a sink needs them ([`OutboxRow::cells`]),
/// as the store's views derive them.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub seq: i64,
    /// The item exactly as Miro sent it.
    pub raw: String,
    /// The Miro organisation the item came from (`_org_id`; unknown for a `[miro]`
    /// without `org_id`).
    pub org_id: Option<String>,
}

impl OutboxRow {
    /// The table columns, in order (the transform of `raw`, as the table shows them).
    pub fn cells(&self, source: SourceKind) -> Vec<Option<String>> {
        transform::to_row(source, &self.raw).cells
    }
}

/// Where a sink stands on one source, in rows (not `_seq` numbers: ignored duplicates
/// and retention leave gaps in `_seq`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkProgress {
    /// Stored rows the destination acknowledged (up to the offset, and in acknowledged
    /// ranges beyond it).
    pub delivered: i64,
    /// Stored rows not acknowledged yet: the sink's backlog.
    pub pending: i64,
    /// The last delivery error, cleared by the next acknowledged batch.
    pub last_error: Option<String>,
}

/// Counts a sink's delivered and pending rows of a source. Each count is a range scan
/// of `_seq` (the table's primary key), and acknowledged ranges beyond the offset are
/// few, so it stays cheap at any size.
pub fn sink_progress(
    conn: &Connection,
    sink: &str,
    source: SourceKind,
) -> Result<SinkProgress, StoreError> {
    let (offset, last_error): (i64, Option<String>) = conn
        .query_row(
            "SELECT delivered_seq, last_error FROM sink_offsets WHERE sink = ?1 AND source = ?2",
            params![sink, source.name()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sql("reading a delivery offset"))?
        .unwrap_or((0, None));
    let table = source.table();
    let (behind, beyond): (i64, i64) = conn
        .query_row(
            &format!(
                "SELECT (SELECT count(*) FROM {table} WHERE _seq <= ?1),
                        (SELECT count(*) FROM {table} WHERE _seq > ?1)"
            ),
            [offset],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(sql("counting delivered rows"))?;
    let acked: i64 = conn
        .query_row(
            &format!(
                "SELECT coalesce(sum((SELECT count(*) FROM {table} AS t
                                      WHERE t._seq BETWEEN max(a.first_seq, ?3 + 1) AND a.last_seq)), 0)
                 FROM sink_acked AS a WHERE a.sink = ?1 AND a.source = ?2"
            ),
            params![sink, source.name(), offset],
            |r| r.get(0),
        )
        .map_err(sql("counting acknowledged rows"))?;
    Ok(SinkProgress {
        delivered: behind + acked,
        pending: beyond - acked,
        last_error,
    })
}

/// Counts for `status`.
#[derive(Debug, Clone, Default)]
pub struct TableStats {
    pub rows: i64,
    pub max_seq: i64,
    pub newest: Option<String>,
}

/// One time slice of a backfill and how far it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillSlice {
    pub id: i64,
    pub org: OrgKey,
    pub source: SourceKind,
    pub from: UnixMs,
    pub to: UnixMs,
    /// The start of the query `cursor` belongs to: `from`, or later after a refused cursor
    /// (reading resumes just before `read_through`).
    pub read_from: UnixMs,
    /// The latest item time committed (pages are ascending: all before it is stored).
    pub read_through: Option<UnixMs>,
    /// The cursor of the next page; `None` = start the query at `read_from`.
    pub cursor: Option<String>,
    pub done: bool,
    pub pages: i64,
    pub requests: i64,
    pub inserted: i64,
    pub duplicates: i64,
}

impl BackfillSlice {
    /// Milliseconds of the slice read so far.
    pub fn covered_ms(&self) -> i64 {
        if self.done {
            self.to.0 - self.from.0
        } else {
            self.read_through
                .map_or(0, |t| (t.0 - self.from.0).clamp(0, self.to.0 - self.from.0))
        }
    }
}

/// Which lock a store handle holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LockKind {
    /// `run`: one per store.
    Collector,
    /// `backfill`: one per store, allowed beside `run`.
    Backfill,
}

/// The writer connection and the row inserts prepared on it, kept across commits
/// (`borrowed`). Derefs to the connection.
#[derive(Debug)]
struct Writer {
    /// Declared before `conn`: dropped (its statements finalized) before the connection
    /// closes.
    inserts: Inserts,
    conn: Connection,
}

/// The row inserts of [`insert_rows`], by source and rows per statement.
type Inserts = Statements<(SourceKind, usize)>;

impl std::ops::Deref for Writer {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl std::ops::DerefMut for Writer {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

/// The store handle: one writer connection, one reader connection.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    writer: Mutex<Writer>,
    reader: Mutex<Connection>,
    /// The dictionaries `_raw` is compressed with (`raw.rs`).
    codec: Arc<RawCodec>,
    /// Rows stored as text since the last look for a dictionary, per source.
    plain_rows: Mutex<[usize; SourceKind::ALL.len()]>,
    _lock: Option<std::fs::File>,
}

impl Store {
    /// Opens (creating if needed) the store for collection and delivery, taking the
    /// single-writer lock.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_locked(path, LockKind::Collector)
    }

    /// Opens the store for a backfill: takes the backfill lock (`<store>.backfill.lock`),
    /// not the collector's, so one backfill may run beside `run` but not beside another
    /// backfill. Their writes are serialized by SQLite (busy timeout).
    pub fn open_backfill(path: &Path) -> Result<Store, StoreError> {
        Store::open_locked(path, LockKind::Backfill)
    }

    fn open_locked(path: &Path, kind: LockKind) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::private::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                cause: source,
            })?;
        }
        let lock = take_lock(path, kind)?;
        // SQLite gives `-wal` and `-shm` the database file's mode: create it private
        // first, and tighten files an older version or another umask left open.
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            crate::private::tighten_file(Path::new(&file));
        }
        crate::private::file_options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|cause| StoreError::CreateDir {
                path: path.to_path_buf(),
                cause,
            })?;
        let open_err = |source: rusqlite::Error| {
            if source.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                || source.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseLocked)
            {
                StoreError::Busy {
                    path: path.to_path_buf(),
                }
            } else {
                StoreError::Open {
                    path: path.to_path_buf(),
                    cause: source,
                }
            }
        };
        let codec = RawCodec::new(Some(path));
        let mut writer = Connection::open(path).map_err(open_err)?;
        configure(&writer).map_err(open_err)?;
        raw::register_functions(&writer, &codec).map_err(open_err)?;
        writer
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        check_version(&writer, path)?;
        // A step may read the stored items (`mirotrail_column`): their dictionaries first.
        codec.load(&writer).map_err(open_err)?;
        let version_before: i64 = writer
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(open_err)?;
        schema::migrate(&mut writer).map_err(open_err)?;
        // A step that rewrote every stored row in place (the stored rule columns) leaves
        // pages part full: the file is rewritten once, like after a re-encoding below.
        let rewritten = if schema::rewrites_rows(version_before) {
            let mut rows = 0i64;
            for source in SourceKind::ALL {
                rows += writer
                    .query_row(
                        &format!("SELECT count(*) FROM {}", raw::rows_table(source)),
                        [],
                        |r| r.get::<_, i64>(0),
                    )
                    .map_err(open_err)?;
            }
            u64::try_from(rows).unwrap_or(0)
        } else {
            0
        };
        codec.load(&writer).map_err(open_err)?;
        // Items stored as text (before a dictionary, or by an older version) are
        // compressed now; after an upgrade that is every row, once, so the file is then
        // rewritten to give the space back.
        let mut recoded = 0;
        for source in SourceKind::ALL {
            recoded += raw::compact(&mut writer, &codec, source).map_err(open_err)?;
        }
        if recoded.max(rewritten) >= COMPACT_VACUUM_ROWS {
            tracing::info!(
                rows = recoded.max(rewritten),
                "converted the stored rows; rewriting the store file to free the space"
            );
            writer.execute_batch("VACUUM").map_err(open_err)?;
        }
        // After the migrations, which ran as they always did. The bundled SQLite enforces
        // foreign keys by default; the only ones are `_org` / `org` -> `orgs.key`, and
        // every key written comes from `orgs` (`register_orgs`; keys are never deleted or
        // changed). Enforced, each row inserted looked its organisation up, and every
        // multi-row `INSERT` kept a statement journal in case it had to stop halfway,
        // written to a temporary file past 64 KiB (`docs/store.md`, "Writing rows").
        writer
            .pragma_update(None, "foreign_keys", false)
            .map_err(open_err)?;
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        configure(&reader).map_err(open_err)?;
        raw::register_functions(&reader, &codec).map_err(open_err)?;
        Ok(Store {
            path: path.to_path_buf(),
            writer: Mutex::new(Writer {
                inserts: Inserts::default(),
                conn: writer,
            }),
            reader: Mutex::new(reader),
            codec,
            plain_rows: Mutex::new([0; SourceKind::ALL.len()]),
            _lock: Some(lock),
        })
    }

    /// Opens an existing store read-only (for `query` and `status`), without the lock.
    pub fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
        if !path.exists() {
            return Err(StoreError::Open {
                path: path.to_path_buf(),
                cause: rusqlite::Error::InvalidPath(path.to_path_buf()),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            cause: source,
        })?;
        configure(&conn)
            .and_then(|()| raw::register_functions(&conn, &RawCodec::new(Some(path))))
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                cause: source,
            })?;
        Ok(conn)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The source's checkpoint, if it ever collected (read on the writer connection: what
    /// this process last wrote).
    pub fn load_checkpoint(
        &self,
        org: OrgKey,
        source: SourceKind,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let conn = self.writer.lock().expect("store writer lock");
        read_checkpoint(&conn, org, source)
    }

    /// The source's checkpoint as last committed, read on the reader connection, so it
    /// never waits behind a write (metrics).
    pub fn observe_checkpoint(
        &self,
        org: OrgKey,
        source: SourceKind,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let conn = self.reader.lock().expect("store reader lock");
        read_checkpoint(&conn, org, source)
    }

    /// Runs `f` in one write transaction on the writer connection and commits it (the
    /// detection evaluator: alerts and its offset together).
    pub fn write<T>(
        &self,
        what: &'static str,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self.writer.lock().expect("store writer lock");
        let tx = conn.transaction().map_err(sql(what))?;
        let value = f(&tx).map_err(sql(what))?;
        tx.commit().map_err(sql(what))?;
        Ok(value)
    }

    /// Runs `f` on the reader connection (a snapshot of what is committed).
    pub fn read<T>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let conn = self.reader.lock().expect("store reader lock");
        f(&conn).map_err(sql(what))
    }

    /// Saves a checkpoint on its own (a new window, a restarted window).
    pub fn save_checkpoint(&self, cp: &Checkpoint) -> Result<(), StoreError> {
        let conn = self.writer.lock().expect("store writer lock");
        write_checkpoint(&conn, cp).map_err(sql("saving a checkpoint"))
    }

    /// Records a failed cycle on the source's checkpoint (shown by `status`).
    pub fn record_error(
        &self,
        org: OrgKey,
        source: SourceKind,
        message: &str,
    ) -> Result<(), StoreError> {
        let conn = self.writer.lock().expect("store writer lock");
        conn.execute(
            "UPDATE checkpoints SET last_error = ?2, last_error_ms = ?3 WHERE source = ?1 AND org = ?4",
            params![source.name(), message, UnixMs::now().0, org.0],
        )
        .map_err(sql("recording an error"))?;
        Ok(())
    }

    /// Commits the rows of one page, or of a group of consecutive pages, and the
    /// checkpoint after the last of them, in one transaction.
    pub fn commit_page(
        &self,
        source: SourceKind,
        rows: &[(StoredRow, &str)],
        checkpoint: &Checkpoint,
    ) -> Result<PageCommit, StoreError> {
        let encoded = self.encode(source, rows);
        let mut guard = self.writer.lock().expect("store writer lock");
        let Writer { inserts, conn } = &mut *guard;
        let tx = conn.transaction().map_err(sql("starting a page commit"))?;
        let (commit, plain) = insert_rows(
            &tx,
            inserts,
            &self.codec,
            checkpoint.org,
            source,
            rows,
            Some(encoded),
        )?;
        write_checkpoint(&tx, checkpoint).map_err(sql("saving a checkpoint"))?;
        tx.commit().map_err(sql("committing a page"))?;
        self.after_insert(conn, source, plain)?;
        Ok(commit)
    }

    /// Commits one backfill page (or group of pages): its rows and its slice's progress
    /// (counts grow by what these rows inserted), in one transaction.
    pub fn commit_backfill_page(
        &self,
        source: SourceKind,
        rows: &[(StoredRow, &str)],
        slice: &BackfillSlice,
    ) -> Result<PageCommit, StoreError> {
        let encoded = self.encode(source, rows);
        let mut guard = self.writer.lock().expect("store writer lock");
        let Writer { inserts, conn } = &mut *guard;
        let tx = conn
            .transaction()
            .map_err(sql("starting a backfill page commit"))?;
        let (commit, plain) = insert_rows(
            &tx,
            inserts,
            &self.codec,
            slice.org,
            source,
            rows,
            Some(encoded),
        )?;
        write_slice(&tx, slice, commit).map_err(sql("saving a backfill slice"))?;
        tx.commit().map_err(sql("committing a backfill page"))?;
        self.after_insert(conn, source, plain)?;
        Ok(commit)
    }

    /// The stored `_raw` of `rows`, encoded before the writer lock is taken: the zstd
    /// encoding and its check are most of a commit's CPU, and commits of several windows
    /// encode at once while one of them holds the lock. [`insert_rows`] encodes again
    /// under the lock if the source's dictionary changed in between.
    ///
    /// A source without a dictionary gets one here, trained on these rows' items when
    /// they are enough (`raw::train_from_items`), so they are not stored as text first.
    fn encode(&self, source: SourceKind, rows: &[(StoredRow, &str)]) -> raw::EncodedRaws {
        if !self.codec.has_dictionary(source) && rows.len() >= raw::EARLY_TRAIN_ROWS {
            let mut conn = self.writer.lock().expect("store writer lock");
            if let Err(e) = raw::train_from_items(
                &mut conn,
                &self.codec,
                source,
                rows.iter().map(|(_, raw)| *raw),
            ) {
                // The rows are then stored as text, and `raw::compact` trains later.
                tracing::warn!(source = %source, error = %e, "training the store's compression dictionary failed");
            }
        }
        self.codec
            .encode_all(source, rows.iter().map(|(_, raw)| *raw))
    }

    /// Counts rows stored as text (their source had no dictionary yet); once there are
    /// enough to train one, trains it and compresses them (`raw::compact`).
    fn after_insert(
        &self,
        conn: &mut Connection,
        source: SourceKind,
        plain: usize,
    ) -> Result<(), StoreError> {
        if plain == 0 {
            return Ok(());
        }
        let slot = SourceKind::ALL
            .iter()
            .position(|s| *s == source)
            .unwrap_or(0);
        let due = {
            let mut counts = self.plain_rows.lock().expect("store counter lock");
            counts[slot] += plain;
            counts[slot] >= raw::TRAIN_ROWS
        };
        if due {
            raw::compact(conn, &self.codec, source).map_err(sql("compressing stored items"))?;
            self.plain_rows.lock().expect("store counter lock")[slot] = 0;
        }
        Ok(())
    }

    /// Saves a slice's progress on its own (a refused cursor, a failed read).
    pub fn save_backfill_slice(&self, slice: &BackfillSlice) -> Result<(), StoreError> {
        let conn = self.writer.lock().expect("store writer lock");
        write_slice(&conn, slice, PageCommit::default()).map_err(sql("saving a backfill slice"))
    }

    /// Adds slices `[from, to)` of a source (ones already there are kept as they are).
    pub fn add_backfill_slices(
        &self,
        org: OrgKey,
        source: SourceKind,
        ranges: &[(UnixMs, UnixMs)],
    ) -> Result<(), StoreError> {
        let mut conn = self.writer.lock().expect("store writer lock");
        let tx = conn.transaction().map_err(sql("adding backfill slices"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO backfill_slices (source, from_ms, to_ms, read_from_ms, created_ms, org)
                     VALUES (?1, ?2, ?3, ?2, ?4, ?5)",
                )
                .map_err(sql("adding backfill slices"))?;
            let now = UnixMs::now().0;
            for (from, to) in ranges {
                stmt.execute(params![source.name(), from.0, to.0, now, org.0])
                    .map_err(sql("adding backfill slices"))?;
            }
        }
        tx.commit().map_err(sql("adding backfill slices"))
    }

    /// Every slice of a source, oldest first.
    pub fn backfill_slices(
        &self,
        org: OrgKey,
        source: SourceKind,
    ) -> Result<Vec<BackfillSlice>, StoreError> {
        let conn = self.writer.lock().expect("store writer lock");
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, from_ms, to_ms, read_from_ms, read_through_ms, cursor, done, pages,
                        requests, inserted, duplicates
                 FROM backfill_slices WHERE source = ?1 AND org = ?2 ORDER BY from_ms, to_ms",
            )
            .map_err(sql("reading backfill slices"))?;
        let rows = stmt
            .query_map(params![source.name(), org.0], |r| {
                Ok(BackfillSlice {
                    id: r.get(0)?,
                    org,
                    source,
                    from: UnixMs(r.get(1)?),
                    to: UnixMs(r.get(2)?),
                    read_from: UnixMs(r.get(3)?),
                    read_through: r.get::<_, Option<i64>>(4)?.map(UnixMs),
                    cursor: r.get(5)?,
                    done: r.get(6)?,
                    pages: r.get(7)?,
                    requests: r.get(8)?,
                    inserted: r.get(9)?,
                    duplicates: r.get(10)?,
                })
            })
            .map_err(sql("reading backfill slices"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(sql("reading backfill slices"))
    }

    /// A sink's delivery offset for a source (0 = nothing delivered).
    pub fn delivered_offset(&self, sink: &str, source: SourceKind) -> Result<i64, StoreError> {
        let conn = self.writer.lock().expect("store writer lock");
        conn.query_row(
            "SELECT delivered_seq FROM sink_offsets WHERE sink = ?1 AND source = ?2",
            params![sink, source.name()],
            |r| r.get(0),
        )
        .optional()
        .map(|o| o.unwrap_or(0))
        .map_err(sql("reading a delivery offset"))
    }

    /// The value a sink keeps under `key` (`sink_state`); when there is none yet,
    /// `proposed` is stored and returned, so every later call returns the same value.
    pub fn sink_state_or_insert(
        &self,
        sink: &str,
        key: &str,
        proposed: &str,
    ) -> Result<String, StoreError> {
        let conn = self.writer.lock().expect("store writer lock");
        conn.execute(
            "INSERT OR IGNORE INTO sink_state (sink, key, value) VALUES (?1, ?2, ?3)",
            params![sink, key, proposed],
        )
        .map_err(sql("writing a sink's state"))?;
        conn.query_row(
            "SELECT value FROM sink_state WHERE sink = ?1 AND key = ?2",
            params![sink, key],
            |r| r.get(0),
        )
        .map_err(sql("reading a sink's state"))
    }

    /// The value a sink keeps under `key` (`sink_state`), if any.
    pub fn sink_state(&self, sink: &str, key: &str) -> Result<Option<String>, StoreError> {
        let conn = self.writer.lock().expect("store writer lock");
        conn.query_row(
            "SELECT value FROM sink_state WHERE sink = ?1 AND key = ?2",
            params![sink, key],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql("reading a sink's state"))
    }

    /// Stores `value` under `key` for `sink` (`sink_state`), replacing what was there;
    /// committed (durable) when this returns.
    pub fn set_sink_state(&self, sink: &str, key: &str, value: &str) -> Result<(), StoreError> {
        let conn = self.writer.lock().expect("store writer lock");
        conn.execute(
            "INSERT INTO sink_state (sink, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (sink, key) DO UPDATE SET value = excluded.value",
            params![sink, key, value],
        )
        .map_err(sql("writing a sink's state"))?;
        Ok(())
    }

    /// Starts a sink that has no delivery offset for `source` yet at the newest stored
    /// row, so it receives only rows stored from now on (`start = "now"`). Returns the
    /// rows it skips, or `None` when the sink already had an offset (nothing changes).
    pub fn start_sink_now(
        &self,
        sink: &str,
        source: SourceKind,
    ) -> Result<Option<i64>, StoreError> {
        let mut conn = self.writer.lock().expect("store writer lock");
        let tx = conn.transaction().map_err(sql("starting a sink at now"))?;
        let (newest, rows): (i64, i64) = tx
            .query_row(
                &format!(
                    "SELECT coalesce(max(_seq), 0), count(*) FROM {}",
                    source.table()
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(sql("starting a sink at now"))?;
        let inserted = tx
            .execute(
                "INSERT OR IGNORE INTO sink_offsets (sink, source, delivered_seq, updated_ms, last_error)
                 VALUES (?1, ?2, ?3, ?4, NULL)",
                params![sink, source.name(), newest, UnixMs::now().0],
            )
            .map_err(sql("starting a sink at now"))?;
        tx.commit().map_err(sql("starting a sink at now"))?;
        Ok((inserted == 1).then_some(rows))
    }

    /// Records that a sink's destination acknowledged rows `first..=last` (beyond the
    /// offset, possibly out of order).
    pub fn record_acked(
        &self,
        sink: &str,
        source: SourceKind,
        first: i64,
        last: i64,
    ) -> Result<(), StoreError> {
        let conn = self.writer.lock().expect("store writer lock");
        conn.execute(
            "INSERT OR REPLACE INTO sink_acked (sink, source, first_seq, last_seq)
             VALUES (?1, ?2, ?3, ?4)",
            params![sink, source.name(), first, last],
        )
        .map_err(sql("recording an acknowledgement"))?;
        Ok(())
    }

    /// Acknowledged ranges beyond a sink's offset.
    pub fn acked_ranges(
        &self,
        sink: &str,
        source: SourceKind,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let conn = self.writer.lock().expect("store writer lock");
        let mut stmt = conn
            .prepare_cached(
                "SELECT first_seq, last_seq FROM sink_acked
                 WHERE sink = ?1 AND source = ?2 ORDER BY first_seq",
            )
            .map_err(sql("reading acknowledgements"))?;
        let rows = stmt
            .query_map(params![sink, source.name()], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(sql("reading acknowledgements"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(sql("reading acknowledgements"))
    }

    /// Moves a sink's offset forward to `seq` (never backwards), forgetting the
    /// acknowledged ranges it passed.
    pub fn advance_offset(
        &self,
        sink: &str,
        source: SourceKind,
        seq: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.writer.lock().expect("store writer lock");
        let tx = conn
            .transaction()
            .map_err(sql("advancing a delivery offset"))?;
        advance_offset_tx(&tx, sink, source, seq).map_err(sql("advancing a delivery offset"))?;
        tx.commit().map_err(sql("advancing a delivery offset"))?;
        Ok(())
    }

    /// Sets rows aside for a sink (a destination that will never accept them as they
    /// are) and, in the same transaction, marks them as done for the sink's offset and
    /// moves the offset to `offset` if given. A row set aside before (a retry that failed
    /// again) gets the new reason, one more attempt, and leaves the retry queue.
    pub fn dead_letter(
        &self,
        sink: &str,
        source: SourceKind,
        rows: &[(i64, String)],
        offset: Option<i64>,
    ) -> Result<(), StoreError> {
        let what = "setting rows aside (dead letters)";
        let mut conn = self.writer.lock().expect("store writer lock");
        let tx = conn.transaction().map_err(sql(what))?;
        let now = UnixMs::now().0;
        for (seq, reason) in rows {
            tx.execute(
                "INSERT INTO dead_letters (sink, source, seq, reason, first_ms, last_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                 ON CONFLICT (sink, source, seq) DO UPDATE SET reason = excluded.reason,
                   last_ms = excluded.last_ms, attempts = attempts + 1, requeued = 0",
                params![sink, source.name(), seq, reason, now],
            )
            .map_err(sql(what))?;
            tx.execute(
                "INSERT OR REPLACE INTO sink_acked (sink, source, first_seq, last_seq)
                 SELECT ?1, ?2, ?3, ?3
                 WHERE ?3 > coalesce((SELECT delivered_seq FROM sink_offsets
                                      WHERE sink = ?1 AND source = ?2), 0)",
                params![sink, source.name(), seq],
            )
            .map_err(sql(what))?;
        }
        if let Some(offset) = offset {
            advance_offset_tx(&tx, sink, source, offset).map_err(sql(what))?;
        }
        tx.commit().map_err(sql(what))
    }

    /// Rows of `source` re-queued for `sink` by `deadletter retry`, in `_seq` order, at
    /// most `limit`. Entries whose row is gone from the table (deleted by hand) are
    /// dropped, with a warning.
    pub fn requeued_rows(
        &self,
        sink: &str,
        source: SourceKind,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let what = "reading re-queued dead letters";
        let gone: Vec<i64> = {
            let conn = self.writer.lock().expect("store writer lock");
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT d.seq FROM dead_letters d LEFT JOIN {} t ON t._seq = d.seq
                     WHERE d.sink = ?1 AND d.source = ?2 AND d.requeued = 1 AND t._seq IS NULL",
                    source.table()
                ))
                .map_err(sql(what))?;
            let rows = stmt
                .query_map(params![sink, source.name()], |r| r.get(0))
                .map_err(sql(what))?;
            rows.collect::<Result<Vec<i64>, _>>().map_err(sql(what))?
        };
        if !gone.is_empty() {
            tracing::warn!(sink, source = %source, rows = ?gone, "re-queued dead letters whose rows are no longer in the store; dropping the entries");
            let conn = self.writer.lock().expect("store writer lock");
            for seq in &gone {
                conn.execute(
                    "DELETE FROM dead_letters WHERE sink = ?1 AND source = ?2 AND seq = ?3",
                    params![sink, source.name(), seq],
                )
                .map_err(sql(what))?;
            }
        }
        let conn = self.writer.lock().expect("store writer lock");
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT t._seq, t._raw, (SELECT org_id FROM orgs WHERE orgs.key = t._org)
                 FROM dead_letters d JOIN {} t ON t._seq = d.seq
                 WHERE d.sink = ?1 AND d.source = ?2 AND d.requeued = 1
                 ORDER BY t._seq LIMIT ?3",
                raw::rows_table(source)
            ))
            .map_err(sql(what))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut decoder = self.codec.decoder();
        let mut rows = stmt
            .query(params![sink, source.name(), limit])
            .map_err(sql(what))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(sql(what))? {
            out.push(outbox_row(r, &mut decoder)?);
        }
        Ok(out)
    }

    /// Removes the dead-letter entries of re-queued rows `first..=last` the destination
    /// has now accepted.
    pub fn clear_dead_letters(
        &self,
        sink: &str,
        source: SourceKind,
        first: i64,
        last: i64,
    ) -> Result<u64, StoreError> {
        let conn = self.writer.lock().expect("store writer lock");
        conn.execute(
            "DELETE FROM dead_letters WHERE sink = ?1 AND source = ?2 AND requeued = 1
               AND seq BETWEEN ?3 AND ?4",
            params![sink, source.name(), first, last],
        )
        .map(|n| n as u64)
        .map_err(sql("clearing delivered dead letters"))
    }

    #[cfg(test)]
    fn requeue_for_test(&self, sink: &str, source: SourceKind, seq: i64) -> Result<(), StoreError> {
        let conn = self.writer.lock().expect("store writer lock");
        conn.execute(
            "UPDATE dead_letters SET requeued = 1 WHERE sink = ?1 AND source = ?2 AND seq = ?3",
            params![sink, source.name(), seq],
        )
        .map(|_| ())
        .map_err(sql("re-queueing"))
    }

    /// Dead-lettered rows per sink and source (for metrics).
    pub fn dead_letter_counts(&self) -> Result<Vec<DeadLetterCount>, StoreError> {
        let conn = self.reader.lock().expect("store reader lock");
        dead_letter_counts(&conn)
    }

    /// Records a delivery failure on the sink's offset row (shown by `status`).
    pub fn record_sink_error(
        &self,
        sink: &str,
        source: SourceKind,
        message: &str,
    ) -> Result<(), StoreError> {
        let conn = self.writer.lock().expect("store writer lock");
        conn.execute(
            "INSERT INTO sink_offsets (sink, source, delivered_seq, updated_ms, last_error)
             VALUES (?1, ?2, 0, ?3, ?4)
             ON CONFLICT (sink, source) DO UPDATE SET last_error = excluded.last_error,
               updated_ms = excluded.updated_ms",
            params![sink, source.name(), UnixMs::now().0, message],
        )
        .map_err(sql("recording a delivery error"))?;
        Ok(())
    }

    /// Up to `limit` rows past `after_seq`, in `_seq` order.
    pub fn read_outbox(
        &self,
        source: SourceKind,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let conn = self.reader.lock().expect("store reader lock");
        let sql_text = format!(
            "SELECT _seq, _raw, (SELECT org_id FROM orgs WHERE orgs.key = _org)
             FROM {} WHERE _seq > ?1 ORDER BY _seq LIMIT ?2",
            raw::rows_table(source)
        );
        let mut stmt = conn
            .prepare_cached(&sql_text)
            .map_err(sql("preparing the outbox read"))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut decoder = self.codec.decoder();
        let mut rows = stmt
            .query(params![after_seq, limit])
            .map_err(sql("reading the outbox"))?;
        let mut out = Vec::with_capacity(usize::try_from(limit).unwrap_or(0).min(4096));
        while let Some(r) = rows.next().map_err(sql("reading the outbox"))? {
            out.push(outbox_row(r, &mut decoder)?);
        }
        Ok(out)
    }

    /// Rows of `source` that `sink` has not delivered yet.
    pub fn pending(&self, sink: &str, source: SourceKind) -> Result<i64, StoreError> {
        Ok(self.sink_progress(sink, source)?.pending)
    }

    /// Rows of `source` that `sink` has delivered and has still to deliver.
    pub fn sink_progress(
        &self,
        sink: &str,
        source: SourceKind,
    ) -> Result<SinkProgress, StoreError> {
        let conn = self.reader.lock().expect("store reader lock");
        sink_progress(&conn, sink, source)
    }

    /// Rows, highest `_seq` and newest event time of a source's table.
    pub fn table_stats(&self, source: SourceKind) -> Result<TableStats, StoreError> {
        let conn = self.reader.lock().expect("store reader lock");
        table_stats(&conn, source)
    }
}

/// An organisation as the config names it: its label and its Miro organisation id
/// (unknown for a single `[miro]` without `org_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgIdentity {
    pub name: String,
    pub org_id: Option<String>,
}

/// The organisation the store knows under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOrg {
    pub key: OrgKey,
    pub name: String,
    pub org_id: Option<String>,
}

/// Every organisation of the store, by key (a store before step 11 has none).
pub fn stored_orgs(conn: &Connection) -> Result<Vec<StoredOrg>, StoreError> {
    let exists: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'orgs'",
            [],
            |r| r.get(0),
        )
        .map_err(sql("reading the organisations"))?;
    if !exists {
        return Ok(Vec::new());
    }
    let mut stmt = conn
        .prepare("SELECT key, name, org_id FROM orgs ORDER BY key")
        .map_err(sql("reading the organisations"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(StoredOrg {
                key: OrgKey(r.get(0)?),
                name: r.get(1)?,
                org_id: r.get(2)?,
            })
        })
        .map_err(sql("reading the organisations"))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(sql("reading the organisations"))
}

impl Store {
    /// Finds (or adds) the store's key of each organisation of the config, in order.
    ///
    /// An organisation is the same one as before when its `org_id` is, whatever its
    /// `name` now (the name is then updated); otherwise it is the stored organisation of
    /// the same name, whose id is set (a store from before organisations, a `[miro]`
    /// without `org_id`) or corrected (with a warning) now. `named` (the config has
    /// `[[orgs]]`): an organisation without an id that already collected must be claimed
    /// by name, or its items would be collected again under another key.
    pub fn register_orgs(
        &self,
        orgs: &[OrgIdentity],
        named: bool,
    ) -> Result<Vec<OrgKey>, StoreError> {
        let mut conn = self.writer.lock().expect("store writer lock");
        let tx = conn
            .transaction()
            .map_err(sql("registering the organisations"))?;
        let keys = register_orgs(&tx, orgs, named).map_err(|e| match e {
            RegisterError::Sql(cause) => StoreError::Sql {
                what: "registering the organisations",
                cause,
            },
            RegisterError::Mismatch(message) => StoreError::Orgs {
                path: self.path.clone(),
                message,
            },
        })?;
        tx.commit().map_err(sql("registering the organisations"))?;
        Ok(keys)
    }
}

enum RegisterError {
    Sql(rusqlite::Error),
    Mismatch(String),
}

impl From<rusqlite::Error> for RegisterError {
    fn from(e: rusqlite::Error) -> Self {
        RegisterError::Sql(e)
    }
}

fn register_orgs(
    tx: &Connection,
    orgs: &[OrgIdentity],
    named: bool,
) -> Result<Vec<OrgKey>, RegisterError> {
    let by_id = |id: &str| -> rusqlite::Result<Option<(i64, String)>> {
        tx.query_row("SELECT key, name FROM orgs WHERE org_id = ?1", [id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
    };
    let by_name = |name: &str| -> rusqlite::Result<Option<(i64, Option<String>)>> {
        tx.query_row(
            "SELECT key, org_id FROM orgs WHERE name = ?1",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
    };
    let now = UnixMs::now().0;
    let mut keys = Vec::with_capacity(orgs.len());
    for org in orgs {
        let key = match &org.org_id {
            Some(id) => match by_id(id)? {
                Some((key, name)) => {
                    if name != org.name {
                        if let Some((other, _)) = by_name(&org.name)? {
                            return Err(RegisterError::Mismatch(format!(
                                "organisation {id} is stored as `{name}`, and the name `{}` \
                                 belongs to another organisation (key {other}); give `{}` \
                                 another name",
                                org.name, org.name
                            )));
                        }
                        tx.execute(
                            "UPDATE orgs SET name = ?2 WHERE key = ?1",
                            params![key, org.name],
                        )?;
                    }
                    key
                }
                None => match by_name(&org.name)? {
                    Some((key, None)) => {
                        tx.execute(
                            "UPDATE orgs SET org_id = ?2 WHERE key = ?1",
                            params![key, id],
                        )?;
                        key
                    }
                    Some((key, Some(stored))) => {
                        // The name stays with its rows: a corrected `org_id` (a typo, or
                        // `[miro]`'s id set right) relabels them. The token decides which
                        // organisation is read; `check` compares the two.
                        tracing::warn!(
                            org = %org.name,
                            was = %stored,
                            now = %id,
                            "the organisation's org_id changed in the config; its stored rows now show the new id"
                        );
                        tx.execute(
                            "UPDATE orgs SET org_id = ?2 WHERE key = ?1",
                            params![key, id],
                        )?;
                        key
                    }
                    None => {
                        tx.execute(
                            "INSERT INTO orgs (name, org_id, created_ms) VALUES (?1, ?2, ?3)",
                            params![org.name, id, now],
                        )?;
                        tx.last_insert_rowid()
                    }
                },
            },
            None => match by_name(&org.name)? {
                Some((key, _)) => key,
                None => {
                    tx.execute(
                        "INSERT INTO orgs (name, org_id, created_ms) VALUES (?1, NULL, ?2)",
                        params![org.name, now],
                    )?;
                    tx.last_insert_rowid()
                }
            },
        };
        keys.push(OrgKey(key));
    }
    if named {
        let mut stmt = tx.prepare(
            "SELECT key, name FROM orgs WHERE org_id IS NULL AND (
                 EXISTS (SELECT 1 FROM checkpoints WHERE checkpoints.org = orgs.key)
                 OR EXISTS (SELECT 1 FROM backfill_slices WHERE backfill_slices.org = orgs.key))",
        )?;
        let unclaimed: Vec<(i64, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        if let Some((_, name)) = unclaimed.iter().find(|(k, _)| !keys.contains(&OrgKey(*k))) {
            return Err(RegisterError::Mismatch(format!(
                "it holds items collected with `[miro]` (organisation `{name}`, id not \
                 recorded) that no `[[orgs]]` entry claims; name the entry of that \
                 organisation `{name}` so its rows and checkpoints carry on (or run once \
                 with `org_id` set under `[miro]` before switching to `[[orgs]]`)"
            )));
        }
    }
    Ok(keys)
}

impl Store {
    /// Deletes rows whose event time (or, without one, ingestion time) is before
    /// `cutoff`, but never a row one of `sinks` has not acknowledged yet. Returns the
    /// rows deleted per source.
    pub fn apply_retention(
        &self,
        cutoff: UnixMs,
        sinks: &[String],
    ) -> Result<Vec<(SourceKind, u64)>, StoreError> {
        let mut out = Vec::new();
        for source in SourceKind::ALL {
            let mut limit = i64::MAX;
            for sink in sinks {
                limit = limit.min(self.delivered_offset(sink, source)?);
            }
            let conn = self.writer.lock().expect("store writer lock");
            // A dead-lettered row is behind its sink's offset but not delivered: keep it.
            let n = conn
                .execute(
                    &format!(
                        "DELETE FROM {} WHERE coalesce(TimeGenerated, _ingested_at) < ?1 AND _seq <= ?2
                           AND _seq NOT IN (SELECT seq FROM dead_letters WHERE source = ?3)",
                        raw::rows_table(source)
                    ),
                    params![cutoff.to_iso(), limit, source.name()],
                )
                .map_err(sql("applying retention"))?;
            // The detection aggregates of windows whose rows are gone go with them.
            crate::detect::eval::forget_windows_before(&conn, source, cutoff)
                .map_err(sql("applying retention"))?;
            // What `status` says of rows stored with some columns underived goes with them
            // (the note of the organisation's own row: another's of the same id is not it).
            conn.execute(
                &format!(
                    "DELETE FROM partial_rows WHERE source = ?1 AND stored_ms < ?2
                       AND NOT EXISTS (SELECT 1 FROM {} t
                                       WHERE t.id = partial_rows.id AND t._org = partial_rows.org)",
                    raw::rows_table(source)
                ),
                params![source.name(), cutoff.0],
            )
            .map_err(sql("applying retention"))?;
            out.push((source, n as u64));
        }
        Ok(out)
    }

    /// Deletes alerts raised before `cutoff` that every sink in `alert_sinks` (the sinks
    /// that take alerts) has had. Returns how many.
    pub fn apply_alert_retention(
        &self,
        cutoff: UnixMs,
        alert_sinks: &[String],
    ) -> Result<u64, StoreError> {
        let conn = self.writer.lock().expect("store writer lock");
        let mut limit = i64::MAX;
        for sink in alert_sinks {
            let offset: Option<i64> = conn
                .query_row(
                    "SELECT delivered_seq FROM sink_offsets WHERE sink = ?1 AND source = ?2",
                    params![sink, crate::detect::deliver::ALERTS_STREAM],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql("applying alert retention"))?;
            limit = limit.min(offset.unwrap_or(0));
        }
        let n = conn
            .execute(
                "DELETE FROM alerts WHERE raised_at < ?1 AND seq <= ?2",
                params![cutoff.to_iso(), limit],
            )
            .map_err(sql("applying alert retention"))?;
        Ok(n as u64)
    }
}

/// A source's checkpoint on `conn`.
fn read_checkpoint(
    conn: &Connection,
    org: OrgKey,
    source: SourceKind,
) -> Result<Option<Checkpoint>, StoreError> {
    conn.query_row(
        "SELECT watermark_ms, watermark_polled_ms, window_from_ms, window_to_ms,
                window_started_ms, cursor, pages_total, requests_total,
                last_success_ms, last_error, last_error_ms, window_read_through_ms,
                reread_through_ms, window_reread
         FROM checkpoints WHERE source = ?1 AND org = ?2",
        params![source.name(), org.0],
        |r| {
            let from: Option<i64> = r.get(2)?;
            let to: Option<i64> = r.get(3)?;
            let started: Option<i64> = r.get(4)?;
            let window = match (from, to) {
                (Some(from), Some(to)) => Some(WindowProgress {
                    from: UnixMs(from),
                    to: UnixMs(to),
                    started: UnixMs(started.unwrap_or(from)),
                    read_through: r.get::<_, Option<i64>>(11)?.map(UnixMs),
                    cursor: r.get(5)?,
                    reread: r.get(13)?,
                }),
                _ => None,
            };
            Ok(Checkpoint {
                org,
                source,
                watermark: UnixMs(r.get(0)?),
                watermark_polled: UnixMs(r.get(1)?),
                reread_through: r.get::<_, Option<i64>>(12)?.map(UnixMs),
                window,
                pages_total: r.get(6)?,
                requests_total: r.get(7)?,
                last_success: r.get::<_, Option<i64>>(8)?.map(UnixMs),
                last_error: r.get(9)?,
                last_error_at: r.get::<_, Option<i64>>(10)?.map(UnixMs),
            })
        },
    )
    .optional()
    .map_err(sql("reading a checkpoint"))
}

/// An outbox row from a statement selecting `_seq`, the stored `_raw` and the
/// organisation id.
fn outbox_row(r: &rusqlite::Row<'_>, decoder: &mut raw::Decoder) -> Result<OutboxRow, StoreError> {
    let seq: i64 = r.get(0).map_err(sql("reading the outbox"))?;
    let stored = r.get_ref(1).map_err(sql("reading the outbox"))?;
    let raw = decoder
        .decode(stored)
        .map_err(|cause| StoreError::Raw { seq, cause })?;
    let org_id = r.get(2).map_err(sql("reading the outbox"))?;
    Ok(OutboxRow { seq, raw, org_id })
}

/// How many stored rows have only some columns derived, per organisation and source
/// (one pass over `partial_rows`; none for a source without such rows).
pub fn partial_row_counts(
    conn: &Connection,
) -> Result<std::collections::HashMap<(OrgKey, SourceKind), i64>, StoreError> {
    let what = "counting partly derived rows";
    // A store last written by an older version (opened read-only) may have no such table,
    // or one without `org` (its rows all belong to organisation 1, as the step makes them).
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('partial_rows')")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(sql(what))?;
    let mut out = std::collections::HashMap::new();
    if columns.is_empty() {
        return Ok(out);
    }
    let org = if columns.iter().any(|c| c == "org") {
        "org"
    } else {
        "1"
    };
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {org}, source, count(*) FROM partial_rows GROUP BY 1, 2"
        ))
        .map_err(sql(what))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(sql(what))?;
    for row in rows {
        let (org, source, n) = row.map_err(sql(what))?;
        if let Some(source) = SourceKind::from_name(&source) {
            out.insert((OrgKey(org), source), n);
        }
    }
    Ok(out)
}

/// Rows of a source stored for each organisation, in one pass over the stored table
/// (`status` with `[[orgs]]`); an organisation without rows is not listed.
pub fn org_row_counts(
    conn: &Connection,
    source: SourceKind,
) -> Result<std::collections::HashMap<OrgKey, i64>, StoreError> {
    let what = "counting each organisation's rows";
    let mut stmt = conn
        .prepare(&format!(
            "SELECT _org, count(*) FROM {} GROUP BY _org",
            raw::rows_table(source)
        ))
        .map_err(sql(what))?;
    let rows = stmt
        .query_map([], |r| Ok((OrgKey(r.get(0)?), r.get::<_, i64>(1)?)))
        .map_err(sql(what))?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql(what))
}

/// Rows, highest `_seq` and newest event time of a source's table.
pub fn table_stats(conn: &Connection, source: SourceKind) -> Result<TableStats, StoreError> {
    conn.query_row(
        &format!(
            "SELECT count(*), coalesce(max(_seq), 0), max(TimeGenerated) FROM {}",
            source.table()
        ),
        [],
        |r| {
            Ok(TableStats {
                rows: r.get(0)?,
                max_seq: r.get(1)?,
                newest: r.get(2)?,
            })
        },
    )
    .map_err(sql("counting rows"))
}

/// Dead-lettered rows of one sink and source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterCount {
    pub sink: String,
    pub source: SourceKind,
    pub rows: i64,
    /// Of those, waiting to be sent again (`deadletter retry`).
    pub requeued: i64,
}

/// One dead-lettered row (for `deadletter list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: i64,
    pub sink: String,
    pub source: SourceKind,
    pub seq: i64,
    /// The Miro id of the row (`None` if the row is gone from the table).
    pub miro_id: Option<String>,
    /// The Miro organisation of the row (`_org_id`: ids are unique only per
    /// organisation; `None` if unknown or the row is gone).
    pub org_id: Option<String>,
    pub reason: String,
    pub first: UnixMs,
    pub last: UnixMs,
    pub attempts: i64,
    pub requeued: bool,
}

/// True when the store has the dead-letter table (a store older than this build that
/// was never opened by it has not).
fn has_dead_letters(conn: &Connection) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'dead_letters'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .map_err(sql("looking for the dead-letter table"))
}

/// Dead-lettered rows per sink and source.
pub fn dead_letter_counts(conn: &Connection) -> Result<Vec<DeadLetterCount>, StoreError> {
    let what = "counting dead letters";
    if !has_dead_letters(conn)? {
        return Ok(Vec::new());
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT sink, source, count(*), sum(requeued) FROM dead_letters
             GROUP BY sink, source ORDER BY sink, source",
        )
        .map_err(sql(what))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .map_err(sql(what))?;
    let mut out = Vec::new();
    for row in rows {
        let (sink, source, rows, requeued) = row.map_err(sql(what))?;
        if let Some(source) = SourceKind::from_name(&source) {
            out.push(DeadLetterCount {
                sink,
                source,
                rows,
                requeued,
            });
        }
    }
    Ok(out)
}

/// Dead-lettered rows, of one sink or all, oldest first; at most `limit` of them (the
/// oldest), so that listing a stream whose every row was refused stays bounded in memory.
pub fn dead_letters(
    conn: &Connection,
    sink: Option<&str>,
    limit: Option<u64>,
) -> Result<Vec<DeadLetter>, StoreError> {
    let what = "listing dead letters";
    if !has_dead_letters(conn)? {
        return Ok(Vec::new());
    }
    // SQLite reads a negative LIMIT as "no limit".
    let sql_limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    // A store from before organisations (opened read-only) has no `_org_id`.
    let org_id = if stored_orgs(conn)?.is_empty() {
        "NULL"
    } else {
        "t._org_id"
    };
    let mut out = Vec::new();
    for source in SourceKind::ALL {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT d.id, d.sink, d.seq, t.id, d.reason, d.first_ms, d.last_ms, d.attempts,
                        d.requeued, {org_id}
                 FROM dead_letters d LEFT JOIN {} t ON t._seq = d.seq
                 WHERE d.source = ?1 AND (?2 IS NULL OR d.sink = ?2)
                 ORDER BY d.first_ms, d.id LIMIT ?3",
                source.table()
            ))
            .map_err(sql(what))?;
        let rows = stmt
            .query_map(params![source.name(), sink, sql_limit], |r| {
                Ok(DeadLetter {
                    id: r.get(0)?,
                    sink: r.get(1)?,
                    source,
                    seq: r.get(2)?,
                    miro_id: r.get(3)?,
                    reason: r.get(4)?,
                    first: UnixMs(r.get(5)?),
                    last: UnixMs(r.get(6)?),
                    attempts: r.get(7)?,
                    requeued: r.get(8)?,
                    org_id: r.get(9)?,
                })
            })
            .map_err(sql(what))?;
        for row in rows {
            out.push(row.map_err(sql(what))?);
        }
    }
    out.sort_by_key(|d| (d.first, d.id));
    if let Some(n) = limit {
        out.truncate(usize::try_from(n).unwrap_or(usize::MAX));
    }
    Ok(out)
}

/// Re-queues dead-lettered rows for delivery (`deadletter retry`): of one sink or all,
/// `ids` (dead-letter ids) or all of them. Works beside a running `mirotrail run` (one
/// short write transaction; the collector's lock is not needed). Returns how many.
pub fn requeue_dead_letters(
    path: &Path,
    sink: Option<&str>,
    ids: Option<&[i64]>,
) -> Result<u64, StoreError> {
    let what = "re-queueing dead letters";
    if !path.exists() {
        return Err(StoreError::Open {
            path: path.to_path_buf(),
            cause: rusqlite::Error::InvalidPath(path.to_path_buf()),
        });
    }
    let mut conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(|cause| {
            StoreError::Open {
                path: path.to_path_buf(),
                cause,
            }
        })?;
    configure(&conn).map_err(|cause| StoreError::Open {
        path: path.to_path_buf(),
        cause,
    })?;
    if !has_dead_letters(&conn)? {
        return Ok(0);
    }
    let tx = conn.transaction().map_err(sql(what))?;
    let mut n = 0;
    match ids {
        None => {
            n += tx
                .execute(
                    "UPDATE dead_letters SET requeued = 1 WHERE (?1 IS NULL OR sink = ?1)",
                    params![sink],
                )
                .map_err(sql(what))?;
        }
        Some(ids) => {
            for id in ids {
                n += tx
                    .execute(
                        "UPDATE dead_letters SET requeued = 1
                         WHERE id = ?1 AND (?2 IS NULL OR sink = ?2)",
                        params![id, sink],
                    )
                    .map_err(sql(what))?;
            }
        }
    }
    tx.commit().map_err(sql(what))?;
    Ok(n as u64)
}

fn advance_offset_tx(
    tx: &Connection,
    sink: &str,
    source: SourceKind,
    seq: i64,
) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM sink_acked WHERE sink = ?1 AND source = ?2 AND last_seq <= ?3",
        params![sink, source.name(), seq],
    )?;
    tx.execute(
        "INSERT INTO sink_offsets (sink, source, delivered_seq, updated_ms, last_error)
         VALUES (?1, ?2, ?3, ?4, NULL)
         ON CONFLICT (sink, source) DO UPDATE SET
           delivered_seq = max(delivered_seq, excluded.delivered_seq),
           updated_ms = excluded.updated_ms, last_error = NULL",
        params![sink, source.name(), seq, UnixMs::now().0],
    )?;
    Ok(())
}

/// An in-memory database with the current schema (rule samples, `rules test`).
pub fn scratch() -> Result<Connection, StoreError> {
    let mut conn = Connection::open_in_memory().map_err(sql("opening a scratch store"))?;
    raw::register_functions(&conn, &RawCodec::new(None))
        .map_err(sql("creating a scratch store"))?;
    schema::migrate(&mut conn).map_err(sql("creating a scratch store"))?;
    Ok(conn)
}

/// Stores API items (their JSON text) as a page commit would: the same transform and
/// insert, without a checkpoint.
pub fn insert_items(
    conn: &mut Connection,
    source: SourceKind,
    raws: &[String],
) -> Result<PageCommit, StoreError> {
    insert_org_items(conn, OrgKey::DEFAULT, source, raws)
}

/// [`insert_items`] for organisation `org` (an `orgs` row with that key must exist).
pub fn insert_org_items(
    conn: &mut Connection,
    org: OrgKey,
    source: SourceKind,
    raws: &[String],
) -> Result<PageCommit, StoreError> {
    let every: Vec<usize> = (0..transform::columns(source).len()).collect();
    let rows: Vec<(StoredRow, &str)> = raws
        .iter()
        .map(|raw| {
            let row = StoredRow::from_row(transform::to_row(source, raw), &every);
            (row, raw.as_str())
        })
        .collect();
    let mut inserts = Inserts::default();
    let tx = conn.transaction().map_err(sql("storing items"))?;
    // Items stay text (no dictionary is trained here): the views read either form.
    let (commit, _) = insert_rows(
        &tx,
        &mut inserts,
        &RawCodec::new(None),
        org,
        source,
        &rows,
        None,
    )?;
    tx.commit().map_err(sql("storing items"))?;
    Ok(commit)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // WAL with `synchronous = NORMAL`: a commit survives the process being killed at any
    // point; a power loss may roll back the last commits, but rows and their checkpoint
    // roll back together, so the collector reads those pages again from Miro (nothing is
    // lost, and sinks at worst get a batch twice). It saves an fsync per page.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

fn check_version(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            cause: source,
        })?;
    let known = schema::latest_version();
    if found > known {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    Ok(())
}

/// Rows inserted by one `INSERT` statement ([`insert_rows`]): SQLite's cost of running a
/// statement (its start and end, the `AUTOINCREMENT` counter's read and write) is paid
/// once for them.
const ROWS_PER_INSERT: usize = 32;

/// Inserts a page's rows (`INSERT OR IGNORE`: ids already stored count as duplicates).
/// Returns what was committed and how many new rows were stored as text (their source
/// has no compression dictionary yet).
///
/// A row is stored as the columns of its stored table (`raw::rows_table`: the ones the
/// store keeps, [`stored_columns`]) and `_raw` encoded by
/// the source's dictionary (`raw::Encoder`); the view of the table derives the rest.
/// `encoded` is `_raw` as encoded before the writer lock was taken ([`Store::encode`]):
/// used if it was encoded with the dictionary the source has now, so a row is stored
/// exactly as if it were encoded here; otherwise (none given, a dictionary trained in
/// between) the rows are encoded here.
///
/// `inserts` keeps the prepared `INSERT`s for the next call on the same connection (drop
/// it before the connection: `borrowed`).
fn insert_rows(
    tx: &Connection,
    inserts: &mut Inserts,
    codec: &RawCodec,
    org: OrgKey,
    source: SourceKind,
    rows: &[(StoredRow, &str)],
    encoded: Option<raw::EncodedRaws>,
) -> Result<(PageCommit, usize), StoreError> {
    let mut commit = PageCommit::default();
    let mut plain = 0;
    let columns = transform::columns(source);
    if let Some((row, _)) = rows
        .iter()
        .find(|(row, _)| row.cells.len() != columns.len())
    {
        return Err(StoreError::Sql {
            what: "inserting a row",
            cause: rusqlite::Error::InvalidColumnIndex(row.cells.len()),
        });
    }
    let stored = stored_columns(source);
    let indices: Vec<usize> = stored
        .iter()
        .map(|c| {
            columns
                .iter()
                .position(|k| k == c)
                .expect("a stored column is a table column")
        })
        .collect();
    let width = stored.len() + 3;
    let insert_sql = |rows: usize| {
        let mut sql_text = format!("INSERT OR IGNORE INTO {} (", raw::rows_table(source));
        for c in stored {
            sql_text.push_str(c);
            sql_text.push_str(", ");
        }
        sql_text.push_str("_raw, _ingested_at, _org) VALUES ");
        for r in 0..rows {
            sql_text.push_str(if r == 0 { "(" } else { ", (" });
            for k in 1..=width {
                let sep = if k < width { ", " } else { ")" };
                sql_text.push_str(&format!("?{}{sep}", r * width + k));
            }
        }
        sql_text
    };
    // Prepared once per connection (`inserts`), each statement when a chunk first needs
    // it. Values are bound borrowed (`borrowed`): SQLite does not copy each cell.
    let ingested = UnixMs::now().to_iso();
    let encoded = match encoded {
        Some(e) if e.dictionary == codec.current(source) && e.values.len() == rows.len() => e,
        _ => codec.encode_all(source, rows.iter().map(|(_, raw)| *raw)),
    };
    // The rows go in in the order of their ids, the order of the `UNIQUE (id, _org)`
    // index: each of its pages is visited once, one after another, instead of at random
    // (content log ids are random), so fewer of them leave SQLite's page cache before the
    // commit and are read or spilled again (`docs/store.md`, "Writing rows"). The sort is
    // stable: of two items with one id, the first in the page is still the one stored.
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| rows[a].0.id.cmp(&rows[b].0.id));
    // Every parameter of a statement is bound again for each execution, so none is left
    // over from the last.
    let mut params: Vec<Param<'_>> = Vec::with_capacity(width * ROWS_PER_INSERT);
    for chunk in order.chunks(ROWS_PER_INSERT) {
        let chunk = chunk.iter().map(|&i| (&rows[i], &encoded.values[i]));
        // A whole chunk of compressed, fully derived rows is one statement: the rows it
        // did not insert are the duplicates. Any other row is inserted on its own, to
        // count it as stored as text or to list it as partly derived.
        let together = chunk.len() == ROWS_PER_INSERT
            && chunk.clone().all(|((row, _), encoded)| {
                row.partial.is_none() && matches!(encoded, Some(rusqlite::types::Value::Blob(_)))
            });
        if together {
            let stmt = inserts
                .get(tx, (source, ROWS_PER_INSERT), || {
                    insert_sql(ROWS_PER_INSERT)
                })
                .map_err(sql("preparing the row insert"))?;
            params.clear();
            for ((row, raw), encoded) in chunk {
                push_row(&mut params, &indices, row, raw, encoded, &ingested, org.0);
            }
            let n = stmt.execute(tx, &params).map_err(sql("inserting rows"))?;
            let n = n as u64;
            commit.inserted += n;
            commit.duplicates += ROWS_PER_INSERT as u64 - n;
            continue;
        }
        for ((row, raw), encoded) in chunk {
            params.clear();
            push_row(&mut params, &indices, row, raw, encoded, &ingested, org.0);
            let one = inserts
                .get(tx, (source, 1), || insert_sql(1))
                .map_err(sql("preparing the row insert"))?;
            let n = one.execute(tx, &params).map_err(sql("inserting a row"))?;
            if n == 1 {
                commit.inserted += 1;
                if !matches!(encoded, Some(rusqlite::types::Value::Blob(_))) {
                    plain += 1;
                }
                if let Some(unread) = &row.partial {
                    commit.partial += 1;
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO partial_rows (source, id, unread, stored_ms, org) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .and_then(|mut s| {
                        s.execute(params![source.name(), row.id, unread, UnixMs::now().0, org.0])
                    })
                    .map_err(sql("listing a partly derived row"))?;
                }
            } else {
                commit.duplicates += 1;
            }
        }
    }
    Ok((commit, plain))
}

/// Appends the parameters of one row of [`insert_rows`]' statements: its stored cells,
/// `_raw` (encoded, or the item's text), `_ingested_at` and `_org`.
fn push_row<'p>(
    params: &mut Vec<Param<'p>>,
    indices: &[usize],
    row: &'p StoredRow,
    raw: &'p str,
    encoded: &'p Option<rusqlite::types::Value>,
    ingested: &'p str,
    org: i64,
) {
    params.extend(
        indices
            .iter()
            .map(|&i| row.cell(i, raw).map_or(Param::Null, Param::Text)),
    );
    params.push(match encoded {
        Some(rusqlite::types::Value::Blob(b)) => Param::Blob(b),
        Some(rusqlite::types::Value::Text(t)) => Param::Text(t),
        _ => Param::Text(raw),
    });
    params.push(Param::Text(ingested));
    params.push(Param::Int(org));
}

/// An API item as the store inserts it: [`transform::to_row`]'s id, time and flags, with
/// only the cells of [`stored_columns`] (the views derive the others from `_raw`). What
/// the collector builds for each item of a page before [`insert_rows`].
pub fn stored_row(source: SourceKind, raw: &str) -> StoredRow {
    transform::to_row_keeping(source, raw, stored_indices(source))
}

/// [`stored_row`] of the item that starts `rest` (a page body from the item's `{` on),
/// with the item's length: the page's one parse of the item
/// (`miro::parse_page_reading`). `None` when the item does not take the transform's fast
/// path: [`stored_row`] of the item's text then gives its row.
pub fn stored_row_prefix(source: SourceKind, rest: &str) -> Option<(usize, StoredRow)> {
    transform::to_row_keeping_prefix(source, rest, stored_indices(source))
}

/// The indices in the table's columns of [`stored_columns`].
fn stored_indices(source: SourceKind) -> &'static [usize] {
    static INDICES: std::sync::LazyLock<[Vec<usize>; 3]> = std::sync::LazyLock::new(|| {
        SourceKind::ALL.map(|source| {
            let columns = transform::columns(source);
            stored_columns(source)
                .iter()
                .map(|name| {
                    columns
                        .iter()
                        .position(|c| c == name)
                        .expect("a stored column is a column of its table")
                })
                .collect()
        })
    });
    let slot = SourceKind::ALL
        .iter()
        .position(|s| *s == source)
        .expect("every source is in SourceKind::ALL");
    &INDICES[slot]
}

/// The columns a source's stored table keeps (besides `_seq`, `_raw`, `_ingested_at`):
/// the dedup key, the event time (indexed), what the Sentinel sample queries group by
/// (schema step 10), and what the rule pack, the report and the sample queries read over
/// every row, without an event filter (the stored rule columns step): the view derives
/// the others from `_raw`. Why each is stored: `docs/store.md`.
fn stored_columns(source: SourceKind) -> &'static [&'static str] {
    match source {
        SourceKind::AuditLogs => &[
            "TimeGenerated",
            "id",
            "event",
            "category",
            "createdBy_email",
            "createdBy_id",
            "createdBy_type",
            "context_ip",
            "context_organization_name",
        ],
        SourceKind::ContentLogs => &[
            "TimeGenerated",
            "id",
            "actionType",
            "actor_email",
            "contentId",
        ],
        // `storedAt`: the time the API's windows filter on (an index, like `TimeGenerated`).
        SourceKind::AiInteractionLogs => &[
            "TimeGenerated",
            "id",
            "storedAt",
            "aiFeatureName",
            "actor_email",
        ],
    }
}

/// Re-encoding or rewriting this many rows at open (an upgraded store) is followed by a
/// `VACUUM`.
const COMPACT_VACUUM_ROWS: u64 = 10_000;

/// Writes a slice's progress; its counts grow by `added`.
fn write_slice(
    conn: &Connection,
    slice: &BackfillSlice,
    added: PageCommit,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE backfill_slices SET read_from_ms = ?2, read_through_ms = ?3, cursor = ?4,
             done = ?5, pages = ?6, requests = ?7, inserted = inserted + ?8,
             duplicates = duplicates + ?9,
             done_ms = CASE WHEN ?5 THEN coalesce(done_ms, ?10) ELSE NULL END
         WHERE id = ?1",
    )?
    .execute(params![
        slice.id,
        slice.read_from.0,
        slice.read_through.map(|t| t.0),
        slice.cursor,
        slice.done,
        slice.pages,
        slice.requests,
        i64::try_from(added.inserted).unwrap_or(i64::MAX),
        i64::try_from(added.duplicates).unwrap_or(i64::MAX),
        UnixMs::now().0,
    ])?;
    Ok(())
}

fn take_lock(path: &Path, kind: LockKind) -> Result<std::fs::File, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(match kind {
        LockKind::Collector => ".lock",
        LockKind::Backfill => ".backfill.lock",
    });
    let lock_path = PathBuf::from(lock_path);
    crate::private::tighten_file(&lock_path);
    let file = crate::private::file_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| StoreError::CreateDir {
            path: lock_path.clone(),
            cause: source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => Err(match kind {
            LockKind::Collector => StoreError::Locked {
                path: path.to_path_buf(),
                lock: lock_path,
            },
            LockKind::Backfill => StoreError::BackfillLocked {
                path: path.to_path_buf(),
                lock: lock_path,
            },
        }),
    }
}

fn write_checkpoint(conn: &Connection, cp: &Checkpoint) -> rusqlite::Result<()> {
    let w = cp.window.as_ref();
    conn.prepare_cached(
        "INSERT INTO checkpoints (source, watermark_ms, watermark_polled_ms, window_from_ms,
             window_to_ms, window_started_ms, cursor, pages_total, requests_total,
             last_success_ms, last_error, last_error_ms, window_read_through_ms,
             reread_through_ms, window_reread, org)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
         ON CONFLICT (org, source) DO UPDATE SET
             watermark_ms = excluded.watermark_ms,
             watermark_polled_ms = excluded.watermark_polled_ms,
             window_from_ms = excluded.window_from_ms,
             window_to_ms = excluded.window_to_ms,
             window_started_ms = excluded.window_started_ms,
             cursor = excluded.cursor,
             pages_total = excluded.pages_total,
             requests_total = excluded.requests_total,
             last_success_ms = excluded.last_success_ms,
             last_error = excluded.last_error,
             last_error_ms = excluded.last_error_ms,
             window_read_through_ms = excluded.window_read_through_ms,
             reread_through_ms = excluded.reread_through_ms,
             window_reread = excluded.window_reread",
    )?
    .execute(params![
        cp.source.name(),
        cp.watermark.0,
        cp.watermark_polled.0,
        w.map(|w| w.from.0),
        w.map(|w| w.to.0),
        w.map(|w| w.started.0),
        w.and_then(|w| w.cursor.clone()),
        cp.pages_total,
        cp.requests_total,
        cp.last_success.map(|t| t.0),
        cp.last_error,
        cp.last_error_at.map(|t| t.0),
        w.and_then(|w| w.read_through).map(|t| t.0),
        cp.reread_through.map(|t| t.0),
        w.is_some_and(|w| w.reread),
        cp.org.0,
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_rows_keep_the_stored_columns_as_the_transform_derives_them() {
        // `createdBy.id` is a number beyond 2^53: it stays its exact digits.
        let item = r#"{"id":"e1","createdAt":"2023-09-01T09:30:10.840+0000","storedAt":"2023-09-01T09:31:00Z","actionTime":"2023-09-01T09:30:10Z","event":"sign_in_failed","category":"authentication","actionType":"delete","aiFeatureName":"summarize","contentId":"uXjVOD6LSME=","createdBy":{"email":"ada@acme.example","id":30744573459876543210,"type":"user"},"actor":{"email":"bo@acme.example"},"context":{"ip":"198.18.0.1","organization":{"name":"Acme"}}}"#;
        let audit = stored_row(SourceKind::AuditLogs, item);
        let cell = |name: &str| {
            let i = transform::AUDIT_COLUMNS
                .iter()
                .position(|c| *c == name)
                .unwrap();
            audit.cell(i, item)
        };
        assert_eq!(cell("createdBy_id"), Some("30744573459876543210"));
        assert_eq!(cell("createdBy_type"), Some("user"));
        assert_eq!(cell("context_ip"), Some("198.18.0.1"));
        assert_eq!(cell("context_organization_name"), Some("Acme"));
        for source in SourceKind::ALL {
            let columns = transform::columns(source);
            let row = transform::to_row(source, item);
            let stored = stored_row(source, item);
            let mut kept = 0;
            for (i, column) in columns.iter().enumerate() {
                if stored_columns(source).contains(column) {
                    assert_eq!(
                        stored.cell(i, item),
                        row.cells[i].as_deref(),
                        "{source:?} {column}"
                    );
                    kept += 1;
                } else {
                    assert_eq!(
                        stored.cell(i, item),
                        None,
                        "{source:?} {column} is derived on read"
                    );
                }
            }
            assert_eq!(kept, stored_columns(source).len(), "{source:?}");
            assert_eq!((stored.id, stored.time), (row.id, row.time));
        }
    }

    fn cp(source: SourceKind, watermark: i64, cursor: Option<&str>) -> Checkpoint {
        Checkpoint {
            org: OrgKey::DEFAULT,
            source,
            watermark: UnixMs(watermark),
            watermark_polled: UnixMs(watermark),
            reread_through: Some(UnixMs(watermark)),
            window: cursor.map(|c| WindowProgress {
                from: UnixMs(watermark),
                to: UnixMs(watermark + 1000),
                started: UnixMs(watermark),
                read_through: Some(UnixMs(watermark + 10)),
                cursor: Some(c.to_string()),
                reread: false,
            }),
            pages_total: 1,
            requests_total: 1,
            last_success: None,
            last_error: None,
            last_error_at: None,
        }
    }

    fn rows(ids: &[&str]) -> Vec<(StoredRow, String)> {
        ids.iter()
            .map(|id| {
                let raw = format!(r#"{{"id":"{id}","event":"board_opened","createdAt":"2024-01-01T00:00:00.000Z"}}"#);
                (stored_row(SourceKind::AuditLogs, &raw), raw)
            })
            .collect()
    }

    /// The stored rows of audit items, each with its item's text (as the collector
    /// hands a page to the store).
    fn audit_rows(items: &[String]) -> Vec<(StoredRow, &str)> {
        items
            .iter()
            .map(|raw| (stored_row(SourceKind::AuditLogs, raw), raw.as_str()))
            .collect()
    }

    fn commit(store: &Store, ids: &[&str], checkpoint: &Checkpoint) -> PageCommit {
        let rows = rows(ids);
        let refs: Vec<(StoredRow, &str)> =
            rows.iter().map(|(r, s)| (r.clone(), s.as_str())).collect();
        store
            .commit_page(SourceKind::AuditLogs, &refs, checkpoint)
            .unwrap()
    }

    fn org(name: &str, id: Option<&str>) -> OrgIdentity {
        OrgIdentity {
            name: name.into(),
            org_id: id.map(str::to_string),
        }
    }

    #[test]
    fn a_store_before_organisations_is_converted_and_its_rows_belong_to_the_configured_org() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pre-orgs.db");
        let ids: Vec<String> = (0..50).map(|i| format!("pre-{i}")).collect();
        {
            let mut conn = Connection::open(&path).unwrap();
            raw::register_functions(&conn, &RawCodec::new(None)).unwrap();
            schema::migrate_to(&mut conn, schema::version_before_orgs()).unwrap();
            for id in &ids {
                conn.execute(
                    "INSERT INTO MiroAuditLogs_CL_rows (TimeGenerated, id, _raw, _ingested_at)
                     VALUES ('2024-05-01T00:00:00.000Z', ?1, ?2, '2024-05-01T00:00:00.000Z')",
                    params![id, format!(r#"{{"id":"{id}"}}"#)],
                )
                .unwrap();
            }
            // Retention removed the newest rows: `_seq` continues from the counter.
            conn.execute("DELETE FROM MiroAuditLogs_CL_rows WHERE _seq > 45", [])
                .unwrap();
            conn.execute(
                "INSERT INTO checkpoints (source, watermark_ms, watermark_polled_ms, cursor,
                     window_from_ms, window_to_ms)
                 VALUES ('audit_logs', 77, 78, 'c-1', 70, 90)",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO backfill_slices (source, from_ms, to_ms, read_from_ms, created_ms)
                 VALUES ('audit_logs', 0, 10, 0, 1)",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO alerts (rule_id, rule, rule_name, severity, source, group_key,
                     window_start, window_end, hits, first_seen, last_seen, raised_at)
                 VALUES ('r', 'r', 'R', 'high', 'audit_logs', 'g', 'w', 'w', 1, 'a', 'b', 'c')",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let cp = store
            .load_checkpoint(OrgKey::DEFAULT, SourceKind::AuditLogs)
            .unwrap()
            .expect("the checkpoint is kept");
        assert_eq!(cp.watermark, UnixMs(77));
        assert_eq!(
            cp.window.as_ref().and_then(|w| w.cursor.as_deref()),
            Some("c-1")
        );
        assert_eq!(
            store
                .backfill_slices(OrgKey::DEFAULT, SourceKind::AuditLogs)
                .unwrap()
                .len(),
            1
        );
        // A config with several organisations must claim the one collected before.
        let err = store
            .register_orgs(&[org("emea", Some("111"))], true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`default`") && err.contains("[[orgs]]"),
            "{err}"
        );
        // The single `[miro]` config fills in its id.
        let keys = store
            .register_orgs(&[org(crate::config::DEFAULT_ORG_NAME, Some("222"))], false)
            .unwrap();
        assert_eq!(keys, vec![OrgKey::DEFAULT]);
        // Re-reading an old id for the same organisation is a duplicate; the next row
        // gets a `_seq` past the old counter.
        let again = commit(&store, &["pre-3", "new-1"], &cp);
        assert_eq!((again.inserted, again.duplicates), (1, 1));
        drop(store);
        let conn = Store::open_read_only(&path).unwrap();
        let (rows, orgs, max_seq): (i64, String, i64) = conn
            .query_row(
                "SELECT count(*), group_concat(DISTINCT _org_id), max(_seq) FROM MiroAuditLogs_CL",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((rows, orgs.as_str()), (46, "222"));
        assert!(
            max_seq > 50,
            "`_seq` {max_seq} continues past the old counter (50)"
        );
        let alert_org: i64 = conn
            .query_row("SELECT org FROM alerts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(alert_org, 1);
        // Later, under `[[orgs]]`: the same id keeps its rows under its new name.
        let store = Store::open(&path).unwrap();
        let keys = store
            .register_orgs(&[org("emea", Some("333")), org("hq", Some("222"))], true)
            .unwrap();
        assert_eq!(keys[1], OrgKey::DEFAULT);
        assert_ne!(keys[0], OrgKey::DEFAULT);
        // A corrected id keeps the name's rows (a typo fixed in the config).
        let fixed = store
            .register_orgs(&[org("hq", Some("444")), org("emea", Some("333"))], true)
            .unwrap();
        assert_eq!(fixed, vec![keys[1], keys[0]]);
        // A name already taken by another stored organisation cannot be moved onto this id.
        let err = store
            .register_orgs(&[org("emea", Some("444"))], true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`emea`") && err.contains("444"), "{err}");
    }

    #[test]
    fn the_same_id_in_two_organisations_is_two_rows_and_checkpoints_are_apart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("two.db")).unwrap();
        let keys = store
            .register_orgs(&[org("a", Some("1")), org("b", Some("2"))], true)
            .unwrap();
        let (a, b) = (keys[0], keys[1]);
        assert_ne!(a, b);
        let mut cp_a = cp(SourceKind::AuditLogs, 10, Some("ca"));
        cp_a.org = a;
        let mut cp_b = cp(SourceKind::AuditLogs, 20, Some("cb"));
        cp_b.org = b;
        let first = commit(&store, &["x1", "x2"], &cp_a);
        let second = commit(&store, &["x1", "x2"], &cp_b);
        assert_eq!((first.inserted, second.inserted), (2, 2));
        // Within one organisation, the id deduplicates as before.
        let again = commit(&store, &["x1"], &cp_b);
        assert_eq!((again.inserted, again.duplicates), (0, 1));
        let load = |k| {
            store
                .load_checkpoint(k, SourceKind::AuditLogs)
                .unwrap()
                .unwrap()
        };
        assert_eq!(load(a).watermark, UnixMs(10));
        assert_eq!(load(b).watermark, UnixMs(20));
        store
            .add_backfill_slices(a, SourceKind::AuditLogs, &[(UnixMs(0), UnixMs(10))])
            .unwrap();
        store
            .add_backfill_slices(b, SourceKind::AuditLogs, &[(UnixMs(0), UnixMs(10))])
            .unwrap();
        assert_eq!(
            store
                .backfill_slices(a, SourceKind::AuditLogs)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            store
                .backfill_slices(b, SourceKind::AuditLogs)
                .unwrap()
                .len(),
            1
        );
        drop(store);
        let conn = Store::open_read_only(&dir.path().join("two.db")).unwrap();
        let per_org: Vec<(String, i64)> = conn
            .prepare("SELECT _org_id, count(*) FROM MiroAuditLogs_CL GROUP BY _org_id ORDER BY 1")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(per_org, vec![("1".to_string(), 2), ("2".to_string(), 2)]);
    }

    #[test]
    fn migrations_apply_twice_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        {
            let store = Store::open(&path).unwrap();
            commit(&store, &["1"], &cp(SourceKind::AuditLogs, 5, None));
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.table_stats(SourceKind::AuditLogs).unwrap().rows, 1);
        let mut conn = Connection::open(&path).unwrap();
        schema::migrate(&mut conn).unwrap();
        schema::migrate(&mut conn).unwrap();
    }

    #[test]
    fn pages_deduplicate_on_id_and_carry_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).unwrap();
        let c1 = cp(SourceKind::AuditLogs, 10, Some("next"));
        assert_eq!(
            commit(&store, &["1", "2", "3"], &c1),
            PageCommit {
                inserted: 3,
                duplicates: 0,
                partial: 0,
            }
        );
        assert_eq!(
            store
                .load_checkpoint(OrgKey::DEFAULT, SourceKind::AuditLogs)
                .unwrap(),
            Some(c1)
        );
        let c2 = cp(SourceKind::AuditLogs, 20, None);
        assert_eq!(
            commit(&store, &["3", "4", "4"], &c2),
            PageCommit {
                inserted: 1,
                duplicates: 2,
                partial: 0,
            }
        );
        assert_eq!(
            store
                .load_checkpoint(OrgKey::DEFAULT, SourceKind::AuditLogs)
                .unwrap(),
            Some(c2)
        );
        assert_eq!(
            store
                .load_checkpoint(OrgKey::DEFAULT, SourceKind::ContentLogs)
                .unwrap(),
            None
        );
        let out = store.read_outbox(SourceKind::AuditLogs, 0, 10).unwrap();
        // `_seq` grows in commit order (ignored duplicates may leave gaps).
        let seqs: Vec<i64> = out.iter().map(|r| r.seq).collect();
        assert_eq!(seqs.len(), 4);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        assert!(out[3].raw.contains("\"id\":\"4\""));
        assert_eq!(
            store
                .read_outbox(SourceKind::AuditLogs, seqs[1], 1)
                .unwrap()[0]
                .seq,
            seqs[2]
        );
        assert!(out[0].raw.contains("\"id\":\"1\""));
    }

    #[test]
    fn a_sink_state_value_is_replaced_kept_across_reopening_and_apart_per_sink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        {
            let store = Store::open(&path).unwrap();
            assert_eq!(store.sink_state("s3", "k").unwrap(), None);
            store.set_sink_state("s3", "k", "one").unwrap();
            store.set_sink_state("s3", "k", "two").unwrap();
            store.set_sink_state("other", "k", "three").unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.sink_state("s3", "k").unwrap().as_deref(), Some("two"));
        assert_eq!(
            store.sink_state("other", "k").unwrap().as_deref(),
            Some("three")
        );
        assert_eq!(
            store.sink_state_or_insert("s3", "k", "four").unwrap(),
            "two"
        );
    }

    #[test]
    fn offsets_only_move_forward() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).unwrap();
        assert_eq!(
            store.delivered_offset("s", SourceKind::AuditLogs).unwrap(),
            0
        );
        store.advance_offset("s", SourceKind::AuditLogs, 7).unwrap();
        store.advance_offset("s", SourceKind::AuditLogs, 3).unwrap();
        assert_eq!(
            store.delivered_offset("s", SourceKind::AuditLogs).unwrap(),
            7
        );
        store
            .record_sink_error("s", SourceKind::AuditLogs, "down")
            .unwrap();
        assert_eq!(
            store.delivered_offset("s", SourceKind::AuditLogs).unwrap(),
            7
        );
        assert_eq!(
            store
                .delivered_offset("other", SourceKind::AuditLogs)
                .unwrap(),
            0
        );
    }

    #[test]
    fn retention_deletes_old_rows_only_once_every_sink_has_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).unwrap();
        // Six rows at 2024-01-01 (old), then one new row.
        commit(
            &store,
            &["1", "2", "3", "4", "5", "6"],
            &cp(SourceKind::AuditLogs, 1, None),
        );
        let fresh = format!(r#"{{"id":"7","createdAt":"{}"}}"#, UnixMs::now().to_iso());
        let row = stored_row(SourceKind::AuditLogs, &fresh);
        store
            .commit_page(
                SourceKind::AuditLogs,
                &[(row, fresh.as_str())],
                &cp(SourceKind::AuditLogs, 2, None),
            )
            .unwrap();
        let seqs: Vec<i64> = store
            .read_outbox(SourceKind::AuditLogs, 0, 100)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        store
            .advance_offset("a", SourceKind::AuditLogs, seqs[3])
            .unwrap();
        store
            .advance_offset("b", SourceKind::AuditLogs, seqs[6])
            .unwrap();
        let cutoff = UnixMs::parse("2025-01-01T00:00:00Z").unwrap();
        let sinks = vec!["a".to_string(), "b".to_string()];
        let deleted = store.apply_retention(cutoff, &sinks).unwrap();
        assert_eq!(
            deleted[0],
            (SourceKind::AuditLogs, 4),
            "only what sink `a` has too"
        );
        let left: Vec<i64> = store
            .read_outbox(SourceKind::AuditLogs, 0, 100)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(left, seqs[4..].to_vec());
        // Without sinks, age alone decides; the new row stays.
        let deleted = store.apply_retention(cutoff, &[]).unwrap();
        assert_eq!(deleted[0], (SourceKind::AuditLogs, 2));
        assert_eq!(store.table_stats(SourceKind::AuditLogs).unwrap().rows, 1);
    }

    #[test]
    fn retention_takes_the_detection_aggregates_of_the_windows_it_empties() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).unwrap();
        // Sign-in failures of one account, an old burst and a fresh one.
        let now = UnixMs::now();
        let mut items = Vec::new();
        for (n, t) in (0..6)
            .map(|i| UnixMs(now.0 - 30 * 3_600_000 + i * 1000))
            .chain((0..6).map(|i| UnixMs(now.0 - 60_000 + i * 1000)))
            .enumerate()
        {
            items.push(format!(
                r#"{{"id":"f{n}","event":"sign_in_failed","category":"authentication","createdAt":"{}","createdBy":{{"type":"user","id":"ada"}},"context":{{"ip":"198.18.0.1"}}}}"#,
                t.to_iso()
            ));
        }
        let rows: Vec<(StoredRow, &str)> = items
            .iter()
            .map(|i| (stored_row(SourceKind::AuditLogs, i), i.as_str()))
            .collect();
        store
            .commit_page(
                SourceKind::AuditLogs,
                &rows,
                &cp(SourceKind::AuditLogs, 1, None),
            )
            .unwrap();
        let rules = crate::detect::pack().unwrap();
        {
            let mut conn = store.writer.lock().unwrap();
            let tx = conn.transaction().unwrap();
            crate::detect::eval::evaluate_new(&tx, &rules, now).unwrap();
            tx.commit().unwrap();
        }
        let cutoff = UnixMs(now.0 - 6 * 3_600_000);
        // Groups of windows that end by the cutoff (`old`), or after it.
        let groups = |old: bool| -> i64 {
            let conn = store.writer.lock().unwrap();
            conn.query_row(
                &format!(
                    "SELECT count(*) FROM detect_groups
                     WHERE (window_start + (SELECT window_secs FROM detect_plans WHERE id = plan) <= ?1) = {}",
                    i64::from(old)
                ),
                [cutoff.0 / 1000],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert!(groups(true) > 0 && groups(false) > 0);
        store.apply_retention(cutoff, &[]).unwrap();
        assert_eq!(
            groups(true),
            0,
            "the old windows' aggregates go with their rows"
        );
        assert!(groups(false) > 0, "the fresh windows' stay");
    }

    #[test]
    fn retention_keeps_dead_lettered_rows_behind_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).unwrap();
        commit(
            &store,
            &["1", "2", "3", "4"],
            &cp(SourceKind::AuditLogs, 1, None),
        );
        let seqs: Vec<i64> = store
            .read_outbox(SourceKind::AuditLogs, 0, 100)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        store
            .dead_letter(
                "a",
                SourceKind::AuditLogs,
                &[(seqs[1], "too big".into())],
                Some(seqs[3]),
            )
            .unwrap();
        assert_eq!(
            store.delivered_offset("a", SourceKind::AuditLogs).unwrap(),
            seqs[3]
        );
        let cutoff = UnixMs::parse("2025-01-01T00:00:00Z").unwrap();
        let deleted = store.apply_retention(cutoff, &["a".to_string()]).unwrap();
        assert_eq!(deleted[0], (SourceKind::AuditLogs, 3));
        let left = store.read_outbox(SourceKind::AuditLogs, 0, 100).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].seq, seqs[1], "the dead-lettered row stays");
        // Delivered by a retry, it leaves the list and retention may take it.
        store
            .requeue_for_test("a", SourceKind::AuditLogs, seqs[1])
            .unwrap();
        assert_eq!(
            store
                .requeued_rows("a", SourceKind::AuditLogs, 10)
                .unwrap()
                .len(),
            1
        );
        store
            .clear_dead_letters("a", SourceKind::AuditLogs, seqs[1], seqs[1])
            .unwrap();
        let deleted = store.apply_retention(cutoff, &["a".to_string()]).unwrap();
        assert_eq!(deleted[0], (SourceKind::AuditLogs, 1));
    }

    #[test]
    fn retention_takes_the_partial_row_notes_of_deleted_rows_and_old_delivered_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).unwrap();
        commit(&store, &["1", "2"], &cp(SourceKind::AuditLogs, 1, None));
        let seqs: Vec<i64> = store
            .read_outbox(SourceKind::AuditLogs, 0, 100)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        // Row "1" is delivered and old; row "2" is not delivered yet.
        store
            .advance_offset("a", SourceKind::AuditLogs, seqs[0])
            .unwrap();
        {
            let conn = store.writer.lock().unwrap();
            for id in ["1", "2"] {
                conn.execute(
                    "INSERT INTO partial_rows (source, id, unread, stored_ms) VALUES ('audit_logs', ?1, 'x', 0)",
                    [id],
                )
                .unwrap();
            }
            for (window, raised) in [
                ("w1", "2024-01-01T00:00:00Z"),
                ("w2", "2024-01-02T00:00:00Z"),
            ] {
                conn.execute(
                    "INSERT INTO alerts (rule_id, rule, rule_name, severity, source, group_key,
                       window_start, window_end, hits, first_seen, last_seen, raised_at)
                     VALUES ('r', 'r', 'R', 'High', 'audit_logs', 'g', ?1, ?1, 1, ?2, ?2, ?2)",
                    [window, raised],
                )
                .unwrap();
            }
        }
        let count = |sql: &str| -> i64 {
            let conn = store.writer.lock().unwrap();
            conn.query_row(sql, [], |r| r.get(0)).unwrap()
        };
        let cutoff = UnixMs::parse("2025-01-01T00:00:00Z").unwrap();
        store.apply_retention(cutoff, &["a".to_string()]).unwrap();
        assert_eq!(
            count("SELECT count(*) FROM partial_rows WHERE id = '1'"),
            0,
            "the note of the deleted row goes"
        );
        assert_eq!(
            count("SELECT count(*) FROM partial_rows WHERE id = '2'"),
            1,
            "the note of a kept row stays"
        );
        // Alerts: none goes before every alert sink has it.
        let sinks = vec!["f".to_string()];
        assert_eq!(store.apply_alert_retention(cutoff, &sinks).unwrap(), 0);
        let first: i64 = count("SELECT min(seq) FROM alerts");
        {
            let conn = store.writer.lock().unwrap();
            conn.execute(
                "INSERT INTO sink_offsets (sink, source, delivered_seq, updated_ms) VALUES ('f', 'alerts', ?1, 0)",
                [first],
            )
            .unwrap();
        }
        assert_eq!(store.apply_alert_retention(cutoff, &sinks).unwrap(), 1);
        let early = UnixMs::parse("2023-01-01T00:00:00Z").unwrap();
        assert_eq!(
            store.apply_alert_retention(early, &[]).unwrap(),
            0,
            "young enough"
        );
        assert_eq!(store.apply_alert_retention(cutoff, &[]).unwrap(), 1);
    }

    #[test]
    fn setting_a_row_aside_and_moving_the_offset_are_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let store = Store::open(&path).unwrap();
        commit(&store, &["1", "2"], &cp(SourceKind::AuditLogs, 1, None));
        let seqs: Vec<i64> = store
            .read_outbox(SourceKind::AuditLogs, 0, 100)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        // A row set aside beyond a row still pending: recorded as done, offset unmoved.
        store
            .dead_letter("a", SourceKind::AuditLogs, &[(seqs[1], "x".into())], None)
            .unwrap();
        assert_eq!(
            store.acked_ranges("a", SourceKind::AuditLogs).unwrap(),
            vec![(seqs[1], seqs[1])]
        );
        // The dead-letter write fails (its table is gone): the offset does not move either.
        Connection::open(&path)
            .unwrap()
            .execute_batch("DROP TABLE dead_letters")
            .unwrap();
        assert!(
            store
                .dead_letter(
                    "a",
                    SourceKind::AuditLogs,
                    &[(seqs[0], "y".into())],
                    Some(seqs[1])
                )
                .is_err()
        );
        assert_eq!(
            store.delivered_offset("a", SourceKind::AuditLogs).unwrap(),
            0
        );
    }

    /// SQLite keeps a statement journal for a multi-row `INSERT` that may stop halfway: one
    /// that checks a foreign key, or keeps an index whose condition calls a function. The
    /// writer does neither (`docs/store.md`, "Writing rows").
    #[test]
    fn the_writer_checks_no_foreign_key_so_inserts_keep_no_statement_journal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).unwrap();
        let writer = store.writer.lock().unwrap();
        let enforced: bool = writer
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert!(!enforced);
        // No foreign key check is compiled into the row insert.
        for source in SourceKind::ALL {
            let plan: Vec<String> = writer
                .prepare(&format!(
                    "EXPLAIN INSERT OR IGNORE INTO {} (id, _raw, _ingested_at, _org) \
                     VALUES ('a', x'01', '', 1), ('b', x'01', '', 1)",
                    raw::rows_table(source)
                ))
                .unwrap()
                .query_map([], |r| r.get(1))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(plan.iter().any(|op| op == "Insert"), "{plan:?}");
            assert!(
                !plan.iter().any(|op| op.starts_with("Fk")),
                "{source}: {plan:?}"
            );
        }
        drop(writer);
        // A store opened again (the reader's default) still reads the same rows.
        commit(&store, &["a", "b"], &cp(SourceKind::AuditLogs, 1, None));
        let n: i64 = store
            .read("counting", |c| {
                c.query_row("SELECT count(*) FROM MiroAuditLogs_CL", [], |r| r.get(0))
            })
            .unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let _first = Store::open(&path).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("another mirotrail process"));
    }

    #[test]
    fn one_backfill_may_run_beside_the_collector_but_not_two() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let run = Store::open(&path).unwrap();
        let backfill = Store::open_backfill(&path).unwrap();
        let err = Store::open_backfill(&path).unwrap_err();
        assert!(matches!(err, StoreError::BackfillLocked { .. }), "{err}");
        // Both write; the rows deduplicate across the two handles.
        commit(&run, &["1", "2"], &cp(SourceKind::AuditLogs, 5, None));
        backfill
            .add_backfill_slices(
                OrgKey::DEFAULT,
                SourceKind::AuditLogs,
                &[(UnixMs(0), UnixMs(10))],
            )
            .unwrap();
        let mut slice = backfill
            .backfill_slices(OrgKey::DEFAULT, SourceKind::AuditLogs)
            .unwrap()[0]
            .clone();
        slice.done = true;
        slice.pages = 1;
        let rows = rows(&["2", "3"]);
        let refs: Vec<(StoredRow, &str)> =
            rows.iter().map(|(r, s)| (r.clone(), s.as_str())).collect();
        let c = backfill
            .commit_backfill_page(SourceKind::AuditLogs, &refs, &slice)
            .unwrap();
        assert_eq!((c.inserted, c.duplicates), (1, 1));
        assert_eq!(run.table_stats(SourceKind::AuditLogs).unwrap().rows, 3);
    }

    #[test]
    fn a_page_goes_in_in_id_order_and_the_first_of_one_id_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).unwrap();
        // Ids in no order, as content log ids come; enough rows for the dictionary to be
        // trained on the page, so they go in 32 to a statement; one id twice, in two
        // chunks and with two different items.
        let n = 700_u64;
        let mut items: Vec<String> = (0..n)
            .map(|i| {
                let id = (i * 7_919 + 13) % 1_009 * 1_000_003 % 1_000_000_007;
                format!(r#"{{"id":"{id:012}","event":"board_opened","createdAt":"2024-01-01T00:00:00.000Z","details":{{"n":{i}}}}}"#)
            })
            .collect();
        let twice = stored_row(SourceKind::AuditLogs, &items[3]).id;
        items.push(format!(r#"{{"id":"{twice}","event":"second_of_the_id","createdAt":"2024-01-01T00:00:00.000Z"}}"#));
        let rows = audit_rows(&items);
        let c = store
            .commit_page(
                SourceKind::AuditLogs,
                &rows,
                &cp(SourceKind::AuditLogs, 5, None),
            )
            .unwrap();
        assert_eq!((c.inserted, c.duplicates), (n, 1));
        assert!(store.codec.has_dictionary(SourceKind::AuditLogs));
        let conn = store.reader.lock().unwrap();
        let ids: Vec<String> = conn
            .prepare("SELECT id FROM MiroAuditLogs_CL_rows ORDER BY _seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "rows are stored in the order of their ids");
        let event: String = conn
            .query_row(
                "SELECT event FROM MiroAuditLogs_CL WHERE id = ?1",
                [&rows[3].0.id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            event, "board_opened",
            "the first item of an id is the one stored"
        );
    }

    #[test]
    fn backfill_slices_keep_their_progress_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_backfill(&dir.path().join("a.db")).unwrap();
        let ranges = [(UnixMs(0), UnixMs(100)), (UnixMs(100), UnixMs(200))];
        store
            .add_backfill_slices(OrgKey::DEFAULT, SourceKind::AuditLogs, &ranges)
            .unwrap();
        store
            .add_backfill_slices(OrgKey::DEFAULT, SourceKind::AuditLogs, &ranges)
            .unwrap();
        let slices = store
            .backfill_slices(OrgKey::DEFAULT, SourceKind::AuditLogs)
            .unwrap();
        assert_eq!(slices.len(), 2);
        assert_eq!(slices[0].read_from, UnixMs(0));
        assert!(
            store
                .backfill_slices(OrgKey::DEFAULT, SourceKind::ContentLogs)
                .unwrap()
                .is_empty()
        );
        let mut s = slices[1].clone();
        s.cursor = Some("c".into());
        s.read_through = Some(UnixMs(150));
        s.pages = 1;
        let rows = rows(&["1", "2"]);
        let refs: Vec<(StoredRow, &str)> =
            rows.iter().map(|(r, s)| (r.clone(), s.as_str())).collect();
        store
            .commit_backfill_page(SourceKind::AuditLogs, &refs, &s)
            .unwrap();
        let again = &store
            .backfill_slices(OrgKey::DEFAULT, SourceKind::AuditLogs)
            .unwrap()[1];
        assert_eq!(again.cursor.as_deref(), Some("c"));
        assert_eq!(again.inserted, 2);
        assert_eq!(again.covered_ms(), 50);
    }

    /// An item of the audit log in several of the forms Miro sends (times with `+0000`,
    /// big numbers, escapes, whitespace, a missing id, `details` nested past the parser).
    fn varied_item(i: usize) -> String {
        let user = i % 37;
        match i % 9 {
            0 => format!(
                r#"{{"id":"2024-05-01T10:00:00.{i:06}Z#30744573{i:011}-DDB","event":"board_opened","category":"boards","type":"event","createdAt":"2024-05-01T10:{:02}:00.123+0000","createdBy":{{"type":"user","id":"30744573999{user:08}","name":"User {user}","email":"user{user}@example.com"}},"context":{{"ip":"192.0.2.{user}","team":{{"id":"3074457374711061589","name":"Product","type":"team"}},"organization":{{"id":"3074457345821141000","name":"Northwind","type":"organization"}}}},"object":{{"id":"uXjV{i}=","name":"Board {i}"}},"details":{{"role":"VIEWER"}}}}"#,
                i % 60
            ),
            1 => format!(
                r#"{{ "id" : "{i}", "event":"sign_in_succeeded", "createdAt":"2024-05-01T10:00:00Z", "details":{{"big":30744573469876543210123{i},"f":1e400}} }}"#
            ),
            2 => {
                format!(r#"{{"event":"no_id","createdAt":"2024-05-01T10:00:00.5+02:00","n":{i}}}"#)
            }
            3 => format!(
                r#"{{"id":"{i}","event":"café "quoted"","createdBy":{{"email":"üser{user}@example.com"}}}}"#
            ),
            4 => format!(
                r#"{{"id":"{i}","details":{}{}}}"#,
                "[".repeat(200),
                "]".repeat(200)
            ),
            _ => format!(
                r#"{{"id":"{i}","event":"board_exported","category":"boards","createdAt":"2024-05-01T11:00:{:02}.840687+0000","createdBy":{{"email":"user{user}@example.com","id":"{user}"}},"details":{{"format":"pdf"}}}}"#,
                i % 60
            ),
        }
    }

    /// Every column of every row of a Sentinel table (or view), in `_seq` order.
    fn all_rows(conn: &Connection, table: &str) -> Vec<Vec<rusqlite::types::Value>> {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY _seq"))
            .unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| (0..n).map(|i| r.get(i)).collect())
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn an_older_store_is_migrated_to_the_compact_layout_keeping_every_row_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let count = raw::TRAIN_ROWS + 700;
        // A store as the release before the compact layout wrote it: every column stored.
        let (before, old_columns) = {
            let mut conn = Connection::open(&path).unwrap();
            schema::migrate_to(&mut conn, 9).unwrap();
            for source in SourceKind::ALL {
                let columns = transform::columns(source);
                let sql_text = format!(
                    "INSERT OR IGNORE INTO {} ({}, _raw, _ingested_at) VALUES ({})",
                    source.table(),
                    columns.join(", "),
                    (1..=columns.len() + 2)
                        .map(|i| format!("?{i}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                for i in 0..count {
                    let raw = varied_item(i);
                    let row = transform::to_row(source, &raw);
                    let mut values: Vec<&dyn rusqlite::ToSql> = Vec::new();
                    for c in &row.cells {
                        values.push(c);
                    }
                    values.push(&raw);
                    values.push(&"2024-05-02T00:00:00.000Z");
                    conn.execute(&sql_text, values.as_slice()).unwrap();
                }
            }
            // Retention deleted the newest audit rows: `_seq` must still go on from the
            // counter, not from the highest row left.
            conn.execute_batch(
                "DELETE FROM MiroAuditLogs_CL WHERE _seq > (SELECT max(_seq) - 5 FROM MiroAuditLogs_CL)",
            )
            .unwrap();
            let before: Vec<_> = SourceKind::ALL
                .iter()
                .map(|s| all_rows(&conn, s.table()))
                .collect();
            let columns: Vec<Vec<String>> = SourceKind::ALL
                .iter()
                .map(|s| {
                    conn.prepare(&format!("SELECT * FROM {}", s.table()))
                        .unwrap()
                        .column_names()
                        .map(str::to_string)
                        .collect()
                })
                .collect();
            (before, columns)
        };
        let sequence_before: i64 = Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'MiroAuditLogs_CL'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let raw_bytes = |conn: &Connection, table: &str| -> i64 {
            conn.query_row(
                &format!("SELECT sum(length(CAST(_raw AS BLOB))) FROM {table}"),
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        let raw_before = raw_bytes(&Connection::open(&path).unwrap(), "MiroAuditLogs_CL");

        let store = Store::open(&path).unwrap();
        drop(store);
        let conn = Store::open_read_only(&path).unwrap();
        for (i, source) in SourceKind::ALL.iter().enumerate() {
            let columns: Vec<String> = conn
                .prepare(&format!("SELECT * FROM {}", source.table()))
                .unwrap()
                .column_names()
                .map(str::to_string)
                .collect();
            // The same columns in the same order, then the organisation (step 11).
            assert_eq!(
                columns[..columns.len() - 1],
                old_columns[i],
                "{source}: the same columns in the same order"
            );
            assert_eq!(columns.last().map(String::as_str), Some("_org_id"));
            let after = all_rows(&conn, source.table());
            assert_eq!(after.len(), before[i].len(), "{source}: every row kept");
            for (a, b) in after.iter().zip(&before[i]) {
                assert_eq!(
                    &a[..b.len()],
                    &b[..],
                    "{source}: every value kept, `_raw` byte for byte"
                );
            }
            // The items are compressed now.
            let text: i64 = conn
                .query_row(
                    &format!(
                        "SELECT count(*) FROM {} WHERE typeof(_raw) = 'text'",
                        raw::rows_table(*source)
                    ),
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(text, 0, "{source}: every item compressed");
        }
        let raw_after = raw_bytes(&conn, "MiroAuditLogs_CL_rows");
        assert!(
            raw_after * 3 < raw_before,
            "`_raw`: {raw_before} bytes before, {raw_after} after"
        );
        // New rows go on after the old counter, and the store opens again unchanged.
        let store = Store::open(&path).unwrap();
        commit(&store, &["new-1"], &cp(SourceKind::AuditLogs, 1, None));
        let newest = store
            .read_outbox(SourceKind::AuditLogs, sequence_before, 10)
            .unwrap();
        assert_eq!(newest.len(), 1);
        assert!(newest[0].seq > sequence_before);
        assert_eq!(
            store.table_stats(SourceKind::AuditLogs).unwrap().rows,
            i64::try_from(before[0].len()).unwrap() + 1
        );
    }

    #[test]
    fn a_compact_store_gets_the_stored_rule_columns_keeping_every_row_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("compact.db");
        // The audit items compressed (a dictionary is trained on them), the others text:
        // the step reads both forms.
        let count = |source: SourceKind| match source {
            SourceKind::AuditLogs => raw::TRAIN_ROWS + 300,
            _ => 300,
        };
        let stored_before: Vec<Vec<&str>> = SourceKind::ALL
            .iter()
            .map(|source| {
                let columns = transform::columns(*source);
                stored_columns(*source)
                    .iter()
                    .copied()
                    .filter(|c| {
                        ![
                            "createdBy_id",
                            "createdBy_type",
                            "context_ip",
                            "context_organization_name",
                            "contentId",
                        ]
                        .contains(c)
                    })
                    .inspect(|c| assert!(columns.contains(c)))
                    .collect()
            })
            .collect();
        // A store as the release before the step wrote it: compact, items compressed.
        let before: Vec<_> = {
            let mut conn = Connection::open(&path).unwrap();
            let codec = RawCodec::new(Some(&path));
            raw::register_functions(&conn, &codec).unwrap();
            schema::migrate_to(&mut conn, schema::version_before_rule_columns()).unwrap();
            for (k, source) in SourceKind::ALL.iter().enumerate() {
                let columns = transform::columns(*source);
                let kept = &stored_before[k];
                let sql_text = format!(
                    "INSERT OR IGNORE INTO {} ({}, _raw, _ingested_at) VALUES ({})",
                    raw::rows_table(*source),
                    kept.join(", "),
                    (1..=kept.len() + 2)
                        .map(|i| format!("?{i}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                for i in 0..count(*source) {
                    let raw = varied_item(i);
                    let row = transform::to_row(*source, &raw);
                    let mut values: Vec<&dyn rusqlite::ToSql> = Vec::new();
                    for name in kept {
                        let at = columns.iter().position(|c| c == name).unwrap();
                        values.push(&row.cells[at]);
                    }
                    values.push(&raw);
                    values.push(&"2024-05-02T00:00:00.000Z");
                    conn.execute(&sql_text, values.as_slice()).unwrap();
                }
                let compressed = raw::compact(&mut conn, &codec, *source).unwrap();
                assert_eq!(compressed > 0, *source == SourceKind::AuditLogs, "{source}");
            }
            SourceKind::ALL
                .iter()
                .map(|s| all_rows(&conn, s.table()))
                .collect()
        };

        drop(Store::open(&path).unwrap());
        let conn = Store::open_read_only(&path).unwrap();
        for (k, source) in SourceKind::ALL.iter().enumerate() {
            let after = all_rows(&conn, source.table());
            assert_eq!(after.len(), before[k].len(), "{source}: every row kept");
            assert_eq!(
                after, before[k],
                "{source}: every value kept, `_raw` byte for byte"
            );
            // The stored table holds each stored column as the view showed it: NULL
            // only where the view showed NULL.
            for column in stored_columns(*source) {
                let differ: i64 = conn
                    .query_row(
                        &format!(
                            "SELECT count(*) FROM {rows} WHERE {column} IS NOT \
                             mirotrail_column('{name}', '{column}', _raw)",
                            rows = raw::rows_table(*source),
                            name = source.name()
                        ),
                        [],
                        |r| r.get(0),
                    )
                    .unwrap();
                assert_eq!(differ, 0, "{source} {column}");
            }
        }
        // The converted columns are read from the stored table, not derived by the view.
        let plan: Vec<String> = conn
            .prepare("EXPLAIN SELECT createdBy_id, createdBy_type, context_ip, context_organization_name FROM MiroAuditLogs_CL")
            .unwrap()
            .query_map([], |r| {
                Ok(r.get_ref(4)?.as_str().ok().map(str::to_string))
            })
            .unwrap()
            .filter_map(|r| r.unwrap())
            .collect();
        assert!(
            !plan.iter().any(|p| p.contains("mirotrail_column")),
            "{plan:?}"
        );
        // New rows store the columns too.
        let store = Store::open(&path).unwrap();
        let item = r#"{"id":"new-1","event":"board_opened","createdAt":"2024-05-03T00:00:00Z","createdBy":{"type":"user","id":3074457345000000009},"context":{"ip":"198.18.0.9"}}"#;
        store
            .commit_page(
                SourceKind::AuditLogs,
                &[(stored_row(SourceKind::AuditLogs, item), item)],
                &cp(SourceKind::AuditLogs, 1, None),
            )
            .unwrap();
        let got: (String, String, String, String) = store
            .reader
            .lock()
            .unwrap()
            .query_row(
                "SELECT createdBy_id, createdBy_type, context_ip, context_organization_name
                 FROM MiroAuditLogs_CL_rows WHERE id = 'new-1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(
            got,
            (
                "3074457345000000009".into(),
                "user".into(),
                "198.18.0.9".into(),
                String::new()
            )
        );
    }

    /// Any item, stored (before and after its source has a dictionary), reads back byte
    /// for byte through the outbox and through the table's `_raw` column.
    #[test]
    fn any_item_reads_back_byte_exact() {
        use proptest::prelude::*;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).unwrap();
        let seen = std::cell::Cell::new(0usize);
        let check = |store: &Store, raw: &str| {
            seen.set(seen.get() + 1);
            let row = stored_row(SourceKind::AuditLogs, raw);
            let c = store
                .commit_page(
                    SourceKind::AuditLogs,
                    &[(row.clone(), raw)],
                    &cp(SourceKind::AuditLogs, 1, None),
                )
                .unwrap();
            if c.inserted == 0 {
                return;
            }
            let stored: String = store
                .reader
                .lock()
                .unwrap()
                .query_row(
                    "SELECT _raw FROM MiroAuditLogs_CL WHERE id = ?1",
                    [&row.id],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(stored, raw);
            let seq: i64 = store
                .reader
                .lock()
                .unwrap()
                .query_row(
                    "SELECT _seq FROM MiroAuditLogs_CL_rows WHERE id = ?1",
                    [&row.id],
                    |r| r.get(0),
                )
                .unwrap();
            let out = store
                .read_outbox(SourceKind::AuditLogs, seq - 1, 1)
                .unwrap();
            assert_eq!(out[0].raw, raw);
        };
        // Enough items to train the dictionary, then arbitrary ones.
        for i in 0..raw::TRAIN_ROWS + 10 {
            check(&store, &varied_item(i));
        }
        assert!(store.codec.has_dictionary(SourceKind::AuditLogs));
        let mut runner = proptest::test_runner::TestRunner::default();
        let items = prop_oneof![
            any::<String>(),
            ("[a-z0-9@. \\\"é\u{1F600}]{0,80}", any::<i64>(), any::<f64>()).prop_map(|(s, n, f)| format!(
                r#"{{"id":"{}","event":"{}","n":{n},"f":{f},"createdAt":"2024-05-01T10:00:00.1234567+0530"}}"#,
                s.replace(['\\', '"'], ""),
                s.replace(['\\', '"'], "")
            )),
        ];
        runner
            .run(&items, |raw| {
                check(&store, &raw);
                Ok(())
            })
            .unwrap();
        assert!(seen.get() > raw::TRAIN_ROWS);
    }

    /// Rows go in `ROWS_PER_INSERT` at a time when a whole chunk is compressed and fully
    /// derived, one by one otherwise: either way every new row is stored once, in page
    /// order and byte-exact, and duplicates (stored before or earlier in the page) and
    /// partly derived rows are counted exactly.
    #[test]
    fn a_page_of_many_rows_counts_new_duplicate_and_partial_rows_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).unwrap();
        let page = |items: &[String]| {
            store
                .commit_page(
                    SourceKind::AuditLogs,
                    &audit_rows(items),
                    &cp(SourceKind::AuditLogs, 1, None),
                )
                .unwrap()
        };
        let trained = raw::TRAIN_ROWS;
        page(&(0..trained).map(varied_item).collect::<Vec<_>>());
        assert!(store.codec.has_dictionary(SourceKind::AuditLogs));
        let partly = |i: &usize| {
            stored_row(SourceKind::AuditLogs, &varied_item(*i))
                .partial
                .is_some()
        };
        let n = ROWS_PER_INSERT;
        let fresh: Vec<String> = (trained..)
            .filter(|i| !partly(i))
            .take(2 * n)
            .map(varied_item)
            .collect();
        let old: Vec<String> = (0..trained)
            .filter(|i| !partly(i))
            .take(n / 2)
            .map(varied_item)
            .collect();
        let partial = varied_item((trained + 3 * n..).find(partly).unwrap());
        // A chunk of new rows; one half new, half stored before; one with new rows, a
        // partly derived one and repeats of this page's first rows.
        let mut items = fresh.clone();
        items.splice(n + n / 2..n + n / 2, old);
        items.push(partial.clone());
        items.extend_from_slice(&fresh[..n / 2 - 1]);
        assert_eq!(items.len(), 3 * n);
        assert_eq!(
            page(&items),
            PageCommit {
                inserted: u64::try_from(2 * n + 1).unwrap(),
                duplicates: u64::try_from(n - 1).unwrap(),
                partial: 1,
            }
        );
        let conn = store.reader.lock().unwrap();
        let stored: Vec<String> = conn
            .prepare("SELECT _raw FROM MiroAuditLogs_CL WHERE _seq > ?1 ORDER BY _seq")
            .unwrap()
            .query_map([i64::try_from(trained).unwrap()], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // A commit's rows go in in id order (`insert_rows`), so compare the sets.
        let mut stored = stored;
        stored.sort();
        let mut want = fresh;
        want.push(partial);
        want.sort();
        assert_eq!(stored, want);
        let partial_rows: i64 = conn
            .query_row("SELECT count(*) FROM partial_rows", [], |r| r.get(0))
            .unwrap();
        let before = (0..trained).filter(partly).count();
        assert_eq!(partial_rows, i64::try_from(before + 1).unwrap());
    }

    /// A commit of at least `raw::EARLY_TRAIN_ROWS` items to a source without a
    /// dictionary trains one on them first: none of its rows is stored as text (so
    /// `raw::compact` has nothing to re-write), the dictionary row is written, and every
    /// item reads back exactly. A smaller commit (a live page) is still stored as text.
    #[test]
    fn a_large_first_commit_is_stored_compressed_with_a_dictionary_trained_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).unwrap();
        let count = raw::EARLY_TRAIN_ROWS + 100;
        assert!(count < raw::TRAIN_ROWS);
        let commit = |source: SourceKind, items: &[String]| {
            let rows: Vec<(StoredRow, &str)> = items
                .iter()
                .map(|raw| (stored_row(source, raw), raw.as_str()))
                .collect();
            store
                .commit_page(source, &rows, &cp(source, 1, None))
                .unwrap()
        };
        let items: Vec<String> = (0..count).map(varied_item).collect();
        assert_eq!(
            commit(SourceKind::AuditLogs, &items).inserted,
            u64::try_from(count).unwrap()
        );
        let small: Vec<String> = (0..raw::EARLY_TRAIN_ROWS - 1).map(varied_item).collect();
        commit(SourceKind::ContentLogs, &small);
        let conn = store.reader.lock().unwrap();
        let count_of = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(
            count_of("SELECT count(*) FROM MiroAuditLogs_CL_rows WHERE typeof(_raw) = 'text'"),
            0
        );
        assert_eq!(
            count_of("SELECT trained_rows FROM raw_dictionaries WHERE source = 'audit_logs'"),
            i64::try_from(count).unwrap()
        );
        assert_eq!(
            count_of("SELECT count(*) FROM MiroContentLogs_CL_rows WHERE typeof(_raw) = 'text'"),
            i64::try_from(small.len()).unwrap()
        );
        let stored: Vec<String> = conn
            .prepare("SELECT _raw FROM MiroAuditLogs_CL ORDER BY _seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // A commit's rows go in in id order (`insert_rows`), so compare the sets.
        let (mut stored, mut items) = (stored, items);
        stored.sort();
        items.sort();
        assert_eq!(stored, items);
    }

    /// `_raw` is encoded before the writer lock is taken: rows encoded before their
    /// source had a dictionary, or with another dictionary than the one it has when they
    /// are committed, are encoded again under the lock, so each is stored compressed with
    /// the current dictionary, exactly, and not counted as stored text.
    #[test]
    fn rows_encoded_before_a_dictionary_changed_are_stored_with_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).unwrap();
        let source = SourceKind::AuditLogs;
        let trained = raw::TRAIN_ROWS;
        let late: Vec<String> = (trained..trained + 3 * ROWS_PER_INSERT)
            .map(varied_item)
            .collect();
        let early = store.encode(source, &audit_rows(&late));
        assert_eq!(early.dictionary, None);
        let first: Vec<String> = (0..trained).map(varied_item).collect();
        store
            .commit_page(source, &audit_rows(&first), &cp(source, 1, None))
            .unwrap();
        let current = store
            .codec
            .current(source)
            .expect("a dictionary is trained");
        // One group encoded before the dictionary existed, one with a dictionary the
        // source does not use (its bytes would not decode).
        let other = raw::EncodedRaws {
            dictionary: Some(current + 1),
            values: vec![
                Some(rusqlite::types::Value::Blob(vec![
                    raw::FORMAT_ZSTD_DICT,
                    9,
                    9
                ]));
                late.len()
            ],
        };
        let halves = late.split_at(late.len() / 2);
        let mut inserted = 0;
        for (items, encoded) in [(halves.0, early), (halves.1, other)] {
            let mut guard = store.writer.lock().unwrap();
            let Writer { inserts, conn } = &mut *guard;
            let tx = conn.transaction().unwrap();
            let encoded = raw::EncodedRaws {
                dictionary: encoded.dictionary,
                values: encoded.values.into_iter().take(items.len()).collect(),
            };
            let (commit, plain) = insert_rows(
                &tx,
                inserts,
                &store.codec,
                OrgKey::DEFAULT,
                source,
                &audit_rows(items),
                Some(encoded),
            )
            .unwrap();
            tx.commit().unwrap();
            assert_eq!(plain, 0, "rows stored as text");
            inserted += commit.inserted;
        }
        assert_eq!(inserted, u64::try_from(late.len()).unwrap());
        let conn = store.reader.lock().unwrap();
        let forms: Vec<(String, String)> = conn
            .prepare(
                "SELECT typeof(r._raw), v._raw FROM MiroAuditLogs_CL_rows r
                 JOIN MiroAuditLogs_CL v USING (_seq) WHERE r._seq > ?1 ORDER BY r._seq",
            )
            .unwrap()
            .query_map([i64::try_from(trained).unwrap()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let fresh = store
            .codec
            .encode_all(source, late.iter().map(String::as_str));
        let expected_forms: Vec<&str> = fresh
            .values
            .iter()
            .map(|v| match v {
                Some(rusqlite::types::Value::Blob(_)) => "blob",
                _ => "text",
            })
            .collect();
        assert!(expected_forms.iter().filter(|f| **f == "blob").count() > late.len() / 2);
        // A commit's rows go in in id order (`insert_rows`): compare each item's form.
        let mut forms: Vec<(&str, &str)> = forms
            .iter()
            .map(|(f, raw)| (raw.as_str(), f.as_str()))
            .collect();
        forms.sort_unstable();
        let mut expected: Vec<(&str, &str)> = late
            .iter()
            .map(String::as_str)
            .zip(expected_forms)
            .collect();
        expected.sort_unstable();
        assert_eq!(forms, expected);
    }

    #[test]
    fn a_failed_page_commit_leaves_rows_and_checkpoint_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).unwrap();
        let c1 = cp(SourceKind::AuditLogs, 10, Some("c1"));
        commit(&store, &["1"], &c1);
        // A row whose cell count does not match the table makes the insert fail midway.
        let mut bad = rows(&["2", "3"]);
        bad[1].0.cells.push(transform::Cell::Text("extra".into()));
        let refs: Vec<(StoredRow, &str)> =
            bad.iter().map(|(r, s)| (r.clone(), s.as_str())).collect();
        let c2 = cp(SourceKind::AuditLogs, 20, Some("c2"));
        assert!(
            store
                .commit_page(SourceKind::AuditLogs, &refs, &c2)
                .is_err()
        );
        assert_eq!(store.table_stats(SourceKind::AuditLogs).unwrap().rows, 1);
        assert_eq!(
            store
                .load_checkpoint(OrgKey::DEFAULT, SourceKind::AuditLogs)
                .unwrap(),
            Some(c1)
        );
    }

    /// An audit item whose `details` nest beyond what the transform parses: stored whole,
    /// with a `partial_rows` note.
    fn partial_item(id: &str) -> String {
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        format!(
            r#"{{"id":"{id}","event":"board_opened","createdAt":"2024-01-01T00:00:00.000Z","details":{{"a":{deep}}}}}"#
        )
    }

    /// Ids are unique only per organisation: two organisations' partly derived rows of
    /// the same id are two notes, each counted for its organisation, and retention
    /// takes the note of the row it deletes, not the other organisation's.
    #[test]
    fn partial_row_notes_are_kept_per_organisation_when_two_share_an_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).unwrap();
        let keys = store
            .register_orgs(&[org("emea", Some("111")), org("apac", Some("222"))], true)
            .unwrap();
        let (emea, apac) = (keys[0], keys[1]);
        for key in [emea, apac] {
            let raws = [
                partial_item("shared"),
                partial_item(&format!("own-{}", key.0)),
            ];
            let rows = audit_rows(&raws);
            let commit = store
                .commit_page(
                    SourceKind::AuditLogs,
                    &rows,
                    &Checkpoint {
                        org: key,
                        ..cp(SourceKind::AuditLogs, 1, None)
                    },
                )
                .unwrap();
            assert_eq!((commit.inserted, commit.partial), (2, 2), "{key}");
        }
        let counts = store
            .read("test", |conn| Ok(partial_row_counts(conn)))
            .unwrap()
            .unwrap();
        assert_eq!(counts.get(&(emea, SourceKind::AuditLogs)), Some(&2));
        assert_eq!(counts.get(&(apac, SourceKind::AuditLogs)), Some(&2));
        assert_eq!(counts.len(), 2, "{counts:?}");

        // emea's rows are delivered and old, apac's are not delivered: retention takes
        // emea's rows and their notes only, though apac still has a row `shared`.
        let seqs: Vec<i64> = store
            .read_outbox(SourceKind::AuditLogs, 0, 100)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs.len(), 4);
        store
            .advance_offset("a", SourceKind::AuditLogs, seqs[1])
            .unwrap();
        let deleted = store
            .apply_retention(
                UnixMs::now().plus(std::time::Duration::from_secs(60)),
                &["a".into()],
            )
            .unwrap();
        assert_eq!(deleted[0], (SourceKind::AuditLogs, 2));
        let notes: Vec<(i64, String)> = store
            .read("test", |conn| {
                conn.prepare("SELECT org, id FROM partial_rows ORDER BY org, id")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .unwrap();
        assert_eq!(
            notes,
            [
                (apac.0, format!("own-{}", apac.0)),
                (apac.0, "shared".to_string())
            ]
        );
    }

    /// A store whose notes were keyed by source and id only: each note goes to the
    /// organisation whose row of that id it was written with (the last one stored no
    /// later than the note), every note is kept.
    #[test]
    fn partial_row_notes_of_an_older_store_go_to_the_organisation_of_their_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("older.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            raw::register_functions(&conn, &RawCodec::new(None)).unwrap();
            schema::migrate_to(&mut conn, schema::version_before_partial_rows_per_org()).unwrap();
            conn.execute_batch(
                "INSERT INTO orgs (key, name, org_id, created_ms) VALUES (2, 'apac', '222', 0);
                 INSERT INTO MiroAuditLogs_CL_rows (_org, id, _raw, _ingested_at) VALUES
                   (1, 'shared', '{}', '2024-01-01T00:00:00.000Z'),
                   (2, 'shared', '{}', '2024-01-01T00:00:05.000Z'),
                   (2, 'apac-only', '{}', '2024-01-01T00:00:05.000Z');
                 INSERT INTO MiroContentLogs_CL_rows (_org, id, _raw, _ingested_at) VALUES
                   (2, 'shared', '{}', '2024-01-01T00:00:00.000Z');
                 -- written with emea's row (before apac's was stored), with apac's, with a
                 -- content row of apac, and for a row retention already took.
                 INSERT INTO partial_rows (source, id, unread, stored_ms) VALUES
                   ('audit_logs', 'shared', 'x', 1704067200001),
                   ('audit_logs', 'apac-only', 'x', 1704067205000),
                   ('content_logs', 'shared', 'x', 1704067200000),
                   ('audit_logs', 'gone', 'x', 1704067200000);",
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let notes: Vec<(i64, String, String, i64)> = store
            .read("test", |conn| {
                conn.prepare(
                    "SELECT org, source, id, stored_ms FROM partial_rows ORDER BY source, id",
                )?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
            })
            .unwrap();
        assert_eq!(
            notes,
            [
                (
                    2,
                    "audit_logs".into(),
                    "apac-only".into(),
                    1_704_067_205_000
                ),
                (1, "audit_logs".into(), "gone".into(), 1_704_067_200_000),
                (1, "audit_logs".into(), "shared".into(), 1_704_067_200_001),
                (2, "content_logs".into(), "shared".into(), 1_704_067_200_000),
            ]
        );
    }

    /// `deadletter list` tells apart two organisations' rows of the same id.
    #[test]
    fn dead_letters_name_the_organisation_of_their_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).unwrap();
        let keys = store
            .register_orgs(&[org("emea", Some("111")), org("apac", Some("222"))], true)
            .unwrap();
        for key in &keys {
            commit(
                &store,
                &["same"],
                &Checkpoint {
                    org: *key,
                    ..cp(SourceKind::AuditLogs, 1, None)
                },
            );
        }
        let seqs: Vec<i64> = store
            .read_outbox(SourceKind::AuditLogs, 0, 100)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        let refused: Vec<(i64, String)> = seqs.iter().map(|s| (*s, "refused".into())).collect();
        store
            .dead_letter("a", SourceKind::AuditLogs, &refused, None)
            .unwrap();
        let listed = store
            .read("test", |conn| Ok(dead_letters(conn, None, None)))
            .unwrap()
            .unwrap();
        let seen: Vec<(Option<&str>, Option<&str>)> = listed
            .iter()
            .map(|d| (d.miro_id.as_deref(), d.org_id.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [(Some("same"), Some("111")), (Some("same"), Some("222"))]
        );
    }

    /// The late re-read state (`reread_through_ms`, `window_reread`) and the last error
    /// are kept per organisation: one organisation's re-read or failure never moves or
    /// marks another's checkpoint of the same source.
    #[test]
    fn late_re_read_state_and_errors_are_kept_per_organisation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("reread.db")).unwrap();
        let keys = store
            .register_orgs(&[org("a", Some("1")), org("b", Some("2"))], true)
            .unwrap();
        let (a, b) = (keys[0], keys[1]);
        let mut cp_a = Checkpoint {
            org: a,
            reread_through: Some(UnixMs(5)),
            ..cp(SourceKind::AuditLogs, 10, Some("ca"))
        };
        if let Some(w) = cp_a.window.as_mut() {
            w.reread = true;
        }
        let cp_b = Checkpoint {
            org: b,
            reread_through: Some(UnixMs(15)),
            ..cp(SourceKind::AuditLogs, 20, Some("cb"))
        };
        store.save_checkpoint(&cp_a).unwrap();
        store.save_checkpoint(&cp_b).unwrap();
        store
            .record_error(b, SourceKind::AuditLogs, "429 for a while")
            .unwrap();
        let load = |k| {
            store
                .load_checkpoint(k, SourceKind::AuditLogs)
                .unwrap()
                .unwrap()
        };
        assert_eq!(load(a), cp_a);
        let loaded_b = load(b);
        assert_eq!(loaded_b.last_error.as_deref(), Some("429 for a while"));
        assert_eq!(
            Checkpoint {
                last_error: None,
                last_error_at: None,
                ..loaded_b
            },
            cp_b
        );
        // a's re-read window completes: b's state stays.
        let done_a = Checkpoint {
            window: None,
            reread_through: Some(UnixMs(9)),
            ..cp_a
        };
        store.save_checkpoint(&done_a).unwrap();
        assert_eq!(load(a), done_a);
        assert_eq!(load(b).reread_through, Some(UnixMs(15)));
        assert!(load(b).window.is_some_and(|w| !w.reread));
    }
}
