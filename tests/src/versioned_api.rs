//! A small cached API for fault tests, whose every correct answer is known.
//!
//! An in-memory "database" keeps a version per (tenant, resource). `GET /contacts`,
//! `GET /conversations` and `GET /templates` are `#[cached]` and answer the tenant, the
//! resource, its current version and the decoded query; `POST /contacts` and
//! `POST /conversations` bump the version and are `#[invalidates]`. A test compares
//! every body with [`Db::expected`], the bytes the uncached handler would send now, so
//! a stale or cross-tenant answer cannot pass unnoticed, and reads [`Db::runs`] to see
//! how many times handlers ran. The tenant comes from the `x-tenant` header (any bytes).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, RawQuery, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Json, Router};
use cache_runtime::testing::normalize_query;
use cache_runtime::{cached, invalidates, Cache, CacheScope};
use serde::{Deserialize, Serialize};

use crate::http::{post, send, Reply};

/// The shared state: versions, handler runs, and the handlers' uncached latency.
#[derive(Clone, Default)]
pub struct Db {
    inner: Arc<DbInner>,
}

#[derive(Default)]
struct DbInner {
    versions: Mutex<HashMap<(String, String), u64>>,
    runs: AtomicUsize,
    delay: Mutex<Duration>,
}

/// What every cached read answers.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Page {
    /// The tenant the answer was computed for.
    pub tenant: String,
    /// The resource read.
    pub resource: String,
    /// The resource's version when the handler ran.
    pub version: u64,
    /// The query's parameters as handlers see them (decoded, sorted by name), which is
    /// what the key is made of: the raw bytes of two equivalent queries may differ.
    pub query: Vec<(String, String)>,
}

impl Db {
    /// The current version of `resource` for `tenant` (starts at 1).
    pub fn version(&self, tenant: &str, resource: &str) -> u64 {
        let versions = self.inner.versions.lock().expect("versions lock");
        versions
            .get(&(tenant.to_owned(), resource.to_owned()))
            .copied()
            .unwrap_or(1)
    }

    fn bump(&self, tenant: &str, resource: &'static str) -> u64 {
        let mut versions = self.inner.versions.lock().expect("versions lock");
        let version = versions
            .entry((tenant.to_owned(), resource.to_owned()))
            .or_insert(1);
        *version += 1;
        *version
    }

    /// How many times a GET handler ran (misses and bypasses; hits do not run it).
    pub fn runs(&self) -> usize {
        self.inner.runs.load(Ordering::SeqCst)
    }

    /// Makes every GET handler take this long, like a query would.
    pub fn set_delay(&self, delay: Duration) {
        *self.inner.delay.lock().expect("delay lock") = delay;
    }

    /// The exact body the uncached handler would answer now.
    pub fn expected(&self, tenant: &str, resource: &str, query: Option<&str>) -> Vec<u8> {
        serde_json::to_vec(&Page {
            tenant: tenant.to_owned(),
            resource: resource.to_owned(),
            version: self.version(tenant, resource),
            query: normalize_query(query.unwrap_or("")),
        })
        .expect("serialize a page")
    }

    async fn read(
        &self,
        scope: &CacheScope,
        resource: &'static str,
        query: Option<String>,
    ) -> Page {
        self.inner.runs.fetch_add(1, Ordering::SeqCst);
        let delay = *self.inner.delay.lock().expect("delay lock");
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Page {
            tenant: scope.tenant().to_owned(),
            resource: resource.to_owned(),
            version: self.version(scope.tenant(), resource),
            query: normalize_query(query.as_deref().unwrap_or("")),
        }
    }
}

#[cached(resource = "contacts", ttl = 300)]
async fn list_contacts(
    State(db): State<Db>,
    Extension(scope): Extension<CacheScope>,
    RawQuery(query): RawQuery,
) -> Result<Json<Page>, http::StatusCode> {
    Ok(Json(db.read(&scope, "contacts", query).await))
}

#[invalidates("contacts")]
async fn change_contacts(
    State(db): State<Db>,
    Extension(scope): Extension<CacheScope>,
) -> Result<Json<u64>, http::StatusCode> {
    Ok(Json(db.bump(scope.tenant(), "contacts")))
}

/// A short TTL, for measuring what bounds staleness when an invalidation is lost.
/// No grace past the TTL: the fault tests measure that the TTL alone bounds staleness.
#[cached(resource = "conversations", ttl = 8, stale_while_revalidate = 0)]
async fn list_conversations(
    State(db): State<Db>,
    Extension(scope): Extension<CacheScope>,
    RawQuery(query): RawQuery,
) -> Result<Json<Page>, http::StatusCode> {
    Ok(Json(db.read(&scope, "conversations", query).await))
}

#[invalidates("conversations")]
async fn change_conversations(
    State(db): State<Db>,
    Extension(scope): Extension<CacheScope>,
) -> Result<Json<u64>, http::StatusCode> {
    Ok(Json(db.bump(scope.tenant(), "conversations")))
}

#[cached(resource = "templates", ttl = 300)]
async fn list_templates(
    State(db): State<Db>,
    Extension(scope): Extension<CacheScope>,
    RawQuery(query): RawQuery,
) -> Result<Json<Page>, http::StatusCode> {
    Ok(Json(db.read(&scope, "templates", query).await))
}

#[derive(Deserialize)]
struct ExportQuery {
    bytes: usize,
}

/// A body of `bytes` bytes, for the size bound.
#[cached(resource = "contacts", ttl = 300)]
async fn export_contacts(
    State(db): State<Db>,
    Query(export): Query<ExportQuery>,
) -> Result<String, http::StatusCode> {
    db.inner.runs.fetch_add(1, Ordering::SeqCst);
    Ok("x".repeat(export.bytes))
}

/// The body `GET /export?bytes=N` answers.
pub fn export_body(bytes: usize) -> String {
    "x".repeat(bytes)
}

async fn tenant_from_header(mut request: Request, next: Next) -> Response {
    if let Some(tenant) = request.headers().get("x-tenant") {
        let tenant = String::from_utf8_lossy(tenant.as_bytes()).into_owned();
        request.extensions_mut().insert(CacheScope::new(tenant));
    }
    next.run(request).await
}

/// The router over `db`, served through `cache`.
pub fn router(cache: &Cache, db: Db) -> Router {
    Router::new()
        .route("/contacts", get(list_contacts).post(change_contacts))
        .route(
            "/conversations",
            get(list_conversations).post(change_conversations),
        )
        .route("/templates", get(list_templates))
        .route("/export", get(export_contacts))
        .with_state(db)
        .layer(middleware::from_fn(tenant_from_header))
        .layer(cache.extension())
}

/// The router and its database, driven like a client would.
#[derive(Clone)]
pub struct Api {
    /// The router (cache layer included).
    pub app: Router,
    /// Its database.
    pub db: Db,
}

/// One answered read.
#[derive(Debug)]
pub struct Read {
    /// What the client received.
    pub reply: Reply,
    /// How long it took, end to end.
    pub elapsed: Duration,
}

impl Read {
    /// `HIT`, `MISS` or `BYPASS`.
    pub fn x_cache(&self) -> &str {
        self.reply.x_cache()
    }
}

impl Api {
    /// A fresh database behind `cache`.
    pub fn new(cache: &Cache) -> Api {
        Api::with_db(cache, Db::default())
    }

    /// Another instance of the API: the same database behind its own `cache`.
    pub fn with_db(cache: &Cache, db: Db) -> Api {
        Api {
            app: router(cache, db.clone()),
            db,
        }
    }

    /// `GET /<resource>?<query>` as `tenant`; asserts a 200 whose body is exactly what the
    /// uncached handler answers now (not stale, not another tenant's).
    pub async fn read(&self, tenant: &str, resource: &str, query: Option<&str>) -> Read {
        let uri = match query {
            Some(query) => format!("/{resource}?{query}"),
            None => format!("/{resource}"),
        };
        let request = http::Request::get(uri)
            .header(
                "x-tenant",
                http::HeaderValue::from_bytes(tenant.as_bytes()).expect("tenant header"),
            )
            .body(axum::body::Body::empty())
            .expect("request");
        let started = std::time::Instant::now();
        let reply = send(&self.app, request).await;
        let elapsed = started.elapsed();
        assert_eq!(
            reply.status,
            http::StatusCode::OK,
            "GET {resource}: {reply:?}"
        );
        let expected = self.db.expected(tenant, resource, query);
        assert!(
            reply.body == expected,
            "GET {resource} as {tenant:?} ({}) answered {:?}, the uncached answer is {:?}",
            reply.x_cache(),
            reply.text(),
            String::from_utf8_lossy(&expected),
        );
        Read { reply, elapsed }
    }

    /// `POST /<resource>` as `tenant`: a successful mutation; returns the new version.
    pub async fn change(&self, tenant: &str, resource: &str) -> u64 {
        let reply = send(
            &self.app,
            post(&format!("/{resource}"), Some(tenant), serde_json::json!({})),
        )
        .await;
        assert_eq!(
            reply.status,
            http::StatusCode::OK,
            "POST {resource}: {reply:?}"
        );
        assert_eq!(reply.header("x-cache-invalidated"), resource);
        let version: u64 = serde_json::from_slice(&reply.body).expect("a version");
        assert_eq!(version, self.db.version(tenant, resource));
        version
    }

    /// Reads until one answers `HIT` (each read checked as in [`read`](Self::read)), or
    /// panics after `timeout`. Returns the reads made.
    pub async fn read_until_hit(
        &self,
        tenant: &str,
        resource: &str,
        query: Option<&str>,
        timeout: Duration,
    ) -> Vec<Read> {
        let deadline = std::time::Instant::now() + timeout;
        let mut reads = Vec::new();
        loop {
            let read = self.read(tenant, resource, query).await;
            let hit = read.x_cache() == "HIT";
            reads.push(read);
            if hit {
                return reads;
            }
            if std::time::Instant::now() >= deadline {
                let mut answers: Vec<(String, usize)> = Vec::new();
                for read in &reads {
                    match answers.last_mut() {
                        Some((last, n)) if last == read.x_cache() => *n += 1,
                        _ => answers.push((read.x_cache().to_owned(), 1)),
                    }
                }
                panic!("no HIT for {resource} of {tenant:?} within {timeout:?}; answers (runs): {answers:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Waits until `server` holds an entry of `resource` for `tenant` (a plain tenant id,
/// `[A-Za-z0-9_.-]`, which keys keep readable). A `HIT` alone does not prove it: a read
/// can be answered from the in-process flight before the store reaches Redis.
pub fn wait_until_stored(server: &crate::RedisServer, tenant: &str, resource: &str) {
    let pattern = format!("api-cache:{{t.{tenant}}}:e:{resource}:*");
    crate::redis_server::wait_until(
        Duration::from_secs(10),
        &format!("an entry {pattern} is stored"),
        || !server.keys(&pattern).is_empty(),
    );
}
