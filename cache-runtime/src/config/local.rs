//! The local tier's setting: whether entries are also kept in process, in front of Redis,
//! and how a local hit is known to be current. See `backend/near.rs` for the tier itself.

/// The local (near) tier in front of Redis, read from `API_CACHE_LOCAL_TIER`.
///
/// Decoded entries are kept in process as well (bounded by
/// [`CacheConfig::local_tier_max_bytes`](crate::CacheConfig::local_tier_max_bytes)); the
/// mode says what a local hit must know first. It has no effect on the in-memory backend.
///
/// ```
/// use cache_runtime::{CacheConfig, LocalTier};
///
/// let config = CacheConfig::from_lookup(|name| match name {
///     "REDIS_URL" => Some("redis://127.0.0.1:7000".into()),
///     "API_CACHE_LOCAL_TIER" => Some("validate".into()),
///     _ => None,
/// })
/// .unwrap();
/// assert_eq!(config.local_tier, LocalTier::Validate);
/// assert_eq!(CacheConfig::default().local_tier, LocalTier::Off);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalTier {
    /// Every lookup reads Redis (the default).
    Off,
    /// A local hit costs no round trip while the instance knows its generations to be
    /// current: they are read through a RESP3 connection with `CLIENT TRACKING` on, and
    /// Redis pushes an `invalidate` when another instance changes one. Another instance
    /// may serve the old entry until that push arrives (its delivery time: well under a
    /// millisecond on a healthy network, see BENCHMARKS.md). A single server or a
    /// cluster (one tracking connection per master, generations read on the master that
    /// owns the tenant's slot).
    Tracking,
    /// Every local hit first reads the entry's generation keys from Redis (one small
    /// `MGET`, no body): the same guarantee as without the tier, with less Redis
    /// bandwidth and decoding per hit. Standalone and cluster.
    Validate,
}

impl LocalTier {
    pub(crate) fn parse(value: &str) -> Option<LocalTier> {
        match value.trim().to_ascii_lowercase().as_str() {
            "off" | "0" | "false" | "no" => Some(LocalTier::Off),
            "tracking" => Some(LocalTier::Tracking),
            "validate" => Some(LocalTier::Validate),
            _ => None,
        }
    }

    /// The setting's name as in `API_CACHE_LOCAL_TIER`.
    pub fn as_str(self) -> &'static str {
        match self {
            LocalTier::Off => "off",
            LocalTier::Tracking => "tracking",
            LocalTier::Validate => "validate",
        }
    }
}
