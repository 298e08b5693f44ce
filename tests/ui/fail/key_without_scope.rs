use cache_runtime::cached;

#[cached(resource = "contacts", ttl = 60, key = (org_id, query))]
async fn search_contacts(org_id: i64, query: String) -> Vec<String> {
    vec![format!("{org_id}:{query}")]
}

fn main() {}
