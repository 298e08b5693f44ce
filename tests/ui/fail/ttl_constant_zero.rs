use cache_runtime::cached;

const DISABLED: u32 = 0;

#[cached(resource = "widgets", ttl = DISABLED)]
async fn list_widgets() -> &'static str {
    "[]"
}

fn main() {}
