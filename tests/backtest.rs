//! A backtest's files, written as the engines decide: whatever the number of engines, they
//! hold what the engine decides, `entries.ndjson` in the order of decisions and
//! `sends.ndjson` by send instant, then send id.

mod common;

use std::cmp::Reverse;

use chrono::{DateTime, TimeZone, Utc};
use common::TempDir;
use moments::engine::Sink;
use moments::outcome::{Entry, EntryView, Send, SendView};

/// What an engine hands its sink, with the instant each was decided at (or, for the
/// entries left pending, is due to be) and whether it is pending.
#[derive(Default)]
struct Recorded {
    at: Option<DateTime<Utc>>,
    pending: bool,
    entries: Vec<(bool, DateTime<Utc>, Entry)>,
    sends: Vec<Send>,
}

impl Sink for Recorded {
    fn entry(&mut self, entry: EntryView<'_>) {
        let at = self.at.expect("an entry before any instant");
        self.entries.push((self.pending, at, entry.to_entry()));
    }
    fn send(&mut self, send: SendView<'_>) {
        self.sends.push(send.to_send());
    }
    fn reached(&mut self, instant: DateTime<Utc>) {
        assert!(
            self.pending || self.at.is_none_or(|at| at <= instant),
            "instants go back"
        );
        self.at = Some(instant);
    }
    fn left_pending(&mut self) {
        self.pending = true;
        self.at = None;
    }
}

fn ndjson<T: serde::Serialize>(items: impl Iterator<Item = T>) -> String {
    items
        .map(|item| serde_json::to_string(&item).unwrap() + "\n")
        .collect()
}

#[test]
fn a_backtest_by_one_or_several_engines_is_the_engines_output_in_decision_order() {
    let (model, data) = common::sample_shop();
    let from = Some(Utc.with_ymd_and_hms(2026, 11, 15, 0, 0, 0).unwrap());
    let to = Utc.with_ymd_and_hms(2026, 12, 31, 0, 0, 0).unwrap();

    // The order the files promise, from what one engine decides, as `docs/language.md`
    // states it: decided entries by instant, priority (higher first), moment id and
    // customer id; then those pending, by due instant and customer id; sends by instant,
    // then send id. Each sort is stable: a customer's entries keep their order.
    let mut recorded = Recorded::default();
    moments::engine::run_into(&model, data.records(), from, to, &mut recorded);
    let priority = |moment: &str| {
        let m = model.moments.iter().find(|m| m.id == moment).unwrap();
        Reverse(m.priority)
    };
    let mut entries = recorded.entries;
    entries.sort_by(|(pa, a_at, a), (pb, b_at, b)| {
        let key = |pending: bool, at, e: &Entry| match pending {
            false => (
                false,
                at,
                priority(&e.moment),
                e.moment.clone(),
                e.customer_id.clone(),
            ),
            true => (true, at, Reverse(0), "".into(), e.customer_id.clone()),
        };
        key(*pa, *a_at, a).cmp(&key(*pb, *b_at, b))
    });
    let mut sends = recorded.sends;
    sends.sort_by(|a, b| (a.sent_at, &a.send_id).cmp(&(b.sent_at, &b.send_id)));
    assert!(entries.iter().any(|(pending, _, _)| *pending));
    assert!(sends.len() > 1_000, "{}", sends.len());
    let expected_entries = ndjson(entries.iter().map(|(_, _, e)| e));
    let expected_sends = ndjson(sends.iter());

    let in_memory = moments::engine::run(&model, data.records(), from, to);
    // One directory for both runs, each over a last run's files (longer than the new
    // ones): they are replaced whole, and nothing else is left beside them.
    let dir = TempDir::new("backtest");
    for engines in [1, 3] {
        for name in ["entries.ndjson", "sends.ndjson"] {
            std::fs::write(dir.join(name), "{\"stale\":true}\n".repeat(200_000)).unwrap();
        }
        let (written, _) =
            moments::backtest::run(&model, data.records(), (from, to), engines, dir.path())
                .expect("write");
        assert_eq!(written.entries, entries.len() as u64);
        assert_eq!(written.sends, sends.len() as u64);
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
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["entries.ndjson", "sends.ndjson"]);
    }
}
