//! Charts as inline SVG: stacked bars over time and horizontal bars per label. Every bar
//! is a `<rect class="bar">` carrying its count in `data-count`, and every chart an
//! `<svg class="chart">` carrying the view id and its total (`data-view`, `data-total`),
//! so a test (or a reader of the source) can see that each chart has data. All text is
//! escaped.

use std::fmt::Write;

use super::html::escape;

/// Colours of the series, in order (chosen to stay apart for common colour blindness).
pub(super) const PALETTE: [&str; 8] = [
    "#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#ff8ab7", "#a463f2", "#97bbf5",
];

/// Width of a time series (a full-width section).
const WIDTH: f64 = 960.0;
/// Width of a bar chart (a half-width section, so its text stays readable).
const BARS_WIDTH: f64 = 620.0;

#[expect(
    clippy::cast_precision_loss,
    reason = "chart geometry: counts far below 2^52"
)]
fn f(n: u64) -> f64 {
    n as f64
}

#[expect(
    clippy::cast_precision_loss,
    reason = "chart geometry: bucket counts far below 2^52"
)]
fn fu(n: usize) -> f64 {
    n as f64
}

/// The opening tag of a chart. Time series stretch to the width of their card; bar charts
/// keep their natural width (shrinking in a narrow card, never growing), so that a chart of
/// two bars in a wide card does not scale its labels up with it.
fn open(view: &str, title: &str, total: u64, width: f64, height: f64) -> String {
    let shown_width = if width > BARS_WIDTH {
        "100%".to_owned()
    } else {
        format!("{width}")
    };
    format!(
        "<svg class=\"chart\" data-view=\"{}\" data-total=\"{total}\" role=\"img\" aria-label=\"{}\" \
         viewBox=\"0 0 {width} {height}\" width=\"{shown_width}\" preserveAspectRatio=\"xMinYMin meet\" \
         xmlns=\"http://www.w3.org/2000/svg\">",
        escape(view),
        escape(title)
    )
}

fn empty(view: &str, title: &str) -> String {
    let mut s = open(view, title, 0, BARS_WIDTH, 60.0);
    s.push_str("<text class=\"empty\" x=\"10\" y=\"35\">no events in this period</text></svg>");
    s
}

/// Stacked bars: one column per bucket, one colour per series.
pub(super) fn time_series(
    view: &str,
    title: &str,
    buckets: &[String],
    series: &[(String, Vec<u64>)],
) -> String {
    let totals: Vec<u64> = (0..buckets.len())
        .map(|i| series.iter().map(|(_, v)| v[i]).sum())
        .collect();
    let total: u64 = totals.iter().sum();
    if total == 0 || buckets.is_empty() {
        return empty(view, title);
    }
    let max = totals.iter().copied().max().unwrap_or(1).max(1);
    let (left, top, plot_h, bottom) = (56.0, 10.0, 200.0, 40.0);
    let height = top + plot_h + bottom;
    let step = (WIDTH - left - 10.0) / fu(buckets.len());
    let bar_w = (step * 0.85).max(0.5);
    let mut s = open(view, title, total, WIDTH, height);
    // Axis and the largest value.
    let _ = write!(
        s,
        "<line class=\"axis\" x1=\"{left}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\"/>\
         <text class=\"tick\" x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\">{max}</text>\
         <text class=\"tick\" x=\"{tx}\" y=\"{y}\" text-anchor=\"end\">0</text>",
        y = top + plot_h,
        x2 = WIDTH - 10.0,
        tx = left - 6.0,
        ty = top + 10.0,
    );
    for (i, bucket) in buckets.iter().enumerate() {
        let x = left + step * fu(i);
        let mut y = top + plot_h;
        for (k, (name, counts)) in series.iter().enumerate() {
            let n = counts[i];
            if n == 0 {
                continue;
            }
            let h = plot_h * f(n) / f(max);
            y -= h;
            let _ = write!(
                s,
                "<rect class=\"bar\" x=\"{x:.2}\" y=\"{y:.2}\" width=\"{bar_w:.2}\" height=\"{h:.2}\" \
                 fill=\"{}\" data-series=\"{}\" data-count=\"{n}\"><title>{} {}: {n}</title></rect>",
                PALETTE[k % PALETTE.len()],
                escape(name),
                escape(bucket),
                escape(name),
            );
        }
        // A date label at each day's first bucket (hour buckets) or every few days.
        let label = if bucket.len() > 10 {
            bucket.ends_with("T00:00Z").then(|| &bucket[5..10])
        } else {
            let every = buckets.len().div_ceil(12).max(1);
            (i % every == 0).then(|| &bucket[5..10])
        };
        if let Some(label) = label {
            let _ = write!(
                s,
                "<text class=\"tick\" x=\"{x:.2}\" y=\"{ly}\">{}</text>",
                escape(label),
                ly = top + plot_h + 16.0,
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// The legend of a time series, as HTML.
pub(super) fn legend(series: &[(String, Vec<u64>)]) -> String {
    let mut s = String::from("<ul class=\"legend\">");
    for (k, (name, counts)) in series.iter().enumerate() {
        let _ = write!(
            s,
            "<li><span class=\"swatch\" style=\"background:{}\"></span>{} ({})</li>",
            PALETTE[k % PALETTE.len()],
            escape(name),
            counts.iter().sum::<u64>()
        );
    }
    s.push_str("</ul>");
    s
}

/// Horizontal bars, one per label, largest first as given.
pub(super) fn bars(view: &str, title: &str, bars: &[(String, u64)]) -> String {
    let total: u64 = bars.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return empty(view, title);
    }
    let max = bars.iter().map(|(_, n)| *n).max().unwrap_or(1).max(1);
    let row = 26.0;
    let label_w = 270.0;
    let plot_w = BARS_WIDTH - label_w - 60.0;
    let height = row * fu(bars.len()) + 8.0;
    let mut s = open(view, title, total, BARS_WIDTH, height);
    for (i, (label, n)) in bars.iter().enumerate() {
        let y = 4.0 + row * fu(i);
        let w = (plot_w * f(*n) / f(max)).max(1.0);
        let shown: String = if label.chars().count() > 28 {
            label.chars().take(27).collect::<String>() + "…"
        } else {
            label.clone()
        };
        let _ = write!(
            s,
            "<text class=\"label\" x=\"{lx}\" y=\"{ty:.1}\" text-anchor=\"end\">{}</text>\
             <rect class=\"bar\" x=\"{label_w}\" y=\"{y:.1}\" width=\"{w:.2}\" height=\"{bh}\" fill=\"{}\" \
             data-label=\"{}\" data-count=\"{n}\"><title>{}: {n}</title></rect>\
             <text class=\"value\" x=\"{vx:.2}\" y=\"{ty:.1}\">{n}</text>",
            escape(&shown),
            PALETTE[0],
            escape(label),
            escape(label),
            lx = label_w - 8.0,
            ty = y + 16.0,
            bh = row - 6.0,
            vx = label_w + w + 6.0,
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_carry_their_counts_and_escape_labels() {
        let s = bars(
            "v",
            "t",
            &[("<script>x</script>".into(), 5), ("b".into(), 2)],
        );
        assert!(s.contains("data-total=\"7\""));
        assert_eq!(s.matches("class=\"bar\"").count(), 2);
        assert!(s.contains("data-count=\"5\""));
        assert!(!s.contains("<script>"));
        assert!(s.contains("&lt;script&gt;x&lt;/script&gt;"));
    }

    #[test]
    fn bar_charts_keep_their_width_and_time_series_stretch() {
        // A chart of two bars in a full-width card must not be scaled up to the card's
        // width (its labels would grow with it); a time series fills its card.
        let s = bars("v", "t", &[("a".into(), 4), ("b".into(), 2)]);
        assert!(s.contains(&format!("width=\"{BARS_WIDTH}\"")), "{s}");
        let s = time_series(
            "v",
            "t",
            &["2024-05-01T00:00Z".into()],
            &[("a".into(), vec![1])],
        );
        assert!(s.contains("width=\"100%\""), "{s}");
    }

    #[test]
    fn an_empty_chart_says_so() {
        assert!(bars("v", "t", &[]).contains("no events in this period"));
        let s = time_series(
            "v",
            "t",
            &["2024-05-01T00:00Z".into()],
            &[("a".into(), vec![0])],
        );
        assert!(s.contains("data-total=\"0\""));
    }

    #[test]
    fn stacked_bars_draw_one_rect_per_non_zero_cell() {
        let buckets = vec![
            "2024-05-01T00:00Z".to_string(),
            "2024-05-01T01:00Z".to_string(),
        ];
        let series = vec![("a".to_string(), vec![3, 0]), ("b".to_string(), vec![1, 2])];
        let s = time_series("v", "t", &buckets, &series);
        assert_eq!(s.matches("class=\"bar\"").count(), 3);
        assert!(s.contains("data-total=\"6\""));
        assert!(s.contains(">05-01</text>"), "a day label at midnight");
    }
}
