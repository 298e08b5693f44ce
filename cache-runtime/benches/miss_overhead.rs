//! Miss overhead (BENCHMARKS.md §3): one handler, served plain and under `#[cached]` over
//! Redis, driven through the axum router in-process (no client sockets, so only the
//! cache's cost is measured). Every cached request has a new query string, so every one
//! is a miss: one MGET, the handler, the body buffered, and the store spawned off the
//! request path. The unit is the same handler with one raw redis-rs GET added by hand:
//! what exactly one round trip adds through this stack on this machine. Between two
//! timed misses the benchmark waits (untimed) for the spawned store to land, so each
//! miss is measured alone; a store still in flight would otherwise share the connection
//! and the CPU with the next request.

mod support;

use std::sync::OnceLock;
use std::time::Instant;

use axum::body::Body;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use cache_runtime::{cached, Cache, CacheScope};
use http::{header, Request};
use http_body_util::BodyExt;
use redis::aio::ConnectionManager;
use std::sync::atomic::{AtomicU64, Ordering};
use tower::ServiceExt;

use support::{latency_row, pick, ratio, us, verdict, Samples};

fn body() -> Bytes {
    static BODY: OnceLock<Bytes> = OnceLock::new();
    BODY.get_or_init(|| support::json_body(2048)).clone()
}

async fn plain_page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], body())
}

/// The same handler plus one raw round trip to Redis (a GET of a small key).
async fn one_round_trip(Extension(conn): Extension<ConnectionManager>) -> impl IntoResponse {
    let token: Vec<u8> = redis::cmd("GET")
        .arg("token")
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    assert!(!token.is_empty());
    ([(header::CONTENT_TYPE, "application/json")], body())
}

#[cached(resource = "templates", ttl = 3600)]
async fn cached_page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], body())
}

/// Sends one GET through the router; returns its `X-Cache` and the body length.
async fn send(app: &Router, uri: String) -> (Option<String>, usize) {
    let request = Request::get(uri).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let x_cache = response
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (x_cache, body.len())
}

const CONTENDERS: [&str; 4] = [
    "handler, uncached",
    "handler + 1 raw GET (1 round trip)",
    "handler, #[cached], miss",
    "handler, #[cached], hit",
];

/// Calls per command so far, from `INFO commandstats` (`cmdstat_mget:calls=12,...`).
async fn command_calls(conn: &ConnectionManager) -> std::collections::HashMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| line.strip_prefix("cmdstat_"))
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// Waits (untimed) until the spawned store of the last miss has landed.
async fn wait_for_store(cache: &Cache, stores: &AtomicU64) {
    let expected = stores.fetch_add(1, Ordering::Relaxed) + 1;
    while cache.stats().totals.stores < expected {
        tokio::task::yield_now().await;
    }
}

fn main() {
    support::banner("miss_overhead");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = cache_tests::RedisServer::start();
    let url = server.url();
    let samples = rt.block_on(async {
        let cache = Cache::new(support::redis_config(&url)).await.unwrap();
        let floor = ConnectionManager::new(redis::Client::open(url.as_str()).unwrap())
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("token")
            .arg("19a2b3c4d5e.0123456789abcdef")
            .query_async(&mut floor.clone())
            .await
            .unwrap();
        let app = Router::new()
            .route("/plain", get(plain_page))
            .route("/one-round-trip", get(one_round_trip))
            .route("/cached", get(cached_page))
            .layer(Extension(floor.clone()))
            .layer(Extension(CacheScope::new("org_1")))
            .layer(cache.extension());
        let stores = AtomicU64::new(0);

        let rounds = pick(60, 20);
        let batch = pick(100, 50);
        let mut samples = vec![Samples::default(); CONTENDERS.len()];
        let mut n = 0u64;
        let mut unexpected = 0u64;
        // Warm-up, and the first request of the tenant creates its generation keys.
        for _ in 0..300 {
            n += 1;
            send(&app, format!("/cached?n={n}")).await;
            wait_for_store(&cache, &stores).await;
            send(&app, format!("/plain?n={n}")).await;
            send(&app, format!("/one-round-trip?n={n}")).await;
            send(&app, "/cached?n=hit".to_owned()).await;
        }
        stores.store(cache.stats().totals.stores, Ordering::Relaxed);
        let calls_before = command_calls(&floor).await;
        for round in 0..rounds {
            for offset in 0..CONTENDERS.len() {
                let which = (round + offset) % CONTENDERS.len();
                for _ in 0..batch {
                    n += 1;
                    let started = Instant::now();
                    let (x_cache, len) = match which {
                        0 => send(&app, format!("/plain?n={n}")).await,
                        1 => send(&app, format!("/one-round-trip?n={n}")).await,
                        2 => send(&app, format!("/cached?n={n}")).await,
                        _ => send(&app, "/cached?n=hit".to_owned()).await,
                    };
                    samples[which].push(started.elapsed());
                    if which == 2 {
                        wait_for_store(&cache, &stores).await;
                    }
                    assert_eq!(len, 2048);
                    let expected = match which {
                        2 => Some("MISS"),
                        3 => Some("HIT"),
                        _ => None,
                    };
                    if x_cache.as_deref() != expected {
                        unexpected += 1;
                    }
                }
            }
        }
        assert_eq!(unexpected, 0, "a request did not have the expected X-Cache");
        let calls_after = command_calls(&floor).await;
        let delta = |name: &str| {
            calls_after.get(name).copied().unwrap_or(0) - calls_before.get(name).copied().unwrap_or(0)
        };
        let (misses, hits) = (samples[2].len() as f64, samples[3].len() as f64);
        println!(
            "  Redis commands in the timed section: {:.2} MGET per cached request, {:.2} SET per miss (spawned, off the request path), {:.2} GET per raw-GET request",
            delta("mget") as f64 / (misses + hits),
            delta("set") as f64 / misses,
            delta("get") as f64 / samples[1].len() as f64
        );
        let totals = cache.stats().totals;
        println!(
            "  cache stats: hits={} misses={} stores={} errors={}",
            totals.hits, totals.misses, totals.stores, totals.errors
        );
        samples
    });

    println!("\n== §3 miss overhead over Redis, through the axum router in-process, per request, interleaved");
    for (name, s) in CONTENDERS.iter().zip(&samples) {
        latency_row(name, s);
    }
    let round_trip = samples[1].p50().saturating_sub(samples[0].p50());
    let added = samples[2].p50().saturating_sub(samples[0].p50());
    let round_trips = ratio(added, round_trip);
    println!(
        "  added by one raw round trip: p50 {} us; added by #[cached] on a miss: p50 {} us (mean {} us)",
        us(round_trip),
        us(added),
        us(samples[2].mean().saturating_sub(samples[0].mean()))
    );
    println!(
        "  miss - hit p50: {} us (both make one MGET; the rest is the miss's own work: buffering, entry, spawned store)",
        us(samples[2].p50().saturating_sub(samples[3].p50()))
    );
    // One round trip plus our CPU work stays well under 1.5; a second round trip on the
    // request path would put it at 2 or more.
    verdict(
        "added / one round trip (p50)",
        round_trips,
        "one round trip: < 1.5",
        round_trips < 1.5,
    );
    println!("  load average at the end: {}", support::load_average());
}
