//! Cached plain async functions (`#[cached(..., key = (a, b), scope = ...)]`): the key is
//! the serde JSON encoding of the key tuple, the value round-trips through serde JSON.
//! They use [`Cache::current`]: the cache of the request being served, else the
//! process-wide one. A value that no longer decodes
//! (its type changed) is a miss, never an error.

use std::future::Future;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cache::{Cache, Resolved};
use crate::entry::CachedResponse;
use crate::key::{CacheKey, Tenant};
use crate::spec::{RouteSpec, ScopeArg};
use crate::stats::Event;

/// The per-call event of a cached plain function: the same `cache lookup` event as a
/// handler's (DEBUG, target `api_cache`), with the whole call's time as `elapsed_us`.
fn log_call<T, F>(spec: &RouteSpec, resolved: &Resolved<T, F>, started: Instant) {
    let (outcome, reason, age) = match resolved {
        Resolved::Served { entry, .. } => ("HIT", None, Some(entry.age().as_secs())),
        Resolved::Computed { how, .. } => (
            how.event_name(),
            how.bypass_reason().map(|reason| reason.as_str()),
            None,
        ),
    };
    tracing::debug!(
        target: "api_cache",
        resource = spec.resource,
        function = spec.function,
        outcome,
        reason,
        age_s = age,
        elapsed_us = started.elapsed().as_micros().min(u128::from(u64::MAX)) as u64,
        "cache lookup"
    );
}

/// Encodes a cached function's key arguments before its body runs (so the body may
/// consume them). `None` when they do not serialize: the call then bypasses the cache
/// rather than share a key with other calls.
pub fn encode_key<K: Serialize + ?Sized>(key: &K) -> Option<Vec<u8>> {
    serde_json::to_vec(key).ok()
}

fn plain_key(
    cache: &Cache,
    spec: &RouteSpec,
    scope: &ScopeArg,
    key: Option<Vec<u8>>,
) -> Option<CacheKey> {
    if spec.skip_cache {
        return None;
    }
    let scope = match scope {
        ScopeArg::Global => None,
        ScopeArg::Explicit(Some(scope)) => Some(scope),
        ScopeArg::Explicit(None) | ScopeArg::FromRequest => return None,
    };
    let tenant = scope.map_or(Tenant::Global, |s| Tenant::Scoped(s.tenant()));
    let encoded = key?;
    let mut builder = cache.key_builder(tenant, spec.resource).ok()?;
    for tag in spec.tags {
        builder = builder.tag(tag).ok()?;
    }
    Some(
        builder
            .part_bytes("args", &encoded)
            .part("function", spec.function)
            .part("fingerprint", spec.fingerprint)
            .build(),
    )
}

/// A cached function returning a plain value.
pub async fn cached_value<T, F>(
    spec: &'static RouteSpec,
    scope: ScopeArg,
    key: Option<Vec<u8>>,
    compute: F,
) -> T
where
    T: Serialize + DeserializeOwned,
    F: Future<Output = T>,
{
    let started = Instant::now();
    let cache = &Cache::current();
    let Some(cache_key) = plain_key(cache, spec, &scope, key) else {
        cache.record(Some(spec.resource), Event::Bypass);
        return compute.await;
    };
    let ttl = Duration::from_secs(u64::from(spec.ttl_secs));
    let compute = async move {
        let value = compute.await;
        let stored = serde_json::to_vec(&value).ok().map(CachedResponse::ok);
        (value, stored)
    };
    // Boxed once, as in `serve_cached`: the engine holds it across several awaits.
    let resolved = cache.resolve(&cache_key, ttl, Box::pin(compute)).await;
    log_call(spec, &resolved, started);
    match resolved {
        Resolved::Computed { value, .. } => value,
        Resolved::Served { entry, compute } => {
            match serde_json::from_slice(&entry.response().body) {
                Ok(value) => value,
                Err(_) => {
                    cache.record(Some(spec.resource), Event::Corrupt);
                    compute.await.0
                }
            }
        }
    }
}

/// A cached function returning `Result`: only `Ok` values are stored.
pub async fn cached_result<T, E, F>(
    spec: &'static RouteSpec,
    scope: ScopeArg,
    key: Option<Vec<u8>>,
    compute: F,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned,
    F: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let cache = &Cache::current();
    let Some(cache_key) = plain_key(cache, spec, &scope, key) else {
        cache.record(Some(spec.resource), Event::Bypass);
        return compute.await;
    };
    let ttl = Duration::from_secs(u64::from(spec.ttl_secs));
    let compute = async move {
        let result = compute.await;
        let stored = match &result {
            Ok(value) => serde_json::to_vec(value).ok().map(CachedResponse::ok),
            Err(_) => None,
        };
        (result, stored)
    };
    // Boxed once, as in `serve_cached`: the engine holds it across several awaits.
    let resolved = cache.resolve(&cache_key, ttl, Box::pin(compute)).await;
    log_call(spec, &resolved, started);
    match resolved {
        Resolved::Computed { value, .. } => value,
        Resolved::Served { entry, compute } => {
            match serde_json::from_slice(&entry.response().body) {
                Ok(value) => Ok(value),
                Err(_) => {
                    cache.record(Some(spec.resource), Event::Corrupt);
                    compute.await.0
                }
            }
        }
    }
}
