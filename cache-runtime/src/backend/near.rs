//! The local (near) tier in front of Redis: decoded entries kept in process, bounded in
//! bytes and by their TTL, keyed by the entry key (so tenant-scoped like Redis), and the
//! instance's view of which generations are current (`GenerationView`, used by the
//! `tracking` mode). It decides nothing by itself: the read path (`cache/near.rs`)
//! serves a local entry only once its generations are known to be current, and never
//! trusts a generation that a push could have invalidated unseen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockWriteGuard, Weak};
use std::time::Duration;

use super::store::EntryStore;
use super::tracking::TrackingConnection;
use super::tracking_cluster::ClusterTracking;
use super::RawLookup;
use crate::config::{CacheConfig, LocalTier, RedisTarget};
use crate::entry::{now_ms, Entry, GenerationMemo};
use crate::error::BackendError;
use crate::generation::Generation;
use crate::key::{CacheKey, KeyList};

/// Resident bytes a known generation costs besides its key and token: its map slot
/// (a `String` and a `Bytes`, 56 bytes, over the map's load factor, plus a control
/// byte) and the headers of its two heap allocations. An estimate, not a measurement.
const GENERATION_OVERHEAD_BYTES: usize = 96;

/// The share of `API_CACHE_LOCAL_TIER_MAX_BYTES` the generation view may use, as the
/// memory backend gives its generations an eighth of its bound; entries get the rest.
const VIEW_SHARE_DIVISOR: u64 = 8;

/// The local tier of one cache handle.
pub(crate) struct NearTier {
    pub(crate) mode: LocalTier,
    entries: EntryStore,
    /// The generations this instance knows to be current (tracking mode).
    pub(crate) view: Arc<GenerationView>,
    /// The connection(s) generations are read through with tracking on (tracking mode).
    pub(crate) tracking: Option<Arc<Tracking>>,
}

/// Where the tracked lookups go: the one server's tracking connection, or one per
/// master of a cluster.
// One per cache, behind an `Arc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Tracking {
    Standalone(TrackingConnection),
    Cluster(ClusterTracking),
}

impl Tracking {
    /// The lookup, its generations read tracked and learned by the view (see
    /// `backend/tracking.rs` and `backend/tracking_cluster.rs`).
    pub(crate) async fn lookup(&self, key: &CacheKey) -> Result<RawLookup, BackendError> {
        match self {
            Tracking::Standalone(connection) => connection.lookup(key).await,
            Tracking::Cluster(cluster) => cluster.lookup(key).await,
        }
    }

    /// Whether the tracking connection (every one opened, on a cluster) is up.
    pub(crate) fn is_up(&self) -> bool {
        match self {
            Tracking::Standalone(connection) => connection.is_up(),
            Tracking::Cluster(cluster) => cluster.is_up(),
        }
    }

    async fn keepalive(&self, timeout: Duration) {
        match self {
            Tracking::Standalone(connection) => connection.ping(timeout).await,
            Tracking::Cluster(cluster) => cluster.keepalive(timeout).await,
        }
    }
}

/// Pings the tracking connection(s) every `interval` until the tier is dropped.
async fn keepalive(tracking: Weak<Tracking>, interval: Duration, timeout: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(tracking) = tracking.upgrade() else {
            return;
        };
        tracking.keepalive(timeout).await;
    }
}

impl std::fmt::Debug for NearTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearTier")
            .field("mode", &self.mode)
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl NearTier {
    /// The tier `config` asks for, or `None` when it is off. `target` is the Redis
    /// tracking connects to. In tracking mode, spawns the keepalive task (it ends when
    /// the tier is dropped): the caller is inside a Tokio runtime.
    pub(crate) fn new(
        config: &CacheConfig,
        target: RedisTarget<'_>,
    ) -> Result<Option<NearTier>, redis::RedisError> {
        let mode = config.local_tier;
        if mode == LocalTier::Off {
            return Ok(None);
        }
        let view_budget = config.local_tier_max_bytes / VIEW_SHARE_DIVISOR;
        let view = Arc::new(GenerationView::new(
            usize::try_from(view_budget).unwrap_or(usize::MAX),
        ));
        let tracking = match (mode, target) {
            (LocalTier::Tracking, RedisTarget::Standalone(url)) => Some(Tracking::Standalone(
                TrackingConnection::new(url, config.connect_timeout, view.clone())?,
            )),
            (LocalTier::Tracking, RedisTarget::Cluster(seeds)) => Some(Tracking::Cluster(
                ClusterTracking::new(seeds, config.connect_timeout, view.clone())?,
            )),
            _ => None,
        }
        .map(Arc::new);
        if let Some(tracking) = &tracking {
            tokio::spawn(keepalive(
                Arc::downgrade(tracking),
                config.local_tier_ping,
                config.response_timeout,
            ));
        }
        let entries = EntryStore::new(config.local_tier_max_bytes - view_budget);
        Ok(Some(NearTier {
            mode,
            entries,
            view,
            tracking,
        }))
    }

    /// The local entry for `key` when it is this key's (digest) and not expired at
    /// `now_ms`; its generations are not checked here.
    pub(crate) fn entry(&self, key: &CacheKey, now_ms: u64) -> Option<Arc<Entry>> {
        let entry = self.entries.get_unshared(key, now_ms)?;
        (entry.digest == key.digest && !entry.is_expired(now_ms)).then_some(entry)
    }

    /// The local entry for `key` when, besides, every one of its generations is known
    /// to be current (tracking mode): served without a round trip.
    pub(crate) fn current_entry(&self, key: &CacheKey, now_ms: u64) -> Option<Arc<Entry>> {
        let entry = self.entry(key, now_ms)?;
        self.view
            .is_current_noted(
                &key.generation_keys,
                &entry.generations,
                &entry.generations_checked,
            )
            .then_some(entry)
    }

    /// Keeps `entry` (valid now) locally for what is left of its TTL.
    pub(crate) fn keep(&self, key: &CacheKey, entry: Arc<Entry>) {
        let left = entry.expires_at_ms().saturating_sub(now_ms());
        if left == 0 {
            return;
        }
        self.entries.insert(key, entry, Duration::from_millis(left));
    }

    /// Drops the local entry of `key` (found stale).
    pub(crate) fn drop_entry(&self, key: &CacheKey) {
        self.entries.remove(key);
    }

    pub(crate) fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// The bytes held, as weighed for the bound: entries and known generations.
    pub(crate) fn weighted_size(&self) -> u64 {
        self.entries.weighted_size() + self.view.bytes() as u64
    }
}

/// The generations this instance knows to be current, each as read through the
/// tracking connection, and an epoch that every forgetting advances. A value read is
/// learned only if no forgetting happened since before it was read
/// ([`learn`](Self::learn)): an `invalidate` push for a key that arrives between the
/// read and the learning is never lost, at the price of now and then not learning a
/// value that was still current.
///
/// Its memory is bounded by a budget in bytes (keys, tokens and an overhead per
/// generation); past it, arbitrary generations are forgotten until a quarter of the
/// budget is free again. A generation forgotten that way is simply not known: it costs
/// a round trip, never a stale read.
///
/// A local hit reads it without its lock while nothing changed (see
/// [`is_current_noted`](Self::is_current_noted)): the lock is a cache line every
/// server thread would write on every hit, the change count one they only read.
#[derive(Debug)]
pub(crate) struct GenerationView {
    state: RwLock<ViewState>,
    budget: usize,
    /// Advanced, under the write lock, by every change that can turn a current answer
    /// into a stale one: a generation forgotten, evicted, or learned with another value.
    /// Learning a generation not known before changes no answer from yes to no.
    changes: AtomicU64,
}

#[derive(Debug, Default)]
struct ViewState {
    known: HashMap<String, Generation>,
    epoch: u64,
    /// The weight of `known` (see [`weight`]).
    bytes: usize,
}

/// What one known generation is counted for against the view's budget.
fn weight(key: &str, generation: &Generation) -> usize {
    key.len() + generation.as_bytes().len() + GENERATION_OVERHEAD_BYTES
}

impl ViewState {
    fn remove(&mut self, key: &str) {
        if let Some(old) = self.known.remove(key) {
            self.bytes -= weight(key, &old);
        }
    }

    fn clear(&mut self) {
        self.known.clear();
        self.bytes = 0;
    }

    /// Forgets arbitrary generations (the map's order) until `bytes` fit.
    fn evict_to(&mut self, bytes: usize) {
        if self.bytes <= bytes {
            return;
        }
        let mut to_free = self.bytes - bytes;
        let mut freed = 0;
        self.known.retain(|key, generation| {
            if to_free == 0 {
                return true;
            }
            let w = weight(key, generation);
            to_free = to_free.saturating_sub(w);
            freed += w;
            false
        });
        self.bytes -= freed;
    }
}

impl GenerationView {
    /// An empty view whose keys, tokens and overhead stay within `budget` bytes.
    pub(crate) fn new(budget: usize) -> GenerationView {
        GenerationView {
            state: RwLock::new(ViewState::default()),
            budget,
            // Counts start anywhere, as the memory backend's do: a note taken elsewhere
            // on the same entry could still not match by chance.
            changes: AtomicU64::new(rand::random::<u64>() >> 1),
        }
    }

    /// Forgetting must never be lost: a poisoned lock (a panic while it was held) still
    /// holds a consistent map (every update is one insert or remove), so it is used.
    fn write(&self) -> RwLockWriteGuard<'_, ViewState> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The epoch to take before reading generations that [`learn`](Self::learn) may
    /// keep.
    pub(crate) fn epoch(&self) -> u64 {
        self.state.read().map(|s| s.epoch).unwrap_or(u64::MAX)
    }

    /// Advances the change count: under the write lock, whose holder changes the map.
    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// [`is_current`](Self::is_current), without the lock when `memo` says the entry's
    /// generations were current at the present change count (nothing that could make
    /// them stale happened since). The count is read before the check, so a change
    /// that lands during it leaves the note stale, never wrong.
    pub(crate) fn is_current_noted(
        &self,
        keys: &(impl KeyList + ?Sized),
        expected: &[Generation],
        memo: &GenerationMemo,
    ) -> bool {
        let changes = self.changes.load(Ordering::Acquire);
        // The view has no deadline of its own: a generation key that expires in Redis
        // is pushed as an invalidation like a write.
        if memo.holds(changes, 0) {
            return true;
        }
        let current = self.is_current(keys, expected);
        if current {
            memo.note(changes, u64::MAX);
        }
        current
    }

    /// Whether every key is known and holds the expected generation.
    pub(crate) fn is_current(
        &self,
        keys: &(impl KeyList + ?Sized),
        expected: &[Generation],
    ) -> bool {
        let Ok(state) = self.state.read() else {
            return false;
        };
        keys.key_iter().count() == expected.len()
            && keys
                .key_iter()
                .zip(expected)
                .all(|(key, generation)| state.known.get(key) == Some(generation))
    }

    /// Learns the generations read (`None`: not there, not learned), unless anything
    /// was forgotten since `epoch_before_read`. Tells whether it learned them.
    pub(crate) fn learn(
        &self,
        epoch_before_read: u64,
        keys: &(impl KeyList + ?Sized),
        read: &[Option<Generation>],
    ) -> bool {
        let mut state = self.write();
        if state.epoch != epoch_before_read {
            return false;
        }
        let incoming: usize = keys
            .key_iter()
            .zip(read)
            .filter_map(|(key, generation)| Some(weight(key, generation.as_ref()?)))
            .sum();
        if incoming > self.budget {
            return false;
        }
        // A known generation replaced by another value, or by none, is a change.
        let mut changed = false;
        for (index, key) in keys.key_iter().enumerate() {
            let incoming = read.get(index).and_then(Option::as_ref);
            if let Some(old) = state.known.get(key) {
                changed |= incoming != Some(old);
            }
            state.remove(key);
        }
        if state.bytes + incoming > self.budget {
            let room = (self.budget - self.budget / 4).saturating_sub(incoming);
            let before = state.known.len();
            state.evict_to(room);
            changed |= state.known.len() != before;
        }
        if changed {
            self.changed();
        }
        for (key, generation) in keys.key_iter().zip(read) {
            if let Some(generation) = generation {
                state.bytes += weight(key, generation);
                state.known.insert(key.to_owned(), generation.clone());
            }
        }
        true
    }

    /// Forgets these keys (an `invalidate` push, or an invalidation by this instance).
    pub(crate) fn forget<K: AsRef<[u8]>>(&self, keys: impl IntoIterator<Item = K>) {
        let mut state = self.write();
        state.epoch = state.epoch.wrapping_add(1);
        self.changed();
        for key in keys {
            if let Ok(key) = std::str::from_utf8(key.as_ref()) {
                state.remove(key);
            }
        }
    }

    /// Forgets every generation (the tracking connection was lost or replaced, or Redis
    /// was flushed): nothing that could have missed a push is trusted.
    pub(crate) fn forget_all(&self) {
        let mut state = self.write();
        state.epoch = state.epoch.wrapping_add(1);
        self.changed();
        state.clear();
    }

    /// How many generations are known.
    pub(crate) fn len(&self) -> usize {
        self.state.read().map(|s| s.known.len()).unwrap_or(0)
    }

    /// The bytes the known generations are counted for (within the budget).
    pub(crate) fn bytes(&self) -> usize {
        self.state.read().map(|s| s.bytes).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<String> {
        vec!["p:{t.a}:g:*".into(), "p:{t.a}:g:contacts".into()]
    }

    #[test]
    fn a_forgetting_between_read_and_learn_wins() {
        let view = GenerationView::new(1 << 20);
        let (all, contacts) = (Generation::fresh(), Generation::fresh());
        let read = vec![Some(all.clone()), Some(contacts.clone())];
        let epoch = view.epoch();
        // The push for the resource's key lands after the read, before learning.
        view.forget(["p:{t.a}:g:contacts"]);
        assert!(!view.learn(epoch, &keys(), &read));
        assert!(!view.is_current(&keys(), &[all.clone(), contacts.clone()]));
        // Read again after it: learned, current.
        let epoch = view.epoch();
        assert!(view.learn(epoch, &keys(), &read));
        assert!(view.is_current(&keys(), &[all.clone(), contacts.clone()]));
        assert!(!view.is_current(&keys(), &[all.clone(), Generation::fresh()]));
        view.forget(["p:{t.a}:g:contacts"]);
        assert!(!view.is_current(&keys(), &[all, contacts]));
        assert_eq!(view.len(), 1);
        view.forget_all();
        assert_eq!(view.len(), 0);
    }

    #[test]
    fn a_noted_answer_holds_only_until_something_could_have_made_it_stale() {
        let view = GenerationView::new(1 << 20);
        let (all, contacts) = (Generation::fresh(), Generation::fresh());
        let expected = [all.clone(), contacts.clone()];
        let read = vec![Some(all.clone()), Some(contacts.clone())];
        let memo = GenerationMemo::default();
        assert!(
            !view.is_current_noted(&keys(), &expected, &memo),
            "nothing known yet"
        );
        assert!(view.learn(view.epoch(), &keys(), &read));
        assert!(view.is_current_noted(&keys(), &expected, &memo));
        let noted = view.changes.load(Ordering::Relaxed);
        assert!(memo.holds(noted, 0), "a yes is noted");

        // Learning what is already known, or another tenant's keys, changes no answer.
        assert!(view.learn(view.epoch(), &keys(), &read));
        let other = vec!["p:{t.b}:g:*".to_owned()];
        assert!(view.learn(view.epoch(), &other, &[Some(Generation::fresh())]));
        assert_eq!(view.changes.load(Ordering::Relaxed), noted);
        assert!(view.is_current_noted(&keys(), &expected, &memo));

        // Each change that can turn the answer to no moves the count past the note.
        view.forget(["p:{t.a}:g:contacts"]);
        assert!(!memo.holds(view.changes.load(Ordering::Relaxed), 0));
        assert!(!view.is_current_noted(&keys(), &expected, &memo));
        assert!(view.learn(view.epoch(), &keys(), &read));
        assert!(view.is_current_noted(&keys(), &expected, &memo));
        let replaced = vec![Some(all.clone()), Some(Generation::fresh())];
        assert!(view.learn(view.epoch(), &keys(), &replaced));
        assert!(
            !view.is_current_noted(&keys(), &expected, &memo),
            "learned another value"
        );
        assert!(view.learn(view.epoch(), &keys(), &read));
        assert!(view.is_current_noted(&keys(), &expected, &memo));
        assert!(view.learn(view.epoch(), &keys(), &[Some(all.clone()), None]));
        assert!(
            !view.is_current_noted(&keys(), &expected, &memo),
            "gone from Redis"
        );
        assert!(view.learn(view.epoch(), &keys(), &read));
        assert!(view.is_current_noted(&keys(), &expected, &memo));
        view.forget_all();
        assert!(!view.is_current_noted(&keys(), &expected, &memo));
    }

    #[test]
    fn an_eviction_moves_the_count_past_every_note() {
        // Room for about two tenants' keys: the third evicts.
        let one = weight("p:{t.0}:g:*", &Generation::fresh());
        let view = GenerationView::new(5 * one);
        let tenant = |n: u32| vec![format!("p:{{t.{n}}}:g:*"), format!("p:{{t.{n}}}:g:x")];
        let read = vec![Some(Generation::fresh()), Some(Generation::fresh())];
        let expected: Vec<Generation> = read.iter().flatten().cloned().collect();
        let memo = GenerationMemo::default();
        assert!(view.learn(view.epoch(), &tenant(0), &read));
        assert!(view.is_current_noted(&tenant(0), &expected, &memo));
        let before = view.changes.load(Ordering::Relaxed);
        assert!(view.learn(view.epoch(), &tenant(1), &read));
        assert!(view.learn(view.epoch(), &tenant(2), &read));
        assert!(view.len() < 6, "the budget evicted: {} known", view.len());
        assert_ne!(view.changes.load(Ordering::Relaxed), before);
        let state = view.state.read().unwrap();
        let all_known = tenant(0).iter().all(|k| state.known.contains_key(k));
        drop(state);
        assert_eq!(
            view.is_current_noted(&tenant(0), &expected, &memo),
            all_known
        );
    }

    #[test]
    fn missing_generations_are_not_learned() {
        let view = GenerationView::new(1 << 20);
        let all = Generation::fresh();
        assert!(view.learn(view.epoch(), &keys(), &[Some(all.clone()), None]));
        assert_eq!(view.len(), 1);
        assert!(!view.is_current(&keys(), &[all, Generation::fresh()]));
    }

    #[test]
    fn the_view_stays_within_its_budget_and_never_trusts_what_it_evicted() {
        let budget = 64 * 1024;
        let view = GenerationView::new(budget);
        let mut learned = Vec::new();
        for tenant in 0..5_000 {
            let keys = vec![
                format!("p:{{t.{tenant}}}:g:*"),
                format!("p:{{t.{tenant}}}:g:contacts"),
            ];
            let read = vec![Some(Generation::fresh()), Some(Generation::fresh())];
            assert!(view.learn(view.epoch(), &keys, &read));
            assert!(view.bytes() <= budget, "{} bytes", view.bytes());
            let state = view.state.read().unwrap();
            let counted: usize = state.known.iter().map(|(k, g)| weight(k, g)).sum();
            assert_eq!(counted, state.bytes, "the count is exact");
            drop(state);
            learned.push((keys, read));
        }
        // Far more was learned than fits: most was evicted, never trusted afterwards.
        let known = view.len();
        assert!(known > 0 && known < 2 * 5_000 / 4, "{known} known");
        let (mut current, mut forgotten) = (0, 0);
        for (keys, read) in &learned {
            let expected: Vec<Generation> = read.iter().flatten().cloned().collect();
            let state = view.state.read().unwrap();
            let all_known = keys.iter().all(|k| state.known.contains_key(k));
            drop(state);
            assert_eq!(view.is_current(keys, &expected), all_known);
            if all_known {
                current += 1;
            } else {
                forgotten += 1;
            }
        }
        assert!(
            current > 0 && forgotten > 0,
            "{current} current, {forgotten} forgotten"
        );
        // Forgetting gives the bytes back.
        view.forget_all();
        assert_eq!((view.len(), view.bytes()), (0, 0));
        // More than the whole budget at once is not learned.
        let tiny = GenerationView::new(100);
        assert!(!tiny.learn(tiny.epoch(), &keys(), &[Some(Generation::fresh()), None]));
        assert_eq!(tiny.len(), 0);
    }
}
