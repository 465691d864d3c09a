//! The state store: what the engine decided, kept in SQLite so nothing is sent twice.
//!
//! The engine is a deterministic function of (campaigns, data up to `now`). Each tick it
//! recomputes every entry and every send due at or before `now` and hands them, as it
//! decides them, to a [`TickRecorder`] ([`StateStore::begin_tick`]; or all at once to
//! [`StateStore::record_tick`]), which writes them into the tick's one transaction. The
//! store keeps what was decided:
//!
//! - a send is inserted once, by its stable `send_id`; later ticks that compute it again
//!   leave it untouched, so its delivery state survives;
//! - an entry is keyed by (moment, customer, trigger instant); while its fate is pending it
//!   follows the engine, and once a fate is recorded it never changes;
//! - `processed_up_to` remembers the latest `now` recorded.
//!
//! Delivery ([`crate::deliver`]) then reads [`StateStore::undelivered`] and marks each send
//! delivered or failed. Every outcome is kept in the `attempts` log.
//!
//! The database runs in WAL mode with `synchronous=FULL`: a tick is one transaction, and a
//! committed tick survives a crash or power loss. Instants are stored as fixed-width
//! RFC 3339 text in UTC (`2024-05-01T10:00:00.000000000Z`), so text order is time order and
//! the file stays readable with the `sqlite3` shell. The schema is versioned by the
//! `schema_version` table and migrated forward on [`StateStore::open`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use crate::engine::Sink;
use crate::outcome::{count_entry, Entry, EntryView, Fate, Group, Send, SendView, Summary};

/// Where the state lives unless told otherwise, relative to the project directory.
pub const DEFAULT_STATE_PATH: &str = ".moments/state.db";

/// How long [`StateStore::open`] and every write wait for another process's lock before
/// reporting the database as locked.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema version this build writes. Each entry of [`MIGRATIONS`] moves the database
/// one version forward; version 0 is an empty file.
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Migration `i` takes the schema from version `i` to `i + 1`. Never edit a released one:
/// append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE sends (
        send_id         TEXT PRIMARY KEY NOT NULL,
        moment          TEXT NOT NULL,
        customer_id     TEXT NOT NULL,
        channel         TEXT NOT NULL,
        grp             TEXT NOT NULL CHECK (grp IN ('treatment', 'control')),
        trigger_at      TEXT NOT NULL,
        sent_at         TEXT NOT NULL,
        message         TEXT NOT NULL,
        delivered_at    TEXT,
        attempts        INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT,
        next_attempt_at TEXT,
        gave_up_at      TEXT
    );
    CREATE INDEX sends_pending ON sends (sent_at, send_id)
        WHERE grp = 'treatment' AND delivered_at IS NULL AND gave_up_at IS NULL;
    CREATE TABLE entries (
        moment      TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        trigger_at  TEXT NOT NULL,
        due_at      TEXT NOT NULL,
        fate        TEXT,
        reason      TEXT NOT NULL,
        send_id     TEXT,
        UNIQUE (moment, customer_id, trigger_at)
    );
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    );
    CREATE TABLE attempts (
        send_id TEXT NOT NULL,
        at      TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail  TEXT NOT NULL
    );
    CREATE INDEX attempts_by_send ON attempts (send_id, at);",
    // 2: entries keyed by their trigger too: two triggers of one moment and customer in the
    // same second are two entries.
    "CREATE TABLE entries_v2 (
        moment      TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        trigger_at  TEXT NOT NULL,
        trigger_key TEXT NOT NULL,
        due_at      TEXT NOT NULL,
        fate        TEXT,
        reason      TEXT NOT NULL,
        send_id     TEXT,
        UNIQUE (moment, customer_id, trigger_at, trigger_key)
    );
    INSERT INTO entries_v2
        SELECT moment, customer_id, trigger_at, '', due_at, fate, reason, send_id FROM entries;
    DROP TABLE entries;
    ALTER TABLE entries_v2 RENAME TO entries;",
];

/// The columns of `sends` that make a [`Send`], in the order [`send_from_row`] reads them.
const SEND_COLUMNS: &str =
    "send_id, moment, customer_id, channel, grp, trigger_at, sent_at, message";

/// Why the state store could not do what was asked. Displays as one line naming the file.
#[derive(Debug)]
pub enum StateError {
    /// The database could not be opened or prepared: locked, corrupt, unreadable, or its
    /// directory could not be created.
    Open { path: PathBuf, detail: String },
    /// The file was written by a newer `moments` with a schema this build does not know.
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// A statement failed after the database was opened.
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// A stored value could not be read back (a timestamp, a fate, a message).
    Corrupt { path: PathBuf, detail: String },
    /// `mark_*` named a send the store does not have.
    UnknownSend { path: PathBuf, send_id: String },
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Open { path, detail } => {
                write!(f, "cannot open state database {}: {detail}", path.display())
            }
            StateError::TooNew {
                path,
                found,
                supported,
            } => write!(
                f,
                "state database {} has schema version {found}, but this moments knows only up \
                 to {supported}: upgrade moments",
                path.display()
            ),
            StateError::Sqlite { path, source } => {
                write!(f, "state database {}: {}", path.display(), describe(source))
            }
            StateError::Corrupt { path, detail } => {
                write!(f, "state database {} is damaged: {detail}", path.display())
            }
            StateError::UnknownSend { path, send_id } => write!(
                f,
                "state database {} has no send with id {send_id:?}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for StateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StateError::Sqlite { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// SQLite's message, with the two cases people meet spelled out.
fn describe(error: &rusqlite::Error) -> String {
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            "it is locked by another process (is another `moments run` going?)".to_owned()
        }
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            "it is not a valid SQLite database (corrupt, or another kind of file)".to_owned()
        }
        _ => error.to_string(),
    }
}

/// Where a send stands in delivery. Control sends are never delivered: theirs stays empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub send_id: String,
    pub delivered_at: Option<DateTime<Utc>>,
    /// Outcomes recorded so far: failures, the delivery, and giving up.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Not retried before this instant.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Set when delivery gave up for good; the send is then never retried.
    pub gave_up_at: Option<DateTime<Utc>>,
}

/// One row of the attempts log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub send_id: String,
    pub at: DateTime<Utc>,
    /// `delivered`, `failed` or `gave_up`.
    pub outcome: String,
    /// The error for a failure; where it went for a delivery.
    pub detail: String,
}

/// The decisions of past ticks and the delivery state of every send, in one SQLite file.
///
/// One process at a time should run ticks and delivery on a store; other processes may
/// open it to read (WAL mode lets them read while a tick writes). A write waits up to the
/// busy timeout for another writer, then fails with "locked".
pub struct StateStore {
    conn: Connection,
    path: PathBuf,
}

impl fmt::Debug for StateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl StateStore {
    /// Opens the store at `path`, creating it and its parent directories if needed, and
    /// migrates its schema to this build's version. Waits up to [`DEFAULT_BUSY_TIMEOUT`]
    /// for another process's lock.
    pub fn open(path: &Path) -> Result<StateStore, StateError> {
        StateStore::open_with_timeout(path, DEFAULT_BUSY_TIMEOUT)
    }

    /// [`StateStore::open`] with another wait for locks held by other processes.
    pub fn open_with_timeout(
        path: &Path,
        busy_timeout: Duration,
    ) -> Result<StateStore, StateError> {
        let open_error = |detail: String| StateError::Open {
            path: path.to_path_buf(),
            detail,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                open_error(format!("cannot create directory {}: {e}", parent.display()))
            })?;
        }
        if path.is_dir() {
            return Err(open_error("it is a directory".to_owned()));
        }
        let sqlite_error = |e: rusqlite::Error| open_error(describe(&e));
        let mut conn = Connection::open(path).map_err(sqlite_error)?;
        conn.busy_timeout(busy_timeout).map_err(sqlite_error)?;
        // The first statement that reads the file: a corrupt file or a lock shows here.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(sqlite_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_error(format!(
                "cannot switch it to WAL mode (it stays in {mode} mode)"
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite_error)?;
        // A tick writes entries in decision order, not key order: a page cache of 64 MiB
        // (the default is 2 MiB) keeps those inserts from going to disk one page at a time.
        conn.pragma_update(None, "cache_size", -65_536)
            .map_err(sqlite_error)?;
        migrate(&mut conn, path)?;
        Ok(StateStore {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The latest `now` a tick recorded; `None` before the first tick.
    pub fn processed_up_to(&self) -> Result<Option<DateTime<Utc>>, StateError> {
        let value: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'processed_up_to'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.sqlite(e))?;
        value.map(|v| self.parse_instant(&v)).transpose()
    }

    /// Records one tick, in one transaction:
    ///
    /// - inserts the sends whose `send_id` is not yet known, leaving known ones untouched
    ///   (their delivery state included), and returns the newly inserted ones in the order
    ///   given;
    /// - inserts new entries, and updates entries still pending; an entry whose fate was
    ///   already recorded never changes;
    /// - sets `processed_up_to` to `now` (never moving it back).
    ///
    /// A crash before the commit leaves the previous state; after it, all of this tick.
    pub fn record_tick(
        &mut self,
        now: DateTime<Utc>,
        entries: &[Entry],
        sends: &[Send],
    ) -> Result<Vec<Send>, StateError> {
        let mut tick = self.begin_tick()?;
        let mut inserted = Vec::new();
        for send in sends {
            if tick.insert_send(&send.view())? {
                inserted.push(send.clone());
            }
        }
        for entry in entries {
            tick.upsert_entry(&entry.view(0))?;
        }
        tick.commit(now)?;
        Ok(inserted)
    }

    /// Starts recording a tick: [`StateStore::record_tick`], with entries and sends
    /// written as the engine decides them (a [`TickRecorder`] is an engine `Sink`) instead
    /// of held until the end. Nothing of it is kept until [`TickRecorder::commit`].
    pub fn begin_tick(&mut self) -> Result<TickRecorder<'_>, StateError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| StateError::Sqlite {
                path: self.path.clone(),
                source: e,
            })?;
        Ok(TickRecorder {
            tx,
            path: self.path.clone(),
            error: None,
            decided: Summary::new(),
            new_sends: BTreeMap::new(),
        })
    }

    /// The treatment sends not yet delivered that may be tried at `now`: due (`sent_at`
    /// at or before `now`), not given up, and with no `next_attempt_at` or one at or
    /// before `now`. Sorted by (`sent_at`, `send_id`).
    pub fn undelivered(&self, now: DateTime<Utc>) -> Result<Vec<Send>, StateError> {
        self.undelivered_page(now, None, u32::MAX)
    }

    /// [`StateStore::undelivered`] a page at a time: at most `limit` of them, after the
    /// send (`sent_at`, `send_id`) of `after` when given, so that a backlog is delivered
    /// without holding all of it.
    pub fn undelivered_page(
        &self,
        now: DateTime<Utc>,
        after: Option<(DateTime<Utc>, &str)>,
        limit: u32,
    ) -> Result<Vec<Send>, StateError> {
        let now = instant(now);
        // Text order is time order; "" comes before every instant and every id.
        let (after_at, after_id) = after.map_or((String::new(), ""), |(at, id)| (instant(at), id));
        self.query_sends(
            &format!(
                "SELECT {SEND_COLUMNS} FROM sends
                 WHERE grp = 'treatment' AND delivered_at IS NULL AND gave_up_at IS NULL
                   AND sent_at <= ?1 AND (next_attempt_at IS NULL OR next_attempt_at <= ?1)
                   AND (sent_at, send_id) > (?2, ?3)
                 ORDER BY sent_at, send_id
                 LIMIT ?4"
            ),
            &[&now, &after_at, &after_id, &limit],
        )
    }

    /// Records that `send_id` was delivered at `at`. Delivering again keeps the first
    /// instant; the attempt is logged either way.
    pub fn mark_delivered(&mut self, send_id: &str, at: DateTime<Utc>) -> Result<(), StateError> {
        self.mark_delivered_many(&[send_id], at)
    }

    /// [`StateStore::mark_delivered`] for several sends, in one transaction (one sync to
    /// disk instead of one per send). Fails, changing nothing, if one of them is unknown.
    pub fn mark_delivered_many<S: AsRef<str>>(
        &mut self,
        send_ids: &[S],
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        self.mark_delivered_with(send_ids, at, None)
    }

    /// [`StateStore::mark_delivered_many`] for sends just written to an outbox, and, in the
    /// same transaction, where that outbox now ends ([`StateStore::outbox_mark`]).
    pub fn mark_written_to_outbox<S: AsRef<str>>(
        &mut self,
        send_ids: &[S],
        at: DateTime<Utc>,
        mark: &OutboxMark,
    ) -> Result<(), StateError> {
        self.mark_delivered_with(send_ids, at, Some(mark))
    }

    fn mark_delivered_with<S: AsRef<str>>(
        &mut self,
        send_ids: &[S],
        at: DateTime<Utc>,
        outbox: Option<&OutboxMark>,
    ) -> Result<(), StateError> {
        let at = instant(at);
        let marked = |tx: &rusqlite::Transaction<'_>| match outbox {
            Some(mark) => write_outbox_mark(tx, mark),
            None => Ok(()),
        };
        self.with_known_sends(
            send_ids,
            |tx, send_id| {
                // The update matches every known send, so it is the check too.
                let changed = tx
                    .prepare_cached(
                        "UPDATE sends SET delivered_at = COALESCE(delivered_at, ?2),
                                          attempts = attempts + 1, next_attempt_at = NULL
                         WHERE send_id = ?1",
                    )?
                    .execute(params![send_id, at])?;
                if changed == 0 {
                    return Ok(false);
                }
                log_attempt(tx, send_id, &at, "delivered", "")?;
                Ok(true)
            },
            marked,
        )
    }

    /// Sets the outbox's mark on its own: back to the start of a file that was replaced or
    /// cut shorter, so that an older mark cannot apply to it again.
    pub fn set_outbox_mark(&mut self, mark: &OutboxMark) -> Result<(), StateError> {
        write_outbox_mark(&self.conn, mark).map_err(|e| self.sqlite(e))
    }

    /// Where the outbox `outbox` (its canonical path) ended when sends written to it were
    /// last marked delivered: every line before that is a delivered send.
    pub fn outbox_mark(&self, outbox: &str) -> Result<Option<OutboxMark>, StateError> {
        let value: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                params![outbox_key(outbox)],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.sqlite(e))?;
        Ok(value.and_then(|value| {
            let (file, len) = value.rsplit_once(' ')?;
            Some(OutboxMark {
                outbox: outbox.to_owned(),
                file: file.to_owned(),
                len: len.parse().ok()?,
            })
        }))
    }

    /// Records a failed attempt: the error, and when to try again. A send already
    /// delivered stays delivered; the attempt is logged either way.
    pub fn mark_failed(
        &mut self,
        send_id: &str,
        at: DateTime<Utc>,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let at = instant(at);
        let next = instant(next_attempt_at);
        self.with_known_sends(
            &[send_id],
            |tx, send_id| {
                if !is_known(tx, send_id)? {
                    return Ok(false);
                }
                tx.execute(
                    "UPDATE sends SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3
                     WHERE send_id = ?1 AND delivered_at IS NULL",
                    params![send_id, error, next],
                )?;
                log_attempt(tx, send_id, &at, "failed", error)?;
                Ok(true)
            },
            |_| Ok(()),
        )
    }

    /// Records that delivery gave up on `send_id` for good after `error`: it is never
    /// returned by [`StateStore::undelivered`] again, and stays visible in
    /// [`StateStore::delivery`] and the attempts log.
    pub fn give_up(
        &mut self,
        send_id: &str,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StateError> {
        let at = instant(at);
        self.with_known_sends(
            &[send_id],
            |tx, send_id| {
                if !is_known(tx, send_id)? {
                    return Ok(false);
                }
                tx.execute(
                    "UPDATE sends SET attempts = attempts + 1, last_error = ?2,
                                      next_attempt_at = NULL, gave_up_at = ?3
                     WHERE send_id = ?1 AND delivered_at IS NULL",
                    params![send_id, error, at],
                )?;
                log_attempt(tx, send_id, &at, "gave_up", error)?;
                Ok(true)
            },
            |_| Ok(()),
        )
    }

    /// Every send, treatment and control, sorted by (`sent_at`, `send_id`).
    pub fn sends(&self) -> Result<Vec<Send>, StateError> {
        self.query_sends(
            &format!("SELECT {SEND_COLUMNS} FROM sends ORDER BY sent_at, send_id"),
            &[],
        )
    }

    /// Every entry, sorted by (moment, customer, trigger instant).
    pub fn entries(&self) -> Result<Vec<Entry>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT moment, customer_id, trigger_at, due_at, fate, reason, send_id,
                        trigger_key
                 FROM entries ORDER BY moment, customer_id, trigger_at, trigger_key",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, Option<String>>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, Option<String>>(6)?,
                    row.get::<_, String>(7)?,
                ))
            })
            .map_err(|e| self.sqlite(e))?;
        let mut entries = Vec::new();
        for row in rows {
            let (moment, customer_id, trigger_at, due_at, fate, reason, send_id, trigger_key) =
                row.map_err(|e| self.sqlite(e))?;
            let fate = match fate {
                None => None,
                Some(name) => Some(
                    Fate::ALL
                        .into_iter()
                        .find(|f| f.as_str() == name)
                        .ok_or_else(|| self.corrupt(format!("unknown fate {name:?}")))?,
                ),
            };
            entries.push(Entry {
                moment: moment.into(),
                customer_id: customer_id.into(),
                trigger_at: self.parse_instant(&trigger_at)?,
                due_at: self.parse_instant(&due_at)?,
                fate,
                reason,
                send_id,
                trigger_key: trigger_key.into(),
            });
        }
        Ok(entries)
    }

    /// Where `send_id` stands in delivery; `None` if the store has no such send.
    pub fn delivery(&self, send_id: &str) -> Result<Option<Delivery>, StateError> {
        type Row = (
            Option<String>,
            i64,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let row: Option<Row> = self
            .conn
            .prepare_cached(
                "SELECT delivered_at, attempts, last_error, next_attempt_at, gave_up_at
                 FROM sends WHERE send_id = ?1",
            )
            .and_then(|mut select| {
                select.query_row(params![send_id], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                })
            })
            .optional()
            .map_err(|e| self.sqlite(e))?;
        let Some((delivered_at, attempts, last_error, next_attempt_at, gave_up_at)) = row else {
            return Ok(None);
        };
        let opt = |v: Option<String>| v.map(|v| self.parse_instant(&v)).transpose();
        Ok(Some(Delivery {
            send_id: send_id.to_owned(),
            delivered_at: opt(delivered_at)?,
            attempts: u32::try_from(attempts)
                .map_err(|_| self.corrupt(format!("{send_id}: attempts {attempts}")))?,
            last_error,
            next_attempt_at: opt(next_attempt_at)?,
            gave_up_at: opt(gave_up_at)?,
        }))
    }

    /// The attempts log of `send_id`, oldest first.
    pub fn attempt_log(&self, send_id: &str) -> Result<Vec<Attempt>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT at, outcome, detail FROM attempts WHERE send_id = ?1
                 ORDER BY at, rowid",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map(params![send_id], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| self.sqlite(e))?;
        let mut log = Vec::new();
        for row in rows {
            let (at, outcome, detail) = row.map_err(|e| self.sqlite(e))?;
            log.push(Attempt {
                send_id: send_id.to_owned(),
                at: self.parse_instant(&at)?,
                outcome,
                detail,
            });
        }
        Ok(log)
    }

    /// Runs `update` for each send in one immediate transaction. `update` says whether the
    /// store has the send; for one it does not have, nothing is kept and the error names it.
    fn with_known_sends<S: AsRef<str>>(
        &mut self,
        send_ids: &[S],
        mut update: impl FnMut(&rusqlite::Transaction<'_>, &str) -> rusqlite::Result<bool>,
        before_commit: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
    ) -> Result<(), StateError> {
        let path = self.path.clone();
        let sqlite = |e: rusqlite::Error| StateError::Sqlite {
            path: path.clone(),
            source: e,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite)?;
        for send_id in send_ids {
            let send_id = send_id.as_ref();
            // An error drops `tx`: the transaction is rolled back.
            if !update(&tx, send_id).map_err(sqlite)? {
                return Err(StateError::UnknownSend {
                    path: path.clone(),
                    send_id: send_id.to_owned(),
                });
            }
        }
        before_commit(&tx).map_err(sqlite)?;
        tx.commit().map_err(sqlite)
    }

    fn query_sends(
        &self,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Send>, StateError> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map(args, |row| {
                Ok([
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, String>(6)?,
                    row.get::<_, String>(7)?,
                ])
            })
            .map_err(|e| self.sqlite(e))?;
        let mut sends = Vec::new();
        for row in rows {
            let [send_id, moment, customer_id, channel, grp, trigger_at, sent_at, message] =
                row.map_err(|e| self.sqlite(e))?;
            let group = match grp.as_str() {
                "treatment" => Group::Treatment,
                "control" => Group::Control,
                other => return Err(self.corrupt(format!("{send_id}: unknown group {other:?}"))),
            };
            let message: BTreeMap<String, String> = serde_json::from_str(&message)
                .map_err(|e| self.corrupt(format!("{send_id}: message: {e}")))?;
            sends.push(Send {
                trigger_at: self.parse_instant(&trigger_at)?,
                sent_at: self.parse_instant(&sent_at)?,
                send_id,
                moment: moment.into(),
                customer_id: customer_id.into(),
                channel,
                group,
                message,
            });
        }
        Ok(sends)
    }

    fn parse_instant(&self, text: &str) -> Result<DateTime<Utc>, StateError> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| self.corrupt(format!("bad instant {text:?}: {e}")))
    }

    fn sqlite(&self, source: rusqlite::Error) -> StateError {
        StateError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, detail: String) -> StateError {
        StateError::Corrupt {
            path: self.path.clone(),
            detail,
        }
    }
}

/// Brings the schema to [`SCHEMA_VERSION`], in one transaction.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StateError> {
    let open_error = |e: rusqlite::Error| StateError::Open {
        path: path.to_path_buf(),
        detail: describe(&e),
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(open_error)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(open_error)?;
    let found: Option<i64> = tx
        .query_row("SELECT MAX(version) FROM schema_version", [], |row| {
            row.get(0)
        })
        .map_err(open_error)?;
    let found = found.unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StateError::TooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, sql) in (1..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(found).unwrap_or(0))
    {
        tx.execute_batch(sql).map_err(open_error)?;
        tx.execute("DELETE FROM schema_version", [])
            .map_err(open_error)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            params![version],
        )
        .map_err(open_error)?;
    }
    tx.commit().map_err(open_error)
}

/// The `meta` key of the mark of the outbox at `outbox` (its canonical path).
fn outbox_key(outbox: &str) -> String {
    format!("outbox:{outbox}")
}

fn write_outbox_mark(conn: &Connection, mark: &OutboxMark) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![
        outbox_key(&mark.outbox),
        format!("{} {}", mark.file, mark.len)
    ])
    .map(drop)
}

/// Whether the store has `send_id`.
fn is_known(tx: &rusqlite::Transaction<'_>, send_id: &str) -> rusqlite::Result<bool> {
    tx.prepare_cached("SELECT 1 FROM sends WHERE send_id = ?1")?
        .query_row(params![send_id], |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
}

fn log_attempt(
    tx: &rusqlite::Transaction<'_>,
    send_id: &str,
    at: &str,
    outcome: &str,
    detail: &str,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO attempts (send_id, at, outcome, detail) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![send_id, at, outcome, detail])
    .map(drop)
}

/// Where an outbox file ended when the sends written to it were last marked delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMark {
    /// The outbox's canonical path.
    pub outbox: String,
    /// Which file was at that path (device and inode on Unix): a file moved away and
    /// replaced starts over.
    pub file: String,
    /// Its length then, at a line boundary.
    pub len: u64,
}

/// One tick being recorded, in one open transaction (see [`StateStore::begin_tick`]).
/// Dropped without [`TickRecorder::commit`], it leaves the store as it was.
pub struct TickRecorder<'s> {
    tx: rusqlite::Transaction<'s>,
    path: PathBuf,
    /// The first error met while the engine handed over entries and sends; `commit`
    /// reports it instead of committing.
    error: Option<StateError>,
    /// Every entry this tick computed, by moment and fate (`pending` for undecided ones).
    decided: Summary,
    /// Sends new this tick, by moment: (treatment, control).
    new_sends: BTreeMap<String, (u64, u64)>,
}

/// What a committed tick recorded.
#[derive(Debug, Default)]
pub struct Tick {
    /// Every entry the tick computed, by moment and fate (`pending` for undecided ones).
    pub entries: Summary,
    /// Sends new this tick, by moment: (treatment, control).
    pub new_sends: BTreeMap<String, (u64, u64)>,
}

impl TickRecorder<'_> {
    fn sqlite(&self, e: rusqlite::Error) -> StateError {
        StateError::Sqlite {
            path: self.path.clone(),
            source: e,
        }
    }

    /// Inserts `send` unless its `send_id` is known (known ones stay untouched, their
    /// delivery state included); true when it is new.
    pub fn insert_send(&mut self, send: &SendView) -> Result<bool, StateError> {
        let message = send.message.to_json();
        let changed = self
            .tx
            .prepare_cached(
                "INSERT INTO sends (send_id, moment, customer_id, channel, grp, trigger_at,
                                    sent_at, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (send_id) DO NOTHING",
            )
            .and_then(|mut insert| {
                insert.execute(params![
                    send.send_id,
                    send.moment,
                    send.customer_id.as_str(),
                    send.channel,
                    send.group.as_str(),
                    instant(send.trigger_at),
                    instant(send.sent_at),
                    message,
                ])
            })
            .map_err(|e| self.sqlite(e))?;
        if changed > 0 {
            let counts = match self.new_sends.get_mut(&**send.moment) {
                Some(counts) => counts,
                None => self.new_sends.entry(send.moment.to_string()).or_default(),
            };
            match send.group {
                Group::Treatment => counts.0 += 1,
                Group::Control => counts.1 += 1,
            }
        }
        Ok(changed > 0)
    }

    /// Inserts a new entry, or updates one still pending; an entry whose fate was already
    /// recorded never changes.
    pub fn upsert_entry(&mut self, entry: &EntryView) -> Result<(), StateError> {
        self.tx
            .prepare_cached(
                "INSERT INTO entries (moment, customer_id, trigger_at, due_at, fate, reason,
                                      send_id, trigger_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (moment, customer_id, trigger_at, trigger_key) DO UPDATE SET
                     due_at = excluded.due_at,
                     fate = excluded.fate,
                     reason = excluded.reason,
                     send_id = excluded.send_id
                 WHERE entries.fate IS NULL",
            )
            .and_then(|mut upsert| {
                upsert.execute(params![
                    entry.moment,
                    entry.customer_id.as_str(),
                    instant(entry.trigger_at),
                    instant(entry.due_at),
                    entry.fate.map(Fate::as_str),
                    entry.reason,
                    entry.send_id,
                    entry.trigger_key.as_str(),
                ])
            })
            .map_err(|e| self.sqlite(e))?;
        count_entry(&mut self.decided, entry);
        Ok(())
    }

    /// Sets `processed_up_to` to `now` (never moving it back) and commits the tick; the
    /// first error met on the way instead, committing nothing.
    pub fn commit(self, now: DateTime<Utc>) -> Result<Tick, StateError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        // Text order is time order, so MAX keeps the later instant.
        self.tx
            .execute(
                "INSERT INTO meta (key, value) VALUES ('processed_up_to', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
                params![instant(now)],
            )
            .and_then(|_| self.tx.commit())
            .map_err(|e| StateError::Sqlite {
                path: self.path,
                source: e,
            })?;
        Ok(Tick {
            entries: self.decided,
            new_sends: self.new_sends,
        })
    }
}

/// The engine hands its entries and sends straight to the transaction; after an error the
/// rest is ignored and `commit` reports it.
impl Sink for TickRecorder<'_> {
    fn entry(&mut self, entry: EntryView<'_>) {
        if self.error.is_none() {
            self.error = self.upsert_entry(&entry).err();
        }
    }

    fn send(&mut self, send: SendView<'_>) {
        if self.error.is_none() {
            self.error = self.insert_send(&send).err();
        }
    }
}

/// Fixed-width RFC 3339 in UTC with nanoseconds: text order is time order. Instants
/// outside the years 0000–9999, which RFC 3339 cannot write, are clamped to them.
fn instant(t: DateTime<Utc>) -> String {
    let t = match t.year() {
        ..=-1 => "0000-01-01T00:00:00Z".parse().unwrap_or(t),
        10000.. => "9999-12-31T23:59:59.999999999Z".parse().unwrap_or(t),
        _ => t,
    };
    // As `%Y-%m-%dT%H:%M:%S%.9fZ`, without parsing the format for every instant. A leap
    // second is chrono's second 59 with a nanosecond past 999,999,999: written as `:60`.
    let (date, time) = (t.date_naive(), t.time());
    let (second, nanosecond) = match time.nanosecond() {
        n @ 1_000_000_000.. => (time.second() + 1, n - 1_000_000_000),
        n => (time.second(), n),
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        date.year(),
        date.month(),
        date.day(),
        time.hour(),
        time.minute(),
        second,
        nanosecond
    )
}

#[cfg(test)]
mod tests {
    use super::instant;
    use chrono::{DateTime, TimeZone, Utc};
    use proptest::prelude::*;

    fn chrono_format(t: DateTime<Utc>) -> String {
        t.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
    }

    #[test]
    fn instants_are_written_as_chrono_writes_them() {
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
            .map(|n| Utc.from_utc_datetime(&n))
            .unwrap();
        for t in [
            DateTime::<Utc>::UNIX_EPOCH,
            Utc.with_ymd_and_hms(2024, 2, 29, 7, 5, 3).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            leap,
        ] {
            assert_eq!(instant(t), chrono_format(t));
        }
        assert_eq!(instant(leap), "2016-12-31T23:59:60.500000000Z");
    }

    proptest! {
        #[test]
        fn any_instant_from_year_0_to_9999(seconds in -62_167_219_200i64..253_402_300_800, nanos in 0u32..1_000_000_000) {
            let t = DateTime::<Utc>::from_timestamp(seconds, nanos).unwrap();
            prop_assert_eq!(instant(t), chrono_format(t));
        }
    }
}
