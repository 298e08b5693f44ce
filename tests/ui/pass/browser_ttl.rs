//! `browser_ttl = N`: the route lets a browser reuse its copy for N seconds.

#![deny(warnings)]

use axum::routing::get;
use axum::Router;
use cache_runtime::cached;

#[cached(resource = "countries", ttl = 3600, scope = global, browser_ttl = 300)]
async fn countries() -> &'static str {
    "[\"NZ\",\"PT\"]"
}

fn main() {
    let _app: Router = Router::new().route("/countries", get(countries));
}
