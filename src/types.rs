//! The types of the language: what a trait, a property or an expression holds.
//!
//! The checker computes a [`Ty`] for every expression; the engine reads data by these types.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A type and whether the value may be missing (`text?`).
#[derive(Debug, Clone, PartialEq)]
pub struct Ty {
    pub kind: TypeKind,
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TypeKind {
    Text,
    Int,
    Number,
    Bool,
    Date,
    DateTime,
    Duration,
    Timezone,
    /// A time of day, `09:00`.
    Time,
    List(Box<Ty>),
    /// `{ product_id: text, quantity: int }`, inside event properties.
    Record(Arc<BTreeMap<String, Ty>>),
    /// The type of `none`.
    Null,
    /// After an error: fits anywhere, so that one mistake is reported once.
    Unknown,
}

/// The type names a schema may use, for "did you mean".
pub const TYPE_NAMES: [&str; 8] = [
    "text", "int", "number", "bool", "date", "datetime", "duration", "timezone",
];

impl Ty {
    pub const fn new(kind: TypeKind) -> Ty {
        Ty {
            kind,
            optional: false,
        }
    }
    pub const fn unknown() -> Ty {
        Ty::new(TypeKind::Unknown)
    }
    pub fn optional(mut self) -> Ty {
        self.optional = true;
        self
    }
    pub fn required(mut self) -> Ty {
        self.optional = false;
        self
    }
    pub fn list_of(element: Ty) -> Ty {
        Ty::new(TypeKind::List(Box::new(element)))
    }

    pub fn from_name(name: &str) -> Option<TypeKind> {
        Some(match name {
            "text" => TypeKind::Text,
            "int" => TypeKind::Int,
            "number" => TypeKind::Number,
            "bool" => TypeKind::Bool,
            "date" => TypeKind::Date,
            "datetime" => TypeKind::DateTime,
            "duration" => TypeKind::Duration,
            "timezone" => TypeKind::Timezone,
            _ => return None,
        })
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self.kind, TypeKind::Unknown)
    }
    pub fn is_numeric(&self) -> bool {
        matches!(
            self.kind,
            TypeKind::Int | TypeKind::Number | TypeKind::Unknown
        )
    }
    pub fn is_bool(&self) -> bool {
        matches!(self.kind, TypeKind::Bool | TypeKind::Unknown)
    }
    pub fn is_text(&self) -> bool {
        matches!(
            self.kind,
            TypeKind::Text | TypeKind::Timezone | TypeKind::Unknown
        )
    }
    pub fn is_moment_in_time(&self) -> bool {
        matches!(
            self.kind,
            TypeKind::Date | TypeKind::DateTime | TypeKind::Unknown
        )
    }

    /// Whether a value of `self` can be compared for equality with one of `other`.
    pub fn comparable(&self, other: &Ty) -> bool {
        use TypeKind::*;
        match (&self.kind, &other.kind) {
            (Unknown, _) | (_, Unknown) | (Null, _) | (_, Null) => true,
            (Int | Number, Int | Number) => true,
            (Text | Timezone, Text | Timezone) => true,
            (List(a), List(b)) => a.comparable(b),
            (a, b) => a == b,
        }
    }

    /// Whether `<`, `>` and the like make sense between the two.
    pub fn orderable(&self, other: &Ty) -> bool {
        use TypeKind::*;
        matches!(
            (&self.kind, &other.kind),
            (Unknown, _)
                | (_, Unknown)
                | (Int | Number, Int | Number)
                | (Date, Date)
                | (DateTime, DateTime)
                | (Duration, Duration)
                | (Time, Time)
        )
    }

    /// "a number", "text", "a list of text": for messages.
    pub fn describe(&self) -> String {
        let base = match &self.kind {
            TypeKind::Text => "text".to_string(),
            TypeKind::Int => "a whole number".to_string(),
            TypeKind::Number => "a number".to_string(),
            TypeKind::Bool => "true or false".to_string(),
            TypeKind::Date => "a date".to_string(),
            TypeKind::DateTime => "a date and time".to_string(),
            TypeKind::Duration => "a duration".to_string(),
            TypeKind::Timezone => "a time zone".to_string(),
            TypeKind::Time => "a time of day".to_string(),
            TypeKind::List(element) => format!("a list of {}", element.describe_plural()),
            TypeKind::Record(_) => "a record".to_string(),
            TypeKind::Null => "`none`".to_string(),
            TypeKind::Unknown => "unknown".to_string(),
        };
        if self.optional && !matches!(self.kind, TypeKind::Null) {
            format!("{base} that may be missing")
        } else {
            base
        }
    }

    fn describe_plural(&self) -> String {
        match &self.kind {
            TypeKind::Text => "text".into(),
            TypeKind::Int => "whole numbers".into(),
            TypeKind::Number => "numbers".into(),
            TypeKind::Bool => "booleans".into(),
            TypeKind::Date => "dates".into(),
            TypeKind::DateTime => "dates and times".into(),
            TypeKind::Record(_) => "records".into(),
            _ => self.describe(),
        }
    }
}

impl fmt::Display for Ty {
    /// As written in a schema: `list<text>?`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            TypeKind::Text => f.write_str("text")?,
            TypeKind::Int => f.write_str("int")?,
            TypeKind::Number => f.write_str("number")?,
            TypeKind::Bool => f.write_str("bool")?,
            TypeKind::Date => f.write_str("date")?,
            TypeKind::DateTime => f.write_str("datetime")?,
            TypeKind::Duration => f.write_str("duration")?,
            TypeKind::Timezone => f.write_str("timezone")?,
            TypeKind::Time => f.write_str("time")?,
            TypeKind::List(element) => write!(f, "list<{element}>")?,
            TypeKind::Record(fields) => {
                f.write_str("{ ")?;
                for (i, (name, ty)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{name}: {ty}")?;
                }
                f.write_str(" }")?;
            }
            TypeKind::Null => f.write_str("none")?,
            TypeKind::Unknown => f.write_str("?")?,
        }
        if self.optional && !matches!(self.kind, TypeKind::Null) {
            f.write_str("?")?;
        }
        Ok(())
    }
}
