//! Properties of running the repository's campaigns over a generated shop, checked with the
//! library the way `moments run` uses it:
//!
//! - running in ticks (each tick runs the engine over all the data up to its `now` and
//!   records the result in a state store) records exactly the sends, and the decided
//!   entries, that one run up to the last tick's `now` records: hourly, and at random
//!   instants (arbitrary seconds, record timestamps, send instants and the second before);
//! - the records split over several files (random names, NDJSON and gzip mixed, some files
//!   sorted by time and some shuffled) give the same entries and sends as the directory the
//!   generator wrote.
//!
//! The tick properties use shops of 60 to 100 customers over 7 to 10 days: a few dozen sends
//! per case, some of each moment over the cases.
//!
//! Few cases, as each one generates a shop and runs the engine dozens of times;
//! `RUN_PROPS_CASES=50 cargo test --test run_props` digs deeper.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, TimeZone, Utc};
use moments::data::DataSet;
use moments::engine;
use moments::model::Model;
use moments::outcome::{Entry, Send};
use moments::sample::{write_sample, SampleOptions};
use moments::state::StateStore;
use moments::value::Record;
use proptest::prelude::*;

use common::{crate_root, TempDir};

/// The repository's campaigns, loaded as `moments run` loads them (`load_model`).
fn campaigns() -> Model {
    let groups =
        moments::project::discover(&[crate_root().join("campaigns")]).expect("list campaigns/");
    let group = groups
        .into_iter()
        .find(|g| g.schema.is_some())
        .expect("campaigns/ has a schema.moment");
    let (_, checked) = moments::project::check_group(&group).expect("read campaigns/");
    assert_eq!(checked.error_count(), 0, "{:#?}", checked.diagnostics);
    checked.model.expect("the campaigns check without errors")
}

/// The first days the generated shops start on: a quiet November, Black Friday week (27
/// November 2026), and the days around the holiday cutoff (an `every` trigger on 18
/// December at 10:00, active 1 to 21 December).
fn start_of(choice: u8) -> DateTime<Utc> {
    let (month, day) = match choice % 3 {
        0 => (11, 1),
        1 => (11, 22),
        _ => (12, 12),
    };
    Utc.with_ymd_and_hms(2026, month, day, 0, 0, 0).unwrap()
}

/// A generated shop in a directory of its own.
fn shop(name: &str, customers: u64, days: u32, seed: u64, start: DateTime<Utc>) -> TempDir {
    let dir = TempDir::new(name);
    let options = SampleOptions {
        customers,
        days,
        seed,
        start,
    };
    let summary = write_sample(&options, dir.path()).expect("write the sample shop");
    assert!(summary.records > 0, "the shop has records");
    dir
}

/// Every record of `dir`, in the order the engine reads them; the data must be clean.
fn records(dir: &Path, model: &Model) -> Vec<Record> {
    let dataset = DataSet::open(dir, &model.schema).expect("open the data");
    let mut stream = dataset.records();
    let records: Vec<Record> = stream.by_ref().collect();
    let rejects = stream.take_rejects();
    assert!(
        rejects.is_empty(),
        "generated data has rejects: {rejects:#?}"
    );
    records
}

/// One tick as `moments run` does it: the engine over all the data up to `now`, the result
/// recorded in the store.
fn tick(store: &mut StateStore, model: &Model, records: &[Record], now: DateTime<Utc>) {
    let out = engine::run(model, records.iter().cloned(), None, now);
    store
        .record_tick(now, &out.entries, &out.sends)
        .expect("record the tick");
}

fn send_key(s: &Send) -> &str {
    &s.send_id
}

/// `None` when the two lists of sends are equal; otherwise the first differences, in words,
/// the lists named by `names`.
fn sends_diff(names: [&str; 2], expected: &[Send], found: &[Send]) -> Option<String> {
    if expected == found {
        return None;
    }
    let [x, y] = names;
    let a: BTreeMap<&str, &Send> = expected.iter().map(|s| (send_key(s), s)).collect();
    let b: BTreeMap<&str, &Send> = found.iter().map(|s| (send_key(s), s)).collect();
    let mut lines = vec![format!(
        "{} sends in {x}, {} in {y}",
        expected.len(),
        found.len()
    )];
    for (id, s) in &a {
        match b.get(id) {
            None => lines.push(format!("only in {x}: {s:?}")),
            Some(t) if t != s => lines.push(format!("differs:\n  {x}: {s:?}\n  {y}: {t:?}")),
            Some(_) => {}
        }
    }
    for (id, t) in &b {
        if !a.contains_key(id) {
            lines.push(format!("only in {y}: {t:?}"));
        }
    }
    lines.truncate(12);
    Some(lines.join("\n"))
}

type EntryKey = (String, String, DateTime<Utc>);

fn entry_key(e: &Entry) -> EntryKey {
    (
        e.moment.to_string(),
        e.customer_id.to_string(),
        e.trigger_at,
    )
}

/// `None` when the two lists of entries are equal; otherwise the first differences.
fn entries_diff(names: [&str; 2], expected: &[Entry], found: &[Entry]) -> Option<String> {
    if expected == found {
        return None;
    }
    let [x, y] = names;
    let a: BTreeMap<EntryKey, &Entry> = expected.iter().map(|e| (entry_key(e), e)).collect();
    let b: BTreeMap<EntryKey, &Entry> = found.iter().map(|e| (entry_key(e), e)).collect();
    let mut lines = vec![format!(
        "{} entries in {x}, {} in {y}",
        expected.len(),
        found.len()
    )];
    for (key, e) in &a {
        match b.get(key) {
            None => lines.push(format!("only in {x}: {e:?}")),
            Some(t) if t != e => lines.push(format!("differs:\n  {x}: {e:?}\n  {y}: {t:?}")),
            Some(_) => {}
        }
    }
    for (key, t) in &b {
        if !a.contains_key(key) {
            lines.push(format!("only in {y}: {t:?}"));
        }
    }
    lines.truncate(12);
    Some(lines.join("\n"))
}

/// Runs once up to the last of `ticks` into one store, and tick by tick into another, and
/// compares what the two stores hold.
fn compare_ticks(
    model: &Model,
    records: &[Record],
    ticks: &[DateTime<Utc>],
    dir: &TempDir,
) -> Result<(), TestCaseError> {
    let last = *ticks.last().expect("at least one tick");
    let mut once = StateStore::open(&dir.join("once.db")).expect("open state");
    tick(&mut once, model, records, last);
    let mut ticked = StateStore::open(&dir.join("ticked.db")).expect("open state");
    for &now in ticks {
        tick(&mut ticked, model, records, now);
    }
    let (once_sends, ticked_sends) = (once.sends().unwrap(), ticked.sends().unwrap());
    prop_assert!(
        !once_sends.is_empty(),
        "the shop gives no sends at all up to {last}: nothing is compared"
    );
    if let Some(diff) = sends_diff(["one run", "ticks"], &once_sends, &ticked_sends) {
        return Err(TestCaseError::fail(format!(
            "sends recorded in {} ticks up to {last} differ from one run:\n{diff}",
            ticks.len()
        )));
    }
    // Decided entries: the fate recorded when first decided never changes, so a tick that
    // decided too early (before all it depends on was known) shows here.
    let decided = |store: &StateStore| -> Vec<Entry> {
        store
            .entries()
            .unwrap()
            .into_iter()
            .filter(|e| e.fate.is_some())
            .collect()
    };
    if let Some(diff) = entries_diff(["one run", "ticks"], &decided(&once), &decided(&ticked)) {
        return Err(TestCaseError::fail(format!(
            "decided entries recorded in {} ticks up to {last} differ from one run:\n{diff}",
            ticks.len()
        )));
    }
    // And what is still pending at the end is pending in both.
    let pending = |store: &StateStore| -> Vec<EntryKey> {
        store
            .entries()
            .unwrap()
            .iter()
            .filter(|e| e.fate.is_none())
            .map(entry_key)
            .collect()
    };
    prop_assert_eq!(pending(&once), pending(&ticked));
    Ok(())
}

fn cases() -> u32 {
    std::env::var("RUN_PROPS_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        // A case costs a second or more: shrink a little, not for ever.
        max_shrink_iters: 16,
        ..ProptestConfig::default()
    })]

    /// Hourly ticks over the last two or three days up to `T` (the first tick records all
    /// that came before) record what one run up to `T` records.
    #[test]
    fn hourly_ticks_record_what_one_run_records(
        seed in any::<u64>(),
        customers in 60u64..=100,
        days in 7u32..=10,
        start in 0u8..3,
        hours in 48i64..=72,
        // Where `T` falls: hours before the end of the data.
        end_back in 0i64..=24,
    ) {
        let start = start_of(start);
        let dir = shop("hourly", customers, days, seed, start);
        let model = campaigns();
        let records = records(dir.path(), &model);
        let last = start + Duration::days(i64::from(days)) - Duration::hours(end_back);
        let ticks: Vec<DateTime<Utc>> =
            (0..=hours).rev().map(|h| last - Duration::hours(h)).collect();
        compare_ticks(&model, &records, &ticks, &dir)?;
    }

    /// Ticks at random instants up to `T`: any second, and the very instants where
    /// something happens (a record's timestamp, a send's instant, and the second before),
    /// record what one run up to `T` records.
    #[test]
    fn ticks_at_random_instants_record_what_one_run_records(
        seed in any::<u64>(),
        customers in 60u64..=100,
        days in 7u32..=10,
        start in 0u8..3,
        cuts in prop::collection::vec((0u8..4, any::<u32>()), 20..=40),
    ) {
        let start = start_of(start);
        let dir = shop("cuts", customers, days, seed, start);
        let model = campaigns();
        let records = records(dir.path(), &model);
        let last = start + Duration::days(i64::from(days));
        let sends = engine::run(&model, records.iter().cloned(), None, last).sends;
        prop_assume!(!sends.is_empty() && !records.is_empty());
        let span = (last - start).num_seconds() as u32;
        let mut ticks: Vec<DateTime<Utc>> = cuts
            .iter()
            .map(|&(kind, n)| match kind {
                0 => start + Duration::seconds(i64::from(n % span)),
                1 => records[n as usize % records.len()].at,
                2 => sends[n as usize % sends.len()].sent_at,
                _ => sends[n as usize % sends.len()].sent_at - Duration::seconds(1),
            })
            .filter(|t| *t < last)
            .collect();
        ticks.sort();
        ticks.dedup();
        ticks.push(last);
        compare_ticks(&model, &records, &ticks, &dir)?;
    }
}

// ---------------------------------------------------------------------------------------------
// File order

/// splitmix64: a small deterministic generator for the choices made per line.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Every non-blank line of every data file below `dir` (gzip undone).
fn data_lines(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(".ndjson.gz") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(!files.is_empty(), "no data files in {}", dir.display());
    let mut lines = Vec::new();
    for path in files {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(std::fs::File::open(&path).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        lines.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string),
        );
    }
    lines
}

fn timestamp_of(line: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    value["timestamp"]
        .as_str()
        .expect("a timestamp")
        .to_string()
}

/// One file the lines are split into.
#[derive(Debug, Clone)]
struct Part {
    name: String,
    /// 0 `.ndjson`, 1 `.ndjson.gz`, 2 `.jsonl`, 3 `.jsonl.gz`.
    extension: u8,
    shuffled: bool,
    in_subdirectory: bool,
}

fn part() -> impl Strategy<Value = Part> {
    (
        "[a-z0-9][a-z0-9_-]{0,10}",
        0u8..4,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(name, extension, shuffled, in_subdirectory)| Part {
            name,
            extension,
            shuffled,
            in_subdirectory,
        })
}

/// Writes `lines` split over `parts` into `out`; each line goes to one part chosen by
/// `rng`. A part is sorted by timestamp (as the generator's files are) or shuffled.
fn write_split(lines: &[String], parts: &[Part], rng: &mut Rng, out: &Path) -> Vec<PathBuf> {
    let mut contents: Vec<Vec<&str>> = vec![Vec::new(); parts.len()];
    for line in lines {
        contents[rng.below(parts.len())].push(line);
    }
    let mut written = Vec::new();
    for (i, (part, lines)) in parts.iter().zip(contents.iter_mut()).enumerate() {
        if part.shuffled {
            for j in (1..lines.len()).rev() {
                lines.swap(j, rng.below(j + 1));
            }
        } else {
            lines.sort_by_cached_key(|l| timestamp_of(l));
        }
        let extension = ["ndjson", "ndjson.gz", "jsonl", "jsonl.gz"][part.extension as usize];
        let directory = if part.in_subdirectory {
            out.join("more")
        } else {
            out.to_path_buf()
        };
        let mut path = directory.join(format!("{}.{extension}", part.name));
        if written.contains(&path) {
            path = directory.join(format!("{}-{i}.{extension}", part.name));
        }
        std::fs::create_dir_all(&directory).unwrap();
        let mut text = String::new();
        for line in lines.iter() {
            text.push_str(line);
            text.push('\n');
        }
        let bytes = if extension.ends_with(".gz") {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(text.as_bytes()).unwrap();
            gz.finish().unwrap()
        } else {
            text.into_bytes()
        };
        std::fs::write(&path, bytes).unwrap();
        written.push(path);
    }
    written
}

/// What the engine makes of a data directory up to `now`, and what the reader counted.
struct Outcome {
    entries: Vec<Entry>,
    sends: Vec<Send>,
    read: u64,
    skipped: BTreeMap<String, u64>,
}

fn run_dir(model: &Model, dir: &Path, now: DateTime<Utc>) -> Outcome {
    let dataset = DataSet::open(dir, &model.schema).expect("open the data");
    let mut stream = dataset.records();
    let out = engine::run(model, stream.by_ref(), None, now);
    let rejects = stream.take_rejects();
    assert!(
        rejects.is_empty(),
        "rejects in {}: {rejects:#?}",
        dir.display()
    );
    Outcome {
        entries: out.entries,
        sends: out.sends,
        read: stream.read_count(),
        skipped: stream.skipped().clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 32,
        ..ProptestConfig::default()
    })]

    /// The same lines in 2 to 6 files of random names and kinds, in any order within each
    /// file, give the same entries and sends as the generated directory.
    #[test]
    fn file_order_and_layout_do_not_change_the_outcome(
        seed in any::<u64>(),
        customers in 30u64..=60,
        days in 7u32..=14,
        start in 0u8..3,
        parts in prop::collection::vec(part(), 2..=6),
        split_seed in any::<u64>(),
    ) {
        let start = start_of(start);
        let original = shop("order", customers, days, seed, start);
        let model = campaigns();
        let now = start + Duration::days(i64::from(days));
        let lines = data_lines(original.path());
        let split = TempDir::new("order-split");
        let files = write_split(&lines, &parts, &mut Rng(split_seed), split.path());
        prop_assert_eq!(
            DataSet::open(split.path(), &model.schema).unwrap().files().len(),
            parts.len(),
            "every part is a data file: {:?}",
            files
        );

        let expected = run_dir(&model, original.path(), now);
        prop_assert!(!expected.sends.is_empty(), "the shop gives no sends: nothing is compared");
        let found = run_dir(&model, split.path(), now);
        prop_assert_eq!(found.read, lines.len() as u64, "every line is read once");
        prop_assert_eq!(found.read, expected.read);
        prop_assert_eq!(&found.skipped, &expected.skipped);
        if let Some(diff) = entries_diff(["the generated files", "the split files"], &expected.entries, &found.entries) {
            return Err(TestCaseError::fail(format!(
                "entries differ once the data is split over {files:?}:\n{diff}"
            )));
        }
        if let Some(diff) = sends_diff(["the generated files", "the split files"], &expected.sends, &found.sends) {
            return Err(TestCaseError::fail(format!(
                "sends differ once the data is split over {files:?}:\n{diff}"
            )));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Found while writing the properties above: timed (`every`) triggers and `now`, and
// entries at the same instant

/// The repository's campaigns run over NDJSON `lines` up to `now`: the entries of `moment`.
fn entries_of(moment: &str, lines: &[&str], now: DateTime<Utc>) -> Vec<Entry> {
    let dir = TempDir::new("every");
    dir.write("data/shop.ndjson", lines.join("\n") + "\n");
    let model = campaigns();
    let records = records(&dir.join("data"), &model);
    assert_eq!(records.len(), lines.len(), "every line is a record");
    engine::run(&model, records.into_iter(), None, now)
        .entries
        .into_iter()
        .filter(|e| &*e.moment == moment)
        .collect()
}

/// Ada, opted in to email, in the default zone (Europe/London: UTC in December).
const ADA: &str = r#"{"type":"identify","messageId":"i1","userId":"ada","timestamp":"2026-12-10T09:00:00Z","traits":{"email":"ada@example.com","first_name":"Ada","email_opt_in":true}}"#;

/// `holiday_cutoff` fires `every "0 10 18 12 *"` (18 December, 10:00 local) for customers
/// who viewed a product within 14 days; nothing delays its send. Ada viewed one on the
/// 15th, and nothing else happens in the shop until the 20th. A run up to the 19th must
/// decide her entry due on the 18th at 10:00 (sent or control), and decide it as a run that
/// also reads a record of the 20th does: the engine is causal.
#[test]

fn an_every_trigger_is_decided_at_its_instant_without_later_records() {
    let viewed = r#"{"type":"track","messageId":"v1","userId":"ada","event":"Product Viewed","timestamp":"2026-12-15T12:00:00Z","properties":{"product_id":"p1","price":5}}"#;
    let later = r#"{"type":"track","messageId":"s1","userId":"ada","event":"Session Started","timestamp":"2026-12-20T08:00:00Z","properties":{}}"#;
    let due = Utc.with_ymd_and_hms(2026, 12, 18, 10, 0, 0).unwrap();
    let now = Utc.with_ymd_and_hms(2026, 12, 19, 0, 0, 0).unwrap();
    let quiet = entries_of("holiday_cutoff", &[ADA, viewed], now);
    assert_eq!(quiet.len(), 1, "one entry at 10:00 on the 18th: {quiet:#?}");
    assert_eq!(quiet[0].trigger_at, due);
    assert!(
        quiet[0].fate.is_some(),
        "due at {due}, still pending at {now}: {:?}",
        quiet[0]
    );
    let busy = entries_of("holiday_cutoff", &[ADA, viewed, later], now);
    assert_eq!(
        quiet, busy,
        "a record after `now` changed what was decided before it"
    );
}

/// At one instant records come first, then timed triggers (ARCHITECTURE.md, "The engine"):
/// a product viewed at 10:00:00 on 18 December counts for the `holiday_cutoff` trigger of
/// that same second, as `did(product_viewed within 14d)` includes the evaluation instant.
#[test]

fn records_at_an_every_instant_come_before_the_trigger() {
    let viewed = r#"{"type":"track","messageId":"v1","userId":"ada","event":"Product Viewed","timestamp":"2026-12-18T10:00:00Z","properties":{"product_id":"p1","price":5}}"#;
    let later = r#"{"type":"track","messageId":"s1","userId":"ada","event":"Session Started","timestamp":"2026-12-20T08:00:00Z","properties":{}}"#;
    let due = Utc.with_ymd_and_hms(2026, 12, 18, 10, 0, 0).unwrap();
    let now = Utc.with_ymd_and_hms(2026, 12, 21, 0, 0, 0).unwrap();
    let entries = entries_of("holiday_cutoff", &[ADA, viewed, later], now);
    assert_eq!(
        entries.iter().map(|e| e.trigger_at).collect::<Vec<_>>(),
        vec![due],
        "the view at {due} is within 14 days of the trigger at {due}: {entries:#?}"
    );
}

/// Ada adds two products in the same second: two entries of `cart_wobble`, both due at
/// 11:00. Its `limit 1 per customer per 7d` lets one through (sent) and limits the other.
/// The state must keep both decided entries, as the engine made them; in particular the
/// entry of the send it records.
#[test]

fn two_triggers_in_the_same_second_keep_both_entries_in_the_state() {
    let dir = TempDir::new("same-second");
    let added = |id: &str, product: &str| {
        format!(
            r#"{{"type":"track","messageId":"{id}","userId":"ada","event":"Product Added","timestamp":"2026-11-20T10:00:00Z","properties":{{"product_id":"{product}","price":30,"quantity":1}}}}"#
        )
    };
    let ada = r#"{"type":"identify","messageId":"i1","userId":"ada","timestamp":"2026-11-19T09:00:00Z","traits":{"email":"ada@example.com","first_name":"Ada","email_opt_in":true}}"#;
    dir.write(
        "data/shop.ndjson",
        format!("{ada}\n{}\n{}\n", added("a1", "p1"), added("a2", "p2")),
    );
    let model = campaigns();
    let records = records(&dir.join("data"), &model);
    let now = Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap();
    let out = engine::run(&model, records.into_iter(), None, now);
    let fates: Vec<_> = out.entries.iter().map(|e| e.fate).collect();
    assert_eq!(out.entries.len(), 2, "{:#?}", out.entries);
    assert!(
        fates.contains(&Some(moments::outcome::Fate::Sent))
            && fates.contains(&Some(moments::outcome::Fate::Limited)),
        "{fates:?}"
    );
    assert_eq!(out.sends.len(), 1);

    let mut store = StateStore::open(&dir.join("state.db")).unwrap();
    store.record_tick(now, &out.entries, &out.sends).unwrap();
    let kept = store.entries().unwrap();
    for entry in &out.entries {
        assert!(
            kept.contains(entry),
            "the state lost {entry:#?}\nit keeps {kept:#?}"
        );
    }
    let send_id = &out.sends[0].send_id;
    assert!(
        kept.iter().any(|e| e.send_id.as_ref() == Some(send_id)),
        "no entry in the state for the recorded send {send_id}"
    );
}
