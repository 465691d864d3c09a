//! The canonical layout of `.moment` files: what `moments fmt` prints.
//!
//! This module owns the formatter: it prints a parsed file ([`crate::parse::Parsed`]) in the
//! one canonical layout, keeping every comment, and [`format_source`] proves each result
//! sound before handing it out (the output parses to the same tree, keeps the same comments
//! in the same order, and formats to itself). It never changes what a file means: when it
//! cannot prove that, it returns [`FormatError::Unsound`] instead of text.
//!
//! The layout:
//! - two-space indentation, one item per line, `name {` … `}` blocks, one final newline;
//! - one blank line between top-level items, except that consecutive `event` declarations
//!   keep the user's choice (none or one); inside blocks, at most one blank line where the
//!   user had some, never one right after `{` or right before `}`;
//! - in a moment, a blank line around the trigger, the message and the KPI; the one-line
//!   rules (`limit`, `quiet hours`, …) keep the user's blank lines, at most one;
//! - an `event` declaration on one line when it fits in [`MAX_WIDTH`] columns and holds no
//!   comment, else one field per line; record types always on one line;
//! - a trigger's `where` whose condition is a chain of `and` (or of `or`) puts each operand
//!   on its own line, the operator first, indented two more;
//! - a KPI's `goal` on its own line, indented two more than `kpi`;
//! - expressions with the fewest parentheses that keep their meaning;
//! - an own-line comment stays on its own line, at the indentation of what follows it; a
//!   trailing comment follows the printed line of what it followed, after two spaces.
//!
//! How: a small layout engine ([`Layout`]) receives the printed lines in source order, each
//! with the source range it stands for. Before a line goes out, every comment that started
//! earlier in the source goes out: appended to the previous line when it trailed code on a
//! source line that line stands for, else on a line of its own. Blank lines are decided from
//! the source text between what was printed last and what comes next.

use std::fmt;

use crate::ast::*;
use crate::diagnostic::{Diagnostic, SourceFile};
use crate::parse::{self, Comment, Parsed};

/// Widest line (in characters) an `event` declaration may take on one line.
pub const MAX_WIDTH: usize = 100;

/// Why a file was not formatted.
#[derive(Debug, Clone)]
pub enum FormatError {
    /// The file does not parse cleanly: formatting it could lose what the parser skipped.
    Syntax(Vec<Diagnostic>),
    /// The formatted text would not mean the same (a formatter bug): one line on why.
    Unsound(String),
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Syntax(diagnostics) => write!(
                f,
                "the file has {} syntax error{}; fix {} before formatting",
                diagnostics.len(),
                if diagnostics.len() == 1 { "" } else { "s" },
                if diagnostics.len() == 1 { "it" } else { "them" },
            ),
            FormatError::Unsound(why) => write!(f, "not formatted, to be safe: {why}"),
        }
    }
}

impl std::error::Error for FormatError {}

/// Format one file. Returns the canonical text, or an error if the file has syntax errors
/// (diagnostics from parsing) or if the soundness check fails.
pub fn format_source(source: &SourceFile) -> Result<String, FormatError> {
    let parsed = parse::parse(0, source);
    if !parsed.diagnostics.is_empty() || parsed.incomplete {
        return Err(FormatError::Syntax(parsed.diagnostics));
    }
    let formatted = format_parsed(&parsed, &source.text);
    let reparsed = parse::parse(0, &SourceFile::new(source.path.clone(), formatted.as_str()));
    if let Some(first) = reparsed.diagnostics.first() {
        return Err(FormatError::Unsound(format!(
            "the formatted text does not parse ({})",
            first.message
        )));
    }
    if reparsed.file != parsed.file {
        return Err(FormatError::Unsound(describe_difference(
            &parsed.file,
            &reparsed.file,
        )));
    }
    let before: Vec<&str> = parsed.comments.iter().map(|c| c.text.as_str()).collect();
    let after: Vec<&str> = reparsed.comments.iter().map(|c| c.text.as_str()).collect();
    if before != after {
        return Err(FormatError::Unsound(format!(
            "the formatted text would not keep the comments ({} before, {} after, first change at comment {})",
            before.len(),
            after.len(),
            before
                .iter()
                .zip(&after)
                .position(|(a, b)| a != b)
                .unwrap_or(before.len().min(after.len()))
                + 1
        )));
    }
    let again = format_parsed(&reparsed, &formatted);
    if again != formatted {
        let line = formatted
            .lines()
            .zip(again.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(formatted.lines().count().min(again.lines().count()))
            + 1;
        return Err(FormatError::Unsound(format!(
            "formatting is not stable: formatting the output again changes its line {line}"
        )));
    }
    Ok(formatted)
}

/// Which top-level item would change, for [`FormatError::Unsound`].
fn describe_difference(before: &File, after: &File) -> String {
    if before.items.len() != after.items.len() {
        return format!(
            "the formatted text would have {} top-level items instead of {}",
            after.items.len(),
            before.items.len()
        );
    }
    let index = before
        .items
        .iter()
        .zip(&after.items)
        .position(|(a, b)| a != b)
        .unwrap_or(0);
    let what = match before.items.get(index) {
        Some(Item::Customer(_)) => "`customer`".to_string(),
        Some(Item::Event(e)) => format!("`event {}`", e.name.name),
        Some(Item::Defaults(_)) => "`defaults`".to_string(),
        Some(Item::Moment(m)) => format!("`moment {}`", m.id.name),
        None => "the file".to_string(),
    };
    format!("the formatted text would change the meaning of {what}")
}

/// Format an already parsed file (syntax tree, comments and the text it came from).
///
/// Prints whatever the tree holds, even for a file with syntax errors; [`format_source`] is
/// the safe entry point.
pub fn format_parsed(parsed: &Parsed, text: &str) -> String {
    let mut layout = Layout::new(text, &parsed.comments);
    let mut previous: Option<&Item> = None;
    for item in &parsed.file.items {
        let sep = match (previous, item) {
            (Some(Item::Event(_)), Item::Event(_)) => Sep::User,
            _ => Sep::Force,
        };
        layout.begin_item(sep);
        match item {
            Item::Customer(c) => layout.customer(c),
            Item::Event(e) => layout.event(e),
            Item::Defaults(d) => layout.defaults(d),
            Item::Moment(m) => layout.moment(m),
        }
        previous = Some(item);
    }
    layout.begin_item(Sep::User);
    layout.flush(usize::MAX, 0);
    layout.finish()
}

/// One expression in canonical form, with the fewest parentheses.
pub fn format_expr(expr: &Expr) -> String {
    let mut out = String::new();
    write_expr(&mut out, expr, 0);
    out
}

// ---------------------------------------------------------------------------------------
// Layout engine

/// What goes before the next line printed on its own (an item or an own-line comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sep {
    /// No blank line (right after `{`, at the start of the file).
    Never,
    /// A blank line if the source had one (or more) there.
    User,
    /// Always a blank line.
    Force,
}

struct Line {
    text: String,
    /// The source lines (first, last) this line stands for: a trailing comment written on
    /// one of them may be appended. `None` for lines that take none (comments, the inside
    /// of a `"""` string and its opening line).
    accepts: Option<(usize, usize)>,
    has_trailing: bool,
}

struct Layout<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
    comments: &'a [Comment],
    /// Index of the first comment not printed yet.
    next_comment: usize,
    lines: Vec<Line>,
    sep: Sep,
    /// Source offset where what was printed last ends.
    prev_end: usize,
}

impl<'a> Layout<'a> {
    fn new(text: &'a str, comments: &'a [Comment]) -> Layout<'a> {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Layout {
            text,
            line_starts,
            comments,
            next_comment: 0,
            lines: Vec::new(),
            sep: Sep::Never,
            prev_end: 0,
        }
    }

    fn finish(self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            out.push_str(&line.text);
            out.push('\n');
        }
        while out.ends_with("\n\n") {
            out.pop();
        }
        if out.trim().is_empty() {
            out.clear();
        }
        out
    }

    /// 0-based source line of a byte offset.
    fn line_of(&self, offset: usize) -> usize {
        match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        }
    }

    /// Whether the source has a blank line between two offsets.
    fn has_blank(&self, from: usize, to: usize) -> bool {
        if from >= to {
            return false;
        }
        let Some(between) = self.text.get(from..to) else {
            return false;
        };
        let segments: Vec<&str> = between.split('\n').collect();
        segments.len() > 2
            && segments[1..segments.len() - 1]
                .iter()
                .any(|s| s.trim().is_empty())
    }

    /// The next item of a list starts: what separates it from the previous one (a block
    /// just opened keeps its "no blank line").
    fn begin_item(&mut self, sep: Sep) {
        if self.sep != Sep::Never {
            self.sep = sep;
        }
    }

    /// Before something printed on its own line that starts at `start` in the source.
    fn blank_before(&mut self, start: usize) {
        let wanted = match self.sep {
            Sep::Never => false,
            Sep::Force => true,
            Sep::User => self.has_blank(self.prev_end, start),
        };
        if wanted && self.lines.last().is_some_and(|l| !l.text.is_empty()) {
            self.lines.push(Line {
                text: String::new(),
                accepts: None,
                has_trailing: false,
            });
        }
        self.sep = Sep::User;
    }

    /// Print every comment that starts before `before`: appended to the last line when
    /// it trailed code on a source line that line stands for, else on its own line.
    fn flush(&mut self, before: usize, indent: usize) {
        while let Some(comment) = self.comments.get(self.next_comment) {
            if comment.start >= before {
                break;
            }
            self.next_comment += 1;
            let end = comment.start + comment.text.len();
            let line = self.line_of(comment.start);
            let append = !comment.own_line
                && self.lines.last().is_some_and(|last| {
                    !last.has_trailing
                        && last
                            .accepts
                            .is_some_and(|(first, last_line)| first <= line && line <= last_line)
                });
            if append {
                if let Some(last) = self.lines.last_mut() {
                    last.text.push_str("  ");
                    last.text.push_str(&comment.text);
                    last.has_trailing = true;
                }
            } else {
                self.blank_before(comment.start);
                self.lines.push(Line {
                    text: format!("{}{}", "  ".repeat(indent), comment.text),
                    accepts: None,
                    has_trailing: true,
                });
            }
            self.prev_end = self.prev_end.max(end);
        }
    }

    /// Where the code of `start..end` really ends: a rule that ends with an optional part
    /// also spans the white space and comments pest skipped looking for it.
    fn code_end(&self, start: usize, end: usize) -> usize {
        let mut end = end;
        loop {
            let Some(code) = self.text.get(start..end) else {
                return end;
            };
            end = start + code.trim_end().len();
            let ends_a_comment = self
                .comments
                .binary_search_by(|c| (c.start + c.text.len()).cmp(&end))
                .ok()
                .and_then(|i| self.comments.get(i))
                .filter(|c| c.start >= start && c.start < end);
            match ends_a_comment {
                Some(comment) => end = comment.start,
                None => return end,
            }
        }
    }

    fn push(&mut self, indent: usize, text: String, start: usize, end: usize, accepts: bool) {
        let end = self.code_end(start, end).max(start);
        let accepts = accepts.then(|| {
            let last = end.saturating_sub(1).max(start);
            (self.line_of(start), self.line_of(last))
        });
        self.lines.push(Line {
            text: format!("{}{text}", "  ".repeat(indent)),
            accepts,
            has_trailing: false,
        });
        self.prev_end = self.prev_end.max(end);
        self.sep = Sep::User;
    }

    /// An item (or the first line of one): comments before it, the separator, the line.
    fn item_line(&mut self, indent: usize, text: String, start: usize, end: usize) {
        self.flush(start, indent);
        self.blank_before(start);
        self.push(indent, text, start, end, true);
    }

    /// A line that continues an item (`goal`, `and …`, a closing `}`): comments before it
    /// at `comment_indent`, never a blank line right before it.
    fn continuation_line(
        &mut self,
        indent: usize,
        comment_indent: usize,
        text: String,
        start: usize,
        end: usize,
    ) {
        self.flush(start, comment_indent);
        self.push(indent, text, start, end, true);
    }

    /// After the line that opens a block.
    fn open_block(&mut self) {
        self.sep = Sep::Never;
    }

    /// Where the `{` of a block is, searching from `from` (skipping comments).
    fn open_brace(&self, from: usize) -> Option<usize> {
        let rest = self.text.get(from..)?;
        let mut in_comment = false;
        for (i, c) in rest.char_indices() {
            match c {
                '\n' => in_comment = false,
                '#' => in_comment = true,
                '{' if !in_comment => return Some(from + i),
                '"' if !in_comment => return None,
                _ => {}
            }
        }
        None
    }

    /// Where the `}` closing a block is.
    fn close_brace(&self, span: Span) -> usize {
        let end = self.code_end(span.start, span.end);
        let at = end.saturating_sub(1);
        if self.text.as_bytes().get(at) == Some(&b'}') {
            at
        } else {
            end
        }
    }

    /// Whether any comment starts in `from..to`.
    fn comment_within(&self, from: usize, to: usize) -> bool {
        let first = self.comments.partition_point(|c| c.start < from);
        self.comments.get(first).is_some_and(|c| c.start < to)
    }

    /// A block: `header {`, its items (printed by `items`), `}`; `header {}` when empty.
    fn block(
        &mut self,
        indent: usize,
        header: String,
        span: Span,
        brace_from: usize,
        empty: bool,
        items: impl FnOnce(&mut Self),
    ) {
        let brace = self.open_brace(brace_from).unwrap_or(brace_from);
        let close = self.close_brace(span);
        if empty && !self.comment_within(span.start, close) {
            self.item_line(indent, format!("{header} {{}}"), span.start, span.end);
            return;
        }
        self.item_line(indent, format!("{header} {{"), span.start, brace + 1);
        self.open_block();
        items(self);
        self.continuation_line(indent, indent + 1, "}".to_string(), close, close + 1);
    }

    // -----------------------------------------------------------------------------------
    // Schema

    fn customer(&mut self, customer: &CustomerBlock) {
        let from = customer.span.start + "customer".len();
        self.block(
            0,
            "customer".to_string(),
            customer.span,
            from,
            customer.traits.is_empty(),
            |layout| layout.fields(&customer.traits, 1),
        );
    }

    fn fields(&mut self, fields: &[FieldDecl], indent: usize) {
        for field in fields {
            self.begin_item(Sep::User);
            self.item_line(indent, field_decl(field), field.span.start, field.span.end);
        }
    }

    fn event(&mut self, event: &EventDecl) {
        let mut head = format!("event {} {}", event.name.name, quote(&event.source.value));
        if event.catalog {
            head.push_str(" catalog");
        }
        let span = event.span;
        if event.fields.is_empty() {
            if event.has_block {
                head.push_str(" {}");
            }
            self.item_line(0, head, span.start, span.end);
            return;
        }
        let fields: Vec<String> = event.fields.iter().map(field_decl).collect();
        let one_line = format!("{head} {{ {} }}", fields.join(", "));
        let end = self.code_end(span.start, span.end);
        if one_line.chars().count() <= MAX_WIDTH && !self.comment_within(span.start, end) {
            self.item_line(0, one_line, span.start, span.end);
            return;
        }
        self.block(0, head, span, event.source.span.end, false, |layout| {
            layout.fields(&event.fields, 1)
        });
    }

    fn defaults(&mut self, defaults: &DefaultsBlock) {
        let from = defaults.span.start + "defaults".len();
        self.block(
            0,
            "defaults".to_string(),
            defaults.span,
            from,
            defaults.items.is_empty(),
            |layout| {
                for item in &defaults.items {
                    layout.begin_item(Sep::User);
                    let text = match item {
                        DefaultItem::Timezone { zone, .. } => {
                            format!("timezone {}", quote(&zone.value))
                        }
                        DefaultItem::Cap { count, per, .. } => {
                            format!("cap {count} per customer per {per}")
                        }
                        DefaultItem::Consent {
                            channel, requires, ..
                        } => format!(
                            "consent {} requires {}",
                            channel.name,
                            format_expr(requires)
                        ),
                    };
                    let span = item.span();
                    layout.item_line(1, text, span.start, span.end);
                }
            },
        );
    }

    // -----------------------------------------------------------------------------------
    // Moments

    fn moment(&mut self, moment: &Moment) {
        let header = format!("moment {} {}", moment.id.name, quote(&moment.title.value));
        self.block(
            0,
            header,
            moment.span,
            moment.title.span.end,
            moment.items.is_empty(),
            |layout| {
                let mut previous: Option<&MomentItem> = None;
                for item in &moment.items {
                    let sep = match previous {
                        Some(p) if is_major(p) || is_major(item) => Sep::Force,
                        _ => Sep::User,
                    };
                    layout.begin_item(sep);
                    layout.moment_item(item, 1);
                    previous = Some(item);
                }
            },
        );
    }

    fn moment_item(&mut self, item: &MomentItem, indent: usize) {
        let span = item.span();
        let text = match item {
            MomentItem::Trigger(trigger) => return self.trigger(trigger, indent),
            MomentItem::Message(message) => return self.message(message, indent),
            MomentItem::Kpi(kpi) => return self.kpi(kpi, indent),
            MomentItem::Limit { count, per, .. } => match per {
                Some(per) => format!("limit {count} per customer per {per}"),
                None => format!("limit {count} per customer"),
            },
            MomentItem::QuietHours { from, to, .. } => format!("quiet hours {from} to {to}"),
            MomentItem::Holdout { percent, .. } => format!("holdout {}%", float_text(*percent)),
            MomentItem::Active { from, until, .. } => match until {
                Some(until) => format!(
                    "active from {} until {}",
                    date_text(from.value),
                    date_text(until.value)
                ),
                None => format!("active from {}", date_text(from.value)),
            },
            MomentItem::Priority { value, .. } => format!("priority {value}"),
        };
        self.item_line(indent, text, span.start, span.end);
    }

    fn trigger(&mut self, trigger: &Trigger, indent: usize) {
        let from = trigger.span.start + "trigger".len();
        self.block(
            indent,
            "trigger".to_string(),
            trigger.span,
            from,
            trigger.clauses.is_empty(),
            |layout| {
                for clause in &trigger.clauses {
                    layout.begin_item(Sep::User);
                    layout.clause(clause, indent + 1);
                }
            },
        );
    }

    fn clause(&mut self, clause: &TriggerClause, indent: usize) {
        let span = clause.span();
        let text = match clause {
            TriggerClause::On(source) => match source {
                TriggerSource::Event { event, .. } => format!("on {}", event.name),
                TriggerSource::Anniversary { date, at, .. } => {
                    format!("on anniversary of {date} at {at}")
                }
                TriggerSource::Offset {
                    offset,
                    direction,
                    date,
                    at,
                    ..
                } => format!(
                    "on {offset} {} {date} at {at}",
                    match direction {
                        Direction::Before => "before",
                        Direction::After => "after",
                    }
                ),
                TriggerSource::Every { cron, zone, .. } => match zone {
                    Some(zone) => format!("every {} in {}", quote(&cron.value), quote(&zone.value)),
                    None => format!("every {}", quote(&cron.value)),
                },
            },
            TriggerClause::Let { name, value, .. } => {
                format!("let {} = {}", name.name, format_expr(value))
            }
            TriggerClause::Where { condition, .. } => {
                return self.where_clause(condition, span, indent)
            }
            TriggerClause::Unless {
                event,
                condition,
                within,
                ..
            } => {
                let mut text = format!("unless {}", event.name);
                if let Some(condition) = condition {
                    text.push_str(" where ");
                    text.push_str(&format_expr(condition));
                }
                if let Some(within) = within {
                    text.push_str(&format!(" within {within}"));
                }
                text
            }
            TriggerClause::Wait { delay, .. } => format!("wait {delay}"),
        };
        self.item_line(indent, text, span.start, span.end);
    }

    /// `where A` / `and B` / `and C`: a chain of `and` (or of `or`) one operand per line.
    fn where_clause(&mut self, condition: &Expr, span: Span, indent: usize) {
        let chain = match &condition.kind {
            ExprKind::Binary(op @ (BinaryOp::And | BinaryOp::Or), _, _) => {
                Some((*op, flatten(condition, *op)))
            }
            _ => None,
        };
        let Some((op, operands)) = chain else {
            self.item_line(
                indent,
                format!("where {}", format_expr(condition)),
                span.start,
                span.end,
            );
            return;
        };
        let precedence = op.precedence();
        for (i, operand) in operands.iter().enumerate() {
            let mut text = String::new();
            if i == 0 {
                text.push_str("where ");
                write_expr(&mut text, operand, precedence);
                let end = operand.span.end.max(span.start);
                self.item_line(indent, text, span.start, end);
            } else {
                text.push_str(op.symbol());
                text.push(' ');
                write_expr(&mut text, operand, precedence + 1);
                let end = if i + 1 == operands.len() {
                    span.end.max(operand.span.end)
                } else {
                    operand.span.end
                };
                self.continuation_line(indent + 1, indent + 1, text, operand.span.start, end);
            }
        }
    }

    fn message(&mut self, message: &Message, indent: usize) {
        let header = format!("message {}", message.channel.name);
        self.block(
            indent,
            header,
            message.span,
            message.channel.span.end,
            message.fields.is_empty(),
            |layout| {
                for field in &message.fields {
                    layout.begin_item(Sep::User);
                    layout.message_field(field, indent + 1);
                }
            },
        );
    }

    fn message_field(&mut self, field: &MessageField, indent: usize) {
        let span = field.span;
        let template = &field.template;
        if !template.triple {
            let text = format!("{} {}", field.name.name, quote(&template.value));
            self.item_line(indent, text, span.start, span.end);
            return;
        }
        // `name """`, the value's lines two deeper, `"""`: the opening line takes no
        // trailing comment (it would land inside the string).
        self.flush(span.start, indent);
        self.blank_before(span.start);
        let open_end = template.span.start.max(span.start);
        self.push(
            indent,
            format!("{} \"\"\"", field.name.name),
            span.start,
            open_end,
            false,
        );
        if !template.value.is_empty() {
            for line in template.value.split('\n') {
                let text = if line.is_empty() {
                    String::new()
                } else {
                    format!("{}{line}", "  ".repeat(indent + 1))
                };
                self.lines.push(Line {
                    text,
                    accepts: None,
                    has_trailing: true,
                });
            }
        }
        let close_start = template.span.end.saturating_sub(3).max(open_end);
        self.push(indent, "\"\"\"".to_string(), close_start, span.end, true);
    }

    fn kpi(&mut self, kpi: &Kpi, indent: usize) {
        let text = format!(
            "kpi {} = {}",
            quote(&kpi.title.value),
            format_expr(&kpi.measure)
        );
        let Some(goal) = &kpi.goal else {
            self.item_line(indent, text, kpi.span.start, kpi.span.end);
            return;
        };
        let end = kpi.measure.span.end.max(kpi.span.start);
        self.item_line(indent, text, kpi.span.start, end);
        let goal_text = format!("goal {} {}", goal.op.symbol(), format_expr(&goal.target));
        self.continuation_line(
            indent + 1,
            indent + 1,
            goal_text,
            goal.span.start,
            goal.span.end,
        );
    }
}

/// The trigger, the message and the KPI: blank lines around them.
fn is_major(item: &MomentItem) -> bool {
    matches!(
        item,
        MomentItem::Trigger(_) | MomentItem::Message(_) | MomentItem::Kpi(_)
    )
}

/// `a and b and c` (left-nested) as `[a, b, c]`.
fn flatten(expr: &Expr, op: BinaryOp) -> Vec<&Expr> {
    let mut operands = Vec::new();
    let mut current = expr;
    loop {
        match &current.kind {
            ExprKind::Binary(o, left, right) if *o == op => {
                operands.push(right.as_ref());
                current = left;
            }
            _ => {
                operands.push(current);
                break;
            }
        }
    }
    operands.reverse();
    operands
}

// ---------------------------------------------------------------------------------------
// One-line pieces

fn field_decl(field: &FieldDecl) -> String {
    let mut text = format!("{}: {}", field.name.name, type_expr(&field.ty));
    if let Some(default) = &field.default {
        text.push_str(" = ");
        text.push_str(&format_expr(default));
    }
    text
}

fn type_expr(ty: &TypeExpr) -> String {
    let mut text = match &ty.kind {
        TypeExprKind::Named(name) => name.name.clone(),
        TypeExprKind::List(element) => format!("list<{}>", type_expr(element)),
        TypeExprKind::Record(fields) if fields.is_empty() => "{}".to_string(),
        TypeExprKind::Record(fields) => {
            let fields: Vec<String> = fields.iter().map(field_decl).collect();
            format!("{{ {} }}", fields.join(", "))
        }
    };
    if ty.optional {
        text.push('?');
    }
    text
}

/// Text in double quotes, with the escapes `\"`, `\\`, `\n` and `\t`.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The shortest decimal text that reads back as the same number (no exponent: the
/// grammar has none).
fn float_text(value: f64) -> String {
    if value.is_infinite() {
        // Only a literal too large for f64 reads as infinity; this one does too.
        return format!("1{}", "0".repeat(400));
    }
    format!("{value}")
}

fn date_text(date: chrono::NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

// ---------------------------------------------------------------------------------------
// Expressions

/// How tightly an expression binds; atoms bind tightest.
fn precedence(expr: &Expr) -> u8 {
    match &expr.kind {
        ExprKind::Binary(op, _, _) => op.precedence(),
        ExprKind::Unary(UnaryOp::Not, _) => NOT_PRECEDENCE,
        ExprKind::Unary(UnaryOp::Neg, _) => NEG_PRECEDENCE,
        _ => u8::MAX,
    }
}

/// Write `expr` where the context needs at least `min` binding strength: parenthesised
/// when it binds more loosely.
fn write_expr(out: &mut String, expr: &Expr, min: u8) {
    if precedence(expr) < min {
        out.push('(');
        write_bare(out, expr);
        out.push(')');
    } else {
        write_bare(out, expr);
    }
}

fn write_bare(out: &mut String, expr: &Expr) {
    match &expr.kind {
        ExprKind::Literal(literal) => write_literal(out, literal),
        ExprKind::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_expr(out, item, 0);
            }
            out.push(']');
        }
        ExprKind::Path(path) => out.push_str(&path.to_string()),
        ExprKind::Unary(UnaryOp::Not, operand) => {
            out.push_str("not ");
            write_expr(out, operand, NOT_PRECEDENCE);
        }
        ExprKind::Unary(UnaryOp::Neg, operand) => {
            out.push('-');
            write_expr(out, operand, NEG_PRECEDENCE);
        }
        ExprKind::Binary(op, left, right) => {
            // Left-associative: an operand of the same strength needs parentheses on the
            // right only.
            let p = op.precedence();
            write_expr(out, left, p);
            out.push(' ');
            out.push_str(op.symbol());
            out.push(' ');
            write_expr(out, right, p.saturating_add(1));
        }
        ExprKind::Call { function, args } => {
            out.push_str(&function.name);
            out.push('(');
            for (i, arg) in args.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_expr(out, arg, 0);
            }
            out.push(')');
        }
        ExprKind::Aggregate(aggregate) => write_aggregate(out, aggregate),
    }
}

/// `count(E across customers where COND within 24h)`, `sum(E.field …)`, `last(E).field`.
fn write_aggregate(out: &mut String, aggregate: &Aggregate) {
    out.push_str(aggregate.function.name());
    out.push('(');
    out.push_str(&aggregate.event.name);
    for segment in &aggregate.field {
        out.push('.');
        out.push_str(&segment.name);
    }
    if aggregate.across_customers {
        out.push_str(" across customers");
    }
    if let Some(condition) = &aggregate.condition {
        out.push_str(" where ");
        write_expr(out, condition, 0);
    }
    if let Some(within) = &aggregate.within {
        out.push_str(" within ");
        out.push_str(&within.duration.to_string());
        if within.after_send {
            out.push_str(" after send");
        }
    }
    out.push(')');
    for segment in &aggregate.then_field {
        out.push('.');
        out.push_str(&segment.name);
    }
}

fn write_literal(out: &mut String, literal: &Literal) {
    match literal {
        Literal::Int(n) => out.push_str(&n.to_string()),
        Literal::Float(f) => {
            let text = float_text(*f);
            out.push_str(&text);
            if !text.contains('.') {
                out.push_str(".0");
            }
        }
        Literal::Percent(p) => {
            out.push_str(&float_text(*p));
            out.push('%');
        }
        Literal::Text(text) => out.push_str(&quote(text)),
        Literal::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Literal::None => out.push_str("none"),
        Literal::Duration(d) => out.push_str(&d.to_string()),
        Literal::Date(d) => out.push_str(&date_text(*d)),
        Literal::DateTime(dt) => {
            out.push_str(&dt.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        }
        Literal::Time(t) => out.push_str(&t.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expression of `where …` in a tiny moment.
    fn parse_expr(source: &str) -> Expr {
        let text = format!("moment m \"t\" {{ trigger {{ let x = {source} }} }}");
        let parsed = parse::parse(0, &SourceFile::new("t.moment", text));
        assert!(
            parsed.diagnostics.is_empty(),
            "{source}: {:?}",
            parsed.diagnostics
        );
        let Some(Item::Moment(m)) = parsed.file.items.first() else {
            panic!("no moment")
        };
        let Some(MomentItem::Trigger(t)) = m.items.first() else {
            panic!("no trigger")
        };
        let Some(TriggerClause::Let { value, .. }) = t.clauses.first() else {
            panic!("no let")
        };
        value.clone()
    }

    /// Formats to `expected`, and `expected` reads back as the same tree.
    fn check(source: &str, expected: &str) {
        let expr = parse_expr(source);
        let printed = format_expr(&expr);
        assert_eq!(printed, expected, "formatting `{source}`");
        assert_eq!(parse_expr(&printed), expr, "`{printed}` changed meaning");
    }

    fn path(name: &str) -> Expr {
        Expr {
            kind: ExprKind::Path(Path {
                segments: vec![Ident {
                    name: name.into(),
                    span: Span::default(),
                }],
                span: Span::default(),
            }),
            span: Span::default(),
        }
    }

    fn bin(op: BinaryOp, l: Expr, r: Expr) -> Expr {
        Expr {
            kind: ExprKind::Binary(op, Box::new(l), Box::new(r)),
            span: Span::default(),
        }
    }

    fn un(op: UnaryOp, e: Expr) -> Expr {
        Expr {
            kind: ExprKind::Unary(op, Box::new(e)),
            span: Span::default(),
        }
    }

    #[test]
    fn redundant_parentheses_go() {
        check("(a + b) + c", "a + b + c");
        check("a + (b * c)", "a + b * c");
        check("((a))", "a");
        check("(a == b) and (c == d)", "a == b and c == d");
        check("(a and b) or c", "a and b or c");
        check("not (a == b)", "not a == b");
        check("(not a) and b", "not a and b");
        check("-(a)", "-a");
        check("f((a), (b + c))", "f(a, b + c)");
        check("[(1), (2 + 3)]", "[1, 2 + 3]");
    }

    #[test]
    fn needed_parentheses_stay() {
        check("a - (b - c)", "a - (b - c)");
        check("a - (b + c)", "a - (b + c)");
        check("(a - b) - c", "a - b - c");
        check("a / (b * c)", "a / (b * c)");
        check("(a + b) * c", "(a + b) * c");
        check("a and (b or c)", "a and (b or c)");
        check("a or (b or c)", "a or (b or c)");
        check("not (a and b)", "not (a and b)");
        check("(not a) == b", "(not a) == b");
        check("a == (not b)", "a == (not b)");
        check("a and not b", "a and not b");
        check("-(a + b)", "-(a + b)");
        check("-(not a)", "-(not a)");
        check("(a == b) == c", "a == b == c");
        check("a == (b == c)", "a == (b == c)");
        check("(a in b) contains c", "a in b contains c");
    }

    #[test]
    fn unary_operators_nest_without_parentheses() {
        check("not not a", "not not a");
        check("- -a", "--a");
        check("not -a", "not -a");
        check("-a * b", "-a * b");
        check("a * -b", "a * -b");
        check("a - -1", "a - -1");
    }

    #[test]
    fn trees_that_text_cannot_write_without_parentheses() {
        // (not a) == b: `not` binds more loosely than `==`.
        let e = bin(BinaryOp::Eq, un(UnaryOp::Not, path("a")), path("b"));
        assert_eq!(format_expr(&e), "(not a) == b");
        // a * (not b)
        let e = bin(BinaryOp::Mul, path("a"), un(UnaryOp::Not, path("b")));
        assert_eq!(format_expr(&e), "a * (not b)");
        // (a or b) and (c or d)
        let e = bin(
            BinaryOp::And,
            bin(BinaryOp::Or, path("a"), path("b")),
            bin(BinaryOp::Or, path("c"), path("d")),
        );
        assert_eq!(format_expr(&e), "(a or b) and (c or d)");
        // -(-(a * b))
        let e = un(
            UnaryOp::Neg,
            un(UnaryOp::Neg, bin(BinaryOp::Mul, path("a"), path("b"))),
        );
        assert_eq!(format_expr(&e), "--(a * b)");
    }

    #[test]
    fn literals_print_canonically() {
        check("20.0", "20.0");
        check("19.990", "19.99");
        check("15%", "15%");
        check("12.50%", "12.5%");
        check("0.000001", "0.000001");
        check("90m", "90m");
        check("2026-12-01", "2026-12-01");
        check("2026-12-20T12:00Z", "2026-12-20T12:00:00Z");
        check(
            "2026-12-20T12:00:00.5+01:00",
            "2026-12-20T12:00:00.500+01:00",
        );
        check("9:05", "09:05");
        check("\"a\\\"b\\\\c\\nd\\te\"", "\"a\\\"b\\\\c\\nd\\te\"");
        check("[ \"a\" , \"b\" , ]", "[\"a\", \"b\"]");
        check("none", "none");
        check("[]", "[]");
    }

    #[test]
    fn aggregates_print_their_clauses_in_order() {
        check(
            "count(order_completed within 24h where a == 1 across customers)",
            "count(order_completed across customers where a == 1 within 24h)",
        );
        check(
            "sum( order_completed . total )",
            "sum(order_completed.total)",
        );
        check("last(order_completed).total", "last(order_completed).total");
        check(
            "rate(e within 1d after send)",
            "rate(e within 1d after send)",
        );
        check("did((e))", "did(e)");
    }
}
