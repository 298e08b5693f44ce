//! `skip_cache` (alone or with a value) and `cache_only_success`.

#![deny(warnings)]

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use cache_runtime::cached;

#[cached(resource = "campaigns", ttl = 60, skip_cache)]
async fn campaigns_rolled_back() -> &'static str {
    "[]"
}

#[cached(resource = "campaigns", ttl = 60, skip_cache = false)]
async fn campaigns() -> &'static str {
    "[]"
}

#[cached(resource = "campaigns", ttl = 60, cache_only_success = false)]
async fn campaign_lookup() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "no such campaign")
}

#[cached(resource = "campaigns", ttl = 60, skip_cache = true, cache_only_success = true)]
async fn campaigns_explicit() -> &'static str {
    "[]"
}

fn main() {
    let _app: Router = Router::new()
        .route("/campaigns/old", get(campaigns_rolled_back))
        .route("/campaigns", get(campaigns))
        .route("/campaigns/lookup", get(campaign_lookup))
        .route("/campaigns/explicit", get(campaigns_explicit));
}
