use cache_runtime::cached;

#[cached(resource = "templates", ttl = "30m")]
async fn list_templates() -> &'static str {
    "[]"
}

fn main() {}
