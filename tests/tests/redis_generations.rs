//! Redis-specific guarantees of the runtime (issue 2, DESIGN invariants 2-4): vanished
//! generations never revive old entries, invalidation is O(1) round trips, a hit is one
//! round trip, keys of one lookup share a hash slot, and a killed server gives misses
//! and error counts rather than errors.

use std::collections::HashMap;
use std::time::Duration;

use cache_runtime::testing::{CacheKey, Tenant};
use cache_runtime::testing::{CachedResponse, Lookup};
use cache_runtime::{Cache, CacheConfig};
use cache_tests::backends::TestBackend;

const LONG: Duration = Duration::from_secs(600);

async fn redis_cache() -> (TestBackend, Cache) {
    let backend = TestBackend::redis();
    let cache = backend.cache().await;
    (backend, cache)
}

fn key(cache: &Cache, tenant: &str, path: &str) -> CacheKey {
    cache
        .key(Tenant::Scoped(tenant), "contacts")
        .unwrap()
        .tag("analytics")
        .unwrap()
        .request("GET", path, None)
        .build()
}

async fn put(cache: &Cache, key: &CacheKey, body: &str) {
    let Lookup::Miss(ticket) = cache.lookup(key).await else {
        panic!("expected a miss")
    };
    assert!(cache
        .store(ticket, CachedResponse::ok(body.to_owned()), LONG)
        .await
        .unwrap());
}

async fn is_hit(cache: &Cache, key: &CacheKey) -> bool {
    matches!(cache.lookup(key).await, Lookup::Hit(_))
}

/// Calls per command since the last `CONFIG RESETSTAT`.
fn command_calls(backend: &TestBackend) -> HashMap<String, u64> {
    let info: String = backend.server().unwrap().cmd(&["INFO", "commandstats"]);
    info.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("cmdstat_")?;
            let (name, stats) = rest.split_once(':')?;
            let calls = stats.split(',').find_map(|f| f.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .filter(|(name, _)| !(name.starts_with("config") || name.starts_with("info")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_generations_never_revive_old_entries() {
    let (backend, cache) = redis_cache().await;
    let server = backend.server().unwrap();
    let k = key(&cache, "org_1", "/api/contacts");
    put(&cache, &k, "before").await;
    assert!(is_hit(&cache, &k).await);
    // Eviction of the generation keys (allkeys-* policies) while the entry survives.
    for generation_key in k.generation_keys() {
        let _: i64 = server.cmd(&["DEL", generation_key]);
    }
    assert!(
        !is_hit(&cache, &k).await,
        "an entry must not outlive its generation"
    );
}

fn pttl(server: &cache_tests::RedisServer, key: &str) -> i64 {
    server.cmd(&["PTTL", key])
}

/// Generation keys expire (so unused tenants and resources do not pile up under
/// `volatile-*` eviction), and an expired one can only cost a miss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_keys_have_a_ttl_and_expiring_only_costs_a_miss() {
    let backend = TestBackend::redis();
    let server = backend.server().unwrap();
    let generation_ttl = Duration::from_millis(1500);
    let cache = Cache::new(backend.config().with_generation_ttl(generation_ttl))
        .await
        .unwrap();
    let k = key(&cache, "org_1", "/api/contacts");
    let ttl_ms = generation_ttl.as_millis() as i64;
    // Created by the first lookup (SET NX PX).
    put(&cache, &k, "before").await;
    for generation_key in k.generation_keys() {
        let left = pttl(server, generation_key);
        assert!(0 < left && left <= ttl_ms, "{generation_key}: PTTL {left}");
    }
    // Rewritten by an invalidation (SET PX), with a fresh lifetime.
    cache.invalidate("org_1", &["contacts"]).await.unwrap();
    let contacts = &k.generation_keys()[1];
    assert!(contacts.ends_with(":contacts"), "{:?}", k.generation_keys());
    let left = pttl(server, contacts);
    assert!(0 < left && left <= ttl_ms, "{contacts}: PTTL {left}");

    // An entry (TTL 600 s) outlives its generations: once they expired, a miss.
    put(&cache, &k, "after").await;
    assert!(is_hit(&cache, &k).await);
    let entry_left = pttl(server, k.entry_key());
    assert!(entry_left > ttl_ms, "entry PTTL {entry_left}");
    cache_tests::redis_server::wait_until_async(
        Duration::from_secs(10),
        "the generation keys expire",
        || k.generation_keys().iter().all(|g| pttl(server, g) == -2),
    )
    .await;
    assert!(pttl(server, k.entry_key()) > 0, "the entry is still stored");
    assert!(
        !is_hit(&cache, &k).await,
        "an entry must not outlive its generations"
    );
    // And they are back, with a TTL.
    for generation_key in k.generation_keys() {
        assert!(pttl(server, generation_key) > 0, "{generation_key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_and_restored_values_never_revive() {
    let (backend, cache) = redis_cache().await;
    let server = backend.server().unwrap();
    let k = key(&cache, "org_1", "/api/contacts");
    put(&cache, &k, "before").await;
    let mut conn = server.connection();
    let raw: Vec<u8> = redis::cmd("GET")
        .arg(k.entry_key())
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("FLUSHALL").query(&mut conn).unwrap();
    assert!(!is_hit(&cache, &k).await);
    // Someone restores the old value (a backup, a replica catching up): still a miss,
    // because the generations were re-created fresh.
    let _: () = redis::cmd("SET")
        .arg(k.entry_key())
        .arg(raw)
        .query(&mut conn)
        .unwrap();
    assert!(
        !is_hit(&cache, &k).await,
        "a restored old entry must not be served"
    );
}

/// Looks `key` up until the lookup itself succeeds (the first command after a restart may
/// meet the reset connection; the manager reconnects by itself), with a deadline.
async fn lookup_after_restart(cache: &Cache, key: &CacheKey) -> Lookup {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match cache.lookup(key).await {
            Lookup::Miss(ticket) if !ticket.can_store() => {}
            answered => return answered,
        }
        assert!(
            std::time::Instant::now() < deadline,
            "caching did not resume after restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server restarted with its data (append-only file) holds the entries cached before
/// an invalidation again, next to the generations that invalidation wrote: none of them
/// is served. Entries nothing invalidated are served as before, which shows the data
/// really came back and was read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_server_never_revives_old_entries() {
    let server = cache_tests::RedisServer::start_persistent();
    let mut backend = TestBackend::Redis(server);
    let cache = backend.cache().await;
    let invalidated = key(&cache, "org_1", "/api/contacts");
    let kept = key(&cache, "org_2", "/api/contacts");
    put(&cache, &invalidated, "before").await;
    put(&cache, &kept, "kept").await;
    let raw_entry = |backend: &TestBackend| -> Option<Vec<u8>> {
        let mut conn = backend.server().unwrap().connection();
        redis::cmd("GET")
            .arg(invalidated.entry_key())
            .query(&mut conn)
            .unwrap()
    };
    let old_entry = raw_entry(&backend).expect("the entry is stored");
    cache.invalidate("org_1", &["contacts"]).await.unwrap();
    assert!(!is_hit(&cache, &invalidated).await);

    if let TestBackend::Redis(server) = &mut backend {
        server.restart_keeping_data();
    }
    assert_eq!(
        raw_entry(&backend).as_ref(),
        Some(&old_entry),
        "the old entry is in Redis again after the restart"
    );
    match lookup_after_restart(&cache, &invalidated).await {
        Lookup::Miss(ticket) => assert!(ticket.can_store()),
        Lookup::Hit(_) => panic!("an entry from before the invalidation served after restart"),
        other => panic!("expected a miss, got {other:?}"),
    }
    match lookup_after_restart(&cache, &kept).await {
        Lookup::Hit(entry) => assert_eq!(entry.response().body, "kept"),
        other => panic!("the entry nothing invalidated is lost: {other:?}"),
    }
    put(&cache, &invalidated, "after").await;
    assert!(is_hit(&cache, &invalidated).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_is_one_command_whatever_the_number_of_entries() {
    let (backend, cache) = redis_cache().await;
    let server = backend.server().unwrap();
    let keys: Vec<CacheKey> = (0..500)
        .map(|i| key(&cache, "org_1", &format!("/api/contacts/{i}")))
        .collect();
    for k in &keys {
        put(&cache, k, "v").await;
    }
    let _: () = server.cmd(&["CONFIG", "RESETSTAT"]);
    cache
        .invalidate("org_1", &["contacts", "analytics"])
        .await
        .unwrap();
    let calls = command_calls(&backend);
    // One pipeline (one round trip): a SET with the generation TTL per resource, and the
    // ROLE that tells whether replicas must confirm (none here: no WAIT).
    assert_eq!(
        calls,
        HashMap::from([("set".to_owned(), 2), ("role".to_owned(), 1)]),
        "one SET per resource and a ROLE, no KEYS/SCAN/DEL, no WAIT without replicas"
    );
    for k in keys.iter().take(20) {
        assert!(!is_hit(&cache, k).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_is_one_command_and_one_slot() {
    let (backend, cache) = redis_cache().await;
    let server = backend.server().unwrap();
    let k = key(&cache, "org_1", "/api/contacts");
    put(&cache, &k, "v").await;
    let _: () = server.cmd(&["CONFIG", "RESETSTAT"]);
    assert!(is_hit(&cache, &k).await);
    assert_eq!(
        command_calls(&backend),
        HashMap::from([("mget".to_owned(), 1)])
    );
    // Every key the lookup touched hashes to one cluster slot: Redis Cluster hashes only
    // the text between the first `{` and the next `}`, so the tags must be equal.
    let hash_tag = |name: &str| -> String {
        let open = name.find('{').expect("hash tag");
        let close = open + name[open..].find('}').expect("closed hash tag");
        name[open + 1..close].to_owned()
    };
    let slots: std::collections::HashSet<String> = k
        .generation_keys()
        .iter()
        .map(&hash_tag)
        .chain([hash_tag(k.entry_key())])
        .collect();
    assert_eq!(slots.len(), 1, "keys of one lookup span several slots");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_gives_misses_and_error_counts_not_errors() {
    let (mut backend, _) = redis_cache().await;
    let config: CacheConfig = backend
        .config()
        .with_response_timeout(Duration::from_millis(100))
        .with_circuit(1000, Duration::from_secs(1));
    let cache = Cache::new(config).await.unwrap();
    let k = key(&cache, "org_1", "/api/contacts");
    put(&cache, &k, "v").await;
    if let TestBackend::Redis(server) = &mut backend {
        server.kill();
    }
    for _ in 0..5 {
        match cache.lookup(&k).await {
            Lookup::Miss(ticket) => {
                let stored = cache.store(ticket, CachedResponse::ok("x"), LONG).await;
                assert!(matches!(stored, Ok(false) | Err(_)));
            }
            other => panic!("expected a miss, got {other:?}"),
        }
    }
    let stats = cache.stats();
    assert!(
        stats.totals.errors >= 5,
        "errors counted: {:?}",
        stats.totals
    );
    assert!(!cache.is_available().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_available_answers_within_the_timeout() {
    let (mut backend, cache) = redis_cache().await;
    assert!(cache.is_available().await);
    let quick = Cache::new(
        backend
            .config()
            .with_response_timeout(Duration::from_millis(50)),
    )
    .await
    .unwrap();
    if let TestBackend::Redis(server) = &backend {
        server.pause();
    }
    let started = std::time::Instant::now();
    assert!(!quick.is_available().await);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "is_available hung"
    );
    if let TestBackend::Redis(server) = &mut backend {
        server.resume();
    }
}

/// The same round trips on a Redis Cluster: a hit is one `MGET` and an invalidation one
/// pipeline (a `SET` per resource and the `ROLE`), each sent to the master owning the
/// tenant's slot and to no other node; `scope = global` data and `invalidate_all` live
/// on the master of their own tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_each_operation_is_one_command_on_the_tenants_master() {
    let cluster = cache_tests::RedisCluster::start();
    let cache = Cache::new(
        CacheConfig::default()
            .with_redis_cluster_urls(cluster.seed_urls())
            .with_response_timeout(Duration::from_secs(2))
            .with_connect_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    assert_eq!(cache.backend_name(), "redis-cluster");
    let calls = |port: u16| -> HashMap<String, u64> {
        cluster
            .command_calls(port)
            .into_iter()
            // The test's own inspection, and the nodes' and client's topology queries.
            .filter(|(name, _)| {
                !(name.starts_with("config")
                    || name.starts_with("info")
                    || name.starts_with("cluster")
                    || name == "ping")
            })
            .collect()
    };
    // Asked once: asking (ROLE) would count among the commands.
    let masters = cluster.masters();
    let reset = || {
        for &port in &masters {
            let _: () = cluster.cmd(port, &["CONFIG", "RESETSTAT"]);
        }
    };
    let global = cache
        .key(Tenant::Global, "countries")
        .unwrap()
        .request("GET", "/api/countries", None)
        .build();
    for (tenant, k) in [
        ("org_1", key(&cache, "org_1", "/api/contacts")),
        ("org_2", key(&cache, "org_2", "/api/contacts")),
        ("{global}", global),
    ] {
        let tag =
            &k.entry_key()[k.entry_key().find('{').unwrap()..=k.entry_key().find('}').unwrap()];
        let owner = cluster.master_of_key(tag);
        put(&cache, &k, "v").await;
        reset();
        assert!(is_hit(&cache, &k).await, "{tenant}");
        for &port in &masters {
            let expected = if port == owner {
                HashMap::from([("mget".to_owned(), 1)])
            } else {
                HashMap::new()
            };
            assert_eq!(
                calls(port),
                expected,
                "{tenant}: hit, master {port} (owner {owner})"
            );
        }
        reset();
        if tenant == "{global}" {
            cache.invalidate_global(&["countries"]).await.unwrap();
        } else {
            cache
                .invalidate(tenant, &["contacts", "analytics"])
                .await
                .unwrap();
        }
        let sets = if tenant == "{global}" { 1 } else { 2 };
        for &port in &masters {
            let expected = if port == owner {
                HashMap::from([("set".to_owned(), sets), ("role".to_owned(), 1)])
            } else {
                HashMap::new()
            };
            assert_eq!(
                calls(port),
                expected,
                "{tenant}: invalidation, master {port}"
            );
        }
        assert!(!is_hit(&cache, &k).await, "{tenant}: invalidated");
    }
    // invalidate_all: the tenant's "all" generation, on its master.
    let k = key(&cache, "org_1", "/api/contacts/7");
    put(&cache, &k, "v").await;
    assert!(is_hit(&cache, &k).await);
    cache.invalidate_all("org_1").await.unwrap();
    assert!(!is_hit(&cache, &k).await);
}
