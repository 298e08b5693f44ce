//! The stored form of a response and the responses built from an entry: which
//! responses may be stored and which of their headers, the body buffered up to the size
//! bound (and replayed whole when it is longer), the strong `ETag`, `If-None-Match` and
//! `304`, and the headers of a hit. Pure HTTP: no cache calls, no I/O besides reading
//! the handler's body.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use http_body_util::BodyExt;

use super::{HandlerOutput, X_CACHE, X_CACHE_AGE};
use crate::entry::{CachedResponse, Entry};
use crate::key::PartHasher;
use crate::spec::RouteSpec;
use crate::stats::Outcome;

/// Splits a handler's output into the response to send and, when it may be stored, its
/// cacheable form, which carries an `ETag` (the handler's own, else one made here from
/// the key and the content). The body is buffered up to `max_bytes`; a longer (or
/// failing) body is passed through whole and not stored.
pub(super) async fn cacheable(
    output: HandlerOutput,
    spec: &RouteSpec,
    max_bytes: usize,
    entry_key: &str,
) -> (Response, Option<CachedResponse>) {
    let headers = output.response.headers();
    let forbidden = headers.contains_key(header::SET_COOKIE)
        || headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
            v.to_str()
                .map(|s| s.to_ascii_lowercase().contains("no-store"))
                .unwrap_or(true)
        });
    if output.failed || !storable_status(output.response.status(), spec) || forbidden {
        return (output.response, None);
    }
    let (parts, body) = output.response.into_parts();
    match buffer_body(body, max_bytes).await {
        Ok(bytes) => {
            let mut stored_headers: Vec<(HeaderName, HeaderValue)> = parts
                .headers
                .iter()
                .filter(|(name, _)| is_stored_header(name))
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
            if etag_in(&stored_headers).is_none() {
                let etag = strong_etag(entry_key, parts.status, &stored_headers, &bytes);
                stored_headers.push((header::ETAG, etag));
            }
            let cached = CachedResponse {
                status: parts.status,
                headers: stored_headers,
                body: bytes.clone(),
            };
            (Response::from_parts(parts, Body::from(bytes)), Some(cached))
        }
        Err(body) => (Response::from_parts(parts, body), None),
    }
}

/// Whether a response with `status` may be stored for this route. Never a response that
/// depends on the request rather than the resource, whatever `cache_only_success` says:
/// a partial content (206, the request's `Range`), a 304 (the request's validators), an
/// authentication or authorisation failure (401, 403, 407: the request's credentials),
/// or a rate limit (429: the caller's budget). Never a server error.
pub(super) fn storable_status(status: StatusCode, spec: &RouteSpec) -> bool {
    if matches!(status.as_u16(), 206 | 304 | 401 | 403 | 407 | 429) {
        return false;
    }
    if spec.cache_only_success {
        status.is_success()
    } else {
        !status.is_server_error() && !status.is_informational()
    }
}

/// Headers that describe the representation and are replayed on hits. A
/// `Cache-Control` the handler set is among them: it is the handler's to decide.
pub(super) fn is_stored_header(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "content-length"
            | "transfer-encoding"
            | "connection"
            | "date"
            | "age"
            | "set-cookie"
            | "x-cache"
            | "x-cache-age"
            | "keep-alive"
    )
}

/// A strong validator for one stored response, made once when it is stored and kept in
/// the entry, so every instance and every hit give the same one. It covers the whole
/// entry key, tenant included (two tenants' or users' identical bodies never validate
/// each other's copies) and the
/// status, headers and body (a changed response never validates an old copy).
pub(super) fn strong_etag(
    entry_key: &str,
    status: StatusCode,
    headers: &[(HeaderName, HeaderValue)],
    body: &[u8],
) -> HeaderValue {
    let mut hasher = PartHasher::new();
    hasher.part(entry_key.as_bytes());
    hasher.part(&status.as_u16().to_le_bytes());
    for (name, value) in headers {
        hasher.part(name.as_str().as_bytes());
        hasher.part(value.as_bytes());
    }
    hasher.part(body);
    let mut quoted = String::with_capacity(34);
    quoted.push('"');
    quoted.push_str(&hasher.finish_hex());
    quoted.push('"');
    // Hex digits between quotes are always a valid header value.
    HeaderValue::from_str(&quoted).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

pub(super) fn etag_in(headers: &[(HeaderName, HeaderValue)]) -> Option<&HeaderValue> {
    headers
        .iter()
        .find(|(name, _)| name == header::ETAG)
        .map(|(_, value)| value)
}

pub(super) fn etag_of(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers.get(header::ETAG)
}

/// `If-None-Match` against the current ETag, with the weak comparison RFC 9110 section
/// 13.1.2 prescribes for it: `*`, or any listed tag whose opaque part equals the ETag's.
pub(super) fn matches_if_none_match(
    if_none_match: Option<&HeaderValue>,
    etag: Option<&HeaderValue>,
) -> bool {
    let (Some(condition), Some(etag)) = (if_none_match, etag) else {
        return false;
    };
    let (Ok(condition), Ok(etag)) = (condition.to_str(), etag.to_str()) else {
        return false;
    };
    // Borrowed, not copied: every revalidating browser request comes through here.
    fn opaque(tag: &str) -> &str {
        let tag = tag.trim();
        tag.strip_prefix("W/").unwrap_or(tag)
    }
    let current = opaque(etag);
    condition
        .split(',')
        .any(|tag| tag.trim() == "*" || opaque(tag) == current)
}

/// `304 Not Modified` for a response the client holds already: no body, and of the
/// 200's headers those RFC 9110 section 15.4.5 requires (`Cache-Control`,
/// `Content-Location`, `ETag`, `Expires`, `Vary`; hyper adds `Date`), plus ours.
pub(super) fn not_modified(full: &HeaderMap) -> Response {
    const KEPT: [HeaderName; 8] = [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
        header::AGE,
        X_CACHE,
        X_CACHE_AGE,
    ];
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    let headers = response.headers_mut();
    for name in KEPT {
        for value in full.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    response
}

/// Collects the body if it fits in `max_bytes`; otherwise returns a body that replays
/// what was read and then the rest, so nothing is lost.
pub(super) async fn buffer_body(body: Body, max_bytes: usize) -> Result<Bytes, Body> {
    let mut body = body;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    total += data.len();
                    chunks.push(data);
                    if total > max_bytes {
                        let replay = futures_util::stream::iter(
                            chunks.into_iter().map(Ok::<_, axum::Error>),
                        );
                        return Err(Body::from_stream(replay.chain(body.into_data_stream())));
                    }
                }
            }
            Some(Err(err)) => {
                let replay =
                    futures_util::stream::iter(chunks.into_iter().map(Ok::<_, axum::Error>));
                let failure = futures_util::stream::once(async move { Err::<Bytes, _>(err) });
                return Err(Body::from_stream(replay.chain(failure)));
            }
        }
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut joined = BytesMut::with_capacity(total);
            for chunk in chunks {
                joined.extend_from_slice(&chunk);
            }
            joined.freeze()
        }
    })
}

/// A hit's response: the entry's status and body, the headers of [`hit_headers`] with
/// this hit's age. An entry held in process (others hold it too: the memory backend, the
/// local tier, a worker thread's last decoded Redis entries) keeps its headers for the
/// next hits (`Entry::hit_headers`), which copy them and set the age in place; an entry
/// decoded for this one request builds them.
pub(super) fn hit_response(entry: &Arc<Entry>, age: Duration, spec: &RouteSpec) -> Response {
    let stored = entry.response();
    let age = decimal_value(age.as_secs());
    let kept = if Arc::strong_count(entry) > 1 {
        entry
            .hit_headers
            // Copied once to drop the spare capacity the map was built with.
            .get_or_make(&spec.cache_control, || {
                hit_headers(stored, spec, &age).clone()
            })
    } else {
        None
    };
    let headers = match kept {
        None => hit_headers(stored, spec, &age),
        Some(kept) => {
            let mut headers = kept.clone();
            set_age(&mut headers, &age);
            headers
        }
    };
    let mut response = Response::new(Body::from(stored.body.clone()));
    *response.status_mut() = stored.status;
    *response.headers_mut() = headers;
    response
}

/// Sets the age in `headers`, a copy of kept hit headers (`hit_headers`, where the age
/// comes first): the values are replaced where they are, without hashing a name.
fn set_age(headers: &mut HeaderMap, age: &HeaderValue) {
    let mut left = 2;
    for (name, value) in headers.iter_mut() {
        if name == X_CACHE_AGE || name == header::AGE {
            *value = age.clone();
            left -= 1;
            if left == 0 {
                break;
            }
        }
    }
}

/// The headers of a hit on `stored` whose age is `age`: the stored ones, ours, the
/// route's `Cache-Control` unless the handler set one, and `Content-Length` (axum would
/// format and add it to every response otherwise).
fn hit_headers(stored: &CachedResponse, spec: &RouteSpec, age: &HeaderValue) -> HeaderMap {
    // Sized once: grown header by header, the map was reallocated twice.
    let mut headers = HeaderMap::with_capacity(stored.headers.len() + 5);
    // The age first: a hit on kept headers finds it at once (`hit_response`).
    headers.insert(X_CACHE_AGE, age.clone());
    headers.insert(header::AGE, age.clone());
    let mut handler_cache_control = false;
    // Only what `cacheable` stores: an entry written otherwise (another version, the
    // plain API) neither adds a second age nor replays a cookie.
    for (name, value) in stored
        .headers
        .iter()
        .filter(|(name, _)| is_stored_header(name))
    {
        handler_cache_control |= name == header::CACHE_CONTROL;
        headers.append(name.clone(), value.clone());
    }
    headers.insert(X_CACHE, HeaderValue::from_static("HIT"));
    if !handler_cache_control {
        headers.insert(header::CACHE_CONTROL, spec.cache_control.clone());
    }
    let length = u64::try_from(stored.body.len()).unwrap_or(u64::MAX);
    headers.insert(header::CONTENT_LENGTH, decimal_value(length));
    headers
}

/// Numbers below this are made without allocating: most hits' ages in seconds (a TTL is
/// usually minutes) and the lengths of bodies under 10 KB (the table is 40 KB).
const SMALL_NUMBERS: usize = 10_000;
/// Width of one number in [`SMALL_NUMBER_DIGITS`].
const SMALL_NUMBER_WIDTH: usize = 4;

/// Every number below [`SMALL_NUMBERS`] as four decimal digits, zero-padded, one after another.
static SMALL_NUMBER_DIGITS: [u8; SMALL_NUMBERS * SMALL_NUMBER_WIDTH] = {
    let mut digits = [b'0'; SMALL_NUMBERS * SMALL_NUMBER_WIDTH];
    let mut number = 0;
    while number < SMALL_NUMBERS {
        let mut rest = number;
        let mut place = SMALL_NUMBER_WIDTH;
        while place > 0 {
            place -= 1;
            digits[number * SMALL_NUMBER_WIDTH + place] = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        number += 1;
    }
    digits
};

/// `number` as a header value; a static one for numbers below [`SMALL_NUMBERS`]: nothing
/// allocated, and nothing counted when it is copied (a shared value's copy is an atomic
/// add on a count every worker thread writes).
pub(super) fn decimal_value(number: u64) -> HeaderValue {
    if let Ok(small) = usize::try_from(number) {
        if small < SMALL_NUMBERS {
            let width = match small {
                0..=9 => 1,
                10..=99 => 2,
                100..=999 => 3,
                _ => 4,
            };
            let end = (small + 1) * SMALL_NUMBER_WIDTH;
            if let Ok(text) = std::str::from_utf8(&SMALL_NUMBER_DIGITS[end - width..end]) {
                // Decimal digits: `from_static` accepts them (it panics only on bytes
                // not allowed in a header value).
                return HeaderValue::from_static(text);
            }
        }
    }
    HeaderValue::from(number)
}

pub(super) fn with_outcome(mut response: Response, outcome: Outcome) -> Response {
    response
        .headers_mut()
        .insert(X_CACHE, HeaderValue::from_static(outcome.as_str()));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::CachedResponse;

    fn spec(cache_control: &'static str) -> RouteSpec {
        RouteSpec {
            resource: "contacts",
            ttl_secs: 60,
            stale_while_revalidate_secs: 0,
            stale_after_invalidation_secs: 0,
            cache_control: HeaderValue::from_static(cache_control),
            tags: &[],
            vary: &[],
            fingerprint: "f",
            cache_only_success: true,
            skip_cache: false,
            verify: false,
            verify_ignore: &[],
            function: "tests::contacts",
        }
    }

    fn entry(headers: Vec<(HeaderName, HeaderValue)>) -> Arc<Entry> {
        Arc::new(Entry {
            digest: [0; 16],
            generations: Vec::new(),
            stored_at_ms: 0,
            ttl_ms: 60_000,
            compute_ms: 0,
            based_on_ms: 0,
            response: CachedResponse {
                status: StatusCode::CREATED,
                headers,
                body: Bytes::from_static(b"{\"a\":1}"),
            },
            hit_headers: Default::default(),
            generations_checked: Default::default(),
        })
    }

    fn header<'a>(response: &'a Response, name: &HeaderName) -> Vec<&'a str> {
        response
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    /// An entry held in process keeps its hit headers: every hit after the first copies
    /// them, with its own age, and they are what a hit built from scratch carries.
    #[test]
    fn kept_hit_headers_carry_each_hits_age_and_read_as_built_ones() {
        let route = spec("max-age=0, must-revalidate");
        let stored = vec![
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, HeaderValue::from_static("\"abc\"")),
        ];
        let held = entry(stored.clone());
        let holder = Arc::clone(&held);
        let first = hit_response(&held, Duration::from_secs(3), &route);
        assert!(held
            .hit_headers
            .get_or_make(&route.cache_control, HeaderMap::new)
            .is_some());
        for (age, text) in [(7, "7"), (4_000, "4000")] {
            let kept = hit_response(&held, Duration::from_secs(age), &route);
            let built = hit_response(&entry(stored.clone()), Duration::from_secs(age), &route);
            assert_eq!(kept.status(), StatusCode::CREATED);
            assert_eq!(kept.headers(), built.headers());
            assert_eq!(header(&kept, &header::AGE), [text]);
            assert_eq!(header(&kept, &X_CACHE_AGE), [text]);
            assert_eq!(header(&kept, &X_CACHE), ["HIT"]);
            assert_eq!(header(&kept, &header::CONTENT_LENGTH), ["7"]);
            assert_eq!(header(&kept, &header::ETAG), ["\"abc\""]);
            assert_eq!(
                header(&kept, &header::CACHE_CONTROL),
                ["max-age=0, must-revalidate"]
            );
            assert_eq!(kept.headers().len(), 7);
        }
        assert_eq!(header(&first, &header::AGE), ["3"]);
        // A route with another Cache-Control gets its own, not the kept one.
        let other = hit_response(&held, Duration::from_secs(1), &spec("private, max-age=5"));
        assert_eq!(
            header(&other, &header::CACHE_CONTROL),
            ["private, max-age=5"]
        );
        // The handler's own Cache-Control wins, kept or not.
        let own = vec![(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))];
        let held = entry(own);
        let _holder = Arc::clone(&held);
        for _ in 0..2 {
            let hit = hit_response(&held, Duration::from_secs(1), &route);
            assert_eq!(header(&hit, &header::CACHE_CONTROL), ["no-cache"]);
        }
        drop(holder);
    }

    /// An entry written by something other than `cacheable` (another version, the plain
    /// API) that holds an age: a hit sends its own age once, kept headers or built.
    #[test]
    fn a_stored_age_is_never_replayed() {
        let route = spec("private, no-cache");
        let stored = vec![
            (header::AGE, HeaderValue::from_static("50")),
            (header::ETAG, HeaderValue::from_static("\"a\"")),
        ];
        let held = entry(stored.clone());
        let _holder = Arc::clone(&held);
        for decoded in [entry(stored), held] {
            for age in [3, 4] {
                let hit = hit_response(&decoded, Duration::from_secs(age), &route);
                assert_eq!(header(&hit, &header::AGE), [age.to_string()]);
                assert_eq!(header(&hit, &X_CACHE_AGE), [age.to_string()]);
                assert_eq!(header(&hit, &header::ETAG), ["\"a\""]);
            }
        }
    }

    #[test]
    fn numbers_from_the_table_read_as_formatted_ones() {
        let numbers = [0, 1, 9, 10, 99, 100, 999, 1000, 2048, 9999, 10_000, 86_400];
        for n in numbers.into_iter().chain([u64::MAX]) {
            assert_eq!(decimal_value(n), HeaderValue::from(n), "{n}");
        }
    }
}
