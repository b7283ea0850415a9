//! The page: one HTML document with inline CSS and the charts of `svg.rs`, no script,
//! and a Content-Security-Policy that forbids every fetch and every script.

use std::fmt::Write;

use super::{Alerts, Report, ViewData, svg};
use crate::sentinel_content::View;

/// Escapes text for HTML element content and quoted attribute values (also inside
/// inline SVG): `&`, `<`, `>`, `"` and `'`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Nothing may be fetched or run; inline styles are allowed.
pub(super) const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; script-src 'none'";

const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 0; background: #f6f7f9; color: #1d2330; }
header { background: #1d2330; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 2px 0; color: #c9cfdb; font-size: 14px; }
main { padding: 16px 32px 40px; display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 16px; }
section { background: #fff; border: 1px solid #dde1e8; border-radius: 6px; padding: 12px 16px; min-width: 0; }
section.wide { grid-column: 1 / -1; }
h2 { font-size: 16px; margin: 4px 0 2px; }
p.note { margin: 0 0 8px; color: #5b6475; font-size: 13px; }
.totals { display: flex; gap: 24px; }
.totals div { font-size: 13px; color: #c9cfdb; }
.totals b { display: block; font-size: 20px; color: #fff; }
svg.chart { display: block; max-width: 100%; height: auto; }
svg .tick { font-size: 12px; fill: #3b4354; }
svg .label, svg .value { font-size: 16px; fill: #3b4354; }
svg .empty { font-size: 14px; fill: #5b6475; }
svg .axis { stroke: #9aa3b2; stroke-width: 1; }
ul.legend { list-style: none; padding: 0; margin: 6px 0 0; display: flex; flex-wrap: wrap; gap: 4px 16px; font-size: 12px; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 5px; border-radius: 2px; }
table { border-collapse: collapse; width: 100%; font-size: 12px; }
th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid #e6e9ef; vertical-align: top; overflow-wrap: anywhere; }
th { background: #f0f2f5; }
.none { color: #5b6475; font-style: italic; }
footer { padding: 0 32px 24px; color: #5b6475; font-size: 12px; }
";

fn table(columns: &[String], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table><thead><tr>");
    for c in columns {
        let _ = write!(s, "<th>{}</th>", escape(c));
    }
    s.push_str("</tr></thead><tbody>");
    for r in rows {
        s.push_str("<tr>");
        for v in r {
            let _ = write!(s, "<td>{}</td>", escape(v));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

fn section(view: &View, data: &ViewData) -> String {
    let wide = !matches!(data, ViewData::Bars(_));
    let mut s = format!(
        "<section id=\"{}\"{}><h2>{}</h2><p class=\"note\">{}</p>",
        escape(view.id),
        if wide { " class=\"wide\"" } else { "" },
        escape(view.title),
        escape(view.note)
    );
    match data {
        ViewData::TimeSeries { buckets, series } => {
            s.push_str(&svg::time_series(view.id, view.title, buckets, series));
            s.push_str(&svg::legend(series));
        }
        ViewData::Bars(bars) => s.push_str(&svg::bars(view.id, view.title, bars)),
        ViewData::Table { columns, rows } if rows.is_empty() => {
            let _ = columns;
            s.push_str("<p class=\"none\">no events in this period</p>");
        }
        ViewData::Table { columns, rows } => s.push_str(&table(columns, rows)),
    }
    s.push_str("</section>");
    s
}

fn alerts_section(alerts: &Alerts) -> String {
    let mut s = String::from(
        "<section id=\"alerts\" class=\"wide\"><h2>Alerts</h2>\
         <p class=\"note\">Alerts the detection rules raised in this period (the store's alerts table).</p>",
    );
    match alerts {
        Alerts::NoDetectionRun => s.push_str(
            "<p class=\"none\" data-alerts=\"none\">no detection run: the detection rules have not \
             been evaluated on this store (`mirotrail run` evaluates them; `mirotrail detect` \
             hunts over history).</p>",
        ),
        Alerts::Raised { rows, .. } if rows.is_empty() => {
            s.push_str("<p class=\"none\" data-alerts=\"0\">no alerts in this period.</p>")
        }
        Alerts::Raised {
            columns,
            rows,
            by_severity,
        } => {
            s.push_str(&svg::bars(
                "alerts-by-severity",
                "Alerts by severity",
                by_severity,
            ));
            s.push_str(&table(columns, rows));
        }
    }
    s.push_str("</section>");
    s
}

/// The whole page.
pub(super) fn page(report: &Report) -> String {
    let orgs = if report.organizations.is_empty() {
        String::new()
    } else {
        format!(
            "<p>Organization: {}</p>",
            escape(&report.organizations.join(", "))
        )
    };
    let mut s = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Miro activity report</title><style>{STYLE}</style></head><body>\
         <header><h1>Miro activity report</h1>{orgs}\
         <p>From {since} to {until} (UTC), from the mirotrail store.</p>\
         <div class=\"totals\"><div><b>{audit}</b>audit events</div><div><b>{content}</b>content log items</div></div>\
         </header><main>",
        csp = CONTENT_SECURITY_POLICY,
        since = escape(&report.since.to_iso()),
        until = escape(&report.until.to_iso()),
        audit = report.audit_events,
        content = report.content_items,
    );
    for (view, data) in &report.views {
        s.push_str(&section(view, data));
    }
    s.push_str(&alerts_section(&report.alerts));
    s.push_str(
        "</main><footer>Written by mirotrail report. The same views, over Microsoft Sentinel: \
         <code>mirotrail template workbook</code>.</footer></body></html>\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_every_character_that_can_open_markup() {
        assert_eq!(
            escape("<a href='x'>\"&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&quot;&amp;&quot;&lt;/a&gt;"
        );
    }
}
