//! Values and records of customer data, as the engine sees them.
//!
//! [`crate::data`] reads files into [`Record`]s typed by the schema; the engine evaluates
//! expressions to [`Value`]s. Nothing here knows about files or campaigns.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};

/// A value of customer data or of an expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Missing.
    Null,
    Bool(bool),
    Int(i64),
    Number(f64),
    /// Also time zones, as their IANA name.
    Text(Arc<str>),
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
    /// Seconds.
    Duration(i64),
    List(Arc<[Value]>),
    Record(Arc<BTreeMap<Arc<str>, Value>>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(n) => Some(*n as f64),
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }
    pub fn text(s: &str) -> Value {
        Value::Text(Arc::from(s))
    }
}

impl fmt::Display for Value {
    /// As a person reads it: `12.5`, `Ada`, `2026-11-20T10:00:00Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("none"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Number(n) => write!(f, "{n}"),
            Value::Text(t) => f.write_str(t),
            Value::Date(d) => write!(f, "{d}"),
            Value::DateTime(t) => write!(
                f,
                "{}",
                t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            ),
            Value::Duration(s) => write!(f, "{s}s"),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Value::Record(fields) => {
                f.write_str("{")?;
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// Where a record came from, for rejects and explanations.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    /// As listed, relative to the data directory.
    pub file: Arc<str>,
    /// 1-based line (NDJSON, CSV) or row (Parquet, 1-based).
    pub line: u64,
}

/// One record of customer data, typed by the schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub at: DateTime<Utc>,
    /// `None` for a catalog event.
    pub customer: Option<Arc<str>>,
    /// `messageId`, or one derived from the file and line when the data has none.
    pub id: Arc<str>,
    pub kind: RecordKind,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RecordKind {
    /// Sets traits from `at` on; only traits the schema declares, typed.
    Identify { traits: Vec<(Arc<str>, Value)> },
    /// An event the schema declares, by its identifier (`order_completed`), with the
    /// declared properties (missing optional ones absent, defaults filled in).
    Event {
        event: Arc<str>,
        properties: BTreeMap<Arc<str>, Value>,
    },
}

impl Record {
    /// The order in which the engine processes records: time, then customer, then traits
    /// before events (an `identify` at the same second as an order is known to it), then id.
    /// INVARIANT: total and independent of file order, so runs are deterministic.
    pub fn order_key(&self) -> (DateTime<Utc>, Option<&str>, u8, &str) {
        let kind = match self.kind {
            RecordKind::Identify { .. } => 0,
            RecordKind::Event { .. } => 1,
        };
        (self.at, self.customer.as_deref(), kind, &self.id)
    }
}

/// A record that could not be read or does not fit the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub origin: Origin,
    /// Lower case, one line, naming the field: "`total` is text, the schema says number".
    pub reason: String,
    /// The record as it was in the file (one line of text; Parquet rows as JSON).
    pub raw: String,
}
