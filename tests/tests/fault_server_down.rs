//! Fault injection (issue 5): the redis-server dies (SIGKILL) under a running API, is
//! gone at start-up, or is gone while a mutation invalidates. Every answer must be the
//! uncached one, within a bounded extra latency; the circuit must open once, stop
//! trying, and close by itself when the server is back; a mutation must still succeed,
//! and its tenant+resource must bypass until the invalidation is delivered.

use std::time::{Duration, Instant};

use cache_runtime::stats::CircuitSnapshot;
use cache_runtime::{Cache, CacheConfig};
use cache_tests::versioned_api::{Api, Read};
use cache_tests::RedisServer;

const TIMEOUT: Duration = Duration::from_millis(200);
const OPEN_FOR: Duration = Duration::from_millis(500);
const FAILURES: u32 = 3;

fn config(server: &RedisServer) -> CacheConfig {
    CacheConfig::default()
        .with_redis_url(server.url())
        .with_response_timeout(TIMEOUT)
        .with_connect_timeout(TIMEOUT)
        .with_circuit(FAILURES, OPEN_FOR)
}

/// What the machine being busy may add to a bound: less than one timeout.
const SLACK: Duration = Duration::from_millis(150);

/// README: a faulted read waits for at most two Redis operations (lookup and generation
/// init), each bounded by the timeout. (`fault_bounds` checks the exact costs.)
fn extra_latency_bound() -> Duration {
    TIMEOUT * 2 + SLACK
}

/// README: caching resumes at the first probe after Redis is back, within the current
/// back-off. These outages last about 2 s: the back-off is at most 2 s when Redis is
/// started again (1 s, then 2 s after each failed probe of a 500 ms base).
const RESUMES_WITHIN: Duration = Duration::from_secs(4);

fn outcomes(reads: &[Read]) -> Vec<&str> {
    reads.iter().map(Read::x_cache).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_gives_uncached_answers_opens_the_circuit_once_and_recovers() {
    let mut server = RedisServer::start();
    let cache = Cache::new(config(&server)).await.unwrap();
    let api = Api::new(&cache);
    assert_eq!(api.read("org_1", "contacts", None).await.x_cache(), "MISS");
    api.read_until_hit("org_1", "contacts", None, Duration::from_secs(10))
        .await;
    // A HIT may come from the flight before the store returns; the store's success,
    // counted late, would reset the circuit's failure count in the middle of the outage.
    cache_tests::redis_server::wait_until(Duration::from_secs(10), "the store is counted", || {
        cache.stats().totals.stores == 1
    });
    let runs_before = api.db.runs();
    let errors_before = cache.stats().totals.errors;

    server.kill();
    // Read for a while: long enough for the circuit to open, half-open, fail its probe.
    let mut reads = Vec::new();
    let outage = Instant::now();
    while outage.elapsed() < OPEN_FOR * 4 {
        let read = api.read("org_1", "contacts", None).await;
        assert!(
            read.elapsed < extra_latency_bound(),
            "a read took {:?} with Redis down",
            read.elapsed
        );
        reads.push(read);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = outcomes(&reads);
    assert!(
        !seen.contains(&"HIT"),
        "served from a dead server: {seen:?}"
    );
    assert_eq!(
        api.db.runs() - runs_before,
        reads.len(),
        "every read ran the handler"
    );
    let first_bypass = seen
        .iter()
        .position(|o| *o == "BYPASS")
        .expect("the circuit opened");
    assert!(
        first_bypass <= FAILURES as usize,
        "the circuit opened only after {first_bypass} failures: {seen:?}"
    );
    let probes = seen[first_bypass..]
        .iter()
        .filter(|o| **o == "MISS")
        .count();
    assert!(
        probes >= 1,
        "no probe tried Redis after the back-off: {seen:?}"
    );
    let stats = cache.stats();
    assert_eq!(
        stats.circuit_opened, 1,
        "one outage opens the circuit once, failed probes included"
    );
    assert_ne!(stats.circuit, CircuitSnapshot::Closed);
    assert!(stats.totals.errors - errors_before >= u64::from(FAILURES));
    assert!(stats.totals.bypasses >= (reads.len() - first_bypass - probes) as u64);

    server.start_again();
    // Caching resumes by itself: no process restart, nobody calls is_available().
    let after = api
        .read_until_hit("org_1", "contacts", None, RESUMES_WITHIN)
        .await;
    assert!(
        after.len() >= 2,
        "the restarted server holds nothing: {:?}",
        outcomes(&after)
    );
    let stats = cache.stats();
    assert_eq!(stats.circuit, CircuitSnapshot::Closed);
    assert_eq!(stats.circuit_opened, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_is_served_uncached_until_it_answers() {
    let mut server = RedisServer::start();
    server.kill();
    let started = Instant::now();
    let cache = Cache::new(config(&server))
        .await
        .expect("an unreachable Redis is no error");
    assert!(
        started.elapsed() < TIMEOUT * 2 + SLACK,
        "Cache::new took {:?}: connect + response timeout is {:?}",
        started.elapsed(),
        TIMEOUT * 2
    );
    assert!(!cache.is_available().await);
    let api = Api::new(&cache);
    for _ in 0..10 {
        let read = api.read("org_1", "contacts", None).await;
        assert_ne!(read.x_cache(), "HIT");
        assert!(read.elapsed < extra_latency_bound());
    }
    assert_eq!(api.db.runs(), 10);
    server.start_again();
    api.read_until_hit("org_1", "contacts", None, RESUMES_WITHIN)
        .await;
    assert!(cache.is_available().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutation_while_down_succeeds_and_its_resource_bypasses_until_delivered() {
    let mut server = RedisServer::start();
    // A high threshold keeps the circuit closed, so BYPASS below can only come from the
    // pending invalidation.
    let cache = Cache::new(config(&server).with_circuit(1000, OPEN_FOR))
        .await
        .unwrap();
    let api = Api::new(&cache);
    for (tenant, resource) in [
        ("org_a", "contacts"),
        ("org_a", "templates"),
        ("org_b", "contacts"),
    ] {
        api.read(tenant, resource, None).await;
        api.read_until_hit(tenant, resource, None, Duration::from_secs(10))
            .await;
    }

    server.kill();
    let started = Instant::now();
    let version = api.change("org_a", "contacts").await;
    assert!(
        started.elapsed() < TIMEOUT + SLACK,
        "the mutation waited {:?} for a dead Redis: at most one timeout",
        started.elapsed()
    );
    assert_eq!(version, 2);
    assert_eq!(cache.stats().pending_invalidations, 1);

    for _ in 0..5 {
        // `read` checks the body against the database: version 2, never the cached 1.
        let read = api.read("org_a", "contacts", None).await;
        assert_eq!(read.x_cache(), "BYPASS", "pending invalidation must bypass");
        // Other resources and tenants are not bypassed, only unreachable (a miss).
        assert_eq!(api.read("org_a", "templates", None).await.x_cache(), "MISS");
        assert_eq!(api.read("org_b", "contacts", None).await.x_cache(), "MISS");
    }

    server.start_again();
    // Delivered in the background within 2 s of Redis answering (the redelivery's
    // back-off cap): the generation key is written with no request.
    cache_tests::redis_server::wait_until(
        Duration::from_secs(2) + SLACK,
        "the pending invalidation is delivered",
        || cache.stats().pending_invalidations == 0,
    );
    let generation_key = "api-cache:{t.org_a}:g:contacts";
    assert_eq!(server.keys(generation_key), vec![generation_key.to_owned()]);
    let reads = api
        .read_until_hit("org_a", "contacts", None, Duration::from_secs(10))
        .await;
    assert_eq!(outcomes(&reads)[0], "MISS");
}
