//! `ttl` takes a constant as well as a literal: the reference rollout's presets, or the
//! app's own constants and constant expressions.

#![deny(warnings)]

use axum::routing::get;
use axum::Router;
use cache_runtime::{cached, presets};

const FIVE_MINUTES: u32 = 5 * 60;

#[cached(resource = "conversations", ttl = presets::CONVERSATIONS)]
async fn conversations() -> &'static str {
    "[]"
}

#[cached(resource = "contacts", ttl = cache_runtime::presets::CONTACTS)]
async fn contacts() -> &'static str {
    "[]"
}

#[cached(resource = "widgets", ttl = FIVE_MINUTES)]
async fn widgets() -> &'static str {
    "[]"
}

#[cached(resource = "reports", ttl = 2 * presets::ANALYTICS)]
async fn reports() -> &'static str {
    "{}"
}

fn main() {
    let _app: Router = Router::new()
        .route("/conversations", get(conversations))
        .route("/contacts", get(contacts))
        .route("/widgets", get(widgets))
        .route("/reports", get(reports));
}
