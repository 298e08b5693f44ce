//! The axum adapter: the extractor `#[cached]`/`#[invalidates]` prepend to a handler,
//! and the functions their generated code calls (`serve_cached`, `serve_invalidating`).
//! Here a request becomes a key, a handler's output becomes a stored response (body
//! buffered up to the size bound, never lost), and outcomes become `X-Cache`,
//! `X-Cache-Age`, `ETag`, `304` and `Cache-Control`. The caching itself is the engine's
//! (`cache/`); a cache fault never turns into an error response here.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, OriginalUri};
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Uri};

mod invalidating;
mod response;
mod shadow;
mod vary;

pub use invalidating::serve_invalidating;
use response::{
    cacheable, etag_in, etag_of, hit_response, matches_if_none_match, not_modified, with_outcome,
};
pub use vary::{vary_mask, RequestHeaders, VaryHeaders};

use crate::cache::{BypassReason, Cache, Lookup, Resolved, Staleness};
use crate::entry::{now_ms, Entry};
use crate::key::{memo, CacheKey, Tenant};
use crate::scope::CacheScope;
use crate::spec::{RouteSpec, ScopeArg, VaryPart};
use crate::stats::{Event, Outcome};

/// `X-Cache`: `HIT`, `MISS`, `BYPASS` or `STALE`.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
/// `X-Cache-Age`: seconds since the served entry was stored (hits and stale answers).
pub const X_CACHE_AGE: HeaderName = HeaderName::from_static("x-cache-age");
/// `X-Cache-Invalidated`: the resources a mutation invalidated (every outcome but a 4xx).
pub const X_CACHE_INVALIDATED: HeaderName = HeaderName::from_static("x-cache-invalidated");

/// What the cache needs from a request, taken before the handler's own extractors.
#[derive(Debug, Clone)]
pub struct RequestContext {
    cache: Option<Cache>,
    method: Method,
    /// The URI as the client sent it: under `Router::nest` the handler's own URI has lost
    /// the prefix (`/projects/1/contacts` and `/projects/2/contacts` would both be
    /// `/contacts`), so the key is built from the original one.
    uri: Uri,
    scope: Option<CacheScope>,
    /// The browser's validator: answered with a 304 when it is the entry's ETag.
    if_none_match: Option<HeaderValue>,
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let uri = match parts.extensions.get::<OriginalUri>() {
            Some(OriginalUri(original)) => original.clone(),
            None => parts.uri.clone(),
        };
        Ok(RequestContext {
            cache: parts.extensions.get::<Cache>().cloned(),
            method: parts.method.clone(),
            uri,
            scope: parts.extensions.get::<CacheScope>().cloned(),
            if_none_match: parts.headers.get(header::IF_NONE_MATCH).cloned(),
        })
    }
}

impl RequestContext {
    /// The request's cache (`cache.extension()`), else one installed with
    /// [`Cache::install_global`]. Never one built on the spot: a cache the app's
    /// mutations do not invalidate would serve stale data. Takes it: one handle per
    /// request.
    fn take_cache(&mut self) -> Option<Cache> {
        self.cache.take().or_else(Cache::installed)
    }

    /// [`take_cache`](Self::take_cache), saying (once per process) when there is none.
    fn take_cache_or_warn(&mut self, function: &'static str) -> Option<Cache> {
        let cache = self.take_cache();
        if cache.is_none() {
            warn_no_cache(function);
        }
        cache
    }
}

/// Says once per process that a `#[cached]` or `#[invalidates]` handler runs on a router
/// without the cache's layer (and no cache was installed): every such request is served
/// uncached, and a mutation there invalidates nothing.
fn warn_no_cache(function: &'static str) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            target: "api_cache",
            function,
            "a #[cached]/#[invalidates] handler runs on a router without `.layer(cache.extension())` \
             and no cache is installed (`Cache::install_global`): serving uncached (X-Cache: BYPASS) \
             and invalidating nothing; add the layer to the router that holds this route"
        );
    }
}

/// A handler's result, converted to a response, and whether it was an `Err`.
#[derive(Debug)]
pub struct HandlerOutput {
    response: Response,
    failed: bool,
}

impl HandlerOutput {
    /// From a handler returning `Result`: an `Err` is never cached; whether it
    /// invalidates is up to its status, like any response.
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
///
/// `handler` makes the handler's future, called only when the handler is to run: a hit
/// never builds it, so what a hit moves around does not grow with the handler's own
/// state (a database query's future can be kilobytes). The future is `Send + 'static`
/// (as every axum handler's is): a `STALE` answer recomputes the entry on a spawned
/// task, without making the request wait.
pub async fn serve_cached<H, F>(
    mut ctx: RequestContext,
    headers: Option<RequestHeaders>,
    spec: &'static RouteSpec,
    scope: ScopeArg,
    handler: H,
) -> Response
where
    H: FnOnce() -> F + Send + 'static,
    F: Future<Output = HandlerOutput> + Send + 'static,
{
    // Every path that runs the handler boxes its future in a statement of its own, so
    // that the handler's state is never part of this future (see `serve_miss`).
    let Some(cache) = ctx.take_cache_or_warn(spec.function) else {
        let run = Box::pin(handler());
        return with_outcome(run.await.response, Outcome::Bypass);
    };
    // Only the lookup's tracing event reads it: a clock read saved on every request
    // when the event is off (the lookup's own duration is timed for the stats anyway).
    let started = lookup_logged().then(Instant::now);
    let key = match build_key(&cache, &mut ctx, headers.as_ref(), spec, scope) {
        Ok(key) => key,
        Err(reason) => {
            cache.note_ttl(spec.resource, spec.ttl_secs);
            // Cached plain functions the handler calls use this request's cache.
            let handler = Box::pin(cache.run_with(handler()));
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
    if cache.is_shadowed(spec.resource) {
        // Boxed: the shadow path's state stays out of every request's future.
        let shadowed = Box::pin(shadow::serve_shadowed(
            &cache,
            Arc::unwrap_or_clone(key),
            ctx.uri.path(),
            spec,
            handler(),
        ));
        return shadowed.await;
    }
    let if_none_match = ctx.if_none_match.take();
    // A hit is answered here, before anything of the handler is set up to run.
    let policy = Staleness::of(spec);
    // One pair of clock reads for the lookup, and the wall clock's for a hit's age too.
    let (at, at_ms) = (Instant::now(), now_ms());
    let looked_up = cache.lookup_at(&key, policy, at, at_ms).await;
    if let Lookup::Hit(entry) = looked_up {
        cache.record_hit(spec.resource, spec.ttl_secs);
        if spec.verify && cache.draw_verification(spec.resource) {
            shadow::spawn_verification(
                &cache,
                &key,
                ctx.uri.path(),
                spec,
                entry.clone(),
                handler(),
            );
        }
        let age = entry.age_at(at_ms);
        return serve_entry(
            spec,
            &entry,
            age,
            started,
            if_none_match.as_ref(),
            Outcome::Hit,
        );
    }
    // The miss path, with the handler, boxed once and made in a statement of its own:
    // unboxed, or kept as a temporary of the `await`, its state (the handler's future,
    // the engine's state across its await points) would be part of this future, which
    // is moved into place on every request, hits included (and deep stacks in debug
    // builds of handlers that await several cached calls).
    let miss = Box::pin(serve_miss(
        cache,
        key,
        looked_up,
        spec,
        started,
        if_none_match,
        handler,
    ));
    miss.await
}

/// [`serve_cached`] past its lookup, for anything but a hit: a stale answer (its
/// recomputation spawned), or the handler run under the key's single flight.
async fn serve_miss<H, F>(
    cache: Cache,
    key: Arc<CacheKey>,
    looked_up: Lookup,
    spec: &'static RouteSpec,
    started: Option<Instant>,
    if_none_match: Option<HeaderValue>,
    handler: H,
) -> Response
where
    H: FnOnce() -> F,
    F: Future<Output = HandlerOutput> + Send + 'static,
{
    let policy = Staleness::of(spec);
    cache.note_ttl(spec.resource, spec.ttl_secs);
    let ttl = Duration::from_secs(u64::from(spec.ttl_secs));
    let max_bytes = cache.config().max_entry_bytes;
    let entry_key = key.entry_key.clone();
    // Cached plain functions the handler calls use this request's cache.
    let handler = cache.run_with(handler());
    let compute = async move {
        let handler_started = Instant::now();
        let output = handler.await;
        let (response, cacheable) = cacheable(output, spec, max_bytes, &entry_key).await;
        let etag = cacheable
            .as_ref()
            .and_then(|c| etag_in(&c.headers).cloned());
        (
            (response, etag, handler_started, handler_started.elapsed()),
            cacheable,
        )
    };
    let looked_up = match looked_up {
        Lookup::Miss(mut ticket) => match ticket.stale.take() {
            // Served as it is now; one request per key recomputes it in the background
            // (after an invalidation, from half the route's bound on).
            Some(stale) => {
                cache.revalidate(ticket, &stale, ttl, policy, compute);
                return serve_entry(
                    spec,
                    &stale,
                    stale.age(),
                    started,
                    if_none_match.as_ref(),
                    Outcome::Stale,
                );
            }
            None => Lookup::Miss(ticket),
        },
        other => other,
    };
    match cache
        .resolve_lookup_with(&key, ttl, policy, looked_up, compute)
        .await
    {
        Resolved::Served { entry, .. } => serve_entry(
            spec,
            &entry,
            entry.age(),
            started,
            if_none_match.as_ref(),
            Outcome::Hit,
        ),
        Resolved::Computed {
            value: (value, etag, handler_started, handler_time),
            how,
        } => {
            log_lookup(
                spec,
                LookupEvent {
                    outcome: how.event_name(),
                    reason: how.bypass_reason(),
                    age: None,
                    // A bypass decided by the cache (switched off, pending invalidation,
                    // open circuit) looked nothing up.
                    lookup: started
                        .filter(|_| how.outcome() != Outcome::Bypass)
                        .map(|started| handler_started.saturating_duration_since(started)),
                    handler: Some(handler_time),
                },
            );
            let mut response = with_outcome(value, how.outcome());
            if how.stored() {
                // What the entry holds is what every instance will answer: the same
                // ETag, the same browser instructions.
                let headers = response.headers_mut();
                if let Some(etag) = etag {
                    headers.insert(header::ETAG, etag);
                }
                if !headers.contains_key(header::CACHE_CONTROL) {
                    headers.insert(header::CACHE_CONTROL, spec.cache_control.clone());
                }
                if matches_if_none_match(if_none_match.as_ref(), etag_of(response.headers())) {
                    return not_modified(response.headers());
                }
            }
            response
        }
    }
}

/// A hit (or a stale answer): the stored response (or a 304 when the browser holds it
/// already), its headers with its `age`, and the lookup's event.
fn serve_entry(
    spec: &RouteSpec,
    entry: &Arc<Entry>,
    age: Duration,
    started: Option<Instant>,
    if_none_match: Option<&HeaderValue>,
    outcome: Outcome,
) -> Response {
    // Checked here, not only by the macro: the clock read would run on every hit.
    if lookup_logged() {
        log_lookup(
            spec,
            LookupEvent {
                outcome: outcome.as_str(),
                reason: None,
                age: Some(age),
                lookup: started.map(|started| started.elapsed()),
                handler: None,
            },
        );
    }
    let mut response = hit_response(entry, age, spec);
    if outcome != Outcome::Hit {
        response = with_outcome(response, outcome);
    }
    if if_none_match.is_some()
        && matches_if_none_match(if_none_match, etag_in(&entry.response().headers))
    {
        return not_modified(response.headers());
    }
    response
}

/// The request's key, from the memo when this thread built it for the same inputs
/// recently (`key/memo.rs`): on a hit, building it would be SHA-256 and two buffers.
fn build_key(
    cache: &Cache,
    ctx: &mut RequestContext,
    headers: Option<&RequestHeaders>,
    spec: &'static RouteSpec,
    scope: ScopeArg,
) -> Result<Arc<CacheKey>, BypassReason> {
    if spec.skip_cache {
        return Err(BypassReason::SkipCache);
    }
    if ctx.method != Method::GET && ctx.method != Method::HEAD {
        return Err(BypassReason::Method);
    }
    let scope = RequestScope::resolve(scope, ctx.scope.take())?;
    let tenant = scope.tenant();
    let vary = vary_parts(&scope, headers, spec)?;
    let (method, path, query) = (ctx.method.as_str(), ctx.uri.path(), ctx.uri.query());
    // Everything the key is built from below. The route's spec, named by its address,
    // stands for its resource, tags, `vary` names and fingerprint: two specs at one
    // address (identical constants merged) build identical keys.
    let mut inputs = memo::Inputs::new(cache.memo_id(), std::ptr::from_ref(spec) as usize);
    inputs.optional(match tenant {
        Tenant::Scoped(id) => Some(id.as_bytes()),
        Tenant::Global => None,
    });
    inputs.part(method.as_bytes());
    inputs.part(path.as_bytes());
    inputs.optional(query.map(str::as_bytes));
    for (name, value) in &vary {
        inputs.part(name.as_bytes());
        inputs.part(value);
    }
    memo::memoized(&inputs, || {
        // Resource and tag names were validated at compile time; an error here would be
        // a macro bug, and the safe answer is to serve uncached.
        let mut builder = cache
            .key_builder(tenant, spec.resource)
            .map_err(|_| BypassReason::SkipCache)?;
        for tag in spec.tags {
            builder.add_tag(tag).map_err(|_| BypassReason::SkipCache)?;
        }
        builder.add_request(method, path, query);
        for (name, value) in &vary {
            builder.add_part(name, value);
        }
        builder.add_part("fingerprint", spec.fingerprint.as_bytes());
        Ok(builder.build())
    })
}

/// One `vary` part of a request's key: its name in the key, and its bytes.
type VaryValue<'a> = (&'static str, Cow<'a, [u8]>);

/// The route's `vary` parts for this request, named as the key names them.
fn vary_parts<'a>(
    scope: &'a RequestScope,
    headers: Option<&RequestHeaders>,
    spec: &'static RouteSpec,
) -> Result<Vec<VaryValue<'a>>, BypassReason> {
    let mut parts = Vec::new();
    for part in spec.vary {
        match part {
            VaryPart::User => {
                let user = scope.user().ok_or(BypassReason::NoUser)?;
                match scope {
                    RequestScope::Tenant(_) => {
                        parts.push(("vary:user", Cow::Borrowed(user.as_bytes())));
                    }
                    // Global data keyed per user: user ids are unique within a tenant,
                    // not across tenants, so the user's tenant is part of the key. Each
                    // part is length-prefixed, so the pair is unambiguous.
                    RequestScope::Global(request) => {
                        let user_tenant = request.as_ref().map_or("", CacheScope::tenant);
                        parts.push(("vary:user-tenant", Cow::Borrowed(user_tenant.as_bytes())));
                        parts.push(("vary:user", Cow::Borrowed(user.as_bytes())));
                    }
                }
            }
            VaryPart::Header(name) => {
                parts.push((name, Cow::Owned(header_values(headers, name))));
            }
        }
    }
    Ok(parts)
}

/// Every line of header `name`, each length-prefixed: one line `a,b` and two lines `a`
/// and `b` are different requests to the handler, and must not share a key. An absent
/// header is empty, which no present header (even one empty line) encodes to.
fn header_values(headers: Option<&RequestHeaders>, name: &str) -> Vec<u8> {
    let Some(headers) = headers else {
        return Vec::new();
    };
    // Sized first: one allocation, however many lines.
    let mut encoded = Vec::with_capacity(headers.get_all(name).map(|v| 4 + v.len()).sum());
    for value in headers.get_all(name) {
        let bytes = value.as_bytes();
        encoded.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        encoded.extend_from_slice(bytes);
    }
    encoded
}

/// Runs the handler uncached; returns its response and how long it ran.
async fn bypass<F: Future<Output = HandlerOutput>>(
    cache: &Cache,
    resource: &str,
    handler: F,
) -> (Response, Duration) {
    cache.record(Some(resource), Event::Bypass);
    let (output, elapsed) = cache.run_handler(resource, handler).await;
    (output.response, elapsed)
}

/// What one request of a `#[cached]` route did, for its tracing event.
struct LookupEvent {
    /// `HIT`, `STALE`, `MISS`, `BYPASS`, or `ERROR` (the lookup failed; served uncached).
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

/// Whether the per-lookup event ([`log_lookup`]) is on.
fn lookup_logged() -> bool {
    tracing::enabled!(target: "api_cache", tracing::Level::DEBUG)
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
