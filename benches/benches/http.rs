//! HTTP end to end over loopback (BENCHMARKS.md §6): an axum server (its own tokio
//! runtime) and a load generator (HTTP/1.1 clients, keep-alive, one request in flight
//! per connection, on a second runtime) in one process; Redis in its own.
//!
//! The clients work as wrk's do (the measurement was `wrk -t1 -c32`): a request
//! written as fixed bytes, the response's head scanned for its status, `Content-Length`
//! and `X-Cache`, the body counted, nothing parsed into a header map. The load generator
//! shares the machine's CPUs with the server, so a client that spent a microsecond on
//! each header would charge the routes that send more headers for the client's work.
//! `API_CACHE_BENCH_CLIENT=hyper` loads with hyper's client instead (a `HeaderMap` per
//! response), as this bench did before.
//!
//! The routes (`http/routes.rs`) all answer the same 2 KB of JSON: the static floor, our
//! `#[cached]` hits on memory and on Redis, the peer axum-response-cache's hits, one raw
//! Redis GET, and the uncached handler. The bench lives in the `cache-benches` package so
//! that the peer is not compiled by every test build of the workspace.
//!
//! Each route is loaded in turn for a few seconds, round after round; the figure is
//! requests per second and the latency percentiles of the measured window.
//! `API_CACHE_BENCH_CONNECTIONS` sets the number of connections (default 32).
//!
//! `API_CACHE_BENCH_RATE=N` loads every route at the same N requests per second instead
//! (each connection sends its next request on a schedule of its own, one every
//! `connections / N` seconds, or at once when behind it) and compares the server's CPU
//! time per request. At full load a slower route's server batches more requests into
//! each wake-up and system call, which lowers its CPU per request: only at one rate is
//! the difference between two routes what one request costs more on the other.

// The helpers the runtime's own benchmarks share (timing rounds, table rows).
#[path = "http/routes.rs"]
mod routes;
#[path = "../../cache-runtime/benches/support/mod.rs"]
mod support;
#[path = "http/wire.rs"]
mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use support::{pick, row, us, verdict, Samples};

const ROUTES: [&str; 9] = [
    "/static",
    "/static-hit-headers",
    "/cached-memory",
    "/cached-redis",
    "/redis-get",
    "/redis-mget",
    "/uncached",
    "/peer",
    "/cached-local",
];

/// CPU time (user + system) consumed so far by this process's threads named `name`,
/// from /proc/self/task/*/stat, in clock ticks (USER_HZ, 100 per second on Linux).
fn thread_cpu_ticks(name: &str) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`: comm may hold spaces, so split after its parenthesis.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != name {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // After the comm: state is field 3 of the line, utime 14 and stime 15.
        total += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    }
    total
}

/// CPU time (user + system) consumed so far by the process whose command line contains
/// `needle` (the private redis-server), in clock ticks; 0 when there is none.
fn process_cpu_ticks(needle: &str) -> u64 {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(needle) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        return fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    }
    0
}

const TICK_US: f64 = 10_000.0;

struct RouteResult {
    rps: Vec<f64>,
    latencies: Samples,
    wrong: u64,
    requests: u64,
    server_ticks: u64,
    loadgen_ticks: u64,
    redis_ticks: u64,
}

/// The request rate of `API_CACHE_BENCH_RATE`, over all connections, if set.
fn fixed_rate() -> Option<f64> {
    std::env::var("API_CACHE_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|rate: &f64| *rate > 0.0)
}

/// A connection's schedule under a fixed rate: when its next request is due.
struct Pace {
    every: Duration,
    next: tokio::time::Instant,
}

impl Pace {
    fn new(every: Option<Duration>) -> Option<Pace> {
        every.map(|every| Pace {
            every,
            // Connections start spread over one period, not all at once.
            next: tokio::time::Instant::now() + every.mul_f64(spread_fraction()),
        })
    }

    /// Waits until the next request is due (not at all when behind the schedule).
    async fn wait(pace: &mut Option<Pace>) {
        if let Some(pace) = pace {
            tokio::time::sleep_until(pace.next).await;
            pace.next += pace.every;
        }
    }
}

/// A fraction in [0, 1) that differs between connections (their start offsets).
fn spread_fraction() -> f64 {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // The golden ratio's sequence: evenly spread, whatever the number of connections.
    (NEXT.fetch_add(1, Ordering::Relaxed) as f64 * 0.618_033_988_75).fract()
}

/// One connection: requests `path` until `stop`, recording latencies while `measuring`.
async fn connection(
    addr: SocketAddr,
    path: &'static str,
    every: Option<Duration>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> (Samples, u64) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let expect_hit = path.starts_with("/cached");
    let (mut samples, mut wrong) = (Samples::default(), 0u64);
    let mut pace = Pace::new(every);
    while !stop.load(Ordering::Relaxed) {
        Pace::wait(&mut pace).await;
        let request = Request::get(path)
            .header(header::HOST, "127.0.0.1")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let started = Instant::now();
        let response = sender.send_request(request).await.unwrap();
        let hit = response.headers().get("x-cache").map(|v| v == "HIT");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let elapsed = started.elapsed();
        if measuring.load(Ordering::Relaxed) {
            samples.push(elapsed);
            if body.len() != 2048 || (expect_hit && hit != Some(true)) {
                wrong += 1;
            }
        }
    }
    (samples, wrong)
}

/// Whether the connections use hyper's client (`API_CACHE_BENCH_CLIENT=hyper`).
fn hyper_client() -> bool {
    std::env::var("API_CACHE_BENCH_CLIENT").is_ok_and(|v| v == "hyper")
}

/// One connection as wrk makes it (see the module's documentation): requests `path`
/// until `stop`, recording latencies while `measuring`.
async fn raw_connection(
    addr: SocketAddr,
    path: &'static str,
    every: Option<Duration>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> (Samples, u64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let request = wire::request_bytes(path, &[]);
    let expect_hit = path.starts_with("/cached");
    let (mut samples, mut wrong) = (Samples::default(), 0u64);
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut pace = Pace::new(every);
    while !stop.load(Ordering::Relaxed) {
        Pace::wait(&mut pace).await;
        let started = Instant::now();
        stream.write_all(&request).await.unwrap();
        buf.clear();
        let mut scanned: usize = 0;
        let head = loop {
            assert!(
                stream.read_buf(&mut buf).await.unwrap() > 0,
                "connection closed"
            );
            // The blank line may straddle two reads: look again from 3 bytes back.
            let from = scanned.saturating_sub(3);
            if let Some(at) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
                break wire::scan_head(&buf, from + at + 4);
            }
            scanned = buf.len();
        };
        let total = head.head_len + head.content_length;
        while buf.len() < total {
            assert!(
                stream.read_buf(&mut buf).await.unwrap() > 0,
                "connection closed"
            );
        }
        // One request in flight: nothing may follow this response.
        assert_eq!(buf.len(), total, "bytes after the response");
        let elapsed = started.elapsed();
        if measuring.load(Ordering::Relaxed) {
            samples.push(elapsed);
            if head.content_length != 2048 || (expect_hit && !head.hit) {
                wrong += 1;
            }
        }
    }
    (samples, wrong)
}

struct Window {
    rps: f64,
    samples: Samples,
    wrong: u64,
    server_ticks: u64,
    loadgen_ticks: u64,
    redis_ticks: u64,
}

/// Loads `path` with `connections` for `duration`.
async fn load(
    addr: SocketAddr,
    path: &'static str,
    connections: usize,
    duration: Duration,
    redis_needle: &str,
) -> Window {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let every = fixed_rate().map(|rate| Duration::from_secs_f64(connections as f64 / rate));
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (measuring, stop) = (measuring.clone(), stop.clone());
            if hyper_client() {
                tokio::spawn(connection(addr, path, every, measuring, stop))
            } else {
                tokio::spawn(raw_connection(addr, path, every, measuring, stop))
            }
        })
        .collect();
    tokio::time::sleep(pick(Duration::from_millis(500), Duration::from_millis(250))).await;
    let (server_before, loadgen_before) = (thread_cpu_ticks("server"), thread_cpu_ticks("loadgen"));
    let redis_before = process_cpu_ticks(redis_needle);
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let server_ticks = thread_cpu_ticks("server") - server_before;
    let loadgen_ticks = thread_cpu_ticks("loadgen") - loadgen_before;
    let redis_ticks = process_cpu_ticks(redis_needle) - redis_before;
    stop.store(true, Ordering::Relaxed);
    let (mut samples, mut wrong) = (Samples::default(), 0);
    for task in tasks {
        let (s, w) = task.await.unwrap();
        samples.extend(&s);
        wrong += w;
    }
    Window {
        rps: samples.len() as f64 / elapsed.as_secs_f64(),
        samples,
        wrong,
        server_ticks,
        loadgen_ticks,
        redis_ticks,
    }
}

/// Sends one GET on a fresh connection; returns `X-Cache`.
async fn probe(addr: SocketAddr, path: &str) -> String {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::get(path)
        .header(header::HOST, "127.0.0.1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let x_cache = response
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    response.into_body().collect().await.unwrap();
    x_cache
}

/// Whether `path` is to be loaded: every route, unless arguments name some
/// (`cargo bench --bench http -- /static /cached-memory`, e.g. to profile one).
fn selected(path: &str) -> bool {
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a.starts_with('/'))
        .collect();
    named.is_empty() || named.iter().any(|n| n == path)
}

fn main() {
    support::banner("http");
    let connections: usize = std::env::var("API_CACHE_BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let rounds = pick(3, 1);
    let duration = Duration::from_secs(pick(5, 2));
    let redis = cache_tests::RedisServer::start();

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("server")
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("loadgen")
        .build()
        .unwrap();

    let url = redis.url();
    let redis_needle = format!("127.0.0.1:{}", redis.port());
    let addr = server_rt.block_on(async {
        let app = routes::app(&url).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    });

    let results = client_rt.block_on(async {
        // The peer's first request is its miss.
        probe(addr, "/peer").await;
        for path in ["/cached-memory", "/cached-redis", "/cached-local"] {
            assert_eq!(probe(addr, path).await, "MISS");
            // The Redis store runs off the request path: wait for it to land.
            let deadline = Instant::now() + Duration::from_secs(5);
            while probe(addr, path).await != "HIT" {
                assert!(Instant::now() < deadline, "{path} never became a hit");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let mut results: Vec<RouteResult> = ROUTES
            .iter()
            .map(|_| RouteResult {
                rps: Vec::new(),
                latencies: Samples::default(),
                wrong: 0,
                requests: 0,
                server_ticks: 0,
                loadgen_ticks: 0,
                redis_ticks: 0,
            })
            .collect();
        for round in 0..rounds {
            for offset in 0..ROUTES.len() {
                let which = (round + offset) % ROUTES.len();
                if !selected(ROUTES[which]) {
                    continue;
                }
                let window = load(addr, ROUTES[which], connections, duration, &redis_needle).await;
                println!(
                    "  round {round} {:<15} {:>8.0} req/s  p50 {} us  p99 {} us  server CPU {:.1} us/req  (load {})",
                    ROUTES[which],
                    window.rps,
                    us(window.samples.p50()),
                    us(window.samples.p99()),
                    window.server_ticks as f64 * TICK_US / window.samples.len() as f64,
                    support::load_average()
                );
                let result = &mut results[which];
                result.rps.push(window.rps);
                result.latencies.extend(&window.samples);
                result.wrong += window.wrong;
                result.requests += window.samples.len() as u64;
                result.server_ticks += window.server_ticks;
                result.loadgen_ticks += window.loadgen_ticks;
                result.redis_ticks += window.redis_ticks;
            }
        }
        results
    });

    println!(
        "\n== §6 HTTP over loopback, {connections} connections, {rounds} round(s) of {} s per route, {} client",
        duration.as_secs(),
        if hyper_client() { "hyper's" } else { "a wrk-like" }
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    if !ROUTES.iter().all(|path| selected(path)) {
        for (path, result) in ROUTES.iter().zip(&results) {
            if selected(path) {
                row(
                    path,
                    &[
                        ("req_per_s", format!("{:.0}", mean(&result.rps))),
                        ("p99_us", us(result.latencies.p99())),
                    ],
                );
            }
        }
        return;
    }
    for (path, result) in ROUTES.iter().zip(&results) {
        row(
            path,
            &[
                ("req_per_s", format!("{:.0}", mean(&result.rps))),
                ("p50_us", us(result.latencies.p50())),
                ("p99_us", us(result.latencies.p99())),
                (
                    "server_cpu_us_per_req",
                    format!(
                        "{:.1}",
                        result.server_ticks as f64 * TICK_US / result.requests as f64
                    ),
                ),
                (
                    "loadgen_cpu_us_per_req",
                    format!(
                        "{:.1}",
                        result.loadgen_ticks as f64 * TICK_US / result.requests as f64
                    ),
                ),
                (
                    "redis_cpu_us_per_req",
                    format!(
                        "{:.1}",
                        result.redis_ticks as f64 * TICK_US / result.requests as f64
                    ),
                ),
                ("wrong", result.wrong.to_string()),
            ],
        );
        assert_eq!(
            result.wrong, 0,
            "{path}: a response was not the expected hit"
        );
    }
    // Each route's result by its path, never by position: a position read the wrong route
    // once (the local hit's ratio was the peer's).
    let by_path = |path: &str| -> &RouteResult {
        let index = ROUTES
            .iter()
            .position(|route| *route == path)
            .unwrap_or_else(|| panic!("{path} is not one of ROUTES"));
        &results[index]
    };
    let static_route = by_path("/static");
    let static_headers = by_path("/static-hit-headers");
    let memory_hit = by_path("/cached-memory");
    let redis_hit_route = by_path("/cached-redis");
    let raw_get = by_path("/redis-get");
    let raw_mget = by_path("/redis-mget");
    let uncached = by_path("/uncached");
    let peer = by_path("/peer");
    let local_hit = by_path("/cached-local");
    let cpu_us = |r: &RouteResult| r.server_ticks as f64 * TICK_US / r.requests as f64;
    if let Some(rate) = fixed_rate() {
        println!(
            "  every route at {rate:.0} req/s: server CPU per request, each route over another"
        );
        for (path, result) in ROUTES.iter().zip(&results) {
            let achieved = mean(&result.rps);
            if achieved < rate * 0.95 {
                println!("  !! {path} answered {achieved:.0} req/s, under the rate: its figure is not comparable");
            }
        }
        let over = |label: &str, route: &RouteResult, floor: &RouteResult, goal: &str| {
            println!(
                "  -> {label}: {:+.2} us ({:.2} against {:.2}){goal}",
                cpu_us(route) - cpu_us(floor),
                cpu_us(route),
                cpu_us(floor)
            );
        };
        over("memory hit - static route", memory_hit, static_route, "");
        over("memory hit - peer hit", memory_hit, peer, " (goal: <= 0)");
        over(
            "memory hit - static route with the hit's headers",
            memory_hit,
            static_headers,
            "",
        );
        over(
            "static route with the hit's headers - peer hit",
            static_headers,
            peer,
            "",
        );
        over(
            "Redis hit - raw GET",
            redis_hit_route,
            raw_get,
            " (goal: within 3 us)",
        );
        over(
            "Redis hit - raw MGET of its three values",
            redis_hit_route,
            raw_mget,
            ": our code's",
        );
        over(
            "raw MGET - raw GET",
            raw_mget,
            raw_get,
            ": redis-rs reading three values instead of one",
        );
        over("local hit - static route", local_hit, static_route, "");
        println!("  load average at the end: {}", support::load_average());
        return;
    }
    let floor = mean(&static_route.rps);
    let memory = mean(&memory_hit.rps) / floor;
    let redis_vs_static = mean(&redis_hit_route.rps) / floor;
    verdict(
        "memory hit throughput / static route",
        memory,
        ">= 0.90",
        memory >= 0.90,
    );
    let memory_vs_peer = mean(&memory_hit.rps) / mean(&peer.rps);
    verdict(
        "memory hit throughput / axum-response-cache hit",
        memory_vs_peer,
        ">= 1.0",
        memory_vs_peer >= 1.0,
    );
    println!(
        "     (memory hit / static route with the hit's headers = {:.3}; Redis hit / static route = {redis_vs_static:.3}; uncached / static route = {:.3})",
        mean(&memory_hit.rps) / mean(&static_headers.rps),
        mean(&uncached.rps) / floor
    );
    println!(
        "     (static route with the hit's headers / peer hit = {:.3}, / static route = {:.3}: a route that sends a hit's seven headers\n      and does no cache work at all, against the peer's two)",
        mean(&static_headers.rps) / mean(&peer.rps),
        mean(&static_headers.rps) / floor
    );
    let local = mean(&local_hit.rps) / floor;
    verdict(
        "local hit (tracking) throughput / static route",
        local,
        ">= 0.80",
        local >= 0.80,
    );
    println!(
        "     (server CPU per request, static / memory hit = {:.3}, static with the hit's headers / memory hit = {:.3}, peer hit / memory hit = {:.3}, static / local hit = {:.3}:\n      the throughput ratios of a server with cores of its own, whatever else ran on this machine)",
        cpu_us(static_route) / cpu_us(memory_hit),
        cpu_us(static_headers) / cpu_us(memory_hit),
        cpu_us(peer) / cpu_us(memory_hit),
        cpu_us(static_route) / cpu_us(local_hit)
    );
    let measured_us = rounds as f64 * duration.as_secs_f64() * 1e6;
    let redis_hit = mean(&redis_hit_route.rps) / mean(&raw_get.rps);
    verdict(
        "Redis hit throughput / one raw GET per request",
        redis_hit,
        "limited by Redis: >= 0.9",
        redis_hit >= 0.9,
    );
    println!(
        "     (during the Redis-hit windows redis-server used {:.0}% of one CPU: {:.1} us per request, against our server's {:.1} us)",
        redis_hit_route.redis_ticks as f64 * TICK_US / measured_us * 100.0,
        redis_hit_route.redis_ticks as f64 * TICK_US / redis_hit_route.requests as f64,
        cpu_us(redis_hit_route)
    );
    println!(
        "     (server CPU per request over the raw GET route: {:.1} us (goal: within 3 us); over one raw MGET of the hit's three values: {:.1} us, our code's;\n      Redis hit throughput / raw MGET = {:.3}, raw MGET / raw GET = {:.3}: redis-rs reading three values instead of one)",
        cpu_us(redis_hit_route) - cpu_us(raw_get),
        cpu_us(redis_hit_route) - cpu_us(raw_mget),
        mean(&redis_hit_route.rps) / mean(&raw_mget.rps),
        mean(&raw_mget.rps) / mean(&raw_get.rps)
    );
    println!("  load average at the end: {}", support::load_average());
    drop(client_rt);
    drop(server_rt);
}
