use cache_runtime::cached;

#[cached(resource = "contacts", vary = [user, cookie("session")])]
async fn list_contacts() -> &'static str {
    "[]"
}

fn main() {}
