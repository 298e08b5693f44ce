//! Invalidation through [`Cache::current`] (the request's cache, else the process-wide one), like the reference's `invalidateCache`:
//! `invalidate::resources(tenant, &["contacts"])`, `invalidate::all(tenant)`. Handlers
//! use `#[invalidates]`; these are for jobs, scripts and code outside a request. Each
//! costs one round trip whatever the number of cached entries.

use crate::cache::Cache;
use crate::error::InvalidationError;

/// Invalidates `resources` of `tenant` in [`Cache::current`] (the request's cache, else
/// the process-wide one).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// cache_runtime::invalidate::resources("org_1", &["contacts", "analytics"]).await.unwrap();
/// # });
/// ```
pub async fn resources(tenant: &str, resources: &[&str]) -> Result<(), InvalidationError> {
    Cache::current().invalidate(tenant, resources).await
}

/// Drops everything cached for `tenant` in [`Cache::current`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// cache_runtime::invalidate::all("org_1").await.unwrap();
/// # });
/// ```
pub async fn all(tenant: &str) -> Result<(), InvalidationError> {
    Cache::current().invalidate_all(tenant).await
}
