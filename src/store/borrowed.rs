//! A prepared statement whose parameters are bound as borrowed values (SQLite's
//! `SQLITE_STATIC`), for the store's row inserts ([`super::insert_rows`]).
//!
//! rusqlite binds every text and blob with `SQLITE_TRANSIENT`: SQLite copies each value
//! into its own allocation at bind time and frees it at the next bind, which for a row of
//! ten text cells and its `_raw` was about 6% of a backfill's instructions
//! (BENCHMARKS.md). Bound here, SQLite reads the caller's bytes where they are.
//!
//! Invariants:
//! - every parameter of the statement is bound by each [`BorrowedStatement::execute`]
//!   before the statement steps, from values that live through that call: SQLite never
//!   reads a value bound by an earlier call (the lifetime of [`Param`] ties the bytes to
//!   the call, and `execute` refuses a parameter list of the wrong length);
//! - the statement is finalized when it is dropped, and it borrows its connection, so it
//!   cannot outlive it.

use std::ffi::{CStr, c_int};
use std::marker::PhantomData;
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
pub(crate) struct BorrowedStatement<'c> {
    db: *mut ffi::sqlite3,
    stmt: NonNull<ffi::sqlite3_stmt>,
    parameters: usize,
    _conn: PhantomData<&'c Connection>,
}

impl<'c> BorrowedStatement<'c> {
    /// Prepares `sql` (one statement) on `conn`.
    pub(crate) fn prepare(conn: &'c Connection, sql: &str) -> rusqlite::Result<Self> {
        // SAFETY: the handle is `conn`'s open database, used only while `conn` is borrowed.
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
            _conn: PhantomData,
        })
    }

    /// Binds `params` (`?1` upwards, exactly as many as the statement has), runs the
    /// statement to its end and returns the rows it changed.
    pub(crate) fn execute(&mut self, params: &[Param<'_>]) -> rusqlite::Result<usize> {
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

impl Drop for BorrowedStatement<'_> {
    fn drop(&mut self) {
        // SAFETY: `stmt` was prepared on the connection this value borrows, which is open.
        unsafe { ffi::sqlite3_finalize(self.stmt.as_ptr()) };
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
                .execute(&[
                    Param::Text(&a),
                    Param::Blob(&blob),
                    Param::Int(i64::from(round)),
                    Param::Null,
                    Param::Text("same"),
                    Param::Blob(&[]),
                    Param::Int(7),
                    Param::Text("é"),
                ])
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
            stmt.execute(&[]),
            Err(rusqlite::Error::InvalidParameterCount(0, 1))
        ));
        let err = stmt.execute(&[Param::Null]).unwrap_err();
        assert!(err.to_string().contains("NOT NULL"), "{err}");
        assert_eq!(stmt.execute(&[Param::Text("ok")]).unwrap(), 1);
        assert!(BorrowedStatement::prepare(&conn, "INSERT INTO nowhere VALUES (?1)").is_err());
    }
}
