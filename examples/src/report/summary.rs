//! Turns a phase's samples into the reference's success figures, and prints them side by
//! side with the reference's own "before" and "target" columns.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::report::driver::{CacheOutcome, Sample};
use crate::report::workload::{Method, Route};

/// The success-table figures of a set of requests.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Figures {
    /// Requests answered (any status; transport errors excluded).
    pub requests: u64,
    /// Requests per minute.
    pub requests_per_minute: f64,
    /// Mean response time, ms.
    pub avg_ms: f64,
    /// Median response time, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// `X-Cache: HIT` responses.
    pub hits: u64,
    /// Responses with an `X-Cache` header (cached routes).
    pub lookups: u64,
    /// hits / lookups, percent.
    pub hit_rate: f64,
}

/// Figures of `samples` over `elapsed`.
pub fn figures<'a>(samples: impl IntoIterator<Item = &'a Sample>, elapsed: Duration) -> Figures {
    let mut latencies: Vec<u32> = Vec::new();
    let (mut hits, mut lookups) = (0_u64, 0_u64);
    for sample in samples {
        if sample.status == 0 {
            continue;
        }
        latencies.push(sample.latency_us);
        if sample.cache != CacheOutcome::None {
            lookups += 1;
            if sample.cache == CacheOutcome::Hit {
                hits += 1;
            }
        }
    }
    latencies.sort_unstable();
    let requests = latencies.len() as u64;
    let minutes = elapsed.as_secs_f64() / 60.0;
    let sum: u64 = latencies.iter().map(|&l| u64::from(l)).sum();
    Figures {
        requests,
        requests_per_minute: if minutes > 0.0 {
            requests as f64 / minutes
        } else {
            0.0
        },
        avg_ms: if requests > 0 {
            sum as f64 / requests as f64 / 1000.0
        } else {
            0.0
        },
        p50_ms: percentile_ms(&latencies, 50.0),
        p95_ms: percentile_ms(&latencies, 95.0),
        p99_ms: percentile_ms(&latencies, 99.0),
        hits,
        lookups,
        hit_rate: if lookups > 0 {
            hits as f64 * 100.0 / lookups as f64
        } else {
            0.0
        },
    }
}

/// Nearest-rank percentile of sorted microseconds, in ms.
pub fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    f64::from(sorted_us[rank.clamp(1, sorted_us.len()) - 1]) / 1000.0
}

/// One second of a phase, for the chart.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Second {
    /// Seconds since the phase started.
    pub second: u32,
    /// Requests sent in it.
    pub requests: u64,
    /// Median response time, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// Hit rate of its cached-route responses, percent (None without any).
    pub hit_rate: Option<f64>,
}

/// Per-second figures.
pub fn timeline(samples: &[Sample]) -> Vec<Second> {
    let mut buckets: BTreeMap<u32, Vec<&Sample>> = BTreeMap::new();
    for sample in samples.iter().filter(|s| s.status != 0) {
        buckets.entry(sample.at_ms / 1000).or_default().push(sample);
    }
    buckets
        .into_iter()
        .map(|(second, samples)| {
            let f = figures(samples.iter().copied(), Duration::from_secs(1));
            Second {
                second,
                requests: f.requests,
                p50_ms: f.p50_ms,
                p95_ms: f.p95_ms,
                hit_rate: (f.lookups > 0).then_some(f.hit_rate),
            }
        })
        .collect()
}

/// A phase's figures with the database's.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseFigures {
    /// All requests.
    pub all: Figures,
    /// SQL statements the demo ran during the phase.
    pub db_queries: u64,
    /// Per minute.
    pub db_queries_per_minute: f64,
    /// Per request.
    pub db_queries_per_request: f64,
    /// GET requests per route.
    pub routes: BTreeMap<Route, Figures>,
    /// Writes (POST, PUT, DELETE).
    pub writes: Figures,
}

/// Figures of one phase.
pub fn phase_figures(samples: &[Sample], elapsed: Duration, db_queries: u64) -> PhaseFigures {
    let all = figures(samples, elapsed);
    let minutes = elapsed.as_secs_f64() / 60.0;
    let mut routes = BTreeMap::new();
    for route in Route::ALL {
        let f = figures(
            samples
                .iter()
                .filter(|s| s.route == route && s.method == Method::Get),
            elapsed,
        );
        routes.insert(route, f);
    }
    PhaseFigures {
        all,
        db_queries,
        db_queries_per_minute: if minutes > 0.0 {
            db_queries as f64 / minutes
        } else {
            0.0
        },
        db_queries_per_request: if all.requests > 0 {
            db_queries as f64 / all.requests as f64
        } else {
            0.0
        },
        routes,
        writes: figures(samples.iter().filter(|s| s.method != Method::Get), elapsed),
    }
}

/// Relative change from `before` to `after`, percent (negative: smaller).
pub fn change(before: f64, after: f64) -> f64 {
    if before == 0.0 {
        0.0
    } else {
        (after - before) * 100.0 / before
    }
}

pub(crate) fn ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0} ms")
    } else if value >= 10.0 {
        format!("{value:.1} ms")
    } else {
        format!("{value:.2} ms")
    }
}

fn count(value: f64) -> String {
    let rounded = value.round() as u64;
    let digits = rounded.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn pct(value: f64) -> String {
    format!("{value:+.1}%")
}

/// The success table: the reference's columns, then cache off, cache on, change.
pub fn success_table(off: &PhaseFigures, on: &PhaseFigures) -> String {
    let mut out = String::new();
    let rows: Vec<[String; 6]> = vec![
        [
            "Metric".into(),
            "Reference before".into(),
            "Reference target".into(),
            "Cache off".into(),
            "Cache on".into(),
            "Change".into(),
        ],
        [
            "Average response time".into(),
            "500 ms".into(),
            "100 ms (-80%)".into(),
            ms(off.all.avg_ms),
            ms(on.all.avg_ms),
            pct(change(off.all.avg_ms, on.all.avg_ms)),
        ],
        [
            "p50 response time".into(),
            "-".into(),
            "-".into(),
            ms(off.all.p50_ms),
            ms(on.all.p50_ms),
            pct(change(off.all.p50_ms, on.all.p50_ms)),
        ],
        [
            "p95 response time".into(),
            "-".into(),
            "-".into(),
            ms(off.all.p95_ms),
            ms(on.all.p95_ms),
            pct(change(off.all.p95_ms, on.all.p95_ms)),
        ],
        [
            "p99 response time".into(),
            "-".into(),
            "-".into(),
            ms(off.all.p99_ms),
            ms(on.all.p99_ms),
            pct(change(off.all.p99_ms, on.all.p99_ms)),
        ],
        [
            "Database queries per minute".into(),
            "1,000".into(),
            "200 (-80%)".into(),
            count(off.db_queries_per_minute),
            count(on.db_queries_per_minute),
            pct(change(off.db_queries_per_minute, on.db_queries_per_minute)),
        ],
        [
            "Database queries per request".into(),
            "-".into(),
            "-".into(),
            format!("{:.2}", off.db_queries_per_request),
            format!("{:.2}", on.db_queries_per_request),
            pct(change(
                off.db_queries_per_request,
                on.db_queries_per_request,
            )),
        ],
        [
            "Cache hit rate".into(),
            "0%".into(),
            "75%+".into(),
            format!("{:.1}%", off.all.hit_rate),
            format!("{:.1}%", on.all.hit_rate),
            format!("{:+.1} pts", on.all.hit_rate - off.all.hit_rate),
        ],
        [
            "Requests per minute".into(),
            "-".into(),
            "-".into(),
            count(off.all.requests_per_minute),
            count(on.all.requests_per_minute),
            pct(change(
                off.all.requests_per_minute,
                on.all.requests_per_minute,
            )),
        ],
    ];
    render(&mut out, &rows, 3);
    out
}

/// Per-route rows: GETs of each route, then the writes.
pub fn route_table(off: &PhaseFigures, on: &PhaseFigures, ttls: &BTreeMap<Route, u64>) -> String {
    let mut rows: Vec<[String; 8]> = vec![[
        "Route (GET)".into(),
        "TTL".into(),
        "Requests off/on".into(),
        "Avg off".into(),
        "Avg on".into(),
        "p95 off".into(),
        "p95 on".into(),
        "Hit rate on".into(),
    ]];
    let row = |name: String, ttl: String, a: &Figures, b: &Figures, hit: String| {
        [
            name,
            ttl,
            format!("{}/{}", a.requests, b.requests),
            ms(a.avg_ms),
            format!("{} ({})", ms(b.avg_ms), pct(change(a.avg_ms, b.avg_ms))),
            ms(a.p95_ms),
            format!("{} ({})", ms(b.p95_ms), pct(change(a.p95_ms, b.p95_ms))),
            hit,
        ]
    };
    for route in Route::ALL {
        let (Some(a), Some(b)) = (off.routes.get(&route), on.routes.get(&route)) else {
            continue;
        };
        let ttl = ttls
            .get(&route)
            .map(|t| format!("{t} s"))
            .unwrap_or_else(|| "-".into());
        rows.push(row(
            route.path().into(),
            ttl,
            a,
            b,
            format!("{:.1}%", b.hit_rate),
        ));
    }
    rows.push(row(
        "writes (POST/PUT/DELETE)".into(),
        "-".into(),
        &off.writes,
        &on.writes,
        "-".into(),
    ));
    let mut out = String::new();
    render(&mut out, &rows, 2);
    out
}

fn render<const N: usize>(out: &mut String, rows: &[[String; N]], split: usize) {
    let mut widths = [0_usize; N];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    for (r, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i == split {
                line.push_str("| ");
            }
            let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if r == 0 {
            let total: usize = widths.iter().map(|w| w + 2).sum::<usize>() + 2;
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
}
