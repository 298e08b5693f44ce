//! Fault injection (issue 5): a redis-server that stops answering. SIGSTOP keeps the
//! connections open while nothing answers (the worst case: no error, only silence);
//! `CLIENT PAUSE ... WRITE` answers reads and holds writes. Reads must cost at most a
//! bounded extra latency, then the open circuit serves at uncached latency, and caching
//! must come back by itself when the server answers again; an invalidation held up by
//! the pause must leave its tenant+resource bypassed until it is delivered.

use std::time::{Duration, Instant};

use cache_runtime::stats::CircuitSnapshot;
use cache_runtime::{Cache, CacheConfig};
use cache_tests::redis_server::wait_until;
use cache_tests::versioned_api::{Api, Read};
use cache_tests::RedisServer;

const TIMEOUT: Duration = Duration::from_millis(300);
const OPEN_FOR: Duration = Duration::from_millis(800);
const FAILURES: u32 = 3;
/// What the handler costs uncached (a query).
const HANDLER: Duration = Duration::from_millis(20);

fn config(server: &RedisServer) -> CacheConfig {
    CacheConfig::default()
        .with_redis_url(server.url())
        .with_response_timeout(TIMEOUT)
        .with_connect_timeout(TIMEOUT)
        .with_circuit(FAILURES, OPEN_FOR)
}

/// What the machine being busy may add to a bound: less than one timeout.
const SLACK: Duration = Duration::from_millis(150);

/// README: at most two Redis operations (lookup, generation init) wait for the timeout
/// on a request path. (`fault_bounds` checks the exact costs.)
fn bound() -> Duration {
    HANDLER + TIMEOUT * 2 + SLACK
}

/// README: caching resumes at the first probe after Redis answers, within the current
/// back-off: here at most 1.6 s (800 ms, doubled by the one failed probe).
const RESUMES_WITHIN: Duration = Duration::from_secs(3);

fn outcomes(reads: &[Read]) -> Vec<&str> {
    reads.iter().map(Read::x_cache).collect()
}

fn median(mut durations: Vec<Duration>) -> Duration {
    durations.sort();
    durations[durations.len() / 2]
}

/// Caches `tenant`'s contacts, and waits until the store has been counted: its success
/// also resets the circuit's failure count, which must not happen in the middle of the
/// pause that follows (a HIT may come from the flight before the store has returned).
async fn warm(api: &Api, cache: &Cache, tenant: &str) {
    let stores = cache.stats().totals.stores;
    api.read(tenant, "contacts", None).await;
    api.read_until_hit(tenant, "contacts", None, Duration::from_secs(10))
        .await;
    wait_until(Duration::from_secs(10), "the store is counted", || {
        cache.stats().totals.stores > stores
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_server_costs_a_bounded_delay_then_bypasses_then_resumes() {
    let server = RedisServer::start();
    let cache = Cache::new(config(&server)).await.unwrap();
    let api = Api::new(&cache);
    api.db.set_delay(HANDLER);
    warm(&api, &cache, "org_1").await;
    let runs_before = api.db.runs();

    server.pause();
    // Until the circuit opens, each read waits for the timeout, then is answered uncached.
    let mut waited = Vec::new();
    for _ in 0..FAILURES {
        let read = api.read("org_1", "contacts", None).await;
        assert_eq!(read.x_cache(), "MISS");
        assert!(read.elapsed >= TIMEOUT, "answered before the timeout?");
        assert!(read.elapsed < bound(), "read took {:?}", read.elapsed);
        waited.push(read);
    }
    assert_eq!(cache.stats().circuit_opened, 1);
    // Open: Redis is not tried; reads cost what the handler costs.
    let mut open = Vec::new();
    for _ in 0..15 {
        let read = api.read("org_1", "contacts", None).await;
        assert_eq!(read.x_cache(), "BYPASS");
        open.push(read.elapsed);
    }
    let open_median = median(open.clone());
    assert!(
        open_median < HANDLER + TIMEOUT / 2,
        "an open circuit still waits for Redis: median {open_median:?} ({open:?})"
    );

    // Stay paused past the back-off: a probe tries, waits, fails; the circuit stays open
    // and is not counted as opened again.
    let mut during = Vec::new();
    let paused = Instant::now();
    while paused.elapsed() < OPEN_FOR * 2 {
        let read = api.read("org_1", "contacts", None).await;
        assert!(read.elapsed < bound(), "read took {:?}", read.elapsed);
        during.push(read);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = outcomes(&during);
    assert!(!seen.contains(&"HIT"), "{seen:?}");
    assert!(seen.contains(&"MISS"), "no probe: {seen:?}");
    let stats = cache.stats();
    assert_eq!(stats.circuit_opened, 1);
    assert_ne!(stats.circuit, CircuitSnapshot::Closed);
    let uncached = waited.len() + open.len() + during.len();
    assert_eq!(api.db.runs() - runs_before, uncached);

    server.resume();
    let after = api
        .read_until_hit("org_1", "contacts", None, RESUMES_WITHIN)
        .await;
    for read in &after {
        assert!(read.elapsed < bound(), "read took {:?}", read.elapsed);
    }
    let stats = cache.stats();
    assert_eq!(stats.circuit, CircuitSnapshot::Closed);
    assert_eq!(stats.circuit_opened, 1);
}

/// A client that gives up while its request is the circuit's half-open probe (a
/// disconnect drops the handler future) must not leave the circuit waiting forever for
/// that probe's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_probe_does_not_keep_the_circuit_open() {
    let server = RedisServer::start();
    let cache = Cache::new(config(&server)).await.unwrap();
    let api = Api::new(&cache);
    warm(&api, &cache, "org_1").await;

    server.pause();
    for _ in 0..FAILURES {
        api.read("org_1", "contacts", None).await;
    }
    assert_eq!(cache.stats().circuit_opened, 1);
    wait_until(OPEN_FOR * 10, "the back-off passes", || {
        cache.stats().circuit == CircuitSnapshot::HalfOpen
    });
    // This read takes the probe, waits on the paused server, and is dropped.
    let cancelled = tokio::time::timeout(TIMEOUT / 3, api.read("org_1", "contacts", None)).await;
    assert!(
        cancelled.is_err(),
        "the probe answered from a paused server"
    );

    server.resume();
    api.read_until_hit("org_1", "contacts", None, RESUMES_WITHIN)
        .await;
    assert_eq!(cache.stats().circuit, CircuitSnapshot::Closed);
}

/// `CLIENT PAUSE WRITE` (what a failover does): the server holds writes. A mutation's
/// invalidation times out; the mutation still succeeds within the bound, its
/// tenant+resource bypasses (no read returns the entry cached before it), and the
/// invalidation is delivered in the background once writes are accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_held_by_a_write_pause_is_pending_then_delivered() {
    let server = RedisServer::start();
    // The circuit stays closed: BYPASS below can only be the pending invalidation.
    let cache = Cache::new(config(&server).with_circuit(1000, OPEN_FOR))
        .await
        .unwrap();
    let api = Api::new(&cache);
    warm(&api, &cache, "org_a").await;
    warm(&api, &cache, "org_b").await;

    let pause_ms = 3000;
    let _: () = server.cmd(&["CLIENT", "PAUSE", &pause_ms.to_string(), "WRITE"]);
    let paused = Instant::now();
    let started = Instant::now();
    assert_eq!(api.change("org_a", "contacts").await, 2);
    assert!(
        started.elapsed() < TIMEOUT + SLACK,
        "mutation took {:?}: at most one timeout",
        started.elapsed()
    );
    assert_eq!(cache.stats().pending_invalidations, 1);

    // Interleave reads of the invalidated tenant+resource (checked against the database:
    // never version 1) and of another tenant (still served from the cache). Each read of
    // org_a is checked to fall in the risky window: Redis still holds version 1 under the
    // old generation, the invalidation is pending.
    let mut seen_a = Vec::new();
    while seen_a.len() < 3 || paused.elapsed() < Duration::from_millis(pause_ms / 2) {
        let read = api.read("org_a", "contacts", None).await;
        assert!(read.elapsed < bound());
        assert_eq!(
            cache.stats().pending_invalidations,
            1,
            "read {} of org_a came after the delivery, {:?} into a {pause_ms} ms pause",
            seen_a.len() + 1,
            paused.elapsed()
        );
        seen_a.push(read.x_cache().to_owned());
        // org_b is correct either way; it is not always a HIT: the held MSET blocks the
        // one multiplexed connection, so reads queued behind it time out meanwhile.
        let other = api.read("org_b", "contacts", None).await;
        assert!(other.elapsed < bound());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen_a.iter().all(|o| o == "BYPASS"), "{seen_a:?}");

    // Delivered by itself within 2 s of the pause's end (the redelivery's back-off
    // cap); every read meanwhile is fresh.
    let deadline = paused + Duration::from_millis(pause_ms) + Duration::from_secs(2) + SLACK;
    while cache.stats().pending_invalidations > 0 {
        api.read("org_a", "contacts", None).await;
        assert!(
            Instant::now() < deadline,
            "the invalidation was never delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reads = api
        .read_until_hit("org_a", "contacts", None, Duration::from_secs(10))
        .await;
    assert!(outcomes(&reads).contains(&"MISS"));
    assert_eq!(cache.stats().circuit_opened, 0);
}
