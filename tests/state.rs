//! The state store: ticks are recorded once, decided fates stay, everything survives a
//! reopen, and a locked or corrupt database is an error rather than a panic.

mod common;
use common::TempDir;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use moments::outcome::{Entry, Fate, Group, Send};
use moments::state::{StateError, StateStore};

fn at(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, hour, minute, 0).unwrap()
}

fn send(id: &str, group: Group, sent_at: DateTime<Utc>) -> Send {
    Send {
        send_id: id.to_owned(),
        moment: "cart_reminder".into(),
        customer_id: format!("c-{id}").into(),
        channel: "email".to_owned(),
        group,
        trigger_at: at(9, 0),
        sent_at,
        message: BTreeMap::from([
            ("subject".to_owned(), "Still thinking?".to_owned()),
            ("body".to_owned(), "Your cart: \"shoes\" ✓".to_owned()),
        ]),
    }
}

fn entry(customer: &str, fate: Option<Fate>, reason: &str) -> Entry {
    Entry {
        moment: "cart_reminder".into(),
        customer_id: customer.into(),
        trigger_at: at(9, 0),
        due_at: at(10, 0),
        fate,
        reason: reason.to_owned(),
        send_id: fate.map(|_| format!("s-{customer}")),
        trigger_key: "e1".into(),
    }
}

fn ids(sends: &[Send]) -> Vec<&str> {
    sends.iter().map(|s| s.send_id.as_str()).collect()
}

#[test]
fn a_new_store_is_empty_and_creates_its_directory() {
    let dir = TempDir::new("new");
    let path = dir.join("nested/deeper/state.db");
    let store = StateStore::open(&path).unwrap();
    assert!(path.exists());
    assert_eq!(store.processed_up_to().unwrap(), None);
    assert!(store.sends().unwrap().is_empty());
    assert!(store.entries().unwrap().is_empty());
    assert!(store.undelivered(at(23, 0)).unwrap().is_empty());
}

#[test]
fn the_same_sends_twice_are_inserted_once() {
    let dir = TempDir::new("idempotent");
    let mut store = StateStore::open(&dir.join("state.db")).unwrap();
    let sends = vec![
        send("b", Group::Treatment, at(10, 0)),
        send("a", Group::Treatment, at(10, 0)),
        send("c", Group::Control, at(9, 30)),
    ];
    let first = store.record_tick(at(10, 0), &[], &sends).unwrap();
    assert_eq!(first, sends);
    let second = store.record_tick(at(11, 0), &[], &sends).unwrap();
    assert!(second.is_empty());
    // A later tick brings one more: only it is new.
    let mut more = sends.clone();
    more.push(send("d", Group::Treatment, at(11, 0)));
    let third = store.record_tick(at(12, 0), &[], &more).unwrap();
    assert_eq!(ids(&third), ["d"]);
    assert_eq!(ids(&store.sends().unwrap()), ["c", "a", "b", "d"]);
    assert_eq!(store.sends().unwrap()[1], sends[1]);
}

#[test]
fn a_known_send_keeps_its_content_and_delivery_state() {
    let dir = TempDir::new("untouched");
    let mut store = StateStore::open(&dir.join("state.db")).unwrap();
    let original = send("a", Group::Treatment, at(10, 0));
    store
        .record_tick(at(10, 0), &[], std::slice::from_ref(&original))
        .unwrap();
    store.mark_delivered("a", at(10, 1)).unwrap();
    let mut changed = original.clone();
    changed
        .message
        .insert("subject".to_owned(), "changed".to_owned());
    assert!(store
        .record_tick(at(11, 0), &[], &[changed])
        .unwrap()
        .is_empty());
    assert_eq!(store.sends().unwrap(), [original]);
    let delivery = store.delivery("a").unwrap().unwrap();
    assert_eq!(delivery.delivered_at, Some(at(10, 1)));
    assert!(store.undelivered(at(12, 0)).unwrap().is_empty());
}

#[test]
fn a_decided_fate_never_changes_but_a_pending_entry_follows_the_engine() {
    let dir = TempDir::new("fate");
    let mut store = StateStore::open(&dir.join("state.db")).unwrap();
    let decided = entry("c1", Some(Fate::Sent), "sent at 10:00");
    let pending = entry("c2", None, "due at 10:00");
    store
        .record_tick(at(9, 30), &[decided.clone(), pending.clone()], &[])
        .unwrap();

    let mut overruled = decided.clone();
    overruled.fate = Some(Fate::Cancelled);
    overruled.reason = "cancelled: Order Completed at 09:40".to_owned();
    overruled.send_id = None;
    let mut now_decided = pending.clone();
    now_decided.fate = Some(Fate::NoConsent);
    now_decided.reason = "no consent: email_opt_in was false at 10:00".to_owned();
    store
        .record_tick(at(10, 30), &[overruled, now_decided.clone()], &[])
        .unwrap();
    assert_eq!(
        store.entries().unwrap(),
        [decided.clone(), now_decided.clone()]
    );

    // And once decided, the second one stays too.
    let mut again = now_decided.clone();
    again.fate = Some(Fate::Sent);
    store.record_tick(at(11, 0), &[again], &[]).unwrap();
    assert_eq!(store.entries().unwrap(), [decided, now_decided]);
}

#[test]
fn entries_come_back_sorted_with_every_fate() {
    let dir = TempDir::new("sorted");
    let mut store = StateStore::open(&dir.join("state.db")).unwrap();
    let mut entries: Vec<Entry> = Fate::ALL
        .into_iter()
        .enumerate()
        .map(|(i, fate)| {
            let mut e = entry(&format!("c{}", 7 - i), Some(fate), fate.as_str());
            e.moment = if i % 2 == 0 { "b_moment" } else { "a_moment" }.into();
            e
        })
        .collect();
    entries.push(entry("c9", None, "pending"));
    store.record_tick(at(12, 0), &entries, &[]).unwrap();
    let mut expected = entries.clone();
    expected.sort_by(|x, y| {
        (&x.moment, &x.customer_id, x.trigger_at).cmp(&(&y.moment, &y.customer_id, y.trigger_at))
    });
    assert_eq!(store.entries().unwrap(), expected);
}

#[test]
fn processed_up_to_follows_the_latest_tick() {
    let dir = TempDir::new("processed");
    let mut store = StateStore::open(&dir.join("state.db")).unwrap();
    store.record_tick(at(10, 0), &[], &[]).unwrap();
    assert_eq!(store.processed_up_to().unwrap(), Some(at(10, 0)));
    let precise = at(11, 0) + chrono::Duration::nanoseconds(123_456_789);
    store.record_tick(precise, &[], &[]).unwrap();
    assert_eq!(store.processed_up_to().unwrap(), Some(precise));
    // An earlier `now` does not move it back.
    store.record_tick(at(9, 0), &[], &[]).unwrap();
    assert_eq!(store.processed_up_to().unwrap(), Some(precise));
}

#[test]
fn reopening_keeps_everything() {
    let dir = TempDir::new("reopen");
    let path = dir.join("state.db");
    let sends = vec![
        send("a", Group::Treatment, at(10, 0)),
        send("b", Group::Treatment, at(10, 5)),
        send("c", Group::Control, at(10, 0)),
    ];
    let entries = vec![
        entry("c1", Some(Fate::Sent), "sent"),
        entry("c2", None, "due"),
    ];
    {
        let mut store = StateStore::open(&path).unwrap();
        store.record_tick(at(10, 5), &entries, &sends).unwrap();
        store.mark_delivered("a", at(10, 6)).unwrap();
        store
            .mark_failed("b", at(10, 6), "HTTP 503", at(10, 7))
            .unwrap();
    }
    let mut store = StateStore::open(&path).unwrap();
    assert_eq!(store.processed_up_to().unwrap(), Some(at(10, 5)));
    assert_eq!(ids(&store.sends().unwrap()), ["a", "c", "b"]);
    assert_eq!(store.entries().unwrap(), entries);
    assert!(store
        .record_tick(at(10, 10), &entries, &sends)
        .unwrap()
        .is_empty());
    let b = store.delivery("b").unwrap().unwrap();
    assert_eq!(b.attempts, 1);
    assert_eq!(b.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(b.next_attempt_at, Some(at(10, 7)));
    assert_eq!(b.delivered_at, None);
    let log = store.attempt_log("b").unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].outcome.as_str(), log[0].at), ("failed", at(10, 6)));
}

#[test]
fn undelivered_is_treatment_only_due_and_ready_in_order() {
    let dir = TempDir::new("undelivered");
    let mut store = StateStore::open(&dir.join("state.db")).unwrap();
    let sends = vec![
        send("late", Group::Treatment, at(10, 30)),
        send("b", Group::Treatment, at(10, 0)),
        send("a", Group::Treatment, at(10, 0)),
        send("control", Group::Control, at(9, 0)),
        send("retry", Group::Treatment, at(9, 0)),
        send("done", Group::Treatment, at(9, 0)),
        send("future", Group::Treatment, at(13, 0)),
    ];
    store.record_tick(at(11, 0), &[], &sends).unwrap();
    store.mark_delivered("done", at(10, 0)).unwrap();
    store
        .mark_failed("retry", at(10, 0), "connection refused", at(11, 30))
        .unwrap();
    assert_eq!(
        ids(&store.undelivered(at(11, 0)).unwrap()),
        ["a", "b", "late"]
    );
    assert_eq!(
        ids(&store.undelivered(at(11, 30)).unwrap()),
        ["retry", "a", "b", "late"]
    );
    assert_eq!(
        ids(&store.undelivered(at(13, 0)).unwrap()),
        ["retry", "a", "b", "late", "future"]
    );
    store.give_up("retry", at(12, 0), "gave up").unwrap();
    assert_eq!(ids(&store.undelivered(at(13, 0)).unwrap())[0], "a");
    let retry = store.delivery("retry").unwrap().unwrap();
    assert_eq!(retry.gave_up_at, Some(at(12, 0)));
    assert_eq!(retry.attempts, 2);
}

#[test]
fn marking_an_unknown_send_is_an_error_and_changes_nothing() {
    let dir = TempDir::new("unknown");
    let mut store = StateStore::open(&dir.join("state.db")).unwrap();
    store
        .record_tick(at(10, 0), &[], &[send("a", Group::Treatment, at(10, 0))])
        .unwrap();
    let error = store
        .mark_delivered_many(&["a", "nope"], at(10, 1))
        .unwrap_err();
    assert!(matches!(error, StateError::UnknownSend { ref send_id, .. } if send_id == "nope"));
    assert!(error.to_string().contains("\"nope\""), "{error}");
    // The whole batch was rolled back.
    assert_eq!(ids(&store.undelivered(at(11, 0)).unwrap()), ["a"]);
    assert!(store
        .mark_failed("nope", at(10, 1), "x", at(10, 2))
        .is_err());
    assert_eq!(store.delivery("nope").unwrap(), None);
}

#[test]
fn delivering_twice_keeps_the_first_instant() {
    let dir = TempDir::new("twice");
    let mut store = StateStore::open(&dir.join("state.db")).unwrap();
    store
        .record_tick(at(10, 0), &[], &[send("a", Group::Treatment, at(10, 0))])
        .unwrap();
    store.mark_delivered("a", at(10, 1)).unwrap();
    store.mark_delivered("a", at(10, 2)).unwrap();
    store
        .mark_failed("a", at(10, 3), "late", at(10, 4))
        .unwrap();
    let a = store.delivery("a").unwrap().unwrap();
    assert_eq!(a.delivered_at, Some(at(10, 1)));
    assert_eq!(a.next_attempt_at, None);
    assert_eq!(store.attempt_log("a").unwrap().len(), 3);
}

/// Holds the database's write lock from another connection, as another process would.
fn hold_write_lock(path: &Path) -> rusqlite::Connection {
    let other = rusqlite::Connection::open(path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    other
}

#[test]
fn a_locked_database_is_an_error_not_a_panic() {
    let dir = TempDir::new("locked");
    let path = dir.join("state.db");
    let mut store = StateStore::open_with_timeout(&path, Duration::from_millis(100)).unwrap();
    let other = hold_write_lock(&path);

    let error = StateStore::open_with_timeout(&path, Duration::from_millis(100)).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, StateError::Open { .. }), "{error:?}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("locked"), "{message}");
    assert!(!message.contains('\n'), "{message}");

    // A store opened before can still read; a write waits, then fails cleanly.
    assert!(store.sends().unwrap().is_empty());
    let error = store.record_tick(at(10, 0), &[], &[]).unwrap_err();
    assert!(error.to_string().contains("locked"), "{error}");
    assert_eq!(store.processed_up_to().unwrap(), None);

    // Once the lock is gone, all is well again.
    drop(other);
    store.record_tick(at(10, 0), &[], &[]).unwrap();
    assert_eq!(store.processed_up_to().unwrap(), Some(at(10, 0)));
    drop(StateStore::open(&path).unwrap());
}

#[test]
fn a_corrupt_file_is_a_clear_error() {
    let dir = TempDir::new("corrupt");
    for (name, bytes) in [
        ("short.db", b"not a database".to_vec()),
        ("long.db", b"this is some text, not SQLite\n".repeat(400)),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        let error = StateStore::open(&path).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, StateError::Open { .. }), "{error:?}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("not a valid SQLite database"), "{message}");
        // The file is left as it was.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}

#[test]
fn a_directory_in_the_way_is_a_clear_error() {
    let dir = TempDir::new("dir");
    let path = dir.join("state.db");
    std::fs::create_dir_all(&path).unwrap();
    let error = StateStore::open(&path).unwrap_err();
    assert!(error.to_string().contains("directory"), "{error}");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = TempDir::new("newer");
    let path = dir.join("state.db");
    drop(StateStore::open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("UPDATE schema_version SET version = 99", [])
            .unwrap();
    }
    let error = StateStore::open(&path).unwrap_err();
    assert!(
        matches!(error, StateError::TooNew { found: 99, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("upgrade moments"), "{error}");
}

#[test]
fn the_database_is_in_wal_mode_with_its_schema_version() {
    let dir = TempDir::new("wal");
    let path = dir.join("state.db");
    drop(StateStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = conn
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
}

#[test]
fn instants_beyond_year_9999_are_clamped_not_lost() {
    let dir = TempDir::new("far");
    let mut store = StateStore::open(&dir.join("state.db")).unwrap();
    store
        .record_tick(at(10, 0), &[], &[send("a", Group::Treatment, at(10, 0))])
        .unwrap();
    store
        .mark_failed("a", at(10, 0), "x", DateTime::<Utc>::MAX_UTC)
        .unwrap();
    let next = store
        .delivery("a")
        .unwrap()
        .unwrap()
        .next_attempt_at
        .unwrap();
    assert_eq!(next.to_rfc3339(), "9999-12-31T23:59:59.999999999+00:00");
    assert!(store.undelivered(at(23, 0)).unwrap().is_empty());
}

/// A database of schema version 1 (entries keyed without their trigger) is migrated on
/// open, its entries kept.
#[test]
fn a_version_1_database_is_migrated_and_keeps_its_entries() {
    let dir = TempDir::new("migrate");
    let path = dir.join("state.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version VALUES (1);
             CREATE TABLE sends (send_id TEXT PRIMARY KEY NOT NULL, moment TEXT NOT NULL,
                 customer_id TEXT NOT NULL, channel TEXT NOT NULL, grp TEXT NOT NULL,
                 trigger_at TEXT NOT NULL, sent_at TEXT NOT NULL, message TEXT NOT NULL,
                 delivered_at TEXT, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
                 next_attempt_at TEXT, gave_up_at TEXT);
             CREATE TABLE entries (moment TEXT NOT NULL, customer_id TEXT NOT NULL,
                 trigger_at TEXT NOT NULL, due_at TEXT NOT NULL, fate TEXT,
                 reason TEXT NOT NULL, send_id TEXT, UNIQUE (moment, customer_id, trigger_at));
             INSERT INTO entries VALUES ('cart', 'ada', '2026-11-20T09:00:00.000000000Z',
                 '2026-11-20T10:00:00.000000000Z', 'cancelled', 'cancelled: an order', NULL);
             CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
             CREATE TABLE attempts (send_id TEXT NOT NULL, at TEXT NOT NULL,
                 outcome TEXT NOT NULL, detail TEXT NOT NULL);",
        )
        .unwrap();
    }
    let store = StateStore::open(&path).unwrap();
    let entries = store.entries().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(&*entries[0].customer_id, "ada");
    assert_eq!(entries[0].fate, Some(Fate::Cancelled));
}

#[test]
fn a_tick_recorded_as_the_engine_decides_counts_what_it_wrote_and_a_dropped_one_leaves_nothing() {
    use moments::engine::Sink;
    let dir = TempDir::new("recorder");
    let mut store = StateStore::open(&dir.join("state.db")).unwrap();
    store
        .record_tick(at(9, 0), &[], &[send("old", Group::Treatment, at(9, 0))])
        .unwrap();

    // Dropped without a commit: nothing of it stays.
    {
        let mut tick = store.begin_tick().unwrap();
        tick.send(send("lost", Group::Treatment, at(10, 0)).view());
        tick.entry(entry("c-lost", Some(Fate::Sent), "sent").view(0));
    }
    assert_eq!(ids(&store.sends().unwrap()), ["old"]);
    assert!(store.entries().unwrap().is_empty());
    assert_eq!(store.processed_up_to().unwrap(), Some(at(9, 0)));

    // Handed over as an engine does: a send before its entry; a known send is not new.
    let mut tick = store.begin_tick().unwrap();
    tick.send(send("old", Group::Treatment, at(9, 0)).view());
    tick.send(send("a", Group::Treatment, at(10, 0)).view());
    tick.entry(entry("c-a", Some(Fate::Sent), "sent").view(0));
    tick.send(send("b", Group::Control, at(10, 0)).view());
    tick.entry(entry("c-b", Some(Fate::Control), "control").view(0));
    tick.entry(entry("c-c", Some(Fate::Capped), "capped").view(0));
    tick.entry(entry("c-d", None, "pending").view(0));
    let recorded = tick.commit(at(11, 0)).unwrap();
    assert_eq!(
        recorded.new_sends,
        BTreeMap::from([("cart_reminder".to_owned(), (1, 1))])
    );
    let fates: Vec<(&str, u64)> = recorded.entries["cart_reminder"]
        .iter()
        .map(|(fate, n)| (fate.as_str(), *n))
        .collect();
    assert_eq!(
        fates,
        [("capped", 1), ("control", 1), ("pending", 1), ("sent", 1)]
    );
    assert_eq!(ids(&store.sends().unwrap()), ["old", "a", "b"]);
    assert_eq!(store.entries().unwrap().len(), 4);
    assert_eq!(store.processed_up_to().unwrap(), Some(at(11, 0)));
}

/// `records` up to `now` recorded in `store` as `moments run` records a tick: `engines`
/// engines on threads of their own, the transaction on another.
fn record_beside(
    store: &mut StateStore,
    model: &moments::model::Model,
    records: impl Iterator<Item = moments::value::Record>,
    now: DateTime<Utc>,
    engines: usize,
) -> Result<(moments::state::Tick, u64), moments::lanes::BesideError<StateError>> {
    moments::lanes::run_beside(
        model,
        records,
        None,
        now,
        engines,
        || store.begin_tick(),
        |recorder| recorder.commit(now),
    )
}

/// A tick over the sample shop: its new sends, and its entries still pending.
fn tick_beside(store: &mut StateStore, engines: usize, now: DateTime<Utc>) -> (u64, u64) {
    let (model, data) = common::sample_shop();
    let (tick, _) =
        record_beside(store, &model, data.records(), now, engines).expect("record the tick");
    let new_sends = tick.new_sends.values().map(|(t, c)| t + c).sum();
    let pending = tick.entries.values().filter_map(|f| f.get("pending")).sum();
    (new_sends, pending)
}

#[test]
fn a_tick_recorded_by_several_engines_is_the_tick_one_engine_records() {
    let first = Utc.with_ymd_and_hms(2026, 12, 10, 0, 0, 0).unwrap();
    let second = Utc.with_ymd_and_hms(2026, 12, 20, 6, 0, 0).unwrap();
    // The reference: the engine's whole output, recorded at once.
    let dir = TempDir::new("state-engines");
    let mut reference = StateStore::open(&dir.join("reference.db")).unwrap();
    let (model, data) = common::sample_shop();
    for now in [first, second] {
        let out = moments::engine::run(&model, data.records(), None, now);
        reference
            .record_tick(now, &out.entries, &out.sends)
            .unwrap();
    }
    let (sends, entries) = (reference.sends().unwrap(), reference.entries().unwrap());
    assert!(sends.len() > 1_000, "{}", sends.len());

    for engines in [1, 3] {
        let mut store = StateStore::open(&dir.join(format!("{engines}.db"))).unwrap();
        let (new_first, _) = tick_beside(&mut store, engines, first);
        let (new_second, pending) = tick_beside(&mut store, engines, second);
        assert_eq!(
            (new_first + new_second) as usize,
            sends.len(),
            "{engines} engines"
        );
        assert!(new_second > 0, "{engines} engines: the second tick sends");
        assert_eq!(
            pending as usize,
            entries.iter().filter(|e| e.fate.is_none()).count(),
            "{engines} engines"
        );
        assert!(
            store.sends().unwrap() == sends,
            "{engines} engines: sends differ"
        );
        assert!(
            store.entries().unwrap() == entries,
            "{engines} engines: entries differ"
        );
        assert_eq!(store.processed_up_to().unwrap(), Some(second));
    }
}

#[test]
fn a_tick_on_a_store_that_cannot_be_written_reads_no_record() {
    let dir = TempDir::new("state-beside-locked");
    let path = dir.join("state.db");
    let mut store = StateStore::open_with_timeout(&path, Duration::from_millis(100)).unwrap();
    let _other = hold_write_lock(&path);
    let (model, _) = common::sample_shop();
    let mut read = 0;
    let records = std::iter::from_fn(|| {
        read += 1;
        None
    });
    let now = Utc.with_ymd_and_hms(2026, 12, 10, 0, 0, 0).unwrap();
    let result = record_beside(&mut store, &model, records, now, 2);
    assert!(
        matches!(result, Err(moments::lanes::BesideError::Sink(_))),
        "{result:?}"
    );
    assert_eq!(
        read, 0,
        "records were read for a tick that cannot be recorded"
    );
}

#[test]
fn a_tick_that_fails_part_way_records_nothing() {
    let dir = TempDir::new("state-beside-fails");
    let mut store = StateStore::open(&dir.join("state.db")).unwrap();
    let (model, data) = common::sample_shop();
    let now = Utc.with_ymd_and_hms(2026, 12, 10, 0, 0, 0).unwrap();
    let decided_by_then = moments::engine::run(&model, data.records().take(20_000), None, now);
    assert!(!decided_by_then.entries.is_empty());
    // The data gives out part-way: the engines have decided entries and sends by then.
    let records = data
        .records()
        .take(20_000)
        .chain(std::iter::from_fn(|| panic!("the data went away")));
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        record_beside(&mut store, &model, records, now, 2)
    }));
    assert!(ran.is_err(), "the panic goes through");
    assert!(
        store.entries().unwrap().is_empty(),
        "entries were committed"
    );
    assert!(store.sends().unwrap().is_empty(), "sends were committed");
    assert_eq!(store.processed_up_to().unwrap(), None);
}
