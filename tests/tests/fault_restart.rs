//! Fault injection (issue 5): the redis-server restarts. Without persistence it comes
//! back empty (connections reset, every key gone); with an append-only file it comes
//! back holding what it held, stale entries included. Either way the process survives
//! without a restart and caching resumes by itself, and no read after a mutation
//! returns data from before it. The last test measures what bounds staleness when the
//! *cache instance* restarts while an invalidation is pending (it forgets it): the TTL.

use std::time::{Duration, Instant};

use cache_runtime::{Cache, CacheConfig};
use cache_tests::http::send;
use cache_tests::redis_server::wait_until;
use cache_tests::versioned_api::{wait_until_stored, Api, Db, Read};
use cache_tests::RedisServer;

const TIMEOUT: Duration = Duration::from_millis(200);

fn config(server: &RedisServer) -> CacheConfig {
    // A high threshold keeps the circuit closed: what is seen is the restart alone.
    CacheConfig::default()
        .with_redis_url(server.url())
        .with_response_timeout(TIMEOUT)
        .with_connect_timeout(TIMEOUT)
        .with_circuit(1000, Duration::from_millis(500))
}

fn bound() -> Duration {
    TIMEOUT * 5
}

/// Keeps every write on disk at once, so SIGKILL loses nothing.
const PERSISTENT: &[&str] = &["--appendonly", "yes", "--appendfsync", "always"];

fn outcomes(reads: &[Read]) -> Vec<&str> {
    reads.iter().map(Read::x_cache).collect()
}

async fn warm(api: &Api, tenant: &str, resource: &str) {
    api.read(tenant, resource, None).await;
    api.read_until_hit(tenant, resource, None, Duration::from_secs(10))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_all_keys_gone_is_survived_and_caching_resumes() {
    let mut server = RedisServer::start();
    let cache = Cache::new(config(&server)).await.unwrap();
    let api = Api::new(&cache);
    warm(&api, "org_1", "contacts").await;
    wait_until_stored(&server, "org_1", "contacts");
    let runs_before = api.db.runs();

    server.restart();
    assert!(server.keys("*").is_empty());
    let reads = api
        .read_until_hit("org_1", "contacts", None, Duration::from_secs(30))
        .await;
    wait_until_stored(&server, "org_1", "contacts");
    let seen = outcomes(&reads);
    assert_ne!(seen[0], "HIT", "nothing is stored after the restart");
    for read in &reads {
        assert!(read.elapsed < bound(), "read took {:?}", read.elapsed);
    }
    assert_eq!(api.db.runs() - runs_before, reads.len() - 1, "{seen:?}");
    assert_eq!(server.keys("api-cache:{t.org_1}:e:contacts:*").len(), 1);
    // And invalidation works on the new server.
    api.change("org_1", "contacts").await;
    assert_eq!(api.read("org_1", "contacts", None).await.x_cache(), "MISS");
}

/// The dangerous restart: the server comes back with the old entry *and* the old
/// generations (the mutation's invalidation never reached it). Only the instance's
/// memory of the pending invalidation stands between readers and version 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeping_data_with_a_pending_invalidation_never_serves_stale() {
    let mut server = RedisServer::start_with(PERSISTENT);
    let cache = Cache::new(config(&server)).await.unwrap();
    let api = Api::new(&cache);
    warm(&api, "org_a", "contacts").await;
    warm(&api, "org_b", "contacts").await;
    wait_until_stored(&server, "org_a", "contacts");
    wait_until_stored(&server, "org_b", "contacts");
    let stale_entries = server.keys("api-cache:{t.org_a}:e:contacts:*");
    assert_eq!(stale_entries.len(), 1);

    server.kill();
    assert_eq!(api.change("org_a", "contacts").await, 2);
    assert_eq!(cache.stats().pending_invalidations, 1);
    // Reads while down (every body is checked against the database: version 2). Down
    // long enough for the redelivery to back off to its 2 s maximum, so that reads after
    // the restart usually meet the stale entry before the redelivery lands.
    let down = Instant::now();
    while down.elapsed() < Duration::from_millis(2500) {
        assert_eq!(
            api.read("org_a", "contacts", None).await.x_cache(),
            "BYPASS"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    server.start_again();
    // The old entry is back: a read that trusted Redis alone would now be stale.
    assert_eq!(
        server.keys("api-cache:{t.org_a}:e:contacts:*"),
        stale_entries
    );
    // Interleave reads of the invalidated tenant+resource and of another tenant until
    // the invalidation is delivered; every body is checked against the database.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while cache.stats().pending_invalidations > 0 {
        let read = api.read("org_a", "contacts", None).await;
        assert!(read.elapsed < bound());
        if read.x_cache() != "BYPASS" {
            // Only a read that overlapped the delivery may look Redis up, and it misses.
            assert_eq!(cache.stats().pending_invalidations, 0, "{}", read.x_cache());
        }
        seen.push(read.x_cache().to_owned());
        api.read("org_b", "contacts", None).await;
        assert!(Instant::now() < deadline, "never delivered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        seen.iter().all(|o| o == "BYPASS" || o == "MISS"),
        "{seen:?}"
    );
    println!(
        "reads of org_a between the restart and the delivery: {} BYPASS, {} MISS",
        seen.iter().filter(|o| *o == "BYPASS").count(),
        seen.iter().filter(|o| *o == "MISS").count()
    );
    // Delivered: the next reads miss (fresh data is computed), then hit the fresh entry.
    let reads = api
        .read_until_hit("org_a", "contacts", None, Duration::from_secs(10))
        .await;
    assert_eq!(outcomes(&reads)[0], "MISS");
    // org_b's entry survived the restart and was never invalidated.
    assert_eq!(api.read("org_b", "contacts", None).await.x_cache(), "HIT");
}

/// One GET as `tenant` through `api`, without judging the body: returns the version
/// it answered and the `X-Cache` header.
async fn observe(api: &Api, tenant: &str, resource: &str) -> (u64, String) {
    let reply = send(
        &api.app,
        cache_tests::http::get(&format!("/{resource}"), Some(tenant)),
    )
    .await;
    assert_eq!(reply.status, http::StatusCode::OK);
    let version = reply.json()["version"].as_u64().expect("a version");
    (version, reply.x_cache().to_owned())
}

/// Measures the staleness an instance restart can cause. Two instances share Redis and
/// the database. Instance A's mutation cannot reach Redis (it is down), so A remembers
/// the invalidation; A then restarts and forgets it. When Redis comes back with its old
/// data, instance B reads the old entry until the entry expires: the TTL bounds it.
/// As a control, the same run with A alive shows A's redelivery ending it much sooner.
///
/// `cargo test -p cache-tests --test fault_restart staleness -- --nocapture` prints the
/// figures quoted in the README's Failure modes section.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staleness_after_a_lost_pending_invalidation_is_bounded_by_the_ttl() {
    // `GET /conversations` has `ttl = 3`.
    const TTL: Duration = Duration::from_secs(3);
    let lost = stale_window(false).await;
    let delivered = stale_window(true).await;
    println!(
        "stale reads from another instance after Redis returned: {:.2} s when the \
         instance holding the pending invalidation restarted (entry TTL {} s); \
         {:.2} s when it kept running and redelivered",
        lost.as_secs_f64(),
        TTL.as_secs(),
        delivered.as_secs_f64(),
    );
    assert!(
        lost > Duration::ZERO,
        "the lost invalidation made nothing stale?"
    );
    assert!(
        lost <= TTL + Duration::from_millis(500),
        "stale for {lost:?}, longer than the TTL"
    );
    // Redelivery backs off to at most 2 s while Redis is down; then one timeout.
    assert!(
        delivered < Duration::from_secs(3),
        "redelivery took {delivered:?}"
    );
}

/// How long instance B read stale data after Redis came back (zero if never).
async fn stale_window(instance_a_survives: bool) -> Duration {
    let mut server = RedisServer::start_with(PERSISTENT);
    let db = Db::default();
    let cache_b = Cache::new(config(&server)).await.unwrap();
    let api_b = Api::with_db(&cache_b, db.clone());
    let mut cache_a = Some(Cache::new(config(&server)).await.unwrap());
    let api_a = Api::with_db(cache_a.as_ref().unwrap(), db.clone());

    warm(&api_b, "org_1", "conversations").await;
    wait_until_stored(&server, "org_1", "conversations");
    let stored = Instant::now();
    server.kill();
    assert_eq!(api_a.change("org_1", "conversations").await, 2);
    assert_eq!(cache_a.as_ref().unwrap().stats().pending_invalidations, 1);
    let restarted_a = if instance_a_survives {
        None
    } else {
        // The instance restarts: its memory of the pending invalidation is gone. (The
        // router still holds a clone of the old handle; drop it too.)
        drop(api_a);
        cache_a.take();
        Some(Cache::new(config(&server)).await.unwrap())
    };
    server.start_again();
    let back = Instant::now();
    // Poll as instance B until its answers are fresh and stay fresh for a while.
    let mut last_stale: Option<Instant> = None;
    let deadline = back + Duration::from_secs(30);
    loop {
        let (version, x_cache) = observe(&api_b, "org_1", "conversations").await;
        let now = Instant::now();
        if version < db.version("org_1", "conversations") {
            assert_eq!(x_cache, "HIT", "a stale answer that is not a hit");
            last_stale = Some(now);
        } else if now.duration_since(last_stale.unwrap_or(back)) > Duration::from_secs(1)
            && now.duration_since(stored) > Duration::from_secs(4)
        {
            break;
        }
        assert!(now < deadline, "stale reads never stopped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some(cache_a) = &cache_a {
        wait_until(Duration::from_secs(10), "A delivers", || {
            cache_a.stats().pending_invalidations == 0
        });
    }
    drop(restarted_a);
    last_stale.map_or(Duration::ZERO, |at| at.duration_since(back))
}
