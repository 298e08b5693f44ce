//! Configuration: every knob in one place, read from the environment like the reference
//! setup or set with builder methods. Defaults are documented here and only here.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `REDIS_URL` | unset | `redis://` or `rediss://`; unset (and no `REDIS_CLUSTER_URLS`) selects the in-memory backend |
//! | `REDIS_CLUSTER_URLS` | unset | Redis Cluster: comma list of seed nodes, all `redis://` or all `rediss://` (any few nodes; the rest are discovered); excludes `REDIS_URL`. See [`CacheConfig::redis_cluster_urls`] |
//! | `API_CACHE_PREFIX` | `api-cache` | first segment of every key |
//! | `API_CACHE_ENABLED` | `true` | global off switch (`false`, `0`, `off` disable) |
//! | `API_CACHE_DISABLED_RESOURCES` | empty | comma list of resources served uncached (mode `off`) |
//! | `API_CACHE_RESOURCE_MODES` | empty | comma list of `resource=mode`, mode `off`, `shadow` or `on`; see [`CacheConfig::resource_modes`] |
//! | `API_CACHE_VERIFY` | empty | comma list of `resource=share`: the share (0 to 1) of hits recomputed in the background and compared |
//! | `API_CACHE_SHADOW_CONCURRENCY` | `16` | shadow and verification runs in flight at once; beyond it they are skipped (counted), never queued |
//! | `API_CACHE_MISMATCH_LOG_SECS` | `300` | a mismatch is logged at WARN once per key per this interval |
//! | `API_CACHE_CONNECT_TIMEOUT_MS` | `50` | Redis connect timeout |
//! | `API_CACHE_TIMEOUT_MS` | `30` | Redis response timeout, per operation |
//! | `API_CACHE_MAX_ENTRY_BYTES` | `1048576` | larger responses are not stored |
//! | `API_CACHE_MEMORY_MAX_BYTES` | `67108864` | bound of the in-memory backend (generations 1/8, entries the rest) |
//! | `API_CACHE_CIRCUIT_FAILURES` | `3` | consecutive failures that open the circuit |
//! | `API_CACHE_CIRCUIT_OPEN_MS` | `1000` | first back-off while open (doubles, max 30 s) |
//! | `API_CACHE_FLIGHT_WAIT_MS` | `5000` | how long a coalesced miss waits for the leader |
//! | `API_CACHE_LEASE_MS` | `0` (off) | cross-instance miss lease; see [`CacheConfig::lease`] |
//! | `API_CACHE_EARLY_REFRESH_BETA` | `1.0` | XFetch early refresh; `0` turns it off |
//! | `API_CACHE_WAIT_REPLICAS` | `all` | replicas that must acknowledge an invalidation (`WAIT`): `all` connected ones, a number N (at most the connected ones), or `0`/`off`; see [`WaitReplicas`] |
//! | `API_CACHE_GENERATION_TTL_SECS` | `604800` (7 days) | lifetime of a generation key; see [`CacheConfig::generation_ttl`] |
//! | `API_CACHE_LOCAL_TIER` | `off` | local tier in front of Redis: `off`, `tracking` (no round trip on a local hit, kept current by `CLIENT TRACKING` pushes; standalone or cluster) or `validate` (each local hit checks its generations with one `MGET`); see [`LocalTier`] |
//! | `API_CACHE_LOCAL_TIER_MAX_BYTES` | `67108864` | bound of the local tier: entries, and the generations known current (1/8) |
//! | `API_CACHE_LOCAL_TIER_PING_MS` | `1000` | `tracking`: interval of the `PING` on each tracking connection; one not answered within `API_CACHE_TIMEOUT_MS` forgets every generation. See [`CacheConfig::local_tier_ping`] |

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::early_refresh::RandomSource;
use crate::error::ConfigError;
use crate::verify::ResourceMode;

mod builder;
mod local;
mod redis;

pub use self::local::LocalTier;
pub use self::redis::WaitReplicas;
pub(crate) use self::redis::{redact, RedisTarget};

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
    /// Redis URL; `None` (and no cluster seeds) selects the in-memory backend.
    pub redis_url: Option<String>,
    /// Seed nodes of a Redis Cluster (`redis://` or `rediss://`, one scheme for all);
    /// non-empty selects the cluster backend. Every command of one lookup or one
    /// invalidation touches one tenant's keys, which share a hash tag and so one slot:
    /// each is one round trip to the master owning that slot. Replicas are never read
    /// (replication is asynchronous: a replica may still hold a generation that an
    /// invalidation already replaced on its master).
    pub redis_cluster_urls: Vec<String>,
    /// First segment of every key (no braces, no whitespace).
    pub prefix: String,
    /// Global switch: when false every cached route answers `X-Cache: BYPASS`
    /// (invalidations are still delivered, so turning it back on serves nothing stale).
    pub enabled: bool,
    /// Resources served uncached (a rollback of one route without a deploy): mode `off`.
    pub disabled_resources: HashSet<String>,
    /// Per-resource modes (`off`, `shadow`, `on`; unnamed resources are `on`). `shadow`
    /// serves every request fresh from the handler while the cache, in the background,
    /// looks up, stores and compares would-be hits with the fresh response: the would-be
    /// hit rate and any missing invalidation, before a cached byte is served. A resource
    /// also in `disabled_resources` must be `off` here.
    pub resource_modes: HashMap<String, ResourceMode>,
    /// Per-resource share (0 to 1) of hits in `on` recomputed in the background and
    /// compared with the entry served; unnamed resources 0.
    pub verify_shares: HashMap<String, f64>,
    /// Shadow and verification runs in flight at once (semaphore permits). One that
    /// finds none is skipped and counted, never queued: this work cannot build up.
    pub shadow_concurrency: usize,
    /// A mismatch is logged at WARN once per key per this interval (counted every time).
    pub mismatch_log_interval: Duration,
    /// Redis connect timeout.
    pub connect_timeout: Duration,
    /// Bound on each Redis operation on a request path.
    pub response_timeout: Duration,
    /// Responses with larger bodies are served but not stored.
    pub max_entry_bytes: usize,
    /// Bound of the in-memory backend, in bytes of stored bodies and headers (and of
    /// generations, which get one eighth of it).
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
    /// How many replicas of the cache's Redis must acknowledge an invalidation before
    /// it counts as delivered. One that is not acknowledged in time stays pending on this
    /// instance (served uncached, redelivered in the background), because a failover to
    /// a replica that never received it would bring the old generations back.
    pub wait_replicas: WaitReplicas,
    /// Lifetime of a generation key, so that generations of tenants and resources that
    /// are no longer used go away (under `volatile-*` eviction nothing else removes them).
    /// An expired generation is recreated with a fresh token that was never used
    /// before: the entries it guarded miss, none is ever served stale. Entries whose TTL
    /// is longer than this may miss before they expire.
    pub generation_ttl: Duration,
    /// Where the early-refresh decision draws its randomness (`rand::random`); set a
    /// seeded or constant source to reproduce decisions. No environment variable.
    pub early_refresh_random: RandomSource,
    /// Where the draw that picks hits for verification comes from (`rand::random`).
    /// No environment variable.
    pub verify_random: RandomSource,
    /// The local tier in front of Redis (off by default); see [`LocalTier`].
    pub local_tier: LocalTier,
    /// Bound of the local tier, in bytes, like [`memory_max_bytes`](Self::memory_max_bytes):
    /// an eighth for the generations known current (`tracking` mode; their keys, tokens
    /// and a per-generation overhead), the rest for entries (keys, bodies, headers and a
    /// measured per-entry overhead).
    pub local_tier_max_bytes: u64,
    /// `tracking` mode: how often each tracking connection is sent a `PING`. One that is
    /// not answered within [`response_timeout`](Self::response_timeout) counts as a lost
    /// connection (every generation is forgotten), so that a silently partitioned or
    /// paused Redis stops local hits at most `local_tier_ping + response_timeout` later.
    pub local_tier_ping: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            redis_url: None,
            redis_cluster_urls: Vec::new(),
            prefix: "api-cache".to_owned(),
            enabled: true,
            disabled_resources: HashSet::new(),
            resource_modes: HashMap::new(),
            verify_shares: HashMap::new(),
            shadow_concurrency: 16,
            mismatch_log_interval: Duration::from_secs(300),
            connect_timeout: Duration::from_millis(50),
            response_timeout: Duration::from_millis(30),
            max_entry_bytes: 1024 * 1024,
            memory_max_bytes: 64 * 1024 * 1024,
            circuit_failures: 3,
            circuit_open_for: Duration::from_millis(1000),
            flight_wait: Duration::from_millis(5000),
            lease: None,
            early_refresh_beta: 1.0,
            wait_replicas: WaitReplicas::All,
            generation_ttl: Duration::from_secs(7 * 24 * 3600),
            early_refresh_random: RandomSource::default(),
            verify_random: RandomSource::default(),
            local_tier: LocalTier::Off,
            local_tier_max_bytes: 64 * 1024 * 1024,
            local_tier_ping: Duration::from_millis(1000),
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
        if let Some(list) = get("REDIS_CLUSTER_URLS") {
            config.redis_cluster_urls = list
                .split(',')
                .map(str::trim)
                .filter(|url| !url.is_empty())
                .map(str::to_owned)
                .collect();
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
        if let Some(list) = get("API_CACHE_RESOURCE_MODES") {
            for (resource, mode) in split_pairs("API_CACHE_RESOURCE_MODES", &list)? {
                let mode = mode.parse().map_err(|()| ConfigError::Env {
                    name: "API_CACHE_RESOURCE_MODES",
                    value: list.clone(),
                    reason: "expected `resource=mode`, mode `off`, `shadow` or `on`",
                })?;
                config.resource_modes.insert(resource, mode);
            }
        }
        if let Some(list) = get("API_CACHE_VERIFY") {
            for (resource, share) in split_pairs("API_CACHE_VERIFY", &list)? {
                let share = share
                    .parse::<f64>()
                    .ok()
                    .filter(|s| (0.0..=1.0).contains(s))
                    .ok_or(ConfigError::Env {
                        name: "API_CACHE_VERIFY",
                        value: list.clone(),
                        reason: "expected `resource=share`, share from 0 to 1",
                    })?;
                config.verify_shares.insert(resource, share);
            }
        }
        if let Some(n) = get("API_CACHE_SHADOW_CONCURRENCY") {
            config.shadow_concurrency = parse_num("API_CACHE_SHADOW_CONCURRENCY", &n)?;
        }
        if let Some(secs) = get("API_CACHE_MISMATCH_LOG_SECS") {
            let secs = parse_num::<u64>("API_CACHE_MISMATCH_LOG_SECS", &secs)?;
            config.mismatch_log_interval = Duration::from_secs(secs);
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
        if let Some(value) = get("API_CACHE_WAIT_REPLICAS") {
            config.wait_replicas = match value.trim().to_ascii_lowercase().as_str() {
                "all" => WaitReplicas::All,
                "off" | "0" => WaitReplicas::Off,
                n => match n.parse::<u32>() {
                    Ok(n) => WaitReplicas::AtLeast(n),
                    Err(_) => {
                        return Err(ConfigError::Env {
                            name: "API_CACHE_WAIT_REPLICAS",
                            value: value.clone(),
                            reason: "expected `all`, `off` or a number of replicas",
                        })
                    }
                },
            };
        }
        if let Some(secs) = get("API_CACHE_GENERATION_TTL_SECS") {
            config.generation_ttl = Duration::from_secs(parse_positive(
                "API_CACHE_GENERATION_TTL_SECS",
                &secs,
                "expected a number of seconds > 0",
            )?);
        }
        if let Some(value) = get("API_CACHE_LOCAL_TIER") {
            config.local_tier = LocalTier::parse(&value).ok_or(ConfigError::Env {
                name: "API_CACHE_LOCAL_TIER",
                value: value.clone(),
                reason: "expected `off`, `tracking` or `validate`",
            })?;
        }
        if let Some(n) = get("API_CACHE_LOCAL_TIER_MAX_BYTES") {
            config.local_tier_max_bytes = parse_num("API_CACHE_LOCAL_TIER_MAX_BYTES", &n)?;
        }
        if let Some(ms) = get("API_CACHE_LOCAL_TIER_PING_MS") {
            config.local_tier_ping = Duration::from_millis(parse_positive(
                "API_CACHE_LOCAL_TIER_PING_MS",
                &ms,
                "expected a number of milliseconds > 0",
            )?);
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
        for resource in &self.disabled_resources {
            let mode = self.resource_modes.get(resource);
            if mode.is_some_and(|mode| *mode != ResourceMode::Off) {
                return Err(ConfigError::ResourceMode(resource.clone()));
            }
        }
        if !self.redis_cluster_urls.is_empty() {
            if self.redis_url.is_some() {
                return Err(ConfigError::StandaloneAndCluster);
            }
            let tls = self.redis_cluster_urls[0].starts_with("rediss://");
            for url in &self.redis_cluster_urls {
                let scheme_ok = if tls {
                    url.starts_with("rediss://")
                } else {
                    url.starts_with("redis://")
                };
                if !scheme_ok {
                    return Err(ConfigError::RedisUrl(redact(url)));
                }
            }
        }
        Ok(())
    }

    /// The Redis the cache talks to, if any.
    pub(crate) fn redis_target(&self) -> Option<RedisTarget<'_>> {
        match (&self.redis_url, self.redis_cluster_urls.as_slice()) {
            (_, []) => self.redis_url.as_deref().map(RedisTarget::Standalone),
            (_, seeds) => Some(RedisTarget::Cluster(seeds)),
        }
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

/// [`parse_num`] for a number that must not be 0; `reason` says so in its unit.
fn parse_positive(
    name: &'static str,
    value: &str,
    reason: &'static str,
) -> Result<u64, ConfigError> {
    match parse_num::<u64>(name, value)? {
        0 => Err(ConfigError::Env {
            name,
            value: value.to_owned(),
            reason,
        }),
        n => Ok(n),
    }
}

fn parse_ms(name: &'static str, value: &str) -> Result<Duration, ConfigError> {
    parse_num::<u64>(name, value).map(Duration::from_millis)
}

/// `a=x, b=y` as pairs; an item without `=` is an error.
fn split_pairs(name: &'static str, list: &str) -> Result<Vec<(String, String)>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| match item.split_once('=') {
            Some((resource, value)) if !resource.trim().is_empty() => {
                Ok((resource.trim().to_owned(), value.trim().to_owned()))
            }
            _ => Err(ConfigError::Env {
                name,
                value: list.to_owned(),
                reason: "expected a comma list of `resource=value`",
            }),
        })
        .collect()
}

pub(crate) fn split_list(list: &str) -> HashSet<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
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
    fn reads_cluster_seeds_and_refuses_mixed_targets() {
        let config = CacheConfig::from_lookup(|n| {
            (n == "REDIS_CLUSTER_URLS").then(|| " redis://a:1 ,redis://b:2,, ".into())
        })
        .unwrap();
        assert_eq!(config.redis_cluster_urls, ["redis://a:1", "redis://b:2"]);
        assert!(matches!(
            config.redis_target(),
            Some(RedisTarget::Cluster(seeds)) if seeds.len() == 2
        ));
        let both = CacheConfig::from_lookup(|n| match n {
            "REDIS_CLUSTER_URLS" => Some("redis://a:1".into()),
            "REDIS_URL" => Some("redis://c:3".into()),
            _ => None,
        });
        assert!(matches!(both, Err(ConfigError::StandaloneAndCluster)));
        let mixed = CacheConfig::from_lookup(|n| {
            (n == "REDIS_CLUSTER_URLS").then(|| "rediss://a:1,redis://b:2".into())
        });
        assert!(matches!(mixed, Err(ConfigError::RedisUrl(_))));
        let not_redis =
            CacheConfig::from_lookup(|n| (n == "REDIS_CLUSTER_URLS").then(|| "http://a:1".into()));
        assert!(matches!(not_redis, Err(ConfigError::RedisUrl(_))));
        assert!(CacheConfig::default().redis_target().is_none());
    }

    #[test]
    fn reads_replica_waiting_and_generation_ttl() {
        let read = |name: &'static str, value: &'static str| {
            CacheConfig::from_lookup(move |n| (n == name).then(|| value.to_owned()))
        };
        let defaults = CacheConfig::default();
        assert_eq!(defaults.wait_replicas, WaitReplicas::All);
        assert_eq!(defaults.generation_ttl, Duration::from_secs(604_800));
        for (value, expected) in [
            ("all", WaitReplicas::All),
            ("ALL", WaitReplicas::All),
            ("off", WaitReplicas::Off),
            ("0", WaitReplicas::Off),
            ("2", WaitReplicas::AtLeast(2)),
        ] {
            let config = read("API_CACHE_WAIT_REPLICAS", value).unwrap();
            assert_eq!(config.wait_replicas, expected, "{value}");
        }
        assert!(read("API_CACHE_WAIT_REPLICAS", "some").is_err());
        assert_eq!(WaitReplicas::AtLeast(2).wanted(1), 1);
        assert_eq!(WaitReplicas::All.wanted(0), 0);
        let config = read("API_CACHE_GENERATION_TTL_SECS", "60").unwrap();
        assert_eq!(config.generation_ttl, Duration::from_secs(60));
        assert!(read("API_CACHE_GENERATION_TTL_SECS", "0").is_err());
    }

    #[test]
    fn reads_modes_shares_and_refuses_conflicts() {
        let config = CacheConfig::from_lookup(|n| match n {
            "API_CACHE_RESOURCE_MODES" => {
                Some("contacts=shadow, templates=off,analytics=on".into())
            }
            "API_CACHE_VERIFY" => Some("analytics=0.05".into()),
            "API_CACHE_DISABLED_RESOURCES" => Some("templates".into()),
            "API_CACHE_SHADOW_CONCURRENCY" => Some("3".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(config.resource_modes["contacts"], ResourceMode::Shadow);
        assert_eq!(config.resource_modes["templates"], ResourceMode::Off);
        assert_eq!(config.verify_shares["analytics"], 0.05);
        assert_eq!(config.shadow_concurrency, 3);
        let read = |name: &'static str, value: &'static str| {
            CacheConfig::from_lookup(move |n| (n == name).then(|| value.to_owned()))
        };
        assert!(read("API_CACHE_RESOURCE_MODES", "contacts").is_err());
        assert!(read("API_CACHE_RESOURCE_MODES", "contacts=maybe").is_err());
        assert!(read("API_CACHE_VERIFY", "contacts=1.5").is_err());
        let conflict = CacheConfig::from_lookup(|n| match n {
            "API_CACHE_RESOURCE_MODES" => Some("contacts=shadow".into()),
            "API_CACHE_DISABLED_RESOURCES" => Some("contacts".into()),
            _ => None,
        });
        assert!(matches!(conflict, Err(ConfigError::ResourceMode(_))));
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
