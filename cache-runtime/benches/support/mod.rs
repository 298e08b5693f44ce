//! Shared by the benchmarks: quick mode, the 2 KB payload, percentiles of per-operation
//! samples, and the machine's state, so every figure in BENCHMARKS.md is printed with
//! the load it was measured under. Benches may unwrap.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_runtime::testing::CachedResponse;
use cache_runtime::CacheConfig;
use http::{header, HeaderValue, StatusCode};

/// `API_CACHE_BENCH_QUICK=1`: short runs, for a smoke test or a busy machine.
pub fn quick() -> bool {
    std::env::var("API_CACHE_BENCH_QUICK")
        .map(|v| !v.is_empty() && v != "0")
        .unwrap_or(false)
}

/// `full` normally, `quick` in quick mode.
pub fn pick<T>(full: T, quick_value: T) -> T {
    if quick() {
        quick_value
    } else {
        full
    }
}

/// A JSON body of exactly `len` bytes shaped like a page of templates.
pub fn json_body(len: usize) -> Bytes {
    let mut out = String::from("{\"page\":1,\"templates\":[");
    let mut i = 0;
    while out.len() + 120 < len {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"id\":{},\"name\":\"welcome-{i:04}\",\"category\":\"onboarding\",\"language\":\"en\"}}",
            1000 + i
        ));
        i += 1;
    }
    out.push_str("],\"pad\":\"");
    while out.len() + 2 < len {
        out.push('x');
    }
    out.push_str("\"}");
    assert_eq!(out.len(), len);
    Bytes::from(out)
}

/// The 2 KB response every hit-path benchmark stores.
pub fn response_2k() -> CachedResponse {
    CachedResponse {
        status: StatusCode::OK,
        headers: vec![(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body: json_body(2048),
    }
}

/// The configuration the Redis benchmarks use: the defaults, except a response timeout
/// of 1 s instead of 30 ms, so that a scheduling stall on a shared 2-core machine is
/// measured as a slow operation instead of turning a hit into a timeout and a miss.
pub fn redis_config(url: &str) -> CacheConfig {
    CacheConfig::default()
        .with_redis_url(url)
        .with_response_timeout(Duration::from_secs(1))
}

/// Per-operation latencies of one contender.
#[derive(Debug, Default, Clone)]
pub struct Samples(pub Vec<Duration>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn extend(&mut self, other: &Samples) {
        self.0.extend_from_slice(&other.0);
    }

    /// The `q` quantile (0..=1), nearest rank.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    pub fn p50(&self) -> Duration {
        self.quantile(0.50)
    }

    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    pub fn mean(&self) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        self.0.iter().sum::<Duration>() / self.0.len() as u32
    }
}

/// Microseconds with two decimals.
pub fn us(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e6)
}

/// Nanoseconds, whole.
pub fn ns(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e9)
}

/// `a / b` of two durations.
pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-12)
}

/// The 1-minute load average, from /proc/loadavg.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// Prints the header every benchmark starts with.
pub fn banner(name: &str) {
    println!(
        "== {name} (quick mode: {}, load average {}, {} CPUs)",
        quick(),
        load_average(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
}

/// Prints one line of a result table: label, then `key=value` pairs.
pub fn row(label: &str, fields: &[(&str, String)]) {
    let mut line = format!("  {label:<34}");
    for (k, v) in fields {
        line.push_str(&format!(" {k}={v}"));
    }
    println!("{line}");
}

/// Prints one contender's latency distribution: count, p50, p90, p99 and mean, in us.
pub fn latency_row(label: &str, samples: &Samples) {
    row(
        label,
        &[
            ("n", samples.len().to_string()),
            ("p50_us", us(samples.p50())),
            ("p90_us", us(samples.quantile(0.9))),
            ("p99_us", us(samples.p99())),
            ("mean_us", us(samples.mean())),
        ],
    );
}

/// Prints a verdict against a target.
pub fn verdict(what: &str, value: f64, target: &str, met: bool) {
    println!(
        "  -> {what} = {value:.3} (target {target}): {}",
        if met { "MET" } else { "MISSED" }
    );
}

/// Elapsed time of one `op`.
pub async fn timed<F: std::future::Future>(op: F) -> (Duration, F::Output) {
    let started = Instant::now();
    let out = op.await;
    (started.elapsed(), out)
}
