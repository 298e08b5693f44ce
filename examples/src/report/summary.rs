//! Turns a phase's samples into the reference's success figures, and prints them side by
//! side with the reference's own "before" and "target" columns.
//!
//! The server's figures (times, hit rate, requests, database per request) count the
//! requests that reached it; GETs a virtual user's browser answered from its own cache
//! are counted apart (`browser_hits`), as are the 304s and the body bytes they saved.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::report::browser::BrowserOutcome;
use crate::report::driver::{CacheOutcome, Sample};
use crate::report::workload::{Method, Route};

/// The success-table figures of a set of requests.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Figures {
    /// Requests the server answered (any status; transport errors and fresh browser
    /// copies excluded). The times, the hit rate and the rate below are of these.
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
    /// `X-Cache: STALE` responses: served from an entry no longer fresh, as its route
    /// allows, while it was recomputed. Not hits.
    pub stale: u64,
    /// Responses with an `X-Cache` header (cached routes).
    pub lookups: u64,
    /// hits / lookups, percent: only fresh entries count.
    pub hit_rate: f64,
    /// (hits + stale) / lookups, percent: answered from the cache without running the
    /// handler, which is what the reference's hit rate measures.
    pub served_from_cache_rate: f64,
    /// GETs whose body the user was shown (from the server, after a 304, or from the
    /// browser's fresh copy).
    pub gets_shown: u64,
    /// Mean time until a GET's body was shown, ms (a fresh browser copy counts its
    /// lookup, a few microseconds).
    pub gets_shown_avg_ms: f64,
    /// GETs the browser answered from its fresh copy, sending nothing.
    pub browser_hits: u64,
    /// browser_hits / gets_shown, percent.
    pub browser_hit_rate: f64,
    /// Stored body bytes shown by browser hits.
    pub browser_hit_bytes: u64,
    /// GETs sent to the server.
    pub gets_sent: u64,
    /// `304 Not Modified` answers to them.
    pub not_modified: u64,
    /// not_modified / gets_sent, percent.
    pub not_modified_share: f64,
    /// Stored body bytes shown after a 304: what the 304s saved the network.
    pub not_modified_saved_bytes: u64,
    /// Body bytes received for GETs.
    pub get_body_bytes: u64,
}

/// Figures of `samples` over `elapsed`.
pub fn figures<'a>(samples: impl IntoIterator<Item = &'a Sample>, elapsed: Duration) -> Figures {
    let mut latencies: Vec<u32> = Vec::new();
    let (mut hits, mut stale, mut lookups) = (0_u64, 0_u64, 0_u64);
    let mut f = Figures::default();
    let mut shown_us = 0_u64;
    for sample in samples {
        if sample.status == 0 {
            continue;
        }
        if sample.method == Method::Get {
            f.gets_shown += 1;
            shown_us += u64::from(sample.latency_us);
        }
        if sample.browser == BrowserOutcome::Fresh {
            f.browser_hits += 1;
            f.browser_hit_bytes += u64::from(sample.saved_bytes);
            continue;
        }
        latencies.push(sample.latency_us);
        if sample.cache != CacheOutcome::None {
            lookups += 1;
            match sample.cache {
                CacheOutcome::Hit => hits += 1,
                CacheOutcome::Stale => stale += 1,
                _ => {}
            }
        }
        if sample.method == Method::Get {
            f.gets_sent += 1;
            f.get_body_bytes += u64::from(sample.body_bytes);
            if sample.browser == BrowserOutcome::NotModified {
                f.not_modified += 1;
                f.not_modified_saved_bytes += u64::from(sample.saved_bytes);
            }
        }
    }
    latencies.sort_unstable();
    let requests = latencies.len() as u64;
    let minutes = elapsed.as_secs_f64() / 60.0;
    let sum: u64 = latencies.iter().map(|&l| u64::from(l)).sum();
    let share = |part: u64, whole: u64| {
        if whole > 0 {
            part as f64 * 100.0 / whole as f64
        } else {
            0.0
        }
    };
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
        stale,
        lookups,
        hit_rate: share(hits, lookups),
        served_from_cache_rate: share(hits + stale, lookups),
        gets_shown_avg_ms: if f.gets_shown > 0 {
            shown_us as f64 / f.gets_shown as f64 / 1000.0
        } else {
            0.0
        },
        browser_hit_rate: share(f.browser_hits, f.gets_shown),
        not_modified_share: share(f.not_modified, f.gets_sent),
        ..f
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

fn pts(before: f64, after: f64) -> String {
    format!("{:+.1} pts", after - before)
}

/// Bytes in decimal units, as browsers' developer tools show them.
pub(crate) fn bytes(value: u64) -> String {
    let v = value as f64;
    if v >= 1e9 {
        format!("{:.2} GB", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.1} MB", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} kB", v / 1e3)
    } else {
        format!("{value} B")
    }
}

/// Bytes the 304s saved, and their share of the bodies of the GETs sent (received or
/// saved): what revalidation spared the network.
fn saved(f: &Figures) -> String {
    let total = f.get_body_bytes + f.not_modified_saved_bytes;
    let share = if total > 0 {
        f.not_modified_saved_bytes as f64 * 100.0 / total as f64
    } else {
        0.0
    };
    format!("{} ({share:.1}%)", bytes(f.not_modified_saved_bytes))
}

fn share_of(rate: f64, count: u64) -> String {
    format!("{rate:.1}% ({count})")
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
            "Cache hit rate (HIT + STALE)".into(),
            "0%".into(),
            "75%+".into(),
            format!("{:.1}%", off.all.served_from_cache_rate),
            format!("{:.1}%", on.all.served_from_cache_rate),
            pts(
                off.all.served_from_cache_rate,
                on.all.served_from_cache_rate,
            ),
        ],
        [
            "  fresh hits only (HIT)".into(),
            "-".into(),
            "-".into(),
            format!("{:.1}%", off.all.hit_rate),
            format!("{:.1}%", on.all.hit_rate),
            pts(off.all.hit_rate, on.all.hit_rate),
        ],
        [
            "Browser-cache hits (shown, no request)".into(),
            "-".into(),
            "-".into(),
            share_of(off.all.browser_hit_rate, off.all.browser_hits),
            share_of(on.all.browser_hit_rate, on.all.browser_hits),
            pts(off.all.browser_hit_rate, on.all.browser_hit_rate),
        ],
        [
            "304 Not Modified among GETs sent".into(),
            "-".into(),
            "-".into(),
            share_of(off.all.not_modified_share, off.all.not_modified),
            share_of(on.all.not_modified_share, on.all.not_modified),
            pts(off.all.not_modified_share, on.all.not_modified_share),
        ],
        [
            "Body bytes saved by 304s".into(),
            "-".into(),
            "-".into(),
            saved(&off.all),
            saved(&on.all),
            "-".into(),
        ],
        [
            "GET body bytes received".into(),
            "-".into(),
            "-".into(),
            bytes(off.all.get_body_bytes),
            bytes(on.all.get_body_bytes),
            pct(change(
                off.all.get_body_bytes as f64,
                on.all.get_body_bytes as f64,
            )),
        ],
        [
            "Average GET as the user saw it".into(),
            "-".into(),
            "-".into(),
            ms(off.all.gets_shown_avg_ms),
            ms(on.all.gets_shown_avg_ms),
            pct(change(off.all.gets_shown_avg_ms, on.all.gets_shown_avg_ms)),
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
    let mut rows: Vec<[String; 10]> = vec![[
        "Route (GET)".into(),
        "TTL".into(),
        "Requests off/on".into(),
        "Avg off".into(),
        "Avg on".into(),
        "p95 off".into(),
        "p95 on".into(),
        "Hit rate on".into(),
        "304 on".into(),
        "Browser hits on".into(),
    ]];
    // `gets`: the browser columns, which mean nothing for writes (never stored).
    let row = |name: String, ttl: String, a: &Figures, b: &Figures, hit: String, gets: bool| {
        let get_only = |value: String| if gets { value } else { "-".into() };
        [
            name,
            ttl,
            format!("{}/{}", a.requests, b.requests),
            ms(a.avg_ms),
            format!("{} ({})", ms(b.avg_ms), pct(change(a.avg_ms, b.avg_ms))),
            ms(a.p95_ms),
            format!("{} ({})", ms(b.p95_ms), pct(change(a.p95_ms, b.p95_ms))),
            hit,
            get_only(format!("{:.1}%", b.not_modified_share)),
            get_only(format!("{:.1}%", b.browser_hit_rate)),
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
            if b.stale > 0 {
                format!(
                    "{:.1}% +{:.1}% stale",
                    b.hit_rate,
                    b.served_from_cache_rate - b.hit_rate
                )
            } else {
                format!("{:.1}%", b.hit_rate)
            },
            true,
        ));
    }
    rows.push(row(
        "writes (POST/PUT/DELETE)".into(),
        "-".into(),
        &off.writes,
        &on.writes,
        "-".into(),
        false,
    ));
    let mut out = String::new();
    render(&mut out, &rows, 2);
    out
}

/// One instance's share of a run, for [`instance_table`].
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct InstanceFigures {
    /// The requests this instance answered, in the measured window.
    pub figures: Figures,
    /// SQL statements this instance ran in the measured window (its own counter: the
    /// instances share one database file, not one counter).
    pub db_queries: u64,
}

/// Per-instance rows of both runs (instance `i` of each run in row `i`), then the
/// totals: the whole run's figures and the sum of the instances' queries.
pub fn instance_table(
    off: &[InstanceFigures],
    on: &[InstanceFigures],
    off_all: &Figures,
    on_all: &Figures,
) -> String {
    let mut rows: Vec<[String; 8]> = vec![[
        "Instance".into(),
        "Requests off/on".into(),
        "Avg off".into(),
        "Avg on".into(),
        "p95 on".into(),
        "Hit rate on".into(),
        "DB queries off/on".into(),
        "Queries/request on".into(),
    ]];
    let per_request = |queries: u64, f: &Figures| {
        if f.requests == 0 {
            "-".to_owned()
        } else {
            format!("{:.2}", queries as f64 / f.requests as f64)
        }
    };
    let row = |name: String, a: &InstanceFigures, b: &InstanceFigures| {
        [
            name,
            format!("{}/{}", a.figures.requests, b.figures.requests),
            ms(a.figures.avg_ms),
            ms(b.figures.avg_ms),
            ms(b.figures.p95_ms),
            format!("{:.1}%", b.figures.hit_rate),
            format!(
                "{}/{}",
                count(a.db_queries as f64),
                count(b.db_queries as f64)
            ),
            per_request(b.db_queries, &b.figures),
        ]
    };
    for (index, (a, b)) in off.iter().zip(on).enumerate() {
        rows.push(row(format!("{}", index + 1), a, b));
    }
    let total = |parts: &[InstanceFigures], all: &Figures| InstanceFigures {
        figures: *all,
        db_queries: parts.iter().map(|p| p.db_queries).sum(),
    };
    rows.push(row("all".into(), &total(off, off_all), &total(on, on_all)));
    let mut out = String::new();
    render(&mut out, &rows, 1);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::workload::Purpose;

    fn get(browser: BrowserOutcome, status: u16, body_bytes: u32, saved_bytes: u32) -> Sample {
        Sample {
            at_ms: 0,
            route: Route::Templates,
            method: Method::Get,
            purpose: Purpose::Read,
            status,
            latency_us: if browser == BrowserOutcome::Fresh {
                3
            } else {
                2_000
            },
            cache: if browser == BrowserOutcome::Fresh {
                CacheOutcome::None
            } else {
                CacheOutcome::Hit
            },
            browser,
            instance: None,
            body_bytes,
            saved_bytes,
        }
    }

    #[test]
    fn browser_hits_are_not_server_requests_and_304s_count_the_bytes_they_saved() {
        let samples = [
            get(BrowserOutcome::Network, 200, 1_000, 0),
            get(BrowserOutcome::NotModified, 304, 0, 1_000),
            get(BrowserOutcome::NotModified, 304, 0, 1_000),
            get(BrowserOutcome::Fresh, 200, 0, 1_000),
        ];
        let f = figures(&samples, Duration::from_secs(60));
        assert_eq!(f.requests, 3, "the fresh copy never reached the server");
        assert_eq!((f.hits, f.lookups), (3, 3));
        assert_eq!((f.gets_shown, f.gets_sent), (4, 3));
        assert_eq!((f.browser_hits, f.browser_hit_bytes), (1, 1_000));
        assert_eq!(f.not_modified, 2);
        assert!((f.not_modified_share - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!(f.not_modified_saved_bytes, 2_000);
        assert_eq!(f.get_body_bytes, 1_000);
        assert!((f.avg_ms - 2.0).abs() < 1e-9, "server time: {}", f.avg_ms);
        assert!((f.gets_shown_avg_ms - 6.003 / 4.0).abs() < 1e-9);
        assert_eq!(saved(&f), "2.0 kB (66.7%)");
    }
}
