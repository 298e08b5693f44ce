//! Serving stale while one request revalidates (issue 16), through `#[cached]` on an axum
//! Router, on both backends:
//! - past its TTL, within `stale_while_revalidate`, an entry nothing invalidated is
//!   answered `STALE` at once while exactly one background run recomputes it;
//! - after an invalidation a strict route (the default) never answers `STALE`;
//! - a route with `stale_after_invalidation = N` answers `STALE` after a write only while
//!   the entry reflects every write older than N seconds, never past that bound.
//!
//! Entry times are wall-clock (they are compared across instances), so the expiry and
//! the bound are real seconds here; the decision itself is unit-tested at the bound, to
//! the millisecond, with an injected clock (`cache/read.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use cache_runtime::{cached, invalidates, Cache, CacheScope};
use cache_tests::backends::TestBackend;
use cache_tests::both_backends;
use cache_tests::http::{get as get_request, send, Reply};
use serde_json::{json, Value};
use tokio::sync::watch;

const DEADLINE: Duration = Duration::from_secs(20);

/// The "database": a version per tenant, a count of handler runs, and a gate the test
/// can close to hold every handler run after it has read.
#[derive(Clone)]
struct Db {
    version: Arc<AtomicU64>,
    runs: Arc<AtomicU64>,
    held: Arc<AtomicU64>,
    gate: Arc<watch::Sender<bool>>,
    fail_reads: Arc<AtomicBool>,
}

impl Db {
    fn new() -> Self {
        Db {
            version: Arc::new(AtomicU64::new(1)),
            runs: Arc::new(AtomicU64::new(0)),
            held: Arc::new(AtomicU64::new(0)),
            gate: Arc::new(watch::channel(true).0),
            fail_reads: Arc::new(AtomicBool::new(false)),
        }
    }

    fn runs(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }

    fn close_gate(&self) {
        self.gate.send_replace(false);
    }

    fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    async fn read(&self, tenant: &str) -> Result<Json<Value>, StatusCode> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let version = self.version.load(Ordering::SeqCst);
        let mut open = self.gate.subscribe();
        if !*open.borrow_and_update() {
            self.held.fetch_add(1, Ordering::SeqCst);
            let _ = open.wait_for(|open| *open).await;
        }
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        }
        Ok(Json(json!({ "tenant": tenant, "version": version })))
    }
}

/// Expires after 1 s, then may be served stale for 30 s.
#[cached(resource = "templates", ttl = 1, stale_while_revalidate = 30)]
async fn expiring(
    State(db): State<Db>,
    axum::Extension(scope): axum::Extension<CacheScope>,
) -> Result<Json<Value>, StatusCode> {
    db.read(scope.tenant()).await
}

/// Strict after writes (the default), with a long grace for expiry.
#[cached(resource = "contacts", ttl = 1, stale_while_revalidate = 30)]
async fn strict(
    State(db): State<Db>,
    axum::Extension(scope): axum::Extension<CacheScope>,
) -> Result<Json<Value>, StatusCode> {
    db.read(scope.tenant()).await
}

/// May be up to 2 s behind a write.
#[cached(resource = "analytics", ttl = 60, stale_after_invalidation = 2)]
async fn bounded(
    State(db): State<Db>,
    axum::Extension(scope): axum::Extension<CacheScope>,
) -> Result<Json<Value>, StatusCode> {
    db.read(scope.tenant()).await
}

#[invalidates("contacts", "analytics")]
async fn write(State(db): State<Db>) -> StatusCode {
    db.version.fetch_add(1, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

async fn scope_from_header(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(tenant) = request
        .headers()
        .get("x-tenant")
        .and_then(|v| v.to_str().ok())
    {
        let scope = CacheScope::new(tenant);
        request.extensions_mut().insert(scope);
    }
    next.run(request).await
}

fn router(cache: &Cache, db: Db) -> Router {
    Router::new()
        .route("/expiring", get(expiring))
        .route("/strict", get(strict).post(write))
        .route("/bounded", get(bounded))
        .with_state(db)
        .layer(axum::middleware::from_fn(scope_from_header))
        .layer(cache.extension())
}

async fn cache_for(backend: &TestBackend) -> Cache {
    // No early refresh: these tests are about what happens once an entry is past its TTL.
    Cache::new(backend.config().with_early_refresh_beta(0.0))
        .await
        .expect("cache")
}

async fn read(api: &Router, path: &str, tenant: &str) -> Reply {
    send(api, get_request(path, Some(tenant))).await
}

fn version(reply: &Reply) -> u64 {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["version"].as_u64().expect("a version")
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Past its TTL, a burst of readers is answered `STALE` at once, with the entry's age,
/// while one background run (held at the gate the whole time) recomputes; the next read
/// is a hit on the new entry. Another tenant's read is never answered from it.
async fn expired_entry_is_served_stale_while_one_run_recomputes(backend: TestBackend) {
    let cache = cache_for(&backend).await;
    let db = Db::new();
    let api = router(&cache, db.clone());
    assert_eq!(read(&api, "/expiring", "org_1").await.x_cache(), "MISS");
    wait_until("the entry stored", || cache.stats().totals.stores == 1).await;
    if let Some(server) = backend.server() {
        // Kept for TTL + grace in Redis, fresh for the TTL only.
        let keys = server.keys("*:e:*");
        assert_eq!(keys.len(), 1);
        let pttl: i64 = server.cmd(&["PTTL", &keys[0]]);
        assert!(pttl > 30_000 && pttl <= 31_000, "PTTL {pttl}");
    }
    db.version.store(2, Ordering::SeqCst); // a change no mutation announced
    tokio::time::sleep(Duration::from_millis(1_100)).await; // past the 1 s TTL

    db.close_gate();
    let burst: Vec<_> = (0..8)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move { read(&api, "/expiring", "org_1").await })
        })
        .collect();
    let mut replies = Vec::new();
    for reply in burst {
        replies.push(
            tokio::time::timeout(DEADLINE, reply)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    // Every reader was answered; the recomputation is (or will be) held at the gate.
    wait_until("the background run held", || {
        db.held.load(Ordering::SeqCst) == 1
    })
    .await;
    for reply in &replies {
        assert_eq!(reply.x_cache(), "STALE");
        assert_eq!(version(reply), 1);
        assert!(reply.header("x-cache-age").parse::<u64>().unwrap() >= 1);
    }
    assert_eq!(db.runs(), 2, "one cold miss, one background recomputation");

    // Another tenant has its own key: a miss with its own data, never org_1's entry.
    db.open_gate();
    let other = read(&api, "/expiring", "org_2").await;
    assert_eq!(other.x_cache(), "MISS");
    assert_eq!(other.json()["tenant"], "org_2");

    wait_until("the recomputed entry stored", || {
        cache.stats().totals.stores == 3
    })
    .await;
    let fresh = read(&api, "/expiring", "org_1").await;
    assert_eq!(fresh.x_cache(), "HIT");
    assert_eq!(version(&fresh), 2);

    let resource = &cache.stats().resources["templates"];
    assert_eq!(resource.counters.stale, 8);
    assert_eq!(resource.counters.revalidations, 1);
    assert_eq!(resource.counters.hits, 1);
    assert_eq!(resource.counters.misses, 2);
    assert_eq!(resource.counters.misses_cold, 2);
    assert_eq!(resource.counters.misses_expired, 0);
    assert_eq!(db.runs(), 3);
}

both_backends!(
    grace,
    expired_entry_is_served_stale_while_one_run_recomputes
);

/// A strict route (no `stale_after_invalidation`) reads its write at once, even with a
/// long grace and an entry that is also past its TTL: invalidated is not merely old.
async fn strict_route_never_serves_stale_after_a_write(backend: TestBackend) {
    let cache = cache_for(&backend).await;
    let db = Db::new();
    let api = router(&cache, db.clone());
    assert_eq!(version(&read(&api, "/strict", "org_1").await), 1);
    wait_until("the entry stored", || cache.stats().totals.stores == 1).await;

    assert_eq!(send(&api, write_request()).await.status, 204);
    let after = read(&api, "/strict", "org_1").await;
    assert_eq!(after.x_cache(), "MISS");
    assert_eq!(version(&after), 2);
    wait_until("the entry stored", || cache.stats().totals.stores == 2).await;

    tokio::time::sleep(Duration::from_millis(1_100)).await; // past the TTL, within grace
    assert_eq!(send(&api, write_request()).await.status, 204);
    let after = read(&api, "/strict", "org_1").await;
    assert_eq!(after.x_cache(), "MISS");
    assert_eq!(version(&after), 3);

    let resource = &cache.stats().resources["contacts"];
    assert_eq!(resource.counters.stale, 0);
    assert_eq!(resource.counters.misses_invalidated, 2);
    assert_eq!(resource.counters.misses_cold, 1);
}

both_backends!(strict, strict_route_never_serves_stale_after_a_write);

fn write_request() -> axum::http::Request<axum::body::Body> {
    cache_tests::http::post("/strict", Some("org_1"), json!({}))
}

/// `stale_after_invalidation = 2`: after a write the previous entry is answered `STALE`
/// (and one run recomputes it once it is 1 s old); when recomputations keep failing, it is answered `STALE`
/// only until 2 s after its generations were read, then every read misses. Every `STALE`
/// answer is checked against the bound from the client's side: its request was sent at
/// most 2 s after the entry's first read had returned (its generations were read before).
async fn bounded_route_is_never_behind_by_more_than_its_bound(backend: TestBackend) {
    let cache = cache_for(&backend).await;
    let db = Db::new();
    let api = router(&cache, db.clone());
    let bound = Duration::from_secs(2);

    // A write shows after a bounded delay: the writes of the first half of the bound share
    // one recomputation, which starts from then on and lands in the background.
    assert_eq!(version(&read(&api, "/bounded", "org_1").await), 1);
    let first_read = Instant::now();
    wait_until("the entry stored", || cache.stats().totals.stores == 1).await;
    assert_eq!(send(&api, write_request()).await.status, 204);
    let behind = read(&api, "/bounded", "org_1").await;
    assert_eq!(behind.x_cache(), "STALE");
    assert_eq!(version(&behind), 1);
    assert_eq!(
        cache.stats().totals.revalidations,
        0,
        "not yet half the bound"
    );
    tokio::time::sleep((first_read + bound / 2 + Duration::from_millis(50)) - Instant::now()).await;
    let behind = read(&api, "/bounded", "org_1").await;
    assert_eq!(behind.x_cache(), "STALE");
    assert_eq!(version(&behind), 1);
    wait_until("the recomputed entry stored", || {
        cache.stats().totals.stores == 2
    })
    .await;
    assert_eq!(cache.stats().totals.revalidations, 1);
    let caught_up = read(&api, "/bounded", "org_1").await;
    assert_eq!(caught_up.x_cache(), "HIT");
    assert_eq!(version(&caught_up), 2);

    // Now the recomputations fail: the entry of version 2 stays, and so does the bound.
    tokio::time::sleep(Duration::from_millis(50)).await;
    db.fail_reads.store(true, Ordering::SeqCst);
    let mut answers = Vec::new();
    let computed = Instant::now();
    // Invalidate the version-2 entry (computed before `computed`): from here on only the
    // bound decides.
    assert_eq!(send(&api, write_request()).await.status, 204);
    let read_generations_by = computed; // the last fresh entry's lookup returned before
    loop {
        let sent = Instant::now();
        let reply = read(&api, "/bounded", "org_1").await;
        answers.push((
            sent.duration_since(read_generations_by),
            reply.x_cache().to_owned(),
        ));
        if sent.duration_since(read_generations_by) > bound + Duration::from_millis(500) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (since, outcome) in &answers {
        // The entry's generations were read before the HIT above: a STALE answer at
        // `since` would be an entry older than the bound.
        if outcome == "STALE" {
            assert!(*since <= bound, "STALE {since:?} after the entry's read");
        }
    }
    let stale: Vec<_> = answers.iter().filter(|(_, o)| o == "STALE").collect();
    let last_stale = stale.last().expect("served stale within the bound").0;
    assert!(
        last_stale >= bound - Duration::from_millis(800),
        "served stale until near the bound, last at {last_stale:?}"
    );
    let (last_since, last_outcome) = answers.last().unwrap();
    assert!(*last_since > bound);
    assert_eq!(last_outcome, "MISS", "past the bound: {answers:?}");
}

both_backends!(
    bounded,
    bounded_route_is_never_behind_by_more_than_its_bound
);
