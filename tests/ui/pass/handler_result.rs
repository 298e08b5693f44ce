//! The reference handler: extractors, a `Result` return, `?` and an early `return`.

#![deny(warnings)]

use axum::extract::{Json, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cache_runtime::cached;
use serde::{Deserialize, Serialize};

#[derive(Clone)]
struct Db;

#[derive(Deserialize)]
struct ListQuery {
    page: Option<u32>,
}

#[derive(Serialize)]
struct TemplatePage {
    page: u32,
    names: Vec<String>,
}

struct ApiError;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    }
}

impl Db {
    fn template_names(&self, page: u32) -> Result<Vec<String>, ApiError> {
        Ok(vec![format!("welcome-{page}")])
    }
}

#[cached(resource = "templates", ttl = 1800)]
async fn list_templates(
    State(db): State<Db>,
    Query(query): Query<ListQuery>,
) -> Result<Json<TemplatePage>, ApiError> {
    let page = query.page.unwrap_or(1);
    if page == 0 {
        return Err(ApiError);
    }
    let names = db.template_names(page)?;
    Ok(Json(TemplatePage { page, names }))
}

fn main() {
    let _app: Router = Router::new()
        .route("/templates", get(list_templates))
        .with_state(Db);
}
