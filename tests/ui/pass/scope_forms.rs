//! `scope = global` and `scope = <expression over the arguments>`, for both attributes.

#![deny(warnings)]

use axum::extract::{Extension, Path};
use axum::routing::get;
use axum::Router;
use cache_runtime::{cached, invalidates};

#[derive(Clone)]
struct Auth {
    org_id: i64,
    org_slug: Option<String>,
}

#[cached(resource = "templates", ttl = 60, scope = global)]
async fn shared_templates() -> &'static str {
    "[]"
}

#[cached(resource = "organization", ttl = 60, scope = auth.org_id)]
async fn organization(Extension(auth): Extension<Auth>) -> String {
    format!("org {}", auth.org_id)
}

#[cached(resource = "organization", ttl = 60, scope = auth.org_slug)]
async fn organization_by_slug(Extension(auth): Extension<Auth>) -> String {
    auth.org_slug.unwrap_or_default()
}

#[cached(resource = "contacts", ttl = 60, scope = org_id)]
async fn contacts_of(Path(org_id): Path<String>) -> String {
    org_id
}

#[invalidates("templates", scope = global)]
async fn publish_shared_template() -> &'static str {
    "published"
}

#[invalidates("organization", "contacts", scope = auth.org_id,)]
async fn rename_organization(Extension(auth): Extension<Auth>) -> String {
    format!("renamed {}", auth.org_id)
}

fn main() {
    let _app: Router = Router::new()
        .route(
            "/templates/shared",
            get(shared_templates).post(publish_shared_template),
        )
        .route("/organization", get(organization).post(rename_organization))
        .route("/organization/slug", get(organization_by_slug))
        .route("/orgs/{org_id}/contacts", get(contacts_of));
}
