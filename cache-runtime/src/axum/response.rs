//! The stored form of a response and the responses built from an entry: which
//! responses may be stored and which of their headers, the body buffered up to the size
//! bound (and replayed whole when it is longer), the strong `ETag`, `If-None-Match` and
//! `304`, and the headers of a hit. Pure HTTP: no cache calls, no I/O besides reading
//! the handler's body.

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

pub(super) fn hit_response(entry: &Entry, age: Duration, spec: &RouteSpec) -> Response {
    let stored = entry.response();
    // Sized once for the stored headers and the four a hit adds (and the
    // `Content-Length` axum adds): grown header by header, the map reallocated twice.
    let mut headers = HeaderMap::with_capacity(stored.headers.len() + 5);
    let mut handler_cache_control = false;
    for (name, value) in &stored.headers {
        handler_cache_control |= name == header::CACHE_CONTROL;
        headers.append(name.clone(), value.clone());
    }
    let age = HeaderValue::from(age.as_secs());
    headers.insert(X_CACHE, HeaderValue::from_static("HIT"));
    headers.insert(X_CACHE_AGE, age.clone());
    headers.insert(header::AGE, age);
    if !handler_cache_control {
        headers.insert(header::CACHE_CONTROL, spec.cache_control.clone());
    }
    let mut response = Response::new(Body::from(stored.body.clone()));
    *response.status_mut() = stored.status;
    *response.headers_mut() = headers;
    response
}

pub(super) fn with_outcome(mut response: Response, outcome: Outcome) -> Response {
    response
        .headers_mut()
        .insert(X_CACHE, HeaderValue::from_static(outcome.as_str()));
    response
}
