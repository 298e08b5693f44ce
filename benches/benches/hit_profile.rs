//! A driver for instruction counts (BENCHMARKS.md, "Hit path under callgrind"): sends
//! `N` requests to one route of an axum router in process (`tower::ServiceExt::oneshot`,
//! no sockets, no hyper), on a current-thread runtime, so that
//! `valgrind --tool=callgrind` counts only the route's own work and the router's.
//!
//! ```text
//! cargo bench -p cache-benches --bench hit_profile --no-run
//! valgrind --tool=callgrind target/release/deps/hit_profile-* /cached-memory 20000
//! target/release/deps/hit_profile-* /cached-memory 200000 --time
//! target/release/deps/hit_profile-* /cached-memory --parallel
//! valgrind --tool=callgrind --separate-threads=yes target/release/deps/hit_profile-* /cached-memory 12000 --http
//! ```
//!
//! With `--headers` it prints the route's response headers instead (a hit's, for the
//! cached routes): what each route sends besides the page.
//!
//! With `--time` it times the route natively instead: nanoseconds per request, the
//! minimum over 50 batches (the in-process cost, without sockets or hyper).
//!
//! Routes, all answering the same 2 KB of JSON: `/static` (no cache), `/peer`
//! (axum-response-cache's `CacheLayer`, in memory), `/cached-memory` and `/cached-redis`
//! (`#[cached]`, measured on hits), `/redis-get` (one raw GET), `/redis-mget` (one raw
//! `MGET` of the three values a Redis hit reads), and the others of `http/routes.rs`.
//! The instructions of one request are the difference between two runs with different
//! `N`, divided by the difference in `N`: start-up and the first miss cancel out.
//!
//! With `--http` the requests go over loopback instead: the router is served by
//! `axum::serve` (hyper) on the current-thread runtime, and a blocking client on a thread
//! of its own (`client`) sends the `N` requests one after another on one keep-alive
//! connection, the bytes the `http` bench's clients send. Run under callgrind with
//! `--separate-threads=yes`, the main thread's count is the server's whole user-space
//! work per request (hyper reading and writing, the router, the route, the Redis client
//! for the Redis routes) and the client's is apart; the kernel's is in neither.
//!
//! With `--browser` every request carries the nine headers a browser's `fetch` adds to
//! `Host` (`User-Agent`, `Accept`, `Accept-Language`, `Cookie`, ...): what a request's
//! headers cost a route, and what `/cached-memory-vary`'s `vary` on one of them adds.
//!
//! With `--parallel` it times the route natively with one worker thread and then with one
//! per CPU, all asking for the same route: what the workers cost each other through
//! cache lines every request writes (locks, reference counts), which callgrind, on one
//! thread, does not see.
//!
//! `key` and `digest` instead time, natively, the building of one request's key and the
//! SHA-256 of its parts (valgrind hides the CPU's SHA extensions, so under callgrind the
//! digest runs sha2's portable code): nanoseconds per operation, the minimum over
//! batches, and whether this CPU has the SHA extensions sha2 picks at run time.

#[path = "http/routes.rs"]
mod routes;
#[path = "../../cache-runtime/benches/support/mod.rs"]
mod support;
#[path = "http/wire.rs"]
mod wire;

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{header, Request};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// Nanoseconds per call of `op`: the minimum over 50 batches of `count / 50`.
fn min_ns_per_op(count: u64, mut op: impl FnMut()) -> f64 {
    let batch = (count / 50).max(1);
    (0..50)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..batch {
                op();
            }
            started.elapsed().as_nanos() as f64 / batch as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// The key of `/cached-memory` as `serve_cached` builds it, and the digest of its parts.
fn time_key_and_digest(count: u64) {
    use cache_runtime::testing::Tenant;
    use sha2::{Digest, Sha256};
    use std::hint::black_box;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = runtime
        .block_on(cache_runtime::Cache::new(
            cache_runtime::CacheConfig::default(),
        ))
        .unwrap();
    let key_ns = min_ns_per_op(count, || {
        black_box(
            cache
                .key(Tenant::Scoped(black_box("org_1")), "templates")
                .unwrap()
                .request("GET", black_box("/cached-memory"), None)
                .part("fingerprint", "3f1c9a0be4d27788")
                .build(),
        );
    });
    // The bytes that key hashes: each part's length (u64 LE), then the part.
    let mut stream = Vec::new();
    for part in [
        &b"api-cache/key/v1"[..],
        b"request",
        b"GET",
        b"/cached-memory",
        &0u64.to_le_bytes(),
        b"part",
        b"fingerprint",
        b"3f1c9a0be4d27788",
    ] {
        stream.extend_from_slice(&(part.len() as u64).to_le_bytes());
        stream.extend_from_slice(part);
    }
    let digest_ns = min_ns_per_op(count, || {
        black_box(Sha256::digest(black_box(&stream)));
    });
    println!(
        "key build {key_ns:.0} ns, of which SHA-256 of its {} bytes {digest_ns:.0} ns; SHA extensions (sha_ni): {}",
        stream.len(),
        std::arch::is_x86_feature_detected!("sha")
    );
}

/// The headers a browser sends with a page's `fetch` besides `Host` (`--browser`).
const BROWSER_HEADERS: [(&str, &str); 9] = [
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"),
    ("accept", "application/json, text/plain, */*"),
    ("accept-language", "en-US,en;q=0.9"),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    ("referer", "https://app.example.com/templates"),
    ("cookie", "session=8f3a2c1d4e5b6a79c0d1e2f3a4b5c6d7; theme=dark"),
    ("sec-fetch-dest", "empty"),
    ("sec-fetch-mode", "cors"),
    ("sec-fetch-site", "same-origin"),
];

/// Whether every request carries [`BROWSER_HEADERS`] (`--browser`).
fn browser() -> bool {
    static BROWSER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *BROWSER.get_or_init(|| std::env::args().any(|a| a == "--browser"))
}

/// A GET of `path`, as every request of this driver is (with a browser's headers under
/// `--browser`).
fn get(path: &str) -> Request<Body> {
    let mut request = Request::get(path).header(header::HOST, "127.0.0.1");
    if browser() {
        for (name, value) in BROWSER_HEADERS {
            request = request.header(name, value);
        }
    }
    request.body(Body::empty()).unwrap()
}

/// Sends requests to `path` until it answers from its cache (the Redis store lands off
/// the request path).
async fn warm_up(app: &axum::Router, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = app.clone().oneshot(get(path)).await.unwrap();
        let x_cache = response.headers().get("x-cache").cloned();
        response.into_body().collect().await.unwrap();
        if !path.starts_with("/cached") || x_cache.is_some_and(|v| v == "HIT") {
            return;
        }
        assert!(Instant::now() < deadline, "{path} never became a hit");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `--parallel`: the route's native time per request with one worker thread, then with
/// one per CPU, every worker asking for the same route at once. The difference is what
/// the workers cost each other (shared cache lines written on every request: locks,
/// reference counts, counters), which callgrind, on one thread, cannot show.
fn time_parallel(path: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let redis = cache_tests::RedisServer::start();
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    for workers in [1, cpus, 1, cpus] {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .unwrap();
        let ns = runtime.block_on(async {
            let app = routes::app(&redis.url()).await;
            let path: &'static str = Box::leak(path.to_owned().into_boxed_str());
            let request = move || get(path);
            warm_up(&app, path).await;
            // Each task stops at the deadline itself: a route that never waits never yields
            // its worker, so no timer could stop it.
            let window = Duration::from_secs(2);
            let deadline = Instant::now() + window;
            let done = Arc::new(AtomicU64::new(0));
            // Two tasks a worker, so that a worker waiting on Redis has another to run.
            let tasks: Vec<_> = (0..workers * 2)
                .map(|_| {
                    let (app, done) = (app.clone(), done.clone());
                    tokio::spawn(async move {
                        let mut count = 0;
                        while Instant::now() < deadline {
                            let response = app.clone().oneshot(request()).await.unwrap();
                            response.into_body().collect().await.unwrap();
                            count += 1;
                        }
                        done.fetch_add(count, Ordering::Relaxed);
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            window.as_nanos() as f64 * workers as f64 / done.load(Ordering::Relaxed) as f64
        });
        println!("{path}: {workers} worker(s), {ns:.0} ns of a worker per request");
    }
}

/// `--http`: `count` requests to `path` over loopback, one at a time on one keep-alive
/// connection, from a blocking client thread; the server is `app` under `axum::serve`
/// on this (current-thread) runtime.
async fn serve_over_loopback(app: axum::Router, path: &str, count: u64) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, app).into_future());
    let extra: &[(&str, &str)] = if browser() { &BROWSER_HEADERS } else { &[] };
    let request = wire::request_bytes(path, extra);
    let expect_hit = path.starts_with("/cached");
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("client".to_owned())
        .spawn(move || {
            let _ = done.send(blocking_client(addr, &request, expect_hit, count));
        })
        .unwrap();
    let bytes = finished.await.unwrap();
    assert_eq!(bytes, 2048 * count, "{path}: a response was not the page");
    println!("{path}: {count} requests over loopback");
}

/// Sends `request` `count` times on one connection, each after the last response is
/// read whole; returns the body bytes received. Panics on a response that is not a 200
/// (or not a hit, when `expect_hit`).
fn blocking_client(
    addr: std::net::SocketAddr,
    request: &[u8],
    expect_hit: bool,
    count: u64,
) -> u64 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut buf, mut bytes) = (vec![0u8; 16 * 1024], 0);
    for _ in 0..count {
        stream.write_all(request).unwrap();
        let mut filled = 0;
        let head = loop {
            let read = stream.read(&mut buf[filled..]).unwrap();
            assert!(read > 0, "connection closed");
            filled += read;
            if let Some(at) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                break wire::scan_head(&buf, at + 4);
            }
        };
        assert!(
            !expect_hit || head.hit,
            "{:?}",
            String::from_utf8_lossy(&buf[..head.head_len])
        );
        let total = head.head_len + head.content_length;
        while filled < total {
            let read = stream.read(&mut buf[filled..]).unwrap();
            assert!(read > 0, "connection closed");
            filled += read;
        }
        assert_eq!(filled, total, "bytes after the response");
        bytes += head.content_length as u64;
    }
    bytes
}

fn main() {
    let timed = std::env::args().any(|a| a == "--time");
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let path = args.next().unwrap_or_else(|| "/cached-memory".to_owned());
    let count: u64 = args.next().map_or(10_000, |n| n.parse().unwrap());
    if path == "key" || path == "digest" {
        return time_key_and_digest(count);
    }
    if std::env::args().any(|a| a == "--parallel") {
        return time_parallel(&path);
    }
    let redis = cache_tests::RedisServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let app = routes::app(&redis.url()).await;
        let request = || get(&path);
        warm_up(&app, &path).await;
        if std::env::args().any(|a| a == "--headers") {
            // What the route answers with, as a client receives it (before hyper's `Date`).
            let response = app.clone().oneshot(request()).await.unwrap();
            println!("{path}: {}", response.status());
            for (name, value) in response.headers() {
                println!("  {name}: {}", value.to_str().unwrap_or("<bytes>"));
            }
            return;
        }
        if std::env::args().any(|a| a == "--http") {
            return serve_over_loopback(app, &path, count).await;
        }
        if timed {
            // Native time per request: the minimum over 50 batches, as `key` does.
            let batch = (count / 50).max(1);
            let mut best = f64::INFINITY;
            for _ in 0..50 {
                let started = Instant::now();
                for _ in 0..batch {
                    let response = app.clone().oneshot(request()).await.unwrap();
                    response.into_body().collect().await.unwrap();
                }
                best = best.min(started.elapsed().as_nanos() as f64 / batch as f64);
            }
            println!("{path}: {best:.0} ns per request (minimum over 50 batches of {batch})");
            return;
        }
        let mut bytes = 0;
        for _ in 0..count {
            let response = app.clone().oneshot(request()).await.unwrap();
            bytes += response
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .len();
        }
        assert_eq!(
            bytes as u64,
            2048 * count,
            "{path}: a response was not the page"
        );
        println!("{path}: {count} requests");
    });
}
