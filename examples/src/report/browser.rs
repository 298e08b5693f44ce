//! A virtual user's browser cache: the private HTTP cache a browser keeps for one signed-in
//! user, so that the report judges what a person would actually see on screen.
//!
//! It follows RFC 9111 for a private cache, the freshness rules taken from the
//! `http-cache-semantics` crate: a 200 to a GET is stored when it has a validator (`ETag`)
//! or a freshness lifetime, unless `no-store`; a fresh entry (`max-age` not used up,
//! counting `Age`, no `no-cache`) is shown without any request; a stale one is
//! revalidated with `If-None-Match`, and a `304 Not Modified` shows the stored body with
//! the 304's headers merged in. A non-safe request that succeeds drops the entry of its
//! own target URI and of no other (RFC 9111 4.4), which is all a browser does, and why a
//! `max-age` on a list that other URIs change shows a stale list after a write.
//!
//! It never sends anything itself and never shares entries between users: the driver
//! keeps one per token.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy};
use serde::Serialize;

/// Where the body a user saw for a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BrowserOutcome {
    /// The server's response, body included (every write, every uncached read).
    Network,
    /// A `304 Not Modified`: the server was asked, the stored body was shown.
    NotModified,
    /// The browser's fresh copy: no request was sent.
    Fresh,
}

/// What the browser does with a GET before the network.
#[derive(Debug)]
pub enum Lookup {
    /// Show this stored response; send nothing.
    Fresh(Shown),
    /// Send the request with these extra headers (`If-None-Match` when an entry with a
    /// validator is stored; none otherwise).
    Send(HeaderMap),
}

/// A body as the browser shows it.
#[derive(Debug, Clone)]
pub struct Shown {
    /// The status shown (the stored one for a 304 or a fresh copy).
    pub status: StatusCode,
    /// The body shown.
    pub body: Bytes,
    /// Where it came from.
    pub outcome: BrowserOutcome,
    /// Body bytes shown that did not cross the network (a 304 or a fresh copy).
    pub saved_bytes: usize,
    /// How old the stored copy was, for a 304 or a fresh copy (RFC 9111 `Age`).
    pub age: Option<Duration>,
}

/// A 304 the browser cannot use: no stored entry, or one with another validator. A
/// browser would have to fetch again; the report counts it as an unexpected answer.
#[derive(Debug, thiserror::Error)]
#[error("304 Not Modified without a stored response it validates")]
pub struct UnusableNotModified;

struct Stored {
    policy: CachePolicy,
    status: StatusCode,
    /// The stored response's headers, kept here because a 304 must update them all.
    headers: HeaderMap,
    body: Bytes,
}

/// One user's private cache, keyed by path and query (the report talks to one origin).
pub struct BrowserCache {
    authorization: Option<HeaderValue>,
    entries: HashMap<String, Stored>,
}

/// A private (single-user) cache: `private` responses are stored, `s-maxage` is not ours.
fn private_cache() -> CacheOptions {
    CacheOptions {
        shared: false,
        ..CacheOptions::default()
    }
}

impl BrowserCache {
    /// An empty cache for the user of `token`.
    pub fn new(token: &str) -> BrowserCache {
        BrowserCache {
            // The stored request must carry the same Authorization as the next one, or a
            // `Vary: Authorization` from the server would never match. A token that is not
            // a header value just goes without (the request will be a 401 anyway).
            authorization: HeaderValue::from_str(&format!("Bearer {token}")).ok(),
            entries: HashMap::new(),
        }
    }

    /// Number of stored responses.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn request(&self, path: &str) -> Option<Request<()>> {
        let mut builder = Request::builder().method(Method::GET).uri(path);
        if let Some(value) = &self.authorization {
            builder = builder.header(header::AUTHORIZATION, value.clone());
        }
        builder.body(()).ok()
    }

    /// What to do with a GET of `path` at `now`.
    pub fn before_get(&self, path: &str, now: SystemTime) -> Lookup {
        let (Some(stored), Some(request)) = (self.entries.get(path), self.request(path)) else {
            return Lookup::Send(HeaderMap::new());
        };
        match stored.policy.before_request(&request, now) {
            BeforeRequest::Fresh(_) => Lookup::Fresh(Shown {
                status: stored.status,
                body: stored.body.clone(),
                outcome: BrowserOutcome::Fresh,
                saved_bytes: stored.body.len(),
                age: Some(stored.policy.age(now)),
            }),
            BeforeRequest::Stale { request, .. } => {
                // Only the validators: the driver adds the rest (Authorization) itself.
                let mut conditional = HeaderMap::new();
                for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
                    if let Some(value) = request.headers.get(&name) {
                        conditional.insert(name, value.clone());
                    }
                }
                Lookup::Send(conditional)
            }
        }
    }

    /// Takes the server's answer to a GET of `path` (sent as [`BrowserCache::before_get`]
    /// said) and returns what the browser shows.
    pub fn after_get(
        &mut self,
        path: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: Bytes,
        now: SystemTime,
    ) -> Result<Shown, UnusableNotModified> {
        let response = response_parts(status, headers);
        let Some(request) = self.request(path) else {
            return Ok(network(status, body));
        };
        if status == StatusCode::NOT_MODIFIED {
            let Some(stored) = self.entries.get_mut(path) else {
                return Err(UnusableNotModified);
            };
            // The crate decides whether the 304 validates the stored copy (its strong
            // ETag); the update is ours, because the crate only replaces the headers the
            // stored response already had, and RFC 9111 4.3.4 adds the others too: an
            // `Age` on a 304 to a copy stored from a miss (which had none) must count.
            return match stored.policy.after_response(&request, &response, now) {
                AfterResponse::NotModified(..) => {
                    for name in headers.keys() {
                        if !BODY_HEADERS.contains(name) {
                            stored.headers.remove(name);
                            for value in headers.get_all(name) {
                                stored.headers.append(name.clone(), value.clone());
                            }
                        }
                    }
                    let merged = response_parts(stored.status, &stored.headers);
                    stored.policy =
                        CachePolicy::new_options(&request, &merged, now, private_cache());
                    Ok(Shown {
                        status: stored.status,
                        body: stored.body.clone(),
                        outcome: BrowserOutcome::NotModified,
                        saved_bytes: stored.body.len(),
                        age: Some(stored.policy.age(now)),
                    })
                }
                AfterResponse::Modified(..) => {
                    self.entries.remove(path);
                    Err(UnusableNotModified)
                }
            };
        }
        let policy = CachePolicy::new_options(&request, &response, now, private_cache());
        if status == StatusCode::OK && worth_storing(&policy, headers, now) {
            self.entries.insert(
                path.to_owned(),
                Stored {
                    policy,
                    status,
                    headers: headers.clone(),
                    body: body.clone(),
                },
            );
        } else {
            // A newer answer that may not be kept replaces the old one: a browser never
            // goes back to an older copy once it has shown a newer response.
            self.entries.remove(path);
        }
        Ok(network(status, body))
    }

    /// Takes the status of a non-safe request to `path`: one that succeeded (2xx or 3xx)
    /// drops the stored response of that URI, and only of that URI (RFC 9111 4.4).
    pub fn after_unsafe(&mut self, path: &str, status: StatusCode) {
        if status.is_success() || status.is_redirection() {
            self.entries.remove(path);
        }
    }
}

/// Headers of a 304 that describe its own (empty) body, not the stored one.
const BODY_HEADERS: [header::HeaderName; 4] = [
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::TRANSFER_ENCODING,
    header::CONTENT_RANGE,
];

fn network(status: StatusCode, body: Bytes) -> Shown {
    Shown {
        status,
        body,
        outcome: BrowserOutcome::Network,
        saved_bytes: 0,
        age: None,
    }
}

fn response_parts(status: StatusCode, headers: &HeaderMap) -> http::response::Parts {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.headers = headers.clone();
    parts
}

/// The crate's `is_storable` also admits a 200 with neither a validator nor a lifetime
/// (heuristic freshness, zero without `Last-Modified`): such a copy could only ever be
/// refetched in full, so, like the rule we follow, it is not kept.
fn worth_storing(policy: &CachePolicy, headers: &HeaderMap, now: SystemTime) -> bool {
    policy.is_storable()
        && (headers.contains_key(header::ETAG) || policy.time_to_live(now) > Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::workload::Expectation;
    use serde_json::{json, Value};

    const LIST: &str = "/api/templates";
    const T0: Duration = Duration::from_secs(1_700_000_000);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(secs)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("test header"));
        }
        map
    }

    fn list(names: &[(i64, &str)]) -> Bytes {
        let items: Vec<Value> = names
            .iter()
            .map(|(id, name)| json!({ "id": id, "name": name, "organization_id": 1 }))
            .collect();
        Bytes::from(
            json!({ "templates": items, "pagination": { "page": 1, "limit": 20 } }).to_string(),
        )
    }

    fn json_of(shown: &Shown) -> Value {
        serde_json::from_slice(&shown.body).expect("a JSON body")
    }

    fn fresh(lookup: Lookup) -> Shown {
        match lookup {
            Lookup::Fresh(shown) => shown,
            Lookup::Send(sent) => panic!("expected a fresh copy, the browser sent {sent:?}"),
        }
    }

    fn sent(lookup: Lookup) -> HeaderMap {
        match lookup {
            Lookup::Send(sent) => sent,
            Lookup::Fresh(shown) => panic!("expected a request, the browser showed {shown:?}"),
        }
    }

    /// Today's `private, max-age=300`: the rename is a PUT to the template's own URI, so
    /// the list's copy survives it and the user is shown the old name, which the
    /// read-your-writes check reports.
    #[test]
    fn max_age_shows_a_stale_list_after_a_write_to_another_uri() {
        let mut browser = BrowserCache::new("tok_org1_user1");
        let cache_control = headers(&[("cache-control", "private, max-age=300")]);
        let first = browser
            .after_get(
                LIST,
                StatusCode::OK,
                &cache_control,
                list(&[(7, "Old")]),
                at(0),
            )
            .expect("a 200");
        assert_eq!(first.outcome, BrowserOutcome::Network);

        browser.after_unsafe("/api/templates/7", StatusCode::OK);

        let shown = fresh(browser.before_get(LIST, at(2)));
        assert_eq!(shown.outcome, BrowserOutcome::Fresh);
        assert_eq!(shown.age, Some(Duration::from_secs(2)));
        let renamed = Expectation::ListNamed {
            list: "templates",
            id: 7,
            name: "New".into(),
        };
        let verdict = renamed.check(&json_of(&shown));
        assert!(
            verdict.is_err(),
            "the checker must see the stale name: {verdict:?}"
        );
        // Once the lifetime is used up the browser asks again (no validator: in full).
        assert!(sent(browser.before_get(LIST, at(300))).is_empty());
    }

    /// The runtime's coming default, `private, no-cache` with a strong ETag: every read
    /// asks the server; a 304 shows the stored body, a 200 the new one.
    #[test]
    fn no_cache_with_an_etag_revalidates_every_read() {
        let mut browser = BrowserCache::new("tok_org1_user1");
        let v1 = headers(&[("cache-control", "private, no-cache"), ("etag", "\"v1\"")]);
        let body = list(&[(7, "Old")]);
        browser
            .after_get(LIST, StatusCode::OK, &v1, body.clone(), at(0))
            .expect("a 200");
        assert_eq!(browser.len(), 1, "kept for revalidation");

        let conditional = sent(browser.before_get(LIST, at(1)));
        assert_eq!(conditional.get("if-none-match").unwrap(), "\"v1\"");
        let not_modified = headers(&[
            ("cache-control", "private, no-cache"),
            ("etag", "\"v1\""),
            ("age", "1"),
        ]);
        let shown = browser
            .after_get(
                LIST,
                StatusCode::NOT_MODIFIED,
                &not_modified,
                Bytes::new(),
                at(1),
            )
            .expect("the 304 validates the stored copy");
        assert_eq!(shown.outcome, BrowserOutcome::NotModified);
        assert_eq!(shown.status, StatusCode::OK);
        assert_eq!(shown.body, body);
        assert_eq!(shown.saved_bytes, body.len());

        // After the rename: another URI was written, the browser still asks, and the
        // server's 200 with the new ETag is what is shown and kept.
        browser.after_unsafe("/api/templates/7", StatusCode::OK);
        let conditional = sent(browser.before_get(LIST, at(2)));
        assert_eq!(conditional.get("if-none-match").unwrap(), "\"v1\"");
        let v2 = headers(&[("cache-control", "private, no-cache"), ("etag", "\"v2\"")]);
        let shown = browser
            .after_get(LIST, StatusCode::OK, &v2, list(&[(7, "New")]), at(2))
            .expect("a 200");
        let renamed = Expectation::ListNamed {
            list: "templates",
            id: 7,
            name: "New".into(),
        };
        assert_eq!(renamed.check(&json_of(&shown)), Ok(()));
        let conditional = sent(browser.before_get(LIST, at(3)));
        assert_eq!(conditional.get("if-none-match").unwrap(), "\"v2\"");
    }

    #[test]
    fn a_successful_write_drops_its_own_uri_only() {
        let mut browser = BrowserCache::new("t");
        let cache_control = headers(&[("cache-control", "private, max-age=300")]);
        for path in [LIST, "/api/contacts"] {
            browser
                .after_get(path, StatusCode::OK, &cache_control, list(&[]), at(0))
                .expect("a 200");
        }
        browser.after_unsafe(LIST, StatusCode::BAD_REQUEST);
        assert_eq!(browser.len(), 2, "a failed write changes nothing");
        browser.after_unsafe(LIST, StatusCode::CREATED);
        assert!(sent(browser.before_get(LIST, at(1))).is_empty());
        fresh(browser.before_get("/api/contacts", at(1)));
    }

    #[test]
    fn age_from_the_server_counts_against_max_age() {
        let mut browser = BrowserCache::new("t");
        let aged = headers(&[("cache-control", "private, max-age=300"), ("age", "290")]);
        browser
            .after_get(LIST, StatusCode::OK, &aged, list(&[]), at(0))
            .expect("a 200");
        assert_eq!(
            fresh(browser.before_get(LIST, at(9))).age,
            Some(Duration::from_secs(299))
        );
        sent(browser.before_get(LIST, at(10)));
    }

    #[test]
    fn only_responses_with_a_validator_or_a_lifetime_are_kept() {
        let mut browser = BrowserCache::new("t");
        let kept = [
            headers(&[("cache-control", "private, max-age=60")]),
            headers(&[("etag", "\"a\"")]),
        ];
        let dropped = [
            HeaderMap::new(),
            headers(&[("cache-control", "private, no-store"), ("etag", "\"a\"")]),
            headers(&[("cache-control", "no-store, max-age=60")]),
        ];
        for response in &kept {
            browser
                .after_get(LIST, StatusCode::OK, response, list(&[]), at(0))
                .expect("a 200");
            assert_eq!(browser.len(), 1, "{response:?} is kept");
        }
        for response in &dropped {
            browser
                .after_get(LIST, StatusCode::OK, response, list(&[]), at(0))
                .expect("a 200");
            assert!(browser.is_empty(), "{response:?} is not kept");
        }
        // Not a 200: shown, not kept.
        let cache_control = headers(&[("cache-control", "private, max-age=60")]);
        browser
            .after_get(
                LIST,
                StatusCode::NOT_FOUND,
                &cache_control,
                list(&[]),
                at(0),
            )
            .expect("a 404");
        assert!(browser.is_empty());
    }

    #[test]
    fn a_304_for_another_validator_or_nothing_stored_is_unusable() {
        let mut browser = BrowserCache::new("t");
        let not_modified = headers(&[("etag", "\"b\"")]);
        assert!(browser
            .after_get(
                LIST,
                StatusCode::NOT_MODIFIED,
                &not_modified,
                Bytes::new(),
                at(0)
            )
            .is_err());
        browser
            .after_get(
                LIST,
                StatusCode::OK,
                &headers(&[("etag", "\"a\"")]),
                list(&[]),
                at(0),
            )
            .expect("a 200");
        assert!(browser
            .after_get(
                LIST,
                StatusCode::NOT_MODIFIED,
                &not_modified,
                Bytes::new(),
                at(1)
            )
            .is_err());
        assert!(browser.is_empty(), "the mismatched copy is dropped");
    }

    #[test]
    fn an_age_on_a_304_counts_even_when_the_stored_copy_had_none() {
        let mut browser = BrowserCache::new("t");
        browser
            .after_get(
                LIST,
                StatusCode::OK,
                &headers(&[("cache-control", "private, max-age=60"), ("etag", "\"a\"")]),
                list(&[]),
                at(0),
            )
            .expect("a 200");
        browser
            .after_get(
                LIST,
                StatusCode::NOT_MODIFIED,
                &headers(&[
                    ("cache-control", "private, max-age=60"),
                    ("etag", "\"a\""),
                    ("age", "50"),
                ]),
                Bytes::new(),
                at(60),
            )
            .expect("the 304 validates");
        fresh(browser.before_get(LIST, at(69)));
        sent(browser.before_get(LIST, at(70)));
    }

    #[test]
    fn a_304_replaces_the_stored_lifetime() {
        let mut browser = BrowserCache::new("t");
        browser
            .after_get(
                LIST,
                StatusCode::OK,
                &headers(&[("cache-control", "private, no-cache"), ("etag", "\"a\"")]),
                list(&[]),
                at(0),
            )
            .expect("a 200");
        // A route that opted into a browser lifetime answers the revalidation with it.
        browser
            .after_get(
                LIST,
                StatusCode::NOT_MODIFIED,
                &headers(&[("cache-control", "private, max-age=30"), ("etag", "\"a\"")]),
                Bytes::new(),
                at(10),
            )
            .expect("the 304 validates");
        fresh(browser.before_get(LIST, at(39)));
        sent(browser.before_get(LIST, at(40)));
    }
}
