//! The report as one self-contained HTML page with charts (Chart.js, embedded).
//!
//! Everything is inline, so the file opens without network: the styles
//! (`assets/report.css`), Chart.js 4.6.1 (`assets/chart.umd.min.js`, MIT), the report as
//! [`report::json`] writes it (in `<script type="application/json" id="report-data">`) and
//! a short script (`assets/report.js`) that draws two charts per moment from that JSON.
//! The tables and figures are plain HTML, readable without scripts. When the charts are
//! drawn, `<body data-charts-rendered="N">` tells how many. Same report, same bytes.

use std::fmt::Write as _;

use chrono::SecondsFormat;

use crate::kpi::{GoalStatus, MomentKpi, Verdict};
use crate::report::{self, MomentReport, Report};

const CHART_JS: &str = include_str!("../assets/chart.umd.min.js");
const STYLE: &str = include_str!("../assets/report.css");
const SCRIPT: &str = include_str!("../assets/report.js");

/// The page: the report's figures as HTML, its JSON and the charting library inline.
pub fn html(report: &Report) -> String {
    let mut out = String::with_capacity(CHART_JS.len() + 128 * 1024);
    let source = escape(&report.source);
    let as_of = report.as_of.format("%Y-%m-%d %H:%M:%S UTC");
    let _ = write!(
        out,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Moments report: {source}</title>
<style>
{STYLE}</style>
</head>
<body>
<header>
<h1>Moments report</h1>
<p class="meta">Sends from <code>{source}</code>, measured as of <time datetime="{rfc3339}">{as_of}</time>.</p>
<p class="note">Figures in brackets are 95% intervals. Only sends whose KPI window had closed by then are measured; the others are counted as open. The control group was held out (sent nothing) and is measured the same way from the moment it would have been sent.</p>
</header>
<main>
"#,
        rfc3339 = report.as_of.to_rfc3339_opts(SecondsFormat::Secs, true),
    );
    summary(&mut out, report);
    for moment in &report.moments {
        section(&mut out, moment);
    }
    let _ = write!(
        out,
        r#"</main>
<footer>Written by <code>moments report --format html</code>. Charts drawn with Chart.js 4.6.1 (MIT License), embedded in this file.</footer>
<script type="application/json" id="report-data">{data}</script>
<script>
{CHART_JS}
</script>
<script>
{SCRIPT}</script>
</body>
</html>
"#,
        data = script_json(&report::json_compact(report)),
    );
    out
}

/// One row per moment: the figures of `moments report --format table`.
fn summary(out: &mut String, report: &Report) {
    out.push_str("<section class=\"card summary\">\n<h2>Summary</h2>\n");
    if report.moments.is_empty() {
        out.push_str("<p class=\"quiet\">No moments to report.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<table>\n<thead><tr><th>moment</th><th class=\"n\">entries</th><th class=\"n\">sent</th>\
         <th class=\"n\">control</th><th class=\"n\">open</th><th>KPI (95% CI)</th>\
         <th>control</th><th>lift (95% CI)</th><th>difference</th><th>goal</th></tr></thead>\n<tbody>\n",
    );
    for m in &report.moments {
        let k = &m.kpi;
        let _ = writeln!(
            out,
            "<tr><td class=\"moment\"><a href=\"#moment-{id}\">{title}</a> <span class=\"id\">{id}</span></td>\
             <td class=\"n\">{entries}</td><td class=\"n\">{sent}</td><td class=\"n\">{control}</td>\
             <td class=\"n\">{open}</td><td>{kpi}</td><td>{control_kpi}</td><td>{lift}</td>\
             <td class=\"words\">{verdict}</td><td class=\"words\">{goal}</td></tr>",
            id = escape(&m.moment),
            title = escape(&m.title),
            entries = m.entries_total,
            sent = k.treatment.sends,
            control = k.control.sends,
            open = k.treatment.open + k.control.open,
            kpi = escape(&report::with_interval(k, &k.treatment)),
            control_kpi = escape(&report::with_interval(k, &k.control)),
            lift = escape(&report::lift_text(k)),
            verdict = verdict_html(k.verdict),
            goal = goal_html(k),
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

/// A moment: its KPI in words and figures, then its two charts.
fn section(out: &mut String, m: &MomentReport) {
    let k = &m.kpi;
    let id = escape(&m.moment);
    let (t, c) = (&k.treatment, &k.control);
    let goal = match &k.goal {
        Some(goal) => format!(", goal <code>{}</code>", escape(goal)),
        None => String::new(),
    };
    let _ = write!(
        out,
        r#"<section class="card moment" id="moment-{id}">
<div class="moment-head"><h2>{title}</h2><code class="id">{id}</code><span class="quiet">{channel}</span></div>
<p class="definition">KPI <strong>{kpi}</strong> = <code>{definition}</code> ({unit}){goal}</p>
<dl class="figures">
<div><dt>KPI (95% CI)</dt><dd>{value}</dd></div>
<div><dt>control</dt><dd>{control}</dd></div>
<div><dt>lift (95% CI)</dt><dd>{lift}</dd></div>
<div><dt>difference</dt><dd>{verdict}</dd></div>
<div><dt>goal</dt><dd>{goal_status}</dd></div>
</dl>
<p class="fates">Measured: {measured} of {sends} sends, {converted} converted; control {c_measured} of {c_sends}, {c_converted} converted.<br>{fates}.</p>
<div class="charts">
<figure><figcaption>Entries (by trigger day), sends and control sends (by send day) per day, UTC</figcaption><div class="chart"><canvas id="chart-daily-{id}" role="img" aria-label="Entries, sends and control sends per day"></canvas></div></figure>
<figure><figcaption>{kpi}{percent}: sent vs held out, with 95% intervals</figcaption><div class="chart"><canvas id="chart-kpi-{id}" role="img" aria-label="{kpi}: treatment and control"></canvas></div></figure>
</div>
</section>
"#,
        title = escape(&m.title),
        channel = escape(&m.channel),
        kpi = escape(&k.kpi),
        definition = escape(&m.kpi_definition),
        unit = escape(&k.unit),
        value = escape(&report::with_interval(k, t)),
        control = escape(&report::with_interval(k, c)),
        lift = escape(&report::lift_text(k)),
        verdict = verdict_html(k.verdict),
        goal_status = goal_html(k),
        measured = t.measured,
        sends = t.sends,
        converted = t.conversions,
        c_measured = c.measured,
        c_sends = c.sends,
        c_converted = c.conversions,
        fates = fates(m),
        percent = if k.function == "rate" { " (%)" } else { "" },
    );
}

/// `Entries 5165: sent 756 · control 64 · limited 12 …` (fates with none left out).
fn fates(m: &MomentReport) -> String {
    let mut text = format!("Entries {}", m.entries_total);
    let first = ["sent", "control"];
    let order = first.iter().copied().chain(
        m.entries
            .keys()
            .map(String::as_str)
            .filter(|f| !first.contains(f)),
    );
    let parts: Vec<String> = order
        .filter_map(|fate| {
            let n = m.entries.get(fate).copied().unwrap_or(0);
            (n > 0).then(|| format!("{} {n}", escape(&fate.replace('_', " "))))
        })
        .collect();
    if !parts.is_empty() {
        text.push_str(": ");
        text.push_str(&parts.join(" · "));
    }
    text
}

fn verdict_html(verdict: Verdict) -> String {
    let class = match verdict {
        Verdict::Better => "better",
        Verdict::Worse => "worse",
        _ => "quiet",
    };
    format!("<span class=\"{class}\">{}</span>", verdict.describe())
}

/// `>= 15%` and a coloured badge: met green, missed red, not yet known grey.
fn goal_html(kpi: &MomentKpi) -> String {
    match (&kpi.goal, kpi.goal_status) {
        (Some(goal), Some(status)) => {
            let class = match status {
                GoalStatus::Met => "met",
                GoalStatus::Missed => "missed",
                GoalStatus::NotYetKnown => "unknown",
            };
            format!(
                "<code>{}</code> <span class=\"status {class}\">{}</span>",
                escape(goal),
                status.as_str()
            )
        }
        _ => "<span class=\"quiet\">–</span>".to_string(),
    }
}

/// Text for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

/// JSON safe inside `<script>`: no `</script>` or `<!--` can appear, since `<`, `>` and
/// `&` (only ever inside strings) become `\u003c`, `\u003e`, `\u0026`. Still valid JSON.
fn script_json(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a href="x">Tom & 'Jerry'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn json_cannot_close_its_script() {
        let json = r#"{"title":"</script><script>alert(1)</script><!--"}"#;
        let safe = script_json(json);
        assert!(!safe.contains('<'));
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(
            back["title"], "</script><script>alert(1)</script><!--",
            "still the same JSON"
        );
    }

    #[test]
    fn embedded_scripts_cannot_end_early() {
        for script in [CHART_JS, SCRIPT] {
            let lower = script.to_ascii_lowercase();
            assert!(!lower.contains("</script"));
            assert!(!lower.contains("<!--"));
        }
    }
}
