//! Shared by the `concurrency_*` tests (issue 6): a small cached API over a versioned
//! "database", a gate its handlers pass after reading that database (so a test decides
//! when a computation may finish, instead of sleeping), and condition waits with a
//! deadline.
//!
//! The API (tenant from `x-tenant`, user from `x-user`):
//! - `GET /contacts` (`contacts`, 300 s): the tenant's contacts version and the query.
//! - `GET /dashboard` (`analytics` tagged `contacts`, 300 s): the contacts version too.
//! - `GET /me` (`conversations`, `vary = user`, 1 s): the conversations version and user.
//! - `GET /hot` (`templates`, 1 s): the templates version, for early refresh.
//! - `POST /contacts`, `POST /conversations` (`#[invalidates]`): bump the version and
//!   answer the new one.
//!
//! Every GET answers the version it read and `run`, the number of GET handler runs so far
//! including its own, so two answers from one computation are byte-identical and answers
//! of two computations never are.
//!
//! Each test binary uses part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use cache_runtime::{cached, invalidates, Cache, CacheScope};
use serde_json::{json, Value};
use tokio::sync::watch;

/// How long a test waits for a condition before failing.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Waits until `condition` holds, checking every millisecond; panics with `what` after
/// [`DEADLINE`]. A deadline, not a sleep: the test proceeds as soon as the state is right.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Awaits `future`, panicking with `what` if it has not finished within [`DEADLINE`].
pub async fn within_deadline<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for: {what}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Open,
    HoldNext,
    HoldAll,
}

#[derive(Debug)]
struct GateState {
    mode: Mode,
    held: usize,
}

/// Where GET handlers wait after reading the database, when the test says so.
#[derive(Debug)]
pub struct Gate {
    state: Mutex<GateState>,
    releases: watch::Sender<u64>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            state: Mutex::new(GateState {
                mode: Mode::Open,
                held: 0,
            }),
            releases: watch::channel(0).0,
        }
    }
}

impl Gate {
    /// Every handler that passes from now on waits until [`release`](Self::release).
    pub fn hold_all(&self) {
        self.state.lock().unwrap().mode = Mode::HoldAll;
    }

    /// Only the next handler to pass waits until [`release`](Self::release).
    pub fn hold_next(&self) {
        self.state.lock().unwrap().mode = Mode::HoldNext;
    }

    /// Lets every waiting handler go on, and opens the gate.
    pub fn release(&self) {
        let mut state = self.state.lock().unwrap();
        state.mode = Mode::Open;
        // Under the state lock: a handler that decided to wait has subscribed already.
        self.releases.send_modify(|n| *n += 1);
    }

    /// How many handlers have been held so far (waiting or released).
    pub fn held(&self) -> usize {
        self.state.lock().unwrap().held
    }

    async fn pass(&self) {
        let mut released = {
            let mut state = self.state.lock().unwrap();
            match state.mode {
                Mode::Open => return,
                Mode::HoldNext => state.mode = Mode::Open,
                Mode::HoldAll => {}
            }
            state.held += 1;
            self.releases.subscribe()
        };
        released.changed().await.expect("gate alive");
    }
}

/// The shared state of every instance of the API: the "database" and the gate.
#[derive(Clone, Default)]
pub struct App {
    inner: Arc<AppInner>,
}

#[derive(Default)]
struct AppInner {
    /// (tenant, resource) -> version; a missing row is version 1.
    versions: Mutex<HashMap<(String, &'static str), u64>>,
    runs: AtomicU64,
    gate: Gate,
    compute: Mutex<Duration>,
    jitter: AtomicU64,
}

impl App {
    /// The gate every GET handler passes after reading the database.
    pub fn gate(&self) -> &Gate {
        &self.inner.gate
    }

    /// How many times GET handlers ran.
    pub fn runs(&self) -> u64 {
        self.inner.runs.load(Ordering::SeqCst)
    }

    /// The current version of `resource` for `tenant`.
    pub fn version(&self, tenant: &str, resource: &'static str) -> u64 {
        self.inner
            .versions
            .lock()
            .unwrap()
            .get(&(tenant.to_owned(), resource))
            .copied()
            .unwrap_or(1)
    }

    /// Makes every GET handler take this long before it reads (a query's cost).
    pub fn set_compute(&self, compute: Duration) {
        *self.inner.compute.lock().unwrap() = compute;
    }

    /// Makes GET handlers yield to the scheduler a pseudo-random number of times (up to
    /// `max`) between reading the database and answering, which widens every window in
    /// which a write can overtake a read without hiding anything behind a sleep.
    pub fn set_jitter(&self, max: u64) {
        self.inner.jitter.store(max, Ordering::SeqCst);
    }

    fn bump(&self, tenant: &str, resource: &'static str) -> u64 {
        let mut versions = self.inner.versions.lock().unwrap();
        let version = versions.entry((tenant.to_owned(), resource)).or_insert(1);
        *version += 1;
        *version
    }

    /// A GET handler's work: pay the compute time, read, pass the gate, jitter.
    async fn read(&self, tenant: &str, resource: &'static str) -> (u64, u64) {
        let run = self.inner.runs.fetch_add(1, Ordering::SeqCst) + 1;
        let compute = *self.inner.compute.lock().unwrap();
        if !compute.is_zero() {
            tokio::time::sleep(compute).await;
        }
        let version = self.version(tenant, resource);
        self.inner.gate.pass().await;
        let max = self.inner.jitter.load(Ordering::SeqCst);
        if max > 0 {
            for _ in 0..splitmix(run) % (max + 1) {
                tokio::task::yield_now().await;
            }
        }
        (version, run)
    }
}

/// SplitMix64: a tiny deterministic generator for seeds and jitter.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A seeded pseudo-random sequence.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A sequence determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(splitmix(seed))
    }

    /// The next value below `bound` (`bound > 0`).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix(self.0) % bound
    }
}

/// The contacts page both contact routes answer (they differ only in their attributes).
async fn contacts_page(app: &App, scope: &CacheScope, query: Option<String>) -> Json<Value> {
    let (version, run) = app.read(scope.tenant(), "contacts").await;
    Json(json!({
        "tenant": scope.tenant(),
        "resource": "contacts",
        "version": version,
        "query": query,
        "run": run,
    }))
}

#[cached(resource = "contacts", ttl = 300)]
async fn list_contacts(
    State(app): State<App>,
    Extension(scope): Extension<CacheScope>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, StatusCode> {
    Ok(contacts_page(&app, &scope, query).await)
}

#[cached(resource = "analytics", ttl = 300, tags = ["contacts"])]
async fn dashboard(
    State(app): State<App>,
    Extension(scope): Extension<CacheScope>,
) -> Result<Json<Value>, StatusCode> {
    let (version, run) = app.read(scope.tenant(), "contacts").await;
    Ok(Json(json!({
        "tenant": scope.tenant(),
        "resource": "analytics",
        "version": version,
        "run": run,
    })))
}

#[cached(resource = "conversations", ttl = 1, vary = user)]
async fn my_conversations(
    State(app): State<App>,
    Extension(scope): Extension<CacheScope>,
) -> Result<Json<Value>, StatusCode> {
    let (version, run) = app.read(scope.tenant(), "conversations").await;
    Ok(Json(json!({
        "tenant": scope.tenant(),
        "user": scope.user(),
        "resource": "conversations",
        "version": version,
        "run": run,
    })))
}

#[cached(resource = "templates", ttl = 1)]
async fn hot(
    State(app): State<App>,
    Extension(scope): Extension<CacheScope>,
) -> Result<Json<Value>, StatusCode> {
    let (version, run) = app.read(scope.tenant(), "templates").await;
    Ok(Json(json!({
        "tenant": scope.tenant(),
        "resource": "templates",
        "version": version,
        "run": run,
    })))
}

#[invalidates("contacts")]
async fn change_contacts(
    State(app): State<App>,
    Extension(scope): Extension<CacheScope>,
) -> Result<Json<Value>, StatusCode> {
    let version = app.bump(scope.tenant(), "contacts");
    Ok(Json(
        json!({ "tenant": scope.tenant(), "version": version }),
    ))
}

#[invalidates("conversations")]
async fn change_conversations(
    State(app): State<App>,
    Extension(scope): Extension<CacheScope>,
) -> Result<Json<Value>, StatusCode> {
    let version = app.bump(scope.tenant(), "conversations");
    Ok(Json(
        json!({ "tenant": scope.tenant(), "version": version }),
    ))
}

/// Negative control: a mutation that forgets `#[invalidates]`.
async fn change_contacts_without_invalidating(
    State(app): State<App>,
    Extension(scope): Extension<CacheScope>,
) -> Result<Json<Value>, StatusCode> {
    let version = app.bump(scope.tenant(), "contacts");
    Ok(Json(
        json!({ "tenant": scope.tenant(), "version": version }),
    ))
}

/// Negative control: tenant data declared `scope = global`.
#[cached(resource = "contacts", ttl = 300, scope = global)]
async fn list_contacts_as_global(
    State(app): State<App>,
    Extension(scope): Extension<CacheScope>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, StatusCode> {
    Ok(contacts_page(&app, &scope, query).await)
}

async fn scope_from_headers(mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (tenant, user) = (header("x-tenant"), header("x-user"));
    if let Some(tenant) = tenant {
        let mut scope = CacheScope::new(tenant);
        if let Some(user) = user {
            scope = scope.with_user(user);
        }
        request.extensions_mut().insert(scope);
    }
    next.run(request).await
}

/// Which API a router serves: the correct one, or a deliberately broken one that the
/// history checker must catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// As documented above.
    Correct,
    /// `POST /contacts` does not invalidate.
    MissingInvalidation,
    /// `GET /contacts` is cached as `scope = global`.
    GlobalScope,
}

/// One instance of the API over `app`, served through `cache`.
pub fn router(cache: &Cache, app: App, flavor: Flavor) -> Router {
    let contacts = match flavor {
        Flavor::Correct => get(list_contacts).post(change_contacts),
        Flavor::MissingInvalidation => {
            get(list_contacts).post(change_contacts_without_invalidating)
        }
        Flavor::GlobalScope => get(list_contacts_as_global).post(change_contacts),
    };
    Router::new()
        .route("/contacts", contacts)
        .route("/dashboard", get(dashboard))
        .route("/me", get(my_conversations))
        .route("/conversations", post(change_conversations))
        .route("/hot", get(hot))
        .with_state(app)
        .layer(middleware::from_fn(scope_from_headers))
        .layer(cache.extension())
}

/// A request as a client of `tenant` (and `user`) sends it.
pub fn request(method: &str, uri: &str, tenant: &str, user: Option<&str>) -> Request {
    let mut builder = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("x-tenant", tenant);
    if let Some(user) = user {
        builder = builder.header("x-user", user);
    }
    builder.body(axum::body::Body::empty()).unwrap()
}

/// Calls per Redis command since the last `CONFIG RESETSTAT` (lower-case names).
pub fn command_calls(server: &cache_tests::RedisServer) -> HashMap<String, u64> {
    let info: String = server.cmd(&["INFO", "commandstats"]);
    info.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("cmdstat_")?;
            let (name, stats) = rest.split_once(':')?;
            let calls = stats.split(',').find_map(|f| f.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .filter(|(name, _)| !(name.starts_with("config") || name.starts_with("info")))
        .collect()
}
