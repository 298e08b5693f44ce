//! The dashboard: the JSON document it polls ([`StatsDocument`]) and the page itself
//! (`dashboard.html`: one self-contained file of HTML, CSS and vanilla JS, with no
//! external asset, no build step). The page is static; the only thing put into it is the
//! URL of the JSON, escaped. All the charting happens in the browser.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;

use crate::stats::LATENCY_BUCKETS;
use crate::{Cache, StatsSnapshot};

const PAGE: &str = include_str!("dashboard.html");
const STATS_URL_PLACEHOLDER: &str = "__API_CACHE_STATS_URL__";

/// The page loads nothing from elsewhere and may only fetch from its own origin.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// What the stats route serves as JSON, and the dashboard draws: every figure of a
/// [`StatsSnapshot`] (flattened in, so the document is a superset of it) plus what the
/// page needs to label them.
///
/// ```
/// use cache_runtime::{observe::StatsDocument, Cache, CacheConfig};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let cache = Cache::new(CacheConfig::default()).await.unwrap();
/// let json = serde_json::to_value(StatsDocument::of(&cache)).unwrap();
/// assert_eq!(json["backend"], "memory");
/// assert_eq!(json["totals"]["hits"], 0);
/// assert_eq!(json["latency_buckets_seconds"].as_array().unwrap().len(), 16);
/// # });
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct StatsDocument {
    /// `"redis"` or `"memory"`.
    pub backend: &'static str,
    /// Whether the global switch is on.
    pub enabled: bool,
    /// Resources seen so far that are switched off (mode `off`).
    pub disabled_resources: Vec<String>,
    /// Resources seen so far that are in shadow mode.
    pub shadow_resources: Vec<String>,
    /// The last mismatches found (what differed, where; never a body).
    pub recent_mismatches: Vec<crate::Mismatch>,
    /// When the figures were read, milliseconds since the Unix epoch (rates are computed
    /// between two documents with it).
    pub generated_at_ms: u64,
    /// Upper bounds of the latency buckets, seconds; each `bucket_counts` has one more
    /// entry, for `+Inf`.
    pub latency_buckets_seconds: &'static [f64],
    /// The figures themselves.
    #[serde(flatten)]
    pub stats: StatsSnapshot,
}

impl StatsDocument {
    /// The document for `cache` now.
    pub fn of(cache: &Cache) -> Self {
        let stats = cache.stats();
        let in_mode = |mode: crate::ResourceMode| {
            stats
                .resources
                .keys()
                .filter(|r| r.as_str() != "*" && cache.resource_mode(r) == mode)
                .cloned()
                .collect()
        };
        let disabled_resources = in_mode(crate::ResourceMode::Off);
        let shadow_resources = in_mode(crate::ResourceMode::Shadow);
        StatsDocument {
            backend: cache.backend_name(),
            enabled: cache.is_enabled(),
            disabled_resources,
            shadow_resources,
            recent_mismatches: cache.recent_mismatches(),
            generated_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64)
                .unwrap_or(0),
            latency_buckets_seconds: &LATENCY_BUCKETS,
            stats,
        }
    }
}

/// The page, polling `stats_url`.
pub(crate) fn page(stats_url: &str) -> Bytes {
    Bytes::from(PAGE.replace(STATS_URL_PLACEHOLDER, &escape_attribute(stats_url)))
}

fn escape_attribute(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The reference from a page at path `from` to the path `to`, relative, so that both
/// keep working when the router is nested under a prefix.
pub(crate) fn relative_url(from: &str, to: &str) -> String {
    let from_segments: Vec<&str> = from.trim_start_matches('/').split('/').collect();
    let from_dir = &from_segments[..from_segments.len().saturating_sub(1)];
    let to_segments: Vec<&str> = to.trim_start_matches('/').split('/').collect();
    let to_dir = &to_segments[..to_segments.len().saturating_sub(1)];
    let common = from_dir
        .iter()
        .zip(to_dir)
        .take_while(|(a, b)| a == b)
        .count();
    let mut url = "../".repeat(from_dir.len() - common);
    url.push_str(&to_segments[common..].join("/"));
    // "" would mean the page itself, and "a:b" would read as a scheme.
    let first = url.split('/').next().unwrap_or_default();
    if url.is_empty() || first.contains(':') {
        url.insert_str(0, "./");
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_urls_resolve_back_to_the_target() {
        assert_eq!(relative_url("/cache/dashboard", "/cache/stats"), "stats");
        assert_eq!(relative_url("/dashboard", "/cache/stats"), "cache/stats");
        assert_eq!(relative_url("/a/b/dashboard", "/a/stats"), "../stats");
        assert_eq!(
            relative_url("/a/b/dashboard", "/c/d/stats"),
            "../../c/d/stats"
        );
        assert_eq!(relative_url("/cache/", "/cache/stats"), "stats");
        assert_eq!(relative_url("/cache/dashboard", "/cache/"), "./");
        assert_eq!(relative_url("/cache", "/cache"), "cache");
        assert_eq!(relative_url("/ops/dash", "/ops/a:b"), "./a:b");
    }

    #[test]
    fn the_page_carries_the_escaped_url_and_nothing_external() {
        let page = page("x\"><script>");
        let text = std::str::from_utf8(&page).unwrap_or_default();
        assert!(!text.contains(STATS_URL_PLACEHOLDER));
        assert!(text.contains("x&quot;&gt;&lt;script&gt;"));
        assert!(!text.contains("http://") && !text.contains("https://"));
    }
}
