//! The miss path: what happens to a request the read path did not answer with a hit.
//! It first decides how the request is answered ([`Decision`]: an entry another request
//! produced, a computation led here for the key's single flight, one run alone, or one
//! run without the cache) and records that outcome once; then it runs the computation,
//! publishes its entry to the flight's waiters and stores it (off the request path when
//! the store is Redis). Single flight (`flight.rs`) coordinates the requests of one
//! instance, the lease those of several. A store fault never reaches the caller here: it
//! is counted, and the request is answered uncached.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::Instrument;

use super::read::{BypassReason, Lookup, MissCause, MissTicket, Staleness};
use super::Cache;
use crate::entry::{now_ms, CachedResponse, Entry};
use crate::error::BackendError;
use crate::flight::{FlightGuard, FlightState, Join};
use crate::generation::Generation;
use crate::key::CacheKey;
use crate::stats::{Event, Outcome};

/// How long a finished flight stays visible after its entry reached Redis.
const FLIGHT_GRACE: Duration = Duration::from_millis(500);

/// How one request was answered, with what it was answered.
pub(crate) enum Resolved<T, Fut> {
    /// Served from an entry; `compute` was not polled and is handed back.
    Served { entry: Arc<Entry>, compute: Fut },
    /// Computed on this request.
    Computed { value: T, how: Computed },
}

/// Why a request computed its answer, and what became of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Computed {
    /// A miss: the value was computed, and stored when `stored` (or being stored).
    Miss { stored: bool },
    /// The lookup itself failed (a store fault): served uncached, never stored.
    LookupFailed,
    /// The cache was not consulted.
    Bypass(BypassReason),
}

impl Computed {
    /// What the client is told in `X-Cache`: a failed lookup is a miss to it.
    pub(crate) fn outcome(self) -> Outcome {
        match self {
            Computed::Miss { .. } | Computed::LookupFailed => Outcome::Miss,
            Computed::Bypass(_) => Outcome::Bypass,
        }
    }

    /// The `outcome` field of the `cache lookup` event: `ERROR` for a failed lookup.
    pub(crate) fn event_name(self) -> &'static str {
        match self {
            Computed::LookupFailed => "ERROR",
            _ => self.outcome().as_str(),
        }
    }

    /// The bypass reason, for a bypass.
    pub(crate) fn bypass_reason(self) -> Option<BypassReason> {
        match self {
            Computed::Bypass(reason) => Some(reason),
            _ => None,
        }
    }

    /// Whether the value was (or is being) stored.
    pub(crate) fn stored(self) -> bool {
        matches!(self, Computed::Miss { stored: true })
    }
}

/// How one request will be answered, decided before anything is computed. Its outcome is
/// recorded in one place, [`Cache::record_decision`].
enum Decision {
    /// A valid entry: the lookup's hit, or the entry under early refresh while another
    /// request refreshes it.
    Hit(Arc<Entry>),
    /// An entry another request computed meanwhile: this instance's flight leader, or
    /// the holder of the lease on another instance.
    Coalesced(Arc<Entry>),
    /// Compute and store, leading the key's flight: its waiters get the entry.
    Lead {
        ticket: MissTicket,
        flight: FlightGuard,
    },
    /// Compute and store alone: the flight's leader produced nothing usable in time.
    ComputeAlone(MissTicket),
    /// Compute without the cache: it is not consulted for this key now.
    Bypass(BypassReason),
    /// Compute without the cache: the lookup failed.
    LookupFailed,
}

/// Waits for a flight's leader to publish. A separate function so that the channel's read
/// guard (not `Send`) never lives across an await of the caller.
async fn wait_for_flight(
    mut receiver: watch::Receiver<FlightState>,
    wait: Duration,
) -> Option<Arc<Entry>> {
    match tokio::time::timeout(wait, receiver.wait_for(FlightState::is_finished)).await {
        Ok(Ok(state)) => state.entry(),
        _ => None,
    }
}

/// The counter of a miss's cause.
fn miss_cause_event(cause: MissCause) -> Event {
    match cause {
        MissCause::Cold => Event::MissCold,
        MissCause::Expiry => Event::MissExpired,
        MissCause::Invalidation => Event::MissInvalidated,
    }
}

/// The flight of `key` under `generations`: requests share a computation only when it
/// reads the same generations.
fn flight_key(key: &CacheKey, generations: &[Generation]) -> String {
    let mut flight_key = String::with_capacity(key.entry_key.len() + 32 * generations.len());
    flight_key.push_str(&key.entry_key);
    for generation in generations {
        flight_key.push('#');
        flight_key.push_str(generation.as_str());
    }
    flight_key
}

impl Cache {
    /// The whole read path for one key: lookup; on a miss, join or lead the key's single
    /// flight (and the cross-instance lease when configured), compute, publish to
    /// waiters, and store off the request path. `compute` yields the caller's value and,
    /// when storable, its cacheable form. Records the outcome.
    pub(crate) async fn resolve<T, Fut>(
        &self,
        key: &CacheKey,
        ttl: Duration,
        compute: Fut,
    ) -> Resolved<T, Fut>
    where
        Fut: Future<Output = (T, Option<CachedResponse>)>,
    {
        let looked_up = self.lookup_uncounted(key).await;
        self.resolve_lookup(key, ttl, looked_up, compute).await
    }

    /// [`Cache::resolve`] after its lookup, for a caller that answers hits itself.
    pub(crate) async fn resolve_lookup<T, Fut>(
        &self,
        key: &CacheKey,
        ttl: Duration,
        looked_up: Lookup,
        compute: Fut,
    ) -> Resolved<T, Fut>
    where
        Fut: Future<Output = (T, Option<CachedResponse>)>,
    {
        self.resolve_lookup_with(key, ttl, Staleness::STRICT, looked_up, compute)
            .await
    }

    /// [`Cache::resolve_lookup`] for a route whose entries are kept past their TTL for
    /// its grace (`policy`).
    pub(crate) async fn resolve_lookup_with<T, Fut>(
        &self,
        key: &CacheKey,
        ttl: Duration,
        policy: Staleness,
        looked_up: Lookup,
        compute: Fut,
    ) -> Resolved<T, Fut>
    where
        Fut: Future<Output = (T, Option<CachedResponse>)>,
    {
        let resource = key.resource();
        let keep = policy.keep_for(ttl);
        let decision = match looked_up {
            Lookup::Hit(entry) => Decision::Hit(entry),
            Lookup::Bypass(reason) => Decision::Bypass(reason),
            Lookup::Miss(ticket) => self.decide_miss(key, ticket).await,
        };
        self.record_decision(resource, &decision);
        match decision {
            Decision::Hit(entry) | Decision::Coalesced(entry) => {
                Resolved::Served { entry, compute }
            }
            Decision::Lead { ticket, flight } => {
                self.compute_and_store(ticket, ttl, keep, compute, Some(flight))
                    .await
            }
            Decision::ComputeAlone(ticket) => {
                self.compute_and_store(ticket, ttl, keep, compute, None)
                    .await
            }
            Decision::Bypass(reason) => {
                let ((value, _), _) = self.run_handler(resource, compute).await;
                Resolved::Computed {
                    value,
                    how: Computed::Bypass(reason),
                }
            }
            Decision::LookupFailed => {
                let ((value, _), _) = self.run_handler(resource, compute).await;
                Resolved::Computed {
                    value,
                    how: Computed::LookupFailed,
                }
            }
        }
    }

    /// Joins the key's flight and, as its leader, the cross-instance lease; a follower
    /// waits (bounded) for the leader's entry.
    async fn decide_miss(&self, key: &CacheKey, ticket: MissTicket) -> Decision {
        let Some(generations) = &ticket.generations else {
            return Decision::LookupFailed;
        };
        let flight = match self.inner.flights.join(flight_key(key, generations)) {
            // A memory miss that leads looks once more (no round trip): a leader that
            // finished between this request's lookup and its join (the thread can be
            // preempted between them, with no await) stored before its flight ended.
            // With Redis a finished flight stays visible for `FLIGHT_GRACE` instead.
            Join::Leader(flight) if ticket.refreshing.is_none() => {
                if let Some(entry) = self.memory_current(key, Instant::now(), now_ms()) {
                    flight.publish(Some(entry.clone()));
                    return Decision::Coalesced(entry);
                }
                flight
            }
            Join::Leader(flight) => flight,
            Join::Follower(receiver) => {
                if let Some(valid) = &ticket.refreshing {
                    // Another request of this instance is refreshing this entry (or just
                    // has): serve its result if published, else the still-valid entry.
                    // Waiting would turn the hit that XFetch protects into a stall.
                    let entry = receiver.borrow().entry();
                    return Decision::Hit(entry.unwrap_or_else(|| valid.clone()));
                }
                return match wait_for_flight(receiver, self.inner.config.flight_wait).await {
                    Some(entry) => Decision::Coalesced(entry),
                    // The leader failed, was cancelled, produced nothing storable, or is
                    // too slow: compute here, uncoordinated, which is always correct.
                    None => Decision::ComputeAlone(ticket),
                };
            }
        };
        if let (Some(lease), true) = (self.inner.config.lease, self.inner.backend.is_remote()) {
            let refreshing = ticket.refreshing.as_ref();
            if let Some(entry) = self.follow_lease(key, generations, lease, refreshing).await {
                if refreshing.is_some() {
                    return Decision::Hit(entry);
                }
                flight.publish(Some(entry.clone()));
                return Decision::Coalesced(entry);
            }
        }
        Decision::Lead { ticket, flight }
    }

    /// The one place a request's outcome is counted.
    fn record_decision(&self, resource: &str, decision: &Decision) {
        let resource = Some(resource);
        match decision {
            Decision::Hit(_) => self.record(resource, Event::Hit),
            Decision::Coalesced(_) => {
                self.record(resource, Event::Hit);
                self.record(resource, Event::Coalesced);
            }
            Decision::Lead { ticket, .. } | Decision::ComputeAlone(ticket) => {
                if ticket.refreshing.is_some() {
                    self.record(resource, Event::EarlyRefresh);
                } else {
                    self.record(resource, miss_cause_event(ticket.cause));
                }
                self.record(resource, Event::Miss);
            }
            Decision::LookupFailed => self.record(resource, Event::Miss),
            Decision::Bypass(_) => self.record(resource, Event::Bypass),
        }
    }

    /// For a lookup answered `STALE` with `stale` (taken out of `ticket` by the caller,
    /// who serves it at once): counts the answer and, when the policy says it is time
    /// ([`Staleness::recompute_now`]) and this key is not being recomputed already (this
    /// instance's flight, or with the lease another instance), recomputes it on a
    /// spawned task, stored under the generations the lookup read *before* it runs (a
    /// write meanwhile leaves it stale on arrival). Never waits.
    pub(crate) fn revalidate<T, Fut>(
        &self,
        ticket: MissTicket,
        stale: &Entry,
        ttl: Duration,
        policy: Staleness,
        compute: Fut,
    ) where
        Fut: Future<Output = (T, Option<CachedResponse>)> + Send + 'static,
        T: Send + 'static,
    {
        let resource = ticket.key.resource().to_owned();
        self.record(Some(&resource), Event::Stale);
        if !policy.recompute_now(stale, ticket.cause, now_ms()) {
            return;
        }
        let Some(generations) = &ticket.generations else {
            return;
        };
        let flight = match self
            .inner
            .flights
            .join(flight_key(&ticket.key, generations))
        {
            Join::Leader(flight) => flight,
            // Another request of this instance is recomputing it already.
            Join::Follower(_) => return,
        };
        let cache = self.clone();
        let span = tracing::debug_span!(target: "api_cache", parent: None, "api_cache_revalidate", resource = %resource);
        span.follows_from(tracing::Span::current());
        tokio::spawn(
            async move {
                if let (Some(lease), true) =
                    (cache.inner.config.lease, cache.inner.backend.is_remote())
                {
                    let Some(generations) = &ticket.generations else {
                        return;
                    };
                    let lease_key = ticket
                        .key
                        .lease_key(&cache.inner.config.prefix, generations);
                    if let Ok(false) = cache
                        .call(cache.inner.backend.try_lease(&lease_key, lease))
                        .await
                    {
                        // Another instance is recomputing it.
                        return;
                    }
                }
                cache.record(Some(&resource), Event::Revalidation);
                let keep = policy.keep_for(ttl);
                let _ = cache
                    .compute_and_store(ticket, ttl, keep, compute, Some(flight))
                    .await;
            }
            .instrument(span),
        );
    }

    /// Computes, publishes the entry to the flight's waiters and stores it (kept for
    /// `keep`, fresh for `ttl`): off the request path for Redis, the flight answering
    /// this instance's readers meanwhile.
    async fn compute_and_store<T, Fut>(
        &self,
        ticket: MissTicket,
        ttl: Duration,
        keep: Duration,
        compute: Fut,
        flight: Option<FlightGuard>,
    ) -> Resolved<T, Fut>
    where
        Fut: Future<Output = (T, Option<CachedResponse>)>,
    {
        let resource = ticket.key.resource();
        let ((value, cacheable), compute_time) = self.run_handler(resource, compute).await;
        let entry = match cacheable {
            Some(response) => self.make_entry(&ticket, response, ttl, compute_time),
            None => {
                self.record(Some(resource), Event::NotStored);
                None
            }
        };
        if let Some(flight) = &flight {
            flight.publish(entry.clone());
        }
        let stored = entry.is_some();
        if let Some(entry) = entry {
            if self.inner.backend.is_remote() {
                let cache = self.clone();
                let key = ticket.key;
                // Its own root span, linked to the request's: a child would hold the
                // request's span open until the store lands.
                let store_span = tracing::debug_span!(target: "api_cache", parent: None, "api_cache_store", resource = %key.resource());
                store_span.follows_from(tracing::Span::current());
                tokio::spawn(async move {
                    let keep_flight_until_stored = flight;
                    let _ = cache
                        .store_entry(&key, entry, keep)
                        .instrument(store_span)
                        .await;
                    // A reader whose lookup missed just before the store landed joins the
                    // flight just after: keep it visible a moment longer so that reader
                    // is answered from it rather than recomputing.
                    tokio::time::sleep(FLIGHT_GRACE.min(ttl / 2)).await;
                    drop(keep_flight_until_stored);
                });
            } else {
                let _ = self.store_entry(&ticket.key, entry, keep).await;
            }
        }
        Resolved::Computed {
            value,
            how: Computed::Miss { stored },
        }
    }

    /// With the lease on: take it, or wait (polling) for its holder's entry. Returns the
    /// entry when another instance produced it in time. An early refresh (`refreshing`)
    /// does not wait: when another instance holds the lease, the valid entry is returned.
    async fn follow_lease(
        &self,
        key: &CacheKey,
        generations: &[Generation],
        lease: Duration,
        refreshing: Option<&Arc<Entry>>,
    ) -> Option<Arc<Entry>> {
        let lease_key = key.lease_key(&self.inner.config.prefix, generations);
        match self
            .call(self.inner.backend.try_lease(&lease_key, lease))
            .await
        {
            Ok(false) => {}
            // Taken by us, or Redis failing: compute.
            _ => return None,
        }
        if let Some(valid) = refreshing {
            return Some(valid.clone());
        }
        let deadline = Instant::now() + lease;
        let poll = (lease / 20).clamp(Duration::from_millis(5), Duration::from_millis(50));
        while Instant::now() < deadline {
            tokio::time::sleep(poll).await;
            match self.lookup_uncounted(key).await {
                Lookup::Hit(entry) => return Some(entry),
                // A valid entry that drew an early refresh is still a valid entry.
                Lookup::Miss(MissTicket {
                    refreshing: Some(entry),
                    ..
                }) => return Some(entry),
                Lookup::Miss(ticket) if ticket.generations.as_deref() == Some(generations) => {
                    continue
                }
                // Generations moved on, or Redis failing: stop waiting.
                _ => return None,
            }
        }
        None
    }

    /// The entry to store for a computed `response`: `None` after a failed lookup (its
    /// generations are unknown), or when it is over the size bound (counted).
    pub(crate) fn make_entry(
        &self,
        ticket: &MissTicket,
        response: CachedResponse,
        ttl: Duration,
        compute: Duration,
    ) -> Option<Arc<Entry>> {
        let generations = ticket.generations.clone()?;
        if response.body.len() > self.inner.config.max_entry_bytes || ttl.is_zero() {
            self.record(Some(ticket.key.resource()), Event::NotStored);
            return None;
        }
        Some(Arc::new(Entry {
            digest: ticket.key.digest,
            generations,
            stored_at_ms: now_ms(),
            ttl_ms: ttl.as_millis().min(u128::from(u64::MAX)) as u64,
            compute_ms: compute.as_millis().min(u128::from(u32::MAX)) as u32,
            based_on_ms: ticket.started_ms,
            response,
            hit_headers: Default::default(),
            generations_checked: Default::default(),
        }))
    }

    /// Writes `entry`, unless an invalidation of its key is pending here.
    pub(crate) async fn store_entry(
        &self,
        key: &CacheKey,
        entry: Arc<Entry>,
        ttl: Duration,
    ) -> Result<(), BackendError> {
        if self.inner.pending.blocks(&key.generation_keys) {
            return Ok(());
        }
        self.keep_local(key, &entry);
        match self.call(self.inner.backend.store(key, entry, ttl)).await {
            Ok(()) => {
                self.record(Some(key.resource()), Event::Store);
                Ok(())
            }
            Err(err) => {
                if !matches!(err, BackendError::CircuitOpen) {
                    self.fault(key.resource(), "store", &err);
                }
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CacheConfig;
    use crate::key::Tenant;

    const TTL: Duration = Duration::from_secs(60);

    async fn answer(body: &'static str) -> (&'static str, Option<CachedResponse>) {
        (body, Some(CachedResponse::ok(body)))
    }

    fn served_body<T, Fut>(resolved: &Resolved<T, Fut>) -> Option<&[u8]> {
        match resolved {
            Resolved::Served { entry, .. } => Some(&entry.response.body[..]),
            Resolved::Computed { .. } => None,
        }
    }

    /// Two lookups of `key` that miss: a late request's and a leader's.
    async fn two_misses(cache: &Cache, key: &CacheKey) -> (Lookup, Lookup) {
        let late = cache.lookup_uncounted(key).await;
        let leader = cache.lookup_uncounted(key).await;
        assert!(matches!(
            (&late, &leader),
            (Lookup::Miss(_), Lookup::Miss(_))
        ));
        (late, leader)
    }

    /// A request whose lookup missed before another request's computation was stored,
    /// and that joins the flight only after it ended (its thread preempted in between),
    /// is answered with the stored entry, not by running its handler again; after an
    /// invalidation the same late request computes.
    #[tokio::test]
    async fn a_memory_miss_that_joins_after_the_flight_ended_is_answered_from_the_store() {
        let cache = Cache::new(CacheConfig::default()).await.unwrap();
        let key = cache
            .key_builder(Tenant::Scoped("org_1"), "contacts")
            .unwrap()
            .request("GET", "/contacts", None)
            .build();
        let (late, leader) = two_misses(&cache, &key).await;
        let led = cache
            .resolve_lookup(&key, TTL, leader, answer("first"))
            .await;
        assert!(matches!(
            led,
            Resolved::Computed {
                how: Computed::Miss { stored: true },
                ..
            }
        ));
        assert_eq!(
            cache.inner.flights.len(),
            0,
            "the leader's flight has ended"
        );

        let resolved = cache
            .resolve_lookup(&key, TTL, late, answer("second"))
            .await;
        assert_eq!(served_body(&resolved), Some(&b"first"[..]));
        let totals = cache.stats().totals;
        assert_eq!((totals.misses, totals.hits, totals.coalesced), (1, 1, 1));

        // The control: the entry stored meanwhile was invalidated before the late
        // request joined, so it is not current and the late request computes.
        cache.invalidate("org_1", &["contacts"]).await.unwrap();
        let (late, leader) = two_misses(&cache, &key).await;
        let _ = cache
            .resolve_lookup(&key, TTL, leader, answer("third"))
            .await;
        cache.invalidate("org_1", &["contacts"]).await.unwrap();
        let resolved = cache
            .resolve_lookup(&key, TTL, late, answer("fourth"))
            .await;
        assert!(
            matches!(
                resolved,
                Resolved::Computed {
                    value: "fourth",
                    ..
                }
            ),
            "an entry invalidated since is not served"
        );
    }
}
