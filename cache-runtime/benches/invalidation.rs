//! Invalidation cost against the number of cached entries (BENCHMARKS.md §4).
//!
//! Two tenants on one private redis-server: one with 10 cached 2 KB responses under
//! `templates`, one with 100,000. Each is invalidated again and again, interleaved,
//! through an `#[invalidates("templates")]` handler (router in-process) and through
//! `Cache::invalidate` directly, with a raw SET of one key (one round trip) beside them.
//! The cost must not grow with the keyspace: the ratio of the two p50s is the figure. For contrast, the last step deletes each tenant's entries
//! the way a pattern-delete cache does (SCAN MATCH + UNLINK), once.

mod support;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use cache_runtime::testing::Lookup;
use cache_runtime::testing::Tenant;
use cache_runtime::{invalidates, Cache, CacheScope};
use futures_util::StreamExt;
use tower::ServiceExt;

use support::{latency_row, pick, ratio, row, verdict, Samples};

#[invalidates("templates")]
async fn create_template() -> StatusCode {
    StatusCode::CREATED
}

async fn scope_from_header(mut request: Request, next: Next) -> Response {
    let tenant = request
        .headers()
        .get("x-tenant")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(tenant) = tenant {
        request.extensions_mut().insert(CacheScope::new(tenant));
    }
    next.run(request).await
}

fn key(cache: &Cache, tenant: &str, i: usize) -> cache_runtime::testing::CacheKey {
    cache
        .key(Tenant::Scoped(tenant), "templates")
        .unwrap()
        .request("GET", "/api/templates", Some(&format!("page={i}")))
        .build()
}

/// Caches `count` distinct responses for `tenant`, many at a time.
async fn populate(cache: &Cache, tenant: &str, count: usize) {
    let response = support::response_2k();
    futures_util::stream::iter(0..count)
        .map(|i| {
            let response = response.clone();
            async move {
                let key = key(cache, tenant, i);
                let Lookup::Miss(ticket) = cache.lookup(&key).await else {
                    panic!("expected a miss while populating");
                };
                assert!(cache
                    .store(ticket, response, Duration::from_secs(3600))
                    .await
                    .unwrap());
            }
        })
        .buffer_unordered(64)
        .collect::<()>()
        .await;
}

async fn invalidate_through_handler(app: &Router, tenant: &str) {
    let request = axum::http::Request::post("/api/templates")
        .header("x-tenant", tenant)
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-cache-invalidated"], "templates");
}

/// Deletes every entry of `tenant` the pattern-delete way; returns the time and count.
async fn scan_and_unlink(url: &str, tenant: &str) -> (Duration, usize) {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pattern = format!("api-cache:{{t.{tenant}}}:e:templates:*");
    let started = Instant::now();
    let mut cursor = 0u64;
    let mut deleted = 0usize;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            deleted += keys.len();
            let _: usize = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    (started.elapsed(), deleted)
}

const CONTENDERS: [&str; 5] = [
    "#[invalidates], 10 entries",
    "#[invalidates], 100,000 entries",
    "Cache::invalidate, 10 entries",
    "Cache::invalidate, 100,000 entries",
    "floor: redis-rs SET of one key",
];

fn main() {
    support::banner("invalidation");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = cache_tests::RedisServer::start();
    let url = server.url();
    let large = 100_000;
    rt.block_on(async {
        let cache = Cache::new(support::redis_config(&url)).await.unwrap();
        let started = Instant::now();
        populate(&cache, "org_small", 10).await;
        populate(&cache, "org_large", large).await;
        let dbsize: usize = server.cmd(&["DBSIZE"]);
        println!(
            "  populated 100,010 entries in {:.1} s; DBSIZE {dbsize}",
            started.elapsed().as_secs_f64()
        );
        assert!(dbsize >= 100_010);

        let floor = redis::aio::ConnectionManager::new(redis::Client::open(url.as_str()).unwrap())
            .await
            .unwrap();
        let app = Router::new()
            .route("/api/templates", post(create_template))
            .layer(middleware::from_fn(scope_from_header))
            .layer(cache.extension());

        let rounds = pick(60, 20);
        let batch = pick(100, 50);
        let mut samples = vec![Samples::default(); CONTENDERS.len()];
        for _ in 0..200 {
            invalidate_through_handler(&app, "org_small").await;
            invalidate_through_handler(&app, "org_large").await;
        }
        for round in 0..rounds {
            for offset in 0..CONTENDERS.len() {
                let which = (round + offset) % CONTENDERS.len();
                let tenant = ["org_small", "org_large"][which % 2];
                for _ in 0..batch {
                    let started = Instant::now();
                    match which {
                        0 | 1 => invalidate_through_handler(&app, tenant).await,
                        2 | 3 => cache.invalidate(tenant, &["templates"]).await.unwrap(),
                        _ => {
                            let _: () = redis::cmd("SET")
                                .arg("floor")
                                .arg("19a2b3c4d5e.0123456789abcdef")
                                .query_async(&mut floor.clone())
                                .await
                                .unwrap();
                        }
                    }
                    samples[which].push(started.elapsed());
                }
            }
        }
        // The entries are all still there, and none of them is served any more.
        assert!(server.cmd::<usize>(&["DBSIZE"]) >= 100_010);
        for i in [0, large / 2, large - 1] {
            assert!(matches!(
                cache.lookup(&key(&cache, "org_large", i)).await,
                Lookup::Miss(_)
            ));
        }

        println!("\n== §4 invalidation cost, per call, interleaved");
        for (name, s) in CONTENDERS.iter().zip(&samples) {
            latency_row(name, s);
        }
        let through_handler = ratio(samples[1].p50(), samples[0].p50());
        let direct = ratio(samples[3].p50(), samples[2].p50());
        verdict(
            "#[invalidates] p50, 100,000 / 10 entries",
            through_handler,
            "<= 1.2",
            through_handler <= 1.2,
        );
        verdict(
            "Cache::invalidate p50, 100,000 / 10 entries",
            direct,
            "<= 1.2",
            direct <= 1.2,
        );

        let (small_time, small_count) = scan_and_unlink(&url, "org_small").await;
        let (large_time, large_count) = scan_and_unlink(&url, "org_large").await;
        println!("  contrast, pattern delete (SCAN MATCH COUNT 1000 + UNLINK), once each:");
        row(
            "SCAN+UNLINK, 10 entries",
            &[
                ("deleted", small_count.to_string()),
                ("ms", format!("{:.2}", small_time.as_secs_f64() * 1e3)),
            ],
        );
        row(
            "SCAN+UNLINK, 100,000 entries",
            &[
                ("deleted", large_count.to_string()),
                ("ms", format!("{:.2}", large_time.as_secs_f64() * 1e3)),
            ],
        );
        println!(
            "     (the scan walks the whole keyspace either way: {:.1} ms for 10 entries, {:.1} ms for 100,000)",
            small_time.as_secs_f64() * 1e3,
            large_time.as_secs_f64() * 1e3
        );
    });
    println!("  load average at the end: {}", support::load_average());
}
