//! The keys of a worker thread's recent requests, by what they were built from.
//!
//! A route's hits repeat the same few requests, and building their key is the largest
//! part of a memory hit: SHA-256 over the parts, the query's normalization, two buffers.
//! The memo answers a request whose inputs are byte for byte those of a recent one with
//! the key built then. Inputs are compared whole, never by hash alone, so a memo can
//! only return the key those exact inputs build; the hash picks a slot and nothing else
//! (crafted collisions only evict each other). Keys hold no data, only names: a
//! memoized key is right for as long as the cache that built it exists, and an entry it
//! names is judged by the lookup as any other.
//!
//! One memo per thread: no lock and no shared cache line on the hit path. A slot names
//! its cache by a process-unique id, so a key is never answered to another cache.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::CacheKey;
use crate::thread_memo::{self, Slots};

/// Slots per thread, `1 << SLOT_BITS`. A slot holds one key (about 250 bytes with its
/// inputs), so the memo of a thread stays under 100 KB.
const SLOT_BITS: u32 = 8;
const SLOTS: usize = 1 << SLOT_BITS;

/// Bytes of inputs a memoized request may have: longer ones are built every time.
pub(crate) const MAX_INPUT_BYTES: usize = 256;

/// A process-unique id for a cache's memo slots.
pub(crate) fn next_cache_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A request's key inputs, length-prefixed into one stack buffer so that two different
/// sequences of inputs never encode alike; `None` once they do not fit.
pub(crate) struct Inputs {
    bytes: [u8; MAX_INPUT_BYTES],
    len: usize,
    overflow: bool,
}

impl Inputs {
    /// Inputs of the route `route` (its spec's address, which names its resource, tags,
    /// `vary` list and fingerprint) on cache `cache`.
    pub(crate) fn new(cache: u64, route: usize) -> Self {
        let mut inputs = Inputs {
            bytes: [0; MAX_INPUT_BYTES],
            len: 0,
            overflow: false,
        };
        inputs.raw(&cache.to_le_bytes());
        inputs.raw(&(route as u64).to_le_bytes());
        inputs
    }

    /// Appends one input, its length first.
    pub(crate) fn part(&mut self, bytes: &[u8]) {
        let Ok(len) = u32::try_from(bytes.len()) else {
            self.overflow = true;
            return;
        };
        self.raw(&len.to_le_bytes());
        self.raw(bytes);
    }

    /// Appends an optional input: absent and empty differ.
    pub(crate) fn optional(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            None => self.raw(&[0]),
            Some(bytes) => {
                self.raw(&[1]);
                self.part(bytes);
            }
        }
    }

    fn raw(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if self.overflow || end > MAX_INPUT_BYTES {
            self.overflow = true;
            return;
        }
        self.bytes[self.len..end].copy_from_slice(bytes);
        self.len = end;
    }

    fn encoded(&self) -> Option<&[u8]> {
        (!self.overflow).then(|| &self.bytes[..self.len])
    }
}

/// A multiplicative hash of the encoded inputs (FxHash's step), to pick a slot.
fn slot_of(encoded: &[u8]) -> usize {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let mut hash = 0u64;
    let mut chunks = encoded.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        hash = (hash.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    for &byte in chunks.remainder() {
        hash = (hash.rotate_left(5) ^ u64::from(byte)).wrapping_mul(K);
    }
    // The high bits are the well-mixed ones.
    (hash >> (u64::BITS - SLOT_BITS)) as usize
}

struct Slot {
    encoded: Box<[u8]>,
    key: Arc<CacheKey>,
}

thread_local! {
    static MEMO: Slots<Slot> = const { RefCell::new(Vec::new()) };
}

/// The key built from exactly `inputs` on this thread, if it is still in the memo; else
/// `build`'s (`None` when the inputs make no key), kept for the next request.
pub(crate) fn memoized<E>(
    inputs: &Inputs,
    build: impl FnOnce() -> Result<CacheKey, E>,
) -> Result<Arc<CacheKey>, E> {
    let Some(encoded) = inputs.encoded() else {
        return build().map(Arc::new);
    };
    let index = slot_of(encoded);
    let found = thread_memo::find(&MEMO, index, |slot| {
        (*slot.encoded == *encoded).then(|| slot.key.clone())
    });
    if let Some(key) = found {
        return Ok(key);
    }
    let key = Arc::new(build()?);
    let slot = Slot {
        encoded: encoded.into(),
        key: key.clone(),
    };
    thread_memo::keep(&MEMO, SLOTS, index, slot);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{KeyBuilder, Tenant};

    fn key(tenant: &str, path: &str) -> CacheKey {
        let mut builder = KeyBuilder::new("api-cache", Tenant::Scoped(tenant), "contacts").unwrap();
        builder.add_request("GET", path, None);
        builder.build()
    }

    fn inputs(cache: u64, tenant: &str, path: &str) -> Inputs {
        let mut inputs = Inputs::new(cache, 1);
        inputs.part(tenant.as_bytes());
        inputs.part(path.as_bytes());
        inputs
    }

    fn lookup(cache: u64, tenant: &str, path: &str, builds: &mut u32) -> Arc<CacheKey> {
        memoized::<()>(&inputs(cache, tenant, path), || {
            *builds += 1;
            Ok(key(tenant, path))
        })
        .unwrap()
    }

    #[test]
    fn the_same_inputs_reuse_the_key_and_any_other_input_builds_its_own() {
        let mut builds = 0;
        let first = lookup(7, "org_1", "/contacts", &mut builds);
        let again = lookup(7, "org_1", "/contacts", &mut builds);
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(builds, 1);

        let other_tenant = lookup(7, "org_2", "/contacts", &mut builds);
        assert_eq!(*other_tenant, key("org_2", "/contacts"));
        let other_path = lookup(7, "org_1", "/contacts/1", &mut builds);
        assert_eq!(*other_path, key("org_1", "/contacts/1"));
        let other_cache = lookup(8, "org_1", "/contacts", &mut builds);
        assert!(!Arc::ptr_eq(&first, &other_cache));
        assert_eq!(builds, 4);
    }

    #[test]
    fn length_prefixes_keep_adjacent_inputs_apart() {
        // "org_1" + "2/x" and "org_12" + "/x" are the same bytes run together.
        let mut builds = 0;
        let a = lookup(9, "org_1", "2/x", &mut builds);
        let b = lookup(9, "org_12", "/x", &mut builds);
        assert_eq!(builds, 2);
        assert_ne!(a, b);
        let mut absent = Inputs::new(9, 1);
        absent.optional(None);
        let mut empty = Inputs::new(9, 1);
        empty.optional(Some(b""));
        assert_ne!(absent.encoded(), empty.encoded());
    }

    #[test]
    fn inputs_too_long_for_the_memo_are_built_every_time() {
        let long = "x".repeat(MAX_INPUT_BYTES);
        let mut builds = 0;
        lookup(10, "org_1", &long, &mut builds);
        lookup(10, "org_1", &long, &mut builds);
        assert_eq!(builds, 2);
    }

    #[test]
    fn a_failed_build_is_returned_and_not_kept() {
        let inputs = inputs(11, "org_1", "/bad");
        assert_eq!(memoized::<&str>(&inputs, || Err("no key")), Err("no key"));
        let mut builds = 0;
        lookup(11, "org_1", "/bad", &mut builds);
        assert_eq!(builds, 1);
    }
}
