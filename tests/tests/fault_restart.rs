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

/// What the machine being busy may add to a bound: less than one timeout.
const SLACK: Duration = Duration::from_millis(150);

/// README: a read waits for at most two Redis operations, each bounded by the timeout.
fn bound() -> Duration {
    TIMEOUT * 2 + SLACK
}

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
///
/// The server comes back as a read-only replica of its own data (a replica about to be
/// promoted): it refuses the redelivery, so the reads below are all made while Redis
/// holds the stale entry and the invalidation is pending, however slow the machine.
/// Promoting it lets the redelivery land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeping_data_with_a_pending_invalidation_never_serves_stale() {
    let mut server = RedisServer::start_persistent();
    let cache = Cache::new(config(&server)).await.unwrap();
    let api = Api::new(&cache);
    warm(&api, "org_a", "contacts").await;
    warm(&api, "org_b", "contacts").await;
    wait_until_stored(&server, "org_a", "contacts");
    wait_until_stored(&server, "org_b", "contacts");
    let stale_entries = server.keys("api-cache:{t.org_a}:e:contacts:*");
    assert_eq!(stale_entries.len(), 1);
    let stale_bytes: Vec<u8> = server.cmd(&["GET", &stale_entries[0]]);
    let generation = "api-cache:{t.org_a}:g:contacts";
    let old_generation: Vec<u8> = server.cmd(&["GET", generation]);

    server.kill();
    assert_eq!(api.change("org_a", "contacts").await, 2);
    assert_eq!(cache.stats().pending_invalidations, 1);
    // Reads while down (every body is checked against the database: version 2).
    for _ in 0..5 {
        assert_eq!(
            api.read("org_a", "contacts", None).await.x_cache(),
            "BYPASS"
        );
    }

    server.start_again_as_replica();
    // The old entry and the generation it matches are back: a read that trusted Redis
    // alone would now be stale.
    let held: Vec<u8> = server.cmd(&["GET", &stale_entries[0]]);
    assert_eq!(held, stale_bytes, "the stale entry is in Redis again");
    let held: Vec<u8> = server.cmd(&["GET", generation]);
    assert_eq!(
        held, old_generation,
        "with the generation it was stored under"
    );
    // The risky window, exercised on every read: Redis holds the stale entry, the
    // invalidation is pending. Reads of another tenant are served from Redis meanwhile.
    let mut window = Vec::new();
    while window.len() < 20 {
        let read = api.read("org_a", "contacts", None).await;
        assert!(read.elapsed < bound(), "read took {:?}", read.elapsed);
        assert_eq!(
            cache.stats().pending_invalidations,
            1,
            "delivered to a read-only replica?"
        );
        window.push(read.x_cache().to_owned());
        api.read("org_b", "contacts", None).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(window.iter().all(|o| o == "BYPASS"), "{window:?}");
    assert_eq!(api.read("org_b", "contacts", None).await.x_cache(), "HIT");

    // Promoted: the redelivery lands (within its 2 s back-off plus one attempt); a read
    // that overlaps the delivery may look Redis up, and then it misses.
    server.promote();
    let promoted = Instant::now();
    let mut seen = Vec::new();
    while cache.stats().pending_invalidations > 0 {
        let read = api.read("org_a", "contacts", None).await;
        assert!(read.elapsed < bound());
        seen.push(read.x_cache().to_owned());
        // README: within 2 s of Redis answering (the back-off cap) plus one attempt.
        assert!(
            promoted.elapsed() < Duration::from_secs(2) + TIMEOUT + SLACK,
            "not delivered {:?} after the promotion",
            promoted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        seen.iter().all(|o| o == "BYPASS" || o == "MISS"),
        "{seen:?}"
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
    let lost = stale_window(false).await;
    let delivered = stale_window(true).await;
    println!(
        "stale reads from another instance after Redis returned: {:.2} s when the \
         instance holding the pending invalidation restarted (entry TTL {} s, {:.2} s of \
         it left when Redis was back); {:.2} s when it kept running and redelivered",
        lost.stale.as_secs_f64(),
        CONVERSATIONS_TTL.as_secs(),
        lost.remaining.1.as_secs_f64(),
        delivered.stale.as_secs_f64(),
    );
    // The entry is served until it expires, and no longer: its remaining lifetime when
    // Redis came back, give or take the polling and one slow read.
    assert!(
        lost.remaining.0 > Duration::from_secs(2),
        "Redis came back with only {:?} of the entry's life left: the machine is too \
         slow for the TTL to show",
        lost.remaining.0
    );
    assert!(
        lost.stale + Duration::from_millis(500) >= lost.remaining.0,
        "stale for {:?}, but the entry had at least {:?} to live",
        lost.stale,
        lost.remaining.0
    );
    assert!(
        lost.stale <= lost.remaining.1 + Duration::from_millis(500),
        "stale for {:?}, longer than the entry's remaining {:?}",
        lost.stale,
        lost.remaining.1
    );
    // Redelivery backs off to at most 2 s while Redis is down; then one timeout.
    assert!(
        delivered.stale < Duration::from_secs(3),
        "redelivery took {:?}",
        delivered.stale
    );
}

/// `GET /conversations` has `ttl = 8`: long enough that killing Redis, the mutation, an
/// instance restart and Redis' restart fit in it on a loaded machine.
const CONVERSATIONS_TTL: Duration = Duration::from_secs(8);

struct StaleWindow {
    /// How long instance B read stale data after Redis came back (zero if never).
    stale: Duration,
    /// What was left of the entry's lifetime when Redis came back: at least, at most.
    remaining: (Duration, Duration),
}

async fn stale_window(instance_a_survives: bool) -> StaleWindow {
    let mut server = RedisServer::start_persistent();
    let db = Db::default();
    let cache_b = Cache::new(config(&server)).await.unwrap();
    let api_b = Api::with_db(&cache_b, db.clone());
    let mut cache_a = Some(Cache::new(config(&server)).await.unwrap());
    let api_a = Api::with_db(cache_a.as_ref().unwrap(), db.clone());

    // The entry's lifetime starts within the first read of `warm`, before it is stored.
    let warming = Instant::now();
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
    // Poll as instance B until its answers are fresh and stay fresh for a while (past
    // the entry's expiry when nobody redelivers).
    let mut last_stale: Option<Instant> = None;
    let deadline = back + Duration::from_secs(30);
    loop {
        let (version, x_cache) = observe(&api_b, "org_1", "conversations").await;
        let now = Instant::now();
        if version < db.version("org_1", "conversations") {
            assert_eq!(x_cache, "HIT", "a stale answer that is not a hit");
            last_stale = Some(now);
        } else if now.duration_since(last_stale.unwrap_or(back)) > Duration::from_secs(1)
            && (instance_a_survives || now.duration_since(stored) > CONVERSATIONS_TTL)
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
    StaleWindow {
        stale: last_stale.map_or(Duration::ZERO, |at| at.duration_since(back)),
        remaining: (
            (warming + CONVERSATIONS_TTL).saturating_duration_since(back),
            (stored + CONVERSATIONS_TTL).saturating_duration_since(back),
        ),
    }
}
