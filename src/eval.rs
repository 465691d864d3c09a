//! Compiled expressions and their evaluation.
//!
//! [`compile`] turns a checked expression (names known to resolve) into a [`CExpr`] once:
//! traits become indexes, literals become [`Value`]s, percentages become fractions, function
//! names become [`Func`]. [`eval`] then runs it against one customer's traits, the trigger
//! event, the customer's history and the clock, with no name resolution per event.
//!
//! Evaluation never fails. A missing value makes a comparison false (`none` equals only
//! `none`); division by zero gives `none`. Every evaluation has a budget of work ([`Fuel`]),
//! so that a campaign cannot hang a run: when the budget is spent, the result is `none` and
//! the caller reports it.

use std::cell::Cell;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};

use crate::ast::{self, AggregateFn, BinaryOp, ExprKind, Literal, UnaryOp};
use crate::model::Schema;
use crate::value::{Id, Properties, Value};

/// A compiled expression.
#[derive(Debug, Clone)]
pub enum CExpr {
    Lit(Value),
    List(Vec<CExpr>),
    /// `customer.NAME…`: the trait's index in [`TraitIndex`], then properties of a record.
    Trait(usize, Vec<Arc<str>>),
    /// `event.NAME…`: a property of the trigger event.
    TriggerProp(Arc<str>, Vec<Arc<str>>),
    /// `order_completed.NAME…` inside an aggregate (or `unless`) condition: the event at hand.
    AggProp(Arc<str>, Vec<Arc<str>>),
    /// A `let`, by position.
    Let(usize),
    Now,
    SendAt,
    SendId,
    Not(Box<CExpr>),
    Neg(Box<CExpr>),
    Binary(BinaryOp, Box<CExpr>, Box<CExpr>),
    Call(Func, Vec<CExpr>),
    Aggregate(Box<CAggregate>),
}

impl CExpr {
    /// Visit this expression and every expression inside it, aggregate conditions included.
    pub fn walk(&self, f: &mut impl FnMut(&CExpr)) {
        f(self);
        match self {
            CExpr::Aggregate(a) => {
                if let Some(c) = &a.condition {
                    c.walk(f);
                }
            }
            CExpr::List(items) | CExpr::Call(_, items) => items.iter().for_each(|i| i.walk(f)),
            CExpr::Not(i) | CExpr::Neg(i) => i.walk(f),
            CExpr::Binary(_, l, r) => {
                l.walk(f);
                r.walk(f);
            }
            _ => {}
        }
    }

    /// Sets where each aggregate's index by key is: its place in `shop` (across customers)
    /// or in `own`, the specs of the indexes the engine keeps; `usize::MAX` for none.
    pub fn place_indexes(&mut self, shop: &[KeyedSpec], own: &[KeyedSpec]) {
        match self {
            CExpr::Aggregate(a) => {
                if let Some(k) = &mut a.keyed {
                    let specs = if a.across_customers { shop } else { own };
                    k.place = specs
                        .iter()
                        .position(|s| *s == k.spec)
                        .unwrap_or(usize::MAX);
                }
                if let Some(c) = &mut a.condition {
                    c.place_indexes(shop, own);
                }
            }
            CExpr::List(items) | CExpr::Call(_, items) => {
                items.iter_mut().for_each(|i| i.place_indexes(shop, own))
            }
            CExpr::Not(i) | CExpr::Neg(i) => i.place_indexes(shop, own),
            CExpr::Binary(_, l, r) => {
                l.place_indexes(shop, own);
                r.place_indexes(shop, own);
            }
            _ => {}
        }
    }

    /// The aggregates of the customer's own events in this expression read their events,
    /// not an index: the value "just before" the trigger (`crosses`) leaves one event out,
    /// which an index of instants by key cannot.
    fn unkey_own(&mut self) {
        match self {
            CExpr::Aggregate(a) => {
                if !a.across_customers {
                    a.keyed = None;
                }
                if let Some(c) = &mut a.condition {
                    c.unkey_own();
                }
            }
            CExpr::List(items) | CExpr::Call(_, items) => {
                items.iter_mut().for_each(CExpr::unkey_own)
            }
            CExpr::Not(i) | CExpr::Neg(i) => i.unkey_own(),
            CExpr::Binary(_, l, r) => {
                l.unkey_own();
                r.unkey_own();
            }
            _ => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Default,
    Lower,
    Upper,
    Len,
    DaysSince,
    HoursSince,
    Date,
    Abs,
    Round,
}

/// A compiled aggregate over events.
#[derive(Debug, Clone)]
pub struct CAggregate {
    pub function: AggregateFn,
    /// The event's identifier.
    pub event: Arc<str>,
    /// The event's place in [`EventIndex`]: its history is read by slot, not by name.
    pub slot: usize,
    /// The property aggregated (`sum(order_completed.total)`), or read (`last(…).total`).
    pub field: Vec<Arc<str>>,
    pub across_customers: bool,
    pub condition: Option<CExpr>,
    /// `within`, in seconds.
    pub window: Option<i64>,
    /// For `count`/`did` whose condition is `KEY in E.path` or `E.path == KEY`: answered
    /// from an index of the events by key (the shop's, or the customer's), not by a scan.
    pub keyed: Option<Keyed>,
}

/// An aggregate's condition that an index of events by key can answer.
#[derive(Debug, Clone)]
pub struct Keyed {
    /// The index this shape needs: (event, path, list), list for `KEY in E.path` (the path
    /// is a list) rather than `E.path == KEY`.
    pub spec: KeyedSpec,
    /// The key, evaluated in the outer context.
    pub key: CExpr,
    /// Where the engine keeps its index among those of its kind (the shop's, or each
    /// customer's), worked out when it compiles the campaigns (see
    /// [`CExpr::place_indexes`]); `usize::MAX` until then.
    pub place: usize,
}

/// Which events an index holds and by what: (event, path, list).
pub type KeyedSpec = (Arc<str>, Vec<Arc<str>>, bool);

/// A value as an index key, equal exactly when [`equal`] says so (numbers by value, none
/// only to none); `None` for values no index holds (lists, records).
pub fn key_of(value: &Value) -> Option<String> {
    let mut key = String::new();
    write_key(value, &mut key).then_some(key)
}

/// [`key_of`] into `key` (cleared first); false for values no index holds.
pub fn write_key(value: &Value, key: &mut String) -> bool {
    use std::fmt::Write as _;
    key.clear();
    let _ = match value {
        Value::Null => write!(key, "z"),
        // The usual key (a product id), written without the formatting machinery.
        Value::Text(t) => {
            key.push('t');
            key.push_str(t);
            Ok(())
        }
        Value::Int(n) => write!(key, "n{}", *n as f64),
        Value::Number(n) => write!(key, "n{}", if *n == 0.0 { 0.0 } else { *n }),
        Value::Bool(b) => write!(key, "b{b}"),
        Value::Date(d) => write!(key, "d{d}"),
        Value::DateTime(t) => write!(key, "T{}", t.timestamp_nanos_opt().unwrap_or_default()),
        Value::Duration(d) => write!(key, "s{d}"),
        Value::List(_) | Value::Record(_) => return false,
    };
    true
}

/// `KEY in E.path` or `E.path == KEY` (either side), with a key that does not read `E`.
fn keyed_shape(event: &str, condition: &CExpr) -> Option<Keyed> {
    let CExpr::Binary(op, left, right) = condition else {
        return None;
    };
    let path = |e: &CExpr| match e {
        CExpr::AggProp(name, rest) => {
            let mut path = vec![name.clone()];
            path.extend(rest.iter().cloned());
            Some(path)
        }
        _ => None,
    };
    let (path, key, list) = match op {
        BinaryOp::In => (path(right)?, &**left, true),
        BinaryOp::Eq => match (path(left), path(right)) {
            (Some(p), None) => (p, &**right, false),
            (None, Some(p)) => (p, &**left, false),
            _ => return None,
        },
        _ => return None,
    };
    (!reads_aggregated(key)).then(|| Keyed {
        spec: (Arc::from(event), path, list),
        key: key.clone(),
        place: usize::MAX,
    })
}

fn reads_aggregated(expr: &CExpr) -> bool {
    let mut reads = false;
    expr.walk(&mut |e| reads |= matches!(e, CExpr::AggProp(..) | CExpr::Aggregate(_)));
    reads
}

/// Trait names in a fixed order: a customer's traits are a `Vec<Value>` in this order.
#[derive(Debug, Clone, Default)]
pub struct TraitIndex {
    pub names: Vec<Arc<str>>,
    /// The schema default of each trait (`Value::Null` when none).
    pub defaults: Vec<Value>,
}

impl TraitIndex {
    pub fn new(schema: &Schema) -> TraitIndex {
        let mut index = TraitIndex::default();
        for (name, field) in &schema.traits {
            index.names.push(Arc::from(name.as_str()));
            index
                .defaults
                .push(field.default.as_ref().map_or(Value::Null, literal_value));
        }
        index
    }
    pub fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| &**n == name)
    }
}

/// The schema's events in a fixed order (by identifier): an event's slot is its place here.
/// Aggregates are compiled with their event's slot, so that evaluating one reads the history
/// by index, not by name.
#[derive(Debug, Clone, Default)]
pub struct EventIndex {
    pub names: Vec<Arc<str>>,
}

impl EventIndex {
    pub fn new(schema: &Schema) -> EventIndex {
        EventIndex {
            // INVARIANT: a `BTreeMap`'s keys come sorted, as `position` needs.
            names: schema
                .events
                .keys()
                .map(|n| Arc::from(n.as_str()))
                .collect(),
        }
    }

    pub fn position(&self, name: &str) -> Option<usize> {
        self.names.binary_search_by(|n| (**n).cmp(name)).ok()
    }
}

/// The value of a literal expression (schema defaults, goals); `Null` for anything else.
pub fn literal_value(expr: &ast::Expr) -> Value {
    match &expr.kind {
        ExprKind::Literal(l) => literal(l),
        ExprKind::Unary(UnaryOp::Neg, inner) => match literal_value(inner) {
            Value::Int(n) => Value::Int(-n),
            Value::Number(n) => Value::Number(-n),
            _ => Value::Null,
        },
        ExprKind::List(items) => Value::List(items.iter().map(literal_value).collect()),
        _ => Value::Null,
    }
}

fn literal(l: &Literal) -> Value {
    match l {
        Literal::Int(n) => Value::Int(*n),
        Literal::Float(n) => Value::Number(*n),
        Literal::Percent(p) => Value::Number(*p / 100.0),
        Literal::Text(t) => Value::text(t),
        Literal::Bool(b) => Value::Bool(*b),
        Literal::None => Value::Null,
        Literal::Duration(d) => Value::Duration(d.seconds().min(i64::MAX as u64) as i64),
        Literal::Date(d) => Value::Date(*d),
        Literal::DateTime(t) => Value::DateTime(t.with_timezone(&Utc)),
        Literal::Time(t) => Value::Duration(i64::from(t.hour * 3600 + t.minute * 60)),
    }
}

/// What a name means where an expression is compiled.
pub struct Names<'a> {
    pub traits: &'a TraitIndex,
    pub events: &'a EventIndex,
    /// `let` names visible, in order.
    pub lets: &'a [String],
    /// The event named in an aggregate or `unless` condition.
    pub aggregated: Option<&'a str>,
}

/// Compile a checked expression. INVARIANT: the checker accepted it, so every name
/// resolves; an unresolvable one (which the checker would have reported) compiles to `none`.
pub fn compile(expr: &ast::Expr, names: &Names) -> CExpr {
    match &expr.kind {
        ExprKind::Literal(l) => CExpr::Lit(literal(l)),
        ExprKind::List(items) => CExpr::List(items.iter().map(|i| compile(i, names)).collect()),
        ExprKind::Path(path) => {
            let segments: Vec<&str> = path.segments.iter().map(|s| s.name.as_str()).collect();
            let rest = |from: usize| -> Vec<Arc<str>> {
                segments.iter().skip(from).map(|s| Arc::from(*s)).collect()
            };
            match segments.as_slice() {
                ["customer", name, ..] => match names.traits.position(name) {
                    Some(i) => CExpr::Trait(i, rest(2)),
                    None => CExpr::Lit(Value::Null),
                },
                ["event", name, ..] => CExpr::TriggerProp(Arc::from(*name), rest(2)),
                ["now"] => CExpr::Now,
                ["send", "at"] => CExpr::SendAt,
                ["send", "id"] => CExpr::SendId,
                [first, ..] => {
                    if let Some(i) = names.lets.iter().rposition(|l| l == first) {
                        if segments.len() == 1 {
                            return CExpr::Let(i);
                        }
                    }
                    match (names.aggregated, segments.get(1)) {
                        (Some(agg), Some(name)) if agg == *first => {
                            CExpr::AggProp(Arc::from(*name), rest(2))
                        }
                        _ => CExpr::Lit(Value::Null),
                    }
                }
                [] => CExpr::Lit(Value::Null),
            }
        }
        ExprKind::Unary(UnaryOp::Not, inner) => CExpr::Not(Box::new(compile(inner, names))),
        ExprKind::Unary(UnaryOp::Neg, inner) => CExpr::Neg(Box::new(compile(inner, names))),
        ExprKind::Binary(op, left, right) => {
            let mut left = compile(left, names);
            if *op == BinaryOp::Crosses {
                left.unkey_own();
            }
            CExpr::Binary(*op, Box::new(left), Box::new(compile(right, names)))
        }
        ExprKind::Call { function, args } => {
            let func = match function.name.as_str() {
                "default" => Func::Default,
                "lower" => Func::Lower,
                "upper" => Func::Upper,
                "len" => Func::Len,
                "days_since" => Func::DaysSince,
                "hours_since" => Func::HoursSince,
                "date" => Func::Date,
                "abs" => Func::Abs,
                _ => Func::Round,
            };
            CExpr::Call(func, args.iter().map(|a| compile(a, names)).collect())
        }
        ExprKind::Aggregate(aggregate) => {
            let Some(slot) = names.events.position(&aggregate.event.name) else {
                return CExpr::Lit(Value::Null);
            };
            let inner = Names {
                traits: names.traits,
                events: names.events,
                lets: names.lets,
                aggregated: Some(aggregate.event.name.as_str()),
            };
            let field = if aggregate.then_field.is_empty() {
                &aggregate.field
            } else {
                &aggregate.then_field
            };
            let condition = aggregate.condition.as_ref().map(|c| compile(c, &inner));
            let keyed = match (&condition, aggregate.function) {
                (Some(c), AggregateFn::Count | AggregateFn::Did) => {
                    keyed_shape(&aggregate.event.name, c)
                }
                _ => None,
            };
            CExpr::Aggregate(Box::new(CAggregate {
                function: aggregate.function,
                event: Arc::from(aggregate.event.name.as_str()),
                slot,
                field: field.iter().map(|f| Arc::from(f.name.as_str())).collect(),
                across_customers: aggregate.across_customers,
                condition,
                window: aggregate
                    .within
                    .as_ref()
                    .map(|w| w.duration.seconds().min(i64::MAX as u64) as i64),
                keyed,
            }))
        }
    }
}

/// One event as the engine keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub at: DateTime<Utc>,
    pub id: Id,
    pub customer: Option<Id>,
    pub properties: Properties,
}

impl EventRecord {
    /// A copy to keep: whole, or without its properties when nothing reads them.
    pub fn kept(&self, whole: bool) -> EventRecord {
        match whole {
            true => self.clone(),
            false => EventRecord {
                at: self.at,
                id: self.id.clone(),
                customer: self.customer.clone(),
                properties: Properties::default(),
            },
        }
    }
}

/// The events an aggregate looks at, oldest first.
pub trait History {
    /// The events of the event in `slot` of [`EventIndex`]: the customer's own, or
    /// everyone's with `across`.
    fn events(&self, slot: usize, across_customers: bool) -> &[EventRecord];
    /// The instants (oldest first) of everyone's `spec` events holding `key`, when an
    /// index of them is kept and can answer; `None` to scan instead.
    fn keyed(&self, keyed: &Keyed, across_customers: bool, key: &str) -> Option<&[DateTime<Utc>]> {
        let _ = (keyed, across_customers, key);
        None
    }
    /// The customer's running [`Tally`] of the event in `slot`, when one is kept for the
    /// plain aggregates; `None` to scan [`History::events`] instead.
    fn tally(&self, slot: usize) -> Option<(&TallySpec, &Tally)> {
        let _ = slot;
        None
    }
}

impl CAggregate {
    /// Whether a [`Tally`] can answer this aggregate: the customer's own events, no
    /// `where`, and a count or a sum.
    pub fn is_plain(&self) -> bool {
        !self.across_customers
            && self.condition.is_none()
            && matches!(
                self.function,
                AggregateFn::Count
                    | AggregateFn::Rate
                    | AggregateFn::Did
                    | AggregateFn::Sum
                    | AggregateFn::Avg
            )
    }
}

/// What the plain aggregates of one kind of event read (see [`CAggregate::is_plain`]); one
/// per event, shared by every customer's [`Tally`] of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TallySpec {
    /// The properties summed or averaged (`sum(points_earned.points)`: `points`).
    pub fields: Vec<Vec<Arc<str>>>,
    /// The longest window read, in seconds (`None`: no read has a window).
    pub window: Option<i64>,
    /// Some read has no window: keep totals over every event.
    pub totals: bool,
}

impl TallySpec {
    /// Make room for what `aggregate` (a plain one) reads.
    pub fn add_read(&mut self, aggregate: &CAggregate) {
        if !aggregate.field.is_empty() && !self.fields.contains(&aggregate.field) {
            self.fields.push(aggregate.field.clone());
        }
        match aggregate.window {
            Some(w) => self.window = Some(self.window.map_or(w, |v| v.max(w))),
            None => self.totals = true,
        }
    }
}

/// One customer's events of one kind, reduced to what the plain aggregates read: totals
/// over every event (running sums), and the instants with their summed values inside the
/// longest window (a sliding window). Answers in place of a scan of the events, with the
/// same result.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Instants of the events inside the longest window, oldest first.
    times: Vec<DateTime<Utc>>,
    /// Per instant in `times`, the value of each of the spec's fields.
    values: Vec<Value>,
    total: Accums,
    /// `total` before the last event, and that event's id: the value "just before" it,
    /// for `crosses`.
    before_last: Accums,
    last_id: Option<Id>,
}

/// A count of events and a sum per field.
#[derive(Debug, Clone, Default)]
struct Accums {
    count: u64,
    sums: Vec<Sum>,
}

/// A sum of values as `sum` and `avg` compute it: whole while every value is whole.
#[derive(Debug, Clone, Copy)]
struct Sum {
    int: Option<i64>,
    float: f64,
    /// How many numbers were added (for `avg`).
    numbers: u64,
}

impl Default for Sum {
    fn default() -> Sum {
        Sum {
            int: Some(0),
            float: 0.0,
            numbers: 0,
        }
    }
}

impl Sum {
    fn add(&mut self, value: &Value) {
        match value {
            Value::Int(n) => {
                self.int = self.int.and_then(|s| s.checked_add(*n));
                self.float += *n as f64;
            }
            Value::Number(n) => {
                self.int = None;
                self.float += n;
            }
            _ => return,
        }
        self.numbers += 1;
    }

    fn of<V: std::borrow::Borrow<Value>>(values: impl Iterator<Item = V>) -> Sum {
        let mut sum = Sum::default();
        values.for_each(|v| sum.add(v.borrow()));
        sum
    }

    /// The `sum(…)`: an int while every value was one.
    fn total(&self) -> Value {
        match self.int {
            Some(n) => Value::Int(n),
            None => Value::Number(self.float),
        }
    }

    /// The `avg(…)`: `none` without numbers.
    fn mean(&self) -> Value {
        if self.numbers == 0 {
            Value::Null
        } else {
            Value::Number(self.float / self.numbers as f64)
        }
    }
}

/// An event's property at `path` (`[]`: none), projecting through lists of records.
fn field_of(event: &EventRecord, path: &[Arc<str>]) -> Value {
    match path.split_first() {
        Some((first, rest)) => project(
            event.properties.get(first).cloned().unwrap_or(Value::Null),
            rest,
        ),
        None => Value::Null,
    }
}

impl Tally {
    /// Count in an event of this kind: the latest one of the customer's so far.
    pub fn add(&mut self, spec: &TallySpec, event: &EventRecord) {
        if spec.totals {
            self.before_last.clone_from(&self.total);
            self.total.count += 1;
            self.total.sums.resize(spec.fields.len(), Sum::default());
            for (sum, path) in self.total.sums.iter_mut().zip(&spec.fields) {
                sum.add(&field_of(event, path));
            }
        }
        if let Some(window) = spec.window {
            // Forget what no window reaches any more.
            let stale = stale_when_full(
                &self.times,
                self.times.capacity(),
                |t| *t,
                || crate::schedule::back(event.at, window),
            );
            if stale > 0 {
                self.times.drain(..stale);
                self.values.drain(..stale * spec.fields.len());
            }
            self.times.push(event.at);
            self.values
                .extend(spec.fields.iter().map(|path| field_of(event, path)));
        }
        self.last_id = Some(event.id.clone());
    }

    /// `aggregate` (a plain one over this kind of event) at `cx.now`; `None` when this
    /// tally does not hold what it reads.
    // INVARIANT: the tally holds every event of the customer's up to `cx.now` (the engine
    // is causal), and the event left out for `crosses` is the trigger event, the latest
    // one (`crosses` is only read at the trigger).
    fn aggregate(&self, spec: &TallySpec, aggregate: &CAggregate, cx: &Context) -> Option<Value> {
        let field = match aggregate.field.is_empty() {
            true => None,
            false => Some(spec.fields.iter().position(|f| *f == aggregate.field)?),
        };
        let left_out = cx.exclude.is_some() && cx.exclude == self.last_id.as_deref();
        let (count, sum) = match aggregate.window {
            None if spec.totals => {
                let accums = if left_out {
                    &self.before_last
                } else {
                    &self.total
                };
                let sum = field.map(|i| accums.sums.get(i).copied().unwrap_or_default());
                (accums.count, sum)
            }
            Some(window) if spec.window.is_some_and(|w| w >= window) => {
                let std::ops::Range { start, end } =
                    window_range(&self.times, |t| *t, Some(window), cx.now);
                let end = if left_out && end == self.times.len() && end > start {
                    end - 1
                } else {
                    end
                };
                let stride = spec.fields.len();
                let sum = field
                    .map(|i| Sum::of((start..end).filter_map(|k| self.values.get(k * stride + i))));
                ((end - start) as u64, sum)
            }
            _ => return None,
        };
        // The same work as the scan would count, so that tallied and scanned runs agree.
        if !cx.fuel.burn(count) {
            return Some(Value::Null);
        }
        Some(match aggregate.function {
            AggregateFn::Count | AggregateFn::Rate => Value::Int(count as i64),
            AggregateFn::Did => Value::Bool(count > 0),
            AggregateFn::Sum => sum?.total(),
            AggregateFn::Avg => sum?.mean(),
            AggregateFn::Min | AggregateFn::Max | AggregateFn::Last => return None,
        })
    }
}

/// How many of the time-ordered `items`, about to grow past `room`, to forget first: those
/// before `from` (worked out only then; `None`: none), when they are at least half of them.
/// Histories, tallies and indexes ask only when they are full, before they would grow:
/// asking at every item read a cold item in the middle each time, and a list still holds
/// at most about twice what its window reaches (plus what came before it next grows).
pub fn stale_when_full<T>(
    items: &[T],
    room: usize,
    at: impl Fn(&T) -> DateTime<Utc>,
    from: impl FnOnce() -> Option<DateTime<Utc>>,
) -> usize {
    if items.len() < room {
        return 0;
    }
    from().map_or(0, |from| stale_half(items, at, from))
}

/// How many of the time-ordered `items` are before `from`, when they are at least half of
/// them; 0 otherwise (see [`stale_when_full`]). The middle item tells which, so that the usual answer (no, the
/// older half is still needed) reads one item rather than searching the whole.
pub fn stale_half<T>(items: &[T], at: impl Fn(&T) -> DateTime<Utc>, from: DateTime<Utc>) -> usize {
    // INVARIANT: `items` is in time order, so at least half are stale exactly when the
    // last item of the older half is.
    match items.len().checked_sub(1).map(|last| &items[last / 2]) {
        Some(middle) if at(middle) < from => items.partition_point(|item| at(item) < from),
        _ => 0,
    }
}

/// A budget of work for one evaluation.
#[derive(Debug)]
pub struct Fuel(Cell<u64>);

impl Fuel {
    pub fn new(units: u64) -> Fuel {
        Fuel(Cell::new(units))
    }
    /// Spend one unit; false when the budget is spent.
    fn burn(&self, units: u64) -> bool {
        let left = self.0.get();
        if left < units {
            self.0.set(0);
            false
        } else {
            self.0.set(left - units);
            true
        }
    }
    pub fn exhausted(&self) -> bool {
        self.0.get() == 0
    }
}

/// Everything an expression can read.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// The evaluation instant.
    pub now: DateTime<Utc>,
    pub zone: chrono_tz::Tz,
    pub traits: &'a [Value],
    pub trigger: Option<&'a EventRecord>,
    /// The event at hand inside an aggregate or `unless` condition.
    pub aggregated: Option<&'a EventRecord>,
    pub lets: &'a [Value],
    pub send: Option<(&'a str, DateTime<Utc>)>,
    pub history: &'a dyn History,
    /// Leave this event out of aggregates: the value "just before" it, for `crosses`.
    pub exclude: Option<&'a str>,
    pub fuel: &'a Fuel,
}

impl<'a> Context<'a> {
    /// A context at `now` with nothing aggregated, no send and nothing excluded.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now: DateTime<Utc>,
        zone: chrono_tz::Tz,
        traits: &'a [Value],
        trigger: Option<&'a EventRecord>,
        lets: &'a [Value],
        history: &'a dyn History,
        fuel: &'a Fuel,
    ) -> Context<'a> {
        Context {
            now,
            zone,
            traits,
            trigger,
            aggregated: None,
            lets,
            send: None,
            history,
            exclude: None,
            fuel,
        }
    }
    fn with_aggregated(&self, event: &'a EventRecord) -> Context<'a> {
        Context {
            aggregated: Some(event),
            ..*self
        }
    }
    fn excluding(&self, id: &'a str) -> Context<'a> {
        Context {
            exclude: Some(id),
            ..*self
        }
    }
}

/// Whether a condition holds: only `true` counts; `none` (missing, out of fuel) does not.
pub fn holds(expr: &CExpr, cx: &Context) -> bool {
    matches!(eval(expr, cx), Value::Bool(true))
}

/// Evaluate an expression.
pub fn eval(expr: &CExpr, cx: &Context) -> Value {
    if !cx.fuel.burn(1) {
        return Value::Null;
    }
    match expr {
        CExpr::Lit(v) => v.clone(),
        CExpr::List(items) => Value::List(items.iter().map(|i| eval(i, cx)).collect()),
        CExpr::Trait(i, rest) => project(cx.traits.get(*i).cloned().unwrap_or(Value::Null), rest),
        CExpr::TriggerProp(name, rest) => match cx.trigger {
            Some(e) => project(e.properties.get(name).cloned().unwrap_or(Value::Null), rest),
            None => Value::Null,
        },
        CExpr::AggProp(name, rest) => match cx.aggregated {
            Some(e) => project(e.properties.get(name).cloned().unwrap_or(Value::Null), rest),
            None => Value::Null,
        },
        CExpr::Let(i) => cx.lets.get(*i).cloned().unwrap_or(Value::Null),
        CExpr::Now => Value::DateTime(cx.now),
        CExpr::SendAt => cx.send.map_or(Value::Null, |(_, at)| Value::DateTime(at)),
        CExpr::SendId => cx.send.map_or(Value::Null, |(id, _)| Value::text(id)),
        CExpr::Not(inner) => match eval(inner, cx) {
            Value::Bool(b) => Value::Bool(!b),
            _ => Value::Null,
        },
        CExpr::Neg(inner) => match eval(inner, cx) {
            Value::Int(n) => Value::Int(n.wrapping_neg()),
            Value::Number(n) => Value::Number(-n),
            Value::Duration(s) => Value::Duration(s.wrapping_neg()),
            _ => Value::Null,
        },
        CExpr::Binary(op, left, right) => binary(*op, left, right, cx),
        CExpr::Call(func, args) => call(*func, args, cx),
        CExpr::Aggregate(aggregate) => self::aggregate(aggregate, cx),
    }
}

/// The part of a time-ordered slice an aggregate reads: up to `now`, inclusive, and within
/// the window (`window` seconds back from `now`, its start included) if there is one.
fn in_window<T>(
    items: &[T],
    at: impl Fn(&T) -> DateTime<Utc>,
    window: Option<i64>,
    now: DateTime<Utc>,
) -> &[T] {
    &items[window_range(items, at, window, now)]
}

/// The positions of [`in_window`]'s slice.
fn window_range<T>(
    items: &[T],
    at: impl Fn(&T) -> DateTime<Utc>,
    window: Option<i64>,
    now: DateTime<Utc>,
) -> std::ops::Range<usize> {
    let end = partition_from_back(items, |item| at(item) <= now);
    let start = window
        .and_then(|w| crate::schedule::back(now, w))
        .map_or(0, |from| {
            partition_from_back(&items[..end], |item| at(item) < from)
        });
    start..end
}

/// `items.partition_point(is_before)`, searched from the back: one item, then two, four and
/// so on, then by halves between the last two looked at. An aggregate reads the recent end
/// of a history (a window back from now, and nothing after now), which was written last
/// and is still in the cache; halving the whole history reads older, colder items first.
/// The same answer for every `is_before` that holds for a prefix of `items`.
pub fn partition_from_back<T>(items: &[T], is_before: impl Fn(&T) -> bool) -> usize {
    // INVARIANT: every item from `after` on fails `is_before`.
    let mut after = items.len();
    let mut step = 1;
    loop {
        let Some(probe) = after.checked_sub(step) else {
            return items[..after].partition_point(&is_before);
        };
        if is_before(&items[probe]) {
            // The answer is in (probe, after].
            return probe + 1 + items[probe + 1..after].partition_point(&is_before);
        }
        after = probe;
        step *= 2;
    }
}

/// `count`/`did` from an index by key, when there is one that can answer.
fn keyed_aggregate(aggregate: &CAggregate, cx: &Context) -> Option<Value> {
    let keyed = aggregate.keyed.as_ref()?;
    // The value "just before" an event (`crosses`) leaves that event out: scan.
    if cx.exclude.is_some() {
        return None;
    }
    let key = eval(&keyed.key, cx);
    let spec = &keyed.spec;
    thread_local! {
        /// The key of the aggregate at hand: written, not allocated, per evaluation.
        static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    let times = KEY.with_borrow_mut(|text| {
        write_key(&key, text)
            .then(|| cx.history.keyed(keyed, aggregate.across_customers, text))
            .flatten()
    })?;
    // `none in E.list` holds for no event.
    let count = if spec.2 && key.is_null() {
        0
    } else {
        in_window(times, |t| *t, aggregate.window, cx.now).len()
    };
    Some(match aggregate.function {
        AggregateFn::Did => Value::Bool(count > 0),
        _ => Value::Int(count as i64),
    })
}

/// Read properties of a record, projecting through lists of records.
pub fn project(value: Value, rest: &[Arc<str>]) -> Value {
    let mut value = value;
    for name in rest {
        value = match value {
            Value::Record(fields) => fields.get(name).cloned().unwrap_or(Value::Null),
            Value::List(items) => Value::List(
                items
                    .iter()
                    .map(|item| match item {
                        Value::Record(fields) => fields.get(name).cloned().unwrap_or(Value::Null),
                        _ => Value::Null,
                    })
                    .collect(),
            ),
            _ => Value::Null,
        };
    }
    value
}

/// Equality as the language means it: numbers by value, `none` equals only `none`.
pub fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Null, _) | (_, Value::Null) => false,
        (Value::Int(x), Value::Number(y)) | (Value::Number(y), Value::Int(x)) => (*x as f64) == *y,
        (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(a, b)| equal(a, b))
        }
        _ => a == b,
    }
}

fn order(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Date(x), Value::Date(y)) => Some(x.cmp(y)),
        (Value::DateTime(x), Value::DateTime(y)) => Some(x.cmp(y)),
        (Value::Duration(x), Value::Duration(y)) => Some(x.cmp(y)),
        (Value::Text(x), Value::Text(y)) => Some(x.cmp(y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

static NULL: Value = Value::Null;

/// A property path of the trigger or the aggregated event that goes through more than one
/// name: the property itself (by reference) and the names after it.
fn path_operand<'c>(expr: &'c CExpr, cx: &Context<'c>) -> Option<(&'c Value, &'c [Arc<str>])> {
    let (event, name, rest) = match expr {
        CExpr::TriggerProp(name, rest) if !rest.is_empty() => (cx.trigger, name, rest),
        CExpr::AggProp(name, rest) if !rest.is_empty() => (cx.aggregated, name, rest),
        _ => return None,
    };
    let base = event.and_then(|e| e.properties.get(name)).unwrap_or(&NULL);
    Some((base, rest))
}

/// `value` read through the records named by `rest`; none as soon as one is not a record.
fn follow<'v>(value: &'v Value, rest: &[Arc<str>]) -> &'v Value {
    rest.iter().fold(value, |v, name| match v {
        Value::Record(fields) => fields.get(name).unwrap_or(&NULL),
        _ => &NULL,
    })
}

/// What [`project`] gives, by reference: one value, or a list's elements each read
/// through the names after it.
pub enum Projected<'v> {
    One(&'v Value),
    Each(&'v [Value], &'v [Arc<str>]),
}

impl<'v> Projected<'v> {
    /// `value` read through `rest` as [`project`] reads it, without building lists.
    pub fn of(value: &'v Value, rest: &'v [Arc<str>]) -> Projected<'v> {
        let mut value = value;
        for (i, name) in rest.iter().enumerate() {
            match value {
                Value::Record(fields) => value = fields.get(name).unwrap_or(&NULL),
                // From a list on, the names apply to each element.
                Value::List(items) => return Projected::Each(items, &rest[i..]),
                _ => value = &NULL,
            }
        }
        Projected::One(value)
    }

    /// The elements of the projected list (`None`: not a list).
    pub fn items(&self) -> Option<impl Iterator<Item = &'v Value>> {
        let (items, tail): (&'v [Value], &'v [Arc<str>]) = match *self {
            Projected::One(Value::List(items)) => (items, &[]),
            Projected::Each(items, tail) => (items, tail),
            Projected::One(_) => return None,
        };
        Some(items.iter().map(move |e| follow(e, tail)))
    }
}

/// `contains(&project(value.clone(), rest), item)`, without building the projection.
fn contains_projected(value: &Value, rest: &[Arc<str>], item: &Value) -> Option<bool> {
    match Projected::of(value, rest) {
        Projected::One(value) => contains(value, item),
        Projected::Each(..) if item.is_null() => None,
        each => Some(each.items()?.any(|e| equal(e, item))),
    }
}

fn contains(collection: &Value, item: &Value) -> Option<bool> {
    match (collection, item) {
        (_, Value::Null) | (Value::Null, _) => None,
        (Value::List(items), _) => Some(items.iter().any(|i| equal(i, item))),
        (Value::Text(haystack), Value::Text(needle)) => Some(haystack.contains(&**needle)),
        _ => None,
    }
}

fn binary(op: BinaryOp, left: &CExpr, right: &CExpr, cx: &Context) -> Value {
    // `KEY in E.path.through.a.list`: compared element by element, without building the
    // projected list (`project`) first.
    if op == BinaryOp::In {
        if let Some((base, rest)) = path_operand(right, cx) {
            let item = eval(left, cx);
            return Value::Bool(contains_projected(base, rest, &item).unwrap_or(false));
        }
    }
    use std::cmp::Ordering::*;
    match op {
        BinaryOp::And => match eval(left, cx) {
            Value::Bool(false) => Value::Bool(false),
            Value::Bool(true) => match eval(right, cx) {
                Value::Bool(b) => Value::Bool(b),
                _ => Value::Null,
            },
            _ => Value::Null,
        },
        BinaryOp::Or => match eval(left, cx) {
            Value::Bool(true) => Value::Bool(true),
            l => match (l, eval(right, cx)) {
                (_, Value::Bool(true)) => Value::Bool(true),
                (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
                _ => Value::Null,
            },
        },
        BinaryOp::Crosses => {
            // Just before the trigger event, and with it.
            let Some(trigger) = cx.trigger else {
                return Value::Null;
            };
            let before = eval(left, &cx.excluding(&trigger.id));
            let after = eval(left, cx);
            let threshold = eval(right, cx);
            match (order(&before, &threshold), order(&after, &threshold)) {
                (Some(Less), Some(Greater | Equal)) => Value::Bool(true),
                (Some(_), Some(_)) => Value::Bool(false),
                // No history before the event counts as nothing yet.
                (None, Some(Greater | Equal)) if before.is_null() => Value::Bool(true),
                _ => Value::Bool(false),
            }
        }
        _ => {
            let l = eval(left, cx);
            let r = eval(right, cx);
            match op {
                BinaryOp::Eq => Value::Bool(equal(&l, &r)),
                BinaryOp::Ne => Value::Bool(!equal(&l, &r)),
                BinaryOp::Lt => {
                    order(&l, &r).map_or(Value::Bool(false), |o| Value::Bool(o == Less))
                }
                BinaryOp::Le => {
                    order(&l, &r).map_or(Value::Bool(false), |o| Value::Bool(o != Greater))
                }
                BinaryOp::Gt => {
                    order(&l, &r).map_or(Value::Bool(false), |o| Value::Bool(o == Greater))
                }
                BinaryOp::Ge => {
                    order(&l, &r).map_or(Value::Bool(false), |o| Value::Bool(o != Less))
                }
                BinaryOp::In => Value::Bool(contains(&r, &l).unwrap_or(false)),
                BinaryOp::Contains => Value::Bool(contains(&l, &r).unwrap_or(false)),
                _ => arithmetic(op, l, r),
            }
        }
    }
}

fn arithmetic(op: BinaryOp, l: Value, r: Value) -> Value {
    use Value::*;
    match (op, l, r) {
        (BinaryOp::Add, Int(a), Int(b)) => a.checked_add(b).map_or(Null, Int),
        (BinaryOp::Sub, Int(a), Int(b)) => a.checked_sub(b).map_or(Null, Int),
        (BinaryOp::Mul, Int(a), Int(b)) => a.checked_mul(b).map_or(Null, Int),
        (BinaryOp::Add, Text(a), Text(b)) => Value::text(&format!("{a}{b}")),
        (BinaryOp::Add | BinaryOp::Sub, DateTime(t), Duration(s)) => {
            let d = chrono::Duration::try_seconds(if op == BinaryOp::Sub { -s } else { s });
            d.and_then(|d| t.checked_add_signed(d))
                .map_or(Null, DateTime)
        }
        (BinaryOp::Add, Duration(s), DateTime(t)) => chrono::Duration::try_seconds(s)
            .and_then(|d| t.checked_add_signed(d))
            .map_or(Null, DateTime),
        (BinaryOp::Add | BinaryOp::Sub, Date(d), Duration(s)) => {
            let days = s.div_euclid(86_400);
            let days = if op == BinaryOp::Sub { -days } else { days };
            chrono::Duration::try_days(days)
                .and_then(|delta| d.checked_add_signed(delta))
                .map_or(Null, Date)
        }
        (BinaryOp::Sub, DateTime(a), DateTime(b)) => Duration((a - b).num_seconds()),
        (BinaryOp::Add, Duration(a), Duration(b)) => a.checked_add(b).map_or(Null, Duration),
        (BinaryOp::Sub, Duration(a), Duration(b)) => a.checked_sub(b).map_or(Null, Duration),
        (BinaryOp::Mul, Duration(s), n) | (BinaryOp::Mul, n, Duration(s)) => match n.as_f64() {
            Some(f) => Duration((s as f64 * f) as i64),
            None => Null,
        },
        (BinaryOp::Div, Duration(s), n) => match n.as_f64() {
            Some(f) if f != 0.0 => Duration((s as f64 / f) as i64),
            _ => Null,
        },
        (op, a, b) => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => {
                let result = match op {
                    BinaryOp::Add => x + y,
                    BinaryOp::Sub => x - y,
                    BinaryOp::Mul => x * y,
                    BinaryOp::Div if y != 0.0 => x / y,
                    _ => return Null,
                };
                if result.is_finite() {
                    Number(result)
                } else {
                    Null
                }
            }
            _ => Null,
        },
    }
}

fn call(func: Func, args: &[CExpr], cx: &Context) -> Value {
    let first = args.first().map_or(Value::Null, |a| eval(a, cx));
    let local_today = cx.now.with_timezone(&cx.zone).date_naive();
    match func {
        Func::Default => {
            if first.is_null() {
                args.get(1).map_or(Value::Null, |a| eval(a, cx))
            } else {
                first
            }
        }
        Func::Lower => first
            .as_str()
            .map_or(Value::Null, |s| Value::text(&s.to_lowercase())),
        Func::Upper => first
            .as_str()
            .map_or(Value::Null, |s| Value::text(&s.to_uppercase())),
        Func::Len => match first {
            Value::List(items) => Value::Int(items.len() as i64),
            Value::Text(t) => Value::Int(t.chars().count() as i64),
            _ => Value::Null,
        },
        Func::DaysSince => match first {
            Value::Date(d) => Value::Int((local_today - d).num_days()),
            Value::DateTime(t) => {
                Value::Int((local_today - t.with_timezone(&cx.zone).date_naive()).num_days())
            }
            _ => Value::Null,
        },
        Func::HoursSince => match first {
            Value::DateTime(t) => Value::Int((cx.now - t).num_hours()),
            _ => Value::Null,
        },
        Func::Date => match first {
            Value::DateTime(t) => Value::Date(t.with_timezone(&cx.zone).date_naive()),
            _ => Value::Null,
        },
        Func::Abs => match first {
            Value::Int(n) => Value::Int(n.wrapping_abs()),
            Value::Number(n) => Value::Number(n.abs()),
            _ => Value::Null,
        },
        Func::Round => match first.as_f64() {
            Some(f) if f.is_finite() && f.abs() < 9.0e18 => Value::Int(f.round() as i64),
            _ => Value::Null,
        },
    }
}

fn aggregate(aggregate: &CAggregate, cx: &Context) -> Value {
    if let Some(value) = keyed_aggregate(aggregate, cx) {
        return value;
    }
    if aggregate.is_plain() {
        if let Some(value) = cx
            .history
            .tally(aggregate.slot)
            .and_then(|(spec, tally)| tally.aggregate(spec, aggregate, cx))
        {
            return value;
        }
    }
    let events = cx
        .history
        .events(aggregate.slot, aggregate.across_customers);
    let in_range = in_window(events, |e| e.at, aggregate.window, cx.now);
    if !cx.fuel.burn(in_range.len() as u64) {
        return Value::Null;
    }
    let mut matching = in_range.iter().filter(|e| {
        cx.exclude != Some(&*e.id)
            && aggregate
                .condition
                .as_ref()
                .is_none_or(|c| holds(c, &cx.with_aggregated(e)))
    });
    let field = |e: &EventRecord| field_of(e, &aggregate.field);
    match aggregate.function {
        AggregateFn::Count | AggregateFn::Rate => Value::Int(matching.count() as i64),
        AggregateFn::Did => Value::Bool(matching.take(1).count() == 1),
        AggregateFn::Last => matching.next_back().map_or(Value::Null, field),
        AggregateFn::Sum => Sum::of(matching.map(field)).total(),
        AggregateFn::Avg => Sum::of(matching.map(field)).mean(),
        AggregateFn::Min | AggregateFn::Max => {
            let want = if aggregate.function == AggregateFn::Min {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            };
            matching
                .map(field)
                .filter(|v| !v.is_null())
                .fold(Value::Null, |best, v| {
                    if best.is_null() || order(&v, &best) == Some(want) {
                        v
                    } else {
                        best
                    }
                })
        }
    }
}

/// Today's local date for a zone (used by callers that need the same notion as `eval`).
pub fn local_date(at: DateTime<Utc>, zone: chrono_tz::Tz) -> NaiveDate {
    at.with_timezone(&zone).date_naive()
}
