//! The bounded map of entries held in process: the memory backend's entries and the
//! local tier's. Bounded by weighed bytes, each entry kept for the lifetime it was
//! stored with, evicted by CLOCK (oldest first, with a second chance for an entry read
//! since the hand last passed it). It never blocks on I/O and never grows past its
//! bound.
//!
//! A hit's read is what this is shaped for: a shared lock on one shard, a probe by the
//! key's hash (made once with the key, [`CacheKey::table_hash`], so a memoized key
//! hashes nothing here), a comparison of the whole key, a store to the entry's
//! `visited` flag when it was clear, and a reference count. Nothing is logged to be
//! replayed later, and no clock is read: the caller passes the time of its lookup.
//! Writes (a miss's store, a stale local entry dropped) take the shard's lock alone and
//! do the eviction they make necessary on the spot.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use hashbrown::HashTable;

use crate::entry::{now_ms, Entry};
use crate::key::CacheKey;

/// Resident bytes an entry costs besides its key, body and headers: the `Entry` and its
/// `Arc`, its generation and header vectors, its slot in the store (table slot, key
/// allocation, place in the eviction ring) and allocator overhead. Measured by
/// `cargo bench -p cache-runtime --bench memory` (BENCHMARKS.md §7): 679 bytes over the
/// body, of which about 60 are the key and 30 the `content-type` header.
pub(crate) const ENTRY_OVERHEAD_BYTES: usize = 600;

/// A shard's share of the bound is at least this, so that one entry of the default
/// size bound (1 MiB) always fits: a small store has fewer shards.
const MIN_SHARD_BYTES: u64 = 4 * 1024 * 1024;

/// At most this many shards: enough that the server's threads seldom wait on one
/// another's writes.
const MAX_SHARDS: usize = 16;

pub(crate) struct EntryStore {
    shards: Box<[RwLock<Shard>]>,
    /// Each shard's share of the bound, in weighed bytes.
    shard_bytes: u64,
}

#[derive(Default)]
struct Shard {
    slots: HashTable<Slot>,
    /// Every slot's place, oldest first, as its key's hash and its stamp; and places of
    /// slots since removed (`dead` of them), whose stamps no longer match.
    ring: VecDeque<(u64, u64)>,
    dead: usize,
    bytes: u64,
    next_stamp: u64,
}

struct Slot {
    hash: u64,
    key: Box<str>,
    entry: Arc<Entry>,
    /// When the store stops answering it (epoch ms).
    expires_ms: u64,
    weight: u64,
    /// Which place in the ring is this slot's: unique in its shard.
    stamp: u64,
    /// Read since the eviction hand last passed it: it gets a second chance.
    visited: AtomicBool,
}

impl std::fmt::Debug for EntryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryStore")
            .field("shards", &self.shards.len())
            .field("entries", &self.entry_count())
            .field("bytes", &self.weighted_size())
            .finish()
    }
}

/// What `entry`, stored under `key`, counts for against the bound.
fn weight(key: &str, entry: &Entry) -> u64 {
    (key.len() + entry.response.weight() + ENTRY_OVERHEAD_BYTES) as u64
}

impl EntryStore {
    /// A store of at most `max_bytes`, weighed as [`ENTRY_OVERHEAD_BYTES`] says.
    pub(crate) fn new(max_bytes: u64) -> Self {
        let wanted = usize::try_from(max_bytes / MIN_SHARD_BYTES).unwrap_or(MAX_SHARDS);
        // A power of two, so that a key's shard is a mask of its hash.
        let count = 1usize << wanted.clamp(1, MAX_SHARDS).ilog2();
        EntryStore {
            shards: (0..count).map(|_| RwLock::default()).collect(),
            shard_bytes: max_bytes / count as u64,
        }
    }

    /// The shard of a key's hash: bits from its middle. The table inside picks a bucket
    /// by the low bits and tags it by the top seven; bits they share with the shard's
    /// would be the same for every key of a shard (fewer buckets used, more tags alike).
    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        &self.shards[(hash >> 32) as usize & (self.shards.len() - 1)]
    }

    /// The entry stored under `key`, unless its lifetime ended by `now_ms`.
    pub(crate) fn get(&self, key: &CacheKey, now_ms: u64) -> Option<Arc<Entry>> {
        let hash = key.table_hash;
        let shard = self
            .shard(hash)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let slot = shard.slots.find(hash, |slot| *slot.key == *key.entry_key)?;
        if now_ms >= slot.expires_ms {
            return None;
        }
        // Read before written: a hot entry's flag is already set, and its line stays
        // shared between the threads reading it.
        if !slot.visited.load(Ordering::Relaxed) {
            slot.visited.store(true, Ordering::Relaxed);
        }
        Some(slot.entry.clone())
    }

    /// Stores `entry` under `key` for `lifetime`, in place of what was there, evicting
    /// what the bound needs. An entry heavier than a shard's share is not stored.
    pub(crate) fn insert(&self, key: &CacheKey, entry: Arc<Entry>, lifetime: Duration) {
        self.insert_at(key, entry, lifetime, now_ms());
    }

    /// [`insert`](Self::insert) at `now_ms` on the wall clock.
    fn insert_at(&self, key: &CacheKey, entry: Arc<Entry>, lifetime: Duration, now_ms: u64) {
        let weight = weight(&key.entry_key, &entry);
        if weight > self.shard_bytes {
            return;
        }
        let lifetime_ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
        let expires_ms = now_ms.saturating_add(lifetime_ms);
        let hash = key.table_hash;
        let mut shard = self
            .shard(hash)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let shard = &mut *shard;
        match shard
            .slots
            .find_mut(hash, |slot| *slot.key == *key.entry_key)
        {
            Some(slot) => {
                // Same key, new entry: it keeps its place in the ring.
                shard.bytes = shard.bytes - slot.weight + weight;
                slot.entry = entry;
                slot.expires_ms = expires_ms;
                slot.weight = weight;
            }
            None => {
                let stamp = shard.next_stamp;
                shard.next_stamp += 1;
                shard.ring.push_back((hash, stamp));
                shard.bytes += weight;
                let slot = Slot {
                    hash,
                    key: key.entry_key.as_str().into(),
                    entry,
                    expires_ms,
                    weight,
                    stamp,
                    visited: AtomicBool::new(false),
                };
                shard.slots.insert_unique(hash, slot, |slot| slot.hash);
            }
        }
        shard.drop_expired_front(now_ms);
        while shard.bytes > self.shard_bytes {
            if !shard.evict_one(now_ms) {
                break;
            }
        }
    }

    /// Drops the entry of `key`, if any.
    pub(crate) fn remove(&self, key: &CacheKey) {
        let hash = key.table_hash;
        let mut shard = self
            .shard(hash)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let found = shard
            .slots
            .find_entry(hash, |slot| *slot.key == *key.entry_key);
        if let Ok(found) = found {
            let (slot, _) = found.remove();
            shard.bytes -= slot.weight;
            shard.dead += 1;
            shard.compact();
        }
    }

    /// Entries held, expired ones not yet dropped included.
    pub(crate) fn entry_count(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).slots.len() as u64)
            .sum()
    }

    /// Bytes held, as weighed for the bound.
    pub(crate) fn weighted_size(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).bytes)
            .sum()
    }
}

impl Shard {
    /// Moves the hand one place on: a dead place is dropped, an entry read since it was
    /// last passed (and not expired) goes round again with its flag cleared, any other
    /// is evicted. `false` once the ring is empty.
    fn evict_one(&mut self, now_ms: u64) -> bool {
        let Some((hash, stamp)) = self.ring.pop_front() else {
            return false;
        };
        let Ok(found) = self.slots.find_entry(hash, |slot| slot.stamp == stamp) else {
            self.dead = self.dead.saturating_sub(1);
            return true;
        };
        let slot = found.get();
        if now_ms < slot.expires_ms && slot.visited.swap(false, Ordering::Relaxed) {
            self.ring.push_back((hash, stamp));
            return true;
        }
        let (slot, _) = found.remove();
        self.bytes -= slot.weight;
        true
    }

    /// Drops, from the oldest end of the ring, dead places and expired entries (two at
    /// most): a store below its bound lets go of what expired, at no cost to a hit.
    fn drop_expired_front(&mut self, now_ms: u64) {
        for _ in 0..2 {
            let Some(&(hash, stamp)) = self.ring.front() else {
                return;
            };
            match self.slots.find_entry(hash, |slot| slot.stamp == stamp) {
                Ok(found) if now_ms < found.get().expires_ms => return,
                Ok(found) => {
                    let (slot, _) = found.remove();
                    self.bytes -= slot.weight;
                }
                Err(_) => self.dead = self.dead.saturating_sub(1),
            }
            self.ring.pop_front();
        }
    }

    /// Drops the dead places once they outnumber the live ones, so that the ring stays
    /// within about twice the entries whatever the churn.
    fn compact(&mut self) {
        if self.dead > self.slots.len() + 16 {
            let slots = &self.slots;
            self.ring
                .retain(|&(hash, stamp)| slots.find(hash, |slot| slot.stamp == stamp).is_some());
            self.dead = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::CachedResponse;

    use crate::key::{KeyBuilder, Tenant};

    const NOW: u64 = 1_000_000;
    const MINUTE: Duration = Duration::from_secs(60);

    fn entry(body_bytes: usize) -> Arc<Entry> {
        Arc::new(Entry {
            digest: [0; 16],
            generations: Vec::new(),
            stored_at_ms: NOW,
            ttl_ms: 60_000,
            compute_ms: 0,
            based_on_ms: 0,
            response: CachedResponse::ok("x".repeat(body_bytes)),
            hit_headers: Default::default(),
            generations_checked: Default::default(),
        })
    }

    fn key(name: &str) -> CacheKey {
        KeyBuilder::new("t", Tenant::Scoped("org_1"), "contacts")
            .unwrap()
            .request("GET", name, None)
            .build()
    }

    /// What `entry(body_bytes)` weighs under any key of [`key`] (they have one length).
    fn weight_of(body_bytes: usize) -> u64 {
        weight(&key("x").entry_key, &entry(body_bytes))
    }

    /// A store of one shard with room for `count` entries of `entry(1000)`.
    fn store_for(count: u64) -> EntryStore {
        let one = weight_of(1000);
        let store = EntryStore::new(count * one + one / 2);
        assert_eq!(store.shards.len(), 1);
        store
    }

    fn ring_len(store: &EntryStore) -> usize {
        store
            .shards
            .iter()
            .map(|s| s.read().unwrap().ring.len())
            .sum()
    }

    #[test]
    fn an_entry_is_answered_for_its_lifetime_and_not_after() {
        let store = store_for(4);
        let stored = entry(10);
        store.insert_at(&key("a"), stored.clone(), Duration::from_millis(500), NOW);
        let got = store
            .get(&key("a"), NOW + 499)
            .expect("within its lifetime");
        assert!(Arc::ptr_eq(&got, &stored));
        assert!(
            store.get(&key("a"), NOW + 500).is_none(),
            "answered past its lifetime"
        );
        assert!(store.get(&key("b"), NOW).is_none());
    }

    #[test]
    fn storing_a_key_again_replaces_its_entry_and_its_weight() {
        let store = store_for(8);
        store.insert_at(&key("k0000"), entry(1000), MINUTE, NOW);
        let second = entry(10);
        store.insert_at(&key("k0000"), second.clone(), MINUTE, NOW);
        assert!(Arc::ptr_eq(
            &store.get(&key("k0000"), NOW).unwrap(),
            &second
        ));
        assert_eq!(store.entry_count(), 1);
        assert_eq!(store.weighted_size(), weight_of(10));
        assert_eq!(ring_len(&store), 1, "a replaced key keeps its one place");
    }

    #[test]
    fn the_bound_holds_and_the_oldest_unread_entries_go_first() {
        let store = store_for(10);
        for i in 0..10 {
            store.insert_at(&key(&format!("k{i:04}")), entry(1000), MINUTE, NOW);
        }
        assert_eq!(store.entry_count(), 10, "ten fit");
        for i in 10..25 {
            store.insert_at(&key(&format!("k{i:04}")), entry(1000), MINUTE, NOW);
            assert!(store.weighted_size() <= store.shard_bytes);
        }
        assert_eq!(store.entry_count(), 10);
        for i in 0..15 {
            assert!(
                store.get(&key(&format!("k{i:04}")), NOW).is_none(),
                "k{i:04} kept"
            );
        }
        for i in 15..25 {
            assert!(
                store.get(&key(&format!("k{i:04}")), NOW).is_some(),
                "k{i:04} evicted"
            );
        }
    }

    #[test]
    fn an_entry_read_since_the_hand_last_passed_survives_a_scan_of_new_ones() {
        let store = store_for(10);
        for i in 0..10 {
            store.insert_at(&key(&format!("k{i:04}")), entry(1000), MINUTE, NOW);
        }
        // k0000 is read between the inserts of a scan three times the store's size;
        // every other entry is read never.
        for i in 10..40 {
            assert!(
                store.get(&key("k0000"), NOW).is_some(),
                "the hot entry was evicted at {i}"
            );
            store.insert_at(&key(&format!("k{i:04}")), entry(1000), MINUTE, NOW);
        }
        assert!(store.get(&key("k0000"), NOW).is_some());
        assert!(
            store.get(&key("k0001"), NOW).is_none(),
            "a cold entry outlived the scan"
        );
        assert_eq!(store.entry_count(), 10);
    }

    #[test]
    fn expired_entries_are_evicted_before_read_ones_and_dropped_below_the_bound() {
        let store = store_for(10);
        store.insert_at(&key("k0000"), entry(1000), Duration::from_millis(10), NOW);
        assert!(store.get(&key("k0000"), NOW).is_some());
        // Read, but expired by the next insert: it goes, though the store has room.
        store.insert_at(&key("k0001"), entry(1000), MINUTE, NOW + 10);
        assert_eq!(store.entry_count(), 1);
        assert_eq!(store.weighted_size(), weight_of(1000));
    }

    #[test]
    fn an_entry_heavier_than_a_shard_is_not_stored() {
        let store = store_for(2);
        store.insert_at(&key("big"), entry(10_000), MINUTE, NOW);
        assert!(store.get(&key("big"), NOW).is_none());
        assert_eq!(store.weighted_size(), 0);
    }

    #[test]
    fn removals_and_stores_again_keep_the_ring_within_its_bound() {
        let store = store_for(10);
        for round in 0..1_000 {
            let key = key(&format!("k{:04}", round % 5));
            store.insert_at(&key, entry(1000), MINUTE, NOW);
            store.remove(&key);
            store.insert_at(&key, entry(1000), MINUTE, NOW);
        }
        assert_eq!(store.entry_count(), 5);
        assert!(
            ring_len(&store) <= 2 * 5 + 17,
            "ring of {}",
            ring_len(&store)
        );
        assert_eq!(store.weighted_size(), 5 * weight_of(1000));
    }

    #[test]
    fn a_large_store_spreads_keys_over_its_shards() {
        let store = EntryStore::new(64 * 1024 * 1024);
        assert_eq!(store.shards.len(), 16);
        assert_eq!(EntryStore::new(10 * 1024 * 1024).shards.len(), 2);
        for i in 0..1_600 {
            store.insert_at(&key(&format!("/contacts/{i}")), entry(10), MINUTE, NOW);
        }
        for shard in store.shards.iter() {
            let shard = shard.read().unwrap();
            let held = shard.slots.len();
            assert!((50..=150).contains(&held), "a shard holds {held} of 1,600");
            // The table's tags (a hash's top seven bits) still differ within a shard:
            // about 70 of 128 for 100 keys; 8 if the shard took four of those bits.
            let tags: std::collections::HashSet<u64> =
                shard.slots.iter().map(|slot| slot.hash >> 57).collect();
            assert!(tags.len() >= 32, "{} tags for {held} keys", tags.len());
        }
    }

    /// Readers and writers on several threads: every read is an entry stored under its
    /// key, and the bound holds throughout.
    #[test]
    fn concurrent_reads_and_writes_keep_the_bound() {
        let store = Arc::new(store_for(50));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut hits = 0;
                    for i in 0..5_000u64 {
                        let read = key(&format!("k{:04}", (i * 7 + t) % 200));
                        if let Some(found) = store.get(&read, NOW) {
                            assert_eq!(found.response.body.len(), 1000);
                            hits += 1;
                        } else {
                            store.insert_at(&read, entry(1000), MINUTE, NOW);
                        }
                        if i % 100 == 0 {
                            store.remove(&key(&format!("k{:04}", i % 200)));
                        }
                        assert!(store.weighted_size() <= store.shard_bytes);
                    }
                    hits
                })
            })
            .collect();
        let hits: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(hits > 0, "no read found an entry");
        assert!(store.entry_count() <= 50);
    }
}
