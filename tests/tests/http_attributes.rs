//! `#[cached]` and `#[invalidates]` through a real axum Router (issue 3), against a
//! private redis-server, the in-memory backend and a Redis Cluster: the reference manual test, tenant and
//! user isolation, query normalization, what is never stored, failed mutations, tag
//! fan-out, the run-time per-resource switch, bypasses, and byte-identical hits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post as post_route};
use axum::{Json, Router};
use cache_runtime::{cached, invalidates, Cache, CacheScope};
use cache_tests::all_backends;
use cache_tests::backends::TestBackend;
use cache_tests::http::{get as get_req, post, send, Reply};
use serde_json::{json, Value};

/// A tiny "database": templates per tenant, and how often each handler ran.
#[derive(Clone, Default)]
struct Db {
    templates: Arc<Mutex<HashMap<String, Vec<String>>>>,
    runs: Arc<Mutex<HashMap<&'static str, usize>>>,
}

impl Db {
    fn ran(&self, handler: &'static str) {
        *self.runs.lock().unwrap().entry(handler).or_default() += 1;
    }

    fn runs(&self, handler: &'static str) -> usize {
        self.runs.lock().unwrap().get(handler).copied().unwrap_or(0)
    }
}

fn tenant(headers: &HeaderMap) -> String {
    headers
        .get("x-tenant")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[cached(resource = "templates", ttl = 1800)]
async fn list_templates(
    State(db): State<Db>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, StatusCode> {
    db.ran("list_templates");
    if query.iter().any(|(k, _)| k == "missing") {
        return Err(StatusCode::NOT_FOUND);
    }
    if query.iter().any(|(k, _)| k == "explode") {
        return Err(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let org = tenant(&headers);
    let items = db
        .templates
        .lock()
        .unwrap()
        .get(&org)
        .cloned()
        .unwrap_or_default();
    Ok(Json(
        json!({ "organization_id": org, "templates": items, "query": query }),
    ))
}

#[invalidates("templates")]
async fn create_template(
    State(db): State<Db>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<Value>), (StatusCode, Json<Value>)> {
    db.ran("create_template");
    let Some(name) = body.get("name").and_then(Value::as_str) else {
        return Err((
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "name is required"})),
        ));
    };
    let org = tenant(&headers);
    db.templates
        .lock()
        .unwrap()
        .entry(org.clone())
        .or_default()
        .push(name.to_owned());
    Ok((
        StatusCode::CREATED,
        Json(json!({ "organization_id": org, "name": name })),
    ))
}

#[cached(resource = "analytics", ttl = 600, tags = ["templates", "contacts"])]
async fn dashboard(State(db): State<Db>, headers: HeaderMap) -> Json<Value> {
    db.ran("dashboard");
    let org = tenant(&headers);
    let count = db.templates.lock().unwrap().get(&org).map_or(0, Vec::len);
    Json(json!({ "organization_id": org, "template_count": count }))
}

#[cached(resource = "profiles", ttl = 300, vary = user)]
async fn profile(State(db): State<Db>, headers: HeaderMap) -> String {
    db.ran("profile");
    format!(
        "profile of {}",
        headers
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
    )
}

/// A body that is not what a re-serialization would produce, with its own content type.
#[cached(resource = "exports", ttl = 60)]
async fn export(State(db): State<Db>) -> impl IntoResponse {
    db.ran("export");
    (
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        "id ,  name\n1 ,\t\"a\"\n",
    )
}

#[cached(resource = "sessions", ttl = 60)]
async fn with_cookie(State(db): State<Db>) -> Response {
    db.ran("with_cookie");
    ([(header::SET_COOKIE, "session=abc")], "personal").into_response()
}

#[cached(resource = "sessions", ttl = 60)]
async fn no_store(State(db): State<Db>) -> Response {
    db.ran("no_store");
    ([(header::CACHE_CONTROL, "no-store")], "volatile").into_response()
}

#[cached(resource = "countries", ttl = 3600, scope = global)]
async fn countries(State(db): State<Db>) -> &'static str {
    db.ran("countries");
    "[\"NZ\",\"PT\"]"
}

/// Answers in the language asked for: the response depends on a request header.
#[cached(resource = "greetings", ttl = 60, vary = header("accept-language"))]
async fn greeting(State(db): State<Db>, headers: HeaderMap) -> String {
    db.ran("greeting");
    match headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
    {
        Some("pt") => "olá".to_owned(),
        Some(language) => format!("hello ({language})"),
        None => "hello".to_owned(),
    }
}

/// Never cached: `skip_cache`, as in the reference configuration.
#[cached(resource = "news", ttl = 60, skip_cache)]
async fn news(State(db): State<Db>) -> String {
    db.ran("news");
    format!("news #{}", db.runs("news"))
}

#[invalidates("templtes")]
async fn typo_mutation() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn scope_from_headers(mut req: Request, next: Next) -> Response {
    let tenant = req
        .headers()
        .get("x-tenant")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let user = req
        .headers()
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(tenant) = tenant {
        let mut scope = CacheScope::new(tenant);
        if let Some(user) = user {
            scope = scope.with_user(user);
        }
        req.extensions_mut().insert(scope);
    }
    next.run(req).await
}

fn app(cache: &Cache, db: Db) -> Router {
    Router::new()
        .route("/api/templates", get(list_templates).post(create_template))
        .route("/api/analytics/dashboard", get(dashboard))
        .route("/api/profiles/me", get(profile))
        .route("/api/export", get(export))
        .route("/api/cookie", get(with_cookie))
        .route("/api/no-store", get(no_store))
        .route("/api/countries", get(countries))
        .route("/api/greeting", get(greeting))
        .route("/api/news", get(news))
        .route("/api/typo", post_route(typo_mutation))
        .with_state(db)
        .layer(middleware::from_fn(scope_from_headers))
        .layer(cache.extension())
}

fn as_user(
    mut request: axum::http::Request<axum::body::Body>,
    user: &str,
) -> axum::http::Request<axum::body::Body> {
    request
        .headers_mut()
        .insert("x-user", user.parse().unwrap());
    request
}

async fn fetch(app: &Router, uri: &str, tenant: &str) -> Reply {
    send(app, get_req(uri, Some(tenant))).await
}

/// The reference's manual test: MISS, HIT with age, POST 201, MISS with the new item.
async fn reference_manual_flow(backend: TestBackend) {
    let cache = backend.cache().await;
    let db = Db::default();
    let app = app(&cache, db.clone());

    let first = fetch(&app, "/api/templates", "org_1").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(first.header("cache-control"), "private, no-cache");

    let second = fetch(&app, "/api/templates", "org_1").await;
    assert_eq!(second.x_cache(), "HIT");
    assert!(
        second.header("x-cache-age").parse::<u64>().is_ok(),
        "X-Cache-Age: {:?}",
        second.headers
    );
    assert_eq!(second.header("cache-control"), "private, no-cache");
    assert_eq!(second.body, first.body, "a hit is byte-identical");
    assert_eq!(second.header("content-type"), "application/json");
    assert_eq!(
        db.runs("list_templates"),
        1,
        "the handler does not run on a hit"
    );

    let created = send(
        &app,
        post("/api/templates", Some("org_1"), json!({"name": "welcome"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.header("x-cache-invalidated"), "templates");

    let third = fetch(&app, "/api/templates", "org_1").await;
    assert_eq!(
        third.x_cache(),
        "MISS",
        "read-your-writes: the next GET is fresh"
    );
    assert_eq!(third.json()["templates"], json!(["welcome"]));
    assert_eq!(db.runs("list_templates"), 2);
}
all_backends!(reference_manual_flow_works, reference_manual_flow);

async fn tenants_never_see_each_other(backend: TestBackend) {
    let cache = backend.cache().await;
    let db = Db::default();
    db.templates
        .lock()
        .unwrap()
        .insert("org_a".into(), vec!["a-secret".into()]);
    db.templates
        .lock()
        .unwrap()
        .insert("org_b".into(), vec!["b-secret".into()]);
    let app = app(&cache, db.clone());
    for _ in 0..2 {
        for org in ["org_a", "org_b"] {
            let reply = fetch(&app, "/api/templates?page=1", org).await;
            assert_eq!(
                reply.json()["organization_id"],
                org,
                "{org} got {}",
                reply.text()
            );
        }
    }
    assert_eq!(
        fetch(&app, "/api/templates?page=1", "org_b")
            .await
            .x_cache(),
        "HIT"
    );
    // A write of org_a leaves org_b's entry cached.
    send(
        &app,
        post("/api/templates", Some("org_a"), json!({"name": "n"})),
    )
    .await;
    assert_eq!(
        fetch(&app, "/api/templates?page=1", "org_b")
            .await
            .x_cache(),
        "HIT"
    );
    assert_eq!(
        fetch(&app, "/api/templates?page=1", "org_a")
            .await
            .x_cache(),
        "MISS"
    );
}
all_backends!(
    two_tenants_never_see_each_others_data,
    tenants_never_see_each_other
);

async fn vary_user_separates_users(backend: TestBackend) {
    let cache = backend.cache().await;
    let db = Db::default();
    let app = app(&cache, db.clone());
    let one = send(
        &app,
        as_user(get_req("/api/profiles/me", Some("org_1")), "user_1"),
    )
    .await;
    let two = send(
        &app,
        as_user(get_req("/api/profiles/me", Some("org_1")), "user_2"),
    )
    .await;
    assert_eq!(one.text(), "profile of user_1");
    assert_eq!(two.text(), "profile of user_2");
    let one_again = send(
        &app,
        as_user(get_req("/api/profiles/me", Some("org_1")), "user_1"),
    )
    .await;
    assert_eq!(
        (one_again.x_cache(), one_again.text().as_str()),
        ("HIT", "profile of user_1")
    );
    // No user in the scope: served, never cached.
    let anonymous = fetch(&app, "/api/profiles/me", "org_1").await;
    assert_eq!(anonymous.x_cache(), "BYPASS");
}
all_backends!(
    vary_user_separates_users_and_bypasses_without_one,
    vary_user_separates_users
);

async fn query_normalization(backend: TestBackend) {
    let cache = backend.cache().await;
    let db = Db::default();
    let app = app(&cache, db.clone());
    assert_eq!(
        fetch(&app, "/api/templates?category=sales&page=2", "org_1")
            .await
            .x_cache(),
        "MISS"
    );
    assert_eq!(
        fetch(&app, "/api/templates?page=2&category=sales", "org_1")
            .await
            .x_cache(),
        "HIT"
    );
    assert_eq!(
        fetch(&app, "/api/templates?page=2&category=sale%73", "org_1")
            .await
            .x_cache(),
        "HIT"
    );
    assert_eq!(
        fetch(&app, "/api/templates?page=3&category=sales", "org_1")
            .await
            .x_cache(),
        "MISS"
    );
    assert_eq!(
        fetch(&app, "/api/templates?page=2&category=sales&extra", "org_1")
            .await
            .x_cache(),
        "MISS"
    );
}
all_backends!(
    same_query_in_another_order_hits_and_a_different_one_misses,
    query_normalization
);

async fn errors_are_never_cached(backend: TestBackend) {
    let cache = backend.cache().await;
    let db = Db::default();
    let app = app(&cache, db.clone());
    for _ in 0..2 {
        let reply = fetch(&app, "/api/templates?missing=1", "org_1").await;
        assert_eq!(
            (reply.status, reply.x_cache()),
            (StatusCode::NOT_FOUND, "MISS")
        );
        assert_eq!(
            reply.header("cache-control"),
            "",
            "an error gets no caching header"
        );
        let reply = fetch(&app, "/api/templates?explode=1", "org_1").await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(
        db.runs("list_templates"),
        4,
        "every error response ran the handler"
    );
    for path in [
        "/api/cookie",
        "/api/no-store",
        "/api/cookie",
        "/api/no-store",
    ] {
        assert_eq!(fetch(&app, path, "org_1").await.x_cache(), "MISS");
    }
    assert_eq!(
        db.runs("with_cookie"),
        2,
        "Set-Cookie responses are not stored"
    );
    assert_eq!(db.runs("no_store"), 2, "no-store responses are not stored");
}
all_backends!(
    errors_cookies_and_no_store_are_never_cached,
    errors_are_never_cached
);

async fn failed_mutation_invalidates_nothing(backend: TestBackend) {
    let cache = backend.cache().await;
    let db = Db::default();
    let app = app(&cache, db.clone());
    fetch(&app, "/api/templates", "org_1").await;
    let rejected = send(
        &app,
        post("/api/templates", Some("org_1"), json!({"title": "no name"})),
    )
    .await;
    assert_eq!(rejected.status, StatusCode::BAD_REQUEST);
    assert_eq!(rejected.header("x-cache-invalidated"), "");
    assert_eq!(
        fetch(&app, "/api/templates", "org_1").await.x_cache(),
        "HIT"
    );
    assert_eq!(cache.stats().totals.invalidations, 0);
}
all_backends!(
    a_failed_mutation_invalidates_nothing,
    failed_mutation_invalidates_nothing
);

async fn tags_fan_out(backend: TestBackend) {
    let cache = backend.cache().await;
    let db = Db::default();
    let app = app(&cache, db.clone());
    assert_eq!(
        fetch(&app, "/api/analytics/dashboard", "org_1")
            .await
            .json()["template_count"],
        0
    );
    assert_eq!(
        fetch(&app, "/api/analytics/dashboard", "org_1")
            .await
            .x_cache(),
        "HIT"
    );
    send(
        &app,
        post("/api/templates", Some("org_1"), json!({"name": "t"})),
    )
    .await;
    let after = fetch(&app, "/api/analytics/dashboard", "org_1").await;
    assert_eq!(
        after.x_cache(),
        "MISS",
        "invalidating a tag drops the dashboard"
    );
    assert_eq!(after.json()["template_count"], 1);
}
all_backends!(
    invalidating_templates_drops_the_tagged_dashboard,
    tags_fan_out
);

async fn resource_switch(backend: TestBackend) {
    let cache = backend.cache().await;
    let db = Db::default();
    let app = app(&cache, db.clone());
    fetch(&app, "/api/templates", "org_1").await;
    fetch(&app, "/api/analytics/dashboard", "org_1").await;
    cache.set_resource_enabled("templates", false);
    for _ in 0..2 {
        assert_eq!(
            fetch(&app, "/api/templates", "org_1").await.x_cache(),
            "BYPASS"
        );
    }
    assert_eq!(
        fetch(&app, "/api/analytics/dashboard", "org_1")
            .await
            .x_cache(),
        "HIT",
        "other routes keep caching"
    );
    // Writes while switched off are still invalidated, so switching back on is fresh.
    send(
        &app,
        post(
            "/api/templates",
            Some("org_1"),
            json!({"name": "while-off"}),
        ),
    )
    .await;
    cache.set_resource_enabled("templates", true);
    let back = fetch(&app, "/api/templates", "org_1").await;
    assert_eq!(back.x_cache(), "MISS");
    assert_eq!(back.json()["templates"], json!(["while-off"]));
    assert_eq!(db.runs("list_templates"), 4);
    cache.set_enabled(false);
    assert_eq!(
        fetch(&app, "/api/analytics/dashboard", "org_1")
            .await
            .x_cache(),
        "BYPASS"
    );
}
all_backends!(
    the_per_resource_switch_turns_one_route_off_at_run_time,
    resource_switch
);

async fn bypass_and_global(backend: TestBackend) {
    let cache = backend.cache().await;
    let db = Db::default();
    let app = app(&cache, db.clone());
    for _ in 0..2 {
        let unscoped = send(&app, get_req("/api/templates", None)).await;
        assert_eq!(
            (unscoped.status, unscoped.x_cache()),
            (StatusCode::OK, "BYPASS")
        );
    }
    assert_eq!(db.runs("list_templates"), 2, "nothing unscoped is cached");
    // `scope = global` is shared by every tenant and needs no scope at all.
    assert_eq!(
        fetch(&app, "/api/countries", "org_1").await.x_cache(),
        "MISS"
    );
    assert_eq!(
        fetch(&app, "/api/countries", "org_2").await.x_cache(),
        "HIT"
    );
    assert_eq!(
        send(&app, get_req("/api/countries", None)).await.x_cache(),
        "HIT"
    );
    assert_eq!(db.runs("countries"), 1);
}
all_backends!(
    unscoped_requests_bypass_and_global_routes_are_shared,
    bypass_and_global
);

async fn byte_identical(backend: TestBackend) {
    let cache = backend.cache().await;
    let db = Db::default();
    let app = app(&cache, db.clone());
    let first = fetch(&app, "/api/export", "org_1").await;
    let second = fetch(&app, "/api/export", "org_1").await;
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(second.body, first.body);
    assert_eq!(&second.body[..], b"id ,  name\n1 ,\t\"a\"\n");
    assert_eq!(second.header("content-type"), "text/csv; charset=utf-8");
}
all_backends!(
    hits_replay_the_stored_bytes_and_content_type,
    byte_identical
);

fn head_req(uri: &str, tenant: &str) -> axum::http::Request<axum::body::Body> {
    axum::http::Request::head(uri)
        .header("x-tenant", tenant)
        .body(axum::body::Body::empty())
        .unwrap()
}

/// Every header but the age, which may have ticked between two hits.
fn headers_but_age(reply: &Reply) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = reply
        .headers
        .iter()
        .filter(|(name, _)| *name != "x-cache-age")
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    headers
}

/// `HEAD` is served from the `GET` entry (HEAD keys as GET): the same status and headers
/// as a `GET` hit, no body; and a `HEAD` that misses stores the entry a `GET` then hits,
/// body included.
async fn head_from_get(backend: TestBackend) {
    let cache = backend.cache().await;
    let db = Db::default();
    let app = app(&cache, db.clone());
    assert_eq!(fetch(&app, "/api/export", "org_1").await.x_cache(), "MISS");
    let get_hit = fetch(&app, "/api/export", "org_1").await;
    assert_eq!(get_hit.x_cache(), "HIT");
    let head_hit = send(&app, head_req("/api/export", "org_1")).await;
    assert_eq!(head_hit.status, get_hit.status);
    assert_eq!(head_hit.x_cache(), "HIT");
    assert_eq!(headers_but_age(&head_hit), headers_but_age(&get_hit));
    assert!(head_hit.body.is_empty(), "a HEAD answered a body");
    assert_eq!(db.runs("export"), 1);

    let head_miss = send(&app, head_req("/api/templates", "org_1")).await;
    assert_eq!(head_miss.x_cache(), "MISS");
    assert!(head_miss.body.is_empty(), "a HEAD answered a body");
    let get_after = fetch(&app, "/api/templates", "org_1").await;
    assert_eq!(get_after.x_cache(), "HIT");
    assert_eq!(get_after.json()["organization_id"], "org_1");
    assert_eq!(db.runs("list_templates"), 1);
}
all_backends!(head_is_served_from_the_get_entry, head_from_get);

/// `vary = header("accept-language")`: one entry per value of the header (and one for
/// its absence), each hit by requests with the same value only.
async fn vary_header(backend: TestBackend) {
    let cache = backend.cache().await;
    let db = Db::default();
    let app = app(&cache, db.clone());
    let ask = |language: Option<&'static str>| {
        let mut request = get_req("/api/greeting", Some("org_1"));
        if let Some(language) = language {
            request
                .headers_mut()
                .insert(header::ACCEPT_LANGUAGE, language.parse().unwrap());
        }
        send(&app, request)
    };
    for (language, answer) in [
        (Some("en"), "hello (en)"),
        (Some("pt"), "olá"),
        (None, "hello"),
        (Some(""), "hello ()"),
    ] {
        let first = ask(language).await;
        assert_eq!((first.x_cache(), first.text().as_str()), ("MISS", answer));
        let again = ask(language).await;
        assert_eq!((again.x_cache(), again.text().as_str()), ("HIT", answer));
    }
    assert_eq!(db.runs("greeting"), 4, "one run per language");
    let en = ask(Some("en")).await;
    assert_eq!((en.x_cache(), en.text().as_str()), ("HIT", "hello (en)"));
}
all_backends!(vary_header_keeps_one_entry_per_value, vary_header);

/// `skip_cache`: the route answers `BYPASS`, runs its handler every time and stores
/// nothing.
async fn skip_cache(backend: TestBackend) {
    let cache = backend.cache().await;
    let db = Db::default();
    let app = app(&cache, db.clone());
    for run in 1..=3 {
        let reply = fetch(&app, "/api/news", "org_1").await;
        assert_eq!(reply.x_cache(), "BYPASS");
        assert_eq!(reply.text(), format!("news #{run}"));
    }
    assert_eq!(db.runs("news"), 3);
    let totals = cache.stats().totals;
    assert_eq!((totals.bypasses, totals.misses, totals.stores), (3, 0, 0));
    if let Some(server) = backend.server() {
        assert_eq!(server.keys("*"), Vec::<String>::new(), "nothing in Redis");
    }
}
all_backends!(skip_cache_never_looks_up_or_stores, skip_cache);

#[tokio::test]
async fn non_get_methods_bypass() {
    let backend = TestBackend::Memory;
    let cache = backend.cache().await;
    let app = Router::new()
        .route("/x", post_route(list_templates))
        .with_state(Db::default())
        .layer(middleware::from_fn(scope_from_headers))
        .layer(cache.extension());
    let reply = send(&app, post("/x", Some("org_1"), json!({}))).await;
    assert_eq!(reply.x_cache(), "BYPASS");
}

#[tokio::test]
async fn the_registry_check_reports_wrong_resource_names() {
    let problems = cache_runtime::registry::check_resources();
    let rendered: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        rendered,
        vec![
            "#[invalidates(\"templtes\")] on http_attributes::typo_mutation matches no #[cached] resource or tag".to_owned(),
            "resource \"countries\" (http_attributes::countries) is cached for 3600s and nothing invalidates it".to_owned(),
        ],
        "{problems:#?}"
    );
}

/// A service-layer function cached by its arguments, through the process-wide cache.
#[cached(resource = "reports", ttl = 60, key = (org_id, range), scope = org_id)]
async fn monthly_report(org_id: i64, range: &str, runs: &AtomicUsize) -> Result<Vec<u32>, String> {
    runs.fetch_add(1, Ordering::SeqCst);
    if range == "bad" {
        return Err("unknown range".into());
    }
    Ok(vec![org_id as u32, range.len() as u32])
}

#[tokio::test]
async fn plain_functions_are_cached_by_their_arguments() {
    let runs = AtomicUsize::new(0);
    assert_eq!(monthly_report(7, "30d", &runs).await, Ok(vec![7, 3]));
    assert_eq!(monthly_report(7, "30d", &runs).await, Ok(vec![7, 3]));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the second call is served from the cache"
    );
    assert_eq!(monthly_report(8, "30d", &runs).await, Ok(vec![8, 3]));
    assert_eq!(monthly_report(7, "7d", &runs).await, Ok(vec![7, 2]));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "other arguments are other entries"
    );
    assert!(monthly_report(7, "bad", &runs).await.is_err());
    assert!(monthly_report(7, "bad", &runs).await.is_err());
    assert_eq!(runs.load(Ordering::SeqCst), 5, "errors are not cached");
    cache_runtime::invalidate::resources("7", &["reports"])
        .await
        .unwrap();
    monthly_report(7, "30d", &runs).await.unwrap();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        6,
        "invalidation reaches plain functions"
    );
}
