//! The read path: whether a key is consulted at all (the switches, a pending
//! invalidation), the one round trip that reads its generations and entry together,
//! generations created where missing, and the XFetch draw that turns a hit into an early
//! refresh. It ends in a [`Lookup`]; what to do on a miss is the miss path's
//! (`cache/miss.rs`). Routes that allow it ([`Staleness`]) may be handed an entry that
//! is no longer fresh (past its TTL within the grace, or bounded after an invalidation)
//! together with their miss: `serve_cached` answers it `STALE` and recomputes in the
//! background. It never computes, stores or waits on another request.

use std::sync::Arc;
use std::time::Instant;

use super::near::Validated;
use super::Cache;
use crate::backend::{redis::RedisBackend, Backend, EntrySlot};
use crate::entry::{now_ms, Entry};
use crate::error::BackendError;
use crate::generation::Generation;
use crate::key::CacheKey;
use crate::spec::RouteSpec;

/// What the read path found for one key.
#[derive(Debug)]
pub enum Lookup {
    /// A valid entry: serve it.
    Hit(Arc<Entry>),
    /// No valid entry (or one drawn for early refresh): compute under this ticket.
    Miss(MissTicket),
    /// The cache is not consulted for this key now; compute and do not store.
    Bypass(BypassReason),
}

/// Why a request was served without the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassReason {
    /// The global switch is off.
    Disabled,
    /// This resource is switched off.
    ResourceDisabled,
    /// An invalidation of this tenant and resource has not reached Redis yet.
    PendingInvalidation,
    /// Redis is failing; the circuit breaker stops trying for a while.
    CircuitOpen,
    /// The request carries no tenant scope (and the route is not `scope = global`).
    NoScope,
    /// `vary = user` and the request's scope has no user.
    NoUser,
    /// Only GET and HEAD are cached.
    Method,
    /// The route says `skip_cache`.
    SkipCache,
    /// The resource is in shadow mode: the handler answers, the cache works and
    /// compares in the background.
    Shadow,
}

impl BypassReason {
    /// A short name for logs and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            BypassReason::Disabled => "disabled",
            BypassReason::ResourceDisabled => "resource-disabled",
            BypassReason::PendingInvalidation => "pending-invalidation",
            BypassReason::CircuitOpen => "circuit-open",
            BypassReason::NoScope => "no-scope",
            BypassReason::NoUser => "no-user",
            BypassReason::Method => "method",
            BypassReason::SkipCache => "skip-cache",
            BypassReason::Shadow => "shadow",
        }
    }
}

/// Proof of a miss: the key and the generations read *before* computing, which the
/// stored entry will carry. An invalidation after the lookup makes the entry stale on
/// arrival, so a slow computation can never be served after a newer write.
#[derive(Debug)]
pub struct MissTicket {
    pub(crate) key: CacheKey,
    /// `None` when the lookup failed: the result must not be stored.
    pub(crate) generations: Option<Vec<Generation>>,
    /// When the lookup started: the compute time a manual store records (`testing`).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) started: Instant,
    /// The still-valid entry when this miss is an early refresh (XFetch): what to serve
    /// if another request is already refreshing it.
    pub(crate) refreshing: Option<Arc<Entry>>,
    /// The no-longer-fresh entry the route allows to serve while it is recomputed
    /// (`stale_while_revalidate`, `stale_after_invalidation`): served `STALE` at once.
    pub(crate) stale: Option<Arc<Entry>>,
    /// Why there was no fresh entry, for the per-resource miss counts.
    pub(crate) cause: MissCause,
    /// `started` on the wall clock (epoch ms): the entry computed under this ticket
    /// reflects every write whose invalidation had landed by then.
    pub(crate) started_ms: u64,
}

/// Why a lookup found no fresh entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MissCause {
    /// No entry (never computed, evicted, past its TTL and grace, or not decodable).
    Cold,
    /// An entry past its TTL whose generations are still current.
    Expiry,
    /// An entry whose generations moved on: invalidated.
    Invalidation,
}

/// How far a route lets the read path go with an entry that is no longer fresh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Staleness {
    /// How long past its TTL an entry with current generations may still be served.
    pub(crate) grace_ms: u64,
    /// How old (from the read of its generations) an invalidated entry may be and still
    /// be served: 0 is strict read-your-writes.
    pub(crate) after_invalidation_ms: u64,
}

impl Staleness {
    /// Nothing but fresh entries: plain functions and every manual lookup.
    pub(crate) const STRICT: Staleness = Staleness {
        grace_ms: 0,
        after_invalidation_ms: 0,
    };

    /// What `route` declares.
    pub(crate) fn of(route: &RouteSpec) -> Staleness {
        Staleness {
            grace_ms: u64::from(route.stale_while_revalidate_secs) * 1000,
            after_invalidation_ms: u64::from(route.stale_after_invalidation_secs) * 1000,
        }
    }

    /// Whether a `STALE` answer of `entry` (stale for `cause`) starts its recomputation
    /// now. Past its TTL: always. After an invalidation: only once the entry is half its
    /// bound old (from the read of its generations), so that the writes of that half
    /// share one recomputation, and the recomputation still has the other half to land
    /// before readers would have to wait for it.
    pub(crate) fn recompute_now(self, entry: &Entry, cause: MissCause, now_ms: u64) -> bool {
        match cause {
            MissCause::Invalidation => {
                now_ms.saturating_sub(entry.based_on_ms) >= self.after_invalidation_ms / 2
            }
            MissCause::Cold | MissCause::Expiry => true,
        }
    }

    /// How long the store keeps an entry whose TTL is `ttl`: fresh for `ttl`, then
    /// servable stale for the grace.
    pub(crate) fn keep_for(self, ttl: std::time::Duration) -> std::time::Duration {
        ttl + std::time::Duration::from_millis(self.grace_ms)
    }
}

/// What a stored entry (of this key) is worth now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Worth {
    Fresh,
    /// Not fresh, but the route allows serving it while it is recomputed.
    Stale(MissCause),
    Miss(MissCause),
}

/// Judges an entry against the current generations at `now_ms` under `policy`.
///
/// After an invalidation the rule is the sound simple one: an entry whose generations
/// were read at most `after_invalidation` ago is served. Its computation started after
/// that read, so it reflects every write whose invalidation had landed by then, hence
/// every write older than the bound. (The current generation's own creation time would
/// not do: it is the *latest* invalidation's, and an entry that missed several would be
/// served past the bound.) Entries of unknown read time (format 1) are never served
/// after an invalidation. The entry's TTL still applies as it does to any entry.
fn worth(entry: &Entry, generations: &[Generation], now_ms: u64, policy: Staleness) -> Worth {
    let expired = entry.is_expired(now_ms);
    if entry.generations == generations {
        if !expired {
            return Worth::Fresh;
        }
        if policy.grace_ms > 0 && entry.within_grace(now_ms, policy.grace_ms) {
            return Worth::Stale(MissCause::Expiry);
        }
        return Worth::Miss(MissCause::Expiry);
    }
    let bounded = policy.after_invalidation_ms > 0
        && entry.based_on_ms > 0
        && now_ms.saturating_sub(entry.based_on_ms) <= policy.after_invalidation_ms
        && entry.within_grace(now_ms, policy.grace_ms);
    if bounded {
        Worth::Stale(MissCause::Invalidation)
    } else {
        Worth::Miss(MissCause::Invalidation)
    }
}

impl Cache {
    /// Why `key` is not consulted now, if it is not.
    fn bypass_reason(&self, key: &CacheKey) -> Option<BypassReason> {
        if !self.is_enabled() {
            return Some(BypassReason::Disabled);
        }
        if !self.is_resource_enabled(key.resource()) {
            return Some(BypassReason::ResourceDisabled);
        }
        if self.inner.pending.blocks(&key.generation_keys) {
            return Some(BypassReason::PendingInvalidation);
        }
        None
    }

    /// Looks `key` up: one round trip for the generations and the entry (a second only
    /// when a generation does not exist yet). Counts nothing: the caller records the
    /// request's outcome once it is decided (see `cache/miss.rs`).
    pub(crate) async fn lookup_uncounted(&self, key: &CacheKey) -> Lookup {
        self.lookup_with(key, Staleness::STRICT).await
    }

    /// [`Cache::lookup_uncounted`] for a route that may serve entries that are no longer
    /// fresh: such an entry comes back as a miss carrying it (`MissTicket::stale`).
    pub(crate) async fn lookup_with(&self, key: &CacheKey, policy: Staleness) -> Lookup {
        self.lookup_at(key, policy, Instant::now(), now_ms()).await
    }

    /// [`lookup_with`](Self::lookup_with) with its clock reads given: `started` and
    /// `started_ms` are now, on the monotonic and the wall clock (a hit's age is
    /// reckoned from the same read).
    pub(crate) async fn lookup_at(
        &self,
        key: &CacheKey,
        policy: Staleness,
        started: Instant,
        started_ms: u64,
    ) -> Lookup {
        if let Some(reason) = self.bypass_reason(key) {
            return Lookup::Bypass(reason);
        }
        // Hits in process (the memory backend's, the local tier's) are answered here,
        // before the rest of the lookup's future is made and moved into place: they pay
        // for no Redis read's state. One pair of clock reads serves the whole lookup.
        if let Some(hit) = self.memory_hit(key, started, started_ms) {
            return hit;
        }
        if let Some(hit) = self.local_hit(key, started, started_ms, true) {
            return hit;
        }
        self.lookup_past_local(key, policy, started, started_ms, true)
            .await
    }

    /// A memory hit, read without copying generations and before any of the general
    /// lookup's state is set up: `None` when the memory backend has no current entry
    /// for `key` (or the backend is Redis), which the general lookup then reads again,
    /// creating what is missing, and judges (expiry, grace, staleness). A hit is an
    /// entry of this key, within its TTL, whose generations are all current; XFetch
    /// draws on it as on any fresh entry. `started` and `started_ms` are the lookup's
    /// clock reads.
    fn memory_hit(&self, key: &CacheKey, started: Instant, started_ms: u64) -> Option<Lookup> {
        let entry = self.memory_current(key, started, started_ms)?;
        self.inner
            .stats
            .record_lookup_time(key.resource(), started.elapsed());
        if self.refresh_early_at(&entry, started_ms) {
            return Some(Lookup::Miss(MissTicket {
                key: key.clone(),
                generations: Some(entry.generations.clone()),
                started,
                refreshing: Some(entry),
                stale: None,
                cause: MissCause::Expiry,
                started_ms,
            }));
        }
        Some(Lookup::Hit(entry))
    }

    /// The memory backend's entry for `key` that a hit may serve at `now` / `now_ms`:
    /// its generations all current, this key's digest, within its TTL. `None` when there
    /// is none, or on Redis.
    pub(super) fn memory_current(
        &self,
        key: &CacheKey,
        now: Instant,
        now_ms: u64,
    ) -> Option<Arc<Entry>> {
        let Backend::Memory(memory) = &self.inner.backend else {
            return None;
        };
        memory
            .current_entry(key, now, now_ms)
            .filter(|entry| entry.digest == key.digest && !entry.is_expired(now_ms))
    }

    /// [`lookup_uncounted`](Self::lookup_uncounted) once the switches have been passed:
    /// the shadow run looks up a resource whose mode serves it uncached (strictly: a
    /// would-be hit is a fresh entry, compared with the fresh response). `serving` says
    /// whether a hit found here is served: only then is a local-tier hit counted, since
    /// `local_hits` is a share of `hits` (a shadow lookup's hit is a would-be hit).
    pub(super) async fn lookup_consulted(
        &self,
        key: &CacheKey,
        policy: Staleness,
        serving: bool,
    ) -> Lookup {
        let (started, started_ms) = (Instant::now(), now_ms());
        if let Some(hit) = self.local_hit(key, started, started_ms, serving) {
            return hit;
        }
        self.lookup_past_local(key, policy, started, started_ms, serving)
            .await
    }

    /// Tracking mode's hit: the local entry whose generations this instance knows to be
    /// current, unless an early refresh is drawn on it (that goes the remote way, which
    /// draws again). `started` and `started_ms` are the lookup's clock reads.
    fn local_hit(
        &self,
        key: &CacheKey,
        started: Instant,
        started_ms: u64,
        serving: bool,
    ) -> Option<Lookup> {
        let entry = self.local_current(key, started_ms)?;
        if self.refresh_early_at(&entry, started_ms) {
            return None;
        }
        self.inner
            .stats
            .record_lookup_time(key.resource(), started.elapsed());
        if serving {
            self.record_local_hit(key.resource());
        }
        Some(Lookup::Hit(entry))
    }

    /// [`lookup_consulted`](Self::lookup_consulted) past the local tier's hit: the
    /// backend's read and its verdict.
    async fn lookup_past_local(
        &self,
        key: &CacheKey,
        policy: Staleness,
        started: Instant,
        started_ms: u64,
        serving: bool,
    ) -> Lookup {
        let miss = |generations, refreshing, stale, cause| {
            Lookup::Miss(MissTicket {
                key: key.clone(),
                generations,
                started,
                refreshing,
                stale,
                cause,
                started_ms,
            })
        };
        let (generations, entry, local) = match &self.inner.backend {
            // In process there is nothing to await. The remote read is boxed so that its
            // state is not part of every caller's future, which is moved into place on
            // every request.
            Backend::Memory(memory) => {
                let (generations, entry) = memory.read(key);
                (generations, entry, false)
            }
            Backend::Redis(redis) => match Box::pin(self.read_remote(redis, key)).await {
                Ok(read) => read,
                Err(Some(reason)) => return Lookup::Bypass(reason),
                Err(None) => return miss(None, None, None, MissCause::Cold),
            },
        };
        self.inner
            .stats
            .record_lookup_time(key.resource(), started.elapsed());
        match entry {
            EntrySlot::Present(entry) if entry.digest != key.digest => {
                self.corrupt(key.resource(), "value stored under another key");
                miss(Some(generations), None, None, MissCause::Cold)
            }
            EntrySlot::Present(entry) => match worth(&entry, &generations, now_ms(), policy) {
                Worth::Fresh if self.refresh_early(&entry) => {
                    // Counted as an early refresh where it is computed, not here: a
                    // request that finds a refresh already under way is served `entry`.
                    miss(Some(generations), Some(entry), None, MissCause::Expiry)
                }
                Worth::Fresh => {
                    if local {
                        if serving {
                            self.record_local_hit(key.resource());
                        }
                    } else {
                        self.keep_local(key, &entry);
                    }
                    Lookup::Hit(entry)
                }
                Worth::Stale(cause) => miss(Some(generations), None, Some(entry), cause),
                Worth::Miss(cause) => miss(Some(generations), None, None, cause),
            },
            EntrySlot::Corrupt => {
                self.corrupt(key.resource(), "value does not decode");
                miss(Some(generations), None, None, MissCause::Cold)
            }
            EntrySlot::Absent => miss(Some(generations), None, None, MissCause::Cold),
        }
    }

    /// The current generations (created where missing) and the entry, from the remote
    /// store, or the local tier's entry once its generations were checked there (then
    /// `true`). A fault is counted and logged here; the error is the bypass reason when
    /// the circuit turned the lookup away, `None` when the lookup failed.
    async fn read_remote(
        &self,
        redis: &RedisBackend,
        key: &CacheKey,
    ) -> Result<(Vec<Generation>, EntrySlot, bool), Option<BypassReason>> {
        match self.validate_local(redis, key).await {
            Ok(Validated::Current(generations, entry)) => {
                return Ok((generations, EntrySlot::Present(entry), true))
            }
            Ok(Validated::NotLocal) => {}
            Err(BackendError::CircuitOpen) => return Err(Some(BypassReason::CircuitOpen)),
            Err(err) => {
                self.fault(key.resource(), "lookup", &err);
                return Err(None);
            }
        }
        let raw = match self.lookup_round_trip(redis, key).await {
            Ok(raw) => raw,
            Err(BackendError::CircuitOpen) => return Err(Some(BypassReason::CircuitOpen)),
            Err(err) => {
                self.fault(key.resource(), "lookup", &err);
                return Err(None);
            }
        };
        let generations = self
            .complete_generations(redis, key, raw.generations)
            .await
            .map_err(|err| {
                self.fault(key.resource(), "generation init", &err);
                None
            })?;
        Ok((generations, raw.entry, false))
    }

    /// Fills generations that do not exist with fresh tokens.
    async fn complete_generations(
        &self,
        redis: &RedisBackend,
        key: &CacheKey,
        read: Vec<Option<Generation>>,
    ) -> Result<Vec<Generation>, BackendError> {
        if read.iter().all(Option::is_some) {
            // Collected in place (an `Option<Generation>` is a `Generation`'s size), where
            // `flatten` allocated a second vector on every Redis hit.
            return read
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| BackendError::Refused("a generation vanished".into()));
        }
        let missing: Vec<&str> = key
            .generation_keys
            .iter()
            .zip(&read)
            .filter(|(_, g)| g.is_none())
            .map(|(k, _)| k)
            .collect();
        // Boxed, as every read is (see `lookup_round_trip`): its state stays out of the
        // lookup's.
        let mut created = self
            .call(Box::pin(redis.init_generations(&missing)))
            .await?
            .into_iter();
        read.into_iter()
            .map(|g| g.or_else(|| created.next()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| BackendError::Refused("generation init returned too few values".into()))
    }

    /// XFetch: recompute before expiry with a probability that rises as expiry nears and
    /// with the computation's cost, so one request refreshes a popular entry early.
    fn refresh_early(&self, entry: &Entry) -> bool {
        self.refresh_early_at(entry, now_ms())
    }

    /// [`refresh_early`](Self::refresh_early) at `now_ms` (a clock read of the lookup's).
    fn refresh_early_at(&self, entry: &Entry, now_ms: u64) -> bool {
        let config = &self.inner.config;
        xfetch(entry, now_ms, config.early_refresh_beta, || {
            config.early_refresh_random.draw()
        })
    }
}

/// The largest `-ln(draw)` XFetch can draw: a draw is at least `f64::MIN_POSITIVE`,
/// whose logarithm is -708.396 (`RandomSource::draw`).
const XFETCH_MAX_FACTOR: f64 = 708.4;

/// XFetch's verdict on `entry` at `now_ms`: refresh once `now + compute * beta *
/// -ln(draw)` reaches its expiry. An entry further from expiry than the largest head
/// start is not refreshed whatever is drawn, so nothing is drawn: most hits of most
/// entries.
fn xfetch(entry: &Entry, now_ms: u64, beta: f64, draw: impl FnOnce() -> f64) -> bool {
    if beta <= 0.0 || entry.compute_ms == 0 {
        return false;
    }
    let compute_ms = f64::from(entry.compute_ms) * beta;
    let expires_ms = entry.expires_at_ms() as f64;
    if now_ms as f64 + compute_ms * XFETCH_MAX_FACTOR < expires_ms {
        return false;
    }
    now_ms as f64 + compute_ms * -draw().ln() >= expires_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::CachedResponse;

    const STORED_AT: u64 = 1_000_000;
    const TTL: u64 = 10_000;

    fn entry(generations: Vec<Generation>, based_on_ms: u64) -> Entry {
        Entry {
            digest: [0; 16],
            generations,
            stored_at_ms: STORED_AT,
            ttl_ms: TTL,
            compute_ms: 5,
            based_on_ms,
            response: CachedResponse::ok("x"),
            hit_headers: Default::default(),
            generations_checked: Default::default(),
        }
    }

    fn policy(grace_ms: u64, after_invalidation_ms: u64) -> Staleness {
        Staleness {
            grace_ms,
            after_invalidation_ms,
        }
    }

    /// Nothing is drawn further from expiry than the largest head start, and that skips
    /// no refresh: the smallest draw still refreshes just inside it.
    #[test]
    fn xfetch_draws_only_where_a_draw_can_refresh() {
        let e = entry(vec![Generation::fresh()], STORED_AT);
        let expires = STORED_AT + TTL;
        // compute 5 ms, beta 2: the largest head start is 10 * 708.396 = 7,083.96 ms.
        let smallest = crate::early_refresh::RandomSource::new(|| 0.0);
        let draws = std::cell::Cell::new(0);
        let draw = || {
            draws.set(draws.get() + 1);
            smallest.draw()
        };
        assert!(!xfetch(&e, expires - 7_100, 2.0, draw));
        assert_eq!(draws.get(), 0, "drew where no draw can refresh");
        assert!(xfetch(&e, expires - 7_083, 2.0, draw));
        assert_eq!(draws.get(), 1);
        // Near expiry an ordinary draw decides: -ln(0.5) * 10 = 6.9 ms of head start.
        assert!(!xfetch(&e, expires - 7, 2.0, || 0.5));
        assert!(xfetch(&e, expires - 6, 2.0, || 0.5));
        assert!(
            !xfetch(&e, expires - 1, 0.0, || 0.0),
            "beta 0 never refreshes"
        );
    }

    #[test]
    fn grace_serves_an_expired_entry_until_ttl_plus_grace_and_not_a_millisecond_more() {
        let current = vec![Generation::fresh()];
        let e = entry(current.clone(), STORED_AT - 5);
        let swr = policy(3_000, 0);
        assert_eq!(worth(&e, &current, STORED_AT + TTL - 1, swr), Worth::Fresh);
        assert_eq!(
            worth(&e, &current, STORED_AT + TTL, swr),
            Worth::Stale(MissCause::Expiry)
        );
        assert_eq!(
            worth(&e, &current, STORED_AT + TTL + 2_999, swr),
            Worth::Stale(MissCause::Expiry)
        );
        assert_eq!(
            worth(&e, &current, STORED_AT + TTL + 3_000, swr),
            Worth::Miss(MissCause::Expiry)
        );
        assert_eq!(
            worth(&e, &current, STORED_AT + TTL, Staleness::STRICT),
            Worth::Miss(MissCause::Expiry)
        );
    }

    #[test]
    fn a_strict_route_never_serves_an_invalidated_entry_whatever_its_grace() {
        let e = entry(vec![Generation::fresh()], STORED_AT - 5);
        let moved = vec![Generation::fresh()];
        for now in [STORED_AT, STORED_AT + 1, STORED_AT + TTL + 1] {
            assert_eq!(
                worth(&e, &moved, now, policy(600_000, 0)),
                Worth::Miss(MissCause::Invalidation)
            );
        }
    }

    #[test]
    fn after_an_invalidation_a_bounded_route_serves_only_entries_read_within_the_bound() {
        let based_on = STORED_AT - 5;
        let e = entry(vec![Generation::fresh()], based_on);
        let moved = vec![Generation::fresh()];
        let bounded = policy(0, 2_000);
        assert_eq!(
            worth(&e, &moved, based_on + 2_000, bounded),
            Worth::Stale(MissCause::Invalidation)
        );
        assert_eq!(
            worth(&e, &moved, based_on + 2_001, bounded),
            Worth::Miss(MissCause::Invalidation)
        );
        // Recomputed from half the bound on: writes meanwhile share one recomputation.
        assert!(!bounded.recompute_now(&e, MissCause::Invalidation, based_on + 999));
        assert!(bounded.recompute_now(&e, MissCause::Invalidation, based_on + 1_000));
        assert!(bounded.recompute_now(&e, MissCause::Expiry, based_on));
        // Unknown read time (format 1): never served after an invalidation.
        let old_format = entry(vec![Generation::fresh()], 0);
        assert_eq!(
            worth(&old_format, &moved, STORED_AT, bounded),
            Worth::Miss(MissCause::Invalidation)
        );
    }
}
