//! The `with_*` builder methods of [`CacheConfig`], one per setting; defaults and
//! environment variables are in the parent module.

use std::time::Duration;

use super::{CacheConfig, LocalTier, WaitReplicas};
use crate::early_refresh::RandomSource;
use crate::verify::ResourceMode;

impl CacheConfig {
    /// Uses Redis at `url` (`redis://` or `rediss://`).
    pub fn with_redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis_url = Some(url.into());
        self
    }

    /// Uses the Redis Cluster these seed nodes belong to (`redis://` or `rediss://`).
    ///
    /// ```
    /// use cache_runtime::CacheConfig;
    ///
    /// let config = CacheConfig::from_lookup(|name| {
    ///     (name == "REDIS_CLUSTER_URLS")
    ///         .then(|| "redis://10.0.0.1:6379, redis://10.0.0.2:6379".to_owned())
    /// })
    /// .unwrap();
    /// assert_eq!(config.redis_cluster_urls.len(), 2);
    /// let same = CacheConfig::default()
    ///     .with_redis_cluster_urls(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"]);
    /// assert_eq!(same.redis_cluster_urls, config.redis_cluster_urls);
    /// ```
    pub fn with_redis_cluster_urls<I, S>(mut self, seeds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.redis_cluster_urls = seeds.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the global switch.
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Serves these resources uncached.
    pub fn with_disabled_resources<I, S>(mut self, resources: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.disabled_resources = resources.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the Redis connect timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the bound on each Redis operation.
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Sets the largest body that is stored.
    pub fn with_max_entry_bytes(mut self, bytes: usize) -> Self {
        self.max_entry_bytes = bytes;
        self
    }

    /// Sets the bound of the in-memory backend.
    pub fn with_memory_max_bytes(mut self, bytes: u64) -> Self {
        self.memory_max_bytes = bytes;
        self
    }

    /// Sets the circuit breaker: failures that open it, and its first back-off.
    pub fn with_circuit(mut self, failures: u32, open_for: Duration) -> Self {
        self.circuit_failures = failures.max(1);
        self.circuit_open_for = open_for;
        self
    }

    /// Sets how long coalesced misses wait for the first one.
    pub fn with_flight_wait(mut self, wait: Duration) -> Self {
        self.flight_wait = wait;
        self
    }

    /// Turns the cross-instance miss lease on (`Some`) or off (`None`).
    pub fn with_lease(mut self, lease: Option<Duration>) -> Self {
        self.lease = lease;
        self
    }

    /// Sets which replicas must acknowledge an invalidation (`WAIT`).
    pub fn with_wait_replicas(mut self, wait: WaitReplicas) -> Self {
        self.wait_replicas = match wait {
            WaitReplicas::AtLeast(0) => WaitReplicas::Off,
            other => other,
        };
        self
    }

    /// Sets the lifetime of generation keys (at least 1 ms).
    pub fn with_generation_ttl(mut self, ttl: Duration) -> Self {
        self.generation_ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// Sets the XFetch early-refresh strength (0 disables).
    pub fn with_early_refresh_beta(mut self, beta: f64) -> Self {
        self.early_refresh_beta = if beta.is_finite() { beta.max(0.0) } else { 0.0 };
        self
    }

    /// Sets where the early-refresh decision draws its randomness (tests, replays); see
    /// [`RandomSource`].
    pub fn with_early_refresh_random(mut self, source: RandomSource) -> Self {
        self.early_refresh_random = source;
        self
    }

    /// Sets the mode of one resource (`off`, `shadow`, `on`); see
    /// [`CacheConfig::resource_modes`] and, at run time, `Cache::set_resource_mode`.
    ///
    /// ```
    /// use cache_runtime::{CacheConfig, ResourceMode};
    ///
    /// let config = CacheConfig::default()
    ///     .with_resource_mode("contacts", ResourceMode::Shadow)
    ///     .with_verify_share("templates", 0.01);
    /// assert_eq!(config.resource_modes["contacts"], ResourceMode::Shadow);
    /// ```
    pub fn with_resource_mode(mut self, resource: impl Into<String>, mode: ResourceMode) -> Self {
        self.resource_modes.insert(resource.into(), mode);
        self
    }

    /// Sets the share (0 to 1) of one resource's hits that are recomputed in the
    /// background and compared with the entry served.
    pub fn with_verify_share(mut self, resource: impl Into<String>, share: f64) -> Self {
        self.verify_shares.insert(resource.into(), share);
        self
    }

    /// Sets how many shadow and verification runs may be in flight at once.
    pub fn with_shadow_concurrency(mut self, runs: usize) -> Self {
        self.shadow_concurrency = runs;
        self
    }

    /// Sets how often one key's mismatch is logged at WARN.
    pub fn with_mismatch_log_interval(mut self, interval: Duration) -> Self {
        self.mismatch_log_interval = interval;
        self
    }

    /// Sets where the draw that picks hits for verification comes from.
    pub fn with_verify_random(mut self, random: RandomSource) -> Self {
        self.verify_random = random;
        self
    }

    /// Sets the local tier in front of Redis and its bound in bytes.
    ///
    /// ```
    /// use cache_runtime::{CacheConfig, LocalTier};
    ///
    /// let config = CacheConfig::default()
    ///     .with_redis_url("redis://127.0.0.1:7000")
    ///     .with_local_tier(LocalTier::Validate, 16 * 1024 * 1024);
    /// assert_eq!(config.local_tier, LocalTier::Validate);
    /// ```
    pub fn with_local_tier(mut self, mode: LocalTier, max_bytes: u64) -> Self {
        self.local_tier = mode;
        self.local_tier_max_bytes = max_bytes;
        self
    }

    /// Sets the interval of the `PING` on each tracking connection (`tracking` mode).
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_runtime::CacheConfig;
    ///
    /// let config = CacheConfig::default().with_local_tier_ping(Duration::from_millis(250));
    /// assert_eq!(config.local_tier_ping, Duration::from_millis(250));
    /// ```
    pub fn with_local_tier_ping(mut self, interval: Duration) -> Self {
        self.local_tier_ping = interval;
        self
    }
}
