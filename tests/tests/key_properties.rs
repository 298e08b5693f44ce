//! Property tests of key building (issues 2 and 6): equal requests share a key; requests
//! that differ in tenant, user, path or any query value never do; parameter order does
//! not matter; every key is bounded. The same properties through the attributes: a
//! `#[cached(vary = user)]` route on a Router answers every generated request with what
//! that request computes, hits exactly when an equal request came before, and bypasses
//! requests without a user. Besides independent random pairs, near-collisions made on
//! purpose: the same strings with one boundary moved, empty parts, repeated names.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::extract::Extension;
use axum::http::Uri;
use axum::{Json, Router};
use cache_runtime::testing::{normalize_query, Tenant};
use cache_runtime::{cached, Cache, CacheConfig, CacheScope};
use cache_tests::http::{send, Reply};
use proptest::prelude::*;
use serde_json::{json, Value};

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

/// Everything a key is built from, as a sequence of strings: tenant, path, the query's
/// pairs in request order, and named parts (`vary` values, a function's arguments).
#[derive(Debug, Clone)]
struct Parts {
    tenant: String,
    path: String,
    query: Vec<(String, String)>,
    parts: Vec<(String, String)>,
}

impl Parts {
    fn key(&self, cache: &Cache) -> String {
        let query: Vec<String> = self
            .query
            .iter()
            .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
            .collect();
        let mut builder = cache
            .key(Tenant::Scoped(&self.tenant), "contacts")
            .unwrap()
            .request("GET", &self.path, Some(&query.join("&")));
        for (name, value) in &self.parts {
            builder = builder.part(name, value);
        }
        builder.build().entry_key().to_owned()
    }

    /// What two requests must agree on to share a key: the query as handlers see it
    /// (sorted by name, repeated names in request order, `=` alone dropped), the rest
    /// as is.
    #[allow(clippy::type_complexity)]
    fn meaning(&self) -> (&str, &str, Vec<(String, String)>, &[(String, String)]) {
        let mut query: Vec<(String, String)> = self
            .query
            .iter()
            .filter(|(name, value)| !(name.is_empty() && value.is_empty()))
            .cloned()
            .collect();
        query.sort_by(|a, b| a.0.cmp(&b.0));
        (&self.tenant, &self.path, query, &self.parts)
    }

    /// The strings in key order, where a naive concatenation would run them together.
    fn fields(&self) -> Vec<String> {
        let mut fields = vec![self.tenant.clone(), self.path.clone()];
        for (name, value) in self.query.iter().chain(&self.parts) {
            fields.push(name.clone());
            fields.push(value.clone());
        }
        fields
    }

    fn with_fields(&self, fields: Vec<String>) -> Parts {
        let mut fields = fields.into_iter();
        let mut next = || fields.next().expect("as many fields as taken");
        let tenant = next();
        let path = next();
        let query = self.query.iter().map(|_| (next(), next())).collect();
        let parts = self.parts.iter().map(|_| (next(), next())).collect();
        Parts {
            tenant,
            path,
            query,
            parts,
        }
    }
}

/// Few letters, separators among them: boundaries shift onto look-alike strings.
fn near_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[ab=&:]{0,3}").unwrap()
}

fn near_parts() -> impl Strategy<Value = Parts> {
    let pairs = || proptest::collection::vec((near_text(), near_text()), 0..4);
    (
        proptest::string::string_regex("[ab]{1,3}").unwrap(),
        proptest::string::string_regex("/[ab/]{0,3}").unwrap(),
        pairs(),
        pairs(),
    )
        .prop_map(|(tenant, path, query, parts)| Parts {
            tenant,
            path,
            query,
            parts,
        })
}

/// `a` and a near-collision of it: the same strings with one boundary moved (so that
/// their concatenation is unchanged), an empty part or query pair added, a part or
/// pair repeated, two parts swapped, or a query pair turned into a part of the same
/// name and value.
fn near_collision() -> impl Strategy<Value = (Parts, Parts)> {
    (
        near_parts(),
        0..6usize,
        any::<prop::sample::Index>(),
        0..4usize,
    )
        .prop_map(|(a, change, at, shift)| {
            let mut b = a.clone();
            match change {
                0 => {
                    // Move up to `shift` characters from the end of one field to the
                    // start of the next.
                    let mut fields = a.fields();
                    let i = at.index(fields.len() - 1);
                    let keep = fields[i].chars().count().saturating_sub(shift);
                    let moved: String = fields[i].chars().skip(keep).collect();
                    fields[i] = fields[i].chars().take(keep).collect();
                    fields[i + 1].insert_str(0, &moved);
                    b = a.with_fields(fields);
                    assert_eq!(a.fields().concat(), b.fields().concat());
                }
                1 => {
                    let i = at.index(b.parts.len() + 1);
                    b.parts.insert(i, (String::new(), String::new()));
                }
                2 => {
                    let i = at.index(b.query.len() + 1);
                    let name = if shift % 2 == 0 { "" } else { "a" };
                    b.query.insert(i, (name.to_owned(), String::new()));
                }
                3 if !b.parts.is_empty() => {
                    let i = at.index(b.parts.len());
                    b.parts.insert(i, b.parts[i].clone());
                }
                3 if !b.query.is_empty() => {
                    let i = at.index(b.query.len());
                    b.query.insert(i, b.query[i].clone());
                }
                4 if b.parts.len() >= 2 => {
                    let i = at.index(b.parts.len() - 1);
                    b.parts.swap(i, i + 1);
                }
                5 if !b.query.is_empty() => {
                    let pair = b.query.remove(at.index(b.query.len()));
                    b.parts.insert(0, pair);
                }
                _ => b.parts.push(("a".to_owned(), String::new())),
            }
            (a, b)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    /// Parts that differ only in where one ends and the next begins, empty parts,
    /// repeated names: a key is shared exactly when the requests mean the same.
    #[test]
    fn near_collisions_share_a_key_only_when_they_mean_the_same((a, b) in near_collision()) {
        let cache = cache();
        let (ka, kb) = (a.key(&cache), b.key(&cache));
        if a.meaning() == b.meaning() {
            prop_assert_eq!(ka, kb, "{:?} vs {:?}", a, b);
        } else {
            prop_assert_ne!(ka, kb, "{:?} vs {:?}", a, b);
        }
    }
}

/// Echoes what the key is made of, as the handler sees it.
#[cached(resource = "contacts", ttl = 300, vary = user)]
async fn echo(Extension(scope): Extension<CacheScope>, uri: Uri) -> Json<Value> {
    Json(json!({
        "tenant": scope.tenant(),
        "user": scope.user(),
        "path": uri.path(),
        "query": normalize_query(uri.query().unwrap_or("")),
    }))
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// What `echo` answers for `req`, computed by the test.
fn expected_echo(req: &Req) -> Value {
    let query: Vec<(&String, &String)> = req
        .query
        .iter()
        .flat_map(|(n, vs)| vs.iter().map(move |v| (n, v)))
        .collect();
    json!({ "tenant": req.tenant, "user": req.user, "path": req.path, "query": query })
}

async fn send_as(app: &Router, req: &Req, reverse: bool) -> Reply {
    let uri = format!("{}?{}", req.path, query_string(&req.query, reverse));
    let mut request = axum::http::Request::get(uri)
        .body(axum::body::Body::empty())
        .unwrap();
    let mut scope = CacheScope::new(req.tenant.clone());
    if let Some(user) = &req.user {
        scope = scope.with_user(user.clone());
    }
    request.extensions_mut().insert(scope);
    send(app, request).await
}

/// `a`, `b`, then `a` again with its parameters in the other order: each answer is the
/// request's own; with a user, the first `a` misses and the second hits, and `b` hits
/// exactly when it equals `a`.
fn check_through_the_attributes(a: &Req, b: &Req) -> Result<(), TestCaseError> {
    runtime().block_on(async {
        let cache = Cache::new(CacheConfig::default()).await.unwrap();
        let app = Router::new().fallback(echo).layer(cache.extension());
        let first = send_as(&app, a, false).await;
        let other = send_as(&app, b, false).await;
        let again = send_as(&app, a, true).await;
        for (reply, req) in [(&first, a), (&other, b), (&again, a)] {
            prop_assert_eq!(reply.json(), expected_echo(req), "{:?} vs {:?}", a, b);
        }
        let expected = |req: &Req, cached: &'static str| {
            if req.user.is_some() {
                cached
            } else {
                "BYPASS"
            }
        };
        prop_assert_eq!(first.x_cache(), expected(a, "MISS"));
        let b_outcome = if a == b { "HIT" } else { "MISS" };
        prop_assert_eq!(
            other.x_cache(),
            expected(b, b_outcome),
            "{:?} vs {:?}",
            a,
            b
        );
        prop_assert_eq!(again.x_cache(), expected(a, "HIT"));
        Ok(())
    })
}

/// `req` with one field changed, so that the pair differs in exactly that.
fn one_change() -> impl Strategy<Value = (Req, Req)> {
    (req(), text(), 0..4usize).prop_map(|(a, value, field)| {
        let mut b = a.clone();
        match field {
            0 => b.tenant = format!("{}{value}x", b.tenant),
            1 => b.user = Some(format!("{}{value}x", b.user.clone().unwrap_or_default())),
            2 => b.path = format!("{}/x", b.path),
            _ => b
                .query
                .entry("q".to_owned())
                .or_default()
                .push(format!("{value}x")),
        }
        (a, b)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn through_the_attributes_random_requests_get_their_own_answers(a in req(), b in req()) {
        check_through_the_attributes(&a, &b)?;
    }

    #[test]
    fn through_the_attributes_one_difference_is_another_key((a, b) in one_change()) {
        check_through_the_attributes(&a, &b)?;
    }

    #[test]
    fn through_the_attributes_equal_requests_share_a_key(a in req()) {
        check_through_the_attributes(&a, &a)?;
    }
}

/// The per-thread memo of request keys (`key/memo.rs`) belongs to one cache: the same
/// request to the same route through two caches on one Redis, with other prefixes, in
/// turns on one worker thread, is looked up under each cache's own prefix. Were the memo
/// to hand cache `b` the key cache `a` built, `b`'s first request would hit `a`'s entry.
#[test]
fn two_caches_on_one_thread_never_share_a_memoized_key() {
    let redis = cache_tests::RedisServer::start();
    runtime().block_on(async {
        let config = |prefix: &str| {
            CacheConfig::default()
                .with_redis_url(redis.url())
                .with_prefix(prefix)
        };
        let a = Cache::new(config("a")).await.unwrap();
        let b = Cache::new(config("b")).await.unwrap();
        let app_a = Router::new().fallback(echo).layer(a.extension());
        let app_b = Router::new().fallback(echo).layer(b.extension());
        let req = Req {
            tenant: "org_1".into(),
            user: Some("user_1".into()),
            path: "/contacts".into(),
            query: BTreeMap::new(),
        };
        let mut outcomes = Vec::new();
        for app in [&app_a, &app_b, &app_a, &app_b] {
            // A second request finds its cache's entry in Redis, or its flight while the
            // store is under way: a hit either way.
            let reply = send_as(app, &req, false).await;
            assert_eq!(reply.json(), expected_echo(&req));
            outcomes.push(reply.x_cache().to_owned());
        }
        assert_eq!(outcomes, ["MISS", "MISS", "HIT", "HIT"]);
    });
}
