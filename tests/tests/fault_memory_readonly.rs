//! Fault injection (issue 5): a redis-server that answers but refuses writes. Full
//! (`maxmemory` with `noeviction`: `-OOM`) or a read-only replica (`-READONLY`). Reads
//! keep working (hits are served), refused writes are counted as errors without opening
//! the circuit, nothing is retried on a request path, and an invalidation that is
//! refused stays pending: its tenant+resource bypasses until a write is accepted.

use std::time::{Duration, Instant};

use cache_runtime::{Cache, CacheConfig};
use cache_tests::redis_server::wait_until;
use cache_tests::versioned_api::{wait_until_stored, Api, Db};
use cache_tests::RedisServer;

const TIMEOUT: Duration = Duration::from_millis(500);

fn config(server: &RedisServer) -> CacheConfig {
    CacheConfig::default()
        .with_redis_url(server.url())
        .with_response_timeout(TIMEOUT)
        .with_connect_timeout(TIMEOUT)
}

/// What the machine being busy may add to a bound: less than one timeout.
const SLACK: Duration = Duration::from_millis(150);

/// README: a read waits for at most two Redis operations, each bounded by the timeout
/// (here they are refused at once).
fn bound() -> Duration {
    TIMEOUT * 2 + SLACK
}

/// README: pending invalidations land within 2 s of writes being accepted again.
const DELIVERED_WITHIN: Duration = Duration::from_secs(2);

async fn warm(api: &Api, tenant: &str) {
    api.read(tenant, "contacts", None).await;
    api.read_until_hit(tenant, "contacts", None, Duration::from_secs(10))
        .await;
}

/// Writes filler until the server answers `-OOM`. Then lowers `maxmemory` by 64 KiB: a
/// client that disconnects frees its buffers (tens of KiB), which would otherwise
/// make room for a few small writes again; the server must stay full for the test.
fn fill(server: &RedisServer) {
    let mut conn = server.connection();
    let filler = vec![b'x'; 16 * 1024];
    for i in 0.. {
        let reply: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("filler:{i}"))
            .arg(&filler)
            .query(&mut conn);
        if let Err(err) = reply {
            assert!(err.to_string().contains("OOM"), "{err}");
            break;
        }
        assert!(i < 10_000, "maxmemory never reached");
    }
    let _: () = server.cmd(&[
        "CONFIG",
        "SET",
        "maxmemory",
        &(1024 * 1024 - 64 * 1024).to_string(),
    ]);
    let refused: redis::RedisResult<()> = redis::cmd("SET")
        .arg("probe")
        .arg("x")
        .query(&mut server.connection());
    assert!(refused.is_err(), "the server still accepts writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_server_keeps_reads_working_and_counts_refused_writes() {
    let server =
        RedisServer::start_with(&["--maxmemory", "1mb", "--maxmemory-policy", "noeviction"]);
    let cache = Cache::new(config(&server)).await.unwrap();
    let api = Api::new(&cache);
    warm(&api, "org_1").await;
    wait_until_stored(&server, "org_1", "contacts");
    fill(&server);

    // Reads of what is cached still hit.
    let runs = api.db.runs();
    for _ in 0..5 {
        assert_eq!(api.read("org_1", "contacts", None).await.x_cache(), "HIT");
    }
    assert_eq!(api.db.runs(), runs);

    // What is not cached cannot be: each read is one lookup and one refused write,
    // answered uncached, counted, never retried.
    let errors = cache.stats().totals.errors;
    let before = server.command_calls();
    const READS: u64 = 10;
    for _ in 0..READS {
        let read = api.read("org_2", "contacts", None).await;
        assert_eq!(read.x_cache(), "MISS");
        assert!(read.elapsed < bound(), "read took {:?}", read.elapsed);
    }
    let calls = server.command_calls_since(&before);
    // One lookup per read, and one SET NX (with its GET) per missing generation key
    // (the tenant's and the resource's): nothing retried.
    assert_eq!(calls.get("mget"), Some(&READS), "{calls:?}");
    let sets = calls.get("set").copied().unwrap_or(0);
    assert_eq!(sets, 2 * READS, "{calls:?}");
    assert_eq!(calls.get("get"), Some(&sets), "{calls:?}");
    assert_eq!(api.db.runs(), runs + READS as usize);
    let stats = cache.stats();
    assert!(stats.totals.errors - errors >= READS, "{:?}", stats.totals);
    assert_eq!(
        stats.circuit_opened, 0,
        "a full server is up: the circuit stays closed"
    );

    // A refused invalidation: the mutation succeeds, org_1's entry (version 1) is never
    // served again on this instance, and redelivery is paced in the background.
    let before = server.command_calls();
    let refused_at = Instant::now();
    assert_eq!(api.change("org_1", "contacts").await, 2);
    assert_eq!(cache.stats().pending_invalidations, 1);
    while refused_at.elapsed() < Duration::from_secs(3) {
        let read = api.read("org_1", "contacts", None).await;
        assert_eq!(read.x_cache(), "BYPASS");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Each attempt is one pipeline: a SET PX for the one generation key (and a ROLE).
    let sets = server
        .command_calls_since(&before)
        .get("set")
        .copied()
        .unwrap_or(0);
    assert!(
        (2..=12).contains(&sets),
        "{sets} invalidation attempts in 3 s: redelivery is not paced"
    );

    // Room again: the invalidation is delivered, caching resumes for everyone.
    let _: () = server.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    wait_until(
        DELIVERED_WITHIN + SLACK,
        "the invalidation is delivered",
        || cache.stats().pending_invalidations == 0,
    );
    let reads = api
        .read_until_hit("org_1", "contacts", None, Duration::from_secs(10))
        .await;
    assert_eq!(reads[0].x_cache(), "MISS");
    api.read_until_hit("org_2", "contacts", None, Duration::from_secs(10))
        .await;
}

fn replication_up(replica: &RedisServer) -> bool {
    let info: String = replica.cmd(&["INFO", "replication"]);
    info.contains("master_link_status:up")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_replica_serves_reads_and_keeps_invalidations_pending() {
    let primary = RedisServer::start();
    let replica =
        RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port().to_string()]);
    wait_until(Duration::from_secs(20), "the replica syncs", || {
        replication_up(&replica)
    });
    let db = Db::default();
    let writer = Api::with_db(&Cache::new(config(&primary)).await.unwrap(), db.clone());
    let cache = Cache::new(config(&replica)).await.unwrap();
    let api = Api::with_db(&cache, db.clone());

    // An entry written through the primary is served by an instance reading the replica.
    warm(&writer, "org_1").await;
    wait_until(Duration::from_secs(10), "the entry replicates", || {
        !replica.keys("api-cache:{t.org_1}:e:contacts:*").is_empty()
    });
    let runs = db.runs();
    assert_eq!(api.read("org_1", "contacts", None).await.x_cache(), "HIT");
    assert_eq!(db.runs(), runs);

    // Nothing new can be cached through the replica: misses, counted, circuit closed.
    let errors = cache.stats().totals.errors;
    for _ in 0..5 {
        let read = api.read("org_2", "contacts", None).await;
        assert_eq!(read.x_cache(), "MISS");
        assert!(read.elapsed < bound());
    }
    assert!(cache.stats().totals.errors - errors >= 5);
    assert_eq!(db.runs(), runs + 5);

    // The mutation succeeds; its invalidation is refused (READONLY) and stays pending:
    // this instance bypasses org_1's contacts rather than serve the replicated version 1.
    assert_eq!(api.change("org_1", "contacts").await, 2);
    for _ in 0..5 {
        assert_eq!(
            api.read("org_1", "contacts", None).await.x_cache(),
            "BYPASS"
        );
    }
    assert_eq!(cache.stats().pending_invalidations, 1);
    assert_eq!(cache.stats().circuit_opened, 0);

    // Promoted (failover): writes are accepted, the invalidation lands, caching resumes.
    let _: () = replica.cmd(&["REPLICAOF", "NO", "ONE"]);
    wait_until(
        DELIVERED_WITHIN + SLACK,
        "the invalidation is delivered",
        || cache.stats().pending_invalidations == 0,
    );
    let reads = api
        .read_until_hit("org_1", "contacts", None, Duration::from_secs(10))
        .await;
    assert_eq!(reads[0].x_cache(), "MISS");
}
