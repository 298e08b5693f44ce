//! Several demo instances behind one address (issue 14): two servers share one SQLite
//! file (`DATABASE_URL`) and one redis-server, each with its own cache handle (its own
//! single flight, pending set and circuit, as separate processes have). The first
//! instance seeds the file, the second uses its data; a write through one instance is
//! read through the other, fresh.
//!
//! Then the rollout report on three instances (issue 14): on one redis-server and on a
//! real local Redis Cluster every check holds across instances; on per-process in-memory
//! caches the report refuses, and when told to run anyway it finds the stale reads.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use cache_runtime::{Cache, CacheConfig};
use cache_tests::{RedisCluster, RedisServer};
use examples::report::{run_report, Report, ReportConfig, ReportError};
use examples::{start_demo, Database, DemoConfig, RunningDemo, SeedConfig};
use serde_json::{json, Value};

async fn instance(redis: &RedisServer, database: &Path) -> RunningDemo {
    let cache = Cache::new(
        CacheConfig::default()
            .with_redis_url(redis.url())
            .with_prefix("demo-instances"),
    )
    .await
    .expect("a cache on the test's redis-server");
    let config = DemoConfig {
        seed: SeedConfig {
            scale: 0.02,
            ..SeedConfig::default()
        },
        db_connections: 4,
        database: Some(Database::Sqlite(database.to_path_buf())),
        incomplete_invalidation: false,
    };
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("a socket address");
    start_demo(config, cache, addr)
        .await
        .expect("the demo starts")
}

async fn get(http: &reqwest::Client, demo: &RunningDemo, path: &str) -> (String, Value) {
    let response = http
        .get(format!("{}{path}", demo.url()))
        .bearer_auth("tok_org1_user1")
        .send()
        .await
        .expect("the demo answers");
    let x_cache = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (x_cache, response.json().await.expect("JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_database_and_one_cache() {
    let redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("api-cache-instances-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let database = dir.join("demo.sqlite3");

    // Started together: exactly one of them seeds.
    let (a, b) = tokio::join!(instance(&redis, &database), instance(&redis, &database));
    assert_eq!(
        serde_json::to_value(&*a.seed).unwrap()["organizations"],
        serde_json::to_value(&*b.seed).unwrap()["organizations"],
        "both instances see the same seeded organizations"
    );
    // One seeding, recorded and read back by the other (its own would have its own time).
    assert_eq!(a.seed.seconds, b.seed.seconds);
    let http = reqwest::Client::new();
    let (_, before_a) = get(&http, &a, "/api/templates").await;
    let (_, before_b) = get(&http, &b, "/api/templates").await;
    assert_eq!(before_a["templates"], before_b["templates"], "one database");
    let total = before_a["pagination"]["total"].as_i64().expect("a total");

    // Warm B's entry, write through A, read through B.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while get(&http, &b, "/api/templates").await.0 != "HIT" {
        assert!(std::time::Instant::now() < deadline, "B never hit");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let created = http
        .post(format!("{}/api/templates", a.url()))
        .bearer_auth("tok_org1_user1")
        .json(&json!({ "name": "from A", "content": "Hi", "category": "utility" }))
        .send()
        .await
        .expect("A answers");
    assert_eq!(created.status().as_u16(), 201);
    let (x_cache, after_b) = get(&http, &b, "/api/templates").await;
    assert_eq!(x_cache, "MISS", "A's invalidation reached B through Redis");
    assert_eq!(after_b["pagination"]["total"].as_i64(), Some(total + 1));
    assert_eq!(after_b["templates"][0]["name"], "from A");

    a.shutdown().await;
    b.shutdown().await;
    assert!(database.exists(), "a shared database is kept");
    // A third instance later reuses the seeded file rather than seeding again.
    let c = instance(&redis, &database).await;
    let (_, from_c) = get(&http, &c, "/api/templates").await;
    assert_eq!(from_c["pagination"]["total"].as_i64(), Some(total + 1));
    c.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A short, write-heavy report run on three instances, quiet and writing no files.
fn three_instance_report() -> ReportConfig {
    ReportConfig {
        duration: Duration::from_secs(3),
        warmup: Duration::from_secs(1),
        users: 8,
        think: Duration::from_millis(50),
        write_share: 0.2,
        scale: 0.02,
        instances: 3,
        out_dir: None,
        progress: false,
        ..ReportConfig::default()
    }
}

/// The report's checks held across instances, and every instance took its share.
fn assert_clean_multi_instance_run(report: &Report) {
    let text = report.text();
    assert!(report.passed(), "{text}");
    for kind in ["read_your_writes", "cross_tenant", "cross_user"] {
        assert_eq!(report.violations(kind), 0, "{kind}: {text}");
    }
    assert!(text.contains("Per instance"), "{text}");
    for phase in &report.phases {
        assert_eq!(phase.server_errors + phase.transport_errors, 0, "{text}");
        assert!(phase.checks.read_your_writes > 0, "writes verified: {text}");
        assert_eq!(phase.instances.len(), 3, "{text}");
        for instance in &phase.instances {
            assert!(instance.share.figures.requests > 0, "{text}");
            assert!(instance.share.db_queries > 0, "{text}");
        }
        let answered: u64 = phase
            .instances
            .iter()
            .map(|i| i.share.figures.requests)
            .sum();
        assert_eq!(answered, phase.figures.all.requests, "{text}");
    }
    let on = &report.phases[1];
    assert!(on.cache_enabled && on.figures.all.hit_rate > 0.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_instance_report_on_one_redis_server_passes_its_checks() {
    let redis = RedisServer::start();
    let config = ReportConfig {
        redis_url: Some(redis.url()),
        ..three_instance_report()
    };
    let report = run_report(config).await.expect("the report runs");
    assert_eq!(report.backend, "redis");
    assert_clean_multi_instance_run(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_instance_report_on_a_redis_cluster_passes_its_checks() {
    let cluster = RedisCluster::start();
    let config = ReportConfig {
        redis_cluster_urls: cluster.seed_urls(),
        ..three_instance_report()
    };
    let report = run_report(config).await.expect("the report runs");
    assert_eq!(report.backend, "redis-cluster");
    assert_clean_multi_instance_run(&report);
}

/// Without Redis (scripts/test.sh unsets REDIS_URL and REDIS_CLUSTER_URLS), several
/// instances would each keep a cache of their own: refused before anything starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_instances_on_the_in_memory_cache_are_refused() {
    let started = std::time::Instant::now();
    let err = run_report(three_instance_report())
        .await
        .expect_err("per-process caches are refused");
    assert!(
        matches!(err, ReportError::PerProcessCache { instances: 3 }),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("--allow-per-process-cache") && message.contains("invalidations"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused before seeding or driving anything"
    );
}

/// Asked to run anyway, the per-process caches serve stale reads that the report's
/// read-your-writes check catches: the check spans instances (a run that sent a write
/// and its verifying read to one instance could not fail it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_process_caches_run_anyway_show_read_your_writes_violations() {
    let config = ReportConfig {
        allow_per_process_cache: true,
        duration: Duration::from_secs(4),
        ..three_instance_report()
    };
    let report = run_report(config).await.expect("the report runs");
    let text = report.text();
    assert_eq!(report.backend, "memory");
    assert!(!report.passed(), "{text}");
    assert!(report.violations("read_your_writes") > 0, "{text}");
    let off = &report.phases[0];
    assert!(
        off.violations.is_empty(),
        "nothing is cached with the cache off: {text}"
    );
    assert!(text.contains("per-process in-memory caches"), "{text}");
}
