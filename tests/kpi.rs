//! KPIs on small hand-written timelines: every expected figure is worked out by hand here
//! (or taken from the literature, for the intervals), never by running the code.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use moments::check::check;
use moments::diagnostic::{SourceFile, Sources};
use moments::kpi::{measure, wilson, GoalStatus, MomentKpi, Verdict};
use moments::model::Model;
use moments::outcome::{Group, Send};
use moments::schedule::send_id;
use moments::value::{interned, Origin, Record, RecordKind, Value};

const SCHEMA: &str = r#"
customer {
  email_opt_in: bool = true
}
event product_added "Product Added" { product_id: text }
event order_completed "Order Completed" { order_id: text, total: number, products: list<{ product_id: text }> }
event message_clicked "Message Clicked" { send_id: text }
defaults {
  timezone "UTC"
  consent email requires customer.email_opt_in
}
"#;

fn model(kpi: &str) -> Model {
    let moment = format!(
        r#"
moment cart "Cart" {{
  trigger {{
    on product_added
  }}
  message email {{
    subject "Hi"
    body "Come back"
  }}
  kpi "The KPI" = {kpi}
  holdout 10%
}}
"#
    );
    let mut sources = Sources::default();
    let schema = sources.add(SourceFile::new("schema.moment", SCHEMA));
    let id = sources.add(SourceFile::new("cart.moment", moment));
    let checked = check(&sources, Some(schema), &[id]);
    assert!(checked.diagnostics.is_empty(), "{:#?}", checked.diagnostics);
    checked.model.expect("valid")
}

fn t(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).unwrap()
}

fn send(customer: &str, trigger_id: &str, at: DateTime<Utc>, group: Group) -> Send {
    Send {
        send_id: send_id("cart", customer, trigger_id),
        moment: "cart".into(),
        customer_id: customer.into(),
        channel: "email".to_string(),
        group,
        trigger_at: at,
        sent_at: at,
        message: BTreeMap::new(),
    }
}

fn event(
    id: &str,
    customer: &str,
    at: DateTime<Utc>,
    name: &str,
    props: Vec<(&str, Value)>,
) -> Record {
    Record {
        at,
        customer: Some(customer.into()),
        id: id.into(),
        kind: RecordKind::Event {
            event: interned(name),
            properties: props.into_iter().collect(),
        },
        origin: Origin {
            file: "test",
            line: 0,
        },
    }
}

fn order(id: &str, customer: &str, at: DateTime<Utc>, total: f64, product: &str) -> Record {
    let item: BTreeMap<Arc<str>, Value> = [(Arc::from("product_id"), Value::text(product))]
        .into_iter()
        .collect();
    event(
        id,
        customer,
        at,
        "order_completed",
        vec![
            ("order_id", Value::text(id)),
            ("total", Value::Number(total)),
            (
                "products",
                Value::List(Arc::from(vec![Value::Record(Arc::new(item))])),
            ),
        ],
    )
}

fn added(id: &str, customer: &str, at: DateTime<Utc>, product: &str) -> Record {
    event(
        id,
        customer,
        at,
        "product_added",
        vec![("product_id", Value::text(product))],
    )
}

fn only(kpis: Vec<MomentKpi>) -> MomentKpi {
    assert_eq!(kpis.len(), 1);
    kpis.into_iter().next().unwrap()
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 5e-5, "{a} is not {b}");
}

#[test]
fn wilson_intervals_match_the_published_ones() {
    // Newcombe (1998), Statistics in Medicine 17, table I: 81/263 and 15/148.
    let (low, high) = wilson(81, 263);
    close(low, 0.2553);
    close(high, 0.3662);
    let (low, high) = wilson(15, 148);
    close(low, 0.0624);
    close(high, 0.1605);
    // No success in 10: from 0 to 27.75%.
    let (low, high) = wilson(0, 10);
    close(low, 0.0);
    close(high, 0.2775);
}

#[test]
fn a_rate_counts_each_closed_send_once_and_leaves_open_windows_out() {
    let model = model("rate(order_completed within 1d after send)");
    let sends = vec![
        // Ordered 5 hours after: converted (twice, but one conversion).
        send("ann", "a1", t(1, 10), Group::Treatment),
        // Ordered 2 days after: outside the window.
        send("bob", "a2", t(1, 10), Group::Treatment),
        // Sent late on the 5th: its window closes after the data ends.
        send("cat", "a3", t(5, 10), Group::Treatment),
        // Control: ordered an hour after the instant it would have been sent.
        send("dan", "a4", t(1, 10), Group::Control),
    ];
    let records = vec![
        order("o0", "ann", t(1, 9), 10.0, "p1"), // before the send: not counted
        order("o1", "ann", t(1, 15), 20.0, "p1"),
        order("o2", "ann", t(1, 16), 30.0, "p1"),
        order("o3", "bob", t(3, 10), 40.0, "p1"),
        order("o4", "dan", t(1, 11), 50.0, "p1"),
        order("o5", "eve", t(5, 20), 60.0, "p1"), // the last record: as of the 5th, 20:00
    ];
    let (kpis, as_of) = measure(&model, &sends, records.into_iter(), None);
    assert_eq!(as_of, t(5, 20));
    let kpi = only(kpis);
    assert_eq!(kpi.treatment.sends, 3);
    assert_eq!(kpi.treatment.open, 1);
    assert_eq!(kpi.treatment.measured, 2);
    assert_eq!(kpi.treatment.conversions, 1);
    assert_eq!(kpi.treatment.events, 2);
    assert_eq!(kpi.treatment.value, Some(0.5));
    let (low, high) = wilson(1, 2);
    assert_eq!(kpi.treatment.ci_low, Some(low));
    assert_eq!(kpi.treatment.ci_high, Some(high));
    assert_eq!(kpi.control.measured, 1);
    assert_eq!(kpi.control.value, Some(1.0));
    // 2 and 1 sends say nothing.
    assert_eq!(kpi.verdict, Verdict::TooSmall);
    let lift = kpi.lift.expect("a lift");
    close(lift.absolute, -0.5);
}

#[test]
fn sum_is_per_send_and_avg_per_event() {
    let sends = vec![
        send("ann", "a1", t(1, 10), Group::Treatment),
        send("bob", "a2", t(1, 10), Group::Treatment),
    ];
    let records = || {
        vec![
            order("o1", "ann", t(1, 11), 20.0, "p1"),
            order("o2", "ann", t(1, 12), 40.0, "p1"),
            order("o3", "bob", t(1, 13), 30.0, "p1"),
            order("o9", "zed", t(9, 0), 1.0, "p1"),
        ]
    };
    // Per send: ann 60, bob 30: mean 45, sample variance 450, standard error 15.
    let kpi = only(
        measure(
            &model("sum(order_completed.total within 1d after send)"),
            &sends,
            records().into_iter(),
            None,
        )
        .0,
    );
    assert_eq!(kpi.treatment.value, Some(45.0));
    assert_eq!(kpi.treatment.total, 90.0);
    close(kpi.treatment.ci_low.unwrap(), 45.0 - 1.959964 * 15.0);
    // Per event: 20, 40, 30: mean 30.
    let kpi = only(
        measure(
            &model("avg(order_completed.total within 1d after send)"),
            &sends,
            records().into_iter(),
            None,
        )
        .0,
    );
    assert_eq!(kpi.treatment.value, Some(30.0));
    assert_eq!(kpi.treatment.events, 3);
    // Per send: ann 2 orders, bob 1: 1.5.
    let kpi = only(
        measure(
            &model("count(order_completed within 1d after send)"),
            &sends,
            records().into_iter(),
            None,
        )
        .0,
    );
    assert_eq!(kpi.treatment.value, Some(1.5));
}

#[test]
fn a_kpi_condition_reads_the_send_and_the_trigger_event() {
    let sends = vec![
        send("ann", "a1", t(1, 10), Group::Treatment),
        send("bob", "a2", t(1, 10), Group::Treatment),
    ];
    let ann_send = sends[0].send_id.clone();
    let records = || {
        vec![
            added("a1", "ann", t(1, 10), "p1"),
            added("a2", "bob", t(1, 10), "p2"),
            // ann clicks her own message; bob clicks another one.
            event(
                "k1",
                "ann",
                t(1, 11),
                "message_clicked",
                vec![("send_id", Value::text(&ann_send))],
            ),
            event(
                "k2",
                "bob",
                t(1, 11),
                "message_clicked",
                vec![("send_id", Value::text("other"))],
            ),
            // ann buys another product, bob the one he added.
            order("o1", "ann", t(1, 12), 10.0, "p9"),
            order("o2", "bob", t(1, 12), 10.0, "p2"),
            order("o9", "zed", t(9, 0), 1.0, "p1"),
        ]
    };
    let clicks = only(
        measure(
            &model("rate(message_clicked where message_clicked.send_id == send.id within 2d after send)"),
            &sends,
            records().into_iter(),
            None,
        )
        .0,
    );
    assert_eq!(clicks.treatment.conversions, 1);
    let bought = only(
        measure(
            &model("rate(order_completed where event.product_id in order_completed.products.product_id within 2d after send)"),
            &sends,
            records().into_iter(),
            None,
        )
        .0,
    );
    assert_eq!(
        bought.treatment.conversions, 1,
        "only bob bought what he added"
    );
}

/// 56 of 70 against 48 of 80: Newcombe (1998), Statistics in Medicine 17, 873–890, example
/// (a), method 10 (hybrid score): the difference 0.2 with the interval 0.0524 to 0.3339.
#[test]
fn lift_of_a_rate_uses_the_newcombe_interval() {
    let mut sends = Vec::new();
    let mut records = Vec::new();
    for (group, n, converted, prefix) in [
        (Group::Treatment, 70, 56, "t"),
        (Group::Control, 80, 48, "c"),
    ] {
        for i in 0..n {
            let customer = format!("{prefix}{i:03}");
            sends.push(send(&customer, &format!("a-{customer}"), t(1, 10), group));
            if i < converted {
                records.push(order(
                    &format!("o-{customer}"),
                    &customer,
                    t(1, 12),
                    5.0,
                    "p1",
                ));
            }
        }
    }
    records.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    let model = model("rate(order_completed within 1d after send)\n  goal >= 70%");
    let kpi = only(measure(&model, &sends, records.into_iter(), Some(t(3, 0))).0);
    close(kpi.treatment.value.unwrap(), 0.8);
    close(kpi.control.value.unwrap(), 0.6);
    let lift = kpi.lift.unwrap();
    close(lift.absolute, 0.2);
    close(lift.absolute_ci_low, 0.0524);
    close(lift.absolute_ci_high, 0.3339);
    close(lift.relative.unwrap(), 0.2 / 0.6);
    assert_eq!(kpi.verdict, Verdict::Better);
    // 80% with Wilson 69.2–87.7%: the whole interval is not at or above 70%.
    assert_eq!(kpi.goal_status, Some(GoalStatus::NotYetKnown));
    assert_eq!(kpi.goal.as_deref(), Some(">= 70%"));
}

#[test]
fn goals_are_met_missed_or_not_yet_known() {
    let mut sends = Vec::new();
    let mut records = Vec::new();
    for i in 0..100 {
        let customer = format!("c{i:03}");
        sends.push(send(
            &customer,
            &format!("a{i}"),
            t(1, 10),
            Group::Treatment,
        ));
        if i < 50 {
            records.push(order(&format!("o{i}"), &customer, t(1, 12), 5.0, "p1"));
        }
    }
    records.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    // 50 of 100: Wilson 40.4–59.6%.
    let status = |goal: &str| {
        let model = model(&format!(
            "rate(order_completed within 1d after send)\n  goal {goal}"
        ));
        only(measure(&model, &sends, records.clone().into_iter(), Some(t(3, 0))).0).goal_status
    };
    assert_eq!(status(">= 30%"), Some(GoalStatus::Met));
    assert_eq!(status(">= 70%"), Some(GoalStatus::Missed));
    assert_eq!(status(">= 50%"), Some(GoalStatus::NotYetKnown));
    // Nothing measured yet: every window still open.
    let model = model("rate(order_completed within 1d after send)\n  goal >= 30%");
    let kpi = only(measure(&model, &sends, records.clone().into_iter(), Some(t(1, 20))).0);
    assert_eq!(kpi.treatment.open, 100);
    assert_eq!(kpi.treatment.value, None);
    assert_eq!(kpi.goal_status, Some(GoalStatus::NotYetKnown));
    assert_eq!(kpi.verdict, Verdict::NoControl);
}
