//! Manual lookups through the runtime's `testing` API, for tests that drive a cache
//! without HTTP: store a body on a miss, read a hit's body.

use std::time::Duration;

use cache_runtime::testing::{CacheKey, CachedResponse, Lookup};
use cache_runtime::Cache;

/// Looks `key` up, expects a miss, and stores `body` under it for `ttl`.
pub async fn store_on_miss(cache: &Cache, key: &CacheKey, body: &str, ttl: Duration) {
    let Lookup::Miss(ticket) = cache.lookup(key).await else {
        panic!("expected a miss")
    };
    assert!(cache
        .store(ticket, CachedResponse::ok(body.to_owned()), ttl)
        .await
        .expect("the store answers"));
}

/// The body of a hit on `key`, `None` for anything else.
pub async fn hit_body(cache: &Cache, key: &CacheKey) -> Option<String> {
    match cache.lookup(key).await {
        Lookup::Hit(entry) => Some(String::from_utf8_lossy(&entry.response().body).into_owned()),
        _ => None,
    }
}

/// Hits `cache` served from its local tier so far.
pub fn local_hits(cache: &Cache) -> u64 {
    cache.stats().totals.local_hits
}

/// Generations `cache`'s local tier knows to be current (`tracking` mode).
pub fn known_generations(cache: &Cache) -> u64 {
    cache
        .stats()
        .local_tier
        .expect("local tier on")
        .known_generations
}
