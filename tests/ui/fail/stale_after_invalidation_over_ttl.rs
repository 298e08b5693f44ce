use cache_runtime::cached;

#[cached(resource = "analytics", ttl = 60, stale_after_invalidation = 120)]
async fn dashboard() -> &'static str {
    "{}"
}

fn main() {}
