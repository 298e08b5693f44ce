//! Shadow mode and sampled verification (issue 15), against a private redis-server and
//! the in-memory backend: a mutation that forgets to invalidate is caught (mismatch
//! count, the WARN line with its key) while shadowed responses stay fresh and look
//! uncached; the same with sampled verification in `on`; a correct app shows no mismatch
//! over a randomized run with concurrent writes; routes whose output changes on every
//! call opt out; background work never delays a response and never queues.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post as post_route};
use axum::{Json, Router};
use cache_runtime::early_refresh::RandomSource;
use cache_runtime::stats::CounterSnapshot;
use cache_runtime::{cached, invalidates, Cache, CacheConfig, CacheScope, ResourceMode};
use cache_tests::backends::TestBackend;
use cache_tests::both_backends;
use cache_tests::http::{get as get_req, post, send, Reply};
use serde_json::{json, Value};
use tracing::field::{Field, Visit};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// Contacts per tenant, and how often each handler ran.
#[derive(Clone, Default)]
struct Db {
    contacts: Arc<Mutex<HashMap<String, Vec<String>>>>,
    runs: Arc<Mutex<HashMap<&'static str, usize>>>,
    /// Calls of `clock` and `stamp`, which change on every call.
    ticks: Arc<AtomicUsize>,
    /// `slow` sleeps this long on every call after the first.
    slow_after_first: Arc<Mutex<Duration>>,
}

impl Db {
    fn ran(&self, handler: &'static str) -> usize {
        let mut runs = self.runs.lock().unwrap();
        let count = runs.entry(handler).or_default();
        *count += 1;
        *count
    }

    fn runs(&self, handler: &'static str) -> usize {
        self.runs.lock().unwrap().get(handler).copied().unwrap_or(0)
    }

    fn contacts_of(&self, org: &str) -> Vec<String> {
        self.contacts
            .lock()
            .unwrap()
            .get(org)
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

#[cached(resource = "contacts", ttl = 300)]
async fn list_contacts(State(db): State<Db>, headers: HeaderMap) -> Json<Value> {
    db.ran("list_contacts");
    let org = tenant(&headers);
    let contacts: Vec<Value> = db
        .contacts_of(&org)
        .into_iter()
        .map(|name| json!({ "name": name }))
        .collect();
    Json(json!({ "organization_id": org, "contacts": contacts }))
}

/// Correct: adds a contact and invalidates `contacts`.
#[invalidates("contacts")]
async fn add_contact(
    State(db): State<Db>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let name = body["name"].as_str().unwrap_or("?").to_owned();
    db.contacts
        .lock()
        .unwrap()
        .entry(tenant(&headers))
        .or_default()
        .push(name);
    Json(json!({ "ok": true }))
}

/// The mistake: renames the first contact and names the wrong resource.
#[invalidates("templates")]
async fn rename_first_contact(
    State(db): State<Db>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let name = body["name"].as_str().unwrap_or("?").to_owned();
    if let Some(first) = db
        .contacts
        .lock()
        .unwrap()
        .get_mut(&tenant(&headers))
        .and_then(|list| list.first_mut())
    {
        *first = name;
    }
    Json(json!({ "ok": true }))
}

/// Changes on every call in a named field only.
#[cached(resource = "clock", ttl = 300, verify_ignore = ["generated_at"])]
async fn clock(State(db): State<Db>) -> Json<Value> {
    let tick = db.ticks.fetch_add(1, Ordering::SeqCst);
    Json(json!({ "generated_at": tick, "report": { "rows": 3 } }))
}

/// Changes on every call, all of it: never compared.
#[cached(resource = "stamps", ttl = 300, verify = false)]
async fn stamp(State(db): State<Db>) -> String {
    format!("request id {}", db.ticks.fetch_add(1, Ordering::SeqCst))
}

/// The same answer every time, slowly after the first call.
#[cached(resource = "reports", ttl = 300)]
async fn slow(State(db): State<Db>) -> &'static str {
    if db.ran("slow") > 1 {
        let pause = *db.slow_after_first.lock().unwrap();
        tokio::time::sleep(pause).await;
    }
    "the report"
}

async fn scope_from_headers(mut req: Request, next: Next) -> Response {
    let org = tenant(req.headers());
    if !org.is_empty() {
        req.extensions_mut().insert(CacheScope::new(org));
    }
    next.run(req).await
}

fn app(cache: &Cache, db: Db) -> Router {
    Router::new()
        .route("/contacts", get(list_contacts).post(add_contact))
        .route("/contacts/rename", post_route(rename_first_contact))
        .route("/clock", get(clock))
        .route("/stamp", get(stamp))
        .route("/slow", get(slow))
        .with_state(db)
        .layer(middleware::from_fn(scope_from_headers))
        .layer(cache.extension())
}

fn counters(cache: &Cache, resource: &str) -> CounterSnapshot {
    cache
        .stats()
        .resources
        .get(resource)
        .map(|r| r.counters)
        .unwrap_or_default()
}

/// Waits (polling, with a deadline) until `condition` holds of `resource`'s counters.
async fn wait_counters(
    cache: &Cache,
    resource: &str,
    what: &str,
    condition: impl Fn(&CounterSnapshot) -> bool,
) -> CounterSnapshot {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = counters(cache, resource);
        if condition(&now) {
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (polling, with a deadline) until no shadow or verification run is in flight.
async fn wait_idle(cache: &Cache) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while cache.shadow_runs_in_flight() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "background runs never finished"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Lets spawned tasks run on a current-thread runtime (paused clock tests).
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// A tenant of this test run's own: WARN lines are collected for the whole binary, and
/// the runs on both backends share the key prefix.
fn fresh_tenant(stem: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{stem}_{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn names(reply: &Reply) -> Vec<String> {
    reply.json()["contacts"]
        .as_array()
        .expect("contacts")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or("").to_owned())
        .collect()
}

// ---- the WARN line -------------------------------------------------------------------

/// Every WARN event of target `api_cache`, as its fields, for the whole test binary (the
/// shadow run logs from spawned tasks, on any worker thread).
fn warnings() -> &'static Mutex<Vec<HashMap<String, String>>> {
    static WARNINGS: OnceLock<Mutex<Vec<HashMap<String, String>>>> = OnceLock::new();
    static INSTALLED: OnceLock<()> = OnceLock::new();
    let warnings = WARNINGS.get_or_init(Mutex::default);
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(WarnRecorder);
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
    });
    warnings
}

struct WarnRecorder;

struct Fields(HashMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber> Layer<S> for WarnRecorder {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if meta.target() == "api_cache" && *meta.level() == tracing::Level::WARN {
            let mut fields = Fields(HashMap::new());
            event.record(&mut fields);
            warnings().lock().unwrap().push(fields.0);
        }
    }
}

/// The WARN lines about `key`.
fn warnings_about(key: &str) -> Vec<HashMap<String, String>> {
    warnings()
        .lock()
        .unwrap()
        .iter()
        .filter(|w| w.get("key").map(String::as_str) == Some(key))
        .cloned()
        .collect()
}

// ---- shadow mode ---------------------------------------------------------------------

async fn shadow_catches_a_forgotten_invalidation(backend: TestBackend) {
    warnings();
    let cache = Cache::new(
        backend
            .config()
            .with_resource_mode("contacts", ResourceMode::Shadow),
    )
    .await
    .unwrap();
    let org = fresh_tenant("org_a");
    let org = org.as_str();
    let db = Db::default();
    db.contacts
        .lock()
        .unwrap()
        .insert(org.into(), vec!["Ada".into(), "Grace".into()]);
    let app = app(&cache, db.clone());

    // Served by the handler, and looking uncached: no ETag or Cache-Control of the
    // cache's making.
    let first = send(&app, get_req("/contacts", Some(org))).await;
    assert_eq!(first.x_cache(), "BYPASS");
    assert_eq!(first.header("etag"), "");
    assert_eq!(first.header("cache-control"), "");
    assert_eq!(names(&first), ["Ada", "Grace"]);
    // The shadow run stored it as `on` would have.
    wait_counters(&cache, "contacts", "the would-be miss stored", |c| {
        c.would_be_misses == 1 && c.stores == 1
    })
    .await;

    let second = send(&app, get_req("/contacts", Some(org))).await;
    assert_eq!(second.x_cache(), "BYPASS");
    assert_eq!(db.runs("list_contacts"), 2, "shadow never serves an entry");
    let counted = wait_counters(&cache, "contacts", "the would-be hit compared", |c| {
        c.would_be_hits == 1 && c.verifications == 1
    })
    .await;
    assert_eq!(counted.mismatches, 0);

    // The mistake: the data changes, `contacts` is not invalidated.
    let renamed = send(
        &app,
        post("/contacts/rename", Some(org), json!({"name": "Alan"})),
    )
    .await;
    assert_eq!(renamed.status, 200);
    let third = send(&app, get_req("/contacts", Some(org))).await;
    assert_eq!(third.x_cache(), "BYPASS");
    assert_eq!(
        names(&third),
        ["Alan", "Grace"],
        "shadow always answers fresh"
    );
    let counted = wait_counters(&cache, "contacts", "the mismatch", |c| c.mismatches == 1).await;
    assert_eq!(counted.would_be_hits, 2);
    assert_eq!(counted.raced, 0);

    let found = cache.recent_mismatches();
    assert_eq!(found.len(), 1, "{found:?}");
    let mismatch = &found[0];
    assert_eq!(mismatch.resource, "contacts");
    assert_eq!(mismatch.path, "/contacts");
    assert_eq!(mismatch.tenant, format!("{{t.{org}}}"));
    assert!(
        mismatch.function.ends_with("::list_contacts"),
        "{mismatch:?}"
    );
    assert_eq!(mismatch.difference, "$.contacts[0].name: string differs");
    assert_eq!(mismatch.found_by, "shadow");
    assert!(
        mismatch.key.contains(&format!("{{t.{org}}}")),
        "{mismatch:?}"
    );
    // Logged at WARN with its key and what differs, never with the body.
    let logged = warnings_about(&mismatch.key);
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0]["resource"], "contacts");
    assert_eq!(
        logged[0]["difference"],
        "$.contacts[0].name: string differs"
    );
    assert!(!format!("{logged:?}").contains("Alan") && !format!("{logged:?}").contains("Ada"));

    // Once per key per interval: the same stale entry found again is counted, not logged.
    let fourth = send(&app, get_req("/contacts", Some(org))).await;
    assert_eq!(names(&fourth), ["Alan", "Grace"]);
    wait_counters(&cache, "contacts", "the second mismatch", |c| {
        c.mismatches == 2
    })
    .await;
    assert_eq!(warnings_about(&mismatch.key).len(), 1);

    // A correct mutation: the next request is a would-be miss, and nothing more differs.
    send(
        &app,
        post("/contacts", Some(org), json!({"name": "Edsger"})),
    )
    .await;
    let fifth = send(&app, get_req("/contacts", Some(org))).await;
    assert_eq!(names(&fifth), ["Alan", "Grace", "Edsger"]);
    wait_counters(
        &cache,
        "contacts",
        "the would-be miss after invalidation",
        |c| c.would_be_misses == 2 && c.stores == 2,
    )
    .await;
    send(&app, get_req("/contacts", Some(org))).await;
    let end = wait_counters(&cache, "contacts", "the last comparison", |c| {
        c.verifications == 4
    })
    .await;
    assert_eq!(end.mismatches, 2);
    // Shadow requests are bypasses to the client and to the real hit rate.
    assert_eq!(end.hits, 0);
    assert_eq!(end.bypasses, 6);
    assert_eq!(end.would_be_hits, 4);
    assert_eq!(
        cache.stats().resources["contacts"].would_be_hit_rate,
        4.0 * 100.0 / 6.0
    );
}

both_backends!(
    shadow_mode_catches_a_forgotten_invalidation,
    shadow_catches_a_forgotten_invalidation
);

async fn sampled_verification_catches_a_forgotten_invalidation(backend: TestBackend) {
    warnings();
    // Every hit verified; the draw is injected, so this is deterministic.
    let cache = Cache::new(
        backend
            .config()
            .with_verify_share("contacts", 0.5)
            .with_verify_random(RandomSource::new(|| 0.25)),
    )
    .await
    .unwrap();
    let org = fresh_tenant("org_v");
    let org = org.as_str();
    let db = Db::default();
    db.contacts
        .lock()
        .unwrap()
        .insert(org.into(), vec!["Ada".into()]);
    let app = app(&cache, db.clone());

    assert_eq!(
        send(&app, get_req("/contacts", Some(org))).await.x_cache(),
        "MISS"
    );
    // Stored (off the request path for Redis): the next request is a plain hit.
    wait_counters(&cache, "contacts", "the entry stored", |c| c.stores == 1).await;
    let first_hit = hit(&app, org).await;
    assert_eq!(names(&first_hit), ["Ada"]);
    wait_counters(&cache, "contacts", "the hit verified", |c| {
        c.verifications == 1
    })
    .await;

    send(
        &app,
        post("/contacts/rename", Some(org), json!({"name": "Alan"})),
    )
    .await;
    // `on` serves the entry (that is the bug being detected) ...
    let stale = hit(&app, org).await;
    assert_eq!(names(&stale), ["Ada"]);
    // ... and the recomputation in the background notices.
    let counted = wait_counters(&cache, "contacts", "the mismatch", |c| c.mismatches == 1).await;
    assert_eq!(counted.raced, 0);
    let found = cache.recent_mismatches();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].found_by, "verify");
    assert_eq!(found[0].tenant, format!("{{t.{org}}}"));
    assert_eq!(found[0].difference, "$.contacts[0].name: string differs");
    assert_eq!(warnings_about(&found[0].key).len(), 1);

    // A draw above the share: not verified.
    cache.set_verify_share("contacts", 0.2);
    hit(&app, org).await;
    assert_eq!(
        cache.shadow_runs_in_flight(),
        0,
        "a recomputation was started"
    );
    assert_eq!(counters(&cache, "contacts").verifications, 2);
}

/// GETs `/contacts` until a hit (a store to Redis lands off the request path).
async fn hit(app: &Router, org: &str) -> Reply {
    for _ in 0..200 {
        let reply = send(app, get_req("/contacts", Some(org))).await;
        if reply.x_cache() == "HIT" {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no hit");
}

both_backends!(
    sampled_verification_in_on_mode,
    sampled_verification_catches_a_forgotten_invalidation
);

// ---- a correct app -------------------------------------------------------------------

/// A reproducible sequence in [0, 1).
fn lcg(seed: u64) -> impl FnMut() -> f64 {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    }
}

async fn correct_app_shows_no_mismatch(backend: TestBackend, mode: ResourceMode) {
    let seed = 0x5eed_0015;
    let cache = Cache::new(
        backend
            .config()
            .with_resource_mode("contacts", mode)
            .with_verify_share("contacts", 1.0),
    )
    .await
    .unwrap();
    let db = Db::default();
    let app = app(&cache, db.clone());
    let orgs = ["org_1", "org_2", "org_3"];
    // A writer and a reader at once: writes land between lookups and handlers.
    let writer = {
        let app = app.clone();
        let mut draw = lcg(seed);
        tokio::spawn(async move {
            for i in 0..60 {
                let org = orgs[(draw() * 3.0) as usize];
                send(
                    &app,
                    post("/contacts", Some(org), json!({"name": format!("c{i}")})),
                )
                .await;
                tokio::time::sleep(Duration::from_millis((draw() * 8.0) as u64)).await;
            }
        })
    };
    let mut draw = lcg(seed ^ 0xffff);
    for _ in 0..300 {
        let org = orgs[(draw() * 3.0) as usize];
        let reply = send(&app, get_req("/contacts", Some(org))).await;
        assert_eq!(reply.status, 200);
        if draw() < 0.3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    writer.await.unwrap();
    // Every background run finished: comparisons counted, their grace waited out.
    wait_idle(&cache).await;
    let end = counters(&cache, "contacts");
    assert!(
        end.verifications > 20,
        "too few comparisons to mean anything: {end:?}"
    );
    if mode == ResourceMode::Shadow {
        assert!(end.would_be_hits > 20, "{end:?}");
        assert!(end.would_be_misses > 0, "{end:?}");
        assert_eq!(end.hits, 0);
    } else {
        assert!(end.hits > 20, "{end:?}");
    }
    assert_eq!(end.mismatches, 0, "{end:?}");
    assert!(cache.recent_mismatches().is_empty());
}

async fn correct_app_shadow(backend: TestBackend) {
    correct_app_shows_no_mismatch(backend, ResourceMode::Shadow).await;
}

async fn correct_app_verified(backend: TestBackend) {
    correct_app_shows_no_mismatch(backend, ResourceMode::On).await;
}

both_backends!(correct_app_in_shadow_has_no_mismatch, correct_app_shadow);
both_backends!(correct_app_verified_has_no_mismatch, correct_app_verified);

// ---- the way out for responses that change on every call -----------------------------

async fn volatile_routes_opt_out(backend: TestBackend) {
    let cache = Cache::new(
        backend
            .config()
            .with_resource_mode("clock", ResourceMode::Shadow)
            .with_resource_mode("stamps", ResourceMode::Shadow),
    )
    .await
    .unwrap();
    let app = app(&cache, Db::default());
    for _ in 0..4 {
        send(&app, get_req("/clock", Some("org_c"))).await;
        send(&app, get_req("/stamp", Some("org_c"))).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let clock = wait_counters(&cache, "clock", "the clock compared", |c| {
        c.verifications >= 2
    })
    .await;
    let stamps = wait_counters(&cache, "stamps", "the stamps looked up", |c| {
        c.would_be_hits >= 2
    })
    .await;
    wait_idle(&cache).await;
    // `verify_ignore = ["generated_at"]`: compared, the ignored field apart.
    assert_eq!(counters(&cache, "clock").mismatches, 0, "{clock:?}");
    // `verify = false`: would-be hits counted, nothing compared.
    let stamps_end = counters(&cache, "stamps");
    assert_eq!(stamps_end.verifications, 0, "{stamps:?}");
    assert_eq!(stamps_end.mismatches, 0);
}

both_backends!(
    routes_that_change_on_every_call_opt_out,
    volatile_routes_opt_out
);

// ---- never delays, never queues ------------------------------------------------------

/// On tokio's paused clock: a verification whose handler sleeps a minute does not
/// delay the hit it verifies.
#[tokio::test(start_paused = true)]
async fn verification_never_delays_the_hit() {
    let cache = Cache::new(
        CacheConfig::default()
            .with_verify_share("reports", 1.0)
            .with_verify_random(RandomSource::new(|| 0.5)),
    )
    .await
    .unwrap();
    let db = Db::default();
    *db.slow_after_first.lock().unwrap() = Duration::from_secs(60);
    let app = app(&cache, db.clone());
    assert_eq!(
        send(&app, get_req("/slow", Some("org_s"))).await.x_cache(),
        "MISS"
    );
    let started = tokio::time::Instant::now();
    let reply = send(&app, get_req("/slow", Some("org_s"))).await;
    assert_eq!(reply.x_cache(), "HIT");
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "the hit waited for its verification"
    );
    // The verification did start, and finishes in the background a minute later.
    settle().await;
    assert_eq!(db.runs("slow"), 2);
    assert_eq!(counters(&cache, "reports").verifications, 0);
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(counters(&cache, "reports").verifications, 1);
    assert_eq!(counters(&cache, "reports").mismatches, 0);
}

/// A flood of verified hits with slow recomputations: at most the bound runs at once,
/// the rest are skipped and counted, and every hit is served at once.
#[tokio::test(start_paused = true)]
async fn a_flood_is_skipped_not_queued() {
    let cache = Cache::new(
        CacheConfig::default()
            .with_verify_share("reports", 1.0)
            .with_shadow_concurrency(2),
    )
    .await
    .unwrap();
    let db = Db::default();
    *db.slow_after_first.lock().unwrap() = Duration::from_secs(60);
    let app = app(&cache, db.clone());
    send(&app, get_req("/slow", Some("org_f"))).await;
    let started = tokio::time::Instant::now();
    for _ in 0..20 {
        assert_eq!(
            send(&app, get_req("/slow", Some("org_f"))).await.x_cache(),
            "HIT"
        );
    }
    assert_eq!(started.elapsed(), Duration::ZERO);
    settle().await;
    let flooded = counters(&cache, "reports");
    assert_eq!(flooded.shadow_skipped, 18, "{flooded:?}");
    assert_eq!(
        db.runs("slow"),
        1 + 2,
        "only the bound's worth of recomputations run"
    );
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(counters(&cache, "reports").verifications, 2);
    // The permits are back: the next hit is verified again.
    send(&app, get_req("/slow", Some("org_f"))).await;
    settle().await;
    assert_eq!(db.runs("slow"), 4);
}

/// Shadow requests beyond the bound are answered as usual, with no shadow work.
#[tokio::test(start_paused = true)]
async fn shadow_beyond_the_bound_is_skipped() {
    let cache = Cache::new(
        CacheConfig::default()
            .with_resource_mode("reports", ResourceMode::Shadow)
            .with_shadow_concurrency(2),
    )
    .await
    .unwrap();
    let db = Db::default();
    *db.slow_after_first.lock().unwrap() = Duration::from_secs(5);
    let app = app(&cache, db.clone());
    send(&app, get_req("/slow", Some("org_b"))).await;
    settle().await;
    assert_eq!(cache.shadow_runs_in_flight(), 0);
    let replies =
        futures_util::future::join_all((0..6).map(|_| send(&app, get_req("/slow", Some("org_b")))))
            .await;
    assert!(replies
        .iter()
        .all(|r| r.x_cache() == "BYPASS" && r.text() == "the report"));
    let counted = counters(&cache, "reports");
    assert_eq!(counted.shadow_skipped, 4, "{counted:?}");
    assert_eq!(counted.bypasses, 7);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end = counters(&cache, "reports");
    assert_eq!(end.would_be_misses + end.would_be_hits, 3, "{end:?}");
}

/// Modes change at run time; `off` and `on` behave as before.
#[tokio::test]
async fn modes_change_at_run_time() {
    let cache = Cache::new(CacheConfig::default()).await.unwrap();
    let db = Db::default();
    let app = app(&cache, db.clone());
    cache.set_resource_mode("contacts", ResourceMode::Shadow);
    assert_eq!(
        send(&app, get_req("/contacts", Some("org_m")))
            .await
            .x_cache(),
        "BYPASS"
    );
    wait_idle(&cache).await;
    cache.set_resource_mode("contacts", ResourceMode::On);
    // The entry shadow stored is served, as the generations still allow.
    assert_eq!(
        send(&app, get_req("/contacts", Some("org_m")))
            .await
            .x_cache(),
        "HIT"
    );
    cache.set_resource_enabled("contacts", false);
    assert_eq!(cache.resource_mode("contacts"), ResourceMode::Off);
    assert_eq!(
        send(&app, get_req("/contacts", Some("org_m")))
            .await
            .x_cache(),
        "BYPASS"
    );
    assert_eq!(counters(&cache, "contacts").would_be_misses, 1);
}

/// With the local tier in front of Redis, a shadow lookup that the tier answers is a
/// would-be hit, not a served one: `local_hits` stays a share of `hits`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_lookup_answered_by_the_local_tier_is_not_a_local_hit() {
    let backend = TestBackend::redis();
    let cache = Cache::new(
        backend
            .config()
            .with_local_tier(cache_runtime::LocalTier::Validate, 16 * 1024 * 1024)
            .with_resource_mode("contacts", ResourceMode::Shadow),
    )
    .await
    .unwrap();
    let app = app(&cache, Db::default());
    let org = fresh_tenant("org_local");
    for _ in 0..5 {
        let reply = send(&app, get_req("/contacts", Some(&org))).await;
        assert_eq!(reply.x_cache(), "BYPASS");
        wait_idle(&cache).await;
    }
    let now = wait_counters(&cache, "contacts", "would-be hits", |c| {
        c.would_be_hits >= 4
    })
    .await;
    // The case meant: the local tier holds the entry the shadow run stored or read.
    let tier = cache.stats().local_tier.expect("local tier on");
    assert!(tier.entries >= 1, "{tier:?}");
    assert_eq!(now.hits, 0, "{now:?}");
    assert_eq!(now.local_hits, 0, "{now:?}");
}
