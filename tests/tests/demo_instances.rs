//! Several demo instances behind one address (issue 14): two servers share one SQLite
//! file (`DATABASE_URL`) and one redis-server, each with its own cache handle (its own
//! single flight, pending set and circuit, as separate processes have). The first
//! instance seeds the file, the second uses its data; a write through one instance is
//! read through the other, fresh.

use std::net::SocketAddr;
use std::path::Path;

use cache_runtime::{Cache, CacheConfig};
use cache_tests::RedisServer;
use examples::{start_demo, DemoConfig, RunningDemo, SeedConfig};
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
        database: Some(database.to_path_buf()),
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
