//! Whatever a handler returns stays valid: `impl IntoResponse` (bare or inside a
//! `Result`), a tuple, a `Response`, nothing at all.

#![deny(warnings)]

use axum::extract::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cache_runtime::cached;

struct ApiError;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        StatusCode::BAD_GATEWAY.into_response()
    }
}

fn fetch(ok: bool) -> Result<u32, ApiError> {
    if ok {
        Ok(7)
    } else {
        Err(ApiError)
    }
}

#[cached(resource = "analytics", ttl = 60)]
async fn opaque() -> impl IntoResponse {
    (StatusCode::OK, "opaque")
}

#[cached(resource = "analytics", ttl = 60)]
async fn opaque_result() -> Result<impl IntoResponse, ApiError> {
    let count = fetch(true)?;
    Ok(Json(count))
}

#[cached(resource = "analytics", ttl = 60)]
async fn tuple() -> (StatusCode, Json<Vec<u32>>) {
    (StatusCode::OK, Json(vec![1, 2, 3]))
}

#[cached(resource = "analytics", ttl = 60)]
async fn response() -> Response {
    match fetch(false) {
        Ok(count) => Json(count).into_response(),
        Err(error) => return error.into_response(),
    }
}

#[cached(resource = "analytics", ttl = 60)]
async fn std_result() -> std::result::Result<String, (StatusCode, String)> {
    Err((StatusCode::NOT_FOUND, "none".to_owned()))
}

#[cached(resource = "analytics", ttl = 60)]
async fn nothing() {}

fn main() {
    let _app: Router = Router::new()
        .route("/opaque", get(opaque))
        .route("/opaque-result", get(opaque_result))
        .route("/tuple", get(tuple))
        .route("/response", get(response))
        .route("/std-result", get(std_result))
        .route("/nothing", get(nothing));
}
