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

/// One trigger occurrence for one customer, and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Shared with the engine's plan and customer: an entry does not copy them.
    pub moment: Arc<str>,
    pub customer_id: Arc<str>,
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
    #[serde(default = "no_key", skip_serializing)]
    pub trigger_key: Arc<str>,
}

/// A message decided at an instant: sent to the customer, or recorded for the control group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Send {
    /// Stable: derived from moment, customer and trigger (event id or instant).
    pub send_id: String,
    pub moment: Arc<str>,
    pub customer_id: Arc<str>,
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

/// The trigger key of an entry read without one.
fn no_key() -> Arc<str> {
    Arc::from("")
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
pub fn count_entry(summary: &mut Summary, entry: &Entry) {
    let fate = entry.fate.map_or("pending", |f| f.as_str());
    let fates = match summary.get_mut(&*entry.moment) {
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
        count_entry(&mut counts, e);
    }
    counts
}
