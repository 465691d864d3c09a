//! Findings rendered for people (miette's graphical report) and for machines (JSON, GitHub
//! workflow annotations, SARIF 2.1.0). Machine output is never mixed with human output.

use std::fmt;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};
use serde_json::{json, Value};

use crate::diagnostic::{Code, Diagnostic, Severity, Sources};

/// The output formats of `moments check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
    Github,
    Sarif,
}

/// Render findings in `format`. `color` applies to the human format only.
pub fn render(format: Format, sources: &[(&Sources, &[Diagnostic])], color: bool) -> String {
    match format {
        Format::Human => human(sources, color),
        Format::Json => {
            let findings: Vec<Value> = sources
                .iter()
                .flat_map(|(s, ds)| ds.iter().map(move |d| finding_json(s, d)))
                .collect();
            let mut text = serde_json::to_string_pretty(&findings).unwrap_or_else(|_| "[]".into());
            text.push('\n');
            text
        }
        Format::Github => sources
            .iter()
            .flat_map(|(s, ds)| ds.iter().map(move |d| github(s, d)))
            .collect(),
        Format::Sarif => {
            let mut text = serde_json::to_string_pretty(&sarif(sources)).unwrap_or_default();
            text.push('\n');
            text
        }
    }
}

/// Where a finding is, in 1-based lines and character columns; the end is exclusive.
struct Position {
    file: String,
    line: usize,
    column: usize,
    end_line: usize,
    end_column: usize,
}

fn position(sources: &Sources, d: &Diagnostic) -> Position {
    let file = sources.get(d.file);
    let (line, column) = file.line_column(d.span.start);
    let (end_line, end_column) = file.line_column(d.span.end.max(d.span.start));
    Position {
        file: file.name(),
        line,
        column,
        end_line,
        end_column,
    }
}

fn finding_json(sources: &Sources, d: &Diagnostic) -> Value {
    let p = position(sources, d);
    let related: Vec<Value> = d
        .related
        .iter()
        .map(|r| {
            let file = sources.get(r.file);
            let (line, column) = file.line_column(r.span.start);
            json!({"file": file.name(), "line": line, "column": column, "message": r.message})
        })
        .collect();
    json!({
        "file": p.file,
        "line": p.line,
        "column": p.column,
        "end_line": p.end_line,
        "end_column": p.end_column,
        "severity": d.severity.as_str(),
        "code": d.code.as_str(),
        "message": d.message,
        "help": d.help,
        "related": related,
    })
}

/// `::error file=…,line=…::message` (GitHub Actions workflow commands).
fn github(sources: &Sources, d: &Diagnostic) -> String {
    fn data(s: &str) -> String {
        s.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    }
    fn property(s: &str) -> String {
        data(s).replace(':', "%3A").replace(',', "%2C")
    }
    let p = position(sources, d);
    let level = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let mut message = d.message.clone();
    if let Some(help) = &d.help {
        message.push_str("\nhelp: ");
        message.push_str(help);
    }
    format!(
        "::{level} file={},line={},col={},endLine={},endColumn={},title={}::{}\n",
        property(&p.file),
        p.line,
        p.column,
        p.end_line,
        p.end_column,
        property(d.code.as_str()),
        data(&message)
    )
}

fn sarif(sources: &[(&Sources, &[Diagnostic])]) -> Value {
    let rules: Vec<Value> = Code::ALL
        .iter()
        .map(|code| {
            json!({
                "id": code.as_str(),
                "shortDescription": {"text": code.description()},
                "defaultConfiguration": {"level": sarif_level(code.severity())},
            })
        })
        .collect();
    let results: Vec<Value> = sources
        .iter()
        .flat_map(|(s, ds)| {
            ds.iter().map(move |d| {
                let p = position(s, d);
                let mut text = d.message.clone();
                if let Some(help) = &d.help {
                    text.push_str("\nhelp: ");
                    text.push_str(help);
                }
                let related: Vec<Value> = d
                    .related
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let file = s.get(r.file);
                        let (line, column) = file.line_column(r.span.start);
                        let (end_line, end_column) = file.line_column(r.span.end);
                        json!({
                            "id": i,
                            "message": {"text": r.message},
                            "physicalLocation": {
                                "artifactLocation": {"uri": file.name()},
                                "region": {"startLine": line, "startColumn": column, "endLine": end_line, "endColumn": end_column},
                            },
                        })
                    })
                    .collect();
                let rule_index = Code::ALL.iter().position(|c| *c == d.code).unwrap_or(0);
                json!({
                    "ruleId": d.code.as_str(),
                    "ruleIndex": rule_index,
                    "level": sarif_level(d.severity),
                    "message": {"text": text},
                    "locations": [{
                        "physicalLocation": {
                            "artifactLocation": {"uri": p.file},
                            "region": {"startLine": p.line, "startColumn": p.column, "endLine": p.end_line, "endColumn": p.end_column},
                        },
                    }],
                    "relatedLocations": related,
                })
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "moments",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    })
}

fn sarif_level(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// miette's graphical report, one finding after another.
fn human(sources: &[(&Sources, &[Diagnostic])], color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(100)
        .with_links(false);
    let mut out = String::new();
    for (s, ds) in sources {
        for d in ds.iter() {
            let report = Report::new(s, d);
            if handler.render_report(&mut out, &report).is_err() {
                out.push_str(&format!("{}: {}\n", d.code.as_str(), d.message));
            }
            out.push('\n');
        }
    }
    out
}

/// A finding dressed for miette.
#[derive(Debug)]
struct Report {
    code: Code,
    severity: Severity,
    message: String,
    help: Option<String>,
    source: NamedSource<String>,
    labels: Vec<LabeledSpan>,
    related: Vec<Report>,
    /// A related place in another file: shown as advice, not as a second error.
    note: bool,
}

impl Report {
    fn new(sources: &Sources, d: &Diagnostic) -> Report {
        let file = sources.get(d.file);
        let mut labels = vec![LabeledSpan::new_primary_with_span(
            d.label.clone(),
            to_miette(&file.text, d.span),
        )];
        let mut related = Vec::new();
        for r in &d.related {
            if r.file == d.file {
                labels.push(LabeledSpan::new_with_span(
                    Some(r.message.clone()),
                    to_miette(&file.text, r.span),
                ));
            } else {
                let other = sources.get(r.file);
                related.push(Report {
                    code: d.code,
                    severity: d.severity,
                    message: r.message.clone(),
                    help: None,
                    source: NamedSource::new(other.name(), other.text.clone()),
                    labels: vec![LabeledSpan::new_primary_with_span(
                        None,
                        to_miette(&other.text, r.span),
                    )],
                    related: Vec::new(),
                    note: true,
                });
            }
        }
        Report {
            code: d.code,
            severity: d.severity,
            message: d.message.clone(),
            help: d.help.clone(),
            source: NamedSource::new(file.name(), file.text.clone()),
            labels,
            related,
            note: false,
        }
    }
}

/// A span miette can show: inside the text, on character boundaries.
fn to_miette(text: &str, span: crate::ast::Span) -> SourceSpan {
    let start = crate::parse::floor_char_boundary(text, span.start);
    let mut end = span.end.clamp(start, text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    SourceSpan::new(start.into(), end - start)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Report {}

impl miette::Diagnostic for Report {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code.as_str()))
    }
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            _ if self.note => miette::Severity::Advice,
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h.as_str()) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().cloned()))
    }
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        if self.related.is_empty() {
            return None;
        }
        Some(Box::new(
            self.related.iter().map(|r| r as &dyn miette::Diagnostic),
        ))
    }
}
