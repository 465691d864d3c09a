//! Cron expressions as marketers write them in `.moment` files (`every "0 9 * * 1"`).
//!
//! This module owns the whole life of such a string: it validates every field itself, with
//! one precise, user-facing error per problem (which field, why, and the byte range of the
//! offending token so the caller can underline it), and converts the result into a
//! [`cron::Schedule`].
//!
//! Accepted input:
//! - standard 5-field cron: `minute hour day-of-month month day-of-week`;
//! - 6 fields (a leading `second`) or 7 fields (a leading `second` and a trailing `year`);
//! - the macros `@yearly @annually @monthly @weekly @daily @midnight @hourly`.
//!
//! Semantics are those of standard (Vixie) cron: day of week runs 0-7 with both 0 and 7
//! meaning Sunday. The `cron` crate numbers days of the week 1-7 from Sunday, so the day of
//! week is always handed over as an explicit list of names (`SUN,MON`), never as numbers;
//! every other field is handed over as an explicit list of values, so no step or range is
//! ever interpreted twice.
//!
//! One deliberate restriction: standard cron fires when *either* the day of month or the day
//! of week matches if both are restricted, while the `cron` crate requires both to match.
//! Rather than silently change the meaning, an expression that restricts both is rejected.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::str::FromStr;

/// A validated cron expression, ready for scheduling.
#[derive(Debug, Clone)]
pub struct CronExpr {
    /// The text as written.
    source: String,
    /// The converted schedule (its own `source()` is the converted, `cron`-crate text).
    schedule: cron::Schedule,
}

impl CronExpr {
    /// Validates `text` and builds its schedule.
    pub fn parse(text: &str) -> Result<CronExpr, CronError> {
        let converted = convert(text)?;
        let schedule = cron::Schedule::from_str(&converted).map_err(|e| CronError {
            message: one_line(&format!(
                "the scheduler rejected `{text}` (converted to `{converted}`): {e}"
            )),
            range: 0..text.len(),
            help: None,
        })?;
        Ok(CronExpr {
            source: text.to_string(),
            schedule,
        })
    }

    /// The text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The schedule to ask for fire times.
    pub fn schedule(&self) -> &cron::Schedule {
        &self.schedule
    }
}

/// Two expressions are equal when they were written the same way.
impl PartialEq for CronExpr {
    fn eq(&self, other: &CronExpr) -> bool {
        self.source == other.source
    }
}

impl Eq for CronExpr {}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for CronExpr {
    type Err = CronError;

    fn from_str(text: &str) -> Result<CronExpr, CronError> {
        CronExpr::parse(text)
    }
}

/// Why a cron expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError {
    /// Lower case, one line, the user's words in backticks, no final period.
    pub message: String,
    /// Byte range in the input text to underline (the whole text if not one token).
    pub range: Range<usize>,
    /// How to fix it, e.g. "hours go from 0 to 23".
    pub help: Option<String>,
}

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CronError {}

// ---------------------------------------------------------------------------------------
// Fields

/// What a field means; its position depends on how many fields were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Second,
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
    Year,
}

const FIVE: &[Kind] = &[
    Kind::Minute,
    Kind::Hour,
    Kind::DayOfMonth,
    Kind::Month,
    Kind::DayOfWeek,
];
const SIX: &[Kind] = &[
    Kind::Second,
    Kind::Minute,
    Kind::Hour,
    Kind::DayOfMonth,
    Kind::Month,
    Kind::DayOfWeek,
];
const SEVEN: &[Kind] = &[
    Kind::Second,
    Kind::Minute,
    Kind::Hour,
    Kind::DayOfMonth,
    Kind::Month,
    Kind::DayOfWeek,
    Kind::Year,
];

const FIELDS_HINT: &str = "minute hour day-of-month month day-of-week";

const DAY_NAMES: &[(&str, u32)] = &[
    ("SUN", 0),
    ("MON", 1),
    ("TUE", 2),
    ("WED", 3),
    ("THU", 4),
    ("FRI", 5),
    ("SAT", 6),
    ("SUNDAY", 0),
    ("MONDAY", 1),
    ("TUESDAY", 2),
    ("WEDNESDAY", 3),
    ("THURSDAY", 4),
    ("FRIDAY", 5),
    ("SATURDAY", 6),
];

const MONTH_NAMES: &[(&str, u32)] = &[
    ("JAN", 1),
    ("FEB", 2),
    ("MAR", 3),
    ("APR", 4),
    ("MAY", 5),
    ("JUN", 6),
    ("JUL", 7),
    ("AUG", 8),
    ("SEP", 9),
    ("OCT", 10),
    ("NOV", 11),
    ("DEC", 12),
    ("JANUARY", 1),
    ("FEBRUARY", 2),
    ("MARCH", 3),
    ("APRIL", 4),
    ("JUNE", 6),
    ("JULY", 7),
    ("AUGUST", 8),
    ("SEPTEMBER", 9),
    ("OCTOBER", 10),
    ("NOVEMBER", 11),
    ("DECEMBER", 12),
];

/// The three-letter names handed to the `cron` crate, by standard day-of-week number.
const CRON_DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// The longest each month can be (February in a leap year).
const MONTH_LENGTHS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Second => "second",
            Kind::Minute => "minute",
            Kind::Hour => "hour",
            Kind::DayOfMonth => "day of month",
            Kind::Month => "month",
            Kind::DayOfWeek => "day of week",
            Kind::Year => "year",
        }
    }

    fn bounds(self) -> (u32, u32) {
        match self {
            Kind::Second | Kind::Minute => (0, 59),
            Kind::Hour => (0, 23),
            Kind::DayOfMonth => (1, 31),
            Kind::Month => (1, 12),
            Kind::DayOfWeek => (0, 7),
            Kind::Year => (1970, 2099),
        }
    }

    fn names(self) -> &'static [(&'static str, u32)] {
        match self {
            Kind::Month => MONTH_NAMES,
            Kind::DayOfWeek => DAY_NAMES,
            _ => &[],
        }
    }

    /// "hours go from 0 to 23".
    fn bounds_help(self) -> String {
        match self {
            Kind::Second => "seconds go from 0 to 59".into(),
            Kind::Minute => "minutes go from 0 to 59".into(),
            Kind::Hour => "hours go from 0 to 23".into(),
            Kind::DayOfMonth => "days of the month go from 1 to 31".into(),
            Kind::Month => "months go from 1 to 12, or JAN to DEC".into(),
            Kind::DayOfWeek => {
                "days of the week go from 0 to 7 (0 and 7 are both Sunday), or SUN to SAT".into()
            }
            Kind::Year => "years go from 1970 to 2099".into(),
        }
    }

    /// The value written back, for suggestions: a name where the user wrote names.
    fn display(self, value: u32, as_name: bool) -> String {
        let name = match self {
            _ if !as_name => None,
            Kind::DayOfWeek => CRON_DAY_NAMES.get((value % 7) as usize).copied(),
            Kind::Month => MONTH_NAMES
                .get((value as usize).wrapping_sub(1))
                .map(|(name, _)| *name),
            _ => None,
        };
        name.map_or_else(|| value.to_string(), str::to_string)
    }
}

/// A piece of the input with its byte offset in the whole text.
#[derive(Debug, Clone, Copy)]
struct Tok<'a> {
    text: &'a str,
    start: usize,
}

impl<'a> Tok<'a> {
    fn range(self) -> Range<usize> {
        self.start..self.start + self.text.len()
    }

    /// `from` and `to` must be char boundaries (they always come from ASCII separators).
    fn slice(self, from: usize, to: usize) -> Tok<'a> {
        Tok {
            text: self.text.get(from..to).unwrap_or(""),
            start: self.start + from,
        }
    }

    fn split_once(self, sep: char) -> Option<(Tok<'a>, Tok<'a>)> {
        let i = self.text.find(sep)?;
        Some((
            self.slice(0, i),
            self.slice(i + sep.len_utf8(), self.text.len()),
        ))
    }

    fn split(self, sep: char) -> Vec<Tok<'a>> {
        let mut out = Vec::new();
        let mut from = 0;
        for (i, _) in self.text.match_indices(sep) {
            out.push(self.slice(from, i));
            from = i + sep.len_utf8();
        }
        out.push(self.slice(from, self.text.len()));
        out
    }
}

/// Whitespace-separated tokens (any Unicode whitespace, so a pasted no-break space works).
fn split_fields(text: &str) -> Vec<Tok<'_>> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                out.push(Tok {
                    text: &text[s..i],
                    start: s,
                });
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push(Tok {
            text: &text[s..],
            start: s,
        });
    }
    out
}

/// Where a field sits in the expression being parsed, for messages.
struct FieldCtx {
    kind: Kind,
    /// 1-based position in the text as written.
    pos: usize,
    layout: &'static [Kind],
}

impl FieldCtx {
    fn error(
        &self,
        what: impl fmt::Display,
        range: Range<usize>,
        help: Option<String>,
    ) -> CronError {
        CronError {
            message: format!("field {} ({}): {what}", self.pos, self.kind.name()),
            range,
            help,
        }
    }

    fn position_of(&self, kind: Kind) -> Option<usize> {
        self.layout.iter().position(|k| *k == kind).map(|i| i + 1)
    }
}

/// One parsed field.
struct Field<'a> {
    tok: Tok<'a>,
    /// The values it matches; for the day of week, 0-6 (7 is folded into 0).
    values: BTreeSet<u32>,
    /// Written as `*…` or `?`: in standard cron such a day field does not widen the other.
    star: bool,
}

fn parse_field<'a>(ctx: &FieldCtx, tok: Tok<'a>) -> Result<Field<'a>, CronError> {
    let elements = tok.split(',');
    let mut values = BTreeSet::new();
    for element in &elements {
        if element.text.is_empty() {
            let what = if tok.text.chars().all(|c| c == ',') {
                format!("`{}` has no values", tok.text)
            } else {
                format!("empty entry in the list `{}`", tok.text)
            };
            return Err(ctx.error(
                what,
                tok.range(),
                Some("separate values with single commas, e.g. `1,15`".into()),
            ));
        }
        if element.text == "?" && elements.len() > 1 {
            return Err(ctx.error(
                "`?` must stand alone",
                element.range(),
                Some("write just `?` (or `*`) for any day".into()),
            ));
        }
        values.extend(parse_element(ctx, *element)?);
    }
    Ok(Field {
        tok,
        values,
        star: tok.text.starts_with('*') || tok.text.starts_with('?'),
    })
}

/// One list entry: `*`, `?`, `5`, `MON`, `1-5`, `*/15`, `1-30/2`, `5/10`.
fn parse_element(ctx: &FieldCtx, element: Tok<'_>) -> Result<BTreeSet<u32>, CronError> {
    let (lo, hi) = ctx.kind.bounds();
    let (base, step) = match element.split_once('/') {
        Some((base, step)) => (base, Some(step)),
        None => (element, None),
    };

    let step = match step {
        None => None,
        Some(step) => Some(parse_step(ctx, element, base, step)?),
    };

    // The values the base stands for, before stepping.
    let (start, end) = match base.text {
        "*" => (lo, hi),
        "?" => {
            if !matches!(ctx.kind, Kind::DayOfMonth | Kind::DayOfWeek) {
                return Err(ctx.error(
                    "`?` is only allowed in the day of month and day of week",
                    base.range(),
                    Some(format!("write `*` for every {}", ctx.kind.name())),
                ));
            }
            if step.is_some() {
                return Err(ctx.error(
                    format!("`{}` cannot have a step", element.text),
                    element.range(),
                    Some("write `*/n` for every n-th day".into()),
                ));
            }
            (lo, hi)
        }
        _ => match base.split_once('-') {
            Some((a, b)) => {
                if a.text.is_empty() {
                    let help = if b.text.bytes().all(|c| c.is_ascii_digit()) && !b.text.is_empty() {
                        format!("values cannot be negative; {}", ctx.kind.bounds_help())
                    } else {
                        "a range needs a start and an end, e.g. `1-5`".into()
                    };
                    return Err(ctx.error(
                        format!("range `{}` is missing a start", base.text),
                        base.range(),
                        Some(help),
                    ));
                }
                if b.text.is_empty() {
                    return Err(ctx.error(
                        format!("range `{}` is missing an end", base.text),
                        base.range(),
                        Some("a range needs a start and an end, e.g. `1-5`".into()),
                    ));
                }
                if b.text.contains('-') {
                    return Err(ctx.error(
                        format!("`{}` is not a range", base.text),
                        base.range(),
                        Some("a range has one start and one end, e.g. `1-5`".into()),
                    ));
                }
                let start = parse_value(ctx, a)?;
                let mut end = parse_value(ctx, b)?;
                let end_is_name = is_name(b.text);
                // `MON-SUN`: Sunday at the end of a range means 7.
                if ctx.kind == Kind::DayOfWeek && end == 0 && end_is_name {
                    end = 7;
                }
                if start > end {
                    return Err(backwards(ctx, base, a, b, start, end, step.is_some()));
                }
                (start, end)
            }
            None => {
                let value = parse_value(ctx, base)?;
                match step {
                    // `5/10`: from 5 to the end of the field.
                    Some(_) => (value, hi),
                    None => (value, value),
                }
            }
        },
    };

    let step_by = step.unwrap_or(1);
    let mut values: BTreeSet<u32> = (start..=end).step_by(step_by as usize).collect();
    if ctx.kind == Kind::DayOfWeek && values.remove(&7) {
        values.insert(0);
    }

    if step_by > 1 && values.len() == 1 {
        let only = values.iter().next().copied().unwrap_or(start);
        let step_tok = element.split_once('/').map(|(_, s)| s).unwrap_or(element);
        return Err(ctx.error(
            format!(
                "step `{step_by}` is too large: `{}` only matches {}",
                element.text,
                ctx.kind.display(only, ctx.kind == Kind::DayOfWeek)
            ),
            step_tok.range(),
            Some(format!(
                "the step counts from {start} to {end} and never repeats; write `{}` if one {} \
                 is meant",
                ctx.kind
                    .display(only, is_name(base.text) || ctx.kind == Kind::DayOfWeek),
                ctx.kind.name()
            )),
        ));
    }
    Ok(values)
}

fn parse_step(
    ctx: &FieldCtx,
    element: Tok<'_>,
    base: Tok<'_>,
    step: Tok<'_>,
) -> Result<u32, CronError> {
    if step.text.contains('/') {
        return Err(ctx.error(
            format!("`{}` has more than one `/`", element.text),
            element.range(),
            Some("a step is written once, e.g. `*/15`".into()),
        ));
    }
    if base.text.is_empty() {
        return Err(ctx.error(
            format!(
                "`{}` is missing what to step through before `/`",
                element.text
            ),
            element.range(),
            Some(format!(
                "write `*/{}` to step through every {}",
                if step.text.is_empty() { "n" } else { step.text },
                ctx.kind.name()
            )),
        ));
    }
    if step.text.is_empty() {
        return Err(ctx.error(
            format!("`{}` is missing a step after `/`", element.text),
            element.range(),
            Some(format!(
                "write a number after `/`, e.g. `{}/2` for every second {}",
                base.text,
                ctx.kind.name()
            )),
        ));
    }
    if !step.text.bytes().all(|c| c.is_ascii_digit()) {
        return Err(ctx.error(
            format!("step `{}` is not a number", step.text),
            step.range(),
            Some("a step is a whole number, e.g. `*/15`".into()),
        ));
    }
    let (lo, hi) = ctx.kind.bounds();
    match step.text.parse::<u32>() {
        Ok(0) => Err(ctx.error(
            format!("step `{}` must be at least 1", step.text),
            step.range(),
            Some(format!("`*/1` means every {}", ctx.kind.name())),
        )),
        Ok(n) if n <= hi - lo => Ok(n),
        _ => Err(ctx.error(
            format!("step `{}` is too large", step.text),
            step.range(),
            Some(format!(
                "{}, so a step can be at most {}",
                ctx.kind.bounds_help(),
                hi - lo
            )),
        )),
    }
}

fn is_name(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|c| c.is_ascii_alphabetic())
}

/// A single number or name, checked against the field's bounds.
fn parse_value(ctx: &FieldCtx, tok: Tok<'_>) -> Result<u32, CronError> {
    let (lo, hi) = ctx.kind.bounds();
    let text = tok.text;
    if !text.is_empty() && text.bytes().all(|c| c.is_ascii_digit()) {
        return match text.parse::<u32>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(n),
            _ => Err(ctx.error(
                format!("`{text}` is out of range {lo}-{hi}"),
                tok.range(),
                Some(ctx.kind.bounds_help()),
            )),
        };
    }
    if is_name(text) {
        let upper = text.to_ascii_uppercase();
        let names = ctx.kind.names();
        if let Some((_, value)) = names.iter().find(|(name, _)| *name == upper) {
            return Ok(*value);
        }
        if let Some(what) = quartz_extension(&upper) {
            return Err(unsupported_extension(ctx, tok, what));
        }
        if names.is_empty() {
            // A day or month name in the wrong field.
            let elsewhere = [Kind::DayOfWeek, Kind::Month]
                .into_iter()
                .find(|kind| kind.names().iter().any(|(name, _)| *name == upper));
            let help = match elsewhere.and_then(|kind| ctx.position_of(kind).map(|p| (kind, p))) {
                Some((kind, pos)) => format!(
                    "`{text}` is a {}, which goes in field {pos}; {}",
                    if kind == Kind::Month {
                        "month"
                    } else {
                        "day of the week"
                    },
                    ctx.kind.bounds_help()
                ),
                None => ctx.kind.bounds_help(),
            };
            return Err(ctx.error(format!("`{text}` is not a number"), tok.range(), Some(help)));
        }
        let help = match suggest(&upper, names) {
            Some(name) => format!("did you mean `{name}`?"),
            None => match ctx.kind {
                Kind::DayOfWeek => {
                    "days of the week are SUN, MON, TUE, WED, THU, FRI, SAT, or 0-7".to_string()
                }
                _ => "months are JAN, FEB, MAR, APR, MAY, JUN, JUL, AUG, SEP, OCT, NOV, DEC, \
                      or 1-12"
                    .to_string(),
            },
        };
        return Err(ctx.error(format!("unknown name `{text}`"), tok.range(), Some(help)));
    }
    let upper = text.to_ascii_uppercase();
    if let Some(what) = quartz_extension(&upper) {
        return Err(unsupported_extension(ctx, tok, what));
    }
    match text
        .chars()
        .find(|c| !c.is_ascii_alphanumeric())
        .filter(|_| !text.is_empty())
    {
        Some(c) => Err(ctx.error(
            if text.chars().count() == 1 {
                format!("unexpected `{c}`")
            } else {
                format!("unexpected character `{c}` in `{text}`")
            },
            tok.range(),
            Some(format!(
                "use numbers{}, `*`, ranges like `1-5`, steps like `*/15` and lists like `1,15`",
                if ctx.kind.names().is_empty() {
                    ""
                } else {
                    " or names"
                }
            )),
        )),
        None => Err(ctx.error(
            if ctx.kind.names().is_empty() {
                format!("`{text}` is not a number")
            } else {
                format!("`{text}` is neither a number nor a name")
            },
            tok.range(),
            Some(ctx.kind.bounds_help()),
        )),
    }
}

/// Quartz's `L`, `W`, `LW`, `5L`, `15W`, `5#3`: recognised only to say they are unsupported.
fn quartz_extension(upper: &str) -> Option<&'static str> {
    if upper.contains('#') {
        return Some("`#` (n-th weekday of the month)");
    }
    let letters = upper.trim_start_matches(|c: char| c.is_ascii_digit());
    match letters {
        "L" => Some("`L` (last)"),
        "W" => Some("`W` (nearest weekday)"),
        "LW" => Some("`LW` (last weekday)"),
        _ => None,
    }
}

fn unsupported_extension(ctx: &FieldCtx, tok: Tok<'_>, what: &str) -> CronError {
    ctx.error(
        format!("`{}` uses {what}, which is not supported", tok.text),
        tok.range(),
        Some("only numbers, names, `*`, `?`, ranges, steps and lists are supported".into()),
    )
}

/// The closest known name, if it is close enough to be a typo.
fn suggest(upper: &str, names: &[(&'static str, u32)]) -> Option<&'static str> {
    let (distance, name) = names
        .iter()
        .map(|(name, _)| (strsim::levenshtein(upper, name), *name))
        .min_by_key(|(distance, _)| *distance)?;
    let limit = if upper.len() <= 4 { 1 } else { 2 };
    (distance <= limit).then_some(name)
}

fn backwards(
    ctx: &FieldCtx,
    base: Tok<'_>,
    a: Tok<'_>,
    b: Tok<'_>,
    start: u32,
    end: u32,
    stepped: bool,
) -> CronError {
    let (lo, hi) = ctx.kind.bounds();
    let help = if ctx.kind == Kind::DayOfWeek && end == 0 {
        format!("write `7` for Sunday at the end of a range: `{}-7`", a.text)
    } else if stepped {
        "write the smaller value first".to_string()
    } else {
        // A range that wraps around, split in two: `20-10` becomes `20-31,1-10`.
        let hi = if ctx.kind == Kind::DayOfWeek { 6 } else { hi };
        let first = if start == hi {
            a.text.to_string()
        } else {
            format!("{}-{}", a.text, ctx.kind.display(hi, is_name(a.text)))
        };
        let second = if end == lo {
            b.text.to_string()
        } else {
            format!("{}-{}", ctx.kind.display(lo, is_name(b.text)), b.text)
        };
        format!(
            "write the smaller value first, or split a range that wraps around: `{first},{second}`"
        )
    };
    ctx.error(
        format!("range `{}` goes backwards", base.text),
        base.range(),
        Some(help),
    )
}

// ---------------------------------------------------------------------------------------
// The whole expression

const MACROS: &[(&str, &str)] = &[
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

const MACRO_LIST: &str = "@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly";

/// Validates `text` and returns the equivalent expression in the `cron` crate's syntax
/// (`sec min hour day-of-month month day-of-week [year]`).
fn convert(text: &str) -> Result<String, CronError> {
    let whole = 0..text.len();
    let toks = split_fields(text);
    let Some(first) = toks.first() else {
        return Err(CronError {
            message: "the cron expression is empty".into(),
            range: whole,
            help: Some(format!(
                "write five fields ({FIELDS_HINT}), e.g. `0 9 * * *` for 09:00 every day"
            )),
        });
    };

    if first.text.starts_with('@') {
        return convert_macro(text, &toks);
    }

    if let Some(wait) = as_duration(text) {
        let trimmed = text.trim();
        let start = text.len() - text.trim_start().len();
        return Err(CronError {
            message: format!("`{trimmed}` is a duration, not a cron expression"),
            range: start..start + trimmed.len(),
            help: Some(format!(
                "`every` takes a cron expression such as `0 9 * * *`; for a delay after a \
                 trigger use `wait {wait}`"
            )),
        });
    }

    if toks.len() == 1 {
        let lower = first.text.to_ascii_lowercase();
        let lower = lower.trim_start_matches('@');
        if let Some((name, _)) = MACROS.iter().find(|(name, _)| name[1..] == *lower) {
            return Err(CronError {
                message: format!("`{}` is not a cron expression", first.text),
                range: first.range(),
                help: Some(format!("did you mean `{name}`?")),
            });
        }
    }

    let layout = match toks.len() {
        5 => FIVE,
        6 => SIX,
        7 => SEVEN,
        n => {
            return Err(CronError {
                message: format!("expected 5 fields ({FIELDS_HINT}), found {n}"),
                range: whole,
                help: Some(if n < 5 {
                    "for example `0 9 * * *` runs at 09:00 every day, `0 9 * * MON` every Monday"
                        .into()
                } else {
                    "an optional seconds field may come first and an optional year field last, \
                     so at most 7 fields"
                        .into()
                }),
            })
        }
    };

    let mut fields = Vec::with_capacity(layout.len());
    for (i, (tok, kind)) in toks.iter().zip(layout).enumerate() {
        let ctx = FieldCtx {
            kind: *kind,
            pos: i + 1,
            layout,
        };
        match parse_field(&ctx, *tok) {
            Ok(field) => fields.push((*kind, i + 1, field)),
            Err(mut error) => {
                // `0 9 * * 1 2025`: six fields read as seconds-first, so the year lands in the
                // day of week.
                let year = tok.text.len() == 4 && tok.text.parse::<u32>().is_ok_and(|y| y >= 1970);
                if layout.len() == 6 && *kind == Kind::DayOfWeek && year {
                    error.help = Some(format!(
                        "with 6 fields the first is seconds; to give a year, write all 7 \
                         fields: `0 {}`",
                        text.trim()
                    ));
                }
                return Err(error);
            }
        }
    }

    let get = |kind: Kind| fields.iter().find(|(k, _, _)| *k == kind);
    let (Some(dom), Some(month), Some(dow)) = (
        get(Kind::DayOfMonth),
        get(Kind::Month),
        get(Kind::DayOfWeek),
    ) else {
        return Err(CronError {
            message: "internal error: a day or month field is missing".into(),
            range: whole,
            help: None,
        });
    };

    if !dom.2.star && !dow.2.star {
        let replace = |tok: Tok<'_>| {
            let r = tok.range();
            format!("{}*{}", &text[first.start..r.start], &text[r.end..])
                .trim_end()
                .to_string()
        };
        return Err(CronError {
            message: format!(
                "field {} (day of month) `{}` and field {} (day of week) `{}` cannot both be set",
                dom.1, dom.2.tok.text, dow.1, dow.2.tok.text
            ),
            range: dom.2.tok.start..dow.2.tok.range().end,
            help: Some(format!(
                "standard cron runs when either one matches, which is easy to misread; set one \
                 of them to `*`: `{}` or `{}`",
                replace(dow.2.tok),
                replace(dom.2.tok)
            )),
        });
    }

    if !dom.2.star {
        let possible = month.2.values.iter().any(|m| {
            let longest = MONTH_LENGTHS.get((*m as usize).wrapping_sub(1)).copied();
            dom.2.values.iter().any(|d| Some(*d) <= longest)
        });
        if !possible {
            return Err(CronError {
                message: format!(
                    "field {} (day of month): `{}` never occurs in field {} (month) `{}`",
                    dom.1, dom.2.tok.text, month.1, month.2.tok.text
                ),
                range: dom.2.tok.start..month.2.tok.range().end,
                help: Some(
                    "February has at most 29 days; April, June, September and November have 30"
                        .into(),
                ),
            });
        }
    }

    let mut out = Vec::with_capacity(7);
    if layout.len() == 5 {
        out.push("0".to_string());
    }
    for (kind, _, field) in &fields {
        out.push(render(*kind, &field.values));
    }
    Ok(out.join(" "))
}

fn convert_macro(text: &str, toks: &[Tok<'_>]) -> Result<String, CronError> {
    let Some(first) = toks.first() else {
        return convert(text);
    };
    let lower = first.text.to_ascii_lowercase();
    let Some((_, expansion)) = MACROS.iter().find(|(name, _)| *name == lower) else {
        // `@ daily`: a stray space.
        let joined = toks
            .get(1)
            .filter(|_| first.text == "@")
            .map(|next| format!("@{}", next.text.to_ascii_lowercase()))
            .filter(|joined| MACROS.iter().any(|(name, _)| name == joined));
        let help = match (joined, suggest_macro(&lower)) {
            (Some(joined), _) => format!("write `{joined}` without a space"),
            (None, Some(name)) => format!("did you mean `{name}`? the macros are {MACRO_LIST}"),
            (None, None) => format!("the macros are {MACRO_LIST}"),
        };
        return Err(CronError {
            message: format!("unknown macro `{}`", first.text),
            range: first.range(),
            help: Some(help),
        });
    };
    if let Some(extra) = toks.get(1) {
        return Err(CronError {
            message: format!("unexpected `{}` after `{}`", extra.text, first.text),
            range: extra.start..text.trim_end().len(),
            help: Some(format!("a macro such as `{}` stands alone", first.text)),
        });
    }
    convert(expansion).map_err(|mut error| {
        error.range = first.range();
        error
    })
}

fn suggest_macro(lower: &str) -> Option<&'static str> {
    let (distance, name) = MACROS
        .iter()
        .map(|(name, _)| (strsim::levenshtein(lower, name), *name))
        .min_by_key(|(distance, _)| *distance)?;
    (distance <= 2).then_some(name)
}

/// `1d`, `2h`, `30 minutes`, `1h30m`: returns what to write after `wait`.
fn as_duration(text: &str) -> Option<String> {
    const UNITS: &[(&str, &str)] = &[
        ("s", "s"),
        ("sec", "s"),
        ("secs", "s"),
        ("second", "s"),
        ("seconds", "s"),
        ("m", "m"),
        ("min", "m"),
        ("mins", "m"),
        ("minute", "m"),
        ("minutes", "m"),
        ("h", "h"),
        ("hr", "h"),
        ("hrs", "h"),
        ("hour", "h"),
        ("hours", "h"),
        ("d", "d"),
        ("day", "d"),
        ("days", "d"),
        ("w", "w"),
        ("wk", "w"),
        ("wks", "w"),
        ("week", "w"),
        ("weeks", "w"),
        ("month", ""),
        ("months", ""),
        ("year", ""),
        ("years", ""),
    ];
    let compact: String = text
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    let mut rest = compact.as_str();
    let mut parts = Vec::new();
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return None;
        }
        let (number, tail) = rest.split_at(digits);
        let letters = tail.len()
            - tail
                .trim_start_matches(|c: char| c.is_ascii_lowercase())
                .len();
        let (unit, tail) = tail.split_at(letters);
        let (_, short) = UNITS.iter().find(|(name, _)| *name == unit)?;
        parts.push((number, *short));
        rest = tail;
    }
    match parts.as_slice() {
        [] => None,
        [(number, short)] if !short.is_empty() => Some(format!("{number}{short}")),
        _ => Some("1d".into()),
    }
}

/// A field in the `cron` crate's syntax: `*`, or an explicit list (runs become `a-b`), with
/// days of the week always as names.
fn render(kind: Kind, values: &BTreeSet<u32>) -> String {
    let (lo, hi) = kind.bounds();
    if kind == Kind::DayOfWeek {
        if values.len() == 7 {
            return "*".into();
        }
        return values
            .iter()
            .filter_map(|v| CRON_DAY_NAMES.get(*v as usize))
            .copied()
            .collect::<Vec<_>>()
            .join(",");
    }
    if values.len() as u32 == hi - lo + 1 {
        return "*".into();
    }
    let mut parts = Vec::new();
    let mut iter = values.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc, Weekday};

    fn start() -> DateTime<Utc> {
        // A Wednesday.
        Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
            .single()
            .expect("valid date")
    }

    fn fires(text: &str, n: usize) -> Vec<DateTime<Utc>> {
        let expr = CronExpr::parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        expr.schedule().after(&start()).take(n).collect()
    }

    fn err(text: &str) -> CronError {
        match CronExpr::parse(text) {
            Ok(expr) => panic!("{text} parsed as {}", expr.schedule().source()),
            Err(e) => e,
        }
    }

    fn converted(text: &str) -> String {
        CronExpr::parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e:?}"))
            .schedule()
            .source()
            .to_string()
    }

    fn underlined<'a>(text: &'a str, e: &CronError) -> &'a str {
        &text[e.range.clone()]
    }

    #[test]
    fn monday_at_nine() {
        let times = fires("0 9 * * 1", 5);
        assert_eq!(times.len(), 5);
        for t in &times {
            assert_eq!(t.weekday(), Weekday::Mon, "{t}");
            assert_eq!((t.hour(), t.minute(), t.second()), (9, 0, 0));
        }
        assert_eq!(times[0].day(), 6);
        assert_eq!(times[1] - times[0], chrono::Duration::weeks(1));
    }

    #[test]
    fn sunday_is_zero_and_seven() {
        for text in ["0 9 * * 0", "0 9 * * 7", "0 9 * * SUN", "0 9 * * sun"] {
            for t in fires(text, 4) {
                assert_eq!(t.weekday(), Weekday::Sun, "{text}: {t}");
                assert_eq!(t.hour(), 9);
            }
        }
        assert_eq!(converted("0 9 * * 0"), "0 0 9 * * SUN");
        assert_eq!(converted("0 9 * * 7"), "0 0 9 * * SUN");
    }

    #[test]
    fn every_day_of_week_number_maps_to_the_standard_day() {
        let expected = [
            Weekday::Sun,
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
        ];
        for (n, day) in expected.iter().enumerate() {
            let text = format!("30 6 * * {n}");
            for t in fires(&text, 3) {
                assert_eq!(t.weekday(), *day, "{text}: {t}");
            }
        }
    }

    #[test]
    fn every_fifteen_minutes() {
        let times = fires("*/15 * * * *", 8);
        let minutes: Vec<u32> = times.iter().map(|t| t.minute()).collect();
        assert_eq!(minutes, [15, 30, 45, 0, 15, 30, 45, 0]);
        for pair in times.windows(2) {
            assert_eq!(pair[1] - pair[0], chrono::Duration::minutes(15));
        }
        assert_eq!(converted("*/15 * * * *"), "0 0,15,30,45 * * * *");
    }

    #[test]
    fn first_of_the_month() {
        let times = fires("0 8 1 * *", 3);
        for t in &times {
            assert_eq!((t.day(), t.hour(), t.minute()), (1, 8, 0), "{t}");
        }
        let months: Vec<u32> = times.iter().map(|t| t.month()).collect();
        assert_eq!(months, [1, 2, 3]);
    }

    #[test]
    fn weekdays() {
        let times = fires("0 9 * * MON-FRI", 10);
        for t in &times {
            assert!(
                !matches!(t.weekday(), Weekday::Sat | Weekday::Sun),
                "{t} is a weekend"
            );
            assert_eq!(t.hour(), 9);
        }
        // Wed 1 Jan 2025 09:00 onwards: Wed Thu Fri Mon Tue ...
        let days: Vec<u32> = times.iter().map(|t| t.day()).collect();
        assert_eq!(days, [1, 2, 3, 6, 7, 8, 9, 10, 13, 14]);
        assert_eq!(converted("0 9 * * 1-5"), "0 0 9 * * MON,TUE,WED,THU,FRI");
        assert_eq!(
            converted("0 9 * * mon-fri"),
            "0 0 9 * * MON,TUE,WED,THU,FRI"
        );
    }

    #[test]
    fn day_of_week_ranges_and_steps() {
        assert_eq!(converted("0 9 * * 5-7"), "0 0 9 * * SUN,FRI,SAT");
        assert_eq!(converted("0 9 * * FRI-SUN"), "0 0 9 * * SUN,FRI,SAT");
        assert_eq!(converted("0 9 * * 0-7"), "0 0 9 * * *");
        assert_eq!(converted("0 9 * * */2"), "0 0 9 * * SUN,TUE,THU,SAT");
        assert_eq!(converted("0 9 * * 1/2"), "0 0 9 * * SUN,MON,WED,FRI");
        assert_eq!(
            converted("0 9 * * MON,wednesday,Fri"),
            "0 0 9 * * MON,WED,FRI"
        );
        assert_eq!(converted("0 9 ? * 1"), "0 0 9 * * MON");
        for t in fires("0 9 * * SAT,SUN", 6) {
            assert!(matches!(t.weekday(), Weekday::Sat | Weekday::Sun), "{t}");
        }
    }

    #[test]
    fn other_fields_are_explicit_lists() {
        assert_eq!(
            converted("0-10/5 9-17 1,15 JAN-MAR,dec *"),
            "0 0,5,10 9-17 1,15 1-3,12 *"
        );
        assert_eq!(converted("5/20 * * * *"), "0 5,25,45 * * * *");
        assert_eq!(converted("0 0 1 1 *"), "0 0 0 1 1 *");
    }

    #[test]
    fn six_and_seven_fields() {
        assert_eq!(converted("30 0 9 * * MON"), "30 0 9 * * MON");
        assert_eq!(converted("0 0 9 * * MON 2030"), "0 0 9 * * MON 2030");
        assert_eq!(converted("0 0 9 * * * 2030-2032"), "0 0 9 * * * 2030-2032");
        let times = fires("0 0 9 1 JUN ? 2030", 2);
        assert_eq!(times.len(), 1);
        assert_eq!(times[0].year(), 2030);
        let times = fires("*/20 * * * * *", 3);
        let seconds: Vec<u32> = times.iter().map(|t| t.second()).collect();
        assert_eq!(seconds, [20, 40, 0]);
    }

    #[test]
    fn macros() {
        let cases = [
            ("@yearly", "0 0 0 1 1 *"),
            ("@annually", "0 0 0 1 1 *"),
            ("@monthly", "0 0 0 1 * *"),
            ("@weekly", "0 0 0 * * SUN"),
            ("@daily", "0 0 0 * * *"),
            ("@midnight", "0 0 0 * * *"),
            ("@hourly", "0 0 * * * *"),
            ("  @Daily ", "0 0 0 * * *"),
        ];
        for (text, expected) in cases {
            assert_eq!(converted(text), expected, "{text}");
        }
        for t in fires("@weekly", 3) {
            assert_eq!(t.weekday(), Weekday::Sun);
            assert_eq!(t.hour(), 0);
        }
        let expr = CronExpr::parse("@daily").expect("valid");
        assert_eq!(expr.source(), "@daily");
    }

    #[test]
    fn source_is_kept_as_written() {
        let text = "  0  9 * *   mon ";
        let expr = CronExpr::parse(text).expect("valid");
        assert_eq!(expr.source(), text);
        assert_eq!(expr.to_string(), text);
        assert_eq!(expr.schedule().source(), "0 0 9 * * MON");
    }

    #[test]
    fn no_break_space_separates_fields() {
        assert_eq!(converted("0\u{a0}9 * * 1"), "0 0 9 * * MON");
    }

    #[test]
    fn out_of_range() {
        let text = "0 25 * * *";
        let e = err(text);
        assert_eq!(e.message, "field 2 (hour): `25` is out of range 0-23");
        assert_eq!(underlined(text, &e), "25");
        assert_eq!(e.help.as_deref(), Some("hours go from 0 to 23"));

        let text = "0 9 1,32 * *";
        let e = err(text);
        assert_eq!(
            e.message,
            "field 3 (day of month): `32` is out of range 1-31"
        );
        assert_eq!(underlined(text, &e), "32");

        let e = err("0 9 0 * *");
        assert_eq!(
            e.message,
            "field 3 (day of month): `0` is out of range 1-31"
        );
        let e = err("0 9 * 13 *");
        assert_eq!(e.message, "field 4 (month): `13` is out of range 1-12");
        let e = err("0 9 * * 8");
        assert_eq!(e.message, "field 5 (day of week): `8` is out of range 0-7");
        let e = err("60 9 * * *");
        assert_eq!(e.message, "field 1 (minute): `60` is out of range 0-59");
        let e = err("60 0 9 * * *");
        assert_eq!(e.message, "field 1 (second): `60` is out of range 0-59");
        let e = err("0 0 9 * * * 2100");
        assert_eq!(
            e.message,
            "field 7 (year): `2100` is out of range 1970-2099"
        );
        let e = err("0 0 9 * * * 1969");
        assert_eq!(
            e.message,
            "field 7 (year): `1969` is out of range 1970-2099"
        );

        let text = "0 99999999999999999999 * * *";
        let e = err(text);
        assert_eq!(
            e.message,
            "field 2 (hour): `99999999999999999999` is out of range 0-23"
        );
        assert_eq!(underlined(text, &e), "99999999999999999999");
    }

    #[test]
    fn unknown_names() {
        let text = "0 9 * * MOM";
        let e = err(text);
        assert_eq!(e.message, "field 5 (day of week): unknown name `MOM`");
        assert_eq!(underlined(text, &e), "MOM");
        assert_eq!(e.help.as_deref(), Some("did you mean `MON`?"));

        let e = err("0 9 * Janury *");
        assert_eq!(e.message, "field 4 (month): unknown name `Janury`");
        assert_eq!(e.help.as_deref(), Some("did you mean `JANUARY`?"));

        let e = err("0 9 * * XYZ");
        assert!(e.help.as_deref().is_some_and(|h| h.contains("SUN, MON")));

        let text = "0 MON * * *";
        let e = err(text);
        assert_eq!(e.message, "field 2 (hour): `MON` is not a number");
        assert_eq!(
            e.help.as_deref(),
            Some("`MON` is a day of the week, which goes in field 5; hours go from 0 to 23")
        );
        let e = err("0 9 * * JAN");
        assert_eq!(e.message, "field 5 (day of week): unknown name `JAN`");
    }

    #[test]
    fn field_count() {
        let e = err("0 9 *");
        assert_eq!(
            e.message,
            "expected 5 fields (minute hour day-of-month month day-of-week), found 3"
        );
        assert_eq!(e.range, 0..5);
        let e = err("* * * * * * * *");
        assert_eq!(
            e.message,
            "expected 5 fields (minute hour day-of-month month day-of-week), found 8"
        );
        let e = err("");
        assert_eq!(e.message, "the cron expression is empty");
        let e = err("   ");
        assert_eq!(e.message, "the cron expression is empty");
        assert_eq!(e.range, 0..3);
    }

    #[test]
    fn six_fields_with_a_year_gets_a_hint() {
        let e = err("0 9 * * 1 2025");
        assert_eq!(
            e.message,
            "field 6 (day of week): `2025` is out of range 0-7"
        );
        assert!(e
            .help
            .as_deref()
            .is_some_and(|h| h.contains("`0 0 9 * * 1 2025`")));
    }

    #[test]
    fn steps() {
        let text = "*/0 * * * *";
        let e = err(text);
        assert_eq!(e.message, "field 1 (minute): step `0` must be at least 1");
        assert_eq!(underlined(text, &e), "0");
        assert_eq!(e.range, 2..3);

        let e = err("*/ * * * *");
        assert_eq!(
            e.message,
            "field 1 (minute): `*/` is missing a step after `/`"
        );
        let e = err("/5 * * * *");
        assert_eq!(
            e.message,
            "field 1 (minute): `/5` is missing what to step through before `/`"
        );
        assert_eq!(
            e.help.as_deref(),
            Some("write `*/5` to step through every minute")
        );
        let e = err("*/x * * * *");
        assert_eq!(e.message, "field 1 (minute): step `x` is not a number");
        let e = err("*/5/2 * * * *");
        assert_eq!(e.message, "field 1 (minute): `*/5/2` has more than one `/`");

        let text = "*/90 * * * *";
        let e = err(text);
        assert_eq!(e.message, "field 1 (minute): step `90` is too large");
        assert_eq!(underlined(text, &e), "90");

        assert_eq!(
            e.help.as_deref(),
            Some("minutes go from 0 to 59, so a step can be at most 59")
        );
        let e = err("*/60 * * * *");
        assert_eq!(e.message, "field 1 (minute): step `60` is too large");
        let e = err("0 10-12/5 * * *");
        assert_eq!(
            e.message,
            "field 2 (hour): step `5` is too large: `10-12/5` only matches 10"
        );
        let e = err("0 9 * * */7");
        assert_eq!(
            e.message,
            "field 5 (day of week): step `7` is too large: `*/7` only matches SUN"
        );
        let e = err("0 9 */99999999999999999999 * *");
        assert_eq!(
            e.message,
            "field 3 (day of month): step `99999999999999999999` is too large"
        );
    }

    #[test]
    fn ranges() {
        let text = "0 9 20-10 * *";
        let e = err(text);
        assert_eq!(
            e.message,
            "field 3 (day of month): range `20-10` goes backwards"
        );
        assert_eq!(underlined(text, &e), "20-10");
        assert_eq!(
            e.help.as_deref(),
            Some(
                "write the smaller value first, or split a range that wraps around: \
                 `20-31,1-10`"
            )
        );
        let e = err("0 9 * * FRI-MON");
        assert_eq!(
            e.message,
            "field 5 (day of week): range `FRI-MON` goes backwards"
        );
        assert!(e
            .help
            .as_deref()
            .is_some_and(|h| h.ends_with("`FRI-SAT,SUN-MON`")));
        let e = err("0 9 * * 5-0");
        assert_eq!(
            e.help.as_deref(),
            Some("write `7` for Sunday at the end of a range: `5-7`")
        );
        let e = err("0 9 * NOV-FEB *");
        assert!(e
            .help
            .as_deref()
            .is_some_and(|h| h.ends_with("`NOV-DEC,JAN-FEB`")));

        let e = err("1- * * * *");
        assert_eq!(e.message, "field 1 (minute): range `1-` is missing an end");
        let e = err("-5 * * * *");
        assert_eq!(e.message, "field 1 (minute): range `-5` is missing a start");
        assert!(e.help.as_deref().is_some_and(|h| h.contains("negative")));
        let e = err("1-2-3 * * * *");
        assert_eq!(e.message, "field 1 (minute): `1-2-3` is not a range");
        let e = err("0 9-25 * * *");
        assert_eq!(e.message, "field 2 (hour): `25` is out of range 0-23");
    }

    #[test]
    fn question_mark() {
        let e = err("? 9 * * *");
        assert_eq!(
            e.message,
            "field 1 (minute): `?` is only allowed in the day of month and day of week"
        );
        let e = err("0 9 ?,1 * *");
        assert_eq!(e.message, "field 3 (day of month): `?` must stand alone");
        let e = err("0 9 * * ?/2");
        assert_eq!(e.message, "field 5 (day of week): `?/2` cannot have a step");
        assert_eq!(converted("0 9 1 * ?"), "0 0 9 1 * *");
    }

    #[test]
    fn lists() {
        let text = "1,,2 * * * *";
        let e = err(text);
        assert_eq!(
            e.message,
            "field 1 (minute): empty entry in the list `1,,2`"
        );
        assert_eq!(underlined(text, &e), "1,,2");
        let e = err(",,, * * * *");
        assert_eq!(e.message, "field 1 (minute): `,,,` has no values");
        let e = err("1, * * * *");
        assert_eq!(e.message, "field 1 (minute): empty entry in the list `1,`");
    }

    #[test]
    fn day_of_month_and_day_of_week_together() {
        let text = "0 9 1-7 * MON";
        let e = err(text);
        assert_eq!(
            e.message,
            "field 3 (day of month) `1-7` and field 5 (day of week) `MON` cannot both be set"
        );
        assert_eq!(underlined(text, &e), "1-7 * MON");
        assert!(e
            .help
            .as_deref()
            .is_some_and(|h| h.ends_with("`0 9 1-7 * *` or `0 9 * * MON`")));
        // With a `*` in either, standard cron and the scheduler agree (both must match).
        assert_eq!(
            converted("0 9 */2 * MON"),
            "0 0 9 1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31 * MON"
        );
        for t in fires("0 9 */2 * MON", 4) {
            assert_eq!(t.weekday(), Weekday::Mon);
            assert_eq!(t.day() % 2, 1);
        }
    }

    #[test]
    fn impossible_dates() {
        let text = "0 9 30 2 *";
        let e = err(text);
        assert_eq!(
            e.message,
            "field 3 (day of month): `30` never occurs in field 4 (month) `2`"
        );
        assert_eq!(underlined(text, &e), "30 2");
        let e = err("0 9 31 APR,JUN *");
        assert!(e.message.contains("never occurs"));
        // Leap days and mixed lists are fine.
        assert!(CronExpr::parse("0 9 29 2 *").is_ok());
        assert!(CronExpr::parse("0 9 31 2,3 *").is_ok());
    }

    #[test]
    fn durations() {
        let help = "`every` takes a cron expression such as `0 9 * * *`; for a delay after a \
                    trigger use `wait 1d`";
        let e = err("1d");
        assert_eq!(e.message, "`1d` is a duration, not a cron expression");
        assert_eq!(e.help.as_deref(), Some(help));
        assert_eq!(e.range, 0..2);
        let e = err(" 2h ");
        assert_eq!(e.range, 1..3);
        assert!(e.help.as_deref().is_some_and(|h| h.ends_with("`wait 2h`")));
        let e = err("30m");
        assert!(e.help.as_deref().is_some_and(|h| h.ends_with("`wait 30m`")));
        let e = err("2 hours");
        assert_eq!(e.message, "`2 hours` is a duration, not a cron expression");
        assert!(e.help.as_deref().is_some_and(|h| h.ends_with("`wait 2h`")));
        let e = err("1h30m");
        assert!(e.message.contains("is a duration"));
    }

    #[test]
    fn bad_macros() {
        let e = err("@dayly");
        assert_eq!(e.message, "unknown macro `@dayly`");
        assert!(e
            .help
            .as_deref()
            .is_some_and(|h| h.starts_with("did you mean `@daily`?")));
        let e = err("@reboot");
        assert_eq!(e.message, "unknown macro `@reboot`");
        let text = "@daily 9";
        let e = err(text);
        assert_eq!(e.message, "unexpected `9` after `@daily`");
        assert_eq!(underlined(text, &e), "9");
        let e = err("daily");
        assert_eq!(e.message, "`daily` is not a cron expression");
        assert_eq!(e.help.as_deref(), Some("did you mean `@daily`?"));
        let e = err("@");
        assert_eq!(e.message, "unknown macro `@`");
        let text = "@ daily";
        let e = err(text);
        assert_eq!(e.message, "unknown macro `@`");
        assert_eq!(underlined(text, &e), "@");
        assert_eq!(e.help.as_deref(), Some("write `@daily` without a space"));
    }

    #[test]
    fn quartz_extensions() {
        let e = err("0 9 L * *");
        assert_eq!(
            e.message,
            "field 3 (day of month): `L` uses `L` (last), which is not supported"
        );
        let e = err("0 9 * * 5#3");
        assert!(
            e.message.contains("`#` (n-th weekday of the month)"),
            "{}",
            e.message
        );
        let e = err("0 9 15W * *");
        assert!(e.message.contains("not supported"));
    }

    #[test]
    fn odd_characters() {
        let text = "0 9 * * 1é";
        let e = err(text);
        assert_eq!(
            e.message,
            "field 5 (day of week): unexpected character `é` in `1é`"
        );
        assert_eq!(underlined(text, &e), "1é");
        let e = err("0 ９ * * *");
        assert_eq!(e.message, "field 2 (hour): unexpected `９`");
        let e = err("0 9 * * 1;");
        assert!(e.message.contains("unexpected character `;`"));
    }

    #[test]
    fn never_panics() {
        let long = "9".repeat(500);
        let odd = [
            "",
            " ",
            "\t\n",
            "* * * * * * * *",
            ",,,",
            "-",
            "/",
            "1-",
            "*/",
            "99999999999999999999",
            "é",
            "日本 語 * * *",
            "🙂 🙂 🙂 🙂 🙂",
            "* * * * 🙂",
            "*/🙂 * * * *",
            "🙂-1 * * * *",
            "1-🙂 * * * *",
            "- - - - -",
            "/ / / / /",
            ", , , , ,",
            "*/ */ */ */ */",
            "1- 1- 1- 1- 1-",
            "? ? ? ? ?",
            "* * ? * ?",
            "0 0 ? ? ? ? ?",
            "@",
            "@@",
            "@ daily",
            "\u{0}",
            "0 9 * * -0",
            "0 9 * * 0-",
            "0 9 * * 7-7/7",
            "0 0 0 1 1 * 2099",
            "0 0 0 1 1 * 1970-2099/99",
            "* * * * * * *",
            "59 59 23 31 12 7 2099",
            long.as_str(),
            "0 9 * * 1 \u{2028}",
            "1d 2h",
            "0s",
            "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
        ];
        for text in odd {
            let result = std::panic::catch_unwind(|| CronExpr::parse(text));
            let result = result.unwrap_or_else(|_| panic!("panicked on {text:?}"));
            if let Err(e) = result {
                assert!(!e.message.is_empty());
                assert!(!e.message.contains('\n'), "{text:?}: {}", e.message);
                assert!(!e.message.ends_with('.'), "{text:?}: {}", e.message);
                assert!(e.range.end <= text.len(), "{text:?}: {:?}", e.range);
                assert!(
                    text.get(e.range.clone()).is_some(),
                    "{text:?}: {:?}",
                    e.range
                );
            }
        }
    }

    #[test]
    fn messages_start_lower_case() {
        for text in [
            "0 25 * * *",
            "0 9 * * MOM",
            "1 2 3",
            "1d",
            "@x",
            "0 9 30 2 *",
            "0 9 1 * 1",
        ] {
            let e = err(text);
            let first = e.message.chars().next().unwrap_or(' ');
            assert!(!first.is_uppercase(), "{text}: {}", e.message);
        }
    }

    #[test]
    fn errors_compare_and_display() {
        let e = err("0 25 * * *");
        assert_eq!(e.to_string(), e.message);
        assert_eq!(e, err("0 25 * * *"));
        let a = CronExpr::parse("0 9 * * 1").expect("valid");
        let b: CronExpr = "0 9 * * 1".parse().expect("valid");
        assert_eq!(a, b);
    }
}
