//! `tags` and every form of `vary`.

#![deny(warnings)]

use axum::routing::get;
use axum::Router;
use cache_runtime::cached;

#[cached(resource = "analytics", ttl = 60, tags = ["contacts", "conversations"])]
async fn dashboard() -> &'static str {
    "{}"
}

#[cached(resource = "conversations", ttl = 60, vary = user)]
async fn my_conversations() -> &'static str {
    "[]"
}

#[cached(resource = "templates", ttl = 60, vary = header("Accept-Language"))]
async fn localized_templates() -> &'static str {
    "[]"
}

#[cached(
    resource = "analytics",
    ttl = 120,
    tags = ["campaigns"],
    vary = [user, header("accept-language"), header("x-client-version")],
)]
async fn personal_dashboard() -> &'static str {
    "{}"
}

fn main() {
    let _app: Router = Router::new()
        .route("/dashboard", get(dashboard))
        .route("/conversations/mine", get(my_conversations))
        .route("/templates/localized", get(localized_templates))
        .route("/dashboard/mine", get(personal_dashboard));
}
