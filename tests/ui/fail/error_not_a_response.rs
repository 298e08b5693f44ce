use axum::extract::Json;
use cache_runtime::cached;

struct DbError;

#[cached(resource = "templates")]
async fn list_templates() -> Result<Json<Vec<String>>, DbError> {
    Err(DbError)
}

fn main() {}
