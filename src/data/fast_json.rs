//! A fast path for the usual NDJSON line: a `track` of a declared event or an `identify`,
//! each key once, whose top-level strings and properties have no escapes and whose values
//! all fit their types. It reads the line straight into its [`Record`], typing each value
//! as [`TypedSeed`] does, with nothing in between: no JSON tree, no list of typed fields,
//! properties written into their slots as they are read.
//!
//! A list or record of a declared type (an order's products) is read here too, its texts
//! shared as [`TypedSeed`] shares them; one with an escape or a `null` item, and any other
//! object or list inside the line (a `context`), is read by serde_json itself from its own
//! slice of the line, with the same seed.
//!
//! Anything else gives `None`, and the line is read again the long way (serde_json and
//! [`super::slow_record`]), which also words the rejects: a string with an escape or a
//! control character outside nested values, a key given twice, properties before `event`,
//! an undeclared event, a value that does not fit its type or a required one missing, a
//! number whose conversion is not the one every float parser agrees on, a nested value of
//! more than 64 brackets, and any JSON that is not well formed. So a line gives the same
//! record whichever path reads it; debug builds check that on every line.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{DeserializeSeed, IgnoredAny, Visitor};

use chrono::{DateTime, Utc};
use smol_str::{format_smolstr, ToSmolStr};

use super::{
    check_record, find_field, from_text_scalar, integral, named_traits, parse_timestamp, CTy,
    Compiled, EventSpec, FieldSpec, Kind, TextCache, TypedSeed,
};
use crate::value::{Id, Origin, Properties, Record, RecordKind, Value};

/// The error type the visitors are called with; they never fail on scalars.
type Error = serde_json::Error;

/// Brackets in one nested value, at most; more is left to the serde path.
const MAX_OPENED: usize = 64;

/// The record of a usual line (see the module's comment), or `None` when the line must be
/// read the long way.
pub(super) fn record(
    line: &str,
    rel: &'static str,
    number: u64,
    schema: &Compiled,
    texts: &mut TextCache,
    slots: &mut Vec<Value>,
    shape: &mut Shape,
) -> Option<Record> {
    let mut p = Parser { text: line, at: 0 };
    // `Some(true)`: a `track`.
    let mut track: Option<bool> = None;
    let mut user: Option<Id> = None;
    let mut event: Option<&EventSpec> = None;
    let mut at: Option<DateTime<Utc>> = None;
    let mut id: Option<Id> = None;
    let mut properties: Option<Properties> = None;
    let mut traits: Option<Vec<(usize, Value)>> = None;
    // Keys seen, a bit each: a key given twice goes the long way.
    let mut seen = 0u8;
    p.ws();
    p.eat(b'{')?;
    let mut keys = 0;
    loop {
        // The key the line before had here, when it is the same one: read as a whole.
        let expected = shape
            .keys
            .get(keys)
            .and_then(|&k| TOP_KEYS.get(usize::from(k)));
        let kind = match expected {
            Some(&(_, quoted)) if p.text.as_bytes()[p.at..].starts_with(quoted) => {
                p.at += quoted.len();
                p.ws();
                shape.keys[keys]
            }
            _ => {
                let key = p.key()?;
                TOP_KEYS
                    .iter()
                    .position(|(name, _)| *name == key)
                    .map_or(u8::MAX, |k| k as u8)
            }
        };
        match kind {
            0 => {
                track = match p.string()? {
                    "track" => Some(true),
                    "identify" => Some(false),
                    _ => return None,
                };
            }
            1 => {
                user = p.id()?;
            }
            2 => {
                event = Some(schema.event(p.string()?)?);
            }
            3 => {
                at = Some(shape.timestamp(p.string()?)?);
            }
            4 => {
                id = p.id()?;
            }
            5 => {
                // Read before `event` they would be typed afterwards: the long way.
                properties = Some(p.properties(event?, texts, slots, shape)?);
            }
            6 => {
                traits = Some(p.fields(&schema.traits, texts)?);
            }
            _ => {
                p.value(IgnoredAny, PhantomData::<IgnoredAny>)?;
            }
        }
        if let Some(slot) = shape.keys.get_mut(keys) {
            *slot = kind;
        }
        keys += 1;
        // A bit per key of `TOP_KEYS` (another key has none).
        let bit = if usize::from(kind) < TOP_KEYS.len() {
            1u8 << kind
        } else {
            0
        };
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
        if !p.more()? {
            break;
        }
    }
    p.ws();
    if p.at != line.len() {
        return None;
    }
    let id = match id {
        Some(id) => id,
        None => format_smolstr!("{rel}:{number}"),
    };
    let origin = Origin {
        file: rel,
        line: number,
    };
    // As `slow_record` tells a `track` from an `identify` without `type`.
    let track = track.unwrap_or(event.is_some() || traits.is_none());
    if track {
        // Traits on a `track` are read but not used: the long way.
        let event = event.filter(|_| traits.is_none())?;
        let customer = match event.catalog {
            true => None,
            false => Some(user?),
        };
        let properties = match properties {
            Some(properties) => properties,
            None => {
                slots.clear();
                complete_slots(event, slots)?
            }
        };
        Some(Record {
            at: at?,
            customer,
            id,
            kind: RecordKind::Event {
                event: event.name,
                properties,
            },
            origin,
        })
    } else {
        if event.is_some() || properties.is_some() {
            return None;
        }
        Some(Record {
            at: at?,
            customer: Some(user?),
            id,
            kind: RecordKind::Identify {
                traits: named_traits(traits.unwrap_or_default(), &schema.traits),
            },
            origin,
        })
    }
}

/// `slots` as `len` absent values (quicker than `Vec::resize`, which clones each).
fn null_slots(slots: &mut Vec<Value>, len: usize) {
    if slots.len() > len {
        slots.truncate(len);
    }
    let given = slots.len();
    slots.extend((given..len).map(|_| Value::Null));
}

/// The top-level keys the reader uses, and each as it is written before its value.
const TOP_KEYS: [(&str, &[u8]); 7] = [
    ("type", b"\"type\":"),
    ("userId", b"\"userId\":"),
    ("event", b"\"event\":"),
    ("timestamp", b"\"timestamp\":"),
    ("messageId", b"\"messageId\":"),
    ("properties", b"\"properties\":"),
    ("traits", b"\"traits\":"),
];

/// The shape of the line before: its top-level keys in order (by place in [`TOP_KEYS`],
/// `u8::MAX` for another). The lines of a file are mostly written alike, so each key is
/// first looked for where the line before had it, as a whole, before it is read.
#[derive(Debug, Default)]
pub(super) struct Shape {
    keys: [u8; 8],
    /// Per event (by place in `Compiled::events`), the fields of the properties of its
    /// line before, in order (by index, `u8::MAX` for another).
    fields: Vec<[u8; 8]>,
    /// The date of the line before's timestamp, as written and as read.
    date: Option<([u8; 10], chrono::NaiveDate)>,
}

impl Shape {
    /// `parse_timestamp`, with the date taken from the line before when it is the same
    /// (the lines of a file are in time order, thousands to a day).
    fn timestamp(&mut self, text: &str) -> Option<DateTime<Utc>> {
        let b = text.as_bytes();
        // The usual shape, `YYYY-MM-DDTHH:MM:SSZ`, as `parse_timestamp` reads it.
        if b.len() != 20
            || !matches!(b[10], b'T' | b't')
            || b[13] != b':'
            || b[16] != b':'
            || !matches!(b[19], b'Z' | b'z')
        {
            return parse_timestamp(text);
        }
        let date = match &self.date {
            Some((written, date)) if *written == b[..10] => *date,
            _ => {
                let date = parse_timestamp(text)?.date_naive();
                let mut written = [0u8; 10];
                written.copy_from_slice(&b[..10]);
                self.date = Some((written, date));
                date
            }
        };
        let two = |at: usize| {
            let (high, low) = (b[at], b[at + 1]);
            (high.is_ascii_digit() && low.is_ascii_digit())
                .then(|| u32::from(high - b'0') * 10 + u32::from(low - b'0'))
        };
        let time = chrono::NaiveTime::from_hms_opt(two(11)?, two(14)?, two(17)?)?;
        Some(date.and_time(time).and_utc())
    }
}

/// The values of `event`'s properties, by slot, with defaults filled in; `None` when a
/// required one is missing (see `complete`).
fn complete_slots(event: &EventSpec, slots: &mut Vec<Value>) -> Option<Properties> {
    null_slots(slots, event.fields.len());
    for (slot, field) in slots.iter_mut().zip(&event.fields) {
        if !slot.is_null() {
            continue;
        }
        match &field.default {
            Some(Value::Null) => {}
            Some(v) => *slot = v.clone(),
            None if field.ty.optional => {}
            None => return None,
        }
    }
    Some(Properties::from_slots(event.names, slots))
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    /// JSON's white space, as serde_json skips it.
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\t' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// A member's key and its `:`, up to its value. Inlined: as a call it cost 0.5% of a
    /// backtest's instructions.
    #[inline(always)]
    fn key(&mut self) -> Option<&'a str> {
        self.ws();
        let key = self.string()?;
        self.ws();
        self.eat(b':')?;
        self.ws();
        Some(key)
    }

    /// After a member: `true` at a `,`, `false` at the object's `}`.
    fn more(&mut self) -> Option<bool> {
        self.ws();
        let more = match self.peek()? {
            b',' => true,
            b'}' => false,
            _ => return None,
        };
        self.at += 1;
        Some(more)
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let bytes = self.text.as_bytes();
        let mut end = self.at;
        // Eight bytes at a time while there are eight, then one at a time.
        while let Some(word) = bytes
            .get(end..end + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
        {
            let found = special_bytes(u64::from_le_bytes(word));
            if found != 0 {
                end += (found.trailing_zeros() / 8) as usize;
                break;
            }
            end += 8;
        }
        while bytes.get(end).is_some_and(|&b| !is_special(b)) {
            end += 1;
        }
        if bytes.get(end) != Some(&b'"') {
            return None;
        }
        // INVARIANT: `at` and `end` are next to ASCII quotes, so on char boundaries.
        let s = self.text.get(self.at..end)?;
        self.at = end + 1;
        Some(s)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.text.as_bytes().get(self.at..end)? == word).then(|| self.at = end)
    }

    /// A value: a scalar handed to `visitor`, or an object or a list read by `seed`.
    fn value<V, S>(&mut self, visitor: V, seed: S) -> Option<V::Value>
    where
        V: Visitor<'a>,
        S: DeserializeSeed<'a, Value = V::Value>,
    {
        match self.peek()? {
            b'{' | b'[' => self.nested(seed),
            _ => self.scalar(visitor),
        }
    }

    /// An object or a list, read by serde_json from its own slice of the line, as it would
    /// read it within the whole line (the same seed, from the same bytes). Its end is found
    /// by its brackets, outside strings; serde_json then checks that it is one whole value.
    fn nested<S: DeserializeSeed<'a>>(&mut self, seed: S) -> Option<S::Value> {
        let bytes = self.text.as_bytes();
        let mut end = self.at;
        let mut depth = 0usize;
        let mut opened = 0usize;
        loop {
            match *bytes.get(end)? {
                b'"' => {
                    end += 1;
                    loop {
                        match *bytes.get(end)? {
                            b'\\' => end += 2,
                            b'"' => break,
                            _ => end += 1,
                        }
                    }
                }
                b'{' | b'[' => {
                    depth += 1;
                    opened += 1;
                    // INVARIANT: serde_json reads at most 128 levels. The line's object
                    // and properties are two; a value of at most `MAX_OPENED` brackets
                    // nests less than the rest, so it is read here as in the whole line.
                    if opened > MAX_OPENED {
                        return None;
                    }
                }
                b'}' | b']' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        end += 1;
                        break;
                    }
                }
                _ => {}
            }
            end += 1;
        }
        let slice = self.text.get(self.at..end)?;
        let mut de = serde_json::Deserializer::from_str(slice);
        let value = seed.deserialize(&mut de).ok()?;
        de.end().ok()?;
        self.at = end;
        Some(value)
    }

    /// A scalar handed to `visitor` as serde_json hands it: strings borrowed, `null` as
    /// unit, whole numbers as `u64` (not negative) or `i64`, others as `f64`.
    fn scalar<V: Visitor<'a>>(&mut self, visitor: V) -> Option<V::Value> {
        let visited: Result<V::Value, Error> = match self.peek()? {
            b'"' => visitor.visit_borrowed_str(self.string()?),
            b't' => {
                self.literal(b"true")?;
                visitor.visit_bool(true)
            }
            b'f' => {
                self.literal(b"false")?;
                visitor.visit_bool(false)
            }
            b'n' => {
                self.literal(b"null")?;
                visitor.visit_unit()
            }
            b'-' | b'0'..=b'9' => match self.number()? {
                Number::Whole(n) => visitor.visit_i64(n),
                Number::Fraction(x) => visitor.visit_f64(x),
            },
            _ => return None,
        };
        visited.ok()
    }

    /// A number in JSON's grammar, as serde_json converts it, when that is sure: a whole
    /// number that fits an `i64` (not `-0`, which serde_json reads as a float), or one with
    /// a fraction or an exponent whose digits fit 64 bits and whose power of ten is at
    /// most 22. serde_json converts those as `digits as f64` times or divided by that
    /// power, both exact, so the one rounding is the correct one, which any parser gives.
    /// Anything else is `None` and goes the long way.
    fn number(&mut self) -> Option<Number> {
        let bytes = self.text.as_bytes();
        let mut at = self.at;
        let negative = bytes.get(at) == Some(&b'-');
        if negative {
            at += 1;
        }
        let mut digits: u64 = 0;
        match *bytes.get(at)? {
            b'0' => at += 1,
            b'1'..=b'9' => {
                while let Some(&b @ b'0'..=b'9') = bytes.get(at) {
                    digits = digits.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
                    at += 1;
                }
            }
            _ => return None,
        }
        let mut exponent: i64 = 0;
        let mut whole = true;
        if bytes.get(at) == Some(&b'.') {
            at += 1;
            let first = at;
            while let Some(&b @ b'0'..=b'9') = bytes.get(at) {
                digits = digits.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
                exponent -= 1;
                at += 1;
            }
            if at == first {
                return None;
            }
            whole = false;
        }
        if matches!(bytes.get(at), Some(b'e' | b'E')) {
            at += 1;
            let sign = match bytes.get(at) {
                Some(b'-') => {
                    at += 1;
                    -1
                }
                Some(b'+') => {
                    at += 1;
                    1
                }
                _ => 1,
            };
            let first = at;
            let mut power: i64 = 0;
            while let Some(&b @ b'0'..=b'9') = bytes.get(at) {
                power = power.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
                at += 1;
            }
            if at == first {
                return None;
            }
            exponent = exponent.checked_add(sign * power)?;
            whole = false;
        }
        self.at = at;
        if whole {
            let n = i64::try_from(digits).ok()?;
            return match negative {
                // `-0` is a float to serde_json.
                true if n == 0 => None,
                true => Some(Number::Whole(-n)),
                false => Some(Number::Whole(n)),
            };
        }
        let power = *POW10.get(exponent.unsigned_abs() as usize)?;
        let x = match exponent >= 0 {
            true => digits as f64 * power,
            false => digits as f64 / power,
        };
        Some(Number::Fraction(if negative { -x } else { x }))
    }

    /// A customer's or a message's id: text (empty: none) or a whole number, as `id_text`
    /// reads it; `null` is none.
    fn id(&mut self) -> Option<Option<Id>> {
        match self.peek()? {
            b'"' => {
                let s = self.string()?;
                Some((!s.is_empty()).then(|| crate::value::id(s)))
            }
            b'n' => {
                self.literal(b"null")?;
                Some(None)
            }
            _ => match self.number()? {
                Number::Whole(n) => Some(Some(n.to_smolstr())),
                Number::Fraction(_) => None,
            },
        }
    }

    /// One property's or trait's value, typed as [`TypedSeed`] types it with `null_ok`
    /// (`null` is `Value::Null`); `None` when it does not fit its type.
    fn typed(&mut self, ty: &CTy, texts: &mut TextCache) -> Option<Value> {
        match self.peek()? {
            b'"' => {
                let s = self.string()?;
                match ty.kind {
                    Kind::Text | Kind::Any => Some(Value::text(s)),
                    _ => from_text_scalar(s, ty),
                }
            }
            b'-' | b'0'..=b'9' => match (self.number()?, &ty.kind) {
                (Number::Whole(n), Kind::Int | Kind::Any) => Some(Value::Int(n)),
                (Number::Whole(n), Kind::Number) => Some(Value::Number(n as f64)),
                (Number::Whole(n), Kind::Text) => Some(Value::Text(n.to_smolstr())),
                (Number::Whole(n), Kind::Duration) => Some(Value::Duration(n)),
                (Number::Fraction(x), Kind::Number | Kind::Any) => Some(Value::Number(x)),
                (Number::Fraction(x), Kind::Int) => integral(x).map(Value::Int),
                _ => None,
            },
            b't' | b'f' => {
                let b = self.peek()? == b't';
                self.literal(if b { b"true" } else { b"false" })?;
                matches!(ty.kind, Kind::Bool | Kind::Any).then_some(Value::Bool(b))
            }
            b'n' => {
                self.literal(b"null")?;
                Some(Value::Null)
            }
            b'{' | b'[' => {
                // The usual list or record here; anything else (an escape in a text, a
                // `null` item, a reject) the long way, from the same place.
                let start = self.at;
                let usual = match (&ty.kind, self.peek()?) {
                    (Kind::List(element), b'[') => self.list(element, texts),
                    (Kind::Record(fields), b'{') => self.record(fields, texts),
                    _ => None,
                };
                if usual.is_some() {
                    return usual;
                }
                self.at = start;
                let seed = TypedSeed {
                    ty,
                    null_ok: true,
                    share: false,
                    cache: texts,
                };
                self.nested(seed)?.ok()
            }
            _ => None,
        }
    }

    /// A list of `element`s (an order's products), read here rather than through
    /// serde_json as [`TypedSeed`] reads it: the same values, texts shared through
    /// `texts`. `None` for anything else (a `null` item, an escape), which `typed` then
    /// reads the long way.
    fn list(&mut self, element: &CTy, texts: &mut TextCache) -> Option<Value> {
        self.eat(b'[')?;
        self.ws();
        let mut items = Vec::new();
        if self.eat(b']').is_none() {
            loop {
                self.ws();
                if self.peek()? == b'n' {
                    return None;
                }
                items.push(self.inner(element, texts)?);
                self.ws();
                match self.peek()? {
                    b',' => self.at += 1,
                    b']' => {
                        self.at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        Some(Value::List(items.into()))
    }

    /// A record of the declared `fields`, as [`TypedSeed`] reads it: undeclared fields
    /// left out, `null` ones absent; `None` when a required one is missing.
    fn record(&mut self, fields: &[(Arc<str>, CTy)], texts: &mut TextCache) -> Option<Value> {
        self.eat(b'{')?;
        self.ws();
        let mut out = std::collections::BTreeMap::new();
        if self.eat(b'}').is_none() {
            loop {
                let key = self.key()?;
                match fields.binary_search_by(|f| (*f.0).cmp(key)) {
                    Ok(i) => {
                        let (name, ty) = fields.get(i)?;
                        let value = self.inner(ty, texts)?;
                        if !value.is_null() {
                            out.insert(name.clone(), value);
                        }
                    }
                    Err(_) => {
                        self.value(IgnoredAny, PhantomData::<IgnoredAny>)?;
                    }
                }
                if !self.more()? {
                    break;
                }
            }
        }
        check_record(&out, fields).ok()?;
        Some(Value::Record(Arc::new(out)))
    }

    /// A value inside a list or record: a text shared through `texts`.
    fn inner(&mut self, ty: &CTy, texts: &mut TextCache) -> Option<Value> {
        match (self.peek()?, &ty.kind) {
            (b'"', Kind::Text | Kind::Any) => self.string().map(|s| texts.get(s)),
            _ => self.typed(ty, texts),
        }
    }

    /// An event's properties, by slot, with defaults filled in (`null`: none given).
    fn properties(
        &mut self,
        event: &EventSpec,
        texts: &mut TextCache,
        slots: &mut Vec<Value>,
        shape: &mut Shape,
    ) -> Option<Properties> {
        slots.clear();
        null_slots(slots, event.fields.len());
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return complete_slots(event, slots);
        }
        if shape.fields.len() <= event.index {
            shape.fields.resize(event.index + 1, [u8::MAX; 8]);
        }
        let order = shape.fields.get_mut(event.index);
        self.object(&event.fields, texts, order, |i, value| {
            if let Some(slot) = slots.get_mut(i) {
                *slot = value;
            }
        })?;
        complete_slots(event, slots)
    }

    /// Traits, as (field index, value) in the order given.
    fn fields(
        &mut self,
        fields: &[FieldSpec],
        texts: &mut TextCache,
    ) -> Option<Vec<(usize, Value)>> {
        let mut values = Vec::with_capacity(fields.len().min(16));
        self.object(fields, texts, None, |i, value| values.push((i, value)))?;
        Some(values)
    }

    /// An object of declared fields, each typed and handed to `each` with its index; others
    /// are read past. With `order` (the fields' indexes in the order the object before had
    /// them), each key is first looked for as the one the object before had there.
    fn object(
        &mut self,
        fields: &[FieldSpec],
        texts: &mut TextCache,
        mut order: Option<&mut [u8; 8]>,
        mut each: impl FnMut(usize, Value),
    ) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        let mut place = 0;
        loop {
            let expected = order
                .as_deref()
                .and_then(|o| o.get(place))
                .and_then(|&i| fields.get(usize::from(i)).map(|f| (usize::from(i), f)));
            let field = match expected {
                Some((i, f)) if self.text.as_bytes()[self.at..].starts_with(&f.quoted) => {
                    self.at += f.quoted.len();
                    self.ws();
                    Some(i)
                }
                _ => find_field(fields, self.key()?),
            };
            if let Some(slot) = order.as_deref_mut().and_then(|o| o.get_mut(place)) {
                *slot = field.and_then(|i| u8::try_from(i).ok()).unwrap_or(u8::MAX);
            }
            place += 1;
            match field {
                None => {
                    self.value(IgnoredAny, PhantomData::<IgnoredAny>)?;
                }
                Some(i) => {
                    let value = self.typed(&fields.get(i)?.ty, texts)?;
                    each(i, value);
                }
            }
            if !self.more()? {
                return Some(());
            }
        }
    }
}

/// A number as [`Parser::number`] reads it.
enum Number {
    Whole(i64),
    Fraction(f64),
}

/// The powers of ten that an `f64` holds exactly.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A byte that ends a string's plain run: a quote, a backslash or a control character.
fn is_special(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// The high bit of each byte of `word` (little-endian) that [`is_special`], and perhaps of
/// bytes after the first such: only the lowest bit set is exact. Zero when there is none.
fn special_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let below_space = word.wrapping_sub(ONES * 0x20) & !word;
    (zero(quote) | zero(backslash) | below_space) & HIGH
}

#[cfg(test)]
mod tests {
    use super::super::{slow_record, Ctx, Outcome};
    use super::*;

    fn ctx() -> Ctx {
        let mut sources = crate::diagnostic::Sources::default();
        let id = sources.add(crate::diagnostic::SourceFile::new(
            "schema.moment",
            include_str!("../../tests/data/schema.moment"),
        ));
        let checked = crate::check::check(&sources, Some(id), &[]);
        let model = checked
            .model
            .unwrap_or_else(|| panic!("{:?}", checked.diagnostics));
        Ctx::new(
            std::sync::Arc::new(Compiled::new(&model.schema)),
            DateTime::<Utc>::MIN_UTC,
        )
    }

    /// The fast path's record of `line`, if it reads it.
    fn fast(line: &str, ctx: &mut Ctx) -> Option<Record> {
        let (schema, texts, slots) = (&ctx.schema, &mut ctx.texts, &mut ctx.slots);
        record(line, "shop.ndjson", 7, schema, texts, slots, &mut ctx.shape)
    }

    /// Asserts that the fast path reads `line` into the record the long way makes.
    fn assert_read_alike(line: &str, ctx: &mut Ctx) {
        let Some(record) = fast(line, ctx) else {
            panic!("the fast path leaves {line}");
        };
        match slow_record(line.as_bytes(), "shop.ndjson", 7, ctx) {
            Outcome::Record(slow) => assert_eq!(record, slow, "{line}"),
            _ => panic!("the long way does not read {line}"),
        }
    }

    /// The usual lines are read by the fast path into the record the long way makes; the
    /// others are left to the long way.
    #[test]
    fn the_fast_path_reads_as_the_long_way_or_leaves_the_line_to_it() {
        let mut ctx = ctx();
        let track = |rest: &str| {
            format!(
                r#"{{"type":"track","userId":"c1","event":"Product Added","timestamp":"2026-11-20T10:00:00Z"{rest}}}"#
            )
        };
        let order = |products: &str| {
            format!(
                r#"{{"type":"track","event":"Order Completed","userId":"c1","timestamp":"2026-11-20T10:00:00Z","properties":{{"order_id":"o1","total":10.5,"products":{products}}}}}"#
            )
        };
        let read = [
            track(r#","properties":{"product_id":"p1","price":15.99,"name":"Sage Cardigan"}"#),
            track(r#","properties":{"product_id":"p1","price":-0.5e2,"quantity":3,"extra":true}"#),
            track(r#","properties":{"product_id":12,"price":0.1,"quantity":-4}"#),
            track(r#","properties":{"product_id":"p1","price":1,"price":2}"#),
            track(r#","properties":{"product_id":"p1","price":1,"name":null,"name":"x"}"#),
            track(r#","properties":{"product_id":"p1","price":123456789012345.6e-7}"#),
            track(r#","properties":{"product_id":"p1","price":1.5E+22,"quantity":2.0}"#),
            track(r#","messageId":"","context":"x","properties":{"product_id":"p","price":1}"#),
            track(r#","messageId":42,"properties":{"product_id":"p","price":-0.0}"#),
            track(r#" , "properties" : { "product_id" : "é ü 😀" , "price" : 1E3 } "#),
            "\t{\"type\":\"identify\",\"userId\":7,\"timestamp\":\"2026-11-20T10:00:00Z\",\"traits\":{\"tier\":\"gold\",\"email_opt_in\":true,\"country\":null}}\r\n ".to_string(),
            r#"{"userId":"c9","traits":{"first_name":"Ada","tier":"gold","tier":"vip"},"timestamp":"2026-11-20T10:00:00+01:00"}"#.to_string(),
            r#"{"type":"identify","userId":"c9","timestamp":"2026-11-20T10:00:00Z"}"#.to_string(),
            r#"{"event":"Product Added","userId":"c1","timestamp":"2026-11-20T10:00:00Z","properties":{"product_id":"p1","price":1}}"#.to_string(),
            track(r#","context":{"ip":"1.2.3.4","library":{"name":"x \"y\" [z]"}},"properties":{"product_id":"p1","price":1}"#),
            track(r#","properties":{"product_id":"p1","price":1,"extra":[1,{"a":"}"}]}"#),
            order(r#"[{"product_id":"p1","name":"RECORD FRAME 7\" SINGLE","quantity":2,"price":1.25},{"product_id":"p2","quantity":1,"price":8}]"#),
            order(r#"[{"product_id":"p1","name":"Marble Wall Clock","quantity":2,"price":1.25}]"#),
            order(r#"[ { "price" : 2 , "quantity" : 1 , "product_id" : "p1" } , {"product_id":"p1","quantity":1,"price":2} ]"#),
            order(r#"[{"product_id":"p1","name":null,"quantity":1,"price":2,"colour":{"a":[1]}}]"#),
            order(r#"[{"product_id":7,"quantity":1.0,"price":2,"price":3}]"#),
            order("[]"),
        ];
        let left = [
            // Rejects, worded the long way.
            track(r#","properties":{}"#),
            track(r#","properties":null"#),
            track(r#","properties":{"product_id":"p1","price":"cheap"}"#),
            track(r#","properties":{"product_id":"p1","price":1,"quantity":1.5}"#),
            track(r#","properties":{"product_id":["p1"],"price":1}"#),
            track(r#","properties":[]"#),
            order(r#"[{"product_id":"p1","quantity":"two","price":1.25}]"#),
            order(r#"[{"product_id":"p1","price":1.25}]"#),
            order(r#"[null]"#),
            order("null"),
            order(r#"[{"product_id":"p1","quantity":1,"price":1.25},]"#),
            order(r#"{"product_id":"p1","quantity":1,"price":1.25}"#),
            r#"{"type":["track"],"userId":{"id":1},"timestamp":"2026-11-20T10:00:00Z"}"#.to_string(),
            r#"{"type":"track","event":"Product Added","timestamp":"2026-11-20T10:00:00Z","properties":{"product_id":"p1","price":1}}"#.to_string(),
            r#"{"type":"identify","timestamp":"2026-11-20T10:00:00Z"}"#.to_string(),
            track(r#","timestamp":"2026-11-20T10:00:00Z","properties":{"product_id":"p1","price":1}"#),
            track(r#","messageId":"m1","messageId":"m2""#),
            track(r#","properties":{"product_id":"p1","price":1},"properties":{"product_id":"p1","price":1}"#),
            r#"{"type":"page","userId":"c1","timestamp":"2026-11-20T10:00:00Z"}"#.to_string(),
            r#"{"type":"track","event":"Unknown Event","userId":"c1"}"#.to_string(),
            r#"{"properties":{"product_id":"p1","price":1},"event":"Product Added","userId":"c1","timestamp":"2026-11-20T10:00:00Z"}"#.to_string(),
            // Escapes and control characters outside nested values.
            track(r#","properties":{"product_id":"a\"b","price":1}"#),
            track(r#","properties":{"product_id":"tab\there","price":1}"#).replace("\\t", "\t"),
            // Numbers whose conversion is left to serde_json.
            track(r#","properties":{"product_id":"p1","price":-0}"#),
            track(r#","properties":{"product_id":"p1","price":-9223372036854775808}"#),
            track(r#","properties":{"product_id":"p1","price":18446744073709551616}"#),
            track(r#","properties":{"product_id":"p1","price":1e23}"#),
            track(r#","properties":{"product_id":"p1","price":12345678901234567890.5}"#),
            // Not JSON.
            track(r#","properties":{"product_id":"p1","price":01}"#),
            track(r#","properties":{"product_id":"p1","price":1.}"#),
            track(r#","properties":{"product_id":"p1","price":1e999}"#),
            track(r#","properties":{"product_id":"p1","price":1,"extra":[1,2}"#),
            track(r#","properties":{"product_id":"p1","price":1,"extra":{"a":1 x}}"#),
            track(r#","context":{"ip":"1.2.3.4""#),
            track(&format!(
                r#","context":{}1{}"#,
                "[".repeat(65),
                "]".repeat(65)
            )),
            track(r#","properties":{"product_id":"p1","price":1},"#),
            track(r#","properties":{"product_id":"p1","price":tru}"#),
            track(r#"} {"#),
            "{}".to_string(),
            "[]".to_string(),
            String::new(),
        ];
        for line in &read {
            assert_read_alike(line, &mut ctx);
        }
        for line in &left {
            assert_eq!(fast(line, &mut ctx), None, "{line}");
        }
    }

    /// Lines whose keys come in another order than the line before's, or with white space
    /// between them, are read as the long way reads them: the shape of the line before is
    /// only where each key is looked for first.
    #[test]
    fn keys_in_any_order_are_read_whatever_the_line_before() {
        let mut ctx = ctx();
        let lines = [
            r#"{"type":"track","userId":"c1","event":"Product Added","timestamp":"2026-11-20T10:00:00Z","properties":{"product_id":"p1","price":2,"quantity":3}}"#,
            r#"{"type":"track","userId":"c1","event":"Product Added","timestamp":"2026-11-20T10:00:00Z","properties":{"product_id":"p1","price":2,"quantity":3}}"#,
            r#"{"event":"Product Added","type":"track","timestamp":"2026-11-20T10:00:01Z","userId":"c2","properties":{"quantity":1,"name":"x","product_id":"p2","price":5}}"#,
            r#"{ "type" : "track", "userId":"c3","event" :"Product Added","timestamp":"2026-11-20T10:00:02Z","properties":{ "price" :1,"product_id" : "p3"}}"#,
            r#"{"type":"track","userId":"c4","event":"Product Added","timestamp":"2026-11-20T10:00:03Z","properties":{"product_id":"p4","price":1,"extra":{"price":2},"quantity":7}}"#,
            r#"{"type":"identify","userId":"c5","timestamp":"2026-11-20T10:00:04Z","traits":{"tier":"gold"}}"#,
            r#"{"type":"track","userId":"c1","event":"Product Added","timestamp":"2026-11-20T10:00:05Z","properties":{"product_id":"p1","price":2,"quantity":3}}"#,
        ];
        for line in lines {
            assert_read_alike(line, &mut ctx);
        }
    }

    /// A timestamp read with the date of the line before is the one `parse_timestamp`
    /// reads, or left to it.
    #[test]
    fn a_timestamp_with_the_date_before_is_read_as_parse_timestamp_reads_it() {
        let mut shape = Shape::default();
        for text in [
            "2026-11-20T10:00:00Z",
            "2026-11-20T23:59:59z",
            "2026-11-20t00:00:00Z",
            "2026-11-20T23:59:60Z",
            "2026-11-20T24:00:00Z",
            "2026-11-20T1a:00:00Z",
            "2026-11-21T00:00:01Z",
            "2026-02-29T00:00:01Z",
            "2028-02-29T00:00:01Z",
            "2028-02-29T12:30:00+01:00",
            "2028-02-29T12:30:00.5Z",
            "2028-02-29",
        ] {
            let quick = shape.timestamp(text);
            assert!(quick.is_none() || quick == parse_timestamp(text), "{text}");
            let usual = [
                "2026-11-20T10:00:00Z",
                "2026-11-21T00:00:01Z",
                "2028-02-29T00:00:01Z",
            ];
            if usual.contains(&text) {
                assert!(quick.is_some(), "{text}");
            }
        }
    }

    /// A number the fast path converts is the number serde_json reads.
    #[test]
    fn numbers_are_converted_as_serde_json_converts_them() {
        let cases = [
            "0",
            "7",
            "-7",
            "0.1",
            "-0.0",
            "2.5e-3",
            "1E22",
            "9.999999999999999e22",
            "123456789.123456789",
            "0.30000000000000004",
            "9007199254740993",
            "1.7976931348623157",
            "4.9e-22",
            "18014398509481985.5",
            "9223372036854775807",
            "-9223372036854775807",
        ];
        for text in cases {
            let mut p = Parser { text, at: 0 };
            let serde: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
            match p.number() {
                Some(Number::Whole(n)) => assert_eq!(serde.as_i64(), Some(n), "{text}"),
                Some(Number::Fraction(x)) => {
                    assert_eq!(
                        serde.as_f64().map(f64::to_bits),
                        Some(x.to_bits()),
                        "{text}"
                    )
                }
                None => continue,
            }
            assert_eq!(p.at, text.len(), "{text}");
        }
    }

    #[test]
    fn the_first_special_byte_is_found_in_every_place() {
        for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
            for at in 0..8 {
                for filler in [b'a', b' ', 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']'] {
                    let mut word = [filler; 8];
                    word[at] = special;
                    // Specials after the first do not move it.
                    if at < 7 {
                        word[7] = b'"';
                    }
                    let found = special_bytes(u64::from_le_bytes(word));
                    assert_eq!(found.trailing_zeros() / 8, at as u32, "{word:?}");
                }
            }
        }
        for filler in 0x20..=0xffu8 {
            if !is_special(filler) {
                assert_eq!(
                    special_bytes(u64::from_le_bytes([filler; 8])),
                    0,
                    "{filler}"
                );
            }
        }
    }
}
