//! Calendar and clock arithmetic for running moments: local times, quiet hours, `active`
//! ranges, anniversaries, `DUR before|after` dates, cron instants, holdout buckets and send ids.
//!
//! Everything here is a plain, pure function over [`DateTime<Utc>`] and [`Tz`]: no engine
//! state, no clock, no I/O. The same arguments give the same answer on every machine and in
//! every version. Instants are always UTC; a zone only says how a customer's wall clock reads.
//!
//! # Customers without a zone
//!
//! Every function takes a [`Tz`]. The caller resolves it: the customer's `timezone` trait,
//! else the `timezone` of `defaults`, else UTC ([`customer_zone`] does exactly that).
//!
//! # Daylight saving: one rule for a local time, one for a wall-clock range
//!
//! A local date and time names an instant by [`local_to_utc`]:
//!
//! - **a time the clocks skip** (spring forward) is read with the UTC offset in force *before*
//!   the change, which moves it forward by the length of the gap: 01:30 on 29 March 2026 in
//!   Europe/London does not exist (01:00 GMT jumps to 02:00 BST), so it is 01:30 UTC, which the
//!   clocks show as 02:30 BST; 02:30 on the same day in Europe/Paris is 01:30 UTC (03:30 CEST).
//!   This is the rule of RFC 5545 (iCalendar), `java.time` and JavaScript's `Temporal`
//!   ("compatible"): nothing is lost, and nothing fires before the clock has reached the time
//!   asked for;
//! - **a time the clocks show twice** (fall back) is the *earlier* of the two: 01:30 on
//!   25 October 2026 in Europe/London is 00:30 UTC (01:30 BST), not 01:30 UTC (01:30 GMT).
//!
//! The offsets before and after a gap are read one day either side of it, as `Temporal` does;
//! this assumes no two changes of offset within a day of each other, which holds for the time
//! zone database in practice.
//!
//! This rule applies to anniversaries, `DUR before|after`, the bounds of days, and each match
//! of a cron expression ([`cron_instants`]). For cron, the instants are a *set*: a match in a
//! gap fires at the instant above, and when that is also the instant of a real match after the
//! gap (`*/30` fires at 01:00 in the gap and at 02:00 BST, both 01:00 UTC), it fires once. A
//! match in a fold fires once, at its first occurrence; the repeated hour fires nothing more.
//! So `30 1 * * *` in Europe/London fires at 00:30 UTC on 25 October 2026 (once) and at
//! 01:30 UTC (02:30 BST) on 29 March 2026.
//!
//! Quiet hours are a range of the wall clock, not a time to convert, so
//! [`after_quiet_hours`] follows the clock itself: a send is quiet while the clock shows a
//! quiet time, and the quiet hours end at the first instant the clock shows a time that is
//! not quiet. That is the next time the clock shows the end time; when the clocks skip over
//! it, the instant they jump (the end of the gap); when the clock shows it twice, the next of
//! the two; when the clocks go back to before the start time, the instant they do.
//!
//! # Hashes
//!
//! [`holdout_bucket`] and [`send_id`] use FNV-1a (64 and 128 bits), a fixed, public algorithm
//! implemented here on bytes, so they are the same on every platform and never change.

use std::collections::VecDeque;

use chrono::{
    DateTime, Datelike, Days, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    SecondsFormat, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Tz;

use crate::ast::{Direction, Duration, TimeOfDay};
use crate::cron_expr::CronExpr;

// ---------------------------------------------------------------------------------------
// Zones and local times

/// The zone of a customer: their own, else the default of the schema, else UTC.
pub fn customer_zone(own: Option<Tz>, default: Option<Tz>) -> Tz {
    own.or(default).unwrap_or(Tz::UTC)
}

/// The wall-clock reading of an instant in a zone. (At the very ends of chrono's range, where
/// the reading would not be representable, the instant read as UTC.)
pub fn wall_clock(at: DateTime<Utc>, zone: Tz) -> NaiveDateTime {
    let naive = at.naive_utc();
    TimeDelta::try_seconds(offset_seconds(naive, zone))
        .and_then(|offset| naive.checked_add_signed(offset))
        .unwrap_or(naive)
}

/// The local date of an instant in a zone.
pub fn local_date(at: DateTime<Utc>, zone: Tz) -> NaiveDate {
    wall_clock(at, zone).date()
}

/// The instant of a local date and time in a zone.
///
/// In a spring-forward gap (the local time does not exist) the time is read with the offset
/// in force before the gap, i.e. moved forward by the gap's length: 01:30 on 2026-03-29 in
/// Europe/London is 01:30 UTC (02:30 BST). In an autumn fold (the local time happens twice)
/// it is the earlier instant: 01:30 on 2026-10-25 in Europe/London is 00:30 UTC (01:30 BST).
pub fn local_to_utc(date: NaiveDate, time: NaiveTime, zone: Tz) -> DateTime<Utc> {
    local_datetime_to_utc(date.and_time(time), zone)
}

/// [`local_to_utc`] for a local date-time.
pub fn local_datetime_to_utc(local: NaiveDateTime, zone: Tz) -> DateTime<Utc> {
    match resolve(local, zone) {
        Resolved::Unique(at) => at,
        Resolved::Twice(earlier, _) => earlier,
        Resolved::Skipped { shifted, .. } => shifted,
    }
}

/// A [`TimeOfDay`] as a [`NaiveTime`]. The checker only lets through `00:00` to `23:59`;
/// anything else (never produced by the checker) is clamped to that range.
pub fn time_of(at: TimeOfDay) -> NaiveTime {
    NaiveTime::from_hms_opt(at.hour.min(23), at.minute.min(59), 0).unwrap_or(NaiveTime::MIN)
}

/// What a local date-time is in a zone.
enum Resolved {
    /// It happens once.
    Unique(DateTime<Utc>),
    /// It happens twice (a fold), earlier first.
    Twice(DateTime<Utc>, DateTime<Utc>),
    /// It never happens (a gap): `shifted` is it read with the offset before the gap, and
    /// `gap_seconds` how far the clocks jump (positive in any real zone).
    Skipped {
        shifted: DateTime<Utc>,
        gap_seconds: i64,
    },
}

fn resolve(local: NaiveDateTime, zone: Tz) -> Resolved {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(at) => Resolved::Unique(at.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => {
            let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
            Resolved::Twice(a.min(b), a.max(b))
        }
        LocalResult::None => {
            // The offsets a day either side of the gap (the local time read as UTC is within
            // 14 hours of the real instant, so both probes are on the right side of it).
            let before =
                offset_seconds(local.checked_sub_days(Days::new(1)).unwrap_or(local), zone);
            let after = offset_seconds(local.checked_add_days(Days::new(1)).unwrap_or(local), zone);
            let naive_utc = TimeDelta::try_seconds(before)
                .and_then(|offset| local.checked_sub_signed(offset))
                .unwrap_or(local);
            Resolved::Skipped {
                shifted: Utc.from_utc_datetime(&naive_utc),
                gap_seconds: after - before,
            }
        }
    }
}

/// The UTC offset, in seconds, of a zone at an instant (given as its UTC date-time).
fn offset_seconds(naive_utc: NaiveDateTime, zone: Tz) -> i64 {
    i64::from(
        zone.offset_from_utc_datetime(&naive_utc)
            .fix()
            .local_minus_utc(),
    )
}

/// The first instant later than `after` at which the clock of `zone` shows `local` or later:
/// the instant of `local`; of its two, the first one later than `after`; or, when the clocks
/// skip over it, the instant they jump.
fn clock_reaches(local: NaiveDateTime, zone: Tz, after: DateTime<Utc>) -> DateTime<Utc> {
    match resolve(local, zone) {
        Resolved::Unique(at) => at,
        Resolved::Twice(earlier, later) => {
            if earlier > after {
                earlier
            } else {
                later
            }
        }
        Resolved::Skipped {
            shifted,
            gap_seconds,
        } => gap_start(shifted, gap_seconds, zone),
    }
}

/// The instant the clocks jump, for a skipped local time whose shifted instant is `shifted`:
/// it lies in `(shifted - gap, shifted]`.
fn gap_start(shifted: DateTime<Utc>, gap_seconds: i64, zone: Tz) -> DateTime<Utc> {
    let lo = TimeDelta::try_seconds(gap_seconds.max(0))
        .and_then(|gap| shifted.checked_sub_signed(gap))
        .unwrap_or(shifted);
    first_offset_change(lo, shifted, zone).unwrap_or(shifted)
}

/// The first whole second in `(lo, hi]` at which the UTC offset of `zone` differs from the
/// one at `lo`, or `None` if it is the same at `hi`. Found by bisection (offsets change on
/// whole seconds), so with several changes in the range it finds one of them; callers look at
/// ranges of a day or two, where the time zone database has at most one.
fn first_offset_change(lo: DateTime<Utc>, hi: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
    let offset_at =
        |ts: i64| DateTime::from_timestamp(ts, 0).map(|t| offset_seconds(t.naive_utc(), zone));
    let (mut lo, mut hi) = (lo.timestamp(), hi.timestamp());
    let before = offset_at(lo)?;
    if hi <= lo || offset_at(hi)? == before {
        return None;
    }
    // INVARIANT: the offset at `lo` is `before`, the offset at `hi` is not.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if offset_at(mid) == Some(before) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    DateTime::from_timestamp(hi, 0)
}

// ---------------------------------------------------------------------------------------
// Instants moved by whole seconds

/// `at + seconds`, as `checked_add_signed` moves it (`None` past either end of time), with
/// the usual case worked out from the time of day alone: an instant outside a leap second
/// moved within its day, or to the same time of another day. The engine moves instants by
/// a window or a wait for nearly every event, and chrono's general arithmetic took a few
/// percent of a backtest.
pub fn shifted(at: DateTime<Utc>, seconds: i64) -> Option<DateTime<Utc>> {
    use chrono::{NaiveTime, Timelike};
    let naive = at.naive_utc();
    let nanos = naive.nanosecond();
    let of_day = i64::from(naive.num_seconds_from_midnight());
    // INVARIANT: outside a leap second (`nanos` below a second), an instant is its date and
    // its seconds since midnight; chrono adds a delta of whole seconds to the latter and
    // carries whole days into the date, which is what this does.
    let moved = of_day
        .checked_add(seconds)
        .filter(|_| nanos < 1_000_000_000);
    let Some(moved) = moved else {
        return TimeDelta::try_seconds(seconds).and_then(|d| at.checked_add_signed(d));
    };
    let (days, of_day) = (moved.div_euclid(86_400), moved.rem_euclid(86_400));
    let date = match days {
        0 => naive.date(),
        d if d > 0 => naive
            .date()
            .checked_add_days(chrono::Days::new(d.unsigned_abs()))?,
        d => naive
            .date()
            .checked_sub_days(chrono::Days::new(d.unsigned_abs()))?,
    };
    // INVARIANT: `of_day` is in 0..86_400 and `nanos` below a second.
    let time = NaiveTime::from_num_seconds_from_midnight_opt(of_day as u32, nanos)?;
    Some(date.and_time(time).and_utc())
}

/// `at - seconds`, as `checked_sub_signed` gives it (see [`shifted`]).
pub fn back(at: DateTime<Utc>, seconds: i64) -> Option<DateTime<Utc>> {
    shifted(at, seconds.checked_neg()?)
}

/// The last instant before `at` (a nanosecond earlier), as chrono subtracts it.
pub fn just_before(at: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::{NaiveTime, Timelike};
    let naive = at.naive_utc();
    let (of_day, nanos) = (naive.num_seconds_from_midnight(), naive.nanosecond());
    // Within the same day, outside a leap second.
    let time = match nanos {
        1..1_000_000_000 => NaiveTime::from_num_seconds_from_midnight_opt(of_day, nanos - 1),
        0 if of_day > 0 => NaiveTime::from_num_seconds_from_midnight_opt(of_day - 1, 999_999_999),
        _ => None,
    };
    match time {
        Some(time) => naive.date().and_time(time).and_utc(),
        None => at - TimeDelta::nanoseconds(1),
    }
}

// ---------------------------------------------------------------------------------------
// Delivery rules

/// The instant a send is due `delay_seconds` after its trigger (exact seconds: `wait 1d` is
/// 24 hours, whatever the clocks do). `None` past the end of time.
pub fn due_at(trigger: DateTime<Utc>, delay_seconds: u64) -> Option<DateTime<Utc>> {
    shifted(trigger, i64::try_from(delay_seconds).ok()?)
}

/// Quiet hours `from` to `to`, local to `zone`, which may wrap midnight (`21:00` to `08:00`).
///
/// If the wall clock at `due` shows a quiet time (`from` inclusive, `to` exclusive), the
/// instant the quiet hours end: the first instant after `due` at which the clock shows a time
/// that is not quiet. That is the next time the clock shows `to`, except when the clocks
/// change in between:
/// - when they skip over `to` (quiet until 01:30 in London on 29 March 2026), the instant they
///   jump (01:00 UTC, when the clock goes from 00:59:59 GMT to 02:00 BST);
/// - when they show `to` twice, the next of the two after `due`;
/// - when they go back to before `from` (quiet 01:30 to 02:30 in London on 25 October 2026:
///   at 01:00 UTC the clock goes from 01:59:59 BST back to 01:00 GMT), the instant they do.
///
/// Otherwise `due` unchanged. `from == to` has no quiet time. The result is never earlier than
/// `due`, never itself quiet, and every instant from `due` up to it is quiet.
pub fn after_quiet_hours(
    due: DateTime<Utc>,
    from: TimeOfDay,
    to: TimeOfDay,
    zone: Tz,
) -> DateTime<Utc> {
    let (from, to) = (time_of(from), time_of(to));
    let mut at = due;
    // Only a zone whose clocks jump over the whole quiet range's end into its start could need
    // a second round; a few rounds settle anything.
    for _ in 0..4 {
        let wall = wall_clock(at, zone);
        let time = wall.time();
        if !is_quiet(time, from, to) {
            return at;
        }
        let end_day = if time < to {
            wall.date()
        } else {
            match wall.date().succ_opt() {
                Some(day) => day,
                None => return at,
            }
        };
        let mut end = clock_reaches(end_day.and_time(to), zone, at);
        // The clocks may change before then, to a time that is not quiet.
        if let Some(change) = first_offset_change(at, end, zone) {
            if change < end && !is_quiet(wall_clock(change, zone).time(), from, to) {
                end = change;
            }
        }
        // INVARIANT: each round moves strictly later, so the result is never before `due`.
        if end <= at {
            return at;
        }
        at = end;
    }
    at
}

/// Is the wall-clock time `time` within `from..to` (wrapping midnight when `from > to`)?
fn is_quiet(time: NaiveTime, from: NaiveTime, to: NaiveTime) -> bool {
    if from <= to {
        from <= time && time < to
    } else {
        time >= from || time < to
    }
}

/// `active from A until B` (both local dates included; no `B`: for ever): is `at` inside,
/// by its local date in `zone`?
pub fn is_active(at: DateTime<Utc>, from: NaiveDate, until: Option<NaiveDate>, zone: Tz) -> bool {
    let day = local_date(at, zone);
    day >= from && until.is_none_or(|until| day <= until)
}

/// FNV-1a, 64 bits, over `bytes` (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_parts(&[bytes])
}

/// [`fnv1a64`] over `parts` one after another, as if they were one slice.
fn fnv1a64_parts(parts: &[&[u8]]) -> u64 {
    parts
        .iter()
        .flat_map(|part| part.iter())
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// FNV-1a, 128 bits, over `bytes` (offset basis `0x6c62272e07bb014262b821756295c58d`,
/// prime `0x0000000001000000000000000000013b`).
pub fn fnv1a128(bytes: &[u8]) -> u128 {
    fnv1a128_parts(&[bytes])
}

/// [`fnv1a128`] over `parts` one after another, as if they were one slice.
fn fnv1a128_parts(parts: &[&[u8]]) -> u128 {
    parts.iter().flat_map(|part| part.iter()).fold(
        0x6c62_272e_07bb_0142_62b8_2175_6295_c58d,
        |hash, byte| {
            (hash ^ u128::from(*byte)).wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b)
        },
    )
}

/// A stable number in `0..10000` for a moment and a customer: FNV-1a 64 ([`fnv1a64`]) over
/// the UTF-8 bytes of `moment_id`, a zero byte, and `customer_id`, modulo 10000. Fixed for
/// ever: changing it would move customers between control and treatment.
pub fn holdout_bucket(moment_id: &str, customer_id: &str) -> u32 {
    let hash = fnv1a64_parts(&[moment_id.as_bytes(), &[0], customer_id.as_bytes()]);
    // The remainder is below 10000, so it fits.
    u32::try_from(hash % 10_000).unwrap_or(0)
}

/// Is the customer in the holdout of a moment with `holdout P%` (`percent` = P, 0 to 100)?
/// True when the bucket is below `P × 100` rounded (`holdout 2.5%`: buckets 0 to 249).
pub fn in_holdout(moment_id: &str, customer_id: &str, percent: f64) -> bool {
    let threshold = (percent * 100.0).round();
    // NaN and negative thresholds keep nobody; above 10000 keeps everybody.
    let threshold = if threshold.is_nan() {
        0
    } else {
        threshold.clamp(0.0, 10_000.0) as u32
    };
    holdout_bucket(moment_id, customer_id) < threshold
}

/// A stable send id: FNV-1a 128 ([`fnv1a128`]) over the UTF-8 bytes of `moment_id`, a zero
/// byte, `customer_id`, a zero byte and `trigger_key`, as 32 lowercase hexadecimal digits.
/// `trigger_key` is the trigger event's id, or [`instant_key`] of the trigger instant.
pub fn send_id(moment_id: &str, customer_id: &str, trigger_key: &str) -> String {
    send_id_digits(moment_id, customer_id, trigger_key)
        .as_str()
        .to_string()
}

/// A [`send_id`] held in place, without an allocation.
#[derive(Debug, Clone, Copy)]
pub struct SendId([u8; 32]);

impl SendId {
    pub fn as_str(&self) -> &str {
        // INVARIANT: hexadecimal digits only, which are UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// [`send_id`], held in place.
pub fn send_id_digits(moment_id: &str, customer_id: &str, trigger_key: &str) -> SendId {
    let hash = fnv1a128_parts(&[
        moment_id.as_bytes(),
        &[0],
        customer_id.as_bytes(),
        &[0],
        trigger_key.as_bytes(),
    ]);
    // `format!("{hash:032x}")`, digit by digit.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 32];
    for (i, digit) in digits.iter_mut().enumerate() {
        *digit = HEX[((hash >> ((31 - i) * 4)) & 0xF) as usize];
    }
    SendId(digits)
}

/// An instant as a trigger key for [`send_id`]: RFC 3339 in UTC with a `Z`, whole seconds
/// unless there is a fraction (`2026-03-29T01:30:00Z`).
pub fn instant_key(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

// ---------------------------------------------------------------------------------------
// Date triggers

/// The date of the anniversary of `date` in `year`: the same month and day, with 29 February
/// on 28 February in years without one. `None` only outside chrono's range of years.
pub fn anniversary_in(date: NaiveDate, year: i32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(year, date.month(), date.day())
        .or_else(|| NaiveDate::from_ymd_opt(year, date.month(), date.day().saturating_sub(1)))
}

/// The anniversaries of `date` at local time `at` in `zone` that fall in `(after, until]`,
/// in order. Yearly on the month and day of `date` (29 February on 28 February in other
/// years), from the year after `date`'s own: the date itself is not an anniversary.
pub fn anniversaries(
    date: NaiveDate,
    at: TimeOfDay,
    zone: Tz,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    if until <= after {
        return Vec::new();
    }
    let time = time_of(at);
    // A year either side of the range's local years covers every zone and every gap.
    let first = local_date(after, zone)
        .year()
        .saturating_sub(1)
        .max(date.year().saturating_add(1));
    let last = local_date(until, zone).year().saturating_add(1);
    (first..=last)
        .filter_map(|year| anniversary_in(date, year))
        .map(|day| local_to_utc(day, time, zone))
        .filter(|instant| *instant > after && *instant <= until)
        .collect()
}

/// The value a `DUR before|after customer.T` trigger counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetBase {
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
}

/// The instant of `DUR before|after` a date or datetime value, at local time `at` in `zone`.
///
/// The day is found first, then `at` on that day is converted with [`local_to_utc`]:
/// - when `DUR` is a whole number of days (`3d`, `2w`, `48h`), it moves the value's local date
///   (a datetime's date in `zone`) by that many calendar days;
/// - otherwise (`36h`, `90m`), it moves the value by that exact duration and takes the local
///   date of the result; a date value counts from its local midnight.
///
/// `None` when the result is outside chrono's range of dates.
pub fn offset_instant(
    value: OffsetBase,
    offset: Duration,
    direction: Direction,
    at: TimeOfDay,
    zone: Tz,
) -> Option<DateTime<Utc>> {
    let seconds = offset.seconds();
    let day = if seconds.is_multiple_of(86_400) {
        let base = match value {
            OffsetBase::Date(date) => date,
            OffsetBase::DateTime(instant) => local_date(instant, zone),
        };
        let days = Days::new(seconds / 86_400);
        match direction {
            Direction::Before => base.checked_sub_days(days)?,
            Direction::After => base.checked_add_days(days)?,
        }
    } else {
        let base = match value {
            OffsetBase::Date(date) => local_to_utc(date, NaiveTime::MIN, zone),
            OffsetBase::DateTime(instant) => instant,
        };
        let delta = TimeDelta::try_seconds(i64::try_from(seconds).ok()?)?;
        let moved = match direction {
            Direction::Before => base.checked_sub_signed(delta)?,
            Direction::After => base.checked_add_signed(delta)?,
        };
        local_date(moved, zone)
    };
    Some(local_to_utc(day, time_of(at), zone))
}

// ---------------------------------------------------------------------------------------
// Cron

/// The cron crate reads years from 1970 to 2100; there is nothing to scan outside them.
const FIRST_CRON_YEAR: i32 = 1970;
const LAST_CRON_YEAR: i32 = 2100;

/// At most this many matches are examined for one instant before the iteration gives up. Only
/// the first call can skip matches (those at most a day before `after`, rescanned in case a gap
/// moved them past it), so this never ends a real schedule early.
const MAX_SKIPPED_MATCHES: usize = 1_000_000;

/// The instants of `cron` in `(after, until]`, reading its fields on the wall clock of `zone`,
/// in order and without repeats. See [`cron_iter`] for what happens when the clocks change.
pub fn cron_instants(
    cron: &CronExpr,
    zone: Tz,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    if until <= after {
        return Vec::new();
    }
    cron_iter(cron, zone, after)
        .take_while(|instant| *instant <= until)
        .collect()
}

/// The instants of `cron` after `after`, lazily, in strictly increasing order.
///
/// Each wall-clock match becomes an instant by [`local_to_utc`]; the instants form a set:
/// - a match the clocks skip fires at the instant of the same clock time before the change
///   (moved forward by the gap), once even if a later match lands on the same instant;
/// - a match the clocks show twice fires once, at its first occurrence.
///
/// The set does not depend on `after`: iterating from any point gives exactly the instants of
/// the set after it, so a run split into steps sees what one run sees. The iteration ends
/// after 2100 (the last year cron expressions can name), and for an expression that never
/// matches.
pub fn cron_iter<'a>(
    cron: &'a CronExpr,
    zone: Tz,
    after: DateTime<Utc>,
) -> impl Iterator<Item = DateTime<Utc>> + 'a {
    // A match in a gap that ended less than a day before `after` can land after it, so the
    // scan starts from the wall clock `after` would show with the offset of a day earlier, if
    // that is earlier.
    let naive = after.naive_utc();
    let offset = offset_seconds(naive, zone).min(offset_seconds(
        naive.checked_sub_days(Days::new(1)).unwrap_or(naive),
        zone,
    ));
    let start = TimeDelta::try_seconds(offset)
        .and_then(|offset| naive.checked_add_signed(offset))
        .map(|start| {
            // Nothing matches before 1970: start just before it rather than far back.
            let earliest = NaiveDate::from_ymd_opt(FIRST_CRON_YEAR - 1, 12, 31)
                .map(|day| day.and_time(NaiveTime::MIN))
                .unwrap_or(start);
            start.max(earliest)
        });
    let matches = start
        .filter(|start| start.year() <= LAST_CRON_YEAR)
        .map(|start| cron.schedule().after(&Utc.from_utc_datetime(&start)));
    CronIter {
        zone,
        after,
        matches,
        peeked: None,
        shifted: VecDeque::new(),
        last: None,
    }
}

/// Walks the wall-clock matches of a schedule and turns them into instants.
///
/// The matches come in wall-clock order, and [`local_to_utc`] keeps that order everywhere but
/// just after a gap: a match in the gap, moved forward by the gap's length, lands among the
/// matches of the hour after it. So the matches in a gap are taken out as they come, moved
/// forward by the gap, and merged back in wall-clock order with the matches after the gap,
/// where every clock time exists and converts in order.
struct CronIter<'a> {
    zone: Tz,
    after: DateTime<Utc>,
    /// Wall-clock matches, the local date-time carried as a UTC one (the cron crate then reads
    /// its fields as they are, with no zone of its own); `None` when there is nothing to scan.
    matches: Option<cron::ScheduleIterator<'a, Utc>>,
    /// The next match not yet used.
    peeked: Option<NaiveDateTime>,
    /// Matches in the last gap, moved forward by its length, in order.
    shifted: VecDeque<NaiveDateTime>,
    /// The last instant returned.
    last: Option<DateTime<Utc>>,
}

impl CronIter<'_> {
    fn peek(&mut self) -> Option<NaiveDateTime> {
        if self.peeked.is_none() {
            self.peeked = self.matches.as_mut()?.next().map(|m| m.naive_utc());
        }
        self.peeked
    }

    /// The next wall-clock time to convert, in wall-clock order, skipped times moved forward.
    fn next_wall(&mut self) -> Option<NaiveDateTime> {
        if self.shifted.is_empty() {
            if let Some(first) = self.peek() {
                self.divert_gap(first);
            }
        }
        let next = self.peek();
        match (self.shifted.front().copied(), next) {
            (Some(shifted), Some(next)) if next < shifted => {
                self.peeked = None;
                Some(next)
            }
            (Some(shifted), next) => {
                self.shifted.pop_front();
                if next == Some(shifted) {
                    self.peeked = None;
                }
                Some(shifted)
            }
            (None, next) => {
                self.peeked = None;
                next
            }
        }
    }

    /// If `first` (the next match) is skipped by the clocks, moves it and the following
    /// matches in the same gap into `shifted`.
    fn divert_gap(&mut self, first: NaiveDateTime) {
        let Resolved::Skipped { gap_seconds, .. } = resolve(first, self.zone) else {
            return;
        };
        let Some(gap) = TimeDelta::try_seconds(gap_seconds).filter(|_| gap_seconds > 0) else {
            return;
        };
        let Some(gap_bound) = first.checked_add_signed(gap) else {
            return;
        };
        // INVARIANT: every match taken here is in the gap that `first` is in (a gap is shorter
        // than its own length past any of its times), so all move by the same `gap`, stay in
        // order, and land at or after the gap's end.
        while let Some(next) = self.peek() {
            if next >= gap_bound || !matches!(resolve(next, self.zone), Resolved::Skipped { .. }) {
                break;
            }
            let Some(moved) = next.checked_add_signed(gap) else {
                break;
            };
            self.shifted.push_back(moved);
            self.peeked = None;
        }
    }
}

impl Iterator for CronIter<'_> {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<DateTime<Utc>> {
        for _ in 0..MAX_SKIPPED_MATCHES {
            let wall = self.next_wall()?;
            let instant = local_datetime_to_utc(wall, self.zone);
            // INVARIANT: strictly increasing and after `after`; a match that converts to an
            // instant already returned (a gap landing on a real match) is that same firing.
            if instant > self.after && self.last.is_none_or(|last| instant > last) {
                self.last = Some(instant);
                return Some(instant);
            }
        }
        None
    }
}
