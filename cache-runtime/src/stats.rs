//! Counters and latency histograms, in total and per resource, like the reference's
//! `getCacheStats()` / `getCacheHitRate()`. Recording is a few relaxed atomic adds, each
//! on the recording thread's own stripe (`stats/striped.rs`); a
//! [`StatsSnapshot`] is a consistent-enough copy that serializes with serde. This module
//! never blocks on I/O and never fails.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use serde::Serialize;

mod striped;

use striped::StripedCounters;

/// What a lookup ended in, as reported in `X-Cache` and counted in stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    /// Served from the cache; the handler did not run.
    Hit,
    /// Not in the cache (or stale); the handler ran.
    Miss,
    /// Not looked up: no scope, caching switched off, a pending invalidation, an open
    /// circuit, or a method other than GET/HEAD. The handler ran.
    Bypass,
    /// Served from an entry that is no longer fresh, as the route allows
    /// (`stale_while_revalidate`, `stale_after_invalidation`), while one request
    /// recomputes it in the background. The handler did not run for this request.
    Stale,
}

impl Outcome {
    /// The `X-Cache` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Bypass => "BYPASS",
            Outcome::Stale => "STALE",
        }
    }
}

/// Upper bounds (seconds) of the latency histogram buckets; the last bucket is +Inf.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Slots of a [`Histogram`]: the buckets (the last one +Inf), then the sum of
/// nanoseconds. The count is the buckets' sum: a slot of its own was one more add per
/// observation, on every hit.
const HISTOGRAM_SLOTS: usize = BUCKET_SLOTS + 1;
const BUCKET_SLOTS: usize = LATENCY_BUCKETS.len() + 1;
const SUM_SLOT: usize = BUCKET_SLOTS;

#[derive(Debug, Default)]
struct Histogram {
    slots: StripedCounters<HISTOGRAM_SLOTS>,
}

impl Histogram {
    fn record(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let index = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.slots.add(index, 1);
        self.slots.add(
            SUM_SLOT,
            elapsed.as_nanos().min(u128::from(u64::MAX)) as u64,
        );
    }

    fn snapshot(&self) -> LatencySnapshot {
        let slots = self.slots.sums();
        let counts: Vec<u64> = slots[..BUCKET_SLOTS].to_vec();
        let count = counts.iter().sum::<u64>();
        let quantile = |q: f64| -> f64 {
            if count == 0 {
                return 0.0;
            }
            let rank = q * count as f64;
            let mut seen = 0u64;
            for (i, c) in counts.iter().enumerate() {
                if *c > 0 && (seen + c) as f64 >= rank {
                    let lower = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
                    let upper = LATENCY_BUCKETS.get(i).copied().unwrap_or(lower * 2.0);
                    let within = (rank - seen as f64) / *c as f64;
                    return lower + (upper - lower) * within.clamp(0.0, 1.0);
                }
                seen += c;
            }
            LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1]
        };
        LatencySnapshot {
            count,
            sum_seconds: slots[SUM_SLOT] as f64 / 1e9,
            p50_seconds: quantile(0.50),
            p95_seconds: quantile(0.95),
            p99_seconds: quantile(0.99),
            bucket_counts: counts,
        }
    }
}

/// A latency histogram's summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencySnapshot {
    /// Observations.
    pub count: u64,
    /// Sum of observations, seconds.
    pub sum_seconds: f64,
    /// Estimated median, seconds.
    pub p50_seconds: f64,
    /// Estimated 95th percentile, seconds.
    pub p95_seconds: f64,
    /// Estimated 99th percentile, seconds.
    pub p99_seconds: f64,
    /// Non-cumulative counts per bucket of [`LATENCY_BUCKETS`], then +Inf.
    pub bucket_counts: Vec<u64>,
}

/// One counter per [`Event`], striped per thread.
#[derive(Debug, Default)]
struct Counters {
    by_event: StripedCounters<EVENTS>,
}

/// Counter values.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Answered from the cache (including coalesced misses).
    pub hits: u64,
    /// Looked up and not found (or stale): the handler ran.
    pub misses: u64,
    /// Served uncached without a lookup.
    pub bypasses: u64,
    /// Store faults (timeouts, connection errors, refused writes, corrupt values).
    pub errors: u64,
    /// Invalidations requested (each resource of each call counts once).
    pub invalidations: u64,
    /// Responses written to the store.
    pub stores: u64,
    /// Responses not stored: errors, non-2xx, `Set-Cookie`, `no-store`, oversized.
    pub not_stored: u64,
    /// Misses answered by another request's computation (single flight); also in `hits`.
    pub coalesced: u64,
    /// Hits recomputed early (XFetch); also in `misses`.
    pub early_refreshes: u64,
    /// Stored values that did not decode or belonged to another key; also in `errors`.
    pub corrupt: u64,
    /// Shadow mode: requests the cache would have answered from an entry (the handler
    /// answered them; they are also in `bypasses`).
    pub would_be_hits: u64,
    /// Shadow mode: requests that would have missed (their fresh response is stored as
    /// `on` would store it).
    pub would_be_misses: u64,
    /// Entries compared with a fresh response: shadow would-be hits, and hits sampled
    /// for verification in `on`.
    pub verifications: u64,
    /// Comparisons that differed under unchanged generations: a write that was not
    /// invalidated. Each is logged at WARN (once per key per interval).
    pub mismatches: u64,
    /// Comparisons that differed because an invalidation landed meanwhile: not a fault.
    pub raced: u64,
    /// Shadow or verification runs skipped because the concurrency bound was reached.
    pub shadow_skipped: u64,
    /// Answered `STALE`: an entry past its TTL (within the route's grace) or, on a route
    /// with a staleness bound, from before an invalidation. Not in `hits` nor `misses`.
    pub stale: u64,
    /// Background recomputations started by a stale answer (one per key at a time).
    pub revalidations: u64,
    /// Misses that found no entry at all (never computed, evicted, past TTL and grace,
    /// undecodable); also in `misses`.
    pub misses_cold: u64,
    /// Misses on an entry past its TTL whose data nothing invalidated; also in `misses`.
    pub misses_expired: u64,
    /// Misses on an entry an invalidation made stale; also in `misses`.
    pub misses_invalidated: u64,
    /// Hits served by the local tier (`API_CACHE_LOCAL_TIER`) without reading the entry
    /// from Redis; also in `hits`. `hits - local_hits` came from Redis.
    pub local_hits: u64,
}

impl CounterSnapshot {
    /// Hits as a percentage of lookups (hits + stale + misses), 0 when there were none:
    /// a `STALE` answer is not a hit.
    pub fn hit_rate(&self) -> f64 {
        self.percent_of_lookups(self.hits)
    }

    /// Hits and `STALE` answers (both served without running the handler) as a
    /// percentage of lookups.
    pub fn hit_or_stale_rate(&self) -> f64 {
        self.percent_of_lookups(self.hits + self.stale)
    }

    fn percent_of_lookups(&self, served: u64) -> f64 {
        let lookups = self.hits + self.stale + self.misses;
        if lookups == 0 {
            0.0
        } else {
            served as f64 * 100.0 / lookups as f64
        }
    }

    /// Shadow mode: would-be hits as a percentage of shadow lookups, 0 when none.
    pub fn would_be_hit_rate(&self) -> f64 {
        let lookups = self.would_be_hits + self.would_be_misses;
        if lookups == 0 {
            0.0
        } else {
            self.would_be_hits as f64 * 100.0 / lookups as f64
        }
    }
}

impl Counters {
    fn snapshot(&self) -> CounterSnapshot {
        let sums = self.by_event.sums();
        let n = |event: Event| sums[event as usize];
        CounterSnapshot {
            hits: n(Event::Hit),
            misses: n(Event::Miss),
            bypasses: n(Event::Bypass),
            errors: n(Event::Error),
            invalidations: n(Event::Invalidation),
            stores: n(Event::Store),
            not_stored: n(Event::NotStored),
            coalesced: n(Event::Coalesced),
            early_refreshes: n(Event::EarlyRefresh),
            corrupt: n(Event::Corrupt),
            would_be_hits: n(Event::WouldBeHit),
            would_be_misses: n(Event::WouldBeMiss),
            verifications: n(Event::Verification),
            mismatches: n(Event::Mismatch),
            raced: n(Event::Raced),
            shadow_skipped: n(Event::ShadowSkipped),
            stale: n(Event::Stale),
            revalidations: n(Event::Revalidation),
            misses_cold: n(Event::MissCold),
            misses_expired: n(Event::MissExpired),
            misses_invalidated: n(Event::MissInvalidated),
            local_hits: n(Event::LocalHit),
        }
    }

    fn add(&self, event: Event) {
        self.by_event.add(event as usize, 1);
    }
}

#[derive(Debug, Default)]
struct ResourceStats {
    counters: Counters,
    lookup: Histogram,
    handler: Histogram,
    ttl_secs: AtomicU64,
}

impl ResourceStats {
    fn note_ttl(&self, ttl_secs: u32) {
        let ttl = u64::from(ttl_secs);
        // Read first: a store on every request would bounce the line between cores.
        if self.ttl_secs.load(Relaxed) != ttl {
            self.ttl_secs.store(ttl, Relaxed);
        }
    }
}

/// Every counter of one cache handle.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    totals: Counters,
    lookup: Histogram,
    handler: Histogram,
    resources: ResourceTable,
    circuit_opened: AtomicU64,
}

/// Slots of the lock-free part of a [`ResourceTable`].
const RESOURCE_SLOTS: usize = 128;
/// Slots tried for one name before it goes to the overflow map.
const RESOURCE_PROBES: usize = 16;

type ResourceMap = HashMap<String, Arc<ResourceStats>, BuildHasherDefault<NameHasher>>;

/// The per-resource records. A request reaches its resource's record two or three times,
/// so finding it must not write shared memory: behind a lock, the reader count alone is a
/// cache line every worker writes. Names come from the program (attributes, invalidation
/// calls), so there are few; they take slots that are written once and then only read
/// (open addressing, a fixed probe sequence per name, so a name has one slot), and any
/// name that finds its probe sequence taken goes to a locked map.
#[derive(Debug)]
struct ResourceTable {
    slots: Box<[OnceLock<Box<NamedRecord>>]>,
    overflow: RwLock<ResourceMap>,
}

#[derive(Debug)]
struct NamedRecord {
    name: String,
    stats: ResourceStats,
}

impl Default for ResourceTable {
    fn default() -> Self {
        ResourceTable {
            slots: (0..RESOURCE_SLOTS).map(|_| OnceLock::new()).collect(),
            overflow: RwLock::default(),
        }
    }
}

impl ResourceTable {
    /// Runs `f` on the record of `resource`, creating it on first use.
    fn with(&self, resource: &str, f: impl FnOnce(&ResourceStats)) {
        let mut hasher = NameHasher::default();
        hasher.write(resource.as_bytes());
        let start = hasher.finish() as usize;
        for probe in 0..RESOURCE_PROBES {
            let slot = &self.slots[(start + probe) % RESOURCE_SLOTS];
            // Concurrent first uses of one slot: one name wins it, the others see that
            // name and probe on, as every later use of theirs will.
            let record = slot.get_or_init(|| {
                Box::new(NamedRecord {
                    name: resource.to_owned(),
                    stats: ResourceStats::default(),
                })
            });
            if record.name == resource {
                f(&record.stats);
                return;
            }
        }
        if let Ok(map) = self.overflow.read() {
            if let Some(stats) = map.get(resource) {
                f(stats);
                return;
            }
        }
        if let Ok(mut map) = self.overflow.write() {
            f(map.entry(resource.to_owned()).or_default());
        }
        // A poisoned lock only means another thread panicked mid-insert; that one
        // observation is lost and nothing else.
    }

    /// Every record, by name.
    fn each(&self, mut f: impl FnMut(&str, &ResourceStats)) {
        for record in self.slots.iter().filter_map(OnceLock::get) {
            f(&record.name, &record.stats);
        }
        if let Ok(map) = self.overflow.read() {
            for (name, stats) in map.iter() {
                f(name, stats);
            }
        }
    }
}

/// FNV-1a for the per-resource map: resource names are short names from the program
/// (attributes and its own calls), never request input, so a keyed hash buys nothing
/// here and SipHash was a measurable share of a hit (BENCHMARKS.md, hot path 3).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NameHasher(u64);

impl Default for NameHasher {
    fn default() -> Self {
        NameHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// What to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Hit,
    Miss,
    Bypass,
    Error,
    Invalidation,
    Store,
    NotStored,
    Coalesced,
    EarlyRefresh,
    Corrupt,
    WouldBeHit,
    WouldBeMiss,
    Verification,
    Mismatch,
    Raced,
    ShadowSkipped,
    Stale,
    Revalidation,
    MissCold,
    MissExpired,
    MissInvalidated,
    LocalHit,
}

/// How many [`Event`]s there are: `LocalHit` is the last (`stats::tests` checks that
/// every event has a counter).
const EVENTS: usize = Event::LocalHit as usize + 1;

impl Stats {
    fn with_resource(&self, resource: &str, f: impl FnOnce(&ResourceStats)) {
        self.resources.with(resource, f);
    }

    pub(crate) fn record(&self, resource: Option<&str>, event: Event) {
        self.totals.add(event);
        if let Some(resource) = resource {
            self.with_resource(resource, |r| r.counters.add(event));
        }
    }

    pub(crate) fn record_lookup_time(&self, resource: &str, elapsed: Duration) {
        self.lookup.record(elapsed);
        self.with_resource(resource, |r| r.lookup.record(elapsed));
    }

    pub(crate) fn record_handler_time(&self, resource: &str, elapsed: Duration) {
        self.handler.record(elapsed);
        self.with_resource(resource, |r| r.handler.record(elapsed));
    }

    pub(crate) fn note_ttl(&self, resource: &str, ttl_secs: u32) {
        self.with_resource(resource, |r| r.note_ttl(ttl_secs));
    }

    /// A hit of a route whose TTL is `ttl_secs`.
    pub(crate) fn record_hit(&self, resource: &str, ttl_secs: u32) {
        self.totals.add(Event::Hit);
        self.with_resource(resource, |r| {
            r.counters.add(Event::Hit);
            r.note_ttl(ttl_secs);
        });
    }

    /// A hit served by the local tier (the hit itself is counted by `record_hit`).
    pub(crate) fn record_local_hit(&self, resource: &str) {
        self.record(Some(resource), Event::LocalHit);
    }

    pub(crate) fn record_circuit_opened(&self) {
        self.circuit_opened.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(
        &self,
        circuit: CircuitSnapshot,
        pending_invalidations: usize,
    ) -> StatsSnapshot {
        let mut resources = BTreeMap::new();
        self.resources.each(|name, stats| {
            let counters = stats.counters.snapshot();
            let ttl = stats.ttl_secs.load(Relaxed);
            resources.insert(
                name.to_owned(),
                ResourceSnapshot {
                    hit_rate: counters.hit_rate(),
                    would_be_hit_rate: counters.would_be_hit_rate(),
                    hit_or_stale_rate: counters.hit_or_stale_rate(),
                    counters,
                    ttl_secs: (ttl > 0).then_some(ttl),
                    lookup: stats.lookup.snapshot(),
                    handler: stats.handler.snapshot(),
                },
            );
        });
        let totals = self.totals.snapshot();
        StatsSnapshot {
            hit_rate: totals.hit_rate(),
            hit_or_stale_rate: totals.hit_or_stale_rate(),
            totals,
            lookup: self.lookup.snapshot(),
            handler: self.handler.snapshot(),
            resources,
            circuit,
            circuit_opened: self.circuit_opened.load(Relaxed),
            pending_invalidations,
            local_tier: None,
        }
    }
}

/// The circuit breaker's state, as reported in stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitSnapshot {
    /// Redis is tried on every request.
    Closed,
    /// Redis is not tried; requests are served uncached.
    Open,
    /// One probe request is trying Redis.
    HalfOpen,
    /// The in-memory backend has no circuit.
    NotApplicable,
}

/// One resource's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceSnapshot {
    /// Its counters.
    #[serde(flatten)]
    pub counters: CounterSnapshot,
    /// Hits as a percentage of lookups (`STALE` answers are lookups, not hits).
    pub hit_rate: f64,
    /// Shadow mode: would-be hits as a percentage of shadow lookups.
    pub would_be_hit_rate: f64,
    /// Hits and `STALE` answers as a percentage of lookups.
    pub hit_or_stale_rate: f64,
    /// The TTL its routes use (the last one seen), seconds.
    pub ttl_secs: Option<u64>,
    /// Time spent looking up (hits and misses).
    pub lookup: LatencySnapshot,
    /// Time the handler ran on misses and bypasses.
    pub handler: LatencySnapshot,
}

/// A copy of every figure of one cache handle; serializes with serde.
///
/// ```
/// use cache_runtime::{Cache, CacheConfig};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let cache = Cache::new(CacheConfig::default()).await.unwrap();
/// let stats = cache.stats();
/// assert_eq!(stats.totals.hits, 0);
/// assert_eq!(stats.hit_rate, 0.0);
/// let json = serde_json::to_string(&stats).unwrap();
/// assert!(json.contains("\"hit_rate\""));
/// # });
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    /// Counters over all resources.
    pub totals: CounterSnapshot,
    /// Hits as a percentage of lookups, over all resources (`STALE` answers are lookups,
    /// not hits).
    pub hit_rate: f64,
    /// Hits and `STALE` answers as a percentage of lookups, over all resources.
    pub hit_or_stale_rate: f64,
    /// Lookup latency over all resources.
    pub lookup: LatencySnapshot,
    /// Handler latency over all resources.
    pub handler: LatencySnapshot,
    /// Per resource, by name.
    pub resources: BTreeMap<String, ResourceSnapshot>,
    /// The circuit breaker's state now.
    pub circuit: CircuitSnapshot,
    /// How many times the circuit has opened.
    pub circuit_opened: u64,
    /// Invalidations waiting to be delivered to Redis.
    pub pending_invalidations: usize,
    /// The local tier's size, when it is on (`API_CACHE_LOCAL_TIER`); its hits are
    /// [`CounterSnapshot::local_hits`].
    pub local_tier: Option<LocalTierSnapshot>,
}

/// The local tier's figures.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LocalTierSnapshot {
    /// `tracking` or `validate`.
    pub mode: &'static str,
    /// Entries held.
    pub entries: u64,
    /// Bytes held, as weighed for its bound.
    pub bytes: u64,
    /// Generations known to be current (tracking mode; 0 in validate mode).
    pub known_generations: u64,
    /// Whether the tracking connection is up (`None` in validate mode).
    pub tracking_connected: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(stats: &Stats) -> BTreeMap<String, u64> {
        let snapshot = stats.snapshot(CircuitSnapshot::NotApplicable, 0);
        snapshot
            .resources
            .into_iter()
            .map(|(name, r)| (name, r.counters.hits))
            .collect()
    }

    /// Every event is counted, each under its own counter and under its own name in
    /// the snapshot. The match is exhaustive: an event added to `Event` fails to
    /// compile here until it is listed, and then must fit in `EVENTS`.
    #[test]
    fn every_event_has_a_counter_of_its_own() {
        fn listed(event: Event) -> bool {
            match event {
                Event::Hit
                | Event::Miss
                | Event::Bypass
                | Event::Error
                | Event::Invalidation
                | Event::Store
                | Event::NotStored
                | Event::Coalesced
                | Event::EarlyRefresh
                | Event::Corrupt
                | Event::WouldBeHit
                | Event::WouldBeMiss
                | Event::Verification
                | Event::Mismatch
                | Event::Raced
                | Event::ShadowSkipped
                | Event::Stale
                | Event::Revalidation
                | Event::MissCold
                | Event::MissExpired
                | Event::MissInvalidated
                | Event::LocalHit => true,
            }
        }
        let all = [
            Event::Hit,
            Event::Miss,
            Event::Bypass,
            Event::Error,
            Event::Invalidation,
            Event::Store,
            Event::NotStored,
            Event::Coalesced,
            Event::EarlyRefresh,
            Event::Corrupt,
            Event::WouldBeHit,
            Event::WouldBeMiss,
            Event::Verification,
            Event::Mismatch,
            Event::Raced,
            Event::ShadowSkipped,
            Event::Stale,
            Event::Revalidation,
            Event::MissCold,
            Event::MissExpired,
            Event::MissInvalidated,
            Event::LocalHit,
        ];
        let counters = Counters::default();
        for (i, event) in all.iter().enumerate() {
            assert!(listed(*event));
            assert!((*event as usize) < EVENTS, "{event:?}");
            for _ in 0..=i {
                counters.add(*event);
            }
        }
        let sums = counters.by_event.sums();
        for (i, event) in all.iter().enumerate() {
            assert_eq!(sums[*event as usize], i as u64 + 1, "{event:?}");
        }
        // Each snapshot field reads its own event's counter (event i was counted i + 1
        // times, in the order of the list above).
        let snapshot = counters.snapshot();
        let fields = [
            snapshot.hits,
            snapshot.misses,
            snapshot.bypasses,
            snapshot.errors,
            snapshot.invalidations,
            snapshot.stores,
            snapshot.not_stored,
            snapshot.coalesced,
            snapshot.early_refreshes,
            snapshot.corrupt,
            snapshot.would_be_hits,
            snapshot.would_be_misses,
            snapshot.verifications,
            snapshot.mismatches,
            snapshot.raced,
            snapshot.shadow_skipped,
            snapshot.stale,
            snapshot.revalidations,
            snapshot.misses_cold,
            snapshot.misses_expired,
            snapshot.misses_invalidated,
            snapshot.local_hits,
        ];
        let expected: Vec<u64> = (1..=all.len() as u64).collect();
        assert_eq!(fields.to_vec(), expected);
        let total: u64 = sums.iter().sum();
        assert_eq!(total, (1..=all.len() as u64).sum::<u64>());
    }

    #[test]
    fn every_name_keeps_one_record_past_the_lock_free_slots() {
        let stats = Stats::default();
        // More names than slots: the last ones find their probe sequences taken and go
        // to the overflow map; each must still be counted under its own name, once.
        let names: Vec<String> = (0..RESOURCE_SLOTS * 2).map(|i| format!("r{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            for _ in 0..=i % 3 {
                stats.record_hit(name, 60);
            }
        }
        let counted = hits(&stats);
        assert_eq!(counted.len(), names.len());
        for (i, name) in names.iter().enumerate() {
            assert_eq!(counted[name], (i % 3 + 1) as u64, "{name}");
        }
        let overflowed = stats
            .resources
            .overflow
            .read()
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(overflowed > 0, "the test never reached the overflow map");
    }

    #[test]
    fn concurrent_first_uses_of_one_name_share_one_record() {
        let stats = Arc::new(Stats::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let stats = Arc::clone(&stats);
                std::thread::spawn(move || {
                    for i in 0..1_000 {
                        stats.record_hit(&format!("name{}", i % 40), 30);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let counted = hits(&stats);
        assert_eq!(counted.len(), 40);
        assert!(
            counted.values().all(|&n| n == 8 * 1_000 / 40),
            "{counted:?}"
        );
        assert_eq!(
            stats
                .snapshot(CircuitSnapshot::NotApplicable, 0)
                .totals
                .hits,
            8_000
        );
    }
}
