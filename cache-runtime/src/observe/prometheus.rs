//! The Prometheus exposition of one cache handle. A [`CacheCollector`] takes one
//! [`StatsSnapshot`] per scrape and encodes it with `prometheus-client`, so the request
//! path keeps recording into plain atomics and pays nothing for metrics. Names, labels
//! and help texts live here and only here (the README documents them). This module
//! never blocks on I/O and never touches Redis.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::stats::{
    CircuitSnapshot, CounterSnapshot, LatencySnapshot, ResourceSnapshot, LATENCY_BUCKETS,
};
use crate::{Cache, StatsSnapshot};

/// A `prometheus-client` collector that exports a cache's figures at scrape time.
///
/// [`render_metrics`] and the `/metrics` route of [`Observability`](super::Observability)
/// use it; register it yourself when your app already has a
/// [`Registry`](prometheus_client::registry::Registry) of its own:
///
/// ```
/// use cache_runtime::{observe::CacheCollector, Cache, CacheConfig};
/// use prometheus_client::{encoding::text::encode, registry::Registry};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let cache = Cache::new(CacheConfig::default()).await.unwrap();
/// let mut registry = Registry::default();
/// registry.register_collector(Box::new(CacheCollector::new(cache.clone())));
///
/// let mut text = String::new();
/// encode(&mut text, &registry).unwrap();
/// assert!(text.contains("# TYPE api_cache_requests counter"));
/// # });
/// ```
///
/// Every metric name starts with `api_cache_`; a registry prefix of yours is put in front.
#[derive(Debug, Clone)]
pub struct CacheCollector {
    cache: Cache,
}

impl CacheCollector {
    /// A collector reading `cache`'s stats on every scrape.
    pub fn new(cache: Cache) -> Self {
        CacheCollector { cache }
    }
}

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let snapshot = self.cache.stats();
        encode_snapshot(&self.cache, &snapshot, &mut encoder)
    }
}

/// An exposition format, chosen from the scraper's `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsFormat {
    /// OpenMetrics 1.0 text (`application/openmetrics-text`), ends with `# EOF`.
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4 (`text/plain`), what `curl` shows.
    PrometheusText,
}

impl MetricsFormat {
    /// OpenMetrics when `accept` asks for it (as Prometheus itself does), else the
    /// classic text format.
    ///
    /// ```
    /// use cache_runtime::observe::MetricsFormat;
    ///
    /// let prometheus = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    /// assert_eq!(MetricsFormat::from_accept(Some(prometheus)), MetricsFormat::OpenMetrics);
    /// assert_eq!(MetricsFormat::from_accept(Some("*/*")), MetricsFormat::PrometheusText);
    /// assert_eq!(MetricsFormat::from_accept(None), MetricsFormat::PrometheusText);
    /// ```
    pub fn from_accept(accept: Option<&str>) -> MetricsFormat {
        let wants_openmetrics = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut params = range.split(';').map(str::trim);
                let media = params.next().unwrap_or_default();
                let refused = params.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if wants_openmetrics {
            MetricsFormat::OpenMetrics
        } else {
            MetricsFormat::PrometheusText
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            MetricsFormat::OpenMetrics => {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            }
            MetricsFormat::PrometheusText => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// A registry holding only `cache`'s collector.
pub(crate) fn registry_for(cache: &Cache) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(CacheCollector::new(cache.clone())));
    registry
}

/// Encodes `registry` in `format`.
pub(crate) fn encode_registry(
    registry: &Registry,
    format: MetricsFormat,
) -> Result<String, fmt::Error> {
    let mut text = String::with_capacity(16 * 1024);
    match format {
        MetricsFormat::OpenMetrics => {
            prometheus_client::encoding::text::encode(&mut text, registry)?
        }
        MetricsFormat::PrometheusText => {
            prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?
        }
    }
    Ok(text)
}

/// The exposition of `cache`'s figures now, as a scrape would get it.
///
/// ```
/// use cache_runtime::{observe::{render_metrics, MetricsFormat}, Cache, CacheConfig};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let cache = Cache::new(CacheConfig::default()).await.unwrap();
/// let text = render_metrics(&cache, MetricsFormat::OpenMetrics).unwrap();
/// assert!(text.contains("api_cache_circuit_opened_total 0"));
/// assert!(text.ends_with("# EOF\n"));
/// # });
/// ```
pub fn render_metrics(cache: &Cache, format: MetricsFormat) -> Result<String, fmt::Error> {
    encode_registry(&registry_for(cache), format)
}

/// Reads one counter of a resource's figures.
type CounterOf = fn(&CounterSnapshot) -> u64;

/// Reads one latency histogram of a resource's figures.
type LatencyOf = fn(&ResourceSnapshot) -> &LatencySnapshot;

/// The outcome label values of `api_cache_requests_total`, with their counter.
const OUTCOMES: [(&str, CounterOf); 4] = [
    ("hit", |c| c.hits),
    ("miss", |c| c.misses),
    ("bypass", |c| c.bypasses),
    ("stale", |c| c.stale),
];

/// The per-resource counters other than requests: (name without `_total`, help, value).
type ResourceCounter = (&'static str, &'static str, CounterOf);

const RESOURCE_COUNTERS: [ResourceCounter; 18] = [
    (
        "api_cache_errors",
        "Store faults while serving a resource: timeouts, connection errors, refused writes, corrupt values.",
        |c| c.errors,
    ),
    (
        "api_cache_invalidations",
        "Invalidations requested, one per resource per call; resource * counts invalidate_all.",
        |c| c.invalidations,
    ),
    (
        "api_cache_stores",
        "Responses written to the store.",
        |c| c.stores,
    ),
    (
        "api_cache_not_stored",
        "Responses not stored: errors, non-2xx, Set-Cookie, no-store, oversized.",
        |c| c.not_stored,
    ),
    (
        "api_cache_coalesced",
        "Misses answered by a concurrent request's computation (single flight); also counted as hits.",
        |c| c.coalesced,
    ),
    (
        "api_cache_early_refreshes",
        "Valid entries recomputed before expiry (probabilistic early refresh); also counted as misses.",
        |c| c.early_refreshes,
    ),
    (
        "api_cache_corrupt_values",
        "Stored values that did not decode or belonged to another key; also counted as errors.",
        |c| c.corrupt,
    ),
    (
        "api_cache_would_be_hits",
        "Shadow mode: requests the cache would have answered from an entry (served by the handler; also counted as bypasses).",
        |c| c.would_be_hits,
    ),
    (
        "api_cache_would_be_misses",
        "Shadow mode: requests that would have missed; their fresh response is stored as on would store it.",
        |c| c.would_be_misses,
    ),
    (
        "api_cache_verifications",
        "Entries compared with a fresh response: shadow would-be hits and sampled hits.",
        |c| c.verifications,
    ),
    (
        "api_cache_mismatches",
        "Comparisons that differed under unchanged generations: a write that was not invalidated (logged at WARN).",
        |c| c.mismatches,
    ),
    (
        "api_cache_verification_races",
        "Comparisons that differed because an invalidation landed meanwhile: not a fault.",
        |c| c.raced,
    ),
    (
        "api_cache_shadow_skipped",
        "Shadow or verification runs skipped because API_CACHE_SHADOW_CONCURRENCY runs were in flight.",
        |c| c.shadow_skipped,
    ),
    (
        "api_cache_revalidations",
        "Background recomputations started by a stale answer, one per key at a time.",
        |c| c.revalidations,
    ),
    (
        "api_cache_misses_cold",
        "Misses that found no entry (never computed, evicted, past TTL and grace); also counted as misses.",
        |c| c.misses_cold,
    ),
    (
        "api_cache_misses_expired",
        "Misses on an entry past its TTL that nothing invalidated; also counted as misses.",
        |c| c.misses_expired,
    ),
    (
        "api_cache_misses_invalidated",
        "Misses on an entry an invalidation made stale; also counted as misses.",
        |c| c.misses_invalidated,
    ),
    (
        "api_cache_local_hits",
        "Hits served by the local tier without reading the entry from Redis; also counted as hits.",
        |c| c.local_hits,
    ),
];

fn encode_snapshot(
    cache: &Cache,
    stats: &StatsSnapshot,
    encoder: &mut DescriptorEncoder,
) -> Result<(), fmt::Error> {
    let resources = &stats.resources;

    let mut family = encoder.encode_descriptor(
        "api_cache_requests",
        "Requests to cached routes by outcome: hit (served from the cache), miss (looked up, handler ran), bypass (served uncached without a lookup), stale (served from an entry no longer fresh while one request recomputes it).",
        None,
        MetricType::Counter,
    )?;
    for (resource, figures) in resources {
        for (outcome, value) in OUTCOMES {
            let labels = [("resource", resource.as_str()), ("outcome", outcome)];
            ConstCounter::new(value(&figures.counters)).encode(family.encode_family(&labels)?)?;
        }
    }

    for (name, help, value) in RESOURCE_COUNTERS {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (resource, figures) in resources {
            let labels = [("resource", resource.as_str())];
            ConstCounter::new(value(&figures.counters)).encode(family.encode_family(&labels)?)?;
        }
    }

    let seconds = Unit::Seconds;
    let mut family = encoder.encode_descriptor(
        "api_cache_ttl",
        "The time to live the resource's routes store entries with.",
        Some(&seconds),
        MetricType::Gauge,
    )?;
    for (resource, figures) in resources {
        if let Some(ttl) = figures.ttl_secs {
            let labels = [("resource", resource.as_str())];
            ConstGauge::new(ttl).encode(family.encode_family(&labels)?)?;
        }
    }

    let mut family = encoder.encode_descriptor(
        "api_cache_resource_mode",
        "The resource's mode now: 0 off, 1 shadow, 2 on (the global switch aside).",
        None,
        MetricType::Gauge,
    )?;
    for resource in resources.keys().filter(|r| r.as_str() != "*") {
        let labels = [("resource", resource.as_str())];
        let mode = match cache.resource_mode(resource) {
            crate::ResourceMode::Off => 0,
            crate::ResourceMode::Shadow => 1,
            crate::ResourceMode::On => 2,
        };
        ConstGauge::new(mode).encode(family.encode_family(&labels)?)?;
    }

    let mut family = encoder.encode_descriptor(
        "api_cache_resource_enabled",
        "1 when the resource is cached, 0 when switched off at run time (the global switch aside).",
        None,
        MetricType::Gauge,
    )?;
    for resource in resources.keys().filter(|r| r.as_str() != "*") {
        let labels = [("resource", resource.as_str())];
        let enabled = i64::from(cache.is_resource_enabled(resource));
        ConstGauge::new(enabled).encode(family.encode_family(&labels)?)?;
    }

    let histograms: [(&str, &str, LatencyOf); 2] = [
        (
            "api_cache_lookup_duration",
            "Time to look a request up in the store (hits and misses), including the wait for a concurrent computation.",
            |r| &r.lookup,
        ),
        (
            "api_cache_handler_duration",
            "Time the handler ran when the response did not come from the cache (misses and bypasses).",
            |r| &r.handler,
        ),
    ];
    for (name, help, latency) in histograms {
        let mut family =
            encoder.encode_descriptor(name, help, Some(&seconds), MetricType::Histogram)?;
        for (resource, figures) in resources {
            let labels = [("resource", resource.as_str())];
            let latency = latency(figures);
            let buckets = histogram_buckets(latency);
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    latency.sum_seconds,
                    latency.count,
                    &buckets,
                    None,
                )?;
        }
    }

    let circuit = encoder.encode_descriptor(
        "api_cache_circuit_state",
        "The Redis circuit breaker: 1 for the current state, 0 for the others; all 0 with the in-memory backend, which has none.",
        None,
        MetricType::Gauge,
    )?;
    encode_circuit(circuit, stats.circuit)?;

    let opened = encoder.encode_descriptor(
        "api_cache_circuit_opened",
        "Times the circuit breaker opened because Redis kept failing.",
        None,
        MetricType::Counter,
    )?;
    ConstCounter::new(stats.circuit_opened).encode(opened)?;

    let pending = encoder.encode_descriptor(
        "api_cache_pending_invalidations",
        "Invalidations not yet delivered to Redis; their tenant and resources are served uncached on this instance meanwhile.",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(stats.pending_invalidations as u64).encode(pending)?;

    let enabled = encoder.encode_descriptor(
        "api_cache_enabled",
        "1 when the global cache switch is on.",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(i64::from(cache.is_enabled())).encode(enabled)?;

    let mut backend = encoder.encode_descriptor(
        "api_cache_backend",
        "The store behind the cache.",
        None,
        MetricType::Info,
    )?;
    backend.encode_info(&[("backend", cache.backend_name())])?;

    if let (Some(entries), Some(bytes)) = (cache.memory_entry_count(), cache.memory_weighted_size())
    {
        let family = encoder.encode_descriptor(
            "api_cache_memory_entries",
            "Entries held by the in-memory backend.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(entries).encode(family)?;
        let bytes_unit = Unit::Bytes;
        let family = encoder.encode_descriptor(
            "api_cache_memory_size",
            "Size of the in-memory backend's entries, as weighed for its bound.",
            Some(&bytes_unit),
            MetricType::Gauge,
        )?;
        ConstGauge::new(bytes).encode(family)?;
    }

    if let Some(tier) = &stats.local_tier {
        let family = encoder.encode_descriptor(
            "api_cache_local_tier_entries",
            "Entries held by the local tier in front of Redis.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(tier.entries).encode(family)?;
        let bytes_unit = Unit::Bytes;
        let family = encoder.encode_descriptor(
            "api_cache_local_tier_size",
            "Size of the local tier's entries, as weighed for its bound.",
            Some(&bytes_unit),
            MetricType::Gauge,
        )?;
        ConstGauge::new(tier.bytes).encode(family)?;
        let family = encoder.encode_descriptor(
            "api_cache_local_tier_known_generations",
            "Generations the local tier knows to be current (tracking mode): a local hit needs all of its own.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(tier.known_generations).encode(family)?;
    }
    Ok(())
}

fn encode_circuit(
    mut family: prometheus_client::encoding::MetricEncoder<'_>,
    state: CircuitSnapshot,
) -> Result<(), fmt::Error> {
    let states = [
        ("closed", CircuitSnapshot::Closed),
        ("open", CircuitSnapshot::Open),
        ("half_open", CircuitSnapshot::HalfOpen),
    ];
    for (name, value) in states {
        let labels = [("state", name)];
        ConstGauge::new(i64::from(state == value)).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Upper bounds with per-bucket (non-cumulative) counts, as `encode_histogram` wants them:
/// it accumulates. The last bucket is `+Inf`.
fn histogram_buckets(latency: &LatencySnapshot) -> Vec<(f64, u64)> {
    LATENCY_BUCKETS
        .iter()
        .copied()
        .chain(std::iter::once(f64::INFINITY))
        .zip(
            latency
                .bucket_counts
                .iter()
                .copied()
                .chain(std::iter::repeat(0)),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_end_with_infinity_and_keep_every_count() {
        let latency = LatencySnapshot {
            count: 3,
            bucket_counts: {
                let mut counts = vec![0; LATENCY_BUCKETS.len() + 1];
                counts[0] = 1;
                counts[LATENCY_BUCKETS.len()] = 2;
                counts
            },
            ..LatencySnapshot::default()
        };
        let buckets = histogram_buckets(&latency);
        assert_eq!(buckets.len(), LATENCY_BUCKETS.len() + 1);
        assert_eq!(buckets[0], (LATENCY_BUCKETS[0], 1));
        assert_eq!(buckets[LATENCY_BUCKETS.len()], (f64::INFINITY, 2));
        assert_eq!(buckets.iter().map(|(_, c)| c).sum::<u64>(), 3);
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        let refused = "application/openmetrics-text;q=0, text/plain";
        assert_eq!(
            MetricsFormat::from_accept(Some(refused)),
            MetricsFormat::PrometheusText
        );
        let asked = "text/plain;q=0.5, Application/OpenMetrics-Text; version=1.0.0";
        assert_eq!(
            MetricsFormat::from_accept(Some(asked)),
            MetricsFormat::OpenMetrics
        );
    }
}
