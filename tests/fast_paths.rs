//! The engine's fast paths (tallies, indexes by key, gates, events kept only as long as
//! they are read) never change an answer: a traced run, which keeps every event and scans
//! it, gives the same entries and sends as a plain run, over the whole sample shop.

mod common;

use chrono::{TimeZone, Utc};
use moments::engine::{run, run_traced, TraceOptions};

#[test]
fn a_run_with_its_fast_paths_equals_a_run_that_scans_every_event() {
    let (model, data) = common::sample_shop();
    let now = Utc.with_ymd_and_hms(2026, 12, 31, 0, 0, 0).unwrap();

    let fast = run(&model, data.records(), None, now);
    let options = TraceOptions {
        customer: "c000001".to_string(),
        moment: None,
    };
    let (scanned, _) = run_traced(&model, data.records(), None, now, &options);

    // Every moment decides something, so every fast path is exercised.
    let summary = moments::outcome::summary(&fast.entries);
    for moment in &model.moments {
        assert!(
            summary.contains_key(&moment.id),
            "{} never entered",
            moment.id
        );
    }
    assert_eq!(fast.entries.len(), scanned.entries.len());
    for (a, b) in fast.entries.iter().zip(&scanned.entries) {
        assert_eq!(a, b);
    }
    assert_eq!(fast.sends.len(), scanned.sends.len());
    for (a, b) in fast.sends.iter().zip(&scanned.sends) {
        assert_eq!(a, b);
    }
}
