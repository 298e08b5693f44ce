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
//!     .layer(cache.layer());
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

#![warn(missing_docs)]

mod backend;
mod cache;
mod circuit;
pub mod config;
pub mod early_refresh;
mod entry;
pub mod error;
mod flight;
pub mod generation;
mod http_glue;
pub mod invalidate;
pub mod key;
pub mod observe;
mod pending;
mod plain;
pub mod presets;
pub mod registry;
mod scope;
pub mod stats;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use cache::{BypassReason, Cache, Lookup, MissTicket};
pub use cache_macros::{cached, invalidates};
pub use config::{CacheConfig, WaitReplicas};
pub use entry::{CachedResponse, Entry};
pub use error::{BackendError, ConfigError, InvalidationError};
pub use http_glue::{X_CACHE, X_CACHE_AGE, X_CACHE_INVALIDATED};
pub use scope::{CacheScope, ToCacheScope};
pub use stats::{Outcome, StatsSnapshot};
