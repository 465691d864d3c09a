//! The evaluator on small hand-written histories; every expected value is worked out by hand.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use moments::check::check;
use moments::diagnostic::{SourceFile, Sources};
use moments::eval::{
    compile, eval, holds, CExpr, Context, EventIndex, EventRecord, Fuel, History, Names, Tally,
    TallySpec, TraitIndex,
};
use moments::model::Model;
use moments::value::Value;

const SCHEMA: &str = r#"
customer {
  first_name: text?
  tier: text = "standard"
  points: int?
}
event order_completed "Order Completed" {
  order_id: text
  total: number
  products: list<{ product_id: text, quantity: int }>
}
event product_viewed "Product Viewed" { product_id: text, price: number }
event points_earned "Points Earned" { points: int }
"#;

/// A model whose one moment has `where CONDITION` on `trigger_event`.
fn model(trigger_event: &str, condition: &str) -> Model {
    let moment = format!(
        "moment m \"m\" {{\n  trigger {{\n    on {trigger_event}\n    where {condition}\n  }}\n  message sms {{ text \"hi\" }}\n  kpi \"k\" = rate(order_completed within 1d after send)\n}}\n"
    );
    let mut sources = Sources::default();
    let schema = sources.add(SourceFile::new("schema.moment", SCHEMA));
    let id = sources.add(SourceFile::new("m.moment", moment));
    let checked = check(&sources, Some(schema), &[id]);
    assert!(checked.diagnostics.is_empty(), "{:?}", checked.diagnostics);
    checked.model.expect("valid")
}

/// The schema's events by slot: in the order of their identifiers, as `EventIndex` numbers
/// them (`slots_are_the_schema_events_in_order` checks it).
const EVENTS: [&str; 3] = ["order_completed", "points_earned", "product_viewed"];

/// The name of the event in `slot`.
fn named(slot: usize) -> &'static str {
    EVENTS.get(slot).copied().unwrap_or("")
}

#[test]
fn slots_are_the_schema_events_in_order() {
    let model = model("order_completed", "true");
    let index = EventIndex::new(&model.schema);
    let names: Vec<&str> = index.names.iter().map(|n| &**n).collect();
    assert_eq!(names, EVENTS);
    assert_eq!(index.position("points_earned"), Some(1));
    assert_eq!(index.position("Points Earned"), None);
}

fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, hour, minute, 0)
        .unwrap()
}

fn event(id: &str, when: DateTime<Utc>, props: &[(&str, Value)]) -> EventRecord {
    EventRecord {
        at: when,
        id: id.into(),
        customer: Some("c1".into()),
        properties: props.iter().map(|(k, v)| (*k, v.clone())).collect(),
    }
}

#[derive(Default)]
struct Events(HashMap<(String, bool), Vec<EventRecord>>);

impl History for Events {
    fn events(&self, slot: usize, across: bool) -> &[EventRecord] {
        self.0
            .get(&(named(slot).to_string(), across))
            .map_or(&[], |v| v.as_slice())
    }
}

/// The same customer's events as the engine keeps them for plain aggregates: tallies
/// (and no events for those).
struct Tallied(HashMap<String, (TallySpec, Tally)>, Events);

impl History for Tallied {
    fn events(&self, slot: usize, across: bool) -> &[EventRecord] {
        if !across && self.0.contains_key(named(slot)) {
            return &[];
        }
        self.1.events(slot, across)
    }
    fn tally(&self, slot: usize) -> Option<(&TallySpec, &Tally)> {
        self.0.get(named(slot)).map(|(spec, tally)| (spec, tally))
    }
}

/// Tally the events `expr`'s plain aggregates read, up to `now`, as the engine does.
fn tallied(expr: &CExpr, history: &Events, now: DateTime<Utc>) -> Tallied {
    let mut specs: HashMap<String, TallySpec> = HashMap::new();
    expr.walk(&mut |e| {
        if let CExpr::Aggregate(a) = e {
            if a.is_plain() {
                specs.entry(a.event.to_string()).or_default().add_read(a);
            }
        }
    });
    let mut others = Events::default();
    for ((event, across), events) in &history.0 {
        if *across || !specs.contains_key(event) {
            others.0.insert((event.clone(), *across), events.clone());
        }
    }
    let tallies = specs
        .into_iter()
        .map(|(event, spec)| {
            let mut tally = Tally::default();
            let kept = history
                .0
                .get(&(event.clone(), false))
                .map_or(&[][..], |v| v);
            for e in kept.iter().filter(|e| e.at <= now) {
                tally.add(&spec, e);
            }
            (event, (spec, tally))
        })
        .collect();
    Tallied(tallies, others)
}

fn order(id: &str, when: DateTime<Utc>, total: f64, products: &[&str]) -> EventRecord {
    let products: Vec<Value> = products
        .iter()
        .map(|p| {
            let mut record = BTreeMap::new();
            record.insert(Arc::from("product_id"), Value::text(p));
            record.insert(Arc::from("quantity"), Value::Int(1));
            Value::Record(Arc::new(record))
        })
        .collect();
    event(
        id,
        when,
        &[
            ("order_id", Value::text(id)),
            ("total", Value::Number(total)),
            ("products", Value::List(products.into())),
        ],
    )
}

/// Evaluate the moment's condition at `now` for the trigger event, with these traits.
fn evaluate(
    model: &Model,
    history: &Events,
    trigger: &EventRecord,
    traits: &[(&str, Value)],
) -> Value {
    let index = TraitIndex::new(&model.schema);
    let mut values = index.defaults.clone();
    for (name, value) in traits {
        values[index.position(name).unwrap()] = value.clone();
    }
    let condition = &model.moments[0].trigger.conditions[0];
    let compiled = compile(
        condition,
        &Names {
            traits: &index,
            events: &EventIndex::new(&model.schema),
            lets: &[],
            aggregated: None,
        },
    );
    let fuel = Fuel::new(100_000);
    let cx = Context {
        now: trigger.at,
        zone: chrono_tz::Europe::London,
        traits: &values,
        trigger: Some(trigger),
        aggregated: None,
        lets: &[],
        send: None,
        history,
        exclude: None,
        fuel: &fuel,
    };
    let value = eval(&compiled, &cx);
    assert_eq!(holds(&compiled, &cx), value == Value::Bool(true));
    // Running tallies in place of the events give the same value.
    let tallies = tallied(&compiled, history, trigger.at);
    let fuel = Fuel::new(100_000);
    let with_tallies = Context {
        history: &tallies,
        fuel: &fuel,
        ..cx
    };
    assert_eq!(eval(&compiled, &with_tallies), value, "tallied");
    value
}

#[test]
fn windows_include_the_evaluation_instant_and_exclude_older_events() {
    let model = model("order_completed", "count(order_completed within 1h) == 2");
    let mut history = Events::default();
    // 09:00 is exactly 1h before 10:00: inside. 08:59 is outside. 10:00 is the trigger itself.
    let orders = vec![
        order("o0", at(20, 8, 59), 10.0, &[]),
        order("o1", at(20, 9, 0), 10.0, &[]),
        order("o2", at(20, 10, 0), 10.0, &[]),
    ];
    history
        .0
        .insert(("order_completed".into(), false), orders.clone());
    assert_eq!(
        evaluate(&model, &history, &orders[2], &[]),
        Value::Bool(true)
    );
}

#[test]
fn crosses_compares_just_before_and_with_the_trigger_event() {
    // Totals 600 then 500: 600 before, 1100 with the second order — crosses 1000.
    let model = model("order_completed", "sum(order_completed.total) crosses 1000");
    let mut history = Events::default();
    let orders = vec![
        order("o1", at(1, 9, 0), 600.0, &[]),
        order("o2", at(2, 9, 0), 500.0, &[]),
    ];
    history
        .0
        .insert(("order_completed".into(), false), orders.clone());
    assert_eq!(
        evaluate(&model, &history, &orders[1], &[]),
        Value::Bool(true)
    );
    // A third order of 200 (1300 total) does not cross again.
    let mut more = orders.clone();
    more.push(order("o3", at(3, 9, 0), 200.0, &[]));
    history
        .0
        .insert(("order_completed".into(), false), more.clone());
    assert_eq!(
        evaluate(&model, &history, &more[2], &[]),
        Value::Bool(false)
    );
    // A single first order of 1000 crosses from nothing.
    let first = vec![order("o1", at(1, 9, 0), 1000.0, &[])];
    history
        .0
        .insert(("order_completed".into(), false), first.clone());
    assert_eq!(
        evaluate(&model, &history, &first[0], &[]),
        Value::Bool(true)
    );
}

#[test]
fn missing_values_make_comparisons_false_and_defaults_fill_them() {
    let empty = Events::default();
    let view = event(
        "v1",
        at(5, 12, 0),
        &[
            ("product_id", Value::text("p1")),
            ("price", Value::Number(30.0)),
        ],
    );
    // `points` is missing: `default` gives 0, and 0 + 10 < 20.
    let model1 = model("product_viewed", "default(customer.points, 0) + 10 < 20");
    assert_eq!(evaluate(&model1, &empty, &view, &[]), Value::Bool(true));
    // Present: 15 + 10 = 25, not < 20.
    assert_eq!(
        evaluate(&model1, &empty, &view, &[("points", Value::Int(15))]),
        Value::Bool(false)
    );
    // `==` on a missing value is false, `!= none` too.
    let model2 = model("product_viewed", "customer.first_name == \"Ada\"");
    assert_eq!(evaluate(&model2, &empty, &view, &[]), Value::Bool(false));
    // The trait default applies: tier is "standard".
    let model3 = model("product_viewed", "customer.tier == \"standard\"");
    assert_eq!(evaluate(&model3, &empty, &view, &[]), Value::Bool(true));
}

#[test]
fn paths_project_through_lists_of_records() {
    // Two of the three orders in the last 24h across customers contain p1.
    let model = model(
        "product_viewed",
        "count(order_completed across customers where event.product_id in order_completed.products.product_id within 24h) == 2",
    );
    let mut history = Events::default();
    history.0.insert(
        ("order_completed".into(), true),
        vec![
            order("a", at(4, 11, 0), 5.0, &["p1"]), // more than 24h before: out
            order("b", at(5, 1, 0), 5.0, &["p1", "p2"]),
            order("c", at(5, 2, 0), 5.0, &["p3"]),
            order("d", at(5, 3, 0), 5.0, &["p1"]),
        ],
    );
    let view = event(
        "v1",
        at(5, 12, 0),
        &[
            ("product_id", Value::text("p1")),
            ("price", Value::Number(3.0)),
        ],
    );
    assert_eq!(evaluate(&model, &history, &view, &[]), Value::Bool(true));
}

#[test]
fn in_reads_each_element_of_a_list_of_records() {
    let model = model(
        "product_viewed",
        "did(order_completed where event.product_id in order_completed.products.product_id)",
    );
    // The second order's first product has no id: it is none, and matches nothing.
    let mut no_id = BTreeMap::new();
    no_id.insert(Arc::from("quantity"), Value::Int(2));
    let mut with_products = order("o2", at(3, 9, 0), 8.0, &["p1"]);
    let Some(Value::List(products)) = with_products.properties.get("products").cloned() else {
        panic!("products")
    };
    let mut products: Vec<Value> = products.to_vec();
    products.insert(0, Value::Record(Arc::new(no_id)));
    with_products
        .properties
        .insert("products", Value::List(products.into()));
    let mut history = Events::default();
    history.0.insert(
        ("order_completed".into(), false),
        vec![order("o1", at(2, 9, 0), 5.0, &["p2"]), with_products],
    );
    let view = |id: &str, product: Value| {
        event(
            id,
            at(5, 12, 0),
            &[("product_id", product), ("price", Value::Number(3.0))],
        )
    };
    assert_eq!(
        evaluate(&model, &history, &view("v1", Value::text("p1")), &[]),
        Value::Bool(true)
    );
    assert_eq!(
        evaluate(&model, &history, &view("v2", Value::text("p3")), &[]),
        Value::Bool(false)
    );
    // A missing id is in no list, not even next to a missing one.
    assert_eq!(
        evaluate(&model, &history, &view("v3", Value::Null), &[]),
        Value::Bool(false)
    );
}

#[test]
fn sums_of_whole_numbers_stay_whole_and_averages_of_nothing_are_missing() {
    let model1 = model("points_earned", "sum(points_earned.points) == 520");
    let mut history = Events::default();
    let earned = vec![
        event("p1", at(1, 9, 0), &[("points", Value::Int(500))]),
        event("p2", at(2, 9, 0), &[("points", Value::Int(20))]),
    ];
    history
        .0
        .insert(("points_earned".into(), false), earned.clone());
    assert_eq!(
        evaluate(&model1, &history, &earned[1], &[]),
        Value::Bool(true)
    );
    // No orders: the average is none, and a comparison with none is false.
    let model2 = model("points_earned", "avg(order_completed.total) >= 0");
    assert_eq!(
        evaluate(&model2, &history, &earned[1], &[]),
        Value::Bool(false)
    );
}

#[test]
fn evaluation_stops_when_its_budget_is_spent() {
    let model = model("order_completed", "count(order_completed) >= 0");
    let index = TraitIndex::new(&model.schema);
    let compiled = compile(
        &model.moments[0].trigger.conditions[0],
        &Names {
            traits: &index,
            events: &EventIndex::new(&model.schema),
            lets: &[],
            aggregated: None,
        },
    );
    let mut history = Events::default();
    let orders: Vec<EventRecord> = (0..1000)
        .map(|i| order(&format!("o{i}"), at(1, 0, 0), 1.0, &[]))
        .collect();
    history
        .0
        .insert(("order_completed".into(), false), orders.clone());
    let fuel = Fuel::new(50);
    let cx = Context {
        now: at(1, 0, 0),
        zone: chrono_tz::UTC,
        traits: &index.defaults,
        trigger: Some(&orders[0]),
        aggregated: None,
        lets: &[],
        send: None,
        history: &history,
        exclude: None,
        fuel: &fuel,
    };
    assert_eq!(eval(&compiled, &cx), Value::Bool(false));
    assert!(fuel.exhausted());
}

mod tallies_agree_with_scans {
    use super::*;
    use proptest::prelude::*;

    /// (minutes after the start, points or price, which kind) per event, in time order.
    fn events() -> impl Strategy<Value = Vec<(i64, f64, bool)>> {
        proptest::collection::vec(
            (
                prop_oneof![Just(0i64), 0i64..90, 0i64..3_000],
                prop_oneof![Just(0.0), -50.0f64..400.0, Just(4.5e18)],
                any::<bool>(),
            ),
            1..40,
        )
        .prop_map(|mut events| {
            let mut minute = 0;
            for e in &mut events {
                minute += e.0;
                e.0 = minute;
            }
            events
        })
    }

    const CONDITIONS: [(&str, &str); 6] = [
        ("points_earned", "sum(points_earned.points) crosses 500"),
        (
            "points_earned",
            "count(points_earned within 2h) crosses 3 or avg(points_earned.points) > 100",
        ),
        (
            "product_viewed",
            "count(product_viewed within 30m) >= 3 and not did(points_earned within 1h)",
        ),
        (
            "product_viewed",
            "sum(product_viewed.price within 1h) crosses 300",
        ),
        (
            "product_viewed",
            "avg(product_viewed.price within 2h) > sum(points_earned.points within 1d) / 10",
        ),
        (
            "points_earned",
            "sum(points_earned.points within 1h) - sum(points_earned.points) < count(product_viewed)",
        ),
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// At every event of the trigger's kind, the condition evaluated over tallies is
        /// the condition evaluated over the events (`evaluate` asserts it).
        #[test]
        fn at_every_trigger(events in events(), which in 0..CONDITIONS.len()) {
            let (trigger_event, condition) = CONDITIONS[which];
            let model = model(trigger_event, condition);
            let start = at(1, 0, 0);
            let records: Vec<(String, EventRecord)> = events
                .iter()
                .enumerate()
                .map(|(i, (minute, amount, points))| {
                    let when = start + chrono::Duration::minutes(*minute);
                    let id = format!("e{i}");
                    if *points {
                        let points = Value::Int(*amount as i64);
                        ("points_earned".to_string(), event(&id, when, &[("points", points)]))
                    } else {
                        let price = Value::Number(*amount);
                        ("product_viewed".to_string(), event(&id, when, &[("price", price)]))
                    }
                })
                .collect();
            for (i, (kind, trigger)) in records.iter().enumerate() {
                if kind != trigger_event {
                    continue;
                }
                // The history as the engine has it at the trigger: up to this event.
                let mut history = Events::default();
                for (kind, e) in &records[..=i] {
                    history.0.entry((kind.clone(), false)).or_default().push(e.clone());
                }
                evaluate(&model, &history, trigger, &[]);
            }
        }
    }
}

proptest::proptest! {
    /// The stale half of a time-ordered list, found from its middle item: what counting the
    /// items before the bound finds, when they are at least half.
    #[test]
    fn the_stale_half_is_found_from_the_middle(
        mut seconds in proptest::collection::vec(0i64..50, 0..40),
        from in -5i64..55,
    ) {
        seconds.sort_unstable();
        let at = |s: &i64| Utc.timestamp_opt(*s, 0).unwrap();
        let from = Utc.timestamp_opt(from, 0).unwrap();
        let before = seconds.iter().filter(|s| at(s) < from).count();
        let expected = if before * 2 >= seconds.len() { before } else { 0 };
        proptest::prop_assert_eq!(moments::eval::stale_half(&seconds, at, from), expected);
    }
}

mod searched_from_the_back {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Searching a sorted slice from its back gives `partition_point`'s answer, for any
        /// length and any bound, before, between, on and after the items.
        #[test]
        fn as_partition_point(
            mut items in proptest::collection::vec(0u32..200, 0..300),
            bound in 0u32..210,
        ) {
            items.sort_unstable();
            for is_before in [|x: &u32, b: u32| *x < b, |x: &u32, b: u32| *x <= b] {
                prop_assert_eq!(
                    moments::eval::partition_from_back(&items, |x| is_before(x, bound)),
                    items.partition_point(|x| is_before(x, bound))
                );
            }
        }
    }
}
