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
//!
//! On several cores that read is still a write to lines every core shares: the lock's
//! word, the entry's reference count, and the counts of the body's and headers' bytes,
//! each taken and given back once per hit. [`get_unshared`](EntryStore::get_unshared)
//! answers a hot entry with a copy the worker thread keeps (`thread_memo`), sharing no
//! count with other threads, for as long as the entry's shard has not been written:
//! every write counts itself in the shard's `writes` before it changes anything, so an
//! unchanged count means the table still holds that entry, for the lifetime it had, and
//! still flagged as read. A copy is made at an entry's second read on a thread, so keys
//! read once cost no copy; bodies over [`MAX_COPIED_BYTES`] are never copied.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockWriteGuard};
use std::time::Duration;

use hashbrown::HashTable;

use crate::entry::{now_ms, Entry};
use crate::key::CacheKey;
use crate::thread_memo::{self, Slots};

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

/// Thread copies per worker thread.
const COPY_SLOTS: usize = 16;

/// Entries weighing more than this are never copied: a thread keeps at most
/// [`COPY_SLOTS`] of them, 256 KB, and holds as many stored ones between their first read
/// and their second.
const MAX_COPIED_BYTES: usize = 16 * 1024;

pub(crate) struct EntryStore {
    shards: Box<[ShardCell]>,
    /// Each shard's share of the bound, in weighed bytes.
    shard_bytes: u64,
    /// Tells this store's thread copies from another store's.
    id: u64,
}

/// A shard and its write count, alone on their cache lines (128 bytes: the adjacent-line
/// prefetcher pairs 64-byte lines), so that a write to one shard leaves the others'
/// lines where they are.
#[repr(align(128))]
#[derive(Default)]
struct ShardCell {
    shard: RwLock<Shard>,
    /// Write locks taken, each counted before its write changes anything.
    writes: AtomicU64,
}

/// What a thread keeps of an entry it read, in its slot of [`COPIES`].
struct ThreadCopy {
    store: u64,
    hash: u64,
    key: Box<str>,
    /// The shard's write count when the entry was read: while it is unchanged, the store
    /// holds the same entry, until `expires_ms`.
    writes: u64,
    expires_ms: u64,
    /// The stored entry after its first read (the copy is made at the second), then the
    /// thread's copy.
    entry: Arc<Entry>,
    copied: bool,
}

thread_local! {
    static COPIES: Slots<ThreadCopy> = const { RefCell::new(Vec::new()) };
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
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        EntryStore {
            shards: (0..count).map(|_| ShardCell::default()).collect(),
            shard_bytes: max_bytes / count as u64,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The shard of a key's hash: bits from its middle. The table inside picks a bucket
    /// by the low bits and tags it by the top seven; bits they share with the shard's
    /// would be the same for every key of a shard (fewer buckets used, more tags alike).
    fn shard(&self, hash: u64) -> &ShardCell {
        &self.shards[(hash >> 32) as usize & (self.shards.len() - 1)]
    }

    /// The shard of `hash`, locked for writing and its write counted: a thread copy of
    /// any of its entries stops being served from here on.
    fn write(&self, hash: u64) -> RwLockWriteGuard<'_, Shard> {
        let cell = self.shard(hash);
        let shard = cell.shard.write().unwrap_or_else(PoisonError::into_inner);
        cell.writes.fetch_add(1, Ordering::SeqCst);
        shard
    }

    /// The entry stored under `key`, unless its lifetime ended by `now_ms`.
    pub(crate) fn get(&self, key: &CacheKey, now_ms: u64) -> Option<Arc<Entry>> {
        self.get_counted(key, now_ms).map(|(entry, _, _)| entry)
    }

    /// [`get`](Self::get), with the shard's write count and the entry's end of life in
    /// the store, both as they were while it was read.
    fn get_counted(&self, key: &CacheKey, now_ms: u64) -> Option<(Arc<Entry>, u64, u64)> {
        let hash = key.table_hash;
        let cell = self.shard(hash);
        let shard = cell.shard.read().unwrap_or_else(PoisonError::into_inner);
        let slot = shard.slots.find(hash, |slot| *slot.key == *key.entry_key)?;
        if now_ms >= slot.expires_ms {
            return None;
        }
        // Read before written: a hot entry's flag is already set, and its line stays
        // shared between the threads reading it.
        if !slot.visited.load(Ordering::Relaxed) {
            slot.visited.store(true, Ordering::Relaxed);
        }
        // Stable while the read lock is held: writes are counted under the write lock.
        let writes = cell.writes.load(Ordering::SeqCst);
        Some((slot.entry.clone(), writes, slot.expires_ms))
    }

    /// What [`get`](Self::get) answers, or an equal copy of it that this thread keeps and
    /// no other thread touches: the hit path's read (see the module's documentation).
    pub(crate) fn get_unshared(&self, key: &CacheKey, now_ms: u64) -> Option<Arc<Entry>> {
        let hash = key.table_hash;
        let index = (hash % COPY_SLOTS as u64) as usize;
        let writes = self.shard(hash).writes.load(Ordering::SeqCst);
        let kept = thread_memo::find(&COPIES, index, |copy| {
            let same = copy.store == self.id
                && copy.hash == hash
                && copy.writes == writes
                && *copy.key == *key.entry_key;
            same.then(|| (copy.copied, copy.expires_ms, copy.entry.clone()))
        });
        if let Some((copied, expires_ms, entry)) = kept {
            if now_ms >= expires_ms {
                return None;
            }
            if copied {
                return Some(entry);
            }
            // Its second read on this thread: worth a copy.
            let copy = Arc::new(entry.unshared_copy());
            self.keep_copy(index, key, writes, expires_ms, copy.clone(), true);
            return Some(copy);
        }
        let (entry, writes, expires_ms) = self.get_counted(key, now_ms)?;
        if entry.response.weight() <= MAX_COPIED_BYTES {
            self.keep_copy(index, key, writes, expires_ms, entry.clone(), false);
        }
        Some(entry)
    }

    fn keep_copy(
        &self,
        index: usize,
        key: &CacheKey,
        writes: u64,
        expires_ms: u64,
        entry: Arc<Entry>,
        copied: bool,
    ) {
        let copy = ThreadCopy {
            store: self.id,
            hash: key.table_hash,
            key: key.entry_key.as_str().into(),
            writes,
            expires_ms,
            entry,
            copied,
        };
        thread_memo::keep(&COPIES, COPY_SLOTS, index, copy);
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
        let mut shard = self.write(hash);
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
        let mut shard = self.write(hash);
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
            .map(|s| {
                let shard = s.shard.read().unwrap_or_else(PoisonError::into_inner);
                shard.slots.len() as u64
            })
            .sum()
    }

    /// Bytes held, as weighed for the bound.
    pub(crate) fn weighted_size(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.shard.read().unwrap_or_else(PoisonError::into_inner).bytes)
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
            .map(|s| s.shard.read().unwrap().ring.len())
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
            let shard = shard.shard.read().unwrap();
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

    fn entry_with_body(body: String) -> Arc<Entry> {
        let mut made = entry(0);
        Arc::make_mut(&mut made).response = CachedResponse::ok(body);
        made
    }

    #[test]
    fn a_hot_entry_is_answered_by_a_thread_copy_until_its_shard_is_written() {
        let store = store_for(4);
        let stored = entry(100);
        store.insert_at(&key("a"), stored.clone(), MINUTE, NOW);

        let first = store.get_unshared(&key("a"), NOW).expect("stored");
        assert!(Arc::ptr_eq(&first, &stored), "a first read is not copied");
        let second = store.get_unshared(&key("a"), NOW).expect("stored");
        assert!(!Arc::ptr_eq(&second, &stored), "the second read is a copy");
        assert_eq!(second.response, stored.response);
        assert_ne!(
            second.response.body.as_ptr(),
            stored.response.body.as_ptr(),
            "the copy shares the stored body"
        );
        let third = store.get_unshared(&key("a"), NOW).expect("stored");
        assert!(Arc::ptr_eq(&third, &second), "the copy is kept");

        // Any write to the shard ends the copy: the next read is the store's.
        store.insert_at(&key("b"), entry(10), MINUTE, NOW);
        let after_write = store.get_unshared(&key("a"), NOW).expect("stored");
        assert!(Arc::ptr_eq(&after_write, &stored));

        let replaced = entry(200);
        store.get_unshared(&key("a"), NOW);
        store.insert_at(&key("a"), replaced.clone(), MINUTE, NOW);
        let got = store.get_unshared(&key("a"), NOW).expect("replaced");
        assert!(
            Arc::ptr_eq(&got, &replaced),
            "a copy outlived its replacement"
        );

        store.get_unshared(&key("a"), NOW);
        store.remove(&key("a"));
        assert!(
            store.get_unshared(&key("a"), NOW).is_none(),
            "a copy outlived its removal"
        );
    }

    #[test]
    fn a_thread_copy_ends_with_the_entrys_lifetime() {
        let store = store_for(4);
        store.insert_at(&key("a"), entry(10), Duration::from_millis(500), NOW);
        store.get_unshared(&key("a"), NOW);
        let copy = store
            .get_unshared(&key("a"), NOW + 1)
            .expect("in its lifetime");
        assert!(Arc::ptr_eq(
            &copy,
            &store
                .get_unshared(&key("a"), NOW + 499)
                .expect("in its lifetime")
        ));
        assert!(store.get_unshared(&key("a"), NOW + 500).is_none());
    }

    #[test]
    fn a_large_entry_is_never_copied() {
        let store = EntryStore::new(8 * 1024 * 1024);
        let large = entry(MAX_COPIED_BYTES);
        store.insert_at(&key("a"), large.clone(), MINUTE, NOW);
        for _ in 0..3 {
            let got = store.get_unshared(&key("a"), NOW).expect("stored");
            assert!(Arc::ptr_eq(&got, &large));
        }
    }

    #[test]
    fn two_stores_on_one_thread_never_answer_each_others_copies() {
        let (one, two) = (store_for(4), store_for(4));
        one.insert_at(&key("a"), entry_with_body("one".into()), MINUTE, NOW);
        two.insert_at(&key("a"), entry_with_body("two".into()), MINUTE, NOW);
        for _ in 0..3 {
            let from_one = one.get_unshared(&key("a"), NOW).expect("stored");
            let from_two = two.get_unshared(&key("a"), NOW).expect("stored");
            assert_eq!(from_one.response.body, "one");
            assert_eq!(from_two.response.body, "two");
        }
    }

    #[test]
    fn a_thread_copy_is_answered_to_its_thread_alone() {
        let store = store_for(4);
        let stored = entry(10);
        store.insert_at(&key("a"), stored.clone(), MINUTE, NOW);
        store.get_unshared(&key("a"), NOW);
        let copy = store.get_unshared(&key("a"), NOW).expect("stored");
        assert!(!Arc::ptr_eq(&copy, &stored));
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let got = store.get_unshared(&key("a"), NOW).expect("stored");
                assert!(Arc::ptr_eq(&got, &stored), "another thread's copy");
            });
        });
    }

    #[test]
    fn an_entry_read_through_its_copy_keeps_its_second_chance() {
        let store = store_for(2);
        store.insert_at(&key("a"), entry(1000), MINUTE, NOW);
        store.insert_at(&key("b"), entry(1000), MINUTE, NOW);
        store.get_unshared(&key("a"), NOW);
        store.get_unshared(&key("a"), NOW);
        // The hand passes `a` (read: it goes round, its flag cleared) and evicts `b`.
        store.insert_at(&key("c"), entry(1000), MINUTE, NOW);
        assert!(store.get(&key("b"), NOW).is_none());
        // Read again on this thread: the write ended the copy, so the read reached the
        // store and flagged `a` again; the next eviction takes `c`, not `a`.
        store.get_unshared(&key("a"), NOW).expect("kept");
        store.insert_at(&key("d"), entry(1000), MINUTE, NOW);
        assert!(
            store.get(&key("a"), NOW).is_some(),
            "a read entry was evicted"
        );
        assert!(store.get(&key("c"), NOW).is_none());
    }

    /// Threads reading through their copies while another replaces the entry: once a
    /// replacement has returned, no read that starts after it answers an older one.
    #[test]
    fn a_read_after_a_replacement_never_answers_an_older_copy() {
        use std::sync::atomic::AtomicBool;
        let store = Arc::new(store_for(4));
        let published = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let version = |v: u64| entry_with_body(format!("{v:08}"));
        store.insert_at(&key("a"), version(0), MINUTE, NOW);
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (store, published, done) = (store.clone(), published.clone(), done.clone());
                std::thread::spawn(move || {
                    let (mut reads, mut copies) = (0u64, 0u64);
                    let mut last: Option<Arc<Entry>> = None;
                    while !done.load(Ordering::Acquire) {
                        let floor = published.load(Ordering::Acquire);
                        let got = store.get_unshared(&key("a"), NOW).expect("always stored");
                        let read: u64 = std::str::from_utf8(&got.response.body)
                            .unwrap()
                            .parse()
                            .unwrap();
                        assert!(
                            read >= floor,
                            "read version {read} after {floor} was stored"
                        );
                        copies += u64::from(last.as_ref().is_some_and(|l| Arc::ptr_eq(l, &got)));
                        last = Some(got);
                        reads += 1;
                    }
                    (reads, copies)
                })
            })
            .collect();
        for v in 1..=2_000 {
            store.insert_at(&key("a"), version(v), MINUTE, NOW);
            published.store(v, Ordering::Release);
            if v % 100 == 0 {
                std::thread::yield_now();
            }
        }
        done.store(true, Ordering::Release);
        let (mut reads, mut copies) = (0, 0);
        for reader in readers {
            let (r, c) = reader.join().unwrap();
            reads += r;
            copies += c;
        }
        assert!(
            reads > 0 && copies > 0,
            "{reads} reads, {copies} through a copy"
        );
    }
}
