//! The demo on PostgreSQL end to end (issue 16), on a private PostgreSQL server the
//! test starts (`PostgresServer`: initdb and postgres from the machine's binaries, a
//! Unix socket in a temporary directory) and a private redis-server.
//!
//! Two instances on one PostgreSQL database: the first seeds it, the second uses its
//! data; every route answers; a write through one instance is read through the other,
//! fresh; no tenant sees another's rows; the query counter counts PostgreSQL statements
//! as it counts SQLite's. Then a short run of the rollout report on PostgreSQL, which
//! makes its own databases and drops them again.

use std::net::SocketAddr;
use std::time::Duration;

use cache_runtime::{Cache, CacheConfig};
use cache_tests::{PostgresServer, RedisServer};
use examples::db::ScratchDatabase;
use examples::report::{run_report, ReportConfig};
use examples::{start_demo, Database, DemoConfig, RunningDemo, SeedConfig};
use serde_json::{json, Value};

const SCALE: f64 = 0.02;

/// Redis timeouts fit for a shared test machine (the test asserts exact hits).
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

async fn instance(redis: &RedisServer, database_url: &str) -> RunningDemo {
    let cache = Cache::new(
        CacheConfig::default()
            .with_redis_url(redis.url())
            .with_prefix("demo-postgres")
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
        database: Some(Database::Postgres(database_url.to_owned())),
        ..DemoConfig::default()
    };
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("a socket address");
    start_demo(config, cache, addr)
        .await
        .expect("the demo starts on PostgreSQL")
}

struct Answer {
    status: u16,
    x_cache: String,
    body: Value,
}

async fn send(builder: reqwest::RequestBuilder) -> Answer {
    let response = builder.send().await.expect("the demo answers");
    let status = response.status().as_u16();
    let x_cache = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("a body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        x_cache,
        body,
    }
}

async fn get(http: &reqwest::Client, demo: &RunningDemo, path: &str, token: &str) -> Answer {
    send(http.get(format!("{}{path}", demo.url())).bearer_auth(token)).await
}

async fn db_queries(http: &reqwest::Client, demo: &RunningDemo) -> u64 {
    get(http, demo, "/debug/db", "").await.body["queries"]
        .as_u64()
        .expect("a query count")
}

const ORG1: &str = "tok_org1_user1";
const ORG2: &str = "tok_org2_user1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_database_read_their_writes_and_keep_tenants_apart() {
    let postgres = PostgresServer::start();
    let redis = RedisServer::start();
    let database = ScratchDatabase::create(&postgres.server_url(), "demo_e2e")
        .await
        .expect("a database for the test");
    // Started together: exactly one of them may seed.
    let (first, second) = tokio::join!(
        instance(&redis, &database.url),
        instance(&redis, &database.url)
    );
    assert_eq!(
        first.seed.totals.messages, second.seed.totals.messages,
        "both instances report the one seeding"
    );
    assert!(first.db.describe().starts_with("PostgreSQL"));
    let seeded: u64 = postgres
        .psql("demo_e2e", "SELECT COUNT(*) FROM messages")
        .parse()
        .expect("a count");
    assert_eq!(seeded, first.seed.totals.messages, "seeded once, not twice");
    assert!(seeded > 1000, "the data is there: {seeded} messages");
    let http = reqwest::Client::new();

    // Every read route answers on PostgreSQL, for both tenants, with their own rows.
    for path in [
        "/api/templates",
        "/api/templates?category=marketing",
        "/api/contacts",
        "/api/contacts?tags=vip,lead",
        "/api/analytics/dashboard",
        "/api/analytics/dashboard?range=30d",
        "/api/broadcast",
        "/api/broadcast?status=sent",
        "/api/drip-campaigns",
        "/api/conversations",
        "/api/conversations?status=open",
        "/api/organizations/current",
        "/api/profiles/me",
    ] {
        for (token, org) in [(ORG1, 1), (ORG2, 2)] {
            let answer = get(&http, &first, path, token).await;
            assert_eq!(answer.status, 200, "{path}: {}", answer.body);
            let owner = answer.body["organization_id"]
                .as_i64()
                .or_else(|| answer.body["organization"]["id"].as_i64())
                .or_else(|| answer.body["id"].as_i64());
            assert_eq!(owner, Some(org), "{path} for org {org}: {}", answer.body);
        }
    }
    let contacts = get(&http, &first, "/api/contacts?limit=100", ORG1)
        .await
        .body;
    let listed = contacts["contacts"].as_array().expect("contacts");
    assert!(!listed.is_empty());
    assert!(listed.iter().all(|c| c["organization_id"] == 1));
    // Search is case-insensitive, as on SQLite.
    let name = listed[0]["name"].as_str().expect("a name").to_owned();
    let first_name = name.split(' ').next().unwrap_or_default().to_lowercase();
    let found = get(
        &http,
        &first,
        &format!("/api/contacts?search={first_name}"),
        ORG1,
    )
    .await;
    assert_eq!(found.status, 200, "{}", found.body);
    assert!(
        found.body["contacts"]
            .as_array()
            .expect("contacts")
            .iter()
            .any(|c| c["name"] == name.as_str()),
        "{first_name:?} finds {name:?}: {}",
        found.body
    );

    // A cached read: MISS, then HIT without a database query.
    let miss = get(&http, &first, "/api/templates?limit=50", ORG1).await;
    assert_eq!(miss.x_cache, "MISS");
    let before = db_queries(&http, &first).await;
    let hit = get(&http, &first, "/api/templates?limit=50", ORG1).await;
    assert_eq!(hit.x_cache, "HIT");
    assert_eq!(hit.body, miss.body);
    assert_eq!(
        db_queries(&http, &first).await,
        before,
        "a hit runs no query"
    );
    let miss_queries = {
        let before = db_queries(&http, &first).await;
        let answer = get(&http, &first, "/api/templates?limit=49", ORG1).await;
        assert_eq!(answer.x_cache, "MISS");
        db_queries(&http, &first).await - before
    };
    assert_eq!(miss_queries, 2, "a template page is a COUNT and a SELECT");

    // Writes through the second instance, read through the first: fresh.
    let created = send(
        http.post(format!("{}/api/templates", second.url()))
            .bearer_auth(ORG1)
            .json(&json!({"name": "Written on Postgres", "content": "Hi {{name}}", "variables": ["name"]})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_i64().expect("the new id");
    assert!(id > 0);
    let after = get(&http, &first, "/api/templates?limit=50", ORG1).await;
    assert_eq!(after.x_cache, "MISS", "the write invalidated the page");
    let templates = after.body["templates"].as_array().expect("templates");
    assert_eq!(templates[0]["id"], id, "the new template leads the list");
    assert_eq!(templates[0]["variables"], json!(["name"]));
    assert_eq!(
        after.body["pagination"]["total"].as_i64(),
        miss.body["pagination"]["total"].as_i64().map(|t| t + 1)
    );
    // The other tenant never sees it, through either instance.
    for demo in [&first, &second] {
        let other = get(&http, demo, "/api/templates?limit=100", ORG2)
            .await
            .body;
        let rows = other["templates"].as_array().expect("templates");
        assert!(!rows.is_empty());
        assert!(rows
            .iter()
            .all(|t| t["organization_id"] == 2 && t["id"] != id));
    }
    let updated = send(
        http.put(format!("{}/api/templates/{id}", second.url()))
            .bearer_auth(ORG1)
            .json(&json!({"name": "Renamed on Postgres"})),
    )
    .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    let after = get(&http, &first, "/api/templates?limit=50", ORG1)
        .await
        .body;
    assert_eq!(after["templates"][0]["name"], "Renamed on Postgres");
    // Another tenant cannot change it.
    let foreign = send(
        http.put(format!("{}/api/templates/{id}", second.url()))
            .bearer_auth(ORG2)
            .json(&json!({"name": "Hijacked"})),
    )
    .await;
    assert_eq!(foreign.status, 404, "{}", foreign.body);

    // The other write routes run on PostgreSQL too, each read back fresh.
    let contact = send(
        http.post(format!("{}/api/contacts", second.url()))
            .bearer_auth(ORG1)
            .json(&json!({"name": "Pg Contact", "phone_number": "+15550001111", "tags": ["vip", "vip", "beta"]})),
    )
    .await;
    assert_eq!(contact.status, 201, "{}", contact.body);
    let contact_id = contact.body["id"].as_i64().expect("a contact id");
    let tagged = get(&http, &first, "/api/contacts?tags=beta&limit=100", ORG1)
        .await
        .body;
    assert!(tagged["contacts"]
        .as_array()
        .expect("contacts")
        .iter()
        .any(|c| c["id"] == contact_id));
    let conversation = send(
        http.post(format!("{}/api/conversations", second.url()))
            .bearer_auth(ORG1)
            .json(&json!({"contact_id": contact_id, "message": "Hello from Postgres"})),
    )
    .await;
    assert_eq!(conversation.status, 201, "{}", conversation.body);
    let conversations = get(&http, &first, "/api/conversations", ORG1).await.body;
    assert_eq!(conversations["conversations"][0]["contact_id"], contact_id);
    let broadcast = send(
        http.post(format!("{}/api/broadcast", second.url()))
            .bearer_auth(ORG1)
            .json(&json!({"name": "Pg broadcast", "template_id": id, "audience_tag": "vip"})),
    )
    .await;
    assert_eq!(broadcast.status, 201, "{}", broadcast.body);
    assert_eq!(broadcast.body["template_name"], "Renamed on Postgres");
    let drip = send(
        http.post(format!("{}/api/drip-campaigns", second.url()))
            .bearer_auth(ORG1)
            .json(&json!({"name": "Pg drip", "trigger": "contact_created"})),
    )
    .await;
    assert_eq!(drip.status, 201, "{}", drip.body);
    let organization = send(
        http.put(format!("{}/api/organizations/current", second.url()))
            .bearer_auth(ORG1)
            .json(&json!({"name": "Renamed Org"})),
    )
    .await;
    assert_eq!(organization.status, 200, "{}", organization.body);
    let current = get(&http, &first, "/api/organizations/current", ORG1)
        .await
        .body;
    assert_eq!(current["name"], "Renamed Org");
    assert_eq!(current["version"], 2);
    let deleted = send(
        http.delete(format!("{}/api/contacts/{contact_id}", second.url()))
            .bearer_auth(ORG1),
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let deleted = send(
        http.delete(format!("{}/api/templates/{id}", second.url()))
            .bearer_auth(ORG1),
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let after = get(&http, &first, "/api/templates?limit=50", ORG1)
        .await
        .body;
    assert!(after["templates"]
        .as_array()
        .expect("templates")
        .iter()
        .all(|t| t["id"] != id));

    first.shutdown().await;
    second.shutdown().await;
    database
        .drop_database()
        .await
        .expect("drop the test's database");
    assert_eq!(
        postgres.psql(
            "postgres",
            "SELECT COUNT(*) FROM pg_database WHERE datname = 'demo_e2e'"
        ),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_report_run_on_postgres_passes_and_drops_its_databases() {
    let postgres = PostgresServer::start();
    let redis = RedisServer::start();
    // A database the report did not create, which it must leave alone.
    postgres.psql("postgres", "CREATE DATABASE someone_elses");
    let config = ReportConfig {
        duration: Duration::from_secs(3),
        warmup: Duration::from_secs(1),
        users: 8,
        think: Duration::from_millis(50),
        write_share: 0.2,
        scale: SCALE,
        redis_url: Some(redis.url()),
        database: Some(postgres.server_url()),
        out_dir: None,
        progress: false,
        ..ReportConfig::default()
    };
    let report = run_report(config).await.expect("the report runs");
    let text = report.text();
    assert!(report.passed(), "{text}");
    for kind in ["read_your_writes", "cross_tenant", "cross_user"] {
        assert_eq!(report.violations(kind), 0, "{kind}: {text}");
    }
    let [off, on] = &report.phases[..] else {
        panic!("two runs: {text}");
    };
    assert!(
        off.figures.all.requests > 50 && on.figures.all.requests > 50,
        "{text}"
    );
    assert!(
        on.checks.read_your_writes > 0,
        "writes were verified: {text}"
    );
    assert!(on.figures.all.hit_rate > 0.0, "{text}");
    assert!(
        text.contains("database: PostgreSQL (database api_cache_report_"),
        "the report says where it ran: {text}"
    );
    assert_eq!(
        postgres.psql(
            "postgres",
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database \
             WHERE datname NOT IN ('postgres', 'template0', 'template1')"
        ),
        "someone_elses",
        "the report dropped its own databases and only those"
    );
}
