//! Server-side SVG line charts: pure functions from numbers to markup, so the charts render
//! without JavaScript and nothing is fetched from anywhere. Styling is by CSS class (the page's
//! stylesheet colours `series-*`), never by inline `style` attributes, which the dashboard's
//! Content-Security-Policy forbids.

use std::fmt::Write as _;

use crate::html::esc;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    /// CSS class of the line (`series-mu`, `series-lower`, …).
    pub class: &'static str,
    /// (x, y) points in drawing order; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
    /// Draw a dot at every point (short series read better with them).
    pub markers: bool,
}

/// A horizontal reference line (the effect floor δ).
#[derive(Debug, Clone)]
pub struct HLine {
    pub label: String,
    pub class: &'static str,
    pub y: f64,
}

#[derive(Debug, Clone)]
pub struct Chart {
    /// Element id (tests and scripts find charts by it).
    pub id: &'static str,
    /// Accessible title (also shown as a tooltip).
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub hlines: Vec<HLine>,
    /// Fix the x range instead of fitting it (e.g. 0..n_max for a duel).
    pub x_range: Option<(f64, f64)>,
    /// The x values are whole numbers (reigns): no fractional ticks.
    pub x_integer: bool,
    /// Text shown when there is nothing to draw.
    pub empty_text: String,
}

const W: f64 = 640.0;
const H: f64 = 260.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 42.0;
/// Longest series drawn with a marker at every point.
const MAX_MARKERS: usize = 40;

/// "Nice" tick values covering [lo, hi]: steps of 1, 2 or 5 × 10^k, about `target` of them.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo || target == 0 {
        return Vec::new();
    }
    let raw = (hi - lo) / target as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() * step;
    let mut out = Vec::new();
    let mut v = first;
    while v <= hi + step * 1e-9 && out.len() < 50 {
        // Snap values like 0.30000000000000004 back onto the grid.
        out.push((v / step).round() * step);
        v += step;
    }
    out
}

/// A tick label with just enough decimals for the step between ticks.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 || step <= 0.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    let v = if v.abs() < step * 1e-6 { 0.0 } else { v };
    format!("{v:.decimals$}")
}

fn finite_points(s: &Series) -> impl Iterator<Item = (f64, f64)> + '_ {
    s.points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
}

/// The chart as an `<svg>` element. `data-points` counts the drawn data points (0: empty).
pub fn render(chart: &Chart) -> String {
    let n_points: usize = chart.series.iter().map(|s| finite_points(s).count()).sum();
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart" id="{id}" viewBox="0 0 {W} {H}" role="img" aria-label="{title}" data-points="{n_points}" xmlns="http://www.w3.org/2000/svg"><title>{title}</title>"#,
        id = chart.id,
        title = esc(&chart.title),
    );
    if n_points == 0 {
        let _ = write!(
            out,
            r#"<rect class="plot-bg" x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}"/><text class="empty" x="{cx}" y="{cy}" text-anchor="middle">{text}</text></svg>"#,
            pw = W - LEFT - RIGHT,
            ph = H - TOP - BOTTOM,
            cx = LEFT + (W - LEFT - RIGHT) / 2.0,
            cy = TOP + (H - TOP - BOTTOM) / 2.0,
            text = esc(&chart.empty_text),
        );
        return out;
    }
    // Ranges: every finite point and every reference line must be visible.
    let xs = chart.series.iter().flat_map(finite_points).map(|(x, _)| x);
    let (mut x0, mut x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    if let Some((a, b)) = chart
        .x_range
        .filter(|(a, b)| a.is_finite() && b.is_finite())
    {
        x0 = x0.min(a);
        x1 = x1.max(b);
    }
    let ys = chart
        .series
        .iter()
        .flat_map(finite_points)
        .map(|(_, y)| y)
        .chain(chart.hlines.iter().map(|h| h.y).filter(|y| y.is_finite()));
    let (mut y0, mut y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
        (a.min(y), b.max(y))
    });
    if x1 <= x0 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    if y1 <= y0 {
        let pad = if y0 == 0.0 { 1.0 } else { y0.abs() * 0.05 };
        y0 -= pad;
        y1 += pad;
    }
    let pad = (y1 - y0) * 0.08;
    y0 -= pad;
    y1 += pad;
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| TOP + (1.0 - (y - y0) / (y1 - y0)) * ph;
    let _ = write!(
        out,
        r#"<rect class="plot-bg" x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}"/>"#
    );
    // Grid and tick labels.
    let yt = nice_ticks(y0, y1, 5);
    let ystep = if yt.len() > 1 { yt[1] - yt[0] } else { 1.0 };
    for v in &yt {
        let y = sy(*v);
        let _ = write!(
            out,
            r#"<line class="grid" x1="{LEFT}" x2="{x2:.1}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{tx:.1}" y="{ty:.1}" text-anchor="end">{label}</text>"#,
            x2 = LEFT + pw,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            label = tick_label(*v, ystep),
        );
    }
    let mut xt = nice_ticks(x0, x1, 6);
    if chart.x_integer {
        xt.retain(|v| v.fract() == 0.0);
    }
    let xstep = if xt.len() > 1 { xt[1] - xt[0] } else { 1.0 };
    for v in &xt {
        let x = sx(*v);
        let _ = write!(
            out,
            r#"<line class="grid" x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{y2:.1}"/><text class="tick" x="{x:.1}" y="{ty:.1}" text-anchor="middle">{label}</text>"#,
            y2 = TOP + ph,
            ty = TOP + ph + 16.0,
            label = tick_label(*v, xstep),
        );
    }
    let _ = write!(
        out,
        r#"<text class="axis-label" x="{x:.1}" y="{y:.1}" text-anchor="middle">{xl}</text><text class="axis-label" x="14" y="{ym:.1}" text-anchor="middle" transform="rotate(-90 14 {ym:.1})">{yl}</text>"#,
        x = LEFT + pw / 2.0,
        y = H - 6.0,
        ym = TOP + ph / 2.0,
        xl = esc(&chart.x_label),
        yl = esc(&chart.y_label),
    );
    for h in chart.hlines.iter().filter(|h| h.y.is_finite()) {
        let y = sy(h.y);
        let _ = write!(
            out,
            r#"<line class="hline {class}" x1="{LEFT}" x2="{x2:.1}" y1="{y:.1}" y2="{y:.1}"/>"#,
            class = h.class,
            x2 = LEFT + pw,
        );
    }
    for s in &chart.series {
        let pts: Vec<(f64, f64)> = finite_points(s).map(|(x, y)| (sx(x), sy(y))).collect();
        if pts.is_empty() {
            continue;
        }
        let mut poly = String::new();
        for (x, y) in &pts {
            let _ = write!(poly, "{x:.1},{y:.1} ");
        }
        let _ = write!(
            out,
            r#"<polyline class="series {class}" fill="none" points="{pts}"/>"#,
            class = s.class,
            pts = poly.trim_end(),
        );
        // Markers help short series; on long ones they only smear the line.
        if (s.markers && pts.len() <= MAX_MARKERS) || pts.len() == 1 {
            for (x, y) in &pts {
                let _ = write!(
                    out,
                    r#"<circle class="marker {class}" cx="{x:.1}" cy="{y:.1}" r="3"/>"#,
                    class = s.class
                );
            }
        }
    }
    // Legend along the top: series, then reference lines.
    let mut lx = LEFT;
    let entries = chart
        .series
        .iter()
        .map(|s| (s.label.as_str(), s.class))
        .chain(chart.hlines.iter().map(|h| (h.label.as_str(), h.class)));
    for (label, class) in entries {
        let _ = write!(
            out,
            r#"<line class="series {class}" x1="{lx:.1}" x2="{x2:.1}" y1="12" y2="12"/><text class="legend" x="{tx:.1}" y="16">{label}</text>"#,
            x2 = lx + 18.0,
            tx = lx + 22.0,
            label = esc(label),
        );
        lx += 34.0 + 6.5 * label.chars().count() as f64;
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(points: Vec<(f64, f64)>) -> Chart {
        Chart {
            id: "c",
            title: "t <b>".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![Series {
                label: "s".into(),
                class: "series-mu",
                points,
                markers: false,
            }],
            hlines: vec![HLine {
                label: "δ".into(),
                class: "series-delta",
                y: 0.0,
            }],
            x_range: None,
            x_integer: false,
            empty_text: "nothing yet".into(),
        }
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            nice_ticks(0.0, 10.0, 5),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
        let t = nice_ticks(-0.013, 0.021, 5);
        assert!(t.iter().all(|v| (v * 1000.0).round() % 5.0 == 0.0), "{t:?}");
        assert!(nice_ticks(1.0, 1.0, 5).is_empty());
        assert!(nice_ticks(f64::NAN, 1.0, 5).is_empty());
    }

    #[test]
    fn a_chart_with_data_draws_its_lines() {
        let svg = render(&chart(vec![(0.0, 0.1), (64.0, 0.2), (128.0, f64::NAN)]));
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.ends_with("</svg>"));
        assert!(svg.contains(r#"data-points="2""#));
        assert!(svg.contains("<polyline"));
        assert!(svg.contains("t &lt;b&gt;"), "title escaped");
        assert!(!svg.contains("NaN"));
        assert!(!svg.contains("style="));
    }

    #[test]
    fn empty_and_degenerate_charts_do_not_break() {
        let svg = render(&chart(vec![]));
        assert!(svg.contains(r#"data-points="0""#) && svg.contains("nothing yet"));
        let one = render(&chart(vec![(3.0, 3.0)]));
        assert!(one.contains("<circle") && !one.contains("NaN") && !one.contains("inf"));
        let flat = render(&chart(vec![(1.0, 0.0), (2.0, 0.0)]));
        assert!(!flat.contains("NaN"));
    }
}
