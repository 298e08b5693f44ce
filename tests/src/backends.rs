//! Building caches for behaviour tests: the same test body runs against a private
//! redis-server, the in-memory backend and (with [`all_backends!`](crate::all_backends)) a Redis Cluster.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, CacheConfig};

use crate::redis_cluster::RedisCluster;
use crate::RedisServer;

/// Which store a test runs against.
pub enum TestBackend {
    /// A private redis-server, kept alive as long as this value.
    Redis(RedisServer),
    /// The in-process backend.
    Memory,
    /// The test binary's shared three-master cluster ([`RedisCluster::shared`]), under a
    /// key prefix of this test's own, so that tests running at once never meet.
    Cluster {
        /// The shared cluster.
        cluster: &'static RedisCluster,
        /// This test's key prefix.
        prefix: String,
    },
}

impl TestBackend {
    /// A fresh private redis-server.
    pub fn redis() -> Self {
        TestBackend::Redis(RedisServer::start())
    }

    /// The shared cluster, under a fresh key prefix.
    pub fn cluster() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        TestBackend::Cluster {
            cluster: RedisCluster::shared(),
            prefix: format!("test{}", NEXT.fetch_add(1, Ordering::Relaxed)),
        }
    }

    /// The server, for the standalone Redis backend.
    pub fn server(&self) -> Option<&RedisServer> {
        match self {
            TestBackend::Redis(server) => Some(server),
            TestBackend::Memory | TestBackend::Cluster { .. } => None,
        }
    }

    /// The cluster, for the cluster backend.
    pub fn redis_cluster(&self) -> Option<&RedisCluster> {
        match self {
            TestBackend::Cluster { cluster, .. } => Some(cluster),
            TestBackend::Redis(_) | TestBackend::Memory => None,
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
            TestBackend::Cluster { cluster, prefix } => config
                .with_redis_cluster_urls(cluster.seed_urls())
                .with_prefix(prefix.clone()),
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

/// Like [`both_backends!`], plus a third run on the test binary's shared Redis Cluster:
/// `mod $name { redis, memory, cluster }`.
#[macro_export]
macro_rules! all_backends {
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

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                super::$body($crate::backends::TestBackend::cluster()).await;
            }
        }
    };
}
