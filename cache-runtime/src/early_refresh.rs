//! Where the early-refresh (XFetch) decision draws its randomness: `rand::random` by
//! default, or a source the application or a test supplies, so that the decision can
//! be reproduced (a seeded generator) or forced (a constant). This module only holds the
//! source; the decision itself is `Cache::refresh_early`. It never performs I/O.

use std::sync::Arc;

/// A source of uniform draws in `[0, 1)` for the early-refresh decision.
///
/// A lookup of a valid entry refreshes it early when `now + compute_time * beta *
/// -ln(draw)` reaches its expiry: a draw near 1 almost never refreshes, a draw near 0
/// almost always does. Values outside `(0, 1)` are clamped into it.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use cache_runtime::{early_refresh::RandomSource, CacheConfig};
///
/// // A reproducible sequence (a linear congruential generator seeded with 13).
/// let state = AtomicU64::new(13);
/// let seeded = RandomSource::new(move || {
///     let next = state.load(Ordering::Relaxed)
///         .wrapping_mul(6364136223846793005)
///         .wrapping_add(1442695040888963407);
///     state.store(next, Ordering::Relaxed);
///     (next >> 11) as f64 / (1u64 << 53) as f64
/// });
/// let config = CacheConfig::default().with_early_refresh_random(seeded);
/// let draw = config.early_refresh_random.draw();
/// assert!(draw > 0.0 && draw < 1.0);
/// ```
#[derive(Clone)]
pub struct RandomSource(Arc<dyn Fn() -> f64 + Send + Sync>);

impl RandomSource {
    /// Draws from `source`.
    pub fn new(source: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        RandomSource(Arc::new(source))
    }

    /// One draw, clamped into `(0, 1)` (so that its logarithm is finite and negative);
    /// NaN counts as the draw least likely to refresh.
    pub fn draw(&self) -> f64 {
        let draw = (self.0)();
        if draw.is_nan() {
            return 1.0 - f64::EPSILON;
        }
        draw.clamp(f64::MIN_POSITIVE, 1.0 - f64::EPSILON)
    }
}

impl Default for RandomSource {
    /// `rand::random`.
    fn default() -> Self {
        RandomSource::new(rand::random::<f64>)
    }
}

impl std::fmt::Debug for RandomSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RandomSource")
    }
}
