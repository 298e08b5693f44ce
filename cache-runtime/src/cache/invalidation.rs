//! Invalidation: one write of fresh generation tokens per call, whatever the number of
//! entries ([`Cache::invalidate`], [`Cache::invalidate_all`]); when Redis does not take
//! it, the pending set (`pending.rs`) makes this instance bypass the affected entries
//! while a background task redelivers with backoff. A mutation dropped mid-way hands its
//! invalidation to the background (`invalidate_detached`); [`Cache::flush_pending`]
//! delivers what is left on shutdown. Nothing here drops an invalidation silently.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Cache;
use crate::error::InvalidationError;
use crate::key::{self, GenerationKeys, Tenant};
use crate::stats::Event;

/// The least time one redelivery attempt gets, whatever the response timeout: it is off
/// the request path, and a short timeout would keep failing on a loaded server.
const REDELIVERY_TIMEOUT_MIN: Duration = Duration::from_millis(100);

impl Cache {
    /// Invalidates `resources` of `tenant`: one round trip whatever the number of
    /// entries. Entries tagged with any of them are dropped too.
    pub async fn invalidate(
        &self,
        tenant: &str,
        resources: &[&str],
    ) -> Result<(), InvalidationError> {
        self.invalidate_scoped(Tenant::Scoped(tenant), resources)
            .await
    }

    /// Invalidates `resources` of `scope = global` data.
    pub async fn invalidate_global(&self, resources: &[&str]) -> Result<(), InvalidationError> {
        self.invalidate_scoped(Tenant::Global, resources).await
    }

    /// Drops everything cached for `tenant`, in one round trip.
    pub async fn invalidate_all(&self, tenant: &str) -> Result<(), InvalidationError> {
        let tag = key::tenant_tag(Tenant::Scoped(tenant));
        let mut keys = GenerationKeys::default();
        keys.push_generation(&[&self.inner.config.prefix, ":", &tag], key::ALL);
        self.deliver(tag, keys, &["*"]).await
    }

    pub(crate) async fn invalidate_scoped(
        &self,
        tenant: Tenant<'_>,
        resources: &[&str],
    ) -> Result<(), InvalidationError> {
        for resource in resources {
            key::validate_resource(resource)?;
        }
        let tag = key::tenant_tag(tenant);
        let mut keys = GenerationKeys::default();
        for resource in resources {
            keys.push_generation(&[&self.inner.config.prefix, ":", &tag], resource);
        }
        self.deliver(tag, keys, resources).await
    }

    /// Invalidates without waiting, for a mutation whose future was dropped after its
    /// handler started (the client hung up). This instance serves the resources
    /// uncached from now until the invalidation is delivered, which a spawned task does
    /// at once (and the redelivery loop after it if Redis is failing).
    pub(crate) fn invalidate_detached(
        &self,
        tenant: Tenant<'_>,
        resources: &'static [&'static str],
    ) {
        let tag = key::tenant_tag(tenant);
        let mut keys = GenerationKeys::default();
        for resource in resources
            .iter()
            .filter(|r| key::validate_resource(r).is_ok())
        {
            keys.push_generation(&[&self.inner.config.prefix, ":", &tag], resource);
        }
        if keys.is_empty() {
            return;
        }
        self.inner.pending.add(&tag, &keys);
        tracing::debug!(target: "api_cache", tenant = %tag, resources = %resources.join(","), "mutation dropped after its handler started: invalidating in the background");
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to deliver on (it is shutting down): the pending set keeps the
            // invalidation for `flush_pending` or a later redelivery.
            return;
        };
        let cache = self.clone();
        runtime.spawn(async move {
            let _ = cache.deliver(tag, keys, resources).await;
        });
    }

    async fn deliver(
        &self,
        tenant_tag: String,
        keys: GenerationKeys,
        resources: &[&str],
    ) -> Result<(), InvalidationError> {
        if keys.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        for resource in resources {
            self.record(Some(resource), Event::Invalidation);
        }
        // Taken before sending: only deferrals older than this delivery may be dropped
        // when it succeeds (see Pending::delivered).
        let mark = self.inner.pending.mark();
        self.forget_local_generations(&keys);
        match self.call(self.inner.backend.bump(&keys)).await {
            Ok(()) => {
                self.forget_local_generations(&keys);
                self.inner.pending.delivered(&keys, mark);
                tracing::debug!(target: "api_cache", tenant = %tenant_tag, resources = %resources.join(","), elapsed_us = started.elapsed().as_micros() as u64, "cache invalidation");
                Ok(())
            }
            Err(err) => {
                for resource in resources {
                    self.record(Some(resource), Event::Error);
                }
                tracing::warn!(target: "api_cache", tenant = %tenant_tag, resources = %resources.join(","), error = %err, "invalidation deferred: serving these uncached on this instance until Redis takes it");
                self.inner.pending.add(&tenant_tag, &keys);
                self.ensure_redelivery();
                Err(InvalidationError::Deferred(err))
            }
        }
    }

    /// Tries now to deliver every pending invalidation, for at most `within`, and tells
    /// whether none is left pending. Call it on graceful shutdown, after the server
    /// stopped taking requests: an invalidation still pending when the process exits is
    /// lost, and other instances may then serve the entries it should have dropped until
    /// they expire. What is left is logged (`WARN`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_runtime::{Cache, CacheConfig};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = Cache::new(CacheConfig::default()).await.unwrap();
    /// // axum::serve(listener, app).with_graceful_shutdown(signal).await?; then:
    /// let delivered = cache.flush_pending(Duration::from_secs(2)).await;
    /// assert!(delivered, "nothing was pending");
    /// # });
    /// ```
    pub async fn flush_pending(&self, within: Duration) -> bool {
        const RETRY_AFTER: Duration = Duration::from_millis(20);
        let deadline = Instant::now() + within;
        let attempt_timeout = self
            .inner
            .config
            .response_timeout
            .max(REDELIVERY_TIMEOUT_MIN);
        loop {
            if self.inner.pending.len() == 0 {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // Cancelling a redelivery mid-way is safe: what it did not confirm stays
            // pending.
            if let Ok(true) =
                tokio::time::timeout(left, self.redeliver_pending(attempt_timeout)).await
            {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(RETRY_AFTER.min(left)).await;
        }
        let left = self.inner.pending.len();
        if left == 0 {
            return true;
        }
        tracing::warn!(target: "api_cache", pending = left, within_ms = within.as_millis() as u64, "invalidations still pending: other instances may serve the entries they drop until these expire");
        false
    }

    /// One attempt to deliver every pending invalidation, each tenant's bounded by
    /// `timeout`. True when nothing is pending after it.
    async fn redeliver_pending(&self, timeout: Duration) -> bool {
        for (tenant, keys) in self.inner.pending.snapshot() {
            let names: GenerationKeys = keys.iter().map(|(k, _)| k.as_str()).collect();
            self.forget_local_generations(&names);
            match tokio::time::timeout(timeout, self.inner.backend.bump(&names)).await {
                Ok(Ok(())) => {
                    self.forget_local_generations(&names);
                    self.inner.pending.redelivered(&keys);
                    self.inner.circuit.on_success();
                    tracing::info!(target: "api_cache", tenant = %tenant, keys = names.len(), "pending invalidation delivered");
                }
                Ok(Err(err)) => {
                    tracing::debug!(target: "api_cache", tenant = %tenant, error = %err, "pending invalidation not delivered yet");
                }
                Err(_) => {
                    tracing::debug!(target: "api_cache", tenant = %tenant, timeout_ms = timeout.as_millis() as u64, "pending invalidation not delivered yet: timed out");
                }
            }
        }
        self.inner.pending.len() == 0
    }

    /// Starts the background redelivery of pending invalidations, unless it runs.
    fn ensure_redelivery(&self) {
        if self.inner.redelivery_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.inner
                .redelivery_running
                .store(false, Ordering::Release);
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            const FIRST: Duration = Duration::from_millis(50);
            const MAX: Duration = Duration::from_secs(2);
            let mut delay = FIRST;
            loop {
                tokio::time::sleep(delay).await;
                let Some(inner) = weak.upgrade() else { return };
                let cache = Cache { inner };
                let pending = cache.inner.pending.snapshot();
                if pending.is_empty() {
                    cache
                        .inner
                        .redelivery_running
                        .store(false, Ordering::Release);
                    // An invalidation deferred between the snapshot and the flag store
                    // saw the flag still set; take the job back if so.
                    if cache.inner.pending.len() == 0
                        || cache.inner.redelivery_running.swap(true, Ordering::AcqRel)
                    {
                        return;
                    }
                    continue;
                }
                let timeout = cache
                    .inner
                    .config
                    .response_timeout
                    .max(REDELIVERY_TIMEOUT_MIN);
                let all_delivered = cache.redeliver_pending(timeout).await;
                delay = if all_delivered {
                    FIRST
                } else {
                    (delay * 2).min(MAX)
                };
            }
        });
    }
}
