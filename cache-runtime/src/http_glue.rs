//! The axum side: the extractor `#[cached]`/`#[invalidates]` prepend to a handler, and
//! the functions their generated code calls. Here a request becomes a key, a handler's
//! output becomes a stored response (body buffered up to the size bound, never lost),
//! and outcomes become `X-Cache`, `X-Cache-Age` and `Cache-Control` headers. A cache
//! fault never turns into an error response here.

use std::convert::Infallible;
use std::future::Future;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Uri};
use http_body_util::BodyExt;

use crate::__private::{InvalidationSpec, RouteSpec, ScopeArg, VaryPart};
use crate::cache::{BypassReason, Cache, Lookup, Resolved};
use crate::entry::{CachedResponse, Entry};
use crate::key::Tenant;
use crate::scope::CacheScope;
use crate::stats::Outcome;

/// `X-Cache`: `HIT`, `MISS` or `BYPASS`.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
/// `X-Cache-Age`: seconds since the served entry was stored (hits only).
pub const X_CACHE_AGE: HeaderName = HeaderName::from_static("x-cache-age");
/// `X-Cache-Invalidated`: the resources a successful mutation invalidated.
pub const X_CACHE_INVALIDATED: HeaderName = HeaderName::from_static("x-cache-invalidated");

/// What the cache needs from a request, taken before the handler's own extractors.
#[derive(Debug, Clone)]
pub struct RequestContext {
    cache: Option<Cache>,
    method: Method,
    uri: Uri,
    scope: Option<CacheScope>,
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestContext {
            cache: parts.extensions.get::<Cache>().cloned(),
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            scope: parts.extensions.get::<CacheScope>().cloned(),
        })
    }
}

impl RequestContext {
    /// The request's cache, else the process-wide one. Takes it: one handle per request.
    fn take_cache(&mut self) -> Cache {
        self.cache.take().unwrap_or_else(|| Cache::global().clone())
    }
}

/// A handler's result, converted to a response, and whether it was an `Err`.
#[derive(Debug)]
pub struct HandlerOutput {
    response: Response,
    failed: bool,
}

impl HandlerOutput {
    /// From a handler returning `Result`: an `Err` is never cached and never invalidates.
    pub fn from_result<T: IntoResponse, E: IntoResponse>(result: Result<T, E>) -> Self {
        match result {
            Ok(value) => HandlerOutput {
                response: value.into_response(),
                failed: false,
            },
            Err(err) => HandlerOutput {
                response: err.into_response(),
                failed: true,
            },
        }
    }

    /// From a handler returning any response: its status decides.
    pub fn from_response<R: IntoResponse>(response: R) -> Self {
        HandlerOutput {
            response: response.into_response(),
            failed: false,
        }
    }

    fn succeeded(&self) -> bool {
        !self.failed && self.response.status().is_success()
    }
}

/// Whose data a request reads or writes.
enum RequestScope {
    /// `scope = global`; the request's own scope, if any, still names the user.
    Global(Option<CacheScope>),
    /// One tenant's data.
    Tenant(CacheScope),
}

impl RequestScope {
    /// The route's scope argument applied to the request; no tenant where one is needed
    /// is a bypass.
    fn resolve(arg: ScopeArg, request_scope: Option<CacheScope>) -> Result<Self, BypassReason> {
        match arg {
            ScopeArg::Global => Ok(RequestScope::Global(request_scope)),
            ScopeArg::FromRequest => request_scope
                .map(RequestScope::Tenant)
                .ok_or(BypassReason::NoScope),
            ScopeArg::Explicit(scope) => {
                scope.map(RequestScope::Tenant).ok_or(BypassReason::NoScope)
            }
        }
    }

    fn tenant(&self) -> Tenant<'_> {
        match self {
            RequestScope::Global(_) => Tenant::Global,
            RequestScope::Tenant(scope) => Tenant::Scoped(scope.tenant()),
        }
    }

    fn user(&self) -> Option<&str> {
        match self {
            RequestScope::Global(scope) => scope.as_ref().and_then(CacheScope::user),
            RequestScope::Tenant(scope) => scope.user(),
        }
    }
}

/// The body of every `#[cached]` handler: see the crate docs for the semantics.
pub async fn serve_cached<F>(
    mut ctx: RequestContext,
    headers: Option<HeaderMap>,
    spec: &'static RouteSpec,
    scope: ScopeArg,
    handler: F,
) -> Response
where
    F: Future<Output = HandlerOutput>,
{
    let cache = ctx.take_cache();
    let started = Instant::now();
    let key = match build_key(&cache, &mut ctx, headers.as_ref(), spec, scope) {
        Ok(key) => key,
        Err(reason) => {
            cache.note_ttl(spec.resource, spec.ttl_secs);
            // Cached plain functions the handler calls use this request's cache.
            let handler = cache.scope(handler);
            let (response, handler_time) = bypass(&cache, spec.resource, handler).await;
            log_lookup(
                spec,
                LookupEvent {
                    outcome: Outcome::Bypass.as_str(),
                    reason: Some(reason),
                    age: None,
                    lookup: None,
                    handler: Some(handler_time),
                },
            );
            return with_outcome(response, Outcome::Bypass);
        }
    };
    // A hit is answered here, before anything of the handler is set up to run.
    let looked_up = cache.lookup_uncounted(&key).await;
    if let Lookup::Hit(entry) = looked_up {
        cache.record_hit(spec.resource, spec.ttl_secs);
        return serve_entry(spec, &entry, started);
    }
    cache.note_ttl(spec.resource, spec.ttl_secs);
    let ttl = Duration::from_secs(u64::from(spec.ttl_secs));
    let max_bytes = cache.config().max_entry_bytes;
    // Cached plain functions the handler calls use this request's cache.
    let handler = cache.scope(handler);
    let compute = async move {
        let handler_started = Instant::now();
        let output = handler.await;
        let (response, cacheable) = cacheable(output, spec, max_bytes).await;
        (
            (response, handler_started, handler_started.elapsed()),
            cacheable,
        )
    };
    // The miss path, with the handler, boxed once: unboxed, the engine's state across
    // its await points would be part of this future, which is moved into place on every
    // request, hits included (and deep stacks in debug builds of handlers that await
    // several cached calls).
    match Box::pin(cache.resolve_lookup(&key, ttl, looked_up, compute)).await {
        Resolved::Entry { entry, .. } => serve_entry(spec, &entry, started),
        Resolved::Computed {
            value: (value, handler_started, handler_time),
            outcome,
            bypass,
            stored,
            lookup_failed,
        } => {
            log_lookup(
                spec,
                LookupEvent {
                    outcome: if lookup_failed {
                        "ERROR"
                    } else {
                        outcome.as_str()
                    },
                    reason: bypass,
                    age: None,
                    // A bypass decided by the cache (switched off, pending invalidation,
                    // open circuit) looked nothing up.
                    lookup: (outcome != Outcome::Bypass)
                        .then(|| handler_started.saturating_duration_since(started)),
                    handler: Some(handler_time),
                },
            );
            let mut response = with_outcome(value, outcome);
            if stored {
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, spec.cache_control.clone());
            }
            response
        }
    }
}

/// A hit: the stored response, its headers, and the lookup's event.
fn serve_entry(spec: &RouteSpec, entry: &Entry, started: Instant) -> Response {
    let age = entry.age();
    // Checked here, not only by the macro: the clock read would run on every hit.
    if tracing::enabled!(target: "api_cache", tracing::Level::DEBUG) {
        log_lookup(
            spec,
            LookupEvent {
                outcome: Outcome::Hit.as_str(),
                reason: None,
                age: Some(age),
                lookup: Some(started.elapsed()),
                handler: None,
            },
        );
    }
    hit_response(entry, age, spec)
}

fn build_key(
    cache: &Cache,
    ctx: &mut RequestContext,
    headers: Option<&HeaderMap>,
    spec: &'static RouteSpec,
    scope: ScopeArg,
) -> Result<crate::key::CacheKey, BypassReason> {
    if spec.skip_cache {
        return Err(BypassReason::SkipCache);
    }
    if ctx.method != Method::GET && ctx.method != Method::HEAD {
        return Err(BypassReason::Method);
    }
    let scope = RequestScope::resolve(scope, ctx.scope.take())?;
    let tenant = scope.tenant();
    // Resource and tag names were validated at compile time; an error here would be a
    // macro bug, and the safe answer is to serve uncached.
    let mut builder = cache
        .key(tenant, spec.resource)
        .map_err(|_| BypassReason::SkipCache)?;
    for tag in spec.tags {
        builder = builder.tag(tag).map_err(|_| BypassReason::SkipCache)?;
    }
    builder = builder.request(ctx.method.as_str(), ctx.uri.path(), ctx.uri.query());
    for part in spec.vary {
        match part {
            VaryPart::User => {
                let user = scope.user().ok_or(BypassReason::NoUser)?;
                builder = builder.part("vary:user", user);
            }
            VaryPart::Header(name) => {
                let mut value = Vec::new();
                if let Some(headers) = headers {
                    for (i, v) in headers.get_all(*name).iter().enumerate() {
                        if i > 0 {
                            value.push(b',');
                        }
                        value.extend_from_slice(v.as_bytes());
                    }
                    if !headers.contains_key(*name) {
                        value = b"\0absent".to_vec();
                    }
                }
                builder = builder.part_bytes(name, &value);
            }
        }
    }
    Ok(builder.part("fingerprint", spec.fingerprint).build())
}

/// Runs the handler uncached; returns its response and how long it ran.
async fn bypass<F: Future<Output = HandlerOutput>>(
    cache: &Cache,
    resource: &str,
    handler: F,
) -> (Response, Duration) {
    let started = Instant::now();
    cache.record(Some(resource), crate::stats::Event::Bypass);
    let output = handler.await;
    let elapsed = started.elapsed();
    cache.record_handler_time(resource, elapsed);
    (output.response, elapsed)
}

/// Splits a handler's output into the response to send and, when it may be stored, its
/// cacheable form. The body is buffered up to `max_bytes`; a longer (or failing) body is
/// passed through whole and not stored.
async fn cacheable(
    output: HandlerOutput,
    spec: &RouteSpec,
    max_bytes: usize,
) -> (Response, Option<CachedResponse>) {
    let storable_status = if spec.cache_only_success {
        output.response.status().is_success()
    } else {
        !output.response.status().is_server_error()
    };
    let headers = output.response.headers();
    let forbidden = headers.contains_key(header::SET_COOKIE)
        || headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
            v.to_str()
                .map(|s| s.to_ascii_lowercase().contains("no-store"))
                .unwrap_or(true)
        });
    if output.failed || !storable_status || forbidden {
        return (output.response, None);
    }
    let (parts, body) = output.response.into_parts();
    match buffer_body(body, max_bytes).await {
        Ok(bytes) => {
            let stored_headers = parts
                .headers
                .iter()
                .filter(|(name, _)| is_stored_header(name))
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
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

/// Headers that describe the representation and are replayed on hits.
fn is_stored_header(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "content-length"
            | "transfer-encoding"
            | "connection"
            | "date"
            | "set-cookie"
            | "cache-control"
            | "x-cache"
            | "x-cache-age"
            | "keep-alive"
    )
}

/// Collects the body if it fits in `max_bytes`; otherwise returns a body that replays
/// what was read and then the rest, so nothing is lost.
async fn buffer_body(body: Body, max_bytes: usize) -> Result<Bytes, Body> {
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

fn hit_response(entry: &Entry, age: Duration, spec: &RouteSpec) -> Response {
    let stored = entry.response();
    let mut response = Response::new(Body::from(stored.body.clone()));
    *response.status_mut() = stored.status;
    let headers = response.headers_mut();
    for (name, value) in &stored.headers {
        headers.append(name.clone(), value.clone());
    }
    headers.insert(X_CACHE, HeaderValue::from_static("HIT"));
    headers.insert(X_CACHE_AGE, HeaderValue::from(age.as_secs()));
    headers.insert(header::CACHE_CONTROL, spec.cache_control.clone());
    response
}

fn with_outcome(mut response: Response, outcome: Outcome) -> Response {
    response
        .headers_mut()
        .insert(X_CACHE, HeaderValue::from_static(outcome.as_str()));
    response
}

/// What one request of a `#[cached]` route did, for its tracing event.
struct LookupEvent {
    /// `HIT`, `MISS`, `BYPASS`, or `ERROR` (the lookup failed; served uncached).
    outcome: &'static str,
    reason: Option<BypassReason>,
    /// The served entry's age (hits).
    age: Option<Duration>,
    /// From the request reaching the cache to the entry served or the handler started:
    /// key, round trip, and any wait for a concurrent computation.
    lookup: Option<Duration>,
    /// The handler's run, body buffering included (misses, bypasses, errors).
    handler: Option<Duration>,
}

/// The per-lookup event: DEBUG, target `api_cache`, emitted in the caller's span (the
/// app's request span), so an app can leave `api_cache=debug` on or filter it out.
/// Field names are documented in docs/observability.md.
fn log_lookup(spec: &RouteSpec, event: LookupEvent) {
    let micros = |d: Duration| d.as_micros().min(u128::from(u64::MAX)) as u64;
    tracing::debug!(
        target: "api_cache",
        resource = spec.resource,
        function = spec.function,
        outcome = event.outcome,
        reason = event.reason.map(BypassReason::as_str),
        age_s = event.age.map(|a| a.as_secs()),
        lookup_us = event.lookup.map(micros),
        handler_us = event.handler.map(micros),
        "cache lookup"
    );
}

/// The body of every `#[invalidates]` handler: run it; on success invalidate the listed
/// resources for the request's tenant before the response leaves.
pub async fn serve_invalidating<F>(
    mut ctx: RequestContext,
    spec: &'static InvalidationSpec,
    scope: ScopeArg,
    handler: F,
) -> Response
where
    F: Future<Output = HandlerOutput>,
{
    let cache = ctx.take_cache();
    // Cached plain functions the handler calls use this request's cache.
    let output = cache.scope(handler).await;
    if !output.succeeded() {
        return output.response;
    }
    let mut response = output.response;
    let result = match RequestScope::resolve(scope, ctx.scope) {
        Ok(scope) => {
            cache
                .invalidate_scoped(scope.tenant(), spec.resources)
                .await
        }
        Err(_) => {
            // Nothing of an unscoped request is cached, but the data it changed may be
            // cached for its tenant: that is an app misconfiguration worth shouting about.
            tracing::error!(
                target: "api_cache",
                function = spec.function,
                resources = %spec.resources.join(","),
                "successful mutation without a tenant scope: nothing was invalidated"
            );
            return response;
        }
    };
    // A deferred invalidation is remembered and redelivered; the mutation succeeded and
    // its response stands.
    let _ = result;
    if let Ok(value) = HeaderValue::from_str(&spec.resources.join(",")) {
        response.headers_mut().insert(X_CACHE_INVALIDATED, value);
    }
    response
}
