//! `rpmdb.sqlite` opened from bytes, never from a path.
//!
//! The database comes from a scanned disk, so SQLite must not touch the
//! host's filesystem for it (no `-wal`/`-shm`/journal files beside some
//! path, no locks): the bytes are copied into an in-memory database with
//! `sqlite3_deserialize` (rusqlite's `serialize` feature), read-only.
//!
//! rpm keeps the database in WAL mode, which sets header bytes 18 and 19
//! ("file format write/read version") to 2. SQLite's in-memory VFS has no
//! shared memory for a WAL index, so it refuses to open such an image
//! ("unable to open database file"; `sqlite3PagerWalSupported` is false for
//! it). The caller applies the WAL itself ([`super::wal`]), and here bytes
//! 18 and 19 are rewritten from 2 to 1 (legacy rollback journal) on the way
//! into SQLite: the rest of the file is the same in both modes. The test
//! `wal_mode_image_needs_the_version_bytes_rewritten` shows both facts.
//!
//! Hostile databases: SQLite is hardened against corrupt files, and on top
//! of that the connection is read-only with `SQLITE_DBCONFIG_DEFENSIVE` and
//! untrusted schema; `Packages` must be an ordinary table with ordinary
//! `hnum` and `blob` columns (a view or a generated column would let the
//! file decide how much work a query does); and the caller caps the rows
//! read. SQLite rejects b-tree child pages without cells, so rows read bound
//! the pages visited.

use std::io::Read;

use rusqlite::config::DbConfig;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use thiserror::Error;

/// The 16 bytes that open every SQLite database.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// Offsets of the file format write and read version bytes.
const WRITE_VERSION_AT: usize = 18;
const READ_VERSION_AT: usize = 19;
/// Version byte meaning WAL mode, and the one meaning rollback journal.
const VERSION_WAL: u8 = 2;
const VERSION_LEGACY: u8 = 1;

/// Why the database could not be opened or read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SqliteError {
    /// The image is empty.
    #[error("empty database file")]
    Empty,
    /// The image is over the size limit.
    #[error("{len} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The image's length.
        len: usize,
        /// The limit.
        limit: u64,
    },
    /// The image does not open with SQLite's magic.
    #[error("not an SQLite database (first bytes {found:02x?})")]
    NotSqlite {
        /// Up to the first 16 bytes.
        found: Vec<u8>,
    },
    /// SQLite refused to open or read the image.
    #[error("sqlite: {detail}")]
    Sqlite {
        /// What was being done and SQLite's message.
        detail: String,
    },
    /// The `Packages` table is missing or not what rpm creates.
    #[error("Packages table: {detail}")]
    Schema {
        /// What is wrong.
        detail: String,
    },
}

fn sqlite_error(doing: &str) -> impl FnOnce(rusqlite::Error) -> SqliteError + '_ {
    move |err| SqliteError::Sqlite {
        detail: format!("{doing}: {err}"),
    }
}

/// Open `image` (a database file's bytes, WAL already applied) as a
/// read-only in-memory database. The bytes are copied into SQLite's memory;
/// `image` may be dropped afterwards. A WAL-mode header is opened as a
/// legacy one (see the module doc).
///
/// # Errors
/// [`SqliteError`] when the image is empty, over `limit` bytes (also
/// SQLite's own `int` size limit), not SQLite, or refused by SQLite.
pub fn open_image(image: &[u8], limit: u64) -> Result<Connection, SqliteError> {
    if image.is_empty() {
        return Err(SqliteError::Empty);
    }
    let too_large = || SqliteError::TooLarge {
        len: image.len(),
        limit,
    };
    let len = u64::try_from(image.len()).map_err(|_| too_large())?;
    // sqlite3_deserialize takes the size as a C int; rusqlite panics past it.
    if len > limit || i32::try_from(len).is_err() {
        return Err(too_large());
    }
    if image.get(..SQLITE_MAGIC.len()) != Some(&SQLITE_MAGIC[..]) {
        return Err(SqliteError::NotSqlite {
            found: image.iter().take(SQLITE_MAGIC.len()).copied().collect(),
        });
    }
    let legacy = |at: usize| match image.get(at) {
        Some(&VERSION_WAL) => VERSION_LEGACY,
        Some(&other) => other,
        None => 0,
    };
    let versions = [legacy(WRITE_VERSION_AT), legacy(READ_VERSION_AT)];
    // Header before the version bytes, the rewritten bytes, the rest: no
    // second copy of the image on our side.
    let reader = image
        .get(..WRITE_VERSION_AT)
        .unwrap_or_default()
        .chain(&versions[..])
        .chain(
            image
                .get(READ_VERSION_AT.saturating_add(1)..)
                .unwrap_or_default(),
        );

    let mut conn = Connection::open_in_memory_with_flags(
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_error("opening an in-memory database"))?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
        .map_err(sqlite_error("setting defensive mode"))?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)
        .map_err(sqlite_error("distrusting the schema"))?;
    let len = usize::try_from(len).map_err(|_| too_large())?;
    conn.deserialize_read_exact(rusqlite::MAIN_DB, reader, len, true)
        .map_err(sqlite_error("loading the image"))?;
    conn.execute_batch("PRAGMA query_only = ON; PRAGMA cell_size_check = ON;")
        .map_err(sqlite_error("setting pragmas"))?;
    Ok(conn)
}

/// One row of `Packages`.
#[derive(Debug)]
pub struct PackageRow<'a> {
    /// The header number (rowid).
    pub hnum: i64,
    /// The header blob, or the SQLite type the column had instead.
    pub blob: Result<&'a [u8], &'static str>,
}

/// How reading `Packages` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowsEnd {
    /// Every row was read.
    Complete,
    /// Reading stopped early, for this reason (rows before it were visited).
    Stopped(String),
}

/// Visit the rows of `Packages` in `hnum` order, at most `max_rows`.
///
/// rpm declares `hnum INTEGER PRIMARY KEY`, so a table scan yields strictly
/// increasing `hnum`s; a scan that does not (a corrupt b-tree sharing pages)
/// stops there.
///
/// # Errors
/// [`SqliteError`] when the table is missing or not as rpm creates it, or
/// the query cannot start. Errors after the first row are [`RowsEnd::Stopped`].
pub fn read_rows(
    conn: &Connection,
    max_rows: usize,
    mut visit: impl FnMut(PackageRow<'_>),
) -> Result<RowsEnd, SqliteError> {
    check_schema(conn)?;
    let mut statement = conn
        .prepare("SELECT hnum, blob FROM Packages")
        .map_err(sqlite_error("preparing the Packages query"))?;
    let mut rows = statement
        .query([])
        .map_err(sqlite_error("querying Packages"))?;
    let mut count = 0usize;
    let mut last: Option<i64> = None;
    let after = |last: Option<i64>| last.map_or(String::from("the start"), |h| format!("hnum {h}"));
    loop {
        let row = match rows.next() {
            Ok(Some(row)) => row,
            Ok(None) => return Ok(RowsEnd::Complete),
            Err(err) => {
                return Ok(RowsEnd::Stopped(format!(
                    "reading Packages after {}: {err}",
                    after(last)
                )));
            }
        };
        if count >= max_rows {
            return Ok(RowsEnd::Stopped(format!(
                "more than {max_rows} rows in Packages; the rest were not read"
            )));
        }
        count = count.saturating_add(1);
        let hnum = match row.get_ref(0) {
            Ok(ValueRef::Integer(hnum)) => hnum,
            Ok(other) => {
                return Ok(RowsEnd::Stopped(format!(
                    "Packages has a {} hnum after {}",
                    other.data_type(),
                    after(last)
                )));
            }
            Err(err) => {
                return Ok(RowsEnd::Stopped(format!(
                    "reading hnum after {}: {err}",
                    after(last)
                )));
            }
        };
        if last.is_some_and(|last| hnum <= last) {
            return Ok(RowsEnd::Stopped(format!(
                "hnum {hnum} comes after {}: corrupt table b-tree",
                after(last)
            )));
        }
        last = Some(hnum);
        let blob = match row.get_ref(1) {
            Ok(ValueRef::Blob(bytes)) => Ok(bytes),
            Ok(ValueRef::Null) => Err("NULL"),
            Ok(ValueRef::Integer(_)) => Err("INTEGER"),
            Ok(ValueRef::Real(_)) => Err("REAL"),
            Ok(ValueRef::Text(_)) => Err("TEXT"),
            Err(_) => Err("unreadable"),
        };
        visit(PackageRow { hnum, blob });
    }
}

/// `Packages` must be an ordinary table (not a view or virtual table) whose
/// `hnum` and `blob` columns are stored, not generated.
fn check_schema(conn: &Connection) -> Result<(), SqliteError> {
    let sql: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'Packages'",
            [],
            |row| row.get(0),
        )
        .map_err(|err| match err {
            rusqlite::Error::QueryReturnedNoRows => SqliteError::Schema {
                detail: "no such table".into(),
            },
            other => sqlite_error("reading the schema")(other),
        })?;
    let sql = sql.unwrap_or_default();
    let starts = sql.get(..12).unwrap_or_default();
    if !starts.eq_ignore_ascii_case("CREATE TABLE") {
        return Err(SqliteError::Schema {
            detail: format!("not an ordinary table: {}", truncate(&sql)),
        });
    }
    let mut statement = conn
        .prepare("SELECT name, hidden FROM pragma_table_xinfo('Packages')")
        .map_err(sqlite_error("reading the Packages columns"))?;
    let columns: Vec<(String, i64)> = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .and_then(Iterator::collect)
        .map_err(sqlite_error("reading the Packages columns"))?;
    for wanted in ["hnum", "blob"] {
        match columns
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
        {
            Some((_, 0)) => {}
            Some(_) => {
                return Err(SqliteError::Schema {
                    detail: format!("column {wanted} is generated or hidden"),
                });
            }
            None => {
                return Err(SqliteError::Schema {
                    detail: format!("no {wanted} column"),
                });
            }
        }
    }
    Ok(())
}

/// At most 200 characters of `text`, for messages.
fn truncate(text: &str) -> String {
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u64 = 64 * 1024 * 1024;

    /// A database built by rusqlite, serialized, with `sql` run first.
    fn image(sql: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(sql)?;
        Ok(conn.serialize(rusqlite::MAIN_DB)?.to_vec())
    }

    fn rows(image: &[u8]) -> Result<(Vec<(i64, usize)>, RowsEnd), SqliteError> {
        let conn = open_image(image, LIMIT)?;
        let mut seen = Vec::new();
        let end = read_rows(&conn, 10, |row| {
            seen.push((row.hnum, row.blob.map_or(usize::MAX, <[u8]>::len)));
        })?;
        Ok((seen, end))
    }

    #[test]
    fn wal_mode_image_needs_the_version_bytes_rewritten() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("wal.sqlite");
        let conn = Connection::open(&path)?;
        let _: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch(
            "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB NOT NULL);
             INSERT INTO Packages (blob) VALUES (x'0102');
             PRAGMA wal_checkpoint(TRUNCATE);",
        )?;
        drop(conn);
        let bytes = std::fs::read(&path)?;
        assert_eq!(bytes[18..20], [2, 2], "WAL mode sets both version bytes");

        // As is, SQLite's in-memory VFS cannot open a WAL-mode image.
        let mut raw = Connection::open_in_memory()?;
        raw.deserialize_read_exact(rusqlite::MAIN_DB, &bytes[..], bytes.len(), true)?;
        let direct = raw.query_row("SELECT count(*) FROM Packages", [], |r| r.get::<_, i64>(0));
        assert!(direct.is_err(), "unexpectedly opened: {direct:?}");

        // Rewritten to legacy, it opens.
        assert_eq!(rows(&bytes)?, (vec![(1, 2)], RowsEnd::Complete));
        Ok(())
    }

    #[test]
    fn rows_come_in_order_with_their_types() -> Result<(), Box<dyn std::error::Error>> {
        let bytes = image(
            "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL);
             INSERT INTO Packages VALUES (3, x'00'), (1, x'0000'), (7, 'text');",
        )?;
        let (seen, end) = rows(&bytes)?;
        assert_eq!(seen, vec![(1, 2), (3, 1), (7, usize::MAX)]);
        assert_eq!(end, RowsEnd::Complete);
        Ok(())
    }

    #[test]
    fn rows_past_the_cap_are_not_read() -> Result<(), Box<dyn std::error::Error>> {
        let bytes = image(
            "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB NOT NULL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 25)
             INSERT INTO Packages SELECT i, x'00' FROM n;",
        )?;
        let (seen, end) = rows(&bytes)?;
        assert_eq!(seen.len(), 10);
        assert!(matches!(end, RowsEnd::Stopped(_)));
        Ok(())
    }

    #[test]
    fn unusual_schemas_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let cases = [
            "CREATE TABLE Other (x);",
            "CREATE VIEW Packages AS
               WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n)
               SELECT i AS hnum, x'00' AS blob FROM n;",
            "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY,
               blob BLOB AS (zeroblob(100000000)));",
            "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, data BLOB);",
        ];
        for sql in cases {
            let result = rows(&image(sql)?);
            assert!(
                matches!(result, Err(SqliteError::Schema { .. })),
                "{sql}: {result:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn non_databases_are_errors() {
        assert_eq!(open_image(&[], LIMIT).err(), Some(SqliteError::Empty));
        assert!(matches!(
            open_image(b"not a database at all", LIMIT),
            Err(SqliteError::NotSqlite { .. })
        ));
        assert!(matches!(
            open_image(&[0u8; 64], 10),
            Err(SqliteError::TooLarge { .. })
        ));
        // Just the magic: SQLite itself refuses it, or finds no table.
        let mut short = SQLITE_MAGIC.to_vec();
        short.extend_from_slice(&[0u8; 100]);
        assert!(rows(&short).is_err());
    }
}
