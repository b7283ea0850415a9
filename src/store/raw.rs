//! `_raw` as stored: each API item exactly as Miro sent it, compressed with a zstd
//! dictionary trained on the store's own first items of that source.
//!
//! The `_raw` column of the stored tables (`MiroAuditLogs_CL_rows`,
//! `MiroContentLogs_CL_rows`) holds one of two forms:
//! - TEXT: the item as sent. Rows stored before their source had a dictionary (a live
//!   page's few items, a store written by an older version) are stored so, and
//!   re-encoded once one is trained ([`compact`]);
//! - BLOB: [`FORMAT_ZSTD_DICT`], the dictionary's id (`raw_dictionaries.id`, LEB128), then
//!   one zstd frame compressed with that dictionary.
//!
//! A source gets its dictionary from the first commit of at least [`EARLY_TRAIN_ROWS`] of
//! its items, before they are stored (a backfill's first page: [`train_from_items`]), or
//! else when [`TRAIN_ROWS`] of its items are stored as text ([`compact`]): small JSON
//! items share most of their bytes (keys, the organisation, teams, users), which a
//! dictionary holds once, so an item takes about a sixth of its text (`docs/store.md`).
//!
//! Invariants:
//! - decoding gives the item byte for byte: every encoding is decoded and compared with
//!   the item before it is written, and the text is stored when they differ;
//! - a dictionary row is written (and committed) before any row encoded with it, and is
//!   never changed or deleted;
//! - the SQL functions [`register_functions`] adds are pure functions of their arguments
//!   (`mirotrail_raw`: the item's text; `mirotrail_column`: a column of the item as the
//!   transform derives it), so the views over the stored tables show what the tables held
//!   when every column was stored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::functions::FunctionFlags;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OpenFlags, params};
use zstd::zstd_safe::{CCtx, CDict, DCtx, DDict};

use crate::source::SourceKind;
use crate::store::transform;

/// Items of a source stored as text before its dictionary is trained on them.
pub(crate) const TRAIN_ROWS: usize = 2_000;
/// The fewest items of one commit a dictionary is trained on before they are stored
/// ([`train_from_items`]): one page of a backfill (500 audit or 1,000 content items).
pub(crate) const EARLY_TRAIN_ROWS: usize = 500;
/// [`TRAIN_ROWS`] as a SQL integer.
const TRAIN_ROWS_SQL: i64 = 2_000;
/// The largest dictionary trained.
const DICTIONARY_BYTES: usize = 64 * 1024;
/// fastCover's segment size (bytes) and d-mer size for [`train_fast_cover`]: the d-mer
/// size of zstd's own default training, and a segment size in the middle of the range its
/// parameter search tries (on the emulated org it picked 537 for one source and 1998 for the
/// other; 1024 stores both within 0.3% of what those did).
const FAST_COVER_K: u32 = 1024;
/// See [`FAST_COVER_K`].
const FAST_COVER_D: u32 = 8;
/// zstd level: fast to write; a higher one saves a few bytes per item at several times the CPU.
const LEVEL: i32 = 3;
/// The first byte of a compressed `_raw`.
pub(crate) const FORMAT_ZSTD_DICT: u8 = 1;
/// Rows re-encoded per transaction by [`compact`].
const COMPACT_BATCH: i64 = 5_000;

/// A `_raw` value that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    #[error(
        "stored item has an unknown format (first byte {0}); was it written by a newer mirotrail?"
    )]
    Format(u8),
    #[error("stored item refers to the dictionary {0}, which is not in `raw_dictionaries`")]
    MissingDictionary(i64),
    #[error("stored item does not decompress: {0}")]
    Corrupt(String),
    #[error("stored item is not UTF-8 text")]
    NotText,
    #[error("reading a dictionary failed: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// One trained dictionary, prepared for both directions.
struct Dictionary {
    cdict: CDict<'static>,
    ddict: DDict<'static>,
}

impl Dictionary {
    fn new(bytes: &[u8]) -> Option<Dictionary> {
        Some(Dictionary {
            cdict: CDict::try_create(bytes, LEVEL)?,
            ddict: DDict::try_create(bytes)?,
        })
    }
}

/// The dictionaries of one store file, shared by its connections (and their SQL functions).
pub(crate) struct RawCodec {
    /// The store, to load a dictionary another process trained after this one loaded them.
    path: Option<PathBuf>,
    dictionaries: Mutex<HashMap<i64, Arc<Dictionary>>>,
    /// The dictionary new items of each source are encoded with.
    current: Mutex<HashMap<SourceKind, i64>>,
}

impl std::fmt::Debug for RawCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawCodec")
            .field("path", &self.path)
            .field("current", &self.current.lock().expect("codec lock"))
            .finish_non_exhaustive()
    }
}

impl RawCodec {
    pub(crate) fn new(path: Option<&Path>) -> Arc<RawCodec> {
        Arc::new(RawCodec {
            path: path.map(Path::to_path_buf),
            dictionaries: Mutex::default(),
            current: Mutex::default(),
        })
    }

    /// Loads the dictionaries `conn` sees (a store without the table has none).
    pub(crate) fn load(&self, conn: &Connection) -> rusqlite::Result<()> {
        let exists: bool = conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'raw_dictionaries'",
            [],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(());
        }
        let mut stmt =
            conn.prepare("SELECT id, source, dictionary FROM raw_dictionaries ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        for row in rows {
            let (id, source, bytes) = row?;
            if self
                .dictionaries
                .lock()
                .expect("codec lock")
                .contains_key(&id)
            {
                continue;
            }
            if let (Some(source), Some(dict)) =
                (SourceKind::from_name(&source), Dictionary::new(&bytes))
            {
                self.add(id, source, dict);
            }
        }
        Ok(())
    }

    fn add(&self, id: i64, source: SourceKind, dict: Dictionary) {
        self.dictionaries
            .lock()
            .expect("codec lock")
            .insert(id, Arc::new(dict));
        let mut current = self.current.lock().expect("codec lock");
        let entry = current.entry(source).or_insert(id);
        *entry = (*entry).max(id);
    }

    /// Whether new items of `source` are compressed.
    pub(crate) fn has_dictionary(&self, source: SourceKind) -> bool {
        self.current
            .lock()
            .expect("codec lock")
            .contains_key(&source)
    }

    fn dictionary(&self, id: i64) -> Result<Arc<Dictionary>, RawError> {
        if let Some(d) = self.dictionaries.lock().expect("codec lock").get(&id) {
            return Ok(d.clone());
        }
        // Trained by another process (a backfill beside `run`) after this one loaded.
        if let Some(path) = &self.path {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            self.load(&conn)?;
        }
        self.dictionaries
            .lock()
            .expect("codec lock")
            .get(&id)
            .cloned()
            .ok_or(RawError::MissingDictionary(id))
    }

    /// The dictionary new items of `source` are encoded with (`None` while it has none).
    pub(crate) fn current(&self, source: SourceKind) -> Option<i64> {
        self.current
            .lock()
            .expect("codec lock")
            .get(&source)
            .copied()
    }

    /// The stored form of each of `raws` with `source`'s current dictionary; done before
    /// a commit takes the writer lock, so several groups of rows are encoded at once.
    pub(crate) fn encode_all<'r>(
        &self,
        source: SourceKind,
        raws: impl ExactSizeIterator<Item = &'r str>,
    ) -> EncodedRaws {
        let mut encoder = self.encoder(source);
        EncodedRaws {
            dictionary: encoder.as_ref().map(|e| e.id),
            values: raws
                .map(|raw| encoder.as_mut().map(|e| e.encode(raw)))
                .collect(),
        }
    }

    /// An encoder for new items of `source`: `None` while it has no dictionary.
    pub(crate) fn encoder(&self, source: SourceKind) -> Option<Encoder> {
        let id = *self.current.lock().expect("codec lock").get(&source)?;
        let dict = self
            .dictionaries
            .lock()
            .expect("codec lock")
            .get(&id)?
            .clone();
        Some(Encoder::new(id, dict))
    }

    /// A decoder of stored items (it keeps its zstd context and buffer between items).
    pub(crate) fn decoder(self: &Arc<Self>) -> Decoder {
        Decoder {
            codec: self.clone(),
            dctx: DCtx::create(),
            dict: None,
            out: Vec::new(),
        }
    }
}

/// The stored `_raw` of a group of items, in their order ([`RawCodec::encode_all`]).
#[derive(Debug)]
pub(crate) struct EncodedRaws {
    /// The dictionary they were encoded with; `None`: there was none, `values` are all `None`.
    pub(crate) dictionary: Option<i64>,
    /// Each item's stored form (`None`: store its text).
    pub(crate) values: Vec<Option<Value>>,
}

/// Encodes items with one dictionary.
pub(crate) struct Encoder {
    id: i64,
    dict: Arc<Dictionary>,
    header: Vec<u8>,
    cctx: CCtx<'static>,
    dctx: DCtx<'static>,
    frame: Vec<u8>,
    check: Vec<u8>,
}

impl Encoder {
    fn new(id: i64, dict: Arc<Dictionary>) -> Encoder {
        let mut header = vec![FORMAT_ZSTD_DICT];
        leb128(&mut header, u64::try_from(id).unwrap_or(0));
        Encoder {
            id,
            dict,
            header,
            cctx: CCtx::create(),
            dctx: DCtx::create(),
            frame: Vec::new(),
            check: Vec::new(),
        }
    }

    /// The stored form of `raw`: compressed, or the text itself if the compressed form
    /// does not decode back to it (or is not smaller).
    pub(crate) fn encode(&mut self, raw: &str) -> Value {
        // zstd writes from the start of the buffer: the frame goes to its own buffer.
        self.frame.clear();
        self.frame
            .reserve(zstd::zstd_safe::compress_bound(raw.len()));
        let compressed = self
            .cctx
            .compress_using_cdict(&mut self.frame, raw.as_bytes(), &self.dict.cdict)
            .is_ok();
        if compressed && self.header.len() + self.frame.len() < raw.len() {
            self.check.clear();
            self.check.reserve(raw.len());
            if self
                .dctx
                .decompress_using_ddict(&mut self.check, &self.frame, &self.dict.ddict)
                .is_ok()
                && self.check == raw.as_bytes()
            {
                let mut out = Vec::with_capacity(self.header.len() + self.frame.len());
                out.extend_from_slice(&self.header);
                out.extend_from_slice(&self.frame);
                return Value::Blob(out);
            }
        }
        Value::Text(raw.to_string())
    }
}

/// Decodes stored items.
pub(crate) struct Decoder {
    codec: Arc<RawCodec>,
    dctx: DCtx<'static>,
    dict: Option<(i64, Arc<Dictionary>)>,
    out: Vec<u8>,
}

impl Decoder {
    /// The item a stored `_raw` holds.
    pub(crate) fn decode(&mut self, stored: ValueRef<'_>) -> Result<String, RawError> {
        match stored {
            ValueRef::Text(t) => String::from_utf8(t.to_vec()).map_err(|_| RawError::NotText),
            ValueRef::Blob(b) => {
                self.decode_blob(b)?;
                String::from_utf8(self.out.clone()).map_err(|_| RawError::NotText)
            }
            _ => Err(RawError::NotText),
        }
    }

    fn decode_blob(&mut self, blob: &[u8]) -> Result<(), RawError> {
        let (&format, rest) = blob.split_first().ok_or(RawError::Format(0))?;
        if format != FORMAT_ZSTD_DICT {
            return Err(RawError::Format(format));
        }
        let (id, frame) = read_leb128(rest).ok_or(RawError::Format(format))?;
        let id = i64::try_from(id).map_err(|_| RawError::MissingDictionary(i64::MAX))?;
        let dict = match &self.dict {
            Some((cached, d)) if *cached == id => d.clone(),
            _ => {
                let d = self.codec.dictionary(id)?;
                self.dict = Some((id, d.clone()));
                d
            }
        };
        let size = zstd::zstd_safe::get_frame_content_size(frame)
            .map_err(|e| RawError::Corrupt(format!("{e:?}")))?
            .ok_or_else(|| RawError::Corrupt("no content size".into()))?;
        self.out.clear();
        self.out
            .reserve(usize::try_from(size).map_err(|_| RawError::Corrupt("too large".into()))?);
        self.dctx
            .decompress_using_ddict(&mut self.out, frame, &dict.ddict)
            .map_err(|code| RawError::Corrupt(zstd::zstd_safe::get_error_name(code).to_string()))?;
        Ok(())
    }
}

fn leb128(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_leb128(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut n: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((n, &bytes[i + 1..]));
        }
    }
    None
}

/// A dictionary for `samples`: zstd's fastCover trainer with fixed parameters, or, if it
/// refuses them (too few, too alike), their bytes as a raw-content dictionary.
fn train<S: AsRef<str>>(samples: &[S]) -> Vec<u8> {
    match train_fast_cover(samples) {
        Ok(dict) => dict,
        Err(e) => {
            tracing::debug!(error = %e, "zstd dictionary training refused the samples; using them as a raw dictionary");
            let mut raw: Vec<u8> = samples.iter().flat_map(|s| s.as_ref().bytes()).collect();
            let cut = raw.len().saturating_sub(DICTIONARY_BYTES);
            raw.drain(..cut);
            raw
        }
    }
}

/// zstd's fastCover training with fixed segment and d-mer sizes. `zstd::dict::from_samples`
/// runs a parameter search instead (five segment sizes, each dictionary built, finalised
/// and tried on a quarter of the samples): about 3.5 times the instructions, for a
/// dictionary that compresses the items about as well (`docs/store.md`).
fn train_fast_cover<S: AsRef<str>>(samples: &[S]) -> Result<Vec<u8>, String> {
    use zstd_sys::{ZDICT_fastCover_params_t, ZDICT_params_t};
    let sizes: Vec<usize> = samples.iter().map(|s| s.as_ref().len()).collect();
    let flat: Vec<u8> = samples.iter().flat_map(|s| s.as_ref().bytes()).collect();
    let count = u32::try_from(samples.len()).map_err(|_| "too many samples".to_string())?;
    let params = ZDICT_fastCover_params_t {
        k: FAST_COVER_K,
        d: FAST_COVER_D,
        f: 0,
        steps: 0,
        nbThreads: 0,
        splitPoint: 0.0,
        accel: 0,
        shrinkDict: 0,
        shrinkDictMaxRegression: 0,
        zParams: ZDICT_params_t {
            compressionLevel: LEVEL,
            notificationLevel: 0,
            dictID: 0,
        },
    };
    let mut dict = vec![0u8; DICTIONARY_BYTES];
    // SAFETY: `dict` is writable for its length, `flat` holds `sizes`' sum of bytes, and
    // `sizes` has `count` entries; zstd reads and writes nothing else.
    let written = unsafe {
        zstd_sys::ZDICT_trainFromBuffer_fastCover(
            dict.as_mut_ptr().cast(),
            dict.len(),
            flat.as_ptr().cast(),
            sizes.as_ptr(),
            count,
            params,
        )
    };
    // SAFETY: `ZDICT_isError` only inspects the number.
    if unsafe { zstd_sys::ZDICT_isError(written) } != 0 {
        return Err(zstd::zstd_safe::get_error_name(written).to_string());
    }
    dict.truncate(written);
    Ok(dict)
}

/// The stored table of a source.
pub(crate) fn rows_table(source: SourceKind) -> &'static str {
    match source {
        SourceKind::AuditLogs => "MiroAuditLogs_CL_rows",
        SourceKind::ContentLogs => "MiroContentLogs_CL_rows",
        SourceKind::AiInteractionLogs => "MiroAiInteractionLogs_CL_rows",
    }
}

/// The rows of `table` stored as text after `_seq` `?1`, `?2` at most, in `_seq` order.
/// `_raw < x''` is "stored as text" (every text sorts before every blob) in the words of
/// the partial index of those rows, so that the index is used (`docs/store.md`, "Writing
/// rows").
pub(crate) fn text_rows_sql(table: &str) -> String {
    format!("SELECT _seq, _raw FROM {table} WHERE _raw < x'' AND _seq > ?1 ORDER BY _seq LIMIT ?2")
}

/// Trains `source`'s dictionary once [`TRAIN_ROWS`] of its items are stored as text,
/// then re-encodes every item still stored as text, [`COMPACT_BATCH`] rows per
/// transaction (each row is re-encoded only if it still holds the text read). Returns
/// the rows re-encoded. Safe beside another writer: a dictionary trained by it is used.
pub(crate) fn compact(
    conn: &mut Connection,
    codec: &RawCodec,
    source: SourceKind,
) -> rusqlite::Result<u64> {
    let table = rows_table(source);
    let plain_sql = text_rows_sql(table);
    // A read first (the partial index of text rows): most calls find nothing to do and
    // take no write lock.
    let text_rows: i64 = conn.query_row(
        &format!("SELECT count(*) FROM (SELECT 1 FROM {table} WHERE _raw < x'' LIMIT ?1)"),
        [TRAIN_ROWS_SQL],
        |r| r.get(0),
    )?;
    if text_rows == 0 || (!codec.has_dictionary(source) && text_rows < TRAIN_ROWS_SQL) {
        return Ok(0);
    }
    if !codec.has_dictionary(source) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        codec.load(&tx)?;
        if !codec.has_dictionary(source) {
            let samples: Vec<String> = {
                let mut stmt = tx.prepare(&plain_sql)?;
                let rows = stmt.query_map(params![0, TRAIN_ROWS_SQL], |r| r.get(1))?;
                rows.collect::<Result<_, _>>()?
            };
            if samples.len() < TRAIN_ROWS {
                return Ok(0);
            }
            save_dictionary(tx, codec, source, &samples)?;
        }
    }
    let Some(mut encoder) = codec.encoder(source) else {
        return Ok(0);
    };
    let mut done = 0u64;
    let mut after = 0i64;
    loop {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let batch: Vec<(i64, String)> = {
            let mut stmt = tx.prepare_cached(&plain_sql)?;
            let rows = stmt.query_map(params![after, COMPACT_BATCH], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let Some(&(last, _)) = batch.last() else {
            return Ok(done);
        };
        {
            let mut update = tx.prepare_cached(&format!(
                "UPDATE {table} SET _raw = ?1 WHERE _seq = ?2 AND _raw = ?3"
            ))?;
            for (seq, raw) in &batch {
                let stored = encoder.encode(raw);
                if matches!(stored, Value::Blob(_)) {
                    done += update.execute(params![stored, seq, raw])? as u64;
                }
            }
        }
        tx.commit()?;
        after = last;
    }
}

/// Trains `source`'s dictionary from `items` (the first [`TRAIN_ROWS`] of them) before
/// they are stored, if the source has none yet: a backfill's first group of pages holds
/// enough items to train on, and its rows are then stored compressed, never as text to be
/// re-encoded by [`compact`]. Does nothing when `items` are fewer than
/// [`EARLY_TRAIN_ROWS`] (a live page: its rows are stored as text and [`compact`] trains
/// once enough are stored). Returns whether the source has a dictionary now.
pub(crate) fn train_from_items<'r>(
    conn: &mut Connection,
    codec: &RawCodec,
    source: SourceKind,
    items: impl ExactSizeIterator<Item = &'r str>,
) -> rusqlite::Result<bool> {
    if codec.has_dictionary(source) {
        return Ok(true);
    }
    if items.len() < EARLY_TRAIN_ROWS {
        return Ok(false);
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    codec.load(&tx)?;
    if !codec.has_dictionary(source) {
        let samples: Vec<&str> = items.take(TRAIN_ROWS).collect();
        save_dictionary(tx, codec, source, &samples)?;
    }
    Ok(codec.has_dictionary(source))
}

/// Trains a dictionary for `source` on `samples`, writes it and commits `tx`, then lets
/// `codec` encode with it (a row encoded with it is never committed before it).
fn save_dictionary<S: AsRef<str>>(
    tx: rusqlite::Transaction<'_>,
    codec: &RawCodec,
    source: SourceKind,
    samples: &[S],
) -> rusqlite::Result<()> {
    let bytes = train(samples);
    let Some(dict) = Dictionary::new(&bytes) else {
        tracing::warn!(source = %source, "zstd refused the trained dictionary; items stay stored as text");
        return Ok(());
    };
    tx.execute(
        "INSERT INTO raw_dictionaries (source, dictionary, trained_rows, created_ms)
         VALUES (?1, ?2, ?3, ?4)",
        params![
            source.name(),
            bytes,
            i64::try_from(samples.len()).unwrap_or(i64::MAX),
            crate::timefmt::UnixMs::now().0
        ],
    )?;
    let id = tx.last_insert_rowid();
    tx.commit()?;
    codec.add(id, source, dict);
    tracing::info!(source = %source, dictionary = id, bytes = bytes.len(), samples = samples.len(), "trained the store's compression dictionary");
    Ok(())
}

/// Adds `mirotrail_raw(_raw)` (the item's text) and `mirotrail_column(source, column,
/// _raw)` (one column of the item as the transform derives it) to `conn`: the views
/// `MiroAuditLogs_CL` and `MiroContentLogs_CL` use them.
pub(crate) fn register_functions(conn: &Connection, codec: &Arc<RawCodec>) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    let decoder = Mutex::new(codec.decoder());
    conn.create_scalar_function("mirotrail_raw", 1, flags, move |ctx| {
        let mut decoder = decoder.lock().expect("decoder lock");
        decoder
            .decode(ctx.get_raw(0))
            .map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))
    })?;
    // A row's columns are read one call each: the last row's item is kept, read once and
    // keyed by its stored bytes, so a row is decoded and parsed once, and only the columns
    // asked for are rendered (`transform::ItemCells`).
    struct LastRow {
        source: Option<SourceKind>,
        key: Vec<u8>,
        cells: Option<transform::ItemCells>,
    }
    let state = Mutex::new((
        codec.decoder(),
        LastRow {
            source: None,
            key: Vec::new(),
            cells: None,
        },
    ));
    let user_error = |what: String| rusqlite::Error::UserFunctionError(what.into());
    conn.create_scalar_function("mirotrail_column", 3, flags, move |ctx| {
        let source = ctx
            .get_raw(0)
            .as_str()
            .map_err(|e| user_error(e.to_string()))?;
        let source = SourceKind::from_name(source)
            .ok_or_else(|| user_error(format!("unknown source {source}")))?;
        let column = ctx
            .get_raw(1)
            .as_str()
            .map_err(|e| user_error(e.to_string()))?;
        let index = transform::columns(source)
            .iter()
            .position(|c| *c == column)
            .ok_or_else(|| user_error(format!("unknown column {column}")))?;
        let stored = ctx.get_raw(2);
        let key = match stored {
            ValueRef::Text(b) | ValueRef::Blob(b) => b,
            _ => return Ok(None),
        };
        let mut guard = state.lock().expect("column cache lock");
        let (decoder, last) = &mut *guard;
        if last.source != Some(source) || last.key != key || last.cells.is_none() {
            last.cells = None;
            let raw = decoder
                .decode(stored)
                .map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))?;
            last.cells = Some(transform::ItemCells::new(source, raw));
            last.key.clear();
            last.key.extend_from_slice(key);
            last.source = Some(source);
        }
        Ok(last
            .cells
            .as_ref()
            .and_then(|cells| cells.get(index))
            .map(str::to_owned))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn trained(samples: usize) -> Arc<RawCodec> {
        let codec = RawCodec::new(None);
        let items: Vec<String> = (0..samples)
            .map(|i| format!(r#"{{"id":"{i}","event":"board_opened","createdBy":{{"email":"u{}@example.com"}}}}"#, i % 7))
            .collect();
        let bytes = train(&items);
        codec.add(1, SourceKind::AuditLogs, Dictionary::new(&bytes).unwrap());
        codec
    }

    #[test]
    fn the_trainer_builds_a_zstd_dictionary_that_compresses_items() {
        let items: Vec<String> = (0..TRAIN_ROWS)
            .map(|i| format!(r#"{{"id":"{i:08}","event":"board_opened","context":{{"ip":"10.0.{}.{}"}},"createdBy":{{"email":"user{}@example.com","name":"User {}"}}}}"#, i % 13, i % 251, i % 37, i % 37))
            .collect();
        let bytes = train_fast_cover(&items).expect("fastCover trains on similar items");
        // A trained dictionary (not the raw-content fallback) starts with zstd's magic.
        assert_eq!(bytes[..4], 0xEC30_A437u32.to_le_bytes());
        let codec = RawCodec::new(None);
        codec.add(1, SourceKind::AuditLogs, Dictionary::new(&bytes).unwrap());
        let mut encoder = codec.encoder(SourceKind::AuditLogs).unwrap();
        let item = &items[7];
        let Value::Blob(blob) = encoder.encode(item) else {
            panic!("not compressed")
        };
        assert!(
            blob.len() < item.len() / 3,
            "{} of {} bytes",
            blob.len(),
            item.len()
        );
        assert_eq!(
            &codec.decoder().decode(ValueRef::Blob(&blob)).unwrap(),
            item
        );
    }

    #[test]
    fn leb128_round_trips() {
        for n in [0u64, 1, 127, 128, 300, 1 << 40, u64::MAX] {
            let mut out = Vec::new();
            leb128(&mut out, n);
            out.push(42);
            assert_eq!(read_leb128(&out), Some((n, &[42u8][..])));
        }
    }

    #[test]
    fn similar_items_compress_and_decode_exactly() {
        let codec = trained(TRAIN_ROWS);
        let mut encoder = codec.encoder(SourceKind::AuditLogs).unwrap();
        let item =
            r#"{"id":"123456","event":"board_opened","createdBy":{"email":"u3@example.com"}}"#;
        let Value::Blob(blob) = encoder.encode(item) else {
            panic!("not compressed")
        };
        assert!(blob.len() < item.len() / 2, "{} bytes", blob.len());
        assert_eq!(codec.decoder().decode(ValueRef::Blob(&blob)).unwrap(), item);
    }

    #[test]
    fn unreadable_blobs_are_errors_not_panics() {
        let codec = trained(100);
        let mut decoder = codec.decoder();
        assert!(matches!(
            decoder.decode(ValueRef::Blob(&[9, 1, 2])),
            Err(RawError::Format(9))
        ));
        assert!(matches!(
            decoder.decode(ValueRef::Blob(&[FORMAT_ZSTD_DICT, 5, 1, 2])),
            Err(RawError::MissingDictionary(5))
        ));
        assert!(matches!(
            decoder.decode(ValueRef::Blob(&[FORMAT_ZSTD_DICT, 1, 1, 2, 3, 4, 5])),
            Err(RawError::Corrupt(_))
        ));
    }

    proptest! {
        #[test]
        fn any_text_reads_back_byte_exact(item in ".{0,600}") {
            let codec = trained(200);
            let mut encoder = codec.encoder(SourceKind::AuditLogs).unwrap();
            let stored = encoder.encode(&item);
            let back = match &stored {
                Value::Blob(b) => codec.decoder().decode(ValueRef::Blob(b)).unwrap(),
                Value::Text(t) => t.clone(),
                other => panic!("{other:?}"),
            };
            prop_assert_eq!(back, item);
        }
    }
}
