//! The in-process backend: the embedded default when no `REDIS_URL` is set, so nothing
//! needs installing to try the project. Bounded by bytes (W-TinyLFU eviction through
//! `moka`), with per-entry TTL, and the same generation semantics as Redis, generation
//! lifetime included. Of `memory_max_bytes`, one eighth is for generations and the rest
//! for entries: both count, so that a request-derived scope cannot grow either without
//! bound. It must never grow without bound and never block on I/O.

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

/// Resident bytes a generation costs besides its key and token: moka's node, the
/// key's and value's allocations, the frequency sketch and the expiry timer. An estimate
/// from the entry's measured overhead (which holds more), not a measurement of its own.
const GENERATION_OVERHEAD_BYTES: usize = 200;

/// The share of the memory bound generations get (one eighth): there is one per tenant
/// and resource, and an evicted or expired one comes back fresh, which only turns the
/// entries it guarded into misses.
const GENERATION_SHARE: u64 = 8;

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
    /// A store of at most `max_bytes` (entries and generations together), whose
    /// generations live `generation_ttl` at most.
    pub(crate) fn new(max_bytes: u64, generation_ttl: Duration) -> Self {
        let generation_bytes = max_bytes / GENERATION_SHARE;
        let entries = MokaCache::builder()
            .max_capacity(max_bytes - generation_bytes)
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
        let generations = MokaCache::builder()
            .max_capacity(generation_bytes)
            .weigher(|key: &String, token: &Generation| {
                let weight = key.len() + token.as_bytes().len() + GENERATION_OVERHEAD_BYTES;
                u32::try_from(weight).unwrap_or(u32::MAX)
            })
            // Like Redis's PX: from the write, not refreshed by reads. An expired
            // generation is recreated with a fresh token.
            .time_to_live(generation_ttl)
            .build();
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

    /// Bytes currently held, as weighed for the bound (entries and generations).
    pub(crate) fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.generations.run_pending_tasks();
        self.entries.weighted_size() + self.generations.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{KeyBuilder, Tenant};

    fn key(tenant: &str) -> CacheKey {
        KeyBuilder::new("t", Tenant::Scoped(tenant), "contacts")
            .unwrap()
            .request("GET", "/contacts", None)
            .build()
    }

    /// Many tenants, each with its own generations, cannot grow the store past its
    /// bound: generations are weighed against their share.
    #[test]
    fn generations_count_in_the_memory_bound() {
        let max_bytes = 64 * 1024;
        let memory = MemoryBackend::new(max_bytes, Duration::from_secs(600));
        for i in 0..5_000 {
            memory.read(&key(&format!("org_{i}")));
        }
        memory.generations.run_pending_tasks();
        let generations = memory.generations.weighted_size();
        assert!(generations > 0);
        assert!(
            generations <= max_bytes / GENERATION_SHARE,
            "{generations} bytes of generations"
        );
        assert!(memory.weighted_size() <= max_bytes);
    }

    #[test]
    fn an_expired_generation_comes_back_fresh_and_the_entry_misses() {
        let memory = MemoryBackend::new(1024 * 1024, Duration::from_millis(50));
        let k = key("org_1");
        let (before, _) = memory.read(&k);
        std::thread::sleep(Duration::from_millis(120));
        let (after, _) = memory.read(&k);
        assert_ne!(before, after, "the generation outlived its TTL");
    }
}
