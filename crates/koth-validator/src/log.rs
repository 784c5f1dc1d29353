//! The append-only event log: one SQLite file, one table, written before anything is acted on.
//!
//! - WAL journal and `synchronous=FULL`: when [`EventLog::append`] returns, the event survives a
//!   power cut or a SIGKILL.
//! - `application_id` and `user_version` mark the file as a koth log of this schema; a foreign,
//!   damaged or newer file is a clear error, never re-initialised (PROTOCOL §9: a validator that
//!   re-seeded on a read error once overwrote its history).
//! - Triggers refuse `UPDATE` and `DELETE`, and any insert that is not exactly the next sequence
//!   number; replay also checks the sequence has no gap.
//! - A lock file (`<log>.lock`, an advisory OS lock) keeps a second validator off the same log.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags};

use crate::core::{apply, ApplyError};
use crate::event::{Event, EVENT_VERSION};
use crate::state::ValidatorState;

/// `PRAGMA application_id` of a koth event log: "koth" in ASCII.
pub const APPLICATION_ID: i32 = 0x6b6f_7468;
/// `PRAGMA user_version`: the table layout below.
pub const SCHEMA_VERSION: i32 = 1;

const SCHEMA: &str = "
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    at_unix_ms INTEGER NOT NULL,
    v INTEGER NOT NULL,
    kind TEXT NOT NULL,
    json TEXT NOT NULL
) STRICT;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'koth event log is append-only: UPDATE refused'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'koth event log is append-only: DELETE refused'); END;
CREATE TRIGGER events_next_seq_only BEFORE INSERT ON events
WHEN NEW.seq IS NOT (SELECT COALESCE(MAX(seq), 0) + 1 FROM events)
BEGIN SELECT RAISE(ABORT, 'koth event log is append-only: only the next seq may be inserted'); END;
";

const TRIGGERS: [&str; 3] = [
    "events_no_update",
    "events_no_delete",
    "events_next_seq_only",
];

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("event log {path}: already exists; refusing to initialise a new log over it")]
    Exists { path: PathBuf },
    #[error("event log {path}: does not exist")]
    Missing { path: PathBuf },
    #[error(
        "event log {path}: not a koth event log (application_id {found:#x}, expected {APPLICATION_ID:#x}); refusing to touch it"
    )]
    Foreign { path: PathBuf, found: i32 },
    #[error("event log {path}: schema version {found}; this build reads version {SCHEMA_VERSION}")]
    Schema { path: PathBuf, found: i32 },
    #[error("event log {path}: damaged: {detail}; refusing to start (restore it from a backup)")]
    Corrupt { path: PathBuf, detail: String },
    #[error("event log {path}: event {seq}: {detail}; refusing to start")]
    BadRow {
        path: PathBuf,
        seq: i64,
        detail: String,
    },
    #[error("event log {path}: event {seq} does not apply to the state before it: {source}")]
    Replay {
        path: PathBuf,
        seq: i64,
        source: ApplyError,
    },
    #[error("event log {path}: in use by another process (lock {lock} is held)")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("event log {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("event log {path}: lock file {lock}: {source}")]
    Io {
        path: PathBuf,
        lock: PathBuf,
        source: std::io::Error,
    },
    #[error("event log {path}: could not encode a `{kind}` event: {source}")]
    Encode {
        path: PathBuf,
        kind: &'static str,
        source: serde_json::Error,
    },
}

/// One row of the log (the type lives with the events, in koth-hill).
pub use koth_hill::event::LoggedEvent;

/// A writable event log. Holds the log's lock for as long as it lives.
pub struct EventLog {
    conn: Connection,
    path: PathBuf,
    next_seq: i64,
    _lock: File,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("path", &self.path)
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

fn take_lock(path: &Path) -> Result<File, LogError> {
    let lock = lock_path(path);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|source| LogError::Io {
            path: path.to_path_buf(),
            lock: lock.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LogError::Locked {
            path: path.to_path_buf(),
            lock,
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(LogError::Io {
            path: path.to_path_buf(),
            lock,
            source,
        }),
    }
}

fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl EventLog {
    /// Create a new, empty log. Fails if anything exists at `path`.
    pub fn create(path: &Path) -> Result<Self, LogError> {
        if path.exists() {
            return Err(LogError::Exists {
                path: path.to_path_buf(),
            });
        }
        let lock = take_lock(path)?;
        let sql = |source| LogError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(sql)?;
        set_durability(&conn).map_err(sql)?;
        let tx = conn.transaction().map_err(sql)?;
        tx.execute_batch(SCHEMA).map_err(sql)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(sql)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
            next_seq: 1,
            _lock: lock,
        })
    }

    /// Open an existing log for appending, after checking it is a koth log of this schema and
    /// undamaged. Never creates or repairs anything.
    pub fn open(path: &Path) -> Result<Self, LogError> {
        if !path.exists() {
            return Err(LogError::Missing {
                path: path.to_path_buf(),
            });
        }
        let lock = take_lock(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|source| LogError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
        verify(&conn, path)?;
        set_durability(&conn).map_err(|source| LogError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
        let next_seq = max_seq(&conn, path)? + 1;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
            next_seq,
            _lock: lock,
        })
    }

    /// [`EventLog::open`] if `path` exists, else [`EventLog::create`].
    pub fn open_or_create(path: &Path) -> Result<Self, LogError> {
        if path.exists() {
            Self::open(path)
        } else {
            Self::create(path)
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of events in the log.
    pub fn len(&self) -> u64 {
        u64::try_from(self.next_seq - 1).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.next_seq == 1
    }

    /// Append one event; when this returns `Ok`, the event is on disk. Returns its sequence
    /// number (1 for the first event).
    pub fn append(&mut self, event: &Event) -> Result<i64, LogError> {
        let json = serde_json::to_string(event).map_err(|source| LogError::Encode {
            path: self.path.clone(),
            kind: event.kind(),
            source,
        })?;
        let seq = self.next_seq;
        self.conn
            .execute(
                "INSERT INTO events (seq, at_unix_ms, v, kind, json) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![seq, now_unix_ms(), EVENT_VERSION, event.kind(), json],
            )
            .map_err(|source| LogError::Sqlite {
                path: self.path.clone(),
                source,
            })?;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Visit every event in order, checking the sequence has no gap and every row decodes.
    pub fn replay<F>(&self, visit: F) -> Result<(), LogError>
    where
        F: FnMut(LoggedEvent) -> Result<(), LogError>,
    {
        replay_conn(&self.conn, &self.path, 1, usize::MAX, visit)
    }

    /// Up to `limit` events with `seq >= from`, in order (for feeds catching up).
    pub fn read_from(&self, from: i64, limit: usize) -> Result<Vec<LoggedEvent>, LogError> {
        let mut out = Vec::new();
        replay_conn(&self.conn, &self.path, from.max(1), limit, |e| {
            out.push(e);
            Ok(())
        })?;
        Ok(out)
    }

    /// Rebuild the state by applying every event; any row that does not decode or apply is an
    /// error (the validator must not start on it).
    pub fn load_state(&self) -> Result<ValidatorState, LogError> {
        let mut state = ValidatorState::new();
        self.replay(|logged| {
            apply(&mut state, &logged.event).map_err(|source| LogError::Replay {
                path: self.path.clone(),
                seq: logged.seq,
                source,
            })?;
            Ok(())
        })?;
        Ok(state)
    }
}

fn set_durability(conn: &Connection) -> rusqlite::Result<()> {
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidQuery);
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

/// The file must be a koth log of this schema, with its triggers, and pass SQLite's own check.
fn verify(conn: &Connection, path: &Path) -> Result<(), LogError> {
    // A file that is not SQLite at all fails on the first read with "file is not a database".
    let app_id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(|e| LogError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("cannot read its header ({e})"),
        })?;
    if app_id != APPLICATION_ID {
        return Err(LogError::Foreign {
            path: path.to_path_buf(),
            found: app_id,
        });
    }
    let version: i32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| LogError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("cannot read its schema version ({e})"),
        })?;
    if version != SCHEMA_VERSION {
        return Err(LogError::Schema {
            path: path.to_path_buf(),
            found: version,
        });
    }
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| LogError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("integrity check could not run ({e})"),
        })?;
    if check != "ok" {
        return Err(LogError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("integrity check: {check}"),
        });
    }
    for name in std::iter::once("events").chain(TRIGGERS) {
        let found: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .map_err(|e| LogError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("cannot read its schema ({e})"),
            })?;
        if found != 1 {
            return Err(LogError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("`{name}` is missing from its schema"),
            });
        }
    }
    Ok(())
}

fn max_seq(conn: &Connection, path: &Path) -> Result<i64, LogError> {
    conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
        .map_err(|source| LogError::Sqlite {
            path: path.to_path_buf(),
            source,
        })
}

fn replay_conn<F>(
    conn: &Connection,
    path: &Path,
    from: i64,
    limit: usize,
    mut visit: F,
) -> Result<(), LogError>
where
    F: FnMut(LoggedEvent) -> Result<(), LogError>,
{
    let sql = |source| LogError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let mut stmt = conn
        .prepare("SELECT seq, at_unix_ms, v, kind, json FROM events WHERE seq >= ?1 ORDER BY seq")
        .map_err(sql)?;
    let mut rows = stmt.query([from]).map_err(sql)?;
    let mut expected = from;
    let mut visited = 0usize;
    while visited < limit {
        let Some(row) = rows.next().map_err(sql)? else {
            break;
        };
        let bad = |seq: i64, detail: String| LogError::BadRow {
            path: path.to_path_buf(),
            seq,
            detail,
        };
        let seq: i64 = row.get(0).map_err(sql)?;
        if seq != expected {
            return Err(bad(
                seq,
                format!("sequence gap: expected event {expected} next"),
            ));
        }
        let at_unix_ms: i64 = row.get(1).map_err(sql)?;
        let v: i64 = row.get(2).map_err(sql)?;
        if v != i64::from(EVENT_VERSION) {
            return Err(bad(
                seq,
                format!("event version {v}; this build reads version {EVENT_VERSION}"),
            ));
        }
        let kind: String = row.get(3).map_err(sql)?;
        let json: String = row.get(4).map_err(sql)?;
        let event: Event = serde_json::from_str(&json)
            .map_err(|e| bad(seq, format!("`{kind}` event does not decode: {e}")))?;
        if event.kind() != kind {
            return Err(bad(
                seq,
                format!(
                    "kind column says `{kind}` but the event is `{}`",
                    event.kind()
                ),
            ));
        }
        if seq == 1 && !matches!(event, Event::Started { .. }) {
            return Err(bad(
                seq,
                format!("the first event is `{kind}`, not `started`"),
            ));
        }
        visit(LoggedEvent {
            seq,
            at_unix_ms,
            event,
        })?;
        expected += 1;
        visited += 1;
    }
    Ok(())
}

/// Open a log read-only (for inspection and feeds in another process): no lock, no writes.
pub fn open_read_only(path: &Path) -> Result<ReadOnlyLog, LogError> {
    if !path.exists() {
        return Err(LogError::Missing {
            path: path.to_path_buf(),
        });
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| LogError::Sqlite {
        path: path.to_path_buf(),
        source,
    })?;
    verify(&conn, path)?;
    Ok(ReadOnlyLog {
        conn,
        path: path.to_path_buf(),
    })
}

/// A log opened with [`open_read_only`].
pub struct ReadOnlyLog {
    conn: Connection,
    path: PathBuf,
}

impl ReadOnlyLog {
    pub fn replay<F>(&self, visit: F) -> Result<(), LogError>
    where
        F: FnMut(LoggedEvent) -> Result<(), LogError>,
    {
        replay_conn(&self.conn, &self.path, 1, usize::MAX, visit)
    }

    /// Up to `limit` events with `seq >= from`, in order (an SSE client catching up).
    pub fn read_from(&self, from: i64, limit: usize) -> Result<Vec<LoggedEvent>, LogError> {
        let mut out = Vec::new();
        replay_conn(&self.conn, &self.path, from.max(1), limit, |e| {
            out.push(e);
            Ok(())
        })?;
        Ok(out)
    }

    pub fn load_state(&self) -> Result<ValidatorState, LogError> {
        let mut state = ValidatorState::new();
        self.replay(|logged| {
            apply(&mut state, &logged.event).map_err(|source| LogError::Replay {
                path: self.path.clone(),
                seq: logged.seq,
                source,
            })?;
            Ok(())
        })?;
        Ok(state)
    }
}
