//! The entries a worker thread last decoded from Redis replies. A Redis hit reads the
//! whole entry every time, and most hits of a hot key read the same bytes: a reply whose
//! entry bytes equal, whole, those a slot holds is answered with the entry decoded from
//! them then, without decoding again, and with the hit headers that entry keeps
//! (`Entry::hit_headers`). Equal bytes decode to equal entries, so this can only give
//! the entry the bytes hold; the key's hash picks the slot and nothing else. Whether the
//! entry is served is decided after, as for any decoded entry (its generations against
//! the ones the same reply carried).
//!
//! One memo per thread: no lock. Its memory is bounded: [`SLOTS`] entries of at most
//! [`MAX_ENTRY_BYTES`] each per worker thread (a slot holds the reply's buffer, which
//! the entry's body is a slice of).

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;

use crate::entry::{Corrupt, Entry};
use crate::thread_memo::{self, Slots};

/// Slots per thread.
const SLOTS: usize = 16;

/// Entries longer than this (encoded) are decoded every time: 16 slots of them stay
/// within 256 KB per thread.
const MAX_ENTRY_BYTES: usize = 16 * 1024;

struct Slot {
    raw: Bytes,
    entry: Arc<Entry>,
}

thread_local! {
    static DECODED: Slots<Slot> = const { RefCell::new(Vec::new()) };
}

/// The entry `raw` (read for the key whose `table_hash` is `hash`) encodes.
pub(crate) fn decode(hash: u64, raw: Bytes) -> Result<Arc<Entry>, Corrupt> {
    if raw.len() > MAX_ENTRY_BYTES {
        return Entry::decode(raw).map(Arc::new);
    }
    let index = (hash % SLOTS as u64) as usize;
    let found = thread_memo::find(&DECODED, index, |slot| {
        (slot.raw == raw).then(|| slot.entry.clone())
    });
    if let Some(entry) = found {
        return Ok(entry);
    }
    let entry = Arc::new(Entry::decode(raw.clone())?);
    let slot = Slot {
        raw,
        entry: entry.clone(),
    };
    thread_memo::keep(&DECODED, SLOTS, index, slot);
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::CachedResponse;
    use crate::generation::Generation;

    fn encoded(body: &'static str, generation: &Generation) -> Bytes {
        Entry {
            digest: [3; 16],
            generations: vec![generation.clone()],
            stored_at_ms: 1_000,
            ttl_ms: 60_000,
            compute_ms: 5,
            based_on_ms: 900,
            response: CachedResponse::ok(body),
            hit_headers: Default::default(),
            generations_checked: Default::default(),
        }
        .encode()
    }

    /// The same bytes give the entry decoded before; other bytes in the same slot (a
    /// new generation, another body) give their own entry, never the slot's.
    #[test]
    fn only_the_same_bytes_get_the_entry_decoded_before() {
        let (first, second) = (Generation::fresh(), Generation::fresh());
        let a = decode(7, encoded("a", &first)).unwrap();
        let again = decode(7, encoded("a", &first)).unwrap();
        assert!(Arc::ptr_eq(&a, &again), "decoded again");
        for (raw, body, generation) in [
            (encoded("a", &second), "a", &second),
            (encoded("b", &first), "b", &first),
        ] {
            let other = decode(7 + SLOTS as u64, raw).unwrap();
            assert!(!Arc::ptr_eq(&a, &other));
            assert_eq!(other.response().body, body);
            assert_eq!(other.generations, std::slice::from_ref(generation));
        }
        assert!(decode(7, Bytes::from_static(b"not an entry")).is_err());
    }

    #[test]
    fn a_large_entry_is_decoded_every_time() {
        let generation = Generation::fresh();
        let body: &'static str = Box::leak("x".repeat(MAX_ENTRY_BYTES).into_boxed_str());
        let one = decode(9, encoded(body, &generation)).unwrap();
        let two = decode(9, encoded(body, &generation)).unwrap();
        assert!(!Arc::ptr_eq(&one, &two));
        assert_eq!(one.response().body.len(), MAX_ENTRY_BYTES);
    }
}
