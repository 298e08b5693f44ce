//! A driver for instruction counts (BENCHMARKS.md, "Hit path under callgrind"): sends
//! `N` requests to one route of an axum router in process (`tower::ServiceExt::oneshot`,
//! no sockets, no hyper), on a current-thread runtime, so that
//! `valgrind --tool=callgrind` counts only the route's own work and the router's.
//!
//! ```text
//! cargo bench -p cache-benches --bench hit_profile --no-run
//! valgrind --tool=callgrind target/release/deps/hit_profile-* /cached-memory 20000
//! ```
//!
//! Routes, all answering the same 2 KB of JSON: `/static` (no cache), `/peer`
//! (axum-response-cache's `CacheLayer`, in memory), `/cached-memory` and `/cached-redis`
//! (`#[cached]`, measured on hits), `/redis-get` (one raw GET). The instructions of one
//! request are the difference between two runs with different `N`, divided by the
//! difference in `N`: start-up and the first miss cancel out.

#[path = "http/routes.rs"]
mod routes;
#[path = "../../cache-runtime/benches/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use axum::body::Body;
use http::{header, Request};
use http_body_util::BodyExt;
use tower::ServiceExt;

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let path = args.next().unwrap_or_else(|| "/cached-memory".to_owned());
    let count: u64 = args.next().map_or(10_000, |n| n.parse().unwrap());
    let redis = cache_tests::RedisServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let app = routes::app(&redis.url()).await;
        let request = || {
            Request::get(path.as_str())
                .header(header::HOST, "127.0.0.1")
                .body(Body::empty())
                .unwrap()
        };
        // Warm up until the route answers from its cache (the Redis store lands off the
        // request path).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let response = app.clone().oneshot(request()).await.unwrap();
            let x_cache = response.headers().get("x-cache").cloned();
            response.into_body().collect().await.unwrap();
            if !path.starts_with("/cached") || x_cache.is_some_and(|v| v == "HIT") {
                break;
            }
            assert!(Instant::now() < deadline, "{path} never became a hit");
            tokio::time::sleep(Duration::from_millis(5)).await;
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
