use cache_runtime::cached;

#[cached(resource = "analytics", ttl = 60, key = (org), scope = org, stale_while_revalidate = 30)]
async fn totals(org: i64) -> u64 {
    org as u64
}

fn main() {}
