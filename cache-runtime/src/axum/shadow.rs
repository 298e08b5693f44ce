//! The request side of shadow mode and sampled verification. A shadowed route is
//! answered by its handler exactly as an uncached one (`X-Cache: BYPASS`, no ETag or
//! `Cache-Control` of the cache's making); its buffered response is handed to the
//! engine's shadow run, which compares or stores it on a spawned task. A hit drawn for
//! verification is served as usual while the handler, moved into a spawned task, runs
//! again under the request's cache for the comparison. The request never waits for
//! either: only the shadow lookup, which `on` would make too, happens before the
//! handler, because a response may only be stored under generations read before it was
//! computed.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::Response;
use tracing::Instrument;

use super::response::{cacheable, with_outcome};
use super::{log_lookup, HandlerOutput, LookupEvent};
use crate::cache::{BypassReason, Cache, Fresh, ShadowRoute};
use crate::entry::Entry;
use crate::key::CacheKey;
use crate::spec::RouteSpec;
use crate::stats::{Event, Outcome};

fn route(spec: &'static RouteSpec, path: &str) -> ShadowRoute {
    ShadowRoute {
        function: spec.function,
        path: path.to_owned(),
        compare: spec.verify,
        ignore: spec.verify_ignore,
    }
}

/// A request of a shadowed route: the lookup `on` would make, then the handler on the
/// request path, uncached; the rest is the shadow run's, in the background.
pub(super) async fn serve_shadowed<F>(
    cache: &Cache,
    key: CacheKey,
    path: &str,
    spec: &'static RouteSpec,
    handler: F,
) -> Response
where
    F: Future<Output = HandlerOutput>,
{
    let started = Instant::now();
    cache.note_ttl(spec.resource, spec.ttl_secs);
    cache.record(Some(spec.resource), Event::Bypass);
    let run = cache.shadow_begin(&key, route(spec, path)).await;
    let lookup = started.elapsed();
    // Cached plain functions the handler calls use this request's cache.
    let handler = cache.run_with(handler);
    let (output, handler_time) = cache.run_handler(spec.resource, handler).await;
    let response = match run {
        None => output.response,
        Some(run) => {
            let status = output.response.status();
            let max_bytes = cache.config().max_entry_bytes;
            let (response, stored) = cacheable(output, spec, max_bytes, &key.entry_key).await;
            let ttl = Duration::from_secs(u64::from(spec.ttl_secs));
            cache.shadow_finish(run, Fresh { status, stored }, ttl, handler_time);
            response
        }
    };
    log_lookup(
        spec,
        LookupEvent {
            outcome: Outcome::Bypass.as_str(),
            reason: Some(BypassReason::Shadow),
            age: None,
            lookup: Some(lookup),
            handler: Some(handler_time),
        },
    );
    with_outcome(response, Outcome::Bypass)
}

/// Runs the handler of a hit drawn for verification on a spawned task, and compares its
/// response with `entry`. Skipped (counted) when the bound on background runs is reached.
pub(super) fn spawn_verification<F>(
    cache: &Cache,
    key: &CacheKey,
    path: &str,
    spec: &'static RouteSpec,
    entry: Arc<Entry>,
    handler: F,
) where
    F: Future<Output = HandlerOutput> + Send + 'static,
{
    let Some(permit) = cache.shadow_permit(spec.resource) else {
        return;
    };
    let cache = cache.clone();
    let key = key.clone();
    let route = route(spec, path);
    let span = tracing::debug_span!(target: "api_cache", parent: None, "api_cache_verify", resource = spec.resource);
    span.follows_from(tracing::Span::current());
    tokio::spawn(
        async move {
            let output = cache.run_with(handler).await;
            let status = output.response.status();
            let max_bytes = cache.config().max_entry_bytes;
            let (_, stored) = cacheable(output, spec, max_bytes, &key.entry_key).await;
            cache
                .verify_hit(&key, &route, &entry, &Fresh { status, stored })
                .await;
            drop(permit);
        }
        .instrument(span),
    );
}
