use cache_runtime::cached;

// A list of JSON field names, as string literals.
#[cached(resource = "reports", ttl = 60, verify_ignore = "generated_at")]
async fn report() -> &'static str {
    "{}"
}

#[cached(resource = "reports", ttl = 60, verify_ignore = [generated_at, "id", "id"])]
async fn report_by_id() -> &'static str {
    "{}"
}

// Nothing is compared, so nothing can be ignored.
#[cached(resource = "stamps", ttl = 60, verify = false, verify_ignore = ["generated_at"])]
async fn stamp() -> &'static str {
    "now"
}

// A plain function is never shadowed.
#[cached(resource = "totals", ttl = 60, scope = global, key = (month), verify = false)]
async fn monthly_total(month: u32) -> u32 {
    month
}

fn main() {}
