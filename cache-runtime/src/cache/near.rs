//! The engine's side of the local tier (`backend/near.rs`): when a local entry may be
//! served, keeping entries found or computed, and forgetting generations this instance
//! invalidates (read-your-writes here, without waiting for a push). Everything else a
//! lookup obeys (switches, pending invalidations, single flight, TTL) is applied by the
//! read and miss paths around these calls, before any local hit.

use std::sync::Arc;

use super::Cache;
use crate::backend::near::NearTier;
use crate::backend::redis::RedisBackend;
use crate::config::LocalTier;
use crate::entry::{now_ms, Entry};
use crate::error::BackendError;
use crate::generation::Generation;
use crate::key::{CacheKey, GenerationKeys};

/// What the local tier's check found (`validate` mode).
pub(super) enum Validated {
    /// The local entry, its generations current in Redis: serve it.
    Current(Vec<Generation>, Arc<Entry>),
    /// No local entry, or a stale one (dropped): look up as usual.
    NotLocal,
}

impl Cache {
    fn near(&self) -> Option<&NearTier> {
        self.inner.near.as_ref()
    }

    /// Tracking mode: the local entry whose generations this instance knows to be
    /// current, served without a round trip; `now_ms` is the lookup's clock read.
    pub(super) fn local_current(&self, key: &CacheKey, now_ms: u64) -> Option<Arc<Entry>> {
        let near = self.near()?;
        if near.mode != LocalTier::Tracking {
            return None;
        }
        near.current_entry(key, now_ms)
    }

    /// Validate mode: reads the generations of `key` alone and compares them with the
    /// local entry's. Does nothing (no round trip) when there is no local entry.
    pub(super) async fn validate_local(
        &self,
        redis: &RedisBackend,
        key: &CacheKey,
    ) -> Result<Validated, BackendError> {
        let Some(near) = self.near().filter(|n| n.mode == LocalTier::Validate) else {
            return Ok(Validated::NotLocal);
        };
        let Some(local) = near.entry(key, now_ms()) else {
            return Ok(Validated::NotLocal);
        };
        // Boxed, as every read is (see `lookup_round_trip`).
        let read = self.call(Box::pin(redis.read_generations(key))).await?;
        let current = read.len() == local.generations.len()
            && read
                .iter()
                .zip(&local.generations)
                .all(|(read, kept)| read.as_ref() == Some(kept));
        if !current {
            near.drop_entry(key);
            return Ok(Validated::NotLocal);
        }
        Ok(Validated::Current(local.generations.clone(), local))
    }

    /// The lookup round trip: through the tracking connection in tracking mode (so that
    /// the generations read are tracked and learned), else the shared one. A tracking
    /// connection that fails (a server without RESP3 or tracking, a lost connection) does
    /// not turn the request away: the shared connection is tried. One that times out
    /// does not send the read again: the request has waited its timeout already, and
    /// behind a slow or frozen server the shared connection would wait another (a read
    /// costs at most two operations, README "Failure modes").
    pub(super) async fn lookup_round_trip(
        &self,
        redis: &RedisBackend,
        key: &CacheKey,
    ) -> Result<crate::backend::RawLookup, BackendError> {
        if let Some(tracking) = self.near().and_then(|n| n.tracking.as_ref()) {
            match self.call(Box::pin(tracking.lookup(key))).await {
                Err(err)
                    if !matches!(err, BackendError::CircuitOpen | BackendError::Timeout(_)) =>
                {
                    tracing::debug!(target: "api_cache", error = %err, "tracked lookup failed: looking up on the shared connection");
                }
                result => return result,
            }
        }
        // Each read is boxed as it is made, so that it moves as a pointer: inline,
        // redis-rs's future (1.5 KB) was copied whole five times on its way into `call`'s
        // timeout and this future, and the tracked read's (a pipeline's) made every
        // Redis lookup's future 5 KB, copied whole into its box (BENCHMARKS.md, ninth pass).
        self.call(Box::pin(redis.lookup(key))).await
    }

    /// Keeps a valid entry read from Redis or just computed in the local tier.
    pub(super) fn keep_local(&self, key: &CacheKey, entry: &Arc<Entry>) {
        if let Some(near) = self.near() {
            near.keep(key, entry.clone());
        }
    }

    /// Forgets the local view of generations this instance is invalidating: called
    /// before the write and again after it succeeded, so that no read overlapping the
    /// write can leave the old token known here once it returns.
    pub(super) fn forget_local_generations(&self, keys: &GenerationKeys) {
        if let Some(near) = self.near() {
            near.view.forget(keys);
        }
    }

    /// Counts a hit served by the local tier (also counted in `hits` by the caller).
    pub(super) fn record_local_hit(&self, resource: &str) {
        self.inner.stats.record_local_hit(resource);
    }

    /// The local tier's figures, `None` when it is off.
    pub(super) fn local_tier_snapshot(&self) -> Option<crate::stats::LocalTierSnapshot> {
        let near = self.near()?;
        Some(crate::stats::LocalTierSnapshot {
            mode: near.mode.as_str(),
            entries: near.entry_count(),
            bytes: near.weighted_size(),
            known_generations: near.view.len() as u64,
            tracking_connected: near.tracking.as_ref().map(|t| t.is_up()),
        })
    }
}
