use axum::extract::Json;
use cache_runtime::cached;

struct DbError;

#[cached(resource = "templates", ttl = 60)]
async fn list_templates() -> Result<Json<Vec<String>>, DbError> {
    Err(DbError)
}

fn main() {}
