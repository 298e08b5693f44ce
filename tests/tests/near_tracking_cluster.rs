//! The local tier in `tracking` mode on a real Redis Cluster (issue 17): one tracking
//! connection per master, generations read on the master owning the tenant's slot. A
//! local hit sends no command to any node; an invalidation through instance A is
//! honoured by instance B once the owning master's push arrives (measured and printed);
//! a killed tracking connection, a killed master (its replica promoted) and a migrated
//! slot make B forget every generation, and B never serves the old entry afterwards.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cache_runtime::testing::{CacheKey, CachedResponse, Lookup, Tenant};
use cache_runtime::{Cache, CacheConfig, LocalTier};
use cache_tests::lookups::{hit_body, known_generations, local_hits, store_on_miss};
use cache_tests::redis_cluster::RedisCluster;
use cache_tests::redis_server::wait_until_async;

const LONG: Duration = Duration::from_secs(600);
const TENANT: &str = "org_1";
/// Generous: pushes take well under a millisecond on loopback, but the machine is shared.
const BOUND: Duration = Duration::from_secs(5);
/// Long enough that no keepalive command falls inside a command count.
const QUIET_PING: Duration = Duration::from_secs(600);

fn config(cluster: &RedisCluster, mode: LocalTier, ping: Duration) -> CacheConfig {
    CacheConfig::default()
        .with_redis_cluster_urls(cluster.seed_urls())
        .with_response_timeout(Duration::from_secs(1))
        .with_connect_timeout(Duration::from_secs(1))
        .with_local_tier(mode, 16 * 1024 * 1024)
        .with_local_tier_ping(ping)
}

async fn tracking_cache(cluster: &RedisCluster, ping: Duration) -> Cache {
    let cache = Cache::new(config(cluster, LocalTier::Tracking, ping))
        .await
        .expect("cache");
    assert_eq!(cache.backend_name(), "redis-cluster");
    cache
}

fn key(cache: &Cache) -> CacheKey {
    cache
        .key(Tenant::Scoped(TENANT), "contacts")
        .unwrap()
        .request("GET", "/api/contacts", None)
        .build()
}

/// Reads `key` until a read is served by the local tier (the first reads learn the
/// generations through the owning master's tracking connection); returns the body.
async fn read_until_local(cache: &Cache, key: &CacheKey) -> String {
    let deadline = Instant::now() + BOUND;
    loop {
        let before = local_hits(cache);
        let body = hit_body(cache, key).await;
        if let Some(body) = body.filter(|_| local_hits(cache) > before) {
            return body;
        }
        assert!(Instant::now() < deadline, "never served locally");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Calls per command on every live node since it started (`INFO` left out: the count
/// itself sends it).
fn all_command_calls(cluster: &RedisCluster) -> Vec<HashMap<String, u64>> {
    cluster
        .live_ports()
        .into_iter()
        .map(|port| {
            let mut calls = cluster.command_calls(port);
            calls.remove("info");
            calls
        })
        .collect()
}

/// After a change of B's tracked node: A invalidates, B never serves v1 again, stores v2
/// and serves it locally, learned on the node at `port` (`after`: what happened).
async fn invalidation_honoured_and_tracked_on(
    a: &Cache,
    b: &Cache,
    k: &CacheKey,
    cluster: &RedisCluster,
    port: u16,
    after: &str,
) {
    a.invalidate(TENANT, &["contacts"]).await.unwrap();
    let local = local_hits(b);
    assert_eq!(hit_body(b, k).await, None, "stale after the {after}");
    assert_eq!(local_hits(b), local);
    store_on_miss(b, k, "v2", LONG).await;
    assert_eq!(read_until_local(b, k).await, "v2");
    assert!(
        !tracking_clients(cluster, port).is_empty(),
        "B tracks on the node that owns the slot after the {after}"
    );
}

/// The ids of the tracking connections (`CLIENT SETNAME api-cache-tracking`, tracking
/// flag `t`) the node at `port` has.
fn tracking_clients(cluster: &RedisCluster, port: u16) -> Vec<String> {
    let list: String = cluster.cmd(port, &["CLIENT", "LIST"]);
    list.lines()
        .filter(|line| line.contains(" name=api-cache-tracking "))
        .filter(|line| {
            line.split(' ')
                .any(|f| f.strip_prefix("flags=").is_some_and(|f| f.contains('t')))
        })
        .filter_map(|line| {
            line.split(' ')
                .find_map(|f| f.strip_prefix("id="))
                .map(str::to_owned)
        })
        .collect()
}

/// Sets a fresh token on the resource's generation key behind every instance's back.
fn bump_generation(cluster: &RedisCluster, k: &CacheKey) {
    let contacts = k
        .generation_keys()
        .iter()
        .find(|g| g.ends_with(":contacts"))
        .expect("the resource's generation key");
    let master = cluster.master_of_key(contacts);
    let _: () = cluster.cmd(master, &["SET", contacts, "1.0000000000000001"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_hits_send_nothing_and_an_invalidation_through_another_instance_reaches_them() {
    let cluster = RedisCluster::start();
    let a = tracking_cache(&cluster, QUIET_PING).await;
    let b = tracking_cache(&cluster, QUIET_PING).await;
    let k = key(&a);
    let owner = cluster.master_of_key(&k.generation_keys()[0]);

    store_on_miss(&a, &k, "v0", LONG).await;
    assert_eq!(read_until_local(&b, &k).await, "v0");
    // B's generations were read on the master owning the slot, with tracking on.
    assert!(
        !tracking_clients(&cluster, owner).is_empty(),
        "no tracking connection on the owning master"
    );

    // Local hits: no command on any node.
    let before = all_command_calls(&cluster);
    let local = local_hits(&b);
    for _ in 0..100 {
        assert_eq!(hit_body(&b, &k).await.as_deref(), Some("v0"));
    }
    assert_eq!(local_hits(&b), local + 100);
    assert_eq!(
        all_command_calls(&cluster),
        before,
        "local hits sent commands"
    );
    println!("cluster tracking: 0 commands on the cluster's nodes for 100 local hits");

    // A invalidates (through the normal cluster client): B forgets once the owning
    // master's push arrives, and serves the new data after. Repeated to measure.
    let rounds = 50;
    let (mut delays, mut after_return) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let known = known_generations(&b);
        assert!(known > 0);
        let started = Instant::now();
        let invalidation = async {
            let result = a.invalidate(TENANT, &["contacts"]).await;
            (result, Instant::now())
        };
        let watch = async {
            while known_generations(&b) >= known {
                assert!(started.elapsed() < BOUND, "B never saw the invalidation");
                tokio::task::yield_now().await;
            }
            Instant::now()
        };
        let ((result, returned), forgotten) = tokio::join!(invalidation, watch);
        result.unwrap();
        if forgotten > returned {
            after_return.push(forgotten - returned);
        }
        delays.push(forgotten - started);
        let body = format!("v{round}");
        assert_eq!(hit_body(&b, &k).await, None, "B serves nothing stale");
        store_on_miss(&b, &k, &body, LONG).await;
        assert_eq!(
            read_until_local(&b, &k).await,
            body,
            "B serves the new data"
        );
    }
    delays.sort();
    let q = |p: f64| delays[((delays.len() - 1) as f64 * p) as usize];
    println!(
        "cluster tracking push delay ({rounds} invalidations, from A's call): p50 {:?}, p90 {:?}, max {:?}; B forgot after A's call returned in {} of {rounds} (by at most {:?})",
        q(0.5),
        q(0.9),
        q(1.0),
        after_return.len(),
        after_return.iter().max().copied().unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_tracking_connection_forgets_every_generation() {
    let cluster = RedisCluster::start();
    let b = tracking_cache(&cluster, QUIET_PING).await;
    let k = key(&b);
    let owner = cluster.master_of_key(&k.generation_keys()[0]);
    store_on_miss(&b, &k, "v1", LONG).await;
    assert_eq!(read_until_local(&b, &k).await, "v1");
    assert!(known_generations(&b) > 0);

    let killed = tracking_clients(&cluster, owner);
    assert_eq!(killed.len(), 1, "one tracking connection on the owner");
    let _: redis::Value = cluster.cmd(owner, &["CLIENT", "KILL", "ID", &killed[0]]);
    wait_until_async(BOUND, "B forgets its generations", || {
        known_generations(&b) == 0
    })
    .await;
    assert_eq!(
        b.stats().local_tier.unwrap().tracking_connected,
        Some(false)
    );
    // Written while B had no tracking connection there: no push can reach it.
    bump_generation(&cluster, &k);
    let local = local_hits(&b);
    assert_eq!(hit_body(&b, &k).await, None, "the invalidation is honoured");
    assert_eq!(local_hits(&b), local);
    assert_eq!(
        b.stats().local_tier.unwrap().tracking_connected,
        Some(true),
        "reconnected"
    );
    assert_ne!(
        tracking_clients(&cluster, owner),
        killed,
        "a new connection"
    );
}

/// Instances A and B on `cluster` (a keepalive tick every 200 ms), the key whose `v1` A
/// stored and B serves locally, the master that owns it and that master's replica.
async fn v1_served_locally_by_b(cluster: &RedisCluster) -> (Cache, Cache, CacheKey, u16, u16) {
    let a = tracking_cache(cluster, Duration::from_millis(200)).await;
    let b = tracking_cache(cluster, Duration::from_millis(200)).await;
    let k = key(&a);
    let master = cluster.master_of_key(&k.generation_keys()[0]);
    let replica = cluster.replica_of(master).expect("a replica");
    store_on_miss(&a, &k, "v1", LONG).await;
    assert_eq!(read_until_local(&b, &k).await, "v1");
    (a, b, k, master, replica)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_forgets_everything_and_its_promoted_replica_takes_over() {
    let mut cluster = RedisCluster::start_with_replicas();
    let (a, b, k, master, replica) = v1_served_locally_by_b(&cluster).await;
    let local_before = local_hits(&b);

    cluster.kill(master);
    wait_until_async(BOUND, "B forgets its generations", || {
        known_generations(&b) == 0
    })
    .await;
    // Nothing is served locally from now until B has read again on the new master.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster.is_master(replica) || !cluster.state_ok() {
        assert!(Instant::now() < deadline, "the replica was never promoted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        local_hits(&b),
        local_before,
        "a local hit while the master was down"
    );
    // A invalidates on the promoted replica (retried until the cluster takes it).
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.invalidate(TENANT, &["contacts"]).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the invalidation never went through"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // B never serves v1 again; it stores new data and serves it locally, learned on the
    // new master.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match b.lookup(&k).await {
            Lookup::Hit(entry) => {
                assert_ne!(
                    &entry.response().body[..],
                    b"v1",
                    "stale after the failover"
                )
            }
            Lookup::Miss(ticket) if ticket.can_store() => {
                let stored = b
                    .store(ticket, CachedResponse::ok("v2".to_owned()), LONG)
                    .await;
                if stored.is_ok_and(|stored| stored) {
                    break;
                }
            }
            _ => {}
        }
        assert!(Instant::now() < deadline, "B never stored again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(read_until_local(&b, &k).await, "v2");
    assert!(
        !tracking_clients(&cluster, replica).is_empty(),
        "B tracks on the promoted replica"
    );
    // The dead master's connection is dropped with the old slot map.
    assert_eq!(b.stats().local_tier.unwrap().tracking_connected, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_slot_forgets_everything_and_nothing_stale_is_served() {
    let cluster = RedisCluster::start();
    let a = tracking_cache(&cluster, Duration::from_millis(200)).await;
    let b = tracking_cache(&cluster, Duration::from_millis(200)).await;
    let k = key(&a);
    let tag = &k.generation_keys()[0];
    let slot = cluster.slot_of(tag);
    let migration = cluster.slot_migration(slot);
    store_on_miss(&a, &k, "v1", LONG).await;
    assert_eq!(read_until_local(&b, &k).await, "v1");
    assert!(known_generations(&b) > 0);

    // Migration, as redis-cli --cluster reshard does it.
    migration.mark(&cluster);
    migration.move_keys(&cluster);
    migration.assign(&cluster);
    assert_eq!(cluster.master_of_slot(slot), migration.target);
    // The keys left the node B tracked them on: B forgot (the source's pushes, or the
    // changed slot map at the next keepalive tick).
    wait_until_async(BOUND, "B forgets after the migration", || {
        known_generations(&b) == 0
    })
    .await;

    // A invalidates on the new owner; B never serves v1 again.
    invalidation_honoured_and_tracked_on(&a, &b, &k, &cluster, migration.target, "migration").await;
}

/// A manual failover leaves every connection up and writes nothing (so no push): only
/// the changed slot map, checked on each keepalive tick, tells B that the node it
/// tracks on no longer owns the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_failover_forgets_everything_within_a_keepalive_tick() {
    let cluster = RedisCluster::start_with_replicas();
    let (a, b, k, _, replica) = v1_served_locally_by_b(&cluster).await;
    assert!(known_generations(&b) > 0);

    let _: () = cluster.cmd(replica, &["CLUSTER", "FAILOVER"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster.is_master(replica) {
        assert!(Instant::now() < deadline, "the replica never took over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_until_async(BOUND, "B forgets after the failover", || {
        known_generations(&b) == 0
    })
    .await;

    invalidation_honoured_and_tracked_on(&a, &b, &k, &cluster, replica, "failover").await;
}
