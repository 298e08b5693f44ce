//! Early refresh (issue 6; XFetch, Vattani et al., VLDB 2015): under steady load a popular
//! entry is recomputed by one request shortly before it expires, so requests do not all
//! miss at expiry; requests that also draw an early refresh while it runs keep being
//! answered from the still-valid entry instead of waiting. Both backends, through
//! `#[cached]` on an axum Router. The decision's random draws come from a seeded source
//! (`CacheConfig::with_early_refresh_random`), so what is drawn does not vary from run
//! to run.

mod concurrency_support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cache_runtime::early_refresh::RandomSource;
use cache_runtime::Cache;
use cache_tests::backends::TestBackend;
use cache_tests::both_backends;
use cache_tests::http::{send, Reply};
use concurrency_support::{request, router, wait_until, within_deadline, App, Flavor};

const CLIENTS: usize = 4;

/// Draws `exp(-x)` for `x` uniform in `[low, high)`, from a splitmix64 sequence seeded
/// with `seed`: a lookup then refreshes when the entry's remaining life is under
/// `compute_time * beta * x`.
fn seeded_draws(seed: u64, low: f64, high: f64) -> RandomSource {
    let state = AtomicU64::new(seed);
    RandomSource::new(move || {
        let mut z = state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let uniform = (z >> 11) as f64 / (1u64 << 53) as f64;
        (-(low + (high - low) * uniform)).exp()
    })
}

/// `CLIENTS` clients request `/hot` (TTL 1 s) back to back until `enough` holds.
async fn steady_load(api: &axum::Router, enough: impl Fn() -> bool) -> Vec<Reply> {
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (api, stop) = (api.clone(), stop.clone());
            tokio::spawn(async move {
                let mut replies = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    replies.push(send(&api, request("GET", "/hot", "org_1", None)).await);
                    // A client's next request comes after a network round trip: let the
                    // other tasks run (an in-memory hit never yields by itself).
                    tokio::task::yield_now().await;
                }
                replies
            })
        })
        .collect();
    wait_until("enough expiry cycles under load", enough).await;
    stop.store(true, Ordering::SeqCst);
    let mut replies = Vec::new();
    for client in clients {
        replies.extend(within_deadline("a client", client).await.unwrap());
    }
    assert!(replies.iter().all(|r| r.status == 200));
    replies
}

/// With the default strength (beta 1) and a handler that takes 50 ms, a TTL of 1 s
/// under load: after the cold miss, every handler run is an early refresh of a valid
/// entry by one request, and no request finds the entry expired.
///
/// The draws are seeded and lie in `[e^-16, e^-12)`: each refresh is drawn 600 to 800 ms
/// before expiry (more if the handler measured slower), by the first request after that
/// point. For a request to find the entry expired, the four clients would all have to
/// stall for over half a second; random draws near 1 (no refresh until the last
/// milliseconds) made that a matter of luck on a loaded machine.
async fn refresh_before_expiry(backend: TestBackend) {
    assert_eq!(backend.config().early_refresh_beta, 1.0, "on by default");
    let cache = Cache::new(
        backend
            .config()
            .with_early_refresh_random(seeded_draws(13, 12.0, 16.0)),
    )
    .await
    .unwrap();
    let app = App::default();
    app.set_compute(Duration::from_millis(50));
    let api = router(&cache, app.clone(), Flavor::Correct);
    let cold = send(&api, request("GET", "/hot", "org_1", None)).await;
    assert_eq!(cold.x_cache(), "MISS");
    wait_until("the entry to be stored", || {
        cache.stats().totals.stores == 1
    })
    .await;

    let replies = steady_load(&api, || cache.stats().totals.early_refreshes >= 2).await;

    let totals = cache.stats().totals;
    let misses = 1 + replies.iter().filter(|r| r.x_cache() == "MISS").count() as u64;
    println!(
        "{} backend, early refresh on: {} requests over {} refreshes: {} handler runs, {} misses, {} coalesced",
        cache.backend_name(),
        replies.len(),
        totals.early_refreshes,
        app.runs(),
        misses,
        totals.coalesced
    );
    assert_eq!(
        totals.misses,
        app.runs(),
        "every handler run is counted as a miss"
    );
    assert_eq!(misses, app.runs(), "each answered one request");
    assert_eq!(
        app.runs(),
        1 + totals.early_refreshes,
        "after the cold miss, each run is one early refresh: no request found it expired"
    );
    assert_eq!(
        totals.coalesced, 0,
        "nobody waited for a recomputation: a refresh in progress serves the valid entry"
    );
}
both_backends!(
    a_popular_entry_is_refreshed_before_it_expires,
    refresh_before_expiry
);

/// The contrast, early refresh off: at each expiry every client misses, and all but one
/// wait for the one computing.
///
/// Step by step rather than under timed load: one client reads until the entry has
/// expired, and its recomputation is held at the gate; the other clients then read, find
/// it expired too, and wait. The runtime has one thread, so a client whose lookup is
/// counted has also joined the recomputation (nothing is awaited in between with the
/// in-memory backend) before the test looks again: what the clients do no longer depends
/// on how the machine schedules them. Only the expiry itself is wall-clock (TTL 1 s),
/// waited for as a condition.
#[tokio::test]
async fn without_early_refresh_clients_wait_at_each_expiry() {
    const EXPIRIES: u64 = 2;
    let backend = TestBackend::Memory;
    let cache = Cache::new(
        backend
            .config()
            .with_early_refresh_beta(0.0)
            // Longer than the test's deadlines: a waiting client never gives up.
            .with_flight_wait(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let app = App::default();
    let api = router(&cache, app.clone(), Flavor::Correct);
    let cold = send(&api, request("GET", "/hot", "org_1", None)).await;
    assert_eq!(cold.x_cache(), "MISS");

    for expiry in 1..=EXPIRIES {
        app.gate().hold_next();
        let first = {
            let api = api.clone();
            tokio::spawn(async move {
                loop {
                    let reply = send(&api, request("GET", "/hot", "org_1", None)).await;
                    if reply.x_cache() != "HIT" {
                        return reply;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        wait_until("the entry expires and one client recomputes it", || {
            app.gate().held() == expiry as usize
        })
        .await;
        let lookups = cache.stats().lookup.count;
        let others: Vec<_> = (1..CLIENTS)
            .map(|_| {
                let api = api.clone();
                tokio::spawn(async move { send(&api, request("GET", "/hot", "org_1", None)).await })
            })
            .collect();
        wait_until("the other clients find it expired", || {
            cache.stats().lookup.count == lookups + (CLIENTS as u64 - 1)
        })
        .await;
        assert!(
            others.iter().all(|other| !other.is_finished()),
            "a client did not wait for the recomputation"
        );

        app.gate().release();
        let first = within_deadline("the recomputation", first).await.unwrap();
        assert_eq!(first.x_cache(), "MISS");
        assert_eq!(first.json()["run"], 1 + expiry);
        for other in others {
            let other = within_deadline("a waiting client", other).await.unwrap();
            assert_eq!(other.x_cache(), "HIT", "served the recomputed entry");
            assert_eq!(other.body, first.body);
        }
    }

    let totals = cache.stats().totals;
    assert_eq!(app.runs(), 1 + EXPIRIES, "one run per expiry");
    assert_eq!(totals.misses, 1 + EXPIRIES);
    assert_eq!(totals.early_refreshes, 0);
    assert_eq!(
        totals.coalesced,
        EXPIRIES * (CLIENTS as u64 - 1),
        "at each expiry, every other client waited for the one computing"
    );
}

/// Deterministically: a request draws an early refresh and holds in the handler; the
/// next request, which draws one too, is answered from the still-valid entry at once
/// (the flight wait is longer than the test's deadline), and only the first recomputes.
async fn refresh_in_progress_serves_the_valid_entry(backend: TestBackend) {
    // A huge beta and a draw of one half make every lookup of an entry with a measurable
    // compute time draw a refresh.
    let config = backend
        .config()
        .with_early_refresh_beta(1e9)
        .with_early_refresh_random(RandomSource::new(|| 0.5))
        .with_flight_wait(Duration::from_secs(60));
    let cache = Cache::new(config.clone()).await.unwrap();
    // With Redis the cold miss goes through another instance: an instance keeps its
    // finished flight visible a moment after the store, and answers a refresh drawn in
    // that moment from it, which would leave nothing to hold here.
    let seeder = match backend {
        TestBackend::Redis(_) | TestBackend::Cluster { .. } => Cache::new(config).await.unwrap(),
        TestBackend::Memory => cache.clone(),
    };
    let app = App::default();
    app.set_compute(Duration::from_millis(5));
    let api = router(&cache, app.clone(), Flavor::Correct);

    let cold = send(
        &router(&seeder, app.clone(), Flavor::Correct),
        request("GET", "/contacts", "org_1", None),
    )
    .await;
    assert_eq!(cold.x_cache(), "MISS");
    wait_until("the entry to be stored", || {
        seeder.stats().totals.stores == 1
    })
    .await;

    app.gate().hold_next();
    let refresher = {
        let api = api.clone();
        tokio::spawn(async move { send(&api, request("GET", "/contacts", "org_1", None)).await })
    };
    wait_until("the early refresh to hold in the handler", || {
        app.gate().held() == 1
    })
    .await;
    let during = within_deadline(
        "a request during the refresh",
        send(&api, request("GET", "/contacts", "org_1", None)),
    )
    .await;
    assert_eq!(during.x_cache(), "HIT");
    assert_eq!(during.body, cold.body, "the still-valid entry");
    assert!(!refresher.is_finished(), "the refresh is still held");

    app.gate().release();
    let refreshed = within_deadline("the refresh", refresher).await.unwrap();
    assert_eq!(refreshed.x_cache(), "MISS");
    assert_eq!(refreshed.json()["run"], 2);
    let totals = cache.stats().totals;
    assert_eq!(app.runs(), 2, "one cold run, one refresh");
    assert_eq!(totals.early_refreshes, 1);
    assert_eq!(
        totals.misses,
        if let TestBackend::Memory = backend {
            2
        } else {
            1
        }
    );
}
both_backends!(
    a_request_during_a_refresh_is_served_the_valid_entry,
    refresh_in_progress_serves_the_valid_entry
);
