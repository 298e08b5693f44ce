//! Cached plain functions use the cache of the request being served (`Cache::current`),
//! so an app that builds its own `Cache` (rather than installing a global one) caches its
//! service layer in the same store as its handlers, and its invalidations reach both.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use cache_runtime::{cached, invalidates, Cache, CacheScope};
use cache_tests::backends::TestBackend;
use cache_tests::http::{get as get_req, post, send};
use serde_json::json;

#[derive(Clone, Default)]
struct Counters {
    count_runs: Arc<AtomicUsize>,
}

#[cached(resource = "contacts", ttl = 300, key = (org), scope = org.as_str())]
async fn contact_count(org: String, runs: Arc<AtomicUsize>) -> u64 {
    runs.fetch_add(1, Ordering::SeqCst);
    42
}

/// Not cached itself: only its service call is.
async fn summary(State(counters): State<Counters>, req: Request) -> String {
    let org = req
        .extensions()
        .get::<CacheScope>()
        .map(|s| s.tenant().to_owned())
        .unwrap_or_default();
    let count = Cache::run_with(
        req.extensions().get::<Cache>().expect("cache layer"),
        contact_count(org, counters.count_runs.clone()),
    )
    .await;
    format!("{count}")
}

#[cached(resource = "analytics", ttl = 600, tags = ["contacts"])]
async fn dashboard(
    State(counters): State<Counters>,
    axum::Extension(scope): axum::Extension<CacheScope>,
) -> String {
    let count = contact_count(scope.tenant().to_owned(), counters.count_runs.clone()).await;
    format!("contacts: {count}")
}

#[invalidates("contacts")]
async fn add_contact() -> &'static str {
    "added"
}

async fn scope_from_header(mut req: Request, next: Next) -> Response {
    if let Some(t) = req.headers().get("x-tenant").and_then(|v| v.to_str().ok()) {
        let scope = CacheScope::new(t);
        req.extensions_mut().insert(scope);
    }
    next.run(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_functions_use_the_request_cache() {
    let backend = TestBackend::redis();
    let cache = backend.cache().await;
    let counters = Counters::default();
    let app = Router::new()
        .route("/dashboard", get(dashboard))
        .route("/summary", get(summary))
        .route("/contacts", axum::routing::post(add_contact))
        .with_state(counters.clone())
        .layer(middleware::from_fn(scope_from_header))
        .layer(cache.extension());

    assert_eq!(
        send(&app, get_req("/dashboard", Some("org_1")))
            .await
            .text(),
        "contacts: 42"
    );
    assert_eq!(counters.count_runs.load(Ordering::SeqCst), 1);
    // The service call's entry lives in the request's Redis, not in a global cache.
    // The store runs off the request path: wait for it, with a deadline.
    let server = backend.server().unwrap();
    cache_tests::redis_server::wait_until(
        std::time::Duration::from_secs(10),
        "the service entry in the request's Redis",
        || server.keys("api-cache:{t.org_1}:e:contacts:*").len() == 1,
    );
    assert!(cache.stats().resources.contains_key("contacts"));
    assert!(!Cache::global().stats().resources.contains_key("contacts"));

    // A plain handler reaches the same entry through Cache::run_with.
    assert_eq!(
        send(&app, get_req("/summary", Some("org_1"))).await.text(),
        "42"
    );
    assert_eq!(
        counters.count_runs.load(Ordering::SeqCst),
        1,
        "served from the request's cache"
    );

    // The mutation's invalidation (same cache) drops the service entry and the dashboard.
    send(&app, post("/contacts", Some("org_1"), json!({}))).await;
    let after = send(&app, get_req("/dashboard", Some("org_1"))).await;
    assert_eq!(after.x_cache(), "MISS");
    assert_eq!(counters.count_runs.load(Ordering::SeqCst), 2);

    // Outside any request, `invalidate::resources` inside a scope reaches this cache too.
    cache
        .run_with(cache_runtime::invalidate::resources("org_1", &["contacts"]))
        .await
        .unwrap();
    send(&app, get_req("/summary", Some("org_1"))).await;
    assert_eq!(counters.count_runs.load(Ordering::SeqCst), 3);
}
