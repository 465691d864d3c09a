//! Entries and sends as the backtest writes them, line by line without a serializer: the
//! same bytes as `serde_json` writes, whatever their texts hold (quotes, backslashes,
//! control characters, non-ASCII) and whatever their instants (fractions of a second,
//! years past 9999 or before 0).

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use moments::outcome::{Entry, Fate, Group, Send};
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_]{0,12}",
        any::<String>(),
        "[\"\\\\\\x00-\\x1f\\x7f é€😀a]{0,12}",
    ]
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let seconds = prop_oneof![
        // 1970 to 2100, mostly
        0i64..4_102_444_800,
        // any year chrono has
        -8_000_000_000_000i64..8_000_000_000_000,
    ];
    let nanos = prop_oneof![Just(0u32), 0u32..1_000_000_000, Just(5_000_000)];
    (seconds, nanos).prop_map(|(s, n)| Utc.timestamp_opt(s, n).unwrap())
}

fn fate() -> impl Strategy<Value = Option<Fate>> {
    prop_oneof![
        Just(None),
        (0..Fate::ALL.len()).prop_map(|i| Some(Fate::ALL[i]))
    ]
}

/// An entry with `moment` for its moment.
fn entry(moment: impl Strategy<Value = String>) -> impl Strategy<Value = Entry> {
    let texts = (moment, text(), text(), proptest::option::of(text()));
    (texts, instant(), instant(), fate()).prop_map(
        |((moment, customer, reason, send_id), trigger_at, due_at, fate)| Entry {
            moment: moment.into(),
            customer_id: customer.into(),
            trigger_at,
            due_at,
            fate,
            reason,
            send_id,
            trigger_key: "not written".into(),
        },
    )
}

proptest! {
    #[test]
    fn an_entry_line_is_what_serde_json_writes(entry in entry(text())) {
        let mut line = Vec::new();
        entry.write_json(&mut line);
        prop_assert_eq!(
            String::from_utf8(line).unwrap(),
            serde_json::to_string(&entry).unwrap()
        );
    }

    #[test]
    fn a_send_line_is_what_serde_json_writes(
        texts in proptest::collection::vec(text(), 4),
        control in any::<bool>(),
        trigger_at in instant(),
        sent_at in instant(),
        message in proptest::collection::btree_map(text(), text(), 0..4),
    ) {
        let send = Send {
            send_id: texts[0].clone(),
            moment: texts[1].as_str().into(),
            customer_id: texts[2].as_str().into(),
            channel: texts[3].clone(),
            group: if control { Group::Control } else { Group::Treatment },
            trigger_at,
            sent_at,
            message,
        };
        let mut line = Vec::new();
        send.write_json(&mut line);
        prop_assert_eq!(
            String::from_utf8(line).unwrap(),
            serde_json::to_string(&send).unwrap()
        );
    }
}

#[test]
fn a_send_without_message_fields_has_an_empty_message_object() {
    let at = Utc.with_ymd_and_hms(2026, 2, 28, 23, 5, 9).unwrap();
    let send = Send {
        send_id: "s1".into(),
        moment: "m".into(),
        customer_id: "c\"1".into(),
        channel: "email".into(),
        group: Group::Treatment,
        trigger_at: at,
        sent_at: at,
        message: BTreeMap::new(),
    };
    let mut line = Vec::new();
    send.write_json(&mut line);
    assert_eq!(
        String::from_utf8(line).unwrap(),
        r#"{"send_id":"s1","moment":"m","customer_id":"c\"1","channel":"email","group":"treatment","trigger_at":"2026-02-28T23:05:09Z","sent_at":"2026-02-28T23:05:09Z","message":{}}"#
    );
}
