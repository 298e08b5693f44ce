//! `stale_while_revalidate = N` (0 turns the default grace off) and
//! `stale_after_invalidation = N` (at most the TTL), also with a TTL constant.

#![deny(warnings)]

use axum::routing::get;
use axum::Router;
use cache_runtime::{cached, presets};

#[cached(resource = "analytics", ttl = 600, stale_while_revalidate = 60, stale_after_invalidation = 30)]
async fn dashboard() -> &'static str {
    "{}"
}

#[cached(resource = "contacts", ttl = presets::CONTACTS, stale_while_revalidate = 0)]
async fn contacts() -> &'static str {
    "[]"
}

#[cached(resource = "conversations", ttl = presets::CONVERSATIONS, stale_after_invalidation = 10)]
async fn conversations() -> &'static str {
    "[]"
}

fn main() {
    let _app: Router = Router::new()
        .route("/dashboard", get(dashboard))
        .route("/contacts", get(contacts))
        .route("/conversations", get(conversations));
}
