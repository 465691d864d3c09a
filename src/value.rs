//! Values and records of customer data, as the engine sees them.
//!
//! [`crate::data`] reads files into [`Record`]s typed by the schema; the engine evaluates
//! expressions to [`Value`]s. Nothing here knows about files or campaigns.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};

use chrono::{DateTime, NaiveDate, Utc};

/// The id of a customer or of a record. Ids up to 23 bytes are held inline, so a record's
/// ids cost no allocation where they are read and nothing to free (or to count, across
/// threads) where the engine lets them go; compared and hashed as their text.
pub type Id = smol_str::SmolStr;

/// A value of customer data or of an expression.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Value {
    /// Missing.
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Number(f64),
    /// Also time zones, as their IANA name. Inline up to 23 bytes, like an [`Id`].
    Text(Id),
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
        Value::Text(id(s))
    }
}

/// `text` as an [`Id`]: held inline, copied byte by byte, when short (as nearly every id
/// and text value is), which is quicker than the general constructor's call to copy it.
pub fn id(text: &str) -> Id {
    if text.len() <= Id::INLINE_CAP {
        Id::new_inline(text)
    } else {
        Id::new(text)
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

/// An event's properties: one value per property its schema declares, read by name.
///
/// The names are one list per kind of event, shared by all its events and never freed
/// ([`Properties::names_for`]), so that a record costs nothing to count or free for its
/// names; a property not given (and without a default) is `Null` and reads as absent. Up to
/// four values are held in the record itself: the engine reads them where the record is,
/// not in memory the reading thread allocated and the engine would then free (a cache miss
/// per event, and a count both threads write). A clone copies them.
#[derive(Clone, Default)]
pub struct Properties {
    // INVARIANT: `names` is sorted, without repeats, and as long as `values`.
    names: Names,
    values: smallvec::SmallVec<[Value; 4]>,
}

/// A list of names from [`Properties::names_for`]. One pointer wide (to the list, made once
/// for the life of the process), so that a [`Record`] is small enough to be moved without
/// a call to `memcpy`.
#[derive(Clone, Copy)]
pub struct Names(&'static &'static [&'static str]);

impl Default for Names {
    fn default() -> Names {
        static NONE: &[&str] = &[];
        Names(&NONE)
    }
}

impl std::ops::Deref for Names {
    type Target = [&'static str];
    fn deref(&self) -> &[&'static str] {
        self.0
    }
}

impl fmt::Debug for Names {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Texts handed out by [`interned`].
static INTERNED: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Mutex::default);

/// `text`, made once for the life of the process. For the few texts that every record
/// carries (its kind of event, its file): a record holds a pointer, with no count that the
/// thread reading it and the engine's letting go of it would both have to write.
pub fn interned(text: &str) -> &'static str {
    let mut texts = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&known) = texts.get(text) {
        return known;
    }
    let made: &'static str = Box::leak(text.into());
    texts.insert(made);
    made
}

/// Lists of names handed out by [`Properties::names_for`], by their content.
static NAME_LISTS: LazyLock<Mutex<HashMap<Vec<String>, Names>>> = LazyLock::new(Mutex::default);

impl Properties {
    /// The shared list of `names` (sorted, without repeats), made once per distinct list for
    /// the life of the process: a schema's events, loaded again and again, cost nothing more.
    pub fn names_for(names: &[&str]) -> Names {
        let mut sorted: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        sorted.sort();
        sorted.dedup();
        let mut lists = NAME_LISTS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&list) = lists.get(&sorted) {
            return list;
        }
        let list: Vec<&'static str> = sorted.iter().map(|n| interned(n)).collect();
        let list: &'static [&'static str] = Box::leak(list.into_boxed_slice());
        let list = Names(Box::leak(Box::new(list)));
        lists.insert(sorted, list);
        list
    }

    /// Properties named by `names` (from [`Properties::names_for`]), every one absent.
    pub fn absent(names: Names) -> Properties {
        Properties {
            names,
            values: (0..names.len()).map(|_| Value::Null).collect(),
        }
    }

    /// Properties named by `names` (from [`Properties::names_for`]) with the values of
    /// `slots`, taken by position (those past the end absent).
    pub fn from_slots(names: Names, slots: &mut [Value]) -> Properties {
        Properties {
            names,
            values: (0..names.len())
                .map(|i| slots.get_mut(i).map_or(Value::Null, std::mem::take))
                .collect(),
        }
    }

    /// Sets the property at `slot`, the position of its name in the list.
    pub fn set_slot(&mut self, slot: usize, value: Value) {
        if let Some(v) = self.values.get_mut(slot) {
            *v = value;
        }
    }

    pub fn slot(&self, slot: usize) -> &Value {
        self.values.get(slot).unwrap_or(&Value::Null)
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| *n == name)
    }

    /// The property `name`; `None` when it is absent or not declared.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.position(name)
            .map(|i| &self.values[i])
            .filter(|v| !v.is_null())
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The properties given, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Value)> + '_ {
        self.names
            .iter()
            .zip(self.values.iter())
            .filter(|(_, v)| !v.is_null())
            .map(|(n, v)| (*n, v))
    }

    /// Sets `name` to `value`, declaring it if it is not.
    pub fn insert(&mut self, name: &str, value: Value) {
        match self.position(name) {
            Some(i) => self.set_slot(i, value),
            None => {
                let mut all: Vec<(&str, Value)> =
                    self.iter().map(|(n, v)| (n, v.clone())).collect();
                all.push((name, value));
                *self = all.into_iter().collect();
            }
        }
    }
}

impl<K: AsRef<str>> FromIterator<(K, Value)> for Properties {
    /// The last value of a name wins, as in a map.
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(pairs: I) -> Properties {
        let pairs: Vec<(K, Value)> = pairs.into_iter().collect();
        let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_ref()).collect();
        let mut properties = Properties::absent(Properties::names_for(&names));
        for (name, value) in pairs {
            if let Some(i) = properties.position(name.as_ref()) {
                properties.set_slot(i, value);
            }
        }
        properties
    }
}

impl PartialEq for Properties {
    /// The same properties given, whatever else each declares.
    fn eq(&self, other: &Properties) -> bool {
        self.iter().eq(other.iter())
    }
}

impl std::ops::Index<&str> for Properties {
    type Output = Value;
    /// The property `name`, or none.
    fn index(&self, name: &str) -> &Value {
        self.get(name).unwrap_or(&Value::Null)
    }
}

impl fmt::Debug for Properties {
    /// As a map of the properties given.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Where a record came from, for rejects and explanations.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    /// As listed, relative to the data directory ([`interned`]).
    pub file: &'static str,
    /// 1-based line (NDJSON, CSV) or row (Parquet, 1-based).
    pub line: u64,
}

/// One record of customer data, typed by the schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub at: DateTime<Utc>,
    /// `None` for a catalog event.
    pub customer: Option<Id>,
    /// `messageId`, or one derived from the file and line when the data has none.
    pub id: Id,
    pub kind: RecordKind,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RecordKind {
    /// Sets traits from `at` on; only traits the schema declares, typed, by their
    /// [`interned`] names.
    Identify { traits: Vec<(&'static str, Value)> },
    /// An event the schema declares, by its identifier (`order_completed`), with the
    /// declared properties (missing optional ones absent, defaults filled in). The
    /// identifier is [`interned`].
    Event {
        event: &'static str,
        properties: Properties,
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
