//! The local (near) tier in front of Redis: decoded entries kept in process, bounded in
//! bytes and by their TTL, keyed by the entry key (so tenant-scoped like Redis), and the
//! instance's view of which generations are current (`GenerationView`, used by the
//! `tracking` mode). It decides nothing by itself: the read path (`cache/near.rs`)
//! serves a local entry only once its generations are known to be current, and never
//! trusts a generation that a push could have invalidated unseen.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockWriteGuard};
use std::time::Duration;

use moka::sync::Cache as MokaCache;

use super::tracking::TrackingConnection;
use crate::config::{CacheConfig, LocalTier};
use crate::entry::{now_ms, Entry};
use crate::generation::Generation;
use crate::key::CacheKey;

/// Resident bytes an entry costs besides its key, body and headers: the memory
/// backend's measured figure (BENCHMARKS.md, memory), the same structure.
const ENTRY_OVERHEAD_BYTES: usize = 770;

/// Generations the view remembers at most; past it, it forgets all of them (which
/// costs round trips, never correctness). One per tenant and resource in use.
const MAX_KNOWN_GENERATIONS: usize = 200_000;

/// The local tier of one cache handle.
pub(crate) struct NearTier {
    pub(crate) mode: LocalTier,
    entries: MokaCache<String, (Arc<Entry>, Duration)>,
    /// The generations this instance knows to be current (tracking mode).
    pub(crate) view: Arc<GenerationView>,
    /// The connection generations are read through with tracking on (tracking mode).
    pub(crate) tracking: Option<TrackingConnection>,
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
    /// The tier `config` asks for, or `None` when it is off. `standalone_url` is the
    /// Redis server tracking connects to (the tracking mode requires one; the
    /// configuration check refuses it with a cluster).
    pub(crate) fn new(
        config: &CacheConfig,
        standalone_url: Option<&str>,
    ) -> Result<Option<NearTier>, redis::RedisError> {
        let mode = config.local_tier;
        if mode == LocalTier::Off {
            return Ok(None);
        }
        let view = Arc::new(GenerationView::default());
        let tracking = match (mode, standalone_url) {
            (LocalTier::Tracking, Some(url)) => Some(TrackingConnection::new(
                url,
                config.connect_timeout,
                view.clone(),
            )?),
            _ => None,
        };
        let entries = MokaCache::builder()
            .max_capacity(config.local_tier_max_bytes)
            .weigher(|key: &String, value: &(Arc<Entry>, Duration)| {
                let weight = key.len() + value.0.response.weight() + ENTRY_OVERHEAD_BYTES;
                u32::try_from(weight).unwrap_or(u32::MAX)
            })
            .expire_after(super::memory::EntryExpiry)
            .build();
        Ok(Some(NearTier {
            mode,
            entries,
            view,
            tracking,
        }))
    }

    /// The local entry for `key` when it is this key's (digest) and not expired; its
    /// generations are not checked here.
    pub(crate) fn entry(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        let (entry, _) = self.entries.get(&key.entry_key)?;
        (entry.digest == key.digest && !entry.is_expired(now_ms())).then_some(entry)
    }

    /// The local entry for `key` when, besides, every one of its generations is known
    /// to be current (tracking mode): served without a round trip.
    pub(crate) fn current_entry(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        let entry = self.entry(key)?;
        self.view
            .is_current(&key.generation_keys, &entry.generations)
            .then_some(entry)
    }

    /// Keeps `entry` (valid now) locally for what is left of its TTL.
    pub(crate) fn keep(&self, key: &CacheKey, entry: Arc<Entry>) {
        let left = entry.expires_at_ms().saturating_sub(now_ms());
        if left == 0 {
            return;
        }
        self.entries
            .insert(key.entry_key.clone(), (entry, Duration::from_millis(left)));
    }

    /// Drops the local entry of `key` (found stale).
    pub(crate) fn drop_entry(&self, key: &CacheKey) {
        self.entries.invalidate(&key.entry_key);
    }

    pub(crate) fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    pub(crate) fn weighted_size(&self) -> u64 {
        self.entries.weighted_size()
    }

    /// Runs moka's pending maintenance so that counts are exact (tests, stats).
    pub(crate) fn sync(&self) {
        self.entries.run_pending_tasks();
    }
}

/// The generations this instance knows to be current, each as read through the
/// tracking connection, and an epoch that every forgetting advances. A value read is
/// learned only if no forgetting happened since before it was read
/// ([`learn`](Self::learn)): an `invalidate` push for a key that arrives between the
/// read and the learning is never lost, at the price of now and then not learning a
/// value that was still current.
#[derive(Debug, Default)]
pub(crate) struct GenerationView {
    state: RwLock<ViewState>,
}

#[derive(Debug, Default)]
struct ViewState {
    known: HashMap<String, Generation>,
    epoch: u64,
}

impl GenerationView {
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

    /// Whether every key is known and holds the expected generation.
    pub(crate) fn is_current(&self, keys: &[String], expected: &[Generation]) -> bool {
        let Ok(state) = self.state.read() else {
            return false;
        };
        keys.len() == expected.len()
            && keys
                .iter()
                .zip(expected)
                .all(|(key, generation)| state.known.get(key) == Some(generation))
    }

    /// Learns the generations read (`None`: not there, not learned), unless anything
    /// was forgotten since `epoch_before_read`. Tells whether it learned them.
    pub(crate) fn learn(
        &self,
        epoch_before_read: u64,
        keys: &[String],
        read: &[Option<Generation>],
    ) -> bool {
        let mut state = self.write();
        if state.epoch != epoch_before_read {
            return false;
        }
        if state.known.len() + keys.len() > MAX_KNOWN_GENERATIONS {
            state.known.clear();
        }
        for (key, generation) in keys.iter().zip(read) {
            if let Some(generation) = generation {
                state.known.insert(key.clone(), generation.clone());
            }
        }
        true
    }

    /// Forgets these keys (an `invalidate` push, or an invalidation by this instance).
    pub(crate) fn forget<K: AsRef<[u8]>>(&self, keys: impl IntoIterator<Item = K>) {
        let mut state = self.write();
        state.epoch = state.epoch.wrapping_add(1);
        for key in keys {
            if let Ok(key) = std::str::from_utf8(key.as_ref()) {
                state.known.remove(key);
            }
        }
    }

    /// Forgets every generation (the tracking connection was lost or replaced, or Redis
    /// was flushed): nothing that could have missed a push is trusted.
    pub(crate) fn forget_all(&self) {
        let mut state = self.write();
        state.epoch = state.epoch.wrapping_add(1);
        state.known.clear();
    }

    /// How many generations are known.
    pub(crate) fn len(&self) -> usize {
        self.state.read().map(|s| s.known.len()).unwrap_or(0)
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
        let view = GenerationView::default();
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
    fn missing_generations_are_not_learned() {
        let view = GenerationView::default();
        let all = Generation::fresh();
        assert!(view.learn(view.epoch(), &keys(), &[Some(all.clone()), None]));
        assert_eq!(view.len(), 1);
        assert!(!view.is_current(&keys(), &[all, Generation::fresh()]));
    }
}
