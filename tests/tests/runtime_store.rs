//! The runtime by hand (issue 2): store, hit, TTL, invalidation by resource, tag and
//! tenant, the stale-set interleaving, and generations that vanish. Every test runs
//! against a private redis-server, the in-memory backend and a Redis Cluster.

use std::time::{Duration, Instant};

use cache_runtime::testing::{CacheKey, CachedResponse, Lookup, Tenant};
use cache_runtime::Cache;
use cache_tests::all_backends;
use cache_tests::backends::TestBackend;

fn key(cache: &Cache, tenant: &str, resource: &str, path: &str) -> CacheKey {
    cache
        .key(Tenant::Scoped(tenant), resource)
        .expect("valid resource")
        .request("GET", path, Some("page=1"))
        .build()
}

async fn put(cache: &Cache, key: &CacheKey, body: &str, ttl: Duration) {
    match cache.lookup(key).await {
        Lookup::Miss(ticket) => assert!(cache
            .store(ticket, CachedResponse::ok(body.to_owned()), ttl)
            .await
            .expect("store")),
        other => panic!("expected a miss before storing, got {other:?}"),
    }
}

async fn hit_body(cache: &Cache, key: &CacheKey) -> Option<String> {
    match cache.lookup(key).await {
        Lookup::Hit(entry) => Some(String::from_utf8_lossy(&entry.response().body).into_owned()),
        Lookup::Miss(_) => None,
        Lookup::Bypass(reason) => panic!("unexpected bypass: {reason:?}"),
    }
}

const LONG: Duration = Duration::from_secs(600);

async fn store_then_hit(backend: TestBackend) {
    let cache = backend.cache().await;
    let k = key(&cache, "org_1", "templates", "/api/templates");
    assert_eq!(hit_body(&cache, &k).await, None);
    put(&cache, &k, "[1,2,3]", LONG).await;
    assert_eq!(hit_body(&cache, &k).await.as_deref(), Some("[1,2,3]"));
    let stats = cache.stats();
    assert_eq!(stats.totals.hits, 1);
    assert_eq!(stats.totals.misses, 2);
    assert_eq!(stats.totals.stores, 1);
    assert_eq!(stats.resources["templates"].counters.hits, 1);
    assert!((cache.stats().hit_rate - 100.0 / 3.0).abs() < 1e-9);
}
all_backends!(store_then_hit_works, store_then_hit);

async fn ttl_expiry(backend: TestBackend) {
    let cache = backend.cache().await;
    let k = key(&cache, "org_1", "conversations", "/api/conversations");
    put(&cache, &k, "x", Duration::from_millis(300)).await;
    assert!(hit_body(&cache, &k).await.is_some(), "fresh entry must hit");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if hit_body(&cache, &k).await.is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "entry never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
all_backends!(entries_expire_after_their_ttl, ttl_expiry);

async fn invalidation_is_scoped(backend: TestBackend) {
    let cache = backend.cache().await;
    let a_contacts = key(&cache, "org_a", "contacts", "/api/contacts");
    let a_templates = key(&cache, "org_a", "templates", "/api/templates");
    let b_contacts = key(&cache, "org_b", "contacts", "/api/contacts");
    for k in [&a_contacts, &a_templates, &b_contacts] {
        put(&cache, k, "v", LONG).await;
    }
    cache
        .invalidate("org_a", &["contacts"])
        .await
        .expect("invalidate");
    assert_eq!(
        hit_body(&cache, &a_contacts).await,
        None,
        "invalidated entry must miss"
    );
    assert!(
        hit_body(&cache, &a_templates).await.is_some(),
        "other resource untouched"
    );
    assert!(
        hit_body(&cache, &b_contacts).await.is_some(),
        "other tenant untouched"
    );
    assert_eq!(
        cache.stats().resources["contacts"].counters.invalidations,
        1
    );
}
all_backends!(
    invalidation_drops_one_tenant_and_resource_only,
    invalidation_is_scoped
);

async fn tags_fan_out(backend: TestBackend) {
    let cache = backend.cache().await;
    let dashboard = cache
        .key(Tenant::Scoped("org_1"), "analytics")
        .unwrap()
        .tag("contacts")
        .unwrap()
        .tag("conversations")
        .unwrap()
        .request("GET", "/api/analytics/dashboard", Some("range=7d"))
        .build();
    let templates = key(&cache, "org_1", "templates", "/api/templates");
    put(&cache, &dashboard, "dash", LONG).await;
    put(&cache, &templates, "tpl", LONG).await;
    cache.invalidate("org_1", &["conversations"]).await.unwrap();
    assert_eq!(
        hit_body(&cache, &dashboard).await,
        None,
        "a tag's invalidation drops the entry"
    );
    assert!(hit_body(&cache, &templates).await.is_some());
}
all_backends!(invalidating_a_tag_drops_entries_carrying_it, tags_fan_out);

async fn invalidate_all(backend: TestBackend) {
    let cache = backend.cache().await;
    let mine = [
        key(&cache, "org_1", "contacts", "/api/contacts"),
        key(&cache, "org_1", "templates", "/api/templates"),
    ];
    let theirs = key(&cache, "org_2", "contacts", "/api/contacts");
    for k in mine.iter().chain([&theirs]) {
        put(&cache, k, "v", LONG).await;
    }
    cache.invalidate_all("org_1").await.unwrap();
    for k in &mine {
        assert_eq!(hit_body(&cache, k).await, None);
    }
    assert!(hit_body(&cache, &theirs).await.is_some());
}
all_backends!(invalidate_all_drops_one_tenant, invalidate_all);

/// Read the generation (lookup), invalidate, then store what was computed before the
/// invalidation: the stored entry must never be served.
async fn stale_set_race(backend: TestBackend) {
    let cache = backend.cache().await;
    let k = key(&cache, "org_1", "contacts", "/api/contacts");
    let Lookup::Miss(slow_ticket) = cache.lookup(&k).await else {
        panic!("cold key must miss")
    };
    cache.invalidate("org_1", &["contacts"]).await.unwrap();
    let stored = cache
        .store(slow_ticket, CachedResponse::ok("old data"), LONG)
        .await
        .unwrap();
    assert!(stored, "the store itself goes through");
    assert_eq!(
        hit_body(&cache, &k).await,
        None,
        "a value computed before an invalidation must not be served after it"
    );
}
all_backends!(stale_set_interleaving_ends_in_a_miss, stale_set_race);

async fn hostile_inputs_get_bounded_keys(backend: TestBackend) {
    let cache = backend.cache().await;
    let tenant = format!("{{evil}}*?[\0]{}", "x".repeat(5000));
    let query = format!("q={}&{}", "%FF%00*".repeat(5000), "a=1&".repeat(3000));
    let k = cache
        .key(Tenant::Scoped(&tenant), "contacts")
        .unwrap()
        .request("GET", "/api/contacts", Some(&query))
        .build();
    assert!(k.entry_key().len() < 200, "{}", k.entry_key().len());
    assert_eq!(k.entry_key().matches('{').count(), 1);
    put(&cache, &k, "ok", LONG).await;
    assert_eq!(hit_body(&cache, &k).await.as_deref(), Some("ok"));
    cache.invalidate(&tenant, &["contacts"]).await.unwrap();
    assert_eq!(hit_body(&cache, &k).await, None);
}
all_backends!(
    hostile_tenants_and_queries_are_bounded_and_work,
    hostile_inputs_get_bounded_keys
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_is_bounded() {
    let backend = TestBackend::Memory;
    let cache = Cache::new(backend.config().with_memory_max_bytes(1024 * 1024))
        .await
        .unwrap();
    let body = "x".repeat(10 * 1024);
    for i in 0..1000 {
        let k = key(&cache, "org_1", "contacts", &format!("/api/contacts/{i}"));
        put(&cache, &k, &body, LONG).await;
    }
    let held = cache.memory_weighted_size().unwrap();
    assert!(
        held <= 1024 * 1024,
        "memory backend holds {held} bytes over its 1 MiB bound"
    );
    assert!(cache.memory_entry_count().unwrap() < 1000);
}
