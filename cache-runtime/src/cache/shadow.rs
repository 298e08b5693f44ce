//! Shadow runs and sampled verification, on the engine's side. A shadow run does what
//! `on` would do for a request the handler answers anyway: the lookup (before the
//! handler runs, so that a fresh response is stored only under generations read before
//! it was computed, the engine's stale-set protection), then, off the request path, the
//! store of a would-be miss and the comparison of a would-be hit. A sampled hit in `on`
//! is compared the same way. A difference under generations that have not moved since is
//! a missing invalidation ([`Mismatch`]); one under moved generations raced a write.
//! Every run holds a permit of a bounded semaphore; none free means the run is skipped
//! and counted, never queued. Nothing here delays or changes a response.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::read::{Lookup, Staleness};
use super::Cache;
use crate::entry::{CachedResponse, Entry};
use crate::generation::Generation;
use crate::key::CacheKey;
use crate::stats::Event;
use crate::verify::{diff, Mismatch, ResourceMode};

/// How long after a difference the generations are read again. A mutation changes its
/// data and invalidates right after its handler returns; a comparison that falls between
/// the two sees new data under the old generations. Waiting this long (in the background)
/// lets that invalidation land, so it is counted as a race, not reported as missing.
const RACE_GRACE: Duration = Duration::from_secs(1);

/// What a comparison needs to know of the route whose response it compares.
#[derive(Debug, Clone)]
pub(crate) struct ShadowRoute {
    /// `module::function` of the `#[cached]` handler.
    pub(crate) function: &'static str,
    /// The request path (no query), for the report.
    pub(crate) path: String,
    /// `verify = false` on the route: count, store, never compare.
    pub(crate) compare: bool,
    /// `verify_ignore = [...]`: JSON fields left out of the comparison.
    pub(crate) ignore: &'static [&'static str],
}

/// The handler's fresh response, as far as it can be compared.
#[derive(Debug)]
pub(crate) struct Fresh {
    /// Its status.
    pub(crate) status: StatusCode,
    /// Its storable form, when it has one (a storable status, body within the bound).
    pub(crate) stored: Option<CachedResponse>,
}

/// A shadow run under way: its permit, and what the lookup found before the handler ran.
pub(crate) struct ShadowRun {
    permit: OwnedSemaphorePermit,
    key: CacheKey,
    lookup: Lookup,
    route: ShadowRoute,
}

impl Cache {
    /// Whether `resource` is in shadow now (and the global switch on).
    pub(crate) fn is_shadowed(&self, resource: &str) -> bool {
        self.is_enabled() && self.resource_mode(resource) == ResourceMode::Shadow
    }

    /// A permit for one shadow or verification run, or `None` (counted) when the bound
    /// is reached.
    pub(crate) fn shadow_permit(&self, resource: &str) -> Option<OwnedSemaphorePermit> {
        match Arc::clone(&self.inner.shadow_permits).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                self.record(Some(resource), Event::ShadowSkipped);
                None
            }
        }
    }

    /// Shadow and verification runs holding a permit now (for this workspace's tests:
    /// zero means every background run has finished).
    #[cfg(feature = "testing")]
    pub fn shadow_runs_in_flight(&self) -> usize {
        let bound = self
            .inner
            .config
            .shadow_concurrency
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        bound.saturating_sub(self.inner.shadow_permits.available_permits())
    }

    /// Whether this hit of `resource` is drawn for verification.
    pub(crate) fn draw_verification(&self, resource: &str) -> bool {
        let share = self.inner.rollout.share(resource);
        share > 0.0 && self.inner.config.verify_random.draw() < share
    }

    /// Starts a shadow run for `key`: a permit, then the lookup `on` would make. `None`
    /// when there is no permit, when `on` would not consult the cache either (a pending
    /// invalidation, an open circuit), or when the lookup failed (counted as an error).
    pub(crate) async fn shadow_begin(
        &self,
        key: &CacheKey,
        route: ShadowRoute,
    ) -> Option<ShadowRun> {
        let permit = self.shadow_permit(key.resource())?;
        if self.inner.pending.blocks(&key.generation_keys) {
            return None;
        }
        let lookup = self.lookup_consulted(key, Staleness::STRICT, false).await;
        match &lookup {
            Lookup::Bypass(_) => return None,
            Lookup::Miss(ticket) if ticket.generations.is_none() => return None,
            _ => {}
        }
        Some(ShadowRun {
            permit,
            key: key.clone(),
            lookup,
            route,
        })
    }

    /// Finishes a shadow run on a spawned task with the handler's fresh response: a
    /// would-be hit is compared, a would-be miss stored under the lookup's generations.
    pub(crate) fn shadow_finish(
        &self,
        run: ShadowRun,
        fresh: Fresh,
        ttl: Duration,
        compute: Duration,
    ) {
        let cache = self.clone();
        let span = tracing::debug_span!(target: "api_cache", parent: None, "api_cache_shadow", resource = %run.key.resource());
        span.follows_from(tracing::Span::current());
        tokio::spawn(
            async move {
                let ShadowRun {
                    permit,
                    key,
                    lookup,
                    route,
                } = run;
                cache
                    .settle_shadow(&key, &route, lookup, fresh, ttl, compute)
                    .await;
                drop(permit);
            }
            .instrument(span),
        );
    }

    async fn settle_shadow(
        &self,
        key: &CacheKey,
        route: &ShadowRoute,
        lookup: Lookup,
        fresh: Fresh,
        ttl: Duration,
        compute: Duration,
    ) {
        let resource = Some(key.resource());
        match lookup {
            Lookup::Hit(entry) => {
                self.record(resource, Event::WouldBeHit);
                self.compare(key, route, &entry, &fresh, "shadow").await;
            }
            Lookup::Miss(ticket) => {
                // A valid entry drawn for early refresh would have been served (and
                // refreshed): a would-be hit, compared, and the fresh response stored.
                match &ticket.refreshing {
                    Some(valid) => {
                        self.record(resource, Event::WouldBeHit);
                        self.compare(key, route, valid, &fresh, "shadow").await;
                    }
                    None => self.record(resource, Event::WouldBeMiss),
                }
                let entry = match fresh.stored {
                    Some(response) => self.make_entry(&ticket, response, ttl, compute),
                    None => {
                        self.record(resource, Event::NotStored);
                        None
                    }
                };
                if let Some(entry) = entry {
                    let _ = self.store_entry(&ticket.key, entry, ttl).await;
                }
            }
            Lookup::Bypass(_) => {}
        }
    }

    /// Compares a sampled hit's entry with the handler's fresh response (`on` mode).
    pub(crate) async fn verify_hit(
        &self,
        key: &CacheKey,
        route: &ShadowRoute,
        entry: &Arc<Entry>,
        fresh: &Fresh,
    ) {
        self.compare(key, route, entry, fresh, "verify").await;
    }

    /// Compares `entry` with `fresh`; a difference is a mismatch when the generations
    /// the entry carries are still current, a race with an invalidation otherwise.
    async fn compare(
        &self,
        key: &CacheKey,
        route: &ShadowRoute,
        entry: &Arc<Entry>,
        fresh: &Fresh,
        found_by: &'static str,
    ) {
        if !route.compare {
            return;
        }
        let stored = entry.response();
        let difference = match &fresh.stored {
            Some(response) => diff::describe(stored, response, route.ignore),
            // A failing handler says nothing about the entry.
            None if fresh.status.is_server_error() => return,
            None if fresh.status != stored.status => Some(format!(
                "status {} (stored) vs {} (fresh)",
                stored.status.as_u16(),
                fresh.status.as_u16()
            )),
            // Same status, not storable (oversized, Set-Cookie, no-store): not comparable.
            None => return,
        };
        let resource = Some(key.resource());
        self.record(resource, Event::Verification);
        let Some(difference) = difference else {
            return;
        };
        tokio::time::sleep(RACE_GRACE).await;
        // Generations that cannot be read now cannot tell a race from a fault: counted
        // as a race, so that a mismatch is never a false alarm.
        match self.current_generations(key).await {
            Some(current) if current == entry.generations => {
                self.record(resource, Event::Mismatch);
                self.inner.reports.report(Mismatch {
                    resource: key.resource().to_owned(),
                    function: route.function.to_owned(),
                    path: route.path.clone(),
                    tenant: key.tenant_tag().to_owned(),
                    key: key.entry_key.clone(),
                    age_secs: entry.age().as_secs(),
                    difference,
                    found_by,
                });
            }
            _ => self.record(resource, Event::Raced),
        }
    }

    /// The generations of `key` now, or `None` when they cannot be read.
    async fn current_generations(&self, key: &CacheKey) -> Option<Vec<Generation>> {
        match self.lookup_consulted(key, Staleness::STRICT, false).await {
            Lookup::Hit(entry) => Some(entry.generations.clone()),
            Lookup::Miss(ticket) => ticket.generations,
            Lookup::Bypass(_) => None,
        }
    }
}
