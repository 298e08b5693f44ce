//! The demo API end to end over real HTTP, cached in a real redis-server started by the
//! test: the reference's manual test flow (MISS, HIT with its age, a POST that
//! invalidates, 401, another tenant, per-user profiles, 400s that are never cached), and
//! a short run of the rollout report, whose correctness checks must all hold.

use std::net::SocketAddr;
use std::time::Duration;

use cache_runtime::{Cache, CacheConfig};
use cache_tests::RedisServer;
use examples::report::{run_report, ReportConfig};
use examples::{start_demo, DemoConfig, RunningDemo, SeedConfig};
use serde_json::{json, Value};

/// Small data: seeding takes well under a second in a debug build.
const SCALE: f64 = 0.02;

/// Redis timeouts fit for a shared test machine: the 30 ms default can turn an expected
/// `HIT` into a `MISS` when a busy machine answers late, and this test asserts exact hits.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

async fn demo_on(redis: &RedisServer) -> RunningDemo {
    let cache = Cache::new(
        CacheConfig::default()
            .with_redis_url(redis.url())
            .with_prefix("demo-e2e")
            .with_response_timeout(REDIS_TIMEOUT)
            .with_connect_timeout(REDIS_TIMEOUT),
    )
    .await
    .expect("a cache on the test's redis-server");
    let config = DemoConfig {
        seed: SeedConfig {
            scale: SCALE,
            ..SeedConfig::default()
        },
        db_connections: 4,
        database: None,
        incomplete_invalidation: false,
    };
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("a socket address");
    start_demo(config, cache, addr)
        .await
        .expect("the demo starts")
}

struct Answer {
    status: u16,
    x_cache: String,
    age: Option<u64>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn send(&self, builder: reqwest::RequestBuilder) -> Answer {
        let response = builder.send().await.expect("the demo answers");
        let headers = response.headers().clone();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        Answer {
            status: response.status().as_u16(),
            x_cache: header("x-cache"),
            age: header("x-cache-age").parse().ok(),
            body: response.text().await.expect("a body"),
            headers,
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        let mut builder = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        }
        self.send(builder).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        let builder = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body);
        self.send(builder).await
    }

    async fn db_queries(&self) -> u64 {
        self.get("/debug/db", None).await.json()["queries"]
            .as_u64()
            .expect("a query count")
    }
}

const ORG1_USER1: &str = "tok_org1_user1";
const ORG1_USER2: &str = "tok_org1_user2";
const ORG2_USER1: &str = "tok_org2_user1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_manual_flow_over_http() {
    let redis = RedisServer::start();
    let demo = demo_on(&redis).await;
    let client = Client {
        http: reqwest::Client::new(),
        base: demo.url(),
    };

    // First request: a miss, stored with the templates preset's TTL.
    let first = client.get("/api/templates", Some(ORG1_USER1)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.x_cache, "MISS");
    assert_eq!(
        first
            .headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("private, no-cache")
    );
    let page = first.json();
    assert_eq!(page["organization_id"], 1);
    assert_eq!(page["pagination"]["page"], 1);
    assert!(page["pagination"]["total"].as_i64().unwrap_or(0) > 0);
    // The entry itself (not the generation keys the lookup created), stored off the
    // request path: wait for it, with a deadline. Organization 1 is tenant "1".
    let entry_pattern = "demo-e2e:{t.1}:e:templates:*";
    cache_tests::redis_server::wait_until(Duration::from_secs(10), "the entry is in Redis", || {
        redis.keys(entry_pattern).len() == 1
    });
    let entry: Vec<u8> = redis.cmd(&["GET", &redis.keys(entry_pattern)[0]]);
    assert!(
        entry.starts_with(b"AC") && entry.ends_with(first.body.as_bytes()),
        "an entry holding the body as sent"
    );

    // Second: a hit with its age, the same bytes, and no database query.
    let queries = client.db_queries().await;
    let second = client.get("/api/templates", Some(ORG1_USER1)).await;
    assert_eq!(second.x_cache, "HIT");
    assert!(second.age.is_some(), "X-Cache-Age on a hit");
    assert_eq!(second.body, first.body);
    assert_eq!(client.db_queries().await, queries, "a hit runs no query");

    // A POST creates (201) and invalidates the tenant's templates.
    let created = client
        .post(
            "/api/templates",
            ORG1_USER1,
            json!({ "name": "E2E welcome", "content": "Hi {{name}}", "category": "utility" }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created
            .headers
            .get("x-cache-invalidated")
            .and_then(|v| v.to_str().ok()),
        Some("templates")
    );
    let template = created.json();
    assert_eq!(template["organization_id"], 1);

    // The next GET is a miss showing the new template first.
    let third = client.get("/api/templates", Some(ORG1_USER1)).await;
    assert_eq!(third.x_cache, "MISS");
    let newest = &third.json()["templates"][0];
    assert_eq!(newest["id"], template["id"]);
    assert_eq!(newest["name"], "E2E welcome");

    // No token, or an unknown one: 401 JSON.
    for token in [None, Some("tok_org99_user1")] {
        let denied = client.get("/api/templates", token).await;
        assert_eq!(denied.status, 401);
        assert_eq!(denied.json()["code"], "unauthorized");
        assert_ne!(denied.x_cache, "HIT");
    }

    // Another tenant's first GET of the same URL is a miss with its own data.
    let other = client.get("/api/templates", Some(ORG2_USER1)).await;
    assert_eq!(other.x_cache, "MISS");
    let other = other.json();
    assert_eq!(other["organization_id"], 2);
    let templates = other["templates"].as_array().expect("a list");
    assert!(!templates.is_empty());
    assert!(templates.iter().all(|t| t["organization_id"] == 2));
    assert!(templates.iter().all(|t| t["name"] != "E2E welcome"));

    // Profiles are per user: two users of one organization never share an entry.
    let user1 = client.get("/api/profiles/me", Some(ORG1_USER1)).await;
    let user2 = client.get("/api/profiles/me", Some(ORG1_USER2)).await;
    assert_eq!(
        (user1.x_cache.as_str(), user2.x_cache.as_str()),
        ("MISS", "MISS")
    );
    let (id1, id2) = (
        user1.json()["user"]["id"].clone(),
        user2.json()["user"]["id"].clone(),
    );
    assert_ne!(id1, id2);
    let again1 = client.get("/api/profiles/me", Some(ORG1_USER1)).await;
    let again2 = client.get("/api/profiles/me", Some(ORG1_USER2)).await;
    assert_eq!(
        (again1.x_cache.as_str(), again2.x_cache.as_str()),
        ("HIT", "HIT")
    );
    assert_eq!(again1.json()["user"]["id"], id1);
    assert_eq!(again2.json()["user"]["id"], id2);

    // The demo mounts the cache's metrics, stats JSON and dashboard (issue 8).
    let metrics = client.get("/metrics", None).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .body
            .contains("api_cache_requests_total{resource=\"templates\",outcome=\"hit\"} 1"),
        "{}",
        metrics.body
    );
    let stats = client.get("/cache/stats", None).await;
    assert_eq!(stats.status, 200);
    assert_eq!(stats.json()["resources"]["profiles"]["hits"], 2);
    let dashboard = client.get("/cache/dashboard", None).await;
    assert_eq!(dashboard.status, 200);
    assert!(dashboard.body.contains("<html"), "the dashboard page");

    demo.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_400_naming_the_field_and_never_cached() {
    let redis = RedisServer::start();
    let demo = demo_on(&redis).await;
    let client = Client {
        http: reqwest::Client::new(),
        base: demo.url(),
    };
    for (path, field) in [
        ("/api/contacts?page=0", "page"),
        ("/api/templates?limit=1000", "limit"),
        ("/api/analytics/dashboard?range=1y", "range"),
        ("/api/conversations?status=lost", "status"),
    ] {
        for attempt in 0..2 {
            let answer = client.get(path, Some(ORG1_USER1)).await;
            assert_eq!(answer.status, 400, "{path}: {}", answer.body);
            assert_eq!(answer.json()["field"], field, "{path}");
            assert_ne!(answer.x_cache, "HIT", "{path}, attempt {attempt}");
        }
    }
    for (body, field) in [
        (json!({ "content": "Hi" }), "name"),
        (json!({ "name": "No content" }), "content"),
    ] {
        let answer = client.post("/api/templates", ORG1_USER1, body).await;
        assert_eq!(answer.status, 400, "{}", answer.body);
        assert_eq!(answer.json()["field"], field);
        assert!(answer.headers.get("x-cache-invalidated").is_none());
    }
    demo.shutdown().await;
}

/// A short, write-heavy report run against `redis`, quiet and writing no files.
fn short_report(redis: &RedisServer, duration: Duration) -> ReportConfig {
    ReportConfig {
        duration,
        warmup: Duration::from_secs(1),
        users: 8,
        think: Duration::from_millis(50),
        write_share: 0.2,
        scale: SCALE,
        redis_url: Some(redis.url()),
        out_dir: None,
        progress: false,
        ..ReportConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_report_run_passes_its_correctness_checks() {
    let redis = RedisServer::start();
    let config = short_report(&redis, Duration::from_secs(3));
    let report = run_report(config).await.expect("the report runs");
    let text = report.text();
    assert!(report.passed(), "{text}");
    for kind in ["read_your_writes", "cross_tenant", "cross_user"] {
        assert_eq!(report.violations(kind), 0, "{kind}: {text}");
    }
    let [off, on] = &report.phases[..] else {
        panic!("two runs: {text}");
    };
    assert!(!off.cache_enabled && on.cache_enabled);
    assert!(
        off.figures.all.requests > 50 && on.figures.all.requests > 50,
        "{text}"
    );
    assert!(
        on.checks.read_your_writes > 0,
        "writes were verified: {text}"
    );
    assert_eq!(off.figures.all.hits, 0, "nothing hits with the cache off");
    assert!(on.figures.all.hit_rate > 0.0, "{text}");
    assert!(text.contains("Database queries per minute"));
}

/// Issue 5's scripted fault run: Redis frozen (`CLIENT PAUSE ALL`) in the middle of the
/// cached run. No request may fail, no check may be violated, and the requests sent
/// during the pause are answered (uncached) like the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_run_with_redis_paused_mid_run_fails_nothing() {
    let redis = RedisServer::start();
    let config = ReportConfig {
        fault_pause_redis: Some(Duration::from_secs(2)),
        ..short_report(&redis, Duration::from_secs(6))
    };
    let report = run_report(config).await.expect("the report runs");
    let text = report.text();
    assert!(report.passed(), "{text}");
    for kind in ["read_your_writes", "cross_tenant", "cross_user"] {
        assert_eq!(report.violations(kind), 0, "{kind}: {text}");
    }
    let on = report
        .phases
        .iter()
        .find(|phase| phase.cache_enabled)
        .expect("a cached run");
    let fault = on
        .fault
        .as_ref()
        .expect("the pause happened during the cached run");
    assert!(
        fault.during.requests > 0,
        "requests were sent during the pause: {text}"
    );
    assert_eq!(fault.failed_during, 0, "{text}");
    assert_eq!(on.server_errors + on.transport_errors, 0, "{text}");
    assert!(
        text.contains("Fault"),
        "the report prints the fault: {text}"
    );
}
