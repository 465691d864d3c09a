//! The engine on small hand-written timelines. Every expected entry is worked out by hand
//! from the rules of the language, never by running the engine.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use moments::check::check;
use moments::diagnostic::{SourceFile, Sources};
use moments::engine::run;
use moments::model::Model;
use moments::outcome::Fate;
use moments::value::{interned, Origin, Record, RecordKind, Value};

const SCHEMA: &str = r#"
customer {
  first_name: text?
  timezone: timezone?
  email_opt_in: bool = false
  birthday: date?
}
event product_added "Product Added" { product_id: text, price: number }
event order_completed "Order Completed" { order_id: text, total: number }
defaults {
  timezone "Europe/London"
  cap 2 per customer per 7d
  consent email requires customer.email_opt_in
}
"#;

fn model(moments: &[(&str, &str)]) -> Model {
    model_with(SCHEMA, moments)
}

fn model_with(schema: &str, moments: &[(&str, &str)]) -> Model {
    let mut sources = Sources::default();
    let schema = sources.add(SourceFile::new("schema.moment", schema));
    let ids: Vec<usize> = moments
        .iter()
        .map(|(name, text)| sources.add(SourceFile::new(format!("{name}.moment"), *text)))
        .collect();
    let checked = check(&sources, Some(schema), &ids);
    assert!(checked.diagnostics.is_empty(), "{:#?}", checked.diagnostics);
    checked.model.expect("valid")
}

fn t(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, hour, minute, 0)
        .unwrap()
}

fn identify(id: &str, customer: &str, at: DateTime<Utc>, traits: &[(&str, Value)]) -> Record {
    Record {
        at,
        customer: Some(customer.into()),
        id: id.into(),
        kind: RecordKind::Identify {
            traits: traits
                .iter()
                .map(|(k, v)| (interned(k), v.clone()))
                .collect(),
        },
        origin: Origin {
            file: "test",
            line: 0,
        },
    }
}

fn track(
    id: &str,
    customer: &str,
    at: DateTime<Utc>,
    event: &str,
    props: &[(&str, Value)],
) -> Record {
    Record {
        at,
        customer: Some(customer.into()),
        id: id.into(),
        kind: RecordKind::Event {
            event: interned(event),
            properties: props.iter().map(|(k, v)| (*k, v.clone())).collect(),
        },
        origin: Origin {
            file: "test",
            line: 0,
        },
    }
}

fn added(id: &str, customer: &str, at: DateTime<Utc>, price: f64) -> Record {
    track(
        id,
        customer,
        at,
        "product_added",
        &[
            ("product_id", Value::text("p1")),
            ("price", Value::Number(price)),
        ],
    )
}

fn ordered(id: &str, customer: &str, at: DateTime<Utc>) -> Record {
    track(
        id,
        customer,
        at,
        "order_completed",
        &[
            ("order_id", Value::text(id)),
            ("total", Value::Number(30.0)),
        ],
    )
}

const CART: &str = r#"
moment cart "Cart" {
  trigger {
    on product_added
    where event.price >= 20
    unless order_completed within 1h
  }
  message email {
    subject "Hi {{ customer.first_name | default('friend') }}"
    body "Your {{ event.product_id }} is waiting."
  }
  kpi "Return" = rate(order_completed within 1d after send)
  limit 1 per customer per 7d
  quiet hours 21:00 to 08:00
}
"#;

fn fates(
    model: &Model,
    records: Vec<Record>,
    now: DateTime<Utc>,
) -> Vec<(String, Option<Fate>, DateTime<Utc>)> {
    run(model, records.into_iter(), None, now)
        .entries
        .into_iter()
        .map(|e| (e.customer_id.to_string(), e.fate, e.trigger_at))
        .collect()
}

/// Ada, who takes email, puts a product of `price` in her cart at 10:00 on 18 November.
fn ada_adds_to_her_cart(price: f64) -> Vec<Record> {
    vec![
        identify(
            "i1",
            "ada",
            t(18, 9, 0),
            &[
                ("first_name", Value::text("Ada")),
                ("email_opt_in", Value::Bool(true)),
            ],
        ),
        added("a1", "ada", t(18, 10, 0), price),
    ]
}

#[test]
fn an_abandoned_cart_is_sent_an_hour_later_with_the_message_rendered() {
    let model = model(&[("cart", CART)]);
    let records = ada_adds_to_her_cart(25.0);
    let out = run(&model, records.into_iter(), None, t(19, 0, 0));
    assert_eq!(out.entries.len(), 1);
    assert_eq!(out.entries[0].fate, Some(Fate::Sent));
    assert_eq!(out.entries[0].due_at, t(18, 11, 0));
    assert_eq!(out.sends.len(), 1);
    assert_eq!(out.sends[0].sent_at, t(18, 11, 0));
    assert_eq!(out.sends[0].message["subject"], "Hi Ada");
    assert_eq!(out.sends[0].message["body"], "Your p1 is waiting.");
}

#[test]
fn a_template_sees_the_moment_the_send_its_lets_the_event_and_the_customer() {
    let context = r#"
moment cart_context "Cart, with context" {
  trigger {
    on product_added
    let doubled = event.price * 2
  }
  message email {
    subject "{{ moment.id }} / {{ moment.title }} / {{ send.id }}"
    body "{{ doubled }} {{ event.price }} {{ event.product_id }} {{ customer.first_name | default('friend') }} {{ customer.birthday | default('-') }}"
  }
  kpi "Return" = rate(order_completed within 1d after send)
}
"#;
    let model = model(&[("cart_context", context)]);
    let records = ada_adds_to_her_cart(12.5);
    let out = run(&model, records.into_iter(), None, t(19, 0, 0));
    assert_eq!(out.sends.len(), 1, "{:#?}", out.entries);
    let send = &out.sends[0];
    assert!(!send.send_id.is_empty());
    assert_eq!(
        send.message["subject"],
        format!("cart_context / Cart, with context / {}", send.send_id)
    );
    assert_eq!(send.message["body"], "25.0 12.5 p1 Ada -");
}

#[test]
fn an_order_within_the_hour_cancels() {
    let model = model(&[("cart", CART)]);
    let records = vec![
        identify(
            "i1",
            "ada",
            t(18, 9, 0),
            &[("email_opt_in", Value::Bool(true))],
        ),
        added("a1", "ada", t(18, 10, 0), 25.0),
        ordered("o1", "ada", t(18, 10, 23)),
    ];
    let out = run(&model, records.into_iter(), None, t(19, 0, 0));
    assert_eq!(out.entries[0].fate, Some(Fate::Cancelled));
    assert!(
        out.entries[0]
            .reason
            .starts_with("cancelled: Order Completed at 18 Nov 10:23"),
        "{}",
        out.entries[0].reason
    );
    assert!(out.sends.is_empty());
}

/// An `unless … where` reads the properties of the customer's kept events, also when
/// another moment's `unless` on the same event reads only when they happened.
#[test]
fn an_unless_condition_reads_the_properties_of_the_events_it_looks_at() {
    const BIG_ORDER: &str = r#"
moment big_order "Big order" {
  trigger {
    on product_added
    unless order_completed where order_completed.total >= 50 within 1h
  }
  message email { subject "Still thinking?" body "Your cart is waiting." }
  kpi "Return" = rate(order_completed within 1d after send)
}
"#;
    let model = model(&[("cart", CART), ("big_order", BIG_ORDER)]);
    let order = |id: &str, customer: &str, total: f64| {
        let at = t(18, 10, 30);
        let properties = [
            ("order_id", Value::text(id)),
            ("total", Value::Number(total)),
        ];
        track(id, customer, at, "order_completed", &properties)
    };
    let opted_in = [("email_opt_in", Value::Bool(true))];
    let records = vec![
        identify("i1", "ada", t(18, 9, 0), &opted_in),
        identify("i2", "bea", t(18, 9, 0), &opted_in),
        added("a1", "ada", t(18, 10, 0), 25.0),
        added("a2", "bea", t(18, 10, 0), 25.0),
        order("o1", "ada", 80.0),
        order("o2", "bea", 20.0),
    ];
    let mut fates: Vec<(String, String, Option<Fate>)> =
        run(&model, records.into_iter(), None, t(19, 0, 0))
            .entries
            .into_iter()
            .map(|e| (e.moment.to_string(), e.customer_id.to_string(), e.fate))
            .collect();
    fates.sort();
    // Both orders cancel the cart; only Ada's, of 50 or more, cancels the big order's.
    let fate =
        |moment: &str, customer: &str, fate| (moment.to_string(), customer.to_string(), Some(fate));
    assert_eq!(
        fates,
        [
            fate("big_order", "ada", Fate::Cancelled),
            fate("big_order", "bea", Fate::Sent),
            fate("cart", "ada", Fate::Cancelled),
            fate("cart", "bea", Fate::Cancelled),
        ]
    );
}

#[test]
fn a_cheap_item_does_not_enter_and_an_unsubscribe_before_the_send_blocks_it() {
    let model = model(&[("cart", CART)]);
    let records = vec![
        identify(
            "i1",
            "ada",
            t(18, 9, 0),
            &[("email_opt_in", Value::Bool(true))],
        ),
        added("a1", "ada", t(18, 10, 0), 5.0),
        added("a2", "ada", t(18, 12, 0), 50.0),
        // Unsubscribes at 12:30; the send was due at 13:00.
        identify(
            "i2",
            "ada",
            t(18, 12, 30),
            &[("email_opt_in", Value::Bool(false))],
        ),
    ];
    assert_eq!(
        fates(&model, records, t(19, 0, 0)),
        vec![("ada".into(), Some(Fate::NoConsent), t(18, 12, 0))]
    );
}

#[test]
fn quiet_hours_move_the_send_to_the_morning_in_the_customer_zone() {
    let model = model(&[("cart", CART)]);
    // Paris is UTC+1 in November: 21:30 UTC added → due 22:30 UTC = 23:30 Paris, quiet until
    // 08:00 Paris = 07:00 UTC next day.
    let records = vec![
        identify(
            "i1",
            "ada",
            t(18, 9, 0),
            &[
                ("email_opt_in", Value::Bool(true)),
                ("timezone", Value::text("Europe/Paris")),
            ],
        ),
        added("a1", "ada", t(18, 21, 30), 25.0),
    ];
    let out = run(&model, records.into_iter(), None, t(20, 0, 0));
    assert_eq!(out.sends[0].sent_at, t(19, 7, 0));
    assert!(
        out.entries[0].reason.contains("moved by quiet hours"),
        "{}",
        out.entries[0].reason
    );
}

/// Ada's carts, with the cart moment's limit of one a week.
fn three_carts_in_a_week() -> Vec<Record> {
    vec![
        identify(
            "i1",
            "ada",
            t(2, 9, 0),
            &[("email_opt_in", Value::Bool(true))],
        ),
        added("a1", "ada", t(2, 10, 0), 25.0), // sent 11:00 on the 2nd
        added("a2", "ada", t(5, 10, 0), 25.0), // within 7d: limited
        added("a3", "ada", t(9, 12, 0), 25.0), // sent 13:00 on the 9th: 7d and 2h later
    ]
}

#[test]
fn the_limit_allows_one_send_a_week() {
    let model = model(&[("cart", CART)]);
    let got: Vec<Option<Fate>> = fates(&model, three_carts_in_a_week(), t(12, 0, 0))
        .into_iter()
        .map(|f| f.1)
        .collect();
    assert_eq!(
        got,
        vec![Some(Fate::Sent), Some(Fate::Limited), Some(Fate::Sent)]
    );
}

#[test]
fn an_entry_before_from_is_not_reported_but_still_counts_for_the_limit() {
    let model = model(&[("cart", CART)]);
    // a1 is before `from`: sent, not reported, and it still limits a2.
    let records = three_carts_in_a_week();
    let out = run(&model, records.into_iter(), Some(t(4, 0, 0)), t(12, 0, 0));
    let got: Vec<(&str, Option<Fate>)> = out
        .entries
        .iter()
        .map(|e| (&*e.trigger_key, e.fate))
        .collect();
    assert_eq!(
        got,
        vec![("a2", Some(Fate::Limited)), ("a3", Some(Fate::Sent))]
    );
    assert!(
        out.entries[0]
            .reason
            .starts_with("limited: already had this moment at"),
        "{}",
        out.entries[0].reason
    );
    let sent: Vec<&str> = out.sends.iter().map(|s| &*s.customer_id).collect();
    assert_eq!(sent, ["ada"], "only a3's send is reported");
}

#[test]
fn entries_due_after_now_are_pending_and_running_in_steps_gives_the_same_sends() {
    let model = model(&[("cart", CART)]);
    let records = || {
        vec![
            identify(
                "i1",
                "ada",
                t(18, 9, 0),
                &[("email_opt_in", Value::Bool(true))],
            ),
            added("a1", "ada", t(18, 10, 0), 25.0),
        ]
    };
    let early = run(&model, records().into_iter(), None, t(18, 10, 30));
    assert_eq!(early.entries[0].fate, None);
    assert!(early.sends.is_empty());
    let whole = run(&model, records().into_iter(), None, t(18, 12, 0));
    let stepped: Vec<_> = (10..=12)
        .flat_map(|h| run(&model, records().into_iter(), None, t(18, h, 0)).sends)
        .map(|s| s.send_id)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let whole_ids: Vec<_> = whole.sends.iter().map(|s| s.send_id.clone()).collect();
    assert_eq!(stepped, whole_ids);
}

/// Moments `(id, priority)` on `order_completed`, declared in this order; the fate of each
/// after Ada (opted in to email) orders once.
fn fates_of_one_order(moments: &[(&str, u64)]) -> BTreeMap<String, Option<Fate>> {
    let texts: Vec<(&str, String)> = moments
        .iter()
        .map(|(id, priority)| {
            (*id, format!(
                "moment {id} \"{id}\" {{\n  trigger {{ on order_completed }}\n  message email {{ subject \"s\" body \"b\" }}\n  kpi \"k\" = rate(order_completed within 1d after send)\n  priority {priority}\n}}\n"
            ))
        })
        .collect();
    let files: Vec<(&str, &str)> = texts
        .iter()
        .map(|(id, text)| (*id, text.as_str()))
        .collect();
    let model = model(&files);
    let records = vec![
        identify(
            "i1",
            "ada",
            t(18, 9, 0),
            &[("email_opt_in", Value::Bool(true))],
        ),
        ordered("o1", "ada", t(18, 10, 0)),
    ];
    run(&model, records.into_iter(), None, t(19, 0, 0))
        .entries
        .into_iter()
        .map(|e| (e.moment.to_string(), e.fate))
        .collect()
}

#[test]
fn the_global_cap_and_priority_decide_between_moments_due_together() {
    // Two moments on the same event, both due at once; the cap allows 2 a week. A third
    // moment with lower priority is capped.
    let by_moment = fates_of_one_order(&[("a", 1), ("b", 5), ("c", 3)]);
    assert_eq!(by_moment["b"], Some(Fate::Sent));
    assert_eq!(by_moment["c"], Some(Fate::Sent));
    assert_eq!(by_moment["a"], Some(Fate::Capped));
}

#[test]
fn at_equal_priority_the_cap_goes_to_moments_in_the_order_of_their_ids() {
    // Three moments of one priority, declared out of the order of their ids; the cap
    // allows 2 a week, so the last id is capped.
    let by_moment = fates_of_one_order(&[("b", 1), ("c", 1), ("a", 1)]);
    assert_eq!(by_moment["a"], Some(Fate::Sent));
    assert_eq!(by_moment["b"], Some(Fate::Sent));
    assert_eq!(by_moment["c"], Some(Fate::Capped));
}

/// A message on every order, with half of the customers held out.
const HELD: &str = r#"
moment held "Held" {
  trigger { on order_completed }
  message email { subject "s" body "b" }
  kpi "k" = rate(order_completed within 1d after send)
  holdout 50%
}
"#;

#[test]
fn holdout_and_inactive() {
    let dated = r#"
moment dated "Dated" {
  trigger { on order_completed }
  message email { subject "s" body "b" }
  kpi "k" = rate(order_completed within 1d after send)
  active from 2026-12-01
}
"#;
    let model = model(&[("held", HELD), ("dated", dated)]);
    let mut records = Vec::new();
    for i in 0..40 {
        let c = format!("c{i:02}");
        records.push(identify(
            &format!("i{i}"),
            &c,
            t(1, 9, 0),
            &[("email_opt_in", Value::Bool(true))],
        ));
    }
    for i in 0..40 {
        records.push(ordered(&format!("o{i}"), &format!("c{i:02}"), t(18, 10, 0)));
    }
    records.sort_by(|a, b| {
        (a.at, a.customer.clone(), a.id.clone()).cmp(&(b.at, b.customer.clone(), b.id.clone()))
    });
    let out = run(&model, records.into_iter(), None, t(19, 0, 0));
    let held_fates: Vec<Fate> = out
        .entries
        .iter()
        .filter(|e| &*e.moment == "held")
        .filter_map(|e| e.fate)
        .collect();
    let control = held_fates.iter().filter(|f| **f == Fate::Control).count();
    assert_eq!(held_fates.len(), 40);
    assert!(
        control > 5 && control < 35,
        "a 50% holdout of 40 gave {control}"
    );
    assert!(out
        .entries
        .iter()
        .filter(|e| &*e.moment == "dated")
        .all(|e| e.fate == Some(Fate::Inactive)));
    // Control entries are recorded as sends of the control group, never as treatment.
    assert_eq!(
        out.sends
            .iter()
            .filter(|s| s.group == moments::outcome::Group::Control)
            .count(),
        control
    );
}

#[test]
fn birthdays_fire_yearly_at_local_time_and_29_february_falls_on_28() {
    let birthday = r#"
moment bday "Birthday" {
  trigger { on anniversary of customer.birthday at 09:00 }
  message email { subject "Happy birthday" body "b" }
  kpi "k" = sum(order_completed.total within 7d after send)
}
"#;
    let model = model(&[("bday", birthday)]);
    let records = vec![identify(
        "i1",
        "ada",
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        &[
            ("email_opt_in", Value::Bool(true)),
            (
                "birthday",
                Value::Date(chrono::NaiveDate::from_ymd_opt(2000, 2, 29).unwrap()),
            ),
        ],
    )];
    let out = run(
        &model,
        records.into_iter(),
        None,
        Utc.with_ymd_and_hms(2028, 12, 31, 0, 0, 0).unwrap(),
    );
    let sent: Vec<DateTime<Utc>> = out.sends.iter().map(|s| s.sent_at).collect();
    // London is UTC+0 in February: 09:00 local = 09:00 UTC.
    assert_eq!(
        sent,
        vec![
            Utc.with_ymd_and_hms(2026, 2, 28, 9, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2027, 2, 28, 9, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2028, 2, 29, 9, 0, 0).unwrap(),
        ]
    );
}

const DAILY: &str = r#"
moment daily "Daily digest" {
  trigger {
    every "0 9 * * *" in "UTC"
    wait 30m
  }
  message email {
    subject "Today"
    body "Hello"
  }
  kpi "Order rate" = rate(order_completed within 1d after send)
}
"#;

/// Days without any record in between: each 09:00 fires once, and its decision (due
/// 09:30) is made at 09:30, before the next record is read (the unsubscribe of the 21st
/// does not reach back to the 20th).
#[test]
fn a_daily_schedule_fires_once_a_day_across_days_without_data() {
    let model = model(&[("daily", DAILY)]);
    let records = vec![
        identify(
            "i1",
            "ada",
            t(18, 8, 0),
            &[("email_opt_in", Value::Bool(true))],
        ),
        // Nothing on the 19th and 20th; this unsubscribe comes after the 20th's send.
        identify(
            "i2",
            "ada",
            t(21, 8, 0),
            &[("email_opt_in", Value::Bool(false))],
        ),
    ];
    let out = run(&model, records.into_iter(), None, t(22, 0, 0));
    let got: Vec<(DateTime<Utc>, Option<Fate>)> =
        out.entries.iter().map(|e| (e.trigger_at, e.fate)).collect();
    assert_eq!(
        got,
        vec![
            (t(18, 9, 0), Some(Fate::Sent)),
            (t(19, 9, 0), Some(Fate::Sent)),
            // The schema's cap: 2 per customer per 7d.
            (t(20, 9, 0), Some(Fate::Capped)),
            (t(21, 9, 0), Some(Fate::NoConsent)),
        ]
    );
}

const SHOP: &str = r#"
customer {
  email_opt_in: bool = true
}
event product_viewed "Product Viewed" { product_id: text, size: int }
event order_completed "Order Completed" { order_id: text, size: number, products: list<{ product_id: text }> }
defaults {
  timezone "UTC"
  consent email requires customer.email_opt_in
}
"#;

fn shop_model(name: &str, moment: &str) -> Model {
    model_with(SHOP, &[(name, moment)])
}

fn shop_order(id: &str, customer: &str, at: DateTime<Utc>, size: f64, products: &[&str]) -> Record {
    let items: Vec<Value> = products
        .iter()
        .map(|p| {
            Value::Record(Arc::new(
                [(Arc::from("product_id"), Value::text(p))]
                    .into_iter()
                    .collect(),
            ))
        })
        .collect();
    track(
        id,
        customer,
        at,
        "order_completed",
        &[
            ("order_id", Value::text(id)),
            ("size", Value::Number(size)),
            ("products", Value::List(Arc::from(items))),
        ],
    )
}

fn viewed(id: &str, customer: &str, at: DateTime<Utc>, product: &str, size: i64) -> Record {
    track(
        id,
        customer,
        at,
        "product_viewed",
        &[
            ("product_id", Value::text(product)),
            ("size", Value::Int(size)),
        ],
    )
}

/// `count(E across customers where KEY in E.path …)` and `E.path == KEY` (an int key
/// against number properties): the counts the shop's history gives, worked out by hand.
#[test]
fn across_customers_counts_by_product_and_by_value() {
    let popular = shop_model(
        "popular",
        r#"
moment popular "Popular" {
  trigger {
    on product_viewed
    where count(order_completed across customers where event.product_id in order_completed.products.product_id within 24h) >= 2
  }
  message email {
    subject "Popular"
    body "Others bought it."
  }
  kpi "Orders" = rate(order_completed within 1d after send)
}
"#,
    );
    let same_size = shop_model(
        "sized",
        r#"
moment sized "Same size" {
  trigger {
    on product_viewed
    where count(order_completed across customers where order_completed.size == event.size within 24h) == 1
  }
  message email {
    subject "Your size"
    body "Others bought it."
  }
  kpi "Orders" = rate(order_completed within 1d after send)
}
"#,
    );
    let records = vec![
        shop_order("o1", "x", t(18, 9, 0), 38.0, &["p1", "p2"]),
        shop_order("o2", "y", t(18, 10, 0), 39.0, &["p1", "p1"]),
        shop_order("o3", "z", t(18, 11, 0), 40.5, &["p3"]),
        // p1 was in 2 orders in the last 24h (o1, o2: the repeat in o2 counts once).
        viewed("v1", "ann", t(18, 12, 0), "p1", 38),
        // p2 only in o1.
        viewed("v2", "bob", t(18, 12, 0), "p2", 39),
        // 24h after o1 at 09:00 it still counts (the window includes its start); o2 too.
        viewed("v3", "cat", t(19, 9, 0), "p1", 41),
        // At 10:00:01 the next day o2 (10:00) is out of the window: one left... none.
        viewed("v4", "dan", t(19, 10, 1), "p1", 40),
    ];
    let entered = |model: &Model| -> Vec<String> {
        run(model, records.clone().into_iter(), None, t(20, 0, 0))
            .entries
            .into_iter()
            .map(|e| e.customer_id.to_string())
            .collect()
    };
    assert_eq!(entered(&popular), vec!["ann", "cat"]);
    // Sizes: ann 38 = o1's 38.0 (int against number: one order); bob 39 = o2; cat 41: none;
    // dan 40 is not 40.5, and o1 and o2 are out of his window anyway.
    assert_eq!(entered(&same_size), vec!["ann", "bob"]);
}

/// A catalog event fans out to the customers known so far; a moment that needs a customer
/// event (`did(E …)`, `count(E) >= 1`) considers only those who have had one, and one that
/// does not (`count(E) >= 0`, `not did(E)`) considers everyone: the entries are the same as
/// if everyone were considered.
#[test]
fn a_catalog_event_reaches_every_customer_its_condition_can_hold_for() {
    let schema = format!("{SHOP}\nevent restocked \"Restocked\" catalog {{ product_id: text }}\n");
    let moment = |condition: &str| {
        format!(
            r#"
moment restock "Restock" {{
  trigger {{
    on restocked
    where {condition}
  }}
  message email {{
    subject "Back"
    body "It is back."
  }}
  kpi "Orders" = rate(order_completed within 1d after send)
}}
"#
        )
    };
    let restocked = |id: &str, at: DateTime<Utc>| Record {
        customer: None,
        ..track(
            id,
            "-",
            at,
            "restocked",
            &[("product_id", Value::text("p1"))],
        )
    };
    let records = vec![
        viewed("v1", "bob", t(18, 9, 0), "p1", 1),
        viewed("v2", "ann", t(18, 9, 30), "p2", 1),
        identify("i1", "cat", t(18, 9, 45), &[]),
        restocked("r1", t(18, 10, 0)),
        // Dan arrives after the first restock, with a view of p1.
        viewed("v3", "dan", t(18, 11, 0), "p1", 1),
        restocked("r2", t(18, 12, 0)),
    ];
    let entered = |condition: &str| -> Vec<(String, DateTime<Utc>)> {
        let model = model_with(&schema, &[("restock", &moment(condition))]);
        run(&model, records.clone().into_iter(), None, t(20, 0, 0))
            .entries
            .into_iter()
            .map(|e| (e.customer_id.to_string(), e.trigger_at))
            .collect()
    };
    let (at10, at12) = (t(18, 10, 0), t(18, 12, 0));
    let s = |id: &str, at| (id.to_string(), at);
    assert_eq!(
        entered("did(product_viewed where product_viewed.product_id == event.product_id)"),
        vec![s("bob", at10), s("bob", at12), s("dan", at12)]
    );
    assert_eq!(
        entered("count(product_viewed) >= 1 and customer.email_opt_in"),
        vec![
            s("ann", at10),
            s("ann", at12),
            s("bob", at10),
            s("bob", at12),
            s("dan", at12)
        ]
    );
    assert_eq!(
        entered("count(product_viewed) >= 0"),
        vec![
            s("ann", at10),
            s("ann", at12),
            s("bob", at10),
            s("bob", at12),
            s("cat", at10),
            s("cat", at12),
            s("dan", at12)
        ]
    );
    assert_eq!(
        entered("not did(product_viewed)"),
        vec![s("cat", at10), s("cat", at12)]
    );
}

/// `count(E where E.path == KEY)` of the customer's own events reads an index of them by
/// key; under `crosses` (the value just before the trigger) it reads the events.
#[test]
fn own_events_counted_by_key_with_and_without_crosses() {
    let moment = |condition: &str| {
        format!(
            r#"
moment again "Again" {{
  trigger {{
    on product_viewed
    where {condition}
  }}
  message email {{
    subject "Again"
    body "You looked again."
  }}
  kpi "Orders" = rate(order_completed within 1d after send)
}}
"#
        )
    };
    let records = vec![
        viewed("v1", "ann", t(18, 9, 0), "p1", 1),
        viewed("v2", "ann", t(18, 9, 1), "p2", 1),
        viewed("v3", "ann", t(18, 9, 2), "p1", 2),
        viewed("v4", "bob", t(18, 9, 3), "p1", 1),
        viewed("v5", "ann", t(18, 9, 4), "p1", 3),
        // Same instant as v5: the trigger counts the events up to and including itself.
        viewed("v6", "ann", t(18, 9, 4), "p1", 1),
    ];
    let entered = |condition: &str| -> Vec<DateTime<Utc>> {
        let model = shop_model("again", &moment(condition));
        run(&model, records.clone().into_iter(), None, t(20, 0, 0))
            .entries
            .into_iter()
            .map(|e| e.trigger_at)
            .collect()
    };
    let same = "count(product_viewed where product_viewed.product_id == event.product_id)";
    // Ann's p1 views: v1 (1), v3 (2), v5 (3), v6 (4); Bob's v4 is his own first.
    assert_eq!(entered(&format!("{same} == 2")), vec![t(18, 9, 2)]);
    assert_eq!(entered(&format!("{same} crosses 3")), vec![t(18, 9, 4)]);
    // Within 2 minutes of 09:04: v3 (09:02), v5 and, for the second trigger at 09:04, v6.
    let recent =
        "count(product_viewed where product_viewed.product_id == event.product_id within 2m)";
    assert_eq!(entered(&format!("{recent} >= 3")), vec![t(18, 9, 4)]);
}

/// `across customers` in a consent rule and in an `unless` condition reads the shop's events
/// like it does in a `where`.
#[test]
fn across_customers_in_consent_rules_and_unless_conditions() {
    let schema = SHOP.replace(
        "consent email requires customer.email_opt_in",
        "consent email requires customer.email_opt_in and count(order_completed across customers within 1h) < 2",
    );
    let moment = r#"
moment nudge "Nudge" {
  trigger {
    on product_viewed
    wait 30m
    unless product_viewed where count(order_completed across customers within 1h) >= 1
  }
  message email {
    subject "Still there?"
    body "Come back."
  }
  kpi "Orders" = rate(order_completed within 1d after send)
}
"#;
    let model = model_with(&schema, &[("nudge", moment)]);
    let records = vec![
        // Ann: another view at 09:10, with no order in the hour before: not cancelled; two
        // orders by others in the hour before her send at 09:30: no consent.
        viewed("v1", "ann", t(18, 9, 0), "p1", 1),
        viewed("v2", "ann", t(18, 9, 10), "p2", 1),
        shop_order("o1", "x", t(18, 9, 15), 10.0, &["p3"]),
        shop_order("o2", "y", t(18, 9, 20), 10.0, &["p3"]),
        // Bob at 12:00: his second view, 5 minutes after someone's order, cancels it.
        viewed("v3", "bob", t(18, 12, 0), "p1", 1),
        shop_order("o3", "x", t(18, 12, 5), 10.0, &["p3"]),
        viewed("v4", "bob", t(18, 12, 10), "p3", 1),
    ];
    let fates = |customer: &str| -> Vec<Option<Fate>> {
        run(&model, records.clone().into_iter(), None, t(20, 0, 0))
            .entries
            .into_iter()
            .filter(|e| {
                &*e.customer_id == customer && e.trigger_at.format("%M").to_string() == "00"
            })
            .map(|e| e.fate)
            .collect()
    };
    assert_eq!(fates("ann"), vec![Some(Fate::NoConsent)]);
    assert_eq!(fates("bob"), vec![Some(Fate::Cancelled)]);
}

/// Each fate says why in words, with the instants in the customer's zone (London, UTC in
/// November). CART's send is due an hour after the trigger (its `unless … within 1h`).
#[test]
fn each_fate_gives_its_reason_in_words() {
    let dated = r#"
moment dated "Dated" {
  trigger { on order_completed }
  message email { subject "s" body "b" }
  kpi "k" = rate(order_completed within 1d after send)
  active from 2026-12-01 until 2026-12-31
}
"#;
    let model = model(&[("cart", CART), ("held", HELD), ("dated", dated)]);
    let opted_in = |id: &str, customer: &str| {
        identify(
            id,
            customer,
            t(1, 9, 0),
            &[("email_opt_in", Value::Bool(true))],
        )
    };
    let mut records = vec![
        opted_in("i1", "ada"),
        opted_in("i2", "cy"),
        opted_in("i3", "di"),
        // Bo never says whether she takes email.
        added("a1", "bo", t(18, 10, 0), 25.0),
        added("a2", "ada", t(18, 10, 0), 25.0),
        added("a3", "di", t(18, 10, 0), 25.0),
        ordered("o1", "di", t(18, 10, 23)),
        added("a4", "cy", t(18, 20, 30), 25.0),
        added("a5", "ada", t(19, 10, 0), 25.0),
    ];
    for i in 0..10 {
        records.push(opted_in(&format!("h{i}"), &format!("h{i}")));
        records.push(ordered(&format!("ho{i}"), &format!("h{i}"), t(20, 9, 0)));
    }
    records.sort_by(|a, b| {
        (a.at, a.customer.clone(), a.id.clone()).cmp(&(b.at, b.customer.clone(), b.id.clone()))
    });
    let out = run(&model, records.into_iter(), None, t(21, 0, 0));
    let reason = |moment: &str, customer: &str, at: DateTime<Utc>| {
        out.entries
            .iter()
            .find(|e| &*e.moment == moment && &*e.customer_id == customer && e.trigger_at == at)
            .map(|e| e.reason.as_str())
    };
    assert_eq!(
        reason("cart", "bo", t(18, 10, 0)),
        Some("no_consent: email consent not given at 18 Nov 11:00: email_opt_in false (never set)")
    );
    assert_eq!(reason("cart", "ada", t(18, 10, 0)), Some("sent"));
    assert_eq!(
        reason("cart", "ada", t(19, 10, 0)),
        Some("limited: already had this moment at 18 Nov 11:00, limit 1 per 1w")
    );
    assert_eq!(
        reason("cart", "di", t(18, 10, 0)),
        Some("cancelled: Order Completed at 18 Nov 10:23, 23m after the trigger")
    );
    assert_eq!(
        reason("cart", "cy", t(18, 20, 30)),
        Some("sent: moved by quiet hours from 18 Nov 21:30 to 19 Nov 08:00")
    );
    assert_eq!(
        reason("dated", "di", t(18, 10, 23)),
        Some("inactive: the moment is active from 2026-12-01 until 2026-12-31")
    );
    let held: Vec<&str> = out
        .entries
        .iter()
        .filter(|e| &*e.moment == "held" && e.fate == Some(Fate::Control))
        .map(|e| e.reason.as_str())
        .collect();
    assert!(!held.is_empty());
    assert!(
        held.iter().all(|r| *r == "control: in the 50% holdout"),
        "{held:?}"
    );
}
