//! `rediss://` (issue 2): the Redis backend over TLS, verifying the server's certificate
//! against the platform roots plus `SSL_CERT_FILE` (here, the test server's self-signed
//! certificate). Its own test binary because it sets a process environment variable.

use std::time::Duration;

use cache_runtime::testing::Tenant;
use cache_runtime::testing::{CachedResponse, Lookup};
use cache_runtime::{Cache, CacheConfig};
use cache_tests::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_over_tls_with_a_verified_certificate() {
    let server = RedisServer::start_tls();
    let config = CacheConfig::default()
        .with_redis_url(server.tls_url())
        .with_connect_timeout(Duration::from_secs(5))
        .with_response_timeout(Duration::from_secs(5));

    // Not trusted yet: the certificate is really verified, so nothing connects.
    let untrusting = Cache::new(config.clone())
        .await
        .expect("rediss:// is accepted");
    assert!(
        !untrusting.is_available().await,
        "an unknown CA must be refused"
    );

    // This binary has one test, so setting the process environment is safe.
    std::env::set_var("SSL_CERT_FILE", server.certificate());
    let cache = Cache::new(config).await.expect("rediss:// is accepted");
    assert_eq!(cache.backend_name(), "redis");
    assert!(
        cache.is_available().await,
        "TLS connection with a verified certificate"
    );
    let key = cache
        .key(Tenant::Scoped("org_1"), "templates")
        .unwrap()
        .request("GET", "/api/templates", None)
        .build();
    let Lookup::Miss(ticket) = cache.lookup(&key).await else {
        panic!("cold key must miss")
    };
    assert!(cache
        .store(ticket, CachedResponse::ok("[]"), Duration::from_secs(60))
        .await
        .unwrap());
    assert!(matches!(cache.lookup(&key).await, Lookup::Hit(_)));
    assert_eq!(cache.stats().totals.errors, 0);
}
