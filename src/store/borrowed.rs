//! Prepared statements whose parameters are bound as borrowed values (SQLite's
//! `SQLITE_STATIC`), for the store's row inserts ([`super::insert_rows`]), kept prepared
//! for the life of their connection ([`Statements`]).
//!
//! rusqlite binds every text and blob with `SQLITE_TRANSIENT`: SQLite copies each value
//! into its own allocation at bind time and frees it at the next bind, which for a row of
//! ten text cells and its `_raw` was about 6% of a backfill's instructions
//! (BENCHMARKS.md). Bound here, SQLite reads the caller's bytes where they are. Preparing
//! the inserts once per connection rather than once per commit saves SQLite's parse and
//! code generation of a 32-row `INSERT` (about 1% of a backfill's instructions).
//!
//! Invariants:
//! - every parameter of a statement is bound by each [`BorrowedStatement::execute`]
//!   before the statement steps, from values that live through that call: SQLite never
//!   reads a value bound by an earlier call (the lifetime of [`Param`] ties the bytes to
//!   the call, and `execute` refuses a parameter list of the wrong length); the statement
//!   is reset before `execute` returns, so a kept statement holds no read or write open;
//! - a statement runs only on the connection it was prepared on (`execute` checks it);
//! - a statement is finalized when dropped, and never after its connection's handle is
//!   freed: rusqlite closes a connection with `sqlite3_close`, which refuses (and keeps
//!   the handle open) while a statement of it is not finalized. Owners drop their
//!   statements first (`Writer`'s field order) so the close succeeds.

use std::ffi::{CStr, c_int};
use std::ptr::NonNull;

use rusqlite::{Connection, ffi};

/// `SQLITE_UTF8` as `sqlite3_bind_text64` takes it.
const UTF8: u8 = 1;
const _: () = assert!(ffi::SQLITE_UTF8 == UTF8 as c_int);

/// One parameter value, borrowed for one execution.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// A prepared statement executed with [`Param`]s bound as `SQLITE_STATIC`.
pub(crate) struct BorrowedStatement {
    db: *mut ffi::sqlite3,
    stmt: NonNull<ffi::sqlite3_stmt>,
    parameters: usize,
}

// SAFETY: SQLite connections are opened in its multi-thread mode: a statement may be used
// from any thread, one at a time, like its connection; `&mut self` on every use and the
// owner's lock (the store's writer mutex) give that.
unsafe impl Send for BorrowedStatement {}

impl std::fmt::Debug for BorrowedStatement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BorrowedStatement")
            .field("parameters", &self.parameters)
            .finish_non_exhaustive()
    }
}

impl BorrowedStatement {
    /// Prepares `sql` (one statement) on `conn`. Drop it before `conn`, or `conn` is not
    /// closed (see the module's invariants).
    fn prepare(conn: &Connection, sql: &str) -> rusqlite::Result<Self> {
        // SAFETY: the handle is `conn`'s open database, which stays open while this
        // statement exists (`sqlite3_close` refuses to close it before).
        let db = unsafe { conn.handle() };
        let len = c_int::try_from(sql.len()).map_err(|_| rusqlite::Error::InvalidQuery)?;
        let mut stmt = std::ptr::null_mut();
        // SAFETY: `sql` is valid for `len` bytes; `stmt` receives the prepared statement.
        let code = unsafe {
            ffi::sqlite3_prepare_v3(
                db,
                sql.as_ptr().cast(),
                len,
                ffi::SQLITE_PREPARE_PERSISTENT,
                &mut stmt,
                std::ptr::null_mut(),
            )
        };
        if code != ffi::SQLITE_OK {
            // SAFETY: `db` is open.
            return Err(unsafe { error(db, code) });
        }
        let stmt = NonNull::new(stmt).ok_or(rusqlite::Error::InvalidQuery)?;
        // SAFETY: `stmt` is a prepared statement.
        let parameters = unsafe { ffi::sqlite3_bind_parameter_count(stmt.as_ptr()) };
        Ok(BorrowedStatement {
            db,
            stmt,
            parameters: usize::try_from(parameters).unwrap_or(0),
        })
    }

    /// Binds `params` (`?1` upwards, exactly as many as the statement has), runs the
    /// statement to its end on `conn` (the connection it was prepared on) and returns the
    /// rows it changed.
    pub(crate) fn execute(
        &mut self,
        conn: &Connection,
        params: &[Param<'_>],
    ) -> rusqlite::Result<usize> {
        // SAFETY: the handle is only compared.
        if unsafe { conn.handle() } != self.db {
            return Err(rusqlite::Error::InvalidQuery);
        }
        if params.len() != self.parameters {
            return Err(rusqlite::Error::InvalidParameterCount(
                params.len(),
                self.parameters,
            ));
        }
        let stmt = self.stmt.as_ptr();
        for (i, param) in params.iter().enumerate() {
            let index = c_int::try_from(i + 1).map_err(|_| rusqlite::Error::InvalidQuery)?;
            // SAFETY: `stmt` is prepared; a text or blob is read by SQLite only while
            // `params` is borrowed: the statement steps and is reset below, and every
            // later step binds every parameter again first.
            let code = unsafe {
                match *param {
                    Param::Null => ffi::sqlite3_bind_null(stmt, index),
                    Param::Int(v) => ffi::sqlite3_bind_int64(stmt, index, v),
                    Param::Text(s) => ffi::sqlite3_bind_text64(
                        stmt,
                        index,
                        s.as_ptr().cast(),
                        s.len() as u64,
                        ffi::SQLITE_STATIC(),
                        UTF8,
                    ),
                    Param::Blob(b) => ffi::sqlite3_bind_blob64(
                        stmt,
                        index,
                        b.as_ptr().cast(),
                        b.len() as u64,
                        ffi::SQLITE_STATIC(),
                    ),
                }
            };
            if code != ffi::SQLITE_OK {
                // SAFETY: `db` is open.
                return Err(unsafe { error(self.db, code) });
            }
        }
        // SAFETY: `stmt` is prepared and every parameter is bound.
        let code = unsafe { ffi::sqlite3_step(stmt) };
        // SAFETY: as above; the reset reports the step's error again, which is read first.
        let result = match code {
            ffi::SQLITE_DONE | ffi::SQLITE_ROW => {
                // SAFETY: `db` is open.
                let changed = unsafe { ffi::sqlite3_changes64(self.db) };
                Ok(usize::try_from(changed).unwrap_or(0))
            }
            code => Err(unsafe { error(self.db, code) }),
        };
        // SAFETY: `stmt` is prepared.
        unsafe { ffi::sqlite3_reset(stmt) };
        result
    }
}

impl Drop for BorrowedStatement {
    fn drop(&mut self) {
        // SAFETY: `stmt` was prepared on a connection whose handle is still open (the
        // module's invariants).
        unsafe { ffi::sqlite3_finalize(self.stmt.as_ptr()) };
    }
}

/// The statements prepared on one connection, by key (a few, looked up in order).
#[derive(Debug)]
pub(crate) struct Statements<K> {
    list: Vec<(K, BorrowedStatement)>,
}

impl<K> Default for Statements<K> {
    fn default() -> Self {
        Statements { list: Vec::new() }
    }
}

impl<K: PartialEq> Statements<K> {
    /// The statement kept under `key`, prepared on `conn` from `sql()` the first time.
    /// A statement kept from another connection is dropped and prepared again here.
    pub(crate) fn get(
        &mut self,
        conn: &Connection,
        key: K,
        sql: impl FnOnce() -> String,
    ) -> rusqlite::Result<&mut BorrowedStatement> {
        // SAFETY: the handle is only compared.
        let db = unsafe { conn.handle() };
        self.list.retain(|(_, s)| s.db == db);
        let at = match self.list.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                let stmt = BorrowedStatement::prepare(conn, &sql())?;
                self.list.push((key, stmt));
                self.list.len() - 1
            }
        };
        Ok(&mut self.list[at].1)
    }
}

/// The error of a failed call: its code and the connection's message.
///
/// # Safety
/// `db` is an open connection.
unsafe fn error(db: *mut ffi::sqlite3, code: c_int) -> rusqlite::Error {
    // SAFETY: `db` is open; SQLite returns a NUL-terminated message it owns.
    let message = unsafe {
        let text = ffi::sqlite3_errmsg(db);
        (!text.is_null()).then(|| CStr::from_ptr(text).to_string_lossy().into_owned())
    };
    rusqlite::Error::SqliteFailure(ffi::Error::new(code), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_borrowed_values_and_counts_changes() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a TEXT UNIQUE, b BLOB, c INTEGER, d TEXT)")
            .unwrap();
        let mut stmt = BorrowedStatement::prepare(
            &conn,
            "INSERT OR IGNORE INTO t (a, b, c, d) VALUES (?1, ?2, ?3, ?4), (?5, ?6, ?7, ?8)",
        )
        .unwrap();
        for round in 0u8..2 {
            // Fresh strings each round: nothing of the last round's values is read again.
            let a = format!("x{round}");
            let blob = vec![round, 0, 255];
            let n = stmt
                .execute(
                    &conn,
                    &[
                        Param::Text(&a),
                        Param::Blob(&blob),
                        Param::Int(i64::from(round)),
                        Param::Null,
                        Param::Text("same"),
                        Param::Blob(&[]),
                        Param::Int(7),
                        Param::Text("é"),
                    ],
                )
                .unwrap();
            assert_eq!(n, if round == 0 { 2 } else { 1 });
        }
        let rows: Vec<(String, Vec<u8>, i64, Option<String>)> = conn
            .prepare("SELECT a, b, c, d FROM t ORDER BY rowid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                ("x0".into(), vec![0, 0, 255], 0, None),
                ("same".into(), vec![], 7, Some("é".into())),
                ("x1".into(), vec![1, 0, 255], 1, None),
            ]
        );
    }

    #[test]
    fn refuses_a_wrong_parameter_count_and_reports_constraint_errors() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a TEXT NOT NULL)")
            .unwrap();
        let mut stmt = BorrowedStatement::prepare(&conn, "INSERT INTO t (a) VALUES (?1)").unwrap();
        assert!(matches!(
            stmt.execute(&conn, &[]),
            Err(rusqlite::Error::InvalidParameterCount(0, 1))
        ));
        let err = stmt.execute(&conn, &[Param::Null]).unwrap_err();
        assert!(err.to_string().contains("NOT NULL"), "{err}");
        assert_eq!(stmt.execute(&conn, &[Param::Text("ok")]).unwrap(), 1);
        assert!(BorrowedStatement::prepare(&conn, "INSERT INTO nowhere VALUES (?1)").is_err());
        // A statement runs only on the connection it was prepared on.
        let other = Connection::open_in_memory().unwrap();
        other
            .execute_batch("CREATE TABLE t (a TEXT NOT NULL)")
            .unwrap();
        assert!(stmt.execute(&other, &[Param::Text("no")]).is_err());
        let n: i64 = other
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn kept_statements_are_prepared_once_per_key_and_per_connection() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a TEXT)").unwrap();
        let mut kept = Statements::default();
        let mut prepared = 0;
        for value in ["x", "y", "z"] {
            let stmt = kept
                .get(&conn, 1u8, || {
                    prepared += 1;
                    "INSERT INTO t (a) VALUES (?1)".into()
                })
                .unwrap();
            assert_eq!(stmt.execute(&conn, &[Param::Text(value)]).unwrap(), 1);
        }
        assert_eq!(prepared, 1);
        // Another connection gets its own statement; the first one's is let go.
        let other = Connection::open_in_memory().unwrap();
        other.execute_batch("CREATE TABLE t (a TEXT)").unwrap();
        let stmt = kept
            .get(&other, 1u8, || {
                prepared += 1;
                "INSERT INTO t (a) VALUES (?1)".into()
            })
            .unwrap();
        assert_eq!(stmt.execute(&other, &[Param::Text("w")]).unwrap(), 1);
        assert_eq!(prepared, 2);
        assert_eq!(kept.list.len(), 1);
        drop(kept);
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3);
    }
}
