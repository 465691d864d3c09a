//! `explain` on a small shop (`tests/explain/`) where each customer meets one fate:
//! the rendered explanation of each is a snapshot.
//!
//! The timeline (`tests/explain/data/events.ndjson`), all opted in on 1 Nov:
//! - ann (Europe/Paris): adds p1 at 10:00 UTC → cart sent at 11:00; adds p2 at 10:30 → cart
//!   limited (1 per 7d); `winter` is inactive in November; `birthday` is not set;
//! - bob: opts out on 11 Nov, adds on 12 Nov → no_consent, "false since 11 Nov 09:00";
//! - cat: adds, orders 20 minutes later → cancelled;
//! - dan: adds a 5.00 item → never enters `cart` (`event.price >= 20` is false);
//! - fay: a 150.00 item → `big`, in its 50% holdout → control;
//! - gus: adds at 22:30 → due 23:30, moved by quiet hours to 08:00 → sent;
//! - hal: a 150.00 item → `big` (priority 5) sent at 10:00, `cart` at 11:00 capped (1 a day);
//! - ivy: no event → `cart` never triggered.

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use moments::data::DataSet;
use moments::engine::{run_traced, TraceOptions};
use moments::explain::{explain, json, text};
use moments::model::Model;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/explain")
}

fn model() -> Model {
    let groups = moments::project::discover(&[root().join("campaigns")]).expect("discover");
    let group = groups.into_iter().next().expect("a group");
    let (_, checked) = moments::project::check_group(&group).expect("check");
    assert!(checked.diagnostics.is_empty(), "{:#?}", checked.diagnostics);
    checked.model.expect("valid")
}

fn end() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap()
}

fn explained(customer: &str, moment: Option<&str>) -> moments::explain::Explanation {
    let model = model();
    let data = DataSet::open(Path::new(&root().join("data")), &model.schema).expect("data");
    let options = TraceOptions {
        customer: customer.to_string(),
        moment: moment.map(str::to_string),
    };
    let (output, trace) = run_traced(&model, data.records(), None, end(), &options);
    explain(
        &model,
        customer,
        moment,
        DateTime::<Utc>::MIN_UTC,
        end(),
        &output,
        &trace,
    )
}

#[test]
fn sent_and_limited() {
    insta::assert_snapshot!(text(&explained("ann", Some("cart"))));
}

#[test]
fn no_consent_says_since_when() {
    let e = explained("bob", Some("cart"));
    let reason = e.moments[0].occurrences[0]
        .reason
        .clone()
        .unwrap_or_default();
    assert!(
        reason.contains("email_opt_in false since 11 Nov 09:00"),
        "{reason}"
    );
    insta::assert_snapshot!(text(&e));
}

#[test]
fn cancelled() {
    insta::assert_snapshot!(text(&explained("cat", Some("cart"))));
}

#[test]
fn a_condition_that_failed() {
    let e = explained("dan", Some("cart"));
    assert!(e.moments[0]
        .summary
        .contains("`event.price >= 20` was not true"));
    insta::assert_snapshot!(text(&e));
}

#[test]
fn control() {
    insta::assert_snapshot!(text(&explained("fay", Some("big"))));
}

#[test]
fn moved_by_quiet_hours() {
    insta::assert_snapshot!(text(&explained("gus", Some("cart"))));
}

#[test]
fn capped_by_a_higher_priority_moment() {
    insta::assert_snapshot!(text(&explained("hal", None)));
}

#[test]
fn inactive_and_never_triggered() {
    insta::assert_snapshot!(text(&explained("ann", Some("winter"))));
    insta::assert_snapshot!(text(&explained("ann", Some("birthday"))));
    insta::assert_snapshot!(text(&explained("ivy", Some("cart"))));
}

#[test]
fn an_unknown_customer_gets_a_suggestion() {
    let e = explained("anne", None);
    assert!(!e.known);
    assert_eq!(e.did_you_mean, vec!["ann".to_string()]);
    insta::assert_snapshot!(text(&e));
}

#[test]
fn json_has_every_occurrence_with_values() {
    insta::assert_snapshot!(json(&explained("ann", Some("cart"))));
}
