//! Sorted output with bounded memory: whatever the budget (one run or many spilled to
//! disk) and the number of parts it is written in, the file is the lines stably sorted by
//! key, and a backtest written that way is byte for byte the engine's sorted output.

mod common;

use chrono::{DateTime, TimeZone, Utc};
use common::TempDir;
use moments::sorted_file::{Key, SortedFile};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

fn instant(seconds: i64, nanos: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(seconds, nanos).unwrap()
}

/// (a rank, a string, an optional string, an instant) and the line's own text.
type Item = (u16, String, Option<String>, (i64, u32), String);

fn key(item: &Item) -> Key {
    Key::new()
        .rank(item.0)
        .text(&item.1)
        .opt_text(item.2.as_deref())
        .instant(instant(item.3 .0, item.3 .1))
}

fn item() -> impl Strategy<Value = Item> {
    (
        prop_oneof![Just(0u16), Just(1), Just(256), Just(u16::MAX)],
        // Short strings over a small alphabet (with NUL), so that prefixes and ties happen;
        // some long enough that keys differ only past their first 16 bytes.
        prop_oneof!["[ab\u{0}é]{0,3}", "a{12,15}[ab\u{0}]{0,3}"],
        proptest::option::of("[ab\u{0}]{0,2}"),
        (
            prop_oneof![
                Just(-86_400i64),
                Just(0),
                Just(1),
                -3i64..3,
                1_700_000_000i64..1_700_000_002
            ],
            prop_oneof![Just(0u32), Just(999_999_999), 0u32..3],
        ),
        "[a-z]{0,8}",
    )
}

/// Writes `items` in `parts` parts of `budget` bytes as the engines write them (the lines of
/// one string, a customer, all in one part, so equal keys are too); the file written, the
/// lines stably sorted by what their keys stand for, and the files left beside it.
fn write_sorted(items: &[Item], budget: usize, parts: usize) -> (String, String, usize) {
    let dir = TempDir::new("sorted");
    let path = dir.join("out.ndjson");
    let mut files: Vec<SortedFile> = (0..parts)
        .map(|part| SortedFile::part(&path, part, budget))
        .collect();
    for (index, item) in items.iter().enumerate() {
        let part = item.1.bytes().map(usize::from).sum::<usize>() % parts;
        files[part]
            .push(&key(item), format!("{index} {}", item.4).as_bytes())
            .unwrap();
    }
    assert_eq!(SortedFile::finish_all(files).unwrap(), items.len() as u64);
    // What the key stands for, compared as the values themselves.
    let mut expected: Vec<(usize, &Item)> = items.iter().enumerate().collect();
    expected.sort_by(|(_, a), (_, b)| {
        (a.0, &a.1, &a.2, instant(a.3 .0, a.3 .1)).cmp(&(b.0, &b.1, &b.2, instant(b.3 .0, b.3 .1)))
    });
    let expected: String = expected
        .iter()
        .map(|(index, item)| format!("{index} {}\n", item.4))
        .collect();
    let written = std::fs::read_to_string(&path).unwrap();
    let left = std::fs::read_dir(dir.path()).unwrap().count() - 1;
    (written, expected, left)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn lines_come_out_stably_sorted_by_key(
        items in proptest::collection::vec(item(), 0..120),
        budget in prop_oneof![Just(1usize), 1usize..400, Just(1 << 20)],
        parts in prop_oneof![Just(1usize), 2usize..4],
    ) {
        let (written, expected, left) = write_sorted(&items, budget, parts);
        prop_assert_eq!(written, expected);
        // Run files are gone.
        prop_assert_eq!(left, 0);
    }
}

#[test]
fn more_runs_than_can_be_open_at_once_are_merged_into_fewer_first() {
    // A run per line: 1,500 runs in two parts, more than the merge holds open at once.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let items: Vec<Item> = (0..1_500)
        .map(|_| item().new_tree(&mut runner).unwrap().current())
        .collect();
    let (written, expected, left) = write_sorted(&items, 1, 2);
    assert_eq!(written, expected);
    assert_eq!(left, 0);
}

/// Each item as a line of JSON, as the engine's files have them.
fn ndjson<T: serde::Serialize>(items: &[T]) -> String {
    items
        .iter()
        .map(|item| serde_json::to_string(item).unwrap() + "\n")
        .collect()
}

#[test]
fn a_backtest_written_in_small_runs_by_one_or_several_engines_is_the_engines_sorted_output() {
    let (model, data) = common::sample_shop();
    let from = Some(Utc.with_ymd_and_hms(2026, 11, 15, 0, 0, 0).unwrap());
    let to = Utc.with_ymd_and_hms(2026, 12, 20, 0, 0, 0).unwrap();

    let in_memory = moments::engine::run(&model, data.records(), from, to);
    let expected_entries = ndjson(&in_memory.entries);
    let expected_sends = ndjson(&in_memory.sends);
    assert!(in_memory.sends.len() > 1_000, "{}", in_memory.sends.len());

    // Written as `moments backtest` does, by one engine or by three side by side (each
    // deciding for a third of the customers and writing its own part); 256 KiB: the
    // entries spill in dozens of runs.
    for engines in [1, 3] {
        let dir = TempDir::new("backtest-runs");
        let (written, _) = moments::backtest::run(
            &model,
            data.records(),
            (from, to),
            engines,
            dir.path(),
            Some(256 << 10),
        )
        .expect("write");
        assert_eq!(written.entries, in_memory.entries.len() as u64);
        assert_eq!(written.sends, in_memory.sends.len() as u64);
        assert_eq!(
            written.summary,
            moments::outcome::summary(&in_memory.entries)
        );
        let entries = std::fs::read_to_string(dir.join("entries.ndjson")).unwrap();
        let sends = std::fs::read_to_string(dir.join("sends.ndjson")).unwrap();
        assert!(
            entries == expected_entries,
            "{engines} engines: entries.ndjson differs"
        );
        assert!(
            sends == expected_sends,
            "{engines} engines: sends.ndjson differs"
        );
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "run files left behind: {names:?}");
    }
}
