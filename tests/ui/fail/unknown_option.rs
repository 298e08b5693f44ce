use cache_runtime::cached;

#[cached(resource = "templates", ttl = 60, ttl_secs = 1800)]
async fn list_templates() -> &'static str {
    "[]"
}

fn main() {}
