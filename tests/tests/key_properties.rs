//! Property tests of key building (issues 2 and 6): equal requests share a key; requests
//! that differ in tenant, user, path or any query value never do; parameter order does
//! not matter; every key is bounded.

use std::collections::BTreeMap;

use cache_runtime::key::{normalize_query, Tenant};
use cache_runtime::{Cache, CacheConfig};
use proptest::prelude::*;

fn cache() -> Cache {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(Cache::new(CacheConfig::default()))
        .unwrap()
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Req {
    tenant: String,
    user: Option<String>,
    path: String,
    /// name -> values in order (repeated names allowed).
    query: BTreeMap<String, Vec<String>>,
}

fn text() -> impl Strategy<Value = String> {
    // Includes separators, escapes, braces, globs and non-ASCII.
    proptest::string::string_regex("[a-z0-9&=%+{}*?:#\\[\\] é\u{0}]{0,8}").unwrap()
}

fn req() -> impl Strategy<Value = Req> {
    (
        text(),
        proptest::option::of(text()),
        proptest::string::string_regex("/[a-z/]{0,6}").unwrap(),
        proptest::collection::btree_map(
            proptest::string::string_regex("[a-z]{1,3}").unwrap(),
            proptest::collection::vec(text(), 1..3),
            0..4,
        ),
    )
        .prop_map(|(tenant, user, path, query)| Req {
            tenant,
            user,
            path,
            query,
        })
}

fn encode(s: &str) -> String {
    form_encode(s)
}

fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The query string with names in the given order (values of one name keep theirs).
fn query_string(query: &BTreeMap<String, Vec<String>>, reverse: bool) -> String {
    let mut names: Vec<&String> = query.keys().collect();
    if reverse {
        names.reverse();
    }
    names
        .into_iter()
        .flat_map(|name| {
            query[name]
                .iter()
                .map(move |v| format!("{}={}", encode(name), encode(v)))
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn entry_key(cache: &Cache, req: &Req, reverse: bool) -> String {
    let mut builder = cache
        .key(Tenant::Scoped(&req.tenant), "contacts")
        .unwrap()
        .request("GET", &req.path, Some(&query_string(&req.query, reverse)));
    if let Some(user) = &req.user {
        builder = builder.part("vary:user", user);
    }
    builder.build().entry_key().to_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn distinct_requests_never_share_a_key(a in req(), b in req()) {
        let cache = cache();
        let (ka, kb) = (entry_key(&cache, &a, false), entry_key(&cache, &b, false));
        // Empty tenants are not scopes (they bypass); compare the rest.
        if a == b {
            prop_assert_eq!(ka, kb);
        } else {
            prop_assert_ne!(ka, kb, "{:?} vs {:?}", a, b);
        }
    }

    #[test]
    fn parameter_order_never_matters_and_keys_are_bounded(a in req()) {
        let cache = cache();
        let key = entry_key(&cache, &a, false);
        prop_assert_eq!(&key, &entry_key(&cache, &a, true));
        prop_assert!(key.len() <= 200, "{} bytes", key.len());
    }

    #[test]
    fn normalization_decodes_what_was_encoded(a in req()) {
        let pairs = normalize_query(&query_string(&a.query, true));
        let expected: Vec<(String, String)> = a
            .query
            .iter()
            .flat_map(|(n, vs)| vs.iter().map(move |v| (n.clone(), v.clone())))
            .collect();
        prop_assert_eq!(pairs, expected);
    }
}
