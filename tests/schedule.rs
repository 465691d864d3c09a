//! Calendar and clock arithmetic (`moments::schedule`).
//!
//! Every expected instant here was worked out by hand from the published rules, not taken from
//! the code under test:
//! - Europe/London: GMT (+00) until Sunday 29 March 2026 01:00 UTC, when the clocks go from
//!   01:00 to 02:00 BST (+01); back on Sunday 25 October 2026 at 01:00 UTC, from 02:00 BST to
//!   01:00 GMT, so 01:00 to 01:59 happens twice that night.
//! - Europe/Paris: CET (+01) / CEST (+02), changing at the same instants (02:00 → 03:00 local
//!   in March, 03:00 → 02:00 in October).
//! - America/New_York: EDT (-04) from 8 March to 1 November 2026, EST (-05) otherwise.
//! - Asia/Tokyo: JST (+09), no daylight saving.
//! - America/Santiago: -04 until Sunday 6 September 2026, when 00:00 local jumps to 01:00
//!   (-03) at 04:00 UTC; -03 until Sunday 5 April 2026 03:00 UTC, when midnight goes back to
//!   23:00 on Saturday 4 April (-04).
//! - 1 January 2026 is a Thursday, so 1 March 2026 is a Sunday.

use std::collections::BTreeSet;

use chrono::{
    DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc, Weekday,
};
use chrono_tz::Tz;
use moments::ast::{Direction, Duration, DurationUnit, Span, TimeOfDay};
use moments::cron_expr::CronExpr;
use moments::schedule::{
    after_quiet_hours, anniversaries, anniversary_in, cron_instants, cron_iter, customer_zone,
    due_at, fnv1a128, fnv1a64, holdout_bucket, in_holdout, instant_key, is_active, just_before,
    local_date, local_datetime_to_utc, local_to_utc, offset_instant, send_id, shifted, time_of,
    wall_clock, OffsetBase,
};

const LONDON: Tz = Tz::Europe__London;
const PARIS: Tz = Tz::Europe__Paris;
const NEW_YORK: Tz = Tz::America__New_York;
const TOKYO: Tz = Tz::Asia__Tokyo;
const SANTIAGO: Tz = Tz::America__Santiago;
const LORD_HOWE: Tz = Tz::Australia__Lord_Howe;
const APIA: Tz = Tz::Pacific__Apia;
const UTC: Tz = Tz::UTC;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&Utc)
}

fn utcs(texts: &[&str]) -> Vec<DateTime<Utc>> {
    texts.iter().map(|t| utc(t)).collect()
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

fn time(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).expect("valid time")
}

fn tod(hour: u32, minute: u32) -> TimeOfDay {
    TimeOfDay {
        hour,
        minute,
        span: Span::default(),
    }
}

fn dur(amount: u64, unit: DurationUnit) -> Duration {
    Duration {
        amount,
        unit,
        span: Span::default(),
    }
}

fn cron(text: &str) -> CronExpr {
    CronExpr::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

// ---------------------------------------------------------------------------------------
// Local times

#[test]
fn local_to_utc_london_spring_forward() {
    let day = date(2026, 3, 29);
    let cases = [
        ((0, 30), "2026-03-29T00:30:00Z"), // GMT
        ((0, 59), "2026-03-29T00:59:00Z"),
        // 01:00 to 01:59 do not exist: read as GMT, i.e. moved forward by the hour.
        ((1, 0), "2026-03-29T01:00:00Z"),
        ((1, 30), "2026-03-29T01:30:00Z"),
        ((1, 59), "2026-03-29T01:59:00Z"),
        ((2, 0), "2026-03-29T01:00:00Z"), // BST
        ((2, 30), "2026-03-29T01:30:00Z"),
        ((9, 0), "2026-03-29T08:00:00Z"),
    ];
    for ((h, m), expected) in cases {
        assert_eq!(
            local_to_utc(day, time(h, m), LONDON),
            utc(expected),
            "{h:02}:{m:02}"
        );
    }
    // The skipped 01:30 is what the clocks show as 02:30 BST.
    assert_eq!(
        wall_clock(utc("2026-03-29T01:30:00Z"), LONDON),
        day.and_time(time(2, 30))
    );
    // The days either side.
    assert_eq!(
        local_to_utc(date(2026, 3, 28), time(1, 30), LONDON),
        utc("2026-03-28T01:30:00Z")
    );
    assert_eq!(
        local_to_utc(date(2026, 3, 30), time(1, 30), LONDON),
        utc("2026-03-30T00:30:00Z")
    );
}

#[test]
fn local_to_utc_paris_gap_moves_forward_by_the_gap() {
    let day = date(2026, 3, 29);
    // 02:30 does not exist in Paris that day: read as CET (+01), it is 01:30 UTC = 03:30 CEST.
    assert_eq!(
        local_to_utc(day, time(2, 30), PARIS),
        utc("2026-03-29T01:30:00Z")
    );
    assert_eq!(
        local_to_utc(day, time(2, 0), PARIS),
        utc("2026-03-29T01:00:00Z")
    );
    assert_eq!(
        local_to_utc(day, time(3, 0), PARIS),
        utc("2026-03-29T01:00:00Z")
    );
    assert_eq!(
        local_to_utc(day, time(1, 59), PARIS),
        utc("2026-03-29T00:59:00Z")
    );
}

#[test]
fn local_to_utc_london_fall_back_takes_the_earlier() {
    let day = date(2026, 10, 25);
    let cases = [
        ((0, 59), "2026-10-24T23:59:00Z"), // BST
        // 01:00 to 01:59 happen twice: first as BST.
        ((1, 0), "2026-10-25T00:00:00Z"),
        ((1, 30), "2026-10-25T00:30:00Z"),
        ((1, 59), "2026-10-25T00:59:00Z"),
        ((2, 0), "2026-10-25T02:00:00Z"), // GMT
        ((12, 0), "2026-10-25T12:00:00Z"),
    ];
    for ((h, m), expected) in cases {
        assert_eq!(
            local_to_utc(day, time(h, m), LONDON),
            utc(expected),
            "{h:02}:{m:02}"
        );
    }
    assert_eq!(
        local_to_utc(date(2026, 10, 24), time(12, 0), LONDON),
        utc("2026-10-24T11:00:00Z")
    );
    // Both instants of the fold read 01:30.
    assert_eq!(
        wall_clock(utc("2026-10-25T00:30:00Z"), LONDON),
        day.and_time(time(1, 30))
    );
    assert_eq!(
        wall_clock(utc("2026-10-25T01:30:00Z"), LONDON),
        day.and_time(time(1, 30))
    );
}

#[test]
fn local_to_utc_with_a_half_hour_change() {
    // Lord Howe Island goes from +10:30 to +11 at 02:00 local on 4 October 2026 (15:30 UTC):
    // 02:15 does not exist; read as +10:30 it is 15:45 UTC, shown as 02:45.
    let day = date(2026, 10, 4);
    assert_eq!(
        local_to_utc(day, time(2, 15), LORD_HOWE),
        utc("2026-10-03T15:45:00Z")
    );
    assert_eq!(
        local_to_utc(day, time(1, 59), LORD_HOWE),
        utc("2026-10-03T15:29:00Z")
    );
    assert_eq!(
        local_to_utc(day, time(2, 30), LORD_HOWE),
        utc("2026-10-03T15:30:00Z")
    );
}

#[test]
fn local_to_utc_at_a_skipped_midnight() {
    // Santiago skips 00:00-00:59 on 6 September 2026: midnight read as -04 is 04:00 UTC,
    // the first instant of the day (the clocks show 01:00 -03).
    assert_eq!(
        local_to_utc(date(2026, 9, 6), time(0, 0), SANTIAGO),
        utc("2026-09-06T04:00:00Z")
    );
    assert_eq!(
        local_to_utc(date(2026, 9, 6), time(1, 0), SANTIAGO),
        utc("2026-09-06T04:00:00Z")
    );
    // 23:30 on 4 April 2026 happens twice: first at -03.
    assert_eq!(
        local_to_utc(date(2026, 4, 4), time(23, 30), SANTIAGO),
        utc("2026-04-05T02:30:00Z")
    );
}

#[test]
fn local_dates() {
    let at = utc("2026-07-14T23:30:00Z");
    assert_eq!(local_date(at, UTC), date(2026, 7, 14));
    assert_eq!(local_date(at, LONDON), date(2026, 7, 15)); // 00:30 BST
    assert_eq!(local_date(at, NEW_YORK), date(2026, 7, 14)); // 19:30 EDT
    assert_eq!(
        local_date(utc("2026-07-14T15:00:00Z"), TOKYO),
        date(2026, 7, 15)
    ); // 00:00 JST
    assert_eq!(
        local_date(utc("2026-07-14T14:59:59Z"), TOKYO),
        date(2026, 7, 14)
    );
    // Santiago's clocks go back from midnight to 23:00: the 4th comes back for an hour.
    assert_eq!(
        local_date(utc("2026-04-05T02:59:00Z"), SANTIAGO),
        date(2026, 4, 4)
    );
    assert_eq!(
        local_date(utc("2026-04-05T03:30:00Z"), SANTIAGO),
        date(2026, 4, 4)
    );
    assert_eq!(
        local_date(utc("2026-04-05T04:00:00Z"), SANTIAGO),
        date(2026, 4, 5)
    );
}

#[test]
fn customers_without_a_zone_use_the_default() {
    assert_eq!(customer_zone(Some(PARIS), Some(LONDON)), PARIS);
    assert_eq!(customer_zone(None, Some(LONDON)), LONDON);
    assert_eq!(customer_zone(None, None), UTC);

    // The same call gives a different instant with the default zone than with UTC in summer.
    let day = date(2026, 7, 15);
    let zone = customer_zone(None, Some(LONDON));
    assert_eq!(
        local_to_utc(day, time(9, 0), zone),
        utc("2026-07-15T08:00:00Z")
    );
    assert_eq!(
        local_to_utc(day, time(9, 0), customer_zone(None, None)),
        utc("2026-07-15T09:00:00Z")
    );
    // ...and in winter, when London is on GMT, the same.
    assert_eq!(
        local_to_utc(date(2026, 1, 15), time(9, 0), zone),
        local_to_utc(date(2026, 1, 15), time(9, 0), UTC)
    );
    // Quiet hours too: 20:30 UTC is 21:30 BST, quiet in London, not in UTC.
    let due = utc("2026-07-01T20:30:00Z");
    assert_eq!(
        after_quiet_hours(due, tod(21, 0), tod(8, 0), zone),
        utc("2026-07-02T07:00:00Z")
    );
    assert_eq!(after_quiet_hours(due, tod(21, 0), tod(8, 0), UTC), due);
}

#[test]
fn time_of_day_conversion() {
    assert_eq!(time_of(tod(9, 5)), time(9, 5));
    assert_eq!(time_of(tod(0, 0)), time(0, 0));
    assert_eq!(time_of(tod(23, 59)), time(23, 59));
    // Never produced by the checker; clamped rather than a panic.
    assert_eq!(time_of(tod(24, 75)), time(23, 59));
}

// ---------------------------------------------------------------------------------------
// Delivery rules

#[test]
fn quiet_hours_in_summer() {
    let quiet = |due: &str| after_quiet_hours(utc(due), tod(21, 0), tod(8, 0), LONDON);
    // 21:00 BST is inside (inclusive), 08:00 BST is outside (exclusive).
    assert_eq!(quiet("2026-07-01T20:00:00Z"), utc("2026-07-02T07:00:00Z"));
    assert_eq!(quiet("2026-07-01T19:59:00Z"), utc("2026-07-01T19:59:00Z"));
    assert_eq!(quiet("2026-07-01T22:59:59Z"), utc("2026-07-02T07:00:00Z"));
    // After midnight: the end is the same day.
    assert_eq!(quiet("2026-07-02T03:00:00Z"), utc("2026-07-02T07:00:00Z"));
    assert_eq!(quiet("2026-07-02T06:59:00Z"), utc("2026-07-02T07:00:00Z"));
    assert_eq!(quiet("2026-07-02T07:00:00Z"), utc("2026-07-02T07:00:00Z"));
    assert_eq!(quiet("2026-07-02T12:00:00Z"), utc("2026-07-02T12:00:00Z"));
}

#[test]
fn quiet_hours_that_do_not_wrap() {
    let quiet = |due: &str| after_quiet_hours(utc(due), tod(12, 0), tod(14, 0), LONDON);
    assert_eq!(quiet("2026-07-01T11:00:00Z"), utc("2026-07-01T13:00:00Z")); // 12:00 BST
    assert_eq!(quiet("2026-07-01T12:00:00Z"), utc("2026-07-01T13:00:00Z"));
    assert_eq!(quiet("2026-07-01T10:59:00Z"), utc("2026-07-01T10:59:00Z"));
    assert_eq!(quiet("2026-07-01T13:00:00Z"), utc("2026-07-01T13:00:00Z"));
    // from == to: nothing is quiet.
    let due = utc("2026-07-01T11:00:00Z");
    assert_eq!(after_quiet_hours(due, tod(12, 0), tod(12, 0), LONDON), due);
}

#[test]
fn quiet_hours_across_spring_forward() {
    let quiet = |due: &str| after_quiet_hours(utc(due), tod(21, 0), tod(8, 0), LONDON);
    // Saturday 22:00 GMT: the night ends at 08:00 BST on Sunday, 07:00 UTC.
    assert_eq!(quiet("2026-03-28T22:00:00Z"), utc("2026-03-29T07:00:00Z"));
    assert_eq!(quiet("2026-03-29T00:30:00Z"), utc("2026-03-29T07:00:00Z")); // 00:30 GMT
    assert_eq!(quiet("2026-03-29T01:30:00Z"), utc("2026-03-29T07:00:00Z")); // 02:30 BST
    assert_eq!(quiet("2026-03-29T06:59:00Z"), utc("2026-03-29T07:00:00Z"));
    assert_eq!(quiet("2026-03-29T07:00:00Z"), utc("2026-03-29T07:00:00Z"));
    // The night before, still GMT both ends.
    assert_eq!(quiet("2026-03-27T23:00:00Z"), utc("2026-03-28T08:00:00Z"));

    // Quiet until 01:30, which the clocks skip: the night ends when they jump to 02:00 BST.
    let until_skipped = |due: &str| after_quiet_hours(utc(due), tod(22, 0), tod(1, 30), LONDON);
    assert_eq!(
        until_skipped("2026-03-29T00:45:00Z"),
        utc("2026-03-29T01:00:00Z")
    );
    assert_eq!(
        until_skipped("2026-03-28T22:00:00Z"),
        utc("2026-03-29T01:00:00Z")
    );
    // Quiet from 01:30, which the clocks skip: 02:10 BST shows a quiet time.
    let from_skipped = |due: &str| after_quiet_hours(utc(due), tod(1, 30), tod(6, 0), LONDON);
    assert_eq!(
        from_skipped("2026-03-29T01:10:00Z"),
        utc("2026-03-29T05:00:00Z")
    );
    assert_eq!(
        from_skipped("2026-03-29T00:59:00Z"),
        utc("2026-03-29T00:59:00Z")
    );
}

#[test]
fn quiet_hours_across_fall_back() {
    let quiet = |due: &str| after_quiet_hours(utc(due), tod(21, 0), tod(8, 0), LONDON);
    // Saturday 23:00 BST: the night ends at 08:00 GMT on Sunday, 08:00 UTC.
    assert_eq!(quiet("2026-10-24T22:00:00Z"), utc("2026-10-25T08:00:00Z"));
    assert_eq!(quiet("2026-10-24T20:00:00Z"), utc("2026-10-25T08:00:00Z")); // 21:00 BST
    assert_eq!(quiet("2026-10-24T19:59:00Z"), utc("2026-10-24T19:59:00Z"));
    assert_eq!(quiet("2026-10-25T00:30:00Z"), utc("2026-10-25T08:00:00Z")); // 01:30 BST
    assert_eq!(quiet("2026-10-25T01:30:00Z"), utc("2026-10-25T08:00:00Z")); // 01:30 GMT
    assert_eq!(quiet("2026-10-25T07:59:00Z"), utc("2026-10-25T08:00:00Z"));
    assert_eq!(quiet("2026-10-25T08:00:00Z"), utc("2026-10-25T08:00:00Z"));
    // Sunday evening, GMT both ends.
    assert_eq!(quiet("2026-10-25T21:00:00Z"), utc("2026-10-26T08:00:00Z"));

    // Quiet until 01:30, which the clocks show twice: each pass ends at its own 01:30.
    let until_twice = |due: &str| after_quiet_hours(utc(due), tod(22, 0), tod(1, 30), LONDON);
    assert_eq!(
        until_twice("2026-10-25T00:10:00Z"),
        utc("2026-10-25T00:30:00Z")
    ); // 01:10 BST
    assert_eq!(
        until_twice("2026-10-25T01:10:00Z"),
        utc("2026-10-25T01:30:00Z")
    ); // 01:10 GMT
    assert_eq!(
        until_twice("2026-10-25T00:45:00Z"),
        utc("2026-10-25T00:45:00Z")
    ); // 01:45 BST
    assert_eq!(
        until_twice("2026-10-24T21:00:00Z"),
        utc("2026-10-25T00:30:00Z")
    ); // 22:00 BST

    // Quiet 01:30 to 02:30: at 01:00 UTC the clock goes back from 01:59:59 BST to 01:00 GMT,
    // out of the quiet hours; it is quiet again from 01:30 GMT to 02:30 GMT.
    let straddling = |due: &str| after_quiet_hours(utc(due), tod(1, 30), tod(2, 30), LONDON);
    assert_eq!(
        straddling("2026-10-25T00:40:00Z"),
        utc("2026-10-25T01:00:00Z")
    ); // 01:40 BST
    assert_eq!(
        straddling("2026-10-25T01:10:00Z"),
        utc("2026-10-25T01:10:00Z")
    ); // 01:10 GMT
    assert_eq!(
        straddling("2026-10-25T01:40:00Z"),
        utc("2026-10-25T02:30:00Z")
    ); // 01:40 GMT
}

/// Sweeps due instants through clock changes in several zones and checks what quiet hours
/// promise: never earlier, never quiet, unchanged when not quiet, and the first instant out
/// (every minute before it is quiet).
#[test]
fn quiet_hours_properties_through_clock_changes() {
    let windows: [(Tz, &str); 8] = [
        (LONDON, "2026-03-28T12:00:00Z"),
        (LONDON, "2026-10-24T12:00:00Z"),
        (PARIS, "2026-03-28T12:00:00Z"),
        (NEW_YORK, "2026-10-31T12:00:00Z"),
        (SANTIAGO, "2026-09-05T12:00:00Z"),
        (SANTIAGO, "2026-04-04T12:00:00Z"),
        (LORD_HOWE, "2026-10-03T00:00:00Z"),
        (APIA, "2011-12-29T12:00:00Z"),
    ];
    let ranges = [
        ((21, 0), (8, 0)),
        ((22, 0), (1, 30)),
        ((1, 30), (2, 30)),
        ((0, 0), (6, 0)),
        ((23, 0), (0, 30)),
        ((2, 15), (2, 45)),
    ];
    let quiet_at = |at: DateTime<Utc>, zone: Tz, from: NaiveTime, to: NaiveTime| {
        let t = wall_clock(at, zone).time();
        if from <= to {
            from <= t && t < to
        } else {
            t >= from || t < to
        }
    };
    for (zone, start) in windows {
        let start = utc(start);
        for ((fh, fm), (th, tm)) in ranges {
            let (from, to) = (time(fh, fm), time(th, tm));
            for step in 0..(36 * 60 / 20) {
                let due = start + chrono::TimeDelta::minutes(20 * step);
                let out = after_quiet_hours(due, tod(fh, fm), tod(th, tm), zone);
                let what = format!("{zone} {from}-{to} due {due}: {out}");
                assert!(out >= due, "{what}");
                assert!(!quiet_at(out, zone, from, to), "{what}");
                assert_eq!(
                    after_quiet_hours(out, tod(fh, fm), tod(th, tm), zone),
                    out,
                    "{what}"
                );
                if !quiet_at(due, zone, from, to) {
                    assert_eq!(out, due, "{what}");
                }
                assert!(out - due <= chrono::TimeDelta::hours(48), "{what}");
                let mut probe = due;
                while probe < out {
                    assert!(
                        quiet_at(probe, zone, from, to),
                        "{what}: not quiet at {probe}"
                    );
                    probe += chrono::TimeDelta::minutes(1);
                }
            }
        }
    }
}

#[test]
fn active_boundaries_are_inclusive_local_dates() {
    let (from, until) = (date(2026, 12, 1), Some(date(2026, 12, 21)));
    let active = |at: &str, zone: Tz| is_active(utc(at), from, until, zone);
    // New York is on EST (-05) in December: its 1 December starts at 05:00 UTC.
    assert!(!active("2026-12-01T04:59:59Z", NEW_YORK));
    assert!(active("2026-12-01T05:00:00Z", NEW_YORK));
    assert!(active("2026-12-22T04:59:59Z", NEW_YORK)); // 21 December 23:59:59 EST
    assert!(!active("2026-12-22T05:00:00Z", NEW_YORK));
    // The same instants in UTC.
    assert!(active("2026-12-01T04:59:59Z", UTC));
    assert!(!active("2026-12-22T04:59:59Z", UTC));
    assert!(active("2026-12-21T23:59:59Z", UTC));
    assert!(!active("2026-11-30T23:59:59Z", UTC));
    // Tokyo (+09): its 1 December starts on 30 November in UTC.
    assert!(!active("2026-11-30T14:59:59Z", TOKYO));
    assert!(active("2026-11-30T15:00:00Z", TOKYO));
    assert!(!active("2026-12-21T15:00:00Z", TOKYO));
    // No end date: for ever.
    assert!(is_active(utc("2099-01-01T00:00:00Z"), from, None, LONDON));
    assert!(!is_active(utc("2026-11-30T12:00:00Z"), from, None, LONDON));
    // A one-day range.
    let day = date(2026, 3, 29);
    assert!(is_active(
        utc("2026-03-29T00:00:00Z"),
        day,
        Some(day),
        LONDON
    ));
    assert!(is_active(
        utc("2026-03-29T22:59:59Z"),
        day,
        Some(day),
        LONDON
    )); // 23:59:59 BST
    assert!(!is_active(
        utc("2026-03-29T23:00:00Z"),
        day,
        Some(day),
        LONDON
    ));
}

#[test]
fn due_times_are_exact_durations() {
    let t = utc("2026-03-28T10:00:00Z");
    assert_eq!(due_at(t, 0), Some(t));
    assert_eq!(due_at(t, 3_600), Some(utc("2026-03-28T11:00:00Z")));
    // A day later is 24 hours later, whatever the clocks do (11:00 BST).
    assert_eq!(due_at(t, 86_400), Some(utc("2026-03-29T10:00:00Z")));
    assert_eq!(due_at(t, u64::MAX), None);
    assert_eq!(due_at(DateTime::<Utc>::MAX_UTC, 1), None);
}

// ---------------------------------------------------------------------------------------
// Hashes

/// An independent FNV-1a 64, written out as in the specification.
fn reference_fnv64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 14_695_981_039_346_656_037;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(1_099_511_628_211);
    }
    hash
}

#[test]
fn fnv_test_vectors() {
    // From the FNV specification (draft-eastlake-fnv).
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    assert_eq!(fnv1a128(b""), 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d);
    assert_eq!(fnv1a128(b"a"), 0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964);
    assert_eq!(
        fnv1a128(b"foobar"),
        0x343e_1662_793c_64bf_6f0d_3597_ba44_6f18
    );
}

#[test]
fn holdout_buckets_are_fixed() {
    // Computed once, by hand-running FNV-1a 64 over "moment\0customer"; must never change.
    assert_eq!(holdout_bucket("cart_wobble", "c_001"), 2384);
    assert_eq!(holdout_bucket("cart_wobble", "c_002"), 7017);
    assert_eq!(holdout_bucket("birthday", "alice@example.com"), 5497);
    assert_eq!(holdout_bucket("winback", "42"), 6736);
    assert_eq!(holdout_bucket("", ""), 7455);
    // The separator matters.
    assert_ne!(
        holdout_bucket("ab", "c"),
        holdout_bucket("a", "bc"),
        "moment and customer must not run together"
    );
    for i in 0..2_000 {
        let customer = format!("customer-{i}");
        let bucket = holdout_bucket("cart_wobble", &customer);
        let expected = reference_fnv64(format!("cart_wobble\0{customer}").as_bytes()) % 10_000;
        assert_eq!(u64::from(bucket), expected);
        assert!(bucket < 10_000);
    }
}

#[test]
fn holdout_share() {
    assert!(!in_holdout("cart_wobble", "c_001", 23.84)); // bucket 2384
    assert!(in_holdout("cart_wobble", "c_001", 23.85));
    assert!(!in_holdout("cart_wobble", "c_001", 0.0));
    assert!(in_holdout("cart_wobble", "c_001", 100.0));
    assert!(!in_holdout("cart_wobble", "c_001", f64::NAN));
    assert!(!in_holdout("cart_wobble", "c_001", -5.0));
    // About a tenth of 10000 customers at 10%.
    let kept = (0..10_000)
        .filter(|i| in_holdout("cart_wobble", &format!("c{i}"), 10.0))
        .count();
    assert!((900..=1_100).contains(&kept), "{kept}");
}

#[test]
fn send_ids() {
    // Computed once, by hand-running FNV-1a 128 over "moment\0customer\0trigger".
    assert_eq!(
        send_id("cart_wobble", "c_001", "evt_123"),
        "61fa29facaa5b57693db99d16e3dbd8a"
    );
    assert_eq!(
        send_id("birthday", "alice@example.com", "2026-07-15T00:00:00Z"),
        "2e272675c369044532292ff70d7852cc"
    );
    assert_eq!(send_id("", "", ""), "0880945b4fab1be95aa0733055273845");
    for id in [
        send_id("cart_wobble", "c_001", "evt_123"),
        send_id("x", "y", "z"),
        send_id("", "", ""),
        send_id("日本", "ü", "🙂"),
    ] {
        assert_eq!(id.len(), 32, "{id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{id}"
        );
    }
    // Stable, and each part counts.
    assert_eq!(send_id("m", "c", "t"), send_id("m", "c", "t"));
    assert_ne!(send_id("m", "c", "t1"), send_id("m", "c", "t2"));
    assert_ne!(send_id("ab", "c", "d"), send_id("a", "bc", "d"));
    assert_ne!(send_id("a", "bc", "d"), send_id("a", "b", "cd"));
}

#[test]
fn instant_keys() {
    assert_eq!(
        instant_key(utc("2026-03-29T01:30:00Z")),
        "2026-03-29T01:30:00Z"
    );
    assert_eq!(
        instant_key(utc("2026-03-29T02:30:00+01:00")),
        "2026-03-29T01:30:00Z"
    );
    assert_eq!(
        instant_key(utc("2026-03-29T01:30:00.250Z")),
        "2026-03-29T01:30:00.250Z"
    );
}

// ---------------------------------------------------------------------------------------
// Date triggers

#[test]
fn leap_day_anniversaries() {
    let leap = date(2024, 2, 29);
    let got = anniversaries(
        leap,
        tod(9, 0),
        UTC,
        utc("2025-01-01T00:00:00Z"),
        utc("2030-01-01T00:00:00Z"),
    );
    assert_eq!(
        got,
        utcs(&[
            "2025-02-28T09:00:00Z",
            "2026-02-28T09:00:00Z",
            "2027-02-28T09:00:00Z",
            "2028-02-29T09:00:00Z",
            "2029-02-28T09:00:00Z",
        ])
    );
    // London is on GMT in February: the same instants.
    let london = anniversaries(
        leap,
        tod(9, 0),
        LONDON,
        utc("2025-01-01T00:00:00Z"),
        utc("2030-01-01T00:00:00Z"),
    );
    assert_eq!(london, got);
    assert_eq!(anniversary_in(leap, 2025), Some(date(2025, 2, 28)));
    assert_eq!(anniversary_in(leap, 2028), Some(date(2028, 2, 29)));
    assert_eq!(anniversary_in(leap, 2100), Some(date(2100, 2, 28))); // not a leap year
    assert_eq!(
        anniversary_in(date(1990, 3, 31), 2025),
        Some(date(2025, 3, 31))
    );
}

#[test]
fn anniversary_range_is_after_exclusive_until_inclusive() {
    let leap = date(2024, 2, 29);
    let got = anniversaries(
        leap,
        tod(9, 0),
        UTC,
        utc("2026-02-28T09:00:00Z"),
        utc("2027-02-28T09:00:00Z"),
    );
    assert_eq!(got, utcs(&["2027-02-28T09:00:00Z"]));
    let empty = anniversaries(
        leap,
        tod(9, 0),
        UTC,
        utc("2027-02-28T09:00:00Z"),
        utc("2026-02-28T09:00:00Z"),
    );
    assert!(empty.is_empty());
}

#[test]
fn the_date_itself_is_not_an_anniversary() {
    let got = anniversaries(
        date(2026, 5, 10),
        tod(10, 0),
        UTC,
        utc("2026-01-01T00:00:00Z"),
        utc("2028-01-01T00:00:00Z"),
    );
    assert_eq!(got, utcs(&["2027-05-10T10:00:00Z"]));
}

#[test]
fn anniversaries_in_different_zones() {
    let birthday = date(1990, 7, 15);
    let range = (utc("2026-01-01T00:00:00Z"), utc("2027-01-01T00:00:00Z"));
    let at = |zone| anniversaries(birthday, tod(9, 0), zone, range.0, range.1);
    assert_eq!(at(TOKYO), utcs(&["2026-07-15T00:00:00Z"])); // 09:00 JST
    assert_eq!(at(NEW_YORK), utcs(&["2026-07-15T13:00:00Z"])); // 09:00 EDT
    assert_eq!(at(LONDON), utcs(&["2026-07-15T08:00:00Z"])); // 09:00 BST
    assert_eq!(at(UTC), utcs(&["2026-07-15T09:00:00Z"]));
}

#[test]
fn anniversaries_on_clock_change_days() {
    let range = (utc("2026-01-01T00:00:00Z"), utc("2027-01-01T00:00:00Z"));
    // 01:30 on 29 March does not exist in London: 01:30 GMT, shown as 02:30 BST.
    assert_eq!(
        anniversaries(date(2000, 3, 29), tod(1, 30), LONDON, range.0, range.1),
        utcs(&["2026-03-29T01:30:00Z"])
    );
    // 01:30 on 25 October happens twice: the first, BST.
    assert_eq!(
        anniversaries(date(2000, 10, 25), tod(1, 30), LONDON, range.0, range.1),
        utcs(&["2026-10-25T00:30:00Z"])
    );
}

#[test]
fn anniversaries_over_a_long_range() {
    let got = anniversaries(
        date(2000, 1, 1),
        tod(0, 0),
        UTC,
        DateTime::<Utc>::MIN_UTC,
        utc("2003-06-01T00:00:00Z"),
    );
    assert_eq!(
        got,
        utcs(&[
            "2001-01-01T00:00:00Z",
            "2002-01-01T00:00:00Z",
            "2003-01-01T00:00:00Z",
        ])
    );
    let far = anniversaries(
        date(2000, 1, 1),
        tod(0, 0),
        UTC,
        utc("2300-06-01T00:00:00Z"),
        DateTime::<Utc>::MAX_UTC,
    );
    assert_eq!(far.first(), Some(&utc("2301-01-01T00:00:00Z")));
    assert!(far.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn offset_from_a_datetime_near_midnight_uses_the_local_date() {
    let renews = OffsetBase::DateTime(utc("2026-05-01T02:00:00Z"));
    let three_days = dur(3, DurationUnit::Days);
    // In New York that is 30 April 22:00 EDT: three days before is 27 April, at 10:00 EDT.
    assert_eq!(
        offset_instant(renews, three_days, Direction::Before, tod(10, 0), NEW_YORK),
        Some(utc("2026-04-27T14:00:00Z"))
    );
    // In UTC it is 1 May: 28 April at 10:00.
    assert_eq!(
        offset_instant(renews, three_days, Direction::Before, tod(10, 0), UTC),
        Some(utc("2026-04-28T10:00:00Z"))
    );
    // In Tokyo, 2 May 01:00 JST for 1 May 16:00 UTC: 29 April 10:00 JST.
    let late = OffsetBase::DateTime(utc("2026-05-01T16:00:00Z"));
    assert_eq!(
        offset_instant(late, three_days, Direction::Before, tod(10, 0), TOKYO),
        Some(utc("2026-04-29T01:00:00Z"))
    );
    assert_eq!(
        offset_instant(late, three_days, Direction::After, tod(10, 0), TOKYO),
        Some(utc("2026-05-05T01:00:00Z"))
    );
}

#[test]
fn offset_from_a_date() {
    // Two days before 31 March is 29 March, at 09:00 BST.
    assert_eq!(
        offset_instant(
            OffsetBase::Date(date(2026, 3, 31)),
            dur(2, DurationUnit::Days),
            Direction::Before,
            tod(9, 0),
            LONDON
        ),
        Some(utc("2026-03-29T08:00:00Z"))
    );
    assert_eq!(
        offset_instant(
            OffsetBase::Date(date(2026, 3, 27)),
            dur(2, DurationUnit::Days),
            Direction::After,
            tod(9, 0),
            LONDON
        ),
        Some(utc("2026-03-29T08:00:00Z"))
    );
    // A week after 20 October (a datetime, 13:00 BST) is 27 October, 09:00 GMT.
    assert_eq!(
        offset_instant(
            OffsetBase::DateTime(utc("2026-10-20T12:00:00Z")),
            dur(1, DurationUnit::Weeks),
            Direction::After,
            tod(9, 0),
            LONDON
        ),
        Some(utc("2026-10-27T09:00:00Z"))
    );
    // 0d: the day itself; at a skipped time, moved forward by the gap.
    assert_eq!(
        offset_instant(
            OffsetBase::Date(date(2026, 3, 29)),
            dur(0, DurationUnit::Days),
            Direction::After,
            tod(1, 30),
            LONDON
        ),
        Some(utc("2026-03-29T01:30:00Z"))
    );
}

#[test]
fn offset_in_whole_days_counts_calendar_days() {
    // 31 March 00:30 BST. 48h is two whole days: 29 March, not the 28th (48 exact hours
    // before is 28 March 23:30 GMT).
    let value = OffsetBase::DateTime(utc("2026-03-30T23:30:00Z"));
    assert_eq!(
        offset_instant(
            value,
            dur(48, DurationUnit::Hours),
            Direction::Before,
            tod(10, 0),
            LONDON
        ),
        Some(utc("2026-03-29T09:00:00Z"))
    );
}

#[test]
fn offset_in_part_days_is_an_exact_duration() {
    // 30 April 22:00 EDT + 36h = 2 May 10:00 EDT: 2 May at 09:00 EDT.
    assert_eq!(
        offset_instant(
            OffsetBase::DateTime(utc("2026-05-01T02:00:00Z")),
            dur(36, DurationUnit::Hours),
            Direction::After,
            tod(9, 0),
            NEW_YORK
        ),
        Some(utc("2026-05-02T13:00:00Z"))
    );
    // A date counts from its local midnight: 10 June 00:00 BST - 12h = 9 June 12:00 BST.
    assert_eq!(
        offset_instant(
            OffsetBase::Date(date(2026, 6, 10)),
            dur(12, DurationUnit::Hours),
            Direction::Before,
            tod(9, 0),
            LONDON
        ),
        Some(utc("2026-06-09T08:00:00Z"))
    );
    // 10 June 00:00 BST - 90m = 9 June 22:30 BST.
    assert_eq!(
        offset_instant(
            OffsetBase::Date(date(2026, 6, 10)),
            dur(90, DurationUnit::Minutes),
            Direction::Before,
            tod(9, 0),
            LONDON
        ),
        Some(utc("2026-06-09T08:00:00Z"))
    );
    // 10 June 00:00 BST + 90m = 10 June 01:30 BST.
    assert_eq!(
        offset_instant(
            OffsetBase::Date(date(2026, 6, 10)),
            dur(90, DurationUnit::Minutes),
            Direction::After,
            tod(9, 0),
            LONDON
        ),
        Some(utc("2026-06-10T08:00:00Z"))
    );
}

#[test]
fn offset_out_of_range_is_none() {
    let value = OffsetBase::Date(date(2026, 1, 1));
    for unit in [
        DurationUnit::Seconds,
        DurationUnit::Minutes,
        DurationUnit::Hours,
        DurationUnit::Days,
        DurationUnit::Weeks,
    ] {
        for direction in [Direction::Before, Direction::After] {
            assert_eq!(
                offset_instant(value, dur(u64::MAX, unit), direction, tod(9, 0), LONDON),
                None
            );
        }
    }
    assert_eq!(
        offset_instant(
            value,
            dur(1_000_000_000, DurationUnit::Days),
            Direction::After,
            tod(9, 0),
            LONDON
        ),
        None
    );
}

// ---------------------------------------------------------------------------------------
// Cron

#[test]
fn daily_cron_keeps_local_time_across_spring_forward() {
    let got = cron_instants(
        &cron("0 9 * * *"),
        PARIS,
        utc("2026-03-26T12:00:00Z"),
        utc("2026-03-31T12:00:00Z"),
    );
    assert_eq!(
        got,
        utcs(&[
            "2026-03-27T08:00:00Z", // 09:00 CET
            "2026-03-28T08:00:00Z",
            "2026-03-29T07:00:00Z", // 09:00 CEST
            "2026-03-30T07:00:00Z",
            "2026-03-31T07:00:00Z",
        ])
    );
}

#[test]
fn daily_cron_keeps_local_time_across_fall_back() {
    let got = cron_instants(
        &cron("0 9 * * *"),
        PARIS,
        utc("2026-10-23T12:00:00Z"),
        utc("2026-10-27T12:00:00Z"),
    );
    assert_eq!(
        got,
        utcs(&[
            "2026-10-24T07:00:00Z", // 09:00 CEST
            "2026-10-25T08:00:00Z", // 09:00 CET
            "2026-10-26T08:00:00Z",
            "2026-10-27T08:00:00Z",
        ])
    );
}

#[test]
fn cron_in_the_repeated_hour_fires_once() {
    let got = cron_instants(
        &cron("30 1 * * *"),
        LONDON,
        utc("2026-10-23T12:00:00Z"),
        utc("2026-10-26T12:00:00Z"),
    );
    assert_eq!(
        got,
        utcs(&[
            "2026-10-24T00:30:00Z", // 01:30 BST
            "2026-10-25T00:30:00Z", // the first 01:30 (BST), not 01:30 GMT as well
            "2026-10-26T01:30:00Z", // 01:30 GMT
        ])
    );
}

#[test]
fn cron_in_the_skipped_hour_fires_after_the_gap() {
    let got = cron_instants(
        &cron("30 1 * * *"),
        LONDON,
        utc("2026-03-27T12:00:00Z"),
        utc("2026-03-30T12:00:00Z"),
    );
    assert_eq!(
        got,
        utcs(&[
            "2026-03-28T01:30:00Z", // 01:30 GMT
            "2026-03-29T01:30:00Z", // 01:30 does not exist: 01:30 GMT, shown as 02:30 BST
            "2026-03-30T00:30:00Z", // 01:30 BST
        ])
    );
    // Paris skips 02:00 to 02:59: `0 2 * * *` fires at 03:00 CEST that day.
    let got = cron_instants(
        &cron("0 2 * * *"),
        PARIS,
        utc("2026-03-28T00:00:00Z"),
        utc("2026-03-30T12:00:00Z"),
    );
    assert_eq!(
        got,
        utcs(&[
            "2026-03-28T01:00:00Z", // 02:00 CET
            "2026-03-29T01:00:00Z", // 02:00 CET = 03:00 CEST
            "2026-03-30T00:00:00Z", // 02:00 CEST
        ])
    );
}

#[test]
fn every_half_hour_through_the_gap_fires_once_per_instant() {
    // Wall clock: 00:30 GMT, 01:00 and 01:30 (skipped: 01:00 and 01:30 UTC), 02:00 and 02:30
    // BST (also 01:00 and 01:30 UTC: the same firings), 03:00 BST, 03:30 BST.
    let got = cron_instants(
        &cron("*/30 * * * *"),
        LONDON,
        utc("2026-03-29T00:00:00Z"),
        utc("2026-03-29T02:30:00Z"),
    );
    assert_eq!(
        got,
        utcs(&[
            "2026-03-29T00:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-29T01:30:00Z",
            "2026-03-29T02:00:00Z",
            "2026-03-29T02:30:00Z",
        ])
    );
}

#[test]
fn every_half_hour_through_the_fold_skips_the_repeat() {
    // Wall clock: 00:30 BST, 01:00 and 01:30 (first pass, BST), then 01:00 and 01:30 GMT are
    // repeats and do not fire; 02:00 GMT, 02:30, 03:00.
    let got = cron_instants(
        &cron("*/30 * * * *"),
        LONDON,
        utc("2026-10-24T23:00:00Z"),
        utc("2026-10-25T03:00:00Z"),
    );
    assert_eq!(
        got,
        utcs(&[
            "2026-10-24T23:30:00Z",
            "2026-10-25T00:00:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T02:00:00Z",
            "2026-10-25T02:30:00Z",
            "2026-10-25T03:00:00Z",
        ])
    );
}

#[test]
fn weekly_cron_on_mondays() {
    let got = cron_instants(
        &cron("0 9 * * 1"),
        LONDON,
        utc("2026-03-01T00:00:00Z"),
        utc("2026-04-14T00:00:00Z"),
    );
    assert_eq!(
        got,
        utcs(&[
            "2026-03-02T09:00:00Z", // GMT
            "2026-03-09T09:00:00Z",
            "2026-03-16T09:00:00Z",
            "2026-03-23T09:00:00Z",
            "2026-03-30T08:00:00Z", // BST
            "2026-04-06T08:00:00Z",
            "2026-04-13T08:00:00Z",
        ])
    );
    for at in &got {
        assert_eq!(at.with_timezone(&LONDON).weekday(), Weekday::Mon);
        assert_eq!(at.with_timezone(&LONDON).hour(), 9);
    }
    // In Tokyo, Monday 09:00 JST is Monday 00:00 UTC.
    let tokyo = cron_instants(
        &cron("0 9 * * 1"),
        TOKYO,
        utc("2026-03-01T00:00:00Z"),
        utc("2026-03-10T00:00:00Z"),
    );
    assert_eq!(
        tokyo,
        utcs(&["2026-03-02T00:00:00Z", "2026-03-09T00:00:00Z"])
    );
}

#[test]
fn cron_range_is_after_exclusive_until_inclusive() {
    let c = cron("0 9 * * *");
    let got = cron_instants(
        &c,
        UTC,
        utc("2026-06-01T09:00:00Z"),
        utc("2026-06-03T09:00:00Z"),
    );
    assert_eq!(got, utcs(&["2026-06-02T09:00:00Z", "2026-06-03T09:00:00Z"]));
    let just_before = cron_instants(
        &c,
        UTC,
        utc("2026-06-01T08:59:59.999Z"),
        utc("2026-06-01T09:00:00Z"),
    );
    assert_eq!(just_before, utcs(&["2026-06-01T09:00:00Z"]));
    assert!(cron_instants(
        &c,
        UTC,
        utc("2026-06-03T09:00:00Z"),
        utc("2026-06-01T09:00:00Z")
    )
    .is_empty());
}

#[test]
fn cron_iter_is_lazy_and_ends() {
    let c = cron("0 9 * * *");
    let first: Vec<_> = cron_iter(&c, LONDON, utc("2026-07-01T00:00:00Z"))
        .take(3)
        .collect();
    assert_eq!(
        first,
        utcs(&[
            "2026-07-01T08:00:00Z",
            "2026-07-02T08:00:00Z",
            "2026-07-03T08:00:00Z",
        ])
    );
    // Cron expressions cannot name years after 2100: the iteration ends there.
    let last = cron_instants(
        &c,
        UTC,
        utc("2100-12-30T00:00:00Z"),
        DateTime::<Utc>::MAX_UTC,
    );
    assert_eq!(
        last,
        utcs(&["2100-12-30T09:00:00Z", "2100-12-31T09:00:00Z"])
    );
    assert_eq!(cron_iter(&c, UTC, utc("2150-01-01T00:00:00Z")).next(), None);
    assert_eq!(cron_iter(&c, LONDON, DateTime::<Utc>::MAX_UTC).next(), None);
    // ...and nothing matches before 1970.
    assert_eq!(
        cron_iter(&c, UTC, DateTime::<Utc>::MIN_UTC).next(),
        Some(utc("1970-01-01T09:00:00Z"))
    );
    // A year in the past: nothing, at once.
    let past = cron("0 0 9 * * * 2020");
    assert_eq!(
        cron_iter(&past, UTC, utc("2026-01-01T00:00:00Z")).next(),
        None
    );
    // The leap day only.
    let leap = cron("0 9 29 2 *");
    assert_eq!(
        cron_instants(
            &leap,
            UTC,
            utc("2025-01-01T00:00:00Z"),
            utc("2033-01-01T00:00:00Z")
        ),
        utcs(&["2028-02-29T09:00:00Z", "2032-02-29T09:00:00Z"])
    );
}

/// What `cron_instants` must return, by brute force: every wall-clock second or minute of a
/// wide window that the expression matches, converted one by one with `local_to_utc`, as a set.
fn reference_instants(
    c: &CronExpr,
    zone: Tz,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
    step_seconds: i64,
) -> Vec<DateTime<Utc>> {
    let start = after.naive_utc() - chrono::TimeDelta::days(2);
    let end = until.naive_utc() + chrono::TimeDelta::days(2);
    let mut set = BTreeSet::new();
    let mut wall: NaiveDateTime = start;
    while wall <= end {
        if c.schedule().includes(Utc.from_utc_datetime(&wall)) {
            let at = local_datetime_to_utc(wall, zone);
            if at > after && at <= until {
                set.insert(at);
            }
        }
        wall += chrono::TimeDelta::seconds(step_seconds);
    }
    set.into_iter().collect()
}

/// Around every kind of clock change, the instants are the brute-force set, and a run split
/// at any point gives exactly the instants of one run over the whole window.
#[test]
fn cron_instants_are_a_set_and_split_runs_agree() {
    let windows: [(Tz, &str, &str); 10] = [
        (LONDON, "2026-03-28T18:00:00Z", "2026-03-29T06:00:00Z"),
        (LONDON, "2026-10-24T18:00:00Z", "2026-10-25T06:00:00Z"),
        (PARIS, "2026-03-28T18:00:00Z", "2026-03-29T06:00:00Z"),
        (NEW_YORK, "2026-11-01T00:00:00Z", "2026-11-01T12:00:00Z"),
        (SANTIAGO, "2026-09-05T22:00:00Z", "2026-09-06T10:00:00Z"),
        (SANTIAGO, "2026-04-04T22:00:00Z", "2026-04-05T10:00:00Z"),
        (LORD_HOWE, "2026-10-03T10:00:00Z", "2026-10-03T22:00:00Z"),
        (LORD_HOWE, "2026-04-04T10:00:00Z", "2026-04-04T22:00:00Z"),
        (APIA, "2011-12-30T00:00:00Z", "2011-12-31T00:00:00Z"),
        (TOKYO, "2026-03-28T18:00:00Z", "2026-03-29T06:00:00Z"),
    ];
    let minute_crons = [
        "*/30 * * * *",
        "30 1 * * *",
        "0 2 * * *",
        "15,45 * * * *",
        "0 0 * * *",
        "30 23 * * *",
        "0 9 * * 1",
        "*/7 0-3 * * *",
    ];
    for (zone, after, until) in windows {
        let (after, until) = (utc(after), utc(until));
        for text in minute_crons {
            let c = cron(text);
            let whole = cron_instants(&c, zone, after, until);
            let what = format!("{zone} `{text}`");
            assert_eq!(
                whole,
                reference_instants(&c, zone, after, until, 60),
                "{what}"
            );
            assert!(whole.windows(2).all(|w| w[0] < w[1]), "{what}");
            let mut split = after;
            while split < until {
                let mut parts = cron_instants(&c, zone, after, split);
                parts.extend(cron_instants(&c, zone, split, until));
                assert_eq!(parts, whole, "{what} split at {split}");
                split += chrono::TimeDelta::minutes(13);
            }
        }
    }
}

#[test]
fn cron_with_seconds_through_a_gap() {
    let c = cron("*/20 * * * * *");
    let (after, until) = (utc("2026-03-29T00:58:00Z"), utc("2026-03-29T01:03:00Z"));
    let whole = cron_instants(&c, LONDON, after, until);
    assert_eq!(whole, reference_instants(&c, LONDON, after, until, 1));
    // Every 20 seconds of real time, once each: 3 a minute for 5 minutes.
    assert_eq!(whole.len(), 15);
    let mut split = after;
    while split < until {
        let mut parts = cron_instants(&c, LONDON, after, split);
        parts.extend(cron_instants(&c, LONDON, split, until));
        assert_eq!(parts, whole, "split at {split}");
        split += chrono::TimeDelta::seconds(7);
    }
}

/// Moving an instant by whole seconds, and a nanosecond back, agree with chrono's own
/// arithmetic everywhere: within a day, across days, months, years and 29 February, in a
/// leap second, by nothing or by more than there is, and at both ends of time.
#[test]
fn instants_move_by_seconds_as_chrono_moves_them() {
    use proptest::prelude::*;
    let chrono_shifted = |at: DateTime<Utc>, seconds: i64| {
        chrono::TimeDelta::try_seconds(seconds).and_then(|d| at.checked_add_signed(d))
    };
    let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
        .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
        .map(|t| t.and_utc());
    let fixed = [
        Some(utc("2026-11-01T00:00:00Z")),
        Some(utc("2028-02-29T23:59:59Z")),
        leap,
        Some(DateTime::<Utc>::MIN_UTC),
        Some(DateTime::<Utc>::MAX_UTC),
    ];
    let steps = [
        0,
        1,
        -1,
        59,
        -86_399,
        86_400,
        -86_401,
        30 * 86_400,
        i64::MAX,
        i64::MIN,
    ];
    for at in fixed.into_iter().flatten() {
        for seconds in steps {
            assert_eq!(
                shifted(at, seconds),
                chrono_shifted(at, seconds),
                "{at} {seconds}"
            );
        }
        if at != DateTime::<Utc>::MIN_UTC {
            assert_eq!(
                just_before(at),
                at - chrono::TimeDelta::nanoseconds(1),
                "{at}"
            );
        }
    }
    proptest!(ProptestConfig::with_cases(2_000), |(
        secs in -10_000_000_000i64..10_000_000_000,
        nanos in prop_oneof![Just(0u32), 0u32..1_000_000_000],
        seconds in prop_oneof![-100_000i64..100_000, -10_000_000_000i64..10_000_000_000],
    )| {
        let at = DateTime::<Utc>::from_timestamp(secs, nanos).unwrap();
        prop_assert_eq!(shifted(at, seconds), chrono_shifted(at, seconds));
        prop_assert_eq!(just_before(at), at - chrono::TimeDelta::nanoseconds(1));
    });
}
