//! A deploy that changes a handler never reads what the old handler stored (issue 13).
//! Two builds of one route, `GET /contacts` of resource `contacts`, differ only in their
//! handler's body; each is served by its own Router and Cache over one redis-server, as
//! an old and a new release are during a rolling deploy. The handler's fingerprint, a
//! digest of its tokens, is part of every key: the new build misses where the old one
//! hits, and each keeps reading its own entry. A third build with the old build's exact
//! code shares the old entry, so it is the code that tells them apart, not the process.

use axum::routing::get;
use axum::Router;
use cache_runtime::{Cache, CacheConfig, CacheScope};
use cache_tests::http::{send, Reply};
use cache_tests::redis_server::wait_until;
use cache_tests::RedisServer;

mod build_1 {
    #[cache_runtime::cached(resource = "contacts", ttl = 300)]
    pub async fn list_contacts() -> String {
        "contacts as build 1 renders them".to_owned()
    }
}

mod build_2 {
    #[cache_runtime::cached(resource = "contacts", ttl = 300)]
    pub async fn list_contacts() -> String {
        "contacts as build 2 renders them".to_owned()
    }
}

/// Token for token the code of `build_1`.
mod build_1_again {
    #[cache_runtime::cached(resource = "contacts", ttl = 300)]
    pub async fn list_contacts() -> String {
        "contacts as build 1 renders them".to_owned()
    }
}

const BUILD_1: &str = "contacts as build 1 renders them";
const BUILD_2: &str = "contacts as build 2 renders them";
const ENTRIES: &str = "api-cache:{t.org_1}:e:contacts:*";

/// One running release: its own Cache (process) over the shared Redis.
struct Deploy {
    app: Router,
    cache: Cache,
}

impl Deploy {
    async fn new<H, T>(server: &RedisServer, handler: H) -> Deploy
    where
        H: axum::handler::Handler<T, ()>,
        T: 'static,
    {
        let cache = Cache::new(
            CacheConfig::default()
                .with_redis_url(server.url())
                .with_response_timeout(std::time::Duration::from_secs(2))
                .with_connect_timeout(std::time::Duration::from_secs(2)),
        )
        .await
        .unwrap();
        let app = Router::new()
            .route("/contacts", get(handler))
            .layer(cache.extension());
        Deploy { app, cache }
    }

    async fn get(&self) -> Reply {
        let mut request = cache_tests::http::get("/contacts", None);
        request.extensions_mut().insert(CacheScope::new("org_1"));
        let reply = send(&self.app, request).await;
        assert_eq!(reply.status, 200);
        reply
    }

    fn wait_until_stored(&self, stores: u64) {
        wait_until(
            std::time::Duration::from_secs(10),
            "the entry is stored",
            || self.cache.stats().totals.stores == stores,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_handler_never_reads_the_old_handlers_entries() {
    let server = RedisServer::start();
    let old = Deploy::new(&server, build_1::list_contacts).await;
    let first = old.get().await;
    assert_eq!((first.x_cache(), first.text().as_str()), ("MISS", BUILD_1));
    old.wait_until_stored(1);
    let hit = old.get().await;
    assert_eq!((hit.x_cache(), hit.text().as_str()), ("HIT", BUILD_1));
    assert_eq!(server.keys(ENTRIES).len(), 1);

    // The new release, same route and resource, same Redis, another handler body.
    let new = Deploy::new(&server, build_2::list_contacts).await;
    let first = new.get().await;
    assert_eq!(
        (first.x_cache(), first.text().as_str()),
        ("MISS", BUILD_2),
        "the new handler read the old handler's entry"
    );
    new.wait_until_stored(1);
    assert_eq!(server.keys(ENTRIES).len(), 2, "one entry per build");
    // Both run side by side during the rollout: each hits its own entry.
    for _ in 0..3 {
        let reply = new.get().await;
        assert_eq!((reply.x_cache(), reply.text().as_str()), ("HIT", BUILD_2));
        let reply = old.get().await;
        assert_eq!((reply.x_cache(), reply.text().as_str()), ("HIT", BUILD_1));
    }

    // The old code deployed again, in a fresh process: it finds its entry.
    let again = Deploy::new(&server, build_1_again::list_contacts).await;
    let reply = again.get().await;
    assert_eq!(
        (reply.x_cache(), reply.text().as_str()),
        ("HIT", BUILD_1),
        "identical code must share its entries"
    );
}
