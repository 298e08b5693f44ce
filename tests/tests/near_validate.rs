//! The local tier in `validate` mode (issue 17): each local hit reads only the entry's
//! generation keys (one `MGET`, no body), so another instance's invalidation is honoured
//! at once, on a single server and on a cluster.

use std::time::Duration;

use cache_runtime::testing::{CacheKey, Tenant};
use cache_runtime::{Cache, LocalTier};
use cache_tests::backends::TestBackend;
use cache_tests::lookups::{hit_body, store_on_miss};

const LONG: Duration = Duration::from_secs(600);

async fn validating_cache(backend: &TestBackend) -> Cache {
    let config = backend
        .config()
        .with_local_tier(LocalTier::Validate, 16 * 1024 * 1024);
    Cache::new(config).await.expect("cache")
}

fn key(cache: &Cache, tenant: &str) -> CacheKey {
    cache
        .key(Tenant::Scoped(tenant), "contacts")
        .unwrap()
        .tag("analytics")
        .unwrap()
        .request("GET", "/api/contacts", None)
        .build()
}

async fn put(cache: &Cache, key: &CacheKey, body: &str) {
    store_on_miss(cache, key, body, LONG).await;
}

async fn another_instance_invalidation_is_honoured_at_once(backend: TestBackend) {
    let a = validating_cache(&backend).await;
    let b = validating_cache(&backend).await;
    let k = key(&a, "org_1");
    for round in 0..20 {
        let body = format!("v{round}");
        put(&a, &k, &body).await;
        // The writer's own tier, then the other's (from Redis, then local).
        assert_eq!(hit_body(&a, &k).await.as_deref(), Some(body.as_str()));
        assert_eq!(hit_body(&b, &k).await.as_deref(), Some(body.as_str()));
        assert_eq!(hit_body(&b, &k).await.as_deref(), Some(body.as_str()));
        a.invalidate("org_1", &["contacts"]).await.unwrap();
        assert_eq!(
            hit_body(&b, &k).await,
            None,
            "round {round}: B served a stale entry"
        );
        assert_eq!(
            hit_body(&a, &k).await,
            None,
            "round {round}: A served a stale entry"
        );
    }
    assert!(a.stats().totals.local_hits >= 20, "{:?}", a.stats().totals);
    assert!(b.stats().totals.local_hits >= 20, "{:?}", b.stats().totals);
    put(&b, &k, "last").await;
    let tier = b.stats().local_tier.expect("local tier on");
    assert_eq!(tier.mode, "validate");
    assert!(tier.entries >= 1 && tier.bytes > 0, "{tier:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_invalidation_is_honoured_at_once_redis() {
    another_instance_invalidation_is_honoured_at_once(TestBackend::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_invalidation_is_honoured_at_once_cluster() {
    another_instance_invalidation_is_honoured_at_once(TestBackend::cluster()).await;
}

/// A local hit reads the generation keys only: one `MGET` of them, never the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_hit_reads_only_the_generation_keys() {
    let backend = TestBackend::redis();
    let server = backend.server().unwrap();
    let cache = validating_cache(&backend).await;
    let k = key(&cache, "org_1");
    put(&cache, &k, &"x".repeat(10_000)).await;
    // Kept locally by the miss: already a local hit.
    assert!(hit_body(&cache, &k).await.is_some());
    assert_eq!(cache.stats().totals.local_hits, 1);
    let before = server.command_calls();
    let out_before = net_output_bytes(server);
    for _ in 0..10 {
        assert!(hit_body(&cache, &k).await.is_some());
    }
    let out = net_output_bytes(server) - out_before;
    let sent = server.command_calls_since(&before);
    assert_eq!(sent.get("mget"), Some(&10), "{sent:?}");
    assert_eq!(sent.len(), 1, "{sent:?}");
    // Three tokens of under 64 bytes per hit, plus INFO's own reply; never the body.
    assert!(out < 10_000, "Redis sent {out} bytes for 10 local hits");
    println!(
        "validate mode: {} bytes from Redis per local hit (INFO reply included)",
        out / 10
    );
    assert_eq!(cache.stats().totals.local_hits, 11);
}

fn net_output_bytes(server: &cache_tests::RedisServer) -> u64 {
    let info: String = server.cmd(&["INFO", "stats"]);
    info.lines()
        .find_map(|line| line.strip_prefix("total_net_output_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_net_output_bytes")
}

#[test]
fn both_modes_are_accepted_on_a_cluster() {
    let config = cache_runtime::CacheConfig::from_lookup(|name| match name {
        "REDIS_CLUSTER_URLS" => Some("redis://127.0.0.1:7000".into()),
        "API_CACHE_LOCAL_TIER" => Some("tracking".into()),
        _ => None,
    });
    assert_eq!(config.unwrap().local_tier, LocalTier::Tracking);
    let validate = cache_runtime::CacheConfig::from_lookup(|name| match name {
        "REDIS_CLUSTER_URLS" => Some("redis://127.0.0.1:7000".into()),
        "API_CACHE_LOCAL_TIER" => Some("validate".into()),
        _ => None,
    });
    assert_eq!(validate.unwrap().local_tier, LocalTier::Validate);
    let bad = cache_runtime::CacheConfig::from_lookup(|name| {
        (name == "API_CACHE_LOCAL_TIER").then(|| "sometimes".into())
    });
    assert!(bad.is_err());
}
