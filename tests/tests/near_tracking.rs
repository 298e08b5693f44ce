//! The local tier in `tracking` mode (issue 17): two `Cache` instances on one private
//! redis-server. A local hit costs no round trip; an invalidation on one instance is
//! honoured by the other's local tier once Redis's `invalidate` push arrives (measured
//! and printed here, bounded generously), and at once on the instance that wrote; a lost
//! tracking connection or a restarted Redis makes an instance forget every generation.

use std::time::{Duration, Instant};

use cache_runtime::testing::{CacheKey, Lookup, Tenant};
use cache_runtime::{Cache, LocalTier};
use cache_tests::backends::TestBackend;
use cache_tests::lookups::{hit_body, known_generations, local_hits, store_on_miss};
use cache_tests::redis_server::wait_until_async;
use cache_tests::tcp_proxy::TcpProxy;

const LONG: Duration = Duration::from_secs(600);
/// Generous: a push takes well under a millisecond on loopback, but this machine is
/// shared with several builds.
const PUSH_BOUND: Duration = Duration::from_secs(2);

async fn tracking_cache(url: String) -> Cache {
    tracking_cache_pinging(url, None).await
}

/// `ping`: the keepalive interval, where the default (1 s) would matter: a test that
/// counts the commands a server receives must not count a keepalive `PING`.
async fn tracking_cache_pinging(url: String, ping: Option<Duration>) -> Cache {
    let backend_config = TestBackend::redis();
    // Only the shape of the test configuration is wanted; its own server is unused.
    let mut config = backend_config
        .config()
        .with_redis_url(url)
        .with_local_tier(LocalTier::Tracking, 16 * 1024 * 1024);
    if let Some(ping) = ping {
        config = config.with_local_tier_ping(ping);
    }
    Cache::new(config).await.expect("cache")
}

/// A tracking cache on `backend`'s own server, whose faults the test injects, with a
/// keepalive every `ping` and Redis calls bounded by `timeout`.
async fn tracking_cache_timing_out(
    backend: &TestBackend,
    ping: Duration,
    timeout: Duration,
) -> Cache {
    let config = backend
        .config()
        .with_local_tier(LocalTier::Tracking, 16 * 1024 * 1024)
        .with_local_tier_ping(ping)
        .with_response_timeout(timeout);
    Cache::new(config).await.expect("cache")
}

fn key(cache: &Cache, tenant: &str) -> CacheKey {
    cache
        .key(Tenant::Scoped(tenant), "contacts")
        .unwrap()
        .request("GET", "/api/contacts", None)
        .build()
}

async fn put(cache: &Cache, key: &CacheKey, body: &str) {
    store_on_miss(cache, key, body, LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_hit_costs_no_round_trip_and_an_invalidation_elsewhere_reaches_it() {
    let backend = TestBackend::redis();
    let server = backend.server().unwrap();
    // No keepalive PING may fall into the window whose commands are counted.
    let a = tracking_cache_pinging(server.url(), Some(LONG)).await;
    let b = tracking_cache_pinging(server.url(), Some(LONG)).await;
    let k = key(&a, "org_1");

    put(&a, &k, "v1").await;
    // B reads it from Redis (generations through its tracking connection), then locally.
    assert_eq!(hit_body(&b, &k).await.as_deref(), Some("v1"));
    assert_eq!(local_hits(&b), 0);
    let before = server.command_calls();
    for _ in 0..100 {
        assert_eq!(hit_body(&b, &k).await.as_deref(), Some("v1"));
    }
    assert_eq!(local_hits(&b), 100);
    let sent = server.command_calls_since(&before);
    assert!(sent.is_empty(), "local hits sent {sent:?}");

    // A writes: B honours it once the push arrives (B's local check is polled: it
    // costs no round trip, so the first read that is not a local hit marks the push),
    // A at once (no push wait).
    let known = known_generations(&b);
    let watcher = {
        let b = b.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + PUSH_BOUND;
            while known_generations(&b) >= known && Instant::now() < deadline {
                tokio::task::yield_now().await;
            }
            Instant::now()
        })
    };
    let started = Instant::now();
    a.invalidate("org_1", &["contacts"]).await.unwrap();
    let returned = Instant::now();
    let forgotten = watcher.await.unwrap();
    println!(
        "push delay: B forgot the generation {:?} after invalidate started, {} relative to its return",
        forgotten - started,
        match forgotten.checked_duration_since(returned) {
            Some(after) => format!("{after:?}"),
            None => format!("-{:?} (before)", returned - forgotten),
        }
    );
    let mut stale_reads = 0u32;
    let mut local = local_hits(&b);
    while hit_body(&b, &k).await.is_some() {
        assert_eq!(local_hits(&b), local + 1, "only local hits until the push");
        local += 1;
        stale_reads += 1;
        assert!(
            returned.elapsed() < PUSH_BOUND,
            "B never saw the invalidation"
        );
    }
    println!("B served {stale_reads} stale local reads after invalidate returned");
    assert!(forgotten - started < PUSH_BOUND);
    assert_eq!(
        hit_body(&a, &k).await,
        None,
        "read-your-writes on the writer"
    );

    // And B learns the new generations, then hits locally again.
    put(&b, &k, "v2").await;
    assert_eq!(hit_body(&b, &k).await.as_deref(), Some("v2"));
    let local = local_hits(&b);
    assert_eq!(hit_body(&b, &k).await.as_deref(), Some("v2"));
    assert_eq!(local_hits(&b), local + 1, "served locally again");
    // Tenants stay apart: another tenant's key is not a local hit of this one.
    assert_eq!(hit_body(&b, &key(&b, "org_2")).await, None);
}

/// A connection that dies can have missed pushes: everything learned through it is
/// forgotten, and an invalidation written meanwhile is honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_tracking_connection_forgets_every_generation() {
    let backend = TestBackend::redis();
    let server = backend.server().unwrap();
    let proxy = TcpProxy::start(server.port()).await;
    let writer = tracking_cache(server.url()).await;
    let reader = tracking_cache(proxy.url()).await;
    let k = key(&writer, "org_1");
    put(&writer, &k, "v1").await;
    assert_eq!(hit_body(&reader, &k).await.as_deref(), Some("v1"));
    assert_eq!(hit_body(&reader, &k).await.as_deref(), Some("v1"));
    assert_eq!(local_hits(&reader), 1);
    assert!(known_generations(&reader) > 0);

    // Closes every connection through the proxy (new ones go to the same server).
    proxy.set_upstream(server.port());
    wait_until_async(PUSH_BOUND, "the reader forgets its generations", || {
        known_generations(&reader) == 0
    })
    .await;
    assert_eq!(
        reader.stats().local_tier.unwrap().tracking_connected,
        Some(false)
    );
    // Written while the reader had no tracking connection: no push can reach it.
    writer_bump(server, &k);
    let local = local_hits(&reader);
    assert_eq!(
        hit_body(&reader, &k).await,
        None,
        "the invalidation is honoured"
    );
    assert_eq!(local_hits(&reader), local);
    assert_eq!(
        reader.stats().local_tier.unwrap().tracking_connected,
        Some(true),
        "reconnected"
    );
}

/// Sets a fresh token on the resource's generation key behind every instance's back.
fn writer_bump(server: &cache_tests::RedisServer, k: &CacheKey) {
    let contacts = k
        .generation_keys()
        .iter()
        .find(|g| g.ends_with(":contacts"))
        .expect("the resource's generation key");
    let _: () = server.cmd(&["SET", contacts, "1.0000000000000001"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_redis_flushes_local_generations() {
    let mut backend = TestBackend::redis();
    let url = backend.server().unwrap().url();
    let cache = tracking_cache(url).await;
    let k = key(&cache, "org_1");
    put(&cache, &k, "v1").await;
    // The first read learns the generations (those the miss created were pushed away).
    assert_eq!(hit_body(&cache, &k).await.as_deref(), Some("v1"));
    assert_eq!(hit_body(&cache, &k).await.as_deref(), Some("v1"));
    assert!(local_hits(&cache) >= 1);
    assert!(known_generations(&cache) > 0);

    let TestBackend::Redis(server) = &mut backend else {
        unreachable!()
    };
    server.restart();
    wait_until_async(PUSH_BOUND, "the lost connection is noticed", || {
        known_generations(&cache) == 0
    })
    .await;
    // The restarted server holds nothing: the local entry must not be served.
    let local = local_hits(&cache);
    let mut served_locally = false;
    let deadline = Instant::now() + PUSH_BOUND;
    loop {
        match cache.lookup(&k).await {
            Lookup::Hit(_) => served_locally = true,
            Lookup::Miss(ticket) if ticket.can_store() => break,
            // Reconnecting: served uncached.
            _ => {}
        }
        assert!(Instant::now() < deadline, "Redis never answered again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !served_locally,
        "a local entry was served after the restart"
    );
    assert_eq!(local_hits(&cache), local);
}

/// `FLUSHALL` invalidates every key: Redis pushes a null `invalidate`, and the instance
/// forgets everything (the flushed generations come back fresh, the entry is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_forgets_every_generation() {
    let backend = TestBackend::redis();
    let server = backend.server().unwrap();
    let cache = tracking_cache(server.url()).await;
    let k = key(&cache, "org_1");
    put(&cache, &k, "v1").await;
    assert_eq!(hit_body(&cache, &k).await.as_deref(), Some("v1"));
    assert_eq!(hit_body(&cache, &k).await.as_deref(), Some("v1"));
    assert!(known_generations(&cache) > 0);
    let _: () = server.cmd(&["FLUSHALL"]);
    wait_until_async(PUSH_BOUND, "the flush is pushed", || {
        known_generations(&cache) == 0
    })
    .await;
    let local = local_hits(&cache);
    assert_eq!(hit_body(&cache, &k).await, None);
    assert_eq!(local_hits(&cache), local);
}

/// A server that stops answering without closing anything (SIGSTOP: no FIN, no RST, as
/// in a silent partition) is found out by the keepalive `PING`: local hits stop at most
/// one ping interval plus the response timeout after the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_stopped_redis_stops_local_hits_within_ping_interval_plus_timeout() {
    const PING: Duration = Duration::from_millis(500);
    const TIMEOUT: Duration = Duration::from_millis(100);
    // Scheduling slack on a shared machine: well under one interval.
    const TOLERANCE: Duration = Duration::from_millis(150);
    let backend = TestBackend::redis();
    let server = backend.server().unwrap();
    let cache = tracking_cache_timing_out(&backend, PING, TIMEOUT).await;
    let k = key(&cache, "org_1");
    put(&cache, &k, "v1").await;
    // The first reads may meet a cold connection and its short timeout: read until one
    // is served locally.
    let deadline = Instant::now() + PUSH_BOUND;
    while local_hits(&cache) == 0 && Instant::now() < deadline {
        hit_body(&cache, &k).await;
    }
    assert!(local_hits(&cache) >= 1, "local hits before the pause");
    // Several pings answered: the keepalive does not drop a healthy connection.
    tokio::time::sleep(PING * 3).await;
    assert!(known_generations(&cache) > 0);
    assert_eq!(hit_body(&cache, &k).await.as_deref(), Some("v1"));

    server.pause();
    let paused = Instant::now();
    let bound = PING + TIMEOUT;
    // Polling the view costs no round trip (a lookup that is not a local hit would wait
    // for the paused server).
    while known_generations(&cache) > 0 && paused.elapsed() < bound + TOLERANCE * 4 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let forgotten = paused.elapsed();
    println!(
        "keepalive: the paused server was given up {forgotten:?} after the pause (bound {bound:?})"
    );
    assert_eq!(known_generations(&cache), 0, "never forgotten");
    assert!(
        forgotten <= bound + TOLERANCE,
        "forgotten {forgotten:?} after the pause, bound {bound:?}"
    );
    assert_eq!(
        cache.stats().local_tier.unwrap().tracking_connected,
        Some(false)
    );
    let local = local_hits(&cache);
    assert_eq!(
        hit_body(&cache, &k).await,
        None,
        "no local hit after the bound"
    );
    assert_eq!(local_hits(&cache), local);
    server.resume();
}

/// A tracked lookup that times out is not sent again on the shared connection: behind a
/// frozen server a read in tracking mode waits one timeout, as without the tier (README,
/// Failure modes: a read costs at most two operations, here one, since the key's
/// generations exist), not one per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracked_lookup_that_times_out_is_not_sent_again_on_the_shared_connection() {
    const TIMEOUT: Duration = Duration::from_millis(250);
    let backend = TestBackend::redis();
    let server = backend.server().unwrap();
    let cache = tracking_cache_timing_out(&backend, LONG, TIMEOUT).await;
    let stored = key(&cache, "org_1");
    put(&cache, &stored, "v1").await;
    // Another request of the same tenant and resource: its generations exist (one
    // operation), it has no entry (no local hit), so its lookup is one tracked read.
    let other = cache
        .key(Tenant::Scoped("org_1"), "contacts")
        .unwrap()
        .request("GET", "/api/contacts", Some("page=2"))
        .build();
    assert!(matches!(cache.lookup(&other).await, Lookup::Miss(_)));
    assert_eq!(
        cache.stats().local_tier.unwrap().tracking_connected,
        Some(true),
        "the lookups went through the tracking connection"
    );

    server.pause();
    let started = Instant::now();
    let looked_up = cache.lookup(&other).await;
    let took = started.elapsed();
    server.resume();
    println!("a tracked lookup behind a frozen server took {took:?} (timeout {TIMEOUT:?})");
    assert!(!matches!(looked_up, Lookup::Hit(_)), "nothing to hit");
    assert!(took >= TIMEOUT, "{took:?}: answered before the timeout");
    // Twice the timeout is what a retry on the shared connection costs; half a timeout
    // of slack for a loaded machine.
    assert!(
        took < TIMEOUT * 3 / 2,
        "{took:?}: more than one timeout ({TIMEOUT:?}) behind a frozen server"
    );
}
