//! Single flight within one instance (issue 6, DESIGN invariant 6): a burst of concurrent
//! misses on one key runs the handler once and every request gets that one answer; other
//! keys and hits never wait for it; a follower whose leader is cancelled or too slow
//! computes by itself instead of hanging. Every test runs against a private redis-server
//! and against the in-memory backend, through `#[cached]` on an axum Router.

mod concurrency_support;

use std::time::{Duration, Instant};

use cache_runtime::Cache;
use cache_tests::backends::TestBackend;
use cache_tests::both_backends;
use cache_tests::http::{send, Reply};
use concurrency_support::{request, router, wait_until, within_deadline, App, Flavor};

const BURST: usize = 1000;

async fn cache_with_flight_wait(backend: &TestBackend, flight_wait: Duration) -> Cache {
    Cache::new(backend.config().with_flight_wait(flight_wait))
        .await
        .unwrap()
}

/// 1,000 requests on one cold key. The handler holds at the gate until every request's
/// lookup has returned (each has missed and joined the flight by then: joining follows the
/// lookup without an await in between), so they are all in flight together.
async fn burst_on_one_cold_key(backend: TestBackend) {
    let cache = cache_with_flight_wait(&backend, Duration::from_secs(60)).await;
    let app = App::default();
    let api = router(&cache, app.clone(), Flavor::Correct);
    app.gate().hold_all();

    let requests: Vec<_> = (0..BURST)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move {
                send(&api, request("GET", "/contacts?page=1", "org_1", None)).await
            })
        })
        .collect();
    wait_until("the leader to reach the gate", || app.gate().held() == 1).await;
    wait_until("every request's lookup to return", || {
        cache.stats().lookup.count == BURST as u64
    })
    .await;
    assert_eq!(app.runs(), 1, "one handler run while all are in flight");
    app.gate().release();

    let mut replies: Vec<Reply> = Vec::with_capacity(BURST);
    for handle in requests {
        replies.push(
            within_deadline("a request of the burst", handle)
                .await
                .unwrap(),
        );
    }
    assert_eq!(app.runs(), 1, "the handler ran once for the whole burst");
    let expected = serde_json::json!({
        "tenant": "org_1", "resource": "contacts", "version": 1, "query": "page=1", "run": 1,
    });
    for reply in &replies {
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json(), expected);
        assert_eq!(reply.body, replies[0].body, "byte-identical answers");
    }
    let misses = replies.iter().filter(|r| r.x_cache() == "MISS").count();
    let hits = replies.iter().filter(|r| r.x_cache() == "HIT").count();
    assert_eq!((misses, hits), (1, BURST - 1));
    let totals = cache.stats().totals;
    assert_eq!(totals.misses, 1);
    assert_eq!(totals.hits, BURST as u64 - 1);
    assert_eq!(totals.coalesced, BURST as u64 - 1, "answered by the flight");
    println!(
        "{} backend: {BURST} concurrent requests on one cold key, {} handler run, {} coalesced",
        cache.backend_name(),
        app.runs(),
        totals.coalesced
    );
}
both_backends!(
    a_burst_on_one_cold_key_runs_the_handler_once,
    burst_on_one_cold_key
);

/// While a miss on one key is held inside its handler, misses on other keys (same
/// resource, same path of another tenant) and hits complete; a second request on the
/// held key waits for it and gets its answer.
async fn other_keys_and_hits_do_not_wait(backend: TestBackend) {
    let cache = cache_with_flight_wait(&backend, Duration::from_secs(60)).await;
    let app = App::default();
    let api = router(&cache, app.clone(), Flavor::Correct);

    let warm = send(&api, request("GET", "/contacts?page=warm", "org_1", None)).await;
    assert_eq!(warm.x_cache(), "MISS");
    wait_until("the warm entry to be stored", || {
        cache.stats().totals.stores == 1
    })
    .await;

    app.gate().hold_next();
    let slow = {
        let api = api.clone();
        tokio::spawn(async move {
            send(&api, request("GET", "/contacts?page=slow", "org_1", None)).await
        })
    };
    wait_until("the slow miss to hold in its handler", || {
        app.gate().held() == 1
    })
    .await;
    let same_key = {
        let api = api.clone();
        tokio::spawn(async move {
            send(&api, request("GET", "/contacts?page=slow", "org_1", None)).await
        })
    };

    let hit = send(&api, request("GET", "/contacts?page=warm", "org_1", None)).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.body, warm.body);
    let other_page = send(&api, request("GET", "/contacts?page=2", "org_1", None)).await;
    assert_eq!(other_page.x_cache(), "MISS");
    let other_tenant = send(&api, request("GET", "/contacts?page=slow", "org_2", None)).await;
    assert_eq!(other_tenant.x_cache(), "MISS");
    assert_eq!(other_tenant.json()["tenant"], "org_2");
    let other_resource = send(&api, request("GET", "/dashboard", "org_1", None)).await;
    assert_eq!(other_resource.x_cache(), "MISS");
    assert!(
        !slow.is_finished() && !same_key.is_finished(),
        "the held key's requests are still waiting: everything above completed meanwhile"
    );

    app.gate().release();
    let slow = within_deadline("the slow miss", slow).await.unwrap();
    let same_key = within_deadline("its follower", same_key).await.unwrap();
    assert_eq!(slow.x_cache(), "MISS");
    assert_eq!(
        same_key.x_cache(),
        "HIT",
        "the follower got the leader's answer"
    );
    assert_eq!(same_key.body, slow.body);
    // warm, slow, page 2, org_2, dashboard: the hit and the follower ran nothing.
    assert_eq!(app.runs(), 5);
}
both_backends!(
    other_keys_and_hits_never_wait_for_a_slow_miss,
    other_keys_and_hits_do_not_wait
);

/// A leader whose request is dropped (client gone) must not strand its followers until
/// the flight wait expires: they compute themselves at once.
async fn cancelled_leader(backend: TestBackend) {
    let cache = cache_with_flight_wait(&backend, Duration::from_secs(60)).await;
    let app = App::default();
    let api = router(&cache, app.clone(), Flavor::Correct);

    app.gate().hold_next();
    let leader = {
        let api = api.clone();
        tokio::spawn(async move { send(&api, request("GET", "/contacts", "org_1", None)).await })
    };
    wait_until("the leader to hold in its handler", || {
        app.gate().held() == 1
    })
    .await;
    let follower = {
        let api = api.clone();
        tokio::spawn(async move { send(&api, request("GET", "/contacts", "org_1", None)).await })
    };
    wait_until("the follower to join the flight", || {
        cache.stats().lookup.count == 2
    })
    .await;
    leader.abort();
    // The deadline (20 s) is shorter than the flight wait (60 s): only the cancellation
    // can wake the follower in time.
    let follower = within_deadline("the follower", follower).await.unwrap();
    assert_eq!(follower.x_cache(), "MISS", "it computed by itself");
    assert_eq!(follower.json()["run"], 2);
}
both_backends!(
    a_cancelled_leader_does_not_strand_its_followers,
    cancelled_leader
);

/// A leader slower than `flight_wait`: its follower stops waiting and computes by itself.
async fn slow_leader(backend: TestBackend) {
    let flight_wait = Duration::from_millis(200);
    let cache = cache_with_flight_wait(&backend, flight_wait).await;
    let app = App::default();
    let api = router(&cache, app.clone(), Flavor::Correct);

    app.gate().hold_next();
    let leader = {
        let api = api.clone();
        tokio::spawn(async move { send(&api, request("GET", "/contacts", "org_1", None)).await })
    };
    wait_until("the leader to hold in its handler", || {
        app.gate().held() == 1
    })
    .await;
    let started = Instant::now();
    let follower = send(&api, request("GET", "/contacts", "org_1", None)).await;
    assert!(
        started.elapsed() >= flight_wait,
        "it waited for the leader first"
    );
    assert_eq!(follower.x_cache(), "MISS");
    assert_eq!(follower.json()["run"], 2);
    assert!(!leader.is_finished(), "the leader is still held");
    app.gate().release();
    let leader = within_deadline("the leader", leader).await.unwrap();
    assert_eq!(leader.x_cache(), "MISS");
    assert_eq!(leader.json()["run"], 1);
}
both_backends!(
    followers_compute_themselves_after_the_flight_wait,
    slow_leader
);
