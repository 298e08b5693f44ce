//! Throughput under concurrency (BENCHMARKS.md §5): hits per second from 64 concurrent
//! tasks of one process (tokio, one worker per CPU) on one `Cache` and one Redis,
//! against `redis-benchmark -t get -c 50 -d 2048` on the same private server in the same
//! run, and against 64 tasks doing a raw redis-rs GET of the same stored bytes on one
//! `ConnectionManager` (the client library's own ceiling). Rounds alternate so each
//! contender sees the same machine.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_runtime::testing::Lookup;
use cache_runtime::testing::{CacheKey, Tenant};
use cache_runtime::Cache;
use redis::aio::ConnectionManager;

use support::{pick, row, verdict};

const TASKS: usize = 64;

#[derive(Clone, Copy)]
enum Load {
    Ours,
    RawGet,
}

/// Runs `TASKS` tasks for `duration`; returns operations per second.
async fn drive(
    load: Load,
    cache: &Cache,
    key: &CacheKey,
    conn: &ConnectionManager,
    duration: Duration,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let not_hits = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::with_capacity(TASKS);
    for _ in 0..TASKS {
        let (stop, ops, not_hits) = (stop.clone(), ops.clone(), not_hits.clone());
        let (cache, key, mut conn) = (cache.clone(), key.clone(), conn.clone());
        handles.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match load {
                    Load::Ours => {
                        if !matches!(cache.lookup(&key).await, Lookup::Hit(_)) {
                            not_hits.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Load::RawGet => {
                        let bytes: Vec<u8> = redis::cmd("GET")
                            .arg(key.entry_key())
                            .query_async(&mut conn)
                            .await
                            .unwrap();
                        std::hint::black_box(bytes);
                    }
                }
                ops.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Let every task start before the clock does.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = ops.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    let counted = ops.load(Ordering::Relaxed) - before;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        handle.await.unwrap();
    }
    assert_eq!(
        not_hits.load(Ordering::Relaxed),
        0,
        "a lookup under load was not a hit"
    );
    counted as f64 / elapsed.as_secs_f64()
}

/// Runs redis-benchmark's GET test against the server; returns requests per second.
fn redis_benchmark(port: u16, requests: u32) -> f64 {
    let output = Command::new("redis-benchmark")
        .args(["-t", "get", "-c", "50", "-d", "2048", "-q"])
        .args(["-n", &requests.to_string(), "-p", &port.to_string()])
        .output()
        .expect("run redis-benchmark (Debian: redis-tools)");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    // The final line reads `GET: 81234.56 requests per second, p50=0.311 msec`.
    text.split(['\r', '\n'])
        .filter_map(|line| line.trim().strip_prefix("GET: "))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|n| n.parse::<f64>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("unexpected redis-benchmark output: {text}"))
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn main() {
    support::banner("concurrency");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = cache_tests::RedisServer::start();
    let url = server.url();
    let rounds = pick(3, 1);
    let duration = Duration::from_secs(pick(5, 2));
    let requests = pick(200_000, 100_000);

    let (ours, raw, benchmark) = rt.block_on(async {
        let cache = Cache::new(support::redis_config(&url)).await.unwrap();
        let key = cache
            .key(Tenant::Scoped("org_1"), "templates")
            .unwrap()
            .request("GET", "/api/templates", Some("page=1"))
            .build();
        let Lookup::Miss(ticket) = cache.lookup(&key).await else {
            panic!("expected a miss")
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        cache
            .store(ticket, support::response_2k(), Duration::from_secs(3600))
            .await
            .unwrap();
        let mut conn = ConnectionManager::new(redis::Client::open(url.as_str()).unwrap())
            .await
            .unwrap();
        // redis-benchmark's GET reads the literal key `key:__rand_int__` (no -r):
        // give it the same 2 KB payload it would SET with -d 2048.
        let _: () = redis::cmd("SET")
            .arg("key:__rand_int__")
            .arg(vec![b'x'; 2048])
            .query_async(&mut conn)
            .await
            .unwrap();

        let (mut ours, mut raw, mut benchmark) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let port = server.port();
            benchmark.push(
                tokio::task::spawn_blocking(move || redis_benchmark(port, requests))
                    .await
                    .unwrap(),
            );
            ours.push(drive(Load::Ours, &cache, &key, &conn, duration).await);
            raw.push(drive(Load::RawGet, &cache, &key, &conn, duration).await);
            println!(
                "  round {round}: redis-benchmark {:.0}/s, ours {:.0}/s, raw GET {:.0}/s (load {})",
                benchmark[round],
                ours[round],
                raw[round],
                support::load_average()
            );
        }
        (ours, raw, benchmark)
    });

    println!(
        "\n== §5 concurrency: operations per second, mean of {rounds} round(s) of {} s",
        duration.as_secs()
    );
    row(
        "redis-benchmark -t get -c 50 -d 2048",
        &[("ops_per_s", format!("{:.0}", mean(&benchmark)))],
    );
    row(
        "raw redis-rs GET, 64 tasks, 1 conn",
        &[("ops_per_s", format!("{:.0}", mean(&raw)))],
    );
    row(
        "ours: Cache::lookup hits, 64 tasks",
        &[("ops_per_s", format!("{:.0}", mean(&ours)))],
    );
    let vs_benchmark = mean(&ours) / mean(&benchmark);
    verdict(
        "ours / redis-benchmark",
        vs_benchmark,
        "report (no fixed target)",
        true,
    );
    println!(
        "     (ours / raw GET on the same connection = {:.3})",
        mean(&ours) / mean(&raw)
    );
    println!("  load average at the end: {}", support::load_average());
}
