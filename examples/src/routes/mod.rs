//! The HTTP surface: the API routes of the rollout plan (each read `#[cached]`, each
//! mutation `#[invalidates]`), the debug routes the report reads, and the one-line
//! access log.

pub mod analytics;
pub mod campaigns;
pub mod contacts;
pub mod conversations;
pub mod organization;
pub mod templates;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use cache_runtime::Cache;
use serde::{Deserialize, Serialize};

use crate::auth::{require_auth, Tokens};
use crate::db::Db;
use crate::error::ApiError;
use crate::extract::Body;
use crate::seed::SeedSummary;
use crate::AppState;

/// Body of a successful DELETE.
#[derive(Debug, Serialize, Deserialize)]
pub struct Deleted {
    /// Always true.
    pub success: bool,
    /// The caller's organization.
    pub organization_id: i64,
    /// The deleted id.
    pub id: i64,
}

impl Deleted {
    /// A DELETE of `id` in `organization_id`.
    pub fn new(organization_id: i64, id: i64) -> Self {
        Deleted {
            success: true,
            organization_id,
            id,
        }
    }
}

/// The routes under `/api`, behind bearer-token authentication.
fn api(state: AppState, tokens: Tokens) -> Router {
    use analytics::dashboard;
    use campaigns::{create_broadcast, create_drip, list_broadcasts, list_drips};
    use contacts::{
        create_contact, create_contact_forgetting_contacts, delete_contact, list_contacts,
        update_contact,
    };
    use conversations::{create_conversation, list_conversations};
    use organization::{current_organization, my_profile, update_organization};
    use templates::{create_template, delete_template, list_templates, update_template};

    Router::new()
        .route("/api/templates", get(list_templates).post(create_template))
        .route(
            "/api/templates/{id}",
            put(update_template).delete(delete_template),
        )
        .route(
            "/api/contacts",
            if state.incomplete_invalidation {
                get(list_contacts).post(create_contact_forgetting_contacts)
            } else {
                get(list_contacts).post(create_contact)
            },
        )
        .route(
            "/api/contacts/{id}",
            put(update_contact).delete(delete_contact),
        )
        .route("/api/analytics/dashboard", get(dashboard))
        .route(
            "/api/broadcast",
            get(list_broadcasts).post(create_broadcast),
        )
        .route("/api/drip-campaigns", get(list_drips).post(create_drip))
        .route(
            "/api/conversations",
            get(list_conversations).post(create_conversation),
        )
        .route(
            "/api/organizations/current",
            get(current_organization).put(update_organization),
        )
        .route("/api/profiles/me", get(my_profile))
        .route_layer(from_fn_with_state(tokens, require_auth))
        .with_state(state)
}

/// What the debug routes read.
#[derive(Clone)]
struct DebugState {
    db: Db,
    cache: Cache,
    seed: Arc<SeedSummary>,
}

/// Body of `PUT /debug/cache`.
#[derive(Debug, Deserialize)]
struct CacheSwitch {
    enabled: bool,
}

/// Unauthenticated introspection for the report and for people trying the demo:
/// `/debug/db` (query counter), `/debug/cache` (cache stats; PUT `{"enabled": bool}`
/// turns the cache off or on), `/debug/seed` (what was seeded).
fn debug(state: DebugState) -> Router {
    Router::new()
        .route(
            "/debug/db",
            get(|State(s): State<DebugState>| async move { Json(s.db.stats()) }),
        )
        .route(
            "/debug/cache",
            get(|State(s): State<DebugState>| async move {
                // The stats, and the last mismatches shadow runs and verification found.
                let mut stats = serde_json::to_value(s.cache.stats()).unwrap_or_default();
                if let Some(fields) = stats.as_object_mut() {
                    let found = serde_json::to_value(s.cache.recent_mismatches());
                    fields.insert("recent_mismatches".into(), found.unwrap_or_default());
                }
                Json(stats)
            })
            .put(
                |State(s): State<DebugState>, Body(switch): Body<CacheSwitch>| async move {
                    s.cache.set_enabled(switch.enabled);
                    Json(serde_json::json!({ "enabled": switch.enabled }))
                },
            ),
        )
        .route(
            "/debug/seed",
            get(|State(s): State<DebugState>| async move { Json(s.seed.as_ref().clone()) }),
        )
        .with_state(state)
}

/// The whole application router.
pub fn router(state: AppState, tokens: Tokens, cache: Cache, seed: Arc<SeedSummary>) -> Router {
    let debug_state = DebugState {
        db: state.db.clone(),
        cache: cache.clone(),
        seed,
    };
    Router::new()
        .merge(api(state, tokens))
        .merge(debug(debug_state))
        // /metrics (Prometheus), /cache/stats (JSON), /cache/dashboard: no bearer token,
        // like /debug (operators' pages; put them behind admin auth in production).
        .merge(cache.observability_router())
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({ "ok": true })) }),
        )
        .fallback(|| async { ApiError::RouteNotFound.into_response() })
        .layer(cache.extension())
        .layer(from_fn(access_log))
}

/// The cache resource a path belongs to, for logs and the report's per-route rows.
pub fn resource_of(path: &str) -> &'static str {
    let path = path.split('?').next().unwrap_or(path);
    let segment = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    if segment("/api/templates") {
        "templates"
    } else if segment("/api/contacts") {
        "contacts"
    } else if segment("/api/analytics") {
        "analytics"
    } else if segment("/api/broadcast") {
        "broadcast"
    } else if segment("/api/drip-campaigns") {
        "drip-campaigns"
    } else if segment("/api/conversations") {
        "conversations"
    } else if segment("/api/organizations") {
        "organization"
    } else if segment("/api/profiles") {
        "profiles"
    } else if segment("/debug") || path == "/health" {
        "debug"
    } else {
        "other"
    }
}

/// One log line per request, in the reference's format:
/// `[Cache HIT] templates - 0.4ms (age: 12s) GET /api/templates?page=2 200`.
/// The outcome is the response's `X-Cache` header; a successful mutation shows what it
/// invalidated (`X-Cache-Invalidated`); other requests (errors before the cache, debug
/// routes) are logged as `[METHOD]`.
async fn access_log(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let response = next.run(req).await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let resource = resource_of(uri.path());
    let status = response.status().as_u16();
    match (
        header("x-cache"),
        header("x-cache-age"),
        header("x-cache-invalidated"),
    ) {
        (Some(outcome), Some(age), _) => tracing::info!(
            target: "examples::access",
            "[Cache {outcome}] {resource} - {elapsed_ms:.1}ms (age: {age}s) {method} {uri} {status}"
        ),
        (Some(outcome), None, _) => tracing::info!(
            target: "examples::access",
            "[Cache {outcome}] {resource} - {elapsed_ms:.1}ms {method} {uri} {status}"
        ),
        (None, _, Some(invalidated)) => tracing::info!(
            target: "examples::access",
            "[Cache INVALIDATED {invalidated}] {resource} - {elapsed_ms:.1}ms {method} {uri} {status}"
        ),
        (None, _, None) => tracing::info!(
            target: "examples::access",
            "[{method}] {resource} - {elapsed_ms:.1}ms {uri} {status}"
        ),
    }
    response
}
