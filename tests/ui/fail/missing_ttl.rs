use cache_runtime::cached;

// A resource named like one of the reference's does not get its TTL by the name.
#[cached(resource = "contacts")]
async fn list_contacts() -> &'static str {
    "[]"
}

#[cached(resource = "message-templates")]
async fn list_message_templates() -> &'static str {
    "[]"
}

fn main() {}
