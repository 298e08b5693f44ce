//! The report's chart, written as SVG by hand: response times per second with the cache
//! off and on (log scale), the hit rate per second with the cache on, and the average
//! response time of each route off and on.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::report::summary::{Figures, Second};
use crate::report::workload::Route;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
const OFF_COLOR: &str = "#d1495b";
const ON_COLOR: &str = "#2e933c";

/// What the chart shows.
pub struct ChartData<'a> {
    /// Per-second figures with the cache off.
    pub off: &'a [Second],
    /// Per-second figures with the cache on.
    pub on: &'a [Second],
    /// GET figures per route, cache off.
    pub routes_off: &'a BTreeMap<Route, Figures>,
    /// GET figures per route, cache on.
    pub routes_on: &'a BTreeMap<Route, Figures>,
    /// Seconds of warm-up at the start of each run (shaded; not in the figures).
    pub warmup_s: f64,
    /// A subtitle (workload summary).
    pub subtitle: String,
}

/// The SVG document.
pub fn render(data: &ChartData<'_>) -> String {
    let mut svg = String::new();
    let height = 60.0 + 300.0 + 260.0 + 330.0;
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="22" font-size="16" font-weight="bold">api-cache rollout report</text>"#
    );
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="38" fill="#555">{}</text>"##,
        escape(&data.subtitle)
    );
    response_times(&mut svg, data, 80.0, 250.0);
    hit_rate(&mut svg, data.on, data.warmup_s, 390.0, 200.0);
    route_bars(&mut svg, data, 650.0, 290.0);
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn plot_width() -> f64 {
    WIDTH - LEFT - RIGHT
}

fn max_second(data: &ChartData<'_>) -> f64 {
    data.off
        .iter()
        .chain(data.on)
        .map(|s| f64::from(s.second))
        .fold(1.0, f64::max)
}

/// Log-scale y between `lo` and `hi` ms.
fn log_y(value: f64, lo: f64, hi: f64, top: f64, height: f64) -> f64 {
    let v = value.clamp(lo, hi);
    top + height - (v.log10() - lo.log10()) / (hi.log10() - lo.log10()) * height
}

fn decades(max_ms: f64) -> (f64, f64) {
    let hi = 10f64.powf(max_ms.max(1.0).log10().ceil());
    (0.1, hi)
}

fn ms_label(v: f64) -> String {
    if v >= 1000.0 {
        format!("{} s", v / 1000.0)
    } else if v >= 1.0 {
        format!("{v} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn log_axis(svg: &mut String, lo: f64, hi: f64, top: f64, height: f64, x0: f64, x1: f64) {
    let mut v = lo;
    while v <= hi * 1.0001 {
        let y = log_y(v, lo, hi, top, height);
        let _ = writeln!(
            svg,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
            x0 - 6.0,
            y + 4.0,
            ms_label(v)
        );
        v *= 10.0;
    }
}

fn time_axis(svg: &mut String, max_s: f64, top: f64, height: f64) {
    let step = if max_s > 120.0 {
        30.0
    } else if max_s > 40.0 {
        10.0
    } else {
        5.0
    };
    let mut s = 0.0;
    while s <= max_s {
        let x = LEFT + s / max_s * plot_width();
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{}" stroke="#f0f0f0"/><text x="{x:.1}" y="{}" text-anchor="middle" fill="#555">{s}s</text>"##,
            top + height,
            top + height + 16.0
        );
        s += step;
    }
}

fn warmup_band(svg: &mut String, warmup_s: f64, max_s: f64, top: f64, height: f64) {
    if warmup_s <= 0.0 {
        return;
    }
    let w = (warmup_s / max_s).min(1.0) * plot_width();
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{top}" width="{w:.1}" height="{height}" fill="#f3f3f3"/><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#888">warm-up</text>"##,
        LEFT + w / 2.0,
        top + 14.0
    );
}

fn polyline(svg: &mut String, points: &[(f64, f64)], color: &str, dashed: bool) {
    if points.is_empty() {
        return;
    }
    let coords: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    let dash = if dashed {
        r#" stroke-dasharray="5,4""#
    } else {
        ""
    };
    let _ = writeln!(
        svg,
        r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"#,
        coords.join(" ")
    );
}

fn legend(svg: &mut String, x: f64, y: f64, items: &[(&str, &str, bool)]) {
    let mut x = x;
    for (label, color, dashed) in items {
        let dash = if *dashed {
            r#" stroke-dasharray="5,4""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}" fill="#333">{}</text>"##,
            x + 24.0,
            x + 30.0,
            y + 4.0,
            escape(label)
        );
        x += 40.0 + label.len() as f64 * 6.5;
    }
}

fn response_times(svg: &mut String, data: &ChartData<'_>, top: f64, height: f64) {
    let max_ms = data
        .off
        .iter()
        .chain(data.on)
        .map(|s| s.p95_ms)
        .fold(1.0, f64::max);
    let (lo, hi) = decades(max_ms);
    let max_s = max_second(data);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{}" font-size="14" font-weight="bold">Response time per second (log scale)</text>"#,
        top - 6.0
    );
    warmup_band(svg, data.warmup_s, max_s, top + 10.0, height - 10.0);
    log_axis(svg, lo, hi, top + 10.0, height - 10.0, LEFT, WIDTH - RIGHT);
    time_axis(svg, max_s, top + 10.0, height - 10.0);
    let series = |seconds: &[Second], p95: bool| -> Vec<(f64, f64)> {
        seconds
            .iter()
            .map(|s| {
                let v = if p95 { s.p95_ms } else { s.p50_ms };
                (
                    LEFT + f64::from(s.second) / max_s * plot_width(),
                    log_y(v, lo, hi, top + 10.0, height - 10.0),
                )
            })
            .collect()
    };
    polyline(svg, &series(data.off, true), OFF_COLOR, true);
    polyline(svg, &series(data.off, false), OFF_COLOR, false);
    polyline(svg, &series(data.on, true), ON_COLOR, true);
    polyline(svg, &series(data.on, false), ON_COLOR, false);
    legend(
        svg,
        LEFT + 300.0,
        top - 10.0,
        &[
            ("off p50", OFF_COLOR, false),
            ("off p95", OFF_COLOR, true),
            ("on p50", ON_COLOR, false),
            ("on p95", ON_COLOR, true),
        ],
    );
}

fn hit_rate(svg: &mut String, on: &[Second], warmup_s: f64, top: f64, height: f64) {
    let max_s = on.iter().map(|s| f64::from(s.second)).fold(1.0, f64::max);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{}" font-size="14" font-weight="bold">Cache hit rate per second (cache on)</text>"#,
        top - 6.0
    );
    let top = top + 10.0;
    let height = height - 10.0;
    warmup_band(svg, warmup_s, max_s, top, height);
    for pct in [0.0, 25.0, 50.0, 75.0, 100.0] {
        let y = top + height - pct / 100.0 * height;
        let (stroke, dash) = if pct == 75.0 {
            ("#999", r#" stroke-dasharray="3,3""#)
        } else {
            ("#e5e5e5", "")
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="{stroke}"{dash}/><text x="{}" y="{:.1}" text-anchor="end" fill="#555">{pct}%</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="{:.1}" text-anchor="end" fill="#777">reference target 75%</text>"##,
        WIDTH - RIGHT - 4.0,
        top + height * 0.25 - 4.0
    );
    time_axis(svg, max_s, top, height);
    let points: Vec<(f64, f64)> = on
        .iter()
        .filter_map(|s| {
            s.hit_rate.map(|h| {
                (
                    LEFT + f64::from(s.second) / max_s * plot_width(),
                    top + height - h / 100.0 * height,
                )
            })
        })
        .collect();
    polyline(svg, &points, ON_COLOR, false);
}

fn route_bars(svg: &mut String, data: &ChartData<'_>, top: f64, height: f64) {
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{}" font-size="14" font-weight="bold">Average response time per route, GET (log scale)</text>"#,
        top - 6.0
    );
    let label_width = 170.0;
    let x0 = LEFT + label_width - 80.0;
    let x1 = WIDTH - RIGHT;
    let max_ms = data
        .routes_off
        .values()
        .chain(data.routes_on.values())
        .map(|f| f.avg_ms)
        .fold(1.0, f64::max);
    let (lo, hi) = decades(max_ms);
    let scale = |v: f64| {
        let v = v.clamp(lo, hi);
        x0 + (v.log10() - lo.log10()) / (hi.log10() - lo.log10()) * (x1 - x0)
    };
    let mut v = lo;
    while v <= hi * 1.0001 {
        let x = scale(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#e5e5e5"/><text x="{x:.1}" y="{}" text-anchor="middle" fill="#555">{}</text>"##,
            top + 6.0,
            top + height - 14.0,
            top + height,
            ms_label(v)
        );
        v *= 10.0;
    }
    let rows = Route::ALL.len() as f64;
    let band = (height - 24.0) / rows;
    for (i, route) in Route::ALL.iter().enumerate() {
        let y = top + 8.0 + i as f64 * band;
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{:.1}" text-anchor="end" fill="#333">{}</text>"##,
            x0 - 8.0,
            y + band / 2.0 + 4.0,
            route.path()
        );
        for (j, (figures, color)) in [(data.routes_off, OFF_COLOR), (data.routes_on, ON_COLOR)]
            .iter()
            .enumerate()
        {
            let Some(f) = figures.get(route) else {
                continue;
            };
            let bar_y = y + 3.0 + j as f64 * (band - 6.0) / 2.0;
            let w = (scale(f.avg_ms) - x0).max(1.0);
            let _ = writeln!(
                svg,
                r##"<rect x="{x0:.1}" y="{bar_y:.1}" width="{w:.1}" height="{:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}" fill="#333" font-size="10">{:.2} ms</text>"##,
                (band - 6.0) / 2.0 - 1.0,
                x0 + w + 4.0,
                bar_y + (band - 6.0) / 4.0 + 3.0,
                f.avg_ms
            );
        }
    }
    legend(
        svg,
        LEFT + 420.0,
        top - 10.0,
        &[
            ("cache off", OFF_COLOR, false),
            ("cache on", ON_COLOR, false),
        ],
    );
}
