//! Fault injection (issue 5): hostile inputs and oversized responses. Query strings of
//! tens of kilobytes, percent-encoded binary bytes, glob characters, braces and long
//! tenant ids give bounded keys (one hash tag each), correct answers and no
//! cross-tenant hit; a response over the size bound is served whole and not stored.

use std::time::Duration;

use cache_runtime::{Cache, CacheConfig};
use cache_tests::http::{get, send};
use cache_tests::versioned_api::Api;
use cache_tests::RedisServer;

/// The size bound of the oversized-response test; the others keep the default (1 MiB):
/// their answers echo the tenant and the query.
const MAX_ENTRY_BYTES: usize = 4096;

async fn setup(max_entry_bytes: usize) -> (RedisServer, Cache, Api) {
    let server = RedisServer::start();
    let cache = Cache::new(
        CacheConfig::default()
            .with_redis_url(server.url())
            .with_response_timeout(Duration::from_secs(2))
            .with_connect_timeout(Duration::from_secs(2))
            .with_max_entry_bytes(max_entry_bytes),
    )
    .await
    .unwrap();
    let api = Api::new(&cache);
    (server, cache, api)
}

/// Every key is short and carries exactly one hash tag, whatever the input.
fn assert_bounded_keys(server: &RedisServer) {
    let keys = server.keys("*");
    assert!(!keys.is_empty());
    for key in keys {
        assert!(key.len() <= 160, "{} bytes: {key}", key.len());
        assert_eq!(key.matches('{').count(), 1, "{key}");
        assert_eq!(key.matches('}').count(), 1, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tenant_ids_get_their_own_bounded_keys() {
    let (server, _cache, api) = setup(CacheConfig::default().max_entry_bytes).await;
    let long = "t".repeat(5000);
    let tenants = [
        "org_1",
        "{org_1}",
        "a}b{c",
        // What `a}b{c` escapes to: must not share its entries.
        "a%7Db%7Bc",
        "*",
        "org_1*",
        "org_?",
        "[a-z]*",
        "café",
        "global",
        long.as_str(),
    ];
    for tenant in tenants {
        assert_eq!(api.read(tenant, "contacts", None).await.x_cache(), "MISS");
        api.read_until_hit(tenant, "contacts", None, Duration::from_secs(10))
            .await;
    }
    // Hits may come from in-process flights before their stores land: wait for them.
    cache_tests::redis_server::wait_until(Duration::from_secs(10), "every entry stored", || {
        server.keys("api-cache:*:e:contacts:*").len() >= tenants.len()
    });
    assert_bounded_keys(&server);
    assert_eq!(
        server.keys("api-cache:*:e:contacts:*").len(),
        tenants.len(),
        "two tenants share an entry"
    );
    // Each tenant's invalidation touches that tenant only; `read` checks every body
    // against its own tenant's data.
    for (i, tenant) in tenants.iter().enumerate() {
        api.change(tenant, "contacts").await;
        assert_eq!(api.read(tenant, "contacts", None).await.x_cache(), "MISS");
        for other in &tenants[i + 1..] {
            assert_eq!(
                api.read(other, "contacts", None).await.x_cache(),
                "HIT",
                "invalidating {tenant:?} dropped {other:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_binary_query_strings_get_bounded_keys_and_correct_answers() {
    let (server, _cache, api) = setup(CacheConfig::default().max_entry_bytes).await;
    let binary = "%FF%00%C3%28%0D%0A*?[]{}".repeat(1500);
    // (query, what its first read answers)
    let queries = [
        (format!("q={binary}"), "MISS"),
        (format!("q={binary}&page=2"), "MISS"),
        (format!("{}z=1", "a=1&".repeat(8000)), "MISS"),
        ("q=*&tag=%7Bx%7D".to_owned(), "MISS"),
        // Decodes like the previous one: the same key, and the same answer.
        ("tag={x}&q=%2A".to_owned(), "HIT"),
    ];
    for (query, first) in &queries {
        assert!(query.len() < 65_000);
        let read = api.read("org_1", "contacts", Some(query)).await;
        assert_eq!(read.x_cache(), *first, "{} bytes of query", query.len());
        api.read_until_hit("org_1", "contacts", Some(query), Duration::from_secs(10))
            .await;
    }
    assert!(queries.iter().any(|(q, _)| q.len() > 30_000));
    let distinct = queries.len() - 1;
    cache_tests::redis_server::wait_until(Duration::from_secs(10), "every entry stored", || {
        server.keys("api-cache:{t.org_1}:e:contacts:*").len() >= distinct
    });
    assert_bounded_keys(&server);
    assert_eq!(
        server.keys("api-cache:{t.org_1}:e:contacts:*").len(),
        distinct
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_responses_are_served_whole_and_not_stored() {
    let (server, cache, api) = setup(MAX_ENTRY_BYTES).await;
    let big = MAX_ENTRY_BYTES + 1;
    let uri = format!("/export?bytes={big}");
    let runs = api.db.runs();
    let not_stored = cache.stats().totals.not_stored;
    for _ in 0..3 {
        let reply = send(&api.app, get(&uri, Some("org_big"))).await;
        assert_eq!(reply.status, http::StatusCode::OK);
        assert_eq!(reply.x_cache(), "MISS");
        assert_eq!(reply.text(), cache_tests::versioned_api::export_body(big));
        assert_eq!(
            reply.header("cache-control"),
            "",
            "not stored, not cacheable"
        );
    }
    assert_eq!(api.db.runs(), runs + 3);
    assert_eq!(cache.stats().totals.not_stored - not_stored, 3);
    assert!(server.keys("api-cache:{t.org_big}:e:*").is_empty());

    // At the bound it is stored.
    let uri = format!("/export?bytes={MAX_ENTRY_BYTES}");
    let reply = send(&api.app, get(&uri, Some("org_big"))).await;
    assert_eq!(reply.x_cache(), "MISS");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = send(&api.app, get(&uri, Some("org_big"))).await;
        assert_eq!(
            reply.text(),
            cache_tests::versioned_api::export_body(MAX_ENTRY_BYTES)
        );
        if reply.x_cache() == "HIT" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never stored");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
