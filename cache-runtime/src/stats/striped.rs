//! Counters striped per thread: each thread adds to a stripe of its own (its own cache
//! line) and a read sums the stripes. On the hit path every worker counts the same hits
//! and latencies; one shared counter was a cache line every core wrote on every request.
//! A sum is as exact as the counters were (each addition lands in exactly one stripe);
//! like them, it is not a snapshot of one instant.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Stripes per counter set. Threads take them in turn, so up to this many threads (the
/// runtime's workers, which start first) never share one.
pub(super) const STRIPES: usize = 8;

/// One stripe, alone on its cache lines (128 bytes: the adjacent-line prefetcher pairs
/// 64-byte lines).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(super) struct Padded<T>(pub(super) T);

/// `N` counters, striped.
#[derive(Debug)]
pub(super) struct StripedCounters<const N: usize> {
    stripes: [Padded<[AtomicU64; N]>; STRIPES],
}

impl<const N: usize> Default for StripedCounters<N> {
    fn default() -> Self {
        StripedCounters {
            stripes: std::array::from_fn(|_| Padded(std::array::from_fn(|_| AtomicU64::new(0)))),
        }
    }
}

impl<const N: usize> StripedCounters<N> {
    /// Adds `amount` to counter `index` (in this thread's stripe). An index past `N`
    /// (a programming error, which `stats::tests` guards against) counts nothing rather
    /// than panic on the request path.
    pub(super) fn add(&self, index: usize, amount: u64) {
        if let Some(counter) = self.stripes[stripe()].0.get(index) {
            counter.fetch_add(amount, Relaxed);
        }
    }

    /// Every counter, summed over the stripes.
    pub(super) fn sums(&self) -> [u64; N] {
        let mut sums = [0u64; N];
        for stripe in &self.stripes {
            for (sum, counter) in sums.iter_mut().zip(&stripe.0) {
                *sum = sum.wrapping_add(counter.load(Relaxed));
            }
        }
        sums
    }
}

/// This thread's stripe, taken in turn at its first count.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|stripe| {
        let mut index = stripe.get();
        if index == usize::MAX {
            index = NEXT.fetch_add(1, Relaxed) % STRIPES;
            stripe.set(index);
        }
        index
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn sums_count_every_addition_of_every_thread_once() {
        let counters = Arc::new(StripedCounters::<3>::default());
        let threads: Vec<_> = (0..STRIPES + 3)
            .map(|t| {
                let counters = Arc::clone(&counters);
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        counters.add(t % 3, 2);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let sums = counters.sums();
        // Threads 0..11 by `t % 3`: 4, 4 and 3 threads of 2,000 each.
        assert_eq!(sums, [8_000, 8_000, 6_000]);
        let used = counters
            .stripes
            .iter()
            .filter(|s| s.0.iter().any(|c| c.load(Relaxed) > 0))
            .count();
        assert!(used > 1, "every thread counted in one stripe");
    }
}
