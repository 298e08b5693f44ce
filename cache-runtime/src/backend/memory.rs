//! The in-process backend: the embedded default when no `REDIS_URL` is set, so nothing
//! needs installing to try the project. Bounded by bytes, with per-entry TTL, and the
//! same generation semantics as Redis, generation lifetime included. Of
//! `memory_max_bytes`, one eighth is for generations and the rest for entries: both
//! count, so that a request-derived scope cannot grow either without bound. It must
//! never grow without bound and never block on I/O.
//!
//! Entries live in an [`EntryStore`] (shared with the local tier). Generations live in a
//! sharded map read under a shared lock ([`GenerationTable`]): a hit reads two or three
//! of them, and checks them without copying a token; when a shard is past its share of
//! the bound it drops generations, which only turns the entries they guarded into
//! misses.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::store::EntryStore;
use super::EntrySlot;
use crate::entry::{now_ms, Entry, GenerationMemo};
use crate::generation::Generation;
use crate::key::{tag_spread, CacheKey, GenerationKeys, KeyList};

/// Resident bytes a generation costs besides its key and token: its map slot (key,
/// token, write time, control byte), the key's and token's allocations and allocator
/// overhead, with room to spare for the map's free slots. An estimate, not a
/// measurement.
const GENERATION_OVERHEAD_BYTES: usize = 200;

/// The share of the memory bound generations get (one eighth): there is one per tenant
/// and resource, and an evicted or expired one comes back fresh, which only turns the
/// entries it guarded into misses.
const GENERATION_SHARE: u64 = 8;

#[derive(Debug)]
pub(crate) struct MemoryBackend {
    entries: EntryStore,
    generations: GenerationTable,
}

/// Shards of the generation table: enough that the server's threads seldom share a
/// lock's cache line, few enough that each shard's share of the bound holds many.
const GENERATION_SHARDS: usize = 16;

/// The current generation of each key, created fresh where missing or expired.
#[derive(Debug)]
struct GenerationTable {
    shards: Box<[RwLock<GenerationShard>]>,
    /// Each shard's write count, advanced under its write lock after every change: a
    /// hit that finds the count its entry was last checked at skips the shard
    /// ([`GenerationMemo`]).
    epochs: Box<[AtomicU64]>,
    /// The origin of the memos' deadlines.
    born: Instant,
    /// A generation lives this long from its write (like Redis's `PX`; reads do not
    /// extend it), then comes back fresh.
    ttl: Duration,
    /// Each shard's share of the bound, in weighed bytes.
    shard_bytes: u64,
}

#[derive(Debug, Default)]
struct GenerationShard {
    tokens: HashMap<String, (Generation, Instant)>,
    /// The weight of `tokens`, as [`generation_weight`] counts it.
    bytes: u64,
}

fn generation_weight(key: &str, token: &Generation) -> u64 {
    (key.len() + token.as_bytes().len() + GENERATION_OVERHEAD_BYTES) as u64
}

impl GenerationTable {
    fn new(max_bytes: u64, ttl: Duration) -> Self {
        GenerationTable {
            shards: (0..GENERATION_SHARDS)
                .map(|_| RwLock::new(GenerationShard::default()))
                .collect(),
            // Counts start anywhere: an entry only ever lives in one table, and a note
            // taken in another could still not match by chance.
            epochs: (0..GENERATION_SHARDS)
                .map(|_| AtomicU64::new(rand::random::<u64>() >> 1))
                .collect(),
            born: Instant::now(),
            ttl,
            shard_bytes: max_bytes / GENERATION_SHARDS as u64,
        }
    }

    fn shard(&self, key: &str) -> &RwLock<GenerationShard> {
        &self.shards[shard_index(key)]
    }

    /// Whether every one of `keys` holds, unexpired at `now`, the generation `expected`
    /// has at the same place: the hit's check, without copying a token. Missing or
    /// expired generations are not current (the full read creates them).
    ///
    /// A tenant's keys share a shard. When `memo` says they were all current at the
    /// shard's present write count, and that none expires before `now`, nothing was
    /// written there since and the answer is yes without the lock: the shard's lock is
    /// a line every worker writes, its count one they only read. Otherwise they are
    /// checked under the shared lock, and a yes is noted in `memo`. The count is read
    /// before the check, so a write that lands during it leaves the note stale, never
    /// wrong: a note is only used while the count has not moved.
    fn all_current(
        &self,
        keys: &GenerationKeys,
        expected: &[Generation],
        memo: &GenerationMemo,
        now: Instant,
    ) -> bool {
        let Some(first) = keys.first() else {
            return expected.is_empty();
        };
        if keys.len() != expected.len() {
            return false;
        }
        let (index, one_shard) = match keys.shared_spread() {
            Some(spread) => (spread % GENERATION_SHARDS, true),
            None => (shard_index(first), false),
        };
        let epoch = self.epochs[index].load(Ordering::Acquire);
        let now_secs = now.saturating_duration_since(self.born).as_secs();
        if one_shard && memo.holds(epoch, now_secs) {
            return true;
        }
        // The earliest instant one of them expires at (none: a lifetime past the
        // clock's range).
        let mut deadline: Option<Instant> = None;
        let mut is_current = |shard: &GenerationShard, key: &str, token: &Generation| {
            shard.tokens.get(key).is_some_and(|(current, written)| {
                let expires = written.checked_add(self.ttl);
                if let Some(expires) = expires {
                    deadline = Some(deadline.map_or(expires, |d| d.min(expires)));
                }
                current == token && expires.is_none_or(|expires| now < expires)
            })
        };
        let current = if one_shard {
            let shard = self.shards[index]
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            keys.iter()
                .zip(expected)
                .all(|(key, token)| is_current(&shard, key, token))
        } else {
            // Keys of several shards (not a key this crate builds: a tenant's keys share
            // a tag) are checked one lock at a time: holding one shard's lock while
            // waiting for another's could deadlock with a reader doing the reverse
            // behind a queued writer.
            keys.iter().zip(expected).all(|(key, token)| {
                let shard = self.shards[shard_index(key)]
                    .read()
                    .unwrap_or_else(PoisonError::into_inner);
                is_current(&shard, key, token)
            })
        };
        if current && one_shard {
            let deadline_secs = deadline.map_or(u64::MAX, |deadline| {
                deadline.saturating_duration_since(self.born).as_secs()
            });
            memo.note(epoch, deadline_secs);
        }
        current
    }

    /// The generation of `key` at `now`, created fresh when there is none or it expired.
    fn current(&self, key: &str, now: Instant) -> Generation {
        let shard = self.shard(key);
        {
            // A poisoned lock only means a panic elsewhere while it was held; the map
            // itself is always consistent (every update is a single insert or remove).
            let read = shard.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((token, written)) = read.tokens.get(key) {
                if now.saturating_duration_since(*written) < self.ttl {
                    return token.clone();
                }
            }
        }
        let mut write = shard.write().unwrap_or_else(PoisonError::into_inner);
        // Another thread may have created it between the two locks: everyone must get
        // the same token, or an entry stored under one would miss for the others.
        if let Some((token, written)) = write.tokens.get(key) {
            if now.saturating_duration_since(*written) < self.ttl {
                return token.clone();
            }
        }
        let token = Generation::fresh();
        self.insert(&mut write, key, token.clone(), now);
        token
    }

    /// Replaces the generation of `key` with a fresh one.
    fn bump(&self, key: &str, now: Instant) {
        let mut write = self
            .shard(key)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        self.insert(&mut write, key, Generation::fresh(), now);
    }

    fn insert(&self, shard: &mut GenerationShard, key: &str, token: Generation, now: Instant) {
        shard.bytes += generation_weight(key, &token);
        if let Some((old, _)) = shard.tokens.insert(key.to_owned(), (token, now)) {
            shard.bytes -= generation_weight(key, &old);
        }
        if shard.bytes > self.shard_bytes {
            self.make_room(shard, key, now);
        }
        // Still under the write lock: a reader that sees the new count sees the change.
        self.epochs[shard_index(key)].fetch_add(1, Ordering::Release);
    }

    /// Brings `shard` back under its share: expired generations first, then any but
    /// `keep` (the one just written).
    fn make_room(&self, shard: &mut GenerationShard, keep: &str, now: Instant) {
        let ttl = self.ttl;
        shard.tokens.retain(|key, (_, written)| {
            key == keep || now.saturating_duration_since(*written) < ttl
        });
        shard.bytes = shard
            .tokens
            .iter()
            .map(|(key, (token, _))| generation_weight(key, token))
            .sum();
        while shard.bytes > self.shard_bytes {
            let Some(victim) = shard.tokens.keys().find(|k| k.as_str() != keep).cloned() else {
                break;
            };
            if let Some((token, _)) = shard.tokens.remove(&victim) {
                shard.bytes -= generation_weight(&victim, &token);
            }
        }
    }

    /// Bytes held, as weighed for the bound.
    fn weighted_size(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard.read().unwrap_or_else(PoisonError::into_inner).bytes)
            .sum()
    }
}

/// The shard of a generation key. It only spreads keys over the locks (the map inside
/// hashes with SipHash, so a crafted tenant id can at worst crowd one shard, not degrade
/// its map), and it spreads by the key's hash tag (`t.<tenant>`, [`tag_spread`]), as
/// Redis Cluster does: one tenant's generations share a shard, so that a hit checks
/// them all under one lock.
fn shard_index(key: &str) -> usize {
    tag_spread(key.as_bytes()) % GENERATION_SHARDS
}

impl MemoryBackend {
    /// A store of at most `max_bytes` (entries and generations together), whose
    /// generations live `generation_ttl` at most.
    pub(crate) fn new(max_bytes: u64, generation_ttl: Duration) -> Self {
        let generation_bytes = max_bytes / GENERATION_SHARE;
        let entries = EntryStore::new(max_bytes - generation_bytes);
        let generations = GenerationTable::new(generation_bytes, generation_ttl);
        MemoryBackend {
            entries,
            generations,
        }
    }

    /// The current generations, created where missing, and the entry: what a remote
    /// lookup and its generation initialisation return, without their two steps.
    pub(crate) fn read(&self, key: &CacheKey) -> (Vec<Generation>, EntrySlot) {
        let now = Instant::now();
        let generations = key
            .generation_keys
            .iter()
            .map(|k| self.generations.current(k, now))
            .collect();
        let entry = match self.entries.get(key, now_ms()) {
            Some(entry) => EntrySlot::Present(entry),
            None => EntrySlot::Absent,
        };
        (generations, entry)
    }

    /// The entry of `key` when its generations are all current: a hit's read, which
    /// copies no token and allocates nothing. `None` sends the caller to
    /// [`read`](Self::read), which also creates missing generations. The entry's own
    /// checks (digest, expiry) are the caller's, as after `read`.
    /// Generations are judged at `now` (the lookup's start), the entry's lifetime in the
    /// store at `now_ms` (the same instant on the wall clock).
    pub(crate) fn current_entry(
        &self,
        key: &CacheKey,
        now: Instant,
        now_ms: u64,
    ) -> Option<Arc<Entry>> {
        let entry = self.entries.get_unshared(key, now_ms)?;
        self.generations
            .all_current(
                &key.generation_keys,
                &entry.generations,
                &entry.generations_checked,
                now,
            )
            .then_some(entry)
    }

    pub(crate) fn store(&self, key: &CacheKey, entry: Arc<Entry>, ttl: Duration) {
        self.entries.insert(key, entry, ttl);
    }

    pub(crate) fn bump(&self, generation_keys: &(impl KeyList + ?Sized)) {
        let now = Instant::now();
        for key in generation_keys.key_iter() {
            self.generations.bump(key, now);
        }
    }

    /// Entries currently held (expired ones not yet dropped included).
    pub(crate) fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Bytes currently held, as weighed for the bound (entries and generations).
    pub(crate) fn weighted_size(&self) -> u64 {
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
        let generations = memory.generations.weighted_size();
        assert!(generations > 0);
        assert!(
            generations <= max_bytes / GENERATION_SHARE,
            "{generations} bytes of generations"
        );
        assert!(memory.weighted_size() <= max_bytes);
    }

    #[test]
    fn a_bump_is_read_by_every_later_lookup_and_reads_agree_in_between() {
        let memory = MemoryBackend::new(1024 * 1024, Duration::from_secs(600));
        let k = key("org_1");
        let (first, _) = memory.read(&k);
        assert_eq!(memory.read(&k).0, first);
        memory.bump(&[&k.generation_keys[1]]);
        let (after, _) = memory.read(&k);
        assert_eq!(after[0], first[0], "the tenant's generation was not bumped");
        assert_ne!(after[1], first[1], "the bump was not read");
        assert_eq!(memory.read(&k).0, after);
    }

    fn entry_for(key: &CacheKey, generations: Vec<Generation>) -> Arc<Entry> {
        Arc::new(Entry {
            digest: key.digest,
            generations,
            stored_at_ms: crate::entry::now_ms(),
            ttl_ms: 60_000,
            compute_ms: 0,
            based_on_ms: 0,
            response: crate::entry::CachedResponse::ok("x"),
            hit_headers: Default::default(),
            generations_checked: Default::default(),
        })
    }

    #[test]
    fn a_current_entry_is_one_whose_generations_are_all_current() {
        let memory = MemoryBackend::new(1024 * 1024, Duration::from_secs(600));
        let k = key("org_1");
        assert!(
            memory.current_entry(&k, Instant::now(), now_ms()).is_none(),
            "nothing stored yet"
        );
        let (generations, _) = memory.read(&k);
        memory.store(
            &k,
            entry_for(&k, generations.clone()),
            Duration::from_secs(60),
        );
        assert!(memory.current_entry(&k, Instant::now(), now_ms()).is_some());
        // Another tenant's bump changes nothing here, nor does a bump of another
        // resource of this tenant (same shard: the entry's note goes stale and it is
        // checked again); this resource's does, noted or not.
        memory.bump(&key("org_2").generation_keys);
        assert!(memory.current_entry(&k, Instant::now(), now_ms()).is_some());
        memory.bump(&["t:{t.org_1}:g:deals".to_owned()]);
        assert!(memory.current_entry(&k, Instant::now(), now_ms()).is_some());
        assert!(memory.current_entry(&k, Instant::now(), now_ms()).is_some());
        memory.bump(&[&k.generation_keys[1]]);
        assert!(
            memory.current_entry(&k, Instant::now(), now_ms()).is_none(),
            "served after a bump"
        );
        // An entry carrying fewer generations than the key reads is not current either.
        let (now, _) = memory.read(&k);
        memory.store(
            &k,
            entry_for(&k, now[..1].to_vec()),
            Duration::from_secs(60),
        );
        assert!(memory.current_entry(&k, Instant::now(), now_ms()).is_none());
        memory.store(&k, entry_for(&k, now.clone()), Duration::from_secs(60));
        assert!(memory.current_entry(&k, Instant::now(), now_ms()).is_some());
        // Past the generations' lifetime (from their write) they are not current.
        let table = &memory.generations;
        let later = Instant::now() + table.ttl;
        let memo = GenerationMemo::default();
        assert!(table.all_current(&k.generation_keys, &now, &memo, Instant::now()));
        assert!(memo.holds(
            table.epochs[shard_index(&k.generation_keys[0])].load(Ordering::Acquire),
            0
        ));
        // Noted or not, past the generations' lifetime they are not current.
        assert!(!table.all_current(&k.generation_keys, &now, &memo, later));
        assert!(!table.all_current(&k.generation_keys, &now, &GenerationMemo::default(), later));
    }

    #[test]
    fn a_tenants_generations_share_a_shard() {
        let k = KeyBuilder::new("t", Tenant::Scoped("org_1"), "contacts")
            .unwrap()
            .tag("deals")
            .unwrap()
            .build();
        let shards: Vec<usize> = k.generation_keys.iter().map(shard_index).collect();
        assert_eq!(shards.len(), 3);
        assert!(shards.iter().all(|&s| s == shards[0]), "{shards:?}");
        let spread: std::collections::HashSet<usize> = (0..64)
            .map(|i| shard_index(&key(&format!("org_{i}")).generation_keys[0]))
            .collect();
        assert!(spread.len() > GENERATION_SHARDS / 2, "{spread:?}");
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
