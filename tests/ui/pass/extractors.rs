//! The rewritten functions are still handlers whatever they extract: state, extensions,
//! path, headers, and a body extractor last.

#![deny(warnings)]

use axum::extract::{Extension, Json, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use cache_runtime::{cached, invalidates};
use serde::{Deserialize, Serialize};

#[derive(Clone)]
struct AppState {
    greeting: String,
}

#[derive(Clone)]
struct Auth {
    org_id: i64,
}

#[derive(Deserialize, Serialize)]
struct Search {
    text: String,
}

#[cached(resource = "contacts", ttl = 60)]
async fn contact(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(contact_id): Path<u64>,
    headers: HeaderMap,
) -> String {
    let agent = headers.get("user-agent").is_some();
    format!("{} {} {contact_id} {agent}", state.greeting, auth.org_id)
}

// A POST that only reads (a search with a JSON body) can be cached too.
#[cached(resource = "contacts", ttl = 30)]
async fn search_contacts(
    State(state): State<AppState>,
    Json(search): Json<Search>,
) -> Json<Vec<String>> {
    Json(vec![format!("{}: {}", state.greeting, search.text)])
}

#[invalidates("contacts")]
async fn create_contact(
    State(_state): State<AppState>,
    Extension(_auth): Extension<Auth>,
    Json(contact): Json<Search>,
) -> (StatusCode, Json<Search>) {
    (StatusCode::CREATED, Json(contact))
}

#[invalidates("contacts")]
async fn import_contacts(body: String) -> Result<String, StatusCode> {
    if body.is_empty() {
        return Err(StatusCode::UNPROCESSABLE_ENTITY);
    }
    Ok(format!("{} lines", body.lines().count()))
}

fn main() {
    let _app: Router = Router::new()
        .route("/contacts/{id}", get(contact))
        .route("/contacts", post(create_contact))
        .route("/contacts/search", post(search_contacts))
        .route("/contacts/import", post(import_contacts))
        .with_state(AppState {
            greeting: "hello".to_owned(),
        });
}
