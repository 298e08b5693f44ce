//! The reference resources need no `ttl`: they take it from the preset table.

#![deny(warnings)]

use axum::routing::get;
use axum::Router;
use cache_runtime::cached;

#[cached(resource = "conversations")]
async fn conversations() -> &'static str {
    "[]"
}

#[cached(resource = "contacts")]
async fn contacts() -> &'static str {
    "[]"
}

#[cached(resource = "templates")]
async fn templates() -> &'static str {
    "[]"
}

#[cached(resource = "analytics")]
async fn analytics() -> &'static str {
    "{}"
}

#[cached(resource = "campaigns")]
async fn campaigns() -> &'static str {
    "[]"
}

#[cached(resource = "organization")]
async fn organization() -> &'static str {
    "{}"
}

#[cached(resource = "templates", ttl = 60)]
async fn templates_with_own_ttl() -> &'static str {
    "[]"
}

fn main() {
    let _app: Router = Router::new()
        .route("/conversations", get(conversations))
        .route("/contacts", get(contacts))
        .route("/templates", get(templates))
        .route("/analytics", get(analytics))
        .route("/campaigns", get(campaigns))
        .route("/organization", get(organization))
        .route("/templates/short", get(templates_with_own_ttl));
}
