//! The engine: the checked campaigns run over customer data, up to `now`.
//!
//! A deterministic function of (model, records up to `now`): records arrive in time order
//! (`Record::order_key`), and the engine advances a clock through three kinds of happenings,
//! in time order, with ties broken as written here:
//!
//! 1. data records at an instant (traits change, events join the customers' histories and
//!    fire `on EVENT` triggers);
//! 2. timed triggers due at that instant (`every`, anniversaries, `DUR before|after`);
//! 3. decisions on entries whose send instant has come, in order of priority (higher first),
//!    then moment id, then customer id.
//!
//! Every trigger occurrence that passes its `where` becomes an [`Entry`]; at its send
//! instant (due time moved past quiet hours) it meets exactly one [`Fate`], checked in the
//! order of the language: cancelled, inactive, no_consent, limited, capped, control, sent.
//! Nothing after `now` is decided: such entries come back pending.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::eval::{
    self, CExpr, Context, EventIndex, EventRecord, Fuel, History, Names, Tally, TallySpec,
    TraitIndex,
};
use crate::fx::{FxMap, FxSet};
use crate::model::{Channel, Model, TriggerSource};
use crate::outcome::{Entry, EntryView, Fate, Group, MessageView, Send, SendView};
use crate::plain_template;
use crate::schedule;
use crate::value::{Id, Record, RecordKind, Value};

/// Work allowed for one evaluation of a user-written expression.
pub const FUEL_PER_EVALUATION: u64 = 1_000_000;

/// Where the engine puts entries and sends, as it decides them: in decision order (by
/// instant, then priority, moment and customer), then the entries left pending.
///
/// Entries and sends are lent: a sink keeps what it needs of them (see
/// [`EntryView::to_entry`]), and one that only writes them out builds nothing per entry.
pub trait Sink {
    fn entry(&mut self, entry: EntryView<'_>);
    fn send(&mut self, send: SendView<'_>);
    /// Every entry and send from here on is decided at `instant` or later (sent at it or
    /// later): a sink merging engines' outputs knows what can be written.
    fn reached(&mut self, instant: DateTime<Utc>) {
        let _ = instant;
    }
    /// The entries from here on are those left pending, by send instant, then customer.
    fn left_pending(&mut self) {}
    /// Nothing more comes.
    fn finished(&mut self) {}
}

/// What an engine reads: records in time order, and marks that no record before an instant
/// is still to come (so that an engine that has none for a while still moves on).
// A mark is as large as a record: boxing records would take back the allocation per record
// that holding their values in place saves.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Feed {
    Record(Record),
    Until(DateTime<Utc>),
}

impl Feed {
    fn at(&self) -> DateTime<Utc> {
        match self {
            Feed::Record(r) => r.at,
            Feed::Until(t) => *t,
        }
    }
}

/// What the engine produced, all in memory.
#[derive(Debug, Default)]
pub struct RunOutput {
    /// Decided entries, and pending ones (fate `None`), sorted by (moment, customer, trigger).
    pub entries: Vec<Entry>,
    /// Sent and control sends, sorted by (sent_at, send_id).
    pub sends: Vec<Send>,
    /// Evaluations that ran out of fuel (their condition counted as false).
    pub out_of_fuel: u64,
}

impl Sink for RunOutput {
    fn entry(&mut self, entry: EntryView<'_>) {
        let entry = entry.to_entry();
        self.entries.push(entry);
    }
    fn send(&mut self, send: SendView<'_>) {
        let send = send.to_send();
        self.sends.push(send);
    }
}

impl RunOutput {
    /// Entries by (moment, customer, trigger, send id), sends by (sent_at, send id); equal
    /// keys stay in the order they were decided.
    fn sort(&mut self) {
        self.entries
            .sort_by(|a, b| entry_order(a).cmp(&entry_order(b)));
        self.sends.sort_by(|a, b| send_order(a).cmp(&send_order(b)));
    }
}

/// The order of `entries.ndjson`.
pub fn entry_order(e: &Entry) -> (&str, &str, DateTime<Utc>, Option<&str>) {
    (
        &e.moment,
        &e.customer_id,
        e.trigger_at,
        e.send_id.as_deref(),
    )
}

/// The order of `sends.ndjson`.
pub fn send_order(s: &Send) -> (DateTime<Utc>, &str) {
    (s.sent_at, &s.send_id)
}

/// Decisions waiting, earliest first: (send instant, the decision's number, its place in
/// `PendingStore`). Only the instant orders the queue: the decisions of one instant are
/// taken out together and sorted by their whole `DecisionOrder`, so its entries stay small.
type DecisionQueue = BinaryHeap<Reverse<(DateTime<Utc>, u64, usize)>>;
/// Where a decision comes in the order of decisions: (send instant, priority — higher
/// first, moment index, customer id, the decision's number). The moments are sorted by id
/// (`Model::moments`), so their indexes are in the order of the ids.
type DecisionOrder = (DateTime<Utc>, Reverse<u64>, usize, Id, u64);

/// The decisions waiting in the queue, each at a place of its own, found without hashing;
/// a place let go is taken again.
#[derive(Default)]
struct PendingStore {
    places: Vec<Option<(DecisionOrder, Pending)>>,
    free: Vec<usize>,
}

impl PendingStore {
    fn insert(&mut self, decision: (DecisionOrder, Pending)) -> usize {
        match self.free.pop() {
            Some(place) => {
                self.places[place] = Some(decision);
                place
            }
            None => {
                self.places.push(Some(decision));
                self.places.len() - 1
            }
        }
    }

    fn take(&mut self, place: usize) -> Option<(DecisionOrder, Pending)> {
        let decision = self.places.get_mut(place)?.take()?;
        self.free.push(place);
        Some(decision)
    }

    /// Every decision still waiting, in no order.
    fn drain(&mut self) -> impl Iterator<Item = (DecisionOrder, Pending)> + '_ {
        self.free.clear();
        self.places.drain(..).flatten()
    }
}
/// Customers by id, in id order, with their numbers in `Engine::customers`.
type CustomerIds = BTreeMap<Id, usize>;
/// Date triggers waiting: (instant, moment index, customer id, the trait value scheduled for).
type TimerQueue = BinaryHeap<Reverse<(DateTime<Utc>, usize, Id, String)>>;

/// One moment, compiled.
struct MomentPlan {
    id: Arc<str>,
    title: String,
    priority: u64,
    source: TriggerSource,
    lets: Vec<CExpr>,
    conditions: Vec<CExpr>,
    unless: Vec<Unless>,
    delay_seconds: u64,
    quiet: Option<(crate::ast::TimeOfDay, crate::ast::TimeOfDay)>,
    holdout_percent: f64,
    active: Option<(chrono::NaiveDate, Option<chrono::NaiveDate>)>,
    limit: Option<(u64, Option<i64>)>,
    channel: Channel,
    /// The message's fields, and the name of each one's template in the environment.
    fields: Vec<String>,
    template_names: Vec<String>,
    /// Each field's template as plain pieces, when it is plain (see `plain_template`).
    plain: Vec<Option<Vec<Plain>>>,
    /// The `let` names, for templates.
    /// Shared with each message's template context.
    let_names: Arc<[String]>,
    /// The traits (`None`: all) and trigger event properties (`None`: all) the templates
    /// read: only those are handed to them.
    template_traits: Option<Vec<usize>>,
    template_event: Option<Vec<Arc<str>>>,
    /// Every variable the templates read (`customer.first_name`, `event`), sorted.
    template_variables: Vec<String>,
    /// The templates' `moment` record (`id`, `title`), made once.
    moment_record: minijinja::Value,
    /// The parts of this moment's reasons that do not change from entry to entry.
    reasons: Reasons,
    /// An event the customer must have had for the `where` to hold (it requires
    /// `did(E …)` or `count(E …) >= 1` of the customer's own): only such customers are
    /// considered when a catalog event or a schedule fires for everyone.
    gate: Option<Arc<str>>,
}

/// The parts of a moment's reasons made once.
struct Reasons {
    /// The whole reason of an `inactive` entry.
    inactive: String,
    /// What follows the last send in a `limited` entry's reason: `, limit 1 per 7d`.
    limit: String,
    /// The whole reason of a `control` entry.
    control: String,
}

impl Reasons {
    fn of(m: &crate::model::Moment) -> Reasons {
        Reasons {
            inactive: match m.active {
                Some((start, Some(u))) => {
                    format!("inactive: the moment is active from {start} until {u}")
                }
                Some((start, None)) => format!("inactive: the moment is active from {start}"),
                None => String::new(),
            },
            limit: match m.limit {
                Some(l) => match l.per {
                    Some(per) => format!(
                        ", limit {} per {}",
                        l.count,
                        human_duration(per.seconds().min(i64::MAX as u64) as i64)
                    ),
                    None => format!(", limit {} per customer", l.count),
                },
                None => String::new(),
            },
            control: format!("control: in the {}% holdout", m.holdout_percent),
        }
    }
}

/// `unless E [where …] [within …]`, compiled.
struct Unless {
    event: Arc<str>,
    /// The event's place in `EventIndex`.
    slot: usize,
    condition: Option<CExpr>,
    /// `within`, in seconds.
    within: Option<i64>,
}

/// Where each kind of event is filed, by its slot in `EventIndex`: the place of its events
/// in a customer's `history` and in the shop's, and of its tally in a customer's
/// `tallies`. Worked out once from what the campaigns read, so that an event is filed, and
/// an aggregate reads, by index rather than by name.
#[derive(Default)]
struct Layout {
    own: Vec<Option<usize>>,
    shop: Vec<Option<usize>>,
    tally: Vec<Option<usize>>,
}

impl Layout {
    /// Numbers the slots for which `wanted` holds, in slot order.
    fn places(slots: usize, wanted: impl Fn(usize) -> bool) -> Vec<Option<usize>> {
        let mut next = 0;
        (0..slots)
            .map(|slot| {
                wanted(slot).then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect()
    }

    /// How many places `places` numbered.
    fn count(places: &[Option<usize>]) -> usize {
        places.iter().flatten().count()
    }
}

/// What the engine does with one kind of event.
struct Route {
    /// Kept in the customer's own history.
    own: Option<Filing>,
    /// Kept in the shop's history for `across customers`.
    shop: Option<Filing>,
    /// Some moment's gate (its bit in `Customer::gates`): the customers who have had one
    /// are remembered.
    gate: Option<u64>,
    /// Counted into the customers' tallies, at this place (`Layout::tally`).
    tally: Option<usize>,
    /// The shop's indexes by key it goes into (`Engine::keyed`).
    shop_keyed: Vec<usize>,
    /// The customers' own indexes by key it goes into (`Engine::own_keyed`).
    own_keyed: Vec<usize>,
    /// The moments `on` it, in order.
    moments: Vec<usize>,
}

/// Where and how an event joins a history.
#[derive(Debug, Clone, Copy)]
struct Filing {
    /// Its place among the histories (`Layout::own` or `Layout::shop`).
    place: usize,
    /// For how long (`None`: for ever, as while tracing).
    keep: Option<Keep>,
    /// With its properties: false where nothing reads them (only `unless E within …`,
    /// which reads instants), so that an order kept there does not hold its products.
    whole: bool,
}

impl MomentPlan {
    /// Triggered by each `event`.
    fn fires_on(&self, event: &str) -> bool {
        matches!(&self.source, TriggerSource::Event { event: e, .. } if e == event)
    }
}

/// An event the customer must have had for `condition` to hold: a conjunct
/// `did(E …)`, `count(E …) >= N` (N ≥ 1) or `count(E …) > N` (N ≥ 0) of their own events.
fn gate_of(condition: &CExpr) -> Option<Arc<str>> {
    use crate::ast::{AggregateFn, BinaryOp};
    let own = |e: &CExpr, function: AggregateFn| match e {
        CExpr::Aggregate(a) if a.function == function && !a.across_customers => {
            Some(a.event.clone())
        }
        _ => None,
    };
    match condition {
        CExpr::Binary(BinaryOp::And, left, right) => gate_of(left).or_else(|| gate_of(right)),
        CExpr::Binary(op @ (BinaryOp::Ge | BinaryOp::Gt), left, right) => match &**right {
            CExpr::Lit(Value::Int(n)) if *n >= if *op == BinaryOp::Ge { 1 } else { 0 } => {
                own(left, AggregateFn::Count)
            }
            _ => None,
        },
        _ => own(condition, AggregateFn::Did),
    }
}

/// A trigger occurrence waiting for its send instant.
#[derive(Debug, Clone)]
struct Pending {
    moment: usize,
    /// The customer's number in `Engine::customers`.
    who: usize,
    trigger_at: DateTime<Utc>,
    trigger_key: Id,
    trigger_event: Option<EventRecord>,
    due_at: DateTime<Utc>,
    send_at: DateTime<Utc>,
    lets: Vec<Value>,
}

#[derive(Default)]
struct Customer {
    id: Id,
    traits: Vec<Value>,
    /// The customer's zone, kept in step with the zone trait.
    zone: Tz,
    /// When each trait last changed value (`None`: never set by the data).
    changed: Vec<Option<DateTime<Utc>>>,
    /// The customer's kept events, by their place in `Layout::own` (up to the last place an
    /// event has reached).
    history: Vec<Vec<EventRecord>>,
    /// Running tallies of the events plain aggregates read, by place in `Layout::tally`.
    tallies: Vec<Tally>,
    /// The (moment, instant) of each send (sent and control) inside its moment's `limit`
    /// window, in order. Inline, in the customer's own cache lines: a limit's count lies
    /// within a few sends, and a decision reads them without a cache miss more.
    moment_sends: smallvec::SmallVec<[(usize, DateTime<Utc>); 4]>,
    /// Send instants across moments (sent only) inside the cap's window, for the cap.
    sends: smallvec::SmallVec<[DateTime<Utc>; 4]>,
    /// Bit `i`: in the `i`th gate's set of customers (see `Engine::gated`).
    gates: u64,
    /// Indexes of the customer's own events by key, one per `Engine::own_keyed` (up to the
    /// last one an event has reached); the first inline, in the customer's own cache lines.
    keyed: smallvec::SmallVec<[KeyIndex; 1]>,
}

/// The histories an aggregate reads: one customer's, or the shop's with `across customers`.
struct Histories<'a> {
    layout: &'a Layout,
    own: &'a [Vec<EventRecord>],
    tallies: &'a [Tally],
    tally_specs: &'a [TallySpec],
    all: &'a [Vec<EventRecord>],
    keyed: &'a [(eval::KeyedSpec, KeyIndex)],
    /// The customer's own indexes by key, one per entry of `own_specs`.
    own_keyed: &'a [KeyIndex],
    own_specs: &'a [(eval::KeyedSpec, Option<Keep>)],
}

impl History for Histories<'_> {
    fn events(&self, slot: usize, across_customers: bool) -> &[EventRecord] {
        let (places, source) = match across_customers {
            true => (&self.layout.shop, self.all),
            false => (&self.layout.own, self.own),
        };
        places
            .get(slot)
            .copied()
            .flatten()
            .and_then(|place| source.get(place))
            .map_or(&[], |v| v.as_slice())
    }

    fn keyed(
        &self,
        keyed: &eval::Keyed,
        across_customers: bool,
        key: &str,
    ) -> Option<&[DateTime<Utc>]> {
        // INVARIANT: `place` is where the engine keeps this spec's index among those of its
        // kind (`CExpr::place_indexes`, when the campaigns are compiled), or `usize::MAX`
        // for none.
        let index = if across_customers {
            let (spec, index) = self.keyed.get(keyed.place)?;
            debug_assert!(*spec == keyed.spec);
            Some(index)
        } else {
            // INVARIANT: the customer's events of an indexed kind are not kept, so an index
            // must answer: a customer without one has had no such event (an empty one).
            // The data is typed by the schema, so a path holds what the index expects and
            // the index stays usable.
            debug_assert!(self
                .own_specs
                .get(keyed.place)
                .is_none_or(|(s, _)| *s == keyed.spec));
            if keyed.place >= self.own_specs.len() {
                return None;
            }
            match self.own_keyed.get(keyed.place) {
                Some(index) => Some(index),
                None => return Some(&[]),
            }
        };
        let index = index.filter(|i| i.usable)?;
        Some(index.times_of(key))
    }

    fn tally(&self, slot: usize) -> Option<(&TallySpec, &Tally)> {
        let place = self.layout.tally.get(slot).copied().flatten()?;
        Some((self.tally_specs.get(place)?, self.tallies.get(place)?))
    }
}

/// The reason of a `capped` entry whose window held `recent` sends.
fn capped_reason(recent: usize, per: impl std::fmt::Display, count: u64) -> String {
    let messages = if recent == 1 { "message" } else { "messages" };
    format!("capped: {recent} {messages} in the last {per}, cap {count}")
}

/// Whose evaluations to record, for `explain`.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    pub customer: String,
    /// Only this moment (all when `None`).
    pub moment: Option<String>,
}

/// One trigger occurrence of the traced customer: what was evaluated, with which values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceStep {
    pub moment: String,
    pub at: DateTime<Utc>,
    /// The trigger in words: the event with its properties, or the schedule or date.
    pub trigger: String,
    pub lets: Vec<NamedValue>,
    /// Every `where` condition, each evaluated (not only up to the first that fails).
    pub conditions: Vec<ConditionTrace>,
    /// All conditions held: an entry was made.
    pub entered: bool,
    pub due_at: Option<DateTime<Utc>>,
    /// The due time moved past quiet hours.
    pub send_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConditionTrace {
    /// As written (canonical form).
    pub condition: String,
    pub holds: bool,
    /// The names and aggregates it reads, with their values.
    pub values: Vec<NamedValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NamedValue {
    pub name: String,
    pub value: String,
}

/// What an explained run found about the traced customer.
#[derive(Debug, Default)]
pub struct Trace {
    pub steps: Vec<TraceStep>,
    /// The customer's zone at the end of the run.
    pub zone: Option<Tz>,
    /// The customer's traits at the end of the run, by name.
    pub traits: BTreeMap<String, Value>,
    /// The customer's events by event identifier: how many, first and last instant.
    pub events: BTreeMap<String, (u64, DateTime<Utc>, DateTime<Utc>)>,
    /// When the customer is unknown: the closest known id, if one is close.
    pub did_you_mean: Option<String>,
    /// Per moment traced: its message rendered for the customer (see [`Preview`]).
    pub previews: BTreeMap<String, Preview>,
}

/// A moment's message rendered for one customer: with the traits at the end of the run
/// and the latest trigger occurrence (its event and `let`s), or none if it never fired.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preview {
    pub moment: String,
    pub customer: String,
    pub channel: String,
    /// The occurrence rendered: its instant and the trigger in words.
    pub trigger_at: Option<DateTime<Utc>>,
    pub trigger: Option<String>,
    /// Every field of the message, rendered.
    pub fields: BTreeMap<String, String>,
    /// The variables the templates read, with their values (`none` when missing).
    pub variables: Vec<NamedValue>,
}

/// [`run`], also recording every trigger occurrence of one customer.
pub fn run_traced(
    model: &Model,
    records: impl Iterator<Item = Record>,
    from: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    options: &TraceOptions,
) -> (RunOutput, Trace) {
    let mut out = RunOutput::default();
    let mut engine = Engine::build(model, &mut out, true);
    engine.tracer = Some(Tracer::new(&engine, model, options));
    let customer: Id = Id::new(&options.customer);
    let mut trace = Trace::default();
    let out_of_fuel = engine.run_with(records.map(Feed::Record), from, now, |engine| {
        if engine.find(&customer).is_none() {
            let mut ids: Vec<&str> = engine.customers.iter().map(|c| &*c.id).collect();
            ids.sort_unstable();
            trace.did_you_mean = crate::diagnostic::closest(&customer, ids).map(str::to_string);
        }
        if let Some(c) = engine.find(&customer) {
            trace.zone = Some(engine.zone_of(c));
            trace.traits = engine
                .traits
                .names
                .iter()
                .zip(&c.traits)
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect();
            let names = engine.events.names.iter();
            trace.events = names
                .zip(&engine.layout.own)
                .filter_map(|(name, place)| {
                    let events = c.history.get((*place)?)?;
                    Some((
                        name.to_string(),
                        (events.len() as u64, events.first()?.at, events.last()?.at),
                    ))
                })
                .collect();
        }
        if let Some(tracer) = engine.tracer.take() {
            for index in 0..engine.moments.len() {
                if tracer.wants(&engine.moments[index].id, &customer) {
                    if let Some(preview) = engine.preview(index, &customer, tracer.last.get(&index))
                    {
                        trace.previews.insert(preview.moment.clone(), preview);
                    }
                }
            }
            trace.steps = tracer.steps;
        }
    });
    out.out_of_fuel = out_of_fuel;
    out.sort();
    (out, trace)
}

/// Run the campaigns over `records` (in time order) up to `now`; entries triggered before
/// `from` are not reported (their effect on limits and caps still counts).
pub fn run(
    model: &Model,
    records: impl Iterator<Item = Record>,
    from: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> RunOutput {
    let mut out = RunOutput::default();
    out.out_of_fuel = run_into(model, records, from, now, &mut out);
    out.sort();
    out
}

/// [`run`], handing entries and sends to `sink` as they are decided (in time order) instead
/// of keeping them. Returns how many evaluations ran out of fuel.
pub fn run_into(
    model: &Model,
    records: impl Iterator<Item = Record>,
    from: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    sink: &mut dyn Sink,
) -> u64 {
    Engine::new(model, sink).run_with(records.map(Feed::Record), from, now, |_| {})
}

/// The part of `parts` that decides for `customer_id` in [`run_partitioned`]: a stable
/// hash of the id, so a customer's part does not depend on the data.
pub fn partition(customer_id: &str, parts: usize) -> usize {
    (schedule::fnv1a64(customer_id.as_bytes()) % parts.max(1) as u64) as usize
}

/// Records handed to an engine thread at once, and batches it may have waiting: enough
/// that an engine busy for a while (writing a run of a backtest's files, or given less of
/// the processor by the system for a while) does not stop the records of the others. The
/// dispatcher waits for the engine furthest behind, and the others then wait for it: with
/// 32 batches, engines waited for records about 1.5 s in all over a 10 s backtest, and the
/// processors were idle 4-8% of it; with 128, half that (2-4% less time), for about 100 MB
/// more at peak.
const RECORD_BATCH: usize = 1024;
const RECORD_BATCHES_AHEAD: usize = 128;

/// [`run_into`] split between engines on threads of their own, one per sink: each decides
/// for the customers [`partition`] gives it. A customer's records go to their engine only;
/// catalog events and the events some moment reads `across customers` go to every engine,
/// which keeps the shop's indexes whole. Each engine hands its customers' entries and sends
/// to its own sink in its decision order, so for one customer the order is that of
/// [`run_into`]; and as customers do not affect each other's fates (limits and the cap are
/// per customer), the entries and sends are those of [`run_into`]. Returns how many
/// evaluations ran out of fuel; an error when a thread cannot be started.
pub fn run_partitioned(
    model: &Model,
    records: impl Iterator<Item = Record>,
    from: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    sinks: Vec<&mut (dyn Sink + std::marker::Send)>,
) -> std::io::Result<u64> {
    let parts = sinks.len();
    if parts <= 1 {
        return Ok(match sinks.into_iter().next() {
            Some(sink) => run_into(model, records, from, now, sink),
            None => 0,
        });
    }
    // The events every engine sees, by their interned names: a record's kind of event is
    // told apart by where its name is, without hashing it (see `Engine::route`).
    let shop: Vec<&'static str> = {
        let mut unused = RunOutput::default();
        Engine::new(model, &mut unused)
            .across_events
            .iter()
            .map(|event| crate::value::interned(event))
            .collect()
    };
    let everyone = |event: &'static str| shop.iter().any(|s| std::ptr::eq(*s, event));
    std::thread::scope(|scope| {
        let mut senders = Vec::with_capacity(parts);
        let mut engines = Vec::with_capacity(parts);
        for (part, sink) in sinks.into_iter().enumerate() {
            let (sender, batches) =
                std::sync::mpsc::sync_channel::<Vec<Feed>>(RECORD_BATCHES_AHEAD);
            senders.push(sender);
            let engine = std::thread::Builder::new()
                .name(format!("moments-engine-{part}"))
                .spawn_scoped(scope, move || {
                    let mut engine = Engine::new(model, sink);
                    engine.share = Some((part, parts));
                    engine.run_with(batches.into_iter().flatten(), from, now, |_| {})
                })?;
            engines.push(engine);
        }
        // A batch's records and the mark that closes it.
        let mut batches: Vec<Vec<Feed>> = (0..parts)
            .map(|_| Vec::with_capacity(RECORD_BATCH + 1))
            .collect();
        // A send fails only when that engine's thread has ended (it panicked), which
        // joining it below reports.
        let hand_over = |part: usize, batch: &mut Vec<Feed>| {
            let batch = std::mem::replace(batch, Vec::with_capacity(RECORD_BATCH + 1));
            let _ = senders[part].send(batch);
        };
        for record in records.take_while(|r| r.at <= now) {
            let at = record.at;
            let everyone = match (&record.customer, &record.kind) {
                (None, _) => true,
                (Some(_), RecordKind::Event { event, .. }) => everyone(event),
                (Some(_), RecordKind::Identify { .. }) => false,
            };
            let owner = record.customer.as_deref().map(|c| partition(c, parts));
            if everyone {
                for (part, batch) in batches.iter_mut().enumerate() {
                    if Some(part) != owner {
                        batch.push(Feed::Record(record.clone()));
                    }
                }
            }
            if let Some(part) = owner {
                // INVARIANT: `partition` is below `parts`.
                batches[part].push(Feed::Record(record));
            }
            // All engines are handed their batches at once, each closed by a mark that no
            // record before this one's instant is to come: an engine with few records of
            // its own still moves on with the others, and what it decides can be merged
            // with theirs as they go (see `Sink::reached`).
            if batches.iter().any(|b| b.len() >= RECORD_BATCH) {
                for (part, batch) in batches.iter_mut().enumerate() {
                    batch.push(Feed::Until(at));
                    hand_over(part, batch);
                }
            }
        }
        for (part, batch) in batches.iter_mut().enumerate() {
            hand_over(part, batch);
        }
        // The engines' records end.
        drop(senders);
        let mut out_of_fuel = 0;
        for engine in engines {
            match engine.join() {
                Ok(n) => out_of_fuel += n,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(out_of_fuel)
    })
}

/// The traced customer's compiled conditions, with the parts worth showing.
struct Tracer {
    customer: Id,
    moment: Option<String>,
    /// Per moment: the `where` conditions, split at their top-level `and`s.
    conditions: Vec<Vec<TracedCondition>>,
    steps: Vec<TraceStep>,
    /// The latest trigger occurrence per moment: (instant, event, `let` values), for
    /// previews.
    last: HashMap<usize, Occurrence>,
}

/// A trigger occurrence: its instant, its event (if any) and its `let` values.
type Occurrence = (DateTime<Utc>, Option<EventRecord>, Vec<Value>);

impl Tracer {
    fn new(engine: &Engine, model: &Model, options: &TraceOptions) -> Tracer {
        let conditions = model
            .moments
            .iter()
            .zip(&engine.moments)
            .map(|(m, plan)| {
                let names = Names {
                    traits: &engine.traits,
                    events: &engine.events,
                    lets: &plan.let_names,
                    aggregated: None,
                };
                let mut conjuncts = Vec::new();
                for c in &m.trigger.conditions {
                    split_and(c, &mut conjuncts);
                }
                conjuncts
                    .into_iter()
                    .map(|c| {
                        let mut parts = Vec::new();
                        collect_parts(c, &mut parts);
                        let mut seen = std::collections::HashSet::new();
                        let parts = parts
                            .into_iter()
                            .map(|p| (crate::format::format_expr(p), p))
                            .filter(|(text, _)| seen.insert(text.clone()))
                            .map(|(text, p)| (text, eval::compile(p, &names)))
                            .collect();
                        TracedCondition {
                            text: crate::format::format_expr(c),
                            compiled: eval::compile(c, &names),
                            parts,
                        }
                    })
                    .collect()
            })
            .collect();
        Tracer {
            customer: Id::new(&options.customer),
            moment: options.moment.clone(),
            conditions,
            steps: Vec::new(),
            last: HashMap::new(),
        }
    }

    fn wants(&self, moment: &str, customer: &str) -> bool {
        *self.customer == *customer && self.moment.as_deref().is_none_or(|m| m == moment)
    }
}

struct TracedCondition {
    text: String,
    compiled: CExpr,
    /// The names and aggregates it reads: (text, compiled).
    parts: Vec<(String, CExpr)>,
}

/// `a and b and c` as `[a, b, c]`: each shown with whether it held.
fn split_and<'e>(expr: &'e crate::ast::Expr, into: &mut Vec<&'e crate::ast::Expr>) {
    match &expr.kind {
        crate::ast::ExprKind::Binary(crate::ast::BinaryOp::And, l, r) => {
            split_and(l, into);
            split_and(r, into);
        }
        _ => into.push(expr),
    }
}

/// The sub-expressions of a condition worth showing with their values: names, calls and
/// aggregates (not literals, not the operators between them).
fn collect_parts<'e>(expr: &'e crate::ast::Expr, into: &mut Vec<&'e crate::ast::Expr>) {
    use crate::ast::ExprKind;
    match &expr.kind {
        ExprKind::Path(_) | ExprKind::Aggregate(_) => into.push(expr),
        ExprKind::Call { args, .. } => {
            into.push(expr);
            for a in args {
                collect_parts(a, into);
            }
        }
        ExprKind::Unary(_, inner) => collect_parts(inner, into),
        ExprKind::Binary(_, l, r) => {
            collect_parts(l, into);
            collect_parts(r, into);
        }
        ExprKind::List(items) => items.iter().for_each(|i| collect_parts(i, into)),
        ExprKind::Literal(_) => {}
    }
}

struct Engine<'m> {
    model: &'m Model,
    out: &'m mut dyn Sink,
    /// Evaluations that ran out of fuel.
    out_of_fuel: u64,
    traits: TraitIndex,
    events: EventIndex,
    /// Where each kind of event is filed.
    layout: Layout,
    zone_trait: Option<usize>,
    default_zone: Tz,
    moments: Vec<MomentPlan>,
    consent: BTreeMap<Channel, CExpr>,
    templates: minijinja::Environment<'static>,
    /// Every customer seen, by number: a customer is looked up by id once per record, and
    /// by number after that.
    customers: Vec<Customer>,
    /// Each customer's number in `customers`, by id.
    numbers: FxMap<Id, usize>,
    /// Every customer's id, in order: who a catalog event or a schedule considers.
    customer_ids: CustomerIds,
    /// Per gate event (see `MomentPlan::gate`), the customers who have had one, in order.
    gated: FxMap<Arc<str>, (u64, CustomerIds)>,
    /// What to do with each kind of event, worked out on its first record, found by where
    /// the kind's name is and its length (record kinds are `'static` and interned, so that
    /// tells them apart without reading the name). Counted without atomics (`Rc`): an
    /// engine stays on its thread, and a locked count per record stalls the core on the
    /// record's cache misses.
    routes: FxMap<(usize, usize), Rc<Route>>,
    /// Every customer's events, for `across customers` (only of events some moment reads
    /// so), by place in `Layout::shop`.
    shop_history: Vec<Vec<EventRecord>>,
    across_events: Vec<Arc<str>>,
    pending: DecisionQueue,
    pending_store: PendingStore,
    /// Decisions due at the instant they were triggered (no `wait`, no quiet hours), all
    /// at one instant: decided at that instant with those of the queue, in the same
    /// order, without going through the queue. Most entries of a large backtest are.
    // INVARIANT: every decision here is due at the instant of the first.
    due_now: Vec<(DecisionOrder, Pending)>,
    next_pending: u64,
    timers: TimerQueue,
    /// The (instant, moment, customer) of every queued timer.
    timer_keys: FxSet<(DateTime<Utc>, usize, Id)>,
    tracer: Option<Tracer>,
    /// The zone of a new customer (from the traits' defaults).
    default_zone_of_new: Tz,
    /// How long events are kept, and whether whole, by (event, across customers); an
    /// event no expression reads is not kept at all. `None` while tracing: `explain`
    /// shows whole histories.
    keep: Option<HashMap<(Arc<str>, bool), Kept>>,
    /// What plain aggregates read of each event, kept as a [`Tally`] per customer instead
    /// of the events, by place in `Layout::tally`. Empty while tracing.
    tally_specs: Vec<TallySpec>,
    /// Indexes by key for `across customers` aggregates that can use one.
    keyed: Vec<(eval::KeyedSpec, KeyIndex)>,
    /// The indexes by key each customer keeps of their own events, for `count`/`did` with a
    /// `KEY in E.path` or `E.path == KEY` condition, and how long. Empty while tracing.
    own_keyed: Vec<(eval::KeyedSpec, Option<Keep>)>,
    /// Every zone a customer has been in, by name.
    zones: BTreeMap<&'static str, Tz>,
    /// Per moment with `every`: no schedule instant in any known zone before this one
    /// (`None`: not known, look again).
    next_fire: Vec<Option<DateTime<Utc>>>,
    /// The moments with `every`.
    scheduled: Vec<usize>,
    /// The customers this engine decides for, when the run is split between engines
    /// (`run_partitioned`): (this engine's part, how many parts). `None`: everyone.
    share: Option<(usize, usize)>,
    /// The reason of a `capped` entry, when there is a cap.
    capped_reason: Option<String>,
    /// Room for the reason of the entry at hand, and the texts of its message.
    reason: String,
    texts: Vec<String>,
    /// The traits each channel's consent rule reads, in order: a `no_consent` entry's
    /// reason says what they were.
    consent_traits: BTreeMap<Channel, Vec<usize>>,
}

impl<'m> Engine<'m> {
    fn new(model: &'m Model, out: &'m mut dyn Sink) -> Engine<'m> {
        Engine::build(model, out, false)
    }

    /// The engine; `traced` for `explain`: every event is kept, none is tallied or indexed
    /// per customer, and every customer is considered, so that the trace shows everything.
    fn build(model: &'m Model, out: &'m mut dyn Sink, traced: bool) -> Engine<'m> {
        let traits = TraitIndex::new(&model.schema);
        let events = EventIndex::new(&model.schema);
        let zone_trait = model
            .schema
            .traits
            .iter()
            .find(|(_, f)| f.ty.kind == crate::types::TypeKind::Timezone)
            .and_then(|(name, _)| traits.position(name));
        let mut templates = minijinja::Environment::new();
        templates.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        let mut moments = Vec::new();
        let mut reads = Reads::default();
        for m in &model.moments {
            let let_names: Vec<String> = m.trigger.lets.iter().map(|l| l.name.clone()).collect();
            let mut lets = Vec::new();
            for (i, l) in m.trigger.lets.iter().enumerate() {
                let names = Names {
                    traits: &traits,
                    events: &events,
                    lets: &let_names[..i],
                    aggregated: None,
                };
                lets.push(eval::compile(&l.value, &names));
            }
            let names = Names {
                traits: &traits,
                events: &events,
                lets: &let_names,
                aggregated: None,
            };
            let conditions: Vec<CExpr> = m
                .trigger
                .conditions
                .iter()
                .map(|c| eval::compile(c, &names))
                .collect();
            let unless = m
                .trigger
                .unless
                .iter()
                .map(|u| {
                    let inner = Names {
                        traits: &traits,
                        events: &events,
                        lets: &let_names,
                        aggregated: Some(&u.event),
                    };
                    // INVARIANT: the checker resolved the event; one it did not has no
                    // history and cancels nothing.
                    Unless {
                        event: Arc::from(u.event.as_str()),
                        slot: events.position(&u.event).unwrap_or(usize::MAX),
                        condition: u.condition.as_ref().map(|c| eval::compile(c, &inner)),
                        within: u.within.map(|w| w.seconds().min(i64::MAX as u64) as i64),
                    }
                })
                .collect::<Vec<Unless>>();
            for expr in lets.iter().chain(conditions.iter()) {
                reads.add(expr);
            }
            // `unless` reads the customer's events from the trigger to the send: at most
            // the due delay plus a day of quiet hours (and an hour of clock change).
            let delay = i64::try_from(m.trigger.due_delay_seconds()).unwrap_or(i64::MAX);
            for Unless {
                event, condition, ..
            } in &unless
            {
                let keep = Keep::For(delay.saturating_add(25 * 3_600));
                reads.keep(event, false, keep, condition.is_some());
                if let Some(c) = condition {
                    reads.add(c);
                }
            }
            let mut fields = Vec::new();
            let mut template_names = Vec::new();
            let mut plain = Vec::new();
            let mut read: Vec<String> = Vec::new();
            for (field, source) in &m.message.fields {
                let name = format!("{}/{}", m.id, field);
                // A name with an extension could turn on minijinja's auto-escaping.
                plain.push(
                    plain_template::parse(source)
                        .filter(|_| !name.contains('.'))
                        .map(|pieces| {
                            let bind = |piece| bind_plain(piece, &let_names, &traits, m);
                            pieces.into_iter().map(bind).collect()
                        }),
                );
                // INVARIANT: the checker compiled every template already.
                let _ = templates.add_template_owned(name.clone(), source.clone());
                if let Ok(template) = templates.get_template(&name) {
                    read.extend(template.undeclared_variables(true));
                }
                fields.push(field.clone());
                template_names.push(name);
            }
            // `customer.first_name` reads one trait; `customer` alone (or indexed) all.
            let read_under = |root: &str| -> Option<Vec<&str>> {
                let mut names = Vec::new();
                for variable in &read {
                    let mut segments = variable.split('.');
                    if segments.next() == Some(root) {
                        names.push(segments.next()?);
                    }
                }
                Some(names)
            };
            let template_traits = read_under("customer")
                .map(|names| names.iter().filter_map(|n| traits.position(n)).collect());
            let template_event =
                read_under("event").map(|names| names.iter().map(|n| Arc::from(*n)).collect());
            read.sort();
            read.dedup();
            let gate = conditions.iter().find_map(gate_of);
            moments.push(MomentPlan {
                id: Arc::from(m.id.as_str()),
                title: m.title.clone(),
                priority: m.priority,
                source: m.trigger.source.clone(),
                lets,
                conditions,
                unless,
                delay_seconds: m.trigger.due_delay_seconds(),
                quiet: m.quiet_hours,
                holdout_percent: m.holdout_percent,
                active: m.active,
                limit: m.limit.map(|l| {
                    (
                        l.count,
                        l.per.map(|p| p.seconds().min(i64::MAX as u64) as i64),
                    )
                }),
                channel: m.message.channel,
                fields,
                template_names,
                plain,
                let_names: let_names.into(),
                template_traits,
                template_event,
                template_variables: read,
                moment_record: minijinja::Value::from(BTreeMap::from([
                    ("id", minijinja::Value::from(m.id.as_str())),
                    ("title", minijinja::Value::from(m.title.as_str())),
                ])),
                reasons: Reasons::of(m),
                gate,
            });
        }
        let mut consent = model
            .schema
            .defaults
            .consent
            .iter()
            .map(|(c, e)| {
                (
                    *c,
                    eval::compile(
                        e,
                        &Names {
                            traits: &traits,
                            events: &events,
                            lets: &[],
                            aggregated: None,
                        },
                    ),
                )
            })
            .collect::<BTreeMap<Channel, CExpr>>();
        for rule in consent.values() {
            reads.add(rule);
        }
        let consent_traits = consent
            .iter()
            .map(|(channel, rule)| {
                let mut read = Vec::new();
                collect_traits(rule, &mut read);
                read.sort_unstable();
                read.dedup();
                (*channel, read)
            })
            .collect();
        let Reads {
            keep,
            mut tally_specs,
            keyed: mut keyed_specs,
            mut own_keyed,
            mut across,
        } = reads;
        across.sort();
        across.dedup();
        keyed_specs.sort();
        keyed_specs.dedup();
        let keep = (!traced).then_some(keep);
        if traced {
            tally_specs.clear();
            own_keyed.clear();
        }
        // Each keyed aggregate knows where its index is, so a lookup does not compare specs.
        {
            let own: Vec<eval::KeyedSpec> = own_keyed.iter().map(|(s, _)| s.clone()).collect();
            let mut place = |expr: &mut CExpr| expr.place_indexes(&keyed_specs, &own);
            for plan in &mut moments {
                plan.lets.iter_mut().for_each(&mut place);
                plan.conditions.iter_mut().for_each(&mut place);
                for unless in &mut plan.unless {
                    unless.condition.iter_mut().for_each(&mut place);
                }
            }
            consent.values_mut().for_each(&mut place);
        }
        let slots = events.names.len();
        let layout = Layout {
            own: Layout::places(slots, |slot| {
                let name = &events.names[slot];
                keep.as_ref()
                    .is_none_or(|k| k.contains_key(&(name.clone(), false)))
            }),
            shop: Layout::places(slots, |slot| across.contains(&events.names[slot])),
            tally: Layout::places(slots, |slot| tally_specs.contains_key(&events.names[slot])),
        };
        let tally_specs: Vec<TallySpec> = events
            .names
            .iter()
            .filter_map(|name| tally_specs.remove(name))
            .collect();
        // At most 64 gates, one bit each in `Customer::gates`; a moment whose gate is not
        // among them considers everyone.
        let mut gate_events: Vec<Arc<str>> =
            moments.iter().filter_map(|m| m.gate.clone()).collect();
        gate_events.sort();
        gate_events.dedup();
        // Every customer is considered while tracing, so that the trace shows every
        // occurrence.
        let gated = gate_events
            .into_iter()
            .filter(|_| !traced)
            .take(64)
            .enumerate()
            .map(|(i, event)| (event, (1u64 << i, Default::default())))
            .collect();
        let mut engine = Engine {
            model,
            traits,
            shop_history: vec![Vec::new(); Layout::count(&layout.shop)],
            events,
            layout,
            zone_trait,
            default_zone: model.schema.defaults.timezone.unwrap_or(chrono_tz::UTC),
            moments,
            consent,
            templates,
            customers: Vec::new(),
            numbers: FxMap::default(),
            customer_ids: BTreeMap::new(),
            gated,
            routes: FxMap::default(),
            across_events: across,
            pending: BinaryHeap::new(),
            pending_store: PendingStore::default(),
            due_now: Vec::new(),
            next_pending: 0,
            timers: BinaryHeap::new(),
            timer_keys: FxSet::default(),
            out,
            out_of_fuel: 0,
            tracer: None,
            default_zone_of_new: chrono_tz::UTC,
            keep,
            tally_specs,
            own_keyed,
            keyed: keyed_specs
                .into_iter()
                .map(|spec| (spec, KeyIndex::usable()))
                .collect(),
            zones: BTreeMap::new(),
            next_fire: vec![None; model.moments.len()],
            scheduled: (0..model.moments.len())
                .filter(|&i| matches!(model.moments[i].trigger.source, TriggerSource::Every { .. }))
                .collect(),
            share: None,
            consent_traits,
            reason: String::new(),
            texts: Vec::new(),
            capped_reason: model
                .schema
                .defaults
                .cap
                .map(|(count, per)| capped_reason(count as usize, per, count)),
        };
        engine.default_zone_of_new = engine.zone_from_traits(&engine.traits.defaults);
        engine
    }

    /// A trigger occurrence in words: `Product Added {price: 24, quantity: 1}`,
    /// `every "0 9 * * *" (Europe/Paris)`, `anniversary of birthday (1990-12-02)`.
    fn describe_trigger(
        &self,
        moment: usize,
        customer: &Customer,
        event: Option<&EventRecord>,
        zone: Tz,
    ) -> String {
        let trait_value = |name: &str| {
            self.traits
                .position(name)
                .and_then(|i| customer.traits.get(i))
                .map_or("none".to_string(), |v| v.to_string())
        };
        match &self.moments[moment].source {
            TriggerSource::Event {
                event: name,
                catalog,
            } => {
                let source = self
                    .model
                    .schema
                    .events
                    .get(name)
                    .map_or(name.as_str(), |e| e.source.as_str());
                let properties = event
                    .map(|e| {
                        e.properties
                            .iter()
                            .map(|(k, v)| format!("{k}: {v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                let kind = if *catalog { " (catalog)" } else { "" };
                format!("{source}{kind} {{{properties}}}")
            }
            TriggerSource::Anniversary { date_trait, .. } => {
                format!("anniversary of {date_trait} ({})", trait_value(date_trait))
            }
            TriggerSource::Offset {
                offset,
                direction,
                date_trait,
                ..
            } => format!(
                "{offset} {} {date_trait} ({})",
                match direction {
                    crate::ast::Direction::Before => "before",
                    crate::ast::Direction::After => "after",
                },
                trait_value(date_trait)
            ),
            TriggerSource::Every { cron, zone: fixed } => format!(
                "every \"{}\" in {}",
                cron.source(),
                fixed.unwrap_or(zone).name()
            ),
        }
    }

    fn zone_of(&self, customer: &Customer) -> Tz {
        customer.zone
    }

    /// The zone the traits say: the zone trait if it names one, else the shop's.
    fn zone_from_traits(&self, traits: &[Value]) -> Tz {
        let own = self
            .zone_trait
            .and_then(|i| traits.get(i))
            .and_then(|v| v.as_str())
            .and_then(|name| name.parse::<Tz>().ok());
        schedule::customer_zone(own, Some(self.default_zone))
    }

    /// A zone some customer is in: a schedule's next instant may now come sooner.
    fn note_zone(&mut self, zone: Tz) {
        if self.zones.insert(zone.name(), zone).is_none() {
            self.next_fire.iter_mut().for_each(|n| *n = None);
        }
    }

    /// The run; `finish` sees the engine's final state at the end. Returns how many
    /// evaluations ran out of fuel.
    fn run_with(
        mut self,
        records: impl Iterator<Item = Feed>,
        from: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        finish: impl FnOnce(&mut Engine),
    ) -> u64 {
        let mut records = records.peekable();
        // Every schedule instant up to here has fired (see `ScheduleCursor`).
        let mut cron_cursor = ScheduleCursor::Start;
        loop {
            // A mark `Until(t)` stands for a record at `t` that changes nothing.
            let next_record = records.peek().map(Feed::at).filter(|t| *t <= now);
            let next_timer = self
                .timers
                .peek()
                .map(|Reverse(t)| t.0)
                .filter(|t| *t <= now);
            let next_decision = self.next_decision().filter(|t| *t <= now);
            let Some(instant) = [next_record, next_timer, next_decision]
                .into_iter()
                .flatten()
                .min()
            else {
                // Nothing left but schedules up to `now`; their decisions due by `now`
                // are made in the next rounds.
                if cron_cursor.instant().is_some_and(|c| c < now) {
                    self.fire_schedules(cron_cursor.instant(), now);
                    cron_cursor = ScheduleCursor::At(now);
                    continue;
                }
                break;
            };
            // Scheduled (`every`) triggers between the last instant and this one. They may
            // make decisions due before `instant`: those come first, so go round again.
            // INVARIANT: the cursor never moves back, so no schedule instant fires twice.
            // A schedule instant equal to `instant` fires in a later round, after the
            // records of that instant (records come first at an instant).
            // They fire up to `instant` less a nanosecond; with none due before `instant`
            // (most instants), firing would only move the cursor, which is done here.
            if cron_cursor.is_before(instant) {
                let fires = self
                    .scheduled
                    .iter()
                    .any(|&i| self.next_fire[i].is_none_or(|next| next < instant));
                if fires {
                    let before = schedule::just_before(instant);
                    self.fire_schedules(cron_cursor.instant(), before);
                }
                cron_cursor = ScheduleCursor::JustBefore(instant);
                if fires && self.next_decision().is_some_and(|t| t < instant) {
                    continue;
                }
            }
            self.out.reached(instant);
            if next_record == Some(instant) {
                while let Some(feed) = records.next_if(|f| f.at() == instant) {
                    if let Feed::Record(record) = feed {
                        self.apply(record);
                    }
                }
                continue;
            }
            if next_timer == Some(instant) {
                while self.timers.peek().is_some_and(|Reverse(t)| t.0 == instant) {
                    if let Some(Reverse((at, moment, customer, value))) = self.timers.pop() {
                        self.timer_keys.remove(&(at, moment, customer.clone()));
                        self.fire_timer(at, moment, customer, value);
                    }
                }
                continue;
            }
            // The decisions due now, from the queue and from `due_now`, in decision order.
            let mut due = match self.due_now.first() {
                Some((order, _)) if order.0 == instant => std::mem::take(&mut self.due_now),
                _ => Vec::new(),
            };
            while self.pending.peek().is_some_and(|Reverse(p)| p.0 == instant) {
                if let Some(Reverse((_, _, place))) = self.pending.pop() {
                    if let Some(decision) = self.pending_store.take(place) {
                        due.push(decision);
                    }
                }
            }
            // INVARIANT: each order is told apart by its last number, so the sort is total.
            due.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (_, p) in due.drain(..) {
                self.decide(p, from);
            }
            if self.due_now.is_empty() {
                // Its room, for the next instant.
                self.due_now = due;
            }
        }
        // What is left is pending.
        let mut left: Vec<Pending> = self.pending_store.drain().map(|(_, p)| p).collect();
        self.pending.clear();
        left.extend(self.due_now.drain(..).map(|(_, p)| p));
        let id = |p: &Pending| self.customers.get(p.who).map(|c| c.id.clone());
        // INVARIANT: a total order (the key tells a customer's entries apart), so that the
        // order does not depend on the queue's.
        left.sort_by_cached_key(|p| {
            (
                p.send_at,
                id(p),
                p.moment,
                p.trigger_at,
                p.trigger_key.clone(),
            )
        });
        self.out.left_pending();
        for p in left {
            let moment = &self.moments[p.moment];
            let Some(customer) = self.customers.get(p.who) else {
                continue;
            };
            if from.is_none_or(|f| p.trigger_at >= f) {
                self.out.reached(p.send_at);
                let reason = format!(
                    "pending: due {}",
                    local_time(p.send_at, self.zone_of(customer))
                );
                self.out.entry(EntryView {
                    index: p.moment,
                    moment: &moment.id,
                    customer_id: &customer.id,
                    trigger_at: p.trigger_at,
                    due_at: p.due_at,
                    fate: None,
                    reason: &reason,
                    send_id: None,
                    trigger_key: &p.trigger_key,
                });
            }
        }
        self.out.finished();
        finish(&mut self);
        self.let_go_in_the_background();
        self.out_of_fuel
    }

    /// Frees the customers' state on a thread of its own: a large run's is hundreds of
    /// megabytes of small allocations, which took a part of its time to free, and nothing
    /// waits for it (when no thread can be had, it is freed here).
    fn let_go_in_the_background(&mut self) {
        let state = (
            std::mem::take(&mut self.customers),
            std::mem::take(&mut self.numbers),
            std::mem::take(&mut self.customer_ids),
            std::mem::take(&mut self.gated),
            std::mem::take(&mut self.shop_history),
            std::mem::take(&mut self.keyed),
        );
        let _ = std::thread::Builder::new()
            .name("moments-free".to_string())
            .spawn(move || drop(state));
    }

    /// A data record: traits change, or an event joins the history and fires triggers.
    fn apply(&mut self, record: Record) {
        match record.kind {
            RecordKind::Identify { traits } => {
                let Some(customer_id) = record.customer.filter(|c| self.owns(c)) else {
                    return;
                };
                let updates: Vec<(usize, Value)> = traits
                    .into_iter()
                    .filter_map(|(name, value)| {
                        let i = self.traits.position(name)?;
                        // A trait set to nothing falls back to its schema default.
                        let value = if value.is_null() {
                            self.traits.defaults[i].clone()
                        } else {
                            value
                        };
                        Some((i, value))
                    })
                    .collect();
                let zone_changed = self
                    .zone_trait
                    .is_some_and(|z| updates.iter().any(|(i, _)| *i == z));
                let who = self.know_customer(&customer_id);
                let customer = &mut self.customers[who];
                for (i, value) in updates {
                    if let Some(slot) = customer.traits.get_mut(i) {
                        if *slot != value || customer.changed[i].is_none() {
                            customer.changed[i] = Some(record.at);
                        }
                        *slot = value;
                    }
                }
                if zone_changed {
                    let zone = self.zone_from_traits(&self.customers[who].traits);
                    self.customers[who].zone = zone;
                    self.note_zone(zone);
                }
                self.schedule_date_triggers(who, record.at);
            }
            RecordKind::Event { event, properties } => {
                // Moved, not cloned: the record's counters stay on the reading thread's
                // cache lines until something here needs a second owner.
                let rec = EventRecord {
                    at: record.at,
                    id: record.id,
                    customer: record.customer,
                    properties,
                };
                let route = self.route(event);
                if let Some(shop) = route.shop {
                    for &i in &route.shop_keyed {
                        if let Some((spec, index)) = self.keyed.get_mut(i) {
                            index.add(spec, &rec, shop.keep);
                        }
                    }
                    if let Some(history) = self.shop_history.get_mut(shop.place) {
                        keep_appending(history, rec.kept(shop.whole), shop.keep);
                    }
                }
                match &rec.customer {
                    // Another engine's customer: only the shop's indexes above.
                    Some(customer_id) if !self.owns(customer_id) => {}
                    Some(customer_id) => {
                        let who = self.know_customer(customer_id);
                        // The fields are borrowed apart.
                        let Engine {
                            customers,
                            gated,
                            own_keyed,
                            tally_specs,
                            ..
                        } = &mut *self;
                        if let Some(customer) = customers.get_mut(who) {
                            // INVARIANT: events no expression reads are not kept (`keep`);
                            // with `keep` off (tracing) everything is.
                            if let Some(own) = route.own {
                                keep_appending(
                                    grown(&mut customer.history, own.place),
                                    rec.kept(own.whole),
                                    own.keep,
                                );
                            }
                            if let Some(bit) = route.gate {
                                if customer.gates & bit == 0 {
                                    customer.gates |= bit;
                                    if let Some((_, customers)) = gated.get_mut(event) {
                                        customers.insert(customer_id.clone(), who);
                                    }
                                }
                            }
                            for &i in &route.own_keyed {
                                if customer.keyed.len() <= i {
                                    customer.keyed.resize_with(i + 1, KeyIndex::usable);
                                }
                                let (spec, keep) = &own_keyed[i];
                                customer.keyed[i].add(spec, &rec, *keep);
                            }
                            if let Some(place) = route.tally {
                                if let Some(spec) = tally_specs.get(place) {
                                    grown(&mut customer.tallies, place).add(spec, &rec);
                                }
                            }
                        }
                        for &index in &route.moments {
                            self.trigger(index, who, rec.at, &rec.id, Some(&rec));
                        }
                    }
                    None => {
                        // A catalog event: every customer known so far is considered, or
                        // only those a moment's gate lets through; by customer, then moment.
                        let mut firings: Vec<(Id, usize, usize)> = Vec::new();
                        for &index in &route.moments {
                            let customers = self.considered(index);
                            firings.extend(customers.map(|(id, &who)| (id.clone(), index, who)));
                        }
                        firings.sort();
                        for (_, index, who) in firings {
                            self.trigger(index, who, rec.at, &rec.id, Some(&rec));
                        }
                    }
                }
            }
        }
    }

    /// Whether this engine decides for `customer_id` (see `share`).
    fn owns(&self, customer_id: &str) -> bool {
        self.share
            .is_none_or(|(part, parts)| partition(customer_id, parts) == part)
    }

    /// What to do with `event`, worked out once.
    fn route(&mut self, event: &'static str) -> Rc<Route> {
        // INVARIANT: a `'static` text never moves nor changes, so two at the same place with
        // the same length are the same text (the same text at two places makes two
        // entries, each right).
        let at = (event.as_ptr() as usize, event.len());
        if let Some(route) = self.routes.get(&at) {
            return route.clone();
        }
        let slot = self.events.position(event);
        let place = |places: &[Option<usize>]| slot.and_then(|s| places.get(s).copied().flatten());
        let filing = |place: usize, across: bool| match &self.keep {
            // Tracing: everything, whole, for ever.
            None => Filing {
                place,
                keep: None,
                whole: true,
            },
            Some(k) => {
                let kept = k.get(&(Arc::from(event), across));
                Filing {
                    place,
                    keep: kept.map(|k| k.keep),
                    whole: kept.is_some_and(|k| k.whole),
                }
            }
        };
        let route = Rc::new(Route {
            // INVARIANT: `Layout::own` has a place for the events `keep` keeps (all of
            // them with `keep` off), and `Layout::shop` for those of `across_events`.
            own: place(&self.layout.own).map(|p| filing(p, false)),
            shop: place(&self.layout.shop).map(|p| filing(p, true)),
            gate: self.gated.get(event).map(|(bit, _)| *bit),
            tally: place(&self.layout.tally),
            shop_keyed: (0..self.keyed.len())
                .filter(|&i| *self.keyed[i].0 .0 == *event)
                .collect(),
            own_keyed: (0..self.own_keyed.len())
                .filter(|&i| *self.own_keyed[i].0 .0 == *event)
                .collect(),
            moments: (0..self.moments.len())
                .filter(|&i| self.moments[i].fires_on(event))
                .collect(),
        });
        self.routes.insert(at, route.clone());
        route
    }

    /// The customers a catalog event considers for `moment`, in id order, with their
    /// numbers: those its gate lets through, or everyone.
    fn considered(&self, moment: usize) -> impl Iterator<Item = (&Id, &usize)> {
        let gated = self.moments[moment]
            .gate
            .as_ref()
            .and_then(|g| self.gated.get(g));
        match gated {
            Some((_, customers)) => customers.iter(),
            None => self.customer_ids.iter(),
        }
    }

    /// The customer with this id, when known.
    fn find(&self, id: &str) -> Option<&Customer> {
        self.numbers
            .get(id)
            .and_then(|&who| self.customers.get(who))
    }

    /// The number of the customer with this id. A customer seen for the first time is made
    /// known: the schema's defaults, the shop's zone.
    fn know_customer(&mut self, id: &Id) -> usize {
        if let Some(&who) = self.numbers.get(id) {
            return who;
        }
        self.note_zone(self.default_zone_of_new);
        let defaults = &self.traits.defaults;
        let who = self.customers.len();
        self.customer_ids.insert(id.clone(), who);
        self.customers.push(Customer {
            id: id.clone(),
            zone: self.default_zone_of_new,
            traits: defaults.clone(),
            changed: vec![None; defaults.len()],
            ..Customer::default()
        });
        self.numbers.insert(id.clone(), who);
        who
    }

    /// A trigger occurrence: evaluate `let` and `where` at its instant; an entry if it holds.
    fn trigger(
        &mut self,
        moment: usize,
        who: usize,
        at: DateTime<Utc>,
        trigger_key: &Id,
        trigger_event: Option<&EventRecord>,
    ) {
        let Some(customer) = self.customers.get(who) else {
            return;
        };
        let zone = self.zone_of(customer);
        let plan = &self.moments[moment];
        let histories = Histories {
            layout: &self.layout,
            own: &customer.history,
            tallies: &customer.tallies,
            tally_specs: &self.tally_specs,
            all: &self.shop_history,
            keyed: &self.keyed,
            own_keyed: &customer.keyed,
            own_specs: &self.own_keyed,
        };
        let fuel = Fuel::new(FUEL_PER_EVALUATION);
        let mut lets: Vec<Value> = Vec::with_capacity(plan.lets.len());
        for expr in &plan.lets {
            let cx = Context::new(
                at,
                zone,
                &customer.traits,
                trigger_event,
                &lets,
                &histories,
                &fuel,
            );
            let value = eval::eval(expr, &cx);
            lets.push(value);
        }
        let cx = Context::new(
            at,
            zone,
            &customer.traits,
            trigger_event,
            &lets,
            &histories,
            &fuel,
        );
        let passes = plan.conditions.iter().all(|c| eval::holds(c, &cx));
        if fuel.exhausted() {
            self.out_of_fuel += 1;
        }
        // When it would be due and sent: worked out only for an entry (or a trace).
        let timing = || {
            let due_at = schedule::due_at(at, plan.delay_seconds).unwrap_or(at);
            let send_at = match plan.quiet {
                Some((start, end)) => schedule::after_quiet_hours(due_at, start, end, zone),
                None => due_at,
            };
            (due_at, send_at)
        };
        if let Some(tracer) = self
            .tracer
            .as_ref()
            .filter(|t| t.wants(&plan.id, &customer.id))
        {
            let (due_at, send_at) = timing();
            let conditions = tracer.conditions[moment]
                .iter()
                .map(|c| ConditionTrace {
                    condition: c.text.clone(),
                    holds: eval::holds(&c.compiled, &cx),
                    values: c
                        .parts
                        .iter()
                        .map(|(name, expr)| NamedValue {
                            name: name.clone(),
                            value: shown(&eval::eval(expr, &cx)),
                        })
                        .collect(),
                })
                .collect();
            let step = TraceStep {
                moment: plan.id.to_string(),
                at,
                trigger: self.describe_trigger(moment, customer, trigger_event, zone),
                lets: plan
                    .let_names
                    .iter()
                    .zip(&lets)
                    .map(|(name, value)| NamedValue {
                        name: name.clone(),
                        value: shown(value),
                    })
                    .collect(),
                conditions,
                entered: passes,
                due_at: passes.then_some(due_at),
                send_at: passes.then_some(send_at),
            };
            if let Some(tracer) = self.tracer.as_mut() {
                tracer.steps.push(step);
                tracer
                    .last
                    .insert(moment, (at, trigger_event.cloned(), lets.clone()));
            }
        }
        if !passes {
            return;
        }
        let (due_at, send_at) = timing();
        let key = self.next_pending;
        self.next_pending += 1;
        let order = (
            send_at,
            Reverse(plan.priority),
            moment,
            customer.id.clone(),
            key,
        );
        let pending = Pending {
            moment,
            who,
            trigger_at: at,
            trigger_key: trigger_key.clone(),
            // Kept only for an entry: the event is shared with the reading thread, and a
            // count taken and given back for every trigger stalled on its cache line.
            trigger_event: trigger_event.cloned(),
            due_at,
            send_at,
            lets,
        };
        let due_now = send_at == at
            && self
                .due_now
                .first()
                .is_none_or(|(first, _)| first.0 == send_at);
        if due_now {
            self.due_now.push((order, pending));
        } else {
            let place = self.pending_store.insert((order, pending));
            self.pending.push(Reverse((send_at, key, place)));
        }
    }

    /// When the next decision is due: the first of the queue, or of `due_now`.
    fn next_decision(&self) -> Option<DateTime<Utc>> {
        let queued = self.pending.peek().map(|Reverse(p)| p.0);
        let now = self.due_now.first().map(|(order, _)| order.0);
        queued.into_iter().chain(now).min()
    }

    /// The entry's send instant has come: its one fate.
    fn decide(&mut self, p: Pending, from: Option<DateTime<Utc>>) {
        let plan = &self.moments[p.moment];
        let Some(customer) = self.customers.get(p.who) else {
            return;
        };
        let zone = self.zone_of(customer);
        // An entry triggered before `from` is decided (a later limit or cap counts it) but
        // not reported: no send id, reason or message is made for it.
        let reported = from.is_none_or(|f| p.trigger_at >= f);
        let histories = Histories {
            layout: &self.layout,
            own: &customer.history,
            tallies: &customer.tallies,
            tally_specs: &self.tally_specs,
            all: &self.shop_history,
            keyed: &self.keyed,
            own_keyed: &customer.keyed,
            own_specs: &self.own_keyed,
        };
        let fuel = Fuel::new(FUEL_PER_EVALUATION);
        let cx = Context::new(
            p.send_at,
            zone,
            &customer.traits,
            p.trigger_event.as_ref(),
            &p.lets,
            &histories,
            &fuel,
        );
        let mut fate = None;
        // Its room is kept from entry to entry.
        let mut reason = std::mem::take(&mut self.reason);
        reason.clear();
        // 1. cancelled: an `unless` event after the trigger, before the send.
        for Unless {
            event,
            slot,
            condition,
            within,
        } in &plan.unless
        {
            let events = histories.events(*slot, false);
            // Those after the trigger, found from the recent end (see `partition_from_back`).
            let after = eval::partition_from_back(events, |e| e.at <= p.trigger_at);
            let hit = events[after..].iter().find(|e| {
                e.at > p.trigger_at
                    && e.at < p.send_at
                    && within.is_none_or(|w| (e.at - p.trigger_at).num_seconds() <= w)
                    && condition.as_ref().is_none_or(|c| {
                        let inner = Context {
                            aggregated: Some(e),
                            ..Context::new(
                                e.at,
                                zone,
                                &customer.traits,
                                p.trigger_event.as_ref(),
                                &p.lets,
                                &histories,
                                &fuel,
                            )
                        };
                        eval::holds(c, &inner)
                    })
            });
            if let Some(e) = hit {
                fate = Some(Fate::Cancelled);
                if !reported {
                    break;
                }
                let source = self
                    .model
                    .schema
                    .events
                    .get(&**event)
                    .map_or(event.to_string(), |d| d.source.clone());
                reason.push_str("cancelled: ");
                reason.push_str(&source);
                reason.push_str(" at ");
                push_local_time(&mut reason, e.at, zone);
                reason.push_str(", ");
                reason.push_str(&elapsed((e.at - p.trigger_at).num_seconds()));
                reason.push_str(" after the trigger");
                break;
            }
        }
        // 2. inactive
        if fate.is_none() {
            if let Some((start, until)) = plan.active {
                if !schedule::is_active(p.trigger_at, start, until, zone) {
                    fate = Some(Fate::Inactive);
                    reason.push_str(&plan.reasons.inactive);
                }
            }
        }
        // 3. no_consent, at the send instant
        if fate.is_none() {
            if let Some(rule) = self.consent.get(&plan.channel) {
                let refused = !eval::holds(rule, &cx);
                if refused {
                    fate = Some(Fate::NoConsent);
                }
                if refused && reported {
                    use std::fmt::Write as _;
                    reason.push_str("no_consent: ");
                    reason.push_str(plan.channel.name());
                    reason.push_str(" consent not given at ");
                    push_local_time(&mut reason, p.send_at, zone);
                    let read = self
                        .consent_traits
                        .get(&plan.channel)
                        .map_or(&[][..], |r| r);
                    for (n, &i) in read.iter().enumerate() {
                        reason.push_str(if n == 0 { ": " } else { ", " });
                        reason.push_str(&self.traits.names[i]);
                        reason.push(' ');
                        match customer.traits.get(i).filter(|v| !v.is_null()) {
                            Some(Value::Text(text)) => reason.push_str(text),
                            Some(value) => {
                                let _ = write!(reason, "{value}");
                            }
                            None => reason.push_str("none"),
                        }
                        match customer.changed.get(i).copied().flatten() {
                            Some(t) => {
                                reason.push_str(" since ");
                                push_local_time(&mut reason, t, zone);
                            }
                            None => reason.push_str(" (never set)"),
                        }
                    }
                }
            }
        }
        // 4. limited
        if fate.is_none() {
            if let Some((count, per)) = plan.limit {
                // How many sends the window holds, and the latest.
                let in_window = per.map(|w| Recent::within(p.send_at, w));
                let (had, last) = customer
                    .moment_sends
                    .iter()
                    .filter(|(moment, t)| {
                        *moment == p.moment && in_window.is_none_or(|w| w.holds(*t))
                    })
                    .fold((0u64, None), |(n, _), (_, t)| (n + 1, Some(t)));
                let limited = had >= count;
                if limited {
                    fate = Some(Fate::Limited);
                }
                if limited && reported {
                    // The holdout counts too: a control entry stands for a message.
                    reason.push_str("limited: already had this moment at ");
                    if let Some(last) = last {
                        push_local_time(&mut reason, *last, zone);
                    }
                    reason.push_str(&plan.reasons.limit);
                }
            }
        }
        // 5. capped
        if fate.is_none() {
            if let Some((count, per)) = self.model.schema.defaults.cap {
                let window = per.seconds().min(i64::MAX as u64) as i64;
                let in_window = Recent::within(p.send_at, window);
                let recent = customer
                    .sends
                    .iter()
                    .filter(|t| in_window.holds(**t))
                    .count();
                let capped = recent as u64 >= count;
                if capped {
                    fate = Some(Fate::Capped);
                }
                if capped && reported {
                    match &self.capped_reason {
                        // A send is only ever made below the cap, so a capped entry's
                        // window holds the cap exactly: the reason is made once.
                        Some(text) if recent as u64 == count => reason.push_str(text),
                        _ => reason = capped_reason(recent, per, count),
                    }
                }
            }
        }
        // 6. control
        if fate.is_none() && schedule::in_holdout(&plan.id, &customer.id, plan.holdout_percent) {
            fate = Some(Fate::Control);
            if reported {
                reason.push_str(&plan.reasons.control);
            }
        }
        let fate = fate.unwrap_or(Fate::Sent);
        if fate == Fate::Sent && reported {
            reason.push_str("sent");
            if p.send_at != p.due_at {
                reason.push_str(": moved by quiet hours from ");
                push_local_time(&mut reason, p.due_at, zone);
                reason.push_str(" to ");
                push_local_time(&mut reason, p.send_at, zone);
            }
        }
        if reported {
            let mut send_id = None;
            if matches!(fate, Fate::Sent | Fate::Control) {
                let id = schedule::send_id_digits(&plan.id, &customer.id, &p.trigger_key);
                let mut texts = std::mem::take(&mut self.texts);
                self.render_into(p.moment, customer, &p, id.as_str(), &mut texts);
                self.out.send(SendView {
                    send_id: id.as_str(),
                    moment: &plan.id,
                    customer_id: &customer.id,
                    channel: plan.channel.name(),
                    group: if fate == Fate::Sent {
                        Group::Treatment
                    } else {
                        Group::Control
                    },
                    trigger_at: p.trigger_at,
                    sent_at: p.send_at,
                    message: MessageView::Fields(&plan.fields, &texts),
                });
                self.texts = texts;
                send_id = Some(id);
            }
            self.out.entry(EntryView {
                index: p.moment,
                moment: &plan.id,
                customer_id: &customer.id,
                trigger_at: p.trigger_at,
                due_at: p.due_at,
                fate: Some(fate),
                reason: &reason,
                send_id: send_id.as_ref().map(schedule::SendId::as_str),
                trigger_key: &p.trigger_key,
            });
        }
        self.reason = reason;
        // Only what a later limit or cap can still see is kept: sends within their windows.
        // INVARIANT: decisions come in time order, so a send older than a window now is
        // older than it at every later decision.
        let cap_window = self.model.schema.defaults.cap.map(|(_, per)| per.seconds());
        let limit_window = plan.limit.map(|(_, per)| per);
        if let Some(c) = self.customers.get_mut(p.who) {
            let window_from = |seconds: i64| schedule::back(p.send_at, seconds);
            if matches!(fate, Fate::Sent | Fate::Control) && limit_window.is_some() {
                // This moment's sends before its window go; the others' go with theirs.
                if let Some(from) = limit_window.flatten().and_then(window_from) {
                    c.moment_sends
                        .retain(|(moment, t)| *moment != p.moment || *t >= from);
                }
                c.moment_sends.push((p.moment, p.send_at));
            }
            if fate == Fate::Sent && cap_window.is_some() {
                c.sends.push(p.send_at);
                let seconds = cap_window.map(|s| s.min(i64::MAX as u64) as i64);
                if let Some(from) = seconds.and_then(window_from) {
                    let stale = eval::stale_half(&c.sends, |t| *t, from);
                    if stale > 0 {
                        c.sends.drain(..stale);
                    }
                }
            }
        }
    }

    /// The message of `moment` rendered for `customer_id` (see [`Preview`]).
    fn preview(
        &self,
        moment: usize,
        customer_id: &Id,
        last: Option<&Occurrence>,
    ) -> Option<Preview> {
        let who = *self.numbers.get(customer_id)?;
        let customer = self.customers.get(who)?;
        let plan = &self.moments[moment];
        let zone = self.zone_of(customer);
        let (trigger_at, trigger_event, lets) = match last {
            Some((at, event, lets)) => (Some(*at), event.clone(), lets.clone()),
            None => (None, None, vec![Value::Null; plan.let_names.len()]),
        };
        let at = trigger_at.unwrap_or(DateTime::<Utc>::MIN_UTC);
        let trigger_key = trigger_event
            .as_ref()
            .map_or_else(|| Id::from(schedule::instant_key(at)), |e| e.id.clone());
        let send_id = schedule::send_id(&plan.id, customer_id, &trigger_key);
        let pending = Pending {
            moment,
            who,
            trigger_at: at,
            trigger_key,
            trigger_event,
            due_at: at,
            send_at: at,
            lets,
        };
        let fields = self.render(moment, customer, &pending, &send_id);
        // The variables the templates read, resolved as the templates see them.
        let names = plan.template_variables.clone();
        let show = |v: Option<&Value>| v.map_or_else(|| "none".to_string(), shown);
        let variables = names
            .into_iter()
            .map(|name| {
                let mut segments = name.split('.');
                let first = segments.next().unwrap_or_default();
                let second = segments.next();
                let value = match (first, second) {
                    ("customer", Some(t)) => {
                        show(self.traits.position(t).and_then(|i| customer.traits.get(i)))
                    }
                    ("event", Some(p)) => show(
                        pending
                            .trigger_event
                            .as_ref()
                            .and_then(|e| e.properties.get(p)),
                    ),
                    ("moment", Some("id")) => format!("{:?}", &*plan.id),
                    ("moment", Some("title")) => format!("{:?}", plan.title),
                    ("send", Some("id")) => format!("{send_id:?}"),
                    (name, _) => show(
                        plan.let_names
                            .iter()
                            .position(|l| l == name)
                            .and_then(|i| pending.lets.get(i)),
                    ),
                };
                NamedValue { name, value }
            })
            .collect();
        Some(Preview {
            moment: plan.id.to_string(),
            customer: customer_id.to_string(),
            channel: plan.channel.name().to_string(),
            trigger_at,
            trigger: pending
                .trigger_event
                .as_ref()
                .map(|_| {
                    self.describe_trigger(moment, customer, pending.trigger_event.as_ref(), zone)
                })
                .or_else(|| {
                    trigger_at.map(|_| self.describe_trigger(moment, customer, None, zone))
                }),
            fields,
            variables,
        })
    }

    /// Every field of the message, rendered with the customer as of the send: a plain
    /// template straight from the values, the others (and any plain one that meets a value
    /// it does not print) by minijinja.
    fn render(
        &self,
        moment: usize,
        customer: &Customer,
        p: &Pending,
        send_id: &str,
    ) -> BTreeMap<String, String> {
        let mut texts = Vec::new();
        self.render_into(moment, customer, p, send_id, &mut texts);
        self.moments[moment]
            .fields
            .iter()
            .cloned()
            .zip(texts)
            .collect()
    }

    /// Each field of the message of `moment`, rendered into `texts` (in the order of the
    /// moment's fields), whose room is kept from message to message.
    fn render_into(
        &self,
        moment: usize,
        customer: &Customer,
        p: &Pending,
        send_id: &str,
        texts: &mut Vec<String>,
    ) {
        let plan = &self.moments[moment];
        let mut context = None;
        let mut by_minijinja = |name: &str| {
            let context =
                context.get_or_insert_with(|| self.template_context(plan, customer, p, send_id));
            self.templates
                .get_template(name)
                .and_then(|t| t.render(&*context))
                .unwrap_or_default()
        };
        texts.resize_with(plan.fields.len(), String::new);
        for ((text, name), plain) in texts.iter_mut().zip(&plan.template_names).zip(&plan.plain) {
            text.clear();
            let quick = plain
                .as_deref()
                .is_some_and(|pieces| render_plain(pieces, customer, p, send_id, text).is_some());
            if quick {
                // Rendered again only in debug builds.
                debug_assert_eq!(*text, by_minijinja(name), "template {name}");
            } else {
                *text = by_minijinja(name);
            }
        }
    }

    /// What a message's templates see: the customer as of the send, the trigger event, the
    /// `let`s, the moment and the send.
    fn template_context(
        &self,
        plan: &MomentPlan,
        customer: &Customer,
        p: &Pending,
        send_id: &str,
    ) -> minijinja::Value {
        // Keys are `minijinja::Value`s: names up to 22 bytes are kept inline, so building
        // the maps allocates little beyond the maps themselves.
        type Map = BTreeMap<minijinja::Value, minijinja::Value>;
        let key = |name: &str| minijinja::Value::from(name);
        let trait_value = |i: usize| {
            let value = customer.traits.get(i).filter(|v| !v.is_null())?;
            Some((key(&self.traits.names[i]), to_template(value)))
        };
        let traits: Map = match &plan.template_traits {
            Some(read) => read.iter().filter_map(|&i| trait_value(i)).collect(),
            None => (0..customer.traits.len()).filter_map(trait_value).collect(),
        };
        let event = p.trigger_event.as_ref().map(|event| {
            let props: Map = match &plan.template_event {
                Some(read) => read
                    .iter()
                    .filter_map(|k| Some((key(k), to_template(event.properties.get(k)?))))
                    .collect(),
                None => event
                    .properties
                    .iter()
                    .map(|(k, v)| (key(k), to_template(v)))
                    .collect(),
            };
            minijinja::Value::from(props)
        });
        let send: Map = [(key("id"), minijinja::Value::from(send_id))].into();
        minijinja::Value::from_object(MessageContext {
            customer: minijinja::Value::from(traits),
            event,
            let_names: plan.let_names.clone(),
            lets: p.lets.iter().map(to_template).collect(),
            moment: plan.moment_record.clone(),
            send: minijinja::Value::from(send),
        })
    }

    /// After an identify: (re)schedule anniversary and date-offset triggers.
    fn schedule_date_triggers(&mut self, who: usize, at: DateTime<Utc>) {
        let Some(customer) = self.customers.get(who) else {
            return;
        };
        let customer_id = &customer.id;
        let zone = self.zone_of(customer);
        let mut timers = Vec::new();
        for (index, plan) in self.moments.iter().enumerate() {
            let (date_trait, instant) = match &plan.source {
                TriggerSource::Anniversary {
                    date_trait,
                    at: time,
                } => {
                    let Some(i) = self.traits.position(date_trait) else {
                        continue;
                    };
                    let date = match customer.traits.get(i) {
                        Some(Value::Date(d)) => *d,
                        Some(Value::DateTime(t)) => schedule::local_date(*t, zone),
                        _ => continue,
                    };
                    let until = at + chrono::Duration::days(400);
                    let next = schedule::anniversaries(date, *time, zone, at, until)
                        .into_iter()
                        .next();
                    (date_trait, next)
                }
                TriggerSource::Offset {
                    offset,
                    direction,
                    date_trait,
                    at: time,
                } => {
                    let Some(i) = self.traits.position(date_trait) else {
                        continue;
                    };
                    let base = match customer.traits.get(i) {
                        Some(Value::Date(d)) => schedule::OffsetBase::Date(*d),
                        Some(Value::DateTime(t)) => schedule::OffsetBase::DateTime(*t),
                        _ => continue,
                    };
                    let instant = schedule::offset_instant(base, *offset, *direction, *time, zone)
                        .filter(|t| *t > at);
                    (date_trait, instant)
                }
                _ => continue,
            };
            let Some(instant) = instant else { continue };
            let value = self
                .traits
                .position(date_trait)
                .and_then(|i| customer.traits.get(i))
                .map(|v| v.to_string())
                .unwrap_or_default();
            timers.push(Reverse((instant, index, customer_id.clone(), value)));
        }
        for t in timers {
            // INVARIANT: `timer_keys` holds exactly the (instant, moment, customer) of the
            // timers queued, so a timer is queued once without scanning the queue.
            let key = (t.0 .0, t.0 .1, t.0 .2.clone());
            if self.timer_keys.insert(key) {
                self.timers.push(t);
            }
        }
    }

    /// A date trigger's instant: fire if the trait still holds the value it was scheduled for.
    fn fire_timer(&mut self, at: DateTime<Utc>, moment: usize, customer_id: Id, value: String) {
        let date_trait = match &self.moments[moment].source {
            TriggerSource::Anniversary { date_trait, .. }
            | TriggerSource::Offset { date_trait, .. } => date_trait.clone(),
            _ => return,
        };
        let Some(who) = self.numbers.get(&customer_id).copied() else {
            return;
        };
        let still = self
            .customers
            .get(who)
            .and_then(|c| {
                self.traits
                    .position(&date_trait)
                    .and_then(|i| c.traits.get(i))
            })
            .is_some_and(|v| v.to_string() == value);
        if still {
            self.trigger(moment, who, at, &Id::from(schedule::instant_key(at)), None);
            if matches!(
                self.moments[moment].source,
                TriggerSource::Anniversary { .. }
            ) {
                // Next year's.
                self.schedule_date_triggers(who, at);
            }
        }
    }

    /// `every "CRON"` instants in (after, until], in each customer's zone (or the one named).
    fn fire_schedules(&mut self, after: Option<DateTime<Utc>>, until: DateTime<Utc>) {
        let Some(after) = after else { return };
        if until <= after {
            return;
        }
        for index in 0..self.moments.len() {
            // Nothing to do before the next instant of the schedule in any zone a customer
            // is in; only then group the customers by zone.
            if self.next_fire[index].is_some_and(|next| next > until) {
                continue;
            }
            let TriggerSource::Every { cron, zone } = &self.moments[index].source else {
                continue;
            };
            let (cron, fixed_zone) = (cron.clone(), *zone);
            let zones: Vec<Tz> = match fixed_zone {
                Some(z) => vec![z],
                None => self.zones.values().copied().collect(),
            };
            let next = |from: DateTime<Utc>| {
                zones
                    .iter()
                    .filter_map(|z| schedule::cron_iter(&cron, *z, from).next())
                    .min()
            };
            if next(after).is_none_or(|n| n > until) {
                self.next_fire[index] = Some(next(until).unwrap_or(DateTime::<Utc>::MAX_UTC));
                continue;
            }
            self.next_fire[index] = Some(next(until).unwrap_or(DateTime::<Utc>::MAX_UTC));
            // Customers grouped by zone, sorted for determinism.
            // A zone's customers: (id, number).
            type Customers = Vec<(Id, usize)>;
            let mut by_zone: BTreeMap<String, (Tz, Customers)> = BTreeMap::new();
            let gate = self.moments[index].gate.as_ref();
            let gated = gate.and_then(|g| self.gated.get(g));
            for (who, c) in self.customers.iter().enumerate() {
                if gated.is_some_and(|(bit, _)| c.gates & bit == 0) {
                    continue;
                }
                let zone = fixed_zone.unwrap_or_else(|| self.zone_of(c));
                by_zone
                    .entry(zone.name().to_string())
                    .or_insert((zone, Vec::new()))
                    .1
                    .push((c.id.clone(), who));
            }
            // By instant, then customer id (ids are unique).
            let mut firings: Vec<(DateTime<Utc>, Id, usize)> = Vec::new();
            for (_, (zone, mut ids)) in by_zone {
                ids.sort();
                for instant in schedule::cron_instants(&cron, zone, after, until) {
                    firings.extend(ids.iter().map(|(id, who)| (instant, id.clone(), *who)));
                }
            }
            firings.sort();
            for (instant, _, who) in firings {
                self.trigger(
                    index,
                    who,
                    instant,
                    &Id::from(schedule::instant_key(instant)),
                    None,
                );
            }
        }
    }
}

/// The traits an expression reads.
fn collect_traits(expr: &CExpr, into: &mut Vec<usize>) {
    expr.walk(&mut |e| {
        if let CExpr::Trait(i, _) = e {
            into.push(*i);
        }
    });
}

/// How long the engine keeps events of one kind (a customer's own, or the shop's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Read back over at most this many seconds.
    For(i64),
    /// Read without a window (`sum(order_completed.total)`).
    Forever,
}

impl Keep {
    /// The oldest instant still read at `now`; `None` when everything is.
    fn from(self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Keep::For(seconds) => schedule::back(now, seconds),
            Keep::Forever => None,
        }
    }

    fn max(self, other: Keep) -> Keep {
        match (self, other) {
            (Keep::For(a), Keep::For(b)) => Keep::For(a.max(b)),
            _ => Keep::Forever,
        }
    }
}

/// What the expressions of the campaigns read, gathered once at the start: how long each
/// kind of event is kept, what is tallied, what is indexed by key, what the shop keeps.
#[derive(Default)]
struct Reads {
    /// (event, across customers) → how far back events are read, and whether more than
    /// their instants.
    keep: HashMap<(Arc<str>, bool), Kept>,
    /// The plain aggregates' tallies, by event.
    tally_specs: FxMap<Arc<str>, TallySpec>,
    /// The shop's indexes by key (`across customers`).
    keyed: Vec<eval::KeyedSpec>,
    /// The customers' own indexes by key, and how long each keeps its instants.
    own_keyed: Vec<(eval::KeyedSpec, Option<Keep>)>,
    /// The events some aggregate reads `across customers`.
    across: Vec<Arc<str>>,
}

/// How the events of one kind are kept in a history.
#[derive(Debug, Clone, Copy)]
struct Kept {
    keep: Keep,
    /// With their properties: something reads more of them than their instants (an
    /// aggregate's condition or field, an `unless … where`).
    whole: bool,
}

impl Reads {
    /// `event`'s kept events are read back over `keep`, and beyond their instants when
    /// `whole`.
    fn keep(&mut self, event: &Arc<str>, across_customers: bool, keep: Keep, whole: bool) {
        let kept = self
            .keep
            .entry((event.clone(), across_customers))
            .or_insert(Kept { keep, whole });
        kept.keep = kept.keep.max(keep);
        kept.whole |= whole;
    }

    /// What each aggregate of `expr` reads: an index by key when its condition has the
    /// shape for one, a tally for a plain one, else the events themselves.
    fn add(&mut self, expr: &CExpr) {
        expr.walk(&mut |e| {
            let CExpr::Aggregate(a) = e else { return };
            let keep = a.window.map_or(Keep::Forever, Keep::For);
            if a.across_customers {
                self.across.push(a.event.clone());
            }
            match &a.keyed {
                Some(k) if a.across_customers => self.keyed.push(k.spec.clone()),
                // Read from the customer's index by key, not from kept events.
                Some(k) => {
                    match self.own_keyed.iter_mut().find(|(s, _)| *s == k.spec) {
                        Some((_, slot)) => *slot = slot.map(|k| k.max(keep)),
                        None => self.own_keyed.push((k.spec.clone(), Some(keep))),
                    }
                    return;
                }
                None => {}
            }
            if a.is_plain() {
                let spec = self.tally_specs.entry(a.event.clone()).or_default();
                spec.add_read(a);
                return;
            }
            self.keep(&a.event, a.across_customers, keep, true);
        });
    }
}

/// How far `every` schedules have fired: every schedule instant up to this one.
#[derive(Debug, Clone, Copy)]
enum ScheduleCursor {
    /// Nothing yet: the first instant only sets the cursor.
    Start,
    /// Up to this instant, itself included.
    At(DateTime<Utc>),
    /// Up to the last instant before this one (a nanosecond earlier), which is worked out
    /// only when a schedule fires.
    JustBefore(DateTime<Utc>),
}

impl ScheduleCursor {
    fn instant(self) -> Option<DateTime<Utc>> {
        match self {
            ScheduleCursor::Start => None,
            ScheduleCursor::At(t) => Some(t),
            ScheduleCursor::JustBefore(t) => Some(schedule::just_before(t)),
        }
    }

    /// Whether the cursor is before the last instant before `instant` (or at the start).
    fn is_before(self, instant: DateTime<Utc>) -> bool {
        match self {
            ScheduleCursor::Start => true,
            // The instant a nanosecond before each keeps their order.
            ScheduleCursor::JustBefore(t) => t < instant,
            ScheduleCursor::At(t) => t < schedule::just_before(instant),
        }
    }
}

/// `items[place]`, made (with any missing before it) when there are fewer.
fn grown<V: Default>(items: &mut Vec<V>, place: usize) -> &mut V {
    if items.len() <= place {
        items.resize_with(place + 1, V::default);
    }
    &mut items[place]
}

/// Append `event` to a history, and forget what is older than `keep` allows, once it is at
/// least half of the history, looked at when the history is full
/// (see `eval::stale_when_full`).
fn keep_appending(history: &mut Vec<EventRecord>, event: EventRecord, keep: Option<Keep>) {
    let stale = eval::stale_when_full(
        history,
        history.capacity(),
        |e| e.at,
        || keep.and_then(|k| k.from(event.at)),
    );
    if stale > 0 {
        history.drain(..stale);
    }
    history.push(event);
}

/// Everyone's events of one kind by key: the instants, oldest first, of the events whose
/// path holds each key.
#[derive(Default)]
struct KeyIndex {
    /// False once an event's path held something the index cannot stand for (a text where
    /// a list was expected, a list where one value was): aggregates then scan.
    usable: bool,
    /// Two bits for each key held, taken from its hash ([`KeyIndex::bits`]): a key whose
    /// two bits are not both set is not held, which is known without reading the table.
    /// Most keys looked up in a customer's own index are not there (she has not bought
    /// the product she is looking at), and the table is seldom in the cache.
    filter: u128,
    /// Keys inline when short (a product id), and a key's first instants beside it: a
    /// lookup reads the table and nothing else for most keys.
    times: FxMap<Id, KeyTimes>,
}

/// The instants of one key in a [`KeyIndex`].
type KeyTimes = smallvec::SmallVec<[DateTime<Utc>; 2]>;

impl KeyIndex {
    fn usable() -> KeyIndex {
        KeyIndex {
            usable: true,
            ..KeyIndex::default()
        }
    }

    /// The bits of `key` in `filter`: two of 128, from its hash.
    fn bits(key: &str) -> u128 {
        use std::hash::BuildHasher;
        let hash = crate::fx::FxBuild::default().hash_one(key);
        (1u128 << (hash & 127)) | (1u128 << ((hash >> 7) & 127))
    }

    /// The instants of `key`, oldest first (none when it is not held).
    fn times_of(&self, key: &str) -> &[DateTime<Utc>] {
        let bits = KeyIndex::bits(key);
        if self.filter & bits != bits {
            return &[];
        }
        self.times.get(key).map_or(&[], |t| t.as_slice())
    }

    fn add(&mut self, spec: &eval::KeyedSpec, event: &EventRecord, keep: Option<Keep>) {
        if !self.usable {
            return;
        }
        let (_, path, list) = spec;
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let value = event.properties.get(first).unwrap_or(&Value::Null);
        let projected = eval::Projected::of(value, rest);
        let mut keys: smallvec::SmallVec<[Id; 4]> = smallvec::SmallVec::new();
        let mut key = String::new();
        let fits = match (&projected, list) {
            (eval::Projected::One(Value::Null), true) => true,
            (_, true) => match projected.items() {
                Some(items) => {
                    for item in items {
                        if eval::write_key(item, &mut key) && !keys.iter().any(|k| *k == key) {
                            keys.push(Id::from(key.as_str()));
                        }
                    }
                    true
                }
                None => false,
            },
            (eval::Projected::One(one), false) => {
                let fits = eval::write_key(one, &mut key);
                keys.push(Id::from(key.as_str()));
                fits
            }
            (eval::Projected::Each(..), false) => false,
        };
        if !fits {
            self.usable = false;
            self.times.clear();
            self.filter = 0;
            return;
        }
        for key in keys {
            self.filter |= KeyIndex::bits(&key);
            let times = self.times.entry(key).or_default();
            let stale = eval::stale_when_full(
                times,
                times.capacity(),
                |t| *t,
                || keep.and_then(|k| k.from(event.at)),
            );
            if stale > 0 {
                times.drain(..stale);
            }
            times.push(event.at);
        }
    }
}

/// A piece of a plain message template, its lookup bound to where the engine keeps the
/// value (see `plain_template`).
enum Plain {
    Text(String),
    Lookup {
        /// The `let`s of the lookup's name, last first: the first that is not `none` hides
        /// `from`, as in `MessageContext::get`.
        lets: Vec<usize>,
        /// The lookup reads a field of its value (`name.field`).
        field: bool,
        from: PlainSource,
        /// What an undefined value prints.
        default: String,
    },
}

/// Where a plain lookup's value is when no `let` hides it.
enum PlainSource {
    Trait(usize),
    EventProperty(Arc<str>),
    SendId,
    /// `moment.id`, `moment.title`.
    Text(String),
    Undefined,
    /// Only minijinja knows: a whole record, or a name that is not the engine's.
    Template,
}

fn bind_plain(
    piece: plain_template::Piece,
    let_names: &[String],
    traits: &TraitIndex,
    moment: &crate::model::Moment,
) -> Plain {
    let lookup = match piece {
        plain_template::Piece::Text(text) => return Plain::Text(text),
        plain_template::Piece::Lookup(lookup) => lookup,
    };
    let root = lookup.root.as_str();
    let field = lookup.field.as_deref();
    // `send` and `moment` come before the `let`s; `event` and `customer` after them.
    let hidden_by_lets = !matches!(root, "send" | "moment");
    let lets = if hidden_by_lets {
        (0..let_names.len())
            .rev()
            .filter(|&i| let_names[i] == root)
            .collect()
    } else {
        Vec::new()
    };
    let from = match (root, field) {
        ("send", Some("id")) => PlainSource::SendId,
        ("moment", Some("id")) => PlainSource::Text(moment.id.clone()),
        ("moment", Some("title")) => PlainSource::Text(moment.title.clone()),
        ("send" | "moment", Some(_)) => PlainSource::Undefined,
        ("customer", Some(name)) => traits
            .position(name)
            .map_or(PlainSource::Undefined, PlainSource::Trait),
        ("event", Some(name)) => PlainSource::EventProperty(Arc::from(name)),
        // A whole record; a `let` that is `none` (the name may be one of minijinja's
        // own, `range`); a name the engine does not have.
        _ => PlainSource::Template,
    };
    Plain::Lookup {
        lets,
        field: field.is_some(),
        from,
        default: lookup.default.unwrap_or_default(),
    }
}

/// A plain template rendered from the engine's values at the end of `out`; `None` when
/// minijinja must render it after all.
fn render_plain(
    pieces: &[Plain],
    customer: &Customer,
    p: &Pending,
    send_id: &str,
    out: &mut String,
) -> Option<()> {
    for piece in pieces {
        let (lets, field, from, default) = match piece {
            Plain::Text(text) => {
                out.push_str(text);
                continue;
            }
            Plain::Lookup {
                lets,
                field,
                from,
                default,
            } => (lets, *field, from, default),
        };
        let by_let = lets
            .iter()
            .find_map(|&i| p.lets.get(i).filter(|v| !v.is_null()));
        let value = match (by_let, from) {
            // A field of a `let`'s value.
            (Some(_), _) if field => return None,
            (Some(value), _) => Some(value),
            (None, PlainSource::Trait(i)) => customer.traits.get(*i).filter(|v| !v.is_null()),
            (None, PlainSource::EventProperty(name)) => {
                p.trigger_event.as_ref()?.properties.get(name)
            }
            (None, PlainSource::SendId) => {
                out.push_str(send_id);
                continue;
            }
            (None, PlainSource::Text(text)) => {
                out.push_str(text);
                continue;
            }
            (None, PlainSource::Undefined) => None,
            (None, PlainSource::Template) => return None,
        };
        match value {
            Some(value) => plain_template::write_value(out, value).then_some(())?,
            None => out.push_str(default),
        }
    }
    Some(())
}

fn to_template(value: &Value) -> minijinja::Value {
    match value {
        Value::Null => minijinja::Value::UNDEFINED,
        Value::Bool(b) => minijinja::Value::from(*b),
        Value::Int(n) => minijinja::Value::from(*n),
        Value::Number(n) => minijinja::Value::from(*n),
        Value::List(items) => {
            minijinja::Value::from(items.iter().map(to_template).collect::<Vec<_>>())
        }
        Value::Record(fields) => minijinja::Value::from(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), to_template(v)))
                .collect::<BTreeMap<_, _>>(),
        ),
        // Copied; minijinja too holds short texts inline.
        Value::Text(text) => minijinja::Value::from(text.as_str()),
        other => minijinja::Value::from(other.to_string()),
    }
}

/// What a message's templates read: `customer`, `event`, the `let`s, `moment` and `send`,
/// found by name when a template reads them instead of put in a map for each message. A
/// later name hides an earlier one, in that order; a `let` that is `none` hides nothing.
#[derive(Debug)]
struct MessageContext {
    customer: minijinja::Value,
    /// `None` for a trigger without an event.
    event: Option<minijinja::Value>,
    let_names: Arc<[String]>,
    /// By place in `let_names`; undefined for `none`.
    lets: Vec<minijinja::Value>,
    moment: minijinja::Value,
    send: minijinja::Value,
}

impl MessageContext {
    fn get(&self, name: &str) -> Option<&minijinja::Value> {
        match name {
            "send" => return Some(&self.send),
            "moment" => return Some(&self.moment),
            _ => {}
        }
        let mut lets = self.let_names.iter().zip(&self.lets).rev();
        if let Some((_, value)) = lets.find(|(n, v)| n.as_str() == name && !v.is_undefined()) {
            return Some(value);
        }
        match name {
            "event" => self.event.as_ref(),
            "customer" => Some(&self.customer),
            _ => None,
        }
    }
}

impl minijinja::value::Object for MessageContext {
    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        self.get(key.as_str()?).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        let mut names: Vec<&str> = ["customer", "event", "moment", "send"]
            .into_iter()
            .chain(self.let_names.iter().map(String::as_str))
            .filter(|name| self.get(name).is_some())
            .collect();
        names.sort_unstable();
        names.dedup();
        minijinja::value::Enumerator::Values(
            names.into_iter().map(minijinja::Value::from).collect(),
        )
    }
}

/// A value as `explain` and `preview` show it: texts quoted, `none` for missing.
fn shown(value: &Value) -> String {
    match value {
        Value::Null => "none".to_string(),
        Value::Text(t) => format!("{t:?}"),
        other => other.to_string(),
    }
}

/// `18 Nov 10:23` in the customer's zone.
pub(crate) fn local_time(at: DateTime<Utc>, zone: Tz) -> String {
    let mut text = String::with_capacity(12);
    push_local_time(&mut text, at, zone);
    text
}

/// [`local_time`], written at the end of `text`.
fn push_local_time(text: &mut String, at: DateTime<Utc>, zone: Tz) {
    use chrono::{Datelike, Timelike};
    // chrono's `%-d %b %H:%M`, without parsing the pattern each time.
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // The local date and time worked out once, not per field.
    let local = at.with_timezone(&zone).naive_local();
    let (day, minutes) = (local.day(), local.num_seconds_from_midnight() / 60);
    if day >= 10 {
        text.push(char::from(b'0' + (day / 10 % 10) as u8));
    }
    text.push(char::from(b'0' + (day % 10) as u8));
    text.push(' ');
    text.push_str(MONTHS[local.month0() as usize % 12]);
    text.push(' ');
    for n in [minutes / 60, minutes % 60] {
        text.push(char::from(b'0' + (n / 10 % 10) as u8));
        text.push(char::from(b'0' + (n % 10) as u8));
        text.push(':');
    }
    text.pop();
}

/// `1h`, `7d`, `90m`: a duration as the language writes it.
fn human_duration(seconds: i64) -> String {
    let s = seconds.abs();
    if s % 604_800 == 0 && s > 0 {
        format!("{}w", s / 604_800)
    } else if s % 86_400 == 0 && s > 0 {
        format!("{}d", s / 86_400)
    } else if s % 3_600 == 0 && s > 0 {
        format!("{}h", s / 3_600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// An elapsed time as people say it: `33s`, `5m 47s`, `2h 5m`, `3d 4h`.
fn elapsed(seconds: i64) -> String {
    let s = seconds.abs();
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3_600, s % 3_600 / 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) if sec == 0 => format!("{m}m"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h {m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d {h}h"),
    }
}

/// The instants `t` with `(at - t).num_seconds() < seconds` (whole seconds, cut toward
/// zero), as one comparison with a bound worked out once rather than a subtraction of
/// dates per instant.
#[derive(Debug, Clone, Copy)]
enum Recent {
    /// Every instant (the bound is before the first instant there can be).
    All,
    /// The instants after this one.
    After(DateTime<Utc>),
    /// This instant and those after it.
    From(DateTime<Utc>),
    /// None (the bound is past the last instant there can be).
    None,
}

impl Recent {
    fn within(at: DateTime<Utc>, seconds: i64) -> Recent {
        if seconds >= 1 {
            // A difference under `seconds` cuts to at most `seconds - 1`; one of `seconds`
            // or more, to `seconds` or more.
            schedule::back(at, seconds).map_or(Recent::All, Recent::After)
        } else {
            // Cut toward zero, a difference is under `seconds` (0 or less) only when it is
            // `seconds - 1` or less.
            1i64.checked_sub(seconds)
                .and_then(|s| schedule::shifted(at, s))
                .map_or(Recent::None, Recent::From)
        }
    }

    fn holds(self, t: DateTime<Utc>) -> bool {
        match self {
            Recent::All => true,
            Recent::After(bound) => t > bound,
            Recent::From(bound) => t >= bound,
            Recent::None => false,
        }
    }
}

#[cfg(test)]
mod recent_tests {
    use super::Recent;
    use chrono::{DateTime, TimeZone, Utc};

    #[test]
    fn a_bound_worked_out_once_agrees_with_whole_seconds_between() {
        let instants = |base: DateTime<Utc>| {
            (-24..=24).map(move |quarter| base + chrono::Duration::milliseconds(quarter * 250))
        };
        let bases = [
            Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap(),
            Utc.timestamp_opt(1_700_000_000, 500_000_000).unwrap(),
            Utc.timestamp_opt(-1, 999_999_999).unwrap(),
        ];
        let windows = [i64::MIN, -3, -1, 0, 1, 2, 3, 86_400, i64::MAX];
        for at in bases {
            for t in instants(at) {
                for seconds in windows {
                    assert_eq!(
                        Recent::within(at, seconds).holds(t),
                        (at - t).num_seconds() < seconds,
                        "at {at}, t {t}, {seconds} s"
                    );
                }
            }
        }
        // Bounds past the instants there can be.
        let first = DateTime::<Utc>::MIN_UTC;
        assert!(Recent::within(first, 10).holds(first));
        assert!(!Recent::within(DateTime::<Utc>::MAX_UTC, -10).holds(first));
    }
}
