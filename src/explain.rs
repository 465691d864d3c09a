//! `explain`: why a customer did or did not get each moment's message.
//!
//! The engine runs over the data with one customer traced ([`engine::run_traced`]): every
//! trigger occurrence is recorded with the values its `let`s and `where` conditions read.
//! Here each occurrence is joined with its entry (fate and reason), and a moment that never
//! fired is explained from the trace: no trigger at all (and why), or which condition failed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::engine::{local_time, ConditionTrace, NamedValue, RunOutput, Trace, TraceStep};
use crate::model::{Model, TriggerSource};
use crate::outcome::Entry;

/// Non-entering occurrences shown per moment in the text form (all are in the JSON).
const SHOWN_MISSES: usize = 3;

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub customer: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The customer's zone, in which times are shown.
    pub zone: String,
    /// Whether the data knows the customer at all.
    pub known: bool,
    /// Customer ids close to the one asked for, when it is unknown.
    pub did_you_mean: Vec<String>,
    pub moments: Vec<MomentExplanation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MomentExplanation {
    pub moment: String,
    pub title: String,
    /// In a sentence: `2 entries: 1 sent, 1 cancelled`, `never triggered: …`,
    /// `triggered 14 times, never entered: …`.
    pub summary: String,
    pub occurrences: Vec<Occurrence>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Occurrence {
    pub at: DateTime<Utc>,
    pub trigger: String,
    pub lets: Vec<NamedValue>,
    pub conditions: Vec<ConditionTrace>,
    pub entered: bool,
    pub due_at: Option<DateTime<Utc>>,
    pub send_at: Option<DateTime<Utc>>,
    /// `None` when not entered, or still pending.
    pub fate: Option<String>,
    pub reason: Option<String>,
    pub send_id: Option<String>,
}

/// Join the trace with the entries of `customer` over [from, to].
pub fn explain(
    model: &Model,
    customer: &str,
    moment: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    output: &RunOutput,
    trace: &Trace,
) -> Explanation {
    let zone = trace.zone.unwrap_or(chrono_tz::UTC);
    let known = trace.zone.is_some();
    let mut moments = Vec::new();
    for m in model
        .moments
        .iter()
        .filter(|m| moment.is_none_or(|id| id == m.id))
    {
        let entries: BTreeMap<DateTime<Utc>, &Entry> = output
            .entries
            .iter()
            .filter(|e| *e.moment == *m.id && &*e.customer_id == customer)
            .map(|e| (e.trigger_at, e))
            .collect();
        let steps: Vec<&TraceStep> = trace
            .steps
            .iter()
            .filter(|s| s.moment == m.id && s.at >= from && s.at <= to)
            .collect();
        let occurrences: Vec<Occurrence> = steps
            .iter()
            .map(|s| {
                let entry = s.entered.then(|| entries.get(&s.at)).flatten();
                Occurrence {
                    at: s.at,
                    trigger: s.trigger.clone(),
                    lets: s.lets.clone(),
                    conditions: s.conditions.clone(),
                    entered: s.entered,
                    due_at: s.due_at,
                    send_at: s.send_at,
                    fate: entry.and_then(|e| e.fate).map(|f| f.as_str().to_string()),
                    reason: entry.map(|e| e.reason.clone()),
                    send_id: entry.and_then(|e| e.send_id.clone()),
                }
            })
            .collect();
        let summary = summarise(model, m, &occurrences, trace, zone);
        moments.push(MomentExplanation {
            moment: m.id.clone(),
            title: m.title.clone(),
            summary,
            occurrences,
        });
    }
    Explanation {
        customer: customer.to_string(),
        from,
        to,
        zone: zone.name().to_string(),
        known,
        did_you_mean: trace.did_you_mean.iter().cloned().collect(),
        moments,
    }
}

fn summarise(
    model: &Model,
    moment: &crate::model::Moment,
    occurrences: &[Occurrence],
    trace: &Trace,
    zone: Tz,
) -> String {
    let entered: Vec<&Occurrence> = occurrences.iter().filter(|o| o.entered).collect();
    if !entered.is_empty() {
        let mut by_fate: BTreeMap<&str, usize> = BTreeMap::new();
        for o in &entered {
            *by_fate
                .entry(o.fate.as_deref().unwrap_or("pending"))
                .or_default() += 1;
        }
        let fates: Vec<String> = by_fate.iter().map(|(f, n)| format!("{n} {f}")).collect();
        return format!(
            "{}: {}",
            plural(entered.len(), "entry", "entries"),
            fates.join(", ")
        );
    }
    if let Some(first) = occurrences.first() {
        // Which condition failed, and how often.
        let mut failed: BTreeMap<&str, usize> = BTreeMap::new();
        for o in occurrences {
            if let Some(c) = o.conditions.iter().find(|c| !c.holds) {
                *failed.entry(c.condition.as_str()).or_default() += 1;
            }
        }
        let reasons: Vec<String> = failed
            .iter()
            .map(|(c, n)| format!("`{c}` was not true ({})", times(*n)))
            .collect();
        let _ = first;
        return format!(
            "triggered {}, never entered: {}",
            times(occurrences.len()),
            reasons.join("; ")
        );
    }
    let local = |t: DateTime<Utc>| local_time(t, zone);
    let reason = match &moment.trigger.source {
        TriggerSource::Event { event, catalog } => {
            let source = model
                .schema
                .events
                .get(event)
                .map_or(event.as_str(), |e| e.source.as_str());
            if *catalog {
                format!("no `{source}` catalog event while the customer was known")
            } else {
                match trace.events.get(event) {
                    Some((n, first, last)) => format!(
                        "no `{source}` from this customer in the period ({} in all, {} to {})",
                        n,
                        local(*first),
                        local(*last)
                    ),
                    None => format!("no `{source}` event from this customer"),
                }
            }
        }
        TriggerSource::Anniversary { date_trait, .. }
        | TriggerSource::Offset { date_trait, .. } => {
            match trace.traits.get(date_trait).filter(|v| !v.is_null()) {
                Some(value) => format!("`{date_trait}` is {value}: no trigger date in the period"),
                None => format!("`{date_trait}` is not set"),
            }
        }
        TriggerSource::Every { .. } => "the customer was not known in the period".to_string(),
    };
    format!("never triggered: {reason}")
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn times(n: usize) -> String {
    if n == 1 {
        "once".to_string()
    } else {
        format!("{n} times")
    }
}

/// The explanation for a person.
pub fn text(explanation: &Explanation) -> String {
    let mut out = String::new();
    let zone: Tz = explanation.zone.parse().unwrap_or(chrono_tz::UTC);
    let day = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    if !explanation.known {
        let _ = write!(
            out,
            "customer `{}` is not in the data up to {}",
            explanation.customer,
            day(explanation.to)
        );
        if !explanation.did_you_mean.is_empty() {
            let _ = write!(
                out,
                "; did you mean {}?",
                explanation
                    .did_you_mean
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            );
        }
        let _ = writeln!(out);
        return out;
    }
    let period = if explanation.from == DateTime::<Utc>::MIN_UTC {
        format!("up to {}", day(explanation.to))
    } else {
        format!("from {} to {}", day(explanation.from), day(explanation.to))
    };
    let _ = writeln!(
        out,
        "customer {} {period} (times in {})",
        explanation.customer, explanation.zone
    );
    for m in &explanation.moments {
        let _ = writeln!(out, "\n{} \"{}\": {}", m.moment, m.title, m.summary);
        let mut misses = 0;
        for o in &m.occurrences {
            if !o.entered {
                misses += 1;
                if misses > SHOWN_MISSES {
                    continue;
                }
            }
            let _ = writeln!(out, "  {}  {}", local_time(o.at, zone), o.trigger);
            for l in &o.lets {
                let _ = writeln!(out, "      let {} = {}", l.name, l.value);
            }
            for c in &o.conditions {
                let values: Vec<String> = c
                    .values
                    .iter()
                    .filter(|v| v.name != c.condition)
                    .map(|v| format!("{} = {}", v.name, v.value))
                    .collect();
                let values = if values.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", values.join(", "))
                };
                let _ = writeln!(
                    out,
                    "      where {}: {}{values}",
                    c.condition,
                    if c.holds { "true" } else { "false" }
                );
            }
            if o.entered {
                let due = match (o.due_at, o.send_at) {
                    (Some(d), Some(s)) if d != s => format!(
                        "due {}, after quiet hours {}",
                        local_time(d, zone),
                        local_time(s, zone)
                    ),
                    (Some(d), _) => format!("due {}", local_time(d, zone)),
                    _ => String::new(),
                };
                let _ = writeln!(out, "      entered, {due}");
                match &o.reason {
                    Some(reason) => {
                        let _ = writeln!(out, "      → {reason}");
                    }
                    None => {
                        let _ = writeln!(out, "      → not decided by the end of the period");
                    }
                }
            } else {
                let _ = writeln!(out, "      → no entry: a condition was not true");
            }
        }
        if misses > SHOWN_MISSES {
            let _ = writeln!(
                out,
                "  … and {} more occurrences without an entry (all of them with --format json)",
                misses - SHOWN_MISSES
            );
        }
    }
    out
}

/// The explanation as JSON.
pub fn json(explanation: &Explanation) -> String {
    let mut text = serde_json::to_string_pretty(explanation).unwrap_or_default();
    text.push('\n');
    text
}
