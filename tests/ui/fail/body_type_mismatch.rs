use axum::extract::Json;
use axum::http::StatusCode;
use cache_runtime::cached;

#[cached(resource = "templates", ttl = 60)]
async fn list_templates(fail: bool) -> Result<Json<Vec<String>>, StatusCode> {
    if fail {
        return Err("no templates");
    }
    Ok(Json(vec!["welcome".to_owned()]))
}

fn main() {}
