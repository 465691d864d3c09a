//! KPIs: what customers did after each send, the treatment group against the control.
//!
//! A KPI is measured after the fact, from the sends (of a backtest or the state store) and
//! the customer data. For every send, sent or held out, its window is the interval
//! `(sent_at, sent_at + DUR]`; the KPI's event counts for the send when it belongs to the
//! same customer, falls in the window and meets the KPI's `where` (which reads the event,
//! the send, the send's trigger event and the customer's traits as of the event).
//!
//! Only sends whose window has closed by `as_of` (by default the latest instant in the data)
//! are measured; the others are counted as open. Per measured send:
//!
//! | KPI | one observation per | value |
//! |---|---|---|
//! | `rate(E …)` | send: 1 if E followed, else 0 | share of sends, 95% Wilson interval |
//! | `count(E …)` | send: how many E followed | mean per send, 95% normal interval |
//! | `sum(E.f …)` | send: the sum of `f` over the E that followed | mean per send, 95% normal interval |
//! | `avg(E.f …)` | event: its `f` | mean per event, 95% normal interval |
//!
//! The control group is measured the same way from the instant it would have been sent.
//! Lift is treatment minus control (absolute, with a 95% interval: Newcombe's hybrid score
//! interval for rates, Welch's for means), and relative to the control's value (the same
//! interval divided by it).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ast::{AggregateFn, BinaryOp};
use crate::eval::{
    self, CExpr, Context, EventIndex, EventRecord, Fuel, History, Names, TraitIndex,
};
use crate::model::{Model, TriggerSource};
use crate::outcome::{Group, Send};
use crate::schedule;
use crate::value::{Id, Record, RecordKind, Value};

/// The normal quantile for a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// Below this many measured sends in a group (or, for a rate, fewer than this many
/// conversions or non-conversions), the groups are too small to tell a difference.
pub const MIN_GROUP: u64 = 30;
const MIN_SUCCESSES: u64 = 5;

/// Figures of one group (treatment or control) of one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GroupFigures {
    /// Every send of the group, open windows included.
    pub sends: u64,
    /// Sends whose window has not closed by `as_of`: not measured yet.
    pub open: u64,
    /// Sends measured: `sends - open`.
    pub measured: u64,
    /// Measured sends followed by at least one matching event.
    pub conversions: u64,
    /// Matching events in measured windows.
    pub events: u64,
    /// The sum of the measured property (`sum`, `avg`), or of the events (`count`, `rate`).
    pub total: f64,
    /// The KPI: a share for `rate`, a mean otherwise; `None` with nothing measured.
    pub value: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// Observations behind `value` and their variance (for lift).
    #[serde(skip)]
    observations: u64,
    #[serde(skip)]
    variance: f64,
}

/// The difference the moment makes: treatment against control.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lift {
    /// Treatment minus control, in the KPI's unit.
    pub absolute: f64,
    pub absolute_ci_low: f64,
    pub absolute_ci_high: f64,
    /// `absolute / control`; `None` when the control value is 0.
    pub relative: Option<f64>,
    pub relative_ci_low: Option<f64>,
    pub relative_ci_high: Option<f64>,
}

/// What the comparison with the control group says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The moment has no holdout (or no control send yet).
    NoControl,
    /// Too few measured sends in a group to tell.
    TooSmall,
    /// The interval of the difference holds 0.
    NotSignificant,
    /// Treatment better than control, the interval above 0.
    Better,
    /// Treatment worse than control, the interval below 0.
    Worse,
}

impl Verdict {
    pub fn describe(self) -> &'static str {
        match self {
            Verdict::NoControl => "no control group to compare with",
            Verdict::TooSmall => "too few sends to tell",
            Verdict::NotSignificant => "not significant",
            Verdict::Better => "better than no message",
            Verdict::Worse => "worse than no message",
        }
    }
}

/// Whether the KPI meets its `goal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GoalStatus {
    /// The whole 95% interval meets the goal.
    Met,
    /// The whole 95% interval misses it.
    Missed,
    /// Nothing measured yet, or the interval straddles the goal.
    NotYetKnown,
}

impl GoalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GoalStatus::Met => "met",
            GoalStatus::Missed => "missed",
            GoalStatus::NotYetKnown => "not yet known",
        }
    }
}

/// One moment's KPI.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MomentKpi {
    pub moment: String,
    /// The KPI's title.
    pub kpi: String,
    /// `rate`, `count`, `sum` or `avg`.
    pub function: String,
    /// What `value` is: `share of sends`, `per send` or `per event`.
    pub unit: String,
    /// `>= 15%` as written.
    pub goal: Option<String>,
    pub goal_status: Option<GoalStatus>,
    pub treatment: GroupFigures,
    pub control: GroupFigures,
    pub lift: Option<Lift>,
    pub verdict: Verdict,
}

/// Measure every moment's KPI over `sends`, reading `records` (in time order). Windows
/// close by `as_of`, or by the latest instant in the records when `None`.
pub fn measure(
    model: &Model,
    sends: &[Send],
    records: impl Iterator<Item = Record>,
    as_of: Option<DateTime<Utc>>,
) -> (Vec<MomentKpi>, DateTime<Utc>) {
    let traits = TraitIndex::new(&model.schema);
    let events = EventIndex::new(&model.schema);
    let plans: Vec<KpiPlan> = model
        .moments
        .iter()
        .map(|m| KpiPlan {
            event: Arc::from(m.kpi.event.as_str()),
            field: m.kpi.field.iter().map(|f| Arc::from(f.as_str())).collect(),
            condition: m.kpi.condition.as_ref().map(|c| {
                eval::compile(
                    c,
                    &Names {
                        traits: &traits,
                        events: &events,
                        lets: &[],
                        aggregated: Some(&m.kpi.event),
                    },
                )
            }),
            window: m.kpi.window.seconds().min(i64::MAX as u64) as i64,
            trigger_event: match &m.trigger.source {
                TriggerSource::Event { event, .. } => Some(event.clone()),
                _ => None,
            },
        })
        .collect();
    let moment_index: HashMap<&str, usize> = model
        .moments
        .iter()
        .enumerate()
        .map(|(i, m)| (m.id.as_str(), i))
        .collect();

    // Sends by (moment, customer), and by (moment, trigger instant) for catalog triggers.
    let mut windows: Vec<Window> = Vec::new();
    let mut by_customer: HashMap<(usize, &str), Vec<usize>> = HashMap::new();
    let mut by_trigger: HashMap<(usize, DateTime<Utc>), Vec<usize>> = HashMap::new();
    for send in sends {
        let Some(&m) = moment_index.get(&*send.moment) else {
            continue;
        };
        let index = windows.len();
        windows.push(Window {
            moment: m,
            send,
            trigger: None,
            events: 0,
            total: 0.0,
            values: Vec::new(),
        });
        by_customer
            .entry((m, &*send.customer_id))
            .or_default()
            .push(index);
        by_trigger
            .entry((m, send.trigger_at))
            .or_default()
            .push(index);
    }
    let mut kpi_events: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
    let mut trigger_events: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, plan) in plans.iter().enumerate() {
        kpi_events.entry(plan.event.clone()).or_default().push(i);
        if let Some(e) = &plan.trigger_event {
            trigger_events.entry(e.clone()).or_default().push(i);
        }
    }

    let mut customer_traits: HashMap<Id, Vec<Value>> = HashMap::new();
    let mut latest: Option<DateTime<Utc>> = None;
    let no_history = NoHistory;
    for record in records {
        latest = Some(latest.map_or(record.at, |l| l.max(record.at)));
        match record.kind {
            RecordKind::Identify { traits: updates } => {
                let Some(customer) = record.customer else {
                    continue;
                };
                let slot = customer_traits
                    .entry(customer)
                    .or_insert_with(|| traits.defaults.clone());
                for (name, value) in updates {
                    if let Some(i) = traits.position(name) {
                        slot[i] = if value.is_null() {
                            traits.defaults[i].clone()
                        } else {
                            value
                        };
                    }
                }
            }
            RecordKind::Event { event, properties } => {
                let is_trigger = trigger_events.get(event);
                let is_kpi = kpi_events.get(event);
                if is_trigger.is_none() && is_kpi.is_none() {
                    continue;
                }
                let rec = EventRecord {
                    at: record.at,
                    id: record.id.clone(),
                    customer: record.customer.clone(),
                    properties,
                };
                // The trigger event of a send: its send id is derived from the event's id.
                for &m in is_trigger.into_iter().flatten() {
                    let moment_id = &model.moments[m].id;
                    for &w in by_trigger.get(&(m, rec.at)).into_iter().flatten() {
                        let window = &mut windows[w];
                        if window.trigger.is_none()
                            && record
                                .customer
                                .as_deref()
                                .is_none_or(|c| *c == *window.send.customer_id)
                            && schedule::send_id(moment_id, &window.send.customer_id, &rec.id)
                                == window.send.send_id
                        {
                            window.trigger = Some(rec.clone());
                        }
                    }
                }
                let Some(customer) = &record.customer else {
                    continue;
                };
                let defaults;
                let customer_values = match customer_traits.get(customer) {
                    Some(t) => t.as_slice(),
                    None => {
                        defaults = traits.defaults.clone();
                        defaults.as_slice()
                    }
                };
                for &m in is_kpi.into_iter().flatten() {
                    let plan = &plans[m];
                    for &w in by_customer.get(&(m, &**customer)).into_iter().flatten() {
                        let window = &mut windows[w];
                        let start = window.send.sent_at;
                        let in_window = rec.at > start
                            && rec.at <= start + chrono::Duration::seconds(plan.window);
                        if !in_window {
                            continue;
                        }
                        if let Some(condition) = &plan.condition {
                            let fuel = Fuel::new(crate::engine::FUEL_PER_EVALUATION);
                            let zone = chrono_tz::UTC;
                            let mut cx = Context::new(
                                rec.at,
                                zone,
                                customer_values,
                                window.trigger.as_ref(),
                                &[],
                                &no_history,
                                &fuel,
                            );
                            cx.aggregated = Some(&rec);
                            cx.send = Some((&window.send.send_id, window.send.sent_at));
                            if !eval::holds(condition, &cx) {
                                continue;
                            }
                        }
                        window.events += 1;
                        if plan.field.is_empty() {
                            window.total += 1.0;
                        } else {
                            let value =
                                plan.field
                                    .split_first()
                                    .map_or(Value::Null, |(first, rest)| {
                                        eval::project(
                                            rec.properties
                                                .get(first)
                                                .cloned()
                                                .unwrap_or(Value::Null),
                                            rest,
                                        )
                                    });
                            if let Some(x) = value.as_f64() {
                                window.total += x;
                                window.values.push(x);
                            }
                        }
                    }
                }
            }
        }
    }
    let as_of = as_of.or(latest).unwrap_or(DateTime::<Utc>::MIN_UTC);

    let mut results = Vec::new();
    for (m, moment) in model.moments.iter().enumerate() {
        let plan = &plans[m];
        let function = moment.kpi.function;
        let mut groups = [Accumulator::default(), Accumulator::default()];
        for window in windows.iter().filter(|w| w.moment == m) {
            let g = &mut groups[usize::from(window.send.group == Group::Control)];
            g.figures.sends += 1;
            let closes = window.send.sent_at + chrono::Duration::seconds(plan.window);
            if closes > as_of {
                g.figures.open += 1;
                continue;
            }
            g.figures.measured += 1;
            g.figures.events += window.events;
            g.figures.total += window.total;
            if window.events > 0 {
                g.figures.conversions += 1;
            }
            match function {
                AggregateFn::Rate => g.observe(f64::from(u8::from(window.events > 0))),
                AggregateFn::Count => g.observe(window.events as f64),
                AggregateFn::Avg => {
                    for x in &window.values {
                        g.observe(*x);
                    }
                }
                _ => g.observe(window.total),
            }
        }
        let [treatment, control] = groups.map(|g| g.finish(function));
        let (lift, verdict) = compare(function, &treatment, &control);
        let goal = moment.kpi.goal.as_ref().map(|g| {
            let target = eval::literal_value(&g.target).as_f64().unwrap_or(f64::NAN);
            (g.op, target)
        });
        results.push(MomentKpi {
            moment: moment.id.clone(),
            kpi: moment.kpi.title.clone(),
            function: function.name().to_string(),
            unit: match function {
                AggregateFn::Rate => "share of sends",
                AggregateFn::Avg => "per event",
                _ => "per send",
            }
            .to_string(),
            goal: moment.kpi.goal.as_ref().map(|g| {
                format!(
                    "{} {}",
                    g.op.symbol(),
                    crate::format::format_expr(&g.target)
                )
            }),
            goal_status: goal.map(|(op, target)| goal_status(op, target, &treatment)),
            treatment,
            control,
            lift,
            verdict,
        });
    }
    (results, as_of)
}

struct KpiPlan {
    event: Arc<str>,
    field: Vec<Arc<str>>,
    condition: Option<CExpr>,
    window: i64,
    /// The event of an `on E` trigger, to find each send's trigger event.
    trigger_event: Option<String>,
}

/// One send's window and what happened in it.
struct Window<'a> {
    moment: usize,
    send: &'a Send,
    trigger: Option<EventRecord>,
    events: u64,
    total: f64,
    /// The measured property of each matching event (`avg`).
    values: Vec<f64>,
}

/// No history: a KPI condition holds no aggregate (the checker sees to it).
struct NoHistory;

impl History for NoHistory {
    fn events(&self, _slot: usize, _across_customers: bool) -> &[EventRecord] {
        &[]
    }
}

/// Welford's running mean and variance of a group's observations.
#[derive(Default)]
struct Accumulator {
    figures: GroupFigures,
    n: u64,
    mean: f64,
    m2: f64,
}

impl Accumulator {
    fn observe(&mut self, x: f64) {
        self.n += 1;
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
    }

    fn finish(self, function: AggregateFn) -> GroupFigures {
        let mut figures = self.figures;
        figures.observations = self.n;
        if self.n == 0 {
            return figures;
        }
        let n = self.n as f64;
        if function == AggregateFn::Rate {
            let p = figures.conversions as f64 / n;
            let (low, high) = wilson(figures.conversions, self.n);
            figures.value = Some(p);
            figures.ci_low = Some(low);
            figures.ci_high = Some(high);
            figures.variance = p * (1.0 - p) / n;
        } else {
            figures.value = Some(self.mean);
            if self.n >= 2 {
                let variance = self.m2 / (n - 1.0) / n;
                figures.variance = variance;
                figures.ci_low = Some(self.mean - Z95 * variance.sqrt());
                figures.ci_high = Some(self.mean + Z95 * variance.sqrt());
            }
        }
        figures
    }
}

/// The 95% Wilson score interval of `successes` out of `n`.
pub fn wilson(successes: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n = n as f64;
    let p = successes as f64 / n;
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Lift and what it says. Rates: Newcombe's hybrid score interval of the difference;
/// means: Welch's. Relative lift: both divided by the control's value.
fn compare(
    function: AggregateFn,
    treatment: &GroupFigures,
    control: &GroupFigures,
) -> (Option<Lift>, Verdict) {
    let (Some(t), Some(c)) = (treatment.value, control.value) else {
        return (None, Verdict::NoControl);
    };
    let difference = t - c;
    let (low, high) = if function == AggregateFn::Rate {
        let (tl, th) = (
            treatment.ci_low.unwrap_or(0.0),
            treatment.ci_high.unwrap_or(1.0),
        );
        let (cl, ch) = (
            control.ci_low.unwrap_or(0.0),
            control.ci_high.unwrap_or(1.0),
        );
        (
            difference - ((t - tl).powi(2) + (ch - c).powi(2)).sqrt(),
            difference + ((th - t).powi(2) + (c - cl).powi(2)).sqrt(),
        )
    } else {
        let se = (treatment.variance + control.variance).sqrt();
        (difference - Z95 * se, difference + Z95 * se)
    };
    // Relative to the control's value: the absolute interval scaled by it, so the two never
    // disagree on whether 0 is inside.
    let (relative, relative_low, relative_high) = if c > 0.0 {
        (Some(difference / c), Some(low / c), Some(high / c))
    } else {
        (None, None, None)
    };
    let lift = Lift {
        absolute: difference,
        absolute_ci_low: low,
        absolute_ci_high: high,
        relative,
        relative_ci_low: relative_low,
        relative_ci_high: relative_high,
    };
    let small = |g: &GroupFigures| {
        g.observations < MIN_GROUP
            || (function == AggregateFn::Rate
                && (g.conversions < MIN_SUCCESSES || g.measured - g.conversions < MIN_SUCCESSES))
    };
    // Both groups without a single conversion say nothing either.
    let verdict = if small(treatment) || small(control) {
        Verdict::TooSmall
    } else if low > 0.0 {
        Verdict::Better
    } else if high < 0.0 {
        Verdict::Worse
    } else {
        Verdict::NotSignificant
    };
    (Some(lift), verdict)
}

/// Met when the whole interval meets the goal, missed when none of it does.
fn goal_status(op: BinaryOp, target: f64, figures: &GroupFigures) -> GoalStatus {
    let (Some(low), Some(high)) = (figures.ci_low, figures.ci_high) else {
        return GoalStatus::NotYetKnown;
    };
    let meets = |x: f64| match op {
        BinaryOp::Ge => x >= target,
        BinaryOp::Gt => x > target,
        BinaryOp::Le => x <= target,
        BinaryOp::Lt => x < target,
        _ => (x - target).abs() < f64::EPSILON,
    };
    match (meets(low), meets(high)) {
        (true, true) => GoalStatus::Met,
        (false, false) => GoalStatus::Missed,
        _ => GoalStatus::NotYetKnown,
    }
}
