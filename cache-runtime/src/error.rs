//! Error types. Request paths never surface these to an HTTP client: a cache fault is a
//! miss or a bypass plus an error count. They reach the caller only from configuration
//! and from explicit operations such as [`Cache::invalidate`](crate::Cache::invalidate).

use std::time::Duration;

/// A configuration value that cannot be used. Returned when a [`Cache`](crate::Cache) is built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `REDIS_URL` (or the builder's URL) is not a `redis://` / `rediss://` URL.
    #[error("invalid Redis URL: {0}")]
    RedisUrl(String),
    /// Both `REDIS_URL` and `REDIS_CLUSTER_URLS` are set: which one is meant cannot be
    /// guessed, and caching into the wrong one would miss every invalidation.
    #[error("both REDIS_URL and REDIS_CLUSTER_URLS are set: set one")]
    StandaloneAndCluster,
    /// An environment variable holds a value of the wrong form.
    #[error("environment variable {name}={value:?}: {reason}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
    /// The key prefix must be non-empty and free of `{`, `}` and whitespace, so that
    /// hash tags stay where the key layout puts them.
    #[error("invalid key prefix {0:?}: use 1-64 characters without braces or whitespace")]
    Prefix(String),
    /// A resource is switched off (`API_CACHE_DISABLED_RESOURCES`) and given another
    /// mode (`API_CACHE_RESOURCE_MODES`): which one is meant cannot be guessed.
    #[error("resource {0:?} is disabled and given another mode in API_CACHE_RESOURCE_MODES")]
    ResourceMode(String),

    /// A Redis-backed cache must be created inside a Tokio runtime.
    #[error("a Redis-backed cache must be created inside a Tokio runtime")]
    NoRuntime,
}

/// A failure of the cache store. Counted in stats; on request paths it becomes a miss.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// No connection to Redis has been established yet.
    #[error("not connected to Redis")]
    NotConnected,
    /// The operation did not answer within the configured timeout.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed or was lost (counts toward opening the circuit).
    #[error("Redis connection error: {0}")]
    Connection(String),
    /// Redis answered with an error reply (out of memory, read-only replica, wrong
    /// type): the server is up, so this does not open the circuit.
    #[error("Redis refused: {0}")]
    Refused(String),
    /// The circuit breaker is open: Redis is not being tried right now.
    #[error("circuit open: Redis is not tried until it recovers")]
    CircuitOpen,
    /// The primary took an invalidation but fewer replicas than configured
    /// ([`WaitReplicas`](crate::WaitReplicas)) acknowledged it in time: a failover now
    /// could lose it, so it is not counted as delivered. The server is up: this does
    /// not open the circuit.
    #[error(
        "invalidation not confirmed: {acknowledged} of {wanted} replicas acknowledged it in time"
    )]
    NotReplicated {
        /// Replicas that acknowledged it.
        acknowledged: u64,
        /// Replicas waited for.
        wanted: u64,
    },
}

impl BackendError {
    /// True for faults that say Redis is unreachable or unresponsive, as opposed to a
    /// server that answered with an error.
    pub fn is_unavailability(&self) -> bool {
        !matches!(
            self,
            BackendError::Refused(_) | BackendError::NotReplicated { .. }
        )
    }
}

impl From<redis::RedisError> for BackendError {
    fn from(err: redis::RedisError) -> Self {
        if err.is_io_error()
            || err.is_timeout()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_unrecoverable_error()
        {
            BackendError::Connection(err.to_string())
        } else {
            BackendError::Refused(err.to_string())
        }
    }
}

/// Why an explicit invalidation did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvalidationError {
    /// A resource name outside `[a-z0-9_-]{1,64}`: nothing can be cached under it.
    #[error(transparent)]
    InvalidResource(#[from] crate::key::InvalidResource),
    /// Redis could not be reached now. The invalidation is remembered and delivered in
    /// the background; until then this instance serves the affected tenant and resources
    /// uncached, so no reader of this instance sees stale data.
    #[error("invalidation deferred: {0}")]
    Deferred(BackendError),
}
