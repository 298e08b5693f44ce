use cache_runtime::cached;

// Zero is what the route does without the option.
#[cached(resource = "templates", ttl = 60, browser_ttl = 0)]
async fn list_templates() -> &'static str {
    "[]"
}

// A plain function sends nothing to a browser.
#[cached(resource = "reports", ttl = 60, scope = global, key = (month), browser_ttl = 30)]
async fn monthly_report(month: u32) -> u32 {
    month
}

// Seconds, as for `ttl`.
#[cached(resource = "contacts", ttl = 60, browser_ttl = "30")]
async fn list_contacts() -> &'static str {
    "[]"
}

fn main() {}
