//! Two app instances sharing one redis-server (issue 6): two `Cache`s in one process, each
//! with its own connection and single-flight map. With the cross-instance lease on, a
//! burst of misses on one key runs the handler once in total; without it, once per
//! instance. A lease holder that dies blocks the others at most the lease time; an early
//! refresh on one instance never makes another wait; and the lease costs a hit nothing
//! and a miss one `SET`, counted with `INFO commandstats`.

mod concurrency_support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, CacheConfig};
use cache_tests::backends::TestBackend;
use cache_tests::http::{send, Reply};
use concurrency_support::{
    command_calls, request, router, wait_until, within_deadline, App, Flavor,
};

const BURST: usize = 1000;

fn config(backend: &TestBackend, lease: Option<Duration>) -> CacheConfig {
    backend
        .config()
        .with_lease(lease)
        .with_flight_wait(Duration::from_secs(60))
}

struct Burst {
    runs: u64,
    replies: Vec<(usize, Reply)>,
    calls: HashMap<String, u64>,
}

/// `BURST` requests on one cold key, alternating between two instances; handlers hold
/// at the gate until every request's lookup has returned.
async fn burst_on_two_instances(lease: Option<Duration>) -> Burst {
    let backend = TestBackend::redis();
    let server = backend.server().unwrap();
    let caches = [
        Cache::new(config(&backend, lease)).await.unwrap(),
        Cache::new(config(&backend, lease)).await.unwrap(),
    ];
    let app = App::default();
    let apis = caches
        .iter()
        .map(|cache| router(cache, app.clone(), Flavor::Correct))
        .collect::<Vec<_>>();
    // Create the tenant's generations first, so that the commands counted below are the
    // burst's own.
    send(&apis[0], request("GET", "/contacts?page=0", "org_1", None)).await;
    wait_until("the warm-up entry to be stored", || {
        caches[0].stats().totals.stores == 1
    })
    .await;
    let runs_before = app.runs();
    let lookups_before = [0, 1].map(|i| caches[i].stats().lookup.count);
    let _: () = server.cmd(&["CONFIG", "RESETSTAT"]);

    app.gate().hold_all();
    let requests: Vec<_> = (0..BURST)
        .map(|i| {
            let api = apis[i % 2].clone();
            tokio::spawn(async move {
                let reply = send(&api, request("GET", "/contacts?page=1", "org_1", None)).await;
                (i % 2, reply)
            })
        })
        .collect();
    let leaders = if lease.is_some() { 1 } else { 2 };
    wait_until("the leaders to reach the gate", || {
        app.gate().held() == leaders
    })
    .await;
    wait_until("every request's lookup to return", || {
        (0..2).all(|i| caches[i].stats().lookup.count - lookups_before[i] >= (BURST / 2) as u64)
    })
    .await;
    app.gate().release();

    let mut replies = Vec::with_capacity(BURST);
    for handle in requests {
        replies.push(
            within_deadline("a request of the burst", handle)
                .await
                .unwrap(),
        );
    }
    for reply in replies.iter().map(|(_, r)| r) {
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["tenant"], "org_1");
        assert_eq!(reply.json()["query"], "page=1");
    }
    wait_until("the burst's entries to be stored", || {
        caches.iter().map(|c| c.stats().totals.stores).sum::<u64>() == 1 + leaders as u64
    })
    .await;
    Burst {
        runs: app.runs() - runs_before,
        replies,
        calls: command_calls(server),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_lease_a_burst_on_two_instances_runs_the_handler_once() {
    let burst = burst_on_two_instances(Some(Duration::from_secs(10))).await;
    println!(
        "lease on: {BURST} requests on one cold key over 2 instances: {} handler run(s); Redis commands {:?}",
        burst.runs, burst.calls
    );
    assert_eq!(burst.runs, 1, "one run for both instances");
    let first = &burst.replies[0].1;
    assert!(burst.replies.iter().all(|(_, r)| r.body == first.body));
    assert_eq!(
        burst
            .replies
            .iter()
            .filter(|(_, r)| r.x_cache() == "MISS")
            .count(),
        1
    );
    // One lease attempt per instance (the flight coalesces the rest), one store.
    assert_eq!(
        burst.calls.get("set").copied(),
        Some(3),
        "{:?}",
        burst.calls
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_lease_each_instance_runs_the_handler_once() {
    let burst = burst_on_two_instances(None).await;
    println!(
        "lease off: {BURST} requests on one cold key over 2 instances: {} handler run(s); Redis commands {:?}",
        burst.runs, burst.calls
    );
    assert_eq!(burst.runs, 2, "once per instance");
    for instance in 0..2 {
        let replies: Vec<&Reply> = burst
            .replies
            .iter()
            .filter(|(i, _)| *i == instance)
            .map(|(_, r)| r)
            .collect();
        assert!(replies.iter().all(|r| r.body == replies[0].body));
        assert_eq!(replies.iter().filter(|r| r.x_cache() == "MISS").count(), 1);
    }
    assert_eq!(
        burst.calls.get("set").copied(),
        Some(2),
        "two stores, no lease"
    );
}

/// The holder takes the lease and dies inside the handler; the other instance waits for
/// the lease to lapse, not longer, and computes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lease_holder_blocks_the_others_at_most_the_lease_time() {
    let lease = Duration::from_millis(300);
    let backend = TestBackend::redis();
    let (cache_a, cache_b) = (
        Cache::new(config(&backend, Some(lease))).await.unwrap(),
        Cache::new(config(&backend, Some(lease))).await.unwrap(),
    );
    let app = App::default();
    let api_a = router(&cache_a, app.clone(), Flavor::Correct);
    let api_b = router(&cache_b, app.clone(), Flavor::Correct);

    app.gate().hold_next();
    let holder = {
        let api_a = api_a.clone();
        tokio::spawn(async move { send(&api_a, request("GET", "/contacts", "org_1", None)).await })
    };
    wait_until("the holder to take the lease and hold", || {
        app.gate().held() == 1
    })
    .await;
    assert_eq!(backend.server().unwrap().keys("*:l:*").len(), 1, "a lease");
    holder.abort();

    let started = Instant::now();
    let reply = within_deadline(
        "the other instance",
        send(&api_b, request("GET", "/contacts", "org_1", None)),
    )
    .await;
    let waited = started.elapsed();
    println!("dead holder, lease {lease:?}: the other instance answered after {waited:?}");
    assert_eq!(reply.x_cache(), "MISS");
    assert_eq!(reply.json()["run"], 2, "it computed by itself");
    assert!(waited >= lease, "it respected the lease: {waited:?}");
    assert!(
        waited < lease + Duration::from_secs(3),
        "not much past it: {waited:?}"
    );
}

/// An early refresh holds the lease on one instance; the other instance draws an early
/// refresh of the same entry and is answered from the still-valid entry at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_refresh_on_one_instance_never_makes_another_wait() {
    let backend = TestBackend::redis();
    let server = backend.server().unwrap();
    // Every lookup of an entry with a measurable compute time draws an early refresh.
    let config = config(&backend, Some(Duration::from_secs(10))).with_early_refresh_beta(1e9);
    let cache_a = Cache::new(config.clone()).await.unwrap();
    let cache_b = Cache::new(config.clone()).await.unwrap();
    let seeder = Cache::new(config).await.unwrap();
    let app = App::default();
    app.set_compute(Duration::from_millis(5));
    let api_a = router(&cache_a, app.clone(), Flavor::Correct);
    let api_b = router(&cache_b, app.clone(), Flavor::Correct);

    // The cold miss goes through a third instance: an instance keeps its finished flight
    // visible a moment after the store, and would answer A from it, not from Redis.
    let cold = send(
        &router(&seeder, app.clone(), Flavor::Correct),
        request("GET", "/contacts", "org_1", None),
    )
    .await;
    wait_until("the entry to be stored", || {
        seeder.stats().totals.stores == 1
    })
    .await;
    // The cold miss's lease is still held (10 s); let it lapse now.
    for lease_key in server.keys("*:l:*") {
        let _: i64 = server.cmd(&["DEL", &lease_key]);
    }

    app.gate().hold_next();
    let refresher = {
        let api_b = api_b.clone();
        tokio::spawn(async move { send(&api_b, request("GET", "/contacts", "org_1", None)).await })
    };
    wait_until("the refresh on instance B to hold", || {
        app.gate().held() == 1
    })
    .await;
    let during = within_deadline(
        "instance A during B's refresh",
        send(&api_a, request("GET", "/contacts", "org_1", None)),
    )
    .await;
    assert_eq!(during.x_cache(), "HIT");
    assert_eq!(during.body, cold.body, "the still-valid entry");
    assert!(!refresher.is_finished());

    app.gate().release();
    let refreshed = within_deadline("B's refresh", refresher).await.unwrap();
    assert_eq!(
        (refreshed.x_cache(), refreshed.json()["run"].clone()),
        ("MISS", 2.into())
    );
    assert_eq!(app.runs(), 2);
}

/// What the lease costs, in Redis commands: nothing on a hit (one MGET either way), one
/// `SET NX PX` on a miss, on the request path. Also prints the miss latency with and
/// without it over loopback, interleaved (information, not a benchmark).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_costs_a_hit_nothing_and_a_miss_one_set() {
    const MISSES: usize = 300;
    let backend = TestBackend::redis();
    let server = backend.server().unwrap();
    let app = App::default();
    let mut instances = Vec::new();
    for (lease, tenant) in [
        (None, "org_plain"),
        (Some(Duration::from_secs(2)), "org_lease"),
    ] {
        let cache = Cache::new(config(&backend, lease)).await.unwrap();
        let api = router(&cache, app.clone(), Flavor::Correct);
        send(&api, request("GET", "/contacts?warm", tenant, None)).await;
        wait_until("the warm entry to be stored", || {
            cache.stats().totals.stores == 1
        })
        .await;

        let _: () = server.cmd(&["CONFIG", "RESETSTAT"]);
        for _ in 0..10 {
            let hit = send(&api, request("GET", "/contacts?warm", tenant, None)).await;
            assert_eq!(hit.x_cache(), "HIT");
        }
        let calls = command_calls(server);
        assert_eq!(
            calls,
            HashMap::from([("mget".to_owned(), 10)]),
            "lease {lease:?}"
        );

        let _: () = server.cmd(&["CONFIG", "RESETSTAT"]);
        let miss = send(&api, request("GET", "/contacts?cold", tenant, None)).await;
        assert_eq!(miss.x_cache(), "MISS");
        wait_until("the miss to be stored", || cache.stats().totals.stores == 2).await;
        let calls = command_calls(server);
        let expected_sets = if lease.is_some() { 2 } else { 1 };
        assert_eq!(calls.get("mget"), Some(&1));
        assert_eq!(
            calls.get("set"),
            Some(&expected_sets),
            "lease {lease:?}: {calls:?}"
        );
        instances.push((lease.is_some(), tenant, api));
    }

    let mut total = [Duration::ZERO; 2];
    for i in 0..MISSES {
        for (slot, (_, tenant, api)) in instances.iter().enumerate() {
            let uri = format!("/contacts?page={i}");
            let started = Instant::now();
            let reply = send(api, request("GET", &uri, tenant, None)).await;
            total[slot] += started.elapsed();
            assert_eq!(reply.x_cache(), "MISS");
        }
    }
    println!(
        "a miss through #[cached] over loopback (debug build), mean of {MISSES} interleaved: \
         lease off {:?}, lease on {:?}",
        total[0] / MISSES as u32,
        total[1] / MISSES as u32
    );
}
