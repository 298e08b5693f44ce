//! Attributes, doc comments, visibility and the function's path survive the rewrite.

#![deny(warnings)]

use axum::routing::get;
use axum::Router;
use cache_runtime::{cached, invalidates};

mod routes {
    use super::cached;

    /// Lists the templates of the caller's organization.
    #[cached(resource = "templates", ttl = 60)]
    #[allow(clippy::unused_async)]
    pub(crate) async fn list_templates() -> String {
        #![allow(unused_mut)]
        let mut body = String::from("[]");
        body.push('\n');
        body
    }
}

#[cached(resource = "templates", ttl = 60)]
async fn r#match() -> &'static str {
    "raw identifiers are fine"
}

#[invalidates("templates")]
#[deny(unused_variables)]
pub async fn delete_templates() -> &'static str {
    "deleted"
}

fn main() {
    let _app: Router = Router::new()
        .route(
            "/templates",
            get(routes::list_templates).delete(delete_templates),
        )
        .route("/match", get(r#match));
}
