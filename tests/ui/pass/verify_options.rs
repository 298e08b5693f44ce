//! `verify = false` and `verify_ignore = [...]`: the ways out of comparison for routes
//! whose output changes on every call.

#![deny(warnings)]

use axum::routing::get;
use axum::{Json, Router};
use cache_runtime::cached;
use serde_json::{json, Value};

#[cached(resource = "analytics", ttl = 600, verify_ignore = ["generated_at", "request_id"])]
async fn dashboard() -> Json<Value> {
    Json(json!({ "generated_at": 0, "visits": 3 }))
}

#[cached(resource = "stamps", ttl = 60, verify = false)]
async fn stamp() -> String {
    "request 7".to_owned()
}

#[cached(resource = "stamps", ttl = 60, verify)]
async fn stamp_compared() -> &'static str {
    "same every time"
}

fn main() {
    let _app: Router = Router::new()
        .route("/dashboard", get(dashboard))
        .route("/stamp", get(stamp))
        .route("/stamp/compared", get(stamp_compared));
}
