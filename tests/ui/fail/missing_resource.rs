use cache_runtime::cached;

#[cached(ttl = 1800)]
async fn list_templates() -> &'static str {
    "[]"
}

fn main() {}
