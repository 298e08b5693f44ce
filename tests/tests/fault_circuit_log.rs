//! Fault injection (issue 5): circuit breaker state changes are logged once per
//! outage, not once per request, and counted in stats. Its own test binary: the test
//! installs a thread-local tracing subscriber, which other tests running in parallel
//! threads of the same binary would race with for the callsites' interest cache.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, CacheConfig};
use cache_tests::versioned_api::Api;
use cache_tests::RedisServer;

const TIMEOUT: Duration = Duration::from_millis(200);
const OPEN_FOR: Duration = Duration::from_millis(500);

/// A `MakeWriter` that keeps every formatted event.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .matches(needle)
            .count()
    }
}

/// Current-thread runtime: every event of the cache (spawned stores included) is
/// emitted on this thread, under this test's subscriber.
#[tokio::test]
async fn circuit_transitions_are_logged_once_per_outage() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut server = RedisServer::start();
    let cache = Cache::new(
        CacheConfig::default()
            .with_redis_url(server.url())
            .with_response_timeout(TIMEOUT)
            .with_connect_timeout(TIMEOUT)
            .with_circuit(3, OPEN_FOR),
    )
    .await
    .unwrap();
    let api = Api::new(&cache);
    api.read("org_1", "contacts", None).await;
    api.read_until_hit("org_1", "contacts", None, Duration::from_secs(10))
        .await;

    server.kill();
    let outage = Instant::now();
    let mut reads = 0;
    while outage.elapsed() < OPEN_FOR * 4 {
        api.read("org_1", "contacts", None).await;
        reads += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(reads > 20);
    assert_eq!(
        logs.count("circuit opened"),
        1,
        "{reads} reads in the outage, {:?}; logs:\n{}",
        cache.stats().circuit_opened,
        String::from_utf8_lossy(&logs.0.lock().unwrap())
    );
    assert_eq!(logs.count("circuit closed"), 0);

    server.start_again();
    api.read_until_hit("org_1", "contacts", None, Duration::from_secs(40))
        .await;
    assert_eq!(logs.count("circuit opened"), 1);
    assert_eq!(logs.count("circuit closed"), 1);
    assert_eq!(cache.stats().circuit_opened, 1);
}
