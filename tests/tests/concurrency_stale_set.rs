//! The stale-set race replayed deterministically through `#[cached]` and `#[invalidates]`
//! (issue 6, DESIGN invariant 2): a slow miss reads the database and holds at a gate; a
//! mutation commits and invalidates; the slow miss then answers and stores its old value.
//! Every read that starts after the mutation returned must see the new value, on this
//! instance and on any other sharing the store, including when the stale store lands on
//! top of a fresh entry. Both backends, plus two instances sharing one redis-server.

mod concurrency_support;

use cache_runtime::Cache;
use cache_tests::backends::TestBackend;
use cache_tests::both_backends;
use cache_tests::http::{send, Reply};
use cache_tests::RedisServer;
use concurrency_support::{request, router, wait_until, within_deadline, App, Flavor};
use tokio::task::JoinHandle;

fn spawn_get(api: &axum::Router, path: &'static str) -> JoinHandle<Reply> {
    let api = api.clone();
    tokio::spawn(async move { send(&api, request("GET", path, "org_1", None)).await })
}

async fn get(api: &axum::Router, path: &str) -> Reply {
    send(api, request("GET", path, "org_1", None)).await
}

/// The `version` in the body of every entry stored in Redis.
fn stored_versions(server: &RedisServer) -> Vec<u64> {
    server
        .keys("*:e:*")
        .iter()
        .map(|key| {
            let raw: Vec<u8> = server.cmd(&["GET", key]);
            // The JSON body is the tail of the stored value, after binary fields.
            let field = b"\"version\":";
            let at = raw
                .windows(field.len())
                .rposition(|w| w == field)
                .expect("a version in the stored body");
            let digits: String = raw[at + field.len()..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .map(|b| *b as char)
                .collect();
            digits.parse().unwrap()
        })
        .collect()
}

fn version(reply: &Reply) -> u64 {
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["tenant"], "org_1");
    reply.json()["version"].as_u64().expect("a version")
}

/// The race on one instance (`reader`) with the mutation sent to `writer` (the same
/// instance or another one sharing the store). `path` is read; `POST /contacts` is the
/// mutation (`/contacts` directly, `/dashboard` through its `contacts` tag).
async fn replay(
    reader: (&Cache, &axum::Router),
    writer: &axum::Router,
    others: &[&axum::Router],
    app: &App,
    path: &'static str,
    server: Option<&RedisServer>,
) {
    let (reader_cache, reader_api) = reader;
    let stores_before = reader_cache.stats().totals.stores;

    app.gate().hold_next();
    let slow = spawn_get(reader_api, path);
    wait_until("the slow miss to read the database and hold", || {
        app.gate().held() == 1
    })
    .await;

    let write = send(writer, request("POST", "/contacts", "org_1", None)).await;
    assert_eq!(write.status, 200);
    assert_eq!(write.header("x-cache-invalidated"), "contacts");
    assert_eq!(write.json()["version"], 2);

    app.gate().release();
    let slow = within_deadline("the slow miss", slow).await.unwrap();
    assert_eq!(slow.x_cache(), "MISS");
    assert_eq!(version(&slow), 1, "it read the database before the write");
    wait_until("the slow miss's stale entry to be stored", || {
        reader_cache.stats().totals.stores == stores_before + 1
    })
    .await;
    if let Some(server) = server {
        // The old value really is in Redis now: what follows shows it is never served.
        assert_eq!(stored_versions(server), [1]);
    }

    for api in std::iter::once(reader_api).chain(others.iter().copied()) {
        let first = get(api, path).await;
        assert_eq!(version(&first), 2, "no stale read after the invalidation");
        let again = get(api, path).await;
        assert_eq!(version(&again), 2);
        assert_eq!(again.x_cache(), "HIT", "the fresh value is cached again");
    }
}

async fn stale_set_on_one_instance(backend: TestBackend) {
    for path in ["/contacts", "/dashboard"] {
        let cache = backend.cache().await;
        if let Some(server) = backend.server() {
            let _: () = server.cmd(&["FLUSHALL"]);
        }
        let app = App::default();
        let api = router(&cache, app.clone(), Flavor::Correct);
        replay((&cache, &api), &api, &[], &app, path, backend.server()).await;
    }
}
both_backends!(
    a_slow_miss_never_stores_a_value_served_after_the_write,
    stale_set_on_one_instance
);

/// The stale store lands after a fresh reader has already stored the new value: it
/// overwrites the fresh entry, which costs a miss, never a stale answer.
async fn stale_store_over_a_fresh_entry(backend: TestBackend) {
    let cache = backend.cache().await;
    let app = App::default();
    let api = router(&cache, app.clone(), Flavor::Correct);

    app.gate().hold_next();
    let slow = spawn_get(&api, "/contacts");
    wait_until("the slow miss to hold", || app.gate().held() == 1).await;
    let write = send(&api, request("POST", "/contacts", "org_1", None)).await;
    assert_eq!(write.json()["version"], 2);

    let fresh = get(&api, "/contacts").await;
    assert_eq!((fresh.x_cache(), version(&fresh)), ("MISS", 2));
    wait_until("the fresh entry to be stored", || {
        cache.stats().totals.stores == 1
    })
    .await;
    let hit = get(&api, "/contacts").await;
    assert_eq!((hit.x_cache(), version(&hit)), ("HIT", 2));

    app.gate().release();
    let slow = within_deadline("the slow miss", slow).await.unwrap();
    assert_eq!(version(&slow), 1);
    wait_until("the stale entry to land on top", || {
        cache.stats().totals.stores == 2
    })
    .await;
    if let Some(server) = backend.server() {
        assert_eq!(
            stored_versions(server),
            [1],
            "the stale value is what Redis holds now"
        );
    }
    for _ in 0..3 {
        assert_eq!(version(&get(&api, "/contacts").await), 2);
    }
    assert_eq!(get(&api, "/contacts").await.x_cache(), "HIT");
}
both_backends!(
    a_stale_store_over_a_fresh_entry_is_never_served,
    stale_store_over_a_fresh_entry
);

/// Two instances sharing one redis-server: the slow miss on one, the mutation on the
/// other, reads on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_race_across_two_instances() {
    let backend = TestBackend::redis();
    for (path, lease) in [
        ("/contacts", false),
        ("/dashboard", false),
        ("/contacts", true),
    ] {
        let _: () = backend.server().unwrap().cmd(&["FLUSHALL"]);
        let config = backend.config();
        let config = if lease {
            config.with_lease(Some(std::time::Duration::from_secs(5)))
        } else {
            config
        };
        let (cache_a, cache_b) = (
            Cache::new(config.clone()).await.unwrap(),
            Cache::new(config).await.unwrap(),
        );
        let app = App::default();
        let api_a = router(&cache_a, app.clone(), Flavor::Correct);
        let api_b = router(&cache_b, app.clone(), Flavor::Correct);
        let server = backend.server();
        replay((&cache_a, &api_a), &api_b, &[&api_b], &app, path, server).await;
    }
}
