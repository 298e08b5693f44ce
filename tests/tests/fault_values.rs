//! Fault injection (issue 5): values that are not ours planted under real keys. An
//! entry key holding a truncated entry, another handler's entry, another tenant's entry,
//! an entry of another format version, random bytes, JSON, an empty string, a list or a
//! hash; a generation key holding bytes that are no token, or a list. Each is a miss
//! with the correct uncached answer (never a 500, never a panic, never the planted
//! data), counted as the README's failure-mode table says (with one WARN per corrupt
//! value), and then overwritten so that caching resumes: the next reads hit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_runtime::stats::CounterSnapshot;
use cache_runtime::{Cache, CacheConfig};
use cache_tests::versioned_api::Api;
use cache_tests::RedisServer;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// The messages of the cache's WARN events, recorded by a subscriber set for the test's
/// own thread. The lookup that finds a foreign value runs in the request future, which
/// the test's thread polls (tower `oneshot`), so its events land here; other tests of
/// this binary, on other threads, do not.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Warnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let metadata = event.metadata();
        if *metadata.level() == tracing::Level::WARN && metadata.target() == "api_cache" {
            let mut message = Message(String::new());
            event.record(&mut message);
            self.0.lock().unwrap().push(message.0);
        }
    }
}

impl Warnings {
    /// Records WARN events of this thread until the guard is dropped.
    fn capture() -> (Warnings, tracing::subscriber::DefaultGuard) {
        let warnings = Warnings::default();
        let subscriber = tracing_subscriber::registry().with(warnings.clone());
        (warnings, tracing::subscriber::set_default(subscriber))
    }

    /// The messages recorded since the last call.
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// The README's WARN for a value under an entry key that is not a valid entry.
const CORRUPT_WARNING: &str = "not a valid entry";

fn config(server: &RedisServer) -> CacheConfig {
    CacheConfig::default()
        .with_redis_url(server.url())
        .with_response_timeout(Duration::from_secs(2))
        .with_connect_timeout(Duration::from_secs(2))
}

struct Setup {
    server: RedisServer,
    api: Api,
}

async fn setup() -> Setup {
    let server = RedisServer::start();
    let cache = Cache::new(config(&server)).await.unwrap();
    let api = Api::new(&cache);
    Setup { server, api }
}

impl Setup {
    /// Caches `resource` of `tenant` and returns its entry key.
    async fn warm(&self, tenant: &str, resource: &str) -> String {
        self.api.read(tenant, resource, None).await;
        self.api
            .read_until_hit(tenant, resource, None, Duration::from_secs(10))
            .await;
        cache_tests::versioned_api::wait_until_stored(&self.server, tenant, resource);
        let mut keys = self.entry_keys(tenant, resource);
        assert_eq!(keys.len(), 1, "{keys:?}");
        keys.remove(0)
    }

    fn entry_keys(&self, tenant: &str, resource: &str) -> Vec<String> {
        self.server
            .keys(&format!("api-cache:{{t.{tenant}}}:e:{resource}:*"))
    }

    fn raw(&self, key: &str) -> Option<Vec<u8>> {
        redis::cmd("GET")
            .arg(key)
            .query(&mut self.server.connection())
            .unwrap_or(None)
    }

    fn set_raw(&self, key: &str, value: &[u8]) {
        let mut conn = self.server.connection();
        let _: () = redis::cmd("DEL").arg(key).query(&mut conn).unwrap();
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query(&mut conn)
            .unwrap();
    }

    /// Another instance of the API over the same Redis and database. A fresh instance
    /// has no in-process flights, so what it answers comes from Redis.
    async fn instance(&self) -> (Cache, Api) {
        let cache = Cache::new(config(&self.server)).await.unwrap();
        let api = Api::with_db(&cache, self.api.db.clone());
        (cache, api)
    }

    /// After a value was planted: a miss with the correct answer (the handler ran
    /// once), counted; then the entry is overwritten with ours and the next reader hits
    /// it from Redis (the handler idle). Returns the counters of the instance that missed
    /// and stored.
    /// A foreign value under a generation key: the read that finds it repairs the key and
    /// is served uncached (it must not store under a token it wrote itself, in case an
    /// invalidation raced with the repair); the next read caches as usual.
    async fn expect_repair_then_recovery(
        &self,
        warnings: &Warnings,
        tenant: &str,
        resource: &str,
        what: &str,
    ) -> CounterSnapshot {
        let runs = self.api.db.runs();
        let (cache, api) = self.instance().await;
        let read = api.read(tenant, resource, None).await;
        assert_eq!(read.x_cache(), "MISS", "{what}: the repairing read");
        assert_eq!(self.api.db.runs(), runs + 1, "{what}");
        // README: "`errors`; a `WARN replaced generation values that were not ours`".
        let counted = cache.stats().totals;
        assert_eq!(
            (
                counted.misses,
                counted.errors,
                counted.corrupt,
                counted.stores
            ),
            (1, 1, 0, 0),
            "{what}: {counted:?}"
        );
        let warned = warnings.take();
        assert_eq!(warned.len(), 1, "{what}: {warned:?}");
        assert!(
            warned[0].contains("replaced generation values that were not ours"),
            "{what}: {warned:?}"
        );
        let generation = format!("api-cache:{{t.{tenant}}}:g:{resource}");
        let repaired: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&generation)
            .query(&mut self.server.connection())
            .unwrap();
        assert!(
            repaired
                .is_some_and(|t| !t.is_empty() && t.len() <= 64 && std::str::from_utf8(&t).is_ok()),
            "{what}: the generation key holds a token of ours again"
        );
        self.expect_miss_then_recovery(tenant, resource, what).await
    }

    async fn expect_miss_then_recovery(
        &self,
        tenant: &str,
        resource: &str,
        what: &str,
    ) -> CounterSnapshot {
        let runs = self.api.db.runs();
        let planted = self
            .entry_keys(tenant, resource)
            .first()
            .and_then(|k| self.raw(k));
        let (cache, api) = self.instance().await;
        let read = api.read(tenant, resource, None).await;
        assert_eq!(read.x_cache(), "MISS", "{what}");
        assert_eq!(self.api.db.runs(), runs + 1, "{what}");
        // The store runs off the request path: wait until ours is back under the key.
        cache_tests::redis_server::wait_until(
            Duration::from_secs(10),
            &format!("{what}: overwritten"),
            || {
                let keys = self.entry_keys(tenant, resource);
                keys.len() == 1
                    && self.raw(&keys[0]).is_some_and(|v| {
                        v.starts_with(b"AC\x02") && v.len() > 40 && Some(&v) != planted.as_ref()
                    })
            },
        );
        let (_, fresh) = self.instance().await;
        assert_eq!(
            fresh.read(tenant, resource, None).await.x_cache(),
            "HIT",
            "{what}: the overwritten entry is not served"
        );
        assert_eq!(
            self.api.db.runs(),
            runs + 1,
            "{what}: the hit ran the handler"
        );
        cache.stats().totals
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_string_values_under_an_entry_key_are_misses_then_overwritten() {
    let s = setup().await;
    let key = s.warm("org_1", "contacts").await;
    let ours = s.raw(&key).unwrap();
    let templates = s.raw(&s.warm("org_1", "templates").await).unwrap();
    let other_tenant = s.raw(&s.warm("org_2", "contacts").await).unwrap();
    let mut other_version = ours.clone();
    other_version[2] = 3;
    let random: Vec<u8> = (0..200u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("truncated entry", ours[..ours.len() / 2].to_vec(), true),
        ("header only", ours[..3].to_vec(), true),
        ("another handler's entry", templates, true),
        ("another version's entry", other_version, true),
        ("random bytes", random, true),
        ("JSON", br#"{"tenant":"org_1","version":99}"#.to_vec(), true),
        ("empty string", Vec::new(), true),
        // Same key digest, other generations: not corrupt, just not valid here.
        ("another tenant's entry", other_tenant, false),
    ];
    let (warnings, _guard) = Warnings::capture();
    for (what, value, corrupt) in cases {
        s.set_raw(&key, &value);
        let counted = s.expect_miss_then_recovery("org_1", "contacts", what).await;
        let warned = warnings.take();
        if corrupt {
            // README: "`corrupt` and `errors`, one `WARN` per value".
            assert_eq!(
                (counted.misses, counted.corrupt, counted.errors),
                (1, 1, 1),
                "{what}: {counted:?}"
            );
            assert_eq!(warned.len(), 1, "{what}: {warned:?}");
            assert!(warned[0].contains(CORRUPT_WARNING), "{what}: {warned:?}");
        } else {
            // README: "`misses` only".
            assert_eq!(
                (counted.misses, counted.corrupt, counted.errors),
                (1, 0, 0),
                "{what}: {counted:?}"
            );
            assert_eq!(warned, Vec::<String>::new(), "{what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_types_under_an_entry_key_are_misses_then_overwritten() {
    let s = setup().await;
    let key = s.warm("org_1", "contacts").await;
    let plant: [(&str, &[&str]); 4] = [
        ("a list", &["RPUSH", &key, "a", "b"]),
        ("a hash", &["HSET", &key, "field", "value"]),
        ("a set", &["SADD", &key, "member"]),
        ("a stream", &["XADD", &key, "*", "field", "value"]),
    ];
    let (warnings, _guard) = Warnings::capture();
    for (what, command) in plant {
        let _: i64 = s.server.cmd(&["DEL", &key]);
        let _: redis::Value = s.server.cmd(command);
        let counted = s.expect_miss_then_recovery("org_1", "contacts", what).await;
        // README: "`misses` only" (MGET answers nil for a key of another type).
        assert_eq!(
            (counted.misses, counted.corrupt, counted.errors),
            (1, 0, 0),
            "{what}: {counted:?}"
        );
        assert_eq!(warnings.take(), Vec::<String>::new(), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_values_under_a_generation_key_are_misses_then_overwritten() {
    let s = setup().await;
    s.warm("org_1", "contacts").await;
    let (warnings, _guard) = Warnings::capture();
    let generation = "api-cache:{t.org_1}:g:contacts";
    let not_a_token: &[u8] = &[0xff, 0xfe, 0x00, 0x80];
    let too_long = vec![b'g'; 200];
    for (what, value) in [
        ("non-UTF-8 bytes", not_a_token.to_vec()),
        ("an over-long token", too_long),
        ("an empty token", Vec::new()),
    ] {
        s.set_raw(generation, &value);
        s.expect_repair_then_recovery(&warnings, "org_1", "contacts", what)
            .await;
    }
    let _: i64 = s.server.cmd(&["DEL", generation]);
    let _: i64 = s.server.cmd(&["RPUSH", generation, "x"]);
    s.expect_repair_then_recovery(&warnings, "org_1", "contacts", "a list")
        .await;
    // The invalidation still works on the recovered generation.
    s.api.change("org_1", "contacts").await;
    assert_eq!(
        s.api.read("org_1", "contacts", None).await.x_cache(),
        "MISS"
    );
}
