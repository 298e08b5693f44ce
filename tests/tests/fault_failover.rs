//! Fault injection (issue 11): a Redis failover that loses the last writes. The cache's
//! Redis is a primary with one replica; the cache reaches it through an endpoint that
//! follows failover (a proxy the test re-points), and the replica replicates through a
//! proxy the test can freeze (the primary still lists the replica as connected, nothing
//! reaches it). An invalidation the primary took but no replica received is lost when
//! the replica is promoted: the old generations come back with the old entries.
//!
//! With `WAIT` (the default, `API_CACHE_WAIT_REPLICAS=all`) such an invalidation is not
//! confirmed: the instance keeps it pending and redelivers it to the new primary, after
//! which no instance serves the old entry. Without it (`0`), another instance serves the
//! old entry after the failover: the failure the feature fixes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, CacheConfig, WaitReplicas};
use cache_tests::http::send;
use cache_tests::redis_server::wait_until_async;
use cache_tests::tcp_proxy::TcpProxy;
use cache_tests::versioned_api::{Api, Db};
use cache_tests::RedisServer;

const TIMEOUT: Duration = Duration::from_millis(200);
const TENANT: &str = "org_1";
const RESOURCE: &str = "contacts";

/// A primary, a replica replicating through a freezable proxy, and the endpoint the
/// caches use.
struct Failover {
    primary: RedisServer,
    replica: RedisServer,
    replication: TcpProxy,
    endpoint: TcpProxy,
}

impl Failover {
    async fn start() -> Failover {
        // Diskless full sync without the default 5 s delay: the replica is in sync at once.
        let primary = RedisServer::start_with(&[
            "--repl-diskless-sync",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
        ]);
        let replication = TcpProxy::start(primary.port()).await;
        let port = replication.port().to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
        let endpoint = TcpProxy::start(primary.port()).await;
        let failover = Failover {
            primary,
            replica,
            replication,
            endpoint,
        };
        wait_until_async(Duration::from_secs(20), "the replica is in sync", || {
            failover.replica_link_up() && failover.connected_replicas() == 1
        })
        .await;
        failover
    }

    fn replica_link_up(&self) -> bool {
        let info: String = self.replica.cmd(&["INFO", "replication"]);
        info.lines().any(|l| l.trim() == "master_link_status:up")
    }

    fn connected_replicas(&self) -> usize {
        let info: String = self.primary.cmd(&["INFO", "replication"]);
        info.lines()
            .find_map(|l| l.trim().strip_prefix("connected_slaves:"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// The primary dies; the replica is promoted as it is; the endpoint follows.
    fn fail_over(&mut self) {
        self.primary.kill();
        let _: () = self.replica.cmd(&["REPLICAOF", "NO", "ONE"]);
        self.endpoint.set_upstream(self.replica.port());
    }

    fn config(&self, wait: WaitReplicas) -> CacheConfig {
        // The circuit stays closed: what is seen is the failover alone.
        CacheConfig::default()
            .with_redis_url(self.endpoint.url())
            .with_response_timeout(TIMEOUT)
            .with_connect_timeout(TIMEOUT)
            .with_circuit(1000, Duration::from_millis(200))
            .with_wait_replicas(wait)
    }
}

/// Calls per command on `server` since start (or the last `CONFIG RESETSTAT`).
fn command_calls(server: &RedisServer) -> HashMap<String, u64> {
    let info: String = server.cmd(&["INFO", "commandstats"]);
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|f| f.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

/// One GET as `TENANT` without judging the body: the version answered and `X-Cache`.
async fn observe(api: &Api) -> (u64, String) {
    let reply = send(
        &api.app,
        cache_tests::http::get(&format!("/{RESOURCE}"), Some(TENANT)),
    )
    .await;
    assert_eq!(reply.status, http::StatusCode::OK);
    let version = reply.json()["version"].as_u64().expect("a version");
    (version, reply.x_cache().to_owned())
}

/// Two instances on the endpoint, sharing one database, with the entry of `TENANT`'s
/// `RESOURCE` (version 1) cached, replicated, and served by both.
async fn two_instances(failover: &Failover, wait: WaitReplicas) -> (Cache, Api, Cache, Api) {
    let db = Db::default();
    let cache_a = Cache::new(failover.config(wait)).await.unwrap();
    let cache_b = Cache::new(failover.config(wait)).await.unwrap();
    let api_a = Api::with_db(&cache_a, db.clone());
    let api_b = Api::with_db(&cache_b, db);
    api_a.read(TENANT, RESOURCE, None).await;
    api_a
        .read_until_hit(TENANT, RESOURCE, None, Duration::from_secs(10))
        .await;
    // Written after its generations on the same connection: once the entry is on the
    // replica, so are they.
    let pattern = format!("api-cache:{{t.{TENANT}}}:e:{RESOURCE}:*");
    wait_until_async(Duration::from_secs(10), "the entry is replicated", || {
        !failover.replica.keys(&pattern).is_empty()
    })
    .await;
    api_b
        .read_until_hit(TENANT, RESOURCE, None, Duration::from_secs(10))
        .await;
    (cache_a, api_a, cache_b, api_b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreplicated_invalidation_stays_pending_and_survives_the_failover() {
    let mut failover = Failover::start().await;
    let (cache_a, api_a, cache_b, api_b) = two_instances(&failover, WaitReplicas::All).await;

    // A healthy replica confirms at once: one WAIT, nothing pending.
    let waits_before = command_calls(&failover.primary)
        .get("wait")
        .copied()
        .unwrap_or(0);
    cache_a.invalidate(TENANT, &["templates"]).await.unwrap();
    assert_eq!(cache_a.stats().pending_invalidations, 0);
    assert_eq!(
        command_calls(&failover.primary)
            .get("wait")
            .copied()
            .unwrap_or(0),
        waits_before + 1
    );

    // Replication stops without the primary noticing; a mutation through A.
    failover.replication.freeze();
    let started = Instant::now();
    assert_eq!(api_a.change(TENANT, RESOURCE).await, 2);
    let took = started.elapsed();
    // The risky case happened: the primary took the invalidation, no replica confirmed
    // it, so A keeps it pending (and serves the resource uncached).
    assert_eq!(
        cache_a.stats().pending_invalidations,
        1,
        "WAIT confirmed an invalidation the replica never received?"
    );
    assert!(took < TIMEOUT * 3, "the mutation took {took:?}");
    assert_eq!(
        cache_a.stats().circuit_opened,
        0,
        "a lagging replica is no outage"
    );
    assert_eq!(api_a.read(TENANT, RESOURCE, None).await.x_cache(), "BYPASS");

    failover.fail_over();
    // A redelivers to the new primary (no replicas: no WAIT). Meanwhile every read of A
    // is checked against the database.
    let deadline = Instant::now() + Duration::from_secs(20);
    while cache_a.stats().pending_invalidations > 0 {
        api_a.read(TENANT, RESOURCE, None).await;
        assert!(Instant::now() < deadline, "A never redelivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered_after = started.elapsed();

    // From now on neither instance serves version 1: each read is checked against the
    // database, until both hit the fresh entry, and a while after.
    for api in [&api_a, &api_b] {
        api.read_until_hit(TENANT, RESOURCE, None, Duration::from_secs(10))
            .await;
    }
    for _ in 0..20 {
        api_a.read(TENANT, RESOURCE, None).await;
        api_b.read(TENANT, RESOURCE, None).await;
    }
    assert_eq!(cache_b.stats().pending_invalidations, 0);
    println!(
        "invalidation not confirmed by WAIT after {took:?}; redelivered to the promoted \
         replica {delivered_after:?} after the mutation"
    );
}

/// The contrast: the same failover with waiting off. A counts its invalidation as
/// delivered when the primary takes it; the promoted replica never got it, and instance
/// B serves the entry from before the mutation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_wait_the_failover_loses_the_invalidation_and_b_serves_stale() {
    let mut failover = Failover::start().await;
    let (cache_a, api_a, _cache_b, api_b) = two_instances(&failover, WaitReplicas::Off).await;

    failover.replication.freeze();
    assert_eq!(api_a.change(TENANT, RESOURCE).await, 2);
    assert_eq!(cache_a.stats().pending_invalidations, 0);

    failover.fail_over();
    // B reconnects to the promoted replica and finds the old generations and entry.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (version, x_cache) = loop {
        let (version, x_cache) = observe(&api_b).await;
        if x_cache == "HIT" {
            break (version, x_cache);
        }
        assert!(
            Instant::now() < deadline,
            "B never read the promoted replica"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (version, x_cache.as_str()),
        (1, "HIT"),
        "B served version {version} ({x_cache}); the database holds 2"
    );
    assert_eq!(api_b.db.version(TENANT, RESOURCE), 2);
}
