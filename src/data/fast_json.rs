//! A fast path for the usual NDJSON line: a `track` or `identify` whose top-level strings and
//! properties have no escapes. It reads the line straight into the
//! same [`Top`] as the serde path does, calling the same visitors ([`JVisitor`],
//! [`TypedSeed`]) with the same values, without serde_json's deserializer between them.
//!
//! A list or an object inside the line (a list of products, a `context`) is read by
//! serde_json itself from its own slice of the line, with the same seed.
//!
//! Anything else gives `None` and the line is read again by serde_json, which also words
//! the errors: a string with an escape or a control character outside nested values,
//! properties read before `event` or of an undeclared event, an empty top-level object, a
//! number serde_json would read as a float because it does not fit 64 bits, a nested value
//! of more than 64 brackets, and any JSON that is not well formed. So a line gives the same
//! [`Top`] whichever path reads it; debug builds check that on every line.

use std::marker::PhantomData;

use serde::de::{DeserializeSeed, IgnoredAny, Visitor};

use super::{
    find_field, Compiled, EventSpec, FieldSpec, Fields, JVisitor, TextCache, Top, TypedSeed, J,
};

/// The error type the visitors are called with; they never fail on scalars.
type Error = serde_json::Error;

/// Brackets in one nested value, at most; more is left to the serde path.
const MAX_OPENED: usize = 64;

/// The line read by the fast path, or `None` when serde_json must read it.
pub(super) fn top<'a>(line: &'a str, schema: &Compiled, texts: &mut TextCache) -> Option<Top<'a>> {
    let mut p = Parser { text: line, at: 0 };
    let mut top = Top::default();
    // The declared event, once `event` has been read: `Some(None)` when undeclared.
    let mut event: Option<Option<&EventSpec>> = None;
    p.ws();
    p.eat(b'{')?;
    loop {
        let key = p.key()?;
        // As `TopSeed::visit_map` does.
        let slot = match key {
            "type" => Some((&mut top.ty, "type")),
            "userId" => Some((&mut top.user_id, "userId")),
            "event" => Some((&mut top.event, "event")),
            "timestamp" => Some((&mut top.timestamp, "timestamp")),
            "messageId" => Some((&mut top.message_id, "messageId")),
            "properties" => {
                top.properties = match event {
                    Some(Some(spec)) => p.fields(&spec.fields, "", texts)?,
                    _ => return None,
                };
                None
            }
            "traits" => {
                top.traits = p.fields(&schema.traits, "trait ", texts)?;
                None
            }
            _ => {
                p.value(IgnoredAny, PhantomData::<IgnoredAny>)?;
                None
            }
        };
        if let Some((slot, name)) = slot {
            if slot.is_some() {
                top.duplicate = Some(name);
            }
            let value = p.value(JVisitor, PhantomData::<J>)?;
            if name == "event" {
                event = match &value {
                    J::Str(source) => Some(schema.event(source)),
                    _ => None,
                };
            }
            *slot = Some(value);
        }
        if !p.more()? {
            break;
        }
    }
    p.ws();
    (p.at == line.len()).then_some(top)
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
            b'-' | b'0'..=b'9' => return self.number(visitor),
            _ => return None,
        };
        visited.ok()
    }

    /// A number in JSON's grammar. Whole numbers that fit are converted here as
    /// serde_json converts them; numbers with a fraction or an exponent by serde_json
    /// itself, so that they round the same.
    fn number<V: Visitor<'a>>(&mut self, visitor: V) -> Option<V::Value> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let mut whole = true;
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.first_digit()?;
            whole = false;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.first_digit()?;
            whole = false;
        }
        let text = self.text.get(start..self.at)?;
        let visited: Result<V::Value, Error> = if whole {
            // Too long for 64 bits: serde_json reads a float.
            let magnitude: u64 = text.trim_start_matches('-').parse().ok()?;
            if negative {
                // `-0` and what does not fit an i64 are floats to serde_json.
                let n = (magnitude as i64).wrapping_neg();
                if n >= 0 {
                    return None;
                }
                visitor.visit_i64(n)
            } else {
                visitor.visit_u64(magnitude)
            }
        } else {
            visitor.visit_f64(serde_json::from_str::<f64>(text).ok()?)
        };
        visited.ok()
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    /// At least one digit.
    fn first_digit(&mut self) -> Option<()> {
        self.peek().filter(u8::is_ascii_digit)?;
        self.digits();
        Some(())
    }

    /// Properties or traits, as `FieldsSeed::visit_map` types them (`null`: absent).
    fn fields(
        &mut self,
        fields: &[FieldSpec],
        prefix: &'static str,
        texts: &mut TextCache,
    ) -> Option<Fields<'a>> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Some(Fields::Absent);
        }
        self.eat(b'{')?;
        let mut values = Vec::with_capacity(fields.len().min(16));
        let mut bad = None;
        self.ws();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(Fields::Typed(values));
        }
        loop {
            let key = self.key()?;
            match find_field(fields, key) {
                None => {
                    self.value(IgnoredAny, PhantomData::<IgnoredAny>)?;
                }
                Some(i) => {
                    let field = fields.get(i)?;
                    let seed = TypedSeed {
                        ty: &field.ty,
                        null_ok: true,
                        share: false,
                        cache: &mut *texts,
                    };
                    let value = match self.peek()? {
                        b'{' | b'[' => self.nested(seed)?,
                        _ => self.scalar(seed)?,
                    };
                    if bad.is_none() {
                        match value {
                            Ok(v) => values.push((i, v)),
                            Err(e) => bad = Some(e.reason(field.name, prefix)),
                        }
                    }
                }
            }
            if !self.more()? {
                break;
            }
        }
        Some(match bad {
            Some(reason) => Fields::Bad(reason),
            None => Fields::Typed(values),
        })
    }
}

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
    use super::super::{parse_line, TopSeed};
    use super::*;

    fn compiled() -> Compiled {
        let mut sources = crate::diagnostic::Sources::default();
        let id = sources.add(crate::diagnostic::SourceFile::new(
            "schema.moment",
            include_str!("../../tests/data/schema.moment"),
        ));
        let checked = crate::check::check(&sources, Some(id), &[]);
        let model = checked
            .model
            .unwrap_or_else(|| panic!("{:?}", checked.diagnostics));
        Compiled::new(&model.schema)
    }

    /// Each line gives what serde_json gives when the fast path reads it, and the fast
    /// path reads the usual ones.
    #[test]
    fn the_fast_path_reads_as_serde_json_or_leaves_the_line_to_it() {
        let schema = compiled();
        let mut texts = TextCache::default();
        let track = |rest: &str| {
            format!(
                r#"{{"type":"track","userId":"c1","event":"Product Added","timestamp":"2026-11-20T10:00:00Z"{rest}}}"#
            )
        };
        let read = [
            track(r#","properties":{"product_id":"p1","price":15.99,"name":"Sage Cardigan"}"#),
            track(r#","properties":{}"#),
            track(r#","properties":null"#),
            track(r#","properties":{"product_id":"p1","price":-0.5e2,"quantity":3,"extra":true}"#),
            track(r#","properties":{"product_id":12,"price":18446744073709551615}"#),
            track(r#","properties":{"product_id":"p1","price":-9223372036854775808}"#),
            track(r#","properties":{"product_id":"p1","price":"cheap"}"#),
            track(r#","properties":{"product_id":"p1","price":1,"quantity":1.5}"#),
            track(r#","properties":{"product_id":"p1","price":1,"price":2}"#),
            track(r#","messageId":"m1","messageId":"m2","context":{"ip":"x"}"#).replace(r#","context":{"ip":"x"}"#, r#","context":"x""#),
            track(r#" , "properties" : { "product_id" : "é ü 😀" , "price" : 1E3 } "#),
            "\t{\"type\":\"identify\",\"userId\":7,\"timestamp\":\"2026-11-20T10:00:00Z\",\"traits\":{\"tier\":\"gold\",\"email_opt_in\":true,\"country\":null}}\r\n ".to_string(),
            r#"{"type":"track","event":"Unknown Event","userId":"c1"}"#.to_string(),
            track(r#","properties":{"product_id":["p1"],"price":1}"#),
            track(r#","context":{"ip":"1.2.3.4","library":{"name":"x \"y\" [z]"}},"properties":{"product_id":"p1","price":1}"#),
            track(r#","properties":{"product_id":"p1","price":1,"extra":[1,{"a":"}"}]}"#),
            r#"{"type":"track","event":"Order Completed","userId":"c1","timestamp":"2026-11-20T10:00:00Z","properties":{"order_id":"o1","total":10.5,"products":[{"product_id":"p1","name":"RECORD FRAME 7\" SINGLE","quantity":2,"price":1.25},{"product_id":"p2","quantity":1,"price":8}]}}"#.to_string(),
            r#"{"type":"track","event":"Order Completed","userId":"c1","timestamp":"2026-11-20T10:00:00Z","properties":{"order_id":"o1","total":10.5,"products":[{"product_id":"p1","quantity":"two","price":1.25}]}}"#.to_string(),
            r#"{"type":["track"],"userId":{"id":1},"timestamp":"2026-11-20T10:00:00Z"}"#.to_string(),
        ];
        let left = [
            track(r#","properties":{"product_id":"a\"b","price":1}"#),
            track(r#","properties":{"product_id":"tab\there","price":1}"#).replace("\\t", "\t"),
            track(r#","properties":{"product_id":"p1","price":-0}"#),
            track(r#","properties":{"product_id":"p1","price":-9223372036854775809}"#),
            track(r#","properties":{"product_id":"p1","price":18446744073709551616}"#),
            track(r#","properties":{"product_id":"p1","price":01}"#),
            track(r#","properties":{"product_id":"p1","price":1.}"#),
            track(r#","properties":{"product_id":"p1","price":1e999}"#),
            track(r#","properties":[]"#),
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
            r#"{"properties":{"product_id":"p1"},"event":"Product Added"}"#.to_string(),
            r#"{"event":"Unknown Event","properties":{"a":1}}"#.to_string(),
            "{}".to_string(),
            "[]".to_string(),
            String::new(),
        ];
        for line in &read {
            let fast = top(line, &schema, &mut texts);
            let serde = parse_line(
                serde_json::Deserializer::from_str(line),
                TopSeed {
                    schema: &schema,
                    texts: &mut texts,
                },
            );
            assert!(fast.is_some(), "the fast path leaves {line}");
            assert_eq!(fast, serde.ok(), "{line}");
        }
        for line in &left {
            assert_eq!(top(line, &schema, &mut texts), None, "{line}");
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
