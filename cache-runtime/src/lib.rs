//! # api-cache runtime
//!
//! A tenant-scoped response cache for axum handlers, backed by Redis (or an in-process
//! store when no `REDIS_URL` is set), driven by two attributes:
//!
//! ```no_run
//! use axum::{extract::{Query, State}, http::StatusCode, routing::get, Json, Router};
//! use cache_runtime::{cached, invalidates, Cache};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone)]
//! struct Db;
//! #[derive(Deserialize)]
//! struct ListQuery { page: Option<u32> }
//! #[derive(Serialize, Deserialize)]
//! struct Template { name: String }
//!
//! #[cached(resource = "templates", ttl = 1800)]
//! async fn list_templates(State(_db): State<Db>, Query(_q): Query<ListQuery>)
//!     -> Result<Json<Vec<Template>>, StatusCode> {
//!     Ok(Json(vec![]))
//! }
//!
//! #[invalidates("templates")]
//! async fn create_template(State(_db): State<Db>, Json(body): Json<Template>)
//!     -> Result<(StatusCode, Json<Template>), StatusCode> {
//!     Ok((StatusCode::CREATED, Json(body)))
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Cache::from_env().await?;
//! let app: Router = Router::new()
//!     .route("/api/templates", get(list_templates).post(create_template))
//!     .with_state(Db)
//!     // Your auth middleware inserts a `CacheScope` (tenant, user) per request.
//!     .layer(cache.extension());
//! # Ok(()) }
//! ```
//!
//! What a client sees: `X-Cache: MISS` then `HIT` with `X-Cache-Age` and `Age`,
//! `Cache-Control: private, no-cache` and a strong `ETag` (a browser revalidates and gets
//! a `304` while nothing changed); `BYPASS` when a request has no tenant scope, caching
//! is off, or Redis is failing. An `#[invalidates]` mutation invalidates its resources
//! for its tenant before it answers, on every outcome but a client error, and also when
//! its client disconnects after the handler started, so the next read is fresh.
//!
//! ## Guarantees
//! - Keys carry the tenant (hash-tagged, escaped) outside any hash: one tenant's entry
//!   can never be served to another.
//! - Invalidation is one write per call (generations), whatever the number of entries,
//!   and a computation that overlapped an invalidation is never served after it.
//! - A hit is one round trip (`MGET` of generations and entry).
//! - Redis down, slow, full, read-only or holding foreign values gives uncached answers
//!   within the response timeout; an open circuit stops trying for a while; an
//!   invalidation that cannot be delivered makes this instance bypass the affected
//!   entries until it is.
//! - Concurrent misses on one key run the handler once per instance.
//!
//! See [`CacheConfig`] for every setting and its environment variable.
//!
//! ## The public API
//!
//! What follows is the stable surface: it changes only with a new minor version (0.x),
//! stated in the changelog. Anything not listed is internal.
//!
//! - The attributes [`cached`] and [`invalidates`].
//! - [`Cache`]: construction ([`Cache::new`], [`Cache::from_env`]), handing it to a
//!   router ([`Cache::extension`]) or to code outside a request ([`Cache::install_global`],
//!   [`Cache::global`], [`Cache::current`], [`Cache::run_with`]), invalidation
//!   ([`Cache::invalidate`], [`Cache::invalidate_global`], [`Cache::invalidate_all`],
//!   [`Cache::flush_pending`] on shutdown), the run-time switches, [`Cache::stats`],
//!   [`Cache::hit_rate`] (named by the design contract, like the reference's) and
//!   [`Cache::is_available`]; and the free functions of [`invalidate`].
//! - Configuration ([`CacheConfig`], [`WaitReplicas`], the [`config`] module), the request
//!   scope ([`CacheScope`], [`ToCacheScope`]), errors ([`ConfigError`],
//!   [`InvalidationError`], [`InvalidResource`], [`BackendError`]), the response headers
//!   ([`X_CACHE`], [`X_CACHE_AGE`], [`X_CACHE_INVALIDATED`]), the figures ([`stats`],
//!   [`Outcome`], [`StatsSnapshot`]) and the startup check of resource names
//!   ([`registry::check_resources`]).
//! - With the `observability` feature (default): [`observe`], the Prometheus collector,
//!   the JSON stats document and the dashboard. [`observe::CacheCollector`] implements
//!   `prometheus_client::collector::Collector` of prometheus-client 0.26: register it in
//!   your own registry with that version of the crate in your Cargo.toml. The crate is
//!   not re-exported (its whole API would become ours); moving to a prometheus-client
//!   release that breaks that trait is a breaking release of this crate.
//!
//! Deliberately not public: how keys are laid out in Redis and the generation tokens
//! (they change with the storage format, and nothing outside the engine needs them);
//! a manual lookup/store API (it would skip single flight, the lease and the off-path
//! store that `#[cached]` applies; a plain `async fn` with `#[cached(key = ...)]` is the
//! supported way to cache anything that is not a handler); what the macros generate
//! (`__private`, hidden, versioned with the pinned macro crate).
//!
//! ## Cargo features
//!
//! - `tls` (default): `rediss://` through rustls, trusting the platform's roots.
//! - `observability` (default): the [`observe`] module and
//!   `Cache::observability_router`, with their dependency on prometheus-client. Turn it
//!   off (`default-features = false, features = ["tls"]`) when your app has its own
//!   metrics stack; [`Cache::stats`] stays.
//! - `testing`: an unstable engine API (manual lookup and store, key building) for this
//!   workspace's integration tests and benchmarks. Not covered by semver; do not use it.

#![warn(missing_docs)]

mod axum;
mod backend;
mod cache;
mod circuit;
pub mod config;
pub mod early_refresh;
mod entry;
pub mod error;
mod flight;
mod generation;
mod key;
#[cfg(feature = "observability")]
pub mod observe;
mod pending;
mod plain;
pub mod presets;
pub mod registry;
mod scope;
mod spec;
pub mod stats;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;
mod thread_memo;
mod verify;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use crate::axum::{X_CACHE, X_CACHE_AGE, X_CACHE_INVALIDATED};
pub use cache::Cache;
pub use cache_macros::{cached, invalidates};
pub use config::{CacheConfig, LocalTier, WaitReplicas};
pub use error::{BackendError, ConfigError, InvalidationError};
pub use key::InvalidResource;
pub use scope::{CacheScope, ToCacheScope};
pub use stats::{Outcome, StatsSnapshot};
pub use verify::{Mismatch, ResourceMode};

/// Invalidation through [`Cache::current`] (the request's cache, else the process-wide
/// one), like the reference's `invalidateCache`: for jobs, scripts and code outside a
/// request; handlers use `#[invalidates]`. Each call costs one round trip whatever the
/// number of cached entries. These are thin entry points: the engine, with its pending
/// set and redelivery, is `Cache`'s (`cache/invalidation.rs`).
pub mod invalidate {
    use crate::error::InvalidationError;
    use crate::Cache;

    /// Invalidates `resources` of `tenant` in [`Cache::current`].
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// cache_runtime::invalidate::resources("org_1", &["contacts", "analytics"]).await.unwrap();
    /// # });
    /// ```
    pub async fn resources(tenant: &str, resources: &[&str]) -> Result<(), InvalidationError> {
        Cache::current().invalidate(tenant, resources).await
    }

    /// Drops everything cached for `tenant` in [`Cache::current`].
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// cache_runtime::invalidate::all("org_1").await.unwrap();
    /// # });
    /// ```
    pub async fn all(tenant: &str) -> Result<(), InvalidationError> {
        Cache::current().invalidate_all(tenant).await
    }
}
