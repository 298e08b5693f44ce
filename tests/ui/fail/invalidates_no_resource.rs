use cache_runtime::invalidates;

#[invalidates]
async fn create_template() -> &'static str {
    "{}"
}

fn main() {}
