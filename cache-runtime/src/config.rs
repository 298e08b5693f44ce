//! Configuration: every knob in one place, read from the environment like the reference
//! setup or set with builder methods. Defaults are documented here and only here.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `REDIS_URL` | unset | `redis://` or `rediss://`; unset selects the in-memory backend |
//! | `API_CACHE_PREFIX` | `api-cache` | first segment of every key |
//! | `API_CACHE_ENABLED` | `true` | global off switch (`false`, `0`, `off` disable) |
//! | `API_CACHE_DISABLED_RESOURCES` | empty | comma list of resources served uncached |
//! | `API_CACHE_CONNECT_TIMEOUT_MS` | `50` | Redis connect timeout |
//! | `API_CACHE_TIMEOUT_MS` | `30` | Redis response timeout, per operation |
//! | `API_CACHE_MAX_ENTRY_BYTES` | `1048576` | larger responses are not stored |
//! | `API_CACHE_MEMORY_MAX_BYTES` | `67108864` | bound of the in-memory backend |
//! | `API_CACHE_CIRCUIT_FAILURES` | `3` | consecutive failures that open the circuit |
//! | `API_CACHE_CIRCUIT_OPEN_MS` | `1000` | first back-off while open (doubles, max 30 s) |
//! | `API_CACHE_FLIGHT_WAIT_MS` | `5000` | how long a coalesced miss waits for the leader |
//! | `API_CACHE_LEASE_MS` | `0` (off) | cross-instance miss lease; see [`CacheConfig::lease`] |
//! | `API_CACHE_EARLY_REFRESH_BETA` | `1.0` | XFetch early refresh; `0` turns it off |

use std::collections::HashSet;
use std::time::Duration;

use crate::early_refresh::RandomSource;
use crate::error::ConfigError;

/// How a [`Cache`](crate::Cache) behaves. Build it with [`CacheConfig::from_env`] or
/// [`CacheConfig::default`] and the `with_*` methods.
///
/// ```
/// use std::time::Duration;
/// use cache_runtime::CacheConfig;
///
/// let config = CacheConfig::default()
///     .with_prefix("myapp")
///     .with_response_timeout(Duration::from_millis(20))
///     .with_disabled_resources(["contacts"]);
/// assert_eq!(config.prefix, "myapp");
/// assert!(config.disabled_resources.contains("contacts"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Redis URL; `None` selects the in-memory backend.
    pub redis_url: Option<String>,
    /// First segment of every key (no braces, no whitespace).
    pub prefix: String,
    /// Global switch: when false every cached route answers `X-Cache: BYPASS`
    /// (invalidations are still delivered, so turning it back on serves nothing stale).
    pub enabled: bool,
    /// Resources served uncached (a rollback of one route without a deploy).
    pub disabled_resources: HashSet<String>,
    /// Redis connect timeout.
    pub connect_timeout: Duration,
    /// Bound on each Redis operation on a request path.
    pub response_timeout: Duration,
    /// Responses with larger bodies are served but not stored.
    pub max_entry_bytes: usize,
    /// Bound of the in-memory backend, in bytes of stored bodies and headers.
    pub memory_max_bytes: u64,
    /// Consecutive Redis failures that open the circuit.
    pub circuit_failures: u32,
    /// First back-off of an open circuit; doubles on each failed probe up to 30 s.
    pub circuit_open_for: Duration,
    /// How long concurrent misses on one key wait for the first one's result before
    /// running the handler themselves.
    pub flight_wait: Duration,
    /// Cross-instance miss lease (`SET NX PX`): when set, instances that miss the same
    /// key at once let one of them compute and poll for its result. Costs a miss one
    /// extra round trip, a hit nothing; off (`None`) by default for that reason.
    pub lease: Option<Duration>,
    /// XFetch (Vattani et al., 2015) early-refresh strength; 0 disables.
    pub early_refresh_beta: f64,
    /// Where the early-refresh decision draws its randomness (`rand::random`); set a
    /// seeded or constant source to reproduce decisions. No environment variable.
    pub early_refresh_random: RandomSource,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            redis_url: None,
            prefix: "api-cache".to_owned(),
            enabled: true,
            disabled_resources: HashSet::new(),
            connect_timeout: Duration::from_millis(50),
            response_timeout: Duration::from_millis(30),
            max_entry_bytes: 1024 * 1024,
            memory_max_bytes: 64 * 1024 * 1024,
            circuit_failures: 3,
            circuit_open_for: Duration::from_millis(1000),
            flight_wait: Duration::from_millis(5000),
            lease: None,
            early_refresh_beta: 1.0,
            early_refresh_random: RandomSource::default(),
        }
    }
}

impl CacheConfig {
    /// Reads the variables in the table of this module; unset ones keep their defaults.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    ///
    /// ```
    /// use cache_runtime::CacheConfig;
    ///
    /// let config = CacheConfig::from_lookup(|name| match name {
    ///     "API_CACHE_DISABLED_RESOURCES" => Some("contacts, analytics".into()),
    ///     "API_CACHE_TIMEOUT_MS" => Some("25".into()),
    ///     _ => None,
    /// })
    /// .unwrap();
    /// assert!(config.disabled_resources.contains("analytics"));
    /// assert_eq!(config.response_timeout.as_millis(), 25);
    /// ```
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = CacheConfig::default();
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        if let Some(url) = get("REDIS_URL") {
            config.redis_url = Some(url.trim().to_owned());
        }
        if let Some(prefix) = get("API_CACHE_PREFIX") {
            config.prefix = prefix.trim().to_owned();
        }
        if let Some(value) = get("API_CACHE_ENABLED") {
            config.enabled = parse_bool("API_CACHE_ENABLED", &value)?;
        }
        if let Some(list) = get("API_CACHE_DISABLED_RESOURCES") {
            config.disabled_resources = split_list(&list);
        }
        if let Some(ms) = get("API_CACHE_CONNECT_TIMEOUT_MS") {
            config.connect_timeout = parse_ms("API_CACHE_CONNECT_TIMEOUT_MS", &ms)?;
        }
        if let Some(ms) = get("API_CACHE_TIMEOUT_MS") {
            config.response_timeout = parse_ms("API_CACHE_TIMEOUT_MS", &ms)?;
        }
        if let Some(n) = get("API_CACHE_MAX_ENTRY_BYTES") {
            config.max_entry_bytes = parse_num("API_CACHE_MAX_ENTRY_BYTES", &n)?;
        }
        if let Some(n) = get("API_CACHE_MEMORY_MAX_BYTES") {
            config.memory_max_bytes = parse_num("API_CACHE_MEMORY_MAX_BYTES", &n)?;
        }
        if let Some(n) = get("API_CACHE_CIRCUIT_FAILURES") {
            config.circuit_failures = parse_num("API_CACHE_CIRCUIT_FAILURES", &n)?;
        }
        if let Some(ms) = get("API_CACHE_CIRCUIT_OPEN_MS") {
            config.circuit_open_for = parse_ms("API_CACHE_CIRCUIT_OPEN_MS", &ms)?;
        }
        if let Some(ms) = get("API_CACHE_FLIGHT_WAIT_MS") {
            config.flight_wait = parse_ms("API_CACHE_FLIGHT_WAIT_MS", &ms)?;
        }
        if let Some(ms) = get("API_CACHE_LEASE_MS") {
            let lease = parse_ms("API_CACHE_LEASE_MS", &ms)?;
            config.lease = (!lease.is_zero()).then_some(lease);
        }
        if let Some(beta) = get("API_CACHE_EARLY_REFRESH_BETA") {
            config.early_refresh_beta = beta
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|b| b.is_finite() && *b >= 0.0)
                .ok_or(ConfigError::Env {
                    name: "API_CACHE_EARLY_REFRESH_BETA",
                    value: beta.clone(),
                    reason: "expected a number >= 0",
                })?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that cannot be checked by their types.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let prefix_ok = !self.prefix.is_empty()
            && self.prefix.len() <= 64
            && !self
                .prefix
                .chars()
                .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control());
        if !prefix_ok {
            return Err(ConfigError::Prefix(self.prefix.clone()));
        }
        if let Some(url) = &self.redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(ConfigError::RedisUrl(redact(url)));
            }
        }
        Ok(())
    }

    /// Uses Redis at `url` (`redis://` or `rediss://`).
    pub fn with_redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis_url = Some(url.into());
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
}

fn parse_bool(name: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" => Ok(false),
        _ => Err(ConfigError::Env {
            name,
            value: value.to_owned(),
            reason: "expected true/false, 1/0, on/off",
        }),
    }
}

fn parse_num<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, ConfigError> {
    value.trim().parse().map_err(|_| ConfigError::Env {
        name,
        value: value.to_owned(),
        reason: "expected a non-negative integer",
    })
}

fn parse_ms(name: &'static str, value: &str) -> Result<Duration, ConfigError> {
    parse_num::<u64>(name, value).map(Duration::from_millis)
}

pub(crate) fn split_list(list: &str) -> HashSet<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A URL with its password replaced, fit for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_values() {
        let err =
            CacheConfig::from_lookup(|n| (n == "API_CACHE_TIMEOUT_MS").then(|| "fast".into()));
        assert!(matches!(
            err,
            Err(ConfigError::Env {
                name: "API_CACHE_TIMEOUT_MS",
                ..
            })
        ));
        let err = CacheConfig::from_lookup(|n| (n == "REDIS_URL").then(|| "http://x".into()));
        assert!(matches!(err, Err(ConfigError::RedisUrl(_))));
        let err = CacheConfig::from_lookup(|n| (n == "API_CACHE_PREFIX").then(|| "a{b}".into()));
        assert!(matches!(err, Err(ConfigError::Prefix(_))));
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("redis://user:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact("redis://host"), "redis://host");
    }
}
