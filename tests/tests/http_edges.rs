//! Read-your-writes and isolation at the edges of a deployment (issue 11): what the
//! browser is told (`Cache-Control`, `ETag`, `304`), a client that hangs up in the middle
//! of a mutation, which outcomes invalidate, what is never stored, keys under nested
//! routers, `vary = header(...)` with repeated lines, global data keyed per user, and a
//! router without the cache's layer. Each runs against a private redis-server and the
//! in-memory backend where the backend matters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use cache_runtime::{cached, invalidates, Cache, CacheScope};
use cache_tests::all_backends;
use cache_tests::backends::TestBackend;
use cache_tests::http::{get as get_req, post as post_req, send, Reply};
use serde_json::{json, Value};

/// A tiny "database": items per tenant, and how often each handler ran.
#[derive(Clone, Default)]
struct Db {
    items: Arc<Mutex<HashMap<String, Vec<String>>>>,
    runs: Arc<Mutex<HashMap<&'static str, usize>>>,
    /// How long a mutation keeps working after it has committed (a slow notification).
    linger: Arc<Mutex<Duration>>,
    committed: Arc<AtomicUsize>,
}

impl Db {
    fn ran(&self, handler: &'static str) {
        *self.runs.lock().unwrap().entry(handler).or_default() += 1;
    }

    fn runs(&self, handler: &'static str) -> usize {
        self.runs.lock().unwrap().get(handler).copied().unwrap_or(0)
    }

    fn commit(&self, tenant: &str, item: &str) {
        self.items
            .lock()
            .unwrap()
            .entry(tenant.to_owned())
            .or_default()
            .push(item.to_owned());
        self.committed.fetch_add(1, Ordering::SeqCst);
    }

    fn list(&self, tenant: &str) -> Vec<String> {
        self.items
            .lock()
            .unwrap()
            .get(tenant)
            .cloned()
            .unwrap_or_default()
    }
}

fn tenant(headers: &HeaderMap) -> String {
    headers
        .get("x-tenant")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[cached(resource = "items", ttl = 600)]
async fn list_items(State(db): State<Db>, headers: HeaderMap) -> Json<Value> {
    db.ran("list_items");
    let org = tenant(&headers);
    Json(json!({ "organization_id": org, "items": db.list(&org) }))
}

/// The same data for every tenant: identical bodies across tenants.
#[cached(resource = "items", ttl = 600)]
async fn same_for_all(State(db): State<Db>) -> &'static str {
    db.ran("same_for_all");
    "[1,2,3]"
}

#[cached(resource = "items", ttl = 600, browser_ttl = 60)]
async fn browser_keeps(State(db): State<Db>) -> &'static str {
    db.ran("browser_keeps");
    "kept for a minute"
}

#[cached(resource = "items", ttl = 600)]
async fn own_cache_control(State(db): State<Db>) -> Response {
    db.ran("own_cache_control");
    (
        [(header::CACHE_CONTROL, "private, max-age=5, must-revalidate")],
        "mine",
    )
        .into_response()
}

/// Adds an item, then answers as the query says: `?then=303` (post/redirect/get),
/// `?then=500` (committed, then failed), `?then=400` (refused before writing),
/// `?then=linger` (committed, then keeps working for `Db::linger`).
#[invalidates("items")]
async fn add_item(
    State(db): State<Db>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Result<Response, (StatusCode, &'static str)> {
    db.ran("add_item");
    let then = query.get("then").map(String::as_str).unwrap_or("201");
    if then == "400" {
        return Err((StatusCode::BAD_REQUEST, "refused"));
    }
    let name = body["name"].as_str().unwrap_or("unnamed");
    db.commit(&tenant(&headers), name);
    match then {
        "303" => Ok(Redirect::to("/api/items").into_response()),
        "500" => Err((StatusCode::INTERNAL_SERVER_ERROR, "audit log failed")),
        "linger" => {
            let linger = *db.linger.lock().unwrap();
            tokio::time::sleep(linger).await;
            Ok(StatusCode::CREATED.into_response())
        }
        _ => Ok(StatusCode::CREATED.into_response()),
    }
}

/// Answers with the status the query asks for; stored even when not 2xx.
#[cached(resource = "statuses", ttl = 600, cache_only_success = false)]
async fn status_route(
    State(db): State<Db>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    db.ran("status_route");
    let code = query
        .get("status")
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(200);
    let status = StatusCode::from_u16(code).unwrap();
    (status, format!("status {code}")).into_response()
}

#[cached(resource = "projects", ttl = 600)]
async fn project_contacts(State(db): State<Db>, Path(project): Path<u32>) -> String {
    db.ran("project_contacts");
    format!("contacts of project {project}")
}

#[cached(resource = "flags", ttl = 600, vary = header("x-flags"))]
async fn flags(State(db): State<Db>, headers: HeaderMap) -> Json<Vec<String>> {
    db.ran("flags");
    Json(
        headers
            .get_all("x-flags")
            .iter()
            .map(|v| v.to_str().unwrap_or("?").to_owned())
            .collect(),
    )
}

#[cached(resource = "preferences", ttl = 600, scope = global, vary = user)]
async fn preferences(State(db): State<Db>, headers: HeaderMap) -> String {
    db.ran("preferences");
    format!(
        "preferences of user {} of {}",
        headers
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?"),
        tenant(&headers)
    )
}

async fn scope_from_headers(mut req: Request, next: Next) -> Response {
    let header = |req: &Request, name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (tenant, user) = (header(&req, "x-tenant"), header(&req, "x-user"));
    if let Some(tenant) = tenant {
        let mut scope = CacheScope::new(tenant);
        if let Some(user) = user {
            scope = scope.with_user(user);
        }
        req.extensions_mut().insert(scope);
    }
    next.run(req).await
}

fn routes(db: Db) -> Router {
    Router::new()
        .route("/api/items", get(list_items).post(add_item))
        .route("/api/same", get(same_for_all))
        .route("/api/browser", get(browser_keeps))
        .route("/api/own", get(own_cache_control))
        .route("/api/status", get(status_route))
        .route("/api/flags", get(flags))
        .route("/api/preferences", get(preferences))
        .nest(
            "/projects/{id}",
            Router::new().route("/contacts", get(project_contacts)),
        )
        .with_state(db)
        .layer(middleware::from_fn(scope_from_headers))
}

fn app(cache: &Cache, db: Db) -> Router {
    routes(db).layer(cache.extension())
}

async fn fetch(app: &Router, uri: &str, tenant: &str) -> Reply {
    send(app, get_req(uri, Some(tenant))).await
}

async fn revalidate(app: &Router, uri: &str, tenant: &str, etag: &str) -> Reply {
    let mut request = get_req(uri, Some(tenant));
    request
        .headers_mut()
        .insert(header::IF_NONE_MATCH, etag.parse().unwrap());
    send(app, request).await
}

async fn add(app: &Router, tenant: &str, name: &str, then: &str) -> Reply {
    send(
        app,
        post_req(
            &format!("/api/items?then={then}"),
            Some(tenant),
            json!({ "name": name }),
        ),
    )
    .await
}

fn items(reply: &Reply) -> Vec<String> {
    serde_json::from_value(reply.json()["items"].clone()).unwrap()
}

/// The browser must ask every time, with a strong ETag it can revalidate: `304` with no
/// body while nothing changed, the new body once a write changed it.
async fn browser_revalidates(backend: TestBackend) {
    let cache = backend.cache().await;
    let db = Db::default();
    let app = app(&cache, db.clone());

    let first = fetch(&app, "/api/items", "org_1").await;
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(first.header("cache-control"), "private, no-cache");
    let etag = first.header("etag").to_owned();
    assert!(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
        "a strong ETag: {etag:?}"
    );

    let hit = fetch(&app, "/api/items", "org_1").await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.header("etag"), etag, "the entry keeps its ETag");
    assert_eq!(hit.header("cache-control"), "private, no-cache");
    assert!(
        hit.header("age").parse::<u64>().is_ok(),
        "{:?}",
        hit.headers
    );

    // Revalidation on a hit: 304, no body, the headers RFC 9110 15.4.5 asks for.
    let not_modified = revalidate(&app, "/api/items", "org_1", &etag).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.header("etag"), etag);
    assert_eq!(not_modified.header("cache-control"), "private, no-cache");
    assert_eq!(not_modified.x_cache(), "HIT");
    assert_eq!(not_modified.header("content-type"), "");
    // A list of tags, one of them weak-prefixed, matches too (weak comparison).
    let listed = revalidate(&app, "/api/items", "org_1", &format!("\"x\", W/{etag}")).await;
    assert_eq!(listed.status, StatusCode::NOT_MODIFIED);
    let other = revalidate(&app, "/api/items", "org_1", "\"something-else\"").await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(db.runs("list_items"), 1, "all of that from one computation");

    // The browser's own write: its next revalidation gets the new list, a new ETag.
    assert_eq!(
        add(&app, "org_1", "a", "201").await.status,
        StatusCode::CREATED
    );
    let after = revalidate(&app, "/api/items", "org_1", &etag).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.x_cache(), "MISS");
    assert_eq!(items(&after), vec!["a"]);
    let new_etag = after.header("etag").to_owned();
    assert_ne!(new_etag, etag);

    // An invalidation that changed nothing this route shows: the fresh computation has
    // the same ETag, so even the miss answers 304.
    cache.invalidate("org_1", &["items"]).await.unwrap();
    let unchanged = revalidate(&app, "/api/items", "org_1", &new_etag).await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    assert_eq!(unchanged.x_cache(), "MISS");
    assert!(unchanged.body.is_empty());
}
all_backends!(the_browser_revalidates, browser_revalidates);

/// Identical bodies of two tenants never validate each other's copies: after switching
/// accounts a browser never gets a 304 for the other account's copy.
async fn etags_are_per_key(backend: TestBackend) {
    let cache = backend.cache().await;
    let app = app(&cache, Db::default());
    let one = fetch(&app, "/api/same", "org_1").await;
    let two = fetch(&app, "/api/same", "org_2").await;
    assert_eq!(one.body, two.body);
    assert_ne!(one.header("etag"), two.header("etag"));
    let switched = revalidate(&app, "/api/same", "org_2", one.header("etag")).await;
    assert_eq!(switched.status, StatusCode::OK);
}
all_backends!(etags_are_per_key_not_per_body, etags_are_per_key);

/// Every instance gives the same ETag for the same entry, and for the same content
/// computed afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_gives_the_same_etag() {
    let backend = TestBackend::redis();
    let (cache_a, cache_b) = (backend.cache().await, backend.cache().await);
    let db = Db::default();
    let (app_a, app_b) = (app(&cache_a, db.clone()), app(&cache_b, db.clone()));
    let stored = fetch(&app_a, "/api/items", "org_1").await;
    assert_eq!(stored.x_cache(), "MISS");
    wait_for_hit(&app_b, "/api/items", "org_1").await;
    let from_b = fetch(&app_b, "/api/items", "org_1").await;
    assert_eq!(from_b.header("etag"), stored.header("etag"));
    let on_b = revalidate(&app_b, "/api/items", "org_1", stored.header("etag")).await;
    assert_eq!(on_b.status, StatusCode::NOT_MODIFIED);

    cache_a.invalidate("org_1", &["items"]).await.unwrap();
    let recomputed = fetch(&app_b, "/api/items", "org_1").await;
    assert_eq!(recomputed.x_cache(), "MISS");
    assert_eq!(recomputed.header("etag"), stored.header("etag"));
}

/// The Redis store happens off the request path: wait until the entry is readable.
async fn wait_for_hit(app: &Router, uri: &str, tenant: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while fetch(app, uri, tenant).await.x_cache() != "HIT" {
        assert!(tokio::time::Instant::now() < deadline, "{uri} never hit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A route may opt into a browser lifetime; a handler's own `Cache-Control` is kept.
async fn browser_lifetimes(backend: TestBackend) {
    let cache = backend.cache().await;
    let app = app(&cache, Db::default());
    for expected in ["MISS", "HIT"] {
        if expected == "HIT" {
            wait_for_hit(&app, "/api/browser", "org_1").await;
            wait_for_hit(&app, "/api/own", "org_1").await;
        }
        let kept = fetch(&app, "/api/browser", "org_1").await;
        assert_eq!(kept.header("cache-control"), "private, max-age=60");
        let own = fetch(&app, "/api/own", "org_1").await;
        assert_eq!(own.x_cache(), expected);
        assert_eq!(
            own.header("cache-control"),
            "private, max-age=5, must-revalidate",
            "never overwritten"
        );
        assert_eq!(own.headers.get_all(header::CACHE_CONTROL).iter().count(), 1);
    }
}
all_backends!(browser_lifetimes_are_opt_in, browser_lifetimes);

/// The client hangs up after the mutation committed, while it still works: its
/// invalidation happens anyway, and the next read on any instance shows the write.
async fn client_hangs_up(backend: TestBackend) {
    let cache = backend.cache().await;
    let db = Db::default();
    *db.linger.lock().unwrap() = Duration::from_secs(30);
    let api = app(&cache, db.clone());
    assert!(items(&fetch(&api, "/api/items", "org_1").await).is_empty());
    wait_for_hit(&api, "/api/items", "org_1").await;

    // The client gives up once the write is committed (as hyper drops the future of a
    // request whose connection closed).
    let mut mutation = Box::pin(add(&api, "org_1", "written", "linger"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        tokio::select! {
            _ = &mut mutation => panic!("the handler lingers for 30 s"),
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
        if db.committed.load(Ordering::SeqCst) == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never committed");
    }
    drop(mutation); // the future itself: the client is gone

    let next = fetch(&api, "/api/items", "org_1").await;
    assert_ne!(next.x_cache(), "HIT", "{:?}", next.headers);
    assert_eq!(items(&next), vec!["written"]);

    // The background delivery lands at once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while cache.stats().pending_invalidations > 0 || cache.stats().totals.invalidations == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never delivered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Another instance reads the write too.
    if let Some(server) = backend.server() {
        let other = Cache::new(backend.config()).await.unwrap();
        let other_app = app(&other, db.clone());
        let read = fetch(&other_app, "/api/items", "org_1").await;
        assert_eq!(items(&read), vec!["written"]);
        assert!(!server.keys("api-cache:{t.org_1}:g:items").is_empty());
    }
    assert_eq!(cache.stats().totals.invalidations, 1);
}
all_backends!(a_client_that_hangs_up_still_invalidates, client_hangs_up);

/// Post/redirect/get and a write that then fails invalidate; a client error does not.
async fn outcomes_that_invalidate(backend: TestBackend) {
    let cache = backend.cache().await;
    let db = Db::default();
    let app = app(&cache, db.clone());
    for (then, status, name) in [
        ("303", StatusCode::SEE_OTHER, "redirected"),
        (
            "500",
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed after commit",
        ),
    ] {
        fetch(&app, "/api/items", "org_1").await;
        wait_for_hit(&app, "/api/items", "org_1").await;
        let reply = add(&app, "org_1", name, then).await;
        assert_eq!(reply.status, status);
        assert_eq!(reply.header("x-cache-invalidated"), "items");
        let read = fetch(&app, "/api/items", "org_1").await;
        assert_eq!(read.x_cache(), "MISS", "after {then}");
        assert!(items(&read).contains(&name.to_owned()), "after {then}");
    }
    wait_for_hit(&app, "/api/items", "org_1").await;
    let refused = add(&app, "org_1", "refused", "400").await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.header("x-cache-invalidated"), "");
    assert_eq!(fetch(&app, "/api/items", "org_1").await.x_cache(), "HIT");
    assert_eq!(cache.stats().totals.invalidations, 2);
}
all_backends!(
    redirects_and_server_errors_invalidate,
    outcomes_that_invalidate
);

/// `cache_only_success = false` stores a 404 or a redirect, but never a response that
/// depends on the request rather than the resource.
async fn request_dependent_statuses(backend: TestBackend) {
    let cache = backend.cache().await;
    let db = Db::default();
    let app = app(&cache, db.clone());
    for code in [206, 304, 401, 403, 407, 429, 500, 503] {
        let uri = format!("/api/status?status={code}");
        let before = db.runs("status_route");
        for _ in 0..2 {
            let reply = fetch(&app, &uri, "org_1").await;
            assert_eq!(reply.status.as_u16(), code);
            assert_eq!(reply.x_cache(), "MISS", "{code}");
            assert_eq!(reply.header("cache-control"), "", "{code}");
        }
        assert_eq!(db.runs("status_route") - before, 2, "{code} never stored");
    }
    for code in [200, 301, 404] {
        let uri = format!("/api/status?status={code}");
        fetch(&app, &uri, "org_1").await;
        wait_for_hit(&app, &uri, "org_1").await;
    }
}
all_backends!(
    never_stores_request_dependent_statuses,
    request_dependent_statuses
);

/// Under `nest("/projects/{id}", ...)` the handler sees `/contacts`; the key must not.
async fn nested_routers(backend: TestBackend) {
    let cache = backend.cache().await;
    let db = Db::default();
    let app = app(&cache, db.clone());
    let one = fetch(&app, "/projects/1/contacts", "org_1").await;
    wait_for_hit(&app, "/projects/1/contacts", "org_1").await;
    let two = fetch(&app, "/projects/2/contacts", "org_1").await;
    assert_eq!(one.text(), "contacts of project 1");
    assert_eq!(two.text(), "contacts of project 2");
    assert_eq!(two.x_cache(), "MISS");
}
all_backends!(nested_routers_key_on_the_original_uri, nested_routers);

/// One header line `a,b` and two lines `a` and `b` are different requests.
async fn vary_header_lines(backend: TestBackend) {
    let cache = backend.cache().await;
    let db = Db::default();
    let app = app(&cache, db.clone());
    let mut joined = get_req("/api/flags", Some("org_1"));
    joined
        .headers_mut()
        .append("x-flags", "a,b".parse().unwrap());
    let joined = send(&app, joined).await;
    assert_eq!(joined.json(), json!(["a,b"]));
    let mut repeat = get_req("/api/flags", Some("org_1"));
    repeat.headers_mut().append("x-flags", "a".parse().unwrap());
    repeat.headers_mut().append("x-flags", "b".parse().unwrap());
    let two_lines = send(&app, repeat).await;
    assert_eq!(two_lines.x_cache(), "MISS");
    assert_eq!(two_lines.json(), json!(["a", "b"]));
    // An empty line and no line at all differ too.
    let mut empty = get_req("/api/flags", Some("org_1"));
    empty.headers_mut().append("x-flags", "".parse().unwrap());
    assert_eq!(send(&app, empty).await.json(), json!([""]));
    assert_eq!(fetch(&app, "/api/flags", "org_1").await.json(), json!([]));
    assert_eq!(db.runs("flags"), 4);
}
all_backends!(vary_header_lines_are_length_prefixed, vary_header_lines);

/// `scope = global, vary = user`: user ids are unique within a tenant only.
async fn global_data_per_user(backend: TestBackend) {
    let cache = backend.cache().await;
    let db = Db::default();
    let app = app(&cache, db.clone());
    let as_user = |tenant: &str| {
        let mut request = get_req("/api/preferences", Some(tenant));
        request
            .headers_mut()
            .insert("x-user", "user_1".parse().unwrap());
        request
    };
    let first = send(&app, as_user("org_1")).await;
    assert_eq!(first.text(), "preferences of user user_1 of org_1");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while send(&app, as_user("org_1")).await.x_cache() != "HIT" {
        assert!(tokio::time::Instant::now() < deadline, "never stored");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let other_tenant = send(&app, as_user("org_2")).await;
    assert_eq!(other_tenant.x_cache(), "MISS");
    assert_eq!(other_tenant.text(), "preferences of user user_1 of org_2");
}
all_backends!(
    global_data_per_user_keys_on_the_tenant_too,
    global_data_per_user
);

/// A router without `cache.extension()` (and no installed cache) serves uncached, loudly,
/// rather than through a second cache nobody invalidates.
#[tokio::test]
async fn a_router_without_the_layer_bypasses() {
    let db = Db::default();
    let app = routes(db.clone());
    for _ in 0..2 {
        let reply = fetch(&app, "/api/items", "org_1").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.x_cache(), "BYPASS");
        assert_eq!(reply.header("cache-control"), "");
    }
    assert_eq!(db.runs("list_items"), 2);
    let created = add(&app, "org_1", "x", "201").await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.header("x-cache-invalidated"), "");
    assert_eq!(items(&fetch(&app, "/api/items", "org_1").await), vec!["x"]);
}

/// The same over a real connection: hyper drops the handler's future when the client
/// closes its socket, and the invalidation still happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_still_invalidates() {
    use tokio::io::AsyncWriteExt;

    let backend = TestBackend::redis();
    let cache = backend.cache().await;
    let db = Db::default();
    *db.linger.lock().unwrap() = Duration::from_secs(30);
    let api = app(&cache, db.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let api_for_server = api.clone();
    let server = tokio::spawn(async move { axum::serve(listener, api_for_server).await });

    fetch(&api, "/api/items", "org_1").await;
    wait_for_hit(&api, "/api/items", "org_1").await;

    let body = r#"{"name":"over tcp"}"#;
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "POST /api/items?then=linger HTTP/1.1\r\nhost: localhost\r\nx-tenant: org_1\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while db.committed.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never committed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(socket);

    // Within a deadline far below the handler's 30 s: the dropped future invalidated.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while cache.stats().totals.invalidations == 0 || cache.stats().pending_invalidations > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed connection's mutation never invalidated"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let read = fetch(&api, "/api/items", "org_1").await;
    assert_eq!(read.x_cache(), "MISS");
    assert_eq!(items(&read), vec!["over tcp"]);
    server.abort();
}
