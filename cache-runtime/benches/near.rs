//! The local tier (BENCHMARKS.md §8, issue 17): one run, one Redis, every ratio taken
//! between contenders measured side by side, round after round.
//!
//! - hit latency: the in-memory backend's hit, a local hit in `tracking` mode (no round
//!   trip), a local hit in `validate` mode (one `MGET` of the generation keys), and a
//!   Redis hit without the tier (one `MGET` of generations and entry, body decoded);
//! - Redis commands and bytes per hit in each mode (`INFO commandstats` / `INFO stats`);
//! - the push delay of `tracking` mode: from the start of an invalidation on instance A
//!   to the moment instance B's local tier forgot the generation.
//!
//! Redis is a private redis-server on loopback, or the one `API_CACHE_BENCH_REDIS_URL`
//! names: `scripts/bench-netem.sh` runs this bench against a server in a network
//! namespace of its own behind `tc netem` delay, as a managed Redis in another zone.
//! Where the kernel has no netem, `API_CACHE_BENCH_DELAY_US` puts this bench's own
//! delaying TCP relay in front of Redis instead (every chunk held that long in each
//! direction, pipelined, on OS threads: tokio's timer rounds sleeps up to 1 ms).

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cache_runtime::testing::{CacheKey, Lookup, Tenant};
use cache_runtime::{Cache, CacheConfig, LocalTier};

use support::{pick, ratio, row, us, verdict};

const CONTENDERS: [&str; 4] = [
    "memory backend hit",
    "local hit, tracking",
    "local hit, validate",
    "Redis hit (no local tier)",
];

fn key(cache: &Cache) -> CacheKey {
    cache
        .key(Tenant::Scoped("org_1"), "templates")
        .unwrap()
        .request("GET", "/api/templates", Some("page=1"))
        .build()
}

/// Makes `key` a hit on `cache` (and, for the local tier, a local one).
async fn warm(cache: &Cache) {
    let k = key(cache);
    if let Lookup::Miss(ticket) = cache.lookup(&k).await {
        cache
            .store(ticket, support::response_2k(), Duration::from_secs(3600))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        assert!(matches!(cache.lookup(&k).await, Lookup::Hit(_)));
    }
}

/// Mean time of one hit over a batch of `n`.
async fn batch(cache: &Cache, k: &CacheKey, n: u32) -> Duration {
    let started = Instant::now();
    for _ in 0..n {
        match cache.lookup(k).await {
            Lookup::Hit(entry) => {
                std::hint::black_box(entry);
            }
            other => panic!("expected a hit, got {other:?}"),
        }
    }
    started.elapsed() / n
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `(commands by name, bytes Redis received, bytes Redis sent)` so far.
async fn redis_counters(
    conn: &mut redis::aio::MultiplexedConnection,
) -> (HashMap<String, u64>, u64, u64) {
    let commands: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let commands = commands
        .lines()
        .filter_map(|line| {
            let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = fields.split(',').find_map(|f| f.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect();
    let stats: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(conn)
        .await
        .unwrap();
    let field = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    (
        commands,
        field("total_net_input_bytes:"),
        field("total_net_output_bytes:"),
    )
}

fn main() {
    support::banner("near");
    let private;
    let url = match std::env::var("API_CACHE_BENCH_REDIS_URL") {
        Ok(url) => url,
        Err(_) => {
            private = cache_tests::RedisServer::start();
            private.url()
        }
    };
    let url = match std::env::var("API_CACHE_BENCH_DELAY_US") {
        Ok(delay) => {
            let delay = Duration::from_micros(
                delay
                    .parse()
                    .expect("API_CACHE_BENCH_DELAY_US: microseconds"),
            );
            println!("  through a relay adding {delay:?} each way");
            delay_relay::start(&url, delay)
        }
        Err(_) => url,
    };
    println!("  Redis: {url}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // A second's response timeout, as the other Redis benches (support::redis_config).
        let redis_config = |prefix: &str, tier: LocalTier| {
            support::redis_config(&url)
                .with_prefix(prefix)
                .with_local_tier(tier, 64 * 1024 * 1024)
        };
        let caches = [
            Cache::new(CacheConfig::default()).await.unwrap(),
            Cache::new(redis_config("near-t", LocalTier::Tracking))
                .await
                .unwrap(),
            Cache::new(redis_config("near-v", LocalTier::Validate))
                .await
                .unwrap(),
            Cache::new(redis_config("near-r", LocalTier::Off))
                .await
                .unwrap(),
        ];
        for cache in &caches {
            warm(cache).await;
        }
        let keys: Vec<CacheKey> = caches.iter().map(key).collect();

        // Hit latency: batches, contenders interleaved, rounds.
        let rounds = pick(15, 5);
        let sizes = [pick(100_000, 20_000), pick(100_000, 20_000), pick(2_000, 500), pick(2_000, 500)];
        let mut means: Vec<Vec<Duration>> = vec![Vec::new(); caches.len()];
        for round in 0..rounds {
            for offset in 0..caches.len() {
                let which = (round + offset) % caches.len();
                let mean = batch(&caches[which], &keys[which], sizes[which]).await;
                means[which].push(mean);
            }
        }
        let medians: Vec<Duration> = means.into_iter().map(median).collect();
        println!("\n== §8 Local tier: hit latency (median over {rounds} rounds of a batch's mean)");
        for (name, m) in CONTENDERS.iter().zip(&medians) {
            row(name, &[("mean_us", us(*m)), ("ns", format!("{:.0}", m.as_secs_f64() * 1e9))]);
        }
        let local_vs_memory = ratio(medians[1], medians[0]);
        verdict(
            "local hit (tracking) / memory backend hit",
            local_vs_memory,
            "<= 1.5, and under 1 us",
            local_vs_memory <= 1.5 && medians[1] < Duration::from_micros(1),
        );
        let redis_vs_local = ratio(medians[3], medians[1]);
        verdict(
            "Redis hit / local hit (tracking)",
            redis_vs_local,
            ">= 50",
            redis_vs_local >= 50.0,
        );
        println!(
            "     (Redis hit / local hit (validate) = {:.2}: validate still makes one round trip)",
            ratio(medians[3], medians[2])
        );

        // Commands and bytes per hit.
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        println!("\n== §8 Local tier: Redis work per hit (1000 hits each)");
        for which in 1..caches.len() {
            let (before, in_before, out_before) = redis_counters(&mut conn).await;
            batch(&caches[which], &keys[which], 1000).await;
            let (after, in_after, out_after) = redis_counters(&mut conn).await;
            let mut commands: Vec<String> = after
                .iter()
                .filter(|(name, _)| !name.starts_with("info"))
                .filter_map(|(name, n)| {
                    let delta = n - before.get(name).copied().unwrap_or(0);
                    (delta > 0).then(|| format!("{name}:{:.2}", delta as f64 / 1000.0))
                })
                .collect();
            commands.sort();
            // The INFO commands of the measurement itself are in the byte counts: a
            // few kilobytes over 1000 hits, a few bytes per hit.
            row(
                CONTENDERS[which],
                &[
                    ("commands_per_hit", if commands.is_empty() { "0".into() } else { commands.join(",") }),
                    ("bytes_to_redis_per_hit", format!("{:.1}", (in_after - in_before) as f64 / 1000.0)),
                    ("bytes_from_redis_per_hit", format!("{:.1}", (out_after - out_before) as f64 / 1000.0)),
                ],
            );
        }

        // Push delay: A invalidates, B (tracking) forgets.
        let a = Cache::new(redis_config("near-p", LocalTier::Tracking)).await.unwrap();
        let b = Cache::new(redis_config("near-p", LocalTier::Tracking)).await.unwrap();
        let mut delays = Vec::new();
        let mut stale_after_return = 0u32;
        for _ in 0..pick(300, 60) {
            warm(&b).await;
            assert!(b.stats().local_tier.unwrap().known_generations > 0);
            let known = b.stats().local_tier.unwrap().known_generations;
            let started = Instant::now();
            let invalidation = a.invalidate("org_1", &["templates"]);
            let watch = async {
                loop {
                    if b.stats().local_tier.unwrap().known_generations < known {
                        return Instant::now();
                    }
                    tokio::task::yield_now().await;
                }
            };
            let (result, forgotten) = tokio::join!(invalidation, watch);
            result.unwrap();
            let returned = Instant::now();
            if forgotten > returned {
                stale_after_return += 1;
            }
            delays.push(forgotten - started);
        }
        delays.sort();
        let q = |p: f64| delays[((delays.len() - 1) as f64 * p) as usize];
        println!("\n== §8 Local tier: push delay, tracking mode ({} invalidations)", delays.len());
        row(
            "invalidate start -> other instance forgot",
            &[("p50_us", us(q(0.5))), ("p90_us", us(q(0.9))), ("p99_us", us(q(0.99))), ("max_us", us(q(1.0)))],
        );
        println!(
            "     (the other instance forgot after the invalidating call had returned in {stale_after_return} of {} cases)",
            delays.len()
        );
        println!("  load average at the end: {}", support::load_average());
    });
}

/// A TCP relay that holds every chunk `delay` before passing it on, each direction on
/// threads of its own so that chunks in flight overlap (a delay, not a bandwidth cap).
mod delay_relay {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// Starts the relay in front of the server of `url` and returns a URL through it.
    pub fn start(url: &str, delay: Duration) -> String {
        let upstream = url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    delay,
                );
                pipe(server, client, delay);
            }
        });
        format!("redis://127.0.0.1:{port}/")
    }

    fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
        let (sender, receiver) = mpsc::channel::<(Instant, Vec<u8>)>();
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; 64 * 1024];
            while let Ok(n) = from.read(&mut buffer) {
                if n == 0
                    || sender
                        .send((Instant::now() + delay, buffer[..n].to_vec()))
                        .is_err()
                {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for (due, chunk) in receiver {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if to.write_all(&chunk).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    }
}
