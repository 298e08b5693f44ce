use cache_runtime::cached;

#[cached(resource = "templates", ttl = 0)]
async fn list_templates() -> &'static str {
    "[]"
}

fn main() {}
