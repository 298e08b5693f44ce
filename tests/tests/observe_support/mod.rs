//! Shared by the observability tests (issue 8): a small cached API with the
//! observability routes merged in, as an app mounts them.
//!
//! The API (tenant from `x-tenant`; without it a request has no scope and bypasses):
//! - `GET /api/templates` (`templates`, 1800 s)
//! - `POST /api/templates` (`#[invalidates("templates")]`; 400 without a `name`)
//! - `GET /api/contacts` (`contacts`, 300 s)
//! - `GET /api/reports` (`reports`, 60 s): always fails with 500, so never stored
//!
//! plus `/metrics`, `/cache/stats` and `/cache/dashboard` from
//! `Cache::observability_router`.
//!
//! Each test binary uses part of this module.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use cache_runtime::{cached, invalidates, Cache, CacheConfig, CacheScope};
use serde_json::{json, Value};

#[derive(Clone)]
struct Api;

fn tenant(headers: &HeaderMap) -> String {
    headers
        .get("x-tenant")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[cached(resource = "templates", ttl = 1800)]
async fn list_templates(State(_api): State<Api>, headers: HeaderMap) -> Json<Value> {
    Json(json!({ "organization_id": tenant(&headers), "templates": ["welcome", "renewal"] }))
}

#[invalidates("templates")]
async fn create_template(
    State(_api): State<Api>,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<Value>), StatusCode> {
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .ok_or(StatusCode::BAD_REQUEST)?;
    Ok((StatusCode::CREATED, Json(json!({ "name": name }))))
}

#[cached(resource = "contacts", ttl = 300)]
async fn list_contacts(State(_api): State<Api>, headers: HeaderMap) -> Json<Value> {
    Json(json!({ "organization_id": tenant(&headers), "contacts": [] }))
}

#[cached(resource = "reports", ttl = 60)]
async fn report(State(_api): State<Api>) -> Result<Json<Value>, StatusCode> {
    Err(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The app's auth stand-in: `x-tenant` becomes the request's cache scope.
async fn scope_from_header(mut request: Request, next: Next) -> Response {
    if let Some(tenant) = request
        .headers()
        .get("x-tenant")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    {
        request.extensions_mut().insert(CacheScope::new(tenant));
    }
    next.run(request).await
}

/// The API with the observability routes merged in, as the README shows it.
pub fn app(cache: &Cache) -> Router {
    Router::new()
        .route("/api/templates", get(list_templates).post(create_template))
        .route("/api/contacts", get(list_contacts))
        .route("/api/reports", get(report))
        .with_state(Api)
        .layer(middleware::from_fn(scope_from_header))
        .layer(cache.extension())
        .merge(cache.observability_router())
}

/// A test config: no early refresh, so every outcome is decided by the script alone.
pub fn deterministic(config: CacheConfig) -> CacheConfig {
    config.with_early_refresh_beta(0.0)
}

/// Waits (polling) until `condition` holds, or panics with `what` after `timeout`.
pub async fn wait_for(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
