//! `moments`: micro-moment campaigns for online shops, written as `.moment` files.
//!
//! The pipeline, one module per stage (see `ARCHITECTURE.md`):
//! [`parse`] (text → [`ast`]) → [`check`] (names, types, rules → [`model`]) → …
//! Every stage reports problems as [`diagnostic::Diagnostic`]s and goes on.

pub mod ast;
pub mod backtest;
pub mod check;
pub mod cron_expr;
pub mod data;
pub mod deliver;
pub mod diagnostic;
pub mod direct_io;
pub mod engine;
pub mod eval;
pub mod explain;
pub mod format;
pub(crate) mod fx;
pub mod kpi;
pub mod lanes;
pub mod model;
pub mod outcome;
pub mod output;
pub mod parse;
pub mod plain_template;
pub mod project;
pub mod report;
pub mod report_html;
pub mod sample;
pub mod schedule;
pub mod state;
pub mod types;
pub mod value;
