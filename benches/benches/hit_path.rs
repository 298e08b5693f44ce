//! Hit path, against the floor and the peer, in one run (BENCHMARKS.md §1, §2).
//!
//! Redis: our full `Cache::lookup` of a stored 2 KB response (one MGET of the two
//! generation keys and the entry, decode, generation check) against a raw redis-rs GET of
//! the same stored bytes on the same kind of connection (a `ConnectionManager`: the
//! floor), a raw MGET of the same three keys (what Redis itself charges for the extra
//! keys), and the `cached` crate's `AsyncRedisCache::cache_get` of the same body (the
//! peer). Memory: our lookup against a raw `get` from a moka map (moka's `sync::Cache`
//! with a per-entry expiry, as the backend once used: the floor of a concurrent bounded
//! map read; the backend's own store is `backend/store.rs`). On a local Redis Cluster (§1b), the same lookup against a raw GET through
//! the cluster client. The contenders run interleaved, round after round, so a change in the
//! machine's load hits all of them alike; criterion then measures each one alone.

// The helpers the runtime's own benchmarks share (timing rounds, table rows).
#[path = "../../cache-runtime/benches/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_runtime::testing::{CacheKey, CachedResponse, Lookup, Tenant};
use cache_runtime::{Cache, CacheConfig};
use cached::{AsyncRedisCache, ConcurrentCachedAsync};
use criterion::Criterion;
use futures_util::FutureExt;
use moka::sync::Cache as MokaCache;
use redis::aio::ConnectionManager;
use redis::Value;
use std::hint::black_box;

use support::{latency_row, pick, ratio, row, us, verdict, Samples};

const FINGERPRINT: &str = "3f1c9a0be4d27788";

fn request_key(cache: &Cache, tenant: &str, query: &str) -> CacheKey {
    cache
        .key(Tenant::Scoped(tenant), "templates")
        .unwrap()
        .request("GET", "/api/templates", Some(query))
        .part("fingerprint", FINGERPRINT)
        .build()
}

/// Stores `response` under `key`, with a computation time of a few milliseconds like a
/// real handler's (so the early-refresh draw runs on every hit, as in production).
async fn store(cache: &Cache, key: &CacheKey, response: CachedResponse) {
    let Lookup::Miss(ticket) = cache.lookup(key).await else {
        panic!("expected a miss before storing");
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(cache
        .store(ticket, response, Duration::from_secs(3600))
        .await
        .unwrap());
    assert!(matches!(cache.lookup(key).await, Lookup::Hit(_)));
}

struct RedisFixture {
    cache: Cache,
    key: CacheKey,
    floor: ConnectionManager,
    peer: AsyncRedisCache<String, String>,
    peer_key: String,
    stored_len: usize,
    peer_len: usize,
}

impl RedisFixture {
    async fn new(url: &str) -> RedisFixture {
        let cache = Cache::new(support::redis_config(url)).await.unwrap();
        let key = request_key(&cache, "org_1", "page=1&limit=50");
        let response = support::response_2k();
        let body = String::from_utf8(response.body.to_vec()).unwrap();
        store(&cache, &key, response).await;

        let client = redis::Client::open(url).unwrap();
        let mut floor = ConnectionManager::new(client).await.unwrap();
        let stored: Vec<u8> = redis::cmd("GET")
            .arg(key.entry_key())
            .query_async(&mut floor)
            .await
            .unwrap();

        let peer: AsyncRedisCache<String, String> =
            AsyncRedisCache::new("templates", Duration::from_secs(3600))
                .connection_string(url)
                .build()
                .await
                .unwrap();
        let peer_key = "org_1:/api/templates?limit=50&page=1".to_owned();
        peer.cache_set(peer_key.clone(), body.clone())
            .await
            .unwrap();
        assert_eq!(peer.cache_get(&peer_key).await.unwrap(), Some(body));
        let peer_len: usize = redis::cmd("STRLEN")
            .arg(format!("cached-redis-store:templates:{peer_key}"))
            .query_async(&mut floor)
            .await
            .unwrap();

        RedisFixture {
            cache,
            key,
            floor,
            peer,
            peer_key,
            stored_len: stored.len(),
            peer_len,
        }
    }

    async fn ours(&self) {
        lookup_hit(&self.cache, &self.key).await;
    }

    async fn floor_get(&self) {
        raw_get(self.floor.clone(), self.key.entry_key()).await;
    }

    async fn floor_mget(&self) {
        let values: Vec<Value> = redis::cmd("MGET")
            .arg(self.key.generation_keys())
            .arg(self.key.entry_key())
            .query_async(&mut self.floor.clone())
            .await
            .unwrap();
        black_box(values);
    }

    async fn peer_get(&self) {
        let value = self.peer.cache_get(&self.peer_key).await.unwrap();
        black_box(value.unwrap());
    }
}

const REDIS_CONTENDERS: [&str; 4] = [
    "floor: redis-rs GET",
    "raw MGET of the same 3 keys",
    "peer: cached AsyncRedisCache",
    "ours: Cache::lookup",
];

async fn redis_interleaved(fixture: &RedisFixture) -> Vec<Samples> {
    let rounds = pick(60, 20);
    let batch = pick(200, 100);
    let mut samples = vec![Samples::default(); REDIS_CONTENDERS.len()];
    // Warm-up: connections established, allocator and branch predictors settled.
    for _ in 0..500 {
        fixture.ours().await;
        fixture.floor_get().await;
        fixture.floor_mget().await;
        fixture.peer_get().await;
    }
    for round in 0..rounds {
        for offset in 0..REDIS_CONTENDERS.len() {
            let which = (round + offset) % REDIS_CONTENDERS.len();
            for _ in 0..batch {
                let started = Instant::now();
                match which {
                    0 => fixture.floor_get().await,
                    1 => fixture.floor_mget().await,
                    2 => fixture.peer_get().await,
                    _ => fixture.ours().await,
                }
                samples[which].push(started.elapsed());
            }
        }
    }
    samples
}

fn report_redis(fixture: &RedisFixture, samples: &[Samples]) {
    println!(
        "\n== §1 hit path, Redis (2 KB body; entry {} bytes stored, peer value {} bytes), per operation, interleaved",
        fixture.stored_len, fixture.peer_len
    );
    for (name, s) in REDIS_CONTENDERS.iter().zip(samples) {
        latency_row(name, s);
    }
    let (floor, mget, peer, ours) = (&samples[0], &samples[1], &samples[2], &samples[3]);
    let vs_floor = ratio(ours.p50(), floor.p50());
    let vs_peer = ratio(ours.p50(), peer.p50());
    verdict("ours/floor p50", vs_floor, "<= 1.15", vs_floor <= 1.15);
    verdict("ours/peer p50", vs_peer, "<= 1.10", vs_peer <= 1.10);
    println!(
        "     (raw MGET/floor p50 = {:.3}: the part of the gap Redis charges for the two generation keys;\n      ours - raw MGET p50 = {} us: our client-side work per hit)",
        ratio(mget.p50(), floor.p50()),
        us(ours.p50().saturating_sub(mget.p50()))
    );
}

/// §1b: the same lookup against a real local Redis Cluster (3 masters, the test
/// support's), and its floor: a raw GET of the stored entry through redis-rs's async
/// cluster client, which routes it to the same master as our MGET (the tenant's slot).
struct ClusterFixture {
    cache: Cache,
    key: CacheKey,
    floor: redis::cluster_async::ClusterConnection,
}

impl ClusterFixture {
    async fn new(seeds: Vec<String>) -> ClusterFixture {
        let config = CacheConfig::default()
            .with_redis_cluster_urls(seeds.clone())
            .with_response_timeout(Duration::from_secs(1));
        let cache = Cache::new(config).await.unwrap();
        let key = request_key(&cache, "org_1", "page=1&limit=50");
        store(&cache, &key, support::response_2k()).await;
        let floor = redis::cluster::ClusterClient::new(seeds)
            .unwrap()
            .get_async_connection()
            .await
            .unwrap();
        ClusterFixture { cache, key, floor }
    }

    async fn ours(&self) {
        lookup_hit(&self.cache, &self.key).await;
    }

    async fn floor_get(&self) {
        raw_get(self.floor.clone(), self.key.entry_key()).await;
    }
}

/// Our lookup, which must be a hit.
async fn lookup_hit(cache: &Cache, key: &CacheKey) {
    match cache.lookup(key).await {
        Lookup::Hit(entry) => {
            black_box(entry);
        }
        other => panic!("expected a hit, got {other:?}"),
    }
}

/// The floor: a raw GET of the stored entry's bytes.
async fn raw_get(mut connection: impl redis::aio::ConnectionLike, key: &str) {
    let bytes: Vec<u8> = redis::cmd("GET")
        .arg(key)
        .query_async(&mut connection)
        .await
        .unwrap();
    black_box(bytes);
}

async fn cluster_interleaved(fixture: &ClusterFixture) -> (Samples, Samples) {
    let rounds = pick(60, 20);
    let batch = pick(200, 100);
    let (mut floor, mut ours) = (Samples::default(), Samples::default());
    for _ in 0..500 {
        fixture.ours().await;
        fixture.floor_get().await;
    }
    for round in 0..rounds {
        for offset in 0..2 {
            for _ in 0..batch {
                let started = Instant::now();
                if (round + offset) % 2 == 0 {
                    fixture.floor_get().await;
                    floor.push(started.elapsed());
                } else {
                    fixture.ours().await;
                    ours.push(started.elapsed());
                }
            }
        }
    }
    (floor, ours)
}

fn report_cluster(floor: &Samples, ours: &Samples) {
    println!("\n== §1b hit path, Redis Cluster (3 masters, local), per operation, interleaved");
    latency_row("floor: cluster client GET", floor);
    latency_row("ours: Cache::lookup", ours);
    let vs_floor = ratio(ours.p50(), floor.p50());
    verdict(
        "ours/floor p50 on a cluster",
        vs_floor,
        "<= 1.15",
        vs_floor <= 1.15,
    );
}

struct MemoryFixture {
    cache: Cache,
    key: CacheKey,
    raw: MokaCache<String, (Arc<CachedResponse>, Duration)>,
    raw_key: String,
}

struct RawExpiry;

impl moka::Expiry<String, (Arc<CachedResponse>, Duration)> for RawExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &(Arc<CachedResponse>, Duration),
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.1)
    }
}

impl MemoryFixture {
    async fn new() -> MemoryFixture {
        let cache = Cache::new(CacheConfig::default()).await.unwrap();
        let key = request_key(&cache, "org_1", "page=1&limit=50");
        store(&cache, &key, support::response_2k()).await;
        // Built as the backend builds its entry map: weighed by bytes, expiring per entry.
        let raw = MokaCache::builder()
            .max_capacity(64 * 1024 * 1024)
            .weigher(|k: &String, v: &(Arc<CachedResponse>, Duration)| {
                (k.len() + v.0.weight() + 128) as u32
            })
            .expire_after(RawExpiry)
            .build();
        let raw_key = key.entry_key().to_owned();
        raw.insert(
            raw_key.clone(),
            (Arc::new(support::response_2k()), Duration::from_secs(3600)),
        );
        MemoryFixture {
            cache,
            key,
            raw,
            raw_key,
        }
    }

    fn ours(&self) {
        match self.cache.lookup(&self.key).now_or_never() {
            Some(Lookup::Hit(entry)) => {
                black_box(entry);
            }
            _ => panic!("expected an immediate hit"),
        }
    }

    fn raw_get(&self) {
        black_box(self.raw.get(self.raw_key.as_str()).unwrap());
    }
}

/// Per-hit nanoseconds, as the median of batch means (a clock read per operation would
/// cost as much as the operation).
fn memory_interleaved(fixture: &MemoryFixture) -> (Samples, Samples) {
    let rounds = pick(400, 100);
    let batch = 2_000u32;
    let (mut ours, mut raw) = (Samples::default(), Samples::default());
    for _ in 0..20_000 {
        fixture.ours();
        fixture.raw_get();
    }
    for round in 0..rounds {
        for which in [round % 2, (round + 1) % 2] {
            let started = Instant::now();
            if which == 0 {
                for _ in 0..batch {
                    fixture.raw_get();
                }
                raw.push(started.elapsed() / batch);
            } else {
                for _ in 0..batch {
                    fixture.ours();
                }
                ours.push(started.elapsed() / batch);
            }
        }
    }
    (raw, ours)
}

fn report_memory(raw: &Samples, ours: &Samples, key_build: &Samples) {
    println!("\n== §2 hit path, in-memory backend, ns per operation (median of batch means), interleaved");
    for (name, s) in [
        ("floor: raw moka get", raw),
        ("ours: Cache::lookup", ours),
        ("(key building, per request)", key_build),
    ] {
        row(
            name,
            &[
                ("p50_ns", support::ns(s.p50())),
                ("p90_ns", support::ns(s.quantile(0.9))),
                ("min_ns", support::ns(s.quantile(0.0))),
            ],
        );
    }
    let hit_us = ours.p50().as_secs_f64() * 1e6;
    verdict("ours per hit, us", hit_us, "< 1.0", hit_us < 1.0);
    println!(
        "     (ours/raw = {:.2}: three map reads (two generations, one entry) plus switches and stats)",
        ratio(ours.p50(), raw.p50())
    );
}

fn key_build_samples(cache: &Cache) -> Samples {
    let mut samples = Samples::default();
    for _ in 0..pick(200, 50) {
        let started = Instant::now();
        for _ in 0..1_000 {
            black_box(request_key(
                cache,
                black_box("org_1"),
                black_box("page=1&limit=50&sort=name"),
            ));
        }
        samples.push(started.elapsed() / 1_000);
    }
    samples
}

fn criterion_benches(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    redis: &RedisFixture,
    memory: &MemoryFixture,
) {
    let mut group = c.benchmark_group("hit_redis_2k");
    group.bench_function("floor_get", |b| b.to_async(rt).iter(|| redis.floor_get()));
    group.bench_function("raw_mget_3_keys", |b| {
        b.to_async(rt).iter(|| redis.floor_mget())
    });
    group.bench_function("peer_cached_crate", |b| {
        b.to_async(rt).iter(|| redis.peer_get())
    });
    group.bench_function("ours_lookup", |b| b.to_async(rt).iter(|| redis.ours()));
    group.finish();

    let mut group = c.benchmark_group("hit_memory_2k");
    group.bench_function("raw_moka_get", |b| b.iter(|| memory.raw_get()));
    group.bench_function("ours_lookup", |b| b.iter(|| memory.ours()));
    group.bench_function("key_build", |b| {
        b.iter(|| {
            request_key(
                &memory.cache,
                black_box("org_1"),
                black_box("page=1&limit=50&sort=name"),
            )
        })
    });
    group.finish();
}

fn main() {
    support::banner("hit_path");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = cache_tests::RedisServer::start();
    let redis = rt.block_on(RedisFixture::new(&server.url()));
    let memory = rt.block_on(MemoryFixture::new());

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(pick(1000, 300)))
        .measurement_time(Duration::from_millis(pick(4000, 1000)))
        .sample_size(pick(60, 20))
        .configure_from_args();
    criterion_benches(&mut criterion, &rt, &redis, &memory);

    let redis_samples = rt.block_on(redis_interleaved(&redis));
    let cluster = cache_tests::redis_cluster::RedisCluster::start();
    let cluster_fixture = rt.block_on(ClusterFixture::new(cluster.seed_urls()));
    let (cluster_floor, cluster_ours) = rt.block_on(cluster_interleaved(&cluster_fixture));
    let (raw, ours) = memory_interleaved(&memory);
    let key_build = key_build_samples(&memory.cache);
    report_redis(&redis, &redis_samples);
    report_cluster(&cluster_floor, &cluster_ours);
    report_memory(&raw, &ours, &key_build);
    println!("  load average at the end: {}", support::load_average());
    criterion.final_summary();
}
