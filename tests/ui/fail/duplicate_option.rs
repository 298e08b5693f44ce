use cache_runtime::cached;

#[cached(resource = "templates", ttl = 1800, ttl = 60)]
async fn list_templates() -> &'static str {
    "[]"
}

fn main() {}
