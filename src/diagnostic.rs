//! Findings about campaign files: what is wrong, where, and how to fix it.
//!
//! Every stage reports through [`Diagnostic`]; none of them stops at the first problem.
//! Each finding has a stable [`Code`] (`moment::check::unknown_trait`) so that CI can filter
//! on it, a one-line lower-case message with the user's words in backticks, a label on the
//! exact span, an optional help line, and related places (the first definition of a
//! duplicate). [`crate::output`] renders them for people and for machines.

use std::path::PathBuf;

use crate::ast::Span;

/// One source file, as read.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// As the user named it (relative paths stay relative), for messages.
    pub path: PathBuf,
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> SourceFile {
        let text = text.into();
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceFile {
            path: path.into(),
            text,
            line_starts,
        }
    }

    /// The display name: the path with `/` separators.
    pub fn name(&self) -> String {
        self.path.to_string_lossy().replace('\\', "/")
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let column = self
            .text
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(offset - start);
        (line + 1, column + 1)
    }

    /// 0-based line index of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        self.line_column(offset).0 - 1
    }

    /// Byte offset where 0-based `line` starts (the end of the text past the last line).
    pub fn line_start(&self, line: usize) -> usize {
        self.line_starts
            .get(line)
            .copied()
            .unwrap_or(self.text.len())
    }

    pub fn line_count(&self) -> usize {
        self.line_starts.len()
    }
}

/// Index of a file in a [`Sources`] set.
pub type FileId = usize;

/// All files of one run, so that a diagnostic can point into any of them.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    files: Vec<SourceFile>,
}

impl Sources {
    pub fn add(&mut self, file: SourceFile) -> FileId {
        self.files.push(file);
        self.files.len() - 1
    }
    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id]
    }
    pub fn iter(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files.iter().enumerate()
    }
    pub fn len(&self) -> usize {
        self.files.len()
    }
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

macro_rules! codes {
    ($($variant:ident => $code:literal, $severity:ident, $doc:literal;)*) => {
        /// The stable code of a finding. Codes are never renamed: CI filters on them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $(#[doc = $doc] $variant,)*
        }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code,)* }
            }

            pub fn severity(self) -> Severity {
                match self { $(Code::$variant => Severity::$severity,)* }
            }

            /// One line on what the code means (for `docs/diagnostics.md` and SARIF rules).
            pub fn description(self) -> &'static str {
                match self { $(Code::$variant => $doc,)* }
            }
        }
    };
}

codes! {
    NotUtf8 => "moment::parse::not_utf8", Error, "the file is not valid UTF-8 text";
    TooLarge => "moment::parse::too_large", Error, "the file is larger than a campaign file may be";
    TooDeep => "moment::parse::too_deep", Error, "brackets are nested too deeply";
    Syntax => "moment::parse::syntax", Error, "the text does not follow the grammar";
    AssignForEquals => "moment::parse::assign_for_equals", Error, "`=` used where `==` compares";
    SymbolOperator => "moment::parse::symbol_operator", Error, "`&&`, `||` or `!` used instead of `and`, `or`, `not`";
    DurationUnit => "moment::parse::duration_unit", Error, "a duration with a spelled-out unit (`1 hour` for `1h`)";
    NotADuration => "moment::parse::not_a_duration", Error, "something other than a duration where a duration belongs";
    NotATime => "moment::parse::not_a_time", Error, "something other than a time of day (`09:00`) where one belongs";
    SmartQuote => "moment::parse::smart_quote", Error, "curly or single quotes around text";
    UnknownSetting => "moment::parse::unknown_setting", Error, "a line that starts with no known keyword";
    InvalidLiteral => "moment::parse::invalid_literal", Error, "a date, time, number or string that cannot be";
    AggregateForm => "moment::parse::aggregate_form", Error, "an aggregate not written as `count(EVENT …)`";
    MissingSchema => "moment::check::missing_schema", Error, "no `schema.moment` for a campaign file";
    MisplacedItem => "moment::check::misplaced_item", Error, "a schema declaration outside `schema.moment`, or a moment inside it";
    IdMismatch => "moment::check::id_mismatch", Error, "a moment id that differs from its file name";
    DuplicateId => "moment::check::duplicate_id", Error, "two moments with the same id";
    DuplicateName => "moment::check::duplicate_name", Error, "a trait, event, property or `let` declared twice";
    DuplicateItem => "moment::check::duplicate_item", Error, "a second trigger, message, KPI or rule where one is allowed";
    MissingMoment => "moment::check::missing_moment", Error, "a campaign file without a `moment`";
    MissingTrigger => "moment::check::missing_trigger", Error, "a moment or trigger without what makes it fire";
    MissingMessage => "moment::check::missing_message", Error, "a moment without a message";
    MissingKpi => "moment::check::missing_kpi", Error, "a moment without a KPI";
    UnknownEvent => "moment::check::unknown_event", Error, "an event the schema does not declare";
    UnknownTrait => "moment::check::unknown_trait", Error, "a customer trait the schema does not declare";
    UnknownProperty => "moment::check::unknown_property", Error, "an event property the schema does not declare";
    UnknownName => "moment::check::unknown_name", Error, "a name that is neither a `let`, `customer`, `event`, `now` nor an event";
    UnknownFunction => "moment::check::unknown_function", Error, "a function that does not exist";
    UnknownType => "moment::check::unknown_type", Error, "a type that does not exist";
    UnknownChannel => "moment::check::unknown_channel", Error, "a message channel that does not exist";
    UnknownField => "moment::check::unknown_field", Error, "a message field the channel does not have";
    MissingField => "moment::check::missing_field", Error, "a required message field is missing";
    TypeMismatch => "moment::check::type_mismatch", Error, "a value of the wrong type";
    OptionalUnguarded => "moment::check::optional_unguarded", Error, "a value that may be missing, read without `default(…)` or a guard";
    NoTriggerEvent => "moment::check::no_trigger_event", Error, "`event.*` in a moment whose trigger has no event";
    CrossesMisplaced => "moment::check::crosses_misplaced", Error, "`crosses` outside the `where` of an `on EVENT` trigger";
    CatalogEvent => "moment::check::catalog_event", Error, "a catalog event used where a customer's own event is needed";
    InvalidCron => "moment::check::invalid_cron", Error, "a cron expression that cannot be";
    InvalidTimezone => "moment::check::invalid_timezone", Error, "a time zone that is not an IANA name";
    InvalidValue => "moment::check::invalid_value", Error, "a value out of its allowed range";
    KpiForm => "moment::check::kpi_form", Error, "a KPI not written as `rate|sum|count|avg(… within DUR after send)`";
    AfterSendOutsideKpi => "moment::check::after_send_outside_kpi", Error, "`after send` or `rate` outside a KPI";
    TemplateSyntax => "moment::check::template_syntax", Error, "a message template that does not parse";
    TemplateSmartQuote => "moment::check::template_smart_quote", Error, "curly quotes inside a template expression";
    WebhookBody => "moment::check::webhook_body", Error, "a webhook body that is not JSON once rendered";
    TemplateOptional => "moment::check::template_optional", Warning, "a value that may be missing, shown in a message without `default(…)`";
    UnusedLet => "moment::check::unused_let", Warning, "a `let` that nothing uses";
    SmsLength => "moment::check::sms_length", Warning, "an SMS longer than one segment";
}

/// A place related to a finding: the first definition of a duplicate, say.
#[derive(Debug, Clone)]
pub struct Related {
    pub file: FileId,
    pub span: Span,
    pub message: String,
}

/// One finding.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    pub file: FileId,
    pub span: Span,
    /// Words on the underline; defaults to nothing.
    pub label: Option<String>,
    pub help: Option<String>,
    pub related: Vec<Related>,
}

impl Diagnostic {
    pub fn new(code: Code, file: FileId, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            severity: code.severity(),
            message: message.into(),
            file,
            span,
            label: None,
            help: None,
            related: Vec::new(),
        }
    }
    pub fn with_label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }
    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }
    pub fn with_help_opt(mut self, help: Option<String>) -> Diagnostic {
        self.help = help;
        self
    }
    pub fn with_related(
        mut self,
        file: FileId,
        span: Span,
        message: impl Into<String>,
    ) -> Diagnostic {
        self.related.push(Related {
            file,
            span,
            message: message.into(),
        });
        self
    }
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Sort findings by file, position, then code, so output is the same on every run.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| {
        (a.file, a.span.start, a.span.end, a.code, &a.message).cmp(&(
            b.file,
            b.span.start,
            b.span.end,
            b.code,
            &b.message,
        ))
    });
}

/// "did you mean `first_name`?" — the closest candidate, if one is close enough.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(name, candidates).map(|best| format!("did you mean `{best}`?"))
}

/// The candidate closest to `name`, if it is close enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = name.to_lowercase();
    candidates
        .into_iter()
        .filter(|c| !c.is_empty() && *c != name)
        .map(|c| (strsim::damerau_levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(distance, c)| {
            let longest = c.chars().count().max(name.chars().count());
            *distance <= ((longest + 1) / 3).max(1)
                || c.to_lowercase().contains(&lower) && lower.len() >= 3
        })
        .min_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(b.1)))
        .map(|(_, c)| c)
}

/// "`a`, `b` and `c`" for help lines.
pub fn all_of<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<String> = names.into_iter().map(|n| format!("`{n}`")).collect();
    match names.len() {
        0 => String::from("nothing"),
        1 => names[0].clone(),
        n => format!("{} and {}", names[..n - 1].join(", "), names[n - 1]),
    }
}

/// "one of `a`, `b` or `c`" for help lines.
pub fn one_of<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<String> = names.into_iter().map(|n| format!("`{n}`")).collect();
    match names.len() {
        0 => String::from("nothing"),
        1 => names[0].clone(),
        n => format!("{} or {}", names[..n - 1].join(", "), names[n - 1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters() {
        let file = SourceFile::new("x", "ab\nçd\n");
        assert_eq!(file.line_column(0), (1, 1));
        assert_eq!(file.line_column(3), (2, 1));
        assert_eq!(file.line_column(5), (2, 2));
        assert_eq!(file.line_column(100), (3, 1));
    }

    #[test]
    fn suggestions_find_typos_and_skip_strangers() {
        let names = ["first_name", "email", "birthday"];
        assert_eq!(closest("frist_name", names), Some("first_name"));
        assert_eq!(closest("emial", names), Some("email"));
        assert_eq!(closest("zzz", names), None);
    }

    #[test]
    fn codes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            assert!(seen.insert(code.as_str()), "{} twice", code.as_str());
        }
    }
}
