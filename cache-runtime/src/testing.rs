//! **Not part of the stable API** (the `testing` feature, off by default): the engine's
//! manual lookup/store and the key builder, for this workspace's integration tests and
//! benchmarks, which drive the engine below the attributes (stale-set races, generation
//! keys in Redis, the hit path's cost). An application never needs them: `#[cached]`
//! goes through single flight, the lease and the off-path store, which a manual
//! `lookup` + `store` skips, and it never has to know the key layout. Anything here may
//! change in any release.

use std::time::Duration;

use crate::error::BackendError;
use crate::Cache;

pub use crate::cache::{BypassReason, Lookup, MissTicket};
pub use crate::entry::{CachedResponse, Entry};
pub use crate::key::{
    normalize_query, CacheKey, GenerationKeyIter, GenerationKeys, KeyBuilder, Tenant,
};

impl Cache {
    /// Starts a key for `resource` of `tenant`.
    ///
    /// ```
    /// use cache_runtime::testing::Tenant;
    /// use cache_runtime::{Cache, CacheConfig};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = Cache::new(CacheConfig::default()).await.unwrap();
    /// let key = cache
    ///     .key(Tenant::Scoped("org_1"), "templates")
    ///     .unwrap()
    ///     .request("GET", "/api/templates", Some("page=2&category=sales"))
    ///     .part("user", "user_7")
    ///     .build();
    /// assert!(key.entry_key().starts_with("api-cache:{t.org_1}:e:templates:"));
    /// # });
    /// ```
    pub fn key(
        &self,
        tenant: Tenant<'_>,
        resource: &str,
    ) -> Result<KeyBuilder, crate::InvalidResource> {
        self.key_builder(tenant, resource)
    }

    /// Looks `key` up (one round trip for the generations and the entry) and counts the
    /// outcome, without single flight.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_runtime::testing::{CachedResponse, Lookup, Tenant};
    /// use cache_runtime::{Cache, CacheConfig};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = Cache::new(CacheConfig::default()).await.unwrap();
    /// let key = cache.key(Tenant::Scoped("org_1"), "templates").unwrap()
    ///     .request("GET", "/api/templates", None)
    ///     .build();
    ///
    /// let Lookup::Miss(ticket) = cache.lookup(&key).await else { unreachable!() };
    /// cache.store(ticket, CachedResponse::ok("[]"), Duration::from_secs(1800)).await.unwrap();
    /// assert!(matches!(cache.lookup(&key).await, Lookup::Hit(_)));
    ///
    /// cache.invalidate("org_1", &["templates"]).await.unwrap();
    /// assert!(matches!(cache.lookup(&key).await, Lookup::Miss(_)));
    /// # });
    /// ```
    pub async fn lookup(&self, key: &CacheKey) -> Lookup {
        let lookup = self.lookup_uncounted(key).await;
        let event = match &lookup {
            Lookup::Hit(_) => crate::stats::Event::Hit,
            Lookup::Miss(ticket) => {
                if ticket.is_early_refresh() {
                    self.record(Some(key.resource()), crate::stats::Event::EarlyRefresh);
                }
                crate::stats::Event::Miss
            }
            Lookup::Bypass(_) => crate::stats::Event::Bypass,
        };
        self.record(Some(key.resource()), event);
        lookup
    }

    /// Stores `response` for the ticket's key with `ttl`, on the request path. Returns
    /// whether it was stored: nothing is stored after a failed lookup, for a response
    /// over the size bound, or while an invalidation of the key is pending.
    pub async fn store(
        &self,
        ticket: MissTicket,
        response: CachedResponse,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let compute = ticket.started.elapsed();
        let Some(entry) = self.make_entry(&ticket, response, ttl, compute) else {
            return Ok(false);
        };
        self.store_entry(&ticket.key, entry, ttl)
            .await
            .map(|()| true)
    }
}

impl MissTicket {
    /// The key that missed.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// False when the lookup itself failed (Redis unreachable): a result computed under
    /// this ticket will not be stored, since its generations are unknown.
    pub fn can_store(&self) -> bool {
        self.generations.is_some()
    }

    /// True when the entry was valid but chosen for early refresh (XFetch).
    pub fn is_early_refresh(&self) -> bool {
        self.refreshing.is_some()
    }
}
