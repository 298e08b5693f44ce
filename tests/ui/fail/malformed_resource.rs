use cache_runtime::cached;

#[cached(resource = "Message Templates", ttl = 1800)]
async fn list_templates() -> &'static str {
    "[]"
}

fn main() {}
