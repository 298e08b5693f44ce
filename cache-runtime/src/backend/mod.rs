//! The stores behind a [`Cache`](crate::Cache): Redis (one server or a cluster), or an
//! in-process memory store that is the embedded default. Both keep the same semantics (TTL, generations, O(1)
//! invalidation); neither decides anything about HTTP, stats or timeouts, which the
//! cache layer above applies uniformly.

mod connection;
mod decoded;
pub(crate) mod memory;
pub(crate) mod near;
pub(crate) mod redis;
mod store;
mod tracking;
mod tracking_cluster;

use std::sync::Arc;
use std::time::Duration;

use crate::entry::Entry;
use crate::error::BackendError;
use crate::generation::Generation;
use crate::key::{CacheKey, KeyList};

/// What one lookup round trip returned.
#[derive(Debug)]
pub(crate) struct RawLookup {
    /// The current generations, in the order of [`CacheKey::generation_keys`]; `None`
    /// where the generation key does not exist (yet, or any more).
    pub generations: Vec<Option<Generation>>,
    pub entry: EntrySlot,
}

#[derive(Debug)]
pub(crate) enum EntrySlot {
    Absent,
    Present(Arc<Entry>),
    /// Something is stored there that is not a valid entry of ours.
    Corrupt,
}

#[derive(Debug)]
pub(crate) enum Backend {
    Memory(memory::MemoryBackend),
    Redis(redis::RedisBackend),
}

impl Backend {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Memory(_) => "memory",
            Backend::Redis(r) => r.name(),
        }
    }

    pub(crate) fn is_remote(&self) -> bool {
        matches!(self, Backend::Redis(_))
    }

    pub(crate) async fn store(
        &self,
        key: &CacheKey,
        entry: Arc<Entry>,
        ttl: Duration,
    ) -> Result<(), BackendError> {
        match self {
            Backend::Memory(m) => {
                m.store(key, entry, ttl);
                Ok(())
            }
            Backend::Redis(r) => r.store(key, &entry, ttl).await,
        }
    }

    /// Sets a fresh generation on every key, in one round trip. The keys must share one
    /// tenant (one hash slot).
    pub(crate) async fn bump(
        &self,
        generation_keys: &(impl KeyList + ?Sized),
    ) -> Result<(), BackendError> {
        match self {
            Backend::Memory(m) => {
                m.bump(generation_keys);
                Ok(())
            }
            Backend::Redis(r) => r.bump(generation_keys).await,
        }
    }

    /// Tries to take the miss lease; true when this caller holds it.
    pub(crate) async fn try_lease(
        &self,
        lease_key: &str,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        match self {
            Backend::Memory(_) => Ok(true),
            Backend::Redis(r) => r.try_lease(lease_key, ttl).await,
        }
    }

    pub(crate) async fn ping(&self) -> Result<(), BackendError> {
        match self {
            Backend::Memory(_) => Ok(()),
            Backend::Redis(r) => r.ping().await,
        }
    }
}
