use axum::extract::Json;
use axum::http::StatusCode;
use cache_runtime::cached;

#[cached(resource = "templates")]
async fn list_templates(fail: bool) -> Result<Json<Vec<String>>, StatusCode> {
    if fail {
        return Err("no templates");
    }
    Ok(Json(vec!["welcome".to_owned()]))
}

fn main() {}
