//! What running the campaigns produces: entries with their fate, and sends.
//!
//! The engine computes these; the state store keeps them; delivery sends them; reports and
//! `explain` read them. Serialised as one JSON object per line (`entries.ndjson`,
//! `sends.ndjson`, the outbox) with the field names below.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::value::Id;

/// The single fate of an entry, in the order they are decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// An `unless` event came after the trigger and before the send.
    Cancelled,
    /// Outside the moment's `active` dates.
    Inactive,
    /// The channel's consent condition was false at the send instant.
    NoConsent,
    /// The moment's own `limit`.
    Limited,
    /// The global cap of the `defaults`.
    Capped,
    /// In the holdout: recorded, never sent.
    Control,
    Sent,
}

impl Fate {
    pub const ALL: [Fate; 7] = [
        Fate::Cancelled,
        Fate::Inactive,
        Fate::NoConsent,
        Fate::Limited,
        Fate::Capped,
        Fate::Control,
        Fate::Sent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Fate::Cancelled => "cancelled",
            Fate::Inactive => "inactive",
            Fate::NoConsent => "no_consent",
            Fate::Limited => "limited",
            Fate::Capped => "capped",
            Fate::Control => "control",
            Fate::Sent => "sent",
        }
    }
}

impl fmt::Display for Fate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Treatment (sent) or control (held out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    Treatment,
    Control,
}

impl Group {
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Treatment => "treatment",
            Group::Control => "control",
        }
    }
}

/// One trigger occurrence for one customer, and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Shared with the engine's plan; the customer's id is held inline when short.
    pub moment: Arc<str>,
    pub customer_id: Id,
    #[serde(serialize_with = "rfc3339")]
    pub trigger_at: DateTime<Utc>,
    /// Trigger instant + the larger of `wait` and the `unless` window.
    #[serde(serialize_with = "rfc3339")]
    pub due_at: DateTime<Utc>,
    /// `None` while the entry is still pending (due after `now`).
    pub fate: Option<Fate>,
    /// In words: "cancelled: Order Completed at 10:23, within 1h of the trigger".
    pub reason: String,
    /// Present for `sent` and `control`.
    pub send_id: Option<String>,
    /// Tells apart entries of one moment and customer at the same instant: the trigger
    /// event's id, or the instant for timed triggers. Kept in the state, not in files.
    /// Empty for an entry read from a file.
    #[serde(default, skip_serializing)]
    pub trigger_key: Id,
}

/// A message decided at an instant: sent to the customer, or recorded for the control group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Send {
    /// Stable: derived from moment, customer and trigger (event id or instant).
    pub send_id: String,
    pub moment: Arc<str>,
    pub customer_id: Id,
    /// `email`, `sms`, `push`, `in_app` or `webhook`.
    pub channel: String,
    pub group: Group,
    #[serde(serialize_with = "rfc3339")]
    pub trigger_at: DateTime<Utc>,
    /// The instant it was (or, for control, would have been) sent: the due time moved
    /// past quiet hours.
    #[serde(serialize_with = "rfc3339")]
    pub sent_at: DateTime<Utc>,
    /// Every field of the message, rendered.
    pub message: BTreeMap<String, String>,
}

/// An entry as the engine hands it to a sink: borrowed, so that a sink that only writes
/// it out (a backtest) neither builds nor drops an [`Entry`] per entry.
#[derive(Debug, Clone, Copy)]
pub struct EntryView<'a> {
    /// The moment's place in `Model::moments`.
    pub index: usize,
    pub moment: &'a Arc<str>,
    pub customer_id: &'a Id,
    pub trigger_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub fate: Option<Fate>,
    pub reason: &'a str,
    pub send_id: Option<&'a str>,
    pub trigger_key: &'a Id,
}

impl EntryView<'_> {
    pub fn to_entry(&self) -> Entry {
        Entry {
            moment: self.moment.clone(),
            customer_id: self.customer_id.clone(),
            trigger_at: self.trigger_at,
            due_at: self.due_at,
            fate: self.fate,
            reason: self.reason.to_string(),
            send_id: self.send_id.map(str::to_string),
            trigger_key: self.trigger_key.clone(),
        }
    }

    /// Appends the entry as one line of JSON (no newline): the bytes `serde_json` writes
    /// for an [`Entry`], without going through a serializer (see [`write_str`]).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"moment\":");
        write_str(out, self.moment);
        out.extend_from_slice(b",\"customer_id\":");
        write_str(out, self.customer_id);
        out.extend_from_slice(b",\"trigger_at\":");
        write_instant(out, self.trigger_at);
        out.extend_from_slice(b",\"due_at\":");
        write_instant(out, self.due_at);
        out.extend_from_slice(b",\"fate\":");
        match self.fate {
            Some(fate) => write_str(out, fate.as_str()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"reason\":");
        write_str(out, self.reason);
        out.extend_from_slice(b",\"send_id\":");
        match self.send_id {
            Some(id) => write_str(out, id),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    }
}

impl Entry {
    /// The entry borrowed, as the engine hands it over (`index`: its moment's place).
    pub fn view(&self, index: usize) -> EntryView<'_> {
        EntryView {
            index,
            moment: &self.moment,
            customer_id: &self.customer_id,
            trigger_at: self.trigger_at,
            due_at: self.due_at,
            fate: self.fate,
            reason: &self.reason,
            send_id: self.send_id.as_deref(),
            trigger_key: &self.trigger_key,
        }
    }

    /// Appends the entry as one line of JSON (no newline): the bytes `serde_json` writes
    /// for it, without going through a serializer (see [`write_str`]).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.view(0).write_json(out);
    }
}

/// A send as the engine hands it to a sink, borrowed (see [`EntryView`]).
#[derive(Debug, Clone, Copy)]
pub struct SendView<'a> {
    pub send_id: &'a str,
    pub moment: &'a Arc<str>,
    pub customer_id: &'a Id,
    pub channel: &'a str,
    pub group: Group,
    pub trigger_at: DateTime<Utc>,
    pub sent_at: DateTime<Utc>,
    pub message: MessageView<'a>,
}

/// Every field of a message, rendered, in the order of their names.
#[derive(Debug, Clone, Copy)]
pub enum MessageView<'a> {
    /// The names, in order and each once, and their texts, by place.
    Fields(&'a [String], &'a [String]),
    Map(&'a BTreeMap<String, String>),
}

impl<'a> MessageView<'a> {
    /// (field, text), in order.
    pub fn iter(self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let (fields, map) = match self {
            MessageView::Fields(names, texts) => (Some(names.iter().zip(texts)), None),
            MessageView::Map(map) => (None, Some(map.iter())),
        };
        let fields = fields.into_iter().flatten();
        let map = map.into_iter().flatten();
        fields
            .chain(map)
            .map(|(name, text)| (name.as_str(), text.as_str()))
    }

    /// The message as one JSON object, as `serde_json` writes the map.
    pub fn to_json(self) -> String {
        let mut out = Vec::new();
        self.write_json(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    fn write_json(self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (field, text)) in self.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, field);
            out.push(b':');
            write_str(out, text);
        }
        out.push(b'}');
    }
}

impl SendView<'_> {
    pub fn to_send(&self) -> Send {
        Send {
            send_id: self.send_id.to_string(),
            moment: self.moment.clone(),
            customer_id: self.customer_id.clone(),
            channel: self.channel.to_string(),
            group: self.group,
            trigger_at: self.trigger_at,
            sent_at: self.sent_at,
            message: self
                .message
                .iter()
                .map(|(f, t)| (f.to_string(), t.to_string()))
                .collect(),
        }
    }

    /// Appends the send as one line of JSON (no newline): the bytes `serde_json` writes
    /// for a [`Send`], as [`EntryView::write_json`] does.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"send_id\":");
        write_str(out, self.send_id);
        out.extend_from_slice(b",\"moment\":");
        write_str(out, self.moment);
        out.extend_from_slice(b",\"customer_id\":");
        write_str(out, self.customer_id);
        out.extend_from_slice(b",\"channel\":");
        write_str(out, self.channel);
        out.extend_from_slice(b",\"group\":");
        write_str(out, self.group.as_str());
        out.extend_from_slice(b",\"trigger_at\":");
        write_instant(out, self.trigger_at);
        out.extend_from_slice(b",\"sent_at\":");
        write_instant(out, self.sent_at);
        out.extend_from_slice(b",\"message\":");
        self.message.write_json(out);
        out.push(b'}');
    }
}

impl Send {
    /// The send borrowed, as the engine hands it over.
    pub fn view(&self) -> SendView<'_> {
        SendView {
            send_id: &self.send_id,
            moment: &self.moment,
            customer_id: &self.customer_id,
            channel: &self.channel,
            group: self.group,
            trigger_at: self.trigger_at,
            sent_at: self.sent_at,
            message: MessageView::Map(&self.message),
        }
    }

    /// Appends the send as one line of JSON (no newline), as [`SendView::write_json`].
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.view().write_json(out);
    }
}

/// A JSON string as `serde_json` writes it: `"` and `\` escaped with a backslash, the
/// control characters with a short escape where JSON has one (`\n`) and as `\u00xx`
/// otherwise, everything else (non-ASCII included) as it is. Runs of plain bytes are
/// copied whole.
fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Most texts need no escape: one pass without branches (which the compiler can do many
    // bytes at a time) says so, and they are copied whole.
    let needs_escape = bytes.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !needs_escape {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0C => b"\\f",
            0x00..=0x1F => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i]);
        plain = i + 1;
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xF)]);
        } else {
            out.extend_from_slice(escape);
        }
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}

/// An instant as a JSON string, as [`rfc3339`] writes it. Whole seconds in years 0 to
/// 9999 (nearly every instant) are written digit by digit; the rest go through chrono.
fn write_instant(out: &mut Vec<u8>, at: DateTime<Utc>) {
    use chrono::{Datelike, Timelike};
    // Read from the UTC date and time: `DateTime`'s own accessors add the zone's offset
    // (none here) to the date each time.
    let naive = at.naive_utc();
    let year = naive.year();
    if naive.nanosecond() != 0 || !(0..=9999).contains(&year) {
        write_str(
            out,
            &at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        );
        return;
    }
    // Filled in place and written at once: the date is worked out from chrono's packed
    // form once, not per field.
    let date = naive.date();
    let seconds = naive.num_seconds_from_midnight();
    let mut text = *b"\"0000-00-00T00:00:00Z\"";
    let mut two = |at: usize, n: u32| {
        text[at] = b'0' + (n / 10 % 10) as u8;
        text[at + 1] = b'0' + (n % 10) as u8;
    };
    // INVARIANT: 0 <= year <= 9999, checked above.
    let year = year as u32;
    two(1, year / 100);
    two(3, year % 100);
    two(6, date.month());
    two(9, date.day());
    two(12, seconds / 3600);
    two(15, seconds / 60 % 60);
    two(18, seconds % 60);
    out.extend_from_slice(&text);
}

/// An instant as chrono writes it (RFC 3339, `Z`, fractions of a second only when there
/// are any), built whole before it is written: serde_json escapes what `Display` writes
/// piece by piece, which made this a hot spot of large backtests.
fn rfc3339<S: serde::Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// Entries by moment, then fate (`pending` for undecided ones).
pub type Summary = BTreeMap<String, BTreeMap<String, u64>>;

/// Count one entry into a summary.
pub fn count_entry(summary: &mut Summary, entry: &EntryView) {
    let fate = entry.fate.map_or("pending", |f| f.as_str());
    let fates = match summary.get_mut(&**entry.moment) {
        Some(fates) => fates,
        None => summary.entry(entry.moment.to_string()).or_default(),
    };
    match fates.get_mut(fate) {
        Some(count) => *count += 1,
        None => {
            fates.insert(fate.to_string(), 1);
        }
    }
}

/// Count entries by moment and fate.
pub fn summary(entries: &[Entry]) -> Summary {
    let mut counts = Summary::new();
    for e in entries {
        count_entry(&mut counts, &e.view(0));
    }
    counts
}
