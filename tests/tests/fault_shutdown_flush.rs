//! Issue 11: pending invalidations are flushed on graceful shutdown. An invalidation
//! still pending when an instance exits is lost, and other instances may then serve what
//! it drops until the entries expire; `Cache::flush_pending` delivers them now, within a
//! bound, instead of waiting for the background redelivery's next attempt (up to 2 s
//! away once it has backed off).

use std::time::{Duration, Instant};

use cache_runtime::{Cache, CacheConfig};
use cache_tests::versioned_api::{wait_until_stored, Api};
use cache_tests::RedisServer;

const TIMEOUT: Duration = Duration::from_millis(200);

fn config(server: &RedisServer) -> CacheConfig {
    CacheConfig::default()
        .with_redis_url(server.url())
        .with_response_timeout(TIMEOUT)
        .with_connect_timeout(TIMEOUT)
        .with_circuit(1000, Duration::from_millis(500))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_pending_gives_up_within_its_bound_then_delivers_once_redis_is_back() {
    let mut server = RedisServer::start();
    let cache = Cache::new(config(&server)).await.unwrap();
    let api = Api::new(&cache);
    api.read("org_1", "contacts", None).await;
    api.read_until_hit("org_1", "contacts", None, Duration::from_secs(10))
        .await;
    wait_until_stored(&server, "org_1", "contacts");

    server.kill();
    let deferred = Instant::now();
    assert_eq!(api.change("org_1", "contacts").await, 2);
    assert_eq!(cache.stats().pending_invalidations, 1);

    // Redis down: the flush tries for as long as it is allowed, then says it failed.
    let within = Duration::from_millis(300);
    let started = Instant::now();
    assert!(!cache.flush_pending(within).await);
    let took = started.elapsed();
    assert!(
        took >= within && took < within + TIMEOUT * 2,
        "a flush bounded by {within:?} took {took:?}"
    );
    assert_eq!(cache.stats().pending_invalidations, 1);

    // Down long enough for the background redelivery to back off to its 2 s maximum
    // (50 ms doubling: 3.15 s), so that its next attempt is most likely far away.
    let backed_off = Duration::from_millis(3500);
    tokio::time::sleep(backed_off.saturating_sub(deferred.elapsed())).await;
    server.start_again();
    let back = Instant::now();
    let contacts_generation = "api-cache:{t.org_1}:g:contacts";
    let delivered_before_the_flush = server.keys(contacts_generation).len();

    assert!(cache.flush_pending(Duration::from_secs(5)).await);
    let flushed_in = back.elapsed();
    assert_eq!(cache.stats().pending_invalidations, 0);
    // The restarted server holds nothing else: the generation key is the invalidation.
    assert_eq!(server.keys(contacts_generation).len(), 1);
    assert!(
        flushed_in < Duration::from_millis(1000),
        "the flush took {flushed_in:?} after Redis came back"
    );
    println!(
        "flush_pending delivered {flushed_in:?} after Redis came back (the background \
         redelivery was backed off to 2 s; generation key already there before the \
         flush: {delivered_before_the_flush})"
    );
    // And caching resumes with fresh data.
    let reads = api
        .read_until_hit("org_1", "contacts", None, Duration::from_secs(10))
        .await;
    assert_ne!(reads[0].x_cache(), "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_pending_with_nothing_pending_returns_at_once() {
    let server = RedisServer::start();
    let cache = Cache::new(config(&server)).await.unwrap();
    let started = Instant::now();
    assert!(cache.flush_pending(Duration::from_secs(5)).await);
    assert!(started.elapsed() < Duration::from_millis(50));
}
