//! Message templates that are only text and lookups: `{{ name }}`, `{{ name.field }}`, each
//! with an optional `| default('text')`. Most messages are no more than that, and the engine
//! renders such a template straight from its own values instead of building minijinja's
//! context for every send (`engine::Engine::render`). Anything else, whether in the
//! template (a block, a comment, another filter, whitespace control) or in a value (a
//! number with a fraction, a list), goes to minijinja as before.
//!
//! The output is minijinja's, byte for byte, with the engine's settings (lenient undefined
//! values, no auto-escaping for names without an extension, trailing newline dropped):
//! debug builds render every plain template both ways and compare.

use std::fmt::Write;

use crate::value::Value;

/// A piece of a plain template.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    Lookup(Lookup),
}

/// `{{ root.field | default('text') }}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    pub root: String,
    pub field: Option<String>,
    /// What an undefined value prints; nothing when `None`.
    pub default: Option<String>,
}

/// The pieces of `source` when it is a plain template; `None` when minijinja must render
/// it.
pub fn parse(source: &str) -> Option<Vec<Piece>> {
    // As minijinja's lexer does unless told to keep it: one trailing `\n`, then one `\r`.
    let source = source.strip_suffix('\n').unwrap_or(source);
    let source = source.strip_suffix('\r').unwrap_or(source);
    if source.contains("{%") || source.contains("{#") {
        return None;
    }
    let mut pieces = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            pieces.push(Piece::Text(rest[..start].to_string()));
        }
        let inside = &rest[start + 2..];
        let end = inside.find("}}")?;
        pieces.push(Piece::Lookup(lookup(&inside[..end])?));
        rest = &inside[end + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Some(pieces)
}

/// Writes `value` as minijinja prints it; `false` for a value whose printing is left to
/// minijinja (and `out` is then to be thrown away).
pub fn write_value(out: &mut String, value: &Value) -> bool {
    match value {
        Value::Text(text) => out.push_str(text),
        Value::Int(n) => {
            let _ = write!(out, "{n}");
        }
        // The engine hands these to templates as their text.
        Value::Date(_) | Value::DateTime(_) | Value::Duration(_) => {
            let _ = write!(out, "{value}");
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::List(_) | Value::Record(_) => {
            return false
        }
    }
    true
}

/// Names minijinja reads as something other than a variable.
const RESERVED: &[&str] = &[
    "true",
    "false",
    "none",
    "True",
    "False",
    "None",
    "not",
    "and",
    "or",
    "in",
    "is",
    "if",
    "else",
    "recursive",
];

/// The inside of `{{ … }}` when it is a lookup.
fn lookup(inside: &str) -> Option<Lookup> {
    let mut scan = Scan(inside.trim_start());
    let root = scan.ident()?;
    let field = if scan.eat(".") {
        Some(scan.ident()?)
    } else {
        None
    };
    scan.ws();
    let default = if scan.eat("|") {
        scan.ws();
        if scan.ident()? != "default" {
            return None;
        }
        scan.ws();
        scan.eat("(").then_some(())?;
        scan.ws();
        let text = scan.quoted()?;
        scan.ws();
        scan.eat(")").then_some(())?;
        scan.ws();
        Some(text)
    } else {
        None
    };
    if !scan.0.is_empty() || RESERVED.contains(&root.as_str()) {
        return None;
    }
    Some(Lookup {
        root,
        field,
        default,
    })
}

struct Scan<'a>(&'a str);

impl Scan<'_> {
    fn ws(&mut self) {
        self.0 = self.0.trim_start();
    }

    fn eat(&mut self, token: &str) -> bool {
        match self.0.strip_prefix(token) {
            Some(rest) => {
                self.0 = rest;
                true
            }
            None => false,
        }
    }

    /// An ASCII identifier.
    fn ident(&mut self) -> Option<String> {
        let bytes = self.0.as_bytes();
        if !bytes.first()?.is_ascii_alphabetic() && bytes[0] != b'_' {
            return None;
        }
        let len = bytes
            .iter()
            .position(|b| !b.is_ascii_alphanumeric() && *b != b'_')
            .unwrap_or(bytes.len());
        let (ident, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(ident.to_string())
    }

    /// A string in single or double quotes, without escapes.
    fn quoted(&mut self) -> Option<String> {
        let quote = self.0.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let body = &self.0[1..];
        let end = body.find(quote)?;
        let text = &body[..end];
        if text.contains('\\') {
            return None;
        }
        self.0 = &body[end + 1..];
        Some(text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn look(root: &str, field: Option<&str>, default: Option<&str>) -> Piece {
        Piece::Lookup(Lookup {
            root: root.to_string(),
            field: field.map(str::to_string),
            default: default.map(str::to_string),
        })
    }

    #[test]
    fn text_and_lookups_are_plain() {
        assert_eq!(
            parse(
                "Hi {{ customer.first_name | default('there') }}, you have {{balance}} points.\n"
            ),
            Some(vec![
                Piece::Text("Hi ".into()),
                look("customer", Some("first_name"), Some("there")),
                Piece::Text(", you have ".into()),
                look("balance", None, None),
                Piece::Text(" points.".into()),
            ])
        );
        assert_eq!(parse(""), Some(vec![]));
        assert_eq!(
            parse("{{ event.name|default(\"it's\") }}"),
            Some(vec![look("event", Some("name"), Some("it's"))])
        );
    }

    #[test]
    fn anything_else_is_left_to_minijinja() {
        for source in [
            "{% if customer.vip %}VIP{% endif %}",
            "{# a comment #}",
            "{{- customer.first_name }}",
            "{{ customer.first_name -}}",
            "{{ customer.first_name | upper }}",
            "{{ customer.first_name | default('a', true) }}",
            "{{ customer.first_name | default('a\\'b') }}",
            "{{ customer.address.city }}",
            "{{ customer['first_name'] }}",
            "{{ none }}",
            "{{ true }}",
            "{{ 1 + 1 }}",
            "{{ 'text' }}",
            "{{ customer.first_name ~ '!' }}",
            "{{ unclosed",
            "{{ x | default('}}') }}",
        ] {
            assert_eq!(parse(source), None, "{source}");
        }
    }

    /// Renders `pieces` with `values` by name (`root` or `root.field`), `None` when a
    /// value is left to minijinja.
    fn render(pieces: &[Piece], values: &BTreeMap<&str, Value>) -> Option<String> {
        let mut out = String::new();
        for piece in pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Lookup(l) => {
                    let name = match &l.field {
                        Some(field) => format!("{}.{field}", l.root),
                        None => l.root.clone(),
                    };
                    match values.get(name.as_str()).filter(|v| !v.is_null()) {
                        Some(v) => write_value(&mut out, v).then_some(())?,
                        None => out.push_str(l.default.as_deref().unwrap_or("")),
                    }
                }
            }
        }
        Some(out)
    }

    #[test]
    fn plain_templates_render_as_minijinja_does() {
        let values = BTreeMap::from([
            ("customer.first_name", Value::Text("Ada".into())),
            ("customer.nickname", Value::Text("".into())),
            (
                "customer.born",
                Value::Date(chrono::NaiveDate::from_ymd_opt(1990, 2, 28).unwrap()),
            ),
            ("points", Value::Int(-1200)),
            ("wait", Value::Duration(90_000)),
        ]);
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        let customer: BTreeMap<&str, minijinja::Value> = [
            ("first_name", minijinja::Value::from("Ada")),
            ("nickname", minijinja::Value::from("")),
            (
                "born",
                minijinja::Value::from(values["customer.born"].to_string()),
            ),
        ]
        .into();
        let context = minijinja::context! {
            customer => customer,
            points => -1200,
            wait => values["wait"].to_string(),
        };
        for source in [
            "Hi {{ customer.first_name }}!",
            "Hi {{ customer.last_name }}!",
            "Hi {{ customer.last_name | default('friend') }}!",
            "[{{ customer.nickname | default('none given') }}]",
            "{{ points }} points, born {{ customer.born }}, wait {{ wait }}",
            "{{ missing }}{{missing|default( \"x\" )}}",
            "a } b { c }} d",
            "ends with a newline\n",
            "ends with two\n\n",
            "ends with crlf\r\n",
            "\n\n  {{ customer.first_name }}\n  line two\n",
            "unicode: £10 — {{ customer.first_name }} ✓",
        ] {
            let pieces = parse(source).unwrap_or_else(|| panic!("not plain: {source:?}"));
            let expected = env.render_str(source, &context).unwrap();
            assert_eq!(render(&pieces, &values), Some(expected), "{source:?}");
        }
    }

    #[test]
    fn values_minijinja_prints_its_own_way_are_left_to_it() {
        let mut out = String::new();
        for value in [
            Value::Null,
            Value::Bool(true),
            Value::Number(12.0),
            Value::List(vec![Value::Int(1)].into()),
        ] {
            assert!(!write_value(&mut out, &value), "{value:?}");
        }
    }
}
