//! The checked model: what the campaigns mean, with every name resolved.
//!
//! [`crate::check`] builds it only when there is no error, so everything here is known to
//! be valid: every event and trait exists, every type fits, the cron expression and time
//! zones parse. The engine compiles from this, never from the syntax tree directly.
//! Expressions stay as [`ast::Expr`] trees; their names are known to resolve.

use std::collections::BTreeMap;

use crate::ast::{self, AggregateFn, Direction, Duration, TimeOfDay};
use crate::cron_expr::CronExpr;
use crate::diagnostic::FileId;
use crate::types::Ty;

/// Everything `check` accepted: one schema and its moments.
#[derive(Debug, Clone)]
pub struct Model {
    pub schema: Schema,
    /// Sorted by id.
    pub moments: Vec<Moment>,
}

#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub traits: BTreeMap<String, Field>,
    /// By the identifier campaigns use.
    pub events: BTreeMap<String, Event>,
    pub defaults: Defaults,
}

impl Schema {
    /// The event whose data records carry `source` as their name.
    pub fn event_by_source(&self, source: &str) -> Option<&Event> {
        self.events.values().find(|e| e.source == source)
    }
}

/// A trait or a property.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub ty: Ty,
    /// Used when the data has no value.
    pub default: Option<ast::Expr>,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub name: String,
    /// The name in the data (`"Order Completed"`).
    pub source: String,
    pub catalog: bool,
    pub fields: BTreeMap<String, Field>,
}

#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// For customers without one; UTC when the schema names none.
    pub timezone: Option<chrono_tz::Tz>,
    /// At most `count` sends per customer in any window of `per`, across all moments.
    pub cap: Option<(u64, Duration)>,
    /// Per channel, the condition on the customer that allows a send.
    pub consent: BTreeMap<Channel, ast::Expr>,
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    Email,
    Sms,
    Push,
    InApp,
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 5] = [
        Channel::Email,
        Channel::Sms,
        Channel::Push,
        Channel::InApp,
        Channel::Webhook,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::InApp => "in_app",
            Channel::Webhook => "webhook",
        }
    }

    pub fn from_name(name: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The fields a message on this channel must have.
    pub fn required_fields(self) -> &'static [&'static str] {
        match self {
            Channel::Email => &["subject", "body"],
            Channel::Sms => &["text"],
            Channel::Push => &["title", "body"],
            Channel::InApp => &["body"],
            Channel::Webhook => &["url", "body"],
        }
    }

    /// The fields it may have.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Channel::Email => &["subject", "body", "preheader"],
            Channel::Sms => &["text"],
            Channel::Push => &["title", "body"],
            Channel::InApp => &["body"],
            Channel::Webhook => &["url", "body", "method"],
        }
    }
}

/// One micro moment.
#[derive(Debug, Clone)]
pub struct Moment {
    pub id: String,
    pub title: String,
    pub file: FileId,
    pub trigger: Trigger,
    pub message: Message,
    pub kpi: Kpi,
    pub limit: Option<Limit>,
    pub quiet_hours: Option<(TimeOfDay, TimeOfDay)>,
    /// Share of customers kept as control, 0 to 50.
    pub holdout_percent: f64,
    pub active: Option<(chrono::NaiveDate, Option<chrono::NaiveDate>)>,
    pub priority: u64,
}

#[derive(Debug, Clone)]
pub struct Trigger {
    pub source: TriggerSource,
    /// In the order written; a `let` sees only those before it.
    pub lets: Vec<Let>,
    /// All must hold at the trigger instant.
    pub conditions: Vec<ast::Expr>,
    pub unless: Vec<Unless>,
    pub wait: Option<Duration>,
}

impl Trigger {
    /// Due time = trigger + the larger of `wait` and the longest `unless … within`.
    pub fn due_delay_seconds(&self) -> u64 {
        let wait = self.wait.map_or(0, |w| w.seconds());
        let window = self
            .unless
            .iter()
            .filter_map(|u| u.within.map(|w| w.seconds()))
            .max()
            .unwrap_or(0);
        wait.max(window)
    }
}

#[derive(Debug, Clone)]
pub enum TriggerSource {
    /// At each event of the customer (or, for a catalog event, for every customer).
    Event {
        event: String,
        catalog: bool,
    },
    Anniversary {
        date_trait: String,
        at: TimeOfDay,
    },
    Offset {
        offset: Duration,
        direction: Direction,
        date_trait: String,
        at: TimeOfDay,
    },
    Every {
        cron: CronExpr,
        /// `in "UTC"`: one zone for everyone instead of each customer's own.
        zone: Option<chrono_tz::Tz>,
    },
}

impl TriggerSource {
    /// The trigger has an event that `event.*` reads.
    pub fn has_event(&self) -> bool {
        matches!(self, TriggerSource::Event { .. })
    }
}

#[derive(Debug, Clone)]
pub struct Let {
    pub name: String,
    pub value: ast::Expr,
    pub ty: Ty,
}

#[derive(Debug, Clone)]
pub struct Unless {
    pub event: String,
    pub condition: Option<ast::Expr>,
    pub within: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Message {
    pub channel: Channel,
    /// Field name to template source.
    pub fields: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Kpi {
    pub title: String,
    /// `rate`, `sum`, `count` or `avg`.
    pub function: AggregateFn,
    pub event: String,
    pub field: Vec<String>,
    pub condition: Option<ast::Expr>,
    pub window: Duration,
    pub goal: Option<ast::Goal>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub count: u64,
    pub per: Option<Duration>,
}
