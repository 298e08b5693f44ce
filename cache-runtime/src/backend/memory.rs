//! The in-process backend: the embedded default when no `REDIS_URL` is set, so nothing
//! needs installing to try the project. Bounded by bytes (W-TinyLFU eviction through
//! `moka`), with per-entry TTL, and the same generation semantics as Redis. It must never
//! grow without bound and never block on I/O.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache as MokaCache;
use moka::Expiry;

use super::EntrySlot;
use crate::entry::Entry;
use crate::generation::Generation;
use crate::key::CacheKey;

/// Resident bytes an entry costs besides its key, body and headers (measured).
const ENTRY_OVERHEAD_BYTES: usize = 770;

/// Generation keys kept at most; an evicted generation comes back fresh, which only
/// turns old entries into misses.
const MAX_GENERATIONS: u64 = 1_000_000;

#[derive(Debug)]
pub(crate) struct MemoryBackend {
    entries: MokaCache<String, (Arc<Entry>, Duration)>,
    generations: MokaCache<String, Generation>,
}

struct EntryExpiry;

impl Expiry<String, (Arc<Entry>, Duration)> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &(Arc<Entry>, Duration),
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.1)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &(Arc<Entry>, Duration),
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.1)
    }
}

impl MemoryBackend {
    pub(crate) fn new(max_bytes: u64) -> Self {
        let entries = MokaCache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, value: &(Arc<Entry>, Duration)| {
                // The constant is what an entry costs besides its key, body and headers
                // (the Entry and its Arc, vectors, moka's node, deques and timer,
                // allocator overhead): measured at 774 bytes per entry
                // (BENCHMARKS.md, memory), so the configured bound is an honest one.
                let weight = key.len() + value.0.response.weight() + ENTRY_OVERHEAD_BYTES;
                u32::try_from(weight).unwrap_or(u32::MAX)
            })
            .expire_after(EntryExpiry)
            .build();
        let generations = MokaCache::builder().max_capacity(MAX_GENERATIONS).build();
        MemoryBackend {
            entries,
            generations,
        }
    }

    /// The current generations, created where missing, and the entry: what a remote
    /// lookup and its generation initialisation return, without their two steps.
    pub(crate) fn read(&self, key: &CacheKey) -> (Vec<Generation>, EntrySlot) {
        let generations = key
            .generation_keys
            .iter()
            .map(|k| {
                self.generations
                    .get_with_by_ref(k.as_str(), Generation::fresh)
            })
            .collect();
        let entry = match self.entries.get(&key.entry_key) {
            Some((entry, _)) => EntrySlot::Present(entry),
            None => EntrySlot::Absent,
        };
        (generations, entry)
    }

    pub(crate) fn store(&self, key: &CacheKey, entry: Arc<Entry>, ttl: Duration) {
        self.entries.insert(key.entry_key.clone(), (entry, ttl));
    }

    pub(crate) fn bump(&self, generation_keys: &[String]) {
        for key in generation_keys {
            self.generations.insert(key.clone(), Generation::fresh());
        }
    }

    /// Entries currently held (approximate until pending maintenance runs).
    pub(crate) fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    /// Bytes currently held, as weighed for the bound.
    pub(crate) fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }
}
