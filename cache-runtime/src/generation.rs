//! Generations: the O(1) invalidation mechanism.
//!
//! Every (tenant, resource) pair, and every tenant as a whole, has a generation: an
//! opaque token stored under its own key. An entry records the generations current when
//! its computation *started*; a lookup reads the current ones in the same round trip and
//! treats any difference as a miss. Invalidating sets a fresh token (one write, whatever
//! the number of entries), which also defeats the stale-set race: a computation that
//! overlapped an invalidation carries the old token and can never be served after it.
//!
//! Tokens are never reused: microseconds since the epoch plus 64 random bits. A generation
//! key that vanished (eviction, restart, FLUSHALL) is re-created with a fresh token, so
//! old entries can never match it again. This module never performs I/O.

use bytes::Bytes;
use std::time::{SystemTime, UNIX_EPOCH};

/// One generation token.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Generation(Bytes);

impl Generation {
    /// A token that no earlier generation of any key has had.
    pub fn fresh() -> Self {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let random: u64 = rand::random();
        Generation(Bytes::from(format!("{micros:x}.{random:016x}")))
    }

    /// A token read from the store, kept as the (shared, zero-copy) bytes it came in:
    /// a lookup only compares tokens. `None` for anything that is not a token of ours
    /// (ours are hex digits and a dot: ASCII, checked a word at a time, where a UTF-8
    /// check cost a Redis hit about 650 instructions for its three tokens).
    pub(crate) fn from_bytes(bytes: Bytes) -> Option<Self> {
        let valid = !bytes.is_empty() && bytes.len() <= 64 && bytes.is_ascii();
        valid.then_some(Generation(bytes))
    }

    /// The token's bytes, as stored.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The token as text.
    pub fn as_str(&self) -> &str {
        // Every token is checked to be ASCII when read, and made of hex digits and a dot,
        // so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Generation({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_tokens_do_not_repeat() {
        let tokens: std::collections::HashSet<_> =
            (0..10_000).map(|_| Generation::fresh()).collect();
        assert_eq!(tokens.len(), 10_000);
    }
}
