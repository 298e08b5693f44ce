//! The routes of the HTTP benchmarks (`http`, `hit_profile`), all answering the same 2 KB
//! of JSON, under the same middleware (the tenant's `CacheScope` extension):
//! - `/static`: the bytes from a static buffer, no cache, no work: the HTTP floor;
//! - `/static-hit-headers`: the same, with the headers a hit sends (`X-Cache`,
//!   `X-Cache-Age`, `Age`, `ETag`, `Cache-Control`), to tell their cost from the
//!   cache's;
//! - `/uncached`: the route's handler (a simulated 2 ms database query, then the bytes);
//! - `/cached-memory`, `/cached-redis`: the same handler under `#[cached]`, on the
//!   in-memory backend and on Redis, measured on hits;
//! - `/cached-memory-large`: a memory hit of a handler whose future is 4 KB larger
//!   (`hit_profile` only: what a large handler adds to a hit);
//! - `/cached-memory-vary`: a memory hit of the handler keyed by its `Accept-Language`
//!   too (`hit_profile` only, which sends a browser's headers to it: what a `vary`
//!   header adds to a hit);
//! - `/peer`: the same handler behind axum-response-cache 0.5's `CacheLayer` (in memory,
//!   keyed by method and URI), the peer a user compares us with, measured on hits;
//! - `/redis-get`: the bytes by one raw redis-rs GET per request, the floor of a route
//!   that reads Redis;
//! - `/redis-mget`: the bytes by one raw redis-rs `MGET` of what a Redis hit reads (two
//!   generation tokens and the page), the floor of a route that reads those three
//!   values: what a hit costs over it is our code's, what it costs over `/redis-get` is
//!   also redis-rs reading a reply of three values instead of one;
//! - `/cached-local`: the cached handler on Redis with the local tier in `tracking` mode
//!   (BENCHMARKS.md §8), measured on local hits.

use std::sync::OnceLock;
use std::time::Duration;

use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Router};
use axum_response_cache::CacheLayer;
use bytes::Bytes;
use cache_runtime::{cached, Cache, CacheConfig, CacheScope, X_CACHE, X_CACHE_AGE};
use http::header::{self, HeaderValue};
use redis::aio::ConnectionManager;

use crate::support;

pub fn body() -> Bytes {
    static BODY: OnceLock<Bytes> = OnceLock::new();
    BODY.get_or_init(|| support::json_body(2048)).clone()
}

async fn static_page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], body())
}

/// The static bytes with the headers a hit carries, the same names and values of the
/// same lengths (`hit_profile --headers` prints both), made without allocating: what
/// those headers cost alone, in our server and in the client, with no cache behind them.
async fn static_page_hit_headers() -> impl IntoResponse {
    (
        [
            (X_CACHE_AGE, HeaderValue::from_static("0")),
            (header::AGE, HeaderValue::from_static("0")),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::ETAG,
                HeaderValue::from_static("\"3d80ccb0551f5f13b4c377f7dde58492\""),
            ),
            (X_CACHE, HeaderValue::from_static("HIT")),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-cache"),
            ),
        ],
        body(),
    )
}

/// The bytes from Redis by one raw GET on a `ConnectionManager`: the floor of any route
/// that reads Redis once per request.
async fn redis_get_page(Extension(conn): Extension<ConnectionManager>) -> impl IntoResponse {
    let bytes: Vec<u8> = redis::cmd("GET")
        .arg(PAGE_KEY)
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    ([(header::CONTENT_TYPE, "application/json")], bytes)
}

/// Where `app` puts the page for the raw routes.
const PAGE_KEY: &str = "page";

/// The keys `/redis-mget` reads: two tokens the size of a hit's generations, then the page.
const MGET_KEYS: [&str; 3] = ["page:generation:all", "page:generation:templates", PAGE_KEY];

/// A token shaped as the runtime's generations are (`<micros hex>.<16 hex digits>`).
const TOKEN: &str = "63a1f0c2b4d5e.8f3a2c1d4e5b6a79";

/// The bytes from Redis by one raw `MGET` of the three values a Redis hit reads, the page
/// last: the floor of any route that reads those values once per request.
async fn redis_mget_page(Extension(conn): Extension<ConnectionManager>) -> impl IntoResponse {
    let (_all, _resource, bytes): (Vec<u8>, Vec<u8>, Vec<u8>) = redis::cmd("MGET")
        .arg(&MGET_KEYS)
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    ([(header::CONTENT_TYPE, "application/json")], bytes)
}

/// The route's work: a database query (simulated) and the page.
async fn page() -> impl IntoResponse {
    tokio::time::sleep(Duration::from_millis(2)).await;
    ([(header::CONTENT_TYPE, "application/json")], body())
}

#[cached(resource = "templates", ttl = 3600)]
async fn cached_page() -> impl IntoResponse {
    tokio::time::sleep(Duration::from_millis(2)).await;
    ([(header::CONTENT_TYPE, "application/json")], body())
}

/// `cached_page` with a handler whose future holds 4 KB across its await, as one holding
/// a database query's state does: what a hit costs when the handler is large
/// (`hit_profile` only).
#[cached(resource = "templates", ttl = 3600)]
async fn cached_large_page() -> impl IntoResponse {
    let scratch = [7u8; 4096];
    tokio::time::sleep(Duration::from_millis(2)).await;
    let _ = std::hint::black_box(&scratch);
    ([(header::CONTENT_TYPE, "application/json")], body())
}

/// `cached_page` keyed by the request's `Accept-Language` as well (`hit_profile` only).
#[cached(resource = "templates", ttl = 3600, vary = header("accept-language"))]
async fn cached_vary_page() -> impl IntoResponse {
    tokio::time::sleep(Duration::from_millis(2)).await;
    ([(header::CONTENT_TYPE, "application/json")], body())
}

/// Every route, with `redis_url` as the Redis of `/cached-redis`, `/redis-get` and
/// `/redis-mget` (which it fills with the page and two tokens).
pub async fn app(redis_url: &str) -> Router {
    let memory_cache = Cache::new(CacheConfig::default()).await.unwrap();
    let redis_cache = Cache::new(support::redis_config(redis_url)).await.unwrap();
    let local_cache = Cache::new(
        support::redis_config(redis_url)
            .with_prefix("local")
            .with_local_tier(cache_runtime::LocalTier::Tracking, 64 * 1024 * 1024),
    )
    .await
    .unwrap();
    let mut redis_conn = ConnectionManager::new(redis::Client::open(redis_url).unwrap())
        .await
        .unwrap();
    let _: () = redis::cmd("MSET")
        .arg(PAGE_KEY)
        .arg(body().as_ref())
        .arg(MGET_KEYS[0])
        .arg(TOKEN)
        .arg(MGET_KEYS[1])
        .arg(TOKEN)
        .query_async(&mut redis_conn)
        .await
        .unwrap();
    let memory = Router::new()
        .route("/cached-memory", get(cached_page))
        .route("/cached-memory-large", get(cached_large_page))
        .route("/cached-memory-vary", get(cached_vary_page))
        .layer(memory_cache.extension());
    let redis = Router::new()
        .route("/cached-redis", get(cached_page))
        .layer(redis_cache.extension());
    let local = Router::new()
        .route("/cached-local", get(cached_page))
        .layer(local_cache.extension());
    let peer = Router::new()
        .route("/peer", get(page))
        .layer(CacheLayer::with_lifespan(Duration::from_secs(3600)));
    // The connection is the raw routes' own middleware, as the cache's extension is
    // ours: `/static` carries only what every route does, like `/peer`.
    let raw = Router::new()
        .route("/redis-get", get(redis_get_page))
        .route("/redis-mget", get(redis_mget_page))
        .layer(Extension(redis_conn));
    Router::new()
        .route("/static", get(static_page))
        .route("/static-hit-headers", get(static_page_hit_headers))
        .route("/uncached", get(page))
        .merge(raw)
        .merge(memory)
        .merge(redis)
        .merge(local)
        .merge(peer)
        .layer(Extension(CacheScope::new("org_1")))
}
