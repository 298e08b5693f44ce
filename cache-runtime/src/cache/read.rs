//! The read path: whether a key is consulted at all (the switches, a pending
//! invalidation), the one round trip that reads its generations and entry together,
//! generations created where missing, and the XFetch draw that turns a hit into an early
//! refresh. It ends in a [`Lookup`]; what to do on a miss is the miss path's
//! (`cache/miss.rs`). It never computes, stores or waits on another request.

use std::sync::Arc;
use std::time::Instant;

use super::near::Validated;
use super::Cache;
use crate::backend::{redis::RedisBackend, Backend, EntrySlot};
use crate::entry::{now_ms, Entry};
use crate::error::BackendError;
use crate::generation::Generation;
use crate::key::CacheKey;

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
}

impl Cache {
    /// Why `key` is not consulted now, if it is not.
    fn bypass_reason(&self, key: &CacheKey) -> Option<BypassReason> {
        if !self.is_enabled() {
            return Some(BypassReason::Disabled);
        }
        if !self.is_resource_enabled(&key.resource) {
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
        if let Some(reason) = self.bypass_reason(key) {
            return Lookup::Bypass(reason);
        }
        let started = Instant::now();
        if let Some(entry) = self.local_current(key) {
            // An early refresh drawn here goes the remote way, which draws again.
            if !self.refresh_early(&entry) {
                self.inner
                    .stats
                    .record_lookup_time(&key.resource, started.elapsed());
                self.record_local_hit(&key.resource);
                return Lookup::Hit(entry);
            }
        }
        let miss = |generations, refreshing| {
            Lookup::Miss(MissTicket {
                key: key.clone(),
                generations,
                started,
                refreshing,
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
                Err(None) => return miss(None, None),
            },
        };
        self.inner
            .stats
            .record_lookup_time(&key.resource, started.elapsed());
        match entry {
            EntrySlot::Present(entry) if entry.digest != key.digest => {
                self.corrupt(&key.resource, "value stored under another key");
                miss(Some(generations), None)
            }
            EntrySlot::Present(entry)
                if entry.generations == generations && !entry.is_expired(now_ms()) =>
            {
                if self.refresh_early(&entry) {
                    // Counted as an early refresh where it is computed, not here: a
                    // request that finds a refresh already under way is served `entry`.
                    miss(Some(generations), Some(entry))
                } else {
                    if local {
                        self.record_local_hit(&key.resource);
                    } else {
                        self.keep_local(key, &entry);
                    }
                    Lookup::Hit(entry)
                }
            }
            EntrySlot::Corrupt => {
                self.corrupt(&key.resource, "value does not decode");
                miss(Some(generations), None)
            }
            EntrySlot::Present(_) | EntrySlot::Absent => miss(Some(generations), None),
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
                self.fault(&key.resource, "lookup", &err);
                return Err(None);
            }
        }
        let raw = match self.lookup_round_trip(redis, key).await {
            Ok(raw) => raw,
            Err(BackendError::CircuitOpen) => return Err(Some(BypassReason::CircuitOpen)),
            Err(err) => {
                self.fault(&key.resource, "lookup", &err);
                return Err(None);
            }
        };
        let generations = self
            .complete_generations(redis, key, raw.generations)
            .await
            .map_err(|err| {
                self.fault(&key.resource, "generation init", &err);
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
            return Ok(read.into_iter().flatten().collect());
        }
        let missing: Vec<&str> = key
            .generation_keys
            .iter()
            .zip(&read)
            .filter(|(_, g)| g.is_none())
            .map(|(k, _)| k.as_str())
            .collect();
        let mut created = self
            .call(redis.init_generations(&missing))
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
        let beta = self.inner.config.early_refresh_beta;
        if beta <= 0.0 || entry.compute_ms == 0 {
            return false;
        }
        let random = self.inner.config.early_refresh_random.draw();
        let head_start_ms = f64::from(entry.compute_ms) * beta * -random.ln();
        now_ms() as f64 + head_start_ms >= entry.expires_at_ms() as f64
    }
}
