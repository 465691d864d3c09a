//! Reports: per moment, entries by fate, sends, the KPI with its interval, lift and goal.
//!
//! [`build`] gathers the figures from entries, sends and measured KPIs ([`crate::kpi`]);
//! [`table`], [`json`] and [`crate::report_html::html`] render them. Every rendering is
//! a pure function of the [`Report`]: the same inputs give the same bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::Serialize;

use crate::kpi::{GoalStatus, MomentKpi, Verdict};
use crate::model::Model;
use crate::outcome::{Entry, Fate, Group, Send};

/// Everything a report shows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Windows closing after this instant are open, not measured.
    pub as_of: DateTime<Utc>,
    /// Where the sends came from: `state.db` or a backtest directory.
    pub source: String,
    pub moments: Vec<MomentReport>,
}

/// One moment's row.
#[derive(Debug, Clone, Serialize)]
pub struct MomentReport {
    pub moment: String,
    pub title: String,
    pub channel: String,
    /// Entries by fate (`sent`, `control`, …, and `pending`), every fate present.
    pub entries: BTreeMap<String, u64>,
    pub entries_total: u64,
    pub kpi: MomentKpi,
    /// The KPI's measure in canonical form: `rate(cart_viewed within 24h after send)`.
    pub kpi_definition: String,
    /// Per day (UTC): entries by trigger day, sends by send day.
    pub daily: Vec<Day>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Day {
    pub date: NaiveDate,
    pub entries: u64,
    pub sent: u64,
    pub control: u64,
}

/// Gather the figures of every moment of `model`.
pub fn build(
    model: &Model,
    entries: &[Entry],
    sends: &[Send],
    kpis: Vec<MomentKpi>,
    as_of: DateTime<Utc>,
    source: String,
) -> Report {
    let mut kpis: BTreeMap<String, MomentKpi> =
        kpis.into_iter().map(|k| (k.moment.clone(), k)).collect();
    let mut moments = Vec::new();
    for moment in &model.moments {
        let Some(kpi) = kpis.remove(&moment.id) else {
            continue;
        };
        let mut by_fate: BTreeMap<String, u64> = Fate::ALL
            .iter()
            .map(|f| (f.as_str().to_string(), 0))
            .collect();
        by_fate.insert("pending".to_string(), 0);
        let mut daily: BTreeMap<NaiveDate, Day> = BTreeMap::new();
        let mut total = 0;
        for entry in entries.iter().filter(|e| *e.moment == *moment.id) {
            total += 1;
            let fate = entry.fate.map_or("pending", Fate::as_str);
            *by_fate.entry(fate.to_string()).or_default() += 1;
            day(&mut daily, entry.trigger_at).entries += 1;
        }
        for send in sends.iter().filter(|s| *s.moment == *moment.id) {
            let d = day(&mut daily, send.sent_at);
            match send.group {
                Group::Treatment => d.sent += 1,
                Group::Control => d.control += 1,
            }
        }
        // Days without anything are days too: fill the gaps so charts keep their scale.
        let mut days: Vec<Day> = Vec::new();
        if let (Some(first), Some(last)) = (
            daily.keys().next().copied(),
            daily.keys().next_back().copied(),
        ) {
            let mut date = first;
            while date <= last {
                days.push(daily.get(&date).cloned().unwrap_or(Day {
                    date,
                    ..Day::default()
                }));
                match date.succ_opt() {
                    Some(next) => date = next,
                    None => break,
                }
            }
        }
        moments.push(MomentReport {
            moment: moment.id.clone(),
            title: moment.title.clone(),
            channel: moment.message.channel.name().to_string(),
            entries: by_fate,
            entries_total: total,
            kpi,
            kpi_definition: kpi_definition(&moment.kpi),
            daily: days,
        });
    }
    Report {
        as_of,
        source,
        moments,
    }
}

/// `rate(E where COND within 24h after send)`, as `moments fmt` writes it.
fn kpi_definition(kpi: &crate::model::Kpi) -> String {
    let mut text = format!("{}({}", kpi.function.name(), kpi.event);
    for segment in &kpi.field {
        text.push('.');
        text.push_str(segment);
    }
    if let Some(condition) = &kpi.condition {
        text.push_str(" where ");
        text.push_str(&crate::format::format_expr(condition));
    }
    let _ = write!(text, " within {} after send)", kpi.window);
    text
}

fn day(daily: &mut BTreeMap<NaiveDate, Day>, at: DateTime<Utc>) -> &mut Day {
    let date = at.date_naive();
    daily.entry(date).or_insert_with(|| Day {
        date,
        ..Day::default()
    })
}

/// A KPI value in its unit: `31.2%` for a rate, `12.40` otherwise.
pub fn value_text(kpi: &MomentKpi, value: f64) -> String {
    if kpi.function == "rate" {
        format!("{:.1}%", value * 100.0)
    } else {
        format!("{value:.2}")
    }
}

/// A difference in the KPI's unit: `+4.1 pts` for a rate, `+1.20` otherwise.
pub fn difference_text(kpi: &MomentKpi, value: f64) -> String {
    if kpi.function == "rate" {
        format!("{:+.1} pts", value * 100.0)
    } else {
        format!("{value:+.2}")
    }
}

/// A number in the KPI's unit without its sign: `31.2` for a rate (in percent), `12.40`
/// otherwise.
fn bare(kpi: &MomentKpi, value: f64) -> String {
    if kpi.function == "rate" {
        format!("{:.1}", value * 100.0)
    } else {
        format!("{value:.2}")
    }
}

/// `31.2% (28.0–34.6)`, or `–` with nothing measured.
pub fn with_interval(kpi: &MomentKpi, figures: &crate::kpi::GroupFigures) -> String {
    match (figures.value, figures.ci_low, figures.ci_high) {
        (Some(v), Some(low), Some(high)) => format!(
            "{} ({}–{})",
            value_text(kpi, v),
            bare(kpi, low),
            bare(kpi, high)
        ),
        (Some(v), _, _) => value_text(kpi, v),
        _ => "–".to_string(),
    }
}

/// The lift with its interval: `+9.2 pts (+1.1 to +17.3)`, or `–` without a control.
pub fn lift_text(kpi: &MomentKpi) -> String {
    match &kpi.lift {
        Some(lift) => {
            let signed = |x: f64| {
                if kpi.function == "rate" {
                    format!("{:+.1}", x * 100.0)
                } else {
                    format!("{x:+.2}")
                }
            };
            format!(
                "{} ({} to {})",
                difference_text(kpi, lift.absolute),
                signed(lift.absolute_ci_low),
                signed(lift.absolute_ci_high),
            )
        }
        None => "–".to_string(),
    }
}

/// The goal in words: `>= 15%: met`, or `–` without a goal.
pub fn goal_text(kpi: &MomentKpi) -> String {
    match (&kpi.goal, kpi.goal_status) {
        (Some(goal), Some(status)) => format!("{goal}: {}", status.as_str()),
        _ => "–".to_string(),
    }
}

/// The terminal table: one row per moment, then the KPI of each in words.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "report of {} as of {} (sends whose KPI window closes later are open, not measured)\n",
        report.source,
        report.as_of.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let rows: Vec<[String; 10]> = report
        .moments
        .iter()
        .map(|m| {
            let k = &m.kpi;
            [
                m.moment.clone(),
                m.entries_total.to_string(),
                k.treatment.sends.to_string(),
                k.control.sends.to_string(),
                (k.treatment.open + k.control.open).to_string(),
                with_interval(k, &k.treatment),
                with_interval(k, &k.control),
                lift_text(k),
                k.verdict.describe().to_string(),
                goal_text(k),
            ]
        })
        .collect();
    let header = [
        "moment",
        "entries",
        "sent",
        "control",
        "open",
        "KPI (95% CI)",
        "control",
        "lift (95% CI)",
        "difference",
        "goal",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w.saturating_sub(cell.chars().count());
            if i > 0 {
                text.push_str("  ");
            }
            // Counts right-aligned, words left-aligned.
            if (1..=4).contains(&i) {
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&mut out, header.to_vec());
    for row in &rows {
        line(&mut out, row.iter().map(String::as_str).collect());
    }
    let _ = writeln!(out, "\nKPIs:");
    for m in &report.moments {
        let k = &m.kpi;
        let _ = writeln!(
            out,
            "  {:<width$}  {} = {}, {}; {} of {} sends measured, {} converted",
            m.moment,
            k.kpi,
            k.function,
            k.unit,
            k.treatment.measured,
            k.treatment.sends,
            k.treatment.conversions,
            width = report
                .moments
                .iter()
                .map(|m| m.moment.len())
                .max()
                .unwrap_or(0)
        );
    }
    out
}

/// One flat JSON object per moment, for scripts and CI.
#[derive(Serialize)]
struct JsonRow<'a> {
    moment: &'a str,
    title: &'a str,
    channel: &'a str,
    kpi: &'a str,
    function: &'a str,
    unit: &'a str,
    entries: &'a BTreeMap<String, u64>,
    sends: u64,
    open_sends: u64,
    measured_sends: u64,
    conversions: u64,
    events: u64,
    total: f64,
    value: Option<f64>,
    ci_low: Option<f64>,
    ci_high: Option<f64>,
    control_sends: u64,
    control_open_sends: u64,
    control_measured_sends: u64,
    control_conversions: u64,
    control_value: Option<f64>,
    control_ci_low: Option<f64>,
    control_ci_high: Option<f64>,
    lift: Option<f64>,
    lift_ci_low: Option<f64>,
    lift_ci_high: Option<f64>,
    relative_lift: Option<f64>,
    relative_lift_ci_low: Option<f64>,
    relative_lift_ci_high: Option<f64>,
    significance: Verdict,
    goal: Option<&'a str>,
    goal_status: Option<GoalStatus>,
    /// `true` met, `false` missed, `null` not yet known or no goal.
    goal_met: Option<bool>,
    daily: &'a [Day],
}

#[derive(Serialize)]
struct JsonReport<'a> {
    as_of: String,
    source: &'a str,
    moments: Vec<JsonRow<'a>>,
}

/// The report as JSON (pretty-printed, stable field order).
pub fn json(report: &Report) -> String {
    let mut text = serde_json::to_string_pretty(&json_document(report)).unwrap_or_default();
    text.push('\n');
    text
}

/// The same JSON on one line (what the HTML page embeds).
pub fn json_compact(report: &Report) -> String {
    serde_json::to_string(&json_document(report)).unwrap_or_default()
}

fn json_document(report: &Report) -> JsonReport<'_> {
    let moments = report
        .moments
        .iter()
        .map(|m| {
            let k = &m.kpi;
            let (t, c) = (&k.treatment, &k.control);
            JsonRow {
                moment: &m.moment,
                title: &m.title,
                channel: &m.channel,
                kpi: &k.kpi,
                function: &k.function,
                unit: &k.unit,
                entries: &m.entries,
                sends: t.sends,
                open_sends: t.open,
                measured_sends: t.measured,
                conversions: t.conversions,
                events: t.events,
                total: t.total,
                value: t.value,
                ci_low: t.ci_low,
                ci_high: t.ci_high,
                control_sends: c.sends,
                control_open_sends: c.open,
                control_measured_sends: c.measured,
                control_conversions: c.conversions,
                control_value: c.value,
                control_ci_low: c.ci_low,
                control_ci_high: c.ci_high,
                lift: k.lift.as_ref().map(|l| l.absolute),
                lift_ci_low: k.lift.as_ref().map(|l| l.absolute_ci_low),
                lift_ci_high: k.lift.as_ref().map(|l| l.absolute_ci_high),
                relative_lift: k.lift.as_ref().and_then(|l| l.relative),
                relative_lift_ci_low: k.lift.as_ref().and_then(|l| l.relative_ci_low),
                relative_lift_ci_high: k.lift.as_ref().and_then(|l| l.relative_ci_high),
                significance: k.verdict,
                goal: k.goal.as_deref(),
                goal_status: k.goal_status,
                goal_met: match k.goal_status {
                    Some(GoalStatus::Met) => Some(true),
                    Some(GoalStatus::Missed) => Some(false),
                    _ => None,
                },
                daily: &m.daily,
            }
        })
        .collect();
    JsonReport {
        as_of: report.as_of.to_rfc3339_opts(SecondsFormat::Secs, true),
        source: &report.source,
        moments,
    }
}
