//! Seeing the cache work: a Prometheus endpoint, a JSON stats document and a live
//! dashboard page, mounted into any axum app with one line.
//!
//! | default path       | serves                                                        |
//! |--------------------|---------------------------------------------------------------|
//! | `/metrics`         | the Prometheus exposition ([`CacheCollector`], see the README's Observability section) |
//! | `/cache/stats`     | the JSON [`StatsDocument`]                                    |
//! | `/cache/dashboard` | an HTML page charting hit rate and request rate, live        |
//!
//! Everything here reads the in-process counters of one [`Cache`] when asked: it never
//! writes to the cache, never reaches Redis and adds nothing to the request path. The
//! figures name resources, never tenants or users; still, mount the router where your
//! operators reach it (behind your admin auth or on an internal listener), not your users.

mod dashboard;
mod prometheus;

use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;

pub use dashboard::StatsDocument;
pub use prometheus::{render_metrics, CacheCollector, MetricsFormat};
/// The `prometheus-client` this module encodes with, for registering [`CacheCollector`]
/// in a registry of your own without a second copy of the crate.
pub use prometheus_client;

use crate::Cache;

/// The three observability routes of one cache, with their paths; see the module docs.
///
/// ```
/// use axum::{routing::get, Router};
/// use cache_runtime::{observe::Observability, Cache, CacheConfig};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let cache = Cache::new(CacheConfig::default()).await.unwrap();
/// let app: Router = Router::new()
///     .route("/api/hello", get(|| async { "hi" }))
///     .layer(cache.extension())
///     // /metrics, /cache/stats, /cache/dashboard:
///     .merge(cache.observability_router());
///
/// // Or elsewhere, e.g. under an admin prefix:
/// let admin: Router = Router::new().nest(
///     "/admin",
///     Observability::new(cache.clone())
///         .metrics_path("/prometheus")
///         .dashboard_path("/cache")
///         .stats_path("/cache.json")
///         .router(),
/// );
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Observability {
    cache: Cache,
    metrics_path: String,
    stats_path: String,
    dashboard_path: String,
}

impl Observability {
    /// Where [`Observability::router`] serves the Prometheus exposition by default.
    pub const DEFAULT_METRICS_PATH: &'static str = "/metrics";
    /// Where it serves the JSON [`StatsDocument`] by default.
    pub const DEFAULT_STATS_PATH: &'static str = "/cache/stats";
    /// Where it serves the dashboard page by default.
    pub const DEFAULT_DASHBOARD_PATH: &'static str = "/cache/dashboard";

    /// The routes of `cache` at the default paths.
    pub fn new(cache: Cache) -> Self {
        Observability {
            cache,
            metrics_path: Self::DEFAULT_METRICS_PATH.to_owned(),
            stats_path: Self::DEFAULT_STATS_PATH.to_owned(),
            dashboard_path: Self::DEFAULT_DASHBOARD_PATH.to_owned(),
        }
    }

    /// Serves the Prometheus exposition at `path` (starting with `/`).
    pub fn metrics_path(mut self, path: impl Into<String>) -> Self {
        self.metrics_path = path.into();
        self
    }

    /// Serves the JSON document at `path` (starting with `/`).
    pub fn stats_path(mut self, path: impl Into<String>) -> Self {
        self.stats_path = path.into();
        self
    }

    /// Serves the dashboard at `path` (starting with `/`).
    pub fn dashboard_path(mut self, path: impl Into<String>) -> Self {
        self.dashboard_path = path.into();
        self
    }

    /// A router serving the three routes, to `merge` or `nest` into any app whatever its
    /// state. The dashboard finds the JSON by a URL relative to its own, so the pair
    /// keeps working when nested under a prefix.
    ///
    /// # Panics
    ///
    /// As [`Router::route`] does, when a path does not start with `/` or two are equal:
    /// at startup, never on a request.
    pub fn router<S>(self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let stats_url = dashboard::relative_url(&self.dashboard_path, &self.stats_path);
        Router::new()
            .route(&self.metrics_path, metrics_route(self.cache.clone()))
            .route(&self.stats_path, stats_route(self.cache))
            .route(&self.dashboard_path, dashboard_route(&stats_url))
    }
}

impl Cache {
    /// [`Observability::new(cache).router()`](Observability::router): `/metrics`,
    /// `/cache/stats` and `/cache/dashboard` for this cache, mergeable into any app.
    ///
    /// ```
    /// use axum::Router;
    /// use cache_runtime::{Cache, CacheConfig};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = Cache::new(CacheConfig::default()).await.unwrap();
    /// let app: Router = Router::new().merge(cache.observability_router());
    /// # });
    /// ```
    pub fn observability_router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        Observability::new(self.clone()).router()
    }
}

/// A `GET` route answering with `cache`'s Prometheus exposition, in OpenMetrics when the
/// scraper's `Accept` asks for it, else in the classic text format.
///
/// ```
/// use axum::Router;
/// use cache_runtime::{observe, Cache, CacheConfig};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let cache = Cache::new(CacheConfig::default()).await.unwrap();
/// let internal: Router = Router::new().route("/internal/metrics", observe::metrics_route(cache));
/// # });
/// ```
pub fn metrics_route<S>(cache: Cache) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    // Built once: a registry holding only this cache's collector, which reads the
    // counters at each scrape.
    let registry = std::sync::Arc::new(prometheus::registry_for(&cache));
    get(move |headers: HeaderMap| async move {
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
        let format = MetricsFormat::from_accept(accept);
        match prometheus::encode_registry(&registry, format) {
            Ok(text) => {
                let mut response = text.into_response();
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(format.content_type()),
                );
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
            // Encoding into a String only fails if a metric's own encoding does; say so
            // rather than serve a truncated exposition.
            Err(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the cache metrics",
            )
                .into_response(),
        }
    })
}

/// A `GET` route answering with `cache`'s [`StatsDocument`] as JSON.
///
/// ```
/// use axum::Router;
/// use cache_runtime::{observe, Cache, CacheConfig};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let cache = Cache::new(CacheConfig::default()).await.unwrap();
/// let app: Router = Router::new().route("/cache/stats", observe::stats_route(cache));
/// # });
/// ```
pub fn stats_route<S>(cache: Cache) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    get(move || async move {
        let mut response = Json(StatsDocument::of(&cache)).into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    })
}

/// A `GET` route answering with the dashboard page, which polls `stats_url` (the JSON of
/// [`stats_route`]; relative to the page's own URL, or absolute) every second.
///
/// ```
/// use axum::Router;
/// use cache_runtime::{observe, Cache, CacheConfig};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let cache = Cache::new(CacheConfig::default()).await.unwrap();
/// let app: Router = Router::new()
///     .route("/ops/cache.json", observe::stats_route(cache))
///     .route("/ops/cache", observe::dashboard_route("cache.json"));
/// # });
/// ```
pub fn dashboard_route<S>(stats_url: &str) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let page = dashboard::page(stats_url);
    get(move || async move { dashboard_response(&page) })
}

fn dashboard_response(page: &bytes::Bytes) -> Response {
    let mut response = page.clone().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(dashboard::CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
