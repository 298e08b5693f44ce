use cache_runtime::cached;

#[cached(resource = "contacts", ttl = 60, vary = [user, cookie("session")])]
async fn list_contacts() -> &'static str {
    "[]"
}

fn main() {}
