//! Building caches for behaviour tests: the same test body runs against a private
//! redis-server and against the in-memory backend.

use std::time::Duration;

use cache_runtime::{Cache, CacheConfig};

use crate::RedisServer;

/// Which store a test runs against.
pub enum TestBackend {
    /// A private redis-server, kept alive as long as this value.
    Redis(RedisServer),
    /// The in-process backend.
    Memory,
}

impl TestBackend {
    /// A fresh private redis-server.
    pub fn redis() -> Self {
        TestBackend::Redis(RedisServer::start())
    }

    /// The server, for Redis backends.
    pub fn server(&self) -> Option<&RedisServer> {
        match self {
            TestBackend::Redis(server) => Some(server),
            TestBackend::Memory => None,
        }
    }

    /// A config for this backend. Timeouts are generous: these machines are shared and
    /// a slow answer must not turn an expected hit into a miss. Fault tests set their
    /// own.
    pub fn config(&self) -> CacheConfig {
        let config = CacheConfig::default()
            .with_response_timeout(Duration::from_secs(2))
            .with_connect_timeout(Duration::from_secs(2));
        match self {
            TestBackend::Redis(server) => config.with_redis_url(server.url()),
            TestBackend::Memory => config,
        }
    }

    /// A cache on this backend with [`config`](Self::config).
    pub async fn cache(&self) -> Cache {
        Cache::new(self.config()).await.expect("cache")
    }
}

/// Defines `$name` twice: `mod $name { redis, memory }`, each running `$body(backend)`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                super::$body($crate::backends::TestBackend::redis()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$body($crate::backends::TestBackend::Memory).await;
            }
        }
    };
}
