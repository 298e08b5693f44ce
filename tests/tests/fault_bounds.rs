//! The bounds the README's Failure modes section states, one test each, as stated: a
//! read costs at most two operations (each bounded by the response timeout) before the
//! circuit opens, after `API_CACHE_CIRCUIT_FAILURES` of them; `Cache::new` returns within
//! connect + response timeout; `is_available` answers within the response timeout; a
//! mutation waits at most one timeout; a pending invalidation is delivered within 2 s of
//! Redis answering, and its delivery closes the circuit; each failed probe doubles the
//! back-off, and caching resumes at the first probe after Redis is back, within the
//! current back-off; the store of a miss is off the request path.
//!
//! Where it can, a test counts rather than times: operations through the commands the
//! redis-server received (`INFO commandstats`; a frozen server counts what it was sent
//! once it thaws), timeouts through `errors`. A frozen server (SIGSTOP) makes each
//! operation cost exactly one timeout; the time bounds allow `SLACK` for a loaded 2-core
//! machine, less than one timeout, so that an extra timeout or a doubled back-off fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use cache_runtime::stats::CircuitSnapshot;
use cache_runtime::{cached, Cache, CacheConfig, CacheScope};
use cache_tests::http::send;
use cache_tests::redis_server::{wait_until, wait_until_async};
use cache_tests::versioned_api::{wait_until_stored, Api, Read};
use cache_tests::RedisServer;

const TIMEOUT: Duration = Duration::from_millis(200);
const FAILURES: u32 = 3;
/// What a bound may be overrun by on a loaded machine: less than one timeout.
const SLACK: Duration = Duration::from_millis(150);

fn config(server: &RedisServer) -> CacheConfig {
    CacheConfig::default()
        .with_redis_url(server.url())
        .with_response_timeout(TIMEOUT)
        .with_connect_timeout(TIMEOUT)
        // Open long enough that no probe runs unless a test shortens it.
        .with_circuit(FAILURES, Duration::from_secs(30))
}

/// Caches `tenant`'s contacts, and waits until the store has been counted: its success
/// also resets the circuit's failure count, which must not happen in the middle of a
/// fault that follows (a HIT may come from the flight before the store has returned).
async fn warm(api: &Api, cache: &Cache, tenant: &str, server: &RedisServer) {
    let stores = cache.stats().totals.stores;
    api.read(tenant, "contacts", None).await;
    api.read_until_hit(tenant, "contacts", None, Duration::from_secs(10))
        .await;
    wait_until_stored(server, tenant, "contacts");
    wait_until(Duration::from_secs(10), "the store is counted", || {
        cache.stats().totals.stores > stores
    });
}

fn errors(cache: &Cache) -> u64 {
    cache.stats().totals.errors
}

/// README: "the first 3 reads: `MISS` after at most 2 timeouts", then `BYPASS`. With the
/// server frozen, the lookup's `MGET` is the one operation a read tries: each read costs
/// exactly one timeout (not two, not a retry), and the third opens the circuit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_costs_each_read_one_timeout_until_the_circuit_opens() {
    let server = RedisServer::start();
    let cache = Cache::new(config(&server)).await.unwrap();
    let api = Api::new(&cache);
    warm(&api, &cache, "org_1", &server).await;
    let before = server.command_calls();
    let errors_before = errors(&cache);

    server.pause();
    for i in 1..=FAILURES {
        let read = api.read("org_1", "contacts", None).await;
        assert_eq!(read.x_cache(), "MISS", "read {i}");
        assert!(
            read.elapsed >= TIMEOUT && read.elapsed < TIMEOUT + SLACK,
            "read {i} took {:?}: one operation, one {TIMEOUT:?} timeout",
            read.elapsed
        );
        assert_eq!(errors(&cache) - errors_before, u64::from(i), "one timeout");
    }
    assert_eq!(cache.stats().circuit_opened, 1, "opened by the third");
    let open = api.read("org_1", "contacts", None).await;
    assert_eq!(open.x_cache(), "BYPASS");
    assert!(
        open.elapsed < SLACK,
        "an open circuit waited {:?}",
        open.elapsed
    );

    server.resume();
    // The lookups sent to the frozen server run when it thaws: one each, nothing else.
    wait_until(Duration::from_secs(5), "the held lookups run", || {
        server.command_calls_since(&before).get("mget") >= Some(&u64::from(FAILURES))
    });
    let sent = server.command_calls_since(&before);
    assert_eq!(
        sent,
        [("mget".to_owned(), u64::from(FAILURES))].into(),
        "one MGET per read, no retry"
    );
}

/// The worst read: its `MGET` is answered, but the generation keys it finds missing
/// cannot be created (writes are held, `CLIENT PAUSE WRITE`). Two operations, the
/// README's "at most two": the `MGET`, answered at once, and the `SET NX` pipeline, which
/// waits one timeout. Nothing is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_generations_cannot_be_created_costs_two_operations_one_timeout() {
    let server = RedisServer::start();
    let cache = Cache::new(config(&server)).await.unwrap();
    let api = Api::new(&cache);
    let before = server.command_calls();

    let _: () = server.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]);
    let read = api.read("org_new", "contacts", None).await;
    assert_eq!(read.x_cache(), "MISS");
    assert!(
        read.elapsed >= TIMEOUT && read.elapsed < TIMEOUT + SLACK,
        "the read took {:?}: an answered MGET, then one {TIMEOUT:?} timeout",
        read.elapsed
    );
    assert_eq!(errors(&cache), 1);

    let _: () = server.cmd(&["CLIENT", "UNPAUSE"]);
    wait_until(Duration::from_secs(5), "the held writes run", || {
        server.command_calls_since(&before).get("get") >= Some(&2)
    });
    let sent = server.command_calls_since(&before);
    // The tenant's and the resource's generation keys: a SET NX and a GET each, in one
    // pipeline after one MGET.
    assert_eq!(
        sent,
        [
            ("mget".to_owned(), 1),
            ("set".to_owned(), 2),
            ("get".to_owned(), 2),
        ]
        .into(),
        "two operations, no retry"
    );
}

/// README: "`Cache::new` returns after at most connect + response timeout"; `is_available`
/// "never hangs": a ping bounded by the response timeout. Against a frozen server, whose
/// kernel still accepts connections, nothing answers. The connect timeout is the longer:
/// redis-rs tries to connect twice, each bounded by it, so only the cache's own bounds
/// can end these calls in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_and_is_available_answer_within_their_timeouts_when_redis_is_frozen() {
    const CONNECT: Duration = Duration::from_millis(400);
    const RESPONSE: Duration = Duration::from_millis(100);
    let server = RedisServer::start();
    server.pause();
    let started = Instant::now();
    let config = config(&server)
        .with_connect_timeout(CONNECT)
        .with_response_timeout(RESPONSE);
    let cache = tokio::time::timeout(Duration::from_secs(10), Cache::new(config))
        .await
        .expect("Cache::new hung")
        .expect("a frozen Redis is no error");
    let took = started.elapsed();
    assert!(
        took < CONNECT + RESPONSE + SLACK,
        "Cache::new took {took:?} (connect {CONNECT:?} + response {RESPONSE:?})"
    );

    let started = Instant::now();
    let available = tokio::time::timeout(Duration::from_secs(10), cache.is_available())
        .await
        .expect("is_available hung");
    assert!(!available);
    let took = started.elapsed();
    assert!(
        took < RESPONSE + SLACK,
        "is_available took {took:?} (response timeout {RESPONSE:?})"
    );
    server.resume();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cache.is_available().await {
        assert!(Instant::now() < deadline, "never available after the thaw");
    }
}

/// README: "Mutations succeed after at most one timeout". The server is frozen and the
/// circuit closed: the invalidation's one pipeline waits the timeout, no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_waits_at_most_one_timeout() {
    let server = RedisServer::start();
    let cache = Cache::new(config(&server).with_circuit(1000, Duration::from_secs(30)))
        .await
        .unwrap();
    let api = Api::new(&cache);
    warm(&api, &cache, "org_1", &server).await;

    server.pause();
    let started = Instant::now();
    assert_eq!(api.change("org_1", "contacts").await, 2);
    let took = started.elapsed();
    assert!(
        took >= TIMEOUT && took < TIMEOUT + SLACK,
        "the mutation took {took:?}: one {TIMEOUT:?} timeout"
    );
    assert_eq!(cache.stats().pending_invalidations, 1);
    assert_eq!(
        api.read("org_1", "contacts", None).await.x_cache(),
        "BYPASS"
    );
}

/// README: "Pending invalidations are delivered within 2 s of Redis answering, which
/// also closes the circuit". Redis is killed, the circuit opens, a mutation's
/// invalidation goes pending; the redelivery backs off to its 2 s cap. Once Redis is
/// started again, the invalidation lands within 2 s with no request made, and the
/// circuit is closed at once: its own back-off (30 s) is far from over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_invalidation_is_delivered_within_2_s_of_redis_answering_and_closes_the_circuit()
{
    let mut server = RedisServer::start();
    let cache = Cache::new(config(&server)).await.unwrap();
    let api = Api::new(&cache);
    warm(&api, &cache, "org_1", &server).await;

    server.kill();
    for _ in 0..FAILURES {
        assert_eq!(api.read("org_1", "contacts", None).await.x_cache(), "MISS");
    }
    assert_eq!(cache.stats().circuit, CircuitSnapshot::Open);
    assert_eq!(api.change("org_1", "contacts").await, 2);
    assert_eq!(cache.stats().pending_invalidations, 1);
    // Let the redelivery back off to its cap: attempts at 0.05, 0.15, 0.35, 0.75, 1.55
    // and 3.15 s, then every 2 s. Waiting longer changes nothing below (the bound holds
    // at any point of the schedule); at the cap, a delivery that needs one attempt more
    // than it should shows as 4 s.
    tokio::time::sleep(Duration::from_millis(3300)).await;
    assert_eq!(cache.stats().pending_invalidations, 1);

    server.start_again();
    let answering = Instant::now();
    wait_until_async(
        Duration::from_secs(10),
        "the pending invalidation is delivered",
        || cache.stats().pending_invalidations == 0,
    )
    .await;
    let took = answering.elapsed();
    assert!(
        took < Duration::from_secs(2) + SLACK,
        "delivered {took:?} after Redis answered"
    );
    assert_eq!(
        cache.stats().circuit,
        CircuitSnapshot::Closed,
        "the delivery closes the circuit"
    );
    assert_eq!(api.read("org_1", "contacts", None).await.x_cache(), "MISS");
    api.read_until_hit("org_1", "contacts", None, Duration::from_secs(2))
        .await;
    assert_eq!(cache.stats().circuit_opened, 1);
}

/// The next read that is not turned away by the open circuit: the probe. Reads every
/// few milliseconds, as steady traffic would; returns when the probe started and ended.
async fn next_probe(api: &Api, within: Duration) -> (Instant, Read) {
    let deadline = Instant::now() + within;
    loop {
        let started = Instant::now();
        let read = api.read("org_1", "contacts", None).await;
        if read.x_cache() != "BYPASS" {
            return (started, read);
        }
        assert!(Instant::now() < deadline, "no probe within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// README: after `API_CACHE_CIRCUIT_OPEN_MS` one request probes; "if it fails the circuit
/// stays open twice as long"; caching resumes "at the first probe after Redis is back:
/// within the current back-off". With a 250 ms base: probes 250, 500 and 1000 ms after
/// each failure while Redis is down (refused: a probe fails at once); Redis is then
/// started, and the probe 2 s later closes the circuit. (The cap, 30 s, is checked in
/// `circuit.rs`'s unit tests: too slow to reach here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_back_off_doubles_and_caching_resumes_at_the_first_probe_after_redis_is_back() {
    const BASE: Duration = Duration::from_millis(250);
    let mut server = RedisServer::start();
    let cache = Cache::new(config(&server).with_circuit(FAILURES, BASE))
        .await
        .unwrap();
    let api = Api::new(&cache);
    warm(&api, &cache, "org_1", &server).await;

    server.kill();
    for _ in 0..FAILURES {
        assert_eq!(api.read("org_1", "contacts", None).await.x_cache(), "MISS");
    }
    assert_eq!(cache.stats().circuit_opened, 1);
    let mut failed_at = Instant::now();
    let mut back_off = BASE;
    // Milliseconds the circuit reads are ms-rounded, and the failure is recorded a
    // little before the read returns: a gap may fall short of the back-off by that.
    let early = Duration::from_millis(20);
    for _ in 0..3 {
        let (started, probe) = next_probe(&api, back_off * 2 + SLACK).await;
        let gap = started - failed_at;
        assert!(
            gap + early >= back_off && gap < back_off + SLACK,
            "a probe {gap:?} after the last failure; the back-off is {back_off:?}"
        );
        assert_eq!(probe.x_cache(), "MISS", "Redis is down: the probe fails");
        assert_ne!(cache.stats().circuit, CircuitSnapshot::Closed);
        failed_at = Instant::now();
        back_off *= 2;
    }

    // Redis comes back halfway through the back-off, after the client's own quick
    // reconnection attempts that followed the failed probe have given up.
    tokio::time::sleep((failed_at + back_off / 2).saturating_duration_since(Instant::now())).await;
    server.start_again();
    assert!(
        failed_at.elapsed() < back_off * 3 / 4,
        "Redis took {:?} to start: the test needs it up before the next probe",
        failed_at.elapsed()
    );
    let (started, probe) = next_probe(&api, back_off * 2 + SLACK).await;
    let gap = started - failed_at;
    assert!(
        gap + early >= back_off && gap < back_off + SLACK,
        "the first probe after Redis came back ran {gap:?} after the last failure; the back-off was {back_off:?}"
    );
    assert_eq!(
        probe.x_cache(),
        "MISS",
        "the restarted server holds nothing"
    );
    assert_eq!(
        cache.stats().circuit,
        CircuitSnapshot::Closed,
        "the first probe after Redis came back closes the circuit"
    );
    // The probe stored its answer: caching has resumed.
    let reads = api
        .read_until_hit("org_1", "contacts", None, Duration::from_secs(2))
        .await;
    assert!(reads.iter().all(|r| r.x_cache() != "BYPASS"));
    assert_eq!(cache.stats().circuit_opened, 1);
}

/// The test's redis-server, for a handler to freeze.
#[derive(Clone)]
struct Server(Arc<RedisServer>);

/// Freezes Redis after the lookup that missed, before the store.
#[cached(resource = "contacts", ttl = 300)]
async fn freeze_redis_then_answer(State(server): State<Server>) -> String {
    server.0.pause();
    "computed".to_owned()
}

/// README: "stores run off the request path". The handler freezes Redis, so the store of
/// its answer waits until Redis thaws (the response timeout is long, 2 s): the response
/// does not wait for it, and the entry lands after the thaw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_held_by_a_frozen_server_does_not_delay_the_response() {
    const LONG: Duration = Duration::from_secs(2);
    let server = Arc::new(RedisServer::start());
    let cache = Cache::new(config(&server).with_response_timeout(LONG))
        .await
        .unwrap();
    let app = Router::new()
        .route("/contacts", get(freeze_redis_then_answer))
        .with_state(Server(server.clone()))
        .layer(cache.extension());
    let mut request = cache_tests::http::get("/contacts", None);
    request
        .extensions_mut()
        .insert(CacheScope::new("org_1".to_owned()));

    let started = Instant::now();
    let reply = send(&app, request).await;
    let took = started.elapsed();
    assert_eq!(reply.x_cache(), "MISS");
    assert_eq!(reply.text(), "computed");
    assert!(
        took < LONG / 4,
        "the response took {took:?}: it waited for the store to a frozen Redis"
    );
    assert_eq!(cache.stats().totals.stores, 0, "Redis is frozen");

    server.resume();
    wait_until_async(LONG, "the store lands after the thaw", || {
        cache.stats().totals.stores == 1
    })
    .await;
    wait_until_stored(&server, "org_1", "contacts");
    assert_eq!(cache.stats().totals.errors, 0);
}
