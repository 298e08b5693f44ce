//! `#[invalidates]` handlers: run the mutation, then invalidate its resources for the
//! request's tenant before the response leaves, on every outcome that may have written,
//! and in the background when the request's future is dropped after the handler started.

use std::future::Future;

use axum::response::Response;
use http::{HeaderValue, StatusCode};

use super::{HandlerOutput, RequestContext, RequestScope, X_CACHE_INVALIDATED};
use crate::cache::Cache;
use crate::key::Tenant;
use crate::spec::{InvalidationSpec, ScopeArg};

/// The body of every `#[invalidates]` handler: run it, then invalidate the listed
/// resources for the request's tenant before the response leaves, on every outcome that
/// may have written: all but a client error (4xx), which is taken to have been refused
/// before anything changed. A 303 after a committed write, or a handler that commits and
/// then fails (5xx, an `Err` with a server error status), invalidates. A spurious
/// invalidation costs one miss; a missing one would serve stale data.
///
/// Once the handler has started, the invalidation happens whether or not the client is
/// still there: if this future is dropped (hyper drops it when the client disconnects,
/// a timeout layer when it fires, a panic while unwinding), a guard hands the
/// invalidation to the background.
pub async fn serve_invalidating<H, F>(
    mut ctx: RequestContext,
    spec: &'static InvalidationSpec,
    scope: ScopeArg,
    handler: H,
) -> Response
where
    H: FnOnce() -> F,
    F: Future<Output = HandlerOutput>,
{
    // A mutation always runs its handler: made at once (the same closure form as
    // `serve_cached`'s, whose hits never make it).
    let handler = handler();
    let Some(cache) = ctx.take_cache_or_warn(spec.function) else {
        return handler.await.response;
    };
    let scope = match RequestScope::resolve(scope, ctx.scope.take()) {
        Ok(scope) => scope,
        Err(_) => {
            let output = cache.run_with(handler).await;
            if may_have_written(output.response.status()) {
                // Nothing of an unscoped request is cached, but the data it changed may
                // be cached for its tenant: an app misconfiguration worth shouting about.
                tracing::error!(
                    target: "api_cache",
                    function = spec.function,
                    resources = %spec.resources.join(","),
                    "mutation without a tenant scope: nothing was invalidated"
                );
            }
            return output.response;
        }
    };
    let guard = InvalidateOnDrop {
        cache: &cache,
        tenant: scope.tenant(),
        resources: spec.resources,
        armed: true,
    };
    // Cached plain functions the handler calls use this request's cache.
    let output = cache.run_with(handler).await;
    let mut response = output.response;
    if !may_have_written(response.status()) {
        guard.disarm();
        return response;
    }
    // A deferred invalidation is remembered and redelivered; the mutation's response
    // stands either way.
    let _ = cache
        .invalidate_scoped(scope.tenant(), spec.resources)
        .await;
    guard.disarm();
    if let Ok(value) = HeaderValue::from_str(&spec.resources.join(",")) {
        response.headers_mut().insert(X_CACHE_INVALIDATED, value);
    }
    response
}

/// Every outcome but a client error may follow a write.
fn may_have_written(status: StatusCode) -> bool {
    !status.is_client_error()
}

/// Invalidates in the background if dropped while armed: the mutation's future went
/// away after its handler started, before its invalidation was delivered.
struct InvalidateOnDrop<'a> {
    cache: &'a Cache,
    tenant: Tenant<'a>,
    resources: &'static [&'static str],
    armed: bool,
}

impl InvalidateOnDrop<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for InvalidateOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.cache.invalidate_detached(self.tenant, self.resources);
        }
    }
}
