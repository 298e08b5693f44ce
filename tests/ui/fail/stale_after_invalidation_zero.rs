use cache_runtime::cached;

#[cached(resource = "analytics", ttl = 600, stale_after_invalidation = 0)]
async fn dashboard() -> &'static str {
    "{}"
}

fn main() {}
