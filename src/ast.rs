//! The syntax tree of a `.moment` file, as written.
//!
//! Produced by [`crate::parse`], read by [`crate::check`] and [`crate::format`]. Every node
//! carries the [`Span`] of its text; spans never take part in equality, so two trees compare
//! equal when they say the same thing however they were laid out (the formatter relies on it).
//! Names are not resolved here: `customer.frist_name` is a perfectly good path until the
//! checker looks at it.

use std::fmt;

/// A byte range in one source file.
///
/// INVARIANT: `PartialEq` is always true, so that deriving `PartialEq` on a node compares
/// only what the node means, never where it was written.
#[derive(Clone, Copy, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }
    /// The smallest span covering both.
    pub fn join(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
    pub fn len(self) -> usize {
        self.end - self.start
    }
    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
    pub fn range(self) -> std::ops::Range<usize> {
        self.start..self.end
    }
}

impl PartialEq for Span {
    fn eq(&self, _: &Span) -> bool {
        true
    }
}

impl Eq for Span {}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// A name as written, with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A string literal: the value after unescaping (and dedenting, for `"""` strings).
#[derive(Debug, Clone, PartialEq)]
pub struct StrLit {
    pub value: String,
    /// `"""…"""`: the value may span lines.
    pub triple: bool,
    pub span: Span,
}

/// A duration as written: `90m` stays `90m`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Duration {
    pub amount: u64,
    pub unit: DurationUnit,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationUnit {
    Seconds,
    Minutes,
    Hours,
    Days,
    Weeks,
}

impl DurationUnit {
    pub fn suffix(self) -> char {
        match self {
            DurationUnit::Seconds => 's',
            DurationUnit::Minutes => 'm',
            DurationUnit::Hours => 'h',
            DurationUnit::Days => 'd',
            DurationUnit::Weeks => 'w',
        }
    }
    pub fn seconds(self) -> u64 {
        match self {
            DurationUnit::Seconds => 1,
            DurationUnit::Minutes => 60,
            DurationUnit::Hours => 3_600,
            DurationUnit::Days => 86_400,
            DurationUnit::Weeks => 604_800,
        }
    }
}

impl Duration {
    /// Length in seconds, saturating (a duration of a billion weeks is simply very long).
    pub fn seconds(&self) -> u64 {
        self.amount.saturating_mul(self.unit.seconds())
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.amount, self.unit.suffix())
    }
}

/// A time of day, `HH:MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeOfDay {
    pub hour: u32,
    pub minute: u32,
    pub span: Span,
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

/// A whole file: schema declarations and/or moments.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Customer(CustomerBlock),
    Event(EventDecl),
    Defaults(DefaultsBlock),
    Moment(Moment),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Customer(c) => c.span,
            Item::Event(e) => e.span,
            Item::Defaults(d) => d.span,
            Item::Moment(m) => m.span,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Schema

/// `customer { … }`: the traits of a customer.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerBlock {
    pub traits: Vec<FieldDecl>,
    pub span: Span,
}

/// `name: type` with an optional `= default`, in `customer`, `event` or a record type.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDecl {
    pub name: Ident,
    pub ty: TypeExpr,
    pub default: Option<Expr>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TypeExpr {
    pub kind: TypeExprKind,
    /// Written with `?`: the value may be missing.
    pub optional: bool,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TypeExprKind {
    /// `text`, `int`, … (or a misspelling, for the checker to report).
    Named(Ident),
    List(Box<TypeExpr>),
    Record(Vec<FieldDecl>),
}

/// `event product_added "Product Added" { … }`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDecl {
    pub name: Ident,
    /// The name the data carries.
    pub source: StrLit,
    /// Concerns no customer in particular (`Back In Stock`).
    pub catalog: bool,
    pub fields: Vec<FieldDecl>,
    /// Whether the declaration was written with a `{ … }` block, empty or not.
    pub has_block: bool,
    pub span: Span,
}

/// `defaults { … }`.
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultsBlock {
    pub items: Vec<DefaultItem>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DefaultItem {
    Timezone {
        zone: StrLit,
        span: Span,
    },
    Cap {
        count: u64,
        per: Duration,
        span: Span,
    },
    Consent {
        channel: Ident,
        requires: Expr,
        span: Span,
    },
}

impl DefaultItem {
    pub fn span(&self) -> Span {
        match self {
            DefaultItem::Timezone { span, .. }
            | DefaultItem::Cap { span, .. }
            | DefaultItem::Consent { span, .. } => *span,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Moments

/// `moment id "Title" { … }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Moment {
    pub id: Ident,
    pub title: StrLit,
    /// In the order written; the checker enforces "exactly one trigger, message, KPI".
    pub items: Vec<MomentItem>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MomentItem {
    Trigger(Trigger),
    Message(Message),
    Kpi(Kpi),
    Limit {
        count: u64,
        per: Option<Duration>,
        span: Span,
    },
    QuietHours {
        from: TimeOfDay,
        to: TimeOfDay,
        span: Span,
    },
    /// Percent, as written (`10%` is `10.0`).
    Holdout {
        percent: f64,
        span: Span,
    },
    Active {
        from: Date,
        until: Option<Date>,
        span: Span,
    },
    Priority {
        value: u64,
        span: Span,
    },
}

impl MomentItem {
    pub fn span(&self) -> Span {
        match self {
            MomentItem::Trigger(t) => t.span,
            MomentItem::Message(m) => m.span,
            MomentItem::Kpi(k) => k.span,
            MomentItem::Limit { span, .. }
            | MomentItem::QuietHours { span, .. }
            | MomentItem::Holdout { span, .. }
            | MomentItem::Active { span, .. }
            | MomentItem::Priority { span, .. } => *span,
        }
    }
}

/// A calendar date literal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Date {
    pub value: chrono::NaiveDate,
    pub span: Span,
}

/// `trigger { … }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub clauses: Vec<TriggerClause>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TriggerClause {
    On(TriggerSource),
    Let {
        name: Ident,
        value: Expr,
        span: Span,
    },
    Where {
        condition: Expr,
        span: Span,
    },
    Unless {
        event: Ident,
        condition: Option<Expr>,
        within: Option<Duration>,
        span: Span,
    },
    Wait {
        delay: Duration,
        span: Span,
    },
}

impl TriggerClause {
    pub fn span(&self) -> Span {
        match self {
            TriggerClause::On(source) => source.span(),
            TriggerClause::Let { span, .. }
            | TriggerClause::Where { span, .. }
            | TriggerClause::Unless { span, .. }
            | TriggerClause::Wait { span, .. } => *span,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Before,
    After,
}

/// What makes a customer enter.
#[derive(Debug, Clone, PartialEq)]
pub enum TriggerSource {
    /// `on E`.
    Event { event: Ident, span: Span },
    /// `on anniversary of customer.D at HH:MM`.
    Anniversary {
        date: Path,
        at: TimeOfDay,
        span: Span,
    },
    /// `on DUR before|after customer.T at HH:MM`.
    Offset {
        offset: Duration,
        direction: Direction,
        date: Path,
        at: TimeOfDay,
        span: Span,
    },
    /// `every "CRON" [in "ZONE"]`.
    Every {
        cron: StrLit,
        zone: Option<StrLit>,
        span: Span,
    },
}

impl TriggerSource {
    pub fn span(&self) -> Span {
        match self {
            TriggerSource::Event { span, .. }
            | TriggerSource::Anniversary { span, .. }
            | TriggerSource::Offset { span, .. }
            | TriggerSource::Every { span, .. } => *span,
        }
    }
}

/// `message CHANNEL { field "template" … }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub channel: Ident,
    pub fields: Vec<MessageField>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MessageField {
    pub name: Ident,
    pub template: StrLit,
    pub span: Span,
}

/// `kpi "Title" = rate(…) [goal >= X]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Kpi {
    pub title: StrLit,
    pub measure: Expr,
    pub goal: Option<Goal>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    pub op: BinaryOp,
    pub target: Expr,
    pub span: Span,
}

// ---------------------------------------------------------------------------------------
// Expressions

/// A dotted name: `customer.first_name`, `event.total`, `order_completed.total`, `cutoff`.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    pub segments: Vec<Ident>,
    pub span: Span,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            f.write_str(&segment.name)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Literal(Literal),
    List(Vec<Expr>),
    Path(Path),
    Unary(UnaryOp, Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// `lower(x)`, `default(x, y)`.
    Call {
        function: Ident,
        args: Vec<Expr>,
    },
    /// `count(E …)`, `sum(E.field …)`, `last(E).field`, `rate(E … within D after send)`.
    Aggregate(Box<Aggregate>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Int(i64),
    /// Written with a decimal point: `19.99`, `20.0`.
    Float(f64),
    /// `15%`, kept as written: 15.0.
    Percent(f64),
    Text(String),
    Bool(bool),
    None,
    Duration(Duration),
    Date(chrono::NaiveDate),
    /// In UTC; the text as written is in the source.
    DateTime(chrono::DateTime<chrono::FixedOffset>),
    Time(TimeOfDay),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Not,
    Neg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Contains,
    Crosses,
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "or",
            BinaryOp::And => "and",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::In => "in",
            BinaryOp::Contains => "contains",
            BinaryOp::Crosses => "crosses",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
        }
    }

    /// Binding strength, higher binds tighter (the formatter uses it to place parentheses;
    /// `src/parse.rs` builds its Pratt parser in the same order).
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::Or => 1,
            BinaryOp::And => 2,
            // `not` is 3
            BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge
            | BinaryOp::In
            | BinaryOp::Contains
            | BinaryOp::Crosses => 4,
            BinaryOp::Add | BinaryOp::Sub => 5,
            BinaryOp::Mul | BinaryOp::Div => 6,
        }
    }

    pub fn is_comparison(self) -> bool {
        self.precedence() == 4
    }
}

/// Precedence of `not` (between `and` and comparisons) and unary minus (tightest).
pub const NOT_PRECEDENCE: u8 = 3;
pub const NEG_PRECEDENCE: u8 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateFn {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    Did,
    Last,
    /// Only in a KPI: the share of sends followed by the event.
    Rate,
}

impl AggregateFn {
    pub const ALL: [(&'static str, AggregateFn); 8] = [
        ("count", AggregateFn::Count),
        ("sum", AggregateFn::Sum),
        ("avg", AggregateFn::Avg),
        ("min", AggregateFn::Min),
        ("max", AggregateFn::Max),
        ("did", AggregateFn::Did),
        ("last", AggregateFn::Last),
        ("rate", AggregateFn::Rate),
    ];

    pub fn from_name(name: &str) -> Option<AggregateFn> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// Takes `E.field` rather than `E`.
    pub fn takes_field(self) -> bool {
        matches!(
            self,
            AggregateFn::Sum | AggregateFn::Avg | AggregateFn::Min | AggregateFn::Max
        )
    }
}

/// An aggregate over events: `count(order_completed across customers where … within 24h)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub function: AggregateFn,
    pub function_span: Span,
    pub event: Ident,
    /// `sum(order_completed.total)`: the property path after the event name.
    pub field: Vec<Ident>,
    pub across_customers: bool,
    pub condition: Option<Expr>,
    pub within: Option<Within>,
    /// `last(E).total`: the property read from the last event.
    pub then_field: Vec<Ident>,
}

/// `within 24h` or, in a KPI, `within 24h after send`.
#[derive(Debug, Clone, PartialEq)]
pub struct Within {
    pub duration: Duration,
    pub after_send: bool,
    pub span: Span,
}
