use cache_runtime::invalidates;

#[invalidates("templates", contacts)]
async fn create_template() -> &'static str {
    "{}"
}

fn main() {}
