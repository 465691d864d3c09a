//! Syntax tree to checked model: every name resolved, every type known, every rule applied.
//!
//! The checker reads the schema first (traits, events, defaults), then each moment against
//! it. It reports every problem it finds and never stops early; a mistake is reported once
//! (an expression whose type is unknown after an error fits anywhere). A [`Model`] comes
//! out only when there is no error at all.
//!
//! Message templates are compiled with minijinja to find syntax errors, and every variable
//! they use is resolved like a path in an expression.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::Arc;

use crate::ast::{self, *};
use crate::cron_expr::CronExpr;
use crate::diagnostic::{closest, did_you_mean, one_of, Code, Diagnostic, FileId, Sources};
use crate::model::{self, Channel, Model};
use crate::parse::{self, Parsed};
use crate::types::{Ty, TypeKind, TYPE_NAMES};

/// What checking a set of files gives.
#[derive(Debug)]
pub struct Checked {
    /// Every file parsed, by id (the formatter reuses them).
    pub parsed: BTreeMap<FileId, Parsed>,
    /// Sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
    /// Present when there is no error.
    pub model: Option<Model>,
}

impl Checked {
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }
    pub fn warning_count(&self) -> usize {
        self.diagnostics.len() - self.error_count()
    }
}

/// Functions an expression may call: name, what it takes, what it gives.
const FUNCTIONS: [(&str, &str); 9] = [
    ("default", "`default(value, fallback)`"),
    ("lower", "`lower(text)`"),
    ("upper", "`upper(text)`"),
    ("len", "`len(list or text)`"),
    ("days_since", "`days_since(date or datetime)`"),
    ("hours_since", "`hours_since(datetime)`"),
    ("date", "`date(datetime)`"),
    ("abs", "`abs(number)`"),
    ("round", "`round(number)`"),
];

/// Check a campaign directory: `schema` is its `schema.moment`, `moments` the other files.
pub fn check(sources: &Sources, schema: Option<FileId>, moments: &[FileId]) -> Checked {
    let mut parsed = BTreeMap::new();
    let mut diagnostics = Vec::new();
    for id in schema.iter().chain(moments) {
        let p = parse::parse(*id, sources.get(*id));
        diagnostics.extend(p.diagnostics.iter().cloned());
        parsed.insert(*id, p);
    }
    let mut checker = Checker {
        sources,
        diagnostics,
        schema: Arc::new(model::Schema::default()),
        trait_spans: HashMap::new(),
        event_spans: HashMap::new(),
        have_schema: schema.is_some(),
    };
    if let Some(id) = schema {
        checker.schema_file(id, &parsed[&id]);
    }
    let mut moments_out = Vec::new();
    let mut seen_ids: HashMap<String, (FileId, Span)> = HashMap::new();
    for id in moments {
        let p = &parsed[id];
        if schema.is_none() {
            checker.report(
                Diagnostic::new(
                    Code::MissingSchema,
                    *id,
                    Span::new(0, 0),
                    "no `schema.moment` beside this file",
                )
                .with_help("campaigns are checked against the `schema.moment` of their directory; add one or check the whole directory"),
            );
        }
        let errors_before = checker.error_count();
        let moment = checker.moment_file(*id, p, &mut seen_ids);
        if let Some(moment) = moment {
            if checker.error_count() == errors_before && !p.incomplete {
                moments_out.push(moment);
            }
        }
    }
    let mut diagnostics = checker.diagnostics;
    // INVARIANT: every finding points inside its file, on character boundaries. Parsing may
    // have mended a copy of the text (a `}` added at the end), so clamp to the real text.
    let clamp = |file: FileId, span: Span| {
        let text = &sources.get(file).text;
        let start = parse::floor_char_boundary(text, span.start);
        Span::new(start, parse::floor_char_boundary(text, span.end).max(start))
    };
    for d in &mut diagnostics {
        d.span = clamp(d.file, d.span);
        for r in &mut d.related {
            r.span = clamp(r.file, r.span);
        }
    }
    crate::diagnostic::sort(&mut diagnostics);
    diagnostics.dedup_by(|a, b| {
        a.file == b.file && a.span.start == b.span.start && a.message == b.message
    });
    let has_errors = diagnostics.iter().any(|d| d.is_error());
    moments_out.sort_by(|a, b| a.id.cmp(&b.id));
    let model = (!has_errors && schema.is_some()).then(|| Model {
        schema: Arc::unwrap_or_clone(checker.schema),
        moments: moments_out,
    });
    Checked {
        parsed,
        diagnostics,
        model,
    }
}

struct Checker<'s> {
    sources: &'s Sources,
    diagnostics: Vec<Diagnostic>,
    schema: Arc<model::Schema>,
    trait_spans: HashMap<String, (FileId, Span)>,
    event_spans: HashMap<String, (FileId, Span)>,
    have_schema: bool,
}

/// What `event` means where an expression is checked.
#[derive(Clone, Copy)]
enum EventContext<'a> {
    Event(&'a model::Event),
    /// A schedule or a date: there is no trigger event.
    None(&'static str),
}

#[derive(Debug)]
struct LetInfo {
    name: String,
    ty: Ty,
    span: Span,
    used: Cell<bool>,
}

/// Where an expression stands: what its names can mean.
#[derive(Clone)]
struct Scope<'a> {
    file: FileId,
    event: EventContext<'a>,
    lets: &'a [LetInfo],
    /// Inside `count(E where …)`: `E`.
    aggregated: Option<&'a model::Event>,
    /// Inside a KPI: `send.at`, `send.id`.
    kpi: bool,
    /// In a message template: `moment.id`, `moment.title`, `send.id`.
    template: bool,
    /// `crosses` allowed (the `where` of an `on E` trigger).
    crosses: bool,
    /// Paths known not to be missing (`x != none and …`).
    guarded: Vec<String>,
    /// No customer here (schema defaults).
    no_customer: bool,
}

impl<'a> Scope<'a> {
    fn new(file: FileId, event: EventContext<'a>, lets: &'a [LetInfo]) -> Scope<'a> {
        Scope {
            file,
            event,
            lets,
            aggregated: None,
            kpi: false,
            template: false,
            crosses: false,
            guarded: Vec::new(),
            no_customer: false,
        }
    }
}

impl<'s> Checker<'s> {
    fn report(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    fn text(&self, file: FileId) -> &'s str {
        &self.sources.get(file).text
    }

    // -----------------------------------------------------------------------------------
    // Schema

    fn schema_file(&mut self, file: FileId, parsed: &Parsed) {
        let mut customer_seen: Option<Span> = None;
        let mut defaults_seen: Option<Span> = None;
        for item in &parsed.file.items {
            match item {
                Item::Customer(block) => {
                    if let Some(first) = customer_seen {
                        self.report(
                            Diagnostic::new(
                                Code::DuplicateItem,
                                file,
                                block.span,
                                "a second `customer` block",
                            )
                            .with_label("second block")
                            .with_related(file, first, "first `customer` block")
                            .with_help("declare all traits in one `customer { … }` block"),
                        );
                    }
                    customer_seen = Some(block.span);
                    for decl in &block.traits {
                        let ty = self.field_type(file, decl);
                        if let Some((f, span)) = self.trait_spans.get(&decl.name.name) {
                            self.report(
                                Diagnostic::new(
                                    Code::DuplicateName,
                                    file,
                                    decl.name.span,
                                    format!("trait `{}` is declared twice", decl.name.name),
                                )
                                .with_label("declared again")
                                .with_related(
                                    *f,
                                    *span,
                                    "first declared here",
                                ),
                            );
                            continue;
                        }
                        self.trait_spans
                            .insert(decl.name.name.clone(), (file, decl.name.span));
                        Arc::make_mut(&mut self.schema).traits.insert(
                            decl.name.name.clone(),
                            model::Field {
                                name: decl.name.name.clone(),
                                ty,
                                default: decl.default.clone(),
                            },
                        );
                    }
                }
                Item::Event(decl) => self.event_decl(file, decl),
                Item::Defaults(block) => {
                    if let Some(first) = defaults_seen {
                        self.report(
                            Diagnostic::new(
                                Code::DuplicateItem,
                                file,
                                block.span,
                                "a second `defaults` block",
                            )
                            .with_label("second block")
                            .with_related(
                                file,
                                first,
                                "first `defaults` block",
                            ),
                        );
                    }
                    defaults_seen = Some(block.span);
                }
                Item::Moment(m) => self.report(
                    Diagnostic::new(
                        Code::MisplacedItem,
                        file,
                        m.id.span,
                        format!("moment `{}` is inside `schema.moment`", m.id.name),
                    )
                    .with_label("a moment")
                    .with_help(format!("move it to its own file, `{}.moment`", m.id.name)),
                ),
            }
        }
        // Defaults last: consent conditions read traits.
        for item in &parsed.file.items {
            if let Item::Defaults(block) = item {
                self.defaults(file, block);
            }
        }
    }

    /// The type of a declared trait or property, with its default checked against it.
    fn field_type(&mut self, file: FileId, decl: &FieldDecl) -> Ty {
        let ty = self.resolve_type(file, &decl.ty);
        if let Some(default) = &decl.default {
            let lets = [];
            let mut scope = Scope::new(file, EventContext::None("schema"), &lets);
            scope.no_customer = true;
            let default_ty = self.expr(&scope, default);
            if !default_ty.comparable(&ty) || matches!(default_ty.kind, TypeKind::Null) {
                self.report(
                    Diagnostic::new(
                        Code::TypeMismatch,
                        file,
                        default.span,
                        format!(
                            "default of `{}` is {}, but the field holds {}",
                            decl.name.name,
                            default_ty.describe(),
                            ty.clone().required().describe()
                        ),
                    )
                    .with_label(format!("expected {}", ty.clone().required().describe())),
                );
            }
        }
        ty
    }

    fn resolve_type(&mut self, file: FileId, ty: &TypeExpr) -> Ty {
        let resolved = match &ty.kind {
            TypeExprKind::Named(name) => match Ty::from_name(&name.name) {
                Some(kind) => Ty::new(kind),
                None => {
                    let mut names: Vec<&str> = TYPE_NAMES.to_vec();
                    names.push("list");
                    let help =
                        did_you_mean(&name.name, names.iter().copied()).unwrap_or_else(|| {
                            format!(
                                "types are {}, `list<T>` and `{{ field: T }}`",
                                one_of(TYPE_NAMES)
                            )
                        });
                    let hint = match name.name.as_str() {
                        "string" | "str" => Some("did you mean `text`?".to_string()),
                        "float" | "decimal" | "double" | "money" => {
                            Some("did you mean `number`?".to_string())
                        }
                        "integer" => Some("did you mean `int`?".to_string()),
                        "boolean" => Some("did you mean `bool`?".to_string()),
                        "timestamp" => Some("did you mean `datetime`?".to_string()),
                        _ => None,
                    };
                    self.report(
                        Diagnostic::new(
                            Code::UnknownType,
                            file,
                            name.span,
                            format!("unknown type `{}`", name.name),
                        )
                        .with_label("not a type")
                        .with_help(hint.unwrap_or(help)),
                    );
                    Ty::unknown()
                }
            },
            TypeExprKind::List(element) => Ty::list_of(self.resolve_type(file, element)),
            TypeExprKind::Record(fields) => {
                let mut map = BTreeMap::new();
                for field in fields {
                    let field_ty = self.field_type(file, field);
                    if map.insert(field.name.name.clone(), field_ty).is_some() {
                        self.report(
                            Diagnostic::new(
                                Code::DuplicateName,
                                file,
                                field.name.span,
                                format!("field `{}` is declared twice", field.name.name),
                            )
                            .with_label("declared again"),
                        );
                    }
                }
                Ty::new(TypeKind::Record(Arc::new(map)))
            }
        };
        if ty.optional {
            resolved.optional()
        } else {
            resolved
        }
    }

    fn event_decl(&mut self, file: FileId, decl: &EventDecl) {
        let name = &decl.name.name;
        if let Some((f, span)) = self.event_spans.get(name) {
            self.report(
                Diagnostic::new(
                    Code::DuplicateName,
                    file,
                    decl.name.span,
                    format!("event `{name}` is declared twice"),
                )
                .with_label("declared again")
                .with_related(*f, *span, "first declared here"),
            );
            return;
        }
        if let Some(other) = self.schema.event_by_source(&decl.source.value) {
            let (f, span) = self.event_spans[&other.name];
            self.report(
                Diagnostic::new(
                    Code::DuplicateName,
                    file,
                    decl.source.span,
                    format!(
                        "events `{}` and `{name}` both read records named \"{}\"",
                        other.name, decl.source.value
                    ),
                )
                .with_label("same source name")
                .with_related(f, span, "the other event"),
            );
        }
        if decl.source.value.trim().is_empty() {
            self.report(
                Diagnostic::new(
                    Code::InvalidValue,
                    file,
                    decl.source.span,
                    format!("event `{name}` has an empty source name"),
                )
                .with_label("empty")
                .with_help("write the name the data carries, like \"Order Completed\""),
            );
        }
        let mut fields = BTreeMap::new();
        for field in &decl.fields {
            let ty = self.field_type(file, field);
            if fields.contains_key(&field.name.name) {
                self.report(
                    Diagnostic::new(
                        Code::DuplicateName,
                        file,
                        field.name.span,
                        format!(
                            "property `{}` of `{name}` is declared twice",
                            field.name.name
                        ),
                    )
                    .with_label("declared again"),
                );
                continue;
            }
            fields.insert(
                field.name.name.clone(),
                model::Field {
                    name: field.name.name.clone(),
                    ty,
                    default: field.default.clone(),
                },
            );
        }
        self.event_spans
            .insert(name.clone(), (file, decl.name.span));
        Arc::make_mut(&mut self.schema).events.insert(
            name.clone(),
            model::Event {
                name: name.clone(),
                source: decl.source.value.clone(),
                catalog: decl.catalog,
                fields,
            },
        );
    }

    fn defaults(&mut self, file: FileId, block: &DefaultsBlock) {
        let mut seen: HashMap<String, Span> = HashMap::new();
        for item in &block.items {
            let key = match item {
                DefaultItem::Timezone { .. } => "timezone".to_string(),
                DefaultItem::Cap { .. } => "cap".to_string(),
                DefaultItem::Consent { channel, .. } => format!("consent {}", channel.name),
            };
            if let Some(first) = seen.get(&key) {
                self.report(
                    Diagnostic::new(
                        Code::DuplicateItem,
                        file,
                        item.span(),
                        format!("`{key}` is set twice"),
                    )
                    .with_label("set again")
                    .with_related(file, *first, "first set here"),
                );
                continue;
            }
            seen.insert(key, item.span());
            match item {
                DefaultItem::Timezone { zone, .. } => {
                    let zone = self.timezone(file, zone);
                    Arc::make_mut(&mut self.schema).defaults.timezone = zone;
                }
                DefaultItem::Cap { count, per, span } => {
                    if *count == 0 {
                        self.report(
                            Diagnostic::new(
                                Code::InvalidValue,
                                file,
                                *span,
                                "a cap of 0 stops every send",
                            )
                            .with_label("zero")
                            .with_help("allow at least 1 send, or remove the cap"),
                        );
                    }
                    self.positive_duration(file, per, "the cap's window");
                    Arc::make_mut(&mut self.schema).defaults.cap = Some((*count, *per));
                }
                DefaultItem::Consent {
                    channel, requires, ..
                } => {
                    let lets = [];
                    let scope = Scope::new(file, EventContext::None("consent"), &lets);
                    let ty = self.expr(&scope, requires);
                    self.condition_type(&scope, requires, &ty, "a consent rule");
                    match Channel::from_name(&channel.name) {
                        Some(c) => {
                            Arc::make_mut(&mut self.schema)
                                .defaults
                                .consent
                                .insert(c, requires.clone());
                        }
                        None => self.unknown_channel(file, channel),
                    }
                }
            }
        }
    }

    fn timezone(&mut self, file: FileId, zone: &StrLit) -> Option<chrono_tz::Tz> {
        match chrono_tz::Tz::from_str(&zone.value) {
            Ok(tz) => Some(tz),
            Err(_) => {
                let help = did_you_mean(
                    &zone.value,
                    chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()),
                )
                .unwrap_or_else(|| {
                    "use an IANA name like \"Europe/Paris\" or \"America/New_York\"".into()
                });
                self.report(
                    Diagnostic::new(
                        Code::InvalidTimezone,
                        file,
                        zone.span,
                        format!("unknown time zone `{}`", zone.value),
                    )
                    .with_label("not an IANA time zone")
                    .with_help(help),
                );
                None
            }
        }
    }

    fn positive_duration(&mut self, file: FileId, duration: &Duration, what: &str) {
        if duration.amount == 0 {
            self.report(
                Diagnostic::new(
                    Code::InvalidValue,
                    file,
                    duration.span,
                    format!("{what} is `{duration}`, which is no time at all"),
                )
                .with_label("zero")
                .with_help("write a duration longer than zero, like `1h`"),
            );
        }
    }

    fn unknown_channel(&mut self, file: FileId, channel: &Ident) {
        let help = did_you_mean(&channel.name, Channel::ALL.iter().map(|c| c.name()))
            .unwrap_or_else(|| {
                format!(
                    "channels are {}",
                    one_of(Channel::ALL.iter().map(|c| c.name()))
                )
            });
        self.report(
            Diagnostic::new(
                Code::UnknownChannel,
                file,
                channel.span,
                format!("unknown channel `{}`", channel.name),
            )
            .with_label("not a channel")
            .with_help(help),
        );
    }

    // -----------------------------------------------------------------------------------
    // Moments

    fn moment_file(
        &mut self,
        file: FileId,
        parsed: &Parsed,
        seen_ids: &mut HashMap<String, (FileId, Span)>,
    ) -> Option<model::Moment> {
        let mut moments = Vec::new();
        for item in &parsed.file.items {
            match item {
                Item::Moment(m) => moments.push(m),
                other => {
                    let what = match other {
                        Item::Customer(_) => "`customer`",
                        Item::Event(_) => "`event`",
                        _ => "`defaults`",
                    };
                    self.report(
                        Diagnostic::new(Code::MisplacedItem, file, Span::new(other.span().start, other.span().start + 1).join(first_word(self.text(file), other.span())), format!("{what} belongs in `schema.moment`"))
                            .with_label("schema declaration")
                            .with_help("a campaign file holds one `moment`; declare the data in `schema.moment`"),
                    );
                }
            }
        }
        if moments.is_empty() {
            if !parsed.incomplete {
                self.report(
                    Diagnostic::new(
                        Code::MissingMoment,
                        file,
                        Span::new(0, 0),
                        "no `moment` in this file",
                    )
                    .with_help("a campaign file holds one `moment ID \"Title\" { … }` block"),
                );
            }
            return None;
        }
        for extra in &moments[1..] {
            self.report(
                Diagnostic::new(
                    Code::DuplicateItem,
                    file,
                    extra.id.span,
                    format!("a second moment, `{}`, in one file", extra.id.name),
                )
                .with_label("second moment")
                .with_related(file, moments[0].id.span, "first moment")
                .with_help(format!(
                    "move it to its own file, `{}.moment`",
                    extra.id.name
                )),
            );
        }
        let moment = moments[0];
        // The id and the file name agree.
        let stem = self
            .sources
            .get(file)
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        if stem != moment.id.name {
            self.report(
                Diagnostic::new(
                    Code::IdMismatch,
                    file,
                    moment.id.span,
                    format!("moment `{}` is in file `{stem}.moment`", moment.id.name),
                )
                .with_label("differs from the file name")
                .with_help(format!(
                    "rename the file to `{}.moment`, or the moment to `{stem}`",
                    moment.id.name
                )),
            );
        }
        for m in &moments {
            if let Some((f, span)) = seen_ids.get(&m.id.name) {
                let other = self.sources.get(*f).name();
                self.report(
                    Diagnostic::new(
                        Code::DuplicateId,
                        file,
                        m.id.span,
                        format!("moment id `{}` is used twice", m.id.name),
                    )
                    .with_label("used again")
                    .with_related(*f, *span, format!("also the id of the moment in `{other}`"))
                    .with_help("ids key sends, state and reports: give each moment its own"),
                );
            } else {
                seen_ids.insert(m.id.name.clone(), (file, m.id.span));
            }
        }
        if !self.have_schema {
            return None;
        }
        self.moment(file, moment, parsed.incomplete)
    }

    fn moment(
        &mut self,
        file: FileId,
        moment: &ast::Moment,
        incomplete: bool,
    ) -> Option<model::Moment> {
        let mut triggers = Vec::new();
        let mut messages = Vec::new();
        let mut kpis = Vec::new();
        let mut limit = None;
        let mut quiet = None;
        let mut holdout = 0.0;
        let mut active = None;
        let mut priority = 0;
        let mut rule_seen: HashMap<&'static str, Span> = HashMap::new();
        for item in &moment.items {
            let single = match item {
                MomentItem::Trigger(t) => {
                    triggers.push(t);
                    None
                }
                MomentItem::Message(m) => {
                    messages.push(m);
                    None
                }
                MomentItem::Kpi(k) => {
                    kpis.push(k);
                    None
                }
                MomentItem::Limit { .. } => Some("limit"),
                MomentItem::QuietHours { .. } => Some("quiet hours"),
                MomentItem::Holdout { .. } => Some("holdout"),
                MomentItem::Active { .. } => Some("active"),
                MomentItem::Priority { .. } => Some("priority"),
            };
            if let Some(name) = single {
                if let Some(first) = rule_seen.get(name) {
                    self.report(
                        Diagnostic::new(
                            Code::DuplicateItem,
                            file,
                            item.span(),
                            format!("`{name}` is set twice"),
                        )
                        .with_label("set again")
                        .with_related(file, *first, "first set here")
                        .with_help("keep one"),
                    );
                    continue;
                }
                rule_seen.insert(name, item.span());
            }
            match item {
                MomentItem::Limit { count, per, span } => {
                    if *count == 0 {
                        self.report(
                            Diagnostic::new(
                                Code::InvalidValue,
                                file,
                                *span,
                                "`limit 0` never sends",
                            )
                            .with_label("zero")
                            .with_help("allow at least 1 send, or remove the moment"),
                        );
                    }
                    if let Some(per) = per {
                        self.positive_duration(file, per, "the limit's window");
                    }
                    limit = Some(model::Limit {
                        count: *count,
                        per: *per,
                    });
                }
                MomentItem::QuietHours { from, to, span } => {
                    if from == to {
                        self.report(
                            Diagnostic::new(
                                Code::InvalidValue,
                                file,
                                *span,
                                format!("quiet hours from {from} to {to} are empty"),
                            )
                            .with_label("same start and end")
                            .with_help(
                                "write when quiet hours end, like `quiet hours 21:00 to 08:00`",
                            ),
                        );
                    }
                    quiet = Some((*from, *to));
                }
                MomentItem::Holdout { percent, span } => {
                    if !(0.0..=50.0).contains(percent) {
                        self.report(
                            Diagnostic::new(Code::InvalidValue, file, *span, format!("holdout of {percent}% is outside 0% to 50%"))
                                .with_label("out of range")
                                .with_help("keep a control group of at most half the customers, like `holdout 10%`"),
                        );
                    }
                    holdout = *percent;
                }
                MomentItem::Active { from, until, span } => {
                    // A date that did not parse has been reported already.
                    let parsed = |d: &ast::Date| d.value != chrono::NaiveDate::MIN;
                    if let Some(until) = until.filter(|u| parsed(u) && parsed(from)) {
                        if until.value < from.value {
                            self.report(
                                Diagnostic::new(
                                    Code::InvalidValue,
                                    file,
                                    until.span,
                                    format!(
                                        "`active` ends on {} before it starts on {}",
                                        until.value, from.value
                                    ),
                                )
                                .with_label("before the start")
                                .with_related(file, from.span, "starts here")
                                .with_help("swap the dates"),
                            );
                        }
                    }
                    let _ = span;
                    active = Some((from.value, until.map(|u| u.value)));
                }
                MomentItem::Priority { value, .. } => priority = *value,
                _ => {}
            }
        }
        let what_is_missing = |code: Code, what: &str, example: &str| {
            Diagnostic::new(
                code,
                file,
                moment.id.span,
                format!("moment `{}` has no {what}", moment.id.name),
            )
            .with_label(format!("needs a {what}"))
            .with_help(format!("every moment has exactly one {what}: {example}"))
        };
        for (list_len, code, what, example) in [
            (
                triggers.len(),
                Code::MissingTrigger,
                "trigger",
                "`trigger { on order_completed }`",
            ),
            (
                messages.len(),
                Code::MissingMessage,
                "message",
                "`message email { subject \"…\" body \"…\" }`",
            ),
            (
                kpis.len(),
                Code::MissingKpi,
                "KPI",
                "`kpi \"Repeat rate\" = rate(order_completed within 7d after send)`",
            ),
        ] {
            if list_len == 0 && !incomplete {
                self.report(what_is_missing(code, what, example));
            }
        }
        let spans: [(Vec<Span>, &str); 3] = [
            (triggers.iter().map(|t| t.span).collect(), "trigger"),
            (messages.iter().map(|m| m.span).collect(), "message"),
            (kpis.iter().map(|k| k.span).collect(), "KPI"),
        ];
        for (list, what) in spans {
            for extra in list.iter().skip(1) {
                self.report(
                    Diagnostic::new(
                        Code::DuplicateItem,
                        file,
                        Span::new(extra.start, extra.start + keyword_len(what)),
                        format!("a second {what} in moment `{}`", moment.id.name),
                    )
                    .with_label(format!("second {what}"))
                    .with_related(file, list[0], format!("first {what}"))
                    .with_help(format!(
                        "a moment has exactly one {what}; make another moment for the other one"
                    )),
                );
            }
        }

        let mut lets: Vec<LetInfo> = Vec::new();
        let trigger = triggers
            .first()
            .and_then(|t| self.trigger(file, t, &mut lets));
        let schema = Arc::clone(&self.schema);
        let event_context = match trigger.as_ref().map(|t| &t.source) {
            Some(model::TriggerSource::Event { event, .. }) => match schema.events.get(event) {
                Some(e) => EventContext::Event(e),
                None => EventContext::None("unknown"),
            },
            Some(model::TriggerSource::Every { .. }) => EventContext::None("schedule"),
            Some(_) => EventContext::None("date"),
            None => EventContext::None("unknown"),
        };
        let scope = Scope::new(file, event_context, &lets);
        let message = messages
            .first()
            .and_then(|m| self.message(&scope, moment, m));
        let kpi = kpis.first().and_then(|k| self.kpi(&scope, k));
        for info in &lets {
            if !info.used.get() {
                self.report(
                    Diagnostic::new(
                        Code::UnusedLet,
                        file,
                        info.span,
                        format!("`{}` is never used", info.name),
                    )
                    .with_label("unused")
                    .with_help("use it in a condition or the message, or remove it"),
                );
            }
        }
        Some(model::Moment {
            id: moment.id.name.clone(),
            title: moment.title.value.clone(),
            file,
            trigger: trigger?,
            message: message?,
            kpi: kpi?,
            limit,
            quiet_hours: quiet,
            holdout_percent: holdout,
            active,
            priority,
        })
    }

    fn trigger(
        &mut self,
        file: FileId,
        trigger: &ast::Trigger,
        lets: &mut Vec<LetInfo>,
    ) -> Option<model::Trigger> {
        // The source first: it decides what `event` means in every clause.
        let sources: Vec<&TriggerSource> = trigger
            .clauses
            .iter()
            .filter_map(|c| match c {
                TriggerClause::On(s) => Some(s),
                _ => None,
            })
            .collect();
        let Some(source) = sources.first() else {
            self.report(
                Diagnostic::new(Code::MissingTrigger, file, Span::new(trigger.span.start, trigger.span.start + "trigger".len()), "the trigger says nothing about when it fires")
                    .with_label("no `on` or `every`")
                    .with_help("start it with `on EVENT`, `on anniversary of customer.DATE at 09:00`, `on 3d before customer.DATE at 10:00` or `every \"0 9 * * *\"`"),
            );
            return None;
        };
        for extra in &sources[1..] {
            self.report(
                Diagnostic::new(
                    Code::DuplicateItem,
                    file,
                    extra.span(),
                    "a trigger fires on one thing only",
                )
                .with_label("second `on`/`every`")
                .with_related(file, source.span(), "first one")
                .with_help("make another moment for the other trigger"),
            );
        }
        let source_model = self.trigger_source(file, source);
        let schema = Arc::clone(&self.schema);
        let (event_context, on_event) = match &source_model {
            Some(model::TriggerSource::Event { event, catalog }) => {
                match schema.events.get(event) {
                    Some(e) => (EventContext::Event(e), !catalog),
                    None => (EventContext::None("unknown"), false),
                }
            }
            Some(model::TriggerSource::Every { .. }) => (EventContext::None("schedule"), false),
            Some(_) => (EventContext::None("date"), false),
            None => (EventContext::None("unknown"), false),
        };
        let mut conditions = Vec::new();
        let mut unless = Vec::new();
        let mut wait: Option<Duration> = None;
        let mut wait_span = None;
        let mut guarded: Vec<String> = Vec::new();
        let mut let_values = Vec::new();
        for clause in &trigger.clauses {
            match clause {
                TriggerClause::On(_) => {}
                TriggerClause::Let { name, value, span } => {
                    let ty = {
                        let mut scope = Scope::new(file, event_context, lets);
                        scope.crosses = false;
                        scope.guarded = guarded.clone();
                        self.expr(&scope, value)
                    };
                    let reserved = ["customer", "event", "now", "send", "moment"];
                    if reserved.contains(&name.name.as_str())
                        || schema.events.contains_key(&name.name)
                    {
                        self.report(
                            Diagnostic::new(
                                Code::DuplicateName,
                                file,
                                name.span,
                                format!(
                                    "`{}` is already a name: a `let` cannot take it",
                                    name.name
                                ),
                            )
                            .with_label("taken")
                            .with_help("choose another name"),
                        );
                    } else if let Some(first) = lets.iter().find(|l| l.name == name.name) {
                        self.report(
                            Diagnostic::new(
                                Code::DuplicateName,
                                file,
                                name.span,
                                format!("`{}` is defined twice", name.name),
                            )
                            .with_label("defined again")
                            .with_related(
                                file,
                                first.span,
                                "first defined here",
                            ),
                        );
                    } else {
                        let_values.push(model::Let {
                            name: name.name.clone(),
                            value: value.clone(),
                            ty: ty.clone(),
                        });
                        lets.push(LetInfo {
                            name: name.name.clone(),
                            ty,
                            span: name.span,
                            used: Cell::new(false),
                        });
                    }
                    let _ = span;
                }
                TriggerClause::Where { condition, .. } => {
                    let mut scope = Scope::new(file, event_context, lets);
                    scope.crosses = on_event;
                    scope.guarded = guarded.clone();
                    let ty = self.expr(&scope, condition);
                    self.condition_type(&scope, condition, &ty, "a `where` condition");
                    guarded.extend(guards(condition));
                    conditions.push(condition.clone());
                }
                TriggerClause::Unless {
                    event,
                    condition,
                    within,
                    ..
                } => {
                    let unless_event = schema.events.get(&event.name);
                    match unless_event {
                        None => self.unknown_event(file, event, &schema),
                        Some(e) if e.catalog => self.report(
                            Diagnostic::new(Code::CatalogEvent, file, event.span, format!("`{}` is a catalog event: it happens to no customer in particular", event.name))
                                .with_label("catalog event")
                                .with_help("`unless` waits for an event of the customer, like `order_completed`"),
                        ),
                        Some(_) => {}
                    }
                    if let Some(condition) = condition {
                        let mut scope = Scope::new(file, event_context, lets);
                        scope.aggregated = unless_event;
                        scope.guarded = guarded.clone();
                        let ty = self.expr(&scope, condition);
                        self.condition_type(
                            &scope,
                            condition,
                            &ty,
                            "an `unless … where` condition",
                        );
                    }
                    if let Some(within) = within {
                        self.positive_duration(file, within, "the `unless` window");
                    }
                    unless.push(model::Unless {
                        event: event.name.clone(),
                        condition: condition.clone(),
                        within: *within,
                    });
                }
                TriggerClause::Wait { delay, span } => {
                    if let Some(first) = wait_span {
                        self.report(
                            Diagnostic::new(
                                Code::DuplicateItem,
                                file,
                                *span,
                                "`wait` is set twice",
                            )
                            .with_label("set again")
                            .with_related(
                                file,
                                first,
                                "first set here",
                            ),
                        );
                    }
                    wait_span = Some(*span);
                    self.positive_duration(file, delay, "`wait`");
                    wait = Some(*delay);
                }
            }
        }
        Some(model::Trigger {
            source: source_model?,
            lets: let_values,
            conditions,
            unless,
            wait,
        })
    }

    fn trigger_source(
        &mut self,
        file: FileId,
        source: &TriggerSource,
    ) -> Option<model::TriggerSource> {
        match source {
            TriggerSource::Event { event, .. } => match self.schema.events.get(&event.name) {
                Some(e) => Some(model::TriggerSource::Event {
                    event: e.name.clone(),
                    catalog: e.catalog,
                }),
                None => {
                    let schema = Arc::clone(&self.schema);
                    self.unknown_event(file, event, &schema);
                    None
                }
            },
            TriggerSource::Anniversary { date, at, .. } => {
                let name = self.date_trait(file, date, "an anniversary")?;
                Some(model::TriggerSource::Anniversary {
                    date_trait: name,
                    at: *at,
                })
            }
            TriggerSource::Offset {
                offset,
                direction,
                date,
                at,
                ..
            } => {
                let name = self.date_trait(file, date, "this trigger")?;
                Some(model::TriggerSource::Offset {
                    offset: *offset,
                    direction: *direction,
                    date_trait: name,
                    at: *at,
                })
            }
            TriggerSource::Every { cron, zone, .. } => {
                let parsed = match CronExpr::parse(&cron.value) {
                    Ok(c) => Some(c),
                    Err(error) => {
                        let text = self.text(file);
                        let start = parse::value_offset_to_source(text, cron, error.range.start);
                        let end = parse::value_offset_to_source(text, cron, error.range.end)
                            .max(start + 1);
                        self.report(
                            Diagnostic::new(
                                Code::InvalidCron,
                                file,
                                Span::new(start, end.min(cron.span.end)),
                                format!("invalid cron expression: {}", error.message),
                            )
                            .with_label("here")
                            .with_help_opt(error.help),
                        );
                        None
                    }
                };
                let zone = match zone {
                    Some(z) => Some(self.timezone(file, z)?),
                    None => None,
                };
                Some(model::TriggerSource::Every {
                    cron: parsed?,
                    zone,
                })
            }
        }
    }

    /// `customer.D` holding a date or a date and time.
    fn date_trait(&mut self, file: FileId, path: &Path, what: &str) -> Option<String> {
        let lets = [];
        let scope = Scope::new(file, EventContext::None("date"), &lets);
        if path.segments.first().map(|s| s.name.as_str()) != Some("customer")
            || path.segments.len() != 2
        {
            self.report(
                Diagnostic::new(
                    Code::TypeMismatch,
                    file,
                    path.span,
                    format!("{what} needs a date trait of the customer, not `{path}`"),
                )
                .with_label("expected `customer.SOME_DATE`")
                .with_help("name a `date` or `datetime` trait, like `customer.birthday`"),
            );
            return None;
        }
        let ty = self.path(&scope, path);
        if !ty.is_moment_in_time() {
            self.report(
                Diagnostic::new(
                    Code::TypeMismatch,
                    file,
                    path.span,
                    format!("`{path}` is {}, but {what} needs a date", ty.describe()),
                )
                .with_label("not a date")
                .with_help("name a trait declared as `date` or `datetime`"),
            );
            return None;
        }
        if ty.is_unknown() {
            return None;
        }
        Some(path.segments[1].name.clone())
    }

    fn unknown_event(&mut self, file: FileId, event: &Ident, schema: &model::Schema) {
        let help = did_you_mean(&event.name, schema.events.keys().map(String::as_str))
            .unwrap_or_else(|| {
                if schema.events.is_empty() {
                    "declare it in `schema.moment`: `event name \"Source Name\" { … }`".to_string()
                } else {
                    format!(
                        "the schema declares {}",
                        one_of(schema.events.keys().map(String::as_str))
                    )
                }
            });
        self.report(
            Diagnostic::new(
                Code::UnknownEvent,
                file,
                event.span,
                format!("unknown event `{}`", event.name),
            )
            .with_label("not in the schema")
            .with_help(help),
        );
    }

    /// A condition is true or false, and present.
    fn condition_type(&mut self, scope: &Scope, expr: &Expr, ty: &Ty, what: &str) {
        if !ty.is_bool() {
            self.report(
                Diagnostic::new(
                    Code::TypeMismatch,
                    scope.file,
                    expr.span,
                    format!(
                        "{what} must be true or false, but this is {}",
                        ty.describe()
                    ),
                )
                .with_label(ty.clone().required().describe())
                .with_help("compare it with something, like `>= 20` or `== \"gold\"`"),
            );
        } else {
            self.require_present(scope, expr, ty);
        }
    }

    // -----------------------------------------------------------------------------------
    // Message

    fn message(
        &mut self,
        scope: &Scope,
        moment: &ast::Moment,
        message: &ast::Message,
    ) -> Option<model::Message> {
        let file = scope.file;
        let channel = Channel::from_name(&message.channel.name);
        if channel.is_none() {
            self.unknown_channel(file, &message.channel);
        }
        let mut fields = BTreeMap::new();
        let mut seen: HashMap<&str, Span> = HashMap::new();
        let mut template_scope = scope.clone();
        template_scope.template = true;
        for field in &message.fields {
            if let Some(first) = seen.get(field.name.name.as_str()) {
                self.report(
                    Diagnostic::new(
                        Code::DuplicateName,
                        file,
                        field.name.span,
                        format!("field `{}` is set twice", field.name.name),
                    )
                    .with_label("set again")
                    .with_related(file, *first, "first set here"),
                );
                continue;
            }
            seen.insert(&field.name.name, field.name.span);
            if let Some(channel) = channel {
                if !channel.fields().contains(&field.name.name.as_str()) {
                    let help = did_you_mean(&field.name.name, channel.fields().iter().copied())
                        .unwrap_or_else(|| {
                            format!(
                                "{} messages have {}",
                                channel.name(),
                                one_of(channel.fields().iter().copied())
                            )
                        });
                    self.report(
                        Diagnostic::new(
                            Code::UnknownField,
                            file,
                            field.name.span,
                            format!(
                                "`{}` is not a field of {} messages",
                                field.name.name,
                                channel.name()
                            ),
                        )
                        .with_label("unknown field")
                        .with_help(help),
                    );
                    continue;
                }
            }
            self.template(&template_scope, moment, channel, field);
            fields.insert(field.name.name.clone(), field.template.value.clone());
        }
        if let Some(channel) = channel {
            for required in channel.required_fields() {
                if !seen.contains_key(required) {
                    self.report(
                        Diagnostic::new(
                            Code::MissingField,
                            file,
                            Span::new(message.span.start, message.channel.span.end),
                            format!("{} message has no `{required}`", channel.name()),
                        )
                        .with_label(format!("needs `{required}`"))
                        .with_help(format!(
                            "add `{required} \"…\"`; {} messages need {}",
                            channel.name(),
                            crate::diagnostic::all_of(channel.required_fields().iter().copied())
                        )),
                    );
                }
            }
        }
        Some(model::Message {
            channel: channel?,
            fields,
        })
    }

    fn template(
        &mut self,
        scope: &Scope,
        moment: &ast::Moment,
        channel: Option<Channel>,
        field: &MessageField,
    ) {
        let file = scope.file;
        let text = self.text(file);
        let literal = &field.template;
        let value = literal.value.as_str();
        let source_span = |from: usize, to: usize| {
            let start = parse::value_offset_to_source(text, literal, from);
            let end = parse::value_offset_to_source(text, literal, to).max(start + 1);
            Span::new(start, end)
        };
        // Curly quotes inside `{{ … }}` or `{% … %}` break the template.
        let mut smart = false;
        for block in template_blocks(value) {
            if let Some(offset) =
                value[block.clone()].find(['\u{201C}', '\u{201D}', '\u{2018}', '\u{2019}'])
            {
                let at = block.start + offset;
                let c = value[at..].chars().next().map_or(1, char::len_utf8);
                self.report(
                    Diagnostic::new(
                        Code::TemplateSmartQuote,
                        file,
                        source_span(at, at + c),
                        "curly quote inside a template expression",
                    )
                    .with_label("curly quote")
                    .with_help("use straight quotes inside `{{ … }}`: `default('friend')`"),
                );
                smart = true;
            }
        }
        if smart {
            return;
        }
        let env = template_env();
        let template = match env.template_from_str(value) {
            Ok(t) => t,
            Err(error) => {
                let range = error.range().unwrap_or_else(|| {
                    let line = error.line().unwrap_or(1).saturating_sub(1);
                    let start = value
                        .split_inclusive('\n')
                        .take(line)
                        .map(str::len)
                        .sum::<usize>();
                    start..start
                });
                let detail = error.detail().unwrap_or("not understood").to_string();
                self.report(
                    Diagnostic::new(Code::TemplateSyntax, file, source_span(range.start, range.end), format!("template does not parse: {detail}"))
                        .with_label("here")
                        .with_help("variables go in `{{ … }}`, like `{{ customer.first_name | default('there') }}`"),
                );
                return;
            }
        };
        let mut variables: Vec<String> = template.undeclared_variables(true).into_iter().collect();
        variables.sort();
        for variable in &variables {
            let at = value.find(variable.as_str()).unwrap_or(0);
            let mut offset = at;
            let segments: Vec<Ident> = variable
                .split('.')
                .map(|s| {
                    let start = offset;
                    offset += s.len() + 1;
                    Ident {
                        name: s.to_string(),
                        span: source_span(start, start + s.len()),
                    }
                })
                .collect();
            let path = Path {
                span: source_span(at, at + variable.len()),
                segments,
            };
            let ty = self.path(scope, &path);
            if ty.optional && !variables_guarded(value, variable) {
                for block in template_blocks(value) {
                    let inside = &value[block.clone()];
                    if inside.starts_with("{{")
                        && contains_path(inside, variable)
                        && !inside.contains("default")
                        && !inside.contains("| d(")
                        && !inside.contains("|d(")
                    {
                        self.report(
                            Diagnostic::new(Code::TemplateOptional, file, source_span(block.start, block.end), format!("`{variable}` may be missing, and the message would show nothing in its place"))
                                .with_label("no default")
                                .with_help(format!("write `{{{{ {variable} | default('…') }}}}`")),
                        );
                    }
                }
            }
        }
        match (channel, field.name.name.as_str()) {
            (Some(Channel::Sms), "text") => {
                let literal_text = strip_template(value);
                let gsm = literal_text.chars().all(is_gsm7);
                let length: usize = if gsm {
                    literal_text
                        .chars()
                        .map(|c| if is_gsm7_extended(c) { 2 } else { 1 })
                        .sum()
                } else {
                    literal_text.chars().count()
                };
                let limit = if gsm { 160 } else { 70 };
                if length > limit {
                    self.report(
                        Diagnostic::new(Code::SmsLength, file, literal.span, format!("sms text is at least {length} characters, more than one segment ({limit})"))
                            .with_label("longer than one segment")
                            .with_help(if gsm {
                                "shorten it: each further segment is billed".to_string()
                            } else {
                                "a character outside the GSM-7 alphabet (an emoji, a curly quote) makes the limit 70: replace it or shorten the text".to_string()
                            }),
                    );
                }
            }
            (Some(Channel::Webhook), name) => {
                let context = sample_context(scope, moment, &self.schema);
                let rendered = template.render(minijinja::Value::from_serialize(&context));
                let Ok(rendered) = rendered else { return };
                match name {
                    "body" => {
                        if let Err(error) = serde_json::from_str::<serde_json::Value>(&rendered) {
                            let line = error.line().saturating_sub(1);
                            let start = value
                                .split_inclusive('\n')
                                .take(line)
                                .map(str::len)
                                .sum::<usize>();
                            let end = value[start..].find('\n').map_or(value.len(), |i| start + i);
                            let detail = error.to_string();
                            let detail = detail
                                .split(" at line")
                                .next()
                                .unwrap_or(&detail)
                                .to_string();
                            self.report(
                                Diagnostic::new(Code::WebhookBody, file, source_span(start, end), format!("webhook body is not JSON once rendered: {detail}"))
                                    .with_label("here, or just before")
                                    .with_help("put text values in quotes, `\"{{ customer.email }}\"`, or use `| tojson`"),
                            );
                        }
                    }
                    "url"
                        if !(rendered.starts_with("https://")
                            || rendered.starts_with("http://")) =>
                    {
                        self.report(
                            Diagnostic::new(Code::InvalidValue, file, literal.span, "webhook url must start with `https://` or `http://`")
                                .with_label("not a web address")
                                .with_help("write the full address of the partner's endpoint, like \"https://partner.example/api/gifts\""),
                        );
                    }
                    "method" => {
                        let methods = ["POST", "PUT", "PATCH", "GET", "DELETE"];
                        if !methods.contains(&rendered.as_str()) {
                            let help = did_you_mean(&rendered.to_uppercase(), methods)
                                .unwrap_or_else(|| format!("use {}", one_of(methods)));
                            self.report(
                                Diagnostic::new(
                                    Code::InvalidValue,
                                    file,
                                    literal.span,
                                    format!("`{rendered}` is not an HTTP method"),
                                )
                                .with_label("unknown method")
                                .with_help(help),
                            );
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    // -----------------------------------------------------------------------------------
    // KPI

    fn kpi(&mut self, scope: &Scope, kpi: &ast::Kpi) -> Option<model::Kpi> {
        let file = scope.file;
        let ExprKind::Aggregate(aggregate) = &kpi.measure.kind else {
            self.report(
                Diagnostic::new(Code::KpiForm, file, kpi.measure.span, "a KPI measures what customers do after a send")
                    .with_label("not a measure")
                    .with_help("write `rate(EVENT within 7d after send)`, `sum(EVENT.field within 7d after send)`, `count(…)` or `avg(…)`"),
            );
            return None;
        };
        let allowed = [
            AggregateFn::Rate,
            AggregateFn::Sum,
            AggregateFn::Count,
            AggregateFn::Avg,
        ];
        let mut ok = true;
        if !allowed.contains(&aggregate.function) {
            self.report(
                Diagnostic::new(
                    Code::KpiForm,
                    file,
                    aggregate.function_span,
                    format!("`{}` is not a KPI measure", aggregate.function.name()),
                )
                .with_label("not a KPI measure")
                .with_help("a KPI is `rate(…)`, `sum(…)`, `count(…)` or `avg(…)`"),
            );
            ok = false;
        }
        if aggregate.across_customers {
            let text = self.text(file);
            let across = text
                .get(kpi.measure.span.range())
                .and_then(|m| m.find("across"))
                .map(|i| {
                    let start = kpi.measure.span.start + i;
                    let end = text[start..]
                        .find("customers")
                        .map_or(start + 6, |j| start + j + "customers".len());
                    Span::new(start, end)
                })
                .unwrap_or(kpi.measure.span);
            self.report(
                Diagnostic::new(
                    Code::KpiForm,
                    file,
                    across,
                    "a KPI measures the customer who got the message, not `across customers`",
                )
                .with_label("across customers")
                .with_help("remove `across customers`"),
            );
            ok = false;
        }
        let window = match &aggregate.within {
            Some(w) if w.after_send => Some(w.duration),
            Some(w) => {
                self.report(
                    Diagnostic::new(Code::KpiForm, file, w.span, format!("a KPI counts what happens after the send: write `within {} after send`", w.duration))
                        .with_label("missing `after send`")
                        .with_help(format!("write `within {} after send`", w.duration)),
                );
                None
            }
            None => {
                self.report(
                    Diagnostic::new(
                        Code::KpiForm,
                        file,
                        kpi.measure.span,
                        "a KPI needs a window: how long after the send to look",
                    )
                    .with_label("no `within … after send`")
                    .with_help("add `within 7d after send` inside the parentheses"),
                );
                None
            }
        };
        if let Some(window) = &window {
            self.positive_duration(file, window, "the KPI window");
        }
        let mut kpi_scope = scope.clone();
        kpi_scope.kpi = true;
        let ty = self.aggregate(&kpi_scope, aggregate, kpi.measure.span, true);
        if let Some(goal) = &kpi.goal {
            let goal_ty = self.expr(scope, &goal.target);
            if !goal_ty.is_numeric() {
                self.report(
                    Diagnostic::new(
                        Code::TypeMismatch,
                        file,
                        goal.target.span,
                        format!("a goal is a number, not {}", goal_ty.describe()),
                    )
                    .with_label("not a number"),
                );
            } else if aggregate.function == AggregateFn::Rate {
                let plain = match &goal.target.kind {
                    ExprKind::Literal(Literal::Int(n)) => Some(*n as f64),
                    ExprKind::Literal(Literal::Float(n)) => Some(*n),
                    _ => None,
                };
                if let Some(n) = plain {
                    self.report(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            file,
                            goal.target.span,
                            format!("a rate's goal is a percentage, not `{}`", n),
                        )
                        .with_label("no percent sign")
                        .with_help(format!("write `{}%`", if n <= 1.0 { n * 100.0 } else { n })),
                    );
                }
            } else if let ExprKind::Literal(Literal::Percent(_)) = goal.target.kind {
                self.report(
                    Diagnostic::new(
                        Code::TypeMismatch,
                        file,
                        goal.target.span,
                        format!(
                            "a percentage goal fits a `rate`, but this KPI is a `{}`",
                            aggregate.function.name()
                        ),
                    )
                    .with_label("a percentage")
                    .with_help("write the goal as a plain number"),
                );
            }
        }
        let _ = ty;
        if !ok {
            return None;
        }
        Some(model::Kpi {
            title: kpi.title.value.clone(),
            function: aggregate.function,
            event: aggregate.event.name.clone(),
            field: aggregate.field.iter().map(|i| i.name.clone()).collect(),
            condition: aggregate.condition.clone(),
            window: window?,
            goal: kpi.goal.clone(),
        })
    }

    // -----------------------------------------------------------------------------------
    // Expressions

    /// The type of an expression, reporting what does not fit.
    fn expr(&mut self, scope: &Scope, expr: &Expr) -> Ty {
        match &expr.kind {
            ExprKind::Literal(literal) => Ty::new(match literal {
                Literal::Int(_) => TypeKind::Int,
                Literal::Float(_) | Literal::Percent(_) => TypeKind::Number,
                Literal::Text(_) => TypeKind::Text,
                Literal::Bool(_) => TypeKind::Bool,
                Literal::None => return Ty::new(TypeKind::Null).optional(),
                Literal::Duration(_) => TypeKind::Duration,
                Literal::Date(_) => TypeKind::Date,
                Literal::DateTime(_) => TypeKind::DateTime,
                Literal::Time(_) => TypeKind::Time,
            }),
            ExprKind::List(items) => {
                let mut element = Ty::unknown();
                for item in items {
                    let ty = self.expr(scope, item);
                    if element.is_unknown() {
                        element = ty;
                    } else if !ty.comparable(&element) {
                        self.report(
                            Diagnostic::new(
                                Code::TypeMismatch,
                                scope.file,
                                item.span,
                                format!(
                                    "a list holds one kind of value: this is {}, the first is {}",
                                    ty.describe(),
                                    element.describe()
                                ),
                            )
                            .with_label(ty.describe()),
                        );
                    }
                }
                Ty::list_of(element)
            }
            ExprKind::Path(path) => self.path(scope, path),
            ExprKind::Unary(op, operand) => {
                let ty = self.expr(scope, operand);
                let ty = self.require_present(scope, operand, &ty);
                match op {
                    UnaryOp::Not => {
                        if !ty.is_bool() {
                            self.mismatch(scope, operand, &ty, "`not` needs true or false");
                        }
                        Ty::new(TypeKind::Bool)
                    }
                    UnaryOp::Neg => {
                        if !(ty.is_numeric() || ty.kind == TypeKind::Duration) {
                            self.mismatch(scope, operand, &ty, "`-` needs a number");
                            return Ty::unknown();
                        }
                        ty
                    }
                }
            }
            ExprKind::Binary(op, left, right) => self.binary(scope, *op, left, right, expr.span),
            ExprKind::Call { function, args } => self.call(scope, function, args, expr.span),
            ExprKind::Aggregate(aggregate) => {
                if scope.kpi {
                    self.report(
                        Diagnostic::new(
                            Code::KpiForm,
                            scope.file,
                            expr.span,
                            "a KPI condition cannot hold another aggregate",
                        )
                        .with_label("an aggregate inside the KPI")
                        .with_help("a KPI condition reads one event at a time: compare its properties with `event.…`, `send.…` or `customer.…`"),
                    );
                    return Ty::unknown();
                }
                self.aggregate(scope, aggregate, expr.span, false)
            }
        }
    }

    fn mismatch(&mut self, scope: &Scope, expr: &Expr, ty: &Ty, message: &str) {
        if ty.is_unknown() {
            return;
        }
        self.report(
            Diagnostic::new(
                Code::TypeMismatch,
                scope.file,
                expr.span,
                format!("{message}, but this is {}", ty.describe()),
            )
            .with_label(ty.clone().required().describe()),
        );
    }

    /// A value about to be used (in arithmetic, a comparison, a call): it must not be
    /// missing, unless a guard says so. Returns the type without the `?`.
    fn require_present(&mut self, scope: &Scope, expr: &Expr, ty: &Ty) -> Ty {
        if ty.optional && !matches!(ty.kind, TypeKind::Null) {
            if let ExprKind::Path(path) = &expr.kind {
                let name = path.to_string();
                if !scope.guarded.contains(&name) {
                    self.report(
                        Diagnostic::new(Code::OptionalUnguarded, scope.file, expr.span, format!("`{name}` may be missing"))
                            .with_label("may be missing")
                            .with_help(format!("give a fallback with `default({name}, …)`, or guard it: `{name} != none and …`")),
                    );
                }
            }
        }
        ty.clone().required()
    }

    fn binary(&mut self, scope: &Scope, op: BinaryOp, left: &Expr, right: &Expr, span: Span) -> Ty {
        use TypeKind::*;
        let left_ty = self.expr(scope, left);
        // `x != none and x > 3`: the right side knows `x` is there.
        let right_ty = if op == BinaryOp::And {
            let mut narrowed = scope.clone();
            narrowed.guarded.extend(guards(left));
            self.expr(&narrowed, right)
        } else {
            self.expr(scope, right)
        };
        let bool_ty = Ty::new(Bool);
        match op {
            BinaryOp::And | BinaryOp::Or => {
                for (side, ty) in [(left, &left_ty), (right, &right_ty)] {
                    if !ty.is_bool() {
                        self.mismatch(
                            scope,
                            side,
                            ty,
                            &format!("`{}` joins conditions that are true or false", op.symbol()),
                        );
                    } else if op == BinaryOp::Or || std::ptr::eq(side, left) {
                        self.require_present(scope, side, ty);
                    } else {
                        let mut narrowed = scope.clone();
                        narrowed.guarded.extend(guards(left));
                        self.require_present(&narrowed, side, ty);
                    }
                }
                bool_ty
            }
            BinaryOp::Eq | BinaryOp::Ne => {
                if !left_ty.comparable(&right_ty) {
                    self.cannot_compare(scope, op, left, &left_ty, right, &right_ty, span);
                }
                bool_ty
            }
            BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Crosses => {
                let l = self.require_present(scope, left, &left_ty);
                let r = self.require_present(scope, right, &right_ty);
                if op == BinaryOp::Crosses {
                    if !scope.crosses && matches!(scope.event, EventContext::Event(e) if e.catalog)
                    {
                        self.report(
                            Diagnostic::new(Code::CrossesMisplaced, scope.file, span, "`crosses` needs the customer's own event, but a catalog event belongs to no customer")
                                .with_label("nothing to cross with")
                                .with_help("compare the value itself, like `count(…) >= 20`; `crosses` works in `on EVENT` triggers of the customer's events"),
                        );
                    } else if !scope.crosses {
                        self.report(
                            Diagnostic::new(Code::CrossesMisplaced, scope.file, span, "`crosses` only works in the `where` of an `on EVENT` trigger")
                                .with_label("no event to cross with")
                                .with_help("`crosses` compares the value just before the trigger event with the value with it; other triggers have no such event"),
                        );
                    } else if !(l.is_numeric() && r.is_numeric()) {
                        self.cannot_compare(scope, op, left, &l, right, &r, span);
                    } else if !reads_events(left) {
                        self.report(
                            Diagnostic::new(Code::CrossesMisplaced, scope.file, left.span, "`crosses` needs a value the trigger event changes: an aggregate of the customer's events")
                                .with_label("the same just before the event and with it")
                                .with_help("write the aggregate itself, like `sum(order_completed.total) crosses 1000`; a `let` or a trait is one value, with nothing to cross"),
                        );
                    }
                } else if !l.orderable(&r) {
                    self.cannot_compare(scope, op, left, &l, right, &r, span);
                }
                bool_ty
            }
            BinaryOp::In | BinaryOp::Contains => {
                let l = self.require_present(scope, left, &left_ty);
                let r = self.require_present(scope, right, &right_ty);
                let (item, item_expr, collection, collection_expr) = if op == BinaryOp::In {
                    (&l, left, &r, right)
                } else {
                    (&r, right, &l, left)
                };
                let fits = match &collection.kind {
                    List(element) => item.comparable(element),
                    Text | Timezone => item.is_text(),
                    Unknown => true,
                    _ => false,
                };
                if !fits {
                    let message = match &collection.kind {
                        List(element) => format!(
                            "`{}` looks for {} in {}, but this is {}",
                            op.symbol(),
                            element.describe(),
                            collection.describe(),
                            item.describe()
                        ),
                        _ => format!(
                            "`{}` needs a list or text to look in, but this is {}",
                            op.symbol(),
                            collection.describe()
                        ),
                    };
                    let at = if matches!(collection.kind, List(_)) {
                        item_expr
                    } else {
                        collection_expr
                    };
                    self.report(
                        Diagnostic::new(Code::TypeMismatch, scope.file, at.span, message)
                            .with_label("does not fit"),
                    );
                }
                bool_ty
            }
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div => {
                let l = self.require_present(scope, left, &left_ty);
                let r = self.require_present(scope, right, &right_ty);
                let result = match (op, &l.kind, &r.kind) {
                    (_, Unknown, _) | (_, _, Unknown) => Some(Unknown),
                    (BinaryOp::Div, Int | Number, Int | Number) => Some(Number),
                    (_, Int, Int) => Some(Int),
                    (_, Int | Number, Int | Number) => Some(Number),
                    (BinaryOp::Add, Text, Text) => Some(Text),
                    (BinaryOp::Add | BinaryOp::Sub, DateTime, Duration) => Some(DateTime),
                    (BinaryOp::Add, Duration, DateTime) => Some(DateTime),
                    (BinaryOp::Add | BinaryOp::Sub, Date, Duration) => Some(Date),
                    (BinaryOp::Sub, DateTime, DateTime) => Some(Duration),
                    (BinaryOp::Add | BinaryOp::Sub, Duration, Duration) => Some(Duration),
                    (BinaryOp::Mul, Duration, Int | Number)
                    | (BinaryOp::Mul, Int | Number, Duration) => Some(Duration),
                    (BinaryOp::Div, Duration, Int | Number) => Some(Duration),
                    _ => None,
                };
                match result {
                    Some(kind) => Ty::new(kind),
                    None => {
                        self.report(
                            Diagnostic::new(
                                Code::TypeMismatch,
                                scope.file,
                                span,
                                format!("cannot use `{}` on {} and {}", op.symbol(), l.describe(), r.describe()),
                            )
                            .with_label(format!("{} `{}` {}", l.describe(), op.symbol(), r.describe()))
                            .with_help("arithmetic works on numbers, and on a date or date and time with a duration"),
                        );
                        Ty::unknown()
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn cannot_compare(
        &mut self,
        scope: &Scope,
        op: BinaryOp,
        left: &Expr,
        l: &Ty,
        right: &Expr,
        r: &Ty,
        span: Span,
    ) {
        if l.is_unknown() || r.is_unknown() {
            return;
        }
        let text = self.text(scope.file);
        let name = |e: &Expr| {
            let written = text.get(e.span.range()).unwrap_or("").trim();
            if !written.is_empty() && written.len() <= 30 && !written.contains('\n') {
                format!("`{written}`")
            } else {
                "this".to_string()
            }
        };
        let help = match (&l.kind, &r.kind) {
            (TypeKind::Date, TypeKind::DateTime) | (TypeKind::DateTime, TypeKind::Date) => {
                "turn the date and time into a date with `date(…)`".to_string()
            }
            (TypeKind::Text, TypeKind::Int | TypeKind::Number)
            | (TypeKind::Int | TypeKind::Number, TypeKind::Text) => {
                let literal = |e: &Expr| match &e.kind {
                    ExprKind::Literal(Literal::Int(n)) => {
                        Some(format!("write `\"{n}\"` to compare with text"))
                    }
                    ExprKind::Literal(Literal::Float(n)) => {
                        Some(format!("write `\"{n}\"` to compare with text"))
                    }
                    ExprKind::Literal(Literal::Text(t)) if t.parse::<f64>().is_ok() => {
                        Some(format!("remove the quotes to compare with a number: `{t}`"))
                    }
                    _ => None,
                };
                literal(right).or_else(|| literal(left)).unwrap_or_else(|| {
                    "text never equals a number: compare values of the same kind".to_string()
                })
            }
            _ => "compare values of the same kind".to_string(),
        };
        self.report(
            Diagnostic::new(
                Code::TypeMismatch,
                scope.file,
                span,
                format!(
                    "cannot compare {} with {} using `{}`",
                    l.describe(),
                    r.describe(),
                    op.symbol()
                ),
            )
            .with_label(format!(
                "{} is {}, {} is {}",
                name(left),
                l.describe(),
                name(right),
                r.describe()
            ))
            .with_help(help),
        );
    }

    fn call(&mut self, scope: &Scope, function: &Ident, args: &[Expr], span: Span) -> Ty {
        use TypeKind::*;
        let Some((_, signature)) = FUNCTIONS.iter().find(|(n, _)| *n == function.name) else {
            let names = FUNCTIONS
                .iter()
                .map(|(n, _)| *n)
                .chain(AggregateFn::ALL.iter().map(|(n, _)| *n));
            let help = did_you_mean(&function.name, names).unwrap_or_else(|| {
                format!(
                    "functions are {}",
                    one_of(FUNCTIONS.iter().map(|(n, _)| *n))
                )
            });
            self.report(
                Diagnostic::new(
                    Code::UnknownFunction,
                    scope.file,
                    function.span,
                    format!("unknown function `{}`", function.name),
                )
                .with_label("not a function")
                .with_help(help),
            );
            for arg in args {
                self.expr(scope, arg);
            }
            return Ty::unknown();
        };
        let expected = if function.name == "default" { 2 } else { 1 };
        if args.len() != expected {
            self.report(
                Diagnostic::new(
                    Code::TypeMismatch,
                    scope.file,
                    span,
                    format!(
                        "`{}` takes {expected} argument{}, found {}",
                        function.name,
                        if expected == 1 { "" } else { "s" },
                        args.len()
                    ),
                )
                .with_label("wrong number of arguments")
                .with_help(format!("write {signature}")),
            );
            for arg in args {
                self.expr(scope, arg);
            }
            return Ty::unknown();
        }
        if function.name == "default" {
            let value = self.expr(scope, &args[0]);
            let fallback = self.expr(scope, &args[1]);
            let fallback = self.require_present(scope, &args[1], &fallback);
            if !value.comparable(&fallback) {
                self.report(
                    Diagnostic::new(
                        Code::TypeMismatch,
                        scope.file,
                        args[1].span,
                        format!(
                            "the fallback is {}, but the value is {}",
                            fallback.describe(),
                            value.clone().required().describe()
                        ),
                    )
                    .with_label("does not fit")
                    .with_help("give a fallback of the same kind"),
                );
            }
            return if value.is_unknown() || matches!(value.kind, Null) {
                fallback
            } else {
                value.required()
            };
        }
        let arg_ty = self.expr(scope, &args[0]);
        let arg_ty = self.require_present(scope, &args[0], &arg_ty);
        let result = match (function.name.as_str(), &arg_ty.kind) {
            (_, Unknown) => Some(Unknown),
            ("lower" | "upper", Text) => Some(Text),
            ("len", List(_) | Text) => Some(Int),
            ("days_since", Date | DateTime) => Some(Int),
            ("hours_since", DateTime) => Some(Int),
            ("date", DateTime) => Some(Date),
            ("abs", Int) => Some(Int),
            ("abs", Number) => Some(Number),
            ("round", Int | Number) => Some(Int),
            _ => None,
        };
        match result {
            Some(kind) => Ty::new(kind),
            None => {
                self.report(
                    Diagnostic::new(
                        Code::TypeMismatch,
                        scope.file,
                        args[0].span,
                        format!("`{}` cannot take {}", function.name, arg_ty.describe()),
                    )
                    .with_label(arg_ty.describe())
                    .with_help(format!("write {signature}")),
                );
                Ty::unknown()
            }
        }
    }

    fn aggregate(&mut self, scope: &Scope, aggregate: &Aggregate, span: Span, in_kpi: bool) -> Ty {
        use TypeKind::*;
        let file = scope.file;
        if aggregate.event.name.is_empty() {
            return Ty::unknown();
        }
        if aggregate.function == AggregateFn::Rate && !in_kpi {
            self.report(
                Diagnostic::new(
                    Code::AfterSendOutsideKpi,
                    file,
                    aggregate.function_span,
                    "`rate` is a KPI measure",
                )
                .with_label("only in a KPI")
                .with_help("use `count(…)` or `did(…)` in a condition"),
            );
        }
        if let Some(within) = &aggregate.within {
            if within.after_send && !in_kpi {
                self.report(
                    Diagnostic::new(
                        Code::AfterSendOutsideKpi,
                        file,
                        within.span,
                        "`after send` only means something in a KPI",
                    )
                    .with_label("no send here")
                    .with_help(format!(
                        "in a condition, `within {}` looks back from now",
                        within.duration
                    )),
                );
            }
            self.positive_duration(file, &within.duration, "the window");
        }
        let schema = Arc::clone(&self.schema);
        let event = schema.events.get(&aggregate.event.name);
        let result = match event {
            None => {
                self.unknown_event(file, &aggregate.event, &schema);
                Ty::unknown()
            }
            Some(event) => {
                if event.catalog && !aggregate.across_customers {
                    self.report(
                        Diagnostic::new(
                            Code::CatalogEvent,
                            file,
                            aggregate.event.span,
                            format!(
                                "`{}` is a catalog event: it belongs to no customer",
                                event.name
                            ),
                        )
                        .with_label("catalog event")
                        .with_help(format!(
                            "add `across customers` to look at all `{}` events of the shop",
                            event.name
                        )),
                    );
                }
                if let Some(condition) = &aggregate.condition {
                    let mut inner = scope.clone();
                    inner.aggregated = Some(event);
                    inner.crosses = false;
                    let ty = self.expr(&inner, condition);
                    self.condition_type(&inner, condition, &ty, "an aggregate's `where` condition");
                }
                let field_ty = if aggregate.field.is_empty() {
                    None
                } else {
                    Some(self.property_path(file, event, &aggregate.field))
                };
                let then_ty = if aggregate.then_field.is_empty() {
                    None
                } else {
                    Some(self.property_path(file, event, &aggregate.then_field))
                };
                let name = aggregate.function.name();
                let field_span = aggregate.field.first().map(|f| {
                    f.span
                        .join(aggregate.field.last().map_or(f.span, |l| l.span))
                });
                match aggregate.function {
                    AggregateFn::Count | AggregateFn::Did | AggregateFn::Rate => {
                        if let Some(field_span) = field_span {
                            self.report(
                                Diagnostic::new(
                                    Code::AggregateForm,
                                    file,
                                    field_span,
                                    format!("`{name}` looks at whole events, not a property"),
                                )
                                .with_label("remove this")
                                .with_help(format!(
                                    "write `{name}({})`; to add up a property use `sum`",
                                    event.name
                                )),
                            );
                        }
                        Ty::new(match aggregate.function {
                            AggregateFn::Count => Int,
                            AggregateFn::Did => Bool,
                            _ => Number,
                        })
                    }
                    AggregateFn::Sum | AggregateFn::Avg | AggregateFn::Min | AggregateFn::Max => {
                        match field_ty {
                            None => {
                                self.report(
                                    Diagnostic::new(
                                        Code::AggregateForm,
                                        file,
                                        span,
                                        format!("`{name}` needs a property to work on"),
                                    )
                                    .with_label("no property")
                                    .with_help(format!("write `{name}({}.PROPERTY)`", event.name)),
                                );
                                Ty::unknown()
                            }
                            Some(ty) => {
                                let numeric = ty.is_numeric();
                                let ordered = numeric || matches!(ty.kind, Date | DateTime);
                                let ok = match aggregate.function {
                                    AggregateFn::Min | AggregateFn::Max => ordered,
                                    _ => numeric,
                                };
                                if !ok {
                                    self.report(
                                    Diagnostic::new(
                                        Code::TypeMismatch,
                                        file,
                                        field_span.unwrap_or(span),
                                        format!("cannot {} {}: `{}.{}` is {}", if name == "sum" { "add up" } else { name }, if name == "sum" { "" } else { "of" }, event.name, join_idents(&aggregate.field), ty.clone().required().describe()),
                                    )
                                    .with_label(ty.clone().required().describe())
                                    .with_help(format!("`{name}` works on numbers; to count events use `count({})`", event.name)),
                                );
                                    Ty::unknown()
                                } else if aggregate.function == AggregateFn::Avg {
                                    Ty::new(Number)
                                } else {
                                    ty.required()
                                }
                            }
                        }
                    }
                    AggregateFn::Last => match (field_ty, then_ty) {
                        (Some(ty), None) | (None, Some(ty)) => ty.required(),
                        (Some(_), Some(ty)) => {
                            self.report(
                                Diagnostic::new(Code::AggregateForm, file, span, "`last` reads one property: inside the parentheses or after them, not both")
                                    .with_label("two properties"),
                            );
                            ty.required()
                        }
                        (None, None) => {
                            self.report(
                                Diagnostic::new(
                                    Code::AggregateForm,
                                    file,
                                    span,
                                    "`last` needs a property to read",
                                )
                                .with_label("no property")
                                .with_help(format!("write `last({}).PROPERTY`", event.name)),
                            );
                            Ty::unknown()
                        }
                    },
                }
            }
        };
        result
    }

    /// The type of `E.a.b` given `E`, projecting through lists of records.
    fn property_path(&mut self, file: FileId, event: &model::Event, path: &[Ident]) -> Ty {
        let Some(first) = path.first() else {
            return Ty::unknown();
        };
        let Some(field) = event.fields.get(&first.name) else {
            self.unknown_property(
                file,
                &event.name,
                first,
                event.fields.keys().map(String::as_str),
            );
            return Ty::unknown();
        };
        self.traverse(
            file,
            &format!("{}.{}", event.name, first.name),
            field.ty.clone(),
            &path[1..],
        )
    }

    fn unknown_property<'n>(
        &mut self,
        file: FileId,
        owner: &str,
        name: &Ident,
        known: impl Iterator<Item = &'n str> + Clone,
    ) {
        let help = did_you_mean(&name.name, known.clone()).unwrap_or_else(|| {
            if known.clone().next().is_none() {
                format!("`{owner}` has no properties; declare them in `schema.moment`")
            } else {
                format!("`{owner}` has {}", one_of(known))
            }
        });
        self.report(
            Diagnostic::new(
                Code::UnknownProperty,
                file,
                name.span,
                format!("unknown property `{}` of `{owner}`", name.name),
            )
            .with_label("not declared")
            .with_help(help),
        );
    }

    fn traverse(&mut self, file: FileId, shown: &str, mut ty: Ty, rest: &[Ident]) -> Ty {
        let mut shown = shown.to_string();
        for segment in rest {
            let optional = ty.optional;
            ty = match &ty.kind {
                TypeKind::Record(fields) => match fields.get(&segment.name) {
                    Some(t) => {
                        let mut t = t.clone();
                        t.optional |= optional;
                        t
                    }
                    None => {
                        self.unknown_property(
                            file,
                            &shown,
                            segment,
                            fields.keys().map(String::as_str),
                        );
                        return Ty::unknown();
                    }
                },
                TypeKind::List(element) => match &element.kind {
                    TypeKind::Record(fields) => match fields.get(&segment.name) {
                        Some(t) => {
                            let mut list = Ty::list_of(t.clone().required());
                            list.optional = optional;
                            list
                        }
                        None => {
                            self.unknown_property(
                                file,
                                &shown,
                                segment,
                                fields.keys().map(String::as_str),
                            );
                            return Ty::unknown();
                        }
                    },
                    _ => {
                        self.no_properties(file, &shown, segment, &ty);
                        return Ty::unknown();
                    }
                },
                TypeKind::Unknown => return ty,
                _ => {
                    self.no_properties(file, &shown, segment, &ty);
                    return Ty::unknown();
                }
            };
            shown = format!("{shown}.{}", segment.name);
        }
        ty
    }

    fn no_properties(&mut self, file: FileId, shown: &str, segment: &Ident, ty: &Ty) {
        self.report(
            Diagnostic::new(
                Code::UnknownProperty,
                file,
                segment.span,
                format!(
                    "`{shown}` is {} and has no property `{}`",
                    ty.describe(),
                    segment.name
                ),
            )
            .with_label("no such property"),
        );
    }

    fn path(&mut self, scope: &Scope, path: &Path) -> Ty {
        let file = scope.file;
        let Some(root) = path.segments.first() else {
            return Ty::unknown();
        };
        let rest = &path.segments[1..];
        match root.name.as_str() {
            "customer" if scope.no_customer => {
                self.report(
                    Diagnostic::new(
                        Code::UnknownName,
                        file,
                        path.span,
                        format!("a default cannot read `{path}`"),
                    )
                    .with_label("no customer here")
                    .with_help("a default is a plain value, like `\"standard\"` or `0`"),
                );
                Ty::unknown()
            }
            "customer" => {
                let Some(name) = rest.first() else {
                    self.report(
                        Diagnostic::new(
                            Code::UnknownTrait,
                            file,
                            path.span,
                            "`customer` alone is not a value: name a trait",
                        )
                        .with_label("which trait?")
                        .with_help("write `customer.TRAIT`, like `customer.first_name`"),
                    );
                    return Ty::unknown();
                };
                match self.schema.traits.get(&name.name) {
                    Some(field) => {
                        let ty = field.ty.clone();
                        // A trait with a default is never missing.
                        let ty = if field.default.is_some() {
                            ty.required()
                        } else {
                            ty
                        };
                        self.traverse(file, &format!("customer.{}", name.name), ty, &rest[1..])
                    }
                    None => {
                        let help =
                            did_you_mean(&name.name, self.schema.traits.keys().map(String::as_str))
                                .unwrap_or_else(|| {
                                    format!(
                                        "the schema declares {}",
                                        one_of(self.schema.traits.keys().map(String::as_str))
                                    )
                                });
                        self.report(
                            Diagnostic::new(
                                Code::UnknownTrait,
                                file,
                                name.span,
                                format!("unknown trait `{}`", name.name),
                            )
                            .with_label("not a trait of `customer`")
                            .with_help(help),
                        );
                        Ty::unknown()
                    }
                }
            }
            "event" => match scope.event {
                EventContext::Event(event) => {
                    let Some(name) = rest.first() else {
                        self.report(
                            Diagnostic::new(
                                Code::UnknownProperty,
                                file,
                                path.span,
                                "`event` alone is not a value: name a property",
                            )
                            .with_label("which property?")
                            .with_help(format!(
                                "write `event.PROPERTY`; `{}` has {}",
                                event.name,
                                one_of(event.fields.keys().map(String::as_str))
                            )),
                        );
                        return Ty::unknown();
                    };
                    match event.fields.get(&name.name) {
                        Some(field) => {
                            let ty = if field.default.is_some() {
                                field.ty.clone().required()
                            } else {
                                field.ty.clone()
                            };
                            self.traverse(file, &format!("event.{}", name.name), ty, &rest[1..])
                        }
                        None => {
                            self.unknown_property(
                                file,
                                &event.name,
                                name,
                                event.fields.keys().map(String::as_str),
                            );
                            Ty::unknown()
                        }
                    }
                }
                EventContext::None("unknown") => Ty::unknown(),
                EventContext::None(kind) => {
                    let why = match kind {
                        "schedule" => "this moment runs on a schedule",
                        "date" => "this moment runs on a date",
                        _ => "there is no trigger event here",
                    };
                    self.report(
                        Diagnostic::new(Code::NoTriggerEvent, file, path.span, format!("`{path}` reads the trigger event, but {why}"))
                            .with_label("no event")
                            .with_help("read the customer (`customer.…`) or their history (`last(order_completed).total`) instead"),
                    );
                    Ty::unknown()
                }
            },
            "now" if rest.is_empty() => Ty::new(TypeKind::DateTime),
            "send" if scope.kpi || scope.template => {
                let Some(name) = rest.first() else {
                    return Ty::unknown();
                };
                match name.name.as_str() {
                    "id" => Ty::new(TypeKind::Text),
                    "at" if scope.kpi => Ty::new(TypeKind::DateTime),
                    _ => {
                        let known: &[&str] = if scope.kpi { &["id", "at"] } else { &["id"] };
                        self.unknown_property(file, "send", name, known.iter().copied());
                        Ty::unknown()
                    }
                }
            }
            "moment" if scope.template => match rest.first().map(|n| n.name.as_str()) {
                Some("id") | Some("title") => Ty::new(TypeKind::Text),
                _ => {
                    if let Some(name) = rest.first() {
                        self.unknown_property(file, "moment", name, ["id", "title"].into_iter());
                    }
                    Ty::unknown()
                }
            },
            name => {
                if let Some(info) = scope.lets.iter().find(|l| l.name == name) {
                    info.used.set(true);
                    if scope.kpi {
                        // INVARIANT: a KPI is measured after the fact from the sends and the
                        // data (`crate::kpi`), where no `let` value exists.
                        self.report(
                            Diagnostic::new(
                                Code::KpiForm,
                                file,
                                path.span,
                                format!("a KPI cannot read the `let` `{name}`"),
                            )
                            .with_label("a `let` of the trigger")
                            .with_help("a KPI is measured from the sends and the events after them: use `event.…`, `send.…`, `customer.…` or the KPI's own event"),
                        );
                        return Ty::unknown();
                    }
                    return self.traverse(file, name, info.ty.clone(), rest);
                }
                if let Some(event) = scope.aggregated.filter(|e| e.name == name) {
                    if rest.is_empty() {
                        self.report(
                            Diagnostic::new(
                                Code::UnknownProperty,
                                file,
                                path.span,
                                format!("`{name}` alone is not a value: name a property"),
                            )
                            .with_label("which property?"),
                        );
                        return Ty::unknown();
                    }
                    return self.property_path(file, event, rest);
                }
                if self.schema.events.contains_key(name) {
                    self.report(
                        Diagnostic::new(Code::UnknownName, file, path.span, format!("`{path}` reads an event outside an aggregate over it"))
                            .with_label(format!("which `{name}`?"))
                            .with_help(format!("read the latest with `last({name}).…`, or filter inside `count({name} where {path} …)`")),
                    );
                    return Ty::unknown();
                }
                let mut candidates: Vec<&str> =
                    scope.lets.iter().map(|l| l.name.as_str()).collect();
                candidates.extend(["customer", "event", "now"]);
                if let Some(e) = scope.aggregated {
                    candidates.push(&e.name);
                }
                if scope.kpi || scope.template {
                    candidates.push("send");
                }
                if scope.template {
                    candidates.push("moment");
                }
                let help = if scope.no_customer {
                    Some("a default is a plain value, like `\"standard\"` or `0`".to_string())
                } else if let Some(trait_name) =
                    self.schema.traits.contains_key(name).then_some(name)
                {
                    Some(format!("did you mean `customer.{trait_name}`?"))
                } else {
                    did_you_mean(name, candidates.iter().copied())
                };
                self.report(
                    Diagnostic::new(
                        Code::UnknownName,
                        file,
                        root.span,
                        format!("unknown name `{name}`"),
                    )
                    .with_label("not defined")
                    .with_help(help.unwrap_or_else(|| {
                        format!("names here are {}", one_of(candidates.iter().copied()))
                    })),
                );
                Ty::unknown()
            }
        }
    }
}

/// Paths that `expr` proves present: `x != none`, joined by `and`.
fn guards(expr: &Expr) -> Vec<String> {
    match &expr.kind {
        ExprKind::Binary(BinaryOp::Ne, left, right) => match (&left.kind, &right.kind) {
            (ExprKind::Path(p), ExprKind::Literal(Literal::None))
            | (ExprKind::Literal(Literal::None), ExprKind::Path(p)) => {
                vec![p.to_string()]
            }
            _ => Vec::new(),
        },
        ExprKind::Binary(BinaryOp::And, left, right) => {
            let mut found = guards(left);
            found.extend(guards(right));
            found
        }
        _ => Vec::new(),
    }
}

fn join_idents(idents: &[Ident]) -> String {
    idents
        .iter()
        .map(|i| i.name.as_str())
        .collect::<Vec<_>>()
        .join(".")
}

fn keyword_len(what: &str) -> usize {
    match what {
        "trigger" => 7,
        "message" => 7,
        _ => 3,
    }
}

/// The first word of an item, for pointing at it without underlining a whole block.
fn first_word(text: &str, span: Span) -> Span {
    let rest = text.get(span.start..span.end).unwrap_or("");
    let len = rest
        .find(|c: char| c.is_whitespace() || c == '{')
        .unwrap_or(rest.len());
    Span::new(span.start, span.start + len.max(1))
}

/// A template environment with no templates and no globals beyond the builtins.
fn template_env() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
    env
}

/// Byte ranges of the `{{ … }}` and `{% … %}` blocks of a template.
fn template_blocks(template: &str) -> Vec<std::ops::Range<usize>> {
    let mut blocks = Vec::new();
    let mut at = 0;
    while let Some(start) = template[at..].find(['{']).map(|i| at + i) {
        let close = match template.get(start..start + 2) {
            Some("{{") => "}}",
            Some("{%") => "%}",
            _ => {
                at = start + 1;
                continue;
            }
        };
        match template[start + 2..].find(close) {
            Some(i) => {
                let end = start + 2 + i + 2;
                blocks.push(start..end);
                at = end;
            }
            None => break,
        }
    }
    blocks
}

fn contains_path(block: &str, path: &str) -> bool {
    block.match_indices(path).any(|(i, _)| {
        let after = block[i + path.len()..].chars().next();
        !matches!(after, Some(c) if c.is_alphanumeric() || c == '_')
    })
}

/// `{% if customer.first_name %}` somewhere: the template handles the missing case itself.
fn variables_guarded(template: &str, variable: &str) -> bool {
    template_blocks(template).iter().any(|b| {
        let inside = &template[b.clone()];
        inside.starts_with("{%") && inside.contains("if") && contains_path(inside, variable)
    })
}

/// The text of a template without its `{{ … }}` and `{% … %}` blocks.
fn strip_template(template: &str) -> String {
    let mut out = String::new();
    let mut at = 0;
    for block in template_blocks(template) {
        out.push_str(&template[at..block.start]);
        at = block.end;
    }
    out.push_str(&template[at..]);
    out
}

/// In the GSM 03.38 basic character set (one unit) or its extension (two units).
fn is_gsm7(c: char) -> bool {
    const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
    BASIC.contains(c) || is_gsm7_extended(c)
}

fn is_gsm7_extended(c: char) -> bool {
    "^{}\\[~]|€".contains(c)
}

/// Values of the right type for every variable a template may use: rendering a webhook
/// body with them shows whether the JSON holds together.
fn sample_context(
    scope: &Scope,
    moment: &ast::Moment,
    schema: &model::Schema,
) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    fn sample(ty: &Ty) -> Value {
        match &ty.kind {
            TypeKind::Text => json!("sample"),
            TypeKind::Int => json!(1),
            TypeKind::Number => json!(1.5),
            TypeKind::Bool => json!(true),
            TypeKind::Date => json!("2026-01-01"),
            TypeKind::DateTime => json!("2026-01-01T00:00:00Z"),
            TypeKind::Duration => json!("1h"),
            TypeKind::Timezone => json!("Europe/London"),
            TypeKind::Time => json!("09:00"),
            TypeKind::List(_) => json!([]),
            TypeKind::Record(fields) => {
                Value::Object(fields.iter().map(|(k, t)| (k.clone(), sample(t))).collect())
            }
            TypeKind::Null | TypeKind::Unknown => Value::Null,
        }
    }
    let mut context = Map::new();
    context.insert(
        "customer".into(),
        Value::Object(
            schema
                .traits
                .iter()
                .map(|(k, f)| (k.clone(), sample(&f.ty)))
                .collect(),
        ),
    );
    if let EventContext::Event(event) = scope.event {
        context.insert(
            "event".into(),
            Value::Object(
                event
                    .fields
                    .iter()
                    .map(|(k, f)| (k.clone(), sample(&f.ty)))
                    .collect(),
            ),
        );
    }
    for info in scope.lets {
        context.insert(info.name.clone(), sample(&info.ty));
    }
    context.insert(
        "moment".into(),
        json!({"id": moment.id.name, "title": moment.title.value}),
    );
    context.insert("send".into(), json!({"id": "sample-send-id"}));
    Value::Object(context)
}

/// Names close to `name` among the known ones (exposed for other stages' suggestions).
pub fn suggest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    closest(name, known)
}

/// All event names the schema declares, for tools.
pub fn event_names(model: &Model) -> BTreeSet<&str> {
    model.schema.events.keys().map(String::as_str).collect()
}

/// Whether an expression holds an aggregate of events (so that an event can change it).
fn reads_events(expr: &Expr) -> bool {
    match &expr.kind {
        ExprKind::Aggregate(_) => true,
        ExprKind::Literal(_) | ExprKind::Path(_) => false,
        ExprKind::Unary(_, inner) => reads_events(inner),
        ExprKind::Binary(_, l, r) => reads_events(l) || reads_events(r),
        ExprKind::Call { args, .. } => args.iter().any(reads_events),
        ExprKind::List(items) => items.iter().any(reads_events),
    }
}
