use cache_runtime::cached;

#[cached(resource = "templates", ttl = 60)]
fn list_templates() -> &'static str {
    "[]"
}

fn main() {}
