//! Text to syntax tree.
//!
//! Step one: pest parses the text with `grammar/moment.pest` into a parse tree.
//! Step two: [`Builder`] turns the tree into the [`ast`](crate::ast), joining spans, folding
//! expressions with a Pratt parser, and rejecting the mistakes the grammar accepts on purpose
//! (`compat_*` rules) with a targeted hint.
//!
//! Parsing never stops at the first problem: it returns a tree and every finding. When pest
//! rejects the text, the finding is recorded, the offending line (or the block it opens) is
//! blanked out with spaces — so every byte offset stays valid — and the text is parsed again,
//! up to [`MAX_RECOVERIES`] times.

use std::cell::RefCell;
use std::sync::LazyLock;

use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::{Pair, Pairs};
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest::Parser as _;

use crate::ast::*;
use crate::diagnostic::{did_you_mean, one_of, Code, Diagnostic, FileId, SourceFile};

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/moment.pest"]
struct MomentParser;

/// Campaign files larger than this are refused with a diagnostic, not parsed.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Deepest nesting of `(`, `[` and `{` accepted.
pub const MAX_NESTING: usize = 32;
/// Most operators in one expression between brackets.
pub const MAX_OPERATORS: usize = 100;
/// How many syntax errors one file may report before parsing gives up on it.
pub const MAX_RECOVERIES: usize = 20;

/// What parsing one file gives.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub file: File,
    pub comments: Vec<Comment>,
    pub diagnostics: Vec<Diagnostic>,
    /// pest rejected part of the text: the tree lacks what was blanked out, so checks that
    /// look for something missing must not run.
    pub incomplete: bool,
}

/// A `# …` comment, kept for the formatter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    /// The comment from `#` to the end of its line, trailing spaces removed.
    pub text: String,
    pub start: usize,
    /// Nothing but white space before it on its line.
    pub own_line: bool,
}

/// Parse one file. Never panics; every problem is in `diagnostics`.
pub fn parse(file_id: FileId, source: &SourceFile) -> Parsed {
    let text = source.text.as_str();
    let mut parsed = Parsed {
        file: File { items: Vec::new() },
        comments: Vec::new(),
        diagnostics: Vec::new(),
        incomplete: true,
    };
    if text.len() > MAX_FILE_BYTES {
        parsed.diagnostics.push(
            Diagnostic::new(
                Code::TooLarge,
                file_id,
                Span::new(0, 0),
                format!(
                    "file is {} bytes, more than a campaign file may be ({} bytes)",
                    text.len(),
                    MAX_FILE_BYTES
                ),
            )
            .with_help("one moment per file keeps each file small; split this one up"),
        );
        return parsed;
    }
    if let Some(span) = too_deep(text) {
        parsed.diagnostics.push(
            Diagnostic::new(
                Code::TooDeep,
                file_id,
                span,
                format!("brackets are nested more than {MAX_NESTING} deep"),
            )
            .with_label("too deep")
            .with_help("name parts of the expression with `let` to keep it flat"),
        );
        return parsed;
    }
    parsed.comments = comments(text);

    pest::set_error_detail(true);
    let mut work = text.to_string();
    balance_braces(file_id, &mut work, &mut parsed.diagnostics);
    let mut last_error_at = None;
    for _ in 0..=MAX_RECOVERIES {
        match MomentParser::parse(Rule::file, &work) {
            Ok(mut pairs) => {
                let builder = Builder {
                    file: file_id,
                    text: &work,
                    diagnostics: RefCell::new(Vec::new()),
                    incomplete: std::cell::Cell::new(false),
                };
                if let Some(file_pair) = pairs.next() {
                    parsed.file = builder.file(file_pair);
                }
                parsed.incomplete = last_error_at.is_some() || builder.incomplete.get();
                parsed.diagnostics.extend(builder.diagnostics.into_inner());
                return parsed;
            }
            Err(error) => {
                let diagnostic = syntax_error(file_id, &work, &error);
                let at = diagnostic.span.start;
                parsed.diagnostics.push(diagnostic);
                if last_error_at == Some(at) || !blank_out(&mut work, at) {
                    break;
                }
                last_error_at = Some(at);
            }
        }
    }
    parsed
}

/// Report braces that do not pair up, and mend the working copy so parsing can go on: a
/// stray `}` is blanked, a `{` never closed gets its `}` at the end of the text.
fn balance_braces(file: FileId, work: &mut String, diagnostics: &mut Vec<Diagnostic>) {
    let mut open = Vec::new();
    let mut stray = Vec::new();
    for (offset, c) in code_chars(work) {
        match c {
            '{' => open.push(offset),
            // The guard pops for every `}`; only one with nothing to pop is stray.
            '}' if open.pop().is_none() => stray.push(offset),
            _ => {}
        }
    }
    for at in stray {
        diagnostics.push(
            Diagnostic::new(
                Code::Syntax,
                file,
                Span::new(at, at + 1),
                "`}` closes no block",
            )
            .with_label("nothing to close")
            .with_help("remove it, or add the `{` it should close"),
        );
        work.replace_range(at..at + 1, " ");
    }
    for &at in open.iter().rev() {
        let line_start = work[..at].rfind('\n').map_or(0, |i| i + 1);
        let header = work[line_start..at].trim();
        diagnostics.push(
            Diagnostic::new(
                Code::Syntax,
                file,
                Span::new(at, at + 1),
                format!("`{{` of `{header}` is never closed"),
            )
            .with_label("opened here")
            .with_help("add the `}` that ends this block"),
        );
        work.push_str("\n}");
    }
}

/// Where brackets (outside strings and comments) first nest deeper than [`MAX_NESTING`].
fn too_deep(text: &str) -> Option<Span> {
    let mut depth = 0usize;
    for (offset, c) in code_chars(text) {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(Span::new(offset, offset + 1));
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// The characters of `text` that are code: not inside strings or comments.
fn code_chars(text: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let mut state = LexState::Code;
    let bytes = text.as_bytes();
    text.char_indices().filter(move |&(i, c)| {
        let rest = &bytes[i..];
        match state {
            LexState::Code => match c {
                '#' => {
                    state = LexState::Comment;
                    false
                }
                '"' if rest.starts_with(b"\"\"\"") => {
                    state = LexState::Triple(i + 3);
                    false
                }
                '"' => {
                    state = LexState::Str(false);
                    false
                }
                _ => true,
            },
            LexState::Comment => {
                if c == '\n' {
                    state = LexState::Code;
                }
                false
            }
            LexState::Str(escaped) => {
                state = match c {
                    _ if escaped => LexState::Str(false),
                    '\\' => LexState::Str(true),
                    '"' | '\n' => LexState::Code,
                    _ => LexState::Str(false),
                };
                false
            }
            LexState::Triple(content_start) => {
                if i >= content_start && rest.starts_with(b"\"\"\"") {
                    state = LexState::Triple(usize::MAX);
                } else if content_start == usize::MAX && c == '"' {
                    // second or third quote of the closing `"""`
                    if !rest.starts_with(b"\"\"") {
                        state = LexState::Code;
                    }
                }
                false
            }
        }
    })
}

#[derive(Clone, Copy)]
enum LexState {
    Code,
    Comment,
    /// Inside `"…"`; `true` right after a backslash.
    Str(bool),
    /// Inside `"""…"""`, content starting at the offset (`usize::MAX` while closing).
    Triple(usize),
}

/// Every `#` comment of the text, in order.
pub fn comments(text: &str) -> Vec<Comment> {
    let mut found = Vec::new();
    let mut state = LexState::Code;
    let bytes = text.as_bytes();
    let mut line_has_code = false;
    let mut comment_start = 0;
    for (i, c) in text.char_indices() {
        let rest = &bytes[i..];
        match state {
            LexState::Code => match c {
                '#' => {
                    state = LexState::Comment;
                    comment_start = i;
                }
                '\n' => line_has_code = false,
                '"' if rest.starts_with(b"\"\"\"") => {
                    state = LexState::Triple(i + 3);
                    line_has_code = true;
                }
                '"' => {
                    state = LexState::Str(false);
                    line_has_code = true;
                }
                c if c.is_whitespace() => {}
                _ => line_has_code = true,
            },
            LexState::Comment => {
                if c == '\n' {
                    found.push(Comment {
                        text: text[comment_start..i].trim_end().to_string(),
                        start: comment_start,
                        own_line: !line_has_code,
                    });
                    state = LexState::Code;
                    line_has_code = false;
                }
            }
            LexState::Str(escaped) => {
                state = match c {
                    _ if escaped => LexState::Str(false),
                    '\\' => LexState::Str(true),
                    '"' => LexState::Code,
                    '\n' => {
                        line_has_code = false;
                        LexState::Code
                    }
                    _ => LexState::Str(false),
                };
            }
            LexState::Triple(content_start) => {
                if i >= content_start && rest.starts_with(b"\"\"\"") {
                    state = LexState::Triple(usize::MAX);
                } else if content_start == usize::MAX && c == '"' && !rest.starts_with(b"\"\"") {
                    state = LexState::Code;
                    line_has_code = true;
                }
            }
        }
    }
    if let LexState::Comment = state {
        found.push(Comment {
            text: text[comment_start..].trim_end().to_string(),
            start: comment_start,
            own_line: !line_has_code,
        });
    }
    found
}

/// Replace the line holding `at` (and, if it opens a block, the whole block) with spaces, so
/// that parsing can go on past it. False when there is nothing left to blank.
fn blank_out(work: &mut String, at: usize) -> bool {
    let at = at.min(work.len());
    let start = work[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = work[at..].find('\n').map_or(work.len(), |i| at + i);
    if work[start..line_end].trim().is_empty() {
        return false;
    }
    // Extend over the block the line opens, if any, so that braces stay balanced.
    let mut depth = 0i64;
    let mut end = line_end;
    for (offset, c) in code_chars(&work[start..]) {
        let offset = start + offset;
        if offset >= line_end && depth <= 0 {
            break;
        }
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if offset < line_end && depth < 0 {
                    // A brace that closes an enclosing block: keep it.
                    end = offset;
                    break;
                }
                if offset >= line_end && depth == 0 {
                    end = offset + 1;
                    break;
                }
            }
            _ => {}
        }
        if offset >= line_end {
            end = offset + c.len_utf8();
        }
    }
    if end <= start {
        return false;
    }
    let blank: String = work[start..end]
        .bytes()
        .map(|b| if b == b'\n' { '\n' } else { ' ' })
        .collect();
    work.replace_range(start..end, &blank);
    true
}

/// Translate pest's error into words the user types.
fn syntax_error(file: FileId, text: &str, error: &pest::error::Error<Rule>) -> Diagnostic {
    let position = match error.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((start, _)) => start,
    };
    let mut expected: Vec<String> = Vec::new();
    let mut wants_value = false;
    if let ErrorVariant::ParsingError { positives, .. } = &error.variant {
        for rule in positives {
            wants_value |= is_value_rule(*rule);
            if let Some(words) = rule_words(*rule) {
                expected.push(words.to_string());
            }
        }
    }
    if let Some(attempts) = error.parse_attempts() {
        for token in attempts.expected_tokens() {
            // Only the literal tokens (`}`, `:`, …) are of use; they print as themselves.
            if let Some(words) = token_words(&token.to_string()) {
                expected.push(words);
            }
        }
        for stack in attempts.call_stacks() {
            if let Some(rule) = stack.deepest.get_rule() {
                wants_value |= is_value_rule(*rule);
                if let Some(words) = rule_words(*rule) {
                    expected.push(words.to_string());
                }
            }
        }
    }
    let mut unique = Vec::new();
    for words in expected {
        if !unique.contains(&words) {
            unique.push(words);
        }
    }
    // A value is missing: the list of every kind of value helps nobody.
    let mut expected = if wants_value && unique.iter().any(|w| w == "a value") {
        vec!["a value".to_string()]
    } else {
        unique
    };
    if expected.len() > 6 {
        expected.truncate(6);
        expected.push("something else".into());
    }

    let found = token_at(text, position);
    // When a value is missing at the end of a line, pest points at the next line; point
    // just after the last thing written instead.
    let (span, found_words) = if found.is_empty() || wants_value && starts_line(text, position) {
        let end = text[..position].trim_end().len();
        let end = end.max(text[..end].rfind('\n').map_or(0, |i| i + 1));
        let prev = text[..end]
            .char_indices()
            .next_back()
            .map_or(end, |(i, _)| i);
        (
            Span::new(prev, end),
            if found.is_empty() {
                "the end of the file".to_string()
            } else {
                "the end of the line".to_string()
            },
        )
    } else {
        let shown: String = found.chars().take(40).collect();
        (
            Span::new(position, position + found.len()),
            format!("`{shown}`"),
        )
    };
    let message = if expected.is_empty() {
        format!("unexpected {found_words}")
    } else {
        format!(
            "expected {}, found {found_words}",
            or_list(expected.iter().map(String::as_str))
        )
    };
    let mut diagnostic =
        Diagnostic::new(Code::Syntax, file, span, message).with_label(if expected.is_empty() {
            "not understood".to_string()
        } else {
            format!(
                "expected {}",
                or_list(expected.iter().take(3).map(String::as_str))
            )
        });
    if found.contains(['\u{201C}', '\u{201D}', '\u{2018}', '\u{2019}']) {
        diagnostic = diagnostic.with_help("replace curly quotes with straight double quotes `\"`");
    }
    diagnostic
}

fn or_list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<&str> = items.collect();
    match items.len() {
        0 => String::new(),
        1 => items[0].to_string(),
        n => format!("{} or {}", items[..n - 1].join(", "), items[n - 1]),
    }
}

fn starts_line(text: &str, position: usize) -> bool {
    let line_start = text[..position].rfind('\n').map_or(0, |i| i + 1);
    text[line_start..position].trim().is_empty() && line_start > 0
}

/// The word, number or symbol at `position`.
fn token_at(text: &str, position: usize) -> &str {
    let rest = &text[position.min(text.len())..];
    let first = match rest.chars().next() {
        None => return "",
        Some(c) => c,
    };
    let end = if first.is_alphanumeric() || first == '_' {
        rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len())
    } else if first == '"' {
        rest[1..].find(['"', '\n']).map_or(rest.len(), |i| {
            if rest.as_bytes().get(i + 1) == Some(&b'"') {
                i + 2
            } else {
                i + 1
            }
        })
    } else {
        first.len_utf8()
    };
    &rest[..end]
}

fn is_value_rule(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::expr
            | Rule::path
            | Rule::call
            | Rule::paren
            | Rule::list_lit
            | Rule::number
            | Rule::integer
            | Rule::string
            | Rule::duration
            | Rule::duration_value
            | Rule::time_value
            | Rule::time_of_day
            | Rule::date
            | Rule::datetime
            | Rule::percent
            | Rule::type_expr
            | Rule::bool_lit
            | Rule::none_lit
            | Rule::op_not
            | Rule::op_neg
    )
}

/// The words a user would use for what a rule stands for; `None` for rules that only
/// restate another.
fn rule_words(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::EOI => "the end of the file",
        Rule::ident => "a name",
        Rule::path => "a name",
        Rule::string | Rule::text_value | Rule::triple_string => "text in double quotes",
        Rule::duration | Rule::duration_value => "a duration like `2h`",
        Rule::time_of_day | Rule::time_value => "a time like `09:00`",
        Rule::integer => "a whole number",
        Rule::number | Rule::percent => "a number",
        Rule::date => "a date like `2026-12-01`",
        Rule::expr
        | Rule::call
        | Rule::paren
        | Rule::list_lit
        | Rule::datetime
        | Rule::bool_lit
        | Rule::none_lit => "a value",
        Rule::type_expr | Rule::list_type | Rule::record_type => "a type like `text`",
        Rule::op_or | Rule::op_and => "`and` or `or`",
        Rule::op_eq
        | Rule::op_ne
        | Rule::op_le
        | Rule::op_ge
        | Rule::op_lt
        | Rule::op_gt
        | Rule::op_in
        | Rule::op_contains
        | Rule::op_crosses
        | Rule::op_add
        | Rule::op_sub
        | Rule::op_mul
        | Rule::op_div => "an operator",
        Rule::compare_op => "a comparison like `>=`",
        Rule::customer_block | Rule::kw_customer => "`customer`",
        Rule::event_decl | Rule::kw_event => "`event`",
        Rule::defaults_block | Rule::kw_defaults => "`defaults`",
        Rule::moment_block | Rule::kw_moment => "`moment`",
        Rule::trigger_block | Rule::kw_trigger => "`trigger`",
        Rule::message_block | Rule::kw_message => "`message`",
        Rule::kpi_decl | Rule::kw_kpi => "`kpi`",
        Rule::limit_rule | Rule::kw_limit => "`limit`",
        Rule::quiet_hours | Rule::kw_quiet => "`quiet hours`",
        Rule::holdout_rule | Rule::kw_holdout => "`holdout`",
        Rule::active_rule | Rule::kw_active => "`active`",
        Rule::priority_rule | Rule::kw_priority => "`priority`",
        Rule::on_event | Rule::on_anniversary | Rule::on_offset | Rule::kw_on => "`on`",
        Rule::every | Rule::kw_every => "`every`",
        Rule::let_clause | Rule::kw_let => "`let`",
        Rule::where_clause | Rule::kw_where | Rule::agg_where => "`where`",
        Rule::unless_clause | Rule::kw_unless => "`unless`",
        Rule::wait_clause | Rule::kw_wait => "`wait`",
        Rule::agg_within | Rule::kw_within => "`within`",
        Rule::agg_across | Rule::kw_across => "`across customers`",
        Rule::goal_clause | Rule::kw_goal => "`goal`",
        Rule::kw_catalog => "`catalog`",
        Rule::kw_anniversary => "`anniversary`",
        Rule::kw_of => "`of`",
        Rule::kw_at => "`at`",
        Rule::kw_in => "`in`",
        Rule::kw_after => "`after`",
        Rule::kw_before => "`before`",
        Rule::kw_send => "`send`",
        Rule::kw_customers => "`customers`",
        Rule::kw_per => "`per`",
        Rule::kw_to => "`to`",
        Rule::kw_hours => "`hours`",
        Rule::kw_from => "`from`",
        Rule::kw_until => "`until`",
        Rule::kw_requires => "`requires`",
        Rule::kw_timezone | Rule::default_timezone => "`timezone`",
        Rule::kw_cap | Rule::default_cap => "`cap`",
        Rule::kw_consent | Rule::default_consent => "`consent`",
        Rule::field_decl => "a field like `name: text`",
        Rule::message_field => "a message field like `subject \"…\"`",
        Rule::optional_mark => "`?`",
        _ => return None,
    })
}

fn token_words(token: &str) -> Option<String> {
    match token {
        "{" | "}" | "(" | ")" | "[" | "]" | ":" | "," | "=" | "." | "<" | ">" | "?" => {
            Some(format!("`{token}`"))
        }
        _ => None,
    }
}

fn is_keyword(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::kw_moment
            | Rule::kw_customer
            | Rule::kw_customers
            | Rule::kw_event
            | Rule::kw_catalog
            | Rule::kw_defaults
            | Rule::kw_timezone
            | Rule::kw_cap
            | Rule::kw_per
            | Rule::kw_consent
            | Rule::kw_requires
            | Rule::kw_trigger
            | Rule::kw_on
            | Rule::kw_anniversary
            | Rule::kw_of
            | Rule::kw_at
            | Rule::kw_every
            | Rule::kw_in
            | Rule::kw_let
            | Rule::kw_where
            | Rule::kw_unless
            | Rule::kw_within
            | Rule::kw_wait
            | Rule::kw_after
            | Rule::kw_before
            | Rule::kw_send
            | Rule::kw_across
            | Rule::kw_message
            | Rule::kw_kpi
            | Rule::kw_goal
            | Rule::kw_limit
            | Rule::kw_quiet
            | Rule::kw_hours
            | Rule::kw_to
            | Rule::kw_holdout
            | Rule::kw_active
            | Rule::kw_from
            | Rule::kw_until
            | Rule::kw_priority
            | Rule::kw_list
    )
}

static PRATT: LazyLock<PrattParser<Rule>> = LazyLock::new(|| {
    PrattParser::new()
        .op(Op::infix(Rule::op_or, Assoc::Left) | Op::infix(Rule::compat_or, Assoc::Left))
        .op(Op::infix(Rule::op_and, Assoc::Left) | Op::infix(Rule::compat_and, Assoc::Left))
        .op(Op::prefix(Rule::op_not) | Op::prefix(Rule::compat_bang))
        .op(Op::infix(Rule::op_eq, Assoc::Left)
            | Op::infix(Rule::op_ne, Assoc::Left)
            | Op::infix(Rule::op_lt, Assoc::Left)
            | Op::infix(Rule::op_le, Assoc::Left)
            | Op::infix(Rule::op_gt, Assoc::Left)
            | Op::infix(Rule::op_ge, Assoc::Left)
            | Op::infix(Rule::compat_assign, Assoc::Left)
            | Op::infix(Rule::op_in, Assoc::Left)
            | Op::infix(Rule::op_contains, Assoc::Left)
            | Op::infix(Rule::op_crosses, Assoc::Left))
        .op(Op::infix(Rule::op_add, Assoc::Left) | Op::infix(Rule::op_sub, Assoc::Left))
        .op(Op::infix(Rule::op_mul, Assoc::Left) | Op::infix(Rule::op_div, Assoc::Left))
        .op(Op::prefix(Rule::op_neg))
});

/// Keywords that start a line in each kind of block (for "did you mean").
const TOP_KEYWORDS: [&str; 4] = ["moment", "customer", "event", "defaults"];
const MOMENT_KEYWORDS: [&str; 8] = [
    "trigger", "message", "kpi", "limit", "quiet", "holdout", "active", "priority",
];
const TRIGGER_KEYWORDS: [&str; 6] = ["on", "every", "let", "where", "unless", "wait"];
const DEFAULTS_KEYWORDS: [&str; 3] = ["timezone", "cap", "consent"];

/// Pairs to AST, collecting the findings of `compat_*` rules.
struct Builder<'t> {
    file: FileId,
    text: &'t str,
    diagnostics: RefCell<Vec<Diagnostic>>,
    /// A block was malformed and left out: checks for what is missing must not run.
    incomplete: std::cell::Cell<bool>,
}

/// The span of a pair, without the white space and comments pest may leave at its end
/// (a rule ending in an optional part consumes the white space before trying it).
fn span_of(pair: &Pair<'_, Rule>) -> Span {
    let s = pair.as_span();
    let text = pair.as_str();
    let mut len = text.trim_end().len();
    while text[..len]
        .rsplit('\n')
        .next()
        .is_some_and(|last| last.contains('#'))
    {
        match comments(&text[..len]).last() {
            Some(c) if c.start + c.text.len() >= len => len = text[..c.start].trim_end().len(),
            _ => break,
        }
    }
    Span::new(s.start(), s.start() + len)
}

/// The meaningful children of a pair: keywords left out.
fn children<'i>(pair: Pair<'i, Rule>) -> impl Iterator<Item = Pair<'i, Rule>> {
    pair.into_inner().filter(|p| !is_keyword(p.as_rule()))
}

impl Builder<'_> {
    fn report(&self, diagnostic: Diagnostic) {
        self.diagnostics.borrow_mut().push(diagnostic);
    }

    fn error(&self, code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(code, self.file, span, message)
    }

    fn file(&self, pair: Pair<'_, Rule>) -> File {
        let mut items = Vec::new();
        for item in children(pair) {
            match item.as_rule() {
                Rule::customer_block => items.push(Item::Customer(self.customer(item))),
                Rule::event_decl => items.push(Item::Event(self.event(item))),
                Rule::defaults_block => items.push(Item::Defaults(self.defaults(item))),
                Rule::moment_block => items.push(Item::Moment(self.moment(item))),
                Rule::compat_setting => self.unknown_setting(item, &TOP_KEYWORDS, None),
                _ => {}
            }
        }
        File { items }
    }

    /// A line starting with a name the block does not know. If the name is one of the
    /// block's keywords, the line is malformed: parse it alone with `rule` for pest's error.
    fn unknown_setting(
        &self,
        pair: Pair<'_, Rule>,
        keywords: &[&str],
        rule: Option<fn(&str) -> Option<Rule>>,
    ) {
        let span = span_of(&pair);
        let mut inner = pair.into_inner();
        let Some(name) = inner.next() else { return };
        let name_span = span_of(&name);
        let word = name.as_str();
        if keywords.contains(&word) {
            self.incomplete.set(true);
            if let Some(rule) = rule.and_then(|f| f(word)) {
                let line = &self.text[span.start..span.end];
                if let Err(error) = MomentParser::parse(rule, line) {
                    let mut diagnostic = syntax_error(self.file, line, &error);
                    diagnostic.span = Span::new(
                        diagnostic.span.start + span.start,
                        diagnostic.span.end + span.start,
                    );
                    self.report(diagnostic);
                    return;
                }
            }
            self.report(
                self.error(
                    Code::Syntax,
                    span,
                    format!("`{word}` is not written this way"),
                )
                .with_label("not understood"),
            );
            return;
        }
        let help = did_you_mean(word, keywords.iter().copied()).unwrap_or_else(|| {
            format!(
                "a line here starts with {}",
                one_of(keywords.iter().copied())
            )
        });
        self.report(
            self.error(
                Code::UnknownSetting,
                name_span,
                format!("unknown setting `{word}`"),
            )
            .with_label("not a known keyword here")
            .with_help(help),
        );
    }

    // -----------------------------------------------------------------------------------
    // Schema

    fn customer(&self, pair: Pair<'_, Rule>) -> CustomerBlock {
        let span = span_of(&pair);
        CustomerBlock {
            traits: children(pair).map(|p| self.field_decl(p)).collect(),
            span,
        }
    }

    fn field_decl(&self, pair: Pair<'_, Rule>) -> FieldDecl {
        let span = span_of(&pair);
        let mut inner = children(pair);
        let name = self.ident(inner.next());
        let ty = inner
            .next()
            .map(|p| self.type_expr(p))
            .unwrap_or_else(|| TypeExpr {
                kind: TypeExprKind::Named(name.clone()),
                optional: false,
                span,
            });
        let default = inner.next().map(|p| self.expr(p));
        FieldDecl {
            name,
            ty,
            default,
            span,
        }
    }

    fn type_expr(&self, pair: Pair<'_, Rule>) -> TypeExpr {
        let span = span_of(&pair);
        let mut optional = false;
        let mut kind = None;
        for part in children(pair) {
            match part.as_rule() {
                Rule::optional_mark => optional = true,
                Rule::ident => kind = Some(TypeExprKind::Named(self.ident(Some(part)))),
                Rule::list_type => {
                    let element = children(part)
                        .next()
                        .map(|p| self.type_expr(p))
                        .map(Box::new);
                    if let Some(element) = element {
                        kind = Some(TypeExprKind::List(element));
                    }
                }
                Rule::record_type => {
                    kind = Some(TypeExprKind::Record(
                        children(part).map(|p| self.field_decl(p)).collect(),
                    ))
                }
                _ => {}
            }
        }
        TypeExpr {
            kind: kind.unwrap_or_else(|| {
                TypeExprKind::Named(Ident {
                    name: String::new(),
                    span,
                })
            }),
            optional,
            span,
        }
    }

    fn event(&self, pair: Pair<'_, Rule>) -> EventDecl {
        let span = span_of(&pair);
        let catalog = pair
            .clone()
            .into_inner()
            .any(|p| p.as_rule() == Rule::kw_catalog);
        // A block follows the source name (and `catalog`): look at the first character of
        // code after them, not at any `{` (one may sit in the source name or a comment).
        let before_block = pair
            .clone()
            .into_inner()
            .filter(|p| matches!(p.as_rule(), Rule::string | Rule::kw_catalog))
            .map(|p| p.as_span().end())
            .max()
            .unwrap_or(span.start);
        let has_block = code_chars(&self.text[before_block..span.end.max(before_block)])
            .find(|(_, c)| !c.is_whitespace())
            .is_some_and(|(_, c)| c == '{');
        let mut inner = children(pair);
        let name = self.ident(inner.next());
        let source = self.string(inner.next());
        let fields = inner.map(|p| self.field_decl(p)).collect();
        EventDecl {
            name,
            source,
            catalog,
            fields,
            has_block,
            span,
        }
    }

    fn defaults(&self, pair: Pair<'_, Rule>) -> DefaultsBlock {
        let span = span_of(&pair);
        let mut items = Vec::new();
        for item in children(pair) {
            let item_span = span_of(&item);
            match item.as_rule() {
                Rule::default_timezone => items.push(DefaultItem::Timezone {
                    zone: self.string(children(item).next()),
                    span: item_span,
                }),
                Rule::default_cap => {
                    let mut inner = children(item);
                    let count = self.integer(inner.next());
                    let per = self.duration_value(inner.next());
                    items.push(DefaultItem::Cap {
                        count,
                        per,
                        span: item_span,
                    });
                }
                Rule::default_consent => {
                    let mut inner = children(item);
                    let channel = self.ident(inner.next());
                    let requires = self.expr_opt(inner.next(), item_span);
                    items.push(DefaultItem::Consent {
                        channel,
                        requires,
                        span: item_span,
                    });
                }
                Rule::compat_setting => self.unknown_setting(
                    item,
                    &DEFAULTS_KEYWORDS,
                    Some(|w| match w {
                        "timezone" => Some(Rule::default_timezone),
                        "cap" => Some(Rule::default_cap),
                        "consent" => Some(Rule::default_consent),
                        _ => None,
                    }),
                ),
                _ => {}
            }
        }
        DefaultsBlock { items, span }
    }

    // -----------------------------------------------------------------------------------
    // Moments

    fn moment(&self, pair: Pair<'_, Rule>) -> Moment {
        let span = span_of(&pair);
        let mut inner = children(pair);
        let id = self.ident(inner.next());
        let title = self.string(inner.next());
        let mut items = Vec::new();
        for item in inner {
            let item_span = span_of(&item);
            match item.as_rule() {
                Rule::trigger_block => items.push(MomentItem::Trigger(self.trigger(item))),
                Rule::message_block => items.push(MomentItem::Message(self.message(item))),
                Rule::kpi_decl => items.push(MomentItem::Kpi(self.kpi(item))),
                Rule::limit_rule => {
                    let mut inner = children(item);
                    let count = self.integer(inner.next());
                    let per = inner.next().map(|p| self.duration_value(Some(p)));
                    items.push(MomentItem::Limit {
                        count,
                        per,
                        span: item_span,
                    });
                }
                Rule::quiet_hours => {
                    let mut inner = children(item);
                    let from = self.time_value(inner.next(), item_span);
                    let to = self.time_value(inner.next(), item_span);
                    items.push(MomentItem::QuietHours {
                        from,
                        to,
                        span: item_span,
                    });
                }
                Rule::holdout_rule => {
                    if let Some(value) = children(item).next() {
                        let value_span = span_of(&value);
                        let text = value.as_str().trim_end_matches('%');
                        let percent = text.parse::<f64>().unwrap_or(0.0);
                        if value.as_rule() == Rule::number {
                            self.report(
                                self.error(
                                    Code::InvalidLiteral,
                                    value_span,
                                    format!("`holdout {text}` needs a percent sign"),
                                )
                                .with_label("a share of customers")
                                .with_help(format!("write `holdout {text}%`")),
                            );
                        }
                        items.push(MomentItem::Holdout {
                            percent,
                            span: item_span,
                        });
                    }
                }
                Rule::active_rule => {
                    let mut inner = children(item);
                    let from = self.date(inner.next(), item_span);
                    let until = inner.next().map(|p| self.date(Some(p), item_span));
                    items.push(MomentItem::Active {
                        from,
                        until,
                        span: item_span,
                    });
                }
                Rule::priority_rule => {
                    let value = self.integer(children(item).next());
                    items.push(MomentItem::Priority {
                        value,
                        span: item_span,
                    });
                }
                Rule::compat_setting => self.unknown_setting(
                    item,
                    &MOMENT_KEYWORDS,
                    Some(|w| match w {
                        "trigger" => Some(Rule::trigger_block),
                        "message" => Some(Rule::message_block),
                        "kpi" => Some(Rule::kpi_decl),
                        "limit" => Some(Rule::limit_rule),
                        "quiet" => Some(Rule::quiet_hours),
                        "holdout" => Some(Rule::holdout_rule),
                        "active" => Some(Rule::active_rule),
                        "priority" => Some(Rule::priority_rule),
                        _ => None,
                    }),
                ),
                _ => {}
            }
        }
        Moment {
            id,
            title,
            items,
            span,
        }
    }

    fn trigger(&self, pair: Pair<'_, Rule>) -> Trigger {
        let span = span_of(&pair);
        let mut clauses = Vec::new();
        for clause in children(pair) {
            let clause_span = span_of(&clause);
            match clause.as_rule() {
                Rule::on_event => clauses.push(TriggerClause::On(TriggerSource::Event {
                    event: self.ident(children(clause).next()),
                    span: clause_span,
                })),
                Rule::on_anniversary => {
                    let mut inner = children(clause);
                    let date = self.path(inner.next(), clause_span);
                    let at = self.time_value(inner.next(), clause_span);
                    clauses.push(TriggerClause::On(TriggerSource::Anniversary {
                        date,
                        at,
                        span: clause_span,
                    }));
                }
                Rule::on_offset => {
                    let direction = if clause
                        .clone()
                        .into_inner()
                        .any(|p| p.as_rule() == Rule::kw_before)
                    {
                        Direction::Before
                    } else {
                        Direction::After
                    };
                    let mut inner = children(clause);
                    let offset = self.duration_value(inner.next());
                    let date = self.path(inner.next(), clause_span);
                    let at = self.time_value(inner.next(), clause_span);
                    clauses.push(TriggerClause::On(TriggerSource::Offset {
                        offset,
                        direction,
                        date,
                        at,
                        span: clause_span,
                    }));
                }
                Rule::every => {
                    let mut inner = children(clause);
                    let schedule = inner.next();
                    let cron = match schedule {
                        Some(p) if p.as_rule() == Rule::string => self.string(Some(p)),
                        Some(p) => {
                            let text = p.as_str().to_string();
                            self.report(
                                self.error(
                                    Code::InvalidCron,
                                    span_of(&p),
                                    format!("`every` takes a cron expression in quotes, found `{text}`"),
                                )
                                .with_label("not a cron expression")
                                .with_help(format!(
                                    "write when it fires, like `every \"0 9 * * *\"` (09:00 daily); for a delay after a trigger, use `wait {text}`"
                                )),
                            );
                            StrLit {
                                value: "0 0 * * *".into(),
                                triple: false,
                                span: span_of(&p),
                            }
                        }
                        None => self.string(None),
                    };
                    let zone = inner.next().map(|p| self.string(Some(p)));
                    clauses.push(TriggerClause::On(TriggerSource::Every {
                        cron,
                        zone,
                        span: clause_span,
                    }));
                }
                Rule::let_clause => {
                    let mut inner = children(clause);
                    let name = self.ident(inner.next());
                    let value = self.expr_opt(inner.next(), clause_span);
                    clauses.push(TriggerClause::Let {
                        name,
                        value,
                        span: clause_span,
                    });
                }
                Rule::where_clause => clauses.push(TriggerClause::Where {
                    condition: self.expr_opt(children(clause).next(), clause_span),
                    span: clause_span,
                }),
                Rule::unless_clause => {
                    let mut inner = children(clause);
                    let event = self.ident(inner.next());
                    let mut condition = None;
                    let mut within = None;
                    for part in inner {
                        match part.as_rule() {
                            Rule::expr => condition = Some(self.expr(part)),
                            Rule::duration_value => within = Some(self.duration_value(Some(part))),
                            _ => {}
                        }
                    }
                    clauses.push(TriggerClause::Unless {
                        event,
                        condition,
                        within,
                        span: clause_span,
                    });
                }
                Rule::wait_clause => clauses.push(TriggerClause::Wait {
                    delay: self.duration_value(children(clause).next()),
                    span: clause_span,
                }),
                Rule::compat_setting => self.unknown_setting(
                    clause,
                    &TRIGGER_KEYWORDS,
                    Some(|w| match w {
                        "on" => Some(Rule::on_event),
                        "every" => Some(Rule::every),
                        "let" => Some(Rule::let_clause),
                        "where" => Some(Rule::where_clause),
                        "unless" => Some(Rule::unless_clause),
                        "wait" => Some(Rule::wait_clause),
                        _ => None,
                    }),
                ),
                _ => {}
            }
        }
        Trigger { clauses, span }
    }

    fn message(&self, pair: Pair<'_, Rule>) -> Message {
        let span = span_of(&pair);
        let mut inner = children(pair);
        let channel = self.ident(inner.next());
        let fields = inner
            .map(|field| {
                let field_span = span_of(&field);
                let mut parts = children(field);
                let name = self.ident(parts.next());
                let template = self.string(parts.next());
                MessageField {
                    name,
                    template,
                    span: field_span,
                }
            })
            .collect();
        Message {
            channel,
            fields,
            span,
        }
    }

    fn kpi(&self, pair: Pair<'_, Rule>) -> Kpi {
        let span = span_of(&pair);
        let mut inner = children(pair);
        let title = self.string(inner.next());
        let measure = self.expr_opt(inner.next(), span);
        let goal = inner.next().map(|goal| {
            let goal_span = span_of(&goal);
            let mut parts = children(goal);
            let op = match parts.next().map(|p| p.as_str()) {
                Some("==") => BinaryOp::Eq,
                Some("!=") => BinaryOp::Ne,
                Some("<=") => BinaryOp::Le,
                Some("<") => BinaryOp::Lt,
                Some(">") => BinaryOp::Gt,
                _ => BinaryOp::Ge,
            };
            let target = self.expr_opt(parts.next(), goal_span);
            Goal {
                op,
                target,
                span: goal_span,
            }
        });
        Kpi {
            title,
            measure,
            goal,
            span,
        }
    }

    // -----------------------------------------------------------------------------------
    // Leaves

    fn ident(&self, pair: Option<Pair<'_, Rule>>) -> Ident {
        match pair {
            Some(p) => Ident {
                name: p.as_str().to_string(),
                span: span_of(&p),
            },
            None => Ident {
                name: String::new(),
                span: Span::default(),
            },
        }
    }

    fn path(&self, pair: Option<Pair<'_, Rule>>, fallback: Span) -> Path {
        match pair {
            Some(p) => {
                let span = span_of(&p);
                Path {
                    segments: children(p).map(|s| self.ident(Some(s))).collect(),
                    span,
                }
            }
            None => Path {
                segments: Vec::new(),
                span: fallback,
            },
        }
    }

    fn integer(&self, pair: Option<Pair<'_, Rule>>) -> u64 {
        let Some(p) = pair else { return 0 };
        match p.as_str().parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                self.report(
                    self.error(
                        Code::InvalidLiteral,
                        span_of(&p),
                        format!("`{}` is too large", p.as_str()),
                    )
                    .with_label("too large"),
                );
                0
            }
        }
    }

    /// A string or triple-quoted string, unescaped (and dedented).
    fn string(&self, pair: Option<Pair<'_, Rule>>) -> StrLit {
        let Some(p) = pair else {
            return StrLit {
                value: String::new(),
                triple: false,
                span: Span::default(),
            };
        };
        let span = span_of(&p);
        match p.as_rule() {
            Rule::triple_string => {
                let raw = p.into_inner().next().map_or("", |i| i.as_str());
                StrLit {
                    value: dedent(raw),
                    triple: true,
                    span,
                }
            }
            Rule::compat_smart_string => {
                let inner: String = {
                    let mut chars = p.as_str().chars();
                    chars.next();
                    chars.next_back();
                    chars.collect()
                };
                self.report(
                    self.error(
                        Code::SmartQuote,
                        span,
                        "text must be in straight double quotes",
                    )
                    .with_label("curly or single quotes")
                    .with_help(format!("write \"{inner}\"")),
                );
                StrLit {
                    value: inner,
                    triple: false,
                    span,
                }
            }
            _ => {
                let raw = p.into_inner().next().map_or("", |i| i.as_str());
                let value = self.unescape(raw, span.start + 1);
                StrLit {
                    value,
                    triple: false,
                    span,
                }
            }
        }
    }

    fn unescape(&self, raw: &str, offset: usize) -> String {
        let mut value = String::with_capacity(raw.len());
        let mut chars = raw.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '\\' {
                value.push(c);
                continue;
            }
            match chars.next() {
                Some((_, '"')) => value.push('"'),
                Some((_, '\\')) => value.push('\\'),
                Some((_, 'n')) => value.push('\n'),
                Some((_, 't')) => value.push('\t'),
                Some((j, other)) => {
                    self.report(
                        self.error(
                            Code::InvalidLiteral,
                            Span::new(offset + i, offset + j + other.len_utf8()),
                            format!("unknown escape `\\{other}`"),
                        )
                        .with_label("unknown escape")
                        .with_help("the escapes are `\\\"`, `\\\\`, `\\n` and `\\t`"),
                    );
                    value.push(other);
                }
                None => value.push('\\'),
            }
        }
        value
    }

    fn duration_value(&self, pair: Option<Pair<'_, Rule>>) -> Duration {
        let Some(p) = pair else {
            return placeholder_duration(Span::default());
        };
        let span = span_of(&p);
        let Some(inner) = p.into_inner().next() else {
            return placeholder_duration(span);
        };
        let text = inner.as_str();
        match inner.as_rule() {
            Rule::duration => self.duration_text(text, span),
            Rule::compat_duration => {
                self.report_compat_duration(text, span);
                placeholder_duration(span)
            }
            Rule::number => {
                self.report(
                    self.error(Code::NotADuration, span, format!("`{text}` has no unit"))
                        .with_label("a duration needs a unit")
                        .with_help(format!(
                            "write `{text}m` for minutes, `{text}h` for hours or `{text}d` for days"
                        )),
                );
                placeholder_duration(span)
            }
            _ => {
                let value = inner.as_str().trim_matches('"');
                let diagnostic = if looks_like_cron(value) {
                    self.error(
                        Code::NotADuration,
                        span,
                        format!("a cron expression is not a duration: `\"{value}\"`"),
                    )
                    .with_label("a schedule, where a delay belongs")
                    .with_help(format!(
                        "to fire on a schedule make the trigger `every \"{value}\"`; here write a delay like `1h` or `2d`"
                    ))
                } else {
                    self.error(
                        Code::NotADuration,
                        span,
                        format!("expected a duration like `2h`, found text `\"{value}\"`"),
                    )
                    .with_label("not a duration")
                    .with_help("write a number and a unit without quotes: `30m`, `2h`, `7d`")
                };
                self.report(diagnostic);
                placeholder_duration(span)
            }
        }
    }

    fn time_value(&self, pair: Option<Pair<'_, Rule>>, fallback: Span) -> TimeOfDay {
        let Some(p) = pair else {
            return TimeOfDay {
                hour: 0,
                minute: 0,
                span: fallback,
            };
        };
        let span = span_of(&p);
        let inner = p.into_inner().next();
        let text = inner.as_ref().map_or("", |i| i.as_str());
        if let Some(i) = inner.as_ref().filter(|i| i.as_rule() == Rule::time_of_day) {
            return self.time_of_day(i.as_str(), span);
        }
        let hint = text
            .trim_matches('"')
            .trim_end_matches(|c: char| c.is_alphabetic() || c == ' ')
            .parse::<u32>()
            .ok()
            .filter(|h| *h < 24)
            .map(|h| {
                let pm = text.to_lowercase().contains("pm") && h < 12;
                format!("write `{:02}:00`", if pm { h + 12 } else { h })
            })
            .unwrap_or_else(|| "write a 24-hour time like `09:00` or `21:30`".into());
        self.report(
            self.error(
                Code::NotATime,
                span,
                format!("`{text}` is not a time of day"),
            )
            .with_label("expected `HH:MM`")
            .with_help(hint),
        );
        TimeOfDay {
            hour: 0,
            minute: 0,
            span,
        }
    }

    fn time_of_day(&self, text: &str, span: Span) -> TimeOfDay {
        let (h, m) = text.split_once(':').unwrap_or((text, "0"));
        let hour = h.parse::<u32>().unwrap_or(99);
        let minute = m.parse::<u32>().unwrap_or(99);
        if hour > 23 || minute > 59 {
            self.report(
                self.error(
                    Code::InvalidLiteral,
                    span,
                    format!("`{text}` is not a time of day"),
                )
                .with_label("hours go to 23, minutes to 59")
                .with_help("write a 24-hour time like `09:00` or `23:59`"),
            );
            return TimeOfDay {
                hour: 0,
                minute: 0,
                span,
            };
        }
        TimeOfDay { hour, minute, span }
    }

    fn date(&self, pair: Option<Pair<'_, Rule>>, fallback: Span) -> Date {
        let Some(p) = pair else {
            return Date {
                value: chrono::NaiveDate::MIN,
                span: fallback,
            };
        };
        let span = span_of(&p);
        Date {
            value: self.parse_date(p.as_str(), span),
            span,
        }
    }

    fn parse_date(&self, text: &str, span: Span) -> chrono::NaiveDate {
        chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap_or_else(|_| {
            self.report(
                self.error(
                    Code::InvalidLiteral,
                    span,
                    format!("`{text}` is not a date"),
                )
                .with_label("no such day")
                .with_help("write a real calendar date as `YYYY-MM-DD`"),
            );
            chrono::NaiveDate::MIN
        })
    }

    // -----------------------------------------------------------------------------------
    // Expressions

    fn expr_opt(&self, pair: Option<Pair<'_, Rule>>, fallback: Span) -> Expr {
        match pair {
            Some(p) => self.expr(p),
            None => Expr {
                kind: ExprKind::Literal(Literal::None),
                span: fallback,
            },
        }
    }

    fn expr(&self, pair: Pair<'_, Rule>) -> Expr {
        let span = span_of(&pair);
        let operators = pair
            .clone()
            .into_inner()
            .filter(|p| {
                matches!(
                    p.as_rule(),
                    Rule::op_or
                        | Rule::op_and
                        | Rule::op_not
                        | Rule::op_neg
                        | Rule::op_eq
                        | Rule::op_ne
                        | Rule::op_lt
                        | Rule::op_le
                        | Rule::op_gt
                        | Rule::op_ge
                        | Rule::op_in
                        | Rule::op_contains
                        | Rule::op_crosses
                        | Rule::op_add
                        | Rule::op_sub
                        | Rule::op_mul
                        | Rule::op_div
                        | Rule::compat_and
                        | Rule::compat_or
                        | Rule::compat_bang
                        | Rule::compat_assign
                )
            })
            .count();
        if operators > MAX_OPERATORS {
            self.report(
                self.error(
                    Code::TooDeep,
                    span,
                    format!("expression has {operators} operators, more than {MAX_OPERATORS}"),
                )
                .with_help("name parts of the expression with `let`"),
            );
            return Expr {
                kind: ExprKind::Literal(Literal::None),
                span,
            };
        }
        self.pratt(pair.into_inner())
    }

    fn pratt(&self, pairs: Pairs<'_, Rule>) -> Expr {
        PRATT
            .map_primary(|p| self.primary(p))
            .map_prefix(|op, operand| {
                let op_span = span_of(&op);
                let span = op_span.join(operand.span);
                let unary = match op.as_rule() {
                    Rule::op_neg => UnaryOp::Neg,
                    Rule::compat_bang => {
                        self.report(
                            self.error(Code::SymbolOperator, op_span, "use `not` instead of `!`")
                                .with_label("not an operator here")
                                .with_help("write `not`"),
                        );
                        UnaryOp::Not
                    }
                    _ => UnaryOp::Not,
                };
                Expr {
                    kind: ExprKind::Unary(unary, Box::new(operand)),
                    span,
                }
            })
            .map_infix(|left, op, right| {
                let op_span = span_of(&op);
                let span = left.span.join(right.span);
                let binary = match op.as_rule() {
                    Rule::op_or => BinaryOp::Or,
                    Rule::op_and => BinaryOp::And,
                    Rule::compat_or | Rule::compat_and => {
                        let (bad, good, op) = if op.as_rule() == Rule::compat_or {
                            ("||", "or", BinaryOp::Or)
                        } else {
                            ("&&", "and", BinaryOp::And)
                        };
                        self.report(
                            self.error(
                                Code::SymbolOperator,
                                op_span,
                                format!("use `{good}` instead of `{bad}`"),
                            )
                            .with_label("not an operator here")
                            .with_help(format!("write `{good}`")),
                        );
                        op
                    }
                    Rule::compat_assign => {
                        self.report(
                            self.error(
                                Code::AssignForEquals,
                                op_span,
                                "`=` assigns; to compare, use `==`",
                            )
                            .with_label("comparison expected")
                            .with_help("write `==`"),
                        );
                        BinaryOp::Eq
                    }
                    Rule::op_eq => BinaryOp::Eq,
                    Rule::op_ne => BinaryOp::Ne,
                    Rule::op_lt => BinaryOp::Lt,
                    Rule::op_le => BinaryOp::Le,
                    Rule::op_gt => BinaryOp::Gt,
                    Rule::op_ge => BinaryOp::Ge,
                    Rule::op_in => BinaryOp::In,
                    Rule::op_contains => BinaryOp::Contains,
                    Rule::op_crosses => BinaryOp::Crosses,
                    Rule::op_add => BinaryOp::Add,
                    Rule::op_sub => BinaryOp::Sub,
                    Rule::op_mul => BinaryOp::Mul,
                    _ => BinaryOp::Div,
                };
                Expr {
                    kind: ExprKind::Binary(binary, Box::new(left), Box::new(right)),
                    span,
                }
            })
            .parse(pairs)
    }

    fn primary(&self, pair: Pair<'_, Rule>) -> Expr {
        let span = span_of(&pair);
        let text = pair.as_str();
        let literal = |l: Literal| Expr {
            kind: ExprKind::Literal(l),
            span,
        };
        match pair.as_rule() {
            Rule::paren => match pair.into_inner().next() {
                Some(inner) => {
                    let mut e = self.expr(inner);
                    e.span = span;
                    e
                }
                None => literal(Literal::None),
            },
            Rule::number => {
                if text.contains('.') {
                    literal(Literal::Float(text.parse().unwrap_or(0.0)))
                } else {
                    match text.parse::<i64>() {
                        Ok(n) => literal(Literal::Int(n)),
                        Err(_) => {
                            self.report(
                                self.error(
                                    Code::InvalidLiteral,
                                    span,
                                    format!("`{text}` is too large a number"),
                                )
                                .with_label("too large"),
                            );
                            literal(Literal::Int(0))
                        }
                    }
                }
            }
            Rule::percent => literal(Literal::Percent(
                text.trim_end_matches('%').parse().unwrap_or(0.0),
            )),
            Rule::bool_lit => literal(Literal::Bool(text == "true")),
            Rule::none_lit => literal(Literal::None),
            Rule::string | Rule::compat_smart_string => {
                literal(Literal::Text(self.string(Some(pair)).value))
            }
            Rule::duration => literal(Literal::Duration(self.duration_text(text, span))),
            Rule::compat_duration => {
                self.report_compat_duration(text, span);
                literal(Literal::Duration(placeholder_duration(span)))
            }
            Rule::date => literal(Literal::Date(self.parse_date(text, span))),
            Rule::datetime => {
                // `2026-12-20T12:00Z`: seconds may be left out.
                let normalised = if text.as_bytes().get(16) == Some(&b':') {
                    text.to_string()
                } else {
                    format!(
                        "{}:00{}",
                        &text[..16.min(text.len())],
                        &text[16.min(text.len())..]
                    )
                };
                match chrono::DateTime::parse_from_rfc3339(&normalised) {
                    Ok(dt) => literal(Literal::DateTime(dt)),
                    Err(_) => {
                        self.report(
                            self.error(
                                Code::InvalidLiteral,
                                span,
                                format!("`{text}` is not a date and time"),
                            )
                            .with_label("no such instant")
                            .with_help(
                                "write `YYYY-MM-DDTHH:MM:SSZ`, with `Z` or an offset like `+01:00`",
                            ),
                        );
                        literal(Literal::None)
                    }
                }
            }
            Rule::time_of_day => literal(Literal::Time(self.time_of_day(text, span))),
            Rule::list_lit => Expr {
                kind: ExprKind::List(pair.into_inner().map(|p| self.expr(p)).collect()),
                span,
            },
            Rule::path => Expr {
                kind: ExprKind::Path(self.path(Some(pair), span)),
                span,
            },
            Rule::call => self.call(pair),
            _ => literal(Literal::None),
        }
    }

    /// `30m`, `2h`, …: a duration literal the grammar has already matched.
    fn duration_text(&self, text: &str, span: Span) -> Duration {
        let (digits, unit) = text.split_at(text.len().saturating_sub(1));
        let unit = match unit {
            "s" => DurationUnit::Seconds,
            "m" => DurationUnit::Minutes,
            "h" => DurationUnit::Hours,
            "d" => DurationUnit::Days,
            _ => DurationUnit::Weeks,
        };
        match digits.parse::<u64>() {
            Ok(amount) => Duration { amount, unit, span },
            Err(_) => {
                self.report(
                    self.error(
                        Code::InvalidLiteral,
                        span,
                        format!("`{text}` is too long a duration"),
                    )
                    .with_label("too large"),
                );
                placeholder_duration(span)
            }
        }
    }

    /// `1 hour`, `30 minutes`: a spelled-out unit.
    fn report_compat_duration(&self, text: &str, span: Span) {
        let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
        let word = text[digits.len()..].trim();
        let unit = match word.chars().next() {
            Some('s') => Some('s'),
            Some('h') => Some('h'),
            Some('d') => Some('d'),
            Some('w') => Some('w'),
            Some('m') if word.starts_with("mi") => Some('m'),
            _ => None,
        };
        let (message, help) = match unit {
            Some(unit) => (
                format!("write durations as `{digits}{unit}`, not `{text}`"),
                format!("replace with `{digits}{unit}`; units are `s`, `m`, `h`, `d` and `w`"),
            ),
            None => (
                format!("`{word}` is not a duration unit"),
                "months and years vary in length: use days or weeks, like `30d` or `52w`"
                    .to_string(),
            ),
        };
        self.report(
            self.error(Code::DurationUnit, span, message)
                .with_label("not a duration")
                .with_help(help),
        );
    }

    /// `f(args)` or an aggregate `count(E where … within …)`, with any `.field` after it.
    fn call(&self, pair: Pair<'_, Rule>) -> Expr {
        let span = span_of(&pair);
        let mut function = None;
        let mut args = Vec::new();
        let mut across = None;
        let mut condition = None;
        let mut within = None;
        let mut then_field = Vec::new();
        let mut closed = false;
        for part in pair.into_inner() {
            match part.as_rule() {
                Rule::ident if function.is_none() => function = Some(self.ident(Some(part))),
                Rule::ident => then_field.push(self.ident(Some(part))),
                Rule::expr if !closed => args.push(self.expr(part)),
                Rule::agg_across => across = Some(span_of(&part)),
                Rule::agg_where => condition = children(part).next().map(|p| self.expr(p)),
                Rule::agg_within => {
                    let within_span = span_of(&part);
                    let after_send = part
                        .clone()
                        .into_inner()
                        .any(|p| p.as_rule() == Rule::kw_send);
                    let duration = self.duration_value(children(part).next());
                    within = Some(Within {
                        duration,
                        after_send,
                        span: within_span,
                    });
                }
                _ => {}
            }
            if !then_field.is_empty() {
                closed = true;
            }
        }
        let function = function.unwrap_or(Ident {
            name: String::new(),
            span,
        });
        let has_clauses = across.is_some() || condition.is_some() || within.is_some();
        let Some(aggregate_fn) = AggregateFn::from_name(&function.name) else {
            if has_clauses {
                let help = did_you_mean(&function.name, AggregateFn::ALL.iter().map(|(n, _)| *n))
                    .unwrap_or_else(|| {
                        format!(
                            "aggregates are {}",
                            one_of(AggregateFn::ALL.iter().map(|(n, _)| *n))
                        )
                    });
                self.report(
                    self.error(
                        Code::AggregateForm,
                        function.span,
                        format!("`{}` is not an aggregate: `where`, `within` and `across` go inside `count(…)`, `sum(…)` and the like", function.name),
                    )
                    .with_label("not an aggregate")
                    .with_help(help),
                );
                // An aggregate over no event: the checker gives it no type and says no more.
                return Expr {
                    kind: ExprKind::Aggregate(Box::new(Aggregate {
                        function: AggregateFn::Count,
                        function_span: function.span,
                        event: Ident {
                            name: String::new(),
                            span,
                        },
                        field: Vec::new(),
                        across_customers: false,
                        condition: None,
                        within: None,
                        then_field: Vec::new(),
                    })),
                    span,
                };
            }
            if let Some(first) = then_field.first() {
                self.report(
                    self.error(
                        Code::AggregateForm,
                        first.span,
                        format!(
                            "only `last(…)` can be followed by a property, not `{}(…)`",
                            function.name
                        ),
                    )
                    .with_label("unexpected property"),
                );
            }
            return Expr {
                kind: ExprKind::Call { function, args },
                span,
            };
        };
        let mut args = args.into_iter();
        let target = args.next();
        if let Some(extra) = args.next() {
            self.report(
                self.error(
                    Code::AggregateForm,
                    extra.span,
                    format!(
                        "`{}` takes one event, not a list of arguments",
                        function.name
                    ),
                )
                .with_label("unexpected argument")
                .with_help(format!(
                    "write `{}(EVENT where CONDITION within DURATION)`",
                    function.name
                )),
            );
        }
        let (event, field) = match target.map(|t| t.kind) {
            Some(ExprKind::Path(path)) if !path.segments.is_empty() => {
                let mut segments = path.segments.into_iter();
                let event = segments.next().unwrap_or(function.clone());
                (event, segments.collect())
            }
            _ => {
                let example = if aggregate_fn.takes_field() {
                    format!("`{}(order_completed.total)`", function.name)
                } else {
                    format!("`{}(order_completed)`", function.name)
                };
                self.report(
                    self.error(
                        Code::AggregateForm,
                        span,
                        format!(
                            "`{}` aggregates events: name one, like {example}",
                            function.name
                        ),
                    )
                    .with_label("expected an event name"),
                );
                (
                    Ident {
                        name: String::new(),
                        span,
                    },
                    Vec::new(),
                )
            }
        };
        Expr {
            kind: ExprKind::Aggregate(Box::new(Aggregate {
                function: aggregate_fn,
                function_span: function.span,
                event,
                field,
                across_customers: across.is_some(),
                condition,
                within,
                then_field,
            })),
            span,
        }
    }
}

fn placeholder_duration(span: Span) -> Duration {
    // INVARIANT: only used when a diagnostic has been reported for this spot, so the file
    // is rejected and nothing runs with this made-up value.
    Duration {
        amount: 1,
        unit: DurationUnit::Hours,
        span,
    }
}

/// Five to seven fields of cron characters.
fn looks_like_cron(text: &str) -> bool {
    let fields: Vec<&str> = text.split_whitespace().collect();
    (5..=7).contains(&fields.len())
        && fields.iter().all(|f| {
            f.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '/' | ',' | '-' | '?'))
        })
}

/// The value of a `"""` string: the first line break and the closing line's indentation
/// dropped, the common indentation removed.
pub fn dedent(raw: &str) -> String {
    let raw = raw.replace("\r\n", "\n");
    let mut lines: Vec<&str> = raw.split('\n').collect();
    if lines.len() > 1 && lines[0].trim().is_empty() {
        lines.remove(0);
    }
    if lines.len() > 1 && lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| {
            if l.trim().is_empty() {
                ""
            } else {
                l.get(indent..).unwrap_or(l.trim_start())
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The largest char boundary of `s` at or before `i`.
pub fn floor_char_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Map a byte offset in a string literal's value back to the source text, so that a
/// problem inside a template can be underlined where it was written.
pub fn value_offset_to_source(text: &str, literal: &StrLit, value_offset: usize) -> usize {
    let raw_start = literal.span.start + if literal.triple { 3 } else { 1 };
    let raw_end = literal
        .span
        .end
        .saturating_sub(if literal.triple { 3 } else { 1 })
        .max(raw_start);
    let Some(raw) = text.get(raw_start..raw_end) else {
        return literal.span.start;
    };
    if literal.triple {
        // Find the value's line and column, then the same line in the source.
        let before = &literal.value[..floor_char_boundary(&literal.value, value_offset)];
        let line = before.matches('\n').count();
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1);
        let mut raw_lines: Vec<(usize, &str)> = Vec::new();
        let mut offset = 0;
        for l in raw.split('\n') {
            raw_lines.push((offset, l));
            offset += l.len() + 1;
        }
        if raw_lines.len() > 1 && raw_lines[0].1.trim().is_empty() {
            raw_lines.remove(0);
        }
        let indent = raw_lines
            .iter()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(_, l)| l.len() - l.trim_start().len())
            .min()
            .unwrap_or(0);
        match raw_lines.get(line) {
            Some((start, l)) => {
                let within = if l.trim().is_empty() {
                    0
                } else {
                    indent + column
                };
                floor_char_boundary(text, raw_start + start + within.min(l.len()))
            }
            None => literal.span.end,
        }
    } else {
        // Walk the escapes.
        let mut value_len = 0;
        let mut chars = raw.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if value_len >= value_offset {
                return raw_start + i;
            }
            if c == '\\' {
                chars.next();
                value_len += 1;
            } else {
                value_len += c.len_utf8();
            }
        }
        raw_end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Parsed {
        parse(0, &SourceFile::new("t.moment", text))
    }

    #[test]
    fn dedent_drops_the_frame_of_a_triple_string() {
        assert_eq!(dedent("\n    Hello,\n      world\n  "), "Hello,\n  world");
        assert_eq!(dedent("one line"), "one line");
        assert_eq!(dedent("\n  a\n\n  b\n"), "a\n\nb");
    }

    #[test]
    fn comments_skip_strings() {
        let found = comments("a \"# not\" # yes\n# own\nb \"\"\"\n # no\n\"\"\" # after\n");
        let texts: Vec<&str> = found.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["# yes", "# own", "# after"]);
        assert!(!found[0].own_line);
        assert!(found[1].own_line);
    }

    #[test]
    fn precedence_follows_the_table() {
        let parsed =
            parse_text("moment m \"t\" { trigger { on e where not a == 1 + 2 * 3 or b and c } }");
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        let Item::Moment(m) = &parsed.file.items[0] else {
            panic!()
        };
        let MomentItem::Trigger(t) = &m.items[0] else {
            panic!()
        };
        let TriggerClause::Where { condition, .. } = &t.clauses[1] else {
            panic!()
        };
        let ExprKind::Binary(BinaryOp::Or, left, right) = &condition.kind else {
            panic!("{condition:?}")
        };
        assert!(matches!(left.kind, ExprKind::Unary(UnaryOp::Not, _)));
        assert!(matches!(right.kind, ExprKind::Binary(BinaryOp::And, _, _)));
    }

    #[test]
    fn several_syntax_errors_are_all_reported() {
        let parsed = parse_text(
            "moment m \"t\" {\n  trigger {\n    on e\n    where a >\n    wait 1 hour\n  }\n  limt 3\n}\n",
        );
        let codes: Vec<&str> = parsed.diagnostics.iter().map(|d| d.code.as_str()).collect();
        assert!(codes.contains(&"moment::parse::syntax"), "{codes:?}");
        assert!(
            codes.contains(&"moment::parse::unknown_setting"),
            "{codes:?}"
        );
    }

    #[test]
    fn value_offsets_map_back_through_escapes_and_dedent() {
        let text = "x \"a\\\"b{{ c }}\"";
        let lit = StrLit {
            value: "a\"b{{ c }}".into(),
            triple: false,
            span: Span::new(2, text.len()),
        };
        assert_eq!(&text[value_offset_to_source(text, &lit, 3)..][..2], "{{");
        let text = "x \"\"\"\n    hi\n    {{ y }}\n  \"\"\"";
        let lit = StrLit {
            value: dedent("\n    hi\n    {{ y }}\n  "),
            triple: true,
            span: Span::new(2, text.len()),
        };
        assert_eq!(&text[value_offset_to_source(text, &lit, 3)..][..2], "{{");
    }
}
