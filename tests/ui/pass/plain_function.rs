//! A plain async function (not a handler) cached under an explicit key: the signature is
//! kept as written, for `Result` and plain values, free functions and methods.

#![deny(warnings)]

use serde::{Deserialize, Serialize};

use cache_runtime::cached;

#[derive(Debug)]
struct DbError;

#[derive(Serialize, Deserialize)]
struct Contact {
    id: u64,
    name: String,
}

struct Db;

impl Db {
    async fn query(&self, org_id: i64, text: &str) -> Result<Vec<Contact>, DbError> {
        Ok(vec![Contact {
            id: org_id as u64,
            name: text.to_owned(),
        }])
    }

    #[cached(resource = "contacts", ttl = 60, key = (org_id), scope = org_id)]
    async fn contact_count(&self, org_id: i64) -> u64 {
        self.query(org_id, "")
            .await
            .map_or(0, |rows| rows.len() as u64)
    }
}

#[cached(resource = "contacts", ttl = 60, key = (org_id, text), scope = org_id)]
async fn search_contacts(db: &Db, org_id: i64, text: &str) -> Result<Vec<Contact>, DbError> {
    let rows = db.query(org_id, text).await?;
    Ok(rows)
}

#[cached(resource = "analytics", ttl = 60, key = (), scope = global)]
async fn platform_totals() -> (u64, u64) {
    (3, 4)
}

#[cached(resource = "templates", ttl = 60, key = (names.len(), prefix), scope = global)]
pub(crate) async fn render<T>(names: Vec<T>, prefix: String) -> Vec<String>
where
    T: AsRef<str>,
{
    if names.is_empty() {
        return Vec::new();
    }
    names
        .iter()
        .map(|name| format!("{prefix}{}", name.as_ref()))
        .collect()
}

/// The body may consume the arguments the key is made of: the key is encoded first.
#[cached(resource = "contacts", ttl = 60, key = (org_id, query), scope = org_id)]
async fn consumes_its_key(org_id: i64, query: String) -> Vec<String> {
    vec![query, org_id.to_string()]
}

fn main() {
    // Building the futures proves the signatures are unchanged; they are not run here.
    let db = Db;
    let _search = search_contacts(&db, 1, "ada");
    let _count = db.contact_count(1);
    let _totals = platform_totals();
    let _render = render(vec!["welcome"], "t-".to_owned());
    let _consumes = consumes_its_key(1, "ada".to_owned());
}
